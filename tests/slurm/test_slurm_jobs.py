"""test_slurm_jobs.py — shardline jobs on a real Slurm cluster (slurmctld + slurmd on this
machine, started and stopped by slurm_fixture.py), compared with a plain mpirun run.

The data: the example MLP (examples/mlp) over 12 shards of 10,000 rows (make_data.py, seed 7),
unit-rows 50 and batch-size 2, i.e. 2,400 small units, so that a job runs long enough to be
interrupted. The reference: `mpirun -np 2 shardline run JOB.ini --output ref`.

Checks:
  (b) `shardline submit JOB.ini --cpu --ntasks-per-node 2` (srun --mpi=pmix): the job completes
      (COMPLETED, exit 0), its predictions.h5 equals the reference bitwise, the log shows the
      start line and status 0; the same with SHARDLINE_LAUNCHER=mpirun (mpirun inside the job);
  (c) a job signalled mid-way with `scancel --batch --signal=USR1` (the signal that
      --signal=B:USR1@120 sends before the time limit): the batch shell's trap forwards it,
      shardline exits 5, the script runs `scontrol requeue`, the job starts again with
      SLURM_RESTART_COUNT=1 and completes; predictions equal the reference, every row is covered
      by exactly one part file, and the parts committed before the signal were kept (not
      recomputed);
  (d) `submit --array 3`: three array tasks each score their share into one output directory;
      all COMPLETED; the part files cover every row exactly once; predictions.h5 (written by the
      task that found the job complete) equals the reference; `shardline merge OUT` then exits 0
      and writes the same predictions; `shardline status OUT` reports no pending unit.

Exit 77 (ctest: skipped) with "skipped: <reason>" when Slurm is not installed and cannot be.
Run by hand: SHARDLINE=build/shardline /usr/bin/python3 tests/slurm/test_slurm_jobs.py
"""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mpi"))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402

import sl_e2e as e  # noqa: E402
import slurm_fixture  # noqa: E402

SHARDS, ROWS, UNIT, BATCH = 12, 10000, 50, 2
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED")


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError as ex:
        return f"<no log: {ex}>"


def write_job(tmp, name, output):
    path = os.path.join(tmp, f"{name}.ini")
    with open(path, "w") as f:
        f.write(f"# {name}: the example MLP over the test shards\n"
                f"model = {os.path.join(e.SOURCE_DIR, 'examples', 'mlp')}\n"
                f"input = data/*.h5\noutput = {output}\n"
                f"unit-rows = {UNIT}\nbatch-size = {BATCH}\nquiet = true\n")
    return path


class Jobs:
    """Submits through `shardline submit` against the cluster and waits for jobs."""

    def __init__(self, t, cluster, tmp):
        self.t, self.c, self.tmp = t, cluster, tmp

    def submit(self, job, args, env=None, what=""):
        full = dict(self.c.env)
        full.update(env or {})
        r = e.run_direct(["submit", job, "--cpu", "--ntasks-per-node", "2", "--time", "10:00"]
                         + list(args), cwd=self.tmp, env=full, timeout=60)
        ok = self.t.check(r.rc == 0 and re.fullmatch(r"\d+\n", r.stdout),
                          f"{what}: shardline submit prints a job id", r.describe())
        return r.stdout.strip() if ok else None

    def wait(self, jid, what, timeout=240):
        recs = self.c.wait_state(jid, TERMINAL, timeout=timeout)
        if recs is None:
            self.t.check(False, f"{what}: job {jid} ended within {timeout} s",
                         str([(r.get('JobId'), r.get('JobState'), r.get('Reason'))
                              for r in self.c.jobs(jid)]) + self.c.log_tail("slurmctld"))
        return recs


def equal_ref(t, out, ref, what):
    got = e.predictions(t, out, what)
    if got is None:
        return False
    return t.check(got.dtype == ref.dtype and got.shape == ref.shape and np.array_equal(got, ref),
                   f"{what}: predictions equal the plain mpirun run bitwise",
                   f"shape {got.shape} vs {ref.shape}, dtype {got.dtype} vs {ref.dtype}, "
                   f"{int(np.sum(got != ref)) if got.shape == ref.shape else '?'} values differ")


