#!/usr/bin/env python3
"""make_spm_goldens.py — reference ids and decodings of Hugging Face tokenizers for the
SentencePiece-style BPE tests (LLaMA 2 / Mistral layout: byte fallback, "▁" for spaces).

Run (from the repository root, with the venv of make_bpe_goldens.py; about a minute):
  /tmp/slref/bin/python tests/reference/make_spm_goldens.py

Produces (all committed, so the test suite needs no Python package):
  tests/reference/spm_tiny/tiny.model
      a SentencePiece BPE model trained here (sentencepiece, vocab 1000, byte_fallback,
      split_digits, identity normalisation, add_dummy_prefix: LLaMA 2's trainer settings) on
      the corpus of make_bpe_goldens.py; characters outside its 98 % coverage fall back to bytes.
  tests/reference/spm_tiny/<form>/tokenizer.json, one per form:
    legacy      what transformers' LlamaTokenizerFast(from_slow, legacy=True) writes for it, as
                LLaMA 2's and Mistral's own tokenizer.json are: normalizer Prepend("▁") +
                Replace(" ", "▁"), no pre-tokenizer, BPE with byte_fallback and fuse_unk,
                decoder Replace + ByteFallback + Fuse + Strip, "<s> $A"; merges as "a b" strings
    metaspace   legacy=False: Metaspace pre-tokenizer (prepend_scheme "first", split false),
                merges as pairs, "<s> $A </s>" (adds EOS), and a non-special added token <sep>
    always      the older Metaspace layout: add_prefix_space true (prepend_scheme "always") and
                split true (every "▁" starts a piece), no post-processor
    from_gguf   the tokenizer.json transformers saves after loading tokenizer.gguf (below)
    gpt2_from_gguf  the same for the byte-level tests/reference/bpe_tiny/gpt2/tokenizer.gguf:
                BPE with byte_fallback true, decoder ByteFallback + Fuse + Replace + ByteLevel
  tests/reference/spm_tiny/tokenizer.gguf
      the SentencePiece model as llama.cpp's converter stores it (tokenizer.ggml.model "llama",
      tokens, scores, token_type: 2 unknown, 3 control, 6 byte, 1 normal; bos/eos/unk ids,
      add_bos_token true, add_space_prefix true; no merges) with a tiny llama architecture
      header so that transformers' GGUF loader accepts it.
  tests/reference/spm_tiny/tokenizer_noprefix.gguf
      the same with add_bos_token false, add_eos_token true, add_space_prefix false.
  tests/reference/spm_tiny/goldens.h5
      text            variable-length UTF-8 strings [N]: the corpus of make_bpe_goldens.py plus
                      texts aimed at this tokenizer (literal <s>, </s>, <unk>, <0x41>, "▁",
                      spaces at the ends, characters outside the vocabulary)
      one group per form (legacy, metaspace, always, gguf, from_gguf, gpt2_from_gguf,
      gguf_noprefix):
        ids, lengths / ids_special, lengths_special   int32, add_special_tokens False / True,
                      flattened (ids of text i at cumsum(lengths)[i-1])
        decode_ids, decode_lengths   id sequences: the ids_special of every third short text, random
                      ids over the whole vocabulary (byte tokens that make invalid UTF-8) and
                      hand-made byte-token sequences
        decoded, decoded_skip        transformers' decode of each, skip_special_tokens False /
                      True, clean_up_tokenization_spaces False
      "gguf" is AutoTokenizer.from_pretrained(dir, gguf_file="tokenizer.gguf"); the others are
      PreTrainedTokenizerFast(tokenizer_file=...) on the committed file; "gguf_noprefix" is
      transformers' GGUF loader on tokenizer_noprefix.gguf (no "▁" put in front, no space
      stripped), except ids_special = ids + [EOS]: the file asks for EOS and no BOS, which that
      loader ignores (it always adds BOS, never EOS) and llama.cpp and shardline follow.
      attributes: versions of transformers, tokenizers, sentencepiece; sp_agree (texts whose
      legacy ids, BOS included, equal sentencepiece's own encode with BOS).
  tests/reference/spm_tiny/model/{config.json, model.safetensors, tokenizer.json}
      a tiny random MistralForCausalLM (vocab 1000, hidden 64, 2 layers, 4 heads, 2 KV heads,
      intermediate 96, tied embeddings; every parameter N(0, 0.2) from a seeded generator,
      RMSNorm weights 1 + N(0, 0.2), as make_llama_goldens.py's tiny models) with the legacy
      tokenizer.json, for the end-to-end test (tests/mpi/test_spm_e2e.py).
  tests/reference/spm_tiny/model_goldens.h5
      transformers (float32, eager attention, batch of one) on that directory, its tokenizer
      loaded with PreTrainedTokenizerFast:
        score_texts [S]; score_ids int32 [S, Lmax] (tok(text).input_ids, BOS first, -1 padded);
        score_lengths (n); score_sum_logprob f32 [S] (sum over t = 1..n-1 of
        log_softmax(logits[t-1])[ids[t]]); score_n_tokens (n-1)
        prompts [P]; greedy_ids int32 [P, 8]: 8 tokens chosen by argmax (full forward each step,
        no EOS stop); greedy_gap f32 [P, 8]: chosen logit minus runner-up's; greedy_text [P]:
        tok.decode(greedy_ids, skip_special_tokens=True)
  tests/reference/spm_tiny/tiny_kquant.gguf
      a tiny llama-architecture GGUF (hidden 256, 2 layers, 4 heads of 64, 2 KV heads,
      intermediate 512, vocab 1000, separate output.weight) whose matrices are K-quants of every
      kind (Q2_K .. Q6_K, as a Q4_K_M file mixes them) made of random super-blocks, their f16
      scales set per tensor so that the values have mean ~0 and std ~0.06; F32 norms; the
      tokenizer is tokenizer.gguf's (SentencePiece, tokenizer.ggml.model "llama").
      /gguf in model_goldens.h5: transformers' GGUF loader on it (weights dequantised by gguf-py,
      its tokenizer from the file), float32: score_ids, score_lengths, score_n_tokens,
      score_sum_logprob for the same texts as above.
"""
import io
import json
import os
import random
import shutil
import sys
import tempfile

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_bpe_goldens import corpus, str_dataset, write_flat  # noqa: E402

