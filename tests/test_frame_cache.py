"""The decoded-frame cache: byte-bounded LRU, a hit costs no decode; wanted frames kept while the set fits
or they are hit, frames decoded on the way to them ("extras") only while they pay (the admission
policies of FrameCache)."""

from __future__ import annotations

import random

import pytest
import torch

from asyncdecode import Engine, EngineConfig, InvalidRequestError, OutputSpec, probe
from asyncdecode._cache import (EXTRAS_COST_MARGIN, EXTRAS_MIN_HIT_FRACTION, EXTRAS_PROBATION, EXTRAS_PROBE_EVERY,
                                EXTRAS_WINDOW, FrameCache, GopCache)
from asyncdecode import _cache
from asyncdecode._backends.cpu import CpuSession
from asyncdecode.gop import extract_gops
from asyncdecode.testing import VideoSpec, make_video

FRAME = 160 * 96 * 3  # bytes of one RGB uint8 frame of the default test video


@pytest.fixture(autouse=True)
def cheap_extras(request, monkeypatch):
    """The admission policy as on the GPU, where an extra's conversion is cheap against a decode: the
    threshold is EXTRAS_MIN_HIT_FRACTION, whatever these small CPU videos cost (tests marked
    ``measured_costs`` keep the measured costs)."""
    if "measured_costs" not in request.keywords:
        monkeypatch.setattr(FrameCache, "break_even", property(lambda self: 0.0))
        monkeypatch.setattr(_cache, "EXTRAS_PROBE_SHARE", float("inf"))  # probes every EXTRAS_PROBE_EVERY


@pytest.fixture
def unsized(monkeypatch):
    """The cache not told the size of the files read (FrameCache.note_file a no-op): extras start
    collected on probation as with a set that fits, whatever the cache's share of it, so that these
    tests see the estimate itself (bounds, probes, recovery) at work with a small cache."""
    monkeypatch.setattr(FrameCache, "note_file", lambda self, key, nbytes: None)


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


async def test_the_cache_copies_wanted_frames_on_the_decoder_thread(assets, monkeypatch):
    """A wanted frame the cache keeps is copied once, by the decoder thread (a copy on the event loop
    waits for the GIL among busy decoder threads: with the cache at a quarter of a set the H200 ran
    at 0.67-0.99x no cache); the caller gets the decoded tensor itself, the cache its own copy, also
    where two requests merged into one job ask for the same frame."""
    import asyncio
    import threading

    from asyncdecode import _faults, _request, _workers

    copies = []
    copy = _workers.copy_frame
    for module in (_workers, _request):
        monkeypatch.setattr(module, "copy_frame",
                            lambda frame: copies.append(threading.current_thread().name) or copy(frame))
    path, other = assets["h264_nob"], assets["h264_bframes"]
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=64 * FRAME)) as eng:
        await eng.prefetch([path, other], [5, 1])
        (a,) = await eng.decode(path, [5])
        assert len(copies) == 1 and copies[0].startswith("asyncdecode-cpu-")
        a.zero_()  # the caller's tensor: the cache's copy stays as decoded
        copies.clear()
        (b,) = await eng.decode(path, [5])  # a hit: the caller's own copy, made on the loop
        assert b.any() and eng.stats()["frame_cache_hits"] == 1
        assert copies == [threading.current_thread().name]
        copies.clear()
        # two requests for frame 13 merged into one queued job: one decoded tensor, two takers and the
        # cache: two copies, both made by the decoder thread
        with _faults.inject("decode", match=str(other), action="pause") as hold:
            busy = eng.submit(other, [1])
            assert await asyncio.to_thread(hold.wait_fired, 1, 30.0)
            first = asyncio.ensure_future(eng.decode(path, [13]))
            second = asyncio.ensure_future(eng.decode(path, [13, 12]))
            async with asyncio.timeout(30):
                while eng.stats()["jobs_merged"] < 1:
                    await asyncio.sleep(0.001)
            hold.release()
        (c,), (d, e) = await asyncio.wait_for(asyncio.gather(first, second), 30)
        await asyncio.wait_for(busy, 30)
        # the held job's frame for the cache, and 13 and 12 once each: one request takes the decoded
        # 13, the other a copy, the cache one copy of each of the two frames
        assert len(copies) == 4
        assert all(name.startswith("asyncdecode-cpu-") for name in copies)
        assert c.data_ptr() != d.data_ptr() and torch.equal(c, d)
        (f, g) = await eng.decode(path, [13, 12])  # both from the cache
        assert eng.stats()["frame_cache_hits"] == 3 and torch.equal(f, c) and torch.equal(g, e)
    want = await _truth(path, [5, 12, 13])
    assert torch.equal(b, want[0]) and torch.equal(c, want[2]) and torch.equal(e, want[1])


