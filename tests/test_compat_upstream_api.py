"""What accvlab offers that ``asyncdecode.compat.accvlab`` lacked, pinned on the CPU backend:

1. empty lists: ``[]`` in, ``[]`` out wherever accvlab answers so (its sample reader's
   ``test_empty_list_params``), an error with accvlab's phrase where accvlab raises;
2. the size limits accvlab enforces (``maxfiles``, ``num_of_file``), call by call, with its phrases;
3. its newest API: ``GetGOPGroups`` / ``DecodeFromGOPGroupsRGB``, the
   ``enable_gop_dependency_graph_optimization`` flag (and the cache rule that goes with it),
   ``CachedGopDecoder._decoder``, ``SaveGopToFile`` and the batch GOP decoder
   (``CreateBatchAsyncGopDecoder`` / ``PyNvBatchAsyncGopDecoder``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import asyncdecode.compat.accvlab as nvc
from asyncdecode import (CorruptDataError, EngineClosedError, FrameIndexError, InvalidRequestError,
                         UnsupportedStreamError)
from asyncdecode.compat import _bundles, _runner
from asyncdecode.gop import GopBundle
from asyncdecode.testing import VideoSpec, make_video


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three 8-bit clips of 48 frames in GOPs of 12 (0..11, 12..23, 24..35, 36..47)."""
    root = tmp_path_factory.mktemp("upstream_api")
    return [str(make_video(root / f"cam{i}.mp4", VideoSpec(width=64, height=48, num_frames=48, bframes=2, seed=i)))
            for i in range(3)]


@pytest.fixture(scope="module")
def by_index(files):
    """A decoder large enough for every reference decode here."""
    with nvc.PyNvGopDecoder(maxfiles=16, device="cpu") as dec:
        yield dec


@pytest.fixture
def decode_passes(monkeypatch):
    """Every bundle handed to the engine's decoder pool: ``(first frame id, wanted frame ids)``."""
    seen: list[tuple[int, list[int]]] = []
    decode = _runner._decode_bundle

    async def spy(engine, bundle, wanted, output):
        seen.append((bundle.first_frame_id, list(wanted)))
        return await decode(engine, bundle, wanted, output)

    monkeypatch.setattr(_runner, "_decode_bundle", spy)
    return seen


def _array(frame) -> np.ndarray:
    return np.asarray(frame).copy()


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(_array(x), _array(y)) for x, y in zip(a, b))


def _raises(exc_type, match):
    """``pytest.raises`` for an error of this layer: the asyncdecode class and ``RuntimeError`` at once."""
    class _Both:
        def __enter__(self):
            self._ctx = pytest.raises(exc_type, match=match)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            done = self._ctx.__exit__(*exc)
            assert isinstance(self.info.value, RuntimeError), type(self.info.value).__mro__
            return done

    return _Both()


# -- 1. empty lists ------------------------------------------------------------------------------


def test_gop_decoder_answers_empty_lists_with_nothing(files):
    with nvc.PyNvGopDecoder(maxfiles=2, device="cpu") as dec:
        assert dec.Decode([], []) == []
        assert dec.DecodeN12ToRGB([], [], True) == []
        assert dec.GetGOPList([], []) == []
        packets, first_ids, gop_lens = dec.GetGOP([], [])
        assert packets.dtype == np.uint8 and packets.size == 0 and first_ids == [] and gop_lens == []
        assert dec.DecodeFromGOP(packets, [], []) == []
        assert dec.DecodeFromGOPRGB(packets, [], []) == []
        assert dec.DecodeFromGOPList([], [], []) == []
        assert dec.DecodeFromGOPListRGB([], [], [], True) == []
        assert dec.DecodeFromPacketListRGB([], [], [], [], []) == []  # no codec set: nothing to decode
        assert dec.GetGOPGroups([]) == []
        assert dec.GetGOPGroups([{"filepath": files[0], "frame_ids": []}]) == []
        assert dec.DecodeFromGOPGroupsRGB([]) == []
        # GOP data given with no frame asked for is still checked.
        with _raises(CorruptDataError, "DecodeFromGOPRGB"):
            dec.DecodeFromGOPRGB(np.arange(50, dtype=np.uint8), [], [])
        assert len(dec.DecodeN12ToRGB(files[:1], [3])) == 1  # and the decoder works on


def test_cached_decoder_answers_empty_lists_with_nothing(files):
    with nvc.CreateGopDecoder(maxfiles=2, device="cpu") as dec:
        dec.GetGOPList(files[:1], [0], useGOPCache=True)
        packets, first_ids, gop_lens = dec.GetGOP([], [], useGOPCache=True)
        assert packets.size == 0 and first_ids == gop_lens == [] and dec.isCacheHit() == []
        assert dec.GetGOPList([], [], useGOPCache=True) == [] and dec.isCacheHit() == []
        assert dec.GetGOPList([], []) == [] and dec.isCacheHit() == []
        assert dec.get_cache_info()["cached_files_count"] == 1


