"""Streaming ingestion: frames of a stream as it arrives (:meth:`Engine.ingest <asyncdecode.Engine.ingest>`).

The path of a chunk::

    async source ──pump task──> _ChunkPipe (byte-bounded; the pump awaits when full: backpressure)
        ──read() in the ingest thread──> PyAV demuxer ──packets──> _GopCutter ──GopBundle per GOP──>
        event loop (at most ``gops_ahead`` GOPs not yet handed to the consumer: the ingest thread waits)
        ──decode job per GOP (all its frames wanted)──> the engine's decoder threads ──> Frame records

Sync sources (a path, a binary file object, an iterable of ``bytes``) are read by the ingest thread
itself, so their backpressure is the thread not reading while the GOP window is full.

A GOP is cut at the next keyframe that is presented after every frame received so far; the leading
pictures of that keyframe (decoded after it, presented before it: open GOPs) still belong to the GOP
before it, so a GOP is complete when the first packet presented after the new keyframe arrives, or at
the end of the stream. Frame ids and the GOP table come out the same as
:func:`~asyncdecode.media.build_index` makes them for a file.

Containers stamp presentation times; raw H.264/HEVC elementary streams do not, and their presentation
order comes from the picture order counts in the slice headers (:mod:`asyncdecode._annexb`).

A stream can end inside a packet. MPEG-TS ends inside one when its length is not a whole number of
TS packets, MP4 when its last box is incomplete or the demuxer flags a short sample; any source that
raises ends wherever it stopped. Then the last GOP's frames are delivered up to the last one whose
place in presentation order is certain, and :class:`~asyncdecode.errors.TruncatedStreamError` follows.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Union

from . import _bitstream
from ._annexb import OrderTracker
from ._core import EngineState
from ._frame import Frame
from ._output import OutputSpec
from .errors import (CorruptDataError, EngineClosedError, InvalidRequestError, TruncatedStreamError,
                     UnsupportedStreamError, VideoOpenError)
from .gop import FLAG_DISPOSABLE, FLAG_KEY, GopBundle, has_parameter_sets
from .media import ANNEXB_FILTERS, stream_info, best_video_stream

if TYPE_CHECKING:
    from ._core import EngineLike as Engine

__all__ = ["DEFAULT_BUFFER_BYTES", "DEFAULT_GOPS_AHEAD", "IngestStream", "Source"]

log = logging.getLogger("asyncdecode")

DEFAULT_BUFFER_BYTES = 4 << 20
"""Bytes of an async source buffered ahead of the demuxer, at most (plus one chunk being split)."""
DEFAULT_GOPS_AHEAD = 4
"""GOPs demuxed (and decoding) ahead of the consumer, at most."""
_READ_SIZE = 64 << 10  # bytes asked of an async reader per call
_PEEK_BYTES = 1024  # bytes looked at to tell the format
_RAW_FORMATS = ("h264", "hevc")
_PART_FRAMES = 8  # frames of a GOP asked for per decode job
_PARTS_AHEAD = 3  # decoded parts of a GOP waiting for the consumer, at most (fewer starves the threads)
_ALIASES = {"ts": "mpegts", "m2ts": "mpegts", "fmp4": "mp4", "mov": "mp4", "h265": "hevc", "265": "hevc",
            "264": "h264", "avc": "h264"}
_DEFAULT_RAW_RATE = Fraction(25)  # FFmpeg's own assumption for raw streams that state no rate
# FFmpeg reads ahead when it opens a stream, to learn its parameters and guess its frame rate; on a live
# source that read-ahead is waiting time before the first frame. The frame-rate guess is never used
# here (containers stamp times; raw streams take the rate in their headers), and a raw H.264/HEVC
# stream has its parameters in its first access units, so FFmpeg is told to read less.
_OPEN_OPTIONS = {"fpsprobesize": "0"}
_RAW_OPEN_OPTIONS = {**_OPEN_OPTIONS, "analyzeduration": "500000"}  # microseconds of stream

Source = Union[str, "os.PathLike[str]", Any, AsyncIterable[bytes], Iterable[bytes]]
"""A path, a binary file object (``read(n)``; sync, or async like :class:`asyncio.StreamReader`), an
async iterable of ``bytes`` chunks, or an iterable of ``bytes`` chunks."""


class _Aborted(Exception):
    """The consumer went away: the ingest thread and the pump stop."""


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``loop.call_soon_threadsafe`` from a worker thread, a no-op once the loop is closed."""
    if loop.is_closed():
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # closed between the check and the call
        pass


# -- bytes in ---------------------------------------------------------------------------------------


