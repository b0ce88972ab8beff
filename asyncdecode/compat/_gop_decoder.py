"""accvlab's GOP decoders: :class:`PyNvGopDecoder`, and :class:`CachedGopDecoder` from
:func:`CreateGopDecoder`."""

from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from ..gop import GopBundle
from . import _bundles
from ._bundles import PacketTable
from ._common import BGR, RGB, Decoder, at_most, flag, path_list, positive, request_pairs
from ._errors import CACHE_CAPACITY_POSITIVE, MAX_DEMUX_RUNNERS, MAX_FILES, MAX_FRAMES, MAX_GROUPS
from ._frames import DecodedFrameExt, RGBFrame
from ._groups import group_layouts, source_requests
from ._runner import Device
from ._values import Codec, FastStreamInfo

__all__ = ["CachedGopDecoder", "CreateGopDecoder", "PyNvGopDecoder"]


class PyNvGopDecoder(Decoder):
    """Random access to frames of many videos, and GOP data to decode later or elsewhere.

    Example:
        >>> decoder = PyNvGopDecoder(maxfiles=6)
        >>> frames = decoder.DecodeN12ToRGB(["cam0.mp4", "cam1.mp4"], [0, 10])
        >>> gop_list = decoder.GetGOPList(["cam0.mp4", "cam1.mp4"], [0, 10])
        >>> same = decoder.DecodeFromGOPListRGB([d for d, _, _ in gop_list], ["cam0.mp4", "cam1.mp4"], [0, 10])

    Args:
        maxfiles: The most frames one call may ask for (files, or GOP groups for the grouped calls),
            as in accvlab; it also sizes the index cache.
        iGpu: CUDA device to decode on, when torch sees CUDA.
        suppressNoColorRangeWarning: Accepted for compatibility; no warning is ever given.
        device: ``"auto"`` (``cuda:<iGpu>`` with CUDA, else the CPU), ``"cuda"`` or ``"cpu"`` (an
            asyncdecode addition).

    Every call that takes lists answers empty lists with an empty result, as accvlab does.

    Raises:
        InvalidRequestError: a bad argument.
        BackendUnavailableError: ``iGpu`` is not a CUDA device here, or ``device="cuda"`` cannot be used.
    """

    def __init__(self, maxfiles: int, iGpu: int = 0, suppressNoColorRangeWarning: bool = False,
                 *, device: Device = "auto") -> None:
        self.maxfiles = positive("maxfiles", maxfiles)
        super().__init__(maxfiles, iGpu, suppressNoColorRangeWarning, device)
        self._codec_ids: list[int] | None = None

    def _most(self, method: str, count: int, phrase: str, counted: str = "files asked for") -> None:
        at_most(method, count, self.maxfiles, counted=counted, setting="maxfiles", phrase=phrase)

    def _pairs(self, method: str, filepaths: Any, frame_ids: Any, fast_infos: Any, phrase: str,
               counted: str = "files asked for") -> list[tuple[str, int]]:
        pairs = request_pairs(method, filepaths, frame_ids, fast_infos, allow_empty=True)
        self._most(method, len(pairs), phrase, counted)
        return pairs

    # -- by file ------------------------------------------------------------------------------

    def Decode(self, filepaths: Sequence[str], frame_ids: Sequence[int],
               fastStreamInfos: Sequence[FastStreamInfo] = ()) -> list[DecodedFrameExt]:
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i, in the decoder's own samples (NV12,
        or P016 for 10-bit), as :class:`DecodedFrameExt`.

        Raises:
            FrameIndexError: a frame id out of range. VideoOpenError: a file that cannot be opened.
            UnsupportedStreamError: a stream that is not 4:2:0. CorruptDataError: data that does
            not decode. InvalidRequestError: malformed arguments, or more than ``maxfiles`` frames.
        """
        return self._nv12_by_path(self._pairs("Decode", filepaths, frame_ids, fastStreamInfos, MAX_DEMUX_RUNNERS))

    def DecodeN12ToRGB(self, filepaths: Sequence[str], frame_ids: Sequence[int], as_bgr: bool = False,
                       fastStreamInfos: Sequence[FastStreamInfo] = ()) -> list[RGBFrame]:
        """Frame ``frame_ids[i]`` of ``filepaths[i]`` for every i as RGB (BGR with ``as_bgr``) frames.

        Raises:
            As :meth:`Decode`.
        """
        pairs = self._pairs("DecodeN12ToRGB", filepaths, frame_ids, fastStreamInfos, MAX_DEMUX_RUNNERS)
        return self._rgb_by_path("DecodeN12ToRGB", pairs, as_bgr)

    # -- GOP data -----------------------------------------------------------------------------

    def GetGOP(self, filepaths: Sequence[str], frame_ids: Sequence[int],
               fastStreamInfos: Sequence[FastStreamInfo] = ()) -> tuple[np.ndarray, list[int], list[int]]:
        """The GOP holding each requested frame, without decoding, as one array of packet data.

        Returns:
            ``(packet data, first frame id of each GOP, frame count of each GOP)``, one GOP per
            requested frame, in order (the data holds their bundles back to back; no frames: an
            empty array).

        Raises:
            As :meth:`Decode` (no decoding happens, so no ``UnsupportedStreamError``).
        """
        bundles = self._gops("GetGOP", filepaths, frame_ids, fastStreamInfos)
        packets = _bundles.pack(bundles) if bundles else np.zeros(0, np.uint8)
        return packets, [b.first_frame_id for b in bundles], [b.frame_count for b in bundles]

    def GetGOPList(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                   fastStreamInfos: Sequence[FastStreamInfo] = (),
                   enable_gop_dependency_graph_optimization: bool = False,
                   ) -> list[tuple[np.ndarray, list[int], list[int]]]:
        """As :meth:`GetGOP`, one ``(packet data, [first frame id], [frame count])`` per requested frame.

        ``enable_gop_dependency_graph_optimization`` is accepted (a bool) and changes nothing: accvlab
        adds the GOP's frame dependencies to HEVC data for its decoder to skip frames; the data here
        is the same either way.
        """
        flag("GetGOPList", "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        bundles = self._gops("GetGOPList", filepaths, frame_ids, fastStreamInfos)
        return [_gop_entry(b) for b in bundles]

    def _gops(self, method: str, filepaths: Any, frame_ids: Any, fast_infos: Any) -> list[GopBundle]:
        pairs = self._pairs(method, filepaths, frame_ids, fast_infos, MAX_FILES)
        return self._source.extract(pairs) if pairs else []

    def GetGOPGroups(self, requests: Sequence[Mapping[str, Any]],
                     enable_gop_dependency_graph_optimization: bool = False) -> list[dict[str, Any]]:
        """The GOP data of several frames of each video, one group per GOP, for
        :meth:`DecodeFromGOPGroupsRGB`.

        Each request is ``{"filepath": path, "frame_ids": [...]}``; its frames may come in any order
        and repeat. The groups come request by request, and within a request GOP by GOP in frame
        order. A group is a dict:

        * ``gop_data``: the GOP's packet data (one bundle, as :meth:`GetGOPList` gives it);
        * ``source_index``: the position of its request in ``requests``; ``source_name``: its path;
        * ``frame_ids``: the distinct frames asked for in this GOP, ascending;
        * ``frame_positions``: for each of those, every position in the request's ``frame_ids`` that
          asked for it (``[8, 6, 8]`` gives ``frame_ids [6, 8]``, ``frame_positions [[1], [0, 2]]``);
        * ``first_frame_id``, ``gop_len``: the frames the GOP holds, ``first_frame_id`` up to
          ``first_frame_id + gop_len - 1``.

        ``enable_gop_dependency_graph_optimization`` is accepted and changes nothing (see
        :meth:`GetGOPList`).

        Example:
            >>> groups = decoder.GetGOPGroups([{"filepath": "cam0.mp4", "frame_ids": [9, 6, 7, 8]}])
            >>> decoded = decoder.DecodeFromGOPGroupsRGB(groups)

        Raises:
            InvalidRequestError: malformed requests, a negative frame id (accvlab: "frame IDs must be
                non-negative"), more than ``maxfiles`` requests with frames.
            FrameIndexError, VideoOpenError, CorruptDataError: as :meth:`GetGOP`.
        """
        method = "GetGOPGroups"
        flag(method, "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        sources = source_requests(method, requests)
        self._most(method, sum(1 for s in sources if s.frame_ids), MAX_FILES, "requests with frames")
        pairs = [(s.path, f) for s in sources for f in s.frame_ids]
        found = iter(self._source.extract(pairs) if pairs else [])
        groups: list[dict[str, Any]] = []
        for index, source in enumerate(sources):
            current: GopBundle | None = None
            for fid in source.frame_ids:
                bundle = next(found)
                if bundle is not current:  # a new GOP of this request
                    current = bundle
                    groups.append({"gop_data": _bundles.pack([bundle]), "source_index": index,
                                   "source_name": source.name, "frame_ids": [], "frame_positions": [],
                                   "first_frame_id": bundle.first_frame_id, "gop_len": bundle.frame_count})
                groups[-1]["frame_ids"].append(fid)
                groups[-1]["frame_positions"].append(list(source.positions[fid]))
        return groups

    def DecodeFromGOP(self, numpy_data: Any, filepaths: Sequence[str],
                      frame_ids: Sequence[int]) -> list[DecodedFrameExt]:
        """Decode frames out of packet data from :meth:`GetGOP` (or loaded), in NV12 / P016.

        ``filepaths`` name the videos the data was cut from; the videos themselves are not opened.

        Raises:
            CorruptDataError: the data is damaged (naming the files asked for) or does not decode.
            InvalidRequestError: a frame the data does not hold; malformed arguments; more than
                ``maxfiles`` frames.
        """
        pairs = self._pairs("DecodeFromGOP", filepaths, frame_ids, (), MAX_FILES)
        bundles, which = self._from_data("DecodeFromGOP", [numpy_data], pairs)
        return self._nv12(bundles, which, pairs)

    def DecodeFromGOPList(self, numpy_datas: Sequence[Any], filepaths: Sequence[str],
                          frame_ids: Sequence[int],
                          enable_gop_dependency_graph_optimization: bool = False) -> list[DecodedFrameExt]:
        """As :meth:`DecodeFromGOP`, from several arrays of packet data (the arrays of :meth:`GetGOPList`
        or :meth:`LoadGopsToList`); ``filepaths`` and ``frame_ids`` list every requested frame.

        ``enable_gop_dependency_graph_optimization`` is accepted and changes nothing: the GOP's frames
        are decoded up to the last one asked for, once for all of them, and a session keeps its place
        for a later frame of the same GOP, whatever the flag says.

        Example:
            >>> gop_list = decoder.GetGOPList(["cam0.mp4", "cam1.mp4"], [0, 10])
            >>> frames = decoder.DecodeFromGOPList([d for d, _, _ in gop_list], ["cam0.mp4", "cam1.mp4"], [0, 10])
        """
        method = "DecodeFromGOPList"
        flag(method, "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        pairs = self._pairs(method, filepaths, frame_ids, (), MAX_FRAMES, "frames asked for")
        bundles, which = self._from_data(method, _data_list(method, numpy_datas, allow_empty=not pairs), pairs)
        return self._nv12(bundles, which, pairs)

    def DecodeFromGOPRGB(self, numpy_data: Any, filepaths: Sequence[str], frame_ids: Sequence[int],
                         as_bgr: bool = False) -> list[RGBFrame]:
        """As :meth:`DecodeFromGOP`, as RGB (BGR with ``as_bgr``) frames."""
        pairs = self._pairs("DecodeFromGOPRGB", filepaths, frame_ids, (), MAX_FILES)
        return self._rgb_from_data("DecodeFromGOPRGB", [numpy_data], pairs, as_bgr)

    def DecodeFromGOPListRGB(self, numpy_datas: Sequence[Any], filepaths: Sequence[str],
                             frame_ids: Sequence[int], as_bgr: bool = False,
                             enable_gop_dependency_graph_optimization: bool = False) -> list[RGBFrame]:
        """As :meth:`DecodeFromGOPRGB`, from several arrays of packet data (from :meth:`GetGOPList`
        or :meth:`LoadGopsToList`); ``filepaths`` and ``frame_ids`` list every requested frame.

        ``enable_gop_dependency_graph_optimization``: as for :meth:`DecodeFromGOPList`.
        """
        method = "DecodeFromGOPListRGB"
        flag(method, "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        pairs = self._pairs(method, filepaths, frame_ids, (), MAX_FRAMES, "frames asked for")
        return self._rgb_from_data(method, _data_list(method, numpy_datas, allow_empty=not pairs), pairs, as_bgr)

    def _rgb_from_data(self, method: str, datas: Sequence[Any], pairs: Sequence[tuple[str, int]],
                       as_bgr: Any) -> list[RGBFrame]:
        bgr = flag(method, "as_bgr", as_bgr)
        bundles, which = self._from_data(method, datas, pairs)
        frames = self._decode(bundles, which, [f for _, f in pairs], BGR if bgr else RGB)
        return [RGBFrame(t, is_bgr=bgr) for t in frames]

    def DecodeFromGOPGroupsRGB(self, groups: Sequence[Mapping[str, Any]], as_bgr: bool = False,
                               enable_gop_dependency_graph_optimization: bool = False) -> list[dict[str, Any]]:
        """Decode the frames of groups from :meth:`GetGOPGroups`: each group's GOP is decoded once, in
        one pass, for all its frames.

        Returns:
            One dict per group, in order: the group's ``source_index``, ``source_name``, ``frame_ids``,
            ``frame_positions``, ``first_frame_id`` and ``gop_len``, and ``frames``, one RGB (BGR with
            ``as_bgr``) :class:`RGBFrame` per frame id. Put ``frames[k]`` at every position in
            ``frame_positions[k]`` of request ``source_index`` to answer the requests.

        ``enable_gop_dependency_graph_optimization`` is accepted and changes nothing (see
        :meth:`DecodeFromGOPList`).

        Raises:
            InvalidRequestError: a malformed group (accvlab's phrases: "group is missing 'KEY'", "group
                frame_positions must have one entry per frame_id" ...), a frame its data does not hold,
                more than ``maxfiles`` groups.
            CorruptDataError: ``gop_data`` is damaged or does not decode.
        """
        method = "DecodeFromGOPGroupsRGB"
        bgr = flag(method, "as_bgr", as_bgr)
        flag(method, "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        layouts = group_layouts(method, groups)
        self._most(method, len(layouts), MAX_GROUPS, "groups")
        bundles: list[GopBundle] = []
        which: list[int] = []
        for i, layout in enumerate(layouts):
            found = _bundles.split(layout.data, what=f"{method}: gop_data of groups[{i}] "
                                   f"({os.path.basename(layout.source_name)})", path=layout.source_name)
            for fid in layout.frame_ids:
                k = next((k for k, b in enumerate(found) if fid in b.frame_ids), None)
                if k is None:
                    held = ", ".join(f"{b.first_frame_id}..{b.first_frame_id + b.frame_count - 1}" for b in found)
                    raise InvalidRequestError(f"{method}: frame {fid} of groups[{i}] ({layout.source_name}) is not "
                                              f"in its gop_data (it holds frames {held})",
                                              path=layout.source_name, frame_id=fid)
                which.append(len(bundles) + k)
            bundles.extend(found)
        frames = iter(self._decode(bundles, which, [f for lay in layouts for f in lay.frame_ids],
                                   BGR if bgr else RGB))
        return [{**layout.header(), "frames": [RGBFrame(next(frames), is_bgr=bgr) for _ in layout.frame_ids]}
                for layout in layouts]

    # -- packet data --------------------------------------------------------------------------

    def LoadGops(self, file_paths: Sequence[str]) -> np.ndarray:
        """Packet data files (from :func:`SavePacketsToFile`, or a :class:`~asyncdecode.GopStore`'s
        bundle files) read and joined into one array, each checked.

        Raises:
            InvalidRequestError: ``file_paths`` is empty. VideoOpenError: a file cannot be read.
            CorruptDataError: a file is not GOP data or is damaged (naming the file).
        """
        return np.concatenate(self.LoadGopsToList(file_paths))

    def LoadGopsToList(self, file_paths: Sequence[str]) -> list[np.ndarray]:
        """As :meth:`LoadGops`, one array per file."""
        return [_bundles.load(p) for p in path_list("LoadGopsToList", file_paths)]

    LoadGopList = LoadGopsToList  # the name accvlab's own examples use

    def MergePacketDataToOne(self, packet_data_arrays: Sequence[Any]) -> np.ndarray:
        """Packet data arrays joined into one (each checked first).

        Raises:
            InvalidRequestError: no arrays. CorruptDataError: an array is not GOP data or is damaged.
        """
        if isinstance(packet_data_arrays, np.ndarray) or not isinstance(packet_data_arrays, Sequence) \
                or not packet_data_arrays:
            raise InvalidRequestError("MergePacketDataToOne: packet_data_arrays must be a non-empty list of arrays")
        bundles = []
        for i, data in enumerate(packet_data_arrays):
            bundles.extend(_bundles.split(data, what=f"MergePacketDataToOne: array {i}"))
        return _bundles.pack(bundles)

    def ParseSerializedPacketBundle(self, numpy_data: Any) -> tuple[list[Any], ...]:
        """The packets of each GOP in the data, for :meth:`DecodeFromPacketListRGB`.

        Returns:
            ``(color_ranges, codec_ids, widths, heights, frame_sizes, gop_lens, first_frame_ids,
            packet_binary_data_arrays, packet_binary_data_sizes, packets_bytes, decode_idxs)``: one
            entry per GOP. ``codec_ids`` are :class:`Codec` values; ``color_ranges`` 0 unspecified,
            1 limited, 2 full; ``frame_sizes`` bytes of one NV12 / P016 frame;
            ``packet_binary_data_arrays`` each GOP's packets back to back (decode order),
            ``packets_bytes`` their sizes; ``decode_idxs`` the frame id each packet shows (-1: none).

        Raises:
            CorruptDataError: the data is not GOP data or is damaged.
        """
        tables = [PacketTable.of(b) for b in _bundles.split(numpy_data, what="ParseSerializedPacketBundle")]
        return ([t.color_range for t in tables], [t.codec_id for t in tables], [t.width for t in tables],
                [t.height for t in tables], [t.frame_size for t in tables], [t.gop_len for t in tables],
                [t.first_frame_id for t in tables], [t.data for t in tables], [len(t.data) for t in tables],
                [t.packet_sizes for t in tables], [t.frame_ids for t in tables])

    def DecodeFromPacketListInitialize(self, codec_ids: Sequence[int]) -> int:
        """Set the codec of the entries of the next :meth:`DecodeFromPacketListRGB` calls: one codec id
        (a :class:`Codec` value) per entry, or one for all. Returns 0."""
        if isinstance(codec_ids, (int, Codec)):
            codec_ids = [codec_ids]
        if not isinstance(codec_ids, Sequence) or not codec_ids:
            raise InvalidRequestError("DecodeFromPacketListInitialize: codec_ids must be a non-empty list")
        ids = [c.value if isinstance(c, Codec) else int(c) for c in codec_ids]
        for c in ids:
            _bundles.codec_name(c)
        self._codec_ids = ids
        return 0

    def DecodeFromPacketListRGB(self, numpy_datas: Sequence[Sequence[Any]], packet_idxs: Sequence[Sequence[int]],
                                widths: Sequence[int], heights: Sequence[int], frame_ids: Sequence[int],
                                as_bgr: bool = False) -> list[RGBFrame]:
        """Decode frames from bare packets, one entry per frame.

        Entry i: ``numpy_datas[i]`` one array per packet of the GOP, in decode order, from its keyframe
        (the first packet carries the parameter sets, as the packets of :meth:`ParseSerializedPacketBundle`
        do); ``packet_idxs[i]`` the frame id each packet shows (-1: none), as its ``decode_idxs``;
        the frame's size; and ``frame_ids[i]``, the frame to return. The codec comes from
        :meth:`DecodeFromPacketListInitialize`. Streams are taken as 8-bit 4:2:0 and converted as
        BT.601 limited range (bare packets carry no color tags): use :meth:`DecodeFromGOPRGB` for
        tagged or 10-bit streams.

        No entries: no frames (``[]``), as in accvlab.

        Raises:
            InvalidRequestError: mismatched lengths, no codec set, a frame id no packet shows.
            CorruptDataError: the packets do not decode.
        """
        method = "DecodeFromPacketListRGB"
        bgr = flag(method, "as_bgr", as_bgr)
        n = len(frame_ids)
        lists = {"numpy_datas": numpy_datas, "packet_idxs": packet_idxs, "widths": widths, "heights": heights}
        for name, seq in lists.items():
            if len(seq) != n:
                raise InvalidRequestError(f"{method}: {name} has {len(seq)} entries, frame_ids {n} (one per frame)")
        if n == 0:
            return []
        if self._codec_ids is None:
            raise InvalidRequestError(f"{method}: call DecodeFromPacketListInitialize(codec_ids) first")
        if len(self._codec_ids) not in (1, n):
            raise InvalidRequestError(f"{method}: {n} entries but DecodeFromPacketListInitialize was given "
                                      f"{len(self._codec_ids)} codec ids (one, or one per entry)")
        bundles = []
        for i in range(n):
            label = f"{method} entry {i}"
            if len(numpy_datas[i]) != len(packet_idxs[i]):
                raise InvalidRequestError(
                    f"{label}: {len(numpy_datas[i])} packet arrays but {len(packet_idxs[i])} packet indices; pass "
                    "one array per packet (split packet_binary_data_arrays[i] at packets_bytes[i])")
            if int(frame_ids[i]) not in {int(f) for f in packet_idxs[i]}:
                raise InvalidRequestError(f"{label}: no packet shows frame {frame_ids[i]} (packet_idxs: "
                                          f"{list(packet_idxs[i])})", frame_id=int(frame_ids[i]))
            codec = _bundles.codec_name(self._codec_ids[i if len(self._codec_ids) > 1 else 0])
            bundles.append(_bundles.bundle_from_packets(numpy_datas[i], packet_idxs[i], codec=codec,
                                                        width=widths[i], height=heights[i], label=label))
        frames = self._decode(bundles, list(range(n)), [int(f) for f in frame_ids], BGR if bgr else RGB)
        return [RGBFrame(t, is_bgr=bgr) for t in frames]


def _data_list(method: str, numpy_datas: Any, *, allow_empty: bool = False) -> Sequence[Any]:
    if isinstance(numpy_datas, np.ndarray) or not isinstance(numpy_datas, Sequence) \
            or not (numpy_datas or allow_empty):
        raise InvalidRequestError(f"{method}: numpy_datas must be a non-empty list of arrays (one per GOP, "
                                  "as GetGOPList or LoadGopsToList give them)")
    return numpy_datas


def _gop_entry(bundle: GopBundle) -> tuple[np.ndarray, list[int], list[int]]:
    return _bundles.pack([bundle]), [bundle.first_frame_id], [bundle.frame_count]


_CREATION_KEY = object()


class CachedGopDecoder(PyNvGopDecoder):
    """A :class:`PyNvGopDecoder` whose ``GetGOP`` / ``GetGOPList`` can answer from a cache of GOP data.

    Made by :func:`CreateGopDecoder`. With ``useGOPCache=True`` the cache keeps, per file path (as
    given), the last GOP fetched for it; a request for ``frame_id`` of a file hits when
    ``first_frame_id <= frame_id < first_frame_id + gop_len`` of that file's entry.

    * ``GetGOP``: when every file hits, the cached data is returned and nothing is demuxed; when any
      file misses, every file is fetched again and cached.
    * ``GetGOPList``: only the files that miss are fetched and cached; the others come from the cache.
    * ``useGOPCache=False`` (the default) neither reads nor fills the cache.

    :meth:`isCacheHit` tells, per file of the last such call, whether it hit. The cache holds at most
    ``gopCacheCapacity`` files (``max_cached_files`` is the same bound), least recently used dropped first.
    ``maxfiles`` limits the files a call fetches; ``_decoder`` is the decoder without the cache, as in
    accvlab.
    """

    def __init__(self, maxfiles: int, iGpu: int = 0, suppressNoColorRangeWarning: bool = False,
                 gopCacheCapacity: int | None = None, *, device: Device = "auto",
                 max_cached_files: int | None = None, _key: object = None) -> None:
        if _key is not _CREATION_KEY:
            raise InvalidRequestError("CachedGopDecoder cannot be instantiated directly: make it with "
                                      "CreateGopDecoder(maxfiles, ...)")
        capacity = _cache_capacity(gopCacheCapacity, max_cached_files)
        super().__init__(maxfiles, iGpu, suppressNoColorRangeWarning, device=device)
        self.max_cached_files = capacity or 4 * self.maxfiles
        # path as given -> (packet data, first frame id, frame count, fetched with the graph flag)
        self._gop_cache: OrderedDict[str, tuple[np.ndarray, int, int, bool]] = OrderedDict()
        self._last_cache_hits: list[bool] = []

    def _is_cache_hit(self, filepath: str, frame_id: int, graph: bool) -> bool:
        entry = self._gop_cache.get(filepath)
        return entry is not None and entry[1] <= frame_id < entry[1] + entry[2] and entry[3] == graph

    def _cached(self, filepath: str) -> tuple[np.ndarray, int, int, bool]:
        self._gop_cache.move_to_end(filepath)
        return self._gop_cache[filepath]

    def _remember(self, filepath: str, bundle: GopBundle, graph: bool) -> tuple[np.ndarray, int, int, bool]:
        self._gop_cache[filepath] = value = (_bundles.pack([bundle]), bundle.first_frame_id, bundle.frame_count, graph)
        self._gop_cache.move_to_end(filepath)
        while len(self._gop_cache) > self.max_cached_files:
            self._gop_cache.popitem(last=False)
        return value

    def _lookup(self, method: str, filepaths: Sequence[str], frame_ids: Sequence[int],
                infos: Sequence[FastStreamInfo], graph: bool) -> tuple[list[tuple[str, int]], list[str], list[bool]]:
        """The checked ``(file, frame)`` pairs, their cache keys and which hit (recorded for ``isCacheHit``)."""
        pairs = request_pairs(method, filepaths, frame_ids, infos, allow_empty=True)
        keys = [os.fspath(p) for p in filepaths]
        hits = [self._is_cache_hit(k, f, graph) for k, (_, f) in zip(keys, pairs)]
        self._last_cache_hits = hits
        return pairs, keys, hits

    def GetGOP(self, filepaths: Sequence[str], frame_ids: Sequence[int],
               fastStreamInfos: Sequence[FastStreamInfo] = (),
               useGOPCache: bool = False) -> tuple[np.ndarray, list[int], list[int]]:
        """:meth:`PyNvGopDecoder.GetGOP`, answered from the cache when every file hits (``useGOPCache``).

        ``maxfiles`` limits the files fetched: none when every file hits, all of them otherwise.
        """
        use = flag("GetGOP", "useGOPCache", useGOPCache)
        if not use:
            result = super().GetGOP(filepaths, frame_ids, fastStreamInfos)
            self._last_cache_hits = [False] * len(filepaths)
            return result
        pairs, keys, hits = self._lookup("GetGOP", filepaths, frame_ids, fastStreamInfos, False)
        if not pairs:
            return np.zeros(0, np.uint8), [], []
        if all(hits):
            entries = [self._cached(k) for k in keys]
        else:
            self._most("GetGOP", len(pairs), MAX_FILES, "files to fetch")
            entries = [self._remember(k, b, False) for k, b in zip(keys, self._source.extract(pairs))]
        return _merge_entries(entries)

    def GetGOPList(self, filepaths: Sequence[str], frame_ids: Sequence[int],
                   fastStreamInfos: Sequence[FastStreamInfo] = (), useGOPCache: bool = False,
                   enable_gop_dependency_graph_optimization: bool = False,
                   ) -> list[tuple[np.ndarray, list[int], list[int]]]:
        """:meth:`PyNvGopDecoder.GetGOPList`, fetching only the files that miss the cache (``useGOPCache``).

        As in accvlab, a cached GOP serves only calls with the ``enable_gop_dependency_graph_optimization``
        it was fetched with (the flag changes nothing else here), and ``maxfiles`` limits the files
        that miss, the ones fetched.
        """
        method = "GetGOPList"
        use = flag(method, "useGOPCache", useGOPCache)
        graph = flag(method, "enable_gop_dependency_graph_optimization", enable_gop_dependency_graph_optimization)
        if not use:
            result = super().GetGOPList(filepaths, frame_ids, fastStreamInfos, graph)
            self._last_cache_hits = [False] * len(filepaths)
            return result
        pairs, keys, hits = self._lookup(method, filepaths, frame_ids, fastStreamInfos, graph)
        misses = [i for i, h in enumerate(hits) if not h]
        self._most(method, len(misses), MAX_FILES, "files to fetch")
        entries: list[tuple[np.ndarray, int, int, bool] | None] = [self._cached(k) if h else None
                                                                    for k, h in zip(keys, hits)]
        if misses:
            fetched = self._source.extract([pairs[i] for i in misses])
            for i, bundle in zip(misses, fetched):
                entries[i] = self._remember(keys[i], bundle, graph)
        return [(packets, [first], [count]) for packets, first, count, _ in entries]  # type: ignore[misc]

    @property
    def _decoder(self) -> _Uncached:
        """This decoder without its GOP cache, as accvlab's ``CachedGopDecoder._decoder`` (the
        ``PyNvGopDecoder`` it wraps): ``decoder._decoder.GetGOPList(...)`` neither reads nor fills the
        cache, nor changes :meth:`isCacheHit`. The same engine runs both."""
        return _Uncached(self)

    def isCacheHit(self) -> list[bool]:
        """Per file of the last ``GetGOP`` / ``GetGOPList`` call, whether it came from the cache
        (all ``False`` when that call did not use the cache; empty before the first call)."""
        return list(self._last_cache_hits)

    def get_cache_info(self) -> dict[str, Any]:
        """``cache_capacity`` (also as ``max_cached_files``), ``cached_files_count`` and, per cached file
        path, its GOP's ``first_frame_id``, ``gop_len``, ``frame_range`` (first, last) and
        ``packets_size_bytes``."""
        return {
            "cache_capacity": self.max_cached_files,
            "cached_files_count": len(self._gop_cache),
            "max_cached_files": self.max_cached_files,
            "cached_files": {
                path: {"first_frame_id": first, "gop_len": count, "frame_range": (first, first + count - 1),
                       "packets_size_bytes": int(packets.nbytes)}
                for path, (packets, first, count, _) in self._gop_cache.items()
            },
        }

    def clear_cache(self) -> None:
        """Drop every cached GOP."""
        self._gop_cache.clear()


def _merge_entries(entries: Sequence[tuple[np.ndarray, int, int, bool]]) -> tuple[np.ndarray, list[int], list[int]]:
    packets = entries[0][0] if len(entries) == 1 else np.concatenate([e[0] for e in entries])
    return packets, [e[1] for e in entries], [e[2] for e in entries]


class _Uncached:
    """``CachedGopDecoder._decoder``: the methods and attributes of :class:`PyNvGopDecoder`, run on the
    cached decoder itself (its engine and state), without the cache of its ``GetGOP`` / ``GetGOPList``."""

    __slots__ = ("_owner",)

    def __init__(self, owner: CachedGopDecoder) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            try:
                attr = inspect.getattr_static(PyNvGopDecoder, name)
            except AttributeError:
                if name in vars(self._owner):  # maxfiles
                    return vars(self._owner)[name]
            else:
                return attr.__get__(self._owner, PyNvGopDecoder) if hasattr(attr, "__get__") else attr
        raise AttributeError(f"{type(self._owner).__name__}._decoder has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(n for n in {*dir(PyNvGopDecoder), *vars(self._owner)} if not n.startswith("_"))

    def __repr__(self) -> str:
        return f"<uncached view of {self._owner!r}>"


def _cache_capacity(gop_cache_capacity: Any, max_cached_files: Any) -> int | None:
    """The cache bound given under accvlab's name (``gopCacheCapacity``) or this layer's, checked; ``None``
    when neither is given."""
    if gop_cache_capacity is not None:
        if isinstance(gop_cache_capacity, bool) or not isinstance(gop_cache_capacity, int):
            raise InvalidRequestError(f"gopCacheCapacity must be a positive integer or None, not "
                                      f"{type(gop_cache_capacity).__name__} ({gop_cache_capacity!r})")
        if gop_cache_capacity < 1:
            raise InvalidRequestError(f"gopCacheCapacity: {CACHE_CAPACITY_POSITIVE}, not {gop_cache_capacity}")
    if max_cached_files is not None:
        positive("max_cached_files", max_cached_files)
        if gop_cache_capacity is not None and gop_cache_capacity != max_cached_files:
            raise InvalidRequestError(f"gopCacheCapacity={gop_cache_capacity} and max_cached_files={max_cached_files} "
                                      "name the same bound: give one")
        return max_cached_files
    return gop_cache_capacity


def CreateGopDecoder(maxfiles: int, iGpu: int = 0, suppressNoColorRangeWarning: bool = False,
                     gopCacheCapacity: int | None = None, *, device: Device = "auto",
                     max_cached_files: int | None = None) -> CachedGopDecoder:
    """A :class:`CachedGopDecoder`: a :class:`PyNvGopDecoder` with a cache of GOP data.

    Example:
        >>> decoder = CreateGopDecoder(maxfiles=3, iGpu=0)
        >>> packets, fids, glens = decoder.GetGOP(["v0.mp4"], [10], useGOPCache=True)   # demuxes
        >>> packets, fids, glens = decoder.GetGOP(["v0.mp4"], [15], useGOPCache=True)   # same GOP: cached

    Args:
        maxfiles, iGpu, suppressNoColorRangeWarning, device: As for :class:`PyNvGopDecoder`.
        gopCacheCapacity: Files whose GOP the cache keeps, at most (default ``4 * maxfiles``); the
            least recently used file goes first. Only calls with ``useGOPCache=True`` use the cache.
        max_cached_files: The same bound under this layer's earlier name (give one of the two).

    Raises:
        InvalidRequestError: a capacity that is not a positive int (accvlab: "cache_capacity must be
            positive"), or two different ones.
    """
    return CachedGopDecoder(maxfiles, iGpu, suppressNoColorRangeWarning, gopCacheCapacity, device=device,
                            max_cached_files=max_cached_files, _key=_CREATION_KEY)

