"""GOP read-ahead in Engine.stream(): clips read front to back have their next GOPs decoded ahead on
idle threads, within a memory bound, and the requests take those frames instead of decoding them."""

from __future__ import annotations

import asyncio

import pytest
import torch

from asyncdecode import Engine, EngineConfig, FrameIndexError, OutputSpec, _readahead
from asyncdecode.testing import VideoSpec, make_video

N, GOP = 60, 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return str(make_video(tmp_path_factory.mktemp("ahead") / "clip.mp4", VideoSpec(num_frames=N, gop=GOP, bframes=2)))


@pytest.fixture(scope="module")
def truth(clip):
    async def read():
        async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
            return await eng.decode(clip, list(range(N)))
    return asyncio.run(read())


def _ahead_stats(stats):
    return {k: v for k, v in stats.items() if k.startswith("read_ahead")}


async def test_one_clip_one_frame_per_request_is_read_ahead_by_gop(clip, truth):
    """A list of one-frame requests: the GOPs after the one being read are decoded ahead, every frame
    once, none decoded ahead for nothing, and every frame equals the plain decode."""
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        got = [frames[0] async for frames in eng.stream([(clip, [f]) for f in range(N)], depth=4)]
        s = eng.stats()
    assert all(torch.equal(a, b) for a, b in zip(got, truth))
    ahead = _ahead_stats(s)
    assert ahead["read_ahead_gops"] >= 2 and ahead["read_ahead_used"] == ahead["read_ahead_frames"] > 0
    assert ahead["read_ahead_wasted"] == 0
    assert s["frames_decoded"] <= 1.1 * s["frames_returned"], s
    assert not eng._turns


async def test_a_clip_read_again_from_its_start_is_read_ahead_again(clip, truth):
    """Epochs in one stream: the clip read front to back three times. The step back to frame 0 starts
    the file's reading anew, so every pass is read ahead, not only the first."""
    passes = 3
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        got = [frames[0] async for frames in eng.stream([(clip, [f]) for f in range(N)] * passes, depth=4)]
        s = eng.stats()
    assert all(torch.equal(a, truth[i % N]) for i, a in enumerate(got))
    ahead = _ahead_stats(s)
    assert ahead["read_ahead_gops"] >= passes * 2, ahead  # each pass, not the first alone
    assert ahead["read_ahead_used"] == ahead["read_ahead_frames"] and ahead["read_ahead_wasted"] == 0
    assert s["frames_decoded"] <= 1.1 * s["frames_returned"], s


@pytest.mark.parametrize("source", ["list", "iterator"])
async def test_a_list_read_again_has_its_next_pass_first_gops_decoded_before_it_starts(clip, truth, source):
    """Where the stream's requests are a list, the read-ahead near a clip's end goes on with the GOPs
    at its start that later requests ask for (the next pass): the step back finds them decoded. Every
    frame right and used, none wasted. From an iterator (no known future) it plans no such GOP."""
    passes = 3
    planned = []
    real_start = _readahead.ReadAhead._start

    def start(self, index, gop, spec, below, next_run=False):
        started = real_start(self, index, gop, spec, below, next_run=next_run)
        if started:
            planned.append((gop, next_run))
        return started

    reqs = [(clip, [f]) for f in range(N)] * passes
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_readahead.ReadAhead, "_start", start)
        async with Engine(device="cpu", config=EngineConfig(decoder_threads=4)) as eng:
            got = [fr[0] async for fr in eng.stream(reqs if source == "list" else iter(reqs), depth=4)]
            s = eng.stats()
    assert all(torch.equal(a, truth[i % N]) for i, a in enumerate(got))
    ahead = _ahead_stats(s)
    assert ahead["read_ahead_used"] == ahead["read_ahead_frames"] and ahead["read_ahead_wasted"] == 0, ahead
    assert s["frames_decoded"] <= 1.1 * s["frames_returned"], s
    next_pass = [gop for gop, later in planned if later]
    if source == "list":
        assert 0 in next_pass, planned  # a pass's first GOP decoded before the pass began
        assert len([g for g in next_pass if g == 0]) <= passes - 1  # never for a pass no request makes
    else:
        assert not next_pass


