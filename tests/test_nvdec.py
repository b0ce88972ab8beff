"""NVDEC backend and GPU color conversion (run on a machine with CUDA + NVDEC; skipped elsewhere)."""

from __future__ import annotations

import asyncio
import os
import gc
import random

import numpy as np
import pytest
import torch

from asyncdecode import (CorruptDataError, Engine, EngineConfig, FrameIndexError, OutputSpec,
                         UnsupportedStreamError, VideoOpenError, probe)
from asyncdecode.gop import extract_gops
from reference import reference_frames, reference_rgb

pytestmark = pytest.mark.cuda

NVDEC_CASES = ["h264_bframes", "h264_nob", "h264_open", "hevc_closed", "hevc_open", "hevc_10bit", "av1", "h264_vargop",
               "h264_shortlast", "h264_odd420", "h264_vfr", "two_streams", "bt709_limited", "bt709_full",
               "bt2020_limited", "bt601_full"]


@pytest.fixture(scope="module")
def nv_assets(assets, tmp_path_factory):
    """The shared assets, with HEVC and AV1 ones re-made at a size NVDEC accepts (>= 144x144)."""
    import dataclasses

    from assets import VIDEOS, AssetStore

    root = tmp_path_factory.mktemp("nv_assets")

    class Sized(AssetStore):
        def _build(self, name):
            spec = VIDEOS.get(name)
            if spec is None or spec.codec == "h264":
                return assets[name]
            from asyncdecode.testing import make_video

            big = dataclasses.replace(spec, width=max(spec.width, 208), height=max(spec.height, 160))
            return make_video(self.root / f"{name}.{spec.container}", big)

    return Sized(root)


@pytest.fixture(scope="module", params=["libnvcuvid", "PyNvVideoCodec"])
def backend(request):
    """Each NVDEC decoder library in turn."""
    from asyncdecode._backends.nvdec import NvdecBackend

    return NvdecBackend("cuda:0", library=request.param)


@pytest.mark.parametrize("name", NVDEC_CASES)
def test_nvdec_planes_equal_ffmpeg(nv_assets, backend, name):
    path = nv_assets[name]
    ref = reference_frames(path)
    info = probe(path)
    session = backend.new_session()
    try:
        for bundle in extract_gops(path, list(info.keyframes)):
            try:
                res = session.decode(bundle, bundle.frame_ids, None, lambda: False)
            except UnsupportedStreamError as exc:  # e.g. AV1 on GPUs whose NVDEC lacks it (H100/H200)
                pytest.skip(f"not on this GPU: {exc}")
            for fid, planes in res.frames.items():
                for got, exp in zip(planes, ref[fid].planes):
                    np.testing.assert_array_equal(got.cpu().numpy().astype(np.int64), exp.astype(np.int64),
                                                  err_msg=f"{name} frame {fid}")
    finally:
        session.close()


@pytest.mark.parametrize("name", NVDEC_CASES)
async def test_cuda_rgb_within_one_and_equal_to_cpu_frames(nv_assets, name):
    path = nv_assets[name]
    ref = reference_frames(path)
    n = len(ref)
    async with Engine(device="cuda") as eng:
        assert eng.backend.name == "nvdec"
        frames = await eng.decode(path, list(range(n)))
        picks = random.Random(name).sample(range(n), min(6, n))
        singles = await eng.decode([path] * len(picks), picks)
    async with Engine(device="cpu") as cpu:
        cpu_frames = await cpu.decode(path, list(range(n)))
    for fid, got in enumerate(frames):
        assert got.device.type == "cuda" and got.dtype == torch.uint8
        exp = np.clip(ref[fid].rgb(), 0, 255)
        assert np.abs(got.cpu().numpy() - exp).max() <= 1.0, f"{name} frame {fid}"
        assert (got.cpu().int() - cpu_frames[fid].int()).abs().max() <= 1
    for fid, got in zip(picks, singles):
        assert torch.equal(got, frames[fid])


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("full", [False, True])
def test_kernel_every_matrix_and_range(bits, matrix, full):
    from asyncdecode._backends._cuda_color import nv12_to_output
    from asyncdecode._output import ColorParams

    rng = np.random.default_rng(bits * 10 + full)
    h, w = 45, 78
    top = (1 << bits) - 1
    y = rng.integers(0, top + 1, (h, w))
    u = rng.integers(0, top + 1, (23, 39))
    v = rng.integers(0, top + 1, (23, 39))
    pix_fmt = "yuv420p" if bits == 8 else "yuv420p10le"
    ref = np.clip(reference_rgb([y, u, v], pix_fmt=pix_fmt, matrix=matrix, full_range=full), 0, 255)
    params = ColorParams.resolve(matrix, "full" if full else "limited", pix_fmt)
    shift = 0 if bits == 8 else 6
    dt = torch.uint8 if bits == 8 else torch.int16
    luma = torch.tensor(y << shift, device="cuda").to(dt)
    chroma = torch.tensor(np.stack([u, v], -1) << shift, device="cuda").to(dt)
    got = nv12_to_output(luma, chroma, params, OutputSpec(), shift=shift).cpu().numpy()
    assert np.abs(got - ref).max() <= 1.0
    f32 = nv12_to_output(luma, chroma, params, OutputSpec(dtype=torch.float32, layout="chw", format="bgr"),
                         shift=shift).cpu().numpy()
    assert np.abs(f32.transpose(1, 2, 0)[..., ::-1] * 255 - ref).max() <= 1e-3
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    nrm = nv12_to_output(luma, chroma, params, OutputSpec(dtype=torch.float16, normalize=(mean, std)), shift=shift)
    exp = (np.clip(ref / 255, 0, 1) - mean) / std
    assert np.abs(nrm.float().cpu().numpy() - exp).max() < 1e-2
    small = nv12_to_output(luma, chroma, params, OutputSpec(size=(20, 30)), shift=shift)
    assert small.shape == (20, 30, 3) and small.dtype == torch.uint8