OUT = os.path.join(HERE, "spm_tiny")

EXTRA = [
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "Hello <s> world </s> end", "<s> <s>  </s>",
    "x<unk>y", "<0x41><0xE2>", "<0x41 literal", "▁", "▁▁word ▁ x", "a▁b", " leading", "  two",
    "trailing ", "   ", " ", "\u3000ideographic", "tab\tand\nnewline\n", "\n", "\r\n\r\n",
    "outside the vocab: ꙮ ᚠᛇᚻ 𓀀 𝄞 ∰ ⌘ ☃ ♞ 🦀🦜🪐", "数字 12345 and 007", "Ω≈ç√∫˜µ≤≥÷",
    "<sep>", "a<sep>b", " <sep> ", "<sep><sep>", "<sep> <s> </s>",
    "é", "e\u0301", "ñandú", "Zürich Straße", "ﬁ ligature", "½ ² ①",
]

FORMS = ("legacy", "metaspace", "always", "gguf", "from_gguf", "gpt2_from_gguf",
         "gguf_noprefix")


def train(texts):
    import sentencepiece as spm
    m = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=m, model_type="bpe", vocab_size=1000,
        byte_fallback=True, split_digits=True, character_coverage=0.98,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, max_sentence_length=100000, num_threads=1, minloglevel=2)
    path = os.path.join(OUT, "tiny.model")
    with open(path, "wb") as f:
        f.write(m.getvalue())
    return path


def save_json(form, s):
    d = os.path.join(OUT, form)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(s)
    return path


