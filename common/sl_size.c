/*
 * sl_size.c — host memory available, and the refusal of buffers larger than it (see sl_size.h).
 */
#include "common/sl_size.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int64_t sl_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        long long kb = -1;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
                break;
        fclose(f);
        if (kb > 0 && kb < INT64_MAX / 1024)
            return (int64_t)kb * 1024;
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    int64_t bytes;
    if (pages > 0 && page > 0 && sl_size_mul(pages, page, &bytes) == 0)
        return bytes;
    return INT64_MAX; /* unknown: refuse only sizes that overflow */
}

int sl_size_check_memory(int64_t bytes, int64_t avail, const char *option_text, const char *what,
                         sl_error_t *err)
{
    if (bytes == INT64_MAX)
        return sl_errorf(err, "%s: %s would need more than 2^63 bytes", option_text, what);
    if (bytes > avail)
        return sl_errorf(err,
                         "%s: %s need %lld bytes (%.3g GiB), more than the %lld bytes "
                         "(%.3g GiB) of memory available",
                         option_text, what, (long long)bytes, (double)bytes / (1 << 30),
                         (long long)avail, (double)avail / (1 << 30));
    return 0;
}
