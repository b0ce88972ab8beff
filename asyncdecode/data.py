"""PyTorch integration: multi-camera clip indexes, a distributed clip sampler, and a loader that decodes ahead.

Driving data sets are laid out as *clips*, each filmed by the same set of *cameras*, one video file per
camera. Training reads a few consecutive frames of every camera of a clip per sample. The pieces:

* :class:`ClipIndex`: clip name -> one video per camera and the clip's frame count; a JSON file or
  built from folders (``root/<clip>/<camera>.mp4``).
* :class:`ClipSampler`: a :class:`torch.utils.data.Sampler` of batches of ``(clip_name, start_frame)``
  samples, sharded across ranks like :class:`~torch.utils.data.distributed.DistributedSampler`.
* :class:`ClipDataset`: turns a sample into an engine request ``(paths, frame_ids)``.
* :class:`ClipLoader`: feeds the sampler's future batches to :meth:`Engine.stream`, so decoding runs
  ``depth`` batches ahead of the training step, and yields ``(batch, cameras, frames, C, H, W)`` tensors.

Example:
    >>> index = ClipIndex.load("/data/train/index.json")
    >>> sampler = ClipSampler(index, clips_per_batch=8, frames_per_clip=4, stride=2)
    >>> dataset = ClipDataset(index, frames_per_clip=4, stride=2)
    >>> async with Engine(device="auto") as eng:
    ...     loader = ClipLoader(eng, dataset, sampler, depth=4)
    ...     for epoch in range(10):
    ...         sampler.set_epoch(epoch)
    ...         async for frames, samples in loader:   # frames: (8, cameras, 4, 3, H, W) uint8
    ...             train_step(frames)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import torch
import torch.utils.data

from ._engine import Engine
from ._output import OutputSpec
from .errors import FrameIndexError, InvalidRequestError, VideoOpenError
from .media import probe
from .store import VIDEO_EXTENSIONS

__all__ = ["Clip", "ClipDataset", "ClipIndex", "ClipLoader", "ClipSampler", "Sample"]

PathLike = Union[str, "os.PathLike[str]"]
#: One sample: a clip (its name in a :class:`ClipIndex`, or its number for a sampler built from a count)
#: and the first frame id of the sample.
Sample = tuple[Union[str, int], int]
#: A request for :meth:`Engine.decode` / :meth:`Engine.stream`: one path per frame id, and the frame ids.
ClipRequest = tuple[list[str], list[int]]

_NUM_FRAMES = "num_frames"


# -- the index --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One clip of a :class:`ClipIndex`."""

    name: str
    """The clip's name (its key in the index)."""
    paths: tuple[str, ...]
    """Absolute video path of each camera, in the index's camera order."""
    num_frames: int
    """Frames every camera has: valid frame ids are ``0..num_frames-1`` (the minimum over cameras)."""

    def __repr__(self) -> str:
        return f"Clip({self.name!r}, {len(self.paths)} cameras, {self.num_frames} frames)"


