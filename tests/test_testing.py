"""Lock the promises of the synthetic video generator and the reference tools."""

from __future__ import annotations

import pathlib
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest
from assets import BAD_FILES, VIDEOS, AssetStore
from reference import full_range_of, matrix_of, reference_frames, reference_rgb

from asyncdecode.testing import (
    VideoSpec,
    make_clip_set,
    make_video,
    rgb_to_yuv_planes,
    synthetic_frame,
)


def demux_video(path: pathlib.Path) -> tuple[list[av.Packet], Fraction]:
    """Non-empty packets of the best video stream in decode order, and its time base."""
    with av.open(str(path)) as container:
        stream = container.streams.best("video")
        packets = [p for p in container.demux(stream) if p.size]
        return packets, stream.time_base


def keyframe_positions(packets: list[av.Packet]) -> list[int]:
    """Presentation indices of the packets flagged as keyframes."""
    rank = {pts: i for i, pts in enumerate(sorted(p.pts for p in packets))}
    return sorted(rank[p.pts] for p in packets if p.is_keyframe)


VIDEO_NAMES = sorted(VIDEOS)


# --------------------------------------------------------------------------- GOP structure


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_keyframes_where_the_spec_says(assets: AssetStore, name: str) -> None:
    packets, _ = demux_video(assets[name])
    spec = VIDEOS[name]
    assert len(packets) == spec.num_frames
    assert keyframe_positions(packets) == spec.keyframe_indices()


def test_keyframe_indices_of_specs() -> None:
    assert VIDEOS["h264_vargop"].keyframe_indices() == [0, 5, 22, 31, 43]
    assert VIDEOS["h264_shortlast"].keyframe_indices() == [0, 12, 24, 36]
    assert VideoSpec(gop_lengths=(3, 5), num_frames=20).keyframe_indices() == [0, 3, 8, 11, 16, 19]


@pytest.mark.parametrize("name", ["h264_bframes", "hevc_closed", "hevc_open", "h264_vfr"])
def test_bframes_reorder_packets(assets: AssetStore, name: str) -> None:
    packets, _ = demux_video(assets[name])
    pts = [p.pts for p in packets]
    assert pts != sorted(pts)
    dts = [p.dts for p in packets]
    assert dts == sorted(dts)
    assert dts[0] < 0  # MP4 + edit list: presentation starts at 0, decoding earlier


@pytest.mark.parametrize("name", ["h264_nob", "av1", "h264_odd444"])
def test_no_bframes_means_decode_order_is_presentation_order(assets: AssetStore, name: str) -> None:
    packets, _ = demux_video(assets[name])
    pts = [p.pts for p in packets]
    assert pts == sorted(pts)
    assert all(p.pts == p.dts for p in packets)


def _leading_pictures(packets: list[av.Packet]) -> dict[int, int]:
    """Per keyframe (decode index): how many packets of its GOP precede it in presentation."""
    out = {}
    for i, key in enumerate(packets):
        if not key.is_keyframe:
            continue
        gop = []
        for p in packets[i + 1 :]:
            if p.is_keyframe:
                break
            gop.append(p)
        out[i] = sum(p.pts < key.pts for p in gop)
    return out


def test_open_gop_has_leading_pictures(assets: AssetStore) -> None:
    packets, _ = demux_video(assets["hevc_open"])
    leading = _leading_pictures(packets)
    assert len(leading) == 4  # MP4 flags the CRA pictures as keyframes (sync samples)
    first, *cras = leading.values()
    assert first == 0  # the first keyframe is an IDR
    assert all(n > 0 for n in cras)  # every CRA is followed by RASL pictures shown before it


def test_closed_gop_has_no_leading_pictures(assets: AssetStore) -> None:
    for name in ("hevc_closed", "h264_bframes", "h264_vargop"):
        packets, _ = demux_video(assets[name])
        assert set(_leading_pictures(packets).values()) == {0}, name


# --------------------------------------------------------------------------- formats and sizes