def test_sample_reader_answers_empty_lists_with_nothing(files):
    """accvlab's ``test_empty_list_params``, and the synchronous calls."""
    with nvc.CreateSampleReader(num_of_set=1, num_of_file=6, iGpu=0, device="cpu") as reader:
        reader.DecodeN12ToRGBAsync([], [], False)
        assert reader.DecodeN12ToRGBAsyncGetBuffer([], [], False) == []
        with _raises(InvalidRequestError, "No pending decode task"):
            reader.DecodeN12ToRGBAsyncGetBuffer([], [], False)
        assert reader.Decode([], []) == []
        assert reader.DecodeN12ToRGB([], []) == []
        reader.DecodeN12ToRGBAsync([], [])
        with _raises(InvalidRequestError, "filepaths and frame_ids differ"):  # an empty request is a request
            reader.DecodeN12ToRGBAsyncGetBuffer(files[:1], [0])
        assert reader.DecodeN12ToRGBAsyncGetBuffer([], []) == []


def test_empty_lists_that_accvlab_rejects(files, tmp_path):
    assert nvc.GetFastInitInfo([]) == []
    with nvc.PyNvGopDecoder(maxfiles=2, device="cpu") as dec:
        with _raises(InvalidRequestError, "filepaths is empty"):
            dec.LoadGopsToList([])
        with _raises(InvalidRequestError, "filepaths is empty"):
            dec.LoadGops([])
        with _raises(InvalidRequestError, "non-empty list"):
            dec.MergePacketDataToOne([])
        with _raises(InvalidRequestError, "non-empty list"):
            dec.DecodeFromPacketListInitialize([])
        with _raises(InvalidRequestError, "numpy_datas must be a non-empty list"):  # frames, but no data
            dec.DecodeFromGOPListRGB([], files[:1], [0])
    with nvc.CreateBatchAsyncStreamReader(1, 2, 2, device="cpu") as reader:
        with _raises(InvalidRequestError, "filepaths must not be empty"):
            reader.Decode([], [])
    with nvc.CreateBatchAsyncGopDecoder(2, 2, device="cpu") as batch:
        with _raises(InvalidRequestError, "filepaths must not be empty"):
            batch.DecodeFromGOPListRGB([], [], [], False)
        with _raises(InvalidRequestError, "filepaths must not be empty"):
            batch.DecodeFromGOPList([], [], [])
    with nvc.SharedGopStore.create(capacity=2, store_id=9_871) as store:
        assert store.get_batch([]) == []


# -- 2. size limits ------------------------------------------------------------------------------


def test_maxfiles_limits_each_gop_decoder_call_as_accvlab_does(files, by_index):
    three, ids = files, [0, 13, 30]
    with nvc.PyNvGopDecoder(maxfiles=2, device="cpu") as dec:
        for call in (dec.Decode, dec.DecodeN12ToRGB):
            with _raises(InvalidRequestError, r"3 files asked for, more than maxfiles=2 allows \(required demux "
                                              r"runners exceed max_num_files\)"):
                call(three, ids)
        with _raises(InvalidRequestError, "required demux runners exceed max_num_files"):
            dec.DecodeN12ToRGB([files[0]] * 3, [0, 1, 2])  # entries count, as in accvlab, not distinct files
        for call in (dec.GetGOP, dec.GetGOPList):
            with _raises(InvalidRequestError, "filepaths size is greater than max_num_files"):
                call(three, ids)
        packets, _, _ = by_index.GetGOP(three, ids)
        for call in (dec.DecodeFromGOP, dec.DecodeFromGOPRGB):
            with _raises(InvalidRequestError, "filepaths size is greater than max_num_files"):
                call(packets, three, ids)
        datas = [d for d, _, _ in by_index.GetGOPList(three, ids)]
        for call in (dec.DecodeFromGOPList, dec.DecodeFromGOPListRGB):
            with _raises(InvalidRequestError, r"3 frames asked for, more than maxfiles=2 allows \(total frames "
                                              r"exceed max_num_files\)"):
                call(datas, three, ids)
        # maxfiles itself is allowed, and the decoder answers as before the errors.
        assert _same(dec.DecodeN12ToRGB(three[:2], ids[:2]), by_index.DecodeN12ToRGB(three[:2], ids[:2]))
        assert _same(dec.DecodeFromGOPListRGB(datas[:2], three[:2], ids[:2]),
                     by_index.DecodeN12ToRGB(three[:2], ids[:2]))


