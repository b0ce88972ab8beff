"""Whole-file jobs on a pool of worker processes or threads, awaited from the event loop.

Offline tools (``store build``, :mod:`asyncdecode.prepare`) hand one job per video to a pool and keep
a status line moving while the jobs run: :func:`completed` yields what finished at least twice a
second.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, TypeVar

Job = TypeVar("Job")

Executor = Literal["process", "thread"]

#: How often :func:`completed` yields at the least (seconds), finished jobs or not.
TICK_S = 0.5


async def completed(
    fn: Callable[[Job], Any],
    jobs: Sequence[Job],
    *,
    workers: int,
    executor: Executor,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> AsyncIterator[list[tuple[Job, Any]]]:
    """Run ``fn(job)`` for every job on ``workers`` processes or threads; yield what finished.

    Each item is a list of ``(job, result)`` in completion order, possibly empty (a tick to refresh
    a status line); ``result`` is what ``fn`` returned, or the :class:`BaseException` it raised or
    that broke the pool (a worker process that died). Processes start with ``spawn``: nothing of this
    process's threads or event loop is inherited; they end when this process dies (see
    :func:`end_with_parent`). Use it under ``contextlib.aclosing``: leaving early
    cancels the jobs not started and waits for the running ones to end.
    """
    if executor == "process":
        pool: concurrent.futures.Executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(initializer, initargs))
    else:
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="asyncdecode-pool",
                                                     initializer=initializer, initargs=initargs)
    loop = asyncio.get_running_loop()
    futures = {loop.run_in_executor(pool, fn, job): job for job in jobs}
    pending = set(futures)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
            batch = []
            for fut in done:
                try:
                    result = fut.result()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, with its job
                    result = exc
                batch.append((futures[fut], result))
            yield batch
    finally:
        for fut in pending:
            fut.cancel()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def end_with_parent() -> None:
    """In a worker process: exit as soon as the process that started it dies (a SIGKILLed ``store
    build`` or ``prepare``), rather than go on writing into the folder that a rerun works in, and then
    stay behind, idle, for good. A thread waits on the parent's sentinel (no polling)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="asyncdecode-parent-watch", daemon=True).start()


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    end_with_parent()
    if initializer is not None:
        initializer(*initargs)