class _ChunkPipe:
    """Chunks from the event loop to the ingest thread, at most ``capacity`` bytes buffered.

    :meth:`put` (loop) waits while the buffer is full; :meth:`read` (ingest thread) blocks while it is
    empty. ``bytes`` chunks are kept as they are (other buffers are copied); a chunk larger than the
    capacity is split.
    """

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        self.capacity = capacity
        self._loop = loop
        self._cond = threading.Condition()
        self._chunks: deque[memoryview] = deque()
        self._space = asyncio.Event()
        self._writer_waiting = False
        self._eof = False
        self._error: BaseException | None = None
        self._aborted = False
        self.buffered = 0
        self.peak = 0
        self.waits = 0
        """Times the producer had to wait for room (backpressure)."""

    async def put(self, chunk: bytes | bytearray | memoryview) -> None:
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)  # a producer may reuse its buffer once the chunk is handed over
        view = memoryview(chunk).cast("B")
        for lo in range(0, len(view), self.capacity):
            piece = view[lo : lo + self.capacity]
            while True:
                with self._cond:
                    if self._aborted:
                        raise _Aborted
                    if self.buffered + len(piece) <= self.capacity:
                        self._chunks.append(piece)
                        self.buffered += len(piece)
                        self.peak = max(self.peak, self.buffered)
                        self._cond.notify()
                        break
                    self._space.clear()
                    self._writer_waiting = True
                self.waits += 1
                await self._space.wait()

    def close(self, error: BaseException | None = None) -> None:
        """End of the source: the reader gets what is left, then end of file (or ``error``, raised)."""
        with self._cond:
            self._eof = True
            self._error = error
            self._cond.notify_all()

    def abort(self) -> None:
        """The consumer is gone (any thread): both sides stop."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
        _call_soon(self._loop, self._space.set)

    def read(self, n: int) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise _Aborted
            if not self._chunks and self._error is not None:
                raise self._error
            parts, size = [], 0
            while self._chunks and size < n:
                head = self._chunks[0]
                take = head[: n - size]
                parts.append(take)
                size += len(take)
                if len(take) == len(head):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[len(take):]
            self.buffered -= size
            wake = self._writer_waiting and self.buffered < self.capacity
            if wake:
                self._writer_waiting = False
        if wake:
            _call_soon(self._loop, self._space.set)
        return b"".join(parts)


class _Framing:
    """Whether the bytes seen form whole container units (MPEG-TS packets, top-level MP4 boxes).

    Fed every byte the demuxer reads, in order; :meth:`complete` at the end tells a stream that
    stopped inside a unit. Formats without such framing (raw elementary streams) are always complete.
    """

    def __init__(self, kind: str | None, head: bytes) -> None:
        self.kind = kind
        self.total = 0
        self.ts_size = 188
        if kind == "mpegts":
            for size, lead in ((188, 0), (192, 4), (204, 0)):
                if len(head) > size + lead and head[lead] == 0x47 and head[size + lead] == 0x47:
                    self.ts_size = size
                    break
        self._box_end = 0  # offset of the next top-level box header
        self._header = bytearray()  # the part of that header seen so far
        self._open_ended = False  # a box of size 0 runs to the end

    def feed(self, data: bytes) -> None:
        start, self.total = self.total, self.total + len(data)
        if self.kind != "mp4":
            return
        while not self._open_ended and self._box_end < self.total:
            pos = self._box_end + len(self._header) - start
            need = (16 if len(self._header) >= 4 and self._header[:4] == b"\x00\x00\x00\x01" else 8) - len(self._header)
            self._header += data[pos : pos + need]
            if len(self._header) < 8 or (self._header[:4] == b"\x00\x00\x00\x01" and len(self._header) < 16):
                if pos + need > len(data):
                    return  # the header goes on in the next read
                continue
            size = struct.unpack(">I", self._header[:4])[0]
            if size == 1:
                size = struct.unpack(">Q", self._header[8:16])[0]
            if size == 0:
                self._open_ended = True
                return
            if size < len(self._header):  # not a box: leave the verdict to the demuxer
                self.kind = None
                return
            self._box_end += size
            self._header.clear()

    def complete(self) -> bool:
        if self.kind == "mpegts":
            return self.total % self.ts_size == 0
        if self.kind == "mp4":
            return self._open_ended or (not self._header and self._box_end == self.total)
        return True


class _Feed:
    """The file object the demuxer reads: counts bytes, remembers how the source ended.

    No ``seek``: the demuxer reads the stream once, front to back, as it would read a socket.
    """

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None] | None = None) -> None:
        self._read = read
        self._close = close
        self._head = b""
        self._head_used = 0
        self.framing = _Framing(None, b"")
        self.error: BaseException | None = None
        """What the source raised, if it failed (the stream then ends where it stopped)."""
        self.first_byte_at: float | None = None

    def peek(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer at the end of a short source), read again by :meth:`read`."""
        while len(self._head) < n:
            data = self._pull(n - len(self._head))
            if not data:
                break
            self._head += data
        return self._head

    def read(self, n: int) -> bytes:
        if self._head_used < len(self._head):
            data = self._head[self._head_used : self._head_used + n]
            self._head_used += len(data)
        else:
            data = self._pull(n)
        self.framing.feed(data)
        return data

    def _pull(self, n: int) -> bytes:
        if self.error is not None:
            return b""
        try:
            data = self._read(n)
        except _Aborted:
            raise
        except Exception as exc:  # a failing source ends the stream where it stopped
            self.error = exc
            return b""
        if data is None:
            data = b""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            self.error = InvalidRequestError(f"an ingest source must give bytes, not {type(data).__name__}")
            return b""
        if data and self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        return bytes(data)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def _iter_reader(chunks: Iterable[bytes]) -> Callable[[int], bytes]:
    """``read(n)`` over an iterable of chunks."""
    it = iter(chunks)
    rest = memoryview(b"")

    def read(n: int) -> bytes:
        nonlocal rest
        while not rest:
            chunk = next(it, None)
            if chunk is None:
                return b""
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise InvalidRequestError(f"an ingest source must give bytes chunks, not {type(chunk).__name__}")
            rest = memoryview(chunk).cast("B")
        out, rest = rest[:n], rest[n:]
        return bytes(out)

    return read


