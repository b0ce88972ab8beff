"""Whole-video iteration and time-based access on top of the engine's request path.

:func:`frames` reads a file front to back (or a range of it) as small per-GOP requests through
:meth:`Engine.stream <asyncdecode.Engine.stream>`: the decoder sessions keep their place in each GOP, so
every frame is decoded about once, and ``depth`` requests are in flight while the caller works.
:func:`frames_at` maps times to frame ids with :meth:`VideoInfo.frame_id_at
<asyncdecode.VideoInfo.frame_id_at>` (accurate) or :meth:`VideoInfo.keyframe_id_at
<asyncdecode.VideoInfo.keyframe_id_at>` (fast) and decodes them in one request.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

from ._frame import Frame
from ._output import OutputSpec
from .errors import AsyncDecodeError, InvalidRequestError
from .media import VideoInfo

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["frame_at", "frames", "frames_at"]

PathLike = Union[str, "os.PathLike[str]"]

#: Frames asked for per request by :func:`frames` (never across a GOP boundary).
FRAMES_PER_REQUEST = 8
#: GOPs :func:`frames` keeps requests in flight for: the sessions keep their place in each, and two
#: GOPs can decode side by side on two decoder threads while the caller works.
FRAMES_GOPS_AHEAD = 2


def _int_or_none(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidRequestError(f"{name} must be an int or None, not {type(value).__name__} ({value!r})")
    return int(value)


def _requests(path: str, info: VideoInfo, ids: range, per_request: int) -> Iterator[tuple[str, list[int]]]:
    """``ids`` as requests of at most ``per_request`` frames, each inside one GOP."""
    batch: list[int] = []
    gop = -1
    for fid in ids:
        g = info.gop_of(fid)
        if batch and (g != gop or len(batch) == per_request):
            yield path, batch
            batch = []
        gop = g
        batch.append(fid)
    if batch:
        yield path, batch


async def frames(engine: Engine, path: PathLike, *, start: int | None = 0, stop: int | None = None,
                 step: int = 1, output: OutputSpec | None = None,
                 per_request: int = FRAMES_PER_REQUEST) -> AsyncIterator[Frame]:
    """:meth:`Engine.frames`: the frames ``range(num_frames)[start:stop:step]`` of ``path``, in order."""
    start, stop = _int_or_none("start", start), _int_or_none("stop", stop)
    step_ = _int_or_none("step", step)
    if step_ is None or step_ < 1:
        raise InvalidRequestError(f"step must be a positive int, not {step!r}")
    spec = engine._spec(output)
    engine._ensure_open()
    info = await engine.info(path)
    key = os.path.abspath(os.fspath(path))
    ids = range(info.num_frames)[slice(start, stop, step_)]
    gops = info.gop_of(ids[-1]) - info.gop_of(ids[0]) + 1 if ids else 1
    requests_per_gop = math.ceil(math.ceil(len(ids) / gops) / per_request)
    depth = max(4, FRAMES_GOPS_AHEAD * requests_per_gop)
    pending = iter(ids)
    requests = engine.stream(_requests(key, info, ids, per_request), depth=depth, output=spec)
    async with contextlib.aclosing(requests):  # leaving early cancels the requests in flight at once
        async for tensors in requests:
            for tensor in tensors:
                fid = next(pending)
                yield Frame(tensor, fid, info.pts_seconds_of(fid))


def _times(seconds: float | Sequence[float]) -> list[float]:
    if isinstance(seconds, (str, bytes)) or not hasattr(seconds, "__iter__"):
        raise InvalidRequestError(f"seconds must be a sequence of numbers, not {type(seconds).__name__}")
    return list(seconds.tolist() if isinstance(seconds, np.ndarray) else seconds)


async def frames_at(engine: Engine, paths: PathLike | Sequence[PathLike], seconds: Sequence[float], *,
                    accurate: bool = True, output: OutputSpec | None = None) -> list[Frame]:
    """:meth:`Engine.frames_at`: the frame shown at ``seconds[i]`` in ``paths[i]`` for every i."""
    if not isinstance(accurate, bool):
        raise InvalidRequestError(f"accurate must be True or False, not {accurate!r}")
    times = _times(seconds)
    if isinstance(paths, (str, os.PathLike)):
        path_list = [paths] * len(times)
    elif isinstance(paths, Sequence) and not isinstance(paths, bytes):
        path_list = list(paths)
    else:
        raise InvalidRequestError(f"paths must be a path or a sequence of paths, not {type(paths).__name__}")
    if len(path_list) != len(times):
        raise InvalidRequestError(f"paths and seconds must have the same length (got {len(path_list)} paths "
                                  f"and {len(times)} times)")
    spec = engine._spec(output)
    engine._ensure_open()
    infos = {}
    for p in path_list:
        key = os.path.abspath(os.fspath(p))
        if key not in infos:
            infos[key] = await engine.info(key)
    keys = [os.path.abspath(os.fspath(p)) for p in path_list]
    ids = []
    for key, t in zip(keys, times):
        info = infos[key]
        try:
            ids.append(info.frame_id_at(t) if accurate else info.keyframe_id_at(t))
        except AsyncDecodeError as exc:
            exc.device = str(engine.device)
            raise
    tensors = await engine.decode(keys, ids, output=spec)
    return [Frame(tensor, fid, infos[key].pts_seconds_of(fid)) for tensor, fid, key in zip(tensors, ids, keys)]


async def frame_at(engine: Engine, path: PathLike, seconds: float, *, accurate: bool = True,
                   output: OutputSpec | None = None) -> Frame:
    """:meth:`Engine.frame_at`: the frame shown at ``seconds`` in ``path``."""
    if isinstance(seconds, (str, bytes)) or not hasattr(seconds, "__float__"):
        raise InvalidRequestError(f"seconds must be a number, not {type(seconds).__name__} ({seconds!r})")
    (frame,) = await frames_at(engine, [path], [seconds], accurate=accurate, output=output)
    return frame
