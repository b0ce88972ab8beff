"""Byte-bounded LRU caches touched only from the event loop thread: GOP bundles and decoded frames."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

import torch

from .gop import GopBundle

T = TypeVar("T")

# Admission of extras (frames decoded on the way to a wanted one) by FrameCache, from costs measured
# on an H200 (1600x900 HEVC, GOP 30): an extra costs one conversion (~30 us of GPU) plus its memory
# and allocation; all in, always collecting cost ~57 us per extra (444 against 718 frames/s at ~15
# extras per wanted frame). A hit on an extra saves decoding a GOP prefix, ~1.5 ms. Break-even is
# then a hit fraction of ~0.02 (conversion alone) to ~0.04 (all in); the threshold sits above that
# because an extra also pushes out cached frames that could have been hit, and the estimate is noisy.
EXTRAS_MIN_HIT_FRACTION = 1 / 16
"""Extras are collected while at least this fraction of the resolved ones (hit or evicted) was hit."""
EXTRAS_PROBATION = 32
"""Extras resolved before the hit fraction decides; until then jobs collect (the starting guess)."""
EXTRAS_WINDOW = 128
"""Resolutions the hit fraction is decayed over (1/e weight after this many): short enough that a
change of pattern turns the decision within a few probes, long enough to average many GOPs."""
EXTRAS_PROBE_EVERY = 32
"""While extras do not pay, one decode job in this many still collects (about 1/32 of the cost of
always collecting), so that the estimate recovers when the access pattern changes."""
_DECAY = 1.0 - 1.0 / EXTRAS_WINDOW


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
            old_key, evicted = self._items.popitem(last=False)
            self.nbytes -= self.size(evicted)
            self.evictions += 1
            self._evicted(old_key)

    def _evicted(self, key: Hashable) -> None:
        """Called for each item evicted to make room (not for ``clear``)."""

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
    """Decoded frames in their output format, by ``(path, frame id, output spec)``, on the engine's device.

    Two kinds of entries: *wanted* frames (a request asked for them: always admitted) and *extras*
    (frames that came out of the decoder on the way to a wanted one). Collecting extras costs a
    conversion and memory per frame, and pays only when they are asked for before they are evicted,
    so the cache measures that and :meth:`collect` decides, per decode job, whether to collect:

    * an extra entry is *resolved* by its first hit (``extras_hit``) or by its eviction unhit
      (``extras_wasted``); an extra still waiting is neither. A wanted frame put over a waiting extra
      (two jobs of one GOP in flight) counts as its hit: it was asked for.
    * the hit fraction of resolved extras, decayed over about :data:`EXTRAS_WINDOW` resolutions (so
      that it follows a change of access pattern), must be at least :data:`EXTRAS_MIN_HIT_FRACTION`;
      until :data:`EXTRAS_PROBATION` extras are resolved, extras are collected (the starting guess).
    * while extras do not pay, one decode job in :data:`EXTRAS_PROBE_EVERY` still collects, so the
      estimate keeps being fed and recovers when the pattern changes (a second epoch over a set that
      fits).
    * a job that would collect more bytes than the whole capacity never collects: its own extras
      would evict each other.

    Unresolved extras cost at most one fill of the cache: evictions, and with them ``extras_wasted``,
    start once it is full. Everything is O(1) per job and per entry.
    """

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self._waiting: set[Hashable] = set()  # keys of extra entries neither hit nor evicted yet
        self.extras_admitted = 0
        self.extras_hit = 0
        self.extras_wasted = 0
        self.extras_probes = 0  # jobs that collected only as a probe
        self._hit_w = 0.0  # decayed counts of resolved extras: hit, and hit or wasted
        self._resolved_w = 0.0
        self._since_probe = 0

    def size(self, item: torch.Tensor) -> int:
        return item.numel() * item.element_size()

    @property
    def extras_hit_fraction(self) -> float | None:
        """Decayed hit fraction of resolved extras; ``None`` before any is resolved."""
        return self._hit_w / self._resolved_w if self._resolved_w else None

    @property
    def collecting(self) -> bool:
        """Whether extras pay (or are still on probation): jobs collect them; otherwise only probes do."""
        if self.capacity_bytes <= 0:
            return False
        if self.extras_hit + self.extras_wasted < EXTRAS_PROBATION:
            return True
        return self._hit_w >= EXTRAS_MIN_HIT_FRACTION * self._resolved_w

    def collect(self, job_bytes: int) -> bool:
        """Whether a decode job about to run should collect its extras: ``job_bytes`` is about what it
        would collect (frames on the way times the bytes of one). Called once per job that decodes."""
        if job_bytes > self.capacity_bytes:
            return False
        if self.collecting:
            self._since_probe = 0
            return True
        self._since_probe += 1
        if self._since_probe >= EXTRAS_PROBE_EVERY:
            self._since_probe = 0
            self.extras_probes += 1
            return True
        return False

    def get(self, key: Hashable) -> torch.Tensor | None:
        item = super().get(key)
        if item is not None and key in self._waiting:
            self._waiting.discard(key)
            self._resolve(hit=True)
        return item

    def put(self, key: Hashable, item: torch.Tensor, *, extra: bool = False) -> None:
        """Admit ``item``; ``extra``: it came out on the way, nobody asked for it (yet)."""
        if self.size(item) > self.capacity_bytes:
            return
        if key in self._items:
            # already cached: refreshed; a waiting extra stays one (its admission is counted once),
            # unless it is now asked for
            if not extra and key in self._waiting:
                self._waiting.discard(key)
                self._resolve(hit=True)
        elif extra:
            self._waiting.add(key)
            self.extras_admitted += 1
        super().put(key, item)

    def _evicted(self, key: Hashable) -> None:
        if key in self._waiting:
            self._waiting.discard(key)
            self._resolve(hit=False)

    def _resolve(self, hit: bool) -> None:
        if hit:
            self.extras_hit += 1
        else:
            self.extras_wasted += 1
        self._hit_w = self._hit_w * _DECAY + hit
        self._resolved_w = self._resolved_w * _DECAY + 1.0

    def clear(self) -> None:
        super().clear()
        self._waiting.clear()
