"""Decoders that follow the stream's shape, without a GPU: libnvcuvid decoders made with room for the
largest size of their class and switched between sizes by a reconfigure (against a fake driver),
free decoders bounded by memory, and jobs sent to the thread readiest for their stream."""

from __future__ import annotations

import asyncio
import ctypes as C
import threading

import pytest

from asyncdecode import Engine, EngineConfig
from asyncdecode._backends import _cuvid
from asyncdecode._backends.cpu import CpuSession
from asyncdecode._workers import DecoderPool, _Worker
from asyncdecode.gop import extract_gops

HEVC = _cuvid.CODECS["hevc"]
H264 = _cuvid.CODECS["h264"]


class FakeDriver:
    """The calls a :class:`~asyncdecode._backends._cuvid.CuvidDecoder` makes, recorded."""

    cuvidDecodePicture = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p)(lambda decoder, picture: 0)

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.reconfigure_code = 0
        self.cuvidReconfigureDecoder = self._reconfigure
        self._handles = 100
        self.unmap_holding_gil = self._unmap

    def check(self, call: str, code: int) -> None:
        if code:
            raise _cuvid.CuvidError(call, code)

    def current_context(self) -> int:
        return 1

    def caps(self, codec: int, chroma: int, bits_minus8: int) -> _cuvid.DecoderCaps:
        return _cuvid.DecoderCaps(codec=codec, chroma_format=chroma, bit_depth_minus8=bits_minus8, supported=1,
                                  max_width=4096, max_height=2304, min_width=48, min_height=16, max_mb_count=36864)

    def cuvidParseVideoData(self, parser, packet) -> int:
        return 0

    def cuvidMapVideoFrame64(self, *args) -> int:
        return 0

    def cuvidCreateVideoParser(self, parser, params) -> int:
        parser._obj.value = 7
        return 0

    def cuvidDestroyVideoParser(self, parser) -> int:
        return 0

    def cuvidCreateDecoder(self, handle, info) -> int:
        i = info._obj
        self._handles += 1
        handle._obj.value = self._handles
        self.calls.append(("create", i.width, i.height, i.max_width, i.max_height, i.decode_surfaces,
                           i.target_width, i.target_height))
        return 0

    def _reconfigure(self, handle, info) -> int:
        i = info._obj
        self.calls.append(("reconfigure", i.width, i.height, i.target_width, i.target_height, i.decode_surfaces))
        return self.reconfigure_code

    def cuvidDestroyDecoder(self, handle) -> int:
        self.calls.append(("destroy", handle))
        return 0

    def cuStreamSynchronize(self, stream) -> int:
        self.calls.append(("sync",))
        return 0

    def _unmap(self, handle, ptr) -> int:
        self.calls.append(("unmap", ptr))
        return 0

    def cuCtxPushCurrent_v2(self, ctx) -> int:
        return 0

    def cuCtxPopCurrent_v2(self, ctx) -> int:
        return 0


def fmt(width: int, height: int, *, codec: int = HEVC, bits: int = 8, surfaces: int = 6) -> _cuvid.VideoFormat:
    coded_w, coded_h = (width + 15) // 16 * 16, (height + 15) // 16 * 16
    return _cuvid.VideoFormat(codec=codec, bit_depth_luma_minus8=bits - 8, bit_depth_chroma_minus8=bits - 8,
                              min_num_decode_surfaces=surfaces, coded_width=coded_w, coded_height=coded_h,
                              display_area=_cuvid._Rect(0, 0, width, height), chroma_format=1)


@pytest.fixture
def driver(monkeypatch) -> FakeDriver:
    """The fake driver, decoders switching sizes (ASYNCDECODE_NVDEC_RECONFIGURE=1)."""
    fake = FakeDriver()
    monkeypatch.setattr(_cuvid, "library", lambda: fake)
    monkeypatch.setattr(_cuvid, "RECONFIGURE", True)
    monkeypatch.setattr(_cuvid, "FIXED_TARGET", False)  # the tests that want it say so (fixed_target)
    return fake


