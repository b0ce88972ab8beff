"""Decoder threads: each owns one backend session and drains a bounded queue of decode jobs.

The event loop puts jobs; threads report back only through ``loop.call_soon_threadsafe``. The queue
never holds more than ``capacity`` jobs: the loop takes a slot (an asyncio semaphore) before it puts
a job and the slot is given back when the job's result is delivered. Waiting for a slot is the
engine's backpressure, visible as ``queue_waiting`` in ``stats()``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Collection
from typing import Any

from ._backends import Backend, DecodeCancelled, DecodeResult, Session
from ._output import OutputSpec
from .errors import AsyncDecodeError
from .gop import GopBundle

log = logging.getLogger("asyncdecode")

_STOP = object()


class DecodeJob:
    """One GOP to decode for one request: the bundle, the wanted frame ids and the future to complete."""

    __slots__ = ("bundle", "wanted", "output", "future", "cancelled")

    def __init__(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec,
                 future: asyncio.Future[DecodeResult]) -> None:
        self.bundle = bundle
        self.wanted = wanted
        self.output = output
        self.future = future
        self.cancelled = False  # written by the loop thread, read by the decoder thread


class DecoderPool:
    """``threads`` decoder threads of one backend fed by one bounded queue."""

    def __init__(self, backend: Backend, *, threads: int, capacity: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        if threads < 1 or capacity < 1:
            raise ValueError("threads and capacity must be >= 1")
        self.backend = backend
        self.capacity = capacity
        self._loop = loop
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity + threads)
        self._slots = asyncio.Semaphore(capacity)
        self.waiting = 0
        self.in_flight = 0
        self.decoded = 0
        self.fed = 0
        self.decode_s = 0.0
        self.convert_s = 0.0
        self._threads = [
            threading.Thread(target=self._run, name=f"asyncdecode-{backend.name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    @property
    def threads(self) -> int:
        return len(self._threads)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec) -> DecodeResult:
        """Queue a decode job (waiting for a free slot) and wait for its result.

        Cancelling the caller marks the job cancelled: a thread skips it, or stops feeding it.
        """
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        future: asyncio.Future[DecodeResult] = self._loop.create_future()
        job = DecodeJob(bundle, wanted, output, future)
        self.in_flight += 1
        self._queue.put_nowait(job)
        try:
            return await future
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    def _deliver(self, job: DecodeJob, result: DecodeResult | None, error: BaseException | None) -> None:
        """Runs on the loop thread."""
        self.in_flight -= 1
        self._slots.release()
        if result is not None:
            self.decoded += result.decoded
            self.fed += result.fed
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

    def _run(self) -> None:
        session: Session | None = None
        startup_error: BaseException | None = None
        try:
            session = self.backend.new_session()
        except BaseException as exc:  # every job of this thread fails with the reason
            startup_error = exc
            log.error("decoder thread %s could not open a %s session: %s",
                      threading.current_thread().name, self.backend.name, exc)
        try:
            while True:
                job = self._queue.get()
                if job is _STOP:
                    return
                if job.cancelled:
                    self._report(job, None, None)
                    continue
                if session is None:
                    self._report(job, None, _as_engine_error(startup_error, job))
                    continue
                try:
                    result = session.decode(job.bundle, job.wanted, job.output, lambda: job.cancelled)
                except DecodeCancelled:
                    self._report(job, None, None)
                except BaseException as exc:
                    self._report(job, None, _as_engine_error(exc, job))
                else:
                    self._report(job, result, None)
        finally:
            if session is not None:
                session.close()

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every thread after the jobs already queued (blocking; call from a worker thread)."""
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)


def _as_engine_error(exc: BaseException | None, job: DecodeJob) -> BaseException:
    if isinstance(exc, AsyncDecodeError):
        return exc
    bundle = job.bundle
    wrapped = AsyncDecodeError(
        f"{bundle.source}: decoding the GOP at frame {bundle.first_frame_id} failed: "
        f"{type(exc).__name__}: {exc}", path=bundle.source, frame_id=min(job.wanted, default=None))
    wrapped.__cause__ = exc
    return wrapped
