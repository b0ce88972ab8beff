"""Sampled wall-time profile of the engine's threads in chosen matrix cells, uniform vs mixed sizes."""
import asyncio, collections, os, random, sys, threading, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
import matrix_bench as mb
from asyncdecode import Engine

DEV = os.environ.get("PROF_DEV", "cuda")
SECONDS = float(os.environ.get("PROF_S", "3"))
CELLS = [("random", 16, 24), ("front", 16, 6), ("front", 1, 24), ("random", 1, 24)]

class Sampler:
    def __init__(self, period=0.002):
        self.period, self.stop, self.counts = period, threading.Event(), collections.Counter()
        self.pkg = collections.Counter(); self.n = 0
    def run(self):
        me = threading.get_ident()
        names = {}
        while not self.stop.wait(self.period):
            names = {t.ident: t.name for t in threading.enumerate()}
            for tid, fr in sys._current_frames().items():
                if tid == me: continue
                name = names.get(tid, "?")
                kind = "dec" if name.startswith("asyncdecode-") else ("main" if name == "MainThread" else "other:" + name.split("-")[0][:12])
                leaf = f"{fr.f_code.co_name}@{Path(fr.f_code.co_filename).name}:{fr.f_lineno}"
                f, own = fr, None
                chain = []
                while f is not None and len(chain) < 4:
                    if "asyncdecode" in f.f_code.co_filename:
                        chain.append(f"{f.f_code.co_name}:{f.f_lineno}")
                    f = f.f_back
                self.counts[(kind, leaf)] += 1
                self.pkg[(kind, " < ".join(chain[:3]))] += 1
            self.n += 1
    def report(self, top=22):
        for kind in ("dec", "main"):
            tot = sum(v for (k, _), v in self.counts.items() if k == kind)
            print(f"  [{kind}] samples {tot} over {self.n} ticks")
            for (k, leaf), v in self.counts.most_common():
                if k == kind and v >= 0.01 * tot:
                    print(f"    {100*v/tot:5.1f}% {leaf}")
            print(f"  [{kind}] by asyncdecode frames")
            shown = 0
            for (k, ch), v in self.pkg.most_common():
                if k == kind and shown < top:
                    print(f"    {100*v/tot:5.1f}% {ch}"); shown += 1

async def main():
    data = Path(sys.argv[1])
    sets = ("uniform", "mixed_sizes")
    paths, _ = mb.ensure_files(data, {s: 24 for s in sets})
    counts = {s: [spec.frames for spec in mb.set_specs(s)[:24]] for s in sets}
    for name in sets:
        async with Engine(device=DEV) as eng:
            # warm the set: every file once
            await eng.decode(paths[name], [0] * 24)
            for pattern, per, nfiles in CELLS:
                files, cnt = paths[name][:nfiles], counts[name][:nfiles]
                reqs = mb.random_requests(files, cnt, per, random.Random(1)) if pattern == "random" else mb.front_requests(files, cnt, per)
                s = Sampler(); th = threading.Thread(target=s.run, daemon=True)
                depth = mb.depth_for(per * nfiles, DEV)
                before = eng.stats()
                th.start()
                cell = await mb.engine_cell(eng, reqs, depth=depth, warm=0.5, seconds=SECONDS, device=DEV)
                s.stop.set(); th.join()
                after = eng.stats()
                await mb._idle(eng)
                print(f"== {name} {pattern} {per}f x {nfiles}: frames/s {cell['frames_per_s']:.0f} decoded/s {cell['decoded_per_s']:.0f} "
                      f"dec/ret {cell['decoded_per_returned']:.2f} cpu ms/f {cell['cpu_ms_per_frame']:.3f} created {cell['decoders_created']} "
                      f"continued {cell['jobs_continued']} merged {cell['jobs_merged']}", flush=True)
                print("   stats delta:", {k: round(after[k] - before[k], 3) for k in after if isinstance(after[k], (int, float)) and not isinstance(after[k], bool) and after[k] != before.get(k) and k in before})
                s.report()
asyncio.run(main())
