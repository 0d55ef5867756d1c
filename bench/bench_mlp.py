#!/usr/bin/python3
"""bench_mlp.py — throughput of `shardline run` on an MLP, against the BLAS's own GEMM speed.

What it measures: a generated dataset (default 4 shards x 65536 rows x 256 float32 features)
scored by a random relu MLP (default dims 256,1024,1024,256, F32) with --batch-size 4096, for
each configuration (default: mpirun -np 1; -np 2 --tp 1; -np 2 --tp 2), on the CPU backend
unless --device says otherwise. From each run's report.json it takes rows/s and the compute
seconds, and computes the model's GFLOP/s = 2 * rows * sum(d_i * d_(i+1)) / seconds, both over
the compute seconds and over the job's total seconds. The peer is bench/sgemm_peer.c (OpenBLAS
cblas_sgemm alone, best of --reps) run in the same invocation for the same layer shapes
(M = batch size, N = d_(i+1), K = d_i) with the machine's thread count; the table gives
shardline's GFLOP/s over the peer's (for --device cuda the CPU peer is not comparable: n/a).

Ranks run with `mpirun --bind-to none` and OMP_NUM_THREADS = OPENBLAS_NUM_THREADS =
nproc / ranks, so every configuration uses the whole machine.

Run (from the repository root, after building into build/):
    /usr/bin/python3 bench/bench_mlp.py                   # defaults above
    /usr/bin/python3 bench/bench_mlp.py --rows 16384 --configs 1:1   # quicker
Results are printed only; record them by hand in bench/RESULTS.md (command, machine, date,
numbers) — nothing is appended automatically. Work files go to build/bench-work/ (reused when
the same sizes are asked again).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "mlp"))
from safetensors_io import save_safetensors  # noqa: E402


def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        sys.exit(f"bench: failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r


def build_peer(build):
    exe = os.path.join(build, "sgemm_peer")
    src = os.path.join(ROOT, "bench", "sgemm_peer.c")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    incs = [d for d in ("/usr/include/x86_64-linux-gnu/openblas-pthread", "/usr/include/openblas")
            if os.path.exists(os.path.join(d, "cblas.h"))]
    sh(["cc", "-O2", src] + [f"-I{d}" for d in incs] + ["-lopenblas", "-o", exe])
    return exe


def make_data(work, shards, rows, features):
    d = os.path.join(work, f"data-{shards}x{rows}x{features}")
    stamp = os.path.join(d, "complete")
    if not os.path.exists(stamp):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        rng = np.random.default_rng(1)
        for i in range(shards):
            with h5py.File(os.path.join(d, f"shard-{i:03d}.h5"), "w") as f:
                f.create_dataset("features",
                                 data=rng.standard_normal((rows, features), dtype=np.float32))
        open(stamp, "w").close()
    return d


def make_model(work, dims):
    d = os.path.join(work, "model-" + "x".join(map(str, dims)))
    if not os.path.exists(os.path.join(d, "config.json")):
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng(2)
        t = {}
        for i in range(len(dims) - 1):
            a = np.sqrt(6.0 / dims[i])
            t[f"layers.{i}.weight"] = rng.uniform(-a, a, (dims[i + 1], dims[i])).astype(np.float32)
            t[f"layers.{i}.bias"] = rng.uniform(-0.1, 0.1, dims[i + 1]).astype(np.float32)
        save_safetensors(os.path.join(d, "model.safetensors"), t)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model_type": "mlp", "dims": dims, "activation": "relu",
                       "final_activation": None}, f)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rows", type=int, default=65536, help="rows per shard")
    ap.add_argument("--dims", default="256,1024,1024,256")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--unit-rows", type=int, default=65536)
    ap.add_argument("--configs", default="1:1,2:1,2:2", help="ranks:tp,... ")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5, help="sgemm_peer repetitions (best of)")
    ap.add_argument("--shardline", default=os.path.join(ROOT, "build", "shardline"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench-work"))
    ap.add_argument("--mpirun", default=os.environ.get("MPIEXEC", "mpirun"))
    args = ap.parse_args()

    dims = [int(v) for v in args.dims.split(",")]
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    ncpu = os.cpu_count() or 1
    os.makedirs(args.work, exist_ok=True)
    if not os.access(args.shardline, os.X_OK):
        sys.exit(f"bench: {args.shardline} not found; build first (cmake --build build)")
    peer = build_peer(os.path.dirname(args.shardline))
    data = make_data(args.work, args.shards, args.rows, dims[0])
    model = make_model(args.work, dims)
    total_rows = args.shards * args.rows
    flop_per_row = 2 * sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
    flops = flop_per_row * total_rows

    # ---- the peer: OpenBLAS sgemm per layer shape, the whole machine's threads ----
    peer_rows, peer_sec = [], 0.0
    for i in range(len(dims) - 1):
        r = json.loads(sh([peer, str(args.batch_size), str(dims[i + 1]), str(dims[i]), str(ncpu),
                           str(args.reps)]).stdout)
        peer_rows.append(r)
        peer_sec += r["best_seconds"]
    peer_gflops = flop_per_row * args.batch_size / peer_sec / 1e9

    # ---- shardline ----
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    results = []
    for nranks, tp in configs:
        out = os.path.join(args.work, f"out-np{nranks}-tp{tp}")
        shutil.rmtree(out, ignore_errors=True)
        threads = max(1, ncpu // nranks)
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        cmd = [args.mpirun, "-np", str(nranks), "--bind-to", "none", args.shardline, "run",
               "--model", model, "--input", os.path.join(data, "*.h5"), "--output", out,
               "--tp", str(tp), "--batch-size", str(args.batch_size),
               "--unit-rows", str(args.unit_rows), "--device", args.device, "--quiet"]
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
        results.append(dict(np=nranks, tp=tp, threads=threads, wall=wall, report=rep))
        shutil.rmtree(out, ignore_errors=True)

    # ---- table ----
    print(f"model dims {dims} relu F32, {total_rows} rows x {dims[0]} features "
          f"({args.shards} shards), batch {args.batch_size}, unit {args.unit_rows}, "
          f"device {args.device}; {flop_per_row / 1e6:.3f} MFLOP/row, {flops / 1e9:.1f} GFLOP")
    print(f"peer: OpenBLAS sgemm, {ncpu} threads, best of {args.reps}: "
          + ", ".join(f"{p['m']}x{p['n']}x{p['k']} {p['gflops']:.1f}" for p in peer_rows)
          + f" GFLOP/s; all layers {peer_gflops:.1f} GFLOP/s")
    hdr = ("config", "threads", "job", "compute", "comm", "read", "write", "rows/s",
           "GFLOP/s", "GFLOP/s", "ratio", "ratio")
    units = ("", "/rank", "s", "s", "s", "s", "s", "", "compute", "job", "compute", "job")
    fmt = "{:<12}{:>8}{:>8}{:>9}{:>8}{:>8}{:>8}{:>11}{:>10}{:>9}{:>9}{:>8}"
    print(fmt.format(*hdr))
    print(fmt.format(*units))
    cpu = args.device == "cpu"
    for (nranks, tp), res in zip(configs, results):
        name = f"np{nranks} tp{tp}"
        if res is None:
            print(f"{name:<12}  FAILED")
            continue
        rep = res["report"]
        g_c = flops / rep["compute_seconds"] / 1e9 if rep.get("compute_seconds") else float("nan")
        g_j = flops / rep["seconds"] / 1e9 if rep.get("seconds") else float("nan")
        print(fmt.format(name, res["threads"], f"{rep['seconds']:.2f}",
                         f"{rep['compute_seconds']:.2f}", f"{rep['comm_seconds']:.2f}",
                         f"{rep['read_seconds']:.2f}", f"{rep['write_seconds']:.2f}",
                         f"{rep['rows_per_second']:.0f}", f"{g_c:.1f}", f"{g_j:.1f}",
                         f"{g_c / peer_gflops:.2f}" if cpu else "n/a",
                         f"{g_j / peer_gflops:.2f}" if cpu else "n/a"))
    print("(job = report.json seconds; compute/comm/read/write = report.json's *_seconds; "
          "ratio = shardline GFLOP/s / peer GFLOP/s)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
