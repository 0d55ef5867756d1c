#!/usr/bin/env python3
"""make_bpe_goldens.py — reference ids of Hugging Face tokenizers for the byte-level BPE tests.

Produces (all committed, so the test suite needs neither Python package):
  tests/reference/goldens/smollm2_tokens.h5
      SmolLM2-135M-Instruct's tokenizer as transformers builds it from the GGUF file
      (AutoTokenizer.from_pretrained(dir, gguf_file=name)), on a corpus of N texts: every line of
      tests/reference/sentences.txt, hand-written texts (accents, CJK, Arabic, Devanagari, emoji
      with ZWJ sequences, code, numbers and long digit runs, whitespace runs, tabs, \\r\\n, odd
      Unicode spaces, contractions in both cases, special tokens inside the text) and generated
      ones (random mixtures of those pieces, texts of 2-5 KB):
        text              variable-length UTF-8 strings [N]
        ids, lengths      int32, add_special_tokens=False: ids of text i are
                          ids[offsets[i] : offsets[i] + lengths[i]] with offsets = cumsum
        ids_special, lengths_special   the same with add_special_tokens=True
        decode_ids, decode_lengths     M id sequences (concatenated, as above): the ids of some
                          texts, and random ids that cut characters apart (U+FFFD in the text)
        decoded, decoded_skip          their decodings, skip_special_tokens False / True, with
                          clean_up_tokenization_spaces=False (that option is a lossy text
                          post-process of transformers, not part of the tokenizer)
      attributes: gguf file name, versions of transformers and tokenizers, bos_id.
  tests/reference/bpe_tiny/<style>/tokenizer.json
      tiny BPE tokenizers trained here with the `tokenizers` library on the corpus (vocab 600),
      one per pre-tokenizer style:
        gpt2     ByteLevel(use_regex) pre-tokenizer, ByteLevel post-processor, merges "a b"
        llama3   Sequence[Split(LLaMA-3 regex, Isolated), ByteLevel(use_regex=false)],
                 TemplateProcessing with a BOS, ignore_merges, merges as pairs
        qwen2    Sequence[Split(Qwen2 regex), ByteLevel(use_regex=false)], no post-processor,
                 special and non-special added tokens, merges as pairs
        smollm   Sequence[Digits(individual_digits), ByteLevel(add_prefix_space, use_regex)]
                 (SmolLM's own tokenizer.json layout, with a prefix space), merges "a b"
  tests/reference/bpe_tiny/{gpt2,llama3,qwen2}/tokenizer.gguf
      the same vocabularies as tokenizer-only GGUF files (tokenizer.ggml.* keys as llama.cpp's
      converter writes them, tokenizer.ggml.pre "gpt2", "llama-bpe", "qwen2"), which must give
      the same ids through the GGUF loader; bpe_tiny/bad/*.gguf: files the loader must refuse
      (a merge of tokens not in the vocabulary, a SentencePiece model without scores, an unknown
      pre-tokenizer).
  tests/reference/bpe_tiny/goldens.h5
      one group per style: ids, lengths, ids_special, lengths_special (for the same corpus, in
      the same order as smollm2_tokens.h5's text), decoded (of the first 100 ids_special,
      keeping specials).

Set-up: the venv of make_bert_goldens.py (/tmp/slref: transformers 4.47.1, tokenizers 0.21)
plus `/tmp/slref/bin/pip install gguf numpy h5py`; the model from scripts/install-models.sh
(its path is in build/models/smollm2.path).

Run (from the repository root):
  /tmp/slref/bin/python tests/reference/make_bpe_goldens.py [--gguf path/to/model.gguf]
"""
import argparse
import json
import os
import random
import sys

import h5py
import numpy as np

from corpus import load_sentences

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

