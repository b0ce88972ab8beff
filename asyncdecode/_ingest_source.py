"""Bytes in, for streaming ingestion (:mod:`._ingest`): a source, read as the demuxer asks for it.

In: a source as :meth:`Engine.ingest <asyncdecode.Engine.ingest>` takes it (a path, a binary file
object, sync or async, an iterable or async iterable of ``bytes`` chunks). Out: a :class:`Feed`, the
file object the demuxer reads in the ingest thread, front to back, once; it counts the bytes, tells
whether they stopped inside a container unit (:class:`Framing`) and keeps what the source raised.

An async source is copied by :func:`pump`, a task on the event loop, into a :class:`ChunkPipe`
(byte-bounded: the pump awaits while it is full, which is the source's backpressure) that the
ingest thread reads. A sync source is read by the ingest thread itself (:func:`open_feed`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from .errors import InvalidRequestError, VideoOpenError

__all__ = ["Aborted", "ChunkPipe", "Feed", "Framing", "call_soon", "open_feed", "pump", "sniff", "source_kind"]

_READ_SIZE = 64 << 10  # bytes asked of an async reader per call


class Aborted(Exception):
    """The consumer went away: the ingest thread and the pump stop."""


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``loop.call_soon_threadsafe`` from a worker thread, a no-op once the loop is closed."""
    if loop.is_closed():
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # closed between the check and the call
        pass


class ChunkPipe:
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
        self.first_chunk_at: float | None = None
        """``time.perf_counter()`` when the first bytes came in."""

    async def put(self, chunk: bytes | bytearray | memoryview) -> None:
        if self.first_chunk_at is None and len(chunk):
            self.first_chunk_at = time.perf_counter()
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)  # a producer may reuse its buffer once the chunk is handed over
        view = memoryview(chunk).cast("B")
        for lo in range(0, len(view), self.capacity):
            piece = view[lo : lo + self.capacity]
            while True:
                with self._cond:
                    if self._aborted:
                        raise Aborted
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
        call_soon(self._loop, self._space.set)

    def read(self, n: int) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
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
            call_soon(self._loop, self._space.set)
        return b"".join(parts)


class Framing:
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


class Feed:
    """The file object the demuxer reads: counts bytes, remembers how the source ended.

    No ``seek``: the demuxer reads the stream once, front to back, as it would read a socket.
    """

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None] | None = None) -> None:
        self._read = read
        self._close = close
        self._head = b""
        self._head_used = 0
        self.framing = Framing(None, b"")
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
        except Aborted:
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


def sniff(head: bytes) -> str | None:
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



def source_kind(source: Any) -> tuple[str, str]:
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


def open_feed(source: Any, kind: str, label: str) -> Feed:
    """The feed of a sync source (``kind`` from :func:`source_kind`: ``"path"``, ``"reader"`` or
    ``"iter"``), read by the ingest thread itself. A path is opened here (``VideoOpenError`` if it
    cannot be) and closed with the feed."""
    if kind == "path":
        try:
            f = open(source, "rb")
        except OSError as exc:
            raise VideoOpenError(f"cannot open {label}: {exc.strerror or exc}", path=label) from exc
        return Feed(f.read, f.close)
    if kind == "reader":
        return Feed(source.read)
    return Feed(_iter_reader(source))


async def pump(source: Any, kind: str, pipe: ChunkPipe, *, label: str, stopping: Callable[[], bool]) -> None:
    """Copy an async source into ``pipe`` (a task on the event loop).

    In: an async reader (``kind == "areader"``, read ``_READ_SIZE`` bytes at a time) or an async
    iterable of chunks (``"aiter"``). Out: its chunks, in ``pipe``, then ``pipe.close()`` at its end,
    or ``pipe.close(error)`` with what it raised (a chunk that is not bytes included), so that the
    stream ends after the bytes it gave. Returns quietly when the consumer goes away (the pipe is
    aborted or the task cancelled); an async generator is then closed if ``stopping()``.
    """
    error: BaseException | None = None
    try:
        if kind == "areader":
            while True:
                chunk = await source.read(_READ_SIZE)
                if not chunk:
                    break
                _check_chunk(chunk, label)
                await pipe.put(chunk)
        else:
            async for chunk in source:
                _check_chunk(chunk, label)
                if len(chunk):
                    await pipe.put(chunk)
    except (Aborted, asyncio.CancelledError):
        return
    except Exception as exc:  # the source failed: the stream ends after the bytes it gave
        error = exc
    finally:
        pipe.close(error)
        closer = getattr(source, "aclose", None)
        if stopping() and kind == "aiter" and closer is not None:
            try:
                await closer()
            except Exception:
                pass


def _check_chunk(chunk: Any, label: str) -> None:
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise InvalidRequestError(f"an ingest source must give bytes chunks, not {type(chunk).__name__}",
                                  path=label)
