"""Time-based access (frame_at / frames_at, VideoInfo times <-> ids) and whole-video iteration (frames)."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
import torch

from asyncdecode import (Engine, EngineConfig, Frame, FrameIndexError, InvalidRequestError, SyncEngine, probe)

ITER_NAMES = ["h264_bframes", "hevc_open", "h264_vargop", "h264_shortlast"]
TIME_NAMES = ["h264_bframes", "h264_vfr", "hevc_open"]


def pyav_times(path) -> list[float]:
    """Presentation time of every frame, as PyAV's decoder outputs them (frame id = output position)."""
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def truth(assets):
    names = sorted(set(ITER_NAMES + TIME_NAMES))

    async def load():
        async with Engine(device="cpu", config=EngineConfig(decoder_threads=2)) as eng:
            return {n: await eng.decode(assets[n], list(range(probe(assets[n]).num_frames))) for n in names}

    return asyncio.run(load())


def _probe_times(times: list[float], end: float) -> list[tuple[float, int]]:
    """Times to ask about and the frame PyAV shows then: each frame's own time, a bit after, the middle
    of its interval, and just before the next frame."""
    out = []
    bounds = times + [end]
    for i, t in enumerate(times):
        nxt = bounds[i + 1]
        out += [(t, i), (t + 1e-7, i), ((t + nxt) / 2, i), (nxt - 1e-6, i)]
    return out


# -- VideoInfo -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TIME_NAMES)
def test_video_info_times_and_ids(assets, name):
    info = probe(assets[name])
    times = pyav_times(assets[name])
    assert [info.pts_seconds_of(i) for i in range(info.num_frames)] == pytest.approx(times, abs=1e-9)
    for t, want in _probe_times(times, info.end_seconds):
        assert info.frame_id_at(t) == want, (t, want)
        assert info.keyframe_id_at(t) == info.keyframes[info.gop_of(want)]
    for t in (times[0] - 1e-3, info.end_seconds, info.end_seconds + 5, -1.0):
        with pytest.raises(FrameIndexError, match="no frame is shown"):
            info.frame_id_at(t)
    for bad in ("1.0", None, float("nan"), True):
        with pytest.raises(InvalidRequestError):
            info.frame_id_at(bad)


def test_variable_frame_rate_is_not_constant(assets):
    """The VFR asset really has irregular intervals (so the test above checks more than fps arithmetic)."""
    info = probe(assets["h264_vfr"])
    gaps = np.diff([info.pts_seconds_of(i) for i in range(info.num_frames)])
    assert gaps.max() > 1.5 * gaps.min()
    begin = info.pts_seconds_of(0)
    mids = [(info.pts_seconds_of(i) + info.pts_seconds_of(i + 1)) / 2 for i in range(info.num_frames - 1)]
    assert [info.frame_id_at(t) for t in mids] == list(range(info.num_frames - 1))
    wrong = sum(int((t - begin) * info.fps) != i for i, t in enumerate(mids))  # what the mean rate would say
    assert wrong > info.num_frames // 4


# -- frame_at / frames_at -------------------------------------------------------------------------


@pytest.mark.parametrize("name", TIME_NAMES)
async def test_frame_at_accurate_matches_pyav(assets, truth, name):
    path = assets[name]
    times = pyav_times(path)
    info = probe(path)
    asks = _probe_times(times, info.end_seconds)[::3]
    async with Engine(device="cpu") as eng:
        for t, want in asks:
            frame = await eng.frame_at(path, t)
            assert isinstance(frame, Frame) and frame.index == want, (t, want)
            assert frame.pts_seconds == pytest.approx(times[want], abs=1e-9)
            assert torch.equal(frame.tensor, truth[name][want])
        with pytest.raises(FrameIndexError) as err:
            await eng.frame_at(path, info.end_seconds + 1)
        assert str(path) in str(err.value) and err.value.device == "cpu"


@pytest.mark.parametrize("name", TIME_NAMES)
async def test_frame_at_fast_returns_keyframes_and_decodes_only_them(assets, truth, name):
    path = assets[name]
    info = probe(path)
    times = pyav_times(path)
    keyframes = set(info.keyframes)
    asks = [times[i] + 1e-4 for i in range(0, info.num_frames, 5)]
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        got = [await eng.frame_at(path, t, accurate=False) for t in asks]
        stats = eng.stats()
    for t, frame in zip(asks, got):
        assert frame.index in keyframes
        assert frame.index == max(k for k in keyframes if times[k] <= t)
        assert frame.pts_seconds == pytest.approx(times[frame.index], abs=1e-9)
        assert torch.equal(frame.tensor, truth[name][frame.index])
    # nothing past the keyframe: one picture decoded per call
    assert stats["frames_decoded"] == len(asks)


