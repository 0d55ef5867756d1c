#!/usr/bin/python3
"""bench_bert_peers.py — sentence-embedding throughput of `shardline run --task embed` against
the fastest CPU engines in common use: ONNX Runtime and CTranslate2, on the same sentences, the
same model and the same 2 threads.

What it measures: N real sentences (default 2000; the same rows as bench/bench_bert.py: the
sentences of tests/reference/sentences.txt and Debian's fortunes, cycled and shuffled), embedded
with all-MiniLM-L6-v2 (max length 256 tokens, mean pooling over the real tokens, then L2
normalisation) by each side:
 - shardline: `mpirun -np 1 --bind-to none <shardline> run --task embed --device cpu`,
   OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = --threads, default batching, --unit-rows N/4;
   seconds = report.json `seconds` (the whole job, model load and tokenizer included) and
   `compute_seconds` alongside. With --precisions f32,int8 a second line runs with
   `--precision int8`, if the binary accepts that value (its `run --help` lists it); otherwise
   the line is skipped with a printed note; with int8, a line `shardline w8a8-dyn` runs
   `--precision w8a8 --calibration dynamic` too (int8 activations as well, each 32-value block
   with its own scale; compared with the int8 peers). --also-passive adds each shardline line again with
   OMP_WAIT_POLICY=passive (on a machine shared with other jobs, OpenMP threads spinning at
   barriers while their partner is descheduled cost the most).
 - ONNX Runtime (PyPI `onnxruntime`): the model exported once to ONNX by PyTorch
   (torch.onnx.export of transformers' BertModel, opset 14, dynamic batch and sequence axes;
   cached under --work), then ORT's BERT graph optimizer (onnxruntime.transformers.optimizer,
   model_type bert: EmbedLayerNormalization, Attention, BiasGelu, SkipLayerNormalization fused),
   run with session optimisations at ORT_ENABLE_ALL, intra_op_num_threads = --threads,
   inter_op 1, sequential execution; fp32, and int8 = `onnxruntime.quantization.
   quantize_dynamic` of the fused model (QInt8 weights per channel, activations quantized per
   call), also cached.
 - CTranslate2 (PyPI `ctranslate2`): the HF directory converted once by
   `ctranslate2.converters.TransformersConverter` (the Python API of ct2-transformers-converter;
   weights stored fp32), loaded as `ctranslate2.Encoder(compute_type=float32 | int8,
   intra_threads=--threads, inter_threads=1)`; `forward_batch` on token ids; the
   last_hidden_state is pooled.
 Each peer runs in its own process (the venv's python, see below): transformers' fast tokenizer
 (AutoTokenizer) over all texts at once (truncation at 256, no padding), rows sorted by token
 length, batches of up to --peer-batch (default 64) consecutive sorted rows padded to the
 batch's longest row, forward, mean pooling over the real tokens and L2 normalisation in numpy.
 Timed: tokenization + forward + pooling; model load and one small warm-up batch are timed
 apart (shardline's job seconds include its load, so the ratio does not favour shardline).

Same work: every side's embeddings are compared row by row with the first shardline f32 run
(cosine; worst row and mean printed). fp32 peers must reach --min-cosine (default 0.9999) or
the benchmark fails; int8 lines only print theirs.

Interleaving: the machine may be shared and noisy, so the sides run in rounds (--rounds,
default 3), in the listed order on even rounds and reversed on odd ones. Ratios are formed
within a round: shardline sentences/s / peer sentences/s at the same precision (f32 against
ORT f32 and CT2 f32; int8 against ORT int8 and CT2 int8), and shardline int8 / shardline f32.
Medians and min-max over the rounds are printed.

Python side: the peers come from PyPI into a venv under build/ (--venv, default
build/peers-venv, made by this script on first use: `python3 -m venv --system-site-packages`,
so Debian's torch 1.13 (python3-torch) and numpy 1.24 are visible to it for the ONNX export;
then `pip install transformers==4.47.1 onnxruntime onnx ctranslate2==4.6.0` with numpy pinned to
the system's version). Nothing is committed.

Run (from the repository root, after building and scripts/install-models.sh):
    /usr/bin/python3 bench/bench_bert_peers.py --precisions f32,int8
    /usr/bin/python3 bench/bench_bert_peers.py --n 500 --rounds 2       # quicker
Results are printed only; record them by hand in bench/RESULTS.md.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN = 384
# ctranslate2 4.6.0: its converter passes torch_dtype= (4.7+ pass dtype=, which transformers 4.47.1,
# the newest that runs on Debian's torch 1.13, does not take)
PIP_PACKAGES = ["transformers==4.47.1", "onnxruntime", "onnx", "ctranslate2==4.6.0"]


def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        sys.exit(f"bench: failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n"
                 f"{r.stderr[-3000:]}")
    return r


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, f="{:.2f}"):
    if not xs:
        return "-"
    return f"{f.format(med(xs))} [{f.format(min(xs))}-{f.format(max(xs))}]"


# ---- the venv and the peer models (prepared once, cached) ----------------------------------

def ensure_venv(venv):
    py = os.path.join(venv, "bin", "python")
    probe = [py, "-c", "import onnxruntime, ctranslate2, transformers, torch, onnx; "
             "assert ctranslate2.__version__ == '4.6.0'"]
    if os.access(py, os.X_OK) and sh(probe, check=False).returncode == 0:
        return py
    print(f"bench: making {venv} (PyPI: {' '.join(PIP_PACKAGES)})", file=sys.stderr)
    sh(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv])
    import numpy
    cons = os.path.join(venv, "constraints.txt")
    with open(cons, "w") as f:  # keep Debian's numpy: Debian's torch is built against it
        f.write(f"numpy=={numpy.__version__}\n")
    sh([py, "-m", "pip", "install", "-q", "-c", cons] + PIP_PACKAGES)
    sh(probe)
    return py


def prepare_worker(args):
    """In the venv: export to ONNX, quantize it, convert for CTranslate2 (each once)."""
    import torch
    from transformers import AutoModel
    os.makedirs(args.work, exist_ok=True)
    onnx32 = os.path.join(args.work, "minilm.onnx")
    onnxopt = os.path.join(args.work, "minilm.opt.onnx")
    onnx8 = os.path.join(args.work, "minilm.opt.int8.onnx")
    ct2 = os.path.join(args.work, "minilm-ct2")
    if not os.path.exists(onnx32):
        model = AutoModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
        ids = torch.ones((2, 16), dtype=torch.long)
        axes = {0: "batch", 1: "seq"}
        tmp = onnx32 + ".tmp"
        with torch.no_grad():
            torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), tmp,
                              input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["last_hidden_state"],
                              dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                            "token_type_ids": axes,
                                            "last_hidden_state": axes},
                              opset_version=14, do_constant_folding=True)
        os.replace(tmp, onnx32)
    if not os.path.exists(onnxopt):
        # ORT's own BERT recipe: fuse embeddings+LayerNorm, attention, bias+GELU and
        # skip+LayerNorm offline (the session-level ORT_ENABLE_ALL passes fuse less)
        from onnxruntime.transformers import optimizer
        from transformers import AutoConfig
        cfg = AutoConfig.from_pretrained(args.model)
        m = optimizer.optimize_model(onnx32, model_type="bert", num_heads=cfg.num_attention_heads,
                                     hidden_size=cfg.hidden_size)
        fused = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
        print(f"bench: ORT optimizer fused {fused}", file=sys.stderr)
        tmp = onnxopt + ".tmp.onnx"
        m.save_model_to_file(tmp)
        os.replace(tmp, onnxopt)
    if not os.path.exists(onnx8):
        # per-channel int8 weights on the fused graph: per-tensor scales (the default) or the
        # unfused graph give worst-row cosines of ~0.76-0.78 to f32 on these sentences
        from onnxruntime.quantization import QuantType, quantize_dynamic
        tmp = onnx8 + ".tmp.onnx"
        quantize_dynamic(onnxopt, tmp, weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": 1})  # 1: FLOAT, for fused ops' outputs
        os.replace(tmp, onnx8)
    if not os.path.exists(os.path.join(ct2, "model.bin")):
        import ctranslate2
        shutil.rmtree(ct2, ignore_errors=True)
        ctranslate2.converters.TransformersConverter(args.model).convert(ct2, force=True)
    import ctranslate2
    import onnxruntime
    print(json.dumps(dict(onnx32=onnxopt, onnx8=onnx8, ct2=ct2, torch=torch.__version__,
                          ort=onnxruntime.__version__, ct2_version=ctranslate2.__version__)))
    return 0


# ---- the peer worker (runs in the venv's python) -------------------------------------------

def peer_worker(args):
    t_start = time.perf_counter()
    import h5py
    import numpy as np
    from transformers import AutoTokenizer

    with h5py.File(args.texts, "r") as f:
        texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in f["text"][...]]
    tok = AutoTokenizer.from_pretrained(args.model)
    engine, prec = args.engine.split(":")
    if engine == "ort":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(args.peer_model, so, providers=["CPUExecutionProvider"])
        version = f"onnxruntime {ort.__version__}"

        def forward(batch_ids, lens):
            L = max(lens)
            ids = np.zeros((len(batch_ids), L), dtype=np.int64)
            mask = np.zeros((len(batch_ids), L), dtype=np.int64)
            for i, x in enumerate(batch_ids):
                ids[i, : len(x)] = x
                mask[i, : len(x)] = 1
            return sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                    "token_type_ids": np.zeros_like(ids)})[0]
    else:
        import ctranslate2
        enc = ctranslate2.Encoder(args.peer_model, device="cpu", compute_type=prec,
                                  intra_threads=args.threads, inter_threads=1)
        version = f"ctranslate2 {ctranslate2.__version__}"

        def forward(batch_ids, lens):
            out = enc.forward_batch([list(x) for x in batch_ids])
            return np.asarray(out.last_hidden_state)

    def embed(batch_ids):
        lens = [len(x) for x in batch_ids]
        h = forward(batch_ids, lens).astype(np.float32)  # [rows, L, 384]
        L = h.shape[1]
        m = (np.arange(L)[None, :] < np.array(lens)[:, None]).astype(np.float32)[..., None]
        mean = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)

    embed(tok(texts[:8], truncation=True, max_length=args.max_length)["input_ids"])  # warm-up
    load_s = time.perf_counter() - t_start
    t0 = time.perf_counter()
    ids = tok(texts, truncation=True, max_length=args.max_length)["input_ids"]
    t1 = time.perf_counter()
    lens = [len(x) for x in ids]
    order = sorted(range(len(ids)), key=lambda i: lens[i])
    out = np.zeros((len(ids), HIDDEN), dtype=np.float32)
    for b in range(0, len(order), args.batch):
        rows = order[b: b + args.batch]
        out[rows] = embed([ids[i] for i in rows])
    t2 = time.perf_counter()
    np.save(args.out, out)
    print(json.dumps(dict(load_s=load_s, tokenize_s=t1 - t0, job_s=t2 - t0, compute_s=t2 - t1,
                          rows=len(ids), tokens=sum(lens), version=version)))
    return 0


# ---- the runs ------------------------------------------------------------------------------

def run_peer(side, args, py, data, model, env, tag):
    out = os.path.join(args.work, f"peer-emb-{tag}.npy")
    e = dict(env, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    r = sh([py, os.path.abspath(__file__), "--peer-worker", "--engine", side["engine"],
            "--peer-model", side["path"], "--texts", data, "--out", out, "--model", model,
            "--threads", str(args.threads), "--batch", str(args.peer_batch),
            "--max-length", str(args.max_length)], env=e, check=False)
    if r.returncode != 0:
        print(f"bench: {side['name']} failed ({r.returncode}):\n{r.stderr[-2000:]}",
              file=sys.stderr)
        return None
    import numpy as np
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["emb"] = np.load(out)
    return res


def run_shardline(side, args, data, model, env, tag, unit_rows):
    import h5py
    out = os.path.join(args.work, f"sl-out-{tag}")
    shutil.rmtree(out, ignore_errors=True)
    e = dict(env, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    if side["passive"]:
        e["OMP_WAIT_POLICY"] = "passive"
    cmd = [args.mpirun, "-np", "1", "--bind-to", "none", side["exe"], "run", "--model", model,
           "--input", data, "--input-dataset", "text", "--output", out, "--task", "embed",
           "--unit-rows", str(unit_rows), "--max-length", str(args.max_length), "--device",
           "cpu"] + side.get("opts", ["--precision", side["precision"]]
                             if side["precision"] != "f32" else [])
    side["cmd"] = " ".join(cmd[5:])
    r = sh(cmd, env=e, check=False)
    if r.returncode != 0:
        print(f"bench: {side['name']} failed ({r.returncode}):\n{r.stderr[-2000:]}",
              file=sys.stderr)
        return None
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
        emb = f["embeddings"][...]
    shutil.rmtree(out, ignore_errors=True)
    return dict(job_s=rep["seconds"], compute_s=rep["compute_seconds"], emb=emb,
                version=rep.get("device", ""), tokens=rep.get("tokens"))


def shardline_precisions(exe):
    """The --precision values the binary's `run --help` lists."""
    r = sh([exe, "run", "--help"], check=False)
    m = re.search(r"--precision\s+(\S+)", r.stdout + r.stderr)
    return m.group(1).split("|") if m else ["f32"]