def test_maxfiles_limits_the_grouped_calls(files, by_index):
    groups = by_index.GetGOPGroups([{"filepath": files[0], "frame_ids": [0, 13, 30]}])
    assert len(groups) == 3
    with nvc.PyNvGopDecoder(maxfiles=2, device="cpu") as dec:
        # One request may span any number of GOPs; requests with frames are what count.
        assert [g["frame_ids"] for g in dec.GetGOPGroups([{"filepath": files[0], "frame_ids": [0, 13, 30]},
                                                          {"filepath": files[1], "frame_ids": []},
                                                          {"filepath": files[2], "frame_ids": [1]}])] \
            == [[0], [13], [30], [1]]
        with _raises(InvalidRequestError, r"3 requests with frames, more than maxfiles=2 allows \(filepaths size "
                                          r"is greater than max_num_files\)"):
            dec.GetGOPGroups([{"filepath": f, "frame_ids": [1]} for f in files])
        with _raises(InvalidRequestError, r"3 groups, more than maxfiles=2 allows \(Grouped decoder configuration "
                                          r"count exceeds max_num_files\)"):
            dec.DecodeFromGOPGroupsRGB(groups)
        assert len(dec.DecodeFromGOPGroupsRGB(groups[:2])) == 2


def test_packet_list_decoding_is_not_limited(files, by_index):
    """accvlab's ``DecodeFromPacketListRGB`` checks no limit; neither does this one."""
    table = by_index.ParseSerializedPacketBundle(by_index.GetGOP(files[:1], [0])[0])
    data, sizes, idxs = table[7][0], table[9][0], table[10][0]
    packets = np.split(data, np.cumsum(sizes)[:-1])
    with nvc.PyNvGopDecoder(maxfiles=1, device="cpu") as dec:
        dec.DecodeFromPacketListInitialize([nvc.Codec.h264.value])
        frames = dec.DecodeFromPacketListRGB([packets] * 3, [idxs] * 3, [64] * 3, [48] * 3, [0, 1, 2])
    assert _same(frames, by_index.DecodeN12ToRGB([files[0]] * 3, [0, 1, 2]))


def test_cached_decoder_limits_the_files_it_fetches(files, by_index):
    """As accvlab's Python cache: ``GetGOPList`` fetches only the misses, ``GetGOP`` all the files of a
    call with a miss; ``maxfiles`` limits what is fetched."""
    with nvc.CreateGopDecoder(maxfiles=2, device="cpu") as dec:
        dec.GetGOPList(files[:2], [0, 0], useGOPCache=True)
        dec.GetGOPList(files[2:], [0], useGOPCache=True)
        got = dec.GetGOPList(files, [1, 2, 40], useGOPCache=True)  # two hits, one file fetched
        assert dec.isCacheHit() == [True, True, False] and [f for _, (f,), _ in got] == [0, 0, 36]
        with _raises(InvalidRequestError, r"3 files to fetch, more than maxfiles=2 allows \(filepaths size is "
                                          r"greater than max_num_files\)"):
            dec.GetGOPList(files, [20, 20, 20], useGOPCache=True)
        dec.GetGOPList(files[2:], [3], useGOPCache=True)
        packets, first_ids, _ = dec.GetGOP(files, [4, 5, 6], useGOPCache=True)  # every file hits: none fetched
        assert dec.isCacheHit() == [True] * 3 and first_ids == [0, 0, 0]
        with _raises(InvalidRequestError, "3 files to fetch.*filepaths size is greater than max_num_files"):
            dec.GetGOP(files, [4, 5, 13], useGOPCache=True)  # one miss: all three would be fetched
        with _raises(InvalidRequestError, "filepaths size is greater than max_num_files"):
            dec.GetGOPList(files, [4, 5, 6])  # without the cache, as PyNvGopDecoder
    assert _same(by_index.DecodeFromGOPRGB(packets, files, [4, 5, 6]), by_index.DecodeN12ToRGB(files, [4, 5, 6]))


def test_sample_reader_limits_files_to_num_of_file(files, by_index):
    with nvc.PyNvSampleReader(num_of_set=1, num_of_file=2, device="cpu") as reader:
        for call in (reader.Decode, reader.DecodeN12ToRGB):
            with _raises(InvalidRequestError, r"Number of files to decode \(3\) exceeds num_of_file \(2\)"):
                call(files, [0, 1, 2])
        reader.DecodeN12ToRGBAsync(files[:2], [5, 6])
        with _raises(InvalidRequestError, r"Number of files to decode \(3\) exceeds num_of_file \(2\)"):
            reader.DecodeN12ToRGBAsync(files, [0, 1, 2])  # raised at once; the waiting request is kept
        assert _same(reader.DecodeN12ToRGBAsyncGetBuffer(files[:2], [5, 6]), by_index.DecodeN12ToRGB(files[:2], [5, 6]))


def test_batch_reader_phrases(files):
    with nvc.CreateBatchAsyncStreamReader(1, 2, 2, device="cpu") as reader:
        with _raises(InvalidRequestError, r"Number of files \(3\) exceeds num_of_file \(2\)"):
            reader.Decode(files, [[0]] * 3)
        with _raises(InvalidRequestError, r"frames per video \(3\) exceeds max_frames_per_decode_call \(2\)"):
            reader.Decode(files[:2], [[0, 1, 2]] * 2)
        with _raises(InvalidRequestError, "must not be empty"):
            reader.Decode(files[:2], [[], []])


