"""The frame cache's policy for extras, simulated: epoch-random reading over 6 files x 144 frames (GOP 30)
at 0 / 25 / 50 / 100% of the set, decisions taken Q jobs before the jobs finish (Q=1: at once; Q=96: a
queue of 16 requests x 6 files in flight, as in matrix_bench's cache cells), and the cost of a run
counted with what the engine is told an extra costs (30 us) or with what it costs on the GPU all in
(0.3 ms: the decoder's map, the conversion, the loop's bookkeeping). The cost model (0.1 ms per
picture decoded) is a model, not a measurement: the GPU's own answer is matrix_bench's cache cells.

    PYTHONPATH=. python benchmarks/cache_policy_sim.py

Prints per share and epoch: (epoch, hits, pictures decoded, frames converted, extras admitted, cost s),
and the cost without a cache over the cost with it (>= 1: the cache does not slow the run down).
"""
import collections
import random

import torch

from asyncdecode._cache import FrameCache, EXTRAS_MIN_HIT_FRACTION_GPU
FILES, FRAMES, GOP = 6, 144, 30
FB = 640 * 360 * 3
frame = torch.zeros(FB, dtype=torch.uint8)
def run(share, Q=96, epochs=2, conv=30e-6, dec=0.1e-3, seed=0, true_conv=None):
    cap = int(share * FILES * FRAMES * FB)
    c = FrameCache(cap, cheap=True, min_hit_fraction=EXTRAS_MIN_HIT_FRACTION_GPU)
    rng = random.Random(seed)
    out = []
    for e in range(epochs):
        order = [(f, i) for f in range(FILES) for i in range(FRAMES)]
        rng.shuffle(order)
        hits = decoded = converted = 0
        a0 = c.extras_admitted
        q = collections.deque()
        def finish(job):
            nonlocal decoded, converted
            f, i, k, collect, on_way = job
            decoded += on_way
            if collect:
                for j in range(k, i):
                    c.put((f, j), frame, extra=True)
                converted += on_way
            else:
                converted += 1
            c.put((f, i), frame)

            c.note_job(conv * (on_way if collect else 1), on_way if collect else 1, dec * on_way, 1)
        for (f, i) in order:
            if c.get((f, i)) is not None:
                hits += 1; continue
            k = (i // GOP) * GOP
            on_way = i - k + 1
            c.note_file(f, FRAMES * FB); collect = c.collect(on_way * FB, on_way - 1)
            q.append((f, i, k, collect, on_way))
            if len(q) >= Q:
                finish(q.popleft())
        while q: finish(q.popleft())
        cost = decoded * dec + converted * (true_conv or conv)
        out.append((e + 1, hits, decoded, converted, c.extras_admitted - a0, round(cost, 3)))
    return out
base = run(0.0)
for Q in (1, 96):
    for share in (0.25, 0.5, 1.0):
        r = run(share, Q)
        print(f"Q={Q} share={share}", r, "x no cache (cost):", [(round(b[-1] / x[-1], 2) if x[-1] else 'all hits') for b, x in zip(run(0.0, Q), r)])
print("--- an extra costs 0.3 ms, the engine is told 30 us (what it measures)")

for Q in (1, 96):
    for share in (0.25, 0.5, 1.0):
        r = run(share, Q, true_conv=0.3e-3)
        b = run(0.0, Q, true_conv=0.3e-3)
        print(f"Q={Q} share={share}", r, "x no cache:", [(round(x[-1] / y[-1], 2) if y[-1] else 'all hits') for x, y in zip(b, r)])
