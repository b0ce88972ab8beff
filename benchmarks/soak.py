"""Soak: one engine under a random mix of requests for many minutes, its resources sampled throughout.

    python benchmarks/soak.py [--device cpu|cuda] [--minutes M] [--sample-s S] [--warm-s S] [--files N]
                              [--workers W] [--bound-s B] [--check-share P] [--bad-share P] [--seed K]
                              [--tracemalloc FRAMES] [--data DIR] [--out PREFIX]
    python benchmarks/soak.py --device cpu --minutes 3 --sample-s 20    # about 3.5 minutes on 2 cores
    python benchmarks/soak.py --device cuda                             # 30 minutes (+ about 2) on a GPU

**Files**: matrix_bench's ``uniform`` and ``mixed_sizes`` sets (its generators, made under ``--data``
if absent; default benchmarks/data/matrix, shared with matrix_bench), the first ``--files`` of each
(default 6 on cpu, all 24 on cuda). Bad inputs, made under ``--data``/soak_bad: a missing file, a
copy cut in half (its ``moov`` at the end is lost: ``VideoOpenError``), a copy rewritten with
``moov`` in front and then cut at 60% (``CorruptDataError``), a text file named .mp4
(``VideoOpenError``), and frame ids out of range of a good file (``FrameIndexError``).

**Reference**: before the engine opens, a child process (spawned, so that its engine, threads and
memory are not this process's) decodes every frame of every file front to back with its own
``Engine`` on the same device and returns each frame's shape and CRC-32.

**Load**: one ``Engine(device)`` with the default config; ``--workers`` asyncio tasks, each looping
over random operations until the time is up:

- ``decode`` (weight 0.5): ``await eng.decode(paths, ids)``, 1-3 random frames of each of 1-4 random
  files of both sets; a quarter of them are cancelled after a random delay (0 to 2x the running mean
  latency, so before, during or after the decode);
- ``submit`` (0.2): the same through ``eng.submit``, the returned future cancelled after a random
  delay in half of them;
- ``stream`` (0.3): a read-on run, ``eng.stream(requests, depth=2..8)`` of 8-32 requests reading 1-3
  files of one set front to back from a random start, 1, 2 or 4 consecutive frames per file and
  request; half given as a list (the engine sees the later requests), half as a generator; 15% closed
  early after a random number of results, 15% cancelled after a random delay.

``--bad-share`` (default 0.1) of the requests carry one bad input at a random position (in a stream
run: one request of the run, after which the stream ends with its error). The first sample comes
after a warm-up: one frame of every GOP of every file and each bad input once, then ``--warm-s``
(default one sample interval) of the load, during which the RSS and the decoders made and free are
noted every 30 s (kept and reported, not judged: when does the decoder pool level?).

**Checks**, on every finished request: the number of frames and each frame's shape (from the
reference), dtype and device; on ``--check-share`` (default 0.25) of them every frame's CRC-32 against
the reference (a *mismatch* counts a frame); a request with a bad input must fail with exactly its
error class (else *wrong error*; a success is *bad succeeded*); a good request must not fail
(*unexpected error*); no request may take longer than ``--bound-s`` (default 10 s; *over bound*),
counted from the moment the engine takes it (a stream request: when the engine pulls it, i.e. when
the result ``depth`` places before it was consumed). Cancelled requests and stream runs closed early
or cancelled are counted (the requests a closed stream withdraws show in the engine's
``requests_cancelled``).

**Samples**, every ``--sample-s`` (default 60; 20 for short runs is fine), twice: under load, then
*quiet* (no new operation starts until none is in flight and the engine's queue is empty, then
``gc.collect()``; the load resumes after). Each: RSS, anonymous RSS, the memory mappings and the RSS
of the unnamed anonymous ones, of the main ``[heap]`` and of ``/dev/nvidia*`` (``/proc/self/smaps``:
where memory outside malloc grows), the glibc heap in use and held (``mallinfo2``), on cuda device memory allocated / reserved, the allocations' peak since the last sample, the
caching allocator's free pieces of split blocks, its segments, and how many streams hold reserved memory and how
much the largest holds (freed blocks are kept per stream: what reserved memory follows), and the whole GPU's used memory
(``mem_get_info``: decoder surfaces are not torch's), open fds (/proc/self/fd), threads
(``threading.active_count()`` and /proc/self/task), live Python objects (``gc.get_objects()``, quiet
only), the engine's ``stats()`` (decoder threads, decoders created / free, GOP cache, frame cache,
index cache, requests in flight, queue depth, jobs in flight); per interval requests done / failed as
expected / cancelled, problems, latency max and p99, frames/s (paused time left out). At the end the
workers stop, the engine is closed and the process sampled after ``gc.collect()``, again after the
event loop closed, and after ``malloc_trim(0)`` (and ``torch.cuda.empty_cache()``); all against a
sample taken before the engine opened.

**Result** per resource: growth per 10 minutes from the quiet in-run samples after the first minute
(least-squares slope x 600 s, as a percentage of the first of them, with two standard errors of the
slope; also over their second half alone, to tell warm-up from a steady leak, over the whole run, and
from the samples under load, and with the decoder pool held fixed: the time slope of a fit on time and
on ``stats()["decoders_open"]``, since each open NVDEC decoder holds host memory, mappings and open
files of the driver's and the pool follows the load within its bounds): pass under
1% per 10 minutes; FAIL above it with the slope more than two standard errors above zero; otherwise
unresolved (the run is too short or too noisy to tell growth from none). glibc's heap held is shown but
not judged: it is address space, which ``malloc_trim`` gives the pages of back without shrinking. Object types that grew most between the first and last sample are listed.
``--tracemalloc N`` traces Python allocations (N frames) from the first sample and lists the lines
whose allocations changed most by the last; it slows the run, so its figures are not the default run's. Written to
``--out``.json / .md and a plot (.png with matplotlib, else .svg drawn here); default
``benchmarks/results/soak_<device>``. While it runs, ``--out``.partial.json holds the samples so far (removed at
the end): ``--rejudge`` on it gives the growth of a run that was cut off.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import gc
import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matrix_bench  # noqa: E402  (this folder: its sets, generators and machine description)
from _machine import busy_cpu_s  # noqa: E402
from _soak_report import (MiB, PROBLEMS, _f, close_verdict, growth_table, judge, markdown,  # noqa: E402
                          write_plot)

HERE = Path(__file__).resolve().parent
SETS = ("uniform", "mixed_sizes")
DEFAULT_MINUTES = {"cuda": 30.0, "cpu": 3.0}
DEFAULT_FILES = {"cuda": 24, "cpu": 6}
DEFAULT_WORKERS = {"cuda": 16, "cpu": 4}
OPS = (("decode", 0.5), ("submit", 0.2), ("stream", 0.3))
DECODE_CANCEL_SHARE = 0.25
SUBMIT_CANCEL_SHARE = 0.5
STREAM_EARLY_CLOSE_SHARE = 0.15
STREAM_CANCEL_SHARE = 0.15
EXAMPLES_KEPT = 8  # per kind of problem (bounded: the soak's own bookkeeping must not grow)


# -- inputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    """One kind of bad input and the error class it must fail with."""

    kind: str
    path: str
    expected: type
    frame_ids: Callable[[random.Random], int]


@dataclass
class Req:
    """One request as sent: its pairs, and its bad input if it carries one."""

    paths: list[str]
    ids: list[int]
    bad: BadInput | None = None


def make_bad_inputs(folder: Path, good: str, good_frames: int) -> list[BadInput]:
    """Bad inputs beside the good files (made once; see the module docstring)."""
    import av

    from asyncdecode import CorruptDataError, FrameIndexError, VideoOpenError

    folder.mkdir(parents=True, exist_ok=True)
    data = Path(good).read_bytes()
    half = folder / "truncated_moov_lost.mp4"
    if not half.exists():
        half.write_bytes(data[: len(data) // 2])
    tail = folder / "truncated_tail.mp4"
    if not tail.exists():
        front = folder / "faststart.tmp.mp4"
        with av.open(good) as inp, av.open(str(front), "w", options={"movflags": "faststart"}) as out:
            src = inp.streams.video[0]
            dst = out.add_stream_from_template(src)
            for packet in inp.demux(src):
                if packet.size:
                    packet.stream = dst
                    out.mux(packet)
        whole = front.read_bytes()
        tail.write_bytes(whole[: len(whole) * 6 // 10])
        front.unlink()
    text = folder / "not_a_video.mp4"
    if not text.exists():
        text.write_text("This is not a video file.\n" * 64)
    return [
        BadInput("missing file", str(folder / "missing.mp4"), VideoOpenError, lambda r: r.randrange(10)),
        BadInput("truncated (moov lost)", str(half), VideoOpenError, lambda r: r.randrange(good_frames)),
        BadInput("truncated (tail cut)", str(tail), CorruptDataError, lambda r: r.randrange(good_frames)),
        BadInput("not a video", str(text), VideoOpenError, lambda r: r.randrange(10)),
        BadInput("frame id out of range", good, FrameIndexError,
                 lambda r: good_frames + r.randrange(100) if r.random() < 0.8 else -1 - r.randrange(10)),
    ]


def _crc(t: torch.Tensor) -> int:
    return zlib.crc32(t.detach().to("cpu").contiguous().numpy().data)


def reference_digests(paths: list[str], device: str) -> dict[str, list[tuple[tuple[int, ...], int]]]:
    """Every frame of every file, front to back, with an engine of its own: (shape, CRC-32) per frame.
    Runs in a child process (see ``main``)."""
    from asyncdecode import Engine

    async def run() -> dict[str, list[tuple[tuple[int, ...], int]]]:
        out: dict[str, list[tuple[tuple[int, ...], int]]] = {}
        async with Engine(device=device) as eng:
            for p in paths:
                n = (await eng.info(p)).num_frames
                out[p] = []
                for start in range(0, n, 30):
                    frames = await eng.decode(p, list(range(start, min(n, start + 30))))
                    out[p] += [(tuple(f.shape), _crc(f)) for f in frames]
        return out

    return asyncio.run(run())


# -- process resources --------------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo() -> Callable[[], tuple[int, int]] | None:
    """glibc's ``mallinfo2`` (all arenas): bytes in use, bytes held; None where there is none."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def read() -> tuple[int, int]:
        m = fn()
        return m.uordblks + m.hblkhd, m.arena + m.hblkhd

    return read


