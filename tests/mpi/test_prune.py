"""test_prune.py — `shardline prune` on the real all-MiniLM-L6-v2:

  - --heads 0.25 --ffn 0.25 on the first 64 sentences of tests/reference/sentences.txt: status 0;
    the written config.json keeps num_attention_heads 12 and lists 3 pruned heads per layer in
    pruned_heads, intermediate_size 1152; model.safetensors holds q/k/v [288, 384],
    attention.output.dense [384, 288], intermediate.dense [1152, 384], output.dense
    [384, 1152], every other tensor unchanged; the tokenizer and sentence-transformers files
    are copied;
  - the pruned model's embeddings from `shardline run` (TP=1, and TP=3 under mpirun: 9 heads
    and 1152 columns split three ways) equal transformers' on the same pruned directory
    (tests/reference/goldens/minilm_pruned_goldens.h5, made by
    tests/reference/make_prune_goldens.py after checking that the same heads were removed):
    cosine >= 0.999 (measured 1 - 1e-7);
  - the cosine to the original that prune prints equals numpy's on `shardline run` outputs of
    both models over the calibration rows (min and mean, 4 decimals);
  - --keep-divisible-by 4: 8 heads kept (multiples of 4); refusals: an --output that exists
    (status 3), a fraction out of range (status 2), pruning a pruned model (status 3).

Run: ctest -R test_prune (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import json
import os
import re
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GOLD = os.path.join(SRC, "tests", "reference", "goldens", "minilm_pruned_goldens.h5")
VLEN = h5py.string_dtype("utf-8")


def model_dir():
    base = os.environ.get("SL_MODELS_DIR", os.path.join(SRC, "build", "models"))
    p = os.path.join(base, "minilm.path")
    if os.path.isfile(p):
        with open(p) as f:
            return f.read().strip()
    return None


def st_shapes(path):
    t = e.load_safetensors(path)
    return {k: tuple(v.shape) for k, v in t.items()}, t


def cos_rows(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def body(t, tmp):
    mdir = model_dir()
    if not t.check(mdir is not None and os.path.isfile(os.path.join(mdir, "config.json")),
                   "all-MiniLM-L6-v2 is installed", "run scripts/install-models.sh"):
        return
    sys.path.insert(0, os.path.join(SRC, "tests", "reference"))
    from corpus import load_sentences
    sentences = load_sentences()
    e.write_text("calib.h5", sentences[:64])
    with h5py.File(GOLD, "r") as g:
        gold_texts = [s.decode() if isinstance(s, bytes) else s for s in g["text"][()]]
        gold_emb = g["embeddings"][()]
        gold_heads = json.loads(g.attrs["pruned_heads"])
        gold_inter = int(g.attrs["intermediate_size"])
    e.write_text("eval.h5", gold_texts)

    r = e.run_direct(["prune", "--model", mdir, "--heads", "0.25", "--ffn", "0.25",
                      "--calib", "calib.h5", "--rows", "64", "--output", "pruned"], timeout=600)
    if not t.check(r.rc == 0, "prune --heads 0.25 --ffn 0.25: status 0", r.describe()):
        return
    prune_out = r.stdout
    print("      " + prune_out.strip().replace("\n", "\n      "))
    with open("pruned/config.json") as f:
        cfg = json.load(f)
    with open(os.path.join(mdir, "config.json")) as f:
        orig = json.load(f)
    ph = cfg.get("pruned_heads", {})
    t.check(cfg["num_attention_heads"] == 12 and cfg["intermediate_size"] == 1152
            and cfg["hidden_size"] == orig["hidden_size"],
            "config.json: 12 heads (before pruning), intermediate_size 1152, hidden unchanged",
            json.dumps(cfg))
    t.check(sorted(ph) == [str(i) for i in range(6)]
            and all(len(v) == 3 and len(set(v)) == 3 and all(0 <= h < 12 for h in v)
                    for v in ph.values()),
            "config.json: pruned_heads lists 3 distinct heads for each of the 6 layers", str(ph))
    for name in ("tokenizer.json", "vocab.txt", "modules.json", "sentence_bert_config.json",
                 "1_Pooling/config.json"):
        t.check(os.path.isfile(os.path.join("pruned", name)), f"{name} copied")
    shapes, pruned_t = st_shapes("pruned/model.safetensors")
    oshapes, orig_t = st_shapes(os.path.join(mdir, "model.safetensors"))
    want = {"attention.self.query.weight": (288, 384), "attention.self.key.bias": (288,),
            "attention.output.dense.weight": (384, 288), "intermediate.dense.weight": (1152, 384),
            "intermediate.dense.bias": (1152,), "output.dense.weight": (384, 1152)}
    bad = [(k, shapes.get(k)) for k in shapes if any(k.endswith(s) for s in want)
           and shapes[k] != want[next(s for s in want if k.endswith(s))]]
    t.check(len(shapes) == len(oshapes) and not bad, "model.safetensors: pruned shapes", str(bad))
    same = [k for k in oshapes if not re.search(r"encoder\.layer\.\d+\.(attention\.self\.|"
                                                r"attention\.output\.dense\.weight|"
                                                r"intermediate\.dense|output\.dense\.weight)", k)]
    t.check(all(np.array_equal(orig_t[k], pruned_t[k]) for k in same),
            f"model.safetensors: the other {len(same)} tensors unchanged")
    # The kept rows of a query matrix are the original's rows of the kept heads, in order.
    q0 = [k for k in shapes if k.endswith("layer.0.attention.self.query.weight")][0]
    kept = [h for h in range(12) if h not in ph["0"]]
    rows = np.concatenate([np.arange(h * 32, h * 32 + 32) for h in kept])
    t.check(np.array_equal(pruned_t[q0], orig_t[q0][rows]), "layer 0 query: the kept heads' rows")

    # Against transformers on the same pruned directory.
    if t.check(json.dumps(ph, sort_keys=True) == json.dumps(gold_heads, sort_keys=True)
               and cfg["intermediate_size"] == gold_inter,
               "the same heads were pruned as for the goldens (so they apply)",
               f"{ph} vs {gold_heads}"):
        for np_, tp in [(1, 1), (3, 3)]:
            out = f"run-tp{tp}"
            r = e.run(np_, e.job_args("pruned", "eval.h5", out, tp=tp, extra=["--task", "embed"]),
                      timeout=600)
            if not t.check(r.rc == 0, f"run on the pruned model, tp{tp}: status 0", r.describe()):
                continue
            with h5py.File(f"{out}/predictions.h5", "r") as f:
                got = f["embeddings"][()]
            c = cos_rows(got, gold_emb)
            t.check(c.min() >= 0.999 and np.abs(got - gold_emb).max() <= 1e-3,
                    f"pruned model tp{tp}: shardline equals transformers (min cosine "
                    f"{c.min():.7f}, max |diff| {np.abs(got - gold_emb).max():.2g})")

    # The printed agreement with the original, against numpy on runs of both models.
    m = re.search(r"cosine to the original: min ([0-9.]+) \(row (\d+)\), mean ([0-9.]+)", prune_out)
    if t.check(m is not None, "prune prints the cosine to the original", prune_out):
        ok = True
        for model, out in [(mdir, "calib-orig"), ("pruned", "calib-pruned")]:
            rr = e.run(1, e.job_args(model, "calib.h5", out, extra=["--task", "embed"]))
            ok &= t.check(rr.rc == 0, f"run {out}: status 0", rr.describe())
        if ok:
            with h5py.File("calib-orig/predictions.h5") as f, h5py.File("calib-pruned/predictions.h5") as g:
                c = cos_rows(f["embeddings"][()], g["embeddings"][()])
            t.check(abs(float(m.group(1)) - c.min()) <= 2e-4 and abs(float(m.group(3)) - c.mean()) <= 2e-4
                    and int(m.group(2)) == int(np.argmin(c)),
                    f"printed cosine to the original equals numpy's (min {c.min():.4f}, mean "
                    f"{c.mean():.4f})", m.group(0))

    # --keep-divisible-by, refusals.
    r = e.run_direct(["prune", "--model", mdir, "--heads", "0.25", "--ffn", "0.25", "--calib",
                      "calib.h5", "--rows", "16", "--keep-divisible-by", "4", "--output", "pruned4"],
                     timeout=600)
    if t.check(r.rc == 0, "prune --keep-divisible-by 4: status 0", r.describe()):
        with open("pruned4/config.json") as f:
            c4 = json.load(f)
        t.check(all(len(v) == 4 for v in c4["pruned_heads"].values())
                and c4["intermediate_size"] % 4 == 0,
                "--keep-divisible-by 4: 8 heads kept per layer, FFN a multiple of 4",
                json.dumps(c4["pruned_heads"]))
    r = e.run_direct(["prune", "--model", mdir, "--heads", "0.25", "--ffn", "0.25", "--calib",
                      "calib.h5", "--output", "pruned"])
    t.check(r.rc == 3 and "pruned" in r.stderr and "exists" in r.stderr,
            "refused: an --output that exists (status 3)", r.describe())
    r = e.run_direct(["prune", "--model", mdir, "--heads", "1.5", "--ffn", "0.25", "--calib",
                      "calib.h5", "--output", "x"])
    t.check(r.rc == 2 and "--heads" in r.stderr, "refused: --heads 1.5 (status 2)", r.describe())
    r = e.run_direct(["prune", "--model", "pruned", "--heads", "0.25", "--ffn", "0.25", "--calib",
                      "calib.h5", "--output", "x"])
    t.check(r.rc == 3 and "already pruned" in r.stderr,
            "refused: pruning a pruned model (status 3)", r.describe())


if __name__ == "__main__":
    e.main("test_prune", body)
