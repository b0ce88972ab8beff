"""Workload-matrix benchmark: the engine and the best plain PyNvVideoCodec use, side by side, cell by cell.

    python benchmarks/matrix_bench.py [--device cuda|cpu] [--data DIR] [--out DIR] [--seconds S] [--quick]
                                      [--sets uniform,mixed_sizes,mixed_codecs,web,cache] [--threads N] [--budget S]
                                      [--cache-rounds N]
    python benchmarks/matrix_bench.py --device cpu --quick      # a few minutes on a 2-core machine, no contender

**Sets**, made once under ``--data`` (default benchmarks/data/matrix, one folder per set; a file that is
there is not made again), encoded in a process pool with libx264 / libx265 at preset ``ultrafast``,
about 0.06 bit per pixel, 10 fps, closed GOPs; content: an 8x8-block colour texture panning 4 pixels a
frame, and a bright box moving across it:

- ``uniform``: 24 files, HEVC 640x360, GOP 30, no B-frames, 144 frames (9 requests of 16).
- ``mixed_sizes``: 24 files, HEVC, 24 even sizes from 480x272 to 832x448, GOP 30, no B-frames, 144 frames.
- ``mixed_codecs``: 24 files 640x360, GOP 30, 144 frames: H.264 and HEVC, 0 or 3 B-frames, a quarter each.
- ``web``: 48 files, 48 even sizes from 320x240 to 1920x1080, H.264 with 3 B-frames and HEVC without
  B-frames alternately, GOPs spread from 12 to 250 (geometrically, shuffled against the sizes), 300
  frames at the smallest size down to 180 at 1920x1080 (fewer frames for big sizes keep the encode short).

Files are ordered so that the first 6 of a set already span its sizes and codecs.

**Cells** (uniform, mixed_sizes, mixed_codecs): pattern x frames per file per request x files:

- ``random``: each request asks for a random frame (``1f``), or 16 random distinct frames (``16f``), of
  each of the cell's files;
- ``front``: the files read from start to end: frame t of each file per request, t increasing (``1f``),
  or 16 consecutive frames of each file per request (``16f``); a file that ends starts over;
- files: the set's first 6, or all 24 (``--quick``: 6 only).

The engine: one ``Engine(device=...)`` per set with the default config (``--threads`` sets
``decoder_threads``), reused by all cells of the set; requests go through ``eng.stream(requests,
depth=32)`` (less for big requests: at most 2048 frames in flight on cuda, 256 on cpu). In each cell the
stream warms up (0.3 s and at least ``depth`` requests), then ``--seconds`` (and at least 4 requests) are
timed in the same stream, from one request's completion to another's, the device synchronized at the
end. Reported: requests/s, returned frames/s, decoded frames/s (``stats()["frames_decoded"]``), decoded
per returned frame, host CPU ms per returned frame (process CPU time, all threads), the deltas of the
stats ``decoders_created`` / ``decoders_reconfigured`` (null where the engine does not report them), and
the CPU cores the machine's other processes used meanwhile (/proc/stat: a busy machine shows).
Before each engine cell the run waits until those use under 0.25 cores (at most 3 s; if they still
do, it kills the contender's child process, where a library thread may have been left running, and
waits again), and reports the wait with the cell (``before``).

The contender (``--device cuda`` with PyNvVideoCodec importable; else skipped, with a note), measured
right after the engine in the same cell on the same files, same warm-up and time: the best plain
PyNvVideoCodec use for the pattern (in a child process of its own, so that the library's threads and
any crash of it stay apart from the engine), one decoder and one Python thread per file, RGB output on the
device (``torch.from_dlpack`` of every frame): ``random`` -> ``SimpleDecoder`` (``dec[i]``, or
``get_batch_frames_by_index`` for 16 frames); ``front`` -> ``ThreadedDecoder`` (``get_batch_frames(n)``,
a new decoder when the file ends). Its requests/s = frames/s / (files x frames per file), as the
engine's requests are counted; ratio = engine requests/s / contender requests/s.

**web**: random 1f and front 16f over all 48 files (``--quick``: the first 6), engine and contender.

**Frame cache** (engine only): epoch-random over the uniform set's first 24 files on a GPU, 6 on the
CPU (every frame once, in a shuffled order, 6 frames per request, depth 16; ``--quick``: the first 60
frames of each) with ``EngineConfig(frame_cache_bytes=...)`` at 0, 25%, 50% and 100% of the set's
decoded RGB bytes and 0 again (the two no-cache runs show the run's noise), a fresh engine each,
warmed by one frame of each file, three epochs each (the same orders for every size); frames/s per
epoch and x no cache. ``--cache-rounds N`` runs that sequence N times; each round is judged against
its own two no-cache runs and the targets take the median of the rounds (on a GPU the two no-cache
runs of one round differed by up to 42%: one round cannot resolve a 10% effect).

**Targets**: mixed_sizes decoded/s >= 0.8x uniform (same cell); mixed_sizes requests/s >= 2x
SimpleDecoder (random cells); mixed_codecs decoded/s >= 0.8x uniform; frame cache at 25%, 50% and 100%
>= no cache (frames/s over all epochs, against the mean of the two no-cache runs); decoders created in
the timed windows of a set <= 1 per decoder session.

Timing: with the defaults the whole run, encoding included, is meant to take about 4 minutes on an
H200 machine with 16 cores; ``--budget`` (default 240 s, none with ``--quick``) skips the cells that
would not fit any more (listed in the output). Progress lines are printed as cells finish, and
matrix_bench.json / matrix_bench.md in ``--out`` (default benchmarks/results) are rewritten after every
cell, so a killed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from _machine import busy_cpu_s, wait_quiet  # this folder (scripts run from it)

T_START = time.perf_counter()
HERE = Path(__file__).resolve().parent

Request = tuple[list[str], list[int]]

FPS = 10
BITS_PER_PIXEL = 0.06
GENERATOR = "g1"  # part of each set's folder name: a changed generator makes new files
MATRIX_SETS = ("uniform", "mixed_sizes", "mixed_codecs")
ALL_SECTIONS = MATRIX_SETS + ("cache", "web")
PATTERNS = ("random", "front")
SHAPES = (1, 16)  # frames per file per request
FILE_COUNTS = (6, 24)
QUICK_FILES = 6
DEPTH = 32
MAX_FRAMES_IN_FLIGHT = {"cuda": 2048, "cpu": 256}  # 2048: 0.2 s of NVDEC work at 640x360; 2 CPU threads need far fewer
WARM_S = 0.3
QUIET_CORES = 0.25  # before an engine cell: the machine's other processes under this many cores...
QUIET_WAIT_S = 3.0  # ...waited for at most this long (then the contender child is killed, and again)
QUIET_WINDOW_S = 0.3
MIN_TIMED_REQUESTS = 4
SET_WARM_S = 0.5
STEADY_QUIET_S = 1.0  # --steady: the set's warm-up ends once no decoder was made for this long
STEADY_PER_FILE = 16  # --steady: the warm-up's requests, random frames of every file (the most jobs at once)
# 24 files on a GPU: with 6 (864 frames) an epoch lasts ~0.2 s there, and one hiccup moved a cell
CACHE_FILES = {"cuda": 24, "cpu": 6}
CACHE_SHARES = (0.0, 0.25, 0.5, 1.0, 0.0)  # no cache first and last: the two give the run's noise
CACHE_EPOCHS = 3
CACHE_DEPTH = 16
CACHE_PER_REQUEST = 6
QUICK_CACHE_FRAMES = 60
RATIO_TO_UNIFORM = 0.8
RANDOM_VS_SIMPLE = 2.0
DECODERS_PER_SESSION_BOUND = 1.0


# -- data sets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One synthetic video of a set."""

    codec: str  # "h264" or "hevc"
    width: int
    height: int
    frames: int
    gop: int
    bframes: int
    seed: int

    def filename(self, index: int) -> str:
        return (f"{index:02d}_{self.codec}_{self.width}x{self.height}_b{self.bframes}_gop{self.gop}_"
                f"{self.frames}f.mp4")

    @property
    def cost(self) -> float:
        """Rough encode cost, to start the big files first."""
        return self.width * self.height * self.frames * (6.0 if self.codec == "hevc" else 1.0)


