"""The engine on a GOP store: same frames as from the videos, no video opened, damage and changes reported."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from asyncdecode import (CorruptDataError, Engine, EngineConfig, GopStore, StaleStoreError, VideoOpenError, probe)
from asyncdecode.testing import VideoSpec, make_clip_set, make_video

SPEC = VideoSpec(width=64, height=48, num_frames=30, gop=8, bframes=2)


@pytest.fixture
def store_set(tmp_path: Path) -> tuple[GopStore, list[str]]:
    videos = tmp_path / "videos"
    paths = [str(p) for p in make_clip_set(videos, cameras=3, clips=2, spec=SPEC)]
    store = GopStore(tmp_path / "gops", video_root=videos)
    asyncio.run(store.build(progress=False, executor="thread"))
    return store, paths


async def _all_frames(eng: Engine, paths: list[str]) -> list[list[torch.Tensor]]:
    return [await eng.decode(p, list(range(probe(p).num_frames))) for p in paths]


async def test_store_frames_equal_video_frames_and_no_video_is_opened(store_set):
    store, paths = store_set
    async with Engine(device="cpu") as eng:
        want = await _all_frames(eng, paths)
    async with Engine(device="cpu", gop_store=store) as eng:
        got = await _all_frames(eng, paths)
        s = eng.stats()
    for a, b in zip(got, want):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    assert s["demux_jobs"] == 0 and s["index_jobs"] == 0 and s["open_files_opened"] == 0
    assert s["store_reads"] == sum(len(probe(p).keyframes) for p in paths) and s["store_read_bytes"] > 0


async def test_store_serves_frames_after_the_videos_are_gone(store_set, tmp_path):
    store, paths = store_set
    async with Engine(device="cpu") as eng:
        want = await eng.decode(paths, [5] * len(paths))
    shutil.rmtree(tmp_path / "videos")
    async with Engine(device="cpu", gop_store=store) as eng:
        got = await eng.decode(paths, [5] * len(paths))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


async def test_damaged_and_missing_bundles_fail_their_requests_only(store_set):
    store, paths = store_set
    bad, gone = store.bundle_path(paths[0], 1), store.bundle_path(paths[1], 2)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    gone.unlink()
    async with Engine(device="cpu", gop_store=store) as eng:
        with pytest.raises(CorruptDataError, match=str(bad.name)):
            await eng.decode(paths[0], [9])
        with pytest.raises(CorruptDataError, match="missing from the GOP store"):
            await eng.decode(paths[1], [17])
        assert len(await eng.decode(paths[0], [0, 20])) == 2  # the rest of the file and the engine go on
    async with Engine(device="cpu") as ref, Engine(device="cpu", gop_store=store,
                                                  config=EngineConfig(store_fallback="demux")) as eng:
        got = await eng.decode(paths[1], [17])  # demuxed from the video instead
        assert torch.equal(got[0], (await ref.decode(paths[1], [17]))[0])


async def test_a_bundle_checksum_is_checked_once_per_file_version(store_set):
    """Reading a bundle file again (the GOP cache off) skips the CRC pass, unless the file was rewritten
    since: damage written into a file after a first good read still fails its requests."""
    store, paths = store_set
    path = store.bundle_path(paths[0], 1)
    async with Engine(device="cpu", gop_store=store, config=EngineConfig(gop_cache_bytes=0)) as eng:
        first = await eng.decode(paths[0], [9])
        assert eng.stats()["store_checksums"] == 1
        assert torch.equal((await eng.decode(paths[0], [9]))[0], first[0])
        s = eng.stats()
        assert s["store_reads"] == 2 and s["store_checksums"] == 1
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size ...
        path.write_bytes(bytes(data))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # ... a later modification time
        with pytest.raises(CorruptDataError, match=path.name):
            await eng.decode(paths[0], [9])
        assert eng.stats()["store_checksums"] == 2
        assert len(await eng.decode(paths[0], [0])) == 1  # the engine goes on


async def test_a_changed_video_is_reported_or_demuxed(store_set, caplog):
    store, paths = store_set
    changed = paths[2]
    make_video(changed, VideoSpec(width=64, height=48, num_frames=30, gop=8, seed=99))
    os.utime(changed, ns=(1, 1))  # a different mtime whatever the clock did
    async with Engine(device="cpu", gop_store=store) as eng:
        with pytest.raises(StaleStoreError):
            await eng.decode(changed, [3])
        assert len(await eng.decode(paths[0], [3])) == 1
    caplog.set_level(logging.WARNING, logger="asyncdecode")
    async with Engine(device="cpu") as ref, Engine(device="cpu", gop_store=store,
                                                  config=EngineConfig(store_fallback="demux")) as eng:
        got = await eng.decode(changed, [3, 20])
        want = await ref.decode(changed, [3, 20])
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert eng.stats()["store_fallback_files"] == 1
    assert "demuxing the video instead" in caplog.text


async def test_a_video_the_store_lacks(store_set, tmp_path):
    store, _ = store_set
    extra = tmp_path / "videos" / "extra.mp4"
    make_video(extra, SPEC)
    async with Engine(device="cpu", gop_store=store) as eng:
        with pytest.raises(VideoOpenError, match="no video"):
            await eng.decode(str(extra), [0])
    async with Engine(device="cpu", gop_store=store, config=EngineConfig(store_fallback="demux")) as eng:
        assert len(await eng.decode(str(extra), [0, 29])) == 2
