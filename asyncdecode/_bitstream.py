"""Small bitstream readers: Annex B parameter sets from avcC/hvcC, and which pictures are disposable.

Only headers are read (a few bytes per packet); nothing here decodes pictures.
"""

from __future__ import annotations

import struct

_START = b"\x00\x00\x01"


def is_annexb(data: bytes | memoryview) -> bool:
    head = bytes(data[:4])
    return head.startswith(_START) or head == b"\x00\x00\x00\x01"


def annexb_extradata(codec: str, extradata: bytes) -> bytes:
    """Codec parameters in Annex B form (start code + NAL unit each) for H.264/HEVC; others unchanged.

    MP4 and MKV store H.264/HEVC parameter sets in an ``avcC``/``hvcC`` record; decoders fed Annex B
    packets want them as NAL units with start codes.
    """
    if codec not in ("h264", "hevc") or not extradata or is_annexb(extradata):
        return bytes(extradata)
    try:
        nals = _avcc_nals(extradata) if codec == "h264" else _hvcc_nals(extradata)
    except (IndexError, struct.error) as exc:
        raise ValueError(f"malformed {codec} codec configuration record ({len(extradata)} bytes)") from exc
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def _avcc_nals(rec: bytes) -> list[bytes]:
    nals: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS count (low 5 bits), then PPS count
        pos = _sized_nals(rec, pos + 1, rec[pos] & count_mask, nals)
    return nals


def _hvcc_nals(rec: bytes) -> list[bytes]:
    nals: list[bytes] = []
    pos = 23
    for _ in range(rec[22]):  # arrays: type byte, 16-bit NAL count, then the NALs
        (count,) = struct.unpack_from(">H", rec, pos + 1)
        pos = _sized_nals(rec, pos + 3, count, nals)
    return nals


def _sized_nals(rec: bytes, pos: int, count: int, nals: list[bytes]) -> int:
    """Append ``count`` NAL units stored with 16-bit sizes from ``pos``; the position after them."""
    for _ in range(count):
        (size,) = struct.unpack_from(">H", rec, pos)
        nals.append(rec[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return pos


def first_vcl_header(codec: str, data: bytes) -> tuple[int, int, int] | None:
    """``(nal_type, ref_or_layer, temporal_id)`` of the first picture NAL unit of an Annex B packet.

    For H.264 ``ref_or_layer`` is ``nal_ref_idc``; for HEVC it is unused (0). ``None`` if the packet
    holds no picture NAL unit.
    """
    pos = data.find(_START)
    while pos >= 0:
        head = pos + 3
        if head >= len(data):
            return None
        b0 = data[head]
        if codec == "h264":
            nal_type = b0 & 0x1F
            if 1 <= nal_type <= 5:
                return nal_type, (b0 >> 5) & 3, 0
        else:
            nal_type = (b0 >> 1) & 0x3F
            if nal_type <= 31 and head + 1 < len(data):
                return nal_type, 0, (data[head + 1] & 7) - 1
        pos = data.find(_START, head)
    return None


def leaves_frame_num_gap(codec: str, data: bytes) -> bool:
    """Whether leaving this Annex B packet out of the bitstream leaves a gap the decoder sees: an H.264
    reference picture (``nal_ref_idc`` > 0) advances ``frame_num``. Other codecs: never."""
    if codec != "h264":
        return False
    header = first_vcl_header(codec, data)
    return header is not None and header[1] != 0


def disposable_flags(codec: str, packets: list[bytes]) -> list[bool]:
    """For each Annex B packet of one GOP, whether no other picture can reference it.

    Such a picture may be left out of the bitstream when its own frame is not wanted: the decoder's
    output for every other picture is unchanged. H.264: ``nal_ref_idc == 0``. HEVC: a sub-layer
    non-reference picture (even NAL type below 16) in the highest temporal sub-layer present in the
    GOP (pictures of higher sub-layers may reference it otherwise). Other codecs: never.
    """
    if codec not in ("h264", "hevc"):
        return [False] * len(packets)
    headers = [first_vcl_header(codec, p) for p in packets]
    if codec == "h264":
        return [h is not None and h[1] == 0 for h in headers]
    top = max((h[2] for h in headers if h is not None), default=0)
    return [h is not None and h[0] < 16 and h[0] % 2 == 0 and h[2] == top for h in headers]
