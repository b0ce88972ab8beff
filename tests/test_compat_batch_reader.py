"""asyncdecode.compat.accvlab.PyNvBatchAsyncStreamReader / CreateBatchAsyncStreamReader: V files x F
frames per request, its argument checks, the one-request buffer, its errors and its lifetime."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import EngineClosedError, FrameIndexError, InvalidRequestError, VideoOpenError, probe

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module", params=DEVICES)
def reader(request):
    with nvc.PyNvBatchAsyncStreamReader(num_of_set=1, num_of_file=3, max_frames_per_decode_call=4,
                                        device=request.param) as r:
        yield r


@pytest.fixture(scope="module")
def files(assets):
    """Three clips, the last at another size (a batch may mix sizes)."""
    return [str(assets["h264_bframes"]), str(assets["hevc_closed"]), str(assets["h264_odd420"])]


# Unsorted, repeated, across GOP boundaries (GOPs of 12), a different set per file.
FRAME_IDS = [[0, 13, 5, 13], [2, 3, 30, 1], [47, 7, 24, 11]]


def _tensors(frames, device):
    return [[torch.as_tensor(f, device=device).clone() for f in row] for row in frames]


def _one_by_one(files, frame_ids, device, as_bgr=False):
    """The same frames through the one-frame-per-file path: step f of every file at a time."""
    with nvc.PyNvSampleReader(num_of_set=1, num_of_file=len(files), device=device.type) as one:
        out = [[None] * len(frame_ids[0]) for _ in files]
        for f in range(len(frame_ids[0])):
            step = one.DecodeN12ToRGB(files, [ids[f] for ids in frame_ids], as_bgr=as_bgr)
            for v, frame in enumerate(step):
                out[v][f] = torch.as_tensor(frame, device=device).clone()
    return out


def _same(a, b):
    return len(a) == len(b) and all(len(x) == len(y) and all(torch.equal(s, t) for s, t in zip(x, y))
                                    for x, y in zip(a, b))


def test_frames_come_back_file_by_frame(reader, files):
    assert reader.Decode(files, FRAME_IDS) is None  # returns at once; the frames decode in the background
    frames = reader.GetBuffer(files, FRAME_IDS)
    assert [len(row) for row in frames] == [4, 4, 4]
    for path, row in zip(files, frames):
        info = probe(path)
        for frame in row:
            assert isinstance(frame, nvc.RGBFrame) and not frame.isBGR and frame.device == reader.device
            tensor = torch.as_tensor(frame, device=reader.device)
            assert tensor.dtype == torch.uint8 and tensor.device == reader.device
            assert tuple(tensor.shape) == (info.height, info.width, 3)
    assert frames[0][0].shape != frames[2][0].shape


@pytest.mark.parametrize("as_bgr", [False, True])
def test_same_pixels_as_the_one_frame_path(reader, files, as_bgr):
    reader.Decode(files, FRAME_IDS, as_bgr=as_bgr)
    frames = reader.GetBuffer(files, FRAME_IDS, as_bgr)
    assert all(f.isBGR == as_bgr for row in frames for f in row)
    assert _same(_tensors(frames, reader.device), _one_by_one(files, FRAME_IDS, reader.device, as_bgr))


def test_bgr_is_rgb_with_channels_reversed(reader, files):
    ids = [[4, 5], [6, 7]]
    reader.Decode(files[:2], ids)
    rgb = _tensors(reader.GetBuffer(files[:2], ids), reader.device)
    reader.Decode(files[:2], ids, True)
    bgr = _tensors(reader.GetBuffer(files[:2], ids, True), reader.device)
    assert _same([[t.flip(-1) for t in row] for row in rgb], bgr)


def test_one_file_and_one_frame_per_file(reader, files):
    reader.Decode(files[:1], [[9, 10, 11, 12]])
    assert _same(_tensors(reader.GetBuffer(files[:1], [[9, 10, 11, 12]]), reader.device),
                 _one_by_one(files[:1], [[9, 10, 11, 12]], reader.device))
    reader.Decode(files, [[3], [3], [3]])
    assert _same(_tensors(reader.GetBuffer(files, [[3], [3], [3]]), reader.device),
                 _one_by_one(files, [[3], [3], [3]], reader.device))


def test_numpy_frame_ids(reader, files):
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    reader.Decode(files[:2], ids)
    frames = reader.GetBuffer(files[:2], [[1, 2], [3, 4]])  # the same request, given as lists
    assert _same(_tensors(frames, reader.device), _one_by_one(files[:2], [[1, 2], [3, 4]], reader.device))


def test_create_batch_async_stream_reader(files):
    reader = nvc.CreateBatchAsyncStreamReader(num_of_set=1, num_of_file=2, max_frames_per_decode_call=2, iGpu=0,
                                              suppressNoColorRangeWarning=True, device="cpu")
    try:
        assert isinstance(reader, nvc.PyNvBatchAsyncStreamReader)
        assert (reader.num_of_set, reader.num_of_file, reader.max_frames_per_decode_call) == (1, 2, 2)
        reader.Decode(files[:2], [[0, 1], [0, 1]])
        assert [len(row) for row in reader.GetBuffer(files[:2], [[0, 1], [0, 1]])] == [2, 2]
    finally:
        reader.close()


@pytest.mark.parametrize("args, match", [
    ((0, 1, 1), "num_of_set must be a positive int, not 0"),
    ((-1, 1, 1), "num_of_set"),
    ((1, 0, 1), "num_of_file must be a positive int, not 0"),
    ((1, -1, 1), "num_of_file"),
    ((1, 1, 0), "max_frames_per_decode_call must be a positive int, not 0"),
    ((1, 1, -1), "max_frames_per_decode_call"),
    ((1, 1, 2.0), "max_frames_per_decode_call must be a positive int, not 2.0"),
    ((1, True, 1), "num_of_file"),
])
def test_constructor_arguments(args, match):
    with pytest.raises(RuntimeError, match=match) as err:
        nvc.CreateBatchAsyncStreamReader(*args, device="cpu")
    assert isinstance(err.value, InvalidRequestError) and isinstance(err.value, ValueError)
    with pytest.raises(InvalidRequestError, match=match):
        nvc.PyNvBatchAsyncStreamReader(*args, device="cpu")


def test_device_arguments():
    with pytest.raises(RuntimeError, match="iGpu"):
        nvc.PyNvBatchAsyncStreamReader(1, 1, 1, iGpu="0")
    with pytest.raises(RuntimeError, match="suppressNoColorRangeWarning must be a bool"):
        nvc.PyNvBatchAsyncStreamReader(1, 1, 1, suppressNoColorRangeWarning=None, device="cpu")


@pytest.mark.parametrize("which, frame_ids, as_bgr, match", [
    (3, [[0]], False, r"3 filepaths but 1 lists of frame ids \(one list per file path\)"),
    (0, [], False, "filepaths must not be empty"),
    (4, [[0]] * 4, False, r"4 files asked for, more than num_of_file=3 allows \(Number of files \(4\) exceeds "
                          r"num_of_file \(3\)\)"),
    (3, [[0, 1, 2, 3, 4]] * 3, False, r"5 frames per file, more than max_frames_per_decode_call=4 allows \(frames per "
                                      r"video \(5\) exceeds max_frames_per_decode_call \(4\)\)"),
    (3, [[0, 1], [0, 1], [0]], False, r"frame_ids\[2\] has 1 frame ids but frame_ids\[0\] has 2; every file must "
                                      "ask for the same number of frames"),
    (3, [[], [], []], False, r"frame_ids\[0\] is empty; the lists of frame ids must not be empty"),
    (3, [0, 1, 2], False, r"frame_ids\[0\] must be a list of frame ids, not int"),
    (3, "012", False, "frame_ids must be a list of lists of frame ids, one per file path, not str"),
    (3, [[0], ["1"], [2]], False, "frame ids must be ints, not str"),
    (3, [[0], [1.5], [2]], False, "frame ids must be ints, not float"),
    (3, [[0], [1], [2]], 1, "as_bgr must be a bool, not int"),
])
def test_decode_checks_its_arguments_at_once(reader, files, which, frame_ids, as_bgr, match):
    paths = (files * 2)[:which]
    reader.Decode(files[:1], [[8]])  # a waiting request is untouched by a malformed call
    with pytest.raises(RuntimeError, match=match) as err:
        reader.Decode(paths, frame_ids, as_bgr)
    assert isinstance(err.value, InvalidRequestError)
    with pytest.raises(InvalidRequestError, match=match):
        reader.GetBuffer(paths, frame_ids, as_bgr)
    assert _same(_tensors(reader.GetBuffer(files[:1], [[8]]), reader.device),
                 _one_by_one(files[:1], [[8]], reader.device))


def test_getbuffer_without_a_decode(reader, files):
    with pytest.raises(RuntimeError, match=r"GetBuffer: no decode is waiting to be collected; call "
                                           r"Decode\(filepaths, frame_ids, as_bgr\) first") as err:
        reader.GetBuffer(files, FRAME_IDS)
    assert isinstance(err.value, InvalidRequestError)
    reader.Decode(files, FRAME_IDS)
    reader.GetBuffer(files, FRAME_IDS)
    with pytest.raises(InvalidRequestError, match="no decode is waiting"):  # collected once only
        reader.GetBuffer(files, FRAME_IDS)


def test_getbuffer_with_other_arguments(reader, files):
    ids = [[1, 2], [3, 4], [5, 6]]
    reader.Decode(files, ids)
    with pytest.raises(RuntimeError, match=r"GetBuffer: filepaths differ from the waiting request's \(filepaths=") \
            as err:
        reader.GetBuffer([files[1], files[0], files[2]], ids)
    assert isinstance(err.value, InvalidRequestError)
    with pytest.raises(InvalidRequestError, match=r"frame_ids differ .*frame_ids=\[\[1, 2\], \[3, 4\], \[5, 6\]\].*"
                                                  r"asked: .*frame_ids=\[\[1, 2\], \[3, 4\], \[5, 7\]\]"):
        reader.GetBuffer(files, [[1, 2], [3, 4], [5, 7]])
    with pytest.raises(InvalidRequestError, match="frame_ids differ"):
        reader.GetBuffer(files, [[2, 1], [3, 4], [5, 6]])  # the order of the frames is part of the request
    with pytest.raises(InvalidRequestError, match="as_bgr differ"):
        reader.GetBuffer(files, ids, as_bgr=True)
    with pytest.raises(InvalidRequestError, match="filepaths and frame_ids differ"):
        reader.GetBuffer(files[:2], ids[:2])
    frames = reader.GetBuffer(files, ids)  # the request waited through the mistakes
    assert _same(_tensors(frames, reader.device), _one_by_one(files, ids, reader.device))


def test_a_new_decode_keeps_only_the_latest_request(reader, files, caplog):
    first, second = [[0, 1], [0, 1], [0, 1]], [[20, 21], [20, 21], [20, 21]]
    reader.Decode(files, first)
    with caplog.at_level(logging.WARNING, logger="asyncdecode"):
        reader.Decode(files, second)
    assert "Decode called again before GetBuffer" in caplog.text
    assert "frame_ids=[[0, 1], [0, 1], [0, 1]]" in caplog.text
    with pytest.raises(RuntimeError, match="frame_ids differ") as err:
        reader.GetBuffer(files, first)
    assert isinstance(err.value, InvalidRequestError)
    frames = reader.GetBuffer(files, second)
    assert _same(_tensors(frames, reader.device), _one_by_one(files, second, reader.device))
    with pytest.raises(InvalidRequestError, match="no decode is waiting"):
        reader.GetBuffer(files, first)


def test_frames_stay_valid_after_the_next_decode(reader, files):
    reader.Decode(files, FRAME_IDS)
    kept = reader.GetBuffer(files, FRAME_IDS)  # no clone
    reader.Decode(files, [[40, 41, 42, 43]] * 3)
    reader.GetBuffer(files, [[40, 41, 42, 43]] * 3)
    assert _same([[torch.as_tensor(f, device=reader.device) for f in row] for row in kept],
                 _one_by_one(files, FRAME_IDS, reader.device))


def test_a_request_error_reaches_getbuffer_and_the_reader_goes_on(reader, files, tmp_path):
    missing = str(tmp_path / "gone.mp4")
    paths = [files[0], missing, files[2]]
    reader.Decode(paths, [[0, 1]] * 3)  # returns: the error is the request's
    with pytest.raises(RuntimeError, match="gone.mp4") as err:
        reader.GetBuffer(paths, [[0, 1]] * 3)
    assert isinstance(err.value, VideoOpenError) and isinstance(err.value, OSError)
    assert err.value.path == missing
    assert isinstance(err.value.__cause__, VideoOpenError) and not isinstance(err.value.__cause__, RuntimeError)
    with pytest.raises(InvalidRequestError, match="no decode is waiting"):  # the failed request is gone
        reader.GetBuffer(paths, [[0, 1]] * 3)

    n = probe(files[1]).num_frames
    bad = [[0, 1], [2, n], [4, 5]]
    reader.Decode(files, bad)
    with pytest.raises(RuntimeError, match=f"frame {n} out of range for .*hevc_closed.mp4") as err:
        reader.GetBuffer(files, bad)
    assert isinstance(err.value, FrameIndexError) and isinstance(err.value, IndexError)
    assert (err.value.path, err.value.frame_id) == (files[1], n)

    reader.Decode(files, FRAME_IDS)
    assert _same(_tensors(reader.GetBuffer(files, FRAME_IDS), reader.device),
                 _one_by_one(files, FRAME_IDS, reader.device))


def test_release_calls_keep_a_waiting_request(files):
    ids = [[7, 8], [7, 8]]
    with nvc.PyNvBatchAsyncStreamReader(1, 2, 2, device="cpu") as reader:
        expected = _one_by_one(files[:2], ids, reader.device)
        reader.Decode(files[:2], ids)
        reader.release_decoder()  # finished first, still collectable
        assert _same(_tensors(reader.GetBuffer(files[:2], ids), "cpu"), expected)
        reader.Decode(files[:2], ids)
        reader.clearAllReaders()  # accvlab's clearAllReaders of this reader keeps the request, too
        assert _same(_tensors(reader.GetBuffer(files[:2], ids), "cpu"), expected)
        reader.release_device_memory()
        reader.Decode(files[:2], ids)
        assert _same(_tensors(reader.GetBuffer(files[:2], ids), "cpu"), expected)


def test_close_releases_the_engine(files):
    before = set(threading.enumerate())
    reader = nvc.CreateBatchAsyncStreamReader(1, 3, 4, device="cpu")
    reader.Decode(files, FRAME_IDS)
    reader.GetBuffer(files, FRAME_IDS)
    started = [t for t in set(threading.enumerate()) - before if t.name.startswith("asyncdecode")]
    assert started
    reader.Decode(files, [[30, 31, 32, 33]] * 3)  # still waiting when the reader closes: dropped
    reader.close()
    assert not any(t.is_alive() for t in started)
    assert repr(reader) == "<PyNvBatchAsyncStreamReader on closed>"
    with pytest.raises(RuntimeError, match="GetBuffer: the reader is closed") as err:
        reader.GetBuffer(files, [[30, 31, 32, 33]] * 3)
    assert isinstance(err.value, EngineClosedError)
    with pytest.raises(EngineClosedError, match="Decode: the reader is closed"):
        reader.Decode(files, FRAME_IDS)
    reader.close()  # idempotent
