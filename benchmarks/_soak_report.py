"""How a soak's samples are judged and written (benchmarks/soak.py runs the soak, ``--rejudge`` judges an
earlier run again): growth per 10 minutes per resource, with the decoder pool held fixed where the
pool changed, the verdict against the target, the plot and the Markdown report. No torch, no engine:
tests/test_soak_judge.py checks the judging on made-up samples."""

from __future__ import annotations

import collections
import math
from pathlib import Path
from typing import Any

TARGET_PCT_PER_10_MIN = 1.0
"""The target: each resource grows less than this per 10 minutes (% of its first judged sample)."""
SETTLE_S = 60.0
"""Growth is counted from the sample this many seconds into the run on (the target: after the first minute)."""
PROBLEMS = ("mismatch", "wrong_error", "bad_succeeded", "unexpected_error", "shape", "over_bound")
"""What a finished request can get wrong, as the soak counts it."""
MiB = 1 << 20

# -- growth -------------------------------------------------------------------------------------------

# (key, label): each gets a growth figure and a verdict (but those in NOT_JUDGED); the first PROCESS_SERIES are the
# process's own
SERIES = (
    ("rss_mib", "RSS (MiB)"),
    ("rss_anon_mib", "anonymous RSS (MiB)"),
    ("rss_unnamed_mib", "RSS of unnamed anonymous mappings (MiB)"),
    ("rss_main_heap_mib", "RSS of the main [heap] (MiB)"),
    ("rss_nvidia_mib", "RSS of /dev/nvidia* mappings (MiB)"),
    ("mappings", "memory mappings"),
    ("heap_in_use_mib", "glibc heap in use (MiB)"),
    ("heap_held_mib", "glibc heap held (MiB)"),
    ("cuda_allocated_mib", "device memory allocated (MiB)"),
    ("cuda_reserved_mib", "device memory reserved (MiB)"),
    ("cuda_peak_mib", "device memory allocated, peak since the last sample (MiB)"),
    ("cuda_inactive_split_mib", "device memory in free pieces of split blocks (MiB)"),
    ("cuda_segments", "device memory segments (torch)"),
    ("cuda_streams_holding", "CUDA streams holding reserved memory"),
    ("cuda_reserved_top_stream_mib", "device memory reserved for the stream holding most (MiB)"),
    ("cuda_used_mib", "device memory used, whole GPU (MiB)"),
    ("open_fds", "open fds"),
    ("threads_py", "threads (threading)"),
    ("threads_os", "threads (/proc/self/task)"),
    ("py_objects", "Python objects (gc)"),
    ("traced_mib", "traced by tracemalloc (MiB)"),
    ("decoder_threads", "decoder sessions (threads)"),
    ("decoders_free", "decoders free"),
    ("decoders_free_bytes", "decoders free, bytes"),
    ("decoders_open", "decoders open (free and held)"),
    ("gop_cache_bytes", "GOP cache bytes"),
    ("frame_cache_bytes", "frame cache bytes"),
    ("index_cache_files", "index cache files"),
)
PROCESS_SERIES = 21
PROCESS_KEYS = frozenset(key for key, _ in SERIES[:PROCESS_SERIES])
NOT_JUDGED = {
    "heap_held_mib": "address space, not memory used: malloc_trim hands its free pages back to the system "
                     "without making it smaller, and RSS counts what stays resident",
}
"""Series shown with their growth but given no verdict, and why. glibc's heap held (``mallinfo2``'s
arena + mmapped bytes) keeps the extent of every arena's heaps: in every CPU soak of 2026-12-04/05,
``malloc_trim`` at the end took 99-173 MiB off RSS and 1-4 MiB off the heap held, and during a run
with the engine's trims the heap held stood above RSS itself."""


