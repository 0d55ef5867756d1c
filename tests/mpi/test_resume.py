"""test_resume.py — interrupted jobs resume without losing or repeating a row; reruns reuse
exactly the part files that are still valid.

Checks, on a job with many units (6 shards x 2000 rows, --unit-rows 250, --batch-size 50,
2 ranks), against an uninterrupted baseline run:
  - SIGTERM / SIGINT delivered to the ranks (what srun and Slurm do) and SIGUSR1 sent to mpirun
    (which forwards it): exit status 5, no predictions.h5 yet, some but not all part files, each
    complete and bitwise equal to the baseline's rows; rerunning the same command gives status
    0, predictions bitwise equal to the baseline, and the part files that existed are kept
    (same inode and mtime), only the missing units are computed;
  - SIGTERM sent to mpirun itself (Open MPI forwards it to the ranks, which commit and stop,
    then mpirun exits with its own status 1, as the README says): the directory is left
    resumable and the rerun gives the baseline's predictions;
  - a second SIGTERM to the ranks (README: exits at once): no crash, committed parts intact,
    the rerun gives the baseline's predictions;
  - SIGKILL to mpirun and every rank, early and late: every file named like a part is complete
    (temporary files may remain but are never taken for parts), the rerun gives status 0 and
    the baseline's predictions, and the parts cover every shard exactly once;
  - rerunning a completed job changes no part file and gives identical predictions;
  - rewriting one input shard with new data recomputes exactly that shard's units (other
    shards' part files untouched) and the predictions follow the new data; touching a shard
    (new mtime, same bytes) recomputes only its units;
  - new weights in the model directory invalidate every unit; --restart recomputes everything.

Run: /usr/bin/python3 tests/mpi/test_resume.py  (env: see sl_e2e.py). Prints each check, then
"N passed, N failed".
"""
import math
import os
import re
import shutil
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

