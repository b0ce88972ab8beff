"""asyncdecode.compat.accvlab.CachedGopDecoder / CreateGopDecoder: the GOP cache rule of accvlab
(hit iff ``first_frame_id <= frame_id < first_frame_id + gop_len`` of the file's cached GOP), plus an
LRU bound across files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import asyncdecode.compat.accvlab as nvc
from asyncdecode import InvalidRequestError
from asyncdecode.compat import _bundles
from asyncdecode.testing import VideoSpec, make_video

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three clips of 96 frames in GOPs of 24: frames 77 and 80 share the GOP 72..95."""
    root = tmp_path_factory.mktemp("cached")
    return [str(make_video(root / f"video{i + 1}.mp4", VideoSpec(num_frames=96, gop=24, width=64, height=48,
                                                                  bframes=2, seed=i)))
            for i in range(3)]


@pytest.fixture
def fetched(monkeypatch):
    """Every ``(path, frame id)`` the decoders demux, in order."""
    seen: list[tuple[str, int]] = []
    extract = _bundles.GopSource.extract

    def spy(self, pairs):
        seen.extend(pairs)
        return extract(self, pairs)

    monkeypatch.setattr(_bundles.GopSource, "extract", spy)
    return seen


@pytest.fixture
def decoder():
    with nvc.CreateGopDecoder(maxfiles=6, iGpu=0, device="cpu") as dec:
        yield dec


def _names(pairs):
    return [(p.rsplit("/", 1)[-1], f) for p, f in pairs]


def test_getgop_example_hits_in_the_same_gop(decoder, files, fetched):
    assert isinstance(decoder, nvc.CachedGopDecoder) and isinstance(decoder, nvc.PyNvGopDecoder)
    assert decoder.isCacheHit() == []
    packets, first_ids, gop_lens = decoder.GetGOP(files, [77, 77, 77], useGOPCache=True)
    assert decoder.isCacheHit() == [False, False, False]
    assert first_ids == [72, 72, 72] and gop_lens == [24, 24, 24]
    assert len(fetched) == 3
    packets2, first_ids2, gop_lens2 = decoder.GetGOP(files, [80, 80, 80], useGOPCache=True)
    assert decoder.isCacheHit() == [True, True, True]
    assert len(fetched) == 3  # nothing demuxed
    assert np.array_equal(packets2, packets) and (first_ids2, gop_lens2) == (first_ids, gop_lens)
    # The bounds of the rule: 72 and 95 (the GOP's first and last frames) hit, 71 (the GOP before) does not.
    decoder.GetGOP([files[0]], [72], useGOPCache=True)
    decoder.GetGOP([files[0]], [95], useGOPCache=True)
    assert decoder.isCacheHit() == [True] and len(fetched) == 3
    decoder.GetGOP([files[0]], [71], useGOPCache=True)
    assert decoder.isCacheHit() == [False] and _names(fetched[3:]) == [("video1.mp4", 71)]


def test_getgop_one_miss_fetches_every_file(decoder, files, fetched):
    decoder.GetGOP(files[:2], [10, 10], useGOPCache=True)
    packets, first_ids, _ = decoder.GetGOP(files[:2], [11, 30], useGOPCache=True)
    assert decoder.isCacheHit() == [True, False]
    assert _names(fetched[2:]) == [("video1.mp4", 11), ("video2.mp4", 30)]  # the hit is fetched again too
    assert first_ids == [0, 24]
    info = decoder.get_cache_info()["cached_files"]
    assert info[files[0]]["first_frame_id"] == 0 and info[files[1]]["frame_range"] == (24, 47)
    assert len(_bundles.split(packets, what="test")) == 2


def test_getgoplist_fetches_only_misses(decoder, files, fetched):
    first = decoder.GetGOPList(files[:2], [77, 77], useGOPCache=True)
    assert decoder.isCacheHit() == [False, False]
    gop_list = decoder.GetGOPList(files, [80, 3, 80], useGOPCache=True)
    assert decoder.isCacheHit() == [True, False, False]
    assert _names(fetched[2:]) == [("video2.mp4", 3), ("video3.mp4", 80)]
    assert gop_list[0][0] is first[0][0]  # from the cache, as it was
    assert [g[1:] for g in gop_list] == [([72], [24]), ([0], [24]), ([72], [24])]
    # The seed's example goes on to decode the cached data.
    gop_data_list = [data for data, _, _ in gop_list]
    frames = decoder.DecodeFromGOPListRGB(gop_data_list, files, [80, 3, 80], True)
    expected = decoder.DecodeN12ToRGB(files, [80, 3, 80], as_bgr=True)
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(frames, expected))