def cosines(a, b):
    import numpy as np
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="sentences (rows)")
    ap.add_argument("--seed", type=int, default=1, help="shuffle seed of the rows")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=2, help="threads of every side")
    ap.add_argument("--precisions", default="f32",
                    help="comma list of f32, int8: shardline and each peer at that precision")
    ap.add_argument("--peers", default="ort,ct2", help="comma list of ort, ct2")
    ap.add_argument("--also-passive", action="store_true",
                    help="also run each shardline line with OMP_WAIT_POLICY=passive")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--peer-batch", type=int, default=64, help="peer rows per batch")
    ap.add_argument("--min-cosine", type=float, default=0.9999,
                    help="fp32 peers' worst-row cosine to shardline f32")
    ap.add_argument("--model", default="", help="default: build/models/minilm.path")
    ap.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    ap.add_argument("--int8-shardline", default="",
                    help="the build that runs the int8 lines (default: --shardline); its f32 "
                         "line runs too when it differs")
    ap.add_argument("--venv", default=os.path.join(ROOT, "build", "peers-venv"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench-work", "peers"))
    ap.add_argument("--mpirun", default=os.environ.get("MPIEXEC", "mpirun"))
    # internal: the venv side
    ap.add_argument("--prepare-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--peer-model", help=argparse.SUPPRESS)
    ap.add_argument("--texts", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.prepare_worker:
        return prepare_worker(args)
    if args.peer_worker:
        return peer_worker(args)

    t_bench = time.time()
    load0 = os.getloadavg()
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import bench_bert  # the same rows as bench_bert.py
    if not os.access(args.shardline, os.X_OK):
        sys.exit(f"bench: {args.shardline} not found; build first")
    model = args.model or open(os.path.join(ROOT, "build", "models",
                                            "minilm.path")).read().strip()
    os.makedirs(args.work, exist_ok=True)
    data, nuniq, nref = bench_bert.make_data(args.work, args.n, args.seed)
    unit_rows = -(-args.n // 4)
    precs = [p for p in args.precisions.split(",") if p]
    if any(p not in ("f32", "int8") for p in precs) or "f32" not in precs:
        sys.exit("bench: --precisions: a comma list of f32 and int8 that includes f32")
    peers = [p for p in args.peers.split(",") if p]

    py = ensure_venv(args.venv)
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH", "BLIS_NUM_THREADS"):
        env.pop(k, None)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    prep = json.loads(sh([py, os.path.abspath(__file__), "--prepare-worker", "--model", model,
                          "--work", args.work], env=env).stdout.strip().splitlines()[-1])

    exe8 = args.int8_shardline or args.shardline
    accepted = shardline_precisions(exe8)
    notes = []
    sides = []
    for p in precs:
        exe = args.shardline if p == "f32" else exe8
        if p == "f32" or p in accepted:
            sides.append(dict(name=f"shardline {p}", kind="sl", precision=p, passive=False,
                              exe=exe))
            if args.also_passive:
                sides.append(dict(name=f"shardline {p} passive", kind="sl", precision=p,
                                  passive=True, exe=exe))
            if p == "int8" and "w8a8" in accepted:  # int8 activations too, no calibration
                sides.append(dict(name="shardline w8a8-dyn", kind="sl", precision=p,
                                  passive=False, exe=exe,
                                  opts=["--precision", "w8a8", "--calibration", "dynamic"]))
            if p == "int8" and exe8 != args.shardline:
                sides.append(dict(name="shardline[int8 build] f32", kind="sl", precision="f32",
                                  passive=False, exe=exe8))
        else:
            notes.append(f"shardline int8 skipped: {exe8} accepts --precision "
                         f"{'|'.join(accepted)} only")
        if "ort" in peers:
            sides.append(dict(name=f"onnxruntime {p}", kind="peer", engine=f"ort:{p}",
                              path=prep["onnx32" if p == "f32" else "onnx8"], precision=p))
        if "ct2" in peers:
            sides.append(dict(name=f"ctranslate2 {p}", kind="peer",
                              engine=f"ct2:{'float32' if p == 'f32' else 'int8'}",
                              path=prep["ct2"], precision=p))
    runs = {s["name"]: [] for s in sides}
    print(f"bench: {len(sides)} sides x {args.rounds} rounds; load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", file=sys.stderr)
    for n in notes:
        print(f"bench: {n}", file=sys.stderr)
    for rnd in range(args.rounds):
        for s in (sides if rnd % 2 == 0 else sides[::-1]):
            tag = f"r{rnd}-{re.sub(r'[^A-Za-z0-9]+', '-', s['name'])}"
            if s["kind"] == "sl":
                res = run_shardline(s, args, data, model, env, tag, unit_rows)
            else:
                res = run_peer(s, args, py, data, model, env, tag)
            if res:
                res["load"] = os.getloadavg()[0]
            runs[s["name"]].append(res)
            print(f"bench: round {rnd + 1}/{args.rounds} {s['name']}: "
                  + (f"{res['job_s']:.2f} s, load {res['load']:.1f}" if res else "FAILED"),
                  file=sys.stderr, flush=True)

    ref = next((r["emb"] for r in runs["shardline f32"] if r), None)
    if ref is None:
        sys.exit("bench: every shardline f32 run failed")
    for s in sides:
        for r in runs[s["name"]]:
            if r:
                c = cosines(r["emb"], ref)
                r["min_cos"], r["mean_cos"] = float(c.min()), float(c.mean())

    first = {s["name"]: next((r for r in runs[s["name"]] if r), None) for s in sides}
    pk = next((first[s["name"]] for s in sides if s["kind"] == "peer" and first[s["name"]]),
              None)
    rows = args.n
    print(f"all-MiniLM-L6-v2, {rows} sentences ({nuniq} distinct: {nref} from "
          f"tests/reference/sentences.txt + fortunes, cycled, shuffled seed {args.seed})"
          + (f", {pk['tokens']} real tokens ({pk['tokens'] / rows:.1f}/sentence)" if pk else "")
          + f", max length {args.max_length}; {args.threads} threads per side; {args.rounds} "
          f"interleaved rounds")
    print(f"peers: torch {prep['torch']} (ONNX export, opset 14), onnxruntime {prep['ort']} "
          f"(ORT_ENABLE_ALL, intra_op {args.threads}), ctranslate2 {prep['ct2_version']}; "
          f"sorted rows, batches of {args.peer_batch}")
    for s in sides:
        r = first[s["name"]]
        if r:
            what = r["version"] if s["kind"] == "sl" else f"{r['version']} ({s['path']})"
            print(f"  {s['name']:<20} {what}")
    for n in notes:
        print(f"note: {n}")
    print("per round (seconds; shardline: report.json job seconds, model load included; peers: "
          "tokenize + forward + pool; l = 1-min load average after the run):")
    hdr = "{:<7}" + "".join("{:>%d}" % max(18, len(s["name"]) + 2) for s in sides)
    print(hdr.format("round", *[s["name"] for s in sides]))
    for rnd in range(args.rounds):
        cells = []
        for s in sides:
            r = runs[s["name"]][rnd]
            cells.append(f"{r['job_s']:.2f} l{r['load']:.1f}" if r else "FAILED")
        print(hdr.format(str(rnd + 1), *cells))

    print("summary, median [min-max] over the rounds:")
    fmt = "{:<20}{:>22}{:>22}{:>10}{:>12}{:>12}"
    print(fmt.format("side", "seconds", "compute s", "sent/s", "min cos", "mean cos"))
    for s in sides:
        rs = [r for r in runs[s["name"]] if r]
        if not rs:
            print(fmt.format(s["name"], "FAILED", "", "", "", ""))
            continue
        print(fmt.format(s["name"], spread([r["job_s"] for r in rs]),
                         spread([r["compute_s"] for r in rs]),
                         f"{rows / med([r['job_s'] for r in rs]):.1f}",
                         f"{min(r['min_cos'] for r in rs):.6f}",
                         f"{min(r['mean_cos'] for r in rs):.6f}"))
    print("(seconds: shardline job / peers tokenize+forward+pool; compute s: shardline's "
          "compute_seconds / peers' forward+pool; cos: each row's cosine to the first shardline "
          "f32 run, worst row and mean over rows, worst over the rounds)")

    def ratio_line(name, a, b, use_compute=False, both=False):
        ra = [(x["compute_s"] if use_compute else x["job_s"]) for x in a]
        rb = [(y["compute_s"] if both else y["job_s"]) for y in b]
        xs = [y / x for x, y in zip(ra, rb)]
        return f"  {name:<44} {spread(xs)}"

    print("ratios within a round (shardline sentences/s over the other's; > 1: shardline "
          "faster), median [min-max]:")
    for sls in sides:
        if sls["kind"] != "sl":
            continue
        for s in sides:
            if s["kind"] != "peer" or s["precision"] != sls["precision"]:
                continue
            pairs = [(a, b) for a, b in zip(runs[sls["name"]], runs[s["name"]]) if a and b]
            if pairs:
                a, b = zip(*pairs)
                print(ratio_line(f"{sls['name']} / {s['name']} (job)", a, b))
                print(ratio_line(f"{sls['name']} / {s['name']} (compute)", a, b, True))
    for f32name in ("shardline f32", "shardline[int8 build] f32"):
        for q in ("shardline int8", "shardline w8a8-dyn"):
            pairs = [(a, b) for a, b in zip(runs.get(q, []), runs.get(f32name, [])) if a and b]
            if pairs:
                a, b = zip(*pairs)
                print(ratio_line(f"{q} / {f32name} (job)", a, b))
                print(ratio_line(f"{q} / {f32name} (compute)", a, b, True, True))
    for s in sides:
        if s["kind"] != "peer" or s["precision"] != "int8":
            continue
        f32name = s["name"].replace("int8", "f32")
        pairs = [(a, b) for a, b in zip(runs[s["name"]], runs.get(f32name, [])) if a and b]
        if pairs:
            a, b = zip(*pairs)
            print(ratio_line(f"{s['name']} / {f32name}", a, b))
    print("commands:")
    for s in sides:
        if s["kind"] == "sl" and "cmd" in s:
            print(f"  {'OMP_WAIT_POLICY=passive ' if s['passive'] else ''}"
                  f"OMP_NUM_THREADS={args.threads} mpirun -np 1 --bind-to none {s['cmd']}")
    print(f"benchmark wall time {time.time() - t_bench:.0f} s; load average (1, 5, 15 min) at "
          f"start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, at end "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    bad = [s["name"] for s in sides for r in runs[s["name"]]
           if r is None or (s["precision"] == "f32" and r["min_cos"] < args.min_cosine)]
    if bad:
        print(f"bench: failed or disagree with shardline f32 (cosine < {args.min_cosine}): "
              f"{', '.join(sorted(set(bad)))}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
