/*
 * llama.h — LLaMA-family decoders (LlamaForCausalLM and close relatives: LLaMA 2/3, Mistral,
 * Qwen2 with q/k/v biases, SmolLM2) from a Hugging Face directory or a GGUF file, tensor-parallel
 * over a TP group, run over packed tokens with a KV cache.
 *
 * Sources:
 *   directory   config.json (model_type llama | mistral | qwen2; hidden_size, num_hidden_layers,
 *               num_attention_heads, num_key_value_heads, head_dim, intermediate_size,
 *               vocab_size, rms_norm_eps, rope_theta + rope_scaling or rope_parameters,
 *               tie_word_embeddings, max_position_embeddings, hidden_act "silu"),
 *               model.safetensors or an index of shards, tokenizer.json (optional: without it,
 *               only pre-tokenised input can be used)
 *   .gguf       general.architecture llama | qwen2 and its <arch>.* keys; the tokenizer from
 *               tokenizer.ggml.*; tensors token_embd / blk.N.{attn_norm, attn_q, attn_k, attn_v,
 *               attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down} / output_norm / output, with
 *               LLaMA's q/k rows permuted back from GGUF's interleaved RoPE pairing, and
 *               rope_freqs (LLaMA-3 frequency factors) when present. Quantised tensors are
 *               dequantised to f32 on load.
 * RoPE: theta; "linear" and "llama3" scaling. Anything else (yarn, dynamic, sliding windows that
 * the context would exceed, other activations) is refused by name.
 *
 * Tensor parallelism over T ranks: query heads H/T per rank; KV heads Hkv/T per rank, or, when
 * Hkv < T, one KV head per rank (replicated exactly: ranks T/Hkv apart share it) — the query
 * heads of a rank must all read its KV heads, else a clear error. FFN gate/up rows and down
 * columns split in T; o_proj columns split by the rank's query heads. Two all-reduces per layer.
 * The LM head is vocabulary-parallel (rows [v0, v0 + Vl) per rank); log-probabilities combine
 * per-rank log-sum-exp pieces, so full logits are never gathered for scoring. The embedding
 * table is replicated.
 */
#ifndef SL_LLAMA_H
#define SL_LLAMA_H

#include <stdint.h>
#include <stdio.h>

#include "common/sl_error.h"
#include "kernels/backend.h"
#include "models/tokenizers/bpe.h"
#include "partition/comm.h"

typedef struct {
    char arch[32]; /* "llama", "mistral", "qwen2" */
    int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab;
    int64_t max_positions; /* context length the model supports */
    float rms_eps;
    double rope_theta;
    char rope_type[16]; /* "default", "linear", "llama3" */
    double rope_factor, rope_low_freq, rope_high_freq, rope_orig_ctx;
    int tied;               /* LM head = embedding table */
    int qkv_bias;           /* Qwen2 */
    int64_t bos_id, eos_id; /* -1 when unknown */
} sl_llama_config_t;

/* Reads the configuration only (config.json, or the GGUF metadata); errors name file and key. */
int sl_llama_config_load(const char *path, sl_llama_config_t *cfg, sl_error_t *err);

/* Prints the configuration and, for tp_size ranks, what one rank holds (parameters, f32 bytes,
 * KV cache per token), or fails naming why the model does not split over tp_size. */
int sl_llama_describe(const char *path, int tp_size, FILE *out, sl_error_t *err);

typedef struct sl_llama sl_llama_t;

/* Loads this TP rank's slice onto the backend; linear weights in `dtype` (f32, f16, bf16), norms
 * f32. Errors name the file, key or tensor. */
sl_llama_t *sl_llama_load(const char *path, sl_backend_t *be, int tp_size, int tp_rank,
                          sl_dtype_t dtype, sl_error_t *err);
/* The same, from a config parsed already (sl_llama_config_load of PATH): the configuration
 * is not read again. */
sl_llama_t *sl_llama_load_with(const char *path, const sl_llama_config_t *cfg, sl_backend_t *be,
                               int tp_size, int tp_rank, sl_dtype_t dtype, sl_error_t *err);
void sl_llama_free(sl_llama_t *m);
const sl_llama_config_t *sl_llama_config(const sl_llama_t *m);
/* The tokenizer (GGUF metadata or the directory's tokenizer.json); NULL when there is none. */
const sl_bpe_t *sl_llama_tokenizer(const sl_llama_t *m);
/* Whether `path` looks like a LLaMA-family model (a .gguf file, or a directory whose
 * config.json names one of the supported model types). */
int sl_llama_detect(const char *path);

/* ---- KV cache ---------------------------------------------------------------------------- */
typedef struct sl_llama_cache sl_llama_cache_t;
/* Bytes the backend can still allocate (for sizing caches). */
size_t sl_llama_free_bytes(const sl_llama_t *m);
/* Bytes one slot of `ctx` positions takes on this rank (all layers, K and V). */
size_t sl_llama_cache_slot_bytes(const sl_llama_t *m, int64_t ctx);
/* slots x ctx positions. shared_layers: one buffer reused by every layer (enough when every
 * step holds whole rows, as in scoring); otherwise one per layer (generation). NULL with err
 * when the backend cannot hold it. */
sl_llama_cache_t *sl_llama_cache_new(sl_llama_t *m, int64_t slots, int64_t ctx, int shared_layers,
                                     sl_error_t *err);
void sl_llama_cache_free(sl_llama_cache_t *c);

/* ---- a forward step over packed tokens ---------------------------------------------------
 * HOST arrays. Token t (of T) has id ids[t], cache slot slot[t] and position pos[t]; its K/V are
 * written into the cache at (slot, pos) and it attends causally to that slot's keys 0..pos[t].
 * kv_len[s] (for s < slots) is the number of valid positions of slot s after this step.
 * n_sel tokens (indices sel[i] into the T, ascending) get final hidden states, for the LM head
 * calls below. Tokens 0..n_prompt-1 are bulk tokens (scoring passes all of its tokens), the
 * rest int8-activation rows (generation passes 0: its prompts and decode steps): on the CPU,
 * quantized weights meet bulk tokens in f32 GEMMs on dequantised tiles and the others in the
 * integer GEMM (sl_backend_set_bulk_rows), so a caller with both packs its bulk tokens first.
 * Every rank of the TP group calls with the same arguments. */
typedef struct {
    int64_t T;
    const int32_t *ids, *slot, *pos;
    const int32_t *kv_len; /* [slots of the cache] */
    int64_t n_sel;
    const int32_t *sel;
    int64_t n_prompt;
} sl_llama_step_t;

void sl_llama_forward(sl_llama_t *m, sl_comm_t *comm, sl_llama_cache_t *cache,
                      const sl_llama_step_t *step);
/* After a forward: logp[i] = log softmax(logits of selected token i)[target[i]] (natural log),
 * vocabulary-parallel. target: host [n_sel], each in [0, vocab). */
void sl_llama_logprobs(sl_llama_t *m, sl_comm_t *comm, const int32_t *target, float *logp);
/* After a forward: the full logits of the selected tokens, gathered: host f32 [n_sel, vocab]. */
void sl_llama_logits(sl_llama_t *m, sl_comm_t *comm, float *logits);
/* After a forward: the k (1 <= k <= 256) largest logits of each selected token over the whole
 * vocabulary, descending, ties by the lower id: host vals f32 [n_sel, k], ids i32 [n_sel, k].
 * Each rank selects on the backend within its vocabulary shard; only k candidates per row and
 * rank cross the TP group. */
void sl_llama_topk(sl_llama_t *m, sl_comm_t *comm, int k, float *vals, int32_t *ids);

#endif