def _slope(ts: list[float], vs: list[float]) -> tuple[float, float | None]:
    """Least-squares slope and its standard error (None from fewer than 3 points)."""
    n = len(ts)
    mt, mv = sum(ts) / n, sum(vs) / n
    den = sum((t - mt) ** 2 for t in ts)
    if den == 0:
        return 0.0, None
    b = sum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / den
    if n < 3:
        return b, None
    resid = sum((v - mv - b * (t - mt)) ** 2 for t, v in zip(ts, vs))
    return b, math.sqrt(resid / (n - 2) / den)


def _net_slope(ts: list[float], vs: list[float], opens: list[float]) -> tuple[float, float] | None:
    """Least squares of ``vs`` on time and on the decoders open: the time coefficient (what grows with
    the pool held fixed) and what each open decoder adds; ``None`` where the pool did not change or
    there are too few points to tell the two apart."""
    import numpy as np

    if len(ts) < 4 or max(opens) == min(opens):
        return None
    x = np.column_stack([np.ones(len(ts)), np.asarray(ts, float), np.asarray(opens, float)])
    coef, _, rank, _ = np.linalg.lstsq(x, np.asarray(vs, float), rcond=None)
    return (float(coef[1]), float(coef[2])) if rank == 3 else None


def growth(samples: list[dict[str, Any]], key: str, settle_s: float = SETTLE_S) -> dict[str, Any] | None:
    """Growth per 10 minutes of ``key`` over the in-run samples from ``settle_s`` on (least squares; all of
    them where fewer than 3 are that late), over their second half, and over the whole run."""
    every = [(s["t_s"], s[key]) for s in samples if s.get(key) is not None]
    if len(every) < 2:
        return None
    late = [p for p in every if p[0] >= settle_s]
    pts = late if len(late) >= 3 else every
    ts, vs = [t for t, _ in pts], [float(v) for _, v in pts]
    first = vs[0]
    b, se = _slope(ts, vs)
    per_10 = b * 600
    half = pts[(len(pts) - 1) // 2:]
    per_10_half = _slope([t for t, _ in half], [float(v) for _, v in half])[0] * 600 if len(half) >= 2 else None

    def pct(x: float | None) -> float | None:
        if x is None:
            return None
        if first == 0:
            return 0.0 if x == 0 else math.copysign(math.inf, x)
        return 100 * x / first

    whole = _slope([t for t, _ in every], [float(v) for _, v in every])[0] * 600
    net = None
    if key.removeprefix("load_") in PROCESS_KEYS:  # what grows apart from the decoder pool (its memory, maps, fds)
        by_t = {s["t_s"]: s.get("decoders_open") for s in samples}
        opens = [by_t.get(t) for t in ts]
        if all(o is not None for o in opens):
            net = _net_slope(ts, vs, [float(o) for o in opens])
    return {"net_pct_per_10_min": None if net is None else pct(net[0] * 600),
            "per_open_decoder": None if net is None else net[1],
            "first": first, "last": vs[-1], "min": min(vs), "max": max(vs), "per_10_min": per_10,
            "pct_per_10_min": pct(per_10), "pct_2se": None if se is None else abs(pct(2 * se * 600) or 0.0),
            "second_half_per_10_min": per_10_half, "second_half_pct_per_10_min": pct(per_10_half),
            "from_s": ts[0], "whole_run_pct_per_10_min": 100 * whole / float(every[0][1]) if every[0][1] else None}


def judge(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Growth and a verdict per resource sampled (``res["results"]``)."""
    results = []
    for key, label in SERIES:
        g = growth(res["samples"], key)
        if g is None:
            continue
        judged = key not in NOT_JUDGED
        ok = verdict(g) if judged else None
        notes = [] if judged else [NOT_JUDGED[key]]
        cap = res.get("engine_end", {}).get("gop_cache_capacity_bytes")
        if key == "gop_cache_bytes" and cap:
            notes.append(f"bounded: capacity {cap / MiB:.0f} MiB, max seen "
                         f"{g['max'] / MiB:.1f} MiB")
        if key == "decoders_free":
            notes.append(f"a pool the backend bounds (count, or bytes on NVDEC); {g['min']:.0f}..{g['max']:.0f} seen")
        if g.get("pct_2se") is not None and g["pct_2se"] > TARGET_PCT_PER_10_MIN:
            notes.append(f"noise ±{g['pct_2se']:.1f}%: the run cannot resolve {TARGET_PCT_PER_10_MIN:g}%")
        note = "; ".join(notes) or None
        results.append({"key": key, "label": label, "growth": g, "ok": ok, "judged": judged, "note": note,
                        "under_load": None if key == "traced_mib" else growth(res["samples"], "load_" + key)})
    return results


def verdict(g: dict[str, Any]) -> bool | None:
    """Pass: growth under the target. Fail: over it, and growing beyond the noise (the slope more than 2
    standard errors above zero). None: over it, but within the noise of no growth at all."""
    pct, noise = g["pct_per_10_min"], g.get("pct_2se")
    if pct is None:
        return None
    if pct < TARGET_PCT_PER_10_MIN:
        return True
    return False if noise is None or pct - noise > 0 else None


# -- the plot -----------------------------------------------------------------------------------------

PLOTTED = (("rss_mib", "RSS (MiB)"), ("heap_in_use_mib", "glibc heap in use (MiB)"), ("open_fds", "open fds"),
           ("threads_os", "threads (/proc/self/task)"), ("py_objects", "Python objects"),
           ("decoders_open", "decoders open (free and held)"), ("decoders_free", "decoders free"),
           ("cuda_used_mib", "GPU memory used (MiB)"), ("frames_per_s", "frames/s (interval)"))

Series = tuple[str, list[float], list[float], list[float] | None, float | None]  # label, t, quiet, load, closed


def _plot_series(res: dict[str, Any]) -> list[Series]:
    out = []
    closed = res["end"].get("after_close", {})
    for key, label in PLOTTED:
        rows = [s for s in res["samples"] if s.get(key) is not None]
        if len(rows) < 2:
            continue
        load = [float(s["load_" + key]) for s in rows] if all(s.get("load_" + key) is not None for s in rows) else None
        out.append((label, [s["t_s"] / 60 for s in rows], [float(s[key]) for s in rows], load, closed.get(key)))
    return out


def write_plot(res: dict[str, Any], prefix: Path) -> str:
    """A panel per resource against minutes: quiet samples (blue), under load (grey), the value after the
    engine closed in the title. Returns the file's name."""
    series = _plot_series(res)
    title = f"soak {res['args']['device']}, {res['meta']['date'][:10]}: quiet samples (blue), under load (grey)"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = prefix.with_suffix(".svg")
        path.write_text(_svg(series, title))
        return path.name
    cols = 3
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, (label, ts, vs, load, closed) in zip(axes.flat, series):
        if load is not None:
            ax.plot(ts, load, color="0.6", linewidth=1)
        ax.plot(ts, vs, marker=".", color="tab:blue")
        ax.set_title(label + ("" if closed is None else f" (closed: {_short(closed)})"), fontsize=9)
        ax.set_xlabel("minutes", fontsize=8)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = prefix.with_suffix(".png")
    fig.savefig(path, dpi=90)
    return path.name


def _svg(series: list[Series], title: str) -> str:
    w, h, pad, cols = 300, 150, 36, 3
    rows = math.ceil(len(series) / cols)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * w}" height="{rows * h + 24}" '
           f'font-family="sans-serif" font-size="10">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="6" y="16" font-size="12">{title}</text>']
    for i, (label, ts, vs, load, closed) in enumerate(series):
        x0, y0 = (i % cols) * w, 24 + (i // cols) * h
        values = vs + (load or [])
        lo, hi = min(values), max(values)
        if hi - lo < 1e-9 * max(1.0, abs(hi)):
            lo, hi = lo - 1, hi + 1
        t_hi = max(ts[-1], 1e-6)

        def line(ys: list[float], colour: str, width: float) -> str:
            xs = (x0 + pad + (w - pad - 8) * t / t_hi for t in ts)
            pts = " ".join(f"{x:.1f},{y0 + h - 22 - (h - 44) * (v - lo) / (hi - lo):.1f}" for x, v in zip(xs, ys))
            return f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="{width}"/>'

        head = label + ("" if closed is None else f" (closed: {_short(closed)})")
        out += [f'<text x="{x0 + pad}" y="{y0 + 12}">{head}</text>',
                f'<rect x="{x0 + pad}" y="{y0 + 20}" width="{w - pad - 8}" height="{h - 42}" fill="none" '
                f'stroke="#ccc"/>']
        if load is not None:
            out.append(line(load, "#999", 1.0))
        out += [line(vs, "#1f77b4", 1.5),
                f'<text x="{x0 + 2}" y="{y0 + 26}">{_short(hi)}</text>',
                f'<text x="{x0 + 2}" y="{y0 + h - 22}">{_short(lo)}</text>',
                f'<text x="{x0 + pad}" y="{y0 + h - 8}">0</text>',
                f'<text x="{x0 + w - 60}" y="{y0 + h - 8}">{ts[-1]:.1f} min</text>']
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _short(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


# -- report -------------------------------------------------------------------------------------------


def _f(v: Any, fmt: str = ".1f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return format(v, fmt)


def _trim_times(samples: list[dict[str, Any]]) -> str:
    """When the engine's trims came: the samples by which each count of them was first reached."""
    seen, marks = 0, []
    for sm in samples:
        n = sm.get("heap_trims")
        if n is not None and n > seen:
            marks.append(f"{n - seen} by {sm['t_s'] / 60:.0f} min")
            seen = n
    return f" ({', '.join(marks)})" if marks else ""


def growth_table(res: dict[str, Any]) -> list[str]:
    """The growth section: per resource, its slopes and verdict (``res["results"]``)."""
    lines = ["## Growth per 10 minutes", "",
              f"Least-squares slope over the quiet in-run samples after the first {SETTLE_S:g} s x 600 s, as a % of "
              f"the first of them; target < {TARGET_PCT_PER_10_MIN:g}% per 10 minutes. Second half: the same over "
              "the later half of those samples (a leak keeps its slope, warm-up flattens). Whole run: over every "
              "in-run sample, the first minute's included. Under load: the same from the samples taken before "
              "each pause (frames in flight included: noisier). Pool held fixed: the time slope of a least-squares "
              "fit on time and on the decoders open (free and held; each holds host memory, mappings and open "
              "files of the driver's), and what each open decoder adds: growth that is not the pool's size; "
              "blank where the pool did not change. Result (on the first slope): pass under the target; FAIL "
              "over it with the slope more than 2 standard errors above zero; unresolved over it but within the "
              "noise of no growth; not judged: shown, with the reason, where the figure is not a resource held.", "",
              "| resource | first | last | growth / 10 min | % / 10 min (± 2 SE) | second half % / 10 min | "
              "whole run % / 10 min | under load % / 10 min | pool held fixed % / 10 min (per open decoder) | result |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["results"]:
        g, gl = r["growth"], r.get("under_load") or {}
        mark = {True: "pass", False: "FAIL", None: "unresolved"}[r["ok"]] if r.get("judged", True) else "not judged"
        lines.append(f"| {r['label']} | {_f(g['first'], '.6g')} | {_f(g['last'], '.6g')} | "
                     f"{_f(g['per_10_min'], '.4g')} | {_f(g['pct_per_10_min'], '.2f')}"
                     f"{'' if not g.get('pct_2se') else ' ± ' + _f(g['pct_2se'], '.2f')} | "
                     f"{_f(g['second_half_pct_per_10_min'], '.2f')} | {_f(g.get('whole_run_pct_per_10_min'), '.2f')} | "
                     f"{_f(gl.get('pct_per_10_min'), '.2f')} | {_f(g.get('net_pct_per_10_min'), '.2f')}"
                     f"{'' if g.get('per_open_decoder') is None else ' (' + _f(g['per_open_decoder'], '.3g') + ')'} | "
                     f"{mark}"
                     f"{' (' + r['note'] + ')' if r.get('note') else ''} |")
    return lines


def markdown(res: dict[str, Any]) -> str:
    m, a = res["meta"], res["args"]
    dirty = f", engine files modified: {', '.join(m['dirty'])}" if m.get("dirty") else ""
    lines = [f"# soak — {m.get('device_name')}, {m['date']}", "",
             f"device {a['device']}; torch {m['torch']}; PyAV {m['av']} (FFmpeg {m.get('ffmpeg', '?')}); asyncdecode "
             f"{m['asyncdecode']} (commit {m.get('commit', '?')}{dirty}); "
             f"Python {m['python']}; {m['cpus']} CPUs ({m.get('cpu_model', '?')}).", "",
             f"{a['minutes']} min after a warm-up of {res['warm_up_s']:.0f} s; a sample every {a['sample_s']} s; "
             f"{a['workers']} workers; files: {', '.join(f'{n} x {k}' for k, n in res['files_per_set'].items())} "
             f"(matrix_bench sets); engine default config ({res['engine_end'].get('decoder_threads')} decoder "
             "threads); "
             f"request bound {a['bound_s']} s; pixels checked on {a['check_share']:.0%} of the requests; "
             f"{a['bad_share']:.0%} of the requests carry a bad input. This process used "
             f"{res['cpu']['own_cores']:.2f} cores, the machine's other processes "
             f"{res['cpu']['other_processes_cores']:.2f}.",
             ""]
    for note in res["notes"]:
        lines += [f"*{note}*", ""]
    if res.get("warm_up_progress"):
        lines += ["Warm-up (not judged): " + "; ".join(
            f"{w['t_s']:.0f} s: RSS {w['rss_mib']:.0f} MiB, decoders made {w['decoders_created']}, free "
            f"{w['decoders_free']}" for w in res["warm_up_progress"]) + ".", ""]
    t = res["totals"]
    last = res["samples"][-1] if res["samples"] else {}
    lines += ["## Checks", "",
              f"Operations: {', '.join(f'{k[3:]} {v}' for k, v in sorted(t.items()) if k.startswith('op_'))}. "
              f"Requests done {t.get('done', 0)} ({t.get('frames', 0)} frames, {t.get('checked_frames', 0)} "
              f"compared with the reference), failed as expected {t.get('failed_as_expected', 0)}, cancelled "
              f"{t.get('cancelled', 0)}; stream runs closed early {t.get('streams_closed_early', 0)}, cancelled "
              f"{t.get('streams_cancelled', 0)}; the engine counted {res['engine_counts']['requests']} requests, "
              f"{res['engine_counts']['requests_failed']} failed, {res['engine_counts']['requests_cancelled']} "
              f"cancelled (stream requests withdrawn included). Latency max {_f(res['latency_max_s'], '.2f')} s. "
              f"The engine trimmed the C heap {last.get('heap_trims', '?')} times by the last sample "
              f"({last.get('heap_trims_on_growth', '?')} of them on RSS growth), giving back "
              f"{_f(last.get('heap_trims_given_back_mib'), '.0f')} MiB of RSS in all"
              f"{_trim_times(res['samples'])}."
              + (f" It emptied the GPU's cached blocks {last['cuda_trims']} times, giving back "
                 f"{last['cuda_trims_given_back_mib']:.0f} MiB of unused device memory in all."
                 if "cuda_trims" in last else ""), "",
              "| problem | count |", "|---|---:|"]
    for kind in PROBLEMS:
        lines.append(f"| {kind.replace('_', ' ')} | {t.get(kind, 0)} |")
    for kind, texts in res["examples"].items():
        lines += ["", f"{kind}: " + "; ".join(texts[:3])]
    lines += ["", *growth_table(res)]
    e = res["end"]
    lines += ["", "## Close", "",
              "| | before the engine opened | last sample (quiet) | engine closed, gc | event loop closed | "
              "malloc_trim (and on cuda empty_cache) |", "|---|---:|---:|---:|---:|---:|"]
    for key, label in SERIES[:PROCESS_SERIES]:
        row = [e.get(w, {}).get(key) for w in ("before_open", "last_in_run", "after_close", "after_loop",
                                               "after_trim")]
        if any(v is not None for v in row):
            lines.append(f"| {label} | " + " | ".join(_f(v, '.6g') for v in row) + " |")
    lines += ["", f"{res['close_verdict']}", "",
              "## Samples", "",
              "Each sample: first under load, then quiet (new operations held back until none is in flight, "
              "then `gc.collect()`). Memory: quiet (under load).", "",
              "| t (s) | RSS MiB | heap in use MiB | fds | threads py / os | objects | decoders created / free | "
              "GOP cache MiB | index files | in flight / queue (load) | done / failed / cancelled | frames/s | "
              "p99 / max s |",
              "|---:|---:|---:|---:|---|---:|---|---:|---:|---|---|---:|---|"]
    for s in res["samples"]:
        iv = s.get("interval") or {}
        lines.append(
            f"| {s['t_s']:.0f} | {s['rss_mib']:.1f} ({s['load_rss_mib']:.1f}) | {_f(s.get('heap_in_use_mib'))} "
            f"({_f(s.get('load_heap_in_use_mib'))}) | {s['open_fds']} | {s['threads_py']} / {s['threads_os']} | "
            f"{s.get('py_objects', '–')} | {s['decoders_created']} / {s['decoders_free']} | "
            f"{s['gop_cache_bytes'] / MiB:.2f} | {s['index_cache_files']} | {s['load_requests_in_flight']} / "
            f"{s['load_queue_depth']} | {iv.get('done', '–')} / {iv.get('failed_as_expected', '–')} / "
            f"{iv.get('cancelled', '–')} | {_f(iv.get('frames_per_s'), '.0f')} | "
            f"{_f(iv.get('latency_p99_s'), '.2f')} / {_f(iv.get('latency_max_s'), '.2f')} |")
    if res.get("object_growth"):
        lines += ["", "Object types that grew most from the first to the last in-run sample: " + ", ".join(
            f"{k} {v:+d}" for k, v in res["object_growth"])]
    if res.get("tracemalloc_top"):
        lines += ["", "tracemalloc, lines whose allocations changed most from the first to the last in-run sample:", ""]
        lines += [f"- {x}" for x in res["tracemalloc_top"]]
    lines += ["", f"Plot: `{res.get('plot', '–')}`. Run time {res['elapsed_s']:.0f} s (reference decode "
                  f"{res['reference_s']:.0f} s).", ""]
    return "\n".join(lines)


def close_verdict(end: dict[str, Any]) -> str:
    """Before the engine opened against after it closed (and after the loop, and malloc_trim)."""
    b, c = end.get("before_open", {}), end.get("after_close", {})
    notes = []
    for key, label in (("threads_os", "threads"), ("open_fds", "fds")):
        if b.get(key) is not None and c.get(key) is not None:
            notes.append(f"{label} {b[key]} before -> {c[key]} after close"
                         + (" (back)" if c[key] <= b[key] else f" ({c[key] - b[key]:+d}, not back)"))
    names_before, names_after = (collections.Counter(x.get("thread_names", [])) for x in (b, c))
    extra = sorted((names_after - names_before).elements())
    if extra:
        loop = end.get("after_loop", {})
        notes.append(f"threads left after close: {', '.join(extra)}; after the event loop closed "
                     f"{loop.get('threads_os', '?')} threads")
    for key, label in (("rss_mib", "RSS"), ("heap_in_use_mib", "glibc heap in use"),
                       ("cuda_allocated_mib", "device memory allocated"), ("cuda_used_mib", "GPU memory used")):
        if b.get(key) is not None and c.get(key) is not None:
            trimmed = end.get("after_trim", {}).get(key)
            notes.append(f"{label} {b[key]:.1f} -> {c[key]:.1f} MiB ({c[key] - b[key]:+.1f})"
                         + (f", {trimmed:.1f} after malloc_trim" if trimmed is not None and key == "rss_mib" else ""))
    return "; ".join(notes) + "."
