"""test_compare.py — `shardline compare OUT_A OUT_B` end to end, on real jobs' outputs; every
number it prints is checked against the same quantity computed here with numpy from the two
predictions.h5 files, and its thresholds are checked to gate (status 0 / 6):

  - all-MiniLM-L6-v2 embeddings with --precision f32 against bf16: per-row cosine (min, mean),
    max and mean |A - B|; --min-cosine 0.999 passes, a bound above the measured minimum fails;
  - a classification checkpoint (tests/reference/tiny_bert_cls) in f32 against bf16: label
    agreement, logits/probs cosine; --min-agreement;
  - a row that failed in the jobs (empty text) is left out and counted;
  - refusals, status 3 with the difference named: another task, other rows, another input file
    with as many rows, another --max-length, a directory without a finished job; thresholds
    that do not apply to the task and bad numbers: status 2;
  - accuracy floors on SmolLM2-135M (--task score, the 8 longest golden texts of
    tests/reference/goldens/smollm2_goldens.h5, --token-logprobs) against --precision f32 (the
    dequantised weights): the shipped Q4_1 file quantized (default precision) within 5% in
    perplexity (measured 1.00000: scored tokens meet dequantised f32 tiles of the same weights);
    a Q8_0 file written here from the dequantised weights with gguf-py (gguf 0.19, installed
    from PyPI under build/ by this test) within 1% (measured 1.0052); Q5_0 and Q5_1 files
    written the same way, kept in their blocks (packed): every token's log-probability equal to
    the same file's --precision f32, report.json naming the 180 layer matrices q5_0/q5_1 (the
    ratio to the Q4_1 file's f32 printed: 1.130 and 1.040, requantizing's cost); mean |delta
    log-probability| per token checked against numpy;
  - greedy generation (8 prompts, 16 tokens) of the Q4_1 file against f32: the exact-match
    rates of token ids and texts and the mean share before the first difference, checked
    against numpy and printed (not gated: int8 rounding moves near-tied logits).

Run: ctest -R test_compare (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import json
import math
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.dirname(e.SHARDLINE)
SMOL_GOLD = os.path.join(SRC, "tests", "reference", "goldens", "smollm2_goldens.h5")
CLS_MODEL = os.path.join(SRC, "tests", "reference", "tiny_bert_cls")
VLEN = h5py.string_dtype("utf-8")


def strs(a):
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in a]


def compare(t, a, b, *opts, what):
    """Runs `shardline compare --json [opts] a b`; returns (status, parsed JSON or None)."""
    r = e.run_direct(["compare", "--json", *opts, a, b], timeout=120)
    doc = None
    if r.rc in (0, 6):
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            t.check(False, f"{what}: --json prints one JSON object", r.describe())
    elif e.crashed(r):
        t.check(False, f"{what}: compare did not crash", r.describe())
    return r, doc


def near(x, y, rel=1e-6, absol=1e-9):
    return x is not None and math.isfinite(x) and abs(x - y) <= absol + rel * abs(y)


def run_job(t, what, args, env=None, timeout=900):
    r = e.run(1, args, timeout=timeout, env=env)
    return t.check(r.rc == 0, f"{what}: status 0", r.describe())


# ---- float outputs ---------------------------------------------------------------------------

def check_float(t, doc, a, b, name, what):
    """compare's numbers for output `name` against numpy on the two files."""
    with h5py.File(f"{a}/predictions.h5", "r") as f:
        x = f[name][()].astype(np.float64)
    with h5py.File(f"{b}/predictions.h5", "r") as f:
        y = f[name][()].astype(np.float64)
    cos = (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))
    d = np.abs(x - y)
    got = doc["outputs"][name]
    t.check(near(got["cosine_min"], cos.min()) and near(got["cosine_mean"], cos.mean()),
            f"{what}: {name} cosine min/mean equal numpy's ({cos.min():.6f} / {cos.mean():.6f})",
            f"compare: {got['cosine_min']} / {got['cosine_mean']}")
    t.check(near(got["max_abs_diff"], d.max(), rel=1e-5) and near(got["mean_abs_diff"], d.mean(),
                                                                  rel=1e-5),
            f"{what}: {name} max/mean |A - B| equal numpy's ({d.max():.4g} / {d.mean():.4g})",
            f"compare: {got['max_abs_diff']} / {got['mean_abs_diff']}")
    t.check(got["cosine_min_row"] == int(np.argmin(cos)), f"{what}: {name} names the row of "
            "the smallest cosine", f"{got['cosine_min_row']} vs {int(np.argmin(cos))}")
    return cos.min()


