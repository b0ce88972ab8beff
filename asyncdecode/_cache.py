"""Byte-bounded LRU caches touched only from the event loop thread: GOP bundles and decoded frames."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Collection, Hashable, Iterator
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
#
# On the CPU an extra costs far more: its conversion to RGB (~3.5 ms for 640x360 on 2 cores) is about
# three times decoding a frame, and collecting at a quarter of the set's size ran at 0.35x no cache.
# So the threshold follows the costs the jobs measure: an extra pays when the fraction hit, times what
# a hit saves (decoding up to the frame, per wanted frame, and its conversion), is more than its own
# conversion, with EXTRAS_COST_MARGIN to spare.
#
# Measured again on an H200 (2026-12-04, matrix_bench's cache cells, 640x360 HEVC, epoch-random over
# 6 files): at a quarter of the set extras were hit 6.6% of the time and collecting them ran at
# 0.67-0.87x no cache; at half the set 17% and 0.97-0.99x; the whole set 100% and 1.2x / 15x. All in
# (allocation, the loop's bookkeeping, the threads' share of the GIL) an extra cost ~0.2 ms of host
# CPU there, far more than its conversion measures, against ~0.6 ms that a hit saves. So on the GPU
# the threshold does not go below EXTRAS_MIN_HIT_FRACTION_GPU.
EXTRAS_MIN_HIT_FRACTION = 1 / 16
"""Extras are collected while at least this fraction of the resolved ones (hit or evicted) was hit
(or more, where the measured costs ask for more: see :attr:`FrameCache.threshold`)."""
EXTRAS_MIN_HIT_FRACTION_GPU = 1 / 2
"""The same floor for an engine on the GPU (see above): the measured break-even lies between 0.17
(parity) and 1.0 there, and what the engine measures of an extra's cost there leaves out the
decoder's map of its picture (inside the decode loop's time). At 1/4, extras hitting 10-25% of the
time were collected on the H200 at 25% and 50% of a set, and the cache ran at 0.85-0.96x no cache."""
WANTED_MIN_HIT_FRACTION = 0.5
"""Where the set being read does not fit the cache, wanted frames are kept while at least this fraction
of those that left the cache was hit. A hit often saves little: the GOP is decoded anyway for the
other frames of the requests in flight. Measured (2026-12-05, matrix_bench's cache cells, 640x360 HEVC,
epoch-random over 6 files, wanted frames always kept): on an H200 they were hit 21% of the time at a
quarter of the set and 39% at half, and the cache ran at 0.83x and 0.94x no cache in the second epoch;
on the 2-core CPU 5% and 17-25%, and 0.87x over three epochs at both sizes (0.91x and 0.94x with this
floor)."""
EXTRAS_COST_MARGIN = 1.5
"""Threshold over the break-even hit fraction of the measured costs."""
EXTRAS_PROBATION = 32
"""Extras resolved before the hit fraction decides; until then jobs collect (the starting guess)
where extras are cheap (a threshold of at most :data:`EXTRAS_CHEAP`), else only probes do."""
EXTRAS_CHEAP = 1 / 8
"""The largest threshold at which collecting is the starting guess."""
_COST_WEIGHT = 1 / 16
"""Weight of a job's costs in their running averages."""
EXTRAS_WINDOW = 128
"""Resolutions the hit fraction is decayed over (1/e weight after this many): short enough that a
change of pattern turns the decision within a few probes, long enough to average many GOPs."""
EXTRAS_PROBE_EVERY = 32
"""While extras do not pay, one decode job in this many still collects (about 1/32 of the cost of
always collecting), so that the estimate recovers when the access pattern changes..."""
WANTED_PROBE_FASTEST = 2
"""While wanted frames are not kept, the probe interval (at most :data:`EXTRAS_PROBE_EVERY` jobs)
halves at each first hit of a kept frame and doubles at each kept frame that left unhit, down to one
job in this many: probes come more often while what they keep is asked for again (more than half the
time, :data:`WANTED_MIN_HIT_FRACTION`), so that keeping comes back within a few hundred jobs of the
pattern starting to pay, not thousands (one frame a job, each asked again four jobs later, a cache of
32 frames and a set four times that: 641 jobs, against 2,432 at a fixed one probe in 32;
``tests/test_frame_cache.py``)."""
SET_FILES = 4096
"""The files the cache counts as the set being read (:meth:`FrameCache.note_file`), the most recently
read ones: a service that has read many files keeps no record of all of them."""
EXTRAS_PROBE_SHARE = 0.02
"""...and no more often than keeps the probes' conversions (measured cost times the extras a probe
would collect) within about this share of the jobs' own measured cost: on the CPU a probe collecting
a GOP prefix of 640x360 costs some 150 ms, and one in 32 jobs made epoch-random reading 0.54x."""
PROTECTED_SHARE = float(os.environ.get("ASYNCDECODE_FRAME_CACHE_PROTECTED", "0.8"))
"""The frame cache's protected segment, at most this share of its bytes (:class:`ByteLru`): frames hit
once stay while frames asked for once each pass through the rest. Reading a set four or two times the
cache in a new random order each epoch, one LRU list let the frames that pay (a frame kept and hit in
one epoch is asked for in the next) be pushed out by those that do not (probes, kept frames, extras),
and once gone, counted as hits, they turned keeping back on. Measured on the 2-core CPU (2026-12-05,
matrix_bench's cache cells, 640x360 HEVC, 6 files, three epochs; four runs of each, alternating), x no
cache over all epochs: at a quarter of the set 0.91-1.05 (one list: 0.97-1.03), decoding 2-5% more
frames but converting half the extras; at half the set 1.04-1.28 (1.00-1.13), with 10-20% more hits
for half the copies. On an H100 (same day, 24 such files, four epochs, four rounds in one process, each
against its own no-cache run): at a quarter 0.85-1.14, median 1.09 (one list 0.78-1.08, 1.03; higher
in every round); at half 1.02-1.49, median 1.07 (1.14-1.34, 1.16; lower in three rounds of four).
``ASYNCDECODE_FRAME_CACHE_PROTECTED`` sets it (0: one LRU list)."""
_DECAY = 1.0 - 1.0 / EXTRAS_WINDOW


