/*
 * bert.c — the BERT encoder family: config.json + sentence-transformers files, checking and
 * loading this tensor-parallel rank's slice of the weights from (possibly sharded) safetensors,
 * and the post-LN encoder forward with pooling, normalisation or the classification head.
 *
 * Forward, on packed tokens: the caller's padded batch [B, S] is packed on the host into its
 * T = sum(lengths) real tokens (row b's tokens are rows offsets[b] .. offsets[b+1]-1; D = hidden,
 * Dh = D / heads), so no GEMM or elementwise op ever sees a padding position:
 *   x = LN(word[ids] + pos[position in row] + type[type_ids])             x: [T, D]
 *   per layer:
 *     q, k, v = x Wq^T + bq, ...        column-parallel: this rank's heads  [T, Hl*Dh]
 *     k, v -> per-row caches [B, S, Hl, Dh] (sl_kv_write: slot = row, pos = position)
 *     ctx = attention_kv(q, caches, kv_len = lengths), not causal          [T, Hl*Dh]
 *     o = ctx Wo^T                      row-parallel: a partial sum         [T, D]
 *     o = allreduce(o) + bo; x = LN(x + o)
 *     h = gelu(x Wi^T + bi)             column-parallel: this rank's FFN slice [T, Il]
 *     o = h Wo2^T -> allreduce + bo2; x = LN(x + o)
 *   pool (over each row's tokens): mean, the first token, or tanh(pooler(first token));
 *   optional L2 norm; classify: classifier(tanh(pooler(first token))).
 * Activations, biases and LayerNorm parameters are f32; linear weights and embedding tables are
 * in the run's precision and GEMM inputs are cast to it, with f32 accumulation.
 */
#include "models/bert.h"

#include "common/sl_fs.h"
#include "common/sl_json.h"
#include "common/sl_profile.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/elementwise.h"
#include "models/formats/safetensors.h"
#include "models/formats/weights.h"
#include "partition/units.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this loader reads it in place"
#endif

#define SL_BERT_MAX_JSON (64u << 20) /* a config or index file larger than this is refused */
#define SL_BERT_MAX_DIM 2147483647LL /* BLAS takes int dimensions */
#define SL_BERT_MAX_SHARDS 4096

/* ---- small helpers --------------------------------------------------------------------- */

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ---- config ------------------------------------------------------------------------------ */

/* An integer key in [lo, SL_BERT_MAX_DIM]; a missing key is an error when `required`,
 * otherwise *out = def. */
static int json_int(const cJSON *root, const char *key, int required, int64_t def, int64_t lo,
                    const char *path, int64_t *out, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return sl_errorf(err, "%s: key '%s': missing (a BERT config needs it)", path, key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)lo) || d > (double)SL_BERT_MAX_DIM || d != floor(d))
        return sl_errorf(err, "%s: key '%s': expected an integer >= %lld", path, key,
                         (long long)lo);
    *out = (int64_t)d;
    return 0;
}

/* A string key that must equal `want` (default `want` when missing). */
static int json_expect_str(const cJSON *root, const char *key, const char *want, int required,
                           const char *what, const char *path, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return sl_errorf(err, "%s: key '%s': missing (expected \"%s\")", path, key, want);
        return 0;
    }
    if (!cJSON_IsString(v))
        return sl_errorf(err, "%s: key '%s': expected a string (\"%s\")", path, key, want);
    if (strcmp(v->valuestring, want) != 0)
        return sl_errorf(err, "%s: key '%s': %s \"%.64s\" is not supported (only \"%s\"%s)", path,
                         key, what, v->valuestring, want,
                         strcmp(key, "hidden_act") == 0 ? ", the exact erf GELU" : "");
    return 0;
}

static int json_true(const cJSON *root, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, key));
}

/* id2label {"0": "neg", "1": "pos"} -> names in id order; else num_labels -> "LABEL_i";
 * else 2, as transformers' default. */
static int parse_labels(const cJSON *root, const char *path, sl_bert_config_t *cfg, sl_error_t *err)
{
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "id2label");
    int64_t n = 2;
    if (map && !cJSON_IsNull(map)) {
        if (!cJSON_IsObject(map) || cJSON_GetArraySize(map) < 1)
            return sl_errorf(err, "%s: key 'id2label': expected a non-empty object", path);
        n = cJSON_GetArraySize(map);
    } else if (json_int(root, "num_labels", 0, 2, 1, path, &n, err) != 0) {
        return -1;
    }
    if (n > 1000000)
        return sl_errorf(err, "%s: key 'id2label': %lld labels is too many", path, (long long)n);
    cfg->n_labels = (int)n;
    cfg->labels = sl_xcalloc((size_t)n, sizeof *cfg->labels);
    if (map && !cJSON_IsNull(map)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, map)
        {
            char *end;
            errno = 0;
            long id = strtol(e->string, &end, 10);
            if (errno || end == e->string || *end || id < 0 || id >= n)
                return sl_errorf(err,
                                 "%s: key 'id2label': key \"%.32s\" is not a label id in 0..%lld",
                                 path, e->string, (long long)n - 1);
            if (!cJSON_IsString(e))
                return sl_errorf(err, "%s: key 'id2label': label %ld is not a string", path, id);
            if (cfg->labels[id])
                return sl_errorf(err, "%s: key 'id2label': label id %ld appears twice", path, id);
            cfg->labels[id] = sl_xstrdup(e->valuestring);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            char name[32];
            snprintf(name, sizeof name, "LABEL_%lld", (long long)i);
            cfg->labels[i] = sl_xstrdup(name);
        }
    }
    return 0;
}

/* pruned_heads {"0": [2, 5], "1": [0, 7], ...}: the heads transformers' prune_heads removed
 * (the tensors hold only the others, in order). Every layer must have lost as many heads, so
 * that one head count describes the model (and --tp can split it). */
