"""asyncdecode.data: clip index, distributed clip sampler, clip dataset requests, and the decode-ahead loader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from asyncdecode import Engine, FrameIndexError, InvalidRequestError, OutputSpec, VideoOpenError, probe
from asyncdecode.data import Clip, ClipDataset, ClipIndex, ClipLoader, ClipSampler
from asyncdecode.testing import VideoSpec, make_clip_set, make_video

SPEC = VideoSpec(width=64, height=48, num_frames=24, gop=8)


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 clips x 2 cameras of 24 frames; clip1's cam1 is shorter (20 frames)."""
    root = tmp_path_factory.mktemp("clips")
    make_clip_set(root, cameras=2, clips=3, spec=SPEC)
    make_video(root / "clip1" / "cam1.mp4", VideoSpec(width=64, height=48, num_frames=20, gop=8, seed=1001))
    (root / "clip0" / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def index(clip_root: Path) -> ClipIndex:
    return ClipIndex.from_dirs(clip_root)


# -- ClipIndex ---------------------------------------------------------------------------------------


def test_from_dirs(index: ClipIndex, clip_root: Path) -> None:
    assert index.cameras == ("cam0", "cam1")
    assert index.names == ["clip0", "clip1", "clip2"]
    assert index["clip0"] == Clip("clip0", (str(clip_root / "clip0/cam0.mp4"), str(clip_root / "clip0/cam1.mp4")), 24)
    assert index["clip1"].num_frames == 20  # the minimum over cameras
    assert len(index) == 3 and "clip2" in index and [c.name for c in index] == index.names


def test_from_dirs_camera_subset_and_errors(clip_root: Path, tmp_path: Path) -> None:
    sub = ClipIndex.from_dirs(clip_root, cameras=["cam1"])
    assert sub.cameras == ("cam1",) and sub["clip1"].paths == (str(clip_root / "clip1/cam1.mp4"),)
    with pytest.raises(VideoOpenError, match=r"lacks camera\(s\) \['cam7'\]"):
        ClipIndex.from_dirs(clip_root, cameras=["cam0", "cam7"])
    with pytest.raises(VideoOpenError, match="not a folder"):
        ClipIndex.from_dirs(tmp_path / "nowhere")
    with pytest.raises(InvalidRequestError, match="no clip folders"):
        ClipIndex.from_dirs(tmp_path)
    make_clip_set(tmp_path / "uneven", cameras=2, clips=2, spec=SPEC)
    os.remove(tmp_path / "uneven/clip1/cam0.mp4")
    with pytest.raises(VideoOpenError, match=r"clip1 lacks camera\(s\) \['cam0'\]"):
        ClipIndex.from_dirs(tmp_path / "uneven")


def test_save_load_round_trip_relative_paths(index: ClipIndex, clip_root: Path, tmp_path: Path) -> None:
    inside = clip_root / "index.json"
    index.save(inside)
    data = json.loads(inside.read_text())
    assert data["clip1"] == {"cam0": "clip1/cam0.mp4", "cam1": "clip1/cam1.mp4", "num_frames": 20}
    assert ClipIndex.load(inside) == index
    outside = tmp_path / "elsewhere" / "index.json"  # videos not under its folder: absolute paths
    index.save(outside)
    assert json.loads(outside.read_text())["clip0"]["cam0"] == str(clip_root / "clip0/cam0.mp4")
    assert ClipIndex.load(outside) == index
    os.remove(inside)


def test_in_memory_index_resolves_against_root(tmp_path: Path) -> None:
    idx = ClipIndex({"a": {"front": "a/f.mp4", "back": "/abs/b.mp4", "num_frames": 9}}, root=tmp_path)
    assert idx.cameras == ("back", "front")
    assert idx["a"].paths == ("/abs/b.mp4", str(tmp_path / "a/f.mp4"))
    assert ClipIndex({"a": {"front": "x.mp4", "num_frames": 1}}, cameras=["front"]).cameras == ("front",)


@pytest.mark.parametrize("clips, cameras, message", [
    ({}, None, "non-empty mapping"),
    ({"a": {"c0": "a.mp4"}}, None, "has no 'num_frames'"),
    ({"a": {"c0": "a.mp4", "num_frames": 0}}, None, "must be an int >= 1"),
    ({"a": {"c0": "a.mp4", "num_frames": True}}, None, "must be an int >= 1"),
    ({"a": {"c0": "a.mp4", "num_frames": 5}, "b": {"c1": "b.mp4", "num_frames": 5}}, None,
     r"clip 'b' lacks camera\(s\) \['c0'\]"),
    ({"a": {"c0": "a.mp4", "num_frames": 5}, "b": {"c0": "b.mp4", "lidar": "x", "num_frames": 5}}, None,
     r"unknown key\(s\) \['lidar'\]"),
    ({"a": {"c0": 3, "num_frames": 5}}, None, "must be a non-empty string"),
    ({"a": ["c0.mp4"]}, None, "must map camera -> path"),
    ({"a": {"c0": "a.mp4", "num_frames": 5}}, ["c0", "c0"], "distinct"),
])
def test_index_validation(clips, cameras, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        ClipIndex(clips, cameras=cameras)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidRequestError, match="not a JSON clip index") as err:
        ClipIndex.load(bad)
    assert err.value.path == str(bad)
    bad.write_text(json.dumps({"a": {"c0": "a.mp4"}}))
    with pytest.raises(InvalidRequestError, match=r"bad\.json: clip 'a' has no 'num_frames'"):
        ClipIndex.load(bad)


# -- ClipSampler -------------------------------------------------------------------------------------


def _epoch(num_clips: int, world_size: int, **kw) -> list[list[list[tuple]]]:
    """Every rank's batches for one epoch, ranks simulated in-process."""
    epoch = kw.pop("epoch", 0)
    out = []
    for rank in range(world_size):
        s = ClipSampler(num_clips, rank=rank, world_size=world_size, **kw)
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        out.append(batches)
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_clips", [1, 6, 7, 11])
@pytest.mark.parametrize("clips_per_batch", [1, 2, 4])
def test_sampler_every_clip_once_across_ranks(num_clips: int, world_size: int, clips_per_batch: int) -> None:
    ranks = _epoch(num_clips, world_size, clips_per_batch=clips_per_batch)
    per_rank = [[s for b in batches for s in b] for batches in ranks]
    assert len({len(r) for r in per_rank}) == 1  # equal step counts for DDP
    assert len({len(b) for b in ranks[0]}) <= 2 and all(len(b) <= clips_per_batch for b in ranks[0])
    assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[-1]]
    used = Counter(name for r in per_rank for name, _ in r)
    assert set(used) == set(range(num_clips))
    padding = sum(used.values()) - num_clips
    assert padding == -num_clips % world_size  # only the DistributedSampler padding repeats clips
    assert sum(c - 1 for c in used.values()) == padding


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampler_drop_last(world_size: int) -> None:
    ranks = _epoch(11, world_size, clips_per_batch=2, drop_last=True)
    names = [name for batches in ranks for b in batches for name, _ in b]
    assert len(names) == len(set(names)) == 11 // (2 * world_size) * 2 * world_size
    assert all(len(b) == 2 for batches in ranks for b in batches)
    with pytest.raises(InvalidRequestError, match="drop_last leaves nothing"):
        ClipSampler(3, clips_per_batch=2, world_size=2, rank=0, drop_last=True)