class ByteLru(Generic[T]):
    """Least-recently-used items, bounded by their total size in bytes.

    With ``protected_share`` above 0 it is a segmented LRU: an item comes in on *probation*, and its
    first hit moves it to the *protected* segment, at most that share of the capacity (beyond it, the
    protected items hit least recently go back to probation, at its recent end). Room is made on
    probation first, so a stream of items that are never hit (a scan, an epoch's frames that come
    once each) cycles through probation and leaves what was hit in place; the items of one batch
    (:meth:`together`) never make room among each other while protected ones can. ``0``: one LRU
    list.

    An item larger than the whole capacity is not kept. Evicting an item only drops the cache's
    reference: whoever else holds it keeps it alive.
    """

    def __init__(self, capacity_bytes: int, protected_share: float = 0.0) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, not {capacity_bytes}")
        if not 0.0 <= protected_share < 1.0:
            raise ValueError(f"protected_share must be in [0, 1), not {protected_share}")
        self.capacity_bytes = capacity_bytes
        self.protected_share = protected_share
        self._items: OrderedDict[Hashable, T] = OrderedDict()  # on probation (every item, when not segmented)
        self._protected: OrderedDict[Hashable, T] = OrderedDict()
        self.nbytes = 0
        self.protected_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._batch: Collection[Hashable] = ()  # keys being put together (:meth:`together`)

    def size(self, item: T) -> int:
        raise NotImplementedError

    @contextlib.contextmanager
    def together(self, keys: Collection[Hashable]) -> Iterator[None]:
        """Puts within are of one batch (a decode job's frames): room for them is made among the other
        items, on probation first, then protected ones, never among each other (unless the batch is
        larger than the whole capacity)."""
        self._batch = keys if isinstance(keys, (set, frozenset)) else frozenset(keys)  # looked up per eviction
        try:
            yield
        finally:
            self._batch = ()

    def get(self, key: Hashable) -> T | None:
        item = self._protected.get(key)
        if item is not None:
            self._protected.move_to_end(key)
        else:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            if self.protected_share > 0.0:
                self._protect(key, item)
            else:
                self._items.move_to_end(key)
        self.hits += 1
        return item

    def _protect(self, key: Hashable, item: T) -> None:
        """Move ``key`` from probation to the protected segment."""
        del self._items[key]
        self._protected[key] = item
        self.protected_bytes += self.size(item)
        self._bound_protected()

    def _bound_protected(self) -> None:
        """The protected items used least recently beyond the segment's share go back to probation, as
        its most recent items (one more chance to be hit before they go)."""
        bound = self.protected_share * self.capacity_bytes
        while self.protected_bytes > bound and len(self._protected) > 1:
            old_key, old = self._protected.popitem(last=False)
            self.protected_bytes -= self.size(old)
            self._items[old_key] = old

    def put(self, key: Hashable, item: T) -> None:
        size = self.size(item)
        if size > self.capacity_bytes:
            return
        if key in self._protected:  # a new value of a protected item: it stays protected
            grown = size - self.size(self._protected[key])
            self._protected[key] = item
            self._protected.move_to_end(key)
            self.protected_bytes += grown
            self.nbytes += grown
            self._bound_protected()
        else:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= self.size(old)
            self._items[key] = item
            self.nbytes += size
        while self.nbytes > self.capacity_bytes:
            items = self._items  # probation's least recently used first, but not one of this batch:
            if self._protected and (not items or _in_batch(next(iter(items)), key, self._batch)):
                items = self._protected  # then the protected ones
            old_key, evicted = items.popitem(last=False)
            gone = self.size(evicted)
            self.nbytes -= gone
            if items is self._protected:
                self.protected_bytes -= gone
            self.evictions += 1
            self._evicted(old_key)

    def _evicted(self, key: Hashable) -> None:
        """Called for each item evicted to make room (not for ``clear``)."""

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items or key in self._protected

    def __len__(self) -> int:
        return len(self._items) + len(self._protected)

    def clear(self) -> None:
        self._items.clear()
        self._protected.clear()
        self.nbytes = 0
        self.protected_bytes = 0


