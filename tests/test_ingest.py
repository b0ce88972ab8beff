"""Streaming ingestion: MPEG-TS, fragmented MP4 and Annex B streams fed as chunks, decoded as they arrive."""

from __future__ import annotations

import asyncio
import gc
import io
import pathlib
import random
import threading
import zlib

import av
import numpy as np
import pytest
import torch

from asyncdecode import (CorruptDataError, Engine, EngineClosedError, EngineConfig, Frame, InvalidRequestError,
                         SyncEngine, TruncatedStreamError, VideoOpenError, probe)
from asyncdecode._annexb import OrderTracker
from asyncdecode._ingest_gops import GopCutter, Packet
from asyncdecode._ingest_source import Framing, sniff
from asyncdecode.testing import VideoSpec, make_video, remux_video

FORMATS = ["ts", "fmp4", "annexb"]
NAMES = ["h264_bframes", "hevc_open", "h264_open", "h264_vargop"]
_BSF = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}


def as_stream(src: pathlib.Path, fmt: str, root: pathlib.Path) -> pathlib.Path:
    """``src`` (an MP4 asset) as MPEG-TS, fragmented MP4 or an Annex B elementary stream."""
    codec = probe(src).codec
    dst = root / f"{src.stem}.{ {'ts': 'ts', 'fmp4': 'frag.mp4', 'annexb': codec}[fmt] }"
    if not dst.exists():
        remux_video(src, dst, fmt)
    return dst


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    root = tmp_path_factory.mktemp("streams")
    return lambda src, fmt: as_stream(src, fmt, root)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """360 frames: long enough that a stalled consumer leaves most of it unread."""
    return make_video(tmp_path_factory.mktemp("long") / "long.mp4", VideoSpec(num_frames=360, gop=12, bframes=2))


@pytest.fixture(scope="module")
def truth(assets, long_video):
    async def load():
        async with Engine(device="cpu", config=EngineConfig(decoder_threads=2)) as eng:
            out = {n: await eng.decode(assets[n], list(range(probe(assets[n]).num_frames))) for n in NAMES}
            out["long"] = await eng.decode(long_video, list(range(360)))
            return out

    return asyncio.run(load())


