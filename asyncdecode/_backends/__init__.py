"""Decoder backends: one session per decoder thread, each turning GOP bundles into output tensors.

:func:`make_backend` picks a backend by device. Each backend's module is imported only when that backend
is made, so importing the package never loads a decoder library.
"""

from __future__ import annotations

import importlib

import torch

from ..errors import BackendUnavailableError, InvalidRequestError
from .base import Backend, DecodeCancelled, DecodeResult, Session

__all__ = ["Backend", "DecodeCancelled", "DecodeResult", "Session", "make_backend"]

BACKENDS: dict[str, tuple[str, str]] = {
    "cpu": ("cpu", "CpuBackend"),
    "nvdec": ("nvdec", "NvdecBackend"),
}
"""Backend name -> (module of this package, class name), imported on first use."""


def backend_class(name: str) -> type[Backend]:
    """The :class:`Backend` subclass registered as ``name``, importing its module now.

    Raises:
        KeyError: no backend is registered as ``name``.
        ImportError: the backend's module cannot be imported here.
    """
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def make_backend(device: str | torch.device, *, nvdec_library: str | None = None) -> Backend:
    """The backend for ``device``: ``"cpu"``, ``"cuda"``/``"cuda:N"`` (NVDEC) or ``"auto"``.

    ``nvdec_library``: which library drives NVDEC (see ``EngineConfig.nvdec_library``).

    Raises:
        BackendUnavailableError: ``cuda`` was asked for and NVDEC cannot be used here.
        InvalidRequestError: ``device`` is not one of the above.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "cpu":
        return backend_class("cpu")()
    if device == "auto":
        try:
            return _nvdec_backend("cuda:0", nvdec_library)
        except BackendUnavailableError:
            return backend_class("cpu")()
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        return _nvdec_backend(device if ":" in device else "cuda:0", nvdec_library)
    raise InvalidRequestError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {device!r}")


def _nvdec_backend(device: str, library: str | None) -> Backend:
    try:
        nvdec = backend_class("nvdec")
    except ImportError as exc:  # a build without the NVDEC backend's module or its dependencies
        raise BackendUnavailableError(f"{device}: the NVDEC backend is not available in this build",
                                      device=device) from exc
    return nvdec(device, library=library)
