"""test_convert.py — data in and out of shardline: `shardline convert` (JSONL, CSV, TSV, plain
text into HDF5 shards), `shardline run`, `shardline export` (predictions as JSONL or CSV), and
`run --log-format json`, end to end with the real binary under mpirun:

  - round trips: texts from the all-MiniLM-L6-v2 goldens (UTF-8, commas, quotes, tabs, CR/LF
    and newlines inside fields) written as JSONL (with ids and an empty text that fails its
    row), CSV and TSV (Python's csv module quoting) and plain text -> convert (several shards)
    -> the shards hold exactly the input strings, in order -> embed on 2 ranks -> export ->
    the exported embeddings equal predictions.h5 read by h5py and match transformers' goldens;
    ids and row order kept; the failed row carries its reason;
  - features: CSV columns (a range f0..f7) and JSONL arrays -> an mlp on 2 ranks -> export ->
    equal to predictions.h5 and to a float64 numpy forward pass;
  - malformed input: invalid JSON, a missing field, a wrong column count, a non-numeric feature,
    invalid UTF-8, an unclosed quote: exit 3 with FILE:LINE and the reason, no shard left
    behind; --on-bad-line skip skips and counts them; Parquet and usage errors;
  - --log-format json: every stderr line is a JSON object (start, progress, unit_committed,
    row_error, done with stage times and the exit status);
  - bounded memory: a large JSONL (SL_CONVERT_TEST_MB megabytes, default 300, written streaming
    into the temporary directory) is converted with a peak RSS within CONVERT_RSS_BOUND_MB of
    the binary's start-up RSS (`shardline --version`, measured the same way).

Run: ctest -R test_convert (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import csv
import glob
import json
import os
import random
import resource
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = os.environ.get("SL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GOLD = os.path.join(SRC, "tests", "reference", "goldens", "minilm_goldens.h5")
CLS_GOLD = os.path.join(SRC, "tests", "reference", "goldens", "tiny_cls_goldens.h5")
CLS_MODEL = os.path.join(SRC, "tests", "reference", "tiny_bert_cls")
LLAMA_GOLD = os.path.join(SRC, "tests", "reference", "goldens", "smollm2_goldens.h5")
# Goldens rows used: plain sentences, UTF-8 (accents, currency signs, CJK), commas, quotes,
# tabs, newlines, CR/LF and bare CR inside the text.
IDX = list(range(12)) + [49, 52, 78, 90, 96, 102, 103, 104, 105, 106, 120, 125, 161, 198, 214,
                         215, 216, 217, 219, 244, 303]
LARGE_MB = float(os.environ.get("SL_CONVERT_TEST_MB", "300"))
CONVERT_RSS_BOUND_MB = 96


def model_dir(name="minilm"):
    base = os.environ.get("SL_MODELS_DIR", os.path.join(SRC, "build", "models"))
    path_file = os.path.join(base, f"{name}.path")
    if os.path.isfile(path_file):
        with open(path_file) as f:
            return f.read().strip()
    return None


def convert(args, timeout=300):
    return e.run_direct(["convert"] + list(args), timeout=timeout)


def export(args, timeout=300):
    return e.run_direct(["export"] + list(args), timeout=timeout)


def shard_strings(d, name):
    """Every string of dataset `name` over d/shard-*.h5, in glob order."""
    out = []
    for p in sorted(glob.glob(os.path.join(d, "shard-*.h5"))):
        with h5py.File(p, "r") as f:
            out += [s.decode("utf-8") if isinstance(s, bytes) else s for s in f[name][()]]
    return out


def cosine_rows(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def check_gold(t, got, ref, what):
    cos = cosine_rows(got, ref)
    err = np.abs(np.asarray(got, np.float64) - ref).max()
    t.check(cos.min() >= 0.99999 and err <= 1e-4, what,
            f"min cosine {cos.min():.7f}, max abs error {err:.2e}")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def as_array(values):
    """Exported numbers (None for non-finite) as float32."""
    return np.array([[np.nan if v is None else v for v in row] for row in values], np.float32)


def predictions(out, name):
    with h5py.File(os.path.join(out, "predictions.h5"), "r") as f:
        return f[name][()], f["errors"][()]


def same_f32(a, b):
    """Equal float32 arrays, NaN where the other is NaN."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


