"""The decoder-thread interface every backend implements.

A :class:`Backend` describes a device and makes :class:`Session` objects. Each decoder thread owns one
session for its whole life: the session keeps its decoder between GOPs and files (flushing between
GOPs, reconfiguring when the stream's parameters change) and is closed by that thread when it stops.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import BackendUnavailableError, InvalidRequestError
from ..gop import FLAG_DISPOSABLE, GopBundle
from .._output import OutputSpec


def feed_plan(table: Any, wanted: Collection[int]) -> tuple[list[int], dict[int, int]]:
    """Which packets of a bundle to feed for ``wanted``, and how to recognise the wanted frames.

    Returns:
        Decode-order indices to feed: from the keyframe up to the last packet that shows a wanted
        frame (nothing later is needed: references come earlier in decode order, and frames held
        back for reordering come out with the end-of-stream flush), leaving out disposable
        pictures that are not wanted. And a map from presentation timestamp to wanted frame id.
    """
    fids = table["frame_id"]
    want = np.fromiter(wanted, np.int64, len(wanted))
    hits = np.isin(fids, want)
    last = int(np.flatnonzero(hits)[-1]) if hits.any() else len(table) - 1
    keep = ~((table["flags"][: last + 1] & FLAG_DISPOSABLE).astype(bool) & ~hits[: last + 1])
    frame_of_pts = {int(p): int(f) for p, f in zip(table["pts"][hits], fids[hits])}
    return np.flatnonzero(keep).tolist(), frame_of_pts


class DecodeCancelled(Exception):
    """Raised inside a session when the job's request was cancelled mid-GOP."""


@dataclass
class DecodeResult:
    """Frames one job produced."""

    frames: dict[int, Any]
    """Wanted frame id -> output tensor (or tuple of plane tensors when no output spec was given)."""
    decoded: int = 0
    """Pictures the decoder produced for this job, wanted or not (the cost of the job)."""
    fed: int = 0
    """Packets fed to the decoder."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage (``decode_s``, ``convert_s``)."""


class Session(abc.ABC):
    """One decoder, used by one thread at a time."""

    @abc.abstractmethod
    def decode(self, bundle: GopBundle, wanted: Collection[int], output: OutputSpec | None,
               cancelled: Callable[[], bool]) -> DecodeResult:
        """Decode ``bundle`` from its keyframe until every frame id in ``wanted`` is out.

        With ``output=None`` each frame comes back as the decoder's own planes (a tuple of integer
        tensors, Y then chroma, cropped to the display size): what backends are compared on.

        Packets are fed in decode order; feeding stops as soon as the last wanted frame is out.
        Disposable pictures that are not wanted are not fed at all.

        Raises:
            CorruptDataError: the packets do not decode, or a wanted frame never comes out.
            UnsupportedStreamError: the stream cannot be decoded by this backend.
            DecodeCancelled: ``cancelled()`` became true.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Free the decoder. Idempotent."""


class Backend(abc.ABC):
    """A kind of decoder on one device."""

    name: str
    device: torch.device

    @abc.abstractmethod
    def check(self, bundle: GopBundle) -> None:
        """Raise :class:`~asyncdecode.errors.UnsupportedStreamError` if the stream cannot be decoded."""

    @abc.abstractmethod
    def new_session(self) -> Session:
        """A fresh session; called once per decoder thread, on that thread."""

    def default_sessions(self) -> int:
        """How many decoder threads saturate this backend by default."""
        return 1


def make_backend(device: str | torch.device) -> Backend:
    """The backend for ``device``: ``"cpu"``, ``"cuda"``/``"cuda:N"`` (NVDEC) or ``"auto"``.

    Raises:
        BackendUnavailableError: ``cuda`` was asked for and NVDEC cannot be used here.
        InvalidRequestError: ``device`` is not one of the above.
    """
    from .cpu import CpuBackend

    if isinstance(device, torch.device):
        device = str(device)
    if device == "cpu":
        return CpuBackend()
    if device == "auto":
        try:
            return _nvdec_backend("cuda:0")
        except BackendUnavailableError:
            return CpuBackend()
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        return _nvdec_backend(device if ":" in device else "cuda:0")
    raise InvalidRequestError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {device!r}")


def _nvdec_backend(device: str) -> Backend:
    try:
        from .nvdec import NvdecBackend
    except ImportError as exc:  # the NVDEC backend lands with its own module
        raise BackendUnavailableError(f"{device}: the NVDEC backend is not available in this build",
                                      device=device) from exc
    return NvdecBackend(device)
