"""sl_e2e.py — shared helpers for the end-to-end tests in tests/mpi/test_*.py.

Not a test itself. It provides:
  - make_model(): a random `mlp` model directory (config.json + model.safetensors written with
    examples/mlp/safetensors_io.py), weights stored as F32, F16 or BF16;
  - make_inputs() / write_shard(): HDF5 input shards of given sizes, dataset name and dtype;
  - reference(): a float64 numpy forward pass (input standardisation, relu, gelu with exact
    erf, silu, tanh, sigmoid, softmax) against which shardline's predictions are compared;
  - run(): `$MPIEXEC -np N $SHARDLINE run ...` with a timeout (the whole process tree is killed
    when it runs over), and read_output() for predictions.h5, report.json and manifest.json;
  - list_parts(): the part files under OUT/parts with their row ranges and mtimes;
  - Tally: prints every check, ends with the line "N passed, N failed" and exits non-zero on
    any failure (0 only when at least one check passed and none failed).

Environment (set by tests/CMakeLists.txt under ctest; defaults make the tests runnable by hand):
  SHARDLINE      the binary (default: $SL_SOURCE_DIR/build/shardline)
  SL_SOURCE_DIR  the source tree (default: two directories above this file)
  MPIEXEC        mpirun (default: mpirun on PATH)
  SL_DEVICE      when set (cpu|cuda|auto), every `run` gets `--device $SL_DEVICE`
  SL_MAX_TP      when set, configurations with a larger --tp are skipped (reported as skipped,
                 never as passed), e.g. SL_MAX_TP=1 on a machine with one GPU
  SL_KEEP_TMP    when set, the temporary directory is kept and its path printed

Run a test by hand: /usr/bin/python3 tests/mpi/test_tp_equivalence.py
"""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import h5py
import numpy as np

SOURCE_DIR = os.path.abspath(os.environ.get("SL_SOURCE_DIR")
                             or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "examples", "mlp"))
from safetensors_io import (bf16_bits_to_f32, f32_to_bf16_bits,  # noqa: E402
                            load_safetensors, save_safetensors)

SHARDLINE = os.path.abspath(os.environ.get("SHARDLINE")
                            or os.path.join(SOURCE_DIR, "build", "shardline"))
MPIEXEC = os.environ.get("MPIEXEC") or shutil.which("mpirun") or "mpirun"
DEVICE = os.environ.get("SL_DEVICE") or None
MAX_TP = int(os.environ["SL_MAX_TP"]) if os.environ.get("SL_MAX_TP") else None

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid")


# ---- tallying checks ---------------------------------------------------------------------------

class Tally:
    """Counts checks. Every check prints one line; finish() prints "N passed, N failed"."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print(f"ok    {what}", flush=True)
        else:
            self.failed += 1
            msg = f"FAIL  {what}"
            if detail:
                msg += "\n      " + str(detail).replace("\n", "\n      ")
            print(msg, flush=True)
        return bool(cond)

    def skip(self, what, why):
        self.skipped += 1
        print(f"skip  {what}: {why}", flush=True)

    def close(self, got, ref, tol, what):
        """got ~ ref: max |got - ref| / max |ref| <= tol (shapes equal, no NaN where ref has none)."""
        got = np.asarray(got)
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            return self.check(False, what, f"shape {got.shape} != expected {ref.shape}")
        err = rel_err(got, ref)
        return self.check(err <= tol, what, f"relative error {err:.3g} > {tol:g}")

    def equal(self, got, expected, what):
        return self.check(got == expected, what, f"got {got!r}, expected {expected!r}")

    def finish(self):
        if self.skipped:
            print(f"({self.skipped} checks skipped, not counted as passed)")
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(0 if self.passed > 0 and self.failed == 0 else 1)


def main(name, body):
    """Runs body(tally, tmpdir) and exits with the tally's verdict; an exception is a failure."""
    t = Tally(name)
    tmp = tempfile.mkdtemp(prefix=f"sl-{name}-")
    keep = bool(os.environ.get("SL_KEEP_TMP"))
    t0 = time.time()
    try:
        if not (os.path.isfile(SHARDLINE) and os.access(SHARDLINE, os.X_OK)):
            t.check(False, "shardline binary exists", f"{SHARDLINE} is missing or not executable")
        else:
            os.chdir(tmp)
            body(t, tmp)
    except Exception:  # a crash of the test is a failure, never a silent pass
        t.check(False, "test body ran to the end", traceback.format_exc())
    finally:
        os.chdir("/")
        print(f"[{name}: {time.time() - t0:.1f} s, tmp {tmp}{' kept' if keep else ''}]")
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    t.finish()