async def test_64_concurrent_requests_over_12_files(nv_assets):
    names = ["h264_bframes", "h264_nob", "hevc_closed", "hevc_open", "hevc_10bit", "av1", "h264_vargop",
             "h264_shortlast", "h264_odd420", "h264_vfr", "bt709_full", "bt2020_limited"]
    paths = [nv_assets[n] for n in names]
    counts = [probe(p).num_frames for p in paths]
    rng = random.Random(3)
    reqs = []
    for _ in range(64):
        idx = [rng.randrange(12) for _ in range(6)]
        reqs.append(([paths[i] for i in idx], [rng.randrange(counts[i]) for i in idx]))
    async with Engine(device="cuda") as eng, Engine(device="cpu") as cpu:
        got = await asyncio.gather(*(eng.decode(p, i) for p, i in reqs))
        exp = await asyncio.gather(*(cpu.decode(p, i) for p, i in reqs))
        s = eng.stats()
        # av1 may be one: H100/H200 NVDEC has no AV1; the engine decodes it on the CPU instead
        assert s["requests_failed"] == 0 and s["cpu_fallback_files"] <= 1
    for g, e in zip(got, exp):
        for a, b in zip(g, e):
            assert (a.cpu().int() - b.int()).abs().max() <= 1


@pytest.mark.parametrize("library", ["libnvcuvid", "PyNvVideoCodec"])
async def test_cancel_and_aclose_return_gpu_memory(nv_assets, library):
    """Engines opened, loaded, cancelled and closed leave GPU memory where one such cycle left it."""
    paths = [nv_assets[n] for n in ("hevc_closed", "h264_bframes", "av1")]

    async def cycle():
        eng = Engine(device="cuda", config=EngineConfig(decoder_threads=8, nvdec_library=library))
        async with eng:
            futs = [eng.submit(paths, [i % 40] * 3) for i in range(60)]
            await asyncio.sleep(0.05)
            for f in futs[10:]:
                f.cancel()
            await asyncio.gather(*futs, return_exceptions=True)
            await eng.decode(paths, [1, 2, 3])

    def measure():
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # frees what record_stream() deferred until the consumer stream was done
        return torch.cuda.memory_allocated(), torch.cuda.mem_get_info()[0]

    await cycle()
    alloc1, free1 = measure()
    for _ in range(3):
        await cycle()
    alloc2, free2 = measure()
    assert alloc2 <= alloc1
    # decoder sessions are freed: device memory does not grow with engines opened and closed
    assert free1 - free2 < 64 << 20, (free1 - free2) / 2**20


async def test_bad_inputs_on_cuda(assets, tmp_path):
    async with Engine(device="cuda") as eng:
        for name in ("bad_empty", "bad_text", "bad_random", "bad_truncated", "audio_only"):
            with pytest.raises(VideoOpenError):
                await eng.decode(assets[name], [0])
        with pytest.raises(FrameIndexError):
            await eng.decode(assets["hevc_closed"], [48])
        bad = assets["bad_corrupt_mdat"]
        results = await asyncio.gather(*(eng.decode(bad, [k]) for k in probe(bad).keyframes), return_exceptions=True)
        assert any(isinstance(r, CorruptDataError) for r in results)
        (ok,) = await eng.decode(assets["hevc_closed"], [47])
        assert ok.is_cuda


async def test_too_small_for_nvdec_falls_back(assets):
    path = assets["hevc_closed"]  # 160x96: below NVDEC's HEVC minimum
    async with Engine(device="cuda") as eng:
        (f,) = await eng.decode(path, [7])
        assert f.is_cuda and eng.stats()["cpu_fallback_files"] == 1
    async with Engine(device="cuda", config=EngineConfig(unsupported="raise")) as eng:
        with pytest.raises(UnsupportedStreamError, match="below 144x144"):
            await eng.decode(path, [7])


async def test_unsupported_streams_fall_back_or_raise(assets):
    path = assets["h264_odd444"]  # H.264 4:4:4: not on NVDEC
    async with Engine(device="cuda") as eng:
        frames = await eng.decode(path, [0, 5])
        assert all(f.is_cuda for f in frames)
        assert eng.stats()["cpu_fallback_files"] == 1
    async with Engine(device="cpu") as cpu:
        exp = await cpu.decode(path, [0, 5])
    assert all(torch.equal(a.cpu(), b) for a, b in zip(frames, exp))
    async with Engine(device="cuda", config=EngineConfig(unsupported="raise")) as eng:
        with pytest.raises(UnsupportedStreamError, match="4:2:0 only"):
            await eng.decode(path, [0])


