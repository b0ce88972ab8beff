"""Serialized packet data of the accvlab layer: asyncdecode GOP bundles, back to back.

accvlab hands GOP data around as ``uint8`` numpy arrays in its own format. Here the same arrays hold
asyncdecode's :class:`~asyncdecode.gop.GopBundle` format (versioned, CRC-checked): one GOP is exactly
``GopBundle.to_bytes()``, and data for several GOPs (``GetGOP`` of several files,
``MergePacketDataToOne``, ``LoadGops``) is their bundles concatenated. A bundle's header gives its
length, so the sequence needs no table of its own; every bundle is parsed in place and checked.

Also here: cutting GOPs out of videos for ``GetGOP`` (through :mod:`asyncdecode.gop`, with the
videos' indexes kept between calls), matching requested frames to the bundles that hold them, the
per-packet view of ``ParseSerializedPacketBundle`` and bundles rebuilt from bare packets.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .. import gop as _gop
from ..errors import CorruptDataError, FrameIndexError, InvalidRequestError, VideoOpenError
from ..gop import GopBundle, GopReader
from ..media import ANNEXB_FILTERS, VideoIndex, build_index, file_stamp
from ._errors import BITSTREAM_FILTER_FAILED, GOP_DEMUX_FAILED

__all__ = [
    "CODEC_IDS",
    "GopSource",
    "PacketTable",
    "assign",
    "bundle_from_packets",
    "load",
    "pack",
    "save",
    "split",
]

#: cudaVideoCodec value of each FFmpeg codec name (what accvlab calls a codec id).
CODEC_IDS: dict[str, int] = {"mpeg2video": 1, "mpeg4": 2, "h264": 4, "hevc": 8, "vp9": 10, "av1": 11}
_CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}

#: AVColorRange value of each range tag.
COLOR_RANGES: dict[str, int] = {"unspecified": 0, "limited": 1, "full": 2}


# -- the byte format -------------------------------------------------------------------------------


def _as_bytes_view(data: Any, what: str) -> memoryview:
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise InvalidRequestError(f"{what}: the packet data must be a contiguous array")
        data = data.reshape(-1).view(np.uint8)
    try:
        mv = memoryview(data)
    except TypeError:
        raise InvalidRequestError(f"{what}: packet data must be a uint8 numpy array or bytes, "
                                  f"not {type(data).__name__}") from None
    return mv if mv.ndim == 1 and mv.itemsize == 1 else mv.cast("B")


def _bundle_end(mv: memoryview, offset: int) -> int:
    """Where the bundle that starts at ``offset`` ends, from its header (the format of asyncdecode.gop)."""
    size = _gop.bundle_size(mv, offset)
    if size is None:
        return len(mv)  # from_buffer reports the truncation
    return min(offset + size, len(mv))


def split(data: Any, *, what: str, path: str | None = None, verify: bool = True,
          copy: bool = False) -> list[GopBundle]:
    """The bundles in ``data`` (one, or several back to back), parsed in place (in a copy of the data
    with ``copy``: for work that outlives the call, which the caller may reuse the data after).

    Args:
        what: Names the data in error messages (the file it came from, or the call and its videos).
        path: The file the data came from, if any (the error's ``path``).
        verify: Check each bundle's CRC-32.
        copy: Parse a copy of the data.

    Raises:
        CorruptDataError: the data is empty, not bundles, truncated or damaged; the message names
            ``what`` and where in the data.
    """
    mv = _as_bytes_view(data, what)
    if copy:
        mv = memoryview(bytes(mv))
    if len(mv) == 0:
        raise CorruptDataError(f"{what}: the packet data is empty", path=path)
    bundles: list[GopBundle] = []
    offset = 0
    while offset < len(mv):
        try:
            end = _bundle_end(mv, offset)
            bundles.append(GopBundle.from_buffer(mv[offset:end], verify=verify))
        except CorruptDataError as exc:
            where = f" (bundle {len(bundles)}, at byte {offset})" if offset else ""
            raise CorruptDataError(f"{what}: damaged GOP data{where}: {exc.message}",
                                   path=path) from None
        offset = end
    return bundles


def pack(bundles: Sequence[GopBundle]) -> np.ndarray:
    """Bundles back to back in a new ``uint8`` array."""
    if len(bundles) == 1:
        return np.frombuffer(bundles[0].buffer, np.uint8).copy()
    return np.concatenate([np.frombuffer(b.buffer, np.uint8) for b in bundles])


def load(path: str | os.PathLike[str]) -> np.ndarray:
    """The packet data saved in ``path``, checked (every bundle's CRC).

    Raises:
        VideoOpenError: the file cannot be read.
        CorruptDataError: the file is not GOP data, or is damaged (the message names the file).
    """
    name = os.fspath(path)
    try:
        data = np.fromfile(name, np.uint8)
    except OSError as exc:
        raise VideoOpenError(f"cannot read GOP data file {name}: {exc.strerror or exc}", path=name) from exc
    split(data, what=name, path=name)
    return data


def save(data: Any, path: str | os.PathLike[str], *, method: str = "SavePacketsToFile") -> None:
    """Write checked packet data to ``path`` atomically (a temporary file renamed over it); ``method``
    names the call in error messages."""
    name = os.fspath(path)
    mv = _as_bytes_view(data, method)
    split(mv, what=f"{method}: the data to save")
    tmp = f"{name}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "wb") as f:
            f.write(mv)
        os.replace(tmp, name)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise VideoOpenError(f"cannot write GOP data file {name}: {exc.strerror or exc}", path=name) from exc


# -- requests against bundles ----------------------------------------------------------------------


def assign(bundles: Sequence[GopBundle], pairs: Sequence[tuple[str, int]], *, method: str) -> list[int]:
    """For each ``(absolute path, frame id)``, the index of the bundle that decodes it.

    A bundle serves a request when it was cut from that video and holds the frame. Where no bundle
    names the video (data made on another machine, or videos moved since), the i-th bundle serves the
    i-th request when there are as many of each, as ``GetGOP`` lays them out.

    Raises:
        InvalidRequestError: a frame that no bundle holds (the message lists what the data holds).
    """
    by_source: dict[str, list[int]] = {}
    for i, b in enumerate(bundles):
        by_source.setdefault(os.path.abspath(b.source), []).append(i)
    positional = len(bundles) == len(pairs)
    out = []
    for k, (path, fid) in enumerate(pairs):
        found = next((i for i in by_source.get(path, ()) if fid in bundles[i].frame_ids), None)
        if found is None and path not in by_source and positional and fid in bundles[k].frame_ids:
            found = k
        if found is None:
            held = ", ".join(f"{os.path.basename(b.source)} frames {b.first_frame_id}.."
                             f"{b.first_frame_id + b.frame_count - 1}" for b in bundles[:6])
            more = f" and {len(bundles) - 6} more" if len(bundles) > 6 else ""
            raise InvalidRequestError(f"{method}: frame {fid} of {path} is not in the GOP data given "
                                      f"(it holds {held}{more})", path=path, frame_id=fid)
        out.append(found)
    return out


class GopSource:
    """Cuts the GOPs that hold requested frames out of their videos, keeping each video's index.

    An index (one packet scan of the file) is reused while the file's size and mtime stay the same;
    at most ``max_files`` are kept (least recently used go first). Not thread-safe.
    """

    def __init__(self, max_files: int) -> None:
        self.max_files = max(1, max_files)
        self._indexes: OrderedDict[str, VideoIndex] = OrderedDict()

    def index(self, path: str) -> VideoIndex:
        stamp = file_stamp(path)
        index = self._indexes.get(path)
        if index is None or index.stamp != stamp:
            index = build_index(path)
            self._indexes[path] = index
            while len(self._indexes) > self.max_files:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(path)
        return index

    def extract(self, pairs: Sequence[tuple[str, int]]) -> list[GopBundle]:
        """One bundle per ``(absolute path, frame id)``; requests in one GOP share its bundle.

        Raises:
            VideoOpenError: as :func:`asyncdecode.gop.extract_gops`.
            CorruptDataError: a GOP cannot be read: "GOP demux failed for file: ... frame_id=...", with
                the step that failed and the GOP's frames.
            FrameIndexError: a frame id out of range (naming the file and its range).
        """
        wanted: dict[str, dict[int, GopBundle | None]] = {}
        first_asked: dict[tuple[str, int], int] = {}
        plan = []
        for path, fid in pairs:
            info = self.index(path).info
            if not 0 <= fid < info.num_frames:
                raise FrameIndexError(f"frame {fid} out of range for {path} (0..{info.num_frames - 1})",
                                      path=path, frame_id=fid)
            gop = info.gop_of(fid)
            wanted.setdefault(path, {})[gop] = None
            first_asked.setdefault((path, gop), fid)
            plan.append((path, gop))
        for path, gops in wanted.items():
            index = self.index(path)
            with GopReader(index) as reader:
                for gop in gops:
                    try:
                        gops[gop] = reader.read(gop)
                    except CorruptDataError as exc:
                        raise _demux_failed(exc, index, gop, first_asked[path, gop]) from exc
        return [wanted[path][gop] for path, gop in plan]  # type: ignore[misc]

    def clear(self) -> None:
        self._indexes.clear()


def _demux_failed(exc: CorruptDataError, index: VideoIndex, gop: int, frame_id: int) -> CorruptDataError:
    """A GOP that cannot be read, said as accvlab says it (GOP demux failed, and which step), with the
    GOP's frames and what to do."""
    path, frames = index.path, index.gop_frame_range(gop)
    cause = exc.__cause__
    annexb = ANNEXB_FILTERS.get(index.info.codec)
    if annexb is not None and cause is not None and _raised_in_bitstream_filter(cause):
        reason = getattr(cause, "strerror", None) or str(cause)
        detail = (f"{BITSTREAM_FILTER_FAILED}: {annexb} rejected the packets of GOP {gop} "
                  f"(frames {frames.start}..{frames.stop - 1}): {reason}")
    else:
        detail = exc.message.removeprefix(f"{path}: ")
    return CorruptDataError(f"{GOP_DEMUX_FAILED} for file: {path} frame_id={frame_id}: {detail}. The video data "
                            "of this GOP is damaged: copy or re-encode the file (its other GOPs may still read)",
                            path=path, frame_id=frame_id)


def _raised_in_bitstream_filter(exc: BaseException) -> bool:
    """Whether FFmpeg's bitstream filter (PyAV's ``av.bitstream``) raised ``exc``, rather than the demuxer."""
    tb = exc.__traceback__
    while tb is not None:
        if "bitstream" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


# -- the per-packet view ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PacketTable:
    """What ``ParseSerializedPacketBundle`` reports of one bundle."""

    color_range: int
    codec_id: int
    width: int
    height: int
    frame_size: int
    """Bytes of one decoded frame in NV12 (8-bit) or P016."""
    gop_len: int
    first_frame_id: int
    data: np.ndarray
    """The packets in decode order, concatenated (a view into the bundle where they lie that way)."""
    packet_sizes: list[int]
    frame_ids: list[int]
    """Frame id each packet shows, in decode order (-1: none)."""

    @classmethod
    def of(cls, bundle: GopBundle) -> PacketTable:
        table = bundle.packets
        sizes = table["size"].astype(np.int64)
        offsets = table["offset"].astype(np.int64)
        payload = np.frombuffer(bundle.payload, np.uint8)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        if np.array_equal(offsets, starts) and int(sizes.sum()) == len(payload):
            data = payload
        else:  # packets stored out of order or with gaps: gather them
            data = np.concatenate([payload[o : o + s] for o, s in zip(offsets.tolist(), sizes.tolist())])
        h, w = bundle.height, bundle.width
        sample = 1 if bundle.bit_depth <= 8 else 2
        frame_size = (h + (h + 1) // 2) * 2 * ((w + 1) // 2) * sample
        return cls(color_range=COLOR_RANGES.get(bundle.color_range, 0), codec_id=CODEC_IDS.get(bundle.codec, -1),
                   width=w, height=h, frame_size=frame_size, gop_len=bundle.frame_count,
                   first_frame_id=bundle.first_frame_id, data=data, packet_sizes=sizes.tolist(),
                   frame_ids=table["frame_id"].tolist())


def codec_name(codec_id: int) -> str:
    """FFmpeg codec name of a cudaVideoCodec value."""
    name = _CODEC_NAMES.get(int(codec_id))
    if name is None:
        known = ", ".join(f"{v} ({k})" for k, v in sorted(CODEC_IDS.items(), key=lambda kv: kv[1]))
        raise InvalidRequestError(f"codec id {codec_id!r} is not supported (known: {known})")
    return name


def bundle_from_packets(packets: Sequence[Any], frame_ids: Sequence[int], *, codec: str, width: int,
                        height: int, label: str) -> GopBundle:
    """A bundle from bare packets (decode order) and the frame id each one shows (-1: none).

    What the stream does not say is assumed: 8-bit 4:2:0, color tags unspecified (converted as
    BT.601, limited range).
    """
    datas = [_packet_bytes(p, label, i) for i, p in enumerate(packets)]
    fids = [int(f) for f in frame_ids]
    shown = sorted(f for f in fids if f >= 0)
    if not datas or not shown:
        raise InvalidRequestError(f"{label}: no packets, or no packet shows a frame")
    if len(set(shown)) != len(shown):
        raise InvalidRequestError(f"{label}: a frame id appears for two packets ({fids})")
    first = shown[0]
    return GopBundle.build(
        codec=codec, width=int(width), height=int(height), pix_fmt="yuv420p", bit_depth=8,
        color_space="unspecified", color_range="unspecified", time_base=Fraction(1, 1),
        first_frame_id=first, frame_count=shown[-1] - first + 1, source=label, stream_index=0,
        extradata=b"", packets=datas, pts=fids, dts=list(range(len(datas))), frame_ids=fids,
        flags=[_gop.FLAG_KEY] + [0] * (len(datas) - 1),
    )


def _packet_bytes(packet: Any, label: str, i: int) -> bytes:
    try:
        mv = _as_bytes_view(packet, label)
    except InvalidRequestError:
        raise InvalidRequestError(f"{label}: packet {i} must be a uint8 array or bytes, not "
                                  f"{type(packet).__name__}") from None
    if len(mv) == 0:
        raise InvalidRequestError(f"{label}: packet {i} is empty")
    return bytes(mv)