class _Decodes:
    """A read-ahead's GOP decode for the planning tests: records each GOP started; each one ends when
    the test ends it (``finish``), else runs until the read-ahead is closed."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self._gates: dict[tuple[str, int], asyncio.Future] = {}

    def __call__(self, index, gop, ids, spec):
        self.started.append((index.path, gop))
        gate = self._gates[(index.path, gop)] = asyncio.get_running_loop().create_future()

        async def work():
            await gate
            return dict.fromkeys(ids)
        return work(), lambda: None

    def finish(self, path: str, gop: int) -> None:
        self._gates[(path, gop)].set_result(None)


def _planner(threads, files=("a.mp4",), device="cpu"):
    """A read-ahead over files of 10 GOPs of 10 frames, with no budget limit: (it, its decodes, indexes)."""
    from types import SimpleNamespace

    decodes = _Decodes()
    counters = SimpleNamespace(read_ahead_gops=0, read_ahead_frames=0, read_ahead_used=0, read_ahead_wasted=0)
    ahead = _readahead.ReadAhead(decodes, threads=threads, counters=counters, budget_bytes=1 << 40, device=device)
    info = SimpleNamespace(keyframes=list(range(0, 100, 10)), num_frames=100, height=8, width=8)
    return ahead, decodes, {p: SimpleNamespace(path=p, info=info) for p in files}


async def test_planning_takes_the_nearest_gop_of_every_file_before_the_next_of_any():
    """A request reading on in several files with fewer idle threads than GOPs to plan: each file's
    next GOP is planned before any file's second (file by file, the first files took every thread)."""
    files = [f"cam{i}.mp4" for i in range(3)]
    ahead, decodes, indexes = _planner(4, files)
    spec = OutputSpec()
    try:
        for f in range(3):  # three requests in a row going on in every file: a streak, then planning
            groups = {(p, 0): {f} for p in files}
            ahead.plan(groups, indexes, spec)
        # 4 threads, 3 files reading GOP 0 on their own sessions: one thread to spare
        assert decodes.started == [("cam0.mp4", 1)]
        decodes.started.clear()
        ahead._threads = 9  # 9 - 3 reading - 1 decoding ahead: five to spare
        ahead.plan({(p, 0): {3} for p in files}, indexes, spec)
        assert decodes.started == [("cam1.mp4", 1), ("cam2.mp4", 1), ("cam0.mp4", 2), ("cam1.mp4", 2),
                                   ("cam2.mp4", 2)]
    finally:
        await ahead.close()