class ClipIndex:
    """Multi-camera clips: clip name -> one video per camera, and the number of frames of the clip.

    The JSON file, and the in-memory mapping given to the constructor, look like this::

        {"scene-0001": {"CAM_FRONT": "scene-0001/CAM_FRONT.mp4", "CAM_BACK": "...", "num_frames": 235},
         "scene-0002": {...}}

    Every clip must have the same cameras. ``num_frames`` is what the sampler may use; where the
    cameras of a clip differ in length it is the shortest one's (``from_dirs`` takes the minimum). It
    is trusted, not checked against the files: a frame past a file's end fails its request with
    :class:`~asyncdecode.FrameIndexError` at decode time. Clips keep the mapping's order, which is
    what the sampler shuffles, so every rank of a distributed job must build the index the same way
    (loading one JSON file does that).

    Args:
        clips: clip name -> {camera name -> video path, ``"num_frames"``: int}.
        cameras: The cameras, in the order frames are stacked; every clip must have exactly these.
            Default: the first clip's cameras, sorted by name.
        root: Folder that relative video paths are resolved against (default: the working directory).

    Raises:
        InvalidRequestError: the mapping is malformed: no clips, a clip without ``num_frames`` or
            without one of the cameras, a key that is not a camera, a path that is not a string.
    """

    def __init__(self, clips: Mapping[str, Mapping[str, Any]], *, cameras: Sequence[str] | None = None,
                 root: PathLike | None = None) -> None:
        if not isinstance(clips, Mapping) or not clips:
            raise InvalidRequestError("a ClipIndex needs a non-empty mapping of clip name -> "
                                      "{camera: video path, 'num_frames': int}")
        base = os.path.abspath(os.fspath(root) if root is not None else os.getcwd())
        if cameras is None:
            first_name, first = next(iter(clips.items()))
            if not isinstance(first, Mapping):
                raise InvalidRequestError(f"clip {first_name!r} must map camera -> path, not {type(first).__name__}")
            cameras = sorted(k for k in first if k != _NUM_FRAMES)
        cams = tuple(cameras)
        if not cams:
            raise InvalidRequestError("a ClipIndex needs at least one camera")
        if len(set(cams)) != len(cams) or _NUM_FRAMES in cams or not all(isinstance(c, str) for c in cams):
            raise InvalidRequestError(f"cameras must be distinct strings other than {_NUM_FRAMES!r}, not {cams!r}")
        self.cameras: tuple[str, ...] = cams
        """Camera names, in the order frames are stacked."""
        self._clips: dict[str, Clip] = {}
        for name, entry in clips.items():
            self._clips[name] = _parse_clip(name, entry, cams, base)

    # -- building, loading, saving

    @classmethod
    def load(cls, path: PathLike, *, cameras: Sequence[str] | None = None) -> ClipIndex:
        """Read an index from a JSON file; relative video paths are relative to the file's folder.

        Raises:
            OSError: the file cannot be read.
            InvalidRequestError: it is not valid JSON, or not a valid index (see :class:`ClipIndex`).
        """
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(f"{path}: not a JSON clip index ({exc})", path=path) from exc
        try:
            return cls(data, cameras=cameras, root=os.path.dirname(os.path.abspath(path)))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{path}: {exc.message}", path=path) from exc

    def save(self, path: PathLike) -> None:
        """Write the index as JSON, atomically (a temporary file renamed over ``path``).

        Videos under the file's folder are written relative to it, so the folder can be moved as a
        whole; others keep their absolute path.
        """
        path = os.path.abspath(os.fspath(path))
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        data = self.to_dict(relative_to=folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".clip_index.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def from_dirs(cls, root: PathLike, *, cameras: Sequence[str] | None = None) -> ClipIndex:
        """Index ``root/<clip>/<camera>.<ext>``: every sub-folder a clip, every video file in it a camera.

        Camera names are file stems (``CAM_FRONT.mp4`` -> ``"CAM_FRONT"``); a clip's ``num_frames`` is
        the minimum over its cameras, read with :func:`~asyncdecode.probe` (one packet scan per file).
        Hidden folders and files are skipped; clips are sorted by name.

        Args:
            root: The folder holding one folder per clip.
            cameras: Take only these cameras, in this order (other video files are ignored).
                Default: every camera, sorted by name; every clip must have the same ones.

        Raises:
            VideoOpenError: ``root`` is not a folder, a clip lacks a camera, or a video cannot be opened.
            InvalidRequestError: no clip folders, an empty ``cameras``, or two videos of a clip share a stem.
            CorruptDataError: a video's packets cannot be read.
        """
        root_s = os.path.abspath(os.fspath(root))
        if not os.path.isdir(root_s):
            raise VideoOpenError(f"clip root {root_s} is not a folder", path=root_s)
        clip_dirs = sorted(e.name for e in os.scandir(root_s) if e.is_dir() and not e.name.startswith("."))
        if not clip_dirs:
            raise InvalidRequestError(f"no clip folders in {root_s}", path=root_s)
        found: dict[str, dict[str, str]] = {}
        for clip in clip_dirs:
            videos: dict[str, str] = {}
            for entry in sorted(os.scandir(os.path.join(root_s, clip)), key=lambda e: e.name):
                stem, ext = os.path.splitext(entry.name)
                if entry.name.startswith(".") or ext.lower() not in VIDEO_EXTENSIONS or not entry.is_file():
                    continue
                if stem in videos:
                    raise InvalidRequestError(
                        f"clip {clip!r} has two videos for camera {stem!r}: {videos[stem]} and {entry.path}",
                        path=entry.path)
                videos[stem] = entry.path
            found[clip] = videos
        cams = tuple(cameras) if cameras is not None else tuple(sorted(next(iter(found.values()))))
        if cameras is not None and not cams:
            raise InvalidRequestError("cameras must name at least one camera")
        if not cams:
            raise VideoOpenError(f"no video files in {os.path.join(root_s, clip_dirs[0])}",
                                 path=os.path.join(root_s, clip_dirs[0]))
        clips: dict[str, dict[str, Any]] = {}
        for clip, videos in found.items():
            missing = [c for c in cams if c not in videos]
            extra = [c for c in videos if c not in cams] if cameras is None else []
            if missing or extra:
                what = f"lacks camera(s) {missing}" if missing else f"has extra camera(s) {extra}"
                raise VideoOpenError(f"clip folder {os.path.join(root_s, clip)} {what} (cameras: {list(cams)}; "
                                     "pass cameras= to take a subset)", path=os.path.join(root_s, clip))
            entry: dict[str, Any] = {c: videos[c] for c in cams}
            entry[_NUM_FRAMES] = min(probe(videos[c]).num_frames for c in cams)
            clips[clip] = entry
        return cls(clips, cameras=cams, root=root_s)

    def to_dict(self, *, relative_to: PathLike | None = None) -> dict[str, dict[str, Any]]:
        """The index as the JSON structure; paths under ``relative_to`` are made relative to it."""
        base = os.path.abspath(os.fspath(relative_to)) if relative_to is not None else None

        def spell(p: str) -> str:
            if base is not None and os.path.commonpath([base, p]) == base:
                return Path(os.path.relpath(p, base)).as_posix()
            return p

        return {name: {**{cam: spell(p) for cam, p in zip(self.cameras, clip.paths)},
                       _NUM_FRAMES: clip.num_frames}
                for name, clip in self._clips.items()}

    # -- access

    @property
    def names(self) -> list[str]:
        """Clip names, in index order."""
        return list(self._clips)

    def __getitem__(self, name: str) -> Clip:
        try:
            return self._clips[name]
        except KeyError:
            raise InvalidRequestError(f"no clip {name!r} in the index ({len(self)} clips)") from None

    def __contains__(self, name: object) -> bool:
        return name in self._clips

    def __iter__(self) -> Iterator[Clip]:
        return iter(self._clips.values())

    def __len__(self) -> int:
        return len(self._clips)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClipIndex):
            return NotImplemented
        return self.cameras == other.cameras and list(self._clips.values()) == list(other._clips.values())

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container: compared by value only

    def __repr__(self) -> str:
        return f"<ClipIndex {len(self)} clips x {len(self.cameras)} cameras ({', '.join(self.cameras)})>"


