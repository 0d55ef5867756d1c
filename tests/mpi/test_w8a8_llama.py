"""test_w8a8_llama.py — `shardline calibrate` and `--precision w8a8` for LLaMA-family decoders,
end to end:

  - SmolLM2-135M (the installed Q4_1 GGUF, reached through a link of the same name in the test
    folder, so that the default calibration file FILE.shardline-calibration.safetensors lands
    beside it and not beside the installed model) calibrated with `--bos always` on the first
    21 golden score texts (tests/reference/goldens/smollm2_goldens.h5 `score_texts`), then the
    other 21 (594 scored tokens, with the longest text) scored with --precision f32, int8 and
    w8a8 (2 ranks, reading the default calibration file), compared with
    `shardline compare --json`: perplexity ratio to f32 measured 1.0031 for int8 (floor 1.02;
    weight-only here: scored tokens keep f32 activations)
    and 1.0077 for w8a8 with the default calibration (percentile 99; floor 1.03; a scored
    token's block beyond its static range takes its own step); calibrated with --method max
    (a block's range is the largest input of its 32 columns over the calibration tokens),
    1.0396 (floor 1.08; 1.279 when blocks beyond it saturated instead), under 3% of the blocks
    beyond their range (report.json w8a8_blocks: measured 1.5%; percentile 99: 27%); w8a8's
    token log-probabilities differ from int8's (the scales are used), and report.json marks the
    180 decoder matrices static; zeroing the tied LM head's ranges alone moves the scores (the
    head uses the calibrated ranges of the table it shares);
  - a calibration file whose every range is 0 makes every block fall back to per-row scales:
    perplexity within 2% of f32, and not the static result;
  - the tiny Mistral checkpoint (tests/reference/tiny_llama/mistral, safetensors, untied LM
    head) calibrated on 2 of its 3 golden token-id rows, scored with w8a8 on TP=1 and TP=2
    (row-parallel layers read their slice of the ranges): each row's sum of log-probabilities
    within 2% of transformers' (measured at most 0.26%);
  - refusals, status 3 before any output: no calibration file at the default path (named), the
    tiny Mistral's file for SmolLM2 (another model's fingerprint), and a file without one
    layer's tensor (file and tensor named).

Run: ctest -R test_w8a8_llama (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GOLD = os.path.join(SRC, "tests", "reference", "goldens")
TINY = os.path.join(SRC, "tests", "reference", "tiny_llama", "mistral")
CALIB = "shardline-calibration.safetensors"
SCORE = ["--task", "score", "--bos", "always", "--token-logprobs"]


def token_logprobs(out):
    with h5py.File(f"{out}/predictions.h5", "r") as f:
        return f["token_logprobs"][()].astype(np.float64)


def ppl_ratio(t, a, b, what):
    """`shardline compare --json a b`'s perplexity ratio B/A (None when it gave none)."""
    r = e.run_direct(["compare", "--json", a, b], timeout=120)
    try:
        ratio = json.loads(r.stdout)["score"]["perplexity_ratio"] if r.rc == 0 else None
    except (ValueError, KeyError):
        ratio = None
    t.check(ratio is not None, f"compare {what} vs f32: a perplexity ratio", r.describe())
    return ratio