MALLINFO = _mallinfo()


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: free heap pages go back to the system. False where there is none."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def _status_kb() -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def _mappings() -> dict[str, float]:
    """Where the resident memory is, from /proc/self/smaps: the memory mappings, the RSS of unnamed
    anonymous mappings (glibc's arenas beyond the main heap, and what drivers map without a file),
    of the main ``[heap]``, and of the NVIDIA driver's device mappings (``/dev/nvidia*``). A leak
    outside malloc shows in one of these and not in the glibc heap figures."""
    count, kb = 0, {"unnamed": 0, "heap": 0, "nvidia": 0}
    where = None
    with contextlib.suppress(OSError):
        with open("/proc/self/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):  # a mapping's header line
                    count += 1
                    parts = line.split()
                    name = parts[5] if len(parts) > 5 else ""
                    where = ("unnamed" if not name else "heap" if name == "[heap]"
                             else "nvidia" if name.startswith("/dev/nvidia") else None)
                elif first == "Rss:" and where is not None:
                    kb[where] += int(line.split()[1])
    return {"mappings": count, "rss_unnamed_mib": kb["unnamed"] / 1024, "rss_main_heap_mib": kb["heap"] / 1024,
            "rss_nvidia_mib": kb["nvidia"] / 1024}


def _segments() -> list[dict[str, Any]]:
    """The CUDA caching allocator's segments (without allocation traces where this torch can leave them out)."""
    try:
        return torch.cuda.memory_snapshot(include_traces=False)
    except TypeError:  # an older torch
        return torch.cuda.memory_snapshot()


def process_sample(device: str, *, objects: bool = True, names: bool = False) -> dict[str, Any]:
    """This process's resources now."""
    kb = _status_kb()
    s: dict[str, Any] = {
        "rss_mib": kb.get("VmRSS", 0) / 1024, "rss_anon_mib": kb.get("RssAnon", 0) / 1024,
        "rss_file_mib": kb.get("RssFile", 0) / 1024, "rss_peak_mib": kb.get("VmHWM", 0) / 1024,
        "open_fds": len(os.listdir("/proc/self/fd")), "threads_py": threading.active_count(),
        "threads_os": len(os.listdir("/proc/self/task")),
        **_mappings(),
    }
    from asyncdecode import _trim  # the engine's trims of the C heap (after decoders close, on RSS growth)

    trimmer = _trim._TRIMMER
    s["heap_trims"], s["heap_trims_on_growth"] = trimmer.trims, trimmer.grown_trims
    s["heap_trims_given_back_mib"] = trimmer.given_back / MiB
    if MALLINFO is not None:
        used, held = MALLINFO()
        s["heap_in_use_mib"], s["heap_held_mib"] = used / MiB, held / MiB
    if device == "cuda":
        s["cuda_allocated_mib"] = torch.cuda.memory_allocated() / MiB
        s["cuda_reserved_mib"] = torch.cuda.memory_reserved() / MiB
        # what the reserved memory follows: the allocations' peak since the last sample, and the free
        # pieces of split blocks (the caching allocator's fragmentation)
        s["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / MiB
        torch.cuda.reset_peak_memory_stats()
        stats = torch.cuda.memory_stats()
        s["cuda_inactive_split_mib"] = stats.get("inactive_split_bytes.all.current", 0) / MiB
        s["cuda_segments"] = stats.get("segment.all.current", 0)
        # the caching allocator keeps freed blocks for the stream they were allocated on: how the
        # reserved memory is spread over streams (the engine's decoder threads each have their own)
        per_stream: dict[int, int] = {}
        for seg in _segments():
            per_stream[seg["stream"]] = per_stream.get(seg["stream"], 0) + seg["total_size"]
        s["cuda_streams_holding"] = len(per_stream)
        s["cuda_reserved_top_stream_mib"] = max(per_stream.values(), default=0) / MiB
        free, total = torch.cuda.mem_get_info()
        s["cuda_used_mib"] = (total - free) / MiB  # the whole GPU's: decoder surfaces and contexts included
        cuda_trims = _trim._DEVICE_TRIMMERS.get(torch.cuda.current_device())  # the engine's emptyings
        s["cuda_trims"] = cuda_trims.trims if cuda_trims is not None else 0
        s["cuda_trims_given_back_mib"] = cuda_trims.given_back / MiB if cuda_trims is not None else 0.0
    if objects:
        s["py_objects"] = len(gc.get_objects())
    if tracemalloc.is_tracing():
        s["traced_mib"] = tracemalloc.get_traced_memory()[0] / MiB
    if names:
        s["thread_names"] = sorted(t.name for t in threading.enumerate())
    return s


ENGINE_KEYS = ("decoder_threads", "decoders_created", "decoders_free", "decoders_free_bytes", "decoders_open",
               "gop_cache_bytes",
               "gop_cache_entries", "frame_cache_bytes", "frame_cache_entries", "index_cache_files",
               "requests_in_flight", "queue_depth", "jobs_in_flight", "requests", "requests_failed",
               "requests_cancelled", "frames_decoded", "frames_returned", "read_ahead_gops", "open_files_opened")


ENGINE_DELTAS = ("requests", "requests_failed", "requests_cancelled", "frames_returned", "frames_decoded",
                 "decoders_created")


def _type_name(t: type) -> str:
    module = t.__dict__.get("__module__")
    return f"{module}.{t.__qualname__}" if isinstance(module, str) else t.__qualname__


def type_counts() -> collections.Counter[str]:
    """Live objects (those the collector tracks) per type."""
    return collections.Counter(_type_name(type(o)) for o in gc.get_objects())


# -- the load -----------------------------------------------------------------------------------------


@dataclass
class Interval:
    """What the workers did since the last sample (reset at each sample: bounded)."""

    done: int = 0
    frames: int = 0
    failed_as_expected: int = 0
    cancelled: int = 0
    streams_closed_early: int = 0
    streams_cancelled: int = 0
    checked_frames: int = 0
    latencies: list[float] = field(default_factory=list)
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: collections.Counter[str] = field(default_factory=collections.Counter)


class Soak:
    def __init__(self, eng: Any, args: argparse.Namespace, device: str, files: dict[str, list[str]],
                 ref: dict[str, list[tuple[tuple[int, ...], int]]], bad: list[BadInput]) -> None:
        self.eng, self.args, self.device = eng, args, device
        self.files = files
        self.good = [p for name in SETS for p in files[name]]
        self.ref = ref
        self.bad = bad
        self.iv = Interval()
        self.totals: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = collections.defaultdict(list)
        self.mean_latency = 0.05
        self.stop = asyncio.Event()
        self.running = asyncio.Event()  # cleared while a sample is taken
        self.running.set()
        self.busy = 0  # workers inside an operation

    # requests

    def _with_bad(self, req: Req, rng: random.Random, *, always: bool = False) -> Req:
        if not always and rng.random() >= self.args.bad_share:
            return req
        bad = rng.choice(self.bad)
        at = rng.randrange(len(req.paths) + 1)
        req.paths.insert(at, bad.path)
        req.ids.insert(at, bad.frame_ids(rng))
        req.bad = bad
        return req

    def random_request(self, rng: random.Random) -> Req:
        paths: list[str] = []
        ids: list[int] = []
        for p in rng.sample(self.good, rng.randint(1, min(4, len(self.good)))):
            picks = sorted(rng.sample(range(len(self.ref[p])), rng.randint(1, 3)))
            paths += [p] * len(picks)
            ids += picks
        return self._with_bad(Req(paths, ids), rng)

    def read_on_run(self, rng: random.Random) -> list[Req]:
        chosen = rng.sample(self.files[rng.choice(SETS)], rng.randint(1, min(3, len(self.files[SETS[0]]))))
        per, count = rng.choice((1, 2, 4)), rng.randint(8, 32)
        starts = {p: rng.randrange(max(1, len(self.ref[p]) - per * count + 1)) for p in chosen}
        reqs = []
        for t in range(count):
            paths: list[str] = []
            ids: list[int] = []
            for p in chosen:
                run = [f for f in range(starts[p] + t * per, starts[p] + (t + 1) * per) if f < len(self.ref[p])]
                paths += [p] * len(run)
                ids += run
            reqs.append(Req(paths, ids))
        if rng.random() < self.args.bad_share:
            j = rng.randrange(count)
            reqs[j] = self._with_bad(reqs[j], rng, always=True)
        return reqs

    # outcomes

    def _problem(self, kind: str, text: str) -> None:
        self.iv.problems[kind] += 1
        self.totals[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_KEPT:
            self.examples[kind].append(text)
            print(f"problem {kind}: {text}", flush=True)  # now: a run cut short still tells

    def finish(self, req: Req, frames: Any, exc: BaseException | None, latency: float, rng: random.Random) -> None:
        iv = self.iv
        iv.latencies.append(latency)
        self.mean_latency += 0.05 * (latency - self.mean_latency)
        where = f"{len(req.paths)} frames of {len(set(req.paths))} files"
        if latency > self.args.bound_s:
            self._problem("over_bound", f"{latency:.2f} s: {where}")
        if exc is not None:
            if req.bad is None:
                self._problem("unexpected_error", f"{type(exc).__name__}: {exc} ({where})")
            elif type(exc) is not req.bad.expected:
                self._problem("wrong_error", f"{req.bad.kind}: {type(exc).__name__} (want "
                                             f"{req.bad.expected.__name__}): {exc}")
            else:
                iv.failed_as_expected += 1
                self.totals["failed_as_expected"] += 1
            return
        if req.bad is not None:
            self._problem("bad_succeeded", f"{req.bad.kind}: {req.bad.path} returned frames")
            return
        iv.done += 1
        iv.frames += len(frames)
        self.totals["done"] += 1
        self.totals["frames"] += len(frames)
        if len(frames) != len(req.ids):
            self._problem("shape", f"{len(frames)} frames for {len(req.ids)} ids")
            return
        check = rng.random() < self.args.check_share
        for p, fid, f in zip(req.paths, req.ids, frames):
            shape, crc = self.ref[p][fid]
            if tuple(f.shape) != shape or f.dtype != torch.uint8 or f.device.type != self.device:
                self._problem("shape", f"{Path(p).name}[{fid}]: {tuple(f.shape)} {f.dtype} {f.device}, want {shape}")
            elif check:
                iv.checked_frames += 1
                self.totals["checked_frames"] += 1
                if _crc(f) != crc:
                    self._problem("mismatch", f"{Path(p).name}[{fid}] differs from the reference")

    def count(self, what: str) -> None:
        """A request cancelled (``cancelled``) or a stream run cut short (``streams_closed_early``,
        ``streams_cancelled``)."""
        setattr(self.iv, what, getattr(self.iv, what) + 1)
        self.totals[what] += 1

    def problems(self) -> dict[str, int]:
        return {k: self.totals[k] for k in PROBLEMS if self.totals[k]}

    # operations

    async def op_decode(self, rng: random.Random) -> None:
        req = self.random_request(rng)
        t0 = time.perf_counter()
        task = asyncio.ensure_future(self.eng.decode(req.paths, req.ids))
        if rng.random() < DECODE_CANCEL_SHARE:
            await asyncio.wait({task}, timeout=rng.uniform(0, 2 * self.mean_latency))
            task.cancel()
        await asyncio.wait({task})
        self._settle(req, task, time.perf_counter() - t0, rng)

    async def op_submit(self, rng: random.Random) -> None:
        req = self.random_request(rng)
        t0 = time.perf_counter()
        try:
            fut = self.eng.submit(req.paths, req.ids)
        except Exception as exc:  # noqa: BLE001 - an error raised at once is the request's outcome
            self.finish(req, None, exc, time.perf_counter() - t0, rng)
            return
        if rng.random() < SUBMIT_CANCEL_SHARE:
            await asyncio.wait({fut}, timeout=rng.uniform(0, 2 * self.mean_latency))
            fut.cancel()
        await asyncio.wait({fut})
        self._settle(req, fut, time.perf_counter() - t0, rng)

    def _settle(self, req: Req, fut: asyncio.Future[Any], latency: float, rng: random.Random) -> None:
        if fut.cancelled():
            self.count("cancelled")
        else:
            exc = fut.exception()
            self.finish(req, None if exc else fut.result(), exc, latency, rng)

    async def op_stream(self, rng: random.Random) -> None:
        reqs = self.read_on_run(rng)
        depth = rng.randint(2, 8)
        roll = rng.random()
        close_after = rng.randint(1, len(reqs)) if roll < STREAM_EARLY_CLOSE_SHARE else None
        cancel = STREAM_EARLY_CLOSE_SHARE <= roll < STREAM_EARLY_CLOSE_SHARE + STREAM_CANCEL_SHARE
        source: Iterable[tuple[list[str], list[int]]] = [(r.paths, r.ids) for r in reqs]
        if rng.random() < 0.5:
            source = iter(list(source))
        consumed = 0
        resumed: list[float] = []  # when the consumer asked for the next result: the engine pulls one more

        async def consume() -> None:
            nonlocal consumed
            t_start = time.perf_counter()
            async with contextlib.aclosing(self.eng.stream(source, depth=depth)) as stream:
                it = stream.__aiter__()
                while consumed < len(reqs):
                    try:
                        frames = await it.__anext__()
                    except StopAsyncIteration:
                        break
                    except Exception as exc:  # noqa: BLE001 - this request's error; the stream has ended
                        pulled = resumed[consumed - depth] if consumed >= depth else t_start
                        self.finish(reqs[consumed], None, exc, time.perf_counter() - pulled, rng)
                        consumed += 1
                        return
                    pulled = resumed[consumed - depth] if consumed >= depth else t_start
                    self.finish(reqs[consumed], frames, None, time.perf_counter() - pulled, rng)
                    consumed += 1
                    resumed.append(time.perf_counter())
                    if consumed == close_after:
                        return

        task = asyncio.ensure_future(consume())
        if cancel:
            await asyncio.wait({task}, timeout=rng.uniform(0, len(reqs) * self.mean_latency / 2))
            task.cancel()
        await asyncio.wait({task})
        if task.cancelled():
            self.count("streams_cancelled")  # the requests in flight are withdrawn by the stream
        elif task.exception() is not None:
            exc = task.exception()
            self._problem("unexpected_error", f"stream run: {type(exc).__name__}: {exc}")
        elif consumed == close_after and consumed < len(reqs):
            self.count("streams_closed_early")

    async def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        ops = {"decode": self.op_decode, "submit": self.op_submit, "stream": self.op_stream}
        names, weights = zip(*OPS)
        while True:
            await self.running.wait()
            if self.stop.is_set():
                return
            name = rng.choices(names, weights)[0]
            self.iv.ops[name] += 1
            self.totals["op_" + name] += 1
            self.busy += 1
            try:
                await ops[name](rng)
            except Exception as exc:  # noqa: BLE001 - a bug of the soak or the engine: counted, the soak goes on
                self._problem("unexpected_error", f"{name}: {type(exc).__name__}: {exc}")
            finally:
                self.busy -= 1

    async def quiesce(self, timeout_s: float) -> bool:
        """Let the workers finish their operations and start none; wait until the engine is idle too.
        Returns whether it got there within ``timeout_s`` (``resume`` lets them go on)."""
        self.running.clear()
        end = time.perf_counter() + timeout_s
        while time.perf_counter() < end:
            st = self.eng.stats()
            if not (self.busy or st["requests_in_flight"] or st["queue_depth"] or st["jobs_in_flight"]):
                return True
            await asyncio.sleep(0.01)
        return False

    def resume(self) -> None:
        self.running.set()

    # warm-up

    async def prime(self) -> None:
        """One frame of every GOP of every file, and each bad input once."""
        rng = random.Random(self.args.seed)
        for p in self.good:
            info = await self.eng.info(p)
            ids = [min(k + rng.randrange(30), info.num_frames - 1) for k in info.keyframes]
            self.finish(Req([p] * len(ids), ids), await self.eng.decode(p, ids), None, 0.0, rng)
        for bad in self.bad:
            req = Req([bad.path], [bad.frame_ids(rng)], bad)
            try:
                frames, exc = await self.eng.decode(req.paths, req.ids), None
            except Exception as e:  # noqa: BLE001
                frames, exc = None, e
            self.finish(req, frames, exc, 0.0, rng)

    def take_interval(self, seconds: float) -> dict[str, Any]:
        iv, self.iv = self.iv, Interval()
        lat = sorted(iv.latencies)
        return {
            "seconds": seconds, "done": iv.done, "frames": iv.frames, "frames_per_s": iv.frames / seconds,
            "failed_as_expected": iv.failed_as_expected, "cancelled": iv.cancelled,
            "streams_closed_early": iv.streams_closed_early, "streams_cancelled": iv.streams_cancelled,
            "checked_frames": iv.checked_frames, "ops": dict(iv.ops), "problems": dict(iv.problems),
            "latency_max_s": lat[-1] if lat else None,
            "latency_p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        }


# -- main ---------------------------------------------------------------------------------------------


def _git_meta() -> dict[str, Any]:
    """The commit run: a ``COMMIT`` file beside the package (an archive of a commit, as device runs
    use: git there would describe the checkout around it), else git's HEAD and the package's changes."""
    root = HERE.parent
    with contextlib.suppress(OSError):
        commit = (root / "COMMIT").read_text().strip()
        if commit:
            return {"commit": commit, "dirty": [], "commit_from": "COMMIT file (an archive of that commit)"}
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
        changed = subprocess.run(["git", "status", "--porcelain", "--", "asyncdecode"], cwd=root,
                                 capture_output=True, text=True, timeout=10).stdout.splitlines()
        out["dirty"] = sorted(line[3:] for line in changed)
    return out


def write_checkpoint(res: dict[str, Any], prefix: Path) -> None:
    """The samples so far, as PREFIX.partial.json (replaced whole, never half written): a run cut off (a lent
    machine taken back, a kill) still leaves its figures, which ``--rejudge`` reads."""
    tmp = prefix.with_suffix(".partial.json.tmp")
    tmp.write_text(json.dumps({**res, "partial": True}, default=str))
    os.replace(tmp, prefix.with_suffix(".partial.json"))


WARM_STEP_S = 30.0
"""During the warm-up the process and the decoder pool are looked at this often (not judged: printed and kept)."""


async def warm_up(eng: Any, seconds: float, t_warm: float) -> list[dict[str, Any]]:
    """Let the load run ``seconds``, noting every :data:`WARM_STEP_S` the RSS and the decoders made and
    free (when does the pool level?)."""
    progress = []
    end = time.perf_counter() + seconds
    while (left := end - time.perf_counter()) > 0:
        await asyncio.sleep(min(WARM_STEP_S, left))
        st = eng.stats()
        row = {"t_s": round(time.perf_counter() - t_warm, 1), "rss_mib": round(_status_kb().get("VmRSS", 0) / 1024, 1),
               "decoders_created": st.get("decoders_created"), "decoders_free": st.get("decoders_free")}
        progress.append(row)
        print(f"warm-up t={row['t_s']:5.0f}s rss {row['rss_mib']:6.1f} MiB decoders made {row['decoders_created']} "
              f"free {row['decoders_free']}", flush=True)
    return progress


async def soak(args: argparse.Namespace, device: str, files: dict[str, list[str]],
               ref: dict[str, list[tuple[tuple[int, ...], int]]], bad: list[BadInput],
               res: dict[str, Any], prefix: Path) -> None:
    from asyncdecode import Engine

    gc.collect()
    res["end"]["before_open"] = process_sample(device, names=True)
    eng = Engine(device=device)
    await eng.__aenter__()
    s = Soak(eng, args, device, files, ref, bad)
    t_warm = time.perf_counter()
    await s.prime()
    workers = [asyncio.ensure_future(s.worker(args.seed * 1000 + i)) for i in range(args.workers)]
    res["warm_up_progress"] = await warm_up(eng, args.warm_s, t_warm)
    res["warm_up_s"] = time.perf_counter() - t_warm
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    warm_totals = dict(s.totals)
    first_stats = eng.stats()
    first_types: collections.Counter[str] | None = None
    first_snap = None
    quiet_timeout = 2 * args.bound_s + 10
    t0 = last_resume = time.perf_counter()
    busy0, own0 = busy_cpu_s(), time.process_time()
    end = t0 + 60 * args.minutes
    prev = first_stats
    k = 0
    while True:
        # under load: as the process is; then quiet: no request in flight, after gc
        t_pause = time.perf_counter()
        stats = eng.stats()
        load = process_sample(device, objects=False)
        interval = s.take_interval(t_pause - last_resume)
        if k == 0:
            interval = None  # the warm-up's
        quiet = await s.quiesce(quiet_timeout)
        gc.collect()
        sample = {"t_s": t_pause - t0, **process_sample(device), **{key: eng.stats().get(key) for key in ENGINE_KEYS},
                  "quiet": quiet, "quiesce_s": time.perf_counter() - t_pause,
                  **{"load_" + key: v for key, v in load.items()},
                  **{"load_" + key: stats[key] for key in ("requests_in_flight", "queue_depth", "jobs_in_flight")}}
        if interval is not None:
            interval["engine"] = {key: stats[key] - prev[key] for key in ENGINE_DELTAS}
            sample["frames_per_s"] = interval["frames_per_s"]
        sample["interval"] = interval
        prev = stats
        res["samples"].append(sample)
        write_checkpoint(res, prefix)
        if k == 0:
            first_types = type_counts()
            if args.tracemalloc:
                first_snap = tracemalloc.take_snapshot()
        iv = interval or {}
        print(f"t={sample['t_s']:5.0f}s rss {sample['rss_mib']:6.1f} (load {load['rss_mib']:6.1f}) MiB heap "
              f"{sample.get('heap_in_use_mib', 0):5.1f} (load {load.get('heap_in_use_mib', 0):5.1f}) fds "
              f"{sample['open_fds']} threads {sample['threads_os']} objects {sample['py_objects']} gop cache "
              f"{sample['gop_cache_bytes'] / MiB:.1f} MiB decoders {sample['decoders_created']}/"
              f"{sample['decoders_free']} | done {iv.get('done', '-')} failed {iv.get('failed_as_expected', '-')} "
              f"cancelled {iv.get('cancelled', '-')} {_f(iv.get('frames_per_s'), '.0f')} frames/s "
              f"problems {s.problems() or 'none'}{'' if quiet else ' (NOT QUIET)'}", flush=True)
        if t_pause >= end - 1e-3:
            break
        s.resume()
        last_resume = time.perf_counter()
        k += 1
        await asyncio.sleep(max(0.0, min(t0 + k * args.sample_s, end) - time.perf_counter()))
    # the workers are paused: the state is the last sample's
    wall, own = time.perf_counter() - t0, time.process_time() - own0
    res["cpu"] = {"own_cores": own / wall, "other_processes_cores": max(0.0, (busy_cpu_s() - busy0 - own) / wall)}
    last_types = type_counts()
    res["object_growth"] = (last_types - first_types).most_common(12) if first_types is not None else []
    del first_types, last_types
    if first_snap is not None:
        snap = tracemalloc.take_snapshot()
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        top = snap.filter_traces(filters).compare_to(first_snap.filter_traces(filters), "lineno")
        res["tracemalloc_top"] = [str(x) for x in top[:15]]
        del snap, first_snap, top
        tracemalloc.stop()
    res["end"]["last_in_run"] = {key: v for key, v in res["samples"][-1].items()
                                 if key != "interval" and not key.startswith("load_")}
    s.stop.set()
    s.resume()
    _, late = await asyncio.wait(workers, timeout=quiet_timeout)
    for w in late:
        w.cancel()
    if late:
        res["notes"].append(f"{len(late)} worker(s) had not stopped {quiet_timeout:.0f} s after the end; cancelled")
        await asyncio.wait(late)
    res["engine_end"] = eng.stats()
    res["engine_counts"] = {key: res["engine_end"][key] - first_stats[key] for key in ENGINE_DELTAS}
    await eng.aclose()
    del s.eng, eng
    for _ in range(3):
        gc.collect()
    await asyncio.sleep(0.5)
    if device == "cuda":
        torch.cuda.synchronize()
    res["end"]["after_close"] = process_sample(device, names=True)
    res["totals"] = {key: v - warm_totals.get(key, 0) for key, v in s.totals.items()}
    res["totals_with_warm_up"] = dict(s.totals)
    res["examples"] = dict(s.examples)
    lat = [sm["interval"]["latency_max_s"] for sm in res["samples"]
           if sm.get("interval") and sm["interval"]["latency_max_s"] is not None]
    res["latency_max_s"] = max(lat) if lat else None


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="engine device (default: cuda when torch sees a GPU, else cpu)")
    ap.add_argument("--minutes", type=float, default=None, help="measured minutes (default 30 on cuda, 3 on cpu)")
    ap.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples (default 60)")
    ap.add_argument("--warm-s", type=float, default=None,
                    help="seconds of load before the first sample (default: one sample interval)")
    ap.add_argument("--files", type=int, default=None, help="files per set (default 6 on cpu, 24 on cuda)")
    ap.add_argument("--workers", type=int, default=None, help="concurrent operations (default 4 on cpu, 16 on cuda)")
    ap.add_argument("--bound-s", type=float, default=10.0, help="no request may take longer (default 10 s)")
    ap.add_argument("--check-share", type=float, default=0.25, help="share of requests whose pixels are compared")
    ap.add_argument("--bad-share", type=float, default=0.1, help="share of requests carrying a bad input")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="trace Python allocations with this many frames from the first sample (slow; default off)")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "matrix", help="videos (made if absent)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output prefix: PREFIX.json, .md, .png/.svg (default benchmarks/results/soak_<device>)")
    ap.add_argument("--rejudge", type=Path, default=None, metavar="JSON",
                    help="judge an earlier run's samples again by today's rules: rewrites its .json and .md "
                         "(a PREFIX.partial.json of a run cut off: prints its growth table)")
    args = ap.parse_args(argv)
    if args.rejudge is not None:
        res = json.loads(args.rejudge.read_text())
        res["results"] = judge(res)
        if res.get("partial"):  # a run cut off: its samples' growth, nothing of its end
            print("\n".join([f"# soak cut off after {res['samples'][-1]['t_s'] / 60:.1f} min "
                              f"({len(res['samples'])} samples)", "", *growth_table(res)]) if res["samples"] else
                  "no samples")
            return 0
        args.rejudge.write_text(json.dumps(res, indent=1, default=str))
        args.rejudge.with_suffix(".md").write_text(markdown(res))
        print(f"judged again: {args.rejudge.with_suffix('.md')}")
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.device = device
    args.minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES[device]
    args.warm_s = args.warm_s if args.warm_s is not None else args.sample_s
    args.files = min(24, args.files or DEFAULT_FILES[device])
    args.workers = args.workers or DEFAULT_WORKERS[device]
    prefix = args.out or HERE / "results" / f"soak_{device}"
    prefix.parent.mkdir(parents=True, exist_ok=True)

    files, encode = matrix_bench.ensure_files(args.data.resolve(), {name: args.files for name in SETS})
    bad = make_bad_inputs(args.data.resolve() / "soak_bad", files["uniform"][0],
                          matrix_bench.set_specs("uniform")[0].frames)
    good = [p for name in SETS for p in files[name]]
    print(f"reference decode of {len(good)} files in a child process ...", flush=True)
    t_ref = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ref = pool.submit(reference_digests, good, device).result()
    reference_s = time.perf_counter() - t_ref
    if device == "cuda":
        torch.cuda.init()  # the context exists before the first sample, as it will during the run

    res: dict[str, Any] = {
        "meta": {**matrix_bench.machine_meta(device), **_git_meta()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "files_per_set": {name: len(files[name]) for name in SETS},
        "files": {name: [Path(p).name for p in files[name]] for name in SETS},
        "bad_inputs": [{"kind": b.kind, "file": Path(b.path).name, "expected": b.expected.__name__} for b in bad],
        "encode": encode, "reference_s": reference_s, "samples": [], "end": {}, "notes": [],
    }
    if MALLINFO is None:
        res["notes"].append("no glibc mallinfo2 here: heap figures left out")
    print(f"soak on {device} for {args.minutes} min, a sample every {args.sample_s} s, warm-up {args.warm_s} s, "
          f"{args.workers} workers", flush=True)
    asyncio.run(soak(args, device, files, ref, bad, res, prefix))
    gc.collect()
    res["end"]["after_loop"] = process_sample(device, names=True)  # asyncio.run shut its default executor down
    if device == "cuda":
        torch.cuda.empty_cache()
    if malloc_trim():
        res["end"]["after_trim"] = process_sample(device)

    res["results"] = judge(res)
    res["close_verdict"] = close_verdict(res["end"])
    res["elapsed_s"] = time.perf_counter() - t_start
    res["plot"] = write_plot(res, prefix)
    prefix.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    prefix.with_suffix(".partial.json").unlink(missing_ok=True)
    md = markdown(res)
    prefix.with_suffix(".md").write_text(md)
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
