"""asyncdecode.compat.accvlab.FastStreamInfo / GetFastInitInfo."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import InvalidRequestError, VideoOpenError, probe


def test_get_fast_init_info_example(assets):
    files = [str(assets["h264_bframes"]), str(assets["hevc_10bit"]), str(assets["av1"])]
    stream_infos = nvc.GetFastInitInfo(files)
    assert [s.codec_id for s in stream_infos] == [27, 173, 225]  # FFmpeg's AVCodecID
    assert [s.format for s in stream_infos] == [0, 62, 0]  # yuv420p, yuv420p10le
    for s, path in zip(stream_infos, files):
        info = probe(path)
        assert isinstance(s, nvc.FastStreamInfo) and s.codec_type == 0
        assert (s.width, s.height) == (info.width, info.height)
        assert Fraction(s.time_base_num, s.time_base_den) == info.time_base
        assert Fraction(s.avg_frame_rate_num, s.avg_frame_rate_den) == 25
        assert Fraction(s.r_frame_rate_num, s.r_frame_rate_den) == 25
        assert s.start_time == info.frame_pts[0]
        assert abs(s.duration * info.time_base - Fraction(info.num_frames, 25)) < Fraction(1, 25)


def test_stream_infos_are_accepted_where_accvlab_takes_them(assets):
    files = [str(assets["h264_bframes"]), str(assets["h264_nob"])]
    infos = nvc.GetFastInitInfo(files)
    with nvc.PyNvGopDecoder(maxfiles=2, device="cpu") as dec:
        a = dec.DecodeN12ToRGB(files, [3, 4], False, infos)
        b = dec.DecodeN12ToRGB(files, [3, 4])
        assert all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for x, y in zip(a, b))
        assert dec.GetGOP(files, [3, 4], infos)[1] == dec.GetGOP(files, [3, 4])[1]
        assert len(dec.Decode(files, [3, 4], fastStreamInfos=infos)) == 2
        with pytest.raises(InvalidRequestError, match="one FastStreamInfo per file"):
            dec.GetGOPList(files, [3, 4], infos[:1])
        with pytest.raises(InvalidRequestError, match="one FastStreamInfo per file"):
            dec.Decode(files, [3, 4], ["not", "info"])


def test_default_constructor_and_fields():
    info = nvc.FastStreamInfo()
    assert info.codec_id == 0 and info.width == 0 and info.time_base_den == 1
    info.width = 1600
    assert info == nvc.FastStreamInfo(width=1600)


def test_errors(assets, tmp_path):
    assert nvc.GetFastInitInfo([]) == []  # as accvlab: no files, no infos
    with pytest.raises(InvalidRequestError, match="filepaths must be a list of paths"):
        nvc.GetFastInitInfo(str(assets["h264_nob"]))
    with pytest.raises(VideoOpenError, match="nothere.mp4"):
        nvc.GetFastInitInfo([str(assets["h264_nob"]), str(tmp_path / "nothere.mp4")])
    with pytest.raises(VideoOpenError, match="bad_text"):
        nvc.GetFastInitInfo([str(assets["bad_text"])])
    with pytest.raises(VideoOpenError, match="bad_truncated.mp4 is not a readable media file"):
        nvc.GetFastInitInfo([str(assets["bad_truncated"])])
