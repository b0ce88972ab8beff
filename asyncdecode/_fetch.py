"""The fetch stage of the request path: a GOP's packets, ready for a decoder.

In: an index (:mod:`._index`) and a GOP number. Out: the GOP's :class:`~asyncdecode.gop.GopBundle`
(packets in decode order and their frame ids), from the GOP cache (bounded by bytes, least recently
used first), else cut out of the video by a demux job in the engine's demux threads (open files
pooled, bounded), else, planned from a GOP store, read from its bundle file asynchronously (reads
bounded, each file's checksum checked once while it is unchanged). One job per GOP however many
requests want it at once. I/O happens here, never on a decoder thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import aiofiles.os

from . import _faults
from ._cache import GopCache
from ._demux import ReaderPool
from ._index import Indexes, StoreIndex
from ._once import Once
from .errors import CorruptDataError
from .gop import GopBundle
from .media import VideoIndex

__all__ = ["Gops"]

log = logging.getLogger("asyncdecode")


class Gops:
    """The engine's GOP bundles: cached, demuxed or read from a store, each fetched once at a time.

    Args:
        config: The engine's :class:`~asyncdecode.EngineConfig` (``gop_cache_bytes``,
            ``max_open_files``, ``store_reads``, ``store_fallback``).
        indexes: The index stage (a store read that fails falls back to the video's own index).
        device: Named in the errors raised.
        once: The engine's shared work.
        counters: Where ``demux_jobs``, ``demux_s``, ``store_reads``, ``store_read_s`` and
            ``store_read_bytes`` are counted.
    """

    def __init__(self, config: Any, *, indexes: Indexes, device: str, once: Once, counters: Any) -> None:
        self.config = config
        self.indexes = indexes
        self.device = device
        self._once = once
        self._n = counters
        self.cache = GopCache(config.gop_cache_bytes)
        self.readers = ReaderPool(config.max_open_files)
        self.checked = _Checked()
        self._read_bundle = aiofiles.os.wrap(self.checked.read)
        self._store_reads: asyncio.Semaphore | None = None  # made on the engine's loop (open)

    def open(self) -> None:
        """On the engine's loop, as it opens."""
        self._store_reads = asyncio.Semaphore(self.config.store_reads)

    def close(self) -> None:
        self.readers.close()
        self.cache.clear()

    async def bundle(self, index: VideoIndex | StoreIndex, gop: int) -> GopBundle:
        """GOP ``gop`` of the video ``index`` plans."""
        key = (index.path, index.stamp, gop)
        bundle = self.cache.get(key)
        if bundle is not None:
            return bundle
        if isinstance(index, StoreIndex):
            if key not in self._once:
                self._n.store_reads += 1
            return await self._once.run_async(key, lambda: self._read_stored(index, gop),
                                              lambda b: self.cache.put(key, b))
        if key not in self._once:
            self._n.demux_jobs += 1
        return await self._once.run(key, lambda: self.demux(index, gop), lambda b: self.cache.put(key, b))

    def demux(self, index: VideoIndex, gop: int) -> GopBundle:
        """Cut one GOP out of its video (in the demux pool), timed into ``stats()["demux_s"]``."""
        t = time.perf_counter()
        try:
            return self.readers.read(index, gop)
        except OSError as exc:  # the file system's error (FFmpeg's come as CorruptDataError)
            frames = index.gop_frame_range(gop)
            raise CorruptDataError(f"{index.path}: GOP {gop} (frames {frames.start}..{frames.stop - 1}) cannot be "
                                   f"read ({exc.strerror or exc})", path=index.path, frame_id=frames.start,
                                   device=self.device) from exc
        finally:
            self._n.demux_s += time.perf_counter() - t

    async def _read_stored(self, index: StoreIndex, gop: int) -> GopBundle:
        """One bundle file of the store, read asynchronously (bounded) and parsed in place."""
        path = self.indexes.store.bundle_path(index.path, gop)
        t = time.perf_counter()
        assert self._store_reads is not None
        try:
            async with self._store_reads:
                bundle, nbytes = await self._read_bundle(path)
        except (CorruptDataError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                problem = f"GOP {gop} is missing from the GOP store ({path})"
            elif isinstance(exc, OSError):  # EIO, a permission ...
                problem = f"GOP store file {path} cannot be read ({exc.strerror or exc})"
            else:
                problem = f"GOP store file {path} is damaged ({exc})"
            if self.config.store_fallback == "demux" and os.path.exists(index.path):
                log.warning("asyncdecode: %s: %s; demuxing the video instead", index.path, problem)
                video = await self.indexes.of_file(index.path)
                self._n.demux_jobs += 1  # not through bundle(): this read is itself the in-flight job for the key
                return await self._once.run_blocking(lambda: self.demux(video, gop))
            raise CorruptDataError(f"{index.path}: {problem}", path=index.path, device=self.device) from exc
        finally:
            self._n.store_read_s += time.perf_counter() - t
        self._n.store_read_bytes += nbytes
        return bundle


class _Checked:
    """Bundle files whose checksum this engine has checked, by path, size and modification time.

    Reading a bundle parses its structure every time, but its CRC-32 (a pass over every byte, about
    half the host CPU of reading a 1600x900 HEVC GOP) only the first time the file is read as it is
    now: a file rewritten since (another size or modification time) is checked again. ``asyncdecode
    store verify`` checks every byte of a store.
    """

    _MAX = 1 << 17  # files remembered; forgotten all at once beyond (then checked again)

    def __init__(self) -> None:
        self._seen: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()  # reads run in several of aiofiles' threads at once
        self.checked = 0
        """Bundle reads that checked the checksum (a damaged file is checked again on every read)."""

    def read(self, path: Any) -> tuple[GopBundle, int]:
        """Read and parse one bundle file (in aiofiles' thread pool: one hop); the bundle and its size."""
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
            if _faults.armed:
                data = _faults.hit("store_read", path, data)
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            verify = key not in self._seen
            self.checked += verify
        bundle = GopBundle.from_buffer(data, verify=verify)
        if verify:
            with self._lock:
                if len(self._seen) >= self._MAX:
                    self._seen.clear()
                self._seen.add(key)
        return bundle, len(data)