def json_forms(model):
    """legacy, metaspace, always: tokenizer.json files from transformers' converter."""
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import LlamaTokenizerFast
    paths = {}
    for form in ("legacy", "metaspace", "always"):
        fast = LlamaTokenizerFast(vocab_file=model, legacy=form == "legacy", from_slow=True,
                                  add_prefix_space=True)
        tok = fast.backend_tokenizer
        if form == "metaspace":
            tok.add_tokens([AddedToken("<sep>", normalized=False, special=False)])
            tok.post_processor = processors.TemplateProcessing(
                single="<s> $A </s>", pair="<s> $A </s> <s> $B </s>",
                special_tokens=[("<s>", 1), ("</s>", 2)])
        j = json.loads(tok.to_str())
        merges = [m if isinstance(m, list) else m.split(" ") for m in j["model"]["merges"]]
        if form == "legacy":
            j["model"]["merges"] = [a + " " + b for a, b in merges]
        if form == "always":  # the older layout: add_prefix_space, split on every "▁"
            assert j["pre_tokenizer"]["type"] == "Metaspace"
            del j["pre_tokenizer"]["prepend_scheme"]
            j["pre_tokenizer"]["add_prefix_space"] = True
            j["pre_tokenizer"]["split"] = True
            j["post_processor"] = None
        s = json.dumps(j, ensure_ascii=False, indent=1)
        if form == "always":  # the library reads the older keys as meant
            pt = json.loads(Tokenizer.from_str(s).to_str())["pre_tokenizer"]
            assert pt["prepend_scheme"] == "always" and pt["split"], pt
        paths[form] = save_json(form, s)
    return paths


def add_header(w, n_vocab):
    """The llama architecture keys transformers' GGUF loader reads before the tokenizer."""
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(16)
    w.add_block_count(1)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)


def copy_tokenizer(r, w):
    """The tokenizer.* keys of GGUFReader r into GGUFWriter w."""
    from gguf import GGUFValueType as V
    for name, f in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == V.ARRAY and f.types[-1] == V.STRING:
            val = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        elif t == V.ARRAY:
            val = [f.parts[i].tolist()[0] for i in f.data]
        elif t == V.STRING:
            val = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            val = f.parts[f.data[0]].tolist()[0]
        w.add_key_value(name, val, t, sub_type=f.types[-1] if t == V.ARRAY else None)


def with_header(src, dst):
    """A copy of tokenizer-only GGUF src with add_header's keys (for transformers' loader), and
    the first control token as BOS and EOS when src names none (transformers' LlamaTokenizerFast
    adds a BOS whatever the file says, and takes its string from tokens[bos_token_id] only when
    an eos_token_id is present)."""
    import gguf
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch="llama")
    add_header(w, len(r.fields["tokenizer.ggml.tokens"].data))
    copy_tokenizer(r, w)
    if "tokenizer.ggml.bos_token_id" not in r.fields:
        types = r.fields["tokenizer.ggml.token_type"]
        control = [int(types.parts[i][0]) for i in types.data].index(3)
        w.add_bos_token_id(control)
        if "tokenizer.ggml.eos_token_id" not in r.fields:
            w.add_eos_token_id(control)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(model, name="tokenizer.gguf", add_bos=True, add_eos=False, add_space_prefix=True):
    """A GGUF tokenizer as llama.cpp's convert_hf_to_gguf.py writes a SentencePiece vocabulary."""
    import gguf
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        types.append(t)
    path = os.path.join(OUT, name)
    w = gguf.GGUFWriter(path, arch="llama")
    add_header(w, len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(add_eos)
    w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def from_gguf(gguf_path, form):
    """transformers' tokenizer for a GGUF file, and the tokenizer.json it saves (under form;
    not kept when form is None)."""
    from transformers import AutoTokenizer
    tmp = tempfile.mkdtemp()
    try:
        with_header(gguf_path, os.path.join(tmp, "t.gguf"))
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file="t.gguf")
        tok.save_pretrained(os.path.join(tmp, "saved"))
        with open(os.path.join(tmp, "saved", "tokenizer.json"), encoding="utf-8") as f:
            j = json.load(f)
    finally:
        shutil.rmtree(tmp)
    return tok, form and save_json(form, json.dumps(j, ensure_ascii=False, indent=1))


