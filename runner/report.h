/*
 * report.h — what a job records for its report beyond the per-phase seconds: when each unit
 * was computed and by which data-parallel group (throughput over time), the sizes and padding
 * of the forward passes, and GPU metrics sampled every second (runner/gpumon.h). Each rank
 * records its own; sl_report_gather (collective) brings it all to rank 0, which adds it to
 * report.json; report_html.c draws report.html from report.json and manifest.json.
 */
#ifndef SL_REPORT_H
#define SL_REPORT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "partition/grid.h"
#include "runner/gpumon.h"
#include "runner/task.h"

typedef struct {
    double t0, t1; /* seconds since sl_report_start: the unit's first batch, its hand-over */
    double rows;
} sl_unit_time_t;

typedef struct {
    double base; /* MPI_Wtime at sl_report_start */
    sl_unit_time_t *units;
    int64_t n, cap;
    sl_nvml_t *nvml;
    sl_gpumon_t *mon;
    int nvml_index;
} sl_report_rec_t;

/* Collective over g->world: starts the clock and, on ranks of the CUDA backend, the GPU
 * sampler (NVML index of the backend's device). Rank 0 says in one line (unless quiet)
 * whether GPU metrics are sampled, or why not. */
void sl_report_start(sl_report_rec_t *r, const sl_grid_t *g, sl_backend_t *be, int quiet);
/* Seconds since sl_report_start. */
double sl_report_now(const sl_report_rec_t *r);
/* A unit of `rows` rows computed from t0 to t1 (sl_report_now times; group leaders only). */
void sl_report_unit(sl_report_rec_t *r, double t0, double t1, int64_t rows);
/* Collective over g->world: stops the sampler and gathers every rank's records. On rank 0
 * returns an object with "timeline", "batches", "hosts" and (when sampled) "gpu" for
 * report.json; NULL elsewhere. */
cJSON *sl_report_gather(sl_report_rec_t *r, const sl_grid_t *g, const sl_batch_hist_t *h);
/* Rank 0: moves what sl_report_gather returned into report.json's root (each per_rank entry
 * gets its "host") and frees it. */
void sl_report_merge(cJSON *rep, cJSON *extra);
void sl_report_free(sl_report_rec_t *r);

/* report.html beside report.json in out_dir, drawn from report.json and manifest.json there
 * (and predictions.h5's /errors when it exists). 0, or -1 with a message naming the file. */
int sl_report_html_write(const char *out_dir, sl_error_t *err);
/* `shardline report OUTPUT_DIR`: (re)writes OUTPUT_DIR/report.html. */
int sl_report_main(int argc, char **argv);

#endif
