"""Host memory given back after decoders close: a trim once enough went and the last one is long
enough ago, never more often, never a failure of the caller, off where there is no malloc_trim."""

from __future__ import annotations

import threading

import pytest

from asyncdecode import _trim


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_trim_comes_after_enough_frees_and_not_more_often_than_the_interval():
    calls, clock = [], _Clock()
    t = _trim.Trimmer(lambda: calls.append(clock.t), every=3, min_interval_s=10.0, clock=clock)
    assert [t.freed() for _ in range(3)] == [False, False, True]  # the first trim: after 3 frees
    assert calls == [100.0]
    assert not any(t.freed() for _ in range(10))  # many more frees, but within the interval
    clock.t += 10.0
    assert t.freed()  # the frees counted meanwhile are enough: the interval was what held it
    assert calls == [100.0, 110.0] and t.trims == 2
    clock.t += 60.0
    assert not t.freed() and not t.freed()  # a long quiet time alone is not enough: frees are
    assert t.freed(2) and t.trims == 3


def test_trimming_off_or_absent_never_trims_and_a_failing_trim_is_not_the_callers_error():
    calls = []
    off = _trim.Trimmer(lambda: calls.append(1), every=1, min_interval_s=0.0)
    assert not any(off.freed() for _ in range(5)) and not calls
    assert not _trim.Trimmer(None, every=1, min_interval_s=1.0).freed()

    def boom() -> None:
        raise OSError("no")

    failing = _trim.Trimmer(boom, every=1, min_interval_s=1.0, clock=_Clock())
    assert failing.freed() is False and failing.trims == 0


def test_frees_from_many_threads_make_one_trim_per_interval():
    calls, clock = [], _Clock()
    t = _trim.Trimmer(lambda: calls.append(1), every=4, min_interval_s=5.0, clock=clock)
    threads = [threading.Thread(target=lambda: [t.freed() for _ in range(200)]) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert calls == [1]  # the clock never moved: one trim in all


def test_the_process_trimmer_uses_the_c_librarys_trim_where_it_has_one():
    import ctypes
    import ctypes.util

    try:
        has = hasattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "malloc_trim")
    except OSError:
        has = False
    assert (_trim._libc_trim() is not None) == has
    if has:
        _trim._libc_trim()()  # gives memory back, returns; no error


def test_flush_trims_what_was_freed_since_the_last_trim_whatever_the_interval(monkeypatch):
    calls, clock = [], _Clock()
    t = _trim.Trimmer(lambda: calls.append(1), every=100, min_interval_s=10.0, clock=clock)
    assert not t.flush()  # nothing freed: nothing to give back
    t.freed()
    assert t.flush() and calls == [1]
    assert not t.flush()  # once
    assert not _trim.Trimmer(lambda: calls.append(1), min_interval_s=0.0).flush()  # off stays off


async def test_closing_an_engine_gives_back_what_its_decoders_freed(monkeypatch):
    """The engine's close flushes the process's trimmer once its decoder threads have stopped."""
    from asyncdecode import Engine, EngineConfig

    flushed = []
    monkeypatch.setattr(_trim, "flush", lambda: flushed.append(threading.current_thread().name) or True)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)):
        pass
    assert len(flushed) == 1 and flushed[0] != "MainThread"  # off the event loop


class _Rss:
    def __init__(self, mib: int) -> None:
        self.bytes = mib << 20
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.bytes


def test_growth_of_the_resident_memory_since_the_last_trim_starts_one():
    calls, clock, rss = [], _Clock(), _Rss(400)

    def trim() -> None:
        calls.append(clock.t)
        rss.bytes -= 40 << 20  # the trim gives back free pages

    t = _trim.Trimmer(trim, min_interval_s=10.0, clock=clock, rss=rss, check_s=5.0, growth=32 << 20)
    assert not t.grown() and rss.reads == 1  # the first read: where growth counts from (400 MiB)
    rss.bytes += 30 << 20
    clock.t += 5.0
    assert not t.grown()  # 30 MiB: under 32
    rss.bytes += 10 << 20
    assert not t.grown() and rss.reads == 2  # grown enough, but read at most every 5 s
    clock.t += 5.0
    assert t.grown() and calls == [110.0] and t.trims == t.grown_trims == 1
    assert rss.bytes == 400 << 20  # the next growth counts from here, after the trim
    assert t.given_back == 40 << 20
    clock.t += 5.0
    rss.bytes += 40 << 20
    assert not t.grown()  # enough growth, but the last trim is 5 s ago
    clock.t += 5.0
    assert t.grown() and t.trims == 2


def test_growth_in_what_is_in_use_trims_once_and_then_counts_from_the_new_size():
    calls, clock, rss = [], _Clock(), _Rss(400)
    t = _trim.Trimmer(lambda: calls.append(1), min_interval_s=10.0, clock=clock, rss=rss, check_s=5.0)
    t.grown()
    rss.bytes = 1000 << 20  # a cache filling: nothing free to give back
    for _ in range(20):
        clock.t += 5.0
        t.grown()
    assert calls == [1]  # one trim, then 1000 MiB is the new floor