def decode_seqs(tok, texts, ids_sp, rng):
    # (decodings are variable-length strings that HDF5 does not compress: short texts only)
    seqs = [ids_sp[i] for i in range(0, len(ids_sp), 3) if len(texts[i].encode()) < 300][:80]
    V = len(tok)
    for _ in range(150):
        seqs.append([rng.randrange(V) for _ in range(rng.randint(1, 30))])
    vocab = tok.get_vocab()
    if "<0xC3>" in vocab:
        b = lambda x: vocab["<0x%02X>" % x]  # noqa: E731
        w = vocab.get("▁the", vocab["▁"])
        seqs += [[b(0xC3), b(0xA9)], [b(0xC3)], [b(0xC3), w, b(0xA9)], [b(0xE2), b(0x96), b(0x81)],
                 [1, b(0x41), b(0x42), 2], [vocab["▁"], vocab["▁"], b(0x78)], [w, w, b(0xFF), b(0x41)],
                 [b(0xF0), b(0x9F), b(0x98), b(0x80), w], [1, w], [2, 1, 0]]
    return seqs


def goldens(h, form, tok, texts, rng, add_special=None):
    """add_special: ids -> ids with special tokens, where the file's flags are not
    transformers' (its GGUF loader always adds BOS and never EOS)."""
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    ids_sp = [add_special(x) if add_special else tok(t, add_special_tokens=True)["input_ids"]
              for x, t in zip(ids, texts)]
    seqs = decode_seqs(tok, texts, ids_sp, rng)

    def dec(s, skip):
        return tok.decode(s, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
    # (a NUL byte cannot be stored in an HDF5 string: sequences that decode to one are left out)
    seqs = [s for s in seqs if "\0" not in dec(s, False) + dec(s, True)]
    g = h.create_group(form)
    write_flat(g, "ids", ids)
    write_flat(g, "ids_special", ids_sp)
    write_flat(g, "decode_ids", seqs)
    str_dataset(g, "decoded", [dec(s, False) for s in seqs])
    str_dataset(g, "decoded_skip", [dec(s, True) for s in seqs])
    print(f"{form}: vocab {len(tok)}, {sum(map(len, ids))} ids, {len(seqs)} decodings")
    return ids_sp


SCORE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.", "  two leading spaces", "trailing  ",
    "Café, naïve résumé — déjà vu à Noël", "北京欢迎你。東京は日本の首都です。",
    "emoji 👋🏽 and 🦀 outside the vocabulary", "numbers 1234567890 and 3.14159",
    "line one\nline two\n\ttabbed", "<s> literal specials </s> inside", "ꙮ ᚠᛇᚻ 𓀀 𝄞",
    "def f(x):\n    return x ** 2  # comment", "a", "▁ already a meta space",
]
PROMPTS = ["Once upon a time", "The capital of France is", "数字", "x = [1, 2,", "Hello", " "]
N_GREEDY = 8


