/*
 * llama.c — LLaMA-family decoders: configuration (config.json or GGUF metadata), loading this TP
 * rank's slice of the weights, and the pre-norm decoder forward over packed tokens with a KV
 * cache; the vocabulary-parallel LM head gives log-probabilities or gathered logits.
 *
 * Forward of one step (T packed tokens, D = hidden, Hl/KVl = this rank's query/KV heads,
 * Dh = head_dim, Il = this rank's FFN slice):
 *   x = embed[ids]                                                   x: [T, D]
 *   per layer:
 *     h = rmsnorm(x)                                                 [T, D]
 *     q = h Wq^T (+bq), k = h Wk^T (+bk), v = h Wv^T (+bv)           [T, Hl*Dh], [T, KVl*Dh]
 *     rope(q), rope(k) at the tokens' positions
 *     cache[slot, pos] = k, v; ctx = causal attention over the slot   [T, Hl*Dh]
 *     x += allreduce(ctx Wo^T) (+bo)                                  row-parallel
 *     h = rmsnorm(x); gu = h [Wgate; Wup]^T; x += allreduce(swiglu(gu) Wdown^T)
 *   hs = rmsnorm(x[sel])                                             [n_sel, D]
 *   LM head: logits = hs Wlm[v0 : v0+Vl]^T                           [n_sel, Vl] per rank
 * Activations and norm weights are f32; linear weights and the embedding table are in the run's
 * precision and GEMM inputs are cast to it, with f32 accumulation. Loaded as stored
 * (SL_WEIGHTS_AS_STORED), a GGUF's Q8_0/Q4_0/Q4_1 matrices stay quantized, so do its
 * Q5_0/Q5_1/Q4_K/Q5_K/Q6_K ones where the backend packs them (sl_weights_keep; other quantized
 * types become Q8_0): scored tokens meet tiles of them dequantised to f32, generation's tokens are
 * quantized per 32-block for the integer GEMM (sl_backend_set_bulk_rows, kernels/cpu/cpu_qgemm.h),
 * and the embedding rows are dequantised as they are gathered.
 */
#include "models/llama.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sl_fs.h"
#include "common/sl_json.h"
#include "common/sl_profile.h"
#include "models/formats/weights.h"
#include "partition/units.h"

#define SL_LLAMA_MAX_JSON (16u << 20)
#define SL_LLAMA_MAX_DIM 2147483647LL
#define SL_LLAMA_LM_CHUNK_BYTES (64u << 20) /* logits scratch per LM-head chunk */

/* ---- configuration ----------------------------------------------------------------------- */

/* A number key in [lo, hi]; integer when `integer`. Missing: error when required, else def. */
static int json_num(const cJSON *o, const char *key, int required, double def, double lo, double hi,
                    int integer, const char *path, double *out, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return sl_errorf(err, "%s: key '%s': missing (a LLaMA-family config needs it)", path,
                             key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi) || (integer && d != floor(d)))
        return sl_errorf(err, "%s: key '%s': expected %s in [%g, %g]", path, key,
                         integer ? "an integer" : "a number", lo, hi);
    *out = d;
    return 0;
}

static int json_i64(const cJSON *o, const char *key, int required, int64_t def, int64_t lo,
                    const char *path, int64_t *out, sl_error_t *err)
{
    double d = 0;
    if (json_num(o, key, required, (double)def, (double)lo, (double)SL_LLAMA_MAX_DIM, 1, path, &d,
                 err) != 0)
        return -1;
    *out = (int64_t)d;
    return 0;
}

/* The rope settings of an object holding rope_type (or type), factor, low/high_freq_factor,
 * original_max_position_embeddings (rope_scaling, or rope_parameters). */
static int parse_rope_scaling(const cJSON *rs, const char *key, const char *path,
                              sl_llama_config_t *c, sl_error_t *err)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!t)
        t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    if (strcmp(type, "default") == 0) {
        snprintf(c->rope_type, sizeof c->rope_type, "default");
        return 0;
    }
    if (strcmp(type, "linear") != 0 && strcmp(type, "llama3") != 0)
        return sl_errorf(err,
                         "%s: key '%s': rope type \"%.32s\" is not supported (default, linear, "
                         "llama3)",
                         path, key, type);
    snprintf(c->rope_type, sizeof c->rope_type, "%s", type);
    if (json_num(rs, "factor", 1, 1, 1e-6, 1e6, 0, path, &c->rope_factor, err) != 0)
        return -1;
    if (strcmp(type, "llama3") == 0) {
        if (json_num(rs, "low_freq_factor", 1, 1, 1e-6, 1e6, 0, path, &c->rope_low_freq, err) !=
                0 ||
            json_num(rs, "high_freq_factor", 1, 4, 1e-6, 1e6, 0, path, &c->rope_high_freq, err) !=
                0 ||
            json_num(rs, "original_max_position_embeddings", 1, 8192, 1, 1e9, 1, path,
                     &c->rope_orig_ctx, err) != 0)
            return -1;
        if (c->rope_high_freq <= c->rope_low_freq)
            return sl_errorf(err, "%s: key '%s': high_freq_factor must exceed low_freq_factor",
                             path, key);
    }
    return 0;
}

/* A token id of config.json (bos_token_id, eos_token_id): -1 when absent, not a number (null,
 * as some configs have) or -1; any other number must be a whole id in [0, 2^31), else the file
 * is refused. */
static int token_id(const cJSON *v, const char *key, const char *path, int64_t *out,
                    sl_error_t *err)
{
    *out = -1;
    if (!cJSON_IsNumber(v) || v->valuedouble == -1.0)
        return 0;
    const double d = v->valuedouble;
    if (!(d >= 0.0 && d < 2147483648.0) || d != floor(d))
        return sl_errorf(err, "%s: %s %g is not a token id (a whole number in 0..2^31-1)", path,
                         key, d);
    *out = (int64_t)d;
    return 0;
}

