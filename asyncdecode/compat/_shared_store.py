"""accvlab's ``SharedGopStore`` and ``GopRef``: GOP data that DataLoader workers share in /dev/shm,
found again by video and frame from any process of the loader.

The main process makes the store before the workers start (:meth:`SharedGopStore.create`); a worker
attaches to it by id (:meth:`SharedGopStore.attach`, or by unpickling a store it was given). A worker
asks :meth:`~SharedGopStore.lookup` for the GOP that holds a frame and, on a miss, demuxes it
(``GetGOPList``) and :meth:`~SharedGopStore.put` s it. Either way it hands a :class:`GopRef` (about a
hundred bytes pickled) to the main process, which gets the data back with
:meth:`~SharedGopStore.get_batch` (read-only numpy views of the blocks, no copy), decodes it with
``DecodeFromGOPListRGB``, and removes everything with :meth:`~SharedGopStore.cleanup` at the end::

    store = nvc.SharedGopStore.create(capacity=batch_size * cameras * 10, store_id=local_rank)
    ref = store.lookup(path, fid)                                   # in a worker
    if ref is None:
        data, firsts, lens = decoder.GetGOPList([path], [fid])[0]
        ref = store.put(path, firsts[0], lens[0], data)
    frames = decoder.DecodeFromGOPListRGB(store.get_batch(refs), paths, fids)   # main process

How it is kept:

* Blocks are written, mapped and removed by a :class:`~asyncdecode.shared.SharedGopCache` whose name
  prefix is drawn when the store is created: a reference from an earlier store of the same id never
  finds a block of a later one.
* The index is a file in /dev/shm that every process maps: a header and ``capacity`` slots, each the
  digest of the video (its path, size and mtime), the GOP's first frame and length, its block, and a
  use tick (0: free). Every read or write of it holds an ``flock`` on that file (between processes,
  spawned or forked) and a thread lock (between threads of one process).
* A full index gives the slot of the least recently used GOP to the new one. The evicted GOP's block
  stays: a worker cannot know whether a reference to it is still on its way to the main process.
  :meth:`~SharedGopStore.get_batch` removes the blocks no slot names, after it has mapped the batch.
  A reference whose block is gone when it is read fails with :class:`~asyncdecode.CorruptDataError`,
  never zeros: ``capacity`` must exceed the GOPs in flight.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import mmap
import os
import secrets
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ..errors import BackendUnavailableError, CorruptDataError, EngineClosedError, InvalidRequestError
from ..shared import SharedBundle, SharedGopCache

__all__ = ["GopRef", "SharedGopStore", "StoreNotFoundError"]

_SHM_DIR = "/dev/shm"
_MAGIC = b"ADGSTOR1"
_REMOVED = b"ADGSGONE"
_HEADER = np.dtype([("magic", "S8"), ("capacity", "<i8"), ("tick", "<i8"), ("prefix", "S72")])
_SLOT = np.dtype([("key", "<u8", (2,)), ("first_frame_id", "<i8"), ("gop_len", "<i8"), ("nbytes", "<i8"),
                  ("tick", "<i8"), ("name", "S96")])
_CREATION_KEY = object()
_SIZING = "(prefetch_factor * num_workers + 1) * batch_size * cameras"


class GopRef(NamedTuple):
    """Where one GOP's data lies in a :class:`SharedGopStore`: what a worker hands to the main
    process instead of the data. A tuple, as accvlab's is; it pickles to about a hundred bytes."""

    shm_name: str
    """Name of the shared-memory block (a file in /dev/shm)."""
    data_size: int
    """Bytes of GOP data at the start of the block."""
    first_frame_id: int
    """Frame id of the GOP's first frame."""
    gop_len: int
    """Frames in the GOP: it holds ``first_frame_id .. first_frame_id + gop_len - 1``."""


class StoreNotFoundError(InvalidRequestError, RuntimeError, FileNotFoundError):
    """:meth:`SharedGopStore.attach` found no store of that id: an
    :class:`~asyncdecode.InvalidRequestError`, the ``RuntimeError`` of this layer, and the
    ``FileNotFoundError`` that accvlab raises there."""


