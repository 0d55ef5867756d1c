"""test_faults.py — a fault at any stage of a job loses nothing and leaves nothing that lies.

SL_FAULT (common/sl_fault.h) makes the Nth call of one kind fail at its real call site. For
each stage (read, write, fsync, rename, allreduce, alloc, merge, manifest, lock), and for
crashes (SIGKILL) at a few of them, on 2 ranks (--tp 2, so every batch all-reduces):
  - the faulted run ends with exit 1 or 3 as README's exit statuses say (3 for the input read
    and the output directory's lock, 1 for the rest), a 'shardline: ' line naming the stage
    (SL_FAULT=stage:n) and the file at fault, and no crash of the MPI job other than a
    requested SIGKILL;
  - whatever it left is consistent: a predictions.h5 that exists holds exactly the clean
    run's values; a manifest that says complete has every unit committed; parts/ holds only
    whole part files named by the manifest (temporary files only after a SIGKILL);
  - the rerun of the same command without SL_FAULT exits 0, keeps every part file committed
    before (same inode: no unit committed twice), and writes outputs bitwise equal to a
    clean run's.
The same walk runs on all-MiniLM-L6-v2 (embed) for the stages a BERT job has. Then, on the
mlp job: the output on a small tmpfs that fills up (exit 1, "No space left on device", the
rerun on a larger mount completes; skipped when mounting is not permitted), the output
directory removed mid-job (exit 1 naming parts/, nothing recreated that looks complete; the
rerun completes), one rank SIGKILLed while the others run (mpirun ends the job within
KILL_BOUND_S seconds, no rank hangs in a collective; the rerun completes), and SIGTERM
arriving during the final merge (predictions.h5 is either complete and right or absent; the
rerun completes).

Run: /usr/bin/python3 tests/mpi/test_faults.py  (env: see sl_e2e.py).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

NP = 2
KILL_BOUND_S = 30.0
VLEN = h5py.string_dtype("utf-8")




def manifest_parts(out):
    man = e.load_json(os.path.join(out, "manifest.json"))
    if not man:
        return None, None
    return man, {u["part"] for u in man.get("units", [])}


def check_left(t, label, out, clean):
    """What a faulted run left must not lie. Returns {relpath: inode} of the part files."""
    pred = os.path.join(out, "predictions.h5")
    if os.path.exists(pred):
        try:
            diff = e.bitwise_diff(e.read_datasets(out), clean)
        except Exception as ex:  # noqa: BLE001
            diff = repr(ex)
        t.check(diff is None, f"{label}: the predictions.h5 left is the clean run's", diff)
    man, names = manifest_parts(out)
    parts, others = e.list_parts(out)
    rels = {"parts/" + r for r in parts}
    if man is not None:
        stray = sorted(rels - names)
        t.check(not stray, f"{label}: every part file is a unit of the manifest", stray[:4])
        if man.get("complete"):
            committed = {u["part"] for u in man["units"] if u["status"] == "committed"}
            t.check(committed == names and names <= rels,
                    f"{label}: a manifest saying complete has every unit's part file",
                    sorted(names - rels)[:4])
    # a run that ends by MPI_Abort or SIGKILL may leave the temporary file of a unit it was
    # writing (ignored, and removed by the next run)
    t.check(all(re.search(r"\.tmp\.\d+$", o) for o in others),
            f"{label}: parts/ holds only part files and temporary files", others[:4])
    return {r: p.ino for r, p in parts.items()}


def rerun_same(t, label, args, out, clean, before, env=None):
    res = e.run(NP, args, timeout=300, env=env)
    if not t.check(res.rc == 0, f"{label}: rerun exits 0", res.describe()):
        return
    try:
        diff = e.bitwise_diff(e.read_datasets(out), clean)
    except Exception as ex:  # noqa: BLE001
        diff = repr(ex)
    t.check(diff is None, f"{label}: rerun's outputs bitwise equal a clean run's", diff)
    parts, others = e.list_parts(out)
    man, names = manifest_parts(out)
    rels = {"parts/" + r for r in parts}
    t.check(not others, f"{label}: rerun: no temporary file left in parts/", others[:4])
    t.check(man is not None and man.get("complete") and rels == names
            and all(u["status"] == "committed" for u in man["units"]),
            f"{label}: rerun: manifest complete, one part file per unit, nothing else",
            f"extra {sorted(rels - (names or set()))[:3]}, missing {sorted((names or set()) - rels)[:3]}")
    kept = [r for r, ino in before.items() if r in parts and parts[r].ino == ino]
    rep = e.load_json(os.path.join(out, "report.json")) or {}
    t.check(len(kept) == len(before) and rep.get("units_skipped") == len(before),
            f"{label}: rerun keeps the {len(before)} part file(s) committed before and computes "
            f"only the others", f"kept {len(kept)}, report units_skipped {rep.get('units_skipped')}")


def walk(t, tmp, name, args_for, faults):
    """faults: (spec, expected status or 'kill', names that a 'shardline: ' line must hold)."""
    clean_out = os.path.join(tmp, f"{name}-clean")
    res = e.run(NP, args_for(clean_out), timeout=300)
    if not t.check(res.rc == 0, f"{name}: clean run exits 0", res.describe()):
        return
    clean = e.read_datasets(clean_out)
    for i, (spec, status, names) in enumerate(faults):
        label = f"{name} SL_FAULT={spec}"
        out = os.path.join(tmp, f"{name}-f{i}")
        args = args_for(out)
        res = e.run(NP, args, timeout=300, env={"SL_FAULT": spec})
        killed = status == "kill"
        if killed:
            t.check(res.rc not in (0, None) and "SL_FAULT" in res.stderr,
                    f"{label}: the job ends (non-zero) after the SIGKILL", res.describe())
        else:
            t.check(res.rc == status and not re.search(r"Segmentation|core dumped", res.stderr),
                    f"{label}: exit status {status}", res.describe())
            t.check(e.stderr_names(res, f"SL_FAULT={spec.split('@')[0]}", *names),
                    f"{label}: a 'shardline:' line names the stage and {'+'.join(names)}",
                    res.describe())
        before = check_left(t, label, out, clean)
        rerun_same(t, label, args, out, clean, before)


def body(t, tmp):
    # ---- mlp, every stage ------------------------------------------------------------------------
    model = e.make_model(os.path.join(tmp, "m"), [16, 64, 32, 4], "relu", None, seed=1)
    e.make_inputs(os.path.join(tmp, "d"), [100, 60], 16, names=["a.h5", "b.h5"], seed=2)
    glob = os.path.join(tmp, "d", "*.h5")

    def mlp_args(out):
        return e.job_args(model.path, glob, out, tp=2, unit_rows=16, batch=8, extra=["--quiet"])

    parts_dir = "parts/"
    walk(t, tmp, "mlp", mlp_args, [
        ("read:3", 3, ["a.h5", "features"]),
        ("read:14@1", 3, [".h5", "features"]),
        ("write:2", 1, [parts_dir, "No space left"]),
        ("fsync:3", 1, [parts_dir, "flush"]),
        ("rename:4", 1, [parts_dir, "commit"]),
        ("allreduce:5@1", 1, ["MPI_Allreduce"]),
        ("merge:1", 1, ["predictions.h5"]),
        ("manifest:1", 1, ["manifest.json"]),
        ("manifest:2", 1, ["manifest.json"]),
        ("manifest:3", 1, ["report.json"]),
        ("lock:1", 3, [".shardline.lock"]),
        ("write:3:kill", "kill", []),
        ("rename:6:kill", "kill", []),
        ("allreduce:9:kill@1", "kill", []),
        ("merge:1:kill", "kill", []),
    ])

    # ---- MiniLM embed ----------------------------------------------------------------------------
    minilm = e.installed("minilm")
    if not minilm:
        t.skip("MiniLM walk", "all-MiniLM-L6-v2 is not installed (scripts/install-models.sh)")
    else:
        sys.path.insert(0, os.path.join(e.SOURCE_DIR, "tests", "reference"))
        from corpus import load_sentences  # noqa: E402
        base = load_sentences()
        texts = [f"{base[i % len(base)]} ({i})" for i in range(24)]
        tpath = os.path.join(tmp, "t", "text.h5")
        os.makedirs(os.path.dirname(tpath))
        with h5py.File(tpath, "w") as f:
            f.create_dataset("text", data=np.array(texts, dtype=object), dtype=VLEN)

        def bert_args(out):
            return e.job_args(minilm, tpath, out, tp=2, unit_rows=8,
                              extra=["--task", "embed", "--quiet"])

        walk(t, tmp, "minilm", bert_args, [
            ("read:2", 3, ["text.h5", "text"]),
            ("rename:3", 1, [parts_dir]),  # the last unit: fails after the compute loop
            ("allreduce:20@0", 1, ["MPI_Allreduce"]),
            ("alloc:1@1", 1, ["out of host memory"]),
            ("write:2:kill", "kill", []),
        ])

    # ---- a heavier mlp for the faults that come from outside -------------------------------------
    hm = e.make_model(os.path.join(tmp, "hm"), [64, 1024, 512, 64], "relu", None, seed=3)
    e.make_inputs(os.path.join(tmp, "hd"), [48000], 64, names=["h.h5"], seed=4)
    hglob = os.path.join(tmp, "hd", "*.h5")

    def heavy(out):
        return e.job_args(hm.path, hglob, out, unit_rows=2000, batch=500, extra=["--quiet"])

    clean_out = os.path.join(tmp, "heavy-clean")
    res = e.run(NP, heavy(clean_out), timeout=300)
    if not t.check(res.rc == 0, "heavy: clean run exits 0", res.describe()):
        return
    clean = e.read_datasets(clean_out)

    def frozen_at_first_part(out, env=None):
        """Starts the job; once a part file is committed, freezes the ranks (SIGSTOP).
        Returns (popen, ranks) or (popen, None) when it ended first."""
        p = e.start(NP, heavy(out), env=env)
        ranks, t0 = [], time.time()
        while time.time() - t0 < 120 and p.poll() is None:
            ranks = e.rank_pids(p.pid)
            if len(ranks) == NP and e.list_parts(out)[0]:
                for r in ranks:
                    os.kill(r, signal.SIGSTOP)
                return p, ranks
            time.sleep(0.005)
        return p, None

    # disk full: the output on a small tmpfs
    mnt = os.path.join(tmp, "small")
    os.makedirs(mnt)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        t.skip("disk full", f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    else:
        try:
            out = os.path.join(mnt, "out")
            res = e.run(NP, heavy(out), timeout=300)
            t.check(res.rc == 1 and not e.crashed(res), "disk full: exit status 1", res.describe())
            t.check(e.stderr_names(res, out, "No space left on device"),
                    "disk full: a 'shardline:' line names the file and 'No space left on device'",
                    res.describe())
            before = check_left(t, "disk full", out, clean)
            t.check(0 < len(before) < 24, f"disk full: some units committed ({len(before)} of 24)")
            subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
            rerun_same(t, "disk full", heavy(out), out, clean, before)
        finally:
            subprocess.run(["umount", mnt], capture_output=True)

    # the output directory removed mid-job
    out = os.path.join(tmp, "removed")
    p, ranks = frozen_at_first_part(out)
    if t.check(ranks is not None, "removed: the job is frozen after its first commit"):
        shutil.rmtree(out)
        for r in ranks:
            os.kill(r, signal.SIGCONT)
        rc, _, err = e.finish(p, timeout=120)
        res = e.Result(["removed"], rc, "", err, 0)
        t.check(rc == 1, "removed: exit status 1", res.describe())
        t.check(e.stderr_names(res, out, "parts", "removed"),
                "removed: a 'shardline:' line names OUT, parts/ and says it was removed",
                res.describe())
        t.check(not os.path.exists(os.path.join(out, "predictions.h5"))
                and not os.path.exists(os.path.join(out, "manifest.json")),
                "removed: nothing recreated that looks like a job's output",
                str(os.listdir(out)) if os.path.isdir(out) else "")
        rerun_same(t, "removed", heavy(out), out, clean, {})
    else:
        e.kill_tree(p.pid, signal.SIGKILL)
        e.finish(p)

    # one rank SIGKILLed while the other runs: mpirun must end the job
    out = os.path.join(tmp, "rankkill")
    p, ranks = frozen_at_first_part(out)
    if t.check(ranks is not None, "rank killed: the job is frozen after its first commit"):
        os.kill(ranks[1], signal.SIGKILL)
        os.kill(ranks[0], signal.SIGCONT)
        t0 = time.time()
        try:
            rc, _, err = e.finish(p, timeout=KILL_BOUND_S + 30)
        except subprocess.TimeoutExpired:
            rc, err = None, "(still running)"
            e.kill_tree(p.pid, signal.SIGKILL)
            e.finish(p)
        dt = time.time() - t0
        gone = e.wait_gone(ranks, 5)
        t.check(rc not in (0, None) and dt < KILL_BOUND_S and gone,
                f"rank killed: the job ends {dt:.1f} s after rank 1 died (< {KILL_BOUND_S:.0f} s), "
                f"status {rc}, every rank gone", err[-1500:])
        before = check_left(t, "rank killed", out, clean)
        rerun_same(t, "rank killed", heavy(out), out, clean, before)
    else:
        e.kill_tree(p.pid, signal.SIGKILL)
        e.finish(p)

    # SIGTERM while rank 0 writes predictions.h5
    out = os.path.join(tmp, "mergeterm")
    res = e.run(NP, heavy(out), timeout=300, env={"SL_FAULT": "merge:1:term@0"})
    t.check("SIGTERM" in res.stderr and not e.crashed(res),
            "SIGTERM in the merge: delivered, no crash", res.describe())
    have = os.path.exists(os.path.join(out, "predictions.h5"))
    t.check((res.rc == 0 and have) or (res.rc != 0 and not have),
            f"SIGTERM in the merge: exit {res.rc} with predictions.h5 {'present' if have else 'absent'}"
            " (complete or nothing)", res.describe())
    before = check_left(t, "SIGTERM in the merge", out, clean)
    rerun_same(t, "SIGTERM in the merge", heavy(out), out, clean, before)


if __name__ == "__main__":
    e.main("faults", body)