def encoders(t, texts):
    mdir = e.installed("minilm")
    if not t.check(mdir is not None and os.path.isfile(os.path.join(mdir, "config.json")),
                   "all-MiniLM-L6-v2 is installed", "run scripts/install-models.sh"):
        return
    e.write_text("texts.h5", texts)
    e.write_text("fewer.h5", texts[:-3])
    e.write_text("other.h5", texts[::-1])  # as many rows, another file
    jobs = {
        "emb-f32": ["--precision", "f32"],
        "emb-bf16": ["--precision", "bf16"],
        "emb-len16": ["--precision", "f32", "--max-length", "16"],
    }
    ok = True
    for out, extra in jobs.items():
        ok &= run_job(t, f"embed {out}", e.job_args(mdir, "texts.h5", out, extra=["--task", "embed"] + extra))
    ok &= run_job(t, "embed fewer rows", e.job_args(mdir, "fewer.h5", "emb-fewer", extra=["--task", "embed"]))
    ok &= run_job(t, "embed another file", e.job_args(mdir, "other.h5", "emb-other", extra=["--task", "embed"]))
    if not ok:
        return

    r, doc = compare(t, "emb-f32", "emb-bf16", what="embed f32 vs bf16")
    if t.check(r.rc == 0 and doc, "compare embed f32 vs bf16: status 0", r.describe()):
        t.equal(doc["rows_compared"], len(texts), "embed: every row compared")
        t.equal(doc["a"]["precision"], "f32", "embed: A's precision reported")
        cmin = check_float(t, doc, "emb-f32", "emb-bf16", "embeddings", "embed f32 vs bf16")
        print(f"      MiniLM bf16 vs f32: min cosine {cmin:.6f}, max |diff| "
              f"{doc['outputs']['embeddings']['max_abs_diff']:.4g}")
        r, doc = compare(t, "emb-f32", "emb-bf16", "--min-cosine", "0.999", what="gate")
        t.check(r.rc == 0 and doc and doc["passed"] and doc["thresholds"][0]["passed"],
                "--min-cosine 0.999: bf16 passes (status 0)", r.describe())
        above = min(1.0, cmin + (1 - cmin) / 2)
        r, doc = compare(t, "emb-f32", "emb-bf16", "--min-cosine", repr(above), what="gate")
        t.check(r.rc == 6 and doc and not doc["passed"],
                f"--min-cosine {above!r} (above the measured minimum): status 6", r.describe())
        r = e.run_direct(["compare", "emb-f32", "emb-bf16"])
        t.check(r.rc == 0 and "embeddings" in r.stdout and "cosine min" in r.stdout,
                "the table names the output and the cosine", r.describe())

    # Refusals.
    for b, word, what in [("emb-fewer", "rows", "other rows"),
                          ("emb-other", "path", "another input file of as many rows"),
                          ("emb-len16", "max_length", "another --max-length")]:
        r, _ = compare(t, "emb-f32", b, what=what)
        t.check(r.rc == 3 and "not comparable" in r.stderr and word in r.stderr,
                f"refused: {what} (status 3, names '{word}')", r.describe())
    r, _ = compare(t, "emb-f32", "texts.h5", what="not an output directory")
    t.check(r.rc == 3 and "texts.h5" in r.stderr, "refused: a path that is no job output (status 3)",
            r.describe())
    os.makedirs("unfinished", exist_ok=True)
    shutil.copy("emb-bf16/manifest.json", "unfinished/manifest.json")
    r, _ = compare(t, "emb-f32", "unfinished", what="no predictions.h5")
    t.check(r.rc == 3 and "unfinished/predictions.h5" in r.stderr,
            "refused: an output without predictions.h5 (status 3, names the file)", r.describe())
    for opts, what in [(["--max-ppl-ratio", "1.01"], "--max-ppl-ratio on embeddings"),
                       (["--min-agreement", "0.9"], "--min-agreement on embeddings"),
                       (["--min-cosine", "1.5"], "--min-cosine out of range"),
                       (["--min-cosine", "x"], "--min-cosine not a number")]:
        r, _ = compare(t, "emb-f32", "emb-bf16", *opts, what=what)
        t.check(r.rc == 2 and opts[0] in r.stderr, f"usage error: {what} (status 2)", r.describe())
    r = e.run_direct(["compare", "emb-f32"])
    t.check(r.rc == 2 and "two output directories" in r.stderr, "usage error: one directory (status 2)",
            r.describe())

    # Failed rows (an empty text fails alone, status 4) are left out and counted.
    e.write_text("bad.h5", texts[:8] + [""])
    ok = True
    for out, prec in [("bad-f32", "f32"), ("bad-bf16", "bf16")]:
        r = e.run(1, e.job_args(mdir, "bad.h5", out, extra=["--task", "embed", "--precision", prec]))
        ok &= t.check(r.rc == 4, f"embed {out} with an empty row: status 4", r.describe())
    if ok:
        r, doc = compare(t, "bad-f32", "bad-bf16", what="failed rows")
        t.check(r.rc == 0 and doc and doc["rows_compared"] == 8 and doc["a"]["failed_rows"] == 1
                and doc["outputs"]["embeddings"]["nonfinite_rows"] == 0,
                "a failed row is left out of the comparison and counted", r.describe())

    # A classification pair.
    ok = run_job(t, "classify f32", e.job_args(CLS_MODEL, "texts.h5", "cls-f32",
                                               extra=["--task", "classify", "--precision", "f32"]))
    ok &= run_job(t, "classify bf16", e.job_args(CLS_MODEL, "texts.h5", "cls-bf16",
                                                 extra=["--task", "classify", "--precision", "bf16"]))
    if not ok:
        return
    r, doc = compare(t, "cls-f32", "cls-bf16", what="classify f32 vs bf16")
    if t.check(r.rc == 0 and doc, "compare classify f32 vs bf16: status 0", r.describe()):
        with h5py.File("cls-f32/predictions.h5", "r") as f, h5py.File("cls-bf16/predictions.h5", "r") as g:
            agree = float(np.mean(f["labels"][()] == g["labels"][()]))
        t.check(near(doc["outputs"]["labels"]["agreement"], agree),
                f"classify: label agreement equals numpy's ({agree:.4f})",
                str(doc["outputs"]["labels"]))
        check_float(t, doc, "cls-f32", "cls-bf16", "logits", "classify f32 vs bf16")
        check_float(t, doc, "cls-f32", "cls-bf16", "probs", "classify f32 vs bf16")
        r, doc = compare(t, "cls-f32", "cls-bf16", "--min-agreement", repr(agree), what="gate")
        t.check(r.rc == 0, f"--min-agreement {agree:.4f} (the measured agreement): status 0", r.describe())
        if agree < 1:
            r, doc = compare(t, "cls-f32", "cls-bf16", "--min-agreement", "1", what="gate")
            t.check(r.rc == 6, "--min-agreement 1 with a differing label: status 6", r.describe())
    r, _ = compare(t, "emb-f32", "cls-f32", what="another task")
    t.check(r.rc == 3 and "task" in r.stderr and "classify" in r.stderr,
            "refused: embed against classify (status 3, names the tasks)", r.describe())


