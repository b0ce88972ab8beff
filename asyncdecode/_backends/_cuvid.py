"""NVIDIA's video decoder library (``libnvcuvid``, part of the driver) driven directly through ctypes.

The NVDEC backend's default decoder. Compared with going through PyNvVideoCodec's ``Decode``, the
host keeps only what the engine needs per picture: the parser's callbacks hand each picture straight
to the hardware, nothing is mapped or copied for pictures nobody asked for (random access decodes
about 15 pictures per wanted frame at GOP 30), and a wanted picture is mapped once, converted in
place by the caller, and unmapped.

One :class:`CuvidDecoder` is NVIDIA's bitstream parser plus the hardware decoder it feeds, used by a
single thread (the parser calls back on the thread that feeds it). The hardware decoder is made when
the parser first reports the stream's format, at the stream's size. With :data:`RECONFIGURE` it is
made with room for the largest size its owner expects (``max_size``), and a later stream of the same
codec, chroma format and bit depth (its *class*) that fits that room switches the decoder to its
size with ``cuvidReconfigureDecoder``, as NVIDIA's samples do on a resolution change, in
microseconds rather than the tens of milliseconds of a new decoder; only a larger stream (or one
needing more surfaces) makes a new, larger decoder.

Only the structures and calls used here are declared; their layouts follow NVIDIA's C headers
(``nvcuvid.h``, ``cuviddec.h``) for 64-bit Linux and are checked by ``tests/test_cuvid_layout.py``.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import functools
import os
import threading
import types
from collections.abc import Callable
from typing import Any

from .. import _trim
from . import _native

_ulong = C.c_ulong  # the headers' "unsigned long": 8 bytes on 64-bit Linux

PKT_END_OF_STREAM = 0x01
PKT_TIMESTAMP = 0x02
PKT_END_OF_PICTURE = 0x08  # the packet holds exactly one picture: the parser need not wait for the next

#: cudaVideoCodec values by FFmpeg codec name.
CODECS = {"mpeg2video": 1, "h264": 4, "hevc": 8, "vp8": 9, "vp9": 10, "av1": 11}
_CHROMA_420 = 1
_SURFACE_NV12, _SURFACE_P016 = 0, 1
_CREATE_PREFER_CUVID = 0x04  # the dedicated video engines
_NOT_SUPPORTED = 801  # CUDA_ERROR_NOT_SUPPORTED
_OUTPUT_SURFACES = 4
"""Pictures mapped at once per decoder; the caller unmaps before mapping more (see ``mapped``)."""
MAX_DISPLAY_DELAY = 4
"""The largest display delay a decoder takes (its decode surfaces leave room for that many)."""
MIN_SURFACES = 24
"""Decode surfaces a hardware decoder is made with at least: room for H.264's and HEVC's largest
reference sets (16) with the extra and display-delay surfaces, so one decoder takes every stream of
its class."""

RECONFIGURE = os.environ.get("ASYNCDECODE_NVDEC_RECONFIGURE", "0") == "1"
"""Switch decoders between sizes of a class with ``cuvidReconfigureDecoder`` (``ASYNCDECODE_NVDEC_RECONFIGURE=1``).
Off by default: on the H200 (driver 580.159) ten threads decoding many sizes with it hung, first
without a lock (a reconfigure overlapping another thread's decode left every later decode waiting
forever) and then with every decode and map kept apart from each reconfigure (:class:`_Gate`), after
a few seconds. One thread alone switched a thousand times without fault. Off, a decoder is made for
each size and kept free, in memory-bounded pools. Tried since (H100, the same driver, 2026-12-05,
``benchmarks/reconfigure_check.py``; each hung within 30 s): the gate covering unmaps too; each
reconfigure first waiting, alone in the gate, until ``cuvidGetDecodeStatus`` showed no picture of any
decoder still on the hardware; the stream ended on a decoder (its parser giving back every picture)
before it took a GOP of another size; and both together. ``_native.busy`` then showed (H200, same
driver): all threads waiting at the gate behind one call that never returned, the first decode or
map after a reconfigure, on the decoder just switched or another; with two decoder threads too. One
thread ran 2,057 reconfigures in 26 s without fault. So an engine with more than one decoder thread
ignores it (:meth:`.nvdec.NvdecBackend.opening`, with a warning)."""


CONTEXT_LOCK = os.environ.get("ASYNCDECODE_NVDEC_CONTEXT_LOCK", "0") == "1"
"""Make hardware decoders with a driver context lock (``cuvidCtxLockCreate``, one per CUDA context,
in ``CUVIDDECODECREATEINFO.vidLock``), as the Video Codec SDK's samples do
(``ASYNCDECODE_NVDEC_CONTEXT_LOCK=1``). An experiment for :data:`RECONFIGURE` with several threads:
off, the engine's own gate keeps the NVDEC calls apart and the driver takes no lock of its own."""


FIXED_TARGET = os.environ.get("ASYNCDECODE_NVDEC_FIXED_TARGET", "0") == "1"
"""Where decoders switch sizes (:data:`RECONFIGURE`), keep their output surfaces at the decoder's
largest size and write each picture unscaled into its top-left corner (``target_rect``), so that a
reconfigure changes only the decode size, never the output surfaces
(``ASYNCDECODE_NVDEC_FIXED_TARGET=1``). An experiment for :data:`RECONFIGURE` with several threads:
with it, an engine of several decoder threads keeps the reconfigure (:meth:`.nvdec.NvdecBackend.opening`).
Seen on an H100 (driver 580.159, 2026-12-05, ``benchmarks/reconfigure_check.py``): ten threads ran
5,504 reconfigures in 20 s without a hang. The pictures were right but for their last 2 columns where
the width is not a multiple of 4; the area placed is now rounded up to 4 columns
(:meth:`CuvidDecoder._placement`), not yet run on a GPU."""


