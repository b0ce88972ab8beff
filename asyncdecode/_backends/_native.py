"""The libnvcuvid decode loop in C, built once per machine with the C compiler Triton also needs.

Driven from Python, every picture costs a decoder thread several trips through the GIL: the parse
call, the parser's two callbacks, the map, the output allocation and the conversion launch each give
it up or take it back. With ten decoder threads each of those waits for the others, and sequential
reading measured about 40% below what the same threads reach without the engine around them (H200,
1600x900 HEVC): the threads were waiting to take the GIL back, not for the hardware.

Here one call, made without the GIL, feeds a run of packets to the parser, whose decode and display
callbacks are C too; every wanted picture it shows is mapped and converted (``cuLaunchKernel`` on the
kernel-parameter buffer the Python converter laid out) into an output allocated beforehand, mapped
surfaces are given back when the decoder has none left, and unwanted pictures short of the job's last
frame are dropped. Pictures Python must see (kept for later jobs, or not in the bundle) end the call
after the packet that showed them. The Python decode path stays for everything else (and where no C
compiler is found, or with ``ASYNCDECODE_NATIVE=0``): same pictures, more GIL traffic.

The library is compiled with ``$CC`` (else ``cc``, ``gcc`` or ``clang``) into the user's cache folder
the first time it is needed, named by a hash of its source, and written atomically (DataLoader workers
or ranks that build it at once end with one whole file). Its structure layouts are checked against the
ctypes declarations below when it is loaded.
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

SHOWN = 64
"""Pictures one parse call may show (a flush shows the display delay plus the reorder depth: at most 20)."""
MAPPED = 8
"""Mapped pictures a decoder can keep track of (it has 4 output surfaces)."""

# Status of a shown picture in a run's table.
DROPPED = -1
"""Not wanted, before the job's last frame: nothing to do."""
FOR_PYTHON = -2
"""Python decides (the run stopped after the packet that showed it)."""
PENDING = -3
"""Shown, not looked at yet (a lagging run takes a packet's pictures once the next is in)."""

# Why a run returned.
STOP_FED = 0
"""Every packet of the run is in, or the chunk limit was reached, or every wanted picture is out."""
STOP_PYTHON = 1
"""Pictures for Python are in the table."""
STOP_FORMAT = 2
"""The decoder was set up for another output layout than the run's (a format change): Python takes over."""

# Which call failed (``Run.error_call``).
CALLS = {1: "cuvidParseVideoData", 2: "cuvidDecodePicture", 3: "cuvidMapVideoFrame64",
         4: "cuvidUnmapVideoFrame64", 5: "cuStreamSynchronize", 6: "cuLaunchKernel",
         7: "cuvidParseVideoData (more pictures shown than the table holds)"}

