"""What the rest of the machine is doing, for the CPU benchmarks: busy time from ``/proc/stat``, and a
wait for the other processes to go quiet before a timed pass."""

from __future__ import annotations

import os
import time


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return float("nan")
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait_s: float, threshold_cores: float = 0.1, window_s: float = 0.5) -> float:
    """Wait (up to ``max_wait_s``) until the machine's other processes use fewer than ``threshold_cores``.

    Returns the seconds waited. This process is idle meanwhile, so the machine's busy time is theirs.
    Without ``/proc/stat`` the load is unknown and the wait ends after one window.
    """
    t0 = time.perf_counter()
    while True:
        b0, c0 = busy_cpu_s(), time.process_time()
        time.sleep(window_s)
        load = (busy_cpu_s() - b0 - (time.process_time() - c0)) / window_s
        waited = time.perf_counter() - t0
        if not load >= threshold_cores or waited >= max_wait_s:  # (nan: no /proc/stat)
            return waited
