"""accvlab's sample reader: :class:`PyNvSampleReader` and :func:`CreateSampleReader`."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EngineClosedError, InvalidRequestError
from ._common import BGR, RGB, Decoder, at_most, flag, positive, request_pairs
from ._errors import NO_PENDING_TASK, NUM_OF_FILE, PARAMETERS_DIFFER
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
    """One frame id per path, or (batch readers) one tuple of frame ids per path."""
    as_bgr: bool
    output: str = "RGB"
    """The kind of frames: ``"RGB"`` (RGB or BGR), or ``"YUV"`` (native NV12 / P016 frames)."""

    def describe(self) -> str:
        ids = [list(f) if isinstance(f, tuple) else f for f in self.frame_ids]
        kind = "" if self.output == "RGB" else f", output={self.output}"
        return f"filepaths={list(self.paths)}, frame_ids={ids}, as_bgr={self.as_bgr}{kind}"


#: The arguments of the calls that start a request, where they are not ``filepaths, frame_ids, as_bgr``.
_ARGUMENTS = {"DecodeFromGOPListRGB": "numpy_datas, filepaths, frame_ids, as_bgr",
              "DecodeFromGOPList": "numpy_datas, filepaths, frame_ids"}


@dataclass(frozen=True)
class _Pending:
    request: AsyncRequest
    future: concurrent.futures.Future[Any]
    then: Callable[[Any], Any] | None
    names: tuple[str, str]
    """The calls that started it and that collect it."""


class AsyncSlot:
    """The one request a reader keeps in the background: started by one call (``start_method``) and
    collected by another (``collect_method``) given the same arguments. A reader with two kinds of
    request passes the pair of calls of each with ``names``. Calls from several threads are safe: a
    request is collected once, by one of them."""

    def __init__(self, start_method: str, collect_method: str) -> None:
        self._names = (start_method, collect_method)
        self._pending: _Pending | None = None
        self._closed = False
        self._lock = threading.Lock()  # guards _pending and _closed; never held while waiting
        self._starting = threading.Lock()  # one start at a time, waiting for the earlier request included

    def start(self, request: AsyncRequest, submit: Callable[[], concurrent.futures.Future[Any]], *,
              then: Callable[[Any], Any] | None = None, names: tuple[str, str] | None = None) -> None:
        """Start ``request`` with ``submit()``; ``then``, if given, turns its result into what
        :meth:`collect` returns. A request not collected yet is waited for and its result dropped
        (with a logged warning): one request is kept, as in accvlab."""
        names = names or self._names
        with self._starting:
            with self._lock:
                self._check(names[0])
                previous, self._pending = self._pending, None
            if previous is not None:
                log.warning("asyncdecode.compat.accvlab: %s called again before %s; the result of the earlier "
                            "request (%s) is dropped", names[0], previous.names[1], previous.request.describe())
                concurrent.futures.wait([previous.future])
            future = submit()
            with self._lock:
                if self._closed:
                    future.cancel()
                    self._check(names[0])
                self._pending = _Pending(request, future, then, names)

    def collect(self, request: AsyncRequest, *, names: tuple[str, str] | None = None) -> Any:
        """The frames of the waiting request (waiting for them), which must be ``request``.

        Raises:
            InvalidRequestError: no request is waiting, or it is not ``request`` (it stays waiting).
            EngineClosedError: the reader is closed.
            AsyncDecodeError: the request's own error, raised here.
        """
        start_method, method = names or self._names
        with self._lock:
            self._check(method)
            pending = self._pending
            if pending is None:
                arguments = _ARGUMENTS.get(start_method, "filepaths, frame_ids, as_bgr")
                raise InvalidRequestError(f"{method}: no decode is waiting to be collected; call "
                                          f"{start_method}({arguments}) first ({NO_PENDING_TASK})")
            waiting = pending.request
            if request.output != waiting.output:
                raise InvalidRequestError(
                    f"{method}: the waiting request ({waiting.describe()}) was started by {pending.names[0]}: "
                    f"buffered result is {waiting.output}, not {request.output}. It stays waiting; collect it "
                    f"with {pending.names[1]}")
            if request != waiting:
                diff = [name for name, a, b in (("filepaths", request.paths, waiting.paths),
                                                ("frame_ids", request.frame_ids, waiting.frame_ids),
                                                ("as_bgr", request.as_bgr, waiting.as_bgr)) if a != b]
                raise InvalidRequestError(f"{method}: {' and '.join(diff)} differ from the waiting request's "
                                          f"({waiting.describe()}; asked: {request.describe()}). "
                                          f"{PARAMETERS_DIFFER} the waiting request, which stays waiting")
            self._pending = None
        result = pending.future.result()
        return pending.then(result) if pending.then is not None else result

    @property
    def waiting(self) -> AsyncRequest | None:
        """The request waiting to be collected, if any."""
        pending = self._pending
        return pending.request if pending is not None else None

    def finish(self) -> None:
        """Wait for the waiting request, if any; it stays collectable."""
        pending = self._pending
        if pending is not None:
            concurrent.futures.wait([pending.future])

    def drop(self) -> None:
        """Cancel and forget the waiting request, if any."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.future.cancel()

    def close(self) -> None:
        """Forget the waiting request; later calls raise :class:`~asyncdecode.EngineClosedError`."""
        with self._lock:
            self._pending = None
            self._closed = True

    def _check(self, method: str) -> None:
        if self._closed:
            raise EngineClosedError(f"{method}: the reader is closed")