static int config_from_json(const char *dir, sl_llama_config_t *c, sl_error_t *err)
{
    char *path = sl_path_join(dir, "config.json");
    cJSON *root = sl_json_read(path, SL_LLAMA_MAX_JSON, 0, err);
    int rc = -1;
    if (!root)
        goto out;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const char *type = cJSON_IsString(mt) ? mt->valuestring : "";
    if (strcmp(type, "llama") != 0 && strcmp(type, "mistral") != 0 && strcmp(type, "qwen2") != 0) {
        sl_errorf(err,
                  "%s: key 'model_type': \"%.32s\" is not a supported decoder (llama, mistral, "
                  "qwen2)",
                  path, type);
        goto out;
    }
    snprintf(c->arch, sizeof c->arch, "%s", type);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !(cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0)) {
        sl_errorf(err, "%s: key 'hidden_act': only \"silu\" (SwiGLU) is supported", path);
        goto out;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "mlp_bias"))) {
        sl_errorf(err, "%s: key 'mlp_bias': MLP biases are not supported", path);
        goto out;
    }
    double eps = 0, theta = 0;
    if (json_i64(root, "hidden_size", 1, 0, 1, path, &c->hidden, err) != 0 ||
        json_i64(root, "num_hidden_layers", 1, 0, 1, path, &c->layers, err) != 0 ||
        json_i64(root, "num_attention_heads", 1, 0, 1, path, &c->heads, err) != 0 ||
        json_i64(root, "num_key_value_heads", 0, c->heads, 1, path, &c->kv_heads, err) != 0 ||
        json_i64(root, "intermediate_size", 1, 0, 1, path, &c->intermediate, err) != 0 ||
        json_i64(root, "vocab_size", 1, 0, 1, path, &c->vocab, err) != 0 ||
        json_i64(root, "max_position_embeddings", 0, 2048, 1, path, &c->max_positions, err) != 0 ||
        json_num(root, "rms_norm_eps", 0, 1e-6, 0, 1, 0, path, &eps, err) != 0)
        goto out;
    if (c->hidden % c->heads != 0 && !cJSON_GetObjectItemCaseSensitive(root, "head_dim")) {
        sl_errorf(err, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", path,
                  (long long)c->hidden, (long long)c->heads);
        goto out;
    }
    if (json_i64(root, "head_dim", 0, c->hidden / c->heads, 2, path, &c->head_dim, err) != 0)
        goto out;
    c->rms_eps = (float)eps;
    c->tied = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings"));
    c->qkv_bias = strcmp(type, "qwen2") == 0 ||
                  cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "attention_bias"));

    /* RoPE: the newer single object rope_parameters, or rope_theta + rope_scaling. */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    snprintf(c->rope_type, sizeof c->rope_type, "default");
    if (cJSON_IsObject(rp)) {
        if (json_num(rp, "rope_theta", 0, 10000, 1e-6, 1e12, 0, path, &theta, err) != 0 ||
            parse_rope_scaling(rp, "rope_parameters", path, c, err) != 0)
            goto out;
    } else {
        if (json_num(root, "rope_theta", 0, 10000, 1e-6, 1e12, 0, path, &theta, err) != 0)
            goto out;
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
        if (cJSON_IsObject(rs) && parse_rope_scaling(rs, "rope_scaling", path, c, err) != 0)
            goto out;
    }
    c->rope_theta = theta;

    /* Sliding-window attention equals full attention while rows stay within the window. */
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    int use_sw = strcmp(type, "qwen2") != 0 ||
                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_sliding_window"));
    if (use_sw && cJSON_IsNumber(sw) && sw->valuedouble >= 1 &&
        sw->valuedouble < (double)c->max_positions) {
        sl_log_info("%s: sliding_window %g: rows are limited to that many tokens", path,
                    sw->valuedouble);
        c->max_positions = (int64_t)sw->valuedouble;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsArray(e))
        e = cJSON_GetArrayItem(e, 0);
    if (token_id(e, "eos_token_id", path, &c->eos_id, err) != 0 ||
        token_id(cJSON_GetObjectItemCaseSensitive(root, "bos_token_id"), "bos_token_id", path,
                 &c->bos_id, err) != 0)
        goto out;
    rc = 0;
out:
    cJSON_Delete(root);
    free(path);
    return rc;
}

static int gguf_int(const sl_gguf_t *g, const char *arch, const char *key, int required,
                    int64_t def, int64_t *out, sl_error_t *err)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!sl_gguf_find(g, full)) {
        if (required)
            return sl_errorf(err, "%s: key '%s' is missing", sl_gguf_path(g), full);
        *out = def;
        return 0;
    }
    if (sl_gguf_get_int(g, full, out, err) != 0)
        return -1;
    if (*out < 1 || *out > SL_LLAMA_MAX_DIM)
        return sl_errorf(err, "%s: key '%s': %lld is out of range", sl_gguf_path(g), full,
                         (long long)*out);
    return 0;
}

static int gguf_float(const sl_gguf_t *g, const char *arch, const char *key, double def,
                      double *out, sl_error_t *err)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!sl_gguf_find(g, full)) {
        *out = def;
        return 0;
    }
    return sl_gguf_get_float(g, full, out, err);
}

static int config_from_gguf(const sl_gguf_t *g, sl_llama_config_t *c, sl_error_t *err)
{
    const char *path = sl_gguf_path(g);
    const char *s;
    size_t n;
    if (sl_gguf_get_str(g, "general.architecture", &s, &n, err) != 0)
        return -1;
    if (!((n == 5 && memcmp(s, "llama", 5) == 0) || (n == 5 && memcmp(s, "qwen2", 5) == 0)))
        return sl_errorf(err,
                         "%s: key 'general.architecture': \"%.*s\" is not a supported decoder "
                         "(llama, qwen2)",
                         path, (int)(n < 32 ? n : 32), s);
    snprintf(c->arch, sizeof c->arch, "%.*s", (int)n, s);
    const char *a = c->arch;
    double eps = 0, theta = 0;
    if (gguf_int(g, a, "embedding_length", 1, 0, &c->hidden, err) != 0 ||
        gguf_int(g, a, "block_count", 1, 0, &c->layers, err) != 0 ||
        gguf_int(g, a, "attention.head_count", 1, 0, &c->heads, err) != 0 ||
        gguf_int(g, a, "attention.head_count_kv", 0, c->heads, &c->kv_heads, err) != 0 ||
        gguf_int(g, a, "feed_forward_length", 1, 0, &c->intermediate, err) != 0 ||
        gguf_int(g, a, "context_length", 0, 2048, &c->max_positions, err) != 0 ||
        gguf_int(g, a, "attention.key_length", 0, c->hidden / c->heads, &c->head_dim, err) != 0 ||
        gguf_float(g, a, "attention.layer_norm_rms_epsilon", 1e-5, &eps, err) != 0 ||
        gguf_float(g, a, "rope.freq_base", 10000, &theta, err) != 0)
        return -1;
    c->rms_eps = (float)eps;
    c->rope_theta = theta;
    snprintf(c->rope_type, sizeof c->rope_type, "default");
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (sl_gguf_find(g, key)) {
        if (sl_gguf_get_str(g, key, &s, &n, err) != 0)
            return -1;
        if (n == 6 && memcmp(s, "linear", 6) == 0) {
            snprintf(c->rope_type, sizeof c->rope_type, "linear");
            if (gguf_float(g, a, "rope.scaling.factor", 1, &c->rope_factor, err) != 0)
                return -1;
            if (!(c->rope_factor > 0))
                return sl_errorf(err, "%s: key '%s.rope.scaling.factor' must be > 0", path, a);
        } else if (!(n == 4 && memcmp(s, "none", 4) == 0)) {
            return sl_errorf(err, "%s: key '%s': rope scaling \"%.*s\" is not supported", path, key,
                             (int)(n < 32 ? n : 32), s);
        }
    }
    const sl_gguf_tensor_t *emb = sl_gguf_tensor_find(g, "token_embd.weight");
    if (!emb || emb->ndim != 2)
        return sl_errorf(err, "%s: tensor 'token_embd.weight' (2-D) is missing", path);
    c->vocab = emb->ne[1];
    c->tied = sl_gguf_tensor_find(g, "output.weight") == NULL;
    c->qkv_bias = sl_gguf_tensor_find(g, "blk.0.attn_q.bias") != NULL;
    int64_t v;
    c->bos_id = c->eos_id = -1;
    if (sl_gguf_find(g, "tokenizer.ggml.bos_token_id") &&
        sl_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, NULL) == 0)
        c->bos_id = v;
    if (sl_gguf_find(g, "tokenizer.ggml.eos_token_id") &&
        sl_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v, NULL) == 0)
        c->eos_id = v;
    return 0;
}

int sl_llama_detect(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return 0;
    if (S_ISREG(sb.st_mode)) {
        FILE *f = fopen(path, "rb");
        char magic[4] = {0};
        int ok = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
        if (f)
            fclose(f);
        return ok;
    }
    char *cfg = sl_path_join(path, "config.json");
    cJSON *root = sl_json_read(cfg, SL_LLAMA_MAX_JSON, 0, NULL);
    free(cfg);
    const cJSON *mt = root ? cJSON_GetObjectItemCaseSensitive(root, "model_type") : NULL;
    int ok = cJSON_IsString(mt) &&
             (strcmp(mt->valuestring, "llama") == 0 || strcmp(mt->valuestring, "mistral") == 0 ||
              strcmp(mt->valuestring, "qwen2") == 0);
    cJSON_Delete(root);
    return ok;
}