def _sniff(head: bytes) -> str | None:
    """The container of a stream from its first bytes: ``"mpegts"``, ``"mp4"``, ``"h264"``, ``"hevc"``;
    ``None`` to let FFmpeg probe."""
    for size, lead in ((188, 0), (192, 4), (204, 0)):
        if len(head) > size + lead and head[lead] == 0x47 and head[size + lead] == 0x47:
            return "mpegts"
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"styp", b"moov", b"moof", b"sidx", b"free", b"emsg"):
        return "mp4"
    pos = head.find(b"\x00\x00\x01")
    if 0 <= pos <= 4 and not any(head[:pos]) and pos + 5 <= len(head):
        b0, b1 = head[pos + 3], head[pos + 4]
        if b0 & 0x81 == 0 and b1 == 0x01 and (b0 >> 1) & 0x3F in (32, 33, 34, 35, 39, 19, 20, 21):
            return "hevc"  # VPS/SPS/PPS/AUD/SEI/IRAP of layer 0, temporal id 0
        if b0 & 0x80 == 0 and b0 & 0x1F in (5, 6, 7, 8, 9):
            return "h264"  # IDR/SEI/SPS/PPS/AUD
    return None


# -- packets to GOPs --------------------------------------------------------------------------------


@dataclass
class _Packet:
    data: bytes
    key: bool
    order: int
    """Presentation order key: the pts for containers, a POC-based key for raw streams."""
    dts: int
    shown: bool


@dataclass
class _Cut:
    """One GOP: its packets in decode order, the frame id each shows (-1: none of this GOP's), and
    its frames in presentation order as ``(frame id, packet)``; ``wanted`` of them are delivered."""

    packets: list[_Packet]
    frame_ids: list[int]
    frames: list[tuple[int, _Packet]]
    wanted: int


class _GopCutter:
    """Cuts a stream's packets, fed in decode order, into GOPs as soon as each is complete."""

    def __init__(self, *, reordered: bool = False) -> None:
        self._cur: list[_Packet] | None = None
        self._cur_key = 0
        self._cur_max = 0
        self._closing: tuple[_Packet, list[_Packet]] | None = None
        self._max_order: int | None = None
        self.reordered = reordered
        """The stream reorders pictures (B-frames): its headers say so, or a packet was presented before
        one decoded earlier."""
        self.next_frame = 0
        self.skipped = 0
        """Packets left out: before the first keyframe, or presented before it (not decodable)."""

    def push(self, p: _Packet) -> list[_Cut]:
        if self._max_order is not None and p.order < self._max_order:
            self.reordered = True
        self._max_order = p.order if self._max_order is None else max(self._max_order, p.order)
        if self._cur is None:
            if p.key:
                self._cur, self._cur_key, self._cur_max = [p], p.order, p.order
            else:
                self.skipped += 1
            return []
        out = []
        if self._closing is not None:
            key, lead = self._closing
            if p.order < key.order:  # a leading picture of the new keyframe: the GOP before it
                if p.order > self._cur_key:
                    lead.append(p)
                else:
                    self.skipped += 1
                return out
            out.append(self._cut(self._cur + ([key] + lead if lead else []), key))
            self._cur, self._cur_key, self._cur_max, self._closing = [key], key.order, key.order, None
        if p.key and p.order > self._cur_max:
            self._closing = (p, [])
        elif p.order < self._cur_key:
            self.skipped += 1  # presented before the GOP's keyframe: only the first one has such packets
        else:
            self._cur.append(p)
            self._cur_max = max(self._cur_max, p.order)
        return out

    def finish(self, *, truncated: bool) -> list[_Cut]:
        """The GOPs left at the end of the stream. ``truncated``: more packets were coming, so only the
        frames whose place in presentation order is certain are wanted (see :meth:`_certain`)."""
        if self._cur is None:
            return []
        tail = self._cur + (([self._closing[0]] + self._closing[1]) if self._closing else [])
        cuts = []
        if self._closing is not None:
            key, lead = self._closing
            cuts.append(self._cut(self._cur + ([key] + lead if lead else []), key))
            self._cur, self._cur_key, self._closing = [key], key.order, None
        cuts.append(self._cut(self._cur, None))
        self._cur = None
        if truncated:
            certain = self._certain(tail)
            out = []
            for cut in cuts:
                cut.wanted = 0
                while cut.wanted < len(cut.frames) and id(cut.frames[cut.wanted][1]) in certain:
                    cut.wanted += 1
                if cut.wanted:
                    out.append(cut)
                if cut.wanted < len(cut.frames):
                    self.next_frame = cut.frames[cut.wanted][0]  # the first frame not delivered
                    break
            cuts = out
        return [c for c in cuts if c.frames]

    def _certain(self, tail: list[_Packet]) -> set[int]:
        """Packets of ``tail`` (decode order) after which no missing packet can be presented.

        Without reordering every one. With it, a packet is certain once a later one (in decode order)
        is presented after it: the pictures shown before a reference picture are coded before the
        next picture shown after it, in every B-frame structure encoders make.
        """
        if not self.reordered:
            return {id(p) for p in tail}
        certain, later = set(), None
        for p in reversed(tail):
            if later is not None and later > p.order:
                certain.add(id(p))
            later = p.order if later is None else max(later, p.order)
        return certain

    def _cut(self, packets: list[_Packet], next_key: _Packet | None) -> _Cut:
        lo, hi = self._cur_key, None if next_key is None else next_key.order
        shown = sorted((p.order, i) for i, p in enumerate(packets)
                       if p.shown and p is not next_key and p.order >= lo and (hi is None or p.order < hi))
        frame_ids = [-1] * len(packets)
        frames = []
        for rank, (_, i) in enumerate(shown):
            frame_ids[i] = self.next_frame + rank
            frames.append((self.next_frame + rank, packets[i]))
        self.next_frame += len(shown)
        return _Cut(packets, frame_ids, frames, len(frames))


