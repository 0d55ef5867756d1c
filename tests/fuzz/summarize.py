#!/usr/bin/env python3
"""summarize.py — the campaign table of tests/fuzz/README.md from run-campaign.sh's logs: per
target the executions, seconds and mean executions per second, libFuzzer's last coverage line
(cov = covered edges, ft = features), the corpus size in files, and crash artifacts.

Run: python3 tests/fuzz/summarize.py [build-fuzz]
"""
import os
import re
import sys

B = sys.argv[1] if len(sys.argv) > 1 else "build-fuzz"
LINE = re.compile(r"^#(\d+): cov: (\d+) ft: (\d+) corp: (\d+) exec/s (\d+) "
                  r"oom/timeout/crash: (\d+)/(\d+)/(\d+) time: (\d+)s")
print("| target | executions | seconds | exec/s (mean) | cov | ft | corpus (files) | oom/timeout/crash | artifacts |")
print("|---|---|---|---|---|---|---|---|---|")
for log in sorted(os.listdir(os.path.join(B, "logs"))):
    t = log[:-4]
    last = None
    with open(os.path.join(B, "logs", log), errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                last = m
    if not last:
        continue
    n, cov, ft, _, _, oom, tmo, crash, secs = (int(x) for x in last.groups())
    corpus = len(os.listdir(os.path.join(B, "corpus", t)))
    art = os.path.join(B, "artifacts", t)
    arts = len(os.listdir(art)) if os.path.isdir(art) else 0
    print(f"| {t} | {n:,} | {secs} | {n // max(secs, 1):,} | {cov} | {ft} | {corpus} | "
          f"{oom}/{tmo}/{crash} | {arts} |")