def rel_err(got, ref):
    """max |got - ref| / max |ref|; inf when NaN/Inf appear where ref is finite."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return math.inf
    if got.size == 0:
        return 0.0
    if not np.all(np.isfinite(got)):
        return math.inf
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    return float(np.max(np.abs(got - ref))) / scale


# ---- models ------------------------------------------------------------------------------------

class Model:
    """A model directory plus the parameters it holds.

    exact: float64 copies of the values as stored in the file (after F16/BF16 rounding);
    orig:  float64 copies of the float32 values before rounding (== exact for F32)."""

    def __init__(self, path, dims, activation, final, dtype, exact, orig):
        self.path = path
        self.dims = list(dims)
        self.activation = activation
        self.final = final
        self.dtype = dtype
        self.exact = exact
        self.orig = orig

    @property
    def n_params(self):
        return sum(int(np.asarray(v).size) for k, v in self.exact.items() if k.startswith("layers."))

    def forward(self, x, which="exact"):
        return reference(self.exact if which == "exact" else self.orig, self.dims,
                         self.activation, self.final, x)


def _store(arr32, dtype):
    """float32 array -> (array or bits to save, float64 of the stored value)."""
    if dtype == "F32":
        return arr32, arr32.astype(np.float64)
    if dtype == "F16":
        h = arr32.astype(np.float16)
        return h, h.astype(np.float64)
    if dtype == "BF16":
        return arr32, bf16_bits_to_f32(f32_to_bf16_bits(arr32)).astype(np.float64)
    raise ValueError(dtype)


def make_model(path, dims, activation="relu", final=None, dtype="F32", seed=0,
               standardise=False, config_overrides=None):
    """Writes a random mlp model into directory `path` and returns a Model."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    gain = {"relu": 1.6, "gelu": 1.6, "silu": 1.8, "tanh": 1.2, "sigmoid": 2.5}.get(activation, 1.0)
    tensors, exact, orig, bf16 = {}, {}, {}, []

    def put(name, a32):
        a32 = np.ascontiguousarray(a32, dtype=np.float32)
        stored, val = _store(a32, dtype)
        tensors[name] = stored
        exact[name] = val
        orig[name] = a32.astype(np.float64)
        if dtype == "BF16":
            bf16.append(name)

    if standardise:
        put("input_mean", rng.uniform(-2.0, 2.0, dims[0]))
        put("input_std", rng.uniform(0.5, 2.0, dims[0]))
    for i in range(len(dims) - 1):
        a = gain * math.sqrt(3.0 / dims[i])
        put(f"layers.{i}.weight", rng.uniform(-a, a, (dims[i + 1], dims[i])))
        put(f"layers.{i}.bias", rng.uniform(-0.2, 0.2, dims[i + 1]))
    save_safetensors(os.path.join(path, "model.safetensors"), tensors, bf16=tuple(bf16),
                     metadata={"format": "pt"})
    config = {"model_type": "mlp", "dims": list(dims), "activation": activation,
              "final_activation": final}
    if config_overrides:
        config.update(config_overrides)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return Model(path, dims, activation, final, dtype, exact, orig)


# ---- float64 reference -------------------------------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)


def activate(name, h):
    if name is None or name == "none":
        return h
    if name == "relu":
        return np.maximum(h, 0.0)
    if name == "gelu":  # exact: 0.5 x (1 + erf(x / sqrt 2))
        return 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float64))
    if name == "silu":
        return h / (1.0 + np.exp(-h))
    if name == "tanh":
        return np.tanh(h)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-h))
    if name == "softmax":
        e = np.exp(h - np.max(h, axis=1, keepdims=True))
        return e / np.sum(e, axis=1, keepdims=True)
    raise ValueError(f"unknown activation {name}")


def reference(params, dims, activation, final, x):
    """float64 forward pass: x [rows, d0] -> [rows, dn]."""
    h = np.asarray(x, dtype=np.float64).reshape(-1, dims[0])
    if "input_mean" in params:
        h = (h - params["input_mean"]) / params["input_std"]
    n = len(dims) - 1
    for i in range(n):
        h = h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        h = activate(activation if i < n - 1 else final, h)
    return h


