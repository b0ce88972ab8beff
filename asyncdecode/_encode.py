"""Re-encoding one video on the CPU with PyAV: the encoder room behind :mod:`asyncdecode.prepare`.

PyAV objects live in this module only. :func:`transcode` decodes a source front to back, encodes
every frame again with a fixed GOP layout (libx264, libx265 or SVT-AV1), copies or drops the audio,
and decodes the result once more to measure PSNR against the source on sampled frames.

Encoder facts this relies on (FFmpeg 8 / PyAV 18 wheels):

* A decoded frame keeps its picture type, and FFmpeg's libx264/libx265 wrappers force that type on
  the encoder; every frame is handed over with ``pict_type`` cleared, so the source's GOP layout
  does not leak into the output.
* Keyframes come exactly every ``gop`` frames: ``keyint = min-keyint = gop``, ``scenecut=0`` (x264,
  x265), ``scd=0`` (SVT-AV1); GOPs are closed (``open-gop=0``, ``irefresh-type=2``) and keyframes
  are IDR (``forced-idr``), so a GOP never needs a picture of the one before it.
* ``bframes`` B-frames between references with ``b-adapt=0``: the pattern is fixed, whatever the
  content. AV1 has no B-frames in its packets (its reordering hides inside the bitstream); AV1 is
  encoded with SVT-AV1's low-delay structure (``pred-struct=1``): no reordering at all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from .errors import (
    AsyncDecodeError,
    BackendUnavailableError,
    CorruptDataError,
    InvalidRequestError,
    UnsupportedStreamError,
)
from .media import best_video_stream, open_container

Codec = Literal["h264", "hevc", "av1"]

#: Codecs :func:`transcode` encodes to, and the PyAV (FFmpeg) encoder used for each.
ENCODERS: dict[str, str] = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
#: Default quality (the encoder's CRF: lower is better and larger) per codec.
DEFAULT_QUALITY: dict[str, int] = {"h264": 16, "hevc": 18, "av1": 22}
#: Allowed quality (CRF) values per codec, inclusive.
QUALITY_RANGE: dict[str, tuple[int, int]] = {"h264": (0, 51), "hevc": (0, 51), "av1": (1, 63)}
#: Encoder speed preset per codec: the slowest that keeps a CPU re-encode of a set practical.
PRESETS: dict[str, str] = {"h264": "medium", "hevc": "fast", "av1": "8"}
#: Container format written for each file name extension (the output keeps the source's name).
CONTAINER_FORMATS: dict[str, str] = {
    ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
    ".ts": "mpegts", ".h264": "h264", ".hevc": "hevc",
}
#: PSNR given to a sampled frame the encoder kept exactly (the true value is infinite).
PSNR_IDENTICAL_DB = 100.0


def has_encoder(codec: str) -> bool:
    """Whether this PyAV build has the encoder for ``codec``."""
    import av

    try:
        av.codec.Codec(ENCODERS[codec], "w")
    except (KeyError, av.codec.codec.UnknownCodecError):
        return False
    return True


def require_encoder(codec: str) -> None:
    """Raise unless this PyAV build can encode ``codec``.

    Raises:
        InvalidRequestError: ``codec`` is not one of :data:`ENCODERS`.
        BackendUnavailableError: PyAV's FFmpeg was built without its encoder.
    """
    import av

    if codec not in ENCODERS:
        raise InvalidRequestError(f"codec must be one of {', '.join(ENCODERS)}, not {codec!r}")
    if not has_encoder(codec):
        others = [c for c in ENCODERS if c != codec and has_encoder(c)]
        raise BackendUnavailableError(
            f"this PyAV build (av {av.__version__}, libavcodec "
            f"{'.'.join(map(str, av.library_versions['libavcodec']))}) has no {ENCODERS[codec]} encoder, "
            f"so it cannot encode {codec}; encoders it has: {', '.join(others) or 'none of ours'}")


@dataclass(frozen=True)
class EncodeSettings:
    """How one video is encoded (plain values: crosses a process boundary)."""

    codec: str
    """``"h264"``, ``"hevc"`` or ``"av1"``."""
    gop: int
    """Frames per GOP: a keyframe every ``gop`` frames, starting at frame 0."""
    bframes: int
    """B-frames between references (0: none; always 0 for AV1)."""
    quality: int
    """The encoder's CRF (constant quality; lower is better)."""
    audio: Literal["copy", "drop"]
    """Audio streams copied as they are, or left out."""
    threads: int = 1
    """Threads the decoder and the encoder may each use."""

    @property
    def preset(self) -> str:
        return PRESETS[self.codec]

    def record(self) -> dict[str, Any]:
        """What decides the output's bytes (what a resumed run compares): all but ``threads``."""
        return {"codec": self.codec, "encoder": ENCODERS[self.codec], "preset": self.preset, "gop": self.gop,
                "bframes": self.bframes, "quality": self.quality, "audio": self.audio}

    def options(self) -> dict[str, str]:
        """The encoder's private options (``AVCodecContext`` options) for this layout and quality."""
        n, b = self.gop, self.bframes
        layout = f"keyint={n}:min-keyint={n}:scenecut=0:bframes={b}:b-adapt=0:open-gop=0"
        if self.codec == "h264":
            return {"preset": self.preset, "crf": str(self.quality), "forced-idr": "1", "x264-params": layout}
        if self.codec == "hevc":
            pools = "none" if self.threads == 1 else str(self.threads)
            params = f"{layout}:pools={pools}:frame-threads={min(self.threads, 4)}:log-level=error:info=0"
            return {"preset": self.preset, "crf": str(self.quality), "forced-idr": "1", "x265-params": params}
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints banners at info level otherwise
        params = f"keyint={n}:irefresh-type=2:scd=0:pred-struct=1:lp={self.threads}"
        return {"preset": self.preset, "crf": str(self.quality), "svtav1-params": params}


