#!/usr/bin/env python3
"""make_seeds.py — writes the seed corpora of the fuzz targets into OUT/<target>/ (default
build-fuzz/seeds), from the real files of the repository: the example and reference models'
safetensors files cut to their header plus their small tensors, the reference GGUF files, the
reference tokenizer.json files with their vocabularies cut down, the reference configs, job
files and sentences, and small HDF5 input files written here with h5py (text, features, token
ids, and some an input check must refuse). The real models under build/models are used too
when they are installed (their headers only). Needs python3 with numpy and h5py (Debian's).

Run: python3 tests/fuzz/make_seeds.py [OUT]
"""
import glob
import json
import os
import struct
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build-fuzz", "seeds")
MODELS = os.path.join(ROOT, "build", "models")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


def model_path(name):
    p = os.path.join(MODELS, name + ".path")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        q = f.read().strip()
    return q if os.path.exists(q) else None


# ---- safetensors: header + the tensors of at most 4 KiB, repacked ------------------------------
def cut_safetensors(path, limit=4096):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out, blob = {}, b""
        for name, t in header.items():
            if name == "__metadata__":
                out[name] = t
                continue
            b, e = t["data_offsets"]
            if e - b > limit:
                continue
            f.seek(base + b)
            data = f.read(e - b)
            out[name] = dict(t, data_offsets=[len(blob), len(blob) + len(data)])
            blob += data
    h = json.dumps(out).encode()
    return struct.pack("<Q", len(h)) + h + blob


def safetensors_seeds():
    files = ["examples/mlp/model.safetensors"] + sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests/reference/*/*/model.safetensors"))
        + glob.glob(os.path.join(ROOT, "tests/reference/*/model.safetensors")))
    for i, rel in enumerate(files):
        put("fuzz_safetensors", "ref%02d.safetensors" % i, cut_safetensors(os.path.join(ROOT, rel)))
    m = model_path("minilm")
    if m:
        put("fuzz_safetensors", "minilm.safetensors", cut_safetensors(os.path.join(m, "model.safetensors"), 2048))
    # every dtype, 0-d and empty tensors, metadata
    hdr = {"__metadata__": {"format": "pt"},
           "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
           "b": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]},
           "c": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [20, 24]},
           "d": {"dtype": "I64", "shape": [], "data_offsets": [24, 32]},
           "e": {"dtype": "I8", "shape": [0, 3], "data_offsets": [32, 32]},
           "f": {"dtype": "I32", "shape": [1], "data_offsets": [32, 36]}}
    h = json.dumps(hdr).encode()
    put("fuzz_safetensors", "dtypes.safetensors", struct.pack("<Q", len(h)) + h + bytes(range(36)))


# ---- GGUF ------------------------------------------------------------------------------------
def gguf_seeds():
    files = sorted(glob.glob(os.path.join(ROOT, "tests/reference/**/*.gguf"), recursive=True))
    for p in files:
        if os.path.getsize(p) <= 64 * 1024:
            rel = os.path.relpath(p, os.path.join(ROOT, "tests/reference")).replace("/", "_")
            put("fuzz_gguf", rel, open(p, "rb").read())


# ---- tokenizer.json ------------------------------------------------------------------------
def cut_vocab(tok, keep):
    """Keeps the tokens with ids below `keep` and the added tokens, renumbered densely."""
    vocab = tok["model"]["vocab"]
    ids = {t: i for t, i in vocab.items() if i < keep}
    for a in tok.get("added_tokens", []):
        ids.setdefault(a["content"], a["id"])
    order = sorted(ids, key=lambda t: ids[t])
    newid = {t: i for i, t in enumerate(order)}
    tok["model"]["vocab"] = newid
    for a in tok.get("added_tokens", []):
        a["id"] = newid[a["content"]]
    pp = tok.get("post_processor") or {}
    for name, st in (pp.get("special_tokens") or {}).items():
        st["ids"] = [newid.get(t, 0) for t in st.get("tokens", [])]
    for k in ("cls", "sep"):
        if isinstance(pp.get(k), list) and pp[k] and pp[k][0] in newid:
            pp[k][1] = newid[pp[k][0]]
    if "merges" in tok["model"]:
        def ok(m):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            return a in newid and b in newid and (a + b) in newid
        tok["model"]["merges"] = [m for m in tok["model"]["merges"] if ok(m)]
    return tok