def test_hevc_10bit(assets: AssetStore) -> None:
    with av.open(str(assets["hevc_10bit"])) as container:
        assert container.streams.video[0].codec_context.profile == "Main 10"
    frames = reference_frames(assets["hevc_10bit"])
    assert frames[0].pix_fmt == "yuv420p10le"
    assert all(p.dtype == np.uint16 for p in frames[0].planes)
    luma = frames[0].planes[0]
    assert luma.max() > 255 and luma.max() <= 1023


@pytest.mark.parametrize(
    ("name", "shapes"),
    [
        ("h264_odd444", [(99, 175)] * 3),
        ("h264_odd420", [(98, 174), (49, 87), (49, 87)]),
        ("av1", [(96, 128), (48, 64), (48, 64)]),
    ],
)
def test_sizes(assets: AssetStore, name: str, shapes: list[tuple[int, int]]) -> None:
    frames = reference_frames(assets[name])
    assert len(frames) == VIDEOS[name].num_frames
    assert [p.shape for p in frames[0].planes] == shapes


def test_odd_420_sizes_are_rejected_for_h264() -> None:
    with pytest.raises(ValueError):
        VideoSpec(width=175, height=99)


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize(
    ("name", "colorspace", "color_range"),
    [
        ("bt709_limited", 1, 1),
        ("bt709_full", 1, 2),
        ("bt2020_limited", 9, 1),
        ("bt601_full", 6, 2),
        ("h264_nob", 2, 0),  # unspecified; hevc/av1 decoders report limited (1) instead of 0
    ],
)
def test_color_metadata_round_trip(assets: AssetStore, name: str, colorspace: int, color_range: int) -> None:
    with av.open(str(assets[name])) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_range) == (colorspace, color_range)
    frame = reference_frames(assets[name])[0]
    assert (frame.colorspace, frame.color_range) == (colorspace, color_range)