@dataclass(frozen=True)
class Transcoded:
    """What :func:`transcode` did to one video."""

    frames: int
    """Frames encoded (equal to the source's, or :func:`transcode` raises)."""
    pix_fmt: str
    """Pixel format written: the source's where the encoder takes it."""
    audio_streams: int
    """Audio streams copied (0 when dropped, or when the source has none)."""
    audio_dropped: int
    """Audio streams of the source left out."""
    psnr_db: tuple[float, ...]
    """PSNR of each sampled frame against the source (Y, Cb and Cr samples pooled), in dB."""


def transcode(
    src: str,
    dst: str,
    *,
    container_format: str,
    settings: EncodeSettings,
    stream_index: int,
    pix_fmt: str,
    frame_pts: Sequence[int],
    psnr_frames: int,
    on_frames: Callable[[int], None] = lambda n: None,
) -> Transcoded:
    """Re-encode video stream ``stream_index`` of ``src`` into a new file ``dst``, then check it.

    ``frame_pts`` are the source's frame timestamps by frame id (from its index): frame ``i`` the
    decoder outputs is written with timestamp ``frame_pts[i]`` in the source stream's time base.
    ``on_frames(n)`` is told every few frames how many more were encoded.

    Raises:
        VideoOpenError: the source cannot be opened.
        CorruptDataError: the source cannot be decoded to the end, or gives another number of frames
            than its index counts; the output does not decode to the same number of frames.
        AsyncDecodeError: the encoder did not keep the colour primaries or transfer.
        UnsupportedStreamError: the encoder refuses the stream (size, pixel format) or the container
            refuses the codec.
    """
    import av

    n = len(frame_pts)
    samples = _sample_ids(n, psnr_frames)
    kept: dict[int, list[np.ndarray]] = {}
    pending = 0
    inp = open_container(src)
    try:
        vin = next((s for s in inp.streams.video if s.index == stream_index), None) or best_video_stream(inp, src)
        ain = list(inp.streams.audio)
        source_tags = (int(vin.codec_context.color_primaries), int(vin.codec_context.color_trc))
        vin.codec_context.thread_count = settings.threads
        vin.codec_context.thread_type = "AUTO" if settings.threads > 1 else "NONE"
        out_fmt = _output_pix_fmt(settings.codec, pix_fmt)
        try:
            out = av.open(dst, mode="w", format=container_format)
        except av.error.FFmpegError as exc:
            raise UnsupportedStreamError(f"cannot write {dst} as {container_format}: {exc}", path=src) from exc
        with out:
            vout = _add_video_stream(out, vin, settings, out_fmt)
            aout = {a.index: out.add_stream_from_template(a) for a in ain} if settings.audio == "copy" else {}
            i = 0
            try:
                for packet in inp.demux(vin, *(ain if aout else ())):
                    if packet.stream.index != vin.index:
                        if packet.size:
                            packet.stream = aout[packet.stream.index]
                            out.mux(packet)
                        continue
                    for frame in packet.decode():
                        if i >= n:
                            raise CorruptDataError(f"{src}: the decoder outputs more frames than the {n} its "
                                                   "index counts", path=src)
                        if frame.format.name != out_fmt:
                            frame = frame.reformat(format=out_fmt)
                        if i in samples:
                            kept[i] = _planes(frame)
                        frame.pts, frame.time_base = int(frame_pts[i]), vin.time_base
                        frame.pict_type = av.video.frame.PictureType.NONE
                        out.mux(vout.encode(frame))
                        i += 1
                        pending += 1
                        if pending == 8:
                            on_frames(pending)
                            pending = 0
                out.mux(vout.encode(None))
            except av.error.FFmpegError as exc:
                where = f"frame {i}" if i < n else "the end of the stream"
                raise _encode_error(exc, src, dst, where, settings) from exc
    finally:
        inp.close()
    on_frames(pending)
    if i != n:
        raise CorruptDataError(f"{src}: the decoder output {i} frames, its index counts {n} (damaged packets?)",
                               path=src, frame_id=i)
    psnr, tags = _psnr_against(dst, kept, n, pix_fmt=out_fmt)
    if tags != source_tags:
        raise AsyncDecodeError(f"{src}: {ENCODERS[settings.codec]} wrote colour primaries/transfer {tags}, "
                               f"not the source's {source_tags}", path=src)
    return Transcoded(frames=n, pix_fmt=out_fmt, audio_streams=len(aout),
                      audio_dropped=len(ain) - len(aout), psnr_db=psnr)


