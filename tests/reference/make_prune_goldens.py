#!/usr/bin/env python3
"""make_prune_goldens.py — transformers' outputs of all-MiniLM-L6-v2 pruned by `shardline prune`,
for tests/mpi/test_prune.py (committed, so the test suite needs no PyTorch).

Produces tests/reference/goldens/minilm_pruned_goldens.h5:
    text        variable-length UTF-8 strings [N]: sentences 64..64+N of tests/reference/
                sentences.txt (not the calibration rows, which are the first 64)
    embeddings  float32 [N, 384]: the pruned model loaded by transformers' AutoModel (it
                applies config.json's pruned_heads before loading the smaller tensors), each
                sentence alone (no padding), mean pooling over its tokens, L2 normalisation
    attributes: pruned_heads (config.json's, as JSON text), intermediate_size, the prune
                command's arguments, versions of transformers and torch.
The test prunes the same way and first checks that it removed the same heads and columns
(pruned_heads, intermediate_size), then compares shardline's embeddings of the pruned model
with these.

Run (from the repository root, after building shardline and scripts/install-models.sh), with
the reference venv of tests/reference/make_bert_goldens.py:
  /tmp/slref/bin/python tests/reference/make_prune_goldens.py
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from corpus import load_sentences  # noqa: E402

N = 24
ARGS = ["--heads", "0.25", "--ffn", "0.25", "--rows", "64"]


def main():
    with open(os.path.join(ROOT, "build", "models", "minilm.path")) as f:
        model = f.read().strip()
    sentences = load_sentences()
    texts = sentences[64:64 + N]
    tmp = tempfile.mkdtemp(prefix="sl-prune-gold-")
    calib = os.path.join(tmp, "calib.h5")
    with h5py.File(calib, "w") as f:
        f.create_dataset("text", data=np.array(sentences[:64], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
    out = os.path.join(tmp, "pruned")
    subprocess.run([os.path.join(ROOT, "build", "shardline"), "prune", "--model", model,
                    "--calib", calib, "--output", out] + ARGS, check=True)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    tok = AutoTokenizer.from_pretrained(out)
    m = AutoModel.from_pretrained(out).eval()
    embs = []
    with torch.no_grad():
        for t in texts:
            b = tok(t, truncation=True, max_length=256, return_tensors="pt")
            h = m(**b).last_hidden_state[0]
            e = h.mean(0)
            embs.append((e / e.norm()).numpy().astype(np.float32))
    dst = os.path.join(HERE, "goldens", "minilm_pruned_goldens.h5")
    with h5py.File(dst, "w") as f:
        f.create_dataset("text", data=np.array(texts, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("embeddings", data=np.stack(embs))
        vs = h5py.string_dtype("utf-8")
        f.attrs.create("pruned_heads", json.dumps(cfg["pruned_heads"], sort_keys=True), dtype=vs)
        f.attrs["intermediate_size"] = cfg["intermediate_size"]
        f.attrs.create("prune_args", " ".join(ARGS), dtype=vs)
        f.attrs.create("transformers", transformers.__version__, dtype=vs)
        f.attrs.create("torch", str(torch.__version__), dtype=vs)
    print(f"wrote {dst}: {len(texts)} embeddings, pruned_heads {cfg['pruned_heads']}")


if __name__ == "__main__":
    main()
