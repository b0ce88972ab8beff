"""The asyncdecode command line."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest

from asyncdecode import probe
from asyncdecode.cli import main, parse_frames


def _png(path):
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_probe(assets, capsys):
    path = assets["h264_vargop"]
    assert main(["probe", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    info = probe(path)
    assert out["num_frames"] == info.num_frames and out["keyframes"] == list(info.keyframes)
    assert main(["probe", str(path)]) == 0
    text = capsys.readouterr().out
    assert "num_frames: 49" in text and "gop_lengths" in text


def test_decode_writes_pngs_equal_to_engine_frames(assets, tmp_path, capsys):
    import asyncio

    from asyncdecode import Engine

    path = assets["hevc_open"]
    assert main(["decode", str(path), "--frames", "0,10:14,47", "--out", str(tmp_path), "--device", "cpu"]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == 6

    async def frames():
        async with Engine(device="cpu") as eng:
            return await eng.decode(path, [0, 10, 11, 12, 13, 47])

    for file, frame in zip(written, asyncio.run(frames())):
        assert np.array_equal(_png(file), frame.numpy())


def test_errors_are_one_line(assets, tmp_path, capsys):
    assert main(["decode", str(assets["h264_nob"]), "--frames", "999", "--out", str(tmp_path), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncdecode: error: frame 999 out of range") and err.count("\n") == 1
    assert main(["probe", str(tmp_path / "missing.mp4")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_parse_frames():
    assert parse_frames("0,10,20") == [0, 10, 20]
    assert parse_frames("0:30:10,5") == [0, 10, 20, 5]
    assert parse_frames(":3") == [0, 1, 2]
    with pytest.raises(Exception):
        parse_frames("")


def test_demo_runs_as_installed(tmp_path):
    """The console script, as a user runs it (small settings to keep CI fast)."""
    out = tmp_path / "sheet.png"
    proc = subprocess.run(
        [sys.executable, "-m", "asyncdecode.cli", "demo", "--device", "cpu", "--cameras", "3", "--frames", "40",
         "--size", "160x96", "--gop", "10", "--steps", "10", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "random:" in proc.stdout and "clips:" in proc.stdout and "frames/s" in proc.stdout
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["stats"]["requests_failed"] == 0
    assert report["patterns"]["random"]["frames"] == 30
    sheet = _png(out)
    assert sheet.shape[0] > 4 * 96 and sheet.std() > 10


def test_bench_explains_what_it_needs(capsys):
    """Without NVDEC the benchmark stops at once with the reason; its options are documented."""
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    assert "--sessions" in capsys.readouterr().out
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark itself runs on the device")
    assert main(["bench", "--quick", "--data", "/nonexistent", "--out", "/nonexistent"]) == 1
    assert "CUDA" in capsys.readouterr().err


def test_unknown_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["probe", "x.mp4", "--bogus"])