def _without_last(gop: _Gop) -> tuple[GopBundle, list[int]]:
    """The GOP without its last packet (decode order), and the ids of the frames that can still be
    delivered, in presentation order: up to the first that the packet showed or whose place is no
    longer certain."""
    bundle = gop.bundle
    n = len(bundle.packets) - 1
    table = bundle.packets[:n]
    order, fids = table["pts"].tolist(), table["frame_id"].tolist()
    certain, later = set(), None
    for i in range(n - 1, -1, -1):
        if not gop.reordered or (later is not None and later > order[i]):
            certain.add(fids[i])
        later = order[i] if later is None else max(later, order[i])
    kept = []
    for fid, _ in gop.frames:
        if fid not in certain:
            break
        kept.append(fid)
    if not kept:
        return bundle, []
    trimmed = GopBundle.build(
        codec=bundle.codec, width=bundle.width, height=bundle.height, pix_fmt=bundle.pix_fmt,
        bit_depth=bundle.bit_depth, color_space=bundle.color_space, color_range=bundle.color_range,
        time_base=bundle.time_base, first_frame_id=bundle.first_frame_id, frame_count=len(kept),
        source=bundle.source, stream_index=bundle.stream_index, extradata=bytes(bundle.extradata),
        packets=[bytes(bundle.packet(i)) for i in range(n)], pts=order, dts=table["dts"].tolist(),
        frame_ids=fids, flags=table["flags"].tolist())
    return trimmed, kept


# -- the stream ------------------------------------------------------------------------------------


class _Window:
    """At most ``size`` GOPs handed to the loop and not yet taken by the consumer."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._cond = threading.Condition()
        self._closed = False

    def acquire(self) -> bool:
        with self._cond:
            while self.used >= self.size and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self.used += 1
            return True

    def release(self) -> None:
        with self._cond:
            self.used -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class _Gop:
    bundle: GopBundle
    frames: list[tuple[int, float]]
    """Wanted frames in presentation order: ``(frame id, pts seconds)``."""
    tail: bool = False
    """The GOP holds the last packet of a stream without framing (see :func:`_without_last`)."""
    reordered: bool = False
    task: asyncio.Task[None] | None = None
    """Decodes the GOP part by part, appending each to ``done``."""
    done: deque[list[Frame]] = field(default_factory=deque)
    taken: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the consumer takes a part of ``done``."""
    lost: TruncatedStreamError | None = None
    """Set when the GOP was decoded without its last packet: the iteration ends with it."""


