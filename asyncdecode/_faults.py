"""Fault injection for tests: make a chosen point of the engine fail, at a chosen moment.

Off unless a test arms it. Every hook reads one module global when off::

    if _faults.armed:
        _faults.hit("decode", bundle.source)

A test arms a point for the length of a ``with`` block (a whole process can be armed through the
environment, below)::

    with _faults.inject("decode", after=3, match=path) as fault:   # the 4th packet fed for ``path`` fails
        ...
    assert fault.fired == 1

Points (``path``: the file a hit concerns, which ``match`` is looked for in):

    decode      a session is about to feed a packet to its decoder (a native loop: fed a chunk of
                packets, one hit each, the fault raising after the chunk); ``path``: the video
    convert     a session is about to make a wanted frame's output, allocating it (a native loop: its
                outputs, allocated up front); ``path``: the video
    thread      a decoder thread took a job; an error here is outside the job's decode: it ends the
                thread; ``path``: the video
    demux       a demux job is about to read a GOP from its video; ``path``: the video
    store_read  a GOP bundle file of a store was read (the engine's reads, ``GopStore.read_bundle``);
                ``path``: the bundle file
    write       ``store build`` or ``prepare`` wrote a file under its temporary name and is about to
                rename it to its final one; ``path``: the final name

Actions: ``"raise"`` (``error``, default :class:`InjectedFault`), ``"pause"`` (block until
:meth:`Fault.release` or the end of the ``with`` block, at most ``PAUSE_LIMIT_S``), ``"short"``
(``store_read``: the read returns half the file), ``"kill"`` (SIGKILL this process), ``"kill_parent"``
(SIGKILL the process that started this one, a worker's ``store build`` or ``prepare``, and pause).

``ASYNCDECODE_FAULTS`` arms points for a whole process, read once at import: rules separated by
``;``, each ``POINT[:after=N][:times=N][:match=TEXT][:action=ACTION]``; for example
``ASYNCDECODE_FAULTS="write:after=2:action=kill"`` kills the process as it is about to rename its third
file. Worker processes that ``store build`` and ``prepare`` start inherit it (each counts its own hits).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar, Union

__all__ = ["Fault", "InjectedFault", "POINTS", "armed", "hit", "inject"]

POINTS = frozenset({"decode", "convert", "thread", "demux", "store_read", "write"})
Action = Literal["raise", "pause", "short", "kill", "kill_parent"]
ErrorLike = Union[BaseException, type[BaseException], Callable[[], BaseException], None]
T = TypeVar("T")

#: A paused hit goes on by itself after this long: a test that forgets to release never hangs.
PAUSE_LIMIT_S = 60.0

armed = False
"""Whether any fault is armed (the only thing a hook reads when none is)."""

_lock = threading.Lock()
_faults: list[Fault] = []


class InjectedFault(RuntimeError):
    """The error an armed point raises unless the test gives another."""


class Fault:
    """One armed point: which hits fire, and what they do. Counts what happened (thread-safe)."""

    def __init__(self, point: str, *, after: int = 0, times: int | None = 1, match: str | None = None,
                 action: Action = "raise", error: ErrorLike = None) -> None:
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {sorted(POINTS)}")
        if action not in ("raise", "pause", "short", "kill", "kill_parent"):
            raise ValueError(f"unknown fault action {action!r}")
        if action == "short" and point != "store_read":
            raise ValueError("action 'short' is for the point 'store_read'")
        self.point = point
        self.after = after
        self.times = times
        self.match = match
        self.action = action
        self.error = error
        self.hits = 0
        """Hits of the point that matched (fired or not)."""
        self.fired = 0
        """Hits that fired."""
        self.paths: list[str] = []
        """The path of each hit that fired."""
        self._changed = threading.Condition(_lock)
        self._released = threading.Event()

    def release(self) -> None:
        """Let paused hits (and later ones) go on."""
        self._released.set()

    def wait_fired(self, n: int = 1, timeout_s: float = 30.0) -> bool:
        """Block until ``n`` hits fired (a paused hit counts once it is paused); whether they did in time."""
        with self._changed:
            return self._changed.wait_for(lambda: self.fired >= n, timeout_s)

    def _take(self, point: str, path: str | None, count: int) -> bool:
        """Whether this hit (``count`` hits at once) fires (called with the lock held)."""
        if point != self.point or (self.match is not None and (path is None or self.match not in path)):
            return False
        self.hits += count
        if self.hits <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        self.paths.append(path or "")
        self._changed.notify_all()
        return True

    def _exception(self, path: str | None) -> BaseException:
        error = self.error
        if error is None:
            return InjectedFault(f"injected fault at {self.point!r} ({path or 'no path'}, hit {self.hits})")
        if isinstance(error, BaseException):
            return error
        return error()

    def __repr__(self) -> str:
        return (f"<Fault {self.point} after={self.after} times={self.times} action={self.action} "
                f"fired={self.fired}/{self.hits}>")


def hit(point: str, path: Any = None, data: T = None, *, count: int = 1) -> T:  # type: ignore[assignment]
    """A hook: do what an armed fault of ``point`` says for this hit (``count`` hits at once), if one
    fires; returns ``data`` (shortened by a ``"short"`` fault)."""
    if count < 1:
        return data
    where = None if path is None else os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    with _lock:
        fault = next((f for f in _faults if f._take(point, where, count)), None)
    if fault is None:
        return data
    if fault.action == "pause":
        fault._released.wait(PAUSE_LIMIT_S)
        return data
    if fault.action == "short":
        return data[: len(data) // 2]  # type: ignore[index]
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.action == "kill_parent":  # and wait, as "pause": what this process does next is up to it
        os.kill(os.getppid(), signal.SIGKILL)
        fault._released.wait(PAUSE_LIMIT_S)
        return data
    raise fault._exception(where)


@contextlib.contextmanager
def inject(point: str, *, after: int = 0, times: int | None = 1, match: Any = None, action: Action = "raise",
           error: ErrorLike = None) -> Iterator[Fault]:
    """Arm ``point`` for the block: after ``after`` matching hits, the next ``times`` (``None``: all)
    do ``action``. ``match``: only hits whose path contains it count. ``error``: what ``"raise"``
    raises (an exception, a class or a function making one). Paused hits go on when the block ends."""
    fault = Fault(point, after=after, times=times, match=None if match is None else os.fspath(match),
                  action=action, error=error)
    _arm(fault)
    try:
        yield fault
    finally:
        _disarm(fault)
        fault.release()


def _arm(fault: Fault) -> None:
    global armed
    with _lock:
        _faults.append(fault)
        armed = True


def _disarm(fault: Fault) -> None:
    global armed
    with _lock:
        _faults.remove(fault)
        armed = bool(_faults)


def _from_env(spec: str) -> list[Fault]:
    """The faults of an ``ASYNCDECODE_FAULTS`` value (see the module docstring)."""
    faults = []
    for rule in filter(None, (r.strip() for r in spec.split(";"))):
        point, *options = rule.split(":")
        kwargs: dict[str, Any] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in ("after", "times", "match", "action"):
                raise ValueError(f"ASYNCDECODE_FAULTS: bad option {option!r} in {rule!r}")
            kwargs[key] = int(value) if key in ("after", "times") else value
        faults.append(Fault(point, **kwargs))
    return faults


for _fault in _from_env(os.environ.get("ASYNCDECODE_FAULTS", "")):
    _arm(_fault)
