"""NVDEC backend: NVIDIA's hardware decoders, conversion with a Triton kernel.

Two ways to drive the decoders, chosen per backend (``ASYNCDECODE_NVDEC_LIBRARY``):

- ``libnvcuvid`` (default): the driver's decoder library directly through ctypes (:mod:`._cuvid`).
  Nothing is mapped or copied for pictures nobody asked for, and a wanted picture is converted
  straight out of its mapped surface: the least host CPU per frame.
- ``PyNvVideoCodec``: NVIDIA's Python decoder, imported here only, when asked for or when libnvcuvid
  cannot be loaded (the import fails on machines without the NVIDIA driver, which must not break
  ``import asyncdecode``).

Each decoder thread owns one session: decoders per class of stream (libnvcuvid: codec and bit depth,
switched between sizes in place; PyNvVideoCodec: per shape), created on first use, then reused across
files and GOPs (an end-of-stream flush between GOPs resets one and keeps it usable), and one
CUDA stream. Packets are handed over zero-copy from the GOP bundle's buffer; each wanted frame is
converted on the session's stream, straight out of the decoder's output surface and before the
surface can be reused, into an output from the device's one pool of outputs (shared by its sessions,
see :meth:`NvdecBackend.output_stream`).
"""

from __future__ import annotations

import ctypes as C
import logging
import os
import threading
from typing import Any

import numpy as np
import torch

from .._output import ColorParams, OutputSpec, planar_layout
from ..errors import BackendUnavailableError, CorruptDataError, UnsupportedStreamError
from ..gop import PACKET_DTYPE, GopBundle
from ._cuvid import MAX_DISPLAY_DELAY
from .base import NVDEC_LIBRARIES, Backend, NativeRun, NativeStep, PacketSession, Session, SpareDecoders

log = logging.getLogger("asyncdecode")

