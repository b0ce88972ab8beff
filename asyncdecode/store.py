"""The GOP store: every video of a folder demuxed once, offline, into GOP bundle files.

Demuxing (packet scan, seeks, the Annex B filter) is most of the host CPU a random frame costs. A
:class:`GopStore` does it once per video, ahead of time, and keeps the result on disk: at run time a
GOP is one file read and a CRC check, no container is opened. Layout, for every video
``VIDEO_DIR/<rel>`` (``<rel>`` may hold folders)::

    GOP_DIR/<rel>/
        gop.{first}.{count}.bin   one per GOP: exactly GopBundle.to_bytes() (see asyncdecode.gop)
        .gop_index.json           format version, source (<rel>, size, mtime_ns), the full VideoInfo,
                                  the GOP table (first frame id, frame count, file name, bytes)
        .gop_build.json           the source (size, mtime_ns) the bundles in the folder were cut from

``first`` is the frame id of the GOP's first frame, ``count`` the number of frames it shows.

Writing is crash-safe and resumable. Every file is written to a temporary name in its folder,
flushed, fsynced and renamed over its final name, so a reader sees either no file or a whole one.
The index is written last: a folder whose index exists and records the source's current size and
mtime is complete (and skipped by the next build). An interrupted build leaves no index; the next
build keeps the bundles already written (valid CRC, expected name) when ``.gop_build.json`` says
they come from the same version of the source, writes the rest, and removes leftover temporary
files. A source that changed is rebuilt from scratch.

One build runs on a store at a time (a lock file in ``GOP_DIR`` enforces it where ``fcntl`` exists);
readers may read while a build runs. Worker processes end with the build: one that is killed leaves none
writing on behind its back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Union

from . import _faults, _pool
from ._files import ProgressLine, folder_lock, fsync_dir, read_json, write_atomic
from .errors import AsyncDecodeError, CorruptDataError, InvalidRequestError, StaleStoreError, VideoOpenError
from .gop import GopBundle, GopReader
from .media import FileStamp, VideoInfo, build_index, file_stamp

__all__ = [
    "BUILD_MARKER_NAME",
    "BuildSummary",
    "GopStore",
    "INDEX_NAME",
    "StoredGop",
    "VIDEO_EXTENSIONS",
    "VerifySummary",
    "bundle_name",
    "drop_page_cache",
    "find_videos",
]

log = logging.getLogger("asyncdecode")

PathLike = Union[str, "os.PathLike[str]"]

#: File name extensions (lower case) that :meth:`GopStore.build` takes for videos.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".hevc", ".h264"})
#: Per-video index file, written last.
INDEX_NAME = ".gop_index.json"
#: Per-video record of the source version the folder's bundles were cut from (what makes resuming safe).
BUILD_MARKER_NAME = ".gop_build.json"
#: Version of the index and marker layout; a reader refuses other versions.
FORMAT_VERSION = 1
_FORMAT = "asyncdecode.gop_store"
_LOCK_NAME = ".gop_store.lock"
_BUNDLE_RE = re.compile(r"^gop\.(\d+)\.(\d+)\.bin$")
_TMP_RE = re.compile(r"^\..+\.tmp$")


def bundle_name(first_frame_id: int, frame_count: int) -> str:
    """File name of the bundle of the GOP that shows ``frame_count`` frames from ``first_frame_id``."""
    return f"gop.{first_frame_id}.{frame_count}.bin"


# -- values -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredGop:
    """One row of a stored video's GOP table."""

    first_frame_id: int
    """Frame id of the GOP's first frame."""
    frame_count: int
    """Number of frames the GOP shows."""
    file: str
    """Name of the bundle file in the video's folder: ``gop.{first}.{count}.bin``."""
    nbytes: int
    """Size of the bundle file in bytes."""

    @property
    def frame_ids(self) -> range:
        """Frame ids the GOP shows."""
        return range(self.first_frame_id, self.first_frame_id + self.frame_count)


