"""How benchmarks/soak.py judges a run's samples (benchmarks/_soak_report.py; no soak is run here): growth
per 10 minutes, the verdict, and the growth with the decoder pool held fixed (host resources follow the
decoders open); and soak.py's ``--rejudge`` of a run that was cut off."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _soak_report as report  # noqa: E402


def samples(minutes: int = 12, leak_per_min: float = 0.0) -> list[dict]:
    """Quiet samples a minute apart: a pool of decoders going up and down (3 fds, 9 MiB each), plus a leak."""
    out = []
    for t in range(minutes):
        pool = 100 + (t * 7) % 5 * 3
        out.append({"t_s": 60.0 * t, "decoders_open": pool, "open_fds": 30 + 3 * pool,
                    "rss_mib": 1000 + 9 * pool + leak_per_min * t})
    return out


def test_growth_of_a_steady_series_is_zero_and_passes():
    flat = [{"t_s": 60.0 * t, "open_fds": 50} for t in range(10)]
    g = report.growth(flat, "open_fds")
    assert g["pct_per_10_min"] == 0 and report.verdict(g) is True
    assert g["net_pct_per_10_min"] is None  # no pool figure: nothing to hold fixed


def test_a_steady_leak_fails():
    leak = [{"t_s": 60.0 * t, "rss_mib": 1000 + 5 * t + (t % 2) * 0.5} for t in range(12)]
    g = report.growth(leak, "rss_mib")
    assert g["pct_per_10_min"] == pytest.approx(5.0, abs=0.2) and report.verdict(g) is False


def test_with_the_pool_held_fixed_what_follows_the_decoders_open_is_not_growth():
    g = report.growth(samples(), "open_fds")
    assert g["net_pct_per_10_min"] == pytest.approx(0.0, abs=1e-6)
    assert g["per_open_decoder"] == pytest.approx(3.0)


def test_with_the_pool_held_fixed_a_leak_still_shows():
    g = report.growth(samples(leak_per_min=2.0), "rss_mib")
    first = g["first"]
    assert g["net_pct_per_10_min"] == pytest.approx(100 * 20 / first, rel=1e-6)
    assert g["per_open_decoder"] == pytest.approx(9.0)


def test_the_table_has_the_column_and_leaves_it_blank_for_the_pool_itself():
    res = {"samples": [{**s, "decoders_free": s["decoders_open"] - 10} for s in samples()]}
    res["results"] = report.judge(res)
    rows = {r["key"]: r for r in res["results"]}
    assert rows["open_fds"]["growth"]["per_open_decoder"] == pytest.approx(3.0)
    assert rows["decoders_free"]["growth"]["net_pct_per_10_min"] is None  # an engine figure, not the process's
    table = "\n".join(report.growth_table(res))
    assert "pool held fixed" in table and "0.00 (3) | pass" in table


def test_the_heap_held_is_shown_but_not_judged():
    """glibc's heap held is address space (trims give its pages back without shrinking it): its growth is
    in the table, with the reason, and no verdict; the heap in use beside it is judged."""
    res = {"samples": [{"t_s": 60.0 * t, "heap_held_mib": 300 + 10 * t, "heap_in_use_mib": 200 + 10 * t}
                       for t in range(12)]}
    res["results"] = report.judge(res)
    rows = {r["key"]: r for r in res["results"]}
    assert rows["heap_held_mib"]["growth"]["pct_per_10_min"] > 1 and rows["heap_held_mib"]["ok"] is None
    assert rows["heap_in_use_mib"]["ok"] is False
    held = next(line for line in report.growth_table(res) if line.startswith("| glibc heap held"))
    assert held.endswith("| not judged (address space, not memory used: malloc_trim hands its free pages back to "
                         "the system without making it smaller, and RSS counts what stays resident) |")


def test_soak_rejudges_a_run_that_was_cut_off(tmp_path, capsys):
    """``soak.py --rejudge`` on the checkpoint a cut-off run leaves prints the growth of its samples."""
    soak = pytest.importorskip("soak")  # the soak itself needs torch and PyAV besides the report
    cut = tmp_path / "soak_cuda.partial.json"
    cut.write_text(json.dumps({"partial": True, "samples": samples(leak_per_min=2.0)}))
    assert soak.main(["--rejudge", str(cut)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# soak cut off after 11.0 min (12 samples)")
    rss = next(line for line in out.splitlines() if line.startswith("| RSS (MiB) |")).split(" | ")
    held_fixed, per_decoder = rss[8].split()
    assert float(held_fixed) == pytest.approx(100 * 20 / 1956, abs=0.01)  # the leak, 2 MiB a minute
    assert per_decoder == "(9)"  # and the 9 MiB each open decoder holds, told apart from it