def _add_video_stream(out: Any, vin: Any, settings: EncodeSettings, pix_fmt: str) -> Any:
    """The output's video stream: the source's size, time base, rate and colour description."""
    src = vin.codec_context
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    stream = out.add_stream(ENCODERS[settings.codec], rate=rate)
    stream.width, stream.height, stream.pix_fmt = src.width, src.height, pix_fmt
    stream.time_base = vin.time_base
    ctx = stream.codec_context
    ctx.time_base = vin.time_base
    ctx.thread_count = settings.threads
    # Matrix, range, primaries and transfer are copied as tagged, "unspecified" included: a reader
    # then converts the output's pixels exactly as it converted the source's.
    ctx.colorspace, ctx.color_range = src.colorspace, src.color_range
    ctx.color_primaries, ctx.color_trc = src.color_primaries, src.color_trc
    if vin.sample_aspect_ratio:
        ctx.sample_aspect_ratio = vin.sample_aspect_ratio
    ctx.options = settings.options()
    return stream


def _output_pix_fmt(codec: str, pix_fmt: str) -> str:
    """The source's pixel format where the encoder takes it, else 4:2:0 of the nearest bit depth."""
    import av

    formats = [f.name for f in av.codec.Codec(ENCODERS[codec], "w").video_formats or ()]
    if pix_fmt in formats:
        return pix_fmt
    deep = av.VideoFormat(pix_fmt).components[0].bits > 8
    return "yuv420p10le" if deep and "yuv420p10le" in formats else "yuv420p"


