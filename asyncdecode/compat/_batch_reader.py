"""accvlab's batch stream reader: :class:`PyNvBatchAsyncStreamReader` and :func:`CreateBatchAsyncStreamReader`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidRequestError
from ._common import BGR, RGB, as_list, at_most, flag, path_list, positive, request_pairs
from ._errors import MAX_FRAMES_PER_CALL, NOT_EMPTY, NUM_OF_FILE
from ._frames import RGBFrame
from ._runner import Device
from ._sample_reader import AsyncRequest, AsyncSlot, SlotDecoder

__all__ = ["CreateBatchAsyncStreamReader", "PyNvBatchAsyncStreamReader"]


class PyNvBatchAsyncStreamReader(SlotDecoder):
    """Several frames of each of several videos per request (V files x F frames), decoded in the
    background: one call starts a request, another collects it as ``frames[v][f]``.

    It is :class:`PyNvSampleReader`'s asynchronous API with a list of frame ids per file, for work that
    takes F steps of V clips at a time (sweeps of a camera rig). All V x F frames are one engine
    request, so they decode in parallel, GOPs shared between frames are decoded once, and the sessions
    keep their place for the next request further on.

    Example:
        >>> reader = PyNvBatchAsyncStreamReader(num_of_set=1, num_of_file=2, max_frames_per_decode_call=3)
        >>> reader.Decode(["cam0.mp4", "cam1.mp4"], [[0, 1, 2], [0, 1, 2]])
        >>> # ... other work while the frames decode ...
        >>> frames = reader.GetBuffer(["cam0.mp4", "cam1.mp4"], [[0, 1, 2], [0, 1, 2]])
        >>> clip = torch.stack([torch.as_tensor(f, device="cuda") for f in frames[1]])  # cam1, 3 x H x W x 3

    Args:
        num_of_set: Readers per file in accvlab (positive; the engine shares its sessions).
        num_of_file: The most files one request may name (V).
        max_frames_per_decode_call: The most frame ids one request may ask of each file (F).
        iGpu, suppressNoColorRangeWarning, device: As for :class:`PyNvGopDecoder`.

    Raises:
        InvalidRequestError: a size is not a positive int.
        BackendUnavailableError: ``iGpu`` or ``device`` cannot be used.
    """

    def __init__(self, num_of_set: int, num_of_file: int, max_frames_per_decode_call: int, iGpu: int = 0,
                 suppressNoColorRangeWarning: bool = False, *, device: Device = "auto") -> None:
        self.num_of_set = positive("num_of_set", num_of_set)
        self.num_of_file = positive("num_of_file", num_of_file)
        self.max_frames_per_decode_call = positive("max_frames_per_decode_call", max_frames_per_decode_call)
        super().__init__(num_of_file, iGpu, suppressNoColorRangeWarning, device)
        self._slot = AsyncSlot("Decode", "GetBuffer")

    def Decode(self, filepaths: Sequence[str], frame_ids: Sequence[Sequence[int]], as_bgr: bool = False) -> None:
        """Start decoding frame ``frame_ids[v][f]`` of ``filepaths[v]`` for every v and f, and return at
        once; collect the frames with :meth:`GetBuffer` and the same arguments.

        Every file asks for the same number of frames. One request is kept: if the previous one was
        not collected, this waits for it to finish, logs a warning and drops its result.

        Raises:
            InvalidRequestError: malformed arguments (raised here): no files, a frame list per file
                missing, lists of different lengths, an empty list, more than ``num_of_file`` files or
                more than ``max_frames_per_decode_call`` frames per file, ids that are not ints.
            EngineClosedError: the reader is closed.
        """
        request, pairs = self._request("Decode", filepaths, frame_ids, as_bgr)
        self._slot.start(request, lambda: self._runner.submit([p for p, _ in pairs], [f for _, f in pairs],
                                                              BGR if request.as_bgr else RGB))

    def GetBuffer(self, filepaths: Sequence[str], frame_ids: Sequence[Sequence[int]],
                  as_bgr: bool = False) -> list[list[RGBFrame]]:
        """The frames of the request started by :meth:`Decode` (waiting for them), as
        ``frames[v][f]``: frame ``frame_ids[v][f]`` of ``filepaths[v]``, ``(H, W, 3)`` ``uint8`` on
        :attr:`device`. Each frame owns its memory.

        The arguments must be the ones given to :meth:`Decode`.

        Raises:
            InvalidRequestError: no request is waiting, or the arguments differ from its (the request
                stays waiting).
            AsyncDecodeError: the request's own error (a missing file, a bad frame id, damaged data;
                its file and frame named), raised here; the request is then gone.
            EngineClosedError: the reader is closed.
        """
        request, _ = self._request("GetBuffer", filepaths, frame_ids, as_bgr)
        tensors = iter(self._slot.collect(request))
        return [[RGBFrame(next(tensors), is_bgr=request.as_bgr) for _ in row] for row in request.frame_ids]

    def clearAllReaders(self) -> None:
        """Free the decoder sessions, threads and caches; the next call makes new ones. A waiting
        request is finished first and can still be collected (as in accvlab)."""
        self.release_decoder()

    def _request(self, method: str, filepaths: Any, frame_ids: Any,
                 as_bgr: Any) -> tuple[AsyncRequest, list[tuple[str, int]]]:
        """The checked request of ``method``, and its ``(absolute path, frame id)`` pairs, file by file."""
        paths = path_list(method, filepaths, allow_empty=True)
        rows = as_list(method, "frame_ids", frame_ids, "lists of frame ids, one per file path")
        if len(rows) != len(paths):
            raise InvalidRequestError(f"{method}: {len(paths)} filepaths but {len(rows)} lists of frame ids "
                                      "(one list per file path)")
        if not paths:
            raise InvalidRequestError(f"{method}: filepaths {NOT_EMPTY}; ask for frames of at least one file")
        at_most(method, len(paths), self.num_of_file, counted="files asked for", setting="num_of_file",
                phrase=f"Number of files ({len(paths)}) {NUM_OF_FILE} ({self.num_of_file})")
        rows = [as_list(method, f"frame_ids[{v}]", row, "frame ids") for v, row in enumerate(rows)]
        count = len(rows[0])
        if count == 0:
            raise InvalidRequestError(f"{method}: frame_ids[0] is empty; the lists of frame ids {NOT_EMPTY} "
                                      "(ask for at least one frame per file)")
        at_most(method, count, self.max_frames_per_decode_call, counted="frames per file",
                setting="max_frames_per_decode_call",
                phrase=f"frames per video ({count}) {MAX_FRAMES_PER_CALL} ({self.max_frames_per_decode_call})")
        for v, row in enumerate(rows):
            if len(row) != count:
                raise InvalidRequestError(f"{method}: frame_ids[{v}] has {len(row)} frame ids but frame_ids[0] "
                                          f"has {count}; every file must ask for the same number of frames",
                                          path=paths[v])
        pairs = request_pairs(method, [p for p, row in zip(paths, rows) for _ in row],
                              [f for row in rows for f in row])
        ids = iter(f for _, f in pairs)
        request = AsyncRequest(tuple(os.fspath(p) for p in paths),
                               tuple(tuple(next(ids) for _ in row) for row in rows), flag(method, "as_bgr", as_bgr))
        return request, pairs


def CreateBatchAsyncStreamReader(num_of_set: int, num_of_file: int, max_frames_per_decode_call: int, iGpu: int = 0,
                                 suppressNoColorRangeWarning: bool = False, *,
                                 device: Device = "auto") -> PyNvBatchAsyncStreamReader:
    """A :class:`PyNvBatchAsyncStreamReader`.

    Example:
        >>> reader = CreateBatchAsyncStreamReader(num_of_set=1, num_of_file=6, max_frames_per_decode_call=4)
        >>> reader.Decode(files, [[0, 7, 14, 21]] * len(files))
        >>> frames = reader.GetBuffer(files, [[0, 7, 14, 21]] * len(files))
    """
    return PyNvBatchAsyncStreamReader(num_of_set, num_of_file, max_frames_per_decode_call, iGpu,
                                      suppressNoColorRangeWarning, device=device)