static int parse_pruned_heads(const cJSON *root, const char *path, sl_bert_config_t *cfg,
                              sl_error_t *err)
{
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(root, "pruned_heads");
    if (!ph || cJSON_IsNull(ph) || (cJSON_IsObject(ph) && !ph->child))
        return 0;
    if (!cJSON_IsObject(ph))
        return sl_errorf(err, "%s: key 'pruned_heads': expected an object {layer: [heads]}", path);
    int64_t per_layer = -1;
    int64_t seen = 0;
    for (int64_t l = 0; l < cfg->layers; l++) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)l);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(ph, key);
        int64_t n = 0;
        if (a) {
            if (!cJSON_IsArray(a))
                return sl_errorf(err, "%s: key 'pruned_heads': layer %s: expected an array", path,
                                 key);
            const cJSON *h;
            unsigned char *seen_head = sl_xcalloc((size_t)cfg->heads, 1);
            int bad = 0;
            cJSON_ArrayForEach(h, a)
            {
                if (!cJSON_IsNumber(h) || h->valuedouble != (double)(int64_t)h->valuedouble ||
                    h->valuedouble < 0 || h->valuedouble >= (double)cfg->heads) {
                    bad = sl_errorf(err,
                                    "%s: key 'pruned_heads': layer %s: expected head numbers "
                                    "in 0..%lld",
                                    path, key, (long long)cfg->heads - 1);
                    break;
                }
                if (seen_head[(int64_t)h->valuedouble]++) {
                    bad = sl_errorf(err, "%s: key 'pruned_heads': layer %s: head %d twice", path,
                                    key, (int)h->valuedouble);
                    break;
                }
                n++;
            }
            free(seen_head);
            if (bad)
                return -1;
            seen++;
        }
        if (per_layer >= 0 && n != per_layer)
            return sl_errorf(err,
                             "%s: key 'pruned_heads': layer %s lost %lld heads, layer 0 %lld "
                             "(shardline needs as many heads in every layer)",
                             path, key, (long long)n, (long long)per_layer);
        per_layer = n;
    }
    if (seen != cJSON_GetArraySize(ph))
        return sl_errorf(err, "%s: key 'pruned_heads': a key is not a layer number in 0..%lld",
                         path, (long long)cfg->layers - 1);
    if (per_layer >= cfg->heads)
        return sl_errorf(err, "%s: key 'pruned_heads': every head of a layer is pruned", path);
    cfg->heads -= per_layer;
    return 0;
}

static int parse_model_config(const char *path, const cJSON *root, sl_bert_config_t *cfg,
                              sl_error_t *err)
{
    if (json_expect_str(root, "model_type", "bert", 1, "model type", path, err) != 0)
        return -1;

    int classifier = 0;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (arch && !cJSON_IsNull(arch)) {
        if (!cJSON_IsArray(arch))
            return sl_errorf(err, "%s: key 'architectures': expected an array of names", path);
        const cJSON *a;
        cJSON_ArrayForEach(a, arch)
        {
            if (!cJSON_IsString(a))
                return sl_errorf(err, "%s: key 'architectures': expected an array of names", path);
            if (strcmp(a->valuestring, "BertForSequenceClassification") == 0)
                classifier = 1;
            else if (strcmp(a->valuestring, "BertModel") != 0)
                return sl_errorf(err,
                                 "%s: key 'architectures': \"%.64s\" is not supported (BertModel "
                                 "and BertForSequenceClassification are)",
                                 path, a->valuestring);
        }
    }

    if (json_int(root, "hidden_size", 1, 0, 1, path, &cfg->hidden, err) != 0 ||
        json_int(root, "num_hidden_layers", 1, 0, 1, path, &cfg->layers, err) != 0 ||
        json_int(root, "num_attention_heads", 1, 0, 1, path, &cfg->heads, err) != 0 ||
        json_int(root, "intermediate_size", 1, 0, 1, path, &cfg->intermediate, err) != 0 ||
        json_int(root, "vocab_size", 1, 0, 1, path, &cfg->vocab, err) != 0 ||
        json_int(root, "max_position_embeddings", 1, 0, 1, path, &cfg->max_positions, err) != 0 ||
        json_int(root, "type_vocab_size", 0, 2, 1, path, &cfg->type_vocab, err) != 0)
        return -1;
    if (cfg->hidden % cfg->heads != 0)
        return sl_errorf(err,
                         "%s: key 'num_attention_heads': %lld does not divide key 'hidden_size' "
                         "%lld",
                         path, (long long)cfg->heads, (long long)cfg->hidden);
    cfg->heads_config = cfg->heads;
    cfg->head_dim = cfg->hidden / cfg->heads;
    if (parse_pruned_heads(root, path, cfg, err) != 0)
        return -1;

    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_eps");
    cfg->ln_eps = 1e-12f;
    if (eps && !cJSON_IsNull(eps)) {
        if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0.0) || eps->valuedouble > 1.0)
            return sl_errorf(err, "%s: key 'layer_norm_eps': expected a number in (0, 1]", path);
        cfg->ln_eps = (float)eps->valuedouble;
    }

    if (json_expect_str(root, "hidden_act", "gelu", 0, "activation", path, err) != 0 ||
        json_expect_str(root, "position_embedding_type", "absolute", 0, "position embedding", path,
                        err) != 0)
        return -1;
    if (json_true(root, "is_decoder"))
        return sl_errorf(err, "%s: key 'is_decoder': a decoder BERT is not supported", path);
    if (json_true(root, "add_cross_attention"))
        return sl_errorf(err, "%s: key 'add_cross_attention': cross-attention is not supported",
                         path);
    return classifier ? parse_labels(root, path, cfg, err) : 0;
}

/* max_length: sentence_bert_config.json max_seq_length, else a sane tokenizer model_max_length,
 * else max_positions; never above max_positions. */
static int load_max_length(const char *dir, sl_bert_config_t *cfg, sl_error_t *err)
{
    int64_t len = 0;
    char *p = sl_path_join(dir, "sentence_bert_config.json");
    if (file_exists(p)) {
        cJSON *root = sl_json_read(p, SL_BERT_MAX_JSON, 0, err);
        int rc = root ? json_int(root, "max_seq_length", 0, 0, 1, p, &len, err) : -1;
        cJSON_Delete(root);
        if (rc != 0) {
            free(p);
            return -1;
        }
    }
    free(p);
    if (len == 0) {
        p = sl_path_join(dir, "tokenizer_config.json");
        if (file_exists(p)) {
            cJSON *root = sl_json_read(p, SL_BERT_MAX_JSON, 0, err);
            if (!root) {
                free(p);
                return -1;
            }
            /* transformers writes a huge sentinel (1e30) when the length is unknown. */
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model_max_length");
            if (cJSON_IsNumber(v) && v->valuedouble >= 1.0 &&
                v->valuedouble <= (double)cfg->max_positions)
                len = (int64_t)v->valuedouble;
            cJSON_Delete(root);
        }
        free(p);
    }
    if (len == 0 || len > cfg->max_positions)
        len = cfg->max_positions;
    cfg->max_length = (int)len;
    return 0;
}