def body(t, tmp):
    try:
        cluster = slurm_fixture.SlurmCluster(keep=bool(os.environ.get("SL_KEEP_TMP")))
    except slurm_fixture.Unavailable as ex:
        print(f"skipped: {ex}", flush=True)
        sys.exit(77)
    t0 = time.time()
    try:
        print(f"cluster up in {cluster.dir} (auth/{cluster.auth})", flush=True)
        run_all(t, tmp, cluster)
    finally:
        cluster.stop()
        print(f"[cluster stopped; {time.time() - t0:.1f} s with the cluster]", flush=True)


def run_all(t, tmp, cluster):
    gen = subprocess.run(["/usr/bin/python3", os.path.join(e.SOURCE_DIR, "examples", "mlp",
                                                           "make_data.py"),
                          "data", str(SHARDS), str(ROWS), "7"], cwd=tmp, capture_output=True, text=True)
    if not t.check(gen.returncode == 0, "test data written", gen.stderr):
        return
    shards = [(os.path.join(tmp, "data", f"shard-{i:05d}.h5"), ROWS) for i in range(SHARDS)]

    # The reference: a plain mpirun run of the same job file.
    ref_job = write_job(tmp, "ref", "ref")
    r = e.run(2, [ref_job], timeout=300, cwd=tmp)
    if not t.check(r.rc == 0, "reference: mpirun -np 2 shardline run exits 0", r.describe()):
        return
    ref = e.Output(os.path.join(tmp, "ref")).predictions
    t.equal(ref.shape[0], SHARDS * ROWS, "reference covers every row")
    J = Jobs(t, cluster, tmp)

    # ---- (b) a 2-rank job, with srun and with mpirun ---------------------------------------
    for launcher in ("srun", "mpirun"):
        what = f"(b) {launcher}"
        out = os.path.join(tmp, f"out-b-{launcher}")
        t1 = time.time()
        jid = J.submit(write_job(tmp, f"b-{launcher}", f"out-b-{launcher}"), [],
                       env={"SHARDLINE_LAUNCHER": launcher}, what=what)
        if not jid:
            continue
        recs = J.wait(jid, what)
        log = read_log(os.path.join(out, f"slurm-{jid}.out"))
        if recs:
            t.check(recs[0].get("JobState") == "COMPLETED" and recs[0].get("ExitCode") == "0:0",
                    f"{what}: job COMPLETED with exit 0:0",
                    f"{recs[0].get('JobState')} {recs[0].get('ExitCode')}\n{log[-3000:]}")
        t.check("restart 0" in log and "exited with status 0" in log,
                f"{what}: the log shows the start and status 0", log[-3000:])
        equal_ref(t, out, ref, what)
        print(f"      [{what}: {time.time() - t1:.1f} s]", flush=True)

    # ---- (c) stop with USR1 mid-way, requeue, resume ---------------------------------------
    what = "(c) requeue"
    out = os.path.join(tmp, "out-c")
    t1 = time.time()
    jid = J.submit(write_job(tmp, "c", "out-c"), [], what=what)
    if jid:
        total_units = SHARDS * ROWS // UNIT
        end = time.time() + 120
        n = 0
        while time.time() < end:
            n = len(e.list_parts(out)[0])
            if n >= total_units // 10:
                break
            time.sleep(0.05)
        s = cluster.cmd(["scancel", "--batch", "--signal=USR1", jid], timeout=20)
        t.check(s.returncode == 0, f"{what}: scancel --batch --signal=USR1 after {n} of "
                                   f"{total_units} units", s.stderr)
        # The parts committed so far must survive the restart untouched.
        time.sleep(0.5)
        before = {k: (p.ino, p.mtime_ns) for k, p in e.list_parts(out)[0].items()}
        # Wait for the requeue (Restarts=1), then for the end.
        end = time.time() + 120
        restarted = False
        while time.time() < end and not restarted:
            info = cluster.job_info(jid)
            restarted = info.get("Restarts") == "1"
            if info.get("JobState") in TERMINAL and not restarted:
                break
            time.sleep(0.2)
        log = read_log(os.path.join(out, f"slurm-{jid}.out"))
        t.check(restarted, f"{what}: the job requeued itself (Restarts=1)",
                f"{cluster.job_info(jid)}\n{log[-3000:]}")
        recs = J.wait(jid, what)
        log = read_log(os.path.join(out, f"slurm-{jid}.out"))
        if recs:
            t.check(recs[0].get("JobState") == "COMPLETED" and recs[0].get("Restarts") == "1",
                    f"{what}: job COMPLETED after one restart",
                    f"{recs[0].get('JobState')} Restarts={recs[0].get('Restarts')}\n{log[-3000:]}")
        for needle, desc in (("got SIGUSR1", "the batch shell's trap got USR1"),
                             ("exited with status 5", "shardline stopped with status 5"),
                             (f"requeueing job {jid}", "the script requeued the job"),
                             ("restart 1)", "the second start has SLURM_RESTART_COUNT=1"),
                             ("exited with status 0", "the second start finished with status 0")):
            t.check(needle in log, f"{what}: {desc}", log[-3000:])
        t.check(log.count("exited with status 5") == 1 and log.index("exited with status 5")
                < log.index("restart 1)") if "restart 1)" in log and "exited with status 5" in log
                else False, f"{what}: one stop, then the restart (one log, appended)", log[-3000:])
        after = e.list_parts(out)[0]
        kept = [k for k, v in before.items() if k in after and (after[k].ino, after[k].mtime_ns) == v]
        t.check(len(before) > 0 and len(kept) == len(before),
                f"{what}: the {len(before)} parts committed before the stop were kept, not recomputed",
                f"{len(kept)} of {len(before)} unchanged")
        t.check(len(before) < total_units, f"{what}: the stop came mid-way ({len(before)} of "
                                           f"{total_units} units done)")
        e.check_parts_cover(t, out, shards, 3, f"{what}: part files cover every row exactly once")
        equal_ref(t, out, ref, what)
        print(f"      [{what}: {time.time() - t1:.1f} s]", flush=True)

    # ---- (d) a job array of 3 tasks --------------------------------------------------------
    what = "(d) array"
    out = os.path.join(tmp, "out-d")
    t1 = time.time()
    jid = J.submit(write_job(tmp, "d", "out-d"), ["--array", "3"], what=what)
    if jid:
        recs = J.wait(jid, what) or []
        logs = {i: read_log(os.path.join(out, f"slurm-{jid}_{i}.out")) for i in range(3)}
        states = sorted((r.get("ArrayTaskId"), r.get("JobState"), r.get("ExitCode")) for r in recs)
        t.check(len(recs) == 3 and all(s[1] == "COMPLETED" and s[2] == "0:0" for s in states),
                f"{what}: 3 array tasks COMPLETED with exit 0:0",
                f"{states}\n" + "\n".join(v[-1500:] for v in logs.values()))
        for i in range(3):
            t.check(f"array task {i}," in logs[i] and "exited with status 0" in logs[i],
                    f"{what}: task {i} ran as array task {i} and exited 0", logs[i][-2000:])
        e.check_parts_cover(t, out, shards, 3, f"{what}: part files cover every row exactly once")
        has_pred = os.path.exists(os.path.join(out, "predictions.h5"))
        t.check(has_pred, f"{what}: predictions.h5 written by the last task",
                "\n".join(v[-1500:] for v in logs.values()))
        if has_pred:
            equal_ref(t, out, ref, f"{what} (last task's predictions.h5)")
            os.rename(os.path.join(out, "predictions.h5"), os.path.join(tmp, "d-predictions.h5"))
        r = e.run_direct(["merge", out], cwd=tmp, timeout=120)
        t.check(r.rc == 0, f"{what}: shardline merge exits 0", r.describe())
        equal_ref(t, out, ref, f"{what} (merge)")
        r = e.run_direct(["status", out], cwd=tmp, timeout=60)
        t.check(r.rc == 0 and re.search(r"\b0 pending\b", r.stdout) is not None,
                f"{what}: shardline status reports 0 pending units", r.describe())
        print(f"      [{what}: {time.time() - t1:.1f} s]", flush=True)


if __name__ == "__main__":
    e.main("test_slurm_jobs", body)
