"""Where the host CPU of NVDEC random access goes, below the engine (GPU machine).

    python benchmarks/nvdec_cpu_probe.py

K Python threads each drive one libnvcuvid decoder (asyncdecode's own binding) on three 1600x900 HEVC
files (GOP 30, about 150 kbit/frame, made under /tmp/asyncdecode-cpu-probe): keyframe..random target,
then the target mapped and unmapped, no conversion, no engine. Prints decoded pictures/s and process
CPU per decoded picture, split into the parser/decode calls ("feed") and the map; with a status poll
(sleeping POLL us between polls) before each picture is handed to the decoder, to see whether the
CPU is time spent waiting in the driver. Also the sequential pattern (whole GOPs, nothing mapped).
"""

import ctypes
import random
import threading
import time
from pathlib import Path

import numpy as np
import torch

from asyncdecode._backends import _cuvid
from asyncdecode.bench import _encode
from asyncdecode.gop import extract_gops
from asyncdecode.media import probe

_CURR_PIC_IDX = 8  # byte offset of CurrPicIdx in CUVIDPICPARAMS


class PollingDecoder(_cuvid.CuvidDecoder):
    """Waits, polling with sleeps, for the previous picture's decode before submitting the next."""

    poll_s = 0.0
    prev = -1

    def _on_decode(self, user, pic):
        if self.prev >= 0 and self.poll_s:
            status = _cuvid.DecodeStatus()
            get = _cuvid.library().cuvidGetDecodeStatus
            while not get(self.handle, self.prev, ctypes.byref(status)) and status.status == _cuvid.IN_PROGRESS:
                time.sleep(self.poll_s)
        self.prev = ctypes.c_int.from_address(pic + _CURR_PIC_IDX).value
        return super()._on_decode(user, pic)


def run(datas, k: int, poll_us: int, seconds: float = 3.0, mode: str = "random") -> None:
    stop = [0.0]
    barrier = threading.Barrier(k + 1)
    res = [None] * k

    def worker(i: int) -> None:
        torch.cuda.set_device(0)
        stream = torch.cuda.Stream()
        dec = PollingDecoder("hevc", display_delay=0, stream=stream.cuda_stream)
        dec.poll_s = poll_us / 1e6
        rng = random.Random(i)
        cpu_feed = cpu_map = 0.0
        decoded = samples = 0
        barrier.wait()
        while time.perf_counter() < stop[0]:
            gop = datas[rng.randrange(len(datas))]
            target = rng.randrange(len(gop)) if mode == "random" else len(gop) - 1
            t = time.thread_time()
            last = None
            for a in gop[: target + 1]:
                out = dec.feed(a.ctypes.data, a.size, 0)
                if out:
                    last = out[-1]
                decoded += 1
            t2 = time.thread_time()
            cpu_feed += t2 - t
            if mode == "random":
                dec.map(last)
                dec.unmap_all()
            cpu_map += time.thread_time() - t2
            samples += 1
        res[i] = (cpu_feed, cpu_map, decoded, samples)
        dec.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    c0, w0 = time.process_time(), time.perf_counter()
    stop[0] = w0 + seconds
    barrier.wait()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    feed, mapped, dec, smp = (sum(r[j] for r in res) for j in range(4))
    print(f"{mode} k={k:2d} poll={poll_us:4d}us: {dec / wall:6.0f} decoded/s, process CPU {1e3 * cpu / dec:.3f} ms/decoded "
          f"(feed {1e3 * feed / dec:.3f}, map {1e3 * mapped / dec:.3f}); per sample {1e3 * cpu / smp:.2f} ms", flush=True)


def main() -> None:
    root = Path("/tmp/asyncdecode-cpu-probe")
    root.mkdir(exist_ok=True)
    files = []
    for seed in range(3):
        path = root / f"f{seed}.mp4"
        if not path.exists():
            _encode(path, seed, 150)
        files.append(str(path))
    bundles = [b for p in files for b in extract_gops(p, list(probe(p).keyframes))]
    datas = [[np.frombuffer(bytes(b.packet(i)), np.uint8) for i in range(len(b))] for b in bundles]
    torch.zeros(1, device="cuda")
    for k in (1, 10):
        for poll in (0, 100, 300):
            run(datas, k, poll)
    run(datas, 10, 0, mode="sequential")
    run(datas, 10, 200, mode="sequential")


if __name__ == "__main__":
    main()
