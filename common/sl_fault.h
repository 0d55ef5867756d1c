/*
 * sl_fault.h — fault injection, compiled in always and inert unless SL_FAULT is set.
 *
 * SL_FAULT=stage:nth[:action][@rank][,stage:nth...] makes the nth call (counted from 1, per
 * process) of one kind fail at its real call site as the real call would: a read or write
 * returns an I/O error (EIO; ENOSPC for writes), a rename or fsync fails with EIO, an
 * all-reduce returns an MPI error, an allocation returns NULL. The optional action replaces
 * the failure: `kill` sends SIGKILL to this process at that point (a crash mid-operation),
 * `term` sends it SIGTERM (the graceful stop). `@rank` limits the entry to one MPI rank
 * (OMPI_COMM_WORLD_RANK / PMIX_RANK / SLURM_PROCID); without it every rank counts.
 *
 * Stages (SL_FAULT_*): read (an HDF5 read of input rows), write (writing a part file),
 * fsync (flushing a part file to disk), rename (committing a part file), allreduce (a TP
 * group's all-reduce), alloc (a host or backend allocation of 1 MiB or more), merge
 * (writing predictions.h5), manifest (writing manifest.json / report.json), lock (taking the
 * output directory's lock).
 *
 * The variable is read once, on the first call; counting is thread-safe (the I/O thread
 * reads and writes while the compute thread all-reduces and allocates). A malformed value is
 * reported once on stderr and ignored.
 */
#ifndef SL_FAULT_H
#define SL_FAULT_H

#include <stddef.h>

typedef enum {
    SL_FAULT_READ,
    SL_FAULT_WRITE,
    SL_FAULT_FSYNC,
    SL_FAULT_RENAME,
    SL_FAULT_ALLREDUCE,
    SL_FAULT_ALLOC,
    SL_FAULT_MERGE,
    SL_FAULT_MANIFEST,
    SL_FAULT_LOCK,
    SL_FAULT_NSTAGES
} sl_fault_stage_t;

/* Allocations smaller than this are not counted by the alloc stage. */
#define SL_FAULT_ALLOC_MIN ((size_t)1 << 20)

/* Counts one call of `stage`; returns 1 when that call must fail (errno is set to the
 * stage's error), 0 otherwise. A `kill` action does not return; a `term` action raises
 * SIGTERM and returns 0. */
int sl_fault_hit(sl_fault_stage_t stage);

/* The stage's name ("read", ...). */
const char *sl_fault_stage_name(sl_fault_stage_t stage);

/* A note for error messages: " (injected by SL_FAULT=stage:n)" right after a hit of
 * `stage` in this process, else "". */
const char *sl_fault_note(sl_fault_stage_t stage);

#endif