@pytest.mark.parametrize("name", ["bt709_full", "bt601_full"])
def test_full_range_samples_span_full_range(assets: AssetStore, name: str) -> None:
    luma = reference_frames(assets[name])[0].planes[0]
    assert luma.min() <= 2 and luma.max() >= 250
    assert np.percentile(luma, 1) < 10  # black really is coded near 0, not 16


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_decoded_content_matches_source_frames(assets: AssetStore, name: str) -> None:
    """Reference decode + reference_rgb recover the synthetic frames, in order, in every asset."""
    spec = VIDEOS[name]
    frames = reference_frames(assets[name])
    assert len(frames) == spec.num_frames
    for i in (0, 1, spec.num_frames // 2, spec.num_frames - 1):
        rgb = np.clip(frames[i].rgb(), 0, 255)
        errors = {
            j: np.abs(rgb - synthetic_frame(j, frames[i].width, frames[i].height, seed=spec.seed)).mean()
            for j in range(max(i - 1, 0), min(i + 2, spec.num_frames))
        }
        assert errors[i] < 8, (i, errors)
        assert min(errors, key=errors.__getitem__) == i


# --------------------------------------------------------------------------- timing and streams


def test_vfr_timestamps_are_irregular(assets: AssetStore) -> None:
    spec = VIDEOS["h264_vfr"]
    packets, time_base = demux_video(assets["h264_vfr"])
    ms = sorted(p.pts * time_base * 1000 for p in packets)
    assert ms == spec.pts()
    deltas = np.diff(np.array(ms, dtype=float))
    assert deltas.min() >= 20 and deltas.max() <= 80
    assert len(set(deltas)) > 10
    assert [f.pts for f in reference_frames(assets["h264_vfr"])] == sorted(p.pts for p in packets)


def test_cfr_timestamps_are_regular(assets: AssetStore) -> None:
    packets, time_base = demux_video(assets["h264_bframes"])
    pts = sorted(p.pts for p in packets)
    assert pts[0] == 0
    assert set(np.diff(pts)) == {int(Fraction(1, 25) / time_base)}


def test_second_video_stream_is_not_best(assets: AssetStore) -> None:
    spec = VIDEOS["two_streams"]
    with av.open(str(assets["two_streams"])) as container:
        videos = container.streams.video
        assert len(videos) == 2
        assert (videos[1].width, videos[1].height) == spec.second_video
        best = container.streams.best("video")
        assert best.index == videos[0].index
        assert (best.width, best.height) == (spec.width, spec.height)
    assert reference_frames(assets["two_streams"])[0].width == spec.width


def test_second_video_stream_in_mkv_is_not_best(tmp_path: pathlib.Path) -> None:
    path = make_video(tmp_path / "two.mkv", VideoSpec(second_video=(64, 32), container="mkv", num_frames=4))
    with av.open(str(path)) as container:
        assert container.streams.best("video").width == 160


def test_audio_streams(assets: AssetStore) -> None:
    with av.open(str(assets["with_audio"])) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert container.streams.best("video").type == "video"
    with av.open(str(assets["audio_only"])) as container:
        assert len(container.streams.video) == 0 and len(container.streams.audio) == 1
        assert container.streams.best("video") is None


def test_mkv_asset(assets: AssetStore) -> None:
    packets, time_base = demux_video(assets["h264_mkv"])
    assert time_base == Fraction(1, 1000)
    assert keyframe_positions(packets) == VIDEOS["h264_mkv"].keyframe_indices()


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", ["bad_empty", "bad_text", "bad_random", "bad_truncated"])
def test_unopenable_files(assets: AssetStore, name: str) -> None:
    with pytest.raises(av.error.FFmpegError):
        av.open(str(assets[name])).close()


def test_corrupt_mdat_opens_but_fails_to_decode(assets: AssetStore) -> None:
    path = assets["bad_corrupt_mdat"]
    assert path.stat().st_size == assets["h264_bframes"].stat().st_size
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1
    with pytest.raises(av.error.FFmpegError):
        reference_frames(path)


def test_all_bad_files_build(assets: AssetStore) -> None:
    for name in BAD_FILES:
        assert assets[name].exists()
    assert assets["bad_empty"].stat().st_size == 0


# --------------------------------------------------------------------------- generator API


def test_synthetic_frame() -> None:
    a = synthetic_frame(3, 33, 17, seed=1)
    assert a.shape == (17, 33, 3) and a.dtype == np.uint8
    assert np.array_equal(a, synthetic_frame(3, 33, 17, seed=1))
    assert not np.array_equal(a, synthetic_frame(3, 33, 17, seed=2))
    frames = [synthetic_frame(i, 160, 96).astype(float) for i in range(30)]
    assert min(np.abs(frames[i] - frames[i + 1]).mean() for i in range(29)) > 10
    assert frames[0].min() == 0 and frames[0].max() == 255


def test_make_video_is_deterministic(tmp_path: pathlib.Path) -> None:
    spec = VideoSpec(codec="hevc", bframes=2, open_gop=True, num_frames=14, gop=6)
    a = make_video(tmp_path / "a.mp4", spec).read_bytes()
    b = make_video(tmp_path / "b.mp4", spec).read_bytes()
    assert a == b


def test_make_clip_set(tmp_path: pathlib.Path) -> None:
    spec = VideoSpec(num_frames=3, width=64, height=32)
    paths = make_clip_set(tmp_path, cameras=2, clips=2, spec=spec)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "clip0/cam0.mp4",
        "clip0/cam1.mp4",
        "clip1/cam0.mp4",
        "clip1/cam1.mp4",
    ]
    first = [reference_frames(p)[0].planes[0] for p in paths]
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


@pytest.mark.parametrize(
    "bad",
    [
        {"open_gop": True, "codec": "av1"},
        {"gop_lengths": ()},
        {"codec": "hevc", "width": 8, "height": 8},
        {"codec": "av1", "width": 2, "height": 2},
    ],
)
def test_spec_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(VideoSpec(), **bad)


# --------------------------------------------------------------------------- reference_rgb


def _rgb(y: int, cb: int, cr: int, **kw: object) -> np.ndarray:
    planes = tuple(np.full((2, 2), v, dtype=np.uint16) for v in (y, cb, cr))
    kw.setdefault("pix_fmt", "yuv444p")
    return reference_rgb(planes, **kw)[0, 0]  # type: ignore[arg-type]


