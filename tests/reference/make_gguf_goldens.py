#!/usr/bin/env python3
"""make_gguf_goldens.py — reference data for the GGUF reader (tests/unit/test_gguf.c), made with
gguf-py, the GGUF library of the llama.cpp project (PyPI package `gguf`), whose quantisation and
dequantisation functions follow ggml's reference C code.

Produces (all committed, so the test suite needs no Python package):
  tests/reference/goldens/mixed_types.gguf
      a few-KB GGUF v3 file written by gguf.GGUFWriter, general.alignment 64:
        metadata of every value type: u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, bool (true
        and false), strings (one empty, one non-ASCII), arrays of strings (with an empty
        element), i32, f32, u8, u64, i64 and bool, and a nested array (array of i32 arrays);
        general.architecture "testarch" with testarch.* hyperparameters and a small
        tokenizer.ggml.* vocabulary, so that `shardline inspect` has something to print.
        tensors of F32, F16, BF16, Q8_0, Q4_0, Q4_1 (shapes [3, 64], [2, 2, 32], [64], numpy
        order, i.e. GGUF ne reversed), quantised by gguf.quants.quantize; F32, F16 and BF16 hold
        the special values (+-0, +-Inf, NaN, subnormals, the largest finite value); one Q5_0
        tensor, a type the C reader opens but does not dequantise.
  tests/reference/goldens/mixed_types_expected.h5
      /tensors/<name>: float32, gguf.quants.dequantize of each tensor's bytes (numpy shape),
      attribute ggml_type; the Q5_0 tensor is included too (for completeness).
  tests/reference/goldens/kquants.gguf, kquants_expected.h5
      K-quant tensors (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; super-blocks of 256 values) whose blocks are
      random bytes except for valid f16 scales d/dmin (random finite values of several
      magnitudes, one zero, one subnormal, one negative), shapes [3, 512] and [2, 256], plus a
      [4, 768] Q4_K tensor for column slicing, and [3, 512] Q5_0 and Q5_1 tensors (32-value
      blocks, the same kind of random bytes and scales); expected values as for mixed_types (/tensors/<name>,
      gguf.quants.dequantize of the bytes read back).
  tests/reference/goldens/smollm2_gguf_check.h5
      the real SmolLM2-135M-Instruct GGUF (path in build/models/smollm2.path, installed by
      scripts/install-models.sh), one entry per tensor in file order:
        name       variable-length UTF-8 strings [N]
        type       int32 [N], ggml type number
        ne         int64 [N, 4], GGUF dimensions innermost-first, unused ones 1
        sum, sumsq float64 [N], sum and sum of squares of the dequantised values (in float64)
        first_row, last_row  float32 [N, 64], the first 64 values of row 0 and of the last row
      attributes: source (file name), size (bytes), gguf_version (of gguf-py).

Set-up (once): /usr/bin/python3 -m venv --system-site-packages /tmp/slref
               /tmp/slref/bin/pip install gguf          # made with gguf 0.19.0
Run (from the repository root, after scripts/install-models.sh):
  /tmp/slref/bin/python tests/reference/make_gguf_goldens.py [--smollm2 FILE.gguf] [--kquants-only]
The mixed file is deterministic (fixed seed); rerunning rewrites identical bytes.
"""
import argparse
import os

import gguf
import h5py
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDENS = os.path.join(HERE, "goldens")
ROOT = os.path.dirname(os.path.dirname(HERE))
N_ROW_VALUES = 64


def special_f32(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-45, 3.4028235e38]
    return x


def add_metadata(w):
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float32("test.f32", 0.15625)
    w.add_float64("test.f64", -2.718281828459045)
    w.add_bool("test.true", True)
    w.add_bool("test.false", False)
    w.add_key_value("test.empty", "", V.STRING)  # add_string() skips empty strings
    w.add_string("test.utf8", "grüße, 世界")
    w.add_array("test.strs", ["alpha", "", "gamma delta", "ε"])
    w.add_array("test.i32s", [1, -2, 3, 2147483647, -2147483648])
    w.add_array("test.f32s", [0.5, -1.25, 1e30])
    w.add_array("test.u8s", b"\x00\x01\xff")
    w.add_key_value("test.u64s", [0, 1, 18446744073709551615], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.i64s", [-1, 9223372036854775807], V.ARRAY, sub_type=V.INT64)
    w.add_array("test.bools", [True, False, True])
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["<unk>", "a", "b", "ab", "Ġthe"])
    w.add_bos_token_id(0)


