"""Frame objects of the accvlab layer: torch tensors behind accvlab's ``RGBFrame`` / ``DecodedFrameExt``.

Each object holds the tensor the engine returned (or a view of it) and exports that memory without a
copy: ``__cuda_array_interface__`` on a CUDA device, ``__array_interface__`` / ``__array__`` on the
host, DLPack on both. The object keeps the tensor alive, and so does every array or tensor made from
it: the frame owns its memory (no pool that a later decode reuses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidRequestError, UnsupportedStreamError
from ._values import PixelFormat

__all__ = ["DecodedFrameExt", "PlaneView", "RGBFrame", "nv12_from_planes"]


class TensorExport:
    """Array protocols for a tensor on the CPU or a CUDA device.

    The protocol of the other kind of memory is absent (``hasattr`` is false), so that numpy, torch
    and CuPy pick the one that applies.
    """

    __slots__ = ("_tensor",)

    _tensor: torch.Tensor

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        if self._tensor.device.type != "cuda":
            raise AttributeError(f"the frame is in {self._tensor.device} memory: no __cuda_array_interface__ "
                                 "(use __array_interface__ or DLPack)")
        return self._tensor.__cuda_array_interface__

    @property
    def __array_interface__(self) -> dict[str, Any]:
        if self._tensor.device.type != "cpu":
            raise AttributeError(f"the frame is in {self._tensor.device} memory: no __array_interface__ "
                                 "(use __cuda_array_interface__ or DLPack)")
        # The dict points into the tensor's memory; whoever reads it keeps this object (and so the
        # tensor) alive.
        return self._tensor.numpy().__array_interface__

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if self._tensor.device.type != "cpu":
            raise TypeError(f"the frame is in {self._tensor.device} memory; use torch.as_tensor(frame, "
                            f"device={str(self._tensor.device)!r}) or copy it to the host first")
        arr = self._tensor.numpy()
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            if copy is False:
                raise ValueError(f"cannot return {np.dtype(dtype)} without a copy (the frame is {arr.dtype})")
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._tensor.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[Any, int]:
        return self._tensor.__dlpack_device__()

    @property
    def device(self) -> torch.device:
        """Where the memory is (an asyncdecode addition)."""
        return self._tensor.device


def _byte_strides(t: torch.Tensor) -> list[int]:
    return [s * t.element_size() for s in t.stride()]


class RGBFrame(TensorExport):
    """One decoded frame as RGB (or BGR), ``(height, width, 3)`` ``uint8``, on the decoder's device.

    Read it without a copy with ``torch.as_tensor(frame, device="cuda")`` (CUDA array interface),
    ``torch.from_dlpack(frame)``, or ``numpy.asarray(frame)`` on the CPU backend. Unlike accvlab's, a
    frame owns its memory: it stays valid after later decodes, there is nothing to clone first.
    """

    __slots__ = ("_bgr",)

    def __init__(self, tensor: torch.Tensor, *, is_bgr: bool = False) -> None:
        if tensor.dim() != 3 or tensor.shape[-1] != 3 or tensor.dtype != torch.uint8:
            raise InvalidRequestError(f"an RGBFrame holds a (height, width, 3) uint8 tensor, not "
                                      f"{tuple(tensor.shape)} {tensor.dtype}")
        self._tensor = tensor
        self._bgr = bool(is_bgr)

    @property
    def data(self) -> torch.Tensor:
        """The frame as a tensor (the memory the frame exports, not a copy)."""
        return self._tensor

    @property
    def dataptr(self) -> int:
        """Address of the first pixel."""
        return self._tensor.data_ptr()

    @property
    def isBGR(self) -> bool:
        """Whether the channels are in B, G, R order."""
        return self._bgr

    @property
    def shape(self) -> list[int]:
        """``[height, width, 3]``."""
        return list(self._tensor.shape)

    @property
    def stride(self) -> list[int]:
        """Bytes from one element to the next along each axis."""
        return _byte_strides(self._tensor)

    def __repr__(self) -> str:
        h, w, _ = self._tensor.shape
        return f"RGBFrame({'bgr' if self._bgr else 'rgb'} {w}x{h} on {self._tensor.device})"


class PlaneView(TensorExport):
    """One plane of a :class:`DecodedFrameExt`: luma ``(H, W, 1)`` or interleaved chroma ``(H/2, W/2, 2)``,
    the shapes of accvlab's plane views."""

    __slots__ = ()

    def __init__(self, tensor: torch.Tensor) -> None:
        self._tensor = tensor

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        # As accvlab's plane views say it, since code written for accvlab compares these fields: the
        # strides always given (torch leaves them out for contiguous memory), and "|u2" for 16-bit
        # samples, which numpy, torch and CuPy parse as native uint16 (CUDA devices are little-endian).
        cai = dict(TensorExport.__cuda_array_interface__.fget(self))  # type: ignore[attr-defined]
        if cai.get("strides") is None:
            cai["strides"] = tuple(_byte_strides(self._tensor))
        if cai["typestr"] == "<u2":
            cai["typestr"] = "|u2"
        return cai

    @property
    def shape(self) -> list[int]:
        return list(self._tensor.shape)

    @property
    def strides(self) -> list[int]:
        """Bytes from one element to the next along each axis."""
        return _byte_strides(self._tensor)

    @property
    def dataptr(self) -> int:
        return self._tensor.data_ptr()

    def __repr__(self) -> str:
        return f"PlaneView({'x'.join(map(str, self._tensor.shape))} {self._tensor.dtype} on {self._tensor.device})"


