"""Training-loop benchmark: data stall, stream access, and epoch-random sampling with lookahead and the frame cache.

    python benchmarks/train_bench.py [--device cuda] [--seconds 3] [--epoch-clips 2]
    python benchmarks/train_bench.py --device cpu --small      # a quick run on a CPU machine

On CUDA it uses the NVDEC benchmark's set (6 cameras x 4 clips, 1600x900 HEVC, GOP 30, 235 frames;
made under benchmarks/data/nvdec if absent); ``--small`` makes 6 cameras x 2 clips of 256x144 H.264
instead. In one process, on the same files:

1. Capacity: stream access (each clip read from start to end, 16 frames of every camera per request,
   depth 16) and random access (one random frame per camera per request, depth 64), frames/s;
   on CUDA also raw PyNvVideoCodec sessions reading whole GOPs (the best sequential rate).
2. Data stall: a training step (a ``sleep`` in a worker thread, as a GPU-bound step leaves the event
   loop free) consuming 6-camera batches at half the measured capacity, for random batches (1 frame
   per camera) and stream batches (8 consecutive frames per camera); without prefetch (``stream``
   depth 1: the next batch is asked for when the step ends) and with it (depth 8). Stall = share of
   wall time the loop waited for a batch.
3. Epoch-random: every frame of the first ``--epoch-clips`` clips once, in a shuffled order, one frame
   per camera per request; with lookahead (``stream`` depth) 1, 4, 16, and at depth 16 with the
   decoded-frame cache at 25% and 100% of the set's decoded size (two epochs each: the first fills
   the cache, the second is served from it). Plain random access is depth 1 without the cache.

Writes benchmarks/results/train_bench.{json,md} (device, versions, date).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import subprocess
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def dataset(args: argparse.Namespace) -> tuple[list[list[str]], int]:
    """``clips[k][camera]`` paths and the frames per video."""
    if not args.small:
        from asyncdecode.bench import FRAMES, make_dataset

        return make_dataset(Path(args.data or HERE / "data" / "nvdec")), FRAMES
    from asyncdecode.testing import VideoSpec, make_clip_set

    root = Path(args.data or HERE / "data" / "train_small")
    spec = VideoSpec(width=256, height=144, num_frames=60, gop=30, crf=30)
    paths = sorted(root.glob("clip*/cam*.mp4"))
    if len(paths) < 12:
        paths = make_clip_set(root, cameras=6, clips=2, spec=spec)
    return [[str(p) for p in paths[k * 6:(k + 1) * 6]] for k in range(2)], spec.num_frames


def stream_requests(clips, frames, rng, run=16):
    """Clips from start to end, ``run`` consecutive frames of every camera per request."""
    while True:
        clip = clips[rng.randrange(len(clips))]
        for start in range(0, frames, run):
            ids = range(start, min(start + run, frames))
            yield [p for p in clip for _ in ids], [j for _ in clip for j in ids]


def random_requests(clips, frames, rng):
    while True:
        clip = clips[rng.randrange(len(clips))]
        yield clip, [rng.randrange(frames) for _ in clip]


async def drain(eng, requests, depth: int, seconds: float | None = None) -> tuple[int, float, dict, dict]:
    """Read ``eng.stream(requests, depth)`` to its end (or for ``seconds``): frames returned, wall
    seconds (device work included), and the engine's stats before and after."""
    before = eng.stats()
    n = 0
    t0 = time.perf_counter()
    async with contextlib.aclosing(eng.stream(requests, depth=depth)) as stream:
        async for got in stream:
            n += len(got)
            if seconds is not None and time.perf_counter() - t0 >= seconds:
                break
    if eng.device.type == "cuda":
        torch.cuda.synchronize(eng.device)
    return n, time.perf_counter() - t0, before, eng.stats()


