"""Container parsing, for streaming ingestion (:mod:`._ingest`): a feed's bytes to GOP bundles.

In: a :class:`~asyncdecode._ingest_source.Feed` and the container format, if the caller named one.
Out: the stream's GOPs as :class:`~asyncdecode._ingest_gops.BundledGop`, each as soon as it is
complete, then the verdict on how the stream ended. It all runs in the ingest thread; PyAV is used
here and nowhere else in the ingestion.

Containers stamp presentation times; raw H.264/HEVC elementary streams do not, and their presentation
order comes from the picture order counts in the slice headers (:mod:`asyncdecode._annexb`).

A stream can end inside a packet. MPEG-TS ends inside one when its length is not a whole number of
TS packets, MP4 when its last box is incomplete or the demuxer flags a short sample; any source that
raises ends wherever it stopped. Then the last GOP's frames are delivered up to the last one whose
place in presentation order is certain, and :class:`~asyncdecode.errors.TruncatedStreamError` follows.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from . import _bitstream
from ._annexb import OrderTracker
from ._ingest_gops import BundledGop, Cut, GopCutter, Packet
from ._ingest_source import Aborted, Feed, Framing, sniff
from .errors import (CorruptDataError, InvalidRequestError, TruncatedStreamError, UnsupportedStreamError,
                     VideoOpenError)
from .gop import FLAG_DISPOSABLE, FLAG_GAP, FLAG_KEY, GopBundle, has_parameter_sets
from .media import ANNEXB_FILTERS, best_video_stream, stream_info

__all__ = ["Demuxer", "StreamLayout", "check_source", "format_name", "open_container"]

_PEEK_BYTES = 1024  # bytes looked at to tell the format
_RAW_FORMATS = ("h264", "hevc")
_ALIASES = {"ts": "mpegts", "m2ts": "mpegts", "fmp4": "mp4", "mov": "mp4", "h265": "hevc", "265": "hevc",
            "264": "h264", "avc": "h264"}
_DEFAULT_RAW_RATE = Fraction(25)  # FFmpeg's own assumption for raw streams that state no rate
# FFmpeg reads ahead when it opens a stream, to learn its parameters and guess its frame rate; on a live
# source that read-ahead is waiting time before the first frame. The frame-rate guess is never used
# here (containers stamp times; raw streams take the rate in their headers), and a raw H.264/HEVC
# stream has its parameters in its first access units, so FFmpeg is told to read less.
_OPEN_OPTIONS = {"fpsprobesize": "0"}
_RAW_OPEN_OPTIONS = {**_OPEN_OPTIONS, "analyzeduration": "500000"}  # microseconds of stream


def format_name(fmt: str | None) -> str | None:
    """The FFmpeg demuxer for a ``format`` argument (``"ts"`` -> ``"mpegts"``, ...); ``None`` stays
    ``None`` (told from the first bytes). Raises ``InvalidRequestError`` for a name FFmpeg lacks."""
    if fmt is None:
        return None
    if not isinstance(fmt, str) or not fmt:
        raise InvalidRequestError(f"format must be a container name such as 'mpegts', 'mp4', 'h264' or "
                                  f"'hevc', not {fmt!r}")
    name = _ALIASES.get(fmt.lower(), fmt.lower())
    import av

    if name not in av.formats_available:
        raise InvalidRequestError(f"format {fmt!r} is not a demuxer of this FFmpeg build (use 'mpegts', "
                                  "'mp4', 'h264', 'hevc', or another FFmpeg format name)")
    return name


def open_container(feed: Feed, fmt: str | None, label: str) -> Any:
    """The PyAV container reading ``feed``, in format ``fmt`` (``None``: told from the first bytes).

    Sets ``feed.framing`` for the format, so that the feed can tell a stream cut inside a unit.

    Raises:
        VideoOpenError: the stream is empty or not readable as a media stream.
        TruncatedStreamError: the source failed before the stream could be opened (see
            :func:`check_source`).
    """
    import av

    head = feed.peek(_PEEK_BYTES)
    if not head:
        check_source(feed, label)
        raise VideoOpenError(f"{label}: the stream is empty", path=label)
    fmt = fmt or sniff(head)
    feed.framing = Framing(fmt if fmt in ("mpegts", "mp4") else None, head)
    try:
        return av.open(feed, mode="r", format=fmt,
                       container_options=_RAW_OPEN_OPTIONS if fmt in _RAW_FORMATS else _OPEN_OPTIONS)
    except Aborted:
        raise
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        check_source(feed, label)
        what = f"{fmt} stream" if fmt else "media stream"
        raise VideoOpenError(f"{label} is not a readable {what} ({exc})", path=label) from exc


def check_source(feed: Feed, label: str) -> None:
    """Raise the source's own failure, if it failed before the stream could be opened."""
    if isinstance(feed.error, InvalidRequestError):
        raise feed.error from None
    if feed.error is not None:
        raise TruncatedStreamError(f"{label}: the source failed after {feed.framing.total} bytes, before "
                                   f"the stream could be opened ({feed.error!r})", path=label,
                                   frame_id=0) from feed.error


