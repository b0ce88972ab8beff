"""GOP bundles: extraction, the binary format, zero-copy reads, and corruption."""

from __future__ import annotations

import mmap
import random

import numpy as np
import pytest

from asyncdecode import CorruptDataError, FrameIndexError, VideoOpenError, probe
from asyncdecode._backends.cpu import CpuBackend
from asyncdecode.gop import FLAG_KEY, GopBundle, extract_gops
from reference import reference_frames


@pytest.fixture(scope="module")
def bundle(assets):
    return extract_gops(assets["h264_bframes"], [17])[0]


def test_extract_one_bundle_per_frame_shared_within_a_gop(assets):
    path = assets["h264_bframes"]
    info = probe(path)
    bundles = extract_gops(path, [17, 40, 13, 0])
    assert [b.first_frame_id for b in bundles] == [12, 36, 12, 0]
    assert bundles[0] is bundles[2]
    for b, fid in zip(bundles, [17, 40, 13, 0]):
        assert fid in b.frame_ids
        assert b.frame_count == info.gop_lengths[info.gop_of(fid)]
        assert b.packets["flags"][0] & FLAG_KEY
        assert (b.codec, b.width, b.height, b.pix_fmt) == ("h264", info.width, info.height, info.pix_fmt)
        assert bytes(b.packet(0)[:4]) in (b"\x00\x00\x00\x01", b"\x00\x00\x01\x06"[:4]) or \
            bytes(b.packet(0)[:3]) == b"\x00\x00\x01"  # Annex B


def test_extract_errors(assets, tmp_path):
    with pytest.raises(FrameIndexError, match=r"frame 48 out of range .* \(0\.\.47\)"):
        extract_gops(assets["h264_bframes"], [48])
    with pytest.raises(VideoOpenError):
        extract_gops(tmp_path / "missing.mp4", [0])


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "numpy", "mmap"])
def test_round_trip_is_zero_copy(bundle, kind, tmp_path):
    data = bundle.to_bytes()
    if kind == "bytearray":
        buf = bytearray(data)
    elif kind == "memoryview":
        buf = memoryview(data)
    elif kind == "numpy":
        buf = np.frombuffer(data, np.uint8).copy()
    elif kind == "mmap":
        f = tmp_path / "b.bin"
        f.write_bytes(data)
        with open(f, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    else:
        buf = data
    back = GopBundle.from_buffer(buf)
    assert back.to_bytes() == data
    assert (back.first_frame_id, back.frame_count, back.codec, back.source) == (
        bundle.first_frame_id, bundle.frame_count, bundle.codec, bundle.source)
    np.testing.assert_array_equal(back.packets, bundle.packets)
    assert [bytes(p) for p in back] == [bytes(p) for p in bundle]
    if kind in ("bytearray", "numpy"):  # views, not copies: a write to the buffer shows through
        off = len(data) - 8 - len(bundle.payload)
        mv = memoryview(buf).cast("B")
        old = mv[off]
        mv[off] = (old + 1) % 256
        assert back.payload[0] == (old + 1) % 256
        mv[off] = old
    if kind == "mmap":
        del back
        buf.close()


def test_round_trip_decodes_identically(assets, bundle):
    back = GopBundle.from_buffer(bytearray(bundle.to_bytes()))
    s = CpuBackend().new_session()
    try:
        a = s.decode(bundle, [17, 20], None, lambda: False).frames
        b = s.decode(back, [17, 20], None, lambda: False).frames
    finally:
        s.close()
    ref = reference_frames(assets["h264_bframes"])
    for fid in (17, 20):
        for x, y, r in zip(a[fid], b[fid], ref[fid].planes):
            assert np.array_equal(x.numpy(), r) and np.array_equal(y.numpy(), r)


def test_every_truncation_is_detected(bundle):
    data = bundle.to_bytes()
    for n in list(range(0, 64)) + random.Random(0).sample(range(64, len(data)), 200) + [len(data) - 1]:
        with pytest.raises(CorruptDataError):
            GopBundle.from_buffer(data[:n])
    with pytest.raises(CorruptDataError, match="trailing"):
        GopBundle.from_buffer(data + b"\0")


def test_every_bit_flip_is_detected(bundle):
    data = bytearray(bundle.to_bytes())
    rng = random.Random(1)
    positions = list(range(0, 48)) + rng.sample(range(len(data)), 300) + list(range(len(data) - 8, len(data)))
    for pos in positions:
        bit = 1 << rng.randrange(8)
        data[pos] ^= bit
        with pytest.raises(CorruptDataError):
            GopBundle.from_buffer(data)
        data[pos] ^= bit
    GopBundle.from_buffer(data)  # restored


def test_not_a_bundle(bundle):
    with pytest.raises(CorruptDataError, match="not a GOP bundle"):
        GopBundle.from_buffer(b"x" * 100)
    data = bytearray(bundle.to_bytes())
    data[8] = 99  # version
    with pytest.raises(CorruptDataError, match="version 99"):
        GopBundle.from_buffer(data)


def test_repr_names_the_frames(bundle):
    r = repr(bundle)
    assert "frames 12..23" in r and "h264" in r
