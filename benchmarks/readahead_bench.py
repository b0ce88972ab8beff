"""Clips read front to back through ``Engine.stream``: one frame per request against sixteen, GOP
read-ahead on and off, side by side in one run.

    python benchmarks/readahead_bench.py [--device cpu|cuda] [--size WxH] [--frames N] [--data DIR] [--out DIR] [--repeat N]

Files: 6 clips of HEVC (1600x900 on the GPU, GOP 30, 235 frames; 640x360, GOP 30, 120 frames on the
CPU, where 1600x900 decodes at a few dozen frames/s), made under ``--data`` when missing. Cells: 1
clip and 6 clips x 1 / 4 / 16 frames per clip and request, ``stream(depth=16)`` (depth 4 for 16
frames), read-ahead on (default budget) and off (``_readahead.BUDGET_BYTES = 0``), each ``--repeat``
times alternating, each run a fresh engine that streams the requests once untimed (decoders made,
GOPs read) and is timed on the next ``--passes`` passes in one stream (8 on the GPU: one pass of a
clip at 6000 frames/s takes 40 ms, where the stream's start and end would be what is timed); frames/s, decoded per returned frame and the read-ahead
counters of the timed pass. Reported: the
1-frame cells against the 16-frame cells (issue 19's target: >= 0.8x) and read-ahead on against off.
On the GPU the same run also times PyNvVideoCodec (``--no-contenders`` leaves it out), each for
2 s after a 0.3 s warm-up: a ThreadedDecoder per clip and a thread each, ``get_batch_frames`` of 1 and
of 16 frames (the better one is the contender), for 1 clip and for the 6; and the hardware's ceiling:
6, 12 and 18 ThreadedDecoders over the 6 clips at 16 frames per call, the best decoded frames/s;
and the engine's own ceiling, 7, 10 and 14 decoder threads on the 6 clips read 3 times side by side
at 16 frames per request (decoded frames/s): the ceiling is the best of both.
Issue 19's targets against them: 6 clips at 1 frame per request >= 2x the contender and >= 0.7x the
ceiling; 1 clip at 1 frame per request >= 3x one decoder on that clip.

JSON and a table go to ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import busy_cpu_s  # noqa: E402

SIZES = {"cuda": (1600, 900, 235), "cpu": (640, 360, 120)}
CLIPS = 6
PER_REQUEST = (1, 4, 16)


def _make(args: tuple[str, int, int, int, int]) -> str:
    from asyncdecode.testing import VideoSpec, make_video

    path, w, h, n, seed = args
    return str(make_video(path, VideoSpec("hevc", w, h, num_frames=n, gop=30, seed=seed)))


def ensure_files(root: Path, w: int, h: int, n: int) -> list[str]:
    folder = root / f"clips_{w}x{h}_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(str(folder / f"cam{i}.mp4"), w, h, n, 500 + i) for i in range(CLIPS)
            if not (folder / f"cam{i}.mp4").exists()]
    if todo:
        print(f"encoding {len(todo)} clips of {w}x{h} ...", flush=True)
        with concurrent.futures.ProcessPoolExecutor(min(len(todo), os.cpu_count() or 1)) as ex:
            list(ex.map(_make, todo))
    return [str(folder / f"cam{i}.mp4") for i in range(CLIPS)]


def requests(paths: list[str], frames: int, per: int) -> list[tuple[list[str], list[int]]]:
    return [([p for p in paths for _ in range(per)], [f for _ in paths for f in range(lo, lo + per)])
            for lo in range(0, frames - per + 1, per)]


async def cell(device: str, paths: list[str], per: int, ahead: bool, passes: int = 1) -> dict[str, Any]:
    from asyncdecode import Engine, _readahead, probe

    frames = min(probe(p).num_frames for p in paths)
    reqs = requests(paths, frames, per)
    timed = reqs * passes  # the clips read again and again in one stream: a steady rate, not a start-up
    depth = 16 if per < 16 else 4
    saved = _readahead.BUDGET_BYTES
    _readahead.BUDGET_BYTES = saved if ahead else 0
    try:
        async with Engine(device=device) as eng:
            for p in paths:
                await eng.info(p)
            async for _ in eng.stream(reqs, depth=depth):  # warm: decoders made, GOPs read (not timed)
                pass
            if device == "cuda":
                torch.cuda.synchronize()
            before = eng.stats()
            b0, c0, t0 = busy_cpu_s(), time.process_time(), time.perf_counter()
            n = 0
            async for got in eng.stream(timed, depth=depth):
                n += len(got)
            if device == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            s = eng.stats()
    finally:
        _readahead.BUDGET_BYTES = saved
    return {"clips": len(paths), "frames_per_request": per, "read_ahead": ahead, "depth": depth, "passes": passes,
            "frames": n,
            "seconds": wall, "frames_per_s": n / wall, "cpu_ms_per_frame": 1e3 * cpu / max(1, n),
            "decoded_per_returned": (s["frames_decoded"] - before["frames_decoded"]) / max(1, n),
            "decoder_threads": s["decoder_threads"],
            "decoders_created_timed": s["decoders_created"] - before["decoders_created"],
            "other_processes_cores": max(0.0, (busy_cpu_s() - b0 - cpu) / wall),
            **{k: v - before[k] for k, v in s.items() if k.startswith("read_ahead")}}


ENGINE_CEILING_THREADS = (7, 10, 14)


async def engine_ceiling(paths: list[str], threads: int, repeats: int = 3, device: str = "cuda") -> dict[str, Any]:
    """The engine's best decoded frames/s with ``threads`` decoder threads: the clips each read
    ``repeats`` times side by side, each from another point on (``len(paths) * repeats`` streams), 16
    frames per request, many in flight; timed on the second pass of one engine."""
    from asyncdecode import Engine, EngineConfig, probe

    frames = min(probe(p).num_frames for p in paths)
    starts = list(range(0, frames, 16))
    # Each repeat of a clip reads from another point on (wrapping round): distinct GOPs, nothing merged.
    turns = [starts[r * len(starts) // repeats:] + starts[:r * len(starts) // repeats] for r in range(repeats)]
    reqs = [(p, list(range(t[i], min(t[i] + 16, frames)))) for i in range(len(starts)) for t in turns for p in paths]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    async with Engine(device=device, config=EngineConfig(decoder_threads=threads)) as eng:
        async def one_pass() -> None:
            async for _ in eng.stream(reqs, depth=4 * len(paths) * repeats):
                pass
        await one_pass()
        sync()
        before = eng.stats()
        t0 = time.perf_counter()
        await one_pass()
        sync()
        wall = time.perf_counter() - t0
        decoded = eng.stats()["frames_decoded"] - before["frames_decoded"]
    return {"decoder_threads": threads, "streams": len(paths) * repeats, "frames_per_s": decoded / wall,
            "seconds": wall}


CONTENDER_WARM_S = 0.3
CONTENDER_S = 2.0
CEILING_DECODERS = (6, 12, 18)


def contenders(paths: list[str]) -> dict[str, Any]:
    """PyNvVideoCodec on the same clips (see the module's doc): frames/s by setting."""
    from matrix_bench import IsolatedContender, contender_available

    from asyncdecode import probe

    ok, note = contender_available("cuda")
    if not ok:
        return {"note": note}
    counts = [probe(p).num_frames for p in paths]
    out: dict[str, Any] = {"threaded": [], "ceiling": []}
    isolated = IsolatedContender()

    def run(files: list[str], counts: list[int], per: int, seed: int) -> dict[str, Any]:
        r = isolated(files, counts, "front", per, warm=CONTENDER_WARM_S, seconds=CONTENDER_S, seed=seed)
        return {**r, "frames_per_s": r.get("frames_per_s", 0.0)}

    try:
        for clips in (1, CLIPS):
            for per in (1, 16):
                r = run(paths[:clips], counts[:clips], per, per)
                out["threaded"].append({"clips": clips, "frames_per_call": per, **r})
                print(f"ThreadedDecoder x {clips}, {per:2d} frames per call: {r['frames_per_s']:7.0f} frames/s"
                      + (f" ({r['error']})" if "error" in r else ""), flush=True)
        for k in CEILING_DECODERS:
            r = run([paths[i % len(paths)] for i in range(k)], [counts[i % len(paths)] for i in range(k)], 16, k)
            out["ceiling"].append({"decoders": k, **r})
            print(f"ceiling: {k} ThreadedDecoders: {r['frames_per_s']:7.0f} frames/s"
                  + (f" ({r['error']})" if "error" in r else ""), flush=True)
    finally:
        isolated.close()
    return out


def against_contenders(rows: list[dict[str, Any]], cont: dict[str, Any]) -> list[str]:
    """Issue 19's targets, engine (read-ahead on, the default) against PyNvVideoCodec."""
    if not cont.get("threaded"):
        return []
    med = {k: statistics.median(r["frames_per_s"] for r in v) for k, v in _grouped(rows).items()}
    best = {c: max([r["frames_per_s"] for r in cont["threaded"] if r["clips"] == c and "error" not in r] or [0.0])
            for c in (1, CLIPS)}
    ceiling = max([r["frames_per_s"] for r in cont["ceiling"] + cont.get("engine_ceiling", []) if "error" not in r]
                  or [0.0])
    if not (best[1] and best[CLIPS] and ceiling):
        return ["PyNvVideoCodec cells failed (see the table): no ratios against them"]
    out = []
    six, one = med.get((CLIPS, 1, True)), med.get((1, 1, True))
    if six:
        out.append(f"{CLIPS} clips, 1 frame per request: {six:.0f} frames/s against ThreadedDecoder x {CLIPS} "
                   f"{best[CLIPS]:.0f}: {six / best[CLIPS]:.2f}x (target >= 2x: "
                   f"{'met' if six >= 2 * best[CLIPS] else 'not met'}); against the ceiling {ceiling:.0f}: "
                   f"{six / ceiling:.2f}x (target >= 0.7x: {'met' if six >= 0.7 * ceiling else 'not met'})")
    if one:
        out.append(f"1 clip, 1 frame per request: {one:.0f} frames/s against one ThreadedDecoder {best[1]:.0f}: "
                   f"{one / best[1]:.2f}x (target >= 3x: {'met' if one >= 3 * best[1] else 'not met'})")
    return out


def machine(device: str) -> dict[str, Any]:
    import av

    import asyncdecode

    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": device,
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "pyav": av.__version__, "asyncdecode": getattr(asyncdecode, "__version__", "?")}
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(0)
    return meta


