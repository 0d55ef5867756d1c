/*
 * inspect_model.c — `shardline inspect MODEL_DIR`: what a model is and what it costs per rank.
 *
 * Everything comes from config.json and the safetensors header (the file is mapped, its data
 * pages are not read except by the fingerprint), after the same checks sl_mlp_load makes, so a
 * model that inspects cleanly also loads. Per-rank sizes follow the split sl_mlp_load uses:
 * column-parallel layers hold 1/T of the weight rows and of the bias, row-parallel layers 1/T of
 * the weight columns and the whole bias, replicated layers everything.
 *
 * A GGUF file (sl_inspect_gguf) is summarised from its metadata and tensor infos alone: the
 * architecture and its hyperparameters, the tokenizer, tensor counts by type, and the first and
 * last tensors.
 */
#include "cli/inspect_model.h"
#include "models/formats/fingerprint.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "models/bert.h"
#include "models/formats/gguf.h"
#include "models/mlp.h"
#include "models/formats/safetensors.h"

static const char *split_name(sl_split_t s, int tp_size)
{
    switch (s) {
    case SL_SPLIT_COLUMN: return "column-parallel";
    case SL_SPLIT_ROW: return "row-parallel";
    case SL_SPLIT_NONE: return tp_size > 1 ? "replicated" : "whole";
    }
    return "?";
}

static const char *act_name(int act)
{
    if (act == SL_ACT_SOFTMAX)
        return "softmax";
    if (act == SL_ACT_NONE)
        return "none";
    return sl_act_name((sl_act_t)act);
}

/* "12345 B (12.1 KiB)" */
static const char *fmt_bytes(char *buf, size_t cap, uint64_t b)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", b);
    else
        snprintf(buf, cap, "%" PRIu64 " B (%.1f %s)", b, v, units[u]);
    return buf;
}

/* Bytes one rank holds, counted three ways. */
typedef struct {
    uint64_t params; /* elements */
    uint64_t stored; /* in the file's dtypes */
    uint64_t f32;    /* loaded with --precision f32 */
    uint64_t half;   /* loaded with --precision f16 or bf16 (biases and stats stay f32) */
} rank_bytes_t;

static void count(rank_bytes_t *r, const sl_st_tensor_t *t, uint64_t numel, int is_weight)
{
    r->params += numel;
    r->stored += numel * sl_dtype_size(t->dtype);
    r->f32 += numel * 4;
    r->half += numel * (is_weight ? 2 : 4);
}