int sl_llama_config_load(const char *path, sl_llama_config_t *cfg, sl_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        sl_gguf_t *g = sl_gguf_open(path, err);
        if (!g)
            return -1;
        int rc = config_from_gguf(g, cfg, err);
        sl_gguf_close(g);
        return rc;
    }
    return config_from_json(path, cfg, err);
}

/* ---- the loaded model -------------------------------------------------------------------- */

typedef struct {
    sl_tensor_t *attn_norm, *ffn_norm; /* f32 [D] */
    sl_tensor_t *wq, *wk, *wv;         /* dtype [Hl*Dh, D], [KVl*Dh, D], [KVl*Dh, D] */
    sl_tensor_t *bq, *bk, *bv;         /* f32 [Hl*Dh], [KVl*Dh] (NULL without biases) */
    sl_tensor_t *wo;                   /* dtype [D, Hl*Dh]: columns of this rank's heads */
    sl_tensor_t *bo;                   /* f32 [D] or NULL; added once, after the all-reduce */
    sl_tensor_t *wgu;                  /* dtype [2*Il, D]: gate rows, then up rows */
    sl_tensor_t *wd;                   /* dtype [D, Il] */
} sl_llama_layer_t;

struct sl_llama {
    sl_llama_config_t cfg;
    sl_backend_t *be;
    int tp_size, tp_rank;
    sl_dtype_t dtype;     /* as loaded: f32, f16, bf16, SL_WEIGHTS_AS_STORED or _INT8 */
    sl_dtype_t act_dtype; /* of the float weights and GEMM inputs: dtype, or f32 */
    int64_t hl, kvl, il;  /* this rank's query heads, KV heads, FFN slice */
    int64_t v0, vl;       /* this rank's vocabulary rows of the LM head */
    sl_bpe_t *tok;

    sl_tensor_t *embed;    /* dtype [V, D] (replicated) */
    sl_tensor_t *lm_own;   /* dtype [Vl, D] when not tied; Q8_0 when tied under int8 */
    sl_tensor_t lm;        /* the LM head shard: lm_own, or a view of embed's rows */
    sl_tensor_t *out_norm; /* f32 [D] */
    sl_tensor_t *inv_freq; /* f32 [Dh/2] */
    sl_llama_layer_t *layers;

    /* Scratch, grown to the largest step seen, used through shaped views. */
    int64_t cap_t, cap_sel, cap_s;
    sl_tensor_t *x, *h, *o;                /* f32 [T, D] */
    sl_tensor_t *q, *ctx;                  /* f32 [T, Hl*Dh] */
    sl_tensor_t *k, *v;                    /* f32 [T, KVl*Dh] */
    sl_tensor_t *gu;                       /* f32 [T, 2*Il] */
    sl_tensor_t *act;                      /* f32 [T, Il] */
    sl_tensor_t *cast;                     /* dtype [T, max(D, Hl*Dh, Il)] when dtype != f32 */
    sl_tensor_t *ids, *slot, *pos;         /* i32 [T] */
    sl_tensor_t *kv_len;                   /* i32 [S] */
    sl_tensor_t *sel;                      /* i32 [n_sel] */
    sl_tensor_t *hsel;                     /* f32 [n_sel, D] */
    int64_t n_sel;                         /* selected tokens of the last forward */
    int64_t n_sel_prompt;                  /* of which bulk tokens (the first ones) */
    int64_t lm_chunk;                      /* rows per LM-head chunk */
    sl_tensor_t *logits;                   /* f32 [lm_chunk, Vl] */
    sl_tensor_t *rowmax, *sumexp, *picked; /* f32 [lm_chunk] */
    sl_tensor_t *target;                   /* i32 [lm_chunk] */
    sl_tensor_t *topv, *topi; /* f32 / i32 [lm_chunk, k] (k <= 256), made on first use */
};

struct sl_llama_cache {
    int64_t slots, ctx, n; /* n buffers (1 when shared by the layers) */
    sl_tensor_t **k, **v;  /* f32 [slots, ctx, KVl, Dh] each */
};

const sl_llama_config_t *sl_llama_config(const sl_llama_t *m) { return &m->cfg; }
const sl_bpe_t *sl_llama_tokenizer(const sl_llama_t *m) { return m->tok; }

/* Tensor names of both sources. */
typedef enum {
    W_Q,
    W_K,
    W_V,
    W_O,
    W_GATE,
    W_UP,
    W_DOWN,
    W_ATTN_NORM,
    W_FFN_NORM,
    W_QB,
    W_KB,
    W_VB,
    W_OB
} wname_t;

static void layer_name(const sl_weights_t *w, int layer, wname_t which, char *buf, size_t cap)
{
    static const char *hf[] = {
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
        "mlp.down_proj.weight",    "input_layernorm.weight",  "post_attention_layernorm.weight",
        "self_attn.q_proj.bias",   "self_attn.k_proj.bias",   "self_attn.v_proj.bias",
        "self_attn.o_proj.bias"};
    static const char *gg[] = {"attn_q.weight",      "attn_k.weight",    "attn_v.weight",
                               "attn_output.weight", "ffn_gate.weight",  "ffn_up.weight",
                               "ffn_down.weight",    "attn_norm.weight", "ffn_norm.weight",
                               "attn_q.bias",        "attn_k.bias",      "attn_v.bias",
                               "attn_output.bias"};
    if (sl_weights_gguf(w))
        snprintf(buf, cap, "blk.%d.%s", layer, gg[which]);
    else
        snprintf(buf, cap, "model.layers.%d.%s", layer, hf[which]);
}

/* GGUF (LLaMA) stores q/k rows of each head interleaved for llama.cpp's RoPE pairing: HF row
 * (head h, half j, index i) is GGUF row h*Dh + 2i + j. Undo it for `heads` whole heads of rows
 * (each `rb` bytes: f32 values, a bias's single value, or a row of quantized blocks). */
static void unpermute_heads(unsigned char *rows, int64_t heads, int64_t dh, size_t rb)
{
    int64_t half = dh / 2;
    unsigned char *tmp = sl_xmalloc((size_t)dh * rb);
    for (int64_t h = 0; h < heads; h++) {
        unsigned char *blk = rows + (size_t)(h * dh) * rb;
        for (int64_t j = 0; j < 2; j++)
            for (int64_t i = 0; i < half; i++)
                memcpy(tmp + (size_t)(j * half + i) * rb, blk + (size_t)(2 * i + j) * rb, rb);
        memcpy(blk, tmp, (size_t)dh * rb);
    }
    free(tmp);
}

/* Checks a tensor of full shape [d0, d1] (d1 = 0: a vector) and uploads the block
 * rows [r0, r0+nr) x cols [c0, c0+nc); `qk_heads` > 0 un-permutes that many heads of rows (GGUF
 * LLaMA q/k). *out stays NULL for a missing optional tensor. */
static void unpermute_rows(void *rows, int64_t n, size_t rb, void *ctx)
{
    const int64_t *heads_dh = ctx;
    unpermute_heads(rows, heads_dh[0], heads_dh[1], rb);
}

static int load_block(sl_llama_t *m, const sl_weights_t *w, const char *name, int64_t d0,
                      int64_t d1, int64_t r0, int64_t nr, int64_t c0, int64_t nc, int optional,
                      int64_t qk_heads, sl_dtype_t dt, sl_tensor_t **out, sl_error_t *err)
{
    *out = NULL;
    if (optional && !sl_weights_has(w, name))
        return 0;
    if (sl_weights_check(w, name, d0, d1, err) != 0)
        return -1;
    int64_t heads_dh[2] = {qk_heads, m->cfg.head_dim};
    /* a vector's slice is given as rows [r0, r0 + nr) of its elements */
    *out = d1 == 0 ? sl_weights_upload(w, m->be, name, 0, 0, r0, nr, 1, dt,
                                       qk_heads ? unpermute_rows : NULL, heads_dh, err)
                   : sl_weights_upload(w, m->be, name, r0, nr, c0, nc, 0, dt,
                                       qk_heads ? unpermute_rows : NULL, heads_dh, err);
    return *out ? 0 : -1;
}

