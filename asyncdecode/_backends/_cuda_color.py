"""NV12 / P016 -> RGB on the GPU: one fused Triton kernel per frame.

One pass reads the decoder's luma and interleaved chroma planes and writes the output tensor in its
final form: channel order, layout (HWC or CHW), dtype (uint8 / float16 / float32) and normalization.
The arithmetic is the one defined in :mod:`asyncdecode._output` (same matrix, range, nearest chroma,
round half up for uint8), so GPU and CPU frames agree to within one code value. Resizing, when asked
for, is a second pass (torch's bilinear interpolation on the float result).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from .._output import ColorParams, OutputSpec, finish_output

log = logging.getLogger("asyncdecode")

Empty = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]
"""Allocates a conversion's output: ``(shape, dtype) -> tensor``."""

_RUNTIME_ARGS = ("y_ptr", "uv_ptr", "out_ptr", "H", "W", "y_stride", "uv_stride", "s_c", "s_h", "s_w",
                 "y_off", "y_scale", "c_off", "c_scale", "cr_r", "cb_g", "cr_g", "cb_b",
                 "mean0", "mean1", "mean2", "istd0", "istd1", "istd2")


# Sizes, strides and addresses are not specialized on (no "== 1" or "multiple of 16" variants): one
# compiled kernel per output kind serves every frame, which is what lets _Launcher skip the binding.
@triton.jit(do_not_specialize=_RUNTIME_ARGS)
def _nv12_to_rgb(
    y_ptr, uv_ptr, out_ptr,
    H, W, y_stride, uv_stride,
    s_c, s_h, s_w,
    y_off, y_scale, c_off, c_scale,
    cr_r, cb_g, cr_g, cb_b,
    mean0, mean1, mean2, istd0, istd1, istd2,
    SHIFT: tl.constexpr, OUT_U8: tl.constexpr, BGR: tl.constexpr, NORM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < W
    y = tl.load(y_ptr + row * y_stride + cols, mask=mask, other=0).to(tl.int32) & 0xFFFF
    c_base = uv_ptr + (row // 2) * uv_stride + (cols // 2) * 2
    u = tl.load(c_base, mask=mask, other=0).to(tl.int32) & 0xFFFF
    v = tl.load(c_base + 1, mask=mask, other=0).to(tl.int32) & 0xFFFF
    if SHIFT > 0:  # P016 keeps n-bit samples in the high bits
        y = y >> SHIFT
        u = u >> SHIFT
        v = v >> SHIFT
    luma = (y.to(tl.float32) - y_off) * y_scale
    cb = (u.to(tl.float32) - c_off) * c_scale
    cr = (v.to(tl.float32) - c_off) * c_scale
    r = luma + cr_r * cr
    g = luma + cb_g * cb + cr_g * cr
    b = luma + cb_b * cb
    r = tl.minimum(tl.maximum(r, 0.0), 1.0)
    g = tl.minimum(tl.maximum(g, 0.0), 1.0)
    b = tl.minimum(tl.maximum(b, 0.0), 1.0)
    if BGR:
        r, b = b, r
    if NORM:
        r = (r - mean0) * istd0
        g = (g - mean1) * istd1
        b = (b - mean2) * istd2
    base = out_ptr + row * s_h + cols * s_w
    if OUT_U8:
        tl.store(base, (r * 255.0 + 0.5).to(tl.uint8), mask=mask)
        tl.store(base + s_c, (g * 255.0 + 0.5).to(tl.uint8), mask=mask)
        tl.store(base + 2 * s_c, (b * 255.0 + 0.5).to(tl.uint8), mask=mask)
    else:
        ty = out_ptr.dtype.element_ty
        tl.store(base, r.to(ty), mask=mask)
        tl.store(base + s_c, g.to(ty), mask=mask)
        tl.store(base + 2 * s_c, b.to(ty), mask=mask)


class DevicePointer:
    """A raw device address the kernel can take in place of a tensor (no tensor is built per frame)."""

    __slots__ = ("ptr", "dtype")

    def __init__(self, ptr: int, dtype: torch.dtype) -> None:
        self.ptr = ptr
        self.dtype = dtype

    def data_ptr(self) -> int:
        return self.ptr


class _Launcher:
    """Launches the compiled kernel directly: one cached kernel per output kind, no per-call binding.

    Triton's ``kernel[grid](...)`` binds and checks its 29 arguments in Python on every call (about
    20 us, under the GIL, once per frame). Here the kernel is compiled once per kind through the JIT
    and then launched the way the JIT launches it, through its compiled launcher, hooks included.
    Should that fail (a Triton without this interface), the JIT call is used from then on and
    ``reason`` says why.
    """

    def __init__(self) -> None:
        self.kernels: dict[tuple[Any, ...], Any] = {}
        self.direct = 0
        """Calls that launched the direct way (tests check that the fast path is the one taken); launches
        :meth:`prepare` made are not counted (nothing is added per frame there)."""
        self.reason = ""
        self.driver_reason = ""
        """Why :meth:`prepare` last fell back from the driver launch to Triton's launcher ("" if it did not)."""
        try:
            from triton import knobs

            self._hooks = knobs.runtime
        except Exception as exc:  # an older Triton: the JIT call only
            self._hooks = None
            self.reason = f"no triton.knobs ({exc})"

    def __call__(self, grid: tuple[int, int], args: tuple[Any, ...], consts: dict[str, Any],
                 stream: int | None) -> None:
        hooks = self._hooks
        if hooks is not None and stream is not None:
            try:
                kernel = self._kernel((args[0].dtype, args[1].dtype, args[2].dtype), args, grid, consts)
                enter, leave = hooks.launch_enter_hook, hooks.launch_exit_hook
                if not (_hooked(enter) or _hooked(leave)):
                    enter = leave = None
                # Addresses go in as plain integers: the launcher then skips its check that each one
                # belongs to a CUDA allocation, which a mapped decoder surface does not.
                every = (args[0].data_ptr(), args[1].data_ptr(), args[2].data_ptr(), *args[3:], *consts.values())
                meta = None if enter is None else kernel.launch_metadata((*grid, 1), stream, *every)
                kernel.run(grid[0], grid[1], 1, stream, kernel.function, kernel.packed_metadata, meta, enter, leave,
                           *every)
                self.direct += 1
                return
            except Exception as exc:
                self._give_up(exc)
        _nv12_to_rgb[grid](*args, **consts)

    def _kernel(self, dtypes: tuple[torch.dtype, ...], args: tuple[Any, ...], grid: tuple[int, int],
                consts: dict[str, Any]) -> Any:
        """The compiled kernel for these pointer dtypes and constants, compiled from ``args`` the first time."""
        key = (*dtypes, *consts.values())
        kernel = self.kernels.get(key)
        if kernel is None:
            kernel = _nv12_to_rgb.warmup(*args, grid=grid, **consts)
            kernel._init_handles()
            self.kernels[key] = kernel
        return kernel

    def _give_up(self, exc: Exception) -> None:
        """The direct way failed: the JIT call from now on, and ``reason`` says why."""
        self.reason = f"{type(exc).__name__}: {exc}"
        log.warning("asyncdecode: direct Triton launch unavailable (%s); using the JIT call", self.reason)
        self._hooks = None

    def prepare(self, grid: tuple[int, int], dtypes: tuple[torch.dtype, torch.dtype, torch.dtype],
                tail: tuple[Any, ...], consts: dict[str, Any], stream: int) -> Callable[..., None] | None:
        """A launch with everything but the first seven arguments settled (planes, output, sizes and
        strides, given as plain integers): ``None`` where launches cannot go the direct way, or launch
        hooks (a profiler) want their metadata per launch."""
        if not self.plain:
            return None
        try:  # sizes and addresses are not specialized on: placeholders compile the same kernel
            kernel = self._kernel(dtypes, (*(DevicePointer(0, d) for d in dtypes), 1, 1, 1, 1, *tail), grid, consts)
        except Exception as exc:
            self._give_up(exc)
            return None
        if DRIVER_LAUNCH:
            try:
                return _DriverLaunch(kernel, grid, tail, stream)
            except Exception as exc:  # a kernel or driver this way does not fit: Triton's launcher
                self.driver_reason = f"{type(exc).__name__}: {exc}"
                log.debug("asyncdecode: conversion launched through Triton's launcher (%s)", exc)
        run, function, packed = kernel.run, kernel.function, kernel.packed_metadata
        rows, cols = grid
        rest = (*tail, *consts.values())

        def launch(*head: int) -> None:
            run(rows, cols, 1, stream, function, packed, None, None, None, *head, *rest)

        return launch

    @property
    def plain(self) -> bool:
        """Whether launches may go the direct way with nothing per launch: no launch hook (a profiler) is set."""
        hooks = self._hooks
        return hooks is not None and not (_hooked(hooks.launch_enter_hook) or _hooked(hooks.launch_exit_hook))

    @property
    def available(self) -> bool:
        """Whether launches go the direct way (the JIT call takes only addresses of CUDA allocations)."""
        return self._hooks is not None


def _hooked(hook: Any) -> bool:
    """Whether a Triton launch hook is set: ``None``, or (Triton 3.5 on) a chain with nothing in it, is not."""
    if hook is None:
        return False
    calls = getattr(hook, "calls", None)
    return calls is None or bool(calls)


_launch = _Launcher()

DRIVER_LAUNCH = True
"""Let :meth:`_Launcher.prepare` launch through the CUDA driver with the GIL held (:class:`_DriverLaunch`)."""

_HEAD = struct.Struct("<QQQiiii")
"""The per-frame arguments as the kernel takes them: three addresses, then sizes and row strides (int32)."""


@functools.cache
def _driver() -> Any:
    """``cuLaunchKernel`` and ``cuFuncGetParamInfo`` of the CUDA driver, called with the GIL held."""
    cuda = ctypes.PyDLL("libcuda.so.1")
    vp, u = ctypes.c_void_p, ctypes.c_uint
    cuda.cuLaunchKernel.argtypes = (vp, u, u, u, u, u, u, u, vp, vp, vp)
    cuda.cuLaunchKernel.restype = ctypes.c_int
    cuda.cuFuncGetParamInfo.argtypes = (vp, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t),
                                        ctypes.POINTER(ctypes.c_size_t))
    cuda.cuFuncGetParamInfo.restype = ctypes.c_int
    return cuda


class _DriverLaunch:
    """One compiled kernel launched by ``cuLaunchKernel`` on a kernel-parameter buffer kept between frames.

    Triton's launcher lets the GIL go around the launch (a few microseconds), and the decoder thread
    then waits to take it back among the others. Here the parameter buffer is laid out once from the
    kernel's own parameter table (``cuFuncGetParamInfo``), the fixed arguments are written once, and
    per frame the seven that change are packed in and the kernel is launched with the GIL held.
    Refused (``ValueError``) for kernels that need more than a plain launch: several CTAs per cluster,
    cooperative or programmatic-dependent launches, scratch memory, or parameters other than expected.
    One thread launches through it (the buffer is rewritten per launch): each decoder session has its own.
    """

    def __init__(self, kernel: Any, grid: tuple[int, int], tail: tuple[Any, ...], stream: int) -> None:
        meta = kernel.metadata
        for name in ("launch_cooperative_grid", "launch_pdl", "global_scratch_size", "profile_scratch_size"):
            if getattr(meta, name, 0):
                raise ValueError(f"kernel needs {name}")
        if getattr(meta, "num_ctas", 1) != 1:
            raise ValueError("kernel needs clusters")
        signature = getattr(getattr(kernel, "src", None), "signature", None)
        if not isinstance(signature, dict):
            raise ValueError("kernel signature unknown")
        types = [t for t in signature.values() if t != "constexpr"]
        ints, floats = tail[:3], tail[3:]
        want = [types[0][:1], types[1][:1], types[2][:1]] + ["i32"] * (4 + len(ints)) + ["fp32"] * len(floats)
        if [t[:1] if t.startswith("*") else t for t in types] != want:
            raise ValueError(f"kernel parameters {types}")
        cuda = _driver()
        offsets = []
        for i in range(64):
            off, size = ctypes.c_size_t(), ctypes.c_size_t()
            if cuda.cuFuncGetParamInfo(kernel.function, i, ctypes.byref(off), ctypes.byref(size)):
                break
            offsets.append((off.value, size.value))
        sizes = [8, 8, 8] + [4] * (4 + len(ints)) + [4] * len(floats)
        extra = offsets[len(sizes):]  # pointers Triton adds (scratch memory), null when none is used
        if [z for _, z in offsets[:len(sizes)]] != sizes or any(z != 8 for _, z in extra):
            raise ValueError(f"kernel parameter table {offsets}")
        if [o for o, _ in offsets[:7]] != [0, 8, 16, 24, 28, 32, 36]:  # where _HEAD writes them
            raise ValueError(f"kernel parameter offsets {offsets[:7]}")
        self._buf = ctypes.create_string_buffer(max(o + z for o, z in offsets))  # zeros: null scratch pointers
        for (offset, _), fmt, value in zip(offsets[7:], "i" * len(ints) + "f" * len(floats), tail):
            struct.pack_into("<" + fmt, self._buf, offset, value)
        base = ctypes.addressof(self._buf)
        self._params = (ctypes.c_void_p * len(offsets))(*(base + o for o, _ in offsets))
        self._call = cuda.cuLaunchKernel
        self._fixed = (kernel.function, grid[0], grid[1], 1, 32 * meta.num_warps, 1, 1, meta.shared, stream,
                       self._params, None)

    @property
    def native(self) -> tuple[int, ...]:
        """``(function, grid x, grid y, block x, shared bytes, parameter buffer, parameter pointers)``
        for a launch from C (:mod:`._native`), which writes the seven per-frame values at the buffer's start."""
        function, gx, gy, _, bx, _, _, shared, _, params, _ = self._fixed
        return function, gx, gy, bx, shared, ctypes.addressof(self._buf), ctypes.addressof(params)

    def __call__(self, *head: int) -> None:
        _HEAD.pack_into(self._buf, 0, *head)
        code = self._call(*self._fixed)
        if code:
            raise RuntimeError(f"cuLaunchKernel failed ({code})")


def nv12_to_output(luma: torch.Tensor, chroma: torch.Tensor, params: ColorParams, spec: OutputSpec,
                   *, shift: int = 0, stream: int | None = None) -> torch.Tensor:
    """Convert one frame on the current CUDA stream.

    Args:
        luma: ``(H, W)`` uint8 (NV12) or int16 (P016) samples, rows may be padded (stride >= W).
        chroma: ``(ceil(H/2), ceil(W/2), 2)`` interleaved Cb/Cr of the same dtype.
        params: The stream's matrix, range and bit depth.
        spec: Output format.
        shift: Right shift that brings P016 samples to ``params.bits`` bits (16 - bits), else 0.
        stream: Raw handle of the current CUDA stream, if known (see :func:`convert_planes`).
    """
    height, width = luma.shape
    return convert_planes(luma, chroma, height, width, luma.stride(0), chroma.stride(0), luma.device,
                          params, spec, shift=shift, stream=stream)


def convert_planes(luma: torch.Tensor | DevicePointer, chroma: torch.Tensor | DevicePointer, height: int,
                   width: int, luma_stride: int, chroma_stride: int, device: torch.device, params: ColorParams,
                   spec: OutputSpec, *, shift: int = 0, stream: int | None = None,
                   empty: Empty | None = None) -> torch.Tensor:
    """:func:`nv12_to_output` on planes given by address and row stride (in samples).

    ``stream``: the raw handle of the current CUDA stream when the caller has it at hand (enables the
    direct launch); ``None`` launches through the JIT on torch's current stream. ``empty``: allocates
    the output (``(shape, dtype) -> tensor``) where it is not resized afterwards; by default
    ``torch.empty`` on the current stream, as are a resize's intermediates and result.
    """
    plan = _plan(params, spec, height, width)
    if empty is None or plan.resize:
        out = torch.empty(plan.shape, dtype=plan.dtype, device=device)
    else:
        out = empty(plan.shape, plan.dtype)
    _launch(plan.grid, (luma, chroma, out, height, width, int(luma_stride), int(chroma_stride), *plan.args),
            plan.consts_for(shift), stream)
    if not plan.resize:
        return out
    return finish_output(out, spec)


class FrameConverter:
    """Converts frames of one size and sample type into one output kind on one stream, by address.

    Everything that does not change from frame to frame (the plan, the compiled kernel and its fixed
    arguments) is settled once: per frame there is the output allocation and one launch. For decoder
    threads converting thousands of frames a second, where the Python per frame is time under the GIL.
    """

    def __init__(self, params: ColorParams, spec: OutputSpec, height: int, width: int, device: torch.device,
                 sample: torch.dtype, *, shift: int, stream: int, empty: Empty | None = None) -> None:
        self.height, self.width = height, width
        self._params, self._spec, self._device, self._sample, self._shift = params, spec, device, sample, shift
        self._stream = stream
        self._empty = empty or (lambda shape, dtype: torch.empty(shape, dtype=dtype, device=device))
        plan = self._plan = _plan(params, spec, height, width)
        self._shape, self._dtype = plan.shape, plan.dtype
        self._launch = None if plan.resize else _launch.prepare(plan.grid, (sample, sample, plan.dtype), plan.args,
                                                                   plan.consts_for(shift), stream)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def driver_launch(self) -> _DriverLaunch | None:
        """The driver launch this converter uses, while no launch hook (a profiler) is set; else ``None``."""
        launch = self._launch
        return launch if isinstance(launch, _DriverLaunch) and _launch.plain else None

    def __call__(self, luma: int, chroma: int, luma_stride: int, chroma_stride: int) -> torch.Tensor:
        """The output for planes at these device addresses (row strides in samples)."""
        launch = self._launch
        if launch is None:  # resizing, or no direct launch: the general path
            return convert_planes(DevicePointer(luma, self._sample), DevicePointer(chroma, self._sample), self.height,
                                  self.width, luma_stride, chroma_stride, self._device, self._params, self._spec,
                                  shift=self._shift, stream=self._stream, empty=self._empty)
        out = self._empty(self._shape, self._dtype)
        launch(luma, chroma, out.data_ptr(), self.height, self.width, luma_stride, chroma_stride)
        return out


class _Plan(NamedTuple):
    """Everything about a conversion that depends on the stream and the output only (not the frame)."""

    shape: tuple[int, int, int]
    dtype: torch.dtype
    grid: tuple[int, int]
    args: tuple[Any, ...]
    """The kernel's arguments after the planes, the output and the sizes: output strides, then floats."""
    consts: dict[str, Any]
    resize: bool

    def consts_for(self, shift: int) -> dict[str, Any]:
        """The kernel's constants for samples shifted right by ``shift`` (P016), else as planned."""
        return self.consts if not shift else {**self.consts, "SHIFT": shift}


@functools.lru_cache(maxsize=256)
def _plan(params: ColorParams, spec: OutputSpec, height: int, width: int) -> _Plan:
    y_off, y_scale, c_off, c_scale = params.affine()
    cr_r, cb_g, cr_g, cb_b = params.coefficients()
    resize = spec.size is not None and spec.size != (height, width)
    # With a resize, convert to float CHW first and let interpolate write the final tensor.
    dtype = torch.float32 if resize else spec.dtype
    chw = spec.layout == "chw" or resize
    shape = (3, height, width) if chw else (height, width, 3)
    # strides of a contiguous output: (channel, row, column) steps in elements
    s_c, s_h, s_w = (height * width, width, 1) if chw else (1, 3 * width, 3)
    norm = spec.normalize is not None and not resize
    mean, std = spec.normalize if spec.normalize is not None else ((0.0,) * 3, (1.0,) * 3)
    block = 256 if width > 128 else 128
    floats = (y_off, y_scale, c_off, c_scale, cr_r, cb_g, cr_g, cb_b, *mean, *(1.0 / x for x in std))
    consts = {"SHIFT": 0, "OUT_U8": dtype == torch.uint8, "BGR": spec.format == "bgr", "NORM": norm, "BLOCK": block}
    return _Plan(shape, dtype, (height, triton.cdiv(width, block)), (s_c, s_h, s_w, *(float(x) for x in floats)),
                 consts, resize)
