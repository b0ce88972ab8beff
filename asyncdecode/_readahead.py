"""GOP read-ahead for :meth:`Engine.stream`: clips read front to back decode their next GOPs early.

A clip read one frame per request is decoded by one session at a time: the session that keeps its
place in the GOP goes on frame by frame, and the GOP after it starts only when a request reaches it.
With more decoder threads than clips being read, the others wait. Here the stream watches its
requests per file; where a file's frames come front to back (requests in a row each starting in the
GOP the last one started in, or the next: not random frames that happen to come later; on the CPU
only requests of a frame or two of the file, see :data:`FEW_FRAMES`), the GOPs after the one being
read are decoded whole, ahead, on the threads the files being read leave idle (as many GOPs at once
as threads beyond one per file whose own session is decoding the GOP it reads: a file whose GOPs all
come from the read-ahead leaves every thread to it, so one clip read a frame per request uses all
the threads, not one), and the requests for their frames take them from there instead of decoding
them again.

Where the stream's requests are a list (or another sequence), the read-ahead knows what they will
want: it decodes ahead only frames later requests ask for (none past the clip's last one asked), and
near a clip's end goes on with the GOPs at its start that later requests ask for (the clip read
again: the next epoch finds its first GOPs decoded). Each request plans the nearest GOP ahead of
every file it reads on before the second of any. From an iterator it reads whole GOPs on speculation.

Requests that come one at a time (``submit()``, ``decode()``) go through the engine's own read-ahead:
it reads ahead of a file only once :data:`STREAK` requests in a row went on in it (each starting in
the GOP the last one started in, or the next), so random access never triggers it, and what it
leaves untaken is dropped after :data:`STALE_REQUESTS` requests.

Bounded: what is decoded ahead and not taken yet is at most :data:`BUDGET_BYTES` per stream (by
default 1 GiB, on a GPU a share of its memory: :func:`default_budget`); a GOP is planned only where
its frames fit, after dropping, as wasted, what the file left untaken in GOPs it has gone past; a
request that steps back in a file plans nothing (the file is read on anew from there); leaving the
stream cancels the read-ahead still running and drops the rest.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Awaitable, Callable, Collection
from typing import Any, NamedTuple

from ._output import OutputSpec

_SET = os.environ.get("ASYNCDECODE_READ_AHEAD_BYTES")
BUDGET_BYTES: int | None = int(_SET) if _SET else None
"""Frames decoded ahead and not yet taken, at most, per stream (``ASYNCDECODE_READ_AHEAD_BYTES``);
``None``: :func:`default_budget` of the engine's device."""
GPU_SHARE = 32
"""On a GPU the read-ahead of a stream holds at most this fraction (1/32) of the GPU's memory, within
[1 GiB, 8 GiB]: a 141 GB H200 gets 4.4 GB (6 clips of 1600x900 read a frame per request: 1.38x the
rate with 1 GiB, which held 8 GOPs of RGB frames, under two GOPs per clip), a 24 GB GPU 1 GiB."""


