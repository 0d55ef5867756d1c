/*
 * test_gpumon.c — the NVML loader (runner/gpumon.h) where NVML is or is not there:
 *   - a library that cannot be loaded (a missing path) gives NULL and a reason naming it;
 *   - a library that loads but is not NVML (the C math library) gives NULL and names the
 *     first missing entry point, nvmlInit_v2, and leaves nothing loaded;
 *   - the driver's libnvidia-ml.so.1: on a machine without the NVIDIA driver, NULL with the
 *     loader's reason; with it, a device count and one sample of device 0 in sane ranges;
 *   - CUDA_VISIBLE_DEVICES renumbering: "3,1" maps CUDA device 0 to NVML 3 and 1 to 1, a
 *     device past the list or a UUID list gives -1, no variable leaves the index as is.
 * The job-level behaviour (one log line, nothing in report.json) is in test_report_html.
 */
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "runner/gpumon.h"
#include "sl_test.h"

int main(void)
{
    char why[256];

    why[0] = '\0';
    sl_nvml_t *n = sl_nvml_open("/nonexistent/libnvidia-ml.so.1", why, sizeof why);
    CHECK(n == NULL);
    CHECKF(strstr(why, "/nonexistent/libnvidia-ml.so.1") != NULL, "why: '%s'", why);

    why[0] = '\0';
    n = sl_nvml_open("libm.so.6", why, sizeof why);
    CHECK(n == NULL);
    CHECKF(strstr(why, "libm.so.6") && strstr(why, "nvmlInit_v2"), "why: '%s'", why);

    why[0] = '\0';
    n = sl_nvml_open(NULL, why, sizeof why);
    if (!n) {
        CHECKF(why[0] != '\0', "an unavailable NVML says why");
        printf("NVML unavailable here: %s\n", why);
    } else {
        int count = sl_nvml_device_count(n);
        CHECKF(count >= 0, "device count %d", count);
        printf("NVML: %d device(s)\n", count);
        if (count > 0) {
            sl_gpu_sample_t s;
            CHECKF(sl_nvml_sample(n, 0, &s, why, sizeof why) == 0, "%s", why);
            CHECKF(s.util_gpu <= 100 && s.mem_total > 0 && s.mem_used <= s.mem_total,
                   "util %g%%, memory %g of %g", s.util_gpu, s.mem_used, s.mem_total);
            /* the sampler, for two periods */
            sl_gpumon_t *m = sl_gpumon_start(n, 0, 0.1);
            struct timespec ts = {0, 250000000};
            nanosleep(&ts, NULL);
            sl_gpumon_stop(m);
            int64_t ns = 0;
            const sl_gpu_sample_t *v = sl_gpumon_samples(m, &ns);
            CHECKF(ns >= 2 && v[ns - 1].t > v[0].t, "%lld samples", (long long)ns);
            sl_gpumon_free(m);
        }
        CHECKF(sl_nvml_sample(n, 1 << 20, &(sl_gpu_sample_t){0}, why, sizeof why) != 0,
               "a device that does not exist is an error");
        sl_nvml_close(n);
    }

    unsetenv("CUDA_VISIBLE_DEVICES");
    CHECK(sl_nvml_index_of_cuda(2) == 2);
    setenv("CUDA_VISIBLE_DEVICES", "3,1", 1);
    CHECK(sl_nvml_index_of_cuda(0) == 3);
    CHECK(sl_nvml_index_of_cuda(1) == 1);
    CHECK(sl_nvml_index_of_cuda(2) == -1);
    setenv("CUDA_VISIBLE_DEVICES", "GPU-8f2a6c1e-0000-0000-0000-000000000000", 1);
    CHECK(sl_nvml_index_of_cuda(0) == -1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    return sl_test_finish("test_gpumon");
}
