/*
 * signals.c — stop flags set from signal handlers (see signals.h).
 */
#include "runner/signals.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "common/sl_error.h"

static volatile sig_atomic_t g_count = 0;
static volatile sig_atomic_t g_first = 0;

static void on_signal(int sig)
{
    if (g_count > 0) {
        static const char msg[] = "shardline: second signal: exiting now (committed units are kept)\n";
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
