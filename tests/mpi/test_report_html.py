"""test_report_html.py — report.html, the page a user opens after a job, rendered by a real
browser (Debian's headless chromium):

  - an mlp job on 2 ranks (2 DP groups) over shards holding NaN rows, one shard named with
    HTML's special characters; then all-MiniLM-L6-v2 embedding the golden texts on 2 ranks;
  - report.json has the timeline (every group's units add up to its rows), the forward-pass
    histogram (mlp: the passes that units of U rows in batches of B make, counted here), and
    for MiniLM the real tokens of the reference tokenizer (the goldens' lengths, from
    transformers);
  - chromium --dump-dom: the charts are SVG elements with their titles and axis labels; the
    row counts are report.json's; the rank names carry report.json's hosts; the failed rows
    are the NaN rows put in, with their reasons; the GPU section says none were recorded; the
    configuration names the shards, the special characters escaped (no element made of them);
  - chromium --screenshot: a PNG of 1200 x 2000 that is not blank (decoded here with zlib:
    many colours, a share of non-white pixels); kept in the test's folder, its path printed;
  - GPU samples as a GPU run records them, written into a copy of the mlp report (no GPU
    here), drawn by `shardline report`: five charts (utilisation, memory, power, temperature,
    SM clock), one line per rank each;
  - exactly one log line about GPU metrics (no GPU here); `--profile` is accepted on a CPU
    build and changes no value; `shardline report OUT` rewrites the same page; `shardline
    report` of a folder without report.json fails with status 3 naming the file.

Skipped (77) when chromium is not installed (scripts/install-deps.sh installs it).
Run: ctest -R test_report_html (needs SHARDLINE, SL_SOURCE_DIR, SL_MODELS_DIR, MPIEXEC).
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sl_e2e as e  # noqa: E402

SRC = e.SOURCE_DIR
GOLD = os.path.join(SRC, "tests", "reference", "goldens", "minilm_goldens.h5")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ODD = "odd<b>&'q\".h5"  # a shard name that is HTML if not escaped


def minilm_dir():
    base = os.environ.get("SL_MODELS_DIR", os.path.join(SRC, "build", "models"))
    p = os.path.join(base, "minilm.path")
    return open(p).read().strip() if os.path.isfile(p) else None


def chromium(args, timeout=120):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


class Dom(HTMLParser):
    """Elements by tag, the text inside each element with a class, all text in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = {}
        self.stack = []
        self.by_class = {}
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.stack.append((tag, dict(attrs).get("class"), len(self.text)))

    def handle_endtag(self, tag):
        while self.stack:
            t, cls, start = self.stack.pop()
            if cls:
                self.by_class.setdefault(cls, []).append("".join(self.text[start:]).strip())
            if t == tag:
                break

    def handle_data(self, data):
        self.text.append(data)

    def all_text(self):
        return "".join(self.text)


def parse(html):
    d = Dom()
    d.feed(html)
    return d


