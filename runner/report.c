/*
 * report.c — the records behind report.json's "timeline", "batches", "hosts" and "gpu" (see
 * report.h): kept per rank while the job runs, gathered to rank 0 at the end.
 */
#include "runner/report.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_error.h"

void sl_report_start(sl_report_rec_t *r, const sl_grid_t *g, sl_backend_t *be, int quiet)
{
    memset(r, 0, sizeof *r);
    r->nvml_index = -1;
    /* Every rank's clock starts here, after a collective: their times line up within the
     * barrier's skew. */
    MPI_Barrier(g->world);
    r->base = MPI_Wtime();
    char why[256] = "";
    if (sl_backend_kind(be) != SL_BACKEND_CUDA) {
        snprintf(why, sizeof why, "no GPU (CPU backend)");
    } else {
        int dev = g->local_rank % (sl_cuda_device_count() > 0 ? sl_cuda_device_count() : 1);
        r->nvml_index = sl_nvml_index_of_cuda(dev);
        if (r->nvml_index < 0)
            snprintf(why, sizeof why, "CUDA_VISIBLE_DEVICES does not list device numbers");
        else if ((r->nvml = sl_nvml_open(NULL, why, sizeof why)) != NULL)
            r->mon = sl_gpumon_start(r->nvml, r->nvml_index, 1.0);
    }
    /* One line for the whole job: how many ranks sample, else the first rank's reason. */
    int sampling = r->mon != NULL, nsampling = 0;
    MPI_Reduce(&sampling, &nsampling, 1, MPI_INT, MPI_SUM, 0, g->world);
    char *whys = g->world_rank == 0 ? sl_xcalloc((size_t)g->world_size, sizeof why) : NULL;
    MPI_Gather(why, sizeof why, MPI_CHAR, whys, sizeof why, MPI_CHAR, 0, g->world);
    if (g->world_rank == 0 && !quiet) {
        if (nsampling == g->world_size)
            sl_log_info("GPU metrics: NVML sampled every 1 s on %d rank(s)", nsampling);
        else
            for (int i = 0; i < g->world_size; i++)
                if (whys[(size_t)i * sizeof why]) {
                    if (nsampling == 0)
                        sl_log_info("GPU metrics: not recorded: %s", whys + (size_t)i * sizeof why);
                    else
                        sl_log_info(
                            "GPU metrics: NVML sampled on %d of %d rank(s); not on rank %d: %s",
                            nsampling, g->world_size, i, whys + (size_t)i * sizeof why);
                    break;
                }
    }
    free(whys);
}

double sl_report_now(const sl_report_rec_t *r) { return MPI_Wtime() - r->base; }

void sl_report_unit(sl_report_rec_t *r, double t0, double t1, int64_t rows)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->units = sl_xrealloc(r->units, (size_t)r->cap * sizeof *r->units);
    }
    r->units[r->n++] = (sl_unit_time_t){t0, t1, (double)rows};
}

/* Gathers `n` items of `size` bytes from every rank to rank 0: the concatenation there (in
 * rank order) with counts[rank] items each; NULL elsewhere. */
static void *gather_var(MPI_Comm comm, const void *mine, int n, size_t size, int **counts_out)
{
    int rank, nranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &nranks);
    int *counts = rank == 0 ? sl_xcalloc((size_t)nranks, sizeof *counts) : NULL;
    MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, comm);
    int *bytes = NULL, *displs = NULL;
    char *all = NULL;
    int nb = (int)((size_t)n * size);
    if (rank == 0) {
        bytes = sl_xcalloc((size_t)nranks, sizeof *bytes);
        displs = sl_xcalloc((size_t)nranks, sizeof *displs);
        size_t total = 0;
        for (int i = 0; i < nranks; i++) {
            bytes[i] = (int)((size_t)counts[i] * size);
            displs[i] = (int)total;
            total += (size_t)bytes[i];
        }
        all = sl_xmalloc(total + 1);
    }
    MPI_Gatherv(mine, nb, MPI_BYTE, all, bytes, displs, MPI_BYTE, 0, comm);
    free(bytes);
    free(displs);
    *counts_out = counts;
    return all;
}

