/*
 * sl_profile.c — the --profile switch read by the NVTX range macros (sl_profile.h).
 */
#include "common/sl_profile.h"

int sl_profile_enabled = 0;