/* Gate and up rows of this rank, stacked into one [2*Il, D] weight (kept quantized when both
 * are stored in the same quantized type and the load keeps them). */
static int load_gate_up(sl_llama_t *m, const sl_weights_t *w, int i, sl_error_t *err)
{
    int64_t D = m->cfg.hidden, I = m->cfg.intermediate, i0 = m->tp_rank * m->il;
    char ng[128], nu[128];
    layer_name(w, i, W_GATE, ng, sizeof ng);
    layer_name(w, i, W_UP, nu, sizeof nu);
    if (sl_weights_check(w, ng, I, D, err) != 0 || sl_weights_check(w, nu, I, D, err) != 0)
        return -1;
    int keep = m->dtype == SL_WEIGHTS_AS_STORED &&
                       sl_weights_stored_dtype(w, ng) == sl_weights_stored_dtype(w, nu)
                   ? sl_weights_keep(w, m->be, ng, m->il, 0, D) &
                         sl_weights_keep(w, m->be, nu, m->il, 0, D)
                   : 0;
    sl_dtype_t dg = SL_F32, du = SL_F32;
    void *g = sl_weights_read(w, ng, i0, m->il, 0, D, keep, &dg, err);
    void *u = g ? sl_weights_read(w, nu, i0, m->il, 0, D, keep, &du, err) : NULL;
    if (u) {
        size_t half = sl_dtype_bytes(dg, m->il * D);
        unsigned char *both = sl_xmalloc(2 * half);
        memcpy(both, g, half);
        memcpy(both + half, u, half);
        if (dg != SL_F32) {
            m->layers[i].wgu = sl_tensor_new2(m->be, dg, 2 * m->il, D);
            sl_copy_h2d(m->layers[i].wgu, both, 2 * half);
        } else if (m->dtype == SL_WEIGHTS_INT8 ||
                   (m->dtype == SL_WEIGHTS_AS_STORED &&
                    (sl_weights_requantized(w, ng) || sl_weights_requantized(w, nu)))) {
            m->layers[i].wgu = sl_upload_int8(m->be, (const float *)both, 2 * m->il, D);
        } else {
            m->layers[i].wgu =
                sl_upload_f32(m->be, (const float *)both, 2 * m->il, D, m->act_dtype);
        }
        free(both);
        char fused[300];
        snprintf(fused, sizeof fused, "%s+%s", ng, nu);
        sl_wlog_add(fused, m->layers[i].wgu);
    }
    free(g);
    free(u);
    return u ? 0 : -1;
}

static int load_layer(sl_llama_t *m, const sl_weights_t *w, int i, sl_error_t *err)
{
    const sl_llama_config_t *c = &m->cfg;
    sl_llama_layer_t *L = &m->layers[i];
    int64_t D = c->hidden, Dh = c->head_dim, H = c->heads, KV = c->kv_heads, I = c->intermediate;
    int64_t q0 = m->tp_rank * m->hl * Dh, qn = m->hl * Dh;
    /* The KV heads this rank reads: its block, or the one head its query heads share. */
    int64_t kvh0 = KV % m->tp_size == 0 ? m->tp_rank * m->kvl : (m->tp_rank * m->hl) / (H / KV);
    int64_t k0 = kvh0 * Dh, kn = m->kvl * Dh;
    int permuted = sl_weights_gguf(w) && strcmp(c->arch, "llama") == 0;
    char n[128];
#define LB(which, d0, d1, r0, nr, c0, nc, opt, heads, dt, dst)                                     \
    (layer_name(w, i, which, n, sizeof n),                                                         \
     load_block(m, w, n, d0, d1, r0, nr, c0, nc, opt, heads, dt, dst, err))
    if (LB(W_ATTN_NORM, D, 0, 0, D, 0, 0, 0, 0, SL_F32, &L->attn_norm) != 0 ||
        LB(W_FFN_NORM, D, 0, 0, D, 0, 0, 0, 0, SL_F32, &L->ffn_norm) != 0 ||
        LB(W_Q, H * Dh, D, q0, qn, 0, D, 0, permuted ? m->hl : 0, m->dtype, &L->wq) != 0 ||
        LB(W_K, KV * Dh, D, k0, kn, 0, D, 0, permuted ? m->kvl : 0, m->dtype, &L->wk) != 0 ||
        LB(W_V, KV * Dh, D, k0, kn, 0, D, 0, 0, m->dtype, &L->wv) != 0 ||
        LB(W_O, D, H * Dh, 0, D, q0, qn, 0, 0, m->dtype, &L->wo) != 0 ||
        LB(W_DOWN, D, I, 0, D, m->tp_rank * m->il, m->il, 0, 0, m->dtype, &L->wd) != 0)
        return -1;
    if (c->qkv_bias &&
        (LB(W_QB, H * Dh, 0, q0, qn, 0, 0, 0, permuted ? m->hl : 0, SL_F32, &L->bq) != 0 ||
         LB(W_KB, KV * Dh, 0, k0, kn, 0, 0, 0, permuted ? m->kvl : 0, SL_F32, &L->bk) != 0 ||
         LB(W_VB, KV * Dh, 0, k0, kn, 0, 0, 0, 0, SL_F32, &L->bv) != 0 ||
         LB(W_OB, D, 0, 0, D, 0, 0, 1, 0, SL_F32, &L->bo) != 0))
        return -1;
#undef LB
    if (load_gate_up(m, w, i, err) != 0)
        return -1;
    sl_tensor_t *mats[6] = {L->wq, L->wk, L->wv, L->wo, L->wd, L->wgu};
    for (int j = 0; j < 6; j++)
        sl_tensor_pack(mats[j]);
    return 0;
}

/* RoPE inverse frequencies as transformers computes them (f32), with linear or LLaMA-3
 * scaling, or GGUF's rope_freqs factors. */
static int make_inv_freq(sl_llama_t *m, const sl_weights_t *w, sl_error_t *err)
{
    const sl_llama_config_t *c = &m->cfg;
    int64_t half = c->head_dim / 2;
    float *f = sl_xmalloc((size_t)half * sizeof *f);
    for (int64_t i = 0; i < half; i++)
        f[i] = (float)(1.0 / pow(c->rope_theta, (double)((float)(2 * i) / (float)c->head_dim)));
    if (strcmp(c->rope_type, "linear") == 0) {
        for (int64_t i = 0; i < half; i++)
            f[i] = f[i] / (float)c->rope_factor;
    } else if (strcmp(c->rope_type, "llama3") == 0) {
        float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq,
              hi = (float)c->rope_high_freq, old = (float)c->rope_orig_ctx;
        float lo_wl = old / lo, hi_wl = old / hi;
        for (int64_t i = 0; i < half; i++) {
            float wl = 2.0f * (float)M_PI / f[i];
            float scaled = wl > lo_wl ? f[i] / factor : f[i];
            if (!(wl < hi_wl) && !(wl > lo_wl)) { /* medium frequencies: interpolate */
                float s = (old / wl - lo) / (hi - lo);
                scaled = (1 - s) * scaled / factor + s * scaled;
            }
            f[i] = scaled;
        }
    }
    if (sl_weights_gguf(w) && sl_weights_has(w, "rope_freqs.weight")) {
        float *ff = NULL;
        if (sl_weights_check(w, "rope_freqs.weight", half, 0, err) != 0 ||
            !(ff = sl_weights_block(w, "rope_freqs.weight", 0, 1, 0, half, err))) {
            free(f);
            return -1;
        }
        for (int64_t i = 0; i < half; i++)
            f[i] /= ff[i];
        free(ff);
    }
    m->inv_freq = sl_upload_f32(m->be, f, 0, half, SL_F32);
    free(f);
    return 0;
}

