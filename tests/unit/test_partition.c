/*
 * test_partition.c — partition math: grid coordinates, even splits, unit planning (every
 * row in exactly one unit, in order, awkward shard sizes), and the choice of a TP group's
 * all-reduce transport (--comm) from where its ranks run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "partition/comm.h"
#include "partition/grid.h"
#include "partition/units.h"
#include "sl_test.h"

static void test_grid(void)
{
    sl_error_t err;
    int tp, dp, dps;
    /* world 8, tp 2: ranks (0,1) group 0, (2,3) group 1, ... */
    for (int r = 0; r < 8; r++) {
        CHECK(sl_grid_coords(r, 8, 2, &tp, &dp, &dps, &err) == 0);
        CHECK(tp == r % 2 && dp == r / 2 && dps == 4);
    }
    CHECK(sl_grid_coords(5, 6, 3, &tp, &dp, &dps, &err) == 0 && tp == 2 && dp == 1 && dps == 2);
    CHECK(sl_grid_coords(0, 6, 4, &tp, &dp, &dps, &err) == -1);
    CHECKF(strstr(err.msg, "--tp 4") && strstr(err.msg, "6 MPI ranks"), "%s", err.msg);
    CHECK(sl_grid_coords(0, 4, 0, &tp, &dp, &dps, &err) == -1);
}

static void test_split(void)
{
    sl_error_t err;
    int64_t off, len;
    CHECK(sl_split_even(12, 4, 3, &off, &len, &err) == 0 && off == 9 && len == 3);
    CHECK(sl_split_even(12, 1, 0, &off, &len, &err) == 0 && off == 0 && len == 12);
    CHECK(sl_split_even(10, 4, 0, &off, &len, &err) == -1);
    CHECKF(strstr(err.msg, "not divisible") != NULL, "%s", err.msg);
    CHECK(sl_split_even(8, 2, 2, &off, &len, &err) == -1);
}

static void test_plan(void)
{
    const int64_t rows[] = {1, 1009, 0, 2500, 300, 299};
    const int n = 6;
    const int64_t unit = 300;
    sl_unit_t *u = NULL;
    int64_t cnt = sl_units_plan(rows, n, unit, &u);
    int64_t want = 1 + 4 + 0 + 9 + 1 + 1;
    CHECKF(cnt == want, "%lld units, expected %lld", (long long)cnt, (long long)want);
    /* every row of every shard covered once, in order, no unit larger than unit_rows */
    int64_t i = 0;
    int ok = 1;
    for (int s = 0; s < n; s++) {
        int64_t next = 0;
        while (i < cnt && u[i].shard == s) {
            ok &= u[i].row0 == next && u[i].nrows >= 1 && u[i].nrows <= unit;
            next += u[i].nrows;
            i++;
        }
        ok &= next == rows[s];
    }
    CHECK(ok && i == cnt);
    CHECK(u[1].shard == 1 && u[4].nrows == 1009 - 900);
    free(u);
    cnt = sl_units_plan(rows, 0, unit, &u);
    CHECK(cnt == 0);
    free(u);
}

/* Units far larger than any shard: the ceiling division used to form rows + unit_rows - 1,
 * which wrapped negative for --unit-rows near 2^63, planned 0 units for two shards of 50 and
 * 30 rows and then wrote 2 units into a 1-element array (ASan: heap overflow; Release: "free():
 * invalid next size"). Each shard must be one unit of all its rows, for every huge size. */
static void test_plan_huge_units(void)
{
    const int64_t rows[] = {50, 30, 0, 7};
    const int64_t units[] = {
        INT64_MAX, INT64_MAX - 1, (int64_t)1 << 62, ((int64_t)1 << 62) + 1, INT32_MAX, 50, 51};
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        sl_unit_t *u = NULL;
        int64_t cnt = sl_units_plan(rows, 4, units[k], &u);
        CHECKF(cnt == 3, "unit_rows %lld: %lld units, expected 3", (long long)units[k],
               (long long)cnt);
        if (cnt == 3)
            CHECKF(u[0].shard == 0 && u[0].row0 == 0 && u[0].nrows == 50 && u[1].shard == 1 &&
                       u[1].row0 == 0 && u[1].nrows == 30 && u[2].shard == 3 && u[2].nrows == 7,
                   "unit_rows %lld: wrong units", (long long)units[k]);
        free(u);
    }
}