#: NVDEC codecs by FFmpeg codec name -> PyNvVideoCodec cudaVideoCodec member.
_CODECS = {"h264": "H264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "mpeg2video": "MPEG2", "vp8": "VP8"}
#: Smallest coded size NVDEC accepts per codec (width, height), from NVIDIA's decoder capability tables.
_MIN_SIZE = {"h264": (48, 16), "hevc": (144, 144), "av1": (128, 128), "vp9": (128, 128),
             "mpeg2video": (48, 16), "vp8": (48, 16)}
#: Bit depths NVDEC decodes per codec (4:2:0 only on this path).
_DEPTHS = {"h264": (8,), "hevc": (8, 10, 12), "av1": (8, 10), "vp9": (8, 10, 12), "mpeg2video": (8,), "vp8": (8,)}

#: Default decoder sessions (threads) per GPU. NVDEC has 7 engines on H100/H200; one session fed
#: from Python keeps far less than one busy. Measured on an H200 (1600x900 HEVC, random access):
#: 7 sessions reach about 90% of the hardware's rate, 10-14 all of it, and every session beyond that
#: adds host CPU (each waiting session costs about a tenth of a core) without adding frames.
DEFAULT_SESSIONS = int(os.environ.get("ASYNCDECODE_NVDEC_SESSIONS", "10"))

#: GPU memory the free libnvcuvid decoders of a device may hold together (their decode surfaces),
#: about; ``None``: 4 GiB, at most an eighth of the device's memory. The sessions of a device share
#: them (any thread takes any), so a set of many shapes keeps one decoder per shape (or, with
#: ASYNCDECODE_NVDEC_RECONFIGURE, per class) ready for all threads while this allows, not one per
#: shape and thread: a 1920x1088 8-bit decoder holds about 80 MB, a 640x368 one about 9 MB.
SPARE_BYTES: int | None = int(os.environ["ASYNCDECODE_NVDEC_SPARE_BYTES"]) if os.environ.get(
    "ASYNCDECODE_NVDEC_SPARE_BYTES") else None

SPARES = int(os.environ.get("ASYNCDECODE_NVDEC_SPARES", "256"))
"""Free libnvcuvid decoders a device keeps at most (besides :data:`SPARE_BYTES` and
:data:`SPARE_IDLE_S`; ``ASYNCDECODE_NVDEC_SPARES``). Each also holds host memory: measured on an H200
(driver 580), 5-20 MB resident (more for larger sizes) and 8 (H.264) to 26 MB (HEVC) of heap, most
of it the parser's and never touched; and the GPU memory it takes is 1.2-2x what its surfaces count
(a 640x368 HEVC decoder 19 MB, a 1920x1088 one 128 MB). 64 were too few for 24 sizes read 16
frames a request on 10 threads (a decoder made for nearly every job: 0.08x the uniform set's rate)."""

SPARE_IDLE_S = float(os.environ.get("ASYNCDECODE_NVDEC_SPARE_IDLE_S", "300"))
"""A free decoder no thread took for this long is closed unless it is the last of its shape
(``ASYNCDECODE_NVDEC_SPARE_IDLE_S``; 0: kept until the bounds push it out). Bursts make extra
decoders of a shape (one per thread decoding it at once); without this the pool would keep the
largest burst of every shape, growing towards its bounds for as long as new bursts come. Five
minutes, not less: under steady random load the decoder a shape needs only at its rare peaks of
concurrency sits free longest, and closing it after 30 s made it again at the next peak. Seen on an
H200 (soak.py, 25 shapes, 10 threads, 2026-12-05): at 30 s about 5.7 decoders made a minute and the
process's resident memory still rising after 7 minutes (+7% per 10 minutes); at 300 s the pool
levelled at about 172 free decoders within 3.5 minutes, then about 2 made a minute with resident
memory, heap in use, fds and mappings flat (0.3% per 10 minutes or less over the run's later half)."""

SPARE_BURST_S = float(os.environ.get("ASYNCDECODE_NVDEC_SPARE_BURST_S", "300"))
"""...but decoders of a shape that ran short (a job found none of it free and made one) within this
many seconds stay, however long idle (``ASYNCDECODE_NVDEC_SPARE_BURST_S``; 0: the idle time alone
decides): bursts that recur every minute or two then find the decoders the last one made, instead
of making them again on the jobs' path (on an H200, about 0.2 s of a decoder thread each under
load), with the host and device memory churn of making and closing them. Seen there
(matrix_bench, 24 sizes, --steady, idle time alone): the random 16-frame cell some 35 s after the
set's warm-up made 22 decoders again on the jobs' path, of shapes the warm-up had made decoders for
and the cells between had used fewer of at once."""

SESSION_SPARE_BYTES = 512 << 20
"""GPU memory the free PyNvVideoCodec decoders of one session may hold together, about: each session
keeps its own there (a PyNvVideoCodec decoder is bound to the CUDA stream it was made with)."""

_SHAPES_KEPT = 64
"""Stream shapes the backend remembers for sessions to make decoders ahead (the most recent)."""


def _read_on_delay(default: int = 3, most: int = MAX_DISPLAY_DELAY) -> int:
    """``ASYNCDECODE_NVDEC_READ_ON_DELAY`` if set and valid, else ``default`` (a bad value is logged)."""
    raw = os.environ.get("ASYNCDECODE_NVDEC_READ_ON_DELAY")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= most:
        log.warning("asyncdecode: ASYNCDECODE_NVDEC_READ_ON_DELAY must be 0..%d, not %r; using %d", most, raw, default)
        return default
    return value


#: Pictures a libnvcuvid decoder keeps on the hardware, decoded or being decoded, beyond the one its
#: thread maps and converts, when a clip is read on. With one (each picture converted once the next
#: is sent) every mapping waited for its picture's decode and 10 threads reached about half of what
#: the engines decode.
READ_ON_DELAY = _read_on_delay()


def _import_nvc() -> Any:
    try:
        import PyNvVideoCodec as nvc
    except Exception as exc:  # ImportError, or OSError from a missing libnvcuvid
        raise BackendUnavailableError(f"PyNvVideoCodec cannot be imported ({exc})") from exc
    return nvc


def _load_cuvid() -> Any:
    from . import _cuvid

    try:
        _cuvid.library()
    except OSError as exc:
        raise BackendUnavailableError(f"libnvcuvid cannot be loaded ({exc})") from exc
    return _cuvid


class NvdecBackend(Backend):
    """Hardware decoding on one CUDA device."""

    name = "nvdec"

    def __init__(self, device: str = "cuda:0", *, sessions: int | None = None, library: str | None = None) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"{device}: CUDA is not available (torch {torch.__version__})",
                                          device=device)
        self.device = torch.device(device)
        if self.device.index is None:
            self.device = torch.device("cuda", 0)
        if self.device.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"{device}: only {torch.cuda.device_count()} CUDA device(s)",
                                          device=device)
        library = library or os.environ.get("ASYNCDECODE_NVDEC_LIBRARY") or None
        if library is not None and library not in NVDEC_LIBRARIES:
            raise BackendUnavailableError(f"NVDEC decoder library must be one of {NVDEC_LIBRARIES}, not {library!r}",
                                          device=device)
        self.nvc: Any = None
        self.cuvid: Any = None
        reasons = []
        for name in (library,) if library else NVDEC_LIBRARIES:
            try:
                if name == "libnvcuvid":
                    self.cuvid = _load_cuvid()
                else:
                    self.nvc = _import_nvc()
            except BackendUnavailableError as exc:
                reasons.append(str(exc))
                continue
            self.library = name
            break
        else:
            raise BackendUnavailableError(f"{device}: no NVDEC decoder library ({'; '.join(reasons)})", device=device)
        try:
            from . import _cuda_color  # noqa: F401  (Triton must be importable for conversion)
        except Exception as exc:
            raise BackendUnavailableError(f"{device}: GPU color conversion unavailable ({exc})",
                                          device=device) from exc
        self._sessions = sessions or DEFAULT_SESSIONS
        self.native_loop = True
        """libnvcuvid decoders made from now on use the C decode loop where it was built (see ``_native``)."""
        self._refused: dict[tuple[str, int], str] = {}  # (codec, bits) this GPU's NVDEC said no to
        self._largest: dict[tuple[str, int], tuple[int, int]] = {}  # (codec, bits) -> largest size seen
        self._refused_files: dict[str, str] = {}  # files whose stream size this GPU's NVDEC said no to
        self._shapes: dict[tuple[str, int, int, int], None] = {}  # (codec, bits, w, h) checked, the latest last
        self.switches = self.cuvid is not None and self.cuvid.switching(self.cuvid.library())
        """libnvcuvid decoders switch between sizes of a class in place (``ASYNCDECODE_NVDEC_RECONFIGURE=1``
        and the driver has the call; turned off by :meth:`opening` for more than one decoder thread)."""
        self.spares: SpareDecoders | None = None
        """The free libnvcuvid decoders of this device, shared by its sessions."""
        self._output_stream: torch.cuda.Stream | None = None
        self._output_stream_lock = threading.Lock()
        if self.cuvid is not None:
            budget = SPARE_BYTES
            if budget is None:
                total = torch.cuda.get_device_properties(self.device).total_memory
                budget = min(4 << 30, total // 8)
            self.spares = SpareDecoders(SPARES, budget, nbytes=lambda d: d.nbytes, close=_close_quietly,
                                        max_idle_s=SPARE_IDLE_S, burst_s=SPARE_BURST_S)

    def classes(self) -> dict[tuple[str, int], tuple[int, int]]:
        """``(codec, bit depth)`` of every class of streams checked so far -> the largest size seen."""
        return dict(self._largest)

    def shapes(self) -> list[tuple[str, int, int, int]]:
        """``(codec, bit depth, width, height)`` of the streams checked lately, the most recent first
        (at most :data:`_SHAPES_KEPT`)."""
        return list(self._shapes)[::-1]

    def largest(self, codec: str, bits: int) -> tuple[int, int]:
        """The largest ``(width, height)`` of the streams of a codec and bit depth checked so far:
        decoders are made with room for it, so that switching between sizes is a reconfigure."""
        return self._largest.get((codec, bits), (0, 0))

    def refuse(self, bundle: GopBundle, reason: Any, *, size: bool = False) -> None:
        """Remember that this GPU refused a codec at a bit depth (found out at the first decode), or,
        with ``size``, only this file's stream (too large or too small for this GPU's decoders)."""
        text = " ".join(str(r).strip() for r in reason)
        if size:
            if len(self._refused_files) >= 4096:  # a bound: the oldest go (they are checked again)
                self._refused_files.pop(next(iter(self._refused_files)))
            self._refused_files[bundle.source] = text
        else:
            self._refused[(bundle.codec, bundle.bit_depth)] = text

    def check(self, bundle: GopBundle) -> None:
        layout = planar_layout(bundle.pix_fmt)
        where = f"{bundle.source}: NVDEC cannot decode"
        if bundle.codec not in _CODECS:
            raise UnsupportedStreamError(f"{where} codec {bundle.codec}", path=bundle.source, device=str(self.device))
        if layout.gray or (layout.sx, layout.sy) != (2, 2):
            raise UnsupportedStreamError(f"{where} {bundle.pix_fmt} (4:2:0 only)", path=bundle.source,
                                         device=str(self.device))
        if bundle.source in self._refused_files:
            raise UnsupportedStreamError(f"{where} {bundle.codec} at {bundle.width}x{bundle.height} on this GPU "
                                         f"({self._refused_files[bundle.source]})", path=bundle.source,
                                         device=str(self.device))
        if (bundle.codec, layout.bits) in self._refused:
            raise UnsupportedStreamError(f"{where} {layout.bits}-bit {bundle.codec} on this GPU "
                                         f"({self._refused[(bundle.codec, layout.bits)]})",
                                         path=bundle.source, device=str(self.device))
        min_w, min_h = _MIN_SIZE[bundle.codec]
        if bundle.width < min_w or bundle.height < min_h:
            raise UnsupportedStreamError(f"{where} {bundle.codec} below {min_w}x{min_h} "
                                         f"({bundle.width}x{bundle.height})", path=bundle.source,
                                         device=str(self.device))
        if layout.bits not in _DEPTHS[bundle.codec]:
            raise UnsupportedStreamError(f"{where} {layout.bits}-bit {bundle.codec} ({bundle.pix_fmt})",
                                         path=bundle.source, device=str(self.device))
        shape = (bundle.codec, layout.bits, bundle.width, bundle.height)
        shapes = self._shapes
        if shapes and next(reversed(shapes)) != shape:  # on the loop thread; sessions read it
            shapes.pop(shape, None)
        shapes[shape] = None
        if len(shapes) > _SHAPES_KEPT:
            del shapes[next(iter(shapes))]
        key = (bundle.codec, layout.bits)
        w, h = self._largest.get(key, (0, 0))
        if bundle.width > w or bundle.height > h:  # on the loop thread; sessions read it
            self._largest[key] = (max(w, bundle.width), max(h, bundle.height))

    def new_session(self) -> Session:
        return CuvidSession(self) if self.cuvid is not None else NvcSession(self)

    def output_stream(self) -> torch.cuda.Stream:
        """The stream the device's frame outputs are allocated on: one for all its sessions.

        torch's caching allocator keeps a freed block for the stream it was allocated on. Outputs
        allocated on each session's own stream left every decoder thread with a pool of its own, each
        growing to its own peak over the mix of frame and request sizes (an H200 soak: reserved memory
        2.4 -> 3.5 GB in 6 minutes with the peak in use under 1 GB). No work is queued on this stream:
        an output records the session stream that writes it and the caller's stream that reads it, and
        its block is reused only once both are past it."""
        with self._output_stream_lock:
            if self._output_stream is None:
                self._output_stream = torch.cuda.Stream(device=self.device)
            return self._output_stream

    def default_sessions(self) -> int:
        return self._sessions

    def opening(self, threads: int) -> None:
        if self.switches and threads > 1 and not self.cuvid.FIXED_TARGET:
            # Seen on H200 and H100 (driver 580.159, 2026-12-05, benchmarks/reconfigure_check.py): with
            # two decoder threads or more, the first decode or map after a reconfigure, on that decoder
            # or another, never returned, whatever the engine kept apart; one thread ran 2,057
            # reconfigures in 26 s without fault. With fixed output surfaces (ASYNCDECODE_NVDEC_FIXED_TARGET=1,
            # an experiment) ten threads ran 5,504 reconfigures in 20 s without a hang (H100, 2026-12-05):
            # there it is kept.
            log.warning("asyncdecode: ASYNCDECODE_NVDEC_RECONFIGURE=1 is ignored with %d decoder threads (the "
                        "driver's reconfigure hung with more than one); decoders are made per size. "
                        "EngineConfig(decoder_threads=1) keeps it", threads)
            self.switches = False


class NvdecSession(PacketSession):
    """NVDEC decoders (one per GOP the session keeps its place in) and a CUDA stream, owned by one thread.

    Decoders are made per class of stream (see the subclasses) and reused across files and GOPs; free
    ones are kept while their surfaces fit a bound of GPU memory (see the subclasses).
    GOPs whose decode order is their display order get low-latency decoders:
    each packet, marked as a whole picture, shows its picture in the call that fed it, so a job ends
    on its last wanted packet (no flush, nothing fed ahead) and the decoder is ready for the next
    keyframe as it is. Other decoders are flushed (end of stream) between GOPs.
    Subclasses drive one decoder library.
    """

    kind = "NVDEC"
    max_positions = 2  # each position holds an NVDEC decoder and its surfaces in GPU memory
    max_spares = 32
    spare_bytes = SESSION_SPARE_BYTES
    spare_idle_s = SPARE_IDLE_S
    spare_burst_s = SPARE_BURST_S

    def __init__(self, backend: NvdecBackend) -> None:
        super().__init__()
        self._device = backend.device
        self.device = str(backend.device)
        torch.cuda.set_device(self._device)
        self._stream = torch.cuda.Stream(device=self._device)
        self._handle = self._stream.cuda_stream
        self._backend = backend
        self._base = 0  # address of the current bundle's payload (the bundle keeps it alive)
        self._consumer = torch.cuda.default_stream(self._device)
        self._allocating = torch.cuda.StreamContext(backend.output_stream())  # this thread's only
        from ._cuda_color import FrameConverter, convert_planes  # Triton: imported once

        self._convert_planes = convert_planes
        self._frame_converter = FrameConverter
        self._converters: dict[tuple[Any, ...], Any] = {}
        self._last: tuple[tuple[Any, ...], Any] = ((), None)  # the converter the last frame used, by key

    def _key(self, bundle: GopBundle) -> tuple[str, int, int, int, bool]:
        return bundle.codec, bundle.bit_depth, bundle.width, bundle.height, bundle.in_display_order

    def _job(self, bundle: GopBundle) -> Any:
        self._base = np.frombuffer(bundle.payload, np.uint8).ctypes.data  # zero-copy: the decoder reads it there
        return torch.cuda.stream(self._stream)

    def _discard(self, decoder: Any, bundle: GopBundle) -> None:
        if not self._holds_back(decoder, bundle):  # ready for a keyframe as it is
            return
        with torch.cuda.stream(self._stream):
            self._drain(decoder)

    def _holds_back(self, decoder: Any, bundle: GopBundle) -> bool:
        """Whether the decoder may hold pictures fed from ``bundle`` that it has not shown yet."""
        return not bundle.in_display_order  # low-latency decoders show each picture as it is fed

    def _empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An output for this session's stream to write, from the device's shared pool of outputs
        (:meth:`NvdecBackend.output_stream`); the caller records the stream that will read it."""
        with self._allocating:
            out = torch.empty(shape, dtype=dtype, device=self._device)
        out.record_stream(self._stream)
        return out

    def _output(self, luma: Any, chroma: Any, height: int, width: int, luma_stride: int, chroma_stride: int,
                params: ColorParams, output: OutputSpec, shift: int = 0) -> torch.Tensor:
        """Convert planes given by address on the session's stream, for the caller's stream to use."""
        out = self._convert_planes(luma, chroma, height, width, luma_stride, chroma_stride, self._device, params,
                                   output, shift=shift, stream=self._handle, empty=self._empty)
        out.record_stream(self._consumer)  # the caller's default stream may use it after we are done
        return out

    def _output_at(self, luma: int, chroma: int, height: int, width: int, luma_stride: int, chroma_stride: int,
                   sample: torch.dtype, params: ColorParams, output: OutputSpec, shift: int = 0) -> torch.Tensor:
        """:meth:`_output` for planes at device addresses, through a converter kept per frame kind."""
        out = self._converter(height, width, sample, params, output, shift)(luma, chroma, luma_stride, chroma_stride)
        out.record_stream(self._consumer)  # the caller's default stream may use it after we are done
        return out

    def _converter(self, height: int, width: int, sample: torch.dtype, params: ColorParams, output: OutputSpec,
                   shift: int) -> Any:
        """The converter for a frame kind (the frames of a job, and mostly of a whole clip, share one:
        the last one used is checked first)."""
        key = (params, output, height, width, sample, shift)
        last_key, convert = self._last
        if key != last_key:
            convert = self._converters.get(key)
            if convert is None:
                if len(self._converters) >= 64:  # kinds seen long ago go
                    self._converters.clear()
                convert = self._converters[key] = self._frame_converter(
                    params, output, height, width, self._device, sample, shift=shift, stream=self._handle,
                    empty=self._empty)
            self._last = (key, convert)
        return convert

    def _fail(self, bundle: GopBundle, exc: Exception, frame_id: int) -> BaseException:
        if self._unsupported(exc):
            self._backend.refuse(bundle, str(exc).strip().splitlines()[-2:], size=getattr(exc, "size", False))
            return UnsupportedStreamError(
                f"{bundle.source}: NVDEC on this GPU cannot decode {bundle.codec} {bundle.pix_fmt} "
                f"{bundle.width}x{bundle.height}", path=bundle.source, device=self.device)
        return CorruptDataError(
            f"{bundle.source}: GOP at frame {bundle.first_frame_id} does not decode on NVDEC ({exc})",
            path=bundle.source, frame_id=frame_id, device=self.device)

    def _unsupported(self, exc: Exception) -> bool:
        """Whether a decoder error says the stream cannot be decoded here (rather than damaged data)."""
        return False

    def close(self) -> None:
        super().close()
        torch.cuda.synchronize(self._device)


class CuvidSession(NvdecSession):
    """Decoders driven through libnvcuvid directly (:mod:`._cuvid`).

    A decoder serves streams of one codec, bit depth and size, with and without B-frames (4:2:0 only
    on this path): display order against reordering is the parser's display delay, set per GOP, and
    every decoder has surfaces enough for any stream of its class. Free decoders are the device's,
    shared by its sessions (:attr:`NvdecBackend.spares`, bounded by :data:`SPARE_BYTES`): a thread
    takes a free decoder of its job's size whoever used it last, so a set of many sizes needs a
    decoder per size and job in flight, not per size and thread; the decoder's pictures are made ready on the
    taking session's stream. With ``ASYNCDECODE_NVDEC_RECONFIGURE=1`` one decoder serves a
    whole class instead: made with room for the largest size seen so far
    (:meth:`NvdecBackend.largest`) and switched between sizes by ``cuvidReconfigureDecoder`` (off by
    default: see :data:`._cuvid.RECONFIGURE`).

    A picture is mapped only when a job wants it (or collects it): the conversion reads the mapped
    surface on the session's stream. Mapped surfaces are given back once that stream has finished
    with them: at the end of each job, or earlier when a decoder has all its output surfaces mapped.
    """

    def __init__(self, backend: NvdecBackend) -> None:
        super().__init__(backend)
        self._cuvid = backend.cuvid
        from ._cuda_color import _launch

        self._direct = _launch
        self._lib = self._cuvid.library()
        self._mapped: list[Any] = []  # decoders holding mapped pictures
        self._unprepared: set[tuple[Any, ...]] = set()  # decoder keys prepare() does not try again
        self._switches = backend.switches
        self.spares = backend.spares  # shared by the device's sessions

    def _delay(self, bundle: GopBundle, reads_on: bool) -> int:
        """The parser's display delay for a decoder of ``bundle``'s stream."""
        if reads_on:  # keep the hardware busy while this thread converts
            return READ_ON_DELAY
        return 0 if bundle.in_display_order else 1  # a single frame wanted: shown as soon as it is decoded

    def _key(self, bundle: GopBundle) -> tuple[Any, ...]:
        if self._switches:  # one decoder per class, switched to each size
            return bundle.codec, bundle.bit_depth
        return bundle.codec, bundle.bit_depth, bundle.width, bundle.height

    def _create(self, bundle: GopBundle) -> Any:
        # The hardware decoder itself is made (and counted) when the parser reports the format.
        return self._create_for(bundle.codec, bundle.bit_depth)

    def _create_for(self, codec: str, bits: int) -> Any:
        largest = self._backend.largest
        return self._cuvid.CuvidDecoder(codec, display_delay=0, stream=self._handle, native=self._backend.native_loop,
                                        max_size=lambda: largest(codec, bits), counts=self.counts,
                                        switches=self._switches)

    def _fit(self, decoder: Any, bundle: GopBundle) -> int:
        return decoder.fits(bundle.codec, bundle.bit_depth, bundle.width, bundle.height)

    def prepare(self) -> bool:
        """Make the first decoder of a stream shape no decoder was made for yet (idle threads do
        this, so that the first job of a stream finds one ready, off the jobs' path), while the
        device's free decoders have room for it without pushing one out: for each size the engine has checked,
        the most recently checked first (or, where decoders switch sizes, see
        :data:`._cuvid.RECONFIGURE`, for each class at its largest size). A stream this session
        cannot make a decoder for is not tried again."""
        if self._switches:
            wanted = [((codec, bits), codec, bits, w, h) for (codec, bits), (w, h) in self._backend.classes().items()]
        else:
            wanted = [(shape, *shape) for shape in self._backend.shapes()]
        spares = self.spares
        spares.expire()  # an idle thread: free decoders no job took for a while go
        for key, codec, bits, width, height in wanted:
            if key in self._unprepared:
                continue
            room = spares.room(key)  # claims the key: no other thread makes one of it meanwhile
            if not room:
                continue
            try:
                if self._cuvid.surface_bytes(width, height, bits) > room:
                    continue  # no room to keep it: its jobs make their own
                decoder = self._create_for(codec, bits)
                try:
                    with torch.cuda.stream(self._stream):
                        decoder.prepare(bits, width, height)
                except Exception as exc:  # refused here: the first job of the stream finds out for itself
                    log.debug("asyncdecode: no %s %d-bit %dx%d decoder made ahead: %s", codec, bits, width, height,
                              exc)
                    self._unprepared.add(key)
                    decoder.close()
                    return False
                spares.give(key, decoder)
                return True
            finally:
                spares.unclaim(key)
        return False

    def _decoder_bytes(self, decoder: Any) -> int:
        return decoder.nbytes

    def _take_spare(self, bundle: GopBundle) -> Any | None:
        decoder = super()._take_spare(bundle)
        if decoder is not None:
            decoder.use_stream(self._handle)
        return decoder

    def _give_spare(self, bundle: GopBundle, decoder: Any) -> None:
        if decoder in self._mapped:  # another thread may take it: its pictures are given back first
            self._unmap()
        super()._give_spare(bundle, decoder)

    def _start(self, decoder: Any, bundle: GopBundle, reads_on: bool) -> None:
        decoder.set_display_delay(self._delay(bundle, reads_on))

    def _close_decoder(self, decoder: Any) -> None:
        if decoder in self._mapped:  # its mapped pictures may still be read on the stream
            self._unmap()
        decoder.close()

    def _send(self, decoder: Any, bundle: GopBundle, i: int) -> list[Any]:
        offset, size, pts, _ = bundle.rows[i]
        return decoder.feed(self._base + offset, size, pts)

    def _drain(self, decoder: Any) -> list[Any]:
        return decoder.flush()

    def _native_run(self, decoder: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None,
                    wanted: Any, furthest: int, extras: Any = ()) -> NativeRun | None:
        # The C loop (see _native) when it was built and the frames convert by a plain driver launch
        # (no resize, no profiler hooks). The run is set up for the bundle's size: where the parser
        # reports another (the decoder is made or switched at the keyframe), it hands over to Python.
        if output is None or decoder.native is None or not self._direct.available:
            return None
        sample, shift = _samples(bundle.bit_depth, params)
        convert = self._converter(bundle.height, bundle.width, sample, params, output, shift)
        launch = convert.driver_launch()
        if launch is None:
            return None
        return _CuvidRun(self, decoder, bundle, convert, launch, sample.itemsize, sorted(wanted), furthest,
                         list(extras))

    def _lag(self, decoder: Any, bundle: GopBundle) -> bool:
        # In a GOP without reordering, on a decoder without display delay, a shown picture is the
        # reference of the next one (or, if it is not a reference, its surface comes round again only
        # after the parser has cycled through the others): it stays intact while the next packet
        # decodes. The map then finds its decode done or nearly, with the next one already queued on
        # the engine. A decoder with display delay has pictures queued already: its shown pictures
        # are mapped before the next packet goes in (the parser may reuse their surfaces then).
        return bundle.in_display_order and decoder.display_delay == 0

    def _holds_back(self, decoder: Any, bundle: GopBundle) -> bool:
        return decoder.display_delay > 0 or not bundle.in_display_order

    def _pts(self, frame: Any) -> int:
        return frame.pts

    def _convert(self, frame: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None) -> Any:
        decoder = frame.decoder
        if decoder.full:  # every output surface is mapped: let the readers finish, then give them back
            self._unmap()
        luma, pitch = decoder.map(frame)
        self._holding(decoder)
        chroma = luma + decoder.chroma_offset(pitch)
        height, width = decoder.height, decoder.width
        dtype, shift = _samples(decoder.bits, params)
        stride = pitch // dtype.itemsize
        if output is not None and self._direct.available:  # the kernel reads the mapped surface
            return self._output_at(luma, chroma, height, width, stride, stride, dtype, params, output, shift)
        # Copies out of the surface (on this stream, before it is unmapped): native planes for comparisons,
        # or planes the JIT-launched kernel can take.
        y = _surface(luma, (height, width), stride, dtype, self._device)
        uv = _surface(chroma, ((height + 1) // 2, (width + 1) // 2, 2), stride, dtype, self._device)
        if output is not None:
            y, uv = y.clone(), uv.clone()
            return self._output(y, uv, height, width, y.stride(0), uv.stride(0), params, output, shift)
        return _native_planes(y, uv, shift)

    def _holding(self, decoder: Any) -> None:
        """Note that ``decoder`` holds mapped pictures (given back by :meth:`_unmap`)."""
        if decoder not in self._mapped:  # a session has at most a few decoders
            self._mapped.append(decoder)

    def _sync(self) -> None:
        """Wait for everything queued on the session's stream."""
        self._lib.check("cuStreamSynchronize", self._lib.cuStreamSynchronize(self._handle))

    def _unmap(self) -> None:
        """Wait for the session's stream, then give back every mapped surface."""
        if self._mapped:
            self._sync()
            for decoder in self._mapped:
                decoder.unmap_all()
            self._mapped.clear()

    def _finish(self, result: Any) -> None:
        if self._mapped:  # also makes the frames written before they are handed over
            self._unmap()
        elif result.frames:
            self._sync()

    def _unsupported(self, exc: Exception) -> bool:
        return isinstance(exc, self._cuvid.CuvidUnsupported)

    def close(self) -> None:
        try:
            self._unmap()
        finally:
            decoders = [p.decoder for p in self.positions.values()]
            super().close()  # the device's free decoders too: the engine closes every session together
            for decoder in decoders:
                decoder.close()


class NvcSession(NvdecSession):
    """Decoders driven through PyNvVideoCodec.

    One decoder per stream shape (codec, bit depth, size, display order), kept free for later jobs
    while the session's free decoders take at most :data:`SESSION_SPARE_BYTES` of GPU memory. NVDEC's
    in-place reconfigure is not used on this path: PyNvVideoCodec's decoder reconfigures on a new size
    only within the size it was made with, and keeps the first stream's output size (pictures of
    another size come out scaled); switching sizes that way was also seen failing
    (CUDA_ERROR_INVALID_VALUE). The libnvcuvid path reconfigures (see :class:`CuvidSession`).
    """

    def __init__(self, backend: NvdecBackend) -> None:
        super().__init__(backend)
        self._nvc = backend.nvc
        self._eos = _end_of_stream(self._nvc)
        self._end_of_picture = self._nvc.VideoPacketFlag.ENDOFPICTURE  # for low-latency decoders' packets
        self._sizes: dict[int, int] = {}  # id(decoder) -> GPU memory of its surfaces, about

    def _decoder_bytes(self, decoder: Any) -> int:
        return self._sizes.get(id(decoder), 0)

    def _close_decoder(self, decoder: Any) -> None:
        self._sizes.pop(id(decoder), None)  # the decoder goes with the garbage collector

    def _create(self, bundle: GopBundle) -> Any:
        nvc = self._nvc
        self.counts.created += 1
        # Low latency verified frame for frame against the default mode on an H200 (PyNvVideoCodec
        # 2.2.4), GOPs fed back to back unflushed.
        latency = nvc.DisplayDecodeLatencyType.LOW if bundle.in_display_order else nvc.DisplayDecodeLatencyType.NATIVE
        decoder = nvc.CreateDecoder(gpuid=self._device.index, codec=getattr(nvc.cudaVideoCodec, _CODECS[bundle.codec]),
                                    cudacontext=0, cudastream=self._handle, usedevicememory=True, latency=latency)
        # Its surfaces, about: a reordering stream's reference pictures and the decoder's outputs.
        sample = 2 if bundle.bit_depth > 8 else 1
        self._sizes[id(decoder)] = _round16(bundle.width) * _round16(bundle.height) * 3 // 2 * sample * 24
        return decoder

    def _send(self, decoder: Any, bundle: GopBundle, i: int) -> list[Any]:
        offset, size, pts, _ = bundle.rows[i]
        packet = self._nvc.PacketData()
        packet.bsl_data = self._base + offset
        packet.bsl = size
        packet.pts = pts
        if bundle.in_display_order:  # a low-latency decoder: the packet is one whole picture
            packet.decode_flag = self._end_of_picture
        return decoder.Decode(packet)

    def _drain(self, decoder: Any) -> list[Any]:
        return decoder.Decode(self._eos)  # also resets the decoder for the next GOP

    def _pts(self, frame: Any) -> int:
        return int(frame.getPTS())

    def _convert(self, frame: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None) -> Any:
        if output is not None and params.bits == 8:  # the common case, straight from the addresses
            y, uv = (c.__cuda_array_interface__ for c in frame.cuda()[:2])
            return self._output_at(y["data"][0], uv["data"][0], y["shape"][0], y["shape"][1], _row_stride(y),
                                   _row_stride(uv), torch.uint8, params, output)
        luma, chroma = _planes(frame, self._device)
        shift = 16 - params.bits if luma.dtype != torch.uint8 else 0  # P016: samples in the high bits
        if output is None:  # native planes, for comparisons: copies, the surface is reused
            return _native_planes(luma, chroma, shift)
        return self._output(luma, chroma, luma.shape[0], luma.shape[1], luma.stride(0), chroma.stride(0),
                            params, output, shift)

    def _finish(self, result: Any) -> None:
        if result.frames:  # the frames are written before they are handed over
            done = torch.cuda.Event()
            done.record(self._stream)
            done.synchronize()

    def _unsupported(self, exc: Exception) -> bool:
        return isinstance(exc, self._nvc.PyNvVCExceptionUnsupported)


def _close_quietly(decoder: Any) -> None:
    """Close a free libnvcuvid decoder that goes (on any thread: it makes its context current)."""
    try:
        decoder.close()
    except Exception as exc:  # a broken decoder: what it holds goes with the garbage collector
        log.debug("asyncdecode: closing an NVDEC decoder failed: %s", exc)


def _samples(bits: int, params: ColorParams) -> tuple[torch.dtype, int]:
    """Sample type of a libnvcuvid decoder's mapped pictures of a ``bits``-deep stream, and the right
    shift to ``params.bits`` (P016: 16-bit samples, n-bit values in the high bits)."""
    return (torch.int16, 16 - params.bits) if bits > 8 else (torch.uint8, 0)


_SHOWN_DTYPE = np.dtype([("pts", "<i8"), ("index", "<i4"), ("progressive", "<i4"), ("top_first", "<i4"),
                         ("status", "<i4")])
#: Packets the C loop feeds per call: between calls the decoder thread checks whether the job was cancelled.
_RUN_CHUNK = 16


class _CuvidRun(NativeRun):
    """A job's packets through the C loop of :mod:`._native`: the wanted frames are converted into one
    output allocated up front (a tensor per frame, views of it), with one trip through the GIL per
    :data:`_RUN_CHUNK` packets instead of several per picture. Frames collected on the way (``extras``)
    are converted where they come out, each into its own tensor (a cache keeps and drops them one by
    one), and never waited for."""

    made = 0
    """Runs made in this process (tests check that the C loop is the path taken)."""

    def __init__(self, session: CuvidSession, decoder: Any, bundle: GopBundle, convert: Any, launch: Any,
                 sample_bytes: int, wanted: list[int], furthest: int, extras: list[int] | None = None) -> None:
        from . import _native

        _CuvidRun.made += 1
        self._native = _native
        self._session, self._decoder = session, decoder
        table = bundle.packets
        index = bundle.decode_index
        extras = extras or []
        every = wanted + extras
        pts = table["pts"][[index[f] for f in every]]
        order = np.argsort(pts, kind="stable")
        self._fids = [every[k] for k in order.tolist()]
        self._want_pts = np.ascontiguousarray(pts[order], np.int64)
        n = len(wanted)
        out = session._empty((n, *convert.shape), convert.dtype)
        out.record_stream(session._consumer)  # the caller's default stream may use it after we are done
        frames = list(out.unbind(0)) + [session._empty(convert.shape, convert.dtype) for _ in extras]
        for frame in frames[n:]:
            frame.record_stream(session._consumer)
        self._frames = [frames[k] for k in order.tolist()]
        self._real = np.ascontiguousarray(order < n, np.uint8)
        self._want_out = np.array([f.data_ptr() for f in self._frames], np.uint64)
        self._done = np.zeros(len(every), np.uint8)
        self._cap = len(table) + _native.SHOWN + 1
        self._out = (_native.Shown * self._cap)()
        self._shown = np.frombuffer(self._out, _SHOWN_DTYPE)
        self._seen = 0  # entries of the table already handed back
        self._feed = np.zeros(0, np.int64)
        self._fid_of = bundle.frame_of_pts
        self._picture = session._cuvid.Picture
        lib, cuda = decoder._lib, decoder._lib.cuda
        function, grid_x, grid_y, block_x, shared, param_buf, params = launch.native
        fields = PACKET_DTYPE.fields
        surface_h = decoder.surface_height_for(bundle.height)
        proc = decoder._proc
        addr = C.addressof
        self.run = _native.Run(
            parse=_address(lib.cuvidParseVideoData), map=_address(lib.cuvidMapVideoFrame64),
            unmap=_address(lib.cuvidUnmapVideoFrame64), sync=_address(lib.cuStreamSynchronize),
            launch=_address(cuda.cuLaunchKernel), parser=decoder._parser, stream=session._handle, proc=addr(proc),
            proc_progressive=type(proc).progressive_frame.offset, proc_top_first=type(proc).top_field_first.offset,
            output_surfaces=decoder.output_surfaces, table=table.ctypes.data, row_bytes=table.strides[0],
            col_offset=fields["offset"][1], col_size=fields["size"][1], col_pts=fields["pts"][1],
            payload=session._base, max_feed=_RUN_CHUNK,
            generation=session._cuvid.layout_id(bundle.width, bundle.height, bundle.bit_depth, surface_h),
            want_pts=self._want_pts.ctypes.data, want_out=self._want_out.ctypes.data, done=self._done.ctypes.data,
            real=self._real.ctypes.data, nwant=len(every), remaining=n, furthest_pts=int(table["pts"][index[furthest]]),
            function=function, grid_x=grid_x, grid_y=grid_y, block_x=block_x, shared=shared,
            param_buf=param_buf, params=params, height=bundle.height, width=bundle.width,
            sample_bytes=sample_bytes, chroma_rows=session._cuvid.chroma_rows(surface_h),
            out=addr(self._out), out_cap=self._cap)

    def start(self, indices: list[int], lag: bool) -> None:
        self._feed = np.asarray(indices, np.int64)
        run = self.run
        run.feed, run.nfeed, run.next, run.lag = self._feed.ctypes.data, len(self._feed), 0, int(lag)

    def step(self) -> NativeStep:
        return self._call(False)

    def flush(self) -> NativeStep:
        return self._call(True)

    def _call(self, flush: bool) -> NativeStep:
        run, native = self.run, self._native
        first = run.next
        if flush:
            run.nfeed = -1
        try:
            self._decoder.feed_run(run)
        finally:
            if self._decoder.state.nmapped:
                self._session._holding(self._decoder)
        fed = self._feed[first:run.next].tolist() if not flush else []
        left = None
        if run.stop == native.STOP_FORMAT:  # Python takes the pictures the new decoder showed, and goes on
            left = self._feed[run.next:].tolist()
            run.held = run.nout
        end = run.held
        rows = self._shown[self._seen:end]
        self._seen = end
        frames, for_python, extra = [], [], []
        fid_of, fids, out, real = self._fid_of, self._fids, self._frames, self._real
        decoder = self._decoder
        for pts, index, progressive, top_first, status in rows.tolist():
            if status >= 0:
                (frames if real[status] else extra).append((fids[status], out[status]))
            elif status == native.DROPPED:
                frames.append((fid_of.get(pts), None))
            else:
                for_python.append(self._picture(pts, index, progressive, top_first, decoder))
        more = not flush and left is None and run.remaining > 0 and run.next < run.nfeed
        return NativeStep(fed, frames, for_python, more, left, extra)


def _round16(n: int) -> int:
    return (n + 15) & ~15


def _address(function: Any) -> int:
    """The address of a ctypes-loaded C function."""
    return C.cast(function, C.c_void_p).value


def _native_planes(luma: torch.Tensor, chroma: torch.Tensor, shift: int) -> tuple[torch.Tensor, ...]:
    """Y, U, V as the decoder wrote them, copied out of its surface (which it reuses)."""
    planes = (luma, chroma[..., 0], chroma[..., 1])
    if shift:  # unsigned 16-bit samples held in int16: widen before shifting
        return tuple((p.to(torch.int32) & 0xFFFF) >> shift for p in planes)
    return tuple(p.clone(memory_format=torch.contiguous_format) for p in planes)


class _Surface:
    """A view of decoder memory by address, for ``torch.as_tensor`` (the CUDA array interface)."""

    def __init__(self, ptr: int, shape: tuple[int, ...], row_stride: int, itemsize: int, typestr: str) -> None:
        strides = (row_stride * itemsize, *(itemsize * n for n in _inner_strides(shape)))
        self.__cuda_array_interface__ = {"shape": shape, "strides": strides, "typestr": typestr,
                                         "data": (ptr, False), "version": 2}


def _inner_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of the dimensions after the first, contiguous."""
    out = []
    step = 1
    for n in reversed(shape[1:]):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def _surface(ptr: int, shape: tuple[int, ...], row_stride: int, dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
    """A tensor over mapped decoder memory (rows ``row_stride`` samples apart); no copy."""
    itemsize, typestr = (2, "<i2") if dtype == torch.int16 else (1, "|u1")
    return torch.as_tensor(_Surface(ptr, shape, row_stride, itemsize, typestr), device=device)


def _row_stride(cai: dict[str, Any]) -> int:
    """Bytes from one row of an 8-bit plane's array interface to the next."""
    strides = cai.get("strides")
    if strides:
        return int(strides[0])
    row = 1
    for n in cai["shape"][1:]:
        row *= int(n)
    return row


def _planes(frame: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Luma ``(H, W)`` and interleaved chroma ``(ceil(H/2), ceil(W/2), 2)`` views of a decoded frame.

    NV12 planes come through the CUDA array interface; 16-bit (P016) frames through DLPack of the
    whole frame (their array-interface strides are not whole elements), split at row H.
    """
    luma_cai, chroma_cai = frame.cuda()[:2]
    try:
        luma = torch.as_tensor(luma_cai, device=device)
        chroma = torch.as_tensor(chroma_cai, device=device)
        return luma.view(luma.shape[0], luma.shape[1]), chroma
    except ValueError:
        pass
    height = luma_cai.shape[0]
    whole = torch.from_dlpack(frame).view(torch.int16)  # uint16 samples (or their bytes, paired up)
    rows, width = whole.shape[0], whole.shape[1]
    luma = whole[:height]
    chroma = whole[height:rows].reshape(rows - height, width // 2, 2)
    return luma, chroma


def _end_of_stream(nvc: Any) -> Any:
    packet = nvc.PacketData()
    packet.bsl = 0
    packet.bsl_data = 0
    return packet
