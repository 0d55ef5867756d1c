"""test_scheduled.py — the nightly rerun of examples/scheduled/score-new.sh over a growing
input glob (what the cron and scrontab lines run), outside Slurm (mpirun, 2 ranks).

Checks:
  - first night, 3 shards: score-new.sh exits 0, predictions.h5 has their rows;
  - second night, 2 new shards and shard 1 rewritten with other rows: exit 0; the part files of
    the unchanged shards 0 and 2 are kept (same inode and mtime: not recomputed), shard 1's and the
    new shards' are computed; predictions.h5 is rewritten and equals, bitwise, a fresh plain
    mpirun run over all 5 shards;
  - a third night with nothing new computes no part and still exits 0;
  - while another run holds the lock, score-new.sh skips (exit 0, says so) and computes nothing;
  - usage errors: no job file (2), a job file without `output` (2).

Run by hand: SHARDLINE=build/shardline /usr/bin/python3 tests/slurm/test_scheduled.py
"""
import fcntl
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
import sl_e2e as e  # noqa: E402

ROWS = 3000
SCRIPT = os.path.join(e.SOURCE_DIR, "examples", "scheduled", "score-new.sh")


def shard(tmp, i, seed):
    rng = np.random.default_rng(seed)
    e.write_shard(os.path.join(tmp, "incoming", f"day-{i:03d}.h5"),
                  rng.standard_normal((ROWS, 16)).astype(np.float32))


def parts_by_shard(out):
    parts, _ = e.list_parts(out)
    return {k: (p.ino, p.mtime_ns) for k, p in parts.items()}


def night(t, tmp, label):
    r = e.run_cmd([SCRIPT, os.path.join(tmp, "nightly.ini")], timeout=300,
                  env={"SHARDLINE": e.SHARDLINE, "SHARDLINE_RANKS": "2"}, cwd="/")
    t.check(r.rc == 0 and "exited with status 0" in r.stdout, f"{label}: score-new.sh exits 0",
            r.describe())
    return r


def body(t, tmp):
    model = os.path.join(e.SOURCE_DIR, "examples", "mlp")
    with open(os.path.join(tmp, "nightly.ini"), "w") as f:
        f.write(f"model = {model}\ninput = incoming/*.h5\noutput = scores\n"
                "unit-rows = 1000\nbatch-size = 256\nquiet = true\n")
    out = os.path.join(tmp, "scores")
    for i in range(3):
        shard(tmp, i, 100 + i)
    night(t, tmp, "night 1")
    p1 = parts_by_shard(out)
    pred = e.predictions(t, out, "night 1")
    if pred is not None:
        t.equal(pred.shape, (3 * ROWS, 3), "night 1: predictions.h5 covers the 3 shards")

    for i in (3, 4):
        shard(tmp, i, 100 + i)
    shard(tmp, 1, 999)  # a changed shard: same name, other rows
    night(t, tmp, "night 2")
    p2 = parts_by_shard(out)
    kept = [k for k, v in p1.items() if p2.get(k) == v]
    t.equal(sorted({k.split(".h5.")[0] for k in kept}), ["day-000", "day-002"],
            "night 2: only the unchanged shards' parts are kept as they were")
    new = [k for k in p2 if k not in p1 or p2[k] != p1[k]]
    t.equal(sorted({k.split(".h5.")[0] for k in new}), ["day-001", "day-003", "day-004"],
            "night 2: parts computed for the changed and the new shards only")
    r = e.run(2, ["--model", model, "--input", os.path.join(tmp, "incoming", "*.h5"), "--output",
                  os.path.join(tmp, "fresh"), "--unit-rows", "1000", "--batch-size", "256",
                  "--quiet"], cwd=tmp)
    t.equal(r.rc, 0, "fresh plain run over the 5 shards exits 0")
    got = e.predictions(t, out, "night 2")
    ref = e.predictions(t, os.path.join(tmp, "fresh"), "fresh run")
    if got is not None and ref is not None:
        t.check(got.shape == (5 * ROWS, 3) and np.array_equal(got, ref),
                "night 2: predictions.h5 rewritten, equal to a fresh run over all shards",
                f"{got.shape} vs {ref.shape}")

    night(t, tmp, "night 3 (nothing new)")
    t.equal(parts_by_shard(out), p2, "night 3: no part recomputed")

    with open(os.path.join(out, ".score-new.lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shard(tmp, 5, 105)
        r = e.run_cmd([SCRIPT, os.path.join(tmp, "nightly.ini")], timeout=60,
                      env={"SHARDLINE": e.SHARDLINE}, cwd="/")
        t.check(r.rc == 0 and "skipping" in r.stdout, "a run holding the lock makes the next skip",
                r.describe())
    t.equal(parts_by_shard(out), p2, "the skipped run computed nothing")

    r = e.run_cmd([SCRIPT], timeout=30)
    t.equal(r.rc, 2, "no job file: exit 2")
    with open(os.path.join(tmp, "noout.ini"), "w") as f:
        f.write(f"model = {model}\ninput = incoming/*.h5\n")
    r = e.run_cmd([SCRIPT, os.path.join(tmp, "noout.ini")], timeout=30)
    t.check(r.rc == 2 and "output" in r.stderr, "job file without output: exit 2", r.describe())


if __name__ == "__main__":
    e.main("test_scheduled", body)
