/*
 * pipeline.c — the I/O thread (see pipeline.h): one FIFO of requests guarded by a mutex, one
 * condition variable for "new request" and one for "a slot is ready".
 */
#include "runner/pipeline.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sl_profile.h"

typedef enum { REQ_READ, REQ_COMMIT, REQ_QUIT } req_kind_t;

typedef struct req {
    req_kind_t kind;
    int slot, shard;
    int64_t row0, rows;
    char *relpath;
    sl_part_meta_t meta;
    void *bufs[SL_MAX_OUTPUTS];
    sl_row_error_t *errs;
    int nerr;
    struct req *next;
} req_t;

struct sl_io {
    const sl_inputs_t *in;
    const char *out_dir;
    sl_task_t *task;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t has_work, slot_ready;
    req_t *head, *tail;
    sl_io_slot_t *slots;
    int nslots;
    int failed;
    sl_error_t fail_err;
    double read_s, write_s;
    sl_io_commit_fn on_commit;
    void *on_commit_ctx;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void push(sl_io_t *io, req_t *r)
{
    pthread_mutex_lock(&io->mu);
    r->next = NULL;
    if (io->tail)
        io->tail->next = r;
    else
        io->head = r;
    io->tail = r;
    pthread_cond_signal(&io->has_work);
    pthread_mutex_unlock(&io->mu);
}

static void *io_main(void *arg)
{
    sl_io_t *io = arg;
    sl_reader_t reader;
    sl_reader_init(&reader);
    for (;;) {
        pthread_mutex_lock(&io->mu);
        while (!io->head)
            pthread_cond_wait(&io->has_work, &io->mu);
        req_t *r = io->head;
        io->head = r->next;
        if (!io->head)
            io->tail = NULL;
        pthread_mutex_unlock(&io->mu);

        if (r->kind == REQ_QUIT) {
            free(r);
            break;
        }
        double t0 = now();
        if (r->kind == REQ_READ) {
            sl_io_slot_t *s = &io->slots[r->slot];
            sl_error_t err;
            SL_RANGE_PUSH("read");
            int rc = sl_task_read(io->task, &reader, io->in, r->shard, r->row0, r->rows, s->payload,
                                  &err);
            SL_RANGE_POP();
            double dt = now() - t0;
            pthread_mutex_lock(&io->mu);
            io->read_s += dt;
            s->rows = r->rows;
            s->state = rc == 0 ? 1 : -1;
            if (rc != 0)
                s->err = err;
            pthread_cond_broadcast(&io->slot_ready);
            pthread_mutex_unlock(&io->mu);
        } else {
            sl_error_t err = {{0}};
            /* After a failed commit the job is going down (the compute thread stops at its
             * next look): commit nothing more, so that the part files on disk are exactly
             * the units committed before the failure. */
            pthread_mutex_lock(&io->mu);
            int skip = io->failed;
            pthread_mutex_unlock(&io->mu);
            SL_RANGE_PUSH("write");
            int rc = skip ? -1
                          : sl_part_write(io->out_dir, r->relpath, &r->meta, r->bufs, r->errs,
                                          r->nerr, &err);
            SL_RANGE_POP();
            double dt = now() - t0;
            pthread_mutex_lock(&io->mu);
            io->write_s += dt;
            if (rc != 0 && !io->failed) {
                io->failed = 1;
                io->fail_err = err;
            }
            pthread_mutex_unlock(&io->mu);
            if (rc == 0 && io->on_commit)
                io->on_commit(io->on_commit_ctx, r->relpath, &r->meta, r->nerr, dt);
            free(r->relpath);
            for (int i = 0; i < r->meta.outs->n; i++)
                free(r->bufs[i]);
            free(r->errs);
        }
        free(r);
    }
    sl_reader_close(&reader);
    return NULL;
}

sl_io_t *sl_io_start(const sl_inputs_t *in, const char *out_dir, int nslots, sl_task_t *task,
                     int64_t read_rows)
{
    sl_io_t *io = sl_xcalloc(1, sizeof *io);
    io->in = in;
    io->out_dir = out_dir;
    io->task = task;
    io->nslots = nslots;
    io->slots = sl_xcalloc((size_t)nslots, sizeof *io->slots);
    for (int i = 0; i < nslots; i++)
        io->slots[i].payload = sl_task_payload_new(task, in, read_rows);
    pthread_mutex_init(&io->mu, NULL);
    pthread_cond_init(&io->has_work, NULL);
    pthread_cond_init(&io->slot_ready, NULL);
    if (pthread_create(&io->thread, NULL, io_main, io) != 0)
        SL_FATAL("cannot start the I/O thread");
    return io;
}

int sl_io_nslots(const sl_io_t *io) { return io->nslots; }

void sl_io_read(sl_io_t *io, int i, int shard, int64_t row0, int64_t rows)
{
    req_t *r = sl_xcalloc(1, sizeof *r);
    r->kind = REQ_READ;
    r->slot = i;
    r->shard = shard;
    r->row0 = row0;
    r->rows = rows;
    pthread_mutex_lock(&io->mu);
    io->slots[i].state = 0;
    pthread_mutex_unlock(&io->mu);
    push(io, r);
}

sl_io_slot_t *sl_io_wait(sl_io_t *io, int i)
{
    pthread_mutex_lock(&io->mu);
    while (io->slots[i].state == 0)
        pthread_cond_wait(&io->slot_ready, &io->mu);
    pthread_mutex_unlock(&io->mu);
    return &io->slots[i];
}

void sl_io_commit(sl_io_t *io, char *relpath, const sl_part_meta_t *meta, void **bufs,
                  sl_row_error_t *errs, int nerr)
{
    req_t *r = sl_xcalloc(1, sizeof *r);
    r->kind = REQ_COMMIT;
    r->relpath = relpath;
    r->meta = *meta;
    for (int i = 0; i < meta->outs->n; i++)
        r->bufs[i] = bufs[i];
    r->errs = errs;
    r->nerr = nerr;
    push(io, r);
}

void sl_io_on_commit(sl_io_t *io, sl_io_commit_fn fn, void *ctx)
{
    io->on_commit = fn;
    io->on_commit_ctx = ctx;
}

int sl_io_failed(sl_io_t *io, sl_error_t *err)
{
    pthread_mutex_lock(&io->mu);
    int f = io->failed;
    if (f && err)
        *err = io->fail_err;
    pthread_mutex_unlock(&io->mu);
    return f;
}

int sl_io_finish(sl_io_t *io, double *read_seconds, double *write_seconds, sl_error_t *err)
{
    req_t *r = sl_xcalloc(1, sizeof *r);
    r->kind = REQ_QUIT;
    push(io, r);
    pthread_join(io->thread, NULL);
    /* Reads still queued behind QUIT cannot exist: QUIT is queued last. */
    if (read_seconds)
        *read_seconds = io->read_s;
    if (write_seconds)
        *write_seconds = io->write_s;
    /* The last commits ran after the compute loop last looked: their failure counts too. */
    int failed = io->failed;
    if (failed && err)
        *err = io->fail_err;
    for (int i = 0; i < io->nslots; i++)
        sl_task_payload_free(io->task, io->slots[i].payload);
    free(io->slots);
    pthread_mutex_destroy(&io->mu);
    pthread_cond_destroy(&io->has_work);
    pthread_cond_destroy(&io->slot_ready);
    free(io);
    return failed ? -1 : 0;
}
