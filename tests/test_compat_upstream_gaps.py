"""What a run of accvlab's own test suite against ``asyncdecode.compat.accvlab`` found missing, pinned
on the CPU backend (and, marked, on CUDA):

1. 10-bit HEVC in ``hev1`` and ``hvc1`` tagged MP4 through GetGOP / GetGOPList -> DecodeFromGOP* (P016
   frames with accvlab's ``format`` number and plane views) and DecodeFromGOPRGB;
2. a damaged HEVC GOP at demux: "GOP demux failed ... FFmpeg bitstream filter receive failed";
3. ``GetGOPList`` of the plain ``PyNvGopDecoder`` (one ``(array, [first id], [length])`` per request)
   and ``DecodeFromGOPList``, its native-frame decode;
4. nothing left behind by an error: decoders answer the next call the same, threads and files go
   with the object;
5. ``CreateGopDecoder(..., gopCacheCapacity=n)``;
6. accvlab's phrases in the messages its users match on, with asyncdecode's detail kept.
"""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import CorruptDataError, FrameIndexError, InvalidRequestError, VideoOpenError
from asyncdecode.compat import _bundles
from asyncdecode.compat._values import PixelFormat
from asyncdecode.gop import GopBundle
from asyncdecode.testing import VideoSpec, make_video
from reference import reference_frames