class SlotDecoder(Decoder):
    """A decoder object with one request decoding in the background (its :class:`AsyncSlot`)."""

    _slot: AsyncSlot

    def release_decoder(self) -> None:
        """Free the decoder sessions, threads and caches; the next call makes new ones. A waiting
        request is finished first and can still be collected (as in accvlab)."""
        self._slot.finish()
        self._runner.release()

    def close(self) -> None:
        """Drop the waiting request (if any) and stop the engine for good (an asyncdecode addition;
        idempotent). Later calls raise :class:`~asyncdecode.EngineClosedError`."""
        self._slot.close()
        super().close()


class PyNvSampleReader(SlotDecoder):
    """Frames of many videos read one step after another (clips played forward), plus one request in
    flight in the background.

    The engine's decoder sessions keep their place in each GOP, so frame t+1 after frame t costs one
    decode; ``num_of_set`` is checked and needs no tuning. Empty lists decode to ``[]``, as in accvlab.

    Example:
        >>> reader = PyNvSampleReader(num_of_set=2, num_of_file=3)
        >>> reader.DecodeN12ToRGBAsync(["video1.mp4", "video2.mp4"], [0, 10])
        >>> # ... other work while the frames decode ...
        >>> frames = reader.DecodeN12ToRGBAsyncGetBuffer(["video1.mp4", "video2.mp4"], [0, 10])
        >>> tensors = [torch.as_tensor(f, device="cuda") for f in frames]

    Args:
        num_of_set: Readers per file in accvlab (positive; the engine shares its sessions).
        num_of_file: The most files one call may read, as in accvlab ("Number of files to decode (N)
            exceeds num_of_file" otherwise); it also sizes the index cache.
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
            As :meth:`PyNvGopDecoder.Decode`; more than ``num_of_file`` files raise
            :class:`~asyncdecode.InvalidRequestError`.
        """
        return self._nv12_by_path(self._pairs("Decode", filepaths, frame_ids))

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
        return self._rgb_by_path("DecodeN12ToRGB", self._pairs("DecodeN12ToRGB", filepaths, frame_ids), as_bgr)

    def DecodeN12ToRGBAsync(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                            as_bgr: bool = False) -> None:
        """Start decoding in the background and return at once; collect the frames with
        :meth:`DecodeN12ToRGBAsyncGetBuffer` and the same arguments.

        One request is kept: if the previous one was not collected, this waits for it to finish,
        logs a warning and drops its result. Malformed arguments, and more than ``num_of_file`` files,
        raise here; errors of the decode itself (a missing file, a bad frame id, damaged data) are
        raised by the GetBuffer call.
        """
        request, pairs = _request("DecodeN12ToRGBAsync", filepaths, frame_ids, as_bgr)
        self._at_most("DecodeN12ToRGBAsync", len(pairs))
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

    def _pairs(self, method: str, filepaths: Any, frame_ids: Any) -> list[tuple[str, int]]:
        pairs = request_pairs(method, filepaths, frame_ids, allow_empty=True)
        self._at_most(method, len(pairs))
        return pairs

    def _at_most(self, method: str, files: int) -> None:
        at_most(method, files, self.num_of_file, counted="files asked for", setting="num_of_file",
                phrase=f"Number of files to decode ({files}) {NUM_OF_FILE} ({self.num_of_file})")

    def clearAllReaders(self) -> None:
        """Drop the waiting request (if any) and free the decoder sessions, threads and caches; the
        next call makes new ones."""
        self._slot.drop()
        self._runner.release()



def _request(method: str, filepaths: Any, frame_ids: Any,
             as_bgr: Any) -> tuple[AsyncRequest, list[tuple[str, int]]]:
    """The checked request of a one-frame-per-file async call, and its ``(absolute path, frame id)``
    pairs."""
    pairs = request_pairs(method, filepaths, frame_ids, allow_empty=True)
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