class _Index:
    """One store's index file, mapped: its header and slots, and the locks that guard them."""

    def __init__(self, path: str, file: BinaryIO) -> None:
        self.path = path
        self.file = file
        st = os.fstat(file.fileno())
        self.ino = st.st_ino
        if st.st_size < _HEADER.itemsize:
            raise CorruptDataError(f"{path} is not a SharedGopStore index ({st.st_size} bytes)", path=path)
        self.map = mmap.mmap(file.fileno(), st.st_size)
        self.header: np.ndarray = np.ndarray((), _HEADER, buffer=self.map)
        capacity = int(self.header["capacity"])
        if self.magic() not in (_MAGIC, _REMOVED) or st.st_size != _HEADER.itemsize + capacity * _SLOT.itemsize:
            self.close()
            raise CorruptDataError(f"{path} is not a SharedGopStore index of this version", path=path)
        self.slots: np.ndarray = np.ndarray((capacity,), _SLOT, buffer=self.map, offset=_HEADER.itemsize)
        self.thread_lock = threading.Lock()

    @classmethod
    def create(cls, path: str, capacity: int, prefix: str) -> _Index:
        """A new, empty index at ``path``, replacing any there (written aside, then renamed into place)."""
        tmp = f"{path}.{os.getpid()}.tmp"
        header = np.zeros((), _HEADER)
        header["magic"], header["capacity"], header["prefix"] = _MAGIC, capacity, prefix.encode()
        file = open(tmp, "w+b", buffering=0)  # noqa: SIM115  (kept open: it is the index's lock)
        try:
            file.write(header.tobytes())
            file.truncate(_HEADER.itemsize + capacity * _SLOT.itemsize)
            os.replace(tmp, path)
            return cls(path, file)
        except BaseException:
            file.close()
            _unlink(tmp)
            raise

    def magic(self) -> bytes:
        return bytes(self.header["magic"].item())

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.thread_lock:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)

    def after_fork(self) -> None:
        """Give a forked child a lock of its own: the inherited descriptor is the parent's, and an
        ``flock`` does not exclude another holder of the same descriptor."""
        self.file = open(f"/proc/self/fd/{self.file.fileno()}", "r+b", buffering=0)  # noqa: SIM115
        self.thread_lock = threading.Lock()

    def remove(self, blocks: SharedGopCache) -> None:
        """Mark the store gone for every process that maps it, then remove its blocks and index file."""
        if self.header is None:  # closed here: nothing left to mark
            self._remove(blocks)
            return
        with self.locked():
            self.header["magic"] = _REMOVED
            self._remove(blocks)

    def _remove(self, blocks: SharedGopCache) -> None:
        blocks.close()
        try:
            if os.stat(self.path).st_ino == self.ino:  # not a store created since under this id
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self.header is None:
            return
        self.header = self.slots = None  # type: ignore[assignment]  (no view may outlive the map)
        self.map.close()
        self.file.close()


