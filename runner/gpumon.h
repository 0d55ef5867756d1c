/*
 * gpumon.h — GPU metrics of a job: NVML (libnvidia-ml.so.1, part of the NVIDIA driver) is
 * loaded with dlopen at run time, so the program has no build-time dependency on it and
 * starts where it is missing. A small thread samples one device every second (utilisation,
 * memory, power, temperature, SM clock) into memory; it calls NVML only, never MPI or HDF5,
 * which stay on their own threads. The samples go into report.json ("gpu") and report.html.
 */
#ifndef SL_GPUMON_H
#define SL_GPUMON_H

#include <stddef.h>
#include <stdint.h>

/* One sample of one device. -1 in a field: NVML could not read it (not supported). */
typedef struct {
    double t;           /* seconds since sl_gpumon_start */
    float util_gpu;     /* percent of time a kernel ran */
    float util_mem;     /* percent of time device memory was read or written */
    double mem_used;    /* bytes */
    double mem_total;   /* bytes */
    float power_w;      /* watts */
    float temp_c;       /* degrees Celsius */
    float sm_clock_mhz; /* SM clock */
} sl_gpu_sample_t;

/* The NVML functions shardline uses, resolved from a loaded library. */
typedef struct sl_nvml sl_nvml_t;

/* Loads `lib` (NULL: "libnvidia-ml.so.1"), resolves the functions and calls nvmlInit_v2.
 * NULL when any step fails, with the reason in why (e.g. "libnvidia-ml.so.1: cannot open
 * shared object file", "nvmlInit_v2 not found in ..."); nothing stays loaded then. */
sl_nvml_t *sl_nvml_open(const char *lib, char *why, size_t len);
/* Number of devices NVML sees (-1 on error). */
int sl_nvml_device_count(sl_nvml_t *n);
/* Reads one sample of NVML device `index` (t left 0). 0, or -1 with why. */
int sl_nvml_sample(sl_nvml_t *n, int index, sl_gpu_sample_t *s, char *why, size_t len);
/* nvmlShutdown, then dlclose. NULL is fine. */
void sl_nvml_close(sl_nvml_t *n);

/* The NVML index of CUDA device `cuda_index` of this process: CUDA_VISIBLE_DEVICES, when it
 * lists numbers, renumbers the devices CUDA sees; NVML does not look at it. -1 when the
 * variable names devices otherwise (UUIDs). */
int sl_nvml_index_of_cuda(int cuda_index);

/* The sampler: a thread that samples device `nvml_index` every `period_s` seconds until
 * sl_gpumon_stop. */
typedef struct sl_gpumon sl_gpumon_t;
sl_gpumon_t *sl_gpumon_start(sl_nvml_t *n, int nvml_index, double period_s);
/* Stops the thread (joins it); the samples stay readable until sl_gpumon_free. */
void sl_gpumon_stop(sl_gpumon_t *m);
const sl_gpu_sample_t *sl_gpumon_samples(const sl_gpumon_t *m, int64_t *n);
void sl_gpumon_free(sl_gpumon_t *m);

#endif