def tiny_model(legacy_json):
    """The tiny Mistral checkpoint with the legacy tokenizer, and transformers' scores."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast
    d = os.path.join(OUT, "model")
    if os.path.isdir(d):
        shutil.rmtree(d)
    cfg = MistralConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=1, eos_token_id=2,
                        tie_word_embeddings=True, rope_theta=10000.0, sliding_window=None,
                        attn_implementation="eager")
    torch.manual_seed(4242)
    model = MistralForCausalLM(cfg)
    g = torch.Generator().manual_seed(4242)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1.0 + r if name.endswith("norm.weight") else r)
    model.save_pretrained(d, safe_serialization=True)
    for extra in os.listdir(d):
        if extra not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, extra))
    shutil.copyfile(legacy_json, os.path.join(d, "tokenizer.json"))
    model = MistralForCausalLM.from_pretrained(d, torch_dtype=torch.float32,
                                               attn_implementation="eager").eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))

    @torch.no_grad()
    def logits(ids):
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()

    ids = [tok(t)["input_ids"] for t in SCORE_TEXTS]
    sums = []
    for x in ids:
        lsm = torch.log_softmax(logits(x), -1)
        sums.append(float(sum(float(lsm[t - 1, x[t]]) for t in range(1, len(x)))))
    g_ids, g_gap, g_text = [], [], []
    for p in PROMPTS:
        x = tok(p)["input_ids"]
        out, gaps = [], []
        for _ in range(N_GREEDY):
            lg = logits(x + out)[-1]
            top = torch.topk(lg, 2)
            out.append(int(top.indices[0]))
            gaps.append(float(top.values[0] - top.values[1]))
        g_ids.append(out)
        g_gap.append(gaps)
        g_text.append(tok.decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    L = max(map(len, ids))
    with h5py.File(os.path.join(OUT, "model_goldens.h5"), "w") as h:
        str_dataset(h, "score_texts", SCORE_TEXTS)
        h.create_dataset("score_ids", data=np.array([x + [-1] * (L - len(x)) for x in ids],
                                                    np.int32))
        h.create_dataset("score_lengths", data=np.array([len(x) for x in ids], np.int32))
        h.create_dataset("score_n_tokens", data=np.array([len(x) - 1 for x in ids], np.int32))
        h.create_dataset("score_sum_logprob", data=np.array(sums, np.float32))
        str_dataset(h, "prompts", PROMPTS)
        h.create_dataset("greedy_ids", data=np.array(g_ids, np.int32))
        h.create_dataset("greedy_gap", data=np.array(g_gap, np.float32))
        str_dataset(h, "greedy_text", g_text)
        h.attrs["torch"] = str(torch.__version__)
        ids, sums = tiny_kquant_model(SCORE_TEXTS)
        L = max(map(len, ids))
        q = h.create_group("gguf")
        q.create_dataset("score_ids", data=np.array([x + [-1] * (L - len(x)) for x in ids],
                                                    np.int32))
        q.create_dataset("score_lengths", data=np.array([len(x) for x in ids], np.int32))
        q.create_dataset("score_n_tokens", data=np.array([len(x) - 1 for x in ids], np.int32))
        q.create_dataset("score_sum_logprob", data=np.array(sums, np.float32))
    print(f"tiny model: {len(ids)} scored texts, greedy texts {g_text}, "
          f"smallest greedy gap {min(map(min, g_gap)):.3g}")


def kquant_tensor(rng, qtype, rows, cols, std=0.06):
    """rows x cols random K-quant super-blocks with one f16 (d, dmin) per tensor, chosen so that
    the dequantised values have mean ~0 and the given std (values are linear in d and dmin)."""
    import gguf
    from gguf import GGMLQuantizationType as T
    nbytes, at = {T.Q2_K: (84, (80, 82)), T.Q3_K: (110, (108,)), T.Q4_K: (144, (0, 2)),
                  T.Q5_K: (176, (0, 2)), T.Q6_K: (210, (208,))}[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // 256, nbytes), dtype=np.uint8)

    def with_scales(*vals):
        b = blocks.copy()
        for off, v in zip(at, vals):
            b[:, off:off + 2] = np.frombuffer(np.float16(v).tobytes(), np.uint8)
        return b

    def values(b):
        return gguf.quants.dequantize(b, qtype).astype(np.float64)
    a = values(with_scales(1.0, 0.0))
    dmin = 0.0
    if len(at) == 2:  # a minimum to subtract: zero the mean
        dmin = -a.mean() / values(with_scales(0.0, 1.0)).mean()
    k = std / (a + dmin * values(with_scales(0.0, 1.0)) if dmin else a).std()
    return with_scales(k, k * dmin).reshape(rows, cols // 256 * nbytes)


def tiny_kquant_model(texts):
    """tiny_kquant.gguf and transformers' scores of texts through it."""
    import gguf
    import torch
    from gguf import GGMLQuantizationType as T
    from transformers import AutoModelForCausalLM, AutoTokenizer
    H, F, V, L, NH, NKV = 256, 512, 1000, 2, 4, 2
    rng = np.random.default_rng(20261206)
    src = gguf.GGUFReader(os.path.join(OUT, "tokenizer.gguf"))
    path = os.path.join(OUT, "tiny_kquant.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("tiny kquant")
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_dimension_count(H // NH)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    copy_tokenizer(src, w)  # the SentencePiece tokenizer
    KV = H // NH * NKV
    mats = {"attn_q": (T.Q4_K, H, H), "attn_k": (T.Q4_K, KV, H), "attn_v": (T.Q6_K, KV, H),
            "attn_output": (T.Q5_K, H, H), "ffn_gate": (T.Q3_K, F, H), "ffn_up": (T.Q2_K, F, H),
            "ffn_down": (T.Q6_K, H, F)}
    w.add_tensor("token_embd.weight", kquant_tensor(rng, T.Q4_K, V, H, 1.0), raw_dtype=T.Q4_K)
    for i in range(L):
        for n in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{n}.weight",
                         (1.0 + 0.2 * rng.standard_normal(H)).astype(np.float32))
        for n, (qt, rows, cols) in mats.items():
            w.add_tensor(f"blk.{i}.{n}.weight", kquant_tensor(rng, qt, rows, cols), raw_dtype=qt)
    w.add_tensor("output_norm.weight", (1.0 + 0.2 * rng.standard_normal(H)).astype(np.float32))
    w.add_tensor("output.weight", kquant_tensor(rng, T.Q6_K, V, H), raw_dtype=T.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    tmp = tempfile.mkdtemp()
    try:
        shutil.copy(path, os.path.join(tmp, "m.gguf"))
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file="m.gguf")
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file="m.gguf",
                                                     torch_dtype=torch.float32,
                                                     attn_implementation="eager").eval()
    finally:
        shutil.rmtree(tmp)
    assert not model.config.tie_word_embeddings
    ids = [tok(t)["input_ids"] for t in texts]
    sums = []
    with torch.no_grad():
        for x in ids:
            lsm = torch.log_softmax(model(input_ids=torch.tensor([x])).logits[0].float(), -1)
            sums.append(float(sum(float(lsm[t - 1, x[t]]) for t in range(1, len(x)))))
    print(f"tiny_kquant.gguf: {os.path.getsize(path)} bytes, mean log-prob per token "
          f"{sum(sums) / sum(len(x) - 1 for x in ids):.3f}")
    return ids, sums


