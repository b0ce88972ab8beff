"""Train a tiny model on multi-camera clips with ClipIndex, ClipSampler and ClipLoader.

    python examples/train_loop.py --device cpu

Makes a small clip set under ./asyncdecode-train-example the first time (8 clips x 3 cameras), indexes
it, and trains a 2-layer conv net to predict each frame's mean pixel value for 2 epochs. The loader
decodes `--depth` batches ahead; the training step runs in a thread (`asyncio.to_thread`), so the event
loop stays free to hand the next batches to the decoders meanwhile. It prints each epoch's loss and the
share of the epoch the loop spent waiting for data.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import torch
from torch import nn

from asyncdecode import Engine, OutputSpec
from asyncdecode.data import ClipDataset, ClipIndex, ClipLoader, ClipSampler
from asyncdecode.testing import VideoSpec, make_clip_set

ROOT = Path("asyncdecode-train-example")
FRAMES, STRIDE = 4, 2


def clip_index() -> ClipIndex:
    """The example's index, making the clip set and its index.json the first time."""
    index_file = ROOT / "index.json"
    if not index_file.exists():
        spec = VideoSpec(width=128, height=96, num_frames=60, gop=15)
        make_clip_set(ROOT / "clips", cameras=3, clips=8, spec=spec)
        ClipIndex.from_dirs(ROOT / "clips").save(index_file)
    return ClipIndex.load(index_file)


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 1, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


async def train(device: str, epochs: int, depth: int) -> None:
    index = clip_index()
    sampler = ClipSampler(index, clips_per_batch=2, frames_per_clip=FRAMES, stride=STRIDE, seed=0)
    dataset = ClipDataset(index, frames_per_clip=FRAMES, stride=STRIDE)
    torch.manual_seed(0)
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    print(f"{index!r}, {len(sampler)} batches per epoch")

    def step(frames: torch.Tensor) -> float:
        x = frames.flatten(0, 2).float().div_(255).cpu()  # (batch * cameras * frames, 3, H, W)
        target = x.mean(dim=(1, 2, 3)).unsqueeze(1)
        loss = nn.functional.mse_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    async with Engine(device=device, output=OutputSpec(layout="chw")) as eng:
        loader = ClipLoader(eng, dataset, sampler, depth=depth)
        for epoch in range(epochs):
            losses, waited = [], 0.0
            start = t = time.perf_counter()
            async for frames, samples in loader.epoch(epoch):
                waited += time.perf_counter() - t
                losses.append(await asyncio.to_thread(step, frames))
                t = time.perf_counter()
            total = time.perf_counter() - start
            print(f"epoch {epoch}: loss {sum(losses) / len(losses):.5f} over {len(losses)} batches, "
                  f"{total:.2f} s, waited for data {waited / total:.0%} of it")
        print(f"frames decoded / returned: {eng.stats()['frames_decoded']} / {eng.stats()['frames_returned']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--depth", type=int, default=4, help="batches decoded ahead")
    args = parser.parse_args()
    asyncio.run(train(args.device, args.epochs, args.depth))
