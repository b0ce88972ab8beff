"""asyncdecode.compat.accvlab as a module: its names, a cheap import, and the module-level helpers
(Codec, DropCacheStatus / drop_videos_cache, SavePacketsToFile)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import asyncdecode
import asyncdecode.compat.accvlab as nvc
from asyncdecode import CorruptDataError, VideoOpenError


def test_exported_names():
    assert nvc.__all__ == sorted(nvc.__all__)
    assert nvc.__all__ == [
        "CachedGopDecoder", "Codec", "CreateBatchAsyncGopDecoder", "CreateBatchAsyncStreamReader", "CreateGopDecoder",
        "CreateSampleReader", "DecodedFrameExt", "DropCacheStatus", "FastStreamInfo", "GetFastInitInfo", "GopRef",
        "PyNvBatchAsyncGopDecoder", "PyNvBatchAsyncStreamReader", "PyNvGopDecoder", "PyNvSampleReader", "RGBFrame",
        "SaveGopToFile", "SavePacketsToFile", "SharedGopStore", "__version__", "drop_videos_cache",
    ]
    for name in nvc.__all__:
        if name != "__version__":
            assert getattr(nvc, name).__module__.startswith("asyncdecode.compat")
    assert nvc.__version__ == asyncdecode.__version__


def test_import_is_cheap():
    """No decoder library, no CUDA initialisation and no thread when the layer is imported."""
    code = (
        "import sys, threading, asyncdecode, asyncdecode.compat.accvlab;"
        "assert 'PyNvVideoCodec' not in sys.modules;"
        "import torch; assert not torch.cuda.is_initialized();"
        "assert threading.active_count() == 1, threading.enumerate()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_codec_values():
    assert [(c.name, c.value) for c in nvc.Codec] == [("h264", 4), ("hevc", 8), ("av1", 11)]
    assert nvc.Codec(8) is nvc.Codec.hevc


def test_drop_videos_cache(assets, tmp_path):
    video_files = [str(assets["h264_nob"]), str(assets["h264_bframes"])]
    status = nvc.drop_videos_cache(video_files)
    if sys.platform.startswith("linux"):
        assert status == nvc.DropCacheStatus.SUCCESS
        assert nvc.drop_videos_cache([str(tmp_path / "missing.mp4"), *video_files]) \
            == nvc.DropCacheStatus.FILE_OPEN_FAILED
    else:
        assert status == nvc.DropCacheStatus.PLATFORM_ERROR
    assert [s.value for s in nvc.DropCacheStatus] == [0, 1, 2, 3, 4]


def test_save_packets_to_file_checks_the_data(assets, tmp_path):
    with nvc.PyNvGopDecoder(maxfiles=3, device="cpu") as decoder:
        files = [str(assets["h264_nob"]), str(assets["h264_bframes"]), str(assets["h264_vargop"])]
        packets, _, _ = decoder.GetGOP(files, [0, 10, 20])
        nvc.SavePacketsToFile(packets, tmp_path / "cached_packets.bin")
        assert (tmp_path / "cached_packets.bin").read_bytes() == packets.tobytes()
        nvc.SavePacketsToFile(packets.tobytes(), str(tmp_path / "again.bin"))  # bytes work too
        assert np.array_equal(decoder.LoadGops([str(tmp_path / "again.bin")]), packets)
    with pytest.raises(CorruptDataError, match="SavePacketsToFile"):
        nvc.SavePacketsToFile(np.arange(200, dtype=np.uint8), tmp_path / "junk.bin")
    with pytest.raises(CorruptDataError, match="empty"):
        nvc.SavePacketsToFile(np.zeros(0, np.uint8), tmp_path / "junk.bin")
    assert not (tmp_path / "junk.bin").exists()
    with pytest.raises(VideoOpenError, match="no_such_dir"):
        nvc.SavePacketsToFile(packets, tmp_path / "no_such_dir" / "x.bin")


def test_the_migration_example_runs(tmp_path):
    """examples/accvlab_migration.py, as a user runs it (CPU here): every workflow it shows completes."""
    example = Path(__file__).resolve().parent.parent / "examples" / "accvlab_migration.py"
    here = str(Path(nvc.__file__).resolve().parents[2])  # the asyncdecode this test imports
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("identical: True", "batch reader: 2 clips x 4 frames", "from the shared GOP store",
                 "error as accvlab raises it: FrameIndexError"):
        assert line in done.stdout, done.stdout