def smollm2(t, tmp):
    src = e.installed("smollm2")
    if not t.check(src is not None and os.path.isfile(src), "SmolLM2 GGUF is installed",
                   "run scripts/install-models.sh"):
        return
    with h5py.File(os.path.join(GOLD, "smollm2_goldens.h5"), "r") as g:
        texts = [s.decode("utf-8") if isinstance(s, bytes) else s for s in g["score_texts"][()]]
    half = len(texts) // 2
    e.write_text("calib.h5", texts[:half])
    e.write_text("score.h5", texts[half:])
    # the model under the test folder (same file name, so the same fingerprint), whose default
    # calibration file goes beside the link
    model = os.path.join(tmp, os.path.basename(src))
    os.symlink(src, model)
    default_calib = model + "." + CALIB

    # ---- refused before calibrating: no file at the default path ------------------------------
    r = e.run(1, e.job_args(model, "score.h5", "bad-missing", extra=SCORE + ["--precision", "w8a8"]))
    t.check(r.rc == 3 and os.path.basename(default_calib) in r.stderr,
            "w8a8 without a calibration file: status 3, names FILE." + CALIB, r.describe())

    # ---- calibrate ---------------------------------------------------------------------------
    r = e.run(1, ["--model", model, "--input", "calib.h5", "--rows", str(half), "--output", tmp,
                  "--bos", "always"], subcommand="calibrate", timeout=300)
    if not t.check(r.rc == 0 and os.path.isfile(default_calib),
                   "calibrate SmolLM2 GGUF: status 0, FILE." + CALIB + " beside the file",
                   r.describe()):
        return
    t.check("blk.29.ffn_down.weight" in r.stdout and "181 matrices" in r.stdout,
            "calibrate lists the decoder's layers (30 x 6 and the tied head)", r.stdout[:600])

    # ---- f32, int8, w8a8 ---------------------------------------------------------------------
    for p in ("f32", "int8"):
        r = e.run(1, e.job_args(model, "score.h5", f"sc-{p}", extra=SCORE + ["--precision", p]))
        if not t.check(r.rc == 0, f"score {p}: status 0", r.describe()):
            return
    r = e.run(2, e.job_args(model, "score.h5", "sc-w8a8", extra=SCORE + ["--precision", "w8a8"]))
    if not t.check(r.rc == 0, "score w8a8 on 2 ranks (default calibration file): status 0",
                   r.describe()):
        return
    q8 = ppl_ratio(t, "sc-f32", "sc-int8", "int8")
    w8 = ppl_ratio(t, "sc-f32", "sc-w8a8", "w8a8")
    if q8 is not None and w8 is not None:
        print(f"      SmolLM2 perplexity ratio to f32: int8 {q8:.5f}, w8a8 {w8:.5f}")
        t.check(q8 <= 1.02, "int8: perplexity within 2% of f32", f"{q8:.5f}")
        t.check(w8 <= 1.03, "w8a8 (default calibration, percentile 99): perplexity ratio to "
                "f32 <= 1.03 (measured 1.0077)", f"{w8:.5f}")
    r = e.run(1, ["--model", model, "--input", "calib.h5", "--rows", str(half), "--output",
                  "max", "--bos", "always", "--method", "max"], subcommand="calibrate",
              timeout=300)
    cmax = os.path.join("max", os.path.basename(default_calib))
    if t.check(r.rc == 0 and os.path.isfile(cmax), "calibrate --method max: status 0",
               r.describe()):
        r = e.run(2, e.job_args(model, "score.h5", "sc-max", extra=SCORE + [
            "--precision", "w8a8", "--calibration", cmax]))
        if t.check(r.rc == 0, "score w8a8 --method max: status 0", r.describe()):
            wmax = ppl_ratio(t, "sc-f32", "sc-max", "w8a8 --method max")
            if wmax is not None:
                print(f"      SmolLM2 w8a8 --method max perplexity ratio to f32: {wmax:.5f}")
                t.check(wmax <= 1.08, "w8a8 --method max: perplexity ratio to f32 <= 1.08 "
                        "(measured 1.0396)", f"{wmax:.5f}")
            # the largest input seen: a block of a scored token rarely goes beyond it
            fr = [json.load(open(f"{d}/report.json")).get("w8a8_blocks", {}).get(
                "own_step_fraction", -1) for d in ("sc-max", "sc-w8a8")]
            t.check(0 <= fr[0] < 0.03 and fr[0] < fr[1] < 0.6,
                    "report.json w8a8_blocks: under 3% beyond their range with --method max "
                    "(measured 1.5%), more (under 60%) with percentile 99 (measured 27%)", str(fr))
    a, b = token_logprobs("sc-int8"), token_logprobs("sc-w8a8")
    m = np.isfinite(a) & np.isfinite(b)
    t.check(np.abs(a - b)[m].max() > 1e-3, "w8a8: not the int8 result (the static scales are used)",
            f"max |delta| {np.abs(a - b)[m].max():.3g}")
    static = [l["name"] for l in e.report_layers("sc-w8a8")
              if l.get("activations", "").startswith("static")]
    t.check(len(static) == 181 and all(n.startswith("blk.") for n in static[1:]) and
            static[0] == "token_embd.weight",
            "report.json: the 180 decoder matrices and the tied LM head (quantized under the "
            "table's name) have static activation scales", json.dumps(static[:4]))

    # ---- the tied LM head reads the table's ranges -----------------------------------------------
    # (the head is a view of the table made at load; the ranges arrive later): with the head's
    # ranges 0 its scored tokens take per-row steps, so every other layer as before, the scores
    # must move
    e.rewrite_calibration(default_calib, "head0.safetensors", zero="token_embd.weight")
    r = e.run(2, e.job_args(model, "score.h5", "sc-head0", extra=SCORE + [
        "--precision", "w8a8", "--calibration", "head0.safetensors"]))
    if t.check(r.rc == 0, "score w8a8 with the head's ranges 0: status 0", r.describe()):
        h0 = token_logprobs("sc-head0")
        mk = np.isfinite(h0) & np.isfinite(b)
        t.check(np.abs(h0 - b)[mk].max() > 1e-4,
                "w8a8: the tied LM head uses its calibrated ranges (zeroing them alone moves "
                "the scores)", f"max |delta| {np.abs(h0 - b)[mk].max():.3g}")

    # ---- every range 0: per-row scales ---------------------------------------------------------
    e.rewrite_calibration(default_calib, "zero.safetensors", zero=True)
    r = e.run(1, e.job_args(model, "score.h5", "sc-zero", extra=SCORE + [
        "--precision", "w8a8", "--calibration", "zero.safetensors"]))
    if t.check(r.rc == 0, "score w8a8 with zero ranges: status 0", r.describe()):
        z = token_logprobs("sc-zero")
        zr = ppl_ratio(t, "sc-f32", "sc-zero", "w8a8 with zero ranges")
        if zr is not None:
            print(f"      SmolLM2 perplexity ratio to f32, w8a8 with per-row scales: {zr:.5f}")
        # every block quantized per row, as decode steps are: close to f32, and neither the
        # static result nor int8's (whose scored tokens stay f32)
        t.check(zr is not None and zr <= 1.02 and not np.array_equal(z, b, equal_nan=True)
                and not np.array_equal(z, a, equal_nan=True),
                "zero ranges: per-row scales (perplexity within 2% of f32, not the static result)",
                f"ratio {zr}")
        # --calibration dynamic: the same arithmetic with no file
        r = e.run(1, e.job_args(model, "score.h5", "sc-dyn", extra=SCORE + [
            "--precision", "w8a8", "--calibration", "dynamic"]))
        if t.check(r.rc == 0, "score w8a8 --calibration dynamic: status 0", r.describe()):
            t.check(np.array_equal(token_logprobs("sc-dyn"), z, equal_nan=True),
                    "dynamic: the bits of the zero-range file (every block its own scale)")

    # ---- refusals ------------------------------------------------------------------------------
    gone = "blk.3.ffn_down.weight"
    e.rewrite_calibration(default_calib, "short.safetensors", drop=gone)
    r = e.run(1, e.job_args(model, "score.h5", "bad-short", extra=SCORE + [
        "--precision", "w8a8", "--calibration", "short.safetensors"]))
    t.check(r.rc == 3 and "short.safetensors" in r.stderr and gone in r.stderr,
            "w8a8 with a layer missing: status 3, names the file and the tensor", r.describe())
    t.check(not os.path.exists("bad-short/predictions.h5"), "no output from a refused job")
    return model


