"""Faults injected at chosen points (``asyncdecode._faults``): each fails only the requests it concerns,
with a specific error; the engine repairs what broke (a decoder, a thread) and goes on; nothing hangs.

Deterministic: a fault fires at a counted hit of its point, never after a delay, and every wait is
bounded (``WAIT_S``). The same tests run on NVDEC where they mean the same (marked ``cuda``).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Collection
from pathlib import Path

import pytest
import torch

from asyncdecode import (AsyncDecodeError, CorruptDataError, DeviceMemoryError, Engine, EngineConfig, EngineState,
                         GopStore, OutputSpec, probe)
from asyncdecode import _faults
from asyncdecode._faults import InjectedFault
from asyncdecode.gop import GopBundle
from asyncdecode.store import INDEX_NAME
from asyncdecode.testing import VideoSpec, make_clip_set

WAIT_S = 30.0
"""The longest any step of these tests may take: every wait is bounded by it."""

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def nothing_armed():
    assert not _faults.armed  # a test never starts with another's fault still armed
    yield
    assert not _faults.armed


async def bounded(aw, timeout_s: float = WAIT_S):
    return await asyncio.wait_for(aw, timeout_s)


def _engine_threads(*, prefix: str = "asyncdecode", since: Collection[threading.Thread] = ()) -> list[threading.Thread]:
    """The engine threads alive now (started after the threads ``since``)."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t not in since]


def _settled_names(prefix: str, since: Collection[threading.Thread], count: int) -> set[str]:
    """The names of the engine threads alive once ``count`` of them are left (or after WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while len(alive := _engine_threads(prefix=prefix, since=since)) > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return {t.name for t in alive}


def _join(threads: list[threading.Thread]) -> list[threading.Thread]:
    """Join the threads (bounded); those still alive."""
    deadline = time.monotonic() + WAIT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


async def _reference(device: str, paths: list[str], ids: list[int], output: OutputSpec | None = None):
    async with Engine(device=device) as ref:
        return await bounded(ref.decode(paths, ids, output=output))


def _same(got: list[torch.Tensor], want: list[torch.Tensor]) -> bool:
    return len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))


# -- a session that fails mid-GOP ------------------------------------------------------------------


async def test_a_session_failing_mid_gop_fails_its_job_only_and_is_rebuilt(assets, device):
    path, other = str(assets["h264_nob"]), str(assets["hevc_closed"])  # h264_nob: GOP 10, no B-frames
    want = await _reference(device, [path, path, other], [8, 7, 20])
    async with Engine(device=device, config=EngineConfig(decoder_threads=1)) as eng:
        await bounded(eng.decode(other, [0]))
        created = eng.stats()["decoders_created"]
        with _faults.inject("decode", after=3, match=path) as fault:  # the 4th packet of the GOP
            bad, good = await bounded(asyncio.gather(eng.decode(path, [8]), eng.decode(other, [20]),
                                                     return_exceptions=True))
        assert fault.fired == 1
        assert isinstance(bad, AsyncDecodeError), repr(bad)
        if device == "cpu":  # not the data's fault: not a CorruptDataError (NVDEC reports every decoder failure so)
            assert type(bad) is AsyncDecodeError
            assert str(bad).startswith(f"{path}: decoding the GOP at frame 0 failed on cpu: InjectedFault: ")
        assert (bad.path, bad.frame_id, bad.device) == (path, 8, str(eng.device))
        assert isinstance(bad.__cause__, InjectedFault)
        assert _same(good, want[2:])
        # The one thread's session threw its decoder away: the same GOP decodes again, right, on a new one.
        assert _same(await bounded(eng.decode([path, path], [8, 7])), want[:2])
        s = eng.stats()
        assert s["requests_failed"] == 1 and s["jobs_in_flight"] == 0
        if device == "cpu":  # NVDEC sessions may also make decoders ahead, while idle
            assert s["decoders_created"] == created + 2


async def test_a_decoder_error_mid_gop_is_corrupt_data(assets):
    """What the FFmpeg decoder itself raises on a packet is the data's fault: CorruptDataError."""
    import av

    path = str(assets["h264_bframes"])
    want = await _reference("cpu", [path], [10])
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        error = av.error.InvalidDataError(errno.EINVAL, "Invalid data found when processing input")
        with _faults.inject("decode", after=2, match=path, error=error):
            with pytest.raises(CorruptDataError, match=rf"{re.escape(path)}: GOP at frame 0 does not decode") as err:
                await bounded(eng.decode(path, [10]))
        assert err.value.frame_id == 10 and err.value.__cause__ is error
        assert _same(await bounded(eng.decode(path, [10])), want)


