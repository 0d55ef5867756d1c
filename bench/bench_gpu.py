#!/usr/bin/env python3
"""bench_gpu.py — shardline against PyTorch on the same GPU, in the same run.

Measures (each model made on the spot with random weights and written with save_pretrained, so
nothing large travels; token ids are random, so both sides get identical inputs):
  - BERT-base (transformers.BertModel(BertConfig()): 12 layers, hidden 768, vocab 30522; the
    uncased WordPiece tokenizer.json beside it), sequences of 128 tokens, f32 and bf16:
    sequences/s of shardline (`run --task embed` on pre-tokenized ids; from report.json's
    compute seconds, and for the whole job) and of PyTorch (torch.inference_mode, sdpa
    attention, the same batch of sequences), and MFU: 2 x (non-embedding parameters) + the
    attention products, per token, over the GPU's dense peak of that dtype;
  - a ~1.1B LLaMA decoder (LlamaConfig: hidden 2048, 22 layers, 32 heads / 4 KV heads, SwiGLU
    5632, vocab 32000), bf16: prefill tokens/s (shardline `--task score`, PyTorch a forward
    pass over the same batch, logits included) and greedy decode tokens/s of one sequence
    (shardline `--task generate`, PyTorch model.generate), and decode as a fraction of the
    measured device copy bandwidth: weight bytes x decode steps/s over the bytes/s a
    device-to-device copy moves (read + write).
Prints one `figure ...` line per measurement and a summary; --json FILE writes every number.
Exit status 1 when a part failed (its error is printed and recorded), 0 otherwise.

Run (the GPU machine, from gpu-bundle/run.sh, which passes the carried programs):
    python3 bench_gpu.py --shardline BIN --mpirun MPIRUN --tokenizer tokenizer.json --json OUT.json
    python3 bench/bench_gpu.py --tiny --device cpu --shardline build/shardline \
        --tokenizer tests/reference/tiny_bert_cls/tokenizer.json      (a CPU smoke run: tiny models)
Needs torch and transformers. Results go into bench/RESULTS.md by hand, from a real run's output.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

# Dense peak FLOP/s by GPU name and dtype (NVIDIA's data sheets, without sparsity; shardline
# keeps TF32 off, so its f32 GEMMs are measured against the plain FP32 peak).
PEAKS = [("H200", {"bf16": 989e12, "f32": 67e12}),
         ("H100 PCIe", {"bf16": 756e12, "f32": 51e12}),
         ("H100", {"bf16": 989e12, "f32": 67e12}),
         ("A100", {"bf16": 312e12, "f32": 19.5e12})]


def log(msg):
    print(msg, flush=True)


class Bench:
    def __init__(self, a):
        import torch
        self.torch = torch
        self.a = a
        self.dev = a.device
        self.tmp = tempfile.mkdtemp(prefix="sl-bench-")
        self.results = {"device": a.device, "tiny": a.tiny, "parts": {}, "errors": {}}
        self.gpu = torch.cuda.get_device_name(0) if self.dev == "cuda" else "cpu"
        self.results["gpu"] = self.gpu
        self.results["torch"] = torch.__version__
        self.peak = next((p for name, p in PEAKS if name in self.gpu), None)
        if int(torch.__version__.split(".")[0]) < 2:
            # generate() asks whether the model is FSDP-managed, an import that fails with torch
            # 1.13 under Python 3.11 (the CPU reference venv); nothing here is distributed
            import transformers.generation.utils as gen_utils
            gen_utils.is_fsdp_managed_module = lambda module: False

    # ---- helpers ------------------------------------------------------------------------------
    def sync(self):
        if self.dev == "cuda":
            self.torch.cuda.synchronize()

    def shardline(self, model, inp, out, extra):
        cmd = ([self.a.mpirun, "-np", "1"] if self.a.mpirun else []) + [
            self.a.shardline, "run", "--model", model, "--input", inp, "--input-dataset", "input_ids",
            "--output", out, "--device", self.dev, "--quiet", "--restart"] + extra
        env = dict(os.environ)
        if self.a.ld_library_path is not None:
            env["LD_LIBRARY_PATH"] = self.a.ld_library_path
        t0 = time.time()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=self.a.timeout)
        wall = time.time() - t0
        if r.returncode != 0:
            raise RuntimeError(f"shardline exited {r.returncode}: {r.stderr[-800:]}")
        with open(os.path.join(out, "report.json")) as f:
            rep = json.load(f)
        rep["wall_seconds"] = wall
        return rep

    def write_ids(self, path, ids, lengths):
        with h5py.File(path, "w") as f:
            f["input_ids"] = ids.astype(np.int32)
            f["lengths"] = lengths.astype(np.int32)

    def attention(self):
        # torch < 2.0 has no scaled_dot_product_attention: the tiny CPU run says what it used
        sdpa = hasattr(self.torch.nn.functional, "scaled_dot_product_attention")
        self.results["attention"] = "sdpa" if sdpa else "eager (this torch has no sdpa)"
        return "sdpa" if sdpa else "eager"

    def copy_bandwidth(self):
        """Bytes/s (read + write) of a device-to-device copy, best of 10."""
        torch = self.torch
        n = (1 << 20) if self.a.tiny else (1 << 30)
        x = torch.empty(n, dtype=torch.uint8, device=self.dev)
        y = torch.empty_like(x)
        y.copy_(x)
        best = float("inf")
        for _ in range(10):
            self.sync()
            t0 = time.perf_counter()
            y.copy_(x)
            self.sync()
            best = min(best, time.perf_counter() - t0)
        return 2 * n / best

    # ---- BERT ---------------------------------------------------------------------------------
    def bert(self):
        torch = self.torch
        from transformers import BertConfig, BertModel
        a = self.a
        if a.tiny:
            cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128)
            rows, seq, batch = 64, 32, 16
        else:
            cfg = BertConfig()
            rows, seq, batch = 4096, 128, 128
        d = os.path.join(self.tmp, "bert")
        torch.manual_seed(0)
        cfg._attn_implementation = self.attention()
        model = BertModel(cfg, add_pooling_layer=False)
        model.eval().save_pretrained(d)  # safetensors (the default since transformers 4.35)
        shutil.copy(a.tokenizer, os.path.join(d, "tokenizer.json"))
        with open(a.tokenizer) as f:
            vocab = len(json.load(f)["model"]["vocab"])
        if vocab != cfg.vocab_size:
            raise RuntimeError(f"{a.tokenizer}: vocabulary of {vocab}, BertConfig has {cfg.vocab_size}")
        rng = np.random.default_rng(0)
        ids = rng.integers(1000, cfg.vocab_size, (rows, seq))
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        inp = os.path.join(self.tmp, "bert_ids.h5")
        self.write_ids(inp, ids, np.full(rows, seq))
        L, H, I = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
        flop_per_token = 2 * L * (4 * H * H + 2 * H * I) + 4 * L * seq * H
        x = torch.tensor(ids, device=self.dev)
        for prec, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
            res = {}
            rep = self.shardline(d, inp, os.path.join(self.tmp, f"bert-{prec}"),
                                 ["--task", "embed", "--precision", prec,
                                  "--batch-tokens", str(batch * seq), "--unit-rows", str(rows)])
            res["shardline_seq_per_s"] = rows / rep["compute_seconds"]
            res["shardline_job_seq_per_s"] = rows / rep["seconds"]
            res["shardline_load_s"] = rep.get("load_seconds")
            m = model.to(self.dev, dtype=dt)
            mask = torch.ones_like(x)
            with torch.inference_mode():
                m(input_ids=x[:batch], attention_mask=mask[:batch])  # warm-up
                self.sync()
                t0 = time.perf_counter()
                for i in range(0, rows, batch):
                    m(input_ids=x[i:i + batch], attention_mask=mask[i:i + batch])
                self.sync()
                res["torch_seq_per_s"] = rows / (time.perf_counter() - t0)
            for who in ("shardline", "torch"):
                fl = res[f"{who}_seq_per_s"] * seq * flop_per_token
                res[f"{who}_tflops"] = fl / 1e12
                if self.peak:
                    res[f"{who}_mfu"] = fl / self.peak[prec]
            self.results["parts"][f"bert_{prec}"] = res
            mfu = lambda w: f", MFU {res[w + '_mfu']:.1%}" if self.peak else ""  # noqa: E731
            log(f"figure BERT{'(tiny)' if a.tiny else '-base'} {prec} seq{seq}: shardline "
                f"{res['shardline_seq_per_s']:.0f} seq/s{mfu('shardline')} (job "
                f"{res['shardline_job_seq_per_s']:.0f}), PyTorch {res['torch_seq_per_s']:.0f} "
                f"seq/s{mfu('torch')}")
        del model

    # ---- LLaMA --------------------------------------------------------------------------------
    def llama(self, bw):
        torch = self.torch
        from transformers import LlamaConfig, LlamaForCausalLM
        a = self.a
        if a.tiny:
            cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=256, tie_word_embeddings=False)
            prows, pseq, drow_prompt, dnew = 8, 32, 8, 8
        else:
            cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                              num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                              max_position_embeddings=2048, tie_word_embeddings=False)
            prows, pseq, drow_prompt, dnew = 64, 512, 16, 128
        cfg.bos_token_id, cfg.eos_token_id = 1, 2
        d = os.path.join(self.tmp, "llama")
        torch.manual_seed(0)
        dt = torch.bfloat16
        cfg._attn_implementation = self.attention()
        # made on the device where torch can (2.0+): 1.1B random parameters are slow on a CPU
        on_dev = torch.device(self.dev)
        with on_dev if hasattr(on_dev, "__enter__") else _null():
            model = LlamaForCausalLM(cfg)
        model = model.to(self.dev, dtype=dt).eval()
        model.save_pretrained(d)  # safetensors (the default since transformers 4.35)
        nparams = sum(p.numel() for p in model.parameters())
        wbytes = nparams * 2
        self.results["llama_params"] = nparams
        rng = np.random.default_rng(1)
        res = {"params": nparams}
        # prefill
        ids = rng.integers(3, cfg.vocab_size, (prows, pseq))
        inp = os.path.join(self.tmp, "llama_prefill.h5")
        self.write_ids(inp, ids, np.full(prows, pseq))
        rep = self.shardline(d, inp, os.path.join(self.tmp, "llama-prefill"),
                             ["--task", "score", "--precision", "bf16", "--max-length", str(pseq),
                              "--batch-tokens", str(16 * pseq)])
        res["shardline_prefill_tok_per_s"] = prows * pseq / rep["compute_seconds"]
        x = torch.tensor(ids, device=self.dev)
        with torch.inference_mode():
            model(input_ids=x[:16]).logits  # warm-up
            self.sync()
            t0 = time.perf_counter()
            for i in range(0, prows, 16):
                model(input_ids=x[i:i + 16]).logits
            self.sync()
            res["torch_prefill_tok_per_s"] = prows * pseq / (time.perf_counter() - t0)
        # decode, one sequence (bandwidth-bound: every step reads every weight once)
        prompt = rng.integers(3, cfg.vocab_size, (1, drow_prompt))
        inp = os.path.join(self.tmp, "llama_prompt.h5")
        self.write_ids(inp, prompt, np.array([drow_prompt]))
        rep = self.shardline(d, inp, os.path.join(self.tmp, "llama-decode"),
                             ["--task", "generate", "--precision", "bf16", "--max-new-tokens", str(dnew)])
        gen = rep.get("generated_tokens", dnew)
        res["shardline_decode_tokens"] = gen
        res["shardline_decode_tok_per_s"] = gen / rep["compute_seconds"]
        p = torch.tensor(prompt, device=self.dev)
        with torch.inference_mode():
            kw = {"attention_mask": torch.ones_like(p), "pad_token_id": cfg.eos_token_id,
                  "do_sample": False}
            model.generate(p, max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
            self.sync()
            t0 = time.perf_counter()
            model.generate(p, max_new_tokens=dnew, min_new_tokens=dnew, **kw)
            self.sync()
            res["torch_decode_tok_per_s"] = dnew / (time.perf_counter() - t0)
        for who in ("shardline", "torch"):
            res[f"{who}_decode_bw_fraction"] = wbytes * res[f"{who}_decode_tok_per_s"] / bw
        self.results["parts"]["llama_bf16"] = res
        log(f"figure LLaMA {nparams / 1e9:.2f}B bf16 prefill {prows}x{pseq}: shardline "
            f"{res['shardline_prefill_tok_per_s']:.0f} tok/s, PyTorch {res['torch_prefill_tok_per_s']:.0f} tok/s")
        log(f"figure LLaMA decode (1 sequence): shardline {res['shardline_decode_tok_per_s']:.1f} tok/s "
            f"({res['shardline_decode_bw_fraction']:.0%} of copy bandwidth), PyTorch "
            f"{res['torch_decode_tok_per_s']:.1f} tok/s ({res['torch_decode_bw_fraction']:.0%})")

    def run(self):
        try:
            return self.measure()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def measure(self):
        try:
            bw = self.copy_bandwidth()
            self.results["copy_bandwidth_GBps"] = bw / 1e9
            log(f"figure copy bandwidth {bw / 1e9:.0f} GB/s (read + write), {self.gpu}")
        except Exception as ex:  # noqa: BLE001
            self.results["errors"]["bandwidth"] = repr(ex)
            bw = float("nan")
        for name, fn in (("bert", self.bert), ("llama", lambda: self.llama(bw))):
            try:
                fn()
            except Exception as ex:  # noqa: BLE001 (recorded, and the exit status says so)
                self.results["errors"][name] = repr(ex)
                log(f"bench_gpu: {name} failed: {ex!r}")
        return self.results


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shardline", required=True)
    ap.add_argument("--mpirun", default=None, help="run shardline under this mpirun -np 1")
    ap.add_argument("--tokenizer", required=True, help="bert-base-uncased's tokenizer.json")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="tiny models and batches (a CPU smoke run)")
    ap.add_argument("--ld-library-path", default=None,
                    help="LD_LIBRARY_PATH for shardline only (Python keeps its own)")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = Bench(a).run()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