def test_sampler_epochs_and_seeds() -> None:
    def order(epoch: int, seed: int = 0) -> list:
        return _epoch(20, 2, epoch=epoch, seed=seed, clips_per_batch=3)

    assert order(0) == order(0) and order(5, seed=3) == order(5, seed=3)
    assert order(0) != order(1) and order(1) != order(2)
    assert order(0, seed=0) != order(0, seed=1)
    unshuffled = _epoch(5, 1, shuffle=False, epoch=3, clips_per_batch=2)[0]
    assert unshuffled == [[(0, 0), (1, 0)], [(2, 0), (3, 0)], [(4, 0)]]


def test_sampler_start_frames_fit_the_clip(index: ClipIndex) -> None:
    starts: dict[str, set[int]] = {n: set() for n in index.names}
    s = ClipSampler(index, frames_per_clip=4, stride=3, clips_per_batch=2)
    for epoch in range(40):
        s.set_epoch(epoch)
        for batch in s:
            for name, start in batch:
                assert 0 <= start and start + 3 * 3 < index[name].num_frames
                starts[name].add(start)
    assert max(starts["clip1"]) <= 20 - 10 and len(starts["clip0"]) > 5  # drawn over the whole range
    with pytest.raises(InvalidRequestError, match="clip 'clip1' has 20 frames; 3 frames at stride 10 need 21"):
        ClipSampler(index, frames_per_clip=3, stride=10)