def wordpiece_seeds():
    tok = json.loads(read("tests/reference/tiny_bert_cls/tokenizer.json"))
    base = cut_vocab(json.loads(json.dumps(tok)), 0)
    # a few hundred real word pieces beside the specials
    vocab = tok["model"]["vocab"]
    words = [t for t, i in sorted(vocab.items(), key=lambda x: x[1]) if 1000 <= i < 1300 or t.startswith("##") and i < 3000]
    v = base["model"]["vocab"]
    for w in words[:300]:
        v.setdefault(w, len(v))
    put("fuzz_wordpiece_json", "tiny_bert.json", json.dumps(base, ensure_ascii=False))
    put("fuzz_wordpiece_json", "tiny_bert_indent.json", json.dumps(base, indent=1))
    alt = json.loads(json.dumps(base))
    alt["normalizer"] = None
    alt["pre_tokenizer"] = None
    cls, sep = "[CLS]", "[SEP]"
    alt["post_processor"] = {"type": "BertProcessing", "sep": [sep, v.get(sep, 0)], "cls": [cls, v.get(cls, 0)]}
    alt["truncation"] = {"max_length": 16, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}
    put("fuzz_wordpiece_json", "bert_processing.json", json.dumps(alt))
    put("fuzz_wordpiece_json", "minimal.json", json.dumps(
        {"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                   "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "##b": 4}},
         "added_tokens": [{"id": 1, "content": "[CLS]", "special": True, "single_word": False,
                           "lstrip": False, "rstrip": False, "normalized": False}]}))


def bpe_seeds():
    for p in sorted(glob.glob(os.path.join(ROOT, "tests/reference/bpe_tiny/*/tokenizer.json"))
                    + glob.glob(os.path.join(ROOT, "tests/reference/spm_tiny/*/tokenizer.json"))):
        rel = os.path.relpath(p, os.path.join(ROOT, "tests/reference")).replace("/", "_")
        tok = json.loads(open(p, "rb").read())
        put("fuzz_bpe_json", rel, json.dumps(cut_vocab(tok, 300), ensure_ascii=False))


def sentences():
    lines = read("tests/reference/sentences.txt").decode().splitlines()
    return [l for l in lines if l.strip()][:40]


def encode_seeds():
    extra = ["", " ", "\t\n", "[CLS] hello [SEP]", "<|endoftext|>hi<|im_start|>", "\xe9\u00e9\u4e2d\u6587 \U0001F600",
             "a" * 300, "don't   stop 1234567 3.14 e-mail@x.org"]
    for i, s in enumerate(sentences() + extra):
        b = s.encode()
        put("fuzz_wordpiece_encode", "s%02d" % i, bytes([(i * 37) % 256]) + b)
        put("fuzz_bpe_encode", "s%02d" % i, bytes([(i % 7) | (0x80 if i % 2 else 0)]) + b)
    put("fuzz_wordpiece_encode", "bad_utf8", b"\x40caf\xc3 \xff\xfe x")
    put("fuzz_bpe_encode", "bad_utf8", b"\x01caf\xc3 \xff\xfe x")


# ---- configs (first byte: which file; see fuzz_config.c) -------------------------------------
def config_seeds():
    put("fuzz_config", "mlp", b"\x00" + read("examples/mlp/config.json"))
    put("fuzz_config", "mlp_softmax", b"\x00" + json.dumps(
        {"model_type": "mlp", "dims": [4, 8, 3], "activation": "gelu", "final_activation": "softmax"}).encode())
    put("fuzz_config", "bert_cls", b"\x01" + read("tests/reference/tiny_bert_cls/config.json"))
    m = model_path("minilm")
    if m:
        rd = lambda n: open(os.path.join(m, n), "rb").read()
        put("fuzz_config", "minilm_config", b"\x01" + rd("config.json"))
        put("fuzz_config", "minilm_modules", b"\x02" + rd("modules.json"))
        put("fuzz_config", "minilm_pooling", b"\x03" + rd("1_Pooling/config.json"))
        put("fuzz_config", "minilm_sbert", b"\x04" + rd("sentence_bert_config.json"))
        put("fuzz_config", "minilm_tokcfg", b"\x04" + rd("tokenizer_config.json"))
    put("fuzz_config", "pooling_cls", b"\x03" + json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}).encode())
    put("fuzz_config", "sbert", b"\x04" + b'{"max_seq_length": 128, "do_lower_case": false, "model_max_length": 512}')
    for p in sorted(glob.glob(os.path.join(ROOT, "tests/reference/tiny_llama/*/config.json"))
                    + glob.glob(os.path.join(ROOT, "tests/reference/spm_tiny/*/config.json"))):
        put("fuzz_config", "llama_" + os.path.basename(os.path.dirname(p)), b"\x05" + open(p, "rb").read())