def switching(lib: Any) -> bool:
    """Whether decoders made now switch between sizes of a class in place: :data:`RECONFIGURE` is on
    and the driver has ``cuvidReconfigureDecoder``."""
    return RECONFIGURE and lib.cuvidReconfigureDecoder is not None


class _Rect(C.Structure):
    _fields_ = [("left", C.c_int), ("top", C.c_int), ("right", C.c_int), ("bottom", C.c_int)]


class _ShortRect(C.Structure):
    _fields_ = [("left", C.c_short), ("top", C.c_short), ("right", C.c_short), ("bottom", C.c_short)]


class VideoFormat(C.Structure):
    """``CUVIDEOFORMAT``: what the parser found in the sequence header."""

    _fields_ = [
        ("codec", C.c_int), ("rate_numerator", C.c_uint), ("rate_denominator", C.c_uint),
        ("progressive_sequence", C.c_ubyte), ("bit_depth_luma_minus8", C.c_ubyte),
        ("bit_depth_chroma_minus8", C.c_ubyte), ("min_num_decode_surfaces", C.c_ubyte),
        ("coded_width", C.c_uint), ("coded_height", C.c_uint), ("display_area", _Rect),
        ("chroma_format", C.c_int), ("bitrate", C.c_uint), ("aspect_x", C.c_int), ("aspect_y", C.c_int),
        ("video_signal", C.c_ubyte * 4), ("seqhdr_data_length", C.c_uint),
    ]


class DisplayInfo(C.Structure):
    """``CUVIDPARSERDISPINFO``: a picture ready to be shown."""

    _fields_ = [("picture_index", C.c_int), ("progressive_frame", C.c_int), ("top_field_first", C.c_int),
                ("repeat_first_field", C.c_int), ("timestamp", C.c_longlong)]


_SEQUENCE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(VideoFormat))
_DECODE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p)  # the picture parameters go to the decoder untouched
_DISPLAY = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(DisplayInfo))


class ParserParams(C.Structure):
    """``CUVIDPARSERPARAMS``."""

    _fields_ = [
        ("codec", C.c_int), ("max_decode_surfaces", C.c_uint), ("clock_rate", C.c_uint),
        ("error_threshold", C.c_uint), ("max_display_delay", C.c_uint), ("annexb_bits", C.c_uint),
        ("reserved1", C.c_uint * 4), ("user_data", C.c_void_p), ("on_sequence", _SEQUENCE),
        ("on_decode", _DECODE), ("on_display", _DISPLAY), ("on_operating_point", C.c_void_p),
        ("reserved2", C.c_void_p * 6), ("ext_video_info", C.c_void_p),
    ]


class SourcePacket(C.Structure):
    """``CUVIDSOURCEDATAPACKET``."""

    _fields_ = [("flags", _ulong), ("payload_size", _ulong), ("payload", C.c_void_p), ("timestamp", C.c_longlong)]


class DecoderCaps(C.Structure):
    """``CUVIDDECODECAPS``."""

    _fields_ = [
        ("codec", C.c_int), ("chroma_format", C.c_int), ("bit_depth_minus8", C.c_uint), ("reserved1", C.c_uint * 3),
        ("supported", C.c_ubyte), ("engines", C.c_ubyte), ("output_format_mask", C.c_ushort),
        ("max_width", C.c_uint), ("max_height", C.c_uint), ("max_mb_count", C.c_uint),
        ("min_width", C.c_ushort), ("min_height", C.c_ushort), ("histogram_supported", C.c_ubyte),
        ("counter_bit_depth", C.c_ubyte), ("max_histogram_bins", C.c_ushort), ("reserved3", C.c_uint * 10),
    ]


class CreateInfo(C.Structure):
    """``CUVIDDECODECREATEINFO``."""

    _fields_ = [
        ("width", _ulong), ("height", _ulong), ("decode_surfaces", _ulong), ("codec", C.c_int),
        ("chroma_format", C.c_int), ("creation_flags", _ulong), ("bit_depth_minus8", _ulong),
        ("intra_decode_only", _ulong), ("max_width", _ulong), ("max_height", _ulong), ("reserved1", _ulong),
        ("display_area", _ShortRect), ("output_format", C.c_int), ("deinterlace_mode", C.c_int),
        ("target_width", _ulong), ("target_height", _ulong), ("output_surfaces", _ulong),
        ("context_lock", C.c_void_p), ("target_rect", _ShortRect), ("enable_histogram", _ulong),
        ("reserved2", _ulong * 4),
    ]


class ProcParams(C.Structure):
    """``CUVIDPROCPARAMS``: how to map a decoded picture."""

    _fields_ = [
        ("progressive_frame", C.c_int), ("second_field", C.c_int), ("top_field_first", C.c_int),
        ("unpaired_field", C.c_int), ("reserved_flags", C.c_uint), ("reserved_zero", C.c_uint),
        ("raw_input", C.c_ulonglong), ("raw_input_pitch", C.c_uint), ("raw_input_format", C.c_uint),
        ("raw_output", C.c_ulonglong), ("raw_output_pitch", C.c_uint), ("reserved1", C.c_uint),
        ("output_stream", C.c_void_p), ("reserved", C.c_uint * 46), ("histogram", C.c_void_p),
        ("reserved2", C.c_void_p * 1),
    ]