class SharedGopStore:
    """GOP data in shared memory, found by video and frame from every process of one DataLoader.

    Made by :meth:`create` in the main process, before the workers start, and reached by
    :meth:`attach` in the workers; a pickled store unpickles attached, so a dataset may hold one.
    Workers :meth:`lookup` and :meth:`put`; the main process :meth:`get_batch` es the references they
    return and finally :meth:`cleanup` s. The module docstring says how it is kept.

    ``capacity`` is a number of GOPs and must exceed those in flight (queued in the DataLoader or being
    decoded), ``(prefetch_factor * num_workers + 1) * batch_size * cameras``; accvlab suggests
    ``batch_size * cameras * 10``. A GOP evicted and removed before the main process reads it fails
    that read with :class:`~asyncdecode.CorruptDataError`.

    Lifetime: :meth:`close` lets go of this process's handles and leaves the data; :meth:`cleanup`
    removes the store for every process. The process that created the store removes it when the store
    is collected or the interpreter exits, with a ``ResourceWarning``, if ``cleanup()`` was not called.

    Raises:
        InvalidRequestError: called directly rather than through :meth:`create` / :meth:`attach`.
    """

    def __init__(self, capacity: int, store_id: int = 0, _create: bool = False, *, _key: object = None) -> None:
        if _key is not _CREATION_KEY:
            raise InvalidRequestError("SharedGopStore cannot be instantiated directly: use SharedGopStore.create() "
                                      "in the main process and SharedGopStore.attach() in the workers")
        self._capacity = _int_arg("SharedGopStore", "capacity", capacity, 1)
        self._store_id = _int_arg("SharedGopStore", "store_id", store_id, None)
        if not os.path.isdir(_SHM_DIR):
            raise BackendUnavailableError(f"SharedGopStore needs {_SHM_DIR} (Linux shared memory)")
        base = f"adgs{os.getuid()}_{self._store_id}"
        path = os.path.join(_SHM_DIR, f"{base}.index")
        if _create:
            for stale in glob.glob(os.path.join(_SHM_DIR, f"{base}_*")):  # blocks of an earlier store of this id
                _unlink(stale)
            self._index = _Index.create(path, self._capacity, f"{base}_{secrets.token_hex(4)}_")
        else:
            self._index = self._open(path)
        self._blocks = SharedGopCache(0, prefix=self._index.header["prefix"].item().decode())
        self._pid = self._creator_pid = os.getpid()
        self._closed = self._removed = False
        self._hits = self._misses = self._puts = self._evictions = 0
        # The creator's index stays mapped until the store is removed: by cleanup(), or by this finalizer
        # when the store is collected (or the interpreter exits) without it.
        self._finalizer = weakref.finalize(self, _abandoned, self._store_id, self._index, self._blocks,
                                           self._pid) if _create else None

    def _open(self, path: str) -> _Index:
        try:
            file = open(path, "r+b", buffering=0)  # noqa: SIM115  (kept open: it is the index's lock)
        except FileNotFoundError:
            raise StoreNotFoundError(f"no SharedGopStore with store_id={self._store_id}: call "
                                     "SharedGopStore.create() in the main process first, before the workers "
                                     "start") from None
        try:
            index = _Index(path, file)
        except BaseException:
            file.close()
            raise
        if index.magic() != _MAGIC:
            index.close()
            raise StoreNotFoundError(f"SharedGopStore store_id={self._store_id} was cleaned up; create it again "
                                     "with SharedGopStore.create()")
        created = len(index.slots)
        if created != self._capacity:
            index.close()
            raise InvalidRequestError(f"SharedGopStore store_id={self._store_id} was created with capacity "
                                      f"{created}, not {self._capacity}: attach with the creator's capacity")
        return index

    # -- making and reaching a store ----------------------------------------------------------

    @classmethod
    def create(cls, capacity: int, store_id: int = 0) -> SharedGopStore:
        """Make the store, in the main process before the DataLoader starts its workers.

        A store left in /dev/shm under the same id (by a run that crashed) is removed first; so is a
        live one: ``store_id`` must be unique among live stores (the local rank, typically).

        Args:
            capacity: GOPs held at most (see the class docstring for how many are needed).
            store_id: What workers attach by.
        """
        return cls(capacity, store_id, True, _key=_CREATION_KEY)

    @classmethod
    def attach(cls, capacity: int, store_id: int = 0) -> SharedGopStore:
        """Reach the store made by :meth:`create`, from a worker (or any process of the same user).

        Raises:
            StoreNotFoundError: no store of that id (also an ``InvalidRequestError`` and a
                ``FileNotFoundError``).
            InvalidRequestError: the store was created with another capacity.
        """
        return cls(capacity, store_id, False, _key=_CREATION_KEY)

    def __reduce__(self) -> tuple[Any, ...]:
        return _attach, (self._capacity, self._store_id)

    @property
    def capacity(self) -> int:
        """GOPs held at most."""
        return self._capacity

    @property
    def store_id(self) -> int:
        """The id workers attach by."""
        return self._store_id

    # -- workers --------------------------------------------------------------------------------

    def lookup(self, video_path: str | os.PathLike[str], frame_id: int) -> GopRef | None:
        """The GOP of ``video_path`` that holds ``frame_id``, if the store has it (``None``: a miss).

        A hit when ``first_frame_id <= frame_id < first_frame_id + gop_len`` of a GOP put for this video
        (the same path, and the same size and mtime of the file when it exists); the most recently
        used wins where two GOPs hold the frame. A hit makes the GOP the most recently used.
        """
        path = _path_arg("lookup", video_path)
        fid = _int_arg("lookup", "frame_id", frame_id, None)
        key = _video_key(path)
        with self._locked() as index:
            slots = index.slots
            first = slots["first_frame_id"]
            found = np.flatnonzero(_of_video(slots, key) & (first <= fid) & (fid < first + slots["gop_len"]))
            if found.size == 0:
                self._misses += 1
                return None
            self._hits += 1
            return self._touch(index, int(found[np.argmax(slots["tick"][found])]))

    def put(self, video_path: str | os.PathLike[str], first_frame_id: int, gop_len: int, data: Any) -> GopRef:
        """Copy one GOP's data into the store and return its reference.

        When the store already holds this GOP (same video, first frame and length: another worker put
        it meanwhile) that entry is returned and nothing is copied. When the store is full, the least
        recently used GOP's slot is taken (its block stays until :meth:`get_batch` removes it).

        Args:
            data: The GOP's serialized packet data, as ``GetGOP`` / ``GetGOPList`` return it: a
                ``uint8`` numpy array or any bytes-like object. Not parsed here; the decoder checks
                every bundle when it decodes.

        Raises:
            InvalidRequestError: empty or non-bytes data, a bad frame id or length.
            BackendUnavailableError: /dev/shm has no room for the block.
        """
        path = _path_arg("put", video_path)
        first = _int_arg("put", "first_frame_id", first_frame_id, 0)
        count = _int_arg("put", "gop_len", gop_len, 1)
        view = _data_view(data)
        key = _video_key(path)
        with self._locked() as index:
            slots = index.slots
            same = np.flatnonzero(_of_video(slots, key) & (slots["first_frame_id"] == first)
                                  & (slots["gop_len"] == count))
            if same.size:
                return self._touch(index, int(same[0]))
            try:
                block = self._blocks.share_buffer(view, source=path, first_frame_id=first)
            except OSError as exc:
                raise BackendUnavailableError(
                    f"SharedGopStore store_id={self._store_id}: cannot write {view.nbytes} bytes of {path} frame "
                    f"{first} to {_SHM_DIR}: {exc.strerror or exc}", path=path, frame_id=first) from exc
            i = self._free_slot(slots)
            slots["key"][i] = key
            slots["first_frame_id"][i] = first
            slots["gop_len"][i] = count
            slots["nbytes"][i] = block.nbytes
            slots["name"][i] = block.name.encode()
            slots["tick"][i] = _next_tick(index)  # last: until then the slot reads as free
            self._puts += 1
            return GopRef(block.name, block.nbytes, first, count)

    # -- main process -----------------------------------------------------------------------------

    def read(self, ref: GopRef) -> np.ndarray:
        """The data behind ``ref``: a read-only ``uint8`` view of its block, no copy.

        The view stays valid after the block is removed from /dev/shm.

        Raises:
            CorruptDataError: the block is gone (evicted and removed before this read: the capacity is
                too small) or shorter than ``ref`` says.
            InvalidRequestError: ``ref`` is not a reference of this store.
        """
        self._check_open()
        return self._view(_ref_arg("read", ref))

    def get_batch(self, refs: Sequence[GopRef]) -> list[np.ndarray]:
        """:meth:`read` each reference, in order, then remove the blocks of GOPs evicted since: call
        it once per batch in the main process.

        Raises:
            As :meth:`read`; blocks are removed whether or not every reference could be read.
        """
        if isinstance(refs, (str, bytes, GopRef)) or not isinstance(refs, Sequence):
            raise InvalidRequestError(f"get_batch: refs must be a list of GopRef, not {type(refs).__name__}")
        checked = [_ref_arg("get_batch", r) for r in refs]
        with self._locked() as index:
            try:
                return [self._view(r) for r in checked]
            finally:
                self._remove_orphans(index)

    # -- statistics -------------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """This process's ``hits``, ``misses``, ``hit_rate``, ``puts`` and ``evictions``, and the
        store's ``pool_usage`` (``"used/capacity"``, shared by every process)."""
        with self._locked() as index:
            used = int(np.count_nonzero(index.slots["tick"]))
        asked = self._hits + self._misses
        return {"hits": self._hits, "misses": self._misses, "hit_rate": self._hits / asked if asked else 0.0,
                "puts": self._puts, "evictions": self._evictions, "pool_usage": f"{used}/{self._capacity}"}

    def reset_stats(self) -> None:
        """Zero this process's counters (``pool_usage`` is the store's and stays)."""
        self._hits = self._misses = self._puts = self._evictions = 0

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of this process's handles and leave the store to the others: what a worker does
        before it exits. Idempotent; later calls raise :class:`~asyncdecode.EngineClosedError`. Views
        already returned stay valid. (In the process that created the store, the store is removed
        when it is collected, with a ``ResourceWarning``, unless :meth:`cleanup` is called.)"""
        if self._closed:
            return
        self._closed = True
        if not self._owns():
            self._index.close()

    def cleanup(self) -> None:
        """Remove the store for every process: its blocks, its index, and this process's handles.
        What the main process does at the end; workers still attached get
        :class:`~asyncdecode.InvalidRequestError` from then on. Idempotent."""
        if self._removed:
            return
        if not self._closed:
            self._after_fork()
        self._index.remove(self._blocks)
        self._removed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        self._closed = True
        self._index.close()

    def __enter__(self) -> SharedGopStore:
        return self

    def __exit__(self, *exc: object) -> None:
        """:meth:`cleanup` in the process that created the store, :meth:`close` elsewhere."""
        if self._owns():
            self.cleanup()
        else:
            self.close()

    def __repr__(self) -> str:
        how = "closed" if self._closed else "created" if self._owns() else "attached"
        return f"<SharedGopStore store_id={self._store_id} capacity={self._capacity} {how}>"

    # -- inside -----------------------------------------------------------------------------------

    def _owns(self) -> bool:
        """Whether this is the creating store, in the process that created it."""
        return self._finalizer is not None and self._finalizer.alive and os.getpid() == self._creator_pid

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(f"SharedGopStore store_id={self._store_id} is closed")

    def _after_fork(self) -> None:
        """In a forked child, before its first use: locks, block naming and counters of its own."""
        if os.getpid() == self._pid:
            return
        self._index.after_fork()
        self._blocks = SharedGopCache(0, prefix=self._blocks.prefix)
        self._pid = os.getpid()
        self.reset_stats()

    @contextmanager
    def _locked(self) -> Iterator[_Index]:
        self._check_open()
        self._after_fork()
        with self._index.locked():
            if self._index.magic() != _MAGIC:
                raise InvalidRequestError(f"SharedGopStore store_id={self._store_id} was cleaned up by its "
                                          "main process")
            yield self._index

    def _touch(self, index: _Index, i: int) -> GopRef:
        slots = index.slots
        slots["tick"][i] = _next_tick(index)
        return GopRef(bytes(slots["name"][i]).decode(), int(slots["nbytes"][i]), int(slots["first_frame_id"][i]),
                      int(slots["gop_len"][i]))

    def _free_slot(self, slots: np.ndarray) -> int:
        ticks = slots["tick"]
        free = np.flatnonzero(ticks == 0)
        if free.size:
            return int(free[0])
        i = int(np.argmin(ticks))
        ticks[i] = 0
        self._evictions += 1
        return i

    def _view(self, ref: GopRef) -> np.ndarray:
        if not ref.shm_name.startswith(self._blocks.prefix):
            raise InvalidRequestError(f"GopRef {ref.shm_name} is not a block of SharedGopStore store_id="
                                      f"{self._store_id} (whose blocks are {self._blocks.prefix}*): it comes from "
                                      "another store, or from an earlier store of this id")
        last = ref.first_frame_id + ref.gop_len - 1
        try:
            view = self._blocks.view(SharedBundle(ref.shm_name, ref.data_size, "", ref.first_frame_id))
        except CorruptDataError as exc:
            if os.path.exists(os.path.join(_SHM_DIR, ref.shm_name)):
                raise CorruptDataError(f"SharedGopStore store_id={self._store_id}: GOP frames "
                                       f"{ref.first_frame_id}..{last}: {exc.message}",
                                       frame_id=ref.first_frame_id) from None
            raise CorruptDataError(
                f"SharedGopStore store_id={self._store_id}: the block {ref.shm_name} (GOP frames "
                f"{ref.first_frame_id}..{last}) is gone: it was evicted and removed before it was read (or the "
                f"store was cleaned up). Increase store capacity (current: {self._capacity} GOPs): it must exceed "
                f"the GOPs in flight, {_SIZING}", frame_id=ref.first_frame_id) from None
        return np.frombuffer(view, np.uint8)

    def _remove_orphans(self, index: _Index) -> None:
        """Remove the blocks that no slot names (GOPs evicted since the last batch). Under the lock:
        a worker writes a block and its slot under it too, so no block is caught half made."""
        slots = index.slots
        named = {bytes(n).decode() for n in slots["name"][slots["tick"] > 0]}
        for path in glob.glob(os.path.join(_SHM_DIR, glob.escape(self._blocks.prefix) + "*")):
            if os.path.basename(path) not in named:
                _unlink(path)


# -- helpers ---------------------------------------------------------------------------------------


def _attach(capacity: int, store_id: int) -> SharedGopStore:
    """Unpickle a store: attached, in the process that loads it."""
    return SharedGopStore.attach(capacity, store_id)


def _abandoned(store_id: int, index: _Index, blocks: SharedGopCache, pid: int) -> None:
    """The creator's store was collected, or the interpreter is exiting, without ``cleanup()``."""
    if os.getpid() != pid:
        return
    warnings.warn(f"SharedGopStore store_id={store_id} was not cleaned up: removing its shared memory now "
                  "(call cleanup() in the main process when done)", ResourceWarning, stacklevel=1)
    index.remove(blocks)
    index.close()


