"""Probing and indexing video files: :func:`probe`, :class:`VideoInfo` and the per-file GOP table.

A file is indexed by one scan over the packets of its video stream, without decoding. Frame ids are
0-based positions in presentation order (the order in which FFmpeg's decoder outputs frames): the rank
of each packet's presentation timestamp. A GOP is the run of frame ids from one keyframe up to the
next keyframe's frame id; its packets are the ones in decode order from its keyframe up to the last
packet that carries one of its frames. With open GOPs (HEVC CRA pictures with leading pictures) the
leading pictures of keyframe k+1 are displayed before it and reference GOP k, so they belong to GOP k,
and GOP k's packets run past keyframe k+1 to include them.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CorruptDataError, FrameIndexError, InvalidRequestError, UnsupportedStreamError, VideoOpenError

if TYPE_CHECKING:  # PyAV is imported where it is used, so that `import asyncdecode` stays cheap
    import av.container
    import av.stream

__all__ = ["VideoInfo", "probe"]

# AVColorSpace codes -> names. Codes not listed map to "other".
_COLOR_SPACES = {
    0: "rgb", 1: "bt709", 2: "unspecified", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m",
    8: "ycgco", 9: "bt2020", 10: "bt2020c",
}
_COLOR_RANGES = {0: "unspecified", 1: "limited", 2: "full"}

#: Codecs the engine decodes, by FFmpeg codec descriptor name.
SUPPORTED_CODECS = ("h264", "hevc", "av1", "vp9", "mpeg4", "mpeg2video")

#: Bitstream filter that turns MP4/MKV length-prefixed packets into Annex B, per codec.
ANNEXB_FILTERS = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file's chosen video stream, without decoding."""

    path: str
    """The file, as given."""
    codec: str
    """FFmpeg codec name: ``"h264"``, ``"hevc"``, ``"av1"`` ..."""
    width: int
    """Display width in pixels (after the stream's cropping)."""
    height: int
    """Display height in pixels."""
    num_frames: int
    """Number of frames FFmpeg's decoder outputs; valid frame ids are ``0..num_frames-1``."""
    fps: float
    """Average frame rate (frames / duration); for variable frame rate files use ``frame_pts``."""
    time_base: Fraction
    """Unit of the stream's timestamps, in seconds."""
    bit_depth: int
    """Bits per luma sample: 8, 10 or 12."""
    pix_fmt: str
    """FFmpeg pixel format of decoded frames, e.g. ``"yuv420p"``, ``"yuv420p10le"``."""
    color_space: str
    """Matrix coefficients as tagged in the stream: ``"bt601"``, ``"bt709"``, ``"bt2020"``, ``"unspecified"`` ..."""
    color_range: str
    """``"limited"``, ``"full"`` or ``"unspecified"``, as tagged in the stream."""
    keyframes: tuple[int, ...]
    """First frame id of each GOP, ascending; ``keyframes[0] == 0``."""
    stream_index: int
    """Index of the chosen video stream in the container (the one FFmpeg picks unless told)."""
    frame_pts: tuple[int, ...] = field(repr=False)
    """Presentation timestamp of every frame id, in ``time_base`` units."""

    @property
    def gop_lengths(self) -> tuple[int, ...]:
        """Number of frames in each GOP, in order."""
        bounds = (*self.keyframes, self.num_frames)
        return tuple(b - a for a, b in zip(bounds, bounds[1:]))

    @property
    def duration_seconds(self) -> float:
        """Presentation time span of the stream, first frame to the end of the last."""
        if self.num_frames < 2:
            return self.num_frames / self.fps if self.fps else 0.0
        span = (self.frame_pts[-1] - self.frame_pts[0]) * self.time_base
        return float(span) * self.num_frames / (self.num_frames - 1)

    def gop_of(self, frame_id: int) -> int:
        """Index of the GOP holding ``frame_id``."""
        return bisect.bisect_right(self.keyframes, frame_id) - 1  # on the tuple: no array made per call

    def pts_seconds_of(self, frame_id: int) -> float:
        """Presentation time of ``frame_id`` in seconds."""
        return float(self.frame_pts[frame_id] * self.time_base)

    @property
    def end_seconds(self) -> float:
        """When the last frame stops being shown: its presentation time plus the mean frame duration
        (the stream ends ``duration_seconds`` after its first frame)."""
        return self.pts_seconds_of(0) + self.duration_seconds

    def frame_id_at(self, seconds: float) -> int:
        """The frame shown at ``seconds``: the id ``i`` with ``pts_seconds_of(i) <= seconds`` and
        ``seconds < pts_seconds_of(i + 1)`` (or :attr:`end_seconds` for the last frame).

        Built on the real timestamps, so it holds for variable frame rate too. A time that equals a
        frame's presentation time up to rounding (a thousandth of a ``time_base`` tick) is that frame's.

        Raises:
            FrameIndexError: ``seconds`` is before the first frame or at or after :attr:`end_seconds`.
            InvalidRequestError: ``seconds`` is not a finite number.
        """
        if isinstance(seconds, (bool, str, bytes)) or not hasattr(seconds, "__float__"):
            raise InvalidRequestError(f"seconds must be a number, not {type(seconds).__name__} ({seconds!r})",
                                      path=self.path)
        t = float(seconds)
        if not math.isfinite(t):
            raise InvalidRequestError(f"seconds must be finite, not {t}", path=self.path)
        begin, end = self.pts_seconds_of(0), self.end_seconds
        ticks = t / float(self.time_base)
        nearest = round(ticks)
        if abs(ticks - nearest) < 1e-3:
            ticks = nearest
        i = bisect.bisect_right(self.frame_pts, math.floor(ticks)) - 1
        if i < 0 or (t >= end and not (self.num_frames == 1 and ticks == self.frame_pts[0])):
            raise FrameIndexError(f"no frame is shown at {t:.6g} s in {self.path} "
                                  f"(its frames cover {begin:.6g} s to {end:.6g} s)", path=self.path)
        return i

    def keyframe_id_at(self, seconds: float) -> int:
        """The first frame of the GOP shown at ``seconds``: the nearest keyframe at or before that
        time (decoding it reads one packet). Raises as :meth:`frame_id_at`."""
        return self.keyframes[self.gop_of(self.frame_id_at(seconds))]

    def __repr__(self) -> str:
        return (
            f"VideoInfo({self.path!r}, {self.codec} {self.width}x{self.height} {self.pix_fmt}, "
            f"{self.num_frames} frames in {len(self.keyframes)} GOPs, {self.fps:.3g} fps, "
            f"{self.color_space}/{self.color_range})"
        )


