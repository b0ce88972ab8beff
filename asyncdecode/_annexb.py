"""Presentation order of raw H.264/HEVC elementary streams, from picture order counts.

An Annex B elementary stream (``.h264``/``.264``/``.hevc``/``.265``) has no timestamps: FFmpeg's raw
demuxers hand out its access units in decode order with no pts. The order in which a decoder outputs
them is the picture order count (POC) of each picture, which the slice headers carry. This module
reads just enough of the parameter sets and of the first slice header of each access unit to compute
it (H.264 clause 8.2.1, HEVC clause 8.3.1); nothing is decoded.

:class:`OrderTracker` turns the access units of one stream, in decode order, into order keys: integers
that increase in presentation order across the whole stream (a POC resets at each IDR; the key does
not). Not covered: interlaced H.264 (field pictures), H.264 ``memory_management_control_operation``
5 (a POC reset without an IDR; x264 never writes it), HEVC layers above the base layer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OrderTracker", "nal_units"]

_START = b"\x00\x00\x01"
_PERIOD = 1 << 33  # a POC stays far inside +-2^32; each POC period (IDR to IDR) gets its own range


def nal_units(data: bytes | memoryview) -> list[memoryview]:
    """The NAL units of an Annex B buffer (start codes stripped, trailing zero bytes kept)."""
    buf = bytes(data)
    view = memoryview(buf)
    units = []
    pos = buf.find(_START)
    while pos >= 0:
        start = pos + 3
        nxt = buf.find(_START, start)
        end = len(buf) if nxt < 0 else nxt
        if start < end:
            units.append(view[start:end])
        pos = nxt
    return units


def _rbsp(nal: memoryview, limit: int = 512) -> bytes:
    """The first ``limit`` bytes of a NAL unit's payload with emulation prevention bytes removed."""
    raw = bytes(nal[:limit])
    if b"\x00\x00\x03" not in raw:
        return raw
    out = bytearray()
    zeros = 0
    for b in raw:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class _Bits:
    """Big-endian bit reader with Exp-Golomb codes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, byte_offset: int = 0) -> None:
        self.data = data
        self.pos = byte_offset * 8

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("header runs past the end of its NAL unit")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def skip(self, n: int) -> None:
        self.pos += n

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("malformed Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


# -- H.264 ------------------------------------------------------------------------------------------

_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


@dataclass
class _AvcSps:
    separate_colour_plane: bool
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int = 0
    delta_pic_order_always_zero: bool = False
    offset_for_non_ref_pic: int = 0
    offset_for_top_to_bottom_field: int = 0
    offsets_for_ref_frame: tuple[int, ...] = ()
    frame_mbs_only: bool = True


def _avc_sps(rbsp: bytes) -> tuple[int, _AvcSps]:
    r = _Bits(rbsp, 1)
    profile = r.u(8)
    r.skip(16)  # constraint flags, level
    sps_id = r.ue()
    separate = False
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            separate = bool(r.u(1))
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma == 3 else 8):
                if r.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt or last
    sps = _AvcSps(separate, r.ue() + 4, r.ue())
    if sps.poc_type == 0:
        sps.log2_max_poc_lsb = r.ue() + 4
    elif sps.poc_type == 1:
        sps.delta_pic_order_always_zero = bool(r.u(1))
        sps.offset_for_non_ref_pic = r.se()
        sps.offset_for_top_to_bottom_field = r.se()
        sps.offsets_for_ref_frame = tuple(r.se() for _ in range(r.ue()))
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    r.ue()
    r.ue()  # picture size in macroblocks
    sps.frame_mbs_only = bool(r.u(1))
    return sps_id, sps


class _AvcOrder:
    def __init__(self) -> None:
        self.sps: dict[int, _AvcSps] = {}
        self.pps: dict[int, tuple[int, bool]] = {}  # id -> (sps id, bottom_field_pic_order_in_frame_present)
        self.prev_msb = self.prev_lsb = 0
        self.prev_frame_num = self.prev_frame_num_offset = 0
        self.period = -1

    def parameter_set(self, nal_type: int, rbsp: bytes) -> None:
        if nal_type == 7:
            sps_id, sps = _avc_sps(rbsp)
            self.sps[sps_id] = sps
        elif nal_type == 8:
            r = _Bits(rbsp, 1)
            pps_id, sps_id = r.ue(), r.ue()
            r.skip(1)  # entropy_coding_mode_flag
            self.pps[pps_id] = (sps_id, bool(r.u(1)))

    def picture(self, nal_type: int, ref_idc: int, rbsp: bytes) -> tuple[int, bool]:
        """``(POC, starts a new POC period)`` of the picture whose first slice this is."""
        r = _Bits(rbsp, 1)
        r.ue()  # first_mb_in_slice
        r.ue()  # slice_type
        pps_id = r.ue()
        if pps_id not in self.pps or self.pps[pps_id][0] not in self.sps:
            raise ValueError(f"slice refers to a missing parameter set (pps {pps_id})")
        sps_id, bottom_present = self.pps[pps_id]
        sps = self.sps[sps_id]
        if sps.separate_colour_plane:
            r.skip(2)
        frame_num = r.u(sps.log2_max_frame_num)
        field = False
        if not sps.frame_mbs_only:
            field = bool(r.u(1))
            if field:
                r.skip(1)
        idr = nal_type == 5
        if idr:
            r.ue()  # idr_pic_id
        max_frame_num = 1 << sps.log2_max_frame_num
        if sps.poc_type == 0:
            lsb = r.u(sps.log2_max_poc_lsb)
            delta_bottom = r.se() if bottom_present and not field else 0
            if idr:
                self.prev_msb = self.prev_lsb = 0
            max_lsb = 1 << sps.log2_max_poc_lsb
            if lsb < self.prev_lsb and self.prev_lsb - lsb >= max_lsb // 2:
                msb = self.prev_msb + max_lsb
            elif lsb > self.prev_lsb and lsb - self.prev_lsb > max_lsb // 2:
                msb = self.prev_msb - max_lsb
            else:
                msb = self.prev_msb
            top = msb + lsb
            poc = min(top, top + delta_bottom)
            if ref_idc:
                self.prev_msb, self.prev_lsb = msb, lsb
        else:
            if idr:
                offset = 0
            elif self.prev_frame_num > frame_num:
                offset = self.prev_frame_num_offset + max_frame_num
            else:
                offset = self.prev_frame_num_offset
            if sps.poc_type == 1:
                d0 = d1 = 0
                if not sps.delta_pic_order_always_zero:
                    d0 = r.se()
                    if bottom_present and not field:
                        d1 = r.se()
                cycle = sps.offsets_for_ref_frame
                absolute = offset + frame_num if cycle else 0
                if ref_idc == 0 and absolute > 0:
                    absolute -= 1
                expected = 0
                if absolute > 0:
                    count, within = divmod(absolute - 1, len(cycle))
                    expected = count * sum(cycle) + sum(cycle[: within + 1])
                if ref_idc == 0:
                    expected += sps.offset_for_non_ref_pic
                top = expected + d0
                poc = min(top, top + sps.offset_for_top_to_bottom_field + d1)
            else:
                poc = 0 if idr else 2 * (offset + frame_num) - (0 if ref_idc else 1)
            self.prev_frame_num, self.prev_frame_num_offset = frame_num, offset
        return poc, idr


# -- HEVC -------------------------------------------------------------------------------------------


@dataclass
class _HevcSps:
    separate_colour_plane: bool
    log2_max_poc_lsb: int


def _hevc_sps(rbsp: bytes) -> tuple[int, _HevcSps]:
    r = _Bits(rbsp, 2)
    r.skip(4)  # sps_video_parameter_set_id
    sub_layers = r.u(3)  # sps_max_sub_layers_minus1
    r.skip(1)
    r.skip(88 + 8)  # general profile (88 bits) and general_level_idc
    present = [(r.u(1), r.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        r.skip(2 * (8 - sub_layers))
    for profile, level in present:
        r.skip((88 if profile else 0) + (8 if level else 0))
    sps_id = r.ue()
    separate = False
    if r.ue() == 3:  # chroma_format_idc
        separate = bool(r.u(1))
    r.ue()
    r.ue()  # picture size
    if r.u(1):  # conformance_window_flag
        for _ in range(4):
            r.ue()
    r.ue()
    r.ue()  # bit depths
    return sps_id, _HevcSps(separate, r.ue() + 4)


class _HevcOrder:
    def __init__(self) -> None:
        self.sps: dict[int, _HevcSps] = {}
        self.pps: dict[int, tuple[int, bool, bool, int]] = {}  # id -> (sps, dependent, output flag, extra bits)
        self.prev_tid0_poc = 0
        self.first = True

    def parameter_set(self, nal_type: int, rbsp: bytes) -> None:
        if nal_type == 33:
            sps_id, sps = _hevc_sps(rbsp)
            self.sps[sps_id] = sps
        elif nal_type == 34:
            r = _Bits(rbsp, 2)
            pps_id, sps_id = r.ue(), r.ue()
            self.pps[pps_id] = (sps_id, bool(r.u(1)), bool(r.u(1)), r.u(3))
        elif nal_type in (36, 37):  # end of sequence / bitstream: the next IRAP starts afresh
            self.first = True

    def picture(self, nal_type: int, temporal_id: int, rbsp: bytes) -> tuple[int, bool, bool]:
        """``(POC, starts a new POC period, output)`` of the picture whose first slice this is."""
        r = _Bits(rbsp, 2)
        if not r.u(1):
            raise ValueError("access unit does not start with its first slice segment")
        irap = 16 <= nal_type <= 23
        if irap:
            r.skip(1)  # no_output_of_prior_pics_flag
        pps_id = r.ue()
        if pps_id not in self.pps or self.pps[pps_id][0] not in self.sps:
            raise ValueError(f"slice refers to a missing parameter set (pps {pps_id})")
        sps_id, _, output_flag_present, extra_bits = self.pps[pps_id]
        sps = self.sps[sps_id]
        r.skip(extra_bits)
        r.ue()  # slice_type
        output = bool(r.u(1)) if output_flag_present else True
        if sps.separate_colour_plane:
            r.skip(2)
        idr = nal_type in (19, 20)
        lsb = 0 if idr else r.u(sps.log2_max_poc_lsb)
        # IDR and BLA pictures, and a CRA that starts the stream, reset the POC (NoRaslOutputFlag = 1).
        reset = irap and (idr or nal_type <= 18 or self.first)
        self.first = False
        if reset:
            msb = 0
        else:
            max_lsb = 1 << sps.log2_max_poc_lsb
            prev_lsb = self.prev_tid0_poc & (max_lsb - 1)
            prev_msb = self.prev_tid0_poc - prev_lsb
            if lsb < prev_lsb and prev_lsb - lsb >= max_lsb // 2:
                msb = prev_msb + max_lsb
            elif lsb > prev_lsb and lsb - prev_lsb > max_lsb // 2:
                msb = prev_msb - max_lsb
            else:
                msb = prev_msb
        poc = msb + lsb
        leading = 6 <= nal_type <= 9
        sub_layer_non_ref = nal_type <= 14 and nal_type % 2 == 0
        if temporal_id == 0 and not leading and not sub_layer_non_ref:
            self.prev_tid0_poc = poc
        return poc, reset, output


class OrderTracker:
    """Order keys for the access units of one raw H.264/HEVC stream, fed in decode order.

    Args:
        codec: ``"h264"`` or ``"hevc"``.
        extradata: Parameter sets known before the first packet (Annex B), if any.
    """

    def __init__(self, codec: str, extradata: bytes = b"") -> None:
        if codec not in ("h264", "hevc"):
            raise ValueError(f"no picture order counts for codec {codec!r}")
        self.codec = codec
        self._avc = _AvcOrder() if codec == "h264" else None
        self._hevc = _HevcOrder() if codec == "hevc" else None
        self._period = -1
        if extradata:
            self._scan(extradata, pictures=False)

    def order(self, packet: bytes | memoryview) -> tuple[int, bool] | None:
        """``(order key, shown)`` of the access unit ``packet``, or ``None`` if it holds no picture.

        ``shown`` is false for HEVC pictures with ``pic_output_flag`` 0 (decoded, never output).

        Raises:
            ValueError: a header cannot be read, or a slice refers to a parameter set not seen yet.
        """
        return self._scan(packet, pictures=True)

    def _scan(self, data: bytes | memoryview, *, pictures: bool) -> tuple[int, bool] | None:
        for nal in nal_units(data):
            if len(nal) < 2:
                continue
            b0 = nal[0]
            if self._avc is not None:
                nal_type = b0 & 0x1F
                if nal_type in (7, 8):
                    self._avc.parameter_set(nal_type, _rbsp(nal))
                elif pictures and nal_type in (1, 5):
                    poc, reset = self._avc.picture(nal_type, (b0 >> 5) & 3, _rbsp(nal, 64))
                    return self._key(poc, reset), True
            else:
                assert self._hevc is not None
                nal_type = (b0 >> 1) & 0x3F
                if (((b0 & 1) << 5) | (nal[1] >> 3)) != 0:
                    continue  # not the base layer
                if nal_type in (33, 34, 36, 37):
                    self._hevc.parameter_set(nal_type, _rbsp(nal))
                elif pictures and nal_type <= 31:
                    poc, reset, shown = self._hevc.picture(nal_type, (nal[1] & 7) - 1, _rbsp(nal, 64))
                    return self._key(poc, reset), shown
        return None

    def _key(self, poc: int, reset: bool) -> int:
        if reset or self._period < 0:
            self._period += 1
        return self._period * _PERIOD + poc + _PERIOD // 2
