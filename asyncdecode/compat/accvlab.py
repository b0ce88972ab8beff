"""NVIDIA's ``accvlab.on_demand_video_decoder`` API on the asyncdecode engine.

Code written for accvlab runs by changing its import::

    # import accvlab.on_demand_video_decoder as nvc
    import asyncdecode.compat.accvlab as nvc

    decoder = nvc.CreateGopDecoder(maxfiles=6, iGpu=0)
    packets, first_ids, gop_lens = decoder.GetGOP(files, [77, 77], useGOPCache=True)
    frames = decoder.DecodeFromGOPRGB(packets, files, [77, 77])
    tensors = [torch.as_tensor(f, device="cuda") for f in frames]

Every object here is a synchronous facade over one :class:`~asyncdecode.SyncEngine`: frames asked for
by file go through the engine (index, GOP cache, demux ahead, decoder threads on NVDEC or FFmpeg);
GOP data goes through :mod:`asyncdecode.gop`. ``iGpu`` picks the CUDA device when torch sees one;
without one everything runs on the CPU backend, the same API and the same frames.

Differences from accvlab (docs/compat_accvlab.md has the whole list):

* Serialized packet data is asyncdecode's GOP bundle format (versioned, CRC-checked; several GOPs
  are bundles back to back), not accvlab's; data saved by one library does not load in the other.
* Errors are :class:`~asyncdecode.errors.AsyncDecodeError` subclasses naming the file and frame (a
  missing file is a ``VideoOpenError``, an ``OSError``; a bad frame id a ``FrameIndexError``, an
  ``IndexError``; damaged data a ``CorruptDataError``, a ``ValueError``), not bare ``RuntimeError``.
* Frames own their memory: they stay valid after later decodes and need no ``clone()`` first.
* Objects hold threads: ``close()`` them (or use ``with``) where that matters; they are closed when
  collected, too.
* ``suppressNoColorRangeWarning`` is accepted and has no effect: untagged streams are converted as
  limited range, as accvlab assumes, without a warning.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from .._output import OutputSpec, planar_layout
from ..errors import InvalidRequestError, UnsupportedStreamError
from ..gop import GopBundle
from ..media import probe
from . import _bundles
from ._bundles import GopSource, PacketTable
from ._frames import DecodedFrameExt, RGBFrame, nv12_from_planes
from ._runner import Device, Runner

__all__ = [
    "CachedGopDecoder",
    "Codec",
    "CreateGopDecoder",
    "CreateSampleReader",
    "DecodedFrameExt",
    "DropCacheStatus",
    "FastStreamInfo",
    "GetFastInitInfo",
    "PyNvGopDecoder",
    "PyNvSampleReader",
    "RGBFrame",
    "SavePacketsToFile",
    "drop_videos_cache",
]

log = logging.getLogger("asyncdecode")

#: AVCodecID of each FFmpeg codec name (``FastStreamInfo.codec_id``).
_AV_CODEC_IDS = {"mpeg2video": 2, "mpeg4": 12, "h264": 27, "hevc": 173, "vp9": 167, "av1": 225}
#: AVPixelFormat of the pixel formats the engine decodes (``FastStreamInfo.format``).
_AV_PIX_FMTS = {
    "yuv420p": 0, "yuv422p": 4, "yuv444p": 5, "gray": 8, "yuvj420p": 12, "yuvj422p": 13, "yuvj444p": 14,
    "yuv420p10le": 62, "yuv422p10le": 64, "yuv444p10le": 68, "yuv420p12le": 123, "yuv444p12le": 131,
    "gray10le": 168,
}
_AVMEDIA_TYPE_VIDEO = 0


# -- values ----------------------------------------------------------------------------------------


class Codec(enum.Enum):
    """Video codecs, by their CUDA Video Codec SDK (``cudaVideoCodec``) value."""

    h264 = 4
    hevc = 8
    av1 = 11


class DropCacheStatus(enum.Enum):
    """Outcome of :func:`drop_videos_cache`."""

    SUCCESS = 0
    PLATFORM_ERROR = 1
    FILE_OPEN_FAILED = 2
    FADVISE_FAILED = 3
    UNKNOWN_ERROR = 4


@dataclass
class FastStreamInfo:
    """Stream parameters of one video, as :func:`GetFastInitInfo` reports them (FFmpeg's numbering).

    The decoders accept a list of these wherever accvlab does, and check that there is one per file;
    they do not need them: the engine indexes each file once and keeps the index.
    """

    codec_id: int = 0
    """FFmpeg ``AVCodecID`` (H.264 27, HEVC 173, AV1 225)."""
    codec_type: int = _AVMEDIA_TYPE_VIDEO
    """FFmpeg ``AVMediaType`` (0: video)."""
    format: int = -1
    """FFmpeg ``AVPixelFormat`` of decoded frames (yuv420p 0, yuv420p10le 62; -1: other)."""
    width: int = 0
    height: int = 0
    time_base_num: int = 0
    time_base_den: int = 1
    r_frame_rate_num: int = 0
    r_frame_rate_den: int = 1
    avg_frame_rate_num: int = 0
    avg_frame_rate_den: int = 1
    duration: int = 0
    """Presentation time span of the stream, in ``time_base`` units."""
    start_time: int = 0
    """Presentation timestamp of the first frame, in ``time_base`` units."""


def GetFastInitInfo(filepaths: Sequence[str | os.PathLike[str]]) -> list[FastStreamInfo]:  # noqa: N802
    """Stream parameters of each file, from one packet scan each (no decoding).

    Raises:
        InvalidRequestError: ``filepaths`` is empty or not a list of paths.
        VideoOpenError, CorruptDataError: a file is missing, not a video, or damaged.
    """
    paths = _path_list("GetFastInitInfo", filepaths)
    out = []
    for path in paths:
        info = probe(path)
        rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(0)
        tb = info.time_base
        out.append(FastStreamInfo(
            codec_id=_AV_CODEC_IDS.get(info.codec, 0), format=_AV_PIX_FMTS.get(info.pix_fmt, -1),
            width=info.width, height=info.height, time_base_num=tb.numerator, time_base_den=tb.denominator,
            r_frame_rate_num=rate.numerator, r_frame_rate_den=rate.denominator,
            avg_frame_rate_num=rate.numerator, avg_frame_rate_den=rate.denominator,
            duration=round(info.duration_seconds / tb) if tb else 0, start_time=info.frame_pts[0],
        ))
    return out


def SavePacketsToFile(numpy_data: Any, dst_filepath: str | os.PathLike[str]) -> None:  # noqa: N802,N803
    """Write serialized packet data (from ``GetGOP``, ``GetGOPList``, ``MergePacketDataToOne`` ...) to a
    file, atomically. The data is checked first: damaged data is never saved.

    Raises:
        CorruptDataError: the data is not GOP bundles, or is damaged.
        VideoOpenError: the file cannot be written.
    """
    _bundles.save(numpy_data, dst_filepath)


def drop_videos_cache(filepaths: Sequence[str | os.PathLike[str]]) -> DropCacheStatus:
    """Ask the kernel to drop the page-cache pages of these files (``posix_fadvise(DONTNEED)``).

    Advisory, Linux only; stops at the first file that fails and says why.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "posix_fadvise"):
        return DropCacheStatus.PLATFORM_ERROR
    try:
        paths = [os.fspath(p) for p in filepaths]
    except TypeError:
        return DropCacheStatus.UNKNOWN_ERROR
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            log.debug("drop_videos_cache: cannot open %s: %s", path, exc)
            return DropCacheStatus.FILE_OPEN_FAILED
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            log.debug("drop_videos_cache: posix_fadvise failed on %s: %s", path, exc)
            return DropCacheStatus.FADVISE_FAILED
        except Exception as exc:  # noqa: BLE001  (the status is the report)
            log.debug("drop_videos_cache: %s: %s", path, exc)
            return DropCacheStatus.UNKNOWN_ERROR
        finally:
            os.close(fd)
    return DropCacheStatus.SUCCESS


