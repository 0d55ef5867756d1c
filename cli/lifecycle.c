/*
 * lifecycle.c — `shardline status` and `shardline merge` (see lifecycle.h).
 */
#include "cli/lifecycle.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/sl_fs.h"
#include "common/sl_json.h"
#include "jobs/h5util.h"
#include "jobs/input.h"
#include "jobs/output.h"
#include "partition/units.h"

/* What a manifest says about a job: enough to find and check every part file. */
typedef struct {
    sl_inputs_t in;
    sl_unit_t *units;
    int64_t nunits;
    sl_outputs_t outs;
    uint64_t model_fp, job_hash;
    char model[4096], task[32];
    cJSON *attrs; /* the manifest's "attributes": predictions.h5's root attributes, or NULL */
} job_view_t;

static const cJSON *need(const cJSON *obj, const char *key, const char *path, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        sl_errorf(err,
                  "%s: key '%s' is missing (not a shardline manifest, or from another version)",
                  path, key);
    return v;
}

static int hex_u64(const cJSON *v, uint64_t *out)
{
    char *end;
    if (!cJSON_IsString(v))
        return -1;
    *out = strtoull(v->valuestring, &end, 16);
    return *end == '\0' ? 0 : -1;
}

static void view_free(job_view_t *v)
{
    sl_inputs_free(&v->in);
    free(v->units);
    for (int i = 0; i < v->outs.n; i++)
        free((char *)v->outs.spec[i].name);
    for (int i = 0; i < v->outs.n_labels; i++)
        free(v->outs.labels[i]);
    free(v->outs.labels);
    cJSON_Delete(v->attrs);
}

