"""The C parser callbacks for libnvcuvid (built with the machine's C compiler): what they record and
forward, checked here without a GPU by calling them the way NVIDIA's parser does."""

from __future__ import annotations

import ctypes as C
import shutil

import pytest

from asyncdecode._backends import _native
from asyncdecode._backends._cuvid import DisplayInfo

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")),
                                reason="no C compiler")

_DECODE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p)
_DISPLAY = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(DisplayInfo))


@pytest.fixture
def built(tmp_path, monkeypatch):
    """The callbacks built afresh into an empty cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lib = _native.load()
    made = list((tmp_path / "asyncdecode").glob("cuvid_callbacks-*.so"))
    assert len(made) == 1 and not list((tmp_path / "asyncdecode").glob(".build-*"))  # only the finished file
    return _native.Callbacks(C.cast(lib.ad_on_decode, C.c_void_p).value, C.cast(lib.ad_on_display, C.c_void_p).value)


def test_decode_callback_forwards_each_picture_and_keeps_the_first_failure(built):
    calls = []

    def decode(decoder, picture):  # stands in for cuvidDecodePicture
        calls.append((decoder, picture))
        return {7: 300, 8: 400}.get(picture, 0)

    fake = _DECODE(decode)
    shown = _native.Shown(decoder=1234, decode=C.cast(fake, C.c_void_p).value, capacity=_native.CAPACITY)
    on_decode = _DECODE(built.decode)
    user = C.addressof(shown)
    assert on_decode(user, 5) == 1 and shown.error == 0
    assert on_decode(user, 7) == 0 and shown.error == 300
    assert on_decode(user, 8) == 0 and shown.error == 300  # the first failure is the one reported
    assert calls == [(1234, 5), (1234, 7), (1234, 8)]


def test_display_callback_records_pictures_until_the_table_is_full(built):
    shown = _native.Shown(capacity=3)
    on_display = _DISPLAY(built.display)
    user = C.addressof(shown)
    for i in range(3):
        info = DisplayInfo(picture_index=i + 10, progressive_frame=i % 2, top_field_first=1, timestamp=1000 + i)
        assert on_display(user, C.pointer(info)) == 1
    assert [(p.pts, p.index, p.progressive, p.top_first) for p in shown.shown[:shown.count]] == \
        [(1000, 10, 0, 1), (1001, 11, 1, 1), (1002, 12, 0, 1)]
    assert on_display(user, None) == 1 and shown.count == 3  # end of stream: nothing to record
    assert on_display(user, C.pointer(DisplayInfo(timestamp=5))) == 0  # no room: an error, not an overwrite
    assert shown.error == -1 and shown.count == 3


def test_a_second_load_uses_the_built_library(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _native.load()
    (path,) = (tmp_path / "asyncdecode").glob("cuvid_callbacks-*.so")
    stamp = path.stat().st_mtime_ns
    _native.load()
    assert path.stat().st_mtime_ns == stamp


def test_no_compiler_or_switched_off_leaves_the_python_callbacks(tmp_path, monkeypatch):
    monkeypatch.setattr(_native, "reason", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(OSError, match="could not run"):
        _native.load()
    assert _native.callbacks.__wrapped__() is None and "OSError" in _native.reason
    monkeypatch.setenv("ASYNCDECODE_NATIVE_CALLBACKS", "0")
    assert _native.callbacks.__wrapped__() is None and "ASYNCDECODE_NATIVE_CALLBACKS" in _native.reason


def test_a_failing_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")
    with pytest.raises(OSError, match="false failed"):
        _native.build(tmp_path / "x.so")
    assert not (tmp_path / "x.so").exists()
