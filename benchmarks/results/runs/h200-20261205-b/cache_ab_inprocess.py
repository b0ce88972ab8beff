"""Alternating in-process A/B of the frame cache: one LRU list against the protected segment, on
epoch-random reads (matrix_bench's cache shape: 6 frames a request, 16 requests ahead), rounds of
no cache / each config; ratios against the round's own no-cache run."""
import asyncio, contextlib, json, os, random, statistics, sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
import torch
import asyncdecode
from asyncdecode import _cache
from matrix_bench import ensure_files
dev, nfiles, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
configs = sys.argv[4].split(",")
paths, _ = ensure_files(Path(sys.argv[5]), {"uniform": nfiles})
paths = paths["uniform"][:nfiles]
from asyncdecode import _request
KW = _cache.FrameCache.__init__.__kwdefaults__
_copy = _request.copy_frame
async def run(cap, ps, orders, nocopy=False):
    KW['protected_share'] = ps
    _request.copy_frame = (lambda t: t) if nocopy else _copy  # experiment only: hits share the cached tensor
    async with asyncdecode.Engine(device=dev, config=asyncdecode.EngineConfig(frame_cache_bytes=cap)) as eng:
        for p in paths:
            await eng.decode(p, [0])
        s0 = eng.stats(); t0 = time.perf_counter(); n = 0; eps = []
        for epoch in sorted(orders):
            te = time.perf_counter(); ne = n
            async with contextlib.aclosing(eng.stream(orders[epoch], depth=16)) as s:
                async for got in s: n += len(got)
            if dev == "cuda": torch.cuda.synchronize()
            eps.append((n - ne) / (time.perf_counter() - te))
        dt = time.perf_counter() - t0; s1 = eng.stats()
        d = lambda k: s1[k] - s0[k]
        out = {"fps": n / dt, "epochs": eps, "decoded": d("frames_decoded") / n, "hits": d("frame_cache_hits"),
               "extras": d("frame_cache_extras_admitted"), "kept": d("frame_cache_wanted_admitted")}
    if dev == "cuda": torch.cuda.empty_cache()
    return out
async def main():
    infos = [asyncdecode.probe(p) for p in paths]
    pairs = [(p, f) for p, i in zip(paths, infos) for f in range(i.num_frames)]
    set_bytes = sum(3 * i.width * i.height * i.num_frames for i in infos)
    orders = {}
    for epoch in (1, 2, 3, 4):
        o = pairs[:]; random.Random(epoch).shuffle(o)
        orders[epoch] = [([p for p, _ in o[j:j+6]], [f for _, f in o[j:j+6]]) for j in range(0, len(o), 6)]
    print(f"{dev}: {len(paths)} files, {len(pairs)} frames, {set_bytes/2**20:.0f} MiB decoded", flush=True)
    res = {c: [] for c in configs}
    for r in range(rounds):
        base = await run(0, 0.0, orders)
        line = [f"round {r}: none {base['fps']:.0f} f/s dec {base['decoded']:.2f}"]
        for c in configs:
            kind, share = c.split(":"); share = float(share)
            got = await run(int(share * set_bytes) + 3 * 640 * 360, 0.8 if kind.startswith("slru") else 0.0, orders,
                            nocopy=kind.endswith("nocopy"))
            got["x"] = got["fps"] / base["fps"]; got["x_epochs"] = [a / b for a, b in zip(got["epochs"], base["epochs"])]
            res[c].append(got)
            line.append(f"{c} {got['x']:.2f}x (epochs {' '.join(f'{x:.2f}' for x in got['x_epochs'])}) dec {got['decoded']:.2f} hits {got['hits']} ex {got['extras']} kept {got['kept']}")
        print(" | ".join(line), flush=True)
    for c in configs:
        xs = [g["x"] for g in res[c]]
        print(f"{c}: x no cache median {statistics.median(xs):.3f} mean {statistics.mean(xs):.3f} min {min(xs):.3f} max {max(xs):.3f}; "
              f"decoded/returned {statistics.mean(g['decoded'] for g in res[c]):.3f} hits {statistics.mean(g['hits'] for g in res[c]):.0f}", flush=True)
asyncio.run(main())