def _next_tick(index: _Index) -> int:
    tick = int(index.header["tick"]) + 1
    index.header["tick"] = tick
    return tick


def _of_video(slots: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Mask of the used slots of the video with this key."""
    keys = slots["key"]
    return (slots["tick"] > 0) & (keys[:, 0] == key[0]) & (keys[:, 1] == key[1])


def _video_key(path: str) -> np.ndarray:
    """128-bit digest of a video: its absolute path and, when the file exists, its size and mtime, so
    that a GOP of an earlier version of a file is never found for the file as it is now."""
    try:
        st = os.stat(path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = ""  # GOP data whose video is not on this machine: the path alone
    digest = hashlib.blake2b(f"{path}\0{stamp}".encode("utf-8", "surrogateescape"), digest_size=16).digest()
    return np.frombuffer(digest, "<u8")


def _path_arg(method: str, path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidRequestError(f"{method}: video_path must be a str or os.PathLike, not {type(path).__name__}")
    return os.path.abspath(os.fspath(path))


def _int_arg(method: str, name: str, value: Any, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None
                                                                               and value < minimum):
        allowed = "an int" if minimum is None else f"an int >= {minimum}"
        raise InvalidRequestError(f"{method}: {name} must be {allowed}, not {value!r}")
    return int(value)


def _data_view(data: Any) -> memoryview:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    try:
        view = memoryview(data)
    except TypeError:
        raise InvalidRequestError(f"put: data must be a uint8 numpy array or a bytes-like object, not "
                                  f"{type(data).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.nbytes == 0:
        raise InvalidRequestError("put: the GOP data must not be empty")
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _ref_arg(method: str, ref: Any) -> GopRef:
    if isinstance(ref, GopRef):
        return ref
    if isinstance(ref, tuple) and len(ref) == 4:  # a GopRef rebuilt by code that knows only the tuple
        return GopRef(str(ref[0]), int(ref[1]), int(ref[2]), int(ref[3]))
    raise InvalidRequestError(f"{method}: expected a GopRef, not {type(ref).__name__} ({ref!r})")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
