"""Does switching NVDEC decoders between sizes (``cuvidReconfigureDecoder``) hold up under load?

    python benchmarks/reconfigure_check.py [--seconds 40] [--reconfigure 0|1] [--threads N] [--data DIR]
                                           [--out FILE]

The engine (libnvcuvid, ``ASYNCDECODE_NVDEC_RECONFIGURE`` as given: 1 by default, kept on here
whatever the thread count, where the engine itself would turn it off for more than one thread)
reads matrix_bench's ``mixed_sizes`` set (24 HEVC files, 24 sizes) and ``mixed_codecs`` set (H.264 /
HEVC, with and without B-frames) at once, for ``--seconds``, in rounds of three request shapes that
make a decoder thread change size at nearly every job: a random frame of all 48 files, 16 random
frames of 6 of them, 16 consecutive frames of 6 of them (64 requests in flight). A watchdog ends the
process with exit status 3 when no request has finished for 15 s (the hang seen on H200 and H100 with
ten threads switching sizes, see ``asyncdecode._backends._cuvid.RECONFIGURE``), after printing what
each decoder thread is doing in the driver (``_native.busy``: the call, the decoder, for how long,
and when that decoder was last reconfigured) and every thread's Python stack.
At the end a sample of the returned frames (``--check`` of them) is compared with the CPU backend's
decode of the same frames (RGB, at most 2 apart: each within 1 of the exact conversion).

Prints and writes (``--out``, JSON) requests/s, decoded frames/s, decoders made and reconfigured,
the largest gap between finished requests, and the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HANG_S = 15.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--device", default="cuda", help="engine device (cpu: a smoke run of the script)")
    ap.add_argument("--reconfigure", choices=("0", "1"), default="1")
    ap.add_argument("--threads", type=int, default=None, help="decoder threads (default: the engine's)")
    ap.add_argument("--quiesce", action="store_true",
                    help="an experiment: each reconfigure, alone in the decode loop's gate, first waits for the "
                         "whole context (cuCtxSynchronize) and for every decoder's pictures (cuvidGetDecodeStatus)")
    ap.add_argument("--context-lock", action="store_true",
                    help="an experiment: hardware decoders made with the driver's context lock (vidLock), as the "
                         "Video Codec SDK's samples make them (ASYNCDECODE_NVDEC_CONTEXT_LOCK=1)")
    ap.add_argument("--fixed-target", action="store_true",
                    help="an experiment: output surfaces kept at the decoder's largest size, pictures written "
                         "unscaled into their corner, so a reconfigure changes only the decode size "
                         "(ASYNCDECODE_NVDEC_FIXED_TARGET=1)")
    ap.add_argument("--check", type=int, default=96, help="returned frames compared with the CPU backend, at most")
    ap.add_argument("--check-share", type=float, default=0.05,
                    help="share of finished requests one frame of which is kept for the comparison")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "matrix")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ["ASYNCDECODE_NVDEC_RECONFIGURE"] = args.reconfigure  # read when asyncdecode is imported
    if args.context_lock:
        os.environ["ASYNCDECODE_NVDEC_CONTEXT_LOCK"] = "1"
    if args.fixed_target:
        os.environ["ASYNCDECODE_NVDEC_FIXED_TARGET"] = "1"
    sys.path.insert(0, str(HERE))
    import matrix_bench

    paths, _ = matrix_bench.ensure_files(args.data, {"mixed_sizes": 24, "mixed_codecs": 24})
    files = paths["mixed_sizes"] + paths["mixed_codecs"]
    result = asyncio.run(_run(files, args))
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0 if result["ok"] else 1


async def _run(files: list[str], args: argparse.Namespace) -> dict:
    import torch

    from asyncdecode import Engine, EngineConfig
    from asyncdecode.media import probe

    counts = [probe(p).num_frames for p in files]
    rng = random.Random(7)
    last_done = [time.monotonic()]
    stop = threading.Event()

    def watchdog() -> None:
        while not stop.wait(1.0):
            if time.monotonic() - last_done[0] > HANG_S:
                print(f"HANG: no request finished for {HANG_S:.0f} s", file=sys.stderr, flush=True)
                hang_report()
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)

    def hang_report() -> None:
        """What each decoder thread is doing in the driver, and the last reconfigures (to --out too)."""
        from asyncdecode._backends import _native

        names = {t.native_id: t.name for t in threading.enumerate()}
        threads, recent = _native.busy()
        for row in threads:
            row["thread"] = names.get(row["tid"], "?")
        switched = {r["decoder"]: r for r in recent}
        print("thread | call | decoder | for s | calls | decoder last reconfigured (s ago, by)", file=sys.stderr)
        for row in threads:
            r = switched.get(row["decoder"])
            print(f"{row['thread']} ({row['tid']}) | {row['call']} | {row['decoder']} | {row['age_s']} | {row['calls']} | "
                  + (f"{r['age_s']} s ago by {names.get(r['tid'], r['tid'])}, code {r['code']}" if r else "-"),
                  file=sys.stderr)
        print("last reconfigures (decoder, s ago, thread, code):", file=sys.stderr)
        for r in recent:
            print(f"  {r['decoder']} {r['age_s']} {names.get(r['tid'], r['tid'])} {r['code']}", file=sys.stderr)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"hang": True, "threads": threads, "reconfigures": recent}, indent=2))
        sys.stderr.flush()

    def request() -> tuple[list[str], list[int]]:
        kind = rng.randrange(3)
        if kind == 0:
            return files, [rng.randrange(n) for n in counts]
        picks = rng.sample(range(len(files)), 6)
        ps, ids = [], []
        for i in picks:
            if kind == 1:
                frames = sorted(rng.sample(range(counts[i]), 16))
            else:
                start = rng.randrange(counts[i] - 16)
                frames = list(range(start, start + 16))
            ps += [files[i]] * 16
            ids += frames
        return ps, ids

    if args.reconfigure == "1" and args.device != "cpu":
        # The engine ignores the reconfigure with more than one decoder thread (NvdecBackend.opening):
        # this script is what checks whether a driver still hangs with it, so it keeps it on.
        from asyncdecode._backends.nvdec import NvdecBackend

        NvdecBackend.opening = lambda self, threads: None
        if args.quiesce:
            _quiesce_reconfigures()
    config = EngineConfig(decoder_threads=args.threads) if args.threads else EngineConfig()
    sample: list[tuple[str, int, torch.Tensor]] = []
    gaps, done, frames = 0.0, 0, 0
    async with Engine(device=args.device, config=config) as eng:
        await eng.decode(files, [0] * len(files))  # decoders for every shape class, files indexed
        base = eng.stats()
        threading.Thread(target=watchdog, daemon=True).start()
        t0 = time.monotonic()
        last_done[0] = t0
        in_flight: set[asyncio.Task] = set()
        while time.monotonic() - t0 < args.seconds or in_flight:
            while len(in_flight) < 64 and time.monotonic() - t0 < args.seconds:
                ps, ids = request()
                task = asyncio.ensure_future(eng.decode(ps, ids))
                task.req = (ps, ids)  # type: ignore[attr-defined]
                in_flight.add(task)
            finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            now = time.monotonic()
            gaps = max(gaps, now - last_done[0])
            last_done[0] = now
            for task in finished:
                out = task.result()
                done += 1
                frames += len(out)
                ps, ids = task.req  # type: ignore[attr-defined]
                if len(sample) < args.check and rng.random() < args.check_share:
                    k = rng.randrange(len(ids))
                    sample.append((ps[k], ids[k], out[k].cpu()))
        if args.device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.monotonic() - t0
        stats = eng.stats()
    stop.set()
    worst, wrong = 0, []
    async with Engine(device="cpu") as ref:
        for path, fid, got in sample:
            want = (await ref.decode([path], [fid]))[0]
            diff = (got.int() - want.int()).abs()
            worst = max(worst, int(diff.max()))
            if int(diff.max()) > 2:
                wrong.append(_describe(path, fid, diff))
    made = stats["decoders_created"] - base["decoders_created"]
    switched = stats["decoders_reconfigured"] - base["decoders_reconfigured"]
    return {
        "reconfigure": args.reconfigure, "quiesce": args.quiesce, "context_lock": args.context_lock,
        "fixed_target": args.fixed_target, "seconds": round(elapsed, 2),
        "requests": done, "requests_per_s": round(done / elapsed, 1), "frames_per_s": round(frames / elapsed, 1),
        "decoded_per_s": round((stats["frames_decoded"] - base["frames_decoded"]) / elapsed, 1),
        "decoders_created": made, "decoders_reconfigured": switched, "decoders_created_total": stats["decoders_created"],
        "longest_gap_s": round(gaps, 3), "compared": len(sample), "largest_difference": worst,
        "wrong": len(wrong), "wrong_frames": wrong[:16],
        "device": torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu", "ok": worst <= 2,
    }


def _describe(path: str, fid: int, diff: "torch.Tensor") -> dict:
    """Where a frame differs from the CPU backend's (more than 2 apart): its size, how much of it, the
    rows and columns the differences span, and the largest difference per channel."""
    bad = diff.amax(dim=2) > 2  # (H, W)
    rows, cols = bad.any(dim=1).nonzero().flatten(), bad.any(dim=0).nonzero().flatten()
    return {"file": Path(path).name, "frame": fid, "size": list(diff.shape[:2]),
            "share_off": round(float(bad.float().mean()), 4),
            "rows": [int(rows[0]), int(rows[-1])], "cols": [int(cols[0]), int(cols[-1])],
            "max_per_channel": [int(v) for v in diff.amax(dim=(0, 1))],
            "mean_off": round(float(diff.float().mean()), 2)}


def _quiesce_reconfigures() -> None:
    """Make every reconfigure wait, alone in the decode loop's gate, until the GPU is idle: the call
    the gate makes (the driver's ``cuvidReconfigureDecoder``, by address) is replaced by one that first
    synchronizes the CUDA context (conversions, and the post-processing of maps, run on streams) and
    polls ``cuvidGetDecodeStatus`` until no surface of any live decoder is still being decoded. An
    experiment for the hang (see asyncdecode._backends._cuvid.RECONFIGURE): nothing in the engine
    changes; decoders are not destroyed while it polls."""
    import ctypes as C
    import weakref

    from asyncdecode._backends import _cuvid

    lib = _cuvid.library()
    real = lib.cuvidReconfigureDecoder
    sync = lib.cuda.cuCtxSynchronize
    sync.restype, sync.argtypes = C.c_int, ()
    live: weakref.WeakSet = weakref.WeakSet()
    guard = threading.Lock()  # decoders are not destroyed while a reconfigure polls them
    create, destroy = _cuvid.CuvidDecoder._create, _cuvid.CuvidDecoder._destroy_decoder

    def created(self, *a, **k):  # type: ignore[no-untyped-def]
        create(self, *a, **k)
        live.add(self)

    def destroyed(self):  # type: ignore[no-untyped-def]
        if self.handle is not None:
            self._let_go_of_mapped()  # unmaps pass the gate: not while holding the guard a reconfigure waits for
        with guard:
            destroy(self)

    _cuvid.CuvidDecoder._create, _cuvid.CuvidDecoder._destroy_decoder = created, destroyed
    status = _cuvid.DecodeStatus()

    def quiet_reconfigure(decoder: int, info: int) -> int:
        code = sync()
        if code:
            return code
        deadline = time.monotonic() + 2.0
        with guard:
            for d in list(live):
                handle = d.handle
                if handle is None:
                    continue
                for index in range(max(d._surfaces, 1)):
                    while (lib.cuvidGetDecodeStatus(handle, index, C.byref(status)) == 0
                           and status.status == _cuvid.IN_PROGRESS):
                        if time.monotonic() > deadline:
                            return 999  # gives up: the engine makes a new decoder instead
                        time.sleep(20e-6)
        return real(decoder, C.cast(info, C.POINTER(_cuvid.ReconfigureInfo)))

    fn = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p)(quiet_reconfigure)
    _quiesce_reconfigures.keep = fn  # type: ignore[attr-defined]  # the callback must outlive the engine
    lib.cuvidReconfigureDecoder = fn


if __name__ == "__main__":
    raise SystemExit(main())
