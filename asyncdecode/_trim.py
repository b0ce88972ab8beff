"""Host memory given back to the system after large frees.

NVDEC decoders hold tens of MB of host heap each (most of it the parser's) and a busy engine makes and
closes them as the mix of stream shapes changes. glibc keeps what they free in its arenas, where the
next allocations do not always fit: on an H200 soak (48 files of 25 shapes, 16 callers) RSS grew
about 20% per 10 minutes with the heap in use flat, and ``malloc_trim`` at the end gave back 1.7 of
2.4 GB. So after decoders or parsers are closed the engine calls ``malloc_trim(0)``, at most once per
:data:`MIN_INTERVAL_S` and only once :data:`EVERY` of them went since the last time (a trim walks
the arenas: tens of milliseconds on a heap of gigabytes, never on the event loop).

Decoders that stay open grow the resident memory too: each decoder thread allocates its frames from
a malloc arena of its own, and an arena's pages stay resident once touched. On a 28-minute CPU soak
(12 files, 2 decoder threads, few decoders closed) RSS rose in 64-MiB steps from 468 to 646 MiB while
the heap in use moved between 190 and 315 MiB; the two threads' arenas held 191 MB each, 105-137 MB
of it free, and a trim at the end gave it back. So a decoder thread also reads the process's
resident memory after a job, at most every :data:`CHECK_S`, and trims when it grew by
:data:`GROWTH_BYTES` over what it was after the last trim: a bound on how far RSS runs ahead of what
is in use that does not grow with the process (an engine on a GPU runs at a few GB resident).

Device memory has the same shape: torch's caching allocator keeps the blocks the engine's frames free,
and a mix of frame sizes leaves it holding more and more segments that no new block fits. On a
7-minute H200 soak (48 files of 25 shapes) the memory it reserved rose 2688 -> 2978 MiB with 450-900
MiB in use between bursts, its segments 200 -> 235. So a decoder thread on a GPU also reads what the
allocator holds beyond what is in use (:func:`device_grown`), at most every :data:`CHECK_S`, and
empties its cache (``torch.cuda.empty_cache()``: a device-wide synchronization, so at most once per
:data:`DEVICE_MIN_INTERVAL_S`) when that grew by :data:`DEVICE_GROWTH_BYTES` over what it was after
the last time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["Trimmer", "device_grown", "device_trimmer", "flush", "freed", "grown"]

log = logging.getLogger("asyncdecode")

MIN_INTERVAL_S = float(os.environ.get("ASYNCDECODE_MALLOC_TRIM_S", "10"))
"""Seconds between two trims at least (``ASYNCDECODE_MALLOC_TRIM_S``; 0 or less: never trim)."""
EVERY = 8
"""Decoders or parsers closed since the last trim before the next one."""
CHECK_S = 5.0
"""Seconds between two reads of the resident memory at least (:meth:`Trimmer.grown`)."""
GROWTH_BYTES = 32 << 20
"""Growth of the resident memory over its size after the last trim that starts a trim."""
DEVICE_MIN_INTERVAL_S = float(os.environ.get("ASYNCDECODE_CUDA_TRIM_S", "30"))
"""Seconds between two emptyings of a GPU's cached blocks at least (``ASYNCDECODE_CUDA_TRIM_S``; 0 or
less: never)."""
DEVICE_GROWTH_BYTES = 1 << 30
"""Growth of the device memory torch holds beyond what is in use, over that after the last emptying,
that starts one: the soak's bursts allocate about a GiB more than the quiet between them uses."""


