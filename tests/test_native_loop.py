"""The libnvcuvid decode loop in C (built with the machine's C compiler), checked without a GPU: a fake
driver stands in for the parser, the hardware decoder and cuLaunchKernel, and records every call."""

from __future__ import annotations

import ctypes as C
import shutil
import struct

import numpy as np
import pytest

from asyncdecode._backends import _native
from asyncdecode._backends._cuvid import DisplayInfo, ProcParams
from asyncdecode.gop import PACKET_DTYPE

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")),
                                reason="no C compiler")

_PARSE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p)
_DECODE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p)
_DISPLAY = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(DisplayInfo))
_MAP = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, C.POINTER(C.c_ulonglong), C.POINTER(C.c_uint), C.c_void_p)
_UNMAP = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_ulonglong)
_SYNC = C.CFUNCTYPE(C.c_int, C.c_void_p)
_LAUNCH = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_uint, C.c_uint, C.c_uint, C.c_uint, C.c_uint, C.c_uint, C.c_uint,
                      C.c_void_p, C.c_void_p, C.c_void_p)


class _Packet(C.Structure):
    _fields_ = [("flags", C.c_ulong), ("payload_size", C.c_ulong), ("payload", C.c_void_p), ("timestamp", C.c_longlong)]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return _native.load()
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old