@dataclass(frozen=True)
class FileStamp:
    """Identity of a file's content as seen by ``stat``: a change in size or mtime means re-index."""

    size: int
    mtime_ns: int


@dataclass(frozen=True, eq=False)
class VideoIndex:
    """The packet and GOP table of one file: everything needed to plan and demux requests.

    Packet arrays are in decode (file) order. ``packet_frame[i]`` is the frame id that packet i
    shows, or -1 for packets the decoder does not output (discarded by an edit list).
    """

    info: VideoInfo
    stamp: FileStamp
    packet_pts: np.ndarray
    packet_dts: np.ndarray
    packet_key: np.ndarray
    packet_frame: np.ndarray
    gop_first_frame: np.ndarray
    """First frame id of each GOP (equals ``info.keyframes``)."""
    gop_packet_start: np.ndarray
    """Decode-order index of each GOP's keyframe packet."""
    gop_packet_stop: np.ndarray
    """One past the last packet that must be fed to output every frame of the GOP."""
    extradata: bytes = field(repr=False)
    """Codec parameters of the stream as stored in the container (avcC/hvcC/av1C or Annex B)."""

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def num_gops(self) -> int:
        return len(self.gop_first_frame)

    def gop_frame_range(self, gop: int) -> range:
        """Frame ids of GOP ``gop``."""
        stop = self.gop_first_frame[gop + 1] if gop + 1 < self.num_gops else self.info.num_frames
        return range(int(self.gop_first_frame[gop]), int(stop))