def png_pixels(path):
    """(width, height, rows of RGB(A) tuples' bytes) of an 8-bit RGB/RGBA PNG, unfiltered."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w, h, bpp = 8, b"", 0, 0, 3
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and ctype in (2, 6), f"depth {depth} colour type {ctype}"
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def check_png(t, path, what):
    if not t.check(os.path.isfile(path) and os.path.getsize(path) > 10000, f"{what}: screenshot written",
                   f"{path}: {os.path.getsize(path) if os.path.isfile(path) else 'missing'} bytes"):
        return
    w, h, bpp, rows = png_pixels(path)
    t.equal((w, h), (1200, 2000), f"{what}: screenshot is 1200 x 2000")
    colours, dark = set(), 0
    for y in range(0, h, 4):
        r = rows[y]
        for x in range(0, w, 4):
            px = r[x * bpp:x * bpp + 3]
            colours.add(px)
            dark += px != b"\xff\xff\xff"
    samples = (h // 4) * (w // 4)
    t.check(len(colours) >= 20 and dark / samples > 0.02, f"{what}: screenshot is not blank",
            f"{len(colours)} colours, {100 * dark / samples:.1f}% non-white pixels")
    print(f"      screenshot: {path}", flush=True)


def check_page(t, out, rep, what, keep_dir):
    page = os.path.join(out, "report.html")
    if not t.check(os.path.isfile(page), f"{what}: report.html written beside report.json"):
        return None
    raw = open(page, encoding="utf-8").read()
    t.check("<script" not in raw and "http://" not in raw.replace('xmlns="http://www.w3.org/2000/svg"', "")
            and "https://" not in raw, f"{what}: self-contained (no script, no network address)")
    r = chromium(["--dump-dom", "file://" + os.path.abspath(page)])
    if not t.check(r.returncode == 0 and "<svg" in r.stdout, f"{what}: chromium renders the page",
                   r.stderr[-1500:]):
        return None
    d = parse(r.stdout)
    text = d.all_text()
    t.check(d.tags.get("svg", 0) >= 3, f"{what}: at least 3 SVG charts", f"{d.tags.get('svg', 0)} svg elements")
    t.check(d.tags.get("polyline", 0) >= rep["dp"], f"{what}: one throughput line per DP group",
            f"{d.tags.get('polyline', 0)} polylines, dp {rep['dp']}")
    for label in ["Rows per second, per data-parallel group", "seconds since the job started computing",
                  "rows/s", "Seconds per stage, per rank", "rows per forward pass", "forward passes"]:
        t.check(label in text, f"{what}: the page shows '{label}'")
    t.equal(d.by_class.get("rows"), [str(rep["rows"])], f"{what}: rows as in report.json")
    t.equal(d.by_class.get("rows-computed"), [str(rep["rows_computed"])], f"{what}: rows computed")
    t.equal(d.by_class.get("failed-rows"), [str(rep["failed_rows"])], f"{what}: failed rows")
    t.equal(d.by_class.get("rank-rows"), [str(p["rows"]) for p in rep["per_rank"]],
            f"{what}: each rank's rows as in report.json")
    gsum = sum(int(x) for x in d.by_class.get("group-rows", []))
    t.equal(gsum, rep["rows_computed"], f"{what}: the DP groups' rows add up to the rows computed")
    names = [f"rank {p['rank']} ({p['host']})" for p in rep["per_rank"]]
    t.check(all(n in d.by_class.get("rank-name", []) for n in names),
            f"{what}: the stage chart names every rank with its host", f"{d.by_class.get('rank-name')} vs {names}")
    t.check("No GPU metrics were recorded" in text, f"{what}: GPU section says none were recorded")
    shot = os.path.join(keep_dir, f"report-{what}.png")
    r = chromium([f"--screenshot={shot}", "--window-size=1200,2000", "file://" + os.path.abspath(page)])
    t.check(r.returncode == 0, f"{what}: chromium --screenshot", r.stderr[-1500:])
    check_png(t, shot, what)
    return d, raw


def body(t, tmp):
    # the screenshots outlive the temporary folder: beside the binary, in the build folder
    keep_dir = os.path.join(os.path.dirname(e.SHARDLINE), "test_report_html")
    os.makedirs(keep_dir, exist_ok=True)

    # ---- mlp, 2 ranks, NaN rows, an odd shard name ----
    d_in = 12
    e.make_model("mlp", [d_in, 24, 3])
    os.makedirs("in", exist_ok=True)
    sizes = [170, 130]
    shards = e.make_inputs("in", sizes, d_in, names=["a.h5", ODD])
    # job order is by path: "in/a.h5" < "in/odd..."; poison rows 5 and 77 of a.h5, 3 of the other
    bad = {5: 2, 77: 0, 170 + 3: 7}
    for g, col in bad.items():
        path, data = shards[0] if g < 170 else shards[1]
        row = g if g < 170 else g - 170
        with h5py.File(path, "r+") as f:
            v = f["features"][row]
            v[col] = np.nan
            f["features"][row] = v
    unit, batch = 40, 16
    r = e.run(2, e.job_args("mlp", "in/*.h5", "out-mlp", unit_rows=unit, batch=batch))
    t.check(r.rc == 4, "mlp job: status 4 (some rows failed)", r.describe())
    gpu_lines = [ln for ln in r.stderr.splitlines() if "GPU metrics" in ln]
    t.check(len(gpu_lines) == 1 and "not recorded" in gpu_lines[0],
            "exactly one log line about GPU metrics, saying none are recorded", "\n".join(gpu_lines))
    rep = e.load_json("out-mlp/report.json")
    # report.json: the timeline and the histogram, against what units and batches make
    groups = rep["timeline"]["groups"]
    t.equal(len(groups), 2, "timeline: one entry per DP group")
    t.equal(sum(u[2] for g in groups for u in g["units"]), sum(sizes), "timeline: the units' rows add up")
    t.check(all(0 <= u[0] <= u[1] <= rep["seconds"] for g in groups for u in g["units"]),
            "timeline: every unit's start <= end, within the job")
    want = [0] * 21
    for n in sizes:
        for u0 in range(0, n, unit):
            left = min(unit, n - u0)
            while left > 0:
                b = min(batch, left)
                want[b.bit_length() - 1] += 1
                left -= b
    t.equal(rep["batches"]["rows"], want, "batches: forward passes by size as units/batches make them")
    res = check_page(t, "out-mlp", rep, "mlp", keep_dir)
    if res:
        d, raw = res
        text = d.all_text()
        # failed rows: the ones poisoned, with the feature named
        rows_seen = []
        for g, col in sorted(bad.items()):
            ok = f"{g}NaN in feature {col}" in text.replace("\n", "")
            rows_seen.append(ok)
        t.check(all(rows_seen), "failed rows: each NaN row listed with its reason",
                f"{rows_seen}; page text near 'Failed rows': {text[text.find('Failed rows'):][:300]!r}")
        t.check(ODD in text, "configuration: the odd shard name shown as text")
        esc = "odd&lt;b&gt;&amp;&#39;q&quot;.h5"
        t.check(esc in raw and ODD not in raw, "the odd shard name is HTML-escaped in the file")
        t.check(d.tags.get("b", 0) == 0, "no element made from the shard name", f"{d.tags.get('b')} <b> elements")

    # `shardline report OUT` rewrites the same page
    before = open("out-mlp/report.html", "rb").read()
    os.unlink("out-mlp/report.html")
    r = e.run_direct(["report", "out-mlp"])
    t.check(r.rc == 0 and open("out-mlp/report.html", "rb").read() == before,
            "shardline report OUT rewrites the same report.html", r.describe())
    # GPU metrics as a GPU run records them (no GPU here: the samples are written into a copy
    # of the report), drawn by `shardline report`: one chart per metric, one line per rank
    shutil.copytree("out-mlp", "out-gpu")
    rep_gpu = e.load_json("out-gpu/report.json")
    ts = [0.0, 1.0, 2.0, 3.0]
    rep_gpu["gpu"] = {"ranks": [
        {"rank": r, "nvml_index": r, "memory_total_bytes": 80e9, "t": ts,
         "util_gpu_percent": [0, 50 + r, 97, 12], "util_memory_percent": [0, 20, 30, 5],
         "memory_used_bytes": [1e9, 30e9, 31e9, 31e9], "power_watts": [80, 300, 420, -1],
         "temperature_c": [40, 55, 61, 62], "sm_clock_mhz": [1980, 1980, 1755, 1980]}
        for r in range(2)]}
    with open("out-gpu/report.json", "w") as f:
        json.dump(rep_gpu, f)
    r = e.run_direct(["report", "out-gpu"])
    if t.check(r.rc == 0, "shardline report with GPU samples", r.describe()):
        rd = chromium(["--dump-dom", "file://" + os.path.abspath("out-gpu/report.html")])
        dg = parse(rd.stdout)
        text = dg.all_text()
        for title in ["GPU utilisation", "GPU memory used", "Power", "Temperature", "SM clock"]:
            t.check(title in text, f"GPU section: chart '{title}'")
        t.check("No GPU metrics" not in text, "GPU section: no 'none recorded' line when samples exist")
        t.equal(dg.tags.get("polyline", 0), 2 + 5 * 2, "GPU section: one line per rank in each of 5 charts")
        t.check("NVML device 1" in text, "GPU section: the lines name the rank's NVML device")

    os.makedirs("empty", exist_ok=True)
    r = e.run_direct(["report", "empty"])
    t.check(r.rc == 3 and "empty/report.json" in r.stderr, "shardline report: no report.json: status 3 naming it",
            r.describe())

    # --profile on a CPU build: accepted, same values
    r = e.run(2, e.job_args("mlp", "in/*.h5", "out-prof", unit_rows=unit, batch=batch, extra=["--profile"]))
    if t.check(r.rc == 4, "--profile on a CPU build: same status", r.describe()):
        with h5py.File("out-mlp/predictions.h5") as a, h5py.File("out-prof/predictions.h5") as b:
            pa, pb = a["predictions"][()], b["predictions"][()]
            t.check(np.array_equal(pa, pb, equal_nan=True), "--profile changes no value")

    # ---- all-MiniLM-L6-v2, 2 ranks ----
    mdir = minilm_dir()
    if not mdir or not os.path.isfile(os.path.join(mdir, "config.json")):
        t.skip("MiniLM report", "all-MiniLM-L6-v2 is not installed (scripts/install-models.sh)")
        return
    with h5py.File(GOLD, "r") as g:
        texts = [s.decode("utf-8", "surrogatepass") if isinstance(s, bytes) else s for s in g["text"][()]]
        lengths = g["lengths"][()]
    texts, lengths = texts[:160], lengths[:160]
    os.makedirs("text", exist_ok=True)
    with h5py.File("text/t.h5", "w") as f:
        f.create_dataset("text", data=np.array(texts, dtype=object), dtype=h5py.string_dtype("utf-8"))
    r = e.run(2, e.job_args(mdir, "text/*.h5", "out-minilm", unit_rows=40,
                            extra=["--task", "embed", "--batch-tokens", "256"]), timeout=600)
    if not t.check(r.rc == 0, "MiniLM job on 2 ranks: status 0", r.describe()):
        return
    rep = e.load_json("out-minilm/report.json")
    b = rep["batches"]
    t.equal(b["real_tokens"], int(lengths.sum()), "MiniLM: real tokens = the reference tokenizer's")
    t.check(b["padded_tokens"] >= b["real_tokens"] and sum(b["padding"]) == sum(b["rows"]) > 0,
            "MiniLM: every pass in the padding histogram, padded >= real tokens", json.dumps(b))
    res = check_page(t, "out-minilm", rep, "minilm", keep_dir)
    if res:
        text = res[0].all_text()
        t.check("padding of the [batch, length] token grid" in text and f"{b['real_tokens']} real tokens" in text,
                "MiniLM: the padding chart and the token totals are shown")
        t.check("tokenize" in text, "MiniLM: the stage chart has tokenize")


if __name__ == "__main__":
    if not CHROMIUM:
        print("skipped: chromium is not installed (scripts/install-deps.sh installs it)")
        sys.exit(77)
    e.main("test_report_html", body)
