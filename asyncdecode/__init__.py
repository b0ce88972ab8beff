"""asyncdecode: an asyncio prefetching video decode engine.

Frames by index from many video files, as torch tensors, decoded on NVIDIA NVDEC or with FFmpeg on the
CPU. Start with :class:`Engine` (or :class:`SyncEngine` outside an event loop) and :func:`probe`.
"""

from ._engine import Engine, EngineConfig, EngineState
from ._frame import Frame
from ._ingest import IngestStream
from ._output import OutputSpec
from ._sync import SyncEngine
from .errors import (
    AsyncDecodeError,
    BackendUnavailableError,
    CorruptDataError,
    DeviceMemoryError,
    EngineClosedError,
    FrameIndexError,
    InvalidRequestError,
    StaleStoreError,
    TruncatedStreamError,
    UnsupportedStreamError,
    VideoOpenError,
)
from .media import VideoInfo, probe
from .shared import SharedBundle, SharedGopCache
from .store import GopStore, drop_page_cache

__version__ = "0.1.0"

__all__ = [
    "AsyncDecodeError",
    "BackendUnavailableError",
    "CorruptDataError",
    "DeviceMemoryError",
    "Engine",
    "EngineClosedError",
    "EngineConfig",
    "EngineState",
    "Frame",
    "FrameIndexError",
    "GopStore",
    "IngestStream",
    "InvalidRequestError",
    "OutputSpec",
    "SharedBundle",
    "SharedGopCache",
    "StaleStoreError",
    "SyncEngine",
    "TruncatedStreamError",
    "UnsupportedStreamError",
    "VideoInfo",
    "VideoOpenError",
    "drop_page_cache",
    "probe",
]
