"""The NVDEC benchmark behind ``asyncdecode bench``: the hardware's ceiling, PyNvVideoCodec as users
run it, and asyncdecode, side by side on the same files. Needs a CUDA GPU with NVDEC and PyNvVideoCodec.

It makes its video set if absent (:func:`make_dataset`: 6 cameras x 4 clips, 1600x900 HEVC, GOP 30,
no B-frames, 10 fps, 235 frames, structured moving content at about 150 kbit per frame) and measures,
in one process on those files:

(a) raw NVDEC capacity (:func:`measure_raw_nvdec`): K parallel PyNvVideoCodec decoder sessions fed
    from memory by Python threads, no conversion, K = 1, 7, 14, 28, 42, sequential (whole files) and
    random (keyframe .. random target, then flush);
(b) PyNvVideoCodec as users run it (:func:`measure_simple_decoder`): SimpleDecoder, one per camera,
    RGB output, one thread per camera (random and sequential), and ThreadedDecoder (sequential, one
    per camera);
(c) asyncdecode on cuda (:func:`measure_engine`): random (one random frame per camera per step, many
    steps in flight) and sequential (the clips read from start to end, 16 frames of each camera per
    request), host CPU seconds per output frame, with each NVDEC library asked for; and both at
    several decoder-session counts;

plus the fused NV12->RGB kernel against plain torch ops on one 1600x900 frame
(:func:`measure_color_kernel`) and the host CPU of each PyNvVideoCodec ``Decode`` call, where the
per-frame CPU goes (:func:`measure_decode_calls`). Each contender runs twice, interleaved, and each
run is also set against the raw sequential rate measured right before it (sequential rates drift by
tens of percent over a session on a shared machine).

Run it from the command line or from Python (not from a running event loop: it runs its own)::

    asyncdecode bench [--data DIR] [--out DIR] [--seconds 4] [--quick] [--sessions N]
    python benchmarks/nvdec_bench.py [...]   # the same, with the repository's data and results folders

    from asyncdecode import bench
    results = bench.run(data="bench/data", out="bench", quick=True)

It writes ``nvdec_bench.json`` (every measurement, the summary ratios, and the machine: GPU, driver,
versions), ``nvdec_bench.md`` (tables of the same, also printed) and ``nvdec_bench.png`` (a chart, if
matplotlib is installed) to ``out``; :func:`run` returns what the JSON holds. Where NVDEC cannot be
used it stops before making any video, with :class:`~asyncdecode.errors.BackendUnavailableError`
saying why. ``docs/bench.md`` says how to read the results.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime as dt
import itertools
import json
import os
import platform
import random
import subprocess
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import Engine, EngineConfig, __version__
from ._backends import make_backend
from .gop import GopBundle, extract_gops
from .media import probe

__all__ = [
    "CAMERAS", "CLIPS", "FPS", "FRAMES", "GOP", "HEIGHT", "LIBRARIES", "WIDTH", "main", "make_dataset",
    "measure_color_kernel", "measure_decode_calls", "measure_engine", "measure_raw_nvdec", "measure_simple_decoder",
    "run",
]

#: The benchmark set: cameras per clip, clips, and each video's frames, GOP, frame rate and size.
CAMERAS, CLIPS, FRAMES, GOP, FPS, WIDTH, HEIGHT = 6, 4, 235, 30, 10, 1600, 900

#: The NVDEC libraries asyncdecode is measured with by default; the first is the one the summary rates.
LIBRARIES = ("libnvcuvid", "PyNvVideoCodec")


# -- data set -----------------------------------------------------------------------------------------


def _frame(index: int, seed: int, texture: np.ndarray) -> np.ndarray:
    from .testing import synthetic_frame

    img = synthetic_frame(index, WIDTH, HEIGHT, seed=seed).astype(np.int16)
    shift = (5 * index + 37 * seed) % texture.shape[1]  # texture panning: detail that moves
    tex = np.roll(texture, shift, axis=1)[:HEIGHT, :WIDTH]
    return np.clip(img + tex[..., None], 0, 255).astype(np.uint8)


def _encode(path: Path, seed: int, kbit_per_frame: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    coarse = rng.integers(-40, 40, size=(HEIGHT // 8 + 1, WIDTH // 8 + 1)).astype(np.int16)
    texture = np.kron(coarse, np.ones((8, 8), np.int16))  # 8x8 blocks: structure, not noise
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        st = out.add_stream("libx265", rate=FPS)
        st.width, st.height, st.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        st.time_base = Fraction(1, FPS)
        rate = kbit_per_frame * FPS
        st.options = {"preset": "superfast", "x265-params": (
            f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:open-gop=0:bitrate={rate}:"
            f"vbv-maxrate={rate}:vbv-bufsize={2 * rate}:log-level=error:info=0")}
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(_frame(i, seed, texture), format="rgb24")
            frame.pts = i
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    tmp.rename(path)


def make_dataset(root: str | os.PathLike[str], kbit_per_frame: int = 150) -> list[list[str]]:
    """The benchmark set under ``root``: ``clips[k][camera]`` paths (:data:`CLIPS` x :data:`CAMERAS`).

    Files already there are kept; missing ones are encoded (libx265, in parallel processes, a few
    minutes for the whole set). ``kbit_per_frame`` is the target bit rate, part of the file names.
    """
    root = Path(root)
    todo, clips = [], []
    for k in range(CLIPS):
        row = []
        for c in range(CAMERAS):
            p = root / f"clip{k}" / f"cam{c}_{WIDTH}x{HEIGHT}_hevc_gop{GOP}_{kbit_per_frame}k.mp4"
            row.append(str(p))
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                todo.append((p, 1000 * k + c))
        clips.append(row)
    if todo:
        print(f"encoding {len(todo)} files ({WIDTH}x{HEIGHT} HEVC, {FRAMES} frames each) ...", flush=True)
        with concurrent.futures.ProcessPoolExecutor(min(len(todo), os.cpu_count() or 1)) as ex:
            list(ex.map(_encode, [p for p, _ in todo], [s for _, s in todo], [kbit_per_frame] * len(todo)))
    return clips


# -- contenders ---------------------------------------------------------------------------------------


def _run_threads(worker, n: int, seconds: float, stop: list[float], barrier: threading.Barrier) -> tuple[float, float]:
    """Start ``n`` workers, release them together, let them run ``seconds``; (wall s, process cpu s)."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + 3600.0  # set before the start: no thread may see 0 and quit
    barrier.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    stop[0] = t0 + seconds
    for t in threads:
        t.join()
    return time.perf_counter() - t0, time.process_time() - c0