/* The pooling module's config.json: exactly one of mean / cls. */
static int parse_pooling(const char *path, sl_bert_config_t *cfg, sl_error_t *err)
{
    cJSON *root = sl_json_read(path, SL_BERT_MAX_JSON, 0, err);
    if (!root)
        return -1;
    int rc = 0;
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(root, "pooling_mode");
    if (cJSON_IsString(mode)) { /* newer sentence-transformers spell it as one string */
        if (strcmp(mode->valuestring, "mean") == 0)
            cfg->pooling = SL_BERT_POOL_MEAN;
        else if (strcmp(mode->valuestring, "cls") == 0)
            cfg->pooling = SL_BERT_POOL_CLS;
        else
            rc = sl_errorf(err,
                           "%s: key 'pooling_mode': \"%.32s\" pooling is not supported (mean and "
                           "cls are)",
                           path, mode->valuestring);
    } else {
        static const char *unsupported[] = {
            "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"};
        for (size_t i = 0; rc == 0 && i < sizeof unsupported / sizeof unsupported[0]; i++)
            if (json_true(root, unsupported[i]))
                rc = sl_errorf(err,
                               "%s: key '%s': this pooling mode is not supported (mean and "
                               "cls are)",
                               path, unsupported[i]);
        int mean = json_true(root, "pooling_mode_mean_tokens");
        int cls = json_true(root, "pooling_mode_cls_token");
        if (rc == 0 && mean && cls)
            rc = sl_errorf(err,
                           "%s: keys 'pooling_mode_mean_tokens' and 'pooling_mode_cls_token' are "
                           "both true (concatenated pooling is not supported)",
                           path);
        if (rc == 0)
            cfg->pooling = cls ? SL_BERT_POOL_CLS : SL_BERT_POOL_MEAN;
    }
    cJSON_Delete(root);
    return rc;
}

/* modules.json: where the Pooling module lives, whether a Normalize follows; other modules
 * (Dense, ...) would change the output, so they are refused. Without modules.json, a
 * 1_Pooling/config.json is still honoured. */
static int load_sentence_modules(const char *dir, sl_bert_config_t *cfg, sl_error_t *err)
{
    char *mpath = sl_path_join(dir, "modules.json");
    char *pool_dir = NULL;
    int rc = 0;
    if (file_exists(mpath)) {
        cJSON *root = sl_json_read(mpath, SL_BERT_MAX_JSON, 1, err);
        if (!root) {
            free(mpath);
            return -1;
        }
        const cJSON *mod;
        cJSON_ArrayForEach(mod, root)
        {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(mod, "type");
            const cJSON *path = cJSON_GetObjectItemCaseSensitive(mod, "path");
            if (!cJSON_IsString(type)) {
                rc = sl_errorf(err, "%s: a module has no 'type' string", mpath);
                break;
            }
            const char *t = type->valuestring;
            const char *dot = strrchr(t, '.');
            const char *base = dot ? dot + 1 : t;
            if (strcmp(base, "Transformer") == 0) {
                continue;
            } else if (strcmp(base, "Pooling") == 0) {
                free(pool_dir);
                pool_dir = sl_xstrdup(cJSON_IsString(path) ? path->valuestring : "1_Pooling");
            } else if (strcmp(base, "Normalize") == 0) {
                cfg->normalize = 1;
            } else {
                rc = sl_errorf(err,
                               "%s: key 'type': module \"%.96s\" is not supported "
                               "(Transformer, Pooling and Normalize are)",
                               mpath, t);
                break;
            }
        }
        cJSON_Delete(root);
    }
    free(mpath);
    if (rc != 0) {
        free(pool_dir);
        return -1;
    }
    char *sub = sl_path_join(pool_dir ? pool_dir : "1_Pooling", "config.json");
    char *ppath = sl_path_join(dir, sub);
    if (file_exists(ppath))
        rc = parse_pooling(ppath, cfg, err);
    free(sub);
    free(ppath);
    free(pool_dir);
    return rc;
}

int sl_bert_config_load(const char *dir, sl_bert_config_t *cfg, sl_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->pooling = SL_BERT_POOL_MEAN;
    char *path = sl_path_join(dir, "config.json");
    cJSON *root = sl_json_read(path, SL_BERT_MAX_JSON, 0, err);
    int rc = root ? parse_model_config(path, root, cfg, err) : -1;
    cJSON_Delete(root);
    free(path);
    if (rc == 0)
        rc = load_max_length(dir, cfg, err);
    if (rc == 0)
        rc = load_sentence_modules(dir, cfg, err);
    if (rc != 0)
        sl_bert_config_free(cfg);
    return rc;
}

void sl_bert_config_free(sl_bert_config_t *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; cfg->labels && i < cfg->n_labels; i++)
        free(cfg->labels[i]);
    free(cfg->labels);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- the weight files -------------------------------------------------------------------- */

/* The name a tensor has in the files: `name` with the "bert." prefix or without, or, for
 * LayerNorm parameters, their old gamma/beta spelling `alt` likewise; into buf. 0 if absent. */
static int resolve(const sl_weights_t *w, const char *name, const char *alt, char *buf, size_t cap)
{
    const char *base[4] = {name, name, alt, alt};
    for (int i = 0; i < 4; i++) {
        if (!base[i])
            continue;
        snprintf(buf, cap, i % 2 == 0 ? "bert.%s" : "%s", base[i]);
        if (sl_weights_has(w, buf))
            return 1;
    }
    return 0;
}

/* Finds `name` (or `alt`), checks it is float with the expected shape ([d0] when ndim is 1) and
 * leaves its name in the files in `found`; a missing optional tensor leaves found empty. */
static int find_checked(const sl_weights_t *w, const char *name, const char *alt, int ndim,
                        int64_t d0, int64_t d1, int optional, char found[160], sl_error_t *err)
{
    char ws[64];
    int64_t want[2] = {d0, d1};
    if (!resolve(w, name, alt, found, 160)) {
        found[0] = '\0';
        if (optional)
            return 0;
        return sl_errorf(err, "%s: tensor '%s'%s%s%s %s is missing", sl_weights_where(w), name,
                         alt ? " (or '" : "", alt ? alt : "", alt ? "')" : "",
                         sl_st_fmt_shape(ws, sizeof ws, ndim, want));
    }
    return sl_weights_check(w, found, d0, ndim == 2 ? d1 : 0, err);
}

/* Uploads rows [r0, r0+nr) x cols [c0, c0+nc) of a checked matrix as [nr, nc] in dt, or the
 * [c0, c0+nc) slice of a vector when nr == 0. Aborts if a checked tensor cannot be read. */
