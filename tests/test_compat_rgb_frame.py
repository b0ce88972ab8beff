"""asyncdecode.compat.accvlab.RGBFrame: zero-copy export (CUDA array interface on the GPU, array
interface on the CPU, DLPack on both) of frames that own their memory."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import InvalidRequestError


@pytest.fixture(scope="module")
def path(assets):
    return str(assets["h264_bframes"])


def _frames(path, device, ids=(4, 9), as_bgr=False):
    with nvc.PyNvGopDecoder(maxfiles=len(ids), device=device) as dec:
        return dec.DecodeN12ToRGB([path] * len(ids), list(ids), as_bgr=as_bgr)


def test_cpu_frames_export_without_copy(path):
    frame, other = _frames(path, "cpu")
    assert frame.shape == [96, 160, 3] and frame.stride == [480, 3, 1] and not frame.isBGR
    assert not hasattr(frame, "__cuda_array_interface__")
    arr = np.asarray(frame)
    assert arr.shape == (96, 160, 3) and arr.dtype == np.uint8 and arr.ctypes.data == frame.dataptr
    t = torch.as_tensor(frame)
    assert t.data_ptr() == frame.dataptr and t.dtype == torch.uint8 and t.device.type == "cpu"
    assert torch.from_dlpack(frame).data_ptr() == frame.dataptr
    assert frame.data.data_ptr() == frame.dataptr and frame.__dlpack_device__() == frame.data.__dlpack_device__()
    assert np.asarray(frame, dtype=np.float32).dtype == np.float32
    assert np.array(frame, copy=True).ctypes.data != frame.dataptr
    assert not np.array_equal(arr, np.asarray(other))  # two frames, two pictures
    assert "rgb 160x96 on cpu" in repr(frame)


def test_bgr_frames(path):
    (rgb,) = _frames(path, "cpu", ids=(9,))
    (bgr,) = _frames(path, "cpu", ids=(9,), as_bgr=True)
    assert bgr.isBGR and np.array_equal(np.asarray(bgr), np.asarray(rgb)[..., ::-1])


def test_frames_own_their_memory(path):
    """Unlike accvlab's pooled frames, a frame stays valid after later decodes and after its decoder
    is gone; views made from it keep it alive."""
    with nvc.PyNvGopDecoder(maxfiles=3, device="cpu") as dec:
        (frame,) = dec.DecodeN12ToRGB([path], [4])
        kept = np.asarray(frame).copy()
        view = np.asarray(frame)
        for i in range(5):
            dec.DecodeN12ToRGB([path] * 3, [i, i + 10, i + 20])
        dec.release_device_memory()
    del frame
    gc.collect()
    assert np.array_equal(view, kept)


def test_construction_checks_the_tensor():
    with pytest.raises(InvalidRequestError, match=r"\(height, width, 3\) uint8"):
        nvc.RGBFrame(torch.zeros(4, 4, 3, dtype=torch.float32))
    with pytest.raises(InvalidRequestError):
        nvc.RGBFrame(torch.zeros(3, 4, 4, dtype=torch.uint8))
    frame = nvc.RGBFrame(torch.zeros(2, 2, 3, dtype=torch.uint8), is_bgr=True)
    assert frame.isBGR and frame.shape == [2, 2, 3]


@pytest.mark.cuda
def test_cuda_frames_export_without_copy(path):
    frame, _ = _frames(path, "cuda")
    assert frame.device == torch.device("cuda", 0)
    cai = frame.__cuda_array_interface__
    assert tuple(cai["shape"]) == (96, 160, 3) and cai["typestr"] == "|u1" and cai["data"][0] == frame.dataptr
    assert not hasattr(frame, "__array_interface__")
    t = torch.as_tensor(frame, device="cuda")
    assert t.data_ptr() == frame.dataptr and t.shape == (96, 160, 3)
    assert torch.from_dlpack(frame).data_ptr() == frame.dataptr
    with pytest.raises(TypeError, match="cuda"):
        np.asarray(frame)
    (cpu_frame,) = _frames(path, "cpu", ids=(4,))
    assert (t.cpu().int() - torch.as_tensor(cpu_frame).int()).abs().max() <= 1