# -- a decoder thread that dies --------------------------------------------------------------------


async def test_a_decoder_thread_that_dies_is_replaced(assets, device):
    path = str(assets["h264_nob"])  # 48 frames, GOPs of 10: each request below is a job of its own
    ids = [23, 3, 43, 13, 33]  # not front to back: no GOP is decoded ahead (a job the fault could take)
    want = await _reference(device, [path] * len(ids), ids)
    before = set(threading.enumerate())
    async with Engine(device=device, config=EngineConfig(decoder_threads=2)) as eng:
        names = {t.name for t in _engine_threads(prefix=f"asyncdecode-{eng.backend.name}", since=before)}
        with _faults.inject("thread", times=2) as fault:  # the first two jobs taken kill their threads
            results = await bounded(asyncio.gather(*(eng.decode(path, [i]) for i in ids), return_exceptions=True))
        assert fault.fired == 2
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 2
        for err in failed:
            assert type(err) is AsyncDecodeError and err.path == path and err.device == str(eng.device)
            assert re.search(r"decoder thread asyncdecode-\S+ died while decoding the GOP at frame \d+ "
                             r"\(InjectedFault: .*\); another thread took its place", str(err)), str(err)
            assert isinstance(err.__cause__, InjectedFault)
        for got, w in zip(results, want):
            if not isinstance(got, BaseException):
                assert torch.equal(got[0], w)
        s = eng.stats()
        assert s["decoder_threads_replaced"] == 2 and s["decoder_threads"] == 2 and s["jobs_in_flight"] == 0
        # a dead thread's job fails just before the thread returns: it is gone soon after, not at once
        alive = _settled_names(f"asyncdecode-{eng.backend.name}", before, 2)
        assert len(alive) == 2 and alive != names
        assert _same(await bounded(eng.decode([path] * len(ids), ids)), want)  # the new threads decode
    assert not _join(_engine_threads(since=before))


def test_threads_that_keep_dying_are_replaced_after_a_growing_wait():
    """Threads that die now and then are replaced at once; when as many as the pool has die within
    the window, each replacement waits, doubling, at most DEATH_DELAY_MAX_S: no spinning loop."""
    from asyncdecode._workers import DEATH_DELAY_MAX_S, DEATHS_WINDOW_S, Deaths

    deaths = Deaths(threads=2)
    assert deaths.delay(0.0) == 0.0
    assert deaths.delay(100.0) == 0.0  # two deaths, far apart
    assert deaths.delay(101.0) == 0.1  # two within the window
    assert deaths.delay(101.5) == 0.2
    assert deaths.delay(102.0) == 0.4
    assert [deaths.delay(103.0 + i) for i in range(8)][-1] == DEATH_DELAY_MAX_S
    assert deaths.delay(103.0 + 7 + DEATHS_WINDOW_S + 1) == 0.0  # quiet again: at once


async def test_a_fault_that_kills_every_thread_fails_each_request_and_does_not_spin(assets):
    path = str(assets["h264_nob"])
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        with _faults.inject("thread", times=None) as fault:  # every job kills its thread
            t0 = time.monotonic()
            results = await bounded(asyncio.gather(*(eng.decode(path, [i]) for i in (3, 13, 23, 33)),
                                                   return_exceptions=True))
            took = time.monotonic() - t0
        assert fault.fired == 4 and all(isinstance(r, AsyncDecodeError) and "died" in str(r) for r in results)
        assert eng.stats()["decoder_threads_replaced"] == 4
        assert took >= 0.1 + 0.2 + 0.4  # the replacements after the first waited, doubling
        assert len(await bounded(eng.decode(path, [5]))) == 1  # the fault gone: the last replacement decodes


async def test_a_thread_that_dies_keeping_its_place_in_a_gop_leaves_no_job_waiting_for_it(assets):
    """A thread that keeps its place in a GOP is the one that goes on with later jobs in that GOP; when
    it dies, those jobs go to another thread instead of waiting for it forever."""
    path = str(assets["h264_nob"])
    chw = OutputSpec(layout="chw")
    want = await _reference("cpu", [path, path], [6, 8], output=chw)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=2)) as eng:
        await bounded(eng.decode(path, [2, 3]))  # several frames: the session keeps its place in GOP 0
        with _faults.inject("thread", match=path) as fault:
            # Different outputs: two jobs, not merged; both are the first thread's to go on with.
            first, second = await bounded(asyncio.gather(eng.decode(path, [6]), eng.decode(path, [8], output=chw),
                                                         return_exceptions=True))
        assert fault.fired == 1
        assert isinstance(first, AsyncDecodeError) and "died" in str(first)
        assert torch.equal(second[0], want[1])
        assert eng.stats()["decoder_threads_replaced"] == 1


