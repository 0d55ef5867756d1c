"""corpus.py — the sentence corpus, tests/reference/sentences.txt, read one way for every user:
the golden generators (make_bert_goldens.py, make_bpe_goldens.py) and the benchmarks
(bench/bench_bert.py, which puts this folder on sys.path).

The file holds one text per line; lines that start with "# " and empty lines are skipped, and
the escapes \\t \\n \\r \\\\ \\uXXXX \\UXXXXXXXX stand for characters a line cannot hold. Only the
standard library is used, so any Python 3 can import it.
"""
import os
import re

SENTENCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sentences.txt")

_ESC = re.compile(r"\\(t|n|r|\\|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def unescape(s):
    def rep(m):
        e = m.group(1)
        return {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(e) or chr(int(e[1:], 16))
    return _ESC.sub(rep, s)


def load_sentences(path=SENTENCES):
    """The texts of `path` (default: sentences.txt), in file order, escapes decoded."""
    out = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            line = line[:-1] if line.endswith("\n") else line
            if line.startswith("# ") or line == "":
                continue
            out.append(unescape(line))
    return out