def test_by_default_a_decoder_is_made_for_each_size_and_never_switched(driver, monkeypatch):
    """Without ASYNCDECODE_NVDEC_RECONFIGURE (the default), a decoder is made at the stream's own size,
    fits only that size, and another size makes a new one."""
    monkeypatch.setattr(_cuvid, "RECONFIGURE", False)
    dec = decoder(largest=(832, 448))
    assert not dec.switches
    surfaces = dec._configure(fmt(640, 360))
    assert driver.calls == [("create", 640, 368, 640, 368, surfaces, 640, 360)]
    assert dec.fits("hevc", 8, 640, 360) == 2 and dec.fits("hevc", 8, 480, 272) == 0
    driver.calls.clear()
    dec._configure(fmt(480, 272))
    assert [c[0] for c in driver.calls] == ["destroy", "create"]
    assert dec.counts.reconfigured == 0 and dec.counts.created == 2


def decoder(largest=(0, 0), codec: str = "hevc") -> _cuvid.CuvidDecoder:
    return _cuvid.CuvidDecoder(codec, display_delay=0, stream=0, native=False, max_size=lambda: largest)


def test_a_decoder_is_made_with_room_and_switched_between_sizes(driver):
    dec = decoder(largest=(832, 448))
    surfaces = dec._configure(fmt(640, 360))
    assert driver.calls == [("create", 640, 368, 832, 448, surfaces, 640, 360)]
    assert (dec.width, dec.height, dec.max_width, dec.max_height) == (640, 360, 832, 448)
    assert dec.state.generation == _cuvid.layout_id(640, 360, 8)
    driver.calls.clear()

    assert dec._configure(fmt(480, 272)) == surfaces
    assert driver.calls == [("reconfigure", 480, 272, 480, 272, surfaces)]
    assert (dec.width, dec.height, dec.surface_height, dec.chroma_rows) == (480, 272, 272, 272)
    assert dec.state.generation == _cuvid.layout_id(480, 272, 8) != _cuvid.layout_id(640, 360, 8)
    driver.calls.clear()

    dec._configure(fmt(480, 272))  # the same format again: nothing to do
    dec._configure(fmt(832, 446))  # up to the room it was made with: still a reconfigure
    assert driver.calls == [("reconfigure", 832, 448, 832, 446, surfaces)]
    assert (dec.counts.created, dec.counts.reconfigured) == (1, 2)
    dec.close()


def test_with_a_fixed_target_a_switch_keeps_the_output_surfaces(driver, monkeypatch):
    """ASYNCDECODE_NVDEC_FIXED_TARGET (an experiment): output surfaces at the decoder's room, each size
    written unscaled into their corner; chroma is found below the surface's full height."""
    rects = fixed_target(driver, monkeypatch)
    dec = decoder(largest=(832, 448))
    surfaces = dec._configure(fmt(640, 360))
    assert driver.calls == [("create", 640, 368, 832, 448, surfaces, 832, 448)]
    assert (dec.width, dec.height, dec.surface_height, dec.chroma_rows) == (640, 360, 448, 448)
    assert dec.surface_height_for(360) == 448
    dec._configure(fmt(480, 272))
    assert driver.calls[-1] == ("reconfigure", 480, 272, 832, 448, surfaces)
    assert rects == [((0, 0, 640, 360), (0, 0, 640, 360)), ((0, 0, 480, 272), (0, 0, 480, 272))]
    assert (dec.width, dec.height, dec.chroma_offset(1024)) == (480, 272, 1024 * 448)
    assert dec.state.generation == _cuvid.layout_id(480, 272, 8, 448) != _cuvid.layout_id(480, 272, 8)
    dec.close()


def fixed_target(driver: FakeDriver, monkeypatch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Turn ASYNCDECODE_NVDEC_FIXED_TARGET on; the (display_area, target_rect) of each create and
    reconfigure the driver is given are kept in the list returned."""
    monkeypatch.setattr(_cuvid, "FIXED_TARGET", True)
    rects: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def recording(call):
        def record(handle, info):
            a, r = info._obj.display_area, info._obj.target_rect
            rects.append(((a.left, a.top, a.right, a.bottom), (r.left, r.top, r.right, r.bottom)))
            return call(handle, info)
        return record

    monkeypatch.setattr(driver, "cuvidCreateDecoder", recording(driver.cuvidCreateDecoder))
    driver.cuvidReconfigureDecoder = recording(driver._reconfigure)
    return rects


def test_a_fixed_target_places_whole_steps_of_four_columns(driver, monkeypatch):
    """The driver fills a target rectangle's columns in steps of 4 (pictures 510 wide lost their last 2
    columns on an H100): the area placed is the picture rounded up to 4 columns and 2 rows, taken from
    the coded picture's padding, and cropped away on conversion."""
    rects = fixed_target(driver, monkeypatch)
    dec = decoder(largest=(832, 448))
    surfaces = dec._configure(fmt(510, 288))  # coded 512 x 288
    dec._configure(fmt(802, 431))  # coded 816 x 432
    assert rects == [((0, 0, 512, 288), (0, 0, 512, 288)), ((0, 0, 804, 432), (0, 0, 804, 432))]
    assert driver.calls[-1] == ("reconfigure", 816, 432, 832, 448, surfaces)
    assert (dec.width, dec.height, dec.surface_height) == (802, 431, 448)  # what is converted: the picture
    dec.close()