# -- out of device memory while making the outputs --------------------------------------------------


OOM_ERRORS = [
    pytest.param(lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; "
                                                "79.10 GiB total capacity)"), id="torch"),
    pytest.param(lambda: RuntimeError("CUDA error: out of memory"), id="cuda-runtime"),
    pytest.param(lambda: MemoryError(), id="host"),
]


@pytest.mark.parametrize("error", OOM_ERRORS)
async def test_out_of_memory_making_outputs_fails_that_request(assets, device, error):
    # H.264 both: the test assets' HEVC is smaller than NVDEC decodes (it falls back to the CPU there).
    path, other = str(assets["h264_bframes"]), str(assets["h264_nob"])
    want = await _reference(device, [path, other], [5, 9])
    async with Engine(device=device, config=EngineConfig(decoder_threads=2)) as eng:
        error = error()
        with _faults.inject("convert", match=path, error=error) as fault:
            bad, good = await bounded(asyncio.gather(eng.decode(path, [5]), eng.decode(other, [9]),
                                                     return_exceptions=True))
        assert fault.fired == 1
        assert isinstance(bad, DeviceMemoryError) and isinstance(bad, MemoryError), repr(bad)
        assert (bad.path, bad.frame_id, bad.device) == (path, 5, str(eng.device)) and bad.__cause__ is error
        assert str(bad).startswith(f"{path}: out of memory on {eng.device} decoding the GOP at frame 0 ")
        assert torch.equal(good[0], want[1])
        assert _same(await bounded(eng.decode(path, [5])), want[:1])  # the engine goes on


# -- a demux job that fails ------------------------------------------------------------------------


async def test_a_failing_demux_job_fails_its_requests_and_the_file_is_read_again(assets):
    path, other = str(assets["h264_bframes"]), str(assets["h264_nob"])
    want = await _reference("cpu", [path, other], [30, 30])
    async with Engine(device="cpu") as eng:
        await bounded(eng.decode(path, [0]))  # the file is open
        eio = OSError(errno.EIO, os.strerror(errno.EIO))
        with _faults.inject("demux", match=path, error=eio) as fault:
            bad, good = await bounded(asyncio.gather(eng.decode(path, [30]), eng.decode(other, [30]),
                                                     return_exceptions=True))
        assert fault.fired == 1
        assert isinstance(bad, CorruptDataError), repr(bad)
        assert (bad.path, bad.frame_id) == (path, 24) and bad.__cause__ is eio
        assert f"{path}: GOP 2 (frames 24..35) cannot be read (Input/output error)" in str(bad)
        assert torch.equal(good[0], want[1])
        assert _same(await bounded(eng.decode(path, [30])), want[:1])
        assert eng.stats()["open_files_opened"] == 3  # path, other, and path again: the failed reader was closed


# -- a GOP store whose bundle cannot be read ------------------------------------------------------


@pytest.fixture
def store_set(tmp_path: Path) -> tuple[GopStore, list[str]]:
    videos = tmp_path / "videos"
    paths = [str(p) for p in make_clip_set(videos, cameras=2, spec=VideoSpec(width=64, height=48, num_frames=30,
                                                                           gop=8, bframes=2))]
    store = GopStore(tmp_path / "gops", video_root=videos)
    asyncio.run(store.build(progress=False, executor="thread"))
    return store, paths


UNREADABLE = [
    pytest.param("raise", r"cannot be read \(Input/output error\)", id="EIO"),
    pytest.param("short", r"is damaged", id="short-read"),
]


