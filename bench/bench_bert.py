#!/usr/bin/python3
"""bench_bert.py — sentence-embedding throughput of `shardline run --task embed` against PyTorch.

What it measures: the same N real sentences (default 2000), embedded with all-MiniLM-L6-v2
(fp32, max length 256 tokens, mean pooling + L2 normalisation) on the CPU
 - by shardline, `mpirun --bind-to none <shardline> run --task embed` for each configuration
   (default: -np 1, the same 2 threads as PyTorch; --configs adds e.g. 2:1, 2:2), default
   --batch-tokens and --batch-size, --unit-rows N/4, OMP_NUM_THREADS = OPENBLAS_NUM_THREADS =
   nproc / ranks (the BLIS build sets BLIS's threads to the same count itself); numbers from each
   run's report.json (seconds: the whole job from process start, model load included;
   compute/read seconds, gemm_seconds and gemm_gflop: time and FLOP in sl_matmul's sgemm calls;
   read includes the C tokenizer, which runs on the I/O thread). --shardline is the build under
   test (default build/shardline); --openblas-shardline optionally names a second build made with
   -DSL_BLAS=openblas, run the same way, which separates what the BLAS gives from the rest
   (--also LABEL=PATH adds further builds);
 - by PyTorch + transformers (AutoTokenizer (fast) + AutoModel, /tmp/slref venv), in a separate
   process with torch.set_num_threads(nproc) and OMP/OPENBLAS threads = nproc, under
   torch.inference_mode(): all texts tokenized at once (truncation to 256, no padding), rows sorted
   by token length (stable), batches of up to --torch-batch (default 64) consecutive sorted rows
   padded to the batch's longest row, forward, mean pooling over real tokens, L2 normalisation.
   Timed: tokenization + forward + pooling (load and one small warm-up batch are timed apart).
   --torch-blis adds a second PyTorch side whose libblas.so.3 is BLIS's (LD_LIBRARY_PATH), to
   show what the same BLAS would give PyTorch.

Interleaving: the machine may be shared and noisy, so the sides run in rounds (--rounds, default
5): each round first measures the sgemm peers, then runs every side once, in the listed order on
even rounds and in reverse order on odd rounds (A B C, C B A, ...), so drifting load hits all
sides alike. Each shardline run is paired with the PyTorch run of the same round: the per-round
ratio is shardline sentences/s (job) / PyTorch sentences/s. The summary gives medians and the
min-max spread over rounds.

Both sets of embeddings are compared row by row (cosine against the first PyTorch run; the
benchmark fails below 0.9999). Rates: sentences/s = rows / seconds, tokens/s = real tokens (incl.
[CLS]/[SEP], after truncation; padding not counted) / seconds.

GEMM peers: bench/sgemm_peer.c (cblas_sgemm alone, nproc threads, best of --reps), built twice,
against OpenBLAS and against BLIS (when installed), for the encoder's GEMM shapes M = --peer-m (a
typical batch's tokens), (N, K) = (384, 384) [Q, K, V, attention output], (1536, 384) [FFN up],
(384, 1536) [FFN down]; "per layer" weighs them as one encoder layer does (4 x 384x384 + up +
down). Shardline's GEMM rate is set against the peer of the BLAS it was built with.

BLAS: every program's BLAS is printed: shardline's from report.json's device (BLIS version and
kernel set, or OpenBLAS's config with its core), PyTorch's from the BLAS libraries mapped into
its process (and OpenBLAS's core, or BLIS's kernel set), the peers' from the libraries
themselves. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are taken from the environment as they are;
--native-blas removes both from the environment of every program this script starts.

Run (from the repository root, after building and scripts/install-models.sh):
    /usr/bin/python3 bench/bench_bert.py --shardline /tmp/build-blis/shardline \\
        --openblas-shardline /tmp/build-openblas/shardline --work /tmp/bench-work
    /usr/bin/python3 bench/bench_bert.py --n 500 --rounds 2       # quicker
Results are printed only; record them by hand in bench/RESULTS.md (command, machine, date,
numbers) — nothing is appended automatically. Work files go to --work (default
build/bench-work/).
"""
import argparse
import glob
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORTUNES = "/usr/share/games/fortunes"
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BLIS_LIB_DIR = "/usr/lib/x86_64-linux-gnu/blis-openmp"
BLIS_INC_DIR = "/usr/include/x86_64-linux-gnu/blis-openmp"
HIDDEN, FFN, LAYERS = 384, 1536, 6
# GEMM FLOP per real token in the encoder (Q, K, V, attention output, FFN up, FFN down).
GEMM_FLOP_PER_TOKEN = 2 * LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN)

sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import corpus  # noqa: E402  (tests/reference/corpus.py: the sentence corpus)


def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        sys.exit(f"bench: failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r


# ---- sentences ------------------------------------------------------------------------------

def load_sentences():
    texts = corpus.load_sentences()
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


# ---- peers ----------------------------------------------------------------------------------

def build_peer(build, blis):
    """bench/sgemm_peer.c against OpenBLAS, or against BLIS (OpenMP build) when `blis`."""
    exe = os.path.join(build, "sgemm_peer_blis" if blis else "sgemm_peer")
    src = os.path.join(ROOT, "bench", "sgemm_peer.c")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    if blis:
        cmd = ["cc", "-O2", "-DPEER_BLIS", "-isystem", BLIS_INC_DIR, src, f"-L{BLIS_LIB_DIR}",
               f"-Wl,-rpath,{BLIS_LIB_DIR}", "-lblis", "-fopenmp", "-o", exe]
    else:
        incs = [d for d in ("/usr/include/x86_64-linux-gnu/openblas-pthread",
                            "/usr/include/openblas") if os.path.exists(os.path.join(d, "cblas.h"))]
        cmd = ["cc", "-O2", src] + [f"-I{d}" for d in incs] + ["-lopenblas", "-o", exe]
    sh(cmd)
    return exe


def run_peer(exe, m, threads, reps, env):
    """Best-of-reps GFLOP/s for the three encoder shapes and the per-layer rate."""
    shapes = [(HIDDEN, HIDDEN), (FFN, HIDDEN), (HIDDEN, FFN)]
    rows = [json.loads(sh([exe, str(m), str(n), str(k), str(threads), str(reps)],
                          env=env).stdout) for n, k in shapes]
    layer_s = 4 * rows[0]["best_seconds"] + rows[1]["best_seconds"] + rows[2]["best_seconds"]
    layer = 2 * m * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) / layer_s / 1e9
    return dict(shapes=[r["gflops"] for r in rows], layer=layer, blas=rows[0].get("blas", "?"))


# ---- PyTorch side ---------------------------------------------------------------------------

def blas_in_process():
    """The BLAS libraries mapped into this process, with OpenBLAS's core or BLIS's kernel set."""
    import ctypes
    libs = []
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if p.startswith("/") and re.search(r"blas|blis", os.path.basename(p)) and p not in libs:
                libs.append(p)
    notes = []
    for p in libs:
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            notes.append(p)
            continue
        if hasattr(lib, "openblas_get_corename"):
            lib.openblas_get_corename.restype = ctypes.c_char_p
            notes.append(f"{os.path.basename(p)}: OpenBLAS {lib.openblas_get_corename().decode()}")
        elif hasattr(lib, "bli_arch_query_id"):
            lib.bli_arch_string.restype = ctypes.c_char_p
            lib.bli_arch_string.argtypes = [ctypes.c_int]
            lib.bli_info_get_version_str.restype = ctypes.c_char_p
            notes.append(f"{os.path.basename(p)}: BLIS {lib.bli_info_get_version_str().decode()} "
                         f"{lib.bli_arch_string(lib.bli_arch_query_id()).decode()}")
        else:
            notes.append(p)
    return dict(libs=libs, notes=notes)


def torch_worker(args):
    """Runs in the venv's python: embeds the texts, writes embeddings (.npy) and a JSON line."""
    t_start = time.perf_counter()
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
    cap = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    print(json.dumps(dict(load_s=load_s, tokenize_s=t1 - t0, forward_s=t2 - t1, total_s=t2 - t0,
                          rows=len(ids), tokens=sum(lens), padded_tokens=padded,
                          truncated=sum(1 for t, n in zip(texts, lens) if n == args.max_length),
                          threads=torch.get_num_threads(), blas=blas_in_process(),
                          cpu_capability=cap.group(1) if cap else "?",
                          torch=torch.__version__)))
    return 0


def cosines(a, b):
    import numpy as np
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-30)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, f="{:.2f}"):
    """'median [min-max]' of a list."""
    if not xs:
        return "-"
    return f"{f.format(med(xs))} [{f.format(min(xs))}-{f.format(max(xs))}]"


# ---- the runs -------------------------------------------------------------------------------