def measure_raw_nvdec(bundles_by_file: list[list[GopBundle]], k: int, pattern: Literal["sequential", "random"],
                      seconds: float, seed: int) -> dict:
    """Raw NVDEC capacity: ``k`` Python threads, each with its own PyNvVideoCodec decoder session, fed
    Annex B packets from memory, no conversion, for ``seconds``.

    ``bundles_by_file`` holds every file's GOPs (:func:`asyncdecode.gop.extract_gops`).
    ``"sequential"`` decodes whole files; ``"random"`` a random GOP up to a random target, then
    flushes. Returns ``decoded`` pictures, ``decoded_per_s`` and the process's ``cpu_s``.
    """
    import PyNvVideoCodec as nvc

    datas = [[[np.frombuffer(bytes(b.packet(i)), np.uint8) for i in range(len(b))] for b in file]
             for file in bundles_by_file]
    counts = [0] * k
    barrier = threading.Barrier(k + 1)
    stop = [0.0]

    def worker(i: int) -> None:
        dec = nvc.CreateDecoder(gpuid=0, codec=nvc.cudaVideoCodec.HEVC, cudacontext=0, cudastream=0,
                                usedevicememory=True)
        rng = random.Random(seed + i)
        eos = nvc.PacketData()
        eos.bsl, eos.bsl_data = 0, 0
        barrier.wait()
        done = 0
        f = i
        while time.perf_counter() < stop[0]:
            file = datas[f % len(datas)]
            f += k
            if pattern == "sequential":
                for gop in file:
                    for a in gop:
                        pkt = nvc.PacketData()
                        pkt.bsl_data, pkt.bsl = a.ctypes.data, a.size
                        done += len(dec.Decode(pkt))
                    if time.perf_counter() >= stop[0]:
                        break
            else:
                gop = file[rng.randrange(len(file))]
                target = rng.randrange(len(gop))
                for a in gop[: target + 1]:
                    pkt = nvc.PacketData()
                    pkt.bsl_data, pkt.bsl = a.ctypes.data, a.size
                    done += len(dec.Decode(pkt))
            done += len(dec.Decode(eos))
        counts[i] = done

    wall, cpu = _run_threads(worker, k, seconds, stop, barrier)
    return {"sessions": k, "pattern": pattern, "decoded": sum(counts), "seconds": wall,
            "decoded_per_s": sum(counts) / wall, "cpu_s": cpu}


