"""Streaming ingestion: frames of a stream as it arrives (:meth:`Engine.ingest <asyncdecode.Engine.ingest>`).

The path of a chunk::

    async source ──pump task──> ChunkPipe (byte-bounded; the pump awaits when full: backpressure)
        ──read() in the ingest thread──> PyAV demuxer ──packets──> GopCutter ──BundledGop per GOP──>
        event loop (at most ``gops_ahead`` GOPs not yet handed to the consumer: the ingest thread waits)
        ──decode job per part of a GOP──> the engine's decoder threads ──> Frame records, in order

Sync sources (a path, a binary file object, an iterable of ``bytes``) are read by the ingest thread
itself, so their backpressure is the thread not reading while the GOP window is full.

The stages, each in a module of its own, imported one way (this module uses the others):

- :mod:`._ingest_source`: bytes in. A source to a feed the demuxer reads; the pump and its pipe.
- :mod:`._ingest_demux`: container parsing, in the ingest thread. A feed to GOP bundles, and the
  verdict on how the stream ended (``TruncatedStreamError`` when it stopped inside a packet).
- :mod:`._ingest_gops`: GOP assembly. Packets in decode order cut into GOPs, frame ids as
  :func:`~asyncdecode.media.build_index` numbers them for a file.
- here: the run. :class:`_Reader` (pump task and ingest thread: source to GOPs on the loop),
  :class:`_Delivery` (GOPs decoding on the engine, their frames to the consumer in order, and the
  error the stream ends with), :class:`_Run` (start, stop, close, ``stats()``) and the public
  :class:`IngestStream`. The engine is used through :class:`~asyncdecode._core.EngineLike` only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Union

from ._core import EngineState
from ._frame import Frame
from ._ingest_demux import Demuxer, check_source, format_name, open_container
from ._ingest_gops import BundledGop, without_last
from ._ingest_source import Aborted, ChunkPipe, Feed, call_soon, open_feed, pump, source_kind
from ._output import OutputSpec
from .errors import (CorruptDataError, EngineClosedError, InvalidRequestError, TruncatedStreamError,
                     UnsupportedStreamError, VideoOpenError)
from .gop import GopBundle

if TYPE_CHECKING:
    from ._core import EngineLike as Engine

__all__ = ["DEFAULT_BUFFER_BYTES", "DEFAULT_GOPS_AHEAD", "IngestStream", "Source"]

log = logging.getLogger("asyncdecode")

DEFAULT_BUFFER_BYTES = 4 << 20
"""Bytes of an async source buffered ahead of the demuxer, at most (plus one chunk being split)."""
DEFAULT_GOPS_AHEAD = 4
"""GOPs demuxed (and decoding) ahead of the consumer, at most."""
_PART_FRAMES = 8  # frames of a GOP asked for per decode job
_PARTS_AHEAD = 3  # decoded parts of a GOP waiting for the consumer, at most (fewer starves the threads)

Source = Union[str, "os.PathLike[str]", Any, AsyncIterable[bytes], Iterable[bytes]]
"""A path, a binary file object (``read(n)``; sync, or async like :class:`asyncio.StreamReader`), an
async iterable of ``bytes`` chunks, or an iterable of ``bytes`` chunks."""

_DecodeBundle = Callable[[GopBundle, list[int]], Awaitable[dict[int, Any]]]
"""Decodes the wanted frames (ids) of a GOP bundle: ``{frame id: tensor}``."""


class _Window:
    """At most ``size`` GOPs handed to the loop and not yet taken by the consumer.

    The ingest thread takes a place before it hands a GOP over (:meth:`acquire`, waiting while there
    is none, ``False`` once closed); the loop gives it back when the consumer has taken the GOP's last
    frame (:meth:`release`).
    """

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


# -- the reading side: source to GOPs --------------------------------------------------------------


class _Reader:
    """The reading side of one ingest: the pump task (async sources) and the ingest thread.

    In: the source, read as ``kind`` says (:func:`~asyncdecode._ingest_source.source_kind`), and its
    format if the caller named one. Out, on the loop: each GOP of the stream as a
    :class:`~asyncdecode._ingest_gops.BundledGop`, handed to ``on_gop`` in stream order once the window
    has room for it, then one ``on_end``: ``None`` at a clean end, else the error the stream ended
    with. After :meth:`halt` the pump and the thread stop at their next step and report no error.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, source: Any, kind: str, label: str, fmt: str | None,
                 window: _Window, buffer_bytes: int) -> None:
        self.loop = loop
        self.source = source
        self.kind = kind
        self.label = label
        self.format = fmt
        self.window = window
        self.pipe = ChunkPipe(buffer_bytes, loop) if kind in ("aiter", "areader") else None
        self.feed: Feed | None = None
        self.demuxer: Demuxer | None = None
        self.pump: asyncio.Task[None] | None = None
        self.thread: threading.Thread | None = None
        self.thread_done = asyncio.Event()
        self.stopping = False
        self._on_gop: Callable[[BundledGop], None] = lambda gop: None
        self._on_end: Callable[[BaseException | None], None] = lambda error: None

    @property
    def first_chunk_at(self) -> float | None:
        """``time.perf_counter()`` when the source gave its first bytes."""
        if self.pipe is not None and self.pipe.first_chunk_at is not None:
            return self.pipe.first_chunk_at
        return self.feed.first_byte_at if self.feed is not None else None

    def start(self, on_gop: Callable[[BundledGop], None], on_end: Callable[[BaseException | None], None]) -> None:
        self._on_gop, self._on_end = on_gop, on_end
        if self.pipe is not None:
            self.feed = Feed(self.pipe.read)
            self.pump = self.loop.create_task(pump(self.source, self.kind, self.pipe, label=self.label,
                                                   stopping=lambda: self.stopping))
        self.thread = threading.Thread(target=self._main, name="asyncdecode-ingest", daemon=True)
        self.thread.start()

    def halt(self) -> None:
        """Stop reading (loop thread): the window closes, the pump stops."""
        self.stopping = True
        self.window.close()
        if self.pipe is not None:
            self.pipe.abort()
        if self.pump is not None:
            self.pump.cancel()

    async def join(self, timeout_s: float) -> None:
        """Wait until the ingest thread has let the source go, ``timeout_s`` at most."""
        if self.thread is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.thread_done.wait()), timeout_s)
        except asyncio.TimeoutError:
            log.warning("asyncdecode: the ingest thread of %s is still reading its source after %.0f s",
                        self.label, timeout_s)
        else:  # the thread signalled from its last statement: let it end before saying it has
            await asyncio.to_thread(self.thread.join, 1.0)

    # -- the ingest thread ----------------------------------------------------------------------

    def _main(self) -> None:
        container = None
        try:
            if self.feed is None:
                self.feed = open_feed(self.source, self.kind, self.label)
            container = self._demux(self.feed)
        except Aborted:
            pass
        except BaseException as exc:  # reported in order, after the GOPs already handed over
            if not self.stopping:
                call_soon(self.loop, self._on_end, exc)
        finally:
            if container is not None:
                container.close()
            if self.feed is not None:
                try:
                    self.feed.close()
                except Exception:
                    pass
            call_soon(self.loop, self.thread_done.set)

    def _demux(self, feed: Feed) -> Any:
        """Read the stream to its end, GOPs to the loop; the container, still open."""
        container = open_container(feed, self.format, self.label)
        try:
            self.demuxer = Demuxer(container, feed, self.label, stopping=lambda: self.stopping)
            self.demuxer.run(self._emit)
        except (VideoOpenError, UnsupportedStreamError):  # the stream's parameters could not be learnt
            container.close()
            check_source(feed, self.label)
            raise
        except BaseException:
            container.close()
            raise
        call_soon(self.loop, self._on_end, None)
        return container

    def _emit(self, gop: BundledGop) -> None:
        if not self.window.acquire():
            raise Aborted
        call_soon(self.loop, self._on_gop, gop)


