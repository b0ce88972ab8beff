"""The NVDEC benchmark module, ``asyncdecode bench``: its surface and what it does without a GPU.

The measurements themselves need NVDEC; the GPU machine runs them (``benchmarks/nvdec_bench.py``).
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asyncdecode import BackendUnavailableError, bench

REPO = Path(__file__).resolve().parents[1]


def test_public_names():
    assert bench.__all__ == sorted(bench.__all__)
    assert bench.__all__ == [
        "CAMERAS", "CLIPS", "FPS", "FRAMES", "GOP", "HEIGHT", "LIBRARIES", "WIDTH", "main", "make_dataset",
        "measure_color_kernel", "measure_decode_calls", "measure_engine", "measure_raw_nvdec",
        "measure_simple_decoder", "run",
    ]
    assert all(getattr(bench, name) is not None for name in bench.__all__)


def test_importing_the_package_or_the_cli_leaves_it_out():
    code = "import sys, asyncdecode, asyncdecode.cli; assert 'asyncdecode.bench' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_options(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: asyncdecode bench")
    for option in ("--data", "--out", "--seconds", "--quick", "--sessions", "--libraries", "--delays",
                   "--output-surfaces"):
        assert option in text
    with pytest.raises(SystemExit) as info:
        bench.main(["--delays", "2,x"])
    assert info.value.code == 2
    assert "expected comma-separated integers, not '2,x'" in capsys.readouterr().err


def test_the_repository_wrapper_points_into_benchmarks(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["nvdec_bench.py", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "benchmarks" / "nvdec_bench.py"), run_name="__main__")
    assert info.value.code == 0
    assert "--sessions" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the benchmark runs on the device")
def test_without_nvdec_it_stops_before_making_videos(tmp_path):
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        bench.run(data=tmp_path / "data", out=tmp_path / "out", quick=True)
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()
