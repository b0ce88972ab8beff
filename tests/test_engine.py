"""The engine's request path: concurrency, merging per GOP, cache, prefetch, stream, cancellation, close."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading

import pytest
import torch

from asyncdecode import Engine, EngineClosedError, EngineConfig, EngineState, _index, probe
from asyncdecode.testing import VideoSpec, make_video

FILES = ["h264_bframes", "h264_nob", "hevc_closed", "hevc_open", "h264_vargop", "h264_shortlast"]


def _engine_threads():
    return [t for t in threading.enumerate() if t.name.startswith("asyncdecode")]


@pytest.fixture(scope="module")
def truth(assets):
    """Every frame of a few files, decoded once by a separate engine (itself checked in test_accuracy)."""
    async def load():
        async with Engine(device="cpu") as eng:
            return {n: await eng.decode(assets[n], list(range(probe(assets[n]).num_frames))) for n in FILES}

    return asyncio.run(load())


async def test_many_concurrent_requests_across_files(assets, truth):
    import random

    rng = random.Random(7)
    reqs = []
    for _ in range(64):
        names = [rng.choice(FILES) for _ in range(rng.randint(1, 6))]
        ids = [rng.randrange(len(truth[n])) for n in names]
        reqs.append((names, ids))
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=3, queue_size=4)) as eng:
        results = await asyncio.gather(*(eng.decode([assets[n] for n in names], ids) for names, ids in reqs))
        stats = eng.stats()
    for (names, ids), frames in zip(reqs, results):
        assert len(frames) == len(ids)
        for n, i, f in zip(names, ids, frames):
            assert torch.equal(f, truth[n][i])
    assert stats["requests"] == 64 and stats["requests_failed"] == 0
    assert stats["frames_returned"] == sum(len(ids) for _, ids in reqs)
    assert stats["queue_depth"] == 0 and stats["jobs_in_flight"] == 0
    assert stats["index_jobs"] == len(FILES)  # each file indexed once despite concurrent first use


async def test_frames_of_one_gop_decode_in_one_pass(assets):
    path = assets["h264_nob"]  # GOP 10, no B-frames: decoding up to frame k costs k+1 pictures
    async with Engine(device="cpu") as eng:
        await eng.decode(path, [3, 7, 5])
        s = eng.stats()
    assert s["frames_decoded"] == 8  # 0..7 once, not 4 + 8 + 6
    assert s["demux_jobs"] == 1


async def test_stop_feeding_once_wanted_frames_are_out(assets):
    path = assets["h264_nob"]
    async with Engine(device="cpu") as eng:
        await eng.decode(path, [1])
        s = eng.stats()
    assert s["frames_decoded"] == 2 and s["packets_fed"] == 2


async def test_gop_cache_hits_and_byte_bound(assets):
    path = assets["h264_bframes"]
    info = probe(path)
    async with Engine(device="cpu") as eng:
        await eng.decode(path, [1])
        await eng.decode(path, [2])
        s = eng.stats()
        assert (s["gop_cache_misses"], s["gop_cache_hits"], s["demux_jobs"]) == (1, 1, 1)
        assert s["gop_cache_bytes"] > 0
    one_gop = s["gop_cache_bytes"]
    cfg = EngineConfig(gop_cache_bytes=int(one_gop * 1.5))
    async with Engine(device="cpu", config=cfg) as eng:
        for k in info.keyframes:
            await eng.decode(path, [k])
            assert eng.stats()["gop_cache_bytes"] <= cfg.gop_cache_bytes
        s = eng.stats()
    assert s["gop_cache_evictions"] >= len(info.keyframes) - 2
    async with Engine(device="cpu", config=EngineConfig(gop_cache_bytes=0)) as eng:
        frames = await eng.decode(path, [3, 30])
        assert eng.stats()["gop_cache_entries"] == 0 and len(frames) == 2


async def test_prefetch_then_decode_needs_no_demux(assets, truth):
    paths = [assets[n] for n in FILES]
    async with Engine(device="cpu") as eng:
        fut = eng.prefetch(paths, [5] * len(paths))
        await fut
        before = eng.stats()
        assert before["demux_jobs"] == len(paths) and before["frames_decoded"] == 0
        frames = await eng.decode(paths, [5] * len(paths))
        after = eng.stats()
    assert after["demux_jobs"] == before["demux_jobs"]
    assert after["gop_cache_hits"] == len(paths)
    for n, f in zip(FILES, frames):
        assert torch.equal(f, truth[n][5])


async def test_prefetch_never_raises(assets, tmp_path):
    async with Engine(device="cpu") as eng:
        await eng.prefetch([tmp_path / "nope.mp4", assets["h264_nob"]], [0, 999])
        assert eng.stats()["prefetch_errors"] == 1


async def test_stream_in_order_with_depth(assets, truth):
    path = assets["h264_vargop"]
    n = len(truth["h264_vargop"])
    async with Engine(device="cpu") as eng:
        got = [f async for (f,) in eng.stream(((path, [i]) for i in range(n)), depth=6)]
        assert eng.stats()["requests"] == n

        async def agen():
            for i in range(0, n, 5):
                await asyncio.sleep(0)
                yield [path, path], [i, n - 1 - i]

        pairs = [fs async for fs in eng.stream(agen(), depth=3)]
    assert all(torch.equal(a, b) for a, b in zip(got, truth["h264_vargop"]))
    assert all(torch.equal(p[1], truth["h264_vargop"][n - 1 - i]) for p, i in zip(pairs, range(0, n, 5)))


async def test_stream_closed_early_cancels_in_flight(assets):
    path = assets["h264_bframes"]
    async with Engine(device="cpu") as eng:
        agen = eng.stream(((path, [i]) for i in range(48)), depth=8)
        async for _ in agen:
            break
        await agen.aclose()
        s = eng.stats()
        assert s["requests_in_flight"] == 0
        assert s["requests"] <= 9
        (f,) = await eng.decode(path, [47])  # still usable
        assert f.shape[-1] == 3


async def test_submit_returns_at_once_and_cancel_withdraws(assets, truth):
    paths = [assets[n] for n in FILES]
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, queue_size=2)) as eng:
        futs = [eng.submit(paths, [i % 10 + 20] * len(paths)) for i in range(30)]
        await asyncio.sleep(0.02)
        for f in futs[2:]:
            f.cancel()
        done = await asyncio.gather(*futs, return_exceptions=True)
        assert sum(isinstance(d, asyncio.CancelledError) for d in done) >= 20
        for _ in range(200):  # cancelled jobs drain out of the queue
            s = eng.stats()
            if s["jobs_in_flight"] == 0:
                break
            await asyncio.sleep(0.01)
        assert s["jobs_in_flight"] == 0 and s["queue_depth"] == 0 and s["queue_waiting"] == 0
        assert s["requests_cancelled"] >= 20
        assert len(_engine_threads()) <= 1 + eng.config.demux_workers  # no thread leaked or added
        frames = await eng.decode(paths, [33] * len(paths))  # the engine goes on
        for n, f in zip(FILES, frames):
            if 33 < len(truth[n]):
                assert torch.equal(f, truth[n][33])


async def test_backpressure_is_visible(assets):
    paths = [assets[n] for n in FILES]
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, queue_size=1)) as eng:
        futs = [eng.submit(paths, [30] * len(paths)) for _ in range(4)]
        seen = 0
        while not all(f.done() for f in futs):
            s = eng.stats()
            assert s["queue_depth"] <= 1
            seen = max(seen, s["queue_waiting"])
            await asyncio.sleep(0.001)
        await asyncio.gather(*futs)
    assert seen >= 1


async def test_aclose_cancels_stops_threads_and_is_idempotent(assets):
    path = assets["hevc_closed"]
    eng = Engine(device="cpu", config=EngineConfig(decoder_threads=2))
    assert eng.state is EngineState.NEW
    async with eng:
        assert eng.state is EngineState.OPEN
        futs = [eng.submit(path, [i]) for i in range(40)]
        await asyncio.sleep(0.01)
        await asyncio.gather(eng.aclose(), eng.aclose())
    assert eng.state is EngineState.CLOSED
    assert all(f.done() for f in futs)
    assert not _engine_threads()
    with pytest.raises(EngineClosedError):
        await eng.decode(path, [0])
    with pytest.raises(EngineClosedError):
        eng.submit(path, [0])
    with pytest.raises(EngineClosedError):
        eng.prefetch(path, [0])
    await eng.aclose()


async def test_never_opened_engine_closes_quietly():
    eng = Engine(device="cpu")
    await eng.aclose()
    assert eng.state is EngineState.CLOSED


async def test_unclosed_engine_warns(assets):
    eng = Engine(device="cpu")
    await eng.decode(assets["h264_nob"], [0])
    with pytest.warns(ResourceWarning, match="never closed"):
        eng.__del__()
    await eng.aclose()


async def test_duplicates_and_single_path_and_empty(assets):
    path = assets["h264_nob"]
    async with Engine(device="cpu") as eng:
        a, b, c = await eng.decode(path, [4, 4, 9])
        assert torch.equal(a, b) and a is not b
        assert await eng.decode([], []) == []
        assert (await eng.info(path)).num_frames == probe(path).num_frames


async def test_file_changed_on_disk_is_reindexed(assets, tmp_path):
    path = tmp_path / "changing.mp4"
    shutil.copy(assets["h264_nob"], path)
    async with Engine(device="cpu") as eng:
        (old,) = await eng.decode(path, [3])
        make_video(path, VideoSpec(gop=10, num_frames=30, seed=5, width=96, height=64))
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        await asyncio.sleep(_index.RECHECK_S + 0.01)  # an index found unchanged is trusted that long
        (new,) = await eng.decode(path, [3])
        assert new.shape == (64, 96, 3) and old.shape != new.shape
        assert eng.stats()["index_jobs"] == 2


async def test_a_cached_index_is_checked_against_the_file_at_most_once_per_recheck_time(assets, tmp_path,
                                                                                      monkeypatch):
    """Requests within RECHECK_S of the last check take the cached index without a stat of the file;
    the next one after it stats again, and sees a change."""
    now = [100.0]
    monkeypatch.setattr(_index, "_clock", lambda: now[0])
    stats = []
    stamp = _index.file_stamp
    monkeypatch.setattr(_index, "file_stamp", lambda p: stats.append(p) or stamp(p))
    path = tmp_path / "changing.mp4"
    shutil.copy(assets["h264_nob"], path)
    async with Engine(device="cpu") as eng:
        await eng.decode(path, [3])
        stats.clear()
        await eng.decode(path, [4])  # cached, checked now
        assert len(stats) == 1
        for _ in range(3):
            now[0] += _index.RECHECK_S / 4
            await eng.decode(path, [5])
        assert len(stats) == 1  # within RECHECK_S of that check: no stat
        make_video(path, VideoSpec(gop=10, num_frames=30, seed=5, width=96, height=64))
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        now[0] += _index.RECHECK_S / 2  # past RECHECK_S since the check: stat, changed, indexed again
        (new,) = await eng.decode(path, [3])
        assert new.shape == (64, 96, 3) and len(stats) >= 2 and eng.stats()["index_jobs"] == 2


async def test_indexed_files_unchanged_are_served_without_a_task_per_file(assets, monkeypatch):
    """A request over files already indexed (and unchanged) takes their indexes at once; only a file
    not indexed yet, or a missing one, goes the way that builds an index or raises its error."""
    from asyncdecode import VideoOpenError
    from asyncdecode._index import Indexes

    slow = []
    of = Indexes.of

    async def counted(self, path):
        slow.append(path)
        return await of(self, path)

    monkeypatch.setattr(Indexes, "of", counted)
    a, b = str(assets["h264_nob"]), str(assets["h264_bframes"])
    async with Engine(device="cpu") as eng:
        await eng.decode([a, b], [1, 2])
        assert sorted(slow) == sorted([a, b])
        slow.clear()
        await eng.decode([a, b, a], [3, 4, 5])
        assert slow == []
        with pytest.raises(VideoOpenError, match="no such file"):
            await eng.decode([a, a + ".gone"], [1, 1])
        assert slow == [a + ".gone"]


def test_engine_belongs_to_one_loop(assets):
    eng = Engine(device="cpu")

    async def use():
        return await eng.decode(assets["h264_nob"], [0])

    asyncio.run(use())
    with pytest.raises(Exception, match="another event loop|closed"):
        asyncio.run(use())
    # close it on a fresh loop: threads stop even so
    eng._state = EngineState.OPEN
    eng._loop = None

    async def close():
        eng._loop = asyncio.get_running_loop()
        await eng.aclose()

    asyncio.run(close())
    assert not _engine_threads()


@pytest.mark.parametrize("depth", [1, 3, 8])
async def test_stream_keeps_at_most_depth_requests_ahead(assets, depth):
    """``stream(depth=k)`` takes a request from the source only while fewer than k are in flight."""
    path = assets["h264_nob"]
    taken = 0
    consumed = 0
    ahead = []

    def source():
        nonlocal taken
        for i in range(24):
            taken += 1
            ahead.append(taken - consumed)
            yield path, [i]

    async with Engine(device="cpu") as eng:
        async for _ in eng.stream(source(), depth=depth):
            consumed += 1
            await asyncio.sleep(0.002)  # the caller's work
            assert eng.stats()["requests_in_flight"] <= depth
    assert consumed == 24 and max(ahead) == depth


async def test_stacked_output_is_one_batch_tensor(assets, truth):
    """``stack=True``: one N x H x W x C (or, with layout chw, N x C x H x W) tensor per request, equal
    to the listed frames; frames of different sizes are refused up front unless resized to one size."""
    from asyncdecode import InvalidRequestError, OutputSpec

    names = ["h264_nob", "h264_bframes", "hevc_open"]
    paths = [assets[n] for n in names]
    ids = [3, 7, 11]
    want = [truth[n][i] for n, i in zip(names, ids)]
    async with Engine(device="cpu") as eng:
        got = await eng.decode(paths, ids, stack=True)
        assert torch.equal(got, torch.stack(want))
        chw = await eng.decode(paths, ids, output=OutputSpec(layout="chw"), stack=True)
        assert chw.shape == (3, 3, *want[0].shape[:2]) and torch.equal(chw, got.permute(0, 3, 1, 2))
        results = [r async for r in eng.stream([(paths, ids), (paths[:1], ids[:1])], stack=True)]
        assert torch.equal(results[0], got) and results[1].shape == (1, *want[0].shape)
        odd = assets["h264_odd420"]
        with pytest.raises(InvalidRequestError, match="one size"):
            await eng.decode([paths[0], odd], [0, 0], stack=True)
        resized = await eng.decode([paths[0], odd], [0, 0], output=OutputSpec(size=(32, 48)), stack=True)
        assert resized.shape == (2, 32, 48, 3)
        empty = await eng.decode([], [], stack=True)
        assert empty.numel() == 0
        assert eng.stats()["requests_failed"] == 1