def test_a_fixed_target_makes_a_decoder_where_the_coded_picture_has_no_room(driver, monkeypatch):
    """A picture whose width rounded up to 4 passes the coded picture's edge (a crop on the left, here)
    cannot go unscaled into the corner: it gets a decoder of its own size, which a later stream does
    not switch (its output surfaces would change) but replaces."""
    rects = fixed_target(driver, monkeypatch)
    dec = decoder(largest=(832, 448))
    cropped = fmt(640, 360)
    cropped.display_area = _cuvid._Rect(2, 0, 640, 360)  # 638 wide from column 2 of 640 coded
    dec._configure(cropped)
    assert rects == [((2, 0, 640, 360), (0, 0, 0, 0))]
    assert driver.calls[-1][-2:] == (638, 360) and dec.surface_height == 360
    assert driver.calls[-1][3:5] == (640, 368)  # no room beyond its own: it is never switched
    assert dec.fits("hevc", 8, 638, 360) == 2 and dec.fits("hevc", 8, 480, 272) == 0  # replaced, not switched
    assert dec.surface_height_for(360) == 360 and dec.surface_height_for(272) == 448
    dec._configure(fmt(480, 272))
    assert [c[0] for c in driver.calls[-2:]] == ["destroy", "create"]
    assert rects[-1] == ((0, 0, 480, 272), (0, 0, 480, 272)) and dec.surface_height == 448
    dec._configure(fmt(640, 360))
    assert driver.calls[-1][0] == "reconfigure" and dec.counts.created == 2
    dec.close()


def test_a_fixed_target_tells_the_c_loop_the_surface_height_before_the_sequence_header(driver, monkeypatch):
    """The C loop is set up for a GOP before its keyframe's sequence header makes or switches the
    decoder: the surface height it is told is the one the decoder then has (else the GOP would go
    through Python), for a decoder not made yet, one switched in place and one made again larger."""
    fixed_target(driver, monkeypatch)
    largest = [(832, 448)]
    dec = _cuvid.CuvidDecoder("hevc", display_delay=0, stream=0, native=False, max_size=lambda: largest[-1])
    for width, height in ((640, 360), (480, 272), (832, 446)):
        guess = dec.surface_height_for(height)
        dec._configure(fmt(width, height))
        assert guess == dec.surface_height == 448, (width, height)
    largest.append((1280, 720))  # the backend saw a larger stream of the class
    guess = dec.surface_height_for(720)
    dec._configure(fmt(1280, 720))
    assert driver.calls[-1][0] == "create" and guess == dec.surface_height == 720
    assert dec.counts.created == 2 and dec.counts.reconfigured == 2
    dec.close()


def test_without_a_fixed_target_pictures_fill_their_surfaces(driver):
    dec = decoder(largest=(832, 448))
    dec._configure(fmt(640, 360))
    assert dec.surface_height_for(360) == 360 and dec.surface_height == 360
    dec.close()


def test_a_larger_stream_or_another_class_makes_a_new_decoder(driver):
    dec = decoder(largest=(640, 360))
    first = dec._configure(fmt(640, 360))
    driver.calls.clear()
    dec._configure(fmt(1280, 720))  # larger than the room: made again, larger, never smaller
    assert [c[0] for c in driver.calls] == ["destroy", "create"]
    assert driver.calls[1][3:5] == (1280, 720)
    dec._configure(fmt(640, 360))  # back down: the larger decoder takes it in place
    assert driver.calls[-1][0] == "reconfigure"
    driver.calls.clear()
    dec._configure(fmt(640, 360, bits=10))  # another bit depth: another class
    assert [c[0] for c in driver.calls] == ["destroy", "create"]
    assert dec.bits == 10
    driver.calls.clear()
    dec._configure(fmt(640, 360, bits=10, surfaces=first))  # needs more surfaces than it was made with
    assert [c[0] for c in driver.calls] == ["destroy", "create"]
    assert dec.counts.created == 4
    dec.close()


