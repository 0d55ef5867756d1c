/*
 * sl_error.h — errors and logging shared by every module.
 *
 * Two kinds of failure, handled differently:
 *  - bad user input (a file, dataset, tensor, key or row at fault): the function fills an
 *    sl_error_t with a one-line message that names the culprit and returns -1; the caller
 *    decides (usually: all ranks agree, rank 0 prints it, exit with SL_EXIT_INPUT).
 *  - a broken environment or a library call that must not fail (CUDA, cuBLAS, NCCL, MPI, HDF5
 *    internals): SL_FATAL, and the CUDA backend's CUDA_CHECK / CUBLAS_CHECK / NCCL_CHECK, call
 *    sl_fatal(), which prints "host rank N file:line: call: message" and aborts every rank
 *    (MPI_Abort when MPI is up) so no rank hangs in a collective.
 */
#ifndef SL_ERROR_H
#define SL_ERROR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
#define SL_NORETURN [[noreturn]]
extern "C" {
#else
#define SL_NORETURN _Noreturn
#endif

/* Exit statuses of `shardline run`, documented in README.md. */
enum {
    SL_EXIT_OK = 0,
    SL_EXIT_FAILURE = 1,     /* internal or environment failure */
    SL_EXIT_USAGE = 2,       /* bad command line or job file */
    SL_EXIT_INPUT = 3,       /* bad input data, model or output directory */
    SL_EXIT_ROWS_FAILED = 4, /* job complete, but some rows failed (NaN/Inf, ...) */
    SL_EXIT_STOPPED = 5,     /* stopped by a signal; committed units are kept; rerun to resume */
};

typedef struct {
    char msg[1024];
} sl_error_t;

/* Formats into err (if not NULL) and returns -1, so callers can `return sl_errorf(...)`. Bytes
 * that are not printable text (control characters, invalid UTF-8) come out as \xNN, here and
 * in sl_error_prefix, so a message quoting a binary file stays one readable line. */
int sl_errorf(sl_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes an existing message: "context: old message". Returns -1. */
int sl_error_prefix(sl_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Identity printed in front of fatal messages and log lines ("host rank N"). */
void sl_log_set_identity(const char *host, int rank);
/* Hook called by sl_fatal after printing (set to MPI_Abort by the runner). */
void sl_log_set_abort(void (*abort_fn)(int code));

/* JSON log lines (`run --log-format json`): sl_log_info/warn and sl_fatal print one JSON object
 * per line, {"event": "log"|"fatal", "level", "message", ...}, instead of text. */
void sl_log_set_json(int on);
int sl_log_json(void);
/* Writes s as a JSON string (quoted, escaped) to f. */
void sl_json_fputs(const char *s, FILE *f);

void sl_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sl_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
SL_NORETURN void sl_fatal(const char *file, int line, const char *call, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define SL_FATAL(...) sl_fatal(__FILE__, __LINE__, "fatal", __VA_ARGS__)

/* Allocation that cannot fail silently. */
void *sl_xmalloc(size_t n);
void *sl_xcalloc(size_t n, size_t size);
void *sl_xrealloc(void *p, size_t n);
char *sl_xstrdup(const char *s);

#ifdef __cplusplus
}
#endif

#endif
