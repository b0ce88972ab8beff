"""Experiment: benchmarks/soak.py with glibc's malloc_info XML (every arena's free chunks by size) and
mallinfo2's mmapped-chunk figures written every DUMP_S seconds."""
import ctypes, ctypes.util, os, runpy, sys, threading, time

every = float(os.environ.get("DUMP_S", "60"))
outdir = os.environ.get("DUMP_DIR", "/tmp/exp/dumps")
os.makedirs(outdir, exist_ok=True)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)

class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MI2
t0 = time.monotonic()

def dumper():
    k = 0
    while True:
        time.sleep(every)
        t = time.monotonic() - t0
        f = libc.fopen(f"{outdir}/mi_{k:03d}.xml".encode(), b"w")
        libc.malloc_info(0, f)
        libc.fclose(f)
        m = libc.mallinfo2()
        with open(f"{outdir}/mallinfo2.tsv", "a") as fh:
            fh.write("\t".join(str(x) for x in (k, round(t, 1), m.arena, m.ordblks, m.hblks, m.hblkhd, m.uordblks, m.fordblks, m.keepcost)) + "\n")
        k += 1

threading.Thread(target=dumper, daemon=True, name="experiment-dump").start()
sys.argv = ["soak.py"] + sys.argv[1:]
sys.path.insert(0, "/work/main/benchmarks")
runpy.run_path("/work/main/benchmarks/soak.py", run_name="__main__")
