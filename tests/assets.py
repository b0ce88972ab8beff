"""Every test asset, declared once by name.

``VIDEOS`` maps a name to the :class:`VideoSpec` that :func:`make_video` encodes;
``BAD_FILES`` maps a name to a builder of a broken or non-video input.
:class:`AssetStore` (the ``assets`` fixture) builds a file on first access and
caches it: ``assets["hevc_open"]`` -> ``Path``.
"""

from __future__ import annotations

import pathlib
import struct
from typing import Callable

import numpy as np

from asyncdecode.testing import VideoSpec, make_audio_only, make_video

VIDEOS: dict[str, VideoSpec] = {
    # GOP structure
    "h264_bframes": VideoSpec(gop=12, bframes=3),
    "h264_nob": VideoSpec(gop=10),
    "hevc_closed": VideoSpec(codec="hevc", gop=12, bframes=2),
    "hevc_open": VideoSpec(codec="hevc", gop=12, bframes=3, open_gop=True),
    "h264_open": VideoSpec(gop=12, bframes=3, open_gop=True),
    "hevc_10bit": VideoSpec(codec="hevc", pix_fmt="yuv420p10le", bframes=2),
    "av1": VideoSpec(codec="av1", width=128, height=96),
    "h264_vargop": VideoSpec(gop_lengths=(5, 17, 9, 12, 6), num_frames=49, bframes=2),
    "h264_shortlast": VideoSpec(num_frames=40, gop=12, bframes=2),  # last GOP: 4 frames
    # sizes and timing
    "h264_odd444": VideoSpec(width=175, height=99, pix_fmt="yuv444p"),
    "h264_odd420": VideoSpec(width=174, height=98, bframes=2),
    "h264_vfr": VideoSpec(vfr=True, bframes=2),
    "h264_mkv": VideoSpec(container="mkv", bframes=2),  # demuxed dts is None for the first packet
    # streams
    "two_streams": VideoSpec(second_video=(96, 64)),
    "with_audio": VideoSpec(audio=True, bframes=2),
    # colour
    "bt709_limited": VideoSpec(colorspace="bt709", color_range="limited"),
    "bt709_full": VideoSpec(colorspace="bt709", color_range="full"),
    "bt2020_limited": VideoSpec(
        codec="hevc", pix_fmt="yuv420p10le", colorspace="bt2020", color_range="limited"
    ),
    "bt601_full": VideoSpec(colorspace="bt601", color_range="full"),
}


def _mdat_payload(data: bytes) -> tuple[int, int]:
    """Byte range of the first top-level ``mdat`` box's payload in an MP4 file."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[offset + 8 : offset + 16])[0], 16
        elif size == 0:
            size = len(data) - offset
        if kind == b"mdat":
            return offset + header, offset + size
        offset += size
    raise ValueError("no mdat box")


def _empty(path: pathlib.Path, get: Callable[[str], pathlib.Path]) -> None:
    path.write_bytes(b"")


def _text(path: pathlib.Path, get: Callable[[str], pathlib.Path]) -> None:
    path.write_text("This is not a video file.\n" * 64)


def _random_bytes(path: pathlib.Path, get: Callable[[str], pathlib.Path]) -> None:
    path.write_bytes(np.random.default_rng(1234).bytes(64 * 1024))


def _truncated(path: pathlib.Path, get: Callable[[str], pathlib.Path]) -> None:
    data = get("h264_bframes").read_bytes()
    path.write_bytes(data[: len(data) // 2])  # moov is at the end: it is cut off


def _corrupt_mdat(path: pathlib.Path, get: Callable[[str], pathlib.Path]) -> None:
    data = bytearray(get("h264_bframes").read_bytes())
    start, end = _mdat_payload(bytes(data))
    middle, span = (start + end) // 2, (end - start) // 8
    data[middle - span // 2 : middle + span // 2] = np.random.default_rng(99).bytes(span // 2 * 2)
    path.write_bytes(bytes(data))


def _audio_only(path: pathlib.Path, get: Callable[[str], pathlib.Path]) -> None:
    make_audio_only(path)


# name -> (file suffix, builder(path, get_other_asset))
BAD_FILES: dict[str, tuple[str, Callable[[pathlib.Path, Callable[[str], pathlib.Path]], None]]] = {
    "bad_empty": (".mp4", _empty),
    "bad_text": (".mp4", _text),
    "bad_random": (".mp4", _random_bytes),
    "bad_truncated": (".mp4", _truncated),  # first half of h264_bframes
    "bad_corrupt_mdat": (".mp4", _corrupt_mdat),  # h264_bframes, 1/8 of mdat overwritten mid-file
    "audio_only": (".m4a", _audio_only),
}


class AssetStore:
    """Builds assets lazily into ``root`` and caches their paths."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = pathlib.Path(root)
        self._paths: dict[str, pathlib.Path] = {}

    def __getitem__(self, name: str) -> pathlib.Path:
        if name not in self._paths:
            self._paths[name] = self._build(name)
        return self._paths[name]

    def __contains__(self, name: object) -> bool:
        return name in VIDEOS or name in BAD_FILES

    @staticmethod
    def spec(name: str) -> VideoSpec:
        """The :class:`VideoSpec` of a video asset."""
        return VIDEOS[name]

    def _build(self, name: str) -> pathlib.Path:
        if name in VIDEOS:
            spec = VIDEOS[name]
            return make_video(self.root / f"{name}.{spec.container}", spec)
        if name in BAD_FILES:
            suffix, build = BAD_FILES[name]
            path = self.root / f"{name}{suffix}"
            build(path, self.__getitem__)
            return path
        raise KeyError(f"unknown asset {name!r}; known: {sorted(VIDEOS) + sorted(BAD_FILES)}")
