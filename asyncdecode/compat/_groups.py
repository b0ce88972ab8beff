"""The arguments of accvlab's grouped GOP calls, checked: the requests of ``GetGOPGroups`` and the
groups ``DecodeFromGOPGroupsRGB`` takes back.

A request names one video and frames of it, in any order, repeats included. ``GetGOPGroups`` answers
with one group per GOP the frames fall in: the GOP data, the distinct frames of that GOP in
ascending order, and for each the positions in the request where it was asked for, so that a caller
can put every decoded frame back where it belongs without decoding it twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidRequestError

__all__ = ["GROUP_KEYS", "GroupLayout", "SourceRequest", "group_layouts", "source_requests"]

#: The keys of a group, in the order accvlab checks them.
GROUP_KEYS = ("gop_data", "source_index", "source_name", "frame_ids", "frame_positions", "first_frame_id", "gop_len")


@dataclass(frozen=True)
class SourceRequest:
    """One request of ``GetGOPGroups``."""

    name: str
    """The path as given (``source_name`` of its groups)."""
    path: str
    """The absolute path."""
    frame_ids: tuple[int, ...]
    """The distinct frames asked for, ascending."""
    positions: Mapping[int, tuple[int, ...]]
    """Where in the request each frame was asked for."""


@dataclass(frozen=True)
class GroupLayout:
    """One group given to ``DecodeFromGOPGroupsRGB``: everything but its data, checked."""

    data: Any
    """``gop_data``, as given."""
    source_index: int
    source_name: str
    frame_ids: tuple[int, ...]
    frame_positions: tuple[tuple[int, ...], ...]
    first_frame_id: int
    gop_len: int

    def header(self) -> dict[str, Any]:
        """The group's fields other than its data, as new lists (what the decoded group repeats)."""
        return {"source_index": self.source_index, "source_name": self.source_name,
                "frame_ids": list(self.frame_ids), "frame_positions": [list(p) for p in self.frame_positions],
                "first_frame_id": self.first_frame_id, "gop_len": self.gop_len}


def source_requests(method: str, requests: Any) -> list[SourceRequest]:
    """The checked requests: a list of dicts, each with ``filepath`` and ``frame_ids``.

    Raises:
        InvalidRequestError: not a list of such dicts, a path that is not a path, frame ids that are
            not ints or are negative (accvlab: "frame IDs must be non-negative").
    """
    items = _sequence(method, "requests", requests, "dicts with 'filepath' and 'frame_ids'")
    out = []
    for i, item in enumerate(items):
        where = f"{method}: requests[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidRequestError(f"{where} must be a dict with 'filepath' and 'frame_ids', not "
                                      f"{type(item).__name__}")
        for key in ("filepath", "frame_ids"):
            if key not in item:
                raise InvalidRequestError(f"{where} is missing {key!r} (a request is a dict with 'filepath' and "
                                          "'frame_ids')")
        name = item["filepath"]
        if not isinstance(name, (str, os.PathLike)):
            raise InvalidRequestError(f"{where}['filepath'] must be str or os.PathLike, not {type(name).__name__}")
        name = os.fspath(name)
        ids = _ints(f"{where}['frame_ids']", item["frame_ids"], path=name)
        positions: dict[int, list[int]] = {}
        for k, fid in enumerate(ids):
            if fid < 0:
                raise InvalidRequestError(f"{where}: frame {fid} of {name}: frame IDs must be non-negative",
                                          path=name, frame_id=fid)
            positions.setdefault(fid, []).append(k)
        out.append(SourceRequest(name=name, path=os.path.abspath(name), frame_ids=tuple(sorted(positions)),
                                 positions={f: tuple(p) for f, p in positions.items()}))
    return out


def group_layouts(method: str, groups: Any) -> list[GroupLayout]:
    """The checked groups (as ``GetGOPGroups`` makes them; the data is checked when it is parsed).

    Raises:
        InvalidRequestError: not a list of dicts, a missing key (accvlab: "group is missing 'KEY'"), a
            value of the wrong kind, a negative ``source_index``, ``frame_positions`` that do not give
            each frame id a non-empty list of non-negative positions, a group without frame ids.
    """
    items = _sequence(method, "groups", groups, "group dicts (as GetGOPGroups returns them)")
    out = []
    for i, group in enumerate(items):
        where = f"{method}: groups[{i}]"
        if not isinstance(group, Mapping):
            raise InvalidRequestError(f"{where} must be a dict (as GetGOPGroups returns them), not "
                                      f"{type(group).__name__}")
        for key in GROUP_KEYS:
            if key not in group:
                raise InvalidRequestError(f"{where}: group is missing {key!r} (a group has {', '.join(GROUP_KEYS)})")
        name = group["source_name"]
        if not isinstance(name, (str, os.PathLike)):
            raise InvalidRequestError(f"{where}['source_name'] must be str or os.PathLike, not "
                                      f"{type(name).__name__}")
        name = os.fspath(name)
        index = _int(f"{where}['source_index']", group["source_index"])
        if index < 0:
            raise InvalidRequestError(f"{where}: group source_index must be non-negative, not {index}")
        ids = _ints(f"{where}['frame_ids']", group["frame_ids"], path=name)
        if not ids:
            raise InvalidRequestError(f"{where}: frame_ids is empty; a group holds at least one frame to decode",
                                      path=name)
        positions = [_ints(f"{where}['frame_positions'][{k}]", p, path=name) for k, p in
                     enumerate(_sequence(where, "frame_positions", group["frame_positions"], "lists of positions"))]
        if len(positions) != len(ids):
            raise InvalidRequestError(f"{where}: {len(positions)} frame_positions for {len(ids)} frame_ids; group "
                                      "frame_positions must have one entry per frame_id", path=name)
        if any(not p or min(p) < 0 for p in positions):
            raise InvalidRequestError(f"{where}: group frame_positions entries must be non-empty and non-negative "
                                      f"(got {[list(p) for p in positions]})", path=name)
        out.append(GroupLayout(data=group["gop_data"], source_index=index, source_name=name, frame_ids=tuple(ids),
                               frame_positions=tuple(tuple(p) for p in positions),
                               first_frame_id=_int(f"{where}['first_frame_id']", group["first_frame_id"]),
                               gop_len=_int(f"{where}['gop_len']", group["gop_len"])))
    return out


def _sequence(method: str, name: str, value: Any, holds: str) -> list[Any]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidRequestError(f"{method}: {name} must be a list of {holds}, not {type(value).__name__}")
    return list(value)


def _int(where: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidRequestError(f"{where} must be an int, not {type(value).__name__} ({value!r})")
    return int(value)


def _ints(where: str, value: Any, *, path: str) -> list[int]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidRequestError(f"{where} must be a list of ints, not {type(value).__name__}", path=path)
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise InvalidRequestError(f"{where} must hold ints, not {type(v).__name__} ({v!r})", path=path)
    return [int(v) for v in value]