async def throughput(eng, requests, seconds: float, depth: int) -> dict:
    n, wall, before, s = await drain(eng, requests, depth, seconds)
    return {"frames": n, "seconds": wall, "frames_per_s": n / wall,
            "decoded_per_returned": (s["frames_decoded"] - before["frames_decoded"]) / max(1, n)}


async def stall(eng, requests, seconds: float, depth: int, step_s: float) -> dict:
    waited = 0.0
    steps = 0
    t0 = t = time.perf_counter()
    async with contextlib.aclosing(eng.stream(requests, depth=depth)) as stream:
        async for _ in stream:
            waited += time.perf_counter() - t
            await asyncio.to_thread(time.sleep, step_s)  # the training step
            steps += 1
            t = time.perf_counter()
            if t - t0 >= seconds:
                break
    wall = time.perf_counter() - t0
    return {"depth": depth, "steps": steps, "step_s": step_s, "seconds": wall, "waited_s": waited,
            "stall": waited / wall}


async def epoch(eng, clips, frames, seed: int, depth: int) -> dict:
    order = [(k, f) for k in range(len(clips)) for f in range(frames)]
    random.Random(seed).shuffle(order)
    requests = [(clips[k], [f] * len(clips[k])) for k, f in order]
    n, wall, before, s = await drain(eng, requests, depth)
    return {"depth": depth, "frames": n, "seconds": wall, "frames_per_s": n / wall,
            "decoded_per_returned": (s["frames_decoded"] - before["frames_decoded"]) / max(1, n),
            "frame_cache_hits": s["frame_cache_hits"] - before["frame_cache_hits"],
            "frame_cache_bytes": s["frame_cache_bytes"], "jobs_merged": s["jobs_merged"] - before["jobs_merged"],
            "jobs_continued": s["jobs_continued"] - before["jobs_continued"]}


