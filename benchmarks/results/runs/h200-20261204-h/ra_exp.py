"""6 clips 1600x900 read front to back through stream(): read-ahead depth (DEEP) and decoder threads varied."""
import asyncio, json, os, sys, time
sys.path.insert(0, "benchmarks")
import readahead_bench as rb
from asyncdecode import _readahead
from asyncdecode._backends import nvdec

async def main(out):
    paths = rb.ensure_files(__import__("pathlib").Path("/tmp/rab"), 1600, 900, 235)
    res = []
    for per in (1, 16):
        for threads in (10, 14):
            for deep in ((4, 8) if per == 1 else (4,)):
                _readahead.DEEP = deep
                nvdec.DEFAULT_SESSIONS = threads
                r = await rb.cell("cuda", paths, per, True, passes=8)
                r.update(deep=deep, threads_set=threads)
                res.append(r)
                print(f"{per:2d}f threads {threads} DEEP {deep}: {r['frames_per_s']:7.0f} frames/s, "
                      f"cpu {r['cpu_ms_per_frame']:.3f} ms/frame, decoded/returned {r['decoded_per_returned']:.2f}, "
                      f"gops ahead {r.get('read_ahead_gops')}", flush=True)
    json.dump(res, open(out, "w"), indent=1)

asyncio.run(main(sys.argv[1]))
