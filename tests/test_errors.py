"""Every bad input fails its own request, fast, with a specific error naming the file and frame;
the other requests and the engine go on."""

from __future__ import annotations

import asyncio
import re
import pickle
import time

import pytest
import torch

import asyncdecode.errors as errors
from asyncdecode import (AsyncDecodeError, CorruptDataError, Engine, EngineClosedError, FrameIndexError,
                         InvalidRequestError, VideoOpenError, probe)

FAST_S = 2.0

BAD_FILES = [
    ("bad_empty", VideoOpenError, "empty"),
    ("bad_text", VideoOpenError, "not a readable media file"),
    ("bad_random", VideoOpenError, "not a readable media file"),
    ("bad_truncated", VideoOpenError, "not a readable media file"),
    ("audio_only", VideoOpenError, r"no video stream .*\(streams: audio\)"),
]


@pytest.fixture
async def eng():
    async with Engine(device="cpu") as e:
        yield e


async def _fails_alone(eng, good, bad_paths, bad_ids, exc_type, match):
    """The bad request fails with ``exc_type`` within FAST_S while a good one beside it succeeds."""
    t0 = time.perf_counter()
    ok, bad = await asyncio.gather(eng.decode(good, [3]), eng.decode(bad_paths, bad_ids), return_exceptions=True)
    assert time.perf_counter() - t0 < FAST_S
    assert isinstance(ok, list) and isinstance(ok[0], torch.Tensor), ok
    assert isinstance(bad, exc_type), repr(bad)


    assert re.search(match, str(bad)), str(bad)
    return bad


@pytest.mark.parametrize("name, exc_type, match", BAD_FILES)
async def test_bad_files(eng, assets, name, exc_type, match):
    path = assets[name]
    err = await _fails_alone(eng, assets["h264_nob"], [path], [0], exc_type, match)
    assert err.path == str(path) and str(path) in str(err)
    assert isinstance(err, AsyncDecodeError) and isinstance(err, OSError)
    with pytest.raises(exc_type):
        probe(path)


async def test_missing_file_and_directory(eng, assets, tmp_path):
    err = await _fails_alone(eng, assets["h264_nob"], [tmp_path / "missing.mp4"], [0], VideoOpenError, "no such file")
    assert err.path.endswith("missing.mp4")
    await _fails_alone(eng, assets["h264_nob"], [tmp_path], [0], VideoOpenError, "directory")


async def test_corrupt_packets_fail_their_gop_only(eng, assets):
    path = assets["bad_corrupt_mdat"]
    info = probe(path)
    outcomes = {}
    for k in info.keyframes:
        try:
            await eng.decode(path, [k])
            outcomes[k] = "ok"
        except CorruptDataError as e:
            assert str(path) in str(e) and e.path == str(path)
            outcomes[k] = "corrupt"
    assert "corrupt" in outcomes.values() and "ok" in outcomes.values(), outcomes
    (f,) = await eng.decode(assets["h264_nob"], [9])
    assert f.dtype == torch.uint8


@pytest.mark.parametrize("fid", [-1, 48, 10**12, -(10**12)])
async def test_frame_out_of_range(eng, assets, fid):
    path = assets["h264_bframes"]
    err = await _fails_alone(eng, assets["h264_nob"], [path, path], [0, fid], FrameIndexError,
                             rf"frame {fid} out of range for .*h264_bframes.mp4 \(0\.\.47\)")
    assert isinstance(err, IndexError) and err.frame_id == fid and err.path == str(path)


async def test_malformed_arguments(eng, assets):
    path = assets["h264_nob"]
    with pytest.raises(InvalidRequestError, match="same length .*2 paths and 1 frame ids"):
        await eng.decode([path, path], [1])
    with pytest.raises(InvalidRequestError, match="same length"):
        eng.submit([path], [1, 2])
    with pytest.raises(InvalidRequestError, match="frame ids must be ints"):
        await eng.decode([path], [1.5])
    with pytest.raises(InvalidRequestError, match="frame ids must be ints"):
        await eng.decode([path], [True])
    with pytest.raises(InvalidRequestError, match="sequence of ints"):
        await eng.decode([path], 3)
    with pytest.raises(InvalidRequestError, match="path must be"):
        await eng.decode([3], [1])
    with pytest.raises(InvalidRequestError, match="OutputSpec"):
        await eng.decode([path], [1], output="rgb")
    with pytest.raises(InvalidRequestError, match="depth"):
        async for _ in eng.stream([], depth=0):
            pass
    (f,) = await eng.decode([path], [1])  # the engine goes on
    assert f.ndim == 3