def test_without_the_flag_the_cache_is_neither_read_nor_filled(decoder, files, fetched):
    decoder.GetGOP(files, [5, 5, 5])
    assert decoder.isCacheHit() == [False] * 3 and decoder.get_cache_info()["cached_files_count"] == 0
    decoder.GetGOP(files, [5, 5, 5], useGOPCache=True)
    decoder.GetGOPList(files, [6, 6, 6])
    assert decoder.isCacheHit() == [False] * 3 and len(fetched) == 9
    decoder.GetGOP(files, [6, 6, 6], useGOPCache=True)
    assert decoder.isCacheHit() == [True] * 3 and len(fetched) == 9


def test_cache_info_and_clear(decoder, files):
    packets, _, _ = decoder.GetGOP(files[:1], [50], useGOPCache=True)
    info = decoder.get_cache_info()
    assert info["cached_files_count"] == 1 and info["max_cached_files"] == 24
    assert info["cached_files"] == {files[0]: {"first_frame_id": 48, "gop_len": 24, "frame_range": (48, 71),
                                               "packets_size_bytes": packets.nbytes}}
    decoder.clear_cache()
    assert decoder.get_cache_info()["cached_files_count"] == 0
    decoder.GetGOP(files[:1], [50], useGOPCache=True)
    assert decoder.isCacheHit() == [False]


def test_lru_bound_across_files(files, fetched):
    with nvc.CreateGopDecoder(maxfiles=3, device="cpu", max_cached_files=2) as dec:
        dec.GetGOP([files[0]], [1], useGOPCache=True)
        dec.GetGOP([files[1]], [1], useGOPCache=True)
        dec.GetGOP([files[0]], [2], useGOPCache=True)  # a hit: video1 is now the most recent
        assert dec.isCacheHit() == [True]
        dec.GetGOPList([files[2]], [1], useGOPCache=True)  # video2, least recent, goes
        assert list(dec.get_cache_info()["cached_files"]) == [files[0], files[2]]
        dec.GetGOP([files[1]], [2], useGOPCache=True)
        assert dec.isCacheHit() == [False]
        # More files in one call than the cache holds: the call is answered whole, the cache keeps the last.
        packets, first_ids, _ = dec.GetGOP(files, [30, 30, 30], useGOPCache=True)
        assert first_ids == [24, 24, 24] and len(_bundles.split(packets, what="test")) == 3
        assert list(dec.get_cache_info()["cached_files"]) == files[1:]


def test_direct_construction_and_arguments(files):
    with pytest.raises(InvalidRequestError, match="CreateGopDecoder"):
        nvc.CachedGopDecoder(2)
    with pytest.raises(InvalidRequestError, match="max_cached_files"):
        nvc.CreateGopDecoder(2, max_cached_files=0)
    with nvc.CreateGopDecoder(maxfiles=3, iGpu=0, device="cpu") as dec:
        with pytest.raises(InvalidRequestError, match="useGOPCache must be a bool"):
            dec.GetGOP(files, [0, 0, 0], useGOPCache=1)
        with pytest.raises(InvalidRequestError, match="3 filepaths but 2 frame_ids"):
            dec.GetGOPList(files, [0, 0], useGOPCache=True)


@pytest.mark.parametrize("device", DEVICES)
def test_create_gop_decoder_example(files, device):
    """The factory's docstring example, decoding the cached data on the device."""
    with nvc.CreateGopDecoder(maxfiles=3, iGpu=0, device=device) as dec:
        packets, fids, glens = dec.GetGOP([files[0]], [10], useGOPCache=True)
        packets2, fids2, glens2 = dec.GetGOP([files[0]], [15], useGOPCache=True)
        assert dec.isCacheHit() == [True] and packets2 is packets and (fids2, glens2) == (fids, glens) == ([0], [24])
        frames = dec.DecodeFromGOPRGB(packets2, [files[0]], [15])
        assert frames[0].device.type == device
        expected = dec.DecodeN12ToRGB([files[0]], [15])
        assert torch.equal(torch.as_tensor(frames[0], device=device), torch.as_tensor(expected[0], device=device))
