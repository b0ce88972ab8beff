"""GOP assembly, for streaming ingestion (:mod:`._ingest`): a stream's packets cut into GOPs.

In: the packets of a stream in decode order (:class:`Packet`: data, keyframe or not, a presentation
order key), as the demuxer reads them (:mod:`._ingest_demux`). Out: one :class:`Cut` per GOP, as soon
as it is complete, with the frame id each packet shows; the demuxer turns each into a
:class:`BundledGop`, the GOP as the decoders take it.

A GOP is cut at the next keyframe that is presented after every frame received so far; the leading
pictures of that keyframe (decoded after it, presented before it: open GOPs) still belong to the GOP
before it, so a GOP is complete when the first packet presented after the new keyframe arrives, or at
the end of the stream. Frame ids and the GOP table come out the same as
:func:`~asyncdecode.media.build_index` makes them for a file.

When a stream is cut short, only the frames whose place in presentation order is certain are
delivered (:meth:`GopCutter.finish`, :func:`without_last`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .gop import GopBundle

__all__ = ["BundledGop", "Cut", "GopCutter", "Packet", "without_last"]


@dataclass
class Packet:
    """One packet of the stream's video, in Annex B for H.264/HEVC."""

    data: bytes
    key: bool
    order: int
    """Presentation order key: the pts for containers, a POC-based key for raw streams."""
    dts: int
    shown: bool
    gap: bool = False
    """On a keyframe: leaving one of its leading pictures out of its GOP leaves a gap the decoder sees
    (:data:`~asyncdecode.gop.FLAG_GAP`)."""


@dataclass
class Cut:
    """One GOP: its packets in decode order, the frame id each shows (-1: none of this GOP's), and
    its frames in presentation order as ``(frame id, packet)``; ``wanted`` of them are delivered."""

    packets: list[Packet]
    frame_ids: list[int]
    frames: list[tuple[int, Packet]]
    wanted: int


class GopCutter:
    """Cuts a stream's packets, fed in decode order, into GOPs as soon as each is complete.

    In: packets through :meth:`push`, then :meth:`finish` at the end of the stream; ``leaves_gap``
    tells whether leaving a packet out leaves a gap the decoder sees (the codec's business). Out: the
    GOPs each completes, in order, numbered on from ``next_frame``.
    """

    def __init__(self, *, reordered: bool = False,
                 leaves_gap: Callable[[Packet], bool] = lambda p: False) -> None:
        self._cur: list[Packet] | None = None
        self._leaves_gap = leaves_gap  # asked of leading pictures only (they are left out): see Packet.gap
        self._cur_key = 0
        self._cur_max = 0
        self._closing: tuple[Packet, list[Packet]] | None = None
        self._max_order: int | None = None
        self.reordered = reordered
        """The stream reorders pictures (B-frames): its headers say so, or a packet was presented before
        one decoded earlier."""
        self.next_frame = 0
        self.skipped = 0
        """Packets left out: before the first keyframe, or presented before it (not decodable)."""

    def push(self, p: Packet) -> list[Cut]:
        if self._max_order is not None and p.order < self._max_order:
            self.reordered = True
        self._max_order = p.order if self._max_order is None else max(self._max_order, p.order)
        if self._cur is None:
            if p.key:
                self._cur, self._cur_key, self._cur_max = [p], p.order, p.order
            else:
                self.skipped += 1
            return []
        out = []
        if self._closing is not None:
            key, lead = self._closing
            if p.order < key.order:  # a leading picture of the new keyframe: the GOP before it
                key.gap = key.gap or self._leaves_gap(p)
                if p.order > self._cur_key:
                    lead.append(p)
                else:
                    self.skipped += 1
                return out
            out.append(self._cut(self._cur + ([key] + lead if lead else []), key))
            self._cur, self._cur_key, self._cur_max, self._closing = [key], key.order, key.order, None
        if p.key and p.order > self._cur_max:
            self._closing = (p, [])
        elif p.order < self._cur_key:
            self.skipped += 1  # presented before the GOP's keyframe: only the first one has such packets
        else:
            self._cur.append(p)
            self._cur_max = max(self._cur_max, p.order)
        return out

    def finish(self, *, truncated: bool) -> list[Cut]:
        """The GOPs left at the end of the stream. ``truncated``: more packets were coming, so only the
        frames whose place in presentation order is certain are wanted (see :meth:`_certain`)."""
        if self._cur is None:
            return []
        tail = self._cur + (([self._closing[0]] + self._closing[1]) if self._closing else [])
        cuts = []
        if self._closing is not None:
            key, lead = self._closing
            cuts.append(self._cut(self._cur + ([key] + lead if lead else []), key))
            self._cur, self._cur_key, self._closing = [key], key.order, None
        cuts.append(self._cut(self._cur, None))
        self._cur = None
        if truncated:
            certain = self._certain(tail)
            out = []
            for cut in cuts:
                cut.wanted = 0
                while cut.wanted < len(cut.frames) and id(cut.frames[cut.wanted][1]) in certain:
                    cut.wanted += 1
                if cut.wanted:
                    out.append(cut)
                if cut.wanted < len(cut.frames):
                    self.next_frame = cut.frames[cut.wanted][0]  # the first frame not delivered
                    break
            cuts = out
        return [c for c in cuts if c.frames]

    def _certain(self, tail: list[Packet]) -> set[int]:
        """Packets of ``tail`` (decode order) after which no missing packet can be presented.

        Without reordering every one. With it, a packet is certain once a later one (in decode order)
        is presented after it: the pictures shown before a reference picture are coded before the
        next picture shown after it, in every B-frame structure encoders make.
        """
        if not self.reordered:
            return {id(p) for p in tail}
        certain, later = set(), None
        for p in reversed(tail):
            if later is not None and later > p.order:
                certain.add(id(p))
            later = p.order if later is None else max(later, p.order)
        return certain

    def _cut(self, packets: list[Packet], next_key: Packet | None) -> Cut:
        lo, hi = self._cur_key, None if next_key is None else next_key.order
        shown = sorted((p.order, i) for i, p in enumerate(packets)
                       if p.shown and p is not next_key and p.order >= lo and (hi is None or p.order < hi))
        frame_ids = [-1] * len(packets)
        frames = []
        for rank, (_, i) in enumerate(shown):
            frame_ids[i] = self.next_frame + rank
            frames.append((self.next_frame + rank, packets[i]))
        self.next_frame += len(shown)
        return Cut(packets, frame_ids, frames, len(frames))