static int view_load(job_view_t *v, const char *out, sl_error_t *err)
{
    memset(v, 0, sizeof *v);
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", out);
    char *text = NULL;
    if (sl_read_file(path, 1u << 30, &text, NULL, err) != 0)
        return -1; /* "OUT/manifest.json: cannot open: ..." says it: no job ran there */
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root)
        return sl_errorf(err, "%s: not valid JSON", path);
    int rc = -1;
    const cJSON *model, *opts, *inputs, *outputs, *x;
    if (!(model = need(root, "model", path, err)) || !(opts = need(root, "options", path, err)) ||
        !(inputs = need(root, "inputs", path, err)) ||
        !(outputs = need(model, "outputs", path, err)))
        goto out;
    if (hex_u64(need(root, "job_hash", path, err), &v->job_hash) != 0 ||
        hex_u64(need(model, "fingerprint", path, err), &v->model_fp) != 0) {
        sl_errorf(err, "%s: job_hash or model fingerprint is not a hex string", path);
        goto out;
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(model, "path")) && cJSON_IsString(x))
        snprintf(v->model, sizeof v->model, "%s", x->valuestring);
    if ((x = cJSON_GetObjectItemCaseSensitive(model, "task")) && cJSON_IsString(x))
        snprintf(v->task, sizeof v->task, "%s", x->valuestring);
    if ((x = cJSON_GetObjectItemCaseSensitive(root, "attributes")) && cJSON_IsObject(x))
        v->attrs = cJSON_Duplicate(x, 1);
    const cJSON *ur = need(opts, "unit_rows", path, err);
    if (!cJSON_IsNumber(ur) || ur->valuedouble < 1) {
        sl_errorf(err, "%s: options.unit_rows is not a positive number", path);
        goto out;
    }
    /* inputs, in the manifest's (path) order */
    int ni = cJSON_GetArraySize(inputs);
    v->in.shards = sl_xcalloc((size_t)ni + 1, sizeof *v->in.shards);
    v->in.dataset = sl_xstrdup("");
    const cJSON *item;
    cJSON_ArrayForEach(item, inputs)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(item, "path");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(item, "rows");
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(item, "first_row");
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(item, "size");
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(item, "mtime_ns");
        if (!cJSON_IsString(p) || !cJSON_IsNumber(r) || !cJSON_IsNumber(fr) ||
            !cJSON_IsNumber(sz) || !cJSON_IsString(mt)) {
            sl_errorf(err, "%s: inputs[%d] lacks path/rows/first_row/size/mtime_ns", path, v->in.n);
            goto out;
        }
        sl_shard_t *s = &v->in.shards[v->in.n++];
        s->path = sl_xstrdup(p->valuestring);
        s->rows = (int64_t)r->valuedouble;
        s->first_row = (int64_t)fr->valuedouble;
        s->size = (int64_t)sz->valuedouble;
        s->mtime_ns = strtoll(mt->valuestring, NULL, 10);
        v->in.total_rows += s->rows;
    }
    cJSON_ArrayForEach(item, outputs)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(item, "name");
        const cJSON *cols = cJSON_GetObjectItemCaseSensitive(item, "cols");
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
        if (v->outs.n == SL_MAX_OUTPUTS || !cJSON_IsString(nm) || !cJSON_IsNumber(cols) ||
            !cJSON_IsString(dt)) {
            sl_errorf(err, "%s: model.outputs[%d] is not {name, cols, dtype}", path, v->outs.n);
            goto out;
        }
        sl_out_spec_t *o = &v->outs.spec[v->outs.n++];
        o->name = sl_xstrdup(nm->valuestring);
        o->cols = (int64_t)cols->valuedouble;
        o->file_dtype = sl_out_dtype_parse(dt->valuestring);
    }
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(model, "labels");
    if (cJSON_IsArray(labels)) {
        v->outs.labels = sl_xcalloc((size_t)cJSON_GetArraySize(labels) + 1, sizeof(char *));
        cJSON_ArrayForEach(item, labels) v->outs.labels[v->outs.n_labels++] =
            sl_xstrdup(cJSON_IsString(item) ? item->valuestring : "");
    }
    int64_t *rows = sl_xcalloc((size_t)v->in.n + 1, sizeof *rows);
    for (int i = 0; i < v->in.n; i++)
        rows[i] = v->in.shards[i].rows;
    v->nunits = sl_units_plan(rows, v->in.n, (int64_t)ur->valuedouble, &v->units);
    free(rows);
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/* mtime of OUT/name in seconds, 0 when missing. */
static double file_mtime(const char *out, const char *name)
{
    char path[8192];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", out, name);
    return stat(path, &st) == 0 ? (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec : 0;
}

/* Whether unit i's part file is committed and belongs to this job; fills its mtime. */
static int unit_done(const char *out, const job_view_t *v, int64_t i, double *mtime)
{
    const sl_unit_t *u = &v->units[i];
    sl_part_meta_t m = {
        &v->in.shards[u->shard], u->row0, u->nrows, &v->outs, v->model_fp, v->job_hash};
    char *rel = sl_part_relpath(m.shard, u->row0, u->nrows);
    int ok = sl_part_matches(out, rel, &m);
    if (ok && mtime)
        *mtime = file_mtime(out, rel);
    free(rel);
    return ok;
}

/* The shared start of status and merge: one OUTPUT_DIR argument (or --help) and the flags
 * in `flags` (NULL-terminated; *set[i] becomes 1 when flags[i] is given), then its manifest.
 * Returns -1 to go on with *v loaded and *dir set, else the exit status. */
static int open_view(int argc, char **argv, const char *cmd, const char *usage, const char *what,
                     const char *const *flags, int *set, const char **dir, job_view_t *v)
{
    memset(v, 0, sizeof *v);
    *dir = NULL;
    int bad = 0, help = 0;
    for (int i = 1; i < argc; i++) {
        int k = -1;
        for (int f = 0; flags && flags[f]; f++)
            if (!strcmp(argv[i], flags[f]))
                k = f;
        if (k >= 0)
            set[k] = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            help = 1;
        else if (argv[i][0] == '-' || *dir)
            bad = 1;
        else
            *dir = argv[i];
    }
    if (help || bad || !*dir) {
        fprintf(help ? stdout : stderr, "usage: shardline %s %s\n\n%s\n", cmd, usage, what);
        return help ? SL_EXIT_OK : SL_EXIT_USAGE;
    }
    sl_error_t err;
    sl_h5_quiet();
    if (view_load(v, *dir, &err) != 0) {
        fprintf(stderr, "shardline: error: %s\n", err.msg);
        view_free(v);
        return SL_EXIT_INPUT;
    }
    return -1;
}

int sl_status_main(int argc, char **argv)
{
    job_view_t v;
    const char *out;
    int rc = open_view(argc, argv, "status", "OUTPUT_DIR",
                       "Prints a job's units committed and pending, rows, failed rows, throughput\n"
                       "and last update, from its output directory (also while it runs).",
                       NULL, NULL, &out, &v);
    if (rc >= 0)
        return rc;
    int64_t done = 0, rows_done = 0, failed = 0, first_rows = 0;
    double first = 0, last = 0;
    for (int64_t i = 0; i < v.nunits; i++) {
        double mt = 0;
        if (!unit_done(out, &v, i, &mt))
            continue;
        done++;
        rows_done += v.units[i].nrows;
        if (first == 0 || mt < first) {
            first = mt;
            first_rows = v.units[i].nrows; /* its rows were computed before the clock starts */
        }
        last = mt > last ? mt : last;
        /* failed rows of this part */
        const sl_unit_t *u = &v.units[i];
        char *rel = sl_part_relpath(&v.in.shards[u->shard], u->row0, u->nrows);
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", out, rel);
        free(rel);
        hid_t f = sl_h5_open_ro(path, NULL);
        if (f >= 0) {
            hid_t d = H5Dopen2(f, "failed_rows", H5P_DEFAULT);
            if (d >= 0) {
                hid_t sp = H5Dget_space(d);
                failed += (int64_t)H5Sget_simple_extent_npoints(sp);
                H5Sclose(sp);
                H5Dclose(d);
            }
            H5Fclose(f);
        }
    }
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/predictions.h5", out);
    int complete = done == v.nunits && stat(path, &st) == 0;
    if (complete)
        sl_vds_warn_missing(path);
    printf("output      %s\n", out);
    printf("model       %s%s%s\n", v.model, v.task[0] ? ", task " : "", v.task);
    printf("inputs      %d shard(s), %lld rows\n", v.in.n, (long long)v.in.total_rows);
    printf("units       %lld committed, %lld pending (of %lld)\n", (long long)done,
           (long long)(v.nunits - done), (long long)v.nunits);
    printf("rows        %lld committed (%.1f%%), %lld failed\n", (long long)rows_done,
           v.in.total_rows ? 100.0 * (double)rows_done / (double)v.in.total_rows : 100.0,
           (long long)failed);
    /* Throughput: the finished run's own figure when report.json is newer than the manifest
     * (the run that wrote it has ended), so status and the report agree; while a run goes
     * on, the rate between its first and last commits. */
    cJSON *rep = NULL;
    if (file_mtime(out, "report.json") >= file_mtime(out, "manifest.json") &&
        file_mtime(out, "report.json") > 0) {
        snprintf(path, sizeof path, "%s/report.json", out);
        rep = sl_json_read(path, 1u << 26, 0, NULL);
    }
    const cJSON *rps = cJSON_GetObjectItemCaseSensitive(rep, "rows_per_second");
    const cJSON *rc_rows = cJSON_GetObjectItemCaseSensitive(rep, "rows_computed");
    const cJSON *secs = cJSON_GetObjectItemCaseSensitive(rep, "seconds");
    if (cJSON_IsNumber(rps) && cJSON_IsNumber(rc_rows) && cJSON_IsNumber(secs))
        printf("throughput  %.1f rows/s in the last run (%.0f rows computed in %.1f s, model "
               "load included; report.json)\n",
               rps->valuedouble, rc_rows->valuedouble, secs->valuedouble);
    else if (done > 1 && last > first)
        printf("throughput  %.1f rows/s so far (between the first and the last commit)\n",
               (double)(rows_done - first_rows) / (last - first));
    cJSON_Delete(rep);
    if (done > 0) {
        time_t t = (time_t)last;
        char when[64];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
        printf("last update %s (%.0f s ago)\n", when, difftime(time(NULL), t));
    }
    printf("state       %s\n",
           complete ? "complete: predictions.h5 written"
           : done == v.nunits
               ? "all units committed; predictions.h5 missing (run shardline merge)"
               : "incomplete: running, stopped or waiting (rerun the job to resume)");
    view_free(&v);
    return SL_EXIT_OK;
}

int sl_merge_main(int argc, char **argv)
{
    job_view_t v;
    const char *out;
    static const char *const flags[] = {"--consolidate", NULL};
    int consolidate = 0;
    int rc =
        open_view(argc, argv, "merge", "OUTPUT_DIR [--consolidate]",
                  "Writes OUTPUT_DIR/predictions.h5 over the committed part files once every\n"
                  "unit of the job is committed (exit 3 and the count of pending units if not).\n"
                  "Its datasets are virtual: they read their rows from parts/ beside the file.\n\n"
                  "  --consolidate   write predictions.h5 as one self-contained file instead (the\n"
                  "                  values copied out of the part files), to be copied or moved\n"
                  "                  on its own; the part files stay, so the job can still resume.",
                  flags, &consolidate, &out, &v);
    if (rc >= 0)
        return rc;
    sl_error_t err;
    int64_t pending = 0;
    for (int64_t i = 0; i < v.nunits; i++)
        pending += !unit_done(out, &v, i, NULL);
    int status = SL_EXIT_OK;
    int64_t failed = 0;
    if (pending > 0) {
        fprintf(stderr,
                "shardline: error: %s: %lld of %lld units are not committed yet; run the job (or "
                "the missing array tasks) first\n",
                out, (long long)pending, (long long)v.nunits);
        status = SL_EXIT_INPUT;
    } else if (sl_predictions_write(out, &v.in, v.units, v.nunits, &v.outs, v.attrs, &failed,
                                    &err) != 0) {
        fprintf(stderr, "shardline: error: %s\n", err.msg);
        status = SL_EXIT_FAILURE;
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/predictions.h5", out);
        if (consolidate && sl_predictions_consolidate(path, path, &err) != 0) {
            fprintf(stderr, "shardline: error: %s\n", err.msg);
            status = SL_EXIT_FAILURE;
        } else {
            fprintf(stderr, "shardline: merged %lld units, %lld rows (%lld failed) -> %s%s\n",
                    (long long)v.nunits, (long long)v.in.total_rows, (long long)failed, path,
                    consolidate ? " (self-contained)" : "");
        }
    }
    view_free(&v);
    return status;
}
