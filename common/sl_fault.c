/*
 * sl_fault.c — SL_FAULT parsing and the per-stage call counters (see sl_fault.h).
 */
#include "common/sl_fault.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ACT_FAIL, ACT_KILL, ACT_TERM };

typedef struct {
    int stage;
    long nth;
    int action;
} entry_t;

#define MAX_ENTRIES 32

static const char *const stage_names[SL_FAULT_NSTAGES] = {
    "read", "write", "fsync", "rename", "allreduce", "alloc", "merge", "manifest", "lock"};

/* The errno each stage's failure carries: what the real call reports in that situation. */
static const int stage_errno[SL_FAULT_NSTAGES] = {EIO,    ENOSPC, EIO,    EIO,   EIO,
                                                  ENOMEM, ENOSPC, ENOSPC, EAGAIN};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static entry_t g_entries[MAX_ENTRIES];
static int g_n;
static atomic_long g_calls[SL_FAULT_NSTAGES];
static atomic_int g_hit[SL_FAULT_NSTAGES];
static char g_note[SL_FAULT_NSTAGES][64];

static int my_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v);
    }
    return 0;
}

static void parse(void)
{
    const char *env = getenv("SL_FAULT");
    if (!env || !*env)
        return;
    char *copy = strdup(env), *save = NULL;
    if (!copy)
        return;
    int rank = my_rank();
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        /* stage:nth[:action][@rank] */
        char orig[128];
        snprintf(orig, sizeof orig, "%s", tok); /* tok is cut up below */
        int want_rank = -1;
        char *at = strchr(tok, '@');
        if (at) {
            *at = '\0';
            char *end;
            want_rank = (int)strtol(at + 1, &end, 10);
            if (end == at + 1 || *end || want_rank < 0)
                goto bad;
        }
        char *colon = strchr(tok, ':');
        if (!colon)
            goto bad;
        *colon = '\0';
        int stage = -1;
        for (int s = 0; s < SL_FAULT_NSTAGES; s++)
            if (!strcmp(tok, stage_names[s]))
                stage = s;
        char *end;
        long nth = strtol(colon + 1, &end, 10);
        if (stage < 0 || end == colon + 1 || nth < 1)
            goto bad;
        int action = ACT_FAIL;
        if (*end == ':') {
            if (!strcmp(end + 1, "kill"))
                action = ACT_KILL;
            else if (!strcmp(end + 1, "term"))
                action = ACT_TERM;
            else if (strcmp(end + 1, "fail"))
                goto bad;
        } else if (*end) {
            goto bad;
        }
        if (want_rank >= 0 && want_rank != rank)
            continue;
        if (g_n < MAX_ENTRIES)
            g_entries[g_n++] = (entry_t){stage, nth, action};
        snprintf(g_note[stage], sizeof g_note[stage], " (injected by SL_FAULT=%s:%ld)",
                 stage_names[stage], nth);
        continue;
    bad:
        fprintf(stderr,
                "shardline: warning: SL_FAULT: ignoring '%s': expected stage:nth[:kill|"
                ":term][@rank] with a stage among read, write, fsync, rename, allreduce, "
                "alloc, merge, manifest, lock\n",
                orig);
    }
    free(copy);
}

int sl_fault_hit(sl_fault_stage_t stage)
{
    pthread_once(&g_once, parse);
    if (g_n == 0 || (int)stage < 0 || stage >= SL_FAULT_NSTAGES)
        return 0;
    long call = atomic_fetch_add(&g_calls[stage], 1) + 1;
    for (int i = 0; i < g_n; i++) {
        const entry_t *e = &g_entries[i];
        if (e->stage != (int)stage || e->nth != call)
            continue;
        char msg[160];
        int n = snprintf(msg, sizeof msg, "shardline: pid %d: SL_FAULT: %s call %ld: %s\n",
                         (int)getpid(), stage_names[stage], call,
                         e->action == ACT_KILL   ? "SIGKILL"
                         : e->action == ACT_TERM ? "SIGTERM"
                                                 : "failing it");
        ssize_t w = write(STDERR_FILENO, msg, n > 0 ? (size_t)n : 0);
        (void)w;
        if (e->action == ACT_KILL) {
            raise(SIGKILL);
            _exit(137); /* not reached */
        }
        if (e->action == ACT_TERM) {
            raise(SIGTERM);
            return 0;
        }
        atomic_store(&g_hit[stage], 1);
        errno = stage_errno[stage];
        return 1;
    }
    return 0;
}

const char *sl_fault_stage_name(sl_fault_stage_t stage)
{
    return (int)stage >= 0 && stage < SL_FAULT_NSTAGES ? stage_names[stage] : "?";
}

const char *sl_fault_note(sl_fault_stage_t stage)
{
    if ((int)stage < 0 || stage >= SL_FAULT_NSTAGES || !atomic_load(&g_hit[stage]))
        return "";
    return g_note[stage];
}
