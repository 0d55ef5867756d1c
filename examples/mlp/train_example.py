"""train_example.py — makes the committed example model, examples/mlp/{config.json,
model.safetensors}: a classifier for the synthetic problem in synthetic.py (16 features,
3 classes), network dims [16, 64, 64, 3], ReLU, softmax output, with the training set's
feature mean / std stored as input_mean / input_std.

Run:  /usr/bin/python3 examples/mlp/train_example.py [--out examples/mlp] [--numpy]
It trains for a few seconds on the CPU with PyTorch when torch imports (else, or with --numpy,
with plain numpy gradient descent), exports through export_mlp.export_mlp, and prints the
accuracy on fresh data (a test set drawn with a seed the training never saw). Everything is
seeded, so a rerun on the same software writes the same model. The numbers reached are
recorded in examples/mlp/README.md.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic  # noqa: E402
from export_mlp import export_mlp  # noqa: E402

DIMS = [synthetic.N_FEATURES, 64, 64, synthetic.N_CLASSES]
TRAIN_ROWS, TRAIN_SEED = 30000, 1
TEST_ROWS, TEST_SEED = 20000, 2
EPOCHS, BATCH, LR = 25, 128, 3e-3


def train_torch(x, y):
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: the same sums in the same order on every run
    model = nn.Sequential(nn.Linear(DIMS[0], DIMS[1]), nn.ReLU(),
                          nn.Linear(DIMS[1], DIMS[2]), nn.ReLU(),
                          nn.Linear(DIMS[2], DIMS[3]))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), BATCH):
            idx = perm[i:i + BATCH]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    # The softmax is part of the exported model (trained on logits, served as probabilities).
    model.append(nn.Softmax(dim=-1))
    model.eval()

    def predict(xs):
        with torch.no_grad():
            return model(torch.from_numpy(xs)).numpy()
    return model, predict


def train_numpy(x, y):
    """Same network and optimiser (Adam, softmax cross-entropy) with hand-written gradients."""
    rng = np.random.default_rng(0)
    params = []
    for din, dout in zip(DIMS[:-1], DIMS[1:]):
        bound = 1.0 / np.sqrt(din)  # nn.Linear's default initialisation range
        params += [rng.uniform(-bound, bound, (dout, din)).astype(np.float32),
                   rng.uniform(-bound, bound, dout).astype(np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    onehot = np.eye(DIMS[-1], dtype=np.float32)

    def forward(xs):
        acts = [xs]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i].T + params[i + 1]
            acts.append(np.maximum(z, 0) if i + 2 < len(params) else z)
        return acts

    for epoch in range(EPOCHS):
        perm = rng.permutation(len(x))
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            acts = forward(x[idx])
            logits = acts[-1]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = (p - onehot[y[idx]]) / len(idx)  # d loss / d logits
            grads = [None] * len(params)
            for li in range(len(params) // 2 - 1, -1, -1):
                grads[2 * li] = g.T @ acts[li]
                grads[2 * li + 1] = g.sum(0)
                if li > 0:
                    g = (g @ params[2 * li]) * (acts[li] > 0)
            step += 1
            for k, (prm, grd) in enumerate(zip(params, grads)):
                m[k] = b1 * m[k] + (1 - b1) * grd
                v[k] = b2 * v[k] + (1 - b2) * grd * grd
                mh, vh = m[k] / (1 - b1 ** step), v[k] / (1 - b2 ** step)
                prm -= (LR * mh / (np.sqrt(vh) + eps)).astype(np.float32)
    pairs = [(params[i], params[i + 1]) for i in range(0, len(params), 2)]

    def predict(xs):
        logits = forward(xs)[-1]
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)
    return pairs, predict


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="model directory to write (default: examples/mlp)")
    ap.add_argument("--numpy", action="store_true", help="train with numpy even if torch imports")
    args = ap.parse_args()

    x, y = synthetic.sample(TRAIN_ROWS, TRAIN_SEED)
    mean = x.mean(0)
    std = np.maximum(x.std(0), 1e-6)
    xs = ((x - mean) / std).astype(np.float32)  # the model standardises with these itself

    torch = None
    if not args.numpy:
        try:
            import torch
        except ImportError:
            pass
    t0 = time.time()
    if torch is not None:
        model, predict = train_torch(xs, y)
        how = "torch " + torch.__version__
        export_mlp(args.out, model, input_mean=mean, input_std=std,
                   metadata={"trained_with": how})
    else:
        pairs, predict = train_numpy(xs, y)
        how = "numpy " + np.__version__
        export_mlp(args.out, pairs, activation="relu", final_activation="softmax",
                   input_mean=mean, input_std=std, metadata={"trained_with": how})
    secs = time.time() - t0

    xt, yt = synthetic.sample(TEST_ROWS, TEST_SEED)
    acc_train = (predict(xs).argmax(1) == y).mean()
    acc_test = (predict(((xt - mean) / std).astype(np.float32)).argmax(1) == yt).mean()
    print(f"trained with {how} in {secs:.1f} s: {TRAIN_ROWS} rows (seed {TRAIN_SEED}), "
          f"{EPOCHS} epochs; accuracy {acc_train:.4f} on the training rows, {acc_test:.4f} on "
          f"{TEST_ROWS} fresh rows (seed {TEST_SEED}); wrote {args.out}")


if __name__ == "__main__":
    main()