def _parse_clip(name: Any, entry: Any, cameras: tuple[str, ...], base: str) -> Clip:
    """Validate one clip entry of the index mapping into a :class:`Clip`."""
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"clip names must be non-empty strings, not {name!r}")
    if not isinstance(entry, Mapping):
        raise InvalidRequestError(f"clip {name!r} must map camera -> path, not {type(entry).__name__}")
    n = entry.get(_NUM_FRAMES)
    if n is None:
        raise InvalidRequestError(f"clip {name!r} has no {_NUM_FRAMES!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidRequestError(f"clip {name!r}: {_NUM_FRAMES} must be an int >= 1, not {n!r}")
    missing = [c for c in cameras if c not in entry]
    if missing:
        raise InvalidRequestError(f"clip {name!r} lacks camera(s) {missing} (cameras: {list(cameras)})")
    unknown = [k for k in entry if k != _NUM_FRAMES and k not in cameras]
    if unknown:
        raise InvalidRequestError(f"clip {name!r} has unknown key(s) {unknown} "
                                  f"(allowed: the cameras {list(cameras)} and {_NUM_FRAMES!r})")
    paths = []
    for cam in cameras:
        p = entry[cam]
        if not isinstance(p, (str, os.PathLike)) or not os.fspath(p):
            raise InvalidRequestError(f"clip {name!r}, camera {cam!r}: the video path must be a "
                                      f"non-empty string, not {p!r}")
        paths.append(os.path.normpath(os.path.join(base, os.fspath(p))))
    return Clip(name=name, paths=tuple(paths), num_frames=n)


# -- sampling ---------------------------------------------------------------------------------------


class ClipSampler(torch.utils.data.Sampler[list[Sample]]):
    """Batches of ``(clip, start_frame)`` samples, every clip once per epoch across all ranks.

    Each epoch the clips are put in one order, the same on every rank (a permutation seeded by
    ``seed + epoch`` when ``shuffle``, else index order), each clip gets a start frame (random when
    ``shuffle``, else 0) such that ``frames_per_clip`` frames at ``stride`` fit in the clip, and rank
    ``r`` takes positions ``r, r + world_size, ...``, as :class:`DistributedSampler` does. When the
    number of clips is not a multiple of ``world_size`` the order is padded by repeating its start,
    so every rank has the same number of samples (DDP needs equal step counts); the last batch may
    be smaller than ``clips_per_batch``. With ``drop_last`` the tail that does not fill a whole
    batch on every rank is left out instead: every batch is full, and a clip is used at most once.

    Call :meth:`set_epoch` before each epoch for a new order.

    Args:
        index_or_num_clips: A :class:`ClipIndex` (samples name its clips), or a number of clips
            ``n`` (samples are ``(k, 0)`` for ``k`` in ``0..n-1``: lengths unknown, start frame 0).
        clips_per_batch: Samples per batch, per rank.
        frames_per_clip: Frames a sample reads: ``start, start + stride, ...``.
        stride: Step between a sample's frames.
        shuffle: Shuffle the clips and draw start frames (else index order, start 0).
        seed: Base of the per-epoch seed; must be the same on every rank.
        rank: This process's rank (default: torch.distributed's when initialized, else 0).
        world_size: Number of ranks (default: torch.distributed's when initialized, else 1).
        drop_last: Leave out the tail instead of padding it (see above).

    Raises:
        InvalidRequestError: a bad argument, a clip too short for ``frames_per_clip`` at ``stride``, or
            (with ``drop_last``) fewer clips than one batch on every rank.
    """

    def __init__(self, index_or_num_clips: ClipIndex | int, *, clips_per_batch: int = 1, frames_per_clip: int = 1,
                 stride: int = 1, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool = False) -> None:
        for arg, value in (("clips_per_batch", clips_per_batch), ("frames_per_clip", frames_per_clip),
                           ("stride", stride)):
            _check_positive(arg, value)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidRequestError(f"seed must be an int, not {seed!r}")
        span = (frames_per_clip - 1) * stride + 1
        if isinstance(index_or_num_clips, ClipIndex):
            self.names: list[str | int] = list(index_or_num_clips.names)
            lengths = [clip.num_frames for clip in index_or_num_clips]
            short = [c for c in index_or_num_clips if c.num_frames < span]
            if short:
                raise InvalidRequestError(
                    f"clip {short[0].name!r} has {short[0].num_frames} frames; {frames_per_clip} frames at stride "
                    f"{stride} need {span} ({len(short)} clip(s) too short: filter the index or sample fewer frames)")
            self._starts = torch.tensor([n - span + 1 for n in lengths], dtype=torch.float64)
        elif isinstance(index_or_num_clips, int) and not isinstance(index_or_num_clips, bool):
            _check_positive("the number of clips", index_or_num_clips)
            self.names = list(range(index_or_num_clips))
            self._starts = torch.ones(index_or_num_clips, dtype=torch.float64)
        else:
            raise InvalidRequestError(
                f"ClipSampler needs a ClipIndex or a number of clips, not {type(index_or_num_clips).__name__}")
        rank, world_size = _dist_defaults(rank, world_size)
        self.clips_per_batch = clips_per_batch
        self.frames_per_clip = frames_per_clip
        self.stride = stride
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        n = len(self.names)
        self.num_samples: int  # samples this rank yields per epoch
        if drop_last:
            self.num_samples = n // (world_size * clips_per_batch) * clips_per_batch
            if self.num_samples == 0:
                raise InvalidRequestError(
                    f"drop_last leaves nothing: {n} clips do not fill one batch of {clips_per_batch} on "
                    f"each of {world_size} ranks")
        else:
            self.num_samples = math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (call it with the same value on every rank, before iterating)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidRequestError(f"epoch must be an int >= 0, not {epoch!r}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[Sample]]:
        n = len(self.names)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
            starts = (torch.rand(n, generator=g, dtype=torch.float64) * self._starts).floor().long().tolist()
        else:
            order, starts = list(range(n)), [0] * n
        total = self.num_samples * self.world_size
        while len(order) < total:  # pad by repeating the order's start, as DistributedSampler does
            order += order[: total - len(order)]
        mine = order[self.rank:total:self.world_size]
        for i in range(0, len(mine), self.clips_per_batch):
            yield [(self.names[k], starts[k]) for k in mine[i:i + self.clips_per_batch]]

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return math.ceil(self.num_samples / self.clips_per_batch)

    def __repr__(self) -> str:
        return (f"<ClipSampler {len(self.names)} clips, rank {self.rank}/{self.world_size}, {len(self)} batches "
                f"of {self.clips_per_batch}, epoch {self.epoch}>")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{name} must be an int >= 1, not {value!r}")


def _dist_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Fill in rank and world size from torch.distributed when its process group is initialized."""
    dist = torch.distributed
    initialized = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    _check_positive("world_size", world_size)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise InvalidRequestError(f"rank must be an int in 0..{world_size - 1}, not {rank!r}")
    return rank, world_size


# -- requests ---------------------------------------------------------------------------------------


class ClipDataset(torch.utils.data.Dataset[ClipRequest]):
    """Map-style dataset: a sample ``(clip_name, start)`` -> the engine request that reads it.

    The request ``(paths, frame_ids)`` holds every camera's frames ``start, start + stride, ...``,
    camera-major (all frames of the first camera, then the next), ready for :meth:`Engine.decode`
    or :meth:`Engine.stream`. Building requests costs no I/O: decoding is the engine's job.

    Args:
        index: The clips.
        frames_per_clip: Frames per camera and sample.
        stride: Step between a sample's frames.
    """

    def __init__(self, index: ClipIndex, *, frames_per_clip: int = 1, stride: int = 1) -> None:
        if not isinstance(index, ClipIndex):
            raise InvalidRequestError(f"ClipDataset needs a ClipIndex, not {type(index).__name__}")
        _check_positive("frames_per_clip", frames_per_clip)
        _check_positive("stride", stride)
        self.index = index
        self.frames_per_clip = frames_per_clip
        self.stride = stride

    def __getitem__(self, sample: Sample) -> ClipRequest:
        """The request for ``sample``.

        Raises:
            InvalidRequestError: ``sample`` is not ``(clip_name, start)`` or names no clip of the index.
            FrameIndexError: the sample's frames do not all lie in ``0..num_frames-1`` of the clip.
        """
        try:
            name, start = sample
        except (TypeError, ValueError):
            raise InvalidRequestError(f"a sample is (clip_name, start_frame), not {sample!r}") from None
        clip = self.index[name]
        if isinstance(start, bool) or not isinstance(start, int):
            raise InvalidRequestError(f"start frame must be an int, not {start!r} (clip {name!r})")
        ids = [start + k * self.stride for k in range(self.frames_per_clip)]
        if start < 0 or ids[-1] >= clip.num_frames:
            raise FrameIndexError(f"frames {start}..{ids[-1]} (stride {self.stride}) out of range for clip "
                                  f"{name!r} (0..{clip.num_frames - 1})", path=clip.paths[0], frame_id=start)
        return [p for p in clip.paths for _ in ids], ids * len(clip.paths)

    def request(self, batch: Iterable[Sample]) -> ClipRequest:
        """One merged request for a batch of samples: sample-major, then camera, then frame."""
        paths: list[str] = []
        ids: list[int] = []
        for sample in batch:
            p, f = self[sample]
            paths += p
            ids += f
        if not ids:
            raise InvalidRequestError("a batch needs at least one sample")
        return paths, ids

    def requests(self, sampler_batches: Iterable[Iterable[Sample]]) -> Iterator[ClipRequest]:
        """One merged request per batch, lazily (the sampler is read only as far as requests are taken)."""
        for batch in sampler_batches:
            yield self.request(batch)

    def __repr__(self) -> str:
        return f"<ClipDataset {self.index!r}, {self.frames_per_clip} frames at stride {self.stride}>"


# -- loading ----------------------------------------------------------------------------------------


class ClipLoader:
    """Iterate an epoch as ``(frames, samples)`` batches, decoding ``depth`` batches ahead.

    ``async for frames, samples in loader`` reads the sampler's batches, turns each into one request
    and hands them to :meth:`Engine.stream`: while the caller trains on a batch, the next
    ``depth - 1`` are being read and decoded. ``frames`` has shape ``(batch, cameras, frames, C, H, W)``
    for ``"NCHW"`` or ``(batch, cameras, frames, H, W, C)`` for ``"NHWC"``, whatever layout the output
    spec gives (frames are copied once, into the stacked tensor), on the engine's device;
    ``samples`` is the batch's list of ``(clip_name, start)``.

    Leaving the loop early cancels the requests still in flight: closing the epoch's generator closes
    the engine's stream. After a ``break`` the event loop closes the abandoned generator on its next
    turns; for a close at a known point, iterate ``contextlib.aclosing(loader.epoch())``.

    Args:
        engine: An open :class:`Engine`.
        dataset: Turns samples into requests.
        sampler: Yields batches of samples (a :class:`ClipSampler`, or any iterable of sample lists).
        depth: Batches in flight (``Engine.stream``'s ``depth``).
        output: Output spec for these requests (default: the engine's).
        layout: Axis order of each frame in the yielded tensor.

    Raises:
        InvalidRequestError: a bad argument; while iterating, cameras of different sizes with no
            ``OutputSpec.size`` to bring them to one.
    """

    def __init__(self, engine: Engine, dataset: ClipDataset, sampler: Iterable[list[Sample]], *, depth: int = 4,
                 output: OutputSpec | None = None, layout: Literal["NCHW", "NHWC"] = "NCHW") -> None:
        if not isinstance(engine, Engine):
            raise InvalidRequestError(f"ClipLoader needs an Engine, not {type(engine).__name__}")
        if not isinstance(dataset, ClipDataset):
            raise InvalidRequestError(f"ClipLoader needs a ClipDataset, not {type(dataset).__name__}")
        _check_positive("depth", depth)
        if layout not in ("NCHW", "NHWC"):
            raise InvalidRequestError(f"layout must be 'NCHW' or 'NHWC', not {layout!r}")
        if output is not None and not isinstance(output, OutputSpec):
            raise InvalidRequestError(f"output must be an OutputSpec, not {type(output).__name__}")
        if isinstance(sampler, ClipSampler) and (sampler.frames_per_clip, sampler.stride) != (
                dataset.frames_per_clip, dataset.stride):
            raise InvalidRequestError(
                f"sampler draws {sampler.frames_per_clip} frames at stride {sampler.stride} but the dataset reads "
                f"{dataset.frames_per_clip} at stride {dataset.stride}")
        self.engine = engine
        self.dataset = dataset
        self.sampler = sampler
        self.depth = depth
        self.output = output
        self.layout = layout

    def __aiter__(self) -> AsyncIterator[tuple[torch.Tensor, list[Sample]]]:
        return self.epoch()

    async def epoch(self, epoch: int | None = None) -> AsyncIterator[tuple[torch.Tensor, list[Sample]]]:
        """One pass over the sampler; with ``epoch``, call the sampler's ``set_epoch(epoch)`` first."""
        if epoch is not None:
            set_epoch = getattr(self.sampler, "set_epoch", None)
            if set_epoch is None:
                raise InvalidRequestError(f"{type(self.sampler).__name__} has no set_epoch")
            set_epoch(epoch)
        spec = self.output or self.engine.output
        batches: deque[list[Sample]] = deque()  # batches whose requests the stream has taken, in order

        def requests() -> Iterator[ClipRequest]:
            for batch in self.sampler:
                batch = list(batch)
                request = self.dataset.request(batch)
                batches.append(batch)
                yield request

        # aclosing: when this generator is closed (break, error, cancellation) the stream is closed
        # at once, and its finally cancels the requests still in flight.
        async with contextlib.aclosing(self.engine.stream(requests(), depth=self.depth, output=spec)) as stream:
            async for frames in stream:
                batch = batches.popleft()
                yield self._stack(frames, batch, spec), batch

    def _stack(self, frames: list[torch.Tensor], batch: list[Sample], spec: OutputSpec) -> torch.Tensor:
        """Stack one request's frames into (batch, cameras, frames, ...) in the loader's layout."""
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) != 1:
            raise InvalidRequestError(
                f"frames of batch {batch} differ in size {sorted(shapes)}: give the engine or the loader an "
                "OutputSpec(size=(height, width)) to bring every camera to one size")
        want = "chw" if self.layout == "NCHW" else "hwc"
        if spec.layout != want:
            order = (2, 0, 1) if want == "chw" else (1, 2, 0)
            frames = [f.permute(order) for f in frames]
        out = torch.stack(frames)  # one copy, contiguous in the wanted layout
        return out.view(len(batch), len(self.dataset.index.cameras), self.dataset.frames_per_clip, *out.shape[1:])

    def __len__(self) -> int:
        """Batches per epoch (the sampler's length)."""
        return len(self.sampler)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<ClipLoader {self.dataset!r}, depth {self.depth}, {self.layout}>"