def test_growth_checks_are_off_with_trimming_off_or_without_a_resident_size():
    calls, clock = [], _Clock()
    off = _trim.Trimmer(lambda: calls.append(1), min_interval_s=0.0, clock=clock, rss=_Rss(1))
    unknown = _trim.Trimmer(lambda: calls.append(1), min_interval_s=1.0, clock=clock, rss=lambda: None)
    for _ in range(5):
        clock.t += 100.0
        assert not off.grown() and not unknown.grown()
    assert not calls


def test_a_trim_after_frees_resets_where_growth_counts_from():
    calls, clock, rss = [], _Clock(), _Rss(400)
    t = _trim.Trimmer(lambda: calls.append(1), every=1, min_interval_s=10.0, clock=clock, rss=rss)
    t.grown()
    rss.bytes = 500 << 20
    assert t.freed() and calls == [1]  # decoders closed: a trim, and 500 MiB is now the floor
    clock.t += 20.0
    assert not t.grown()


async def test_decoder_threads_check_the_resident_memory_after_each_job(monkeypatch, tmp_path):
    from asyncdecode import Engine, EngineConfig
    from asyncdecode.testing import VideoSpec, make_video

    checked = []
    monkeypatch.setattr(_trim, "grown", lambda: checked.append(threading.current_thread().name) or False)
    path = make_video(tmp_path / "v.mp4", VideoSpec(gop=6, num_frames=12, width=96, height=64))
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        await eng.decode(str(path), [0])
        await eng.decode(str(path), [7])  # another GOP: another job
    assert len(checked) >= 2 and "MainThread" not in checked


def test_the_device_trimmer_empties_the_gpu_cache_when_its_slack_grew(monkeypatch):
    """What torch holds on a GPU beyond what is in use: emptied when it grew by the bound since the last
    time, at most once per interval; other devices never."""
    import types

    slack, calls, clock = [0], [], _Clock()
    fake = _trim.Trimmer(lambda: (calls.append(clock.t), slack.__setitem__(0, 5)), min_interval_s=30.0,
                         clock=clock, rss=lambda: slack[0], check_s=0.0, growth=100)
    monkeypatch.setitem(_trim._DEVICE_TRIMMERS, 7, fake)
    gpu = types.SimpleNamespace(type="cuda", index=7)
    assert not _trim.device_grown(gpu)  # the first reading: where growth counts from
    slack[0] = 99
    assert not _trim.device_grown(gpu)
    slack[0] = 100
    assert _trim.device_grown(gpu) and calls == [100.0] and fake.grown_trims == 1
    slack[0] = 500  # grew again at once: not before the interval
    assert not _trim.device_grown(gpu)
    clock.t += 30.0
    assert _trim.device_grown(gpu) and calls == [100.0, 130.0]
    assert fake.given_back == 95 + 495  # slack before less after, each time
    for device in ("cpu", types.SimpleNamespace(type="cpu", index=None)):
        assert not _trim.device_grown(device)
    monkeypatch.setattr(_trim, "DEVICE_MIN_INTERVAL_S", 0.0)  # ASYNCDECODE_CUDA_TRIM_S=0: off
    clock.t += 60.0
    slack[0] = 10_000
    assert not _trim.device_grown(gpu) and len(calls) == 2


async def test_decoder_threads_check_their_devices_memory_after_each_job(monkeypatch, tmp_path):
    from asyncdecode import Engine, EngineConfig
    from asyncdecode.testing import VideoSpec, make_video

    checked = []
    monkeypatch.setattr(_trim, "device_grown", lambda device: checked.append(str(device)) or False)
    path = make_video(tmp_path / "v.mp4", VideoSpec(gop=6, num_frames=12, width=96, height=64))
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        await eng.decode(str(path), [0])
        await eng.decode(str(path), [7])
    assert len(checked) >= 2 and set(checked) == {"cpu"}


@pytest.mark.cuda
def test_emptying_a_gpus_cache_gives_back_what_no_tensor_uses():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    index = torch.cuda.current_device()
    keep = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")  # in use: stays
    freed = [torch.empty(n << 20, dtype=torch.uint8, device="cuda") for n in (300, 500, 700)]
    del freed
    torch.cuda.synchronize()
    before = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
    assert before >= 1400 << 20
    t = _trim.Trimmer(_trim._cuda_empty(index), min_interval_s=1.0, rss=_trim._cuda_slack(index), check_s=0.0,
                      growth=1 << 30)
    assert not t.grown()  # the first reading
    t._floor = 0  # as if the last emptying had left nothing over
    assert t.grown() and t.grown_trims == 1
    after = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
    assert after < 64 << 20 and t.given_back >= 1400 << 20 and keep.numel() == 64 << 20
