"""asyncdecode.compat.accvlab.SharedGopStore / GopRef: GOP data shared by DataLoader workers through
/dev/shm, looked up by video and frame, read by the main process without a copy, and never read as
zeros once it is gone."""

from __future__ import annotations

import gc
import glob
import multiprocessing
import os
import pickle
import secrets

import numpy as np
import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import CorruptDataError, EngineClosedError, InvalidRequestError
from asyncdecode.compat._shared_store import StoreNotFoundError
from asyncdecode.testing import VideoSpec, make_video


def _files_of(store_id: int) -> list[str]:
    """Everything a store of this id has in /dev/shm: its index and its blocks."""
    return sorted(glob.glob(f"/dev/shm/adgs{os.getuid()}_{store_id}[._]*"))


@pytest.fixture
def store_id():
    sid = 10**6 + secrets.randbelow(10**9)  # apart from any other run on this machine
    yield sid
    assert _files_of(sid) == []  # every test removes what it made


@pytest.fixture
def store(store_id):
    with nvc.SharedGopStore.create(capacity=8, store_id=store_id) as s:
        yield s


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two clips of 48 frames in GOPs of 12."""
    root = tmp_path_factory.mktemp("shared_store")
    return [str(make_video(root / f"cam{i}.mp4", VideoSpec(num_frames=48, gop=12, width=64, height=48, bframes=2,
                                                            seed=i)))
            for i in range(2)]


@pytest.fixture(scope="module")
def decoder():
    with nvc.CreateGopDecoder(maxfiles=4, iGpu=0, device="cpu") as dec:
        yield dec


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def test_put_lookup_then_decode_what_the_store_returns(store, files, decoder):
    data, firsts, lens = decoder.GetGOPList([files[0]], [17])[0]
    assert (firsts, lens) == ([12], [12])
    ref = store.put(files[0], firsts[0], lens[0], data)
    assert isinstance(ref, nvc.GopRef) and ref == (ref.shm_name, data.nbytes, 12, 12)
    assert all(store.lookup(files[0], f) == ref for f in (12, 17, 23))
    assert store.lookup(files[0], 11) is None and store.lookup(files[0], 24) is None
    assert store.lookup(files[1], 17) is None
    (view,) = store.get_batch([ref])
    assert view.dtype == np.uint8 and not view.flags.writeable and np.array_equal(view, data)
    frames = decoder.DecodeFromGOPListRGB([view], [files[0], files[0]], [17, 23])
    direct = decoder.DecodeN12ToRGB([files[0], files[0]], [17, 23])
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(frames, direct))
    assert store.put(files[0], 12, 12, data) == ref  # the same GOP again: the entry it has
    assert store.get_stats() == {"hits": 3, "misses": 3, "hit_rate": 0.5, "puts": 1, "evictions": 0,
                                 "pool_usage": "1/8"}


def test_refs_pickle_small_and_a_pickled_store_is_attached(store):
    data = _data(40_000, 1)
    ref = store.put("/cams/cam0.mp4", 0, 30, data)
    assert len(pickle.dumps(ref)) < 160 < data.nbytes
    assert pickle.loads(pickle.dumps(ref)) == ref
    with pickle.loads(pickle.dumps(store)) as other:
        assert repr(other) == f"<SharedGopStore store_id={store.store_id} capacity=8 attached>"
        assert other.lookup("/cams/cam0.mp4", 5) == ref
        assert np.array_equal(other.read(ref), data)
    assert repr(store).endswith("created>") and repr(other).endswith("closed>")
    assert store.lookup("/cams/cam0.mp4", 5) == ref  # closing an attached store leaves the data


def test_lru_eviction_and_get_batch_removing_evicted_blocks(store_id):
    with nvc.SharedGopStore.create(capacity=2, store_id=store_id) as store:
        r0 = store.put("/v0.mp4", 0, 30, _data(100, 0))
        r1 = store.put("/v1.mp4", 0, 30, _data(100, 1))
        assert store.lookup("/v0.mp4", 3) == r0  # v0 is now the more recently used
        r2 = store.put("/v2.mp4", 0, 30, _data(100, 2))
        assert store.lookup("/v1.mp4", 3) is None and store.get_stats()["evictions"] == 1
        assert os.path.exists(f"/dev/shm/{r1.shm_name}")  # evicted, but maybe on its way to the main process
        got = store.get_batch([r1, r2])
        assert np.array_equal(got[0], _data(100, 1)) and not os.path.exists(f"/dev/shm/{r1.shm_name}")
        assert np.array_equal(got[0], _data(100, 1))  # a view outlives its removed block
        assert {os.path.basename(p) for p in glob.glob(f"/dev/shm/{r0.shm_name.rsplit('_', 3)[0]}_*")} == {
            r0.shm_name, r2.shm_name}


def test_a_gone_block_is_a_clear_error_never_zeros(store_id):
    with nvc.SharedGopStore.create(capacity=2, store_id=store_id) as store:
        r0 = store.put("/v0.mp4", 0, 30, _data(100, 0))
        store.put("/v1.mp4", 0, 30, _data(100, 1))
        r2 = store.put("/v2.mp4", 30, 30, _data(100, 2))
        store.get_batch([r2])  # removes r0's block: evicted before the main process read it
        for read in (lambda: store.read(r0), lambda: store.get_batch([r2, r0])):
            with pytest.raises(CorruptDataError, match=r"adgs\S+_0 \(GOP frames 0..29\) is gone.*current: 2 GOPs"):
                read()
        with pytest.raises(RuntimeError, match="is gone"):  # accvlab code catches RuntimeError
            store.read(r0)
        os.unlink(f"/dev/shm/{r2.shm_name}")  # /dev/shm cleared under a live entry
        with pytest.raises(CorruptDataError, match="30..59\\) is gone") as info:
            store.read(r2)
        assert info.value.frame_id == 30
        os.truncate(f"/dev/shm/{store.lookup('/v1.mp4', 0).shm_name}", 10)
        with pytest.raises(CorruptDataError, match="holds 10 bytes, 100 expected"):
            store.get_batch([store.lookup("/v1.mp4", 0)])


def test_close_keeps_the_store_and_cleanup_removes_every_block(store_id):
    store = nvc.SharedGopStore.create(capacity=2, store_id=store_id)
    worker = nvc.SharedGopStore.attach(capacity=2, store_id=store_id)
    refs = [worker.put(f"/v{i}.mp4", 0, 10, _data(64, i)) for i in range(4)]  # two evicted, never read
    worker.close()
    worker.close()
    with pytest.raises(EngineClosedError, match="closed"):
        worker.lookup("/v0.mp4", 0)
    assert len(_files_of(store_id)) == 5  # the index and four blocks
    late = nvc.SharedGopStore.attach(capacity=2, store_id=store_id)
    store.cleanup()
    assert _files_of(store_id) == []
    store.cleanup()
    with pytest.raises(InvalidRequestError, match="was cleaned up"):  # no block leaks after cleanup
        late.put("/v9.mp4", 0, 10, _data(64, 9))
    assert _files_of(store_id) == []
    late.close()
    with pytest.raises(StoreNotFoundError, match="create\\(\\)"):
        nvc.SharedGopStore.attach(capacity=2, store_id=store_id)
    with pytest.raises(EngineClosedError):
        store.read(refs[-1])


def test_a_store_never_cleaned_up_is_removed_with_a_resource_warning(store_id):
    store = nvc.SharedGopStore.create(capacity=2, store_id=store_id)
    store.put("/v.mp4", 0, 10, _data(64, 0))
    store.close()  # a close in the creating process leaves the removal to the collection
    assert len(_files_of(store_id)) == 2
    with pytest.warns(ResourceWarning, match="not cleaned up"):
        del store
        gc.collect()
    assert _files_of(store_id) == []


def test_argument_and_attach_errors(store, store_id):
    with pytest.raises(StoreNotFoundError) as info:
        nvc.SharedGopStore.attach(capacity=8, store_id=store_id + 1)
    assert isinstance(info.value, (InvalidRequestError, RuntimeError, FileNotFoundError))
    assert pickle.loads(pickle.dumps(info.value)).args == info.value.args
    with pytest.raises(InvalidRequestError, match="created with capacity 8, not 4"):
        nvc.SharedGopStore.attach(capacity=4, store_id=store_id)
    with pytest.raises(RuntimeError, match=r"cannot be instantiated directly.*create\(\).*attach\(\)"):
        nvc.SharedGopStore(capacity=4, store_id=store_id + 2, _create=True)
    assert _files_of(store_id + 2) == []
    for data, match in ((b"", "must not be empty"), ([1, 2, 3], "not list")):
        with pytest.raises(InvalidRequestError, match=match):
            store.put("/v.mp4", 0, 10, data)
    with pytest.raises(InvalidRequestError, match="gop_len must be an int >= 1"):
        store.put("/v.mp4", 0, 0, b"x")
    with pytest.raises(InvalidRequestError, match="capacity must be an int >= 1"):
        nvc.SharedGopStore.create(capacity=0, store_id=store_id + 3)
    with nvc.SharedGopStore.create(capacity=2, store_id=store_id + 4) as other:
        foreign = other.put("/v.mp4", 0, 10, b"abc")
        with pytest.raises(InvalidRequestError, match="not a block of SharedGopStore"):
            store.get_batch([foreign])
    strided = _data(200, 3)[::2]  # not contiguous: copied
    assert np.array_equal(store.read(store.put("/s.mp4", 0, 10, strided)), strided)


def test_a_gop_of_an_earlier_version_of_the_file_is_a_miss(store, tmp_path):
    video = tmp_path / "cam.mp4"
    video.write_bytes(b"first version")
    store.put(video, 0, 10, b"gop of the first version")
    assert store.lookup(str(video), 5) is not None
    video.write_bytes(b"second version, longer")
    assert store.lookup(video, 5) is None


def _fork_child(store, started) -> None:
    started.set()
    ref = store.put("/forked.mp4", 0, 10, b"from the child")  # waits for the parent's lock
    assert store.lookup("/forked.mp4", 3) == ref


def test_a_forked_worker_has_a_lock_of_its_own(store):
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    child = ctx.Process(target=_fork_child, args=(store, started))
    with store._locked():  # the parent holds the index: the child's put must wait
        child.start()
        assert started.wait(30)
        child.join(1.0)
        assert child.is_alive()
    child.join(30)
    assert child.exitcode == 0
    (data,) = store.get_batch([store.lookup("/forked.mp4", 0)])
    assert data.tobytes() == b"from the child"
    assert len(_files_of(store.store_id)) == 2  # the inherited creator's store removed nothing


class GopDataset(torch.utils.data.Dataset):
    """What a DataLoader worker does: find the GOP in the store, or demux it and put it there."""

    def __init__(self, store: nvc.SharedGopStore, requests: list[tuple[str, int]]) -> None:
        self.store, self.requests = store, requests
        self.decoder: nvc.PyNvGopDecoder | None = None

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> tuple[nvc.GopRef, str, int]:
        path, fid = self.requests[i]
        ref = self.store.lookup(path, fid)
        if ref is None:
            if self.decoder is None:
                self.decoder = nvc.PyNvGopDecoder(maxfiles=2, device="cpu")
            data, firsts, lens = self.decoder.GetGOPList([path], [fid])[0]
            ref = self.store.put(path, firsts[0], lens[0], data)
        return ref, path, fid


def _as_list(items: list) -> list:
    return items


def test_spawned_dataloader_workers_share_gops_with_the_main_process(store, files, decoder):
    requests = [(files[i % 2], fid) for i, fid in enumerate([0, 5, 13, 20, 47, 40, 1, 25, 36, 44, 12, 3])]
    gops = {(path, fid // 12) for path, fid in requests}
    loader = torch.utils.data.DataLoader(GopDataset(store, requests), batch_size=4, num_workers=2,
                                         multiprocessing_context="spawn", collate_fn=_as_list)
    seen = []
    for batch in loader:
        refs, paths, fids = zip(*batch)
        frames = decoder.DecodeFromGOPListRGB(store.get_batch(refs), list(paths), list(fids))
        direct = decoder.DecodeN12ToRGB(list(paths), list(fids))
        assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(frames, direct))
        seen.extend(fids)
    assert sorted(seen) == sorted(f for _, f in requests)
    # Each GOP is in the store once, whichever worker demuxed it first.
    assert store.get_stats()["pool_usage"] == f"{len(gops)}/8"
