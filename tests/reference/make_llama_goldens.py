#!/usr/bin/env python3
"""make_llama_goldens.py — reference outputs of PyTorch + transformers for the LLaMA-family decoders.

Produces (all committed, so the test suite needs no PyTorch):

  tests/reference/goldens/smollm2_goldens.h5
      SmolLM2-135M-Instruct, Q4_1 GGUF (scripts/install-models.sh writes its path to
      build/models/smollm2.path), loaded by transformers (every tensor dequantised to float32,
      GGUF's q/k row permutation undone) and run in float32 on the CPU, eager attention,
      batch of one, no padding, no attention mask, positions 0..n-1.

      Tokenization.  Every text is encoded with the tokenizer transformers builds from the GGUF
      file, with its default special-token behaviour: tok(text).input_ids.  That tokenizer
      PREPENDS BOS (id 1, "<|im_start|>") to every text, although the GGUF file says
      tokenizer.ggml.add_bos_token = false (attributes bos_added and gguf_add_bos_token).  So
      for every text here: ids = [1] + bpe(text), where bpe(text) = tok(text,
      add_special_tokens=False).input_ids (special tokens written in the text, e.g.
      "<|im_start|>", are matched as whole tokens).  No EOS is appended.

      /prompts               UTF-8 strings [P]; /prompt_kinds (english, code, list, chat,
                             non_english, numbers)
      /prompt_ids            int32 [P, Lmax], padded with -1; /prompt_lengths int32 [P]
      /last_logits           float32 [P, V]: logits at the last prompt position (n-1)
      /logits_all_pos/ids    int32 [4, Lmax, 64]: for the first 4 prompts and every position t,
                             the ids of the 64 largest logits at t (descending, ties by lower
                             id), padded with -1 past the prompt's length
      /logits_all_pos/values float32 [4, Lmax, 64]: those logits, padded with NaN
      Scoring of a text (/score_*): ids = tok(text).input_ids (n tokens, BOS included); the
      scored tokens are positions 1..n-1; lp[t] = log_softmax(logits[t-1])[ids[t]] (natural log,
      log_softmax in float32 over the model's float32 logits);
          sum_logprob = sum_t lp[t],  n_tokens = n-1,  mean_logprob = sum_logprob / n_tokens,
          perplexity = exp(-mean_logprob)
      /score_texts [S], /score_ids int32 [S, Lmax] (-1 padded), /score_lengths int32 [S] (= n),
      /score_sum_logprob f32 [S], /score_n_tokens int32 [S], /score_mean_logprob f32 [S],
      /score_perplexity f32 [S], /score_token_logprobs f32 [S, Lmax-1] (lp[1..n-1], NaN padded)
      Scoring of a prompt/continuation pair (/pair_*): the two strings are tokenized
      SEPARATELY and the id lists joined:
          ids = tok(prompt).input_ids + tok(continuation, add_special_tokens=False).input_ids
      (BOS once, at the start; no merge across the boundary; no space is inserted — the
      continuations carry their own leading space).  With m = len(tok(prompt).input_ids) only
      the continuation's tokens, positions m..n-1, are scored; n_tokens = n-m; the other
      quantities as above.
      /score_prompts, /score_conts [C], /pair_ids int32 [C, Lmax], /pair_lengths (n),
      /pair_prompt_lengths (m), /pair_sum_logprob, /pair_n_tokens, /pair_mean_logprob,
      /pair_perplexity, /pair_token_logprobs f32 [C, Lmax] (lp[m..n-1], NaN padded),
      /pair_joint_tokenization_same int8 [C]: 1 where tok(prompt + continuation) gives the same
      ids (the last pair, "is" + "n't", is one where it does not)
      Greedy generation from every prompt: model.generate(ids, do_sample=False,
      max_new_tokens=32, eos_token_id=None) (KV cache, no stop at EOS: every row has 32 tokens)
      /greedy_ids int32 [P, 32], /greedy_text [P] (tok.decode(greedy_ids, skip_special_tokens=True)),
      /greedy_gap f32 [P, 32]: raw logit of the chosen token minus the runner-up's at that step,
      /greedy_runner_up int32 [P, 32]: the runner-up's id.
      Attributes: model file name, sha256, versions, config values, bos/eos ids, the GGUF
      tokenizer's pre-type, the definitions above.

  tests/reference/tiny_llama/<name>/{config.json, model.safetensors}
      small random checkpoints (hidden 64, 2 layers, 4 heads, 2 KV heads, intermediate 96,
      vocab 256, max positions 128; every parameter drawn from a seeded normal, std 0.2, RMSNorm
      weights 1 + N(0, 0.2), biases N(0, 0.2)) saved with save_pretrained(safe_serialization=True):
        llama3_scaled       LlamaForCausalLM, untied, rope_theta 500000, rope_scaling llama3
                            (factor 8, low 1, high 4, original_max_position_embeddings 64: with
                            head_dim 16 this leaves 1 frequency alone, smooths 1, divides 6)
        linear_scaled_tied  LlamaForCausalLM, tied, rope_scaling linear factor 2
        qwen2_bias          Qwen2ForCausalLM (q/k/v biases), tied, rope_theta 1e6
        mistral             MistralForCausalLM, sliding_window null, head_dim 32 (4 heads x 32
                            = 128 != hidden 64)
        rope_parameters     llama3_scaled's model.safetensors, with a config.json that states the
                            rope settings the newer way ("rope_parameters": {"rope_type": "llama3",
                            "rope_theta": 500000, ...}; no rope_theta / rope_scaling keys);
                            its goldens are llama3_scaled's (transformers 4.47 does not read
                            rope_parameters, so the logits come from llama3_scaled)
  tests/reference/goldens/tiny_llama_goldens.h5
      one group per model: input_ids int32 [3, 33] (lengths 5, 17, 33; seeded random ids,
      -1 padded), lengths int32 [3], logits float32 [3, 33, 256] (full logits at every
      position, NaN padded), inv_freq float32 [head_dim/2] (the RoPE inverse frequencies the
      model uses, after scaling), inv_freq_unscaled; attributes: the config as JSON, the
      safetensors tensor names.

Notes on how transformers 4.47.1 reads the GGUF file (they matter when comparing):
  * q/k: llama.cpp's converter permutes the rows of attn_q / attn_k of each head from the
    "rotate halves" layout to interleaved pairs; transformers undoes it per head with
    w.reshape(n_head, head_dim/2, 2, in).swapaxes(1, 2) (n_head = 9 for q, 3 for k).  So the
    logits here are those of the usual rotate-half RoPE on the un-permuted weights, which is
    the same function as interleaved-pair RoPE on the weights as stored in the GGUF.
  * token_embd is Q8_0 and there is no output.weight: the LM head is the embedding (tied).
  * the tokenizer it builds has BOS added (see above) and reports eos_token_id 1
    (<|im_start|>; a slip in its GGUF converter) while the model config says eos 2
    (<|im_end|>) as the GGUF does; the goldens use neither, since generation never stops early.
  * the chat prompts therefore start with two <|im_start|> tokens (BOS, then the template's).

Set-up (Debian bookworm, the venv of make_bert_goldens.py):
  /tmp/slref/bin/pip install transformers==4.47.1 "gguf>=0.10.0" accelerate==0.34.2 "jinja2>=3.1"
      (gguf: 0.19.0 made these files; 0.10.0 needs sentencepiece installed to import)
      (accelerate: needed by transformers to load GGUF; 0.34 is the last line that accepts
       torch 1.13; jinja2: for the chat template)
  scripts/install-models.sh      (SmolLM2 GGUF, writes build/models/smollm2.path)

Run (from the repository root; about 5 minutes on 2 cores):
  OMP_NUM_THREADS=2 /tmp/slref/bin/python tests/reference/make_llama_goldens.py
  options: --gguf PATH (default: the path in build/models/smollm2.path), --threads N,
           --skip-smollm / --skip-tiny
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys

import h5py
import numpy as np
import torch

import gguf
import tokenizers
import transformers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

# generate() asks whether the model is FSDP-managed, which imports torch.distributed.fsdp; with
# torch 1.13 under Python 3.11 that import fails (a dataclass with a mutable default).  Nothing
# here is distributed, so answer "no" directly.
import transformers.generation.utils as _gen_utils  # noqa: E402
_gen_utils.is_fsdp_managed_module = lambda module: False

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GOLD = os.path.join(HERE, "goldens")
TINY = os.path.join(HERE, "tiny_llama")
N_GREEDY = 32
TOPK = 64
N_ALLPOS = 4
STR = h5py.string_dtype("utf-8")
GZ = dict(compression="gzip", compression_opts=9, shuffle=True)

# --------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------
PROMPTS = [  # (kind, text); "chat" texts are replaced by the chat template's rendering
    ("english", "The capital of France is"),
    ("english", "Water boils at a temperature of"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("list", "Shopping list:\n1. Milk\n2. Eggs\n3."),
    ("chat", "Give me three tips for staying focused while studying."),
    ("non_english", "La capitale de l'Allemagne est"),
    ("numbers", "1, 2, 3, 5, 8, 13, 21,"),
    ("english", "The largest planet in our solar system is"),
    ("english", "Once upon a time, in a small village near the mountains,"),
    ("english", "Photosynthesis is the process by which plants"),
    ("code", "#include <stdio.h>\n\nint main(void) {\n    printf(\""),
    ("code", "SELECT name, age FROM users WHERE"),
    ("list", "Steps to make a cup of tea:\n- Boil water\n-"),
    ("chat", "What is the boiling point of water in Fahrenheit?"),
    ("non_english", "El sol sale por el este y se pone por el"),
    ("non_english", "Der schnellste Weg nach Berlin ist"),
    ("numbers", "The year 2024 had 366 days, and 3.14159 is approximately"),
    ("numbers", "12 + 30 ="),
    ("english", "The most important rule of writing clean code is"),
    ("english", "In 1969, Neil Armstrong became the first person to"),
    ("english", "The quick brown fox"),
    ("code", "import numpy as np\n\nx = np.arange(10)\ny ="),
    ("english", "Regular exercise is good for your health because"),
    ("non_english", "Il était une fois un petit chat qui"),
    ("english", "A haiku about the ocean:\n"),
    ("numbers", "Temperature readings: 21.5, 22.0, 22.4, 23.1,"),
]
PLAIN_KINDS = ("english",)

LONG_TEXT = (
    "The history of the printing press is a story about how ideas travel. Before movable type "
    "arrived in Europe in the fifteenth century, books were copied by hand, usually by monks or "
    "professional scribes who spent months on a single volume. A book was therefore a precious "
    "object, owned by monasteries, universities and a few wealthy families. Johannes Gutenberg, "
    "a goldsmith from Mainz, combined several existing technologies into a practical system: "
    "metal type cast in a hand mould, an oil-based ink that stuck to metal, and a screw press "
    "adapted from those used to make wine and olive oil. His Bible, finished around 1455, showed "
    "that printed pages could be as beautiful as manuscripts. Within fifty years, printing shops "
    "had opened in more than two hundred European cities, and millions of books were in "
    "circulation. Prices fell, literacy rose, and scholars could compare identical copies of the "
    "same text, which made errors easier to find and correct. The Reformation, the scientific "
    "revolution and the rise of newspapers all depended on cheap printed paper. Governments and "
    "churches soon tried to control what could be printed, introducing licences and lists of "
    "forbidden books, but the flow of pamphlets proved hard to stop. Historians still debate how "
    "quickly these changes happened, yet few doubt that the press transformed the way people "
    "learned, argued and remembered. Today, when a message can cross the world in a fraction of "
    "a second, it is worth remembering that the first information revolution began with a "
    "wooden press, a tray of metal letters and a craftsman who was almost always short of money."
)

SCORE_TEXTS = [
    "The cat sat on the mat.",
    "Paris is the capital and most populous city of France.",
    "The sun rises in the east and sets in the west.",
    "Water is made of hydrogen and oxygen.",
    "She opened the window to let some fresh air into the room.",
    "Machine learning models learn patterns from data.",
    "The train was late, so we missed the beginning of the concert.",
    "Please remember to bring your passport to the airport.",
    "Good morning!",
    "Hello",
    "Yes.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "The library closes at eight o'clock on weekdays and at noon on Saturdays.",
    "Scientists have discovered a new species of frog in the rainforest.",
    "He poured the coffee, added a little milk, and sat down to read the newspaper.",
    "Children learn languages more easily than adults.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "A healthy diet includes plenty of fruit and vegetables.",
    "The meeting has been moved to Thursday afternoon.",
    "Mount Everest is the highest mountain on Earth.",
    "The museum is free for students on the first Sunday of every month.",
    "After the storm, the streets were covered with fallen leaves.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) {\n    sum += a[i];\n}",
    "import os\nprint(os.getcwd())",
    "<html><body><p>Hello, world!</p></body></html>",
    "1 2 3 4 5 6 7 8 9 10",
    "The total is $1,234.56, due on 2024-03-15.",
    "3.14159265358979323846",
    "Le chat dort sur le canapé.",
    "Die Katze schläft auf dem Sofa.",
    "El perro corre en el parque.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "colorless green ideas sleep furiously",
    "the the the the the the the the",
    "zxqv plmok wertyu asdfgh",
    "To be, or not to be, that is the question.",
    "I think, therefore I am.",
    "Knowledge is power.",
    "Emojis 😀🎉 and accents: café, naïve, résumé.",
    LONG_TEXT,
]
# plain English sentences of 9+ tokens whose perplexity is checked against a sane range
# (a 135M model scores very short texts without context harshly, e.g. "The cat sat on the
# mat." has perplexity ~400, so those are left out of the check)
PLAIN_SCORE = [1, 2, 3, 4, 6, 7, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 37, len(SCORE_TEXTS) - 1]

SCORE_PAIRS = [
    ("The capital of France is", " Paris."),
    ("The capital of France is", " Berlin."),
    ("The capital of France is", " a banana."),
    ("Water boils at", " 100 degrees Celsius."),
    ("Water boils at", " 10 degrees Celsius."),
    ("2 + 2 =", " 4"),
    ("2 + 2 =", " 5"),
    ("The opposite of hot is", " cold."),
    ("The opposite of hot is", " blue."),
    ("def square(x):\n    return", " x * x"),
    ("Question: What color is the sky on a clear day?\nAnswer:", " Blue."),
    ("Question: What color is the sky on a clear day?\nAnswer:", " Green."),
    ("Bonjour, je m'appelle", " Marie."),
    ("The days of the week are Monday, Tuesday,", " Wednesday, Thursday, Friday."),
    ("Once upon a time", ", there was a little girl who lived in a village near the forest."),
    ("My favourite fruit is", "n't"),
]

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def pad2(rows, fill, dtype, width=None):
    width = width if width is not None else max(len(r) for r in rows)
    out = np.full((len(rows), max(width, 1)), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


@torch.no_grad()
def forward_logits(model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    return model(input_ids=x, use_cache=False).logits[0].float()  # [n, V]


def token_logprobs(logits, ids, start):
    """lp[t] = log_softmax(logits[t-1])[ids[t]] for t = start..n-1 (float32, natural log)."""
    lsm = torch.log_softmax(logits.float(), dim=-1)
    t = torch.arange(start, len(ids))
    return lsm[t - 1, torch.tensor(ids)[t]].numpy().astype(np.float32)


def stats(lp):
    s = float(np.sum(lp.astype(np.float64)))
    n = len(lp)
    mean = s / n
    return s, n, mean, math.exp(-mean)


def readable(text):
    """Plain-prompt continuation looks like text: letters, several words, not one token repeated."""
    t = text.strip()
    if len(t) < 10:
        return False
    good = sum(c.isalpha() or c.isspace() or c in ".,;:'\"!?-()0123456789" for c in t)
    words = t.split()
    return good / len(t) > 0.85 and len(words) >= 4 and len(set(words)) >= 3


def gguf_field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # older gguf-py without contents()
        v = f.parts[f.data[0]]
        return bytes(v).decode() if v.dtype == np.uint8 else v.tolist()[0]


# --------------------------------------------------------------------------------------------
# SmolLM2
# --------------------------------------------------------------------------------------------


def smollm(gguf_path):
    d, name = os.path.split(os.path.abspath(gguf_path))
    reader = gguf.GGUFReader(gguf_path)
    g_pre = gguf_field(reader, "tokenizer.ggml.pre")
    g_add_bos = gguf_field(reader, "tokenizer.ggml.add_bos_token")
    g_bos = gguf_field(reader, "tokenizer.ggml.bos_token_id")
    g_eos = gguf_field(reader, "tokenizer.ggml.eos_token_id")
    g_pad = gguf_field(reader, "tokenizer.ggml.padding_token_id")
    g_unk = gguf_field(reader, "tokenizer.ggml.unknown_token_id")
    g_types = sorted({t.tensor_type.name for t in reader.tensors})
    del reader

    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    cfg = model.config
    assert cfg.hidden_size == 576 and cfg.num_hidden_layers == 30, cfg
    assert cfg.num_attention_heads == 9 and cfg.num_key_value_heads == 3, cfg
    assert cfg.vocab_size == 49152 and cfg.intermediate_size == 1536, cfg
    assert cfg.rope_theta == 100000.0 and abs(cfg.rms_norm_eps - 1e-5) < 1e-9, cfg
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert cfg.rope_scaling is None
    V = cfg.vocab_size

    bos_added = tok("x").input_ids[0] == tok.bos_token_id
    assert tok.bos_token_id == 1 and bos_added

    # the same BPE with llama.cpp's "smollm" pre-tokenizer (each digit split off first, then
    # the GPT-2 regex): does the transformers tokenizer agree with it on our texts?
    ref_tok = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
    ref_tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Digits(individual_digits=True),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])

    def enc(text, specials=True):
        return tok(text, add_special_tokens=specials).input_ids

    prompts, kinds = [], []
    for kind, text in PROMPTS:
        if kind == "chat":
            text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
        prompts.append(text)
        kinds.append(kind)
    P = len(prompts)
    prompt_ids = [enc(t) for t in prompts]

    all_texts = prompts + SCORE_TEXTS + [p for p, _ in SCORE_PAIRS] + [c for _, c in SCORE_PAIRS]
    mismatch = [t for t in all_texts
                if ref_tok.encode(t, add_special_tokens=False).ids != enc(t, specials=False)]

    # ---- prompts: last logits, top-k at every position of the first prompts ----
    last = np.zeros((P, V), np.float32)
    Lp = max(len(x) for x in prompt_ids)
    top_ids = np.full((N_ALLPOS, Lp, TOPK), -1, np.int32)
    top_val = np.full((N_ALLPOS, Lp, TOPK), np.nan, np.float32)
    for i, ids in enumerate(prompt_ids):
        lg = forward_logits(model, ids)
        last[i] = lg[-1].numpy()
        if i < N_ALLPOS:
            # stable descending sort: ties broken by the lower id
            order = np.argsort(-lg.numpy(), axis=-1, kind="stable")[:, :TOPK]
            top_ids[i, :len(ids)] = order
            top_val[i, :len(ids)] = np.take_along_axis(lg.numpy(), order, axis=-1)

    # ---- greedy ----
    g_ids = np.zeros((P, N_GREEDY), np.int32)
    g_gap = np.zeros((P, N_GREEDY), np.float32)
    g_run = np.zeros((P, N_GREEDY), np.int32)
    g_text = []
    for i, ids in enumerate(prompt_ids):
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=N_GREEDY, eos_token_id=None, pad_token_id=cfg.pad_token_id,
                                 return_dict_in_generate=True, output_logits=True)
        new = out.sequences[0, len(ids):].numpy()
        assert len(new) == N_GREEDY and len(out.logits) == N_GREEDY, (i, len(new))
        for s, lg in enumerate(out.logits):
            lg = lg[0].float()
            v, ix = torch.topk(lg, 2)
            assert int(ix[0]) == int(new[s]) or float(v[0] - lg[new[s]]) == 0.0, (i, s)
            g_gap[i, s] = float(lg[new[s]] - v[1]) if int(ix[0]) == int(new[s]) else 0.0
            g_run[i, s] = int(ix[1]) if int(ix[0]) == int(new[s]) else int(ix[0])
        # the cached first step sees the same logits as the full forward pass
        assert float((out.logits[0][0] - torch.from_numpy(last[i])).abs().max()) < 1e-3
        g_ids[i] = new
        g_text.append(tok.decode(new.tolist(), skip_special_tokens=True))
    for i in range(P):
        if kinds[i] in PLAIN_KINDS:
            assert readable(g_text[i]), (prompts[i], g_text[i])

    # ---- scoring ----
    s_ids = [enc(t) for t in SCORE_TEXTS]
    assert max(len(x) for x in s_ids) > 300
    s_lp = []
    for ids in s_ids:
        s_lp.append(token_logprobs(forward_logits(model, ids), ids, 1))
    s_st = [stats(lp) for lp in s_lp]
    for i in PLAIN_SCORE:
        assert 5.0 < s_st[i][3] < 200.0, (SCORE_TEXTS[i], s_st[i])
    assert 2.0 < s_st[SCORE_TEXTS.index(LONG_TEXT)][3] < 60.0

    p_ids, p_m, p_lp, p_joint = [], [], [], []
    for pr, co in SCORE_PAIRS:
        a, b = enc(pr), enc(co, specials=False)
        ids = a + b
        p_joint.append(int(enc(pr + co) == ids))
        p_ids.append(ids)
        p_m.append(len(a))
        p_lp.append(token_logprobs(forward_logits(model, ids), ids, len(a)))
    p_st = [stats(lp) for lp in p_lp]
    # the right answer beats the wrong ones
    assert p_st[0][0] > p_st[1][0] > p_st[2][0]
    assert p_st[5][0] > p_st[6][0] and p_st[7][0] > p_st[8][0]
    assert not p_joint[-1] and all(p_joint[:-1]), p_joint

    # ---- write ----
    os.makedirs(GOLD, exist_ok=True)
    out_path = os.path.join(GOLD, "smollm2_goldens.h5")
    with h5py.File(out_path, "w") as f:
        f.create_dataset("prompts", data=np.array(prompts, dtype=object), dtype=STR)
        f.create_dataset("prompt_kinds", data=np.array(kinds, dtype=object), dtype=STR)
        f.create_dataset("prompt_ids", data=pad2(prompt_ids, -1, np.int32), **GZ)
        f.create_dataset("prompt_lengths", data=np.array([len(x) for x in prompt_ids], np.int32))
        f.create_dataset("last_logits", data=last, **GZ)
        g = f.create_group("logits_all_pos")
        g.create_dataset("ids", data=top_ids, **GZ)
        g.create_dataset("values", data=top_val, **GZ)
        g.attrs["prompts"] = "the first %d prompts, every position < prompt_lengths[i]" % N_ALLPOS
        g.attrs["k"] = TOPK
        g.attrs["order"] = "descending logit, ties by lower id; -1 / NaN past the length"

        f.create_dataset("score_texts", data=np.array(SCORE_TEXTS, dtype=object), dtype=STR)
        f.create_dataset("score_ids", data=pad2(s_ids, -1, np.int32), **GZ)
        f.create_dataset("score_lengths", data=np.array([len(x) for x in s_ids], np.int32))
        f.create_dataset("score_sum_logprob", data=np.array([s[0] for s in s_st], np.float32))
        f.create_dataset("score_n_tokens", data=np.array([s[1] for s in s_st], np.int32))
        f.create_dataset("score_mean_logprob", data=np.array([s[2] for s in s_st], np.float32))
        f.create_dataset("score_perplexity", data=np.array([s[3] for s in s_st], np.float32))
        f.create_dataset("score_token_logprobs", data=pad2(s_lp, np.nan, np.float32), **GZ)

        f.create_dataset("score_prompts", data=np.array([p for p, _ in SCORE_PAIRS], dtype=object), dtype=STR)
        f.create_dataset("score_conts", data=np.array([c for _, c in SCORE_PAIRS], dtype=object), dtype=STR)
        f.create_dataset("pair_ids", data=pad2(p_ids, -1, np.int32), **GZ)
        f.create_dataset("pair_lengths", data=np.array([len(x) for x in p_ids], np.int32))
        f.create_dataset("pair_prompt_lengths", data=np.array(p_m, np.int32))
        f.create_dataset("pair_joint_tokenization_same", data=np.array(p_joint, np.int8))
        f.create_dataset("pair_sum_logprob", data=np.array([s[0] for s in p_st], np.float32))
        f.create_dataset("pair_n_tokens", data=np.array([s[1] for s in p_st], np.int32))
        f.create_dataset("pair_mean_logprob", data=np.array([s[2] for s in p_st], np.float32))
        f.create_dataset("pair_perplexity", data=np.array([s[3] for s in p_st], np.float32))
        f.create_dataset("pair_token_logprobs", data=pad2(p_lp, np.nan, np.float32), **GZ)

        f.create_dataset("greedy_ids", data=g_ids, **GZ)
        f.create_dataset("greedy_text", data=np.array(g_text, dtype=object), dtype=STR)
        f.create_dataset("greedy_gap", data=g_gap, **GZ)
        f.create_dataset("greedy_runner_up", data=g_run, **GZ)

        a = f.attrs
        a["model_file"] = name
        a["model_sha256"] = sha256(gguf_path)
        a["gguf_tensor_types"] = ",".join(g_types)
        a["transformers_version"] = str(transformers.__version__)
        a["torch_version"] = str(torch.__version__)
        a["gguf_version"] = getattr(gguf, "__version__", None) or _dist_version("gguf")
        a["tokenizers_version"] = tokenizers.__version__
        a["dtype"] = "float32, CPU, eager attention, batch 1, no padding"
        a["hidden_size"] = cfg.hidden_size
        a["num_hidden_layers"] = cfg.num_hidden_layers
        a["num_attention_heads"] = cfg.num_attention_heads
        a["num_key_value_heads"] = cfg.num_key_value_heads
        a["head_dim"] = cfg.hidden_size // cfg.num_attention_heads
        a["intermediate_size"] = cfg.intermediate_size
        a["rope_theta"] = float(cfg.rope_theta)
        a["rms_norm_eps"] = float(cfg.rms_norm_eps)
        a["vocab_size"] = V
        a["tie_word_embeddings"] = int(cfg.tie_word_embeddings)
        a["max_position_embeddings"] = cfg.max_position_embeddings
        a["bos_token_id"] = int(cfg.bos_token_id)
        a["eos_token_id"] = int(cfg.eos_token_id)
        a["pad_token_id"] = int(cfg.pad_token_id)
        a["gguf_bos_token_id"] = int(g_bos)
        a["gguf_eos_token_id"] = int(g_eos)
        a["gguf_padding_token_id"] = int(g_pad) if g_pad is not None else -1
        a["gguf_unknown_token_id"] = int(g_unk) if g_unk is not None else -1
        a["gguf_tokenizer_pre"] = str(g_pre)
        a["gguf_add_bos_token"] = int(bool(g_add_bos))
        a["hf_tokenizer_eos_token_id"] = int(tok.eos_token_id)
        a["bos_added"] = int(bos_added)
        a["tokenization"] = ("ids = tok(text).input_ids with the tokenizer transformers builds from "
                             "the GGUF file; it prepends BOS (id 1) to every text although the GGUF "
                             "says add_bos_token=false; no EOS appended")
        a["pretokenizer_matches_smollm_digits"] = int(not mismatch)
        a["score_definition"] = ("scored positions t=1..n-1 of ids (BOS at 0); lp[t] = "
                                 "log_softmax(logits[t-1], float32)[ids[t]], natural log; "
                                 "n_tokens=n-1; mean=sum/n_tokens; perplexity=exp(-mean)")
        a["pair_tokenization"] = ("prompt and continuation tokenized separately, then joined: "
                                  "ids = tok(prompt).input_ids (with BOS) + tok(continuation, "
                                  "add_special_tokens=False).input_ids; no space inserted; "
                                  "scored positions m..n-1 where m = len(tok(prompt).input_ids)")
        a["greedy_definition"] = ("model.generate(do_sample=False, max_new_tokens=32, "
                                  "eos_token_id=None): argmax of the raw logits, KV cache, no stop at "
                                  "EOS; greedy_gap = logit(chosen) - logit(runner-up)")
        a["chat_template_rendering"] = ("apply_chat_template([{role: user, content}], tokenize=False, "
                                        "add_generation_prompt=True), then encoded like every other "
                                        "text (so it starts with BOS <|im_start|> followed by the "
                                        "template's own <|im_start|>)")
    return dict(path=out_path, P=P, prompts=prompts, kinds=kinds, g_text=g_text, g_gap=g_gap,
                s_st=s_st, s_len=[len(x) for x in s_ids], p_st=p_st, mismatch=mismatch,
                g_pre=g_pre, g_add_bos=g_add_bos, g_bos=g_bos, g_eos=g_eos, g_pad=g_pad,
                g_unk=g_unk, hf_eos=tok.eos_token_id, g_types=g_types,
                specials=tok.all_special_tokens, added=len(tok.added_tokens_decoder),
                added_first=[(k, v.content) for k, v in list(tok.added_tokens_decoder.items())[:20]])


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


# --------------------------------------------------------------------------------------------
# Tiny random checkpoints
# --------------------------------------------------------------------------------------------
TINY_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   rms_norm_eps=1e-5, hidden_act="silu", attn_implementation="eager",
                   bos_token_id=1, eos_token_id=2)
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
TINY_LENGTHS = (5, 17, 33)
STD = 0.2


def tiny_models():
    return [
        ("llama3_scaled", LlamaForCausalLM,
         LlamaConfig(**TINY_COMMON, tie_word_embeddings=False, rope_theta=500000.0,
                     rope_scaling=dict(LLAMA3_SCALING))),
        ("linear_scaled_tied", LlamaForCausalLM,
         LlamaConfig(**TINY_COMMON, tie_word_embeddings=True, rope_theta=10000.0,
                     rope_scaling={"rope_type": "linear", "factor": 2.0})),
        ("qwen2_bias", Qwen2ForCausalLM,
         Qwen2Config(**TINY_COMMON, tie_word_embeddings=True, rope_theta=1000000.0,
                     use_sliding_window=False)),
        ("mistral", MistralForCausalLM,
         MistralConfig(**TINY_COMMON, tie_word_embeddings=False, rope_theta=10000.0,
                       sliding_window=None, head_dim=32)),
    ]


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g) * STD
            p.copy_(1.0 + r if name.endswith("norm.weight") else r)


@torch.no_grad()
def rope_inv_freq(model):
    """(inv_freq the model uses, the unscaled 1 / theta^(2i/head_dim))."""
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    inv0 = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    re = getattr(model.model, "rotary_emb", None)
    if re is None:  # Mistral in transformers 4.47: one rotary module per attention layer
        re = model.model.layers[0].self_attn.rotary_emb
    return re.inv_freq.float().numpy().copy(), inv0.numpy().copy()


def tiny():
    os.makedirs(TINY, exist_ok=True)
    rng = np.random.default_rng(20240601)
    seqs = [rng.integers(0, 256, size=L).astype(np.int32) for L in TINY_LENGTHS]
    report = {}
    path = os.path.join(GOLD, "tiny_llama_goldens.h5")
    with h5py.File(path, "w") as f:
        f.attrs["definition"] = ("full float32 logits [L, V] at every position of each id sequence, "
                                 "batch 1, no padding, positions 0..L-1, eager attention")
        f.attrs["transformers_version"] = str(transformers.__version__)
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["init"] = ("every parameter N(0, %g) from a seeded generator (sorted names); "
                           "RMSNorm weights 1 + N(0, %g)" % (STD, STD))
        for k, (name, cls, cfg) in enumerate(tiny_models()):
            torch.manual_seed(1000 + k)
            model = cls(cfg)
            randomize(model, 1000 + k)
            model.eval()
            if cfg.tie_word_embeddings:
                assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
            d = os.path.join(TINY, name)
            if os.path.isdir(d):
                shutil.rmtree(d)
            model.save_pretrained(d, safe_serialization=True)
            for extra in os.listdir(d):  # generation_config.json is not needed
                if extra not in ("config.json", "model.safetensors"):
                    os.remove(os.path.join(d, extra))
            # reload from disk: the goldens come from the saved checkpoint
            m2 = cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
            from safetensors import safe_open
            with safe_open(os.path.join(d, "model.safetensors"), "pt") as sf:
                names = sorted(sf.keys())
                shapes = {n: list(sf.get_slice(n).get_shape()) for n in names}
            logits = np.full((3, max(TINY_LENGTHS), 256), np.nan, np.float32)
            for i, ids in enumerate(seqs):
                logits[i, :len(ids)] = forward_logits(m2, ids.tolist()).numpy()
            inv, inv0 = rope_inv_freq(m2)
            # outputs are not near-uniform: the mean top probability is well above 1/256
            probs = torch.softmax(torch.from_numpy(logits[2, :33]), -1)
            top_p = float(probs.max(-1).values.mean())
            assert top_p > 0.05, (name, top_p)
            g = f.create_group(name)
            g.create_dataset("input_ids", data=pad2([s.tolist() for s in seqs], -1, np.int32))
            g.create_dataset("lengths", data=np.array(TINY_LENGTHS, np.int32))
            g.create_dataset("logits", data=logits, **GZ)
            g.create_dataset("inv_freq", data=inv)
            g.create_dataset("inv_freq_unscaled", data=inv0)
            g.attrs["config"] = json.dumps(json.load(open(os.path.join(d, "config.json"))), sort_keys=True)
            g.attrs["tensor_names"] = json.dumps(names)
            g.attrs["lm_head_in_safetensors"] = int("lm_head.weight" in names)
            report[name] = dict(names=names, shapes=shapes, inv=inv, inv0=inv0, top_p=top_p,
                                cfg=json.load(open(os.path.join(d, "config.json"))))
            if name == "llama3_scaled":
                ratio = inv0 / inv
                n_same = int(np.sum(np.isclose(ratio, 1.0)))
                n_div = int(np.sum(np.isclose(ratio, LLAMA3_SCALING["factor"])))
                n_mid = len(ratio) - n_same - n_div
                assert n_same >= 1 and n_div >= 1 and n_mid >= 1, ratio
                report[name]["regimes"] = (n_same, n_mid, n_div)
                g.attrs["llama3_regimes_unchanged_smoothed_divided"] = [n_same, n_mid, n_div]
                l3 = (d, logits, inv, inv0, names)
            if name == "linear_scaled_tied":
                assert np.allclose(inv0 / inv, 2.0)
            if name == "mistral":
                assert m2.model.layers[0].self_attn.q_proj.weight.shape == (4 * 32, 64)
                assert m2.model.layers[0].self_attn.o_proj.weight.shape == (64, 4 * 32)
                assert m2.model.layers[0].self_attn.head_dim == 32 and len(inv) == 16
            if name == "qwen2_bias":
                b = m2.model.layers[0].self_attn.q_proj.bias
                assert b is not None and float(b.abs().max()) > 0

        # rope_parameters: llama3_scaled's weights, rope settings stated the newer way
        src, logits, inv, inv0, names = l3
        d = os.path.join(TINY, "rope_parameters")
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        shutil.copyfile(os.path.join(src, "model.safetensors"), os.path.join(d, "model.safetensors"))
        c = json.load(open(os.path.join(src, "config.json")))
        theta = c.pop("rope_theta")
        scaling = c.pop("rope_scaling")
        rp = {"rope_type": scaling["rope_type"], "rope_theta": theta}
        rp.update({k: v for k, v in scaling.items() if k not in ("rope_type", "type")})
        c["rope_parameters"] = rp
        with open(os.path.join(d, "config.json"), "w") as fo:
            json.dump(c, fo, indent=2, sort_keys=True)
            fo.write("\n")
        g = f.create_group("rope_parameters")
        g.create_dataset("input_ids", data=pad2([s.tolist() for s in seqs], -1, np.int32))
        g.create_dataset("lengths", data=np.array(TINY_LENGTHS, np.int32))
        g.create_dataset("logits", data=logits, **GZ)
        g.create_dataset("inv_freq", data=inv)
        g.create_dataset("inv_freq_unscaled", data=inv0)
        g.attrs["config"] = json.dumps(c, sort_keys=True)
        g.attrs["tensor_names"] = json.dumps(names)
        g.attrs["lm_head_in_safetensors"] = int("lm_head.weight" in names)
        g.attrs["same_as"] = "llama3_scaled"
        report["rope_parameters"] = dict(names=names, cfg=c)
    return path, report


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-smollm", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()

    if not args.skip_tiny:
        tpath, rep = tiny()
        print("== tiny checkpoints (%s)" % os.path.relpath(tpath, ROOT))
        for name, r in rep.items():
            c = r["cfg"]
            print("  %-19s %s tie=%s theta=%s scaling=%s head_dim=%s" % (
                name, c.get("architectures"), c.get("tie_word_embeddings"), c.get("rope_theta"),
                c.get("rope_scaling") or c.get("rope_parameters"), c.get("head_dim")))
            print("    tensors (%d): %s" % (len(r["names"]), ", ".join(
                n for n in r["names"] if not n.startswith("model.layers.1."))))
            print("    lm_head.weight in safetensors: %s" % ("lm_head.weight" in r["names"]))
            if "top_p" in r:
                print("    mean top-1 prob (len 33): %.3f" % r["top_p"])
            if "regimes" in r:
                print("    llama3 inv_freq unchanged/smoothed/divided: %s" % (r["regimes"],))
                print("    inv_freq unscaled %s" % np.array2string(r["inv0"], precision=4))
                print("    inv_freq scaled   %s" % np.array2string(r["inv"], precision=4))

    if not args.skip_smollm:
        path = args.gguf
        if path is None:
            with open(os.path.join(ROOT, "build", "models", "smollm2.path")) as fp:
                path = fp.read().strip()
        r = smollm(path)
        print("== SmolLM2 (%s)" % os.path.relpath(r["path"], ROOT))
        print("  GGUF tokenizer: pre=%s add_bos_token=%s bos=%s eos=%s pad=%s unk=%s; tensor types %s"
              % (r["g_pre"], r["g_add_bos"], r["g_bos"], r["g_eos"], r["g_pad"], r["g_unk"], r["g_types"]))
        print("  HF tokenizer: eos_token_id=%s specials=%s added=%d first=%s" % (
            r["hf_eos"], r["specials"], r["added"], r["added_first"]))
        print("  texts where the smollm digit pre-tokenizer disagrees: %d %s" % (
            len(r["mismatch"]), [t[:40] for t in r["mismatch"]]))
        for i in range(r["P"]):
            print("  [%2d %-11s] %-50r -> %r (min gap %.3f)" % (
                i, r["kinds"][i], r["prompts"][i][-50:], r["g_text"][i][:70], float(r["g_gap"][i].min())))
        ppl = [s[3] for s in r["s_st"]]
        print("  score texts: %d, lengths %d..%d, perplexity %.1f..%.1f" % (
            len(ppl), min(r["s_len"]), max(r["s_len"]), min(ppl), max(ppl)))
        for (p, c), s in zip(SCORE_PAIRS, r["p_st"]):
            print("  pair %-45r + %-30r sum %.3f n %d" % (p[-45:], c[:30], s[0], s[1]))

    total = 0
    mine = [os.path.join(GOLD, "smollm2_goldens.h5"), os.path.join(GOLD, "tiny_llama_goldens.h5")]
    for root, _, files in sorted(os.walk(TINY)):
        mine += [os.path.join(root, fn) for fn in sorted(files)]
    for fp in mine:
        if os.path.exists(fp):
            sz = os.path.getsize(fp)
            total += sz
            print("  %8d  %s" % (sz, os.path.relpath(fp, ROOT)))
    print("  total %d bytes" % total)
    assert total < 8 * 1024 * 1024


if __name__ == "__main__":
    sys.exit(main())
