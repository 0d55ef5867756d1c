"""test_llama_e2e.py — the decoder path of `shardline run` end to end, on the real
SmolLM2-135M-Instruct GGUF (installed by scripts/install-models.sh) against goldens computed by
transformers' GGUF loader (tests/reference/make_llama_goldens.py):

  - --task score of raw text under mpirun with TP=1 and TP=3 (--bos always, as transformers'
    tokenizer adds one): token counts equal the goldens', sum/mean log-probabilities and
    perplexity within 1e-4 relative, per-token log-probabilities within 1e-3; TP=1 and TP=3 agree;
  - prompt + continuation pairs (--prompt-dataset): only the continuation is scored, as in the
    goldens; --token-logprobs writes /token_ids equal to transformers' ids (-1 padded);
  - --task generate, greedy, 32 tokens, TP=1 and TP=3: the continuations equal transformers' for
    at least 90% of the prompts (any divergence is reported with transformers' logit gap there),
    rows that end at EOS end where the reference emits EOS, /text decodes /tokens;
  - sampling: the same seed gives the same text with 1 rank or 2 data-parallel ranks and other
    unit sizes (per-row generators); another seed changes it; --stop ends rows before the stop
    string;
  - row errors: empty text (score) and a prompt longer than --max-length (generate) fail alone,
    status 4.
The checks against transformers run with --precision f32 (transformers dequantises the GGUF).
The default precision (auto) keeps the Q8_0/Q4_1 matrices quantized; it is checked as well:
  - scoring, TP=1 and TP=3: scored tokens are bulk tokens, which meet the quantized weights as
    dequantised f32 tiles, so the same checks against transformers as --precision f32 (1e-4
    relative, 1e-3 per token; TP=3 agrees with TP=1 to 1e-4);
  - greedy generation (prompts and decode steps take int8 activations): the share of prompts
    whose 32 tokens equal transformers' and the mean share of tokens before the first difference
    are printed, with floors of 20% and 50% (int8 rounding moves near-tied logits, so exactness
    is not asked);
  - sampling below runs quantized: the same seed gives the same tokens with other units and rank
    counts (a row's result does not depend on the rows beside it).

Run: ctest -R test_llama_e2e (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GOLD = os.path.join(SRC, "tests", "reference", "goldens", "smollm2_goldens.h5")
VLEN = h5py.string_dtype("utf-8")


def strs(ds):
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[()]]


def write_text(path, **cols):
    with h5py.File(path, "w") as f:
        for name, vals in cols.items():
            f.create_dataset(name, data=np.array(vals, dtype=object), dtype=VLEN)


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def check_scores(t, out, g, prefix, what):
    with h5py.File(f"{out}/predictions.h5", "r") as f:
        got = {k: f[k][()] for k in ("sum_logprob", "mean_logprob", "n_tokens", "perplexity",
                                     "token_logprobs")}
    t.check(np.array_equal(got["n_tokens"], g[f"{prefix}_n_tokens"][()]),
            f"{what}: token counts equal transformers'",
            f"got {got['n_tokens'].tolist()}\nref {g[prefix + '_n_tokens'][()].tolist()}")
    for k in ("sum_logprob", "mean_logprob", "perplexity"):
        err = rel(got[k], g[f"{prefix}_{k}"][()])
        t.check(err <= 1e-4, f"{what}: {k} within 1e-4 relative", f"relative error {err:.3g}")
    # per-token: the goldens hold the scored tokens' log-probs in order; shardline puts them at
    # their token positions (NaN elsewhere)
    ref_tl = g[f"{prefix}_token_logprobs"][()]
    worst = 0.0
    for i in range(len(got["n_tokens"])):
        mine = got["token_logprobs"][i]
        mine = mine[~np.isnan(mine)]
        ref = ref_tl[i][~np.isnan(ref_tl[i])]
        if mine.shape != ref.shape:
            worst = np.inf
            break
        worst = max(worst, float(np.max(np.abs(mine - ref))) if len(ref) else 0.0)
    t.check(worst <= 1e-3, f"{what}: per-token log-probabilities within 1e-3",
            f"max abs error {worst:.3g}")
    # /token_ids: every row's ids (BOS and prompt included) as transformers tokenized them,
    # -1 after; a log-probability stands at the position of the token it scores
    with h5py.File(f"{out}/predictions.h5", "r") as f:
        tid = f["token_ids"][()]
    ref_ids, ref_len = g[f"{prefix}_ids"][()], g[f"{prefix}_lengths"][()]
    width = max(ref_ids.shape[1], tid.shape[1])
    pad = np.full((len(ref_ids), width), -1, np.int64)
    pad[:, : ref_ids.shape[1]] = ref_ids
    t.check(tid.dtype == np.int32 and tid.shape == (len(ref_ids), tid.shape[1])
            and np.array_equal(tid, pad[:, : tid.shape[1]]) and (pad[:, tid.shape[1]:] == -1).all(),
            f"{what}: /token_ids equal transformers' token ids (-1 padded)",
            f"dtype {tid.dtype} shape {tid.shape}; first row got {tid[0, :12].tolist()} "
            f"ref {ref_ids[0, :12].tolist()}")
    lp = got["token_logprobs"]
    t.check(all(np.isnan(lp[i, int(ref_len[i]):]).all() and
                not np.isnan(lp[i, int(ref_len[i]) - 1]) for i in range(len(ref_len))),
            f"{what}: /token_logprobs stand at the positions of the scored /token_ids")
    return got


def quantized(t, model, g):
    """The default precision: SmolLM2's Q8_0/Q4_1 matrices kept quantized."""
    score_args = ["--task", "score", "--bos", "always", "--token-logprobs", "--batch-tokens",
                  "1024"]
    sums = {}
    for np_, tp in [(1, 1), (3, 3)]:
        out = f"q-score-tp{tp}"
        r = e.run(np_, e.job_args(model, "score.h5", out, tp=tp, unit_rows=16, extra=score_args),
                  timeout=900)
        if t.check(r.rc == 0, f"quantized score np{np_} tp{tp}: status 0", r.describe()):
            sums[tp] = check_scores(t, out, g, "score", f"quantized score tp{tp}")["sum_logprob"]
    if len(sums) == 2:
        t.check(rel(sums[3], sums[1]) <= 1e-4, "quantized score: TP=3 agrees with TP=1 (1e-4)",
                f"relative difference {rel(sums[3], sums[1]):.3g}")
    # greedy generation: agreement with transformers, not exactness
    ref_ids = g["greedy_ids"][()]
    r = e.run(1, e.job_args(model, "prompts.h5", "q-gen", unit_rows=10, batch=8,
                            extra=["--task", "generate", "--bos", "always", "--max-new-tokens",
                                   str(ref_ids.shape[1])]), timeout=900)
    if t.check(r.rc == 0, "quantized generate: status 0", r.describe()):
        with h5py.File("q-gen/predictions.h5", "r") as f:
            toks, ntok = f["tokens"][()], f["n_tokens"][()]
        exact, prefix = 0, []
        for i in range(len(ref_ids)):
            n = int(ntok[i])
            mine, want = toks[i, :n], ref_ids[i, :n]
            same = np.array_equal(mine, want)
            exact += same
            prefix.append(1.0 if same else int(np.argmax(mine != want)) / n)
        print(f"      note: quantized greedy: {exact}/{len(ref_ids)} prompts equal transformers', "
              f"mean share of tokens before the first difference {np.mean(prefix):.2f}")
        t.check(exact >= 0.2 * len(ref_ids) and np.mean(prefix) >= 0.5,
                f"quantized generate: {exact}/{len(ref_ids)} prompts equal transformers' (>= 20%), "
                f"{np.mean(prefix):.2f} of the tokens before a difference (>= 0.5)")