def _even(x: float) -> int:
    return int(round(x / 2)) * 2


def _spread(n: int, stride: int) -> list[int]:
    """``0..n-1`` in the order 0, s, 2s, ..., 1, 1+s, ...: every prefix spans the range."""
    return sorted(range(n), key=lambda i: (i % stride, i))


def set_specs(name: str) -> list[FileSpec]:
    """The files of a set, in the order the cells take them (the first 6 span the set)."""
    if name == "uniform":
        return [FileSpec("hevc", 640, 360, 144, 30, 0, 100 + i) for i in range(24)]
    if name == "mixed_sizes":
        sizes = [(_even(480 + 352 * j / 23), _even(272 + 176 * j / 23)) for j in range(24)]
        return [FileSpec("hevc", *sizes[j], 144, 30, 0, 200 + i) for i, j in enumerate(_spread(24, 4))]
    if name == "mixed_codecs":
        kinds = (("h264", 0), ("hevc", 0), ("h264", 3), ("hevc", 3))
        return [FileSpec(kinds[i % 4][0], 640, 360, 144, 30, kinds[i % 4][1], 300 + i) for i in range(24)]
    if name == "web":
        n = 48
        sizes = [(_even(320 + 1600 * j / (n - 1)), _even(240 + 840 * j / (n - 1))) for j in range(n)]
        gops = [round(12 * (250 / 12) ** (j / (n - 1))) for j in range(n)]
        random.Random(n).shuffle(gops)  # GOP lengths independent of the sizes
        a0, a1 = sizes[0][0] * sizes[0][1], sizes[-1][0] * sizes[-1][1]
        specs = []
        for i, j in enumerate(_spread(n, 8)):
            w, h = sizes[j]
            frames = round(300 - 120 * (w * h - a0) / (a1 - a0))
            codec, bframes = ("h264", 3) if i % 2 == 0 else ("hevc", 0)
            specs.append(FileSpec(codec, w, h, frames, gops[i], bframes, 400 + i))
        return specs
    raise ValueError(f"unknown set {name!r}")


SET_DESCRIPTIONS = {
    "uniform": "24 files HEVC 640x360, GOP 30, no B-frames, 144 frames",
    "mixed_sizes": "24 files HEVC, 24 sizes 480x272..832x448, GOP 30, no B-frames, 144 frames",
    "mixed_codecs": "24 files 640x360, GOP 30, 144 frames: H.264 / HEVC x 0 / 3 B-frames, a quarter each",
    "web": "48 files, 48 sizes 320x240..1920x1080, H.264 3 B-frames / HEVC no B-frames alternately, GOP 12..250, "
           "300 frames at the smallest size down to 180 at 1080p (fewer frames for big sizes: shorter encode)",
}


