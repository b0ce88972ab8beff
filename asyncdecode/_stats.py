"""The engine's counters and its ``stats()``.

In: the counts the stages keep as they run: the request counters they share (:class:`Counters`,
counted by the request path, the index and fetch stages and the read-ahead), the decode stage's pools,
the GOP and frame caches, the index cache, the engine's requests in flight. Out: :meth:`Stats.snapshot`,
the dict ``Engine.stats()`` returns, its keys always in one order; read at once, nothing waits.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backends import Backend
    from ._cache import FrameCache
    from ._core import EngineState
    from ._decode import Decoders
    from ._fetch import Gops
    from ._index import Indexes

__all__ = ["Counters", "Stats"]


class Counters:
    """Counts of one engine since it opened, kept by the stages that do the counted work."""

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


class Stats:
    """What ``Engine.stats()`` reads: the engine's backend, counters, requests in flight and stages."""

    def __init__(self, backend: Backend, counters: Counters, requests: set[asyncio.Future[Any]], *,
                 indexes: Indexes, gops: Gops, decoders: Decoders, frames: FrameCache) -> None:
        self._backend = backend
        self._n = counters
        self._requests = requests
        self._indexes = indexes
        self._gops = gops
        self._decoders = decoders
        self._frames = frames

    def snapshot(self, state: EngineState) -> dict[str, Any]:
        """The counters now, for an engine in ``state``."""
        n, cache, frames = self._n, self._gops.cache, self._frames
        pool, fallback = self._decoders.pool, self._decoders.fallback
        pools = self._decoders.pools()  # those made: the device's, and the CPU fallback once needed
        free = [p.free_decoders() for p in pools]
        free_count = sum(count for count, _ in free)
        return {
            "state": state.value,
            "backend": self._backend.name,
            "decoder_library": self._backend.library,
            "device": str(self._backend.device),
            "decoder_threads": pool.threads if pool else 0,
            "decoder_threads_replaced": sum(p.threads_replaced for p in pools),
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
            "decoders_created": sum(p.decoders_created for p in pools),
            "decoders_reconfigured": sum(p.decoders_reconfigured for p in pools),
            "decoders_free": free_count,
            "decoders_free_bytes": sum(nbytes for _, nbytes in free),
            "decoders_open": free_count + sum(p.decoders_held() for p in pools),
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
            "frame_cache_wanted_admitted": frames.wanted_admitted,
            "frame_cache_wanted_hit": frames.wanted_hit,
            "frame_cache_wanted_wasted": frames.wanted_wasted,
            "frame_cache_keeping": frames.keeping,
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