def body(t, tmp):
    model = e.installed("smollm2")
    if not t.check(model is not None and os.path.isfile(model), "SmolLM2 GGUF is installed",
                   "run scripts/install-models.sh"):
        return
    g = h5py.File(GOLD, "r")

    # ---- scoring -------------------------------------------------------------------------
    texts = strs(g["score_texts"])
    write_text("score.h5", text=texts)
    tp_sums = {}
    for np_, tp in [(1, 1), (3, 3)]:
        out = f"score-tp{tp}"
        r = e.run(np_, e.job_args(model, "score.h5", out, tp=tp, unit_rows=16,
                                  extra=["--task", "score", "--bos", "always", "--token-logprobs",
                                         "--batch-tokens", "1024", "--precision", "f32"]),
                  timeout=900)
        if t.check(r.rc == 0, f"score np{np_} tp{tp}: status 0", r.describe()):
            tp_sums[tp] = check_scores(t, out, g, "score", f"score tp{tp}")["sum_logprob"]
    if len(tp_sums) == 2:
        t.check(rel(tp_sums[3], tp_sums[1]) <= 1e-4, "score: TP=3 agrees with TP=1 (1e-4)",
                f"relative difference {rel(tp_sums[3], tp_sums[1]):.3g}")

    write_text("pairs.h5", prompt=strs(g["score_prompts"]), text=strs(g["score_conts"]))
    r = e.run(1, e.job_args(model, "pairs.h5", "pairs",
                            extra=["--task", "score", "--bos", "always", "--prompt-dataset",
                                   "prompt", "--token-logprobs", "--precision", "f32"]), timeout=900)
    if t.check(r.rc == 0, "score prompt + continuation pairs: status 0", r.describe()):
        check_scores(t, "pairs", g, "pair", "pairs")

    # ---- greedy generation -----------------------------------------------------------------
    prompts = strs(g["prompts"])
    ref_ids = g["greedy_ids"][()]
    gap = g["greedy_gap"][()]
    eos = int(g.attrs["eos_token_id"])
    write_text("prompts.h5", text=prompts)
    gen = {}
    for np_, tp in [(1, 1), (3, 3)]:
        out = f"gen-tp{tp}"
        r = e.run(np_, e.job_args(model, "prompts.h5", out, tp=tp, unit_rows=10, batch=8,
                                  extra=["--task", "generate", "--bos", "always",
                                         "--max-new-tokens", str(ref_ids.shape[1]),
                                         "--precision", "f32"]), timeout=900)
        if not t.check(r.rc == 0, f"generate np{np_} tp{tp}: status 0", r.describe()):
            continue
        with h5py.File(f"{out}/predictions.h5", "r") as f:
            toks, ntok = f["tokens"][()], f["n_tokens"][()]
            texts_out = [s.decode("utf-8") for s in f["text"][()]]
            fin = [s.decode() for s in f["finish_reason"][()]]
        gen[tp] = toks
        same, notes = 0, []
        for i in range(len(prompts)):
            n = int(ntok[i])
            mine = toks[i, :n]
            ref = ref_ids[i, :n]
            ok = np.array_equal(mine, ref) and (fin[i] != "eos" or int(ref[-1]) == eos)
            ok = ok and (fin[i] == "eos" or n == ref_ids.shape[1])
            same += ok
            if not ok:
                k = int(np.argmax(mine != ref)) if not np.array_equal(mine, ref) else n
                notes.append(f"prompt {i}: first difference at step {k}, transformers' logit gap "
                             f"there {gap[i, min(k, gap.shape[1] - 1)]:.4f}")
        frac = same / len(prompts)
        t.check(frac >= 0.9, f"generate tp{tp}: greedy continuations equal transformers' for "
                f"{same}/{len(prompts)} prompts (>= 90%)", "\n".join(notes))
        for note in notes:
            print(f"      note: {note}")
        t.check(all(fin[i] in ("eos", "length") for i in range(len(prompts))),
                f"generate tp{tp}: every row ends by eos or length", str(fin))
        t.check(all(len(s) > 0 for s in texts_out[:5]), f"generate tp{tp}: /text is filled",
                str(texts_out[:5]))
    if len(gen) == 2:
        agree = sum(np.array_equal(gen[1][i], gen[3][i]) for i in range(len(prompts)))
        t.check(agree >= 0.9 * len(prompts), f"generate: TP=3 equals TP=1 on {agree}/"
                f"{len(prompts)} prompts")

    quantized(t, model, g)

    # ---- sampling: per-row seeds -------------------------------------------------------------
    samp = ["--task", "generate", "--max-new-tokens", "12", "--temperature", "0.8", "--top-k",
            "40", "--top-p", "0.9"]
    runs = {}
    for name, np_, unit, seed in [("a", 1, 64, 7), ("b", 2, 5, 7), ("c", 1, 64, 8)]:
        out = f"samp-{name}"
        r = e.run(np_, e.job_args(model, "prompts.h5", out, unit_rows=unit, batch=6,
                                  extra=samp + ["--seed", str(seed)]), timeout=900)
        if t.check(r.rc == 0, f"sampling run {name} (np{np_}, unit {unit}, seed {seed}): status 0",
                   r.describe()):
            with h5py.File(f"{out}/predictions.h5", "r") as f:
                runs[name] = f["tokens"][()]
    if "a" in runs and "b" in runs:
        t.check(np.array_equal(runs["a"], runs["b"]),
                "sampling: the same seed gives the same tokens with 2 ranks and other units")
    if "a" in runs and "c" in runs:
        t.check(not np.array_equal(runs["a"], runs["c"]), "sampling: another seed changes them")

    # ---- stop strings ------------------------------------------------------------------------
    r = e.run(1, e.job_args(model, "prompts.h5", "stop",
                            extra=["--task", "generate", "--max-new-tokens", "24", "--stop", "\n",
                                   "--stop", "."]), timeout=900)
    if t.check(r.rc == 0, "generate with --stop: status 0", r.describe()):
        with h5py.File("stop/predictions.h5", "r") as f:
            txt = [s.decode("utf-8") for s in f["text"][()]]
            fin = [s.decode() for s in f["finish_reason"][()]]
        t.check(all("\n" not in s and "." not in s for s in txt),
                "stop strings never appear in /text", str(txt[:6]))
        t.check(fin.count("stop") >= len(txt) // 2, f"{fin.count('stop')} rows end with 'stop'",
                str(fin))

    # ---- KV heads replicated over more ranks than there are (tiny Qwen2: 4 query / 2 KV heads,
    # q/k/v biases) from pre-tokenized ids, TP=4 and TP=2 against transformers' logits ----------
    tiny = os.path.join(SRC, "tests", "reference", "tiny_llama", "qwen2_bias")
    want = e.tiny_llama_goldens("qwen2_bias", "tiny.h5")
    for np_, tp in [(4, 4), (2, 2)]:
        out = f"tiny-tp{tp}"
        r = e.run(np_, e.job_args(tiny, "tiny.h5", out, dataset="input_ids", tp=tp,
                                  extra=["--task", "score"]), timeout=300)
        if t.check(r.rc == 0, f"tiny qwen2 score np{np_} tp{tp}: status 0", r.describe()):
            with h5py.File(f"{out}/predictions.h5", "r") as f:
                got = f["sum_logprob"][()]
            t.check(rel(got, want) <= 1e-4, f"tiny qwen2 tp{tp}: scores equal transformers' "
                    "(1e-4)", f"got {got}, want {want}")

    # ---- row errors ------------------------------------------------------------------------
    write_text("bad.h5", text=["A fine sentence to score.", "", "Another fine one."])
    r = e.run(1, e.job_args(model, "bad.h5", "bad-score", extra=["--task", "score"]), timeout=300)
    t.check(r.rc == 4, "score: an empty text is a row error (status 4)", r.describe())
    if r.rc == 4:
        with h5py.File("bad-score/predictions.h5", "r") as f:
            s = f["sum_logprob"][()]
            errs = e.read_table(f["errors"])
        t.check(np.isnan(s[1]) and np.isfinite(s[0]) and np.isfinite(s[2]),
                "score: only the empty row is NaN", str(s))
        t.check(len(errs) == 1 and errs[0]["row"] == 1 and "empty" in errs[0]["reason"],
                "score: /errors lists row 1 as empty", str(errs))
    long_prompt = " ".join(["word"] * 80)
    write_text("long.h5", text=["Short prompt.", long_prompt])
    r = e.run(1, e.job_args(model, "long.h5", "bad-gen",
                            extra=["--task", "generate", "--max-length", "48",
                                   "--max-new-tokens", "8"]), timeout=300)
    t.check(r.rc == 4, "generate: a prompt longer than --max-length is a row error (status 4)",
            r.describe())
    if r.rc == 4:
        with h5py.File("bad-gen/predictions.h5", "r") as f:
            n = f["n_tokens"][()]
        t.check(n[0] == 8 and n[1] == -1, "generate: the short row is generated, the long one not",
                str(n))
    g.close()


if __name__ == "__main__":
    e.main("test_llama_e2e", body)
