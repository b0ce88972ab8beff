"""Decode frames by index from several videos with asyncdecode.

    python examples/quickstart.py                 # makes two small clips in a temporary folder
    python examples/quickstart.py a.mp4 b.mp4     # or uses your files
"""

import asyncio
import sys
import tempfile

import torch

import asyncdecode
from asyncdecode import Engine, OutputSpec


async def main(paths: list[str]) -> None:
    async with Engine(device="auto") as eng:
        infos = [await eng.info(p) for p in paths]
        for info in infos:
            print(info)
        ids = [info.num_frames // 2 for info in infos]
        frames = await eng.decode(paths, ids)                       # one tensor per (path, id)
        print([tuple(f.shape) for f in frames], frames[0].dtype, frames[0].device)

        small = OutputSpec(layout="chw", dtype=torch.float32, size=(112, 112))
        batch = await eng.decode(paths, [0] * len(paths), output=small)
        print("resized:", [tuple(f.shape) for f in batch])

        try:
            await eng.decode(paths[0], [infos[0].num_frames])        # one past the end
        except asyncdecode.FrameIndexError as exc:
            print("error:", exc)
        print({k: v for k, v in eng.stats().items() if k in ("requests", "frames_returned", "frames_decoded",
                                                             "gop_cache_hits", "gop_cache_misses")})


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1:]))
    else:
        from asyncdecode.testing import VideoSpec, make_clip_set

        with tempfile.TemporaryDirectory() as tmp:
            clips = make_clip_set(tmp, cameras=2, spec=VideoSpec(width=320, height=180, num_frames=60, gop=15))
            asyncio.run(main([str(p) for p in clips]))
