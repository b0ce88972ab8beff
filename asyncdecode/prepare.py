"""Re-encode a folder of videos for fast random access: ``asyncdecode prepare``.

A random frame costs every picture from its GOP's keyframe up to it: about half a GOP. Sets recorded
with long GOPs (phones and web video: 250 frames) cost many times what the same set costs with GOP 30.
:func:`prepare` re-encodes every video under ``src`` into the same relative path under ``dst`` with a
keyframe every ``gop`` frames; :func:`estimate` says beforehand what that buys.

What is kept: every frame (count, size, timestamps, frame rate) and the colour description
(matrix, range, primaries, transfer) as tagged; audio streams are copied untouched (or dropped with
``audio="drop"``); other streams (subtitles, data, further video streams) are left out. Encoding runs
on the CPU with PyAV's FFmpeg encoders (libx264, libx265, SVT-AV1); no NVENC path (H100/H200-class
GPUs have no NVENC encoder; see docs/prepare.md).

Next to every output ``dst/<rel>`` a hidden record ``dst/<dir>/.<name>.prepare.json`` holds the
source's size and mtime, the settings and what the run measured. A later run skips a video whose
record matches its source, settings and output, and re-encodes the others: runs are resumable. Each
output is written under a temporary name and renamed when complete and checked (same frame count,
size, timestamps and colour tags; no GOP longer than asked): a reader never sees part of a file, and
a failed encode leaves the previous output, if any, as it was.

Random-access cost is counted as the engine decodes: to show frame ``f`` it feeds the packets from
its GOP's keyframe, in decode order, up to ``f``'s own, leaving out pictures no other picture
references (see :func:`random_access_cost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import numpy as np

from . import _encode, _pool
from ._backends.base import feed_plan
from .errors import AsyncDecodeError, CorruptDataError, InvalidRequestError, VideoOpenError
from .gop import GopReader
from .media import VideoIndex, VideoInfo, build_index, file_stamp
from ._files import ProgressLine, atomic_output, folder_lock, fsync_dir, read_json, write_atomic
from .store import BuildSummary, GopStore, find_videos

__all__ = [
    "DEFAULT_GOP",
    "FileReport",
    "PrepareEstimate",
    "PrepareSummary",
    "estimate",
    "prepare",
    "random_access_cost",
]

log = logging.getLogger("asyncdecode")

PathLike = Union[str, "os.PathLike[str]"]
Status = Literal["planned", "up_to_date", "done", "failed"]

#: Frames per GOP when none is given: the layout of the sets the engine is tuned on (nuScenes).
DEFAULT_GOP = 30
#: Frames per video whose PSNR against the source is measured, spread evenly (first and last included).
PSNR_FRAMES = 16
#: Version of the record layout; records of another version are not trusted (the video is redone).
FORMAT_VERSION = 1
_FORMAT = "asyncdecode.prepare"
_RECORD_SUFFIX = ".prepare.json"
LOCK_NAME = ".asyncdecode-prepare.lock"
"""Held in the destination folder while a run writes into it: a second run into the same folder fails
at once (``InvalidRequestError``) instead of removing the first one's temporary files."""
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")  # _files.atomic_output's temporary names


def record_path(output: PathLike) -> Path:
    """Where the record of the output ``output`` lives: ``.<name>.prepare.json`` next to it."""
    output = Path(output)
    return output.with_name(f".{output.name}{_RECORD_SUFFIX}")


