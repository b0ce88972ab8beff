"""Host memory given back after decoders close: a trim once enough went and the last one is long
enough ago, never more often, never a failure of the caller, off where there is no malloc_trim."""

from __future__ import annotations

import threading

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
