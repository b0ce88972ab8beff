"""Synthetic test videos: deterministic, small, structured content.

Used by the test suite, ``asyncdecode demo`` and the benchmarks. Depends only on
numpy and PyAV (no torch, no pytest).

Every video is described by a frozen :class:`VideoSpec`; :func:`make_video`
encodes it. Content comes from :func:`synthetic_frame`: gradients, moving
shapes and a binary frame counter, so consecutive frames always differ and a
wrong-frame bug is caught by a pixel comparison.

Encoder facts (FFmpeg 8 / PyAV 18 wheels):

* ``h264`` (libx264): exact keyframe interval (``keyint = min-keyint = gop``,
  ``scenecut=0``), ``bframes`` B-frames between references (``b-adapt=0``, so
  the pattern is fixed), every keyframe an IDR; ``open_gop=True`` gives non-IDR
  I keyframes (with a recovery point) after the first IDR, each followed in
  decode order by leading B-frames presented before it, one of them a
  reference picture (B-pyramid).
* ``hevc`` (libx265): same GOP / B-frame control; ``open_gop=False`` gives IDR
  keyframes, ``open_gop=True`` gives CRA keyframes after the first IDR, each
  followed in decode order by RASL leading pictures that are presented before it.
* ``av1`` (libsvtav1, SVT-AV1 4.x): any size from 4x4 up (odd sizes too);
  keyframes exactly every ``gop`` frames (``keyint``, ``irefresh-type=2`` =
  closed GOP key frames, ``scd=0``), forced keyframes for ``gop_lengths``.
  ``bframes`` is ignored: AV1 hides its reordering inside the bitstream, so
  packets come out with pts == dts.
* MP4 sample-entry tags: FFmpeg writes ``avc1`` for h264 and ``hev1`` for hevc;
  ``codec_tag="hvc1"`` gives the other HEVC entry (same packets, parameter sets
  in the sample description), the two that players and demuxers must both take.
* ``yuv420p`` / ``yuv420p10le`` need even sizes with h264 and hevc (libx264 and
  libx265 refuse odd 4:2:0 sizes); use ``yuv444p`` for odd sizes. libx265 needs
  at least 16x16.
* Timestamps: constant frame rate files use time base ``1/fps`` for the
  encoder (MP4 rescales it, e.g. to 1/12800); B-frame MP4s carry an edit list
  and start at pts 0 with negative dts.

All encoders run single-threaded so the output is byte-for-byte reproducible.
Encoding AV1 sets ``SVT_LOG=1`` in the environment (unless already set) to
keep SVT-AV1's info banners off stderr.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import accumulate, cycle, takewhile
from typing import BinaryIO, Literal

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.stream import Disposition
from av.video.frame import PictureType
from av.video.stream import VideoStream

__all__ = [
    "VideoSpec",
    "make_video",
    "synthetic_frame",
    "rgb_to_yuv_planes",
    "make_audio_only",
    "make_clip_set",
    "remux_video",
]

Codec = Literal["h264", "hevc", "av1"]
Matrix = Literal["bt601", "bt709", "bt2020"]

_ENCODERS: dict[str, str] = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}

# (Kr, Kb) luma coefficients and the AVColorSpace / primaries / transfer tags.
_KR_KB: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}
_AVCOL: dict[str, tuple[int, int, int]] = {  # colorspace, primaries, trc
    "bt601": (6, 6, 6),  # SMPTE170M
    "bt709": (1, 1, 1),
    "bt2020": (9, 9, 14),  # BT2020 NCL, BT2020 primaries, BT2020-10 transfer
}
_AVCOL_RANGE: dict[str, int] = {"limited": 1, "full": 2}

_MIN_SIZE: dict[str, int] = {"h264": 1, "hevc": 16, "av1": 4}
_VFR_TIME_BASE = Fraction(1, 1000)
_AUDIO_RATE = 48000


@dataclass(frozen=True)
class VideoSpec:
    """Description of a synthetic video file.

    Attributes:
        codec: ``"h264"`` (libx264), ``"hevc"`` (libx265) or ``"av1"`` (libsvtav1).
        width, height: Frame size. 4:2:0 accepts sizes that are not multiples of
            16; 4:2:0 needs even sizes for h264/hevc (use ``yuv444p`` for odd
            sizes). libx265 needs >= 16x16, libsvtav1 >= 4x4.
        num_frames: Number of frames.
        gop: Keyframe interval (fixed, no scene-cut keyframes).
        bframes: Consecutive B-frames between references (0 = none; ignored for AV1).
        pix_fmt: Planar YUV: ``"yuv420p"``, ``"yuv420p10le"`` (Main10 with hevc), ``"yuv444p"``, ...
        fps: Nominal frame rate; the time base is ``1/fps`` unless ``vfr``.
        open_gop: Keyframes with leading pictures: HEVC CRA with RASL pictures, H.264 non-IDR I.
        gop_lengths: Explicit GOP lengths, cycled until ``num_frames``; overrides
            ``gop``. Keyframes are forced at the cumulative boundaries.
        vfr: Irregular, deterministic frame durations of 20..80 ms (time base 1/1000).
        colorspace: Matrix / primaries / transfer written into the stream; ``None``
            leaves them unspecified (content is then encoded with BT.601).
        color_range: ``"limited"`` or ``"full"`` (tagged and really used for the
            samples); ``None`` leaves it unspecified (samples are limited range).
        second_video: ``(width, height)`` of an extra, smaller video stream muxed
            after the main one (the main one stays FFmpeg's best stream).
        audio: Also mux an AAC audio stream.
        container: ``"mp4"`` or ``"mkv"``.
        codec_tag: MP4 sample-entry tag of the video streams (``"hvc1"`` or ``"hev1"``
            for hevc); ``None`` leaves FFmpeg's choice (``hev1`` for hevc, ``avc1``
            for h264).
        seed: Content seed.
        crf: Encoder quality (lower = better, bigger files).
    """

    codec: Codec = "h264"
    width: int = 160
    height: int = 96
    num_frames: int = 48
    gop: int = 12
    bframes: int = 0
    pix_fmt: str = "yuv420p"
    fps: int = 25
    open_gop: bool = False
    gop_lengths: tuple[int, ...] | None = None
    vfr: bool = False
    colorspace: Matrix | None = None
    color_range: Literal["limited", "full"] | None = None
    second_video: tuple[int, int] | None = None
    audio: bool = False
    container: Literal["mp4", "mkv"] = "mp4"
    codec_tag: str | None = None
    seed: int = 0
    crf: int = 28

    def __post_init__(self) -> None:
        if self.codec not in _ENCODERS:
            raise ValueError(f"unknown codec {self.codec!r}")
        if self.num_frames < 1 or self.gop < 1 or self.bframes < 0:
            raise ValueError("num_frames and gop must be >= 1, bframes >= 0")
        if self.open_gop and self.codec not in ("h264", "hevc"):
            raise ValueError("open_gop is only supported for h264 and hevc")
        if self.gop_lengths is not None and (not self.gop_lengths or min(self.gop_lengths) < 1):
            raise ValueError("gop_lengths must be a non-empty tuple of positive lengths")
        if self.codec_tag is not None and (self.container != "mp4" or len(self.codec_tag) != 4
                                           or not self.codec_tag.isascii()):
            raise ValueError(f"codec_tag must be a 4-character MP4 sample-entry tag (mp4 only), "
                             f"not {self.codec_tag!r} in {self.container}")
        sx, sy = _subsampling(av.VideoFormat(self.pix_fmt))
        sizes = [(self.width, self.height)] + ([self.second_video] if self.second_video else [])
        for w, h in sizes:
            if self.codec != "av1" and (w % sx or h % sy):
                raise ValueError(f"{self.codec} {self.pix_fmt} needs sizes divisible by {sx}x{sy}")
            if min(w, h) < _MIN_SIZE[self.codec]:
                raise ValueError(f"{self.codec} needs width and height >= {_MIN_SIZE[self.codec]}")

    def keyframe_indices(self) -> list[int]:
        """Presentation indices of the keyframes the encoder is told to produce."""
        if self.gop_lengths is None:
            return list(range(0, self.num_frames, self.gop))
        starts = accumulate(cycle(self.gop_lengths), initial=0)
        return list(takewhile(lambda i: i < self.num_frames, starts))

    def pts(self) -> list[int]:
        """Presentation timestamps of the frames, in :meth:`time_base` units."""
        if not self.vfr:
            return list(range(self.num_frames))
        rng = np.random.default_rng(self.seed + 1_000_003)
        deltas = rng.integers(20, 81, size=self.num_frames - 1)
        return [0, *accumulate(int(d) for d in deltas)]

    def time_base(self) -> Fraction:
        """Time base of the frame timestamps given to the encoder."""
        return _VFR_TIME_BASE if self.vfr else Fraction(1, self.fps)


def synthetic_frame(index: int, width: int, height: int, *, seed: int = 0) -> np.ndarray:
    """Frame ``index`` of the synthetic sequence as an ``(height, width, 3)`` uint8 RGB array.

    Content: a drifting colour gradient, a white box and a black bar moving at
    different speeds, a saturated disc on a seed-dependent orbit, and a binary
    counter of ``index`` along the top edge (white = 1, black = 0). Pure black
    and white are always present, so full-range encodes use the whole range.
    """
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    disc_rgb = rng.permutation(np.array([255, 40, 0], dtype=np.uint8))
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)[:, None]
    t = float(index)

    # Each gradient varies along one axis (or the diagonal): computed once per axis, broadcast.
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[..., 0] = (128 + 100 * np.sin(2 * np.pi * u + 0.15 * t + phase[0])).astype(np.uint8)
    out[..., 1] = (128 + 100 * np.sin(2 * np.pi * v - 0.10 * t + phase[1])).astype(np.uint8)
    out[..., 2] = (128 + 100 * np.sin(np.pi * (u + v) + 0.20 * t + phase[2])).astype(np.uint8)

    box = max(4, min(width, height) // 5)
    bx = (3 * index) % max(width - box, 1)
    by = height // 2 - box // 2 + int(round(box / 2 * np.sin(0.3 * t)))
    out[max(by, 0) : by + box, bx : bx + box] = 255

    bar = max(2, width // 20)
    barx = width - 1 - (2 * index + 7 * seed) % width
    out[:, max(barx - bar + 1, 0) : barx + 1] = 0

    radius = max(3, min(width, height) // 8)
    cx = width / 2 + width / 3 * np.cos(0.2 * t + phase[0])
    cy = height / 2 + height / 3 * np.sin(0.2 * t + phase[1])
    out[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = disc_rgb

    cell_w, cell_h = max(2, width // 10), max(2, height // 16)
    for bit in range(min(10, width // cell_w)):
        out[0:cell_h, bit * cell_w : (bit + 1) * cell_w] = 255 if (index >> bit) & 1 else 0
    return out


def rgb_to_yuv_planes(
    rgb: np.ndarray, *, pix_fmt: str, matrix: Matrix = "bt601", full_range: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert ``(H, W, 3)`` uint8 RGB into the Y, Cb, Cr planes of planar YUV ``pix_fmt``.

    Uses the matrix's Kr/Kb and limited (``16..235``/``16..240`` scaled to the
    bit depth) or full range. Chroma is subsampled by averaging, with edge
    pixels replicated for odd sizes. Planes are uint8 for 8-bit formats and
    uint16 sample values otherwise.
    """
    fmt = av.VideoFormat(pix_fmt)
    bits = fmt.components[0].bits
    sx, sy = _subsampling(fmt)
    kr, kb = _KR_KB[matrix]
    r, g, b = (rgb[..., i].astype(np.float32) / np.float32(255.0) for i in range(3))
    luma = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - luma) / (2 * (1 - kb))
    cr = (r - luma) / (2 * (1 - kr))
    scale = 1 << (bits - 8)
    if full_range:
        y_code, c_scale = luma * ((1 << bits) - 1), (1 << bits) - 1
    else:
        y_code, c_scale = 16 * scale + 219 * scale * luma, 224 * scale
    mid = 1 << (bits - 1)
    planes = (y_code, mid + c_scale * _subsample(cb, sx, sy), mid + c_scale * _subsample(cr, sx, sy))
    dtype = np.uint8 if bits == 8 else np.uint16
    y, u, v = (np.clip(np.rint(p), 0, (1 << bits) - 1).astype(dtype) for p in planes)
    return y, u, v


