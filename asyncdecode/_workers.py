"""Decoder threads: each owns one backend session and takes decode jobs from one bounded queue.

The event loop puts jobs; threads report back only through ``loop.call_soon_threadsafe``. The queue
never holds more than ``capacity`` jobs: the loop takes a slot (an asyncio semaphore) before it puts
a job and the slot is given back when the job's result is delivered. Waiting for a slot is the
engine's backpressure, visible as ``queue_waiting`` in ``stats()``.

Jobs go to the session that can go on with them: a thread that stopped inside a GOP without
draining its decoder (because a job further on in that GOP was waiting) takes that job next, and
the other threads leave jobs further on in a GOP that another thread is decoding to that thread.
Reading frames t, t+1, ... of a clip so costs about one decode per frame, not one GOP per request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

import torch

from . import _faults, _trim
from ._backends import Backend, DecodeCancelled, DecodeResult, Session
from ._output import OutputSpec
from .errors import AsyncDecodeError
from .gop import GopBundle

log = logging.getLogger("asyncdecode")

#: An idle thread looks at the queue again after this long even if nobody woke it: a safety net, so
#: that a job can never wait forever on a thread that does not know it is now the one to take it.
_RECHECK_S = 0.05
#: A thread looks this far down the queue for a job a free decoder is ready for (a set of many shapes:
#: jobs of every shape in flight are in view, so threads take those whose decoder is free rather than
#: make another decoder of a busy shape).
_AFFINITY_WINDOW = 64
#: A job that threads passed over this many times for later ones is taken next, decoder or not.
_PASS_LIMIT = 16
#: ``Session.fits`` at or above which a job is taken at once (a free decoder takes it as it is or in place).
_READY = 2


class DecodeJob:
    """One GOP to decode for one request: the bundle, the wanted frame ids and the future to complete."""

    __slots__ = ("bundle", "wanted", "first", "output", "future", "cancelled", "waiters", "collect", "claims",
                 "kept", "passed")

    def __init__(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec,
                 future: asyncio.Future[DecodeResult], collect: bool = False) -> None:
        self.bundle = bundle
        self.wanted = wanted
        self.first = min(wanted, default=-1)
        self.output = output
        self.future = future
        self.cancelled = False  # written by the loop thread, read by the decoder thread
        self.waiters = 1  # requests waiting for this job (more when later ones were merged in)
        self.collect = collect  # also return the other frames that come out (for the frame cache)
        self.claims = dict.fromkeys(wanted, 1)
        """Frame id -> takers still to take it (loop thread only; a request, and a copy it keeps for
        the frame cache): the last one takes the decoded tensor itself, the others copies."""
        self.kept: set[int] = set()
        """Frame ids a request of the job takes a copy of to keep (loop thread only): one is enough."""
        self.passed = 0  # times a thread took a later job first (decoder threads, under the pool's lock)

    def copy_ahead(self, result: DecodeResult) -> None:
        """On the decoder thread, once the job is decoded: the copies :meth:`take` will hand to the
        requests that share a frame, made here rather than on the event loop (a copy there, a GPU
        launch that gives up the GIL and waits to get it back among busy decoder threads, took half
        of the loop's time where requests overlap). No request joins a job once a thread took it, so
        ``claims`` only falls from here on: a request cancelled meanwhile leaves a copy unused."""
        try:
            for f, frame in result.frames.items():
                others = self.claims.get(f, 0) - 1
                if others > 0:
                    result.copies[f] = [copy_frame(frame) for _ in range(others)]
        except Exception:  # out of memory, say: take() copies what is missing, failing that request alone
            return

    def claim(self, wanted: Collection[int]) -> None:
        for f in wanted:
            self.claims[f] = self.claims.get(f, 0) + 1

    def unclaim(self, wanted: Collection[int]) -> None:
        for f in wanted:
            self.claims[f] -= 1

    def keeps(self, wanted: Collection[int]) -> list[int]:
        """Claim a copy to keep of each frame of ``wanted`` no other request of the job keeps yet
        (loop thread); the frames claimed."""
        mine = [f for f in wanted if f not in self.kept]
        self.kept.update(mine)
        self.claim(mine)
        return mine

    def take(self, result: DecodeResult, wanted: Collection[int], first: bool,
             keep: Collection[int] = ()) -> DecodeResult:
        """One request's share of the job's result: its own frames, copied only where another taker
        still has to take the same frame (``first``: the request that started the job, which also gets
        the frames collected on the way; ``keep``: the frames it claimed a copy of to keep,
        :attr:`DecodeResult.kept`)."""
        kept = {f: self._take_one(result, f) for f in keep}
        frames = {f: self._take_one(result, f) for f in wanted}
        return DecodeResult(frames=frames, decoded=result.decoded, fed=result.fed, continued=result.continued,
                            extra=result.extra if first else {}, timings=result.timings, kept=kept)

    def _take_one(self, result: DecodeResult, f: int) -> Any:
        self.claims[f] -= 1
        frame = result.frames[f]
        if self.claims[f]:  # another taker still to come: a copy (made on the decoder thread, where it could be)
            made = result.copies.get(f)
            frame = made.pop() if made else copy_frame(frame)
        return frame


class Deaths:
    """When decoder threads of a pool died, and how long the next replacement waits before it takes
    jobs: nothing while threads die now and then; once as many threads as the pool has died within
    :data:`DEATHS_WINDOW_S`, 0.1 s, doubling with each further death that keeps it so, at most
    :data:`DEATH_DELAY_MAX_S`. A fault that kills every thread it touches then costs a few threads a
    few seconds, not a spinning loop of threads started and killed."""

    def __init__(self, threads: int) -> None:
        self._times: deque[float] = deque(maxlen=max(1, threads))
        self._fast = 0

    def delay(self, now: float) -> float:
        """Count a death at ``now``; the delay for the thread that takes its place."""
        self._times.append(now)
        if len(self._times) == self._times.maxlen and now - self._times[0] <= DEATHS_WINDOW_S:
            self._fast += 1
        else:
            self._fast = 0
        return min(DEATH_DELAY_MAX_S, 0.1 * 2 ** (self._fast - 1)) if self._fast else 0.0


DEATHS_WINDOW_S = 10.0
DEATH_DELAY_MAX_S = 5.0


class _Worker:
    """What the scheduler knows of one decoder thread (read and written under the pool's lock)."""

    __slots__ = ("session", "held", "wake", "delay")

    def __init__(self, lock: threading.Lock, delay: float = 0.0) -> None:
        self.delay = delay
        """Seconds the thread waits before taking jobs (a replacement while threads keep dying)."""
        self.session: Session | None = None
        self.held: dict[int, int] = {}
        """``id(bundle)`` -> largest frame id asked for, for every GOP the thread decodes or keeps its place in."""
        self.wake = threading.Condition(lock)


class DecoderPool:
    """``threads`` decoder threads of one backend fed by one bounded queue.

    A thread whose loop fails outside a job's decode fails the job it held and is replaced
    (``threads_replaced``). Threads end when the pool closes, or when the event loop closes first
    (``on_loop_closed`` is called then, once, from a decoder thread).
    """

    def __init__(self, backend: Backend, *, threads: int, capacity: int, loop: asyncio.AbstractEventLoop,
                 on_loop_closed: Callable[[], None] | None = None) -> None:
        if threads < 1 or capacity < 1:
            raise ValueError("threads and capacity must be >= 1")
        self.backend = backend
        self.capacity = capacity
        self._loop = loop
        self._lock = threading.Lock()
        self._jobs: deque[DecodeJob] = deque()  # at most ``capacity``: the slots bound it
        self._holding: dict[int, list[_Worker]] = {}  # id(bundle) -> threads decoding or holding it
        self._idle: dict[_Worker, None] = {}  # threads waiting for work, oldest first
        self._stopping = False
        self._slots = asyncio.Semaphore(capacity)
        self._workers = [_Worker(self._lock) for _ in range(threads)]
        self.waiting = 0
        self.in_flight = 0
        self.decoded = 0
        self.fed = 0
        self.continued = 0
        self.merged = 0
        self.decode_s = 0.0
        self.convert_s = 0.0
        self.threads_replaced = 0
        self._deaths = Deaths(threads)
        self._retired_created = 0  # decoders made by sessions of threads that died
        self._retired_reconfigured = 0
        self._on_loop_closed = on_loop_closed
        self._loop_gone_told = False
        self._named = 0
        self._threads = [self._thread(w) for w in self._workers]
        for t in self._threads:
            t.start()

    @property
    def threads(self) -> int:
        return len(self._threads)

    @property
    def queue_depth(self) -> int:
        return len(self._jobs)

    @property
    def decoders_created(self) -> int:
        """Decoders the threads' sessions made so far."""
        return self._retired_created + sum(w.session.counts.created for w in self._workers if w.session is not None)

    def free_decoders(self) -> tuple[int, int]:
        """Free decoders kept for later jobs, and the device memory they hold (about): every session's
        own, or the device's once where its sessions share them."""
        pools = {id(w.session.spares): w.session.spares for w in self._workers
                 if w.session is not None and getattr(w.session, "spares", None) is not None}
        return sum(len(p) for p in pools.values()), sum(p.nbytes for p in pools.values())

    def decoders_held(self) -> int:
        """Decoders the threads' sessions hold their place in a GOP with (not free, not closed)."""
        return sum(len(getattr(w.session, "positions", ())) for w in self._workers if w.session is not None)

    @property
    def decoders_reconfigured(self) -> int:
        """Times a session switched a decoder to another stream shape in place."""
        return self._retired_reconfigured + sum(w.session.counts.reconfigured for w in self._workers
                                                if w.session is not None)

    async def submit(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec,
                     collect: bool = False, queued: Callable[[], None] | None = None,
                     keep: bool = False) -> DecodeResult:
        """Queue a decode job (waiting for a free slot) and wait for its result.

        A job for a GOP that a queued job (not started yet) will decode with the same output is merged
        into that job: one decode pass serves both requests, each gets its own tensors (a frame both
        asked for is copied for all but one of them).
        Cancelling a caller withdraws it; a job whose every caller is gone is skipped, or stops feeding.
        ``collect``: the result's ``extra`` holds the other frames that came out, converted (the caller
        that started the job gets them; merged callers get their own frames only). ``queued``: called
        once the job is in the queue (or merged into one there). ``keep``: the result's ``kept`` also
        holds a copy, made on the decoder thread, of each wanted frame that no other request of the
        job keeps already, for the caller to keep (the frame cache).
        """
        merged = self._merge(bundle, wanted, output, collect, keep)
        if merged is not None:
            job, kept = merged
            if queued is not None:
                queued()
            return job.take(await self._wait(job, wanted, kept), wanted, first=False, keep=kept)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        future: asyncio.Future[DecodeResult] = self._loop.create_future()
        future.add_done_callback(_retrieved)  # every caller may be gone (cancelled) when it fails
        job = DecodeJob(bundle, wanted, output, future, collect)
        kept = job.keeps(wanted) if keep else []  # the copies to keep: one more taker of each frame
        self.in_flight += 1
        with self._lock:
            self._jobs.append(job)
            self._wake_for(job)
        if queued is not None:
            queued()
        return job.take(await self._wait(job, wanted, kept), wanted, first=True, keep=kept)

    def _merge(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec,
               collect: bool, keep: bool = False) -> tuple[DecodeJob, list[int]] | None:
        """The queued job ``wanted`` joined, and the frames this request keeps a copy of; ``None``
        when no queued job decodes its GOP."""
        with self._lock:
            for job in self._jobs:
                if job.bundle is bundle and job.output == output and not job.cancelled:
                    job.wanted = sorted(set(job.wanted) | set(wanted))
                    job.first = job.wanted[0]
                    job.waiters += 1
                    job.collect = job.collect or collect
                    job.claim(wanted)
                    kept = job.keeps(wanted) if keep else []
                    self.merged += 1
                    self._wake_for(job)  # its first frame may have moved: which thread should take it too
                    return job, kept
        return None

    async def _wait(self, job: DecodeJob, wanted: Collection[int], kept: Collection[int] = ()) -> DecodeResult:
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            job.unclaim(wanted)
            job.unclaim(kept)
            job.kept.difference_update(kept)
            job.waiters -= 1
            if job.waiters == 0:
                job.cancelled = True
            raise

    # -- scheduling (under the lock) ------------------------------------------------------------

    def _owner(self, job: DecodeJob) -> _Worker | None:
        """The thread that should go on with ``job``: the one furthest into its GOP short of its frames."""
        best, best_frontier = None, -1
        for w in self._holding.get(id(job.bundle), ()):
            frontier = w.held[id(job.bundle)]
            if frontier < job.first and (best is None or frontier > best_frontier):
                best, best_frontier = w, frontier
        return best

    def _wake_for(self, job: DecodeJob) -> None:
        owner = self._owner(job)
        if owner is None and self._idle:
            owner = self._readiest(job)
        if owner is not None and self._idle.pop(owner, False) is None:
            owner.wake.notify()

    def _readiest(self, job: DecodeJob) -> _Worker:
        """The idle thread whose session is readiest for the job's stream (a free decoder of its shape,
        or one that switches to it in place), the one idle longest of equals: a set of many shapes
        then makes decoders only where no session has one to spare."""
        best, best_fit = None, -1
        for w in self._idle:
            fit = w.session.fits(job.bundle) if w.session is not None else 0
            if fit > best_fit:
                best, best_fit = w, fit
        assert best is not None
        return best

    def _hold(self, me: _Worker, job: DecodeJob) -> None:
        key = id(job.bundle)
        furthest = max(job.wanted, default=-1)
        if key not in me.held:
            self._holding.setdefault(key, []).append(me)
        pos = me.session.positions.get(key) if me.session is not None else None
        if pos is not None and pos.serves(job.wanted, job.output):
            furthest = max(furthest, me.held.get(key, -1))
        me.held[key] = furthest  # a job that starts again at the keyframe moves the frontier back
        for other in self._holding[key]:  # which of them owns the queued jobs in this GOP may change now
            if other is not me and self._idle.pop(other, False) is None:
                other.wake.notify()

    def _pick(self, me: _Worker) -> DecodeJob | None:
        """The next job for ``me``: a job in a GOP it keeps its place in first, then the oldest job no
        other thread should have. Of several queued jobs in one GOP the earliest frames go first, so
        that the others can follow."""
        positions = me.session.positions if me.session is not None else {}
        mine = [j for j in self._jobs if id(j.bundle) in positions and not j.cancelled and self._owner(j) is me]
        if mine:
            job = min((j for j in mine if j.bundle is mine[0].bundle), key=lambda j: j.first)
        else:
            job = self._by_fit(me)
            if job is None:
                return None
            if not job.cancelled and self._owner(job) is None:
                job = min((j for j in self._jobs if j.bundle is job.bundle and not j.cancelled
                           and self._owner(j) is None), key=lambda j: j.first)
        self._jobs.remove(job)
        return job

    def _by_fit(self, me: _Worker) -> DecodeJob | None:
        """Of the first jobs nobody goes on with (:data:`_AFFINITY_WINDOW`), the oldest one a free
        decoder is ready for, else the readiest, else the oldest; a job passed over
        :data:`_PASS_LIMIT` times is taken first, so that no request waits long for a shape whose
        decoder is busy. A cancelled job is taken as soon as it is seen (it is dropped at once)."""
        session = me.session
        chosen, best_fit, seen = None, -1, 0
        skipped: list[DecodeJob] = []
        for job in self._jobs:
            if job.cancelled:
                chosen = job
                break
            owner = self._owner(job)
            if owner is not None:
                if owner is me:
                    chosen = job
                    break
                continue  # another thread goes on with it
            if job.passed >= _PASS_LIMIT:
                chosen = job
                break
            fit = session.fits(job.bundle) if session is not None else 0
            if fit > best_fit:
                if chosen is not None:
                    skipped.append(chosen)
                chosen, best_fit = job, fit
            else:
                skipped.append(job)
            seen += 1
            if fit >= _READY or seen >= _AFFINITY_WINDOW or session is None:
                break
        if chosen is not None and not chosen.cancelled:  # a cancelled one is only dropped: nobody was passed
            for job in skipped:
                if job.bundle is not chosen.bundle:
                    job.passed += 1
        return chosen

    def _take(self, me: _Worker) -> DecodeJob | None:
        with self._lock:
            while True:
                if self._loop.is_closed():  # nobody can be told any more (the engine was never closed)
                    return None
                job = self._pick(me)
                if job is not None:
                    if not job.cancelled:
                        self._hold(me, job)
                    return job
                if self._stopping and not self._jobs:
                    return None
                if not self._jobs and not self._stopping and me.session is not None and self._prepare(me):
                    continue  # made a decoder a later job will want: look at the queue again
                self._idle[me] = None
                me.wake.wait(_RECHECK_S)
                self._idle.pop(me, None)

    def _prepare(self, me: _Worker) -> bool:
        """Let an idle thread's session make a decoder ahead (called and returning with the lock held,
        released meanwhile: other threads go on scheduling)."""
        self._lock.release()
        try:
            return me.session.prepare()
        except Exception as exc:  # never the thread's end: jobs make what they need
            log.debug("asyncdecode: preparing a decoder failed: %s", exc)
            return False
        finally:
            self._lock.acquire()

    def _keep(self, me: _Worker, job: DecodeJob) -> bool:
        """Whether a job further on in ``job``'s GOP is waiting (so ``me`` should not drain)."""
        with self._lock:
            frontier = me.held.get(id(job.bundle), -1)
            return any(not j.cancelled and j.bundle is job.bundle and j.first > frontier for j in self._jobs)

    def _done_with(self, me: _Worker) -> None:
        """After a job: GOPs the thread no longer keeps its place in free the jobs that waited for it."""
        with self._lock:
            positions = me.session.positions if me.session is not None else {}
            for key in [k for k in me.held if k not in positions]:
                del me.held[key]
                holders = self._holding[key]
                holders.remove(me)
                if not holders:
                    del self._holding[key]
                for job in self._jobs:
                    if id(job.bundle) == key:
                        self._wake_for(job)

    # -- results (event loop thread) ----------------------------------------------------------

    def _deliver(self, job: DecodeJob, result: DecodeResult | None, error: BaseException | None) -> None:
        """Runs on the loop thread."""
        self.in_flight -= 1
        self._slots.release()
        if result is not None:
            self.decoded += result.decoded
            self.fed += result.fed
            self.continued += result.continued
            self.decode_s += result.timings.get("decode_s", 0.0)
            self.convert_s += result.timings.get("convert_s", 0.0)
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        elif result is None:
            job.future.cancel()
        else:
            job.future.set_result(result)

    def _report(self, job: DecodeJob, result: DecodeResult | None, error: BaseException | None) -> None:
        if self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, job, result, error)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _run(self, me: _Worker) -> None:
        if me.delay:  # in place of threads that keep dying: not at once (the pool closing ends the wait)
            with self._lock:
                me.wake.wait_for(lambda: self._stopping, timeout=me.delay)
        startup_error: BaseException | None = None
        try:
            me.session = self.backend.new_session()
        except BaseException as exc:  # every job of this thread fails with the reason
            startup_error = exc
            log.error("decoder thread %s could not open a %s session: %s",
                      threading.current_thread().name, self.backend.name, exc)
        device = str(self.backend.device)
        job: DecodeJob | None = None  # taken and not reported yet
        try:
            while True:
                job = self._take(me)
                if job is None:
                    if self._loop.is_closed() and not self._stopping:
                        self._loop_gone()
                    return
                if _faults.armed:
                    _faults.hit("thread", job.bundle.source)
                result: DecodeResult | None = None
                error: BaseException | None = None
                if job.cancelled:
                    pass
                elif me.session is None:
                    error = _as_engine_error(startup_error, job, device)
                else:
                    try:
                        result = me.session.decode(job.bundle, job.wanted, job.output, lambda: job.cancelled,
                                                   lambda: self._keep(me, job), job.collect)
                        job.copy_ahead(result)
                    except DecodeCancelled:
                        pass
                    except BaseException as exc:
                        _drop_locals(exc)
                        error = _as_engine_error(exc, job, device)
                done, job = job, None
                self._report(done, result, error)
                del done, result, error  # an idle thread keeps no frames alive
                self._done_with(me)
                _trim.grown()  # the arenas' free pages back to the system when RSS grew enough
                _trim.device_grown(self.backend.device)  # and a GPU's cached blocks, when they grew enough
        except BaseException as exc:  # outside a job's decode: the thread ends, another takes its place
            self._died(me, job, exc)
        finally:
            if me.session is not None:
                me.session.close()

    def _died(self, me: _Worker, job: DecodeJob | None, exc: BaseException) -> None:
        """A decoder thread's loop failed: fail the job it held, give up its session and the GOPs it kept
        its place in (their jobs go to other threads), and start a thread in its place."""
        name = threading.current_thread().name
        log.error("asyncdecode: decoder thread %s died (%s: %s); starting another", name, type(exc).__name__, exc,
                  exc_info=exc)
        _drop_locals(exc)
        error = None
        if job is not None:
            bundle = job.bundle
            error = AsyncDecodeError(
                f"{bundle.source}: decoder thread {name} died while decoding the GOP at frame "
                f"{bundle.first_frame_id} ({type(exc).__name__}: {exc}); another thread took its place",
                path=bundle.source, frame_id=min(job.wanted, default=None), device=str(self.backend.device))
            error.__cause__ = exc
        session, me.session = me.session, None
        if session is not None:
            try:
                session.close()
            except Exception as close_exc:  # what it holds goes with the garbage collector
                log.debug("asyncdecode: closing the session of a dead thread failed: %s", close_exc)
        self._done_with(me)  # without a session it keeps no place: jobs waiting for it are woken
        with self._lock:
            if session is not None:
                self._retired_created += session.counts.created
                self._retired_reconfigured += session.counts.reconfigured
            if not self._stopping:
                i = self._workers.index(me)
                worker = self._workers[i] = _Worker(self._lock, self._deaths.delay(time.monotonic()))
                thread = self._threads[i] = self._thread(worker)
                self.threads_replaced += 1
                # Started under the lock: close() sets _stopping under it and then joins every thread
                # of the list, which must have started (a replacement started after the lock was
                # left made aclose() raise "cannot join thread before it is started" under load).
                # The new thread takes the lock only once it runs, after start() returns.
                thread.start()
        # The job fails only now: whoever it tells sees the thread already replaced (and counted).
        if job is not None:
            self._report(job, None, error)

    def _thread(self, worker: _Worker) -> threading.Thread:
        self._named += 1
        return threading.Thread(target=self._run, args=(worker,), daemon=True,
                                name=f"asyncdecode-{self.backend.name}-{self._named - 1}")

    def _loop_gone(self) -> None:
        """The event loop closed while the pool was open (``asyncio.run`` ended before ``aclose()``):
        nobody can be told of results any more; the threads end. ``on_loop_closed`` is called once."""
        with self._lock:
            told, self._loop_gone_told = self._loop_gone_told, True
        if not told and self._on_loop_closed is not None:
            self._on_loop_closed()

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every thread after the jobs already queued (blocking; call from a worker thread)."""
        with self._lock:
            self._stopping = True
            for w in self._workers:
                w.wake.notify()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a job's outcome as seen: its callers wait on it through ``shield`` and may all have left."""
    if not future.cancelled():
        future.exception()


def copy_frame(frame: Any) -> Any:
    """A request's own copy of a frame another request (or the frame cache) has too: tensors, or
    tuples of plane tensors. On the CPU a copy by numpy, single-threaded: ``clone()`` runs on
    torch's OpenMP threads, whose spinning after each copy took the decoder threads' cores (epoch-
    random reading with every frame cached ran at 0.6x on 2 cores, 0.9x with numpy's copy)."""
    if isinstance(frame, tuple):
        return tuple(copy_frame(p) for p in frame)
    if frame.device.type == "cpu" and frame.dtype in _NUMPY_DTYPES and not frame.requires_grad:
        return torch.from_numpy(frame.numpy().copy())
    return frame.clone()


_NUMPY_DTYPES = frozenset({torch.uint8, torch.int16, torch.int32, torch.float16, torch.float32, torch.float64})


def _drop_locals(exc: BaseException) -> None:
    """Clear the finished frames of an error's tracebacks (and its causes'): an error the caller keeps
    must not keep the session's frames, decoders or GPU tensors alive through them."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _as_engine_error(exc: BaseException | None, job: DecodeJob, device: str) -> BaseException:
    if isinstance(exc, AsyncDecodeError):
        return exc
    bundle = job.bundle
    wrapped = AsyncDecodeError(
        f"{bundle.source}: decoding the GOP at frame {bundle.first_frame_id} failed on {device}: "
        f"{type(exc).__name__}: {exc}", path=bundle.source, frame_id=min(job.wanted, default=None), device=device)
    wrapped.__cause__ = exc
    return wrapped