def write_expected(path, raws, name, finite=False):
    """Expected values of GGUF file `path` as written (read back by gguf-py's own reader, each
    tensor's bytes checked against raws[name] = (type, bytes)) into goldens/<name>."""
    r = gguf.GGUFReader(path)
    with h5py.File(os.path.join(GOLDENS, name), "w") as h:
        g = h.create_group("tensors")
        for t in r.tensors:
            qtype, raw = raws[t.name]
            assert t.tensor_type == qtype and bytes(t.data.tobytes()) == raw.tobytes(), t.name
            vals = gguf.quants.dequantize(t.data, t.tensor_type)
            assert not finite or np.isfinite(vals).all(), t.name
            ds = g.create_dataset(t.name, data=vals.astype(np.float32, copy=False))
            ds.attrs["ggml_type"] = int(qtype)
            ds.attrs["ne"] = np.array([int(n) for n in t.shape], dtype=np.int64)
        h.attrs["gguf_version"] = gguf_version()
    return r


def make_mixed():
    rng = np.random.default_rng(20250311)
    a = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    tensors = [  # name, ggml type, float32 data (numpy shape)
        ("tensor.f32", T.F32, special_f32(rng, (3, 64))),
        ("tensor.f16", T.F16, special_f32(rng, (2, 2, 32))),
        ("tensor.bf16", T.BF16, special_f32(rng, (3, 64))),
        ("tensor.q8_0", T.Q8_0, a(3, 64) * 3),
        ("tensor.q8_0.3d", T.Q8_0, a(2, 2, 32)),
        ("tensor.q4_0", T.Q4_0, a(2, 2, 32)),
        ("tensor.q4_0.2d", T.Q4_0, a(3, 64) * 0.01),
        ("tensor.q4_1", T.Q4_1, a(3, 64) + 0.5),
        ("tensor.q4_1.3d", T.Q4_1, a(2, 2, 32)),
        ("tensor.vec", T.F32, a(64)),
        ("tensor.q5_0", T.Q5_0, a(2, 32)),
    ]
    # Blocks with every quant at its extremes: a zero block (d = 0) and a constant one.
    tensors[3][2][0, :32] = 0.0
    tensors[7][2][1, 32:] = 1.75

    path = os.path.join(GOLDENS, "mixed_types.gguf")
    w = gguf.GGUFWriter(path, "testarch")
    w.add_custom_alignment(64)
    add_metadata(w)
    raws = {}
    for name, qtype, data in tensors:
        if qtype == T.F32:
            raw = data
        elif qtype == T.F16:
            with np.errstate(over="ignore"):
                raw = data.astype(np.float16)
        else:
            raw = gguf.quants.quantize(data, qtype)
        raws[name] = (qtype, raw)
        w.add_tensor(name, raw, raw_dtype=None if qtype in (T.F32, T.F16) else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = write_expected(path, raws, "mixed_types_expected.h5")
    print(f"{path}: {os.path.getsize(path)} bytes, {len(r.tensors)} tensors, "
          f"{len(r.fields)} fields")


# bytes per super-block and the offsets of its f16 scales (d, and dmin where there is one)
KQUANTS = {T.Q2_K: (84, (80, 82)), T.Q3_K: (110, (108,)), T.Q4_K: (144, (0, 2)),
           T.Q5_K: (176, (0, 2)), T.Q6_K: (210, (208,))}
# the same for the 5-bit 32-value formats (a Q4_K_M file's fallback for rows that are not whole
# super-blocks)
Q5S = {T.Q5_0: (22, (0,)), T.Q5_1: (24, (0, 2))}


def random_kquant(rng, qtype, rows, cols):
    """rows x cols values of qtype: random bytes, then valid (finite) f16 scales."""
    nbytes, scale_at = KQUANTS[qtype] if qtype in KQUANTS else Q5S[qtype]
    per_block = 256 if qtype in KQUANTS else 32
    blocks = rng.integers(0, 256, size=(rows * cols // per_block, nbytes), dtype=np.uint8)
    n = blocks.shape[0]
    for off in scale_at:
        mag = 10.0 ** rng.integers(-5, 1, size=n)
        d = (rng.standard_normal(n) * mag).astype(np.float16)
        d[0] = 0.0                      # a zero scale
        if n > 1:
            d[1] = np.float16(3e-7)     # a subnormal f16
        if n > 2:
            d[2] = -abs(d[2]) - np.float16(0.5)
        blocks[:, off:off + 2] = d.view(np.uint8).reshape(n, 2)
    return blocks.reshape(rows, cols // per_block * nbytes)


def make_kquants():
    rng = np.random.default_rng(20261206)
    tensors = []
    for qtype in KQUANTS:
        name = qtype.name.lower()
        tensors.append((f"tensor.{name}", qtype, random_kquant(rng, qtype, 3, 512)))
        tensors.append((f"tensor.{name}.small", qtype, random_kquant(rng, qtype, 2, 256)))
    tensors.append(("tensor.q4_k.wide", T.Q4_K, random_kquant(rng, T.Q4_K, 4, 768)))
    for qtype in Q5S:
        tensors.append((f"tensor.{qtype.name.lower()}", qtype, random_kquant(rng, qtype, 3, 512)))
    path = os.path.join(GOLDENS, "kquants.gguf")
    w = gguf.GGUFWriter(path, "testarch")
    for name, qtype, raw in tensors:
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = write_expected(path, {name: (qtype, raw) for name, qtype, raw in tensors},
                       "kquants_expected.h5", finite=True)
    print(f"{path}: {os.path.getsize(path)} bytes, {len(r.tensors)} tensors")


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001
        return "unknown"


def make_smollm2(path):
    r = gguf.GGUFReader(path)
    n = len(r.tensors)
    types = np.zeros(n, np.int32)
    ne = np.ones((n, 4), np.int64)
    sums = np.zeros(n, np.float64)
    sumsq = np.zeros(n, np.float64)
    first = np.full((n, N_ROW_VALUES), np.nan, np.float32)
    last = np.full((n, N_ROW_VALUES), np.nan, np.float32)
    for i, t in enumerate(r.tensors):
        types[i] = int(t.tensor_type)
        ne[i, : len(t.shape)] = [int(d) for d in t.shape]
        vals = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        rows = vals.reshape(-1, int(t.shape[0]))
        v64 = rows.astype(np.float64)
        sums[i] = v64.sum()
        sumsq[i] = (v64 * v64).sum()
        k = min(N_ROW_VALUES, rows.shape[1])
        first[i, :k] = rows[0, :k]
        last[i, :k] = rows[-1, :k]
    out = os.path.join(GOLDENS, "smollm2_gguf_check.h5")
    with h5py.File(out, "w") as h:
        h.create_dataset("name", data=[t.name for t in r.tensors],
                         dtype=h5py.string_dtype("utf-8"))
        h.create_dataset("type", data=types)
        h.create_dataset("ne", data=ne)
        h.create_dataset("sum", data=sums)
        h.create_dataset("sumsq", data=sumsq)
        h.create_dataset("first_row", data=first)
        h.create_dataset("last_row", data=last)
        h.attrs["source"] = os.path.basename(path)
        h.attrs["size"] = os.path.getsize(path)
        h.attrs["gguf_version"] = gguf_version()
    print(f"{out}: {n} tensors of {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm2", help="the SmolLM2 .gguf file (default: the one named in "
                    "build/models/smollm2.path)")
    ap.add_argument("--kquants-only", action="store_true",
                    help="write only kquants.gguf and kquants_expected.h5")
    args = ap.parse_args()
    os.makedirs(GOLDENS, exist_ok=True)
    make_kquants()
    if args.kquants_only:
        return
    make_mixed()
    path = args.smollm2
    if not path:
        with open(os.path.join(ROOT, "build", "models", "smollm2.path")) as f:
            path = f.read().strip()
    make_smollm2(path)


if __name__ == "__main__":
    main()
