"""Work done once for every caller that wants it at the same time, and awaiting several at once.

In: a key and the work that makes its result (a coroutine, or a blocking function for the engine's
demux threads). Out: the result, to every concurrent caller with that key; the work runs once and
hands its result to a callback (which fills a cache) before the callers see it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

__all__ = ["Once", "all_or_cancel"]

T = TypeVar("T")


class Once:
    """Index and demux jobs (and store reads) in flight, by key, shared by whoever asks meanwhile."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.Executor | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, executor: concurrent.futures.Executor) -> None:
        """Where blocking work runs (:meth:`run`): the engine's loop and its demux threads."""
        self._loop, self._executor = loop, executor

    def __contains__(self, key: Hashable) -> bool:
        return key in self._inflight

    def pending(self) -> list[asyncio.Future[Any]]:
        """The work in flight now."""
        return list(self._inflight.values())

    async def run_async(self, key: Hashable, work: Callable[[], Awaitable[T]], on_result: Callable[[T], None]) -> T:
        """Run the coroutine ``work()`` once for all concurrent callers with the same key.

        A caller that is cancelled stops waiting; the work itself goes on for the others (and fills
        the caches, through ``on_result``), under ``asyncio.shield``.
        """
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(work())
            self._inflight[key] = fut

            def finished(f: asyncio.Future[T]) -> None:
                self._inflight.pop(key, None)
                if not f.cancelled() and f.exception() is None:
                    on_result(f.result())

            fut.add_done_callback(finished)
        return await asyncio.shield(fut)

    async def run(self, key: Hashable, work: Callable[[], T], on_result: Callable[[T], None]) -> T:
        """:meth:`run_async` for blocking ``work``, run in the executor given to :meth:`bind`."""
        assert self._loop is not None and self._executor is not None, "Once.bind() first"
        loop, executor = self._loop, self._executor
        return await self.run_async(key, lambda: loop.run_in_executor(executor, work), on_result)

    async def run_blocking(self, work: Callable[[], T]) -> T:
        """``work`` in the executor, not shared (it is itself the work in flight for some key)."""
        assert self._loop is not None and self._executor is not None, "Once.bind() first"
        return await self._loop.run_in_executor(self._executor, work)


async def all_or_cancel(aws: list[Awaitable[T]]) -> list[T]:
    """Await all; on the first failure (or on cancellation) cancel the rest, then raise."""
    if len(aws) == 1:
        return [await aws[0]]
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if pending:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            for other in tasks:  # mark the other failures retrieved: one error per request
                if other is not t and other.done() and not other.cancelled():
                    other.exception()
            raise t.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]