async def run(args: argparse.Namespace) -> dict:
    from asyncdecode import Engine, EngineConfig, probe

    clips, frames = dataset(args)
    files = [p for c in clips for p in c]
    cams = len(clips[0])
    info = probe(files[0])
    res: dict = {"set": {"clips": len(clips), "cameras": cams, "frames": frames, "width": info.width,
                         "height": info.height, "codec": info.codec}}

    async def engine(cache_bytes: int = 0):
        eng = Engine(device=args.device, config=EngineConfig(frame_cache_bytes=cache_bytes))
        await eng.__aenter__()
        for p in files:
            await eng.info(p)
        return eng

    # 1. capacity
    eng = await engine()
    await throughput(eng, random_requests(clips, frames, random.Random(99)), 1.0, 64)  # warm-up
    # and for stream access, which keeps about 16 times the frames in flight: the CUDA allocator grows
    # its pool for them once (as a training loop's first steps would), not in the timed pass
    await throughput(eng, stream_requests(clips, frames, random.Random(98)), 0.5, 16)
    # stream access twice, interleaved with random access (the machine's rate swings from pass to pass)
    seq = await throughput(eng, stream_requests(clips, frames, random.Random(1)), args.seconds, 16)
    rnd = await throughput(eng, random_requests(clips, frames, random.Random(2)), args.seconds, 64)
    seqs = [seq, await throughput(eng, stream_requests(clips, frames, random.Random(2)), args.seconds, 16)]
    res["capacity"] = {"stream": seq, "stream_runs": seqs, "random": rnd, "backend": eng.backend.name}
    print(f"capacity: stream {', '.join(str(round(r['frames_per_s'])) for r in seqs)} frames/s "
          f"({seq['decoded_per_returned']:.2f} decoded/returned), random {rnd['frames_per_s']:.0f} frames/s", flush=True)

    # 2. data stall at half the capacity
    res["stall"] = []
    for pattern, cap, per_batch in (("random", rnd["frames_per_s"], cams), ("stream", seq["frames_per_s"], 8 * cams)):
        step_s = per_batch / (0.5 * cap)
        for depth in (1, 8):
            rng = random.Random(3)
            reqs = (random_requests(clips, frames, rng) if pattern == "random"
                    else stream_requests(clips, frames, rng, run=8))
            r = await stall(eng, reqs, args.seconds, depth, step_s)
            r.update(pattern=pattern, prefetch=depth > 1)
            res["stall"].append(r)
            print(f"stall {pattern:6s} depth {depth}: {100 * r['stall']:.1f}% of {r['steps']} steps of "
                  f"{1e3 * step_s:.1f} ms", flush=True)

    # 3. epoch-random with lookahead, then the frame cache
    sub = clips[: args.epoch_clips]
    res["epoch"] = []
    for depth in (1, 4, 16):
        r = await epoch(eng, sub, frames, seed=depth, depth=depth)
        r.update(cache="none", epoch=1)
        res["epoch"].append(r)
        print(f"epoch depth {depth:2d}: {r['frames_per_s']:.0f} frames/s, {r['decoded_per_returned']:.2f} decoded/returned",
              flush=True)
    await eng.aclose()
    frame_bytes = 3 * info.width * info.height  # RGB uint8
    set_bytes = frame_bytes * frames * sum(len(c) for c in sub)
    for share in (0.25, 1.0):
        eng = await engine(int(share * set_bytes) + frame_bytes)
        for k in (1, 2):
            r = await epoch(eng, sub, frames, seed=100 + k, depth=16)
            r.update(cache=f"{share:.0%}", cache_capacity_bytes=int(share * set_bytes), epoch=k)
            res["epoch"].append(r)
            print(f"epoch depth 16, cache {share:.0%} ({share * set_bytes / 2**30:.1f} GiB), epoch {k}: "
                  f"{r['frames_per_s']:.0f} frames/s, {r['decoded_per_returned']:.2f} decoded/returned, "
                  f"{r['frame_cache_hits']} hits", flush=True)
        await eng.aclose()

    # raw sequential rate (CUDA): the reference for stream access
    if res["capacity"]["backend"] == "nvdec":
        from asyncdecode.bench import measure_raw_nvdec
        from asyncdecode.gop import extract_gops

        bundles = [extract_gops(p, list(probe(p).keyframes)) for p in files]
        res["raw_sequential"] = [measure_raw_nvdec(bundles, k, "sequential", args.seconds, seed=k) for k in (14, 28)]
        for r in res["raw_sequential"]:
            print(f"raw sequential K={r['sessions']}: {r['decoded_per_s']:.0f} frames/s", flush=True)
    return res


def summary(res: dict) -> dict:
    ep = {(r["cache"], r["depth"], r["epoch"]): r["frames_per_s"] for r in res["epoch"]}
    plain = ep[("none", 1, 1)]
    out = {
        "stall_random_prefetch": next(r["stall"] for r in res["stall"] if r["pattern"] == "random" and r["prefetch"]),
        "stall_stream_prefetch": next(r["stall"] for r in res["stall"] if r["pattern"] == "stream" and r["prefetch"]),
        "stall_random_no_prefetch": next(r["stall"] for r in res["stall"] if r["pattern"] == "random" and not r["prefetch"]),
        "stall_stream_no_prefetch": next(r["stall"] for r in res["stall"] if r["pattern"] == "stream" and not r["prefetch"]),
        "epoch_plain_frames_per_s": plain,
        "epoch_depth4_vs_plain": ep[("none", 4, 1)] / plain,
        "epoch_depth16_vs_plain": ep[("none", 16, 1)] / plain,
        "epoch_cache25_second_vs_plain": ep[("25%", 16, 2)] / plain,
        "epoch_cache100_first_vs_plain": ep[("100%", 16, 1)] / plain,
        "epoch_cache100_second_vs_plain": ep[("100%", 16, 2)] / plain,
        "cache100_gib": max(r.get("cache_capacity_bytes", 0) for r in res["epoch"]) / 2**30,
    }
    if "raw_sequential" in res:
        best = max(r["decoded_per_s"] for r in res["raw_sequential"])
        out["raw_sequential_best"] = best
        runs = res["capacity"].get("stream_runs", [res["capacity"]["stream"]])
        out["stream_vs_raw_sequential_runs"] = [r["frames_per_s"] / best for r in runs]
        out["stream_vs_raw_sequential"] = out["stream_vs_raw_sequential_runs"][0]
    return out


