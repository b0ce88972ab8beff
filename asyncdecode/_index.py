"""The index stage of the request path: a video's frames and GOPs, before anything is decoded.

In: a path. Out: its :class:`~asyncdecode.media.VideoIndex` (frames, GOPs, the packet table; built
once in the demux threads, kept in a bounded LRU cache and checked against the file's size and
modification time at each use, at most once per :data:`RECHECK_S`), or, with a GOP store, a
:class:`StoreIndex` from the store's index (no video opened), or the store's error
(``StaleStoreError`` ...) unless ``EngineConfig.store_fallback="demux"`` sends the video to the
demuxer instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ._once import Once, all_or_cancel
from .errors import AsyncDecodeError, VideoOpenError
from .media import VideoIndex, build_index, file_stamp

__all__ = ["Indexes", "StoreIndex"]

log = logging.getLogger("asyncdecode")

RECHECK_S = float(os.environ.get("ASYNCDECODE_INDEX_RECHECK_S", "0.05"))
"""A cached index found unchanged on disk is used without a new ``stat`` for this long
(``ASYNCDECODE_INDEX_RECHECK_S``; 0: a ``stat`` at every use). Reading clips a frame per request, the
``stat`` of every file of every request was the request path's largest cost on the event loop: a
third of it on a 2-core CPU (6 clips), 21-24% of the loop's samples on an H200 host (24 files).
A file replaced on disk is seen within this time of its change; one rewritten while it is read
was never safe to read (the bytes can change after any ``stat``)."""
_clock = time.monotonic  # (tests step it by hand)


@dataclass(frozen=True)
class StoreIndex:
    """A video planned from a GOP store's index: its frames and GOPs, no packet table."""

    info: Any
    stamp: Any

    @property
    def path(self) -> str:
        return self.info.path


class Indexes:
    """The engine's indexes: built once per file and stamp, at most ``max_files`` kept.

    Args:
        max_files: Indexes kept (the least recently used go).
        store: A built :class:`~asyncdecode.GopStore` to plan videos from, or ``None``.
        store_fallback: ``"raise"`` or ``"demux"`` (see ``EngineConfig.store_fallback``).
        device: Named in the errors raised.
        once: The engine's shared work (an index built once for all who ask meanwhile).
        counters: Where ``index_jobs`` and ``index_s`` are counted.
    """

    def __init__(self, *, max_files: int, store: Any, store_fallback: str, device: str, once: Once,
                 counters: Any) -> None:
        self.max_files = max_files
        self.store = store
        self.store_fallback = store_fallback
        self.device = device
        self._once = once
        self._n = counters
        self._indexes: OrderedDict[str, VideoIndex] = OrderedDict()
        self._checked: dict[str, float] = {}  # path -> when its cached index was last found unchanged
        self.store_fallbacks: set[str] = set()
        """Videos the store could not plan, demuxed instead (``stats()["store_fallback_files"]``)."""

    def __len__(self) -> int:
        return len(self._indexes)

    def clear(self) -> None:
        self._indexes.clear()
        self._checked.clear()

    async def for_pairs(self, pairs: list[tuple[str, int]]) -> dict[str, VideoIndex | StoreIndex]:
        """The index of every path of a request, by path: the cached ones at once (a task per file,
        24 per request of 24 files, was loop time for nothing), the rest built or checked together."""
        paths = list(dict.fromkeys(p for p, _ in pairs))
        found: dict[str, VideoIndex | StoreIndex] = {}
        missing = []
        for p in paths:
            index = self.cached(p)
            if index is None:
                missing.append(p)
            else:
                found[p] = index
        if missing:
            found.update(zip(missing, await all_or_cancel([self.of(p) for p in missing])))
        return {p: found[p] for p in paths}

    def cached(self, path: str) -> VideoIndex | None:
        """The video's index where it is cached and the file unchanged (one ``stat``, none where one
        found it so less than :data:`RECHECK_S` ago), with no store in between; else ``None``
        (:meth:`of` then builds it, or raises the file's error)."""
        if self.store is not None:
            return None
        now = _clock()
        if now - self._checked.get(path, -RECHECK_S) < RECHECK_S:
            index = self._indexes.get(path)
            if index is not None:
                self._indexes.move_to_end(path)
                return index
        try:
            stamp = file_stamp(path)
        except VideoOpenError:
            return None
        index = self._fresh(path, stamp)
        if index is not None and RECHECK_S > 0:
            self._checked[path] = now
        return index

    def _fresh(self, path: str, stamp: Any) -> VideoIndex | None:
        """The cached index of ``path`` if it was built from the file as ``stamp`` says it is now."""
        index = self._indexes.get(path)
        if index is not None and index.stamp == stamp:
            self._indexes.move_to_end(path)
            return index
        return None

    async def of(self, path: str) -> VideoIndex | StoreIndex:
        """The index of ``path`` (absolute): the store's plan when it has the video, else the video's."""
        if self.store is not None:
            found = self._store_index(path)
            if found is not None:
                return found
        return await self.of_file(path)

    async def of_file(self, path: str) -> VideoIndex:
        """The video's own index (demuxed), from the cache while the file is unchanged."""
        try:
            stamp = file_stamp(path)
        except VideoOpenError as exc:
            exc.device = self.device
            raise
        index = self._fresh(path, stamp)
        if index is not None:
            return index

        def done(index: VideoIndex) -> None:
            self._indexes[path] = index
            self._indexes.move_to_end(path)
            self._checked.pop(path, None)
            while len(self._indexes) > self.max_files:
                gone, _ = self._indexes.popitem(last=False)
                self._checked.pop(gone, None)

        def work() -> VideoIndex:
            t = time.perf_counter()
            try:
                return build_index(path)
            finally:
                self._n.index_s += time.perf_counter() - t

        key = ("index", path, stamp)
        self._n.index_jobs += 1 if key not in self._once else 0
        return await self._once.run(key, work, done)

    def _store_index(self, path: str) -> StoreIndex | None:
        """The store's plan of ``path``; ``None`` to demux the video instead (``store_fallback="demux"``)."""
        store = self.store
        try:
            info, recorded = store.info(path), store.stamp(path)
            if os.path.exists(path) and file_stamp(path) != recorded:  # one stat; gone videos: the store alone
                store.check_source(path)  # raises StaleStoreError, with both stamps
        except AsyncDecodeError as exc:
            exc.device = self.device
            if self.store_fallback == "raise" or not os.path.exists(path):
                raise
            if path not in self.store_fallbacks:
                self.store_fallbacks.add(path)
                log.warning("asyncdecode: %s; demuxing the video instead", str(exc))
            return None
        return StoreIndex(info, recorded)