# -- 3. the grouped calls ------------------------------------------------------------------------


def test_get_gop_groups_splits_requests_by_gop(files):
    with nvc.PyNvGopDecoder(maxfiles=2, device="cpu") as dec:
        groups = dec.GetGOPGroups([{"filepath": files[0], "frame_ids": [14, 2, 14, 30, 13]},
                                   {"filepath": files[1], "frame_ids": np.array([8, 6, 8])}])
    assert [{k: v for k, v in g.items() if k != "gop_data"} for g in groups] == [
        {"source_index": 0, "source_name": files[0], "frame_ids": [2], "frame_positions": [[1]],
         "first_frame_id": 0, "gop_len": 12},
        {"source_index": 0, "source_name": files[0], "frame_ids": [13, 14], "frame_positions": [[4], [0, 2]],
         "first_frame_id": 12, "gop_len": 12},
        {"source_index": 0, "source_name": files[0], "frame_ids": [30], "frame_positions": [[3]],
         "first_frame_id": 24, "gop_len": 12},
        # accvlab's example: [8, 6, 8] gives frame ids [6, 8] at positions [[1], [0, 2]].
        {"source_index": 1, "source_name": files[1], "frame_ids": [6, 8], "frame_positions": [[1], [0, 2]],
         "first_frame_id": 0, "gop_len": 12},
    ]
    for g in groups:  # one GOP's data each, as GetGOPList gives it
        (bundle,) = _bundles.split(g["gop_data"], what="test")
        assert g["gop_data"].dtype == np.uint8 and bundle.first_frame_id == g["first_frame_id"]
        assert bundle.frame_count == g["gop_len"] and isinstance(GopBundle.from_buffer(g["gop_data"]), GopBundle)


def test_decode_from_gop_groups_gives_each_frame_once(files, by_index, decode_passes):
    request = [{"filepath": files[0], "frame_ids": [14, 2, 14, 30, 13]}, {"filepath": files[2], "frame_ids": [9, 7]}]
    groups = by_index.GetGOPGroups(request)
    with nvc.CreateGopDecoder(maxfiles=4, device="cpu") as dec:  # another decoder: the GOP data is enough
        decode_passes.clear()
        decoded = dec.DecodeFromGOPGroupsRGB(groups)
        assert sorted(decode_passes) == [(0, [2]), (0, [7, 9]), (12, [13, 14]), (24, [30])]  # one pass per GOP
        bgr = dec.DecodeFromGOPGroupsRGB(groups, as_bgr=True)
    assert [{k: v for k, v in d.items() if k != "frames"} for d in decoded] \
        == [{k: v for k, v in g.items() if k != "gop_data"} for g in groups]
    # Scattered back to the requests' positions, the frames are the by-index decode of each request.
    answers = [[None] * len(r["frame_ids"]) for r in request]
    for d in decoded:
        assert all(isinstance(f, nvc.RGBFrame) and not f.isBGR for f in d["frames"])
        for frame, positions in zip(d["frames"], d["frame_positions"]):
            for p in positions:
                answers[d["source_index"]][p] = frame
    for r, answer in zip(request, answers):
        assert _same(answer, by_index.DecodeN12ToRGB([r["filepath"]] * len(r["frame_ids"]), r["frame_ids"]))
    for d, b in zip(decoded, bgr):
        assert all(f.isBGR and np.array_equal(_array(f), _array(g)[..., ::-1])
                   for f, g in zip(b["frames"], d["frames"]))


def test_grouped_calls_check_their_arguments(files, by_index):
    (group,) = by_index.GetGOPGroups([{"filepath": files[0], "frame_ids": [3, 5]}])
    with nvc.PyNvGopDecoder(maxfiles=2, device="cpu") as dec:
        with _raises(InvalidRequestError, "frame IDs must be non-negative"):
            dec.GetGOPGroups([{"filepath": files[0], "frame_ids": [1, -1]}])
        with _raises(InvalidRequestError, r"requests\[0\] is missing 'frame_ids'"):
            dec.GetGOPGroups([{"filepath": files[0]}])
        with _raises(InvalidRequestError, "must be a list of dicts"):
            dec.GetGOPGroups({"filepath": files[0], "frame_ids": [1]})
        with _raises(FrameIndexError, "frame 48 out of range"):
            dec.GetGOPGroups([{"filepath": files[0], "frame_ids": [48]}])
        for change, match in (({"gop_len": None}, "group is missing 'gop_len'"),
                              ({"source_index": -1}, "group source_index must be non-negative"),
                              ({"frame_positions": [[0]]}, "group frame_positions must have one entry per frame_id"),
                              ({"frame_positions": [[0], []]}, "entries must be non-empty and non-negative"),
                              ({"frame_positions": [[0], [-2]]}, "entries must be non-empty and non-negative"),
                              ({"frame_ids": [], "frame_positions": []}, "frame_ids is empty"),
                              ({"frame_ids": [3, 13]}, r"frame 13 of groups\[0\] .* is not in its gop_data "
                                                       r"\(it holds frames 0..11\)")):
            bad = {**group, **change}
            if change.get("gop_len", 0) is None:
                del bad["gop_len"]
            with _raises(InvalidRequestError, match):
                dec.DecodeFromGOPGroupsRGB([bad])
        with _raises(CorruptDataError, r"gop_data of groups\[0\]"):
            dec.DecodeFromGOPGroupsRGB([{**group, "gop_data": np.arange(100, dtype=np.uint8)}])
        with _raises(InvalidRequestError, "enable_gop_dependency_graph_optimization must be a bool"):
            dec.DecodeFromGOPGroupsRGB([group], False, "yes")
        assert len(dec.DecodeFromGOPGroupsRGB([group])[0]["frames"]) == 2  # the decoder works on


