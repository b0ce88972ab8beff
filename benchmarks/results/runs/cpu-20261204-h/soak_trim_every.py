"""Experiment: benchmarks/soak.py with glibc's malloc_trim(0) called every TRIM_EVERY_S seconds from a
background thread (not what the engine does): does trimming at all keep the CPU backend's RSS flat?"""
import ctypes, ctypes.util, os, runpy, sys, threading, time

every = float(os.environ.get("TRIM_EVERY_S", "30"))
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc_trim.argtypes = (ctypes.c_size_t,)

def trimmer():
    while True:
        time.sleep(every)
        libc.malloc_trim(0)

threading.Thread(target=trimmer, daemon=True, name="experiment-trim").start()
sys.argv = ["soak.py"] + sys.argv[1:]
sys.path.insert(0, "/work/main/benchmarks")
runpy.run_path("/work/main/benchmarks/soak.py", run_name="__main__")
