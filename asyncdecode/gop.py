"""GOP bundles: self-contained, serializable units of decode work.

A :class:`GopBundle` holds everything a decoder needs to output the frames of one GOP, with no file to
open: codec, codec parameters, size, pixel format, color tags, the GOP's frame range, and the packets
in decode order (Annex B for H.264/HEVC) with the frame id each one shows.

Binary format, version 1 (all integers little-endian)::

    offset  size  field
    0       8     magic            b"ADGOPB\\r\\n"
    8       2     version          u16 = 1
    10      2     reserved         u16 = 0
    12      4     meta_len         u32, bytes of the JSON metadata
    16      4     packet_count     u32
    20      4     extradata_len    u32
    24      8     payload_len      u64
    32      ...   meta             UTF-8 JSON object (codec, width, height, pix_fmt, bit_depth,
                                   color_space, color_range, time_base, first_frame_id, frame_count,
                                   source, stream_index), zero-padded to a multiple of 8
    ...     40*N  packet table     N records of: offset u64 (into payload), size u32, flags u32
                                   (bit 0 keyframe, bit 1 disposable, bit 2 gap:
                                   FLAG_GAP), pts i64, dts i64, frame_id i64
                                   (-1: the decoder does not output this packet's picture)
    ...     ...   extradata        codec parameters (Annex B for H.264/HEVC), zero-padded to 8
    ...     ...   payload          packet data, concatenated
    end-8   4     crc32            zlib CRC-32 of every byte before it
    end-4   4     end marker       b"ADGE"

:meth:`GopBundle.from_buffer` reads a bundle in place (zero-copy) from ``bytes``, ``memoryview``,
``bytearray``, ``mmap`` or a numpy array; any truncation, padding or flipped bit raises
:class:`~asyncdecode.errors.CorruptDataError`.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from . import _bitstream
from .errors import CorruptDataError, FrameIndexError
from .media import ANNEXB_FILTERS, VideoIndex, build_index, open_container

__all__ = ["FLAG_DISPOSABLE", "FLAG_GAP", "FLAG_KEY", "GopBundle", "GopReader", "extract_gops"]

MAGIC = b"ADGOPB\r\n"
END = b"ADGE"
VERSION = 1
_HEADER = struct.Struct("<8sHHIIIQ")
_TRAILER = struct.Struct("<I4s")
PACKET_DTYPE = np.dtype(
    [("offset", "<u8"), ("size", "<u4"), ("flags", "<u4"), ("pts", "<i8"), ("dts", "<i8"), ("frame_id", "<i8")]
)
FLAG_KEY = 1
FLAG_DISPOSABLE = 2
FLAG_GAP = 4
"""On a keyframe: reference pictures that follow it in decode order were left out of the bundle (the
leading pictures of an H.264 open GOP, which belong to the GOP before). No picture of the bundle
references them, but the decoder sees a gap in ``frame_num``, which FFmpeg reports as damage when told
to fail on any (``err_detect=explode``)."""


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def bundle_size(buf: Any, offset: int = 0) -> int | None:
    """Bytes of the serialized bundle that starts at ``offset`` in ``buf``, as its header says.

    Reads the header alone (no version, structure or checksum check: :meth:`GopBundle.from_buffer`
    does those), to find where one bundle ends in data holding several back to back.

    Args:
        buf: Any object with the buffer protocol (``bytes``, ``memoryview``, a numpy array, ...).
        offset: Where the bundle starts in ``buf``, in bytes.

    Returns:
        The bundle's size in bytes, or ``None`` when fewer bytes than a header and trailer are left
        after ``offset``.

    Raises:
        CorruptDataError: the bytes at ``offset`` do not start with the bundle magic.
    """
    if len(buf) - offset < _HEADER.size + _TRAILER.size:
        return None
    magic, _, _, meta_len, n, extra_len, payload_len = _HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        raise CorruptDataError(f"no asyncdecode GOP bundle at byte {offset} (magic {bytes(magic)!r}, "
                               f"expected {MAGIC!r})")
    return (_HEADER.size + _pad8(meta_len) + n * PACKET_DTYPE.itemsize + _pad8(extra_len) + payload_len
            + _TRAILER.size)


@dataclass(frozen=True, eq=False)
class GopBundle:
    """One GOP of one video stream, ready to decode: see the module docstring for the binary format.

    Build one with :func:`extract_gops` (or :class:`GopReader`), serialize with :meth:`to_bytes`, read
    back with :meth:`from_buffer`. Packet data are views into one buffer; nothing is copied.
    """

    codec: str
    """FFmpeg codec name."""
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    color_space: str
    """Matrix tag of the stream (``"bt709"``, ``"unspecified"`` ...)."""
    color_range: str
    """Range tag of the stream (``"limited"``, ``"full"``, ``"unspecified"``)."""
    time_base: Fraction
    first_frame_id: int
    """Frame id (presentation order, whole file) of the GOP's first frame."""
    frame_count: int
    """Number of frames the GOP shows: ids ``first_frame_id .. first_frame_id + frame_count - 1``."""
    source: str
    """Path of the video the bundle was cut from (for messages)."""
    stream_index: int
    packets: np.ndarray
    """Packet table (decode order), dtype :data:`PACKET_DTYPE`."""
    extradata: memoryview
    payload: memoryview
    buffer: memoryview
    """The whole serialized bundle."""

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, *, codec: str, width: int, height: int, pix_fmt: str, bit_depth: int,
              color_space: str, color_range: str, time_base: Fraction, first_frame_id: int,
              frame_count: int, source: str, stream_index: int, extradata: bytes,
              packets: Sequence[bytes], pts: Sequence[int], dts: Sequence[int],
              frame_ids: Sequence[int], flags: Sequence[int]) -> GopBundle:
        """Assemble and serialize a bundle from its parts."""
        meta = json.dumps(dict(
            codec=codec, width=width, height=height, pix_fmt=pix_fmt, bit_depth=bit_depth,
            color_space=color_space, color_range=color_range,
            time_base=[time_base.numerator, time_base.denominator], first_frame_id=first_frame_id,
            frame_count=frame_count, source=source, stream_index=stream_index,
        ), separators=(",", ":")).encode()
        n = len(packets)
        table = np.zeros(n, PACKET_DTYPE)
        sizes = np.fromiter((len(p) for p in packets), np.uint64, n)
        table["offset"] = np.concatenate(([0], np.cumsum(sizes)[:-1])) if n else []
        table["size"] = sizes
        table["flags"] = flags
        table["pts"] = pts
        table["dts"] = dts
        table["frame_id"] = frame_ids
        payload_len = int(sizes.sum())
        parts = [
            _HEADER.pack(MAGIC, VERSION, 0, len(meta), n, len(extradata), payload_len),
            meta, bytes(_pad8(len(meta)) - len(meta)),
            table.tobytes(),
            bytes(extradata), bytes(_pad8(len(extradata)) - len(extradata)),
            *packets,
        ]
        body = b"".join(parts)
        return cls.from_buffer(body + _TRAILER.pack(zlib.crc32(body), END), verify=False)

    @classmethod
    def from_buffer(cls, buf: Any, *, verify: bool = True) -> GopBundle:
        """Read a serialized bundle in place.

        Args:
            buf: ``bytes``, ``bytearray``, ``memoryview``, ``mmap`` or a contiguous numpy array.
            verify: Check the CRC-32 (one pass over the data). Structure is always checked.

        Raises:
            CorruptDataError: wrong magic, unknown version, truncated, trailing bytes, checksum
                mismatch, or a packet table pointing outside the payload.
        """
        if isinstance(buf, np.ndarray):
            if not buf.flags.c_contiguous:
                raise CorruptDataError("GopBundle.from_buffer needs a contiguous array")
            buf = buf.reshape(-1).view(np.uint8)
        mv = memoryview(buf)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        source = "<buffer>"
        total = len(mv)
        if total < _HEADER.size + _TRAILER.size:
            raise CorruptDataError(f"GOP bundle truncated: {total} bytes is smaller than a header")
        magic, version, _, meta_len, n, extra_len, payload_len = _HEADER.unpack_from(mv, 0)
        if magic != MAGIC:
            raise CorruptDataError(f"not a GOP bundle (magic {bytes(magic)!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise CorruptDataError(f"GOP bundle version {version} is not supported (this reader: {VERSION})")
        meta_off = _HEADER.size
        table_off = meta_off + _pad8(meta_len)
        extra_off = table_off + n * PACKET_DTYPE.itemsize
        payload_off = extra_off + _pad8(extra_len)
        expected = payload_off + payload_len + _TRAILER.size
        if total != expected:
            raise CorruptDataError(
                f"GOP bundle is {total} bytes but its header describes {expected}: "
                f"{'truncated' if total < expected else 'trailing data'}"
            )
        crc, end = _TRAILER.unpack_from(mv, total - _TRAILER.size)
        if end != END:
            raise CorruptDataError("GOP bundle end marker missing: truncated or overwritten")
        if verify and zlib.crc32(mv[: total - _TRAILER.size]) != crc:
            raise CorruptDataError("GOP bundle checksum mismatch: the data is corrupted")
        try:
            meta = json.loads(bytes(mv[meta_off : meta_off + meta_len]))
            source = str(meta["source"])
            table = np.frombuffer(mv, PACKET_DTYPE, count=n, offset=table_off)
            payload = mv[payload_off : payload_off + payload_len]
            ends = table["offset"].astype(np.int64) + table["size"]
            if n and (ends.max() > payload_len or (table["offset"] > payload_len).any()):
                raise ValueError("packet table points outside the payload")
            bundle = cls(
                codec=meta["codec"], width=int(meta["width"]), height=int(meta["height"]),
                pix_fmt=meta["pix_fmt"], bit_depth=int(meta["bit_depth"]),
                color_space=meta["color_space"], color_range=meta["color_range"],
                time_base=Fraction(*meta["time_base"]), first_frame_id=int(meta["first_frame_id"]),
                frame_count=int(meta["frame_count"]), source=source,
                stream_index=int(meta["stream_index"]), packets=table,
                extradata=mv[extra_off : extra_off + extra_len], payload=payload, buffer=mv,
            )
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
            raise CorruptDataError(f"GOP bundle of {source} is malformed: {exc}", path=source) from exc
        if bundle.frame_count <= 0 or bundle.first_frame_id < 0 or n == 0:
            raise CorruptDataError(f"GOP bundle of {source} is empty", path=source)
        return bundle

    # -- access -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The serialized bundle (see the module docstring)."""
        return bytes(self.buffer)

    @property
    def nbytes(self) -> int:
        """Size of the serialized bundle in bytes."""
        return len(self.buffer)

    @property
    def frame_ids(self) -> range:
        """Frame ids this GOP shows."""
        return range(self.first_frame_id, self.first_frame_id + self.frame_count)

    @functools.cached_property
    def frame_of_pts(self) -> dict[int, int]:
        """Presentation timestamp -> frame id, for every packet (computed once)."""
        return dict(zip(self.packets["pts"].tolist(), self.packets["frame_id"].tolist()))

    @functools.cached_property
    def rows(self) -> list[tuple[int, int, int, int]]:
        """``(offset, size, pts, frame_id)`` of every packet in decode order, as Python integers
        (computed once): what a decoder thread reads per packet, without indexing numpy per field."""
        t = self.packets
        return list(zip(t["offset"].tolist(), t["size"].tolist(), t["pts"].tolist(), t["frame_id"].tolist()))

    @functools.cached_property
    def decode_index(self) -> dict[int, int]:
        """Frame id -> decode-order index of its packet (computed once)."""
        return {f: i for i, f in enumerate(self.packets["frame_id"].tolist())}

    @functools.cached_property
    def in_display_order(self) -> bool:
        """Every packet shows its own frame and decode order is display order (no B-frames to reorder):
        a decoder can hand each frame out as soon as its packet is in."""
        fids = self.packets["frame_id"]
        return bool(len(fids)) and bool((fids >= 0).all()) and bool((np.diff(fids) > 0).all())

    def __len__(self) -> int:
        return len(self.packets)

    def packet(self, i: int) -> memoryview:
        """Data of packet ``i`` (decode order), a view into the bundle."""
        rec = self.packets[i]
        off = int(rec["offset"])
        return self.payload[off : off + int(rec["size"])]

    def __iter__(self) -> Iterator[memoryview]:
        for i in range(len(self.packets)):
            yield self.packet(i)

    def __repr__(self) -> str:
        last = self.first_frame_id + self.frame_count - 1
        return (
            f"GopBundle({self.source!r}, frames {self.first_frame_id}..{last}, {len(self.packets)} packets, "
            f"{self.codec} {self.width}x{self.height} {self.pix_fmt}, {self.nbytes} bytes)"
        )


class GopReader:
    """Cuts GOP bundles out of one video file, keeping the file open between reads.

    Not thread-safe: one thread uses a reader at a time (the engine keeps a pool of them).
    """

    def __init__(self, index: VideoIndex) -> None:
        self.index = index
        self.path = index.path
        self._container = open_container(self.path)
        try:
            self._stream = self._container.streams.video[0]
            for s in self._container.streams.video:
                if s.index == index.info.stream_index:
                    self._stream = s
            codec = index.info.codec
            self._annexb_filter = None
            if codec in ANNEXB_FILTERS and index.extradata and not _bitstream.is_annexb(index.extradata):
                self._annexb_filter = ANNEXB_FILTERS[codec]
            self._extradata = _bitstream.annexb_extradata(codec, index.extradata)
            self._bsf: Any = None  # made per GOP in _packets_from
        except BaseException:
            self._container.close()
            raise

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> GopReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, gop: int) -> GopBundle:
        """Demux GOP ``gop`` into a bundle.

        Raises:
            CorruptDataError: packets unreadable, or not the ones the index recorded (the file
                changed after it was indexed).
        """
        import av

        idx = self.index
        start, stop = int(idx.gop_packet_start[gop]), int(idx.gop_packet_stop[gop])
        frames = idx.gop_frame_range(gop)
        datas, pts, dts, fids, keys = [], [], [], [], []
        gap = False  # a leading reference picture was left out (H.264: see FLAG_GAP)
        try:
            for i, packet in self._packets_from(start, stop):
                fid = int(idx.packet_frame[i])
                # Leading pictures of this GOP's keyframe belong to the previous GOP and no picture
                # of this GOP references them: leave them out.
                if 0 <= fid < frames.start and i > start:
                    if idx.info.codec == "h264" and not gap:
                        gap = _bitstream.leaves_frame_num_gap("h264", self._annexb(packet))
                    continue
                key = bool(idx.packet_key[i])
                pts.append(int(idx.packet_pts[i]))
                dts.append(int(idx.packet_dts[i]))
                fids.append(fid)
                keys.append(key)
                datas.append(self._annexb(packet))
        except av.error.FFmpegError as exc:
            raise CorruptDataError(f"{self.path}: GOP {gop} (frames {frames.start}..{frames.stop - 1}) "
                                   f"cannot be read ({exc})", path=self.path, frame_id=frames.start) from exc
        if self._extradata and self.index.info.codec in ("h264", "hevc") and datas:
            # Make the bundle self-contained: the keyframe carries the parameter sets in-band.
            if not has_parameter_sets(self.index.info.codec, datas[0]):
                datas[0] = self._extradata + datas[0]
        disposable = _bitstream.disposable_flags(idx.info.codec, datas)
        flags = [(FLAG_KEY if k else 0) | (FLAG_DISPOSABLE if d else 0) for k, d in zip(keys, disposable)]
        if gap and flags:
            flags[0] |= FLAG_GAP
        info = idx.info
        return GopBundle.build(
            codec=info.codec, width=info.width, height=info.height, pix_fmt=info.pix_fmt,
            bit_depth=info.bit_depth, color_space=info.color_space, color_range=info.color_range,
            time_base=info.time_base, first_frame_id=frames.start, frame_count=len(frames),
            source=self.path, stream_index=info.stream_index, extradata=self._extradata,
            packets=datas, pts=pts, dts=dts, frame_ids=fids, flags=flags,
        )

    def _annexb(self, packet: Any) -> bytes:
        if self._annexb_filter is None:
            return bytes(packet)
        import av

        if self._bsf is None:
            self._bsf = av.bitstream.BitStreamFilterContext(self._annexb_filter, self._stream)
        return b"".join(bytes(p) for p in self._bsf.filter(packet))

    def _packets_from(self, start: int, stop: int) -> Iterator[tuple[int, Any]]:
        """Yield ``(decode-order index, packet)`` for packets ``start..stop-1``, checking each one."""
        idx = self.index
        want_pts, want_dts = int(idx.packet_pts[start]), int(idx.packet_dts[start])
        self._bsf = None  # a fresh filter per GOP: no state carried across a seek
        for attempt in (0, 1):
            target = min(want_pts, want_dts) if attempt == 0 else -(1 << 62)
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            found = False
            i = start
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                d = packet.dts if packet.dts is not None else p
                if not found:
                    if p == want_pts and d == want_dts:
                        found = True
                    elif d is not None and d > want_dts:
                        break  # the seek landed past the keyframe: rescan from the start
                    else:
                        continue
                if p != int(idx.packet_pts[i]):
                    raise CorruptDataError(
                        f"{self.path} changed after it was indexed: packet {i} has pts {p}, "
                        f"the index says {int(idx.packet_pts[i])}", path=self.path)
                yield i, packet
                i += 1
                if i == stop:
                    return
            if found:
                raise CorruptDataError(
                    f"{self.path}: stream ended after packet {i - 1}, the index has {len(idx.packet_pts)} "
                    "packets (truncated or changed after it was indexed)", path=self.path)
        raise CorruptDataError(f"{self.path}: keyframe packet {start} not found (file changed after it "
                               "was indexed?)", path=self.path)