@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
async def test_requests_of_several_frames_are_read_ahead_on_a_gpu_only(device):
    """Requests of 4 frames of a file, reading on: a GPU's idle sessions decode the next GOPs; on the
    CPU (every thread a core already decoding) such requests are not read ahead."""
    ahead, decodes, indexes = _planner(4, device=device)
    spec = OutputSpec()
    try:
        for lo in (0, 4, 8):
            ahead.plan({("a.mp4", lo // 10): set(range(lo, lo + 4))}, indexes, spec)
        assert [gop for _, gop in decodes.started] == ([] if device == "cpu" else [1, 2, 3])
    finally:
        await ahead.close()


async def test_a_gop_read_ahead_that_is_over_starts_the_next_of_the_latest_plan():
    """A thread freed by a GOP read ahead takes the next GOP of the latest request's plan at once, not
    when the stream makes its next request (it makes none while it waits for a GOP)."""
    ahead, decodes, indexes = _planner(2)
    spec = OutputSpec()
    try:
        for f in range(3):
            ahead.plan({("a.mp4", 0): {f}}, indexes, spec)
        assert decodes.started == [("a.mp4", 1)]  # two threads, one reading GOP 0 itself: one to spare
        decodes.finish("a.mp4", 1)
        for _ in range(5):
            await asyncio.sleep(0)
        assert decodes.started == [("a.mp4", 1), ("a.mp4", 2)]  # GOP 1 over: GOP 2 started, no request between
        assert ahead.ready("a.mp4", 1, spec, set(range(10, 20)))
    finally:
        await ahead.close()
    assert not ahead._gops and ahead.held == 0


async def test_an_iterator_that_stops_mid_clip_wastes_at_most_what_was_read_ahead(clip, truth):
    """From an iterator the read-ahead speculates whole GOPs; the frames nobody took are counted as
    wasted and given back when the stream ends."""
    def requests():
        for f in range(25):
            yield clip, [f]

    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        got = [frames[0] async for frames in eng.stream(requests(), depth=2)]
        s = eng.stats()
    assert all(torch.equal(a, b) for a, b in zip(got, truth))
    ahead = _ahead_stats(s)
    assert ahead["read_ahead_frames"] == ahead["read_ahead_used"] + ahead["read_ahead_wasted"]
    # Whole GOPs past frame 24, as many as idle threads got to: at most the rest of the clip (its 3 GOPs
    # after GOP 2 are within the planning depth, _readahead.DEEP); how many depends on the threads' timing.
    assert 0 < ahead["read_ahead_wasted"] <= N - 25
    assert ahead["read_ahead_used"] > 0


async def test_without_an_idle_thread_or_budget_nothing_is_read_ahead(clip, truth, monkeypatch):
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:  # no thread to spare
        got = [frames[0] async for frames in eng.stream([(clip, [f]) for f in range(N)], depth=4)]
        assert eng.stats()["read_ahead_gops"] == 0
    assert all(torch.equal(a, b) for a, b in zip(got, truth))
    monkeypatch.setattr(_readahead, "BUDGET_BYTES", 0)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        got = [frames[0] async for frames in eng.stream([(clip, [f]) for f in range(N)], depth=4)]
        assert eng.stats()["read_ahead_gops"] == 0
    assert all(torch.equal(a, b) for a, b in zip(got, truth))


async def test_the_budget_bounds_what_is_held_ahead(clip):
    """With room for one GOP's frames, at most one GOP is ahead at a time."""
    seen = []
    real_start = _readahead.ReadAhead._start

    def start(self, index, gop, spec, below, **kw):
        ok = real_start(self, index, gop, spec, below, **kw)
        seen.append(self.held)
        return ok

    async with Engine(device="cpu", config=EngineConfig(decoder_threads=4)) as eng:
        info = await eng.info(clip)
        frame = 3 * info.height * info.width
        monkeypatch = pytest.MonkeyPatch()
        monkeypatch.setattr(_readahead, "BUDGET_BYTES", GOP * frame)
        monkeypatch.setattr(_readahead.ReadAhead, "_start", start)
        try:
            async for _ in eng.stream([(clip, [f]) for f in range(N)], depth=2):
                pass
        finally:
            monkeypatch.undo()
        assert eng.stats()["read_ahead_gops"] > 0
    assert seen and max(seen) <= GOP * frame


async def test_leaving_the_stream_cancels_the_read_ahead_and_the_engine_goes_on(clip, truth):
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        stream = eng.stream([(clip, [f]) for f in range(N)], depth=4)
        got = []
        async for frames in stream:
            got.append(frames[0])
            if len(got) == 12:
                break
        await stream.aclose()
        assert all(torch.equal(a, b) for a, b in zip(got, truth))
        assert not eng._turns
        again = await eng.decode(clip, [N - 1, 35])
        assert torch.equal(again[0], truth[N - 1]) and torch.equal(again[1], truth[35])
        s = eng.stats()
        assert s["read_ahead_frames"] >= s["read_ahead_used"]


async def test_a_bad_request_fails_at_its_position_while_the_clip_is_read_ahead(clip, truth):
    """The requests before a bad one get their frames; the bad one raises its own error where it
    stands (which ends the stream, as any request's error does); the read-ahead is given back and the
    engine goes on."""
    reqs = [(clip, [f]) for f in range(30)]
    reqs[14] = (clip, [N + 5])  # out of range
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        got = []
        with pytest.raises(FrameIndexError):
            async for frames in eng.stream(reqs, depth=4):
                got.append(frames[0])
        assert len(got) == 14 and all(torch.equal(a, b) for a, b in zip(got, truth))
        assert not eng._turns
        assert torch.equal((await eng.decode(clip, [20]))[0], truth[20])


async def test_decode_callers_reading_on_are_read_ahead_and_random_access_is_not(clip, truth, monkeypatch):
    """Requests one at a time (decode()): a clip read frame after frame is read ahead once a few
    requests in a row went on in it (a one-frame job alone restarts at the keyframe with B-frames:
    without the read-ahead this clip costs 3.4 decodes per frame); random frames never are."""
    import random

    async def read_on(budget):
        monkeypatch.setattr(_readahead, "BUDGET_BYTES", budget)
        async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
            got = [(await eng.decode(clip, [f]))[0] for f in range(N)]
            assert all(torch.equal(a, b) for a, b in zip(got, truth))
            return eng.stats()

    full = _readahead.BUDGET_BYTES
    without = await read_on(0)
    s = await read_on(full)
    assert without["read_ahead_gops"] == 0
    assert s["read_ahead_used"] > 0 and s["read_ahead_wasted"] == 0
    assert s["frames_decoded"] <= 0.5 * without["frames_decoded"], (s, without)
    assert s["frames_decoded"] <= 1.5 * s["frames_returned"], s
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        ids = list(range(N))
        random.Random(5).shuffle(ids)
        for f in ids:
            assert torch.equal((await eng.decode(clip, [f]))[0], truth[f])
        assert eng.stats()["read_ahead_gops"] == 0


async def test_a_gop_ready_ahead_and_stale_at_once_is_still_handed_out(clip, truth, monkeypatch):
    """A request whose GOP the read-ahead holds, decoded, while the same request's planning drops
    that GOP as stale: the frames are taken before the planning, so the request gets them, and the
    GOP's line is left free for the next request (it failed with a KeyError and left the line taken,
    so every later request for that GOP waited forever)."""
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3)) as eng:
        for f in range(4):  # goes on in the file: GOPs after the first are read ahead
            assert torch.equal((await eng.decode(clip, [f]))[0], truth[f])
        ahead = eng._request_path.ahead
        assert ahead._gops, "nothing read ahead"
        spec = next(iter(ahead._gops))[2]
        await asyncio.wait_for(asyncio.gather(*(e.task for e in ahead._gops.values())), 10)
        assert ahead.ready(clip, 1, spec, {GOP})
        monkeypatch.setattr(_readahead, "STALE_REQUESTS", 0)  # what was planned is stale at the next request
        for f in (GOP, GOP + 1, 2 * GOP):
            got = await asyncio.wait_for(eng.decode(clip, [f]), 10)
            assert torch.equal(got[0], truth[f])
        assert eng.stats()["read_ahead_used"] >= 1
    assert not eng._turns


async def test_closing_the_engine_with_gops_read_ahead_returns_promptly(clip):
    eng = Engine(device="cpu", config=EngineConfig(decoder_threads=3))
    async with eng:
        for f in range(2 * GOP):  # reads on: GOPs ahead are planned (some still decoding at the close)
            await eng.decode(clip, [f])
        assert eng.stats()["read_ahead_gops"] > 0
    assert not eng._turns and eng.stats()["state"] == "closed"


def test_the_read_ahead_budget_follows_the_gpus_memory(monkeypatch):
    """1 GiB per stream on the CPU; on a GPU 1/32 of its memory, within 1 to 8 GiB; the environment's
    ASYNCDECODE_READ_AHEAD_BYTES (BUDGET_BYTES) wins over both."""
    import types

    sizes = {}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: types.SimpleNamespace(total_memory=sizes[dev.index]))
    sizes.update({0: 141 * 10**9, 1: 24 * 2**30, 2: 640 * 2**30})
    assert _readahead.default_budget("cpu") == 1 << 30
    assert _readahead.default_budget("cuda:0") == 141 * 10**9 // 32
    assert _readahead.default_budget("cuda:1") == 1 << 30
    assert _readahead.default_budget("cuda:2") == 8 << 30

    def budget(**kw):
        return _readahead.ReadAhead(lambda *a: None, 4, None, **kw).budget_bytes

    monkeypatch.setattr(_readahead, "BUDGET_BYTES", None)
    assert budget(device="cuda:0") == 141 * 10**9 // 32 and budget() == 1 << 30
    monkeypatch.setattr(_readahead, "BUDGET_BYTES", 12345)
    assert budget(device="cuda:0") == 12345 and budget(budget_bytes=7) == 7
