"""asyncdecode.prepare: re-encoding a set for fast random access (issue 22, CPU)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from asyncdecode import Engine, GopStore, probe
from asyncdecode import _encode
from asyncdecode import prepare as prepare_module
from asyncdecode.cli import main
from asyncdecode.errors import BackendUnavailableError, InvalidRequestError
from asyncdecode.media import build_index
from asyncdecode.prepare import estimate, prepare, random_access_cost, record_path
from asyncdecode.testing import VideoSpec, make_video
from reference import reference_frames

# The GOP-250 set: what phones and web video look like, small enough to re-encode in a second.
LONG_GOP = VideoSpec(width=160, height=96, num_frames=260, gop=250)
LONG_GOP_SET = {
    "clip0/cam0.mp4": LONG_GOP,
    "clip0/cam1.mp4": VideoSpec(width=160, height=96, num_frames=260, gop=250, bframes=2, audio=True, seed=1),
    "clip1/cam0.mkv": VideoSpec(width=160, height=96, num_frames=260, gop=250, vfr=True, container="mkv", seed=2),
}


def make_set(root: Path, specs: dict[str, VideoSpec]) -> Path:
    for rel, spec in specs.items():
        make_video(root / rel, spec)
    return root


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def luma_psnr(a, b) -> float:
    return psnr(a.planes[0], b.planes[0], float((1 << (8 if a.planes[0].dtype == np.uint8 else 10)) - 1))


def times(path: Path) -> list[float]:
    info = probe(path)
    return [float(p * info.time_base) for p in info.frame_pts]


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object, object]:
    """The GOP-250 set, its dry-run estimate, and the set prepared with GOP 30 (threads: no process start)."""
    root = tmp_path_factory.mktemp("prepare")
    src = make_set(root / "src", LONG_GOP_SET)
    dst = root / "dst"
    planned = asyncio.run(estimate(src, dst, gop=30, executor="thread"))
    summary = asyncio.run(prepare(src, dst, gop=30, executor="thread", workers=2))
    return src, dst, planned, summary


# -- the targets ----------------------------------------------------------------------------------


def test_every_frame_kept_with_short_gops(long_gop) -> None:
    src, dst, _, summary = long_gop
    assert summary.ok and summary.done == 3 and summary.up_to_date == 0, summary.failed
    for rel in LONG_GOP_SET:
        before, after = probe(src / rel), probe(dst / rel)
        assert (after.num_frames, after.width, after.height) == (before.num_frames, before.width, before.height)
        assert max(before.gop_lengths) == 250 and max(after.gop_lengths) <= 30
        assert after.keyframes == tuple(range(0, 260, 30))
        assert np.allclose(times(dst / rel), times(src / rel), atol=float(after.time_base) / 2), rel
        assert after.fps == pytest.approx(before.fps, rel=1e-6)
        # Every frame is there, in its place: closest to its own source frame, far from the neighbours.
        ours, theirs = reference_frames(dst / rel), reference_frames(src / rel)
        assert len(ours) == len(theirs) == 260
        for i in range(260):
            own = luma_psnr(theirs[i], ours[i])
            assert own >= 35, (rel, i, own)
            for j in (i - 1, i + 1):
                if 0 <= j < 260:
                    assert luma_psnr(theirs[j], ours[i]) < own, (rel, i, j)
    assert len(summary.psnr_db) == 3 * prepare_module.PSNR_FRAMES
    assert min(summary.psnr_db) >= 35


def test_random_access_costs_4x_fewer_frames_estimated(long_gop) -> None:
    src, _, planned, summary = long_gop
    assert [f.status for f in planned.files] == ["planned"] * 3
    assert planned.cost_before / planned.cost_after >= 4
    for f in planned.files:
        assert f.gop_max_before == 250 and f.gop_max_after == 30 and f.speedup >= 4, f
    # The estimate is what the run then measures on the files themselves.
    assert planned.cost_before == pytest.approx(summary.cost_before)
    assert planned.cost_after == pytest.approx(summary.cost_after, rel=0.02)
    # 250 + 10 frames, every one a reference: (1 + ... + 250 + 1 + ... + 10) / 260.
    assert random_access_cost(src / "clip0/cam0.mp4") == pytest.approx((250 * 251 / 2 + 55) / 260)


async def _decoded_per_frame(paths: list[Path], requests: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    async with Engine(device="cpu") as eng:
        for p in paths:
            await eng.info(p)
        for _ in range(requests):
            await eng.decode([rng.choice(paths)], [rng.randrange(260)])
        stats = eng.stats()
    assert stats["frames_returned"] == requests
    return stats["frames_decoded"] / stats["frames_returned"]


async def test_random_access_costs_4x_fewer_frames_measured(long_gop) -> None:
    src, dst, _, _ = long_gop
    rels = list(LONG_GOP_SET)
    before = await _decoded_per_frame([src / r for r in rels], 60)
    after = await _decoded_per_frame([dst / r for r in rels], 60)
    assert before / after >= 4, (before, after)


async def test_cost_model_counts_what_the_engine_decodes(long_gop) -> None:
    """Frame by frame, from a cold start: the estimate's unit is the engine's frames_decoded."""
    src, dst, _, _ = long_gop
    for path in (src / "clip0/cam1.mp4", dst / "clip0/cam1.mp4"):
        costs = prepare_module._frame_costs(build_index(str(path)))
        for fid in (0, 1, 2, 29, 31, 200, 259):
            async with Engine(device="cpu") as eng:
                await eng.decode([path], [fid])
                assert eng.stats()["frames_decoded"] == costs[fid], (path, fid)


def test_audio_copied(long_gop) -> None:
    src, dst, _, summary = long_gop
    by_rel = {f.rel: f for f in summary.files}
    assert by_rel["clip0/cam1.mp4"].audio == "copied" and by_rel["clip0/cam0.mp4"].audio == "none"
    with av.open(str(src / "clip0/cam1.mp4")) as a, av.open(str(dst / "clip0/cam1.mp4")) as b:
        packets = [[(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size] for c in (a, b)]
        assert packets[0] == packets[1]
    assert summary.audio == {"copied": 1, "dropped": 0, "none": 2}


# -- resuming and atomic writes -------------------------------------------------------------------


def _listed(folder: Path) -> list[str]:
    """What a run left in ``folder``, its lock file aside (kept there for the next run)."""
    return sorted(n for n in os.listdir(folder) if n != prepare_module.LOCK_NAME)


def _stamps(root: Path) -> dict[str, int]:
    return {rel: (root / rel).stat().st_mtime_ns for rel in LONG_GOP_SET}


async def test_second_run_does_nothing_and_a_touched_source_is_redone(long_gop, tmp_path) -> None:
    src0, dst0, _, first = long_gop
    src, dst = tmp_path / "src", tmp_path / "dst"
    shutil.copytree(src0, src)  # sizes and mtimes copied too: the records still hold
    shutil.copytree(dst0, dst)
    kept = _stamps(dst)
    again = await prepare(src, dst, executor="thread")
    assert (again.done, again.up_to_date, again.ok) == (0, 3, True)
    assert _stamps(dst) == kept
    assert again.cost_after == pytest.approx(first.cost_after) and again.psnr_db == first.psnr_db
    os.utime(src / "clip0/cam1.mp4", ns=(kept["clip0/cam1.mp4"], kept["clip0/cam1.mp4"] + 10**9))
    third = await prepare(src, dst, executor="thread")
    assert [f.rel for f in third.files if f.status == "done"] == ["clip0/cam1.mp4"]
    assert {r: t for r, t in _stamps(dst).items() if r != "clip0/cam1.mp4"} == \
        {r: t for r, t in kept.items() if r != "clip0/cam1.mp4"}
    other = await prepare(src, dst, gop=20, executor="thread")  # new settings: everything again
    assert other.done == 3 and max(probe(dst / "clip0/cam0.mp4").gop_lengths) == 20


async def test_failed_encode_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    src = make_set(tmp_path / "src", {"a.mp4": LONG_GOP})
    dst = tmp_path / "dst"
    await prepare(src, dst, gop=30, executor="thread")
    old = (dst / "a.mp4").read_bytes()
    os.utime(src / "a.mp4", ns=(0, 10**18))  # the source "changed": it is re-encoded
    leftover = dst / ".a.mp4.999999999-deadbeef.tmp"  # what a killed run leaves
    leftover.write_bytes(b"half a video")
    seen = []
    partial = []

    def fail_midway(n: int) -> None:
        seen.append(n)
        if sum(seen) >= 128:
            partial.extend((p, os.path.getsize(dst / p)) for p in os.listdir(dst) if p.endswith(".tmp"))
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare_module, "_count_frames", fail_midway)
    summary = await prepare(src, dst, gop=30, executor="thread")
    assert not summary.ok and "No space left on device" in summary.failed["a.mp4"]
    assert len(partial) == 1 and partial[0][1] > 0  # half a video was written when it failed
    assert _listed(dst) == ["a.mp4"]  # no temporary file, no record
    assert (dst / "a.mp4").read_bytes() == old  # the previous output as it was
    monkeypatch.undo()
    again = await prepare(src, dst, gop=30, executor="thread")  # without a record it is not trusted
    assert again.done == 1 and record_path(dst / "a.mp4").exists()


# -- broken sources, colours, codecs --------------------------------------------------------------


async def test_broken_sources_are_named_and_skipped(assets, tmp_path) -> None:
    src = make_set(tmp_path / "src", {"good.mp4": VideoSpec(num_frames=30)})
    shutil.copy(assets["bad_truncated"], src / "truncated.mp4")
    shutil.copy(assets["bad_text"], src / "text.mp4")
    planned = await estimate(src, executor="thread")
    assert sorted(planned.failed) == ["text.mp4", "truncated.mp4"]
    summary = await prepare(src, tmp_path / "dst", executor="thread")
    assert summary.done == 1 and not summary.ok
    assert "truncated" in summary.failed["truncated.mp4"] and "not a readable media file" in summary.failed["text.mp4"]
    assert _listed(tmp_path / "dst") == [".good.mp4.prepare.json", "good.mp4"]


@pytest.mark.parametrize("codec", [None, "av1"])
async def test_colour_description_kept(assets, tmp_path, codec) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("bt709_full", "bt2020_limited", "bt601_full"):
        shutil.copy(assets[name], src / f"{name}.mp4")
    summary = await prepare(src, tmp_path / "dst", codec=codec, executor="thread")
    assert summary.ok, summary.failed
    for name in ("bt709_full", "bt2020_limited", "bt601_full"):
        with av.open(str(src / f"{name}.mp4")) as a, av.open(str(tmp_path / "dst" / f"{name}.mp4")) as b:
            ca, cb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
            assert probe(tmp_path / "dst" / f"{name}.mp4").codec == (codec or probe(src / f"{name}.mp4").codec)
            tags = [(c.colorspace, c.color_range, c.color_primaries, c.color_trc) for c in (ca, cb)]
            assert tags[0] == tags[1], name
            assert av.VideoFormat(cb.pix_fmt).components[0].bits == av.VideoFormat(ca.pix_fmt).components[0].bits
        # Same samples, not values moved to another range: each frame is close to its source.
        for x, y in zip(reference_frames(src / f"{name}.mp4"), reference_frames(tmp_path / "dst" / f"{name}.mp4")):
            assert luma_psnr(x, y) >= 35, name


async def test_bframes_layout(tmp_path) -> None:
    src = make_set(tmp_path / "src", {"a.mp4": VideoSpec(num_frames=100, gop=100)})
    planned = await estimate(src, gop=20, bframes=2, executor="thread")
    summary = await prepare(src, tmp_path / "dst", gop=20, bframes=2, executor="thread")
    out = probe(tmp_path / "dst/a.mp4")
    assert out.keyframes == (0, 20, 40, 60, 80)
    assert np.allclose(times(tmp_path / "dst/a.mp4"), times(src / "a.mp4"), atol=float(out.time_base) / 2)
    assert summary.files[0].cost_after == pytest.approx(planned.files[0].cost_after)
    # Pictures nothing references are not decoded for a random frame: fewer than without B-frames.
    assert summary.files[0].cost_after < (20 + 1) / 2


async def test_a_second_run_into_the_same_folder_fails_at_once(tmp_path) -> None:
    """Two runs into one destination would remove each other's temporary files: the second fails,
    naming the folder, and the first finishes."""
    from asyncdecode._files import folder_lock

    src = make_set(tmp_path / "src", {"a.mp4": VideoSpec(num_frames=12, gop=12)})
    dst = tmp_path / "dst"
    dst.mkdir()
    with folder_lock(dst, prepare_module.LOCK_NAME, "held by the test"):  # the run in progress
        with pytest.raises(InvalidRequestError, match=f"another prepare is writing into {dst}"):
            await prepare(src, dst, gop=4, executor="thread")
    assert not (dst / "a.mp4").exists()
    summary = await prepare(src, dst, gop=4, executor="thread")  # the lock is free again
    assert summary.ok and probe(dst / "a.mp4").keyframes == (0, 4, 8)


async def test_bad_arguments(tmp_path, monkeypatch) -> None:
    src = make_set(tmp_path / "src", {"a.mp4": VideoSpec(num_frames=12)})
    for kwargs in ({"gop": 0}, {"bframes": 30}, {"codec": "av1", "bframes": 2}, {"codec": "h264", "quality": 99},
                   {"quality": 2.5}, {"device": "cuda"}, {"workers": 0}, {"audio": "mix"}):
        with pytest.raises(InvalidRequestError):
            await prepare(src, tmp_path / "dst", executor="thread", **kwargs)
    # Each source's own codec: a quality out of its range fails that video, named.
    planned = await estimate(src, executor="thread", quality=99)
    assert "quality (CRF) for h264 must be in 0..51, not 99" in planned.failed["a.mp4"]
    with pytest.raises(InvalidRequestError, match="must not be or hold the source"):
        await prepare(src, src, executor="thread")
    with pytest.raises(InvalidRequestError, match="must not be or hold the source"):
        await prepare(src, tmp_path, executor="thread")
    monkeypatch.setattr(_encode, "has_encoder", lambda codec: codec != "hevc")
    with pytest.raises(BackendUnavailableError, match="no libx265 encoder"):
        await prepare(src, tmp_path / "dst", codec="hevc", executor="thread")
    assert not (tmp_path / "dst").exists()


# -- the command line -----------------------------------------------------------------------------


def test_cli_prepare(tmp_path, assets, capsys) -> None:
    """Dry run, run (as a user types it: worker processes), second run, a broken source, a GOP store."""
    src = make_set(tmp_path / "src", {"cam0.mp4": LONG_GOP})
    dst, gops = tmp_path / "dst", tmp_path / "gops"
    args = ["prepare", str(src), str(dst), "--gop", "30"]

    assert main([*args, "--dry-run", "--executor", "thread"]) == 0
    out = capsys.readouterr().out
    assert "cam0.mp4" in out and "250 -> 30" in out and "120.9 -> 15.1 (8.0x fewer)" in out
    assert not dst.exists()

    done = subprocess.run([sys.executable, "-m", "asyncdecode.cli", *args, "--store", str(gops), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["done"] == 1 and report["psnr_min_db"] >= 35 and report["store"]["built"] == 1
    assert report["cost_before"] / report["cost_after"] >= 4
    assert GopStore(gops, video_root=dst).info("cam0.mp4").keyframes == tuple(range(0, 260, 30))

    assert main([*args, "--executor", "thread"]) == 0
    assert "0 videos re-encoded, 1 up to date" in capsys.readouterr().out
    shutil.copy(assets["bad_text"], src / "broken.mp4")
    assert main([*args, "--executor", "thread", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "1 failed of 2" in out and "failed: broken.mp4: " in err


def test_cli_rejects_what_it_cannot_do(tmp_path, capsys, monkeypatch) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(tmp_path), str(tmp_path / "out"), "--device", "cuda"])
    assert exc.value.code == 2 and "invalid choice: 'cuda'" in capsys.readouterr().err
    monkeypatch.setattr(_encode, "has_encoder", lambda codec: codec == "h264")
    assert main(["prepare", str(tmp_path), str(tmp_path / "out"), "--codec", "av1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncdecode: error: this PyAV build") and "no libsvtav1 encoder" in err