# ---- round trips through MiniLM --------------------------------------------------------------

def text_round_trips(t, mdir, texts, ref):
    n = len(texts)
    # JSONL: ids (strings and numbers), an empty text at row 5 (a row error when embedding)
    rows = []
    for i, s in enumerate(texts):
        rows.append({"id": f"doc-{i}" if i % 3 else i, "text": s, "other": [i, None]})
    rows.insert(5, {"id": "empty", "text": ""})
    with open("in.jsonl", "w", encoding="utf-8") as f:
        for k, r in enumerate(rows):
            f.write(json.dumps(r, ensure_ascii=(k % 2 == 0)) + "\n")
            if k == 3:
                f.write("   \n")  # a blank line between records is no record
    ids = [str(r["id"]) for r in rows]
    jtexts = [r["text"] for r in rows]
    r = convert(["in.jsonl", "--to", "sh-jsonl", "--id-field", "id", "--rows-per-shard", "7"])
    if not t.check(r.rc == 0, "convert JSONL: status 0", r.describe()):
        return
    t.equal(len(glob.glob("sh-jsonl/shard-*.h5")), (n + 1 + 6) // 7, "convert JSONL: one shard per 7 rows")
    t.check(shard_strings("sh-jsonl", "text") == jtexts, "JSONL shards hold the texts exactly, in order")
    t.check(shard_strings("sh-jsonl", "ids") == ids, "JSONL shards hold the ids (numbers as decimal text)")

    env = {"SL_PROGRESS_SECONDS": "0"}
    # mpirun --quiet: Open MPI's own notice about a non-zero exit status is not shardline's
    cmd = e.mpi_cmd(2, e.job_args(mdir, "sh-jsonl/shard-*.h5", "out-jsonl", unit_rows=8,
                                  extra=["--task", "embed", "--log-format", "json"]))
    if os.path.basename(cmd[0]) in ("mpirun", "mpiexec", "orterun"):
        cmd.insert(1, "--quiet")
    r = e.run_cmd(cmd, timeout=600, env=env)
    t.check(r.rc == 4, "embed JSONL on 2 ranks: status 4 (the empty row failed)", r.describe())
    check_json_log(t, r, n + 1)
    r = export(["out-jsonl", "--to", "out-jsonl.jsonl"])
    if not t.check(r.rc == 0, "export JSONL: status 0", r.describe()):
        return
    recs = read_jsonl("out-jsonl.jsonl")
    emb, errs = predictions("out-jsonl", "embeddings")
    t.check([x["row"] for x in recs] == list(range(n + 1)), "export: one record per row, in input order")
    t.check([x["id"] for x in recs] == ids, "export: ids joined from the input shards")
    t.check(list(recs[0].keys()) == ["row", "id", "embeddings", "error"], "export: default fields",
            list(recs[0].keys()))
    got = as_array([x["embeddings"] for x in recs])
    t.check(same_f32(got, emb), "exported embeddings equal predictions.h5 (float32, all digits)")
    keep = [i for i in range(n + 1) if i != 5]
    check_gold(t, got[keep], ref, "exported embeddings match transformers' goldens")
    t.check(recs[5]["error"] and all(recs[i]["error"] is None for i in keep)
            and all(v is None for v in recs[5]["embeddings"]),
            "export: the failed row has its reason and null embeddings; the others error null",
            recs[5])
    t.check(len(errs) == 1 and int(errs[0]["row"]) == 5 and e._s(errs[0]["reason"]) == recs[5]["error"],
            "export: the error is /errors' reason", repr(errs))

    # CSV: Python's csv quoting (commas, quotes, CR/LF and newlines inside quoted fields)
    with open("in.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "note", "body"])
        for i, s in enumerate(texts):
            w.writerow([f"k{i}", f"note, {i} \"x\"", s])
    r = convert(["in.csv", "--to", "sh-csv", "--text-field", "body", "--id-field", "key",
                 "--rows-per-shard", "10"])
    if t.check(r.rc == 0, "convert CSV: status 0", r.describe()):
        t.check(shard_strings("sh-csv", "text") == texts, "CSV shards hold the quoted texts exactly")
        t.check(shard_strings("sh-csv", "ids") == [f"k{i}" for i in range(n)], "CSV shards hold the ids")
        embed_export_check(t, mdir, "sh-csv", "out-csv", "csv", texts, ref,
                           [f"k{i}" for i in range(n)])

    # TSV: Python's excel-tab dialect (fields with tabs or newlines quoted)
    with open("in.tsv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, dialect="excel-tab")
        w.writerow(["text", "n"])
        for i, s in enumerate(texts):
            w.writerow([s, i])
    r = convert(["in.tsv", "--to", "sh-tsv"])
    if t.check(r.rc == 0, "convert TSV: status 0", r.describe()):
        t.check(shard_strings("sh-tsv", "text") == texts, "TSV shards hold the texts exactly")
        embed_export_check(t, mdir, "sh-tsv", "out-tsv", "jsonl", texts, ref, None)

    # plain text: one row a line (the texts without line breaks)
    one = [i for i, s in enumerate(texts) if "\n" not in s and "\r" not in s]
    with open("in.txt", "w", encoding="utf-8") as f:
        f.write("".join(texts[i] + "\n" for i in one))
    r = convert(["in.txt", "--to", "sh-txt", "--rows-per-shard", "4"])
    if t.check(r.rc == 0, "convert text: status 0", r.describe()):
        t.check(shard_strings("sh-txt", "text") == [texts[i] for i in one],
                "text shards hold the lines exactly (UTF-8)")
        embed_export_check(t, mdir, "sh-txt", "out-txt", "jsonl", [texts[i] for i in one], ref[one], None)


def embed_export_check(t, mdir, shards, out, fmt, texts, ref, ids):
    n = len(texts)
    r = e.run(2, e.job_args(mdir, f"{shards}/shard-*.h5", out, unit_rows=8, extra=["--task", "embed"]),
              timeout=600)
    if not t.check(r.rc == 0, f"embed {shards} on 2 ranks: status 0", r.describe()):
        return
    emb, _ = predictions(out, "embeddings")
    r = export([out, "--to", f"{out}.{fmt}"])
    if not t.check(r.rc == 0, f"export {out} as {fmt}: status 0", r.describe()):
        return
    if fmt == "csv":
        with open(f"{out}.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        head = rows[0]
        t.check(head[:2] == ["row", "id"] and head[2] == "embeddings_0" and head[-1] == "error"
                and len(head) == 2 + 384 + 1, "export CSV: header row, id, embeddings_0..383, error",
                head[:4])
        body = rows[1:]
        t.check([x[1] for x in body] == ids, "export CSV: ids in input order")
        got = np.array([[float(v) for v in x[2:-1]] for x in body], np.float32)
        t.check(all(x[-1] == "" for x in body), "export CSV: no row error")
    else:
        recs = read_jsonl(f"{out}.jsonl")
        sources = sorted(glob.glob(f"{shards}/shard-*.h5"))
        t.check([os.path.basename(x["source"]) for x in recs][:1] == [os.path.basename(sources[0])]
                and [x["row"] for x in recs] == list(range(n)),
                "export without ids: row, source and source_row", recs[0] if recs else None)
        got = as_array([x["embeddings"] for x in recs])
    t.check(same_f32(got, emb), f"{out}: exported embeddings equal predictions.h5")
    check_gold(t, got, ref, f"{out}: exported embeddings match transformers' goldens")


def check_json_log(t, r, rows):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    events, bad = [], []
    for ln in lines:
        try:
            events.append(json.loads(ln))
        except ValueError:
            bad.append(ln)
    t.check(lines and not bad and all(isinstance(x, dict) and "event" in x for x in events),
            "--log-format json: every stderr line is a JSON object with an event", "\n".join(bad[:5]))
    kinds = [x.get("event") for x in events]
    for k in ("start", "progress", "unit_committed", "row_error", "done"):
        t.check(k in kinds, f"--log-format json: a '{k}' event", kinds)
    units = (rows + 7) // 8 + 0
    committed = [x for x in events if x.get("event") == "unit_committed"]
    t.check(sum(x.get("rows", 0) for x in committed) == rows and len(committed) >= units - 1,
            "--log-format json: unit_committed events cover every row", committed[:2])
    errs = [x for x in events if x.get("event") == "row_error"]
    t.check(len(errs) == 1 and errs[0].get("row") == 5 and errs[0].get("reason"),
            "--log-format json: the failed row (global row 5) with its reason", errs)
    done = [x for x in events if x.get("event") == "done"]
    t.check(len(done) == 1 and done[0].get("exit_status") == 4 and done[0].get("failed_rows") == 1
            and "compute_seconds" in done[0] and "read_seconds" in done[0] and "load_seconds" in done[0],
            "--log-format json: the done event has the outcome and stage times", done)


# ---- features through an mlp ----------------------------------------------------------------------

def features_round_trip(t):
    dims = [8, 16, 3]
    model = e.make_model("mlp", dims, activation="gelu", seed=3)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 8)).astype(np.float32)
    with open("feat.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "comment"] + [f"f{j}" for j in range(8)] + ["tail"])
        for i, row in enumerate(x):
            w.writerow([f"row{i}", "a, \"b\""] + [repr(float(v)) for v in row] + ["z"])
    with open("feat.jsonl", "w") as f:
        for i, row in enumerate(x):
            f.write(json.dumps({"id": i, "a": float(row[0]), "rest": [float(v) for v in row[1:]]}) + "\n")
    ref = e.reference(model.exact, dims, "gelu", None, x.astype(np.float64))
    for src, args, fmt in [("feat.csv", ["--features", "f0..f7"], "csv"),
                           ("feat.jsonl", ["--features", "a,rest"], "jsonl")]:
        d = "sh-" + src.replace(".", "-")
        r = convert([src, "--to", d, "--id-field", "id", "--rows-per-shard", "10"] + args)
        if not t.check(r.rc == 0, f"convert {src} --features: status 0", r.describe()):
            continue
        got_x = np.concatenate([h5py.File(p, "r")["features"][()]
                                for p in sorted(glob.glob(f"{d}/shard-*.h5"))])
        t.check(got_x.dtype == np.float32 and np.array_equal(got_x, x),
                f"{src}: /features is the float32 input exactly")
        out = "out-" + d
        r = e.run(2, e.job_args(model.path, f"{d}/shard-*.h5", out, unit_rows=6), timeout=300)
        if not t.check(r.rc == 0, f"mlp on {d}, 2 ranks: status 0", r.describe()):
            continue
        pred, _ = predictions(out, "predictions")
        r = export([out, "--to", f"{out}.{fmt}"])
        if not t.check(r.rc == 0, f"export {out}: status 0", r.describe()):
            continue
        if fmt == "csv":
            with open(f"{out}.csv", newline="") as f:
                rows = list(csv.reader(f))
            t.equal(rows[0], ["row", "id", "predictions_0", "predictions_1", "predictions_2", "error"],
                    "export CSV: columns predictions_0..2")
            got = np.array([[float(v) for v in r_[2:5]] for r_ in rows[1:]], np.float32)
            t.check([r_[1] for r_ in rows[1:]] == [f"row{i}" for i in range(37)], "export CSV: ids in order")
        else:
            recs = read_jsonl(f"{out}.jsonl")
            got = as_array([r_["predictions"] for r_ in recs])
            t.check([r_["id"] for r_ in recs] == [str(i) for i in range(37)], "export JSONL: ids in order")
        t.check(same_f32(got, pred), f"{out}: exported predictions equal predictions.h5")
        t.close(got, ref, 1e-5, f"{out}: exported predictions match the float64 reference")


# ---- classification labels and generated text -------------------------------------------------

def labels_and_text(t):
    with h5py.File(CLS_GOLD, "r") as g:
        ctexts = [x.decode() if isinstance(x, bytes) else x for x in g["text"][()]]
        logits = g["logits"][()].astype(np.float64)
    with open("cls.jsonl", "w", encoding="utf-8") as f:
        for i, x in enumerate(ctexts):
            f.write(json.dumps({"id": f"c{i}", "text": x}) + "\n")
    r = convert(["cls.jsonl", "--to", "sh-cls", "--id-field", "id"])
    t.check(r.rc == 0, "convert cls.jsonl: status 0", r.describe())
    r = e.run(1, e.job_args(CLS_MODEL, "sh-cls/shard-*.h5", "out-cls", extra=["--task", "classify"]),
              timeout=300)
    if t.check(r.rc == 0, "classify (tiny BERT): status 0", r.describe()):
        r = export(["out-cls", "--to", "cls-out.jsonl"])
        if t.check(r.rc == 0, "export classify: status 0", r.describe()):
            recs = read_jsonl("cls-out.jsonl")
            with h5py.File("out-cls/predictions.h5", "r") as f:
                names = [e._s(x) for x in f["logits"].attrs["labels"]]
                lg = f["logits"][()]
            t.check(list(recs[0].keys()) == ["row", "id", "labels", "logits", "probs", "label", "error"],
                    "export classify: fields row, id, labels, logits, probs, label, error", list(recs[0].keys()))
            t.check([x["label"] for x in recs] == [names[k] for k in np.argmax(logits, 1)],
                    "export classify: label names of transformers' argmax")
            t.check(same_f32(as_array([x["logits"] for x in recs]), lg),
                    "export classify: logits equal predictions.h5")
    model = model_dir("smollm2")
    if model is None or not os.path.exists(model):
        t.skip("export generated text", "SmolLM2 is not installed (scripts/install-models.sh)")
        return
    with h5py.File(LLAMA_GOLD, "r") as g:
        prompts = [x.decode() if isinstance(x, bytes) else x for x in g["prompts"][()]][:3]
    with open("prompts.txt", "w", encoding="utf-8") as f:
        f.write("".join(" ".join(p.split()) + "\n" for p in prompts))
    r = convert(["prompts.txt", "--to", "sh-gen"])
    t.check(r.rc == 0, "convert prompts.txt: status 0", r.describe())
    r = e.run(1, e.job_args(model, "sh-gen/shard-*.h5", "out-gen",
                            extra=["--task", "generate", "--max-new-tokens", "6"]), timeout=300)
    if t.check(r.rc == 0, "generate (SmolLM2, 6 tokens): status 0", r.describe()):
        r = export(["out-gen", "--to", "gen.csv", "--fields", "source_row,text,n_tokens,error"])
        if t.check(r.rc == 0, "export generate as CSV with --fields: status 0", r.describe()):
            with open("gen.csv", encoding="utf-8", newline="") as f:
                rows = list(csv.reader(f))
            with h5py.File("out-gen/predictions.h5", "r") as f:
                texts = [e._s(x) for x in f["text"][()]]
                ntok = [int(x) for x in f["n_tokens"][()]]
            t.check(rows[0] == ["source_row", "text", "n_tokens", "error"]
                    and [x[1] for x in rows[1:]] == texts and [int(x[2]) for x in rows[1:]] == ntok,
                    "export generate: the generated /text and /n_tokens, CSV-quoted, in order", rows[:3])


# ---- malformed input -------------------------------------------------------------------------------

def malformed(t):
    def write(name, data):
        with open(name, "wb") as f:
            f.write(data)

    write("bad.jsonl", b'{"text": "ok"}\n{"text": "ok 2"}\n{"text": "broken\n{"x": 1}\n'
                       b'{"text": "\xff\xfe"}\n{"text": 5}\n[1, 2]\n{"text": "last"}\n')
    cases = [
        (["bad.jsonl", "--to", "b1"], "bad.jsonl:3:", "not valid JSON"),
        (["bad.csv", "--to", "b2"], "bad.csv:3:", "2 fields, the header has 3"),
        (["badnum.csv", "--to", "b3", "--features", "f1,f2"], "badnum.csv:3:", "'abc' is not a number"),
        (["badutf.txt", "--to", "b4"], "badutf.txt:2:", "invalid UTF-8"),
        (["open.csv", "--to", "b5"], "open.csv:lines 3-4:", "not closed"),
        (["nofield.jsonl", "--to", "b6"], "nofield.jsonl:2:", "no field 'text'"),
        (["quote.csv", "--to", "b7"], "quote.csv:2:", "malformed CSV"),
    ]
    write("bad.csv", b'id,text,n\n1,"a, b",1\n2,only two\n3,c,3\n')
    write("badnum.csv", b"f1,f2\n1.5,2\nabc,3\n4,5\n")
    write("badutf.txt", b"fine\nbad \xc3\x28 byte\nfine again\n")
    write("open.csv", b'id,text\n1,ok\n2,"never closed\n3,more\n')
    write("nofield.jsonl", b'{"text": "a"}\n{"txt": "b"}\n')
    write("quote.csv", b'id,text\n1,a "quoted" word\n2,ok\n')
    for args, where, why in cases:
        r = convert(args)
        t.check(r.rc == 3 and where in r.stderr and why in r.stderr,
                f"convert {args[0]}: status 3, message names {where} and says '{why}'", r.describe())
        t.check(not glob.glob(f"{args[2]}/shard-*"), f"convert {args[0]}: no shard left behind")

    # skip: reported and counted, the good rows kept
    r = convert(["bad.jsonl", "--to", "s1", "--on-bad-line", "skip"])
    if t.check(r.rc == 0, "convert bad.jsonl --on-bad-line skip: status 0", r.describe()):
        summary = e.load_json("s1/convert.json")
        t.check(summary.get("bad_lines_skipped") == 5 and summary.get("rows") == 3
                and "5 bad line(s) skipped" in r.stderr,
                "skip: 5 bad lines counted (convert.json and the summary line), 3 rows kept", summary)
        t.check(shard_strings("s1", "text") == ["ok", "ok 2", "last"], "skip: the good rows, in order")
        for line in ("bad.jsonl:3:", "bad.jsonl:4:", "bad.jsonl:5:", "bad.jsonl:6:", "bad.jsonl:7:"):
            t.check(line in r.stderr, f"skip: {line} reported", r.stderr)
    r = convert(["bad.csv", "--to", "s2", "--on-bad-line", "skip"])
    t.check(r.rc == 0 and e.load_json("s2/convert.json").get("bad_lines_skipped") == 1
            and shard_strings("s2", "text") == ["a, b", "c"], "CSV skip: 1 bad record, 2 rows", r.describe())

    # the output directory must not hold shards already
    r = convert(["bad.jsonl", "--to", "s1", "--on-bad-line", "skip"])
    t.check(r.rc == 3 and "already holds shards" in r.stderr, "convert into a directory with shards: status 3",
            r.describe())
    # Parquet, unknown formats and usage errors
    write("t.parquet", b"PAR1")
    r = convert(["t.parquet", "--to", "p"])
    t.check(r.rc == 3 and "Parquet" in r.stderr and "Debian 12" in r.stderr,
            "Parquet: status 3 with the reason", r.describe())
    write("t.dat", b"x\n")
    r = convert(["t.dat", "--to", "p"])
    t.check(r.rc == 2 and "--format" in r.stderr, "unknown extension: status 2, asks for --format", r.describe())
    r = convert(["t.dat", "--to", "p", "--format", "text"])
    t.check(r.rc == 0, "--format text overrides the extension", r.describe())
    r = convert(["bad.csv"])
    t.check(r.rc == 2 and "--to" in r.stderr, "no --to: status 2", r.describe())
    r = convert(["bad.csv", "--to", "x", "--rows-per-shard", "0"])
    t.check(r.rc == 2 and "--rows-per-shard" in r.stderr, "--rows-per-shard 0: status 2", r.describe())
    r = export(["nowhere", "--to", "x.jsonl"])
    t.check(r.rc == 3 and "predictions.h5" in r.stderr, "export of a directory without a job: status 3",
            r.describe())


# ---- bounded memory ----------------------------------------------------------------------------------

def large_file(t):
    """Writes a JSONL of LARGE_MB megabytes streaming, converts it, and checks the converter's peak
    RSS (its own, measured by a wrapper process that runs only it)."""
    words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
             "rho sigma tau upsilon phi chi psi omega").split()
    rng = random.Random(0)
    tails = [json.dumps(" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) + f" ünïcødé {k}")
             for k in range(4096)]
    target, size, rows = int(LARGE_MB * 1e6), 0, 0
    with open("large.jsonl", "w", encoding="utf-8", buffering=1 << 22) as f:
        while size < target:
            s = "".join(f'{{"id":"r{rows + k}","text":{tails[(rows + k) & 4095]}}}\n' for k in range(10000))
            f.write(s)
            size += len(s.encode())
            rows += 10000
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.exit(r.returncode)\n")
    cmd = [sys.executable, "-c", wrapper, e.SHARDLINE, "convert", "large.jsonl", "--to", "sh-large",
           "--id-field", "id"]
    import time
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    secs = time.time() - t0
    if not t.check(p.returncode == 0, f"convert a {size / 1e6:.0f} MB JSONL: status 0", p.stderr[-2000:]):
        return
    rss_mb = int(p.stdout.strip().splitlines()[-1]) / 1024.0
    # The binary's own start-up footprint (a CUDA build maps cuBLAS and NCCL: ~200 MiB before
    # reading a byte) is measured the same way and subtracted: the bound is on what converting adds.
    b = subprocess.run([sys.executable, "-c", wrapper, e.SHARDLINE, "--version"], capture_output=True,
                       text=True, timeout=120)
    base_mb = int(b.stdout.strip().splitlines()[-1]) / 1024.0
    print(f"      large JSONL: {size / 1e6:.0f} MB, {rows} rows, {secs:.1f} s, peak RSS {rss_mb:.1f} MiB "
          f"(start-up alone {base_mb:.1f} MiB)")
    t.check(rss_mb - base_mb < CONVERT_RSS_BOUND_MB,
            f"convert's peak RSS {rss_mb:.1f} MiB stays within {CONVERT_RSS_BOUND_MB} MiB of the "
            f"binary's start-up RSS {base_mb:.1f} MiB for a {size / 1e6:.0f} MB file")
    summary = e.load_json("sh-large/convert.json")
    t.equal(summary.get("rows"), rows, "large JSONL: every line is a row")
    last = sorted(glob.glob("sh-large/shard-*.h5"))[-1]
    with h5py.File(last, "r") as f:
        t.check(e._s(f["ids"][-1]) == f"r{rows - 1}", "large JSONL: the last shard ends with the last id")
    os.remove("large.jsonl")


def body(t, tmp):
    malformed(t)
    features_round_trip(t)
    labels_and_text(t)
    mdir = model_dir()
    if t.check(mdir is not None and os.path.isfile(os.path.join(mdir, "config.json")),
               "all-MiniLM-L6-v2 is installed", "run scripts/install-models.sh"):
        with h5py.File(GOLD, "r") as g:
            texts = [g["text"][i].decode("utf-8") if isinstance(g["text"][i], bytes) else g["text"][i]
                     for i in IDX]
            ref = g["embeddings"][()][IDX].astype(np.float64)
        text_round_trips(t, mdir, texts, ref)
    large_file(t)


if __name__ == "__main__":
    e.main("test_convert", body)
