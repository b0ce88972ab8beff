"""The engine's own cost per frame: the request path with a backend that decodes nothing.

    python benchmarks/engine_overhead.py [SESSIONS]

A null backend (every job returns its wanted frames at once, one shared 4x4x3 tensor) stands in for
the decoder, so what is measured is indexing (once), GOP planning, queueing, merging, routing,
futures and result assembly: frames/s and process CPU per frame, with the request patterns of
nvdec_bench (sequential: 16 consecutive frames of 6 cameras per request, 16 requests in flight;
random: one random frame per camera, 64 in flight) and a clip read one step at a time (stepwise: frame
t of every camera per request, t = 0, 1, ..., 16 in flight), on 2 clips x 6 small H.264 files (GOP 30, 235
frames) made under /tmp/nullset. Compare with a real backend's rate to see whether the engine or the
decoder sets the pace.
"""
import asyncio, itertools, random, time, sys
from pathlib import Path
import torch
import asyncdecode._engine as E
from asyncdecode import Engine, EngineConfig
from asyncdecode._backends.base import Backend, DecodeResult, DecoderCounts, Session
from asyncdecode.testing import make_video, VideoSpec

FRAMES = 235
class NullSession(Session):
    def __init__(self):
        self.positions = {}
        self.counts = DecoderCounts()
        self.t = torch.zeros(4, 4, 3, dtype=torch.uint8)
    def decode(self, bundle, wanted, output, cancelled, keep=None, collect=False):
        return DecodeResult(frames={int(f): self.t for f in wanted}, decoded=len(wanted), fed=len(wanted))
    def close(self): pass
class NullBackend(Backend):
    name = "null"; library = "none"; device = torch.device("cpu")
    def check(self, bundle): pass
    def new_session(self): return NullSession()
    def default_sessions(self): return int(sys.argv[1]) if len(sys.argv) > 1 else 10
E.make_backend = lambda device, nvdec_library=None: NullBackend()

root = Path("/tmp/nullset"); root.mkdir(exist_ok=True)
clips = []
for c in range(2):
    clip = []
    for cam in range(6):
        p = root / f"c{c}_{cam}.mp4"
        if not p.exists():
            make_video(p, VideoSpec(width=64, height=48, num_frames=FRAMES, gop=30, seed=c * 10 + cam))
        clip.append(str(p))
    clips.append(clip)

async def main():
    async with Engine(device="cpu", config=EngineConfig()) as eng:
        for pattern in ("sequential", "random", "stepwise", "sequential"):
            rng = random.Random(1)
            def requests():
                if pattern == "random":
                    while True:
                        clip = clips[rng.randrange(len(clips))]
                        yield clip, [rng.randrange(FRAMES) for _ in clip]
                run = 1 if pattern == "stepwise" else 16
                for k in itertools.count():
                    clip = clips[k % len(clips)]
                    for start in range(0, FRAMES, run):
                        ids = range(start, min(start + run, FRAMES))
                        yield [p for p in clip for _ in ids], [j for _ in clip for j in ids]
            depth = 64 if pattern == "random" else 16
            frames = 0; c0, t0 = time.process_time(), time.perf_counter()
            s0 = eng.stats()
            agen = eng.stream(requests(), depth=depth)
            async for got in agen:
                frames += len(got)
                if time.perf_counter() - t0 >= 4:
                    break
            await agen.aclose()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            s1 = eng.stats()
            print(f"{pattern}: {frames / wall:.0f} frames/s, CPU {1e6 * cpu / frames:.0f} us/frame, "
                  f"merged {s1['jobs_merged'] - s0['jobs_merged']}, continued {s1['jobs_continued'] - s0['jobs_continued']}", flush=True)
asyncio.run(main())
