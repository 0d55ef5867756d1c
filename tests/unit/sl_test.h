/*
 * sl_test.h — a minimal test harness for the C unit tests: CHECK macros that count failures
 * and print the file:line of each, and sl_test_finish() which prints "N passed, N failed" and
 * returns the exit status (non-zero on any failure). Also the chores several tests share:
 * where the sources and the installed models are, a wall clock, a fresh temporary directory,
 * writing a file, and reading whole HDF5 datasets (numbers, strings) of the reference goldens.
 */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <hdf5.h>
#include <stddef.h>
#include <stdio.h>

extern int sl_test_passed, sl_test_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            sl_test_passed++;                                                                      \
        } else {                                                                                   \
            sl_test_failed++;                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (cond) {                                                                                \
            sl_test_passed++;                                                                      \
        } else {                                                                                   \
            sl_test_failed++;                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Prints the tally; returns 0 when nothing failed and something passed, 1 otherwise. */
int sl_test_finish(const char *name);
/* Relative error max|a-b| / max(max|b|, tiny) over n floats. */
double sl_test_rel_err(const float *a, const double *b, long n);

/* The source tree: $SL_SOURCE_DIR (ctest sets it), else ".". */
const char *sl_test_source_dir(void);
/* The first line of <name>.path, written by scripts/install-models.sh, into out: from
 * $SL_MODELS_DIR, else <source>/build/models. When it is missing, says on stderr that `what`
 * is not installed and returns -1. */
int sl_test_model_path(const char *name, const char *what, char *out, size_t cap);
/* Whether `name` (e.g. "minilm") is listed in $SL_SKIP_MODELS (comma-separated), for runs that
 * do not carry the large installed models (gpu-bundle/run.sh). When it is, prints "<what>:
 * NOT CHECKED (SL_SKIP_MODELS)" on stdout, so the omission shows in the output, and returns 1. */
int sl_test_model_skipped(const char *name, const char *what);
/* Wall-clock seconds (CLOCK_MONOTONIC), for the printed rates. */
double sl_test_now_s(void);
/* A fresh directory $TMPDIR/<prefix>.XXXXXX (TMPDIR defaults to /tmp) into out; -1 (reason on
 * stderr) when it cannot be made. */
int sl_test_tmpdir(char *out, size_t cap, const char *prefix);
/* Writes len bytes of buf to path; exits the test (status 1) when it cannot. */
void sl_test_write_file(const char *path, const void *buf, size_t len);
/* Reads all of dataset `name` of f as `type` (elements of es bytes) into a malloc'd buffer, or
 * NULL when it is absent or unreadable. Optional outputs: *n elements, *ndim, and the first two
 * dimensions in dims (1 where the dataset has fewer). */
void *sl_test_h5_read(hid_t f, const char *name, hid_t type, size_t es, size_t *n, int *ndim,
                      hsize_t dims[2]);
/* A dataset of variable-length UTF-8 strings, copied (so HDF5's buffers are released): *n
 * malloc'd strings, "" for a null one, in a malloc'd array; NULL when absent or unreadable. */
char **sl_test_h5_strings(hid_t f, const char *name, int *n);
/* Frees what sl_test_h5_strings returned (NULL is fine). */
void sl_test_free_strings(char **v, int n);

#endif
