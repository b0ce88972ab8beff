"""The request path's glue: the frames of one request, through the stages.

In: a request's ``(path, frame_id)`` pairs (checked by :func:`._plan.pairs`) and its output format.
Out: one tensor per pair, in request order, on the engine's device (with ``stack``: one batch tensor),
the request counted in the engine's counters. On the way: the files' indexes (:mod:`._index`), the
frames grouped by GOP (:mod:`._plan`), the GOPs whose frames a finished read-ahead holds taken at
once (:mod:`._readahead`), and for each other GOP a place in its line of calls
(:class:`._plan.GopLines`, taken in request order), then the frame cache (:class:`._cache.FrameCache`),
the GOP's bundle (:mod:`._fetch`) and its decode (:mod:`._decode`). Also here: the read-ahead's own
decode of a GOP, and prefetch (bundles fetched, nothing decoded). Lives on the engine's event loop;
the engine (:mod:`._engine`) owns it and calls it, never the other way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Callable

import torch

from . import _plan, _readahead
from ._cache import EXTRAS_MIN_HIT_FRACTION, EXTRAS_MIN_HIT_FRACTION_GPU, FrameCache
from ._decode import Decoders
from ._fetch import Gops
from ._index import Indexes
from ._once import all_or_cancel
from ._output import OutputSpec
from ._workers import copy_frame
from .media import VideoIndex

__all__ = ["RequestPath"]

log = logging.getLogger("asyncdecode")


class RequestPath:
    """The frames of an engine's requests: the line of calls for each GOP (so that a GOP is decoded
    once for the requests that want it), the frame cache, the engine's own read-ahead, over its
    index, fetch and decode stages.

    Args:
        indexes: The index stage.
        gops: The fetch stage.
        decoders: The decode stage.
        counters: The engine's counters (``requests*``, ``frames_*``, ``prefetch_errors``, and the
            read-ahead's).
        frame_cache_bytes: The frame cache's bound (``EngineConfig.frame_cache_bytes``).
        device: The engine's device.
    """

    def __init__(self, indexes: Indexes, gops: Gops, decoders: Decoders, *, counters: Any,
                 frame_cache_bytes: int, device: torch.device) -> None:
        self.indexes = indexes
        self.gops = gops
        self.decoders = decoders
        self.device = device
        self._n = counters
        # Converting a frame is a GPU kernel on a device, dearer than decoding one on the CPU (the
        # cache's prior, until jobs measure the costs).
        on_gpu = decoders.backend.name != "cpu"
        self.frames = FrameCache(frame_cache_bytes, cheap=on_gpu,
                                 min_hit_fraction=EXTRAS_MIN_HIT_FRACTION_GPU if on_gpu else EXTRAS_MIN_HIT_FRACTION)
        self.turns = _plan.GopLines()  # the line of calls for each GOP (see _decode_gop)
        self.ahead: _readahead.ReadAhead | None = None  # requests one at a time (made when the engine opens)
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop, threads: int) -> None:
        """On the engine's loop, as it opens (``threads``: its decoder threads)."""
        self._loop = loop
        self.ahead = _readahead.ReadAhead(self._read_ahead_gop, threads, self._n, streak=_readahead.STREAK,
                                          device=str(self.device))

    async def close(self) -> None:
        """Cancel the engine's own read-ahead still running (the engine closing)."""
        if self.ahead is not None:
            await self.ahead.close()

    def stream_read_ahead(self, requests: Any) -> _readahead.ReadAhead:
        """A read-ahead for one stream of ``requests`` (a sequence of them tells what they will want)."""
        return _readahead.ReadAhead(self._read_ahead_gop, self.decoders.threads, self._n,
                                    _readahead.Remaining.of(requests, _plan.pairs), device=str(self.device))

    async def request(self, pairs: list[tuple[str, int]], spec: OutputSpec, stack: bool = False) -> Any:
        """One request's frames, counted (``stats()``): a list of tensors, or with ``stack`` one tensor."""
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

    async def prefetch(self, pairs: list[tuple[str, int]]) -> None:
        """Fetch the bundles of the GOPs of ``pairs``; errors are counted and logged, never raised."""
        try:
            indexes = await self.indexes.for_pairs(pairs)
            gops = {(p, indexes[p].info.gop_of(f)) for p, f in pairs if 0 <= f < indexes[p].info.num_frames}
            await all_or_cancel([self.gops.bundle(indexes[p], g) for p, g in gops])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._n.prefetch_errors += 1
            log.debug("asyncdecode prefetch failed: %s", str(exc))

    async def _decode_pairs(self, pairs: list[tuple[str, int]], spec: OutputSpec,
                            stack: bool = False) -> list[torch.Tensor]:
        if not pairs:
            return []
        indexes = await self.indexes.for_pairs(pairs)
        if stack and spec.size is None:
            _plan.check_one_size(pairs, indexes, str(self.device))
        groups = _plan.by_gop(pairs, indexes, str(self.device))
        ahead = self._read_ahead()
        # GOPs whose frames a read-ahead holds, decoded: taken at once (no task, turn or future)
        ready = set() if ahead is None else {key for key, wanted in groups.items()
                                             if ahead.ready(key[0], key[1], spec, wanted)}
        rest = [(key, wanted) for key, wanted in groups.items() if key not in ready]
        frames: dict[tuple[str, int], torch.Tensor] = {}
        if ahead is not None:
            # taken before planning: the planning may drop what the read-ahead holds (stale, or
            # behind a file's new GOP) and the frames ready() promised would be gone
            for path, gop in ready:
                for fid, tensor in ahead.take_ready(path, gop, spec, groups[(path, gop)]).items():
                    frames[(path, fid)] = tensor
            ahead.plan(groups, indexes, spec, served=ready)  # read on ahead of files read front to back
        turns = [self.turns.take(key, self._loop) for key, _ in rest]  # now, in request order
        try:
            results = await all_or_cancel([
                self._decode_gop(indexes[path], gop, wanted, spec, turn)
                for ((path, gop), wanted), turn in zip(rest, turns)
            ]) if rest else []
        finally:
            for (key, _), turn in zip(rest, turns):
                self.turns.end(key, turn)
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
            return self.ahead
        return ahead or None

    def _read_ahead_gop(self, index: VideoIndex, gop: int, ids: set[int],
                        spec: OutputSpec) -> tuple[Awaitable[dict[int, Any]], Callable[[], None]]:
        """A GOP's decode for the read-ahead: its place in the GOP's line taken now; what gives it back."""
        key = (index.path, gop)
        turn = self.turns.take(key, self._loop)
        return self._decode_gop(index, gop, ids, spec, turn), lambda: self.turns.end(key, turn)

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
        cache = self.frames
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
        bundle = await self.gops.bundle(index, gop)
        if before is not None and not before.done():
            await asyncio.wait((before,))  # the call before this one is queued first (never cancelled from here)
        if not on:
            frames, _ = await self.decoders.decode_bundle(bundle, sorted(wanted), spec,
                                                          queued=lambda: _plan.settle(mine))
            return frames
        # extras (frames on the way) only while they pay: FrameCache.collect decides
        info = index.info
        on_the_way = max(wanted) - info.keyframes[gop] + 1
        frame_bytes = spec.frame_bytes(info.height, info.width)
        cache.note_file((index.path, spec), info.num_frames * frame_bytes)
        collect = cache.collect(on_the_way * frame_bytes, on_the_way - len(wanted))
        # the cache's copies of the wanted frames, made on the decoder thread, while they pay
        kept: dict[int, torch.Tensor] | None = {} if cache.keep() else None
        frames, extra = await self.decoders.decode_bundle(bundle, sorted(wanted), spec, collect=collect,
                                                          costs=cache.note_job, queued=lambda: _plan.settle(mine),
                                                          keep=kept)
        keys = {(index.path, fid, spec) for fid in (*extra, *(kept or ()))}
        with cache.together(keys):  # the job's frames never make room among each other
            for fid, frame in extra.items():
                cache.put((index.path, fid, spec), frame, extra=True)
            for fid, frame in frames.items():
                if kept is not None and fid in kept:  # (another request of the same job keeps the others)
                    cache.put((index.path, fid, spec), kept[fid])
                cached[fid] = frame
        return cached