class _Run:
    """The state of one ingest: pump task, ingest thread, GOPs in flight. Referenced by its tasks
    (never the :class:`IngestStream` facade, so that dropping the facade can stop the run)."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, source: Any, kind: str, label: str,
                 fmt: str | None, spec: OutputSpec, buffer_bytes: int, gops_ahead: int) -> None:
        self.engine = engine
        self.loop = loop
        self.source = source
        self.kind = kind
        self.label = label
        self.format = fmt
        self.spec = spec
        self.window = _Window(gops_ahead)
        self.pipe = _ChunkPipe(buffer_bytes, self.loop) if kind in ("aiter", "areader") else None
        self.feed: _Feed | None = None
        self.gops: deque[_Gop] = deque()
        self.ready: deque[Frame] = deque()
        self.arrival = asyncio.Event()
        self.finished = False
        self.end_error: BaseException | None = None
        self.stopping = False
        self.closed = False
        self.done = asyncio.Event()
        self.thread_done = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None
        self.watch: asyncio.Task[None] | None = None
        self.thread: threading.Thread | None = None
        self.started_at = 0.0
        self.first_chunk_at: float | None = None
        self.first_frame_at: float | None = None
        self.frames_out = 0
        self.gops_in = 0
        self.packets = 0
        self.skipped = 0

    # -- start and stop (loop thread) ----------------------------------------------------------

    def start(self) -> None:
        self.started_at = time.perf_counter()
        if self.pipe is not None:
            self.feed = _Feed(self.pipe.read)
            self.pump = self.loop.create_task(self._pump())
        self.watch = self.loop.create_task(self._watch())
        self.engine.internal.track(self.watch)  # the engine's aclose() cancels it: the run then stops
        self.thread = threading.Thread(target=self._thread_main, name="asyncdecode-ingest", daemon=True)
        self.thread.start()

    def stop(self, error: BaseException | None = None) -> None:
        """Stop reading and decoding (idempotent); ``error`` ends the iteration if nothing else has."""
        if error is not None and self.end_error is None and (not self.finished or self.gops):
            self.end_error = error  # frames are still to come: the iteration ends with this error
        self.finished = True
        if self.stopping:
            return
        self.stopping = True
        self.window.close()
        if self.pipe is not None:
            self.pipe.abort()
        if self.pump is not None:
            self.pump.cancel()
        for gop in self.gops:
            if gop.task is not None:
                gop.task.cancel()
        self.arrival.set()

    def abandon(self) -> None:
        """The consumer dropped the stream without closing it: stop, and close in the background."""
        if self.closed or self.loop.is_closed():
            return
        self.stop()
        if self.engine.state is EngineState.OPEN:
            self.engine.internal.track(self.loop.create_task(self.close()))

    async def close(self) -> None:
        """Stop and wait for the pump and the ingest thread (the thread for ``close_timeout_s`` at most)."""
        if self.closed:
            return
        self.closed = True
        self.stop()
        tasks = [t for t in [self.pump, *(g.task for g in self.gops)] if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.gops.clear()
        self.ready.clear()
        if self.thread is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.thread_done.wait()), self.engine.config.close_timeout_s)
            except asyncio.TimeoutError:
                log.warning("asyncdecode: the ingest thread of %s is still reading its source after %.0f s",
                            self.label, self.engine.config.close_timeout_s)
            else:  # the thread signalled from its last statement: let it end before saying it has
                await asyncio.to_thread(self.thread.join, 1.0)
        self.done.set()
        if self.watch is not None and not self.watch.done():
            await asyncio.gather(self.watch, return_exceptions=True)

    async def _watch(self) -> None:
        try:
            await self.done.wait()
        except asyncio.CancelledError:  # the engine is closing
            self.stop(EngineClosedError("the engine was closed during ingest", path=self.label,
                                        device=str(self.engine.device)))
            raise

    async def _pump(self) -> None:
        assert self.pipe is not None
        source, pipe = self.source, self.pipe
        error: BaseException | None = None
        try:
            if self.kind == "areader":
                while True:
                    chunk = await source.read(_READ_SIZE)
                    if not chunk:
                        break
                    self._chunk(chunk)
                    await pipe.put(chunk)
            else:
                async for chunk in source:
                    self._chunk(chunk)
                    if len(chunk):
                        await pipe.put(chunk)
        except (_Aborted, asyncio.CancelledError):
            return
        except Exception as exc:  # the source failed: the stream ends after the bytes it gave
            error = exc
        finally:
            pipe.close(error)
            closer = getattr(source, "aclose", None)
            if self.stopping and self.kind == "aiter" and closer is not None:
                try:
                    await closer()
                except Exception:
                    pass

    def _chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise InvalidRequestError(f"an ingest source must give bytes chunks, not {type(chunk).__name__}",
                                      path=self.label)
        if self.first_chunk_at is None and len(chunk):
            self.first_chunk_at = time.perf_counter()

    # -- the ingest thread ----------------------------------------------------------------------

    def _thread_main(self) -> None:
        container = None
        try:
            if self.feed is None:
                self.feed = self._sync_feed()
            container = self._demux()
        except _Aborted:
            pass
        except BaseException as exc:  # reported in order, after the GOPs already handed over
            if not self.stopping:
                _call_soon(self.loop, self._on_end, exc)
        finally:
            if container is not None:
                container.close()
            if self.feed is not None:
                try:
                    self.feed.close()
                except Exception:
                    pass
            _call_soon(self.loop, self.thread_done.set)

    def _sync_feed(self) -> _Feed:
        if self.kind == "path":
            try:
                f = open(self.source, "rb")
            except OSError as exc:
                raise VideoOpenError(f"cannot open {self.label}: {exc.strerror or exc}", path=self.label) from exc
            return _Feed(f.read, f.close)
        if self.kind == "reader":
            return _Feed(self.source.read)
        return _Feed(_iter_reader(self.source))

    def _demux(self) -> Any:
        import av

        feed = self.feed
        assert feed is not None
        head = feed.peek(_PEEK_BYTES)
        if self.first_chunk_at is None:
            self.first_chunk_at = feed.first_byte_at
        if not head:
            self._check_source(feed)
            raise VideoOpenError(f"{self.label}: the stream is empty", path=self.label)
        fmt = self.format or _sniff(head)
        feed.framing = _Framing(fmt if fmt in ("mpegts", "mp4") else None, head)
        try:
            container = av.open(feed, mode="r", format=fmt,
                                container_options=_RAW_OPEN_OPTIONS if fmt in _RAW_FORMATS else _OPEN_OPTIONS)
        except _Aborted:
            raise
        except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
            self._check_source(feed)
            what = f"{fmt} stream" if fmt else "media stream"
            raise VideoOpenError(f"{self.label} is not a readable {what} ({exc})", path=self.label) from exc
        try:
            self._packets(container)
        except (VideoOpenError, UnsupportedStreamError):  # the stream's parameters could not be learnt
            container.close()
            self._check_source(feed)
            raise
        except BaseException:
            container.close()
            raise
        return container

    def _check_source(self, feed: _Feed) -> None:
        """Raise the source's own failure, if it failed before the stream could be opened."""
        if isinstance(feed.error, InvalidRequestError):
            raise feed.error from None
        if feed.error is not None:
            raise TruncatedStreamError(f"{self.label}: the source failed after {feed.framing.total} bytes, before "
                                       f"the stream could be opened ({feed.error!r})", path=self.label,
                                       frame_id=0) from feed.error

    def _packets(self, container: Any) -> None:
        import av

        feed = self.feed
        assert feed is not None
        stream = best_video_stream(container, self.label)
        meta = stream_info(stream, self.label)
        codec = meta["codec"]
        cc = stream.codec_context
        extradata = bytes(cc.extradata or b"")
        bsf = None
        if codec in ANNEXB_FILTERS and extradata and not _bitstream.is_annexb(extradata):
            bsf = av.bitstream.BitStreamFilterContext(ANNEXB_FILTERS[codec], stream)
        try:
            extradata = _bitstream.annexb_extradata(codec, extradata)
        except ValueError as exc:
            raise UnsupportedStreamError(f"{self.label}: {exc}", path=self.label) from exc
        raw = container.format.name in _RAW_FORMATS
        tracker = OrderTracker(codec, extradata) if raw else None
        time_base = Fraction(stream.time_base or Fraction(1, 90000))
        rate = Fraction(stream.average_rate or stream.guessed_rate or cc.framerate or _DEFAULT_RAW_RATE)

        def seconds(fid: int, p: _Packet) -> float:
            return float(fid / rate) if raw else float(p.order * time_base)

        def emit(cut: _Cut, tail: bool = False) -> None:
            datas = [p.data for p in cut.packets]
            if extradata and codec in ("h264", "hevc") and not has_parameter_sets(codec, datas[0]):
                datas[0] = extradata + datas[0]  # self-contained: the keyframe carries the parameter sets
            disposable = _bitstream.disposable_flags(codec, datas)
            flags = [(FLAG_KEY if p.key else 0) | (FLAG_DISPOSABLE if d else 0)
                     for p, d in zip(cut.packets, disposable)]
            bundle = GopBundle.build(
                codec=codec, width=meta["width"], height=meta["height"], pix_fmt=meta["pix_fmt"],
                bit_depth=meta["bit_depth"], color_space=meta["color_space"], color_range=meta["color_range"],
                time_base=time_base, first_frame_id=cut.frames[0][0], frame_count=len(cut.frames),
                source=self.label, stream_index=stream.index, extradata=extradata, packets=datas,
                pts=[p.order for p in cut.packets], dts=[p.dts for p in cut.packets],
                frame_ids=cut.frame_ids, flags=flags)
            gop = _Gop(bundle, [(fid, seconds(fid, p)) for fid, p in cut.frames[: cut.wanted]], tail=tail,
                       reordered=cutter.reordered)
            if not self.window.acquire():
                raise _Aborted
            _call_soon(self.loop, self._on_gop, gop)

        cutter = _GopCutter(reordered=bool(cc.has_b_frames))
        held: _Packet | None = None  # the last packet, pushed once the next one shows it was whole
        reason: str | None = None
        failure: BaseException | None = None
        decoded = 0
        try:
            for packet in container.demux(stream):
                if self.stopping:
                    raise _Aborted
                if packet.size == 0:
                    continue
                if packet.is_corrupt:
                    reason = "a damaged or cut packet"
                    break
                p = self._packet(packet, bsf, tracker, decoded)
                decoded += 1
                self.packets, self.skipped = decoded, cutter.skipped
                if p is None:
                    continue
                if held is not None:
                    for cut in cutter.push(held):
                        emit(cut)
                held = p
        except _Aborted:
            raise
        except av.error.FFmpegError as exc:
            reason, failure = f"unreadable data ({exc})", exc
        except ValueError as exc:  # a slice or parameter set header of a raw stream cannot be read
            reason, failure = f"an unreadable header ({exc})", exc
        if isinstance(feed.error, InvalidRequestError):
            raise feed.error
        cut_short = feed.error is not None or reason is not None and failure is None or not feed.framing.complete()
        if feed.error is not None:
            reason, failure = f"a failure of its source ({feed.error!r})", feed.error
        elif reason is None and not feed.framing.complete():
            reason = f"a cut inside {'a TS packet' if feed.framing.kind == 'mpegts' else 'an MP4 box'}"
        if held is not None and not (reason is not None and feed.framing.kind != "mp4"):
            # MP4 samples have known sizes (a short one is flagged); elsewhere a packet's end is only
            # known from the next one, so the last packet of a stream that was cut is left out.
            for cut in cutter.push(held):
                emit(cut)
        # Without framing (raw streams; TS cut at a packet boundary) a cut inside the last packet
        # shows only when it does not decode: its GOP is marked to be decoded again without it.
        unframed = reason is None and held is not None and feed.framing.kind != "mp4"
        for cut in cutter.finish(truncated=reason is not None):
            emit(cut, tail=unframed and any(p is held for p in cut.packets))
        self.packets, self.skipped = decoded, cutter.skipped
        if reason is not None:
            kind = TruncatedStreamError if cut_short else CorruptDataError
            error = kind(f"{self.label}: the stream ended after {feed.framing.total} bytes with {reason}; "
                         f"frames 0..{cutter.next_frame - 1} were delivered, the rest is lost",
                         path=self.label, frame_id=cutter.next_frame)
            error.__cause__ = failure
            raise error
        _call_soon(self.loop, self._on_end, None)

    def _packet(self, packet: Any, bsf: Any, tracker: OrderTracker | None, n: int) -> _Packet | None:
        key, pts, dts, shown = bool(packet.is_keyframe), packet.pts, packet.dts, not packet.is_discard
        if bsf is not None:  # (the filter takes the packet over: its fields are read first)
            data = b"".join(bytes(p) for p in bsf.filter(packet))
        else:
            data = bytes(packet)
        if tracker is not None:
            found = tracker.order(data)
            if found is None:
                return None  # no picture in it (parameter sets alone, say): the tracker has read them
            order, shown = found
            return _Packet(data, key, order, n, shown)
        if pts is None:
            pts = dts if dts is not None else n
        return _Packet(data, key, int(pts), int(dts if dts is not None else pts), shown)

    # -- the loop side -------------------------------------------------------------------------

    def _on_gop(self, gop: _Gop) -> None:
        if self.stopping:
            return
        self.gops_in += 1
        gop.task = self.loop.create_task(self._decode(gop))
        gop.task.add_done_callback(lambda _: self.arrival.set())
        self.engine.internal.track(gop.task)
        self.gops.append(gop)
        self.arrival.set()

    def _on_end(self, error: BaseException | None) -> None:
        if not self.finished:
            self.end_error = error
            self.finished = True
        self.arrival.set()

    async def _decode(self, gop: _Gop) -> None:
        """Decode a GOP in parts of ``_PART_FRAMES``, in order, each job asked for once the one before
        is out: the first frames come out early, and the session goes on from where the last part
        stopped (one decode per frame). (A part asked for while the one before is still queued would be
        merged into it by the decoder pool.) At most ``_PARTS_AHEAD`` parts wait for the consumer."""
        for lo in range(0, len(gop.frames), _PART_FRAMES):
            while len(gop.done) >= _PARTS_AHEAD:  # decoded frames wait for a slow consumer: bounded
                gop.taken.clear()
                await gop.taken.wait()
            part = gop.frames[lo : lo + _PART_FRAMES]
            ids = [fid for fid, _ in part]
            try:
                tensors = await self._decode_bundle(gop.bundle, ids)
            except CorruptDataError as exc:
                if not gop.tail:
                    raise
                bundle, kept = _without_last(gop)
                ids = [fid for fid in ids if fid in set(kept)]  # a prefix: ``kept`` is one of the GOP
                first_lost = ids[-1] + 1 if ids else part[0][0]
                gop.lost = TruncatedStreamError(
                    f"{self.label}: the last packet of the stream does not decode ({exc.message}): the stream "
                    f"ended inside it; frames 0..{first_lost - 1} were delivered, the rest is lost",
                    path=self.label, frame_id=first_lost)
                gop.lost.__cause__ = exc
                tensors = await self._decode_bundle(bundle, ids) if ids else {}
                part = part[: len(ids)]
            gop.done.append([Frame(tensors[fid], fid, pts) for fid, pts in part])
            self.arrival.set()
            if gop.lost is not None:
                return

    async def _decode_bundle(self, bundle: GopBundle, wanted: list[int]) -> dict[int, Any]:
        """The wanted frames of one GOP, on the engine's decoder threads (or its CPU fallback pool)."""
        internal = self.engine.internal
        frames = await internal.decode_bundle(bundle, wanted, self.spec)
        internal.count_served(len(wanted))
        return frames

    async def next(self) -> Frame:
        while True:
            if self.ready:
                frame = self.ready.popleft()
                self.frames_out += 1
                if self.first_frame_at is None:
                    self.first_frame_at = time.perf_counter()
                return frame
            if self.gops and not self.stopping:
                gop = self.gops[0]
                task = gop.task
                assert task is not None
                if gop.done:
                    self.ready.extend(gop.done.popleft())
                    gop.taken.set()
                    continue
                if task.done():
                    if task.cancelled():  # the engine is closing (its aclose cancels our jobs)
                        self.stop(EngineClosedError("the engine was closed during ingest", path=self.label,
                                                    device=str(self.engine.device)))
                    elif task.exception() is not None:
                        self.stop(task.exception())
                    else:
                        self.gops.popleft()
                        self.window.release()
                        if gop.lost is not None:
                            self.end_error = gop.lost
                            self.stop()
                    continue
            elif self.finished:
                await self.close()
                error, self.end_error = self.end_error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self.arrival.clear()
            await self.arrival.wait()

    def stats(self) -> dict[str, Any]:
        framing = self.feed.framing if self.feed is not None else None
        ttff = (self.first_frame_at - self.first_chunk_at
                if self.first_frame_at is not None and self.first_chunk_at is not None else None)
        return {
            "bytes_read": framing.total if framing is not None else 0,
            "bytes_buffered": self.pipe.buffered if self.pipe is not None else 0,
            "buffer_peak_bytes": self.pipe.peak if self.pipe is not None else 0,
            "buffer_capacity_bytes": self.pipe.capacity if self.pipe is not None else 0,
            "producer_waits": self.pipe.waits if self.pipe is not None else 0,
            "gops_ahead": self.window.size,
            "gops_in_flight": len(self.gops),
            "gops": self.gops_in,
            "packets": self.packets,
            "packets_skipped": self.skipped,
            "frames": self.frames_out,
            "first_frame_s": ttff,
        }


