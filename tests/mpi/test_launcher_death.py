"""test_launcher_death.py — ranks exit promptly when mpirun dies.

Open MPI puts each rank in its own process group, so SIGKILL to mpirun's process group (what a
terminal or a batch system's "kill the job" often does) does not reach the ranks; they used to
run on for ~1.05 s, until the MPI library noticed. Each rank now watches its launcher (its
parent process) and exits within ~0.1 s of its death. Checks, 2 ranks, twice: mpirun's group
is SIGKILLed mid-job; every rank is gone within 0.6 s; a rerun of the same command then
completes the job (exit 0) with predictions equal to the float64 reference.

Run: /usr/bin/python3 tests/mpi/test_launcher_death.py  (env: see sl_e2e.py).
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

LIMIT_S = 0.6


def body(t, tmp):
    model = e.make_model(os.path.join(tmp, "m"), [64, 1024, 1024, 4], "relu", None, seed=1)
    shards = e.make_inputs(os.path.join(tmp, "d"), [150000], 64, names=["a.h5"], seed=2)
    for trial in range(2):
        # each trial in its own directory: a second trial resuming the first would have less
        # work left than the time it takes to look
        out = os.path.join(tmp, f"out{trial}")
        args = e.job_args(model.path, os.path.join(tmp, "d", "*.h5"), out, unit_rows=4096,
                          batch=256)
        p = e.start(2, args)
        ranks, t0 = [], time.time()
        while time.time() - t0 < 60 and len(ranks) < 2 and p.poll() is None:
            ranks = e.rank_pids(p.pid)
            time.sleep(0.05)
        while time.time() - t0 < 60 and not e.list_parts(out)[0] and p.poll() is None:
            time.sleep(0.01)  # well into the work: a unit is committed
        if not t.check(len(ranks) == 2 and p.poll() is None, f"trial {trial}: 2 ranks running",
                       f"ranks {ranks}, mpirun status {p.poll()}"):
            e.kill_tree(p.pid, signal.SIGKILL)
            e.finish(p)
            return
        os.killpg(p.pid, signal.SIGKILL)  # mpirun's group only: the ranks have their own
        t1 = time.time()
        gone = e.wait_gone(ranks, 20)
        dt = time.time() - t1
        t.check(gone and dt < LIMIT_S,
                f"trial {trial}: ranks gone {dt:.2f} s after mpirun was killed (< {LIMIT_S} s)",
                f"gone {gone}")
        e.kill_tree(p.pid, signal.SIGKILL)
        e.finish(p)
    res = e.run(2, args, timeout=300)
    if t.check(res.rc == 0, "rerun after the kills: exit 0", res.describe()):
        t.close(e.predictions(t, out, "rerun"), model.forward(shards[0][1]), 1e-5,
                "rerun: predictions match the float64 reference")


if __name__ == "__main__":
    e.main("launcher_death", body)
