"""Data-parallel training with one engine per rank: ClipSampler shards the clips, DDP syncs the model.

    torchrun --nproc_per_node=N examples/train_ddp.py --data DIR [--device cuda|cpu] [--epochs E]

DIR holds ``<clip>/<camera>.mp4`` (and ``index.json`` if you have one); when it has no videos, rank 0
makes a small clip set there first. Each rank opens one engine on its own device (``cuda:LOCAL_RANK``,
or the CPU), reads its shard of every epoch through ClipLoader and trains a tiny DDP model on it. At the
end of each epoch the ranks gather the clips they read and check that every clip was read exactly once
across ranks and that ``set_epoch`` gave a new order; rank 0 prints one line per epoch (2 CPU ranks; wrapped here):

    epoch 1: 8 clips over 2 ranks, every clip read exactly once, order reshuffled; 32 frames/rank;
    frames/s per rank 511, 515, total 1022

The CPU run (gloo) is what the tests run (tests/test_ddp_cpu.py); the NCCL path on several GPUs has not been
run yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from asyncdecode import Engine, OutputSpec
from asyncdecode.data import ClipDataset, ClipIndex, ClipLoader, ClipSampler
from asyncdecode.store import VIDEO_EXTENSIONS
from asyncdecode.testing import VideoSpec, make_clip_set

FRAMES, STRIDE, CLIPS_PER_BATCH = 4, 2, 2


def clip_index(data: Path) -> ClipIndex:
    """The clips under ``data``, made by rank 0 when there are none; the same index on every rank."""
    if dist.get_rank() == 0 and not any(p.suffix.lower() in VIDEO_EXTENSIONS for p in data.rglob("*")):
        make_clip_set(data, cameras=2, clips=8, spec=VideoSpec(width=64, height=48, num_frames=24, gop=8))
    dist.barrier()  # the others wait until the clips exist
    # from_dirs sorts the clips by name, so every rank gets the same order (the sampler relies on it)
    return ClipIndex.load(data / "index.json") if (data / "index.json").exists() else ClipIndex.from_dirs(data)


def check_epoch(epoch: int, gathered: list[list[str]], names: list[str], previous: list[list[str]] | None) -> str:
    """Every clip read once across ranks (but for the sampler's padding), in a new order; or raise."""
    world = len(gathered)
    reads = Counter(name for shard in gathered for name in shard)
    padding = -len(names) % world  # clips repeated so every rank takes as many steps (DistributedSampler's rule)
    if set(reads) != set(names) or sum(reads.values()) != len(names) + padding:
        raise RuntimeError(f"epoch {epoch}: clips read {dict(reads)}, wanted each of {len(names)} once"
                           f" (+{padding} padding)")
    once = "every clip read exactly once" if not padding else f"every clip read once, +{padding} padding repeat(s)"
    if previous is None:
        order = "first order"
    elif gathered != previous:
        order = "order reshuffled"
    elif len(names) > 5:  # a handful of clips can come out in the same order by chance; more, not
        raise RuntimeError(f"epoch {epoch} read the clips in the same order as epoch {epoch - 1}: set_epoch?")
    else:
        order = "order unchanged (too few clips to tell)"
    return f"{len(names)} clips over {world} ranks, {once}, {order}"


async def train(data: Path, device: str, epochs: int) -> None:
    rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"])
    index = clip_index(data)
    sampler = ClipSampler(index, clips_per_batch=CLIPS_PER_BATCH, frames_per_clip=FRAMES, stride=STRIDE, seed=0)
    dataset = ClipDataset(index, frames_per_clip=FRAMES, stride=STRIDE)  # sampler takes rank/world from dist

    torch.manual_seed(0)  # DDP also broadcasts rank 0's weights
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 1)).to(device)
    model = DistributedDataParallel(net, device_ids=[local_rank] if device.startswith("cuda") else None)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def step(frames: torch.Tensor) -> None:
        x = frames.flatten(0, 2).float().div_(255)  # (batch * cameras * frames, 3, H, W), on this rank's device
        loss = nn.functional.mse_loss(model(x), x.mean(dim=(1, 2, 3)).unsqueeze(1))
        opt.zero_grad()
        loss.backward()  # DDP all-reduces the gradients here: every rank must take as many steps
        opt.step()

    previous = None
    async with Engine(device=device, output=OutputSpec(layout="chw")) as eng:
        loader = ClipLoader(eng, dataset, sampler, depth=4)
        for epoch in range(epochs):
            read: list[str] = []
            frames_read, start = 0, time.perf_counter()
            # the step runs on the loop's thread, where the collectives and the current CUDA device are
            # set up; the engine's threads keep decoding the next `depth` batches meanwhile
            async for frames, samples in loader.epoch(epoch):  # epoch(e) calls sampler.set_epoch(e)
                step(frames)
                read += [name for name, _ in samples]
                frames_read += frames.shape[0] * frames.shape[1] * frames.shape[2]
            seconds = time.perf_counter() - start
            gathered: list = [None] * world
            dist.all_gather_object(gathered, (read, frames_read, seconds))
            shards = [shard for shard, _, _ in gathered]
            summary = check_epoch(epoch, shards, index.names, previous)  # same data on every rank: all raise
            previous = shards
            if rank == 0:
                rates = ", ".join(f"{n / s:.0f}" for _, n, s in gathered)
                total = sum(n for _, n, _ in gathered) / max(s for _, _, s in gathered)
                print(f"epoch {epoch}: {summary}; {frames_read} frames/rank; frames/s per rank {rates}, "
                      f"total {total:.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="clip folder (made when it has no videos)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    local_rank = int(os.environ["LOCAL_RANK"])  # set by torchrun, as are RANK, WORLD_SIZE and MASTER_*
    if args.device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)  # all_gather_object and barrier use the current device with NCCL
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        device = "cpu"
        dist.init_process_group("gloo")
    try:
        asyncio.run(train(args.data, device, args.epochs))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