def _encode(path: str, spec: FileSpec) -> None:
    """Encode ``spec`` to ``path`` (written to a temporary name, then renamed)."""
    import av

    w, h, n = spec.width, spec.height, spec.frames
    rng = np.random.default_rng(spec.seed)
    pan = 4 * n + 16  # the texture pans 4 pixels a frame
    blocks = rng.integers(40, 200, size=(h // 8 + 2, (w + pan) // 8 + 2), dtype=np.uint8)
    ramp = (np.arange(w + pan) * 50 // (w + pan)).astype(np.uint8)
    luma = np.ascontiguousarray(np.kron(blocks, np.ones((8, 8), np.uint8))[:h, : w + pan] // 2 + ramp + 20)
    chroma = rng.integers(80, 176, size=(h // 16 + 2, (w + pan) // 16 + 2), dtype=np.uint8)
    cb = np.kron(chroma, np.ones((8, 8), np.uint8))[: h // 2, : (w + pan) // 2]
    cr = np.ascontiguousarray(cb[::-1, ::-1])
    kbit_s = max(8, round(BITS_PER_PIXEL * w * h * FPS / 1000))
    gop = (f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes={spec.bframes}:b-adapt=0:"
           f"bitrate={kbit_s}:vbv-maxrate={kbit_s}:vbv-bufsize={2 * kbit_s}")
    if spec.codec == "h264":
        encoder, options = "libx264", {"preset": "ultrafast",
                                       "x264-params": gop + ":threads=1:sliced-threads=0:lookahead-threads=1"}
    else:
        encoder, options = "libx265", {"preset": "ultrafast", "x265-params": gop + (
            ":open-gop=0:pools=none:frame-threads=1:log-level=error:info=0")}
    yuv = np.empty((h * 3 // 2, w), np.uint8)  # yuv420p as PyAV takes it: Y, then U and V planes
    plane = (h // 2) * (w // 2)
    box = max(8, min(w, h) // 6)
    tmp = Path(path).with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        st = out.add_stream(encoder, rate=FPS)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.time_base = Fraction(1, FPS)
        st.codec_context.thread_count = 1
        st.options = options
        for i in range(n):
            s = 4 * i
            yuv[:h] = luma[:, s : s + w]
            x0, y0 = (7 * i) % max(1, w - box), (h - box) // 2 + int(box / 2 * math.sin(0.2 * i))
            yuv[max(0, y0) : y0 + box, x0 : x0 + box] = 235
            flat = yuv[h:].reshape(-1)
            flat[:plane] = cb[:, s // 2 : s // 2 + w // 2].reshape(-1)
            flat[plane:] = cr[:, s // 2 : s // 2 + w // 2].reshape(-1)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            out.mux(st.encode(frame))
        out.mux(st.encode(None))
    tmp.rename(path)


def ensure_files(root: Path, wanted: dict[str, int]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Paths of the first ``wanted[name]`` files of each set; missing ones are encoded in parallel processes."""
    paths: dict[str, list[str]] = {}
    todo: list[tuple[str, FileSpec]] = []
    for name, count in wanted.items():
        folder = root / f"{name}_{GENERATOR}"
        paths[name] = []
        for i, spec in enumerate(set_specs(name)[:count]):
            p = folder / spec.filename(i)
            paths[name].append(str(p))
            if not p.exists():
                folder.mkdir(parents=True, exist_ok=True)
                todo.append((str(p), spec))
    info: dict[str, Any] = {"encoded_files": len(todo), "encode_s": 0.0}
    if todo:
        todo.sort(key=lambda t: -t[1].cost)  # the biggest first: the pool ends evenly
        workers = min(len(todo), os.cpu_count() or 1)
        frames = sum(s.frames for _, s in todo)
        print(f"encoding {len(todo)} files ({frames} frames) in {workers} processes ...", flush=True)
        t0 = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(workers) as ex:
            list(ex.map(_encode, [p for p, _ in todo], [s for _, s in todo]))
        info["encode_s"] = time.perf_counter() - t0
        print(f"encoded in {info['encode_s']:.1f} s", flush=True)
    return paths, info


# -- request patterns ---------------------------------------------------------------------------------


def random_requests(files: list[str], counts: list[int], per_file: int, rng: random.Random) -> Iterator[Request]:
    """Each request: a random frame (or ``per_file`` random distinct frames, ascending) of every file."""
    while True:
        paths: list[str] = []
        ids: list[int] = []
        for p, n in zip(files, counts):
            picks = [rng.randrange(n)] if per_file == 1 else sorted(rng.sample(range(n), min(per_file, n)))
            paths += [p] * len(picks)
            ids += picks
        yield paths, ids


def front_requests(files: list[str], counts: list[int], per_file: int) -> Iterator[Request]:
    """The files from start to end, ``per_file`` consecutive frames of every file per request; a file
    that ends starts over (the last frames of a file can make a shorter run)."""
    pos = [0] * len(files)
    while True:
        paths: list[str] = []
        ids: list[int] = []
        for i, (p, n) in enumerate(zip(files, counts)):
            stop = min(pos[i] + per_file, n)
            paths += [p] * (stop - pos[i])
            ids += range(pos[i], stop)
            pos[i] = 0 if stop >= n else stop
        yield paths, ids


def depth_for(frames_per_request: int, device: str) -> int:
    """``DEPTH`` requests in flight, fewer where that would hold more than ``MAX_FRAMES_IN_FLIGHT`` frames."""
    return max(2, min(DEPTH, math.ceil(MAX_FRAMES_IN_FLIGHT[device] / frames_per_request)))


# -- the engine ---------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _others(busy_s: float, own_cpu_s: float, wall_s: float) -> float | None:
    """Cores the machine's other processes used meanwhile (None without /proc/stat)."""
    v = (busy_s - own_cpu_s) / wall_s
    return None if math.isnan(v) else max(0.0, v)


def _delta(before: dict[str, Any], after: dict[str, Any], key: str) -> Any:
    """``after[key] - before[key]``, or None where the engine does not report ``key``."""
    a, b = after.get(key, None), before.get(key, None)
    return None if a is None or b is None else a - b


async def engine_cell(eng: Any, requests: Iterable[Request], *, depth: int, warm: float, seconds: float,
                      device: str) -> dict[str, Any]:
    """Run ``eng.stream(requests, depth)``: a warm-up (``warm`` seconds and at least ``depth`` requests, so
    the pipeline has turned over once), then ``seconds`` (and at least ``MIN_TIMED_REQUESTS`` requests)
    timed in the same stream, from one request's completion to another's, the device synchronized
    before the clock stops."""
    frames = done = 0
    t_open = time.perf_counter()
    t0 = c0 = b0 = 0.0
    before: dict[str, Any] | None = None
    async with contextlib.aclosing(eng.stream(requests, depth=depth)) as stream:
        async for got in stream:
            now = time.perf_counter()
            if before is None:
                done += 1
                if now - t_open >= warm and done >= depth:
                    done = 0
                    before, b0, c0, t0 = eng.stats(), busy_cpu_s(), time.process_time(), time.perf_counter()
                continue
            done += 1
            frames += len(got)
            if now - t0 >= seconds and done >= MIN_TIMED_REQUESTS:
                break
        _sync(device)
        wall, cpu, busy, after = time.perf_counter() - t0, time.process_time() - c0, busy_cpu_s() - b0, eng.stats()
    assert before is not None
    decoded = after["frames_decoded"] - before["frames_decoded"]
    return {
        "depth": depth, "requests": done, "frames": frames, "seconds": wall,
        "requests_per_s": done / wall, "frames_per_s": frames / wall, "decoded_per_s": decoded / wall,
        "decoded_per_returned": decoded / max(1, frames), "cpu_ms_per_frame": 1e3 * cpu / max(1, frames),
        "decoders_created": _delta(before, after, "decoders_created"),
        "decoders_reconfigured": _delta(before, after, "decoders_reconfigured"),
        "jobs_continued": _delta(before, after, "jobs_continued"),
        "jobs_merged": _delta(before, after, "jobs_merged"), "decoder_threads": after.get("decoder_threads"),
        "other_processes_cores": _others(busy, cpu, wall),
    }


async def _idle(eng: Any, timeout: float = 10.0) -> None:
    """Wait until the jobs cancelled by closing a stream are out of the decoder threads."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        s = eng.stats()
        if not s.get("jobs_in_flight", 0) and not s.get("queue_depth", 0) and not s.get("requests_in_flight", 0):
            return
        await asyncio.sleep(0.01)


# -- the contender ------------------------------------------------------------------------------------


def contender_cell(files: list[str], counts: list[int], pattern: str, per_file: int, *, warm: float,
                   seconds: float, seed: int) -> dict[str, Any]:
    """PyNvVideoCodec, one decoder and one thread per file: SimpleDecoder for ``random``, ThreadedDecoder
    for ``front``; frames finished inside the timed window count."""
    import PyNvVideoCodec as nvc

    k = len(files)
    rgb = nvc.OutputColorType.RGB
    got_frames = [0] * k
    errors: list[str] = []
    window = [math.inf, math.inf]  # start, stop: set by the main thread once every worker is ready
    barrier = threading.Barrier(k + 1)

    def make(i: int) -> Any:
        if pattern == "front":
            return nvc.ThreadedDecoder(files[i], buffer_size=max(12, 2 * per_file), cuda_context=0, cuda_stream=0,
                                       use_device_memory=True, output_color_type=rgb)
        return nvc.SimpleDecoder(files[i], gpu_id=0, use_device_memory=True, output_color_type=rgb)

    def worker(i: int) -> None:
        rng = random.Random(1000 * seed + i)
        dec, n = None, counts[i]
        try:
            dec = make(i)
        except Exception as e:  # noqa: BLE001 - reported, the cell goes on without this file
            errors.append(f"{type(e).__name__}: {e}")
        if dec is not None and pattern == "random":
            with contextlib.suppress(Exception):
                n = min(n, len(dec))
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=120)
        if dec is None:
            return
        failures = 0
        while time.perf_counter() < window[1]:
            try:
                if pattern == "front":
                    got = dec.get_batch_frames(per_file)
                    if not got:  # the file's end: start it again
                        dec = None
                        dec = make(i)
                        continue
                elif per_file == 1:
                    got = [dec[rng.randrange(n)]]
                else:
                    got = dec.get_batch_frames_by_index(sorted(rng.sample(range(n), min(per_file, n))))
                for frame in got:
                    torch.from_dlpack(frame)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")
                failures += 1
                if failures >= 3 or dec is None:
                    return
                continue
            if window[0] <= time.perf_counter() < window[1]:
                got_frames[i] += len(got)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        window[1] = -math.inf  # the workers stop at once
        raise
    start = time.perf_counter() + warm
    window[0] = start
    window[1] = start + seconds
    time.sleep(max(0.0, start - time.perf_counter()))
    c0, b0 = time.process_time(), busy_cpu_s()
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    torch.cuda.synchronize()
    wall, cpu, busy = time.perf_counter() - start, time.process_time() - c0, busy_cpu_s() - b0
    for t in threads:
        t.join(timeout=60)
    gc.collect()
    torch.cuda.synchronize()
    frames = sum(got_frames)
    per_request = k * per_file
    res: dict[str, Any] = {
        "decoder": "ThreadedDecoder" if pattern == "front" else "SimpleDecoder",
        "frames": frames, "seconds": wall, "frames_per_s": frames / wall,
        "requests_per_s": frames / per_request / wall, "cpu_ms_per_frame": 1e3 * cpu / max(1, frames),
        "other_processes_cores": _others(busy, cpu, wall), "errors": len(errors),
    }
    if errors:
        res["first_error"] = errors[0]
    return res


class IsolatedContender:
    """:func:`contender_cell` in a child process (spawn): PyNvVideoCodec and its threads live apart
    from the engine's process, and a crash of the library is reported in its cell while the run goes
    on (a new child for the next cell). A child that dies is replaced and the cell run once more
    (the crash is reported with the result: ``crashed_first``); a hung one is not."""

    TIMEOUT_S = 240.0
    TRIES = 2

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def __call__(self, files: list[str], counts: list[int], pattern: str, per_file: int, *, warm: float,
                 seconds: float, seed: int) -> dict[str, Any]:
        import multiprocessing

        crashed = None
        for _ in range(self.TRIES):
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            try:
                result = self._pool.submit(contender_cell, files, counts, pattern, per_file, warm=warm,
                                           seconds=seconds, seed=seed).result(timeout=self.TIMEOUT_S)
                return {**result, "crashed_first": crashed} if crashed else result
            except Exception as exc:  # noqa: BLE001 - a crashed or hung child: reported in the cell
                self.close()
                crashed = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, BrokenProcessPool):
                    break  # hung, or failed in the library: not tried again
        return {"error": crashed}

    def close(self, kill: bool = False) -> None:
        """End the child (``kill``: at once, with whatever threads it still runs)."""
        if self._pool is not None:
            children = list(getattr(self._pool, "_processes", {}).values()) if kill else []
            self._pool.shutdown(wait=False, cancel_futures=True)
            for child in children:
                with contextlib.suppress(Exception):
                    child.kill()
                    child.join(5)
            self._pool = None


def contender_available(device: str) -> tuple[bool, str]:
    if device != "cuda":
        return False, "PyNvVideoCodec contenders skipped: they need --device cuda"
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure to load means: no contender
        return False, f"PyNvVideoCodec contenders skipped: import PyNvVideoCodec failed ({type(e).__name__}: {e})"
    return True, ""


# -- the run ------------------------------------------------------------------------------------------


class Bench:
    """Holds the arguments and the results; writes them after every cell."""

    def __init__(self, args: argparse.Namespace, device: str) -> None:
        self.args = args
        self.device = device
        self.quick: bool = args.quick
        self.seconds: float = args.seconds if args.seconds is not None else (0.5 if args.quick else 1.5)
        self.budget: float = args.budget if args.budget is not None else (0.0 if args.quick else 240.0)
        self.file_counts = (QUICK_FILES,) if args.quick else FILE_COUNTS
        self.contender, note = contender_available(device)
        self.isolated = IsolatedContender()
        self.res: dict[str, Any] = {
            "meta": machine_meta(device),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "seconds": self.seconds, "warm_s": WARM_S, "sets": {}, "cells": [], "cache": [], "engines": {},
            "skipped": [], "notes": [note] if note else [], "targets": [],
        }
        self.res["args"]["device"] = device

    # budget --------------------------------------------------------------------------------------------

    def fits(self, what: str, estimate_s: float) -> bool:
        """False (and noted) when ``what`` would end past the time budget."""
        elapsed = time.perf_counter() - T_START
        if self.budget and elapsed + estimate_s > self.budget:
            self.res["skipped"].append(f"{what} (at {elapsed:.0f} s; budget {self.budget:.0f} s)")
            print(f"skipped for the time budget: {what}", flush=True)
            return False
        return True

    def cell_estimate(self, files: int) -> float:
        one = WARM_S + self.seconds + 0.3
        return QUIET_WINDOW_S + one + (one + 0.02 * files if self.contender else 0.0)

    async def quiet(self) -> dict[str, Any]:
        """Before an engine cell: wait until the machine's other processes use under
        :data:`QUIET_CORES` (at most :data:`QUIET_WAIT_S`); where they still do and a contender child
        is running, kill it (a decoder it left running is then gone) and wait again. What it took is
        reported with the cell."""
        waited = await asyncio.to_thread(wait_quiet, QUIET_WAIT_S, QUIET_CORES, QUIET_WINDOW_S)
        out: dict[str, Any] = {"waited_s": waited, "contender_killed": False}
        if waited >= QUIET_WAIT_S and self.contender:
            self.isolated.close(kill=True)
            out["contender_killed"] = True
            out["waited_s"] += await asyncio.to_thread(wait_quiet, QUIET_WAIT_S, QUIET_CORES, QUIET_WINDOW_S)
        out["quiet"] = out["waited_s"] < (2 if out["contender_killed"] else 1) * QUIET_WAIT_S
        if not out["quiet"] or out["contender_killed"]:
            print(f"  the machine's other processes were busy before this cell: waited {out['waited_s']:.1f} s"
                  + (", contender child killed" if out["contender_killed"] else "")
                  + ("" if out["quiet"] else "; timed anyway"), flush=True)
        return out

    # output --------------------------------------------------------------------------------------------

    def save(self) -> None:
        self.res["targets"] = targets(self.res)
        self.res["elapsed_s"] = time.perf_counter() - T_START
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("matrix_bench.json", json.dumps(self.res, indent=2, default=str)),
                           ("matrix_bench.md", markdown(self.res))):
            tmp = out / (name + ".tmp")
            tmp.write_text(text)
            tmp.replace(out / name)

    # sections ------------------------------------------------------------------------------------------

    def engine(self, frame_cache_bytes: int = 0) -> Any:
        from asyncdecode import Engine, EngineConfig

        return Engine(device=self.device, config=EngineConfig(decoder_threads=self.args.threads,
                                                              frame_cache_bytes=frame_cache_bytes))

    async def cell(self, eng: Any, set_name: str, files: list[str], counts: list[int], pattern: str,
                   per_file: int, seed: int) -> None:
        k = len(files)
        label = f"{pattern} {per_file}f x {k}"
        if not self.fits(f"{set_name} {label}", self.cell_estimate(k)):
            return
        rng = random.Random(seed)
        reqs = (random_requests(files, counts, per_file, rng) if pattern == "random"
                else front_requests(files, counts, per_file))
        cell: dict[str, Any] = {"set": set_name, "cell": label, "pattern": pattern, "frames_per_file": per_file,
                                "files": k, "before": await self.quiet()}
        try:
            cell["engine"] = await engine_cell(eng, reqs, depth=depth_for(k * per_file, self.device), warm=WARM_S,
                                               seconds=self.seconds, device=self.device)
        except Exception as e:  # noqa: BLE001 - reported in the cell, the run goes on
            cell["engine"] = {"error": f"{type(e).__name__}: {e}"}
        await _idle(eng)
        cell["contender"] = None
        if self.contender:
            try:
                cell["contender"] = await asyncio.to_thread(self.isolated, files, counts, pattern, per_file,
                                                            warm=WARM_S, seconds=self.seconds, seed=seed)
            except Exception as e:  # noqa: BLE001
                cell["contender"] = {"error": f"{type(e).__name__}: {e}"}
        e, c = cell["engine"], cell["contender"]
        if "requests_per_s" in e and c and c.get("requests_per_s"):
            cell["ratio"] = e["requests_per_s"] / c["requests_per_s"]
        self.res["cells"].append(cell)
        self.save()
        print(_cell_line(cell), flush=True)

    async def run_set(self, name: str, paths: list[str]) -> None:
        if not self.fits(f"{name} (engine start)", self.cell_estimate(len(paths))):
            return
        async with self.engine() as eng:
            counts = [info.num_frames for info in await asyncio.gather(*(eng.info(p) for p in paths))]
            # the engine's first work (device context, decoder sessions, demuxing every file) out of the cells
            await engine_cell(eng, random_requests(paths, counts, 1, random.Random(7)), depth=DEPTH, warm=0.0,
                              seconds=SET_WARM_S, device=self.device)
            await _idle(eng)
            steady = await self.settle(eng, paths, counts) if self.args.steady else None
            after_warm_up = eng.stats()
            seed = 1
            if name == "web":
                shapes = (("random", 1), ("front", 16))
                for pattern, per_file in shapes:
                    await self.cell(eng, name, paths, counts, pattern, per_file, seed)
                    seed += 1
            else:
                for k in self.file_counts:
                    for pattern in PATTERNS:
                        for per_file in SHAPES:
                            await self.cell(eng, name, paths[:k], counts[:k], pattern, per_file, seed)
                            seed += 1
            self.res["engines"][name] = {"after_warm_up": after_warm_up, "end": eng.stats(), "steady": steady}
        self.save()
        s = self.res["engines"][name]["end"]
        print(f"{name}: engine {s.get('backend')} / {s.get('decoder_library')}, {s.get('decoder_threads')} decoder "
              f"threads; decoders created {s.get('decoders_created')}, reconfigured {s.get('decoders_reconfigured')}, "
              f"frames decoded {s.get('frames_decoded')}, returned {s.get('frames_returned')}", flush=True)
        if self.device == "cuda":
            torch.cuda.empty_cache()

    async def settle(self, eng: Any, paths: list[str], counts: list[int]) -> dict[str, Any]:
        """``--steady``: before a set's cells, random requests of :data:`STEADY_PER_FILE` frames of every
        file until no decoder was made for :data:`STEADY_QUIET_S` (at most ``--steady`` seconds), so that
        the cells time the set's steady state; what it took is reported with the set."""
        t0 = time.perf_counter()
        made0 = last = eng.stats().get("decoders_created", 0)
        quiet_since, reached = t0, False
        reqs = random_requests(paths, counts, STEADY_PER_FILE, random.Random(11))
        depth = depth_for(len(paths) * STEADY_PER_FILE, self.device)
        async with contextlib.aclosing(eng.stream(reqs, depth=depth)) as stream:
            async for _ in stream:
                now = time.perf_counter()
                made = eng.stats().get("decoders_created", 0)
                if made != last:
                    last, quiet_since = made, now
                elif now - quiet_since >= STEADY_QUIET_S:
                    reached = True
                    break
                if now - t0 >= self.args.steady:
                    break
        await _idle(eng)
        out = {"seconds": time.perf_counter() - t0, "reached": reached, "decoders_made": last - made0}
        print(f"  steady state {'reached' if reached else 'NOT reached'} after {out['seconds']:.1f} s "
              f"({out['decoders_made']} decoders made)", flush=True)
        return out

    async def run_cache(self, paths: list[str]) -> None:
        from asyncdecode import probe

        infos = [probe(p) for p in paths]
        counts = [min(i.num_frames, QUICK_CACHE_FRAMES) if self.quick else i.num_frames for i in infos]
        pairs = [(p, f) for p, n in zip(paths, counts) for f in range(n)]
        frame_bytes = [3 * i.width * i.height for i in infos]
        set_bytes = sum(b * n for b, n in zip(frame_bytes, counts))
        orders = {}
        for epoch in range(1, CACHE_EPOCHS + 1):  # the same orders for every cache size
            order = pairs[:]
            random.Random(epoch).shuffle(order)
            chunks = [order[j : j + CACHE_PER_REQUEST] for j in range(0, len(order), CACHE_PER_REQUEST)]
            orders[epoch] = [([p for p, _ in chunk], [f for _, f in chunk]) for chunk in chunks]
        rounds = max(1, self.args.cache_rounds)
        for run, share in enumerate(CACHE_SHARES * rounds):
            round_ = run // len(CACHE_SHARES)
            if run % len(CACHE_SHARES) == 0:
                base: dict[int, float] = {}  # each round against its own first no-cache run
            if not self.fits(f"frame cache {share:.0%}", 4.0 if self.device == "cuda" else 20.0):
                continue
            capacity = int(share * set_bytes) + (max(frame_bytes) if share else 0)
            async with self.engine(frame_cache_bytes=capacity) as eng:
                for p in paths:  # the engine warm (indexes, decoders of the set's shape): one frame a file
                    await eng.info(p)
                    await eng.decode(p, [0])
                for epoch in range(1, CACHE_EPOCHS + 1):
                    before = eng.stats()
                    b0, c0, t0 = busy_cpu_s(), time.process_time(), time.perf_counter()
                    frames = 0
                    async with contextlib.aclosing(eng.stream(orders[epoch], depth=CACHE_DEPTH)) as stream:
                        async for got in stream:
                            frames += len(got)
                    _sync(self.device)
                    wall, cpu, after = time.perf_counter() - t0, time.process_time() - c0, eng.stats()
                    others = _others(busy_cpu_s() - b0, cpu, wall)
                    decoded = after["frames_decoded"] - before["frames_decoded"]
                    r = {"share": share, "run": run, "round": round_, "capacity_bytes": capacity, "set_bytes": set_bytes, "epoch": epoch,
                         "files": len(paths), "frames": frames, "seconds": wall, "frames_per_s": frames / wall,
                         "cpu_ms_per_frame": 1e3 * cpu / max(1, frames),
                         "decoded_per_returned": decoded / max(1, frames),
                         "cache_hits": _delta(before, after, "frame_cache_hits"),
                         "cache_bytes": after.get("frame_cache_bytes"), "other_processes_cores": others,
                         **{k: _delta(before, after, f"frame_cache_{k}") for k in (
                             "extras_admitted", "extras_hit", "extras_wasted", "wanted_admitted", "wanted_hit",
                             "wanted_wasted")},
                         "collecting_at_end": after.get("frame_cache_collecting"),
                         "keeping_at_end": after.get("frame_cache_keeping"),
                         "extras_threshold": after.get("frame_cache_extras_threshold")}
                    if share == 0.0 and epoch not in base:  # the first no-cache run is the base
                        base[epoch] = r["frames_per_s"]
                    r["x_no_cache"] = r["frames_per_s"] / base[epoch] if epoch in base else None
                    self.res["cache"].append(r)
                    self.save()
                    print(f"frame cache {share:4.0%} epoch {epoch}: {r['frames_per_s']:8.0f} frames/s"
                          + (f" ({r['x_no_cache']:.2f}x no cache)" if r["x_no_cache"] is not None else "")
                          + f", {r['decoded_per_returned']:.2f} decoded/returned, {r['cache_hits']} hits; extras "
                          f"{r['extras_admitted']} admitted, {r['extras_hit']} hit, {r['extras_wasted']} wasted, "
                          f"collecting {r['collecting_at_end']}, threshold {r['extras_threshold']}; wanted "
                          f"{r['wanted_admitted']} kept, {r['wanted_hit']} hit, {r['wanted_wasted']} wasted, "
                          f"keeping {r['keeping_at_end']}", flush=True)
            if self.device == "cuda":
                torch.cuda.empty_cache()

    async def run(self, paths: dict[str, list[str]], sections: list[str]) -> None:
        for name in sections:
            try:
                if name == "cache":
                    await self.run_cache(paths["uniform"][:CACHE_FILES[self.device]])
                else:
                    await self.run_set(name, paths[name])
            except Exception as e:  # noqa: BLE001 - noted; the other sections still run
                note = f"{name}: failed with {type(e).__name__}: {e}"
                self.res["notes"].append(note)
                print(note, flush=True)
                self.save()


def _quiet_summary(cells: list[dict[str, Any]]) -> str:
    befores = [c["before"] for c in cells if c.get("before")]
    if not befores:
        return "no cell waited"
    waited = [b["waited_s"] for b in befores]
    loud = sum(not b["quiet"] for b in befores)
    killed = sum(b["contender_killed"] for b in befores)
    return (f"{len(befores)} cells waited {sum(waited):.1f} s in all (at most {max(waited):.1f} s); "
            f"{killed} contender child(ren) killed; {loud} cell(s) timed with the machine still busy")


def _cell_line(cell: dict[str, Any]) -> str:
    e, c = cell["engine"], cell.get("contender")
    line = f"{cell['set']:12s} {cell['cell']:17s} "
    if "error" in e:
        line += f"engine ERROR {e['error']}"
    else:
        line += (f"engine {e['requests_per_s']:8.1f} req/s {e['frames_per_s']:8.0f} frames/s "
                 f"{e['decoded_per_s']:8.0f} decoded/s ({e['decoded_per_returned']:.2f} decoded/returned, "
                 f"{e['cpu_ms_per_frame']:.3f} ms CPU/frame, decoders +{e['decoders_created']} created "
                 f"+{e['decoders_reconfigured']} reconfigured)")
    if c:
        if "error" in c:
            line += f" | contender ERROR {c['error']}"
        else:
            line += f" | {c['decoder']} {c['requests_per_s']:8.1f} req/s {c['frames_per_s']:8.0f} frames/s"
            if c.get("crashed_first"):
                line += f" (second try; first: {c['crashed_first']})"
            if c.get("errors"):
                line += f" ({c['errors']} errors: {c.get('first_error')})"
        if "ratio" in cell:
            line += f" | x{cell['ratio']:.2f}"
    others = [x.get("other_processes_cores") or 0.0 for x in (e, c or {})]
    if max(others) > 0.2:
        line += f" [other processes used {max(others):.1f} cores meanwhile]"
    return line


# -- targets and markdown -----------------------------------------------------------------------------


def _ok(values: list[float], threshold: float) -> bool | None:
    return None if not values else all(v >= threshold for v in values)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    cells = {(c["set"], c["cell"]): c for c in res["cells"] if "error" not in c["engine"]}
    out: list[dict[str, Any]] = []
    def decoded(set_name: str, label: str) -> float:
        return cells[(set_name, label)]["engine"]["decoded_per_s"]

    for other in ("mixed_sizes", "mixed_codecs"):
        per = {label: decoded(other, label) / decoded("uniform", label) for (s, label) in cells
               if s == other and ("uniform", label) in cells and decoded("uniform", label) > 0}
        out.append({"target": f"{other} decoded/s >= {RATIO_TO_UNIFORM}x uniform (same cell)",
                    "value": min(per.values()) if per else None, "per_cell": per,
                    "ok": _ok(list(per.values()), RATIO_TO_UNIFORM)})
    per = {label: c["ratio"] for (s, label), c in cells.items()
           if s == "mixed_sizes" and c["pattern"] == "random" and "ratio" in c}
    out.append({"target": f"mixed_sizes requests/s >= {RANDOM_VS_SIMPLE}x SimpleDecoder per file (random cells)",
                "value": min(per.values()) if per else None, "per_cell": per,
                "ok": _ok(list(per.values()), RANDOM_VS_SIMPLE)})

    def total(rows: list[dict[str, Any]]) -> float | None:
        return sum(r["frames"] for r in rows) / sum(r["seconds"] for r in rows) if rows else None

    rounds = sorted({r.get("round", 0) for r in res["cache"]})
    for share in sorted({r["share"] for r in res["cache"]} - {0.0}):
        per_round: list[float] = []
        detail: dict[str, Any] = {}
        for round_ in rounds:
            rows = [r for r in res["cache"] if r.get("round", 0) == round_]
            runs: dict[int, list[dict[str, Any]]] = {}
            for r in rows:
                runs.setdefault(r.get("run", r["share"]), []).append(r)
            none = [v for v in (total(rs) for rs in runs.values() if rs[0]["share"] == 0.0) if v]
            base = sum(none) / len(none) if none else None
            value = total([r for r in rows if r["share"] == share])
            ratio = value / base if value and base else None
            tag = f" (round {round_ + 1})" if len(rounds) > 1 else ""
            detail.update({f"no cache (mean){tag}": base,
                           **{f"no cache run {i + 1}{tag}": v for i, v in enumerate(none)},
                           f"{share:.0%}{tag}": value})
            if ratio is not None:
                per_round.append(ratio)
                if len(rounds) > 1:
                    detail[f"ratio{tag}"] = ratio
        value = statistics.median(per_round) if per_round else None
        what = "median over the rounds of " if len(rounds) > 1 else ""
        out.append({"target": f"frame cache at {share:.0%} >= no cache ({what}frames/s over all epochs, against "
                              "the mean of the no-cache runs)", "value": value, "per_cell": detail,
                    "ok": None if value is None else value >= 1.0})
    per_set: dict[str, float | None] = {}
    for s in sorted({s for s, _ in cells}):
        created = [c["engine"]["decoders_created"] for (s2, _), c in cells.items() if s2 == s]
        threads = next((c["engine"]["decoder_threads"] for (s2, _), c in cells.items() if s2 == s), None)
        if any(v is None for v in created) or not threads:
            per_set[s] = None
        else:
            per_set[s] = sum(created) / threads
    known = [v for v in per_set.values() if v is not None]
    complete = bool(known) and len(known) == len(per_set)
    out.append({"target": f"decoders created in the timed windows per decoder session <= {DECODERS_PER_SESSION_BOUND} "
                          "(each set)",
                "value": max(known) if known else None, "per_cell": per_set,
                "ok": all(v <= DECODERS_PER_SESSION_BOUND for v in known) if complete else None})
    return out


def _f(v: Any, fmt: str = ".0f") -> str:
    return "–" if v is None else format(v, fmt)


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    threads = "" if res["args"].get("threads") is None else f" but decoder_threads={res['args']['threads']}"
    lines = [f"# matrix_bench — {m.get('device_name')}, {m['date']}", "",
             f"device {res['args']['device']}; driver {m.get('driver', '–')}; torch {m['torch']}; PyAV {m['av']} "
             f"(FFmpeg {m.get('ffmpeg', '?')}); PyNvVideoCodec {m.get('pynvvideocodec') or '–'}; asyncdecode "
             f"{m['asyncdecode']}; Python {m['python']}; {m['cpus']} CPUs ({m.get('cpu_model', '?')}).", "",
             f"{res['seconds']} s timed per cell (at least {MIN_TIMED_REQUESTS} requests) after a warm-up in the same "
             f"stream ({res['warm_s']} s and at least `depth` requests); engine default config{threads}; the "
             "contender runs right after the engine in the same cell, one decoder and one thread per file. "
             "req/s: requests/s; decoded/s from `stats()['frames_decoded']`; ratio = engine req/s / contender req/s; "
             "decoders created / reconfigured: deltas over the timed window; other processes: CPU cores the rest of "
             "the machine used meanwhile (from /proc/stat; the larger of engine and contender). Before each engine "
             f"cell the run waits until those use under {QUIET_CORES} cores (at most {QUIET_WAIT_S:.0f} s, then the "
             "contender's child is killed and it waits again): "
             + _quiet_summary(res["cells"]) + ".", ""]
    for note in res["notes"]:
        lines += [f"*{note}*", ""]
    measured = {c["set"] for c in res["cells"]}
    for name in (s for s in ("uniform", "mixed_sizes", "mixed_codecs", "web") if s in measured):
        info = res["sets"].get(name, {})
        lines += [f"## {name}", "", f"{info.get('description', '')}", "",
                  "| cell | depth | engine req/s | frames/s | decoded/s | decoded/returned | CPU ms/frame | "
                  "decoders created / reconfigured | contender | contender req/s | ratio | other processes (cores) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for c in (c for c in res["cells"] if c["set"] == name):
            e, k = c["engine"], c.get("contender") or {}
            if "error" in e:
                row = f"| {c['cell']} | – | engine error: {e['error']} | | | | | |"
            else:
                row = (f"| {c['cell']} | {e['depth']} | {e['requests_per_s']:.1f} | {e['frames_per_s']:.0f} | "
                       f"{e['decoded_per_s']:.0f} | {e['decoded_per_returned']:.2f} | {e['cpu_ms_per_frame']:.3f} | "
                       f"{_f(e['decoders_created'], 'd')} / {_f(e['decoders_reconfigured'], 'd')} |")
            if "error" in k:
                row += f" error: {k['error']} | | |"
            elif k:
                row += (f" {k['decoder']}{' (' + str(k['errors']) + ' errors)' if k.get('errors') else ''}"
                        f"{' (second try: the first child died)' if k.get('crashed_first') else ''} | "
                        f"{k['requests_per_s']:.1f} | {_f(c.get('ratio'), '.2f')} |")
            else:
                row += " – | – | – |"
            others = [x.get("other_processes_cores") for x in (e, k) if x.get("other_processes_cores") is not None]
            row += f" {_f(max(others) if others else None, '.2f')} |"
            lines.append(row)
        eng = res["engines"].get(name)
        if eng:
            s = eng["end"]
            warm = eng["after_warm_up"].get("decoders_created")
            lines += ["", f"Engine at the end: {s.get('backend')} / {s.get('decoder_library')}, "
                          f"{s.get('decoder_threads')} decoder threads, decoders created "
                          f"{_f(s.get('decoders_created'), 'd')} in all ({_f(warm, 'd')} by the end of the set's "
                          f"warm-up), reconfigured {_f(s.get('decoders_reconfigured'), 'd')}; frames decoded "
                          f"{s.get('frames_decoded')}, returned {s.get('frames_returned')}; jobs continued "
                          f"{s.get('jobs_continued')}, merged {s.get('jobs_merged')}."]
            steady = eng.get("steady")
            if steady:
                lines += ["", f"Steady state (`--steady`): {'reached' if steady['reached'] else 'NOT reached'} "
                              f"after {steady['seconds']:.1f} s of random requests of {STEADY_PER_FILE} frames of "
                              f"every file, {steady['decoders_made']} decoders made meanwhile (counted in the "
                              f"warm-up's figure above, not in the cells)."]
        lines.append("")
    if res["cache"]:
        r0 = res["cache"][0]
        lines += ["## Frame cache (engine only)", "",
                  f"Epoch-random over the uniform set's first {r0['files']} files, "
                  f"{r0['frames'] // r0['files']} frames each ({r0['set_bytes'] / 2**20:.0f} MiB of decoded RGB), "
                  f"every frame once per epoch in a shuffled order, {CACHE_PER_REQUEST} frames per request, depth "
                  f"{CACHE_DEPTH}; a fresh engine per cache size, warmed by one frame of each file; the same "
                  f"orders for every size; no cache run first and again last (their difference is the run's "
                  f"noise); x no cache: against the first.", "",
                  "| cache | epoch | frames/s | x no cache | decoded/returned | cache hits | wanted kept / hit | "
                  "extras kept / hit | CPU ms/frame | other processes (cores) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["cache"]:
            lines.append(f"| {r['share']:.0%} | {r['epoch']} | {r['frames_per_s']:.0f} | "
                         f"{_f(r.get('x_no_cache'), '.2f')} | {r['decoded_per_returned']:.2f} | "
                         f"{_f(r['cache_hits'], 'd')} | {_f(r.get('wanted_admitted'), 'd')} / "
                         f"{_f(r.get('wanted_hit'), 'd')} | {_f(r.get('extras_admitted'), 'd')} / "
                         f"{_f(r.get('extras_hit'), 'd')} | {r['cpu_ms_per_frame']:.3f} | "
                         f"{_f(r.get('other_processes_cores'), '.2f')} |")
        lines.append("")
    lines += ["## Targets", ""]
    for t in res["targets"]:
        mark = {True: "✓", False: "✗", None: "–"}[t["ok"]]
        detail = ", ".join(f"{k}: {_f(v, '.2f')}" for k, v in t["per_cell"].items())
        lines.append(f"- {mark} {t['target']}: {_f(t['value'], '.2f')}" + (f" ({detail})" if detail else ""))
    if res["skipped"]:
        lines += ["", "Skipped for the time budget: " + "; ".join(res["skipped"]) + "."]
    enc = res.get("encode", {})
    lines += ["", f"Run time {res.get('elapsed_s', 0):.0f} s (encoding {enc.get('encode_s', 0):.0f} s for "
                  f"{enc.get('encoded_files', 0)} files; files already there are not made again).", ""]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_meta(device: str) -> dict[str, Any]:
    import av

    import asyncdecode

    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
        "platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "torch": torch.__version__,
        "av": av.__version__, "ffmpeg": ".".join(map(str, av.library_versions.get("libavcodec", ()))) or None,
        "asyncdecode": getattr(asyncdecode, "__version__", "?"), "pynvvideocodec": None,
    }
    if device == "cuda":
        meta["device_name"] = torch.cuda.get_device_name(0)
        meta["cuda"] = torch.version.cuda
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            meta["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        with contextlib.suppress(Exception):
            import PyNvVideoCodec as nvc

            meta["pynvvideocodec"] = getattr(nvc, "__version__", "unknown")
    else:
        meta["device_name"] = f"CPU: {meta['cpu_model']}"
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="engine device (default: cuda when torch sees a GPU, else cpu)")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "matrix", help="videos (made if absent)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where matrix_bench.{json,md} go")
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per cell (default 1.5; --quick 0.5)")
    ap.add_argument("--quick", action="store_true",
                    help="6-file cells only, 0.5 s, sets uniform,mixed_sizes,mixed_codecs,cache, smaller cache epochs")
    ap.add_argument("--sets", default=None,
                    help=f"comma separated, of {','.join(ALL_SECTIONS)} (default: all; --quick: all but web)")
    ap.add_argument("--threads", type=int, default=None, help="the engine's decoder_threads (default: its own)")
    ap.add_argument("--steady", type=float, default=0.0, metavar="S",
                    help=f"before each set's cells, read it at random ({STEADY_PER_FILE} frames of every file) "
                         f"until no decoder was made for {STEADY_QUIET_S:.0f} s, at most S seconds (default 0: "
                         f"a {SET_WARM_S} s warm-up only); reported per set")
    ap.add_argument("--cache-rounds", type=int, default=1, metavar="N",
                    help="run the cache cells' sequence (no cache, 25%%, 50%%, 100%%, no cache) N times; the "
                         "targets take the median over the rounds of each round's ratio (one round's noise on a "
                         "GPU was 20-40%% between its two no-cache runs)")
    ap.add_argument("--budget", type=float, default=None,
                    help="skip cells that would end later than this many seconds into the run (default 240; "
                         "--quick: no limit; 0: no limit)")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    default_sets = ",".join(s for s in ALL_SECTIONS if not (args.quick and s == "web"))
    sections = [s.strip() for s in (args.sets or default_sets).split(",") if s.strip()]
    unknown = [s for s in sections if s not in ALL_SECTIONS]
    if unknown:
        ap.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(ALL_SECTIONS)}")
    sections = [s for s in ALL_SECTIONS if s in sections]  # the order of the run: web last

    bench = Bench(args, device)
    res = bench.res
    wanted: dict[str, int] = {}
    for name in sections:
        if name == "cache":
            wanted["uniform"] = max(wanted.get("uniform", 0), CACHE_FILES[device])
        else:
            wanted[name] = max(wanted.get(name, 0), QUICK_FILES if args.quick else len(set_specs(name)))
    paths, res["encode"] = ensure_files(args.data, wanted)
    for name, count in wanted.items():
        files = [dict(asdict(s), file=Path(p).name) for s, p in zip(set_specs(name), paths[name])]
        res["sets"][name] = {"description": SET_DESCRIPTIONS[name], "files_used": count, "files": files}
    for note in res["notes"]:
        print(note, flush=True)
    print(f"device {device} ({res['meta']['device_name']}); {bench.seconds} s per cell; sections "
          f"{', '.join(sections)}" + (f"; budget {bench.budget:.0f} s" if bench.budget else ""), flush=True)
    bench.save()
    try:
        asyncio.run(bench.run(paths, sections))
    finally:
        bench.isolated.close()
    bench.save()
    print(markdown(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
