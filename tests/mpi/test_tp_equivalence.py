"""test_tp_equivalence.py — predictions do not depend on how the job is split over ranks.

Checks, with the real binary under mpirun (oversubscribed where needed):
  - 1, 2 and 4 ranks with --tp 1, 2 and 4 (np 2 tp 1, np 2 tp 2, np 4 tp 2 = 2 DP groups,
    np 4 tp 4) on an odd-layer model (5 layers: the last one is replicated) and an even-layer
    model with input standardisation, give predictions that agree with each other (relative
    1e-5) and with a float64 numpy reference (relative 1e-5); smaller models cover every
    activation, a 1-layer model (held whole by every rank) and a 3-layer one;
  - shards of awkward sizes (1 row, 1009 rows, 2500 rows with --unit-rows 300 --batch-size 64)
    named so that creation order differs from path order: every input row appears exactly once,
    in path order; /predictions is a virtual dataset and reads the same from another directory;
    /shards lists (path, first_row, rows); /errors is empty; report.json counts the rows; the
    part files cover every shard exactly;
  - manifest.json names every input and part file; each part file's attributes hold its source
    path, size, row range and the shardline version (checked by value);
  - --prefetch 1 / 7 and an explicit --device cpu give the same predictions;
  - an empty (0-row) shard beside a small one;
  - float64, int32 and float16 input datasets (given as repeated --input flags out of order)
    are converted to float32;
  - F16 and BF16 weight files: equal (1e-5) to the reference computed from the stored values
    and close to the float32 original (1e-2 for F16, 2e-2 for BF16); --precision f16 / bf16 stay
    close to the reference.

Run: /usr/bin/python3 tests/mpi/test_tp_equivalence.py  (env: see sl_e2e.py; SL_DEVICE=cuda and
SL_MAX_TP=<gpus> for a GPU machine). Prints each check, then "N passed, N failed".
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

TOL = 1e-5
TIMING_KEYS = ("rows", "failed_rows", "seconds", "rows_per_second", "read_seconds",
               "compute_seconds", "comm_seconds", "write_seconds")


def check_output(t, out, label, shards, ref, tol=TOL, unit_checks=True):
    """Full check of one output directory. shards: [(path, f64 rows)] in expected order."""
    try:
        o = e.read_output(out)
    except Exception as ex:  # noqa: BLE001
        t.check(False, f"{label}: predictions.h5 readable", repr(ex))
        return None
    total = sum(len(x) for _, x in shards)
    dn = ref.shape[1]
    t.check(o.predictions.shape == (total, dn) and o.predictions.dtype == np.float32,
            f"{label}: /predictions is float32 [{total}, {dn}]",
            f"got {o.predictions.shape} {o.predictions.dtype}")
    t.close(o.predictions, ref, tol, f"{label}: predictions match the float64 reference")
    if not unit_checks:
        return o
    t.check(o.is_virtual, f"{label}: /predictions is a virtual dataset")
    expected, first = [], 0
    for path, x in shards:
        expected.append((os.path.realpath(path), first, len(x)))
        first += len(x)
    got = None
    if o.shards is not None:
        got = [(os.path.realpath(r.get("path", "")), r.get("first_row"), r.get("rows"))
               for r in o.shards]
    t.check(got == expected, f"{label}: /shards lists (path, first_row, rows) in path order",
            f"got {got}\nexpected {expected}")
    t.check(o.errors is not None and len(o.errors) == 0, f"{label}: /errors exists and is empty",
            f"got {o.errors}")
    r = o.report or {}
    t.check(o.report is not None and r.get("rows") == total and r.get("failed_rows") == 0,
            f"{label}: report.json rows={total} failed_rows=0",
            f"report: {o.report}")
    bad = [k for k in TIMING_KEYS
           if not isinstance(r.get(k), (int, float)) or isinstance(r.get(k), bool) or r.get(k) < 0]
    t.check(not bad, f"{label}: report.json has non-negative numbers for {', '.join(TIMING_KEYS)}",
            f"missing or bad: {bad}; report: {o.report}")
    t.check(o.manifest is not None, f"{label}: manifest.json exists and is JSON")
    e.check_parts_cover(t, out, [(p, len(x)) for p, x in shards], dn,
                        f"{label}: part files cover every shard once")
    if o.manifest is not None:
        text = json.dumps(o.manifest)
        parts, _ = e.list_parts(out)
        missing = [rel for rel in parts if os.path.basename(rel) not in text
                   or os.path.basename(os.path.dirname(rel)) not in text]
        missing += [p for p, _ in shards if os.path.basename(p) not in text]
        t.check(not missing, f"{label}: manifest.json names every input and every part file",
                f"not found: {missing[:5]}")
    check_part_attrs(t, out, shards, label)
    return o


def flat_values(attrs):
    vals = []
    for v in attrs.values():
        v = np.asarray(v).ravel().tolist() if isinstance(v, (np.ndarray, np.generic)) else [v]
        vals += [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
    return vals


def check_part_attrs(t, out, shards, label):
    """README: part attributes record the source (path, size, mtime), the row range, the model
    fingerprint, the job hash and the shardline version. Names are free: checked by value."""
    version = e.project_version()
    size = {os.path.basename(p): os.path.getsize(p) for p, _ in shards}
    real = {os.path.basename(p): os.path.realpath(p) for p, _ in shards}
    parts, _ = e.list_parts(out)
    bad = []
    for rel, p in parts.items():
        with h5py.File(p.path, "r") as f:
            vals = flat_values(dict(f.attrs))
        strs = [v for v in vals if isinstance(v, str)]
        ints = [v for v in vals if isinstance(v, int) and not isinstance(v, bool)]
        if not any(os.path.basename(s) == p.shard and os.path.realpath(s) == real.get(p.shard)
                   for s in strs if "/" in s or s == p.shard):
            bad.append(f"{rel}: no attribute holds the source path")
        if size.get(p.shard) not in ints:
            bad.append(f"{rel}: no attribute holds the source size {size.get(p.shard)}")
        if version and not any(version in s for s in strs):
            bad.append(f"{rel}: no attribute holds the version {version}")
        if p.first not in ints or not ({p.end, p.end - p.first} & set(ints)):
            bad.append(f"{rel}: no attributes hold the row range {p.first}-{p.end}")
        if len(vals) < 6:
            bad.append(f"{rel}: only {len(vals)} attributes (source path/size/mtime, rows, "
                       f"fingerprint, job hash, version expected)")
    t.check(parts and not bad, f"{label}: part files carry the README's attributes",
            "; ".join(bad[:5]))


def run_config(t, tmp, model, mname, inputs, shards, ref, nranks, tp, tol=TOL,
               extra=(), unit_rows=300, batch=64):
    label = f"{mname} np={nranks} tp={tp}" + (" " + " ".join(extra) if extra else "")
    if e.MAX_TP is not None and tp > e.MAX_TP:
        t.skip(label, f"tp {tp} > SL_MAX_TP {e.MAX_TP}")
        return None
    out = os.path.join(tmp, "out-" + label.replace(" ", "_").replace("=", "").replace("-", ""))
    res = e.run(nranks, e.job_args(model.path, inputs, out, tp=tp, unit_rows=unit_rows,
                                   batch=batch, extra=extra), timeout=300)
    if not t.check(res.rc == 0, f"{label}: exit status 0", res.describe()):
        return None
    return check_output(t, out, label, shards, ref, tol)


def body(t, tmp):
    data = os.path.join(tmp, "data")
    # creation order != path order; 1 row, a prime, more rows than a unit (300)
    made = e.make_inputs(data, [1009, 1, 2500], 12, names=["m-prime.h5", "a-one.h5", "z-big.h5"],
                         seed=11)
    shards = sorted(made, key=lambda s: s[0])
    x = np.concatenate([s[1] for s in shards])
    inputs = os.path.join(data, "*.h5")
    configs = [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4)]

    models = {
        "odd5": e.make_model(os.path.join(tmp, "odd5"), [12, 32, 16, 8, 20, 5], "gelu", "softmax",
                             seed=1),
        "even4": e.make_model(os.path.join(tmp, "even4"), [12, 32, 16, 8, 5], "silu", None,
                              seed=2, standardise=True),
    }
    for mname, model in models.items():
        ref = model.forward(x)
        preds = {}
        for nranks, tp in configs:
            o = run_config(t, tmp, model, mname, inputs, shards, ref, nranks, tp)
            if o is not None:
                preds[(nranks, tp)] = o.predictions
        base = preds.get((1, 1))
        for (nranks, tp), p in preds.items():
            if (nranks, tp) != (1, 1) and base is not None:
                t.close(p, base, TOL, f"{mname} np={nranks} tp={tp} agrees with np=1 tp=1")
        if mname == "odd5" and (2, 2) in preds:
            # /predictions must not depend on the reader's working directory
            out = os.path.join(tmp, "out-odd5_np2_tp2")
            code = ("import h5py,sys,numpy as np; f=h5py.File(sys.argv[1],'r'); "
                    "np.save(sys.argv[2], f['predictions'][()])")
            npy = os.path.join(tmp, "from-root.npy")
            r = subprocess.run([sys.executable, "-c", code, os.path.join(out, "predictions.h5"), npy],
                               cwd="/", capture_output=True, text=True)
            same = r.returncode == 0 and np.array_equal(np.load(npy), preds[(2, 2)])
            t.check(same, "odd5 np=2 tp=2: /predictions reads the same from another directory",
                    r.stderr[-1500:])

    # every activation; a 3-layer model (col, row, replicated); a 1-layer model held whole
    small = [
        ("relu-tanh", [12, 16, 4], "relu", "tanh", [(1, 1), (4, 4)]),
        ("sigmoid3", [12, 8, 6, 3], "sigmoid", "sigmoid", [(1, 1), (2, 2)]),
        ("one-layer", [12, 7], "relu", None, [(2, 2)]),
    ]
    for i, (mname, dims, act, fin, cfgs) in enumerate(small):
        model = e.make_model(os.path.join(tmp, mname), dims, act, fin, seed=20 + i)
        ref = model.forward(x)
        for nranks, tp in cfgs:
            run_config(t, tmp, model, mname, inputs, shards, ref, nranks, tp)

    # F16 / BF16 weight files: same seed as odd5, so `orig` equals odd5's float32 weights
    for dtype in ("F16", "BF16"):
        mname = f"odd5-{dtype}"
        model = e.make_model(os.path.join(tmp, mname), [12, 32, 16, 8, 20, 5], "gelu", "softmax",
                             dtype=dtype, seed=1)
        o = run_config(t, tmp, model, mname, inputs, shards, model.forward(x), 2, 2)
        if o is not None:  # BF16 keeps 8 significant bits: 1e-2 for F16, 2e-2 for BF16
            tol = 1e-2 if dtype == "F16" else 2e-2
            t.close(o.predictions, model.forward(x, "orig"), tol,
                    f"{mname}: close ({tol:g}) to the float32 weights' reference")

    # reduced GEMM precision with F32 weights
    odd5 = models["odd5"]
    # --prefetch and an explicit --device cpu change nothing
    variants = [("--prefetch", "1"), ("--prefetch", "7")]
    if not e.DEVICE:
        variants.append(("--device", "cpu"))
    for extra in variants:
        run_config(t, tmp, odd5, "odd5", inputs, shards, odd5.forward(x), 2, 1, extra=extra)

    f32 = run_config(t, tmp, odd5, "odd5", inputs, shards, odd5.forward(x), 2, 2,
                     extra=("--precision", "f32"))
    for prec, tol in (("f16", 1e-2), ("bf16", 2e-2)):
        o = run_config(t, tmp, odd5, "odd5", inputs, shards, odd5.forward(x), 2, 2, tol=tol,
                       extra=("--precision", prec))
        if o is not None and f32 is not None:
            err = e.rel_err(o.predictions, f32.predictions)
            t.check(err > 1e-6, f"odd5 --precision {prec}: differs from --precision f32 "
                    f"(the option takes effect)", f"relative difference {err:.3g}")

    # float64, int32 and float16 datasets in one job, given out of path order
    ddir = os.path.join(tmp, "dtypes")
    made = e.make_inputs(ddir, [37, 41, 43], 12, names=["f-f16.h5", "d-f64.h5", "e-i32.h5"],
                         dtype=[np.float16, np.float64, np.int32], seed=12)
    dshards = sorted(made, key=lambda s: s[0])
    dx = np.concatenate([s[1] for s in dshards])
    even4 = models["even4"]
    run_config(t, tmp, even4, "dtypes", [p for p, _ in made], dshards, even4.forward(dx), 2, 1,
               unit_rows=16, batch=8)

    # an empty shard beside a small one
    edir = os.path.join(tmp, "empty")
    made = e.make_inputs(edir, [0, 5], 12, names=["e0-empty.h5", "e1-five.h5"], seed=13)
    eshards = sorted(made, key=lambda s: s[0])
    ex = np.concatenate([s[1] for s in eshards])
    run_config(t, tmp, odd5, "empty-shard", os.path.join(edir, "*.h5"), eshards,
               odd5.forward(ex), 2, 2)


if __name__ == "__main__":
    e.main("tp_equivalence", body)
