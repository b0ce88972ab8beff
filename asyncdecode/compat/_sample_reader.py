"""accvlab's sample reader: :class:`PyNvSampleReader` and :func:`CreateSampleReader`."""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import EngineClosedError, InvalidRequestError
from ._common import BGR, RGB, Decoder, flag, positive, request_pairs
from ._errors import NO_PENDING_TASK, PARAMETERS_DIFFER
from ._frames import DecodedFrameExt, RGBFrame
from ._runner import Device

__all__ = ["AsyncRequest", "AsyncSlot", "CreateSampleReader", "PyNvSampleReader"]

log = logging.getLogger("asyncdecode")


@dataclass(frozen=True)
class AsyncRequest:
    """What an asynchronous request asked for; the call that collects it must ask for the same."""

    paths: tuple[str, ...]
    """The file paths as given (compared as strings, as accvlab does)."""
    frame_ids: tuple[Any, ...]
    """One frame id per path, or (batch reader) one tuple of frame ids per path."""
    as_bgr: bool

    def describe(self) -> str:
        ids = [list(f) if isinstance(f, tuple) else f for f in self.frame_ids]
        return f"filepaths={list(self.paths)}, frame_ids={ids}, as_bgr={self.as_bgr}"


class AsyncSlot:
    """The one request a reader keeps in the background: started by one call (``start_method``) and
    collected by another (``collect_method``) given the same arguments."""

    def __init__(self, start_method: str, collect_method: str) -> None:
        self._start_method = start_method
        self._collect_method = collect_method
        self._pending: tuple[AsyncRequest, concurrent.futures.Future[list[torch.Tensor]]] | None = None
        self._closed = False

    def start(self, request: AsyncRequest,
              submit: Callable[[], concurrent.futures.Future[list[torch.Tensor]]]) -> None:
        """Start ``request`` with ``submit()``. A request not collected yet is waited for and its result
        dropped (with a logged warning): one request is kept, as in accvlab."""
        self._check(self._start_method)
        previous, self._pending = self._pending, None
        if previous is not None:
            log.warning("asyncdecode.compat.accvlab: %s called again before %s; the result of the earlier "
                        "request (%s) is dropped", self._start_method, self._collect_method, previous[0].describe())
            concurrent.futures.wait([previous[1]])
        self._pending = (request, submit())

    def collect(self, request: AsyncRequest) -> list[torch.Tensor]:
        """The frames of the waiting request (waiting for them), which must be ``request``.

        Raises:
            InvalidRequestError: no request is waiting, or it is not ``request`` (it stays waiting).
            EngineClosedError: the reader is closed.
            AsyncDecodeError: the request's own error, raised here.
        """
        method = self._collect_method
        self._check(method)
        if self._pending is None:
            raise InvalidRequestError(f"{method}: no decode is waiting to be collected; call "
                                      f"{self._start_method}(filepaths, frame_ids, as_bgr) first ({NO_PENDING_TASK})")
        waiting, future = self._pending
        if request != waiting:
            diff = [name for name, a, b in (("filepaths", request.paths, waiting.paths),
                                            ("frame_ids", request.frame_ids, waiting.frame_ids),
                                            ("as_bgr", request.as_bgr, waiting.as_bgr)) if a != b]
            raise InvalidRequestError(f"{method}: {' and '.join(diff)} differ from the waiting request's "
                                      f"({waiting.describe()}; asked: {request.describe()}). {PARAMETERS_DIFFER} "
                                      "the waiting request, which stays waiting")
        self._pending = None
        return future.result()

    @property
    def waiting(self) -> AsyncRequest | None:
        """The request waiting to be collected, if any."""
        return self._pending[0] if self._pending is not None else None

    def finish(self) -> None:
        """Wait for the waiting request, if any; it stays collectable."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending[1]])

    def drop(self) -> None:
        """Cancel and forget the waiting request, if any."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending[1].cancel()

    def close(self) -> None:
        """Forget the waiting request; later calls raise :class:`~asyncdecode.EngineClosedError`."""
        self._pending = None
        self._closed = True

    def _check(self, method: str) -> None:
        if self._closed:
            raise EngineClosedError(f"{method}: the reader is closed")


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
        self._slot = AsyncSlot("DecodeN12ToRGBAsync", "DecodeN12ToRGBAsyncGetBuffer")

    def Decode(self, filepaths: Sequence[str], frame_ids: Sequence[int]) -> list[DecodedFrameExt]:
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, in NV12 (P016 for 10-bit).

        Raises:
            As :meth:`PyNvGopDecoder.Decode`.
        """
        return self._nv12_by_path("Decode", filepaths, frame_ids)

    def DecodeN12ToRGB(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                       as_bgr: bool = False) -> list[RGBFrame]:
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, as RGB (BGR with ``as_bgr``).

        As in accvlab, a request of :meth:`DecodeN12ToRGBAsync` not collected yet is finished and its
        result dropped: a later :meth:`DecodeN12ToRGBAsyncGetBuffer` finds no request waiting.
        """
        waiting = self._slot.waiting
        if waiting is not None:
            log.warning("asyncdecode.compat.accvlab: DecodeN12ToRGB called while a DecodeN12ToRGBAsync request "
                        "waits to be collected; as in accvlab, its result (%s) is dropped", waiting.describe())
            self._slot.finish()
            self._slot.drop()
        return self._rgb_by_path("DecodeN12ToRGB", filepaths, frame_ids, as_bgr)

    def DecodeN12ToRGBAsync(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                            as_bgr: bool = False) -> None:
        """Start decoding in the background and return at once; collect the frames with
        :meth:`DecodeN12ToRGBAsyncGetBuffer` and the same arguments.

        One request is kept: if the previous one was not collected, this waits for it to finish,
        logs a warning and drops its result. Malformed arguments raise here; errors of the decode
        itself (a missing file, a bad frame id, damaged data) are raised by the GetBuffer call.
        """
        request, pairs = _request("DecodeN12ToRGBAsync", filepaths, frame_ids, as_bgr)
        self._slot.start(request, lambda: self._runner.submit([p for p, _ in pairs], [f for _, f in pairs],
                                                              BGR if request.as_bgr else RGB))

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
        try:
            request, _ = _request(method, filepaths, frame_ids, as_bgr)
        except InvalidRequestError as exc:
            waiting = self._slot.waiting
            if waiting is None:
                raise
            # Arguments that cannot even form a request (as many frame ids as paths ...) do not match
            # the waiting one either; it stays waiting.
            raise InvalidRequestError(f"{exc.message}; the waiting request is {waiting.describe()}. "
                                      f"{PARAMETERS_DIFFER} the waiting request, which stays waiting",
                                      path=exc.path, frame_id=exc.frame_id) from None
        return [RGBFrame(t, is_bgr=request.as_bgr) for t in self._slot.collect(request)]

    def clearAllReaders(self) -> None:
        """Drop the waiting request (if any) and free the decoder sessions, threads and caches; the
        next call makes new ones."""
        self._slot.drop()
        self._runner.release()

    def release_decoder(self) -> None:
        """Free the decoder sessions, threads and caches; the next call makes new ones. A waiting
        request is finished first and can still be collected."""
        self._slot.finish()
        self._runner.release()

    def close(self) -> None:
        self._slot.close()
        super().close()


def _request(method: str, filepaths: Any, frame_ids: Any,
             as_bgr: Any) -> tuple[AsyncRequest, list[tuple[str, int]]]:
    """The checked request of a one-frame-per-file async call, and its ``(absolute path, frame id)``
    pairs."""
    pairs = request_pairs(method, filepaths, frame_ids)
    request = AsyncRequest(tuple(os.fspath(p) for p in filepaths), tuple(f for _, f in pairs),
                           flag(method, "as_bgr", as_bgr))
    return request, pairs


def CreateSampleReader(num_of_set: int, num_of_file: int, iGpu: int = 0,
                       suppressNoColorRangeWarning: bool = False, *, device: Device = "auto") -> PyNvSampleReader:
    """A :class:`PyNvSampleReader`.

    Example:
        >>> reader = CreateSampleReader(num_of_set=2, num_of_file=3, iGpu=0)
        >>> frames = reader.Decode(["v0.mp4", "v1.mp4"], [0, 10])
    """
    return PyNvSampleReader(num_of_set, num_of_file, iGpu, suppressNoColorRangeWarning, device=device)