HAND = [
    # accents, scripts
    "Café, naïve résumé — déjà vu à Noël; Ærøskøbing, Łódź, Straße, İstanbul, ǅemal.",
    "Ça coûte 12,50 € ou £9.99; l'été dernier j'ai vu ½ d'un éclair ™ ©.",
    "北京欢迎你。東京は日本の首都です。서울특별시는 한국의 수도입니다.",
    "混合text与中文mixing，标点符号！？《书名》「引用」",
    "مرحبا بالعالم! هذه جملة عربية مع أرقام ١٢٣٤٥ و 678.",
    "नमस्ते दुनिया। यह हिन्दी का वाक्य है, संख्या १२३ के साथ।",
    "Ελληνικά: Καλημέρα κόσμε. Русский: Привет, мир! Українська: Ґанок.",
    "עברית: שלום עולם. ไทย: สวัสดีชาวโลก. ქართული: გამარჯობა.",
    # emoji, ZWJ, flags, skin tones, variation selectors
    "👋🏽 Hello 👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 🇫🇷🇯🇵 and ❤️ vs ❤ and 1️⃣.",
    "🧑🏿‍🚀🧑‍💻👩🏻‍🔬 emoji-only: 😀😃😄😁😆😅🤣😂🙂🙃😉😊😇",
    "A\u200dB\u200cC zero-width joiners, \ufeffBOM, soft\u00adhyphen, e\u0301 combining.",
    # code
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\r\n\treturn sum;",
    "<div class=\"x\">&amp; &lt;tag&gt;</div> <a href='https://example.com/?q=1&r=2'>link</a>",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "x=>x+1; a!==b || c&&d; `template ${value}`; /regex[a-z]+/gi; i++; --j;",
    "    indented four\n\t\ttabbed twice\n        eight spaces\n",
    # numbers
    "3.14159265358979323846264338327950288419716939937510",
    "1234567890 12345678901234567890 0.000001 1e-9 -42 +7 1,000,000 10^6 2²³",
    "Phone: +1 (555) 010-9999, ZIP 02139, year 2024, version v1.2.3-rc4.",
    "٠١٢٣٤٥٦٧٨٩ ०१२३४५६७८९ ０１２３ ⅠⅡⅢⅣ ①②③ ¼ ¾",
    # whitespace
    "   leading spaces", "trailing spaces   ", "   ", "\t", "\n", "\n\n\n", "\r\n", " \r\n \r\n ",
    "a  b   c    d     e", "tab\tseparated\tvalues\t\t", "line one\nline two\r\nline three\r",
    "mixed \t \n \r\n whitespace \u00a0nbsp\u3000ideographic\u2028ls\u2029ps\u0085nel end",
    "x\u00a0\u00a0y \u2003em\u2009thin\u202fnarrow\u205fmath \u180emongolian \u200bzwsp",
    "\u000b\u000c vertical tab and form feed \u001f\u0001 controls \x7f del",
    # contractions
    "I'm sure it's fine, they're here, we've won, you'll see, he'd go, don't.",
    "I'M SURE IT'S FINE, THEY'RE HERE, WE'VE WON, YOU'LL SEE, HE'D GO, DON'T.",
    "It'S mIxEd: 'Ll 'lL 'Re 'vE 'M 'D 's 't ' s 'sss 'll'll",
    "quotes ‘curly’ “double” «guillemets» 'single' \"double\" `back`",
    "'ſ long s and K kelvin and İı dotted",
    # special tokens inside text
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there.<|im_end|>",
    "text<|endoftext|>more text<|endoftext|><|endoftext|>",
    "<|im_start|><|im_end|><|im_start|> spaced <|im_end|> ",
    "<|im_start <|im_end| <|endoftext |im_start|> <| im_start |>",
    "<repo_name>shardline<file_sep>main.c<filename>x.py<gh_stars>100",
    "prefix<|im_start|>", "<|im_start|>suffix", "<|endoftext|>",
    "<|begin_of_text|>llama special<|eot_id|> and <|extra|> tokens",
    # odd
    "a", "A", " ", "!", "é", "中", "😀", "ab", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ ａｎｄ ﾊﾝｶｸ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉 and 𠀀𠀁 (astral CJK)",
    "!!!???...,,,;;;::: ---___=== +++***### $$$%%%^^^&&&",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1#frag",
    "email@example.com, @handle #hashtag $TICKER 100% 50/50 C++ C# F#",
]


