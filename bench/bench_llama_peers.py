#!/usr/bin/python3
"""bench_llama_peers.py — shardline's LLaMA decoder against CTranslate2 int8, and the Q8_0 GGUF
that bench/bench_llama.py runs against llama.cpp.

Two jobs, both on SmolLM2-135M-Instruct (default: the Q4_1 GGUF in build/models/smollm2.path):

1. Q8_0 (--make-q8): llama.cpp's `llama-quantize --allow-requantize IN.Q4_1.gguf OUT.Q8_0.gguf
   Q8_0` (from the build given with --llama-cpp), cached under --work; prints the path. Both
   engines then run the same Q8_0 file: `bench/bench_llama.py --model OUT.Q8_0.gguf`. (The
   weights are the Q4_1 ones, dequantised and requantized to 8 bits: the same numbers within
   Q8_0's rounding, twice the bytes of Q4_1.)

2. CTranslate2 (default): the GGUF is converted once to a Hugging Face checkpoint by
   transformers (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` + save_pretrained,
   run with --ref-python, a python with torch, transformers and gguf; the weights are the GGUF's,
   dequantised to f32), then by `ctranslate2.converters.TransformersConverter(...).convert(...,
   quantization="int8")` (CTranslate2 supports LlamaForCausalLM) into --work. It runs as
   `ctranslate2.Generator(compute_type="int8", intra_threads=T, inter_threads=1)`, in the venv of
   bench/bench_bert_peers.py (build/peers-venv, made there on first use).
   Lines, interleaved in rounds (--reps; shardline first on even rounds, CTranslate2 first on odd):
   - prefill: shardline `run --task score --max-length 256` over the rows of bench_llama.py
     (tokens / compute_seconds) against `Generator.score_batch` over the same rows tokenized by
     the checkpoint's tokenizer and cut at 256 tokens, all rows in one batch (tokens / seconds
     of the call); both print their perplexity over those tokens (the same work: it should
     agree within quantization noise);
   - decode, one sequence and --parallel sequences: shardline `run --task generate
     --max-new-tokens 64 --batch-size S` (generated tokens / compute_seconds, prompts' prefill
     included) against `Generator.generate_batch(prompts, max_length=64, sampling_topk=1,
     max_batch_size=S)` on the same prompts (generated tokens / seconds of the call, its
     prefill included).
   --sl-passive runs shardline with OMP_WAIT_POLICY=passive (a machine shared with other jobs).
   Every shardline line runs once per --gguf file (default: the Q4_1 file and, when given with
   --q8, the Q8_0 one), each with --precision auto (quantized weights, int8 dot products).
   Ratios are shardline / CTranslate2 within a round, medians and min-max over rounds.

Run (from the repository root):
    /usr/bin/python3 bench/bench_llama_peers.py --make-q8 --llama-cpp LLAMA_BUILD
    /usr/bin/python3 bench/bench_llama_peers.py --q8 build/bench-work/llama-peers/smollm2.Q8_0.gguf
Results are printed only; record them by hand in bench/RESULTS.md.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def sh(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"bench: failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n"
                 f"{r.stderr[-3000:]}")
    return r


def med(xs):
    return statistics.median(xs)


# ---- the CTranslate2 worker (runs in the venv's python) -------------------------------------

def ct2_worker(args):
    t_start = time.perf_counter()
    import ctranslate2
    from transformers import AutoTokenizer
    with open(args.inputs) as f:
        texts = json.load(f)
    tok = AutoTokenizer.from_pretrained(args.hf)
    gen = ctranslate2.Generator(args.ct2, device="cpu", compute_type="int8",
                                intra_threads=args.threads, inter_threads=1)
    if args.mode == "score":
        toks = [tok.convert_ids_to_tokens(tok(t)["input_ids"][: args.score_len]) for t in texts]
        gen.score_batch([toks[0][:32]])  # warm-up
        load_s = time.perf_counter() - t_start
        t0 = time.perf_counter()
        res = gen.score_batch(toks, max_batch_size=len(toks))
        dt = time.perf_counter() - t0
        lps = [lp for r in res for lp in r.log_probs]
        out = dict(tokens=sum(len(t) for t in toks), seconds=dt, load_s=load_s,
                   ppl=math.exp(-sum(lps) / len(lps)), n_lp=len(lps))
    else:
        toks = [tok.convert_ids_to_tokens(tok(t)["input_ids"]) for t in texts]
        gen.generate_batch([toks[0]], max_length=4, sampling_topk=1)  # warm-up
        load_s = time.perf_counter() - t_start
        t0 = time.perf_counter()
        res = gen.generate_batch(toks, max_length=args.max_new, sampling_topk=1,
                                 max_batch_size=len(toks), include_prompt_in_result=False)
        dt = time.perf_counter() - t0
        ngen = sum(len(r.sequences_ids[0]) for r in res)
        out = dict(gen=ngen, seconds=dt, load_s=load_s, rows=len(toks),
                   prompt=sum(len(t) for t in toks))
    out["version"] = ctranslate2.__version__
    print(json.dumps(out))
    return 0


def ensure_ct2(args, py):
    hf = os.path.join(args.work, "smollm2-hf")
    ct2 = os.path.join(args.work, "smollm2-ct2-int8")
    if not os.path.exists(os.path.join(hf, "config.json")):
        d, f = os.path.split(args.model)
        code = ("import sys\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
                "d, f, out = sys.argv[1:4]\n"
                "AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(out)\n"
                "AutoModelForCausalLM.from_pretrained(d, gguf_file=f).save_pretrained(out)\n")
        sh([args.ref_python, "-c", code, d, f, hf])
    if not os.path.exists(os.path.join(ct2, "model.bin")):
        sh([py, "-c", "import sys, ctranslate2\n"
                      "ctranslate2.converters.TransformersConverter(sys.argv[1]).convert("
                      "sys.argv[2], quantization='int8', force=True)", hf, ct2])
    return hf, ct2


def ct2_run(args, py, hf, ct2, mode, texts_json):
    r = sh([py, os.path.abspath(__file__), "--ct2-worker", "--mode", mode, "--hf", hf, "--ct2",
            ct2, "--inputs", texts_json, "--threads", str(args.threads), "--max-new",
            str(args.max_new), "--score-len", str(args.score_len)],
           env=dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1"))
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_q8(args):
    tools = [os.path.join(args.llama_cpp, d, "llama-quantize") for d in ("bin", "build/bin", ".")]
    tool = next((t for t in tools if os.access(t, os.X_OK)), None)
    if tool is None:
        sys.exit(f"bench: llama-quantize not found under {args.llama_cpp}")
    out = os.path.join(args.work, "smollm2.Q8_0.gguf")
    if not os.path.exists(out):
        sh([tool, "--allow-requantize", args.model, out + ".tmp", "Q8_0", str(args.threads)])
        os.replace(out + ".tmp", out)
    print(out)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: build/models/smollm2.path)")
    ap.add_argument("--q8", default="", help="a Q8_0 GGUF of the same model: shardline lines too")
    ap.add_argument("--make-q8", action="store_true", help="make the Q8_0 GGUF and stop")
    ap.add_argument("--llama-cpp", default="", help="llama.cpp build directory (--make-q8)")
    ap.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--score-rows", type=int, default=16)
    ap.add_argument("--score-len", type=int, default=256)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--parallel", default="16", help="concurrent sequences (comma list)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sl-passive", action="store_true",
                    help="run shardline with OMP_WAIT_POLICY=passive")
    ap.add_argument("--ref-python", default="/work/slref/bin/python",
                    help="python with torch, transformers and gguf (GGUF -> HF checkpoint)")
    ap.add_argument("--venv", default=os.path.join(ROOT, "build", "peers-venv"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench-work", "llama-peers"))
    ap.add_argument("--ct2-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--hf", help=argparse.SUPPRESS)
    ap.add_argument("--ct2", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ct2_worker:
        return ct2_worker(args)
    if args.model is None:
        with open(os.path.join(ROOT, "build", "models", "smollm2.path")) as f:
            args.model = f.read().strip()
    os.makedirs(args.work, exist_ok=True)
    if args.make_q8:
        return make_q8(args)

    import bench_bert_peers
    import bench_llama
    t_start = time.time()
    print("date:", time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()))
    print("load average at start:", open("/proc/loadavg").read().strip(), flush=True)
    py = bench_bert_peers.ensure_venv(args.venv)
    hf, ct2 = ensure_ct2(args, py)
    par = [int(x) for x in args.parallel.split(",") if x]
    rows = bench_llama.score_rows(args.score_rows, args.score_len * 6, args.seed)
    score_h5 = os.path.join(args.work, "score.h5")
    bench_llama.write_h5(score_h5, rows)
    score_json = os.path.join(args.work, "score.json")
    with open(score_json, "w") as f:
        json.dump(rows, f)
    gen_h5, gen_json = {}, {}
    for s in [1] + par:
        prompts = bench_llama.gen_prompts(s, args.seed)
        gen_h5[s] = os.path.join(args.work, f"gen-{s}.h5")
        bench_llama.write_h5(gen_h5[s], prompts)
        gen_json[s] = os.path.join(args.work, f"gen-{s}.json")
        with open(gen_json[s], "w") as f:
            json.dump(prompts, f)

    ggufs = [("Q4_1", args.model)] + ([("Q8_0", args.q8)] if args.q8 else [])
    lines = ["score"] + [f"gen{s}" for s in [1] + par]
    res = {f"ct2_{ln}": [] for ln in lines}
    res.update({f"sl_{ln}_{q}": [] for ln in lines for q, _ in ggufs})
    ppl_sl = {}
    for rnd in range(args.reps):
        steps_sl, steps_ct = [], []
        for q, path in ggufs:
            a = argparse.Namespace(**vars(args))
            a.model, a.shardline = path, os.path.abspath(args.shardline)

            def sc(a=a, q=q):
                r = bench_llama.sl_score(a, score_h5, os.path.join(args.work, "out-score"),
                                        args.sl_passive)
                import h5py
                import numpy as np
                with h5py.File(os.path.join(args.work, "out-score", "predictions.h5")) as f:
                    lp = f["token_logprobs"][...]
                ppl_sl[q] = float(np.exp(-lp[np.isfinite(lp)].mean()))
                res[f"sl_score_{q}"].append(r)
            steps_sl.append(sc)
            for s in [1] + par:
                steps_sl.append(lambda a=a, q=q, s=s: res[f"sl_gen{s}_{q}"].append(
                    bench_llama.sl_generate(a, gen_h5[s], os.path.join(args.work, f"out-g{s}"),
                                            s, args.sl_passive)))
        steps_ct.append(lambda: res["ct2_score"].append(
            ct2_run(args, py, hf, ct2, "score", score_json)))
        for s in [1] + par:
            steps_ct.append(lambda s=s: res[f"ct2_gen{s}"].append(
                ct2_run(args, py, hf, ct2, "gen", gen_json[s])))
        for fn in (steps_sl + steps_ct if rnd % 2 == 0 else steps_ct + steps_sl):
            fn()
        raw = {k: round(v[-1]["rate"] if "rate" in v[-1] else
                        v[-1].get("tokens", v[-1].get("gen", 0)) / v[-1]["seconds"], 1)
               for k, v in res.items()}
        print(f"round {rnd + 1} tok/s: {raw}")
        print(f"round {rnd + 1}/{args.reps} done ({time.time() - t_start:.0f} s), load "
              f"{open('/proc/loadavg').read().split()[0]}", flush=True)

    c0 = res["ct2_score"][0]
    print()
    print(f"shardline {args.shardline}: {res['sl_score_Q4_1'][0]['device']}"
          + (", OMP_WAIT_POLICY=passive" if args.sl_passive else ""))
    print(f"ctranslate2 {c0['version']}, compute_type int8, intra_threads {args.threads}: "
          f"{ct2} (from {hf})")
    print(f"score: shardline {res['sl_score_Q4_1'][0]['tok']} tokens, CTranslate2 "
          f"{c0['tokens']} tokens; perplexity: CTranslate2 int8 {c0['ppl']:.2f}, "
          + ", ".join(f"shardline {q} {p:.2f}" for q, p in ppl_sl.items()))
    for s in [1] + par:
        g, c = res[f"sl_gen{s}_Q4_1"][0], res[f"ct2_gen{s}"][0]
        print(f"generate {s} sequence(s): shardline prompts {g['prompt']} tokens, generated "
              f"{g['gen']} ({g['eos']} rows at EOS); CTranslate2 prompts {c['prompt']} tokens, "
              f"generated {c['gen']}")
    print()
    print(f"{'line':<34} {'shardline':>10} {'CT2 int8':>10} {'ratio':>6} {'spread':>11}")
    for ln in lines:
        ct = [(r["tokens"] if ln == "score" else r["gen"]) / r["seconds"]
              for r in res[f"ct2_{ln}"]]
        for q, _ in ggufs:
            sl = [r["rate"] for r in res[f"sl_{ln}_{q}"]]
            ratios = [x / y for x, y in zip(sl, ct)]
            name = ("prefill: score" if ln == "score" else f"decode {ln[3:]} seq") + f" [{q}]"
            print(f"{name:<34} {med(sl):>10.1f} {med(ct):>10.1f} {med(ratios):>6.2f} "
                  f"{min(ratios):.2f}-{max(ratios):.2f}")
    print("(tok/s; shardline: report tokens or generated tokens / compute_seconds; CTranslate2: "
          "tokens / seconds of the score_batch or generate_batch call; ratio = shardline / "
          "CTranslate2 within a round, median and min-max over rounds)")
    print(f"benchmark wall time {time.time() - t_start:.0f} s; load average at end: "
          f"{open('/proc/loadavg').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