class StreamLayout:
    """A container's video stream as its headers describe it, and its packets and GOPs in our form.

    In: an open container (its best video stream is taken). Out: :meth:`packet` makes a demuxed
    packet a :class:`~asyncdecode._ingest_gops.Packet` (Annex B, with its presentation order key);
    :meth:`bundle` makes a cut GOP a :class:`~asyncdecode._ingest_gops.BundledGop`.

    Raises (when made):
        VideoOpenError: the container has no video stream.
        UnsupportedStreamError: its parameters cannot be read.
    """

    def __init__(self, container: Any, label: str) -> None:
        import av

        self.label = label
        self.stream = stream = best_video_stream(container, label)
        self.meta = stream_info(stream, label)
        self.codec = codec = self.meta["codec"]
        cc = stream.codec_context
        extradata = bytes(cc.extradata or b"")
        self._bsf = None
        if codec in ANNEXB_FILTERS and extradata and not _bitstream.is_annexb(extradata):
            self._bsf = av.bitstream.BitStreamFilterContext(ANNEXB_FILTERS[codec], stream)
        try:
            self.extradata = _bitstream.annexb_extradata(codec, extradata)
        except ValueError as exc:
            raise UnsupportedStreamError(f"{label}: {exc}", path=label) from exc
        self.raw = container.format.name in _RAW_FORMATS
        """A raw elementary stream: no times stamped, presentation order from the slice headers."""
        self._tracker = OrderTracker(codec, self.extradata) if self.raw else None
        self.time_base = Fraction(stream.time_base or Fraction(1, 90000))
        self.rate = Fraction(stream.average_rate or stream.guessed_rate or cc.framerate or _DEFAULT_RAW_RATE)
        self.reordered = bool(cc.has_b_frames)
        """The headers say that pictures are reordered (B-frames)."""

    def packet(self, packet: Any, n: int) -> Packet | None:
        """The ``n``-th demuxed packet of the stream in our form; ``None`` for one without a picture."""
        key, pts, dts, shown = bool(packet.is_keyframe), packet.pts, packet.dts, not packet.is_discard
        if self._bsf is not None:  # (the filter takes the packet over: its fields are read first)
            data = b"".join(bytes(p) for p in self._bsf.filter(packet))
        else:
            data = bytes(packet)
        if self._tracker is not None:
            found = self._tracker.order(data)
            if found is None:
                return None  # no picture in it (parameter sets alone, say): the tracker has read them
            order, shown = found
            return Packet(data, key, order, n, shown)
        if pts is None:
            pts = dts if dts is not None else n
        return Packet(data, key, int(pts), int(dts if dts is not None else pts), shown)

    def bundle(self, cut: Cut, *, tail: bool, reordered: bool) -> BundledGop:
        """A cut GOP as the decoders take it: a self-contained bundle and its wanted frames' times."""
        codec, meta, extradata = self.codec, self.meta, self.extradata
        datas = [p.data for p in cut.packets]
        if extradata and codec in ("h264", "hevc") and not has_parameter_sets(codec, datas[0]):
            datas[0] = extradata + datas[0]  # self-contained: the keyframe carries the parameter sets
        disposable = _bitstream.disposable_flags(codec, datas)
        flags = [(FLAG_KEY if p.key else 0) | (FLAG_DISPOSABLE if d else 0) | (FLAG_GAP if p.key and p.gap else 0)
                 for p, d in zip(cut.packets, disposable)]
        bundle = GopBundle.build(
            codec=codec, width=meta["width"], height=meta["height"], pix_fmt=meta["pix_fmt"],
            bit_depth=meta["bit_depth"], color_space=meta["color_space"], color_range=meta["color_range"],
            time_base=self.time_base, first_frame_id=cut.frames[0][0], frame_count=len(cut.frames),
            source=self.label, stream_index=self.stream.index, extradata=extradata, packets=datas,
            pts=[p.order for p in cut.packets], dts=[p.dts for p in cut.packets],
            frame_ids=cut.frame_ids, flags=flags)
        return BundledGop(bundle, [(fid, self._seconds(fid, p)) for fid, p in cut.frames[: cut.wanted]],
                          tail=tail, reordered=reordered)

    def _seconds(self, fid: int, p: Packet) -> float:
        return float(fid / self.rate) if self.raw else float(p.order * self.time_base)