int sl_inspect_model(const char *dir, int tp_size, FILE *out, sl_error_t *err)
{
    if (tp_size < 1)
        return sl_errorf(err, "--tp must be at least 1 (got %d)", tp_size);
    size_t dl = strlen(dir);
    const char *sep = (dl && dir[dl - 1] == '/') ? "" : "/";
    char cfg_path[4096], st_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s%sconfig.json", dir, sep);
    snprintf(st_path, sizeof st_path, "%s%smodel.safetensors", dir, sep);

    sl_mlp_config_t cfg;
    sl_safetensors_t st;
    memset(&st, 0, sizeof st);
    uint64_t fp = 0;
    if (sl_mlp_config_load(cfg_path, &cfg, err) != 0)
        return -1;
    if (sl_st_open(&st, st_path, err) != 0 || sl_mlp_check(dir, &cfg, &st, tp_size, err) != 0 ||
        sl_model_fingerprint(dir, &fp, err) != 0) {
        sl_st_close(&st);
        sl_mlp_config_free(&cfg);
        return -1;
    }

    int n = cfg.n_layers;
    fprintf(out, "model        %s\n", dir);
    fprintf(out, "type         mlp, %d layer%s, dims [", n, n == 1 ? "" : "s");
    for (int i = 0; i <= n; i++)
        fprintf(out, "%s%lld", i ? ", " : "", (long long)cfg.dims[i]);
    fprintf(out, "]\nfingerprint  %016" PRIx64 "\n\n", fp);

    char split_head[32];
    snprintf(split_head, sizeof split_head, "split (--tp %d)", tp_size);
    fprintf(out, "%5s  %8s  %8s  %-10s  %-15s  %-5s  %12s\n", "layer", "in", "out", "activation",
            split_head, "dtype", "parameters");
    uint64_t total = 0;
    rank_bytes_t rank = {0, 0, 0, 0};
    char name[64];
    for (int i = 0; i < n; i++) {
        int64_t din = cfg.dims[i], dout = cfg.dims[i + 1];
        sl_split_t split = sl_mlp_layer_split(i, n, tp_size);
        snprintf(name, sizeof name, "layers.%d.weight", i);
        const sl_st_tensor_t *w = sl_st_find(&st, name);
        snprintf(name, sizeof name, "layers.%d.bias", i);
        const sl_st_tensor_t *b = sl_st_find(&st, name);
        uint64_t wn = (uint64_t)din * (uint64_t)dout, bn = (uint64_t)dout;
        total += wn + bn;
        /* sl_mlp_check proved the split dims divide by tp_size */
        uint64_t wr = split == SL_SPLIT_NONE ? wn : wn / (uint64_t)tp_size;
        uint64_t br = split == SL_SPLIT_COLUMN ? bn / (uint64_t)tp_size : bn;
        count(&rank, w, wr, 1);
        count(&rank, b, br, 0);

        int act = i == n - 1 ? cfg.final_activation : cfg.activation;
        fprintf(out, "%5d  %8lld  %8lld  %-10s  %-15s  %-5s  %12" PRIu64 "\n", i, (long long)din,
                (long long)dout, act_name(act), split_name(split, tp_size), sl_st_code(w->dtype),
                wn + bn);
    }
    const sl_st_tensor_t *mean = sl_st_find(&st, "input_mean");
    const sl_st_tensor_t *std = sl_st_find(&st, "input_std");
    if (mean) {
        uint64_t d0 = (uint64_t)cfg.dims[0];
        total += 2 * d0;
        count(&rank, mean, d0, 0);
        count(&rank, std, d0, 0);
        fprintf(out, "input standardisation: input_mean, input_std [%llu] %s, on every rank\n",
                (unsigned long long)d0, sl_st_code(mean->dtype));
    } else {
        fprintf(out, "input standardisation: none\n");
    }

    char b1[64];
    fprintf(out, "\nparameters   %" PRIu64 " (weights, biases%s)\n", total,
            mean ? ", input statistics" : "");
    if (tp_size == 1)
        fprintf(out, "per rank     %" PRIu64 " parameters (--tp 1: the whole model)\n",
                rank.params);
    else
        fprintf(out, "per rank     %" PRIu64 " parameters on each of the %d ranks of a TP group\n",
                rank.params, tp_size);
    fprintf(out, "  %-22s %s\n", "as stored in the file", fmt_bytes(b1, sizeof b1, rank.stored));
    fprintf(out, "  %-22s %s\n", "--precision f32", fmt_bytes(b1, sizeof b1, rank.f32));
    fprintf(out, "  %-22s %s (biases and statistics stay f32)\n", "--precision f16, bf16",
            fmt_bytes(b1, sizeof b1, rank.half));

    sl_st_close(&st);
    sl_mlp_config_free(&cfg);
    return 0;
}

/* ---- BERT -------------------------------------------------------------------------------- */