def generated(base, rng):
    pieces = base + HAND
    gen = []
    words = " ".join(base).split()
    # random mixtures of pieces, joined by assorted separators
    seps = [" ", "", "\n", "\t", "  ", "\r\n", " <|im_start|>", "<|endoftext|>", ". ", "\u00a0"]
    for _ in range(90):
        k = rng.randint(2, 5)
        gen.append("".join(rng.choice(pieces) + rng.choice(seps) for _ in range(k)))
    # word salads with digits and punctuation
    for _ in range(30):
        toks = []
        for _ in range(rng.randint(5, 40)):
            r = rng.random()
            if r < 0.6:
                toks.append(rng.choice(words))
            elif r < 0.75:
                toks.append(str(rng.randint(0, 10 ** rng.randint(1, 15))))
            elif r < 0.9:
                toks.append(rng.choice(["'s", "'t", "'re", "'LL", "n't", "...", "—", "--", "(",
                                        ")"]))
            else:
                toks.append(rng.choice(HAND)[: rng.randint(1, 12)])
        gen.append(rng.choice([" ", "", "  "]).join(toks))
    # long digit runs and long whitespace runs
    for n in (1, 2, 3, 4, 5, 6, 7, 11, 64, 300):
        gen.append("".join(rng.choice("0123456789") for _ in range(n)))
        gen.append("x" + " " * n + "y")
    gen.append("\n" * 40 + "end")
    gen.append(" \t" * 30)
    # 2-5 KB texts
    for _ in range(10):
        target = rng.randint(2048, 5120)
        s = ""
        while len(s.encode()) < target:
            s += rng.choice(pieces) + rng.choice([" ", "\n", "\n\n", " "])
        gen.append(s)
    gen.append("a" * 3000)                 # one long piece through the merge heap
    gen.append("ab" * 1500)
    gen.append("你好" * 800)
    return gen


def corpus():
    base = load_sentences(os.path.join(HERE, "sentences.txt"))
    rng = random.Random(20241128)
    texts = base + HAND + generated(base, rng)
    seen, out = set(), []
    for t in texts:
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def write_flat(g, name, seqs):
    g.create_dataset(name, data=np.concatenate([np.asarray(s, np.int32) for s in seqs] +
                                               [np.zeros(0, np.int32)]), compression="gzip")
    lengths = {"ids": "lengths", "ids_special": "lengths_special", "decode_ids": "decode_lengths"}
    g.create_dataset(lengths[name], data=np.asarray([len(s) for s in seqs], np.int32))


def str_dataset(g, name, items):
    dt = h5py.string_dtype("utf-8")
    g.create_dataset(name, data=np.array(items, dtype=object), dtype=dt, compression="gzip")


# ---- tiny tokenizers --------------------------------------------------------------------------

RE_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


# tiny tokenizers also written as GGUF, with llama.cpp's pre-tokenizer name of their style
GGUF_PRE = {"gpt2": "gpt2", "llama3": "llama-bpe", "qwen2": "qwen2"}
N_DEC = 100  # decodings kept per tiny tokenizer (variable-length strings do not compress)