async def test_frames_at_many_files(assets, truth):
    names = ["h264_vfr", "h264_bframes", "h264_vfr"]
    paths = [assets[n] for n in names]
    infos = [probe(p) for p in paths]
    seconds = [infos[0].pts_seconds_of(30), infos[1].pts_seconds_of(7) + 0.01, infos[2].pts_seconds_of(31) - 1e-4]
    async with Engine(device="cpu") as eng:
        got = await eng.frames_at(paths, seconds)
        fast = await eng.frames_at(paths[1], [0.5, 1.0], accurate=False)
        with pytest.raises(InvalidRequestError):
            await eng.frames_at(paths, seconds[:2])
        with pytest.raises(InvalidRequestError):
            await eng.frame_at(paths[0], "1.0")
    assert [f.index for f in got] == [30, 7, 30]
    for name, frame in zip(names, got):
        assert torch.equal(frame.tensor, truth[name][frame.index])
    assert [f.index for f in fast] == [infos[1].keyframe_id_at(0.5), infos[1].keyframe_id_at(1.0)]


# -- frames() --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ITER_NAMES)
async def test_frames_equals_full_decode_one_decode_per_frame(assets, truth, name):
    path = assets[name]
    info = probe(path)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=2)) as eng:
        got = [frame async for frame in eng.frames(path)]
        stats = eng.stats()
    assert [f.index for f in got] == list(range(info.num_frames))
    assert all(torch.equal(f.tensor, truth[name][f.index]) for f in got)
    assert [f.pts_seconds for f in got] == [info.pts_seconds_of(i) for i in range(info.num_frames)]
    # open GOPs decode each next keyframe once more for the leading pictures; a session may also start
    # a GOP over when a later request of it reaches a thread first (rare; see test_continuation)
    assert stats["frames_decoded"] / stats["frames_returned"] <= 1.15, stats


@pytest.mark.parametrize("start, stop, step", [(5, 30, 1), (0, None, 3), (-10, None, 1), (40, 10, 1), (7, 8, 5)])
async def test_frames_range(assets, truth, start, stop, step):
    path = assets["h264_bframes"]
    want = list(range(probe(path).num_frames))[start:stop:step]
    async with Engine(device="cpu") as eng:
        got = [frame async for frame in eng.frames(path, start=start, stop=stop, step=step)]
    assert [f.index for f in got] == want
    assert all(torch.equal(f.tensor, truth["h264_bframes"][f.index]) for f in got)


async def test_frames_bad_arguments_and_early_exit(assets):
    path = assets["h264_bframes"]
    async with Engine(device="cpu") as eng:
        for kw in ({"step": 0}, {"step": -1}, {"start": 1.5}, {"stop": "3"}):
            with pytest.raises(InvalidRequestError):
                async for _ in eng.frames(path, **kw):
                    pass
        frames = eng.frames(path)
        async for frame in frames:
            if frame.index == 3:
                break
        await frames.aclose()
        await asyncio.sleep(0)
        assert eng.stats()["requests_in_flight"] == 0


def test_sync_engine_time_access(assets, truth):
    path = assets["h264_vfr"]
    info = probe(path)
    with SyncEngine(device="cpu") as eng:
        frame = eng.frame_at(path, info.pts_seconds_of(12) + 1e-3)
        batch = eng.frames_at(path, [info.pts_seconds_of(3), info.pts_seconds_of(40)], accurate=False)
        ids = [f.index for f in eng.frames(path, start=10, stop=20, step=2)]
    assert frame.index == 12 and torch.equal(frame.tensor, truth["h264_vfr"][12])
    assert [f.index for f in batch] == [info.keyframe_id_at(info.pts_seconds_of(3)),
                                        info.keyframe_id_at(info.pts_seconds_of(40))]
    assert ids == [10, 12, 14, 16, 18]


# -- NVDEC ------------------------------------------------------------------------------------------


@pytest.mark.cuda
async def test_time_access_on_nvdec(assets, truth):
    path = assets["h264_vfr"]  # H.264: NVDEC takes the small test size
    info = probe(path)
    async with Engine(device="cuda") as eng:
        frame = await eng.frame_at(path, info.pts_seconds_of(25) + 1e-3)
        key = await eng.frame_at(path, info.pts_seconds_of(25) + 1e-3, accurate=False)
        got = [f async for f in eng.frames(path, stop=30)]
    assert frame.index == 25 and frame.tensor.device.type == "cuda"
    assert key.index == info.keyframe_id_at(info.pts_seconds_of(25))
    assert [f.index for f in got] == list(range(30))
    for f in (frame, key, *got):  # GPU and CPU conversions are each within 1 of the exact one
        assert (f.tensor.cpu().int() - truth["h264_vfr"][f.index].int()).abs().max() <= 2
