"""GOP bundles handed from DataLoader workers to the main process through shared memory.

The separation that training loops use: worker processes do the I/O (read stored bundles, or demux)
and the main process decodes on the GPU. A worker copies a bundle into a shared-memory block once
and hands over a :class:`SharedBundle`, a small picklable reference; the main process maps the block
and parses it in place (no copy, no pickling of packet data). The main process owns every block it
has opened: they form a byte-bounded LRU, and evicted blocks are unlinked.

    cache = SharedGopCache(capacity_bytes=2 << 30)          # main process, before the DataLoader
    ref = cache.share(store.read_bundle(video, gop))        # in a worker: returns a SharedBundle
    bundle = cache.open(ref)                                # main process: a GopBundle, zero-copy

A block that is gone when the main process opens it (unlinked by someone else, or /dev/shm cleared)
is read again with ``reread`` when one is given, else fails with :class:`CorruptDataError`: never
silent zeros (the bundle's CRC is checked when it is parsed). :meth:`SharedGopCache.close` also
removes blocks workers made that were never opened (a DataLoader stopped mid-epoch).

Layers that keep their own index of blocks (``asyncdecode.compat.accvlab.SharedGopStore``) use the
parts alone: :meth:`~SharedGopCache.share_buffer` copies bytes that are already serialized,
:meth:`~SharedGopCache.view` maps a block without parsing it or keeping it, and a ``prefix`` given at
construction lets processes that never saw the cache object name blocks that its ``close`` removes.

Works with the ``fork`` and ``spawn`` start methods: the cache pickles as its settings only. Blocks
are files in ``/dev/shm`` (Linux), mapped read-only by the main process; a mapping lives as long as a
bundle parsed from it, an unlinked block's memory is freed when its last mapping goes.
"""

from __future__ import annotations

import glob
import logging
import mmap
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import BackendUnavailableError, CorruptDataError, InvalidRequestError
from .gop import GopBundle

__all__ = ["SharedBundle", "SharedGopCache"]

log = logging.getLogger("asyncdecode")

_SHM_DIR = "/dev/shm"
_NAME_OK = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SharedBundle:
    """A GOP bundle in a shared-memory block: what a worker returns instead of the bundle's bytes."""

    name: str
    """Name of the shared-memory block."""
    nbytes: int
    """Bytes of the serialized bundle at the start of the block."""
    source: str
    """Video the bundle was cut from."""
    first_frame_id: int
    """Frame id of the GOP's first frame: with ``source``, what identifies the GOP."""


class _Entry:
    __slots__ = ("name", "bundle", "nbytes")

    def __init__(self, name: str | None, bundle: GopBundle, nbytes: int) -> None:
        self.name = name
        self.bundle = bundle
        self.nbytes = nbytes


