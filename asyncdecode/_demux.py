"""Demux jobs: a pool of open :class:`~asyncdecode.gop.GopReader` objects shared by the demux threads."""

from __future__ import annotations

import threading
from collections import OrderedDict

from . import _faults
from .gop import GopBundle, GopReader
from .media import VideoIndex


class ReaderPool:
    """Open readers, reused across GOPs of the same file, at most ``max_open`` in all (LRU).

    A reader is used by one thread at a time: :meth:`read` takes one out of the pool (or opens one),
    uses it, and puts it back. Readers of a file whose index changed (new size or mtime) are closed.
    """

    def __init__(self, max_open: int) -> None:
        self.max_open = max(1, max_open)
        self._idle: OrderedDict[int, tuple[str, VideoIndex, GopReader]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 0

    def read(self, index: VideoIndex, gop: int) -> GopBundle:
        reader = self._take(index)
        try:
            if _faults.armed:
                _faults.hit("demux", index.path)
            bundle = reader.read(gop)
        except BaseException:
            reader.close()
            raise
        self._give_back(index, reader)
        return bundle

    def _take(self, index: VideoIndex) -> GopReader:
        with self._lock:
            for key, (path, idx, reader) in list(self._idle.items()):
                if path != index.path:
                    continue
                del self._idle[key]
                if idx is index or idx.stamp == index.stamp:
                    return reader
                reader.close()  # the file changed: this reader describes the old one
        self.opened += 1
        return GopReader(index)

    def _give_back(self, index: VideoIndex, reader: GopReader) -> None:
        to_close = []
        with self._lock:
            if self._closed:
                to_close.append(reader)
            else:
                self._idle[id(reader)] = (index.path, index, reader)
                while len(self._idle) > self.max_open:
                    to_close.append(self._idle.popitem(last=False)[1][2])
        for r in to_close:
            r.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            readers = [r for _, _, r in self._idle.values()]
            self._idle.clear()
        for r in readers:
            r.close()
