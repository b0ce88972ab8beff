"""``asyncdecode prepare``: random access before and after re-encoding a GOP-250 set, on the CPU or NVDEC.

Workload: ``--cameras`` (4) cameras of ``--size`` (640x360) H.264, ``--frames`` (500) frames at 25 fps
with a keyframe every 250 frames (what phones and web video look like), made with
``asyncdecode.testing.make_video`` into ``--data-dir`` (``benchmarks/data/``, git-ignored) on the first
run; the folder is named after the spec (size, frames, cameras), so sets of different shapes never
collide. The set is re-encoded with ``asyncdecode.prepare.prepare(gop=30)`` (libx264 by default, or
``--codec``; worker processes) into a fresh folder, timed. Then, in one process, the same random steps
(one random frame from each camera per step, a seeded RNG) run through ``Engine(device=--device)`` on
the original set and on the prepared one, interleaved (before, after, before, after), each engine with
a cold pass (GOP cache empty, indexes built before the timer) and a warm pass (the same steps again).
With ``--device cuda`` the engine decodes with NVDEC: one untimed warm-up engine first starts CUDA and
NVDEC, and ``torch.cuda.synchronize()`` runs before each timer starts and before it stops. Issue 22's
target: the engine's random-access frames/s after >= 5x before (checked in the table, per pass).

``--encode-sizes WxH,...`` adds the CPU encoder's throughput: for each size a small GOP-250 set
(``--encode-cameras`` 2 x ``--encode-frames`` 250) is re-encoded by ``prepare`` with libx264 and with
libx265 (their defaults), timed: frames/s, the worker processes and threads per worker it used, the
cores busy. That is what a GPU encoder would be compared against. NVENC is not measured: the H200 has
no NVENC encoder (``nvEncOpenEncodeSessionEx`` returns error 2, ``NV_ENC_ERR_NO_ENCODE_DEVICE``,
measured 2026-12-04), so ``prepare`` encodes on the CPU cores there too.

Reported: the dry-run estimate (frames decoded per random frame before/after), the prepare run
(encode frames/s, sizes, PSNR), per pass frames/s, CPU ms per frame and the engine's
``frames_decoded / frames_returned``, after/before ratios against the 5x target, and the encoder
throughput table. Meta: date, device and its name (``torch.cuda.get_device_name``), CPU model and
count, torch / PyAV / FFmpeg versions.

    python benchmarks/prepare_bench.py [--device cpu|cuda] [--size 640x360] [--cameras 4] [--frames 500] \
        [--codec h264|hevc] [--steps 30] [--runs 2] [--gop 30] [--quality CRF] \
        [--encode-sizes 1600x900,1920x1080] [--encode-cameras 2] [--encode-frames 250] \
        [--out benchmarks/results/prepare_bench_DEVICE]

    # issue 22 on the H200 (NVDEC, 16 cores; about 3 min, the sets made on the spot):
    python benchmarks/prepare_bench.py --device cuda --size 1600x900 --cameras 8 --frames 250 \
        --encode-sizes 1600x900,1920x1080 --encode-cameras 8 --encode-frames 80 --quiet-timeout 5

Writes ``OUT.json`` and ``OUT.md`` (overwritten; the table is printed too). ``--out`` defaults to
``benchmarks/results/prepare_bench_cpu`` (``..._cuda`` with ``--device cuda``).
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

import av
import torch

from asyncdecode import Engine, probe
from asyncdecode._encode import DEFAULT_QUALITY, ENCODERS, PRESETS, has_encoder
from asyncdecode.prepare import estimate, prepare
from asyncdecode.testing import VideoSpec
from _machine import wait_quiet  # this folder (scripts run from it)
from cpu_random import _STAT_KEYS, Step, Timer, ensure_clip_set, host_info, make_steps, versions

HERE = pathlib.Path(__file__).resolve().parent
CAMERAS = 4
FRAMES = 500
SIZE = (640, 360)
SOURCE_GOP = 250
TARGET = 5.0  # issue 22: random-access frames/s after prepare >= 5x before (the engine on NVDEC)
ENCODE_CODECS = ("h264", "hevc")  # libx264, libx265: what prepare encodes with on the CPU


def spec_for(width: int, height: int, frames: int) -> VideoSpec:
    return VideoSpec(codec="h264", width=width, height=height, num_frames=frames, gop=SOURCE_GOP, fps=25)


# -- the engine's passes --------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize(torch.device(device))


async def _engine_passes(paths: Sequence[pathlib.Path], steps: Sequence[Step], depth: int,
                         device: str) -> dict[str, Any]:
    """``cpu_random.run_engine`` on ``device``: a cold pass then a warm one, GPU work finished inside the timer."""
    names = [str(p) for p in paths]
    out: dict[str, Any] = {}
    async with Engine(device=device) as eng:
        for p in names:  # indexes before the timer; the GOP cache stays empty
            await eng.info(p)
        before = {k: eng.stats()[k] for k in _STAT_KEYS}
        for label in ("cold", "warm"):
            _sync(device)
            with Timer() as t:
                frames = 0
                async for result in eng.stream(((names, ids) for ids in steps), depth=depth):
                    frames += len(result)
                _sync(device)
            after = eng.stats()
            out[label] = t.timing(frames).row()
            out[label]["stats"] = {k: after[k] - before[k] for k in _STAT_KEYS}
            before = {k: after[k] for k in _STAT_KEYS}
        total = eng.stats()
        out["engine"] = {k: total[k] for k in ("backend", "decoder_library", "device", "decoder_threads",
                                               "cpu_fallback_files")}
    return out


def run_engine(paths: Sequence[pathlib.Path], steps: Sequence[Step], depth: int, device: str) -> dict[str, Any]:
    return asyncio.run(_engine_passes(paths, steps, depth, device))


def warm_up(paths: Sequence[pathlib.Path], device: str) -> float:
    """One frame of each file through a throw-away engine: CUDA, NVDEC and their libraries start here."""
    async def go() -> None:
        async with Engine(device=device) as eng:
            await eng.decode([str(p) for p in paths], [0] * len(paths))
        _sync(device)

    t = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t


# -- prepare runs ---------------------------------------------------------------------------------


def prepare_workers(videos: int, workers: int | None) -> tuple[int, int]:
    """Worker processes and threads per encoder ``prepare`` uses for ``videos`` (as ``prepare._Plan.make``)."""
    cores = os.cpu_count() or 1
    n = max(1, min(workers or min(cores, 8), videos))
    return n, max(1, cores // n)


def timed_prepare(src_dir: pathlib.Path, dst_dir: pathlib.Path, args: argparse.Namespace, *, codec: str | None,
                  quality: int | None, videos: int) -> dict[str, Any]:
    """One fresh ``prepare`` run of ``src_dir`` into ``dst_dir`` (removed first), timed."""
    shutil.rmtree(dst_dir, ignore_errors=True)  # a fresh run every time: prepare itself is measured
    waited = wait_quiet(args.quiet_timeout)
    with Timer() as t:
        summary = asyncio.run(prepare(src_dir, dst_dir, gop=args.gop, codec=codec, quality=quality,
                                      workers=args.workers, progress=True))
    if not summary.ok:
        raise SystemExit(f"prepare failed: {summary.failed}")
    out = summary.to_json()
    files = out.pop("files")
    used = sorted({f["codec_after"] for f in files if f["codec_after"]})
    out_codec = used[0] if len(used) == 1 else ",".join(used)
    workers, threads = prepare_workers(videos, args.workers)
    done = [f for f in files if f["status"] == "done" and f["seconds"] > 0]
    per_video = [f["frames"] / f["seconds"] for f in done]
    busy_s = sum(f["seconds"] for f in done) / min(workers, len(done)) if done else 0.0
    # The workers are other processes: the machine's busy cores during the run are mostly theirs.
    out.update(wall_s=t.wall_s, encode_fps=summary.frames_encoded / t.wall_s,
               machine_busy_cores=(t.cpu_s + t.other_cpu_s) / t.wall_s, waited_for_quiet_s=waited,
               codec_out=out_codec, encoder=ENCODERS.get(out_codec, out_codec), preset=PRESETS.get(out_codec),
               quality=summary.settings["quality"] or DEFAULT_QUALITY.get(out_codec),
               workers=workers, threads_per_worker=threads,
               video_fps_mean=sum(per_video) / len(per_video) if per_video else None,
               workers_fps=sum(f["frames"] for f in done) / busy_s if busy_s else None)
    return out


def encode_bench(size: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """libx264 and libx265 throughput of ``prepare`` on a small GOP-250 set of ``size``."""
    spec = spec_for(*size, args.encode_frames)
    src = ensure_clip_set(args.data_dir, spec, args.encode_cameras)
    src_dir = src[0].parent
    rows = []
    for codec in ENCODE_CODECS:
        row: dict[str, Any] = {"width": size[0], "height": size[1], "cameras": args.encode_cameras,
                               "frames_per_camera": args.encode_frames, "codec": codec, "encoder": ENCODERS[codec]}
        if not has_encoder(codec):
            row["skipped"] = f"this PyAV build has no {ENCODERS[codec]}"
        else:
            dst_dir = args.data_dir / f"{src_dir.name}-encode-{codec}-gop{args.gop}"
            r = timed_prepare(src_dir, dst_dir, args, codec=codec, quality=None, videos=len(src))
            shutil.rmtree(dst_dir, ignore_errors=True)
            row.update({k: r[k] for k in ("frames_encoded", "wall_s", "encode_fps", "machine_busy_cores", "workers",
                                          "threads_per_worker", "video_fps_mean", "workers_fps", "preset", "quality",
                                          "source_bytes", "output_bytes", "psnr_min_db", "psnr_mean_db",
                                          "waited_for_quiet_s")})
            print(f"  encode {size[0]}x{size[1]} {ENCODERS[codec]}: {r['encode_fps']:.1f} frames/s "
                  f"({r['workers']} workers x {r['threads_per_worker']} threads, {r['machine_busy_cores']:.1f} "
                  "cores busy)", file=sys.stderr, flush=True)
        rows.append(row)
    return {"spec": {"width": spec.width, "height": spec.height, "num_frames": spec.num_frames, "gop": spec.gop,
                     "fps": spec.fps, "crf": spec.crf, "cameras": args.encode_cameras}, "rows": rows}


# -- the benchmark --------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    spec = spec_for(*args.size, args.frames)
    src = ensure_clip_set(args.data_dir, spec, args.cameras)
    src_dir = src[0].parent
    planned = asyncio.run(estimate(src_dir, gop=args.gop, codec=args.codec))
    dst_dir = args.data_dir / (f"{src_dir.name}-prepared-gop{args.gop}" + (f"-{args.codec}" if args.codec else ""))
    prepared = timed_prepare(src_dir, dst_dir, args, codec=args.codec, quality=args.quality, videos=len(src))
    prepared.update(gops_before=sum(len(probe(p).keyframes) for p in src),
                    gops_after=sum(len(probe(dst_dir / p.name).keyframes) for p in src))
    dst = [dst_dir / p.name for p in src]
    steps = make_steps(args.steps, args.cameras, spec.num_frames, args.seed)
    warm_up_s = warm_up(src + dst, args.device) if args.device != "cpu" else None
    rows = []
    engine = None
    for run in range(1, args.runs + 1):
        for label, paths in (("before", src), ("after", dst)):
            waited = wait_quiet(args.quiet_timeout, window_s=1.0)
            res = run_engine(paths, steps, args.depth, args.device)
            engine = res["engine"]
            for pass_ in ("cold", "warm"):
                row = res[pass_]
                stats = row.pop("stats")
                rows.append({"set": label, "run": run, "pass": pass_, **row, "waited_for_quiet_s": waited,
                             "decoded_per_frame": stats["frames_decoded"] / stats["frames_returned"],
                             "decode_ms_per_picture": 1e3 * stats["decode_s"] / stats["frames_decoded"],
                             "cpu_fallback_files": res["engine"]["cpu_fallback_files"], "stats": stats})
                print(f"  run {run} {label} {pass_}: {row['fps']:.1f} frames/s, {row['cpu_ms_per_frame']:.1f} CPU "
                      f"ms/frame, {rows[-1]['decoded_per_frame']:.1f} decoded/frame "
                      f"(others: {row['other_load_cores']:.2f} cores)", file=sys.stderr, flush=True)
    return {
        "spec": {"codec": spec.codec, "width": spec.width, "height": spec.height, "num_frames": spec.num_frames,
                 "gop": spec.gop, "fps": spec.fps, "crf": spec.crf, "cameras": args.cameras},
        "estimate": {"cost_before": planned.cost_before, "cost_after": planned.cost_after},
        "prepare": prepared,
        "engine": engine,
        "warm_up_s": warm_up_s,
        "runs": rows,
        "ratios": ratios(rows, args.runs),
    }


def ratios(rows: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """after / before frames/s per run and pass, best / best, and the 5x target per pass."""
    fps = {(r["set"], r["pass"], r["run"]): r["fps"] for r in rows}
    out: dict[str, Any] = {}
    for pass_ in ("cold", "warm"):
        out[pass_] = {f"run{n}": fps[("after", pass_, n)] / fps[("before", pass_, n)] for n in range(1, runs + 1)}
        out[pass_]["best"] = (max(fps[("after", pass_, n)] for n in range(1, runs + 1))
                              / max(fps[("before", pass_, n)] for n in range(1, runs + 1)))
        lowest = min(out[pass_][f"run{n}"] for n in range(1, runs + 1))
        out[pass_]["target"] = TARGET
        out[pass_]["target_met"] = lowest >= TARGET  # in every run
    return out


def markdown(result: dict[str, Any]) -> str:
    h, v, b, m = result["host"], result["versions"], result["bench"], result["meta"]
    s, e, p = b["spec"], b["estimate"], b["prepare"]
    on_gpu = result["device"] != "cpu"
    where = f"{result['device']}: {m['device_name']}" if on_gpu else "CPU"
    eng = b["engine"] or {}
    lines = [
        f"# prepare_bench: random access before and after `asyncdecode prepare --gop {result['gop']}` ({where})",
        "",
        f"{result['date']} · {h['cpu_model']} · {h['usable_cores']} cores (os.cpu_count {m['cpu_count']})"
        + (f" · {m['device_name']} (CUDA {m['torch_cuda']})" if on_gpu else "")
        + f" · Python {v['python']} · torch {v['torch']} · PyAV {v['av']} "
        f"(libavcodec {v['ffmpeg']['libavcodec']}) · asyncdecode {v['asyncdecode']} "
        f"({(v['asyncdecode_git_head'] or '?')[:8]}"
        f"{' + uncommitted changes' if v['asyncdecode_uncommitted_changes'] else ''})",
        "",
        f"Set: {s['cameras']} cameras x {s['width']}x{s['height']} {s['codec']}, {s['num_frames']} frames at "
        f"{s['fps']} fps, GOP {s['gop']}, no B-frames (made by `asyncdecode.testing.make_video`, crf {s['crf']}). "
        f"{result['steps']} steps of one random frame per camera, engine `Engine(device={result['device']!r})` "
        f"({eng.get('backend', '?')}, {eng.get('decoder_library', '?')}), `stream(depth={result['depth']})`; "
        "cold = GOP cache empty (indexes built before the timer), warm = the same steps again."
        + (f" An untimed warm-up engine (one frame per file) ran first ({b['warm_up_s']:.1f} s); "
           "`torch.cuda.synchronize()` before each timer starts and before it stops." if on_gpu else ""),
        "",
        f"Prepare: {p['frames_encoded']} frames re-encoded in {p['wall_s']:.1f} s ({p['encode_fps']:.0f} frames/s, "
        f"{p['encoder']} preset {p['preset']}, CRF {p['quality']}, {p['workers']} workers x "
        f"{p['threads_per_worker']} threads; the machine's "
        f"cores busy meanwhile: {p['machine_busy_cores']:.2f}, workers included); "
        f"size {p['source_bytes'] / 1e6:.2f} MB -> "
        f"{p['output_bytes'] / 1e6:.2f} MB ({100 * (p['output_bytes'] / p['source_bytes'] - 1):+.0f}%); PSNR "
        f"against the source min {p['psnr_min_db']:.1f} dB, mean {p['psnr_mean_db']:.1f} dB over "
        f"{p['psnr_frames']} sampled frames.",
        "",
    ]
    engine_before = [r["decoded_per_frame"] for r in b["runs"] if r["set"] == "before"]
    line = (f"Frames decoded per random frame: dry-run estimate {e['cost_before']:.1f} -> {e['cost_after']:.1f} "
            f"({e['cost_before'] / e['cost_after']:.1f}x fewer); measured on the files by prepare "
            f"{p['cost_before']:.1f} -> {p['cost_after']:.1f}. Both count a frame alone, from its GOP's keyframe.")
    if engine_before and max(engine_before) < p["cost_before"]:
        line += (f" In the runs below the engine decodes fewer before: the set has only {p['gops_before']} GOPs "
                 f"before ({p['gops_after']} after), so random frames often fall in a GOP a decoder session is "
                 "already in and go on from there, or share a pass with a frame of the same GOP in flight. A large "
                 "set shares less, and its cost is close to the estimate's.")
    lines += [line, "",
              "| set | run | pass | frames/s | CPU ms/frame | decoded/frame (engine) | decode ms/picture | wall s | "
              "others' cores |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in b["runs"]:
        lines.append(f"| {r['set']} | {r['run']} | {r['pass']} | {r['fps']:.1f} | {r['cpu_ms_per_frame']:.1f} | "
                     f"{r['decoded_per_frame']:.1f} | {r['decode_ms_per_picture']:.2f} | {r['wall_s']:.2f} | "
                     f"{r['other_load_cores']:.2f} |")
    fallback = max((r["cpu_fallback_files"] for r in b["runs"]), default=0)
    if fallback:
        lines += ["", f"WARNING: the engine decoded {fallback} file(s) on the CPU instead of {result['device']} "
                  "(`cpu_fallback_files`)."]
    note = (f"decode ms/picture: the {'decode jobs' if on_gpu else 'decoder threads'}' time per picture decoded "
            "(`stats()` decode_s / frames_decoded).")
    dec = {k: [r["decode_ms_per_picture"] for r in b["runs"] if r["set"] == k] for k in ("before", "after")}
    if dec["before"] and min(dec["after"]) > max(dec["before"]):
        note += (" It is higher after: more of the pictures decoded are keyframes (each random frame starts at one, "
                 f"and a GOP is {result['gop']} frames, not {s['gop']}), and the re-encode holds "
                 f"{p['output_bytes'] / p['source_bytes']:.1f}x the bytes of the source. So frames/s rise less "
                 "than decoded frames fall.")
    lines += ["", note]
    runs = result["runs"]
    lines += ["", "| after / before frames/s | " + " | ".join(f"run {n}" for n in range(1, runs + 1))
              + f" | best / best | target >= {TARGET:g}x (every run) |", "|---|" + "---:|" * (runs + 1) + "---|"]
    for pass_ in ("cold", "warm"):
        rat = b["ratios"][pass_]
        lines.append(f"| {pass_} | " + " | ".join(f"{rat[f'run{n}']:.2f}" for n in range(1, runs + 1))
                     + f" | {rat['best']:.2f} | {'met' if rat['target_met'] else 'not met'} |")
    lines += ["", f"Target (issue 22): the engine's random-access frames/s on the prepared set >= {TARGET:g}x "
              "the GOP-250 set's, for the engine on NVDEC" + ("." if on_gpu else "; this run is on the CPU, "
                                                              "shown for comparison.")]
    enc = result.get("encode")
    if enc:
        lines += ["", f"## CPU encoder throughput (`prepare --gop {result['gop']}`, {m['cpu_count']} cores)", "",
                  "Each set: GOP-250 H.264 source made by `make_video`, re-encoded by `prepare` with each codec's "
                  "defaults. frames/s: frames / wall time from the call to its return (worker start-up, "
                  "indexing, checks and PSNR included); in workers: frames / (the videos' own seconds summed / "
                  "workers), the rate while the workers are busy, start-up left out; per video: one worker's "
                  "frames / its seconds, mean over the videos. NVENC is not "
                  "measured: the H200 has no NVENC encoder (`nvEncOpenEncodeSessionEx` returns error 2, "
                  "NV_ENC_ERR_NO_ENCODE_DEVICE, measured 2026-12-04).", "",
                  "| size | videos x frames | encoder | preset, CRF | frames/s | frames/s in workers | "
                  "frames/s per video | workers x threads | cores busy | wall s | MB in -> out | PSNR min dB |",
                  "|---|---|---|---|---:|---:|---:|---|---:|---:|---|---:|"]
        for size in enc:
            for r in size["rows"]:
                head = f"| {r['width']}x{r['height']} | {r['cameras']} x {r['frames_per_camera']} | {r['encoder']} |"
                if "skipped" in r:
                    lines.append(head + f" skipped: {r['skipped']} |" + " |" * 8)
                    continue
                lines.append(head + f" {r['preset']}, {r['quality']} | {r['encode_fps']:.1f} | "
                             f"{r['workers_fps']:.1f} | {r['video_fps_mean']:.1f} | "
                             f"{r['workers']} x {r['threads_per_worker']} | "
                             f"{r['machine_busy_cores']:.1f} | {r['wall_s']:.1f} | {r['source_bytes'] / 1e6:.2f} -> "
                             f"{r['output_bytes'] / 1e6:.2f} | {r['psnr_min_db']:.1f} |")
    return "\n".join(lines) + "\n"


# -- command line ---------------------------------------------------------------------------------


def size_arg(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH (e.g. 1600x900), not {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size must be even and at least 16x16 (4:2:0 H.264), not {text!r}")
    return w, h


def sizes_arg(text: str) -> list[tuple[int, int]]:
    return [size_arg(s.strip()) for s in text.split(",") if s.strip()]


def device_arg(text: str) -> str:
    if text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"device must be cpu, cuda or cuda:N, not {text!r}")


def positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {n}")
    return n


def meta(device: str) -> dict[str, Any]:
    host = host_info()
    on_gpu = device != "cpu"
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if on_gpu else host["cpu_model"],
        "cpu_model": host["cpu_model"],
        "cpu_count": os.cpu_count(),
        "usable_cores": host["usable_cores"],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "av": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "nvenc": "not measured: the H200 has no NVENC encoder (nvEncOpenEncodeSessionEx returns error 2, "
                 "NV_ENC_ERR_NO_ENCODE_DEVICE, measured 2026-12-04)",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", type=device_arg, default="cpu",
                   help="the engine's device for the random-access passes: cpu (default) or cuda (NVDEC)")
    p.add_argument("--size", type=size_arg, default=SIZE, help="WxH of the GOP-250 set (default 640x360)")
    p.add_argument("--cameras", type=positive, default=CAMERAS, help=f"videos in the set (default {CAMERAS})")
    p.add_argument("--frames", type=positive, default=FRAMES, help=f"frames per video (default {FRAMES})")
    p.add_argument("--codec", choices=("h264", "hevc"), default=None,
                   help="codec of the prepared set (default: prepare's, the source's: h264)")
    p.add_argument("--steps", type=int, default=30, help="steps per pass (one random frame per camera each)")
    p.add_argument("--runs", type=int, default=2, help="interleaved rounds (before, after)")
    p.add_argument("--gop", type=int, default=30, help="GOP of the prepared set")
    p.add_argument("--depth", type=int, default=8, help="requests in flight (Engine.stream depth)")
    p.add_argument("--workers", type=int, default=None, help="prepare workers (default: prepare's)")
    p.add_argument("--quality", type=int, default=None, help="prepare's --quality, the CRF (default: prepare's)")
    p.add_argument("--encode-sizes", type=sizes_arg, default=None, metavar="WxH,WxH",
                   help="also time prepare's libx264 and libx265 on a small GOP-250 set of each size")
    p.add_argument("--encode-cameras", type=positive, default=2, help="videos per --encode-sizes set (default 2)")
    p.add_argument("--encode-frames", type=positive, default=250, help="frames per --encode-sizes video (default 250)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=pathlib.Path, default=HERE / "data")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="result files without extension: OUT.json and OUT.md "
                        "(default benchmarks/results/prepare_bench_cpu, or _cuda with --device cuda)")
    p.add_argument("--quiet-timeout", type=float, default=20.0,
                   help="seconds to wait for a quiet machine before each timed part")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = HERE / "results" / f"prepare_bench_{args.device.replace(':', '')}"
    if args.device != "cpu" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch sees no CUDA device here")
    t0 = time.perf_counter()
    info = meta(args.device)
    result: dict[str, Any] = {
        "benchmark": "prepare_bench",
        "date": info["date"],
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "meta": info,
        "host": host_info(),
        "versions": versions(),
        "device": args.device, "size": list(args.size), "cameras": args.cameras, "frames": args.frames,
        "codec": args.codec,
        "steps": args.steps, "runs": args.runs, "gop": args.gop, "depth": args.depth, "seed": args.seed,
        "workers": args.workers, "quality": args.quality,
        "encode_sizes": [list(s) for s in args.encode_sizes] if args.encode_sizes else None,
        "encode_cameras": args.encode_cameras, "encode_frames": args.encode_frames,
    }
    result["bench"] = bench(args)
    if args.encode_sizes:
        result["encode"] = [encode_bench(size, args) for size in args.encode_sizes]
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