/* sl_comm_choose for `n` ranks at "host/gpu" places. */
static int choose(const char *mode, int cuda, int n, const char *const *where, char *why,
                  sl_error_t *err)
{
    sl_comm_place_t p[4];
    memset(p, 0, sizeof p);
    for (int i = 0; i < n; i++) {
        const char *slash = strchr(where[i], '/');
        snprintf(p[i].host, sizeof p[i].host, "%.*s", (int)(slash - where[i]), where[i]);
        snprintf(p[i].gpu, sizeof p[i].gpu, "%s", slash + 1);
    }
    return sl_comm_choose(mode, cuda, n, p, why, 256, err);
}

static void test_comm_choice(void)
{
    char why[256];
    sl_error_t err;
    const char *one[] = {"n1/0000:01:00.0"};
    const char *own[] = {"n1/0000:01:00.0", "n1/0000:41:00.0", "n1/0000:81:00.0",
                         "n1/0000:C1:00.0"};
    const char *shared[] = {"n1/0000:01:00.0", "n1/0000:41:00.0", "n1/0000:01:00.0"};
    const char *hosts[] = {"n1/0000:01:00.0", "n2/0000:01:00.0"};
    const char *cpu[] = {"n1/", "n1/"};
    /* one rank: nothing to reduce unless --comm nccl asks for a 1-rank communicator */
    CHECK(choose("auto", 1, 1, one, why, &err) == SL_COMM_MPI_STAGED);
    CHECKF(strstr(why, "one rank") != NULL, "%s", why);
    CHECK(choose("nccl", 1, 1, one, why, &err) == SL_COMM_NCCL);
    CHECK(choose("mpi", 1, 1, one, why, &err) == SL_COMM_MPI_STAGED);
    /* every rank on its own GPU: NCCL */
    CHECK(choose("auto", 1, 4, own, why, &err) == SL_COMM_NCCL);
    CHECKF(strstr(why, "own GPU") != NULL, "%s", why);
    CHECK(choose("nccl", 1, 4, own, why, &err) == SL_COMM_NCCL);
    CHECK(choose("mpi", 1, 4, own, why, &err) == SL_COMM_MPI_STAGED);
    /* ranks 0 and 2 on one GPU: host-staged MPI, and --comm nccl is refused naming them */
    CHECK(choose("auto", 1, 3, shared, why, &err) == SL_COMM_MPI_STAGED);
    CHECKF(strstr(why, "ranks 0 and 2 share GPU 0000:01:00.0 on n1") != NULL, "%s", why);
    CHECK(choose("nccl", 1, 3, shared, why, &err) == -1);
    CHECKF(strstr(err.msg, "--comm nccl") && strstr(err.msg, "ranks 0 and 2") &&
               strstr(err.msg, "0000:01:00.0"),
           "%s", err.msg);
    CHECK(choose("auto", 1, 2, shared, why, &err) == SL_COMM_NCCL); /* ranks 0, 1 only */
    /* the same bus id on different hosts is two GPUs */
    CHECK(choose("auto", 1, 2, hosts, why, &err) == SL_COMM_NCCL);
    CHECK(choose("nccl", 1, 2, hosts, why, &err) == SL_COMM_NCCL);
    /* the CPU backend: MPI, and nccl is an error */
    CHECK(choose("auto", 0, 2, cpu, why, &err) == SL_COMM_MPI);
    CHECK(choose("mpi", 0, 2, cpu, why, &err) == SL_COMM_MPI);
    CHECK(choose("nccl", 0, 2, cpu, why, &err) == -1);
    CHECKF(strstr(err.msg, "--comm nccl") && strstr(err.msg, "CUDA"), "%s", err.msg);
    CHECK(choose("gloo", 1, 2, own, why, &err) == -1);
    CHECKF(strstr(err.msg, "--comm 'gloo'") != NULL, "%s", err.msg);
}

int main(void)
{
    test_comm_choice();
    test_grid();
    test_split();
    test_plan();
    test_plan_huge_units();
    return sl_test_finish("test_partition");
}
