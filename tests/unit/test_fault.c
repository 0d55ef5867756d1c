/*
 * test_fault.c — SL_FAULT parsing and counting (common/sl_fault.h): the Nth call of a stage
 * fails with the stage's errno and only that call; entries for another rank, malformed
 * entries and unknown stages are ignored; the note names the entry once it has fired; a
 * `term` action raises SIGTERM and lets the call succeed; counting holds across threads.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_fault.h"
#include "sl_test.h"

static volatile sig_atomic_t g_terms = 0;
static void on_term(int sig)
{
    (void)sig;
    g_terms = g_terms + 1;
}

static int g_hits = 0;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static void *reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        if (sl_fault_hit(SL_FAULT_READ)) {
            pthread_mutex_lock(&g_mu);
            g_hits++;
            pthread_mutex_unlock(&g_mu);
        }
    return NULL;
}

int main(void)
{
    /* this process is rank 3; the fsync entry is for rank 1, "bogus" and "write:0" are
     * malformed */
    setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    setenv("SL_FAULT",
           "write:2,fsync:1@1,rename:1@3,bogus,write:0,merge:2:term,read:1500,alloc:1:fail", 1);
    signal(SIGTERM, on_term);

    CHECK(sl_fault_note(SL_FAULT_WRITE)[0] == '\0');
    CHECK(sl_fault_hit(SL_FAULT_WRITE) == 0);
    errno = 0;
    CHECK(sl_fault_hit(SL_FAULT_WRITE) == 1);
    CHECK(errno == ENOSPC);
    CHECKF(strstr(sl_fault_note(SL_FAULT_WRITE), "SL_FAULT=write:2") != NULL, "note '%s'",
           sl_fault_note(SL_FAULT_WRITE));
    for (int i = 0; i < 10; i++)
        CHECK(sl_fault_hit(SL_FAULT_WRITE) == 0); /* only the 2nd call */

    CHECK(sl_fault_hit(SL_FAULT_FSYNC) == 0); /* for rank 1 only */
    errno = 0;
    CHECK(sl_fault_hit(SL_FAULT_RENAME) == 1 && errno == EIO); /* for this rank */
    CHECK(sl_fault_hit(SL_FAULT_ALLOC) == 1 && errno == ENOMEM);
    CHECK(sl_fault_hit(SL_FAULT_ALLREDUCE) == 0);
    CHECK(sl_fault_note(SL_FAULT_ALLREDUCE)[0] == '\0');

    CHECK(sl_fault_hit(SL_FAULT_MERGE) == 0);
    CHECK(sl_fault_hit(SL_FAULT_MERGE) == 0); /* term: the call goes on ... */
    CHECK(g_terms == 1);                      /* ... after SIGTERM */

    /* two threads share the read counter: exactly one call of 2000 is the 1500th */
    pthread_t a, b;
    pthread_create(&a, NULL, reader, NULL);
    pthread_create(&b, NULL, reader, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK(g_hits == 1);

    CHECK(!strcmp(sl_fault_stage_name(SL_FAULT_ALLREDUCE), "allreduce"));
    CHECK(!strcmp(sl_fault_stage_name(SL_FAULT_LOCK), "lock"));
    return sl_test_finish("test_fault");
}
