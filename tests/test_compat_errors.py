"""Errors through the accvlab layer are RuntimeError (accvlab's contract) and the specific asyncdecode
error at once, with the same message and fields, and they pickle."""

from __future__ import annotations

import pickle

import pytest

import asyncdecode.compat.accvlab as nvc
from asyncdecode import (AsyncDecodeError, CorruptDataError, FrameIndexError, InvalidRequestError, VideoOpenError,
                         probe)
from asyncdecode.compat import _errors


@pytest.fixture
def files(assets):
    return [str(assets["h264_bframes"]), str(assets["hevc_closed"])]


def test_gop_decoder_errors_are_runtime_errors_too(files, tmp_path):
    n = probe(files[0]).num_frames
    missing = str(tmp_path / "nope.mp4")
    with nvc.CreateGopDecoder(maxfiles=2, iGpu=0) as decoder:
        with pytest.raises(RuntimeError, match=f"frame {n} out of range") as err:
            decoder.DecodeN12ToRGB([files[0]], [n])
        assert isinstance(err.value, FrameIndexError) and isinstance(err.value, IndexError)
        assert err.value.path == files[0] and err.value.frame_id == n
        assert isinstance(err.value.__cause__, FrameIndexError) and not isinstance(err.value.__cause__, RuntimeError)
        with pytest.raises(RuntimeError, match="nope.mp4") as err:
            decoder.GetGOP([files[0], missing], [0, 0])
        assert isinstance(err.value, VideoOpenError) and isinstance(err.value, OSError)
        with pytest.raises(RuntimeError, match="2 filepaths but 1 frame_ids") as err:
            decoder.DecodeN12ToRGB(files, [0])
        assert isinstance(err.value, InvalidRequestError)
        frames = decoder.DecodeN12ToRGB(files, [1, 2])  # the decoder goes on after errors
        assert len(frames) == 2


def test_sample_reader_and_module_functions_raise_runtime_errors(files, tmp_path):
    with pytest.raises(RuntimeError) as err:
        nvc.CreateSampleReader(num_of_set=0, num_of_file=2, iGpu=0)
    assert isinstance(err.value, InvalidRequestError)
    with nvc.CreateSampleReader(num_of_set=1, num_of_file=2, iGpu=0) as reader:
        with pytest.raises(RuntimeError, match="no decode is waiting") as err:
            reader.DecodeN12ToRGBAsyncGetBuffer(files, [0, 0])
        assert isinstance(err.value, InvalidRequestError)
    with pytest.raises(RuntimeError, match="nothere.mp4") as err:
        nvc.GetFastInitInfo([str(tmp_path / "nothere.mp4")])
    assert isinstance(err.value, VideoOpenError)
    with pytest.raises(RuntimeError) as err:
        nvc.SavePacketsToFile(b"not bundles", str(tmp_path / "x.bin"))
    assert isinstance(err.value, CorruptDataError) and isinstance(err.value, ValueError)


def test_the_errors_keep_message_fields_and_pickle():
    exc = FrameIndexError("frame 9 out of range for a.mp4 (0..3)", path="a.mp4", frame_id=9, device="cpu")
    dual = _errors.as_runtime_error(exc)
    assert isinstance(dual, RuntimeError) and isinstance(dual, FrameIndexError) and isinstance(dual, AsyncDecodeError)
    assert str(dual) == str(exc) and (dual.path, dual.frame_id, dual.device) == ("a.mp4", 9, "cpu")
    assert type(dual).__name__ == "FrameIndexError"
    back = pickle.loads(pickle.dumps(dual))
    assert type(back) is type(dual) and str(back) == str(dual) and back.frame_id == 9
    assert _errors.as_runtime_error(dual) is dual
