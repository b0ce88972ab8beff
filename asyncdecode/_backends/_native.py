"""libnvcuvid's parser callbacks in C, built once per machine with the C compiler Triton also needs.

NVIDIA's parser calls back for every picture it hands to the hardware and every picture it shows.
Callbacks written in Python (ctypes) take the GIL for each of those calls and give it back after:
with ten decoder threads each picture then waits several times to take the GIL back among them,
and sequential reading measured well below what NVDEC decodes. These two callbacks are plain C:
the decode callback passes the picture to ``cuvidDecodePicture`` and the display callback writes
what it shows into a small table (:class:`Shown`) that the feeding thread reads after the parse
returns. A packet then costs its thread one GIL hand-over (the return from the parse) instead of four.

The library is compiled with ``$CC`` (else ``cc``, ``gcc`` or ``clang``) into the user's cache folder
the first time it is needed, named by a hash of the source, and written atomically (processes that
build it at once, DataLoader workers or ranks, end with one whole file). Where no compiler works, or
with ``ASYNCDECODE_NATIVE_CALLBACKS=0``, :func:`callbacks` returns ``None`` and the decoder keeps its
Python callbacks (same pictures, more GIL traffic); :data:`reason` says why.
"""

from __future__ import annotations

import ctypes as C
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

CAPACITY = 64
"""Pictures one parse call may show (a flush shows the display delay plus the reorder depth: at most 20)."""

SOURCE = r"""
/* asyncdecode: libnvcuvid parser callbacks without Python. */
typedef int (*ad_decode_fn)(void *decoder, void *picture);

typedef struct {            /* CUVIDPARSERDISPINFO */
    int picture_index;
    int progressive_frame;
    int top_field_first;
    int repeat_first_field;
    long long timestamp;
} ad_display_info;

typedef struct {
    long long pts;
    int index;
    int progressive;
    int top_first;
    int unused;
} ad_shown;

typedef struct {
    void *decoder;          /* CUvideodecoder the pictures go to */
    ad_decode_fn decode;    /* cuvidDecodePicture */
    int error;              /* first failure: a cuvidDecodePicture code, or -1 (more shown than room) */
    int count;              /* pictures shown since the feeding thread reset it */
    int capacity;
    int unused;
    ad_shown shown[CAPACITY];
} ad_context;

int ad_on_decode(void *user, void *picture) {
    ad_context *c = (ad_context *)user;
    int code = c->decode(c->decoder, picture);
    if (code != 0) {
        if (c->error == 0) c->error = code;
        return 0;
    }
    return 1;
}

int ad_on_display(void *user, ad_display_info *info) {
    ad_context *c = (ad_context *)user;
    ad_shown *s;
    if (info == 0) return 1;  /* the end of the stream, nothing to show */
    if (c->count >= c->capacity) {
        if (c->error == 0) c->error = -1;
        return 0;
    }
    s = &c->shown[c->count++];
    s->pts = info->timestamp;
    s->index = info->picture_index;
    s->progressive = info->progressive_frame;
    s->top_first = info->top_field_first;
    return 1;
}

/* Sizes and offsets, checked against the ctypes declarations when the library is loaded. */
void ad_layout(long long *out) {
    ad_context c;
    out[0] = (long long)sizeof(ad_context);
    out[1] = (long long)sizeof(ad_shown);
    out[2] = (long long)((char *)&c.error - (char *)&c);
    out[3] = (long long)((char *)&c.count - (char *)&c);
    out[4] = (long long)((char *)&c.shown - (char *)&c);
    out[5] = (long long)((char *)&c.shown[0].index - (char *)&c.shown[0]);
}
"""


class ShownPicture(C.Structure):
    """``ad_shown``: one picture the parser showed."""

    _fields_ = [("pts", C.c_longlong), ("index", C.c_int), ("progressive", C.c_int), ("top_first", C.c_int),
                ("unused", C.c_int)]


class Shown(C.Structure):
    """``ad_context``: the callbacks' state, one per parser (its ``user_data``)."""

    _fields_ = [("decoder", C.c_void_p), ("decode", C.c_void_p), ("error", C.c_int), ("count", C.c_int),
                ("capacity", C.c_int), ("unused", C.c_int), ("shown", ShownPicture * CAPACITY)]


class Callbacks(NamedTuple):
    """Addresses of the C callbacks, for ``CUVIDPARSERPARAMS``."""

    decode: int
    display: int


reason = ""
"""Why :func:`callbacks` returned ``None`` ("" when it did not, or has not been called)."""


@functools.cache
def callbacks() -> Callbacks | None:
    """The C callbacks, built on first use; ``None`` where they cannot be had (see :data:`reason`)."""
    global reason
    if os.environ.get("ASYNCDECODE_NATIVE_CALLBACKS", "1") == "0":
        reason = "turned off by ASYNCDECODE_NATIVE_CALLBACKS=0"
        return None
    try:
        lib = load()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return None
    return Callbacks(C.cast(lib.ad_on_decode, C.c_void_p).value, C.cast(lib.ad_on_display, C.c_void_p).value)


def load() -> C.CDLL:
    """The compiled library (built if this machine has none yet), its layout checked.

    Raises:
        OSError: no C compiler, the build failed, or the library does not match its declarations.
    """
    digest = hashlib.sha256(f"{SOURCE}{CAPACITY}{platform.machine()}".encode()).hexdigest()[:16]
    name = f"cuvid_callbacks-{digest}.so"
    for folder in _cache_folders():
        path = folder / name
        if not path.exists():
            try:
                build(path)
            except PermissionError:  # a cache folder we cannot write: the next one
                continue
        lib = C.CDLL(str(path))
        _check_layout(lib)
        return lib
    raise OSError("no writable cache folder for the compiled callbacks")


def build(path: Path) -> None:
    """Compile :data:`SOURCE` into the shared library ``path`` (atomically)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise OSError("no C compiler (cc, gcc or clang) on PATH and CC not set")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        src, out = Path(tmp) / "callbacks.c", Path(tmp) / "callbacks.so"
        src.write_text(SOURCE)
        try:
            done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", f"-DCAPACITY={CAPACITY}", "-o", str(out),
                                   str(src)], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            raise OSError(f"C compiler {compiler} could not run ({exc})") from exc
        if done.returncode != 0:
            raise OSError(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        os.replace(out, path)


def _cache_folders() -> list[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    user = getattr(os, "getuid", lambda: 0)()
    return [Path(base) / "asyncdecode", Path(tempfile.gettempdir()) / f"asyncdecode-{user}"]


def _check_layout(lib: C.CDLL) -> None:
    out = (C.c_longlong * 6)()
    lib.ad_layout(out)
    want = (C.sizeof(Shown), C.sizeof(ShownPicture), Shown.error.offset, Shown.count.offset, Shown.shown.offset,
            ShownPicture.index.offset)
    if tuple(out) != want:
        raise OSError(f"compiled callbacks' layout {tuple(out)} does not match the declarations {want}")