class DecodedFrameExt(TensorExport):
    """One decoded frame in its native YUV 4:2:0 samples: NV12 (8-bit) or P016 (more bits, samples in
    the high bits of 16), on the decoder's device.

    The buffer is ``(height + ceil(height/2), pitch)`` with ``pitch = 2 * ceil(width/2)``: luma rows,
    then rows of interleaved U, V samples. :meth:`cuda` gives the two planes as views.
    """

    __slots__ = ("_height", "_width", "_bits", "_color_range", "_timestamp")

    def __init__(self, buffer: torch.Tensor, *, height: int, width: int, bit_depth: int, color_range: int,
                 timestamp: int) -> None:
        self._tensor = buffer
        self._height = height
        self._width = width
        self._bits = bit_depth
        self._color_range = color_range
        self._timestamp = timestamp

    @property
    def shape(self) -> list[int]:
        """``[height + ceil(height/2), pitch]`` of the whole buffer."""
        return list(self._tensor.shape)

    @property
    def strides(self) -> list[int]:
        """Bytes from one element to the next along each axis of the buffer."""
        return _byte_strides(self._tensor)

    @property
    def dtype(self) -> np.dtype:
        """``uint8`` (NV12) or ``uint16`` (P016)."""
        return np.dtype(np.uint8 if self._tensor.dtype == torch.uint8 else np.uint16)

    @property
    def format(self) -> PixelFormat:
        """:attr:`PixelFormat.NV12` (3) or :attr:`PixelFormat.P016` (5), accvlab's numbers; each also
        equals its name (``"NV12"``, ``"P016"``)."""
        return PixelFormat.NV12 if self._tensor.dtype == torch.uint8 else PixelFormat.P016

    @property
    def color_range(self) -> int:
        """Range tag of the stream: 0 unspecified (decoded as limited), 1 limited (MPEG), 2 full (JPEG)."""
        return self._color_range

    @property
    def timestamp(self) -> int:
        """Presentation timestamp of the frame, in the stream's time base."""
        return self._timestamp

    @property
    def width(self) -> int:
        """Display width (an asyncdecode addition)."""
        return self._width

    @property
    def height(self) -> int:
        """Display height (an asyncdecode addition)."""
        return self._height

    @property
    def bit_depth(self) -> int:
        """Bits per sample of the stream (an asyncdecode addition)."""
        return self._bits

    def framesize(self) -> int:
        """Bytes of the whole buffer."""
        return self._tensor.numel() * self._tensor.element_size()

    def _planes(self) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._height
        rows, pitch = self._tensor.shape
        luma = self._tensor[:h, : self._width].unsqueeze(-1)  # (H, W, 1), as accvlab's luma view
        chroma = self._tensor[h:].view(rows - h, pitch // 2, 2)
        return luma, chroma

    def cuda(self) -> list[PlaneView]:
        """The luma ``(H, W, 1)`` and interleaved chroma ``(ceil(H/2), ceil(W/2), 2)`` planes as views
        that export their memory (CUDA array interface on a GPU; on the CPU backend the same views
        export the array interface)."""
        return [PlaneView(p) for p in self._planes()]

    def nvcv_image(self) -> list[PlaneView]:
        """Same as :meth:`cuda`."""
        return self.cuda()

    def GetPtrToPlane(self, planeIdx: int) -> int:
        """Address of plane ``planeIdx``: 0 luma, 1 interleaved chroma."""
        if planeIdx not in (0, 1):
            raise InvalidRequestError(f"plane index must be 0 (luma) or 1 (chroma) for {self.format.name}, "
                                      f"not {planeIdx!r}")
        return self._planes()[planeIdx].data_ptr()

    def __repr__(self) -> str:
        return (f"DecodedFrameExt({self.format.name} {self._width}x{self._height}, pts {self._timestamp}, "
                f"on {self._tensor.device})")


def nv12_from_planes(planes: tuple[torch.Tensor, ...], *, bit_depth: int, pix_fmt: str, source: str,
                     frame_id: int) -> torch.Tensor:
    """Interleave a decoder's Y, U, V planes (integer samples) into one NV12 / P016 buffer.

    Raises:
        UnsupportedStreamError: the stream is not 4:2:0 (gray, 4:2:2, 4:4:4 have no NV12 form).
    """
    if len(planes) != 3:
        raise UnsupportedStreamError(f"{source}: frame {frame_id} is {pix_fmt}, which has no NV12 form "
                                     "(4:2:0 only); use the RGB methods", path=source, frame_id=frame_id)
    y, u, v = planes
    h, w = y.shape
    ch, cw = u.shape
    if (ch, cw) != (-(-h // 2), -(-w // 2)) or tuple(v.shape) != (ch, cw):
        raise UnsupportedStreamError(f"{source}: frame {frame_id} is {pix_fmt}, which has no NV12 form "
                                     "(4:2:0 only); use the RGB methods", path=source, frame_id=frame_id)
    wide = bit_depth > 8
    # P016 (n-bit samples in the high bits of 16) is assembled in int32 and converted once at the end:
    # torch has few uint16 kernels, but every device converts to it.
    buf = torch.zeros((h + ch, 2 * cw), dtype=torch.int32 if wide else torch.uint8, device=y.device)
    if wide:
        shift = 16 - bit_depth
        y, u, v = ((p.to(torch.int32) & 0xFFFF) << shift for p in (y, u, v))
    buf[:h, :w] = y
    uv = buf[h:].view(ch, cw, 2)
    uv[..., 0] = u
    uv[..., 1] = v
    return buf.to(torch.uint16) if wide else buf
