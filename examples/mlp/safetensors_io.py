"""safetensors_io.py — write and read .safetensors files with numpy only (no torch, no
safetensors package), so the export script, the tests and the references share one small,
dependency-free implementation of the public format:

    8-byte little-endian header length N, N bytes of JSON
    {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
     "__metadata__": {...}}, then the tensors' bytes (offsets relative to the data start).

Usage: save_safetensors(path, {"layers.0.weight": array, ...}, metadata=None)
       load_safetensors(path) -> dict of numpy arrays
"""
import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32,
           "I64": np.int64, "I8": np.int8, "U8": np.uint8}


def _code(arr):
    for code, dt in _DTYPES.items():
        if arr.dtype == np.dtype(dt):
            return code
    raise ValueError(f"unsupported dtype {arr.dtype}")


def f32_to_bf16_bits(a):
    """float32 array -> uint16 array of bfloat16 bits (round to nearest even)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def save_safetensors(path, tensors, metadata=None, bf16=()):
    """tensors: name -> numpy array. Names listed in `bf16` are stored as BF16 (from float32)."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if name in bf16:
            raw, code = f32_to_bf16_bits(arr.astype(np.float32)).tobytes(), "BF16"
        else:
            raw, code = arr.astype(arr.dtype.newbyteorder("<")).tobytes(), _code(arr)
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # align the data start to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[base + b: base + e]
        if info["dtype"] == "BF16":
            arr = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).copy()
    return out