# -- argument checks -------------------------------------------------------------------------------


def _path_list(method: str, filepaths: Any) -> list[str]:
    if isinstance(filepaths, (str, bytes, os.PathLike)) or not isinstance(filepaths, Sequence):
        raise InvalidRequestError(f"{method}: filepaths must be a list of paths, not {type(filepaths).__name__}")
    if not filepaths:
        raise InvalidRequestError(f"{method}: filepaths is empty")
    out = []
    for p in filepaths:
        if not isinstance(p, (str, os.PathLike)):
            raise InvalidRequestError(f"{method}: a path must be str or os.PathLike, not {type(p).__name__} ({p!r})")
        out.append(os.fspath(p))
    return out


def _requests(method: str, filepaths: Any, frame_ids: Any, fast_infos: Any = ()) -> list[tuple[str, int]]:
    """``(absolute path, frame id)`` per requested frame, after checking the arguments."""
    paths = _path_list(method, filepaths)
    if isinstance(frame_ids, np.ndarray):
        frame_ids = frame_ids.tolist()
    if isinstance(frame_ids, (str, bytes)) or not isinstance(frame_ids, Sequence):
        raise InvalidRequestError(f"{method}: frame_ids must be a list of ints, not {type(frame_ids).__name__}")
    if len(frame_ids) != len(paths):
        raise InvalidRequestError(f"{method}: {len(paths)} filepaths but {len(frame_ids)} frame_ids "
                                  "(one frame id per file path)")
    for p, f in zip(paths, frame_ids):
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
            raise InvalidRequestError(f"{method}: frame ids must be ints, not {type(f).__name__} ({f!r}) for {p}",
                                      path=p)
    if fast_infos is not None and len(fast_infos):
        if len(fast_infos) != len(paths) or not all(isinstance(i, FastStreamInfo) for i in fast_infos):
            raise InvalidRequestError(f"{method}: fastStreamInfos must be empty or one FastStreamInfo per file "
                                      f"path ({len(paths)})")
    return [(os.path.abspath(p), int(f)) for p, f in zip(paths, frame_ids)]