def test_the_dependency_graph_flag_changes_nothing_here(files, by_index):
    """accvlab's flag lets its decoder skip frames with a dependency graph it puts in HEVC GOP data;
    here it is accepted and both the data and the frames are the same with and without it."""
    ids = [5, 30]
    plain = by_index.GetGOPList(files[:2], ids)
    graph = by_index.GetGOPList(files[:2], ids, enable_gop_dependency_graph_optimization=True)
    assert all(np.array_equal(a[0], b[0]) and a[1:] == b[1:] for a, b in zip(plain, graph))
    datas = [d for d, _, _ in graph]
    expected = by_index.DecodeN12ToRGB(files[:2], ids)
    assert _same(by_index.DecodeFromGOPListRGB(datas, files[:2], ids, False, True), expected)
    assert _same(by_index.DecodeFromGOPListRGB(datas, files[:2], ids, as_bgr=False,
                                               enable_gop_dependency_graph_optimization=True), expected)
    assert _same(by_index.DecodeFromGOPList(datas, files[:2], ids, enable_gop_dependency_graph_optimization=True),
                 by_index.Decode(files[:2], ids))
    request = [{"filepath": files[0], "frame_ids": ids}]
    groups = by_index.GetGOPGroups(request, enable_gop_dependency_graph_optimization=True)
    assert all(np.array_equal(a["gop_data"], b["gop_data"]) for a, b in zip(groups, by_index.GetGOPGroups(request)))
    decoded = by_index.DecodeFromGOPGroupsRGB(groups, enable_gop_dependency_graph_optimization=True)
    assert _same([f for d in decoded for f in d["frames"]], by_index.DecodeN12ToRGB([files[0]] * 2, ids))
    with _raises(InvalidRequestError, "enable_gop_dependency_graph_optimization must be a bool"):
        by_index.GetGOPList(files[:1], [0], enable_gop_dependency_graph_optimization=1)


def test_cache_keeps_the_graph_flag_consistent(files):
    """accvlab's ``test_gop_cache_keeps_graph_generation_mode_consistent``: a GOP cached without the
    flag does not serve a call with it (and the other way round)."""
    with nvc.CreateGopDecoder(1, 0, True, device="cpu") as demuxer:
        demuxer.GetGOPList([files[0]], [10], useGOPCache=True)
        assert demuxer.isCacheHit() == [False]
        ((_, first_ids, _),) = demuxer.GetGOPList([files[0]], [10], useGOPCache=True,
                                                  enable_gop_dependency_graph_optimization=True)
        assert demuxer.isCacheHit() == [False]
        demuxer.GetGOPList([files[0]], [first_ids[0]], useGOPCache=True, enable_gop_dependency_graph_optimization=True)
        assert demuxer.isCacheHit() == [True]
        demuxer.GetGOPList([files[0]], [11], useGOPCache=True)
        assert demuxer.isCacheHit() == [False]
        demuxer.GetGOP([files[0]], [11], useGOPCache=True)  # GetGOP has no flag: it shares the flagless entries
        assert demuxer.isCacheHit() == [True]


