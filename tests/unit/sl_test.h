/*
 * sl_test.h — a minimal test harness for the C unit tests: CHECK macros that count failures
 * and print the file:line of each, and sl_test_finish() which prints "N passed, N failed" and
 * returns the exit status (non-zero on any failure).
 */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <stdio.h>

extern int sl_test_passed, sl_test_failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            sl_test_passed++;                                                          \
        } else {                                                                       \
            sl_test_failed++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
        }                                                                              \
    } while (0)

#define CHECKF(cond, ...)                                                              \
    do {                                                                               \
        if (cond) {                                                                    \
            sl_test_passed++;                                                          \
        } else {                                                                       \
            sl_test_failed++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
        }                                                                              \
    } while (0)

/* Prints the tally; returns 0 when nothing failed and something passed, 1 otherwise. */
int sl_test_finish(const char *name);
/* Relative error max|a-b| / max(max|b|, tiny) over n floats. */
double sl_test_rel_err(const float *a, const double *b, long n);

#endif
