"""test_bert_e2e.py — the BERT path of `shardline run` end to end, on the real
all-MiniLM-L6-v2 (installed by scripts/install-models.sh) against goldens computed by
transformers (tests/reference/make_bert_goldens.py):

  - raw text (variable-length strings) -> --task embed under mpirun with TP=1, TP=2 and TP=3:
    /embeddings equal the goldens (cosine >= 0.99999, max abs error <= 1e-4), rows in order;
  - the same from fixed-length strings and from pre-tokenized input_ids + lengths;
  - --output-dtype f16 stores float16 within f16 rounding of the goldens;
  - a classification checkpoint (tiny random BertForSequenceClassification): /logits equal
    transformers' logits, /probs their softmax, /labels the argmax, label names attached;
  - bad rows (empty text, invalid UTF-8, out-of-vocabulary ids) fail alone: status 4, listed in
    /errors, NaN embeddings; the other rows are still right.

Run: ctest -R test_bert_e2e (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GOLD = os.path.join(SRC, "tests", "reference", "goldens", "minilm_goldens.h5")
CLS_GOLD = os.path.join(SRC, "tests", "reference", "goldens", "tiny_cls_goldens.h5")
CLS_MODEL = os.path.join(SRC, "tests", "reference", "tiny_bert_cls")


def model_dir():
    base = os.environ.get("SL_MODELS_DIR", os.path.join(SRC, "build", "models"))
    path_file = os.path.join(base, "minilm.path")
    if os.path.isfile(path_file):
        with open(path_file) as f:
            return f.read().strip()
    return None


def cosine_rows(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def check_embeddings(t, got, ref, what, cos_min=0.99999, abs_max=1e-4):
    if got.shape != ref.shape:
        return t.check(False, what, f"shape {got.shape} != {ref.shape}")
    cos = cosine_rows(got, ref)
    err = np.abs(np.asarray(got, np.float64) - ref).max(1)
    worst = int(np.argmin(cos))
    return t.check(cos.min() >= cos_min and err.max() <= abs_max, what,
                   f"min cosine {cos.min():.7f} (row {worst}), max abs error {err.max():.2e}")


def body(t, tmp):
    mdir = model_dir()
    if not t.check(mdir is not None and os.path.isfile(os.path.join(mdir, "config.json")),
                   "all-MiniLM-L6-v2 is installed", "run scripts/install-models.sh"):
        return
    with h5py.File(GOLD, "r") as g:
        texts = [s.decode("utf-8", "surrogatepass") if isinstance(s, bytes) else s for s in g["text"][()]]
        ids = g["input_ids"][()]
        lengths = g["lengths"][()]
        ref = g["embeddings"][()].astype(np.float64)
    n = len(texts)
    # Two shards of uneven size, units smaller than a shard, a token budget that forces many
    # batches: the output must still come back in input order.
    cut = n // 3
    vlen = h5py.string_dtype("utf-8")
    os.makedirs("text", exist_ok=True)
    for k, (a, b) in enumerate([(0, cut), (cut, n)]):
        with h5py.File(f"text/part{k}.h5", "w") as f:
            f.create_dataset("text", data=np.array(texts[a:b], dtype=object), dtype=vlen)
    for np_, tp in [(1, 1), (2, 2), (3, 3)]:
        out = f"out-tp{tp}"
        r = e.run(np_, e.job_args(mdir, "text/*.h5", out, tp=tp, unit_rows=64,
                                  extra=["--task", "embed", "--batch-tokens", "2048"]), timeout=900)
        if not t.check(r.rc == 0, f"embed np{np_} tp{tp}: status 0", r.describe()):
            continue
        with h5py.File(f"{out}/predictions.h5", "r") as f:
            got = f["embeddings"][()]
        check_embeddings(t, got, ref, f"embed np{np_} tp{tp}: embeddings match transformers")
        rep = e.load_json(f"{out}/report.json")
        t.check(rep.get("tokens") == int(lengths.sum()), f"embed tp{tp}: report counts the real tokens",
                f"report tokens {rep.get('tokens')}, goldens {int(lengths.sum())}")

    # Fixed-length strings, f16 output.
    os.makedirs("fixed", exist_ok=True)
    enc = [s.encode("utf-8", "surrogatepass") for s in texts]
    width = max(len(s) for s in enc) + 1
    with h5py.File("fixed/all.h5", "w") as f:
        f.create_dataset("text", data=np.array(enc, dtype=f"S{width}"))
    r = e.run(1, e.job_args(mdir, "fixed/all.h5", "out-fixed",
                            extra=["--output-dtype", "f16"]), timeout=900)
    if t.check(r.rc == 0, "embed fixed-length strings, f16 output: status 0", r.describe()):
        with h5py.File("out-fixed/predictions.h5", "r") as f:
            got = f["embeddings"][()]
            t.check(got.dtype == np.float16, "f16 output is stored as float16", str(got.dtype))
        check_embeddings(t, got.astype(np.float64), ref, "f16 embeddings within f16 rounding",
                         cos_min=0.9999, abs_max=2e-3)

    # Pre-tokenized input with lengths, and an out-of-vocabulary id on one row.
    os.makedirs("tok", exist_ok=True)
    bad_ids = ids.copy()
    bad_ids[5, 1] = 10 ** 6
    with h5py.File("tok/ids.h5", "w") as f:
        f["input_ids"] = bad_ids.astype(np.int32)
        f["lengths"] = lengths.astype(np.int32)
    r = e.run(2, e.job_args(mdir, "tok/ids.h5", "out-tok", dataset="input_ids", tp=2), timeout=900)
    if t.check(r.rc == 4, "pre-tokenized with one bad id: status 4 (rows failed)", r.describe()):
        with h5py.File("out-tok/predictions.h5", "r") as f:
            got = f["embeddings"][()]
            errs = f["errors"][()]
        keep = np.ones(n, bool)
        keep[5] = False
        check_embeddings(t, got[keep], ref[keep], "pre-tokenized embeddings match transformers")
        t.check(np.all(np.isnan(got[5])), "the bad row's embedding is NaN")
        t.check(len(errs) == 1 and int(errs[0]["row"]) == 5 and b"vocabulary" in e._s(errs[0]["reason"]).encode(),
                "/errors lists the bad row with its reason", repr(errs))

    # Bad text rows: empty and invalid UTF-8, among good ones.
    os.makedirs("badtext", exist_ok=True)
    rows = [texts[0].encode(), b"", b"caf\xc3 broken", texts[1].encode()]
    with h5py.File("badtext/b.h5", "w") as f:
        f.create_dataset("text", data=np.array(rows, dtype=object), dtype=h5py.string_dtype("ascii"))
    r = e.run(1, e.job_args(mdir, "badtext/b.h5", "out-bad"), timeout=300)
    if t.check(r.rc == 4, "empty and invalid UTF-8 rows: status 4", r.describe()):
        with h5py.File("out-bad/predictions.h5", "r") as f:
            got = f["embeddings"][()]
            errs = sorted(int(x["row"]) for x in f["errors"][()])
        t.check(errs == [1, 2], "/errors lists rows 1 and 2", repr(errs))
        check_embeddings(t, got[[0, 3]], ref[[0, 1]], "good rows beside bad ones are right")

    # Classification.
    with h5py.File(CLS_GOLD, "r") as g:
        ctexts = [s.decode() if isinstance(s, bytes) else s for s in g["text"][()]]
        logits = g["logits"][()].astype(np.float64)
    os.makedirs("cls", exist_ok=True)
    with h5py.File("cls/c.h5", "w") as f:
        f.create_dataset("text", data=np.array(ctexts, dtype=object), dtype=vlen)
    for np_, tp in [(1, 1), (2, 2)]:
        out = f"out-cls{tp}"
        r = e.run(np_, e.job_args(CLS_MODEL, "cls/c.h5", out, tp=tp, extra=["--task", "classify"]),
                  timeout=300)
        if not t.check(r.rc == 0, f"classify tp{tp}: status 0", r.describe()):
            continue
        with h5py.File(f"{out}/predictions.h5", "r") as f:
            lg, pr, lb = f["logits"][()], f["probs"][()], f["labels"][()]
            names = [e._s(x) for x in f["logits"].attrs.get("labels", [])]
        t.check(np.abs(lg - logits).max() <= 1e-4, f"classify tp{tp}: logits match transformers",
                f"max abs error {np.abs(lg - logits).max():.2e}")
        sm = np.exp(logits - logits.max(1, keepdims=True))
        sm /= sm.sum(1, keepdims=True)
        t.check(np.abs(pr - sm).max() <= 1e-5, f"classify tp{tp}: probs are the softmax")
        t.check(np.array_equal(lb, np.argmax(logits, 1)), f"classify tp{tp}: labels are the argmax")
        t.check(len(names) == logits.shape[1], f"classify tp{tp}: label names attached", repr(names))


if __name__ == "__main__":
    e.main("test_bert_e2e", body)
