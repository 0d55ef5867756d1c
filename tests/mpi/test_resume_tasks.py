"""test_resume_tasks.py — every task resumes: predict (mlp), embed and classify (BERT), score and
generate (LLaMA family), one parametrised body.

For each task, under mpirun with 2 ranks and small units:
  - a baseline run to the end (every output dataset is kept);
  - a run stopped mid-job by SIGUSR1 sent to the ranks (exit 5), and a run killed with SIGKILL
    mid-job: the ranks are frozen (SIGSTOP) as soon as the first part file appears, so the
    interruption always lands with some but not all units committed, however fast the model;
  - after each interruption `shardline status` counts exactly the part files that exist as
    committed and the rest as pending;
  - the rerun of the same command exits 0, keeps every committed part file (same inode and
    mtime), computes only the others (report.json units_skipped), and writes outputs bitwise
    equal to the baseline's (tokens and text included);
  - rerunning the finished job computes nothing and changes nothing.

Models: a generated mlp, the real all-MiniLM-L6-v2 and SmolLM2-135M (scripts/install-models.sh),
the tiny classification checkpoint in tests/reference/tiny_bert_cls.

Run: ctest -R test_resume_tasks (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import os
import re
import signal
import sys
import time

import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = e.SOURCE_DIR
NP = 2
VLEN = h5py.string_dtype("utf-8")


def corpus(n):
    """n real sentences (tests/reference/sentences.txt, repeated with a row number)."""
    sys.path.insert(0, os.path.join(SRC, "tests", "reference"))
    from corpus import load_sentences  # noqa: E402
    base = load_sentences()
    return [f"{base[i % len(base)]} ({i})" for i in range(n)]


def part_stats(out):
    parts, _ = e.list_parts(out)
    res = {}
    for rel in parts:
        st = os.stat(os.path.join(out, "parts", rel))
        res[rel] = (st.st_ino, st.st_mtime_ns)
    return res


def status_counts(out):
    r = e.run_direct(["status", out])
    m = re.search(r"units\s+(\d+) committed, (\d+) pending", r.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else None, r


def freeze_after_first_part(p, out, limit=240):
    """Finds the rank processes as soon as they start, then polls OUT/parts and stops every rank
    (SIGSTOP) the moment a part file exists, so the job cannot run on while we look. Returns the
    rank pids, or None when the job ended first."""
    end = time.time() + limit
    ranks = []
    parts_dir = os.path.join(out, "parts")
    while time.time() < end and p.poll() is None:
        if len(ranks) < NP:
            ranks = e.rank_pids(p.pid)
            continue
        try:
            committed = any(name.endswith(".h5") and ".tmp." not in name
                            for sub in os.scandir(parts_dir) if sub.is_dir()
                            for name in os.listdir(sub.path))
        except FileNotFoundError:
            committed = False
        if committed:
            for r in ranks:
                try:
                    os.kill(r, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            return ranks
        time.sleep(0.001)
    return None


def interrupted(t, label, args, out, base, units, how):
    p = e.start(NP, args)
    ranks = freeze_after_first_part(p, out)
    if not ranks:
        e.kill_tree(p.pid, signal.SIGKILL)
        rc, _, err = e.finish(p)
        t.check(False, f"{label} {how}: job running when its first part appeared",
                f"status {rc}: {err[-1500:]}")
        return
    everyone = [p.pid] + e.descendants(p.pid)
    if how == "usr1":
        # SIGUSR1 to each frozen rank, as Slurm's batch script forwards it: pending until
        # SIGCONT, so the stop lands right after the units in flight, however fast the model
        # (a signal to mpirun is forwarded after a delay that a tiny model can outrun)
        for r in ranks:
            try:
                os.kill(r, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        for r in ranks:
            try:
                os.kill(r, signal.SIGCONT)
            except ProcessLookupError:
                pass
    else:
        e.kill_tree(p.pid, signal.SIGKILL)
        for r in ranks:
            try:
                os.kill(r, signal.SIGCONT)  # a stopped process dies of SIGKILL anyway
            except ProcessLookupError:
                pass
    try:
        rc, _, err = e.finish(p, timeout=180)
    except Exception:  # noqa: BLE001
        e.kill_tree(p.pid, signal.SIGKILL)
        rc, _, err = e.finish(p)
        t.check(False, f"{label} {how}: the job ends after the interruption", err[-1500:])
        return
    e.wait_gone(everyone, 30)
    if how == "usr1":
        t.check(rc == 5, f"{label} usr1: exit status 5", f"status {rc}: {err[-1500:]}")
    else:
        t.check(rc != 0, f"{label} kill: the killed job does not report success", f"status {rc}")
    before = part_stats(out)
    t.check(0 < len(before) < units, f"{label} {how}: some but not all of {units} units committed",
            f"{len(before)} part files")
    t.check(not os.path.exists(os.path.join(out, "predictions.h5")),
            f"{label} {how}: no predictions.h5 after the interruption")
    counts, res = status_counts(out)
    t.check(counts == (len(before), units - len(before)),
            f"{label} {how}: status counts {len(before)} committed, {units - len(before)} pending",
            res.stdout + res.stderr)
    r = e.run(NP, args, timeout=600)
    if not t.check(r.rc == 0, f"{label} {how}: the rerun exits 0", r.describe()):
        return
    after = part_stats(out)
    kept = [k for k, v in before.items() if after.get(k) != v]
    t.check(not kept, f"{label} {how}: the {len(before)} committed parts were kept", kept[:4])
    rep = e.load_json(os.path.join(out, "report.json")) or {}
    t.equal(rep.get("units_skipped"), len(before), f"{label} {how}: report.json units_skipped")
    diff = e.bitwise_diff(e.read_datasets(out), base)
    t.check(diff is None, f"{label} {how}: outputs bitwise equal to the uninterrupted run", diff)


def one_task(t, tmp, label, args_for, units):
    base_out = os.path.join(tmp, f"{label}-base")
    r = e.run(NP, args_for(base_out), timeout=600)
    if not t.check(r.rc == 0, f"{label}: baseline exits 0", r.describe()):
        return
    base = e.read_datasets(base_out)
    t.equal(len(e.list_parts(base_out)[0]), units, f"{label}: baseline has {units} part files")
    for how in ("usr1", "kill"):
        out = os.path.join(tmp, f"{label}-{how}")
        interrupted(t, label, args_for(out), out, base, units, how)
    # a finished job: nothing recomputed, nothing changed
    before = part_stats(base_out)
    r = e.run(NP, args_for(base_out), timeout=600)
    if t.check(r.rc == 0, f"{label}: rerun of the finished job exits 0", r.describe()):
        rep = e.load_json(os.path.join(base_out, "report.json")) or {}
        t.equal(rep.get("units_computed"), 0, f"{label}: rerun of the finished job computes no unit")
        t.check(part_stats(base_out) == before, f"{label}: rerun of the finished job rewrites no part")
        t.check(e.bitwise_diff(e.read_datasets(base_out), base) is None,
                f"{label}: rerun of the finished job gives the same outputs")
        counts, res = status_counts(base_out)
        t.equal(counts, (units, 0), f"{label}: status of the finished job")


def body(t, tmp):
    minilm, smol = e.installed("minilm"), e.installed("smollm2")
    # predict: a generated mlp wide enough that a unit takes several milliseconds
    model = e.make_model(os.path.join(tmp, "mlp"), [64, 2048, 2048, 4], seed=3)
    e.make_inputs(os.path.join(tmp, "feat"), [600, 400], 64, seed=4)
    feat = os.path.join(tmp, "feat", "*.h5")
    tasks = [("predict", lambda o: e.job_args(model.path, feat, o, unit_rows=50, batch=25), 20)]

    e.write_text(os.path.join(tmp, "text", "t.h5"), corpus(48))
    text = os.path.join(tmp, "text", "t.h5")
    cls = os.path.join(SRC, "tests", "reference", "tiny_bert_cls")
    tasks.append(("classify", lambda o: e.job_args(cls, text, o, unit_rows=4,
                                                   extra=["--task", "classify"]), 12))
    if minilm:
        tasks.append(("embed", lambda o: e.job_args(minilm, text, o, unit_rows=6,
                                                    extra=["--task", "embed"]), 8))
    else:
        t.check(False, "all-MiniLM-L6-v2 is installed", "run scripts/install-models.sh")
    if smol:
        prompts = ["The capital of France is", "Once upon a time", "def add(a, b):",
                   "Water boils at", "My favourite colour is", "In 1492,", "Hello, my name is",
                   "The best way to learn a language is", "Rain falls when", "My dog likes",
                   "The moon is", "Bread is made from"]
        e.write_text(os.path.join(tmp, "prompts", "p.h5"), prompts)
        ptxt = os.path.join(tmp, "prompts", "p.h5")
        tasks.append(("score", lambda o: e.job_args(smol, text, o, unit_rows=6,
                                                    extra=["--task", "score"]), 8))
        # one row per unit: a stop lands after the unit each rank is computing
        tasks.append(("generate", lambda o: e.job_args(
            smol, ptxt, o, unit_rows=1, extra=["--task", "generate", "--max-new-tokens", "12",
                                               "--temperature", "0.8", "--seed", "7"]), 12))
    else:
        t.check(False, "SmolLM2 is installed", "run scripts/install-models.sh")
    for label, args_for, units in tasks:
        one_task(t, tmp, label, args_for, units)


if __name__ == "__main__":
    e.main("resume_tasks", body)
