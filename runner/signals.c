/*
 * signals.c — stop flags set from signal handlers, and the launcher watch (see signals.h).
 */
#include "runner/signals.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/sl_error.h"

static volatile sig_atomic_t g_count = 0;
static volatile sig_atomic_t g_first = 0;

static void on_signal(int sig)
{
    if (g_count > 0) {
        static const char msg[] =
            "shardline: second signal: exiting now (committed units are kept)\n";
        ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)r;
        _exit(SL_EXIT_STOPPED);
    }
    g_first = sig;
    g_count = g_count + 1;
}

void sl_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

int sl_signals_received(void) { return (int)g_count; }

const char *sl_signals_first_name(void)
{
    switch (g_first) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return NULL;
    }
}

/* ---- the launcher watch ---------------------------------------------------------------------- */

static pid_t g_parent;

/* Polls getppid(): when the launcher dies, the kernel reparents this process (to init or a
 * subreaper), so the value changes, whatever killed the launcher and from whatever thread it
 * had started us. PR_SET_PDEATHSIG would be the push version, but it fires when the *thread*
 * that forked us exits (launchers fork from helper threads), must be set before the parent
 * could already be gone, and its signal would go through our graceful-stop handler, which
 * waits in collectives that can no longer complete. A 100 ms poll costs nothing. */
static void *watch_parent(void *arg)
{
    (void)arg;
    const struct timespec tick = {0, 100 * 1000 * 1000};
    for (;;) {
        nanosleep(&tick, NULL);
        if (getppid() != g_parent) {
            char msg[160];
            int n = snprintf(msg, sizeof msg,
                             "shardline: pid %d: the launcher (pid %d) is gone: exiting now "
                             "(committed units are kept; rerun to resume)\n",
                             (int)getpid(), (int)g_parent);
            ssize_t r = write(STDERR_FILENO, msg, n > 0 ? (size_t)n : 0);
            (void)r;
            _exit(SL_EXIT_FAILURE);
        }
    }
    return NULL;
}

void sl_signals_watch_launcher(void)
{
    /* Only under a launcher (mpirun's ranks carry OMPI_COMM_WORLD_RANK, PMIx clients
     * PMIX_RANK, srun's tasks SLURM_STEP_ID): a plain start under nohup must outlive its
     * shell. */
    if (!getenv("OMPI_COMM_WORLD_RANK") && !getenv("PMIX_RANK") && !getenv("SLURM_STEP_ID"))
        return;
    g_parent = getppid();
    if (g_parent <= 1)
        return; /* already orphaned, or started by init: nothing to watch */
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, watch_parent, NULL) != 0)
        sl_log_warn("cannot start the launcher watch; a killed mpirun may leave this rank running");
    pthread_attr_destroy(&at);
}
