/*
 * bert.h — the BERT encoder family from a Hugging Face model directory: sentence embeddings
 * (sentence-transformers layout: mean / CLS / pooler pooling, optional L2 normalisation) and
 * BertForSequenceClassification logits, tensor-parallel over a TP group.
 *
 * Files (a directory):
 *   config.json                 model_type "bert", hidden_size, num_hidden_layers,
 *                               num_attention_heads, intermediate_size, vocab_size,
 *                               max_position_embeddings, type_vocab_size, layer_norm_eps,
 *                               hidden_act "gelu", position_embedding_type "absolute",
 *                               architectures [BertModel | BertForSequenceClassification],
 *                               id2label / num_labels for a classifier, pruned_heads
 *                               {"layer": [head, ...]} (transformers' head pruning; every
 *                               layer must keep as many heads)
 *   model.safetensors           or shards listed in model.safetensors.index.json ("weight_map")
 *   sentence_bert_config.json   max_seq_length (optional)
 *   tokenizer_config.json       model_max_length (optional, used when the above is absent)
 *   modules.json                sentence-transformers modules: the Pooling module's folder and
 *                               whether a Normalize module follows (optional)
 *   <pooling>/config.json       pooling_mode_mean_tokens / pooling_mode_cls_token (optional;
 *                               default mean)
 *
 * Tensors, each with or without the "bert." prefix, LayerNorm as weight/bias or gamma/beta,
 * F32, F16 or BF16:
 *   embeddings.{word,position,token_type}_embeddings.weight   [vocab|max_positions|type_vocab,
 * hidden] embeddings.LayerNorm                                       [hidden]
 *   encoder.layer.{i}.attention.self.{query,key,value}         weight [hidden, hidden], bias
 * [hidden] encoder.layer.{i}.attention.output.dense                   weight [hidden, hidden], bias
 * [hidden] encoder.layer.{i}.attention.output.LayerNorm               [hidden]
 *   encoder.layer.{i}.intermediate.dense                       weight [intermediate, hidden], bias
 *   encoder.layer.{i}.output.dense                             weight [hidden, intermediate], bias
 *   encoder.layer.{i}.output.LayerNorm                         [hidden]
 *   pooler.dense                                               weight [hidden, hidden], bias
 * (optional unless pooling is POOLER or classify) classifier (no prefix) weight [n_labels, hidden],
 * bias
 *
 * Tensor parallelism (Megatron): each TP rank holds heads/T attention heads (rows of Wq, Wk, Wv
 * and the matching columns of the attention output dense) and intermediate/T FFN columns (rows of
 * the intermediate dense, columns of the output dense). Two all-reduces per layer. Embeddings,
 * LayerNorms, the pooler and the classifier are replicated.
 */
#ifndef SL_BERT_H
#define SL_BERT_H

#include <stdint.h>

#include "common/sl_error.h"
#include "kernels/backend.h"
#include "partition/comm.h"

typedef enum { SL_BERT_POOL_MEAN, SL_BERT_POOL_CLS, SL_BERT_POOL_POOLER } sl_bert_pool_t;

typedef struct {
    int64_t hidden, layers, heads, intermediate, vocab, max_positions, type_vocab;
    /* heads: per layer, after pruned_heads; head_dim: hidden / num_attention_heads (pruning
     * removes whole heads, so q/k/v are [heads * head_dim, hidden]) */
    int64_t head_dim, heads_config;
    float ln_eps;
    int max_length;         /* tokens incl. [CLS]/[SEP]: sentence_bert_config.json max_seq_length,
                               else tokenizer model_max_length if sane, else max_positions */
    sl_bert_pool_t pooling; /* 1_Pooling/config.json (pooling_mode_mean_tokens / cls_token);
                               default mean */
    int normalize;          /* modules.json lists a sentence_transformers.models.Normalize module */
    int n_labels;  /* BertForSequenceClassification: classifier.weight rows; 0 if no head */
    char **labels; /* id2label names [n_labels] (or "LABEL_i") */
} sl_bert_config_t;

/* Reads <dir>/config.json and the sentence-transformers files next to it. Errors name the file
 * and the key; unsupported architectures and options are refused by name. n_labels comes from
 * id2label / num_labels here and is checked against classifier.weight by sl_bert_load. */
int sl_bert_config_load(const char *dir, sl_bert_config_t *cfg, sl_error_t *err);
void sl_bert_config_free(sl_bert_config_t *cfg);

typedef struct sl_bert sl_bert_t;

/* Loads this TP rank's slice of the weights onto the backend. Linear weights and embedding
 * tables are stored in `dtype` (f32, f16 or bf16); LayerNorm parameters and biases stay f32.
 * Checks every tensor's presence, dtype and shape against the config (naming the tensor), and
 * that num_attention_heads and intermediate_size divide by tp_size. */
sl_bert_t *sl_bert_load(const char *dir, sl_backend_t *be, int tp_size, int tp_rank,
                        sl_dtype_t dtype, sl_error_t *err);
/* The same, from a config parsed already (sl_bert_config_load of DIR), which is copied: the
 * config files are not read again. */
sl_bert_t *sl_bert_load_with(const char *dir, const sl_bert_config_t *cfg, sl_backend_t *be,
                             int tp_size, int tp_rank, sl_dtype_t dtype, sl_error_t *err);
void sl_bert_free(sl_bert_t *m);
const sl_bert_config_t *sl_bert_config(const sl_bert_t *m);

/* ids, type_ids (NULL = all 0), lengths: HOST arrays; ids/type_ids [B, S] row-major, padded
 * (any valid id in the padding), lengths [B] with 1 <= lengths[b] <= S <= max_positions.
 * Every rank of the TP group calls together with the same inputs; comm may be NULL when
 * tp_size == 1. out: host f32 [B, hidden], pooled and (per config) L2-normalised. */
void sl_bert_embed(sl_bert_t *m, sl_comm_t *comm, const int32_t *ids, const int32_t *type_ids,
                   const int32_t *lengths, int64_t B, int64_t S, float *out);
/* Calibration statistics for structured pruning (shardline prune): while set on a model
 * loaded with tp_size 1, every forward pass adds, per layer l, the |values| of each head's
 * attention context (summed over its head_dim values and the real tokens) to
 * head_abs[l * heads + h], those of each FFN intermediate column after GELU to
 * ffn_abs[l * intermediate + j], and the real tokens to *tokens. NULL turns it off. */
typedef struct {
    double *head_abs; /* [layers, heads] */
    double *ffn_abs;  /* [layers, intermediate] */
    int64_t tokens;
} sl_bert_stats_t;
void sl_bert_set_stats(sl_bert_t *m, sl_bert_stats_t *stats);

/* Same inputs; logits: host f32 [B, n_labels] = classifier(tanh(pooler(x[:, 0]))). */
void sl_bert_classify(sl_bert_t *m, sl_comm_t *comm, const int32_t *ids, const int32_t *type_ids,
                      const int32_t *lengths, int64_t B, int64_t S, float *logits);

#endif