@dataclass(frozen=True)
class BuildSummary:
    """What one :meth:`GopStore.build` did."""

    videos: int
    """Videos found under the video root."""
    built: int
    """Videos (re)built by this run, completely."""
    skipped: int
    """Videos already complete and up to date, left as they were."""
    frames: int
    """Frames of the videos built by this run."""
    bundles_written: int
    """Bundle files written by this run."""
    bundles_kept: int
    """Bundle files of an interrupted build found valid and kept."""
    bytes_written: int
    """Bytes of bundle files written by this run."""
    seconds: float
    """Wall time of the run."""
    errors: Mapping[str, str]
    """Video (relative path) -> why it could not be stored; those videos have no index."""

    @property
    def ok(self) -> bool:
        """Whether every video is now in the store."""
        return not self.errors

    @property
    def gb_per_s(self) -> float:
        """Bundle bytes written per second, in GB (1e9 bytes)."""
        return self.bytes_written / 1e9 / self.seconds if self.seconds > 0 else 0.0

    def __repr__(self) -> str:
        return (
            f"BuildSummary({self.built} built, {self.skipped} skipped, {len(self.errors)} failed of "
            f"{self.videos} videos; {self.frames} frames, {self.bytes_written / 1e9:.3f} GB in {self.seconds:.1f} s)"
        )


@dataclass(frozen=True)
class VerifySummary:
    """What one :meth:`GopStore.verify` found."""

    videos: int
    """Video folders checked (with or without an index)."""
    bundles: int
    """Bundle files the indexes list (each read and CRC-checked unless missing)."""
    bytes: int
    """Bytes read and checked."""
    seconds: float
    """Wall time of the check."""
    bad: Mapping[str, str]
    """File (path) -> what is wrong with it: missing, truncated, checksum mismatch, unreadable index ..."""

    @property
    def ok(self) -> bool:
        """Whether every index and every bundle it lists is intact."""
        return not self.bad

    def __repr__(self) -> str:
        return (
            f"VerifySummary({self.bundles} bundles of {self.videos} videos, {self.bytes / 1e9:.3f} GB, "
            f"{len(self.bad)} bad)"
        )


@dataclass(frozen=True, eq=False)
class _StoredVideo:
    """A parsed ``.gop_index.json``."""

    rel: str
    folder: Path
    info: VideoInfo
    stamp: FileStamp
    gops: tuple[StoredGop, ...]


@dataclass(frozen=True)
class _VideoResult:
    """What a build worker reports for one video (crosses a process boundary: plain fields only)."""

    rel: str
    frames: int = 0
    written: int = 0
    kept: int = 0
    bytes_written: int = 0
    error: str | None = None


# -- the store ----------------------------------------------------------------------------------------


