"""asyncdecode.compat.accvlab.PyNvGopDecoder: the seed's docstring examples, on the CPU and (marked) CUDA."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import (CorruptDataError, EngineClosedError, FrameIndexError, InvalidRequestError,
                         UnsupportedStreamError, VideoOpenError, probe)
from asyncdecode.gop import GopBundle
from reference import reference_frames

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module", params=DEVICES)
def decoder(request):
    with nvc.PyNvGopDecoder(maxfiles=10, device=request.param) as dec:
        yield dec


@pytest.fixture(scope="module")
def files(assets):
    return [str(assets["h264_bframes"]), str(assets["h264_nob"])]


def _t(frame):
    return torch.as_tensor(frame, device=frame.device)


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(_t(x), _t(y)) for x, y in zip(a, b))


def test_decode_and_rgb_examples(decoder, files):
    frames = decoder.Decode(files, [0, 10])
    assert len(frames) == 2 and all(isinstance(f, nvc.DecodedFrameExt) for f in frames)
    rgb = decoder.DecodeN12ToRGB(files, [0, 10])
    bgr = decoder.DecodeN12ToRGB(files, [0, 10], as_bgr=True)
    info = probe(files[0])
    for f, g in zip(rgb, bgr):
        assert isinstance(f, nvc.RGBFrame) and not f.isBGR and g.isBGR
        assert f.shape == [info.height, info.width, 3] and f.device == decoder.device
        assert torch.equal(_t(f).flip(-1), _t(g))


def test_rgb_matches_ffmpeg_reference(decoder, files):
    ref = reference_frames(files[0])
    ids = [0, 5, 17, 40]
    for fid, frame in zip(ids, decoder.DecodeN12ToRGB([files[0]] * 4, ids)):
        expected = np.clip(ref[fid].rgb(), 0, 255)
        assert np.abs(_t(frame).cpu().numpy().astype(np.float64) - expected).max() <= 1


def test_getgop_then_decodefromgoprgb_equals_decoden12torgb(decoder, files):
    ids = [17, 40]
    gop_data, first_ids, gop_lens = decoder.GetGOP(files, ids)
    assert isinstance(gop_data, np.ndarray) and gop_data.dtype == np.uint8 and gop_data.ndim == 1
    for path, fid, first, n in zip(files, ids, first_ids, gop_lens):
        info = probe(path)
        g = info.gop_of(fid)
        assert (first, n) == (info.keyframes[g], info.gop_lengths[g])
    for as_bgr in (False, True):
        direct = decoder.DecodeN12ToRGB(files, ids, as_bgr=as_bgr)
        assert _same(decoder.DecodeFromGOPRGB(gop_data, files, ids, as_bgr=as_bgr), direct)
    # Several frames of the data's GOPs, in any order, one frame twice.
    ids2 = [first_ids[1] + 2, first_ids[0], 17, 17]
    paths2 = [files[1], files[0], files[0], files[0]]
    got = decoder.DecodeFromGOPRGB(gop_data, paths2, ids2)
    assert _same(got, decoder.DecodeN12ToRGB(paths2, ids2))
    assert got[2].dataptr != got[3].dataptr


def test_nv12_planes_equal_ffmpeg(decoder, files):
    ref = reference_frames(files[0])
    ids = [3, 17, 40]
    frames = decoder.Decode([files[0]] * 3, ids)
    gop_data, _, _ = decoder.GetGOP([files[0]] * 3, ids)
    assert _same(decoder.DecodeFromGOP(gop_data, [files[0]] * 3, ids), frames)
    for fid, f in zip(ids, frames):
        y, uv = (torch.as_tensor(p, device=f.device).cpu().numpy() for p in f.cuda())
        assert f.format == "NV12" and f.dtype == np.uint8
        assert y.shape[-1] == 1 and np.array_equal(y[..., 0], ref[fid].planes[0])  # luma (H, W, 1)
        assert np.array_equal(uv[..., 0], ref[fid].planes[1]) and np.array_equal(uv[..., 1], ref[fid].planes[2])
        assert f.timestamp == ref[fid].pts


def test_getgoplist_and_decodefromgoplistrgb(decoder, files):
    results = decoder.GetGOPList(files, [0, 10])
    assert len(results) == 2
    for (gop_data, first_ids, gop_lens), path, fid in zip(results, files, [0, 10]):
        info = probe(path)
        assert first_ids == [info.keyframes[info.gop_of(fid)]] and len(gop_lens) == 1 and len(gop_data) > 0
    datas = [d for d, _, _ in results]
    assert _same(decoder.DecodeFromGOPListRGB(datas, files, [0, 10], True),
                 decoder.DecodeN12ToRGB(files, [0, 10], as_bgr=True))
    # One array may serve several requested frames; the arrays may come in any order.
    assert _same(decoder.DecodeFromGOPListRGB(datas[::-1], [files[1], files[0], files[0]], [11, 1, 0]),
                 decoder.DecodeN12ToRGB([files[1], files[0], files[0]], [11, 1, 0]))


def test_save_load_round_trip(decoder, files, tmp_path):
    gop_list = decoder.GetGOPList(files, [0, 10])
    names = []
    for i, (gop_data, _, _) in enumerate(gop_list):
        names.append(str(tmp_path / f"gop_{i}.bin"))
        nvc.SavePacketsToFile(gop_data, names[-1])
    loaded = decoder.LoadGopsToList(names)
    assert all(np.array_equal(a, b) for a, (b, _, _) in zip(loaded, gop_list))
    expected = decoder.DecodeN12ToRGB(files, [0, 10], as_bgr=True)
    assert _same(decoder.DecodeFromGOPListRGB(loaded, files, [0, 10], as_bgr=True), expected)
    # The seed's examples call it LoadGopList; selective loading of one file.
    loaded_one = decoder.LoadGopList([names[1]])
    assert _same(decoder.DecodeFromGOPListRGB(loaded_one, [files[1]], [10], as_bgr=True), expected[1:])
    # Merged data saved in one file comes back byte for byte; LoadGops joins files.
    merged, _, _ = decoder.GetGOP(files, [0, 10])
    nvc.SavePacketsToFile(merged, tmp_path / "cached_packets.bin")
    assert np.array_equal(decoder.LoadGops([str(tmp_path / "cached_packets.bin")]), merged)
    assert np.array_equal(decoder.LoadGops(names), merged)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_merge_packet_data(decoder, files):
    gop_list = decoder.GetGOPList(files, [17, 40])
    merged = decoder.MergePacketDataToOne([d for d, _, _ in gop_list])
    whole, _, _ = decoder.GetGOP(files, [17, 40])
    assert np.array_equal(merged, whole)
    again = decoder.MergePacketDataToOne([merged, gop_list[0][0]])
    assert len(again) == len(merged) + len(gop_list[0][0])
    assert _same(decoder.DecodeFromGOPRGB(again, files, [17, 40]), decoder.DecodeN12ToRGB(files, [17, 40]))
    with pytest.raises(InvalidRequestError, match="non-empty"):
        decoder.MergePacketDataToOne([])
    with pytest.raises(CorruptDataError, match="array 1"):
        decoder.MergePacketDataToOne([merged, np.zeros(100, np.uint8)])


def test_decode_from_data_without_the_video(decoder, assets, tmp_path):
    """Demuxer-free: GOP data decodes after its video is gone (or moved elsewhere)."""
    video = tmp_path / "clip.mp4"
    shutil.copy(assets["h264_bframes"], video)
    expected = decoder.DecodeN12ToRGB([str(video)], [30])
    gop_data, _, _ = decoder.GetGOP([str(video)], [30])
    nvc.SavePacketsToFile(gop_data, tmp_path / "clip.bin")
    video.unlink()
    data = decoder.LoadGops([str(tmp_path / "clip.bin")])
    assert _same(decoder.DecodeFromGOPRGB(data, [str(video)], [30]), expected)
    assert _same(decoder.DecodeFromGOPRGB(data, ["/elsewhere/clip.mp4"], [30]), expected)


def test_parse_and_decode_from_packet_list(decoder, files):
    ids = [17, 40]
    gop_data, first_ids, gop_lens = decoder.GetGOP(files, ids)
    (color_ranges, codec_ids, widths, heights, frame_sizes, gop_lens2, first_ids2, datas, data_sizes,
     packets_bytes, decode_idxs) = decoder.ParseSerializedPacketBundle(gop_data)
    info = probe(files[0])
    assert codec_ids == [nvc.Codec.h264.value] * 2 and color_ranges == [0, 0]
    assert widths == [info.width] * 2 and heights == [info.height] * 2
    assert frame_sizes == [info.width * info.height * 3 // 2] * 2
    assert gop_lens2 == gop_lens and first_ids2 == first_ids
    assert [len(d) for d in datas] == data_sizes == [sum(s) for s in packets_bytes]
    for fid, first, n, idxs in zip(ids, first_ids, gop_lens, decode_idxs):
        assert fid in idxs and sorted(i for i in idxs if i >= 0) == list(range(first, first + n))
    with nvc.PyNvGopDecoder(maxfiles=1, device="cpu") as fresh:  # the module's decoder may be initialized
        with pytest.raises(InvalidRequestError, match="DecodeFromPacketListInitialize"):
            fresh.DecodeFromPacketListRGB([[d] for d in datas], decode_idxs, widths, heights, ids)
    assert decoder.DecodeFromPacketListInitialize(codec_ids) == 0
    packets = [np.split(d, np.cumsum(s)[:-1]) for d, s in zip(datas, packets_bytes)]
    got = decoder.DecodeFromPacketListRGB(packets, decode_idxs, widths, heights, ids, as_bgr=True)
    assert _same(got, decoder.DecodeN12ToRGB(files, ids, as_bgr=True))
    with pytest.raises(InvalidRequestError, match="one array per packet"):
        decoder.DecodeFromPacketListRGB([[d] for d in datas], decode_idxs, widths, heights, ids)
    with pytest.raises(InvalidRequestError, match="no packet shows frame 9"):
        decoder.DecodeFromPacketListRGB(packets, decode_idxs, widths, heights, [9, 40])
    with pytest.raises(InvalidRequestError, match="widths has 1 entries"):
        decoder.DecodeFromPacketListRGB(packets, decode_idxs, widths[:1], heights, ids)
    with pytest.raises(InvalidRequestError, match="codec id 99"):
        decoder.DecodeFromPacketListInitialize([99])


def test_corrupt_gop_file_fails_naming_the_file(decoder, files, tmp_path):
    gop_data, _, _ = decoder.GetGOP(files, [17, 40])
    path = tmp_path / "gops.bin"
    nvc.SavePacketsToFile(gop_data, path)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptDataError, match=f"{path}.*checksum") as err:
        decoder.LoadGops([str(path)])
    assert err.value.path == str(path)
    path.write_bytes(gop_data[:-100].tobytes())
    with pytest.raises(CorruptDataError, match=f"{path}.*(truncated|header describes)"):
        decoder.LoadGopsToList([str(path)])
    flipped = gop_data.copy()
    flipped[len(flipped) - 50] ^= 1
    with pytest.raises(CorruptDataError, match="DecodeFromGOPRGB: GOP data for h264_bframes.mp4, h264_nob.mp4"):
        decoder.DecodeFromGOPRGB(flipped, files, [17, 40])
    with pytest.raises(VideoOpenError, match="missing.bin"):
        decoder.LoadGops([str(tmp_path / "missing.bin")])
    with pytest.raises(CorruptDataError, match="no asyncdecode GOP bundle"):
        decoder.DecodeFromGOPRGB(np.frombuffer(b"\x00" * 64, np.uint8), files, [17, 40])


def test_undecodable_gop_fails_naming_the_video(decoder, files):
    """Data that passes its checksum but does not decode: the error names the video it came from."""
    gop_data, _, _ = decoder.GetGOP([files[0]], [17])
    good = GopBundle.from_buffer(gop_data)
    rng = np.random.default_rng(5)  # every packet replaced: no parameter sets, no picture can come out
    junk = [bytes([0, 0, 1, 0x65]) + rng.bytes(len(good.packet(i))) for i in range(len(good))]
    bad = GopBundle.build(codec=good.codec, width=good.width, height=good.height, pix_fmt=good.pix_fmt,
                          bit_depth=good.bit_depth, color_space=good.color_space, color_range=good.color_range,
                          time_base=Fraction(good.time_base), first_frame_id=good.first_frame_id,
                          frame_count=good.frame_count, source=good.source, stream_index=good.stream_index,
                          extradata=bytes(good.extradata), packets=junk, pts=good.packets["pts"].tolist(),
                          dts=good.packets["dts"].tolist(), frame_ids=good.packets["frame_id"].tolist(),
                          flags=good.packets["flags"].tolist())
    with pytest.raises(CorruptDataError, match="h264_bframes.mp4") as err:
        decoder.DecodeFromGOPRGB(np.frombuffer(bad.to_bytes(), np.uint8), [files[0]], [17])
    assert err.value.path == files[0]
    assert _same(decoder.DecodeFromGOPRGB(gop_data, [files[0]], [17]), decoder.DecodeN12ToRGB([files[0]], [17]))


def test_frame_not_in_the_data(decoder, files):
    gop_data, _, _ = decoder.GetGOP(files, [17, 40])
    with pytest.raises(InvalidRequestError, match=r"frame 0 of .*h264_bframes.mp4 is not in the GOP data given "
                                                  r"\(it holds h264_bframes.mp4 frames 12..23"):
        decoder.DecodeFromGOPRGB(gop_data, files, [0, 40])


def test_request_errors(decoder, files, assets, tmp_path):
    n = probe(files[0]).num_frames
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(VideoOpenError, match="nope.mp4"):
        decoder.DecodeN12ToRGB([missing], [0])
    with pytest.raises(VideoOpenError, match="nope.mp4"):
        decoder.GetGOP([files[0], missing], [0, 0])
    for call in (decoder.DecodeN12ToRGB, decoder.Decode, decoder.GetGOP, decoder.GetGOPList):
        with pytest.raises(FrameIndexError, match=f"frame {n} out of range for .*h264_bframes.mp4 \\(0..{n - 1}\\)"):
            call([files[0]], [n])
    with pytest.raises(InvalidRequestError, match="2 filepaths but 1 frame_ids"):
        decoder.DecodeN12ToRGB(files, [0])
    packets, first_ids, gop_lens = decoder.GetGOP([], [])  # as accvlab: no frames, no GOPs
    assert packets.dtype == np.uint8 and packets.size == 0 and first_ids == gop_lens == []
    with pytest.raises(InvalidRequestError, match="list of paths"):
        decoder.DecodeN12ToRGB(files[0], [0])
    with pytest.raises(InvalidRequestError, match="as_bgr must be a bool"):
        decoder.DecodeN12ToRGB(files, [0, 0], "yes")
    with pytest.raises(InvalidRequestError, match="fastStreamInfos"):
        decoder.GetGOP(files, [0, 0], [nvc.FastStreamInfo()])
    with pytest.raises(UnsupportedStreamError, match="h264_odd444.*NV12"):
        decoder.Decode([str(assets["h264_odd444"])], [1])
    assert decoder.DecodeN12ToRGB([str(assets["h264_odd444"])], [1])[0].shape == [99, 175, 3]
    assert len(decoder.DecodeN12ToRGB(files, [0, 1])) == 2  # still works after the errors


def test_10bit_decodes_to_p016(decoder, assets):
    path = str(assets["hevc_10bit"])
    ref = reference_frames(path)
    (frame,) = decoder.Decode([path], [7])
    assert frame.format == "P016" and frame.dtype == np.uint16 and frame.bit_depth == 10
    y, uv = (torch.as_tensor(p, device=frame.device).cpu().to(torch.int32).numpy() for p in frame.cuda())
    assert np.array_equal(y[..., 0] >> 6, ref[7].planes[0]) and not (y & 0x3F).any()
    assert np.array_equal(uv[..., 1] >> 6, ref[7].planes[2])


def test_release_calls_leave_the_decoder_usable(files):
    dec = nvc.PyNvGopDecoder(10, 0, False, device="cpu")
    before = dec.DecodeN12ToRGB(files, [5, 6])
    dec.release_decoder()
    assert _same(dec.DecodeN12ToRGB(files, [5, 6]), before)
    dec.release_decoder()
    dec.release_decoder()
    gop_data, _, _ = dec.GetGOP(files, [5, 6])
    dec.release_device_memory()
    assert _same(dec.DecodeFromGOPRGB(gop_data, files, [5, 6]), before)
    dec.close()
    dec.close()
    with pytest.raises(EngineClosedError):
        dec.DecodeN12ToRGB(files, [5, 6])
    assert "closed" in repr(dec)
    assert torch.as_tensor(before[0]).sum() > 0  # frames own their memory


@pytest.mark.cuda
def test_release_frees_gpu_memory_and_keeps_working(files):
    with nvc.PyNvGopDecoder(maxfiles=2, iGpu=0, device="cuda") as dec:
        before = [t.clone() for t in map(_t, dec.DecodeN12ToRGB(files, [5, 6]))]
        dec.release_decoder()
        dec.release_device_memory()
        after = dec.DecodeN12ToRGB(files, [5, 6])
        assert all(torch.equal(a, _t(b)) for a, b in zip(before, after))
        assert after[0].device == torch.device("cuda", 0)


def test_constructor_arguments():
    with pytest.raises(InvalidRequestError, match="maxfiles"):
        nvc.PyNvGopDecoder(0)
    with pytest.raises(InvalidRequestError, match="iGpu"):
        nvc.PyNvGopDecoder(1, -1)
    with pytest.raises(InvalidRequestError, match="suppressNoColorRangeWarning"):
        nvc.PyNvGopDecoder(1, 0, "no")
    with pytest.raises(InvalidRequestError, match="device"):
        nvc.PyNvGopDecoder(1, device="tpu")
    if not torch.cuda.is_available():
        from asyncdecode import BackendUnavailableError

        with pytest.raises(BackendUnavailableError, match="cuda:0"):
            nvc.PyNvGopDecoder(1, device="cuda")
        with nvc.PyNvGopDecoder(1, iGpu=3) as dec:  # iGpu picks a GPU only where there is one
            assert dec.device == torch.device("cpu")
