"""test_lifecycle.py — job arrays, `shardline merge` and `shardline status`, without Slurm:

  - a job split over 3 array tasks (--array-task/--array-tasks, and the same from Slurm's
    SLURM_ARRAY_TASK_ID/MIN/MAX environment) computes disjoint shares: every unit exactly once;
    only the task that finds everything committed writes predictions.h5, equal (bitwise) to a
    plain run with the same batch size;
  - `merge` refuses (status 3, naming the pending count) while a share is missing, and writes
    predictions.h5 identical to the plain run's once it is there;
  - `status` reports committed/pending units, rows and the state, during and after the job;
  - manifest.json exists from the start of a run.

Run: ctest -R test_lifecycle (needs SHARDLINE, SL_SOURCE_DIR, MPIEXEC).
"""
import os
import re
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402


def preds(out):
    with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
        return f["predictions"][()]


def body(t, tmp):
    model = e.make_model(os.path.join(tmp, "model"), [12, 16, 5], activation="relu", final="softmax")
    e.make_inputs(os.path.join(tmp, "data"), [700, 1, 409], 12)
    common = dict(unit_rows=100, batch=32)
    r = e.run(1, e.job_args(model.path, "data/*.h5", "plain", **common))
    t.check(r.rc == 0, "plain run: status 0", r.describe())
    base = preds("plain")
    nunits = 7 + 1 + 5

    # Three array tasks by option; the third finds everything committed.
    for k in range(3):
        r = e.run(1, e.job_args(model.path, "data/*.h5", "arr", extra=["--array-task", str(k), "--array-tasks", "3"], **common))
        t.check(r.rc == 0, f"array task {k}: status 0", r.describe())
        t.check(os.path.isfile("arr/manifest.json"), f"array task {k}: manifest.json exists")
        exists = os.path.exists("arr/predictions.h5")
        t.check(exists == (k == 2), f"array task {k}: predictions.h5 {'written' if k == 2 else 'not yet written'}")
        m = re.search(r"(\d+) to compute", r.stderr)
        share = len([i for i in range(nunits) if i % 3 == k])
        t.check(m is not None and int(m.group(1)) == share, f"array task {k} computes its share of {share} units",
                r.stderr[-600:])
    parts, _ = e.list_parts("arr")
    t.check(len(parts) == nunits, "every unit has exactly one part file", f"{len(parts)} parts, {nunits} units")
    t.check(np.array_equal(preds("arr"), base), "array predictions equal the plain run (bitwise)")

    # The same from Slurm's array environment; merge before the last share is refused.
    for k in (0, 2):
        env = {"SLURM_ARRAY_TASK_ID": str(10 + 2 * k), "SLURM_ARRAY_TASK_MIN": "10",
               "SLURM_ARRAY_TASK_MAX": "14", "SLURM_ARRAY_TASK_STEP": "2"}
        r = e.run(1, e.job_args(model.path, "data/*.h5", "env", **common), env=env)
        t.check(r.rc == 0 and f"array task {k} of 3" in r.stderr,
                f"SLURM_ARRAY_TASK_* id {10 + 2 * k}: task {k} of 3", r.describe())
    r = e.run_direct(["status", "env"])
    done = len([i for i in range(nunits) if i % 3 != 1])
    t.check(r.rc == 0 and f"{done} committed, {nunits - done} pending" in r.stdout,
            "status: committed and pending units while a share is missing", r.describe())
    r = e.run_direct(["merge", "env"])
    t.check(r.rc == 3 and f"{nunits - done} of {nunits} units" in r.stderr and not os.path.exists("env/predictions.h5"),
            "merge with a missing share: status 3, names the pending count, writes nothing", r.describe())
    r = e.run(1, e.job_args(model.path, "data/*.h5", "env", extra=["--array-task", "1", "--array-tasks", "3"], **common))
    t.check(r.rc == 0 and os.path.exists("env/predictions.h5"), "last share completes the job", r.describe())
    os.remove("env/predictions.h5")
    r = e.run_direct(["merge", "env"])
    t.check(r.rc == 0 and np.array_equal(preds("env"), base), "merge writes predictions equal to the plain run",
            r.describe())
    r = e.run_direct(["status", "env"])
    t.check(r.rc == 0 and f"{nunits} committed, 0 pending" in r.stdout and "complete" in r.stdout
            and "1110 committed (100.0%)" in r.stdout, "status of a complete job", r.describe())

    # Bad uses.
    r = e.run_direct(["status", "nowhere"])
    t.check(r.rc == 3 and "nowhere/manifest.json" in r.stderr, "status of a missing directory names the manifest",
            r.describe())
    r = e.run(1, e.job_args(model.path, "data/*.h5", "bad", extra=["--array-task", "3", "--array-tasks", "3"], **common))
    t.check(r.rc == 2 and "--array-task 3" in r.stderr, "--array-task beyond --array-tasks: usage error", r.describe())


if __name__ == "__main__":
    e.main("test_lifecycle", body)