int sl_inspect_bert(const char *dir, int tp_size, FILE *out, sl_error_t *err)
{
    if (tp_size < 1)
        return sl_errorf(err, "--tp must be at least 1 (got %d)", tp_size);
    sl_bert_config_t c;
    uint64_t fp = 0;
    if (sl_bert_config_load(dir, &c, err) != 0)
        return -1;
    if (sl_model_fingerprint(dir, &fp, err) != 0) {
        sl_bert_config_free(&c);
        return -1;
    }
    int64_t H = c.hidden, I = c.intermediate;
    static const char *const pools[] = {"mean", "CLS", "pooler"};
    fprintf(out, "model        %s\n", dir);
    fprintf(out,
            "encoder      bert: %lld layers, hidden %lld, %lld heads of %lld, FFN %lld, vocab "
            "%lld, %lld positions, LayerNorm eps %g\n",
            (long long)c.layers, (long long)H, (long long)c.heads, (long long)c.head_dim,
            (long long)I, (long long)c.vocab, (long long)c.max_positions, (double)c.ln_eps);
    if (c.n_labels > 0) {
        fprintf(out, "task         classify (default), %d labels:", c.n_labels);
        for (int i = 0; i < c.n_labels && i < 16; i++)
            fprintf(out, " %s", c.labels[i]);
        fprintf(out, "%s\n", c.n_labels > 16 ? " ..." : "");
    } else {
        fprintf(out, "task         embed: %s pooling%s, %lld floats per row\n", pools[c.pooling],
                c.normalize ? ", L2-normalised" : "", (long long)H);
    }
    fprintf(out, "max length   %d tokens per row incl. [CLS] and [SEP]\n", c.max_length);
    fprintf(out, "fingerprint  %016" PRIx64 "\n", fp);
    /* Parameters from the config: embeddings and LayerNorms are replicated; q/k/v and the
     * FFN's first layer are split by output rows, the attention output and the FFN's second
     * layer by input columns (their biases replicated). */
    int64_t emb = (c.vocab + c.max_positions + c.type_vocab) * H + 2 * H;
    int64_t A = c.heads * c.head_dim; /* q/k/v rows, less pruned heads */
    int64_t layer_split = 3 * (A * H + A) + H * A + H * I + I + I * H;
    int64_t layer_repl = 2 * H + 4 * H; /* two output biases, two LayerNorms */
    int64_t head = (c.pooling == SL_BERT_POOL_POOLER || c.n_labels > 0 ? H * H + H : 0) +
                   (c.n_labels > 0 ? c.n_labels * (H + 1) : 0);
    int64_t total = emb + c.layers * (layer_split + layer_repl) + head;
    fprintf(out, "parameters   %lld (from config.json)\n", (long long)total);
    if (c.heads % tp_size != 0 || I % tp_size != 0) {
        fprintf(out,
                "--tp %d       does not split this model: %lld heads and FFN %lld must both "
                "divide by %d\n",
                tp_size, (long long)c.heads, (long long)I, tp_size);
    } else {
        int64_t rank = emb + c.layers * (layer_split / tp_size + layer_repl) + head;
        fprintf(out,
                "per TP rank  (--tp %d) %lld heads, FFN %lld; %lld parameters = %.1f MiB in "
                "f32 (%.1f MiB in bf16)\n",
                tp_size, (long long)(c.heads / tp_size), (long long)(I / tp_size), (long long)rank,
                (double)rank * 4.0 / 1048576.0, (double)rank * 2.0 / 1048576.0);
    }
    sl_bert_config_free(&c);
    return 0;
}

/* ---- GGUF -------------------------------------------------------------------------------- */

int sl_inspect_is_gguf(const char *path)
{
    unsigned char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* A scalar value as text; arrays as "[N type values]". */
static const char *fmt_kv(const sl_gguf_kv_t *kv, char *buf, size_t cap)
{
    static const char *vnames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                   "bool", "string", "array", "u64", "i64", "f64"};
    const char *s;
    size_t len;
    if (kv->type == SL_GGUF_ARRAY)
        snprintf(buf, cap, "[%" PRIu64 " %s values]", kv->n, vnames[kv->elem]);
    else if (sl_gguf_arr_str(kv, 0, &s, &len) == 0)
        snprintf(buf, cap, "%.*s%s", len > 60 ? 60 : (int)len, s, len > 60 ? "..." : "");
    else if (kv->type == SL_GGUF_BOOL)
        snprintf(buf, cap, "%s", sl_gguf_arr_int(kv, 0) ? "true" : "false");
    else if (kv->type == SL_GGUF_F32 || kv->type == SL_GGUF_F64)
        snprintf(buf, cap, "%g", sl_gguf_arr_float(kv, 0));
    else if (kv->type == SL_GGUF_U64)
        snprintf(buf, cap, "%.0f", sl_gguf_arr_float(kv, 0)); /* beyond int64 too */
    else
        snprintf(buf, cap, "%" PRId64, sl_gguf_arr_int(kv, 0));
    return buf;
}

