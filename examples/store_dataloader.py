"""Demux once, then train: a GOP store read by DataLoader workers, frames decoded in the main process.

    python examples/store_dataloader.py [--device cpu|cuda] [--workers 2]

Builds a small 6-camera clip set and its GOP store under ./asyncdecode-store-example, then runs a
DataLoader whose workers only read bundle files (no demuxing, no decoding) and hand them over through
shared memory; the main process decodes the frames of each step on its engine.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path

import torch

from asyncdecode import Engine, GopStore, SharedGopCache
from asyncdecode.testing import VideoSpec, make_clip_set


class StepDataset(torch.utils.data.Dataset):
    """Step i: one random frame of each camera. A worker reads the GOPs those frames need."""

    def __init__(self, store: GopStore, cameras: list[str], steps: int, cache: SharedGopCache) -> None:
        self.store, self.cameras, self.cache = store, cameras, cache
        rng = random.Random(0)
        self.frames = [[rng.randrange(store.info(c).num_frames) for c in cameras] for _ in range(steps)]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int):
        ids = self.frames[i]
        refs = [self.cache.share(self.store.read_bundle(c, self.store.info(c).gop_of(f)))
                for c, f in zip(self.cameras, ids)]
        return self.cameras, ids, refs


async def main(args: argparse.Namespace) -> None:
    root = Path("asyncdecode-store-example")
    if not (root / "videos").exists():
        make_clip_set(root / "videos", cameras=6, spec=VideoSpec(width=320, height=180, num_frames=90, gop=30))
    store = GopStore(root / "gops", video_root=root / "videos")
    print(await store.build(progress=False, executor="thread"))
    cameras = [str(p) for p in sorted((root / "videos").rglob("*.mp4"))]
    with SharedGopCache(256 << 20) as cache:
        loader = torch.utils.data.DataLoader(StepDataset(store, cameras, 40, cache), batch_size=None,
                                             num_workers=args.workers)
        async with Engine(device=args.device, gop_store=store) as eng:
            for paths, ids, refs in loader:
                await eng.add_bundles(cache.open(r) for r in refs)  # the workers' reads, no copy
                frames = await eng.decode(paths, ids)
                batch = torch.stack(frames)  # (6, H, W, 3) uint8 on the engine's device
            print(f"last batch {tuple(batch.shape)} on {batch.device}; engine: {eng.stats()['store_reads']} "
                  f"bundle reads of its own, {eng.stats()['gop_cache_hits']} GOPs from the workers")
        print("shared cache:", cache.stats())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    asyncio.run(main(ap.parse_args()))