class FakeDriver:
    """Packets ``0..n-1`` with pts ``100 + 10 * i`` (``pts`` to change that); the parser shows what
    ``shows[i]`` lists (pts) after packet ``i``, and ``at_end`` at the end of the stream."""

    PITCH, SURFACE_ROWS = 2048, 904

    def __init__(self, lib, n: int, shows: dict[int, list[int]], at_end: list[int] = (), pts: list[int] | None = None,
                 fail: dict[str, int] | None = None) -> None:
        self.lib = lib
        self.calls: list[tuple] = []
        self.fail = fail or {}
        self.pts = pts or [100 + 10 * i for i in range(n)]
        self.shows, self.at_end = shows, list(at_end)
        self.table = np.zeros(n, PACKET_DTYPE)
        self.table["offset"] = np.arange(n) * 100
        self.table["size"] = 50 + np.arange(n)
        self.table["pts"] = self.pts
        self.payload = (C.c_ubyte * (100 * n + 1))()
        self.state = _native.DecoderState(decoder=0xDEC)
        self.proc = ProcParams()
        self.on_decode = _DECODE(C.cast(lib.ad_on_decode, C.c_void_p).value)
        self.on_display = _DISPLAY(C.cast(lib.ad_on_display, C.c_void_p).value)
        self.generation_bump_at: int | None = None
        self._fns = (_PARSE(self._parse), _DECODE(self._decode), _MAP(self._map), _UNMAP(self._unmap),
                     _SYNC(self._sync), _LAUNCH(self._launch))
        self.state.decode = C.cast(self._fns[1], C.c_void_p).value
        self.param_buf = C.create_string_buffer(64)
        self.params = (C.c_void_p * 1)(C.addressof(self.param_buf))
        self.fed: list[int] = []

    def addr(self, i: int) -> int:
        return C.cast(self._fns[i], C.c_void_p).value

    # -- the fake driver -------------------------------------------------------------------------

    def _parse(self, parser, packet_ptr):
        p = C.cast(packet_ptr, C.POINTER(_Packet)).contents
        user = C.addressof(self.state)
        if p.flags & 1:
            self.calls.append(("eos",))
            shown = self.at_end
        else:
            i = self.pts.index(p.timestamp)
            assert p.flags == 0x0A and p.payload_size == 50 + i
            assert p.payload == C.addressof(self.payload) + 100 * i
            self.fed.append(i)
            self.calls.append(("parse", i))
            if self.on_decode(user, 1000 + i) == 0:
                return 0
            if self.generation_bump_at == i:
                self.state.generation += 1
            shown = self.shows.get(i, [])
        for pts in shown:
            info = DisplayInfo(picture_index=self.pts.index(pts), progressive_frame=1, top_field_first=0, timestamp=pts)
            if self.on_display(user, C.pointer(info)) == 0:
                return 0
        return self.fail.get("parse", 0)

    def _decode(self, decoder, picture):
        self.calls.append(("decode", picture))
        return self.fail.get("decode", 0) if picture == 1000 + self.fail.get("decode_at", -1) else 0

    def _map(self, decoder, index, ptr, pitch, proc):
        assert decoder == 0xDEC and proc == C.addressof(self.proc)
        self.calls.append(("map", index, self.proc.progressive_frame))
        if "map" in self.fail:
            return self.fail["map"]
        ptr[0] = 0x100000 * (index + 1)
        pitch[0] = self.PITCH
        return 0

    def _unmap(self, decoder, ptr):
        self.calls.append(("unmap", ptr // 0x100000 - 1))
        return 0

    def _sync(self, stream):
        assert stream == 0x5EA
        self.calls.append(("sync",))
        return 0

    def _launch(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        assert (f, gx, gy, gz, bx, by, bz, shared, stream, extra) == (0xF00, 7, 9, 1, 128, 1, 1, 256, 0x5EA, None)
        assert params == C.addressof(self.params)
        luma, chroma, out, h, w, ls, cs = struct.unpack_from("<QQQiiii", self.param_buf)
        assert chroma - luma == self.PITCH * self.SURFACE_ROWS and (h, w, ls, cs) == (900, 1600, 2048, 2048)
        self.calls.append(("launch", luma // 0x100000 - 1, out))
        return self.fail.get("launch", 0)

    # -- a run -----------------------------------------------------------------------------------

    def run(self, wanted: list[int], furthest: int, *, lag: bool = False, chunk: int = 0):
        """A run of the wanted pts (sorted); outputs at 0xA000 + slot."""
        self.want_pts = np.array(wanted, np.int64)
        self.want_out = np.array([0xA000 + k for k in range(len(wanted))], np.uint64)
        self.done = np.zeros(len(wanted), np.uint8)
        self.out = (_native.Shown * 64)()
        fields = PACKET_DTYPE.fields
        self.feed = np.zeros(0, np.int64)
        r = _native.Run(
            parse=self.addr(0), map=self.addr(2), unmap=self.addr(3), sync=self.addr(4), launch=self.addr(5),
            parser=0x9A, stream=0x5EA, proc=C.addressof(self.proc), proc_progressive=ProcParams.progressive_frame.offset,
            proc_top_first=ProcParams.top_field_first.offset, output_surfaces=4, table=self.table.ctypes.data,
            row_bytes=self.table.strides[0], col_offset=fields["offset"][1], col_size=fields["size"][1],
            col_pts=fields["pts"][1], payload=C.addressof(self.payload), max_feed=chunk, lag=int(lag),
            generation=self.state.generation, want_pts=self.want_pts.ctypes.data, want_out=self.want_out.ctypes.data,
            done=self.done.ctypes.data, nwant=len(wanted), remaining=len(wanted), furthest_pts=furthest,
            function=0xF00, grid_x=7, grid_y=9, block_x=128, shared=256, param_buf=C.addressof(self.param_buf),
            params=C.addressof(self.params), height=900, width=1600, sample_bytes=1, chroma_rows=self.SURFACE_ROWS,
            out=C.addressof(self.out), out_cap=64)
        return r

    def feed_from(self, r, indices):
        self.feed = np.array(indices, np.int64)
        r.feed, r.nfeed, r.next = self.feed.ctypes.data, len(indices), 0

    def go(self, r) -> int:
        return self.lib.ad_feed(C.byref(self.state), C.byref(r))

    def table_of(self, r):
        return [(s.pts, s.status) for s in self.out[:r.nout]]

    def kinds(self, *names):
        return [c for c in self.calls if c[0] in names]


def test_wanted_pictures_are_mapped_converted_and_the_rest_dropped(lib):
    d = FakeDriver(lib, 11, {i: [100 + 10 * (i - 2)] for i in range(2, 11)})  # display delay 2
    r = d.run([130, 140, 150, 160, 170], furthest=170)
    d.feed_from(r, list(range(11)))
    assert d.go(r) == 0 and d.fed == list(range(10))  # 170 is shown by packet 9: nothing more is fed
    d = FakeDriver(lib, 10, {i: [100 + 10 * (i - 2)] for i in range(2, 10)})
    r = d.run([130, 140, 150, 160, 170], furthest=170)
    d.feed_from(r, list(range(10)))
    assert d.go(r) == 0 and r.error == 0 and r.stop == _native.STOP_FED
    assert d.fed == list(range(10))  # frame 170 is shown by the last packet
    assert r.fed == 10 and r.next == 10 and r.remaining == 0 and list(d.done) == [1] * 5
    assert d.table_of(r) == [(100, -1), (110, -1), (120, -1), (130, 0), (140, 1), (150, 2), (160, 3), (170, 4)]
    assert r.held == r.nout
    # four output surfaces: the fifth map waits for the stream, then the four are given back
    assert d.kinds("map", "launch", "sync", "unmap") == [
        ("map", 3, 1), ("launch", 3, 0xA000), ("map", 4, 1), ("launch", 4, 0xA001), ("map", 5, 1),
        ("launch", 5, 0xA002), ("map", 6, 1), ("launch", 6, 0xA003), ("sync",), ("unmap", 6), ("unmap", 5),
        ("unmap", 4), ("unmap", 3), ("map", 7, 1), ("launch", 7, 0xA004)]
    assert d.state.nmapped == 1 and d.state.mapped[0] == 0x100000 * 8
    assert [c for c in d.calls if c[0] == "decode"] == [("decode", 1000 + i) for i in range(10)]
    assert lib.ad_unmap(C.byref(d.state), C.byref(r)) == 0 and d.state.nmapped == 0
    assert d.calls[-2:] == [("sync",), ("unmap", 7)]


def test_a_picture_beyond_the_last_wanted_one_goes_to_python_and_ends_the_call(lib):
    # a reordered stream: packet 3 shows 140 (beyond the last wanted frame, 130) before 120
    d = FakeDriver(lib, 6, {1: [100], 2: [110], 3: [140, 120], 4: [130], 5: [150]})
    r = d.run([120, 130], furthest=130)
    d.feed_from(r, list(range(6)))
    assert d.go(r) == 0 and r.stop == _native.STOP_PYTHON
    assert d.fed == [0, 1, 2, 3]
    assert d.table_of(r) == [(100, -1), (110, -1), (140, -2), (120, 0)]
    assert r.remaining == 1
    assert d.go(r) == 0 and r.stop == _native.STOP_FED and r.remaining == 0
    assert d.fed == [0, 1, 2, 3, 4] and d.table_of(r)[-1] == (130, 1)


def test_lag_takes_a_packets_pictures_once_the_next_is_in(lib):
    d = FakeDriver(lib, 6, {i: [100 + 10 * i] for i in range(6)})  # display delay 0
    r = d.run([110, 130], furthest=130, lag=True)
    d.feed_from(r, list(range(6)))
    assert d.go(r) == 0 and r.remaining == 0
    order = [c for c in d.calls if c[0] in ("parse", "map")]
    # 110 (packet 1) is mapped after packet 2 is in; 130 completes the job: mapped at once
    assert order == [("parse", 0), ("parse", 1), ("parse", 2), ("map", 1, 1), ("parse", 3), ("map", 3, 1)]
    assert d.table_of(r) == [(100, -1), (110, 0), (120, -1), (130, 1)]


def test_chunks_keep_held_pictures_between_calls_and_flush_shows_the_rest(lib):
    d = FakeDriver(lib, 5, {i: [100 + 10 * i] for i in range(5)}, at_end=[])
    r = d.run([100, 120, 140], furthest=140, lag=True, chunk=2)
    d.feed_from(r, list(range(5)))
    assert d.go(r) == 0 and d.fed == [0, 1] and r.held == 1  # 110 waits for packet 2
    assert d.table_of(r) == [(100, 0), (110, -3)]
    assert d.go(r) == 0 and d.fed == [0, 1, 2, 3] and d.table_of(r)[:3] == [(100, 0), (110, -1), (120, 1)]
    assert d.go(r) == 0 and d.fed == [0, 1, 2, 3, 4] and r.remaining == 0 and r.held == r.nout == 5
    # a drained decoder: the end of the stream shows what the parser held back
    d2 = FakeDriver(lib, 3, {0: [], 1: [100]}, at_end=[110, 120])
    r2 = d2.run([120], furthest=120)
    d2.feed_from(r2, [0, 1, 2])
    assert d2.go(r2) == 0 and r2.remaining == 1 and d2.fed == [0, 1, 2]
    r2.nfeed = -1
    assert d2.go(r2) == 0 and r2.remaining == 0 and r2.fed == 3
    assert d2.kinds("eos", "map") == [("eos",), ("map", 2, 1)]
    assert d2.table_of(r2) == [(100, -1), (110, -1), (120, 0)]


@pytest.mark.parametrize("where, call", [("decode", 2), ("map", 3), ("launch", 6), ("parse", 1)])
def test_the_first_failure_stops_the_run_and_says_which_call(lib, where, call):
    fail = {where: 77}
    if where == "decode":
        fail["decode_at"] = 2
    d = FakeDriver(lib, 5, {i: [100 + 10 * i] for i in range(5)}, fail=fail)
    r = d.run([120, 130], furthest=130)
    d.feed_from(r, list(range(5)))
    assert d.go(r) == -1 and (r.error, r.error_call) == (77, call)
    assert _native.CALLS[call].startswith(("cuvid", "cu"))


def test_a_new_hardware_decoder_hands_over_to_python(lib):
    d = FakeDriver(lib, 5, {i: [100 + 10 * i] for i in range(5)})
    d.generation_bump_at = 2
    r = d.run([130], furthest=130)
    d.feed_from(r, list(range(5)))
    assert d.go(r) == 0 and r.stop == _native.STOP_FORMAT and d.fed == [0, 1, 2]
    assert d.table_of(r) == [(100, -1), (110, -1), (120, -3)]  # the last one shown is left to Python
    assert r.held == 2


def test_too_many_pictures_for_one_parse_call_fail_cleanly(lib):
    d = FakeDriver(lib, 1, {0: [100] * (_native.SHOWN + 1)})
    r = d.run([100], furthest=100)
    d.feed_from(r, [0])
    assert d.go(r) == -1 and r.error_call == 7


def test_a_second_load_uses_the_built_library(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _native.load()
    (path,) = (tmp_path / "asyncdecode").glob("cuvid_loop-*.so")
    stamp = path.stat().st_mtime_ns
    _native.load()
    assert path.stat().st_mtime_ns == stamp
    assert not list((tmp_path / "asyncdecode").glob(".build-*"))  # only the finished file


def test_no_compiler_or_switched_off_leaves_python_in_charge(tmp_path, monkeypatch):
    monkeypatch.setattr(_native, "reason", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(OSError, match="could not run"):
        _native.load()
    assert _native.library.__wrapped__() is None and "OSError" in _native.reason
    monkeypatch.setenv("ASYNCDECODE_NATIVE", "0")
    assert _native.library.__wrapped__() is None and "ASYNCDECODE_NATIVE" in _native.reason


def test_a_failing_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")
    with pytest.raises(OSError, match="false failed"):
        _native.build(tmp_path / "x.so")
    assert not (tmp_path / "x.so").exists()


def test_frames_collected_on_the_way_are_converted_and_never_waited_for(lib):
    """Slots marked not real (a job collecting for the frame cache) are converted where they show,
    into their own outputs, and the run ends with the last real one: it feeds nothing more for them."""
    d = FakeDriver(lib, 8, {i: [100 + 10 * i] for i in range(8)})  # display delay 0
    r = d.run([100, 120, 130, 150, 160], furthest=150)
    real = np.array([0, 0, 1, 1, 0], np.uint8)  # 130 and 150 wanted; 100, 120 collected; 160 never shows in time
    r.real = real.ctypes.data
    r.remaining = 2
    d.feed_from(r, list(range(8)))
    assert d.go(r) == 0 and r.stop == _native.STOP_FED and r.remaining == 0
    assert d.fed == [0, 1, 2, 3, 4, 5]  # stops at 150, the last wanted one
    assert d.table_of(r) == [(100, 0), (110, -1), (120, 1), (130, 2), (140, -1), (150, 3)]
    assert list(d.done) == [1, 1, 1, 1, 0]
    assert [c[2] for c in d.kinds("launch")] == [0xA000, 0xA001, 0xA002, 0xA003]


_RECONFIGURE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p)


def test_a_reconfigure_waits_for_maps_in_progress_and_goes_alone(lib):
    """ad_reconfigure waits for a map in progress on another thread (the gate's shared side), and a map
    asked for meanwhile waits for the reconfigure (the driver hangs when they overlap)."""
    import threading

    events: list[str] = []
    in_map, release = threading.Event(), threading.Event()

    def slow_map(decoder, index, ptr, pitch, proc):
        events.append(f"map {index} in")
        if index == 0:
            in_map.set()
            release.wait(5)
        events.append(f"map {index} out")
        return 0

    def reconfigure(decoder, info):
        events.append("reconfigure")
        return 0

    map_fn, reconfigure_fn = _MAP(slow_map), _RECONFIGURE(reconfigure)
    map_address = C.cast(map_fn, C.c_void_p).value
    ptr, pitch = C.c_ulonglong(), C.c_uint()

    def mapper(index: int) -> None:
        assert lib.ad_map(map_address, None, index, C.byref(ptr), C.byref(pitch), None) == 0

    first = threading.Thread(target=mapper, args=(0,))
    first.start()
    assert in_map.wait(5)
    writer = threading.Thread(target=lambda: lib.ad_reconfigure(C.cast(reconfigure_fn, C.c_void_p).value, None, None))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive() and "reconfigure" not in events  # waits for the map in progress
    second = threading.Thread(target=mapper, args=(1,))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # a new map waits behind the waiting reconfigure
    release.set()
    for t in (first, writer, second):
        t.join(5)
        assert not t.is_alive()
    assert events == ["map 0 in", "map 0 out", "reconfigure", "map 1 in", "map 1 out"]


def test_busy_table_says_what_each_thread_does_in_the_driver(lib, monkeypatch):
    """A map in progress shows with its decoder and age; a reconfigure shows among the recent ones."""
    import threading
    import time

    monkeypatch.setattr(_native, "library", lambda: lib)
    in_map, release = threading.Event(), threading.Event()

    def slow_map(decoder, index, ptr, pitch, proc):
        in_map.set()
        release.wait(5)
        return 0

    map_fn = _MAP(slow_map)
    ptr, pitch = C.c_ulonglong(), C.c_uint()
    mapper = threading.Thread(target=lambda: lib.ad_map(C.cast(map_fn, C.c_void_p).value, 0xABC, 0, C.byref(ptr),
                                                        C.byref(pitch), None))
    mapper.start()
    assert in_map.wait(5)
    time.sleep(0.05)
    threads, _ = _native.busy()
    row = next(t for t in threads if t["tid"] == mapper.native_id)
    assert row["call"] == "cuvidMapVideoFrame64" and row["decoder"] == hex(0xABC) and row["age_s"] >= 0.04
    release.set()
    mapper.join(5)
    threads, _ = _native.busy()
    assert next(t for t in threads if t["tid"] == mapper.native_id)["call"] == "-"
    reconfigure_fn = _RECONFIGURE(lambda decoder, info: 0)
    assert lib.ad_reconfigure(C.cast(reconfigure_fn, C.c_void_p).value, 0xBEE, None) == 0
    _, recent = _native.busy()
    assert recent[-1]["decoder"] == hex(0xBEE) and recent[-1]["code"] == 0