class GopCache(ByteLru[GopBundle]):
    """GOP bundles (encoded data) by ``(path, stamp, gop)``."""

    def size(self, item: GopBundle) -> int:
        return item.nbytes


class _Payoff:
    """Whether the entries of one kind (extras, or wanted frames) pay for their admission: each admitted
    entry is *resolved* by its first hit or by leaving the cache unhit (or by being decoded again for
    a request of its own: it saved nothing), and counted, hit or not, when it leaves the cache (counted
    at their hits, hits would come a cache's lifetime ahead of the wastes and overstate the fraction
    while the pattern is still being learnt). The counts are decayed over about
    :data:`EXTRAS_WINDOW` of them, so the fraction follows a change of access pattern. O(1) per entry."""

    def __init__(self) -> None:
        self.waiting: set[Hashable] = set()  # admitted, neither hit nor gone yet
        self._hit_out: set[Hashable] = set()  # hit, still in the cache: counted when they leave
        self.admitted = 0
        self.hit = 0
        self.wasted = 0
        self.counted = 0
        self._hit_w = 0.0  # decayed counts of the counted: hit, and hit or wasted
        self._resolved_w = 0.0

    def admit(self, key: Hashable) -> None:
        self.waiting.add(key)
        self.admitted += 1

    def hit_on(self, key: Hashable) -> bool:
        """A get found ``key``; whether that was its first hit."""
        if key in self.waiting:
            self.waiting.discard(key)
            self.hit += 1
            self._hit_out.add(key)
            return True
        return False

    def saved_nothing(self, key: Hashable) -> bool:
        """``key`` was decoded again for a request of its own while waiting; whether it was waiting."""
        if key in self.waiting:
            self.waiting.discard(key)
            self._waste()
            return True
        return False

    def left(self, key: Hashable) -> bool:
        """``key`` was evicted; whether it left unhit (wasted)."""
        if key in self.waiting:
            self.waiting.discard(key)
            self._waste()
            return True
        if key in self._hit_out:
            self._hit_out.discard(key)
            self._count(hit=True)
        return False

    def _waste(self) -> None:
        self.wasted += 1
        self._count(hit=False)

    def _count(self, hit: bool) -> None:
        self.counted += 1
        self._hit_w = self._hit_w * _DECAY + hit
        self._resolved_w = self._resolved_w * _DECAY + 1.0

    @property
    def fraction(self) -> float | None:
        """Decayed hit fraction of the counted; ``None`` before any."""
        return self._hit_w / self._resolved_w if self._resolved_w else None

    def pays(self, threshold: float) -> bool:
        return self._hit_w >= threshold * self._resolved_w

    def clear(self) -> None:
        self.waiting.clear()
        self._hit_out.clear()


