"""The plan stage of the request path: a request's arguments checked, its frames grouped by GOP.

In: ``paths`` and ``frame_ids`` as the caller gave them, then the files' indexes (:mod:`._index`).
Out: ``(path, frame_id)`` pairs (absolute paths, int ids; ``InvalidRequestError`` for malformed
arguments), then the wanted frame ids of each ``(path, GOP)``, in request order
(``FrameIndexError`` for an id out of range): one decode job per GOP, however many of its frames
the request asks for. And the line of calls for each GOP (:class:`GopLines`): calls for one GOP
reach the decoder queue in the order of their requests.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch

from .errors import FrameIndexError, InvalidRequestError

__all__ = ["GopLines", "Turn", "by_gop", "check_one_size", "pairs", "settle"]

PathLike = Union[str, "os.PathLike[str]"]


def paths_for(paths: PathLike | Sequence[PathLike], count: int, named: str, noun: str,
              kind: type = Iterable) -> list[PathLike]:
    """A request's ``paths`` for its ``count`` items (``named`` in the request, ``noun`` in the error):
    one path for all of them, or one per item (any ``kind`` of collection but bytes)."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths] * count
    if not isinstance(paths, kind) or isinstance(paths, bytes):
        raise InvalidRequestError(f"paths must be a path or a sequence of paths, not {type(paths).__name__}")
    path_list = list(paths)  # type: ignore[call-overload]
    if len(path_list) != count:
        raise InvalidRequestError(
            f"paths and {named} must have the same length (got {len(path_list)} paths and {count} {noun})")
    return path_list


def pairs(paths: PathLike | Sequence[PathLike], frame_ids: Sequence[int]) -> list[tuple[str, int]]:
    """Validate a request's arguments into ``(path, frame_id)`` pairs."""
    if isinstance(frame_ids, (str, bytes)) or not isinstance(frame_ids, Iterable):
        raise InvalidRequestError(f"frame_ids must be a sequence of ints, not {type(frame_ids).__name__}")
    if isinstance(frame_ids, np.ndarray) or isinstance(frame_ids, torch.Tensor):
        frame_ids = frame_ids.tolist()
    ids = list(frame_ids)
    path_list = paths_for(paths, len(ids), "frame_ids", "frame ids")
    pairs = []
    for p, f in zip(path_list, ids):
        if not isinstance(p, (str, os.PathLike)):
            raise InvalidRequestError(f"a path must be str or os.PathLike, not {type(p).__name__} ({p!r})")
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
            raise InvalidRequestError(f"frame ids must be ints, not {type(f).__name__} ({f!r}) for {p}")
        pairs.append((os.path.abspath(os.fspath(p)), int(f)))  # one key per file, however it is spelled
    return pairs


def by_gop(pairs: list[tuple[str, int]], indexes: Mapping[str, Any], device: str) -> dict[tuple[str, int], set[int]]:
    """The wanted frame ids of each ``(path, GOP)`` the pairs touch, in the order the request first
    touches them; ``FrameIndexError`` for an id outside its video."""
    groups: dict[tuple[str, int], set[int]] = {}
    for path, fid in pairs:
        info = indexes[path].info
        count = info.num_frames
        if not 0 <= fid < count:
            raise FrameIndexError(f"frame {fid} out of range for {path} (0..{count - 1})",
                                  path=path, frame_id=fid, device=device)
        groups.setdefault((path, info.gop_of(fid)), set()).add(fid)
    return groups


def check_one_size(pairs: list[tuple[str, int]], indexes: Mapping[str, Any], device: str) -> None:
    """For ``stack=True`` without a resize: every frame of the request at one size, else
    ``InvalidRequestError`` naming the sizes."""
    sizes = {(indexes[p].info.height, indexes[p].info.width): p for p, _ in pairs}
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h} ({p})" for (h, w), p in sizes.items())
        raise InvalidRequestError(f"stack=True needs every frame at one size, this request has {found}; "
                                  "set OutputSpec.size to resize them to one", device=device)


Turn = tuple[Union[asyncio.Future[None], None], asyncio.Future[None]]
"""A call's place in the line of calls for one GOP: the call before's future, and its own (done once
its job is queued, or it needs none)."""


class GopLines:
    """The line of calls for each ``(path, GOP)`` being decoded: a call for frames further on that got
    its bundle first (from the cache, while an earlier call was still being woken by the read) would
    otherwise start at the keyframe on a thread of its own, and the earlier call decode the same
    frames again after it. Empty (false) when no call holds a place."""

    def __init__(self) -> None:
        self._lines: dict[tuple[str, int], list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._lines)

    def take(self, key: tuple[str, int], loop: asyncio.AbstractEventLoop | None) -> Turn:
        """A place in the line for ``key``: the call before (its future is done once its job is
        queued, or it needs none) and this call's own."""
        assert loop is not None
        line = self._lines.setdefault(key, [])
        before = line[-1] if line else None
        mine: asyncio.Future[None] = loop.create_future()
        line.append(mine)
        return before, mine

    def end(self, key: tuple[str, int], turn: Turn) -> None:
        """Give a place back (its call is over, run or cancelled before it started)."""
        mine = turn[1]
        settle(mine)
        line = self._lines.get(key)
        if line is not None and mine in line:
            line.remove(mine)
            if not line:
                del self._lines[key]


def settle(turn: asyncio.Future[None]) -> None:
    """Mark a call's turn done (the next call for the GOP may queue its job); once is enough."""
    if not turn.done():
        turn.set_result(None)
