#!/usr/bin/python3
"""bench_bert.py — sentence-embedding throughput of `shardline run --task embed` against PyTorch.

What it measures: the same N real sentences (default 2000), embedded with all-MiniLM-L6-v2
(fp32, max length 256 tokens, mean pooling + L2 normalisation) on the CPU
 - by shardline, `mpirun --bind-to none build/shardline run --task embed` for each
   configuration (default: -np 1; -np 2 --tp 1; -np 2 --tp 2), default --batch-tokens and
   --batch-size, --unit-rows N/4 (so that two TP groups share the work), OMP_NUM_THREADS =
   OPENBLAS_NUM_THREADS = nproc / ranks; numbers from each run's report.json (seconds: the whole
   job from process start, model load included; compute/read/write seconds, gemm_seconds and
   gemm_gflop: time and FLOP in sl_matmul's OpenBLAS calls; read includes the C tokenizer,
   which runs on the I/O thread);
 - by PyTorch + transformers (AutoTokenizer (fast) + AutoModel, /tmp/slref venv), in a separate
   process with torch.set_num_threads(nproc) and OMP/OPENBLAS threads = nproc, under
   torch.inference_mode(): all texts tokenized at once (truncation to 256, no padding), rows sorted
   by token length (stable), batches of up to --torch-batch (default 64) consecutive sorted rows
   padded to the batch's longest row, forward, mean pooling over real tokens, L2 normalisation.
   Timed: tokenization + forward + pooling (load and one small warm-up batch are timed apart).
Both sets of embeddings are compared row by row (cosine; the comparison fails below 0.9999).
Rates: sentences/s = rows / seconds and tokens/s = real tokens (incl. [CLS]/[SEP], after
truncation; padding not counted) / seconds; shardline's over its report.json seconds (job) and
compute seconds, PyTorch's over tokenization + forward + pooling. ratio = shardline job rate /
PyTorch rate. The GEMM peer is bench/sgemm_peer.c (OpenBLAS cblas_sgemm alone, nproc threads,
best of --reps) for the encoder's GEMM shapes M = --peer-m (a typical batch's tokens),
(N, K) = (384, 384) [Q, K, V, attention output], (1536, 384) [FFN up], (384, 1536) [FFN down];
"per layer" weighs them as one encoder layer does (4 x 384x384 + up + down).

Sentences: the lines of tests/reference/sentences.txt (escapes decoded as
tests/reference/make_bert_goldens.py does) plus every fortune cookie of
/usr/share/games/fortunes/{fortunes,literature,riddles} (Debian package fortunes-min; entries
between '%' lines, surrounding whitespace stripped, inner newlines kept), deduplicated, cycled to
N rows, then shuffled with a fixed seed; written once to build/bench-work/bert-N.h5 (dataset
`text`, variable-length UTF-8).

OpenBLAS kernel: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are taken from the environment as they
are; --native-blas removes both from the environment of every program this script starts
(shardline, sgemm_peer, PyTorch) so OpenBLAS picks its core by itself. The table names the core
each program ran: shardline's from report.json's device, PyTorch's and sgemm_peer's from
openblas_get_corename() of the library loaded in that environment.

Run (from the repository root, after building into build/ and scripts/install-models.sh):
    /usr/bin/python3 bench/bench_bert.py                 # environment as it is
    /usr/bin/python3 bench/bench_bert.py --native-blas   # OPENBLAS_CORETYPE/L2_SIZE unset
    /usr/bin/python3 bench/bench_bert.py --n 500 --configs 1:1   # quicker
Results are printed only; record them by hand in bench/RESULTS.md (command, machine, date,
numbers) — nothing is appended automatically. Work files go to build/bench-work/.
"""
import argparse
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORTUNES = "/usr/share/games/fortunes"
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
HIDDEN, FFN, LAYERS = 384, 1536, 6
# GEMM FLOP per real token in the encoder (Q, K, V, attention output, FFN up, FFN down).
GEMM_FLOP_PER_TOKEN = 2 * LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN)


