"""export_mlp.py — writes a shardline `mlp` model directory (config.json + model.safetensors,
the format in the top-level README) from a trained network.

Two sources are accepted:
  * a PyTorch nn.Sequential of nn.Linear layers with one kind of activation module between
    them (ReLU, GELU with approximate='none', SiLU, Tanh or Sigmoid), optionally one activation
    or a Softmax over the last dimension after the last Linear; Dropout and Identity modules
    are skipped (they do nothing at inference);
  * plain numpy: a list of (weight [out, in], bias [out]) pairs plus the activation names.
Weights are written in PyTorch nn.Linear layout as layers.{i}.weight / layers.{i}.bias; an
optional input mean / std [in] (the standardisation applied before the first layer) goes in
as input_mean / input_std, always F32.

As a library:
    from export_mlp import export_mlp
    export_mlp("out/model", torch_sequential, input_mean=mu, input_std=sd)
    export_mlp("out/model", [(w0, b0), (w1, b1)], activation="relu", final_activation="softmax")
From the command line, for a whole module saved with torch.save(model, "model.pt"):
    python3 export_mlp.py model.pt OUT_DIR [--stats stats.npz] [--dtype F32|F16|BF16]
(stats.npz holds arrays `mean` and `std`). Needs numpy; torch only for torch inputs.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save_safetensors  # noqa: E402

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid")


def _torch_layers(seq):
    """nn.Sequential -> (pairs of numpy (weight, bias), activation, final_activation)."""
    import torch.nn as nn

    act_of = {nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Tanh: "tanh",
              nn.Sigmoid: "sigmoid"}
    pairs, acts = [], []  # acts[i]: the activation right after Linear i (None if none)
    for mod in seq:
        if isinstance(mod, (nn.Dropout, nn.Identity)):
            continue
        if isinstance(mod, nn.Linear):
            w = mod.weight.detach().cpu().float().numpy()
            b = (mod.bias.detach().cpu().float().numpy() if mod.bias is not None
                 else np.zeros(w.shape[0], np.float32))
            pairs.append((w, b))
            acts.append(None)
            continue
        if not pairs:
            raise ValueError(f"{type(mod).__name__} before the first Linear is not supported")
        if acts[-1] is not None:
            raise ValueError(f"two activations in a row after Linear {len(pairs) - 1}")
        if isinstance(mod, nn.Softmax):
            if mod.dim not in (-1, 1):
                raise ValueError(f"Softmax(dim={mod.dim}): only the last dimension is supported")
            acts[-1] = "softmax"
        elif type(mod) in act_of:
            if isinstance(mod, nn.GELU) and getattr(mod, "approximate", "none") != "none":
                raise ValueError("GELU(approximate='tanh') is not supported (exact GELU is)")
            acts[-1] = act_of[type(mod)]
        else:
            raise ValueError(f"module {type(mod).__name__} is not supported in an mlp")
    if not pairs:
        raise ValueError("no Linear layer found")
    hidden = set(acts[:-1])
    if None in hidden:
        raise ValueError("every Linear but the last must be followed by an activation")
    if len(hidden) > 1:
        raise ValueError(f"hidden layers mix activations {sorted(hidden)}; an mlp has one kind")
    if "softmax" in hidden:
        raise ValueError("Softmax is only supported after the last Linear")
    activation = hidden.pop() if hidden else "relu"  # one layer: the value is never used
    return pairs, activation, acts[-1]


def export_mlp(out_dir, model, activation=None, final_activation=None, input_mean=None,
               input_std=None, dtype="F32", metadata=None):
    """Writes out_dir/config.json and out_dir/model.safetensors.

    model: a torch nn.Sequential (activation / final_activation are then read from it), or a
    list of (weight [out, in], bias [out]) numpy pairs, with `activation` (one of ACTIVATIONS)
    and `final_activation` (None, one of ACTIVATIONS or "softmax").
    input_mean, input_std: optional [in] arrays, applied as (x - mean) / std first.
    dtype: "F32", "F16" or "BF16" for weights and biases.
    Returns the config dict."""
    if isinstance(model, (list, tuple)):
        pairs = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in model]
    else:
        pairs, activation, final_activation = _torch_layers(model)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r}: expected one of {ACTIVATIONS}")
    if final_activation not in (None, "softmax") + ACTIVATIONS:
        raise ValueError(f"final_activation {final_activation!r}: expected None, 'softmax' or "
                         f"one of {ACTIVATIONS}")

    dims = [int(pairs[0][0].shape[1])]
    for i, (w, b) in enumerate(pairs):
        if w.ndim != 2 or w.shape[1] != dims[-1] or b.shape != (w.shape[0],):
            raise ValueError(f"layer {i}: weight {w.shape} / bias {b.shape} do not chain "
                             f"from input dim {dims[-1]}")
        dims.append(int(w.shape[0]))

    tensors, bf16 = {}, []
    cast = {"F32": np.float32, "F16": np.float16, "BF16": np.float32}[dtype]
    for i, (w, b) in enumerate(pairs):
        tensors[f"layers.{i}.weight"] = w.astype(cast)
        tensors[f"layers.{i}.bias"] = b.astype(cast)
        if dtype == "BF16":
            bf16 += [f"layers.{i}.weight", f"layers.{i}.bias"]
    if (input_mean is None) != (input_std is None):
        raise ValueError("give both input_mean and input_std, or neither")
    if input_mean is not None:
        mean = np.asarray(input_mean, np.float32).reshape(-1)
        std = np.asarray(input_std, np.float32).reshape(-1)
        if mean.shape != (dims[0],) or std.shape != (dims[0],):
            raise ValueError(f"input_mean / input_std must be [{dims[0]}]")
        if not np.all(std > 0):
            raise ValueError("input_std must be positive (clamp constant features first)")
        tensors["input_mean"], tensors["input_std"] = mean, std

    config = {"model_type": "mlp", "dims": dims, "activation": activation,
              "final_activation": final_activation}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:  # one key per line
        f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}"
                                   for k, v in config.items()) + "\n}\n")
    meta = {"format": "pt", "exported_by": "shardline examples/mlp/export_mlp.py"}
    meta.update(metadata or {})
    save_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, metadata=meta,
                     bf16=bf16)
    return config


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a module saved with torch.save(nn.Sequential(...), path)")
    ap.add_argument("out_dir")
    ap.add_argument("--stats", help=".npz with arrays `mean` and `std` [in]")
    ap.add_argument("--dtype", default="F32", choices=("F32", "F16", "BF16"))
    args = ap.parse_args()
    import torch

    model = torch.load(args.model, map_location="cpu")
    mean = std = None
    if args.stats:
        stats = np.load(args.stats)
        mean, std = stats["mean"], stats["std"]
    cfg = export_mlp(args.out_dir, model, input_mean=mean, input_std=std, dtype=args.dtype)
    print(f"wrote {args.out_dir}: dims {cfg['dims']}, activation {cfg['activation']}, "
          f"final_activation {cfg['final_activation']}")


if __name__ == "__main__":
    main()
