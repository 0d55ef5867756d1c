#!/usr/bin/python3
"""bench_llama.py — prefill (scoring) and decode (generation) tokens/s of shardline against
llama.cpp, on the same GGUF file and the same number of CPU threads.

What it measures (default model: SmolLM2-135M-Instruct Q4_1, the path in
build/models/smollm2.path, installed by scripts/install-models.sh):

 prefill
   - shardline `run --task score --max-length L` (default L = 256) over --score-rows rows of
     real English text (tests/reference/sentences.txt + Debian's fortunes, joined into rows
     long enough that every row is cut to exactly L tokens), default --batch-tokens/--batch-size;
     tokens/s = report.json `tokens` / `compute_seconds` (and over the job: / `seconds`, which
     includes loading and dequantising the model, and over the process's wall time);
   - llama.cpp `llama-bench -p L -n 0 -t T` (one sequence of L tokens per pass; its avg_ts);
   - llama.cpp `llama-perplexity -c L -b B --chunks N` over the same text (B = L x 16: 16
     sequences of L tokens per llama_decode call, logits for every position): the like-for-like
     batch-scoring number; tokens/s = its "prompt eval time" line (and over the process's wall
     time, which includes loading and tokenizing).
 decode
   - shardline `run --task generate --max-new-tokens G --batch-size S` (greedy, default G = 64)
     with S = 1 (--gen1-rows rows, one after the other) and S = each of --parallel (default
     16, 32; as many rows as S, so all of them run concurrently); prompts are short English
     sentences from tests/reference/sentences.txt; generated tokens are counted in
     predictions.h5 (/n_tokens); tokens/s = generated tokens / `compute_seconds`, which also
     includes the prompts' prefill (a few hundred tokens at most);
   - llama.cpp `llama-bench -p 0 -n G -t T` (one sequence; its avg_ts: generation only) and
     `llama-batched-bench -npp P -ntg G -npl 1,S...` (P = the mean prompt length of shardline's
     rows, rounded; one prompt per sequence): generated tokens / (T_PP + T_TG), the same
     definition as shardline's, and S_TG (generation alone) alongside.

Token counts: report.json's `tokens` is the number of token positions that went through the
model: for score, the rows' tokens after truncation (checked here against /token_logprobs: a
row of n tokens has n - 1 finite log-probabilities); for generate, each row's prompt plus its
generated tokens except the last one (which is sampled but need not be fed back; the decoder
may count it); the script checks both and stops if they do not hold. shardline stops a row at EOS, llama.cpp's
benchmarks always generate G tokens: rows that stop early are counted with the tokens they
generated, and the mean per row is printed.

Interleaving: the machine may be shared, so the two programs alternate in rounds (--reps,
default 3): in each round every pair (shardline line, llama.cpp line) runs once, shardline
first on even rounds and llama.cpp first on odd rounds (A B, B A, ...). Each ratio is
shardline / llama.cpp within one round; the table gives medians and min-max over rounds.

Threads: both programs get --threads (default 2): shardline through OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS / BLIS_NUM_THREADS (one rank, no mpirun), llama.cpp through -t.
--also-passive adds, for every shardline line, a second run with OMP_WAIT_POLICY=passive (same
llama.cpp partner): on a machine shared with other jobs, OpenMP threads that spin at barriers
can take the cores from the thread that has work, and decoding (many small parallel regions
per token) is the most exposed.

Precisions: every shardline line runs once per --precisions entry (default "auto,f32", in
that order, one after the other within a round, with the same llama.cpp partner):
  - auto (shardline's default for a GGUF): the Q8_0/Q4_1 matrices stay quantized; prompt tokens
    (prefill, scoring) meet chunks of them dequantised to f32 in the BLAS GEMM, decode steps
    quantize their activations to int8 per 32-block for integer dot products with the blocks
    (AVX-512 VNNI / AVX2), as llama.cpp does with Q8_1 activations;
  - w8a8-dyn (`--precision w8a8 --calibration dynamic`): the matrices requantized to Q8_0 on
    load and every row, prompt tokens too, quantized to int8 per 32-block for the packed
    integer GEMM, as llama.cpp computes prompts;
  - f32: the weights are dequantised to f32 when the model loads (about 6x the bytes llama.cpp
    reads per token) and every GEMM runs in f32 in BLIS.

llama.cpp: pass the directory of an existing CPU build with --llama-cpp DIR (DIR/bin or
DIR/build/bin holding llama-bench, llama-batched-bench and llama-perplexity). To get one, clone
https://github.com/ggml-org/llama.cpp, configure it with CMake (Release, -DGGML_NATIVE=ON, no
GPU backends) and build those three targets; the commit is printed from the tools' own build
info.

Run (from the repository root):
    /usr/bin/python3 bench/bench_llama.py --llama-cpp /path/to/llama.cpp/build \\
        --shardline build/shardline
Results are printed only; record them by hand in bench/RESULTS.md. Work files go to --work
(default build/bench-work/llama).
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORTUNES = "/usr/share/games/fortunes"


def die(msg):
    print(f"bench_llama: {msg}", file=sys.stderr)
    sys.exit(1)


def run(cmd, env=None, cwd=None):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        die(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r, wall


# ---- texts ---------------------------------------------------------------------------------

def reference_sentences():
    """Plain English lines of tests/reference/sentences.txt (no escapes, ASCII)."""
    out = []
    with open(os.path.join(ROOT, "tests", "reference", "sentences.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#") or "\\" in line or not line.isascii():
                continue
            out.append(line)
    return out


def fortunes():
    out = []
    for name in ("fortunes", "literature", "riddles"):
        path = os.path.join(FORTUNES, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                out += [e.strip() for e in re.split(r"^%$", f.read(), flags=re.M) if e.strip()]
    return out


def score_rows(n, chars, seed):
    """n rows of at least `chars` characters each: texts joined with blank lines."""
    texts = reference_sentences() + fortunes()
    random.Random(seed).shuffle(texts)
    rows, cur, i = [], [], 0
    while len(rows) < n:
        cur.append(texts[i % len(texts)])
        i += 1
        if sum(len(t) + 2 for t in cur) >= chars:
            rows.append("\n\n".join(cur))
            cur = []
    return rows


def gen_prompts(n, seed):
    s = [t for t in reference_sentences() if 30 <= len(t) <= 120 and t[-1] in ".?!"]
    random.Random(seed).shuffle(s)
    return [s[i % len(s)] for i in range(n)]


def write_h5(path, texts):
    import h5py
    import numpy as np
    with h5py.File(path, "w") as f:
        f.create_dataset("text", data=np.array(texts, dtype=h5py.string_dtype()))


# ---- shardline -----------------------------------------------------------------------------

def sl_env(threads, passive):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[k] = str(threads)
    if passive:
        env["OMP_WAIT_POLICY"] = "passive"
    return env


def shardline(args, h5, out, task, extra, passive=False, precision="auto"):
    # w8a8-dyn: w8a8 with --calibration dynamic (every row int8, no calibration file)
    prec = (["--precision", "w8a8", "--calibration", "dynamic"] if precision == "w8a8-dyn"
            else ["--precision", precision])
    cmd = [args.shardline, "run", "--model", args.model, "--input", h5, "--input-dataset", "text",
           "--output", out, "--task", task, "--device", "cpu", "--restart", "--quiet"] + prec + extra
    _, wall = run(cmd, env=sl_env(args.threads, passive))
    if passive:
        cmd = ["OMP_WAIT_POLICY=passive"] + cmd
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    if not rep.get("complete") or rep.get("failed_rows"):
        die(f"{out}: incomplete or failed rows: {rep}")
    return rep, wall, " ".join(cmd)


def sl_score(args, h5, out, passive=False, precision="auto"):
    rep, wall, cmd = shardline(args, h5, out, "score",
                               ["--max-length", str(args.score_len), "--token-logprobs"], passive,
                               precision)
    import h5py
    import numpy as np
    with h5py.File(os.path.join(out, "predictions.h5")) as f:
        lp = f["token_logprobs"][...]
    lens = np.isfinite(lp).sum(axis=1) + 1
    if int(lens.sum()) != int(rep["tokens"]):
        die(f"score: report.json tokens {rep['tokens']} != tokens from /token_logprobs {lens.sum()}")
    c = rep["compute_seconds"]
    return {"tok": rep["tokens"], "rate": rep["tokens"] / c, "job_rate": rep["tokens"] / rep["seconds"],
            "wall_rate": rep["tokens"] / wall, "compute": c, "gemm": rep.get("gemm_seconds", 0.0),
            "gemm_gflop": rep.get("gemm_gflop", 0.0), "job": rep["seconds"], "wall": wall,
            "truncated": rep["truncated_rows"], "rows": rep["rows"], "device": rep["device"],
            "cmd": cmd}


def sl_generate(args, h5, out, slots, passive=False, precision="auto"):
    rep, wall, cmd = shardline(args, h5, out, "generate",
                               ["--max-new-tokens", str(args.max_new), "--batch-size", str(slots)],
                               passive, precision)
    import h5py
    with h5py.File(os.path.join(out, "predictions.h5")) as f:
        ntok = [int(x) for x in f["n_tokens"][...]]
        nprompt = [int(x) for x in f["n_prompt_tokens"][...]]
        fin = [x.decode() if isinstance(x, bytes) else str(x) for x in f["finish_reason"][...]]
    # every prompt token and every generated token but the last is fed; the last one may be fed
    # too (the decoder counts it for rows that stop at the length limit)
    fed_min = sum(nprompt) + sum(max(n - 1, 0) for n in ntok)
    if not fed_min <= int(rep["tokens"]) <= sum(nprompt) + sum(ntok):
        die(f"generate: report.json tokens {rep['tokens']} not within prompts {sum(nprompt)} + "
            f"generated {sum(ntok)} (- rows {len(ntok)})")
    gen, c = sum(ntok), rep["compute_seconds"]
    return {"gen": gen, "rate": gen / c, "job_rate": gen / rep["seconds"], "wall_rate": gen / wall,
            "compute": c, "gemm": rep.get("gemm_seconds", 0.0), "job": rep["seconds"], "wall": wall,
            "prompt": sum(nprompt), "rows": len(ntok), "eos": sum(f == "eos" for f in fin),
            "mean_prompt": sum(nprompt) / len(nprompt), "cmd": cmd}


# ---- llama.cpp -----------------------------------------------------------------------------

def llama_tool(args, name):
    for d in (os.path.join(args.llama_cpp, "bin"), os.path.join(args.llama_cpp, "build", "bin"),
              args.llama_cpp):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    die(f"{name} not found under {args.llama_cpp} (bin/ or build/bin/)")


def ll_bench(args, p, n):
    cmd = [llama_tool(args, "llama-bench"), "-m", args.model, "-p", str(p), "-n", str(n),
           "-t", str(args.threads), "-r", str(args.llama_reps), "-o", "json"]
    r, wall = run(cmd)
    res = json.loads(r.stdout)[0]
    return {"rate": res["avg_ts"], "sd": res["stddev_ts"], "wall": wall, "cmd": " ".join(cmd),
            "commit": res.get("build_commit"), "build": res.get("build_number"),
            "cpu": res.get("cpu_info"), "type": res.get("model_type")}


def ll_perplexity(args, text_path, chunks):
    cmd = [llama_tool(args, "llama-perplexity"), "-m", args.model, "-f", text_path,
           "-c", str(args.score_len), "-b", str(args.score_len * 16), "--chunks", str(chunks),
           "-t", str(args.threads)]
    r, wall = run(cmd)
    log = r.stdout + r.stderr
    m = re.search(r"prompt eval time\s*=\s*([\d.]+) ms /\s*(\d+) tokens", log)
    if not m:
        die(f"llama-perplexity: no 'prompt eval time' line\n{log[-3000:]}")
    ms, tok = float(m.group(1)), int(m.group(2))
    if tok != chunks * args.score_len:
        die(f"llama-perplexity evaluated {tok} tokens, expected {chunks} x {args.score_len}")
    ppl = re.search(r"Final estimate: PPL = ([\d.]+)", log)
    sysinfo = re.search(r"system_info: .*", log)
    return {"tok": tok, "rate": tok / (ms / 1000), "wall_rate": tok / wall, "wall": wall,
            "ppl": float(ppl.group(1)) if ppl else float("nan"), "cmd": " ".join(cmd),
            "sysinfo": sysinfo.group(0) if sysinfo else ""}


def ll_batched(args, npp, npl):
    ctx = max(npl) * (npp + args.max_new)
    cmd = [llama_tool(args, "llama-batched-bench"), "-m", args.model, "-c", str(ctx),
           "-b", "2048", "-ub", "512", "-npp", str(npp), "-ntg", str(args.max_new),
           "-npl", ",".join(map(str, npl)), "-t", str(args.threads), "--output-format", "jsonl"]
    r, wall = run(cmd)
    out = {}
    for line in (r.stdout + "\n" + r.stderr).splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            j = json.loads(line)
            pl = j["pl"]
            out[pl] = {"rate": pl * j["tg"] / j["t"], "tg_rate": j["speed_tg"],
                       "pp_rate": j["speed_pp"], "t": j["t"]}
    if sorted(out) != sorted(npl):
        die(f"llama-batched-bench: got results for {sorted(out)}, wanted {npl}\n{r.stdout[-2000:]}")
    return out, " ".join(cmd)


# ---- main ----------------------------------------------------------------------------------

def med(xs):
    return statistics.median(xs)


def spread(xs):
    return f"{min(xs):.2f}-{max(xs):.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp build directory")
    ap.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    ap.add_argument("--model", default=None, help="GGUF file (default: build/models/smollm2.path)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--llama-reps", type=int, default=2, help="llama-bench -r per round")
    ap.add_argument("--score-rows", type=int, default=16)
    ap.add_argument("--score-len", type=int, default=256)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--gen1-rows", type=int, default=1, help="rows generated with --batch-size 1")
    ap.add_argument("--parallel", default="16,32", help="concurrent sequences (comma list)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--also-passive", action="store_true",
                    help="also run every shardline line with OMP_WAIT_POLICY=passive (right after "
                         "the default one, same llama.cpp partner)")
    ap.add_argument("--precisions", default="auto,f32",
                    help="shardline --precision values, each a set of shardline lines (comma "
                         "list)")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench-work", "llama"))
    args = ap.parse_args()
    if args.model is None:
        with open(os.path.join(ROOT, "build", "models", "smollm2.path")) as f:
            args.model = f.read().strip()
    args.shardline = os.path.abspath(args.shardline)
    par = [int(x) for x in args.parallel.split(",") if x]
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()
    print("date:", time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()))
    print("load average at start:", open("/proc/loadavg").read().strip())

    # inputs: ~5.5 characters per token is safely above L tokens per row for this text
    rows = score_rows(args.score_rows, args.score_len * 6, args.seed)
    score_h5 = os.path.join(args.work, "score.h5")
    write_h5(score_h5, rows)
    text_path = os.path.join(args.work, "score.txt")
    with open(text_path, "w") as f:
        f.write("\n\n".join(rows) + "\n")
    gen_h5 = {}
    for s in [1] + par:
        n = args.gen1_rows if s == 1 else s
        gen_h5[s] = os.path.join(args.work, f"gen-{n}.h5")
        write_h5(gen_h5[s], gen_prompts(n, args.seed))

    # one variant per precision (and passive wait policy): (key suffix, passive, precision)
    variants = [(f"_{prec}" + ("_p" if pas else ""), pas, prec)
                for prec in args.precisions.split(",") if prec
                for pas in ([False, True] if args.also_passive else [False])]
    res = {k: [] for k in ("ll_pp", "ll_ppl", "ll_tg", "ll_batched")}
    for v, _, _ in variants:
        res["sl_score" + v] = []
        for s in [1] + par:
            res[f"sl_gen{s}{v}"] = []
    v0 = variants[0][0]  # the first variant's prompt lengths size llama-batched-bench's
    npp = None
    for rnd in range(args.reps):
        sl_first = rnd % 2 == 0
        # prefill pair
        steps_sl = [(lambda v=v, pas=pas, prec=prec: res["sl_score" + v].append(
            sl_score(args, score_h5, os.path.join(args.work, "out-score"), pas, prec)))
            for v, pas, prec in variants]
        steps_ll = [lambda: res["ll_pp"].append(ll_bench(args, args.score_len, 0)),
                    lambda: res["ll_ppl"].append(ll_perplexity(args, text_path, args.score_rows))]
        for fn in (steps_sl + steps_ll if sl_first else steps_ll + steps_sl):
            fn()
        # decode pair
        steps_sl = [(lambda s=s, v=v, pas=pas, prec=prec: res[f"sl_gen{s}{v}"].append(
            sl_generate(args, gen_h5[s], os.path.join(args.work, f"out-gen{s}"), s, pas, prec)))
            for s in [1] + par for v, pas, prec in variants]
        if npp is None and not sl_first:
            die("internal: shardline must run first in round 0 (prompt length)")

        def ll_dec():
            res["ll_tg"].append(ll_bench(args, 0, args.max_new))
            b, cmd = ll_batched(args, npp, [1] + par)
            res["ll_batched"].append(b)
            res["ll_batched_cmd"] = cmd
        if sl_first:
            for fn in steps_sl:
                fn()
            if npp is None:  # llama-batched-bench's prompt: shardline's mean prompt length
                npp = max(1, round(statistics.mean(res[f"sl_gen{s}{v0}"][0]["mean_prompt"]
                                                   for s in [1] + par)))
            ll_dec()
        else:
            ll_dec()
            for fn in steps_sl:
                fn()
        raw = {k: round(v[-1]["rate"], 1) for k, v in res.items()
               if isinstance(v, list) and v and k != "ll_batched"}
        raw.update({f"ll_batched{pl}": (round(b["rate"], 1), round(b["tg_rate"], 1))
                    for pl, b in res["ll_batched"][-1].items()})
        print(f"round {rnd + 1} tok/s: {raw}")
        print(f"round {rnd + 1}/{args.reps} done ({time.time() - t_start:.0f} s), load "
              f"{open('/proc/loadavg').read().split()[0]}", flush=True)

    sc, pp, ppl, tg = res["sl_score" + v0], res["ll_pp"], res["ll_ppl"], res["ll_tg"]
    print()
    print(f"model {args.model}")
    print(f"shardline {args.shardline}: {sc[0]['device']}")
    print(f"llama.cpp {args.llama_cpp}: build {pp[0]['build']} commit {pp[0]['commit']}; "
          f"{pp[0]['type']}; {pp[0]['cpu']}")
    if ppl[0]["sysinfo"]:
        print(f"llama.cpp {ppl[0]['sysinfo']}")
    print(f"threads {args.threads} each; {args.reps} interleaved rounds (shardline first on odd-numbered rounds)")
    print(f"score: {sc[0]['rows']} rows x {args.score_len} tokens ({sc[0]['truncated']} rows cut at "
          f"{args.score_len}), {sc[0]['tok']} tokens; llama-perplexity: same text, {ppl[0]['tok']} "
          f"tokens, PPL {ppl[0]['ppl']:.2f}")
    for s in [1] + par:
        g = res[f"sl_gen{s}{v0}"][0]
        print(f"generate --batch-size {s}: {g['rows']} rows, prompts {g['prompt']} tokens (mean "
              f"{g['mean_prompt']:.1f}), generated {g['gen']} (mean {g['gen'] / g['rows']:.1f}/row, "
              f"{g['eos']} rows stopped at EOS); llama-batched-bench -npp {npp} -ntg {args.max_new}")
    print()
    hdr = f"{'line':<46} {'shardline':>10} {'spread':>15} {'llama.cpp':>10} {'spread':>15} {'ratio':>6} {'spread':>11}"
    print(hdr)
    print(f"{'':<46} {'tok/s':>10} {'':>15} {'tok/s':>10} {'':>15} {'sl/ll':>6}")

    def line(name, a, b):
        ratios = [x / y for x, y in zip(a, b)]
        print(f"{name:<46} {med(a):>10.1f} {spread(a):>15} {med(b):>10.1f} {spread(b):>15} "
              f"{med(ratios):>6.2f} {spread(ratios):>11}")

    for v, pas, prec in variants:
        tag = f" [{prec}{', passive' if pas else ''}]"
        sl_pf = [r["rate"] for r in res["sl_score" + v]]
        line(f"prefill: score vs llama-bench pp{args.score_len}{tag}", sl_pf, [r["rate"] for r in pp])
        line(f"prefill: score vs perplexity c{args.score_len}{tag}", sl_pf, [r["rate"] for r in ppl])
        line(f"prefill, whole process wall{tag}", [r["wall_rate"] for r in res["sl_score" + v]],
             [r["wall_rate"] for r in ppl])
        line(f"decode 1 seq vs llama-bench tg{args.max_new}{tag}", [r["rate"] for r in res["sl_gen1" + v]],
             [r["rate"] for r in tg])
        for s in [1] + par:
            line(f"decode {s} seq vs batched pp+tg{tag}", [r["rate"] for r in res[f"sl_gen{s}{v}"]],
                 [b[s]["rate"] for b in res["ll_batched"]])
        for s in [1] + par:
            line(f"decode {s} seq vs batched S_TG{tag}", [r["rate"] for r in res[f"sl_gen{s}{v}"]],
                 [b[s]["tg_rate"] for b in res["ll_batched"]])
    precs = [prec for _, pas, prec in variants if not pas]
    if "f32" in precs and len(precs) > 1:
        print()
        print(f"{'shardline quantized / f32, same round':<46} {'quant':>10} {'f32':>10} "
              f"{'ratio':>6} {'spread':>11}")
        for prec in precs:
            if prec == "f32":
                continue
            for key, name in [("sl_score", "prefill: score")] + [(f"sl_gen{s}", f"decode {s} seq")
                                                                 for s in [1] + par]:
                a = [r["rate"] for r in res[f"{key}_{prec}"]]
                b = [r["rate"] for r in res[key + "_f32"]]
                ratios = [x / y for x, y in zip(a, b)]
                print(f"{name + ' [' + prec + ']':<46} {med(a):>10.1f} {med(b):>10.1f} "
                      f"{med(ratios):>6.2f} {spread(ratios):>11}")
    print("(shardline prefill: report tokens / compute_seconds; decode: generated tokens (/n_tokens) / "
          "compute_seconds, prompts' prefill included; llama-bench: avg_ts; perplexity: its prompt eval "
          "time line; batched-bench pp+tg: pl x ntg / (T_PP + T_TG), S_TG: pl x ntg / T_TG; "
          "whole process wall: tokens / wall time of each process incl. model load; "
          "ratio = shardline / llama.cpp within a round, median and min-max over rounds)")
    print()
    print("shardline time split (medians over rounds):")
    for key, name in [(k + v, n + f" {prec}" + ("/passive" if pas else ""))
                      for v, pas, prec in variants
                      for k, n in [("sl_score", "score")] + [(f"sl_gen{s}", f"generate bs{s}") for s in [1] + par]]:
        rs = res[key]
        c, g, j, w = (med([r[x] for r in rs]) for x in ("compute", "gemm", "job", "wall"))
        extra = ""
        if key.startswith("sl_score"):
            extra = f", GEMM {med([r['gemm_gflop'] / r['gemm'] for r in rs]):.1f} GFLOP/s"
        print(f"  {name:<22} wall {w:7.2f} s, job {j:7.2f} s, compute {c:7.2f} s, gemm {g:7.2f} s "
              f"({100 * g / c:.0f}% of compute), job - compute {j - c:5.2f} s{extra}")
    print(f"  llama-perplexity wall {med([r['wall'] for r in ppl]):.2f} s")
    print()
    print("commands:")
    for v, _, _ in variants:
        print(" ", res["sl_score" + v][0]["cmd"])
        for s in [1] + par:
            print(" ", res[f"sl_gen{s}{v}"][0]["cmd"])
    print(" ", pp[0]["cmd"])
    print(" ", tg[0]["cmd"])
    print(" ", ppl[0]["cmd"])
    print(" ", res["ll_batched_cmd"])
    print(f"benchmark wall time {time.time() - t_start:.0f} s; load average at end: "
          f"{open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