# -- values -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileReport:
    """One video of a set: what :func:`estimate` expects for it, or what :func:`prepare` did to it."""

    rel: str
    """Path under the source folder (and under the destination), ``/``-separated."""
    status: Status
    """``"planned"`` (an estimate: to be re-encoded), ``"up_to_date"`` (its output and record match the
    source and settings: left as it is), ``"done"`` (re-encoded by this run) or ``"failed"``."""
    error: str | None = None
    """Why it failed (the source cannot be read, the encoder refused it ...); ``None`` otherwise."""
    frames: int = 0
    """Frames of the video."""
    codec_before: str | None = None
    """The source's codec."""
    codec_after: str | None = None
    """The codec it is (to be) re-encoded to."""
    gop_max_before: int = 0
    """Longest GOP of the source, in frames."""
    gop_max_after: int = 0
    """Longest GOP of the output (of the planned layout, for an estimate)."""
    reorders_before: bool = False
    """Whether the source has B-frames (decode order differs from display order)."""
    cost_before: float | None = None
    """Mean frames decoded per random frame of the source (see :func:`random_access_cost`)."""
    cost_after: float | None = None
    """The same for the output: measured on it once written, expected from the layout in an estimate."""
    source_bytes: int = 0
    """Size of the source file."""
    output_bytes: int | None = None
    """Size of the output file; ``None`` until it is written."""
    psnr_db: tuple[float, ...] = ()
    """PSNR against the source of the sampled frames (:data:`PSNR_FRAMES` per video), in dB."""
    audio: Literal["copied", "dropped", "none"] | None = None
    """What became of the source's audio: copied untouched, dropped, or there was none."""
    seconds: float = 0.0
    """Time its re-encode took (one worker)."""

    @property
    def speedup(self) -> float | None:
        """``cost_before / cost_after``: how many times fewer frames a random frame costs."""
        if not self.cost_before or not self.cost_after:
            return None
        return self.cost_before / self.cost_after

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["psnr_db"] = list(self.psnr_db)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FileReport:
        """The inverse of :meth:`to_json`.

        Raises:
            ValueError: a field is missing or unknown.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if set(obj) != names:
            raise ValueError(f"report fields differ: {sorted(set(obj) ^ names)}")
        return cls(**{**obj, "psnr_db": tuple(float(v) for v in obj["psnr_db"])})

    def __repr__(self) -> str:
        cost = f", {self.cost_before:.1f} -> {self.cost_after:.1f} decoded/frame" if self.speedup else ""
        why = f": {self.error}" if self.error else ""
        return f"FileReport({self.rel!r}, {self.status}{why}{cost})"


class _SetTotals:
    """What a set's reports add up to (shared by :class:`PrepareEstimate` and :class:`PrepareSummary`).

    Totals are over the videos with a status in ``_counted``; a random frame of the set is a random
    frame of those videos, so a longer video weighs more.
    """

    files: tuple[FileReport, ...]
    _counted: ClassVar[tuple[Status, ...]]

    @property
    def failed(self) -> dict[str, str]:
        """Video -> why it could not be read or re-encoded."""
        return {f.rel: f.error or "failed" for f in self.files if f.status == "failed"}

    @property
    def ok(self) -> bool:
        """Whether no video failed."""
        return not self.failed

    def _with(self, *statuses: Status) -> list[FileReport]:
        return [f for f in self.files if f.status in (statuses or self._counted)]

    @property
    def frames(self) -> int:
        return sum(f.frames for f in self._with())

    @property
    def source_bytes(self) -> int:
        return sum(f.source_bytes for f in self._with())

    @property
    def cost_before(self) -> float | None:
        """Mean frames decoded per random frame of the sources."""
        return self._cost("cost_before")

    @property
    def cost_after(self) -> float | None:
        """Mean frames decoded per random frame after re-encoding: measured on the files written,
        expected from the layout for the videos an estimate plans."""
        return self._cost("cost_after")

    def _cost(self, field: str) -> float | None:
        rows = [(f.frames, getattr(f, field)) for f in self._with() if getattr(f, field) is not None]
        frames = sum(n for n, _ in rows)
        return sum(n * c for n, c in rows) / frames if frames else None


@dataclass(frozen=True)
class PrepareEstimate(_SetTotals):
    """What :func:`estimate` expects re-encoding a set buys, before doing it.

    The costs are exact for the sources (from their packets) and for the planned layout (from the
    packets of a small clip the same encoder makes with the same settings, cut to each video's
    length). The size after cannot be known without encoding: :func:`prepare` reports it.
    """

    files: tuple[FileReport, ...]
    """Every video found, ``"planned"``, ``"up_to_date"`` or ``"failed"`` (cannot be read)."""
    settings: Mapping[str, Any]
    """The layout asked for: gop, bframes, codec (``None``: each source's), quality."""
    _counted: ClassVar[tuple[Status, ...]] = ("planned", "up_to_date")

    def to_json(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "frames": self.frames, "source_bytes": self.source_bytes,
                "cost_before": self.cost_before, "cost_after": self.cost_after, "failed": self.failed,
                "files": [f.to_json() for f in self.files]}

    def __repr__(self) -> str:
        return (f"PrepareEstimate({len(self.files)} videos, {len(self.failed)} unreadable; "
                f"{_fmt_cost(self.cost_before)} -> {_fmt_cost(self.cost_after)} frames decoded per random frame)")


@dataclass(frozen=True)
class PrepareSummary(_SetTotals):
    """What one :func:`prepare` run did. Totals are over the set as it now stands in the destination
    (videos re-encoded by this run and those already up to date)."""

    files: tuple[FileReport, ...]
    """Every video found: ``"done"``, ``"up_to_date"`` or ``"failed"``."""
    settings: Mapping[str, Any]
    """The settings of the run (see :func:`prepare`)."""
    seconds: float
    """Wall time of the run (the store build included)."""
    store: BuildSummary | None = None
    """The GOP store build that followed, when one was asked for."""
    _counted: ClassVar[tuple[Status, ...]] = ("done", "up_to_date")

    @property
    def done(self) -> int:
        """Videos re-encoded by this run."""
        return len(self._with("done"))

    @property
    def up_to_date(self) -> int:
        """Videos left as they were (their output matches the source and the settings)."""
        return len(self._with("up_to_date"))

    @property
    def ok(self) -> bool:
        """Whether every video is now prepared (and stored, when a store was asked for)."""
        return not self.failed and (self.store is None or self.store.ok)

    @property
    def frames_encoded(self) -> int:
        """Frames re-encoded by this run."""
        return sum(f.frames for f in self._with("done"))

    @property
    def output_bytes(self) -> int:
        return sum(f.output_bytes or 0 for f in self._with())

    @property
    def psnr_db(self) -> tuple[float, ...]:
        """PSNR of every sampled frame of the set's outputs against their sources, in dB."""
        return tuple(p for f in self._with() for p in f.psnr_db)

    @property
    def audio(self) -> dict[str, int]:
        """How many videos had their audio copied, dropped, or had none."""
        out = {"copied": 0, "dropped": 0, "none": 0}
        for f in self._with():
            if f.audio is not None:
                out[f.audio] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        psnr = self.psnr_db
        return {
            "settings": dict(self.settings), "videos": len(self.files), "done": self.done,
            "up_to_date": self.up_to_date, "failed": self.failed, "seconds": self.seconds,
            "frames_encoded": self.frames_encoded, "source_bytes": self.source_bytes,
            "output_bytes": self.output_bytes, "cost_before": self.cost_before, "cost_after": self.cost_after,
            "psnr_min_db": min(psnr, default=None), "psnr_mean_db": float(np.mean(psnr)) if psnr else None,
            "psnr_frames": len(psnr), "audio": self.audio,
            "store": dataclasses.asdict(self.store) if self.store is not None else None,
            "files": [f.to_json() for f in self.files],
        }

    def __repr__(self) -> str:
        return (f"PrepareSummary({self.done} done, {self.up_to_date} up to date, {len(self.failed)} failed of "
                f"{len(self.files)} videos; {_fmt_cost(self.cost_before)} -> {_fmt_cost(self.cost_after)} "
                f"frames decoded per random frame, in {self.seconds:.1f} s)")


def _fmt_cost(cost: float | None) -> str:
    return "?" if cost is None else f"{cost:.1f}"


@dataclass(frozen=True)
class _Job:
    """One video for a worker (crosses a process boundary: plain fields only)."""

    source: str
    output: str
    rel: str
    gop: int
    bframes: int
    codec: str | None
    quality: int | None
    audio: Literal["copy", "drop"]
    threads: int
    psnr_frames: int


# -- random-access cost -------------------------------------------------------------------------------


def random_access_cost(path: PathLike) -> float:
    """Mean number of frames the engine decodes to show one frame of ``path`` picked at random.

    For each frame: the packets from its GOP's keyframe, in decode order, up to its own, without the
    pictures no other picture references (H.264 ``nal_ref_idc == 0``, HEVC sub-layer non-reference
    pictures) that come before it; what the engine feeds a decoder for one frame, from a cold start.
    Reading a GOP on from where the decoder stopped costs less; this is the cost of a frame alone.

    Raises:
        VideoOpenError: the file cannot be opened as a video.
        CorruptDataError: its packets cannot be read.
    """
    return float(_frame_costs(build_index(os.fspath(path))).mean())


def _frame_costs(index: VideoIndex) -> np.ndarray:
    """Frames decoded to show each frame id alone (see :func:`random_access_cost`)."""
    costs = np.zeros(index.info.num_frames, np.int64)
    with GopReader(index) as reader:
        for g in range(index.num_gops):
            bundle = reader.read(g)
            for fid in bundle.frame_ids:
                costs[fid] = len(feed_plan(bundle.packets, (fid,)))
    return costs


def _layout_cost(settings: _encode.EncodeSettings, num_frames: int) -> float:
    """Expected :func:`random_access_cost` of a ``num_frames`` video encoded with ``settings``."""
    pattern = np.asarray(_gop_pattern(settings.codec, settings.gop, settings.bframes))
    full, rest = divmod(num_frames, settings.gop)
    return float((full * pattern.sum() + pattern[:rest].sum()) / num_frames)


@functools.lru_cache(maxsize=64)
def _gop_pattern(codec: str, gop: int, bframes: int) -> tuple[int, ...]:
    """Frames decoded for each position of a GOP (not the last) that ``codec`` makes with this layout.

    Which pictures reference which follows from the settings alone (fixed GOP and B-frame pattern),
    so it is read off a small clip made with the same encoder and settings.
    """
    settings = _encode.EncodeSettings(codec=codec, gop=gop, bframes=bframes, quality=_encode.DEFAULT_QUALITY[codec],
                                      audio="drop")
    with tempfile.TemporaryDirectory(prefix="asyncdecode-layout-") as tmp:
        clip = os.path.join(tmp, "layout.mp4")
        _encode.write_layout_clip(clip, settings, 2 * gop)
        costs = _frame_costs(build_index(clip))
    return tuple(int(c) for c in costs[:gop])


# -- the public entry points --------------------------------------------------------------------------


async def estimate(
    src: PathLike,
    dst: PathLike | None = None,
    *,
    gop: int = DEFAULT_GOP,
    codec: _encode.Codec | None = None,
    bframes: int = 0,
    quality: int | None = None,
    audio: Literal["copy", "drop"] = "copy",
    workers: int | None = None,
    executor: _pool.Executor = "process",
    progress: bool | None = None,
) -> PrepareEstimate:
    """What :func:`prepare` with the same arguments would do and buy, without encoding anything.

    Per video: frames, codec, longest GOP, B-frames, and the mean frames decoded per random frame
    now and after. With ``dst``, videos whose output there is up to date are marked so (and their
    measured figures are given). Arguments as for :func:`prepare`.

    Raises:
        InvalidRequestError: a bad argument, or ``src`` and ``dst`` overlap.
        BackendUnavailableError: ``codec`` has no encoder in this PyAV build.
        VideoOpenError: ``src`` is not a folder.
    """
    plan = await asyncio.to_thread(_Plan.make, src, dst, gop=gop, codec=codec, bframes=bframes, quality=quality,
                                   audio=audio, device="cpu", workers=workers, executor=executor,
                                   psnr_frames=PSNR_FRAMES)
    reports = await plan.run(_estimate_video, "estimate", progress=_show_progress(progress))
    for rel, report in reports.items():
        if report.status == "planned":
            settings = _settings_for(plan.job(rel), report.codec_before or "h264")
            cost = await asyncio.to_thread(_layout_cost, settings, report.frames)
            reports[rel] = dataclasses.replace(report, cost_after=cost, gop_max_after=min(settings.gop, report.frames))
    return PrepareEstimate(files=tuple(reports[rel] for rel in plan.videos), settings=plan.settings)


async def prepare(
    src: PathLike,
    dst: PathLike,
    *,
    gop: int = DEFAULT_GOP,
    codec: _encode.Codec | None = None,
    bframes: int = 0,
    quality: int | None = None,
    audio: Literal["copy", "drop"] = "copy",
    device: Literal["cpu"] = "cpu",
    workers: int | None = None,
    executor: _pool.Executor = "process",
    store: PathLike | None = None,
    progress: bool | None = None,
    psnr_frames: int = PSNR_FRAMES,
) -> PrepareSummary:
    """Re-encode every video under ``src`` into the same relative path under ``dst`` for fast random access.

    Videos are the files :func:`asyncdecode.store.find_videos` finds. Each is decoded and encoded
    again with a keyframe every ``gop`` frames (closed GOPs, IDR keyframes) and ``bframes``
    B-frames, keeping its frames, timestamps, size and colour tags; then checked (see the module
    docstring) and renamed into place. A video already done with the same settings from the same
    source is skipped. A video that cannot be read or re-encoded is reported in the summary (and
    logged); the others go on.

    Worker processes start with ``spawn``: a script that calls this must guard its entry point with
    ``if __name__ == "__main__":`` (or pass ``executor="thread"``).

    Args:
        src: The folder of videos (``SRC_DIR``).
        dst: Where the re-encoded videos go (``DST_DIR``); made if missing. May lie inside ``src``
            (it is not searched for videos then), not the other way round.
        gop: Frames per GOP.
        codec: ``"h264"``, ``"hevc"`` or ``"av1"``; default: each source's own codec where this PyAV
            build can encode it, else H.264.
        bframes: B-frames between reference frames (0: none; decode order is display order). Not for
            AV1, which is encoded without reordering.
        quality: The encoder's CRF (lower is better and larger); default per codec
            (:data:`asyncdecode._encode.DEFAULT_QUALITY`: 16 for H.264, 18 for HEVC, 22 for AV1).
        audio: ``"copy"`` (default) keeps every audio stream untouched; ``"drop"`` leaves them out.
        device: ``"cpu"``, the only one (no NVENC path: see docs/prepare.md).
        workers: Videos re-encoded at once; default ``min(cores, 8, videos)``. Each encoder gets
            ``cores // workers`` threads.
        executor: ``"process"`` (default) or ``"thread"`` workers.
        store: Build a GOP store of the re-encoded videos in this folder afterwards
            (:meth:`asyncdecode.GopStore.build`, same ``workers`` and ``executor``).
        progress: A status line on stderr; default: when stderr is a terminal.
        psnr_frames: Frames per video whose PSNR against the source is measured.

    Raises:
        InvalidRequestError: a bad argument, or ``src`` and ``dst`` overlap.
        BackendUnavailableError: ``codec`` has no encoder in this PyAV build.
        VideoOpenError: ``src`` is not a folder.
    """
    t0 = time.perf_counter()
    plan = await asyncio.to_thread(_Plan.make, src, dst, gop=gop, codec=codec, bframes=bframes, quality=quality,
                                   audio=audio, device=device, workers=workers, executor=executor,
                                   psnr_frames=psnr_frames)
    show = _show_progress(progress)
    plan.dst.mkdir(parents=True, exist_ok=True)
    with folder_lock(plan.dst, LOCK_NAME, f"another prepare is writing into {plan.dst}"):
        reports = await plan.run(_prepare_video, "prepare", progress=show)
    built = None
    if store is not None:
        built = await GopStore(store, video_root=plan.dst).build(progress=show, workers=workers, executor=executor)
    return PrepareSummary(files=tuple(reports[rel] for rel in plan.videos), settings=plan.settings,
                          seconds=time.perf_counter() - t0, store=built)


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else bool(progress)


# -- planning -----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Plan:
    """The videos of a run, the ones already up to date, and how to run the rest."""

    src: Path
    dst: Path
    videos: tuple[str, ...]
    up_to_date: Mapping[str, FileReport]
    settings: Mapping[str, Any]
    workers: int
    executor: _pool.Executor
    threads: int
    psnr_frames: int

    @classmethod
    def make(cls, src: PathLike, dst: PathLike | None, *, gop: int, codec: str | None, bframes: int,
             quality: int | None, audio: str, device: str, workers: int | None, executor: str,
             psnr_frames: int) -> _Plan:
        _check_args(gop=gop, codec=codec, bframes=bframes, quality=quality, audio=audio, device=device,
                    workers=workers, executor=executor, psnr_frames=psnr_frames)
        src_path = Path(os.path.abspath(src))
        if not src_path.is_dir():
            raise VideoOpenError(f"source folder {src_path} is not a folder", path=str(src_path))
        dst_path = Path(os.path.abspath(dst)) if dst is not None else None
        if dst_path is not None:
            real_src, real_dst = os.path.realpath(src_path), os.path.realpath(dst_path)
            if real_src == real_dst or real_src.startswith(real_dst + os.sep):
                raise InvalidRequestError(f"the destination {dst_path} must not be or hold the source folder "
                                          f"{src_path}: outputs would replace sources", path=str(dst_path))
        videos = tuple(find_videos(src_path, exclude=dst_path))
        settings = {"gop": gop, "bframes": bframes, "codec": codec, "quality": quality, "audio": audio,
                    "device": device}
        plan = cls(src=src_path, dst=dst_path or src_path, videos=videos, up_to_date={}, settings=settings,
                   workers=1, executor=executor, threads=1, psnr_frames=psnr_frames)
        current = {}
        if dst_path is not None:
            current = {rel: r for rel in videos if (r := _current_report(plan.job(rel))) is not None}
        cores = os.cpu_count() or 1
        n = max(1, min(workers or min(cores, 8), len(videos) - len(current)))
        return dataclasses.replace(plan, up_to_date=current, workers=n, threads=max(1, cores // n))

    def job(self, rel: str) -> _Job:
        s = self.settings
        return _Job(source=str(self.src / rel), output=str(self.dst / rel), rel=rel, gop=s["gop"],
                    bframes=s["bframes"], codec=s["codec"], quality=s["quality"], audio=s["audio"],
                    threads=self.threads, psnr_frames=self.psnr_frames)

    async def run(self, fn: Callable[[_Job], FileReport], what: str, *, progress: bool) -> dict[str, FileReport]:
        """Run ``fn`` on every video not up to date; every video's report (up-to-date ones included)."""
        reports = dict(self.up_to_date)
        todo = [self.job(rel) for rel in self.videos if rel not in self.up_to_date]
        tally = _Tally(time.perf_counter(), what, videos=len(self.videos), up_to_date=len(self.up_to_date))
        line = ProgressLine(sys.stderr if progress else None)
        line.show(tally.line(), force=True)
        counter = _new_counter()
        try:
            if not todo:
                return reports
            async with contextlib.aclosing(_pool.completed(fn, todo, workers=self.workers, executor=self.executor,
                                                           initializer=_init_worker, initargs=(counter,))) as batches:
                async for batch in batches:
                    for job, result in batch:
                        if isinstance(result, BaseException):
                            if not isinstance(result, Exception):
                                raise result
                            result = FileReport(job.rel, "failed", error=f"the worker died on it ({result!r})")
                        if result.status == "failed":
                            log.warning("%s: %s failed: %s", what, result.rel, result.error)
                        tally.add(result)
                        reports[result.rel] = result
                    tally.frames = counter.value
                    line.show(tally.line())
            line.show(tally.line(), force=True)
        finally:
            line.close()
        return reports


def _check_args(*, gop: int, codec: str | None, bframes: int, quality: int | None, audio: str, device: str,
                workers: int | None, executor: str, psnr_frames: int) -> None:
    def positive_int(name: str, value: object, low: int = 1) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidRequestError(f"{name} must be an integer >= {low}, not {value!r}")

    positive_int("gop", gop)
    positive_int("bframes", bframes, 0)
    positive_int("psnr_frames", psnr_frames, 0)
    if workers is not None:
        positive_int("workers", workers)
    if device != "cpu":
        raise InvalidRequestError(f"device must be 'cpu', not {device!r} (there is no NVENC path: the "
                                  "H100/H200-class GPUs it was to run on have no NVENC encoder)")
    if executor not in ("process", "thread"):
        raise InvalidRequestError(f"executor must be 'process' or 'thread', not {executor!r}")
    if audio not in ("copy", "drop"):
        raise InvalidRequestError(f"audio must be 'copy' or 'drop', not {audio!r}")
    if bframes >= gop and bframes:
        raise InvalidRequestError(f"bframes ({bframes}) must be smaller than gop ({gop})")
    if codec is not None:
        _encode.require_encoder(codec)
        if codec == "av1" and bframes:
            raise InvalidRequestError("AV1 is encoded without reordering here: bframes must be 0 with codec 'av1'")
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, int):
            raise InvalidRequestError(f"quality (CRF) must be an integer, not {quality!r}")
        if codec is not None:
            _check_quality(codec, quality)


def _check_quality(codec: str, quality: int) -> None:
    low, high = _encode.QUALITY_RANGE[codec]
    if not low <= quality <= high:
        raise InvalidRequestError(f"quality (CRF) for {codec} must be in {low}..{high}, not {quality}")


def _settings_for(job: _Job, source_codec: str) -> _encode.EncodeSettings:
    """The settings a video gets: the codec asked for, else the source's where it can be encoded, else H.264.

    Raises:
        InvalidRequestError: B-frames asked for and the codec is AV1, or a quality out of the codec's range.
    """
    codec = job.codec
    if codec is None:
        codec = source_codec if source_codec in _encode.ENCODERS and _encode.has_encoder(source_codec) else "h264"
    if codec == "av1" and job.bframes:
        raise InvalidRequestError(f"{job.rel} is AV1, which is encoded without reordering here: ask for "
                                  "bframes=0 or another codec", path=job.rel)
    quality = job.quality if job.quality is not None else _encode.DEFAULT_QUALITY[codec]
    _check_quality(codec, quality)
    return _encode.EncodeSettings(codec=codec, gop=job.gop, bframes=job.bframes, quality=quality,
                                  audio=job.audio, threads=job.threads)


def _current_report(job: _Job) -> FileReport | None:
    """The report in the record of ``job``'s output when that output is up to date, else ``None``.

    Up to date: the record (of this format version) names the source's current size and mtime and
    the settings of this run, and the output has the size and mtime the record gives.
    """
    doc = read_json(record_path(job.output))
    try:
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("version") != FORMAT_VERSION:
            return None
        source, output = file_stamp(job.source), file_stamp(job.output)
        report = FileReport.from_json(doc["report"])
        settings = _settings_for(job, report.codec_before or "h264").record()
    except (AsyncDecodeError, KeyError, TypeError, ValueError):
        return None
    if (doc.get("settings") != settings or doc.get("source") != [source.size, source.mtime_ns]
            or doc.get("output") != [output.size, output.mtime_ns]):
        return None
    return dataclasses.replace(report, status="up_to_date", seconds=0.0)


# -- workers ------------------------------------------------------------------------------------------

_frames_done: Any = None
"""Frames encoded so far by every worker of the run (a shared counter the status line reads)."""


def _new_counter() -> Any:
    import multiprocessing

    return multiprocessing.get_context("spawn").Value("q", 0)


def _init_worker(counter: Any) -> None:
    global _frames_done
    _frames_done = counter


def _count_frames(n: int) -> None:
    if _frames_done is not None and n:
        with _frames_done.get_lock():
            _frames_done.value += n


def _estimate_video(job: _Job) -> FileReport:
    """Read one source's index and random-access cost; never raises for a bad video."""
    try:
        index = build_index(job.source)
        settings = _settings_for(job, index.info.codec)  # a video the settings cannot take fails now
        return dataclasses.replace(_source_report(job, index, "planned"), codec_after=settings.codec)
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
        return FileReport(job.rel, "failed", error=_describe(exc))


def _prepare_video(job: _Job) -> FileReport:
    """Re-encode one video, check it, put it in place and record it; never raises for a bad video."""
    t0 = time.perf_counter()
    try:
        return _prepare_checked(job, t0)
    except Exception as exc:  # noqa: BLE001 - one bad video (or a full disk) must not stop the others
        return FileReport(job.rel, "failed", error=_describe(exc), seconds=time.perf_counter() - t0)


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, AsyncDecodeError) else f"{type(exc).__name__}: {exc}"


def _source_report(job: _Job, index: VideoIndex, status: Status) -> FileReport:
    info = index.info
    return FileReport(
        job.rel, status, frames=info.num_frames, codec_before=info.codec, gop_max_before=max(info.gop_lengths),
        reorders_before=bool((np.diff(index.packet_pts[index.packet_frame >= 0]) < 0).any()),
        cost_before=float(_frame_costs(index).mean()), source_bytes=index.stamp.size,
    )


def _prepare_checked(job: _Job, t0: float) -> FileReport:
    source_index = build_index(job.source)  # before anything is written: a source that cannot be read leaves nothing
    info = source_index.info
    settings = _settings_for(job, info.codec)
    report = _source_report(job, source_index, "done")
    output = Path(job.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        record_path(output).unlink()  # the output is about to change: it is no longer up to date
    _remove_leftovers(output)
    fmt = _encode.CONTAINER_FORMATS[output.suffix.lower()]
    with atomic_output(output) as tmp:
        done = _encode.transcode(job.source, str(tmp), container_format=fmt, settings=settings,
                                 stream_index=info.stream_index, pix_fmt=info.pix_fmt, frame_pts=info.frame_pts,
                                 psnr_frames=job.psnr_frames, on_frames=_count_frames)
        out_index = build_index(str(tmp))
        _check_output(job, info, out_index.info, settings)
        cost_after = float(_frame_costs(out_index).mean())
        if file_stamp(job.source) != source_index.stamp:
            raise CorruptDataError(f"{job.source} changed while it was being re-encoded; run again",
                                   path=job.source)
    stamp = file_stamp(str(output))
    report = dataclasses.replace(
        report, codec_after=settings.codec, gop_max_after=max(out_index.info.gop_lengths), cost_after=cost_after,
        output_bytes=stamp.size, psnr_db=done.psnr_db, seconds=time.perf_counter() - t0,
        audio="copied" if done.audio_streams else "dropped" if done.audio_dropped else "none",
    )
    record = {"format": _FORMAT, "version": FORMAT_VERSION, "source_rel": job.rel,
              "source": [source_index.stamp.size, source_index.stamp.mtime_ns], "output": [stamp.size, stamp.mtime_ns],
              "settings": settings.record(), "pix_fmt": done.pix_fmt, "report": report.to_json()}
    write_atomic(record_path(output), json.dumps(record, indent=1).encode())
    fsync_dir(output.parent)
    return report


def _check_output(job: _Job, before: VideoInfo, after: VideoInfo, settings: _encode.EncodeSettings) -> None:
    """Raise unless the re-encoded file kept what it must keep and has the layout asked for."""
    problems = []
    if after.num_frames != before.num_frames:
        problems.append(f"{after.num_frames} frames, not {before.num_frames}")
    if (after.width, after.height) != (before.width, before.height):
        problems.append(f"size {after.width}x{after.height}, not {before.width}x{before.height}")
    # x265 and SVT-AV1 always write the range flag: "unspecified" comes out "limited", which is what
    # readers (FFmpeg, the engine) take "unspecified" to mean anyway.
    ranges = {r if r != "unspecified" else "limited" for r in (after.color_range, before.color_range)}
    if after.color_space != before.color_space or len(ranges) > 1:
        problems.append(f"colour {after.color_space}/{after.color_range}, "
                        f"not {before.color_space}/{before.color_range}")
    if max(after.gop_lengths) > settings.gop:
        problems.append(f"a GOP of {max(after.gop_lengths)} frames, longer than {settings.gop}")
    if after.num_frames == before.num_frames:
        # Times in seconds; the output's container may round them to its own time base.
        tick = float(max(after.time_base, before.time_base))
        drift = np.abs(np.asarray(after.frame_pts) * float(after.time_base)
                       - np.asarray(before.frame_pts) * float(before.time_base))
        if drift.max() > tick / 2 + 1e-9:
            worst = int(drift.argmax())
            problems.append(f"frame {worst} at {after.pts_seconds_of(worst):.6f} s, "
                            f"not {before.pts_seconds_of(worst):.6f} s")
    if problems:
        raise AsyncDecodeError(f"{job.source}: the re-encoded file was not kept: {'; '.join(problems)}",
                               path=job.source)


def _remove_leftovers(final: Path) -> None:
    """Remove temporary files of ``final`` left by runs that were killed (their process is gone)."""
    for name in os.listdir(final.parent):
        m = _TMP_RE.match(name)
        if m and m["name"] == final.name and not _pid_alive(int(m["pid"])):
            with contextlib.suppress(OSError):
                (final.parent / name).unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- progress -----------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Running counts of a run, and the status line made from them."""

    t0: float
    what: str
    videos: int
    up_to_date: int
    done: int = 0
    failed: int = 0
    frames: int = 0

    def add(self, report: FileReport) -> None:
        if report.status == "failed":
            self.failed += 1
        else:
            self.done += 1

    def line(self) -> str:
        seconds = time.perf_counter() - self.t0
        failed = f", {self.failed} failed" if self.failed else ""
        frames = f", {self.frames} frames, {self.frames / seconds:.0f} frames/s" if self.frames and seconds > 0 else ""
        return (f"{self.what}: {self.up_to_date + self.done + self.failed}/{self.videos} videos "
                f"({self.up_to_date} up to date{failed}){frames}, {seconds:.0f} s")
