"""test_bad_inputs.py — bad data, bad models and bad command lines fail cleanly; NaN/Inf rows fail
alone.

For every case: the documented exit status (3 for bad input data, model or output directory,
2 for a bad command line), a stderr line starting with "shardline: " that names the culprit
(file, dataset, tensor, key or option), no crash (no signal exit, no "Segmentation fault"),
and no OUT/predictions.h5. Cases:
  data:    no file matches the glob; a missing file given literally; a file without the dataset
           (and --input-dataset naming a dataset nobody has; the message lists the datasets the
           file holds); random bytes; a truncated HDF5
           file; 1-D and 3-D datasets; a feature count that differs between files, and one that
           differs from the model's d0 in every file; --output naming an existing regular file;
  weights: missing model.safetensors; truncated file; header length beyond the file; a header
           length of 2^60; a header that is not JSON; offsets out of range; overlapping
           offsets; dtypes "F64" and "XX"; shape disagreeing with the byte count; a missing
           tensor; a tensor with the wrong (transposed) shape;
  config:  missing config.json; not JSON; missing "dims"; "dims" of the wrong type; unknown
           activation and final_activation; an unknown model_type; dims disagreeing with the
           tensors; --tp 3 with a column-parallel layer whose size does not divide by 3 (the
           message names that layer, and a model whose split layers do divide runs fine);
  usage:   --batch-size abc / 0 / 12abc, --unit-rows 0, --prefetch abc, --tp not dividing the
           rank count, an unknown option, a missing --model, --device/--precision/--comm values
           not in the table, --comm nccl on the CPU backend (status 2, names --comm nccl), and
           --comm mpi on 2 ranks runs (the log line and report.json name the all-reduce);
  sizes:   --unit-rows 2^63-1 (two shards of 50 and 30 rows), --batch-size 2^62, 2^62+1, 2^63-1
           and 2^64, --prefetch 2^31-1, --text-bytes 2^40 and (generate) 2^63-1, --tp 2^31-1:
           exit 2 naming the option and its bound; --stop '': exit 2; a job file holding binary
           bytes: exit 2, the bytes escaped as \\xNN in the message;
  finite:  an all-NaN layers.0.weight (1 and 2 ranks), one NaN in a bias, +Inf in a weight
           (tp 2): exit 3 naming model.safetensors, the tensor and NaN/Inf;
  files:   a --model file that is not GGUF (bad magic; any other file): "not a GGUF file";
           tokenizer.json with "hello": 99999 beside a 30522-row BERT embedding (1 and 2 ranks)
           and a 256-row LLaMA embedding (BPE): exit 3 naming tokenizer.json, the token, the id;
           an added token with id 1e8 (BPE): exit 3 naming tokenizer.json, added_tokens[i], the id;
  changes: after a run interrupted by SL_FAULT=rename:3 (2 units committed): the model
           retrained at the same path (the resume recomputes every unit under the new
           fingerprint, never a mix; predictions are the new model's), an input rewritten (its
           units computed again), an input whose width changed (exit 3 naming it), another
           model on the partial output (exit 3 naming both models);
  sharing: a second job on a running job's output directory (exit 3 naming the lock file and
           the first job's pid; the first completes), a SIGKILLed job's lock does not block
           the rerun, two tasks of a job array run side by side but the same task twice does
           not, nor a plain job beside an array's task;
  mounts:  --output new, empty, or a partial job's, on a read-only tmpfs (exit 3, "not
           writable"; skipped when mounting is not permitted).
Several cases also run on 2 ranks. Then NaN/Inf rows: a shard with rows holding NaN, +Inf and
-Inf gives status 4, those output rows are all NaN, the other rows match the float64
reference, /errors lists exactly those global row indices with a reason naming NaN or Inf,
the part files list them in failed_rows (indices inside the unit), and report.json
failed_rows equals their count.

Run: /usr/bin/python3 tests/mpi/test_bad_inputs.py  (env: see sl_e2e.py; SL_VERBOSE=1 also
prints shardline's messages). Prints each check, then "N passed, N failed".
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

DIMS = [12, 32, 16, 5]


def expect_fail(t, label, nranks, args, status, names, out):
    """names: alternatives; each is a tuple of strings that must appear on one 'shardline: '
    stderr line (a str is a 1-tuple)."""
    res = e.run(nranks, args, timeout=120)
    label = f"{label} (np {nranks})"
    if res.seconds > 10:
        print(f"      note: {label} took {res.seconds:.1f} s")
    if os.environ.get("SL_VERBOSE"):
        for line in res.stderr.splitlines():
            if line.startswith("shardline: "):
                print(f"      stderr: {line}")
    t.check(not e.crashed(res), f"{label}: no crash", res.describe())
    t.check(res.rc == status, f"{label}: exit status {status}", res.describe())
    alts = [tuple(n) if isinstance(n, (tuple, list)) else (n,) for n in names]
    shown = " or ".join("+".join(getattr(x, "pattern", x) for x in a) for a in alts)
    t.check(any(e.stderr_names(res, *a) for a in alts),
            f"{label}: stderr line 'shardline: ...' names {shown}", res.describe())
    t.check(not os.path.exists(os.path.join(out, "predictions.h5")),
            f"{label}: no predictions.h5")
    return res


# ---- safetensors surgery -----------------------------------------------------------------------

def read_raw(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_raw(path, header, body, header_len=None, header_bytes=None):
    hb = header_bytes if header_bytes is not None else json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb) if header_len is None else header_len))
        f.write(hb)
        f.write(body)


def body(t, tmp):
    data = os.path.join(tmp, "data")
    good = e.make_inputs(data, [30, 20], DIMS[0], names=["a.h5", "b.h5"], seed=3)
    good_glob = os.path.join(data, "*.h5")
    model = e.make_model(os.path.join(tmp, "model"), DIMS, "relu", "softmax", seed=4)
    counter = [0]

    def out_dir():
        counter[0] += 1
        return os.path.join(tmp, f"out{counter[0]:03d}")

    def job(inputs=good_glob, model_dir=model.path, out=None, extra=(), dataset=None):
        out = out or out_dir()
        return e.job_args(model_dir, inputs, out, dataset=dataset, extra=extra), out

    def data_case(label, files, names, nranks=(1,), inputs=None, dataset=None, status=3):
        """files: {name: array or bytes} written into a fresh dir next to a good file."""
        d = os.path.join(tmp, "case-" + re.sub(r"\W+", "_", label))
        os.makedirs(d)
        shutil.copy(good[0][0], os.path.join(d, "a.h5"))
        for name, content in files.items():
            path = os.path.join(d, name)
            if isinstance(content, bytes):
                with open(path, "wb") as f:
                    f.write(content)
            else:
                e.write_shard(path, content)
        for n in nranks:
            args, out = job(inputs=inputs or os.path.join(d, "*.h5"), dataset=dataset)
            expect_fail(t, label, n, args, status, names, out)

    rng = np.random.default_rng(7)
    rows = lambda r, d=DIMS[0]: rng.standard_normal((r, d)).astype(np.float32)  # noqa: E731

    # ---- data ----
    pattern = os.path.join(tmp, "nowhere", "*.h5")
    for n in (1, 2):
        args, out = job(inputs=pattern)
        expect_fail(t, "glob matching no file", n, args, 3, [pattern], out)
    missing = os.path.join(data, "missing.h5")
    args, out = job(inputs=[good_glob, missing])
    expect_fail(t, "missing file given literally", 1, args, 3, ["missing.h5"], out)

    d = os.path.join(tmp, "case-nodataset")
    os.makedirs(d)
    shutil.copy(good[0][0], os.path.join(d, "a.h5"))
    with h5py.File(os.path.join(d, "c.h5"), "w") as f:
        f.create_dataset("other", data=rows(10))
    for n in (1, 2):
        args, out = job(inputs=os.path.join(d, "*.h5"))
        expect_fail(t, "file without the dataset", n, args, 3, ["c.h5"], out)
    args, out = job(dataset="nosuchdataset")
    expect_fail(t, "--input-dataset absent from every file", 1, args, 3, ["nosuchdataset"], out)

    data_case("random bytes", {"r.h5": bytes(rng.integers(0, 256, 4096, dtype=np.uint8))},
              ["r.h5"])
    tpath = os.path.join(tmp, "whole.h5")
    e.write_shard(tpath, rows(2000))
    with open(tpath, "rb") as f:
        whole = f.read()
    data_case("truncated HDF5 file", {"t.h5": whole[:len(whole) // 2]}, ["t.h5"], nranks=(1, 2))
    data_case("1-D dataset", {"one_d.h5": rng.standard_normal(50).astype(np.float32)}, ["one_d.h5"])
    data_case("3-D dataset", {"three_d.h5": rng.standard_normal((5, 3, 4)).astype(np.float32)},
              ["three_d.h5"])
    data_case("feature count differs between files", {"wrong_d.h5": rows(10, DIMS[0] - 1)},
              ["wrong_d.h5"])
    wd = os.path.join(tmp, "case-all-wrong-d")
    for name in ("w1.h5", "w2.h5"):
        e.write_shard(os.path.join(wd, name), rows(10, DIMS[0] + 1))
    for n in (1, 2):
        args, out = job(inputs=os.path.join(wd, "*.h5"))
        expect_fail(t, "feature count != model d0 in every file", n, args, 3,
                    ["w1.h5", "w2.h5", "d0", "dims"], out)

    blocker = os.path.join(tmp, "a-regular-file")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    args, _ = job(out=blocker)
    res = e.run(1, args, timeout=120)
    t.check(not e.crashed(res), "--output is a regular file: no crash", res.describe())
    t.check(res.rc == 3, "--output is a regular file: exit status 3", res.describe())
    t.check(e.stderr_names(res, "a-regular-file"), "--output is a regular file: names it",
            res.describe())

    # ---- weights ----
    st_path = os.path.join(model.path, "model.safetensors")
    header, blob = read_raw(st_path)
    with open(st_path, "rb") as f:
        st_bytes = f.read()

    def model_case(label, names, writer=None, config=None, nranks=(1,), remove=None, tp=None):
        mdir = os.path.join(tmp, "model-" + re.sub(r"\W+", "_", label))
        shutil.copytree(model.path, mdir)
        if writer:
            writer(os.path.join(mdir, "model.safetensors"))
        if config is not None:
            with open(os.path.join(mdir, "config.json"), "w") as f:
                f.write(config if isinstance(config, str) else json.dumps(config))
        if remove:
            os.remove(os.path.join(mdir, remove))
        for n in nranks:
            extra = ("--tp", str(tp)) if tp else ()
            args, out = job(model_dir=mdir, extra=extra)
            expect_fail(t, label, n, args, 3, names, out)

    def raw_writer(edit=None, header_len=None, header_bytes=None, body_cut=None):
        def w(path):
            h = json.loads(json.dumps(header))
            if edit:
                edit(h)
            b = blob if body_cut is None else blob[:body_cut]
            write_raw(path, h, b, header_len=header_len, header_bytes=header_bytes)
        return w

    def bytes_writer(content):
        def w(path):
            with open(path, "wb") as f:
                f.write(content)
        return w

    st = "model.safetensors"
    model_case("missing model.safetensors", [st], remove=st)
    model_case("truncated safetensors", [st], writer=bytes_writer(st_bytes[:len(st_bytes) - 100]),
               nranks=(1, 2))
    model_case("truncated inside the header", [st], writer=bytes_writer(st_bytes[:40]))
    model_case("header length beyond the file", [st],
               writer=raw_writer(header_len=len(st_bytes) + 64))
    model_case("header length 2^60", [st], writer=raw_writer(header_len=1 << 60))
    model_case("header not JSON", [st], writer=raw_writer(header_bytes=b'{"layers.0.weight": [1, '))

    def set_offsets(name, begin, end):
        def edit(h):
            h[name]["data_offsets"] = [begin, end]
        return edit

    w1 = header["layers.1.weight"]["data_offsets"]
    model_case("offsets out of range", ["layers.1.weight"],
               writer=raw_writer(set_offsets("layers.1.weight", w1[0], len(blob) + 4096)),
               nranks=(1, 2))
    b1 = header["layers.1.bias"]["data_offsets"]
    model_case("overlapping offsets", ["layers.1.bias", "layers.1.weight"],
               writer=raw_writer(set_offsets("layers.1.bias", w1[0], w1[0] + (b1[1] - b1[0]))))

    def set_dtype(name, dt):
        def edit(h):
            h[name]["dtype"] = dt
        return edit

    def f64_bias(path):
        t2 = e.load_safetensors(st_path)
        t2["layers.0.bias"] = t2["layers.0.bias"].astype(np.float64)
        e.save_safetensors(path, t2)

    model_case("dtype F64", ["layers.0.bias"], writer=f64_bias)
    model_case("dtype XX", ["layers.2.weight"], writer=raw_writer(set_dtype("layers.2.weight", "XX")))

    def set_shape(name, shape):
        def edit(h):
            h[name]["shape"] = shape
        return edit

    model_case("shape disagrees with byte count", ["layers.0.bias"],
               writer=raw_writer(set_shape("layers.0.bias", [DIMS[1] - 1])))

    def drop(name):
        def w(path):
            t2 = e.load_safetensors(st_path)
            del t2[name]
            e.save_safetensors(path, t2)
        return w

    def transpose(name):
        def w(path):
            t2 = e.load_safetensors(st_path)
            t2[name] = np.ascontiguousarray(t2[name].T)
            e.save_safetensors(path, t2)
        return w

    model_case("missing tensor", ["layers.1.bias"], writer=drop("layers.1.bias"))
    model_case("transposed weight", ["layers.1.weight"], writer=transpose("layers.1.weight"))

    # ---- config.json ----
    cfg = {"model_type": "mlp", "dims": DIMS, "activation": "relu", "final_activation": "softmax"}

    def with_cfg(**kw):
        c = dict(cfg)
        for k, v in kw.items():
            if v is KeyError:
                del c[k]
            else:
                c[k] = v
        return c

    model_case("missing config.json", ["config.json"], remove="config.json")
    model_case("config.json not JSON", ["config.json"], config='{"model_type": "mlp", "dims": [12,')
    model_case("config without dims", ["dims"], config=with_cfg(dims=KeyError))
    model_case("dims of the wrong type", ["dims"], config=with_cfg(dims="12,32,16,5"))
    model_case("dims with one entry", ["dims"], config=with_cfg(dims=[12]))
    model_case("unknown activation", ["activation", "swish"], config=with_cfg(activation="swish"))
    model_case("unknown final_activation", ["final_activation", "softplus"],
               config=with_cfg(final_activation="softplus"))
    model_case("unknown model_type", ["model_type", "cnn"], config=with_cfg(model_type="cnn"))
    model_case("dims disagree with the tensors", ["layers.2", "dims"],
               config=with_cfg(dims=[12, 32, 16, 6]), nranks=(1, 2))

    # --tp 3: layer 0 (32) and layer 2 (8) are column-parallel; 8 does not divide by 3
    tpm = e.make_model(os.path.join(tmp, "model-tp3"), [12, 6, 16, 8, 5], "relu", None, seed=8)
    args, out = job(model_dir=tpm.path, extra=("--tp", "3"))
    expect_fail(t, "--tp 3, layer 2 not divisible", 3, args, 3,
                ["layers.2", "layer 2", "Layer 2", "layer[2]"], out)
    # the same TP size on a model whose split layers divide by 3 (d2 = 16 is row-parallel's output)
    ok3 = e.make_model(os.path.join(tmp, "model-tp3-ok"), [12, 6, 16, 9, 5], "relu", None, seed=9)
    args, out = job(model_dir=ok3.path, extra=("--tp", "3", "--unit-rows", "16"))
    res = e.run(3, args, timeout=180)
    if t.check(res.rc == 0, "--tp 3 on a model whose split layers divide by 3: exit 0",
               res.describe()):
        x = np.concatenate([g[1] for g in sorted(good)])
        t.close(e.predictions(t, out, "--tp 3"), ok3.forward(x), 1e-5,
                "--tp 3 on a model whose split layers divide by 3: predictions match")

    # ---- usage ----
    for label, extra, names, n in (
            ("--batch-size abc", ("--batch-size", "abc"), ["batch-size"], 1),
            ("--batch-size 0", ("--batch-size", "0"), ["batch-size"], 1),
            ("--batch-size 12abc", ("--batch-size", "12abc"), ["batch-size"], 1),
            ("--unit-rows 0", ("--unit-rows", "0"), ["unit-rows"], 1),
            ("--tp 3 on 2 ranks", ("--tp", "3"), [re.compile(r"\btp\b|tensor.parallel", re.I)], 2),
            ("--device tpu", ("--device", "tpu"), ["device", "tpu"], 1),
            ("--precision f8", ("--precision", "f8"), ["precision", "f8"], 1),
            ("--prefetch abc", ("--prefetch", "abc"), ["prefetch"], 1),
            ("--comm gloo", ("--comm", "gloo"), [("--comm", "gloo")], 1),
            ("--comm nccl on the CPU", ("--comm", "nccl", "--device", "cpu", "--tp", "2"),
             [("--comm nccl", "CUDA")], 2),
            ("unknown option", ("--frobnicate",), ["frobnicate"], 1)):
        args, out = job(extra=extra)
        expect_fail(t, label, n, args, 2, names, out)
    out = out_dir()
    args = ["--input", good_glob, "--output", out]
    expect_fail(t, "missing --model", 1, args, 2, [re.compile(r"\bmodel\b")], out)
    # --comm mpi on the CPU backend: MPI, and the placement line and the report say so
    args, out = job(extra=("--tp", "2", "--comm", "mpi", "--device", "cpu"))
    res = e.run(2, args, timeout=180)
    if t.check(res.rc == 0, "--comm mpi --tp 2 on the CPU: exit 0", res.describe()):
        t.check("all-reduce over mpi (CPU backend" in res.stderr,
                "--comm mpi: the log says which all-reduce and why", res.stderr[-600:])
        t.check(e.load_json(os.path.join(out, "report.json")).get("all_reduce") == "mpi",
                "--comm mpi: report.json all_reduce is mpi")

    # ---- sizes from options: bounded at parse time, never an overflow ----
    # Two shards of 50 and 30 rows: --unit-rows 2^63-1 overflowed the unit count (exit 134 and
    # an all-NaN predictions.h5 marked complete); 2^62 rows per batch overflowed the read buffer
    # (SIGSEGV); 2^63-1 text bytes made a 2^63-byte memset; others were fatal allocations of
    # 1.8e19 bytes naming no option. Each is now refused with the option and its bound.
    sz = os.path.join(tmp, "sizes")
    e.make_inputs(sz, [50, 30], DIMS[0], names=["s0.h5", "s1.h5"], seed=11)
    sz_glob = os.path.join(sz, "*.h5")
    for label, extra, names in (
            ("--unit-rows 2^63-1", ("--unit-rows", str(2**63 - 1)), ("unit-rows", "1073741824")),
            ("--batch-size 2^62", ("--batch-size", str(2**62)), ("batch-size", "1048576")),
            ("--batch-size 2^62+1", ("--batch-size", str(2**62 + 1)), ("batch-size", "1048576")),
            ("--batch-size 2^63-1", ("--batch-size", str(2**63 - 1)), ("batch-size", "1048576")),
            ("--batch-size 2^64", ("--batch-size", str(2**64)), ("batch-size", "1048576")),
            ("--prefetch 2^31-1", ("--prefetch", str(2**31 - 1)), ("prefetch", "64")),
            ("--text-bytes 2^40", ("--text-bytes", str(2**40)), ("text-bytes", "16777216")),
            ("generate --text-bytes 2^63-1", ("--task", "generate", "--text-bytes", str(2**63 - 1)),
             ("text-bytes", "16777216")),
            ("--tp 2^31-1", ("--tp", str(2**31 - 1)), ("tp", "1024")),
            ("generate --stop ''", ("--task", "generate", "--stop", "x", "--stop", ""), ("--stop",))):
        args, out = job(inputs=sz_glob, extra=extra)
        expect_fail(t, label, 1, args, 2, [names], out)

    # a job file holding binary bytes: refused, and the message escapes them
    jf = os.path.join(tmp, "binary.ini")
    with open(jf, "wb") as f:
        f.write(b"model = " + model.path.encode() + b"\n\x01\x1b[2J\xff\xfe = 3\n")
    out = out_dir()
    res = expect_fail(t, "binary job file", 1, [jf, "--input", sz_glob, "--output", out], 2,
                      [("binary.ini", "\\x01\\x1b[2J\\xff\\xfe")], out)
    raw = [ln for ln in res.stderr.splitlines() if ln.startswith("shardline: ")]
    t.check(raw and not any(re.search("[\x00-\x08\x0b-\x1f\x7f\ufffd]", ln) for ln in raw),
            "binary job file: no control byte or invalid UTF-8 in the message", repr(raw))

    # ---- non-finite weights: refused at load, naming the file and the tensor ----
    def poison(name, value, index=None):
        def w(path):
            t2 = e.load_safetensors(st_path)
            a = t2[name].copy()
            if index is None:
                a[...] = value
            else:
                a[index] = value
            t2[name] = a
            e.save_safetensors(path, t2)
        return w

    model_case("all-NaN layers.0.weight", [(st, "layers.0.weight", "NaN")],
               writer=poison("layers.0.weight", np.nan), nranks=(1, 2))
    model_case("one NaN in layers.1.bias", [(st, "layers.1.bias", "NaN")],
               writer=poison("layers.1.bias", np.nan, 3))
    model_case("+Inf in layers.2.weight, tp 2", [(st, "layers.2.weight", "Inf")],
               writer=poison("layers.2.weight", np.inf, (1, 2)), nranks=(2,), tp=2)

    # ---- a --model file that is not GGUF ----
    for name, content in (("bad.gguf", b"GGUX" + bytes(60)), ("weights.bin", bytes(range(256)))):
        mf = os.path.join(tmp, name)
        with open(mf, "wb") as f:
            f.write(content)
        args, out = job(model_dir=mf)
        expect_fail(t, f"--model {name} (bad magic)", 1, args, 3, [(name, "not a GGUF file")], out)

    # ---- tokenizer ids beyond the model's vocabulary: refused at load ----
    ref = os.path.join(e.SOURCE_DIR, "tests", "reference")
    texts = os.path.join(tmp, "texts.h5")
    with h5py.File(texts, "w") as f:
        f.create_dataset("text", data=["hello world", "a second row"],
                         dtype=h5py.string_dtype("utf-8"))
    bert = os.path.join(tmp, "bert-vocab")
    shutil.copytree(os.path.join(ref, "tiny_bert_cls"), bert)
    with open(os.path.join(bert, "tokenizer.json")) as f:
        tj = json.load(f)
    tj["model"]["vocab"]["hello"] = 99999  # the embedding has 30522 rows
    with open(os.path.join(bert, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    for n in (1, 2):
        args, out = job(model_dir=bert, inputs=texts, dataset="text")
        expect_fail(t, "WordPiece id 99999 > vocab 30522", n, args, 3,
                    [("tokenizer.json", "99999", "hello")], out)
    llama = os.path.join(tmp, "llama-vocab")
    shutil.copytree(os.path.join(ref, "tiny_llama", "qwen2_bias"), llama)
    with open(os.path.join(ref, "bpe_tiny", "llama3", "tokenizer.json")) as f:
        tj = json.load(f)
    tj["model"]["vocab"]["hello"] = 99999  # the embedding has 256 rows
    with open(os.path.join(llama, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    args, out = job(model_dir=llama, inputs=texts, dataset="text")
    expect_fail(t, "BPE id 99999 > vocab 256", 1, args, 3, [("tokenizer.json", "99999", "hello")],
                out)
    # an added token with id 1e8 (a fuzzing find): refused before tables of 10^8 entries are made
    tj["model"]["vocab"].pop("hello")
    tj.setdefault("added_tokens", []).append({"id": 100000000, "content": "<|big|>", "special": True})
    with open(os.path.join(llama, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    args, out = job(model_dir=llama, inputs=texts, dataset="text")
    expect_fail(t, "BPE added token id 1e8", 1, args, 3,
                [("tokenizer.json", "added_tokens[", "100000000", "unused")], out)

    # ---- NaN / Inf rows ----
    nd = os.path.join(tmp, "nan")
    clean = e.make_inputs(nd, [100], DIMS[0], names=["n0.h5"], seed=10)
    x1 = rows(300)
    bad_local = [0, 7, 63, 64, 150, 299]
    x1[0, 3] = np.nan
    x1[7, :] = np.inf
    x1[63, 11] = -np.inf
    x1[64, :] = np.nan
    x1[150, 0] = np.inf
    x1[299, 5] = np.nan
    e.write_shard(os.path.join(nd, "n1.h5"), x1)
    x = np.concatenate([clean[0][1], e.as_f32(x1)])
    bad_global = [100 + i for i in bad_local]
    good_rows = np.setdiff1d(np.arange(len(x)), bad_global)
    ref = model.forward(np.where(np.isfinite(x), x, 0.0))
    for n, tp in ((1, 1), (2, 2), (2, 1)):
        label = f"NaN/Inf rows (np {n} tp {tp})"
        out = out_dir()
        res = e.run(n, e.job_args(model.path, os.path.join(nd, "*.h5"), out, tp=tp, unit_rows=64,
                                  batch=16), timeout=180)
        t.check(not e.crashed(res), f"{label}: no crash", res.describe())
        if not t.check(res.rc == 4, f"{label}: exit status 4", res.describe()):
            continue
        try:
            o = e.read_output(out)
        except Exception as ex:  # noqa: BLE001
            t.check(False, f"{label}: predictions.h5 written", repr(ex))
            continue
        p = o.predictions
        t.check(p.shape == (400, DIMS[-1]) and bool(np.all(np.isnan(p[bad_global]))),
                f"{label}: failed rows are all NaN", f"shape {p.shape}")
        t.close(p[good_rows], ref[good_rows], 1e-5, f"{label}: other rows match the reference")
        errs = o.errors or []
        got_rows = [r.get("row") for r in errs]
        t.check(sorted(got_rows) == bad_global and len(got_rows) == len(bad_global),
                f"{label}: /errors lists exactly rows {bad_global}", f"got {got_rows}")
        reasons = [str(r.get("reason", "")) for r in errs]
        t.check(bool(reasons) and all(re.search(r"nan|inf", s, re.I) for s in reasons),
                f"{label}: every /errors reason mentions NaN or Inf", f"reasons {reasons}")
        t.check((o.report or {}).get("failed_rows") == len(bad_global),
                f"{label}: report.json failed_rows = {len(bad_global)}", f"report {o.report}")
        parts, _ = e.list_parts(out)
        listed = []
        for prt in parts.values():
            with h5py.File(prt.path, "r") as f:
                if "failed_rows" in f:
                    base = 100 if prt.shard == "n1.h5" else 0
                    listed += [base + prt.first + int(i) for i in np.asarray(f["failed_rows"]).ravel()]
        t.check(sorted(listed) == bad_global,
                f"{label}: part files list the failed rows in failed_rows (unit-relative)",
                f"got {sorted(listed)}")

    dataset_listing(t, tmp, model.path)
    changes_and_sharing(t, tmp)


def frozen_after_first_part(p, out, limit=120):
    """Waits for the job's first committed part file, then stops its ranks (SIGSTOP): the
    job holds its output directory while we look. Returns the rank pids, or None."""
    end = time.time() + limit
    while time.time() < end and p.poll() is None:
        ranks = e.rank_pids(p.pid)
        if len(ranks) == 2 and e.list_parts(out)[0]:
            for r in ranks:
                os.kill(r, signal.SIGSTOP)
            return ranks
        time.sleep(0.005)
    return None


def changes_and_sharing(t, tmp):
    """Files changed between a run and its resume, two jobs on one output directory, and an
    output directory on a read-only mount."""
    dims = [12, 32, 16, 5]
    mdir = os.path.join(tmp, "chg-model")
    e.make_model(mdir, dims, "relu", None, seed=21)
    shards = e.make_inputs(os.path.join(tmp, "chg-data"), [40, 24], dims[0],
                           names=["a.h5", "b.h5"], seed=22)
    glob = os.path.join(tmp, "chg-data", "*.h5")

    def partial(out, mdl=mdir):
        """A run that commits 2 units and then fails its third commit (SL_FAULT)."""
        args = e.job_args(mdl, glob, out, unit_rows=8, extra=["--quiet"])
        res = e.run(1, args, timeout=120, env={"SL_FAULT": "rename:3"})
        t.check(res.rc == 1 and len(e.list_parts(out)[0]) == 2,
                "interrupted run: exit 1 with 2 units committed", res.describe())
        return args

    def fingerprints(out):
        fps = set()
        for prt in e.list_parts(out)[0].values():
            with h5py.File(prt.path, "r") as f:
                fps.add(e._s(f.attrs["model_fingerprint"]))
        return fps

    # the model retrained at the same path between a run and its resume: every unit is
    # computed again with the new weights (never a mix of old and new parts)
    out = os.path.join(tmp, "chg-out-model")
    args = partial(out)
    old_fp = fingerprints(out)
    model2 = e.make_model(mdir, dims, "relu", None, seed=23)
    res = e.run(1, args, timeout=120)
    if t.check(res.rc == 0, "model changed before the resume: exit 0", res.describe()):
        o = e.read_output(out)
        man_fp = o.manifest["model"]["fingerprint"]
        t.check(fingerprints(out) == {man_fp} and man_fp not in old_fp
                and o.report["units_skipped"] == 0,
                "model changed before the resume: every part recomputed under the new "
                "fingerprint, none kept", f"parts {fingerprints(out)}, manifest {man_fp}, "
                f"old {old_fp}, skipped {o.report['units_skipped']}")
        x = np.concatenate([s[1] for s in sorted(shards)])
        t.close(o.predictions, model2.forward(x), 1e-5,
                "model changed before the resume: predictions are the new model's")
    # another model (another path) on the same output: refused, naming both
    other = e.make_model(os.path.join(tmp, "chg-other"), dims, "relu", None, seed=24)
    out = os.path.join(tmp, "chg-out-other")
    partial(out)
    expect_fail(t, "another model on a partial output", 1,
                e.job_args(other.path, glob, out, unit_rows=8), 3,
                [("another job", "chg-other", "chg-model")], out)
    # an input rewritten between a run and its resume: its units are computed again
    out = os.path.join(tmp, "chg-out-input")
    args = partial(out)
    kept_a = {r: p.ino for r, p in e.list_parts(out)[0].items() if r.startswith("a.h5")}
    rng = np.random.default_rng(25)
    new_a = rng.standard_normal((40, dims[0])).astype(np.float32)
    time.sleep(0.01)
    e.write_shard(shards[0][0], new_a)
    res = e.run(1, args, timeout=120)
    if t.check(res.rc == 0, "input rewritten before the resume: exit 0", res.describe()):
        o = e.read_output(out)
        after = e.list_parts(out)[0]
        t.check(kept_a and all(after[r].ino != ino for r, ino in kept_a.items())
                and o.report["units_skipped"] == 0,
                "input rewritten before the resume: its committed units computed again",
                f"skipped {o.report['units_skipped']}")
        x = np.concatenate([new_a, shards[1][1]])
        t.close(o.predictions, model2.forward(x), 1e-5,
                "input rewritten before the resume: predictions are the new rows'")
    # an input whose feature count changed before the resume: refused before any write
    out = os.path.join(tmp, "chg-out-width")
    args = partial(out)
    e.write_shard(shards[1][0], rng.standard_normal((24, dims[0] + 2)).astype(np.float32))
    expect_fail(t, "input width changed before the resume", 1, args, 3, [("b.h5", "features")],
                out)
    e.write_shard(shards[1][0], shards[1][1])

    # two jobs on one output directory: the second is refused, naming the first
    hm = e.make_model(os.path.join(tmp, "lock-model"), [64, 1024, 512, 64], "relu", None, seed=26)
    e.make_inputs(os.path.join(tmp, "lock-data"), [32000], 64, names=["h.h5"], seed=27)
    hglob = os.path.join(tmp, "lock-data", "*.h5")
    out = os.path.join(tmp, "lock-out")
    hargs = e.job_args(hm.path, hglob, out, unit_rows=2000, batch=500, extra=["--quiet"])
    p = e.start(2, hargs)
    ranks = frozen_after_first_part(p, out)
    if t.check(ranks is not None, "first job running (frozen after its first commit)"):
        expect_fail(t, "a second job on the same output directory", 2, hargs, 3,
                          [("another shardline job", ".shardline.lock", f"pid {ranks[0]}"),
                           ("another shardline job", ".shardline.lock", f"pid {ranks[1]}")], out)
        for r in ranks:
            os.kill(r, signal.SIGCONT)
        rc, _, err = e.finish(p, timeout=300)
        t.check(rc == 0 and os.path.exists(os.path.join(out, "predictions.h5")),
                "the first job completes undisturbed", err[-1500:])
    else:
        e.kill_tree(p.pid, signal.SIGKILL)
        e.finish(p)
    # a job killed with SIGKILL leaves no lock that blocks its rerun
    out = os.path.join(tmp, "lock-out-killed")
    hargs = e.job_args(hm.path, hglob, out, unit_rows=2000, batch=500, extra=["--quiet"])
    p = e.start(2, hargs)
    ranks = frozen_after_first_part(p, out)
    procs = e.kill_tree(p.pid, signal.SIGKILL)
    e.finish(p)
    e.wait_gone(procs, 30)
    res = e.run(2, hargs, timeout=300)
    t.check(ranks is not None and res.rc == 0,
            "after a SIGKILL the lock is gone: the rerun completes", res.describe())
    # the tasks of a job array share the directory; the same task twice does not
    out = os.path.join(tmp, "lock-out-array")
    targs = lambda k: hargs[:hargs.index("--output") + 1] + [out] + hargs[hargs.index("--output") + 2:] \
        + ["--array-tasks", "2", "--array-task", str(k)]  # noqa: E731
    p = e.start(2, targs(0))
    ranks = frozen_after_first_part(p, out)
    if t.check(ranks is not None, "array task 0 running (frozen after its first commit)"):
        expect_fail(t, "array task 0 twice at once", 1, targs(0), 3,
                    [("array task 0", ".shardline.lock.task-0")], out)
        res = e.run(1, targs(1), timeout=300)
        t.check(res.rc == 0, "array task 1 runs beside task 0", res.describe())
        expect_fail(t, "a plain job beside an array's task", 1, hargs[:hargs.index("--output") + 1]
                    + [out] + hargs[hargs.index("--output") + 2:], 3,
                    [("another shardline job", "job array")], out)
        for r in ranks:
            os.kill(r, signal.SIGCONT)
        rc, _, err = e.finish(p, timeout=300)
        t.check(rc == 0 and os.path.exists(os.path.join(out, "predictions.h5")),
                "array task 0 completes and writes predictions.h5", err[-1500:])
    else:
        e.kill_tree(p.pid, signal.SIGKILL)
        e.finish(p)

    # an output directory on a read-only mount
    mnt = os.path.join(tmp, "ro")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        t.skip("read-only output", f"cannot mount a tmpfs here: {r.stderr.strip()}")
        return
    try:
        partial(os.path.join(mnt, "done"))  # a partial output, then the mount turns read-only
        os.makedirs(os.path.join(mnt, "empty"))
        r = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            t.skip("read-only output", f"cannot remount read-only: {r.stderr.strip()}")
            return
        for name, label in (("new", "a new --output on a read-only mount"),
                            ("empty", "an empty --output on a read-only mount"),
                            ("done", "resuming a job whose output turned read-only")):
            out = os.path.join(mnt, name)
            expect_fail(t, label, 2, e.job_args(mdir, glob, out, unit_rows=8), 3,
                        [(out, "not writable"), (mnt, "not writable")], out)
    finally:
        subprocess.run(["umount", mnt], capture_output=True)


def dataset_listing(t, tmp, model_dir):
    """A wrong --input-dataset: the message lists the datasets the file does hold (groups
    walked, name order), says when it holds none, and shortens a long list."""
    d = os.path.join(tmp, "case-listing")
    os.makedirs(d)
    with h5py.File(os.path.join(d, "in.h5"), "w") as f:
        f["ids"] = np.zeros((3, 4), np.int32)
        f.create_dataset("text", data=np.array(["a", "b", "c"], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.create_group("extra")["lengths"] = np.ones(3, np.int32)
        f.create_group("empty")
    with h5py.File(os.path.join(d, "none.h5"), "w") as f:
        f.create_group("g")
    with h5py.File(os.path.join(d, "many.h5"), "w") as f:
        for i in range(30):
            f[f"d{i:02d}"] = np.zeros(2, np.float32)
    cases = [("in.h5", "datasets: extra/lengths, ids, text;"),
             ("none.h5", "datasets: the file holds none;"),
             ("many.h5", "d00, d01, d02")]
    for name, listing in cases:
        out = os.path.join(tmp, "out-listing-" + name)
        args = e.job_args(model_dir, os.path.join(d, name), out, dataset="txt")
        expect_fail(t, f"--input-dataset txt absent from {name}: the datasets are listed", 1,
                    args, 3, [(name, "no dataset 'txt'", listing)], out)
    res = e.run(1, e.job_args(model_dir, os.path.join(d, "many.h5"),
                              os.path.join(tmp, "out-listing-many2"), dataset="txt"), timeout=120)
    t.check(e.stderr_names(res, "d23, ... 6 more;") and not e.stderr_names(res, "d24"),
            "a list of 30 datasets stops after 24 with the count of the others", res.describe())


if __name__ == "__main__":
    e.main("bad_inputs", body)
