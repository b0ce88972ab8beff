"""asyncdecode.compat.accvlab.PyNvSampleReader / CreateSampleReader: sync and async decoding, the
one-request buffer of the async API and its errors."""

from __future__ import annotations

import logging

import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import FrameIndexError, InvalidRequestError, VideoOpenError, probe
from reference import reference_frames

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module", params=DEVICES)
def reader(request):
    with nvc.PyNvSampleReader(num_of_set=2, num_of_file=3, device=request.param) as r:
        yield r


@pytest.fixture(scope="module")
def files(assets):
    return [str(assets["h264_bframes"]), str(assets["hevc_closed"])]


def _tensors(frames, device):
    return [torch.as_tensor(frame, device=device).clone() for frame in frames]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_decode_examples(reader, files):
    frames = reader.Decode(files, [0, 10])
    assert len(frames) == 2 and all(isinstance(f, nvc.DecodedFrameExt) for f in frames)
    ref = reference_frames(files[1])[10]
    y = torch.as_tensor(frames[1].cuda()[0], device=frames[1].device).cpu().numpy()[..., 0]  # (H, W, 1)
    assert (y == ref.planes[0]).all()
    rgb_frames = reader.DecodeN12ToRGB(files, [0, 10], as_bgr=True)
    assert len(rgb_frames) == 2 and all(f.isBGR for f in rgb_frames)


def test_create_sample_reader_example(files):
    reader = nvc.CreateSampleReader(num_of_set=2, num_of_file=3, iGpu=0, device="cpu")
    try:
        assert isinstance(reader, nvc.PyNvSampleReader)
        frames = reader.Decode(files, [0, 10])
        assert [f.timestamp for f in frames] == [probe(files[0]).frame_pts[0], probe(files[1]).frame_pts[10]]
    finally:
        reader.close()


def test_async_then_getbuffer_equals_sync(reader, files):
    device = reader.device
    reader.DecodeN12ToRGBAsync(files, [0, 10], as_bgr=False)
    frames = reader.DecodeN12ToRGBAsyncGetBuffer(files, [0, 10], False)
    tensor_list = _tensors(frames, device)
    assert _same(tensor_list, _tensors(reader.DecodeN12ToRGB(files, [0, 10]), device))
    reader.DecodeN12ToRGBAsync(files, [5, 6], True)
    bgr = reader.DecodeN12ToRGBAsyncGetBuffer(files, [5, 6], as_bgr=True)
    assert all(f.isBGR for f in bgr)
    assert _same(_tensors(bgr, device), _tensors(reader.DecodeN12ToRGB(files, [5, 6], as_bgr=True), device))


def test_stream_access_reads_forward(reader, files):
    """Frame t, then t+1 ... of two clips, one request ahead (the pattern the sample reader is for)."""
    device = reader.device
    with nvc.PyNvGopDecoder(maxfiles=16, device=device.type) as by_index:
        expected = _tensors(by_index.DecodeN12ToRGB([files[0]] * 8 + [files[1]] * 8, list(range(8)) * 2), device)
    got = []
    reader.DecodeN12ToRGBAsync(files, [0, 0])
    for t in range(8):
        frames = reader.DecodeN12ToRGBAsyncGetBuffer(files, [t, t])
        if t + 1 < 8:
            reader.DecodeN12ToRGBAsync(files, [t + 1, t + 1])
        got.append(_tensors(frames, device))
    assert _same([g[0] for g in got] + [g[1] for g in got], expected)


def test_getbuffer_argument_mismatch(reader, files):
    reader.DecodeN12ToRGBAsync(files, [1, 2])
    with pytest.raises(InvalidRequestError,
                       match=r"frame_ids differ from the waiting request's \(.*frame_ids=\[1, 2\]"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [1, 3])
    with pytest.raises(InvalidRequestError, match="filepaths differ"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files[::-1], [1, 2])
    with pytest.raises(InvalidRequestError, match="as_bgr differ"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [1, 2], True)
    with pytest.raises(InvalidRequestError, match="2 filepaths but 1 frame_ids"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [1])
    frames = reader.DecodeN12ToRGBAsyncGetBuffer(files, [1, 2])  # the request waited through the mistakes
    assert _same(_tensors(frames, reader.device), _tensors(reader.DecodeN12ToRGB(files, [1, 2]), reader.device))


