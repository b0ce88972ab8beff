"""OutputSpec and the YUV -> RGB conversion against a float64 reference, every matrix, range and depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asyncdecode import Engine, InvalidRequestError, OutputSpec
from asyncdecode._output import ColorParams, planar_layout, yuv_to_output
from reference import reference_rgb

FORMATS = ["yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv444p10le"]


def _planes(pix_fmt, h, w, rng):
    lay = planar_layout(pix_fmt)
    top = (1 << lay.bits) - 1
    ch, cw = -(-h // lay.sy), -(-w // lay.sx)
    dtype = np.uint8 if lay.bits <= 8 else np.uint16
    return [rng.integers(0, top + 1, size=s).astype(dtype) for s in ((h, w), (ch, cw), (ch, cw))]


def _torch(p):
    return torch.from_numpy(p.astype(np.int16) if p.dtype == np.uint16 else p)


@pytest.mark.parametrize("pix_fmt", FORMATS)
@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("full", [False, True])
def test_rgb_within_one_of_reference(pix_fmt, matrix, full):
    rng = np.random.default_rng(hash((pix_fmt, matrix, full)) % 2**32)
    h, w = 37, 53  # odd: chroma of the last row/column covers one pixel
    planes = _planes(pix_fmt, h, w, rng)
    params = ColorParams.resolve(matrix, "full" if full else "limited", pix_fmt)
    ref = np.clip(reference_rgb(planes, pix_fmt=pix_fmt, matrix=matrix, full_range=full), 0, 255)
    lay = planar_layout(pix_fmt)
    got = yuv_to_output(*(_torch(p) for p in planes), params, lay, OutputSpec())
    assert got.dtype == torch.uint8 and got.shape == (h, w, 3)
    assert np.abs(got.numpy() - ref).max() <= 1.0
    f32 = yuv_to_output(*(_torch(p) for p in planes), params, lay, OutputSpec(dtype=torch.float32, layout="chw"))
    assert np.abs(f32.permute(1, 2, 0).numpy() * 255.0 - ref).max() <= 1e-3
    bgr = yuv_to_output(*(_torch(p) for p in planes), params, lay, OutputSpec(format="bgr"))
    assert torch.equal(bgr, got.flip(-1))


def test_many_sizes_in_turn_reuse_one_work_buffer_per_name(monkeypatch):
    """Frames of many sizes converted in turn on one thread (a mixed set): each result right, and the
    thread's work arrays made once per name and grown only by a larger frame, not made again per size."""
    from asyncdecode import _output

    monkeypatch.setattr(_output, "_scratch", __import__("threading").local())
    made = []
    real_empty = np.empty

    def counting_empty(shape, dtype=float, *args, **kwargs):
        arr = real_empty(shape, dtype, *args, **kwargs)
        if arr.dtype == np.float32:
            made.append(arr.nbytes)
        return arr

    monkeypatch.setattr(_output.np, "empty", counting_empty)
    rng = np.random.default_rng(7)
    params = ColorParams.resolve("bt709", "limited", "yuv420p")
    lay = planar_layout("yuv420p")
    sizes = [(96, 160), (37, 53), (72, 128), (90, 150), (40, 64), (64, 96), (88, 158), (50, 70)]
    for round_ in range(3):
        for h, w in sizes:
            planes = _planes("yuv420p", h, w, rng)
            ref = np.clip(reference_rgb(planes, pix_fmt="yuv420p", matrix="bt709", full_range=False), 0, 255)
            got = yuv_to_output(*(_torch(p) for p in planes), params, lay, OutputSpec())
            assert got.shape == (h, w, 3) and np.abs(got.numpy() - ref).max() <= 1.0, (h, w)
        if round_ == 0:
            first = len(made)
    assert 5 <= first <= 10  # five names (luma, cb, cr, the chroma term, the full planes), grown at most once
    assert len(made) == first  # later rounds make none: every size fits the buffers of the largest


def test_unspecified_tags_follow_swscale_defaults():
    p = ColorParams.resolve("unspecified", "unspecified", "yuv420p")
    assert (p.matrix, p.full_range) == ("bt601", False)
    assert ColorParams.resolve("unspecified", "unspecified", "yuvj420p").full_range
    assert ColorParams.resolve("bt709", "full", "yuv420p") == ColorParams("bt709", True, 8, "yuv420p")


def test_known_colors():
    def one(y, u, v, matrix, full=False):
        t = lambda x: torch.tensor([[x]], dtype=torch.uint8)  # noqa: E731
        params = ColorParams.resolve(matrix, "full" if full else "limited", "yuv444p")
        return yuv_to_output(t(y), t(u), t(v), params, planar_layout("yuv444p"), OutputSpec())[0, 0].tolist()

    assert one(235, 128, 128, "bt709") == [255, 255, 255]
    assert one(16, 128, 128, "bt709") == [0, 0, 0]
    assert one(255, 128, 128, "bt601", full=True) == [255, 255, 255]
    r, g, b = one(81, 90, 240, "bt601")
    assert r >= 254 and g <= 1 and b <= 1


def test_resize_and_normalize():
    rng = np.random.default_rng(0)
    planes = [_torch(p) for p in _planes("yuv420p", 64, 96, rng)]
    params = ColorParams.resolve("bt709", "limited", "yuv420p")
    lay = planar_layout("yuv420p")
    full = yuv_to_output(*planes, params, lay, OutputSpec(dtype=torch.float32, layout="chw"))
    small = yuv_to_output(*planes, params, lay, OutputSpec(dtype=torch.float32, layout="chw", size=(32, 48)))
    assert small.shape == (3, 32, 48)
    exp = torch.nn.functional.interpolate(full[None], size=(32, 48), mode="bilinear", antialias=True)[0]
    assert torch.allclose(small, exp.clamp(0, 1), atol=1e-5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    norm = yuv_to_output(*planes, params, lay, OutputSpec(dtype=torch.float16, layout="hwc", normalize=(mean, std)))
    assert norm.dtype == torch.float16 and norm.shape == (64, 96, 3)
    exp = (full.permute(1, 2, 0) - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(norm.float(), exp, atol=1e-2)
    u8 = yuv_to_output(*planes, params, lay, OutputSpec(size=(100, 150)))
    assert u8.shape == (100, 150, 3) and u8.dtype == torch.uint8


@pytest.mark.parametrize("kwargs, match", [
    (dict(format="yuv"), "format"),
    (dict(layout="nhwc"), "layout"),
    (dict(dtype=torch.int32), "dtype"),
    (dict(size=(0, 10)), "size"),
    (dict(size=(10,)), "size"),
    (dict(normalize=((0.5,) * 3, (0.5,) * 3)), "float16 or torch.float32"),
    (dict(dtype=torch.float32, normalize=((0.5,) * 3, (0.0, 1.0, 1.0))), "non-zero"),
])
def test_invalid_specs(kwargs, match):
    with pytest.raises(InvalidRequestError, match=match):
        OutputSpec(**kwargs)


async def test_engine_output_per_call_and_per_engine(assets):
    path = assets["bt709_limited"]
    spec = OutputSpec(format="bgr", layout="chw", dtype=torch.float32, size=(48, 80))
    async with Engine(device="cpu", output=spec) as eng:
        (a,) = await eng.decode(path, [5])
        (b,) = await eng.decode(path, [5], output=OutputSpec())
    assert a.shape == (3, 48, 80) and a.dtype == torch.float32
    assert b.shape == (96, 160, 3) and b.dtype == torch.uint8
