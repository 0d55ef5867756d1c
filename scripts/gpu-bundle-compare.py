#!/usr/bin/env python3
"""gpu-bundle-compare.py — the end-to-end jobs' inputs and the comparer of their outputs, for
gpu-bundle/ (scripts/gpu-bundle.sh copies this file there as compare_outputs.py).

  --make-inputs BUNDLE      (on the CPU machine, when bundling) writes BUNDLE/e2e/: a random
                            5-layer MLP (odd: its last layer is replicated under TP) and two
                            feature shards of awkward sizes; 48 English sentences as a text shard
                            for BERT embed; random token ids of the tiny Qwen2 model for score
                            (ids + lengths) and generate (prompts).
  KIND OUTPUT_DIR REF.h5    compares OUTPUT_DIR/predictions.h5 with the CPU result REF.h5 of
                            the same job and prints one line (the figure); exit 0 when within
                            the tolerance of KIND, 1 otherwise:
      mlp       /predictions, max |got - ref| / max |ref| <= 1e-5 (f32 end to end);
      embed     /embeddings, every row's cosine >= 0.99999 and max abs error <= 1e-4;
      score     /sum_logprob, max |got - ref| / max |ref| <= 1e-4;
      generate  /tokens (greedy): the first new token equal in every row, and whole rows equal
                in at least 7 of 8 (a random tiny model has near-ties that float rounding of
                another device may break differently; the count is printed).
Needs python3 with numpy and h5py (the GPU machine's Python has both; Debian: python3-h5py).
"""
import os
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def make_inputs(bundle):
    src = os.path.join(os.path.dirname(HERE), "tests")
    sys.path.insert(0, os.path.join(src, "mpi"))
    import sl_e2e  # noqa: E402 (its MLP writer)

    e2e = os.path.join(bundle, "e2e")
    os.makedirs(e2e, exist_ok=True)
    sl_e2e.make_model(os.path.join(e2e, "mlp"), [48, 96, 64, 64, 32, 10], activation="gelu",
                      standardise=True, seed=7)
    sl_e2e.make_inputs(os.path.join(e2e, "mlp_in"), [1009, 300], 48, seed=8)
    with open(os.path.join(src, "reference", "sentences.txt"), encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip()][:48]
    with h5py.File(os.path.join(e2e, "bert_text.h5"), "w") as f:
        f.create_dataset("text", data=np.array(lines, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
    rng = np.random.default_rng(9)
    rows, width = 24, 40
    lens = rng.integers(6, width + 1, rows).astype(np.int32)
    ids = np.zeros((rows, width), np.int32)
    for i, n in enumerate(lens):
        ids[i, :n] = rng.integers(3, 256, n)
    with h5py.File(os.path.join(e2e, "llama_score.h5"), "w") as f:
        f["input_ids"] = ids
        f["lengths"] = lens
    plens = rng.integers(3, 12, 16).astype(np.int32)
    prompts = np.zeros((16, 12), np.int32)
    for i, n in enumerate(plens):
        prompts[i, :n] = rng.integers(3, 256, n)
    with h5py.File(os.path.join(e2e, "llama_prompts.h5"), "w") as f:
        f["input_ids"] = prompts
        f["lengths"] = plens
    print(f"gpu-bundle: inputs written under {e2e}")


def rel(got, ref):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-30)


def compare(kind, out, ref_path):
    with h5py.File(os.path.join(out, "predictions.h5"), "r") as g, h5py.File(ref_path, "r") as r:
        if kind == "mlp":
            e = rel(g["predictions"][()], r["predictions"][()])
            return e <= 1e-5, f"rows {len(r['predictions'])}, rel err {e:.2g} (tol 1e-5)"
        if kind == "score":
            e = rel(g["sum_logprob"][()], r["sum_logprob"][()])
            return e <= 1e-4, f"rows {len(r['sum_logprob'])}, rel err {e:.2g} (tol 1e-4)"
        if kind == "embed":
            a = g["embeddings"][()].astype(np.float64)
            b = r["embeddings"][()].astype(np.float64)
            if a.shape != b.shape:
                return False, f"shape {a.shape}, reference {b.shape}"
            cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
            wc, wa = float(np.min(cos)), float(np.max(np.abs(a - b)))
            return (wc >= 0.99999 and wa <= 1e-4,
                    f"rows {len(b)}, worst cosine {wc:.7f}, max abs err {wa:.2g} (tol 0.99999, 1e-4)")
        if kind == "generate":
            a, b = g["tokens"][()], r["tokens"][()]
            if a.shape != b.shape:
                return False, f"shape {a.shape}, reference {b.shape}"
            same = int(np.sum(np.all(a == b, axis=1)))
            first = bool(np.all(a[:, 0] == b[:, 0]))
            return (first and same * 8 >= 7 * len(b),
                    f"rows identical {same}/{len(b)}, first token {'equal' if first else 'DIFFERS'}")
    raise SystemExit(f"compare_outputs: unknown kind '{kind}'")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--make-inputs":
        make_inputs(sys.argv[2])
        return 0
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        ok, figure = compare(*sys.argv[1:])
    except (OSError, KeyError) as ex:
        ok, figure = False, f"cannot read: {ex}"
    print(figure)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