static sl_tensor_t *upload_block(sl_backend_t *be, const sl_weights_t *w, const char *name,
                                 int64_t r0, int64_t nr, int64_t c0, int64_t nc, sl_dtype_t dt)
{
    sl_error_t err;
    sl_tensor_t *t = sl_weights_upload(w, be, name, r0, nr, c0, nc, nr == 0, dt, NULL, NULL, &err);
    if (!t)
        SL_FATAL("%s", err.msg);
    return t;
}

/* ---- the loaded model -------------------------------------------------------------------- */

typedef struct {
    sl_tensor_t *wq, *wk, *wv;  /* dtype [Hl*Dh, D]: rows of this rank's heads */
    sl_tensor_t *bq, *bk, *bv;  /* f32 [Hl*Dh] */
    sl_tensor_t *wo;            /* dtype [D, Hl*Dh]: columns of this rank's heads */
    sl_tensor_t *bo;            /* f32 [D], added once after the all-reduce */
    sl_tensor_t *ln1_g, *ln1_b; /* f32 [D] attention.output.LayerNorm */
    sl_tensor_t *wi;            /* dtype [Il, D]: rows of this rank's FFN slice */
    sl_tensor_t *bi;            /* f32 [Il] */
    sl_tensor_t *wo2;           /* dtype [D, Il]: the matching columns */
    sl_tensor_t *bo2;           /* f32 [D] */
    sl_tensor_t *ln2_g, *ln2_b; /* f32 [D] output.LayerNorm */
} sl_bert_layer_t;

struct sl_bert {
    sl_bert_config_t cfg;
    sl_backend_t *be;
    int tp_size, tp_rank;
    sl_dtype_t dtype;       /* embedding tables and GEMM inputs (f32 under --precision int8/w8a8) */
    sl_dtype_t wdtype;      /* linear weights: dtype, or SL_WEIGHTS_INT8 (loaded as Q8_0) */
    int64_t heads_local;    /* Hl = heads / T */
    int64_t head_dim;       /* Dh = D / heads */
    int64_t inter_local;    /* Il = intermediate / T */
    sl_bert_stats_t *stats; /* calibration statistics, or NULL (sl_bert_set_stats) */

    sl_tensor_t *word;            /* dtype [vocab, D] */
    sl_tensor_t *pos;             /* dtype [max_positions, D] */
    sl_tensor_t *type;            /* dtype [type_vocab, D] */
    sl_tensor_t *emb_g, *emb_b;   /* f32 [D] embeddings.LayerNorm */
    sl_bert_layer_t *layers;      /* [layers] */
    sl_tensor_t *pool_w, *pool_b; /* dtype [D, D], f32 [D]; NULL when the file has no pooler */
    sl_tensor_t *cls_w, *cls_b;   /* dtype [n_labels, D], f32 [n_labels]; NULL without a head */

    /* Scratch, flat and grown to the largest batch seen; used through shaped views. Token
     * tensors hold the batch's T real tokens (rows), packed. */
    int64_t cap_rows, cap_b, cap_kv;
    sl_tensor_t *x;               /* f32 [T, D] hidden states */
    sl_tensor_t *tmp;             /* f32 [T, D] embedding addends, sublayer outputs */
    sl_tensor_t *q, *k, *v, *ctx; /* f32 [T, Hl*Dh] */
    sl_tensor_t *ffn;             /* f32 [T, Il] */
    sl_tensor_t *cast;            /* dtype [T, max(D, Il, Hl*Dh)]; only when dtype != f32 */
    sl_tensor_t *ids, *pos_ids, *type_ids, *slot; /* i32 [T]; slot = the token's row */
    sl_tensor_t *kc, *vc;                     /* f32 [B, S, Hl, Dh]: each row's keys and values */
    sl_tensor_t *lengths;                     /* i32 [B] */
    sl_tensor_t *offsets;                     /* i32 [B + 1]: row b is tokens offsets[b] .. */
    sl_tensor_t *pooled, *pooled2;            /* f32 [B, D] */
    sl_tensor_t *logits;                      /* f32 [B, n_labels] */
    int32_t *h_ids, *h_pos, *h_type, *h_slot; /* host i32 [T]: the packed inputs */
    int32_t *h_off;                           /* host i32 [B + 1] */
};

/* Loads the slice of encoder.layer.{i} that this TP rank holds. */
static int load_layer(sl_bert_t *m, const sl_weights_t *w, int i, sl_error_t *err)
{
    sl_bert_layer_t *L = &m->layers[i];
    const sl_bert_config_t *c = &m->cfg;
    int64_t D = c->hidden, I = c->intermediate, Dh = m->head_dim;
    int64_t A = c->heads * Dh; /* q/k/v rows: D, less the pruned heads' */
    int64_t a0 = m->tp_rank * m->heads_local * Dh, an = m->heads_local * Dh; /* head rows */
    int64_t i0 = m->tp_rank * m->inter_local, in = m->inter_local;           /* FFN slice */
    char n1[128], n2[128];
    char t[160], b[160];

    static const char *qkv[3] = {"query", "key", "value"};
    sl_tensor_t **dw[3] = {&L->wq, &L->wk, &L->wv}, **db[3] = {&L->bq, &L->bk, &L->bv};
    for (int j = 0; j < 3; j++) {
        snprintf(n1, sizeof n1, "encoder.layer.%d.attention.self.%s.weight", i, qkv[j]);
        snprintf(n2, sizeof n2, "encoder.layer.%d.attention.self.%s.bias", i, qkv[j]);
        if (find_checked(w, n1, NULL, 2, A, D, 0, t, err) != 0 ||
            find_checked(w, n2, NULL, 1, A, 0, 0, b, err) != 0)
            return -1;
        *dw[j] = upload_block(m->be, w, t, a0, an, 0, D, m->wdtype);
        *db[j] = upload_block(m->be, w, b, 0, 0, a0, an, SL_F32);
    }

    snprintf(n1, sizeof n1, "encoder.layer.%d.attention.output.dense.weight", i);
    snprintf(n2, sizeof n2, "encoder.layer.%d.attention.output.dense.bias", i);
    if (find_checked(w, n1, NULL, 2, D, A, 0, t, err) != 0 ||
        find_checked(w, n2, NULL, 1, D, 0, 0, b, err) != 0)
        return -1;
    L->wo = upload_block(m->be, w, t, 0, D, a0, an, m->wdtype);
    L->bo = upload_block(m->be, w, b, 0, 0, 0, D, SL_F32);

    snprintf(n1, sizeof n1, "encoder.layer.%d.intermediate.dense.weight", i);
    snprintf(n2, sizeof n2, "encoder.layer.%d.intermediate.dense.bias", i);
    if (find_checked(w, n1, NULL, 2, I, D, 0, t, err) != 0 ||
        find_checked(w, n2, NULL, 1, I, 0, 0, b, err) != 0)
        return -1;
    L->wi = upload_block(m->be, w, t, i0, in, 0, D, m->wdtype);
    L->bi = upload_block(m->be, w, b, 0, 0, i0, in, SL_F32);

    snprintf(n1, sizeof n1, "encoder.layer.%d.output.dense.weight", i);
    snprintf(n2, sizeof n2, "encoder.layer.%d.output.dense.bias", i);
    if (find_checked(w, n1, NULL, 2, D, I, 0, t, err) != 0 ||
        find_checked(w, n2, NULL, 1, D, 0, 0, b, err) != 0)
        return -1;
    L->wo2 = upload_block(m->be, w, t, 0, D, i0, in, m->wdtype);
    L->bo2 = upload_block(m->be, w, b, 0, 0, 0, D, SL_F32);

    static const char *lns[2] = {"attention.output", "output"};
    sl_tensor_t **g[2] = {&L->ln1_g, &L->ln2_g}, **be[2] = {&L->ln1_b, &L->ln2_b};
    for (int j = 0; j < 2; j++) {
        char a1[128], a2[128];
        snprintf(n1, sizeof n1, "encoder.layer.%d.%s.LayerNorm.weight", i, lns[j]);
        snprintf(a1, sizeof a1, "encoder.layer.%d.%s.LayerNorm.gamma", i, lns[j]);
        snprintf(n2, sizeof n2, "encoder.layer.%d.%s.LayerNorm.bias", i, lns[j]);
        snprintf(a2, sizeof a2, "encoder.layer.%d.%s.LayerNorm.beta", i, lns[j]);
        if (find_checked(w, n1, a1, 1, D, 0, 0, t, err) != 0 ||
            find_checked(w, n2, a2, 1, D, 0, 0, b, err) != 0)
            return -1;
        *g[j] = upload_block(m->be, w, t, 0, 0, 0, D, SL_F32);
        *be[j] = upload_block(m->be, w, b, 0, 0, 0, D, SL_F32);
    }
    return 0;
}