SOURCE = r"""
/* asyncdecode: the libnvcuvid decode loop, without Python. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
typedef int (*ad_parse_fn)(void *parser, void *packet);
typedef int (*ad_reconfigure_fn)(void *decoder, void *info);
typedef int (*ad_decode_fn)(void *decoder, void *picture);
typedef int (*ad_map_fn)(void *decoder, int index, unsigned long long *ptr, unsigned int *pitch, void *proc);
typedef int (*ad_unmap_fn)(void *decoder, unsigned long long ptr);
typedef int (*ad_sync_fn)(void *stream);
typedef int (*ad_launch_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned shared, void *stream, void **params, void **extra);

typedef struct {            /* CUVIDPARSERDISPINFO */
    int picture_index;
    int progressive_frame;
    int top_field_first;
    int repeat_first_field;
    long long timestamp;
} ad_display_info;

typedef struct {            /* CUVIDSOURCEDATAPACKET */
    unsigned long flags;
    unsigned long payload_size;
    const void *payload;
    long long timestamp;
} ad_packet;

typedef struct {
    long long pts;
    int index;
    int progressive;
    int top_first;
    int status;             /* >= 0: converted into wanted slot; -1 dropped; -2 for Python; -3 pending */
} ad_shown;

typedef struct {            /* one decoder: the parser's user data */
    void *decoder;          /* CUvideodecoder, set by Python when it makes one */
    ad_decode_fn decode;    /* cuvidDecodePicture */
    int error;              /* first callback failure: a cuvidDecodePicture code, or -1 (table full) */
    int count;              /* pictures shown since the feeding thread reset it */
    int nmapped;
    int generation;         /* layout of the mapped pictures (size, bit depth), numbered by Python */
    unsigned long long mapped[MAPPED];
    ad_shown shown[SHOWN];
} ad_decoder;

typedef struct {
    ad_parse_fn parse;
    ad_map_fn map;
    ad_unmap_fn unmap;
    ad_sync_fn sync;
    ad_launch_fn launch;
    void *parser;
    void *stream;
    char *proc;             /* CUVIDPROCPARAMS, output_stream set */
    long long proc_progressive, proc_top_first;  /* byte offsets in it */
    long long output_surfaces;
    /* packets: the bundle's table (decode order) and which rows to feed */
    const char *table;
    long long row_bytes, col_offset, col_size, col_pts;
    const char *payload;
    const long long *feed;
    long long nfeed, next, max_feed, lag, generation;
    /* wanted pictures, by pts ascending, and where each goes; real[slot] 0: collected on the way
       (converted where it shows, never waited for; no table: every slot is waited for) */
    const long long *want_pts;
    const unsigned long long *want_out;
    unsigned char *done;
    const unsigned char *real;
    long long nwant, remaining, furthest_pts;
    /* conversion: a kernel and its parameter buffer (three addresses, then height, width, strides) */
    void *function;
    long long grid_x, grid_y, block_x, shared;
    char *param_buf;
    void **params;
    long long height, width, sample_bytes, chroma_rows;
    /* results */
    ad_shown *out;
    long long nout, out_cap, held, fed, error, error_call, stop;
} ad_run;

/* The gate: every decode, map and unmap in the process goes through it shared, a reconfigure alone. The
   driver's cuvidReconfigureDecoder, called while another thread's decoder in the same context decodes,
   left every decode after it waiting forever (H200, driver 580). Writers go first: a reconfigure
   waits for the calls in progress, not for a gap in them. */
static pthread_rwlock_t gate;
static pthread_once_t gate_once = PTHREAD_ONCE_INIT;

static void gate_init(void) {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&gate, &attr);
    pthread_rwlockattr_destroy(&attr);
}

/* What each thread is doing in the driver (for a hang's diagnosis, ad_busy_table): the call it is in
   or waiting to enter, on which decoder, since when; and the last reconfigures of the process. */
#define TRACKED 256
typedef struct {
    long long tid;
    long long call;         /* 0 none; 1 decode, 2 map, 3 unmap, 4 reconfigure: in the call;
                               +10: waiting for the gate to let it in */
    void *decoder;
    long long since_ns;
    long long calls;
} ad_busy;
static ad_busy busy[TRACKED];
static int nbusy;
static __thread int busy_slot = -1;
#define RECENT 16
static ad_busy recent[RECENT];  /* call: the reconfigure's result code */
static int nrecent;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static ad_busy *busy_me(void) {
    if (busy_slot < 0) {
        busy_slot = __sync_fetch_and_add(&nbusy, 1);
        if (busy_slot >= TRACKED) busy_slot = TRACKED - 1;
        busy[busy_slot].tid = (long long)syscall(SYS_gettid);
    }
    return &busy[busy_slot];
}

static void busy_set(long long call, void *decoder) {
    ad_busy *b = busy_me();
    b->decoder = decoder;
    b->since_ns = now_ns();
    b->call = call;
    if (call && call < 10) b->calls++;
}

/* Copies the table (rows of threads seen, their count in *nthreads, then the last reconfigures) into
   out; the rows written. Times are ages in nanoseconds. */
int ad_busy_table(ad_busy *out, int n, int *nthreads) {
    int i, k = 0, threads = nbusy < TRACKED ? nbusy : TRACKED;
    long long t = now_ns();
    for (i = 0; i < threads && k < n; i++, k++) {
        out[k] = busy[i];
        out[k].since_ns = t - busy[i].since_ns;
    }
    *nthreads = k;
    for (i = 0; i < RECENT && k < n; i++) {
        ad_busy *r = &recent[(nrecent + i) % RECENT];
        if (!r->tid) continue;
        out[k] = *r;
        out[k].since_ns = t - r->since_ns;
        k++;
    }
    return k;
}

static void gate_shared(void) {
    pthread_once(&gate_once, gate_init);
    pthread_rwlock_rdlock(&gate);
}

static void gate_leave(void) {
    pthread_rwlock_unlock(&gate);
}

int ad_map(ad_map_fn map, void *decoder, int index, unsigned long long *ptr, unsigned int *pitch, void *proc) {
    int code;
    busy_set(12, decoder);
    gate_shared();
    busy_set(2, decoder);
    code = map(decoder, index, ptr, pitch, proc);
    gate_leave();
    busy_set(0, decoder);
    return code;
}

int ad_unmap_one(ad_unmap_fn unmap, void *decoder, unsigned long long ptr) {
    int code;
    busy_set(13, decoder);
    gate_shared();
    busy_set(3, decoder);
    code = unmap(decoder, ptr);
    gate_leave();
    busy_set(0, decoder);
    return code;
}

int ad_reconfigure(ad_reconfigure_fn reconfigure, void *decoder, void *info) {
    int code, i;
    pthread_once(&gate_once, gate_init);
    busy_set(14, decoder);
    pthread_rwlock_wrlock(&gate);
    busy_set(4, decoder);
    code = reconfigure(decoder, info);
    i = __sync_fetch_and_add(&nrecent, 1) % RECENT;
    recent[i].tid = busy_me()->tid;
    recent[i].decoder = decoder;
    recent[i].call = code;
    recent[i].since_ns = now_ns();
    gate_leave();
    busy_set(0, decoder);
    return code;
}

int ad_on_decode(void *user, void *picture) {
    ad_decoder *d = (ad_decoder *)user;
    int code;
    busy_set(11, d->decoder);
    gate_shared();
    busy_set(1, d->decoder);
    code = d->decode(d->decoder, picture);
    gate_leave();
    busy_set(0, d->decoder);
    if (code != 0) {
        if (d->error == 0) d->error = code;
        return 0;
    }
    return 1;
}

int ad_on_display(void *user, ad_display_info *info) {
    ad_decoder *d = (ad_decoder *)user;
    ad_shown *s;
    if (info == 0) return 1;  /* end of stream: nothing to show */
    if (d->count >= SHOWN) {
        if (d->error == 0) d->error = -1;
        return 0;
    }
    s = &d->shown[d->count++];
    s->pts = info->timestamp;
    s->index = info->picture_index;
    s->progressive = info->progressive_frame;
    s->top_first = info->top_field_first;
    s->status = -3;
    return 1;
}

static int fail(ad_run *r, long long call, long long code) {
    if (r->error == 0) { r->error = code; r->error_call = call; }
    return -1;
}

static int unmap_all(ad_decoder *d, ad_run *r) {
    int code = r->sync(r->stream);
    if (code) return fail(r, 5, code);
    while (d->nmapped > 0) {
        code = ad_unmap_one(r->unmap, d->decoder, d->mapped[d->nmapped - 1]);
        d->nmapped--;
        if (code) return fail(r, 4, code);
    }
    return 0;
}

static long long wanted_slot(ad_run *r, long long pts) {
    long long lo = 0, hi = r->nwant - 1;
    while (lo <= hi) {
        long long mid = (lo + hi) / 2;
        if (r->want_pts[mid] == pts) return r->done[mid] ? -1 : mid;
        if (r->want_pts[mid] < pts) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

/* Map a wanted picture and launch its conversion into the slot's output. */
static int convert(ad_decoder *d, ad_run *r, ad_shown *s, long long slot) {
    unsigned long long ptr = 0;
    unsigned int pitch = 0;
    long long stride;
    int code;
    char *p = r->param_buf;
    if (d->nmapped >= r->output_surfaces || d->nmapped >= MAPPED) {
        if (unmap_all(d, r)) return -1;
    }
    *(int *)(r->proc + r->proc_progressive) = s->progressive;
    *(int *)(r->proc + r->proc_top_first) = s->top_first;
    code = ad_map(r->map, d->decoder, s->index, &ptr, &pitch, r->proc);
    if (code) return fail(r, 3, code);
    d->mapped[d->nmapped++] = ptr;
    stride = pitch / r->sample_bytes;
    *(unsigned long long *)(p + 0) = ptr;
    *(unsigned long long *)(p + 8) = ptr + (unsigned long long)pitch * (unsigned long long)r->chroma_rows;
    *(unsigned long long *)(p + 16) = r->want_out[slot];
    *(int *)(p + 24) = (int)r->height;
    *(int *)(p + 28) = (int)r->width;
    *(int *)(p + 32) = (int)stride;
    *(int *)(p + 36) = (int)stride;
    code = r->launch(r->function, (unsigned)r->grid_x, (unsigned)r->grid_y, 1, (unsigned)r->block_x, 1, 1,
                     (unsigned)r->shared, r->stream, r->params, 0);
    if (code) return fail(r, 6, code);
    r->done[slot] = 1;
    if (r->real == 0 || r->real[slot]) r->remaining--;
    s->status = (int)slot;
    return 0;
}

/* Look at the pending pictures out[from, to). */
static int take(ad_decoder *d, ad_run *r, long long from, long long to) {
    long long i;
    for (i = from; i < to; i++) {
        ad_shown *s = &r->out[i];
        long long slot;
        if (s->status != -3) continue;
        slot = wanted_slot(r, s->pts);
        if (slot >= 0) {
            if (convert(d, r, s, slot)) return -1;
        } else if (s->pts <= r->furthest_pts) {
            s->status = -1;
        } else {
            s->status = -2;
            r->stop = 1;
        }
    }
    return 0;
}

/* Whether every wanted picture not out yet is among the pending out[from, nout). */
static int completes(ad_run *r, long long from) {
    long long i, n = 0, slot;
    for (i = from; i < r->nout; i++) {
        if (r->out[i].status != -3) continue;
        slot = wanted_slot(r, r->out[i].pts);
        if (slot >= 0 && (r->real == 0 || r->real[slot])) n++;
    }
    return n >= r->remaining;
}

/* Feed up to max_feed packets of the run (all when 0), or the end of the stream when nfeed < 0.
   Returns 0, or -1 with error / error_call set. */
int ad_feed(ad_decoder *d, ad_run *r) {
    ad_packet packet;
    long long limit = r->max_feed > 0 ? r->next + r->max_feed : r->nfeed;
    int flush = r->nfeed < 0;
    r->stop = 0;
    if (limit > r->nfeed && !flush) limit = r->nfeed;
    while ((flush || r->next < limit) && r->remaining > 0) {
        long long first = r->nout, j;
        int code;
        if (flush) {
            packet.flags = 0x01;  /* end of stream */
            packet.payload_size = 0;
            packet.payload = 0;
            packet.timestamp = 0;
        } else {
            const char *row = r->table + r->feed[r->next] * r->row_bytes;
            packet.flags = 0x02 | 0x08;  /* timestamp, end of picture */
            packet.payload_size = *(const unsigned int *)(row + r->col_size);
            packet.payload = r->payload + *(const unsigned long long *)(row + r->col_offset);
            packet.timestamp = *(const long long *)(row + r->col_pts);
        }
        d->count = 0;
        d->error = 0;
        code = r->parse(r->parser, &packet);
        if (!flush) { r->next++; r->fed++; }
        if (d->error) {
            if (d->error < 0) return fail(r, 7, 999);
            return fail(r, 2, d->error);
        }
        if (code) return fail(r, 1, code);
        if (r->nout + d->count > r->out_cap) return fail(r, 7, 998);
        for (j = 0; j < d->count; j++) r->out[r->nout++] = d->shown[j];
        if (d->generation != r->generation) { r->stop = 2; return 0; }
        if (flush || !r->lag || r->next >= r->nfeed || completes(r, r->held)) {
            if (take(d, r, r->held, r->nout)) return -1;
            r->held = r->nout;
        } else {  /* the packet's pictures wait until the next one is in */
            if (take(d, r, r->held, first)) return -1;
            r->held = first;
        }
        if (flush || r->stop) break;
    }
    if (r->remaining == 0 && r->held < r->nout) {
        if (take(d, r, r->held, r->nout)) return -1;
        r->held = r->nout;
    }
    return 0;
}

/* Give back every mapped picture of the decoder once the stream has finished reading them. */
int ad_unmap(ad_decoder *d, ad_run *r) {
    return unmap_all(d, r);
}

void ad_layout(long long *out) {
    ad_decoder d;
    ad_run r;
    out[0] = (long long)sizeof(ad_decoder);
    out[1] = (long long)sizeof(ad_shown);
    out[2] = (long long)((char *)&d.shown - (char *)&d);
    out[3] = (long long)sizeof(ad_run);
    out[4] = (long long)((char *)&r.stop - (char *)&r);
    out[5] = (long long)((char *)&r.function - (char *)&r);
}
"""


