/*
 * gpumon.c — NVML through dlopen, and the one-second sampler thread (see gpumon.h). The few
 * NVML types and entry points used are declared here from NVML's documented C API (nvml.h
 * is not needed to build): handles are opaque pointers, every call returns an int status
 * (0: success), and nvmlErrorString turns a status into text.
 */
#include "runner/gpumon.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sl_error.h"

typedef int nvml_return_t;
typedef struct nvml_device_st *nvml_device_t;
typedef struct {
    unsigned int gpu, memory;
} nvml_utilization_t;
typedef struct {
    unsigned long long total, free, used;
} nvml_memory_t;
enum { NVML_TEMPERATURE_GPU = 0, NVML_CLOCK_SM = 1 };

struct sl_nvml {
    void *lib;
    nvml_return_t (*init)(void);
    nvml_return_t (*shutdown)(void);
    const char *(*error_string)(nvml_return_t);
    nvml_return_t (*count)(unsigned int *);
    nvml_return_t (*by_index)(unsigned int, nvml_device_t *);
    nvml_return_t (*utilization)(nvml_device_t, nvml_utilization_t *);
    nvml_return_t (*memory)(nvml_device_t, nvml_memory_t *);
    nvml_return_t (*power)(nvml_device_t, unsigned int *);
    nvml_return_t (*temperature)(nvml_device_t, int, unsigned int *);
    nvml_return_t (*clock)(nvml_device_t, int, unsigned int *);
};

/* dlsym's void * into a function pointer: through memcpy, which ISO C allows. */
static int resolve(void *lib, const char *name, void *fnptr, size_t size)
{
    void *p = dlsym(lib, name);
    if (!p)
        return -1;
    memcpy(fnptr, &p, size);
    return 0;
}

sl_nvml_t *sl_nvml_open(const char *lib, char *why, size_t len)
{
    if (!lib)
        lib = "libnvidia-ml.so.1";
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, len, "%s", e ? e : lib);
        return NULL;
    }
    sl_nvml_t *n = sl_xcalloc(1, sizeof *n);
    n->lib = h;
    struct {
        const char *name;
        void *fn;
        size_t size;
    } syms[] = {
        {"nvmlInit_v2", &n->init, sizeof n->init},
        {"nvmlShutdown", &n->shutdown, sizeof n->shutdown},
        {"nvmlErrorString", &n->error_string, sizeof n->error_string},
        {"nvmlDeviceGetCount_v2", &n->count, sizeof n->count},
        {"nvmlDeviceGetHandleByIndex_v2", &n->by_index, sizeof n->by_index},
        {"nvmlDeviceGetUtilizationRates", &n->utilization, sizeof n->utilization},
        {"nvmlDeviceGetMemoryInfo", &n->memory, sizeof n->memory},
        {"nvmlDeviceGetPowerUsage", &n->power, sizeof n->power},
        {"nvmlDeviceGetTemperature", &n->temperature, sizeof n->temperature},
        {"nvmlDeviceGetClockInfo", &n->clock, sizeof n->clock},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (resolve(h, syms[i].name, syms[i].fn, syms[i].size) != 0) {
            snprintf(why, len, "%s: no function %s (not NVML?)", lib, syms[i].name);
            dlclose(h);
            free(n);
            return NULL;
        }
    nvml_return_t rc = n->init();
    if (rc != 0) {
        snprintf(why, len, "%s: nvmlInit_v2 failed: %s (status %d)", lib, n->error_string(rc), rc);
        dlclose(h);
        free(n);
        return NULL;
    }
    return n;
}

int sl_nvml_device_count(sl_nvml_t *n)
{
    unsigned int c = 0;
    return n->count(&c) == 0 ? (int)c : -1;
}

