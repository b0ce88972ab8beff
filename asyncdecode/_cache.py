"""Byte-bounded LRU caches touched only from the event loop thread: GOP bundles and decoded frames."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

import torch

from .gop import GopBundle

T = TypeVar("T")


class ByteLru(Generic[T]):
    """Least-recently-used items, bounded by their total size in bytes.

    An item larger than the whole capacity is not kept. Evicting an item only drops the cache's
    reference: whoever else holds it keeps it alive.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, not {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def size(self, item: T) -> int:
        raise NotImplementedError

    def get(self, key: Hashable) -> T | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: Hashable, item: T) -> None:
        size = self.size(item)
        if size > self.capacity_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= self.size(old)
        self._items[key] = item
        self.nbytes += size
        while self.nbytes > self.capacity_bytes:
            _, evicted = self._items.popitem(last=False)
            self.nbytes -= self.size(evicted)
            self.evictions += 1

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


class GopCache(ByteLru[GopBundle]):
    """GOP bundles (encoded data) by ``(path, stamp, gop)``."""

    def size(self, item: GopBundle) -> int:
        return item.nbytes


class FrameCache(ByteLru[torch.Tensor]):
    """Decoded frames in their output format, by ``(path, frame id, output spec)``, on the engine's device."""

    def size(self, item: torch.Tensor) -> int:
        return item.numel() * item.element_size()