async def chunks(data: bytes, *, seed: int = 0, max_size: int = 5000, fail: BaseException | None = None,
                 log: list[int] | None = None):
    """``data`` in random-size chunks, yielding to the loop between them; then ``fail`` is raised."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_size)
        if log is not None:
            log.append(pos + size)
        yield data[pos : pos + size]
        pos += size
        await asyncio.sleep(0)
    if fail is not None:
        raise fail


def _same(got: list[Frame], want: list[torch.Tensor]) -> bool:
    return all(f.index == i and torch.equal(f.tensor, want[i]) for i, f in enumerate(got))


# -- frames equal file decoding ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", NAMES)
async def test_ingest_equals_file_decoding(assets, streams, truth, name, fmt):
    path = streams(assets[name], fmt)
    info = probe(assets[name])
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=2)) as eng:
        ingest = eng.ingest(chunks(path.read_bytes(), seed=zlib.crc32(f"{name}/{fmt}".encode())))
        got = [frame async for frame in ingest]
        stats = eng.stats()
    assert len(got) == info.num_frames
    assert _same(got, truth[name])
    t0 = got[0].pts_seconds
    if fmt == "annexb":  # no timestamps in the stream: index / frame rate (25 here)
        assert [f.pts_seconds for f in got] == pytest.approx([i / 25 for i in range(len(got))])
    else:  # the container's times, shifted by the container's start
        start = info.pts_seconds_of(0)
        assert [f.pts_seconds - t0 for f in got] == pytest.approx(
            [info.pts_seconds_of(i) - start for i in range(len(got))], abs=1e-6)
    # one decode per frame; an open GOP also decodes the next keyframe once for its leading pictures
    assert stats["frames_returned"] == info.num_frames
    assert info.num_frames <= stats["frames_decoded"] <= info.num_frames + len(info.keyframes)
    assert ingest.stats()["gops"] == len(info.keyframes)


@pytest.mark.parametrize("kind", ["path", "file", "chunk list", "stream reader"])
async def test_sources(assets, streams, truth, kind):
    path = streams(assets["h264_bframes"], "ts")
    data = path.read_bytes()
    async with Engine(device="cpu") as eng:
        if kind == "path":
            source = path
        elif kind == "file":
            source = io.BytesIO(data)
        elif kind == "chunk list":
            source = [data[i : i + 777] for i in range(0, len(data), 777)]
        else:
            source = asyncio.StreamReader()
            source.feed_data(data)
            source.feed_eof()
        got = [frame async for frame in eng.ingest(source)]
    assert len(got) == len(truth["h264_bframes"]) and _same(got, truth["h264_bframes"])


def test_sync_engine_ingest(assets, streams, truth):
    path = streams(assets["hevc_open"], "annexb")
    data = path.read_bytes()
    with SyncEngine(device="cpu") as eng:
        got = list(eng.ingest(str(path), format="hevc"))
        frames = eng.ingest([data[i : i + 500] for i in range(0, len(data), 500)])
        first = next(frames)
        frames.close()  # leaving early closes the stream on the engine's loop
        assert not [t for t in threading.enumerate() if t.name == "asyncdecode-ingest"]
    assert _same(got, truth["hevc_open"]) and len(got) == len(truth["hevc_open"])
    assert first.index == 0 and torch.equal(first.tensor, truth["hevc_open"][0])


# -- bounded buffering ------------------------------------------------------------------------------


async def test_slow_consumer_bounds_buffering(long_video, streams, truth):
    data = streams(long_video, "ts").read_bytes()
    pulled: list[int] = []
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=2)) as eng:
        ingest = eng.ingest(chunks(data, max_size=2000, log=pulled), buffer_bytes=8192, gops_ahead=1)
        frames = aiter(ingest)
        got = [await anext(frames)]
        await asyncio.sleep(0.3)  # a consumer busy elsewhere: the producer must be held back
        stalled = ingest.stats()
        assert pulled[-1] < len(data) / 2, (pulled[-1], len(data), stalled)
        assert pulled[-1] - stalled["bytes_read"] <= 8192 + 2000
        assert stalled["producer_waits"] > 0
        assert stalled["buffer_peak_bytes"] <= 8192
        assert stalled["gops_in_flight"] <= 1
        got += [frame async for frame in frames]
    assert len(got) == len(truth["long"]) and _same(got, truth["long"])


async def test_first_frames_come_before_their_gop_is_decoded(long_video, streams, truth):
    """A GOP is decoded in parts, each going on from the last: its first frames are out early."""
    data = streams(long_video, "fmp4").read_bytes()
    async with Engine(device="cpu", config=EngineConfig(decoder_threads=1)) as eng:
        frames = aiter(eng.ingest(chunks(data), gops_ahead=1))
        first = await anext(frames)
        at_first = eng.stats()
        rest = [frame async for frame in frames]
        stats = eng.stats()
    assert first.index == 0 and torch.equal(first.tensor, truth["long"][0]) and len(rest) == 359
    assert at_first["frames_returned"] < 12  # less than the first GOP
    assert stats["frames_decoded"] == stats["frames_returned"] == 360  # still one decode per frame


# -- truncated streams ------------------------------------------------------------------------------


async def _ingest_all(eng, source, **kw):
    got, error = [], None
    try:
        async for frame in eng.ingest(source, **kw):
            got.append(frame)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        error = exc
    return got, error


def _slices(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the coded-slice NAL units (H.264 types 1 and 5) of an Annex B stream."""
    starts, i = [], 0
    while (j := data.find(b"\x00\x00\x01", i)) >= 0:
        starts.append(j + 3)
        i = j + 3
    ends = [s - 3 for s in starts[1:]] + [len(data)]
    return [(s, e) for s, e in zip(starts, ends) if data[s] & 0x1F in (1, 5)]


