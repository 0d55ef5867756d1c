/*
 * run.h — `shardline run`: the whole job on every rank (MPI must be initialised).
 */
#ifndef SL_RUN_H
#define SL_RUN_H

/* Returns the process exit status (SL_EXIT_*); every rank returns the same one. */
int sl_run_main(int argc, char **argv);

#endif
