#!/usr/bin/env bash
# demo-mlp.sh — set-up + the tabular example: installs what is missing, builds into build/, generates 4
# HDF5 shards of the example classification problem (examples/mlp/make_data.py: datasets
# `features` float32 [rows, 16] and `labels` int32 [rows]), scores them with the example MLP
# (examples/mlp) on 2 MPI ranks on the CPU, then prints where the predictions are, the first
# predictions (class probabilities) beside their labels, and the accuracy.
#
# Run: scripts/demo-mlp.sh             (from anywhere; output in demo-out/ at the repository root)
#      DEMO_ROWS=100000 scripts/demo-mlp.sh   rows per shard (default 25000)
# Rerunning reuses the generated data and the committed predictions (the job resumes, nothing
# to do); delete demo-out/ to start again.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${DEMO_ROWS:-25000}"
SHARDS=4
SEED=7

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

if ! compgen -G "demo-out/data/*.h5" >/dev/null; then
  echo "demo: generating $SHARDS shards x $ROWS rows in demo-out/data/"
  mkdir -p demo-out/data
  /usr/bin/python3 examples/mlp/make_data.py demo-out/data "$SHARDS" "$ROWS" "$SEED"
fi

echo "demo: mpirun -np 2 build/shardline run --model examples/mlp --input 'demo-out/data/*.h5'" \
     "--input-dataset features --output demo-out/predictions --device cpu"
mpirun -np 2 build/shardline run --model examples/mlp --input 'demo-out/data/*.h5' \
       --input-dataset features --output demo-out/predictions --device cpu

/usr/bin/python3 - <<'PY'
import json
import h5py
import numpy as np

out = "demo-out/predictions"
with h5py.File(f"{out}/predictions.h5", "r") as f:
    pred = f["predictions"][()]
    shards = [(p.decode() if isinstance(p, bytes) else str(p), int(a), int(n))
              for p, a, n in f["shards"][()][["path", "first_row", "rows"]]]
labels = np.zeros(len(pred), dtype=np.int64)
for path, first, rows in shards:
    with h5py.File(path, "r") as f:
        labels[first:first + rows] = f["labels"][()]
report = json.load(open(f"{out}/report.json"))

print(f"\npredictions: {out}/predictions.h5 (/predictions {pred.shape[0]} x {pred.shape[1]} float32),"
      f" part files in {out}/parts/, report in {out}/report.json")
print("\n  row  " + "  ".join(f"p(class {k})" for k in range(pred.shape[1])) + "  predicted  label")
for i in range(8):
    print(f"{i:5d}  " + "  ".join(f"{p:10.4f}" for p in pred[i])
          + f"  {int(np.argmax(pred[i])):9d}  {labels[i]:5d}")
ok = np.isfinite(pred).all(axis=1)
acc = float(np.mean(np.argmax(pred[ok], axis=1) == labels[ok]))
print(f"\naccuracy: {acc * 100:.2f}% of {int(ok.sum())} rows "
      f"({report.get('rows_per_second', float('nan')):.0f} rows/s, "
      f"{report.get('seconds', float('nan')):.2f} s)")
PY
