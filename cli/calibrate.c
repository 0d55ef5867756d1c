/*
 * calibrate.c — `shardline calibrate`: runs the first N rows of a dataset through an mlp,
 * BERT-family or LLaMA-family model in f32 on the CPU, in one process, records the range of the
 * input of every linear layer (models/calib.h) and writes the static activation scales that
 * `--precision w8a8` reads, as DIR/shardline-calibration.safetensors (a GGUF file FILE:
 * DIR/FILE.shardline-calibration.safetensors, runner/batching.h).
 *
 * It drives the same task code as `run` (the same reading, tokenizing, packing and forward
 * pass; a decoder runs as `--task score` does, one forward over each whole text), without
 * units, part files or an output dataset: the outputs are computed into a scratch buffer and
 * dropped.
 */
#include "cli/calibrate.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sl_error.h"
#include "common/sl_fs.h"
#include "jobs/h5util.h"
#include "jobs/input.h"
#include "jobs/spec.h"
#include "models/calib.h"
#include "models/formats/fingerprint.h"
#include "partition/comm.h"
#include "partition/grid.h"
#include "runner/task.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: shardline calibrate --model DIR|FILE.gguf --input GLOB [--input-dataset NAME]\n"
            "                           --rows N --output DIR [--method max|percentile]\n"
            "                           [--percentile P] [--bos auto|always|never]\n\n"
            "Runs the first N rows of the inputs (files in path order) through an mlp, bert or\n"
            "llama-family model in f32 on the CPU (one process; a decoder scores each text, as\n"
            "--task score does) and records the range of each linear layer's input; writes\n"
            "DIR/" SL_CALIB_FILE " for --precision w8a8 (for a GGUF file\n"
            "FILE: DIR/FILE." SL_CALIB_FILE ").\n\n"
            "  --model DIR|FILE      mlp, bert or decoder model directory, or a decoder's GGUF\n"
            "                        file\n"
            "  --input GLOB          HDF5 input files (repeatable)\n"
            "  --input-dataset NAME  [default: features (mlp), text (bert, decoders)]\n"
            "  --rows N              rows to run [range: 1..1073741824]\n"
            "  --output DIR          where the file goes (created; w8a8 looks by default in the\n"
            "                        model directory, or in the folder holding the GGUF file)\n"
            "  --method max|percentile  the clip value of each layer: a percentile of |x| over\n"
            "                        all values seen, or the largest |x| seen [default:\n"
            "                        percentile]; a w8a8 row's block that reaches beyond its\n"
            "                        range takes its own step (report.json: w8a8_blocks). On\n"
            "                        MiniLM and SmolLM2, percentile 99 measured close to per-row\n"
            "                        (dynamic) scaling with about 3/4 of the blocks on the\n"
            "                        static step; max (over 99.8%% on it) measured least accurate\n"
            "  --percentile P        with --method percentile [default: 99] [range: (0, 100]]\n"
            "  --batch-tokens N, --batch-size N, --max-length N   as for run\n"
            "  --bos auto|always|never   decoders: as for run; calibrate with the setting the\n"
            "                        w8a8 runs will use [default: auto]\n");
}

static void on_row_error(void *ctx, int64_t row, const char *reason)
{
    (void)row;
    (void)reason;
    (*(int64_t *)ctx)++;
}

static int mkdir_p(const char *dir, sl_error_t *err)
{
    return sl_mkdir_p(dir, err) != 0 ? sl_error_prefix(err, "--output %s", dir) : 0;
}