async def test_use_after_close(assets):
    eng = Engine(device="cpu")
    async with eng:
        await eng.decode(assets["h264_nob"], [0])
    with pytest.raises(EngineClosedError, match="closed"):
        await eng.decode(assets["h264_nob"], [0])
    with pytest.raises(EngineClosedError):
        async for _ in eng.stream([(assets["h264_nob"], [0])]):
            pass


async def test_many_bad_and_good_requests_interleaved(eng, assets, tmp_path):
    good = assets["hevc_closed"]
    bad = [assets["bad_text"], tmp_path / "nope.mp4", assets["audio_only"], assets["bad_empty"]]
    reqs = []
    for i in range(40):
        reqs.append(eng.decode(good, [i % 48]) if i % 2 else eng.decode(bad[(i // 2) % 4], [0]))
    results = await asyncio.gather(*reqs, return_exceptions=True)
    assert all(isinstance(r, list) for r in results[1::2])
    assert all(isinstance(r, VideoOpenError) for r in results[0::2])
    s = eng.stats()
    assert s["requests_failed"] == 20 and s["requests"] == 40 and s["jobs_in_flight"] == 0


def test_error_tree_and_pickling():
    assert set(errors.__all__) == {
        "AsyncDecodeError", "BackendUnavailableError", "CorruptDataError", "DeviceMemoryError", "EngineClosedError",
        "FrameIndexError", "InvalidRequestError", "StaleStoreError", "TruncatedStreamError", "UnsupportedStreamError",
        "VideoOpenError"}
    assert issubclass(errors.FrameIndexError, IndexError)
    assert issubclass(errors.CorruptDataError, ValueError)
    assert issubclass(errors.StaleStoreError, errors.CorruptDataError)
    assert issubclass(errors.TruncatedStreamError, errors.CorruptDataError)
    assert issubclass(errors.EngineClosedError, RuntimeError)
    assert issubclass(errors.DeviceMemoryError, MemoryError)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, AsyncDecodeError)
        assert name in errors.__doc__
    e = FrameIndexError("frame 9 out of range for a.mp4 (0..3)", path="a.mp4", frame_id=9, device="cpu")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is FrameIndexError and (back.path, back.frame_id, back.device) == ("a.mp4", 9, "cpu")
    assert str(back) == str(e)


async def test_unknown_device():
    with pytest.raises(InvalidRequestError, match="device must be"):
        Engine(device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
async def test_cuda_without_gpu_is_unavailable_and_auto_falls_back():
    from asyncdecode import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="cuda"):
        Engine(device="cuda")
    assert Engine(device="auto").backend.name == "cpu"


async def test_decoder_errors_keep_no_session_frames_alive(eng, assets):
    """An error from a decoder thread, kept by the caller, holds no finished frame's locals (decoders,
    positions, tensors): its tracebacks are cleared before it is handed over."""
    import dataclasses

    from asyncdecode.gop import extract_gops

    path = assets["h264_nob"]
    (bundle,) = extract_gops(path, [10])
    blank = dataclasses.replace(bundle, payload=memoryview(bytes(len(bundle.payload))))  # no picture decodes
    await eng.add_bundles([blank])
    with pytest.raises(CorruptDataError) as info:
        await eng.decode(path, [12])
    checked = 0
    exc, chain = info.value, 0
    while exc is not None and chain < 8:
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if "_backends" in frame.f_code.co_filename:  # the decoder thread's session code
                assert not frame.f_locals, (frame.f_code.co_name, sorted(frame.f_locals))
                checked += 1
            tb = tb.tb_next
        exc, chain = exc.__cause__ or exc.__context__, chain + 1
    assert checked  # the error did come through the session's frames