# ---- inputs ------------------------------------------------------------------------------------

def random_rows(rng, rows, d, dtype=np.float32):
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        lo = 0 if dt.kind == "u" else -3
        return rng.integers(lo, 4, size=(rows, d)).astype(dt)
    return rng.standard_normal((rows, d)).astype(dt)


def write_shard(path, data, dataset="features"):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=data)


def as_f32(data):
    """The float64 value of what shardline sees after its float32 conversion."""
    return np.asarray(data).astype(np.float32).astype(np.float64)


def make_inputs(dirpath, sizes, d, names=None, dataset="features", dtype=np.float32, seed=1):
    """Writes one shard per size; returns [(path, float64 rows as shardline sees them)], in the
    order given (callers sort by path for the expected job order)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, rows in enumerate(sizes):
        name = names[i] if names else f"shard-{i:03d}.h5"
        path = os.path.join(dirpath, name)
        data = random_rows(rng, rows, d, dtype[i] if isinstance(dtype, (list, tuple)) else dtype)
        write_shard(path, data, dataset)
        out.append((path, as_f32(data)))
    return out


# ---- running shardline -------------------------------------------------------------------------

def base_env(extra=None):
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    if extra:
        env.update(extra)
    return env


class Result:
    def __init__(self, cmd, rc, stdout, stderr, seconds, timed_out=False):
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.timed_out = timed_out

    def describe(self, tail=2500):
        err = self.stderr if len(self.stderr) <= tail else "..." + self.stderr[-tail:]
        out = self.stdout if len(self.stdout) <= 800 else "..." + self.stdout[-800:]
        return (f"command: {cmdline(self.cmd)}\nstatus: {self.rc}"
                f"{' (timed out)' if self.timed_out else ''}\nstderr: {err.strip()}"
                + (f"\nstdout: {out.strip()}" if out.strip() else ""))


def cmdline(cmd):
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\\''") + "'"
                    for a in cmd)


def job_args(model, inputs, output, dataset=None, tp=None, unit_rows=None, batch=None, extra=()):
    """The arguments after `run` for a typical job. inputs: a glob string or a list of them."""
    a = ["--model", model]
    for g in ([inputs] if isinstance(inputs, str) else inputs):
        a += ["--input", g]
    a += ["--output", output]
    if dataset is not None:
        a += ["--input-dataset", dataset]
    if tp is not None:
        a += ["--tp", str(tp)]
    if unit_rows is not None:
        a += ["--unit-rows", str(unit_rows)]
    if batch is not None:
        a += ["--batch-size", str(batch)]
    return a + list(extra)


def mpi_cmd(nranks, args, subcommand="run"):
    args = list(args)
    if DEVICE and subcommand == "run" and "--device" not in args:
        args += ["--device", DEVICE]
    return [MPIEXEC, "-np", str(nranks), SHARDLINE] + ([subcommand] if subcommand else []) + args


def run(nranks, args, timeout=300, env=None, subcommand="run", cwd=None):
    """`$MPIEXEC -np nranks $SHARDLINE run args...`; returns a Result (rc None on timeout)."""
    return run_cmd(mpi_cmd(nranks, args, subcommand), timeout=timeout, env=env, cwd=cwd)


def run_direct(args, timeout=120, env=None, cwd=None):
    """$SHARDLINE args... without mpirun (help, version, inspect)."""
    return run_cmd([SHARDLINE] + list(args), timeout=timeout, env=env, cwd=cwd)


def run_cmd(cmd, timeout=300, env=None, cwd=None):
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         errors="replace", env=base_env(env), cwd=cwd, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return Result(cmd, p.returncode, out, err, time.time() - t0)
    except subprocess.TimeoutExpired:
        kill_tree(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return Result(cmd, None, out, err, time.time() - t0, timed_out=True)


def start(nranks, args, env=None, cwd=None, subcommand="run"):
    """Starts a job in its own session and returns the Popen; its stdout and stderr go to
    unnamed temporary files (a pipe nobody reads could fill and stall the job): call
    finish(p, timeout) to wait and get (status, stdout, stderr)."""
    cmd = mpi_cmd(nranks, args, subcommand)
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=base_env(env), cwd=cwd,
                         start_new_session=True)
    p.sl_files = (out, err)
    return p


def finish(p, timeout=None):
    """Waits for a job from start() (subprocess.TimeoutExpired on timeout); returns
    (status, stdout, stderr)."""
    rc = p.wait(timeout=timeout)
    texts = []
    for f in p.sl_files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return rc, texts[0], texts[1]


def _proc_table():
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        # comm may contain spaces/parentheses: split after the last ')'
        rest = s[s.rindex(")") + 2:].split()
        comm = s[s.index("(") + 1:s.rindex(")")]
        table[int(d)] = (int(rest[1]), comm, rest[0])  # ppid, comm, state
    return table


def descendants(pid):
    """All live descendants of pid (children first found, recursively)."""
    table = _proc_table()
    kids = {}
    for p, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if table[c][2] != "Z":
                out.append(c)
            todo.append(c)
    return out


def rank_pids(mpirun_pid):
    """The shardline processes started by mpirun."""
    table = _proc_table()
    name = os.path.basename(SHARDLINE)[:15]
    return [p for p in descendants(mpirun_pid) if p in table and table[p][1] == name]


def kill_tree(pid, sig):
    """Sends sig to pid's process group, to pid and to every descendant (Open MPI puts each
    rank in its own process group, so killing mpirun's group alone leaves the ranks running)."""
    procs = descendants(pid)
    for p in [pid] + procs:
        for fn in (lambda q: os.killpg(os.getpgid(q), sig), lambda q: os.kill(q, sig)):
            try:
                fn(p)
            except (ProcessLookupError, PermissionError, OSError):
                pass
    return procs