def main():
    import sentencepiece
    import tokenizers
    import transformers
    from transformers import PreTrainedTokenizerFast

    base = corpus()
    texts = base + [t for t in EXTRA if t not in set(base)]
    os.makedirs(OUT, exist_ok=True)
    model = train(base)
    paths = json_forms(model)
    gguf_path = write_gguf(model)
    gguf_tok, paths["from_gguf"] = from_gguf(gguf_path, "from_gguf")
    noprefix_tok, _ = from_gguf(write_gguf(model, "tokenizer_noprefix.gguf", add_bos=False,
                                           add_eos=True, add_space_prefix=False), None)
    _, paths["gpt2_from_gguf"] = from_gguf(os.path.join(HERE, "bpe_tiny", "gpt2",
                                                        "tokenizer.gguf"), "gpt2_from_gguf")
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    with h5py.File(os.path.join(OUT, "goldens.h5"), "w") as h:
        str_dataset(h, "text", texts)
        for form in FORMS:
            special = None
            if form == "gguf":
                tok = gguf_tok
            elif form == "gguf_noprefix":
                tok = noprefix_tok
                special = lambda x: x + [2]  # noqa: E731  (add_bos false, add_eos true)
            else:
                tok = PreTrainedTokenizerFast(tokenizer_file=paths[form])
            ids_sp = goldens(h, form, tok, texts, random.Random(FORMS.index(form)), special)
            if form == "legacy":
                agree = sum(ids_sp[i] == [1] + sp.encode(t) for i, t in enumerate(texts))
                h.attrs["sp_agree"] = agree
                print(f"legacy vs sentencepiece: {agree} of {len(texts)} texts agree")
        h.attrs["n_texts"] = len(texts)
        h.attrs["transformers"] = transformers.__version__
        h.attrs["tokenizers"] = tokenizers.__version__
        h.attrs["sentencepiece"] = sentencepiece.__version__
    tiny_model(paths["legacy"])


if __name__ == "__main__":
    sys.exit(main())