# -- the delivery: GOPs to frames, in order ---------------------------------------------------------


class _Gop:
    """One GOP on the loop, decoded part by part while the consumer takes the parts before.

    In: a :class:`~asyncdecode._ingest_gops.BundledGop` from the ingest thread. Out (:meth:`decode`,
    run as ``task``): its wanted frames in presentation order, in lists of up to ``_PART_FRAMES``
    appended to ``done``; ``lost`` if the stream ended inside its last packet.
    """

    def __init__(self, cut: BundledGop) -> None:
        self.cut = cut
        self.task: asyncio.Task[None] | None = None
        """Runs :meth:`decode`."""
        self.done: deque[list[Frame]] = deque()
        self.taken = asyncio.Event()
        """Set when the consumer takes a part of ``done``."""
        self.lost: TruncatedStreamError | None = None
        """Set when the GOP was decoded without its last packet: the iteration ends with it."""

    async def decode(self, decode_bundle: _DecodeBundle, label: str, arrival: asyncio.Event) -> None:
        """Decode the GOP in parts of ``_PART_FRAMES``, in order, each job asked for once the one before
        is out: the first frames come out early, and the session goes on from where the last part
        stopped (one decode per frame). (A part asked for while the one before is still queued would be
        merged into it by the decoder pool.) At most ``_PARTS_AHEAD`` parts wait for the consumer;
        ``arrival`` is set as each is done."""
        frames = self.cut.frames
        for lo in range(0, len(frames), _PART_FRAMES):
            while len(self.done) >= _PARTS_AHEAD:  # decoded frames wait for a slow consumer: bounded
                self.taken.clear()
                await self.taken.wait()
            self.done.append(await self._part(frames[lo : lo + _PART_FRAMES], decode_bundle, label))
            arrival.set()
            if self.lost is not None:
                return

    async def _part(self, part: list[tuple[int, float]], decode_bundle: _DecodeBundle, label: str) -> list[Frame]:
        """The frames of one part. If the GOP holds the last packet of a stream without framing and does
        not decode, the stream ended inside that packet: the frames still certain without it, and
        ``lost`` set."""
        ids = [fid for fid, _ in part]
        try:
            tensors = await decode_bundle(self.cut.bundle, ids)
        except CorruptDataError as exc:
            if not self.cut.tail:
                raise
            bundle, kept = without_last(self.cut)
            ids = [fid for fid in ids if fid in set(kept)]  # a prefix: ``kept`` is one of the GOP
            first_lost = ids[-1] + 1 if ids else part[0][0]
            self.lost = TruncatedStreamError(
                f"{label}: the last packet of the stream does not decode ({exc.message}): the stream "
                f"ended inside it; frames 0..{first_lost - 1} were delivered, the rest is lost",
                path=label, frame_id=first_lost)
            self.lost.__cause__ = exc
            tensors = await decode_bundle(bundle, ids) if ids else {}
            part = part[: len(ids)]
        return [Frame(tensors[fid], fid, pts) for fid, pts in part]


