#!/usr/bin/env python3
"""pipeline_jobs.py — short end-to-end jobs for the sanitizer builds (tests/sanitizers/run.sh):
each rank's I/O thread (runner/pipeline.c) reads, tokenizes and writes + commits part files
while its compute thread runs the model, handing slots back and forth over many units. One
rank under ThreadSanitizer; under ASan + UBSan, SL_JOBS_TP=2 runs them on 2 ranks with --tp 2.
  1. an mlp predict over three shards, units of 700 rows, batches of 128, prefetch 3;
     predictions equal a float64 numpy forward pass of the same weights;
  2. a BERT embed (all-MiniLM-L6-v2, when installed) of the golden sentences in two shards,
     units of 16 rows: the I/O thread tokenizes while the compute thread embeds; the
     embeddings equal the transformers goldens.
Each run must exit 0 with no sanitizer report on stderr.

Run: python3 tests/sanitizers/pipeline_jobs.py build-tsan/shardline
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
os.environ["SHARDLINE"] = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(
    SRC, "build-tsan", "shardline")
os.environ.setdefault("SL_SOURCE_DIR", SRC)
os.environ.setdefault("SL_MODELS_DIR", os.path.join(SRC, "build", "models"))
sys.path.insert(0, os.path.join(SRC, "tests", "mpi"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import sl_e2e as e  # noqa: E402


TP = int(os.environ.get("SL_JOBS_TP", "1"))
REPORTS = ("ThreadSanitizer", "AddressSanitizer", "LeakSanitizer", "runtime error:")


def clean(t, r, what):
    ok = t.check(r.rc == 0, f"{what}: status 0", r.describe())
    found = [k for k in REPORTS if k in r.stderr]
    return t.check(not found, f"{what}: no sanitizer report", r.describe(tail=12000)) and ok


def body(t, tmp):
    m = e.make_model("mlp", [16, 48, 48, 5], activation="gelu", final="softmax")
    shards = e.make_inputs("in", [2100, 1500, 333], 16)
    r = e.run(TP, e.job_args("mlp", "in/*.h5", "out-mlp", tp=TP, unit_rows=700, batch=128,
                             extra=["--prefetch", "3"]), timeout=600)
    if clean(t, r, "mlp predict"):
        got = e.Output("out-mlp").predictions.astype(np.float64)
        x = np.concatenate([d for _, d in sorted(shards)])
        t.close(got, m.forward(x), 1e-4, "mlp predictions equal the numpy forward pass")

    mdir = e.installed("minilm")
    if not mdir:
        t.skip("bert embed", "all-MiniLM-L6-v2 is not installed (scripts/install-models.sh)")
        return
    gold = os.path.join(SRC, "tests", "reference", "goldens", "minilm_goldens.h5")
    with h5py.File(gold, "r") as g:
        texts = [s.decode("utf-8", "surrogatepass") if isinstance(s, bytes) else s for s in g["text"][()]]
        ref = g["embeddings"][()].astype(np.float64)
    n = min(len(texts), 96)
    vlen = h5py.string_dtype("utf-8")
    os.makedirs("text", exist_ok=True)
    for k, (a, b) in enumerate([(0, n // 3), (n // 3, n)]):
        with h5py.File(f"text/part{k}.h5", "w") as f:
            f.create_dataset("text", data=np.array(texts[a:b], dtype=object), dtype=vlen)
    r = e.run(TP, e.job_args(mdir, "text/*.h5", "out-bert", tp=TP, unit_rows=16,
                            extra=["--task", "embed", "--batch-tokens", "512", "--prefetch", "2"]),
              timeout=900)
    if clean(t, r, "bert embed"):
        with h5py.File("out-bert/predictions.h5", "r") as f:
            got = f["embeddings"][()].astype(np.float64)
        t.check(got.shape == ref[:n].shape, "bert embed: one embedding per row",
                f"{got.shape} vs {ref[:n].shape}")
        if got.shape == ref[:n].shape:
            t.close(got, ref[:n], 1e-4, "bert embeddings equal the transformers goldens")


if __name__ == "__main__":
    e.main("pipeline_jobs", body)