class Shown(C.Structure):
    """``ad_shown``: one picture the parser showed, and what the run did with it."""

    _fields_ = [("pts", C.c_longlong), ("index", C.c_int), ("progressive", C.c_int), ("top_first", C.c_int),
                ("status", C.c_int)]


class DecoderState(C.Structure):
    """``ad_decoder``: a decoder's callback state and its mapped pictures (the parser's user data)."""

    _fields_ = [("decoder", C.c_void_p), ("decode", C.c_void_p), ("error", C.c_int), ("count", C.c_int),
                ("nmapped", C.c_int), ("generation", C.c_int), ("mapped", C.c_ulonglong * MAPPED),
                ("shown", Shown * SHOWN)]


_ll, _vp = C.c_longlong, C.c_void_p


class Busy(C.Structure):
    """``ad_busy``: what a thread is doing in the driver (see :func:`busy`)."""

    _fields_ = [("tid", C.c_longlong), ("call", C.c_longlong), ("decoder", C.c_void_p), ("age_ns", C.c_longlong),
                ("calls", C.c_longlong)]


BUSY_CALLS = {0: "-", 1: "cuvidDecodePicture", 2: "cuvidMapVideoFrame64", 3: "cuvidUnmapVideoFrame64",
              4: "cuvidReconfigureDecoder", 11: "waiting to decode", 12: "waiting to map", 13: "waiting to unmap",
              14: "waiting to reconfigure"}


