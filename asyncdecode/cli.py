"""The ``asyncdecode`` command: ``demo``, ``probe FILE``, ``decode FILE ...``, ``store build|verify``, ``prepare``,
``bench``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import Engine, EngineConfig, GopStore, OutputSpec, __version__, probe
from .errors import AsyncDecodeError

if TYPE_CHECKING:  # asyncdecode.prepare is imported by the command that uses it
    from .prepare import PrepareEstimate, PrepareSummary


def write_png(path: str | os.PathLike[str], image: torch.Tensor | np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB image as PNG (with FFmpeg's PNG encoder)."""
    import av

    rgb = np.ascontiguousarray(image.cpu().numpy() if isinstance(image, torch.Tensor) else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"write_png needs an (H, W, 3) uint8 image, not {rgb.shape} {rgb.dtype}")
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = rgb.shape[1], rgb.shape[0], "rgb24", Fraction(1, 1)
    packets = ctx.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")) + ctx.encode(None)
    Path(path).write_bytes(b"".join(bytes(p) for p in packets))


def contact_sheet(rows: Sequence[Sequence[torch.Tensor]], *, gap: int = 4) -> torch.Tensor:
    """Tile HWC uint8 frames into one image, one row per sequence (all frames the same size)."""
    h, w, _ = rows[0][0].shape
    cols = max(len(r) for r in rows)
    sheet = torch.full((len(rows) * (h + gap) + gap, cols * (w + gap) + gap, 3), 24, dtype=torch.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            y, x = gap + i * (h + gap), gap + j * (w + gap)
            sheet[y : y + h, x : x + w] = frame.cpu()
    return sheet


def parse_frames(text: str) -> list[int]:
    """``"0,10,20"``, ``"0:30:10"`` (start:stop:step, stop excluded) or a mix: ``"0,5:8"``."""
    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if ":" in part:
            bits = [int(b) if b else None for b in part.split(":")]
            if len(bits) > 3 or bits[1] is None:
                raise argparse.ArgumentTypeError(f"bad frame range {part!r}: use start:stop[:step]")
            ids.extend(range(bits[0] or 0, bits[1], bits[2] if len(bits) == 3 and bits[2] else 1))
        else:
            ids.append(int(part))
    if not ids:
        raise argparse.ArgumentTypeError("no frame ids given")
    return ids


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, not {text!r}") from None
    return w, h


# -- commands -------------------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    info = probe(args.file)
    fields = {
        "path": info.path, "codec": info.codec, "width": info.width, "height": info.height,
        "pix_fmt": info.pix_fmt, "bit_depth": info.bit_depth, "num_frames": info.num_frames,
        "fps": round(info.fps, 6), "duration_seconds": round(info.duration_seconds, 6),
        "time_base": str(info.time_base), "color_space": info.color_space, "color_range": info.color_range,
        "stream_index": info.stream_index, "gops": len(info.keyframes), "keyframes": list(info.keyframes),
    }
    if args.json:
        print(json.dumps(fields, indent=2))
        return 0
    lengths = info.gop_lengths
    for key, value in fields.items():
        if key == "keyframes":
            shown = value if len(value) <= 12 else value[:12] + ["..."]
            value = ", ".join(str(v) for v in shown)
        print(f"{key:>17}: {value}")
    print(f"{'gop_lengths':>17}: min {min(lengths)}, max {max(lengths)}, mean {sum(lengths) / len(lengths):.1f}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = OutputSpec(format="rgb", size=(args.size[1], args.size[0]) if args.size else None)

    async def run() -> list[torch.Tensor]:
        async with Engine(device=args.device, output=spec) as eng:
            return await eng.decode(args.file, args.frames)

    frames = asyncio.run(run())
    stem = Path(args.file).stem
    for fid, frame in zip(args.frames, frames):
        path = out / f"{stem}_{fid:06d}.png"
        write_png(path, frame)
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .testing import VideoSpec, make_clip_set

    width, height = args.size
    say = print if not args.quiet else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory(prefix="asyncdecode-demo-") as tmp:
        spec = VideoSpec(codec=args.codec, width=width, height=height, num_frames=args.frames, gop=args.gop,
                         bframes=args.bframes, fps=10)
        t0 = time.perf_counter()
        say(f"making {args.cameras} camera clips: {args.codec} {width}x{height}, {args.frames} frames, "
            f"GOP {args.gop}, {args.bframes} B-frames ...", flush=True)
        paths = [str(p) for p in make_clip_set(tmp, cameras=args.cameras, clips=1, spec=spec)]
        say(f"  done in {time.perf_counter() - t0:.1f} s ({sum(os.path.getsize(p) for p in paths) / 1e6:.2f} MB)")
        report = asyncio.run(_demo(args, paths, say))
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


async def _demo(args: argparse.Namespace, paths: list[str], say) -> dict:
    rng = random.Random(args.seed)
    n = args.frames
    async with Engine(device=args.device, config=EngineConfig()) as eng:
        say(f"engine: {eng.backend.name} backend ({eng.backend.library}) on {eng.device}, "
            f"{eng.stats()['decoder_threads']} decoder threads")
        for p in paths:  # index every file first (one packet scan each)
            await eng.info(p)
        results: dict[str, dict] = {}

        async def pattern(name: str, requests: list[tuple[list[str], list[int]]], note: str) -> list[list[torch.Tensor]]:
            before = eng.stats()
            frames = 0
            out = []
            t0 = time.perf_counter()
            async for got in eng.stream(requests, depth=8):
                frames += len(got)
                out.append(got)
            dt = time.perf_counter() - t0
            after = eng.stats()
            decoded = after["frames_decoded"] - before["frames_decoded"]
            results[name] = {"frames": frames, "seconds": round(dt, 3), "frames_per_s": round(frames / dt, 1),
                             "decoded_per_returned": round(decoded / frames, 2)}
            say(f"{name:>10}: {frames:5d} frames in {dt:6.2f} s = {frames / dt:7.1f} frames/s "
                f"({decoded / frames:.2f} decoded per returned; {note})")
            return out

        random_steps = [(paths, [rng.randrange(n) for _ in paths]) for _ in range(args.steps)]
        rand = await pattern("random", random_steps, "one random frame per camera per step")
        clip_len = 8
        clip_steps = []
        for _ in range(max(1, args.steps // clip_len)):
            start = rng.randrange(n - clip_len)
            clip_steps.append(([p for p in paths for _ in range(clip_len)],
                               [start + k for _ in paths for k in range(clip_len)]))
        clips = await pattern("clips", clip_steps, f"{clip_len} consecutive frames per camera per request")
        stats = eng.stats()
    say("stats: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))
    rows = [[frames[i] for frames in rand[:6]] for i in range(len(paths))]
    rows.append([f for f in clips[0][:: clip_len][: len(paths)]])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, contact_sheet(rows))
    say(f"contact sheet: {out.resolve()} (rows: cameras at 6 random steps; last row: first clip's cameras)")
    return {"patterns": results, "stats": stats, "contact_sheet": str(out.resolve())}


def cmd_store_build(args: argparse.Namespace) -> int:
    store = GopStore(args.gop_dir, video_root=args.video_dir)
    summary = asyncio.run(store.build(progress=not args.quiet, workers=args.workers, executor=args.executor))
    print(f"{summary.built} videos built, {summary.skipped} up to date, {len(summary.errors)} failed; "
          f"{summary.frames} frames, {summary.bundles_written} bundles ({summary.bytes_written / 1e9:.3f} GB) "
          f"written, {summary.bundles_kept} kept, in {summary.seconds:.1f} s")
    for rel, error in sorted(summary.errors.items()):
        print(f"  failed: {rel}: {error}", file=sys.stderr)
    return 0 if summary.ok else 1


def cmd_store_verify(args: argparse.Namespace) -> int:
    summary = GopStore(args.gop_dir).verify(progress=not args.quiet)
    print(f"{summary.bundles} bundles of {summary.videos} videos checked ({summary.bytes / 1e9:.3f} GB) "
          f"in {summary.seconds:.1f} s: {'all good' if summary.ok else f'{len(summary.bad)} bad'}")
    for path, why in sorted(summary.bad.items()):
        print(f"  bad: {path}: {why}")
    return 0 if summary.ok else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import estimate, prepare

    options = dict(gop=args.gop, codec=args.codec, bframes=args.bframes, quality=args.quality, audio=args.audio,
                   workers=args.workers, executor=args.executor, progress=False if args.quiet else None)
    if args.dry_run:
        plan = asyncio.run(estimate(args.src_dir, args.dst_dir, **options))
        if args.json:
            print(json.dumps(plan.to_json(), indent=2))
        else:
            _print_estimate(plan)
        return 0 if plan.ok else 1
    summary = asyncio.run(prepare(args.src_dir, args.dst_dir, device=args.device, store=args.store, **options))
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        _print_prepared(summary)
    for rel, error in sorted(summary.failed.items()):
        print(f"  failed: {rel}: {error}", file=sys.stderr)
    if summary.store is not None:
        for rel, error in sorted(summary.store.errors.items()):
            print(f"  not stored: {rel}: {error}", file=sys.stderr)
    return 0 if summary.ok else 1


def _cost_change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "?"
    return f"{before:.1f} -> {after:.1f} ({before / after:.1f}x fewer)"


def _print_estimate(plan: PrepareEstimate) -> None:
    width = max([len(f.rel) for f in plan.files] + [4])
    print(f"{'file':<{width}}  {'frames':>7}  {'codec':<16}  {'longest GOP':<11}  frames decoded per random frame")
    for f in plan.files:
        if f.status == "failed":
            print(f"{f.rel:<{width}}  failed: {f.error}")
            continue
        codec = f"{f.codec_before}{'+B' if f.reorders_before else ''} -> {f.codec_after}"
        gops = f"{f.gop_max_before} -> {f.gop_max_after}"
        note = "  (up to date)" if f.status == "up_to_date" else ""
        print(f"{f.rel:<{width}}  {f.frames:>7}  {codec:<16}  {gops:<11}  {_cost_change(f.cost_before, f.cost_after)}"
              f"{note}")
    todo = sum(f.status == "planned" for f in plan.files)
    print(f"set: {len(plan.files)} videos ({todo} to re-encode, {len(plan.failed)} failed), {plan.frames} frames, "
          f"{plan.source_bytes / 1e6:.1f} MB: {_cost_change(plan.cost_before, plan.cost_after)} frames decoded per "
          "random frame; the size after is measured by the run")


def _print_prepared(summary: PrepareSummary) -> None:
    s = summary.settings
    psnr = summary.psnr_db
    audio = ", ".join(f"{what} in {n}" for what, n in summary.audio.items() if n) or "no videos"
    print(f"{summary.done} videos re-encoded, {summary.up_to_date} up to date, {len(summary.failed)} failed of "
          f"{len(summary.files)}; {summary.frames_encoded} frames in {summary.seconds:.1f} s "
          f"(GOP {s['gop']}, {s['bframes']} B-frames, codec {s['codec'] or 'as the source'})")
    if summary.source_bytes:
        print(f"  random access: {_cost_change(summary.cost_before, summary.cost_after)} frames decoded per "
              f"random frame")
        change = 100 * (summary.output_bytes / summary.source_bytes - 1)
        print(f"  size: {summary.source_bytes / 1e6:.2f} MB -> {summary.output_bytes / 1e6:.2f} MB ({change:+.0f}%)")
    if psnr:
        print(f"  PSNR against the source: min {min(psnr):.1f} dB, mean {sum(psnr) / len(psnr):.1f} dB "
              f"over {len(psnr)} sampled frames")
    print(f"  audio: {audio}")
    if summary.store is not None:
        print(f"  GOP store: {summary.store!r}")


# -- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asyncdecode", description="Asyncio prefetching video decode engine.")
    parser.add_argument("--version", action="version", version=f"asyncdecode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="make a small multi-camera clip set and decode it (no GPU needed)")
    demo.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    demo.add_argument("--cameras", type=int, default=6)
    demo.add_argument("--frames", type=int, default=120, help="frames per clip")
    demo.add_argument("--size", type=_size, default=(480, 270), help="WIDTHxHEIGHT (default 480x270)")
    demo.add_argument("--codec", choices=("h264", "hevc", "av1"), default="h264")
    demo.add_argument("--gop", type=int, default=30)
    demo.add_argument("--bframes", type=int, default=0)
    demo.add_argument("--steps", type=int, default=80, help="random-access steps (one frame per camera each)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="asyncdecode-demo.png", help="contact sheet PNG (default ./asyncdecode-demo.png)")
    demo.add_argument("--json", action="store_true", help="also print the results as JSON")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    pr = sub.add_parser("probe", help="describe a video file's stream and GOPs")
    pr.add_argument("file")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_probe)

    dec = sub.add_parser("decode", help="decode frames of a file to PNG files")
    dec.add_argument("file")
    dec.add_argument("--frames", type=parse_frames, required=True, help="e.g. 0,10,20 or 0:100:10")
    dec.add_argument("--out", required=True, help="output directory")
    dec.add_argument("--device", default="auto")
    dec.add_argument("--size", type=_size, default=None, help="resize to WIDTHxHEIGHT")
    dec.set_defaults(func=cmd_decode)

    store = sub.add_parser("store", help="the GOP store: demux every video of a folder once, offline")
    store_sub = store.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)
    sb = store_sub.add_parser("build", help="store every video under VIDEO_DIR as GOP bundles in GOP_DIR "
                                            "(resumes; skips videos already stored and unchanged)")
    sb.add_argument("video_dir", metavar="VIDEO_DIR")
    sb.add_argument("gop_dir", metavar="GOP_DIR")
    sb.add_argument("--workers", type=int, default=None, help="videos demuxed at once (default min(cores, 8))")
    sb.add_argument("--executor", choices=("process", "thread"), default="process",
                    help="run the workers as processes (default) or threads")
    sb.add_argument("--quiet", action="store_true", help="no progress line")
    sb.set_defaults(func=cmd_store_build)
    sv = store_sub.add_parser("verify", help="read and CRC-check every bundle of GOP_DIR; exit 1 if any is bad")
    sv.add_argument("gop_dir", metavar="GOP_DIR")
    sv.add_argument("--quiet", action="store_true", help="no progress line")
    sv.set_defaults(func=cmd_store_verify)

    pp = sub.add_parser("prepare", help="re-encode every video under SRC_DIR into DST_DIR with short GOPs, for fast "
                                        "random access (resumes; skips videos already done)")
    pp.add_argument("src_dir", metavar="SRC_DIR")
    pp.add_argument("dst_dir", metavar="DST_DIR")
    pp.add_argument("--gop", type=int, default=30, help="frames per GOP (default 30)")
    pp.add_argument("--codec", choices=("h264", "hevc", "av1"), default=None,
                    help="default: each source's codec where it can be encoded, else h264")
    pp.add_argument("--bframes", type=int, default=0, help="B-frames between references (default 0)")
    pp.add_argument("--quality", type=int, default=None,
                    help="the encoder's CRF, lower is better (default: 16 h264, 18 hevc, 22 av1)")
    pp.add_argument("--audio", choices=("copy", "drop"), default="copy",
                    help="copy audio untouched (default) or drop it")
    pp.add_argument("--device", choices=("cpu",), default="cpu", help="cpu (no NVENC path: see docs/prepare.md)")
    pp.add_argument("--workers", type=int, default=None, help="videos re-encoded at once (default min(cores, 8))")
    pp.add_argument("--executor", choices=("process", "thread"), default="process",
                    help="run the workers as processes (default) or threads")
    pp.add_argument("--dry-run", action="store_true",
                    help="encode nothing: per video and for the set, random-access cost now and after")
    pp.add_argument("--store", metavar="DIR", default=None, help="then build a GOP store of DST_DIR in DIR")
    pp.add_argument("--json", action="store_true", help="print the summary as JSON")
    pp.add_argument("--quiet", action="store_true", help="no progress line")
    pp.set_defaults(func=cmd_prepare)

    bench = sub.add_parser("bench", add_help=False,
                           help="NVDEC benchmark: raw sessions, PyNvVideoCodec decoders and asyncdecode side by side "
                                "(GPU; `asyncdecode bench --help` for options)")
    bench.set_defaults(func=cmd_bench)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench  # imported by the command that uses it

    return bench.main(args.rest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except AsyncDecodeError as exc:
        print(f"asyncdecode: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
