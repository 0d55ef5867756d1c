#!/usr/bin/python3
"""calib_methods.py — how accurate static W8A8 is with each `shardline calibrate` method, on
texts that are neither the calibration rows nor the test suites' golden texts.

What it measures, on one process (CPU):
  - all-MiniLM-L6-v2 (build/models/minilm.path): Debian's fortunes (bench_llama.fortunes, in a
    fixed shuffled order), calibrated on the first --calib-rows (default 200), embedding the next
    --eval-rows (default 600); cosine of each row to `--precision f32`'s embedding (min, mean);
  - SmolLM2-135M (build/models/smollm2.path, the Q4_1 GGUF): rows of at least 800 characters
    joined from tests/reference/sentences.txt and the fortunes (bench_llama.score_rows),
    calibrated on the first 20 with --bos always --max-length 256, scoring the next 40 with the
    same options; `shardline compare --json` against the f32 scores: perplexity ratio and mean
    |delta log-probability| per token;
  - for each method (--methods, default max and percentile 99.99, 99.9, 99, 95) and for
    `--calibration dynamic` (no file): those numbers and report.json's w8a8_blocks
    own_step_fraction (the share of activation blocks that went beyond their static range and
    took their own step; absent for dynamic, where every block does).

Run from the repository root: `/usr/bin/python3 bench/calib_methods.py`; record the printed table
in bench/RESULTS.md with the date and commit.
"""
import argparse
import json
import os
import subprocess
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_llama import ROOT, fortunes, score_rows  # noqa: E402


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"calib_methods: {' '.join(cmd)} exited {r.returncode}\n{r.stderr[-2000:]}")
    return r


def write_text(path, texts):
    with h5py.File(path, "w") as f:
        f.create_dataset("text", data=np.array(texts, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))


def installed(name):
    with open(os.path.join(ROOT, "build", "models", f"{name}.path")) as f:
        return f.read().strip()


def method_args(m):
    """'max' or 'percentile:P' -> calibrate options."""
    if m == "max":
        return ["--method", "max"]
    return ["--method", "percentile", "--percentile", m.split(":", 1)[1]]


def own_fraction(out):
    rep = json.load(open(os.path.join(out, "report.json")))
    return rep.get("w8a8_blocks", {}).get("own_step_fraction")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    p.add_argument("--work", default=os.path.join(ROOT, "build", "bench-work", "calib"))
    p.add_argument("--methods", default="max,percentile:99.99,percentile:99.9,percentile:99,"
                   "percentile:95")
    p.add_argument("--calib-rows", type=int, default=200)
    p.add_argument("--eval-rows", type=int, default=600)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    os.chdir(a.work)
    sl = [a.shardline]
    texts = fortunes()
    np.random.default_rng(7).shuffle(texts)
    if len(texts) < a.calib_rows + a.eval_rows:
        sys.exit(f"calib_methods: {len(texts)} fortunes, fewer than the rows asked for "
                 "(install Debian's fortunes-min)")
    write_text("enc-cal.h5", texts[:a.calib_rows])
    write_text("enc-eval.h5", texts[a.calib_rows:a.calib_rows + a.eval_rows])
    rows = score_rows(60, 800, 7)
    write_text("dec-cal.h5", rows[:20])
    write_text("dec-eval.h5", rows[20:60])
    minilm, smol = installed("minilm"), installed("smollm2")
    score = ["--task", "score", "--bos", "always", "--token-logprobs", "--max-length", "256"]

    def embed(out, extra):
        run(sl + ["run", "--model", minilm, "--input", "enc-eval.h5", "--output", out, "--task",
                  "embed", "--quiet"] + extra)
        with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
            return f["embeddings"][()].astype(np.float64)

    def scored(out, extra):
        run(sl + ["run", "--model", smol, "--input", "dec-eval.h5", "--output", out, "--quiet"] +
            score + extra)
        d = json.loads(run(sl + ["compare", "--json", "dec-f32", out]).stdout)["score"]
        return d["perplexity_ratio"], d["mean_abs_delta_logprob"]

    for d in os.listdir("."):
        if os.path.isdir(d):
            subprocess.run(["rm", "-rf", d], check=True)
    f32 = embed("enc-f32", ["--precision", "f32"])
    run(sl + ["run", "--model", smol, "--input", "dec-eval.h5", "--output", "dec-f32",
              "--quiet"] + score + ["--precision", "f32"])
    print(f"MiniLM: {a.calib_rows} calibration rows, {a.eval_rows} others embedded; SmolLM2 "
          "Q4_1: 20 calibration rows, 40 others scored (max-length 256)\n")
    print("| calibration | MiniLM cosine min / mean | own step | SmolLM2 ppl ratio | "
          "mean abs delta logprob | own step |")
    print("|---|---|---|---|---|---|")
    for m in a.methods.split(",") + ["dynamic"]:
        if m == "dynamic":
            ec = dc = ["--precision", "w8a8", "--calibration", "dynamic"]
        else:
            tag = m.replace(":", "-")
            run(sl + ["calibrate", "--model", minilm, "--input", "enc-cal.h5", "--rows",
                      str(a.calib_rows), "--output", f"cal-enc-{tag}"] + method_args(m))
            run(sl + ["calibrate", "--model", smol, "--input", "dec-cal.h5", "--rows", "20",
                      "--output", f"cal-dec-{tag}", "--bos", "always", "--max-length", "256"] +
                method_args(m))
            ec = ["--precision", "w8a8", "--calibration",
                  os.path.join(f"cal-enc-{tag}", "shardline-calibration.safetensors")]
            dc = ["--precision", "w8a8", "--calibration",
                  os.path.join(f"cal-dec-{tag}",
                               os.path.basename(smol) + ".shardline-calibration.safetensors")]
        got = embed(f"enc-{m}", ec)
        cos = np.sum(got * f32, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(f32, axis=1))
        ppl, dlp = scored(f"dec-{m}", dc)
        fe, fd = own_fraction(f"enc-{m}"), own_fraction(f"dec-{m}")
        pct = (lambda v: "-" if v is None else f"{100 * v:.2f}%")
        print(f"| {m} | {cos.min():.5f} / {cos.mean():.5f} | {pct(fe)} | {ppl:.4f} | "
              f"{dlp:.4f} | {pct(fd)} |")


if __name__ == "__main__":
    main()
