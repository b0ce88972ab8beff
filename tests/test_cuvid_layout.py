"""The ctypes structures of the direct NVDEC binding match NVIDIA's C layout (64-bit Linux).

Sizes and field offsets below were printed by a C program compiled against the decoder headers
(``sizeof`` / ``offsetof``); a wrong ctypes field would make the driver read or write the wrong bytes.
Runs everywhere: no driver is needed to check a layout.
"""

import ctypes

import pytest

from asyncdecode._backends import _cuvid

LAYOUTS = {
    _cuvid.VideoFormat: (64, {"coded_width": 16, "display_area": 24, "chroma_format": 40,
                              "min_num_decode_surfaces": 15, "seqhdr_data_length": 60}),
    _cuvid.DisplayInfo: (24, {"timestamp": 16}),
    _cuvid.ParserParams: (136, {"max_display_delay": 16, "user_data": 40, "on_sequence": 48, "on_decode": 56,
                                "on_display": 64, "ext_video_info": 128}),
    _cuvid.SourcePacket: (32, {"payload_size": 8, "payload": 16, "timestamp": 24}),
    _cuvid.DecoderCaps: (88, {"supported": 24, "max_width": 28, "min_width": 40, "max_histogram_bins": 46}),
    _cuvid.CreateInfo: (176, {"codec": 24, "creation_flags": 32, "display_area": 80, "output_format": 88,
                              "target_width": 96, "output_surfaces": 112, "context_lock": 120, "target_rect": 128,
                              "enable_histogram": 136}),
    _cuvid.ReconfigureInfo: (128, {"decode_surfaces": 16, "display_area": 68, "target_rect": 76, "reserved2": 84}),
    _cuvid.DecodeStatus: (192, {"reserved_ptrs": 128}),
    _cuvid.ProcParams: (264, {"raw_input": 24, "raw_output": 40, "output_stream": 56, "histogram": 248}),
}


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8 or ctypes.sizeof(ctypes.c_ulong) != 8,
                    reason="layouts are for 64-bit Linux")
@pytest.mark.parametrize("struct", list(LAYOUTS), ids=lambda s: s.__name__)
def test_structure_layout_matches_the_c_headers(struct):
    size, offsets = LAYOUTS[struct]
    assert ctypes.sizeof(struct) == size
    for name, offset in offsets.items():
        assert getattr(struct, name).offset == offset, name


def test_import_needs_no_driver():
    # The module loads its libraries only when a decoder is made.
    assert _cuvid.library.cache_info().currsize in (0, 1)
    assert set(_cuvid.CODECS) >= {"h264", "hevc", "av1"}


@pytest.mark.parametrize("raw, want", [(None, 3), ("0", 0), ("4", 4), ("5", 3), ("x", 3)])
def test_read_on_delay_from_the_environment(monkeypatch, raw, want):
    from asyncdecode._backends import nvdec

    if raw is None:
        monkeypatch.delenv("ASYNCDECODE_NVDEC_READ_ON_DELAY", raising=False)
    else:
        monkeypatch.setenv("ASYNCDECODE_NVDEC_READ_ON_DELAY", raw)
    assert nvdec._read_on_delay() == want