class SharedGopCache:
    """Byte-bounded LRU of GOP bundles in shared memory, owned by the main process.

    Args:
        capacity_bytes: Bytes of opened blocks kept at most; the least recently used are unlinked.
        reread: ``reread(source, first_frame_id) -> GopBundle``, used when a block has gone missing
            (for example ``lambda v, f: store.read_bundle(v, store.info(v).gop_of(f))``). Without it a
            missing block fails with :class:`CorruptDataError`.
        prefix: Start of the names of the blocks made through this cache (default: one of its own).
            :meth:`close` removes every block whose name starts with it, so it must be unique to the
            cache and must not be the start of any other cache's prefix.
    """

    def __init__(self, capacity_bytes: int, *, reread: Callable[[str, int], GopBundle] | None = None,
                 prefix: str | None = None) -> None:
        if not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise InvalidRequestError(f"capacity_bytes must be an int >= 0, not {capacity_bytes!r}")
        if prefix is not None and not (isinstance(prefix, str) and _NAME_OK.fullmatch(prefix)):
            raise InvalidRequestError(f"prefix must be a non-empty name of letters, digits, '_', '-' and '.', "
                                      f"not {prefix!r}")
        if not os.path.isdir(_SHM_DIR):
            raise BackendUnavailableError(f"SharedGopCache needs {_SHM_DIR} (Linux shared memory)")
        self.capacity_bytes = capacity_bytes
        self.reread = reread
        self.prefix = prefix if prefix is not None else f"adgop_{os.getpid()}_{secrets.token_hex(4)}_"
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._made = 0
        self.nbytes = 0
        self.hits = 0
        self.opened = 0
        self.rereads = 0
        self.evictions = 0

    # -- pickling: workers get the settings, never the main process's blocks ------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity_bytes": self.capacity_bytes, "reread": self.reread, "prefix": self.prefix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity_bytes"], reread=state["reread"], prefix=state["prefix"])  # type: ignore[misc]

    # -- worker side --------------------------------------------------------------------------

    def share(self, bundle: GopBundle) -> SharedBundle:
        """Copy ``bundle`` into a new shared-memory block and return the reference to hand over."""
        return self.share_buffer(bundle.buffer, source=bundle.source, first_frame_id=bundle.first_frame_id)

    def share_buffer(self, data: Any, *, source: str, first_frame_id: int) -> SharedBundle:
        """Copy bytes that are already serialized (a bundle file read whole, say) into a new block.

        The bytes are not parsed here: :meth:`open` checks them when it parses them.

        Args:
            data: A C-contiguous buffer (``bytes``, a ``uint8`` numpy array, a ``memoryview`` ...).
            source, first_frame_id: What the reference says the bytes hold.
        """
        view = memoryview(data).cast("B")
        while True:
            with self._lock:
                self._made += 1
                # the GOP's first frame ends the name, so that /dev/shm says what each block holds
                name = f"{self.prefix}{os.getpid()}_{self._made}_{first_frame_id}"
            try:
                fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                break
            except FileExistsError:  # left by an earlier process of the same pid
                continue
        try:
            rest = view
            while rest:
                rest = rest[os.write(fd, rest):]
        except BaseException:
            os.close(fd)
            _unlink(name)
            raise
        os.close(fd)
        return SharedBundle(name, view.nbytes, source, first_frame_id)

    # -- main process -------------------------------------------------------------------------

    def open(self, ref: SharedBundle) -> GopBundle:
        """The bundle behind ``ref``, parsed in place; the block joins the LRU (and is unlinked when evicted).

        Raises:
            CorruptDataError: the block is gone and no ``reread`` was given, or its data is damaged.
        """
        key = (ref.source, ref.first_frame_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                if entry.name != ref.name:
                    _unlink(ref.name)  # a second copy of a GOP already here
                return entry.bundle
        block = _map(ref.name)
        if block is None:
            return self._reread(ref)
        try:
            if len(block) < ref.nbytes:
                raise CorruptDataError(f"{len(block)} bytes, {ref.nbytes} expected")
            bundle = GopBundle.from_buffer(memoryview(block)[: ref.nbytes])
        except CorruptDataError as exc:
            _unlink(ref.name)
            raise CorruptDataError(f"{ref.source}: shared GOP block {ref.name} (frame {ref.first_frame_id}) is "
                                   f"damaged ({exc})", path=ref.source, frame_id=ref.first_frame_id) from None
        self._add(key, _Entry(ref.name, bundle, ref.nbytes))
        self.opened += 1
        return bundle

    def view(self, ref: SharedBundle) -> memoryview:
        """The ``ref.nbytes`` bytes of the block, mapped read-only in place: not parsed, not kept in
        the LRU, and not removed by this call (the mapping stays valid after the block is unlinked).

        Raises:
            CorruptDataError: the block is gone, or holds fewer bytes than ``ref`` says.
        """
        block = _map(ref.name)
        of = f" of {ref.source}" if ref.source else ""
        where = f"shared GOP block {ref.name} (frame {ref.first_frame_id}{of})"
        if block is None:
            raise CorruptDataError(f"{where} is gone", path=ref.source or None, frame_id=ref.first_frame_id)
        if len(block) < ref.nbytes:
            raise CorruptDataError(f"{where} holds {len(block)} bytes, {ref.nbytes} expected",
                                   path=ref.source or None, frame_id=ref.first_frame_id)
        return memoryview(block)[: ref.nbytes]

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.nbytes, "capacity_bytes": self.capacity_bytes,
                "opened": self.opened, "hits": self.hits, "rereads": self.rereads, "evictions": self.evictions}

    def close(self) -> None:
        """Unlink every block: those opened here and those workers made that nobody opened. Idempotent."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), OrderedDict()
            self.nbytes = 0
        for entry in entries:
            if entry.name is not None:
                _unlink(entry.name)
        for path in glob.glob(_path(self.prefix + "*")):
            _unlink(os.path.basename(path))

    def __enter__(self) -> SharedGopCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reread(self, ref: SharedBundle) -> GopBundle:
        if self.reread is None:
            raise CorruptDataError(f"{ref.source}: shared GOP block {ref.name} (frame {ref.first_frame_id}) "
                                   "is gone and no reread was configured", path=ref.source,
                                   frame_id=ref.first_frame_id)
        log.warning("asyncdecode: shared GOP block %s is gone; reading %s frame %d again", ref.name,
                    ref.source, ref.first_frame_id)
        bundle = self.reread(ref.source, ref.first_frame_id)
        self.rereads += 1
        self._add((ref.source, ref.first_frame_id), _Entry(None, bundle, bundle.nbytes))
        return bundle

    def _add(self, key: tuple[str, int], entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
                if old.name is not None:
                    _unlink(old.name)
            self._entries[key] = entry
            self.nbytes += entry.nbytes
            while self.nbytes > self.capacity_bytes and len(self._entries) > 1:
                _, victim = self._entries.popitem(last=False)
                self.nbytes -= victim.nbytes
                self.evictions += 1
                if victim.name is not None:
                    _unlink(victim.name)  # its memory goes with the last bundle mapped from it


def _path(name: str) -> str:
    return os.path.join(_SHM_DIR, name)


def _map(name: str) -> mmap.mmap | bytes | None:
    """The whole block, mapped read-only (``None``: there is no such block)."""
    try:
        fd = os.open(_path(name), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        return mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
    finally:
        os.close(fd)


def _unlink(name: str) -> None:
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        pass