@dataclass(frozen=True)
class BundledGop:
    """One GOP of an ingested stream, as the decoders take it (made by the ingest thread)."""

    bundle: GopBundle
    frames: list[tuple[int, float]]
    """Wanted frames in presentation order: ``(frame id, pts seconds)``."""
    tail: bool = False
    """The GOP holds the last packet of a stream without framing (see :func:`without_last`)."""
    reordered: bool = False
    """The stream reorders pictures (see :attr:`GopCutter.reordered`)."""


def without_last(gop: BundledGop) -> tuple[GopBundle, list[int]]:
    """The GOP without its last packet (decode order), and the ids of the frames that can still be
    delivered, in presentation order: up to the first that the packet showed or whose place is no
    longer certain."""
    bundle = gop.bundle
    n = len(bundle.packets) - 1
    table = bundle.packets[:n]
    order, fids = table["pts"].tolist(), table["frame_id"].tolist()
    certain, later = set(), None
    for i in range(n - 1, -1, -1):
        if not gop.reordered or (later is not None and later > order[i]):
            certain.add(fids[i])
        later = order[i] if later is None else max(later, order[i])
    kept = []
    for fid, _ in gop.frames:
        if fid not in certain:
            break
        kept.append(fid)
    if not kept:
        return bundle, []
    trimmed = GopBundle.build(
        codec=bundle.codec, width=bundle.width, height=bundle.height, pix_fmt=bundle.pix_fmt,
        bit_depth=bundle.bit_depth, color_space=bundle.color_space, color_range=bundle.color_range,
        time_base=bundle.time_base, first_frame_id=bundle.first_frame_id, frame_count=len(kept),
        source=bundle.source, stream_index=bundle.stream_index, extradata=bytes(bundle.extradata),
        packets=[bytes(bundle.packet(i)) for i in range(n)], pts=order, dts=table["dts"].tolist(),
        frame_ids=fids, flags=table["flags"].tolist())
    return trimmed, kept