@pytest.mark.parametrize("action, says", UNREADABLE)
async def test_an_unreadable_bundle_is_corrupt_data_or_demuxed(store_set, action, says, caplog):
    store, paths = store_set
    path = paths[0]
    bundle = store.bundle_path(path, 1)
    eio = OSError(errno.EIO, os.strerror(errno.EIO), str(bundle))
    want = await _reference("cpu", [path, path], [9, 3])
    async with Engine(device="cpu", gop_store=store) as eng:
        with _faults.inject("store_read", match=bundle, action=action, error=eio) as fault:
            with pytest.raises(CorruptDataError, match=rf"{re.escape(path)}: GOP store file {re.escape(str(bundle))} "
                                                     + says) as err:
                await bounded(eng.decode(path, [9]))
            assert isinstance(err.value, CorruptDataError) and err.value.path == path
            assert _same(await bounded(eng.decode(path, [3])), want[1:])  # the other GOPs of the file go on
        assert fault.fired == 1
        assert _same(await bounded(eng.decode(path, [9])), want[:1])  # read again, whole this time
        assert eng.stats()["demux_jobs"] == 0
    # Synchronous reads (DataLoader workers) say the same.
    with _faults.inject("store_read", match=bundle, action=action, error=eio):
        with pytest.raises(CorruptDataError, match=re.escape(str(bundle))):
            store.read_bundle(path, 1)
    # store_fallback="demux": the video is demuxed instead, logged.
    caplog.set_level(logging.WARNING, logger="asyncdecode")
    async with Engine(device="cpu", gop_store=store, config=EngineConfig(store_fallback="demux")) as eng:
        with _faults.inject("store_read", match=bundle, action=action, error=eio) as fault:
            assert _same(await bounded(eng.decode(path, [9, 3])), want)
        assert fault.fired == 1
        s = eng.stats()
        assert s["demux_jobs"] == 1 and s["requests_failed"] == 0
    assert f"{path}: GOP store file {bundle} " in caplog.text and "demuxing the video instead" in caplog.text


# -- SIGKILL during the offline tools -------------------------------------------------------------