NSHARDS, ROWS, UNIT, BATCH, NP = 6, 2000, 250, 50, 2
UNITS = NSHARDS * ((ROWS + UNIT - 1) // UNIT)
D0, DN = 32, 8
DIMS = [D0, 0, 0, DN]  # filled in once the hidden width is chosen
MIN_SECONDS = 2.5  # the baseline job must last this long, so it can be interrupted midway


def dims(hidden):
    return [D0, hidden, hidden, DN]


class Job:
    def __init__(self, tmp, hidden):
        self.tmp = tmp
        self.data = os.path.join(tmp, "data")
        self.shards = e.make_inputs(self.data, [ROWS] * NSHARDS, D0, seed=5)
        self.set_hidden(hidden)
        self.offset = {os.path.basename(p): i * ROWS for i, (p, _) in enumerate(self.shards)}

    def set_hidden(self, hidden, seed=6):
        self.hidden = hidden
        self.model = e.make_model(os.path.join(self.tmp, "model"), dims(hidden), "relu",
                                  "softmax", seed=seed)

    def args(self, out, extra=()):
        return e.job_args(self.model.path, os.path.join(self.data, "*.h5"), out,
                          unit_rows=UNIT, batch=BATCH, extra=extra)

    def x(self):
        return np.concatenate([x for _, x in self.shards])


def parts_match(t, parts, base, offset, what):
    """Every part file is complete and bitwise equal to the baseline's rows."""
    bad = []
    for rel, p in parts.items():
        try:
            pred, _ = e.read_part(p.path)
            g0 = offset[p.shard] + p.first
            if not np.array_equal(pred, base[g0:g0 + (p.end - p.first)]):
                bad.append(f"{rel}: differs from the baseline")
        except Exception as ex:  # noqa: BLE001
            bad.append(f"{rel}: unreadable ({ex})")
    return t.check(not bad, what, "; ".join(bad[:6]))


def unchanged(before, after):
    """Relative paths of parts in `before` whose file was replaced or removed in `after`."""
    return [rel for rel, p in before.items()
            if rel not in after or after[rel].ino != p.ino or after[rel].mtime_ns != p.mtime_ns]


def fresh_cover(parts, since_ns, shard_names):
    """Do the parts written after since_ns cover exactly the given shards' rows?"""
    problems = []
    for name in shard_names:
        ps = sorted((p for p in parts.values() if p.shard == name and p.mtime_ns > since_ns),
                    key=lambda p: p.first)
        pos = 0
        for p in ps:
            if p.first != pos:
                problems.append(f"{name}: new part {p.first}-{p.end} where {pos} was expected")
            pos = max(pos, p.end)
        if pos != ROWS:
            problems.append(f"{name}: new parts cover {pos} of {ROWS} rows")
    return problems


def report_resume_info(report):
    """Keys a report might use to say how much work was reused (informational)."""
    if not isinstance(report, dict):
        return {}
    return {k: v for k, v in report.items()
            if any(w in k.lower() for w in ("skip", "resum", "reus", "kept", "computed", "done"))}


def interrupt(t, job, base, mode, min_parts):
    """Starts the job in a fresh directory, interrupts it once min_parts part files exist, checks
    the state left behind, reruns and checks the result."""
    label = f"interrupt {mode}"
    out = os.path.join(job.tmp, f"out-{mode}")
    p = e.start(NP, job.args(out), cwd=job.tmp)
    t_end = time.time() + 240
    parts = {}
    while time.time() < t_end and p.poll() is None:
        parts, _ = e.list_parts(out)
        if len(parts) >= min_parts:
            break
        time.sleep(0.01)
    if p.poll() is not None or len(parts) < min_parts:
        if p.poll() is None:
            e.kill_tree(p.pid, signal.SIGKILL)
        rc, _, p_err = e.finish(p)
        t.check(False, f"{label}: job still running when {min_parts} parts existed",
                f"status {rc}; {len(parts)} parts; the job is too fast to interrupt "
                f"or failed; stderr: {p_err[-1500:]}")
        return
    ranks = e.rank_pids(p.pid)
    everyone = [p.pid] + e.descendants(p.pid)
    if mode.endswith("-ranks") or mode == "term-twice":
        t.check(len(ranks) == NP, f"{label}: found the {NP} rank processes", f"found {ranks}")
    if mode in ("term-ranks", "int-ranks", "term-twice"):
        sig = signal.SIGINT if mode == "int-ranks" else signal.SIGTERM
        for _ in range(2 if mode == "term-twice" else 1):
            for r in ranks:
                try:
                    os.kill(r, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
    elif mode == "usr1-mpirun":
        os.kill(p.pid, signal.SIGUSR1)
    elif mode == "term-mpirun":
        os.kill(p.pid, signal.SIGTERM)
    elif mode.startswith("kill"):
        e.kill_tree(p.pid, signal.SIGKILL)
    try:
        rc, _, err = e.finish(p, timeout=120)
    except Exception:  # noqa: BLE001
        e.kill_tree(p.pid, signal.SIGKILL)
        _, _, err = e.finish(p)
        t.check(False, f"{label}: job stops within 120 s of the signal", err[-1500:])
        return
    gone = e.wait_gone(everyone, 30)
    t.check(gone, f"{label}: mpirun and every rank are gone")
    detail = f"status {rc}; ranks {ranks}; stderr: {err[-2000:]}"
    if mode in ("term-ranks", "int-ranks", "usr1-mpirun"):
        t.check(rc == 5, f"{label}: exit status 5", detail)
    elif mode == "term-mpirun":
        # README: Open MPI's mpirun forwards SIGTERM to the ranks, then exits with its own 1
        t.check(rc == 1, f"{label}: mpirun exits with its own status 1 (README)", detail)
    elif mode == "term-twice":
        t.check(rc not in (0, None) and not re.search(r"Segmentation fault|core dumped|Aborted", err),
                f"{label}: stops without reporting success, no crash", detail)
    else:
        t.check(rc != 0, f"{label}: killed job does not report success", detail)
    t.check(not os.path.exists(os.path.join(out, "predictions.h5")),
            f"{label}: no predictions.h5 after the interruption")
    parts, others = e.list_parts(out)
    t.check(0 < len(parts) < UNITS, f"{label}: some but not all units committed",
            f"{len(parts)} part files of {UNITS} units")
    if others:
        print(f"      note: other files under parts/: {others[:5]}")
    parts_match(t, parts, base, job.offset,
                f"{label}: every file named like a part is complete and equals the baseline")
    res = e.run(NP, job.args(out), timeout=300)
    if not t.check(res.rc == 0, f"{label}: rerun exits 0", res.describe()):
        return
    try:
        o = e.read_output(out)
    except Exception as ex:  # noqa: BLE001
        t.check(False, f"{label}: rerun wrote predictions.h5", repr(ex))
        return
    t.check(np.array_equal(o.predictions, base),
            f"{label}: rerun predictions bitwise equal to the uninterrupted run",
            f"max |diff| {np.max(np.abs(o.predictions.astype(np.float64) - base)) if o.predictions.shape == base.shape else o.predictions.shape}")
    after, _ = e.list_parts(out)
    changed = unchanged(parts, after)
    t.check(not changed, f"{label}: the {len(parts)} committed parts were kept, not recomputed",
            f"rewritten: {changed[:6]}")
    e.check_parts_cover(t, out, [(pth, ROWS) for pth, _ in job.shards], DIMS[-1],
                        f"{label}: parts cover every shard exactly once after the rerun")
    t.check((o.report or {}).get("failed_rows") == 0, f"{label}: report.json failed_rows=0",
            f"report: {o.report}")
    rep = o.report or {}
    info = report_resume_info(rep)
    print(f"      note: report after resume: rows={rep.get('rows')} {info}")
    if "units_skipped" in rep:
        t.equal(rep["units_skipped"], len(parts), f"{label}: report.json units_skipped = "
                f"{len(parts)} (the committed parts)")
    if "rows_computed" in rep:
        kept = sum(p.end - p.first for p in parts.values())
        t.equal(rep["rows_computed"], NSHARDS * ROWS - kept,
                f"{label}: report.json rows_computed = {NSHARDS * ROWS - kept}")


def body(t, tmp):
    # ---- baseline, with a hidden width that makes the job last MIN_SECONDS on this machine ----
    job = Job(tmp, 512)
    base_out = os.path.join(tmp, "out-base")
    for attempt in range(3):
        shutil.rmtree(base_out, ignore_errors=True)
        res = e.run(NP, job.args(base_out), timeout=300)
        if not t.check(res.rc == 0, f"baseline (hidden width {job.hidden}): exit status 0",
                       res.describe()):
            return
        secs = (e.load_json(os.path.join(base_out, "report.json")) or {}).get("seconds") or res.seconds
        print(f"      note: baseline with hidden width {job.hidden}: job {secs:.2f} s, "
              f"wall {res.seconds:.2f} s")
        if secs >= 0.8 * MIN_SECONDS or job.hidden >= 4096 or attempt == 2:
            break
        grow = math.sqrt(2.0 * MIN_SECONDS / max(secs, 0.01))
        job.set_hidden(min(4096, max(job.hidden + 64, int(job.hidden * grow) // 64 * 64)))
    ref = job.model.forward(job.x())
    DIMS[:] = dims(job.hidden)
    base = e.predictions(t, base_out, "baseline")
    if base is None:
        return
    t.close(base, ref, 1e-5, "baseline: predictions match the float64 reference")
    t.check(len(e.list_parts(base_out)[0]) == UNITS, f"baseline: {UNITS} part files",
            f"got {len(e.list_parts(base_out)[0])}")

    # ---- interruptions ----
    for mode, min_parts in (("term-ranks", 2), ("int-ranks", 4), ("usr1-mpirun", 2),
                            ("term-mpirun", 3), ("term-twice", 3), ("kill-early", 2),
                            ("kill-late", UNITS // 2)):
        interrupt(t, job, base, mode, min_parts)

    # ---- rerunning a completed job is a no-op ----
    before, _ = e.list_parts(base_out)
    res = e.run(NP, job.args(base_out), timeout=300)
    if t.check(res.rc == 0, "rerun of a completed job: exit 0", res.describe()):
        after, _ = e.list_parts(base_out)
        t.check(not unchanged(before, after) and len(after) == len(before),
                "rerun of a completed job: no part file rewritten or added",
                f"rewritten: {unchanged(before, after)[:5]}; {len(before)} -> {len(after)} parts")
        t.check(np.array_equal(e.predictions(t, base_out, "rerun"), base),
                "rerun of a completed job: identical predictions")

    # ---- a rewritten shard invalidates exactly its units ----
    victim_path, _ = job.shards[2]
    victim = os.path.basename(victim_path)
    others = [os.path.basename(pth) for pth, _ in job.shards if pth != victim_path]
    time.sleep(1.2)  # a different mtime even at 1 s resolution
    rng = np.random.default_rng(99)
    new = rng.standard_normal((ROWS, DIMS[0])).astype(np.float32)
    e.write_shard(victim_path, new)
    job.shards[2] = (victim_path, e.as_f32(new))
    ref = job.model.forward(job.x())
    before, _ = e.list_parts(base_out)
    t0 = time.time_ns()
    res = e.run(NP, job.args(base_out), timeout=300)
    if t.check(res.rc == 0, f"rewritten {victim}: rerun exits 0", res.describe()):
        after, _ = e.list_parts(base_out)
        kept = {r: p for r, p in before.items() if p.shard in others}
        t.check(not unchanged(kept, after), f"rewritten {victim}: other shards' parts untouched",
                f"rewritten: {unchanged(kept, after)[:5]}")
        new_other = [r for r, p in after.items() if p.shard in others and r not in kept]
        t.check(not new_other, f"rewritten {victim}: no new parts for other shards", new_other[:5])
        probs = fresh_cover(after, t0, [victim])
        t.check(not probs, f"rewritten {victim}: every unit of it recomputed", "; ".join(probs))
        p = e.predictions(t, base_out, f"rewritten {victim}")
        if p is not None:
            lo = job.offset[victim]
            mask = np.ones(len(base), bool)
            mask[lo:lo + ROWS] = False
            t.check(p.shape == base.shape and np.array_equal(p[mask], base[mask]),
                    f"rewritten {victim}: other rows unchanged")
            t.close(p, ref, 1e-5, f"rewritten {victim}: predictions follow the new data")
            base = p

    # ---- a touched shard (same bytes, new mtime) recomputes only its units ----
    touched_path, _ = job.shards[4]
    touched = os.path.basename(touched_path)
    others = [os.path.basename(pth) for pth, _ in job.shards if pth != touched_path]
    st = os.stat(touched_path)
    os.utime(touched_path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    before, _ = e.list_parts(base_out)
    t0 = time.time_ns()
    res = e.run(NP, job.args(base_out), timeout=300)
    if t.check(res.rc == 0, f"touched {touched}: rerun exits 0", res.describe()):
        after, _ = e.list_parts(base_out)
        kept = {r: p for r, p in before.items() if p.shard in others}
        t.check(not unchanged(kept, after), f"touched {touched}: other shards' parts untouched",
                f"rewritten: {unchanged(kept, after)[:5]}")
        probs = fresh_cover(after, t0, [touched])
        t.check(not probs, f"touched {touched}: its units recomputed", "; ".join(probs))
        t.check(np.array_equal(e.predictions(t, base_out, "rerun"), base),
                f"touched {touched}: identical predictions")

    # ---- new weights invalidate everything ----
    time.sleep(1.2)
    job.set_hidden(job.hidden, seed=77)
    ref = job.model.forward(job.x())
    t0 = time.time_ns()
    res = e.run(NP, job.args(base_out), timeout=300)
    names = [os.path.basename(pth) for pth, _ in job.shards]
    if t.check(res.rc == 0, "new weights: rerun exits 0", res.describe()):
        after, _ = e.list_parts(base_out)
        probs = fresh_cover(after, t0, names)
        t.check(not probs, "new weights: every unit recomputed", "; ".join(probs[:6]))
        p = e.predictions(t, base_out, "new weights")
        t.close(p, ref, 1e-5, "new weights: predictions follow the new model")
        base = p

    # ---- --restart recomputes everything ----
    t0 = time.time_ns()
    res = e.run(NP, job.args(base_out, extra=("--restart",)), timeout=300)
    if t.check(res.rc == 0, "--restart: exit 0", res.describe()):
        after, _ = e.list_parts(base_out)
        probs = fresh_cover(after, t0, names)
        t.check(not probs, "--restart: every unit recomputed", "; ".join(probs[:6]))
        t.check(np.array_equal(e.predictions(t, base_out, "rerun"), base),
                "--restart: identical predictions")


if __name__ == "__main__":
    e.main("resume", body)