static void print_tensor(FILE *out, const char *label, const sl_gguf_tensor_t *t)
{
    fprintf(out, "%-12s %s  %s  ne [", label, t->name, sl_ggml_type_name(t->type));
    for (int d = 0; d < (t->ndim ? t->ndim : 1); d++)
        fprintf(out, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    fprintf(out, "]\n");
}

int sl_inspect_gguf(const char *path, FILE *out, sl_error_t *err)
{
    sl_gguf_t *g = sl_gguf_open(path, err);
    if (!g)
        return -1;
    char b1[128];
    const char *arch = "?", *s;
    size_t arch_len = 1, len;
    sl_error_t ignore;
    if (sl_gguf_get_str(g, "general.architecture", &s, &len, &ignore) == 0) {
        arch = s;
        arch_len = len;
    }
    fprintf(out, "model        %s\n", path);
    fprintf(out, "format       GGUF version %u, %d metadata keys, %d tensors\n", sl_gguf_version(g),
            sl_gguf_kv_count(g), sl_gguf_tensor_count(g));
    fprintf(out, "architecture %.*s", (int)arch_len, arch);
    if (sl_gguf_get_str(g, "general.name", &s, &len, &ignore) == 0)
        fprintf(out, " (%.*s)", (int)len, s);
    fprintf(out, "\n");

    /* every scalar <arch>.* key: the hyperparameters a loader reads */
    for (int i = 0; i < sl_gguf_kv_count(g); i++) {
        const sl_gguf_kv_t *kv = sl_gguf_kv_at(g, i);
        if (strncmp(kv->key, arch, arch_len) == 0 && kv->key[arch_len] == '.')
            fprintf(out, "  %-40s %s\n", kv->key, fmt_kv(kv, b1, sizeof b1));
    }

    const sl_gguf_kv_t *tokens = sl_gguf_find(g, "tokenizer.ggml.tokens");
    const sl_gguf_kv_t *merges = sl_gguf_find(g, "tokenizer.ggml.merges");
    const char *tm = "?";
    size_t tm_len = 1;
    if (sl_gguf_get_str(g, "tokenizer.ggml.model", &s, &len, &ignore) == 0) {
        tm = s;
        tm_len = len;
    }
    if (tokens || tm_len != 1 || *tm != '?') {
        fprintf(out, "tokenizer    %.*s", (int)tm_len, tm);
        if (sl_gguf_get_str(g, "tokenizer.ggml.pre", &s, &len, &ignore) == 0)
            fprintf(out, " (pre-tokenizer %.*s)", (int)len, s);
        fprintf(out, ", %" PRIu64 " tokens", tokens ? tokens->n : 0);
        if (merges)
            fprintf(out, ", %" PRIu64 " merges", merges->n);
        fprintf(out, "\n");
    } else {
        fprintf(out, "tokenizer    none\n");
    }

    /* tensor count by type, in order of first appearance */
    int n = sl_gguf_tensor_count(g), ntypes = 0;
    int types[64], counts[64];
    uint64_t params = 0;
    for (int i = 0; i < n; i++) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_at(g, i);
        params += (uint64_t)(t->ne[0] * sl_gguf_rows(t));
        int k = 0;
        while (k < ntypes && types[k] != t->type)
            k++;
        if (k == ntypes && ntypes < 64) {
            types[ntypes] = t->type;
            counts[ntypes++] = 0;
        }
        if (k < ntypes)
            counts[k]++;
    }
    fprintf(out, "tensors      %d (", n);
    for (int k = 0; k < ntypes; k++)
        fprintf(out, "%s%d %s", k ? ", " : "", counts[k], sl_ggml_type_name(types[k]));
    fprintf(out, "), %" PRIu64 " parameters\n", params);
    if (n > 0)
        print_tensor(out, "first", sl_gguf_tensor_at(g, 0));
    if (n > 1)
        print_tensor(out, "last", sl_gguf_tensor_at(g, n - 1));
    sl_gguf_close(g);
    return 0;
}
