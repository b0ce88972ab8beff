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
* Errors are ``RuntimeError``, as accvlab's are, and at the same time the specific
  :class:`~asyncdecode.errors.AsyncDecodeError` naming the file and frame (a missing file is a
  ``VideoOpenError``, an ``OSError``; a bad frame id a ``FrameIndexError``, an ``IndexError``;
  damaged data a ``CorruptDataError``, a ``ValueError``): ``except RuntimeError`` and ``except
  asyncdecode.FrameIndexError`` both catch them (see ``_errors``).
* Frames own their memory: they stay valid after later decodes and need no ``clone()`` first.
* Objects hold threads: ``close()`` them (or use ``with``) where that matters; they are closed when
  collected, too.
* ``suppressNoColorRangeWarning`` is accepted and has no effect: untagged streams are converted as
  limited range, as accvlab assumes, without a warning. So is ``enable_gop_dependency_graph_optimization``:
  the engine decodes a GOP once for all the frames asked of it, whatever the flag says.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from .. import __version__
from ..media import probe
from . import _bundles, _common, _frames, _sample_reader
from ._batch_gop_decoder import CreateBatchAsyncGopDecoder, PyNvBatchAsyncGopDecoder
from ._batch_reader import CreateBatchAsyncStreamReader, PyNvBatchAsyncStreamReader
from ._common import path_list
from ._errors import runtime_errors
from ._frames import DecodedFrameExt, RGBFrame
from ._gop_decoder import CachedGopDecoder, CreateGopDecoder, PyNvGopDecoder
from ._sample_reader import CreateSampleReader, PyNvSampleReader
from ._shared_store import GopRef, SharedGopStore
from ._values import AV_CODEC_IDS, AV_PIX_FMTS, Codec, DropCacheStatus, FastStreamInfo

# Every error leaving this API is a RuntimeError (accvlab's contract) and the asyncdecode error at once.
for _cls in (_common.Decoder, _sample_reader.SlotDecoder, PyNvGopDecoder, CachedGopDecoder, PyNvSampleReader, _frames.TensorExport, RGBFrame,
             _frames.PlaneView, DecodedFrameExt, PyNvBatchAsyncStreamReader, PyNvBatchAsyncGopDecoder):
    runtime_errors(_cls)
del _cls
CreateBatchAsyncGopDecoder = runtime_errors(CreateBatchAsyncGopDecoder)
CreateBatchAsyncStreamReader = runtime_errors(CreateBatchAsyncStreamReader)
CreateGopDecoder = runtime_errors(CreateGopDecoder)
CreateSampleReader = runtime_errors(CreateSampleReader)
SharedGopStore = runtime_errors(SharedGopStore)

__all__ = [
    "CachedGopDecoder",
    "Codec",
    "CreateBatchAsyncGopDecoder",
    "CreateBatchAsyncStreamReader",
    "CreateGopDecoder",
    "CreateSampleReader",
    "DecodedFrameExt",
    "DropCacheStatus",
    "FastStreamInfo",
    "GetFastInitInfo",
    "GopRef",
    "PyNvBatchAsyncGopDecoder",
    "PyNvBatchAsyncStreamReader",
    "PyNvGopDecoder",
    "PyNvSampleReader",
    "RGBFrame",
    "SaveGopToFile",
    "SavePacketsToFile",
    "SharedGopStore",
    "__version__",
    "drop_videos_cache",
]

log = logging.getLogger("asyncdecode")


@runtime_errors
def GetFastInitInfo(filepaths: Sequence[str | os.PathLike[str]]) -> list[FastStreamInfo]:
    """Stream parameters of each file, from one packet scan each (no decoding); none for no files.

    Raises:
        InvalidRequestError: ``filepaths`` is not a list of paths.
        VideoOpenError, CorruptDataError: a file is missing, not a video, or damaged.
    """
    paths = path_list("GetFastInitInfo", filepaths, allow_empty=True)
    out = []
    for path in paths:
        info = probe(path)
        rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(0)
        tb = info.time_base
        out.append(FastStreamInfo(
            codec_id=AV_CODEC_IDS.get(info.codec, 0), format=AV_PIX_FMTS.get(info.pix_fmt, -1),
            width=info.width, height=info.height, time_base_num=tb.numerator, time_base_den=tb.denominator,
            r_frame_rate_num=rate.numerator, r_frame_rate_den=rate.denominator,
            avg_frame_rate_num=rate.numerator, avg_frame_rate_den=rate.denominator,
            duration=round(info.duration_seconds / tb) if tb else 0, start_time=info.frame_pts[0],
        ))
    return out


@runtime_errors
def SavePacketsToFile(numpy_data: Any, dst_filepath: str | os.PathLike[str]) -> None:
    """Write serialized packet data (from ``GetGOP``, ``GetGOPList``, ``MergePacketDataToOne`` ...) to a
    file, atomically. The data is checked first: damaged data is never saved.

    Raises:
        CorruptDataError: the data is not GOP bundles, or is damaged.
        VideoOpenError: the file cannot be written.
    """
    _bundles.save(numpy_data, dst_filepath)


@runtime_errors
def SaveGopToFile(numpy_data: Any, dst_filepath: str | os.PathLike[str]) -> None:
    """Write GOP data (one array of :meth:`PyNvGopDecoder.GetGOPList`, or any packet data) to a file,
    atomically, for :meth:`PyNvGopDecoder.LoadGopsToList`: accvlab's newer name of
    :func:`SavePacketsToFile`, which it is but for the name in error messages.

    Raises:
        CorruptDataError: the data is not GOP bundles, or is damaged.
        VideoOpenError: the file cannot be written.
    """
    _bundles.save(numpy_data, dst_filepath, method="SaveGopToFile")


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
