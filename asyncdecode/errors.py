"""Errors raised by asyncdecode.

Every error the engine raises for a request derives from :class:`AsyncDecodeError` and carries the
file, the frame id and the device it concerns (``None`` where it does not apply). Misuse errors also
derive from the matching built-in exception, so ``except IndexError`` keeps working::

    AsyncDecodeError
     ├── VideoOpenError            (OSError)     the file is missing, empty, not a media file, or has no video
     ├── UnsupportedStreamError    (ValueError)  a codec, pixel format or profile the backend cannot decode
     ├── FrameIndexError           (IndexError)  a frame id outside 0..num_frames-1
     ├── CorruptDataError          (ValueError)  damaged packets, a damaged GOP bundle, a file changed under us
     │    ├── StaleStoreError                     a GOP store's source video changed after the store was built
     │    └── TruncatedStreamError                an ingested stream ended (or its source failed) inside a packet
     ├── InvalidRequestError       (ValueError)  malformed arguments (mismatched list lengths, bad OutputSpec)
     ├── DeviceMemoryError         (MemoryError) the device (GPU or host) ran out of memory for a request
     ├── BackendUnavailableError   (RuntimeError) the requested device or decoder library is not usable here
     └── EngineClosedError         (RuntimeError) the engine was used after ``aclose()``

A failing request fails alone: the error is set on that request's future and every other request, and
the engine, go on.
"""

from __future__ import annotations

__all__ = [
    "AsyncDecodeError",
    "BackendUnavailableError",
    "CorruptDataError",
    "DeviceMemoryError",
    "EngineClosedError",
    "FrameIndexError",
    "InvalidRequestError",
    "StaleStoreError",
    "TruncatedStreamError",
    "UnsupportedStreamError",
    "VideoOpenError",
]


class AsyncDecodeError(Exception):
    """Root of every asyncdecode error.

    Attributes:
        path: The video file or GOP bundle concerned, if any.
        frame_id: The frame id concerned, if any.
        device: The device of the engine that raised it, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        frame_id: int | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.frame_id = frame_id
        self.device = device

    def __reduce__(self):  # keep the context fields across pickling (DataLoader workers, processes)
        return (_rebuild, (type(self), self.message, self.path, self.frame_id, self.device))


def _rebuild(cls, message, path, frame_id, device):
    return cls(message, path=path, frame_id=frame_id, device=device)


class VideoOpenError(AsyncDecodeError, OSError):
    """The file could not be opened as a video: missing, empty, unreadable, not media, or no video stream."""


class UnsupportedStreamError(AsyncDecodeError, ValueError):
    """The video stream uses a codec, pixel format or profile that the backend cannot decode."""


class FrameIndexError(AsyncDecodeError, IndexError):
    """A frame id is outside ``0..num_frames-1`` of its video."""


class CorruptDataError(AsyncDecodeError, ValueError):
    """Damaged data: undecodable packets, a bundle that fails its checksum, a file that changed on disk."""


class StaleStoreError(CorruptDataError):
    """A GOP store no longer matches its source: the video's size or mtime differ from the store's index.

    The stored bundles were cut from an earlier version of the file; build the store again.
    """


class TruncatedStreamError(CorruptDataError):
    """An ingested stream stopped inside a packet, or its source failed before the end.

    Raised by :meth:`Engine.ingest <asyncdecode.Engine.ingest>` after every frame that could be decoded
    was delivered; ``frame_id`` is the index of the first frame that was not. The source's own
    exception, if any, is the ``__cause__``.
    """


class InvalidRequestError(AsyncDecodeError, ValueError):
    """The call itself is malformed: mismatched list lengths, a wrong type, an invalid output spec."""


class DeviceMemoryError(AsyncDecodeError, MemoryError):
    """The device ran out of memory while decoding a request (its outputs, a decoder, a frame).

    The request fails; the engine goes on. Asking again may succeed once memory is free: fewer
    requests in flight, a smaller ``frame_cache_bytes`` or output size. The device's own error
    (``torch.OutOfMemoryError``, a CUDA error, ``MemoryError``) is the ``__cause__``.
    """


class BackendUnavailableError(AsyncDecodeError, RuntimeError):
    """The requested device or decoding library cannot be used on this machine."""


class EngineClosedError(AsyncDecodeError, RuntimeError):
    """The engine was used after it was closed."""