class GopStore:
    """A folder of GOP bundles cut from the videos of another folder (see the module docstring).

    Example:
        >>> store = GopStore("/data/gops", video_root="/data/videos")
        >>> summary = await store.build()                     # offline, once
        >>> info = store.info("clip0/cam0.mp4")               # no video opened
        >>> bundle = store.read_bundle("clip0/cam0.mp4", info.gop_of(17))

    Reading is synchronous, cheap and thread-safe: parsed indexes are kept in a bounded LRU. Video
    paths are given relative to ``video_root``, or absolute (then they must lie under it).

    Args:
        root: The store's folder (``GOP_DIR``); made by :meth:`build` if missing.
        video_root: The folder the videos live under (``VIDEO_DIR``). Needed to build, to detect
            changed sources (:meth:`check_source`) and to take absolute video paths; a store opened
            without it reads by relative path only.
        index_cache_size: Parsed indexes kept in memory, at most.
    """

    def __init__(self, root: PathLike, video_root: PathLike | None = None, *, index_cache_size: int = 4096) -> None:
        if index_cache_size < 1:
            raise InvalidRequestError(f"index_cache_size must be >= 1, not {index_cache_size}")
        self.root = Path(os.path.abspath(root))
        self.video_root = Path(os.path.abspath(video_root)) if video_root is not None else None
        self.index_cache_size = index_cache_size
        self._indexes: OrderedDict[str, _StoredVideo] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        root = f", video_root={str(self.video_root)!r}" if self.video_root is not None else ""
        return f"GopStore({str(self.root)!r}{root})"

    # A store travels to DataLoader workers and build processes as its settings only.
    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "video_root": self.video_root, "index_cache_size": self.index_cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._indexes = OrderedDict()
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------------------------------

    def info(self, video_path: PathLike) -> VideoInfo:
        """The :class:`VideoInfo` of a stored video, from its index (no video is opened).

        ``info.path`` is ``video_path`` as given, as with :func:`~asyncdecode.probe`.

        Raises:
            VideoOpenError: the store has no (complete) copy of the video.
            CorruptDataError: its index is unreadable.
            InvalidRequestError: an absolute path outside the video root.
        """
        return dataclasses.replace(self._video(video_path).info, path=os.fspath(video_path))

    def gop_table(self, video_path: PathLike) -> tuple[StoredGop, ...]:
        """The stored GOPs of a video, in order (GOP ``g`` is ``gop_table(v)[g]``)."""
        return self._video(video_path).gops

    def bundle_path(self, video_path: PathLike, gop: int) -> Path:
        """Path of the bundle file of GOP ``gop`` (an index into :meth:`gop_table`) of a video."""
        video = self._video(video_path)
        return video.folder / self._gop(video, gop).file

    def read_bundle(self, video_path: PathLike, gop: int) -> GopBundle:
        """Read and check the bundle of GOP ``gop`` of a video (``VideoInfo.gop_of(frame_id)`` gives ``gop``).

        The whole file is read and its CRC checked. The source video is not looked at: call
        :meth:`check_source` once per video where it may have changed.

        Raises:
            CorruptDataError: the bundle file is missing, unreadable, truncated, fails its checksum
                or holds another GOP; the message names the file.
            VideoOpenError: the store has no (complete) copy of the video.
            InvalidRequestError: ``gop`` is out of range.
        """
        video = self._video(video_path)
        return _load_bundle(video, self._gop(video, gop))

    def stamp(self, video_path: PathLike) -> FileStamp:
        """Size and mtime of the source video when it was stored (from the index): which version it holds."""
        return self._video(video_path).stamp

    def check_source(self, video_path: PathLike) -> None:
        """Check that the source video is the one the store was built from (same size and mtime).

        Raises:
            StaleStoreError: the source changed after it was stored.
            VideoOpenError: the source is gone, or the store has no copy of it.
            InvalidRequestError: the store was opened without a video root.
        """
        video = self._video(video_path)
        root = self._require_video_root("check a source video")
        source = str(root / video.rel)
        now = file_stamp(source)
        if now != video.stamp:
            raise StaleStoreError(
                f"{source} changed after it was stored (size {video.stamp.size} -> {now.size} bytes, "
                f"mtime_ns {video.stamp.mtime_ns} -> {now.mtime_ns}); build the store {self.root} again",
                path=source,
            )

    def videos(self) -> list[str]:
        """Relative paths of the videos the store holds (those with an index), sorted."""
        found = []
        for dirpath, _, filenames in os.walk(self.root):
            if INDEX_NAME in filenames:
                found.append(Path(dirpath).relative_to(self.root).as_posix())
        return sorted(found)

    def _rel(self, video_path: PathLike) -> str:
        """The store key of a video: its path relative to the video root, with ``/`` separators."""
        given = os.fspath(video_path)
        if os.path.isabs(given):
            if self.video_root is None:
                raise InvalidRequestError(
                    f"{given}: this store was opened without a video root; give the path relative to it",
                    path=given)
            rel = os.path.relpath(given, self.video_root)
            if _outside(rel):  # maybe the same place through a symbolic link
                rel = os.path.relpath(os.path.realpath(given), os.path.realpath(self.video_root))
        else:  # a path from the working directory when one is there under the video root, else from the root
            rel = os.path.normpath(given)
            if self.video_root is not None and os.path.exists(given):
                from_cwd = os.path.relpath(os.path.abspath(given), self.video_root)
                if not _outside(from_cwd):
                    rel = from_cwd
        if rel == os.curdir or _outside(rel):
            raise InvalidRequestError(f"{given} is not under the store's video root {self.video_root}", path=given)
        return Path(rel).as_posix()

    def _video(self, video_path: PathLike) -> _StoredVideo:
        rel = self._rel(video_path)
        with self._lock:
            video = self._indexes.get(rel)
            if video is not None:
                self._indexes.move_to_end(rel)
                return video
        video = _read_index(self.root, rel)  # outside the lock: readers of other videos go on
        with self._lock:
            self._indexes[rel] = video
            self._indexes.move_to_end(rel)
            while len(self._indexes) > self.index_cache_size:
                self._indexes.popitem(last=False)
        return video

    def _forget(self, rel: str) -> None:
        with self._lock:
            self._indexes.pop(rel, None)

    @staticmethod
    def _gop(video: _StoredVideo, gop: int) -> StoredGop:
        if isinstance(gop, bool) or not isinstance(gop, int) or not 0 <= gop < len(video.gops):
            raise InvalidRequestError(f"GOP {gop!r} out of range for {video.rel} (0..{len(video.gops) - 1})",
                                      path=video.rel)
        return video.gops[gop]

    def _require_video_root(self, what: str) -> Path:
        if self.video_root is None:
            raise InvalidRequestError(f"cannot {what}: {self!r} was opened without a video root")
        return self.video_root

    # -- building -----------------------------------------------------------------------------------

    async def build(
        self,
        *,
        progress: bool = True,
        workers: int | None = None,
        executor: Literal["process", "thread"] = "process",
    ) -> BuildSummary:
        """Store every video under the video root that is not already stored and up to date.

        Videos are the files with an extension in :data:`VIDEO_EXTENSIONS` (hidden files are
        skipped). Each worker handles whole videos; a video that cannot be opened or demuxed is
        logged and reported in the summary, and the others go on. Safe to interrupt and run again.

        Worker processes start with the ``spawn`` method (nothing of this process's threads, event
        loop or open decoders is inherited), so a script that calls this must guard its entry point
        with ``if __name__ == "__main__":``.

        Args:
            progress: Keep one status line up to date on stderr.
            workers: Videos demuxed at once; default ``min(os.cpu_count(), 8)``.
            executor: ``"process"`` (default: PyAV demuxing holds the GIL most of the time) or
                ``"thread"`` (no process start-up; for small jobs, or where processes cannot be
                started, such as in a daemonic DataLoader worker).

        Raises:
            InvalidRequestError: no video root, bad ``workers``/``executor``, or another build holds
                the store.
            VideoOpenError: the video root is not a folder.
        """
        video_root = self._require_video_root("build")
        if executor not in ("process", "thread"):
            raise InvalidRequestError(f"executor must be 'process' or 'thread', not {executor!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InvalidRequestError(f"workers must be a positive integer, not {workers!r}")
        if not video_root.is_dir():
            raise VideoOpenError(f"video root {video_root} is not a folder", path=str(video_root))
        t0 = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.root, _LOCK_NAME, f"another build is running on the GOP store {self.root}"):
            videos = await asyncio.to_thread(find_videos, video_root, exclude=self.root)
            todo = await asyncio.to_thread(self._out_of_date, videos)
            tally = _Tally(t0, videos=len(videos), skipped=len(videos) - len(todo))
            line = ProgressLine(sys.stderr if progress else None)
            try:
                line.show(tally.line(), force=True)
                if todo:
                    n = min(workers or min(os.cpu_count() or 1, 8), len(todo))
                    await self._run_builds(video_root, todo, tally, line, workers=n, executor=executor)
                line.show(tally.line(), force=True)
            finally:
                line.close()
        return tally.summary()

    async def _run_builds(self, video_root: Path, todo: list[str], tally: _Tally, line: ProgressLine, *,
                          workers: int, executor: Literal["process", "thread"]) -> None:
        """Store the videos ``todo`` in a pool of ``workers``, one video per task, counting into ``tally``."""
        jobs = [(str(video_root / rel), rel, str(self.root / rel)) for rel in todo]
        # Workers busy with a video when the build stops finish it (each file they write is whole either way).
        async with contextlib.aclosing(_pool.completed(_build_job, jobs, workers=workers, executor=executor)) as runs:
            async for batch in runs:
                for (_, rel, _), result in batch:
                    if isinstance(result, concurrent.futures.BrokenExecutor):
                        result = _VideoResult(rel, error=f"the worker died while storing it ({result})")
                    elif isinstance(result, BaseException):
                        raise result
                    self._forget(rel)
                    if result.error is not None:
                        log.warning("GOP store: %s not stored: %s", rel, result.error)
                    tally.add(result)
                line.show(tally.line())

    def _out_of_date(self, videos: list[str]) -> list[str]:
        """The videos that have no index, or one that records another size or mtime than the source's."""
        assert self.video_root is not None
        todo = []
        for rel in videos:
            try:
                current = _read_index(self.root, rel).stamp == file_stamp(str(self.video_root / rel))
            except AsyncDecodeError:
                current = False
            if not current:
                todo.append(rel)
        return todo

    # -- checking -----------------------------------------------------------------------------------

    def verify(self, *, progress: bool = False) -> VerifySummary:
        """Read every bundle every index lists and check it (CRC, size, the GOP it holds).

        Folders holding bundles but no index (a build that did not finish) are reported too. The
        sources are not looked at (see :meth:`check_source`).

        Raises:
            InvalidRequestError: the store's folder does not exist.
        """
        if not self.root.is_dir():
            raise InvalidRequestError(f"there is no GOP store at {self.root}", path=str(self.root))
        t0 = time.perf_counter()
        line = ProgressLine(sys.stderr if progress else None)
        bad: dict[str, str] = {}
        folders = bundles = nbytes = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            folder = Path(dirpath)
            if INDEX_NAME not in filenames:
                if any(_BUNDLE_RE.match(f) for f in filenames):
                    folders += 1
                    bad[str(folder)] = f"bundles but no {INDEX_NAME}: its build did not finish; run the build again"
                continue
            folders += 1
            rel = folder.relative_to(self.root).as_posix()
            try:
                video = _read_index(self.root, rel)  # what is on disk now, not a cached index
            except AsyncDecodeError as exc:
                bad[str(folder / INDEX_NAME)] = str(exc)
                continue
            for entry in video.gops:
                bundles += 1
                try:
                    nbytes += _load_bundle(video, entry).nbytes
                except AsyncDecodeError as exc:
                    bad[str(folder / entry.file)] = str(exc)
                line.show(f"store verify: {folders} videos, {bundles} bundles, {nbytes / 1e9:.2f} GB checked, "
                          f"{len(bad)} bad")
        line.close()
        return VerifySummary(videos=folders, bundles=bundles, bytes=nbytes, seconds=time.perf_counter() - t0,
                             bad=bad)


