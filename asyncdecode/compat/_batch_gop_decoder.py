"""accvlab's batch GOP decoder: :class:`PyNvBatchAsyncGopDecoder` and :func:`CreateBatchAsyncGopDecoder`."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._output import OutputSpec
from ..errors import AsyncDecodeError, InvalidRequestError
from ..gop import GopBundle
from . import _bundles
from ._common import (BGR, RGB, as_list, at_most, check_nv12, decode_plan, flag, nv12_frame, path_list,
                      positive, request_pairs)
from ._errors import MAX_FRAMES_PER_CALL, NOT_EMPTY
from ._frames import DecodedFrameExt, RGBFrame
from ._runner import Device
from ._sample_reader import AsyncRequest, AsyncSlot, SlotDecoder

__all__ = ["CreateBatchAsyncGopDecoder", "PyNvBatchAsyncGopDecoder"]

_RGB = ("DecodeFromGOPListRGB", "DecodeFromGOPListRGBGetBuffer")
_YUV = ("DecodeFromGOPList", "DecodeFromGOPListGetBuffer")


class PyNvBatchAsyncGopDecoder(SlotDecoder):
    """Several frames of each of several videos per request (V videos x F frames), decoded in the
    background from GOP data the caller already has: one call starts a request, another collects it
    as ``frames[v][f]``.

    It is the GOP-data counterpart of :class:`PyNvBatchAsyncStreamReader`: the data of video ``v`` is
    ``numpy_datas[v]``, a list of packet data arrays (from :meth:`PyNvGopDecoder.GetGOPList`,
    :meth:`PyNvGopDecoder.LoadGopsToList` or a :class:`SharedGopStore`) that together hold every frame
    asked of it. The videos are not opened. All V x F frames go to the engine's decoder pool as one
    request: each GOP is decoded once, in one pass, for all the frames asked of it.

    Example:
        >>> extractor = CreateGopDecoder(maxfiles=2)
        >>> datas = [[extractor.GetGOPList([path], [0])[0][0]] for path in files]
        >>> decoder = PyNvBatchAsyncGopDecoder(maxfiles=2, max_frames_per_decode_call=4)
        >>> decoder.DecodeFromGOPListRGB(datas, files, [[0, 1, 2, 3]] * 2)
        >>> # ... other work while the frames decode ...
        >>> frames = decoder.DecodeFromGOPListRGBGetBuffer(files, [[0, 1, 2, 3]] * 2)

    Args:
        maxfiles: The most videos one request may name (V).
        max_frames_per_decode_call: The most frames one request may ask of each video (F).
        iGpu, suppressNoColorRangeWarning, device: As for :class:`PyNvGopDecoder`.

    Raises:
        InvalidRequestError: a size is not a positive int.
        BackendUnavailableError: ``iGpu`` or ``device`` cannot be used.
    """

    def __init__(self, maxfiles: int, max_frames_per_decode_call: int, iGpu: int = 0,
                 suppressNoColorRangeWarning: bool = False, *, device: Device = "auto") -> None:
        self.maxfiles = positive("maxfiles", maxfiles)
        self.max_frames_per_decode_call = positive("max_frames_per_decode_call", max_frames_per_decode_call)
        super().__init__(maxfiles, iGpu, suppressNoColorRangeWarning, device)
        self._slot = AsyncSlot(*_RGB)

    # -- RGB ----------------------------------------------------------------------------------

    def DecodeFromGOPListRGB(self, numpy_datas: Sequence[Sequence[Any]], filepaths: Sequence[str],
                             frame_ids: Sequence[Sequence[int]], as_bgr: bool = False,
                             enable_gop_dependency_graph_optimization: bool = False) -> None:
        """Start decoding frame ``frame_ids[v][f]`` of video ``v`` for every v and f out of
        ``numpy_datas[v]``, as RGB (BGR with ``as_bgr``), and return at once; collect the frames with
        :meth:`DecodeFromGOPListRGBGetBuffer` and the same arguments.

        The data is copied before this returns: the arrays may be reused at once. One request is
        kept: if the previous one was not collected, this waits for it, logs a warning and drops its
        result. ``enable_gop_dependency_graph_optimization`` is accepted and changes nothing (see
        :meth:`PyNvGopDecoder.DecodeFromGOPList`).

        Raises:
            InvalidRequestError: malformed arguments (raised here, with accvlab's phrases): no videos
                ("filepaths must not be empty"), more than ``maxfiles`` videos or
                ``max_frames_per_decode_call`` frames per video ("exceeds"), lists of other lengths
                than ``filepaths`` ("outer length"), lists of frame ids of different lengths
                ("jagged input not supported") or empty, a video without GOP data ("GOP bundle is
                required").
            EngineClosedError: the decoder is closed.
        """
        bgr = flag(_RGB[0], "as_bgr", as_bgr)
        flag(_RGB[0], "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        self._start(_RGB, numpy_datas, filepaths, frame_ids, bgr, BGR if bgr else RGB)

    def DecodeFromGOPListRGBGetBuffer(self, filepaths: Sequence[str], frame_ids: Sequence[Sequence[int]],
                                      as_bgr: bool = False) -> list[list[RGBFrame]]:
        """The frames of the request started by :meth:`DecodeFromGOPListRGB` (waiting for them), as
        ``frames[v][f]``: frame ``frame_ids[v][f]`` of video ``v``, ``(H, W, 3)`` ``uint8`` on
        :attr:`device`. Each frame owns its memory: nothing to clone before the next request.

        Raises:
            InvalidRequestError: no request is waiting, or the arguments differ from its, or it
                decodes native frames (:meth:`DecodeFromGOPList`); it stays waiting.
            AsyncDecodeError: the request's own error, raised here: GOP data that is damaged
                (``CorruptDataError``), a frame that no array of its video holds ("no serialized GOP
                bundle covers frame"). The request is then gone; the decoder keeps working.
            EngineClosedError: the decoder is closed.
        """
        request = _collected(_RGB[1], filepaths, frame_ids, flag(_RGB[1], "as_bgr", as_bgr), "RGB")
        return self._slot.collect(request, names=_RGB)

    # -- native frames ------------------------------------------------------------------------

    def DecodeFromGOPList(self, numpy_datas: Sequence[Sequence[Any]], filepaths: Sequence[str],
                          frame_ids: Sequence[Sequence[int]],
                          enable_gop_dependency_graph_optimization: bool = False) -> None:
        """As :meth:`DecodeFromGOPListRGB`, in native NV12 / P016 frames (:class:`DecodedFrameExt`);
        collect them with :meth:`DecodeFromGOPListGetBuffer`. A stream that is not 4:2:0 makes the
        request fail (``UnsupportedStreamError``, raised by the GetBuffer call)."""
        flag(_YUV[0], "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        self._start(_YUV, numpy_datas, filepaths, frame_ids, False, None)

    def DecodeFromGOPListGetBuffer(self, filepaths: Sequence[str],
                                   frame_ids: Sequence[Sequence[int]]) -> list[list[DecodedFrameExt]]:
        """The frames of the request started by :meth:`DecodeFromGOPList`, as ``frames[v][f]``.

        Raises:
            As :meth:`DecodeFromGOPListRGBGetBuffer`.
        """
        return self._slot.collect(_collected(_YUV[1], filepaths, frame_ids, False, "YUV"), names=_YUV)

    # -- requests -----------------------------------------------------------------------------

    def _start(self, names: tuple[str, str], numpy_datas: Any, filepaths: Any, frame_ids: Any, bgr: bool,
               output: OutputSpec | None) -> None:
        method = names[0]
        request, datas = self._checked(method, numpy_datas, filepaths, frame_ids, bgr,
                                       "YUV" if output is None else "RGB")
        # The request's own errors (data that does not parse, a frame no array holds) are the
        # collecting call's to raise, as in accvlab: the request fails, this call does not.
        try:
            bundles, which, fids = _plan(method, datas, request)
            if output is None:
                check_nv12(bundles, which, fids)
        except AsyncDecodeError as exc:
            failure = exc
            self._slot.start(request, lambda: _failed(failure), names=names)
            return
        jobs, finish = decode_plan(bundles, which, fids, output)
        frames_per_video = len(request.frame_ids[0])

        def assemble(results: Sequence[dict[int, Any]]) -> list[list[Any]]:
            flat = finish(results)
            if output is None:
                flat = [nv12_frame(bundles[b], f, p) for b, f, p in zip(which, fids, flat)]
            else:
                flat = [RGBFrame(t, is_bgr=bgr) for t in flat]
            return [flat[v * frames_per_video:(v + 1) * frames_per_video] for v in range(len(request.paths))]

        self._slot.start(request, lambda: self._runner.submit_bundles(jobs, output), then=assemble, names=names)

    def _checked(self, method: str, numpy_datas: Any, filepaths: Any, frame_ids: Any, bgr: bool,
                 output: str) -> tuple[AsyncRequest, list[list[Any]]]:
        """The request and each video's data arrays, checked in accvlab's order."""
        paths = path_list(method, filepaths, allow_empty=True)
        videos = len(paths)
        if not videos:
            raise InvalidRequestError(f"{method}: filepaths {NOT_EMPTY}; name at least one video")
        at_most(method, videos, self.maxfiles, counted="videos", setting="maxfiles",
                phrase=f"number of files ({videos}) exceeds maxfiles ({self.maxfiles})")
        rows = as_list(method, "frame_ids", frame_ids, "lists of frame ids, one per file path")
        if len(rows) != videos:
            raise InvalidRequestError(f"{method}: {len(rows)} lists of frame ids for {videos} filepaths "
                                      f"(frame_ids_2d outer length ({len(rows)}) != filepaths length ({videos}))")
        datas = as_list(method, "numpy_datas", numpy_datas, "lists of GOP data arrays, one per file path")
        if len(datas) != videos:
            raise InvalidRequestError(f"{method}: {len(datas)} lists of GOP data for {videos} filepaths "
                                      f"(numpy_datas outer length ({len(datas)}) != filepaths length ({videos}))")
        rows = [as_list(method, f"frame_ids[{v}]", row, "frame ids") for v, row in enumerate(rows)]
        count = len(rows[0])
        if count == 0:
            raise InvalidRequestError(f"{method}: frame_ids[0] is empty; the lists of frame ids (frame_ids_2d "
                                      f"inner lists) {NOT_EMPTY}")
        at_most(method, count, self.max_frames_per_decode_call, counted="frames per video",
                setting="max_frames_per_decode_call",
                phrase=f"frame count ({count}) {MAX_FRAMES_PER_CALL} ({self.max_frames_per_decode_call})")
        for v, row in enumerate(rows):
            if len(row) != count:
                raise InvalidRequestError(f"{method}: frame_ids[{v}] has {len(row)} frame ids but frame_ids[0] has "
                                          f"{count}; every video must ask for the same number of frames (jagged "
                                          "input not supported)", path=paths[v])
        for v, data in enumerate(datas):
            if isinstance(data, (str, bytes, np.ndarray)) or not isinstance(data, Sequence):
                raise InvalidRequestError(f"{method}: numpy_datas[{v}] must be a list of GOP data arrays, not "
                                          f"{type(data).__name__}", path=paths[v])
            if not data:
                raise InvalidRequestError(f"{method}: numpy_datas[{v}] is empty; at least one serialized GOP bundle "
                                          f"is required per video ({paths[v]})", path=paths[v])
        pairs = request_pairs(method, [p for p, row in zip(paths, rows) for _ in row], [f for row in rows for f in row])
        ids = iter(f for _, f in pairs)
        request = AsyncRequest(tuple(paths), tuple(tuple(next(ids) for _ in row) for row in rows), bgr, output)
        return request, [list(d) for d in datas]


def _collected(method: str, filepaths: Any, frame_ids: Any, bgr: bool, output: str) -> AsyncRequest:
    """The request a GetBuffer call names (its form checked; the waiting request says the rest)."""
    paths = path_list(method, filepaths, allow_empty=True)
    rows = [as_list(method, f"frame_ids[{v}]", row, "frame ids") for v, row in
            enumerate(as_list(method, "frame_ids", frame_ids, "lists of frame ids, one per file path"))]
    if len(rows) != len(paths):
        raise InvalidRequestError(f"{method}: {len(paths)} filepaths but {len(rows)} lists of frame ids "
                                  "(one list per file path)")
    pairs = iter(request_pairs(method, [p for p, row in zip(paths, rows) for _ in row],
                               [f for row in rows for f in row], allow_empty=True))
    return AsyncRequest(tuple(paths), tuple(tuple(next(pairs)[1] for _ in row) for row in rows), bgr, output)


def _plan(method: str, datas: Sequence[Sequence[Any]],
          request: AsyncRequest) -> tuple[list[GopBundle], list[int], list[int]]:
    """Parse each video's arrays (a copy: the caller may reuse them) and find, for each frame asked
    for, the first bundle of its video that holds it. Arrays given for several videos (the same
    object) are parsed once, so their GOPs decode once."""
    parsed: dict[int, list[int]] = {}
    bundles: list[GopBundle] = []
    which: list[int] = []
    fids: list[int] = []
    for v, (path, row) in enumerate(zip(request.paths, request.frame_ids)):
        mine: list[int] = []
        for j, data in enumerate(datas[v]):
            if id(data) not in parsed:
                found = _bundles.split(data, what=f"{method}: numpy_datas[{v}][{j}] ({os.path.basename(path)})",
                                       path=path, copy=True)
                parsed[id(data)] = list(range(len(bundles), len(bundles) + len(found)))
                bundles.extend(found)
            mine.extend(parsed[id(data)])
        for fid in row:
            k = next((k for k in mine if fid in bundles[k].frame_ids), None)
            if k is None:
                held = ", ".join(f"{b.first_frame_id}..{b.first_frame_id + b.frame_count - 1}"
                                 for b in (bundles[k] for k in mine))
                raise InvalidRequestError(f"{method}: no serialized GOP bundle covers frame {fid} for video {path}: "
                                          f"numpy_datas[{v}] holds frames {held}", path=path, frame_id=fid)
            which.append(k)
            fids.append(fid)
    return bundles, which, fids


def _failed(exc: BaseException) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.set_exception(exc)
    return future


def CreateBatchAsyncGopDecoder(maxfiles: int, max_frames_per_decode_call: int, iGpu: int = 0,
                               suppressNoColorRangeWarning: bool = False, *,
                               device: Device = "auto") -> PyNvBatchAsyncGopDecoder:
    """A :class:`PyNvBatchAsyncGopDecoder`.

    Example:
        >>> decoder = CreateBatchAsyncGopDecoder(maxfiles=6, max_frames_per_decode_call=4)
        >>> decoder.DecodeFromGOPListRGB(datas, files, [[0, 7, 14, 21]] * len(files))
        >>> frames = decoder.DecodeFromGOPListRGBGetBuffer(files, [[0, 7, 14, 21]] * len(files))
    """
    return PyNvBatchAsyncGopDecoder(maxfiles, max_frames_per_decode_call, iGpu, suppressNoColorRangeWarning,
                                    device=device)
