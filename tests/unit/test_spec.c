/*
 * test_spec.c — `shardline run` option bounds and the memory check of option-sized buffers.
 *
 * Every numeric option gets INT64_MAX, 2^62, 2^31-1, 0, its bound and its bound + 1: values
 * inside [min, max] are accepted and stored, the others refused with a message naming the
 * option and the bound (the runner exits 2 on them). Before the bounds, 2^62 rows per batch
 * overflowed the buffer size and HDF5 wrote past the buffer, and 2^63-1 text bytes made a
 * 2^63-byte memset. Also: an empty --stop string is refused; a job file's binary bytes are
 * escaped in messages; sl_task_check_memory refuses buffers larger than the memory given,
 * naming the option, for sizes that are inside the bounds but too big together.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_size.h"
#include "jobs/spec.h"
#include "runner/task.h"
#include "sl_test.h"

static int parse(sl_job_t *job, sl_error_t *err, int n, const char **extra)
{
    const char *argv[32] = {"run", "--model", "m", "--input", "i.h5", "--output", "o"};
    int argc = 7;
    for (int i = 0; i < n; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    err->msg[0] = '\0';
    return sl_job_parse(job, argc, (char **)argv, err);
}

typedef struct {
    const char *name;
    long long min, max;
    size_t offset;
    int is_i64; /* else int (or double for the F64 options) */
    int is_f64;
} bound_t;

#define OFF(f) offsetof(sl_job_t, f)
static const bound_t bounds[] = {
    {"tp", 1, 1024, OFF(tp), 0, 0},
    {"unit-rows", 1, 1LL << 30, OFF(unit_rows), 1, 0},
    {"batch-size", 1, 1LL << 20, OFF(batch_size), 1, 0},
    {"max-length", 0, 1LL << 20, OFF(max_length), 0, 0},
    {"batch-tokens", 0, 1LL << 24, OFF(batch_tokens), 1, 0},
    {"max-new-tokens", 1, 1LL << 20, OFF(max_new_tokens), 0, 0},
    {"top-k", 0, 1LL << 24, OFF(top_k), 0, 0},
    {"seed", 0, INT64_MAX, OFF(seed), 1, 0},
    {"text-bytes", 0, 1LL << 24, OFF(text_bytes), 1, 0},
    {"array-tasks", 1, 1LL << 20, OFF(array_tasks), 0, 0},
    {"prefetch", 1, 64, OFF(prefetch), 0, 0},
    {"temperature", 0, 100, OFF(temperature), 0, 1},
};

static void test_bounds(void)
{
    const long long probes[] = {INT64_MAX, 1LL << 62, (1LL << 62) + 1, INT32_MAX, 0, -1};
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        const bound_t *o = &bounds[b];
        long long vals[8];
        int nv = 0;
        for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++)
            vals[nv++] = probes[k];
        vals[nv++] = o->max;
        if (o->max < INT64_MAX)
            vals[nv++] = o->max + 1;
        for (int k = 0; k < nv; k++) {
            char opt[64], val[32];
            snprintf(opt, sizeof opt, "--%s", o->name);
            snprintf(val, sizeof val, "%lld", vals[k]);
            const char *extra[2] = {opt, val};
            sl_job_t job;
            sl_error_t err;
            int rc = parse(&job, &err, 2, extra);
            int ok = vals[k] >= o->min && vals[k] <= o->max;
            if (ok) {
                CHECKF(rc == 0, "%s %s: refused: %s", opt, val, err.msg);
                long long got = o->is_f64   ? (long long)*(double *)((char *)&job + o->offset)
                                : o->is_i64 ? (long long)*(int64_t *)((char *)&job + o->offset)
                                            : (long long)*(int *)((char *)&job + o->offset);
                CHECKF(rc != 0 || got == vals[k], "%s %s: stored %lld", opt, val, got);
            } else {
                char bound[32];
                snprintf(bound, sizeof bound, "%lld", vals[k] > o->max ? o->max : o->min);
                CHECKF(rc == -1, "%s %s: accepted", opt, val);
                CHECKF(rc != -1 || (strstr(err.msg, opt) && strstr(err.msg, bound)),
                       "%s %s: message does not name the option and the bound %s: %s", opt, val,
                       bound, err.msg);
            }
            sl_job_free(&job);
        }
    }
    /* a value beyond 64 bits is refused the same way, not wrapped */
    const char *huge[2] = {"--batch-size", "99999999999999999999"};
    sl_job_t job;
    sl_error_t err;
    CHECK(parse(&job, &err, 2, huge) == -1 && strstr(err.msg, "--batch-size") &&
          strstr(err.msg, "1048576"));
    sl_job_free(&job);
    /* --array-task is bounded by --array-tasks */
    const char *at[4] = {"--array-tasks", "4", "--array-task", "4"};
    CHECK(parse(&job, &err, 4, at) == -1 && strstr(err.msg, "--array-task"));
    sl_job_free(&job);
    at[3] = "3";
    CHECK(parse(&job, &err, 4, at) == 0 && job.array_task == 3);
    sl_job_free(&job);
    /* --batch-tokens: 0 by default, which is 1024 for an encoder on the CPU and 16384 else; a
     * given value is used as it is */
    CHECK(parse(&job, &err, 0, NULL) == 0 && job.batch_tokens == 0 &&
          sl_job_batch_tokens(&job, 1) == 1024 && sl_job_batch_tokens(&job, 0) == 16384);
    sl_job_free(&job);
    const char *bt[2] = {"--batch-tokens", "300"};
    CHECK(parse(&job, &err, 2, bt) == 0 && sl_job_batch_tokens(&job, 1) == 300 &&
          sl_job_batch_tokens(&job, 0) == 300);
    sl_job_free(&job);
}

