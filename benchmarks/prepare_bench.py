"""``asyncdecode prepare`` on the CPU: random access before and after re-encoding a GOP-250 set.

Workload: 4 cameras of 640x360 H.264, 500 frames at 25 fps with a keyframe every 250 frames (what
phones and web video look like), made with ``asyncdecode.testing.make_video`` into
``benchmarks/data/`` (git-ignored) on the first run. The set is re-encoded with
``asyncdecode.prepare.prepare(gop=30)`` (libx264, defaults, worker processes) into a fresh folder,
timed. Then, in one process, the same random steps (one random frame from each camera per step, a
seeded RNG) run through ``Engine(device="cpu")`` on the original set and on the prepared one,
interleaved (before, after, before, after), each engine with a cold pass (GOP cache empty, indexes
built before the timer) and a warm pass (the same steps again).

Reported: the dry-run estimate (frames decoded per random frame before/after), the prepare run
(encode frames/s, sizes, PSNR), and per pass frames/s, CPU ms per frame and the engine's
``frames_decoded / frames_returned``, with after/before ratios. Machine, versions and date included.

    python benchmarks/prepare_bench.py [--steps 30] [--runs 2] [--gop 30] [--quality CRF] \
        [--out benchmarks/results/prepare_bench_cpu]

Writes ``OUT.json`` and ``OUT.md`` (overwritten; the table is printed too).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from asyncdecode import probe
from asyncdecode._encode import DEFAULT_QUALITY
from asyncdecode.prepare import estimate, prepare
from asyncdecode.testing import VideoSpec
from _machine import wait_quiet  # this folder (scripts run from it)
from cpu_random import Timer, ensure_clip_set, host_info, make_steps, run_engine, versions

HERE = pathlib.Path(__file__).resolve().parent
CAMERAS = 4
SPEC = VideoSpec(codec="h264", width=640, height=360, num_frames=500, gop=250, fps=25)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    src = ensure_clip_set(args.data_dir, SPEC, CAMERAS)
    src_dir = src[0].parent
    planned = asyncio.run(estimate(src_dir, gop=args.gop))
    dst_dir = args.data_dir / f"{src_dir.name}-prepared-gop{args.gop}"
    shutil.rmtree(dst_dir, ignore_errors=True)  # a fresh run every time: prepare itself is measured
    wait_quiet(args.quiet_timeout)
    with Timer() as t:
        summary = asyncio.run(prepare(src_dir, dst_dir, gop=args.gop, quality=args.quality, workers=args.workers,
                                      progress=True))
    if not summary.ok:
        raise SystemExit(f"prepare failed: {summary.failed}")
    prepared = summary.to_json()
    prepared.pop("files")
    # The workers are other processes: the machine's busy cores during the run are mostly theirs.
    prepared.update(wall_s=t.wall_s, encode_fps=summary.frames_encoded / t.wall_s,
                    machine_busy_cores=(t.cpu_s + t.other_cpu_s) / t.wall_s,
                    quality=summary.settings["quality"] or DEFAULT_QUALITY["h264"],
                    gops_before=sum(len(probe(p).keyframes) for p in src),
                    gops_after=sum(len(probe(dst_dir / p.name).keyframes) for p in src))
    dst = [dst_dir / p.name for p in src]
    steps = make_steps(args.steps, CAMERAS, SPEC.num_frames, args.seed)
    rows = []
    for run in range(1, args.runs + 1):
        for label, paths in (("before", src), ("after", dst)):
            waited = wait_quiet(args.quiet_timeout, window_s=1.0)
            res = run_engine(paths, steps, depth=args.depth)
            for pass_ in ("cold", "warm"):
                row = res[pass_]
                stats = row.pop("stats")
                rows.append({"set": label, "run": run, "pass": pass_, **row, "waited_for_quiet_s": waited,
                             "decoded_per_frame": stats["frames_decoded"] / stats["frames_returned"],
                             "decode_ms_per_picture": 1e3 * stats["decode_s"] / stats["frames_decoded"],
                             "stats": stats})
                print(f"  run {run} {label} {pass_}: {row['fps']:.1f} frames/s, {row['cpu_ms_per_frame']:.1f} CPU "
                      f"ms/frame, {rows[-1]['decoded_per_frame']:.1f} decoded/frame "
                      f"(others: {row['other_load_cores']:.2f} cores)", file=sys.stderr, flush=True)
    return {
        "spec": {"codec": SPEC.codec, "width": SPEC.width, "height": SPEC.height, "num_frames": SPEC.num_frames,
                 "gop": SPEC.gop, "fps": SPEC.fps, "crf": SPEC.crf, "cameras": CAMERAS},
        "estimate": {"cost_before": planned.cost_before, "cost_after": planned.cost_after},
        "prepare": prepared,
        "runs": rows,
        "ratios": ratios(rows, args.runs),
    }


def ratios(rows: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """after / before frames/s per run and pass, and best / best."""
    fps = {(r["set"], r["pass"], r["run"]): r["fps"] for r in rows}
    out: dict[str, Any] = {}
    for pass_ in ("cold", "warm"):
        out[pass_] = {f"run{n}": fps[("after", pass_, n)] / fps[("before", pass_, n)] for n in range(1, runs + 1)}
        out[pass_]["best"] = (max(fps[("after", pass_, n)] for n in range(1, runs + 1))
                              / max(fps[("before", pass_, n)] for n in range(1, runs + 1)))
    return out


def markdown(result: dict[str, Any]) -> str:
    h, v, b = result["host"], result["versions"], result["bench"]
    s, e, p = b["spec"], b["estimate"], b["prepare"]
    lines = [
        f"# prepare_bench: random access before and after `asyncdecode prepare --gop {result['gop']}` (CPU)",
        "",
        f"{result['date']} · {h['cpu_model']} · {h['usable_cores']} cores · Python {v['python']} · "
        f"torch {v['torch']} · PyAV {v['av']} (libavcodec {v['ffmpeg']['libavcodec']}) · asyncdecode "
        f"{v['asyncdecode']} ({(v['asyncdecode_git_head'] or '?')[:8]}"
        f"{' + uncommitted changes' if v['asyncdecode_uncommitted_changes'] else ''})",
        "",
        f"Set: {s['cameras']} cameras x {s['width']}x{s['height']} {s['codec']}, {s['num_frames']} frames at "
        f"{s['fps']} fps, GOP {s['gop']}, no B-frames (made by `asyncdecode.testing.make_video`, crf {s['crf']}). "
        f"{result['steps']} steps of one random frame per camera, engine `stream(depth={result['depth']})`; "
        "cold = GOP cache empty (indexes built before the timer), warm = the same steps again.",
        "",
        f"Prepare: {p['frames_encoded']} frames re-encoded in {p['wall_s']:.1f} s ({p['encode_fps']:.0f} frames/s, "
        f"libx264 preset medium, CRF {p['quality']}, {result['workers'] or 'default'} workers; the machine's "
        f"cores busy meanwhile: {p['machine_busy_cores']:.2f}, workers included); "
        f"size {p['source_bytes'] / 1e6:.2f} MB -> "
        f"{p['output_bytes'] / 1e6:.2f} MB ({100 * (p['output_bytes'] / p['source_bytes'] - 1):+.0f}%); PSNR "
        f"against the source min {p['psnr_min_db']:.1f} dB, mean {p['psnr_mean_db']:.1f} dB over "
        f"{p['psnr_frames']} sampled frames.",
        "",
        f"Frames decoded per random frame: dry-run estimate {e['cost_before']:.1f} -> {e['cost_after']:.1f} "
        f"({e['cost_before'] / e['cost_after']:.1f}x fewer); measured on the files by prepare "
        f"{p['cost_before']:.1f} -> {p['cost_after']:.1f}. Both count a frame alone, from its GOP's keyframe. "
        f"In the runs below the engine decodes fewer before: the set has only {p['gops_before']} GOPs before "
        f"({p['gops_after']} after), so random frames often fall in a GOP a decoder session is already in and "
        "go on from there, or share a pass with a frame of the same GOP in flight. A large set shares less, and "
        "its cost is close to the estimate's.",
        "",
        "| set | run | pass | frames/s | CPU ms/frame | decoded/frame (engine) | decode ms/picture | wall s | "
        "others' cores |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in b["runs"]:
        lines.append(f"| {r['set']} | {r['run']} | {r['pass']} | {r['fps']:.1f} | {r['cpu_ms_per_frame']:.1f} | "
                     f"{r['decoded_per_frame']:.1f} | {r['decode_ms_per_picture']:.2f} | {r['wall_s']:.2f} | "
                     f"{r['other_load_cores']:.2f} |")
    lines += ["", "decode ms/picture: the decoder threads' time per picture decoded (`stats()` decode_s / "
              "frames_decoded). It is higher after: more of the pictures decoded are keyframes (each random frame "
              "starts at one, and a GOP is 30 frames, not 250), and the re-encode holds "
              f"{p['output_bytes'] / p['source_bytes']:.1f}x the bytes of the source. So frames/s rise less "
              "than decoded frames fall."]
    runs = result["runs"]
    lines += ["", "| after / before frames/s | " + " | ".join(f"run {n}" for n in range(1, runs + 1))
              + " | best / best |", "|---|" + "---:|" * (runs + 1)]
    for pass_, rat in b["ratios"].items():
        lines.append(f"| {pass_} | " + " | ".join(f"{rat[f'run{n}']:.2f}" for n in range(1, runs + 1))
                     + f" | {rat['best']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="steps per pass (one random frame per camera each)")
    p.add_argument("--runs", type=int, default=2, help="interleaved rounds (before, after)")
    p.add_argument("--gop", type=int, default=30, help="GOP of the prepared set")
    p.add_argument("--depth", type=int, default=8, help="requests in flight (Engine.stream depth)")
    p.add_argument("--workers", type=int, default=None, help="prepare workers (default: prepare's)")
    p.add_argument("--quality", type=int, default=None, help="prepare's --quality, the CRF (default: prepare's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=pathlib.Path, default=HERE / "data")
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "prepare_bench_cpu",
                   help="result files without extension: OUT.json and OUT.md")
    p.add_argument("--quiet-timeout", type=float, default=20.0,
                   help="seconds to wait for a quiet machine before each timed part")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "prepare_bench",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "host": host_info(),
        "versions": versions(),
        "steps": args.steps, "runs": args.runs, "gop": args.gop, "depth": args.depth, "seed": args.seed,
        "workers": args.workers, "quality": args.quality,
    }
    result["bench"] = bench(args)
    result["seconds"] = time.perf_counter() - t0
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
