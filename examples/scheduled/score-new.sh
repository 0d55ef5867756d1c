#!/bin/bash
# score-new.sh — reruns one shardline job, for cron or scrontab: every run scores only the input
# shards that are new or changed since the last run (committed part files are kept) and rewrites
# predictions.h5 over everything. Runs never overlap: a run still going holds a lock
# (OUTPUT/.score-new.lock), and the next one skips instead of waiting.
#
#   score-new.sh JOB.ini                     # inside a Slurm allocation (scrontab): srun --mpi=pmix;
#                                            # elsewhere: mpirun -np $SHARDLINE_RANKS (default 2)
#   score-new.sh JOB.ini --submit OPTIONS    # from a login node's cron: shardline submit JOB.ini OPTIONS
#                                            # (e.g. --gpus-per-node 4 --time 2:00:00)
#
# Environment: SHARDLINE (the binary; default: shardline on PATH), SHARDLINE_RANKS (mpirun ranks).
# Exit status: shardline's (0 done, 4 done with failed rows, 5 stopped: the next run resumes),
# 0 when skipped because the previous run still holds the lock, 2 on bad usage.
set -u

job="${1:-}"
if [ -z "$job" ] || [ ! -r "$job" ]; then
    echo "usage: score-new.sh JOB.ini [--submit shardline-submit-options]" >&2
    exit 2
fi
shift
shardline="${SHARDLINE:-shardline}"
cd "$(dirname "$job")" || exit 2    # relative paths in the job file are relative to it
job="$(basename "$job")"

# The job's output directory, from its `output = ...` line (top level or [run]).
out="$(sed -n 's/^[[:space:]]*output[[:space:]]*=[[:space:]]*//p' "$job" | tail -n 1)"
out="${out%"${out##*[![:space:]]}"}"
if [ -z "$out" ]; then
    echo "score-new.sh: $job has no 'output = DIR' line" >&2
    exit 2
fi
mkdir -p "$out" || exit 3

echo "score-new.sh: $(date -Is) job $job, output $out"
if [ "${1:-}" = "--submit" ]; then
    shift
    # The batch job requeues itself on its time limit; the lock is not held across the queue.
    exec "$shardline" submit "$job" "$@"
fi

# One run at a time: a run still going (a slow night, a large new batch) makes this one skip.
exec 9>"$out/.score-new.lock"
if ! flock -n 9; then
    echo "score-new.sh: the previous run still holds $out/.score-new.lock; skipping"
    exit 0
fi

if [ -n "${SLURM_JOB_ID:-}" ]; then
    # scrontab: the line runs inside its own allocation (#SCRON options)
    srun --mpi=pmix "$shardline" run "$job" &
else
    mpirun -np "${SHARDLINE_RANKS:-2}" "$shardline" run "$job" &
fi
pid=$!
# Slurm's TERM (scrontab time limit, scancel) and cron-side TERM: pass them on, so shardline
# commits complete units and exits 5; the next run resumes.
trap 'kill -TERM $pid 2>/dev/null' TERM INT
trap 'kill -USR1 $pid 2>/dev/null' USR1
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid"
done
wait "$pid"
status=$?
echo "score-new.sh: $(date -Is) shardline exited with status $status"
exit "$status"
