"""test_spm_e2e.py — a decoder with a SentencePiece-style tokenizer (LLaMA 2 / Mistral layout:
"▁" for spaces, byte fallback) end to end: `shardline run` on the tiny Mistral checkpoint of
tests/reference/spm_tiny/model (its tokenizer.json is the legacy LLaMA-2 form) against
transformers' outputs (tests/reference/make_spm_goldens.py):

  - --task score of raw text (accents, CJK, emoji and other characters outside the vocabulary,
    spaces at the ends, newlines, literal "<s>"), TP=1 and TP=2: token counts equal
    transformers' (so the ids do, BOS included), sum log-probabilities within 1e-4 relative;
  - --task generate, greedy, 8 tokens: /tokens equal transformers' argmax choices and /text its
    decoding (byte tokens joined into UTF-8, U+FFFD for invalid bytes, <unk> skipped, the first
    space stripped);
  - the same texts scored with tests/reference/spm_tiny/tiny_kquant.gguf (a llama GGUF whose
    matrices are Q2_K..Q6_K, with a SentencePiece tokenizer, tokenizer.ggml.model "llama"), TP=1
    and TP=2 (TP=2 splits the 256 columns of attn_output inside a K-quant super-block), against
    transformers' GGUF loader: the same token counts, sums within 1e-4 relative with
    --precision f32; with the default, which keeps Q4_K, Q5_K and Q6_K matrices in their own
    blocks (packed, integer GEMM) where a rank's slice is whole super-blocks and requantizes the
    others to Q8_0 on load, within 3e-3 (TOL_Q8; measured 4.4e-4 at TP=1, 5.0e-4 at TP=2),
    report.json listing attn_q/attn_k as q4_k, attn_v/ffn_down as q6_k, attn_output as q5_k
    (q8_0 at TP=2, 128 columns a rank) and the Q3_K/Q2_K gate and up as q8_0, at TP=1 and TP=2
    (ffn_down's columns split into whole super-blocks);
  - a tied variant of that file (8 tokens appended to its vocabulary, 1008 rows of Q4_K
    token_embd, no output.weight; made with gguf-py, installed under the build directory): the
    table packed and the LM head a view of it at TP=1, a copy of each rank's rows at TP=2 (504
    rows, not whole groups of 16, so requantized to Q8_0): the default at TP=1 and TP=2 within
    3e-3 of --precision f32 (measured 4.9e-4 and 6.4e-4), report.json naming the table q4_k
    (and at TP=2 the head's copy q8_0).

Run: ctest -R test_spm_e2e (needs SHARDLINE, SL_SOURCE_DIR, MPIEXEC).
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(SRC, "tests", "reference", "spm_tiny")
VLEN = h5py.string_dtype("utf-8")
TOL_Q8 = 3e-3
TIED_EXTRA = 8  # tokens appended to tiny_kquant's 1000 for its tied variant  # relative error of a row's sum of log-probabilities, K-quants requantized to Q8_0


def strs(ds):
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[()]]


def score(t, model, out, np_, tp, precision, what):
    """Scores score.h5 with `model` on np_ ranks at TP tp into `out`: (n_tokens, sum_logprob),
    or None when the job failed (a failed check)."""
    r = e.run(np_, e.job_args(model, "score.h5", out, tp=tp,
                              extra=["--task", "score", "--precision", precision]))
    if not t.check(r.rc == 0, f"{what} np{np_} tp{tp}: status 0", r.describe()):
        return None
    with h5py.File(f"{out}/predictions.h5", "r") as f:
        return f["n_tokens"][()], f["sum_logprob"][()].astype(np.float64)


def check_scores(t, model, what, n_ref, sum_ref, precision="auto", tol=1e-4):
    """Scores score.h5 with `model` at TP 1 and 2 against the reference counts and sums."""
    for np_, tp in [(1, 1), (2, 2)]:
        got = score(t, model, f"score-{what}-{precision}-tp{tp}", np_, tp, precision,
                    f"{what} score")
        if got is None:
            continue
        n, s = got
        t.check(np.array_equal(n, n_ref), f"{what} tp{tp}: token counts equal transformers'",
                f"got {n.tolist()}\nref {n_ref.tolist()}")
        err = e.rel_err(s, sum_ref)
        print(f"      {what} {precision} tp{tp}: sum_logprob relative error {err:.3g}")
        t.check(err <= tol, f"{what} {precision} tp{tp}: sum_logprob within {tol:g} of "
                "transformers'", f"relative error {err:.3g}\ngot {s}\nref {sum_ref}")


def tied_kquant(gguf, src, dst):
    """tiny_kquant.gguf made tied and 1008 tokens wide: 8 tokens appended to its vocabulary
    (snowman strings no text holds), token_embd's rows 0..7 repeated for them, output.weight
    dropped, so that the LM head is the Q4_K embedding table itself (1008 rows: whole groups of
    16, 256 values: a whole super-block)."""
    extra = {"tokenizer.ggml.tokens": [f"\u2603\u2603{i}" for i in range(TIED_EXTRA)],
             "tokenizer.ggml.scores": [-1e6] * TIED_EXTRA,
             "tokenizer.ggml.token_type": [1] * TIED_EXTRA}

    def field(name, val):
        if name in extra:
            return list(val) + extra[name]
        return val + TIED_EXTRA if name.endswith(".vocab_size") else val

    def tensor(ten):
        if ten.name == "output.weight":
            return None
        if ten.name == "token_embd.weight":
            assert ten.tensor_type == gguf.GGMLQuantizationType.Q4_K
            return np.concatenate([ten.data, ten.data[:TIED_EXTRA]]), ten.tensor_type
        return ten.data, ten.tensor_type

    e.gguf_rewrite(gguf, src, dst, field, tensor)


def check_tied(t, kq):
    """The tied variant: the default (Q4_K table packed, the LM head a view of it at TP 1, a
    Q8_0 copy of each rank's 504 rows at TP 2, not whole groups) against --precision f32."""
    gguf = e.gguf_module(t, "tied K-quant table")
    if gguf is None:
        return
    tied = os.path.abspath("tied_kquant.gguf")
    tied_kquant(gguf, kq, tied)
    sums = {}
    for np_, tp, prec in [(1, 1, "f32"), (1, 1, "auto"), (2, 2, "auto")]:
        got = score(t, tied, f"tied-{prec}-tp{tp}", np_, tp, prec, f"tied K-quant {prec}")
        if got is None:
            return
        sums[(prec, tp)] = got[1]
    e1, e2 = (e.rel_err(sums[("auto", 1)], sums[("f32", 1)]),
              e.rel_err(sums[("auto", 2)], sums[("f32", 1)]))
    print(f"      tied K-quant: auto vs f32, tp1 {e1:.3g}, tp2 {e2:.3g}")
    t.check(e1 <= TOL_Q8, f"tied K-quant auto tp1 (the head a view of the packed table): "
            f"sum_logprob within {TOL_Q8:g} of f32's", f"{e1:.3g}")
    t.check(e2 <= TOL_Q8, f"tied K-quant auto tp2 (the head a Q8_0 copy of the rank's rows): "
            f"sum_logprob within {TOL_Q8:g} of f32's", f"{e2:.3g}")
    for tp, head in [(1, None), (2, "q8_0")]:
        emb = [l["dtype"] for l in e.report_layers(f"tied-auto-tp{tp}")
               if l["name"] == "token_embd.weight"]
        t.check(emb == (["q4_k"] if head is None else ["q4_k", head]),
                f"tied K-quant tp{tp}: token_embd q4_k" + (", the head's copy q8_0" if head else ""),
                str(emb))


def body(t, tmp):
    model = os.path.join(TINY, "model")
    with h5py.File(os.path.join(TINY, "model_goldens.h5"), "r") as g:
        texts = strs(g["score_texts"])
        ref = {k: (g[f"{k}score_n_tokens"][()], g[f"{k}score_sum_logprob"][()].astype(np.float64))
               for k in ("", "gguf/")}
        prompts = strs(g["prompts"])
        greedy = g["greedy_ids"][()]
        greedy_text = strs(g["greedy_text"])

    e.write_text("score.h5", texts)
    check_scores(t, model, "tokenizer.json", *ref[""])
    kq = os.path.join(TINY, "tiny_kquant.gguf")
    check_scores(t, kq, "K-quant GGUF", *ref["gguf/"], precision="f32")
    # the default keeps Q4_K/Q5_K/Q6_K and requantizes Q3_K/Q2_K to Q8_0 on load; at TP=2
    # attn_output's 128 columns a rank are not whole super-blocks: Q8_0 too
    check_scores(t, kq, "K-quant GGUF", *ref["gguf/"], precision="auto", tol=TOL_Q8)
    for tp in (1, 2):
        want = {"attn_q": "q4_k", "attn_k": "q4_k", "attn_v": "q6_k", "ffn_down": "q6_k",
                "attn_output": "q5_k" if tp == 1 else "q8_0", "ffn_gate": "q8_0"}
        mats = {l["name"]: l["dtype"] for l in e.report_layers(f"score-K-quant GGUF-auto-tp{tp}")
                if l["name"].startswith("blk.")}
        wrong = {n: d for n, d in mats.items() if d != want[n.split(".")[2]]}
        t.check(len(mats) == 12 and not wrong,
                f"K-quant GGUF auto tp{tp}: Q4_K/Q5_K/Q6_K kept where the slice is whole "
                "super-blocks, Q3_K/Q2_K as q8_0 (report.json)", str(mats))
    check_tied(t, kq)

    e.write_text("prompts.h5", prompts)
    r = e.run(1, e.job_args(model, "prompts.h5", "gen",
                            extra=["--task", "generate", "--max-new-tokens",
                                   str(greedy.shape[1])]))
    if t.check(r.rc == 0, "generate: status 0", r.describe()):
        with h5py.File("gen/predictions.h5", "r") as f:
            toks = f["tokens"][()]
            text = strs(f["text"])
        t.check(np.array_equal(toks, greedy), "generate: greedy tokens equal transformers'",
                f"got {toks.tolist()}\nref {greedy.tolist()}")
        t.check(text == greedy_text, "generate: /text equals transformers' decoding",
                f"got {text!r}\nref {greedy_text!r}")


if __name__ == "__main__":
    e.main("test_spm_e2e", body)