def test_cached_decoder_underscore_decoder_is_the_uncached_decoder(files, by_index):
    with nvc.CreateGopDecoder(maxfiles=2, device="cpu") as dec:
        dec.GetGOPList(files[:1], [0], useGOPCache=True)
        native = dec._decoder
        assert native.maxfiles == 2 and "GetGOPList" in dir(native) and "isCacheHit" not in dir(native)
        got = native.GetGOPList(files[:2], [1, 40])  # neither reads nor fills the cache
        assert [f for _, (f,), _ in got] == [0, 36]
        assert dec.isCacheHit() == [False] and list(dec.get_cache_info()["cached_files"]) == files[:1]
        with pytest.raises(TypeError):
            native.GetGOPList(files[:1], [1], useGOPCache=True)
        assert not hasattr(native, "isCacheHit") and not hasattr(native, "DecodeFromGOPListRGBSelective")
        frames = native.DecodeFromGOPListRGB([d for d, _, _ in got], files[:2], [1, 40], False)
        assert _same(frames, by_index.DecodeN12ToRGB(files[:2], [1, 40]))
        assert native.device == dec.device
        with _raises(InvalidRequestError, "filepaths size is greater than max_num_files"):
            native.GetGOPList(files, [0, 0, 0])  # accvlab's errors, as a RuntimeError
        dec.close()
        with _raises(EngineClosedError, "closed"):
            native.DecodeN12ToRGB(files[:1], [0])


def test_save_gop_to_file(files, by_index, tmp_path):
    gop_list = by_index.GetGOPList(files[:2], [3, 20])
    names = []
    for i, (data, _, _) in enumerate(gop_list):
        nvc.SaveGopToFile(data, str(tmp_path / f"gop_{i}.bin"))
        names.append(str(tmp_path / f"gop_{i}.bin"))
    loaded = by_index.LoadGopsToList(names)
    assert all(np.array_equal(a, d) for a, (d, _, _) in zip(loaded, gop_list))
    assert _same(by_index.DecodeFromGOPListRGB(loaded, files[:2], [3, 20]), by_index.DecodeN12ToRGB(files[:2], [3, 20]))
    with _raises(CorruptDataError, "SaveGopToFile: the data to save"):
        nvc.SaveGopToFile(np.arange(64, dtype=np.uint8), tmp_path / "junk.bin")
    assert not (tmp_path / "junk.bin").exists()


# -- 3. the batch GOP decoder --------------------------------------------------------------------


def _datas(decoder, paths, frame_ids_2d):
    """For each video, the distinct GOPs of its frames (accvlab's ``_build_numpy_datas``)."""
    out = []
    for path, row in zip(paths, frame_ids_2d):
        seen = {}
        for fid in row:
            data, first, _ = decoder.GetGOPList([path], [fid])[0]
            seen.setdefault(first[0], data)
        out.append([seen[k] for k in sorted(seen)])
    return out


def test_batch_gop_decoder_gives_frames_v_by_f(files, by_index, decode_passes):
    ids = [[14, 0, 1, 30], [3, 2, 1, 0], [47, 36, 12, 13]]  # unsorted, across GOPs
    datas = _datas(by_index, files, ids)
    with nvc.CreateBatchAsyncGopDecoder(maxfiles=3, max_frames_per_decode_call=4, iGpu=0, device="cpu") as dec:
        assert isinstance(dec, nvc.PyNvBatchAsyncGopDecoder) and dec.device.type == "cpu"
        decode_passes.clear()
        dec.DecodeFromGOPListRGB(datas, files, ids, False)
        out = dec.DecodeFromGOPListRGBGetBuffer(files, ids, False)
        assert len(decode_passes) == 6  # one pass per GOP, for all its frames
        dec.DecodeFromGOPListRGB(datas, files, ids, as_bgr=True)
        bgr = dec.DecodeFromGOPListRGBGetBuffer(files, ids, as_bgr=True)
        dec.DecodeFromGOPList(datas, files, ids)
        native = dec.DecodeFromGOPListGetBuffer(files, ids)
    assert [len(row) for row in out] == [4, 4, 4]
    for v, path in enumerate(files):
        assert _same(out[v], by_index.DecodeN12ToRGB([path] * 4, ids[v]))
        assert all(f.isBGR and np.array_equal(_array(f), _array(g)[..., ::-1]) for f, g in zip(bgr[v], out[v]))
        assert all(isinstance(f, nvc.DecodedFrameExt) and f.format == 3 for f in native[v])
        assert _same(native[v], by_index.Decode([path] * 4, ids[v]))


def test_batch_gop_decoder_decodes_shared_data_once(files, by_index, decode_passes):
    """The same array for several videos (accvlab's tests pass ``[[gop_data]] * V``) is one GOP."""
    data = by_index.GetGOPList(files[:1], [0])[0][0]
    with nvc.CreateBatchAsyncGopDecoder(3, 2, device="cpu") as dec:
        decode_passes.clear()
        dec.DecodeFromGOPListRGB([[data]] * 3, files, [[2, 1]] * 3)
        out = dec.DecodeFromGOPListRGBGetBuffer(files, [[2, 1]] * 3)
    assert decode_passes == [(0, [1, 2])]
    expected = by_index.DecodeN12ToRGB([files[0]] * 2, [2, 1])  # the data's video, whatever the names say
    assert all(_same(row, expected) for row in out)
    assert out[0][0].data.data_ptr() != out[1][0].data.data_ptr()  # each entry its own memory