static int load_embeddings(sl_bert_t *m, const sl_weights_t *w, sl_error_t *err)
{
    const sl_bert_config_t *c = &m->cfg;
    int64_t D = c->hidden;
    char word[160], pos[160], type[160], g[160], b[160];
    if (find_checked(w, "embeddings.word_embeddings.weight", NULL, 2, c->vocab, D, 0, word, err) !=
            0 ||
        find_checked(w, "embeddings.position_embeddings.weight", NULL, 2, c->max_positions, D, 0,
                     pos, err) != 0 ||
        find_checked(w, "embeddings.token_type_embeddings.weight", NULL, 2, c->type_vocab, D, 0,
                     type, err) != 0 ||
        find_checked(w, "embeddings.LayerNorm.weight", "embeddings.LayerNorm.gamma", 1, D, 0, 0, g,
                     err) != 0 ||
        find_checked(w, "embeddings.LayerNorm.bias", "embeddings.LayerNorm.beta", 1, D, 0, 0, b,
                     err) != 0)
        return -1;
    m->word = upload_block(m->be, w, word, 0, c->vocab, 0, D, m->dtype);
    m->pos = upload_block(m->be, w, pos, 0, c->max_positions, 0, D, m->dtype);
    m->type = upload_block(m->be, w, type, 0, c->type_vocab, 0, D, m->dtype);
    m->emb_g = upload_block(m->be, w, g, 0, 0, 0, D, SL_F32);
    m->emb_b = upload_block(m->be, w, b, 0, 0, 0, D, SL_F32);
    return 0;
}

/* The pooler (optional unless pooling is POOLER or there is a classifier) and the classifier.
 * A classifier.weight the config did not announce still defines the head (labels LABEL_i). */
static int load_heads(sl_bert_t *m, const sl_weights_t *w, sl_error_t *err)
{
    sl_bert_config_t *c = &m->cfg;
    int64_t D = c->hidden;
    char pw[160], pb[160], cw[160], cb[160];
    int cnd = 0, readable = 0;
    int64_t cshape[8];
    if (c->n_labels == 0 && resolve(w, "classifier.weight", NULL, cw, sizeof cw) &&
        sl_weights_shape(w, cw, &cnd, cshape, &readable) == 0 && cnd == 2 && cshape[0] >= 1 &&
        cshape[0] <= 1000000) {
        c->n_labels = (int)cshape[0];
        c->labels = sl_xcalloc((size_t)c->n_labels, sizeof *c->labels);
        for (int i = 0; i < c->n_labels; i++) {
            char name[32];
            snprintf(name, sizeof name, "LABEL_%d", i);
            c->labels[i] = sl_xstrdup(name);
        }
    }
    int need_pooler = c->pooling == SL_BERT_POOL_POOLER || c->n_labels > 0;
    if (find_checked(w, "pooler.dense.weight", NULL, 2, D, D, !need_pooler, pw, err) != 0 ||
        find_checked(w, "pooler.dense.bias", NULL, 1, D, 0, !need_pooler, pb, err) != 0)
        return -1;
    if (!pw[0] != !pb[0])
        return sl_errorf(err, "%s: tensor '%s' is present without '%s'", sl_weights_where(w),
                         pw[0] ? "pooler.dense.weight" : "pooler.dense.bias",
                         pw[0] ? "pooler.dense.bias" : "pooler.dense.weight");
    if (pw[0]) {
        m->pool_w = upload_block(m->be, w, pw, 0, D, 0, D, m->wdtype);
        m->pool_b = upload_block(m->be, w, pb, 0, 0, 0, D, SL_F32);
    }
    if (c->n_labels > 0) {
        int64_t n = c->n_labels;
        if (find_checked(w, "classifier.weight", NULL, 2, n, D, 0, cw, err) != 0 ||
            find_checked(w, "classifier.bias", NULL, 1, n, 0, 0, cb, err) != 0)
            return -1;
        m->cls_w = upload_block(m->be, w, cw, 0, n, 0, D, m->wdtype);
        m->cls_b = upload_block(m->be, w, cb, 0, 0, 0, n, SL_F32);
    }
    return 0;
}

sl_bert_t *sl_bert_load(const char *dir, sl_backend_t *be, int tp_size, int tp_rank,
                        sl_dtype_t dtype, sl_error_t *err)
{
    return sl_bert_load_with(dir, NULL, be, tp_size, tp_rank, dtype, err);
}