def _subsampling(fmt: av.VideoFormat) -> tuple[int, int]:
    """Horizontal and vertical chroma subsampling factors of ``fmt``."""
    return 1024 // fmt.chroma_width(1024), 1024 // fmt.chroma_height(1024)


def _subsample(plane: np.ndarray, sx: int, sy: int) -> np.ndarray:
    """Average ``sx`` x ``sy`` blocks, replicating the last row/column for odd sizes."""
    h, w = plane.shape
    ph, pw = -(-h // sy) * sy, -(-w // sx) * sx
    padded = np.pad(plane, ((0, ph - h), (0, pw - w)), mode="edge")
    return padded.reshape(ph // sy, sy, pw // sx, sx).mean(axis=(1, 3))


def _yuv_frame(planes: tuple[np.ndarray, ...], width: int, height: int, pix_fmt: str) -> av.VideoFrame:
    """Copy planes into a new :class:`av.VideoFrame`, respecting line padding."""
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, data in zip(frame.planes, planes):
        view = np.frombuffer(plane, dtype=data.dtype)
        view = view.reshape(plane.height, plane.line_size // data.itemsize)
        view[:, : data.shape[1]] = data
    return frame


def _encoder_options(spec: VideoSpec) -> dict[str, str]:
    """Per-codec encoder options implementing the spec's GOP structure.

    With ``gop_lengths`` the periodic keyframes are switched off and keyframes
    are forced per frame (``pict_type = I``) instead.
    """
    forced = spec.gop_lengths is not None
    keyint = "infinite" if forced else str(spec.gop)
    min_keyint = "1" if forced else str(spec.gop)
    gop = f"keyint={keyint}:min-keyint={min_keyint}:scenecut=0:bframes={spec.bframes}:b-adapt=0"
    if spec.codec == "h264":
        params = f"{gop}:open-gop={int(spec.open_gop)}:threads=1:sliced-threads=0:lookahead-threads=1"
        return {"preset": "veryfast", "crf": str(spec.crf), "forced-idr": "0" if spec.open_gop else "1",
                "x264-params": params}
    if spec.codec == "hevc":
        params = (
            f"{gop}:open-gop={int(spec.open_gop)}:log-level=error"
            ":pools=none:frame-threads=1:lookahead-slices=0:info=0"
        ).replace("keyint=infinite", "keyint=-1")
        idr = "0" if spec.open_gop else "1"
        return {"preset": "superfast", "crf": str(spec.crf), "forced-idr": idr, "x265-params": params}
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs banners at info level otherwise
    keyint = "-1:force-key-frames=1" if forced else str(spec.gop)
    params = f"keyint={keyint}:irefresh-type=2:scd=0:lp=1"
    return {"preset": "11", "crf": str(spec.crf + 12), "svtav1-params": params}


def _add_video_stream(
    out: OutputContainer, spec: VideoSpec, width: int, height: int
) -> VideoStream:
    stream = out.add_stream(_ENCODERS[spec.codec], rate=spec.fps)
    stream.width, stream.height, stream.pix_fmt = width, height, spec.pix_fmt
    stream.time_base = spec.time_base()
    if spec.codec_tag is not None:
        stream.codec_tag = spec.codec_tag
    ctx = stream.codec_context
    ctx.time_base = spec.time_base()
    ctx.thread_count = 1
    if spec.colorspace is not None:
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = _AVCOL[spec.colorspace]
    if spec.color_range is not None:
        ctx.color_range = _AVCOL_RANGE[spec.color_range]
    ctx.options = _encoder_options(spec)
    return stream


def _encode_video(
    out: OutputContainer, stream: VideoStream, spec: VideoSpec, seed: int
) -> None:
    keyframes = set(spec.keyframe_indices()) if spec.gop_lengths is not None else set()
    matrix: Matrix = spec.colorspace or "bt601"
    full = spec.color_range == "full"
    for i, pts in enumerate(spec.pts()):
        rgb = synthetic_frame(i, stream.width, stream.height, seed=seed)
        planes = rgb_to_yuv_planes(rgb, pix_fmt=spec.pix_fmt, matrix=matrix, full_range=full)
        frame = _yuv_frame(planes, stream.width, stream.height, spec.pix_fmt)
        frame.pts, frame.time_base = pts, spec.time_base()
        if spec.colorspace is not None:
            frame.colorspace = _AVCOL[spec.colorspace][0]
        if spec.color_range is not None:
            frame.color_range = _AVCOL_RANGE[spec.color_range]
        frame.pict_type = PictureType.I if i in keyframes else PictureType.NONE
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _encode_audio(out: OutputContainer, stream: AudioStream, seconds: float) -> None:
    total = int(seconds * _AUDIO_RATE)
    t = np.arange(total) / _AUDIO_RATE
    tone = 0.2 * np.sin(2 * np.pi * np.array([[440.0], [660.0]]) * t).astype(np.float32)
    for start in range(0, total, 1024):
        chunk = np.ascontiguousarray(tone[:, start : start + 1024])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = _AUDIO_RATE, start
        frame.time_base = Fraction(1, _AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _add_audio_stream(out: OutputContainer) -> AudioStream:
    stream = out.add_stream("aac", rate=_AUDIO_RATE)
    stream.layout = "stereo"
    stream.format = "fltp"
    stream.bit_rate = 64000
    stream.codec_context.thread_count = 1
    return stream


def _duration_seconds(spec: VideoSpec) -> float:
    pts = spec.pts()
    last = pts[-1] + (pts[-1] - pts[-2] if len(pts) > 1 else 1)
    return float(last * spec.time_base())


def make_video(path: str | os.PathLike[str], spec: VideoSpec = VideoSpec(), /) -> pathlib.Path:
    """Encode the synthetic video described by ``spec`` to ``path`` and return the path.

    Streams are muxed in this order: main video, ``second_video``, audio.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "mp4" if spec.container == "mp4" else "matroska"
    with av.open(str(path), "w", format=fmt) as out:
        main = _add_video_stream(out, spec, spec.width, spec.height)
        main.disposition = Disposition.default
        extra = _add_video_stream(out, spec, *spec.second_video) if spec.second_video else None
        audio = _add_audio_stream(out) if spec.audio else None
        _encode_video(out, main, spec, spec.seed)
        if extra is not None:
            _encode_video(out, extra, spec, spec.seed + 7919)
        if audio is not None:
            _encode_audio(out, audio, _duration_seconds(spec))
    return path


_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


def remux_video(src: str | os.PathLike[str], dst: str | os.PathLike[str] | BinaryIO,
                fmt: Literal["ts", "fmp4", "annexb"]) -> None:
    """Rewrite the main video stream of ``src`` without re-encoding, as MPEG-TS (``"ts"``), fragmented
    MP4 (``"fmp4"``) or an Annex B elementary stream (``"annexb"``, H.264/HEVC), into ``dst`` (a path
    or a writable binary file): the inputs of :meth:`asyncdecode.Engine.ingest`."""
    with av.open(os.fspath(src)) as inp:
        stream = inp.streams.video[0]
        if fmt == "annexb":
            bsf = av.bitstream.BitStreamFilterContext(f"{stream.codec_context.name}_mp4toannexb", stream)
            data = b"".join(bytes(p) for packet in inp.demux(stream) for p in bsf.filter(packet if packet.size else None))
            if isinstance(dst, (str, os.PathLike)):
                pathlib.Path(dst).write_bytes(data)
            else:
                dst.write(data)
            return
        target_dst = os.fspath(dst) if isinstance(dst, (str, os.PathLike)) else dst
        with av.open(target_dst, "w", format="mpegts" if fmt == "ts" else "mp4",
                     options=_FRAGMENTED if fmt == "fmp4" else {}) as out:
            target = out.add_stream_from_template(stream)
            for packet in inp.demux(stream):
                if packet.size:
                    packet.stream = target
                    out.mux(packet)


def make_audio_only(path: str | os.PathLike[str], *, seconds: float = 1.0) -> pathlib.Path:
    """Write an MP4-family file (``.m4a``/``.mp4``) holding only an AAC audio stream."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        _encode_audio(out, _add_audio_stream(out), seconds)
    return path


def make_clip_set(
    root: str | os.PathLike[str], *, cameras: int = 6, clips: int = 1, spec: VideoSpec = VideoSpec()
) -> list[pathlib.Path]:
    """Write ``root/clip{k}/cam{i}.<container>`` for every clip and camera.

    Each camera gets its own content seed (``spec.seed + 1000 * k + i``).
    Returns the paths clip-major, camera-minor.
    """
    root = pathlib.Path(root)
    ext = "mp4" if spec.container == "mp4" else "mkv"
    return [
        make_video(root / f"clip{k}" / f"cam{i}.{ext}", replace(spec, seed=spec.seed + 1000 * k + i))
        for k in range(clips)
        for i in range(cameras)
    ]
