"""Decoder backends: one session per decoder thread, each turning GOP bundles into output tensors."""

from .base import Backend, DecodeCancelled, DecodeResult, Session, make_backend

__all__ = ["Backend", "DecodeCancelled", "DecodeResult", "Session", "make_backend"]