async def test_bounded_in_bytes_and_least_recently_used_go_first(assets, unsized):
    path = assets["h264_nob"]  # GOP 10
    cap = 12 * FRAME
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=cap)) as eng:
        await eng.decode(path, [9])  # frames 0..9 come out and stay
        await eng.decode(path, [19])  # frames 10..19 come out: 0..7, the least recently used, go
        s = eng.stats()
        assert s["frame_cache_bytes"] <= cap and s["frame_cache_entries"] == 12 and s["frame_cache_evictions"] == 8
        before = s["frames_decoded"]
        await eng.decode(path, [8, 9, 10, 11, 12, 13])
        assert eng.stats()["frames_decoded"] == before
        await eng.decode(path, [1])  # evicted: decoded again
        assert eng.stats()["frames_decoded"] > before
        assert eng.stats()["frame_cache_bytes"] <= cap


async def test_a_job_whose_frames_would_not_fit_collects_none(assets, unsized):
    path = assets["h264_nob"]  # GOP 10
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=6 * FRAME)) as eng:
        await eng.decode(path, [9])  # 10 frames on the way, room for 6: only the wanted one is kept
        s = eng.stats()
        assert s["frame_cache_entries"] == 1 and s["frame_cache_extras_admitted"] == 0
        assert s["frame_cache_evictions"] == 0 and s["frame_cache_collecting"]
        await eng.decode(path, [13])  # 4 frames on the way: they fit, the 3 before 13 are kept
        s = eng.stats()
        assert s["frame_cache_entries"] == 5 and s["frame_cache_extras_admitted"] == 3


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


# -- admission of extras: collected only while they pay ------------------------------------------

GOPS, GOP = 40, 10


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """400 frames in 40 GOPs of 10, no B-frames: the frames on the way to frame k of a GOP are its first k."""
    return make_video(tmp_path_factory.mktemp("policy") / "long.mp4", VideoSpec(num_frames=GOPS * GOP, gop=GOP))


async def test_frames_asked_twice_stay_while_others_come_once(long_video, unsized):
    """Engine level: a frame asked again (a hit) outlives frames read once since, more than the cache
    holds (each job's frames on the way too many to collect: only the wanted frame is kept)."""
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=8 * FRAME)) as eng:
        await eng.decode(long_video, [3])
        first = await eng.decode(long_video, [3])  # a hit: protected
        assert eng.stats()["frame_cache_hits"] == 1
        for g in range(1, 13):  # twelve frames, once each
            await eng.decode(long_video, [g * GOP + GOP - 1])
        s = eng.stats()
        assert s["frame_cache_evictions"] >= 8 and s["frame_cache_entries"] == 8
        again = await eng.decode(long_video, [3])
        assert eng.stats()["frames_decoded"] == s["frames_decoded"] and torch.equal(again[0], first[0])


def _descending(gops):
    """Each GOP's frames last to first: every frame after the first of a GOP was decoded on the way."""
    return [g * GOP + i for g in gops for i in reversed(range(GOP))]


async def _random_until_off(eng, path, n=120):
    """Random single frames over all GOPs, each once, with a cache far smaller than the set: the extras
    are evicted before anyone asks for them."""
    ids = list(range(GOPS * GOP))
    random.Random(7).shuffle(ids)
    for fid in ids[:n]:
        await eng.decode(path, [fid])
    return eng.stats()


