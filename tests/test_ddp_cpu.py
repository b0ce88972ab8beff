"""examples/train_ddp.py as torchrun runs it: 2 CPU ranks over gloo, one engine each.

The sampler's sharding itself is tested in-process and in a gloo group in test_data.py; this runs the
whole example (process group, one engine per rank, DDP steps, set_epoch, its own exactly-once check).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import asyncdecode

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_ddp.py"


@pytest.mark.skipif(importlib.util.find_spec("torch.distributed.run") is None,
                    reason="torch.distributed.run (torchrun) is not available in this torch build")
@pytest.mark.timeout(180)
def test_the_ddp_example_reads_every_clip_once_per_epoch_on_two_cpu_ranks(tmp_path: Path) -> None:
    here = str(Path(asyncdecode.__file__).resolve().parents[1])  # the asyncdecode this test imports
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
           "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    # --standalone: a rendezvous on localhost at a port the launcher picks free (no port race between runs)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(EXAMPLE),
         "--device", "cpu", "--data", str(tmp_path / "clips"), "--epochs", "2"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, done.stdout  # rank 0 only, one line an epoch
    for line in lines:
        assert "8 clips over 2 ranks, every clip read exactly once" in line, line
        assert "32 frames/rank" in line, line  # 4 clips x 2 cameras x 4 frames on each rank
    assert "first order" in lines[0] and "order reshuffled" in lines[1], lines
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [f"clip{k}" for k in range(8)]  # made once