def test_a_refused_or_missing_reconfigure_makes_a_new_decoder(driver):
    dec = decoder(largest=(1280, 720))
    dec._configure(fmt(1280, 720))
    driver.reconfigure_code = 1  # CUDA_ERROR_INVALID_VALUE
    driver.calls.clear()
    dec._configure(fmt(640, 360))
    assert [c[0] for c in driver.calls] == ["reconfigure", "destroy", "create"]
    assert (dec.width, dec.height, dec.counts.reconfigured) == (640, 360, 0)
    driver.cuvidReconfigureDecoder = None  # a driver without the call
    driver.calls.clear()
    dec._configure(fmt(480, 272))
    assert [c[0] for c in driver.calls] == ["destroy", "create"]
    dec.close()


def test_mapped_pictures_are_given_back_before_the_surfaces_change(driver):
    dec = decoder(largest=(1280, 720))
    dec._configure(fmt(1280, 720))
    dec.state.mapped[0], dec.state.mapped[1] = 0x1000, 0x2000
    dec.state.nmapped = 2
    driver.calls.clear()
    dec._configure(fmt(640, 360))
    assert driver.calls[:3] == [("sync",), ("unmap", 0x2000), ("unmap", 0x1000)]
    assert driver.calls[3][0] == "reconfigure" and dec.state.nmapped == 0
    dec.close()


def test_fit_scores_and_memory(driver):
    dec = decoder(largest=(832, 448))
    assert dec.fits("hevc", 8, 640, 360) == 0 and dec.nbytes == 0  # no hardware decoder yet
    dec._configure(fmt(640, 360))
    assert dec.fits("hevc", 8, 640, 360) == 2  # as it is
    assert dec.fits("hevc", 8, 800, 400) == 1  # by a reconfigure
    assert dec.fits("hevc", 8, 1280, 720) == 0  # larger than its room
    assert dec.fits("h264", 8, 640, 360) == 0 and dec.fits("hevc", 10, 640, 360) == 0
    assert dec.nbytes == 832 * 448 * 3 // 2 * (dec._surfaces + dec.output_surfaces)
    dec.close()


def test_free_decoders_are_bounded_by_memory(assets):
    """A session keeps free decoders while their memory allows, the least recently used given up
    first, and picks the best fitting one of a class."""
    closed = []

    class Sized(CpuSession):
        max_spares = 10
        spare_bytes = 250

        def _decoder_bytes(self, decoder):
            return 100

        def _close_decoder(self, decoder):
            closed.append(decoder)

    session = Sized(1)
    made = []
    for name in ("h264_nob", "h264_odd420", "hevc_closed"):  # three streams no decoder stands in for
        (bundle,) = extract_gops(assets[name], [0])
        assert session.fits(bundle) == 0
        session.decode(bundle, [bundle.first_frame_id], None, lambda: False)
        for pos in list(session.positions.values()):  # the GOP given up: its decoder is free
            session._release(pos)
        made.append(session.spares.newest())
        assert session.fits(bundle) > 0  # its decoder is free again, ready for the next job
    assert closed == [made[0]]  # 300 > 250: the oldest went
    assert session.counts.created == 3
    session.close()


class _Dec:
    def __init__(self, name: str, fit: int = 1, nbytes: int = 10) -> None:
        self.name, self.fit, self.nbytes = name, fit, nbytes

    def __repr__(self) -> str:
        return self.name


def test_spare_decoders_keep_the_best_fitting_and_give_up_the_least_recently_used():
    from asyncdecode._backends.base import SpareDecoders

    closed = []
    spares = SpareDecoders(3, 25, nbytes=lambda d: d.nbytes, close=closed.append)
    a, b, c, d = _Dec("a", fit=1), _Dec("b", fit=2), _Dec("c"), _Dec("d")
    spares.give("x", a)
    spares.give("x", b)
    assert spares.fit("x", lambda dec: dec.fit) == 3 and spares.fit("y", lambda dec: dec.fit) == 0
    assert spares.take("x", lambda dec: dec.fit) is b  # the best fit, not the newest
    spares.give("x", b)
    spares.give("y", c)  # 30 bytes > 25: the least recently given back goes
    assert closed == [a] and spares.keys() == ["x", "y"] and spares.nbytes == 20
    assert spares.take("z", lambda dec: 1) is None
    spares.give("z", d)
    assert spares.nbytes == 30 - 10 and closed == [a, b]
    big = _Dec("big", nbytes=100)
    spares.give("w", big)  # larger than the bound alone: kept, the others go
    assert spares.keys() == ["w"] and spares.newest() is big
    spares.clear()
    assert len(spares) == 0 and closed[-1] is big and spares.nbytes == 0


