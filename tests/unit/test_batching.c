/*
 * test_batching.c — what the task families share (runner/batching.c): rows ordered by length
 * are shortest first with ties in input order (checked against a stable insertion sort over
 * random lengths); the report's batch histogram puts passes of 2^k .. 2^(k+1)-1 rows in bin k
 * and padding in tenths; token rows grow, record failures and reset between reads; a read row
 * count never exceeds the largest unit; and the memory check refuses a size that does not fit.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/batching.h"
#include "sl_test.h"

static void test_order(void)
{
    enum { N = 1000 };
    static int32_t len[N];
    static int64_t order[N], ref[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        len[i] = rand() % 17; /* many ties */
        order[i] = i;
    }
    /* the reference: a stable insertion sort of the indices by length */
    for (int i = 0; i < N; i++) {
        int j = i;
        while (j > 0 && len[ref[j - 1]] > len[i]) {
            ref[j] = ref[j - 1];
            j--;
        }
        ref[j] = i;
    }
    sl_order_by_length(order, N, len);
    int same = 1;
    for (int i = 0; i < N; i++)
        same &= order[i] == ref[i];
    CHECK(same);
    sl_order_by_length(order, 0, len); /* nothing to sort */
}

static void test_hist(void)
{
    sl_batch_hist_t h;
    memset(&h, 0, sizeof h);
    sl_batch_hist_add(&h, 1, 0, 0);
    sl_batch_hist_add(&h, 3, 0, 0);
    sl_batch_hist_add(&h, 4, 0, 0);
    sl_batch_hist_add(&h, 7, 70, 100);  /* 30 % padding */
    sl_batch_hist_add(&h, 8, 100, 100); /* none */
    sl_batch_hist_add(&h, 2, 0, 100);   /* 100 %: the last bin */
    CHECK(h.batch_rows[0] == 1);
    CHECK(h.batch_rows[1] == 2);
    CHECK(h.batch_rows[2] == 2);
    CHECK(h.batch_rows[3] == 1);
    CHECK(h.padding[3] == 1 && h.padding[0] == 1 && h.padding[9] == 1);
    CHECK(h.real_tokens == 170 && h.padded_tokens == 300);
    sl_batch_hist_add(&h, INT64_MAX, 0, 0); /* the last bin, not past it */
    CHECK(h.batch_rows[SL_BATCH_HIST_BINS - 1] == 1);
}

static void test_token_rows(void)
{
    sl_shard_t shard;
    memset(&shard, 0, sizeof shard);
    shard.rows = 10;
    shard.first_row = 100;
    sl_inputs_t in;
    memset(&in, 0, sizeof in);
    in.n = 1;
    in.shards = &shard;
    sl_token_rows_t *p = sl_token_rows_new(4);
    sl_token_rows_reset(p, &in, 0, 6, 4);
    CHECK(p->rows == 4 && p->global_row0 == 106);
    sl_token_rows_reserve(p, 10000);
    CHECK(p->cap >= 10000);
    for (int i = 0; i < 10000; i++)
        p->ids[i] = p->types[i] = i; /* the room is there */
    p->len[2] = 5;
    sl_token_rows_fail(p, 2, "length %lld outside 1..%lld", 0, 8);
    CHECK(p->fail[2] && !strcmp(p->fail[2], "length 0 outside 1..8") && p->len[2] == 0);
    p->plen[1] = 3;
    sl_token_rows_reset(p, &in, 0, 0, 4);
    CHECK(p->fail[2] == NULL && p->plen[1] == 0 && p->global_row0 == 100);
    sl_token_rows_free(p);

    sl_job_t job;
    memset(&job, 0, sizeof job);
    job.unit_rows = 64;
    CHECK(sl_batch_largest_unit(&job, &in) == 10);
    CHECK(sl_batch_read_rows(&job, &in, 64) == 10);
    CHECK(sl_batch_read_rows(&job, &in, 4) == 4);
}

static void test_memory(void)
{
    sl_shard_t shard;
    memset(&shard, 0, sizeof shard);
    shard.rows = 1000;
    sl_inputs_t in;
    memset(&in, 0, sizeof in);
    in.n = 1;
    in.shards = &shard;
    sl_job_t job;
    memset(&job, 0, sizeof job);
    job.unit_rows = 1000;
    job.batch_size = 100;
    job.prefetch = 2;
    sl_outputs_t outs;
    memset(&outs, 0, sizeof outs);
    outs.n = 1;
    outs.spec[0] = (sl_out_spec_t){"predictions", 10, SL_F32};
    sl_task_memory_t m = {.read_rows = 100,
                          .read_row_bytes = 40,
                          .read_opt = "batch-size",
                          .read_opt_value = 100,
                          .outs = &outs,
                          .batch_rows = 100,
                          .batch_row_bytes = 80};
    snprintf(m.out_opt, sizeof m.out_opt, "--unit-rows 1000");
    sl_error_t err;
    /* 8000 read-ahead + 80000 outputs + 8000 batch bytes */
    CHECK(sl_batch_check_memory(&job, &in, &m, 1 << 20, &err) == 0);
    CHECK(sl_batch_check_memory(&job, &in, &m, 50000, &err) != 0);
    CHECKF(strstr(err.msg, "--unit-rows 1000") != NULL, "%s", err.msg);
    m.batch_row_bytes = INT64_MAX / 2; /* overflows */
    CHECK(sl_batch_check_memory(&job, &in, &m, 1 << 20, &err) != 0);
    CHECKF(strstr(err.msg, "--batch-size 100") != NULL, "%s", err.msg);
}

int main(void)
{
    test_order();
    test_hist();
    test_token_rows();
    test_memory();
    return sl_test_finish("test_batching");
}
