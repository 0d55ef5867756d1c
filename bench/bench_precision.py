#!/usr/bin/python3
"""bench_precision.py — MiniLM embedding speed and accuracy of `--precision int8`, `w8a8` and
`w8a8 --calibration dynamic` (w8a8-dyn) against `--precision f32`, the same binary, model and
rows.

What it measures: N rows (default 2000: the golden sentences of
tests/reference/goldens/minilm_goldens.h5, repeated in order) embedded by
`mpirun -np R <shardline> run --task embed` (default R = 2 ranks, --tp 1: two DP groups) with each
precision, in interleaved rounds (--rounds, default 3: f32 int8 w8a8 w8a8-dyn, then the reverse, ...)
so drifting load hits every side alike (w8a8-dyn needs no file). w8a8 reads a calibration file made once by `shardline
calibrate --rows 160` (its default method, percentile 99; `--method max` until 2026-12-07
15:45) over the first 160 golden sentences, written beside a copy of
the model under --work. Times: report.json's `seconds` (the whole job, model load included) and
the compute seconds (the largest of the ranks', from per_rank), with --unit-rows N/8 so that both
DP groups get units. Ratios are rows/s of a precision over rows/s of
f32 in the same round; the summary gives medians and min-max over rounds. Accuracy: cosine of
each of the 315 golden rows to transformers' embeddings (min and mean), from the first round.

Run from the repository root: `/usr/bin/python3 bench/bench_precision.py`; record the printed
table in bench/RESULTS.md with the machine (lscpu model name, nproc, load average) and date.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "reference", "goldens", "minilm_goldens.h5")


def run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="rows")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unit-rows", type=int, default=0, help="default: ceil(N / 8), so that every "
                    "DP group gets units")
    ap.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    ap.add_argument("--model", default="", help="default: build/models/minilm.path")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench-precision"))
    a = ap.parse_args()
    model = a.model or open(os.path.join(ROOT, "build", "models", "minilm.path")).read().strip()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    with h5py.File(GOLD, "r") as g:
        texts = [s.decode() if isinstance(s, bytes) else s for s in g["text"][()]]
        ref = g["embeddings"][()].astype(np.float64)
    rows = [texts[i % len(texts)] for i in range(a.n)]
    vlen = h5py.string_dtype("utf-8")
    data = os.path.join(a.work, "rows.h5")
    with h5py.File(data, "w") as f:
        f.create_dataset("text", data=np.array(rows, dtype=object), dtype=vlen)
    calib_in = os.path.join(a.work, "calib.h5")
    with h5py.File(calib_in, "w") as f:
        f.create_dataset("text", data=np.array(texts[:160], dtype=object), dtype=vlen)
    mcopy = os.path.join(a.work, "minilm")
    shutil.copytree(model, mcopy, symlinks=True)
    run([a.shardline, "calibrate", "--model", mcopy, "--input", calib_in, "--rows", "160",
         "--output", mcopy], env)

    unit = a.unit_rows or -(-a.n // 8)
    sides = ["f32", "int8", "w8a8", "w8a8-dyn"]
    # a side's options: w8a8-dyn is w8a8 with --calibration dynamic (no file)
    opts = {"w8a8-dyn": ["--precision", "w8a8", "--calibration", "dynamic"]}
    res = {s: [] for s in sides}
    acc = {}
    for r in range(a.rounds):
        for s in (sides if r % 2 == 0 else sides[::-1]):
            out = os.path.join(a.work, f"out-{s}-{r}")
            run(["mpirun", "--bind-to", "none", "-np", str(a.ranks), a.shardline, "run",
                 "--model", mcopy, "--input", data, "--output", out, "--task", "embed",
                 *opts.get(s, ["--precision", s]), "--quiet", "--unit-rows", str(unit)], env)
            rep = json.load(open(os.path.join(out, "report.json")))
            comp = max(p.get("compute_seconds", float("nan")) for p in rep["per_rank"])
            res[s].append((rep["seconds"], comp))
            if s not in acc:
                with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
                    e = f["embeddings"][: len(texts)].astype(np.float64)
                c = np.sum(e * ref, 1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1))
                acc[s] = (c.min(), c.mean())
            shutil.rmtree(out)
    print(f"rows {a.n}, ranks {a.ranks} (tp 1), unit rows {unit}, rounds {a.rounds}, load average "
          f"{os.getloadavg()[0]:.1f} (1 min, at the end)")
    print(f"{'precision':>9}  {'job s (median)':>14}  {'rows/s':>8}  {'x f32 (min..max)':>18}  "
          f"{'compute s max':>13}  {'cos min':>8}  {'cos mean':>8}")
    for s in sides:
        js = [x[0] for x in res[s]]
        ratios = [a.n / x[0] / (a.n / f[0]) for x, f in zip(res[s], res["f32"])]
        print(f"{s:>9}  {statistics.median(js):14.2f}  {a.n / statistics.median(js):8.1f}  "
              f"{statistics.median(ratios):6.2f} ({min(ratios):.2f}..{max(ratios):.2f})  "
              f"{statistics.median([x[1] for x in res[s]]):13.2f}  {acc[s][0]:8.5f}  "
              f"{acc[s][1]:8.5f}")


if __name__ == "__main__":
    main()