class ReconfigureInfo(C.Structure):
    """``CUVIDRECONFIGUREDECODERINFO``: a decoder switched to another size of the same class."""

    _fields_ = [
        ("width", C.c_uint), ("height", C.c_uint), ("target_width", C.c_uint), ("target_height", C.c_uint),
        ("decode_surfaces", C.c_uint), ("reserved1", C.c_uint * 12), ("display_area", _ShortRect),
        ("target_rect", _ShortRect), ("reserved2", C.c_uint * 11),
    ]


class DecodeStatus(C.Structure):
    """``CUVIDGETDECODESTATUS``."""

    _fields_ = [("status", C.c_int), ("reserved", C.c_uint * 31), ("reserved_ptrs", C.c_void_p * 8)]


IN_PROGRESS = 1
"""``DecodeStatus.status`` of a picture the engine is still decoding (reported for H.264 and HEVC)."""


class CuvidError(RuntimeError):
    """A call into libnvcuvid (or the CUDA driver) failed."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} failed: {_error_name(code)} ({code})")
        self.call = call
        self.code = code


class CuvidUnsupported(CuvidError):
    """This GPU's NVDEC cannot decode the stream (codec, bit depth, chroma format or size)."""

    def __init__(self, message: str, *, size: bool = False) -> None:
        RuntimeError.__init__(self, message)
        self.call = "cuvidGetDecoderCaps"
        self.code = _NOT_SUPPORTED
        self.size = size
        """Only the stream's size is out of this GPU's range (other streams of its class decode)."""


class Library:
    """The loaded driver libraries, with the argument types of every call used."""

    def __init__(self) -> None:
        self.cuvid = C.CDLL("libnvcuvid.so.1")
        self.cuda = C.CDLL("libcuda.so.1")
        vp, i, ref = C.c_void_p, C.c_int, C.POINTER
        signatures = {
            (self.cuvid, "cuvidCreateVideoParser"): (ref(vp), ref(ParserParams)),
            (self.cuvid, "cuvidParseVideoData"): (vp, ref(SourcePacket)),
            (self.cuvid, "cuvidDestroyVideoParser"): (vp,),
            (self.cuvid, "cuvidGetDecoderCaps"): (ref(DecoderCaps),),
            (self.cuvid, "cuvidCreateDecoder"): (ref(vp), ref(CreateInfo)),
            (self.cuvid, "cuvidCtxLockCreate"): (ref(vp), vp),
            (self.cuvid, "cuvidDestroyDecoder"): (vp,),
            (self.cuvid, "cuvidDecodePicture"): (vp, vp),
            (self.cuvid, "cuvidMapVideoFrame64"): (vp, i, ref(C.c_ulonglong), ref(C.c_uint), ref(ProcParams)),
            (self.cuvid, "cuvidUnmapVideoFrame64"): (vp, C.c_ulonglong),
            (self.cuvid, "cuvidGetDecodeStatus"): (vp, i, ref(DecodeStatus)),
            (self.cuda, "cuCtxGetCurrent"): (ref(vp),),
            (self.cuda, "cuStreamSynchronize"): (vp,),
            (self.cuda, "cuCtxPushCurrent_v2"): (vp,),
            (self.cuda, "cuCtxPopCurrent_v2"): (ref(vp),),
            (self.cuda, "cuGetErrorName"): (i, ref(C.c_char_p)),
        }
        for (lib, name), argtypes in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = C.c_int
            setattr(self, name, fn)
        # Drivers before the Video Codec SDK 9 have no reconfigure: decoders are then made per size.
        self.cuvidReconfigureDecoder = getattr(self.cuvid, "cuvidReconfigureDecoder", None)
        if self.cuvidReconfigureDecoder is not None:
            self.cuvidReconfigureDecoder.argtypes = (vp, ref(ReconfigureInfo))
            self.cuvidReconfigureDecoder.restype = C.c_int
        self._caps: dict[tuple[int, int, int], DecoderCaps] = {}
        self._locks: dict[int, int] = {}  # CUDA context -> its driver context lock (CONTEXT_LOCK)
        self._locks_guard = threading.Lock()
        # Unmapping only gives a surface back (a few microseconds, never waits for the GPU): called with
        # the GIL held, it spares the decoder thread a wait to take the GIL back among ten others.
        # (Parsing is not: it calls back into Python per picture and hands pictures to the hardware,
        # which can wait milliseconds; with the GIL held there, sequential reading measured 30-45%
        # slower on an H200.)
        self.unmap_holding_gil = C.PyDLL("libnvcuvid.so.1").cuvidUnmapVideoFrame64
        self.unmap_holding_gil.argtypes = (vp, C.c_ulonglong)
        self.unmap_holding_gil.restype = C.c_int

    def check(self, call: str, code: int) -> None:
        if code:
            raise CuvidError(call, code)

    def caps(self, codec: int, chroma_format: int, bit_depth_minus8: int) -> DecoderCaps:
        """What this GPU's NVDEC decodes for a codec, chroma format and bit depth (asked once)."""
        key = (codec, chroma_format, bit_depth_minus8)
        caps = self._caps.get(key)
        if caps is None:
            caps = DecoderCaps(codec=codec, chroma_format=chroma_format, bit_depth_minus8=bit_depth_minus8)
            self.check("cuvidGetDecoderCaps", self.cuvidGetDecoderCaps(C.byref(caps)))
            self._caps[key] = caps
        return caps

    def context_lock(self, ctx: int) -> int:
        """The driver's context lock for ``ctx``, made once (see :data:`CONTEXT_LOCK`)."""
        with self._locks_guard:
            lock = self._locks.get(ctx)
            if lock is None:
                handle = C.c_void_p()
                self.check("cuvidCtxLockCreate", self.cuvidCtxLockCreate(C.byref(handle), ctx))
                lock = self._locks[ctx] = handle.value or 0  # kept for the process's life, like the context
            return lock

    def current_context(self) -> int:
        ctx = C.c_void_p()
        self.check("cuCtxGetCurrent", self.cuCtxGetCurrent(C.byref(ctx)))
        if not ctx.value:
            raise CuvidError("cuCtxGetCurrent (no CUDA context is current on this thread)", 201)
        return ctx.value


