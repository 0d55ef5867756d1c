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
    --precision f32; with the default, which keeps Q4_K and Q6_K matrices in their own blocks
    (packed, integer GEMM) and requantizes the other K-quants to Q8_0 on load, within 3e-3
    (TOL_Q8; measured 5.0e-4), report.json listing attn_q/attn_k as q4_k, attn_v/ffn_down as
    q6_k and the Q5_K/Q3_K/Q2_K matrices as q8_0, at TP=1 and TP=2 (ffn_down's columns split
    into whole super-blocks).

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
TOL_Q8 = 3e-3  # relative error of a row's sum of log-probabilities, K-quants requantized to Q8_0


def strs(ds):
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[()]]


def check_scores(t, model, what, n_ref, sum_ref, precision="auto", tol=1e-4):
    """Scores score.h5 with `model` at TP 1 and 2 against the reference counts and sums."""
    for np_, tp in [(1, 1), (2, 2)]:
        out = f"score-{what}-{precision}-tp{tp}"
        r = e.run(np_, e.job_args(model, "score.h5", out, tp=tp,
                                  extra=["--task", "score", "--precision", precision]))
        if not t.check(r.rc == 0, f"{what} score np{np_} tp{tp}: status 0", r.describe()):
            continue
        with h5py.File(f"{out}/predictions.h5", "r") as f:
            n = f["n_tokens"][()]
            s = f["sum_logprob"][()].astype(np.float64)
        t.check(np.array_equal(n, n_ref), f"{what} tp{tp}: token counts equal transformers'",
                f"got {n.tolist()}\nref {n_ref.tolist()}")
        err = e.rel_err(s, sum_ref)
        print(f"      {what} {precision} tp{tp}: sum_logprob relative error {err:.3g}")
        t.check(err <= tol, f"{what} {precision} tp{tp}: sum_logprob within {tol:g} of "
                "transformers'", f"relative error {err:.3g}\ngot {s}\nref {sum_ref}")


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
    # the default keeps Q4_K/Q6_K and requantizes the other K-quants to Q8_0 on load
    check_scores(t, kq, "K-quant GGUF", *ref["gguf/"], precision="auto", tol=TOL_Q8)
    want = {"attn_q": "q4_k", "attn_k": "q4_k", "attn_v": "q6_k", "ffn_down": "q6_k",
            "attn_output": "q8_0", "ffn_gate": "q8_0"}
    for tp in (1, 2):
        rep = e.load_json(f"score-K-quant GGUF-auto-tp{tp}/report.json") or {}
        mats = {l["name"]: l["dtype"] for l in rep.get("weights", {}).get("layers", [])
                if l["name"].startswith("blk.")}
        wrong = {n: d for n, d in mats.items() if d != want[n.split(".")[2]]}
        t.check(len(mats) == 12 and not wrong,
                f"K-quant GGUF auto tp{tp}: Q4_K/Q6_K kept, Q5_K/Q3_K/Q2_K as q8_0 (report.json)",
                str(mats))

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