def _libc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or ``None`` where the C library has none (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm_rss() -> int | None:
    """The process's resident memory in bytes, from ``/proc/self/statm``; ``None`` where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class Trimmer:
    """Trims the heap when enough large frees went, or the resident memory grew enough, and the last
    trim is long enough ago.

    Args:
        trim: What gives memory back (default: glibc's ``malloc_trim(0)``; ``None`` where absent).
        every: Frees between trims.
        min_interval_s: Seconds between trims at least; 0 or less turns trimming off.
        clock: Monotonic seconds.
        rss: The size it follows, in bytes, or ``None`` where unknown: by default the process's
            resident memory, from ``/proc/self/statm`` (:func:`device_trimmer`'s: what torch's
            allocator holds on a GPU beyond what is in use).
        check_s: Seconds between two reads of ``rss`` at least.
        growth: Bytes of growth since the last trim that start a trim.
    """

    def __init__(self, trim: Callable[[], object] | None = None, *, every: int = EVERY,
                 min_interval_s: float = MIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 rss: Callable[[], int | None] = _statm_rss, check_s: float = CHECK_S,
                 growth: int = GROWTH_BYTES) -> None:
        self._trim = trim
        self._on = trim is not None and min_interval_s > 0
        self._every = max(1, every)
        self._interval = min_interval_s
        self._clock = clock
        self._rss = rss
        self._check_s = check_s
        self._growth = growth
        self._lock = threading.Lock()
        self._pending = 0
        self._last = -float("inf")
        self._next_check = -float("inf")
        self._floor: int | None = None
        """Resident bytes after the last trim (or at the first check)."""
        self.trims = 0
        """Trims done so far."""
        self.grown_trims = 0
        """Of which started by the resident memory's growth."""
        self.given_back = 0
        """Bytes the trims gave back, in all (``rss`` before each less after)."""

    def freed(self, count: int = 1) -> bool:
        """``count`` large objects were freed; trims (on this thread) when due. Returns whether it did."""
        if not self._on:
            return False
        with self._lock:
            self._pending += count
            now = self._clock()
            if self._pending < self._every or now - self._last < self._interval:
                return False
            self._pending, self._last = 0, now
        return self._run()

    def flush(self) -> bool:
        """Trim now if anything was freed since the last trim, whatever the interval (an engine
        closing: its decoders all went at once). Returns whether it did."""
        if not self._on:
            return False
        with self._lock:
            if not self._pending:
                return False
            self._pending, self._last = 0, self._clock()
        return self._run()

    def grown(self) -> bool:
        """After a decode job (on its thread): reads ``rss`` (the resident memory), at most every
        ``check_s``, and trims when it grew by ``growth`` over its size after the last trim, and the
        last trim is ``min_interval_s`` ago. Returns whether it trimmed."""
        if not self._on:
            return False
        now = self._clock()
        if now < self._next_check:  # read without the lock: a stale value only moves one check
            return False
        with self._lock:
            if now < self._next_check:
                return False
            self._next_check = now + self._check_s
            rss = self._rss()
            if rss is None:
                self._next_check = float("inf")  # no such figure here: never read again
                return False
            if self._floor is None:
                self._floor = rss
                return False
            if rss - self._floor < self._growth or now - self._last < self._interval:
                return False
            self._pending, self._last = 0, now
        if not self._run():
            return False
        with self._lock:
            self.grown_trims += 1
        return True

    def _run(self) -> bool:
        """The trim itself, outside the lock; a failure is logged, never the closing caller's. The
        resident size after it is where the next growth counts from."""
        assert self._trim is not None
        before = self._rss()
        try:
            self._trim()
        except Exception as exc:
            log.debug("asyncdecode: a trim failed: %s", exc)
            return False
        after = self._rss()
        with self._lock:
            self.trims += 1
            if after is not None:
                self._floor = after
                if before is not None:
                    self.given_back += max(0, before - after)
        return True


_TRIMMER = Trimmer(_libc_trim())


def freed(count: int = 1) -> bool:
    """The process's :class:`Trimmer`: ``count`` decoders or parsers were closed."""
    return _TRIMMER.freed(count)


def flush() -> bool:
    """The process's :class:`Trimmer`: trim now if anything was freed since its last trim."""
    return _TRIMMER.flush()


def grown() -> bool:
    """The process's :class:`Trimmer`: a decode job ended; trim if the resident memory grew enough."""
    return _TRIMMER.grown()


_DEVICE_TRIMMERS: dict[int, Trimmer] = {}
_DEVICE_LOCK = threading.Lock()


def _cuda_slack(index: int) -> Callable[[], int | None]:
    """Bytes torch's allocator reserves on GPU ``index`` beyond those allocated."""
    import torch

    def slack() -> int | None:
        try:
            return torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        except Exception:  # no such figure here: the trimmer stops reading it
            return None
    return slack


def _cuda_empty(index: int) -> Callable[[], object]:
    import torch

    def empty() -> None:
        with torch.cuda.device(index):
            torch.cuda.empty_cache()
    return empty


def device_trimmer(index: int) -> Trimmer:
    """The process's :class:`Trimmer` of GPU ``index``'s cached blocks (made on first use)."""
    trimmer = _DEVICE_TRIMMERS.get(index)
    if trimmer is None:
        with _DEVICE_LOCK:
            trimmer = _DEVICE_TRIMMERS.get(index)
            if trimmer is None:
                trimmer = Trimmer(_cuda_empty(index), min_interval_s=DEVICE_MIN_INTERVAL_S,
                                  rss=_cuda_slack(index), growth=DEVICE_GROWTH_BYTES)
                _DEVICE_TRIMMERS[index] = trimmer
    return trimmer


def device_grown(device: object) -> bool:
    """A decode job on ``device`` (a ``torch.device``) ended: empty the GPU's cached blocks if what
    torch holds there beyond what is in use grew enough (:data:`DEVICE_GROWTH_BYTES`). Returns whether
    it did; nothing on other devices."""
    if getattr(device, "type", None) != "cuda" or DEVICE_MIN_INTERVAL_S <= 0:
        return False
    index = getattr(device, "index", None)
    if index is None:
        import torch

        index = torch.cuda.current_device()
    return device_trimmer(index).grown()