def measure_simple_decoder(paths: list[str], pattern: Literal["sequential", "random"], seconds: float, seed: int,
                           threaded: bool = False) -> dict:
    """PyNvVideoCodec as users run it: a SimpleDecoder (or, ``threaded``, a ThreadedDecoder, sequential
    only) per file of ``paths``, RGB output, one thread each, for ``seconds``. Returns ``frames``,
    ``frames_per_s`` and host ``cpu_ms_per_frame``."""
    import PyNvVideoCodec as nvc

    counts = [0] * len(paths)
    stop = [0.0]
    barrier = threading.Barrier(len(paths) + 1)

    def worker(i: int) -> None:
        rng = random.Random(seed + i)
        if threaded:
            dec = nvc.ThreadedDecoder(paths[i], buffer_size=12, cuda_context=0, cuda_stream=0,
                                      use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
        else:
            dec = nvc.SimpleDecoder(paths[i], gpu_id=0, use_device_memory=True,
                                    output_color_type=nvc.OutputColorType.RGB)
        barrier.wait()
        n = 0
        while time.perf_counter() < stop[0]:
            if threaded:
                got = dec.get_batch_frames(8)
                if not got:
                    dec = nvc.ThreadedDecoder(paths[i], buffer_size=12, cuda_context=0, cuda_stream=0,
                                              use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
                    continue
                for fr in got:
                    torch.from_dlpack(fr)
                n += len(got)
            elif pattern == "random":
                torch.from_dlpack(dec[rng.randrange(FRAMES)])
                n += 1
            else:
                got = dec.get_batch_frames(8)
                if not got:  # end of file: start it again
                    dec = nvc.SimpleDecoder(paths[i], gpu_id=0, use_device_memory=True,
                                            output_color_type=nvc.OutputColorType.RGB)
                    continue
                for fr in got:
                    torch.from_dlpack(fr)
                n += len(got)
        counts[i] = n

    wall, cpu = _run_threads(worker, len(paths), seconds, stop, barrier)
    torch.cuda.synchronize()
    frames = sum(counts)
    return {"frames": frames, "seconds": wall, "frames_per_s": frames / wall, "cpu_ms_per_frame": 1e3 * cpu / frames}


async def measure_engine(eng: Engine, clips: list[list[str]], pattern: Literal["sequential", "random"], seconds: float,
                         seed: int, depth: int) -> dict:
    """asyncdecode: ``eng.stream`` with ``depth`` requests in flight, for ``seconds``.

    ``"random"``: one random frame of every camera of a random clip per request; ``"sequential"``:
    the clips read from start to end, 16 consecutive frames of every camera per request. Returns
    ``frames_per_s``, host ``cpu_ms_per_frame``, ``decoded_per_returned`` and the decoder threads'
    decode and convert time per frame.
    """
    rng = random.Random(seed)

    def requests():
        if pattern == "random":
            while True:
                clip = clips[rng.randrange(len(clips))]
                yield clip, [rng.randrange(FRAMES) for _ in clip]
        else:  # each clip from start to end, 16 consecutive frames of every camera per request
            run = 16
            for k in itertools.count(rng.randrange(len(clips))):
                clip = clips[k % len(clips)]
                for start in range(0, FRAMES, run):
                    ids = range(start, min(start + run, FRAMES))
                    yield [p for p in clip for _ in ids], [j for _ in clip for j in ids]

    before = eng.stats()
    frames = 0
    c0, t0 = time.process_time(), time.perf_counter()
    agen = eng.stream(requests(), depth=depth)
    async for got in agen:
        frames += len(got)
        if time.perf_counter() - t0 >= seconds:
            break
    await agen.aclose()
    torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = eng.stats()
    decoded = after["frames_decoded"] - before["frames_decoded"]
    return {"frames": frames, "seconds": wall, "frames_per_s": frames / wall,
            "cpu_ms_per_frame": 1e3 * cpu / frames, "decoded_per_returned": decoded / frames,
            "thread_convert_ms_per_frame": 1e3 * (after["convert_s"] - before["convert_s"]) / frames,
            "thread_decode_ms_per_frame": 1e3 * (after["decode_s"] - before["decode_s"]) / frames}


async def _warm_up(eng: Engine, clips: list[list[str]], pattern: str, depth: int) -> None:
    """A second of a pattern before it is timed: sequential reading keeps about 16 times the frames
    of random access in flight, and the first time it does, the CUDA allocator grows its pool for them
    (a training loop pays that once, not per step)."""
    if pattern == "sequential":
        await measure_engine(eng, clips, pattern, 1.0, seed=97, depth=depth)


def measure_decode_calls(bundles_by_file: list[list[GopBundle]], seconds: float = 2.0) -> dict:
    """Host CPU and wall time of one PyNvVideoCodec ``Decode`` call (one session, whole GOPs), by the
    frames it returned: where the per-frame CPU goes."""
    import PyNvVideoCodec as nvc

    dec = nvc.CreateDecoder(gpuid=0, codec=nvc.cudaVideoCodec.HEVC, cudacontext=0, cudastream=0, usedevicememory=True)
    eos = nvc.PacketData()
    eos.bsl, eos.bsl_data = 0, 0
    gops = [[np.frombuffer(bytes(b.packet(i)), np.uint8) for i in range(len(b))] for f in bundles_by_file for b in f]
    acc: dict[str, list[float]] = {}
    end, g = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        for a in gops[g % len(gops)] + [None]:
            pkt = eos
            if a is not None:
                pkt = nvc.PacketData()
                pkt.bsl_data, pkt.bsl = a.ctypes.data, a.size
            c, w = time.thread_time(), time.perf_counter()
            n = len(dec.Decode(pkt))
            c, w = time.thread_time() - c, time.perf_counter() - w
            key = f"{'end of stream' if a is None else 'packet'}, {n} frame(s) out"
            row = acc.setdefault(key, [0, 0.0, 0.0])
            row[0] += 1
            row[1] += c
            row[2] += w
        g += 1
    return {k: {"calls": v[0], "cpu_us": 1e6 * v[1] / v[0], "wall_us": 1e6 * v[2] / v[0]} for k, v in acc.items()}


def measure_color_kernel() -> dict:
    """Microseconds per 1600x900 NV12->RGB conversion: asyncdecode's fused kernel against plain torch ops."""
    from ._backends._cuda_color import nv12_to_output
    from ._output import ColorParams, OutputSpec

    y = torch.randint(0, 256, (HEIGHT, WIDTH), dtype=torch.uint8, device="cuda")
    uv = torch.randint(0, 256, (HEIGHT // 2, WIDTH // 2, 2), dtype=torch.uint8, device="cuda")
    params = ColorParams.resolve("bt709", "limited", "yuv420p")
    spec = OutputSpec()

    def torch_ops():
        yf = (y.float() - 16) * (255 / 219)
        c = (uv.float() - 128) * (255 / 224)
        cu = c.repeat_interleave(2, 0).repeat_interleave(2, 1)
        r = yf + 1.5748 * cu[..., 1]
        g = yf - 0.1873 * cu[..., 0] - 0.4681 * cu[..., 1]
        b = yf + 1.8556 * cu[..., 0]
        return torch.stack([r, g, b], -1).clamp_(0, 255).round_().to(torch.uint8)

    out = {}
    for name, fn in (("fused_kernel_us", lambda: nv12_to_output(y, uv, params, spec)), ("torch_ops_us", torch_ops)):
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(200):
            fn()
        end.record()
        torch.cuda.synchronize()
        out[name] = start.elapsed_time(end) * 1e3 / 200
    return out


# -- the whole run ------------------------------------------------------------------------------------


def run(
    *,
    data: str | os.PathLike[str] = "asyncdecode-bench/data",
    out: str | os.PathLike[str] = "asyncdecode-bench",
    seconds: float = 4.0,
    quick: bool = False,
    sessions: int | None = None,
    libraries: Sequence[str] = LIBRARIES,
    delays: Sequence[int] = (),
    output_surfaces: Sequence[int] = (),
) -> dict[str, Any]:
    """Run the whole benchmark, print each measurement as it is made, write the results to ``out``.

    Args:
        data: The benchmark videos' folder; missing videos are made (:func:`make_dataset`).
        out: Where ``nvdec_bench.json``, ``.md`` and ``.png`` go; made if missing.
        seconds: Each measurement's length.
        quick: Fewer session counts (raw 1, 7, 28; asyncdecode 7, 28) and 2 s measurements.
        sessions: asyncdecode's decoder sessions (``EngineConfig.decoder_threads``); default: the
            engine's own.
        libraries: The NVDEC libraries asyncdecode is measured with (``EngineConfig.nvdec_library``);
            the summary rates the first.
        delays: Also measure sequential reading on libnvcuvid with each of these display delays for
            clips read on (0-4).
        output_surfaces: With ``delays``: also with each of these numbers of output surfaces per
            decoder; default: the engine's.

    Returns:
        What ``nvdec_bench.json`` holds: the measurements by contender (``raw``, ``raw_paired``,
        ``simple``, ``engine``, ``engine_other``, ``sweep``, ``tuning``, ``kernel``,
        ``decode_call_cpu``), the ratios in ``summary`` and the machine in ``meta``.

    Raises:
        BackendUnavailableError: NVDEC cannot be used here (before any video is made).
    """
    libraries = list(libraries)
    surfaces: list[int | None] = list(output_surfaces) or [None]
    secs = 2.0 if quick else seconds
    ks = (1, 7, 28) if quick else (1, 7, 14, 28, 42)
    sweep = (7, 28) if quick else (7, 10, 14, 28)

    make_backend("cuda")  # fails here, with the reason, where NVDEC cannot be used
    import PyNvVideoCodec as nvc

    clips = make_dataset(data)
    files = [p for clip in clips for p in clip]
    sizes = [os.path.getsize(p) for p in files]
    kbit = sum(sizes) * 8 / 1000 / (len(files) * FRAMES)
    print(f"{len(files)} files, {kbit:.0f} kbit/frame", flush=True)
    bundles = [extract_gops(p, list(probe(p).keyframes)) for p in files]
    res: dict = {"raw": [], "raw_paired": [], "simple": [], "engine": [], "engine_other": [], "sweep": [],
                 "tuning": [], "runs": 2, "libraries": libraries}

    for k in ks:
        for pattern in ("sequential", "random"):
            r = measure_raw_nvdec(bundles, k, pattern, secs, seed=k)
            res["raw"].append(r)
            print(f"raw K={k:2d} {pattern:10s} {r['decoded_per_s']:8.0f} decoded/s, "
                  f"{1e3 * r['cpu_s'] / r['decoded']:.3f} ms CPU per decoded frame", flush=True)

    def config(sessions: int | None, library: str | None = None) -> EngineConfig:
        return EngineConfig(decoder_threads=sessions, nvdec_library=library or libraries[0])

    async def engine_pass(rep: int, library: str) -> None:
        async with Engine(device="cuda", config=config(sessions, library)) as eng:
            for p in files:
                await eng.info(p)
            await measure_engine(eng, clips, "random", 1.0, seed=99, depth=64)  # warm-up: sessions, kernels
            for pattern, depth in (("random", 64), ("sequential", 16)):
                await _warm_up(eng, clips, pattern, depth)
                r = await measure_engine(eng, clips, pattern, secs, seed=rep, depth=depth)
                r.update(run=rep, pattern=pattern, depth=depth, threads=eng.stats()["decoder_threads"],
                         library=library)
                res["engine" if library == libraries[0] else "engine_other"].append(r)
                print(f"asyncdecode ({library}) run {rep} {pattern:10s} {r['frames_per_s']:8.0f} frames/s "
                      f"cpu {r['cpu_ms_per_frame']:.3f} ms/frame, {r['decoded_per_returned']:.2f} decoded/returned, "
                      f"thread time per frame: decode {r['thread_decode_ms_per_frame']:.3f} ms, "
                      f"convert {r['thread_convert_ms_per_frame']:.3f} ms", flush=True)

    async def engine_sweep() -> None:
        for k in sweep:
            async with Engine(device="cuda", config=config(k)) as eng:
                for p in files:
                    await eng.info(p)
                await measure_engine(eng, clips, "random", 1.0, seed=99, depth=64)
                for pattern, depth in (("random", 64), ("sequential", 16)):
                    await _warm_up(eng, clips, pattern, depth)
                    r = await measure_engine(eng, clips, pattern, secs, seed=k, depth=depth)
                    r.update(sessions=k, pattern=pattern)
                    res["sweep"].append(r)
                    print(f"asyncdecode sessions={k:2d} {pattern:10s} {r['frames_per_s']:6.0f} frames/s "
                          f"cpu {r['cpu_ms_per_frame']:.3f} ms/frame", flush=True)

    async def tuning() -> None:
        """Sequential reading on libnvcuvid by display delay (and output surfaces) for clips read on."""
        from ._backends import _cuvid, nvdec

        default_delay, default_surfaces = nvdec.READ_ON_DELAY, _cuvid._OUTPUT_SURFACES
        try:
            for delay in delays:
                for n in surfaces:
                    nvdec.READ_ON_DELAY = delay
                    _cuvid._OUTPUT_SURFACES = n or default_surfaces
                    async with Engine(device="cuda", config=config(sessions, "libnvcuvid")) as eng:
                        for p in files:
                            await eng.info(p)
                        await measure_engine(eng, clips, "sequential", 1.0, seed=98, depth=16)
                        r = await measure_engine(eng, clips, "sequential", secs, seed=delay, depth=16)
                    r.update(delay=delay, output_surfaces=_cuvid._OUTPUT_SURFACES)
                    res["tuning"].append(r)
                    print(f"asyncdecode (libnvcuvid) delay={delay} output surfaces={r['output_surfaces']} sequential "
                          f"{r['frames_per_s']:6.0f} frames/s cpu {r['cpu_ms_per_frame']:.3f} ms/frame", flush=True)
        finally:
            nvdec.READ_ON_DELAY, _cuvid._OUTPUT_SURFACES = default_delay, default_surfaces

    seq_best_k = max((r for r in res["raw"] if r["pattern"] == "sequential"),
                     key=lambda r: r["decoded_per_s"])["sessions"]
    for rep in (1, 2):
        # The raw ceiling again right before this run's contenders: sequential rates drift by tens of
        # percent over a session on a shared machine, so each run is also compared with its own.
        r = measure_raw_nvdec(bundles, seq_best_k, "sequential", secs, seed=100 + rep)
        r.update(run=rep)
        res["raw_paired"].append(r)
        print(f"raw K={seq_best_k:2d} sequential (run {rep}) {r['decoded_per_s']:8.0f} decoded/s", flush=True)
        for pattern, threaded in (("random", False), ("sequential", False), ("sequential", True)):
            cams = clips[rep % len(clips)]
            r = measure_simple_decoder(cams, pattern, secs, seed=rep, threaded=threaded)
            r.update(run=rep, pattern=pattern, decoder="ThreadedDecoder" if threaded else "SimpleDecoder")
            res["simple"].append(r)
            print(f"{r['decoder']} run {rep} {pattern:10s} {r['frames_per_s']:8.0f} frames/s", flush=True)
        for library in libraries:
            asyncio.run(engine_pass(rep, library))
    asyncio.run(engine_sweep())
    if delays:
        asyncio.run(tuning())

    res["kernel"] = measure_color_kernel()
    res["decode_call_cpu"] = measure_decode_calls(bundles)
    best_rand = max(r["decoded_per_s"] for r in res["raw"] if r["pattern"] == "random")
    best_seq = max(r["decoded_per_s"] for r in res["raw"] + res["raw_paired"] if r["pattern"] == "sequential")
    mean_decoded = (GOP + 1) / 2  # keyframe .. uniform random target in a GOP of 30
    rand_limit = best_rand / mean_decoded  # samples (= output frames) per second
    eng_rand = [r for r in res["engine"] if r["pattern"] == "random"]
    eng_seq = [r for r in res["engine"] if r["pattern"] == "sequential"]
    sd_rand = [r for r in res["simple"] if r["pattern"] == "random"]
    td_seq = [r for r in res["simple"] if r["decoder"] == "ThreadedDecoder"]
    res["summary"] = {
        "random_limit_samples_per_s": rand_limit,
        "best_raw_sequential_per_s": best_seq,
        "engine_random_samples_per_s": [r["frames_per_s"] for r in eng_rand],
        "engine_random_vs_limit": [r["frames_per_s"] / rand_limit for r in eng_rand],
        "engine_random_vs_simpledecoder": [a["frames_per_s"] / b["frames_per_s"] for a, b in zip(eng_rand, sd_rand)],
        "engine_sequential_frames_per_s": [r["frames_per_s"] for r in eng_seq],
        "engine_sequential_vs_raw_best": [r["frames_per_s"] / best_seq for r in eng_seq],
        "raw_sequential_paired_per_s": [r["decoded_per_s"] for r in res["raw_paired"]],
        "engine_sequential_vs_paired_raw": [a["frames_per_s"] / b["decoded_per_s"]
                                            for a, b in zip(eng_seq, res["raw_paired"])],
        "engine_sequential_vs_threadeddecoder": [a["frames_per_s"] / b["frames_per_s"] for a, b in zip(eng_seq, td_seq)],
        "engine_random_cpu_ms_per_frame": [r["cpu_ms_per_frame"] for r in eng_rand],
        "raw_random_cpu_ms_per_sample": {r["sessions"]: 1e3 * r["cpu_s"] / r["decoded"] * mean_decoded
                                         for r in res["raw"] if r["pattern"] == "random"},
        "other_libraries": {
            lib: {pattern: [{"frames_per_s": r["frames_per_s"], "cpu_ms_per_frame": r["cpu_ms_per_frame"]}
                            for r in res["engine_other"] if r["library"] == lib and r["pattern"] == pattern]
                  for pattern in ("random", "sequential")} for lib in libraries[1:]},
        "sweep_vs_limit": {r["sessions"]: r["frames_per_s"] / rand_limit for r in res["sweep"]
                           if r["pattern"] == "random"},
        "sweep_sequential_vs_raw_best": {r["sessions"]: r["frames_per_s"] / best_seq for r in res["sweep"]
                                         if r["pattern"] == "sequential"},
    }
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    import av

    res["meta"] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "gpu_driver": smi,
        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "pynvvideocodec": getattr(nvc, "__version__", "2.2.4?"), "av": av.__version__,
        "asyncdecode": __version__, "kbit_per_frame": kbit, "files": len(files),
        "video": f"{WIDTH}x{HEIGHT} HEVC GOP {GOP} no B-frames {FPS} fps {FRAMES} frames",
        "seconds_per_measurement": secs,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nvdec_bench.json").write_text(json.dumps(res, indent=2))
    (out / "nvdec_bench.md").write_text(_markdown(res))
    print(_markdown(res))
    _chart(res, out / "nvdec_bench.png")
    return res


def main(argv: Sequence[str] | None = None, *, data: str | os.PathLike[str] | None = None,
         out: str | os.PathLike[str] | None = None) -> int:
    """``asyncdecode bench``: :func:`run` with the options in ``argv`` (default: ``sys.argv[1:]``).

    ``data`` and ``out`` replace the defaults of ``--data`` and ``--out`` (``benchmarks/nvdec_bench.py``
    points them into the repository). Returns the exit status.
    """
    args = _parser(data, out).parse_args(argv)
    run(data=args.data, out=args.out, seconds=args.seconds, quick=args.quick, sessions=args.sessions,
        libraries=args.libraries, delays=args.delays, output_surfaces=args.output_surfaces)
    return 0


def _parser(data: str | os.PathLike[str] | None, out: str | os.PathLike[str] | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="asyncdecode bench",
        description="NVDEC benchmark: raw decoder sessions, PyNvVideoCodec's decoders and asyncdecode side by side "
                    "on the same files (CUDA GPU). Writes nvdec_bench.json, .md and .png to --out.")
    ap.add_argument("--data", type=Path, default=Path(data or "asyncdecode-bench/data"),
                    help="benchmark videos (made if absent; default ./asyncdecode-bench/data)")
    ap.add_argument("--out", type=Path, default=Path(out or "asyncdecode-bench"),
                    help="where the JSON, markdown and PNG go (default ./asyncdecode-bench)")
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement (default 4)")
    ap.add_argument("--quick", action="store_true", help="fewer session counts, 2 s measurements")
    ap.add_argument("--sessions", type=int, default=None,
                    help="asyncdecode's decoder sessions (default: the engine's own default)")
    ap.add_argument("--libraries", type=_names, default=list(LIBRARIES),
                    help="NVDEC libraries asyncdecode is measured with, comma separated; the first is the one "
                         f"the targets are checked on (default: {','.join(LIBRARIES)})")
    ap.add_argument("--delays", type=_numbers, default=[],
                    help="also measure sequential reading (libnvcuvid) with these display delays for clips read on, "
                         "comma separated (0-4; default: none)")
    ap.add_argument("--output-surfaces", type=_numbers, default=[],
                    help="with --delays: also with these numbers of output surfaces per decoder (default: the "
                         "engine's)")
    return ap


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _numbers(text: str) -> list[int]:
    try:
        return [int(x) for x in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None


def _markdown(res: dict) -> str:
    m, s = res["meta"], res["summary"]
    lines = [f"# nvdec_bench — {m['gpu_driver']}, {m['date']}", "",
             f"{m['video']}, {m['kbit_per_frame']:.0f} kbit/frame, {m['files']} files; torch {m['torch']}, "
             f"PyNvVideoCodec {m['pynvvideocodec']}, PyAV {m['av']}, asyncdecode {m['asyncdecode']}; "
             f"{m['seconds_per_measurement']} s per measurement.", "",
             "## Raw NVDEC (K sessions, Python threads, from memory, no conversion)", "",
             "| K | sequential decoded/s | random decoded/s | random: CPU ms per decoded frame |",
             "|---:|---:|---:|---:|"]
    by = {(r["sessions"], r["pattern"]): r for r in res["raw"]}
    for k in sorted({r["sessions"] for r in res["raw"]}):
        seq, rnd = by[(k, "sequential")], by[(k, "random")]
        lines.append(f"| {k} | {seq['decoded_per_s']:.0f} | {rnd['decoded_per_s']:.0f} | "
                     f"{1e3 * rnd['cpu_s'] / rnd['decoded']:.3f} |")
    lines += ["", "## Users' view (frames/s; random = one random frame per camera per step)", "",
              "| contender | pattern | run | frames/s | CPU ms/frame |", "|---|---|---:|---:|---:|"]
    for r in res["simple"]:
        lines.append(f"| {r['decoder']} (thread per camera) | {r['pattern']} | {r['run']} | "
                     f"{r['frames_per_s']:.0f} | {r['cpu_ms_per_frame']:.3f} |")
    for r in res["engine"] + res.get("engine_other", []):
        lines.append(f"| asyncdecode ({r.get('library', 'PyNvVideoCodec')}, {r['threads']} sessions, depth "
                     f"{r['depth']}) | {r['pattern']} | {r['run']} | {r['frames_per_s']:.0f} | "
                     f"{r['cpu_ms_per_frame']:.3f} |")
    lines += ["", f"## asyncdecode ({res.get('libraries', ['PyNvVideoCodec'])[0]}) by decoder sessions", "",
              "| sessions | pattern | frames/s | x random limit or best raw sequential | CPU ms/frame |",
              "|---:|---|---:|---:|---:|"]
    for r in res["sweep"]:
        ratio = (s["sweep_vs_limit"] if r["pattern"] == "random" else s["sweep_sequential_vs_raw_best"])[r["sessions"]]
        lines.append(f"| {r['sessions']} | {r['pattern']} | {r['frames_per_s']:.0f} | {ratio:.2f} | "
                     f"{r['cpu_ms_per_frame']:.3f} |")
    if res.get("tuning"):
        best_seq = s["best_raw_sequential_per_s"]
        lines += ["", "## Sequential reading (libnvcuvid) by display delay for clips read on", "",
                  "| delay | output surfaces | frames/s | x best raw sequential | CPU ms/frame |", "|---:|---:|---:|---:|---:|"]
        for r in res["tuning"]:
            lines.append(f"| {r['delay']} | {r['output_surfaces']} | {r['frames_per_s']:.0f} | "
                         f"{r['frames_per_s'] / best_seq:.2f} | {r['cpu_ms_per_frame']:.3f} |")
    lines += ["", "## Host CPU of one PyNvVideoCodec Decode call (one session, whole GOPs)", "",
              "| call | calls | CPU us | wall us |", "|---|---:|---:|---:|"]
    for name, c in sorted(res["decode_call_cpu"].items()):
        lines.append(f"| {name} | {c['calls']} | {c['cpu_us']:.0f} | {c['wall_us']:.0f} |")
    k = res["kernel"]
    lines += ["", f"## Ratios (asyncdecode with {res.get('libraries', ['PyNvVideoCodec'])[0]})", "",
              f"- random limit (best raw random / {(GOP + 1) / 2}): {s['random_limit_samples_per_s']:.0f} samples/s",
              f"- asyncdecode random: {', '.join(f'{v:.0f}' for v in s['engine_random_samples_per_s'])} samples/s = "
              f"{', '.join(f'{v:.2f}' for v in s['engine_random_vs_limit'])} x limit; "
              f"{', '.join(f'{v:.2f}' for v in s['engine_random_vs_simpledecoder'])} x SimpleDecoder",
              f"- asyncdecode sequential: {', '.join(f'{v:.2f}' for v in s['engine_sequential_vs_raw_best'])} x best raw "
              f"sequential; {', '.join(f'{v:.2f}' for v in s['engine_sequential_vs_threadeddecoder'])} x ThreadedDecoder",
              f"- asyncdecode sequential frames/s: {', '.join(f'{v:.0f}' for v in s['engine_sequential_frames_per_s'])} "
              f"(best raw sequential {s['best_raw_sequential_per_s']:.0f}, over the sweep and the runs' own)",
              f"- raw sequential measured right before each run: "
              f"{', '.join(f'{v:.0f}' for v in s.get('raw_sequential_paired_per_s', []))}; asyncdecode against it: "
              f"{', '.join(f'{v:.2f}' for v in s.get('engine_sequential_vs_paired_raw', []))}",
              f"- host CPU per output frame (random): {', '.join(f'{v:.3f}' for v in s['engine_random_cpu_ms_per_frame'])} ms; "
              "raw sessions' own CPU per sample (15.5 decoded frames): "
              + ", ".join(f"K={k_}: {v:.2f} ms" for k_, v in s["raw_random_cpu_ms_per_sample"].items()),
              f"- NV12->RGB 1600x900: fused kernel {k['fused_kernel_us']:.1f} us, torch ops {k['torch_ops_us']:.1f} us", ""]
    return "\n".join(lines)


def _chart(res: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for pattern in ("sequential", "random"):
        rows = sorted((r["sessions"], r["decoded_per_s"]) for r in res["raw"] if r["pattern"] == pattern)
        a.plot([k for k, _ in rows], [v for _, v in rows], marker="o", label=f"raw NVDEC, {pattern}")
    a.set_xlabel("decoder sessions (threads)")
    a.set_ylabel("decoded frames/s")
    a.legend()
    a.set_title("NVDEC capacity")
    names, vals = [], []
    for r in res["simple"]:
        names.append(f"{r['decoder'][:6]}\n{r['pattern'][:4]} r{r['run']}")
        vals.append(r["frames_per_s"])
    for r in res["engine"]:
        names.append(f"asyncdec\n{r['pattern'][:4]} r{r['run']}")
        vals.append(r["frames_per_s"])
    b.bar(range(len(vals)), vals, color=["#999"] * len(res["simple"]) + ["#2a7"] * len(res["engine"]))
    b.set_xticks(range(len(vals)), names, fontsize=7)
    b.set_ylabel("output frames/s")
    b.set_title("6 cameras, 1600x900 HEVC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
