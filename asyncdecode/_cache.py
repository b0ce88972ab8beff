"""Byte-bounded LRU cache of GOP bundles, touched only from the event loop thread."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from .gop import GopBundle


class GopCache:
    """Least-recently-used GOP bundles, bounded by their total size in bytes.

    A bundle larger than the whole capacity is not kept. Evicting a bundle only drops the cache's
    reference: decode jobs that hold it keep it alive until they finish.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, not {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._items: OrderedDict[Hashable, GopBundle] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable) -> GopBundle | None:
        bundle = self._items.get(key)
        if bundle is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return bundle

    def put(self, key: Hashable, bundle: GopBundle) -> None:
        if bundle.nbytes > self.capacity_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._items[key] = bundle
        self.nbytes += bundle.nbytes
        while self.nbytes > self.capacity_bytes:
            _, evicted = self._items.popitem(last=False)
            self.nbytes -= evicted.nbytes
            self.evictions += 1

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0
