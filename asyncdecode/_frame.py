"""The frame record that iteration and time-based access return."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Frame"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame with its place in the video.

    Returned by :meth:`Engine.ingest <asyncdecode.Engine.ingest>`, :meth:`~asyncdecode.Engine.frames`,
    :meth:`~asyncdecode.Engine.frame_at` and :meth:`~asyncdecode.Engine.frames_at`.
    """

    tensor: torch.Tensor
    """The pixels, in the call's output format (default RGB uint8 HWC) on the engine's device."""
    index: int
    """Frame id: 0-based position in presentation order (for a stream: from its first decodable frame)."""
    pts_seconds: float
    """Presentation time in seconds, as the container stamps it (raw elementary streams carry no
    time: there it is ``index / frame rate``, the rate from the stream's headers, else 25)."""

    def __repr__(self) -> str:
        t = self.tensor
        kind = str(t.dtype).replace("torch.", "")
        return (f"Frame(index={self.index}, pts_seconds={self.pts_seconds:.6g}, "
                f"tensor={kind}{list(t.shape)} {t.device})")
