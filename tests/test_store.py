"""The GOP store: build, layout, reading back, resuming, changed sources, damage, verify, command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pickle
import re
import shutil
import threading
from pathlib import Path

import pytest

from asyncdecode import (
    CorruptDataError,
    GopStore,
    InvalidRequestError,
    StaleStoreError,
    VideoOpenError,
    drop_page_cache,
    probe,
)
from asyncdecode.cli import main
from asyncdecode.gop import GopBundle, extract_gops
from asyncdecode.media import FileStamp, file_stamp
from asyncdecode.store import BUILD_MARKER_NAME, INDEX_NAME, _info_from_json, _info_to_json, bundle_name, find_videos
from asyncdecode.testing import VideoSpec, make_clip_set, make_video

SPEC = VideoSpec(width=64, height=48, num_frames=24, gop=8, bframes=2)

#: The videos of the shared set: a 2-clip, 3-camera set plus an open-GOP HEVC MKV and variable GOP lengths.
VIDEOS = [
    "clip0/cam0.mp4", "clip0/cam1.mp4", "clip0/cam2.mp4", "clip1/cam0.mp4", "clip1/cam1.mp4", "clip1/cam2.mp4",
    "extra/hevc_open.mkv", "extra/vargop.mp4",
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "videos"
    make_clip_set(root, cameras=3, clips=2, spec=SPEC)
    make_video(root / "extra" / "hevc_open.mkv", VideoSpec(codec="hevc", width=64, height=48, num_frames=30, gop=12,
                                                           bframes=3, open_gop=True, container="mkv"))
    make_video(root / "extra" / "vargop.mp4", VideoSpec(width=64, height=48, gop_lengths=(5, 11, 7), num_frames=23,
                                                        bframes=1))
    (root / "extra" / "notes.txt").write_text("not a video: ignored\n")
    (root / "extra" / ".hidden.mp4").write_text("hidden files are ignored\n")
    return root


@pytest.fixture(scope="module")
def built(videos: Path) -> tuple[GopStore, object]:
    """The store of ``videos``, built once with the default executor (worker processes)."""
    store = GopStore(videos.parent / "gops", video_root=videos)
    summary = asyncio.run(store.build(progress=False, workers=2))
    return store, summary


@pytest.fixture
def store_copy(built: tuple[GopStore, object], tmp_path: Path) -> GopStore:
    """A copy of the built store and its videos (mtimes kept) that a test may damage."""
    store, _ = built
    shutil.copytree(store.video_root, tmp_path / "videos")
    shutil.copytree(store.root, tmp_path / "gops")
    return GopStore(tmp_path / "gops", video_root=tmp_path / "videos")


def _files(root: Path) -> dict[Path, int]:
    """Every bundle file under ``root`` -> its inode (a rewrite replaces the inode)."""
    return {p: p.stat().st_ino for p in root.rglob("gop.*.bin")}


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# -- building ----------------------------------------------------------------------------------------


def test_build_stores_every_gop_of_every_video(videos, built):
    store, summary = built
    assert find_videos(videos) == VIDEOS
    infos = {rel: probe(videos / rel) for rel in VIDEOS}
    assert (summary.videos, summary.built, summary.skipped, dict(summary.errors)) == (8, 8, 0, {})
    assert summary.frames == sum(i.num_frames for i in infos.values()) == 6 * 24 + 30 + 23
    total = 0
    for rel, info in infos.items():
        folder = store.root / rel
        names = [bundle_name(f, n) for f, n in zip(info.keyframes, info.gop_lengths)]
        assert sorted(os.listdir(folder)) == sorted([*names, INDEX_NAME, BUILD_MARKER_NAME])
        source = str(videos / rel)
        table = store.gop_table(source)
        assert [(g.first_frame_id, g.frame_count, g.file) for g in table] == \
            list(zip(info.keyframes, info.gop_lengths, names))
        for g, (entry, expected) in enumerate(zip(table, extract_gops(source, list(info.keyframes)))):
            data = (folder / entry.file).read_bytes()
            assert data == expected.to_bytes()
            assert store.read_bundle(source, g).to_bytes() == data
            assert store.read_bundle(rel, g).frame_ids == entry.frame_ids
            assert store.bundle_path(source, g) == folder / entry.file
            assert entry.nbytes == len(data)
            total += len(data)
    assert [len(store.gop_table(rel)) for rel in VIDEOS] == [3] * 6 + [3, 3]
    assert (summary.bundles_written, summary.bundles_kept, summary.bytes_written) == (24, 0, total)
    assert store.videos() == VIDEOS


async def test_second_build_skips_what_is_up_to_date(store_copy):
    before = _files(store_copy.root)
    summary = await store_copy.build(progress=False, executor="thread")
    assert (summary.built, summary.skipped, summary.bundles_written, summary.bytes_written) == (0, 8, 0, 0)
    assert summary.ok and _files(store_copy.root) == before


def test_index_round_trips_video_info(videos, built, assets):
    store, _ = built
    for rel in VIDEOS:
        source = str(videos / rel)
        info = probe(source)
        assert store.info(source) == info
        assert store.info(rel) == dataclasses.replace(info, path=rel)
        doc = json.loads((store.root / rel / INDEX_NAME).read_bytes())
        st = os.stat(source)
        assert (doc["version"], doc["source"], doc["source_size"], doc["source_mtime_ns"]) == \
            (1, rel, st.st_size, st.st_mtime_ns)
        assert store.stamp(source) == file_stamp(source) == FileStamp(st.st_size, st.st_mtime_ns)
        assert doc["info"]["time_base"] == [info.time_base.numerator, info.time_base.denominator]
        assert doc["info"]["keyframes"] == list(info.keyframes)
        assert doc["gops"][0] == {"first_frame_id": 0, "frame_count": info.gop_lengths[0],
                                  "file": bundle_name(0, info.gop_lengths[0]),
                                  "bytes": (store.root / rel / bundle_name(0, info.gop_lengths[0])).stat().st_size}
    for name in ("h264_vfr", "hevc_10bit", "bt709_full", "two_streams", "av1"):
        info = probe(assets[name])
        back = _info_from_json(json.loads(json.dumps(_info_to_json(info))))
        assert back == info and back.fps == info.fps and type(back.time_base) is type(info.time_base)


async def test_interrupted_build_resumes(store_copy):
    rel = "clip1/cam2.mp4"
    folder = store_copy.root / rel
    table = store_copy.gop_table(rel)
    original = {g.file: (folder / g.file).read_bytes() for g in table}
    (folder / INDEX_NAME).unlink()
    missing, damaged = folder / table[1].file, folder / table[2].file
    missing.unlink()
    _flip_byte(damaged, -9)  # the last payload byte: fails the CRC, so it is written again
    stray = folder / f".{table[1].file}.4242-deadbeef.tmp"
    stray.write_bytes(original[table[1].file][:100])
    before = _files(store_copy.root)

    summary = await store_copy.build(progress=False, executor="thread")
    assert (summary.built, summary.skipped, summary.bundles_written, summary.bundles_kept) == (1, 7, 2, 1)
    assert not stray.exists()
    assert sorted(os.listdir(folder)) == sorted([*original, INDEX_NAME, BUILD_MARKER_NAME])
    assert (folder / table[0].file).read_bytes() == original[table[0].file]
    # Rewritten bundles name the copy's source path (the originals name the first store's).
    rewritten = extract_gops(store_copy.video_root / rel, [table[1].first_frame_id, table[2].first_frame_id])
    assert [missing.read_bytes(), damaged.read_bytes()] == [b.to_bytes() for b in rewritten]
    assert summary.bytes_written == sum(b.nbytes for b in rewritten)
    after = _files(store_copy.root)
    assert {p for p, inode in before.items() if after[p] != inode} == {damaged}  # nothing else was rewritten
    assert store_copy.verify().ok


async def test_changed_source_is_detected_and_rebuilt(store_copy):
    rel = "clip0/cam1.mp4"
    source = store_copy.video_root / rel
    store_copy.check_source(source)
    store_copy.check_source(rel)
    st = os.stat(source)
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(StaleStoreError, match=re.escape(f"{source} changed after it was stored")) as err:
        store_copy.check_source(source)
    assert isinstance(err.value, CorruptDataError) and err.value.path == str(source)

    make_video(source, dataclasses.replace(SPEC, num_frames=20, gop=5, seed=77))  # other content and GOPs
    with pytest.raises(StaleStoreError, match="size"):
        store_copy.check_source(rel)
    summary = await store_copy.build(progress=False, executor="thread")
    assert (summary.built, summary.skipped, summary.bundles_written, summary.bundles_kept) == (1, 7, 4, 0)
    store_copy.check_source(source)
    assert store_copy.stamp(rel) == file_stamp(str(source))
    info = probe(source)
    assert store_copy.info(source) == info and info.num_frames == 20  # the cached index was dropped
    names = [bundle_name(f, 5) for f in (0, 5, 10, 15)]
    assert sorted(os.listdir(store_copy.root / rel)) == sorted([*names, INDEX_NAME, BUILD_MARKER_NAME])
    for g, expected in enumerate(extract_gops(source, [0, 5, 10, 15])):
        assert store_copy.read_bundle(source, g).to_bytes() == expected.to_bytes()


def test_readers_never_see_partial_files(tmp_path):
    videos, gops = tmp_path / "videos", tmp_path / "gops"
    make_clip_set(videos, cameras=6, spec=VideoSpec(width=256, height=144, num_frames=60, gop=5, crf=16))
    store = GopStore(gops, video_root=videos)
    stop = threading.Event()
    seen: dict[str, int] = {}
    failures: list[str] = []
    passes = 0

    def reader() -> None:
        nonlocal passes
        while True:
            last = stop.is_set()
            for dirpath, _, filenames in os.walk(gops):
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    try:
                        if re.fullmatch(r"gop\.\d+\.\d+\.bin", name):
                            data = Path(path).read_bytes()
                            GopBundle.from_buffer(data)
                            seen[path] = len(data)
                        elif name == INDEX_NAME:  # written last: every bundle it lists is already there
                            for g in json.loads(Path(path).read_bytes())["gops"]:
                                if not os.path.exists(os.path.join(dirpath, g["file"])):
                                    failures.append(f"{path} lists {g['file']}, which is not there yet")
                    except Exception as exc:  # noqa: BLE001 - any failure to read a visible file is the bug
                        failures.append(f"{path}: {type(exc).__name__}: {exc}")
            passes += 1
            if last:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        summary = asyncio.run(store.build(progress=False, workers=2, executor="thread"))
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    assert summary.ok and summary.bundles_written == 72 and passes >= 2
    assert len(seen) == 72 and sum(seen.values()) == summary.bytes_written


# -- reading and checking -----------------------------------------------------------------------------


def test_damaged_bundles_are_named(store_copy):
    rel = "clip0/cam0.mp4"
    folder = store_copy.root / rel
    flipped, truncated, missing = (folder / g.file for g in store_copy.gop_table(rel))
    _flip_byte(flipped, -9)
    truncated.write_bytes(truncated.read_bytes()[:200])
    missing.unlink()
    with pytest.raises(CorruptDataError, match=re.escape(str(flipped)) + r".*checksum mismatch") as err:
        store_copy.read_bundle(rel, 0)
    assert (err.value.path, err.value.frame_id) == (str(flipped), 0)
    with pytest.raises(CorruptDataError, match=re.escape(str(truncated)) + r".*truncated"):
        store_copy.read_bundle(rel, 1)
    with pytest.raises(CorruptDataError, match=re.escape(str(missing)) + r" is missing \(frames 16\.\.23 of "):
        store_copy.read_bundle(rel, 2)
    store_copy.read_bundle("clip0/cam1.mp4", 0)  # other videos are fine

    index = store_copy.root / "clip1" / "cam1.mp4" / INDEX_NAME
    index.write_text("{not json")
    unfinished = store_copy.root / "clip1" / "cam2.mp4"
    (unfinished / INDEX_NAME).unlink()
    with pytest.raises(CorruptDataError, match=re.escape(f"GOP store index {index} is damaged")):
        GopStore(store_copy.root).info("clip1/cam1.mp4")
    summary = store_copy.verify()
    assert not summary.ok
    assert set(summary.bad) == {str(flipped), str(truncated), str(missing), str(index), str(unfinished)}
    assert "checksum mismatch" in summary.bad[str(flipped)] and "did not finish" in summary.bad[str(unfinished)]
    assert (summary.videos, summary.bundles) == (8, 6 * 3)  # the unreadable index lists none


def test_lookup_errors(videos, built):
    store, _ = built
    with pytest.raises(VideoOpenError, match=re.escape(f"the GOP store {store.root} has no video clip0/cam9.mp4")):
        store.info("clip0/cam9.mp4")
    with pytest.raises(InvalidRequestError, match=r"GOP 3 out of range for clip0/cam0\.mp4 \(0\.\.2\)"):
        store.read_bundle("clip0/cam0.mp4", 3)
    for outside in ("/elsewhere/cam0.mp4", "../cam0.mp4", "."):
        with pytest.raises(InvalidRequestError, match="is not under the store's video root"):
            store.info(outside)
    with pytest.raises(InvalidRequestError, match="workers must be a positive integer"):
        asyncio.run(store.build(workers=0))
    with pytest.raises(InvalidRequestError, match="there is no GOP store"):
        GopStore(store.root / "nope").verify()

    reader = GopStore(store.root)  # no video root: relative paths only, no build, no source check
    assert reader.info("clip0/cam0.mp4") == store.info("clip0/cam0.mp4")
    assert reader.read_bundle("clip0/cam0.mp4", 1).to_bytes() == store.read_bundle("clip0/cam0.mp4", 1).to_bytes()
    with pytest.raises(InvalidRequestError, match="without a video root"):
        reader.check_source("clip0/cam0.mp4")
    with pytest.raises(InvalidRequestError, match="without a video root"):
        reader.info(str(videos / "clip0/cam0.mp4"))
    with pytest.raises(InvalidRequestError, match="without a video root"):
        asyncio.run(reader.build())


def test_store_pickles_as_its_settings_and_bounds_its_index_cache(built):
    store, _ = built
    small = GopStore(store.root, video_root=store.video_root, index_cache_size=2)
    for rel in VIDEOS:
        small.info(rel)
    small.info(VIDEOS[-2])
    assert list(small._indexes) == [VIDEOS[-1], VIDEOS[-2]]
    clone = pickle.loads(pickle.dumps(small))
    assert (clone.root, clone.video_root, clone.index_cache_size, len(clone._indexes)) == \
        (store.root, store.video_root, 2, 0)
    assert clone.read_bundle("clip1/cam1.mp4", 2).to_bytes() == store.read_bundle("clip1/cam1.mp4", 2).to_bytes()
    from asyncdecode.store import GopStore as FromStore

    assert FromStore is GopStore


async def test_one_build_at_a_time(store_copy):
    pytest.importorskip("fcntl")
    other = GopStore(store_copy.root, video_root=store_copy.video_root)
    first, second = await asyncio.gather(store_copy.build(progress=False, executor="thread"),
                                         other.build(progress=False, executor="thread"), return_exceptions=True)
    assert first.skipped == 8
    assert isinstance(second, InvalidRequestError) and "another build is running" in str(second)


async def test_a_bad_video_fails_alone(tmp_path, capsys, caplog):
    videos = tmp_path / "videos"
    make_clip_set(videos, cameras=2, spec=SPEC)
    (videos / "bad.mp4").write_text("This is not a video file.\n")
    (videos / "sub").mkdir()
    (videos / "sub" / "empty.MKV").write_bytes(b"")
    store = GopStore(tmp_path / "gops", video_root=videos)
    summary = await store.build(progress=True, executor="thread")
    assert (summary.videos, summary.built, summary.frames) == (4, 2, 48)
    assert set(summary.errors) == {"bad.mp4", "sub/empty.MKV"} and not summary.ok
    assert "is not a readable media file" in summary.errors["bad.mp4"]
    assert "is empty (0 bytes)" in summary.errors["sub/empty.MKV"]
    assert not (store.root / "bad.mp4").exists() and store.videos() == ["clip0/cam0.mp4", "clip0/cam1.mp4"]
    assert "bad.mp4 not stored" in caplog.text
    status = capsys.readouterr().err.strip().splitlines()[-1]
    assert status.startswith("store build: 4/4 videos (0 up to date, 2 failed), 48 frames,") and "GB/s" in status
    assert store.verify().ok


def test_drop_page_cache(built, tmp_path):
    store, _ = built
    bundles = sorted(store.root.rglob("gop.*.bin"))
    everything = [p for p in store.root.rglob("*") if p.is_file()]
    if not hasattr(os, "posix_fadvise"):
        assert drop_page_cache(bundles) == 0
        return
    assert drop_page_cache(bundles) == len(bundles) == 24
    assert drop_page_cache(store.root) == len(everything)
    assert drop_page_cache(bundles[0]) == 1
    assert drop_page_cache([tmp_path / "missing.bin"]) == 0


# -- command line ------------------------------------------------------------------------------------


def test_cli_build_and_verify(tmp_path, capsys):
    videos, gops = tmp_path / "videos", tmp_path / "gops"
    make_clip_set(videos, cameras=2, spec=SPEC)
    assert main(["store", "build", str(videos), str(gops), "--workers", "2", "--executor", "thread", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("2 videos built, 0 up to date, 0 failed; 48 frames, 6 bundles")
    assert main(["store", "verify", str(gops), "--quiet"]) == 0
    assert "6 bundles of 2 videos checked" in capsys.readouterr().out

    damaged = gops / "clip0" / "cam1.mp4" / bundle_name(8, 8)
    _flip_byte(damaged, -9)
    assert main(["store", "verify", str(gops), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "1 bad" in out and f"bad: {damaged}: " in out

    (videos / "bad.mp4").write_text("not a video")
    assert main(["store", "build", str(videos), str(gops), "--executor", "thread", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("0 videos built, 2 up to date, 1 failed")
    assert "failed: bad.mp4: " in captured.err
    assert main(["store", "verify", str(tmp_path / "nothing"), "--quiet"]) == 1
    assert "there is no GOP store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["store"])
    assert exit_.value.code == 2