static void test_stop_and_escape(void)
{
    sl_job_t job;
    sl_error_t err;
    const char *stop[4] = {"--stop", "ok", "--stop", ""};
    CHECKF(parse(&job, &err, 4, stop) == -1 && strstr(err.msg, "--stop"), "--stop '': %s", err.msg);
    sl_job_free(&job);
    CHECK(parse(&job, &err, 2, stop) == 0 && job.n_stops == 1);
    sl_job_free(&job);

    /* a job file holding binary bytes: the message quotes the key with \xNN escapes, and
     * carries no control character and no invalid UTF-8; valid UTF-8 passes unchanged */
    char dir[512], path[600];
    if (sl_test_tmpdir(dir, sizeof dir, "sl_spec") != 0)
        return;
    snprintf(path, sizeof path, "%s/job.ini", dir);
    const char ini[] = "model = m\n\x01\x1b[2J\xff\xc3\xa9t\xc3 = 3\n";
    sl_test_write_file(path, ini, sizeof ini - 1);
    const char *argv[3] = {"run", path, NULL};
    int rc = sl_job_parse(&job, 2, (char **)argv, &err);
    CHECK(rc == -1);
    int clean = 1;
    for (const unsigned char *c = (const unsigned char *)err.msg; *c; c++)
        clean &= *c >= 0x20 && *c != 0x7f && *c != 0xff;
    CHECKF(clean && strstr(err.msg, "\\x01\\x1b[2J\\xff\xc3\xa9t\\xc3"),
           "job file with binary bytes: %s", err.msg);
    sl_job_free(&job);
    remove(path);
    remove(dir);
}

/* Buffers inside the bounds but too large for the memory: refused naming the option. Shards
 * of 2^40 rows (a table, no file) so that units really are --unit-rows rows long. */