sl_bert_t *sl_bert_load_with(const char *dir, const sl_bert_config_t *cfg, sl_backend_t *be,
                             int tp_size, int tp_rank, sl_dtype_t dtype, sl_error_t *err)
{
    if (sl_weights_load_args(dir, dtype, tp_size, tp_rank, err) != 0)
        return NULL;
    sl_bert_t *m = sl_xcalloc(1, sizeof *m);
    sl_weights_t *w = NULL;
    m->be = be;
    m->tp_size = tp_size;
    m->tp_rank = tp_rank;
    m->wdtype = dtype;
    m->dtype = dtype == SL_WEIGHTS_INT8 ? SL_F32 : dtype;
    if (cfg) { /* parsed already: a copy, so the model owns its config (labels: the one pointer) */
        m->cfg = *cfg;
        m->cfg.labels = NULL;
        if (cfg->labels) {
            m->cfg.labels = sl_xcalloc((size_t)cfg->n_labels + 1, sizeof *m->cfg.labels);
            for (int i = 0; i < cfg->n_labels; i++)
                m->cfg.labels[i] = sl_xstrdup(cfg->labels[i]);
        }
    } else if (sl_bert_config_load(dir, &m->cfg, err) != 0) {
        goto fail;
    }
    const sl_bert_config_t *c = &m->cfg;

    /* Megatron split: whole heads per rank, and an equal FFN slice. */
    int64_t off;
    if (c->heads % tp_size != 0) {
        sl_errorf(err,
                  "%s/config.json: key 'num_attention_heads' (%lld) is not divisible by --tp %d",
                  dir, (long long)c->heads, tp_size);
        goto fail;
    }
    if (c->intermediate % tp_size != 0) {
        sl_errorf(err, "%s/config.json: key 'intermediate_size' (%lld) is not divisible by --tp %d",
                  dir, (long long)c->intermediate, tp_size);
        goto fail;
    }
    if (sl_split_even(c->heads, tp_size, tp_rank, &off, &m->heads_local, err) != 0 ||
        sl_split_even(c->intermediate, tp_size, tp_rank, &off, &m->inter_local, err) != 0)
        goto fail;
    m->head_dim = c->head_dim;

    if (!(w = sl_weights_open(dir, err)) || load_embeddings(m, w, err) != 0)
        goto fail;
    m->layers = sl_xcalloc((size_t)c->layers, sizeof *m->layers);
    for (int i = 0; i < c->layers; i++)
        if (load_layer(m, w, i, err) != 0)
            goto fail;
    if (load_heads(m, w, err) != 0)
        goto fail;
    sl_weights_close(w);
    return m;

fail:
    sl_weights_close(w);
    sl_bert_free(m);
    return NULL;
}

static void free_scratch(sl_bert_t *m)
{
    sl_tensor_t **all[] = {&m->x,        &m->tmp,    &m->q,       &m->k,     &m->v,
                           &m->ctx,      &m->ffn,    &m->cast,    &m->ids,   &m->pos_ids,
                           &m->type_ids, &m->slot,   &m->kc,      &m->vc,    &m->lengths,
                           &m->offsets,  &m->pooled, &m->pooled2, &m->logits};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sl_tensor_free(*all[i]);
        *all[i] = NULL;
    }
    int32_t **host[] = {&m->h_ids, &m->h_pos, &m->h_type, &m->h_slot, &m->h_off};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) {
        free(*host[i]);
        *host[i] = NULL;
    }
    m->cap_rows = m->cap_b = m->cap_kv = 0;
}

void sl_bert_free(sl_bert_t *m)
{
    if (!m)
        return;
    free_scratch(m);
    for (int i = 0; m->layers && i < m->cfg.layers; i++) {
        sl_bert_layer_t *L = &m->layers[i];
        sl_tensor_t *all[] = {L->wq,    L->wk,    L->wv, L->bq, L->bk,  L->bv,  L->wo,    L->bo,
                              L->ln1_g, L->ln1_b, L->wi, L->bi, L->wo2, L->bo2, L->ln2_g, L->ln2_b};
        for (size_t j = 0; j < sizeof all / sizeof all[0]; j++)
            sl_tensor_free(all[j]);
    }
    free(m->layers);
    sl_tensor_t *rest[] = {m->word,   m->pos,    m->type,  m->emb_g, m->emb_b,
                           m->pool_w, m->pool_b, m->cls_w, m->cls_b};
    for (size_t j = 0; j < sizeof rest / sizeof rest[0]; j++)
        sl_tensor_free(rest[j]);
    sl_bert_config_free(&m->cfg);
    free(m);
}

const sl_bert_config_t *sl_bert_config(const sl_bert_t *m) { return &m->cfg; }

/* ---- forward ----------------------------------------------------------------------------- */

static void grow(sl_backend_t *be, sl_tensor_t **t, sl_dtype_t dt, int64_t n)
{
    sl_tensor_free(*t);
    *t = sl_tensor_new1(be, dt, n > 0 ? n : 1);
}

/* Scratch for B rows of at most S tokens, T tokens in all. Grows, never shrinks. */
static void ensure_scratch(sl_bert_t *m, int64_t B, int64_t S, int64_t T)
{
    const sl_bert_config_t *c = &m->cfg;
    int64_t rows = T, D = c->hidden, A = m->heads_local * m->head_dim, Il = m->inter_local;
    if (rows > m->cap_rows) {
        grow(m->be, &m->x, SL_F32, rows * D);
        grow(m->be, &m->tmp, SL_F32, rows * D);
        grow(m->be, &m->q, SL_F32, rows * A);
        grow(m->be, &m->k, SL_F32, rows * A);
        grow(m->be, &m->v, SL_F32, rows * A);
        grow(m->be, &m->ctx, SL_F32, rows * A);
        grow(m->be, &m->ffn, SL_F32, rows * Il);
        if (m->dtype != SL_F32) {
            int64_t width = D > Il ? D : Il;
            grow(m->be, &m->cast, m->dtype, rows * (width > A ? width : A));
        }
        grow(m->be, &m->ids, SL_I32, rows);
        grow(m->be, &m->pos_ids, SL_I32, rows);
        grow(m->be, &m->type_ids, SL_I32, rows);
        grow(m->be, &m->slot, SL_I32, rows);
        int32_t **host[] = {&m->h_ids, &m->h_pos, &m->h_type, &m->h_slot};
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) {
            free(*host[i]);
            *host[i] = sl_xmalloc((size_t)rows * sizeof **host[i]);
        }
        m->cap_rows = rows;
    }
    if (B * S > m->cap_kv) {
        grow(m->be, &m->kc, SL_F32, B * S * A);
        grow(m->be, &m->vc, SL_F32, B * S * A);
        m->cap_kv = B * S;
    }
    if (B > m->cap_b) {
        grow(m->be, &m->lengths, SL_I32, B);
        grow(m->be, &m->offsets, SL_I32, B + 1);
        free(m->h_off);
        m->h_off = sl_xmalloc((size_t)(B + 1) * sizeof *m->h_off);
        grow(m->be, &m->pooled, SL_F32, B * D);
        grow(m->be, &m->pooled2, SL_F32, B * D);
        if (c->n_labels > 0)
            grow(m->be, &m->logits, SL_F32, B * c->n_labels);
        if (m->dtype != SL_F32 && B * D > sl_tensor_numel(m->cast))
            grow(m->be, &m->cast, m->dtype, B * D);
        m->cap_b = B;
    }
}

