#!/usr/bin/env python3
"""make_chat_goldens.py — reference chat-template renderings, their token ids and greedy
continuations from transformers (jinja2), for models/tokenizers/chat_template.c and `--chat-template`.

Run (from the repository root, with the reference venv: transformers 4.47.1, gguf 0.19.0,
jinja2, torch 1.13 CPU):
    /tmp/slref/bin/python tests/reference/make_chat_goldens.py \
        --gguf $(cat build/models/smollm2.path)

Produces (committed, so the tests need no Python packages beyond h5py/numpy):

  tests/reference/chat_tiny/<form>/{tokenizer.json, tokenizer_config.json}
      tiny tokenizers (the byte-level BPE vocabularies of tests/reference/bpe_tiny, 600 tokens)
      carrying the chat templates the models of each family publish in tokenizer_config.json:
        llama3   bpe_tiny/llama3 + special tokens <|start_header_id|>, <|end_header_id|>;
                 Meta-Llama-3-8B-Instruct's template (bos_token <|begin_of_text|>, content | trim)
        llama2   bpe_tiny/gpt2 + special tokens <s>, </s>; Llama-2-7b-chat-hf's template
                 (<<SYS>> block in the first [INST], content.strip(); escapes written as \\n)
        mistral  the same tokenizer; Mistral-7B-Instruct-v0.2's template (no system role)
        qwen2    bpe_tiny/qwen2; Qwen2-Instruct's ChatML template (default system message
                 "You are a helpful assistant.")
        unknown  bpe_tiny/qwen2 with a Gemma-style template (<start_of_turn>): must be refused
        llama31  bpe_tiny/llama3 with a LLaMA-3.1-style template (a dated system block): must
                 be refused, since its system text depends on the date

  tests/reference/goldens/chat_goldens.h5, one group per tokenizer (smollm2 = the SmolLM2-135M-
  Instruct GGUF loaded with gguf_file=, whose template inserts a default system message when
  none is given; llama3, llama2, mistral, qwen2 = the tiny ones above). For case i:
      system [N]   the system text ("" = no system message), user [N] the user text
      rendered [N] tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
      ids int32 [N, Lmax] (-1 padded), lengths int32 [N]:
                   tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                   (transformers tokenizes the rendered text with add_special_tokens=False: the
                   BOS appears only where the template writes bos_token)
      messages = [{"role": "system", "content": system}] (when system != "") +
                 [{"role": "user", "content": user}]
      mistral: system messages are refused by its template (raise_exception), so only "" there.
  smollm2 also has /greedy: for the user texts greedy_user [P] and the system texts greedy_system
      [P] (same convention), greedy_ids int32 [P, 24] = model.generate(ids, do_sample=False,
      max_new_tokens=24, eos_token_id=None) on the apply_chat_template ids (float32, CPU),
      greedy_gap f32 [P, 24] (chosen logit minus the runner-up's), attribute eos_id (the GGUF's
      tokenizer.ggml.eos_token_id, 2 = <|im_end|>, where shardline stops).
"""
import argparse
import json
import os
import shutil

import h5py
import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

# generate() asks whether the model is FSDP-managed, which imports torch.distributed.fsdp; with
# torch 1.13 under Python 3.11 that import fails (see make_llama_goldens.py).
import transformers.generation.utils as _gen_utils  # noqa: E402
_gen_utils.is_fsdp_managed_module = lambda module: False

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "chat_tiny")
VLEN = h5py.string_dtype("utf-8")

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
          "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
          "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
          "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
          "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
          "{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
          "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation"
          " roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
          "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
          "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
          "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
          "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
          "' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
           "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
           "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
           "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' "
           "%}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and "
           "assistant roles are supported!') }}{% endif %}{% endfor %}")
QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
         "'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
         " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if "
         "add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\n'"
         " + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if "
         "add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
LLAMA31 = ("{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul "
           "2024\" %}{%- endif %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- "
           "\"Cutting Knowledge Date: December 2023\\n\" }}{{- \"Today Date: \" + date_string + "
           "\"\\n\\n\" }}{{- \"<|eot_id|>\" }}{%- for message in messages %}{{- "
           "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content']"
           " | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- "
           "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")

USERS = [
    "What is the capital of France?",
    "  Write a haiku about the sea.\n",
    "Explain <|im_end|> tokens & [INST] tags: what are they?",
    "\u3000Übersetze: «guten Morgen» 😀\t",
    "x",
]
SYSTEMS = ["", "You are a pirate. Answer like one.", " Be brief.\n"]


def add_tokens(tj, names):
    n = max(max(tj["model"]["vocab"].values()), max(a["id"] for a in tj["added_tokens"])) + 1
    for i, s in enumerate(names):
        tj["added_tokens"].append({"id": n + i, "content": s, "single_word": False,
                                   "lstrip": False, "rstrip": False, "normalized": False,
                                   "special": True})
    return tj