@pytest.mark.parametrize("fmt", ["ts", "fmp4", "annexb"])
async def test_stream_cut_inside_a_packet(assets, streams, truth, fmt):
    """TS cut inside a TS packet, MP4 inside a sample, Annex B in the middle of a picture's slice (which
    FFmpeg rejects, or conceals and flags: see the next test). Not at a fixed share of an Annex B
    stream: the encoder's output varies between processes, and a cut in a slice's first or last few
    bytes can decode without any sign of damage (see the README on raw streams)."""
    data = streams(assets["h264_bframes"], fmt).read_bytes()
    cut = int(len(data) * 0.6)
    if fmt == "ts":
        cut = cut // 188 * 188 + 100
    if fmt == "annexb":
        start, end = next((s, e) for s, e in _slices(data) if s >= cut and e - s >= 32)
        cut = (start + end) // 2
    async with Engine(device="cpu") as eng:
        got, error = await _ingest_all(eng, chunks(data[:cut]))
        stats = eng.stats()
    assert isinstance(error, TruncatedStreamError), (error, len(got), [f.index for f in got][-6:], cut, len(data),
                                                     {k: v for k, v in stats.items() if "ingest" in k or "frames" in k})
    assert 12 <= len(got) < 48 and _same(got, truth["h264_bframes"])
    assert error.frame_id == len(got) and "<stream>" in str(error)
    assert f"0..{len(got) - 1} were delivered" in str(error)


def _ffmpeg_conceals(data: bytes) -> bool:
    """Whether FFmpeg, asked to fail on damage (``err_detect=explode``), decodes this H.264 Annex B
    stream without an error but with a frame flagged corrupt (concealed)."""
    container = av.open(io.BytesIO(data), format="h264")
    ctx = av.CodecContext.create("h264", "r")
    ctx.options = {"err_detect": "explode"}
    ctx.thread_count = 1
    ctx.open()
    corrupt = False
    try:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                corrupt |= any(f.is_corrupt for f in ctx.decode(packet))
        corrupt |= any(f.is_corrupt for f in ctx.decode(None))
    except av.error.FFmpegError:
        return False
    finally:
        container.close()
    return corrupt