# (name, VideoSpec): accvlab's pix_fmt_variants matrix, small. GOPs of 12: frame 33 is in 24..35.
VARIANTS = {
    "hevc_hev1_yuv420p": VideoSpec(codec="hevc", codec_tag="hev1", width=64, height=48, num_frames=40, bframes=2),
    "hevc_hev1_yuv420p10le": VideoSpec(codec="hevc", codec_tag="hev1", pix_fmt="yuv420p10le", width=64, height=48,
                                       num_frames=40, bframes=2),
    "hevc_hvc1_yuv420p": VideoSpec(codec="hevc", codec_tag="hvc1", width=64, height=48, num_frames=40, bframes=2),
    "hevc_hvc1_yuv420p10le": VideoSpec(codec="hevc", codec_tag="hvc1", pix_fmt="yuv420p10le", width=64, height=48,
                                       num_frames=40, bframes=2),
    "h264_avc1_yuv420p": VideoSpec(width=64, height=48, num_frames=40, bframes=2),
}
FRAME = 33


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    return {name: str(make_video(root / f"{name}.mp4", spec)) for name, spec in VARIANTS.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three 8-bit clips of 48 frames in GOPs of 12."""
    root = tmp_path_factory.mktemp("clips")
    return [str(make_video(root / f"cam{i}.mp4", VideoSpec(width=64, height=48, num_frames=48, bframes=2, seed=i)))
            for i in range(3)]


@pytest.fixture(scope="module")
def damaged_hevc(tmp_path_factory):
    """A 10-bit ``hvc1`` file with 512 bytes flipped 16 bytes into its ``mdat`` box (accvlab's recipe),
    which runs past the first keyframe (373 bytes) into the length prefix of the next packet: GOP 0
    (frames 0..11) is damaged, the others are intact."""
    root = tmp_path_factory.mktemp("damaged")
    src = make_video(root / "src.mp4", VideoSpec(codec="hevc", codec_tag="hvc1", pix_fmt="yuv420p10le", width=96,
                                                 height=64, num_frames=36))
    raw = bytearray(src.read_bytes())
    start = raw.find(b"mdat") + 16
    for i in range(start, min(start + 512, len(raw))):
        raw[i] ^= 0xFF
    bad = root / "bad_hevc.mp4"
    bad.write_bytes(bytes(raw))
    return str(bad)


def _gop_decoder(**kwargs):
    return nvc.CreateGopDecoder(maxfiles=8, iGpu=0, device="cpu", **kwargs)


def _array(view):
    return np.asarray(view)


# -- 1. 10-bit HEVC, hev1 and hvc1 ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_gop_data_round_trip_gives_accvlabs_native_frames(variants, name):
    """GetGOPList -> DecodeFromGOPList / DecodeFromGOP on a second decoder: accvlab's layout numbers,
    plane shapes and strides, the stream's bit depth in the sample size, FFmpeg's samples."""
    path, spec = variants[name], VARIANTS[name]
    ten_bit = spec.pix_fmt == "yuv420p10le"
    sample = 2 if ten_bit else 1
    h, w = spec.height, spec.width
    with _gop_decoder() as demuxer, _gop_decoder() as decoder:
        ((gop_data, first_ids, gop_lens),) = demuxer.GetGOPList([path], [FRAME], useGOPCache=True)
        assert gop_data.dtype == np.uint8 and gop_data.ndim == 1 and gop_data.size > 0
        assert first_ids[0] <= FRAME < first_ids[0] + gop_lens[0]
        (frame,) = decoder.DecodeFromGOPList([gop_data], [path], [FRAME])
        (same,) = decoder.DecodeFromGOP(gop_data, [path], [FRAME])
    expected = PixelFormat.P016 if ten_bit else PixelFormat.NV12
    assert frame.format == int(expected) == int(frame.format) and frame.format == expected.name
    assert frame.framesize() == (w * h * 3 if ten_bit else w * h * 3 // 2)  # accvlab's formula
    luma, chroma = frame.cuda()
    assert (luma.shape, chroma.shape) == ([h, w, 1], [h // 2, w // 2, 2])
    assert luma.strides == [w * sample, sample, sample] and chroma.strides == [w * sample, 2 * sample, sample]
    assert _array(luma).dtype == (np.uint16 if ten_bit else np.uint8)
    ref = reference_frames(path)[FRAME]
    shift = 6 if ten_bit else 0  # P016: the 10 bits sit in the high bits of 16
    assert np.array_equal(_array(luma)[..., 0] >> shift, ref.planes[0])
    assert np.array_equal(_array(chroma)[..., 1] >> shift, ref.planes[2])
    assert np.array_equal(_array(same.cuda()[0]), _array(luma)) and same.timestamp == frame.timestamp == ref.pts


@pytest.mark.parametrize("name", ["hevc_hev1_yuv420p10le", "hevc_hvc1_yuv420p10le"])
def test_10bit_getgop_and_rgb_round_trip(variants, name):
    """GetGOP -> DecodeFromGOPRGB equals the by-file decode, for several frames and both tags."""
    path = variants[name]
    ids = [0, 17, FRAME]
    with _gop_decoder() as demuxer, _gop_decoder() as decoder:
        data, first_ids, lens = demuxer.GetGOP([path] * 3, ids)
        assert first_ids == [0, 12, 24] and lens == [12, 12, 12]
        rgb = decoder.DecodeFromGOPRGB(data, [path] * 3, ids)
        bgr = decoder.DecodeFromGOPRGB(data, [path] * 3, ids, as_bgr=True)
        by_file = decoder.DecodeN12ToRGB([path] * 3, ids)
        p016 = decoder.DecodeFromGOP(data, [path] * 3, ids)
    for a, b, c in zip(rgb, bgr, by_file):
        assert a.shape == [48, 64, 3] and torch.equal(a.data, c.data) and torch.equal(a.data.flip(-1), b.data)
    assert [f.format for f in p016] == [PixelFormat.P016] * 3


def test_pixel_format_is_accvlabs_number_and_its_name():
    p016 = PixelFormat.P016
    assert p016 == 5 and int(p016) == 5 and p016 == "P016" and str(p016) == "P016"
    assert p016 != "NV12" and p016 != 3 and not (p016 != 5) and not (p016 != "P016")
    assert {5: "p016"}[p016] == "p016" and [int(f) for f in PixelFormat] == [3, 4, 5, 6]


@pytest.mark.cuda
@pytest.mark.parametrize("tag", ["hev1", "hvc1"])
def test_cuda_p016_planes_speak_accvlabs_interface(tmp_path, tag):
    """On NVDEC (HEVC from 144x144 up): the plane views' CUDA array interface as accvlab's."""
    spec = VideoSpec(codec="hevc", codec_tag=tag, pix_fmt="yuv420p10le", width=192, height=160, num_frames=40)
    path = str(make_video(tmp_path / f"{tag}.mp4", spec))
    with nvc.CreateGopDecoder(maxfiles=1, iGpu=0, device="cuda") as dec:
        ((gop_data, _, _),) = dec.GetGOPList([path], [FRAME])
        (frame,) = dec.DecodeFromGOPList([gop_data], [path], [FRAME])
        (cpu,) = nvc.PyNvGopDecoder(1, device="cpu").DecodeFromGOPList([gop_data], [path], [FRAME])
    assert frame.format == 5 and frame.framesize() == 192 * 160 * 3
    luma, chroma = frame.cuda()
    assert (luma.__cuda_array_interface__["shape"], chroma.__cuda_array_interface__["shape"]) == \
        ((160, 192, 1), (80, 96, 2))
    assert luma.__cuda_array_interface__["strides"] == (384, 2, 2)
    assert chroma.__cuda_array_interface__["strides"] == (384, 4, 2)
    for plane, host in zip((luma, chroma), cpu.cuda()):
        assert plane.__cuda_array_interface__["typestr"] == "|u2"
        t = torch.as_tensor(plane, device="cuda")
        assert t.dtype == torch.uint16 and t.data_ptr() == plane.dataptr
        assert torch.equal(t.cpu().to(torch.int32), torch.as_tensor(_array(host)).to(torch.int32))


# -- 2. a damaged HEVC GOP at demux ------------------------------------------------------------------


@pytest.mark.parametrize("frame_id", [0, 1, 5, 11])
def test_damaged_hevc_gop_says_gop_demux_failed(damaged_hevc, frame_id):
    with _gop_decoder() as decoder:
        for call in (lambda: decoder.GetGOPList([damaged_hevc], [frame_id], useGOPCache=False),
                     lambda: decoder.GetGOP([damaged_hevc], [frame_id])):
            with pytest.raises(RuntimeError) as err:
                call()
            message = str(err.value)
            assert "GOP demux failed" in message and "FFmpeg bitstream filter receive failed" in message
            assert f"for file: {damaged_hevc} frame_id={frame_id}" in message
            assert "hevc_mp4toannexb" in message and "GOP 0 (frames 0..11)" in message
            assert "General error" not in message and "Errno" not in message
            assert isinstance(err.value, CorruptDataError) and isinstance(err.value, ValueError)
            assert (err.value.path, err.value.frame_id) == (damaged_hevc, frame_id)
        # the intact GOPs of the same file still read and decode
        ((data, first_ids, _),) = decoder.GetGOPList([damaged_hevc], [30])
        assert first_ids == [24] and decoder.DecodeFromGOPRGB(data, [damaged_hevc], [30])[0].shape == [64, 96, 3]


# -- 3. the raw GetGOPList / DecodeFromGOPList of PyNvGopDecoder ---------------------------------


def test_plain_decoder_getgoplist_shape_and_types(files):
    """One ``(uint8 array, [first frame id], [GOP length])`` tuple per requested frame, the file named
    twice included; plain ints; each array its own (writable) memory."""
    with nvc.PyNvGopDecoder(maxfiles=4, device="cpu") as dec:
        result = dec.GetGOPList([files[0], files[1], files[0]], [5, 30, 40])
    assert isinstance(result, list) and len(result) == 3
    for (data, first_ids, lens), fid in zip(result, [5, 30, 40]):
        assert isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1
        assert data.flags.c_contiguous and data.flags.owndata and data.flags.writeable
        assert isinstance(first_ids, list) and isinstance(lens, list) and len(first_ids) == len(lens) == 1
        assert type(first_ids[0]) is int and type(lens[0]) is int
        assert first_ids[0] <= fid < first_ids[0] + lens[0]
    assert [r[1] for r in result] == [[0], [24], [36]]
    assert not np.shares_memory(result[0][0], result[2][0])


def test_decodefromgoplist_raw_api(files, tmp_path):
    """accvlab's ``test_separate_access_gop_list_raw_api``: GetGOPList on one decoder, DecodeFromGOPList
    on another; NV12 frames of ``W * H * 3 // 2`` bytes, the by-file frames; saved lists too."""
    frames_wanted = [0, 7, 14]
    with nvc.CreateGopDecoder(maxfiles=3, iGpu=0, device="cpu") as dec1, \
            nvc.CreateGopDecoder(maxfiles=3, iGpu=0, device="cpu") as dec2:
        gop_list = dec1.GetGOPList(files, frames_wanted)
        decoded = dec2.DecodeFromGOPList([d for d, _, _ in gop_list], files, frames_wanted)
        by_file = dec2.Decode(files, frames_wanted)
        saved = []
        for i, (data, _, _) in enumerate(gop_list):
            nvc.SavePacketsToFile(data, str(tmp_path / f"gop{i}.bin"))
            saved.append(str(tmp_path / f"gop{i}.bin"))
        loaded = dec2.DecodeFromGOPList(dec2.LoadGopsToList(saved), files, frames_wanted)
        with pytest.raises(RuntimeError, match="numpy_datas must be a non-empty list") as err:
            dec2.DecodeFromGOPList([], files, frames_wanted)
        assert isinstance(err.value, InvalidRequestError)
    assert len(decoded) == 3 and all(isinstance(f, nvc.DecodedFrameExt) for f in decoded)
    assert all(f.framesize() == 64 * 48 * 3 // 2 and f.format == 3 for f in decoded)
    for a, b, c in zip(decoded, by_file, loaded):
        assert np.array_equal(_array(a), _array(b)) and np.array_equal(_array(a), _array(c))


# -- 4. nothing left behind by an error ------------------------------------------------------------


def _engine_threads():
    gc.collect()  # decoders that earlier tests dropped close now, not during the measurement
    return {t.ident for t in threading.enumerate() if t.name.startswith("asyncdecode")}


def _open_files():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def _garbled(data):
    """The GOP data with random packet bytes after each packet's first 8: well-formed, CRC-correct GOP
    data that the decoder rejects."""
    (b,) = _bundles.split(data, what="test")
    rng = np.random.default_rng(7)
    packets = [bytes(b.payload[o:o + n]) for o, n in zip(b.packets["offset"].tolist(), b.packets["size"].tolist())]
    packets = [p[:8] + rng.bytes(len(p) - 8) for p in packets]
    table = b.packets
    bad = GopBundle.build(codec=b.codec, width=b.width, height=b.height, pix_fmt=b.pix_fmt, bit_depth=b.bit_depth,
                          color_space=b.color_space, color_range=b.color_range, time_base=b.time_base,
                          first_frame_id=b.first_frame_id, frame_count=b.frame_count, source=b.source,
                          stream_index=b.stream_index, extradata=bytes(b.extradata), packets=packets,
                          pts=table["pts"].tolist(), dts=table["dts"].tolist(), frame_ids=table["frame_id"].tolist(),
                          flags=table["flags"].tolist())
    return np.frombuffer(bad.to_bytes(), np.uint8)


def _provoke_errors(dec, files, damaged, tmp_path):
    """Every kind of failure the decoder can meet; each must raise a RuntimeError and leave it whole."""
    missing = str(tmp_path / "missing.mp4")
    calls = [lambda: dec.DecodeN12ToRGB([files[0], missing], [0, 0]),
             lambda: dec.DecodeN12ToRGB([files[0]], [999999]),
             lambda: dec.DecodeN12ToRGB([damaged], [0]),
             lambda: dec.Decode([files[1], damaged], [3, 0])]
    if isinstance(dec, nvc.PyNvGopDecoder):
        data, _, _ = dec.GetGOP([files[0]], [5])
        broken = data.copy()
        broken[len(broken) // 2] ^= 0x10
        calls += [lambda: dec.GetGOP([files[0], damaged], [5, 0]),
                  lambda: dec.GetGOPList([missing], [0]),
                  lambda: dec.DecodeFromGOPRGB(broken, [files[0]], [5]),
                  lambda: dec.DecodeFromGOPRGB(_garbled(data), [files[0]], [5]),  # the decoder itself fails
                  lambda: dec.DecodeFromGOP(_garbled(data), [files[0]], [5]),
                  lambda: dec.DecodeFromGOP(data, [files[0]], [30])]
    else:
        def async_error(paths, ids):
            dec.DecodeN12ToRGBAsync(paths, ids)
            dec.DecodeN12ToRGBAsyncGetBuffer(paths, ids)
        calls += [lambda: async_error([missing], [0]), lambda: async_error([files[0]], [999999]),
                  lambda: async_error([damaged], [0])]
    for call in calls:
        with pytest.raises(RuntimeError):
            call()


@pytest.mark.parametrize("kind", ["gop", "cached", "reader"])
def test_errors_leave_the_decoder_usable_and_nothing_behind(kind, files, damaged_hevc, tmp_path):
    make = {"gop": lambda: nvc.PyNvGopDecoder(maxfiles=4, device="cpu"),
            "cached": lambda: _gop_decoder(),
            "reader": lambda: nvc.CreateSampleReader(num_of_set=1, num_of_file=4, device="cpu")}[kind]
    make().close()  # one decoder first: what the process sets up once is not counted below
    threads, fds = _engine_threads(), _open_files()
    for cycle in range(2):
        dec = make()
        before = [f.data.clone() for f in dec.DecodeN12ToRGB(files, [3, 20, 41])]
        _provoke_errors(dec, files, damaged_hevc, tmp_path)
        after = dec.DecodeN12ToRGB(files, [3, 20, 41])
        assert all(torch.equal(a, b.data) for a, b in zip(before, after))
        stats = dec._runner.engine().stats()
        assert stats["requests_in_flight"] == 0 and stats["queue_depth"] == 0
        if cycle == 0:
            dec.close()
        else:  # collected without close(), as accvlab objects are
            del dec
            gc.collect()
        assert _engine_threads() == threads and _open_files() == fds


def test_reader_collected_with_a_request_waiting(files):
    """accvlab's destructor waits for a waiting request; here collection ends the engine and its threads."""
    threads = _engine_threads()
    reader = nvc.CreateSampleReader(num_of_set=1, num_of_file=3, device="cpu")
    reader.DecodeN12ToRGBAsync(files, [0, 0, 0])
    del reader
    gc.collect()
    assert _engine_threads() == threads


# -- 5. the GOP cache's capacity ---------------------------------------------------------------------


def test_gop_cache_capacity_as_accvlab_names_it(files):
    """accvlab's ``test_gop_cache_lru_capacity``, then the argument's forms and checks."""
    decoder = nvc.CreateGopDecoder(maxfiles=6, iGpu=0, gopCacheCapacity=2, device="cpu")
    try:
        decoder.GetGOPList([files[0]], [10], useGOPCache=True)
        decoder.GetGOPList([files[1]], [10], useGOPCache=True)
        info = decoder.get_cache_info()
        assert info["cache_capacity"] == 2 and info["cached_files_count"] == 2
        assert files[0] in info["cached_files"] and files[1] in info["cached_files"]
        decoder.GetGOPList([files[0]], [info["cached_files"][files[0]]["first_frame_id"]], useGOPCache=True)
        assert decoder.isCacheHit() == [True]
        decoder.GetGOPList([files[2]], [10], useGOPCache=True)
        info = decoder.get_cache_info()
        assert info["cached_files_count"] == 2 and set(info["cached_files"]) == {files[0], files[2]}
    finally:
        decoder.close()
    with nvc.CreateGopDecoder(6, 0, False, 3, device="cpu") as positional:
        assert positional.get_cache_info()["cache_capacity"] == positional.max_cached_files == 3
    with nvc.CreateGopDecoder(6, device="cpu") as default:
        assert default.get_cache_info()["cache_capacity"] == 24  # this layer's default, 4 * maxfiles
    with nvc.CreateGopDecoder(6, gopCacheCapacity=2, max_cached_files=2, device="cpu") as both:
        assert both.max_cached_files == 2
    for bad, phrase in [(0, "cache_capacity must be positive"), (-3, "cache_capacity must be positive"),
                        (True, "must be a positive integer or None"), (2.0, "must be a positive integer or None")]:
        with pytest.raises(RuntimeError, match=phrase) as err:
            nvc.CreateGopDecoder(6, gopCacheCapacity=bad, device="cpu")
        assert isinstance(err.value, InvalidRequestError) and isinstance(err.value, ValueError)
    with pytest.raises(RuntimeError, match="name the same bound"):
        nvc.CreateGopDecoder(6, gopCacheCapacity=2, max_cached_files=3, device="cpu")
    with pytest.raises(RuntimeError, match="cannot be instantiated directly"):
        nvc.CachedGopDecoder(6)


# -- 6. accvlab's phrases --------------------------------------------------------------------------


@pytest.fixture
def reader():
    with nvc.CreateSampleReader(num_of_set=1, num_of_file=6, iGpu=0, device="cpu") as r:
        yield r


def test_getbuffer_with_nothing_waiting_says_no_pending_task(reader, files):
    """accvlab's ``test_getbuffer_without_async_call``, ``test_double_getbuffer_same_params`` and
    ``test_async_decode_getbuffer_on_empty_buffer_throws_error``."""
    ids0, ids3 = [0] * 3, [3] * 3
    with pytest.raises(RuntimeError, match="No pending decode task") as err:
        reader.DecodeN12ToRGBAsyncGetBuffer(files, ids0, False)
    assert isinstance(err.value, InvalidRequestError) and "call DecodeN12ToRGBAsync" in str(err.value)
    reader.DecodeN12ToRGBAsync(files, ids0, False)
    reader.DecodeN12ToRGBAsync(files, ids3, False)  # the frame-0 request is finished and dropped
    assert len(reader.DecodeN12ToRGBAsyncGetBuffer(files, ids3, False)) == 3
    with pytest.raises(RuntimeError, match="No pending decode task"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, ids0, False)
    with pytest.raises(RuntimeError, match="No pending decode task"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, ids3, False)


@pytest.mark.parametrize("change", ["filepath", "frame_id", "as_bgr", "list_size"])
def test_getbuffer_with_other_arguments_says_parameters_do_not_match(reader, files, change):
    """accvlab's four ``test_async_decode_parameter_validation_*`` tests; here the request stays
    waiting, so the right arguments still collect it."""
    ids = [0] * 3
    reader.DecodeN12ToRGBAsync(files, ids, False)
    asked = {"filepath": (["wrong_file.mp4"] + files[1:], ids, False), "frame_id": (files, [10] * 3, False),
             "as_bgr": (files, ids, True), "list_size": (files, ids + [0], False)}[change]
    with pytest.raises(RuntimeError, match="Request parameters do not match") as err:
        reader.DecodeN12ToRGBAsyncGetBuffer(*asked)
    assert isinstance(err.value, InvalidRequestError) and "frame_ids=[0, 0, 0]" in str(err.value)
    if change == "list_size":
        assert "3 filepaths but 4 frame_ids" in str(err.value)
    assert len(reader.DecodeN12ToRGBAsyncGetBuffer(files, ids, False)) == 3


def test_sync_rgb_decode_drops_the_waiting_request(reader, files, caplog):
    """accvlab's ``test_sync_api_waits_for_async``: DecodeN12ToRGB finishes a waiting request and drops
    its result (logged here); the native ``Decode`` leaves it, as accvlab's does."""
    reader.DecodeN12ToRGBAsync(files, [0] * 3, False)
    assert len(reader.Decode(files, [2] * 3)) == 3
    assert len(reader.DecodeN12ToRGBAsyncGetBuffer(files, [0] * 3, False)) == 3
    reader.DecodeN12ToRGBAsync(files, [0] * 3, False)
    with caplog.at_level("WARNING", logger="asyncdecode"):
        assert len(reader.DecodeN12ToRGB(files, [1] * 3, False)) == 3
    assert "its result (filepaths=" in caplog.text
    with pytest.raises(RuntimeError, match="No pending decode task"):
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [0] * 3, False)


def test_count_mismatch_says_same_length(files):
    """accvlab's GOP decoder rejects lists of different lengths with "filepaths and frame_ids must have
    the same length"; the message still counts both."""
    with _gop_decoder() as dec, nvc.CreateSampleReader(1, 3, device="cpu") as reader:
        data, _, _ = dec.GetGOP(files[:2], [0, 0])
        for call in (lambda: dec.DecodeN12ToRGB(files, [0]), lambda: dec.Decode(files, [0, 0]),
                     lambda: dec.GetGOP(files, [0]), lambda: dec.GetGOPList(files, [0], useGOPCache=True),
                     lambda: dec.DecodeFromGOPRGB(data, files[:2], [0]), lambda: reader.DecodeN12ToRGB(files, [0]),
                     lambda: reader.DecodeN12ToRGBAsync(files, [0, 0])):
            with pytest.raises(RuntimeError, match="filepaths and frame_ids must have the same length") as err:
                call()
            assert isinstance(err.value, InvalidRequestError) and " filepaths but " in str(err.value)


def test_invalid_file_and_frame_messages_carry_the_context(reader, files):
    """accvlab's ``test_async_decode_error_message_is_preserved`` (the message names the file) and
    ``test_async_decode_error_handling_invalid_frame_id``, then ``test_recovery_after_exception``."""
    invalid = "/nonexistent/path/to/invalid_video_test_12345.mp4"
    reader.DecodeN12ToRGBAsync([invalid], [0], False)
    with pytest.raises(RuntimeError) as err:
        reader.DecodeN12ToRGBAsyncGetBuffer([invalid], [0], False)
    assert isinstance(err.value, VideoOpenError) and invalid in str(err.value) and err.value.path == invalid
    reader.DecodeN12ToRGBAsync(files, [999999] * 3, False)
    with pytest.raises(RuntimeError, match="frame 999999 out of range for .*cam0.mp4") as err:
        reader.DecodeN12ToRGBAsyncGetBuffer(files, [999999] * 3, False)
    assert isinstance(err.value, FrameIndexError) and err.value.frame_id == 999999
    reader.DecodeN12ToRGBAsync(files, [0] * 3, False)
    assert len(reader.DecodeN12ToRGBAsyncGetBuffer(files, [0] * 3, False)) == 3


def test_video_spec_codec_tag(tmp_path):
    import av

    for tag in ("hvc1", "hev1"):
        path = make_video(tmp_path / f"{tag}.mp4", VideoSpec(codec="hevc", codec_tag=tag, width=32, height=32,
                                                             num_frames=2))
        with av.open(str(path)) as container:
            assert container.streams.video[0].codec_context.codec_tag == tag
    for bad in [dict(codec_tag="hvc"), dict(codec_tag="hvc1", container="mkv")]:
        with pytest.raises(ValueError, match="codec_tag"):
            VideoSpec(codec="hevc", **bad)
