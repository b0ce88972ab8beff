"""The engine behind one accvlab object: a :class:`~asyncdecode.SyncEngine` made on first use.

Frames asked for by file and frame id go through the engine's public API (``decode`` / ``submit``):
index, GOP cache, demux, decoder threads. Frames asked for from GOP data the caller already has
(``DecodeFromGOP*``), and native NV12 frames, need two things the engine does not offer publicly yet:
decoding given bundles without indexing their video (the video need not exist: demuxer-free use), and
the decoder's own planes instead of an ``OutputSpec``. :func:`_decode_bundle` does both by handing the
bundle to the engine's decoder pool, exactly as the engine does for its own bundles. It is the one
place here that reaches into the engine; an ``Engine.decode_bundles`` would replace it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Sequence
from typing import Any, Literal, TypeVar

import torch

from .._engine import Engine, EngineState
from .._output import OutputSpec
from .._sync import SyncEngine
from ..errors import BackendUnavailableError, EngineClosedError, InvalidRequestError
from ..gop import GopBundle

log = logging.getLogger("asyncdecode")

T = TypeVar("T")

Device = Literal["auto", "cpu", "cuda"]


def resolve_device(device: Device, gpu: int) -> str:
    """The engine device for an accvlab ``iGpu`` and this layer's ``device`` choice.

    ``"auto"``: ``cuda:<iGpu>`` when torch sees CUDA, else the CPU; ``"cuda"``: ``cuda:<iGpu>`` or an
    error; ``"cpu"``: the CPU.

    Raises:
        InvalidRequestError: a bad ``device`` or ``iGpu``.
        BackendUnavailableError: ``iGpu`` is not a device of this machine (when there is CUDA), or
            ``"cuda"`` without CUDA.
    """
    if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
        raise InvalidRequestError(f"iGpu must be a GPU index >= 0, not {gpu!r}")
    if device == "cpu":
        return "cpu"
    if device not in ("auto", "cuda"):
        raise InvalidRequestError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if not torch.cuda.is_available():
        if device == "cuda":
            raise BackendUnavailableError(f"cuda:{gpu}: CUDA is not available (torch {torch.__version__})",
                                          device=f"cuda:{gpu}")
        return "cpu"
    if gpu >= torch.cuda.device_count():
        raise BackendUnavailableError(f"iGpu={gpu}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                                      device=f"cuda:{gpu}")
    return f"cuda:{gpu}"


class Runner:
    """Owns the :class:`SyncEngine` of one accvlab object: made on first use, given back by
    :meth:`release` (the next call makes a new one), closed for good by :meth:`close`."""

    def __init__(self, device: Device, gpu: int) -> None:
        self._want = device
        self._gpu = gpu
        self.device = resolve_device(device, gpu)
        self._sync: SyncEngine | None = None
        self._lock = threading.Lock()
        self._closed = False

    def engine(self) -> SyncEngine:
        """The engine, made now if there is none (a GPU the engine cannot use falls back to the CPU
        under ``device="auto"``)."""
        with self._lock:
            if self._closed:
                raise EngineClosedError("the decoder is closed", device=self.device)
            if self._sync is None:
                try:
                    self._sync = SyncEngine(self.device)
                except BackendUnavailableError as exc:
                    if self._want != "auto" or self.device == "cpu":
                        raise
                    log.warning("asyncdecode.compat.accvlab: %s; decoding on the CPU", str(exc))
                    self.device = "cpu"
                    self._sync = SyncEngine("cpu")
            return self._sync

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    # -- by file and frame id: the engine's own path ------------------------------------------

    def decode(self, paths: Sequence[str], frame_ids: Sequence[int], output: OutputSpec) -> list[torch.Tensor]:
        return self.engine().decode(list(paths), list(frame_ids), output=output)

    def submit(self, paths: Sequence[str], frame_ids: Sequence[int],
               output: OutputSpec) -> concurrent.futures.Future[list[torch.Tensor]]:
        return self.engine().submit(list(paths), list(frame_ids), output=output)

    # -- given bundles ------------------------------------------------------------------------

    def decode_bundles(self, jobs: Sequence[tuple[GopBundle, Sequence[int]]],
                       output: OutputSpec | None) -> list[dict[int, Any]]:
        """Decode the wanted frame ids of each bundle; ``output=None``: the decoder's planes
        (``(Y, U, V)`` integer tensors). Results in the order of ``jobs``, on the engine's device."""
        fut = self.submit_bundles(jobs, output)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def submit_bundles(self, jobs: Sequence[tuple[GopBundle, Sequence[int]]],
                       output: OutputSpec | None) -> concurrent.futures.Future[list[dict[int, Any]]]:
        """:meth:`decode_bundles` started in the background: its results come in the future."""
        sync = self.engine()
        engine = sync.engine
        jobs = [(b, sorted(set(w))) for b, w in jobs]

        async def run() -> list[dict[int, Any]]:
            if engine.state is not EngineState.OPEN:
                raise EngineClosedError(f"the engine is {engine.state.value}", device=str(engine.device))
            return await _gather([_decode_bundle(engine, b, w, output) for b, w in jobs])

        return asyncio.run_coroutine_threadsafe(run(), sync.loop)

    # -- lifetime -----------------------------------------------------------------------------

    def release(self) -> None:
        """Close the engine (decoder sessions, threads, caches); the next call makes a new one."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    def empty_device_cache(self) -> None:
        """Give the device memory torch holds unused back to the driver."""
        if self.device.startswith("cuda") and torch.cuda.is_initialized():
            with torch.cuda.device(self.torch_device):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    @property
    def closed(self) -> bool:
        return self._closed


async def _decode_bundle(engine: Engine, bundle: GopBundle, wanted: list[int],
                         output: OutputSpec | None) -> dict[int, Any]:
    """One bundle through the engine's decoder pool: the device's, or the CPU pool for streams the
    device cannot decode (frames moved to the device), as the engine decodes its own bundles."""
    return await engine.internal.decode_bundle(bundle, wanted, output)


async def _gather(aws: list[Awaitable[T]]) -> list[T]:
    """Await all; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
