#!/usr/bin/env python3
"""make_tokenizer_compat.py — prints the Unicode compatibility ranges of models/tokenizers/wordpiece.c.

The Hugging Face `tokenizers` library (the reference for the token ids) decides "punctuation"
(BertPreTokenizer), "nonspacing mark" (accent stripping) and "other" (clean_text: Cc, Cf, Co)
with the Rust crate unicode_categories 0.1.1, whose tables predate Unicode 10. models/tokenizers/wordpiece.c
asks utf8proc (Unicode 15 in Debian bookworm's 2.8). The two disagree on a few hundred code
points — mostly marks and punctuation of scripts added since — and the C tokenizer corrects
utf8proc's answer with the ranges printed here, so that its ids stay identical to the reference.

Run:
  git clone https://github.com/swgillespie/unicode-categories && \
    git -C unicode-categories show 92bb246:src/tables.rs > tables_0.1.1.rs   # the 0.1.1 release
  python3 tests/reference/make_tokenizer_compat.py tables_0.1.1.rs > ranges.txt
then paste the arrays into models/tokenizers/wordpiece.c (section "Unicode compatibility").
Needs libutf8proc (loaded with ctypes), no other package.
"""
import ctypes
import ctypes.util
import re
import sys


def main():
    src = open(sys.argv[1], encoding="utf-8").read()
    tabs = {}
    for m in re.finditer(r"pub static (\w+) : &'static \[char\] = &\[(.*?)\];", src, re.S):
        tabs[m.group(1)] = {int(x, 16) for x in re.findall(r"\\u\{([0-9A-Fa-f]+)\}", m.group(2))}
    old = {
        "mn": tabs["MARK_NONSPACING"],
        "punct": set().union(*[v for k, v in tabs.items() if k.startswith("PUNCTUATION_")]),
        # is_other() = Cc | Cf | Co; Co also by the crate's hard-coded private use planes
        "other": tabs["OTHER_CONTROL"] | tabs["OTHER_FORMAT"] | tabs["OTHER_PRIVATE_USE"]
        | set(range(0xE000, 0xF900)) | set(range(0xF0000, 0xFFFFE)) | set(range(0x100000, 0x10FFFE)),
    }
    lib = ctypes.CDLL(ctypes.util.find_library("utf8proc") or "libutf8proc.so.2")
    lib.utf8proc_category.restype = ctypes.c_int
    lib.utf8proc_unicode_version.restype = ctypes.c_char_p
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    cat = {c: lib.utf8proc_category(c) for c in cps}
    # utf8proc categories: MN=6, PC..PO=12..18, CC=26, CF=27, CO=29
    new = {
        "mn": {c for c in cps if cat[c] == 6},
        "punct": {c for c in cps if 12 <= cat[c] <= 18},
        "other": {c for c in cps if cat[c] in (26, 27, 29)},
    }

    def ranges(s):
        out = []
        for c in sorted(s):
            if out and out[-1][1] == c - 1:
                out[-1][1] = c
            else:
                out.append([c, c])
        return out

    print(f"/* utf8proc {lib.utf8proc_unicode_version().decode()} vs unicode_categories 0.1.1 */")
    for name in ("mn", "punct", "other"):
        for kind, s in (("not", new[name] - old[name]), ("also", old[name] - new[name])):
            rs = ranges(s)
            print(f"static const int32_t compat_{kind}_{name}[][2] = {{", end="")
            if not rs:
                print("{-1, -1}};")
                continue
            for i, (a, b) in enumerate(rs):
                print(("\n    " if i % 5 == 0 else " ") + f"{{0x{a:X}, 0x{b:X}}},", end="")
            print("\n};")


if __name__ == "__main__":
    main()
