"""Whole-video iteration and time-based access on top of the engine's request path.

:func:`frames` reads a file front to back (or a range of it) GOP by GOP, several GOPs side by side.
Within a GOP the frames are asked for in small requests, one after the other: each goes on from where
the decoder session stopped for the one before (one decode per frame), and the first frames come out
without waiting for the whole GOP. (Asking for them all at once would have the decoder pool merge the
requests still queued into one job: the same decoding, but every frame then comes at the end and is
copied once more for its request.)

:func:`frames_at` maps times to frame ids with :meth:`VideoInfo.frame_id_at
<asyncdecode.VideoInfo.frame_id_at>` (accurate) or :meth:`VideoInfo.keyframe_id_at
<asyncdecode.VideoInfo.keyframe_id_at>` (fast) and decodes them in one request.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ._frame import Frame
from ._output import OutputSpec
from ._plan import paths_for
from .errors import AsyncDecodeError, InvalidRequestError
from .media import VideoInfo

if TYPE_CHECKING:
    from ._core import EngineLike as Engine

__all__ = ["frame_at", "frames", "frames_at"]

PathLike = Union[str, "os.PathLike[str]"]

#: Frames of a GOP asked for per request by :func:`frames`.
FRAMES_PER_REQUEST = 8
#: GOPs :func:`frames` decodes side by side (on as many decoder threads).
FRAMES_GOPS_AHEAD = 4
#: Requests' frames a GOP may have decoded ahead of the caller.
FRAMES_PARTS_AHEAD = 2


def _int_or_none(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidRequestError(f"{name} must be an int or None, not {type(value).__name__} ({value!r})")
    return int(value)


def _by_gop(info: VideoInfo, ids: range) -> list[list[int]]:
    """``ids`` grouped by GOP, in order."""
    groups: list[list[int]] = []
    gop = -1
    for fid in ids:
        g = info.gop_of(fid)
        if g != gop:
            groups.append([])
            gop = g
        groups[-1].append(fid)
    return groups


async def _read_gop(engine: Engine, path: str, ids: list[int], spec: OutputSpec,
                    out: asyncio.Queue[list[tuple[int, Any]] | BaseException | None]) -> None:
    """Decode one GOP's ``ids`` request after request into ``out`` (``None`` at the end, or the error)."""
    try:
        for lo in range(0, len(ids), FRAMES_PER_REQUEST):
            part = ids[lo : lo + FRAMES_PER_REQUEST]
            await out.put(list(zip(part, await engine.decode(path, part, output=spec))))
    except Exception as exc:  # raised to the caller at this GOP's place
        await out.put(exc)
        return
    await out.put(None)


async def frames(engine: Engine, path: PathLike, *, start: int | None = 0, stop: int | None = None,
                 step: int = 1, output: OutputSpec | None = None) -> AsyncIterator[Frame]:
    """:meth:`Engine.frames`: the frames ``range(num_frames)[start:stop:step]`` of ``path``, in order."""
    start, stop = _int_or_none("start", start), _int_or_none("stop", stop)
    step_ = _int_or_none("step", step)
    if step_ is None or step_ < 1:
        raise InvalidRequestError(f"step must be a positive int, not {step!r}")
    spec = engine.internal.output_spec(output)
    loop = engine.internal.open()
    info = await engine.info(path)
    key = os.path.abspath(os.fspath(path))
    groups = iter(_by_gop(info, range(info.num_frames)[slice(start, stop, step_)]))
    reading: deque[tuple[asyncio.Task[None], asyncio.Queue[Any]]] = deque()

    def read_next() -> None:
        ids = next(groups, None)
        if ids is not None:
            queue: asyncio.Queue[Any] = asyncio.Queue(FRAMES_PARTS_AHEAD)
            reading.append((loop.create_task(_read_gop(engine, key, ids, spec, queue)), queue))

    for _ in range(FRAMES_GOPS_AHEAD):
        read_next()
    try:
        while reading:
            item = await reading[0][1].get()
            if item is None:
                reading.popleft()
                read_next()
            elif isinstance(item, BaseException):
                raise item
            else:
                for fid, tensor in item:
                    yield Frame(tensor, fid, info.pts_seconds_of(fid))
    finally:  # leaving early (or an error) cancels the GOPs being read
        for task, _ in reading:
            task.cancel()
        if reading:
            await asyncio.gather(*(task for task, _ in reading), return_exceptions=True)


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
    path_list = paths_for(paths, len(times), "seconds", "times", kind=Sequence)
    spec = engine.internal.output_spec(output)
    engine.internal.open()
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
