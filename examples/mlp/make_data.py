"""make_data.py — writes HDF5 input shards for shardline from the synthetic distribution the
example model was trained on (synthetic.py): each shard has dataset `features` float32
[rows, 16] and dataset `labels` int32 [rows] (the true classes, for checking predictions).

Run:  /usr/bin/python3 examples/mlp/make_data.py OUT_DIR N_SHARDS ROWS_PER_SHARD [SEED]
      -> OUT_DIR/shard-00000.h5 ... (SEED defaults to 0)
Shard i draws from its own stream spawned from SEED, so the same arguments give the same
files, and a shard's rows do not depend on how many shards are made. The rows are fresh data
for the example model whatever SEED is: shard streams are spawned from (SEED, 0x5EED), never
the plain integer seeds train_example.py trains and tests with.
"""
import argparse
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic  # noqa: E402


def write_shards(out_dir, n_shards, rows, seed=0):
    """Writes the shards; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    streams = np.random.SeedSequence([seed, 0x5EED]).spawn(n_shards)
    paths = []
    for i, ss in enumerate(streams):
        x, y = synthetic.sample(rows, np.random.default_rng(ss))
        path = os.path.join(out_dir, f"shard-{i:05d}.h5")
        with h5py.File(path, "w") as f:
            chunk = (min(rows, 65536), synthetic.N_FEATURES) if rows else None
            f.create_dataset("features", data=x, chunks=chunk)
            f.create_dataset("labels", data=y)
            f.attrs["generator"] = "shardline examples/mlp/make_data.py"
            f.attrs["seed"] = seed
            f.attrs["shard"] = i
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("n_shards", type=int)
    ap.add_argument("rows_per_shard", type=int)
    ap.add_argument("seed", type=int, nargs="?", default=0)
    args = ap.parse_args()
    if args.n_shards < 1 or args.rows_per_shard < 0:
        ap.error("need N_SHARDS >= 1 and ROWS_PER_SHARD >= 0")
    paths = write_shards(args.out_dir, args.n_shards, args.rows_per_shard, args.seed)
    print(f"wrote {len(paths)} shard(s) of {args.rows_per_shard} rows to {args.out_dir}")


if __name__ == "__main__":
    main()