def default_budget(device: str) -> int:
    """The read-ahead budget of a stream on ``device`` where ``ASYNCDECODE_READ_AHEAD_BYTES`` is not
    set: 1 GiB of host memory on the CPU, 1/:data:`GPU_SHARE` of a GPU's memory within [1, 8] GiB."""
    if not str(device).startswith("cuda"):
        return 1 << 30
    import torch

    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return min(8 << 30, max(1 << 30, total // GPU_SHARE))


def budget(device: str) -> int:
    """The read-ahead budget of a stream on ``device``: :data:`BUDGET_BYTES` where it is set, else
    :func:`default_budget`."""
    return BUDGET_BYTES if BUDGET_BYTES is not None else default_budget(device)

current: contextvars.ContextVar[ReadAhead | None | bool] = contextvars.ContextVar("asyncdecode_read_ahead", default=None)
"""The read-ahead of the stream a request belongs to (set for the requests a stream submits); ``None``
elsewhere (the engine's own, for ``submit()`` / ``decode()`` callers); ``False`` inside a read-ahead's
own decode."""

STREAK = 3
"""Requests in a row that went on in a file (each starting in the GOP the last one started in, or the
next) before the engine's read-ahead for ``submit()`` / ``decode()`` callers reads ahead of it."""
FEW_FRAMES: dict[str, int] = {"cpu": 2}
"""On these devices (by kind), read ahead of a file only for requests that ask at most this many of
its frames. On the CPU every decoder thread is a core already decoding: requests of more frames keep
several GOPs in flight by themselves, and a GOP read ahead, whose frames all come when its whole
decode is done, held them back (1600x900, 1 clip, 4 and 16 frames per request: 0.97x with it, 0.82x
earlier). A GPU's sessions wait on the hardware, so the ones the files being read leave idle decode
their next GOPs for requests of any size (6 clips of 16 frames per request on 10 threads, a decoder
of 0.7 ms a picture: 9.9-10.2k frames/s against 7.9-8.7k)."""
DEEP = 4
"""GOPs of a file planned ahead at most where many files share the threads (6 clips on 10 threads: 4,
not 2): the planning goes on ahead of the decoding, so a GOP starts as soon as a thread is free."""
STALE_REQUESTS = 512
"""The engine's read-ahead drops, as wasted, GOPs decoded ahead and left untaken this many requests."""


class Remaining:
    """The frames a stream's later requests ask for, per file (from a sequence of requests): each
    request's frames are struck off when it is planned."""

    LIMIT = 1_000_000
    """Frame ids counted at most: a longer sequence of requests is read ahead on speculation."""

    def __init__(self, requests: Any, pairs: Callable[[Any, Any], list[tuple[str, int]]]) -> None:
        self._wanted: dict[str, dict[int, int]] = {}
        total = 0
        for item in requests:
            try:
                paths, ids = item
                found = pairs(paths, ids)  # the engine's own reading of a request (one key per file)
            except (TypeError, ValueError):  # a malformed request fails by itself when submitted
                continue
            for path, fid in found:
                counts = self._wanted.setdefault(path, {})
                counts[fid] = counts.get(fid, 0) + 1
            total += len(found)
            if total > self.LIMIT:
                raise OverflowError(total)

    def strike(self, groups: dict[tuple[str, int], set[int]]) -> None:
        """A request being planned: its frames are no longer later ones."""
        for (path, _), ids in groups.items():
            counts = self._wanted.get(path)
            if counts is None:
                continue
            for fid in ids:
                left = counts.get(fid, 0) - 1
                if left > 0:
                    counts[fid] = left
                else:
                    counts.pop(fid, None)

    def within(self, path: str, lo: int, hi: int) -> set[int]:
        """Frame ids in ``[lo, hi)`` of ``path`` that later requests ask for."""
        counts = self._wanted.get(path, {})
        return {f for f in range(lo, hi) if f in counts}

    @classmethod
    def of(cls, requests: Any, pairs: Callable[[Any, Any], list[tuple[str, int]]]) -> Remaining | None:
        """What a stream's requests will ask for, where they are a sequence (not too long); else ``None``.
        ``pairs``: a request's ``(paths, frame_ids)`` as ``(path, frame id)`` pairs, as the engine reads it."""
        if isinstance(requests, (str, bytes)) or not isinstance(requests, (list, tuple)):
            return None
        try:
            return cls(requests, pairs)
        except OverflowError:
            return None


class _Gop:
    """One GOP decoded ahead: the task decoding it, then its frames until requests take them."""

    def __init__(self, task: asyncio.Future[dict[int, Any]], nbytes_per_frame: int, count: int, tick: int,
                 next_run: bool = False) -> None:
        self.task = task
        self.tick = tick  # the request that planned it
        self.per_frame = nbytes_per_frame
        self.left = count  # frames not taken yet (their bytes held in the budget)
        self.frames: dict[int, Any] | None = None
        self.next_run = next_run  # before the GOP its file is read at, for when the file is read again


class _Plan(NamedTuple):
    """What the latest request planned: the GOPs ahead of the files it reads on, nearest first."""

    reads: list[tuple[str, int, list[int]]]  # (path, GOP it reads, GOPs to decode ahead)
    indexes: dict[str, Any]
    spec: OutputSpec
    per_file: int
    reading: int  # files whose GOP it decodes on a session of its own


class ReadAhead:
    """The read-ahead of one stream (see the module). Lives on the engine's event loop.

    Args:
        decode_gop: ``(index, gop, frame ids, spec) -> (awaitable of {frame id: frame}, done)``, the
            engine's decode of one GOP (frame cache and ordering included: its place in the GOP's
            line is taken by the call), and what to call once it is over, run or not.
        threads: The engine's decoder threads (how many GOPs may be decoded at once).
        counters: Where ``read_ahead_gops``, ``_frames``, ``_used`` and ``_wasted`` are counted.
        remaining: What the later requests ask for (a sequence of requests), or ``None`` (speculate).
        streak: Requests in a row going on in a file (each starting in the GOP the last one started
            in, or the next) before reading ahead of it: 2 for a stream's requests, which come in
            order; :data:`STREAK` for requests that come one at a time from anywhere, where GOPs left
            untaken :data:`STALE_REQUESTS` requests are also dropped.
        budget_bytes: Bytes of frames held ahead, at most (default :data:`BUDGET_BYTES`, else
            :func:`default_budget` of ``device``).
        device: Where the frames are held.
    """

    def __init__(self, decode_gop: Callable[[Any, int, set[int], OutputSpec],
                                            tuple[Awaitable[dict[int, Any]], Callable[[], None]]],
                 threads: int, counters: Any, remaining: Remaining | None = None,
                 budget_bytes: int | None = None, streak: int = 2, device: str = "cpu") -> None:
        self._decode_gop = decode_gop
        self._remaining = remaining
        self._streak = streak
        self._runs: dict[str, int] = {}  # file -> requests in a row that went on in it
        self._gop_of_last: dict[str, int] = {}
        self._tick = 0  # requests planned
        self._threads = max(1, threads)
        self._n = counters
        self.budget_bytes = budget(device) if budget_bytes is None else budget_bytes
        self.held = 0  # bytes of frames planned or decoded ahead and not taken
        self._gops: dict[tuple[str, int, OutputSpec], _Gop] = {}
        self._last: dict[str, int] = {}  # file -> the first frame the last request asked of it
        self._latest: _Plan | None = None  # the latest request's plan, while it names GOPs to start
        self._few = FEW_FRAMES.get(str(device).split(":")[0], 1 << 30)  # frames of a file per request, at most

    # -- planning (a request's frames grouped by GOP, before they are decoded) ----------------

    def plan(self, groups: dict[tuple[str, int], set[int]], indexes: dict[str, Any], spec: OutputSpec,
             served: Collection[tuple[str, int]] = ()) -> None:
        """Look at one request's frames: read on ahead of the files it reads front to back.
        ``served``: its GOPs whose frames the read-ahead already handed out (:meth:`take_ready`)."""
        firsts: dict[str, tuple[int, int]] = {}  # file -> (first frame, its GOP) in this request
        counts: dict[str, int] = {}  # file -> frames this request asks of it
        for (path, gop), ids in groups.items():
            first = min(ids)
            counts[path] = counts.get(path, 0) + len(ids)
            if path not in firsts or first < firsts[path][0]:
                firsts[path] = (first, gop)
        # Threads the files being read leave idle: as many GOPs decoded ahead at once, at most (with no
        # thread to spare, read-ahead only takes positions the clips' own sessions keep their place in).
        # A file whose GOP this request reads was itself read ahead keeps no thread of its own busy.
        reading = sum(1 for path, (_, gop) in firsts.items()
                      if (path, gop, spec) not in self._gops and (path, gop) not in served)
        per_file = max(1, -(-(self._threads - reading) // max(1, len(firsts))))  # rounded up: every thread
        # Room to plan further than the threads' share (up to DEEP GOPs ahead of a file), so that a GOP
        # is decoding before the stream reaches the one before it; ``spare`` still bounds what runs.
        per_file = max(per_file, min(DEEP, 2 * per_file))
        self._tick += 1
        if self._streak >= STREAK:
            self._drop_stale()
        reads: list[tuple[str, int, list[int]]] = []  # files read on: (path, GOP read, GOPs to plan ahead)
        for path, (first, gop) in firsts.items():
            last = self._last.get(path)
            last_gop = self._gop_of_last.get(path)
            self._gop_of_last[path] = gop
            if last is None or first < last:  # the file's first request, or a step back: no plan
                # (read on from here once requests go on again: a clip read again from its start,
                # the next epoch, is read ahead as the first time, its first GOPs often already
                # decoded, see _ahead_of)
                self._last[path] = first
                self._runs[path] = 0
                for key, entry in self._gops.items():  # what was planned for this run is this run's now
                    if key[0] == path:
                        entry.next_run = False
                continue
            self._last[path] = first
            # Read on, again and again (not random frames that happen to come later in the file).
            went_on = last_gop is not None and gop - last_gop in (0, 1)
            self._runs[path] = self._runs.get(path, 0) + 1 if went_on else 0
            if self._runs[path] < self._streak or counts[path] > self._few:
                continue
            reads.append((path, gop, self._ahead_of(path, gop, len(indexes[path].info.keyframes), per_file)))
        self._latest = _Plan(reads, indexes, spec, per_file, reading) if reads else None
        self._fill()
        if self._remaining is not None:  # after planning: the GOPs read ahead include this request's frames
            self._remaining.strike(groups)

    def _fill(self) -> None:
        """Start GOPs of the latest request's plan on the threads to spare: the engine's, less one per
        file the request decodes on a session of its own, less the GOPs read ahead still decoding.

        Also each time a GOP read ahead is over: while a stream waits for the GOP its next request
        needs, it makes no requests and so no plans, and threads that finished their GOPs stayed idle
        (6 clips of 4 GOPs on 10 threads: 7.7 busy on average). The latest plan is still right then:
        no request came after it, so no GOP it names was asked for since.
        """
        latest = self._latest
        if latest is None:
            return
        spare = self._threads - latest.reading - sum(1 for e in self._gops.values() if not e.task.done())
        # The nearest GOP ahead of every file first, then the next of each (file by file, the first
        # files of the request took every spare thread and the last ones' GOPs were decoded late,
        # frame by frame by their requests).
        full: set[str] = set()  # files the budget has no room for
        spec, indexes = latest.spec, latest.indexes
        for k in range(latest.per_file):
            for path, gop, aheads in latest.reads:
                if spare <= 0:
                    return
                if k >= len(aheads) or path in full or (path, aheads[k], spec) in self._gops:
                    continue
                started = self._start(indexes[path], aheads[k], spec, below=gop, next_run=aheads[k] < gop)
                if started:
                    spare -= 1
                elif started is not None:  # no room (rather than no later request asking for the GOP)
                    full.add(path)

    def _ahead_of(self, path: str, gop: int, gops: int, count: int) -> list[int]:
        """The GOPs to plan ahead of ``gop`` in a file of ``gops`` GOPs read front to back, ``count``
        at most, the nearest first: those after it, then, where the stream's later requests are known
        and ask for them (a clip read again, the next epoch of a list that reads it several times),
        its first GOPs from the start, for the next time it is read. Without them, every new pass
        started with one session per clip decoding its first GOP frame by frame while the others
        waited for the requests to go on far enough to plan (6 clips of 4 GOPs on 10 threads, on a
        decoder taking 0.7 ms a picture: 6.2 threads busy on average)."""
        ahead = list(range(gop + 1, min(gop + 1 + count, gops)))
        if self._remaining is not None:  # the next pass's, within DEEP GOPs of this one: sooner only
            # adds to what the threads decode at once (1 clip of 8 GOPs, 10 threads: a first pass of
            # 57 ms instead of 36, and no pass faster after it)
            ahead += range(0, min(gop, count - len(ahead), DEEP - len(ahead)))
        return ahead

    def _start(self, index: Any, gop: int, spec: OutputSpec, below: int, next_run: bool = False) -> bool | None:
        """Decode a GOP ahead (unless it is already); ``False`` where the budget has no room for it
        (after dropping what the file had ahead of GOPs before ``below``, left untaken), ``None`` where
        no later request asks for its frames. ``next_run``: a GOP before ``below``, for the file's next
        read from its start (not dropped as gone past)."""
        key = (index.path, gop, spec)
        if key in self._gops:
            return True
        info = index.info
        lo = info.keyframes[gop]
        hi = info.keyframes[gop + 1] if gop + 1 < len(info.keyframes) else info.num_frames
        ids = set(range(lo, hi)) if self._remaining is None else self._remaining.within(index.path, lo, hi)
        if not ids:  # no later request asks for this GOP
            return None
        per_frame = spec.frame_bytes(info.height, info.width)
        if self.held + per_frame * len(ids) > self.budget_bytes:
            self._drop(index.path, below=below)
            if self.held + per_frame * len(ids) > self.budget_bytes:
                return False
        self.held += per_frame * len(ids)
        work, done = self._decode_gop(index, gop, ids, spec)
        task = asyncio.ensure_future(self._run(work))
        def over(t: asyncio.Future[dict[int, Any]]) -> None:  # also where it was cancelled before it ran
            if t.cancelled():
                work.close()  # type: ignore[attr-defined]  (a coroutine never started: closed, not left)
            done()
            self._fill()  # a thread is free: the next GOP of the latest plan (none once closed)

        task.add_done_callback(over)
        self._gops[key] = _Gop(task, per_frame, len(ids), self._tick, next_run=next_run)
        self._n.read_ahead_gops += 1
        return True

    async def _run(self, work: Awaitable[dict[int, Any]]) -> dict[int, Any]:
        current.set(False)  # this task's own context: its decode is not served from a read-ahead
        frames = await work
        self._n.read_ahead_frames += len(frames)
        return frames

    # -- taking (a request's decode of one GOP) ------------------------------------------------

    def has(self, path: str, gop: int, spec: OutputSpec) -> bool:
        return (path, gop, spec) in self._gops

    async def take(self, path: str, gop: int, spec: OutputSpec, wanted: set[int]) -> dict[int, Any]:
        """The frames of ``wanted`` the GOP read ahead holds (each frame given once; waits for the
        GOP's decode). A read-ahead that failed or was cancelled gives none: the caller decodes."""
        entry = self._gops.get((path, gop, spec))
        if entry is None:
            return {}
        try:
            frames = await asyncio.shield(entry.task)
        except asyncio.CancelledError:
            if entry.task.cancelled():
                return {}
            raise  # this request was cancelled
        except Exception:  # the request's own decode raises the GOP's error for it
            return {}
        return self._hand_out(entry, (path, gop, spec), frames, wanted)

    def ready(self, path: str, gop: int, spec: OutputSpec, wanted: set[int]) -> bool:
        """Whether the GOP's decode ahead is over and holds every wanted frame: :meth:`take_ready`
        then hands them out without a task, a future or a place in the GOP's line."""
        entry = self._gops.get((path, gop, spec))
        if entry is None or not entry.task.done() or entry.task.cancelled() or entry.task.exception() is not None:
            return False
        frames = entry.frames if entry.frames is not None else entry.task.result()
        return all(fid in frames for fid in wanted)

    def take_ready(self, path: str, gop: int, spec: OutputSpec, wanted: set[int]) -> dict[int, Any]:
        """:meth:`take` without waiting, where :meth:`ready` said so (nothing awaited in between)."""
        entry = self._gops[(path, gop, spec)]
        return self._hand_out(entry, (path, gop, spec), entry.task.result(), wanted)

    def _hand_out(self, entry: _Gop, key: tuple[str, int, OutputSpec], frames: dict[int, Any],
                  wanted: set[int]) -> dict[int, Any]:
        if entry.frames is None:
            entry.frames = dict(frames)
        got = {fid: entry.frames.pop(fid) for fid in wanted if fid in entry.frames}
        self._n.read_ahead_used += len(got)
        self._release(entry, len(got))
        if entry.left == 0:
            self._gops.pop(key, None)
        return got

    # -- dropping ------------------------------------------------------------------------------

    def _release(self, entry: _Gop, frames: int) -> None:
        entry.left -= frames
        self.held -= frames * entry.per_frame

    def _drop(self, path: str, below: int) -> None:
        """Drop what ``path`` has decoded ahead, untaken, of GOPs before ``below``."""
        for key in [k for k, e in self._gops.items()
                    if k[0] == path and k[1] < below and e.task.done() and not e.next_run]:
            self._discard(key)

    def _drop_stale(self) -> None:
        """Drop GOPs decoded ahead that nobody took for :data:`STALE_REQUESTS` requests."""
        stale = self._tick - STALE_REQUESTS
        for key in [k for k, e in self._gops.items() if e.tick < stale and e.task.done()]:
            self._discard(key)
        if len(self._last) > 4 * STALE_REQUESTS:  # files not read lately: forget them
            for path in list(self._last)[: len(self._last) - 2 * STALE_REQUESTS]:
                for table in (self._last, self._runs, self._gop_of_last):
                    table.pop(path, None)

    def _discard(self, key: tuple[str, int, OutputSpec]) -> None:
        entry = self._gops.pop(key)
        task = entry.task
        if not task.done():
            task.cancel()
        elif not task.cancelled() and task.exception() is None:  # decoded, and never taken
            self._n.read_ahead_wasted += entry.left
        self._release(entry, entry.left)
        entry.frames = None

    async def close(self) -> None:
        """Cancel the read-ahead still running and drop every frame held (the stream ends)."""
        self._latest = None  # the GOPs cancelled below start nothing when they end
        tasks = [e.task for e in self._gops.values()]
        for key in list(self._gops):
            self._discard(key)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
