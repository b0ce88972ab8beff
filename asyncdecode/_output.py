"""Output format of decoded frames (:class:`OutputSpec`) and YUV -> RGB conversion in torch.

The conversion is defined once, here, and is what every backend must match:

* matrix from the stream's tag (BT.601, BT.709, BT.2020, SMPTE 240M, FCC); unspecified or unknown
  tags use BT.601 and limited range, as FFmpeg's swscale does, so frames match FFmpeg-made references;
* limited range: ``Y' = (Y - 16·2^(n-8)) / (219·2^(n-8))``, ``C' = (C - 2^(n-1)) / (224·2^(n-8))``;
  full range: ``Y' = Y / (2^n - 1)``, ``C' = (C - 2^(n-1)) / (2^n - 1)``, for n-bit samples;
* chroma upsampled by nearest neighbour (pixel (y, x) uses chroma sample (y // sy, x // sx));
* ``R = Y' + 2(1-Kr)·Cr``, ``B = Y' + 2(1-Kb)·Cb``, ``G = (Y' - Kr·R - Kb·B) / Kg``, clipped to [0, 1];
* uint8 output is ``round(255·x)``; float output is ``x`` in [0, 1], then ``(x - mean) / std`` if
  ``normalize`` is given; resizing (bilinear, antialiased when shrinking) happens in float before that.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidRequestError, UnsupportedStreamError

__all__ = ["ColorParams", "OutputSpec", "PlanarLayout", "planar_layout", "yuv_to_output"]

#: (Kr, Kb) of each matrix.
MATRICES: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
    "bt2020c": (0.2627, 0.0593),  # constant luminance is rare; treated as its non-constant twin
    "smpte240m": (0.212, 0.087),
    "fcc": (0.30, 0.11),
}

_DTYPES = (torch.uint8, torch.float16, torch.float32)


@dataclass(frozen=True)
class OutputSpec:
    """How decoded frames are returned. Pass per engine (``EngineConfig.output``) or per call.

    Example:
        >>> OutputSpec(layout="chw", dtype=torch.float16, size=(224, 224),
        ...            normalize=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    """

    format: Literal["rgb", "bgr"] = "rgb"
    """Channel order."""
    layout: Literal["hwc", "chw"] = "hwc"
    """``"hwc"`` (height, width, channel) or ``"chw"``."""
    dtype: torch.dtype = torch.uint8
    """``torch.uint8`` (0..255), ``torch.float16`` or ``torch.float32`` (0..1 before ``normalize``)."""
    size: tuple[int, int] | None = None
    """Resize to ``(height, width)``; ``None`` keeps the stream's display size."""
    normalize: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    """``(mean, std)`` per channel in the 0..1 scale, in the output's channel order; float dtypes only."""

    def frame_bytes(self, height: int, width: int) -> int:
        """Bytes of one output frame of a ``height`` x ``width`` stream (at ``size`` where set)."""
        h, w = self.size or (height, width)
        return 3 * h * w * self.dtype.itemsize

    def __post_init__(self) -> None:
        if self.format not in ("rgb", "bgr"):
            raise InvalidRequestError(f"OutputSpec.format must be 'rgb' or 'bgr', not {self.format!r}")
        if self.layout not in ("hwc", "chw"):
            raise InvalidRequestError(f"OutputSpec.layout must be 'hwc' or 'chw', not {self.layout!r}")
        if self.dtype not in _DTYPES:
            raise InvalidRequestError(
                f"OutputSpec.dtype must be torch.uint8, torch.float16 or torch.float32, not {self.dtype}")
        if self.size is not None:
            if (len(self.size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                               for s in self.size)):
                raise InvalidRequestError(f"OutputSpec.size must be (height, width) > 0, not {self.size!r}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if self.normalize is not None:
            if self.dtype == torch.uint8:
                raise InvalidRequestError("OutputSpec.normalize needs dtype torch.float16 or torch.float32")
            try:
                mean, std = (tuple(float(x) for x in part) for part in self.normalize)
            except (TypeError, ValueError) as exc:
                raise InvalidRequestError(f"OutputSpec.normalize must be (mean, std), not {self.normalize!r}") from exc
            if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
                raise InvalidRequestError("OutputSpec.normalize needs 3 means and 3 non-zero stds")
            object.__setattr__(self, "normalize", (mean, std))

    def shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of one output frame for a stream of ``height`` x ``width``."""
        h, w = self.size or (height, width)
        return (h, w, 3) if self.layout == "hwc" else (3, h, w)

    def __repr__(self) -> str:
        parts = [self.format, self.layout, str(self.dtype).replace("torch.", "")]
        if self.size:
            parts.append(f"{self.size[0]}x{self.size[1]}")
        if self.normalize:
            parts.append("normalized")
        return f"OutputSpec({', '.join(parts)})"


@dataclass(frozen=True)
class PlanarLayout:
    """Sample layout of a planar YUV pixel format."""

    sx: int
    """Horizontal chroma subsampling factor (2 for 4:2:0 and 4:2:2)."""
    sy: int
    """Vertical chroma subsampling factor (2 for 4:2:0)."""
    bits: int
    gray: bool = False
    full_range: bool = False
    """The format itself says full range (the ``yuvj*`` formats)."""


_PLANAR = re.compile(r"^(yuvj?)(420|422|444|440)p(\d+)?(le)?$")
_GRAY = re.compile(r"^gray(\d+)?(le)?$")


@functools.lru_cache(maxsize=64)
def planar_layout(pix_fmt: str) -> PlanarLayout:
    """Layout of ``pix_fmt``, or :class:`UnsupportedStreamError` for formats the engine cannot convert."""
    m = _PLANAR.match(pix_fmt)
    if m:
        prefix, chroma, bits, _ = m.groups()
        sx, sy = {"420": (2, 2), "422": (2, 1), "444": (1, 1), "440": (1, 2)}[chroma]
        return PlanarLayout(sx, sy, int(bits or 8), full_range=prefix == "yuvj")
    m = _GRAY.match(pix_fmt)
    if m:
        return PlanarLayout(1, 1, int(m.group(1) or 8), gray=True)
    raise UnsupportedStreamError(
        f"pixel format {pix_fmt} is not supported (planar YUV 4:2:0/4:2:2/4:4:4 at 8-16 bits, or gray)")


@dataclass(frozen=True)
class ColorParams:
    """Resolved conversion of one stream: matrix, range and bit depth, as affine coefficients."""

    matrix: str
    full_range: bool
    bits: int
    pix_fmt: str

    @classmethod
    def resolve(cls, color_space: str, color_range: str, pix_fmt: str) -> ColorParams:
        layout = planar_layout(pix_fmt)
        matrix = color_space if color_space in MATRICES else "bt601"
        full = color_range == "full" or (color_range != "limited" and layout.full_range)
        return cls(matrix, full, layout.bits, pix_fmt)

    def affine(self) -> tuple[float, float, float, float]:
        """``(y_offset, y_scale, c_offset, c_scale)`` mapping integer samples to Y' in 0..1, C' in ±0.5."""
        n = self.bits
        c_off = float(1 << (n - 1))
        if self.full_range:
            scale = 1.0 / ((1 << n) - 1)
            return 0.0, scale, c_off, scale
        unit = float(1 << (n - 8))
        return 16.0 * unit, 1.0 / (219.0 * unit), c_off, 1.0 / (224.0 * unit)

    def coefficients(self) -> tuple[float, float, float, float]:
        """``(cr_r, cb_g, cr_g, cb_b)``: R = Y' + cr_r·Cr, G = Y' + cb_g·Cb + cr_g·Cr, B = Y' + cb_b·Cb."""
        kr, kb = MATRICES[self.matrix]
        kg = 1.0 - kr - kb
        cr_r = 2.0 * (1.0 - kr)
        cb_b = 2.0 * (1.0 - kb)
        return cr_r, -cb_b * kb / kg, -cr_r * kr / kg, cb_b


def _upsample(c: torch.Tensor, sy: int, sx: int, height: int, width: int) -> torch.Tensor:
    if sy == 1 and sx == 1:
        return c
    hc, wc = c.shape
    up = c[:, None, :, None].expand(hc, sy, wc, sx).reshape(hc * sy, wc * sx)
    return up[:height, :width]


def yuv_to_output(
    y: torch.Tensor,
    u: torch.Tensor | None,
    v: torch.Tensor | None,
    params: ColorParams,
    layout: PlanarLayout,
    spec: OutputSpec,
) -> torch.Tensor:
    """Convert one frame's planes to the output of ``spec`` (on the planes' device).

    Args:
        y: Luma, ``(H, W)`` integer samples (uint8, or int16/int32/uint16 holding n-bit values).
        u, v: Chroma ``(ceil(H/sy), ceil(W/sx))``, or ``None`` for gray.
    """
    if y.device.type == "cpu" and spec.dtype == torch.uint8 and spec.size is None:
        return torch.from_numpy(_rgb8_numpy(y.numpy(), None if u is None else u.numpy(),
                                            None if v is None else v.numpy(), params, layout, spec))
    return _yuv_to_output_torch(y, u, v, params, layout, spec)


_scratch = threading.local()

SCRATCH_KEPT_BYTES = 32 << 20
"""Largest work array a thread keeps between frames (larger ones, 4K frames' say, are made per frame)."""


def _buffer(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A per-thread work array of ``shape``: a view of the thread's one buffer for ``name``, which
    grows to the largest frame seen and serves every smaller one.

    A buffer per name and size, dropped when a set of many sizes overflowed the thread's table, had
    large arrays made and freed all the time on a mixed set (six sizes, five names), fresh pages to
    fault in on each and holes left in the thread's malloc arena between the decoders' long-lived
    memory. One buffer per name is made a few times at most.
    """
    n = math.prod(shape)
    bufs = getattr(_scratch, "buffers", None)
    if bufs is None:
        bufs = _scratch.buffers = {}
    key = (name, dtype)
    flat = bufs.get(key)
    if flat is None or flat.size < n:
        flat = np.empty(n, dtype)
        if flat.nbytes <= SCRATCH_KEPT_BYTES:
            bufs[key] = flat
    return flat[:n].reshape(shape)


def _rgb8_numpy(y: np.ndarray, u: np.ndarray | None, v: np.ndarray | None, params: ColorParams,
                layout: PlanarLayout, spec: OutputSpec) -> np.ndarray:
    """The uint8 conversion on the host: numpy vectorizes the casts and strided writes that this
    needs several times better than torch's CPU kernels do."""
    height, width = y.shape
    y_off, y_scale, c_off, c_scale = params.affine()
    f32 = np.float32
    luma = _buffer("luma", (height, width), f32)
    np.multiply(y, f32(y_scale * 255.0), out=luma, dtype=f32)
    luma -= f32(y_off * y_scale * 255.0)
    if layout.gray or u is None or v is None:
        planes = np.repeat(luma[None], 3, axis=0)
    else:
        cr_r, cb_g, cr_g, cb_b = (f32(k * c_scale * 255.0) for k in params.coefficients())
        hc, wc = u.shape
        cb = _buffer("cb", (hc, wc), f32)
        cr = _buffer("cr", (hc, wc), f32)
        np.subtract(u, f32(c_off), out=cb, dtype=f32)
        np.subtract(v, f32(c_off), out=cr, dtype=f32)
        sy, sx = layout.sy, layout.sx
        term = _buffer("term", (hc, wc), f32)
        full = _buffer("full", (3, hc * sy, wc * sx), f32)
        for c in range(3):  # chroma terms at chroma resolution, written to every pixel they cover
            if c == 0:
                np.multiply(cr, cr_r, out=term)
            elif c == 1:
                np.multiply(cb, cb_g, out=term)
                term += cr * cr_g
            else:
                np.multiply(cb, cb_b, out=term)
            for dy in range(sy):
                for dx in range(sx):
                    full[c, dy::sy, dx::sx] = term
        planes = full[:, :height, :width]
        planes += luma
    np.clip(planes, f32(0.0), f32(255.0), out=planes)
    planes += f32(0.5)  # the cast below truncates: round half up
    order = (2, 1, 0) if spec.format == "bgr" else (0, 1, 2)
    if spec.layout == "chw":
        out = np.empty((3, height, width), np.uint8)
        for i, c in enumerate(order):
            np.copyto(out[i], planes[c], casting="unsafe")
    else:
        out = np.empty((height, width, 3), np.uint8)
        for i, c in enumerate(order):
            np.copyto(out[:, :, i], planes[c], casting="unsafe")
    return out


def _yuv_to_output_torch(
    y: torch.Tensor,
    u: torch.Tensor | None,
    v: torch.Tensor | None,
    params: ColorParams,
    layout: PlanarLayout,
    spec: OutputSpec,
) -> torch.Tensor:
    height, width = y.shape
    y_off, y_scale, c_off, c_scale = params.affine()
    luma = (y.to(torch.float32) - y_off).mul_(y_scale)
    if layout.gray or u is None or v is None:
        chans = [luma, luma, luma]
    else:
        cr_r, cb_g, cr_g, cb_b = (k * c_scale for k in params.coefficients())
        cb = u.to(torch.float32) - c_off
        cr = v.to(torch.float32) - c_off
        # Chroma terms at chroma resolution, upsampled once each: a quarter of the work for 4:2:0.
        r_c = _upsample(cr * cr_r, layout.sy, layout.sx, height, width)
        g_c = _upsample(cb * cb_g + cr * cr_g, layout.sy, layout.sx, height, width)
        b_c = _upsample(cb * cb_b, layout.sy, layout.sx, height, width)
        chans = [luma + r_c, luma + g_c, luma + b_c]
    if spec.format == "bgr":
        chans.reverse()
    return finish_output(torch.stack(chans, dim=0).clamp_(0.0, 1.0), spec)


def finish_output(img: torch.Tensor, spec: OutputSpec) -> torch.Tensor:
    """Resize, lay out, cast and normalize a ``(3, H, W)`` float image in [0, 1] as ``spec`` says."""
    _, height, width = img.shape
    if spec.size is not None and spec.size != (height, width):
        h, w = spec.size
        img = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False,
                            antialias=h < height or w < width)[0].clamp_(0.0, 1.0)
    if spec.layout == "hwc":
        img = img.permute(1, 2, 0)
    if spec.dtype == torch.uint8:
        return img.mul(255.0).add_(0.5).to(torch.uint8).contiguous()  # round half up, as everywhere
    if spec.normalize is not None:
        mean, std = spec.normalize
        shape = (3, 1, 1) if spec.layout == "chw" else (1, 1, 3)
        img = (img - torch.tensor(mean, device=img.device).view(shape)) / torch.tensor(
            std, device=img.device).view(shape)
    return img.to(spec.dtype).contiguous()