def test_spare_decoders_idle_too_long_go_but_the_last_of_each_key(monkeypatch):
    """With max_idle_s, the extra decoders a burst made go once no thread took them for that long;
    the newest of each key stays (its next job finds it), and taking one keeps it."""
    from asyncdecode._backends import base

    now = [1000.0]
    monkeypatch.setattr(base.time, "monotonic", lambda: now[0])
    closed = []
    spares = base.SpareDecoders(16, nbytes=lambda d: d.nbytes, close=closed.append, max_idle_s=30)
    x1, x2, x3, y1 = _Dec("x1"), _Dec("x2"), _Dec("x3"), _Dec("y1")
    for dec in (x1, x2, y1):
        spares.give(dec.name[0], dec)
    now[0] += 20
    spares.give("x", x3)
    assert spares.expire() == 0 and closed == []  # nothing idle for 30 s yet
    now[0] += 15  # x1, x2, y1 idle for 35 s; x3 for 15 s
    assert spares.expire() == 2 and closed == [x1, x2]  # y1: the last of its key; x3: not idle long
    assert spares.keys() == ["y", "x"] and spares.nbytes == 20 and spares.expired == 2
    assert spares.expire() == 0  # looked at most once a second
    now[0] += 100
    assert spares.take("x", lambda d: 1) is x3  # the last of each key stays, however long idle
    spares.give("x", x3)
    now[0] += 1.5
    assert spares.expire() == 0 and len(spares) == 2
    never = base.SpareDecoders(16, close=closed.append)  # max_idle_s 0: never by time
    never.give("x", x1)
    never.give("x", x2)
    now[0] += 1000
    assert never.expire() == 0 and len(never) == 2


def test_spare_decoders_of_a_key_that_ran_short_lately_stay_however_long_idle(monkeypatch):
    """With burst_s, a key whose jobs found no free decoder (and made one) within burst_s keeps all
    its free decoders past max_idle_s, so that the next burst finds the ones the last made; once its
    bursts stop for burst_s, the extras go by idle time as before, down to one."""
    from asyncdecode._backends import base

    now = [1000.0]
    monkeypatch.setattr(base.time, "monotonic", lambda: now[0])
    closed = []
    spares = base.SpareDecoders(16, close=closed.append, max_idle_s=30, burst_s=300)
    x1, x2, x3, y1, y2 = _Dec("x1"), _Dec("x2"), _Dec("x3"), _Dec("y1"), _Dec("y2")
    assert spares.take("x", lambda d: 1) is None  # a burst of x: none free, its jobs make three
    for dec in (x1, x2, x3, y1, y2):  # y's two were made and given back without running short here
        spares.give(dec.name[0], dec)
    now[0] += 100  # all idle for 100 s
    assert spares.expire() == 1 and closed == [y1]  # x ran short 100 s ago: its three stay
    assert spares.take("x", lambda d: 1) is x3 and spares.take("x", lambda d: 1) is x2
    assert spares.take("x", lambda d: 1) is x1
    assert spares.take("x", lambda d: 1) is None  # short again (now 1100): kept another 300 s
    for dec in (x1, x2, x3):
        spares.give("x", dec)
    now[0] += 250
    assert spares.expire() == 0 and len(spares) == 4
    now[0] += 60  # 310 s since x last ran short, 310 s idle: the extras go, the newest stays
    assert spares.expire() == 2 and closed == [y1, x1, x2] and spares.keys() == ["y", "x"]
    assert spares._short == {}  # forgotten once older than burst_s: the record stays bounded
    taken = spares.take("x", lambda d: 1)
    assert taken is x3 and spares.take("x", lambda d: 1) is None and "x" in spares._short