static cJSON *num_array(const double *v, int64_t n, size_t stride_doubles)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[(size_t)i * stride_doubles]));
    return a;
}

cJSON *sl_report_gather(sl_report_rec_t *r, const sl_grid_t *g, const sl_batch_hist_t *h)
{
    sl_gpumon_stop(r->mon);
    int rank = g->world_rank, size = g->world_size;

    /* who is where */
    char host[64];
    snprintf(host, sizeof host, "%s", g->host);
    char *hosts = rank == 0 ? sl_xcalloc((size_t)size, sizeof host) : NULL;
    MPI_Gather(host, sizeof host, MPI_CHAR, hosts, sizeof host, MPI_CHAR, 0, g->world);
    int coords[2] = {g->dp_rank, g->tp_rank};
    int *all_coords = rank == 0 ? sl_xcalloc((size_t)size * 2, sizeof *all_coords) : NULL;
    MPI_Gather(coords, 2, MPI_INT, all_coords, 2, MPI_INT, 0, g->world);

    /* units: [t0, t1, rows] per unit */
    int *ucounts = NULL;
    sl_unit_time_t *units = gather_var(g->world, r->units, (int)r->n, sizeof *r->units, &ucounts);

    /* batch histograms: summed over the TP group leaders (every rank of a group runs the same
     * passes) */
    sl_batch_hist_t zero, mine = *h, sum;
    memset(&zero, 0, sizeof zero);
    if (g->tp_rank != 0)
        mine = zero;
    MPI_Reduce(&mine, &sum, (int)(sizeof sum / sizeof(int64_t)), MPI_INT64_T, MPI_SUM, 0, g->world);

    /* GPU samples */
    int64_t ns = 0;
    const sl_gpu_sample_t *smp = sl_gpumon_samples(r->mon, &ns);
    int *scounts = NULL;
    sl_gpu_sample_t *samples = gather_var(g->world, smp, (int)ns, sizeof *smp, &scounts);
    int idx = r->nvml_index, *indices = rank == 0 ? sl_xcalloc((size_t)size, sizeof(int)) : NULL;
    MPI_Gather(&idx, 1, MPI_INT, indices, 1, MPI_INT, 0, g->world);

    cJSON *out = NULL;
    if (rank == 0) {
        out = cJSON_CreateObject();
        cJSON *ha = cJSON_AddArrayToObject(out, "hosts");
        for (int i = 0; i < size; i++)
            cJSON_AddItemToArray(ha, cJSON_CreateString(hosts + (size_t)i * sizeof host));

        cJSON *tl = cJSON_AddObjectToObject(out, "timeline");
        cJSON_AddStringToObject(tl, "clock", "seconds since the job started computing");
        cJSON_AddStringToObject(tl, "units", "[start, end, rows] of each unit a group computed");
        cJSON *groups = cJSON_AddArrayToObject(tl, "groups");
        size_t off = 0;
        for (int i = 0; i < size; i++) {
            if (all_coords[2 * i + 1] == 0) { /* the group's leader records its units */
                cJSON *gr = cJSON_CreateObject();
                cJSON_AddNumberToObject(gr, "dp", all_coords[2 * i]);
                cJSON_AddNumberToObject(gr, "rank", i);
                cJSON *ua = cJSON_AddArrayToObject(gr, "units");
                for (int k = 0; k < ucounts[i]; k++) {
                    const sl_unit_time_t *u = &units[off + (size_t)k];
                    double v[3] = {u->t0, u->t1, u->rows};
                    cJSON_AddItemToArray(ua, num_array(v, 3, 1));
                }
                cJSON_AddItemToArray(groups, gr);
            }
            off += (size_t)ucounts[i];
        }

        cJSON *ba = cJSON_AddObjectToObject(out, "batches");
        double d[SL_BATCH_HIST_BINS];
        for (int k = 0; k < SL_BATCH_HIST_BINS; k++)
            d[k] = (double)sum.batch_rows[k];
        cJSON_AddStringToObject(ba, "rows_bins", "bin k: forward passes of 2^k .. 2^(k+1)-1 rows");
        cJSON_AddItemToObject(ba, "rows", num_array(d, SL_BATCH_HIST_BINS, 1));
        double p[10];
        for (int k = 0; k < 10; k++)
            p[k] = (double)sum.padding[k];
        cJSON_AddStringToObject(
            ba, "padding_bins",
            "bin k: passes with 10k % .. 10(k+1) % of the padded tokens padding");
        cJSON_AddItemToObject(ba, "padding", num_array(p, 10, 1));
        cJSON_AddNumberToObject(ba, "real_tokens", (double)sum.real_tokens);
        cJSON_AddNumberToObject(ba, "padded_tokens", (double)sum.padded_tokens);

        int64_t total_samples = 0;
        for (int i = 0; i < size; i++)
            total_samples += scounts[i];
        if (total_samples > 0) {
            cJSON *gpu = cJSON_AddObjectToObject(out, "gpu");
            cJSON_AddStringToObject(gpu, "source",
                                    "NVML, sampled every 1 s per rank; -1: not supported");
            cJSON *ra = cJSON_AddArrayToObject(gpu, "ranks");
            size_t so = 0;
            for (int i = 0; i < size; i++) {
                const sl_gpu_sample_t *s = samples + so;
                int n = scounts[i];
                so += (size_t)n;
                if (n == 0)
                    continue;
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "rank", i);
                cJSON_AddNumberToObject(o, "nvml_index", indices[i]);
                cJSON_AddNumberToObject(o, "memory_total_bytes", s[0].mem_total);
                double *col = sl_xcalloc((size_t)n, sizeof *col);
#define SL_COLUMN(key, expr)                                                                       \
    do {                                                                                           \
        for (int k = 0; k < n; k++)                                                                \
            col[k] = (double)(s[k].expr);                                                          \
        cJSON_AddItemToObject(o, key, num_array(col, n, 1));                                       \
    } while (0)
                SL_COLUMN("t", t);
                SL_COLUMN("util_gpu_percent", util_gpu);
                SL_COLUMN("util_memory_percent", util_mem);
                SL_COLUMN("memory_used_bytes", mem_used);
                SL_COLUMN("power_watts", power_w);
                SL_COLUMN("temperature_c", temp_c);
                SL_COLUMN("sm_clock_mhz", sm_clock_mhz);
#undef SL_COLUMN
                free(col);
                cJSON_AddItemToArray(ra, o);
            }
        }
    }
    free(hosts);
    free(all_coords);
    free(units);
    free(ucounts);
    free(samples);
    free(scounts);
    free(indices);
    return out;
}

void sl_report_merge(cJSON *rep, cJSON *extra)
{
    if (!extra)
        return;
    cJSON *hosts = cJSON_GetObjectItemCaseSensitive(extra, "hosts");
    cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(rep, "per_rank"))
    {
        const cJSON *rk = cJSON_GetObjectItemCaseSensitive(it, "rank");
        const cJSON *h = cJSON_IsNumber(rk) ? cJSON_GetArrayItem(hosts, rk->valueint) : NULL;
        if (cJSON_IsString(h))
            cJSON_AddStringToObject(it, "host", h->valuestring);
    }
    const char *keys[] = {"timeline", "batches", "gpu"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(extra, keys[i]);
        if (v)
            cJSON_AddItemToObject(rep, keys[i], v);
    }
    cJSON_Delete(extra);
}

void sl_report_free(sl_report_rec_t *r)
{
    sl_gpumon_free(r->mon);
    sl_nvml_close(r->nvml);
    free(r->units);
    memset(r, 0, sizeof *r);
}