def test_auto_picks_nvdec():
    eng = Engine(device="auto")
    assert eng.backend.name == "nvdec" and eng.device == torch.device("cuda", 0)
    # the driver's library comes first, unless the environment names one
    assert eng.stats()["decoder_library"] == os.environ.get("ASYNCDECODE_NVDEC_LIBRARY", "libnvcuvid")


async def test_decoder_libraries_give_the_same_frames(nv_assets):
    """Both ways of driving NVDEC give the same RGB frames, random and in runs, B-frames included."""
    paths = [nv_assets[n] for n in ("hevc_closed", "h264_bframes", "hevc_10bit", "h264_nob")]
    rng = random.Random(3)
    asks = [(p, sorted(rng.sample(range(probe(p).num_frames), 5))) for p in paths]
    asks += [(p, list(range(10, 22))) for p in paths]
    got = {}
    for library in ("libnvcuvid", "PyNvVideoCodec"):
        async with Engine(device="cuda", config=EngineConfig(nvdec_library=library, gop_cache_bytes=0)) as eng:
            assert eng.stats()["decoder_library"] == library
            got[library] = [await eng.decode(p, ids) for p, ids in asks]
    for (p, ids), a, b in zip(asks, got["libnvcuvid"], got["PyNvVideoCodec"]):
        for fid, x, y in zip(ids, a, b):
            assert torch.equal(x, y), (p, fid)


def test_unknown_decoder_library_is_refused():
    from asyncdecode import BackendUnavailableError, InvalidRequestError
    from asyncdecode._backends.nvdec import NvdecBackend

    with pytest.raises(InvalidRequestError, match="nvdec_library"):
        EngineConfig(nvdec_library="nvdec")
    with pytest.raises(BackendUnavailableError, match="must be one of"):
        NvdecBackend("cuda:0", library="nvdec")


@pytest.mark.parametrize("name", ["hevc_closed", "h264_bframes", "hevc_open"])
async def test_stream_access_on_nvdec(nv_assets, name):
    """Clips read frame after frame: the frames of a whole-file decode, at about one decode each."""
    path = nv_assets[name]
    n = probe(path).num_frames
    async with Engine(device="cpu") as cpu:
        want = await cpu.decode(path, list(range(n)))
    async with Engine(device="cuda", config=EngineConfig(decoder_threads=4)) as eng:
        got = []
        async for frames in eng.stream([(path, list(range(lo, min(lo + 3, n)))) for lo in range(0, n, 3)], depth=8):
            got += frames
        s = eng.stats()
    assert len(got) == n
    for a, b in zip(got, want):
        assert (a.cpu().int() - b.int()).abs().max() <= 1
    assert s["jobs_continued"] + s["jobs_merged"] > 0
    limit = 1.1 if name != "hevc_open" else 1.2  # open GOPs: each GOP's bundle re-decodes the next keyframe
    assert s["frames_decoded"] / s["frames_returned"] <= limit, s


@pytest.mark.parametrize("spec", [OutputSpec(), OutputSpec(format="bgr", layout="chw"),
                                  OutputSpec(dtype=torch.float16, normalize=((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))),
                                  OutputSpec(dtype=torch.float32, layout="chw")])
def test_direct_kernel_launch_equals_jit_launch(spec):
    """The compiled kernel launched directly (the per-frame path) writes what the JIT call writes."""
    from asyncdecode._backends import _cuda_color as cc
    from asyncdecode._output import ColorParams

    rng = np.random.default_rng(7)
    luma = torch.tensor(rng.integers(0, 256, (90, 166)), dtype=torch.uint8, device="cuda")
    chroma = torch.tensor(rng.integers(0, 256, (45, 83, 2)), dtype=torch.uint8, device="cuda")
    params = ColorParams.resolve("bt709", "limited", "yuv420p")
    stream = torch.cuda.current_stream().cuda_stream
    before = cc._launch.direct
    fast = cc.nv12_to_output(luma, chroma, params, spec, stream=stream)
    assert cc._launch.direct == before + 1, cc._launch.reason
    jit = cc.nv12_to_output(luma, chroma, params, spec)  # no stream handle: the JIT call
    assert cc._launch.direct == before + 1
    assert torch.equal(fast, jit)


@pytest.mark.parametrize("spec", [OutputSpec(), OutputSpec(format="bgr", layout="chw", dtype=torch.float16),
                                  OutputSpec(size=(40, 64), layout="chw")])
