"""A training-style loop: decode runs ahead of the (simulated) training step with `stream(depth=k)`.

    python examples/prefetch_loop.py
"""

import asyncio
import random
import tempfile
import time

from asyncdecode import Engine
from asyncdecode.testing import VideoSpec, make_clip_set


async def train(paths: list[str], steps: int, depth: int) -> float:
    rng = random.Random(0)
    n = 90
    batches = [(paths, [rng.randrange(n) for _ in paths]) for _ in range(steps)]  # what the sampler will ask
    waited = 0.0
    async with Engine(device="auto") as eng:
        for p in paths:
            await eng.info(p)
        t = time.perf_counter()
        async for frames in eng.stream(batches, depth=depth):
            waited += time.perf_counter() - t
            await asyncio.sleep(0.05)  # the training step (use the frames here)
            t = time.perf_counter()
    return waited


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        spec = VideoSpec(width=320, height=180, num_frames=90, gop=30, fps=10)
        paths = [str(p) for p in make_clip_set(tmp, cameras=6, spec=spec)]
        for depth in (1, 4):
            waited = asyncio.run(train(paths, steps=40, depth=depth))
            print(f"depth {depth}: waited {waited:.2f} s for data over 40 steps of 50 ms")
