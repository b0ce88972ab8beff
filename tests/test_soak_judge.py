"""How benchmarks/soak.py judges a run's samples (no soak is run here): growth per 10 minutes, the
verdict, and the growth with the decoder pool held fixed (host resources follow the decoders open)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
soak = pytest.importorskip("soak")


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
    g = soak.growth(flat, "open_fds")
    assert g["pct_per_10_min"] == 0 and soak.verdict(g) is True
    assert g["net_pct_per_10_min"] is None  # no pool figure: nothing to hold fixed


def test_a_steady_leak_fails():
    leak = [{"t_s": 60.0 * t, "rss_mib": 1000 + 5 * t + (t % 2) * 0.5} for t in range(12)]
    g = soak.growth(leak, "rss_mib")
    assert g["pct_per_10_min"] == pytest.approx(5.0, abs=0.2) and soak.verdict(g) is False


def test_with_the_pool_held_fixed_what_follows_the_decoders_open_is_not_growth():
    g = soak.growth(samples(), "open_fds")
    assert g["net_pct_per_10_min"] == pytest.approx(0.0, abs=1e-6)
    assert g["per_open_decoder"] == pytest.approx(3.0)


def test_with_the_pool_held_fixed_a_leak_still_shows():
    g = soak.growth(samples(leak_per_min=2.0), "rss_mib")
    first = g["first"]
    assert g["net_pct_per_10_min"] == pytest.approx(100 * 20 / first, rel=1e-6)
    assert g["per_open_decoder"] == pytest.approx(9.0)


def test_the_table_has_the_column_and_leaves_it_blank_for_the_pool_itself():
    res = {"samples": [{**s, "decoders_free": s["decoders_open"] - 10} for s in samples()]}
    res["results"] = soak.judge(res)
    rows = {r["key"]: r for r in res["results"]}
    assert rows["open_fds"]["growth"]["per_open_decoder"] == pytest.approx(3.0)
    assert rows["decoders_free"]["growth"]["net_pct_per_10_min"] is None  # an engine figure, not the process's
    table = "\n".join(soak.growth_table(res))
    assert "pool held fixed" in table and "0.00 (3) | pass" in table
