/*
 * signals.h — graceful stop on SIGINT, SIGTERM and SIGUSR1 (Slurm's warning signal), and a
 * prompt exit when the launcher dies.
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

/* When started by a launcher (mpirun, srun): a thread that exits this process within ~0.1 s
 * (status 1, a line on stderr) once the launcher, its parent, is gone. Otherwise a killed
 * mpirun leaves each rank (in its own process group) running until its MPI library notices.
 * Committed part files are complete by construction, so nothing committed is damaged. Call
 * first thing in main, before MPI starts. */
void sl_signals_watch_launcher(void);

#endif