def table(res: dict[str, Any]) -> str:
    rows = res["cells"]
    lines = [f"# readahead_bench — {res['meta'].get('gpu', 'CPU')}, {res['meta']['date']}", "",
             f"device {res['meta']['device']}; {res['meta']['cpus']} CPUs; torch {res['meta']['torch']}; "
             f"PyAV {res['meta']['pyav']}; files {res['files']}; read-ahead budget "
             f"{res.get('read_ahead_budget_bytes', 0) / 2**30:.2f} GiB per stream; median of {res['repeat']} runs per cell "
             f"(each run a fresh engine: one untimed pass over the clips, then {res.get('passes', 1)} timed passes in one stream; "
             "read-ahead on and off alternating).", "",
             "| clips | frames per request | read-ahead | frames/s (median) | runs | decoded/returned | "
             "GOPs ahead | frames ahead used / wasted |", "|---:|---:|---|---:|---|---:|---:|---:|"]
    for key, runs in _grouped(rows).items():
        clips, per, ahead = key
        med = statistics.median(r["frames_per_s"] for r in runs)
        lines.append(f"| {clips} | {per} | {'on' if ahead else 'off'} | {med:.0f} | "
                     f"{', '.join(format(r['frames_per_s'], '.0f') for r in runs)} | "
                     f"{statistics.median(r['decoded_per_returned'] for r in runs):.2f} | "
                     f"{runs[-1]['read_ahead_gops']} | {runs[-1]['read_ahead_used']} / {runs[-1]['read_ahead_wasted']} |")
    cont = res.get("contenders") or {}
    if cont.get("threaded"):
        lines += ["", f"PyNvVideoCodec, {CONTENDER_S:.0f} s each after {CONTENDER_WARM_S} s, one thread per decoder:", "",
                  "| contender | decoders | frames per call | frames/s |", "|---|---:|---:|---:|"]
        for r in cont["threaded"]:
            lines.append(f"| ThreadedDecoder per clip | {r['clips']} | {r['frames_per_call']} | "
                         f"{r.get('error') or format(r['frames_per_s'], '.0f')} |")
        for r in cont["ceiling"]:
            lines.append(f"| ceiling (clips repeated) | {r['decoders']} | 16 | "
                         f"{r.get('error') or format(r['frames_per_s'], '.0f')} |")
    if cont.get("engine_ceiling"):
        lines += ["", "The hardware's ceiling as the engine reaches it: decoded frames/s (read-ahead and frames "
                  "decoded on the way included), the 6 clips read 3 times side by side, 16 frames per request:", "",
                  "| decoder threads | streams | decoded frames/s |", "|---:|---:|---:|"]
        for r in cont["engine_ceiling"]:
            lines.append(f"| {r['decoder_threads']} | {r['streams']} | {r['frames_per_s']:.0f} |")
    elif cont.get("note"):
        lines += ["", cont["note"]]
    lines += ["", "## Ratios", ""]
    for line in res["ratios"]:
        lines.append(f"- {line}")
    return "\n".join(lines) + "\n"


