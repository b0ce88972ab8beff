"""CPU backend: FFmpeg's decoders through PyAV, conversion with torch on the CPU.

The reference backend: always available, what CI runs, and what other backends are checked against.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch

from .._output import ColorParams, OutputSpec, PlanarLayout, planar_layout, yuv_to_output
from ..errors import CorruptDataError, UnsupportedStreamError
from ..gop import GopBundle
from .base import Backend, DecodeCancelled, DecodeResult, Session, feed_plan

_DECODERS = {"av1": ("libdav1d", "av1"), "vp9": ("vp9", "libvpx-vp9")}


class CpuBackend(Backend):
    """Decodes with FFmpeg (PyAV) on the host; each session is one single-threaded decoder."""

    name = "cpu"

    def __init__(self, *, threads_per_session: int = 1) -> None:
        self.device = torch.device("cpu")
        self.threads_per_session = threads_per_session

    def check(self, bundle: GopBundle) -> None:
        planar_layout(bundle.pix_fmt)
        _decoder_name(bundle.codec, bundle.source)

    def new_session(self) -> Session:
        return CpuSession(self.threads_per_session)

    def default_sessions(self) -> int:
        import os

        return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else (os.cpu_count() or 1), 16))


def _decoder_name(codec: str, source: str) -> str:
    import av

    for name in _DECODERS.get(codec, (codec,)):
        if name in av.codecs_available:
            return name
    raise UnsupportedStreamError(f"{source}: no FFmpeg decoder for codec {codec} in this build", path=source)


class CpuSession(Session):
    """One PyAV decoder context, kept while the codec and its parameters stay the same."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._ctx: Any = None
        self._key: tuple[str, bytes] | None = None

    def _context(self, bundle: GopBundle) -> Any:
        import av

        key = (bundle.codec, bytes(bundle.extradata))
        if self._ctx is None or key != self._key:
            ctx = av.CodecContext.create(_decoder_name(bundle.codec, bundle.source), "r")
            if bundle.extradata:
                ctx.extradata = bytes(bundle.extradata)
            ctx.thread_count = self._threads
            ctx.thread_type = "SLICE" if self._threads > 1 else "NONE"
            # Report damaged bitstreams as errors instead of concealing them into wrong pixels.
            ctx.options = {"err_detect": "explode"}
            ctx.open()
            self._ctx, self._key = ctx, key
        return self._ctx

    def decode(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec | None,
               cancelled: Callable[[], bool]) -> DecodeResult:
        import av

        layout = planar_layout(bundle.pix_fmt)
        params = ColorParams.resolve(bundle.color_space, bundle.color_range, bundle.pix_fmt)
        table = bundle.packets
        remaining = set(int(f) for f in wanted)
        feed, frame_of_pts = feed_plan(table, remaining)
        result = DecodeResult(frames={})
        t_conv = 0.0
        t0 = time.perf_counter()
        ctx = self._context(bundle)
        try:
            def take(frames: list[Any]) -> None:
                nonlocal t_conv
                for frame in frames:
                    result.decoded += 1
                    fid = frame_of_pts.get(frame.pts)
                    if fid is None or fid not in remaining:
                        continue
                    tc = time.perf_counter()
                    result.frames[fid] = _convert(frame, layout, params, output)
                    t_conv += time.perf_counter() - tc
                    remaining.discard(fid)

            pts, dts = table["pts"], table["dts"]
            for i in feed:
                if cancelled():
                    raise DecodeCancelled
                packet = av.Packet(bundle.packet(i))
                packet.pts = int(pts[i])
                packet.dts = int(dts[i])
                result.fed += 1
                take(ctx.decode(packet))
                if not remaining:
                    break
            else:  # every packet a wanted frame needs is in: drain what the decoder holds back
                take(ctx.decode(None))
            ctx.flush_buffers()
        except av.error.FFmpegError as exc:
            self._drop_context()
            first = min(remaining) if remaining else bundle.first_frame_id
            raise CorruptDataError(
                f"{bundle.source}: GOP at frame {bundle.first_frame_id} does not decode ({exc})",
                path=bundle.source, frame_id=first, device="cpu") from exc
        except BaseException:
            self._drop_context()
            raise
        if remaining:
            raise CorruptDataError(
                f"{bundle.source}: the decoder did not output frame(s) {sorted(remaining)} "
                f"of the GOP at frame {bundle.first_frame_id} (damaged or undecodable data)",
                path=bundle.source, frame_id=min(remaining), device="cpu")
        result.timings = {"decode_s": time.perf_counter() - t0 - t_conv, "convert_s": t_conv}
        return result

    def _drop_context(self) -> None:
        self._ctx, self._key = None, None

    def close(self) -> None:
        self._drop_context()


def _plane(frame: Any, i: int, layout: PlanarLayout, height: int, width: int) -> torch.Tensor:
    plane = frame.planes[i]
    if layout.bits <= 8:
        arr = np.frombuffer(plane, np.uint8).reshape(plane.height, -1)[:height, :width]
    else:  # 9..16-bit samples, little-endian uint16; torch has no uint16 arithmetic: widen
        arr = np.frombuffer(plane, np.uint16).reshape(plane.height, -1)[:height, :width]
        arr = arr.view(np.int16) if layout.bits < 16 else arr.astype(np.int32)
    # The frame owns the memory and lives until conversion is done: no copy needed.
    return torch.from_numpy(arr)


def _convert(frame: Any, layout: PlanarLayout, params: ColorParams,
             output: OutputSpec | None) -> torch.Tensor | tuple[torch.Tensor, ...]:
    h, w = frame.height, frame.width
    if frame.format.name != params.pix_fmt:
        layout = planar_layout(frame.format.name)  # a decoder may pick another layout than the header
    y = _plane(frame, 0, layout, h, w)
    if layout.gray:
        planes: tuple[torch.Tensor, ...] = (y,)
    else:
        ch, cw = -(-h // layout.sy), -(-w // layout.sx)
        planes = (y, _plane(frame, 1, layout, ch, cw), _plane(frame, 2, layout, ch, cw))
    if output is None:  # the frame's memory goes back to the decoder: keep copies
        return tuple(p.clone() for p in planes)
    u, v = planes[1:] if len(planes) == 3 else (None, None)
    return yuv_to_output(y, u, v, params, layout, output)