@pytest.mark.parametrize("kwargs, message", [
    ({"clips_per_batch": 0}, "clips_per_batch must be an int >= 1"),
    ({"stride": 1.5}, "stride must be"),
    ({"rank": 2, "world_size": 2}, r"rank must be an int in 0\.\.1"),
    ({"world_size": 0}, "world_size must be"),
])
def test_sampler_validation(kwargs, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        ClipSampler(4, **kwargs)
    with pytest.raises(InvalidRequestError, match="needs a ClipIndex or a number of clips"):
        ClipSampler("clips")


def _shard_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One process of the gloo run: the sampler takes rank and world size from the process group."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        s = ClipSampler(13, clips_per_batch=2)
        s.set_epoch(4)
        shard = [name for batch in s for name, _ in batch]
        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, (s.rank, s.world_size, len(s), shard))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def test_sampler_in_a_real_gloo_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    mp.spawn(_shard_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    views = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert views[0] == views[1]  # both ranks saw the same shards
    (r0, w0, n0, shard0), (r1, w1, n1, shard1) = views[0]
    assert (r0, w0, r1, w1) == (0, 2, 1, 2) and n0 == n1 == 4
    assert not set(shard0) & set(shard1) - {shard0[0]}  # disjoint but for the one padding repeat
    assert Counter(shard0 + shard1) == Counter({**{k: 1 for k in range(13)}, shard0[0]: 2})
    expected = _epoch(13, 2, epoch=4, clips_per_batch=2)
    assert [[n for b in r for n, _ in b] for r in expected] == [shard0, shard1]


# -- ClipDataset -------------------------------------------------------------------------------------


def test_dataset_requests_are_camera_major(index: ClipIndex) -> None:
    ds = ClipDataset(index, frames_per_clip=3, stride=2)
    paths, ids = ds[("clip2", 5)]
    cam0, cam1 = index["clip2"].paths
    assert paths == [cam0] * 3 + [cam1] * 3 and ids == [5, 7, 9, 5, 7, 9]
    merged = ds.request([("clip2", 5), ("clip0", 0)])
    assert merged == (paths + [index["clip0"].paths[0]] * 3 + [index["clip0"].paths[1]] * 3, ids + [0, 2, 4] * 2)
    assert list(ds.requests([[("clip2", 5)], [("clip0", 0)]])) == [ds[("clip2", 5)], ds[("clip0", 0)]]
    with pytest.raises(FrameIndexError, match=r"frames 16\.\.20 \(stride 2\) out of range for clip 'clip1' \(0\.\.19"):
        ds[("clip1", 16)]
    with pytest.raises(InvalidRequestError, match="no clip 'clip9'"):
        ds[("clip9", 0)]
    with pytest.raises(InvalidRequestError, match="a sample is"):
        ds["clip0"]
    with pytest.raises(InvalidRequestError, match="at least one sample"):
        ds.request([])


# -- ClipLoader --------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine_layout", ["hwc", "chw"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
async def test_loader_matches_direct_decode(index: ClipIndex, engine_layout: str, layout: str) -> None:
    ds = ClipDataset(index, frames_per_clip=3, stride=2)
    sampler = ClipSampler(index, clips_per_batch=2, frames_per_clip=3, stride=2, seed=1)
    sampler.set_epoch(2)
    async with Engine(device="cpu", output=OutputSpec(layout=engine_layout)) as eng:
        loader = ClipLoader(eng, ds, sampler, depth=2, layout=layout)
        got = [(frames, samples) async for frames, samples in loader]
        assert len(got) == len(loader) == 2 and [s for _, s in got] == list(sampler)
        for frames, samples in got:
            shape = (3, 48, 64) if layout == "NCHW" else (48, 64, 3)
            assert frames.shape == (len(samples), 2, 3, *shape) and frames.dtype == torch.uint8
            assert frames.is_contiguous()
            for b, (name, start) in enumerate(samples):
                for c, path in enumerate(index[name].paths):
                    direct = await eng.decode(path, [start, start + 2, start + 4], output=OutputSpec(layout="hwc"))
                    for f, want in enumerate(direct):
                        have = frames[b, c, f] if layout == "NHWC" else frames[b, c, f].permute(1, 2, 0)
                        assert torch.equal(have, want), (name, start, c, f)


async def test_breaking_out_cancels_requests_in_flight(index: ClipIndex) -> None:
    # 40 clips over the same files, 8 frames per camera: 7 requests of 16 frames wait behind the first
    many = ClipIndex({f"c{k}": {"cam0": index[f"clip{k % 3}"].paths[0], "cam1": index[f"clip{k % 3}"].paths[1],
                                "num_frames": 20} for k in range(40)})
    ds = ClipDataset(many, frames_per_clip=8)
    sampler = ClipSampler(many, frames_per_clip=8)
    async with Engine(device="cpu") as eng:
        loader = ClipLoader(eng, ds, sampler, depth=8)
        async for frames, samples in loader:
            in_flight_at_break = eng.stats()["requests_in_flight"]
            break
        assert in_flight_at_break >= 1
        for _ in range(200):  # the event loop closes the abandoned generator on its next turns
            if eng.stats()["requests_in_flight"] == 0:
                break
            await asyncio.sleep(0.01)
        stats = eng.stats()
        assert stats["requests_in_flight"] == 0 and stats["requests_cancelled"] >= 1
        assert stats["requests"] == 8  # the stream stopped taking the sampler's batches

        # closing at a known point: nothing left in flight right after the block
        async with contextlib.aclosing(loader.epoch(1)) as batches:
            async for _ in batches:
                break
        assert eng.stats()["requests_in_flight"] == 0

        assert len([s async for _, s in loader]) == 40  # the engine still works
        frames = await eng.decode(index["clip0"].paths[0], [23])
        assert frames[0].shape == (48, 64, 3)


async def test_loader_errors(index: ClipIndex, tmp_path: Path) -> None:
    ds = ClipDataset(index, frames_per_clip=2)
    async with Engine(device="cpu") as eng:
        with pytest.raises(InvalidRequestError, match="layout must be"):
            ClipLoader(eng, ds, ClipSampler(index), layout="NTHWC")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="sampler draws 1 frames at stride 1 but the dataset reads 2"):
            ClipLoader(eng, ds, ClipSampler(index))
        with pytest.raises(InvalidRequestError, match="depth must be"):
            ClipLoader(eng, ds, ClipSampler(index, frames_per_clip=2), depth=0)
        # cameras of different sizes need an OutputSpec size to be stacked
        make_video(tmp_path / "mixed" / "c0.mp4", SPEC)
        make_video(tmp_path / "mixed" / "c1.mp4", VideoSpec(width=32, height=32, num_frames=24, gop=8))
        mixed = ClipIndex.from_dirs(tmp_path)
        loader = ClipLoader(eng, ClipDataset(mixed), ClipSampler(mixed))
        with pytest.raises(InvalidRequestError, match="differ in size"):
            async for _ in loader:
                pass
        loader = ClipLoader(eng, ClipDataset(mixed), ClipSampler(mixed), output=OutputSpec(size=(16, 16)))
        assert [tuple(f.shape) async for f, _ in loader] == [(1, 2, 1, 3, 16, 16)]
        assert probe(tmp_path / "mixed" / "c1.mp4").width == 32
