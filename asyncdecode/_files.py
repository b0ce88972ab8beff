"""Files written so that no reader sees part of one, and a progress line: shared by ``store build``
and ``prepare``.

In: a final path (and the bytes, or a block that writes a temporary file). Out: the file under its
final name, whole, or no file (the temporary one removed on error); the ``write`` fault point
(:mod:`._faults`) sits between the fsync and the rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from . import _faults
from .errors import InvalidRequestError

__all__ = ["ProgressLine", "atomic_output", "folder_lock", "fsync_dir", "read_json", "write_atomic"]


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; ``None`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """A temporary name next to ``final`` to write (``.NAME.PID-TOKEN.tmp``); renamed over ``final``
    (after an fsync) when the block ends normally, removed when it raises: no reader ever sees part of
    ``final``."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if _faults.armed:
            _faults.hit("write", final)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``path`` so that no reader ever sees part of it: temporary file, fsync, rename."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, busy: str) -> Iterator[None]:
    """Hold the lock file ``folder/name`` for a run that writes into ``folder`` (two runs would
    delete each other's temporary files); ``InvalidRequestError(busy)`` at once when another process
    holds it. Released at the end of the block, or when the process dies (POSIX ``flock``; no lock
    where there is none)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(folder / name, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidRequestError(busy, path=str(folder)) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ProgressLine:
    """One status line: rewritten in place on a terminal, printed every ``log_interval_s`` otherwise.

    Updates come faster than anyone reads them; they are shown at most ten times a second.
    """

    def __init__(self, stream: TextIO | None, *, log_interval_s: float = 10.0) -> None:
        self._stream = stream
        self._tty = bool(stream is not None and stream.isatty())
        self._interval_s = 0.1 if self._tty else log_interval_s
        self._last_shown = -float("inf")
        self._width = 0
        self._pending: str | None = None

    def show(self, text: str, *, force: bool = False) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if not force and now - self._last_shown < self._interval_s:
            self._pending = text
            return
        self._last_shown, self._pending = now, None
        if self._tty:
            self._stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Show the last update held back, and end the line."""
        if self._stream is None:
            return
        if self._pending is not None:
            self.show(self._pending, force=True)
        if self._tty and self._width:
            self._stream.write("\n")
            self._stream.flush()
        self._stream = None