def test_reference_rgb_known_values() -> None:
    np.testing.assert_allclose(_rgb(235, 128, 128, matrix="bt709", full_range=False), [255, 255, 255])
    np.testing.assert_allclose(_rgb(16, 128, 128, matrix="bt2020", full_range=False), [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(_rgb(81, 90, 240, matrix="bt601", full_range=False), [255, 0, 0], atol=1)
    np.testing.assert_allclose(_rgb(255, 128, 128, matrix="bt601", full_range=True), [255, 255, 255])
    np.testing.assert_allclose(_rgb(0, 128, 128, matrix="bt709", full_range=True), [0, 0, 0], atol=1e-9)
    # 10 bit limited: white is 940, chroma zero is 512
    np.testing.assert_allclose(
        _rgb(940, 512, 512, pix_fmt="yuv420p10le", matrix="bt2020", full_range=False), [255, 255, 255]
    )
    # BT.709 limited red: Y = 16 + 219 * 0.2126, Cr = 128 + 112
    red = _rgb(round(16 + 219 * 0.2126), round(128 - 112 * 0.2126 / 0.9278), 240, matrix="bt709", full_range=False)
    np.testing.assert_allclose(red, [255, 0, 0], atol=1.5)
    # unclipped: limited-range overshoot goes above 255
    assert _rgb(255, 128, 128, matrix="bt601", full_range=False)[0] > 255


def test_reference_rgb_nearest_chroma() -> None:
    h, w = 5, 7
    luma = np.full((h, w), 126, dtype=np.uint8)
    cb = np.full((3, 4), 128, dtype=np.uint8)
    cr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 10 + 70
    rgb = reference_rgb((luma, cb, cr), pix_fmt="yuv420p", matrix="bt601", full_range=False)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.float64
    for y, x in [(0, 0), (3, 5), (4, 6), (1, 1), (2, 3)]:
        expected = _rgb(126, 128, int(cr[y // 2, x // 2]), matrix="bt601", full_range=False)
        np.testing.assert_allclose(rgb[y, x], expected)
    cb422 = np.full((5, 4), 128, dtype=np.uint8)
    cr422 = np.arange(20, dtype=np.uint8).reshape(5, 4) * 5 + 80
    rgb = reference_rgb((luma, cb422, cr422), pix_fmt="yuv422p", matrix="bt709", full_range=True)
    np.testing.assert_allclose(rgb[3, 5], _rgb(126, 128, int(cr422[3, 2]), matrix="bt709", full_range=True))


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv444p10le"])
@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("full_range", [False, True])
def test_generator_conversion_inverts_reference(pix_fmt: str, matrix: str, full_range: bool) -> None:
    rgb = synthetic_frame(5, 40, 24, seed=3)
    planes = rgb_to_yuv_planes(rgb, pix_fmt=pix_fmt, matrix=matrix, full_range=full_range)  # type: ignore[arg-type]
    back = reference_rgb(planes, pix_fmt=pix_fmt, matrix=matrix, full_range=full_range)  # type: ignore[arg-type]
    assert np.abs(np.clip(back, 0, 255) - rgb).max() <= 2.5


def test_reference_rgb_rejects_non_planar_yuv() -> None:
    with pytest.raises(ValueError):
        reference_rgb((np.zeros((2, 2)), np.zeros((1, 2))), pix_fmt="nv12", matrix="bt601", full_range=False)


def test_matrix_and_range_defaults() -> None:
    assert matrix_of(1) == "bt709"
    assert matrix_of(9) == "bt2020"
    assert matrix_of(5) == matrix_of(6) == matrix_of(2) == "bt601"
    assert full_range_of(2, "yuv420p") is True
    assert full_range_of(1, "yuvj420p") is False
    assert full_range_of(0, "yuv420p") is False
    assert full_range_of(0, "yuvj420p") is True


def test_reference_frames_planes_are_cropped(assets: AssetStore) -> None:
    frames = reference_frames(assets["h264_odd420"])
    with av.open(str(assets["h264_odd420"])) as container:
        frame = next(container.decode(video=0))
        assert frame.planes[0].line_size > 174  # padded rows exist ...
        expected = frame.to_ndarray(format="yuv420p")  # (h * 3 / 2, w) for even sizes
    assert np.array_equal(frames[0].planes[0], expected[:98])  # ... and are cropped away
    assert frames[0].planes[0].flags.c_contiguous
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)