def wait_gone(pids, timeout=30):
    """Waits until none of pids is alive (zombies count as gone)."""
    end = time.time() + timeout
    while time.time() < end:
        table = _proc_table()
        if not any(p in table and table[p][2] != "Z" for p in pids):
            return True
        time.sleep(0.05)
    return False


def project_version():
    """The VERSION in the top-level CMakeLists.txt project() call."""
    try:
        with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
            m = re.search(r"project\(\s*\w+\s+VERSION\s+([0-9][0-9.]*)", f.read())
        return m.group(1) if m else None
    except OSError:
        return None


# ---- reading the output ------------------------------------------------------------------------

def _s(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace").rstrip("\0")
    if isinstance(v, np.ndarray):
        return _s(v.tobytes())
    return str(v)


def read_table(ds):
    """A compound dataset as a list of dicts with str/int/float values."""
    data = ds[()]
    if isinstance(data, h5py.Empty) or ds.shape is None:
        return []
    data = np.atleast_1d(data)
    rows = []
    for r in data:
        row = {}
        for name in data.dtype.names:
            v = r[name]
            if isinstance(v, (bytes, str, np.bytes_, np.str_)) or data.dtype[name].kind in "SUO":
                row[name] = _s(v)
            elif data.dtype[name].kind in "iu":
                row[name] = int(v)
            else:
                row[name] = float(v)
        rows.append(row)
    return rows


class Output:
    """predictions.h5 (+ report.json and manifest.json) of one output directory."""

    def __init__(self, out):
        self.out = out
        path = os.path.join(out, "predictions.h5")
        with h5py.File(path, "r") as f:
            self.keys = sorted(f.keys())
            ds = f["predictions"]
            self.is_virtual = bool(getattr(ds, "is_virtual", False))
            self.predictions = ds[()]
            self.shards = read_table(f["shards"]) if "shards" in f else None
            self.errors = read_table(f["errors"]) if "errors" in f else None
        self.report = load_json(os.path.join(out, "report.json"))
        self.manifest = load_json(os.path.join(out, "manifest.json"))


GGUF_PIN = "gguf==0.19.0"


def gguf_module(t, what):
    """gguf-py from PyPI, installed once under the build directory (pylib/); None, with `what`
    reported skipped, when it cannot be."""
    target = os.path.join(os.path.dirname(SHARDLINE), "pylib", GGUF_PIN.replace("==", "-"))
    if not os.path.isdir(os.path.join(target, "gguf")):
        tmp = target + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        base = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                "--no-deps", "--target", tmp, GGUF_PIN]
        ok = False
        for extra in ([], ["--break-system-packages"]):
            p = subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
            if p.returncode == 0:
                ok = True
                break
        if not ok:
            t.skip(what, f"could not install {GGUF_PIN} from PyPI with pip: "
                   f"{p.stderr.strip()[-300:]}")
            return None
        os.rename(tmp, target)
    if target not in sys.path:
        sys.path.insert(0, target)
    try:
        import gguf
    except ImportError as x:  # gguf needs numpy and yaml (python3-yaml)
        t.skip(what, f"gguf-py does not import: {x}")
        return None
    return gguf