async def test_annexb_cut_inside_a_picture_ffmpeg_conceals_ends_the_stream(assets, streams, truth):
    """An Annex B stream has no framing: a cut inside a picture shows only when that picture does not
    decode. About 1% of the cuts inside a slice FFmpeg conceals instead of failing (the slice's data
    ends early but cleanly) and flags the frame corrupt: such a frame ends the stream with
    ``TruncatedStreamError`` like a rejected one, and never comes out. The test finds such cuts (60
    places in each slice from 30% of the stream on; the encoder's output, and so the places, vary
    between processes) and ingests the stream cut there, and at a few cuts FFmpeg rejects."""
    data = streams(assets["h264_bframes"], "annexb").read_bytes()
    cuts = [cut for start, end in _slices(data) if start >= len(data) * 0.3
            for cut in range(start + 1, end, max(1, (end - start) // 60))]
    concealed = [cut for cut in cuts if _ffmpeg_conceals(data[:cut])]
    assert concealed, f"no cut of {len(cuts)} concealed: nothing to test (the stream is {len(data)} bytes)"
    async with Engine(device="cpu") as eng:
        for cut in concealed[:4] + cuts[:: max(1, len(cuts) // 4)]:
            got, error = await _ingest_all(eng, chunks(data[:cut]))
            assert isinstance(error, TruncatedStreamError), (cut, error, len(got))
            assert _same(got, truth["h264_bframes"]) and error.frame_id == len(got), cut


@pytest.mark.parametrize("fmt", FORMATS)
async def test_source_failing_mid_stream(assets, streams, truth, fmt):
    data = streams(assets["hevc_open"], fmt).read_bytes()
    reset = ConnectionResetError("peer went away")
    async with Engine(device="cpu") as eng:
        got, error = await _ingest_all(eng, chunks(data[: int(len(data) * 0.7)], fail=reset))
    assert isinstance(error, TruncatedStreamError) and error.__cause__ is reset
    assert 12 <= len(got) < 48 and _same(got, truth["hevc_open"])
    assert error.frame_id == len(got) and "peer went away" in str(error)


async def test_source_failing_before_the_stream_opens():
    async def failing():
        yield b"\x47" + bytes(187)
        raise ConnectionResetError("gone")

    async with Engine(device="cpu") as eng:
        got, error = await _ingest_all(eng, failing())
    assert got == [] and isinstance(error, TruncatedStreamError) and isinstance(error.__cause__, ConnectionResetError)


# -- lifetime ---------------------------------------------------------------------------------------


async def test_leaving_early_stops_the_source_and_the_thread(long_video, streams):
    data = streams(long_video, "ts").read_bytes()
    closed = asyncio.Event()

    async def source():
        try:
            async for chunk in chunks(data, max_size=1000):
                yield chunk
        finally:
            closed.set()

    async with Engine(device="cpu") as eng:
        async with eng.ingest(source(), buffer_bytes=4096, gops_ahead=1) as ingest:
            async for frame in ingest:
                if frame.index == 5:
                    break
        assert closed.is_set()
        assert not [t for t in threading.enumerate() if t.name == "asyncdecode-ingest"]
        # dropping an unfinished stream without closing it stops it too
        ingest = eng.ingest(chunks(data, max_size=1000), buffer_bytes=4096, gops_ahead=1)
        await anext(aiter(ingest))
        del ingest
        gc.collect()
        for _ in range(100):  # the stream's finalizer runs on the loop's next turns
            if not [t for t in threading.enumerate() if t.name == "asyncdecode-ingest"] \
                    and eng.stats()["requests_in_flight"] == 0:
                break
            await asyncio.sleep(0.02)
        assert not [t for t in threading.enumerate() if t.name == "asyncdecode-ingest"]
        assert eng.stats()["requests_in_flight"] == 0
        assert (await eng.decode(long_video, [100]))[0].shape == (96, 160, 3)  # the engine goes on


async def test_engine_closed_during_ingest(long_video, streams):
    data = streams(long_video, "ts").read_bytes()
    eng = Engine(device="cpu")
    async with eng:
        ingest = eng.ingest(chunks(data, max_size=1000), buffer_bytes=4096, gops_ahead=1)
        frames = aiter(ingest)
        await anext(frames)
    with pytest.raises(EngineClosedError):
        async for _ in frames:  # frames decoded before the close may still come, then the error
            pass
    with pytest.raises(EngineClosedError):
        eng.ingest(io.BytesIO(data))


# -- bad input ---------------------------------------------------------------------------------------


async def test_bad_streams_and_arguments(assets):
    async with Engine(device="cpu") as eng:
        _, error = await _ingest_all(eng, chunks(b""))
        assert isinstance(error, VideoOpenError) and "empty" in str(error)
        _, error = await _ingest_all(eng, io.BytesIO(np.random.default_rng(3).bytes(50_000)))
        assert isinstance(error, (VideoOpenError, CorruptDataError))

        async def text():
            yield "not bytes"

        _, error = await _ingest_all(eng, text())
        assert isinstance(error, InvalidRequestError) and "bytes" in str(error)
        for bad in (b"raw bytes", 42):
            with pytest.raises(InvalidRequestError):
                eng.ingest(bad)
        with pytest.raises(InvalidRequestError):
            eng.ingest(io.BytesIO(b""), format="no-such-format")
        with pytest.raises(InvalidRequestError):
            eng.ingest(io.BytesIO(b""), gops_ahead=0)
        assert (await eng.decode(assets["h264_nob"], [3]))[0].shape == (96, 160, 3)


# -- the parts ---------------------------------------------------------------------------------------


def _packets(orders: list[int], keys: set[int]) -> list[Packet]:
    return [Packet(b"", i in keys, o, i, True) for i, o in enumerate(orders)]


def test_cutter_open_gop_and_truncation():
    # decode order: I0 P4 B2 B1 B3 | CRA8 (leading 6 5 7) P12 B10 B9 B11 | I13
    orders = [0, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11, 13]
    cutter = GopCutter()
    cuts = [c for p in _packets(orders, {0, 5, 13}) for c in cutter.push(p)]
    cuts += cutter.finish(truncated=False)
    assert [[f for f, _ in c.frames] for c in cuts] == [list(range(8)), list(range(8, 13)), [13]]
    # the GOP before the CRA holds it (shows no frame of it) and its leading pictures
    assert [p.order for p in cuts[0].packets] == [0, 4, 2, 1, 3, 8, 6, 5, 7]
    assert cuts[0].frame_ids[5] == -1
    # cut after B2 of the second GOP: P12 is presented after frames that may be missing
    cutter = GopCutter()
    cuts = [c for p in _packets(orders[:11], {0, 5}) for c in cutter.push(p)]
    cuts += cutter.finish(truncated=True)
    # B10 is presented after B9, which may be missing: only the CRA of the second GOP is certain
    assert [[f for f, _ in c.frames[: c.wanted]] for c in cuts] == [list(range(8)), [8]]
    assert cutter.next_frame == 9


def test_framing_tells_cut_containers():
    data = b"".join(len(body).to_bytes(4, "big") + b"moof" + body[8:] for body in (bytes(20), bytes(300)))
    for split in (1, 3, 9, 200):
        framing = Framing("mp4", data[:64])
        for i in range(0, len(data), split):
            framing.feed(data[i : i + split])
        assert framing.complete()
        cut = Framing("mp4", data[:64])
        cut.feed(data[:-5])
        assert not cut.complete()
    ts = Framing("mpegts", (b"\x47" + bytes(187)) * 3)
    ts.feed(bytes(188 * 3))
    assert ts.complete()
    ts.feed(bytes(5))
    assert not ts.complete()


@pytest.mark.parametrize("name", ["h264_bframes", "h264_nob", "hevc_open", "hevc_closed", "h264_vargop", "hevc_10bit"])
def test_picture_order_counts_give_presentation_order(assets, name):
    with av.open(str(assets[name])) as inp:
        stream = inp.streams.video[0]
        bsf = av.bitstream.BitStreamFilterContext(_BSF[stream.codec_context.name], stream)
        pts, orders = [], []
        tracker = OrderTracker(stream.codec_context.name)
        for packet in inp.demux(stream):
            if packet.size:
                pts.append(packet.pts)
                orders.append(tracker.order(b"".join(bytes(p) for p in bsf.filter(packet)))[0])
    assert np.argsort(pts, kind="stable").tolist() == np.argsort(orders, kind="stable").tolist()


def test_sniffing(assets, streams):
    codecs = {"h264_bframes": "h264", "hevc_open": "hevc"}
    for name, codec in codecs.items():
        for fmt, want in (("ts", "mpegts"), ("fmp4", "mp4"), ("annexb", codec)):
            assert sniff(streams(assets[name], fmt).read_bytes()[:1024]) == want
    assert sniff(b"hello world" * 10) is None


# -- NVDEC -------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("fmt", FORMATS)
async def test_ingest_on_nvdec_equals_decoding_by_id(tmp_path, fmt):
    src = make_video(tmp_path / "nv.mp4", VideoSpec(codec="hevc", width=256, height=160, num_frames=48, gop=12,
                                                     bframes=3, open_gop=True))
    data = as_stream(src, fmt, tmp_path).read_bytes()
    async with Engine(device="cuda") as eng:
        want = await eng.decode(src, list(range(48)))
        got = [frame async for frame in eng.ingest(chunks(data))]
    assert len(got) == 48 and got[0].tensor.device.type == "cuda"
    assert _same(got, want)