async def test_extras_that_are_never_hit_stop_being_collected(long_video, unsized):
    n, cap = 120, 24
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=cap * FRAME)) as eng:
        s = await _random_until_off(eng, long_video, n)
    assert not s["frame_cache_collecting"]
    hit, wasted = s["frame_cache_extras_hit"], s["frame_cache_extras_wasted"]
    assert wasted >= EXTRAS_PROBATION and hit < wasted * EXTRAS_MIN_HIT_FRACTION
    # collected: one fill of the cache, the probation's evictions, then one job in EXTRAS_PROBE_EVERY
    bound = cap + EXTRAS_PROBATION + (GOP - 1) * (n // EXTRAS_PROBE_EVERY + 2)
    assert s["frame_cache_extras_admitted"] <= bound
    assert s["frame_cache_extras_admitted"] * 4 < s["frames_decoded"] - n  # always collecting: all of those
    assert s["frame_cache_bytes"] <= cap * FRAME


async def test_extras_that_pay_keep_being_collected(long_video, assets, unsized):
    # a cache far smaller than the set, but each GOP read last frame first: every extra is hit soon
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=24 * FRAME)) as eng:
        ids = _descending(range(16))
        for fid in ids:
            await eng.decode(long_video, [fid])
        s = eng.stats()
    assert s["frame_cache_collecting"] and s["frames_decoded"] == len(ids)  # each frame decoded once
    assert s["frame_cache_extras_hit"] == s["frame_cache_hits"] == len(ids) - 16 == s["frame_cache_extras_admitted"]
    assert s["frame_cache_extras_wasted"] == 0

    # random order over a small set that fits: extras hit within the epoch, the second epoch decodes nothing
    path = assets["h264_nob"]
    ids = list(range(48))
    random.Random(3).shuffle(ids)
    want = await _truth(path, ids)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=64 * FRAME)) as eng:
        first = [(await eng.decode(path, [fid]))[0] for fid in ids]
        s = eng.stats()
        assert s["frame_cache_collecting"] and s["frame_cache_extras_hit"] > 0 and s["frame_cache_extras_wasted"] == 0
        second = [(await eng.decode(path, [fid]))[0] for fid in ids]
        assert eng.stats()["frames_decoded"] == s["frames_decoded"] and eng.stats()["frame_cache_collecting"]
    assert all(torch.equal(a, b) for a, b in zip(first, want)) and all(torch.equal(a, b) for a, b in zip(second, want))