# ---- decoders --------------------------------------------------------------------------------

def requant_file(gguf, src, qtype):
    """A copy of the GGUF `src` with its Q4_1/Q4_0 matrices requantised to qtype (a gguf-py
    GGMLQuantizationType: Q8_0, Q5_0, Q5_1) from their dequantised values (gguf-py's reference
    code); metadata and other tensors as they are. Kept under the build directory, named by the
    source's size and mtime."""
    st = os.stat(src)
    out_dir = os.path.join(BUILD, "models-derived")
    dst = os.path.join(out_dir, f"smollm2-{st.st_size}-{st.st_mtime_ns}.{qtype.name}.gguf")
    if os.path.isfile(dst):
        return dst
    os.makedirs(out_dir, exist_ok=True)
    T = gguf.GGMLQuantizationType

    def requantize(ten):
        if ten.tensor_type not in (T.Q4_1, T.Q4_0):
            return ten.data, ten.tensor_type
        return gguf.quants.quantize(gguf.quants.dequantize(ten.data, ten.tensor_type),
                                    qtype), qtype

    e.gguf_rewrite(gguf, src, dst + ".tmp", tensor=requantize)
    os.rename(dst + ".tmp", dst)
    return dst


def check_score(t, a, b, doc, what):
    """compare's score numbers against numpy; returns the perplexity ratio B/A."""
    with h5py.File(f"{a}/predictions.h5", "r") as f, h5py.File(f"{b}/predictions.h5", "r") as g:
        sa, sb = f["sum_logprob"][()].astype(np.float64), g["sum_logprob"][()].astype(np.float64)
        n = f["n_tokens"][()].astype(np.int64)
        ta, tb = f["token_logprobs"][()].astype(np.float64), g["token_logprobs"][()].astype(np.float64)
    pa, pb = math.exp(-sa.sum() / n.sum()), math.exp(-sb.sum() / n.sum())
    m = np.isfinite(ta) & np.isfinite(tb)
    d = np.abs(ta - tb)[m]
    s = doc["score"]
    t.check(near(s["perplexity_a"], pa, 1e-5) and near(s["perplexity_b"], pb, 1e-5)
            and near(s["perplexity_ratio"], pb / pa, 1e-5),
            f"{what}: perplexities and ratio equal numpy's ({pa:.4f}, {pb:.4f}, {pb / pa:.5f})",
            json.dumps(s))
    t.check(s["tokens_compared"] == int(m.sum()) == int(n.sum())
            and near(s["mean_abs_delta_logprob"], d.mean(), 1e-5)
            and near(s["max_abs_delta_logprob"], d.max(), 1e-5),
            f"{what}: mean/max |delta log-prob| per token equal numpy's over {int(m.sum())} "
            f"tokens ({d.mean():.4f} / {d.max():.4f})", json.dumps(s))
    return pb / pa