static void test_memory_check(void)
{
    sl_shard_t shards[2] = {{.rows = 1LL << 40}, {.rows = 30}};
    sl_inputs_t in = {.shards = shards, .n = 2, .cols = 12, .kind = SL_INPUT_FEATURES};
    sl_task_plan_t mlp = {.model = SL_MODEL_MLP, .task = SL_TASK_PREDICT, .d_in = 12};
    mlp.outs.n = 1;
    mlp.outs.spec[0] = (sl_out_spec_t){"predictions", 5, SL_F32};
    const int64_t gib = 1LL << 30, mib = 1LL << 20;
    /* per row: read-ahead 48 bytes per slot, outputs 2 x 20 bytes, batch 68 bytes */
    struct {
        const char *args[6];
        int64_t avail;
        const char *names; /* NULL: accepted */
    } cases[] = {
        {{"--batch-size", "1024"}, gib, NULL},
        /* the mlp batch tensors have --batch-size rows even when every unit is smaller */
        {{"--batch-size", "1048576", "--unit-rows", "64", "--prefetch", "1"},
         60 * mib,
         "--batch-size 1048576"},
        {{"--unit-rows", "1073741824"}, 24 * gib, "--unit-rows 1073741824"},
        {{"--unit-rows", "1073741824"}, 64 * gib, NULL},
        {{"--batch-size", "1048576", "--unit-rows", "1048576", "--prefetch", "1"},
         60 * mib,
         "--batch-size 1048576"},
        {{"--batch-size", "1048576", "--unit-rows", "1048576", "--prefetch", "1"}, 200 * mib, NULL},
        {{"--batch-size", "1048576", "--unit-rows", "1048576", "--prefetch", "64"},
         2 * gib,
         "--prefetch 64"},
        /* each part fits, the sum does not: 48 + 40 + 68 MiB */
        {{"--batch-size", "1048576", "--unit-rows", "1048576", "--prefetch", "1"},
         150 * mib,
         "together"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_job_t job;
        sl_error_t err;
        int n = cases[i].args[2] ? 6 : 2;
        if (parse(&job, &err, n, cases[i].args) != 0) {
            CHECKF(0, "case %zu: %s", i, err.msg);
            continue;
        }
        int rc = sl_task_check_memory(&job, &mlp, &in, cases[i].avail, &err);
        if (!cases[i].names)
            CHECKF(rc == 0, "case %zu: refused: %s", i, err.msg);
        else
            CHECKF(rc == -1 && strstr(err.msg, cases[i].names) && strstr(err.msg, "available"),
                   "case %zu: %s", i, rc ? err.msg : "accepted");
        sl_job_free(&job);
    }
    /* generate: every slot holds its tokens and the vocabulary's candidates */
    sl_task_plan_t gen = {
        .model = SL_MODEL_LLAMA, .task = SL_TASK_GENERATE, .want_tokens = 1, .vocab = 49152};
    sl_inputs_t tin = {.shards = shards, .n = 2, .cols = 0, .kind = SL_INPUT_TEXT};
    const char *g[6] = {"--batch-size", "1048576",      "--unit-rows",
                        "1048576",      "--text-bytes", "16777216"};
    sl_job_t job;
    sl_error_t err;
    CHECK(parse(&job, &err, 6, g) == 0);
    gen.outs.n = 1;
    gen.outs.spec[0] = (sl_out_spec_t){"text", 16777216, SL_OUT_TEXT};
    int rc = sl_task_check_memory(&job, &gen, &tin, 24 * gib, &err);
    CHECKF(rc == -1 && strstr(err.msg, "--unit-rows 1048576") && strstr(err.msg, "--text-bytes"),
           "generate, 16 MiB texts: %s", rc ? err.msg : "accepted");
    gen.outs.spec[0].cols = 1024;
    rc = sl_task_check_memory(&job, &gen, &tin, 24 * gib, &err);
    CHECKF(rc == -1 && strstr(err.msg, "--batch-size 1048576"), "generate, 2^20 slots: %s",
           rc ? err.msg : "accepted");
    sl_job_free(&job);
    /* a size that overflows is refused whatever the memory */
    CHECK(sl_size_check_memory(INT64_MAX, INT64_MAX, "--x 1", "y", &err) == -1 &&
          strstr(err.msg, "--x 1"));
    int64_t r;
    CHECK(sl_size_mul(1LL << 62, 2, &r) == -1 && sl_size_mul(-1, 2, &r) == -1 &&
          sl_size_add(INT64_MAX, 1, &r) == -1 && sl_size_mul(1LL << 31, 1LL << 31, &r) == 0 &&
          r == 1LL << 62 && sl_size_div_up(INT64_MAX, INT64_MAX) == 1 &&
          sl_size_div_up(50, INT64_MAX) == 1 && sl_size_div_up(0, 7) == 0);
}

int main(void)
{
    unsetenv("SLURM_ARRAY_TASK_ID");
    test_bounds();
    test_stop_and_escape();
    test_memory_check();
    return sl_test_finish("test_spec");
}
