/*
 * sl_test.c — tally and helpers for the unit tests (see sl_test.h).
 */
#include "sl_test.h"

#include <math.h>

int sl_test_passed = 0, sl_test_failed = 0;

int sl_test_finish(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, sl_test_passed, sl_test_failed);
    return (sl_test_failed == 0 && sl_test_passed > 0) ? 0 : 1;
}

double sl_test_rel_err(const float *a, const double *b, long n)
{
    double maxdiff = 0.0, maxref = 1e-30;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff))
            maxdiff = d; /* also catches NaN */
        if (fabs(b[i]) > maxref)
            maxref = fabs(b[i]);
    }
    return maxdiff / maxref;
}
