"""The engine: the public façade over the request path's stages.

A request goes index (:mod:`._index`) -> plan (:mod:`._plan`: ids checked and grouped by GOP) ->
fetch (:mod:`._fetch`: the GOP's packets, cached, demuxed or read from a store) -> queue and decode
(:mod:`._decode`, :mod:`._workers`: decoder threads, one NVDEC session or FFmpeg decoder each, and a
CPU fallback pool) -> the frames, on the device, in request order. The frames of one request (the
stages in turn, the line of calls for one GOP, the frame cache, GOP read-ahead) come from
:mod:`._request`; ``stats()`` is read by :mod:`._stats`. Here: the engine's configuration, its
lifetime (open on first use, ``aclose()``: threads, sessions, caches), its requests in flight, and
the public methods; the add-ons (ingestion, time access, compat) come in through ``Engine.internal``
(:mod:`._core`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

import torch

from ._backends import Backend, make_backend
from ._backends.base import NVDEC_LIBRARIES
from ._core import EngineState
from ._decode import Decoders
from ._fetch import Gops
from ._index import Indexes
from ._once import Once
from ._output import OutputSpec
from . import _plan, _readahead, _trim
from ._request import RequestPath
from ._stats import Counters, Stats
from ._workers import DecoderPool
from .errors import EngineClosedError, InvalidRequestError
from .gop import GopBundle

__all__ = ["Engine", "EngineConfig", "EngineState"]

log = logging.getLogger("asyncdecode")

_ENGINES = itertools.count()
"""Numbers the engines of the process (their demux threads' names)."""

PathLike = Union[str, "os.PathLike[str]"]
Request = tuple[Union[PathLike, Sequence[PathLike]], Sequence[int]]
T = TypeVar("T")

_MiB = 1 << 20


@dataclass(frozen=True)
class EngineConfig:
    """Tuning of an :class:`Engine`. Every bound the engine keeps is named here."""

    decoder_threads: int | None = None
    """Decoder threads, one backend session each; ``None``: the backend's default (CPU: one per core)."""
    queue_size: int | None = None
    """Decode jobs queued or in progress at most; ``None``: 4 per decoder thread."""
    gop_cache_bytes: int = 256 * _MiB
    """Bytes of GOP bundles kept in the LRU cache (encoded data, not decoded frames)."""
    frame_cache_bytes: int = 0
    """Bytes of decoded frames kept in a cache on the engine's device (GPU memory on NVDEC), in the
    output format asked for; ``0`` (default): none. A segmented LRU: frames hit once are protected
    (up to 80% of the bytes) from frames that come once each, such as a new epoch's. Wanted frames
    are kept while the files being read fit, else while at least half of those kept are asked for
    again; frames decoded on the way to them ("extras") only while they pay: while enough of them are
    hit before they are evicted (see :class:`~asyncdecode._cache.FrameCache`), and never by a job
    whose frames would not fit. A hit costs no decode. For training that reads a set for many epochs,
    or samples frames near each other. A 1600x900 RGB uint8 frame takes 4.3 MB."""
    demux_workers: int = 2
    """Threads that index files and demux GOPs."""
    max_open_files: int = 64
    """Files kept open for demuxing, at most (least recently used are closed)."""
    index_cache_files: int = 4096
    """Files whose index (GOP table) is kept, at most."""
    output: OutputSpec = field(default_factory=OutputSpec)
    """Default output format; a call's ``output=`` overrides it."""
    close_timeout_s: float = 30.0
    """How long ``aclose()`` waits, at most, for decoder threads to finish their current GOP and demux
    threads their current read (a thread still busy then is left to finish, logged)."""
    unsupported: Literal["cpu", "raise"] = "cpu"
    """A stream the device's decoder cannot handle (H.264 High 10, 4:2:2 on NVDEC ...): decode it on
    the CPU and move the frames to the device (``"cpu"``), or fail with ``UnsupportedStreamError``."""
    nvdec_library: Literal["libnvcuvid", "PyNvVideoCodec"] | None = None
    """Which library drives NVDEC: the driver's ``libnvcuvid`` directly (least host CPU per frame) or
    NVIDIA's PyNvVideoCodec; ``None`` (default): ``$ASYNCDECODE_NVDEC_LIBRARY`` if set, else the first
    of the two that loads. ``stats()["decoder_library"]`` says which one an engine uses."""
    cpu_fallback_threads: int = 2
    """Decoder threads of the CPU pool that serves such streams (started on first use)."""
    store_reads: int = 16
    """Bundle files read at once from a :class:`~asyncdecode.GopStore` (asynchronous reads)."""
    store_fallback: Literal["raise", "demux"] = "raise"
    """A video the store lacks, a bundle file missing, unreadable or damaged, or a video changed since
    the store was built: fail the request (``"raise"``, ``CorruptDataError`` naming the file), or demux
    the video itself when it exists (``"demux"``, logged)."""

    def __post_init__(self) -> None:
        for name in ("decoder_threads", "queue_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidRequestError(f"EngineConfig.{name} must be a positive int or None, not {value!r}")
        for name in ("demux_workers", "max_open_files", "index_cache_files"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"EngineConfig.{name} must be a positive int, not {value!r}")
        for name in ("gop_cache_bytes", "frame_cache_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidRequestError(f"EngineConfig.{name} must be an int >= 0, not {value!r}")
        if not isinstance(self.output, OutputSpec):
            raise InvalidRequestError("EngineConfig.output must be an OutputSpec")
        if not isinstance(self.store_reads, int) or self.store_reads < 1:
            raise InvalidRequestError(f"EngineConfig.store_reads must be a positive int, not {self.store_reads!r}")
        if self.store_fallback not in ("raise", "demux"):
            raise InvalidRequestError(f"EngineConfig.store_fallback must be 'raise' or 'demux', not {self.store_fallback!r}")
        if self.unsupported not in ("cpu", "raise"):
            raise InvalidRequestError(f"EngineConfig.unsupported must be 'cpu' or 'raise', not {self.unsupported!r}")
        if self.nvdec_library is not None and self.nvdec_library not in NVDEC_LIBRARIES:
            raise InvalidRequestError(f"EngineConfig.nvdec_library must be None, {' or '.join(map(repr, NVDEC_LIBRARIES))}"
                                      f", not {self.nvdec_library!r}")


class Engine:
    """Decode frames by index from many video files, asynchronously.

    Example:
        >>> async with Engine(device="cpu") as eng:
        ...     frames = await eng.decode(["cam0.mp4", "cam1.mp4"], [17, 40])
        >>> frames[0].shape, frames[0].dtype
        (torch.Size([900, 1600, 3]), torch.uint8)

    Args:
        device: ``"auto"`` (NVDEC on ``cuda:0`` when it works, else the CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        config: Bounds and defaults; see :class:`EngineConfig`.
        output: Shortcut for ``config.output``.
        gop_store: A built :class:`~asyncdecode.GopStore`: GOPs are read from its bundle files
            (asynchronously, zero-copy) and videos are planned from its index; no video is opened
            (see ``EngineConfig.store_fallback``).

    Raises:
        BackendUnavailableError: the device asked for cannot be used here.
    """

    def __init__(self, device: str | torch.device = "auto", *, config: EngineConfig | None = None,
                 output: OutputSpec | None = None, gop_store: Any = None) -> None:
        self.config = config or EngineConfig()
        self.output = output or self.config.output
        if not isinstance(self.output, OutputSpec):
            raise InvalidRequestError("output must be an OutputSpec")
        self.backend: Backend = make_backend(device, nvdec_library=self.config.nvdec_library)
        self.device = self.backend.device
        self._state = EngineState.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._decoders = Decoders(self.backend, self.config)  # the decode stage: device pool and CPU fallback
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._demux_prefix = f"asyncdecode-demux-{next(_ENGINES)}"  # this engine's demux threads (joined on close)
        self._n = Counters()
        self._once = Once()  # index, demux and store reads in flight, one per key
        # The request path's stages: index -> plan (_plan) -> fetch -> queue and decode, joined by _request.
        self._indexes = Indexes(max_files=self.config.index_cache_files, store=gop_store,
                                store_fallback=self.config.store_fallback, device=str(self.device), once=self._once,
                                counters=self._n)
        self._gops = Gops(self.config, indexes=self._indexes, device=str(self.device), once=self._once,
                          counters=self._n)
        self._request_path = RequestPath(self._indexes, self._gops, self._decoders, counters=self._n,
                                         frame_cache_bytes=self.config.frame_cache_bytes, device=self.device)
        self._frames = self._request_path.frames  # the frame cache
        self._turns = self._request_path.turns  # the line of calls for each GOP
        self._requests: set[asyncio.Future[Any]] = set()
        self._stats = Stats(self.backend, self._n, self._requests, indexes=self._indexes, gops=self._gops,
                            decoders=self._decoders, frames=self._frames)
        self._closed: asyncio.Event | None = None  # made on the engine's loop when it opens
        self.internal = _Internal(self)
        """The engine's API for its add-ons (streaming ingestion, time access, compat): see
        ``asyncdecode._core.EngineInternal``. Not a user API."""

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def state(self) -> EngineState:
        return self._state

    async def __aenter__(self) -> Engine:
        self._ensure_open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _ensure_open(self) -> asyncio.AbstractEventLoop:
        if self._state is EngineState.OPEN:
            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                raise InvalidRequestError("this Engine belongs to another event loop")
            return loop
        if self._state is not EngineState.NEW:
            raise EngineClosedError(f"the engine is {self._state.value}", device=str(self.device))
        loop = asyncio.get_running_loop()
        threads = self.config.decoder_threads or self.backend.default_sessions()
        capacity = self.config.queue_size or 4 * threads
        self._loop = loop
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.demux_workers, thread_name_prefix=self._demux_prefix)
        self._once.bind(loop, self._executor)
        self.backend.opening(threads)
        self._decoders.open(loop, threads=threads, capacity=capacity, on_loop_closed=self._loop_gone)
        self._request_path.open(loop, threads)
        self._closed = asyncio.Event()
        self._gops.open()
        self._state = EngineState.OPEN
        log.info("asyncdecode engine open: backend %s (%s) on %s, %d decoder threads, queue %d",
                 self.backend.name, self.backend.library, self.device, threads, capacity)
        return loop

    async def aclose(self) -> None:
        """Cancel requests in flight, stop decoder threads, free sessions and caches. Idempotent."""
        if self._state is EngineState.NEW:
            self._state = EngineState.CLOSED
            self._gops.readers.close()
            return
        if self._state is EngineState.CLOSED:
            return
        if self._state is EngineState.CLOSING:
            assert self._closed is not None
            await self._closed.wait()
            return
        self._state = EngineState.CLOSING
        deadline = time.monotonic() + self.config.close_timeout_s
        try:
            # A loop that closed first (asyncio.run ended) took its tasks with it: nothing to cancel or wait for.
            if self._loop is not None and not self._loop.is_closed():
                requests = list(self._requests)
                for task in requests:
                    task.cancel()
                if requests:
                    await asyncio.gather(*requests, return_exceptions=True)
                await self._request_path.close()
                inflight = self._once.pending()
                if inflight:  # index, demux and store reads (their outcome is retrieved where they are made)
                    _, late = await asyncio.wait(inflight, timeout=self.config.close_timeout_s)
                    for fut in late:  # a read that hangs: its thread is left to it
                        fut.cancel()
            assert self._decoders.pool is not None and self._executor is not None
            pools = self._decoders.pools()
            await asyncio.shield(asyncio.to_thread(self._shutdown_threads, pools, self._executor, deadline))
        finally:
            self._gops.close()
            self._frames.clear()
            self._indexes.clear()
            self._state = EngineState.CLOSED
            assert self._closed is not None
            self._closed.set()

    def _shutdown_threads(self, pools: list[DecoderPool], executor: concurrent.futures.ThreadPoolExecutor,
                          deadline: float) -> None:
        """Stop the decoder and demux threads, waiting for them until ``deadline`` (``time.monotonic()``)."""
        for pool in pools:
            pool.close(max(0.0, deadline - time.monotonic()))
            if pool.alive():
                log.warning("asyncdecode: %d decoder thread(s) still busy after %.1f s", pool.alive(),
                            self.config.close_timeout_s)
        _trim.flush()  # the host memory of the decoders that just went, given back now
        executor.shutdown(wait=False, cancel_futures=True)
        busy = 0
        # shutdown(wait=True) waits without a limit: join this engine's demux threads (by name) until the deadline.
        for t in [t for t in threading.enumerate() if t.name.startswith(self._demux_prefix + "_")]:
            t.join(max(0.0, deadline - time.monotonic()))
            busy += t.is_alive()
        if busy:
            log.warning("asyncdecode: %d demux thread(s) still busy after %.1f s", busy, self.config.close_timeout_s)

    def _loop_gone(self) -> None:
        """The engine's event loop closed while the engine was open (``asyncio.run`` ended first): the
        decoder threads end (this runs on one of them), and the demux threads and open files go too."""
        log.warning("asyncdecode: the event loop of an open Engine on %s closed; its threads stop (close "
                    "engines with `async with` or `await engine.aclose()`)", self.device)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._gops.readers.close()  # readers in use are closed when they are given back

    def __del__(self) -> None:
        if getattr(self, "_state", EngineState.CLOSED) in (EngineState.OPEN, EngineState.CLOSING):
            warnings.warn(f"asyncdecode Engine on {self.device} was never closed; use `async with` or "
                          "`await engine.aclose()`", ResourceWarning, stacklevel=2)

    # -- public API ---------------------------------------------------------------------------

    async def decode(self, paths: PathLike | Sequence[PathLike], frame_ids: Sequence[int], *,
                     output: OutputSpec | None = None, stack: bool = False) -> Any:
        """Decode frame ``frame_ids[i]`` of ``paths[i]`` for every i.

        Args:
            paths: One path per frame id, or a single path for all of them.
            frame_ids: Frame ids (0-based, presentation order).
            output: Output format for this call (default: the engine's).
            stack: Return one batch tensor, ``N x C x H x W`` (``layout="chw"``) or ``N x H x W x C``,
                instead of a list. Every frame of the request must come out at one size (the same
                display size, or an ``OutputSpec.size``).

        Returns:
            One tensor per (path, frame id) pair, in order, on the engine's device (with ``stack``:
            those tensors stacked along a new first dimension).

        Raises:
            FrameIndexError: a frame id is out of range for its file.
            VideoOpenError: a file is missing or not a video.
            UnsupportedStreamError: the backend cannot decode a stream.
            CorruptDataError: a GOP does not decode.
            InvalidRequestError: the arguments are malformed (or, with ``stack``, the frames would
                come out at different sizes).
            EngineClosedError: the engine is closed.
        """
        return await self.submit(paths, frame_ids, output=output, stack=stack)

    def submit(self, paths: PathLike | Sequence[PathLike], frame_ids: Sequence[int], *,
               output: OutputSpec | None = None, stack: bool = False) -> asyncio.Future[Any]:
        """Start a request now and return its future at once (await it for the frames).

        Must be called from the engine's event loop. Cancelling the future withdraws the request's
        decode jobs. Raises the same errors as :meth:`decode` for malformed arguments, immediately.
        """
        loop = self._ensure_open()
        pairs = _plan.pairs(paths, frame_ids)
        spec = self._spec(output)
        task = loop.create_task(self._request_path.request(pairs, spec, bool(stack)))
        self._track(task)
        return task

    def prefetch(self, paths: PathLike | Sequence[PathLike], frame_ids: Sequence[int]) -> asyncio.Future[None]:
        """Bring the GOPs of these frames into the GOP cache (index, read, demux), without decoding.

        A hint: it returns at once; the returned future completes when the GOPs are in, and never
        raises for bad inputs (they are counted in ``stats()["prefetch_errors"]``; the request that
        later asks for the frames gets the error).
        """
        loop = self._ensure_open()
        pairs = _plan.pairs(paths, frame_ids)
        self._n.prefetch_requests += 1
        task = loop.create_task(self._request_path.prefetch(pairs))
        self._track(task)
        return task

    async def stream(self, requests: Iterable[Request] | AsyncIterable[Request], *, depth: int = 4,
                     output: OutputSpec | None = None, stack: bool = False) -> AsyncIterator[Any]:
        """Yield the frames of each ``(paths, frame_ids)`` request in order, keeping ``depth`` in flight.

        While the caller works on one result, the next ``depth - 1`` requests are being read and
        decoded. Files the requests read front to back are read ahead by GOP: the GOPs after the one
        being read are decoded on idle decoder threads and wait, within a memory bound, for their
        requests (see ``_readahead``; ``stats()["read_ahead_*"]``). An error of a request is raised
        at its position; closing the iterator early cancels the requests still in flight and the
        read-ahead. ``stack``: each result as one batch tensor (see :meth:`decode`).
        """
        if not isinstance(depth, int) or depth < 1:
            raise InvalidRequestError(f"depth must be a positive int, not {depth!r}")
        self._ensure_open()
        spec = self._spec(output)
        pending: deque[asyncio.Future[Any]] = deque()
        source = _aiter(requests)
        exhausted = False
        ahead = self._request_path.stream_read_ahead(requests)
        try:
            while True:
                while not exhausted and len(pending) < depth:
                    try:
                        paths, ids = await source.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    token = _readahead.current.set(ahead)  # the request's task starts with it in its context
                    try:
                        pending.append(self.submit(paths, ids, output=spec, stack=stack))
                    finally:
                        _readahead.current.reset(token)
                if not pending:
                    return
                yield await pending.popleft()
        finally:
            for fut in pending:
                fut.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await ahead.close()

    async def add_bundles(self, bundles: Iterable[GopBundle]) -> int:
        """Put GOP bundles read elsewhere into the GOP cache, so that decoding their frames reads nothing.

        For the separation training loops use: DataLoader workers read GOPs (from a
        :class:`~asyncdecode.GopStore`, or by demuxing) and hand them over, through
        :class:`~asyncdecode.shared.SharedGopCache` for example; the main process adds them here and
        then asks for the frames as usual. Returns how many were added.

        Raises:
            InvalidRequestError: a bundle is not one of its video's GOPs (it does not start at a keyframe
                of the video as indexed now, or shows another number of frames).
        """
        self._ensure_open()
        added = 0
        for bundle in bundles:
            if not isinstance(bundle, GopBundle):
                raise InvalidRequestError(f"add_bundles takes GopBundle objects, not {type(bundle).__name__}")
            index = await self._indexes.of(os.path.abspath(bundle.source))
            info = index.info
            gop = info.gop_of(bundle.first_frame_id) if 0 <= bundle.first_frame_id < info.num_frames else -1
            if gop < 0 or info.keyframes[gop] != bundle.first_frame_id or info.gop_lengths[gop] != bundle.frame_count:
                raise InvalidRequestError(
                    f"{bundle.source}: the bundle for frames {bundle.first_frame_id}.."
                    f"{bundle.first_frame_id + bundle.frame_count - 1} is not a GOP of the video as indexed now",
                    path=bundle.source, frame_id=bundle.first_frame_id)
            self._gops.cache.put((index.path, index.stamp, gop), bundle)
            added += 1
        return added

    def stats(self) -> dict[str, Any]:
        """Counters since the engine opened (a snapshot; cheap)."""
        return self._stats.snapshot(self._state)

    async def info(self, path: PathLike) -> Any:
        """:class:`~asyncdecode.VideoInfo` of ``path``, from the engine's index cache."""
        self._ensure_open()
        return (await self._indexes.of(os.path.abspath(os.fspath(path)))).info

    # -- streams, whole videos, times (asyncdecode._ingest, asyncdecode._access) ---------------

    def ingest(self, source: Any, *, format: str | None = None, output: OutputSpec | None = None,
               buffer_bytes: int | None = None, gops_ahead: int | None = None) -> Any:
        """Decode a stream as its bytes arrive: an async iterator of :class:`~asyncdecode.Frame` records
        (tensor, ``index``, ``pts_seconds``) in presentation order.

        Example:
            >>> async for frame in eng.ingest(chunks_from_socket(), format="mpegts"):
            ...     print(frame.index, frame.pts_seconds, frame.tensor.shape)

        Args:
            source: A path, a binary file object (``read(n)``, sync or async such as
                :class:`asyncio.StreamReader`), an async iterable of ``bytes`` chunks, or an iterable of
                chunks. Read once, front to back, never seeked.
            format: ``"mpegts"``, ``"mp4"`` (fragmented, or with ``moov`` first), ``"h264"`` / ``"hevc"``
                (Annex B elementary streams), or another FFmpeg demuxer name; ``None``: told from the
                first bytes.
            output: Output format (default: the engine's).
            buffer_bytes: Bytes of an async source buffered ahead of the demuxer, at most; a full buffer
                makes the source wait (backpressure). Default 4 MiB.
            gops_ahead: GOPs demuxed and decoding ahead of the consumer, at most. Default 4.

        Returns:
            An :class:`~asyncdecode.IngestStream`; work starts at the first ``__anext__``.

        Raises (while iterating):
            TruncatedStreamError: the stream stopped inside a packet, or its source failed; raised after
                every frame that could be decoded.
            VideoOpenError: the stream is empty, not media, or has no video.
            CorruptDataError / UnsupportedStreamError: as for :meth:`decode`.
            InvalidRequestError: malformed arguments (raised at once).
        """
        from ._ingest import ingest

        return ingest(self, source, format=format, output=output, buffer_bytes=buffer_bytes,
                      gops_ahead=gops_ahead)

    def frames(self, path: PathLike, *, start: int | None = 0, stop: int | None = None, step: int = 1,
               output: OutputSpec | None = None) -> AsyncIterator[Any]:
        """Iterate the frames ``range(num_frames)[start:stop:step]`` of ``path`` as
        :class:`~asyncdecode.Frame` records, in order, decoding each frame about once.

        ``start`` and ``stop`` follow slice rules (negative counts from the end, out of range clips).
        Leaving the loop early cancels the frames in flight.

        Raises:
            VideoOpenError, CorruptDataError, UnsupportedStreamError: as for :meth:`decode`.
            InvalidRequestError: ``step`` is not a positive int, or ``start``/``stop`` are not ints.
        """
        from ._access import frames

        return frames(self, path, start=start, stop=stop, step=step, output=output)

    async def frame_at(self, path: PathLike, seconds: float, *, accurate: bool = True,
                       output: OutputSpec | None = None) -> Any:
        """The :class:`~asyncdecode.Frame` shown at ``seconds`` in ``path``, with its index and pts.

        ``accurate=True``: the frame whose presentation interval holds the time (from the real
        timestamps, so variable frame rate is right). ``accurate=False``: the nearest keyframe at or
        before the time; nothing past the keyframe is decoded.

        Raises:
            FrameIndexError: no frame is shown at that time (before the first or after the last).
            InvalidRequestError: ``seconds`` is not a finite number.
            VideoOpenError, CorruptDataError, UnsupportedStreamError: as for :meth:`decode`.
        """
        from ._access import frame_at

        return await frame_at(self, path, seconds, accurate=accurate, output=output)

    async def frames_at(self, paths: PathLike | Sequence[PathLike], seconds: Sequence[float], *,
                        accurate: bool = True, output: OutputSpec | None = None) -> list[Any]:
        """:meth:`frame_at` for ``seconds[i]`` in ``paths[i]`` (or one path for all), in one request:
        frames of the same GOP are decoded in one pass. Returns :class:`~asyncdecode.Frame` records in order."""
        from ._access import frames_at

        return await frames_at(self, paths, seconds, accurate=accurate, output=output)

    def __repr__(self) -> str:
        return f"<Engine {self.backend.name} on {self.device}, {self._state.value}>"

    # -- requests (their frames: asyncdecode._request) ----------------------------------------

    def _spec(self, output: OutputSpec | None) -> OutputSpec:
        if output is None:
            return self.output
        if not isinstance(output, OutputSpec):
            raise InvalidRequestError(f"output must be an OutputSpec, not {type(output).__name__}")
        return output

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)


class _Internal:
    """:class:`~asyncdecode._core.EngineInternal` for one engine: its add-ons' way in."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def open(self) -> asyncio.AbstractEventLoop:
        return self._engine._ensure_open()

    def output_spec(self, output: OutputSpec | None) -> OutputSpec:
        return self._engine._spec(output)

    def track(self, task: asyncio.Future[Any]) -> None:
        self._engine._track(task)

    async def decode_bundle(self, bundle: GopBundle, wanted: list[int],
                            output: OutputSpec | None) -> dict[int, Any]:
        frames, _ = await self._engine._decoders.decode_bundle(bundle, wanted, output)
        return frames

    def count_served(self, frames: int) -> None:
        n = self._engine._n
        n.frames_requested += frames
        n.frames_returned += frames


def _aiter(requests: Iterable[Request] | AsyncIterable[Request]) -> AsyncIterator[Request]:
    if isinstance(requests, AsyncIterable):
        return requests.__aiter__()

    async def gen() -> AsyncIterator[Request]:
        for r in requests:
            yield r

    return gen()