def busy() -> tuple[list[dict], list[dict]]:
    """What each thread that went through the decode loop's gate is doing in the driver now (call,
    decoder, for how long), and the last reconfigures (decoder, result code, how long ago): a hang's
    first question. Empty where the loop is not built."""
    lib = library()
    if lib is None:
        return [], []
    rows, nthreads = (Busy * 512)(), C.c_int()
    n = lib.ad_busy_table(rows, 512, C.byref(nthreads))
    threads, reconfigures = [], []
    for k, row in enumerate(rows[:n]):
        entry = {"tid": row.tid, "decoder": hex(row.decoder or 0), "age_s": round(row.age_ns / 1e9, 3)}
        if k < nthreads.value:
            threads.append({**entry, "call": BUSY_CALLS.get(row.call, str(row.call)), "calls": row.calls})
        else:
            reconfigures.append({**entry, "code": row.call})
    return threads, reconfigures


class Run(C.Structure):
    """``ad_run``: one job's run of packets through :func:`ad_feed` (see the C source)."""

    _fields_ = [(name, _vp) for name in ("parse", "map", "unmap", "sync", "launch", "parser", "stream", "proc")] + \
        [(name, _ll) for name in ("proc_progressive", "proc_top_first", "output_surfaces")] + \
        [("table", _vp)] + [(name, _ll) for name in ("row_bytes", "col_offset", "col_size", "col_pts")] + \
        [("payload", _vp), ("feed", _vp)] + [(name, _ll) for name in ("nfeed", "next", "max_feed", "lag", "generation")] + \
        [("want_pts", _vp), ("want_out", _vp), ("done", _vp), ("real", _vp)] + \
        [(name, _ll) for name in ("nwant", "remaining", "furthest_pts")] + \
        [("function", _vp)] + [(name, _ll) for name in ("grid_x", "grid_y", "block_x", "shared")] + \
        [("param_buf", _vp), ("params", _vp)] + \
        [(name, _ll) for name in ("height", "width", "sample_bytes", "chroma_rows")] + \
        [("out", _vp)] + [(name, _ll) for name in ("nout", "out_cap", "held", "fed", "error", "error_call", "stop")]


