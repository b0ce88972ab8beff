"""GOP bundles handed from DataLoader workers to the main process through shared memory."""

from __future__ import annotations

import glob
import os

import pytest
import torch

from asyncdecode import CorruptDataError, probe
from asyncdecode.gop import extract_gops
from asyncdecode.shared import SharedBundle, SharedGopCache


def _shm_files(cache: SharedGopCache) -> list[str]:
    return glob.glob(f"/dev/shm/{cache.prefix}*")


@pytest.fixture
def bundles(assets):
    path = assets["h264_vargop"]
    return extract_gops(path, list(probe(path).keyframes))


def test_share_then_open_is_the_same_bundle_without_a_copy(bundles):
    with SharedGopCache(1 << 30) as cache:
        refs = [cache.share(b) for b in bundles]
        assert all(isinstance(r, SharedBundle) and r.nbytes == b.nbytes for r, b in zip(refs, bundles))
        for ref, b in zip(refs, bundles):
            got = cache.open(ref)
            assert got.to_bytes() == b.to_bytes() and got.first_frame_id == b.first_frame_id
        assert cache.stats()["opened"] == len(bundles) and cache.nbytes == sum(b.nbytes for b in bundles)
        assert cache.open(refs[0]) is cache.open(refs[0]) and cache.hits == 2  # a hit maps nothing new
    assert _shm_files(cache) == []


def test_lru_unlinks_what_it_evicts_and_live_bundles_stay_readable(bundles):
    one = max(b.nbytes for b in bundles)
    with SharedGopCache(2 * one) as cache:
        refs = [cache.share(b) for b in bundles]
        opened = [cache.open(r) for r in refs]
        assert cache.nbytes <= 2 * one and len(cache) < len(bundles)
        assert cache.evictions == len(bundles) - len(cache)
        remaining = {os.path.basename(p) for p in _shm_files(cache)}
        assert remaining == {r.name for r in refs[-len(cache):]}
        for got, b in zip(opened, bundles):  # an evicted block stays mapped while its bundle lives
            assert got.to_bytes() == b.to_bytes()
        del opened, got
    assert _shm_files(cache) == []


def test_a_block_that_is_gone_fails_or_is_read_again(bundles):
    b = bundles[1]
    with SharedGopCache(1 << 20) as cache:
        ref = cache.share(b)
        os.unlink(f"/dev/shm/{ref.name}")
        with pytest.raises(CorruptDataError, match="gone"):
            cache.open(ref)
    calls = []

    def reread(source, first):
        calls.append((source, first))
        return next(x for x in bundles if x.first_frame_id == first)

    with SharedGopCache(1 << 20, reread=reread) as cache:
        ref = cache.share(b)
        os.unlink(f"/dev/shm/{ref.name}")
        assert cache.open(ref).to_bytes() == b.to_bytes()
        assert calls == [(b.source, b.first_frame_id)] and cache.rereads == 1


def test_a_damaged_or_truncated_block_is_an_error_not_zeros(bundles):
    with SharedGopCache(1 << 20) as cache:
        ref = cache.share(bundles[0])
        with open(f"/dev/shm/{ref.name}", "r+b") as f:
            f.seek(ref.nbytes // 2)
            byte = f.read(1)
            f.seek(ref.nbytes // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(CorruptDataError, match="damaged"):
            cache.open(ref)
        ref = cache.share(bundles[1])
        os.truncate(f"/dev/shm/{ref.name}", ref.nbytes - 100)
        with pytest.raises(CorruptDataError, match="damaged"):
            cache.open(ref)


def test_close_removes_blocks_nobody_opened(bundles):
    cache = SharedGopCache(1 << 20)
    for b in bundles[:3]:
        cache.share(b)
    assert len(_shm_files(cache)) == 3
    cache.close()
    assert _shm_files(cache) == []


class GopDataset(torch.utils.data.Dataset):
    """What a DataLoader worker does: read a GOP and hand it over as a shared-memory reference."""

    def __init__(self, path: str, firsts: list[int], cache: SharedGopCache) -> None:
        self.path, self.firsts, self.cache = path, firsts, cache

    def __len__(self) -> int:
        return 3 * len(self.firsts)

    def __getitem__(self, i: int) -> SharedBundle:
        (bundle,) = extract_gops(self.path, [self.firsts[i % len(self.firsts)]])
        return self.cache.share(bundle)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dataloader_workers_hand_bundles_to_the_main_process(assets, bundles, method):
    path = str(assets["h264_vargop"])
    want = {b.first_frame_id: b.to_bytes() for b in bundles}
    one = max(b.nbytes for b in bundles)
    # room for two bundles: blocks are evicted while the workers' next references are in flight
    with SharedGopCache(2 * one) as cache:
        loader = torch.utils.data.DataLoader(GopDataset(path, sorted(want), cache), batch_size=None,
                                             num_workers=2, multiprocessing_context=method, prefetch_factor=4)
        seen = 0
        for ref in loader:
            got = cache.open(ref)
            assert got.to_bytes() == want[got.first_frame_id]
            seen += 1
        assert seen == 3 * len(want) and cache.evictions > 0 and cache.rereads == 0
    assert _shm_files(cache) == []


async def test_engine_decodes_bundles_handed_over_without_reading(assets, bundles):
    from asyncdecode import Engine, InvalidRequestError

    path = assets["h264_vargop"]
    async with Engine(device="cpu") as ref_eng:
        want = await ref_eng.decode(path, [0, 7, 30, 48])
    with SharedGopCache(1 << 30) as cache:
        opened = [cache.open(cache.share(b)) for b in bundles]
        async with Engine(device="cpu") as eng:
            assert await eng.add_bundles(opened) == len(bundles)
            got = await eng.decode(path, [0, 7, 30, 48])
            s = eng.stats()
            assert s["demux_jobs"] == 0 and s["gop_cache_hits"] >= 3
            assert all(torch.equal(a, b) for a, b in zip(got, want))
            other = extract_gops(assets["h264_nob"], [0])[0]
            object.__setattr__(other, "source", str(path))  # a GOP of another video under this name
            with pytest.raises(InvalidRequestError, match="not a GOP"):
                await eng.add_bundles([other])
