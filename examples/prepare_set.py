"""Re-encode a long-GOP set for random access, then read it through a GOP store: the Python API.

    python examples/prepare_set.py               # makes a small GOP-250 set in a temporary folder
    python examples/prepare_set.py SRC_DIR       # or prepares your folder (into a temporary one)

Estimates first (nothing encoded), re-encodes with GOP 30, builds a GOP store of the result, and
compares the frames decoded per random frame, as the engine counts them, on the set before and after.
"""

import asyncio
import random
import sys
import tempfile
from pathlib import Path

from asyncdecode import Engine, GopStore, probe
from asyncdecode.prepare import estimate, prepare
from asyncdecode.testing import VideoSpec, make_video


async def decoded_per_frame(paths: list[Path], store: GopStore | None = None, requests: int = 40) -> float:
    rng = random.Random(0)
    counts = {p: probe(p).num_frames for p in paths}
    async with Engine(device="auto", gop_store=store) as eng:
        for _ in range(requests):
            path = rng.choice(paths)
            await eng.decode([path], [rng.randrange(counts[path])])
        stats = eng.stats()
    return stats["frames_decoded"] / stats["frames_returned"]


async def main(src: Path, work: Path) -> None:
    dst, gops = work / "gop30", work / "gop30-store"
    plan = await estimate(src, dst, gop=30)
    for f in plan.files:
        print(f"{f.rel}: {f.status}, GOPs up to {f.gop_max_before} -> {f.gop_max_after}, "
              f"{f.cost_before:.1f} -> {f.cost_after:.1f} frames decoded per random frame" if f.cost_after
              else f"{f.rel}: {f.status} {f.error or ''}")
    summary = await prepare(src, dst, gop=30, store=gops)
    print(summary)
    print(f"PSNR min {min(summary.psnr_db):.1f} dB; {summary.source_bytes / 1e6:.2f} MB -> "
          f"{summary.output_bytes / 1e6:.2f} MB; audio {summary.audio}; store {summary.store}")
    rels = [f.rel for f in summary.files if f.status != "failed"]
    before = await decoded_per_frame([src / r for r in rels])
    after = await decoded_per_frame([dst / r for r in rels], GopStore(gops, video_root=dst))
    print(f"engine, random frames: {before:.1f} decoded per frame before, {after:.1f} after (from the store)")


if __name__ == "__main__":  # prepare's worker processes start with spawn: keep this guard
    with tempfile.TemporaryDirectory(prefix="asyncdecode-prepare-") as tmp:
        if len(sys.argv) > 1:
            source = Path(sys.argv[1])
        else:
            source = Path(tmp) / "raw"
            for cam in range(3):
                make_video(source / f"cam{cam}.mp4", VideoSpec(width=320, height=180, num_frames=260, gop=250,
                                                               bframes=2 * (cam % 2), seed=cam))
        asyncio.run(main(source, Path(tmp)))
