"""test_kill_trials.py — SIGKILL at random moments, then resume: the same bits as a clean run.

A real all-MiniLM-L6-v2 embed job on 2 ranks (48 rows, 12 units) is run once to the end (the
clean run, timed); then TRIALS_EMBED times, each in a fresh output directory, the same job is
started and, at a moment drawn (seeded) uniformly between its start and the clean run's
duration, mpirun and every rank are killed with SIGKILL at once; the rerun of the same
command must exit 0 with /embeddings bitwise equal to the clean run's, keep every part file
that was committed before the kill (same inode), and leave no temporary file. Likewise a
SmolLM2-135M generate job (seeded sampling: --temperature 0.8 --seed 7, one prompt per unit)
at TRIALS_GENERATE moments: the resumed /text, /tokens and the other outputs equal the clean
run's. The moments and where each kill landed (units committed at the kill) are printed.

Run: /usr/bin/python3 tests/mpi/test_kill_trials.py  (env: see sl_e2e.py; SL_KILL_SEED=N
draws other moments).
"""
import os
import random
import signal
import sys
import time

import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

NP = 2
TRIALS_EMBED = 10
TRIALS_GENERATE = 3
VLEN = h5py.string_dtype("utf-8")


def trials(t, tmp, label, args_for, n, units, rng):
    clean_out = os.path.join(tmp, f"{label}-clean")
    t0 = time.time()
    res = e.run(NP, args_for(clean_out), timeout=600)
    dur = time.time() - t0
    if not t.check(res.rc == 0, f"{label}: clean run exits 0 ({dur:.1f} s)", res.describe()):
        return
    clean = e.read_datasets(clean_out)
    landed = []
    for i in range(n):
        at = rng.uniform(0.0, dur)
        out = os.path.join(tmp, f"{label}-k{i}")
        args = args_for(out)
        p = e.start(NP, args)
        time.sleep(at)
        procs = e.kill_tree(p.pid, signal.SIGKILL)  # mpirun, its group and every rank at once
        rc, _, _ = e.finish(p, timeout=60)
        e.wait_gone(procs, 30)
        parts = {r: q.ino for r, q in e.list_parts(out)[0].items()}
        landed.append(len(parts))
        print(f"      {label} trial {i}: SIGKILL at {at:.2f} s of {dur:.1f}: "
              f"{len(parts)} of {units} units committed, mpirun status {rc}")
        res = e.run(NP, args, timeout=600)
        if not t.check(res.rc == 0, f"{label} trial {i}: rerun exits 0", res.describe()):
            continue
        try:
            diff = e.bitwise_diff(e.read_datasets(out), clean)
        except Exception as ex:  # noqa: BLE001
            diff = repr(ex)
        t.check(diff is None, f"{label} trial {i}: resumed outputs bitwise equal the clean run's",
                diff)
        after, others = e.list_parts(out)
        kept = [r for r, ino in parts.items() if r in after and after[r].ino == ino]
        t.check(len(kept) == len(parts) and len(after) == units and not others,
                f"{label} trial {i}: the {len(parts)} committed part(s) kept, {units} in all, "
                f"no temporary file", f"kept {len(kept)}, parts {len(after)}, others {others[:3]}")
    print(f"      {label}: units committed at each kill: {landed}")


def body(t, tmp):
    rng = random.Random(int(os.environ.get("SL_KILL_SEED", "20261206")))
    minilm, smol = e.installed("minilm"), e.installed("smollm2")
    if not minilm and not smol:
        print("skipped: neither all-MiniLM-L6-v2 nor SmolLM2 is installed (scripts/install-models.sh)")
        sys.exit(77)
    sys.path.insert(0, os.path.join(e.SOURCE_DIR, "tests", "reference"))
    from corpus import load_sentences  # noqa: E402
    base = load_sentences()
    if minilm:
        text = os.path.join(tmp, "text", "t.h5")
        e.write_text(text, [f"{base[i % len(base)]} ({i})" for i in range(48)])
        trials(t, tmp, "embed", lambda o: e.job_args(minilm, text, o, unit_rows=4,
                                                     extra=["--task", "embed", "--quiet"]),
               TRIALS_EMBED, 12, rng)
    else:
        t.skip("embed trials", "all-MiniLM-L6-v2 is not installed (scripts/install-models.sh)")
    if smol:
        prompts = ["The capital of France is", "Once upon a time", "def add(a, b):",
                   "Water boils at", "My favourite colour is", "Hello, my name is"]
        ptxt = os.path.join(tmp, "prompts", "p.h5")
        e.write_text(ptxt, prompts)
        trials(t, tmp, "generate", lambda o: e.job_args(
            smol, ptxt, o, unit_rows=1,
            extra=["--task", "generate", "--max-new-tokens", "8", "--temperature", "0.8",
                   "--seed", "7", "--quiet"]), TRIALS_GENERATE, len(prompts), rng)
    else:
        t.skip("generate trials", "SmolLM2 is not installed (scripts/install-models.sh)")


if __name__ == "__main__":
    e.main("kill_trials", body)
