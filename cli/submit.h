/*
 * submit.h — `shardline submit JOB.ini ...`: writes a Slurm batch script for a job (from the
 * template slurm/shardline.sbatch, embedded at build time) into the job's output directory and
 * submits it with sbatch, printing the job id; --dry-run prints the script instead.
 */
#ifndef SL_SUBMIT_H
#define SL_SUBMIT_H

/* argv[0] is "submit". Returns the process exit status: 0 submitted (or printed), 1 sbatch
 * missing or failing, 2 bad command line or job file, 3 output directory unusable. */
int sl_submit_main(int argc, char **argv);

#endif