def test_batch_gop_decoder_copies_the_data(files, by_index):
    data = by_index.GetGOPList(files[:1], [5])[0][0]
    with nvc.CreateBatchAsyncGopDecoder(1, 1, device="cpu") as dec:
        dec.DecodeFromGOPListRGB([[data]], files[:1], [[5]])
        data[:] = 0  # the caller reuses its buffer at once
        (row,) = dec.DecodeFromGOPListRGBGetBuffer(files[:1], [[5]])
    assert _same(row, by_index.DecodeN12ToRGB(files[:1], [5]))


@pytest.mark.parametrize("datas, paths, frame_ids, match", [
    (lambda d: [[d]] * 3, 3, [[0]] * 3, r"3 videos, more than maxfiles=2 allows \(number of files \(3\) exceeds "
                                        r"maxfiles \(2\)\)"),
    (lambda d: [[d]] * 2, 2, [[0]], r"frame_ids_2d outer length \(1\) != filepaths length \(2\)"),
    (lambda d: [[d]], 2, [[0]] * 2, r"numpy_datas outer length \(1\) != filepaths length \(2\)"),
    (lambda d: [[d]] * 2, 2, [[]] * 2, "frame_ids_2d inner lists\\) must not be empty"),
    (lambda d: [[d]] * 2, 2, [[0, 1, 2, 3]] * 2, r"frame count \(4\) exceeds max_frames_per_decode_call \(3\)"),
    (lambda d: [[d]] * 2, 2, [[0, 1], [0]], r"jagged input not supported"),
    (lambda d: [[d], []], 2, [[0]] * 2, r"numpy_datas\[1\] is empty; at least one serialized GOP bundle is required"),
    (lambda d: [d, [d]], 2, [[0]] * 2, r"numpy_datas\[0\] must be a list of GOP data arrays"),
    (lambda d: [[d]] * 2, 2, [[0], ["1"]], "frame ids must be ints"),
])
def test_batch_gop_decoder_checks_its_arguments_at_once(files, by_index, datas, paths, frame_ids, match):
    data = by_index.GetGOPList(files[:1], [0])[0][0]
    with nvc.CreateBatchAsyncGopDecoder(maxfiles=2, max_frames_per_decode_call=3, device="cpu") as dec:
        dec.DecodeFromGOPListRGB([[data]], files[:1], [[4]])
        with _raises(InvalidRequestError, match):
            dec.DecodeFromGOPListRGB(datas(data), files[:paths], frame_ids)
        with _raises(InvalidRequestError, match):
            dec.DecodeFromGOPList(datas(data), files[:paths], frame_ids)
        assert _same(dec.DecodeFromGOPListRGBGetBuffer(files[:1], [[4]])[0], by_index.DecodeN12ToRGB(files[:1], [4]))


def test_batch_gop_decoder_raises_request_errors_when_collecting(files, by_index, assets):
    """accvlab's worker errors (``test_validate_zero_byte_bundle_propagates_async_error``, a wrong GOP,
    garbage, partial coverage) come from the GetBuffer call; the decoder keeps working."""
    gop0 = by_index.GetGOPList(files[:1], [0])[0][0]
    gop1 = by_index.GetGOPList(files[:1], [12])[0][0]
    cases = [([[np.zeros(0, np.uint8)]], [[0]], CorruptDataError, "packet data is empty"),
             ([[np.ones(128, np.uint8)]], [[0]], CorruptDataError, "damaged GOP data"),
             ([[gop1]], [[0]], InvalidRequestError, r"no serialized GOP bundle covers frame 0 for video .*cam0.mp4: "
                                                    r"numpy_datas\[0\] holds frames 12..23"),
             ([[gop0]], [[0, 12]], InvalidRequestError, "no serialized GOP bundle covers frame 12")]
    with nvc.CreateBatchAsyncGopDecoder(1, 2, device="cpu") as dec:
        for datas, ids, error, match in cases:
            dec.DecodeFromGOPListRGB(datas, files[:1], ids)
            with _raises(error, match):
                dec.DecodeFromGOPListRGBGetBuffer(files[:1], ids)
            with _raises(InvalidRequestError, "No pending decode task"):  # the failed request is gone
                dec.DecodeFromGOPListRGBGetBuffer(files[:1], ids)
        odd = str(assets["h264_odd444"])
        dec.DecodeFromGOPList([[by_index.GetGOPList([odd], [1])[0][0]]], [odd], [[1]])
        with _raises(UnsupportedStreamError, "no NV12 form"):
            dec.DecodeFromGOPListGetBuffer([odd], [[1]])
        dec.DecodeFromGOPListRGB([[gop0]], files[:1], [[0, 11]])
        assert _same(dec.DecodeFromGOPListRGBGetBuffer(files[:1], [[0, 11]])[0],
                     by_index.DecodeN12ToRGB(files[:1] * 2, [0, 11]))