def make_tiny(name, base, extra, config):
    d = os.path.join(TINY, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(HERE, "bpe_tiny", base, "tokenizer.json")) as f:
        tj = json.load(f)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(add_tokens(tj, extra), f, ensure_ascii=False)
    config = dict(config, tokenizer_class="PreTrainedTokenizerFast")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    return d


def cases(tok, systems):
    out = []
    for s in systems:
        for u in USERS:
            msgs = ([{"role": "system", "content": s}] if s else []) + [{"role": "user",
                                                                       "content": u}]
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            out.append((s, u, text, list(ids)))
    return out


def write_group(f, name, rows, attrs):
    g = f.create_group(name)
    L = max(len(r[3]) for r in rows)
    ids = np.full((len(rows), L), -1, np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r[3])] = r[3]
    for k, j in (("system", 0), ("user", 1), ("rendered", 2)):
        g.create_dataset(k, data=np.array([r[j] for r in rows], dtype=object), dtype=VLEN)
    g["ids"] = ids
    g["lengths"] = np.array([len(r[3]) for r in rows], np.int32)
    for k, v in attrs.items():
        g.attrs[k] = v
    return g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    a = ap.parse_args()
    shutil.rmtree(TINY, ignore_errors=True)
    tiny = {
        "llama3": make_tiny("llama3", "llama3", ["<|start_header_id|>", "<|end_header_id|>"],
                            {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                             "chat_template": LLAMA3}),
        "llama2": make_tiny("llama2", "gpt2", ["<s>", "</s>"],
                            {"bos_token": "<s>", "eos_token": "</s>", "chat_template": LLAMA2}),
        "mistral": make_tiny("mistral", "gpt2", ["<s>", "</s>"],
                             {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False,
                                            "normalized": False, "rstrip": False,
                                            "single_word": False},
                              "eos_token": "</s>", "chat_template": MISTRAL}),
        "qwen2": make_tiny("qwen2", "qwen2", [],
                           {"eos_token": "<|im_end|>", "chat_template": QWEN2}),
    }
    make_tiny("unknown", "qwen2", [], {"chat_template": GEMMA})
    make_tiny("llama31", "llama3", ["<|start_header_id|>", "<|end_header_id|>"],
              {"bos_token": "<|begin_of_text|>", "chat_template": LLAMA31})

    out = os.path.join(HERE, "goldens", "chat_goldens.h5")
    with h5py.File(out, "w") as f:
        f.attrs["transformers"] = transformers.__version__
        for name, d in tiny.items():
            tok = AutoTokenizer.from_pretrained(d)
            systems = [""] if name == "mistral" else SYSTEMS
            write_group(f, name, cases(tok, systems), {"dir": os.path.relpath(d, HERE)})
            print(name, "ok")

        gdir, gname = os.path.split(a.gguf)
        tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
        g = write_group(f, "smollm2", cases(tok, SYSTEMS), {"gguf": gname})
        model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname,
                                                     torch_dtype=torch.float32,
                                                     attn_implementation="eager")
        model.eval()
        prompts = [("", "What is the capital of France?"),
                   ("", "Write a haiku about the sea."),
                   ("", "Give me three tips for writing clean code."),
                   ("You are a pirate. Answer like one.", "How are you today?"),
                   ("Answer in one short sentence.", "Why is the sky blue?")]
        N = 24
        gids = np.zeros((len(prompts), N), np.int32)
        gap = np.zeros((len(prompts), N), np.float32)
        for i, (s, u) in enumerate(prompts):
            msgs = ([{"role": "system", "content": s}] if s else []) + [{"role": "user",
                                                                       "content": u}]
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            with torch.no_grad():
                o = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=N,
                                   eos_token_id=None, pad_token_id=0, output_scores=True,
                                   return_dict_in_generate=True)
            gids[i] = o.sequences[0, len(ids):].numpy()
            for k, sc in enumerate(o.scores):
                top = torch.topk(sc[0], 2).values
                gap[i, k] = float(top[0] - top[1])
            print("greedy", i, repr(tok.decode(gids[i])))
        gg = g.create_group("greedy")
        gg.create_dataset("greedy_system", data=np.array([p[0] for p in prompts], dtype=object),
                          dtype=VLEN)
        gg.create_dataset("greedy_user", data=np.array([p[1] for p in prompts], dtype=object),
                          dtype=VLEN)
        gg["greedy_ids"] = gids
        gg["greedy_gap"] = gap
        gg.attrs["eos_id"] = 2
    print("wrote", out)


if __name__ == "__main__":
    main()