def test_getbuffer_with_nothing_waiting(reader, files):
    with pytest.raises(InvalidRequestError, match="no decode is waiting to be collected; call DecodeN12ToRGBAsync"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [0, 0])
    reader.DecodeN12ToRGBAsync(files, [0, 0])
    reader.DecodeN12ToRGBAsyncGetBuffer(files, [0, 0])
    with pytest.raises(InvalidRequestError, match="no decode is waiting"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [0, 0])


def test_worker_errors_surface_at_getbuffer(reader, files, tmp_path):
    missing = str(tmp_path / "gone.mp4")
    reader.DecodeN12ToRGBAsync([files[0], missing], [0, 0])  # returns: the error is the request's
    with pytest.raises(VideoOpenError, match="gone.mp4") as err:
        reader.DecodeN12ToRGBAsyncGetBuffer([files[0], missing], [0, 0])
    assert err.value.path == missing
    n = probe(files[1]).num_frames
    reader.DecodeN12ToRGBAsync(files, [0, n + 5])
    with pytest.raises(FrameIndexError, match=f"frame {n + 5} out of range for .*hevc_closed.mp4"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [0, n + 5])
    with pytest.raises(InvalidRequestError, match="no decode is waiting"):  # the failed request is gone
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [0, n + 5])
    with pytest.raises(InvalidRequestError, match="frame ids must be ints"):  # malformed: raised at once
        reader.DecodeN12ToRGBAsync(files, [0, "1"])


def test_async_twice_keeps_the_second(reader, files, caplog):
    reader.DecodeN12ToRGBAsync(files, [3, 3])
    with caplog.at_level(logging.WARNING, logger="asyncdecode"):
        reader.DecodeN12ToRGBAsync(files, [4, 4])
    assert "result of the earlier request" in caplog.text and "frame_ids=[3, 3]" in caplog.text
    with pytest.raises(InvalidRequestError, match="differ"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [3, 3])
    assert len(reader.DecodeN12ToRGBAsyncGetBuffer(files, [4, 4])) == 2


def test_release_calls_leave_the_reader_usable(files):
    with nvc.PyNvSampleReader(1, 2, device="cpu") as reader:
        before = _tensors(reader.DecodeN12ToRGB(files, [7, 8]), "cpu")
        reader.DecodeN12ToRGBAsync(files, [7, 8])
        reader.release_decoder()  # a waiting request is finished first and stays collectable
        assert _same(_tensors(reader.DecodeN12ToRGBAsyncGetBuffer(files, [7, 8]), "cpu"), before)
        reader.release_device_memory()
        assert _same(_tensors(reader.DecodeN12ToRGB(files, [7, 8]), "cpu"), before)
        reader.DecodeN12ToRGBAsync(files, [7, 8])
        reader.clearAllReaders()  # drops the waiting request
        with pytest.raises(InvalidRequestError, match="no decode is waiting"):
            reader.DecodeN12ToRGBAsyncGetBuffer(files, [7, 8])
        assert _same(_tensors(reader.DecodeN12ToRGB(files, [7, 8]), "cpu"), before)
        reader.clearAllReaders()
        reader.DecodeN12ToRGBAsync(files, [7, 8])
        assert _same(_tensors(reader.DecodeN12ToRGBAsyncGetBuffer(files, [7, 8]), "cpu"), before)


def test_constructor_arguments():
    with pytest.raises(InvalidRequestError, match="num_of_set"):
        nvc.PyNvSampleReader(0, 1)
    with pytest.raises(InvalidRequestError, match="num_of_file"):
        nvc.CreateSampleReader(1, -2)
    with pytest.raises(InvalidRequestError, match="iGpu"):
        nvc.CreateSampleReader(1, 1, iGpu="0")