class _Delivery:
    """The GOPs in flight, in stream order, and their frames for the consumer (loop thread).

    In: GOPs from the reading side (:meth:`add`, in stream order), each set decoding on the engine's
    decoder threads at once, and the end of the stream (:meth:`end`). Out: their frames, in
    presentation order, from :meth:`next`, which gives ``None`` once there are no more; ``end_error``
    then says how the stream ended (``None``: well). A GOP leaves the window when its last frame is
    taken, so that the ingest thread can hand over the next. :meth:`stop` ends it all early.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, label: str, spec: OutputSpec,
                 window: _Window, *, halt: Callable[[], None]) -> None:
        self.engine = engine
        self.loop = loop
        self.label = label
        self.spec = spec
        self.window = window
        self._halt = halt
        self.gops: deque[_Gop] = deque()
        self.ready: deque[Frame] = deque()
        self.arrival = asyncio.Event()
        """Set when anything the consumer may be waiting for happens."""
        self.finished = False
        """No more GOPs will come."""
        self.end_error: BaseException | None = None
        self.stopping = False
        self.gops_in = 0
        self.frames_out = 0
        self.first_frame_at: float | None = None

    def add(self, cut: BundledGop) -> None:
        if self.stopping:
            return
        self.gops_in += 1
        gop = _Gop(cut)
        gop.task = self.loop.create_task(gop.decode(self._decode_bundle, self.label, self.arrival))
        gop.task.add_done_callback(lambda _: self.arrival.set())
        self.engine.internal.track(gop.task)
        self.gops.append(gop)
        self.arrival.set()

    def end(self, error: BaseException | None) -> None:
        if not self.finished:
            self.end_error = error
            self.finished = True
        self.arrival.set()

    def stop(self, error: BaseException | None = None) -> None:
        """Stop reading and decoding (idempotent); ``error`` ends the iteration if nothing else has."""
        if error is not None and self.end_error is None and (not self.finished or self.gops):
            self.end_error = error  # frames are still to come: the iteration ends with this error
        self.finished = True
        if self.stopping:
            return
        self.stopping = True
        self._halt()
        for gop in self.gops:
            if gop.task is not None:
                gop.task.cancel()
        self.arrival.set()

    async def next(self) -> Frame | None:
        """The next frame in presentation order; ``None`` once the stream is over (or stopped)."""
        while True:
            if self.ready:
                frame = self.ready.popleft()
                self.frames_out += 1
                if self.first_frame_at is None:
                    self.first_frame_at = time.perf_counter()
                return frame
            if self.gops and not self.stopping:
                gop = self.gops[0]
                assert gop.task is not None
                if gop.done:
                    self.ready.extend(gop.done.popleft())
                    gop.taken.set()
                    continue
                if gop.task.done():
                    self._settle(gop, gop.task)
                    continue
            elif self.finished:
                return None
            self.arrival.clear()
            await self.arrival.wait()

    def _settle(self, gop: _Gop, task: asyncio.Task[None]) -> None:
        """The first GOP in flight has no part left and its task has ended: on to the next GOP, or stop
        with the task's error (or the GOP's ``lost``)."""
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

    def clear(self) -> None:
        """Forget the GOPs in flight and the frames not taken (once their tasks have ended)."""
        self.gops.clear()
        self.ready.clear()

    async def _decode_bundle(self, bundle: GopBundle, wanted: list[int]) -> dict[int, Any]:
        """The wanted frames of one GOP, on the engine's decoder threads (or its CPU fallback pool)."""
        internal = self.engine.internal
        frames = await internal.decode_bundle(bundle, wanted, self.spec)
        internal.count_served(len(wanted))
        return frames


