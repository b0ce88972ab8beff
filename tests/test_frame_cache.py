"""The decoded-frame cache: filled on the way to wanted frames, byte-bounded LRU, a hit costs no decode."""

from __future__ import annotations

import pytest
import torch

from asyncdecode import Engine, EngineConfig, InvalidRequestError, OutputSpec, probe
from asyncdecode._backends.cpu import CpuSession
from asyncdecode.gop import extract_gops

FRAME = 160 * 96 * 3  # bytes of one RGB uint8 frame of the default test video


async def _truth(path, ids):
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        return await eng.decode(path, ids)


@pytest.mark.parametrize("name", ["h264_nob", "h264_bframes", "hevc_open"])
async def test_frames_on_the_way_are_cached_and_served_without_decoding(assets, name):
    path = assets[name]
    info = probe(path)
    first, after = info.keyframes[1], info.keyframes[2]
    target = after - 1  # the GOP's last frame: every frame of the GOP comes out on the way
    ids = list(range(first, after))
    want = await _truth(path, ids)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=2, frame_cache_bytes=64 * FRAME)) as eng:
        (got_target,) = await eng.decode(path, [target])
        decoded = eng.stats()["frames_decoded"]
        got = await eng.decode(path, ids)
        s = eng.stats()
    if name == "h264_nob":
        assert s["frames_decoded"] == decoded  # every frame of the GOP came out on the way: all hits
        assert s["frame_cache_hits"] == len(ids)
    else:  # disposable B-frames were not fed on the way: those miss (and need their references again)
        assert 0 < s["frame_cache_hits"] < len(ids)
    assert torch.equal(got_target, want[-1])
    assert all(torch.equal(a, b) for a, b in zip(got, want))


async def test_hits_are_the_callers_own_tensors(assets):
    path = assets["h264_nob"]
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=16 * FRAME)) as eng:
        (a,) = await eng.decode(path, [5])
        a.zero_()
        (b,) = await eng.decode(path, [5])
        (c,) = await eng.decode(path, [5])
    assert b.any() and torch.equal(b, c) and b.data_ptr() != c.data_ptr()


async def test_bounded_in_bytes_and_least_recently_used_go_first(assets):
    path = assets["h264_nob"]  # GOP 10
    cap = 6 * FRAME
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=cap)) as eng:
        await eng.decode(path, [9])  # frames 0..9 come out; the last 6 stay
        s = eng.stats()
        assert s["frame_cache_bytes"] <= cap and s["frame_cache_entries"] == 6 and s["frame_cache_evictions"] == 4
        before = s["frames_decoded"]
        await eng.decode(path, [4, 5, 6, 7, 8, 9])
        assert eng.stats()["frames_decoded"] == before
        await eng.decode(path, [1])  # evicted: decoded again
        assert eng.stats()["frames_decoded"] > before
        assert eng.stats()["frame_cache_bytes"] <= cap


async def test_each_output_format_is_its_own_entry(assets):
    path = assets["h264_nob"]
    chw = OutputSpec(layout="chw")
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=64 * FRAME)) as eng:
        (hwc,) = await eng.decode(path, [3])
        decoded = eng.stats()["frames_decoded"]
        (planar,) = await eng.decode(path, [3], output=chw)
        assert eng.stats()["frames_decoded"] > decoded
    assert torch.equal(planar.permute(1, 2, 0), hwc)


async def test_off_by_default(assets):
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        await eng.decode(assets["h264_nob"], [9])
        await eng.decode(assets["h264_nob"], [3])
        s = eng.stats()
    assert s["frame_cache_entries"] == 0 and s["frame_cache_hits"] == 0 and s["frames_decoded"] >= 14


def test_session_collects_the_other_frames_only_when_asked(assets):
    path = assets["h264_bframes"]
    (bundle,) = extract_gops(path, [probe(path).keyframes[1]])
    ids = list(bundle.frame_ids)
    spec = OutputSpec()
    plain = CpuSession(1).decode(bundle, [ids[-1]], spec, lambda: False)
    assert plain.extra == {}
    res = CpuSession(1).decode(bundle, [ids[-1]], spec, lambda: False, collect=True)
    # every picture that came out is returned once; disposable ones were not fed (not needed)
    assert len(res.extra) + len(res.frames) == res.decoded and not set(res.extra) & set(res.frames)
    assert res.decoded < len(ids) and set(res.extra) < set(ids)


def test_config_checks_the_bound():
    with pytest.raises(InvalidRequestError, match="frame_cache_bytes"):
        EngineConfig(frame_cache_bytes=-1)