def _flag(method: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidRequestError(f"{method}: {name} must be a bool, not {type(value).__name__} ({value!r})")
    return bool(value)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{name} must be a positive int, not {value!r}")
    return value


_RGB = OutputSpec()
_BGR = OutputSpec(format="bgr")


# -- the decoders ----------------------------------------------------------------------------------


class _Decoder:
    """What the accvlab decoders share: the engine, GOP extraction, frames out of bundles, lifetime."""

    def __init__(self, files: int, gpu: int, suppress_warning: bool, device: Device) -> None:
        _flag(type(self).__name__, "suppressNoColorRangeWarning", suppress_warning)
        self._runner = Runner(device, gpu)
        self._source = GopSource(max(64, 4 * files))
        # accvlab objects free themselves when collected; so do these (not at interpreter exit:
        # daemon threads end with the process, and the engine's executors refuse work by then).
        self._finalizer = weakref.finalize(self, _collect, self._runner)
        self._finalizer.atexit = False
        self._runner.engine()  # fail here, as accvlab does, if the device cannot be used

    # -- frames -------------------------------------------------------------------------------

    def _rgb_by_path(self, method: str, filepaths: Any, frame_ids: Any, as_bgr: Any,
                     fast_infos: Any = ()) -> list[RGBFrame]:
        pairs = _requests(method, filepaths, frame_ids, fast_infos)
        bgr = _flag(method, "as_bgr", as_bgr)
        tensors = self._runner.decode([p for p, _ in pairs], [f for _, f in pairs], _BGR if bgr else _RGB)
        return [RGBFrame(t, is_bgr=bgr) for t in tensors]

    def _nv12_by_path(self, method: str, filepaths: Any, frame_ids: Any, fast_infos: Any = ()) -> list[DecodedFrameExt]:
        pairs = _requests(method, filepaths, frame_ids, fast_infos)
        bundles, which = _distinct(self._source.extract(pairs))
        return self._nv12(bundles, which, pairs)

    def _from_data(self, method: str, datas: Sequence[Any], filepaths: Any,
                   frame_ids: Any) -> tuple[list[GopBundle], list[int], list[tuple[str, int]]]:
        """Parse GOP data given to ``method`` and find the bundle of each requested frame."""
        pairs = _requests(method, filepaths, frame_ids)
        files = list(dict.fromkeys(p for p, _ in pairs))
        names = ", ".join(os.path.basename(p) for p in files)
        bundles: list[GopBundle] = []
        for i, data in enumerate(datas):
            what = f"{method}: GOP data{f' {i}' if len(datas) > 1 else ''} for {names}"
            bundles.extend(_bundles.split(data, what=what, path=files[0] if len(files) == 1 else None))
        return bundles, _bundles.assign(bundles, pairs, method=method), pairs

    def _decode(self, bundles: Sequence[GopBundle], which: Sequence[int], fids: Sequence[int],
                output: OutputSpec | None) -> list[Any]:
        """Frame ``fids[k]`` of bundle ``which[k]`` for every k, one decode pass per bundle."""
        wanted: dict[int, set[int]] = {}
        for b, f in zip(which, fids):
            wanted.setdefault(b, set()).add(f)
        order = list(wanted)
        results = self._runner.decode_bundles([(bundles[b], sorted(wanted[b])) for b in order], output)
        by_bundle = dict(zip(order, results))
        out, seen = [], set()
        for b, f in zip(which, fids):
            frame = by_bundle[b][f]
            if (b, f) in seen and output is not None:  # the same frame twice: each entry its own tensor
                frame = frame.clone()
            seen.add((b, f))
            out.append(frame)
        return out

    def _nv12(self, bundles: Sequence[GopBundle], which: Sequence[int],
              pairs: Sequence[tuple[str, int]]) -> list[DecodedFrameExt]:
        fids = [f for _, f in pairs]
        for b, fid in zip(which, fids):
            bundle = bundles[b]
            layout = planar_layout(bundle.pix_fmt)
            if layout.gray or (layout.sx, layout.sy) != (2, 2):
                raise UnsupportedStreamError(
                    f"{bundle.source}: frame {fid} is {bundle.pix_fmt}, which has no NV12 form (4:2:0 only); "
                    "use the RGB methods", path=bundle.source, frame_id=fid)
        planes = self._decode(bundles, which, fids, None)
        out = []
        for b, fid, p in zip(which, fids, planes):
            bundle = bundles[b]
            buf = nv12_from_planes(p, bit_depth=bundle.bit_depth, pix_fmt=bundle.pix_fmt, source=bundle.source,
                                   frame_id=fid)
            pts = int(bundle.packets["pts"][bundle.decode_index[fid]])
            out.append(DecodedFrameExt(buf, height=bundle.height, width=bundle.width, bit_depth=bundle.bit_depth,
                                       color_range=_bundles.COLOR_RANGES.get(bundle.color_range, 0), timestamp=pts))
        return out

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where frames are decoded and returned (an asyncdecode addition)."""
        return self._runner.torch_device

    def release_decoder(self) -> None:
        """Free the decoder sessions, their threads and caches; the next call makes new ones."""
        self._runner.release()

    def release_device_memory(self) -> None:
        """Give GPU memory that torch keeps cached but unused back to the driver (nothing on the CPU).

        Frames already returned stay valid: they own their memory.
        """
        self._runner.empty_device_cache()

    def close(self) -> None:
        """Stop the engine for good (an asyncdecode addition; idempotent). Later calls raise
        :class:`~asyncdecode.EngineClosedError`."""
        self._finalizer.detach()
        self._runner.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._runner.closed else str(self.device)
        return f"<{type(self).__name__} on {state}>"


class PyNvGopDecoder(_Decoder):
    """Random access to frames of many videos, and GOP data to decode later or elsewhere.

    Example:
        >>> decoder = PyNvGopDecoder(maxfiles=6)
        >>> frames = decoder.DecodeN12ToRGB(["cam0.mp4", "cam1.mp4"], [0, 10])
        >>> packets, first_ids, gop_lens = decoder.GetGOP(["cam0.mp4", "cam1.mp4"], [0, 10])
        >>> same = decoder.DecodeFromGOPRGB(packets, ["cam0.mp4", "cam1.mp4"], [0, 10])

    Args:
        maxfiles: Files used together (sizes the index cache; any number of files may be asked for).
        iGpu: CUDA device to decode on, when torch sees CUDA.
        suppressNoColorRangeWarning: Accepted for compatibility; no warning is ever given.
        device: ``"auto"`` (``cuda:<iGpu>`` with CUDA, else the CPU), ``"cuda"`` or ``"cpu"`` (an
            asyncdecode addition).

    Raises:
        InvalidRequestError: a bad argument.
        BackendUnavailableError: ``iGpu`` is not a CUDA device here, or ``device="cuda"`` cannot be used.
    """

    def __init__(self, maxfiles: int, iGpu: int = 0, suppressNoColorRangeWarning: bool = False,  # noqa: N803
                 *, device: Device = "auto") -> None:
        self.maxfiles = _positive("maxfiles", maxfiles)
        super().__init__(maxfiles, iGpu, suppressNoColorRangeWarning, device)
        self._codec_ids: list[int] | None = None

    # -- by file ------------------------------------------------------------------------------

    def Decode(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
               fastStreamInfos: Sequence[FastStreamInfo] = ()) -> list[DecodedFrameExt]:  # noqa: N803
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, in the decoder's own samples (NV12,
        or P016 for 10-bit), as :class:`DecodedFrameExt`.

        Raises:
            FrameIndexError: a frame id out of range. VideoOpenError: a file that cannot be opened.
            UnsupportedStreamError: a stream that is not 4:2:0. CorruptDataError: data that does
            not decode. InvalidRequestError: malformed arguments.
        """
        return self._nv12_by_path("Decode", filepaths, frame_ids, fastStreamInfos)

    def DecodeN12ToRGB(self, filepaths: Sequence[str], frame_ids: Sequence[int], as_bgr: bool = False,  # noqa: N802
                       fastStreamInfos: Sequence[FastStreamInfo] = ()) -> list[RGBFrame]:  # noqa: N803
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i as RGB (BGR with ``as_bgr``) frames.

        Raises:
            As :meth:`Decode`.
        """
        return self._rgb_by_path("DecodeN12ToRGB", filepaths, frame_ids, as_bgr, fastStreamInfos)

    # -- GOP data -----------------------------------------------------------------------------

    def GetGOP(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
               fastStreamInfos: Sequence[FastStreamInfo] = ()) -> tuple[np.ndarray, list[int], list[int]]:  # noqa: N803
        """The GOP holding each requested frame, without decoding, as one array of packet data.

        Returns:
            ``(packet data, first frame id of each GOP, frame count of each GOP)``, one GOP per
            requested frame, in order (the data holds their bundles back to back).

        Raises:
            As :meth:`Decode` (no decoding happens, so no ``UnsupportedStreamError``).
        """
        bundles = self._gops("GetGOP", filepaths, frame_ids, fastStreamInfos)
        return _bundles.pack(bundles), [b.first_frame_id for b in bundles], [b.frame_count for b in bundles]

    def GetGOPList(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
                   fastStreamInfos: Sequence[FastStreamInfo] = ()) -> list[tuple[np.ndarray, list[int], list[int]]]:  # noqa: N803
        """As :meth:`GetGOP`, one ``(packet data, [first frame id], [frame count])`` per requested frame."""
        bundles = self._gops("GetGOPList", filepaths, frame_ids, fastStreamInfos)
        return [_gop_entry(b) for b in bundles]

    def _gops(self, method: str, filepaths: Any, frame_ids: Any, fast_infos: Any) -> list[GopBundle]:
        return self._source.extract(_requests(method, filepaths, frame_ids, fast_infos))

    def DecodeFromGOP(self, numpy_data: Any, filepaths: Sequence[str], frame_ids: Sequence[int]) -> list[DecodedFrameExt]:  # noqa: N802,N803
        """Decode frames out of packet data from :meth:`GetGOP` (or loaded), in NV12 / P016.

        ``filepaths`` name the videos the data was cut from; the videos themselves are not opened.

        Raises:
            CorruptDataError: the data is damaged (naming the files asked for) or does not decode.
            InvalidRequestError: a frame the data does not hold; malformed arguments.
        """
        bundles, which, pairs = self._from_data("DecodeFromGOP", [numpy_data], filepaths, frame_ids)
        return self._nv12(bundles, which, pairs)

    def DecodeFromGOPRGB(self, numpy_data: Any, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802,N803
                         as_bgr: bool = False) -> list[RGBFrame]:
        """As :meth:`DecodeFromGOP`, as RGB (BGR with ``as_bgr``) frames."""
        return self._rgb_from_data("DecodeFromGOPRGB", [numpy_data], filepaths, frame_ids, as_bgr)

    def DecodeFromGOPListRGB(self, numpy_datas: Sequence[Any], filepaths: Sequence[str],  # noqa: N802,N803
                             frame_ids: Sequence[int], as_bgr: bool = False) -> list[RGBFrame]:
        """As :meth:`DecodeFromGOPRGB`, from several arrays of packet data (from :meth:`GetGOPList`
        or :meth:`LoadGopsToList`); ``filepaths`` and ``frame_ids`` list every requested frame."""
        if isinstance(numpy_datas, np.ndarray) or not isinstance(numpy_datas, Sequence) or not numpy_datas:
            raise InvalidRequestError("DecodeFromGOPListRGB: numpy_datas must be a non-empty list of arrays")
        return self._rgb_from_data("DecodeFromGOPListRGB", numpy_datas, filepaths, frame_ids, as_bgr)

    def _rgb_from_data(self, method: str, datas: Sequence[Any], filepaths: Any, frame_ids: Any,
                       as_bgr: Any) -> list[RGBFrame]:
        bgr = _flag(method, "as_bgr", as_bgr)
        bundles, which, pairs = self._from_data(method, datas, filepaths, frame_ids)
        frames = self._decode(bundles, which, [f for _, f in pairs], _BGR if bgr else _RGB)
        return [RGBFrame(t, is_bgr=bgr) for t in frames]

    # -- packet data --------------------------------------------------------------------------

    def LoadGops(self, file_paths: Sequence[str]) -> np.ndarray:  # noqa: N802
        """Packet data files (from :func:`SavePacketsToFile`, or a :class:`~asyncdecode.GopStore`'s
        bundle files) read and joined into one array, each checked.

        Raises:
            InvalidRequestError: ``file_paths`` is empty. VideoOpenError: a file cannot be read.
            CorruptDataError: a file is not GOP data or is damaged (naming the file).
        """
        return np.concatenate(self.LoadGopsToList(file_paths))

    def LoadGopsToList(self, file_paths: Sequence[str]) -> list[np.ndarray]:  # noqa: N802
        """As :meth:`LoadGops`, one array per file."""
        return [_bundles.load(p) for p in _path_list("LoadGopsToList", file_paths)]

    LoadGopList = LoadGopsToList  # the name accvlab's own examples use

    def MergePacketDataToOne(self, packet_data_arrays: Sequence[Any]) -> np.ndarray:  # noqa: N802
        """Packet data arrays joined into one (each checked first).

        Raises:
            InvalidRequestError: no arrays. CorruptDataError: an array is not GOP data or is damaged.
        """
        if isinstance(packet_data_arrays, np.ndarray) or not isinstance(packet_data_arrays, Sequence) \
                or not packet_data_arrays:
            raise InvalidRequestError("MergePacketDataToOne: packet_data_arrays must be a non-empty list of arrays")
        bundles = []
        for i, data in enumerate(packet_data_arrays):
            bundles.extend(_bundles.split(data, what=f"MergePacketDataToOne: array {i}"))
        return _bundles.pack(bundles)

    def ParseSerializedPacketBundle(self, numpy_data: Any) -> tuple[list[Any], ...]:  # noqa: N802
        """The packets of each GOP in the data, for :meth:`DecodeFromPacketListRGB`.

        Returns:
            ``(color_ranges, codec_ids, widths, heights, frame_sizes, gop_lens, first_frame_ids,
            packet_binary_data_arrays, packet_binary_data_sizes, packets_bytes, decode_idxs)``: one
            entry per GOP. ``codec_ids`` are :class:`Codec` values; ``color_ranges`` 0 unspecified,
            1 limited, 2 full; ``frame_sizes`` bytes of one NV12 / P016 frame;
            ``packet_binary_data_arrays`` each GOP's packets back to back (decode order),
            ``packets_bytes`` their sizes; ``decode_idxs`` the frame id each packet shows (-1: none).

        Raises:
            CorruptDataError: the data is not GOP data or is damaged.
        """
        tables = [PacketTable.of(b) for b in _bundles.split(numpy_data, what="ParseSerializedPacketBundle")]
        return ([t.color_range for t in tables], [t.codec_id for t in tables], [t.width for t in tables],
                [t.height for t in tables], [t.frame_size for t in tables], [t.gop_len for t in tables],
                [t.first_frame_id for t in tables], [t.data for t in tables], [len(t.data) for t in tables],
                [t.packet_sizes for t in tables], [t.frame_ids for t in tables])

    def DecodeFromPacketListInitialize(self, codec_ids: Sequence[int]) -> int:  # noqa: N802
        """Set the codec of the entries of the next :meth:`DecodeFromPacketListRGB` calls: one codec id
        (a :class:`Codec` value) per entry, or one for all. Returns 0."""
        if isinstance(codec_ids, (int, Codec)):
            codec_ids = [codec_ids]
        if not isinstance(codec_ids, Sequence) or not codec_ids:
            raise InvalidRequestError("DecodeFromPacketListInitialize: codec_ids must be a non-empty list")
        ids = [c.value if isinstance(c, Codec) else int(c) for c in codec_ids]
        for c in ids:
            _bundles.codec_name(c)
        self._codec_ids = ids
        return 0

    def DecodeFromPacketListRGB(self, numpy_datas: Sequence[Sequence[Any]], packet_idxs: Sequence[Sequence[int]],  # noqa: N802,N803
                                widths: Sequence[int], heights: Sequence[int], frame_ids: Sequence[int],
                                as_bgr: bool = False) -> list[RGBFrame]:
        """Decode frames from bare packets, one entry per frame.

        Entry i: ``numpy_datas[i]`` one array per packet of the GOP, in decode order, from its keyframe
        (the first packet carries the parameter sets, as the packets of :meth:`ParseSerializedPacketBundle`
        do); ``packet_idxs[i]`` the frame id each packet shows (-1: none), as its ``decode_idxs``;
        the frame's size; and ``frame_ids[i]``, the frame to return. The codec comes from
        :meth:`DecodeFromPacketListInitialize`. Streams are taken as 8-bit 4:2:0 and converted as
        BT.601 limited range (bare packets carry no color tags): use :meth:`DecodeFromGOPRGB` for
        tagged or 10-bit streams.

        Raises:
            InvalidRequestError: mismatched lengths, no codec set, a frame id no packet shows.
            CorruptDataError: the packets do not decode.
        """
        method = "DecodeFromPacketListRGB"
        bgr = _flag(method, "as_bgr", as_bgr)
        if self._codec_ids is None:
            raise InvalidRequestError(f"{method}: call DecodeFromPacketListInitialize(codec_ids) first")
        n = len(frame_ids)
        lists = {"numpy_datas": numpy_datas, "packet_idxs": packet_idxs, "widths": widths, "heights": heights}
        for name, seq in lists.items():
            if len(seq) != n:
                raise InvalidRequestError(f"{method}: {name} has {len(seq)} entries, frame_ids {n} (one per frame)")
        if n == 0:
            raise InvalidRequestError(f"{method}: no frames asked for")
        if len(self._codec_ids) not in (1, n):
            raise InvalidRequestError(f"{method}: {n} entries but DecodeFromPacketListInitialize was given "
                                      f"{len(self._codec_ids)} codec ids (one, or one per entry)")
        bundles = []
        for i in range(n):
            label = f"{method} entry {i}"
            if len(numpy_datas[i]) != len(packet_idxs[i]):
                raise InvalidRequestError(
                    f"{label}: {len(numpy_datas[i])} packet arrays but {len(packet_idxs[i])} packet indices; pass "
                    "one array per packet (split packet_binary_data_arrays[i] at packets_bytes[i])")
            if int(frame_ids[i]) not in {int(f) for f in packet_idxs[i]}:
                raise InvalidRequestError(f"{label}: no packet shows frame {frame_ids[i]} (packet_idxs: "
                                          f"{list(packet_idxs[i])})", frame_id=int(frame_ids[i]))
            codec = _bundles.codec_name(self._codec_ids[i if len(self._codec_ids) > 1 else 0])
            bundles.append(_bundles.bundle_from_packets(numpy_datas[i], packet_idxs[i], codec=codec,
                                                        width=widths[i], height=heights[i], label=label))
        frames = self._decode(bundles, list(range(n)), [int(f) for f in frame_ids], _BGR if bgr else _RGB)
        return [RGBFrame(t, is_bgr=bgr) for t in frames]


def _collect(runner: Runner) -> None:
    """Close the engine of a collected decoder. Collection can happen on one of the engine's own
    threads, which must not wait for the engine to stop: the closing then runs on a thread of its own."""
    if not threading.current_thread().name.startswith("asyncdecode"):
        runner.close()
        return

    def close() -> None:
        try:
            runner.close()
        except Exception as exc:  # noqa: BLE001  (nobody to raise to)
            log.warning("asyncdecode.compat.accvlab: closing a collected decoder failed: %s", exc)

    threading.Thread(target=close, name="accvlab-close", daemon=True).start()


def _distinct(bundles: Sequence[GopBundle]) -> tuple[list[GopBundle], list[int]]:
    """The distinct bundles of a list in which requests of one GOP share a bundle, and the index of
    each request's bundle among them (one decode pass per GOP)."""
    index: dict[int, int] = {}
    distinct: list[GopBundle] = []
    for b in bundles:
        if id(b) not in index:
            index[id(b)] = len(distinct)
            distinct.append(b)
    return distinct, [index[id(b)] for b in bundles]


def _gop_entry(bundle: GopBundle) -> tuple[np.ndarray, list[int], list[int]]:
    return _bundles.pack([bundle]), [bundle.first_frame_id], [bundle.frame_count]


_CREATION_KEY = object()


class CachedGopDecoder(PyNvGopDecoder):
    """A :class:`PyNvGopDecoder` whose ``GetGOP`` / ``GetGOPList`` can answer from a cache of GOP data.

    Made by :func:`CreateGopDecoder`. With ``useGOPCache=True`` the cache keeps, per file path (as
    given), the last GOP fetched for it; a request for ``frame_id`` of a file hits when
    ``first_frame_id <= frame_id < first_frame_id + gop_len`` of that file's entry.

    * ``GetGOP``: when every file hits, the cached data is returned and nothing is demuxed; when any
      file misses, every file is fetched again and cached.
    * ``GetGOPList``: only the files that miss are fetched and cached; the others come from the cache.
    * ``useGOPCache=False`` (the default) neither reads nor fills the cache.

    :meth:`isCacheHit` tells, per file of the last such call, whether it hit. As an addition to
    accvlab, the cache holds at most ``max_cached_files`` files, least recently used dropped first.
    """

    def __init__(self, maxfiles: int, iGpu: int = 0, suppressNoColorRangeWarning: bool = False,  # noqa: N803
                 *, device: Device = "auto", max_cached_files: int | None = None, _key: object = None) -> None:
        if _key is not _CREATION_KEY:
            raise InvalidRequestError("CachedGopDecoder is made by CreateGopDecoder(...), not directly")
        if max_cached_files is not None:
            _positive("max_cached_files", max_cached_files)
        super().__init__(maxfiles, iGpu, suppressNoColorRangeWarning, device=device)
        self.max_cached_files = max_cached_files or 4 * self.maxfiles
        self._gop_cache: OrderedDict[str, tuple[np.ndarray, int, int]] = OrderedDict()
        self._last_cache_hits: list[bool] = []

    def _is_cache_hit(self, filepath: str, frame_id: int) -> bool:
        entry = self._gop_cache.get(filepath)
        return entry is not None and entry[1] <= frame_id < entry[1] + entry[2]

    def _cached(self, filepath: str) -> tuple[np.ndarray, int, int]:
        self._gop_cache.move_to_end(filepath)
        return self._gop_cache[filepath]

    def _remember(self, filepath: str, entry: tuple[np.ndarray, list[int], list[int]]) -> tuple[np.ndarray, int, int]:
        packets, firsts, lens = entry
        self._gop_cache[filepath] = value = (packets, firsts[0], lens[0])
        self._gop_cache.move_to_end(filepath)
        while len(self._gop_cache) > self.max_cached_files:
            self._gop_cache.popitem(last=False)
        return value

    def GetGOP(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
               fastStreamInfos: Sequence[FastStreamInfo] = (),  # noqa: N803
               useGOPCache: bool = False) -> tuple[np.ndarray, list[int], list[int]]:  # noqa: N803
        """:meth:`PyNvGopDecoder.GetGOP`, answered from the cache when every file hits (``useGOPCache``)."""
        use = _flag("GetGOP", "useGOPCache", useGOPCache)
        if not use:
            result = super().GetGOP(filepaths, frame_ids, fastStreamInfos)
            self._last_cache_hits = [False] * len(filepaths)
            return result
        pairs = _requests("GetGOP", filepaths, frame_ids, fastStreamInfos)
        keys = [os.fspath(p) for p in filepaths]
        hits = [self._is_cache_hit(k, f) for k, (_, f) in zip(keys, pairs)]
        self._last_cache_hits = hits
        if all(hits):
            entries = [self._cached(k) for k in keys]
        else:
            fetched = [_gop_entry(b) for b in self._source.extract(pairs)]
            entries = [self._remember(k, e) for k, e in zip(keys, fetched)]
        return _merge_entries(entries)

    def GetGOPList(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
                   fastStreamInfos: Sequence[FastStreamInfo] = (),  # noqa: N803
                   useGOPCache: bool = False) -> list[tuple[np.ndarray, list[int], list[int]]]:  # noqa: N803
        """:meth:`PyNvGopDecoder.GetGOPList`, fetching only the files that miss the cache (``useGOPCache``)."""
        use = _flag("GetGOPList", "useGOPCache", useGOPCache)
        if not use:
            result = super().GetGOPList(filepaths, frame_ids, fastStreamInfos)
            self._last_cache_hits = [False] * len(filepaths)
            return result
        pairs = _requests("GetGOPList", filepaths, frame_ids, fastStreamInfos)
        keys = [os.fspath(p) for p in filepaths]
        hits = [self._is_cache_hit(k, f) for k, (_, f) in zip(keys, pairs)]
        self._last_cache_hits = hits
        entries: list[tuple[np.ndarray, int, int] | None] = [self._cached(k) if h else None
                                                              for k, h in zip(keys, hits)]
        misses = [i for i, h in enumerate(hits) if not h]
        if misses:
            fetched = self._source.extract([pairs[i] for i in misses])
            for i, bundle in zip(misses, fetched):
                entries[i] = self._remember(keys[i], _gop_entry(bundle))
        return [(packets, [first], [count]) for packets, first, count in entries]  # type: ignore[misc]

    def isCacheHit(self) -> list[bool]:  # noqa: N802
        """Per file of the last ``GetGOP`` / ``GetGOPList`` call, whether it came from the cache
        (all ``False`` when that call did not use the cache; empty before the first call)."""
        return list(self._last_cache_hits)

    def get_cache_info(self) -> dict[str, Any]:
        """``cached_files_count``, ``max_cached_files`` and, per cached file path, its GOP's
        ``first_frame_id``, ``gop_len``, ``frame_range`` (first, last) and ``packets_size_bytes``."""
        return {
            "cached_files_count": len(self._gop_cache),
            "max_cached_files": self.max_cached_files,
            "cached_files": {
                path: {"first_frame_id": first, "gop_len": count, "frame_range": (first, first + count - 1),
                       "packets_size_bytes": int(packets.nbytes)}
                for path, (packets, first, count) in self._gop_cache.items()
            },
        }

    def clear_cache(self) -> None:
        """Drop every cached GOP."""
        self._gop_cache.clear()


def _merge_entries(entries: Sequence[tuple[np.ndarray, int, int]]) -> tuple[np.ndarray, list[int], list[int]]:
    packets = entries[0][0] if len(entries) == 1 else np.concatenate([e[0] for e in entries])
    return packets, [e[1] for e in entries], [e[2] for e in entries]


def CreateGopDecoder(maxfiles: int, iGpu: int = 0, suppressNoColorRangeWarning: bool = False,  # noqa: N802,N803
                     *, device: Device = "auto", max_cached_files: int | None = None) -> CachedGopDecoder:
    """A :class:`CachedGopDecoder`: a :class:`PyNvGopDecoder` with a cache of GOP data.

    Example:
        >>> decoder = CreateGopDecoder(maxfiles=3, iGpu=0)
        >>> packets, fids, glens = decoder.GetGOP(["v0.mp4"], [10], useGOPCache=True)   # demuxes
        >>> packets, fids, glens = decoder.GetGOP(["v0.mp4"], [15], useGOPCache=True)   # same GOP: cached

    Args:
        maxfiles, iGpu, suppressNoColorRangeWarning, device: As for :class:`PyNvGopDecoder`.
        max_cached_files: Files whose GOP the cache keeps, at most (default ``4 * maxfiles``).
    """
    return CachedGopDecoder(maxfiles, iGpu, suppressNoColorRangeWarning, device=device,
                            max_cached_files=max_cached_files, _key=_CREATION_KEY)


@dataclass(frozen=True)
class _Pending:
    """The one asynchronous request of a sample reader, waiting to be collected."""

    paths: tuple[str, ...]
    frame_ids: tuple[int, ...]
    as_bgr: bool
    future: concurrent.futures.Future[list[torch.Tensor]]

    def describe(self) -> str:
        return f"filepaths={list(self.paths)}, frame_ids={list(self.frame_ids)}, as_bgr={self.as_bgr}"


class PyNvSampleReader(_Decoder):
    """Frames of many videos read one step after another (clips played forward), plus one request in
    flight in the background.

    The engine's decoder sessions keep their place in each GOP, so frame t+1 after frame t costs one
    decode; ``num_of_set`` and ``num_of_file`` are checked and need no tuning.

    Example:
        >>> reader = PyNvSampleReader(num_of_set=2, num_of_file=3)
        >>> reader.DecodeN12ToRGBAsync(["video1.mp4", "video2.mp4"], [0, 10])
        >>> # ... other work while the frames decode ...
        >>> frames = reader.DecodeN12ToRGBAsyncGetBuffer(["video1.mp4", "video2.mp4"], [0, 10])
        >>> tensors = [torch.as_tensor(f, device="cuda") for f in frames]

    Args:
        num_of_set: Readers per file in accvlab (positive; the engine shares its sessions).
        num_of_file: Files read together (sizes the index cache).
        iGpu, suppressNoColorRangeWarning, device: As for :class:`PyNvGopDecoder`.
    """

    def __init__(self, num_of_set: int, num_of_file: int, iGpu: int = 0,  # noqa: N803
                 suppressNoColorRangeWarning: bool = False, *, device: Device = "auto") -> None:  # noqa: N803
        self.num_of_set = _positive("num_of_set", num_of_set)
        self.num_of_file = _positive("num_of_file", num_of_file)
        super().__init__(num_of_file, iGpu, suppressNoColorRangeWarning, device)
        self._pending: _Pending | None = None

    def Decode(self, filepaths: Sequence[str], frame_ids: Sequence[int]) -> list[DecodedFrameExt]:  # noqa: N802
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, in NV12 (P016 for 10-bit).

        Raises:
            As :meth:`PyNvGopDecoder.Decode`.
        """
        return self._nv12_by_path("Decode", filepaths, frame_ids)

    def DecodeN12ToRGB(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
                       as_bgr: bool = False) -> list[RGBFrame]:
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, as RGB (BGR with ``as_bgr``)."""
        return self._rgb_by_path("DecodeN12ToRGB", filepaths, frame_ids, as_bgr)

    def DecodeN12ToRGBAsync(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
                            as_bgr: bool = False) -> None:
        """Start decoding in the background and return at once; collect the frames with
        :meth:`DecodeN12ToRGBAsyncGetBuffer` and the same arguments.

        One request is kept: if the previous one was not collected, this waits for it to finish,
        logs a warning and drops its result. Malformed arguments raise here; errors of the decode
        itself (a missing file, a bad frame id, damaged data) are raised by the GetBuffer call.
        """
        method = "DecodeN12ToRGBAsync"
        pairs = _requests(method, filepaths, frame_ids)
        bgr = _flag(method, "as_bgr", as_bgr)
        previous, self._pending = self._pending, None
        if previous is not None:
            log.warning("asyncdecode.compat.accvlab: DecodeN12ToRGBAsync called again before "
                        "DecodeN12ToRGBAsyncGetBuffer; the result of the earlier request (%s) is dropped",
                        previous.describe())
            concurrent.futures.wait([previous.future])
        future = self._runner.submit([p for p, _ in pairs], [f for _, f in pairs], _BGR if bgr else _RGB)
        self._pending = _Pending(tuple(os.fspath(p) for p in filepaths), tuple(f for _, f in pairs), bgr, future)

    def DecodeN12ToRGBAsyncGetBuffer(self, filepaths: Sequence[str], frame_ids: Sequence[int],  # noqa: N802
                                     as_bgr: bool = False) -> list[RGBFrame]:
        """The frames of the request started by :meth:`DecodeN12ToRGBAsync` (waiting for them).

        The arguments must be the ones given to that call.

        Raises:
            InvalidRequestError: no request is waiting, or the arguments differ from its (the request
                stays waiting).
            AsyncDecodeError: the request's own error (its file and frame named), raised here.
        """
        method = "DecodeN12ToRGBAsyncGetBuffer"
        pairs = _requests(method, filepaths, frame_ids)
        bgr = _flag(method, "as_bgr", as_bgr)
        pending = self._pending
        if pending is None:
            raise InvalidRequestError(f"{method}: no decode is waiting to be collected; call "
                                      "DecodeN12ToRGBAsync(filepaths, frame_ids, as_bgr) first")
        asked = _Pending(tuple(os.fspath(p) for p in filepaths), tuple(f for _, f in pairs), bgr, pending.future)
        if asked != pending:
            diff = [name for name, a, b in (("filepaths", asked.paths, pending.paths),
                                            ("frame_ids", asked.frame_ids, pending.frame_ids),
                                            ("as_bgr", asked.as_bgr, pending.as_bgr)) if a != b]
            raise InvalidRequestError(f"{method}: {' and '.join(diff)} differ from the waiting request's "
                                      f"({pending.describe()}; asked: {asked.describe()})")
        self._pending = None
        return [RGBFrame(t, is_bgr=bgr) for t in pending.future.result()]

    def clearAllReaders(self) -> None:  # noqa: N802
        """Drop the waiting request (if any) and free the decoder sessions, threads and caches; the
        next call makes new ones."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.future.cancel()
        self._runner.release()

    def release_decoder(self) -> None:
        """Free the decoder sessions, threads and caches; the next call makes new ones. A waiting
        request is finished first and can still be collected."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending.future])
        self._runner.release()

    def close(self) -> None:
        self._pending = None
        super().close()


def CreateSampleReader(num_of_set: int, num_of_file: int, iGpu: int = 0,  # noqa: N802,N803
                       suppressNoColorRangeWarning: bool = False, *, device: Device = "auto") -> PyNvSampleReader:  # noqa: N803
    """A :class:`PyNvSampleReader`.

    Example:
        >>> reader = CreateSampleReader(num_of_set=2, num_of_file=3, iGpu=0)
        >>> frames = reader.Decode(["v0.mp4", "v1.mp4"], [0, 10])
    """
    return PyNvSampleReader(num_of_set, num_of_file, iGpu, suppressNoColorRangeWarning, device=device)