/* How this rank's heads and slices follow from the config and the TP size. */
static int plan_split(sl_llama_t *m, const char *where, sl_error_t *err)
{
    const sl_llama_config_t *c = &m->cfg;
    int T = m->tp_size;
    if (c->head_dim % 2 != 0)
        return sl_errorf(err, "%s: head_dim %lld is odd; RoPE needs an even head size", where,
                         (long long)c->head_dim);
    if (c->heads % c->kv_heads != 0)
        return sl_errorf(err, "%s: %lld attention heads are not a multiple of %lld KV heads", where,
                         (long long)c->heads, (long long)c->kv_heads);
    if (c->heads % T != 0)
        return sl_errorf(err,
                         "%s: %lld attention heads do not split over --tp %d (choose a TP "
                         "size that divides %lld)",
                         where, (long long)c->heads, T, (long long)c->heads);
    m->hl = c->heads / T;
    if (c->kv_heads % T == 0) {
        m->kvl = c->kv_heads / T;
    } else if (T % c->kv_heads == 0 && (c->heads / c->kv_heads) % m->hl == 0) {
        m->kvl = 1; /* fewer KV heads than ranks: each rank holds the one its queries read */
    } else {
        return sl_errorf(err,
                         "%s: %lld KV heads (%lld query heads) do not split over --tp %d: "
                         "the TP size must divide the KV heads, or be a multiple of them "
                         "that divides the query heads",
                         where, (long long)c->kv_heads, (long long)c->heads, T);
    }
    if (c->intermediate % T != 0)
        return sl_errorf(err, "%s: intermediate_size %lld does not split over --tp %d", where,
                         (long long)c->intermediate, T);
    m->il = c->intermediate / T;
    return sl_split_even(c->vocab, T, m->tp_rank, &m->v0, &m->vl, err);
}

int sl_llama_describe(const char *path, int tp_size, FILE *out, sl_error_t *err)
{
    sl_llama_t m;
    memset(&m, 0, sizeof m);
    m.tp_size = tp_size;
    if (sl_llama_config_load(path, &m.cfg, err) != 0 || plan_split(&m, path, err) != 0)
        return -1;
    const sl_llama_config_t *c = &m.cfg;
    int64_t D = c->hidden, Dh = c->head_dim;
    fprintf(out, "model        %s\n", path);
    fprintf(out,
            "decoder      %s: %lld layers, hidden %lld, %lld query / %lld KV heads of %lld, "
            "SwiGLU %lld, vocab %lld, context %lld\n",
            c->arch, (long long)c->layers, (long long)D, (long long)c->heads,
            (long long)c->kv_heads, (long long)Dh, (long long)c->intermediate, (long long)c->vocab,
            (long long)c->max_positions);
    fprintf(out, "             RMSNorm eps %g, RoPE theta %g (%s", c->rms_eps, c->rope_theta,
            c->rope_type);
    if (strcmp(c->rope_type, "default") != 0)
        fprintf(out, ", factor %g", c->rope_factor);
    fprintf(out, "), %s embeddings%s\n", c->tied ? "tied" : "separate",
            c->qkv_bias ? ", q/k/v biases" : "");
    /* per rank: attention, FFN, norms, the replicated embedding, the LM head shard */
    int64_t layer = (m.hl * Dh) * D * 2 + (m.kvl * Dh) * D * 2 + 3 * m.il * D + 2 * D +
                    (c->qkv_bias ? (m.hl + 2 * m.kvl) * Dh : 0);
    int64_t params = layer * c->layers + c->vocab * D + D + (c->tied ? 0 : m.vl * D);
    fprintf(out,
            "per TP rank  (--tp %d) %lld query / %lld KV heads, FFN %lld, vocabulary rows "
            "%lld..%lld\n",
            tp_size, (long long)m.hl, (long long)m.kvl, (long long)m.il, (long long)m.v0,
            (long long)(m.v0 + m.vl));
    fprintf(out,
            "             %lld parameters = %.1f MiB in f32 (%.1f MiB in bf16); KV cache "
            "%.1f KiB per token\n",
            (long long)params, params * 4.0 / 1048576.0, params * 2.0 / 1048576.0,
            sl_llama_cache_slot_bytes(&m, 1) / 1024.0);
    return 0;
}

sl_llama_t *sl_llama_load(const char *path, sl_backend_t *be, int tp_size, int tp_rank,
                          sl_dtype_t dtype, sl_error_t *err)
{
    return sl_llama_load_with(path, NULL, be, tp_size, tp_rank, dtype, err);
}

sl_llama_t *sl_llama_load_with(const char *path, const sl_llama_config_t *cfg, sl_backend_t *be,
                               int tp_size, int tp_rank, sl_dtype_t dtype, sl_error_t *err)
{
    if (sl_weights_load_args(path, dtype, tp_size, tp_rank, err) != 0)
        return NULL;
    sl_weights_t *w = sl_weights_open(path, err);
    if (!w)
        return NULL;
    sl_llama_t *m = sl_xcalloc(1, sizeof *m);
    m->be = be;
    m->tp_size = tp_size;
    m->tp_rank = tp_rank;
    m->dtype = dtype;
    m->act_dtype = dtype == SL_WEIGHTS_AS_STORED || dtype == SL_WEIGHTS_INT8 ? SL_F32 : dtype;
    const sl_gguf_t *g = sl_weights_gguf(w);
    const sl_llama_config_t *c = &m->cfg;
    int rc = 0;
    if (cfg) /* parsed already (sl_llama_config_load): not read again */
        m->cfg = *cfg;
    else
        rc = g ? config_from_gguf(g, &m->cfg, err) : config_from_json(path, &m->cfg, err);
    if (rc == 0)
        rc = plan_split(m, sl_weights_where(w), err);

    /* Tokenizer: GGUF metadata, or the directory's tokenizer.json when there is one. */
    char *tj = g ? sl_xstrdup(path) : sl_path_join(path, "tokenizer.json");
    if (rc == 0 && g) {
        m->tok = sl_bpe_load_gguf(g, err);
        rc = m->tok ? 0 : -1;
    } else if (rc == 0) {
        struct stat sb;
        if (stat(tj, &sb) == 0) {
            m->tok = sl_bpe_load_json(tj, err);
            rc = m->tok ? 0 : -1;
        }
    }
    if (rc == 0 && m->tok) {
        /* An id past the embedding would abort the whole job at the first row using it. */
        int32_t id = sl_bpe_vocab_size(m->tok) - 1; /* the largest id */
        const char *tok = sl_bpe_id_to_token(m->tok, id);
        if (id >= c->vocab)
            rc = sl_errorf(err,
                           "%s: token '%.64s' has id %d, beyond the model's vocabulary of %lld ids",
                           tj, tok ? tok : "?", id, (long long)c->vocab);
        if (sl_bpe_bos_id(m->tok) >= 0)
            m->cfg.bos_id = sl_bpe_bos_id(m->tok);
        if (sl_bpe_eos_id(m->tok) >= 0)
            m->cfg.eos_id = sl_bpe_eos_id(m->tok);
    }
    free(tj);

    int64_t D = c->hidden, V = c->vocab;
    const char *emb = g ? "token_embd.weight" : "model.embed_tokens.weight";
    const char *norm = g ? "output_norm.weight" : "model.norm.weight";
    const char *head = g ? "output.weight" : "lm_head.weight";
    if (rc == 0)
        rc = load_block(m, w, emb, V, D, 0, V, 0, D, 0, 0,
                        dtype == SL_WEIGHTS_INT8 ? SL_F32 : dtype, &m->embed, err);
    if (rc == 0)
        rc = load_block(m, w, norm, D, 0, 0, D, 0, 0, 0, 0, SL_F32, &m->out_norm, err);
    /* An untied checkpoint must carry its LM head; a tied one may still ship a copy. */
    if (rc == 0 && !c->tied)
        rc = load_block(m, w, head, V, D, m->v0, m->vl, 0, D, 0, 0, dtype, &m->lm_own, err);
    if (rc == 0 && c->tied && dtype == SL_WEIGHTS_INT8) {
        /* The tied LM head, quantized as every other linear layer is (the table itself stays
         * f32 for the lookup). Listed under the table's name, which is where `calibrate`
         * records the head's input ranges. */
        float *rows = sl_weights_block(w, emb, m->v0, m->vl, 0, D, err);
        if (!rows) {
            rc = -1;
        } else {
            m->lm_own = sl_upload_int8(m->be, rows, m->vl, D);
            sl_wlog_add(emb, m->lm_own);
            free(rows);
        }
    }
    if (rc == 0) {
        /* Quantized matrices go into the backend's packed layout (sl_tensor_pack). The tied
         * table only when this rank's LM head rows are whole packed groups, since the head is
         * a view of them; the gather reads either layout. A packed-only table is packed on upload
         * (sl_weights_upload): when the head's rows are not whole groups of it, the head is a
         * copy of its rows. */
        const int whole = m->v0 % SL_PACK_ROWS == 0 && m->vl % SL_PACK_ROWS == 0;
        if (!m->lm_own && m->embed->packed && !whole)
            rc = load_block(m, w, emb, V, D, m->v0, m->vl, 0, D, 0, 0, dtype, &m->lm_own, err);
        if (m->lm_own)
            sl_tensor_pack(m->lm_own);
        else if (whole)
            sl_tensor_pack(m->embed);
        if (rc == 0 && m->lm_own) {
            m->lm = *m->lm_own;
        } else if (rc == 0) { /* a view of the embedding rows [v0, v0 + Vl) */
            m->lm = *m->embed;
            m->lm.owns_data = 0;
            m->lm.shape[0] = m->vl;
            m->lm.data = (char *)m->embed->data + sl_dtype_bytes(m->embed->dtype, m->v0 * D);
        }
        if (rc == 0)
            rc = make_inv_freq(m, w, err);
    }
    if (rc == 0) {
        m->layers = sl_xcalloc((size_t)c->layers, sizeof *m->layers);
        for (int i = 0; i < c->layers && rc == 0; i++)
            rc = load_layer(m, w, i, err);
    }
    sl_weights_close(w);
    if (rc != 0) {
        sl_llama_free(m);
        return NULL;
    }
    m->lm_chunk = (int64_t)(SL_LLAMA_LM_CHUNK_BYTES / ((size_t)m->vl * sizeof(float)));
    if (m->lm_chunk < 1)
        m->lm_chunk = 1;
    return m;
}