@functools.cache
def library() -> Library:
    """The driver's decoder library, loaded once (``OSError`` where the NVIDIA driver is missing)."""
    return Library()


def _error_name(code: int) -> str:
    try:
        lib = library()
    except OSError:
        return "CUDA error"
    name = C.c_char_p()
    if lib.cuGetErrorName(code, C.byref(name)) or not name.value:
        return "CUDA error"
    return name.value.decode()


def chroma_rows(height: int) -> int:
    """Rows of pitch from a mapped picture's luma to its chroma: the output surface's height, even."""
    return (height + 1) & ~1


class _Gate:
    """A shared/exclusive lock over the NVDEC calls of the whole process.

    ``cuvidReconfigureDecoder`` called while another thread's decoder (same CUDA context) was in
    ``cuvidDecodePicture`` left every later decode of the process waiting forever (H200, driver 580;
    one thread reconfiguring a thousand times alone never did). So decodes, maps and unmaps go through
    the gate together, shared, and a reconfigure goes alone, waiting for the calls in progress; waiting
    reconfigures go before new shared calls (that was not enough either: see :data:`RECONFIGURE`).
    This is the gate of decoders without the compiled loop; with it, the same gate lives in C
    (``ad_map``, ``ad_unmap_one``, ``ad_reconfigure``, ``ad_on_decode``).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._alone = False
        self._waiting = 0  # reconfigures waiting: new shared calls wait behind them

    @contextlib.contextmanager
    def shared(self) -> Any:
        with self._cond:
            while self._alone or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Any:
        with self._cond:
            self._waiting += 1
            while self._alone or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()

    def shared_call(self, function: Callable[..., int]) -> Callable[..., int]:
        """``function`` called inside the gate, shared."""
        def call(*args: Any) -> int:
            with self.shared():
                return function(*args)
        return call


_GATE = _Gate()

_layouts: dict[tuple[int, int, int, int], int] = {}


def layout_id(width: int, height: int, bits: int, surface_height: int = 0) -> int:
    """A number per output layout (display size, bit depth, output surface height: ``height`` when 0)
    of mapped pictures, the same in every decoder: the C loop is set up for one layout and stops where
    a decoder's layout differs from it (see ``DecoderState.generation``)."""
    key = (width, height, bits, surface_height or height)
    found = _layouts.get(key)
    if found is None:
        found = _layouts.setdefault(key, len(_layouts) + 1)
    return found


def surface_bytes(width: int, height: int, bits: int) -> int:
    """GPU memory, about, of a decoder made for ``width`` x ``height`` at ``bits`` (the least
    surfaces it is made with, decode and output)."""
    sample = 2 if bits > 8 else 1
    return _round_up(width) * _round_up(height) * 3 // 2 * sample * (MIN_SURFACES + _OUTPUT_SURFACES)


def _round_up(n: int, to: int = 16) -> int:
    return (n + to - 1) // to * to


class Picture:
    """A decoded picture as the parser announced it for display; :meth:`CuvidDecoder.map` maps it."""

    __slots__ = ("pts", "index", "progressive", "top_first", "decoder")

    def __init__(self, pts: int, index: int, progressive: int, top_first: int, decoder: CuvidDecoder) -> None:
        self.pts = pts
        self.index = index
        self.progressive = progressive
        self.top_first = top_first
        self.decoder = decoder