int sl_calibrate_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"model", required_argument, NULL, 'm'},
                                             {"input", required_argument, NULL, 'i'},
                                             {"input-dataset", required_argument, NULL, 'd'},
                                             {"rows", required_argument, NULL, 'r'},
                                             {"output", required_argument, NULL, 'o'},
                                             {"method", required_argument, NULL, 'M'},
                                             {"percentile", required_argument, NULL, 'p'},
                                             {"batch-tokens", required_argument, NULL, 'T'},
                                             {"batch-size", required_argument, NULL, 'B'},
                                             {"max-length", required_argument, NULL, 'L'},
                                             {"bos", required_argument, NULL, 'b'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    const char *model = NULL, *dataset = NULL, *outdir = NULL, *method = "percentile";
    const char *btok = NULL, *bsize = NULL, *maxlen = NULL, *bos = NULL;
    char **inputs = sl_xcalloc((size_t)argc + 1, sizeof *inputs);
    int n_inputs = 0;
    long long rows = 0;
    double pct = 99.0;
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    optind = 1;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        char *end = NULL;
        switch (c) {
        case 'h':
            usage(stdout);
            free(inputs);
            return SL_EXIT_OK;
        case 'm': model = optarg; break;
        case 'i': inputs[n_inputs++] = optarg; break;
        case 'd': dataset = optarg; break;
        case 'o': outdir = optarg; break;
        case 'M': method = optarg; break;
        case 'T': btok = optarg; break;
        case 'B': bsize = optarg; break;
        case 'L': maxlen = optarg; break;
        case 'b': bos = optarg; break;
        case 'r':
            rows = strtoll(optarg, &end, 10);
            if (!*optarg || *end || rows < 1 || rows > (1LL << 30)) {
                fprintf(stderr, "shardline: error: --rows '%s': expected 1..1073741824\n", optarg);
                free(inputs);
                return SL_EXIT_USAGE;
            }
            break;
        case 'p':
            pct = strtod(optarg, &end);
            if (!*optarg || *end || !(pct > 0.0 && pct <= 100.0)) {
                fprintf(stderr,
                        "shardline: error: --percentile '%s': expected a number in (0, 100]\n",
                        optarg);
                free(inputs);
                return SL_EXIT_USAGE;
            }
            break;
        default:
            fprintf(stderr, "shardline: error: calibrate: unknown option or missing value '%s'\n",
                    argv[optind - 1]);
            usage(stderr);
            free(inputs);
            return SL_EXIT_USAGE;
        }
    }
    const char *missing = !model      ? "--model"
                          : !n_inputs ? "--input"
                          : !rows     ? "--rows"
                          : !outdir   ? "--output"
                                      : NULL;
    int bad_method = strcmp(method, "max") && strcmp(method, "percentile");
    if (missing || bad_method || optind != argc || size != 1) {
        if (rank == 0) {
            if (missing)
                fprintf(stderr, "shardline: error: calibrate: %s is required\n", missing);
            else if (bad_method)
                fprintf(stderr, "shardline: error: --method '%s': expected max or percentile\n",
                        method);
            else if (size != 1)
                fprintf(stderr,
                        "shardline: error: calibrate runs as one process (started with "
                        "%d ranks)\n",
                        size);
            else
                fprintf(stderr, "shardline: error: calibrate: unexpected argument '%s'\n",
                        argv[optind]);
        }
        free(inputs);
        return SL_EXIT_USAGE;
    }

    /* The run options the task code needs, as `run` would parse them. */
    char *rargv[64 + 2 * 64];
    int ra = 0;
    rargv[ra++] = "run";
    rargv[ra++] = "--model";
    rargv[ra++] = (char *)model;
    for (int i = 0; i < n_inputs && i < 60; i++) {
        rargv[ra++] = "--input";
        rargv[ra++] = inputs[i];
    }
    rargv[ra++] = "--output";
    rargv[ra++] = (char *)outdir;
    rargv[ra++] = "--precision";
    rargv[ra++] = "f32";
    rargv[ra++] = "--device";
    rargv[ra++] = "cpu";
    rargv[ra++] = "--quiet";
    /* --task stays auto: mlp predicts, bert embeds or classifies, a decoder scores (one forward
     * over each whole text; generate's sampled continuations would tie the ranges to a seed) */
    if (dataset) {
        rargv[ra++] = "--input-dataset";
        rargv[ra++] = (char *)dataset;
    }
    if (btok) {
        rargv[ra++] = "--batch-tokens";
        rargv[ra++] = (char *)btok;
    }
    if (bsize) {
        rargv[ra++] = "--batch-size";
        rargv[ra++] = (char *)bsize;
    }
    if (maxlen) {
        rargv[ra++] = "--max-length";
        rargv[ra++] = (char *)maxlen;
    }
    if (bos) {
        rargv[ra++] = "--bos";
        rargv[ra++] = (char *)bos;
    }
    rargv[ra] = NULL;

    sl_h5_quiet();
    sl_error_t err = {{0}};
    sl_job_t job;
    sl_task_plan_t plan;
    sl_inputs_t in;
    sl_grid_t grid;
    memset(&plan, 0, sizeof plan);
    memset(&in, 0, sizeof in);
    int status = SL_EXIT_OK, have_grid = 0;
    sl_backend_t *be = NULL;
    sl_task_t *task = NULL;
    sl_comm_t *comm = NULL;
    void *payload = NULL;
    void *bufs[8] = {0};
    int64_t failed = 0, done = 0;
    if (sl_job_parse(&job, ra, rargv, &err) != 0) {
        status = SL_EXIT_USAGE;
        goto out;
    }
    if (sl_task_plan(&job, &plan, &err) != 0) {
        status = SL_EXIT_INPUT;
        goto out;
    }
    if (sl_inputs_scan(&in, job.inputs, job.n_inputs, plan.dataset, plan.want_tokens, &err) != 0) {
        status = SL_EXIT_INPUT;
        goto out;
    }
    if (!plan.want_tokens && in.cols != plan.d_in) {
        sl_errorf(&err, "%s: dataset '%s' has %lld features but the model %s expects %lld",
                  in.shards[0].path, plan.dataset, (long long)in.cols, model, (long long)plan.d_in);
        status = SL_EXIT_INPUT;
        goto out;
    }
    if (in.total_rows < rows) {
        sl_errorf(&err, "--rows %lld: the inputs hold only %lld rows", rows,
                  (long long)in.total_rows);
        status = SL_EXIT_INPUT;
        goto out;
    }
    if (sl_grid_init(&grid, MPI_COMM_WORLD, 1, &err) != 0) {
        status = SL_EXIT_FAILURE;
        goto out;
    }
    have_grid = 1;
    be = sl_backend_create(SL_BACKEND_CPU, 0, sl_grid_cpu_threads(&grid), &err);
    if (!be) {
        status = SL_EXIT_FAILURE;
        goto out;
    }
    task = sl_task_load(&job, &plan, be, &grid, &err);
    if (!task) {
        status = SL_EXIT_INPUT;
        goto out;
    }
    comm = sl_comm_create(grid.tp, be, "auto", &err);
    if (!comm) {
        status = SL_EXIT_FAILURE;
        goto out;
    }

    const int64_t read_rows = sl_task_read_rows(task, &job, &in);
    payload = sl_task_payload_new(task, &in, read_rows);
    for (int i = 0; i < plan.outs.n && i < 8; i++)
        bufs[i] = sl_xcalloc((size_t)read_rows, sl_out_row_bytes(&plan.outs.spec[i]));
    sl_reader_t reader;
    sl_reader_init(&reader);
    sl_calib_record_start();
    for (int s = 0; s < in.n && done < rows && status == 0; s++) {
        for (int64_t r0 = 0; r0 < in.shards[s].rows && done < rows;) {
            int64_t n = in.shards[s].rows - r0;
            n = n < read_rows ? n : read_rows;
            n = n < rows - done ? n : rows - done;
            if (sl_task_read(task, &reader, &in, s, r0, n, payload, &err) != 0) {
                status = SL_EXIT_INPUT;
                break;
            }
            sl_task_compute(task, comm, payload, n, bufs, 0, on_row_error, &failed);
            r0 += n;
            done += n;
        }
    }
    sl_reader_close(&reader);
    const char **names = NULL;
    float *clip = NULL, **cols = NULL;
    int64_t seen = 0, *ncols = NULL;
    int n = sl_calib_record_finish(strcmp(method, "max") ? SL_CALIB_PERCENTILE : SL_CALIB_MAX, pct,
                                   &names, &clip, &cols, &ncols, &seen);
    uint64_t fp = 0;
    if (status == 0 && n == 0) {
        sl_errorf(&err, "calibrate: no linear layer of %s saw an input", model);
        status = SL_EXIT_INPUT;
    }
    if (status == 0 && sl_model_fingerprint(model, &fp, &err) != 0)
        status = SL_EXIT_INPUT;
    if (status == 0 && mkdir_p(outdir, &err) != 0)
        status = SL_EXIT_INPUT;
    char *path = sl_batch_calibration_path(model, outdir);
    if (status == 0 && sl_calib_write(path, fp, method, strcmp(method, "max") ? pct : 100.0, done,
                                      n, names, cols, ncols, &err) != 0)
        status = SL_EXIT_FAILURE;
    if (status == 0) {
        printf("%s: %d matrices, %lld rows (%lld failed), %lld input values, method %s", path, n,
               (long long)done, (long long)failed, (long long)seen, method);
        if (strcmp(method, "max"))
            printf(" %g", pct);
        printf("\n%-60s  %8s  %12s\n", "layer (weight)", "columns", "clip |x|");
        for (int i = 0; i < n; i++)
            if (clip[i] > 0.0f)
                printf("%-60s  %8lld  %12.6g\n", names[i], (long long)ncols[i], (double)clip[i]);
    }
    for (int i = 0; i < n; i++)
        free(cols[i]);
    free(cols);
    free(ncols);
    free(path);
    free(names);
    free(clip);
out:
    if (status != 0)
        fprintf(stderr, "shardline: error: %s\n", err.msg);
    for (int i = 0; i < 8; i++)
        free(bufs[i]);
    if (payload)
        sl_task_payload_free(task, payload);
    sl_comm_free(comm);
    sl_task_free(task);
    if (be)
        sl_backend_free(be);
    if (have_grid)
        sl_grid_free(&grid);
    sl_inputs_free(&in);
    sl_task_plan_free(&plan);
    sl_job_free(&job);
    free(inputs);
    return status;
}