async def test_collecting_resumes_when_the_pattern_starts_to_pay(long_video, unsized):
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=24 * FRAME)) as eng:
        s = await _random_until_off(eng, long_video)
        assert not s["frame_cache_collecting"]
        misses, jobs = s["frame_cache_misses"], None
        ids = _descending(range(GOPS // 2, GOPS))
        for fid in ids:
            await eng.decode(long_video, [fid])
            if eng.stats()["frame_cache_collecting"]:
                jobs = eng.stats()["frame_cache_misses"] - misses  # decode jobs it took
                break
        # a later probe and its hits turn it on: its extras hit go to the protected segment, where the
        # random phase's hits sit too, and count as they leave (92 jobs here; 64 with one LRU list)
        assert jobs is not None and jobs <= 4 * EXTRAS_PROBE_EVERY
        before = eng.stats()
        rest = _descending(range(4))  # GOPs the first phase may have touched: whole ones from here on
        for fid in rest:
            await eng.decode(long_video, [fid])
        s = eng.stats()
    # collecting again: each GOP decoded once, its other frames served from the cache
    assert s["frame_cache_collecting"]
    assert s["frame_cache_extras_hit"] - before["frame_cache_extras_hit"] == 4 * (GOP - 1)
    assert s["frames_decoded"] - before["frames_decoded"] == len(rest)


# -- FrameCache's counters and decision, alone -----------------------------------------------------

def _t(nbytes=1):
    return torch.zeros(nbytes, dtype=torch.uint8)


def test_counters_of_extras():
    c = FrameCache(3, protected_share=0.0)  # one LRU list: an entry hit leaves in turn
    c.put("a", _t(), extra=True)
    c.put("b", _t(), extra=True)
    c.put("w", _t())  # wanted: not an extra
    assert (c.extras_admitted, c.extras_hit, c.extras_wasted) == (3 - 1, 0, 0)
    assert c.get("a") is not None and c.get("a") is not None  # the first hit of an extra counts, once
    assert c.get("w") is not None and c.get("nope") is None
    assert (c.extras_hit, c.hits, c.misses) == (1, 3, 1)
    c.put("d", _t())  # evicts b, the least recently used: an extra never hit
    assert "b" not in c and (c.extras_wasted, c.evictions) == (1, 1)
    c.put("e", _t(), extra=True)  # evicts a: an extra already hit, not wasted
    assert "a" not in c and c.extras_wasted == 1
    c.put("e", _t(), extra=True)  # came out again: the same admission
    assert c.extras_admitted == 3
    c.put("e", _t())  # decoded for its own request while waiting (two jobs of one GOP): saved nothing
    assert (c.extras_hit, c.extras_wasted) == (1, 2)
    c.put("f", _t(), extra=True)
    c.put("g", _t(), extra=True)
    c.put("h", _t(), extra=True)  # f, g, h evict w and d (wanted) then e (now a wanted frame)
    assert (c.extras_admitted, c.extras_hit, c.extras_wasted) == (6, 1, 2)
    c.put("i", _t(), extra=True)  # evicts f, never hit
    c.put("big", _t(4), extra=True)  # larger than the cache: not kept, not admitted
    assert "big" not in c and "f" not in c
    assert (c.extras_admitted, c.extras_hit, c.extras_wasted) == (7, 1, 3)
    assert c.extras_admitted == c.extras_hit + c.extras_wasted + 3  # g, h and i still waiting
    c.clear()
    c.put("g", _t())  # a wanted one where a waiting extra was before the clear: no hit
    assert (c.extras_admitted, c.extras_hit, c.extras_wasted) == (7, 1, 3)


def test_frames_hit_once_stay_through_a_stream_of_frames_never_hit():
    """Segmented: the first hit protects an entry; frames that come once each (an epoch's, a scan's)
    make room among those never hit."""
    c = FrameCache(10, protected_share=0.8)
    for k in range(10):
        c.put(k, _t())
    assert all(c.get(k) is not None for k in (0, 3, 6))  # protected now
    for k in range(100, 200):  # a hundred frames, each once
        c.put(k, _t())
    assert all(k in c for k in (0, 3, 6)) and not any(k in c for k in (1, 2, 4, 5, 7, 8, 9))
    assert (len(c), c.nbytes, c.protected_bytes, c.evictions) == (10, 10, 3, 100)


def test_the_protected_segment_keeps_its_share_and_gives_back_the_least_recently_hit():
    c = FrameCache(10, protected_share=0.5)
    for k in range(10):
        c.put(k, _t())
    for k in range(7):  # room for 5 protected: 0 and 1, hit longest ago, go back to probation
        assert c.get(k) is not None
    assert c.protected_bytes == 5 and c.nbytes == 10
    c.put("x", _t())  # probation's least recently used first: 7, then 8 (never hit), not 0 or 1
    c.put("y", _t())
    assert 7 not in c and 8 not in c and all(k in c for k in (0, 1, 9))
    for k in range(20, 24):  # 9, then 0 and 1 (back at probation's recent end), then x
        c.put(k, _t())
    assert not any(k in c for k in (9, 0, 1, "x")) and all(k in c for k in range(2, 7))
    c.put(2, _t(3))  # a protected entry's new value stays protected; bytes follow its size
    assert c.protected_bytes == 5 and list(c._protected) == [5, 6, 2] and c.nbytes == 10 and 2 in c
    assert c.nbytes == sum(c.size(v) for v in list(c._items.values()) + list(c._protected.values()))
    c.clear()
    assert (len(c), c.nbytes, c.protected_bytes) == (0, 0, 0)


def test_when_probation_is_empty_protected_entries_make_room():
    c = FrameCache(4, protected_share=0.75)
    for k in range(3):
        c.put(k, _t())
        c.get(k)
    c.put("a", _t())
    c.put("b", _t(2))  # probation holds a only: a goes, then the protected 0 (least recently hit)
    assert list(c._items) == ["b"] and list(c._protected) == [1, 2] and c.nbytes == 4
    assert c.protected_bytes == 2 and c.evictions == 2


def test_the_gop_cache_is_one_lru_list_and_shares_are_checked():
    g = GopCache(3)
    assert g.protected_share == 0.0
    with pytest.raises(ValueError, match="protected_share"):
        FrameCache(10, protected_share=1.0)
    with pytest.raises(ValueError, match="protected_share"):
        FrameCache(10, protected_share=-0.1)


async def _single_frames_at_random(path, n, cap, *, seed):
    """``n`` distinct frames of ``path`` at random, one per request, with a cache of ``cap`` frames:
    every frame checked against a decode without a cache; the engine's stats at the end."""
    ids = list(range(GOPS * GOP))
    random.Random(seed).shuffle(ids)
    ids = ids[:n]
    want = await _truth(path, ids)
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=cap * FRAME)) as eng:
        got = [(await eng.decode(path, [fid]))[0] for fid in ids]
        s = eng.stats()
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    return s