def color_space_name(code: int) -> str:
    return _COLOR_SPACES.get(int(code), "other")


def color_range_name(code: int) -> str:
    return _COLOR_RANGES.get(int(code), "unspecified")


def open_container(path: str) -> av.container.InputContainer:
    """Open ``path`` with PyAV, translating failures into :class:`VideoOpenError`."""
    import av

    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise VideoOpenError(f"no such file: {path}", path=path) from exc
    except OSError as exc:
        raise VideoOpenError(f"cannot stat {path}: {exc.strerror or exc}", path=path) from exc
    if os.path.isdir(path):
        raise VideoOpenError(f"{path} is a directory, not a video file", path=path)
    if size == 0:
        raise VideoOpenError(f"{path} is empty (0 bytes)", path=path)
    try:
        return av.open(path, mode="r")
    except av.error.FileNotFoundError as exc:
        raise VideoOpenError(f"no such file: {path}", path=path) from exc
    except av.error.PermissionError as exc:
        raise VideoOpenError(f"permission denied: {path}", path=path) from exc
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoOpenError(f"{path} is not a readable media file ({exc})", path=path) from exc


def best_video_stream(container: av.container.InputContainer, path: str) -> av.stream.Stream:
    """The video stream FFmpeg would pick (``av_find_best_stream``), or :class:`VideoOpenError`."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoOpenError(
            f"no video stream in {path} (streams: {', '.join(kinds)})", path=path
        )
    return container.streams.best("video")


def stream_info(stream: Any, path: str) -> dict[str, Any]:
    """A video stream's description (codec, size, bit depth, colour, time base ...) as
    :class:`VideoInfo` takes it, from its PyAV stream; ``path`` names it in errors. Shared with
    streaming ingestion, which describes streams it never opens as files."""
    import av

    cc = stream.codec_context
    codec = cc.codec.name if cc.codec is not None else cc.name
    # The default decoder for AV1 in some builds is libdav1d; report the codec, not the decoder.
    codec = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx-vp9": "vp9"}.get(codec, codec)
    pix_fmt = cc.pix_fmt
    if not pix_fmt:
        raise UnsupportedStreamError(f"{path}: video stream has no pixel format", path=path)
    bit_depth = av.VideoFormat(pix_fmt).components[0].bits
    return dict(
        codec=codec,
        width=int(cc.width),
        height=int(cc.height),
        pix_fmt=pix_fmt,
        bit_depth=int(bit_depth),
        color_space=color_space_name(cc.colorspace),
        color_range=color_range_name(cc.color_range),
    )


def build_index(path: str | os.PathLike[str]) -> VideoIndex:
    """Index ``path`` by one scan over its video packets (no decoding).

    Raises:
        VideoOpenError: the file is missing, empty, not media, or has no video stream.
        CorruptDataError: the packets cannot be read to the end (truncated or damaged file).
    """
    import av

    path = os.fspath(path)
    stamp = file_stamp(path)
    container = open_container(path)
    try:
        stream = best_video_stream(container, path)
        meta = stream_info(stream, path)
        pts: list[int] = []
        dts: list[int] = []
        key: list[bool] = []
        discard: list[bool] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                p, d = packet.pts, packet.dts
                if p is None:
                    p = d if d is not None else (pts[-1] + 1 if pts else 0)
                pts.append(p)
                dts.append(d if d is not None else p)
                key.append(packet.is_keyframe)
                discard.append(packet.is_discard)
        except av.error.FFmpegError as exc:
            raise CorruptDataError(
                f"{path}: packets unreadable after packet {len(pts)} ({exc}); the file is truncated or damaged",
                path=path,
            ) from exc
        declared = stream.frames or 0
        time_base = stream.time_base or Fraction(1, 90000)
        extradata = bytes(stream.codec_context.extradata or b"")
        stream_index = stream.index
        avg_rate = stream.average_rate
    finally:
        container.close()

    if not pts:
        raise VideoOpenError(f"{path}: the video stream has no packets", path=path)
    if declared and len(pts) < declared:
        raise CorruptDataError(
            f"{path}: truncated; its header declares {declared} video frames but only {len(pts)} can be read",
            path=path,
        )
    return _make_index(path, stamp, meta, np.array(pts, np.int64), np.array(dts, np.int64),
                       np.array(key, bool), np.array(discard, bool), time_base, avg_rate,
                       extradata, stream_index)


def file_stamp(path: str) -> FileStamp:
    """``stat`` of ``path`` as a :class:`FileStamp`, or :class:`VideoOpenError` naming the file."""
    try:
        st = os.stat(path)
        return FileStamp(st.st_size, st.st_mtime_ns)
    except FileNotFoundError as exc:
        raise VideoOpenError(f"no such file: {path}", path=path) from exc
    except OSError as exc:
        raise VideoOpenError(f"cannot stat {path}: {exc.strerror or exc}", path=path) from exc


def _make_index(path, stamp, meta, pts, dts, key, discard, time_base, avg_rate, extradata,
                stream_index) -> VideoIndex:
    n = len(pts)
    shown = ~discard
    # Frame id of each shown packet = rank of its pts among shown packets (stable for equal pts).
    order = np.flatnonzero(shown)[np.argsort(pts[shown], kind="stable")]
    frame = np.full(n, -1, np.int64)
    frame[order] = np.arange(len(order))
    num_frames = len(order)
    if num_frames == 0:
        raise VideoOpenError(f"{path}: the video stream shows no frames", path=path)

    key_idx = np.flatnonzero(key & shown)
    if len(key_idx) == 0:
        raise CorruptDataError(f"{path}: no keyframe in the video stream", path=path)
    # A keyframe starts a GOP only if it shows a later frame than the previous GOP's keyframe.
    firsts = frame[key_idx]
    keep = np.concatenate(([True], firsts[1:] > np.maximum.accumulate(firsts)[:-1]))
    key_idx, firsts = key_idx[keep], firsts[keep]
    firsts = firsts.copy()
    firsts[0] = 0  # frames shown before the first keyframe (if any) are requested from GOP 0

    gop_of_packet = np.searchsorted(firsts, frame, side="right") - 1
    stop = key_idx[1:].tolist() + [n]
    stop = np.array(stop, np.int64)
    valid = frame >= 0
    # GOP k must be fed up to the last packet carrying one of its frames (open GOP leading pictures).
    last = np.full(len(key_idx), -1, np.int64)
    np.maximum.at(last, gop_of_packet[valid], np.flatnonzero(valid))
    stop = np.maximum(stop, last + 1)

    frame_pts = np.empty(num_frames, np.int64)
    frame_pts[frame[order]] = pts[order]
    span = int(frame_pts[-1] - frame_pts[0]) if num_frames > 1 else 0
    if span > 0:
        fps = (num_frames - 1) / float(span * time_base)
    else:
        fps = float(avg_rate) if avg_rate else 0.0

    info = VideoInfo(
        path=path,
        codec=meta["codec"],
        width=meta["width"],
        height=meta["height"],
        num_frames=num_frames,
        fps=fps,
        time_base=Fraction(time_base),
        bit_depth=meta["bit_depth"],
        pix_fmt=meta["pix_fmt"],
        color_space=meta["color_space"],
        color_range=meta["color_range"],
        keyframes=tuple(int(f) for f in firsts),
        stream_index=stream_index,
        frame_pts=tuple(int(p) for p in frame_pts),
    )
    return VideoIndex(
        info=info, stamp=stamp, packet_pts=pts, packet_dts=dts, packet_key=key, packet_frame=frame,
        gop_first_frame=firsts, gop_packet_start=key_idx.astype(np.int64), gop_packet_stop=stop,
        extradata=extradata,
    )


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe the video stream of ``path`` (the one FFmpeg picks) by one packet scan.

    Example:
        >>> info = probe("cam0.mp4")
        >>> info.num_frames, info.keyframes[:3]
        (235, (0, 30, 60))

    Raises:
        VideoOpenError: the file is missing, empty, not media, or has no video stream.
        CorruptDataError: the file is truncated or its packets cannot be read.
    """
    return build_index(path).info