int sl_nvml_sample(sl_nvml_t *n, int index, sl_gpu_sample_t *s, char *why, size_t len)
{
    nvml_device_t d;
    nvml_return_t rc = n->by_index((unsigned int)index, &d);
    if (rc != 0) {
        snprintf(why, len, "NVML device %d: %s", index, n->error_string(rc));
        return -1;
    }
    nvml_utilization_t u;
    nvml_memory_t m;
    unsigned int mw, temp, clk;
    s->t = 0;
    /* A field a device does not support reads -1; the others are still recorded. */
    int ok_u = n->utilization(d, &u) == 0;
    s->util_gpu = ok_u ? (float)u.gpu : -1.0f;
    s->util_mem = ok_u ? (float)u.memory : -1.0f;
    int ok_m = n->memory(d, &m) == 0;
    s->mem_used = ok_m ? (double)m.used : -1.0;
    s->mem_total = ok_m ? (double)m.total : -1.0;
    s->power_w = n->power(d, &mw) == 0 ? 1e-3f * (float)mw : -1.0f;
    s->temp_c = n->temperature(d, NVML_TEMPERATURE_GPU, &temp) == 0 ? (float)temp : -1.0f;
    s->sm_clock_mhz = n->clock(d, NVML_CLOCK_SM, &clk) == 0 ? (float)clk : -1.0f;
    return 0;
}

void sl_nvml_close(sl_nvml_t *n)
{
    if (!n)
        return;
    n->shutdown();
    dlclose(n->lib);
    free(n);
}

int sl_nvml_index_of_cuda(int cuda_index)
{
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    if (!cvd || !*cvd)
        return cuda_index;
    const char *p = cvd;
    for (int i = 0;; i++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0'))
            return -1; /* UUIDs or MIG names */
        if (i == cuda_index)
            return (int)v;
        if (*end == '\0')
            return -1;
        p = end + 1;
    }
}

/* ---- the sampler --------------------------------------------------------------------------- */

struct sl_gpumon {
    sl_nvml_t *nvml;
    int index;
    double period;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    int quit;
    struct timespec t0;
    sl_gpu_sample_t *s;
    int64_t n, cap;
};

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

static void *sampler(void *arg)
{
    sl_gpumon_t *m = arg;
    pthread_mutex_lock(&m->mu);
    for (int64_t k = 0; !m->quit; k++) {
        pthread_mutex_unlock(&m->mu);
        sl_gpu_sample_t s;
        char why[128];
        int ok = sl_nvml_sample(m->nvml, m->index, &s, why, sizeof why) == 0;
        s.t = since(&m->t0);
        pthread_mutex_lock(&m->mu);
        if (ok) {
            if (m->n == m->cap) {
                m->cap = m->cap ? 2 * m->cap : 256;
                m->s = sl_xrealloc(m->s, (size_t)m->cap * sizeof *m->s);
            }
            m->s[m->n++] = s;
        }
        /* Sleep until the next whole period (CLOCK_MONOTONIC deadline), or until stopped. */
        double next = (double)(k + 1) * m->period;
        struct timespec dl = m->t0;
        dl.tv_sec += (time_t)next;
        dl.tv_nsec += (long)((next - (double)(time_t)next) * 1e9);
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        while (!m->quit && pthread_cond_timedwait(&m->wake, &m->mu, &dl) == 0)
            ;
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

sl_gpumon_t *sl_gpumon_start(sl_nvml_t *n, int nvml_index, double period_s)
{
    sl_gpumon_t *m = sl_xcalloc(1, sizeof *m);
    m->nvml = n;
    m->index = nvml_index;
    m->period = period_s > 0 ? period_s : 1.0;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the deadlines above are monotonic */
    pthread_cond_init(&m->wake, &ca);
    pthread_condattr_destroy(&ca);
    clock_gettime(CLOCK_MONOTONIC, &m->t0);
    if (pthread_create(&m->thread, NULL, sampler, m) != 0)
        SL_FATAL("pthread_create: cannot start the GPU sampler");
    return m;
}

void sl_gpumon_stop(sl_gpumon_t *m)
{
    if (!m || m->quit)
        return;
    pthread_mutex_lock(&m->mu);
    m->quit = 1;
    pthread_cond_signal(&m->wake);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
}

const sl_gpu_sample_t *sl_gpumon_samples(const sl_gpumon_t *m, int64_t *n)
{
    *n = m ? m->n : 0;
    return m ? m->s : NULL;
}

void sl_gpumon_free(sl_gpumon_t *m)
{
    if (!m)
        return;
    sl_gpumon_stop(m);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->mu);
    free(m->s);
    free(m);
}