def _source_kind(source: Any) -> tuple[str, str]:
    """``(kind, label)``: how a source is read, and its name in messages."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return "path", path
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise InvalidRequestError("ingest takes a path, a file object or an iterable of chunks, not bytes "
                                  "(wrap a whole buffer in io.BytesIO)")
    read = getattr(source, "read", None)
    if callable(read):
        label = str(getattr(source, "name", "") or f"<{type(source).__name__}>")
        return ("areader" if inspect.iscoroutinefunction(read) else "reader"), label
    if isinstance(source, AsyncIterable):
        return "aiter", "<stream>"
    if isinstance(source, Iterable):
        return "iter", "<stream>"
    raise InvalidRequestError(f"ingest takes a path, a binary file object, or an (async) iterable of bytes "
                              f"chunks, not {type(source).__name__}")


def _format_name(fmt: str | None) -> str | None:
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


class IngestStream(AsyncIterator[Frame]):
    """The frames of a stream, in presentation order, decoded as its bytes arrive.

    Made by :meth:`Engine.ingest <asyncdecode.Engine.ingest>`; iterate it with ``async for``. Work starts
    at the first ``__anext__``. Leaving the loop early and dropping the object stops the work; use
    ``async with`` (or :meth:`aclose`) to also wait until the source is let go.
    """

    def __init__(self, engine: Engine, source: Source, *, format: str | None = None,
                 output: OutputSpec, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 gops_ahead: int = DEFAULT_GOPS_AHEAD) -> None:
        for name, value in (("buffer_bytes", buffer_bytes), ("gops_ahead", gops_ahead)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{name} must be a positive int, not {value!r}")
        kind, label = _source_kind(source)
        loop = engine.internal.open()
        self._run = _Run(engine, loop, source, kind, label, _format_name(format), output, buffer_bytes, gops_ahead)
        self._started = False

    def __aiter__(self) -> IngestStream:
        return self

    async def __anext__(self) -> Frame:
        if not self._started:
            self._started = True
            if self._run.stopping:
                raise StopAsyncIteration
            self._run.engine.internal.open()
            self._run.start()
        return await self._run.next()

    async def aclose(self) -> None:
        """Stop reading the source and decoding; wait until the ingest thread lets the source go."""
        if self._started:
            await self._run.close()
        else:
            self._run.stopping = self._run.finished = True

    async def __aenter__(self) -> IngestStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats(self) -> dict[str, Any]:
        """Counters of this stream: ``bytes_read``, ``bytes_buffered`` / ``buffer_peak_bytes`` /
        ``buffer_capacity_bytes`` (async sources), ``producer_waits`` (times the source was held back),
        ``gops_in_flight``, ``gops``, ``packets``, ``frames``, ``first_frame_s`` (first chunk to first
        frame)."""
        return self._run.stats()

    def __del__(self) -> None:
        run = getattr(self, "_run", None)
        if run is not None and getattr(self, "_started", False) and not run.closed:
            _call_soon(run.loop, run.abandon)

    def __repr__(self) -> str:
        run = self._run
        return f"<IngestStream {run.label} {run.format or 'auto'}, {run.frames_out} frames>"


def ingest(engine: Engine, source: Source, *, format: str | None = None, output: OutputSpec | None = None,
           buffer_bytes: int | None = None, gops_ahead: int | None = None) -> IngestStream:
    """:meth:`Engine.ingest`: validates the arguments now, starts at the first ``__anext__``."""
    return IngestStream(engine, source, format=format, output=engine.internal.output_spec(output),
                        buffer_bytes=DEFAULT_BUFFER_BYTES if buffer_bytes is None else buffer_bytes,
                        gops_ahead=DEFAULT_GOPS_AHEAD if gops_ahead is None else gops_ahead)

