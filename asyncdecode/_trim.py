"""Host memory given back to the system after large frees.

NVDEC decoders hold tens of MB of host heap each (most of it the parser's) and a busy engine makes and
closes them as the mix of stream shapes changes. glibc keeps what they free in its arenas, where the
next allocations do not always fit: on an H200 soak (48 files of 25 shapes, 16 callers) RSS grew
about 20% per 10 minutes with the heap in use flat, and ``malloc_trim`` at the end gave back 1.7 of
2.4 GB. So after decoders or parsers are closed the engine calls ``malloc_trim(0)``, at most once per
:data:`MIN_INTERVAL_S` and only once :data:`EVERY` of them went since the last time (a trim walks
the arenas: tens of milliseconds on a heap of gigabytes, never on the event loop).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["Trimmer", "flush", "freed"]

log = logging.getLogger("asyncdecode")

MIN_INTERVAL_S = float(os.environ.get("ASYNCDECODE_MALLOC_TRIM_S", "10"))
"""Seconds between two trims at least (``ASYNCDECODE_MALLOC_TRIM_S``; 0 or less: never trim)."""
EVERY = 8
"""Decoders or parsers closed since the last trim before the next one."""


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


class Trimmer:
    """Counts large frees and trims the heap when enough went and the last trim is long enough ago.

    Args:
        trim: What gives memory back (default: glibc's ``malloc_trim(0)``; ``None`` where absent).
        every: Frees between trims.
        min_interval_s: Seconds between trims at least; 0 or less turns trimming off.
        clock: Monotonic seconds.
    """

    def __init__(self, trim: Callable[[], object] | None = None, *, every: int = EVERY,
                 min_interval_s: float = MIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._trim = trim
        self._every = max(1, every)
        self._interval = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        self._last = -float("inf")
        self.trims = 0
        """Trims done so far."""

    def freed(self, count: int = 1) -> bool:
        """``count`` large objects were freed; trims (on this thread) when due. Returns whether it did."""
        if self._trim is None or self._interval <= 0:
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
        if self._trim is None or self._interval <= 0:
            return False
        with self._lock:
            if not self._pending:
                return False
            self._pending, self._last = 0, self._clock()
        return self._run()

    def _run(self) -> bool:
        """The trim itself, outside the lock; a failure is logged, never the closing caller's."""
        assert self._trim is not None
        try:
            self._trim()
        except Exception as exc:
            log.debug("asyncdecode: malloc_trim failed: %s", exc)
            return False
        self.trims += 1
        return True


_TRIMMER = Trimmer(_libc_trim())


def freed(count: int = 1) -> bool:
    """The process's :class:`Trimmer`: ``count`` decoders or parsers were closed."""
    return _TRIMMER.freed(count)


def flush() -> bool:
    """The process's :class:`Trimmer`: trim now if anything was freed since its last trim."""
    return _TRIMMER.flush()