def _grouped(rows: list[dict[str, Any]]) -> dict[tuple[int, int, bool], list[dict[str, Any]]]:
    out: dict[tuple[int, int, bool], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["clips"], r["frames_per_request"], r["read_ahead"]), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], not kv[0][2])))


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    med = {k: statistics.median(r["frames_per_s"] for r in v) for k, v in _grouped(rows).items()}
    out = []
    for clips in sorted({k[0] for k in med}):
        for ahead in (True, False):
            one, sixteen = med.get((clips, 1, ahead)), med.get((clips, 16, ahead))
            if one and sixteen:
                out.append(f"{clips} clip(s), read-ahead {'on' if ahead else 'off'}: 1 frame per request "
                           f"{one:.0f} frames/s against 16 per request {sixteen:.0f}: {one / sixteen:.2f}x "
                           f"(target >= 0.8x: {'met' if one >= 0.8 * sixteen else 'not met'})")
        for per in PER_REQUEST:
            on, off = med.get((clips, per, True)), med.get((clips, per, False))
            if on and off:
                out.append(f"{clips} clip(s), {per} frame(s) per request: read-ahead on / off {on / off:.2f}x")
    return out


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default="/tmp/readahead_bench")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", help="clip size WxH (default 1600x900 on the GPU, 640x360 on the CPU)")
    ap.add_argument("--frames", type=int, help="frames per clip (default 235 on the GPU, 120 on the CPU)")
    ap.add_argument("--no-contenders", action="store_true", help="leave PyNvVideoCodec out (GPU)")
    ap.add_argument("--passes", type=int, default=None,
                    help="times the clips are read front to back in the timed stream (default 8 on the GPU, "
                         "where one pass of a clip takes 40 ms, 1 on the CPU)")
    args = ap.parse_args(argv)
    if args.passes is None:
        args.passes = 8 if args.device == "cuda" else 1
    w, h, n = SIZES[args.device]
    if args.size:
        w, h = (int(v) for v in args.size.lower().split("x"))
    n = args.frames or n
    paths = ensure_files(Path(args.data), w, h, n)
    from asyncdecode import _readahead

    budget = _readahead.budget("cuda:0" if args.device == "cuda" else args.device)  # the engine's, per stream
    res: dict[str, Any] = {"meta": machine(args.device), "files": f"{CLIPS} x {w}x{h} HEVC GOP 30, {n} frames",
                           "repeat": args.repeat, "cells": [], "read_ahead_budget_bytes": budget,
                           "passes": args.passes}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "readahead_bench" + ("" if args.device == "cuda" else "_cpu") + (f"_{w}x{h}" if args.size else "")

    def write() -> None:
        """What was measured so far (written after each stage: a later crash keeps the earlier cells)."""
        res["ratios"] = ratios(res["cells"]) + against_contenders(res["cells"], res.get("contenders") or {})
        (out / f"{name}.json").write_text(json.dumps(res, indent=1))
        (out / f"{name}.md").write_text(table(res))

    for clips in (1, CLIPS):
        for per in PER_REQUEST:
            for _ in range(args.repeat):
                for ahead in (True, False):
                    r = await cell(args.device, paths[:clips], per, ahead, args.passes)
                    res["cells"].append(r)
                    print(f"{clips} clip(s) {per:2d} f/req read-ahead {'on ' if ahead else 'off'}: "
                          f"{r['frames_per_s']:7.0f} frames/s, {r['decoded_per_returned']:.2f} decoded/returned, "
                          f"{r['read_ahead_gops']} GOPs ahead ({r['read_ahead_used']} used, "
                          f"{r['read_ahead_wasted']} wasted)", flush=True)
        write()
    if args.device == "cuda" and not args.no_contenders:
        res["contenders"] = {"engine_ceiling": []}
        for k in ENGINE_CEILING_THREADS:
            r = await engine_ceiling(paths, k)
            res["contenders"]["engine_ceiling"].append(r)
            print(f"ceiling: the engine, {k} decoder threads: {r['frames_per_s']:7.0f} decoded frames/s", flush=True)
        write()
        res["contenders"].update(contenders(paths))
    write()
    print("\n".join(res["ratios"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
