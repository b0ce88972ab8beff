"""What an engine's add-ons use of it: streaming ingestion (``_ingest``), time access (``_access``) and
the compat layer build on these names, never on the engine's insides, and import nothing from
``_engine`` (which imports them, lazily, for its ``ingest()`` / ``frames()`` / ``frame_at()`` methods).

In: an :class:`~asyncdecode.Engine`, seen as an :class:`EngineLike`. Out: its public methods and its
:attr:`~asyncdecode.Engine.internal` API (:class:`EngineInternal`): open the engine on the running
loop, resolve an output spec, track a task as a request, decode a GOP bundle on the engine's decoder
threads and count frames served. These are an internal contract of the package, not a user API.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from ._output import OutputSpec
    from .gop import GopBundle

__all__ = ["EngineInternal", "EngineLike", "EngineState"]


class EngineState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class EngineInternal(Protocol):
    """An engine's API for its add-ons (``Engine.internal``)."""

    def open(self) -> asyncio.AbstractEventLoop:
        """The engine's event loop (the running one), opening the engine at its first use.

        Raises:
            EngineClosedError: the engine is closing or closed.
            InvalidRequestError: the engine belongs to another event loop.
        """

    def output_spec(self, output: OutputSpec | None) -> OutputSpec:
        """``output``, or the engine's default when ``None`` (``InvalidRequestError`` for another type)."""

    def track(self, task: asyncio.Future[Any]) -> None:
        """Count ``task`` among the engine's requests in flight (``aclose()`` cancels it)."""

    async def decode_bundle(self, bundle: GopBundle, wanted: list[int],
                            output: OutputSpec | None) -> dict[int, Any]:
        """The wanted frames of one GOP bundle, decoded on the engine's decoder threads (or its CPU
        pool for streams the device cannot decode), on the engine's device. ``output=None``: the
        decoder's native planes."""

    def count_served(self, frames: int) -> None:
        """Count ``frames`` frames asked for and returned outside ``decode()`` (``stats()``)."""


class EngineLike(Protocol):
    """The engine as its add-ons see it."""

    config: Any
    device: torch.device
    internal: EngineInternal

    @property
    def state(self) -> EngineState: ...

    async def info(self, path: Any) -> Any: ...

    async def decode(self, paths: Any, frame_ids: Sequence[int], *, output: OutputSpec | None = None,
                     stack: bool = False) -> Any: ...