def has_parameter_sets(codec: str, data: bytes) -> bool:
    """Whether an Annex B packet carries an SPS (H.264 type 7; HEVC type 33) before its first picture."""
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        b0 = data[pos + 3]
        nal_type = b0 & 0x1F if codec == "h264" else (b0 >> 1) & 0x3F
        if (codec == "h264" and nal_type == 7) or (codec == "hevc" and nal_type == 33):
            return True
        if (codec == "h264" and 1 <= nal_type <= 5) or (codec == "hevc" and nal_type <= 31):
            return False
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return False


def extract_gops(path: str | os.PathLike[str], frame_ids: Sequence[int]) -> list[GopBundle]:
    """Cut the GOP of each requested frame out of ``path``.

    Returns one bundle per frame id, in order; frames of the same GOP share one bundle object.

    Example:
        >>> bundles = extract_gops("cam0.mp4", [17, 40])
        >>> data = bundles[0].to_bytes(); GopBundle.from_buffer(data).first_frame_id
        0

    Raises:
        VideoOpenError: the file cannot be opened as a video.
        FrameIndexError: a frame id is out of range.
        CorruptDataError: the file's packets cannot be read.
    """
    index = build_index(path)
    n = index.info.num_frames
    gops = []
    for fid in frame_ids:
        if not isinstance(fid, (int, np.integer)) or isinstance(fid, bool) or not 0 <= fid < n:
            raise FrameIndexError(f"frame {fid} out of range for {index.path} (0..{n - 1})",
                                  path=index.path, frame_id=fid if isinstance(fid, int) else None)
        gops.append(index.info.gop_of(int(fid)))
    out: dict[int, GopBundle] = {}
    with GopReader(index) as reader:
        for g in gops:
            if g not in out:
                out[g] = reader.read(g)
    return [out[g] for g in gops]