@pytest.mark.parametrize("bits", [8, 10])
def test_frame_converter_equals_conversion_by_tensor(spec, bits):
    """The converter decoder threads keep per frame kind (planes by address, kernel and fixed arguments
    settled once) writes what the conversion of plane tensors writes, on its own stream."""
    from asyncdecode._backends import _cuda_color as cc
    from asyncdecode._output import ColorParams

    rng = np.random.default_rng(bits)
    h, w = 90, 166
    if bits == 8:
        dtype, shift, pix_fmt = torch.uint8, 0, "yuv420p"
        luma = torch.tensor(rng.integers(0, 256, (h, w + 26)), dtype=dtype, device="cuda")[:, :w]  # padded rows
        chroma = torch.tensor(rng.integers(0, 256, (h // 2, w // 2, 2)), dtype=dtype, device="cuda")
    else:  # P016: 10-bit samples in the high bits of 16
        dtype, shift, pix_fmt = torch.int16, 6, "yuv420p10le"
        luma = torch.tensor(rng.integers(0, 1024, (h, w)) << 6, dtype=torch.int32, device="cuda").to(dtype)
        chroma = torch.tensor(rng.integers(0, 1024, (h // 2, w // 2, 2)) << 6, dtype=torch.int32,
                              device="cuda").to(dtype)
    params = ColorParams.resolve("bt709", "limited", pix_fmt)
    side = torch.cuda.Stream()
    convert = cc.FrameConverter(params, spec, h, w, luma.device, dtype, shift=shift, stream=side.cuda_stream)
    if spec.size is None:  # the per-frame path decoder threads take: a driver launch with the GIL held
        assert isinstance(convert._launch, cc._DriverLaunch), cc._launch.driver_reason
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = [convert(luma.data_ptr(), chroma.data_ptr(), luma.stride(0), chroma.stride(0)) for _ in range(2)]
    side.synchronize()
    want = cc.nv12_to_output(luma, chroma, params, spec, shift=shift)
    for g in got:
        assert g.shape == want.shape and g.dtype == want.dtype
        assert torch.equal(g, want)


def test_launch_hooks_and_the_driver_switch_choose_the_converter_launch(monkeypatch):
    """Decoder threads launch through the driver unless Triton launch hooks are set (a profiler then
    gets its per-launch metadata through the JIT path) or the driver launch is switched off (Triton's
    launcher); each way writes the same frame."""
    from triton import knobs

    from asyncdecode._backends import _cuda_color as cc
    from asyncdecode._output import ColorParams

    if not hasattr(knobs.runtime.launch_enter_hook, "add"):
        pytest.skip("this Triton has no launch hook chains")
    rng = np.random.default_rng(3)
    luma = torch.tensor(rng.integers(0, 256, (64, 160)), dtype=torch.uint8, device="cuda")
    chroma = torch.tensor(rng.integers(0, 256, (32, 80, 2)), dtype=torch.uint8, device="cuda")
    params = ColorParams.resolve("bt601", "limited", "yuv420p")
    stream = torch.cuda.current_stream().cuda_stream

    def converter():
        return cc.FrameConverter(params, OutputSpec(), 64, 160, luma.device, torch.uint8, shift=0, stream=stream)

    def run(convert):
        return convert(luma.data_ptr(), chroma.data_ptr(), luma.stride(0), chroma.stride(0))

    driver = converter()
    assert isinstance(driver._launch, cc._DriverLaunch), cc._launch.driver_reason
    want = run(driver)
    seen = []
    hook = seen.append
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        hooked = converter()
        assert hooked._launch is None  # the general path: hooks see every launch
        got = run(hooked)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert seen and torch.equal(got, want)
    monkeypatch.setattr(cc, "DRIVER_LAUNCH", False)
    triton_launch = converter()
    assert triton_launch._launch is not None and not isinstance(triton_launch._launch, cc._DriverLaunch)
    assert torch.equal(run(triton_launch), want)
    torch.cuda.synchronize()


@pytest.mark.parametrize("name", ["h264_nob", "bt709_full"])
def test_in_order_gops_decode_without_flush(nv_assets, backend, name):
    """GOPs without reordering: a low-latency decoder gives each frame on its own packet, so a job feeds
    exactly keyframe..target, keeps its place, and the next GOP goes in without a flush."""
    path = nv_assets[name]
    info = probe(path)
    keys = list(info.keyframes)
    bundles = extract_gops(path, keys[:2])
    assert all(b.in_display_order for b in bundles)
    want = reference_frames(path)
    session = backend.new_session()
    try:
        for b in bundles + bundles[::-1]:
            target = b.first_frame_id + 3
            r = session.decode(b, [target], None, lambda: False)
            assert (r.fed, r.decoded) == (4, 4) and not r.continued
            r2 = session.decode(b, [target + 2], None, lambda: False)
            assert r2.continued and (r2.fed, r2.decoded) == (2, 2)
            for fid, planes in {**r.frames, **r2.frames}.items():
                for got, exp in zip(planes, want[fid].planes):
                    np.testing.assert_array_equal(got.cpu().numpy().astype(np.int64), exp.astype(np.int64))
    finally:
        session.close()


@pytest.mark.parametrize("name", ["h264_nob", "hevc_closed", "h264_bframes"])
def test_clips_read_on_keep_pictures_queued(nv_assets, backend, name):
    """A job for several frames of a GOP (a clip read on) opens a decoder that keeps pictures queued on
    the hardware while a shown one is converted (libnvcuvid: a display delay); the next job goes on
    from where it stopped; every frame equals FFmpeg's, and in-order GOPs decode each picture once."""
    from asyncdecode._backends.nvdec import READ_ON_DELAY, CuvidSession

    path = nv_assets[name]
    bundles = extract_gops(path, list(probe(path).keyframes)[:2])
    want = reference_frames(path)
    session = backend.new_session()
    try:
        for b in bundles:
            first, n = b.first_frame_id, len(b)
            r = session.decode(b, [first + 1, first + 2], None, lambda: False)
            if isinstance(session, CuvidSession):
                assert session.positions[id(b)].decoder.display_delay == READ_ON_DELAY
            r2 = session.decode(b, [first + 3, first + n - 1], None, lambda: False)
            assert r2.continued
            if b.in_display_order:
                assert r.decoded + r2.decoded == n
            for fid, planes in {**r.frames, **r2.frames}.items():
                for got, exp in zip(planes, want[fid].planes):
                    np.testing.assert_array_equal(got.cpu().numpy().astype(np.int64), exp.astype(np.int64))
    finally:
        session.close()


def test_one_libnvcuvid_decoder_serves_single_frames_and_clips_read_on(nv_assets):
    """Single-frame jobs and clips read on use the same hardware decoder (only the parser's display
    delay changes between GOPs): switching between them creates no decoder and keeps frames exact."""
    from asyncdecode._backends.nvdec import READ_ON_DELAY, NvdecBackend

    path = nv_assets["h264_nob"]
    bundle = extract_gops(path, list(probe(path).keyframes)[:1])[0]
    want = reference_frames(path)
    session = NvdecBackend("cuda:0", library="libnvcuvid").new_session()
    first = bundle.first_frame_id
    try:
        decoder = None
        for wanted, delay in [([first + 4], 0), ([first + 1, first + 5], READ_ON_DELAY), ([first + 2], 0)]:
            r = session.decode(bundle, wanted, None, lambda: False)
            pos = session.positions.get(id(bundle))
            if pos is not None:  # give the GOP up: the next job starts at its keyframe again
                session._release(pos)
            used = session.spares.newest()
            assert used.display_delay == delay
            assert decoder is None or used is decoder
            decoder = used
            for fid, planes in r.frames.items():
                for got, exp in zip(planes, want[fid].planes):
                    np.testing.assert_array_equal(got.cpu().numpy().astype(np.int64), exp.astype(np.int64))
        assert session.counts.created == 1
    finally:
        session.close()


async def test_the_c_decode_loop_gives_the_frames_python_gives(nv_assets, monkeypatch):
    """The libnvcuvid decode loop in C (see _native) against Python feeding, on the same requests:
    random frames, runs read on, B-frames, open GOPs, 10-bit, other output kinds; frame for frame equal."""
    from asyncdecode._backends import _native
    from asyncdecode._backends.nvdec import _CuvidRun

    if _native.library() is None:
        pytest.skip(f"no C decode loop here: {_native.reason}")
    paths = [nv_assets[n] for n in ("hevc_closed", "h264_bframes", "hevc_10bit", "hevc_open", "h264_nob")]
    rng = random.Random(5)
    asks = [(p, sorted(rng.sample(range(probe(p).num_frames), 4))) for p in paths]
    asks += [(p, list(range(lo, min(lo + 7, probe(p).num_frames)))) for p in paths for lo in (0, 7, 14, 21)
             if lo < probe(p).num_frames]
    asks += [(p, [t]) for p in paths[:2] for t in (0, 0, 5, 6, 1, 2, 3, 13, 14)]  # single frames going on
    specs = [OutputSpec(), OutputSpec(format="bgr", layout="chw", dtype=torch.float16,
                                       normalize=((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)))]
    got = {}
    for mode in ("c", "python"):
        if mode == "python":
            monkeypatch.setattr(_native, "library", lambda: None)
        before = _CuvidRun.made
        config = EngineConfig(nvdec_library="libnvcuvid", decoder_threads=3)  # GOP cache on: jobs go on
        async with Engine(device="cuda", config=config) as eng:
            got[mode] = []
            for spec in specs:
                got[mode] += [await eng.decode(p, ids, output=spec) for p, ids in asks]
                async for frames in eng.stream(asks[len(paths):], depth=6, output=spec):  # merged, in flight
                    got[mode].append(frames)
        runs = _CuvidRun.made - before
        assert runs > 0 if mode == "c" else runs == 0, (mode, runs)
    assert len(got["c"]) == len(got["python"])
    for a, b in zip(got["c"], got["python"]):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert torch.equal(x, y)


@pytest.fixture(scope="module")
def shape_mix(tmp_path_factory):
    """Files that differ in size, codec, bit depth and B-frame layout (all NVDEC can decode)."""
    from asyncdecode.testing import VideoSpec, make_video

    root = tmp_path_factory.mktemp("shape_mix")
    specs = {
        "hevc_352": VideoSpec("hevc", 352, 288, num_frames=24, gop=12),
        "hevc_208_b": VideoSpec("hevc", 208, 160, num_frames=24, gop=12, bframes=2, seed=1),
        "h264_320_b": VideoSpec("h264", 320, 240, num_frames=24, gop=12, bframes=3, seed=2),
        "hevc_480": VideoSpec("hevc", 480, 272, num_frames=24, gop=12, seed=3),
        "hevc_10bit": VideoSpec("hevc", 256, 176, num_frames=24, gop=12, pix_fmt="yuv420p10le", seed=4),
        "h264_176": VideoSpec("h264", 176, 144, num_frames=24, gop=12, seed=5),
        "hevc_640_open": VideoSpec("hevc", 640, 360, num_frames=24, gop=12, bframes=3, open_gop=True, seed=6),
    }
    return {name: str(make_video(root / f"{name}.mp4", spec)) for name, spec in specs.items()}


def alternate(backend, session, files: dict[str, str], order: list[str]) -> int:
    """Decode GOPs of ``files`` in ``order`` on one session of ``backend``, twice round (a single frame of the first
    GOP, a run of the second), each frame checked against FFmpeg's planes; the decoders the first
    round made (the second must make none)."""
    bundles = {n: extract_gops(files[n], [0, 12]) for n in set(order)}
    want = {n: reference_frames(files[n]) for n in set(order)}
    made = None
    for round_ in range(2):
        for n in order:
            for bundle, wanted in zip(bundles[n], ([5], [13, 14, 20])):
                for b in bundles[n]:  # back and forth: the bundle's check records its size first
                    backend.check(b)
                r = session.decode(bundle, wanted, None, lambda: False)
                for pos in list(session.positions.values()):
                    session._release(pos)
                assert sorted(r.frames) == wanted
                for fid, planes in r.frames.items():
                    for got, exp in zip(planes, want[n][fid].planes):
                        np.testing.assert_array_equal(got.cpu().numpy().astype(np.int64),
                                                      exp.astype(np.int64), err_msg=f"{n} frame {fid}")
        if round_ == 0:
            made = session.counts.created
    assert session.counts.created == made  # the second round made nothing
    return made


SHAPE_ORDER = ["hevc_352", "h264_320_b", "hevc_208_b", "hevc_10bit", "hevc_480", "h264_176", "hevc_640_open",
               "hevc_352", "hevc_10bit", "h264_176"]


@pytest.mark.parametrize("library", ["libnvcuvid", "libnvcuvid-reconfigure", "PyNvVideoCodec"])
def test_one_session_alternates_sizes_codecs_depths_and_bframes(shape_mix, library, monkeypatch):
    """One session decodes GOPs of files of every shape in turn (twice round, single frames and runs):
    every frame equals FFmpeg's, and after the first round no decoder is made (one per shape kept free;
    with ASYNCDECODE_NVDEC_RECONFIGURE one per codec and bit depth, switched between sizes)."""
    from asyncdecode._backends import _cuvid
    from asyncdecode._backends.nvdec import NvdecBackend

    switches = library.endswith("-reconfigure")
    monkeypatch.setattr(_cuvid, "RECONFIGURE", switches)
    library = library.removesuffix("-reconfigure")

    backend = NvdecBackend("cuda:0", library=library)
    session = backend.new_session()
    try:
        made = alternate(backend, session, shape_mix, SHAPE_ORDER)
        if switches:
            # h264 8-bit, hevc 8-bit, hevc 10-bit; the hevc 8-bit one made again, larger, at most
            # twice (sizes come in growing: 352x288, then 480x272, then 640x360)
            assert made <= 5
            assert session.counts.reconfigured > 0
    finally:
        session.close()


@pytest.fixture(scope="module")
def odd_widths(tmp_path_factory):
    """Files whose width is 2 modulo 4 (the coded picture is wider): where a target rectangle of the
    picture's own width lost its last 2 columns on an H100."""
    from asyncdecode.testing import VideoSpec, make_video

    root = tmp_path_factory.mktemp("odd_widths")
    specs = {"hevc_510": VideoSpec("hevc", 510, 288, num_frames=24, gop=12, seed=7),
             "h264_174_b": VideoSpec("h264", 174, 144, num_frames=24, gop=12, bframes=2, seed=8),
             "hevc_10bit_250": VideoSpec("hevc", 250, 142, num_frames=24, gop=12, pix_fmt="yuv420p10le", seed=9)}
    return {name: str(make_video(root / f"{name}.mp4", spec)) for name, spec in specs.items()}


def test_fixed_output_surfaces_give_every_pixel(shape_mix, odd_widths, monkeypatch):
    """ASYNCDECODE_NVDEC_FIXED_TARGET with the reconfigure (an experiment): decoders keep their output
    surfaces at their room and switch only the decode size; every frame of every shape, widths of 2
    modulo 4 included, equals FFmpeg's (planes), and the second round makes no decoder."""
    from asyncdecode._backends import _cuvid
    from asyncdecode._backends.nvdec import NvdecBackend

    monkeypatch.setattr(_cuvid, "RECONFIGURE", True)
    monkeypatch.setattr(_cuvid, "FIXED_TARGET", True)
    backend = NvdecBackend("cuda:0", library="libnvcuvid")
    backend.opening(3)  # kept with several threads under a fixed target
    assert backend.switches
    session = backend.new_session()
    files = {**shape_mix, **odd_widths}
    order = ["hevc_510", *SHAPE_ORDER[:4], "h264_174_b", "hevc_10bit_250", *SHAPE_ORDER[4:], "hevc_510",
             "h264_174_b", "hevc_10bit_250"]
    try:
        alternate(backend, session, files, order)
        assert session.counts.reconfigured > 0
    finally:
        session.close()


async def test_engine_on_a_mix_of_shapes_equals_the_cpu_and_reuses_decoders(shape_mix):
    """Random requests over files of every shape through the engine, twice: the same frames as the CPU
    backend (within 1) and each pass as the other; decoders made at most once per shape and thread."""
    paths = list(shape_mix.values())
    counts = [probe(p).num_frames for p in paths]
    rng = random.Random(11)
    reqs = [[(i, rng.randrange(counts[i])) for i in rng.sample(range(len(paths)), 3)] for _ in range(40)]
    config = EngineConfig(nvdec_library="libnvcuvid", decoder_threads=3)
    async with Engine(device="cuda", config=config) as eng, Engine(device="cpu") as cpu:
        async def run():
            return await asyncio.gather(*(eng.decode([paths[i] for i, _ in r], [f for _, f in r]) for r in reqs))

        got = await run()
        again = await run()
        stats = eng.stats()
        exp = await asyncio.gather(*(cpu.decode([paths[i] for i, _ in r], [f for _, f in r]) for r in reqs))
    assert stats["requests_failed"] == 0 and stats["cpu_fallback_files"] == 0
    # At most one per shape (7) and thread (free decoders are shared by the threads, so usually far
    # fewer: see test_libnvcuvid_sessions_of_a_device_share_their_free_decoders); none switched, unless
    # the environment turns the reconfigure on with fixed output surfaces (kept with several threads).
    from asyncdecode._backends import _cuvid

    assert stats["decoders_created"] <= 7 * 3, stats
    if not (_cuvid.RECONFIGURE and _cuvid.FIXED_TARGET):
        assert stats["decoders_reconfigured"] == 0
    for g, a, e in zip(got, again, exp):
        for x, y, z in zip(g, a, e):
            assert torch.equal(x, y)
            assert (x.cpu().int() - z.int()).abs().max() <= 1


async def test_frames_the_cache_collects_go_through_the_c_loop(nv_assets):
    """With the frame cache on, jobs that collect frames on the way still run in the C decode loop, and
    every frame (wanted, or served later from what was collected) equals the uncached engine's."""
    from asyncdecode._backends import _native
    from asyncdecode._backends.nvdec import _CuvidRun

    if _native.library() is None:
        pytest.skip(f"no C decode loop here: {_native.reason}")
    paths = [nv_assets[n] for n in ("hevc_closed", "h264_bframes", "hevc_10bit", "h264_nob")]
    rng = random.Random(8)
    asks = [(p, [t]) for p in paths for t in rng.sample(range(probe(p).num_frames), 6)]
    asks += [(p, [t]) for p in paths for t in range(0, 8)]  # frames before a decoded one: cache hits
    got = {}
    for cache in (0, 2 << 30):
        before = _CuvidRun.made
        config = EngineConfig(nvdec_library="libnvcuvid", decoder_threads=2, frame_cache_bytes=cache)
        async with Engine(device="cuda", config=config) as eng:
            got[cache] = [await eng.decode(p, ids) for p, ids in asks]
            stats = eng.stats()
        assert _CuvidRun.made > before
        if cache:
            assert stats["frame_cache_hits"] > 0
    for a, b in zip(got[0], got[2 << 30]):
        assert torch.equal(a[0], b[0])


def test_libnvcuvid_sessions_of_a_device_share_their_free_decoders(shape_mix):
    """A decoder one thread's session gave back is taken by another's (made ready on the taker's
    stream): a set of many sizes makes a decoder per size, not per size and thread; frames exact."""
    from asyncdecode._backends.nvdec import NvdecBackend

    backend = NvdecBackend("cuda:0", library="libnvcuvid")
    names = ["hevc_352", "h264_320_b", "hevc_10bit"]
    bundles = {n: extract_gops(shape_mix[n], [0])[0] for n in names}
    sessions = [backend.new_session(), backend.new_session()]
    try:
        for round_, order in enumerate((sessions, sessions[::-1], sessions)):
            for n in names:
                for session in order:
                    b = bundles[n]
                    backend.check(b)
                    wanted = [b.first_frame_id + 2, b.first_frame_id + 3 + round_]
                    r = session.decode(b, wanted, None, lambda: False)
                    exp = reference_frames(shape_mix[n])
                    for fid in wanted:
                        for got, want in zip(r.frames[fid], exp[fid].planes):
                            np.testing.assert_array_equal(got.cpu().numpy().astype(np.int64), want.astype(np.int64),
                                                          err_msg=f"{n} frame {fid}")
                    for pos in list(session.positions.values()):
                        session._release(pos)
        assert sessions[0].counts.created == len(names)  # the first to see each stream made its decoder
        assert sessions[1].counts.created == 0  # and the other one took it, every round
        assert sessions[0].spares is sessions[1].spares is backend.spares
        assert len(backend.spares) == len(names)  # one free decoder per stream, for either thread
    finally:
        for session in sessions:
            session.close()
    assert len(backend.spares) == 0  # closing the sessions closes the device's free decoders


def test_an_idle_libnvcuvid_session_prepares_decoders_for_the_streams_seen(shape_mix, monkeypatch):
    """prepare() makes, off the jobs' path, a decoder for each size the backend has checked (by
    default), or one per class at its largest size (ASYNCDECODE_NVDEC_RECONFIGURE); the first jobs of
    those streams then make none (switching them to their size in place with the reconfigure)."""
    from asyncdecode._backends import _cuvid
    from asyncdecode._backends.nvdec import NvdecBackend

    names = ["hevc_352", "hevc_480", "h264_320_b", "h264_176"]
    monkeypatch.setattr(_cuvid, "RECONFIGURE", False)
    plain = NvdecBackend("cuda:0", library="libnvcuvid")
    firsts = [extract_gops(shape_mix[n], [0])[0] for n in names]
    for b in firsts:
        plain.check(b)
    assert plain.shapes()[0][2:] == (firsts[-1].width, firsts[-1].height)  # the latest first
    session = plain.new_session()
    try:
        made = 0
        while session.prepare():
            made += 1
        assert made == len(names) == session.counts.created
        for b in firsts:
            session.decode(b, [b.first_frame_id + 3], None, lambda: False)
            for pos in list(session.positions.values()):
                session._release(pos)
        assert session.counts.created == len(names) and session.counts.reconfigured == 0
    finally:
        session.close()
    monkeypatch.setattr(_cuvid, "RECONFIGURE", True)

    backend = NvdecBackend("cuda:0", library="libnvcuvid")
    names = ["hevc_352", "hevc_480", "h264_320_b", "h264_176"]
    bundles = [extract_gops(shape_mix[n], [0])[0] for n in names]
    for b in bundles:
        backend.check(b)
    session = backend.new_session()
    try:
        made = 0
        while session.prepare():
            made += 1
        assert made == 2 and session.counts.created == 2  # hevc 8-bit and h264 8-bit
        for n, b in zip(names, bundles):
            r = session.decode(b, [b.first_frame_id + 3], None, lambda: False)
            exp = reference_frames(shape_mix[n])[b.first_frame_id + 3].planes
            for got, want in zip(r.frames[b.first_frame_id + 3], exp):
                np.testing.assert_array_equal(got.cpu().numpy().astype(np.int64), want.astype(np.int64))
            for pos in list(session.positions.values()):
                session._release(pos)
        # Prepared at the largest size of each class (hevc 480x272, h264 320x240): the streams of those
        # sizes find them as they are, hevc_352 and back to hevc_480, and h264_176, switch them.
        assert session.counts.created == 2 and session.counts.reconfigured == 3
    finally:
        session.close()


@pytest.mark.parametrize("library", ["libnvcuvid", "PyNvVideoCodec"])
def test_sessions_allocate_outputs_from_one_pool_per_device(shape_mix, library):
    """The outputs of every session of a device come from one stream's pool (torch keeps a freed block
    for the stream it was allocated on: a pool per session grew with the thread count), written on
    the session's stream and right; freed, a block is reused by another session's outputs."""
    from asyncdecode._backends.nvdec import NvdecBackend

    backend = NvdecBackend("cuda:0", library=library)
    pool = backend.output_stream()
    assert backend.output_stream() is pool
    bundle = extract_gops(shape_mix["hevc_352"], [0])[0]
    backend.check(bundle)
    exp = reference_frames(shape_mix["hevc_352"])
    sessions = [backend.new_session(), backend.new_session()]

    def streams_of(tensors):
        segments = torch.cuda.memory_snapshot()
        found = set()
        for t in tensors:
            ptr = t.data_ptr()
            found |= {s["stream"] for s in segments if s["address"] <= ptr < s["address"] + s["total_size"]}
        return found

    def decode_and_check(session):
        # a function of its own, so that no frame (a loop variable) outlives it: the three frames may
        # be views of one block, which one kept frame would hold
        r = session.decode(bundle, [1, 2, 3], OutputSpec(), lambda: False)
        for pos in list(session.positions.values()):
            session._release(pos)
        frames = [r.frames[f] for f in (1, 2, 3)]
        assert streams_of(frames) == {pool.cuda_stream}
        for fid, got in zip((1, 2, 3), frames):
            ref = torch.from_numpy(np.clip(exp[fid].rgb(), 0, 255))
            assert (got.cpu().double() - ref).abs().max() <= 1
        return {f.data_ptr() for f in frames}

    try:
        addresses = []
        for round_ in range(2):
            for session in sessions:
                addresses.append(decode_and_check(session))
                torch.cuda.synchronize()
        # blocks freed by one session's outputs serve the other's
        assert any(addresses[i] & addresses[j] for i in range(0, 4, 2) for j in range(1, 4, 2)), addresses
    finally:
        for session in sessions:
            session.close()
