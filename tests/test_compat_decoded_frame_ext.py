"""asyncdecode.compat.accvlab.DecodedFrameExt: native NV12 / P016 frames from the engine's decoders,
their planes, metadata and zero-copy export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import InvalidRequestError, probe
from reference import reference_frames


def _decode(path, ids, device="cpu"):
    with nvc.PyNvGopDecoder(maxfiles=1, device=device) as dec:
        return dec.Decode([str(path)] * len(ids), list(ids))


def test_nv12_layout_and_metadata(assets):
    path = assets["bt709_full"]
    info = probe(path)
    (frame,) = _decode(path, [13])
    assert frame.format == "NV12" and frame.dtype == np.uint8 and frame.bit_depth == 8
    assert (frame.width, frame.height) == (160, 96)
    assert frame.shape == [96 + 48, 160] and frame.strides == [160, 1] and frame.framesize() == 160 * 144
    assert frame.color_range == 2 and frame.timestamp == info.frame_pts[13]
    assert _decode(assets["h264_nob"], [0])[0].color_range == 0  # untagged
    y, uv = frame.cuda()
    assert y.shape == [96, 160, 1] and y.strides == [160, 1, 1]  # accvlab's luma view
    assert uv.shape == [48, 80, 2] and uv.strides == [160, 2, 1]
    assert frame.GetPtrToPlane(0) == y.dataptr == np.asarray(frame).ctypes.data
    assert frame.GetPtrToPlane(1) == uv.dataptr == np.asarray(frame).ctypes.data + 96 * 160
    assert [p.shape for p in frame.nvcv_image()] == [[96, 160, 1], [48, 80, 2]]
    with pytest.raises(InvalidRequestError, match="plane index must be 0"):
        frame.GetPtrToPlane(2)
    assert "NV12 160x96" in repr(frame)


def test_planes_export_without_copy_and_equal_ffmpeg(assets):
    path = assets["h264_odd420"]  # 174x98: chroma 87 wide, rows of 174 interleaved samples
    ref = reference_frames(path)[21]
    (frame,) = _decode(path, [21])
    whole = np.asarray(frame)
    assert whole.shape == (98 + 49, 174) and not hasattr(frame, "__cuda_array_interface__")
    y, uv = frame.cuda()
    ya, uva = np.asarray(y), np.asarray(uv)
    assert ya.ctypes.data == whole.ctypes.data and uva.ctypes.data == whole.ctypes.data + 98 * 174
    assert np.array_equal(ya[..., 0], ref.planes[0])
    assert np.array_equal(uva[..., 0], ref.planes[1]) and np.array_equal(uva[..., 1], ref.planes[2])
    assert torch.as_tensor(y).data_ptr() == y.dataptr and torch.from_dlpack(uv).data_ptr() == uv.dataptr
    assert torch.from_dlpack(frame).shape == (147, 174)


def test_p016_for_10bit(assets):
    path = assets["hevc_10bit"]
    (frame,) = _decode(path, [30])
    assert frame.format == "P016" and frame.dtype == np.uint16 and frame.bit_depth == 10
    assert frame.framesize() == 2 * frame.shape[0] * frame.shape[1]
    y = np.asarray(frame.cuda()[0])
    assert y.dtype == np.uint16 and np.array_equal(y[..., 0] >> 6, reference_frames(path)[30].planes[0])


@pytest.mark.cuda
def test_cuda_planes_equal_the_cpu_ones(assets):
    path = assets["h264_bframes"]
    (gpu,) = _decode(path, [17], device="cuda")
    (cpu,) = _decode(path, [17], device="cpu")
    assert gpu.format == "NV12" and not hasattr(gpu, "__array_interface__")
    for g, c in zip(gpu.cuda(), cpu.cuda()):
        cai = g.__cuda_array_interface__
        assert cai["data"][0] == g.dataptr
        t = torch.as_tensor(g, device="cuda")
        assert t.data_ptr() == g.dataptr
        assert torch.equal(t.cpu(), torch.as_tensor(c))  # decoding is exact on both
    assert torch.equal(torch.from_dlpack(gpu).cpu(), torch.as_tensor(cpu))
    assert gpu.timestamp == cpu.timestamp
