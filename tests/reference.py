"""Reference decode and the exact YUV -> RGB conversion the engine promises.

``reference_frames`` decodes with plain PyAV (FFmpeg's choice of stream, output
order); frame id ``i`` is the ``i``-th frame output, i.e. presentation order.
``reference_rgb`` is the conversion contract, in float64 and unclipped; an
engine's uint8 output must satisfy ``|engine - clip(ref, 0, 255)| <= 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

Matrix = Literal["bt601", "bt709", "bt2020"]

# (Kr, Kb) per matrix; Kg = 1 - Kr - Kb.
KR_KB: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}

# AVColorSpace / AVColorRange values.
AVCOL_SPC_BT709 = 1
AVCOL_SPC_UNSPECIFIED = 2
AVCOL_SPC_BT470BG = 5
AVCOL_SPC_SMPTE170M = 6
AVCOL_SPC_BT2020_NCL = 9
AVCOL_SPC_BT2020_CL = 10
AVCOL_RANGE_UNSPECIFIED = 0
AVCOL_RANGE_MPEG = 1
AVCOL_RANGE_JPEG = 2


@dataclass(frozen=True)
class RefFrame:
    """One decoded frame: timestamp, cropped planes and colour tags."""

    pts: int
    planes: tuple[np.ndarray, ...]  # visible samples; uint8, or uint16 values for >8 bit
    pix_fmt: str
    colorspace: int
    color_range: int

    @property
    def height(self) -> int:
        return int(self.planes[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.planes[0].shape[1])

    def rgb(self) -> np.ndarray:
        """:func:`reference_rgb` of this frame with the matrix/range FFmpeg would assume."""
        return reference_rgb(
            self.planes,
            pix_fmt=self.pix_fmt,
            matrix=matrix_of(self.colorspace),
            full_range=full_range_of(self.color_range, self.pix_fmt),
        )


def frame_planes(frame: av.VideoFrame) -> tuple[np.ndarray, ...]:
    """Copy each plane of ``frame`` cropped to its visible size (line padding removed)."""
    fmt = frame.format
    bits = max(c.bits for c in fmt.components)
    dtype = np.dtype(np.uint8) if bits <= 8 else np.dtype(">u2" if fmt.is_big_endian else "<u2")
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
        out.append(rows[:, : plane.width].astype(dtype.newbyteorder("=")))
    return tuple(out)


def reference_frames(path: str | os.PathLike[str]) -> list[RefFrame]:
    """Decode every frame of FFmpeg's best video stream with PyAV, in output order."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.best("video")
        if stream is None:
            raise ValueError(f"{path}: no video stream")
        return [
            RefFrame(
                pts=int(frame.pts),
                planes=frame_planes(frame),
                pix_fmt=frame.format.name,
                colorspace=int(frame.colorspace),
                color_range=int(frame.color_range),
            )
            for frame in container.decode(stream)
        ]


def matrix_of(colorspace: int) -> Matrix:
    """Matrix for an AVColorSpace value, defaulting like swscale (unspecified -> BT.601)."""
    if colorspace == AVCOL_SPC_BT709:
        return "bt709"
    if colorspace in (AVCOL_SPC_BT2020_NCL, AVCOL_SPC_BT2020_CL):
        return "bt2020"
    return "bt601"


def full_range_of(color_range: int, pix_fmt: str) -> bool:
    """Whether samples are full range; unspecified means limited except for ``yuvj*``."""
    if color_range == AVCOL_RANGE_JPEG:
        return True
    if color_range == AVCOL_RANGE_MPEG:
        return False
    return pix_fmt.startswith("yuvj")


def reference_rgb(
    planes: tuple[np.ndarray, ...] | list[np.ndarray],
    *,
    pix_fmt: str,
    matrix: Matrix,
    full_range: bool,
) -> np.ndarray:
    """Convert planar Y, Cb, Cr samples to float64 ``(H, W, 3)`` RGB in 0..255 scale.

    Nearest chroma upsampling (pixel ``(y, x)`` uses chroma ``(y // sy, x // sx)``),
    the matrix's Kr/Kb, limited or full range at the format's bit depth.
    Not clipped, not rounded.
    """
    fmt = av.VideoFormat(pix_fmt)
    if len(planes) != 3 or len({c.plane for c in fmt.components[:3]}) != 3 or fmt.is_rgb:
        raise ValueError(f"reference_rgb needs a planar YUV format, got {pix_fmt}")
    bits = fmt.components[0].bits
    sx = 1024 // fmt.chroma_width(1024)
    sy = 1024 // fmt.chroma_height(1024)
    luma = np.asarray(planes[0], dtype=np.float64)
    h, w = luma.shape
    rows, cols = np.arange(h)[:, None] // sy, np.arange(w)[None, :] // sx
    cb = np.asarray(planes[1], dtype=np.float64)[rows, cols]
    cr = np.asarray(planes[2], dtype=np.float64)[rows, cols]

    scale = 2.0 ** (bits - 8)
    mid = 2.0 ** (bits - 1)
    if full_range:
        y_n = luma / (2.0**bits - 1)
        cb_n, cr_n = (cb - mid) / (2.0**bits - 1), (cr - mid) / (2.0**bits - 1)
    else:
        y_n = (luma - 16 * scale) / (219 * scale)
        cb_n, cr_n = (cb - mid) / (224 * scale), (cr - mid) / (224 * scale)

    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    r = y_n + 2 * (1 - kr) * cr_n
    b = y_n + 2 * (1 - kb) * cb_n
    g = (y_n - kr * r - kb * b) / kg
    return 255.0 * np.stack([r, g, b], axis=-1)
