"""How much of the soak's host growth follows the free decoders, and how much the decoders made.

    python benchmarks/results/runs/h200-20261205-b/soak_pool_regression.py [soak.json]

Least squares over the quiet samples after the first minute: each resource against the count of free
decoders (and, jointly, against it and the decoders made so far); what is left after the free-decoder
term, as a slope per 10 minutes. Written in the thirteenth session over this folder's soak (b2757a6).
"""
import json
import sys
from pathlib import Path

import numpy as np

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("soak_b2757a6.json")
samples = [r for r in json.loads(path.read_text())["samples"] if r["t_s"] >= 60]
free = np.array([r["decoders_free"] for r in samples], float)
made = np.array([r["decoders_created"] for r in samples], float)
t = np.array([r["t_s"] for r in samples], float)
print(f"{len(samples)} samples; decoders free {free.min():.0f}-{free.max():.0f}, made {made[0]:.0f} -> {made[-1]:.0f}")
print("resource | corr. with free | corr. with made | per free decoder | joint fit: per free, per made | "
      "left after the free term, per 10 min")
for key in ("rss_mib", "heap_in_use_mib", "heap_held_mib", "rss_nvidia_mib", "mappings", "open_fds"):
    y = np.array([r[key] for r in samples], float)
    one = np.linalg.lstsq(np.c_[np.ones_like(free), free], y, rcond=None)[0]
    two = np.linalg.lstsq(np.c_[np.ones_like(free), free, made], y, rcond=None)[0]
    left = np.polyfit(t, y - (one[0] + one[1] * free), 1)[0] * 600
    print(f"{key} | {np.corrcoef(free, y)[0, 1]:+.2f} | {np.corrcoef(made, y)[0, 1]:+.2f} | {one[1]:.2f} | "
          f"{two[1]:.2f}, {two[2]:.2f} | {left:.1f} ({100 * left / y[0]:.1f}%)")