def run_torch(side, args, data, model, ncpu, env, work, tag):
    out = os.path.join(work, f"torch-emb-{tag}.npy")
    e = dict(env, OMP_NUM_THREADS=str(ncpu), OPENBLAS_NUM_THREADS=str(ncpu))
    if side["blis"]:
        e.update(LD_LIBRARY_PATH=BLIS_LIB_DIR, BLIS_NUM_THREADS=str(ncpu))
    r = sh([args.python, os.path.abspath(__file__), "--torch-worker", "--texts", data,
            "--out", out, "--model", model, "--threads", str(ncpu), "--batch",
            str(args.torch_batch), "--max-length", str(args.max_length)], env=e)
    import numpy as np
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["emb"] = np.load(out)
    res["job_s"], res["compute_s"] = res["total_s"], res["forward_s"]
    return res


def run_shardline(side, args, data, model, ncpu, env, work, tag, unit_rows):
    import h5py
    nranks, tp = side["np"], side["tp"]
    out = os.path.join(work, f"bert-out-{tag}")
    shutil.rmtree(out, ignore_errors=True)
    threads = max(1, ncpu // nranks)
    e = dict(env, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    cmd = [args.mpirun, "-np", str(nranks), "--bind-to", "none", side["exe"], "run",
           "--model", model, "--input", data, "--input-dataset", "text", "--output", out,
           "--task", "embed", "--tp", str(tp), "--unit-rows", str(unit_rows),
           "--max-length", str(args.max_length), "--device", "cpu"]
    t0 = time.time()
    r = sh(cmd, env=e, check=False)
    wall = time.time() - t0
    if r.returncode != 0:
        print(f"bench: {side['name']} failed with status {r.returncode}:\n{r.stderr[-2000:]}",
              file=sys.stderr)
        return None
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
        emb = f["embeddings"][...]
    shutil.rmtree(out, ignore_errors=True)
    dev = rep.get("device", "")
    m = re.search(r"(BLIS [^,)]*|OpenBLAS [^,)]*)", dev)
    gs, gf = rep.get("gemm_seconds", float("nan")), rep.get("gemm_gflop", float("nan"))
    return dict(job_s=rep["seconds"], compute_s=rep["compute_seconds"], wall=wall, emb=emb,
                threads=threads, report=rep, blas=m.group(1) if m else dev,
                gemm_s=gs, gemm_gflops=gf / gs if gs else float("nan"),
                other_s=rep["compute_seconds"] - rep.get("gemm_seconds", 0.0),
                comm_s=rep.get("comm_seconds", 0.0), tokens=rep["tokens"],
                pad=gf * 1e9 / (rep["tokens"] * GEMM_FLOP_PER_TOKEN) - 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="sentences (rows)")
    ap.add_argument("--seed", type=int, default=1, help="shuffle seed of the rows")
    ap.add_argument("--configs", default="1:1", help="shardline ranks:tp,... (default 1:1)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (A B, B A, ...)")
    ap.add_argument("--unit-rows", type=int, default=0, help="default: ceil(N / 4)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--torch-batch", type=int, default=64, help="PyTorch rows per batch")
    ap.add_argument("--torch-blis", action="store_true",
                    help="also run PyTorch with BLIS as its libblas.so.3 (LD_LIBRARY_PATH)")
    ap.add_argument("--peer-m", type=int, default=2048, help="M of the sgemm peer shapes")
    ap.add_argument("--reps", type=int, default=5, help="sgemm_peer repetitions (best of)")
    ap.add_argument("--native-blas", action="store_true",
                    help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for every program run")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    ap.add_argument("--model", default="", help="default: <shardline's dir>/models/minilm.path")
    ap.add_argument("--python", default="/tmp/slref/bin/python", help="python with transformers")
    ap.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    ap.add_argument("--openblas-shardline", default="",
                    help="a second shardline built with -DSL_BLAS=openblas, run alongside")
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=PATH",
                    help="one more shardline build to run alongside, named LABEL (repeatable)")
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

    t_bench = time.time()
    load0 = os.getloadavg()
    ncpu = os.cpu_count() or 1
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    builds = [("", args.shardline)]
    if args.openblas_shardline:
        builds.append(("[openblas build]", args.openblas_shardline))
    for a in args.also:
        label, _, exe = a.partition("=")
        if not exe:
            sys.exit(f"bench: --also {a}: expected LABEL=PATH")
        builds.append((f"[{label}]", exe))
    for _, exe in builds:
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench: {exe} not found; build first")
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
    for k in ("LD_LIBRARY_PATH", "BLIS_NUM_THREADS", "BLIS_ARCH_TYPE"):
        env.pop(k, None)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="true")

    peers = {"openblas": build_peer(args.work, False)}
    if os.path.exists(os.path.join(BLIS_INC_DIR, "blis.h")):
        peers["blis"] = build_peer(args.work, True)

    sides = [dict(name="pytorch", kind="torch", blis=False)]
    if args.torch_blis:
        sides.append(dict(name="pytorch[BLIS libblas]", kind="torch", blis=True))
    for label, exe in builds:
        for nranks, tp in configs:
            sides.append(dict(name=f"shardline{label} np{nranks} tp{tp}", kind="shardline",
                              exe=exe, np=nranks, tp=tp))
    runs = {s["name"]: [] for s in sides}   # per side: one result (or None) per round
    peer_runs = {k: [] for k in peers}
    ref = None
    print(f"bench: {len(sides)} sides x {args.rounds} rounds; load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", file=sys.stderr)
    for rnd in range(args.rounds):
        penv = dict(env, OMP_NUM_THREADS=str(ncpu), OPENBLAS_NUM_THREADS=str(ncpu))
        for k, exe in peers.items():
            peer_runs[k].append(run_peer(exe, args.peer_m, ncpu, args.reps, penv))
        order = sides if rnd % 2 == 0 else sides[::-1]
        for s in order:
            tag = f"r{rnd}-{re.sub(r'[^A-Za-z0-9]+', '-', s['name'])}"
            if s["kind"] == "torch":
                res = run_torch(s, args, data, model, ncpu, env, args.work, tag)
            else:
                res = run_shardline(s, args, data, model, ncpu, env, args.work, tag, unit_rows)
            if res is not None:
                if ref is None and s["kind"] == "torch" and not s["blis"]:
                    ref = res["emb"]
                res["load"] = os.getloadavg()[0]
            runs[s["name"]].append(res)
            print(f"bench: round {rnd + 1}/{args.rounds} {s['name']}: "
                  + (f"{res['job_s']:.2f} s" if res else "FAILED"), file=sys.stderr)
    for s in sides:
        for r in runs[s["name"]]:
            if r:
                r["min_cos"] = float(cosines(r["emb"], ref).min())

    # ---- tables ----
    pt0 = next(r for r in runs["pytorch"] if r)
    rows, ntok = pt0["rows"], pt0["tokens"]
    print(f"all-MiniLM-L6-v2 fp32, {rows} sentences ({nuniq} distinct: {nref} from "
          f"tests/reference/sentences.txt + fortunes-min, cycled, shuffled seed {args.seed}), "
          f"{ntok} real tokens ({ntok / rows:.1f}/sentence, {pt0['truncated']} truncated at "
          f"{args.max_length}); {ncpu} CPUs; {blas_env}; {args.rounds} interleaved rounds")
    print(f"shardline: default --batch-tokens/--batch-size, --unit-rows {unit_rows}; PyTorch "
          f"{pt0['torch']}: sorted rows, batches of {args.torch_batch}, "
          f"{pt0['padded_tokens'] / ntok - 1:.1%} padding, {pt0['threads']} threads, "
          f"ATen CPU capability {pt0['cpu_capability']}, load+warm-up "
          f"{spread([r['load_s'] for r in runs['pytorch'] if r])} s (not timed)")
    print("BLAS:")
    for s in sides:
        r = next((x for x in runs[s["name"]] if x), None)
        if r is None:
            continue
        if s["kind"] == "torch":
            desc = "; ".join(r["blas"]["notes"]) or "?"
        else:
            desc = r["blas"]
        print(f"  {s['name']:<34} {desc}")
    for k in peers:
        print(f"  {'sgemm_peer (' + k + ')':<34} {peer_runs[k][0]['blas']}")
    print(f"peers: cblas_sgemm alone, {ncpu} threads, M = {args.peer_m}, best of {args.reps} per "
          f"round; GFLOP/s median [min-max] over the rounds:")
    for k in peers:
        pr = peer_runs[k]
        print(f"  {k:<9} {HIDDEN}x{HIDDEN} {spread([p['shapes'][0] for p in pr], '{:.1f}')}, "
              f"up {FFN}x{HIDDEN} {spread([p['shapes'][1] for p in pr], '{:.1f}')}, "
              f"down {HIDDEN}x{FFN} {spread([p['shapes'][2] for p in pr], '{:.1f}')}; "
              f"per layer {spread([p['layer'] for p in pr], '{:.1f}')}")

    print("per round (seconds: shardline job = report.json seconds, model load included; "
          "PyTorch = tokenize + forward + pool; ratio = PyTorch seconds / shardline seconds of "
          "the same round = shardline sent/s / PyTorch sent/s; load = 1-min load average after "
          "the run):")
    hdr = "{:<7}" + "".join("{:>%d}" % max(14, len(s["name"]) + 2) for s in sides)
    print(hdr.format("round", *[s["name"] for s in sides]))
    for rnd in range(args.rounds):
        cells = []
        pt = runs["pytorch"][rnd]
        for s in sides:
            r = runs[s["name"]][rnd]
            if r is None:
                cells.append("FAILED")
            elif s["kind"] == "shardline" and pt:
                cells.append(f"{r['job_s']:.2f} ({pt['job_s'] / r['job_s']:.2f}x)")
            else:
                cells.append(f"{r['job_s']:.2f} l{r['load']:.1f}")
        print(hdr.format(str(rnd + 1), *cells))

    print("summary, median [min-max] over the rounds:")
    fmt = "{:<34}{:>22}{:>22}{:>10}{:>22}{:>22}{:>10}"
    print(fmt.format("side", "job s", "compute s", "sent/s", "ratio job", "ratio compute",
                     "min cos"))
    for s in sides:
        rs = [r for r in runs[s["name"]] if r]
        pairs = [(r, pt) for r, pt in zip(runs[s["name"]], runs["pytorch"]) if r and pt]
        rj = [pt["job_s"] / r["job_s"] for r, pt in pairs]
        rc = [pt["job_s"] / r["compute_s"] for r, pt in pairs]
        print(fmt.format(s["name"], spread([r["job_s"] for r in rs]),
                         spread([r["compute_s"] for r in rs]),
                         f"{rows / med([r['job_s'] for r in rs]):.1f}" if rs else "-",
                         spread(rj) if s["kind"] == "shardline" else "1",
                         spread(rc) if s["kind"] == "shardline" else "",
                         f"{min(r['min_cos'] for r in rs):.6f}" if rs else "-"))
    print("(ratio job = PyTorch tokenize+forward+pool seconds / shardline job seconds, per "
          "round; ratio compute = the same over shardline's compute seconds; min cos = worst "
          "row's cosine to the first PyTorch run, over every round)")
    print("shardline detail, median over the rounds:")
    fmt2 = "{:<34}{:>8}{:>8}{:>8}{:>14}{:>7}{:>9}{:>8}{:>8}{:>10}"
    print(fmt2.format("side", "gemm s", "share", "GFLOP/s", "peer", "/peer", "other s",
                      "comm s", "read s", "GEMM pad"))
    for s in sides:
        if s["kind"] != "shardline":
            continue
        rs = [r for r in runs[s["name"]] if r]
        if not rs:
            continue
        key = "blis" if rs[0]["blas"].startswith("BLIS") else "openblas"
        pl = med([p["layer"] for p in peer_runs.get(key, [])])
        g = med([r["gemm_gflops"] for r in rs])
        print(fmt2.format(s["name"], f"{med([r['gemm_s'] for r in rs]):.2f}",
                          f"{med([r['gemm_s'] / r['compute_s'] for r in rs]):.0%}", f"{g:.1f}",
                          f"{key} {pl:.0f}", f"{g / pl:.2f}",
                          f"{med([r['other_s'] for r in rs]):.2f}",
                          f"{med([r['comm_s'] for r in rs]):.2f}",
                          f"{med([r['report']['read_seconds'] for r in rs]):.2f}",
                          f"{med([r['pad'] for r in rs]):+.1%}"))
    print("(gemm s / GFLOP/s: report.json gemm_seconds and gemm_gflop / gemm_seconds; peer: the "
          "per-layer sgemm rate of the same BLAS; other s = compute - gemm (attention, "
          "LayerNorm, GELU, adds, pooling, casts); GEMM pad = GEMM FLOP over the real tokens' "
          "- 1)")
    print(f"benchmark wall time {time.time() - t_bench:.0f} s; load average (1, 5, 15 min) at "
          f"start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, at end "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    bad = [s["name"] for s in sides for r in runs[s["name"]]
           if r is None or r["min_cos"] < args.min_cosine]
    if bad:
        print(f"bench: failed or disagree with PyTorch (cosine < {args.min_cosine}): "
              f"{', '.join(sorted(set(bad)))}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
