"""What one libnvcuvid decoder costs in host and GPU memory, and what making and closing them leaves.

    python benchmarks/nvdec_memory_probe.py [--count 12] [--cycles 300] [--out DIR]

Needs a GPU with NVDEC (no video files: decoders are made for a size up front, ``CuvidDecoder.prepare``).
For HEVC and H.264 at 640x360 and 1920x1080 (and HEVC 10-bit 1080p): ``--count`` parsers alone, then
``--count`` parsers with their hardware decoders, made side by side: per decoder the glibc heap in use
(``mallinfo2``), the process's RSS, and the GPU memory used (``cudaMemGetInfo``: the whole GPU's),
against ``CuvidDecoder.nbytes`` (what the engine counts for its free-decoder bound); and what stays
after they are closed. Then churn, what an engine does in steady state: ``--cycles`` times a decoder
made and closed (640x360 HEVC), and ``--cycles`` times a parser replaced on one decoder (a display
delay change, ``set_display_delay``): RSS, heap and mappings before, after half and after all the
cycles; a process that keeps growing there leaks per cycle, outside Python. Then the engine's own
pattern, ``--cycles`` decoders over ``--threads`` threads (default 10) of sizes taken in turn from
six, each made on one thread and closed on another (free decoders are shared by a device's threads),
with up to ``--threads`` of them alive at once; after half, after all, and after ``malloc_trim(0)``:
what the trim gives back is a high-water mark of glibc's arenas, what stays after it a leak.

Measured on an H200 (driver 580.159, 2026-12-04; benchmarks/results/runs/h200-20261204-e/
decoder_memory_probe.log, the first part): HEVC parser 21.5 MiB of heap (mostly untouched: 1-2 MiB
resident), H.264 parser 2.9 MiB; a hardware decoder adds about 4.6 MiB of heap, 5-20 MiB resident,
and 1.2-2x ``nbytes`` of GPU memory. Writes ``nvdec_memory_probe.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import json
import queue
import random
import threading
from pathlib import Path
from typing import Any

import torch

MiB = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _memory() -> dict[str, float]:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * 4096
    free, total = torch.cuda.mem_get_info()
    maps = sum(1 for _ in open("/proc/self/maps"))
    return {"heap": (m.uordblks + m.hblkhd) / MiB, "rss": rss / MiB, "gpu": (total - free) / MiB, "maps": maps}


def _delta(a: dict[str, float], b: dict[str, float], n: int = 1) -> dict[str, float]:
    return {k: round((b[k] - a[k]) / n, 2) for k in a}


def sizes(count: int, stream: int) -> list[dict[str, Any]]:
    from asyncdecode._backends import _cuvid

    rows = []
    for codec, bits, w, h in [("hevc", 8, 640, 360), ("hevc", 8, 1920, 1080), ("h264", 8, 640, 360),
                              ("h264", 8, 1920, 1080), ("hevc", 10, 1920, 1080)]:
        for what in ("parser", "decoder"):
            gc.collect()
            before = _memory()
            made = []
            for _ in range(count):
                d = _cuvid.CuvidDecoder(codec, display_delay=0, stream=stream)
                if what == "decoder":
                    d.prepare(bits, w, h)
                made.append(d)
            each = _delta(before, _memory(), count)
            nbytes = made[0].nbytes / MiB
            for d in made:
                d.close()
            del made
            gc.collect()
            left = _delta(before, _memory())
            rows.append({"codec": codec, "bits": bits, "size": f"{w}x{h}", "what": what, "per_decoder": each,
                         "nbytes_mib": round(nbytes, 2), "left_after_close": left})
            print(f"{codec} {bits}-bit {w}x{h} {what}: each {each}, nbytes {nbytes:.1f} MiB; after close {left}",
                  flush=True)
    return rows


def churn(cycles: int, stream: int) -> dict[str, Any]:
    from asyncdecode._backends import _cuvid

    out: dict[str, Any] = {}
    gc.collect()
    start = _memory()
    marks = []
    for i in range(cycles):
        d = _cuvid.CuvidDecoder("hevc", display_delay=0, stream=stream)
        d.prepare(8, 640, 360)
        d.close()
        if i + 1 in (cycles // 2, cycles):
            gc.collect()
            marks.append(_delta(start, _memory()))
    out["decoder_made_and_closed"] = {"cycles": cycles, "half": marks[0], "all": marks[1]}
    print(f"{cycles} decoders made and closed: after half {marks[0]}, after all {marks[1]}", flush=True)
    d = _cuvid.CuvidDecoder("hevc", display_delay=0, stream=stream)
    d.prepare(8, 640, 360)
    gc.collect()
    start = _memory()
    marks = []
    for i in range(cycles):
        d.set_display_delay(1 + i % 2)  # a new parser each time
        if i + 1 in (cycles // 2, cycles):
            gc.collect()
            marks.append(_delta(start, _memory()))
    d.close()
    out["parser_replaced"] = {"cycles": cycles, "half": marks[0], "all": marks[1]}
    print(f"{cycles} parsers replaced on one decoder: after half {marks[0]}, after all {marks[1]}", flush=True)
    return out


def churn_threads(cycles: int, threads: int) -> dict[str, Any]:
    """``cycles`` decoders made on one of ``threads`` threads and closed on another, sizes in turn."""
    from asyncdecode._backends import _cuvid

    shapes = [("hevc", 8, 640, 360), ("hevc", 8, 480, 272), ("h264", 8, 832, 448), ("hevc", 8, 1280, 720),
              ("h264", 8, 640, 360), ("hevc", 8, 1920, 1080)]
    alive: queue.Queue[Any] = queue.Queue(maxsize=threads)
    lock = threading.Lock()
    made = [0]
    marks: dict[int, dict[str, float]] = {}
    errors: list[BaseException] = []
    gc.collect()
    start = _memory()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        torch.cuda.set_device(0)  # makes the device's context current on this thread, as decoder threads do
        stream = torch.cuda.Stream()
        try:
            while True:
                with lock:
                    i = made[0]
                    if i >= cycles:
                        return
                    made[0] += 1
                codec, bits, w, h = shapes[i % len(shapes)]
                d = _cuvid.CuvidDecoder(codec, display_delay=0, stream=stream.cuda_stream)
                d.prepare(bits, w, h)
                try:
                    old = alive.get_nowait() if alive.full() or rng.random() < 0.5 else None
                except queue.Empty:
                    old = None
                if old is not None:
                    old.close()  # made by another thread, most likely
                alive.put(d)
                if i + 1 == cycles // 2:
                    marks[1] = _memory()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,), name=f"probe-{k}") for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    while not alive.empty():
        alive.get_nowait().close()
    gc.collect()
    end = _memory()
    libc = ctypes.CDLL(None)
    libc.malloc_trim(0)
    trimmed = _memory()
    res = {"cycles": cycles, "threads": threads, "half": _delta(start, marks.get(1, end)), "all": _delta(start, end),
           "after_trim": _delta(start, trimmed), "errors": [repr(e) for e in errors[:3]]}
    print(f"{cycles} decoders made and closed across {threads} threads: after half (some alive) {res['half']}, "
          f"after all (closed) {res['all']}, after malloc_trim {res['after_trim']}"
          + (f"; errors: {res['errors']}" if errors else ""), flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=12, help="decoders made side by side per row")
    ap.add_argument("--cycles", type=int, default=300, help="make/close and parser-replace cycles")
    ap.add_argument("--threads", type=int, default=10, help="threads of the cross-thread churn")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("nvdec_memory_probe needs a CUDA GPU with NVDEC")
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    stream = torch.cuda.current_stream().cuda_stream
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "sizes": sizes(args.count, stream), "churn": churn(args.cycles, stream)}
    res["churn_threads"] = churn_threads(args.cycles, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nvdec_memory_probe.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
