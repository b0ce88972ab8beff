"""The read-ahead planner on its own: clips read front to back through ``Engine.stream`` on a decoder of
known speed, so that what is measured is how busy the planning keeps the decoder threads, anywhere.

    python benchmarks/planner_bench.py [--picture-ms 0.7] [--threads 10] [--clips 6] [--frames 120]
                                       [--per 1,16] [--passes 8] [--repeat 3] [--out DIR]

The engine runs on the CPU backend with its decoder replaced by one that takes ``--picture-ms`` per
picture with the GIL released (a sleep, as an NVDEC session waits on the hardware) and returns one
preallocated frame: no decoding, no conversion. So the frame rate is bounded by ``threads /
picture time`` (the *ideal*), and what keeps it under that is the engine: the planner leaving
threads idle, a GOP decoded on one session while others wait, the event loop. The read-ahead plans
as on a GPU (requests of any size read ahead; ``--cpu-planning``: as on the CPU). 0.7 ms a picture is
about what one NVDEC session of an H200 takes on 1600x900 HEVC (10 sessions: 14.3k frames/s ideal,
11.3k measured as the hardware's ceiling).

Files: ``--clips`` clips of 640x360 HEVC, GOP 30, ``--frames`` frames (made under ``--data`` when
missing; their content does not matter here). Each cell: ``--per`` frames per clip and request,
``stream(depth=16)`` (depth 4 for 16 frames or more), one untimed pass, then ``--passes`` passes in one
timed stream; ``--repeat`` times. Reported per cell (median of the repeats): frames/s, the ideal and
the share of it reached, decoder threads busy on average (time inside a session's decode, summed over
threads, over the wall time), jobs, frames decoded per returned, GOPs read ahead, the slowest and
fastest pass. JSON and a table go to ``--out`` (default ``benchmarks/results``, ``planner_bench.*``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import readahead_bench as rb  # noqa: E402  (its clips and requests)
from _machine import busy_cpu_s, wait_quiet  # noqa: E402


class _Busy:
    """Time-weighted count of sessions inside a decode (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.busy, self.area, self.jobs, self.t = 0, 0.0, 0, time.perf_counter()

    def step(self, delta: int) -> None:
        with self._lock:
            now = time.perf_counter()
            self.area += self.busy * (now - self.t)
            self.t, self.busy = now, self.busy + delta
            self.jobs += delta > 0


def _install(picture_s: float, threads: int, busy: _Busy, cpu_planning: bool) -> None:
    """Replace the CPU backend's sessions with sleeping ones (this process only); unless
    ``cpu_planning``, the read-ahead plans as on a GPU."""
    from asyncdecode._backends import cpu as cpu_mod

    class _Picture:
        __slots__ = ("pts",)

        def __init__(self, pts: int) -> None:
            self.pts = pts

    outputs: dict[tuple[int, int], torch.Tensor] = {}

    class SleepingSession(cpu_mod.CpuSession):
        def decode(self, *args: Any, **kwargs: Any) -> Any:
            busy.step(+1)
            try:
                return super().decode(*args, **kwargs)
            finally:
                busy.step(-1)

        def _create(self, bundle: Any) -> Any:
            self.counts.created += 1
            return object()

        def _send(self, decoder: Any, bundle: Any, i: int) -> list[Any]:
            time.sleep(picture_s)
            return [_Picture(int(bundle.packets["pts"][i]))]

        def _drain(self, decoder: Any) -> list[Any]:
            return []

        def _discard(self, decoder: Any, bundle: Any) -> None:
            pass

        def _keep_ahead(self, frame: Any, bundle: Any, params: Any, output: Any, soon: bool) -> Any:
            return cpu_mod.RAW, frame

        def _convert(self, frame: Any, bundle: Any, params: Any, output: Any) -> Any:
            key = (bundle.height, bundle.width)
            if key not in outputs:
                outputs[key] = torch.zeros((bundle.height, bundle.width, 3), dtype=torch.uint8)
            return outputs[key]

    if not cpu_planning:  # plan as on a GPU, whose sessions wait on the hardware like these
        from asyncdecode import _readahead

        _readahead.FEW_FRAMES.pop("cpu", None)
    cpu_mod.CpuBackend.new_session = lambda self: SleepingSession(1)  # type: ignore[method-assign]
    cpu_mod.CpuBackend.default_sessions = lambda self: threads  # type: ignore[method-assign]


async def _cell(paths: list[str], frames: int, per: int, passes: int, busy: _Busy) -> dict[str, Any]:
    from asyncdecode import Engine

    reqs = rb.requests(paths, frames, per)
    depth = 16 if per < 16 else 4
    async with Engine(device="cpu") as eng:
        for p in paths:
            await eng.info(p)
        async for _ in eng.stream(reqs, depth=depth):  # untimed: GOPs read, decoders made
            pass
        before = eng.stats()
        busy.reset()
        marks, n, k = [], 0, 0
        c0, m0 = time.process_time(), busy_cpu_s()
        t0 = time.perf_counter()
        async for got in eng.stream(reqs * passes, depth=depth):
            n += len(got)
            k += 1
            if k % len(reqs) == 0:
                marks.append(time.perf_counter())
        wall = time.perf_counter() - t0
        cpu, machine = time.process_time() - c0, busy_cpu_s() - m0
        busy.step(0)
        after = eng.stats()
    delta = {key: after[key] - before[key] for key in ("frames_decoded", "frames_returned", "read_ahead_gops",
                                                        "read_ahead_wasted")}
    pass_s = [b - a for a, b in zip([t0] + marks, marks)]
    return {"frames": n, "wall_s": wall, "frames_per_s": n / wall, "busy_threads": busy.area / wall,
            "jobs": busy.jobs, "decoded_per_returned": delta["frames_decoded"] / max(1, delta["frames_returned"]),
            "read_ahead_gops": delta["read_ahead_gops"], "read_ahead_wasted": delta["read_ahead_wasted"],
            "pass_s_min": min(pass_s), "pass_s_max": max(pass_s), "pass_s": pass_s, "cores": cpu / wall,
            "other_cores": max(0.0, (machine - cpu) / wall)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--picture-ms", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--clips", type=int, default=6, help=f"1..{rb.CLIPS}")
    ap.add_argument("--frames", type=int, default=120, help="frames per clip (GOP 30)")
    ap.add_argument("--per", default="1,16", help="frames per clip and request, comma separated")
    ap.add_argument("--passes", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu-planning", action="store_true",
                    help="plan as the CPU backend does (no read-ahead for requests of more than 2 frames of a file); "
                         "default: as on a GPU")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "readahead")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if not 1 <= args.clips <= rb.CLIPS:
        ap.error(f"--clips must be 1..{rb.CLIPS}")
    busy = _Busy()
    _install(args.picture_ms / 1000, args.threads, busy, args.cpu_planning)
    paths = rb.ensure_files(args.data, 640, 360, args.frames)[: args.clips]
    ideal = args.threads / (args.picture_ms / 1000)
    cells = []
    for per in (int(x) for x in args.per.split(",")):
        runs = []
        for r in range(args.repeat):
            waited = wait_quiet(10.0)
            res = asyncio.run(_cell(paths, args.frames, per, args.passes, busy))
            res["quiet_wait_s"] = waited
            runs.append(res)
            print(f"{args.clips} clips, {per} frame(s) per request, run {r + 1}: {res['frames_per_s']:7.0f} frames/s "
                  f"({res['frames_per_s'] / ideal:.2f} of ideal {ideal:.0f}), {res['busy_threads']:.2f} of "
                  f"{args.threads} threads busy, {res['jobs']} jobs, decoded/returned "
                  f"{res['decoded_per_returned']:.2f}, other processes {res['other_cores']:.2f} cores", flush=True)
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "pass_s"}
        cells.append({"per": per, "median": med, "runs": runs})
    out = {"meta": {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": len(__import__("os").sched_getaffinity(0))},
           "args": {k: str(v) for k, v in vars(args).items()}, "ideal_frames_per_s": ideal, "cells": cells}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planner_bench.json").write_text(json.dumps(out, indent=1))
    lines = [f"# planner_bench: {args.clips} clips x {args.frames} frames (GOP 30), a decoder of "
             f"{args.picture_ms} ms a picture, {args.threads} threads, planning as on "
             f"{'the CPU' if args.cpu_planning else 'a GPU'} ({out['meta']['date']}, "
             f"{out['meta']['cpus']} CPUs)", "",
             f"Ideal: {ideal:.0f} frames/s. Medians of {args.repeat} runs of {args.passes} timed passes.", "",
             "| frames per clip and request | frames/s | of ideal | threads busy | jobs | decoded / returned "
             "| GOPs read ahead | pass s (min..max) | other processes, cores |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for c in cells:
        m = c["median"]
        lines.append(f"| {c['per']} | {m['frames_per_s']:.0f} | {m['frames_per_s'] / ideal:.2f} | "
                     f"{m['busy_threads']:.2f} | {m['jobs']:.0f} | {m['decoded_per_returned']:.2f} | "
                     f"{m['read_ahead_gops']:.0f} | {m['pass_s_min']:.3f}..{m['pass_s_max']:.3f} | "
                     f"{m['other_cores']:.2f} |")
    (args.out / "planner_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