def gguf_rewrite(gguf, src, dst, field=None, tensor=None):
    """A copy of the GGUF file src at dst, written by gguf-py: every metadata field, its value
    passed through field(name, value) when given, and every tensor, through tensor(t) when given
    (t: a gguf-py ReaderTensor; returns (raw data, type), or None to leave the tensor out)."""
    r = gguf.GGUFReader(src, "r")
    w = gguf.GGUFWriter(dst, r.get_field(gguf.Keys.General.ARCHITECTURE).contents())
    for f in r.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        vt, val = f.types[0], f.contents()
        w.add_key_value(f.name, field(f.name, val) if field else val, vt,
                        sub_type=f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None)
    data = []
    for ten in r.tensors:
        got = tensor(ten) if tensor else (ten.data, ten.tensor_type)
        if got is None:
            continue
        d, qt = got
        w.add_tensor_info(ten.name, d.shape, d.dtype, d.nbytes, qt)
        data.append(d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for d in data:
        w.write_tensor_data(d)
    w.close()


def installed(name):
    """The path recorded by scripts/install-models.sh in $SL_MODELS_DIR/<name>.path (minilm,
    smollm2), or None when that model is not installed."""
    base = os.environ.get("SL_MODELS_DIR", os.path.join(SOURCE_DIR, "build", "models"))
    p = os.path.join(base, f"{name}.path")
    if os.path.isfile(p):
        with open(p) as f:
            return f.read().strip()
    return None


def write_text(path, texts, dataset="text"):
    """An HDF5 input file holding `texts` as variable-length UTF-8 strings (parent folders made)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=np.array(texts, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))


def rewrite_calibration(src, dst, drop=None, zero=False, fingerprint=None):
    """A copy of a `shardline calibrate` file (safetensors) without tensor `drop`, with every
    range 0 (`zero` True) or those of one tensor (`zero` its name), or with another model
    fingerprint in its metadata."""
    import struct
    with open(src, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    data = bytes(len(b) - 8 - n) if zero is True else b[8 + n:]
    if isinstance(zero, str):
        lo, hi = h[zero]["data_offsets"]
        data = data[:lo] + bytes(hi - lo) + data[hi:]
    if fingerprint:
        h["__metadata__"]["model_fingerprint"] = fingerprint
    if drop:
        del h[drop]
    js = json.dumps(h).encode()
    js += b" " * (-len(js) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js + data)


def tiny_llama_goldens(name, h5_out):
    """The golden rows of the tiny LLaMA-family checkpoint tests/reference/tiny_llama/<name>
    (tests/reference/goldens/tiny_llama_goldens.h5, from transformers): writes their token ids
    to `h5_out` (datasets input_ids, lengths) and returns transformers' sum of log-probabilities
    of each row's tokens after the first."""
    with h5py.File(os.path.join(SOURCE_DIR, "tests", "reference", "goldens",
                                "tiny_llama_goldens.h5"), "r") as tg:
        ids = tg[f"{name}/input_ids"][()]
        lens = tg[f"{name}/lengths"][()]
        lgts = tg[f"{name}/logits"][()].astype(np.float64)
    want = []
    for i in range(len(lens)):
        lg = lgts[i, : lens[i] - 1]
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        want.append(float(np.sum(lg[np.arange(lens[i] - 1), ids[i, 1: lens[i]]] - lse)))
    with h5py.File(h5_out, "w") as f:
        f["input_ids"] = ids.astype(np.int32)
        f["lengths"] = lens.astype(np.int32)
    return np.array(want)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def report_layers(out):
    """The weight layers report.json of job directory `out` lists (name, dtype, activations
    ...), [] when it has none or cannot be read."""
    return (load_json(os.path.join(out, "report.json")) or {}).get("weights", {}).get("layers", [])


def read_output(out):
    return Output(out)


def read_datasets(out):
    """Every dataset of OUT/predictions.h5 except the /shards and /errors tables, as numpy arrays
    (the values a resumed or faulted job must reproduce bit for bit)."""
    res = {}
    with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
        for k in f:
            if k not in ("shards", "errors"):
                res[k] = f[k][()]
    return res


def bitwise_diff(a, b):
    """None when the read_datasets() results a and b hold the same datasets with the same bits
    (floats compared as bytes, so NaN fill values count as equal), else what differs first."""
    if sorted(a) != sorted(b):
        return f"datasets {sorted(a)} vs {sorted(b)}"
    for k in a:
        x, y = a[k], b[k]
        if x.shape != y.shape:
            return f"{k}: shape {x.shape} vs {y.shape}"
        if x.dtype.kind == "f":
            if not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
                return f"{k}: values differ (max |diff| {np.nanmax(np.abs(x - y))})"
        elif not np.array_equal(x, y):
            return f"{k}: values differ"
    return None


def predictions(t, out, label):
    """OUT/predictions.h5:/predictions, or None after a failed check when it cannot be read."""
    try:
        return Output(out).predictions
    except Exception as ex:  # noqa: BLE001
        t.check(False, f"{label}: predictions.h5 readable", repr(ex))
        return None


PART_RE = re.compile(r"^rows-(\d+)-(\d+)\.h5$")


class Part:
    def __init__(self, path, shard_dir, first, end):
        st = os.stat(path)
        self.path = path
        self.shard_dir = shard_dir
        self.shard = shard_dir.rsplit(".", 1)[0]  # <shard basename>.<hash>
        self.first = first
        self.end = end
        self.mtime_ns = st.st_mtime_ns
        self.ino = st.st_ino


def list_parts(out):
    """(parts, others): parts maps relative path -> Part for every OUT/parts/*/rows-A-B.h5;
    others lists every other file under OUT/parts (temporary files, ...)."""
    parts, others = {}, []
    root = os.path.join(out, "parts")
    if not os.path.isdir(root):
        return parts, others
    for dirpath, _, files in os.walk(root):
        for fn in files:
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, root)
            m = PART_RE.match(fn)
            sub = os.path.relpath(dirpath, root)
            if m and os.sep not in sub and sub != ".":
                parts[rel] = Part(full, sub, int(m.group(1)), int(m.group(2)))
            else:
                others.append(rel)
    return parts, others


