#!/usr/bin/env bash
# demo.sh — set-up + the main job: installs what is missing, builds into build/, fetches the real
# sentence-embedding model all-MiniLM-L6-v2 (scripts/install-models.sh), writes the fortune
# cookies that Debian's fortunes-min package ships (/usr/share/games/fortunes) as a JSONL file,
# turns it into HDF5 shards of raw text (shardline convert), embeds every fortune on 2 MPI ranks
# on the CPU, exports the embeddings as JSONL (shardline export), then embeds a few queries and
# prints the fortunes nearest to each, so you can see that the embeddings mean something.
#
# Run: scripts/demo.sh                          (from anywhere; output in demo-out/)
#      scripts/demo.sh "a question about love"   your own query (any number of arguments)
# Rerunning resumes: committed units are not computed again; delete demo-out/ to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/install-models.sh >/dev/null
model="$(cat "${SL_MODELS_DIR:-build/models}/minilm.path")"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

queries=("$@")
[ ${#queries[@]} -gt 0 ] || queries=("computers and programs that do not work"
                                     "what is the meaning of life"
                                     "a riddle about a river")

mkdir -p demo-out
/usr/bin/python3 - "${queries[@]}" <<'PY'
import glob, json, os, sys

texts, ids = [], []
for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
    if path.endswith(".dat") or os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, encoding="utf-8", errors="replace") as f:
        found = [t.strip() for t in f.read().split("\n%\n") if t.strip()]
    texts += found
    ids += [f"{os.path.basename(path)}#{i}" for i in range(len(found))]
if not texts:
    sys.exit("demo: no fortunes found in /usr/share/games/fortunes (apt-get install fortunes-min)")
with open("demo-out/fortunes.jsonl", "w", encoding="utf-8") as f:
    for i, t in zip(ids, texts):
        f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
with open("demo-out/queries.txt", "w", encoding="utf-8") as f:
    f.write("".join(" ".join(q.split()) + "\n" for q in sys.argv[1:]))
print(f"demo: {len(texts)} fortunes from /usr/share/games/fortunes in demo-out/fortunes.jsonl")
PY

# JSONL -> HDF5 shards (once: a rerun resumes the job over the same shards)
if [ ! -f demo-out/corpus/convert.json ]; then
  echo "demo: build/shardline convert demo-out/fortunes.jsonl --to demo-out/corpus --id-field id --rows-per-shard 512"
  build/shardline convert demo-out/fortunes.jsonl --to demo-out/corpus --id-field id --rows-per-shard 512
fi
rm -rf demo-out/query
build/shardline convert demo-out/queries.txt --to demo-out/query --quiet

echo "demo: mpirun -np 2 build/shardline run --task embed --model $model --input 'demo-out/corpus/shard-*.h5' --output demo-out/embeddings --device cpu"
mpirun -np 2 build/shardline run --task embed --model "$model" --input 'demo-out/corpus/shard-*.h5' \
       --output demo-out/embeddings --device cpu --unit-rows 256
echo "demo: build/shardline export demo-out/embeddings --to demo-out/embeddings.jsonl"
build/shardline export demo-out/embeddings --to demo-out/embeddings.jsonl
# The queries change with every call: --restart embeds them afresh.
mpirun -np 1 build/shardline run --task embed --model "$model" --input 'demo-out/query/shard-*.h5' \
       --output demo-out/query-embeddings --device cpu --restart --quiet

/usr/bin/python3 - <<'PY'
import json
import h5py
import numpy as np

def strings(ds):
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in ds[()]]

with h5py.File("demo-out/embeddings/predictions.h5", "r") as f:
    emb = f["embeddings"][()]
    shards = f["shards"][()]
texts = []
for rec in shards:
    path = rec["path"].decode() if isinstance(rec["path"], bytes) else rec["path"]
    with h5py.File(path, "r") as g:
        texts += strings(g["text"])
with h5py.File("demo-out/query-embeddings/predictions.h5", "r") as f:
    q = f["embeddings"][()]
with h5py.File("demo-out/query/shard-000000.h5", "r") as f:
    queries = strings(f["text"])
report = json.load(open("demo-out/embeddings/report.json"))
print(f"\nembeddings: demo-out/embeddings/predictions.h5 (/embeddings {emb.shape[0]} x {emb.shape[1]} float32, "
      f"L2-normalised; as JSONL with the fortunes' ids: demo-out/embeddings.jsonl), "
      f"report in demo-out/embeddings/report.json "
      f"({report['rows_computed']} rows computed, {report['seconds']:.1f} s)")
sims = q @ emb.T  # cosine similarity: both sides are unit vectors
for i, query in enumerate(queries):
    print(f"\nquery: {query!r}")
    for j in np.argsort(-sims[i])[:3]:
        one_line = " ".join(texts[j].split())
        print(f"  {sims[i, j]:.3f}  {one_line[:150]}{'...' if len(one_line) > 150 else ''}")
PY