def tiny(style, texts):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from tokenizers import AddedToken

    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>"]
    elif style == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(RE_LLAMA3), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    elif style == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(RE_QWEN2), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:  # smollm
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    if style == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    elif style == "llama3":
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    elif style == "qwen2":
        tok.add_tokens([AddedToken("<extra>", normalized=False, special=False)])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A <|endoftext|> $B <|endoftext|>",
            special_tokens=[("<|endoftext|>", tok.token_to_id("<|endoftext|>"))])
    j = json.loads(tok.to_str())
    merges = [m if isinstance(m, list) else m.split(" ") for m in j["model"]["merges"]]
    if style in ("gpt2", "smollm"):
        j["model"]["merges"] = [a + " " + b for a, b in merges]
    else:
        j["model"]["merges"] = [[a, b] for a, b in merges]
    if style == "llama3":
        j["model"]["ignore_merges"] = True
    s = json.dumps(j, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_str(s)  # the saved file is what the ids come from
    return tok, s


def write_gguf(path, tokens, merges, types, pre, bos=None, eos=None, add_bos=None,
               model="gpt2"):
    """A tokenizer-only GGUF (no tensors) with the tokenizer.ggml.* keys llama.cpp writes."""
    import gguf
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny_gguf(j, path, pre):
    """The vocabulary of tokenizer.json `j` as llama.cpp's converter stores it: token strings by
    id, merges as "a b", special added tokens CONTROL (3), other added ones USER_DEFINED (4),
    BOS from the TemplateProcessing (add_bos_token) if any."""
    vocab = dict(j["model"]["vocab"])
    types = {}
    for a in j["added_tokens"]:
        vocab[a["content"]] = a["id"]
        types[a["id"]] = 3 if a["special"] else 4
    tokens = [None] * (max(vocab.values()) + 1)
    for k, i in vocab.items():
        tokens[i] = k
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    pp = j.get("post_processor") or {}
    bos = None
    if pp.get("type") == "TemplateProcessing":
        bos = vocab[pp["single"][0]["SpecialToken"]["id"]]
    write_gguf(path, tokens, merges, [types.get(i, 1) for i in range(len(tokens))], pre,
               bos=bos, add_bos=bos is not None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", help="SmolLM2 GGUF file (default: from build/models/smollm2.path)")
    a = ap.parse_args()
    gguf = a.gguf
    if not gguf:
        with open(os.path.join(ROOT, "build", "models", "smollm2.path")) as f:
            gguf = f.read().strip()

    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    texts = corpus()
    print(f"{len(texts)} texts, {sum(len(t.encode()) for t in texts)} bytes")
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    ids_sp = [tok(t, add_special_tokens=True)["input_ids"] for t in texts]

    rng = random.Random(7)
    dec_seqs = [ids_sp[i] for i in range(0, len(texts), 3)]
    V = len(tok)
    for _ in range(150):
        dec_seqs.append([rng.randrange(V) for _ in range(rng.randint(1, 30))])
    dec_seqs.append([0, 1, 2])
    def dec(s, skip):
        return tok.decode(s, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
    decoded = [dec(s, False) for s in dec_seqs]
    decoded_skip = [dec(s, True) for s in dec_seqs]

    out = os.path.join(HERE, "goldens", "smollm2_tokens.h5")
    with h5py.File(out, "w") as h:
        str_dataset(h, "text", texts)
        write_flat(h, "ids", ids)
        write_flat(h, "ids_special", ids_sp)
        write_flat(h, "decode_ids", dec_seqs)
        str_dataset(h, "decoded", decoded)
        str_dataset(h, "decoded_skip", decoded_skip)
        h.attrs["gguf"] = os.path.basename(gguf)
        h.attrs["bos_id"] = tok.bos_token_id if tok.bos_token_id is not None else -1
        h.attrs["transformers"] = transformers.__version__
        h.attrs["tokenizers"] = tokenizers.__version__
    print(f"wrote {out}: {sum(map(len, ids))} ids, {len(dec_seqs)} decodings")

    bad = os.path.join(HERE, "bpe_tiny", "bad")
    os.makedirs(bad, exist_ok=True)
    write_gguf(os.path.join(bad, "bad_merge.gguf"), ["a", "b", "ab"], ["a b", "a c"], [1, 1, 1],
               "gpt2")
    write_gguf(os.path.join(bad, "spm.gguf"), ["a", "b", "ab"], [], [1, 1, 1], "default",
               model="llama")
    write_gguf(os.path.join(bad, "bad_pre.gguf"), ["a", "b", "ab"], ["a b"], [1, 1, 1],
               "deepseek-coder")

    tdir = os.path.join(HERE, "bpe_tiny")
    os.makedirs(tdir, exist_ok=True)
    with h5py.File(os.path.join(tdir, "goldens.h5"), "w") as h:
        for style in ("gpt2", "llama3", "qwen2", "smollm"):
            t, s = tiny(style, texts)
            os.makedirs(os.path.join(tdir, style), exist_ok=True)
            with open(os.path.join(tdir, style, "tokenizer.json"), "w", encoding="utf-8") as f:
                f.write(s)
            g = h.create_group(style)
            e0 = [t.encode(x, add_special_tokens=False).ids for x in texts]
            e1 = [t.encode(x, add_special_tokens=True).ids for x in texts]
            write_flat(g, "ids", e0)
            write_flat(g, "ids_special", e1)
            str_dataset(g, "decoded",
                        [t.decode(x, skip_special_tokens=False) for x in e1[:N_DEC]])
            if style in GGUF_PRE:
                tiny_gguf(json.loads(s), os.path.join(tdir, style, "tokenizer.gguf"),
                          GGUF_PRE[style])
            print(f"{style}: vocab {t.get_vocab_size()}, {sum(map(len, e0))} ids")


if __name__ == "__main__":
    sys.exit(main())