def read_part(path):
    with h5py.File(path, "r") as f:
        return f["predictions"][()], {k: f.attrs[k] for k in f.attrs}


def check_parts_cover(t, out, shards, dn, what):
    """Every shard (path, rows) is covered exactly once by complete part files, each readable
    with a `predictions` [end - first, dn] float32 dataset."""
    parts, _ = list_parts(out)
    by_shard = {}
    for p in parts.values():
        by_shard.setdefault(p.shard, []).append(p)
    ok, problems = True, []
    for path, rows in shards:
        base = os.path.basename(path)
        ps = sorted(by_shard.get(base, []), key=lambda p: p.first)
        covered = 0
        for p in ps:
            if p.first != covered:
                problems.append(f"{base}: part {p.first}-{p.end} does not start at {covered}")
                ok = False
            covered = max(covered, p.end)
            try:
                pred, _ = read_part(p.path)
                if pred.shape != (p.end - p.first, dn) or pred.dtype != np.float32:
                    problems.append(f"{p.path}: predictions {pred.shape} {pred.dtype}")
                    ok = False
            except Exception as e:  # noqa: BLE001
                problems.append(f"{p.path}: unreadable: {e}")
                ok = False
        if covered != rows:
            problems.append(f"{base}: parts cover {covered} of {rows} rows")
            ok = False
    return t.check(ok, what, "; ".join(problems[:8]))


def stderr_names(res, *names):
    """True when some stderr line starts with 'shardline: ' and contains every name (a str is
    matched as a substring, a compiled pattern with search())."""
    def has(line, n):
        return n.search(line) is not None if isinstance(n, re.Pattern) else n in line
    for line in res.stderr.splitlines():
        if line.startswith("shardline: ") and all(has(line, n) for n in names):
            return True
    return False


def crashed(res):
    """A signal exit, a timeout or a crash message."""
    if res.rc is None or res.rc < 0 or res.rc >= 128:
        return True
    return bool(re.search(r"Segmentation fault|core dumped|signal \d+ \(|Aborted|"
                          r"AddressSanitizer|double free|stack smashing", res.stderr))
