/*
 * signals.h — graceful stop on SIGINT, SIGTERM and SIGUSR1 (Slurm's warning signal).
 *
 * The first signal only sets a flag; the ranks agree on it between batches and stop after
 * committing complete units. A second signal exits at once with SL_EXIT_STOPPED: committed
 * part files are complete by construction (rename), so nothing already committed is damaged.
 */
#ifndef SL_SIGNALS_H
#define SL_SIGNALS_H

void sl_signals_install(void);
/* Number of stop signals received so far (0 = keep going). */
int sl_signals_received(void);
/* Name of the first signal received ("SIGTERM"), or NULL. */
const char *sl_signals_first_name(void);

#endif
