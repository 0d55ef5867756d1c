"""test_outputs.py — what a job's output directory promises, end to end under mpirun:

  - ownership: `--output` holding another job's output (a generate job's, then an embed job
    into it) is refused with exit 3 naming both models and tasks, and predictions.h5 is left
    byte for byte; `--restart` replaces it. A non-empty directory that is not a shardline
    output (holding notes.txt) is refused and nothing is written into it. A start that fails
    (corrupt weights) creates no output directory at all;
  - copies: predictions.h5 copied away from parts/ reads NaN (its virtual datasets find no
    source) and `shardline inspect` warns, naming the missing part file; `shardline merge
    OUT --consolidate` makes a self-contained file whose copy reads the same values as the
    original, with no warning;
  - self-description: predictions.h5's root attributes name the model, its fingerprint, the
    task, the options that change results and the inputs; /text and /finish_reason are
    variable-length UTF-8 strings; report.json has load and tokenize seconds, peak memory per
    rank, and generate's prompt_tokens/generated_tokens equal the sums of /n_prompt_tokens and
    /n_tokens; truncated rows are said on the console; `status` prints report.json's rows/s;
  - progress: with SL_PROGRESS_SECONDS=0.2 a one-unit generate job prints progress lines
    counting rows computed before any unit is committed;
  - inspect: every model family the runner accepts (mlp, BERT embedder, BERT classifier,
    LLaMA-family directory, GGUF) inspects with exit 0 and prints its sizes from config.json.

Run: ctest -R test_outputs (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import hashlib
import json
import os
import re
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = e.SOURCE_DIR
VLEN = h5py.string_dtype("utf-8")
PROMPTS = ["The capital of France is", "Once upon a time", "def add(a, b):", "Water boils at",
           "My favourite colour is", "In 1492,"]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def attr(f, k):
    v = f.attrs.get(k)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in v]
    return v


def check_ownership(t, tmp, smol, minilm, gen_out):
    before = digest(os.path.join(gen_out, "predictions.h5"))
    r = e.run(2, e.job_args(minilm, "prompts.h5", gen_out, extra=["--task", "embed"]))
    t.check(r.rc == 3, "embed job into the generate job's output: exit 3", r.describe())
    t.check("another job" in r.stderr and "generate" in r.stderr and "embed" in r.stderr
            and os.path.basename(smol) in r.stderr,
            "the refusal names the other job's model and task and this job's", r.stderr[-800:])
    t.check(digest(os.path.join(gen_out, "predictions.h5")) == before,
            "the generate job's predictions.h5 is left byte for byte")
    r = e.run(2, e.job_args(smol, "prompts.h5", gen_out, unit_rows=3,
                            extra=["--task", "generate", "--max-new-tokens", "8"]))
    t.check(r.rc == 0, "the same generate job into its own output: exit 0", r.describe())
    copy = os.path.join(tmp, "gen-copy")
    shutil.copytree(gen_out, copy)
    r = e.run(2, e.job_args(minilm, "prompts.h5", copy, extra=["--task", "embed", "--restart"]))
    if t.check(r.rc == 0, "embed job with --restart into it: exit 0", r.describe()):
        with h5py.File(os.path.join(copy, "predictions.h5"), "r") as f:
            t.check("embeddings" in f and attr(f, "task") == "embed",
                    "--restart replaced the output with the embed job's", list(f))

    notes = os.path.join(tmp, "notes")
    os.makedirs(notes)
    with open(os.path.join(notes, "notes.txt"), "w") as f:
        f.write("mine\n")
    r = e.run(2, e.job_args(minilm, "prompts.h5", notes, extra=["--task", "embed"]))
    t.check(r.rc == 3 and "notes.txt" in r.stderr and "not a shardline output" in r.stderr,
            "a directory holding notes.txt: exit 3, naming the file", r.describe())
    t.equal(sorted(os.listdir(notes)), ["notes.txt"], "nothing written into that directory")
    r = e.run(2, e.job_args(minilm, "prompts.h5", notes, extra=["--task", "embed", "--restart"]))
    t.check(r.rc == 3, "--restart does not make it a shardline output: exit 3", r.describe())

    # a start that fails at load time leaves no output directory behind
    bad = os.path.join(tmp, "bad-mlp")
    e.make_model(bad, [4, 8, 2])
    st = os.path.join(bad, "model.safetensors")
    with open(st, "r+b") as f:
        f.truncate(os.path.getsize(st) - 16)
    e.make_inputs(os.path.join(tmp, "feat"), [20], 4)
    out = os.path.join(tmp, "never")
    r = e.run(2, e.job_args(bad, os.path.join(tmp, "feat", "*.h5"), out))
    t.check(r.rc == 3, "a model with truncated weights: exit 3", r.describe())
    t.check(not os.path.exists(out), "the failed start created no output directory",
            str(os.listdir(out)) if os.path.isdir(out) else "")


def check_copies(t, tmp, gen_out):
    away = os.path.join(tmp, "away")
    os.makedirs(away)
    shutil.copy(os.path.join(gen_out, "predictions.h5"), away)
    with h5py.File(os.path.join(away, "predictions.h5"), "r") as f:
        n = f["n_tokens"][()]
        text = [s.decode() for s in f["text"][()]]
    t.check(np.all(n == -1) and all(s == "" for s in text),
            "a copy without parts/ reads fill values (-1, empty text)", repr((n, text[:2])))
    r = e.run_direct(["inspect", os.path.join(away, "predictions.h5")])
    t.check(r.rc == 0 and "missing" in r.stderr and "rows-000000000000-000000000003.h5" in r.stderr
            and "--consolidate" in r.stderr,
            "inspect of the copy warns that its part files are missing", r.describe())
    r = e.run_direct(["inspect", os.path.join(gen_out, "predictions.h5")])
    t.check(r.rc == 0 and "missing" not in r.stderr, "inspect in place: no warning", r.describe())

    with h5py.File(os.path.join(gen_out, "predictions.h5"), "r") as f:
        orig = {k: f[k][()] for k in ("tokens", "n_tokens", "text", "finish_reason")}
    r = e.run_direct(["merge", gen_out, "--consolidate"])
    if not t.check(r.rc == 0, "merge --consolidate: exit 0", r.describe()):
        return
    shutil.copy(os.path.join(gen_out, "predictions.h5"), os.path.join(away, "self.h5"))
    with h5py.File(os.path.join(away, "self.h5"), "r") as f:
        same = all(np.array_equal(f[k][()], v) for k, v in orig.items())
        virtual = [k for k in f if f[k].is_virtual]
        has_attrs = attr(f, "task") == "generate" and attr(f, "model_fingerprint")
    t.check(same, "the consolidated copy reads the same values away from parts/")
    t.check(not virtual and has_attrs, "it has no virtual dataset and keeps the attributes", virtual)
    r = e.run_direct(["inspect", os.path.join(away, "self.h5")])
    t.check(r.rc == 0 and "missing" not in r.stderr, "inspect of the consolidated copy: no warning",
            r.describe())


def check_description(t, tmp, smol, gen_out):
    with h5py.File(os.path.join(gen_out, "predictions.h5"), "r") as f:
        a = {k: attr(f, k) for k in f.attrs}
        text_dt = h5py.check_string_dtype(f["text"].dtype)
        fin_dt = h5py.check_string_dtype(f["finish_reason"].dtype)
        n_prompt = int(f["n_prompt_tokens"][()].sum())
        n_gen = int(f["n_tokens"][()].sum())
        texts = f["text"].asstr()[()]
    man = e.load_json(os.path.join(gen_out, "manifest.json"))
    fp = man["model"]["fingerprint"]
    t.check(a.get("model") == os.path.realpath(smol) and a.get("model_fingerprint") == fp
            and a.get("model_type") == "llama" and a.get("task") == "generate",
            "root attributes: model path, fingerprint, type and task", repr(a))
    t.check(a.get("max_new_tokens") == 8 and a.get("temperature") == 0 and a.get("bos") == "auto"
            and a.get("precision") == man["options"]["precision"] and a.get("seed") == 0,
            "root attributes: the options that change results", repr(a))
    t.check(a.get("inputs") == [os.path.join(tmp, "prompts.h5")] or
            a.get("inputs") == ["prompts.h5"], "root attributes: the input files", repr(a))
    t.check(a.get("shardline_version"), "root attributes: the shardline version")
    t.check(text_dt is not None and text_dt.length is None and text_dt.encoding == "utf-8"
            and fin_dt is not None and fin_dt.length is None,
            "/text and /finish_reason are variable-length UTF-8 strings", repr((text_dt, fin_dt)))
    t.check(all(isinstance(s, str) for s in texts), "h5py's asstr() reads /text as str")
    rep = e.load_json(os.path.join(gen_out, "report.json")) or {}
    t.equal((rep.get("prompt_tokens"), rep.get("generated_tokens")), (n_prompt, n_gen),
            "report.json prompt/generated tokens = sums of /n_prompt_tokens and /n_tokens")
    t.equal(rep.get("tokens"), n_prompt + n_gen, "report.json tokens = prompt + generated")
    per = rep.get("per_rank") or []
    t.check(len(per) == 2 and all(p.get("peak_memory_bytes", 0) > 1e7 and
                                  p.get("load_seconds", 0) > 0 for p in per),
            "report.json: peak memory and load seconds for every rank", json.dumps(per)[:600])
    t.check(rep.get("tokenize_seconds", 0) > 0, "report.json: tokenize seconds",
            json.dumps(rep)[:600])
    r = e.run_direct(["status", gen_out])
    m = re.search(r"throughput\s+([\d.]+) rows/s", r.stdout)
    t.check(m is not None and abs(float(m.group(1)) - rep.get("rows_per_second", -1)) <= 0.05 +
            0.001 * rep.get("rows_per_second", 0),
            "status prints report.json's rows/s", r.stdout + json.dumps(rep.get("rows_per_second")))

    # truncation is said on the console
    out = os.path.join(tmp, "trunc")
    r = e.run(1, e.job_args(smol, "prompts.h5", out, extra=["--task", "score", "--max-length", "4"]))
    t.check(r.rc == 0 and re.search(r"\d+ row\(s\) were longer than --max-length 4", r.stderr),
            "score with --max-length 4: the console says rows were truncated", r.describe())


def check_progress(t, tmp, smol):
    out = os.path.join(tmp, "progress")
    e.write_text(os.path.join(tmp, "many.h5"), PROMPTS * 3)
    r = e.run(1, e.job_args(smol, "many.h5", out, extra=["--task", "generate", "--max-new-tokens",
                                                         "24", "--batch-size", "2"]),
              env={"SL_PROGRESS_SECONDS": "0.2"})
    if not t.check(r.rc == 0, "one-unit generate job: exit 0", r.describe()):
        return
    lines = re.findall(r"progress (\d+)/(\d+) rows computed .*?, (\d+) committed", r.stderr)
    inside = [ln for ln in lines if 0 < int(ln[0]) < int(ln[1]) and ln[2] == "0"]
    t.check(inside, "progress counts rows computed inside the unit, before its commit",
            r.stderr[-1500:])
    done = [ln for ln in r.stderr.splitlines() if "shardline: done:" in ln]
    t.equal(len(done), 1, "the final line is printed once")


def check_inspect(t, minilm, smol):
    cases = []
    ex = os.path.join(SRC, "examples", "mlp")
    cfg = json.load(open(os.path.join(ex, "config.json")))
    cases.append(("mlp", ex, [str(d) for d in cfg["dims"]], 2))
    if minilm:
        c = json.load(open(os.path.join(minilm, "config.json")))
        cases.append(("bert embedder", minilm, [str(c["hidden_size"]), str(c["num_hidden_layers"]),
                                                "embed", "mean"], 2))
    cls = os.path.join(SRC, "tests", "reference", "tiny_bert_cls")
    c = json.load(open(os.path.join(cls, "config.json")))
    labels = list((c.get("id2label") or {}).values())
    cases.append(("bert classifier", cls, [str(c["hidden_size"]), "classify"] + labels[:2], 2))
    llama_dir = os.path.join(SRC, "tests", "reference", "tiny_llama", "llama3_scaled")
    c = json.load(open(os.path.join(llama_dir, "config.json")))
    cases.append(("llama directory", llama_dir, [str(c["hidden_size"]), str(c["vocab_size"])], 2))
    if smol:
        cases.append(("gguf", smol, ["576", "49152"], 3))  # 9 heads: --tp 3
    for label, path, want, tp in cases:
        r = e.run_direct(["inspect", path])
        missing = [w for w in want if not re.search(r"\b" + re.escape(w) + r"\b", r.stdout)]
        t.check(r.rc == 0 and not missing, f"inspect {label}: exit 0, prints {want}",
                f"missing {missing}; " + r.describe())
        r = e.run_direct(["inspect", "--tp", str(tp), path])
        t.check(r.rc == 0, f"inspect --tp {tp} {label}: exit 0", r.describe())


def body(t, tmp):
    minilm, smol = e.installed("minilm"), e.installed("smollm2")
    if not t.check(minilm and smol, "all-MiniLM-L6-v2 and SmolLM2 are installed",
                   "run scripts/install-models.sh"):
        return
    e.write_text(os.path.join(tmp, "prompts.h5"), PROMPTS)
    gen_out = os.path.join(tmp, "gen")
    r = e.run(2, e.job_args(smol, "prompts.h5", gen_out, unit_rows=3,
                            extra=["--task", "generate", "--max-new-tokens", "8"]))
    if t.check(r.rc == 0, "generate job: exit 0", r.describe()):
        check_description(t, tmp, smol, gen_out)
        check_ownership(t, tmp, smol, minilm, gen_out)
        check_copies(t, tmp, gen_out)
    check_progress(t, tmp, smol)
    check_inspect(t, minilm, smol)


if __name__ == "__main__":
    e.main("outputs", body)