# -- the run: lifetime and counters ---------------------------------------------------------------


class _Run:
    """One ingest, from its first ``__anext__`` to its close: the reading side hands its GOPs to the
    delivery; the run starts, stops and waits for both, and counts. Referenced by its tasks (never the
    :class:`IngestStream` facade, so that dropping the facade can stop the run).

    In: the source and the ingest's settings. Out: frames from :meth:`next`, counters from :meth:`stats`.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, source: Any, kind: str, label: str,
                 fmt: str | None, spec: OutputSpec, buffer_bytes: int, gops_ahead: int) -> None:
        self.engine = engine
        self.loop = loop
        self.label = label
        self.format = fmt
        self.window = _Window(gops_ahead)
        self.reader = _Reader(loop, source, kind, label, fmt, self.window, buffer_bytes)
        self.delivery = _Delivery(engine, loop, label, spec, self.window, halt=self.reader.halt)
        self.closed = False
        self.done = asyncio.Event()
        self.watch: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        return self.delivery.stopping

    @property
    def frames_out(self) -> int:
        return self.delivery.frames_out

    def start(self) -> None:
        self.watch = self.loop.create_task(self._watch())
        self.engine.internal.track(self.watch)  # the engine's aclose() cancels it: the run then stops
        self.reader.start(self.delivery.add, self.delivery.end)

    def close_unstarted(self) -> None:
        """The stream is closed before its first ``__anext__``: its iteration is over, nothing ran."""
        self.delivery.stopping = self.delivery.finished = True

    def stop(self, error: BaseException | None = None) -> None:
        """Stop reading and decoding (idempotent); ``error`` ends the iteration if nothing else has."""
        self.delivery.stop(error)

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
        tasks = [t for t in [self.reader.pump, *(g.task for g in self.delivery.gops)] if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.delivery.clear()
        await self.reader.join(self.engine.config.close_timeout_s)
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

    async def next(self) -> Frame:
        frame = await self.delivery.next()
        if frame is not None:
            return frame
        await self.close()
        error, self.delivery.end_error = self.delivery.end_error, None
        if error is not None:
            raise error
        raise StopAsyncIteration

    def stats(self) -> dict[str, Any]:
        reader, delivery, pipe = self.reader, self.delivery, self.reader.pipe
        framing = reader.feed.framing if reader.feed is not None else None
        first_chunk_at = reader.first_chunk_at
        ttff = (delivery.first_frame_at - first_chunk_at
                if delivery.first_frame_at is not None and first_chunk_at is not None else None)
        return {
            "bytes_read": framing.total if framing is not None else 0,
            "bytes_buffered": pipe.buffered if pipe is not None else 0,
            "buffer_peak_bytes": pipe.peak if pipe is not None else 0,
            "buffer_capacity_bytes": pipe.capacity if pipe is not None else 0,
            "producer_waits": pipe.waits if pipe is not None else 0,
            "gops_ahead": self.window.size,
            "gops_in_flight": len(delivery.gops),
            "gops": delivery.gops_in,
            "packets": reader.demuxer.packets if reader.demuxer is not None else 0,
            "packets_skipped": reader.demuxer.skipped if reader.demuxer is not None else 0,
            "frames": delivery.frames_out,
            "first_frame_s": ttff,
        }


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
        kind, label = source_kind(source)
        loop = engine.internal.open()
        self._run = _Run(engine, loop, source, kind, label, format_name(format), output, buffer_bytes, gops_ahead)
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
            self._run.close_unstarted()

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
            call_soon(run.loop, run.abandon)

    def __repr__(self) -> str:
        run = self._run
        return f"<IngestStream {run.label} {run.format or 'auto'}, {run.frames_out} frames>"


def ingest(engine: Engine, source: Source, *, format: str | None = None, output: OutputSpec | None = None,
           buffer_bytes: int | None = None, gops_ahead: int | None = None) -> IngestStream:
    """:meth:`Engine.ingest`: validates the arguments now, starts at the first ``__anext__``."""
    return IngestStream(engine, source, format=format, output=engine.internal.output_spec(output),
                        buffer_bytes=DEFAULT_BUFFER_BYTES if buffer_bytes is None else buffer_bytes,
                        gops_ahead=DEFAULT_GOPS_AHEAD if gops_ahead is None else gops_ahead)

