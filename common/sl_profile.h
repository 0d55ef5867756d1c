/*
 * sl_profile.h — NVTX ranges for Nsight Systems (`nsys profile ... shardline run --profile`):
 * read, tokenize, H2D, each model layer, all-reduce, D2H and write are pushed and popped as
 * named ranges when --profile is given. NVTX3 is header-only (it finds the profiler's
 * injection library at run time, and costs a branch when none is attached); builds without
 * CUDA (ENABLE_CUDA=OFF) have no NVTX, and the macros below vanish there.
 */
#ifndef SL_PROFILE_H
#define SL_PROFILE_H

/* Set once by `shardline run --profile`, before any thread starts; read-only afterwards. */
extern int sl_profile_enabled;

#if defined(SL_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
#include <stdio.h>
#define SL_RANGE_PUSH(name)                                                                        \
    do {                                                                                           \
        if (sl_profile_enabled)                                                                    \
            nvtxRangePushA(name);                                                                  \
    } while (0)
/* A formatted name (nvtxRangePushA copies it). */
#define SL_RANGE_PUSHF(...)                                                                        \
    do {                                                                                           \
        if (sl_profile_enabled) {                                                                  \
            char sl_range_name_[64];                                                               \
            snprintf(sl_range_name_, sizeof sl_range_name_, __VA_ARGS__);                          \
            nvtxRangePushA(sl_range_name_);                                                        \
        }                                                                                          \
    } while (0)
#define SL_RANGE_POP()                                                                             \
    do {                                                                                           \
        if (sl_profile_enabled)                                                                    \
            nvtxRangePop();                                                                        \
    } while (0)
#else
#define SL_RANGE_PUSH(name) ((void)0)
#define SL_RANGE_PUSHF(...) ((void)0)
#define SL_RANGE_POP() ((void)0)
#endif

#endif