static void check_inputs(const sl_bert_t *m, sl_comm_t *comm, const int32_t *ids,
                         const int32_t *type_ids, const int32_t *lengths, int64_t B, int64_t S)
{
    const sl_bert_config_t *c = &m->cfg;
    if (m->tp_size > 1 && (!comm || sl_comm_size(comm) != m->tp_size))
        SL_FATAL("bert: the model is split over %d ranks but the communicator has %d", m->tp_size,
                 comm ? sl_comm_size(comm) : 0);
    if (B < 1 || S < 1 || S > c->max_positions || B * S > SL_BERT_MAX_DIM)
        SL_FATAL("bert: batch [%lld, %lld] (sequence length must be 1..%lld)", (long long)B,
                 (long long)S, (long long)c->max_positions);
    for (int64_t b = 0; b < B; b++)
        if (lengths[b] < 1 || lengths[b] > S)
            SL_FATAL("bert: row %lld has length %d (must be 1..%lld)", (long long)b, lengths[b],
                     (long long)S);
    for (int64_t i = 0; i < B * S; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab)
            SL_FATAL("bert: token id %d at row %lld position %lld is outside the vocabulary "
                     "(0..%lld)",
                     ids[i], (long long)(i / S), (long long)(i % S), (long long)c->vocab - 1);
        if (type_ids && (type_ids[i] < 0 || type_ids[i] >= c->type_vocab))
            SL_FATAL("bert: token type %d at row %lld position %lld is outside 0..%lld",
                     type_ids[i], (long long)(i / S), (long long)(i % S),
                     (long long)c->type_vocab - 1);
    }
}

void sl_bert_set_stats(sl_bert_t *m, sl_bert_stats_t *stats)
{
    if (stats && m->tp_size != 1)
        SL_FATAL("bert: calibration statistics need the whole model on one rank (tp 1)");
    m->stats = stats;
}

/* stats[g] += sum over the T rows of |t[row, g * width .. (g + 1) * width)|: a [T, G * width]
 * tensor's absolute values summed per group of `width` columns. Copies to the host: for
 * calibration only. */
static void add_abs_groups(const sl_tensor_t *t, int64_t T, int64_t G, int64_t width, double *stats)
{
    float *h = sl_xmalloc((size_t)(T * G * width) * sizeof(float));
    sl_copy_d2h(h, t, (size_t)(T * G * width) * sizeof(float));
    for (int64_t r = 0; r < T; r++)
        for (int64_t g = 0; g < G; g++) {
            const float *p = h + (r * G + g) * width;
            double acc = 0;
            for (int64_t j = 0; j < width; j++)
                acc += fabsf(p[j]);
            stats[g] += acc;
        }
    free(h);
}

/* Runs the encoder over the batch's real tokens, packed; leaves the hidden states in m->x
 * [T, D] and the row offsets on the backend. Returns T. */