static void free_scratch(sl_llama_t *m)
{
    sl_tensor_t **all[] = {&m->x,      &m->h,      &m->o,      &m->q,    &m->ctx,    &m->k,
                           &m->v,      &m->gu,     &m->act,    &m->cast, &m->ids,    &m->slot,
                           &m->pos,    &m->kv_len, &m->sel,    &m->hsel, &m->logits, &m->rowmax,
                           &m->sumexp, &m->picked, &m->target, &m->topv, &m->topi};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        sl_tensor_free(*all[i]);
        *all[i] = NULL;
    }
}

void sl_llama_free(sl_llama_t *m)
{
    if (!m)
        return;
    for (int i = 0; m->layers && i < m->cfg.layers; i++) {
        sl_llama_layer_t *L = &m->layers[i];
        sl_tensor_t *all[] = {L->attn_norm, L->ffn_norm, L->wq, L->wk, L->wv,  L->bq,
                              L->bk,        L->bv,       L->wo, L->bo, L->wgu, L->wd};
        for (size_t j = 0; j < sizeof all / sizeof *all; j++)
            sl_tensor_free(all[j]);
    }
    free(m->layers);
    sl_tensor_free(m->embed);
    sl_tensor_free(m->lm_own);
    sl_tensor_free(m->out_norm);
    sl_tensor_free(m->inv_freq);
    free_scratch(m);
    sl_bpe_free(m->tok);
    free(m);
}

/* ---- KV cache ---------------------------------------------------------------------------- */

size_t sl_llama_free_bytes(const sl_llama_t *m) { return sl_backend_free_bytes(m->be); }

size_t sl_llama_cache_slot_bytes(const sl_llama_t *m, int64_t ctx)
{
    return (size_t)ctx * (size_t)(m->kvl * m->cfg.head_dim) * sizeof(float) * 2 *
           (size_t)m->cfg.layers;
}

sl_llama_cache_t *sl_llama_cache_new(sl_llama_t *m, int64_t slots, int64_t ctx, int shared_layers,
                                     sl_error_t *err)
{
    int64_t n = shared_layers ? 1 : m->cfg.layers;
    size_t need =
        sl_llama_cache_slot_bytes(m, ctx) / (size_t)m->cfg.layers * (size_t)n * (size_t)slots;
    size_t have = sl_backend_free_bytes(m->be);
    if (need > have / 10 * 9) {
        sl_errorf(err,
                  "a KV cache of %lld slots x %lld positions needs %.1f MiB; only %.1f MiB "
                  "are free",
                  (long long)slots, (long long)ctx, need / 1048576.0, have / 1048576.0);
        return NULL;
    }
    sl_llama_cache_t *c = sl_xcalloc(1, sizeof *c);
    c->slots = slots;
    c->ctx = ctx;
    c->n = n;
    c->k = sl_xcalloc((size_t)n, sizeof *c->k);
    c->v = sl_xcalloc((size_t)n, sizeof *c->v);
    int64_t shape[4] = {slots, ctx, m->kvl, m->cfg.head_dim};
    for (int64_t i = 0; i < n; i++) {
        c->k[i] = sl_tensor_new(m->be, SL_F32, 4, shape);
        c->v[i] = sl_tensor_new(m->be, SL_F32, 4, shape);
    }
    return c;
}

void sl_llama_cache_free(sl_llama_cache_t *c)
{
    if (!c)
        return;
    for (int64_t i = 0; i < c->n; i++) {
        sl_tensor_free(c->k[i]);
        sl_tensor_free(c->v[i]);
    }
    free(c->k);
    free(c->v);
    free(c);
}

/* ---- forward ----------------------------------------------------------------------------- */

static void grow(sl_tensor_t **t, sl_backend_t *be, sl_dtype_t dt, int64_t rows, int64_t cols)
{
    sl_tensor_free(*t);
    *t = cols ? sl_tensor_new2(be, dt, rows, cols) : sl_tensor_new1(be, dt, rows);
}