def _encode_error(exc: Exception, src: str, dst: str, where: str, settings: EncodeSettings) -> Exception:
    """An FFmpeg error while transcoding, as the error that says whose fault it was."""
    import av

    if isinstance(exc, av.error.InvalidDataError):
        return CorruptDataError(f"{src}: cannot be decoded at {where} ({exc})", path=src)
    return UnsupportedStreamError(
        f"{src}: {ENCODERS[settings.codec]} or the {os.path.splitext(dst)[1] or 'output'} container refused "
        f"it at {where} ({exc})", path=src)


def _sample_ids(n: int, k: int) -> set[int]:
    """``k`` frame ids spread evenly over ``0..n-1``, first and last included."""
    if n <= 0 or k <= 0:
        return set()
    return {int(round(x)) for x in np.linspace(0, n - 1, min(k, n))}


def _planes(frame: Any) -> list[np.ndarray]:
    """A decoded frame's planes as numpy arrays (copies; line padding cut off)."""
    deep = frame.format.components[0].bits > 8
    dtype = np.uint16 if deep else np.uint8
    out = []
    for plane in frame.planes:
        row = plane.line_size // np.dtype(dtype).itemsize
        width = plane.width
        out.append(np.frombuffer(plane, dtype).reshape(plane.height, row)[:, :width].copy())
    return out


def psnr_db(a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, bits: int) -> float:
    """PSNR of picture ``b`` against ``a`` (lists of planes), every sample of every plane pooled."""
    sq = sum(float(np.sum((x.astype(np.float64) - y.astype(np.float64)) ** 2)) for x, y in zip(a, b))
    count = sum(x.size for x in a)
    if sq == 0:
        return PSNR_IDENTICAL_DB
    peak = float((1 << bits) - 1)
    return min(PSNR_IDENTICAL_DB, 10.0 * math.log10(peak * peak * count / sq))


def _psnr_against(dst: str, kept: dict[int, list[np.ndarray]], n: int, *, pix_fmt: str
                  ) -> tuple[tuple[float, ...], tuple[int, int]]:
    """Decode ``dst`` front to back: PSNR of its frames ``kept`` against the source's planes, and the
    colour primaries and transfer it is tagged with."""
    import av

    bits = av.VideoFormat(pix_fmt).components[0].bits
    out: dict[int, float] = {}
    count = 0
    with av.open(dst) as c:
        stream = c.streams.video[0]
        tags = (int(stream.codec_context.color_primaries), int(stream.codec_context.color_trc))
        stream.codec_context.thread_type = "AUTO"
        try:
            for i, frame in enumerate(c.decode(stream)):
                count = i + 1
                if i in kept:
                    out[i] = psnr_db(kept[i], _planes(frame), bits=bits)
        except av.error.FFmpegError as exc:
            raise CorruptDataError(f"{dst}: the new file does not decode past frame {count} ({exc})",
                                   path=dst) from exc
    if count != n:
        raise CorruptDataError(f"{dst}: the new file decodes to {count} frames, not the source's {n}", path=dst)
    return tuple(out[i] for i in sorted(out)), tags


def write_layout_clip(dst: str, settings: EncodeSettings, frames: int) -> None:
    """Encode ``frames`` small synthetic frames with ``settings`` into an MP4 at ``dst``.

    Which pictures reference which depends on the encoder's settings, not on the content (fixed GOP,
    fixed B-frame pattern): this small clip has the packet layout a real file gets.
    """
    import av

    from .testing import synthetic_frame

    width, height = 64, 64
    tb = Fraction(1, 25)
    with av.open(dst, "w", format="mp4") as out:
        stream = out.add_stream(ENCODERS[settings.codec], rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = tb
        stream.codec_context.options = settings.options()
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, width, height), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

