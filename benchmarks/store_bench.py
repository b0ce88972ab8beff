"""GOP store benchmark: random access through a built store against through the videos, same frames.

Makes 6 cameras x 4 clips of 640x360 H.264 (GOP 30, 235 frames) under benchmarks/data/store/videos if
absent, builds the store next to them, then, in one process, runs the same random requests (one
random frame per camera per step) through two engines on the same device, interleaved, twice each:

- ``videos``: ``Engine(device)``, GOPs demuxed from the mp4 files (PyAV, thread pool);
- ``store``: ``Engine(device, gop_store=store)``, GOPs read from bundle files (aiofiles) and parsed in
  place; the videos are never opened.

Two passes per engine and round: fetching alone (``prefetch`` of every GOP the steps touch, nothing
decoded: host CPU per GOP fetched), then the steps decoded with the GOP cache off, so that every GOP
a request touches is fetched again (frames/s, host CPU per frame). The OS page cache is dropped for
both the videos and the store before each pass (``drop_page_cache``). Writes
benchmarks/results/store_bench.{json,md}.

    python benchmarks/store_bench.py [--device cpu|cuda] [--steps 200] [--depth 8] [--videos DIR]

``--videos DIR`` measures an existing set instead (every video under DIR, in sorted order, 6 cameras
to a clip), for example the NVDEC benchmark's 1600x900 HEVC set (``benchmarks/data/nvdec``) after
``nvdec_bench.py`` has made it: no encoding in the run, and the set the GPU numbers are quoted for.

On the CPU backend decoding dominates the host CPU, so the store's saving shows in the CPU per GOP
fetched rather than in CPU per frame; on NVDEC, where decoding leaves the host, it is the CPU per frame.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CAMERAS, CLIPS = 6, 4


def make_set(root: Path) -> list[list[str]]:
    from asyncdecode.testing import VideoSpec, make_clip_set

    spec = VideoSpec(width=640, height=360, num_frames=235, gop=30, fps=10)
    marker = root / "videos" / ".done"
    if not marker.exists():
        print(f"making {CAMERAS * CLIPS} videos under {root / 'videos'} ...", flush=True)
        make_clip_set(root / "videos", cameras=CAMERAS, clips=CLIPS, spec=spec)
        marker.touch()
    paths = sorted(str(p) for p in (root / "videos").rglob("*.mp4"))
    return [paths[k * CAMERAS:(k + 1) * CAMERAS] for k in range(CLIPS)]


async def one_pass(eng, steps: list[tuple[list[str], list[int]]], depth: int) -> dict:
    before = eng.stats()
    c0, t0 = time.process_time(), time.perf_counter()
    frames = 0
    async for got in eng.stream(steps, depth=depth):
        frames += len(got)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = eng.stats()
    fetched = (after["demux_jobs"] - before["demux_jobs"]) + (after["store_reads"] - before["store_reads"])
    fetch_s = (after["demux_s"] - before["demux_s"]) + (after["store_read_s"] - before["store_read_s"])
    return {"frames": frames, "seconds": wall, "frames_per_s": frames / wall, "cpu_ms_per_frame": 1e3 * cpu / frames,
            "gops_fetched": fetched, "fetch_ms_per_gop": 1e3 * fetch_s / max(1, fetched),
            "demux_jobs": after["demux_jobs"] - before["demux_jobs"],
            "store_reads": after["store_reads"] - before["store_reads"]}


async def run(args: argparse.Namespace) -> dict:
    from asyncdecode import Engine, EngineConfig, GopStore, drop_page_cache

    from asyncdecode import probe

    root = Path(args.data)
    if args.videos:
        video_root = Path(args.videos).resolve()
        paths = sorted(str(p) for p in video_root.rglob("*.mp4"))
        if len(paths) < CAMERAS:
            raise SystemExit(f"--videos {video_root}: {len(paths)} mp4 files, need at least {CAMERAS}")
        clips = [paths[k * CAMERAS:(k + 1) * CAMERAS] for k in range(len(paths) // CAMERAS)]
        gop_root = root / f"gops-{video_root.name}"
    else:
        clips, video_root, gop_root = make_set(root), root / "videos", root / "gops"
    info = probe(clips[0][0])
    frames = min(probe(p).num_frames for c in clips for p in c)
    store = GopStore(gop_root, video_root=video_root)
    t = time.perf_counter()
    summary = await store.build(progress=False)
    print(f"store: {summary} ({time.perf_counter() - t:.1f} s)", flush=True)
    if summary.errors:
        raise SystemExit(f"store build failed: {summary.errors}")
    rng = random.Random(args.seed)
    steps = []
    for _ in range(args.steps):
        clip = clips[rng.randrange(len(clips))]
        steps.append((clip, [rng.randrange(frames) for _ in clip]))
    store_files = [str(p) for p in gop_root.rglob("*.bin")]
    video_files = [p for c in clips for p in c]
    cfg = EngineConfig(gop_cache_bytes=0)  # every GOP a request touches is fetched
    results = []
    pairs = sorted({(p, f) for paths, ids in steps for p, f in zip(paths, ids)})
    for rnd in (1, 2):
        for name in ("videos", "store"):  # fetching alone: every GOP the steps touch, nothing decoded
            drop_page_cache(store_files + video_files)
            async with Engine(args.device, gop_store=store if name == "store" else None) as eng:
                for p in video_files:
                    await eng.info(p)
                c0, t0 = time.process_time(), time.perf_counter()
                await eng.prefetch([p for p, _ in pairs], [f for _, f in pairs])
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                gops = eng.stats()["gop_cache_entries"]
            results.append({"round": rnd, "source": name, "pass": "fetch", "gops": gops,
                            "cpu_ms_per_gop": 1e3 * cpu / gops, "gops_per_s": gops / wall})
            print(f"round {rnd} {name:6s} fetch only: {gops} GOPs, {1e3 * cpu / gops:.3f} ms CPU per GOP, "
                  f"{gops / wall:.0f} GOPs/s", flush=True)
        for name in ("videos", "store"):
            drop_page_cache(store_files + video_files)
            async with Engine(args.device, config=cfg, gop_store=store if name == "store" else None) as eng:
                for p in video_files:  # index (videos) or read the store's index before timing
                    await eng.info(p)
                r = await one_pass(eng, steps, args.depth)
            r.update(round=rnd, source=name, **{"pass": "decode"})
            results.append(r)
            print(f"round {rnd} {name:6s}: {r['frames_per_s']:7.1f} frames/s, {r['cpu_ms_per_frame']:.2f} ms CPU/frame, "
                  f"{r['fetch_ms_per_gop']:.2f} ms per GOP fetched ({r['gops_fetched']} GOPs)", flush=True)
    return {"results": results, "store_bytes": sum(os.path.getsize(p) for p in store_files),
            "video_bytes": sum(os.path.getsize(p) for p in video_files),
            "set": f"{CAMERAS}x{len(clips)} {info.width}x{info.height} {info.codec}, {frames} frames"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(HERE / "data" / "store"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--videos", default=None, help="measure the videos under this directory (default: make a set)")
    args = ap.parse_args()
    import torch

    from asyncdecode import __version__

    res = asyncio.run(run(args))
    by = {(r["round"], r["source"], r["pass"]): r for r in res["results"]}

    def ratio(k: int, kind: str, field: str) -> float:
        return by[(k, "store", kind)][field] / by[(k, "videos", kind)][field]

    ratios = [{"round": k, "fetch_cpu_per_gop_store_over_videos": ratio(k, "fetch", "cpu_ms_per_gop"),
               "cpu_per_frame_store_over_videos": ratio(k, "decode", "cpu_ms_per_frame"),
               "frames_per_s_store_over_videos": ratio(k, "decode", "frames_per_s")} for k in (1, 2)]
    res["ratios"] = ratios
    res["meta"] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": args.device,
                   "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                   "asyncdecode": __version__, "steps": args.steps, "depth": args.depth,
                   "set": res["set"]}
    lines = [f"# store_bench — {args.device}, {res['meta']['date']}", "",
             f"{res['meta']['set']}; {args.steps} steps of one random frame per camera, depth {args.depth}, "
             f"GOP cache off, page cache dropped before each pass; store {res['store_bytes'] / 1e6:.1f} MB, "
             f"videos {res['video_bytes'] / 1e6:.1f} MB.", "",
             "| round | source | fetch only: CPU ms/GOP | GOPs/s | decode: frames/s | CPU ms/frame |",
             "|---:|---|---:|---:|---:|---:|"]
    for k in (1, 2):
        for src in ("videos", "store"):
            f, d = by[(k, src, "fetch")], by[(k, src, "decode")]
            lines.append(f"| {k} | {src} | {f['cpu_ms_per_gop']:.3f} | {f['gops_per_s']:.0f} | {d['frames_per_s']:.1f} | "
                         f"{d['cpu_ms_per_frame']:.2f} |")
    lines += ["", "| round | fetch CPU/GOP store / videos | CPU/frame store / videos | frames/s store / videos |",
              "|---:|---:|---:|---:|"]
    for q in ratios:
        lines.append(f"| {q['round']} | {q['fetch_cpu_per_gop_store_over_videos']:.2f} | "
                     f"{q['cpu_per_frame_store_over_videos']:.2f} | {q['frames_per_s_store_over_videos']:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "store_bench" if args.device == "cpu" else f"store_bench_{args.device.replace(':', '')}"
    (out / f"{name}.json").write_text(json.dumps(res, indent=2))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