def _cli(args: list[str], faults: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("ASYNCDECODE_FAULTS", None)
    if faults is not None:
        env["ASYNCDECODE_FAULTS"] = faults
    # Returns once every process that holds its output is gone: worker processes left behind would hang it.
    return subprocess.run([sys.executable, "-m", "asyncdecode.cli", *args], env=env, capture_output=True, text=True,
                          timeout=2 * WAIT_S)


def _visible(root: Path) -> tuple[list[Path], list[Path]]:
    """Files under their final names, and temporary files, under ``root``."""
    final, tmp = [], []
    for dirpath, _, names in os.walk(root):
        for name in names:
            (tmp if name.endswith(".tmp") else final).append(Path(dirpath) / name)
    return final, tmp


def _check_store_files(gops: Path) -> None:
    """Every bundle under its final name is whole; every index lists only bundles that are there."""
    final, _ = _visible(gops)
    for path in final:
        if re.fullmatch(r"gop\.\d+\.\d+\.bin", path.name):
            GopBundle.from_buffer(path.read_bytes())  # raises on a partial file
        elif path.name == INDEX_NAME:
            for g in json.loads(path.read_bytes())["gops"]:
                assert (path.parent / g["file"]).exists(), f"{path} lists {g['file']}, which is not there"


KILLS = [
    pytest.param("thread", "kill", id="build-process"),
    pytest.param("process", "kill", id="worker-process"),
    pytest.param("process", "kill_parent", id="build-process-with-workers"),
]


@pytest.mark.parametrize("executor, kill", KILLS)
def test_store_build_killed_at_a_rename_leaves_whole_files_and_a_rerun_finishes(tmp_path, executor, kill):
    """The build process is SIGKILLed (with worker processes: they end too, or the output pipes they
    share would not close), or a worker process is (the build fails the videos left, and exits)."""
    videos, gops = tmp_path / "videos", tmp_path / "gops"
    paths = make_clip_set(videos, cameras=3, spec=VideoSpec(width=64, height=48, num_frames=24, gop=8))
    args = ["store", "build", str(videos), str(gops), "--quiet", "--workers", "1", "--executor", executor]
    # Writes: per video a marker, 3 bundles, the index. The 7th is the second video's first bundle.
    killed = _cli(args, faults=f"write:after=6:action={kill}")
    if kill == "kill" and executor == "process":
        assert killed.returncode == 1 and "the worker died" in killed.stderr, killed.stderr
    else:
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    final, tmp = _visible(gops)
    assert len(tmp) == 1 and tmp[0].name.startswith(".gop.0.8.bin.")  # it died before the rename
    assert tmp[0].stat().st_size > 0 and not (tmp[0].parent / "gop.0.8.bin").exists()
    _check_store_files(gops)
    assert sum(p.name == INDEX_NAME for p in final) == 1  # the first video only

    again = _cli(args)
    assert again.returncode == 0, again.stderr
    assert re.search(r"^2 videos built, 1 up to date, 0 failed", again.stdout), again.stdout
    final, tmp = _visible(gops)
    assert tmp == []
    _check_store_files(gops)
    store = GopStore(gops, video_root=videos)
    assert store.verify().ok and sorted(store.videos()) == sorted(str(p.relative_to(videos)) for p in paths)


@pytest.mark.parametrize("executor, kill", [KILLS[0], KILLS[2]])
def test_prepare_killed_at_a_rename_leaves_whole_files_and_a_rerun_finishes(tmp_path, executor, kill):
    from asyncdecode.prepare import LOCK_NAME as prepare_lock

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_clip_set(src, cameras=2, spec=VideoSpec(width=64, height=48, num_frames=40, gop=40))
    args = ["prepare", str(src), str(dst), "--gop", "10", "--quiet", "--workers", "1", "--executor", executor]
    # Writes: per video the output, then its record. The 3rd is the second video's output.
    killed = _cli(args, faults=f"write:after=2:action={kill}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    final, tmp = _visible(dst)
    assert len(tmp) == 1 and re.fullmatch(r"\.cam\d\.mp4\.\d+-[0-9a-f]{8}\.tmp", tmp[0].name)
    outputs = [p for p in final if p.suffix == ".mp4"]
    assert len(outputs) == 1 and probe(outputs[0]).num_frames == 40  # whole: every frame there
    # The run's lock file stays for the next run; nothing else but the whole output and its record.
    assert {p.name for p in final} == {outputs[0].name, f".{outputs[0].name}.prepare.json", prepare_lock}

    again = _cli(args + ["--json"])
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["done"], summary["up_to_date"]) == (1, 1), summary
    final, tmp = _visible(dst)
    assert tmp == [] and sorted(p.name for p in final if p.suffix == ".mp4") == ["cam0.mp4", "cam1.mp4"]
    for p in final:
        if p.suffix == ".mp4":
            assert probe(p).num_frames == 40 and max(probe(p).gop_lengths) == 10


# -- ends that are not aclose() -------------------------------------------------------------------


def test_loop_closed_with_requests_in_flight_and_the_engine_open(assets, caplog):
    """``asyncio.run`` ends while requests are in flight and the engine was never closed: its threads
    end, with one log record saying why, no warnings, and no hang."""
    path = str(assets["hevc_closed"])
    kept: dict[str, Engine] = {}

    async def main() -> None:
        eng = kept["eng"] = Engine(device="cpu", config=EngineConfig(decoder_threads=2))
        futs = [eng.submit(path, [i]) for i in range(48)]
        await bounded(futs[0])  # the threads are busy with the rest

    caplog.set_level(logging.DEBUG, logger="asyncdecode")
    caplog.set_level(logging.DEBUG, logger="asyncio")
    before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        assert not _join(_engine_threads(since=before))  # decoder and demux threads
    eng = kept.pop("eng")
    assert [str(w.message) for w in caught] == []
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "event loop" in loud[0].getMessage() and "closed" in loud[0].getMessage(), \
        [r.getMessage() for r in loud]
    assert eng.state is EngineState.OPEN
    with pytest.warns(ResourceWarning, match="never closed"):
        eng.__del__()
    asyncio.run(eng.aclose())  # closing it later, on another loop, is quiet
    assert eng.state is EngineState.CLOSED


@pytest.mark.parametrize("point, threads", [("decode", "decoder"), ("demux", "demux")])
async def test_aclose_while_every_thread_is_busy_returns_in_time(assets, device, point, threads, caplog):
    """Every decoder thread inside a decode (or every demux thread inside a read) that does not end:
    ``aclose()`` returns after ``close_timeout_s``, says so, and the threads end once they can."""
    path = str(assets["h264_nob"])
    close_timeout_s = 0.5
    before = set(threading.enumerate())
    config = EngineConfig(decoder_threads=2, demux_workers=2, close_timeout_s=close_timeout_s)
    eng = Engine(device=device, config=config)
    await eng.__aenter__()
    with _faults.inject(point, times=None, action="pause") as fault:
        futs = [eng.submit(path, [i]) for i in (5, 15, 25, 35)]
        assert await asyncio.to_thread(fault.wait_fired, 2, WAIT_S)  # both threads paused
        t0 = time.monotonic()
        await bounded(eng.aclose())
        took = time.monotonic() - t0
        assert eng.state is EngineState.CLOSED and all(f.done() for f in futs)
        assert fault.fired == 2  # the threads were still busy when aclose() returned
    assert took < close_timeout_s + 1.0
    assert f"{threads} thread(s) still busy" in caplog.text
    assert not _join(_engine_threads(since=before))  # released: they end
