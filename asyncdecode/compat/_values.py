"""Values of the accvlab layer: codec and status enums, and the stream parameters of a file."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["AV_CODEC_IDS", "AV_PIX_FMTS", "Codec", "DropCacheStatus", "FastStreamInfo", "PixelFormat"]

#: AVCodecID of each FFmpeg codec name (``FastStreamInfo.codec_id``).
AV_CODEC_IDS = {"mpeg2video": 2, "mpeg4": 12, "h264": 27, "hevc": 173, "vp9": 167, "av1": 225}
#: AVPixelFormat of the pixel formats the engine decodes (``FastStreamInfo.format``).
AV_PIX_FMTS = {
    "yuv420p": 0, "yuv422p": 4, "yuv444p": 5, "gray": 8, "yuvj420p": 12, "yuvj422p": 13, "yuvj444p": 14,
    "yuv420p10le": 62, "yuv422p10le": 64, "yuv444p10le": 68, "yuv420p12le": 123, "yuv444p12le": 131,
    "gray10le": 168,
}
_AVMEDIA_TYPE_VIDEO = 0


class Codec(enum.Enum):
    """Video codecs, by their CUDA Video Codec SDK (``cudaVideoCodec``) value."""

    h264 = 4
    hevc = 8
    av1 = 11


class PixelFormat(enum.IntEnum):
    """Layout of a :class:`DecodedFrameExt`, by accvlab's ``Pixel_Format`` number (``frame.format``).

    accvlab reports the number (``frame.format == 5``, ``int(frame.format)``); this layer reported the
    name, so a member also equals its name (``frame.format == "P016"``). ``str()`` gives the name.
    """

    NV12 = 3
    """8-bit 4:2:0: a luma plane, then one plane of interleaved U, V samples."""
    YUV444 = 4
    P016 = 5
    """NV12's layout with 16-bit samples, the stream's bits in the high bits (10- and 12-bit 4:2:0)."""
    YUV444_16BIT = 6

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return other == self.name
        return int(self) == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = int.__hash__

    def __str__(self) -> str:
        return self.name


class DropCacheStatus(enum.Enum):
    """Outcome of :func:`drop_videos_cache`."""

    SUCCESS = 0
    PLATFORM_ERROR = 1
    FILE_OPEN_FAILED = 2
    FADVISE_FAILED = 3
    UNKNOWN_ERROR = 4


@dataclass
class FastStreamInfo:
    """Stream parameters of one video, as :func:`GetFastInitInfo` reports them (FFmpeg's numbering).

    The decoders accept a list of these wherever accvlab does, and check that there is one per file;
    they do not need them: the engine indexes each file once and keeps the index.
    """

    codec_id: int = 0
    """FFmpeg ``AVCodecID`` (H.264 27, HEVC 173, AV1 225)."""
    codec_type: int = _AVMEDIA_TYPE_VIDEO
    """FFmpeg ``AVMediaType`` (0: video)."""
    format: int = -1
    """FFmpeg ``AVPixelFormat`` of decoded frames (yuv420p 0, yuv420p10le 62; -1: other)."""
    width: int = 0
    height: int = 0
    time_base_num: int = 0
    time_base_den: int = 1
    r_frame_rate_num: int = 0
    r_frame_rate_den: int = 1
    avg_frame_rate_num: int = 0
    avg_frame_rate_den: int = 1
    duration: int = 0
    """Presentation time span of the stream, in ``time_base`` units."""
    start_time: int = 0
    """Presentation timestamp of the first frame, in ``time_base`` units."""
