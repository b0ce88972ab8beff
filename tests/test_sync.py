"""SyncEngine: the same engine for code without an event loop."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
import torch

from asyncdecode import EngineClosedError, FrameIndexError, SyncEngine, probe


def _loop_threads():
    return [t for t in threading.enumerate() if t.name.startswith("asyncdecode")]


def test_sync_engine_end_to_end(assets):
    path = assets["h264_bframes"]
    n = probe(path).num_frames
    with SyncEngine(device="cpu") as eng:
        assert str(eng.device) == "cpu"
        a = eng.decode([path, path], [3, 40])
        fut = eng.submit(path, [40])
        assert isinstance(fut, concurrent.futures.Future)
        (b,) = fut.result(timeout=30)
        assert torch.equal(a[1], b)
        eng.prefetch(path, [20])
        got = list(eng.stream(((path, [i]) for i in range(0, n, 6)), depth=3))
        assert len(got) == len(range(0, n, 6))
        assert torch.equal(got[0][0], eng.decode(path, [0])[0])
        assert torch.equal(eng.decode([path, path], [3, 40], stack=True), torch.stack(a))
        assert torch.equal(eng.submit(path, [40], stack=True).result(timeout=30)[0], b)
        assert torch.equal(next(iter(eng.stream([(path, [0])], stack=True))), got[0][0][None])
        with pytest.raises(FrameIndexError, match="out of range"):
            eng.decode(path, [n])
        assert eng.info(path).num_frames == n
        s = eng.stats()
        assert s["requests"] >= 4 and s["frames_returned"] >= 3
    assert not _loop_threads()
    with pytest.raises(EngineClosedError):
        eng.decode(path, [0])
    eng.close()  # idempotent


def test_stream_stopped_early(assets):
    path = assets["h264_nob"]
    with SyncEngine(device="cpu") as eng:
        for i, _ in enumerate(eng.stream(((path, [k]) for k in range(40)), depth=4)):
            if i == 2:
                break
        assert eng.decode(path, [5])[0].shape[-1] == 3
    assert not _loop_threads()


def test_timeout(assets):
    with SyncEngine(device="cpu", timeout_s=1e-6) as eng:
        with pytest.raises(TimeoutError):
            eng.decode(assets["hevc_closed"], list(range(40)))
        eng.decode(assets["hevc_closed"], [1], timeout_s=60)