class CuvidDecoder:
    """NVIDIA's parser and the hardware decoder it feeds, for one codec, on the current CUDA context.

    Args:
        codec: FFmpeg codec name (a key of :data:`CODECS`).
        display_delay: Pictures the parser holds back before showing one (beyond what reordering
            needs). 0 (every packet one whole picture in display order): each picture is shown by
            the call that feeds it. More keeps that many pictures on the hardware while the caller
            maps and converts a shown one, for clips read on.
        stream: Raw CUDA stream handle mapped pictures are made ready on.
        extra_surfaces: Decode surfaces beyond the stream's minimum and :data:`MAX_DISPLAY_DELAY`
            (more pictures in flight).
        native: Let the parser call back into C, and runs of packets go through the C loop, where
            :mod:`._native` can be built (``False``: Python callbacks and feeding, for comparison).
        max_size: The largest coded ``(width, height)`` the owner expects of this decoder's class
            (asked when a hardware decoder is made: it is made that large, so that streams up to that
            size are switched to by a reconfigure). ``None``: the stream's own size.
        counts: Where hardware decoders made and reconfigured are counted, shared by a session's
            decoders (an object with ``created`` and ``reconfigured``; default: this decoder's own).
        switches: Whether to switch between sizes in place (``None``: :func:`switching`; ``False``
            turns it off where it would be on).
    """

    output_surfaces = _OUTPUT_SURFACES
    """Pictures mapped at once, at most."""

    def __init__(self, codec: str, *, display_delay: int, stream: int, extra_surfaces: int = 4,
                 native: bool = True, max_size: Callable[[], tuple[int, int]] | None = None,
                 counts: Any = None, switches: bool | None = None) -> None:
        self._lib = lib = library()
        self._ctx = lib.current_context()
        self._codec = CODECS[codec]
        self.display_delay = display_delay
        self._extra = extra_surfaces
        self._decode_picture = lib.cuvidDecodePicture
        self._parse = lib.cuvidParseVideoData
        self.handle: int | None = None  # the hardware decoder, made at the first sequence header
        self.shape: tuple[int, ...] = ()
        self.width = self.height = self.surface_height = self.bits = 0
        self.max_width = self.max_height = 0  # the room the hardware decoder was made with
        self._fixed = False  # its output surfaces are at its room, pictures placed in their corner
        self._class: tuple[int, int, int] = (-1, -1, -1)  # codec, chroma format, bit depth of the hardware decoder
        self._surfaces = 0
        self._max_size = max_size
        self.counts = counts if counts is not None else types.SimpleNamespace(created=0, reconfigured=0)
        self.created = 0
        self.reconfigured = 0
        # Callback state and mapped pictures, shared with the C loop (also kept when Python drives).
        self.state = _native.DecoderState(decode=C.cast(lib.cuvidDecodePicture, C.c_void_p).value)
        self._state_ref = C.byref(self.state)
        self.native = _native.library() if native else None
        """The compiled decode loop (:mod:`._native`) this decoder's parser calls back into, or ``None``."""
        self.switches = switching(lib) if switches is None else switches and switching(lib)
        """Whether this decoder switches between sizes of its class in place (see :data:`RECONFIGURE`)."""
        # Maps and unmaps (and decodes, in the callbacks) go through the process's gate, shared (_GATE).
        if self.native is not None:
            native = self.native
            self._map = functools.partial(native.ad_map, C.cast(lib.cuvidMapVideoFrame64, C.c_void_p).value)
            self._unmap = functools.partial(native.ad_unmap_one, C.cast(lib.cuvidUnmapVideoFrame64, C.c_void_p).value)
        else:
            self._map = _GATE.shared_call(lib.cuvidMapVideoFrame64)
            self._unmap = _GATE.shared_call(lib.unmap_holding_gil)
        self._out: list[Picture] = []
        self._error: BaseException | None = None
        self._packet = SourcePacket()
        self._packet_ref = C.byref(self._packet)
        self._stream = stream
        self._proc = ProcParams(output_stream=stream)
        self._proc_ref = C.byref(self._proc)
        self._ptr, self._pitch = C.c_ulonglong(), C.c_uint()
        self._ptr_ref, self._pitch_ref = C.byref(self._ptr), C.byref(self._pitch)
        # The callbacks must outlive the parser: kept on the object. Pictures go to the hardware and are
        # recorded as shown by the C callbacks where they were built, else by these.
        if self.native is None:
            self._callbacks = (_SEQUENCE(self._on_sequence), _DECODE(self._on_decode), _DISPLAY(self._on_display))
        else:
            self._callbacks = (_SEQUENCE(self._on_sequence), _DECODE(C.cast(self.native.ad_on_decode, C.c_void_p).value),
                               _DISPLAY(C.cast(self.native.ad_on_display, C.c_void_p).value))
        self._parser: int | None = self._create_parser(display_delay)

    def _create_parser(self, delay: int) -> int:
        if not 0 <= delay <= MAX_DISPLAY_DELAY:
            raise ValueError(f"display delay must be 0..{MAX_DISPLAY_DELAY}, not {delay}")
        params = ParserParams(codec=self._codec, max_decode_surfaces=1, error_threshold=0, max_display_delay=delay,
                              user_data=C.addressof(self.state), on_sequence=self._callbacks[0], on_decode=self._callbacks[1],
                              on_display=self._callbacks[2])
        parser = C.c_void_p()
        self._lib.check("cuvidCreateVideoParser", self._lib.cuvidCreateVideoParser(C.byref(parser), C.byref(params)))
        return parser.value

    def set_display_delay(self, delay: int) -> None:
        """Show each picture ``delay`` pictures after it is fed, from the next keyframe on.

        Only between GOPs (the decoder drained, or holding nothing): a new parser takes over the same
        hardware decoder and starts at the next keyframe's parameter sets.
        """
        if delay == self.display_delay or self._parser is None:
            return
        parser = self._create_parser(delay)
        self._lib.cuvidDestroyVideoParser(self._parser)
        self._parser, self.display_delay = parser, delay
        _trim.freed()  # a parser's heap went

    def use_stream(self, stream: int) -> None:
        """Make mapped pictures ready on ``stream`` from now on (a decoder taken by another thread's
        session: free decoders are shared by the sessions of a device). Nothing may be mapped."""
        if self._stream != stream:
            assert not self.state.nmapped, "a decoder changes streams with pictures mapped"
            self._stream = stream
            self._proc.output_stream = stream

    # -- feeding --------------------------------------------------------------------------------

    def feed(self, address: int, size: int, pts: int) -> list[Picture]:
        """Parse one packet (one whole picture); the pictures it made ready for display."""
        packet = self._packet
        packet.flags = PKT_TIMESTAMP | PKT_END_OF_PICTURE
        packet.payload = address
        packet.payload_size = size
        packet.timestamp = pts
        return self._run("cuvidParseVideoData")

    def flush(self) -> list[Picture]:
        """End of stream: the pictures held back; the parser then waits for a new keyframe."""
        packet = self._packet
        packet.flags = PKT_END_OF_STREAM
        packet.payload = None
        packet.payload_size = 0
        packet.timestamp = 0
        return self._run("cuvidParseVideoData (end of stream)")

    def _run(self, call: str) -> list[Picture]:
        state = self.state
        self._out = out = []
        state.count = state.error = 0
        code = self._parse(self._parser, self._packet_ref)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self.native is not None:
            if state.error:
                if state.error < 0:
                    raise CuvidError(f"{call}: more than {_native.SHOWN} pictures shown by one call", 999)
                raise CuvidError("cuvidDecodePicture", state.error)
            out = [Picture(p.pts, p.index, p.progressive, p.top_first, self) for p in state.shown[:state.count]]
        if code:
            raise CuvidError(call, code)
        return out

    def feed_run(self, run: _native.Run) -> None:
        """Go on with a run of packets in C (:func:`ad_feed`, without the GIL); see :class:`NativeRun`.

        Raises:
            CuvidUnsupported: the format the parser reported cannot be decoded here.
            CuvidError: a call failed (the run's ``error`` and ``error_call`` say which).
        """
        failed = self.native.ad_feed(self._state_ref, C.byref(run))
        if self._error is not None:  # the sequence callback's own error says more than the parse's code
            error, self._error = self._error, None
            raise error
        if failed:
            raise CuvidError(_native.CALLS.get(run.error_call, "decode loop"), run.error)

    # -- mapping --------------------------------------------------------------------------------

    def map(self, picture: Picture) -> tuple[int, int]:
        """Device address and row pitch (bytes) of a picture; chroma starts ``chroma_offset`` bytes in.

        The caller reads it on the decoder's stream and then calls :meth:`unmap_all` (at most
        :data:`_OUTPUT_SURFACES` at once; reading must be finished, or queued on that stream, first).
        """
        proc = self._proc
        proc.progressive_frame = picture.progressive
        proc.top_field_first = picture.top_first
        code = self._map(self.handle, picture.index, self._ptr_ref, self._pitch_ref, self._proc_ref)
        if code:
            raise CuvidError("cuvidMapVideoFrame64", code)
        ptr = self._ptr.value
        state = self.state
        state.mapped[state.nmapped] = ptr
        state.nmapped += 1
        return ptr, self._pitch.value

    @property
    def mapped(self) -> list[int]:
        """Addresses of pictures mapped and not yet unmapped (at most :data:`_OUTPUT_SURFACES`)."""
        return list(self.state.mapped[:self.state.nmapped])

    @property
    def full(self) -> bool:
        """Whether as many pictures are mapped as the decoder has output surfaces."""
        return self.state.nmapped >= _OUTPUT_SURFACES

    @property
    def chroma_rows(self) -> int:
        """Rows of pitch from a mapped picture's luma to its chroma (see :func:`chroma_rows`)."""
        return chroma_rows(self.surface_height)

    def chroma_offset(self, pitch: int) -> int:
        return pitch * self.chroma_rows

    def unmap_all(self) -> None:
        """Unmap every mapped picture (their readers must be done)."""
        state = self.state
        while state.nmapped:
            state.nmapped -= 1
            self._lib.check("cuvidUnmapVideoFrame64", self._unmap(self.handle, state.mapped[state.nmapped]))

    # -- parser callbacks (on the feeding thread, inside cuvidParseVideoData) ---------------------

    def _on_sequence(self, _user: Any, fmt_ptr: Any) -> int:
        try:
            return self._configure(fmt_ptr.contents)
        except BaseException as exc:  # raised again by _run once the parser returns
            self._error = exc
            return 0

    def _on_decode(self, _user: Any, picture: Any) -> int:
        with _GATE.shared():
            code = self._decode_picture(self.handle, picture)
        if code:
            self._error = CuvidError("cuvidDecodePicture", code)
            return 0
        return 1

    def _on_display(self, _user: Any, info: Any) -> int:
        if info:
            d = info.contents
            self._out.append(Picture(d.timestamp, d.picture_index, d.progressive_frame, d.top_field_first, self))
        return 1

    def _configure(self, fmt: VideoFormat) -> int:
        """Set the hardware decoder up for the format (a new one, or the one there switched to the
        format's size); the decode surface count. Only when the format changed."""
        area = fmt.display_area
        bits = 8 + fmt.bit_depth_luma_minus8
        # At least MIN_SURFACES: streams of one class differ in what they need (B-frames, levels), and a
        # decoder made for the least would be made again for the next.
        needed = max(fmt.min_num_decode_surfaces + self._extra + MAX_DISPLAY_DELAY, MIN_SURFACES)
        shape = (fmt.codec, fmt.chroma_format, bits, fmt.coded_width, fmt.coded_height,
                 area.left, area.top, area.right, area.bottom)
        if shape == self.shape and self.handle is not None and needed <= self._surfaces:
            return self._surfaces
        lib = self._lib
        caps = lib.caps(fmt.codec, fmt.chroma_format, fmt.bit_depth_luma_minus8)
        what = f"codec {fmt.codec}, chroma format {fmt.chroma_format}, {bits}-bit, {fmt.coded_width}x{fmt.coded_height}"
        if not caps.supported:
            raise CuvidUnsupported(f"NVDEC on this GPU does not decode {what}")
        if fmt.coded_width > caps.max_width or fmt.coded_height > caps.max_height or \
                fmt.coded_width < caps.min_width or fmt.coded_height < caps.min_height or \
                (caps.max_mb_count and fmt.coded_width * fmt.coded_height > 256 * caps.max_mb_count):
            raise CuvidUnsupported(f"NVDEC on this GPU decodes {caps.min_width}x{caps.min_height} to "
                                   f"{caps.max_width}x{caps.max_height} ({caps.max_mb_count} macroblocks), "
                                   f"not {what}", size=True)
        width, height = area.right - area.left, area.bottom - area.top
        klass = (fmt.codec, fmt.chroma_format, bits)
        if not (self.handle is not None and klass == self._class and fmt.coded_width <= self.max_width
                and fmt.coded_height <= self.max_height and needed <= self._surfaces
                and self._reconfigure(fmt, width, height)):
            self._create(fmt, caps, klass, needed, width, height)
        self.shape = shape
        self.width, self.height, self.bits = width, height, bits
        self.surface_height = self.max_height if self._fixed else height
        # A run going on in C goes on only where it was set up for this layout (see layout_id).
        self.state.generation = layout_id(width, height, bits, self.surface_height)
        return self._surfaces

    def _reconfigure(self, fmt: VideoFormat, width: int, height: int) -> bool:
        """Switch the hardware decoder to the format's size; ``False`` where the driver cannot."""
        lib = self._lib
        if not self.switches or lib.cuvidReconfigureDecoder is None:
            return False
        if self._fixed_wanted and not self._fixed:  # its output surfaces would change: a new decoder instead
            return False
        place = self._placement(fmt, width, height) if self._fixed else self._exact(fmt)
        if place is None:  # the coded picture has no room to place it unscaled: a decoder of its own size
            return False
        self._let_go_of_mapped()
        target_w, target_h = (self.max_width, self.max_height) if self._fixed else (width, height)
        info = ReconfigureInfo(width=fmt.coded_width, height=fmt.coded_height, target_width=target_w,
                               target_height=target_h, decode_surfaces=self._surfaces,
                               display_area=place[0], target_rect=place[1])
        if self.native is not None:
            code = self.native.ad_reconfigure(C.cast(lib.cuvidReconfigureDecoder, C.c_void_p).value, self.handle,
                                              C.byref(info))
        else:
            with _GATE.alone():
                code = lib.cuvidReconfigureDecoder(self.handle, C.byref(info))
        if code:  # a new decoder instead (the old one is destroyed first)
            return False
        self.reconfigured += 1
        self.counts.reconfigured += 1
        return True

    def _create(self, fmt: VideoFormat, caps: DecoderCaps, klass: tuple[int, int, int], needed: int,
                width: int, height: int) -> None:
        """A new hardware decoder for the format, with room for the largest size expected of its class."""
        lib = self._lib
        bits = klass[2]
        place = self._placement(fmt, width, height) if self._fixed_wanted else None
        fixed = place is not None
        # Room to switch sizes in, where it will: not for a picture that a fixed target cannot place
        # (that decoder is replaced, never switched: room would only hold GPU memory).
        roomy = self.switches and (fixed or not self._fixed_wanted)
        again = klass == self._class  # made again: never fewer surfaces (nor, where it switches, less room)
        surfaces = max(needed, self._surfaces) if again else needed
        max_w, max_h = self._room(fmt.coded_width, fmt.coded_height, again) if roomy else (fmt.coded_width,
                                                                                          fmt.coded_height)
        max_w, max_h = min(max_w, caps.max_width), min(max_h, caps.max_height)
        if caps.max_mb_count and max_w * max_h > 256 * caps.max_mb_count:
            max_w, max_h = fmt.coded_width, fmt.coded_height  # no room to spare at this size
        self._destroy_decoder()
        if place is None:
            place = self._exact(fmt)
        target_w, target_h = (max_w, max_h) if fixed else (width, height)
        info = CreateInfo(
            width=fmt.coded_width, height=fmt.coded_height, decode_surfaces=surfaces, codec=fmt.codec,
            chroma_format=fmt.chroma_format, creation_flags=_CREATE_PREFER_CUVID,
            bit_depth_minus8=fmt.bit_depth_luma_minus8, max_width=max_w, max_height=max_h,
            display_area=place[0], output_format=_SURFACE_NV12 if bits == 8 else _SURFACE_P016,
            deinterlace_mode=0, target_width=target_w, target_height=target_h, output_surfaces=_OUTPUT_SURFACES,
            context_lock=lib.context_lock(self._ctx) if CONTEXT_LOCK else None, target_rect=place[1])
        handle = C.c_void_p()
        code = lib.cuvidCreateDecoder(C.byref(handle), C.byref(info))
        if code == _NOT_SUPPORTED:
            raise CuvidUnsupported(f"NVDEC on this GPU cannot create a decoder for codec {fmt.codec}, "
                                   f"{bits}-bit, {fmt.coded_width}x{fmt.coded_height} (room for {max_w}x{max_h})")
        lib.check("cuvidCreateDecoder", code)
        self.handle = handle.value
        self.state.decoder = self.handle
        self._class = klass
        self.max_width, self.max_height, self._surfaces, self._fixed = max_w, max_h, surfaces, fixed
        self.created += 1
        self.counts.created += 1

    def _room(self, coded_w: int, coded_h: int, again: bool) -> tuple[int, int]:
        """The room a decoder that switches sizes is made with for a coded picture of this size: that
        size, the room it had before (``again``: made again for its class) and the largest size its
        owner expects, whichever is larger (the GPU's caps aside)."""
        w, h = coded_w, coded_h
        if again:
            w, h = max(w, self.max_width), max(h, self.max_height)
        if self._max_size is not None:
            hint_w, hint_h = self._max_size()
            w, h = max(w, _round_up(hint_w)), max(h, _round_up(hint_h))
        return w, h

    @property
    def _fixed_wanted(self) -> bool:
        """Whether output surfaces are to stay at the decoder's room (see :data:`FIXED_TARGET`)."""
        return FIXED_TARGET and self.switches

    @staticmethod
    def _exact(fmt: VideoFormat) -> tuple[_ShortRect, _ShortRect]:
        """The stream's display area, filling the output surface (a zero target rectangle)."""
        a = fmt.display_area
        return _ShortRect(a.left, a.top, a.right, a.bottom), _ShortRect(0, 0, 0, 0)

    @staticmethod
    def _placement(fmt: VideoFormat, width: int, height: int) -> tuple[_ShortRect, _ShortRect] | None:
        """Under a fixed target, the source area and the target rectangle that put a picture unscaled in
        the output surface's top-left corner; ``None`` where the coded picture leaves no room for it.

        Both are the picture's size rounded up to whole steps of 4 columns and 2 rows: the driver fills
        a target rectangle's columns in steps of 4 (H100, driver 580.159, 2026-12-05: pictures 510, 602
        and 802 wide, given rectangles of exactly their width, came back with their last 2 columns
        never written). The extra columns and rows come from the coded picture's padding (coded sizes
        are whole macroblocks or coding blocks) and are cropped away on conversion."""
        area = fmt.display_area
        w, h = _round_up(width, 4), _round_up(height, 2)
        if area.left + w > fmt.coded_width or area.top + h > fmt.coded_height:
            return None
        return _ShortRect(area.left, area.top, area.left + w, area.top + h), _ShortRect(0, 0, w, h)

    def surface_height_for(self, height: int) -> int:
        """The output surface height a picture of ``height`` rows will come in from this decoder, as far
        as can be told before its sequence header (the C loop is set up with it; a wrong guess costs
        speed only: the loop sees the layout differ and hands the rest of the GOP to Python)."""
        if not self._fixed_wanted:
            return height
        if self.handle is not None and self._fixed and height <= self.max_height:
            return self.max_height  # switched in place
        if self.handle is not None and not self._fixed and height == self.height:
            return height  # the decoder of its own size, as it is
        # A decoder made at the next keyframe, fixed (unless the picture has no room), with the room
        # _create gives it (the coded height guessed: the picture's, in whole macroblocks).
        return self._room(0, _round_up(height), again=True)[1]

    def prepare(self, bits: int, width: int, height: int) -> None:
        """Make the hardware decoder now, for streams of this codec and ``bits`` up to ``width`` x
        ``height`` (ahead of the first GOP, which then switches it to its own size in place).

        Raises:
            CuvidUnsupported: this GPU does not decode such streams.
            CuvidError: the driver refused.
        """
        fmt = VideoFormat(codec=self._codec, bit_depth_luma_minus8=bits - 8, bit_depth_chroma_minus8=bits - 8,
                          coded_width=_round_up(width), coded_height=_round_up(height), chroma_format=_CHROMA_420,
                          display_area=_Rect(0, 0, width, height))
        self._configure(fmt)

    @property
    def nbytes(self) -> int:
        """GPU memory the hardware decoder's surfaces take, about (0 without one)."""
        if self.handle is None:
            return 0
        sample = 2 if self._class[2] > 8 else 1
        per_surface = self.max_width * self.max_height * 3 // 2 * sample
        return per_surface * (self._surfaces + _OUTPUT_SURFACES)

    def fits(self, codec: str, bits: int, width: int, height: int) -> int:
        """How well this decoder takes a stream: 2 at its current size, 1 by a reconfigure, 0 not."""
        if self.handle is None or self._class[0] != CODECS.get(codec) or self._class[2] != bits:
            return 0
        if (self.width, self.height) == (width, height):
            return 2
        if not self.switches or (self._fixed_wanted and not self._fixed):  # the latter is replaced, not switched
            return 0
        return int(width <= self.max_width and height <= self.max_height)

    def _let_go_of_mapped(self) -> None:
        """Give back mapped pictures before the surfaces change (their readers finish first)."""
        if self.state.nmapped:
            self._lib.cuStreamSynchronize(self._stream)
            while self.state.nmapped:
                self.state.nmapped -= 1
                self._unmap(self.handle, self.state.mapped[self.state.nmapped])

    # -- teardown -------------------------------------------------------------------------------

    def _destroy_decoder(self) -> None:
        if self.handle is None:
            return
        self._let_go_of_mapped()
        handle, self.handle = self.handle, None
        self.state.decoder = None
        self.shape = ()
        self._lib.check("cuvidDestroyDecoder", self._lib.cuvidDestroyDecoder(handle))

    def close(self) -> None:
        """Destroy the parser and the decoder (on any thread: the decoder's context is made current)."""
        if self._parser is None:
            return
        lib = self._lib
        pushed = lib.cuCtxPushCurrent_v2(self._ctx) == 0
        try:
            parser, self._parser = self._parser, None
            lib.cuvidDestroyVideoParser(parser)
            self._destroy_decoder()  # readers of mapped pictures finish before the surfaces go
        finally:
            if pushed:
                lib.cuCtxPopCurrent_v2(C.byref(C.c_void_p()))
        _trim.freed()  # the parser's and the decoder's host memory went

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, or a driver already gone
            pass
