"""test_chat_e2e.py — `--chat-template` and `--system` of the decoder tasks end to end, on the
real SmolLM2-135M-Instruct GGUF against transformers (tests/reference/make_chat_goldens.py:
apply_chat_template(messages, add_generation_prompt=True) with jinja2, then greedy generate):

  - --task generate --chat-template auto: each row becomes the user message of SmolLM2's
    template (which adds its default system message); the prompt has as many tokens as
    transformers' templated ids and the greedy tokens equal transformers' (up to the EOS
    <|im_end|> where shardline stops); --system TEXT replaces the default system message
    (one job per system text, as --system is per job), again equal to transformers';
  - --task score --prompt-dataset P --chat-template auto --token-logprobs: /token_ids start with
    the templated prompt's ids exactly as transformers' apply_chat_template(tokenize=True)
    gives them, followed by the continuation (the only scored part); --bos always keeps them
    (the template already starts with the BOS <|im_start|>), --bos never drops that BOS;
  - refusals: a model directory whose tokenizer_config.json holds an unknown (Gemma-style) or a
    LLaMA-3.1-style template (exit 3, naming the file, the supported forms and
    --chat-template none); a Mistral template with --system (exit 3); score without
    --prompt-dataset (exit 3); --system without --chat-template (exit 3); an unknown
    --chat-template value (exit 2).

Run: ctest -R test_chat_e2e (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402
from test_llama_e2e import strs, write_text  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
REF = os.path.join(SRC, "tests", "reference")
GOLD = os.path.join(REF, "goldens", "chat_goldens.h5")


def check_greedy(t, out, ref, gap, eos, what):
    with h5py.File(f"{out}/predictions.h5", "r") as f:
        toks, ntok = f["tokens"][()], f["n_tokens"][()]
        fin = [s.decode() for s in f["finish_reason"][()]]
    for i in range(len(ref)):
        n = int(ntok[i])
        mine, want = toks[i, :n], ref[i, :n]
        ok = n > 0 and np.array_equal(mine, want)
        ok = ok and (fin[i] == "eos" and int(want[-1]) == eos or
                     fin[i] == "length" and n == ref.shape[1] and eos not in want.tolist())
        k = int(np.argmax(mine != want)) if n and not np.array_equal(mine, want) else n
        t.check(ok, f"{what} row {i}: greedy tokens equal transformers' ({n} tokens, {fin[i]})",
                f"got {mine.tolist()}\nref {ref[i].tolist()}\nfirst difference at {k}, "
                f"transformers' logit gap there {gap[i, min(k, gap.shape[1] - 1)]:.4f}")


def body(t, tmp):
    model = e.installed("smollm2")
    if not t.check(model is not None and os.path.isfile(model), "SmolLM2 GGUF is installed",
                   "run scripts/install-models.sh"):
        return
    g = h5py.File(GOLD, "r")
    gg = g["smollm2/greedy"]
    systems, users = strs(gg["greedy_system"]), strs(gg["greedy_user"])
    ref, gap, eos = gg["greedy_ids"][()], gg["greedy_gap"][()], int(gg.attrs["eos_id"])
    N = ref.shape[1]

    # ---- generate: the template's default system message, then each --system ----------------
    jobs = {}
    for i, s in enumerate(systems):
        jobs.setdefault(s, []).append(i)
    for n, (s, rows) in enumerate(jobs.items()):
        name = f"gen{n}"  # gen0: no --system
        write_text(f"{name}.h5", text=[users[i] for i in rows])
        # --precision f32: transformers' reference dequantises the GGUF (the default keeps it
        # quantized, test_llama_e2e measures how far that moves greedy tokens)
        extra = ["--task", "generate", "--chat-template", "auto", "--max-new-tokens", str(N),
                 "--precision", "f32"]
        extra += ["--system", s] if s else []
        r = e.run(1, e.job_args(model, f"{name}.h5", name, batch=4, extra=extra), timeout=600)
        what = f"generate --chat-template auto{' --system ' + repr(s) if s else ''}"
        if t.check(r.rc == 0, f"{what}: status 0", r.describe()):
            check_greedy(t, name, ref[rows], gap[rows], eos, what)
    # the prompt length: the no-system case of "What is the capital of France?" is case 0
    users_sm, sys_sm = strs(g["smollm2/user"]), strs(g["smollm2/system"])
    ids_sm, len_sm = g["smollm2/ids"][()], g["smollm2/lengths"][()]
    k = [i for i in range(len(users_sm)) if users_sm[i] == users[0] and sys_sm[i] == ""][0]
    with h5py.File("gen0/predictions.h5", "r") as f:
        npt = int(f["n_prompt_tokens"][0])
    t.check(npt == int(len_sm[k]), "generate: the templated prompt has as many tokens as "
            "transformers' apply_chat_template ids", f"{npt} vs {len_sm[k]}")

    # ---- score: templated prompt + scored reply ---------------------------------------------
    cases = [i for i in range(len(users_sm)) if sys_sm[i] == ""]
    conts = [" Paris is the capital.", " Waves roll in.", " Special tokens.", " Guten Morgen!",
             " Yes."][: len(cases)]
    write_text("pairs.h5", prompt=[users_sm[i] for i in cases], text=conts)
    for bos in ("auto", "always", "never"):
        out = f"score-{bos}"
        r = e.run(1, e.job_args(model, "pairs.h5", out,
                                extra=["--task", "score", "--prompt-dataset", "prompt",
                                       "--chat-template", "auto", "--token-logprobs", "--bos",
                                       bos]), timeout=600)
        if not t.check(r.rc == 0, f"score --chat-template auto --bos {bos}: status 0",
                       r.describe()):
            continue
        with h5py.File(f"{out}/predictions.h5", "r") as f:
            tid, ntok, lp = f["token_ids"][()], f["n_tokens"][()], f["token_logprobs"][()]
        ok_ids, ok_scored = True, True
        for j, i in enumerate(cases):
            want = ids_sm[i, : len_sm[i]].tolist()
            if bos == "never":
                want = want[1:]
            m = len(want)
            ok_ids &= tid[j, :m].tolist() == want
            total = int(np.sum(tid[j] >= 0))
            ok_scored &= int(ntok[j]) == total - m and np.isnan(lp[j, :m]).all() and \
                not np.isnan(lp[j, m:total]).any()
        t.check(ok_ids, f"score --bos {bos}: /token_ids start with transformers' templated "
                "prompt ids" + (" minus its BOS" if bos == "never" else ""),
                f"row 0 got {tid[0, :int(len_sm[cases[0]]) + 2].tolist()}")
        t.check(ok_scored, f"score --bos {bos}: only the reply after the template's assistant "
                "header is scored", f"n_tokens {ntok.tolist()}")

    # ---- refusals ---------------------------------------------------------------------------
    def tiny_model(name, chat):
        d = os.path.join(tmp, name)
        shutil.copytree(os.path.join(REF, "tiny_llama", "llama3_scaled"), d)
        shutil.copy(os.path.join(REF, "chat_tiny", chat, "tokenizer_config.json"), d)
        return d

    def refused(label, args, status, names):
        r = e.run(1, args, timeout=120)
        t.check(r.rc == status and all(e.stderr_names(r, n) for n in names) and not e.crashed(r),
                f"{label}: exit {status}, the message names {', '.join(names)}", r.describe())

    for chat in ("unknown", "llama31"):
        d = tiny_model(f"model-{chat}", chat)
        refused(f"--chat-template auto with a {chat} template",
                e.job_args(d, "pairs.h5", f"out-{chat}", dataset="prompt",
                           extra=["--task", "generate", "--chat-template", "auto"]), 3,
                [os.path.join(d, "tokenizer_config.json"), "--chat-template none", "chatml",
                 "llama3"])
    d = tiny_model("model-mistral", "mistral")
    refused("--system with a Mistral template",
            e.job_args(d, "pairs.h5", "out-mistral", dataset="prompt",
                       extra=["--task", "generate", "--chat-template", "auto", "--system", "x"]),
            3, ["--system", "mistral"])
    refused("score --chat-template without --prompt-dataset",
            e.job_args(model, "pairs.h5", "out-score", extra=["--task", "score",
                                                             "--chat-template", "auto"]),
            3, ["--chat-template", "--prompt-dataset"])
    refused("--system without --chat-template",
            e.job_args(model, "pairs.h5", "out-sys", dataset="prompt",
                       extra=["--task", "generate", "--system", "hi"]), 3, ["--system"])
    refused("--chat-template jinja",
            e.job_args(model, "pairs.h5", "out-bad", extra=["--chat-template", "jinja"]), 2,
            ["--chat-template 'jinja'", "auto"])
    g.close()


if __name__ == "__main__":
    e.main("test_chat_e2e", body)
