"""Decode a video stream as it arrives over a socket, then look frames up by time.

    python examples/ingest_stream.py               # serves a small generated MPEG-TS clip on localhost
    python examples/ingest_stream.py clip.ts       # or your own stream file (TS, fragmented MP4, .h264/.hevc)

A local TCP server plays the sender: it writes the stream in uneven pieces. The receiver hands the
socket's ``asyncio.StreamReader`` to ``Engine.ingest``: chunks are demuxed and decoded as they come in,
and a slow consumer holds the sender back (bounded buffering) instead of piling bytes up in memory.
"""

import asyncio
import io
import random
import sys
import tempfile
import time

import asyncdecode
from asyncdecode import Engine


async def serve(data: bytes, host: str = "127.0.0.1") -> asyncio.AbstractServer:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rng, pos = random.Random(0), 0
        while pos < len(data):
            size = rng.randint(500, 20_000)
            writer.write(data[pos : pos + size])
            await writer.drain()  # waits while the receiver does not read: backpressure over TCP
            pos += size
        writer.close()

    return await asyncio.start_server(send, host, 0)


async def main(data: bytes, clip: str) -> None:
    server = await serve(data)
    port = server.sockets[0].getsockname()[1]
    async with server, Engine(device="auto") as eng:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.perf_counter()
        async with eng.ingest(reader) as frames:
            async for frame in frames:
                if frame.index % 25 == 0:
                    print(f"{time.perf_counter() - t0:6.3f} s  {frame}")
            print("stream:", frames.stats())
        writer.close()

        info = await eng.info(clip)
        t = info.duration_seconds / 2
        exact = await eng.frame_at(clip, t)                      # the frame shown at t
        key = await eng.frame_at(clip, t, accurate=False)        # the keyframe at or before t
        print(f"at {t:.3f} s: frame {exact.index} (pts {exact.pts_seconds:.3f} s), "
              f"keyframe {key.index} (pts {key.pts_seconds:.3f} s)")
        n = sum([1 async for _ in eng.frames(clip, start=10, stop=40, step=3)])
        print(f"frames(start=10, stop=40, step=3): {n} frames;",
              {k: eng.stats()[k] for k in ("frames_returned", "frames_decoded")})


def _as_ts(mp4: str) -> bytes:
    """An MP4 clip remuxed to MPEG-TS, in memory."""
    from asyncdecode.testing import remux_video

    out = io.BytesIO()
    remux_video(mp4, out, "ts")
    return out.getvalue()


if __name__ == "__main__":
    print("asyncdecode", asyncdecode.__version__)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "rb") as f:
            asyncio.run(main(f.read(), sys.argv[1]))
    else:
        from asyncdecode.testing import VideoSpec, make_video

        with tempfile.TemporaryDirectory() as tmp:
            clip = str(make_video(f"{tmp}/clip.mp4", VideoSpec(width=320, height=180, num_frames=150, gop=30,
                                                                 bframes=2)))
            asyncio.run(main(_as_ts(clip), clip))
