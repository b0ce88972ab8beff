"""The engine: the public façade over the request path's stages.

A request goes index (:mod:`._index`) -> plan (:mod:`._plan`: ids checked and grouped by GOP) ->
fetch (:mod:`._fetch`: the GOP's packets, cached, demuxed or read from a store) -> queue and decode
(:mod:`._decode`, :mod:`._workers`: decoder threads, one NVDEC session or FFmpeg decoder each, and a
CPU fallback pool) -> the frames, on the device, in request order. Here: the engine's lifetime (open
on first use, ``aclose()``), request bookkeeping and ``stats()``, the line of calls for one GOP (so
that a GOP is decoded once for the requests that want it), the frame cache and GOP read-ahead
(:mod:`._readahead`); the add-ons (ingestion, time access, compat) come in through
``Engine.internal`` (:mod:`._core`).
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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, TypeVar, Union

import torch

from ._backends import Backend, make_backend
from ._backends.base import NVDEC_LIBRARIES
from ._core import EngineState
from ._cache import EXTRAS_MIN_HIT_FRACTION, EXTRAS_MIN_HIT_FRACTION_GPU, FrameCache
from ._decode import Decoders
from ._fetch import Gops
from ._index import Indexes
from ._once import Once, all_or_cancel
from ._output import OutputSpec
from . import _plan, _readahead
from ._workers import DecoderPool, copy_frame
from .errors import EngineClosedError, InvalidRequestError
from .gop import GopBundle
from .media import VideoIndex

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
    """Bytes of decoded frames kept in an LRU cache on the engine's device (GPU memory on NVDEC), in
    the output format asked for; ``0`` (default): none. Wanted frames are always kept; frames decoded
    on the way to them ("extras") only while they pay: while enough of them are hit before they are
    evicted (see :class:`~asyncdecode._cache.FrameCache`), and never by a job whose frames would not
    fit. A hit costs no decode. For training that reads a set for many epochs, or samples frames near
    each other. A 1600x900 RGB uint8 frame takes 4.3 MB."""
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


class _Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.requests_failed = 0
        self.requests_cancelled = 0
        self.frames_requested = 0
        self.frames_returned = 0
        self.prefetch_requests = 0
        self.prefetch_errors = 0
        self.demux_jobs = 0
        self.index_jobs = 0
        self.index_s = 0.0
        self.demux_s = 0.0
        self.request_s = 0.0
        self.store_reads = 0
        self.store_read_bytes = 0
        self.store_read_s = 0.0
        self.read_ahead_gops = 0
        self.read_ahead_frames = 0
        self.read_ahead_used = 0
        self.read_ahead_wasted = 0


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
        self._n = _Counters()
        self._once = Once()  # index, demux and store reads in flight, one per key
        # The request path's stages (see DESIGN.md): index -> plan (_plan) -> fetch -> queue and decode.
        self._indexes = Indexes(max_files=self.config.index_cache_files, store=gop_store,
                                store_fallback=self.config.store_fallback, device=str(self.device), once=self._once,
                                counters=self._n)
        self._gops = Gops(self.config, indexes=self._indexes, device=str(self.device), once=self._once,
                          counters=self._n)
        # Converting a frame is a GPU kernel on a device, dearer than decoding one on the CPU (the
        # cache's prior, until jobs measure the costs).
        on_gpu = self.backend.name != "cpu"
        self._frames = FrameCache(self.config.frame_cache_bytes, cheap=on_gpu,
                                  min_hit_fraction=EXTRAS_MIN_HIT_FRACTION_GPU if on_gpu else EXTRAS_MIN_HIT_FRACTION)
        self._turns = _plan.GopLines()  # the line of calls for each GOP (see _decode_gop)
        self._ahead: _readahead.ReadAhead | None = None  # requests one at a time (made when the engine opens)
        self._requests: set[asyncio.Future[Any]] = set()
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
        self._decoders.open(loop, threads=threads, capacity=capacity, on_loop_closed=self._loop_gone)
        self._ahead = _readahead.ReadAhead(self._read_ahead_gop, threads, self._n, streak=_readahead.STREAK,
                                           device=str(self.device))
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
                if self._ahead is not None:
                    await self._ahead.close()
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
        task = loop.create_task(self._request(pairs, spec, bool(stack)))
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
        task = loop.create_task(self._prefetch(pairs))
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
        ahead = _readahead.ReadAhead(self._read_ahead_gop, self._decoders.threads, self._n,
                                     _readahead.Remaining.of(requests, _plan.pairs), device=str(self.device))
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
        n, cache, frames = self._n, self._gops.cache, self._frames
        pool, fallback = self._decoders.pool, self._decoders.fallback
        free = [p.free_decoders() for p in (pool, fallback) if p is not None]
        return {
            "state": self._state.value,
            "backend": self.backend.name,
            "decoder_library": self.backend.library,
            "device": str(self.device),
            "decoder_threads": pool.threads if pool else 0,
            "decoder_threads_replaced": sum(p.threads_replaced for p in (pool, fallback) if p is not None),
            "requests": n.requests,
            "requests_failed": n.requests_failed,
            "requests_cancelled": n.requests_cancelled,
            "requests_in_flight": sum(1 for t in self._requests if not t.done()),
            "frames_requested": n.frames_requested,
            "frames_returned": n.frames_returned,
            "frames_decoded": (pool.decoded if pool else 0) + (fallback.decoded if fallback else 0),
            "cpu_fallback_files": len(self._decoders.fallback_paths),
            "packets_fed": pool.fed if pool else 0,
            "jobs_continued": pool.continued if pool else 0,
            "jobs_merged": pool.merged if pool else 0,
            "decoders_created": sum(p.decoders_created for p in (pool, fallback) if p is not None),
            "decoders_reconfigured": sum(p.decoders_reconfigured for p in (pool, fallback) if p is not None),
            "decoders_free": sum(count for count, _ in free),
            "decoders_free_bytes": sum(nbytes for _, nbytes in free),
            "gop_cache_hits": cache.hits,
            "gop_cache_misses": cache.misses,
            "gop_cache_bytes": cache.nbytes,
            "gop_cache_entries": len(cache),
            "gop_cache_evictions": cache.evictions,
            "gop_cache_capacity_bytes": cache.capacity_bytes,
            "frame_cache_hits": frames.hits,
            "frame_cache_misses": frames.misses,
            "frame_cache_bytes": frames.nbytes,
            "frame_cache_entries": len(frames),
            "frame_cache_evictions": frames.evictions,
            "frame_cache_capacity_bytes": frames.capacity_bytes,
            "frame_cache_extras_admitted": frames.extras_admitted,
            "frame_cache_extras_hit": frames.extras_hit,
            "frame_cache_extras_wasted": frames.extras_wasted,
            "frame_cache_collecting": frames.collecting,
            "frame_cache_extras_threshold": frames.threshold,
            "index_cache_files": len(self._indexes),
            "queue_depth": pool.queue_depth if pool else 0,
            "queue_capacity": pool.capacity if pool else 0,
            "queue_waiting": pool.waiting if pool else 0,
            "jobs_in_flight": pool.in_flight if pool else 0,
            "index_jobs": n.index_jobs,
            "demux_jobs": n.demux_jobs,
            "store_reads": n.store_reads,
            "store_read_bytes": n.store_read_bytes,
            "store_read_s": n.store_read_s,
            "read_ahead_gops": n.read_ahead_gops,
            "read_ahead_frames": n.read_ahead_frames,
            "read_ahead_used": n.read_ahead_used,
            "read_ahead_wasted": n.read_ahead_wasted,
            "store_checksums": self._gops.checked.checked,
            "store_fallback_files": len(self._indexes.store_fallbacks),
            "open_files_opened": self._gops.readers.opened,
            "prefetch_requests": n.prefetch_requests,
            "prefetch_errors": n.prefetch_errors,
            "index_s": n.index_s,
            "demux_s": n.demux_s,
            "decode_s": pool.decode_s if pool else 0.0,
            "convert_s": pool.convert_s if pool else 0.0,
        }

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

    # -- request path -------------------------------------------------------------------------

    def _spec(self, output: OutputSpec | None) -> OutputSpec:
        if output is None:
            return self.output
        if not isinstance(output, OutputSpec):
            raise InvalidRequestError(f"output must be an OutputSpec, not {type(output).__name__}")
        return output

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _request(self, pairs: list[tuple[str, int]], spec: OutputSpec, stack: bool = False) -> Any:
        n = self._n
        n.requests += 1
        n.frames_requested += len(pairs)
        t0 = time.perf_counter()
        try:
            frames = await self._decode_pairs(pairs, spec, stack)
        except asyncio.CancelledError:
            n.requests_cancelled += 1
            raise
        except BaseException:
            n.requests_failed += 1
            raise
        finally:
            n.request_s += time.perf_counter() - t0
        n.frames_returned += len(frames)
        if stack:
            return torch.stack(frames) if frames else torch.empty((0,), dtype=spec.dtype, device=self.device)
        return frames

    async def _decode_pairs(self, pairs: list[tuple[str, int]], spec: OutputSpec,
                            stack: bool = False) -> list[torch.Tensor]:
        if not pairs:
            return []
        indexes = await self._indexes.for_pairs(pairs)
        if stack and spec.size is None:
            _plan.check_one_size(pairs, indexes, str(self.device))
        groups = _plan.by_gop(pairs, indexes, str(self.device))
        ahead = self._read_ahead()
        # GOPs whose frames a read-ahead holds, decoded: taken at once (no task, turn or future)
        ready = [] if ahead is None else [key for key, wanted in groups.items()
                                          if ahead.ready(key[0], key[1], spec, wanted)]
        rest = [(key, wanted) for key, wanted in groups.items() if key not in ready]
        turns = [self._turns.take(key, self._loop) for key, _ in rest]  # now, in request order
        if ahead is not None:  # read on ahead of the files the requests read front to back
            ahead.plan(groups, indexes, spec)
        frames = {(key[0], fid): tensor for key in ready
                  for fid, tensor in ahead.take_ready(key[0], key[1], spec, groups[key]).items()}  # type: ignore[union-attr]
        try:
            results = await all_or_cancel([
                self._decode_gop(indexes[path], gop, wanted, spec, turn)
                for ((path, gop), wanted), turn in zip(rest, turns)
            ]) if rest else []
        finally:
            for (key, _), turn in zip(rest, turns):
                self._turns.end(key, turn)
        for ((path, _), _), res in zip(rest, results):
            for fid, tensor in res.items():
                frames[(path, fid)] = tensor
        out, seen = [], set()
        for pair in pairs:
            tensor = frames[pair]
            if pair in seen:  # the same frame twice in one request: each entry gets its own tensor
                tensor = copy_frame(tensor)
            seen.add(pair)
            out.append(tensor)
        return out

    def _read_ahead(self) -> _readahead.ReadAhead | None:
        """The read-ahead of the running request: its stream's, else the engine's own (requests one at
        a time); none inside a read-ahead's own decode."""
        ahead = _readahead.current.get()
        if ahead is None:
            return self._ahead
        return ahead or None

    def _read_ahead_gop(self, index: VideoIndex, gop: int, ids: set[int],
                        spec: OutputSpec) -> tuple[Awaitable[dict[int, Any]], Callable[[], None]]:
        """A GOP's decode for the read-ahead: its place in the GOP's line taken now; what gives it back."""
        key = (index.path, gop)
        turn = self._turns.take(key, self._loop)
        return self._decode_gop(index, gop, ids, spec, turn), lambda: self._turns.end(key, turn)

    async def _decode_gop(self, index: VideoIndex, gop: int, wanted: set[int], spec: OutputSpec,
                          turn: _plan.Turn) -> dict[int, torch.Tensor]:
        """The wanted frames of one GOP: from the frame cache, or decoded. Calls for one GOP reach the
        decoder queue in the order their turns were taken (the order of their requests): a call for
        frames further on that got its bundle first (from the cache, while the earlier ones were still
        being woken by the read) would start at the keyframe on a thread of its own, and the earlier
        call decode the same frames again after it."""
        before, mine = turn
        try:
            got: dict[int, Any] = {}
            ahead = self._read_ahead()
            if ahead is not None and ahead.has(index.path, gop, spec):  # decoded ahead (or being)
                _plan.settle(mine)  # nothing of this call's goes to the queue before the next one's
                got = await ahead.take(index.path, gop, spec, wanted)
                wanted = wanted - got.keys()
                if not wanted:
                    return got
            frames = await self._decode_gop_in_turn(index, gop, wanted, spec, before, mine)
            return {**got, **frames} if got else frames
        finally:
            _plan.settle(mine)  # served from the cache, or failed: the next call need not wait

    async def _decode_gop_in_turn(self, index: VideoIndex, gop: int, wanted: set[int], spec: OutputSpec,
                                  before: asyncio.Future[None] | None,
                                  mine: asyncio.Future[None]) -> dict[int, torch.Tensor]:
        cache = self._frames
        on = cache.capacity_bytes > 0
        cached: dict[int, torch.Tensor] = {}
        if on:
            for fid in wanted:
                frame = cache.get((index.path, fid, spec))
                if frame is not None:
                    cached[fid] = copy_frame(frame)  # the caller's own tensor: the cached one stays as it is
            if len(cached) == len(wanted):
                return cached
            wanted = wanted - cached.keys()
        bundle = await self._gops.bundle(index, gop)
        if before is not None and not before.done():
            await asyncio.wait((before,))  # the call before this one is queued first (never cancelled from here)
        if not on:
            frames, _ = await self._decoders.decode_bundle(bundle, sorted(wanted), spec,
                                                           queued=lambda: _plan.settle(mine))
            return frames
        # extras (frames on the way) only while they pay: FrameCache.collect decides
        info = index.info
        on_the_way = max(wanted) - info.keyframes[gop] + 1
        frame_bytes = spec.frame_bytes(info.height, info.width)
        cache.note_file((index.path, spec), info.num_frames * frame_bytes)
        collect = cache.collect(on_the_way * frame_bytes, on_the_way - len(wanted))
        frames, extra = await self._decoders.decode_bundle(bundle, sorted(wanted), spec, collect=collect,
                                                           costs=cache.note_job, queued=lambda: _plan.settle(mine))
        for fid, frame in extra.items():
            cache.put((index.path, fid, spec), frame, extra=True)
        for fid, frame in frames.items():
            cache.put((index.path, fid, spec), frame)
            cached[fid] = copy_frame(frame)
        return cached

    async def _prefetch(self, pairs: list[tuple[str, int]]) -> None:
        try:
            indexes = await self._indexes.for_pairs(pairs)
            gops = {(p, indexes[p].info.gop_of(f)) for p, f in pairs if 0 <= f < indexes[p].info.num_frames}
            await all_or_cancel([self._gops.bundle(indexes[p], g) for p, g in gops])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._n.prefetch_errors += 1
            log.debug("asyncdecode prefetch failed: %s", str(exc))


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
