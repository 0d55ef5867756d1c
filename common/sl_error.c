/*
 * sl_error.c — error formatting, log lines with host/rank identity, fatal aborts.
 */
#include "sl_error.h"

#include "common/sl_fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char g_host[64] = "?";
static int g_rank = -1;
static void (*g_abort)(int) = NULL;
static int g_json = 0;

void sl_log_set_json(int on) { g_json = on; }
int sl_log_json(void) { return g_json; }

void sl_json_fputs(const char *s, FILE *f)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* Length of the valid UTF-8 sequence at s (2..4 bytes), or 0 when s does not start one. */
static size_t utf8_len(const unsigned char *s)
{
    size_t n = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
               : s[0] >= 0xe0 && s[0] <= 0xef ? 3
               : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                              : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* Copies src into dst (cap bytes, NUL-terminated, truncated), escaping every byte that is not
 * printable text as \xNN: control characters and bytes of invalid UTF-8. Messages quote values
 * from the user's files (a key of a binary job file, a dataset name), and those must reach the
 * terminal as one readable line, not as raw bytes. */
static void escape_into(char *dst, size_t cap, const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;
    while (*s && o + 1 < cap) {
        size_t n = *s >= 0x80 ? utf8_len(s) : (*s >= 0x20 && *s != 0x7f);
        if (n == 0) {
            if (o + 5 > cap)
                break;
            snprintf(dst + o, 5, "\\x%02x", *s++);
            o += 4;
            continue;
        }
        if (o + n + 1 > cap)
            break;
        memcpy(dst + o, s, n);
        o += n;
        s += n;
    }
    dst[o] = '\0';
}

int sl_errorf(sl_error_t *err, const char *fmt, ...)
{
    if (err) {
        char raw[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
        escape_into(err->msg, sizeof err->msg, raw);
    }
    return -1;
}

int sl_error_prefix(sl_error_t *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[512], old[sizeof err->msg], raw[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* A message longer than the buffer is cut, and says so. */
    if (snprintf(raw, sizeof raw, "%s: %s", prefix, old) >= (int)sizeof raw)
        memcpy(raw + sizeof raw - 4, "...", 4);
    escape_into(err->msg, sizeof err->msg, raw);
    return -1;
}

void sl_log_set_identity(const char *host, int rank)
{
    snprintf(g_host, sizeof g_host, "%s", host);
    g_rank = rank;
}

void sl_log_set_abort(void (*abort_fn)(int code)) { g_abort = abort_fn; }

static void vlog(const char *level, const char *fmt, va_list ap)
{
    char raw[2048], line[2048];
    vsnprintf(raw, sizeof raw, fmt, ap);
    if (g_json) {
        /* one line, written at once: escape_into keeps it valid UTF-8 */
        escape_into(line, sizeof line, raw);
        flockfile(stderr);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fprintf(
            stderr, "{\"event\":\"log\",\"time\":%.6f,\"level\":\"%s\",\"rank\":%d,\"message\":",
            (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec, level[0] ? "warning" : "info", g_rank);
        sl_json_fputs(line, stderr);
        fputs("}\n", stderr);
        funlockfile(stderr);
    } else {
        fprintf(stderr, "shardline: %s%s\n", level, raw);
    }
    fflush(stderr);
}

void sl_log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("", fmt, ap);
    va_end(ap);
}

void sl_log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("warning: ", fmt, ap);
    va_end(ap);
}

void sl_fatal(const char *file, int line, const char *call, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_json) {
        char esc[sizeof msg];
        escape_into(esc, sizeof esc, msg);
        flockfile(stderr);
        fprintf(stderr, "{\"event\":\"fatal\",\"host\":");
        sl_json_fputs(g_host, stderr);
        fprintf(stderr, ",\"rank\":%d,\"where\":\"%s:%d\",\"call\":", g_rank, file, line);
        sl_json_fputs(call, stderr);
        fputs(",\"message\":", stderr);
        sl_json_fputs(esc, stderr);
        fputs("}\n", stderr);
        funlockfile(stderr);
    } else {
        fprintf(stderr, "shardline: %s rank %d %s:%d: %s: %s\n", g_host, g_rank, file, line, call,
                msg);
    }
    fflush(stderr);
    if (g_abort)
        g_abort(SL_EXIT_FAILURE);
    exit(SL_EXIT_FAILURE);
}

/* The alloc stage of SL_FAULT counts only allocations of at least SL_FAULT_ALLOC_MIN bytes: the
 * buffers that can really run out, not the many small ones. */
static int fault_alloc(size_t n) { return n >= SL_FAULT_ALLOC_MIN && sl_fault_hit(SL_FAULT_ALLOC); }

void *sl_xmalloc(size_t n)
{
    void *p = fault_alloc(n) ? NULL : malloc(n ? n : 1);
    if (!p)
        SL_FATAL("out of host memory allocating %zu bytes%s", n, sl_fault_note(SL_FAULT_ALLOC));
    return p;
}

void *sl_xcalloc(size_t n, size_t size)
{
    void *p = fault_alloc(n * size) ? NULL : calloc(n ? n : 1, size ? size : 1);
    if (!p)
        SL_FATAL("out of host memory allocating %zu x %zu bytes%s", n, size,
                 sl_fault_note(SL_FAULT_ALLOC));
    return p;
}

void *sl_xrealloc(void *p, size_t n)
{
    void *q = fault_alloc(n) ? NULL : realloc(p, n ? n : 1);
    if (!q)
        SL_FATAL("out of host memory reallocating %zu bytes%s", n, sl_fault_note(SL_FAULT_ALLOC));
    return q;
}

char *sl_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = sl_xmalloc(n);
    memcpy(p, s, n);
    return p;
}