static void ensure_scratch(sl_llama_t *m, int64_t T, int64_t n_sel, int64_t S)
{
    const sl_llama_config_t *c = &m->cfg;
    int64_t D = c->hidden, Dh = c->head_dim;
    if (T > m->cap_t) {
        int64_t cap = T > 2 * m->cap_t ? T : 2 * m->cap_t;
        grow(&m->x, m->be, SL_F32, cap, D);
        grow(&m->h, m->be, SL_F32, cap, D);
        grow(&m->o, m->be, SL_F32, cap, D);
        grow(&m->q, m->be, SL_F32, cap, m->hl * Dh);
        grow(&m->ctx, m->be, SL_F32, cap, m->hl * Dh);
        grow(&m->k, m->be, SL_F32, cap, m->kvl * Dh);
        grow(&m->v, m->be, SL_F32, cap, m->kvl * Dh);
        grow(&m->gu, m->be, SL_F32, cap, 2 * m->il);
        grow(&m->act, m->be, SL_F32, cap, m->il);
        if (m->act_dtype != SL_F32) {
            int64_t w = D > m->hl * Dh ? D : m->hl * Dh;
            grow(&m->cast, m->be, m->act_dtype, cap, w > m->il ? w : m->il);
        }
        grow(&m->ids, m->be, SL_I32, cap, 0);
        grow(&m->slot, m->be, SL_I32, cap, 0);
        grow(&m->pos, m->be, SL_I32, cap, 0);
        m->cap_t = cap;
    }
    if (n_sel > m->cap_sel) {
        int64_t cap = n_sel > 2 * m->cap_sel ? n_sel : 2 * m->cap_sel;
        grow(&m->sel, m->be, SL_I32, cap, 0);
        grow(&m->hsel, m->be, SL_F32, cap, D);
        m->cap_sel = cap;
    }
    if (S > m->cap_s) {
        grow(&m->kv_len, m->be, SL_I32, S, 0);
        m->cap_s = S;
    }
    if (!m->logits) {
        grow(&m->logits, m->be, SL_F32, m->lm_chunk, m->vl);
        grow(&m->rowmax, m->be, SL_F32, m->lm_chunk, 0);
        grow(&m->sumexp, m->be, SL_F32, m->lm_chunk, 0);
        grow(&m->picked, m->be, SL_F32, m->lm_chunk, 0);
        grow(&m->target, m->be, SL_I32, m->lm_chunk, 0);
    }
}

void sl_llama_forward(sl_llama_t *m, sl_comm_t *comm, sl_llama_cache_t *cache,
                      const sl_llama_step_t *st)
{
    const sl_llama_config_t *c = &m->cfg;
    int64_t T = st->T, D = c->hidden, Dh = c->head_dim;
    ensure_scratch(m, T, st->n_sel, cache->slots);
    sl_tensor_t ids = sl_tensor_view(m->ids, 1, T, 0, 0, 0),
                slot = sl_tensor_view(m->slot, 1, T, 0, 0, 0),
                pos = sl_tensor_view(m->pos, 1, T, 0, 0, 0);
    sl_tensor_t kv_len = sl_tensor_view(m->kv_len, 1, cache->slots, 0, 0, 0);
    sl_copy_h2d(&ids, st->ids, (size_t)T * sizeof(int32_t));
    sl_copy_h2d(&slot, st->slot, (size_t)T * sizeof(int32_t));
    sl_copy_h2d(&pos, st->pos, (size_t)T * sizeof(int32_t));
    sl_copy_h2d(&kv_len, st->kv_len, (size_t)cache->slots * sizeof(int32_t));

    sl_tensor_t x = sl_tensor_view(m->x, 2, T, D, 0, 0), h = sl_tensor_view(m->h, 2, T, D, 0, 0),
                o = sl_tensor_view(m->o, 2, T, D, 0, 0);
    sl_tensor_t q = sl_tensor_view(m->q, 2, T, m->hl * Dh, 0, 0),
                ctx = sl_tensor_view(m->ctx, 2, T, m->hl * Dh, 0, 0);
    sl_tensor_t k = sl_tensor_view(m->k, 2, T, m->kvl * Dh, 0, 0),
                v = sl_tensor_view(m->v, 2, T, m->kvl * Dh, 0, 0);
    sl_tensor_t q3 = sl_tensor_view(m->q, 3, T, m->hl, Dh, 0),
                ctx3 = sl_tensor_view(m->ctx, 3, T, m->hl, Dh, 0);
    sl_tensor_t k3 = sl_tensor_view(m->k, 3, T, m->kvl, Dh, 0),
                v3 = sl_tensor_view(m->v, 3, T, m->kvl, Dh, 0);
    sl_tensor_t gu = sl_tensor_view(m->gu, 2, T, 2 * m->il, 0, 0),
                act = sl_tensor_view(m->act, 2, T, m->il, 0, 0);
    float scale = 1.0f / sqrtf((float)Dh);

    sl_backend_set_bulk_rows(m->be, st->n_prompt);
    sl_embedding(m->embed, &ids, &x);
    for (int64_t l = 0; l < c->layers; l++) {
        const sl_llama_layer_t *L = &m->layers[l];
        SL_RANGE_PUSHF("llama layer %lld", (long long)l);
        sl_tensor_t *kc = cache->k[l % cache->n], *vc = cache->v[l % cache->n];
        sl_rmsnorm(&x, L->attn_norm, c->rms_eps, &h);
        sl_linear_cast(&h, L->wq, L->bq, &q, m->cast);
        sl_linear_cast(&h, L->wk, L->bk, &k, m->cast);
        sl_linear_cast(&h, L->wv, L->bv, &v, m->cast);
        sl_rope(&q3, &pos, m->inv_freq);
        sl_rope(&k3, &pos, m->inv_freq);
        /* The step's keys go into the cache before attention reads it: a token attends to
         * itself and to the earlier tokens of its row written in this same step. */
        sl_kv_write(kc, &k3, &slot, &pos);
        sl_kv_write(vc, &v3, &slot, &pos);
        sl_attention_kv(&q3, kc, vc, &slot, &pos, &kv_len, scale, 1, &ctx3);
        sl_linear_row_parallel(comm, &ctx, L->wo, L->bo, &o, m->cast);
        sl_add(&x, &o);

        sl_rmsnorm(&x, L->ffn_norm, c->rms_eps, &h);
        sl_linear_cast(&h, L->wgu, NULL, &gu, m->cast);
        sl_swiglu(&gu, &act);
        sl_linear_row_parallel(comm, &act, L->wd, NULL, &o, m->cast);
        sl_add(&x, &o);
        SL_RANGE_POP();
    }
    sl_backend_set_bulk_rows(m->be, SL_BULK_ALL);
    m->n_sel = st->n_sel;
    m->n_sel_prompt = 0; /* the selected bulk tokens come first (sel ascending) */
    while (m->n_sel_prompt < st->n_sel && st->sel[m->n_sel_prompt] < st->n_prompt)
        m->n_sel_prompt++;
    if (st->n_sel > 0) {
        sl_tensor_t sel = sl_tensor_view(m->sel, 1, st->n_sel, 0, 0, 0),
                    hs = sl_tensor_view(m->hsel, 2, st->n_sel, D, 0, 0);
        sl_copy_h2d(&sel, st->sel, (size_t)st->n_sel * sizeof(int32_t));
        sl_gather_rows(&x, &sel, &hs);
        sl_rmsnorm(&hs, m->out_norm, c->rms_eps, &hs);
    }
}

/* Logits of selected rows [r0, r0 + n) for this rank's vocabulary shard, into m->logits. */
static sl_tensor_t lm_chunk(sl_llama_t *m, int64_t r0, int64_t n)
{
    int64_t D = m->cfg.hidden;
    sl_tensor_t hs = *m->hsel;
    hs.owns_data = 0;
    hs.ndim = 2;
    hs.shape[0] = n;
    hs.shape[1] = D;
    hs.data = (char *)m->hsel->data + (size_t)(r0 * D) * sizeof(float);
    sl_tensor_t lg = sl_tensor_view(m->logits, 2, n, m->vl, 0, 0);
    int64_t bulk = m->n_sel_prompt - r0;
    sl_backend_set_bulk_rows(m->be, bulk < 0 ? 0 : bulk);
    /* m->lm is a copy made at load; --precision w8a8 sets the activation scales on the loaded
     * tensor (lm_own, or the tied table) afterwards, so the head takes them from there */
    m->lm.act_scales = (m->lm_own ? m->lm_own : m->embed)->act_scales;
    sl_linear_cast(&hs, &m->lm, NULL, &lg, m->cast);
    sl_backend_set_bulk_rows(m->be, SL_BULK_ALL);
    return lg;
}

