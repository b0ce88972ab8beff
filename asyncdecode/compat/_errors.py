"""Errors through the accvlab layer: ``RuntimeError`` and the specific asyncdecode error at once.

accvlab's API reference raises ``RuntimeError`` from every call, and code written for it catches
that (``except RuntimeError``, ``pytest.raises(RuntimeError, match=...)``). asyncdecode raises
specific errors (:class:`~asyncdecode.FrameIndexError`, :class:`~asyncdecode.VideoOpenError`, ...),
which code written for asyncdecode catches. An error leaving this layer is both: an instance of a
class here that derives from the asyncdecode error and from ``RuntimeError`` (same message, same
``path`` / ``frame_id`` / ``device``; the original as its ``__cause__``). The classes carry the names
of the asyncdecode ones and live at module level, so errors pickle (DataLoader workers).

Where code written for accvlab matches a message (``pytest.raises(RuntimeError, match=...)``,
``"..." in str(err)``), the message here carries accvlab's phrase, below, followed by asyncdecode's
detail (the file, the frame, what is allowed).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .. import errors

# accvlab's phrases (its PyNvGopDecoder, PyNvSampleReader and CachedGopDecoder).
SAME_LENGTH = "filepaths and frame_ids must have the same length"
NO_PENDING_TASK = "No pending decode task and buffer is empty"
PARAMETERS_DIFFER = "Request parameters do not match"
GOP_DEMUX_FAILED = "GOP demux failed"
BITSTREAM_FILTER_FAILED = "FFmpeg bitstream filter receive failed"
CACHE_CAPACITY_POSITIVE = "cache_capacity must be positive"
# Where accvlab enforces its size limits, each call says it its own way.
MAX_FILES = "filepaths size is greater than max_num_files"  # GetGOP, GetGOPList, DecodeFromGOP*, GetGOPGroups
MAX_DEMUX_RUNNERS = "required demux runners exceed max_num_files"  # Decode, DecodeN12ToRGB
MAX_FRAMES = "total frames exceed max_num_files"  # DecodeFromGOPList, DecodeFromGOPListRGB
MAX_GROUPS = "Grouped decoder configuration count exceeds max_num_files"  # DecodeFromGOPGroupsRGB
NUM_OF_FILE = "exceeds num_of_file"  # the sample reader and the batch reader
MAX_FRAMES_PER_CALL = "exceeds max_frames_per_decode_call"  # the batch readers
NOT_EMPTY = "must not be empty"  # the batch readers: filepaths, a list of frame ids

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

_DUAL: dict[type[BaseException], type[BaseException]] = {}


def _make_duals() -> None:
    for name, cls in vars(errors).items():
        if not (isinstance(cls, type) and issubclass(cls, errors.AsyncDecodeError)):
            continue
        if issubclass(cls, RuntimeError):  # already both (BackendUnavailableError, EngineClosedError)
            _DUAL[cls] = cls
            continue
        dual = type(name, (cls, RuntimeError), {
            "__module__": __name__,
            "__doc__": f"{cls.__name__} raised through the accvlab layer: also a ``RuntimeError``.",
        })
        globals()[name] = dual
        _DUAL[cls] = dual


_make_duals()


def as_runtime_error(exc: errors.AsyncDecodeError) -> errors.AsyncDecodeError:
    """``exc`` as an instance of its class here (itself where it is a ``RuntimeError`` already)."""
    if isinstance(exc, RuntimeError):
        return exc
    dual = next((_DUAL[k] for k in type(exc).__mro__ if k in _DUAL), None)
    if dual is None:
        return exc
    out = dual.__new__(dual, *exc.args)
    out.args = exc.args
    out.__dict__.update(exc.__dict__)
    return out


def runtime_errors(obj: Any) -> Any:
    """Decorate a function, or every public method of a class (defined in it), so that the asyncdecode
    errors they raise leave as :func:`as_runtime_error` makes them."""
    if isinstance(obj, type):
        for name, value in list(vars(obj).items()):
            if name.startswith("_") and name not in ("__enter__", "__exit__", "__init__"):
                continue
            if isinstance(value, (staticmethod, classmethod)):
                setattr(obj, name, type(value)(_wrap(value.__func__)))
            elif isinstance(value, property):
                setattr(obj, name, property(_wrap(value.fget) if value.fget else None,
                                            _wrap(value.fset) if value.fset else None,
                                            value.fdel, value.__doc__))
            elif inspect.isfunction(value):
                setattr(obj, name, _wrap(value))
        return obj
    return _wrap(obj)


def _wrap(fn: F) -> F:
    if getattr(fn, "_runtime_errors", False):
        return fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.AsyncDecodeError as exc:
            if isinstance(exc, RuntimeError):
                raise
            raise as_runtime_error(exc) from exc

    call._runtime_errors = True  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]
