"""The decoder-thread interface every backend implements.

A :class:`Backend` describes a device and makes :class:`Session` objects. Each decoder thread owns one
session for its whole life: the session keeps its decoder between GOPs and files (flushing between
GOPs, reconfiguring when the stream's parameters change) and is closed by that thread when it stops.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, ContextManager

import numpy as np
import torch

from .. import _faults
from .._output import ColorParams, OutputSpec
from ..errors import AsyncDecodeError, CorruptDataError, DeviceMemoryError
from ..gop import FLAG_DISPOSABLE, GopBundle

log = logging.getLogger("asyncdecode")


def feed_plan(table: Any, wanted: Collection[int], after: int = -1) -> list[int]:
    """Which packets of a bundle to feed for ``wanted``, starting after decode-order index ``after``.

    Returns the decode-order indices to feed: up to the last packet that shows a wanted frame
    (nothing later is needed: references come earlier in decode order, and frames held back for
    reordering come out when the decoder is drained), leaving out disposable pictures that are not
    wanted. From the keyframe (``after=-1``) with no wanted frame in the bundle at all, every packet
    (the caller then reports the frames that never came out).
    """
    fids = table["frame_id"]
    hits = np.isin(fids, np.fromiter(wanted, np.int64, len(wanted)))
    hits[: after + 1] = False
    if not hits.any():
        return list(range(len(table))) if after < 0 else []
    last = int(np.flatnonzero(hits)[-1])
    keep = ~((table["flags"][: last + 1] & FLAG_DISPOSABLE).astype(bool) & ~hits[: last + 1])
    keep[: after + 1] = False
    return np.flatnonzero(keep).tolist()


_OUT_OF_MEMORY = re.compile(r"out[ _]of[ _]memory", re.IGNORECASE)


def memory_error(exc: Exception, bundle: GopBundle, frame_id: int, device: str) -> DeviceMemoryError | None:
    """The engine error for a decode that ran out of memory, whichever library said so (torch's
    ``OutOfMemoryError``, a CUDA or driver error that names it, ``MemoryError`` on the host); ``None``
    for any other failure."""
    if not (isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))
            or (isinstance(exc, RuntimeError) and _OUT_OF_MEMORY.search(str(exc)))):
        return None
    return DeviceMemoryError(
        f"{bundle.source}: out of memory on {device} decoding the GOP at frame {bundle.first_frame_id} "
        f"({type(exc).__name__}: {exc}); fewer requests in flight or smaller outputs need less",
        path=bundle.source, frame_id=frame_id, device=device)


@dataclass
class NativeStep:
    """What one call into a native decode loop did (see :class:`NativeRun`)."""

    fed: list[int]
    """Decode-order indices of the packets fed, in order."""
    frames: list[tuple[int, Any]]
    """``(frame id, output or None)`` of each picture shown and dealt with: converted (wanted), or dropped."""
    for_python: list[Any]
    """Pictures shown that Python takes (kept for later jobs, or not in the bundle)."""
    more: bool
    """Call again: packets are left and wanted frames are not all out."""
    left: list[int] | None = None
    """Packets Python feeds instead: the loop gave up (the stream's format changed)."""
    extra: list[tuple[int, Any]] = field(default_factory=list)
    """``(frame id, output)`` of pictures collected on the way (see :meth:`Session.decode`'s ``collect``)."""


class NativeRun(abc.ABC):
    """One job's packets fed by a loop outside Python, which converts the wanted frames itself."""

    @abc.abstractmethod
    def start(self, indices: list[int], lag: bool) -> None:
        """Feed these packets next (decode-order indices), the pictures of each taken once the next is
        in when ``lag``."""

    @abc.abstractmethod
    def step(self) -> NativeStep:
        """Feed some of the packets (a bounded number: the caller checks for cancellation in between)."""

    @abc.abstractmethod
    def flush(self) -> NativeStep:
        """End of stream: the pictures held back."""


class DecodeCancelled(Exception):
    """Raised inside a session when the job's request was cancelled mid-GOP."""


@dataclass
class DecodeResult:
    """Frames one job produced."""

    frames: dict[int, Any]
    """Wanted frame id -> output tensor (or tuple of plane tensors when no output spec was given)."""
    decoded: int = 0
    """Pictures the decoder produced for this job, wanted or not (the cost of the job)."""
    fed: int = 0
    """Packets fed to the decoder."""
    continued: bool = False
    """The job went on from where the session's previous job in the same GOP stopped."""
    extra: dict[int, Any] = field(default_factory=dict)
    """Frames that came out on the way and no job asked for, converted: only when the job collects them."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage (``decode_s``, ``convert_s``)."""
    copies: dict[int, list[Any]] = field(default_factory=dict)
    """Wanted frame id -> copies of its frame made on the decoder thread for the other requests that
    share the job and asked for it too, and for the frame cache (the loop thread hands them out; see
    the pool's jobs)."""
    kept: dict[int, Any] = field(default_factory=dict)
    """A request's share only: wanted frame id -> a copy of its frame for the request's caller to keep
    (the frame cache), where it asked for one."""


@dataclass(eq=False)
class Position:
    """Where a session stopped inside a GOP: a later job in the same GOP can go on from there."""

    bundle: GopBundle
    decoder: Any
    """The backend's decoder, holding the GOP's pictures (nobody else feeds it meanwhile)."""
    last: int = -1
    """Decode-order index of the last packet fed."""
    pending: set[int] = field(default_factory=set)
    """Frame ids fed whose pictures have not come out yet."""
    drained: bool = False
    """The decoder was drained at the end of the GOP: nothing more can be fed, only ``ahead`` is left."""
    ahead: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    """Frames that came out beyond what the last job asked for: id -> (output spec or ``RAW``, frame)."""

    def has(self, fid: int, output: OutputSpec | None) -> bool:
        kept = self.ahead.get(fid)
        return kept is not None and (kept[0] is RAW or kept[0] == output)

    def serves(self, wanted: Collection[int], output: OutputSpec | None) -> bool:
        """Whether every wanted frame of the bundle can still come out from here."""
        if self.drained:
            return all(self.has(f, output) for f in wanted)
        index = self.bundle.decode_index
        return all(f in self.pending or index.get(f, -1) > self.last or self.has(f, output) for f in wanted)


RAW = object()
"""Marks a frame kept as the decoder gave it (converted when a job takes it)."""


def _never() -> bool:
    return False


class DecoderCounts:
    """Decoders a session made, and switched to another stream shape in place (a reconfigure)."""

    __slots__ = ("created", "reconfigured")

    def __init__(self) -> None:
        self.created = 0
        self.reconfigured = 0


class SpareDecoders:
    """Free decoders, drained and ready for a keyframe, by class (``key``), the least recently given
    back first; bounded by a count and by the device memory they hold (the least recently used go
    first: ``close``d), and, with ``max_idle_s``, by time: a decoder not taken for that long goes
    unless it is the last of its key, or its key ran short (a :meth:`take` found none free, so a job
    made one) within the last ``burst_s``. So the pool holds what the work of late needs: the
    decoders a size's bursts take at once stay while such bursts recur (made again for each burst,
    they would cost a decoder's creation on a job's path every time, and churn host and device
    memory), and go, down to one, once the bursts stop, rather than the pool growing, burst by
    burst, to its bounds. Thread-safe: a session's own, or one shared by all sessions of a device (a
    decoder taken by one thread is that thread's until it is given back).

    Args:
        max_count: Decoders kept at most.
        max_bytes: Device memory they may hold together, about (0: no bound but ``max_count``); at
            least one is kept, however large.
        nbytes: The device memory one decoder holds (asked when it is given back).
        close: Frees a decoder that goes (called outside the lock; must not raise).
        max_idle_s: A free decoder not taken for this long is closed, the newest of each key
            excepted (0: never by time); looked at when decoders are given back and when
            :meth:`expire` is called (idle threads do), at most once a second.
        burst_s: ...unless its key ran short within this many seconds (0: the idle time alone
            decides).
    """

    def __init__(self, max_count: int, max_bytes: int = 0, *, nbytes: Callable[[Any], int] = lambda d: 0,
                 close: Callable[[Any], None] = lambda d: None, max_idle_s: float = 0.0,
                 burst_s: float = 0.0) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_idle_s = max_idle_s
        self.burst_s = burst_s
        self._short: dict[Hashable, float] = {}  # key -> when a take() last found none free
        self._nbytes = nbytes
        self._close = close
        self._lock = threading.Lock()
        self._free: list[tuple[Hashable, Any, int, float]] = []  # (key, decoder, bytes, given at), oldest first
        self._bytes = 0
        self._looked = time.monotonic()  # when expire() last looked
        self.expired = 0
        """Decoders closed for having been idle too long, so far."""
        self._claims: set[Hashable] = set()
        self._kept: set[Hashable] = set()  # keys a decoder was ever given back for
        self._count: dict[Hashable, int] = {}  # key -> free decoders of it (the scheduler asks often)

    def fit(self, key: Hashable, fit: Callable[[Any], int]) -> int:
        """0 when no free decoder of ``key`` is here, else 1 + the best ``fit`` among them."""
        if not self._count.get(key):  # the scheduler's common question, answered without the lock
            return 0
        with self._lock:
            return max((1 + fit(d) for k, d, _, _ in self._free if k == key), default=0)

    def _counted(self, key: Hashable, n: int) -> None:
        left = self._count.get(key, 0) + n
        if left:
            self._count[key] = left
        else:
            del self._count[key]

    def take(self, key: Hashable, fit: Callable[[Any], int]) -> Any | None:
        """The free decoder of ``key`` that fits best (the most recently given back of equals), now the
        caller's; ``None`` when there is none (the key ran short: see ``burst_s``)."""
        if not self._count.get(key):
            with self._lock:
                self._ran_short(key)
            return None
        with self._lock:
            best, best_fit = -1, -1
            for i in range(len(self._free) - 1, -1, -1):
                if self._free[i][0] == key:
                    f = fit(self._free[i][1])
                    if f > best_fit:
                        best, best_fit = i, f
            if best < 0:
                self._ran_short(key)
                return None
            key, decoder, nbytes, _ = self._free.pop(best)
            self._bytes -= nbytes
            self._counted(key, -1)
            return decoder

    def give(self, key: Hashable, decoder: Any) -> None:
        """Keep a drained decoder for later jobs of ``key``; the least recently used beyond the
        bounds go."""
        nbytes = self._nbytes(decoder)
        gone = []
        with self._lock:
            self._free.append((key, decoder, nbytes, time.monotonic()))
            self._kept.add(key)
            self._bytes += nbytes
            self._counted(key, 1)
            free = self._free
            while len(free) > self.max_count or (self.max_bytes and len(free) > 1 and self._bytes > self.max_bytes):
                old_key, old, old_bytes, _ = free.pop(0)
                self._bytes -= old_bytes
                self._counted(old_key, -1)
                gone.append(old)
        for old in gone:
            self._close(old)
        self.expire()

    def _ran_short(self, key: Hashable) -> None:
        """A take() found no free decoder of ``key`` (the lock held)."""
        if self.burst_s:
            self._short[key] = time.monotonic()

    def expire(self) -> int:
        """Close the free decoders not taken for ``max_idle_s``, each key's newest excepted (at most
        once a second; a cheap no-op otherwise). Returns how many went."""
        now = time.monotonic()
        if not self.max_idle_s or now - self._looked < 1.0:
            return 0
        gone = []
        with self._lock:
            self._looked = now
            short = now - self.burst_s
            for key in [k for k, t in self._short.items() if t < short]:
                del self._short[key]  # bounded: only the keys short within burst_s are kept
            since = now - self.max_idle_s
            free = self._free
            if not free or free[0][3] >= since:  # oldest first: none idle that long
                return 0
            newest = {entry[0]: i for i, entry in enumerate(free)}
            kept = []
            for i, entry in enumerate(free):
                if entry[3] < since and newest[entry[0]] != i and entry[0] not in self._short:
                    gone.append(entry[1])
                    self._bytes -= entry[2]
                    self._counted(entry[0], -1)
                else:
                    kept.append(entry)
            self._free = kept
            self.expired += len(gone)
        for old in gone:
            self._close(old)
        return len(gone)

    def room(self, key: Hashable) -> int:
        """For making the first decoder of ``key`` ahead of its jobs: the bytes it could hold without
        pushing another out, and ``key`` claimed for the caller; 0 (no claim) when a decoder of
        ``key`` was kept here before (its jobs make more where they run at once: a decoder made
        ahead for those would be made while the others decode, for a moment's use), another caller
        is making one, or there is no room. Give the claim back with :meth:`unclaim` (after
        :meth:`give`)."""
        self.expire()
        with self._lock:
            if key in self._claims or key in self._kept or len(self._free) >= self.max_count:
                return 0
            left = (self.max_bytes - self._bytes) if self.max_bytes else 1 << 62
            if left <= 0:
                return 0
            self._claims.add(key)
            return left

    def unclaim(self, key: Hashable) -> None:
        with self._lock:
            self._claims.discard(key)

    def keys(self) -> list[Hashable]:
        """The keys of the free decoders, oldest first (one entry per decoder)."""
        with self._lock:
            return [k for k, _, _, _ in self._free]

    def newest(self) -> Any | None:
        """The decoder given back last (``None`` when none is free)."""
        with self._lock:
            return self._free[-1][1] if self._free else None

    @property
    def nbytes(self) -> int:
        """Device memory the free decoders hold together, about."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._free)

    def clear(self) -> None:
        """Close every free decoder (taken ones stay their takers')."""
        with self._lock:
            gone = [d for _, d, _, _ in self._free]
            self._free.clear()
            self._count.clear()
            self._bytes = 0
        for decoder in gone:
            self._close(decoder)


class Session(abc.ABC):
    """Decoders used by one thread."""

    positions: dict[int, Position]
    """``id(bundle)`` -> where the session stopped in that GOP (see :meth:`decode`'s ``keep``)."""
    counts: DecoderCounts
    """Decoders made and reconfigured so far (written by the session's thread, read by anyone)."""

    def fits(self, bundle: GopBundle) -> int:
        """How ready the session is for ``bundle`` (0: it would make a decoder; more is readier).
        Called from other threads: a hint for the scheduler, never a promise."""
        return 0

    def prepare(self) -> bool:
        """Make, while the thread has nothing to do, one decoder a later job will want (off the jobs'
        critical path); whether it made one. Default: nothing to prepare."""
        return False

    @abc.abstractmethod
    def decode(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec | None,
               cancelled: Callable[[], bool], keep: Callable[[], bool] = _never,
               collect: bool = False) -> DecodeResult:
        """Decode ``bundle`` until every frame id in ``wanted`` is out.

        With ``output=None`` each frame comes back as the decoder's own planes (a tuple of integer
        tensors, Y then chroma, cropped to the display size): what backends are compared on.

        Packets are fed in decode order from the keyframe, or from where the session's previous job
        in the same bundle stopped when that still reaches every wanted frame. Feeding stops as
        soon as the last wanted frame is out; disposable pictures that are not wanted are not fed.
        Frames the decoder holds back come out by draining it, which ends the position, unless
        a job further on is waiting (``keep()``) or a clip is being read on: then further packets
        are fed until the wanted frames are out, and the session keeps its place in the GOP.

        With ``collect`` (and an output spec), the other frames that come out are converted too and
        returned in :attr:`DecodeResult.extra` (for a cache of decoded frames).

        Raises:
            CorruptDataError: the packets do not decode, or a wanted frame never comes out.
            UnsupportedStreamError: the stream cannot be decoded by this backend.
            DecodeCancelled: ``cancelled()`` became true.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Free the decoders. Idempotent."""


class PacketSession(Session):
    """Decoders that take one packet at a time and return the frames it shows.

    Plans what to feed, goes on from kept positions (one decoder each, up to ``max_positions``,
    least recently used given up first), matches frames to ids by timestamp and counts the work;
    subclasses drive their decoders through the ``_create`` .. ``_fail`` hooks.
    """

    kind: str = ""
    """Backend name for messages."""
    device: str = "cpu"
    max_positions: int = 4
    """GOPs a session keeps its place in at once (clips read side by side by fewer threads)."""
    max_spares: int = 4
    """Free decoders a session keeps for later jobs, at most (least recently used given up first)."""
    spare_bytes: int = 0
    """Device memory the free decoders may take together, about (0: no bound but ``max_spares``)."""
    spare_idle_s: float = 0.0
    """A free decoder not taken for this long is closed, the last of its key excepted (0: never)..."""
    spare_burst_s: float = 0.0
    """...unless its key ran short (a job found none free) within this many seconds (0: no such exception)."""

    def __init__(self) -> None:
        self.positions: OrderedDict[int, Position] = OrderedDict()
        self.spares = SpareDecoders(self.max_spares, self.spare_bytes, nbytes=self._decoder_bytes,
                                    close=self._throw_away, max_idle_s=self.spare_idle_s,
                                    burst_s=self.spare_burst_s)
        """Free decoders (the session's own; a subclass may share one between the sessions of a device)."""
        self.counts = DecoderCounts()

    def fits(self, bundle: GopBundle) -> int:
        return self.spares.fit(self._key(bundle), lambda d: self._fit(d, bundle))

    def prepare(self) -> bool:
        self.spares.expire()  # an idle thread: free decoders no job took for a while go
        return False

    def decode(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec | None,
               cancelled: Callable[[], bool], keep: Callable[[], bool] = _never,
               collect: bool = False) -> DecodeResult:
        remaining = {int(f) for f in wanted}
        pos = self.positions.get(id(bundle))
        if pos is not None and not pos.serves(remaining, output):
            self._release(pos)
            pos = None
        result = DecodeResult(frames={}, continued=pos is not None)
        collect = collect and output is not None
        params = ColorParams.resolve(bundle.color_space, bundle.color_range, bundle.pix_fmt)
        t0 = time.perf_counter()
        t_conv = 0.0
        if pos is not None:
            self.positions.move_to_end(id(bundle))
            for fid in [f for f in remaining if pos.has(f, output)]:
                kind, frame = pos.ahead.pop(fid)
                result.frames[fid] = self._convert(frame, bundle, params, output) if kind is RAW else frame
                remaining.discard(fid)
            if not remaining:
                if pos.drained and not pos.ahead:
                    self._release(pos)
                result.timings = {"decode_s": 0.0, "convert_s": time.perf_counter() - t0}
                return result
        fid_of = bundle.frame_of_pts
        table = bundle.packets
        rows = bundle.rows
        furthest = max(remaining)
        soon = False  # a job for frames further on in this GOP is waiting
        native: Any = None  # the job's run through a native loop (made at the first feed), False: none

        def take(frames: list[Any]) -> None:
            nonlocal t_conv
            for frame in frames:
                result.decoded += 1
                fid = fid_of.get(self._pts(frame))
                pos.pending.discard(fid)
                if fid in remaining:
                    tc = time.perf_counter()
                    if _faults.armed:
                        _faults.hit("convert", bundle.source)
                    result.frames[fid] = self._convert(frame, bundle, params, output)
                    t_conv += time.perf_counter() - tc
                    remaining.discard(fid)
                elif fid is not None:
                    tc = time.perf_counter()
                    kept = self._keep_ahead(frame, bundle, params, output, soon) if fid > furthest else None
                    if kept is not None:
                        pos.ahead[fid] = kept
                    elif collect and fid not in result.frames:
                        result.extra[fid] = self._convert(frame, bundle, params, output)
                    t_conv += time.perf_counter() - tc

        def absorb(step: NativeStep) -> None:
            """Account for what a native run fed and showed; Python takes the pictures left to it."""
            if step.fed:
                result.fed += len(step.fed)
                pos.last = step.fed[-1]
                pos.pending.update(rows[i][3] for i in step.fed)
            for fid, frame in step.frames:
                result.decoded += 1
                pos.pending.discard(fid)
                if frame is not None:
                    result.frames[fid] = frame
                    remaining.discard(fid)
            for fid, frame in step.extra:
                result.decoded += 1
                pos.pending.discard(fid)
                result.extra[fid] = frame
            take(step.for_python)

        def feed(indices: Iterable[int]) -> None:
            nonlocal native
            if native is None and remaining:
                indices = list(indices)
                extras: set[int] = set()
                if collect:  # what comes out on the way: the frames of the packets fed, short of the last wanted
                    index = bundle.decode_index
                    extras = {f for f in (rows[i][3] for i in indices) if f < furthest and f in index}
                    extras |= {f for f in pos.pending if f < furthest and f in index}
                    extras -= remaining
                    extras -= pos.ahead.keys()
                if _faults.armed:
                    _faults.hit("convert", bundle.source)
                native = self._native_run(pos.decoder, bundle, params, output, remaining, furthest,
                                          sorted(extras)) or False
            if native:
                native.start(list(indices), self._lag(pos.decoder, bundle))
                while True:
                    if cancelled():
                        raise DecodeCancelled
                    step = native.step()
                    absorb(step)
                    if _faults.armed:
                        _faults.hit("decode", bundle.source, count=len(step.fed))
                    if not step.more:
                        break
                if step.left is None:
                    return
                native = False  # the stream's format changed: Python feeds what is left
                indices = step.left
            lag = self._lag(pos.decoder, bundle)
            held: list[Any] = []  # with lag: the last packet's pictures, taken once the next one is in
            for i in indices:
                if cancelled():
                    raise DecodeCancelled
                if _faults.armed:
                    _faults.hit("decode", bundle.source)
                result.fed += 1
                pos.last = i
                pos.pending.add(rows[i][3])
                out = self._send(pos.decoder, bundle, i)
                if lag:
                    shown = held + out
                    if remaining.issubset(fid_of.get(self._pts(f)) for f in shown):  # the job ends here
                        out, held = shown, []
                    else:
                        out, held = held, out
                take(out)
                if not remaining:
                    break
            take(held)

        try:
            with self._job(bundle):
                if pos is None:
                    # A clip read on: this job wants several frames, or a job further on is waiting.
                    pos = self._open(bundle, reads_on=len(remaining) > 1 or keep())
                feed(feed_plan(table, remaining, pos.last))
                if remaining:
                    # A waiting job further on, or a clip being read on (this job went on from the last,
                    # or asks for several frames): feed on rather than drain, held-back frames come out
                    # as the next packets go in, and the session keeps its place.
                    soon = keep() or result.continued or len(wanted) > 1
                    if soon:
                        feed(range(pos.last + 1, len(table)))
                if remaining:
                    if native:
                        absorb(native.flush())
                    else:
                        take(self._drain(pos.decoder))
                    pos.drained = True
                    if not pos.ahead:
                        self._release(pos)
                self._finish(result)
        except DecodeCancelled:
            if pos is not None:
                self._release(pos)
            raise
        except BaseException as exc:
            if pos is not None:
                self.positions.pop(id(bundle), None)  # its decoder is thrown away
                self._throw_away(pos.decoder)
            error = None
            if isinstance(exc, Exception) and not isinstance(exc, AsyncDecodeError):
                # A native run fails after a chunk, perhaps with every wanted frame made: name the job's first.
                frame_id = int(min(remaining or wanted, default=bundle.first_frame_id))
                error = memory_error(exc, bundle, frame_id, self.device) or self._fail(bundle, exc, frame_id)
            if error is None:
                raise
            raise error from exc
        if remaining:
            raise CorruptDataError(
                f"{bundle.source}: the {self.kind} decoder did not output frame(s) {sorted(remaining)} of "
                f"the GOP at frame {bundle.first_frame_id} (damaged or undecodable data)",
                path=bundle.source, frame_id=min(remaining), device=self.device)
        result.timings = {"decode_s": time.perf_counter() - t0 - t_conv, "convert_s": t_conv}
        return result

    def _open(self, bundle: GopBundle, reads_on: bool = False) -> Position:
        """A position at the keyframe of ``bundle``, on a free decoder of its kind or a new one."""
        while len(self.positions) >= self.max_positions:
            self._release(next(iter(self.positions.values())))
        decoder = self._take_spare(bundle)
        if decoder is None:
            decoder = self._create(bundle)
        try:
            self._start(decoder, bundle, reads_on)
        except BaseException:
            self._throw_away(decoder)
            raise
        pos = self.positions[id(bundle)] = Position(bundle, decoder)
        return pos

    def _release(self, pos: Position) -> None:
        """Give up a position: its decoder drops what it holds and waits, free, for a keyframe."""
        if self.positions.get(id(pos.bundle)) is pos:
            del self.positions[id(pos.bundle)]
        pos.ahead.clear()
        if not pos.drained:
            try:
                self._discard(pos.decoder, pos.bundle)
            except Exception:  # a decoder that cannot even drain is thrown away
                self._throw_away(pos.decoder)
                return
        self._give_spare(pos.bundle, pos.decoder)

    def _take_spare(self, bundle: GopBundle) -> Any | None:
        """A free decoder for ``bundle``'s stream (the best fitting), or ``None``."""
        return self.spares.take(self._key(bundle), lambda d: self._fit(d, bundle))

    def _give_spare(self, bundle: GopBundle, decoder: Any) -> None:
        """Keep a drained decoder for later jobs (bounded: see :class:`SpareDecoders`)."""
        self.spares.give(self._key(bundle), decoder)

    def _throw_away(self, decoder: Any) -> None:
        try:
            self._close_decoder(decoder)
        except Exception as exc:  # a broken decoder: what it holds goes with the garbage collector
            log.debug("asyncdecode: closing a %s decoder failed: %s", self.kind, exc)

    def close(self) -> None:
        self.positions.clear()
        self.spares.clear()

    # -- hooks --------------------------------------------------------------------------------

    def _job(self, bundle: GopBundle) -> ContextManager[Any]:
        """Context the whole job runs in (a CUDA stream, say)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def _key(self, bundle: GopBundle) -> Hashable:
        """Which decoders can decode ``bundle`` (codec, parameters, size ...)."""

    @abc.abstractmethod
    def _create(self, bundle: GopBundle) -> Any:
        """A new decoder for ``bundle``'s stream (counted in :attr:`counts` where it is made)."""

    def _fit(self, decoder: Any, bundle: GopBundle) -> int:
        """How well a free decoder of ``bundle``'s class takes it (higher: less to do). Default: 1."""
        return 1

    def _decoder_bytes(self, decoder: Any) -> int:
        """Device memory a free decoder holds, about (for ``spare_bytes``). Default: 0."""
        return 0

    def _start(self, decoder: Any, bundle: GopBundle, reads_on: bool) -> None:
        """Set a decoder, ready for a keyframe, up for the GOP it is about to decode; ``reads_on``: a
        clip is read on from here (several frames of the GOP wanted, or jobs further on waiting)."""

    def _close_decoder(self, decoder: Any) -> None:
        """Free a decoder the session gives up now (default: leave it to the garbage collector)."""

    @abc.abstractmethod
    def _send(self, decoder: Any, bundle: GopBundle, i: int) -> list[Any]:
        """Feed packet ``i``; the frames that came out."""

    @abc.abstractmethod
    def _drain(self, decoder: Any) -> list[Any]:
        """End of stream: the frames held back; the decoder is ready for a keyframe afterwards."""

    def _native_run(self, decoder: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None,
                    wanted: Collection[int], furthest: int, extras: Collection[int] = ()) -> NativeRun | None:
        """A run of this job's packets through a native loop that converts the wanted frames itself
        (made once per job, at its first feed), and ``extras`` where they come out on the way (the job
        collects them); ``None`` (default): Python feeds and takes every picture."""
        return None

    def _lag(self, decoder: Any, bundle: GopBundle) -> bool:
        """Whether the pictures a packet shows may be converted after the next packet is sent (so the
        decoder works on that one meanwhile). Only where a shown picture stays intact while the
        next packet decodes. Default: no."""
        return False

    def _discard(self, decoder: Any, bundle: GopBundle) -> None:
        """Drop what the decoder holds, fed from ``bundle`` (default: drain and ignore the frames)."""
        self._drain(decoder)

    def _keep_ahead(self, frame: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None,
                    soon: bool) -> tuple[Any, Any] | None:
        """What to keep of a frame beyond the job's last that came out: ``(RAW, frame)`` when the decoder
        lets frames live on (converted when taken), or ``(output, converted)``; ``None``: drop it.
        Default: convert and keep it only when a job for it is waiting (``soon``)."""
        if not soon:
            return None
        return output, self._convert(frame, bundle, params, output)

    @abc.abstractmethod
    def _pts(self, frame: Any) -> int:
        """Presentation timestamp of a decoded frame."""

    @abc.abstractmethod
    def _convert(self, frame: Any, bundle: GopBundle, params: ColorParams, output: OutputSpec | None) -> Any:
        """The output tensor (or native planes) of a wanted frame."""

    def _finish(self, result: DecodeResult) -> None:
        """The job's frames are all out: make them safe to hand over."""

    @abc.abstractmethod
    def _fail(self, bundle: GopBundle, exc: Exception, frame_id: int) -> BaseException | None:
        """The engine error for a decoder failure (``None``: not the decoder's, raise as is)."""


NVDEC_LIBRARIES = ("libnvcuvid", "PyNvVideoCodec")
"""The libraries the NVDEC backend can drive, in the order it tries them when none is named."""


class Backend(abc.ABC):
    """A kind of decoder on one device."""

    name: str
    device: torch.device
    library: str = ""
    """The decoder library the backend drives (shown in ``Engine.stats()`` and the engine's log)."""

    @abc.abstractmethod
    def check(self, bundle: GopBundle) -> None:
        """Raise :class:`~asyncdecode.errors.UnsupportedStreamError` if the stream cannot be decoded."""

    @abc.abstractmethod
    def new_session(self) -> Session:
        """A fresh session; called once per decoder thread, on that thread."""

    def default_sessions(self) -> int:
        """How many decoder threads saturate this backend by default."""
        return 1

    def opening(self, threads: int) -> None:
        """An engine is about to start ``threads`` decoder threads on this backend (before their
        sessions are made): settings that depend on the count are decided here."""
