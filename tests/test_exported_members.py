"""The public surface is curated: this list changes only on purpose."""

import subprocess
import sys

import asyncdecode


def test_exported_members():
    assert asyncdecode.__all__ == sorted(asyncdecode.__all__)
    assert asyncdecode.__all__ == [
        "AsyncDecodeError", "BackendUnavailableError", "CorruptDataError", "DeviceMemoryError", "Engine",
        "EngineClosedError", "EngineConfig", "EngineState", "Frame", "FrameIndexError", "GopStore", "IngestStream",
        "InvalidRequestError", "OutputSpec", "SharedBundle", "SharedGopCache", "StaleStoreError", "SyncEngine",
        "TruncatedStreamError", "UnsupportedStreamError", "VideoInfo", "VideoOpenError", "drop_page_cache", "probe",
    ]
    for name in asyncdecode.__all__:
        assert getattr(asyncdecode, name).__module__.startswith("asyncdecode")


def test_import_is_cheap():
    """No decoder library, no CUDA initialisation and no thread at import time."""
    code = (
        "import sys, threading, asyncdecode, asyncdecode.gop, asyncdecode.errors;"
        "assert 'PyNvVideoCodec' not in sys.modules;"
        "import torch; assert not torch.cuda.is_initialized();"
        "assert threading.active_count() == 1, threading.enumerate()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