def jobspec_seeds():
    put("fuzz_jobspec", "nightly.ini", read("examples/scheduled/nightly.ini"))
    put("fuzz_jobspec", "full.ini", """; every kind of value
model = examples/mlp
input = data/a.h5
input = data/b*.h5
output = out/
[run]
task = generate
tp = 2
unit-rows = 65536
batch-size = 1024
device = cpu
comm = mpi
precision = bf16
max-length = 128
batch-tokens = 16384
bos = always
chat-template = chatml
system = You are terse.
token-logprobs = true
max-new-tokens = 16
temperature = 0.7
top-k = 40
top-p = 0.9
seed = 42
stop = </s>
text-bytes = 4096
output-dtype = f16
array-task = 1
array-tasks = 4
schedule = static
prefetch = 4
restart = false
quiet = yes
""")
    put("fuzz_jobspec", "bad.ini", "model = m\n[other]\nx = 1\nnot a line\n")


# ---- HDF5 inputs (first byte: features / text / token ids; see fuzz_h5input.c) ---------------
def h5_seeds():
    import numpy as np
    import h5py
    tmp = os.path.join(OUT, ".h5tmp")
    os.makedirs(tmp, exist_ok=True)

    def mk(name, kind, fill, libver="earliest"):
        p = os.path.join(tmp, name + ".h5")
        with h5py.File(p, "w", libver=libver) as f:
            fill(f)
        put("fuzz_h5input", name, bytes([kind]) + open(p, "rb").read())
        os.unlink(p)

    mk("features_f32", 0, lambda f: f.create_dataset("features", data=np.arange(12, dtype="f4").reshape(4, 3)))
    mk("features_i16_latest", 0, lambda f: f.create_dataset("features", data=np.arange(6, dtype="i2").reshape(3, 2)),
       "latest")
    mk("features_chunked", 0, lambda f: f.create_dataset("features", data=np.ones((8, 2), "f8"), chunks=(4, 2),
                                                         compression="gzip"))
    mk("features_1d", 0, lambda f: f.create_dataset("features", data=np.ones(5, "f4")))
    mk("features_missing", 0, lambda f: f.create_dataset("other", data=np.ones((2, 2), "f4")))
    dt = h5py.string_dtype("utf-8")
    mk("text_vlen", 1, lambda f: f.create_dataset("text", data=np.array(["hello", "world", "", "caf\u00e9"], dtype=object),
                                                  dtype=dt))
    mk("text_fixed", 1, lambda f: f.create_dataset("text", data=np.array([b"abc", b"de"], dtype="S4")))
    mk("text_numeric", 1, lambda f: f.create_dataset("text", data=np.ones(3, "f4")))

    def tokens(with_lengths, with_mask, with_types):
        def fill(f):
            f.create_dataset("input_ids", data=np.array([[101, 7, 102, 0], [101, 102, 0, 0]], "i4"))
            if with_lengths:
                f.create_dataset("lengths", data=np.array([3, 2], "i4"))
            if with_mask:
                f.create_dataset("attention_mask", data=np.array([[1, 1, 1, 0], [1, 1, 0, 0]], "i1"))
            if with_types:
                f.create_dataset("token_type_ids", data=np.zeros((2, 4), "i4"))
        return fill

    mk("tokens_lengths", 2, tokens(1, 0, 1))
    mk("tokens_mask", 2, tokens(0, 1, 0))
    mk("tokens_none", 2, tokens(0, 0, 0))
    import shutil
    shutil.rmtree(tmp)


safetensors_seeds()
gguf_seeds()
wordpiece_seeds()
bpe_seeds()
encode_seeds()
config_seeds()
jobspec_seeds()
try:
    h5_seeds()
except ImportError as e:  # without h5py the target starts from no seed
    print("make_seeds: no HDF5 seeds (%s)" % e, file=sys.stderr)
for t in sorted(os.listdir(OUT)):
    if not t.startswith("."):
        print("%-24s %3d seeds" % (t, len(os.listdir(os.path.join(OUT, t)))))