class FrameCache(ByteLru[torch.Tensor]):
    """Decoded frames in their output format, by ``(path, frame id, output spec)``, on the engine's device.

    Segmented (:class:`ByteLru`, :data:`PROTECTED_SHARE`): a frame comes in on probation and is
    protected by its first hit; room is made on probation first, and a decode job's own frames never
    make room among each other (:meth:`ByteLru.together`; they push protected frames out instead).
    Frames asked for once each (an epoch's) pass through probation and leave what was hit in place.

    Two kinds of entries: *wanted* frames (a request asked for them: kept while the set being read
    fits, or while they pay, :attr:`keeping`) and *extras* (frames that came out of the decoder on the
    way to a wanted one). Collecting extras costs a
    conversion and memory per frame, and pays only when they are asked for before they are evicted,
    so the cache measures that and :meth:`collect` decides, per decode job, whether to collect:

    * an extra entry is *resolved* by its first hit (``extras_hit``) or by its eviction unhit
      (``extras_wasted``); an extra still waiting is neither. A wanted frame put over a waiting extra
      (two jobs of one GOP in flight: the frame was decoded for its own request anyway) counts as
      wasted: the extra saved nothing. (Counted as hits, such frames made extras look worth
      collecting on the H200 at 25% of a set, where the cache then ran at 0.82x no cache.)
    * the hit fraction of extras, each counted when it leaves the cache (hit before or not; counted at
      their hits, hits would come a cache's lifetime ahead of the wastes; a protected entry leaves
      late, so while frames that were hit keep their place the fraction leans towards admitting
      less, see :data:`PROTECTED_SHARE`), decayed over about
      :data:`EXTRAS_WINDOW` of them (so that it follows a change of access pattern), must reach
      :attr:`threshold`: at least :attr:`min_hit_fraction`, and more where an extra's
      conversion is dear against what a hit saves (the costs decode jobs measured, :meth:`note_job`:
      on the CPU a conversion costs more than decoding a frame). Until :data:`EXTRAS_PROBATION`
      extras are counted (none before the cache is full), extras are collected where they are cheap
      (the starting guess) and the set of files read so far fits the cache (:meth:`note_file`),
      else only by probes: a set larger than the cache gives an extra a hit chance of about the
      cache's share of it, and extras cost more than the engine measures of them on the GPU (the
      decoder's map of each picture is in its decode time; on the H200 at 25% of a set extras
      collected on probation made the cache 0.87-0.93x no cache).
    * while extras do not pay, one decode job in :data:`EXTRAS_PROBE_EVERY` still collects (fewer where
      the probes' measured cost would pass :data:`EXTRAS_PROBE_SHARE` of the jobs'), so the
      estimate keeps being fed and recovers when the pattern changes (a second epoch over a set that
      fits).
    * a job that would collect more bytes than the whole capacity never collects: its own extras
      would evict each other.

    Wanted frames are decided the same way (their own hit fraction against :attr:`wanted_threshold`),
    and while they are not kept a probe job keeps its frames at most one job in
    :data:`EXTRAS_PROBE_EVERY`, more often while those frames are asked for again (down to one job in
    :data:`WANTED_PROBE_FASTEST`), so that keeping comes back soon once the pattern pays.

    Unresolved extras cost at most one fill of the cache: evictions, and with them ``extras_wasted``,
    start once it is full. Everything is O(1) per job and per entry.
    """

    def __init__(self, capacity_bytes: int, *, cheap: bool = True,
                 min_hit_fraction: float = EXTRAS_MIN_HIT_FRACTION,
                 min_wanted_hit_fraction: float = WANTED_MIN_HIT_FRACTION,
                 protected_share: float = PROTECTED_SHARE) -> None:
        super().__init__(capacity_bytes, protected_share)
        self._cheap = cheap  # the prior, until a job's costs are noted (see break_even)
        self.min_hit_fraction = min_hit_fraction
        """The threshold's floor (:data:`EXTRAS_MIN_HIT_FRACTION`; the engine gives a GPU's cache
        :data:`EXTRAS_MIN_HIT_FRACTION_GPU`)."""
        self.min_wanted_hit_fraction = min_wanted_hit_fraction
        """:attr:`wanted_threshold` (:data:`WANTED_MIN_HIT_FRACTION`)."""
        self._probe_credit = 0.0  # seconds of probing the jobs since the last probe allow
        self._extras = _Payoff()
        self._wanted = _Payoff()
        self.extras_probes = 0  # jobs that collected only as a probe
        self.wanted_probes = 0  # jobs that kept their wanted frames only as a probe
        self._convert_s: float | None = None  # running averages: conversion per frame,
        self._decode_s: float | None = None  # and decoding per wanted frame
        self._since_probe = 0
        self._since_keep_probe = 0
        self._keep_probe_every = EXTRAS_PROBE_EVERY  # see WANTED_PROBE_FASTEST
        self._files: OrderedDict[Hashable, int] = OrderedDict()  # note_file's: file -> bytes of its frames
        self._set_bytes = 0

    def size(self, item: torch.Tensor) -> int:
        return item.numel() * item.element_size()

    def note_job(self, convert_s: float, converted: int, decode_s: float, wanted: int) -> None:
        """What a decode job that ran cost: ``convert_s`` over the ``converted`` frames it converted
        (wanted and extras), ``decode_s`` (decoding alone) over the ``wanted`` frames it was for."""
        if converted > 0:
            self._convert_s = _average(self._convert_s, convert_s / converted)
        if wanted > 0:
            self._decode_s = _average(self._decode_s, decode_s / wanted)

    @property
    def break_even(self) -> float | None:
        """The hit fraction at which collecting extras pays for itself: one extra's conversion over what
        a hit saves (decoding up to the frame, and converting it). Before a job's costs were noted, the
        prior the cache was made with: 0 where conversions are cheap (on the GPU), else 1."""
        if self._convert_s is None or self._decode_s is None:
            return 0.0 if self._cheap else 1.0
        saved = self._convert_s + self._decode_s
        return self._convert_s / saved if saved > 0 else 0.0

    @property
    def threshold(self) -> float:
        """The hit fraction extras must reach to be collected."""
        return max(self.min_hit_fraction, EXTRAS_COST_MARGIN * self.break_even)

    @property
    def extras_hit_fraction(self) -> float | None:
        """Decayed hit fraction of the extras counted (those that left the cache); ``None`` before any."""
        return self._extras.fraction

    @property
    def wanted_hit_fraction(self) -> float | None:
        """Decayed hit fraction of the wanted frames counted (those that left the cache)."""
        return self._wanted.fraction

    # the counters stats() reports
    extras_admitted = property(lambda self: self._extras.admitted)
    extras_hit = property(lambda self: self._extras.hit)
    extras_wasted = property(lambda self: self._extras.wasted)
    wanted_admitted = property(lambda self: self._wanted.admitted)
    wanted_hit = property(lambda self: self._wanted.hit)
    wanted_wasted = property(lambda self: self._wanted.wasted)

    @property
    def collecting(self) -> bool:
        """Whether extras pay (or are still on probation): jobs collect them; otherwise only probes do."""
        threshold = self.threshold
        if self.capacity_bytes <= 0:
            return False
        if self._extras.counted < EXTRAS_PROBATION:
            if self._set_bytes > self.capacity_bytes:
                return False  # the set does not fit: extras must show they pay, by probes, first
            # on probation (none counted before the cache is full): the costs' guess, not the floor
            return EXTRAS_COST_MARGIN * self.break_even <= EXTRAS_CHEAP
        return self._extras.pays(threshold)

    @property
    def keeping(self) -> bool:
        """Whether wanted frames pay for their copies: while the set being read fits the cache, or their
        hit fraction (counted as the extras', :class:`_Payoff`) reaches :attr:`wanted_threshold`. A
        wanted frame costs a copy made on the decoder thread and its room; on an epoch-random read of
        a set four times the cache, about a quarter of them are hit, and a hit often saves little
        (the GOP is decoded anyway for the other frames of the requests in flight)."""
        if self.capacity_bytes <= 0:
            return False
        if self._set_bytes <= self.capacity_bytes or self._wanted.counted < EXTRAS_PROBATION:
            return True  # fits, or not known yet (none counted before the cache is full)
        return self._wanted.pays(self.wanted_threshold)

    @property
    def wanted_threshold(self) -> float:
        """The hit fraction wanted frames must reach to be kept where the set does not fit."""
        return self.min_wanted_hit_fraction

    def keep(self) -> bool:
        """Whether a decode job about to run should keep copies of its wanted frames (called once per
        job that decodes, with the cache on): :attr:`keeping`, or else one job in
        :data:`EXTRAS_PROBE_EVERY` as a probe, so that the estimate recovers when the pattern changes
        (entries admitted this rarely live long: their hit fraction shows what admitting fewer gives)."""
        if self.keeping:
            self._since_keep_probe = 0
            self._keep_probe_every = EXTRAS_PROBE_EVERY
            return True
        self._since_keep_probe += 1
        if self._since_keep_probe >= self._keep_probe_every:
            self._since_keep_probe = 0
            self.wanted_probes += 1
            return True
        return False

    def collect(self, job_bytes: int, extras: int = 0) -> bool:
        """Whether a decode job about to run should collect its extras: ``job_bytes`` is about what it
        would collect (frames on the way times the bytes of one), ``extras`` about how many frames.
        Called once per job that decodes."""
        if job_bytes > self.capacity_bytes:
            return False
        if self.collecting:
            self._since_probe = 0
            return True
        self._since_probe += 1
        job_s = (self._decode_s or 0.0) + (self._convert_s or 0.0)
        if job_s > 0:
            self._probe_credit += EXTRAS_PROBE_SHARE * job_s
        if self._convert_s is None and not self._cheap:
            return False  # nothing measured yet (the first jobs are still running): no blind probe
        need = extras * (self._convert_s or 0.0)  # seconds the probe would spend converting
        if self._since_probe >= EXTRAS_PROBE_EVERY and (need <= 0 or self._probe_credit >= need):
            self._since_probe = 0
            self._probe_credit = 0.0
            self.extras_probes += 1
            return True
        return False

    def note_file(self, key: Hashable, nbytes: int) -> None:
        """The frames of a file being read take ``nbytes`` in the cache's format (told per decode job;
        O(1)): the set is the sum over the last :data:`SET_FILES` files told. While it fits the capacity, extras
        start collected (probation); once it does not, an extra's chance of a hit before eviction
        is about the capacity's share of the set, and extras start not collected: only probes
        collect, until the hits they measure show that extras pay."""
        files = self._files
        old = files.pop(key, 0)
        files[key] = nbytes  # the most recently read last
        self._set_bytes += nbytes - old
        if len(files) > SET_FILES:  # files not read for a long while leave the set
            _, gone = files.popitem(last=False)
            self._set_bytes -= gone

    def get(self, key: Hashable) -> torch.Tensor | None:
        item = super().get(key)
        if item is not None:
            self._extras.hit_on(key)
            if self._wanted.hit_on(key):
                self._probe_pace(hit=True)
        return item

    def _probe_pace(self, hit: bool) -> None:
        """A kept wanted frame was hit for the first time, or left unhit: probes come faster or slower
        (see :data:`WANTED_PROBE_FASTEST`). The pace counts only while wanted frames are not kept:
        :meth:`keep` sets it back to :data:`EXTRAS_PROBE_EVERY` at every job while they are."""
        every = self._keep_probe_every
        every = every // 2 if hit else every * 2
        self._keep_probe_every = min(EXTRAS_PROBE_EVERY, max(WANTED_PROBE_FASTEST, every))

    def put(self, key: Hashable, item: torch.Tensor, *, extra: bool = False) -> None:
        """Admit ``item``; ``extra``: it came out on the way, nobody asked for it (yet)."""
        if self.size(item) > self.capacity_bytes:
            return
        if key in self:
            # already cached: refreshed; a waiting entry stays one (its admission is counted once),
            # unless a job decoded it for a request of its own (two jobs of one GOP in flight): then
            # it saved nothing, and counts as wasted
            if not extra:
                self._extras.saved_nothing(key)
                if self._wanted.saved_nothing(key):
                    self._probe_pace(hit=False)
        elif extra:
            self._extras.admit(key)
        else:
            self._wanted.admit(key)
        super().put(key, item)

    def _evicted(self, key: Hashable) -> None:
        self._extras.left(key)
        if self._wanted.left(key):
            self._probe_pace(hit=False)

    def clear(self) -> None:
        super().clear()
        self._extras.clear()
        self._wanted.clear()


def _in_batch(key: Hashable, put: Hashable, batch: Collection[Hashable]) -> bool:
    """Whether ``key`` is the item being put, or one of its batch (put last, at probation's recent end:
    once probation's least recent item is one, all of probation is)."""
    return key == put or key in batch


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + _COST_WEIGHT * (new - old)