def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        sys.exit(f"bench: failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r


# ---- sentences ------------------------------------------------------------------------------

_ESC = re.compile(r"\\(t|n|r|\\|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def unescape(s):
    def rep(m):
        e = m.group(1)
        return {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(e) or chr(int(e[1:], 16))
    return _ESC.sub(rep, s)


def load_sentences():
    texts = []
    with open(os.path.join(ROOT, "tests", "reference", "sentences.txt"), encoding="utf-8",
              newline="\n") as f:
        for line in f:
            line = line[:-1] if line.endswith("\n") else line
            if line.startswith("# ") or line == "":
                continue
            texts.append(unescape(line))
    nref = len(texts)
    for name in ("fortunes", "literature", "riddles"):
        path = os.path.join(FORTUNES, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for entry in re.split(r"^%$", f.read(), flags=re.M):
                entry = entry.strip()
                if entry:
                    texts.append(entry)
    seen, out = set(), []
    for t in texts:
        if t.strip() and t not in seen:
            seen.add(t)
            out.append(t)
    return out, nref


def make_data(work, n, seed):
    path = os.path.join(work, f"bert-{n}-s{seed}.h5")
    uniq, nref = load_sentences()
    if not os.path.exists(path):
        import h5py
        import numpy as np
        rows = [uniq[i % len(uniq)] for i in range(n)]
        random.Random(seed).shuffle(rows)
        tmp = path + ".tmp"
        with h5py.File(tmp, "w") as f:
            f.create_dataset("text", data=np.array(rows, dtype=object),
                             dtype=h5py.string_dtype("utf-8"))
        os.replace(tmp, path)
    return path, len(uniq), nref


# ---- peers ----------------------------------------------------------------------------------

def build_peer(build):
    exe = os.path.join(build, "sgemm_peer")
    src = os.path.join(ROOT, "bench", "sgemm_peer.c")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    incs = [d for d in ("/usr/include/x86_64-linux-gnu/openblas-pthread", "/usr/include/openblas")
            if os.path.exists(os.path.join(d, "cblas.h"))]
    sh(["cc", "-O2", src] + [f"-I{d}" for d in incs] + ["-lopenblas", "-o", exe])
    return exe


CORENAME = ("import ctypes; l = ctypes.CDLL('libopenblas.so.0'); "
            "l.openblas_get_corename.restype = ctypes.c_char_p; "
            "print(l.openblas_get_corename().decode())")


def torch_worker(args):
    """Runs in the venv's python: embeds the texts, writes embeddings (.npy) and a JSON line."""
    t_start = time.perf_counter()
    import ctypes

    import h5py
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(args.threads)
    with h5py.File(args.texts, "r") as f:
        texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in f["text"][...]]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()

    def embed(batch_texts_ids):
        L = max(len(x) for x in batch_texts_ids)
        ids = torch.zeros((len(batch_texts_ids), L), dtype=torch.long)
        mask = torch.zeros((len(batch_texts_ids), L), dtype=torch.long)
        for i, x in enumerate(batch_texts_ids):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        h = model(input_ids=ids, attention_mask=mask,
                  token_type_ids=torch.zeros_like(ids)).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1)

    with torch.inference_mode():  # warm-up: thread pools, first-call allocations
        embed(tok(texts[:8], truncation=True, max_length=args.max_length)["input_ids"])
    load_s = time.perf_counter() - t_start

    with torch.inference_mode():
        t0 = time.perf_counter()
        ids = tok(texts, truncation=True, max_length=args.max_length)["input_ids"]
        t1 = time.perf_counter()
        lens = [len(x) for x in ids]
        order = sorted(range(len(ids)), key=lambda i: lens[i])
        out = np.zeros((len(ids), HIDDEN), dtype=np.float32)
        padded = 0
        for b in range(0, len(order), args.batch):
            rows = order[b: b + args.batch]
            e = embed([ids[i] for i in rows])
            out[rows] = e.numpy()
            padded += len(rows) * max(lens[i] for i in rows)
        t2 = time.perf_counter()
    np.save(args.out, out)
    lib = ctypes.CDLL("libopenblas.so.0")
    lib.openblas_get_corename.restype = ctypes.c_char_p
    cap = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    print(json.dumps(dict(load_s=load_s, tokenize_s=t1 - t0, forward_s=t2 - t1, total_s=t2 - t0,
                          rows=len(ids), tokens=sum(lens), padded_tokens=padded,
                          truncated=sum(1 for t, n in zip(texts, lens) if n == args.max_length),
                          threads=torch.get_num_threads(),
                          openblas_core=lib.openblas_get_corename().decode(),
                          cpu_capability=cap.group(1) if cap else "?",
                          torch=torch.__version__)))
    return 0


def cosines(a, b):
    import numpy as np
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="sentences (rows)")
    ap.add_argument("--seed", type=int, default=1, help="shuffle seed of the rows")
    ap.add_argument("--configs", default="1:1,2:1,2:2", help="ranks:tp,...")
    ap.add_argument("--unit-rows", type=int, default=0, help="default: ceil(N / 4)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--torch-batch", type=int, default=64, help="PyTorch rows per batch")
    ap.add_argument("--peer-m", type=int, default=2048, help="M of the sgemm peer shapes")
    ap.add_argument("--reps", type=int, default=5, help="sgemm_peer repetitions (best of)")
    ap.add_argument("--native-blas", action="store_true",
                    help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for every program run")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    ap.add_argument("--model", default="", help="default: the path in build/models/minilm.path")
    ap.add_argument("--python", default="/tmp/slref/bin/python", help="python with transformers")
    ap.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench-work"))
    ap.add_argument("--mpirun", default=os.environ.get("MPIEXEC", "mpirun"))
    # internal: the PyTorch side, run in the venv's python
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--texts", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        return torch_worker(args)

    import h5py
    import numpy as np

    t_bench = time.time()
    load0 = os.getloadavg()
    ncpu = os.cpu_count() or 1
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    if not os.access(args.shardline, os.X_OK):
        sys.exit(f"bench: {args.shardline} not found; build first (cmake --build build)")
    model = args.model
    if not model:
        p = os.path.join(os.path.dirname(args.shardline), "models", "minilm.path")
        if not os.path.exists(p):
            sys.exit("bench: no model: run scripts/install-models.sh or give --model")
        model = open(p).read().strip()
    if not os.access(args.python, os.X_OK):
        sys.exit(f"bench: {args.python} not found (a python with torch and transformers 4.47.1: "
                 "/usr/bin/python3 -m venv --system-site-packages /tmp/slref && "
                 "/tmp/slref/bin/pip install transformers==4.47.1)")
    os.makedirs(args.work, exist_ok=True)
    data, nuniq, nref = make_data(args.work, args.n, args.seed)
    unit_rows = args.unit_rows or -(-args.n // 4)

    env = dict(os.environ)
    if args.native_blas:
        for k in BLAS_ENV:
            env.pop(k, None)
    blas_env = ", ".join(f"{k}={env[k]}" for k in BLAS_ENV if k in env) or "both unset"
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="true")

    # ---- the sgemm peer, the whole machine's threads ----
    peer = build_peer(os.path.dirname(args.shardline))
    env.update(OMP_NUM_THREADS=str(ncpu), OPENBLAS_NUM_THREADS=str(ncpu))
    shapes = [(HIDDEN, HIDDEN), (FFN, HIDDEN), (HIDDEN, FFN)]
    peer_rows = [json.loads(sh([peer, str(args.peer_m), str(n), str(k), str(ncpu),
                                str(args.reps)], env=env).stdout) for n, k in shapes]
    layer_s = 4 * peer_rows[0]["best_seconds"] + peer_rows[1]["best_seconds"] + \
        peer_rows[2]["best_seconds"]
    peer_gflops = 2 * args.peer_m * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) / layer_s / 1e9
    peer_core = sh(["/usr/bin/python3", "-c", CORENAME], env=env).stdout.strip()

    # ---- PyTorch ----
    temb = os.path.join(args.work, "torch-emb.npy")
    r = sh([args.python, os.path.abspath(__file__), "--torch-worker", "--texts", data,
            "--out", temb, "--model", model, "--threads", str(ncpu), "--batch",
            str(args.torch_batch), "--max-length", str(args.max_length)], env=env)
    pt = json.loads(r.stdout.strip().splitlines()[-1])
    pt_emb = np.load(temb)

    # ---- shardline ----
    results = []
    for nranks, tp in configs:
        out = os.path.join(args.work, f"bert-out-np{nranks}-tp{tp}")
        shutil.rmtree(out, ignore_errors=True)
        threads = max(1, ncpu // nranks)
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        cmd = [args.mpirun, "-np", str(nranks), "--bind-to", "none", args.shardline, "run",
               "--model", model, "--input", data, "--input-dataset", "text", "--output", out,
               "--task", "embed", "--tp", str(tp), "--unit-rows", str(unit_rows),
               "--max-length", str(args.max_length), "--device", "cpu"]
        t0 = time.time()
        r = sh(cmd, env=env, check=False)
        wall = time.time() - t0
        if r.returncode != 0:
            print(f"bench: np {nranks} tp {tp} failed with status {r.returncode}:\n"
                  f"{r.stderr[-2000:]}", file=sys.stderr)
            results.append(None)
            continue
        with open(os.path.join(out, "report.json")) as f:
            rep = json.load(f)
        with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
            emb = f["embeddings"][...]
        cos = cosines(emb, pt_emb)
        core = re.search(r"OpenBLAS[^,)]*", rep.get("device", ""))
        results.append(dict(np=nranks, tp=tp, threads=threads, wall=wall, report=rep,
                            min_cos=float(cos.min()), core=core.group(0) if core else rep.get("device")))
        shutil.rmtree(out, ignore_errors=True)

    # ---- tables ----
    rows = pt["rows"]
    print(f"all-MiniLM-L6-v2 fp32, {rows} sentences ({nuniq} distinct: {nref} from "
          f"tests/reference/sentences.txt + fortunes-min, cycled, shuffled seed {args.seed}), "
          f"{pt['tokens']} real tokens ({pt['tokens'] / rows:.1f}/sentence, "
          f"{pt['truncated']} truncated at {args.max_length}); {ncpu} CPUs; {blas_env}")
    print(f"shardline: default --batch-tokens/--batch-size, --unit-rows {unit_rows}; PyTorch "
          f"{pt['torch']}: sorted rows, batches of {args.torch_batch}, "
          f"{pt['padded_tokens'] / pt['tokens'] - 1:.1%} padding, {pt['threads']} threads, "
          f"load+warm-up {pt['load_s']:.2f} s (not timed)")
    print(f"OpenBLAS core: shardline {results[0]['core'] if results and results[0] else '?'}; "
          f"PyTorch {pt['openblas_core']} (ATen CPU capability {pt['cpu_capability']}); "
          f"sgemm_peer {peer_core}")
    print(f"peer: OpenBLAS sgemm, {ncpu} threads, best of {args.reps}: "
          + ", ".join(f"{p['m']}x{p['n']}x{p['k']} {p['gflops']:.1f}" for p in peer_rows)
          + f" GFLOP/s; per layer (4x{HIDDEN}x{HIDDEN} + up + down) {peer_gflops:.1f} GFLOP/s")
    hdr = ("config", "thr", "job", "compute", "read", "gemm", "gemm", "GEMM", "GEMM", "sent/s",
           "tok/s", "sent/s", "ratio", "ratio", "min")
    units = ("", "/rank", "s", "s", "s", "s", "share", "GFLOP/s", "/peer", "job", "job",
             "compute", "job", "compute", "cosine")
    fmt = ("{:<13}{:>4}{:>8}{:>8}{:>7}{:>7}{:>7}{:>9}{:>7}{:>8}{:>8}{:>9}{:>7}{:>9}{:>9}")
    print(fmt.format(*hdr))
    print(fmt.format(*units))
    pt_sps = rows / pt["total_s"]
    for (nranks, tp), res in zip(configs, results):
        name = f"np{nranks} tp{tp}"
        if res is None:
            print(f"{name:<13}  FAILED")
            continue
        rep = res["report"]
        job, comp = rep["seconds"], rep["compute_seconds"]
        gs, gf = rep.get("gemm_seconds", float("nan")), rep.get("gemm_gflop", float("nan"))
        ggf = gf / gs if gs else float("nan")
        print(fmt.format(name, res["threads"], f"{job:.2f}", f"{comp:.2f}",
                         f"{rep['read_seconds']:.2f}", f"{gs:.2f}", f"{gs / comp:.0%}",
                         f"{ggf:.1f}", f"{ggf / peer_gflops:.2f}",
                         f"{rep['rows_per_second']:.1f}", f"{rep['tokens_per_second']:.0f}",
                         f"{rep['rows_computed'] / comp:.1f}",
                         f"{rep['rows_per_second'] / pt_sps:.2f}",
                         f"{rep['rows_computed'] / comp / pt_sps:.2f}", f"{res['min_cos']:.6f}"))
    print(fmt.format("pytorch", pt["threads"], f"{pt['total_s']:.2f}", f"{pt['forward_s']:.2f}",
                     f"{pt['tokenize_s']:.2f}", "", "", "", "", f"{pt_sps:.1f}",
                     f"{pt['tokens'] / pt['total_s']:.0f}", f"{rows / pt['forward_s']:.1f}",
                     "1.00", "", ""))
    print("(shardline: job = report.json seconds (process start to end, model load included), "
          "compute/read/gemm = its *_seconds, read includes tokenization on the I/O thread, "
          "gemm share = gemm/compute, GEMM GFLOP/s = gemm_gflop/gemm_seconds, /peer = over the "
          "sgemm per-layer rate; pytorch: job = tokenize+forward+pool, compute = forward+pool, "
          "read = tokenize; ratio = shardline sent/s / pytorch job sent/s; min cosine = "
          "shardline vs pytorch, worst row)")
    for (nranks, tp), res in zip(configs, results):
        if res:
            rep = res["report"]
            pad = rep.get("gemm_gflop", 0) * 1e9 / (rep["tokens"] * GEMM_FLOP_PER_TOKEN) - 1
            print(f"np{nranks} tp{tp}: mpirun wall {res['wall']:.2f} s, tokens {rep['tokens']}, "
                  f"truncated {rep.get('truncated_rows')}, failed {rep['failed_rows']}, "
                  f"comm {rep['comm_seconds']:.2f} s, GEMM FLOP over real tokens' "
                  f"{pad:+.1%}, non-GEMM compute {comp_other(rep):.2f} s")
    print(f"benchmark wall time {time.time() - t_bench:.0f} s; load average (1, 5, 15 min) at "
          f"start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, at end "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    bad = [r for r in results if r is None or r["min_cos"] < args.min_cosine]
    if bad:
        print(f"bench: {len(bad)} configuration(s) failed or disagree with PyTorch "
              f"(cosine < {args.min_cosine})", file=sys.stderr)
    return 1 if bad else 0


def comp_other(rep):
    return rep["compute_seconds"] - rep.get("gemm_seconds", 0.0)


if __name__ == "__main__":
    sys.exit(main())