class Demuxer:
    """A container's video stream, read to its end and cut into GOPs (in the ingest thread).

    In: an open container and the :class:`~asyncdecode._ingest_source.Feed` it reads. Out:
    :meth:`run` hands each GOP to ``emit`` as soon as it is complete, in stream order; ``packets`` and
    ``skipped`` count as it goes (read by ``stats()`` from the loop).
    """

    def __init__(self, container: Any, feed: Feed, label: str, *, stopping: Callable[[], bool]) -> None:
        self.layout = StreamLayout(container, label)
        self.packets = 0
        """Packets demuxed."""
        self.skipped = 0
        """Packets left out (see :attr:`GopCutter.skipped <asyncdecode._ingest_gops.GopCutter.skipped>`)."""
        self._container = container
        self._feed = feed
        self._label = label
        self._stopping = stopping
        codec = self.layout.codec
        self._cutter = GopCutter(reordered=self.layout.reordered,
                                 leaves_gap=lambda p: _bitstream.leaves_frame_num_gap(codec, p.data))

    def run(self, emit: Callable[[BundledGop], None]) -> None:
        """Read the stream to its end, handing each GOP to ``emit``; return at a clean end.

        Raises:
            TruncatedStreamError: the stream, or its source, stopped inside a packet (the frames before
                it whose place is certain were emitted).
            CorruptDataError: a damaged packet, or data the demuxer or a header parser cannot read.
            InvalidRequestError: the source gave something other than bytes.
            Aborted: ``stopping()`` turned true, or ``emit`` raised it.
        """
        held, reason, failure = self._read(emit)
        feed = self._feed
        if isinstance(feed.error, InvalidRequestError):
            raise feed.error
        cut_short = feed.error is not None or reason is not None and failure is None or not feed.framing.complete()
        if feed.error is not None:
            reason, failure = f"a failure of its source ({feed.error!r})", feed.error
        elif reason is None and not feed.framing.complete():
            reason = f"a cut inside {'a TS packet' if feed.framing.kind == 'mpegts' else 'an MP4 box'}"
        self._flush(held, emit, truncated=reason is not None)
        self.skipped = self._cutter.skipped
        if reason is not None:
            kind = TruncatedStreamError if cut_short else CorruptDataError
            next_frame = self._cutter.next_frame
            error = kind(f"{self._label}: the stream ended after {feed.framing.total} bytes with {reason}; "
                         f"frames 0..{next_frame - 1} were delivered, the rest is lost",
                         path=self._label, frame_id=next_frame)
            error.__cause__ = failure
            raise error

    def _read(self, emit: Callable[[BundledGop], None]) -> tuple[Packet | None, str | None, BaseException | None]:
        """Demux until the stream ends or a packet is damaged or unreadable, pushing each packet to the
        cutter once the next one shows that it was whole. Out: the last packet (not pushed yet), and
        why the stream stopped early with the error that said so (``None, None``: it did not)."""
        import av

        held: Packet | None = None
        try:
            for packet in self._container.demux(self.layout.stream):
                if self._stopping():
                    raise Aborted
                if packet.size == 0:
                    continue
                if packet.is_corrupt:
                    return held, "a damaged or cut packet", None
                p = self.layout.packet(packet, self.packets)
                self.packets += 1
                self.skipped = self._cutter.skipped
                if p is None:
                    continue
                if held is not None:
                    self._emit(self._cutter.push(held), emit)
                held = p
        except Aborted:
            raise
        except av.error.FFmpegError as exc:
            return held, f"unreadable data ({exc})", exc
        except ValueError as exc:  # a slice or parameter set header of a raw stream cannot be read
            return held, f"an unreadable header ({exc})", exc
        return held, None, None

    def _flush(self, held: Packet | None, emit: Callable[[BundledGop], None], *, truncated: bool) -> None:
        """The GOPs left at the end of the stream: the last packet's, if it is whole, and the cutter's."""
        sized = self._feed.framing.kind == "mp4"
        if held is not None and not (truncated and not sized):
            # MP4 samples have known sizes (a short one is flagged); elsewhere a packet's end is only
            # known from the next one, so the last packet of a stream that was cut is left out.
            self._emit(self._cutter.push(held), emit)
        # Without framing (raw streams; TS cut at a packet boundary) a cut inside the last packet
        # shows only when it does not decode: its GOP is marked to be decoded again without it.
        may_be_cut = not truncated and held is not None and not sized
        for cut in self._cutter.finish(truncated=truncated):
            self._emit([cut], emit, tail=may_be_cut and any(p is held for p in cut.packets))

    def _emit(self, cuts: list[Cut], emit: Callable[[BundledGop], None], *, tail: bool = False) -> None:
        for cut in cuts:
            emit(self.layout.bundle(cut, tail=tail, reordered=self._cutter.reordered))
