/*
 * sl_size.h — checked arithmetic for every size computed from user input (option values,
 * dataset shapes, tensor shapes), and the host memory such sizes are measured against.
 *
 * A product of a few in-range values (--batch-size x features x 4 bytes) can still overflow
 * 64 bits when one of them is absurd; wrapped around, it allocates a small buffer that a
 * library then writes past. So sizes are built with sl_size_mul / sl_size_add, which refuse
 * negative operands and overflow, and the caller turns a refusal into a message naming the
 * option or tensor at fault.
 */
#ifndef SL_SIZE_H
#define SL_SIZE_H

#include <stdint.h>

#include "common/sl_error.h"

/* *out = a * b. Returns 0, or -1 (and *out = INT64_MAX) when an operand is negative or the
 * product does not fit in int64_t. */
static inline int sl_size_mul(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, out)) {
        *out = INT64_MAX;
        return -1;
    }
    return 0;
}

/* *out = a + b, with the same contract as sl_size_mul. */
static inline int sl_size_add(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, out)) {
        *out = INT64_MAX;
        return -1;
    }
    return 0;
}

/* ceil(a / b) for a >= 0, b >= 1, without forming a + b - 1 (which overflows near INT64_MAX). */
static inline int64_t sl_size_div_up(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* Bytes of host memory this process may count on: MemAvailable from /proc/meminfo, else the
 * physical memory (sysconf). */
int64_t sl_mem_available(void);

/* Refuses a buffer of `bytes` (INT64_MAX: its size overflowed) when it exceeds `avail` bytes:
 * "OPTION_TEXT: WHAT needs N bytes, more than the M bytes of memory available". option_text
 * names the option(s) and value(s) responsible, e.g. "--batch-size 1048576". Returns 0 or -1. */
int sl_size_check_memory(int64_t bytes, int64_t avail, const char *option_text, const char *what,
                         sl_error_t *err);

#endif
