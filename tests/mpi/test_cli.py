"""test_cli.py — the command line: help, version, job files, inspect, progress lines.

Checks:
  - `shardline --help` exits 0 and names the commands run and inspect; `shardline run --help`
    exits 0 and lists every option of the README's options table (read from README.md), with
    the same numeric ranges as the table's range column;
  - `shardline --version` exits 0 and prints the project version (from CMakeLists.txt);
  - no command, or an unknown one: exit status 2;
  - a job file (INI) whose keys are the long option names, at the top level and in a [run]
    section, runs the job (non-default --input-dataset and --unit-rows taken from the file:
    predictions match the float64 reference, part files follow the file's unit size); a flag
    on the command line overrides the file's key (--output, --unit-rows); a job file with a
    non-numeric value or an unknown key gives status 2 and names the key;
  - `shardline inspect MODEL_DIR` (a generated model and examples/mlp) prints the dims and the
    parameter count (computed from the safetensors with numpy); `inspect --tp 2` works;
  - `shardline inspect FILE.h5` prints dataset names and shapes;
  - a job with many units prints progress lines on stderr, and fewer (none) with --quiet.

Run: /usr/bin/python3 tests/mpi/test_cli.py  (env: see sl_e2e.py). Prints each check, then
"N passed, N failed".
"""
import json
import os
import re
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402


def readme_run_options_text():
    """README's `shardline run` options section (other commands have option tables too)."""
    with open(os.path.join(e.SOURCE_DIR, "README.md")) as f:
        text = f.read()
    start = text.index("### Options (`shardline run --help`)")
    end = text.find("\n#", start + 1)
    return text[start:end if end > 0 else len(text)]


def readme_options():
    return re.findall(r"^\|\s*`(--[a-z][a-z0-9-]*)", readme_run_options_text(), re.M)


def readme_ranges():
    """{option: (min, max)} from the README options table's range column, where both bounds are
    plain integers ("1 .. 1048576 (2^20)")."""
    rows = re.findall(r"^\|\s*`(--[a-z][a-z0-9-]*)[^`]*` \|[^|]*\| (\d+) \.\. (\d+)(?= \(| \|)",
                      readme_run_options_text(), re.M)
    return {o: (int(a), int(b)) for o, a, b in rows}


def numbers_in(text):
    """Integers in text, with thousands separators (1,234 1_234 1'234) also read as one."""
    plain = set(int(n) for n in re.findall(r"\d+", text))
    joined = re.sub(r"(?<=\d)[,_'](?=\d{3}(?!\d))", "", text)
    return plain | set(int(n) for n in re.findall(r"\d+", joined))


def n_params(st_path, with_standardisation):
    t = e.load_safetensors(st_path)
    return sum(v.size for k, v in t.items()
               if k.startswith("layers.") or (with_standardisation and k.startswith("input_")))


def check_inspect_model(t, path, label):
    res = e.run_direct(["inspect", path])
    if not t.check(res.rc == 0, f"inspect {label}: exit 0", res.describe()):
        return
    text = res.stdout + res.stderr
    with open(os.path.join(path, "config.json")) as f:
        dims = json.load(f)["dims"]
    nums = numbers_in(text)
    dims_line = any(all(str(d) in re.findall(r"\d+", line) for d in dims) for line in text.splitlines())
    t.check(dims_line or all(d in nums for d in dims), f"inspect {label}: prints the dims {dims}",
            text[-1500:])
    st = os.path.join(path, "model.safetensors")
    counts = {n_params(st, False), n_params(st, True)}
    t.check(bool(counts & nums), f"inspect {label}: prints the parameter count "
            f"{' or '.join(str(c) for c in sorted(counts))}", text[-1500:])


