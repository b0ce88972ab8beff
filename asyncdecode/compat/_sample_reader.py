"""accvlab's sample reader: :class:`PyNvSampleReader` and :func:`CreateSampleReader`."""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidRequestError
from ._common import BGR, RGB, Decoder, flag, positive, request_pairs
from ._frames import DecodedFrameExt, RGBFrame
from ._runner import Device

__all__ = ["CreateSampleReader", "PyNvSampleReader"]

log = logging.getLogger("asyncdecode")



@dataclass(frozen=True)
class _Pending:
    """The one asynchronous request of a sample reader, waiting to be collected."""

    paths: tuple[str, ...]
    frame_ids: tuple[int, ...]
    as_bgr: bool
    future: concurrent.futures.Future[list[torch.Tensor]]

    def describe(self) -> str:
        return f"filepaths={list(self.paths)}, frame_ids={list(self.frame_ids)}, as_bgr={self.as_bgr}"


class PyNvSampleReader(Decoder):
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

    def __init__(self, num_of_set: int, num_of_file: int, iGpu: int = 0,
                 suppressNoColorRangeWarning: bool = False, *, device: Device = "auto") -> None:
        self.num_of_set = positive("num_of_set", num_of_set)
        self.num_of_file = positive("num_of_file", num_of_file)
        super().__init__(num_of_file, iGpu, suppressNoColorRangeWarning, device)
        self._pending: _Pending | None = None

    def Decode(self, filepaths: Sequence[str], frame_ids: Sequence[int]) -> list[DecodedFrameExt]:
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, in NV12 (P016 for 10-bit).

        Raises:
            As :meth:`PyNvGopDecoder.Decode`.
        """
        return self._nv12_by_path("Decode", filepaths, frame_ids)

    def DecodeN12ToRGB(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                       as_bgr: bool = False) -> list[RGBFrame]:
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, as RGB (BGR with ``as_bgr``)."""
        return self._rgb_by_path("DecodeN12ToRGB", filepaths, frame_ids, as_bgr)

    def DecodeN12ToRGBAsync(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                            as_bgr: bool = False) -> None:
        """Start decoding in the background and return at once; collect the frames with
        :meth:`DecodeN12ToRGBAsyncGetBuffer` and the same arguments.

        One request is kept: if the previous one was not collected, this waits for it to finish,
        logs a warning and drops its result. Malformed arguments raise here; errors of the decode
        itself (a missing file, a bad frame id, damaged data) are raised by the GetBuffer call.
        """
        method = "DecodeN12ToRGBAsync"
        pairs = request_pairs(method, filepaths, frame_ids)
        bgr = flag(method, "as_bgr", as_bgr)
        previous, self._pending = self._pending, None
        if previous is not None:
            log.warning("asyncdecode.compat.accvlab: DecodeN12ToRGBAsync called again before "
                        "DecodeN12ToRGBAsyncGetBuffer; the result of the earlier request (%s) is dropped",
                        previous.describe())
            concurrent.futures.wait([previous.future])
        future = self._runner.submit([p for p, _ in pairs], [f for _, f in pairs], BGR if bgr else RGB)
        self._pending = _Pending(tuple(os.fspath(p) for p in filepaths), tuple(f for _, f in pairs), bgr, future)

    def DecodeN12ToRGBAsyncGetBuffer(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                                     as_bgr: bool = False) -> list[RGBFrame]:
        """The frames of the request started by :meth:`DecodeN12ToRGBAsync` (waiting for them).

        The arguments must be the ones given to that call.

        Raises:
            InvalidRequestError: no request is waiting, or the arguments differ from its (the request
                stays waiting).
            AsyncDecodeError: the request's own error (its file and frame named), raised here.
        """
        method = "DecodeN12ToRGBAsyncGetBuffer"
        pairs = request_pairs(method, filepaths, frame_ids)
        bgr = flag(method, "as_bgr", as_bgr)
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

    def clearAllReaders(self) -> None:
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


def CreateSampleReader(num_of_set: int, num_of_file: int, iGpu: int = 0,
                       suppressNoColorRangeWarning: bool = False, *, device: Device = "auto") -> PyNvSampleReader:
    """A :class:`PyNvSampleReader`.

    Example:
        >>> reader = CreateSampleReader(num_of_set=2, num_of_file=3, iGpu=0)
        >>> frames = reader.Decode(["v0.mp4", "v1.mp4"], [0, 10])
    """
    return PyNvSampleReader(num_of_set, num_of_file, iGpu, suppressNoColorRangeWarning, device=device)