static int64_t encode(sl_bert_t *m, sl_comm_t *comm, const int32_t *ids, const int32_t *type_ids,
                      const int32_t *lengths, int64_t B, int64_t S)
{
    check_inputs(m, comm, ids, type_ids, lengths, B, S);
    int64_t T = 0;
    for (int64_t b = 0; b < B; b++)
        T += lengths[b];
    ensure_scratch(m, B, S, T);
    const sl_bert_config_t *c = &m->cfg;
    int64_t D = c->hidden, Hl = m->heads_local, Dh = m->head_dim;
    int64_t A = Hl * Dh, Il = m->inter_local;

    /* Pack on the host: token t of the batch is (row slot[t], position pos[t]). */
    int64_t t = 0;
    for (int64_t b = 0; b < B; b++) {
        m->h_off[b] = (int32_t)t;
        for (int64_t j = 0; j < lengths[b]; j++, t++) {
            m->h_ids[t] = ids[b * S + j];
            m->h_type[t] = type_ids ? type_ids[b * S + j] : 0;
            m->h_pos[t] = (int32_t)j;
            m->h_slot[t] = (int32_t)b;
        }
    }
    m->h_off[B] = (int32_t)T;
    sl_tensor_t ids_v = sl_tensor_view(m->ids, 1, T, 0, 0, 0);
    sl_tensor_t pos_v = sl_tensor_view(m->pos_ids, 1, T, 0, 0, 0);
    sl_tensor_t typ_v = sl_tensor_view(m->type_ids, 1, T, 0, 0, 0);
    sl_tensor_t slot_v = sl_tensor_view(m->slot, 1, T, 0, 0, 0);
    sl_tensor_t len_v = sl_tensor_view(m->lengths, 1, B, 0, 0, 0);
    sl_tensor_t off_v = sl_tensor_view(m->offsets, 1, B + 1, 0, 0, 0);
    sl_copy_h2d(&ids_v, m->h_ids, (size_t)T * sizeof *ids);
    sl_copy_h2d(&pos_v, m->h_pos, (size_t)T * sizeof *ids);
    sl_copy_h2d(&typ_v, m->h_type, (size_t)T * sizeof *ids);
    sl_copy_h2d(&slot_v, m->h_slot, (size_t)T * sizeof *ids);
    sl_copy_h2d(&len_v, lengths, (size_t)B * sizeof *lengths);
    sl_copy_h2d(&off_v, m->h_off, (size_t)(B + 1) * sizeof *lengths);

    sl_tensor_t x = sl_tensor_view(m->x, 2, T, D, 0, 0);     /* f32 [T, D] */
    sl_tensor_t tmp = sl_tensor_view(m->tmp, 2, T, D, 0, 0); /* f32 [T, D] */
    sl_embedding(m->word, &ids_v, &x);
    sl_embedding(m->pos, &pos_v, &tmp);
    sl_add(&x, &tmp);
    sl_embedding(m->type, &typ_v, &tmp);
    sl_add(&x, &tmp);
    sl_layernorm(&x, m->emb_g, m->emb_b, c->ln_eps, &x);

    sl_tensor_t q = sl_tensor_view(m->q, 2, T, A, 0, 0), k = sl_tensor_view(m->k, 2, T, A, 0, 0);
    sl_tensor_t v = sl_tensor_view(m->v, 2, T, A, 0, 0),
                ctx = sl_tensor_view(m->ctx, 2, T, A, 0, 0);
    /* The same memory seen as [T, Hl, Dh] for the attention ops; caches [B, S, Hl, Dh]. */
    sl_tensor_t q3 = sl_tensor_view(m->q, 3, T, Hl, Dh, 0),
                k3 = sl_tensor_view(m->k, 3, T, Hl, Dh, 0);
    sl_tensor_t v3 = sl_tensor_view(m->v, 3, T, Hl, Dh, 0),
                ctx3 = sl_tensor_view(m->ctx, 3, T, Hl, Dh, 0);
    sl_tensor_t kc = sl_tensor_view(m->kc, 4, B, S, Hl, Dh),
                vc = sl_tensor_view(m->vc, 4, B, S, Hl, Dh);
    sl_tensor_t ffn = sl_tensor_view(m->ffn, 2, T, Il, 0, 0);
    float scale = 1.0f / sqrtf((float)Dh);

    if (m->stats)
        m->stats->tokens += T;
    for (int64_t l = 0; l < c->layers; l++) {
        const sl_bert_layer_t *L = &m->layers[l];
        SL_RANGE_PUSHF("bert layer %lld", (long long)l);
        /* Self-attention over this rank's heads: q, k, v [T, Hl*Dh]; each row attends to its
         * own lengths[b] keys. */
        sl_linear_cast(&x, L->wq, L->bq, &q, m->cast);
        sl_linear_cast(&x, L->wk, L->bk, &k, m->cast);
        sl_linear_cast(&x, L->wv, L->bv, &v, m->cast);
        sl_kv_write(&kc, &k3, &slot_v, &pos_v);
        sl_kv_write(&vc, &v3, &slot_v, &pos_v);
        sl_attention_kv(&q3, &kc, &vc, &slot_v, &pos_v, &len_v, scale, 0, &ctx3);
        if (m->stats)
            add_abs_groups(&ctx, T, Hl, Dh, m->stats->head_abs + l * Hl);
        sl_linear_row_parallel(comm, &ctx, L->wo, L->bo, &tmp, m->cast); /* [T, D] */
        sl_add(&tmp, &x);
        sl_layernorm(&tmp, L->ln1_g, L->ln1_b, c->ln_eps, &x);

        /* FFN over this rank's slice: ffn [T, Il]. */
        sl_linear_cast(&x, L->wi, L->bi, &ffn, m->cast);
        sl_activation(&ffn, SL_ACT_GELU);
        if (m->stats)
            add_abs_groups(&ffn, T, Il, 1, m->stats->ffn_abs + l * Il);
        sl_linear_row_parallel(comm, &ffn, L->wo2, L->bo2, &tmp, m->cast); /* [T, D] */
        sl_add(&tmp, &x);
        sl_layernorm(&tmp, L->ln2_g, L->ln2_b, c->ln_eps, &x);
        SL_RANGE_POP();
    }
    return T;
}

/* pooled2 [B, D] = tanh(pooler(first token of each row)), after encode. */
static sl_tensor_t pooler_output(sl_bert_t *m, int64_t B, int64_t T)
{
    int64_t D = m->cfg.hidden;
    sl_tensor_t x = sl_tensor_view(m->x, 2, T, D, 0, 0);
    sl_tensor_t off_v = sl_tensor_view(m->offsets, 1, B + 1, 0, 0, 0);
    sl_tensor_t cls = sl_tensor_view(m->pooled, 2, B, D, 0, 0);
    sl_tensor_t out = sl_tensor_view(m->pooled2, 2, B, D, 0, 0);
    sl_pool_packed(&x, &off_v, SL_POOL_CLS, &cls);
    sl_linear_cast(&cls, m->pool_w, m->pool_b, &out, m->cast);
    sl_activation(&out, SL_ACT_TANH);
    return out;
}

void sl_bert_embed(sl_bert_t *m, sl_comm_t *comm, const int32_t *ids, const int32_t *type_ids,
                   const int32_t *lengths, int64_t B, int64_t S, float *out)
{
    const sl_bert_config_t *c = &m->cfg;
    if (c->pooling == SL_BERT_POOL_POOLER && !m->pool_w)
        SL_FATAL("bert: pooler pooling, but the model has no pooler.dense weights");
    int64_t T = encode(m, comm, ids, type_ids, lengths, B, S);
    int64_t D = c->hidden;
    sl_tensor_t pooled;
    if (c->pooling == SL_BERT_POOL_POOLER) {
        pooled = pooler_output(m, B, T);
    } else {
        sl_tensor_t x = sl_tensor_view(m->x, 2, T, D, 0, 0);
        sl_tensor_t off_v = sl_tensor_view(m->offsets, 1, B + 1, 0, 0, 0);
        pooled = sl_tensor_view(m->pooled, 2, B, D, 0, 0);
        sl_pool_packed(&x, &off_v, c->pooling == SL_BERT_POOL_CLS ? SL_POOL_CLS : SL_POOL_MEAN,
                       &pooled);
    }
    if (c->normalize)
        sl_l2_normalize(&pooled);
    sl_copy_d2h(out, &pooled, (size_t)(B * D) * sizeof *out);
}

void sl_bert_classify(sl_bert_t *m, sl_comm_t *comm, const int32_t *ids, const int32_t *type_ids,
                      const int32_t *lengths, int64_t B, int64_t S, float *logits)
{
    const sl_bert_config_t *c = &m->cfg;
    if (c->n_labels <= 0 || !m->cls_w)
        SL_FATAL("bert: classify on a model without a classification head");
    int64_t T = encode(m, comm, ids, type_ids, lengths, B, S);
    /* BertForSequenceClassification: pooler output -> dropout (identity) -> classifier. */
    sl_tensor_t pooled = pooler_output(m, B, T);
    sl_tensor_t lg = sl_tensor_view(m->logits, 2, B, c->n_labels, 0, 0);
    sl_linear_cast(&pooled, m->cls_w, m->cls_b, &lg, m->cast);
    sl_copy_d2h(logits, &lg, (size_t)(B * c->n_labels) * sizeof *logits);
}