async def test_a_set_larger_than_the_cache_starts_without_extras(long_video):
    """A cache at a quarter of the file read at random: an extra's chance of a hit before eviction is
    about that quarter, so extras are not collected on probation; only probes (one job in
    EXTRAS_PROBE_EVERY) collect, and every frame is still right."""
    n = 96
    s = await _single_frames_at_random(long_video, n, GOPS * GOP // 4, seed=11)
    assert not s["frame_cache_collecting"]
    assert s["frame_cache_extras_admitted"] <= (GOP - 1) * (n // EXTRAS_PROBE_EVERY)  # the probes' alone
    assert s["frame_cache_entries"] >= n - s["frame_cache_hits"] - s["frame_cache_evictions"]  # wanted ones kept


def test_probation_only_while_the_set_seen_fits():
    c = FrameCache(100)
    assert c.collecting  # nothing told: as a set that fits
    c.note_file("a", 60)
    c.note_file("b", 40)
    assert c.collecting  # 100 bytes of frames in 100: fits
    c.note_file("b", 40)  # told again per job: counted once
    assert c.collecting
    c.note_file("c", 1)
    assert not c.collecting  # 101 > 100: extras wait for probes to show they pay
    decisions = [c.collect(1) for _ in range(EXTRAS_PROBE_EVERY)]
    assert decisions == [False] * (EXTRAS_PROBE_EVERY - 1) + [True]


def test_the_set_is_the_files_read_lately(monkeypatch):
    """Files not read for a long while leave the set (the record stays bounded): a cache that once
    saw more files than it holds collects again on probation when the files read now fit."""
    monkeypatch.setattr(_cache, "SET_FILES", 3)
    c = FrameCache(100)
    for name in ("old1", "old2", "old3"):
        c.note_file(name, 60)
    assert not c.collecting and len(c._files) == 3
    for name in ("a", "b", "a", "b", "a"):
        c.note_file(name, 30)
    assert c._set_bytes == 60 + 30 + 30 and not c.collecting  # old3 is still among the last three
    c.note_file("c", 30)
    assert c._set_bytes == 90 and c.collecting and list(c._files) == ["b", "a", "c"]


def _waste(c, n):
    """n extras admitted and evicted unhit (c holds one byte)."""
    for _ in range(n):
        c._k = getattr(c, "_k", 0) + 1
        c.put(("x", c._k), _t(), extra=True)


def test_decision_probation_probes_and_recovery():
    assert not FrameCache(0).collecting
    c = FrameCache(1)
    assert c.collecting and c.collect(1) and not c.collect(2)  # a job that would not fit never collects
    _waste(c, EXTRAS_PROBATION)  # the last one still waits: PROBATION - 1 resolved
    assert c.extras_wasted == EXTRAS_PROBATION - 1 and c.collecting  # still on probation
    _waste(c, 1)
    assert not c.collecting and c.extras_hit_fraction == 0.0
    # not collecting: one job in EXTRAS_PROBE_EVERY still does
    decisions = [c.collect(1) for _ in range(3 * EXTRAS_PROBE_EVERY)]
    assert decisions == ([False] * (EXTRAS_PROBE_EVERY - 1) + [True]) * 3 and c.extras_probes == 3
    _waste(c, 10 * EXTRAS_WINDOW)  # a long phase that does not pay: the old estimate is forgotten
    hits = 0
    while not c.collecting:
        c.put(("hit", hits), _t(), extra=True)  # evicts the waiting one (wasted)
        assert c.get(("hit", hits)) is not None
        hits += 1
    # recovers after a few hits: about EXTRAS_MIN_HIT_FRACTION of the decay window, whatever came before
    assert 2 <= hits <= 2 * EXTRAS_MIN_HIT_FRACTION * EXTRAS_WINDOW
    assert c.collect(1) and c.collect(1)


# -- wanted frames: kept while the set fits or they are hit enough ----------------------------------

def test_a_protected_hit_counts_when_it_leaves_the_cache():
    c = FrameCache(4, protected_share=0.5)
    for k in "abcd":
        c.put(k, _t(), extra=True)
    assert c.get("b") is not None and c.get("c") is not None  # protected (room for 2)
    for k in "efgh":
        c.put(k, _t(), extra=True)  # a, d, e, f go unhit: wasted; b and c stay, not counted yet
    assert (c.extras_hit, c.extras_wasted, c._extras.counted) == (2, 4, 4) and "b" in c and "c" in c
    assert c.get("g") is not None  # protected: b, hit longest ago, back to probation's recent end
    c.put("i", _t(), extra=True)  # evicts h (unhit)
    c.put("j", _t(), extra=True)  # evicts b: counted now, as a hit
    assert "b" not in c and (c.extras_wasted, c._extras.counted) == (5, 6)
    assert c.extras_hit_fraction == pytest.approx(1 / 6, rel=0.05)


def test_counters_of_wanted_frames():
    c = FrameCache(2, protected_share=0.0)
    c.put("a", _t())
    c.put("x", _t(), extra=True)
    assert (c.wanted_admitted, c.extras_admitted) == (1, 1)
    assert c.get("a") is not None and c.get("a") is not None  # the first hit counts, once
    c.put("b", _t())  # evicts x (an extra): not a wanted frame's waste
    c.put("c", _t())  # evicts a, hit
    assert (c.wanted_admitted, c.wanted_hit, c.wanted_wasted) == (3, 1, 0)
    assert c.wanted_hit_fraction == 1.0  # a counted when it left
    c.put("c", _t())  # decoded again for a request of its own while waiting: it saved nothing
    assert (c.wanted_admitted, c.wanted_wasted) == (3, 1)
    c.put("d", _t())  # evicts b, never hit
    assert (c.wanted_hit, c.wanted_wasted) == (1, 2) and c.extras_wasted == 1


def test_wanted_frames_kept_while_the_set_fits_or_they_pay():
    assert not FrameCache(0).keeping
    c = FrameCache(1)
    assert c.keeping and c.keep()  # nothing known yet
    c.note_file("a", 1)
    for k in range(2 * EXTRAS_PROBATION):
        c.put(("w", k), _t())  # each evicts the one before, never hit
    assert c.keeping and c.wanted_hit_fraction == 0.0  # the set fits: kept whatever the hits
    c.note_file("b", 1)  # two bytes of frames for a cache of one: the copies must pay now
    assert not c.keeping
    decisions = [c.keep() for _ in range(2 * EXTRAS_PROBE_EVERY)]
    assert decisions == ([False] * (EXTRAS_PROBE_EVERY - 1) + [True]) * 2 and c.wanted_probes == 2
    hits = 0
    while not c.keeping:  # frames that are asked for again bring the copies back
        c.put(("h", hits), _t())
        assert c.get(("h", hits)) is not None
        hits += 1
    assert 2 <= hits <= EXTRAS_WINDOW and c.keep()
    always = FrameCache(1, min_wanted_hit_fraction=0.0)  # a floor of 0: kept whatever the hits
    always.note_file("a", 5)
    for k in range(2 * EXTRAS_PROBATION):
        always.put(("w", k), _t())
    assert always.wanted_hit_fraction == 0.0 and always.keeping


def _jobs_until_kept_again(cache: FrameCache, lag: int = 4) -> int:
    """Jobs of one wanted frame each, every frame asked for again ``lag`` jobs later, until the cache
    keeps wanted frames again (after a pattern that made it stop)."""
    job = 0
    while cache.keeping or job < 4 * EXTRAS_PROBATION:  # first: frames never asked again
        if cache.keep():
            cache.put(("once", job), _t())
        job += 1
    assert not cache.keeping
    kept: dict[int, bool] = {}
    for n in range(1, 5000):
        kept[n] = cache.keep()
        if kept[n]:
            cache.put(("twice", n), _t())
        if kept.get(n - lag):
            assert cache.get(("twice", n - lag)) is not None
        if cache.keeping:
            return n
    raise AssertionError("wanted frames were never kept again")


def test_probes_come_faster_while_what_they_keep_is_asked_again(monkeypatch):
    """While wanted frames are not kept, a probe's frames that are hit make the next probe come sooner
    (down to one job in WANTED_PROBE_FASTEST), frames that leave unhit later again: keeping comes back
    within a few hundred jobs of the pattern starting to pay. With the interval fixed at
    EXTRAS_PROBE_EVERY it took about four times as long."""
    cache = FrameCache(32)
    cache.note_file("a", 4 * 32)  # the set is four times the cache
    fast = _jobs_until_kept_again(cache)
    assert fast <= 800
    assert cache.keep() and cache._keep_probe_every == EXTRAS_PROBE_EVERY  # keeping again: the pace starts over
    monkeypatch.setattr(_cache, "WANTED_PROBE_FASTEST", EXTRAS_PROBE_EVERY)  # a fixed interval
    fixed = FrameCache(32)
    fixed.note_file("a", 4 * 32)
    assert _jobs_until_kept_again(fixed) > 2 * fast


def test_probes_stay_rare_while_nothing_they_keep_is_hit():
    cache = FrameCache(8)
    cache.note_file("a", 80)
    for job in range(20 * EXTRAS_PROBE_EVERY):
        if cache.keep():
            cache.put(("once", job), _t())
    assert not cache.keeping and cache._keep_probe_every == EXTRAS_PROBE_EVERY
    probes = cache.wanted_probes
    for _ in range(10 * EXTRAS_PROBE_EVERY):
        cache.keep()
    assert cache.wanted_probes - probes == 10


async def test_wanted_frames_that_are_not_asked_again_stop_being_kept(long_video):
    """Single frames at random, each once, over a file ten times the cache: once the probation's frames
    left the cache unhit, only probes keep copies; every frame is right."""
    n, cap = 200, GOPS * GOP // 10
    s = await _single_frames_at_random(long_video, n, cap, seed=5)
    assert not s["frame_cache_keeping"] and s["frame_cache_wanted_hit"] == 0
    # kept: one fill of the cache and the probation's evictions, then one job in EXTRAS_PROBE_EVERY
    assert s["frame_cache_wanted_admitted"] <= cap + EXTRAS_PROBATION + n // EXTRAS_PROBE_EVERY + 1
    assert s["frame_cache_wanted_admitted"] < n // 2


# -- the threshold follows what conversions and decodes cost ---------------------------------------

@pytest.mark.measured_costs
def test_threshold_from_measured_costs():
    c = FrameCache(1)
    assert c.threshold == EXTRAS_MIN_HIT_FRACTION and c.collecting  # the prior: cheap (a GPU's)
    assert FrameCache(1, cheap=False).threshold == EXTRAS_COST_MARGIN and not FrameCache(1, cheap=False).collecting
    c.note_job(convert_s=0.0001, converted=4, decode_s=0.0015, wanted=1)  # GPU-like: 25 us against 1.5 ms
    assert c.break_even == pytest.approx(0.025 / 1.525)
    assert c.threshold == EXTRAS_MIN_HIT_FRACTION and c.collecting  # cheap: collect on probation
    d = FrameCache(1, cheap=False)
    d.note_job(convert_s=0.021, converted=6, decode_s=0.0072, wanted=1)  # CPU-like: 3.5 ms against 7.2 ms
    assert d.threshold == pytest.approx(EXTRAS_COST_MARGIN * 3.5 / 10.7)
    assert not d.collecting  # dear: only probes collect until extras prove they pay
    # a probe costs 10 extras x 3.5 ms: the jobs' cost (10.7 ms each) times the probe share pays for
    # it after about 10 x 3.5 / (0.02 x 10.7) = 164 jobs, not EXTRAS_PROBE_EVERY
    decisions = [d.collect(1, extras=10) for _ in range(400)]
    first = decisions.index(True) + 1
    assert 160 <= first <= 170 and decisions.count(True) == 2
    # extras that are all hit pay even when dear (each counted when the next pushes it out)
    for k in range(EXTRAS_PROBATION + 1):
        d.put(("x", k), _t(), extra=True)
        assert d.get(("x", k)) is not None
    assert d.extras_hit_fraction == 1.0 and d.collecting
    # the running averages follow the costs: conversions growing cheap lower the threshold
    for _ in range(200):
        d.note_job(convert_s=0.0001, converted=4, decode_s=0.0072, wanted=1)
    assert d.threshold == EXTRAS_MIN_HIT_FRACTION


@pytest.mark.measured_costs
def test_a_gpu_cache_keeps_a_higher_floor_and_still_collects_on_probation():
    """The engine gives a GPU's cache the floor EXTRAS_MIN_HIT_FRACTION_GPU: cheap conversions start by
    collecting (a set that fits the cache is then served from it), and extras hit less often than
    the floor stop being collected once counted."""
    from asyncdecode._cache import EXTRAS_MIN_HIT_FRACTION_GPU

    # one LRU list: extras hit leave in turn and count (protected ones count later, see the test above)
    c = FrameCache(64, min_hit_fraction=EXTRAS_MIN_HIT_FRACTION_GPU, protected_share=0.0)
    c.note_job(convert_s=0.0001, converted=4, decode_s=0.0015, wanted=1)
    assert c.threshold == EXTRAS_MIN_HIT_FRACTION_GPU and c.collecting  # on probation: the costs' guess
    k = 0
    while c.extras_wasted < 2 * EXTRAS_PROBATION:  # one extra in eight hit: above 1/16, under 1/4
        c.put(("x", k), _t(), extra=True)
        if k % 8 == 0:
            assert c.get(("x", k)) is not None
        k += 1
    assert 0.1 < c.extras_hit_fraction < EXTRAS_MIN_HIT_FRACTION_GPU and not c.collecting
    cpu_like = FrameCache(64, protected_share=0.0)
    cpu_like.note_job(convert_s=0.0001, converted=4, decode_s=0.0015, wanted=1)
    for j in range(k):  # the same pattern passes the CPU's floor
        cpu_like.put(("x", j), _t(), extra=True)
        if j % 8 == 0:
            cpu_like.get(("x", j))
    assert cpu_like.collecting


@pytest.mark.measured_costs
async def test_dear_extras_are_not_collected_on_random_access(long_video, monkeypatch):
    """Where an extra costs half of what its hit saves (threshold 0.75), random access over a set much
    larger than the cache collects only in probes (and, no frame being asked twice, keeps wanted
    frames only in probes too); frames still come out right."""
    monkeypatch.setattr(FrameCache, "break_even", property(lambda self: 0.5))
    (want,) = await _truth(long_video, [0])
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1, frame_cache_bytes=24 * FRAME)) as eng:
        s = await _random_until_off(eng, long_video, 96)
        assert s["frame_cache_extras_threshold"] == 0.75 and not s["frame_cache_collecting"]
        assert s["frame_cache_extras_admitted"] <= (GOP - 1) * (96 // EXTRAS_PROBE_EVERY + 1)
        assert not s["frame_cache_keeping"]
        for _ in range(2):
            assert (await eng.decode(long_video, [0]))[0].equal(want)


def test_a_copy_of_a_frame_is_its_own_and_equal():
    """The engine's copies (cache hits, repeated frames): numpy's single-threaded copy on the CPU, the
    same values and dtype, no memory shared; dtypes numpy lacks go through torch."""
    from asyncdecode._workers import copy_frame

    for t in (torch.arange(24, dtype=torch.uint8).reshape(2, 4, 3), torch.rand(3, 5, dtype=torch.float16),
              torch.rand(4, 2).to(torch.bfloat16), torch.arange(40, dtype=torch.uint8).reshape(4, 10)[1:3]):
        c = copy_frame(t)
        assert c.dtype == t.dtype and c.shape == t.shape and torch.equal(c, t)
        assert c.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
    planes = (torch.zeros(2, 2, dtype=torch.uint8), torch.ones(1, 1, dtype=torch.uint8))
    copied = copy_frame(planes)
    assert isinstance(copied, tuple) and all(torch.equal(a, b) for a, b in zip(copied, planes))