def markdown(res: dict) -> str:
    m, s, st = res["meta"], res["summary"], res["set"]
    lines = [f"# train_bench — {m['device_name']}, {m['date']}", "",
             f"{st['cameras']} cameras x {st['clips']} clips, {st['width']}x{st['height']} {st['codec']}, "
             f"{st['frames']} frames; backend {res['capacity']['backend']}; torch {m['torch']}, asyncdecode "
             f"{m['asyncdecode']}; {m['seconds']} s per timed pass.", "",
             "| capacity | frames/s | decoded/returned |", "|---|---:|---:|"]
    runs = res["capacity"].get("stream_runs", [res["capacity"]["stream"]])
    for i, c in enumerate(runs, 1):
        lines.append(f"| stream (pass {i}) | {c['frames_per_s']:.0f} | {c['decoded_per_returned']:.2f} |")
    c = res["capacity"]["random"]
    lines.append(f"| random | {c['frames_per_s']:.0f} | {c['decoded_per_returned']:.2f} |")
    if "raw_sequential" in res:
        for r in res["raw_sequential"]:
            lines.append(f"| raw sequential, {r['sessions']} sessions | {r['decoded_per_s']:.0f} | 1.00 |")
        ratios = ", ".join(f"{v:.2f}" for v in s.get("stream_vs_raw_sequential_runs", [s["stream_vs_raw_sequential"]]))
        lines.append(f"\nStream access / best raw sequential: **{ratios}** (target >= 0.9)")
    lines += ["", "| data stall | step ms | prefetch (depth) | steps | stall |", "|---|---:|---|---:|---:|"]
    for r in res["stall"]:
        lines.append(f"| {r['pattern']} | {1e3 * r['step_s']:.1f} | {'yes' if r['prefetch'] else 'no'} ({r['depth']}) "
                     f"| {r['steps']} | {100 * r['stall']:.1f}% |")
    lines += ["", "Step consumes at half the measured capacity; target: stall <= 5% with prefetch.", "",
              "| epoch-random | depth | cache | epoch | frames/s | x plain | decoded/returned | cache hits |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]
    plain = s["epoch_plain_frames_per_s"]
    for r in res["epoch"]:
        lines.append(f"| | {r['depth']} | {r['cache']} | {r['epoch']} | {r['frames_per_s']:.0f} | "
                     f"{r['frames_per_s'] / plain:.2f} | {r['decoded_per_returned']:.2f} | {r['frame_cache_hits']} |")
    lines += ["", f"Targets: depth 16 >= 1.5x plain ({s['epoch_depth16_vs_plain']:.2f}x); whole set cached, second "
              f"epoch >= 5x plain ({s['epoch_cache100_second_vs_plain']:.2f}x), for {s['cache100_gib']:.1f} GiB of "
              "decoded frames on the device.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--epoch-clips", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="a small H.264 set (CPU machines)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    res = asyncio.run(run(args))
    res["summary"] = summary(res)
    import asyncdecode

    name = platform.processor() or platform.machine()
    if torch.cuda.is_available() and res["capacity"]["backend"] == "nvdec":
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
        name = smi or torch.cuda.get_device_name()
    res["meta"] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device_name": name,
                   "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                   "asyncdecode": asyncdecode.__version__, "seconds": args.seconds, "argv": vars(args)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if res["capacity"]["backend"] == "nvdec" else "_cpu"
    (out / f"train_bench{suffix}.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (out / f"train_bench{suffix}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