def decoders(t):
    src = e.installed("smollm2")
    if not t.check(src is not None and os.path.isfile(src), "SmolLM2 GGUF is installed",
                   "run scripts/install-models.sh"):
        return
    with h5py.File(SMOL_GOLD, "r") as g:
        texts = strs(g["score_texts"][()])
        prompts = strs(g["prompts"][()])
    # The 8 longest golden texts (420 scored tokens: fewer make the perplexity ratio a noisy
    # measure, e.g. 1.7% for Q8_0 on 99 tokens against 1.1% on these and on all 815); the
    # shortest prompts.
    e.write_text("score.h5", sorted(texts, key=len)[-8:])
    e.write_text("prompts.h5", sorted(prompts, key=len)[:8])
    score = ["--task", "score", "--bos", "always", "--token-logprobs"]
    if not run_job(t, "score f32", e.job_args(src, "score.h5", "sc-f32", extra=score + ["--precision", "f32"])):
        return
    floors = [("sc-q4", src, 1.05, "Q4_1 (quantized)")]
    gg = e.gguf_module(t, "Q8_0 floors")
    if gg is not None:
        T = gg.GGMLQuantizationType
        floors += [("sc-q8", requant_file(gg, src, T.Q8_0), 1.01, "Q8_0 (quantized)")]
        # Q5_0/Q5_1 files (held packed, only on the CPU): their scored tokens meet the exact
        # values of their blocks, so the default equals the same file's --precision f32 to the
        # bit; against the Q4_1 file's f32, the ratio is what requantizing cost (printed)
        for qt in (T.Q5_0, T.Q5_1):
            q5 = requant_file(gg, src, qt)
            name = qt.name.lower()
            if run_job(t, f"score {name} f32", e.job_args(q5, "score.h5", f"sc-{name}-f32",
                                                          extra=score + ["--precision", "f32"])):
                floors += [(f"sc-{name}", q5, 1.0, f"{qt.name} (kept, packed)", f"sc-{name}-f32")]
    for out, model, bound, what, *ref in floors:
        ref = ref[0] if ref else "sc-f32"
        if not run_job(t, f"score {what}", e.job_args(model, "score.h5", out, extra=score)):
            continue
        r, doc = compare(t, ref, out, "--max-ppl-ratio", repr(bound), what=what)
        if not t.check(r.rc in (0, 6) and doc, f"compare score {what}: a result", r.describe()):
            continue
        ratio = check_score(t, ref, out, doc, f"score {what}")
        print(f"      SmolLM2 {what} vs {ref}: perplexity ratio {ratio:.5f}, mean |delta "
              f"log-prob| {doc['score']['mean_abs_delta_logprob']:.4f}")
        if ref != "sc-f32":
            d = doc["score"]["max_abs_delta_logprob"]
            t.check(r.rc == 0 and d == 0.0, f"{what}: every token's log-probability equals the "
                    f"same file's --precision f32", f"max |delta| {d}")
            kept = [l["dtype"] for l in e.report_layers(out) if l["name"].startswith("blk.")]
            want = out.split("-")[1]
            t.check(len(kept) == 30 * 6 and set(kept) == {want},
                    f"{what}: report.json lists the 180 layer matrices as {want}", str(kept[:8]))
            r2, doc2 = compare(t, "sc-f32", out, what=f"{what} against the Q4_1 file")
            if r2.rc == 0 and doc2:
                print(f"      SmolLM2 {what} vs the Q4_1 file's f32 (requantizing's cost): "
                      f"perplexity ratio {doc2['score']['perplexity_ratio']:.5f}")
            continue
        t.check(r.rc == 0 and doc["passed"], f"{what}: perplexity within {round((bound - 1) * 100)}% "
                f"of f32 (--max-ppl-ratio {bound}: status 0)", r.describe())

    # Greedy generation, Q4_1 against f32.
    gen = ["--task", "generate", "--max-new-tokens", "16"]
    ok = run_job(t, "generate f32", e.job_args(src, "prompts.h5", "gen-f32", extra=gen + ["--precision", "f32"]))
    ok &= run_job(t, "generate Q4_1", e.job_args(src, "prompts.h5", "gen-q4", extra=gen))
    if not ok:
        return
    r, doc = compare(t, "gen-f32", "gen-q4", "--min-agreement", "0", what="generate")
    if not t.check(r.rc == 0 and doc, "compare generate Q4_1 vs f32: status 0", r.describe()):
        return
    with h5py.File("gen-f32/predictions.h5", "r") as f, h5py.File("gen-q4/predictions.h5", "r") as g:
        ta, tb = f["tokens"][()], g["tokens"][()]
        na, nb = f["n_tokens"][()], g["n_tokens"][()]
        xa, xb = strs(f["text"][()]), strs(g["text"][()])
    same, prefix = [], []
    for i in range(len(na)):
        k = 0
        m = min(na[i], nb[i])
        while k < m and ta[i, k] == tb[i, k]:
            k += 1
        same.append(na[i] == nb[i] and k == max(na[i], nb[i]))
        prefix.append(k / max(na[i], nb[i]) if max(na[i], nb[i]) else 1.0)
    tok, txt = float(np.mean(same)), float(np.mean([p == q for p, q in zip(xa, xb)]))
    gd = doc["generate"]
    t.check(near(gd["token_exact_match"], tok) and near(gd["text_exact_match"], txt)
            and near(gd["mean_prefix_share"], float(np.mean(prefix))),
            f"generate: exact-match rates equal numpy's (tokens {tok:.3f}, text {txt:.3f}, "
            f"mean prefix {np.mean(prefix):.3f})", json.dumps(gd))
    print(f"      SmolLM2 Q4_1 vs f32, greedy 16 tokens: identical tokens in {tok:.0%} of "
          f"{len(na)} prompts, identical text in {txt:.0%}, mean share before the first "
          f"difference {np.mean(prefix):.0%}")
    if tok < 1:
        r, _ = compare(t, "gen-f32", "gen-q4", "--min-agreement", "1", what="generate gate")
        t.check(r.rc == 6, "--min-agreement 1 with differing continuations: status 6", r.describe())
    r, _ = compare(t, "gen-f32", "sc-f32", what="generate vs score")
    t.check(r.rc == 3 and "task" in r.stderr, "refused: generate against score (status 3)", r.describe())


def body(t, tmp):
    sys.path.insert(0, os.path.join(SRC, "tests", "reference"))
    from corpus import load_sentences
    encoders(t, load_sentences()[:48])
    decoders(t)


if __name__ == "__main__":
    e.main("test_compare", body)