reason = ""
"""Why :func:`library` returned ``None`` ("" when it did not, or has not been called)."""


@functools.cache
def library() -> C.CDLL | None:
    """The compiled loop, built on first use; ``None`` where it cannot be had (see :data:`reason`)."""
    global reason
    if os.environ.get("ASYNCDECODE_NATIVE", "1") == "0":
        reason = "turned off by ASYNCDECODE_NATIVE=0"
        return None
    try:
        return load()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return None


def load() -> C.CDLL:
    """The compiled library (built if this machine has none yet), its layout checked.

    Raises:
        OSError: no C compiler, the build failed, or the library does not match its declarations.
    """
    digest = hashlib.sha256(f"{SOURCE}{SHOWN}{MAPPED}{platform.machine()}".encode()).hexdigest()[:16]
    name = f"cuvid_loop-{digest}.so"
    for folder in _cache_folders():
        path = folder / name
        if not path.exists():
            try:
                build(path)
            except PermissionError:  # a cache folder we cannot write: the next one
                continue
        lib = C.CDLL(str(path))
        _check_layout(lib)
        lib.ad_feed.argtypes = lib.ad_unmap.argtypes = (C.POINTER(DecoderState), C.POINTER(Run))
        lib.ad_feed.restype = lib.ad_unmap.restype = C.c_int
        lib.ad_map.argtypes = (_vp, _vp, C.c_int, _vp, _vp, _vp)
        lib.ad_reconfigure.argtypes = (_vp, _vp, _vp)
        lib.ad_busy_table.argtypes = (_vp, C.c_int, _vp)
        lib.ad_busy_table.restype = C.c_int
        lib.ad_unmap_one.argtypes = (_vp, _vp, C.c_ulonglong)
        lib.ad_map.restype = lib.ad_reconfigure.restype = lib.ad_unmap_one.restype = C.c_int
        return lib
    raise OSError("no writable cache folder for the compiled decode loop")


def build(path: Path) -> None:
    """Compile :data:`SOURCE` into the shared library ``path`` (atomically)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise OSError("no C compiler (cc, gcc or clang) on PATH and CC not set")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        src, out = Path(tmp) / "cuvid_loop.c", Path(tmp) / "cuvid_loop.so"
        src.write_text(SOURCE)
        try:
            done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-pthread", f"-DSHOWN={SHOWN}", f"-DMAPPED={MAPPED}",
                                   "-o", str(out), str(src)], capture_output=True, text=True, timeout=120)
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
    want = (C.sizeof(DecoderState), C.sizeof(Shown), DecoderState.shown.offset, C.sizeof(Run), Run.stop.offset,
            Run.function.offset)
    if tuple(out) != want:
        raise OSError(f"compiled decode loop's layout {tuple(out)} does not match the declarations {want}")