def test_spare_decoders_claim_a_key_for_one_maker():
    """room() tells one idle thread at a time to make a decoder of a key none is free of, and only
    while it fits without pushing another out."""
    from asyncdecode._backends.base import SpareDecoders

    spares = SpareDecoders(2, 100, nbytes=lambda d: d.nbytes)
    assert spares.room("x") == 100
    assert spares.room("x") == 0  # claimed: another thread makes none meanwhile
    spares.give("x", _Dec("x", nbytes=60))
    spares.unclaim("x")
    assert spares.room("x") == 0  # one was kept
    spares.take("x", lambda d: 1)
    assert spares.room("x") == 0  # and is in use: the jobs of "x" make more where they need them
    assert spares.room("y") == 100
    spares.unclaim("y")
    spares.give("y", _Dec("y", nbytes=60))
    assert spares.room("z") == 40
    spares.unclaim("z")
    spares.give("z", _Dec("z", nbytes=40))
    assert spares.room("w") == 0  # full (by count and by bytes)


def test_spare_decoders_hand_each_decoder_to_one_thread():
    from asyncdecode._backends.base import SpareDecoders

    spares = SpareDecoders(64)
    for i in range(64):
        spares.give(i % 4, _Dec(str(i)))
    got: list[list] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def grab(mine: list) -> None:
        start.wait()
        for _ in range(50):
            for key in range(4):
                dec = spares.take(key, lambda d: 1)
                if dec is not None:
                    mine.append(dec)

    threads = [threading.Thread(target=grab, args=(g,)) for g in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [d for g in got for d in g]
    assert len(taken) == len(set(map(id, taken))) == 64 and len(spares) == 0


class _Ready:
    def __init__(self, fit: int) -> None:
        self.fit = fit

    def fits(self, bundle) -> int:
        return self.fit


def test_a_job_wakes_the_idle_thread_readiest_for_its_stream():
    lock = threading.Lock()
    workers = [_Worker(lock) for _ in range(4)]
    for w, fit in zip(workers, (0, 1, 3, 3)):
        w.session = _Ready(fit)
    pool = DecoderPool.__new__(DecoderPool)  # the scheduling alone, no threads
    pool._idle = dict.fromkeys(workers)

    class Job:
        bundle = None

    assert pool._readiest(Job()) is workers[2]  # of equals, the one idle longest
    del pool._idle[workers[2]]
    assert pool._readiest(Job()) is workers[3]


class _ShapeReady:
    """A session with a free decoder for some shapes only (the scheduler's view of it)."""

    def __init__(self, ready: set) -> None:
        self.ready = ready
        self.positions: dict = {}

    def fits(self, bundle) -> int:
        return 2 if bundle.shape in self.ready else 0


def _queue(shapes: list) -> tuple[DecoderPool, list]:
    from collections import deque

    from asyncdecode._workers import DecodeJob

    class Bundle:
        def __init__(self, shape) -> None:
            self.shape = shape

    pool = DecoderPool.__new__(DecoderPool)  # the scheduling alone, no threads
    pool._holding, pool._idle = {}, {}
    jobs = []
    for shape in shapes:
        job = DecodeJob.__new__(DecodeJob)
        job.bundle, job.wanted, job.first, job.cancelled, job.passed = Bundle(shape), {0}, 0, False, 0
        jobs.append(job)
    pool._jobs = deque(jobs)
    return pool, jobs


def test_a_thread_takes_a_job_its_free_decoder_fits_from_far_down_the_queue():
    """A set of many shapes: the queue's first jobs are of shapes whose decoders are all busy; a thread
    with a free decoder for a shape 40 jobs down takes that job rather than make another decoder."""
    from asyncdecode import _workers

    shapes = [f"busy{i % 20}" for i in range(40)] + ["free"]
    pool, jobs = _queue(shapes)
    me = _Worker(threading.Lock())
    me.session = _ShapeReady({"free"})
    assert 40 < _workers._AFFINITY_WINDOW
    assert pool._pick(me) is jobs[40]
    assert all(j.passed == 1 for j in jobs[:40])
    # with nothing ready anywhere in view, the oldest job goes first
    assert pool._pick(me) is jobs[0]


def test_a_job_passed_over_too_often_is_taken_next():
    """No request waits for ever behind jobs whose decoders happen to be free: after
    _PASS_LIMIT passes the oldest job is taken, decoder or not."""
    from asyncdecode import _workers

    me = _Worker(threading.Lock())
    me.session = _ShapeReady({"free"})
    pool, jobs = _queue(["new"] + ["free"] * (_workers._PASS_LIMIT + 4))
    taken = [pool._pick(me) for _ in range(_workers._PASS_LIMIT + 1)]
    assert taken[: _workers._PASS_LIMIT] == jobs[1: _workers._PASS_LIMIT + 1]
    assert taken[-1] is jobs[0] and jobs[0].passed == _workers._PASS_LIMIT


def test_dropping_a_cancelled_job_passes_nobody_over():
    me = _Worker(threading.Lock())
    me.session = _ShapeReady({"free"})
    pool, jobs = _queue(["busy", "gone", "free"])
    jobs[1].cancelled = True
    assert pool._pick(me) is jobs[1]  # dropped at once by the caller
    assert jobs[0].passed == 0
    assert pool._pick(me) is jobs[2] and jobs[0].passed == 1  # now a later job goes first


async def test_stats_count_decoders_made(assets):
    paths = [str(assets[n]) for n in ("h264_nob", "hevc_closed")]
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        for _ in range(3):
            await eng.decode(paths, [1, 2])
        stats = eng.stats()
    assert 1 <= stats["decoders_created"] <= 2  # one per stream class, reused after
    assert stats["decoders_reconfigured"] == 0  # FFmpeg decoders are not switched in place
    assert stats["decoders_free"] <= 2 and stats["decoders_free_bytes"] == 0  # FFmpeg's hold host memory


async def test_stats_count_decoders_kept_free(assets):
    """A thread that keeps its place in more GOPs than it may gives the oldest up: its decoder is then
    kept free for the next job of its class (and counted in stats), not thrown away."""
    from asyncdecode import probe

    other, path = str(assets["hevc_closed"]), str(assets["h264_nob"])
    starts = list(probe(path).keyframes)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        await eng.decode(other, [1])  # the thread keeps its place there, on an HEVC decoder
        assert eng.stats()["decoders_free"] == 0 and eng.stats()["decoders_open"] == 1  # held, not free
        assert len(starts) >= CpuSession.max_positions
        for k in starts[: CpuSession.max_positions]:  # as many H.264 GOPs as it keeps: the HEVC one goes
            await eng.decode(path, [k + 1])
        stats = eng.stats()
    assert stats["decoders_free"] >= 1 and stats["decoders_free_bytes"] == 0  # FFmpeg's hold host memory
    assert stats["decoders_open"] == stats["decoders_free"] + CpuSession.max_positions



def test_a_stream_too_large_for_the_gpu_is_refused_alone(driver):
    """A size out of the GPU's range fails that stream as unsupported (size only): the backend then
    sends that file elsewhere and goes on taking the other streams of its class."""
    from asyncdecode._backends.nvdec import NvdecBackend
    from asyncdecode.errors import UnsupportedStreamError

    dec = decoder()
    with pytest.raises(_cuvid.CuvidUnsupported) as caught:
        dec._configure(fmt(8192, 4352))  # more macroblocks than the fake GPU's 36864
    assert caught.value.size and dec.handle is None
    dec._configure(fmt(640, 360))  # the decoder is still usable
    assert dec.handle is not None
    dec.close()

    backend = NvdecBackend.__new__(NvdecBackend)  # the bookkeeping alone, no GPU
    backend.device, backend._refused, backend._refused_files, backend._largest = "cuda:0", {}, {}, {}
    backend._shapes = {}

    class Bundle:
        codec, bit_depth, pix_fmt, width, height = "hevc", 8, "yuv420p", 8192, 4352
        source = "huge.mp4"

    small = type("Small", (Bundle,), {"source": "small.mp4", "width": 640, "height": 360})
    backend.refuse(Bundle, [str(caught.value)], size=True)
    with pytest.raises(UnsupportedStreamError, match="huge.mp4"):
        backend.check(Bundle)
    backend.check(small)  # the class is not refused
    assert backend.largest("hevc", 8) == (640, 360)


def test_the_backend_remembers_the_latest_stream_shapes_for_decoders_made_ahead():
    """Idle sessions make decoders ahead for the shapes checked lately, the most recent first; the
    backend keeps a bounded number of them."""
    from asyncdecode._backends import nvdec

    backend = nvdec.NvdecBackend.__new__(nvdec.NvdecBackend)  # the bookkeeping alone, no GPU
    backend.device, backend._refused, backend._refused_files, backend._largest = "cuda:0", {}, {}, {}
    backend._shapes = {}

    def bundle(w: int, h: int, codec: str = "hevc") -> type:
        return type("B", (), {"codec": codec, "bit_depth": 8, "pix_fmt": "yuv420p", "width": w, "height": h,
                              "source": f"{w}x{h}.mp4"})

    for w, h in ((640, 360), (480, 272), (640, 360), (320, 240)):
        backend.check(bundle(w, h))
    backend.check(bundle(176, 144, "h264"))
    assert backend.shapes() == [("h264", 8, 176, 144), ("hevc", 8, 320, 240), ("hevc", 8, 640, 360),
                                ("hevc", 8, 480, 272)]
    for i in range(nvdec._SHAPES_KEPT + 10):
        backend.check(bundle(176 + 16 * i, 144))
    shapes = backend.shapes()
    assert len(shapes) == nvdec._SHAPES_KEPT and shapes[0] == ("hevc", 8, 176 + 16 * (nvdec._SHAPES_KEPT + 9), 144)
    assert _cuvid.surface_bytes(640, 360, 8) == 640 * 368 * 3 // 2 * (_cuvid.MIN_SURFACES + 4)


def test_the_python_gate_lets_a_reconfigure_go_alone():
    """Without the compiled loop, the same gate in Python: a reconfigure waits for the decodes and maps
    in progress, and new ones wait for a reconfigure that waits."""
    gate = _cuvid._Gate()
    events: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def shared(name: str, hold: bool) -> None:
        with gate.shared():
            events.append(f"{name} in")
            if hold:
                inside.set()
                release.wait(5)
            events.append(f"{name} out")

    def alone() -> None:
        with gate.alone():
            events.append("reconfigure")

    first = threading.Thread(target=shared, args=("decode", True))
    first.start()
    assert inside.wait(5)
    writer = threading.Thread(target=alone)
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()
    second = threading.Thread(target=shared, args=("map", False))
    second.start()
    second.join(0.2)
    assert second.is_alive()
    release.set()
    for t in (first, writer, second):
        t.join(5)
        assert not t.is_alive()
    assert events == ["decode in", "decode out", "reconfigure", "map in", "map out"]


def test_reconfigure_is_ignored_with_more_than_one_decoder_thread(driver, caplog):
    """The driver's reconfigure hung with two decoder threads or more (H200/H100, driver 580.159): an
    engine starting more than one turns it off, with a warning; one thread keeps it."""
    from asyncdecode._backends.nvdec import NvdecBackend

    backend = object.__new__(NvdecBackend)  # no GPU here: only the switch is looked at
    backend.switches, backend.cuvid = True, _cuvid
    backend.opening(1)
    assert backend.switches and "ignored" not in caplog.text
    backend.opening(10)
    assert not backend.switches and "ignored with 10 decoder threads" in caplog.text
    off = _cuvid.CuvidDecoder("hevc", display_delay=0, stream=0, native=False, max_size=lambda: (832, 448),
                              switches=False)
    off._configure(fmt(640, 360))
    assert not off.switches and off.fits("hevc", 8, 480, 272) == 0 and off.max_width == 640
    off.close()


def test_with_a_fixed_target_reconfigure_is_kept_with_several_threads(driver, monkeypatch, caplog):
    """ASYNCDECODE_NVDEC_FIXED_TARGET (an experiment): ten threads switching sizes did not hang with
    fixed output surfaces, so an engine of several threads keeps the reconfigure there."""
    from asyncdecode._backends.nvdec import NvdecBackend

    monkeypatch.setattr(_cuvid, "FIXED_TARGET", True)
    backend = object.__new__(NvdecBackend)
    backend.switches, backend.cuvid = True, _cuvid
    backend.opening(10)
    assert backend.switches and "ignored" not in caplog.text


async def test_the_engine_tells_its_backend_how_many_threads_it_starts(assets, monkeypatch):
    """Before the decoder threads' sessions are made, the backend learns their count (NVDEC turns the
    reconfigure off for more than one)."""
    from asyncdecode._backends.cpu import CpuBackend

    seen: list[int] = []
    monkeypatch.setattr(CpuBackend, "opening", lambda self, threads: seen.append(threads))
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        await eng.decode([str(assets["h264_nob"])], [0])
    assert seen == [3]