void sl_llama_logprobs(sl_llama_t *m, sl_comm_t *comm, const int32_t *target, float *logp)
{
    int64_t n = m->n_sel;
    if (n == 0)
        return;
    float *mx = sl_xmalloc((size_t)n * sizeof *mx), *se = sl_xmalloc((size_t)n * sizeof *se);
    for (int64_t r0 = 0; r0 < n; r0 += m->lm_chunk) {
        int64_t k = n - r0 < m->lm_chunk ? n - r0 : m->lm_chunk;
        sl_tensor_t lg = lm_chunk(m, r0, k);
        sl_tensor_t rm = sl_tensor_view(m->rowmax, 1, k, 0, 0, 0),
                    sx = sl_tensor_view(m->sumexp, 1, k, 0, 0, 0),
                    pk = sl_tensor_view(m->picked, 1, k, 0, 0, 0);
        sl_tensor_t tg = sl_tensor_view(m->target, 1, k, 0, 0, 0);
        sl_copy_h2d(&tg, target + r0, (size_t)k * sizeof(int32_t));
        sl_logsumexp_parts(&lg, &rm, &sx);
        sl_pick_logits(&lg, &tg, m->v0, &pk);
        sl_copy_d2h(mx + r0, &rm, (size_t)k * sizeof(float));
        sl_copy_d2h(se + r0, &sx, (size_t)k * sizeof(float));
        sl_copy_d2h(logp + r0, &pk, (size_t)k * sizeof(float));
    }
    if (m->tp_size > 1) {
        /* log sum_v exp(l_v) over all shards = M + log sum_r s_r exp(m_r - M), M the global max;
         * the target's logit lives on exactly one rank, the others contribute 0. */
        float *gmax = sl_xmalloc((size_t)n * sizeof *gmax);
        memcpy(gmax, mx, (size_t)n * sizeof *gmax);
        sl_comm_host_allreduce_f32(comm, gmax, (size_t)n, SL_REDUCE_MAX);
        for (int64_t i = 0; i < n; i++)
            se[i] *= expf(mx[i] - gmax[i]);
        sl_comm_host_allreduce_f32(comm, se, (size_t)n, SL_REDUCE_SUM);
        sl_comm_host_allreduce_f32(comm, logp, (size_t)n, SL_REDUCE_SUM);
        memcpy(mx, gmax, (size_t)n * sizeof *mx);
        free(gmax);
    }
    for (int64_t i = 0; i < n; i++)
        logp[i] = logp[i] - mx[i] - logf(se[i]);
    free(mx);
    free(se);
}

void sl_llama_logits(sl_llama_t *m, sl_comm_t *comm, float *logits)
{
    int64_t n = m->n_sel, V = m->cfg.vocab;
    if (n == 0)
        return;
    int T = m->tp_size;
    int *counts = sl_xcalloc((size_t)T, sizeof *counts),
        *displs = sl_xcalloc((size_t)T, sizeof *displs);
    int64_t *voff = sl_xcalloc((size_t)T, sizeof *voff),
            *vlen = sl_xcalloc((size_t)T, sizeof *vlen);
    for (int r = 0; r < T; r++)
        sl_split_even(V, T, r, &voff[r], &vlen[r], NULL);
    float *mine = sl_xmalloc((size_t)(m->lm_chunk * m->vl) * sizeof *mine);
    float *all = T > 1 ? sl_xmalloc((size_t)(m->lm_chunk * V) * sizeof *all) : NULL;
    for (int64_t r0 = 0; r0 < n; r0 += m->lm_chunk) {
        int64_t k = n - r0 < m->lm_chunk ? n - r0 : m->lm_chunk;
        sl_tensor_t lg = lm_chunk(m, r0, k);
        if (T == 1) {
            sl_copy_d2h(logits + r0 * V, &lg, (size_t)(k * V) * sizeof(float));
            continue;
        }
        sl_copy_d2h(mine, &lg, (size_t)(k * m->vl) * sizeof(float));
        for (int r = 0; r < T; r++) {
            counts[r] = (int)(k * vlen[r]);
            displs[r] = (int)(k * voff[r]);
        }
        /* Gathered rank by rank ([rank][row][its columns]); then rows are reassembled. */
        sl_comm_host_allgatherv_f32(comm, mine, all, counts, displs);
        for (int r = 0; r < T; r++)
            for (int64_t i = 0; i < k; i++)
                memcpy(logits + (r0 + i) * V + voff[r], all + k * voff[r] + i * vlen[r],
                       (size_t)vlen[r] * sizeof(float));
    }
    free(mine);
    free(all);
    free(counts);
    free(displs);
    free(voff);
    free(vlen);
}

/* Orders candidates: larger value first, then the lower id. */
typedef struct {
    float v;
    int32_t id;
} cand_t;

static int cand_cmp(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

void sl_llama_topk(sl_llama_t *m, sl_comm_t *comm, int k, float *vals, int32_t *ids)
{
    int64_t n = m->n_sel;
    if (n == 0)
        return;
    if (k < 1 || k > 256 || k > m->vl)
        SL_FATAL("sl_llama_topk: k = %d outside 1..min(256, %lld)", k, (long long)m->vl);
    if (!m->topv) {
        m->topv = sl_tensor_new2(m->be, SL_F32, m->lm_chunk, 256);
        m->topi = sl_tensor_new2(m->be, SL_I32, m->lm_chunk, 256);
    }
    /* This rank's candidates, with global ids. */
    float *mv = sl_xmalloc((size_t)(n * k) * sizeof *mv);
    int32_t *mi = sl_xmalloc((size_t)(n * k) * sizeof *mi);
    for (int64_t r0 = 0; r0 < n; r0 += m->lm_chunk) {
        int64_t c = n - r0 < m->lm_chunk ? n - r0 : m->lm_chunk;
        sl_tensor_t lg = lm_chunk(m, r0, c);
        sl_tensor_t tv = sl_tensor_view(m->topv, 2, c, k, 0, 0),
                    ti = sl_tensor_view(m->topi, 2, c, k, 0, 0);
        sl_topk_rows(&lg, k, &tv, &ti);
        sl_copy_d2h(mv + r0 * k, &tv, (size_t)(c * k) * sizeof(float));
        sl_copy_d2h(mi + r0 * k, &ti, (size_t)(c * k) * sizeof(int32_t));
    }
    for (int64_t i = 0; i < n * k; i++)
        mi[i] += (int32_t)m->v0;
    int T = m->tp_size;
    if (T == 1) {
        memcpy(vals, mv, (size_t)(n * k) * sizeof *vals);
        memcpy(ids, mi, (size_t)(n * k) * sizeof *ids);
    } else {
        /* Every rank's k candidates per row, merged: the global top k is among them. */
        float *av = sl_xmalloc((size_t)(T * n * k) * sizeof *av);
        int32_t *ai = sl_xmalloc((size_t)(T * n * k) * sizeof *ai);
        sl_comm_host_allgather(comm, mv, (size_t)(n * k), SL_F32, av);
        sl_comm_host_allgather(comm, mi, (size_t)(n * k), SL_I32, ai);
        cand_t *cs = sl_xmalloc((size_t)(T * k) * sizeof *cs);
        for (int64_t r = 0; r < n; r++) {
            for (int t = 0; t < T; t++)
                for (int j = 0; j < k; j++) {
                    cs[t * k + j].v = av[(t * n + r) * k + j];
                    cs[t * k + j].id = ai[(t * n + r) * k + j];
                }
            qsort(cs, (size_t)(T * k), sizeof *cs, cand_cmp);
            for (int j = 0; j < k; j++) {
                vals[r * k + j] = cs[j].v;
                ids[r * k + j] = cs[j].id;
            }
        }
        free(cs);
        free(av);
        free(ai);
    }
    free(mv);
    free(mi);
}
