// LD_PRELOAD shim: log allocations of at least BIGALLOC_MIN bytes (default 8 MiB) with the thread and a backtrace.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <fcntl.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static size_t min_size = 8u << 20;
static int fd = -1;
static __thread int inside;

static void init(void) {
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    const char *m = getenv("BIGALLOC_MIN");
    if (m) min_size = strtoull(m, 0, 10);
    const char *f = getenv("BIGALLOC_LOG");
    fd = open(f ? f : "/tmp/bigalloc.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
}

static void note(const char *what, size_t size) {
    if (size < min_size || fd < 0 || inside) return;
    inside = 1;
    char buf[128];
    int n = snprintf(buf, sizeof buf, "== %s %zu tid %ld\n", what, size, (long)syscall(SYS_gettid));
    write(fd, buf, n);
    void *bt[24];
    int k = backtrace(bt, 24);
    backtrace_symbols_fd(bt, k, fd);
    inside = 0;
}

// dlsym may call calloc before init finishes: serve it from a static buffer
static char early[4096]; static size_t early_used;
void *calloc(size_t a, size_t b) {
    if (!real_calloc) { if (!real_malloc) { size_t s = a * b; void *p = early + early_used; early_used += (s + 15) & ~15ul; return p; } }
    if (!real_calloc) init();
    note("calloc", a * b);
    return real_calloc(a, b);
}
void *malloc(size_t s) { if (!real_malloc) init(); note("malloc", s); return real_malloc(s); }
void *realloc(void *p, size_t s) { if (!real_realloc) init(); note("realloc", s); return real_realloc(p, s); }
int posix_memalign(void **p, size_t a, size_t s) { if (!real_posix_memalign) init(); note("posix_memalign", s); return real_posix_memalign(p, a, s); }
void *memalign(size_t a, size_t s) { if (!real_memalign) init(); note("memalign", s); return real_memalign(a, s); }
void *aligned_alloc(size_t a, size_t s) { if (!real_aligned_alloc) init(); note("aligned_alloc", s); return real_aligned_alloc(a, s); }
void free(void *p) {
    static void (*real_free)(void *);
    if ((char *)p >= early && (char *)p < early + sizeof early) return;
    if (!real_free) real_free = dlsym(RTLD_NEXT, "free");
    real_free(p);
}