def body(t, tmp):
    # ---- help / version ----
    res = e.run_direct(["--help"])
    t.check(res.rc == 0, "shardline --help: exit 0", res.describe())
    text = res.stdout + res.stderr
    t.check(re.search(r"\brun\b", text) and re.search(r"\binspect\b", text),
            "shardline --help: names the commands run and inspect", text[-1500:])
    res = e.run_direct(["run", "--help"])
    t.check(res.rc == 0, "shardline run --help: exit 0", res.describe())
    text = res.stdout + res.stderr
    opts = readme_options()
    t.check(len(opts) >= 12, "README options table read", f"found {opts}")
    missing = [o for o in opts if not re.search(re.escape(o) + r"(?![a-z-])", text)]
    t.check(not missing, f"shardline run --help lists all {len(opts)} README options",
            f"missing {missing}\n{text[-2000:]}")
    # the bounds of the numeric options: README and --help agree
    ranges = readme_ranges()
    t.check(len(ranges) >= 10, "README options table: ranges read", f"found {ranges}")
    for o, (lo, hi) in ranges.items():
        line = next((ln for ln in text.splitlines() if re.match(r"\s*" + re.escape(o) + r"\b", ln)), "")
        t.check(f"[range: {lo}..{hi}]" in line, f"run --help: {o} range {lo}..{hi} as in README", line)
    res = e.run_direct(["--version"])
    ver = e.project_version()
    t.check(res.rc == 0 and ver is not None and ver in (res.stdout + res.stderr),
            f"shardline --version: exit 0, prints {ver}", res.describe())
    for label, args in (("no command", []), ("unknown command", ["frobnicate"])):
        res = e.run_direct(args)
        t.check(res.rc == 2, f"shardline {label}: exit status 2", res.describe())

    # ---- a job and its model ----
    data = os.path.join(tmp, "data")
    shards = e.make_inputs(data, [90, 60], 12, names=["p.h5", "q.h5"], dataset="pixels", seed=21)
    model = e.make_model(os.path.join(tmp, "model"), [12, 40, 24, 7], "tanh", "softmax", seed=22)
    x = np.concatenate([s[1] for s in sorted(shards)])
    ref = model.forward(x)
    glob = os.path.join(data, "*.h5")

    def parts_sizes(out):
        parts, _ = e.list_parts(out)
        return sorted((p.shard, p.first, p.end) for p in parts.values())

    def expect_units(unit):
        return sorted((n, a, min(a + unit, r)) for n, r in (("p.h5", 90), ("q.h5", 60))
                      for a in range(0, r, unit))

    # top-level keys
    out1 = os.path.join(tmp, "out-ini-top")
    ini1 = os.path.join(tmp, "top.ini")
    with open(ini1, "w") as f:
        f.write(f"# a job file\nmodel = {model.path}\ninput = {glob}\ninput-dataset = pixels\n"
                f"output = {out1}\nunit-rows = 40\nbatch-size = 16\n")
    res = e.run(2, [ini1])
    if t.check(res.rc == 0, "job file with top-level keys: exit 0", res.describe()):
        t.close(e.predictions(t, out1, "top-level job file"), ref, 1e-5,
                "job file with top-level keys: predictions match the reference")
        t.equal(parts_sizes(out1), expect_units(40), "job file with top-level keys: unit-rows 40 used")

    # [run] section, command line overrides --output and --unit-rows
    outA = os.path.join(tmp, "out-ini-file")
    outB = os.path.join(tmp, "out-ini-cli")
    ini2 = os.path.join(tmp, "section.ini")
    with open(ini2, "w") as f:
        f.write(f"[run]\nmodel = {model.path}\ninput = {glob}\ninput-dataset = pixels\n"
                f"output = {outA}\nunit-rows = 25\n")
    res = e.run(1, [ini2, "--output", outB, "--unit-rows", "50"])
    if t.check(res.rc == 0, "job file [run] section + flags: exit 0", res.describe()):
        t.check(os.path.exists(os.path.join(outB, "predictions.h5")) and not os.path.exists(outA),
                "--output on the command line overrides the job file",
                f"{outB} exists: {os.path.exists(outB)}, {outA} exists: {os.path.exists(outA)}")
        if os.path.exists(os.path.join(outB, "predictions.h5")):
            t.close(e.predictions(t, outB, "[run] job file"), ref, 1e-5,
                    "job file [run] section: predictions match the reference")
            t.equal(parts_sizes(outB), expect_units(50),
                    "--unit-rows on the command line overrides the job file")

    for label, line, key in (("non-numeric value", "batch-size = lots\n", "batch-size"),
                             ("unknown key", "frobnication = 3\n", "frobnication")):
        ini = os.path.join(tmp, f"bad-{key}.ini")
        out = os.path.join(tmp, f"out-bad-{key}")
        with open(ini, "w") as f:
            f.write(f"model = {model.path}\ninput = {glob}\ninput-dataset = pixels\n"
                    f"output = {out}\n{line}")
        res = e.run(1, [ini])
        t.check(res.rc == 2, f"job file with a {label}: exit status 2", res.describe())
        t.check(e.stderr_names(res, key), f"job file with a {label}: 'shardline: ' line names {key}",
                res.describe())
        t.check(not os.path.exists(os.path.join(out, "predictions.h5")),
                f"job file with a {label}: no predictions.h5")

    # ---- inspect ----
    check_inspect_model(t, model.path, "generated model")
    ex = os.path.join(e.SOURCE_DIR, "examples", "mlp")
    if t.check(os.path.isfile(os.path.join(ex, "config.json"))
               and os.path.isfile(os.path.join(ex, "model.safetensors")),
               "examples/mlp holds config.json and model.safetensors"):
        check_inspect_model(t, ex, "examples/mlp")
    res = e.run_direct(["inspect", "--tp", "2", model.path])
    t.check(res.rc == 0 and "40" in res.stdout + res.stderr, "inspect --tp 2: exit 0, prints the model",
            res.describe())
    h5 = os.path.join(tmp, "some.h5")
    with h5py.File(h5, "w") as f:
        f.create_dataset("alpha", data=np.zeros((7, 3), np.float32))
        f.create_dataset("grp/beta", data=np.zeros(11, np.int32))
    res = e.run_direct(["inspect", h5])
    text = res.stdout + res.stderr
    t.check(res.rc == 0, "inspect some.h5: exit 0", res.describe())
    t.check(re.search(r"alpha.*\b7\D{1,4}3\b", text) is not None,
            "inspect some.h5: prints alpha with shape 7 x 3", text[-1500:])
    t.check(re.search(r"beta.*\b11\b", text) is not None,
            "inspect some.h5: prints grp/beta with shape 11", text[-1500:])
    if os.path.exists(os.path.join(out1, "predictions.h5")):
        res = e.run_direct(["inspect", os.path.join(out1, "predictions.h5")])
        text = res.stdout + res.stderr
        t.check(res.rc == 0 and re.search(r"predictions.*\b150\D{1,4}7\b", text) is not None,
                "inspect predictions.h5: prints predictions [150, 7]", res.describe())

    # ---- progress lines ----
    pdata = os.path.join(tmp, "pdata")
    e.make_inputs(pdata, [1500, 1500], 12, seed=23)
    lines = {}
    for quiet in (False, True):
        out = os.path.join(tmp, f"out-progress-{quiet}")
        extra = ("--quiet",) if quiet else ()
        res = e.run(2, e.job_args(model.path, os.path.join(pdata, "*.h5"), out, unit_rows=100,
                                  batch=50, extra=extra))
        t.check(res.rc == 0, f"progress job{' --quiet' if quiet else ''}: exit 0", res.describe())
        lines[quiet] = [ln for ln in res.stderr.splitlines() if ln.strip()]
    t.check(len(lines[False]) >= 1, "a 30-unit job prints progress lines on stderr",
            "stderr was empty")
    t.check(len(lines[True]) < len(lines[False]), "--quiet prints fewer lines on stderr",
            f"quiet: {lines[True][:5]}; normal: {lines[False][:5]}")
    print("      note: progress output sample: " + " | ".join(lines[False][:4]))


if __name__ == "__main__":
    e.main("cli", body)