# -- finding videos -----------------------------------------------------------------------------------


def find_videos(video_root: PathLike, *, exclude: PathLike | None = None) -> list[str]:
    """Relative paths (``/``-separated, sorted) of the video files under ``video_root``.

    A video file has an extension in :data:`VIDEO_EXTENSIONS` (any case) and a name that does not
    start with ``.``. Folders are not followed through symbolic links (no loops); ``exclude``
    (a GOP store inside the video root) is not entered.
    """
    root = Path(video_root)
    skip = os.path.realpath(exclude) if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")
                       and (skip is None or os.path.realpath(os.path.join(dirpath, d)) != skip)]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


# -- the index file -----------------------------------------------------------------------------------


def _info_to_json(info: VideoInfo) -> dict[str, Any]:
    """Every field of ``info`` as JSON values: Fractions as ``[num, den]``, tuples as lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(VideoInfo):
        value = getattr(info, f.name)
        if isinstance(value, Fraction):
            value = [value.numerator, value.denominator]
        elif isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, (str, int, float)):
            raise TypeError(f"VideoInfo.{f.name} ({type(value).__name__}) has no JSON form in the GOP store")
        out[f.name] = value
    return out


def _info_from_json(obj: Mapping[str, Any]) -> VideoInfo:
    """The inverse of :func:`_info_to_json`, driven by the field types of :class:`VideoInfo`.

    Raises:
        ValueError: a field is missing, unknown, or of the wrong type.
    """
    hints = typing.get_type_hints(VideoInfo)
    names = [f.name for f in dataclasses.fields(VideoInfo)]
    if set(obj) != set(names):
        raise ValueError(f"VideoInfo fields differ: missing {sorted(set(names) - set(obj))}, "
                         f"unknown {sorted(set(obj) - set(names))}")
    kwargs: dict[str, Any] = {}
    for name in names:
        value, kind = obj[name], hints[name]
        if kind is Fraction:
            num, den = value
            value = Fraction(int(num), int(den))
        elif typing.get_origin(kind) is tuple:
            value = tuple(value)
        elif kind is float:
            value = float(value)
        elif not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"VideoInfo.{name} should be {kind.__name__}, not {type(value).__name__}")
        kwargs[name] = value
    return VideoInfo(**kwargs)


def _index_json(rel: str, stamp: FileStamp, info: VideoInfo, gops: Iterable[StoredGop]) -> bytes:
    doc = {
        "format": _FORMAT, "version": FORMAT_VERSION, "source": rel,
        "source_size": stamp.size, "source_mtime_ns": stamp.mtime_ns,
        "info": _info_to_json(info),
        "gops": [{"first_frame_id": g.first_frame_id, "frame_count": g.frame_count, "file": g.file,
                  "bytes": g.nbytes} for g in gops],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _read_index(root: Path, rel: str) -> _StoredVideo:
    """Parse the index of video ``rel`` in the store at ``root``.

    Raises:
        VideoOpenError: there is no index (the video was never stored, or its build did not finish).
        CorruptDataError: the index is unreadable, of another format version, or inconsistent.
    """
    folder = root / rel
    path = folder / INDEX_NAME
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise VideoOpenError(
            f"the GOP store {root} has no video {rel} (no {path}; run `asyncdecode store build` to add it)",
            path=rel) from exc
    except OSError as exc:
        raise CorruptDataError(f"cannot read GOP store index {path}: {exc.strerror or exc}", path=str(path)) from exc
    try:
        doc = json.loads(raw)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"not a GOP store index (format {doc.get('format')!r})")
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {doc.get('version')!r} is not supported (this reader: "
                             f"{FORMAT_VERSION}); build the store again")
        info = _info_from_json(doc["info"])
        gops = tuple(StoredGop(int(g["first_frame_id"]), int(g["frame_count"]), str(g["file"]), int(g["bytes"]))
                     for g in doc["gops"])
        stamp = FileStamp(int(doc["source_size"]), int(doc["source_mtime_ns"]))
        if tuple(g.first_frame_id for g in gops) != info.keyframes or \
                tuple(g.frame_count for g in gops) != info.gop_lengths:
            raise ValueError("its GOP table does not match the video's keyframes")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptDataError(f"GOP store index {path} is damaged: {exc}", path=str(path)) from exc
    return _StoredVideo(rel=rel, folder=folder, info=info, stamp=stamp, gops=gops)


def _load_bundle(video: _StoredVideo, entry: StoredGop) -> GopBundle:
    """Read and check one bundle file of a stored video (see :meth:`GopStore.read_bundle`)."""
    path = video.folder / entry.file
    last = entry.first_frame_id + entry.frame_count - 1
    where = f"frames {entry.first_frame_id}..{last} of {video.rel}"
    try:
        data = path.read_bytes()
        if _faults.armed:
            data = _faults.hit("store_read", path, data)
    except FileNotFoundError as exc:
        raise CorruptDataError(
            f"GOP store bundle {path} is missing ({where}); the store is damaged: remove "
            f"{video.folder / INDEX_NAME} and build again", path=str(path), frame_id=entry.first_frame_id,
        ) from exc
    except OSError as exc:
        raise CorruptDataError(f"cannot read GOP store bundle {path} ({where}): {exc.strerror or exc}",
                               path=str(path), frame_id=entry.first_frame_id) from exc
    try:
        bundle = GopBundle.from_buffer(data)
    except CorruptDataError as exc:
        raise CorruptDataError(f"GOP store bundle {path} ({where}) is damaged: {exc}",
                               path=str(path), frame_id=entry.first_frame_id) from exc
    if bundle.frame_ids != entry.frame_ids or bundle.nbytes != entry.nbytes:
        raise CorruptDataError(
            f"GOP store bundle {path} holds frames {bundle.first_frame_id}..{bundle.frame_ids.stop - 1} in "
            f"{bundle.nbytes} bytes, the index says {where} in {entry.nbytes} bytes",
            path=str(path), frame_id=entry.first_frame_id,
        )
    return bundle


def _outside(rel: str) -> bool:
    """Whether a relative path climbs out of its base folder."""
    return rel == os.pardir or rel.startswith(os.pardir + os.sep)


# -- writing (runs in build workers) -----------------------------------------------------------------


def _build_job(job: tuple[str, str, str]) -> _VideoResult:
    """:func:`_build_video` of one ``(source, rel, folder)`` job (a worker pool's call)."""
    return _build_video(*job)


def _build_video(source: str, rel: str, folder: str) -> _VideoResult:
    """Store one video; never raises for a bad video (the error goes into the result)."""
    try:
        return _store_video(source, rel, Path(folder))
    except AsyncDecodeError as exc:
        return _VideoResult(rel, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad video (or a full disk) must not stop the others
        return _VideoResult(rel, error=f"{type(exc).__name__}: {exc}")


def _store_video(source: str, rel: str, folder: Path) -> _VideoResult:
    index = build_index(source)  # before touching the folder: a video that cannot be read leaves nothing
    stamp = index.stamp
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (folder / INDEX_NAME).unlink()  # stale, or from an earlier run: the folder is about to change
    marker = {"format": _FORMAT, "version": FORMAT_VERSION, "source": rel,
              "source_size": stamp.size, "source_mtime_ns": stamp.mtime_ns}
    resume = read_json(folder / BUILD_MARKER_NAME) == marker
    expected = {bundle_name(int(f), len(index.gop_frame_range(g))) for g, f in enumerate(index.gop_first_frame)}
    for name in os.listdir(folder):
        # Leftover temporary files always go; bundles go unless they belong to this version of the source.
        if _TMP_RE.match(name) or (_BUNDLE_RE.match(name) and (not resume or name not in expected)):
            (folder / name).unlink()
    if not resume:
        write_atomic(folder / BUILD_MARKER_NAME, json.dumps(marker).encode())

    written = kept = bytes_written = 0
    gops = []
    with GopReader(index) as reader:
        for g in range(index.num_gops):
            frames = index.gop_frame_range(g)
            path = folder / bundle_name(frames.start, len(frames))
            nbytes = _valid_bundle_size(path, frames) if resume else None
            if nbytes is None:
                data = reader.read(g).buffer
                write_atomic(path, data)
                nbytes = len(data)
                written += 1
                bytes_written += nbytes
            else:
                kept += 1
            gops.append(StoredGop(frames.start, len(frames), path.name, nbytes))
    if file_stamp(source) != stamp:
        raise CorruptDataError(f"{source} changed while it was being stored; build again", path=source)
    fsync_dir(folder)  # the bundles' names are durable before the index that lists them
    write_atomic(folder / INDEX_NAME, _index_json(rel, stamp, index.info, gops))
    fsync_dir(folder)
    return _VideoResult(rel, frames=index.info.num_frames, written=written, kept=kept, bytes_written=bytes_written)


def _valid_bundle_size(path: Path, frames: range) -> int | None:
    """Size of the bundle at ``path`` if it is whole (CRC) and holds ``frames``; else ``None``."""
    try:
        bundle = GopBundle.from_buffer(path.read_bytes())
    except (OSError, CorruptDataError):
        return None
    if bundle.frame_ids != frames:
        return None
    return bundle.nbytes


# -- progress ------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Running totals of a build, and the status line made from them."""

    t0: float
    """``time.perf_counter()`` at the start of the build."""
    videos: int
    skipped: int
    done: int = 0
    built: int = 0
    frames: int = 0
    written: int = 0
    kept: int = 0
    bytes_written: int = 0
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, result: _VideoResult) -> None:
        self.done += 1
        if result.error is not None:
            self.errors[result.rel] = result.error
            return
        self.built += 1
        self.frames += result.frames
        self.written += result.written
        self.kept += result.kept
        self.bytes_written += result.bytes_written

    def line(self) -> str:
        seconds = time.perf_counter() - self.t0
        rate = self.bytes_written / 1e9 / seconds if seconds > 0 else 0.0
        failed = f", {len(self.errors)} failed" if self.errors else ""
        return (f"store build: {self.skipped + self.done}/{self.videos} videos ({self.skipped} up to date{failed}), "
                f"{self.frames} frames, {self.bytes_written / 1e9:.2f} GB written, {rate:.2f} GB/s, {seconds:.0f} s")

    def summary(self) -> BuildSummary:
        return BuildSummary(videos=self.videos, built=self.built, skipped=self.skipped, frames=self.frames,
                            bundles_written=self.written, bundles_kept=self.kept, bytes_written=self.bytes_written,
                            seconds=time.perf_counter() - self.t0, errors=dict(self.errors))


# -- page cache ----------------------------------------------------------------------------------------


def drop_page_cache(paths: PathLike | Iterable[PathLike]) -> int:
    """Ask the kernel to drop the cached pages of files, for cold-read measurements.

    Folders are walked. Uses ``posix_fadvise(POSIX_FADV_DONTNEED)``: pages of other processes' dirty
    writes are not dropped until written back. Where it is not available this does nothing (and says
    so in a debug log).

    Returns:
        The number of files whose pages were dropped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not hasattr(os, "posix_fadvise"):
        log.debug("drop_page_cache: posix_fadvise is not available on this platform; nothing dropped")
        return 0
    dropped = 0
    for path in _walk_files(paths):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            log.debug("drop_page_cache: cannot open %s: %s", path, exc)
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            dropped += 1
        except OSError as exc:
            log.debug("drop_page_cache: posix_fadvise failed on %s: %s", path, exc)
        finally:
            os.close(fd)
    return dropped


def _walk_files(paths: Iterable[PathLike]) -> Iterator[str]:
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for dirpath, _, filenames in os.walk(p):
                for name in filenames:
                    yield os.path.join(dirpath, name)
        else:
            yield p
