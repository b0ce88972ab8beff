"""Blocking facade over :class:`~asyncdecode.Engine` for code without an event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from ._engine import Engine, EngineConfig, PathLike, Request
from ._frame import Frame
from ._output import OutputSpec
from .errors import EngineClosedError, InvalidRequestError


_DEFAULT = object()


class SyncEngine:
    """The same engine, driven from ordinary (non-async) code.

    The engine's event loop runs in a thread of its own (``asyncdecode-loop``, with uvloop where it is
    installed); calls block until their result is there, or until ``timeout_s``.

    Example:
        >>> with SyncEngine(device="cpu") as eng:
        ...     frames = eng.decode(["cam0.mp4", "cam1.mp4"], [17, 40])

    Args:
        device, config, output: As for :class:`Engine`.
        timeout_s: Default time limit of each blocking call; ``None`` waits as long as it takes.
    """

    def __init__(self, device: str | torch.device = "auto", *, config: EngineConfig | None = None,
                 output: OutputSpec | None = None, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="asyncdecode-loop", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self.engine = self._call(self._open(device, config, output), timeout_s=None)
        except BaseException:
            self._stop_loop()
            raise

    async def _open(self, device: Any, config: Any, output: Any) -> Engine:
        engine = Engine(device, config=config, output=output)
        return await engine.__aenter__()

    def _call(self, coro: Any, timeout_s: float | None | object = _DEFAULT) -> Any:
        """Run ``coro`` on the engine's loop and wait for it (``timeout_s=None``: no limit)."""
        limit = self.timeout_s if timeout_s is _DEFAULT else timeout_s
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(limit)  # type: ignore[arg-type]
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"asyncdecode call did not finish within {limit} s") from None

    def _check(self) -> None:
        if self._closed:
            raise EngineClosedError("the SyncEngine is closed")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the engine runs on, in the ``asyncdecode-loop`` thread.

        Work for the engine goes to it with :func:`asyncio.run_coroutine_threadsafe`; the engine
        belongs to this loop and must not be used from another.
        """
        return self._loop

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def decode(self, paths: PathLike | Sequence[PathLike], frame_ids: Sequence[int], *,
               output: OutputSpec | None = None, stack: bool = False,
               timeout_s: float | None | object = _DEFAULT) -> Any:
        """Blocking :meth:`Engine.decode`; ``timeout_s`` overrides the engine's default for this call."""
        self._check()
        return self._call(self.engine.decode(paths, frame_ids, output=output, stack=stack), timeout_s)

    def submit(self, paths: PathLike | Sequence[PathLike], frame_ids: Sequence[int], *,
               output: OutputSpec | None = None, stack: bool = False) -> concurrent.futures.Future[Any]:
        """Start a request and return a :class:`concurrent.futures.Future` at once."""
        self._check()
        return asyncio.run_coroutine_threadsafe(self.engine.decode(paths, frame_ids, output=output, stack=stack),
                                                self._loop)

    def prefetch(self, paths: PathLike | Sequence[PathLike], frame_ids: Sequence[int]) -> None:
        """Blocking-free :meth:`Engine.prefetch`: returns at once."""
        self._check()

        async def start() -> None:
            self.engine.prefetch(paths, frame_ids)

        self._call(start())

    def stream(self, requests: Iterable[Request], *, depth: int = 4, output: OutputSpec | None = None,
               stack: bool = False) -> Iterator[Any]:
        """Blocking :meth:`Engine.stream`: results in order, ``depth`` requests in flight."""
        self._check()
        if not isinstance(depth, int) or depth < 1:
            raise InvalidRequestError(f"depth must be a positive int, not {depth!r}")
        return self._iterate(self.engine.stream(requests, depth=depth, output=output, stack=stack))

    def stats(self) -> dict[str, Any]:
        """:meth:`Engine.stats`."""
        return self.engine.stats()

    def info(self, path: PathLike) -> Any:
        """:class:`~asyncdecode.VideoInfo` of ``path`` from the engine's index cache."""
        self._check()
        return self._call(self.engine.info(path))

    def ingest(self, source: Any, *, format: str | None = None, output: OutputSpec | None = None,
               buffer_bytes: int | None = None, gops_ahead: int | None = None) -> Iterator[Frame]:
        """Blocking :meth:`Engine.ingest`: the frames of a stream (a path, a binary file object, or an
        iterable of ``bytes`` chunks) in presentation order, as they are decoded."""
        self._check()

        async def start() -> Any:
            return self.engine.ingest(source, format=format, output=output, buffer_bytes=buffer_bytes,
                                      gops_ahead=gops_ahead)

        return self._iterate(self._call(start()))

    def frames(self, path: PathLike, *, start: int | None = 0, stop: int | None = None, step: int = 1,
               output: OutputSpec | None = None) -> Iterator[Frame]:
        """Blocking :meth:`Engine.frames`: ``Frame`` records of ``range(num_frames)[start:stop:step]``."""
        self._check()
        return self._iterate(self.engine.frames(path, start=start, stop=stop, step=step, output=output))

    def frame_at(self, path: PathLike, seconds: float, *, accurate: bool = True, output: OutputSpec | None = None,
                 timeout_s: float | None | object = _DEFAULT) -> Frame:
        """Blocking :meth:`Engine.frame_at`."""
        self._check()
        return self._call(self.engine.frame_at(path, seconds, accurate=accurate, output=output), timeout_s)

    def frames_at(self, paths: PathLike | Sequence[PathLike], seconds: Sequence[float], *, accurate: bool = True,
                  output: OutputSpec | None = None, timeout_s: float | None | object = _DEFAULT) -> list[Frame]:
        """Blocking :meth:`Engine.frames_at`."""
        self._check()
        return self._call(self.engine.frames_at(paths, seconds, accurate=accurate, output=output), timeout_s)

    def _iterate(self, items: Any) -> Iterator[Any]:
        """Drive an async iterator of the engine's loop from this thread; closing early closes it there."""
        try:
            while True:
                try:
                    yield self._call(items.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._call(items.aclose())

    def close(self) -> None:
        """Close the engine and stop its loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self.engine.aclose(), timeout_s=None)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn("asyncdecode SyncEngine was never closed; use `with` or `.close()`",
                          ResourceWarning, stacklevel=2)

    def __repr__(self) -> str:
        return f"<SyncEngine {self.engine!r}>"


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