def test_batch_gop_decoder_keeps_one_request(files, by_index):
    """accvlab's GetBuffer rules: no request, the other kind of frames, other arguments, a second
    request before the first is collected."""
    a = _datas(by_index, files[:2], [[0]] * 2)
    b = _datas(by_index, files[:2], [[7]] * 2)
    with nvc.CreateBatchAsyncGopDecoder(2, 1, device="cpu") as dec:
        with _raises(InvalidRequestError, r"No pending decode task and buffer is empty"):
            dec.DecodeFromGOPListRGBGetBuffer(files[:2], [[0]] * 2)
        with _raises(InvalidRequestError, r"call DecodeFromGOPList\(numpy_datas, filepaths, frame_ids\) first"):
            dec.DecodeFromGOPListGetBuffer(files[:2], [[0]] * 2)
        dec.DecodeFromGOPList(a, files[:2], [[0]] * 2)
        with _raises(InvalidRequestError, "buffered result is YUV, not RGB"):
            dec.DecodeFromGOPListRGBGetBuffer(files[:2], [[0]] * 2)
        assert len(dec.DecodeFromGOPListGetBuffer(files[:2], [[0]] * 2)) == 2  # it waited through the mistake
        dec.DecodeFromGOPListRGB(a, files[:2], [[0]] * 2)
        with _raises(InvalidRequestError, "buffered result is RGB, not YUV"):
            dec.DecodeFromGOPListGetBuffer(files[:2], [[0]] * 2)
        with _raises(InvalidRequestError, "filepaths differ"):
            dec.DecodeFromGOPListRGBGetBuffer(files[1::-1], [[0]] * 2)
        with _raises(InvalidRequestError, "frame_ids differ"):
            dec.DecodeFromGOPListRGBGetBuffer(files[:2], [[7]] * 2)
        with _raises(InvalidRequestError, "as_bgr differ"):
            dec.DecodeFromGOPListRGBGetBuffer(files[:2], [[0]] * 2, True)
        dec.DecodeFromGOPListRGB(b, files[:2], [[7]] * 2)  # the first request's result is dropped
        with _raises(InvalidRequestError, "frame_ids differ"):
            dec.DecodeFromGOPListRGBGetBuffer(files[:2], [[0]] * 2)
        out = dec.DecodeFromGOPListRGBGetBuffer(files[:2], [[7]] * 2)
    assert _same([row[0] for row in out], by_index.DecodeN12ToRGB(files[:2], [7, 7]))


def test_batch_gop_decoder_one_collector_wins(files, by_index):
    """accvlab's ``test_concurrent_getbuffer_no_deadlock``: two threads collect one request."""
    datas = _datas(by_index, files[:1], [[0]])
    with nvc.CreateBatchAsyncGopDecoder(1, 1, device="cpu") as dec:
        dec.DecodeFromGOPListRGB(datas, files[:1], [[0]])
        results, errors = [], []
        barrier = threading.Barrier(2)

        def collect():
            barrier.wait()
            try:
                results.append(dec.DecodeFromGOPListRGBGetBuffer(files[:1], [[0]]))
            except RuntimeError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=collect) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 1 and len(errors) == 1 and "No pending decode task" in str(errors[0])


def test_batch_gop_decoder_lifetime(files, by_index):
    datas = _datas(by_index, files[:1], [[4]])
    with nvc.CreateBatchAsyncGopDecoder(1, 1, device="cpu") as dec:
        dec.release_device_memory()
        dec.release_decoder()  # idle: nothing to do
        dec.DecodeFromGOPListRGB(datas, files[:1], [[4]])
        dec.release_decoder()  # the waiting request is finished first and stays collectable
        kept = dec.DecodeFromGOPListRGBGetBuffer(files[:1], [[4]])
        dec.DecodeFromGOPListRGB(datas, files[:1], [[4]])
        dec.release_device_memory()  # frames own their memory: the request stays collectable
        again = dec.DecodeFromGOPListRGBGetBuffer(files[:1], [[4]])
        assert _same(kept[0], again[0]) and _same(kept[0], by_index.DecodeN12ToRGB(files[:1], [4]))
        dec.DecodeFromGOPListRGB(datas, files[:1], [[4]])
    with _raises(EngineClosedError, "closed"):
        dec.DecodeFromGOPListRGB(datas, files[:1], [[4]])
    with _raises(EngineClosedError, "closed"):
        dec.DecodeFromGOPListRGBGetBuffer(files[:1], [[4]])


@pytest.mark.parametrize("args", [(0, 1), (-1, 1), (1, 0), (1, -1), (1.5, 1)])
def test_batch_gop_decoder_sizes(args):
    with pytest.raises(ValueError, match="must be a positive int") as err:
        nvc.CreateBatchAsyncGopDecoder(*args, device="cpu")
    assert isinstance(err.value, RuntimeError) and isinstance(err.value, InvalidRequestError)
    with pytest.raises(TypeError):
        nvc.PyNvBatchAsyncGopDecoder()
