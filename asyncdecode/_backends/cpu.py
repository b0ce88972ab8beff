"""CPU backend: FFmpeg's decoders through PyAV, conversion with torch on the CPU.

The reference backend: always available, what CI runs, and what other backends are checked against.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from .._output import ColorParams, OutputSpec, PlanarLayout, planar_layout, yuv_to_output
from ..errors import CorruptDataError, UnsupportedStreamError
from ..gop import FLAG_GAP, GopBundle
from .base import RAW, Backend, PacketSession, Session

_DECODERS = {"av1": ("libdav1d", "av1"), "vp9": ("vp9", "libvpx-vp9")}


class CpuBackend(Backend):
    """Decodes with FFmpeg (PyAV) on the host; each session is one single-threaded decoder."""

    name = "cpu"
    library = "FFmpeg (PyAV)"

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


class CpuSession(PacketSession):
    """PyAV decoder contexts, one per GOP the session keeps its place in."""

    kind = "FFmpeg"
    max_spares = 16  # FFmpeg contexts are small: a set of many streams keeps one per stream ready

    def __init__(self, threads: int) -> None:
        super().__init__()
        self._threads = threads

    def _key(self, bundle: GopBundle) -> Hashable:
        return bundle.codec, bytes(bundle.extradata), _gap(bundle)

    def _create(self, bundle: GopBundle) -> Any:
        import av

        ctx = av.CodecContext.create(_decoder_name(bundle.codec, bundle.source), "r")
        if bundle.extradata:
            ctx.extradata = bytes(bundle.extradata)
        ctx.thread_count = self._threads
        ctx.thread_type = "SLICE" if self._threads > 1 else "NONE"
        # Report damaged bitstreams as errors instead of concealing them into wrong pixels. Not where
        # the bundle left out reference pictures on purpose (FLAG_GAP: an H.264 open GOP's leading
        # pictures): FFmpeg would report the frame_num gap as damage, although no picture decoded
        # references them; damage there still shows as frames flagged corrupt (_convert).
        if not _gap(bundle):
            ctx.options = {"err_detect": "explode"}
        ctx.open()
        self.counts.created += 1
        return ctx

    def _send(self, decoder: Any, bundle: GopBundle, i: int) -> list[Any]:
        import av

        packet = av.Packet(bundle.packet(i))
        packet.pts = int(bundle.packets["pts"][i])
        packet.dts = int(bundle.packets["dts"][i])
        return decoder.decode(packet)

    def _drain(self, decoder: Any) -> list[Any]:
        frames = decoder.decode(None)
        decoder.flush_buffers()
        return frames

    def _discard(self, decoder: Any, bundle: GopBundle) -> None:
        decoder.flush_buffers()

    def _pts(self, frame: Any) -> int:
        return frame.pts

    def _keep_ahead(self, frame: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None,
                    soon: bool) -> tuple[Any, Any]:
        return RAW, frame  # FFmpeg frames own their memory: keeping one costs nothing until it is used

    def _convert(self, frame: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None) -> Any:
        if frame.is_corrupt:
            # FFmpeg conceals what it cannot decode, even with err_detect=explode, when the data ends
            # cleanly in the middle of a picture (a raw stream cut inside a slice): it flags the frame
            fid = bundle.frame_of_pts.get(frame.pts, bundle.first_frame_id)
            raise CorruptDataError(f"{bundle.source}: GOP at frame {bundle.first_frame_id} does not decode (frame "
                                   f"{fid} came out concealed: damaged or cut data)",
                                   path=bundle.source, frame_id=fid, device="cpu")
        return _convert(frame, planar_layout(bundle.pix_fmt), params, output)

    def _fail(self, bundle: GopBundle, exc: Exception, frame_id: int) -> BaseException | None:
        import av

        if not isinstance(exc, av.error.FFmpegError):
            return None
        return CorruptDataError(f"{bundle.source}: GOP at frame {bundle.first_frame_id} does not decode ({exc})",
                                path=bundle.source, frame_id=frame_id, device="cpu")


def _gap(bundle: GopBundle) -> bool:
    """Whether ``bundle`` left out reference pictures after its keyframe (:data:`~asyncdecode.gop.FLAG_GAP`)."""
    return bool(len(bundle.packets) and bundle.packets["flags"][0] & FLAG_GAP)


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