def tiny_mistral(t, tmp, smol):
    want = e.tiny_llama_goldens("mistral", "tiny.h5")
    # the checkpoint stays in the source tree: its calibration file goes to the test folder
    r = e.run(1, ["--model", TINY, "--input", "tiny.h5", "--input-dataset", "input_ids",
                  "--rows", "2", "--output", "tiny-cal"], subcommand="calibrate", timeout=300)
    cal = os.path.join("tiny-cal", CALIB)
    if not t.check(r.rc == 0 and os.path.isfile(cal) and "lm_head.weight" in r.stdout,
                   "calibrate tiny mistral: status 0, the untied LM head recorded", r.describe()):
        return
    for tp in (1, 2):
        out = f"tiny-w8a8-tp{tp}"
        r = e.run(2, e.job_args(TINY, "tiny.h5", out, dataset="input_ids", tp=tp, extra=[
            "--task", "score", "--precision", "w8a8", "--calibration", cal]))
        if t.check(r.rc == 0, f"tiny mistral w8a8 tp{tp}: status 0", r.describe()):
            with h5py.File(f"{out}/predictions.h5", "r") as f:
                got = f["sum_logprob"][()].astype(np.float64)
            rel = np.abs(got - want) / np.abs(want)
            print(f"      tiny mistral w8a8 tp{tp}: |sum logprob error| / |sum| max {rel.max():.2e}")
            t.check(np.all(rel <= 0.02), f"tiny mistral w8a8 tp{tp}: each row's sum of "
                    "log-probabilities within 2% of transformers'", f"got {got}, want {want}")
    if smol:
        r = e.run(1, e.job_args(smol, "score.h5", "bad-other", extra=SCORE + [
            "--precision", "w8a8", "--calibration", cal]))
        t.check(r.rc == 3 and cal in r.stderr and "another model" in r.stderr,
                "w8a8 with another model's calibration file: status 3", r.describe())


def body(t, tmp):
    smol = smollm2(t, tmp)
    tiny_mistral(t, tmp, smol)


if __name__ == "__main__":
    e.main("test_w8a8_llama", body)
