"""The decode stage of the request path: which decoder threads decode a GOP bundle, and the frames
back on the engine's device.

In: a :class:`~asyncdecode.gop.GopBundle`, the wanted frame ids and the output format. Out: the
wanted frames (and, asked to collect, the others that came out on the way) as tensors on the
engine's device. Bundles go to the device's :class:`~asyncdecode._workers.DecoderPool` (its bounded
queue and decoder threads), or, for streams the device's decoder cannot take (and
``EngineConfig.unsupported="cpu"``), to a small CPU pool made at the first such stream, whose frames
are then moved to the device. Every path that decodes a bundle goes through here: requests,
read-ahead, streaming ingestion, the compat layer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import torch

from ._backends import Backend, backend_class
from ._output import OutputSpec
from ._workers import DecoderPool
from .errors import UnsupportedStreamError
from .gop import GopBundle

__all__ = ["Decoders"]

log = logging.getLogger("asyncdecode")


class Decoders:
    """The engine's decoder pools: the device's, and the CPU fallback (made when first needed).

    Args:
        backend: The device's backend.
        config: The engine's :class:`~asyncdecode.EngineConfig` (``unsupported``,
            ``cpu_fallback_threads``).
    """

    def __init__(self, backend: Backend, config: Any) -> None:
        self.backend = backend
        self.config = config
        self.device = backend.device
        self.pool: DecoderPool | None = None
        """The device's decoder threads (made when the engine opens)."""
        self.fallback: DecoderPool | None = None
        """CPU decoder threads for streams the device cannot decode (made at the first)."""
        self.fallback_paths: set[str] = set()
        """Files decoded on the CPU instead (``stats()["cpu_fallback_files"]``)."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop, *, threads: int, capacity: int,
             on_loop_closed: Callable[[], None]) -> None:
        """Start the device's decoder threads (the engine opening, on its loop)."""
        self._loop = loop
        self.pool = DecoderPool(self.backend, threads=threads, capacity=capacity, loop=loop,
                                on_loop_closed=on_loop_closed)

    @property
    def threads(self) -> int:
        return self.pool.threads if self.pool is not None else 1

    def pools(self) -> list[DecoderPool]:
        return [p for p in (self.pool, self.fallback) if p is not None]

    async def decode_bundle(self, bundle: GopBundle, wanted: list[int], spec: OutputSpec | None, *,
                            collect: bool = False, costs: Callable[[float, int, float, int], None] | None = None,
                            queued: Callable[[], Any] | None = None,
                            keep: dict[int, Any] | None = None) -> tuple[dict[int, Any], dict[int, Any]]:
        """The wanted frames of one bundle (and, with ``collect``, the others that came out), on the
        engine's device. ``spec=None``: the decoder's native planes (tuples of tensors).

        ``costs``: told the job's conversion seconds and frames converted, and its decode seconds and
        frames wanted; ``queued``: called once the job is in the decoder queue; ``keep``: where given,
        filled with a copy of each wanted frame for the caller to keep (the frame cache), made on the
        decoder thread rather than on the event loop; a frame another request merged into the same
        job keeps already is left out (that request keeps it).
        """
        pool = self.pool_for(bundle)
        want_copies = keep is not None
        try:
            result = await pool.submit(bundle, wanted, spec, collect, queued, want_copies)  # type: ignore[arg-type]
        except UnsupportedStreamError:
            # Found out by the device's decoder itself (the backend now refuses such bundles up front).
            pool = self.pool_for(bundle)
            if pool is self.pool:
                raise
            result = await pool.submit(bundle, wanted, spec, collect, queued, want_copies)  # type: ignore[arg-type]
        if costs is not None:
            timings = result.timings
            costs(timings.get("convert_s", 0.0), len(result.frames) + len(result.extra),
                  timings.get("decode_s", 0.0), len(wanted))
        if pool is self.pool:
            if keep is not None:
                keep.update(result.kept)
            return result.frames, result.extra
        if keep is not None:
            keep.update(_to_device(result.kept, self.device))
        return _to_device(result.frames, self.device), _to_device(result.extra, self.device)

    def pool_for(self, bundle: GopBundle) -> DecoderPool:
        """The device's decoder pool, or the CPU pool for streams the device cannot decode."""
        assert self.pool is not None and self._loop is not None
        try:
            self.backend.check(bundle)
            return self.pool
        except UnsupportedStreamError as exc:
            if self.config.unsupported == "raise" or self.backend.name == "cpu":
                exc.device = str(self.device)
                raise
            if bundle.source not in self.fallback_paths:
                self.fallback_paths.add(bundle.source)
                log.warning("asyncdecode: %s; decoding it on the CPU", str(exc))  # a string: a record keeps no frames alive
        if self.fallback is None:
            cpu = backend_class("cpu")()
            cpu.check(bundle)
            self.fallback = DecoderPool(cpu, threads=self.config.cpu_fallback_threads,
                                        capacity=2 * self.config.cpu_fallback_threads, loop=self._loop)
        else:
            self.fallback.backend.check(bundle)
        return self.fallback


def _to_device(frames: dict[int, Any], device: torch.device) -> dict[int, Any]:
    """Frames (tensors, or tuples of plane tensors) moved to ``device``."""
    return {fid: tuple(p.to(device) for p in f) if isinstance(f, tuple) else f.to(device)
            for fid, f in frames.items()}
