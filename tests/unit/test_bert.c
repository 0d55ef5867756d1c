/*
 * test_bert.c — the BERT encoder family on the CPU backend, tp 1.
 *
 *  1. Config: sl_bert_config_load on written directories — the sentence-transformers files
 *     (max length, pooling, Normalize), id2label, and errors that name the key at fault
 *     (missing key, model_type, hidden_act, position_embedding_type, architectures, modules).
 *  2. A tiny random BERT written here as safetensors, in two spellings ("bert." prefix with
 *     LayerNorm weight/bias in one file; no prefix with gamma/beta, sharded with an index):
 *     embeddings (mean + L2, CLS), and classification logits against a naive double-precision
 *     forward in this file, over a padded batch; F16/BF16 loads close to it; load errors
 *     (missing tensor, wrong shape, heads not divisible by --tp) name the tensor or key.
 *  3. all-MiniLM-L6-v2 against the transformers goldens (tests/reference/goldens/
 *     minilm_goldens.h5): every row's cosine >= 0.99999 and max abs error <= 1e-4 in f32,
 *     cosine >= 0.999 with bf16 weights; sentences/s of the f32 forward printed. The model
 *     directory comes from $SL_MODELS_DIR (the model itself, or a folder with minilm.path) or
 *     $SL_BINARY_DIR/models/minilm.path, written by scripts/install-models.sh; without it the
 *     test fails and says so.
 *  4. The tiny BertForSequenceClassification saved by transformers (tests/reference/
 *     tiny_bert_cls) against its logits (goldens/tiny_cls_goldens.h5), within 1e-4.
 * $SL_GOLDENS_DIR overrides the goldens folder; SL_DEVICE=cuda runs it all on the CUDA backend;
 * SL_SKIP_MODELS=minilm leaves part 3 out and says so (gpu-bundle/run.sh, which cannot carry
 * the 88 MB model).
 */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/elementwise.h"
#include "models/bert.h"
#include "sl_test.h"

/* ---- files ------------------------------------------------------------------------------- */

static char g_root[4096];

static void path_join(char *buf, size_t cap, const char *dir, const char *file)
{
    if (snprintf(buf, cap, "%s/%s", dir, file) >= (int)cap) {
        fprintf(stderr, "test_bert: path %s/%s too long\n", dir, file);
        exit(1);
    }
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char p[8192];
    path_join(p, sizeof p, dir, file);
    sl_test_write_file(p, text, strlen(text));
}

static void make_dir(char *out, size_t cap, const char *name)
{
    path_join(out, cap, g_root, name);
    mkdir(out, 0755);
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* ---- 1. config --------------------------------------------------------------------------- */

#define GOOD_CONFIG_BODY                                                                           \
    "\"hidden_size\": 8, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "                   \
    "\"intermediate_size\": 16, \"vocab_size\": 20, \"max_position_embeddings\": 16, "             \
    "\"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12"

/* Writes config.json `json` into a fresh directory and expects failure naming `w1` and `w2`. */
static void expect_config_error(const char *name, const char *json, const char *w1, const char *w2)
{
    char dir[4200];
    make_dir(dir, sizeof dir, name);
    write_text(dir, "config.json", json);
    sl_bert_config_t cfg;
    sl_error_t err = {{0}};
    int rc = sl_bert_config_load(dir, &cfg, &err);
    CHECKF(rc == -1, "accepted: %s", json);
    CHECKF(strstr(err.msg, "config.json") != NULL, "message does not name the file: %s", err.msg);
    CHECKF(!w1 || strstr(err.msg, w1), "message lacks '%s': %s", w1, err.msg);
    CHECKF(!w2 || strstr(err.msg, w2), "message lacks '%s': %s", w2, err.msg);
    CHECK(cfg.labels == NULL && cfg.n_labels == 0);
}

static void test_config(void)
{
    expect_config_error("c_missing",
                        "{\"model_type\": \"bert\", \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 2, \"intermediate_size\": 16, "
                        "\"vocab_size\": 20, \"max_position_embeddings\": 16}",
                        "'hidden_size'", "missing");
    expect_config_error("c_type", "{\"model_type\": \"gpt2\", " GOOD_CONFIG_BODY "}",
                        "'model_type'", "gpt2");
    expect_config_error("c_notype", "{" GOOD_CONFIG_BODY "}", "'model_type'", "missing");
    expect_config_error(
        "c_act", "{\"model_type\": \"bert\", \"hidden_act\": \"relu\", " GOOD_CONFIG_BODY "}",
        "'hidden_act'", "relu");
    expect_config_error(
        "c_act2", "{\"model_type\": \"bert\", \"hidden_act\": \"gelu_new\", " GOOD_CONFIG_BODY "}",
        "'hidden_act'", "gelu_new");
    expect_config_error("c_pos",
                        "{\"model_type\": \"bert\", \"position_embedding_type\": "
                        "\"relative_key\", " GOOD_CONFIG_BODY "}",
                        "'position_embedding_type'", "relative_key");
    expect_config_error(
        "c_arch",
        "{\"model_type\": \"bert\", \"architectures\": [\"BertForMaskedLM\"], " GOOD_CONFIG_BODY
        "}",
        "'architectures'", "BertForMaskedLM");
    expect_config_error("c_heads",
                        "{\"model_type\": \"bert\", \"hidden_size\": 9, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 2, \"intermediate_size\": 16, "
                        "\"vocab_size\": 20, \"max_position_embeddings\": 16}",
                        "'num_attention_heads'", "'hidden_size'");
    expect_config_error("c_neg",
                        "{\"model_type\": \"bert\", \"hidden_size\": 8, \"num_hidden_layers\": -1, "
                        "\"num_attention_heads\": 2, \"intermediate_size\": 16, "
                        "\"vocab_size\": 20, \"max_position_embeddings\": 16}",
                        "'num_hidden_layers'", NULL);
    expect_config_error("c_json", "{\"model_type\": \"bert\",", "not valid JSON", NULL);

    /* A full sentence-transformers directory. */
    char dir[4200];
    make_dir(dir, sizeof dir, "c_good");
    write_text(dir, "config.json",
               "{\"model_type\": \"bert\", \"architectures\": [\"BertForSequenceClassification\"], "
               "\"hidden_act\": \"gelu\", \"position_embedding_type\": \"absolute\", "
               "\"id2label\": {\"1\": \"pos\", \"0\": \"neg\"}, " GOOD_CONFIG_BODY "}");
    write_text(dir, "sentence_bert_config.json", "{\"max_seq_length\": 12}");
    write_text(dir, "modules.json",
               "[{\"idx\": 0, \"name\": \"0\", \"path\": \"\", \"type\": "
               "\"sentence_transformers.models.Transformer\"}, {\"idx\": 1, \"name\": \"1\", "
               "\"path\": \"pool\", \"type\": \"sentence_transformers.models.Pooling\"}, "
               "{\"idx\": 2, \"name\": \"2\", \"path\": \"2_Normalize\", \"type\": "
               "\"sentence_transformers.models.Normalize\"}]");
    char sub[4300];
    path_join(sub, sizeof sub, dir, "pool");
    mkdir(sub, 0755);
    write_text(sub, "config.json",
               "{\"pooling_mode_cls_token\": true, \"pooling_mode_mean_tokens\": false}");
    sl_bert_config_t cfg;
    sl_error_t err = {{0}};
    int rc = sl_bert_config_load(dir, &cfg, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(cfg.hidden == 8 && cfg.layers == 2 && cfg.heads == 2 && cfg.intermediate == 16);
        CHECK(cfg.vocab == 20 && cfg.max_positions == 16 && cfg.type_vocab == 2);
        CHECK(cfg.ln_eps == 1e-12f);
        CHECK(cfg.max_length == 12);
        CHECK(cfg.pooling == SL_BERT_POOL_CLS);
        CHECK(cfg.normalize == 1);
        CHECK(cfg.n_labels == 2);
        CHECK(cfg.n_labels == 2 && strcmp(cfg.labels[0], "neg") == 0 &&
              strcmp(cfg.labels[1], "pos") == 0);
        sl_bert_config_free(&cfg);
    }

    /* A Dense module changes the output: refused by name. */
    write_text(dir, "modules.json",
               "[{\"idx\": 0, \"path\": \"\", \"type\": \"sentence_transformers.models.Dense\"}]");
    rc = sl_bert_config_load(dir, &cfg, &err);
    CHECKF(rc == -1 && strstr(err.msg, "modules.json") && strstr(err.msg, "Dense"), "%s", err.msg);

    /* Unsupported pooling mode named. */
    write_text(dir, "modules.json",
               "[{\"path\": \"pool\", \"type\": \"sentence_transformers.models.Pooling\"}]");
    write_text(sub, "config.json", "{\"pooling_mode_max_tokens\": true}");
    rc = sl_bert_config_load(dir, &cfg, &err);
    CHECKF(rc == -1 && strstr(err.msg, "pooling_mode_max_tokens"), "%s", err.msg);

    /* No sentence-transformers files: max length from the tokenizer if sane, else positions;
     * mean pooling, no normalisation, BertModel has no labels. */
    make_dir(dir, sizeof dir, "c_plain");
    write_text(dir, "config.json", "{\"model_type\": \"bert\", " GOOD_CONFIG_BODY "}");
    write_text(dir, "tokenizer_config.json", "{\"model_max_length\": 10}");
    rc = sl_bert_config_load(dir, &cfg, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(cfg.max_length == 10 && cfg.pooling == SL_BERT_POOL_MEAN && cfg.normalize == 0);
        CHECK(cfg.n_labels == 0 && cfg.labels == NULL);
        sl_bert_config_free(&cfg);
    }
    write_text(dir, "tokenizer_config.json",
               "{\"model_max_length\": 1000000000000000019884624838656}");
    rc = sl_bert_config_load(dir, &cfg, &err);
    CHECKF(rc == 0 && cfg.max_length == 16, "%s (max_length %d)", err.msg, cfg.max_length);
    sl_bert_config_free(&cfg);
}

/* ---- 2. a tiny model written here -------------------------------------------------------- */

enum { TD = 8, TL = 2, TH = 2, TI = 16, TV = 20, TP = 16, TT = 2, TN = 3 };

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    float *data;
} tt_t;

static tt_t g_t[64];
static int g_nt;
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static float frand(void) /* uniform in [-1, 1) */
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *add_t(const char *name, int64_t d0, int64_t d1, float base, float scale)
{
    tt_t *t = &g_t[g_nt++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    int64_t n = d0 * (d1 ? d1 : 1);
    t->data = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        t->data[i] = base + scale * frand();
    return t->data;
}

static const float *get_t(const char *name)
{
    for (int i = 0; i < g_nt; i++)
        if (strcmp(g_t[i].name, name) == 0)
            return g_t[i].data;
    fprintf(stderr, "no tensor %s\n", name);
    exit(1);
}

static void make_tiny_weights(void)
{
    char n[96];
    add_t("embeddings.word_embeddings.weight", TV, TD, 0, 1);
    add_t("embeddings.position_embeddings.weight", TP, TD, 0, 0.5f);
    add_t("embeddings.token_type_embeddings.weight", TT, TD, 0, 0.5f);
    add_t("embeddings.LayerNorm.weight", TD, 0, 1, 0.2f);
    add_t("embeddings.LayerNorm.bias", TD, 0, 0, 0.1f);
    for (int l = 0; l < TL; l++) {
        const char *qkv[3] = {"query", "key", "value"};
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "encoder.layer.%d.attention.self.%s.weight", l, qkv[j]);
            add_t(n, TD, TD, 0, 0.5f);
            snprintf(n, sizeof n, "encoder.layer.%d.attention.self.%s.bias", l, qkv[j]);
            add_t(n, TD, 0, 0, 0.1f);
        }
        snprintf(n, sizeof n, "encoder.layer.%d.attention.output.dense.weight", l);
        add_t(n, TD, TD, 0, 0.4f);
        snprintf(n, sizeof n, "encoder.layer.%d.attention.output.dense.bias", l);
        add_t(n, TD, 0, 0, 0.1f);
        snprintf(n, sizeof n, "encoder.layer.%d.attention.output.LayerNorm.weight", l);
        add_t(n, TD, 0, 1, 0.2f);
        snprintf(n, sizeof n, "encoder.layer.%d.attention.output.LayerNorm.bias", l);
        add_t(n, TD, 0, 0, 0.1f);
        snprintf(n, sizeof n, "encoder.layer.%d.intermediate.dense.weight", l);
        add_t(n, TI, TD, 0, 0.4f);
        snprintf(n, sizeof n, "encoder.layer.%d.intermediate.dense.bias", l);
        add_t(n, TI, 0, 0, 0.1f);
        snprintf(n, sizeof n, "encoder.layer.%d.output.dense.weight", l);
        add_t(n, TD, TI, 0, 0.3f);
        snprintf(n, sizeof n, "encoder.layer.%d.output.dense.bias", l);
        add_t(n, TD, 0, 0, 0.1f);
        snprintf(n, sizeof n, "encoder.layer.%d.output.LayerNorm.weight", l);
        add_t(n, TD, 0, 1, 0.2f);
        snprintf(n, sizeof n, "encoder.layer.%d.output.LayerNorm.bias", l);
        add_t(n, TD, 0, 0, 0.1f);
    }
    add_t("pooler.dense.weight", TD, TD, 0, 0.5f);
    add_t("pooler.dense.bias", TD, 0, 0, 0.1f);
    add_t("classifier.weight", TN, TD, 0, 0.5f);
    add_t("classifier.bias", TN, 0, 0, 0.1f);
}

/* How a file spells the tensors. */
typedef struct {
    int prefix;       /* "bert." in front of everything but classifier.* */
    int gamma_beta;   /* LayerNorm.gamma / .beta */
    const char *skip; /* a tensor to leave out */
    const char *bad;  /* a tensor to write with a wrong shape */
    int first, last;  /* tensor index range [first, last) of g_t */
} spelling_t;

static void file_name_of(char *buf, size_t cap, const char *name, const spelling_t *sp)
{
    char base[96];
    snprintf(base, sizeof base, "%s", name);
    if (sp->gamma_beta) {
        char *p = strstr(base, "LayerNorm.");
        if (p && strcmp(p, "LayerNorm.weight") == 0)
            strcpy(p, "LayerNorm.gamma");
        else if (p && strcmp(p, "LayerNorm.bias") == 0)
            strcpy(p, "LayerNorm.beta");
    }
    int pre = sp->prefix && strncmp(name, "classifier.", 11) != 0;
    snprintf(buf, cap, "%s%s", pre ? "bert." : "", base);
}

static void write_safetensors(const char *path, const spelling_t *sp)
{
    char *hdr = malloc(1 << 16);
    size_t hl = 0;
    uint64_t off = 0;
    hl += (size_t)sprintf(hdr + hl, "{\"__metadata__\": {\"format\": \"pt\"}");
    for (int i = sp->first; i < sp->last; i++) {
        tt_t *t = &g_t[i];
        if (sp->skip && strcmp(t->name, sp->skip) == 0)
            continue;
        char fn[128];
        file_name_of(fn, sizeof fn, t->name, sp);
        int64_t n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
        int64_t d0 = t->shape[0];
        if (sp->bad && strcmp(t->name, sp->bad) == 0)
            d0 = 1, n = t->ndim == 2 ? t->shape[1] : 1;
        if (t->ndim == 2)
            hl +=
                (size_t)sprintf(hdr + hl,
                                ", \"%s\": {\"dtype\": \"F32\", \"shape\": [%lld, %lld], "
                                "\"data_offsets\": [%llu, %llu]}",
                                fn, (long long)d0, (long long)t->shape[1], (unsigned long long)off,
                                (unsigned long long)(off + 4 * (uint64_t)n));
        else
            hl += (size_t)sprintf(hdr + hl,
                                  ", \"%s\": {\"dtype\": \"F32\", \"shape\": [%lld], "
                                  "\"data_offsets\": [%llu, %llu]}",
                                  fn, (long long)d0, (unsigned long long)off,
                                  (unsigned long long)(off + 4 * (uint64_t)n));
        off += 4 * (uint64_t)n;
    }
    hl += (size_t)sprintf(hdr + hl, "}");
    while (hl % 8)
        hdr[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    uint64_t h64 = hl;
    fwrite(&h64, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    for (int i = sp->first; i < sp->last; i++) {
        tt_t *t = &g_t[i];
        if (sp->skip && strcmp(t->name, sp->skip) == 0)
            continue;
        int64_t n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
        if (sp->bad && strcmp(t->name, sp->bad) == 0)
            n = t->ndim == 2 ? t->shape[1] : 1;
        fwrite(t->data, 4, (size_t)n, f);
    }
    fclose(f);
    free(hdr);
}

static const char *TINY_CONFIG =
    "{\"model_type\": \"bert\", \"architectures\": [\"BertForSequenceClassification\"], "
    "\"hidden_act\": \"gelu\", \"id2label\": {\"0\": \"a\", \"1\": \"b\", \"2\": "
    "\"c\"}, " GOOD_CONFIG_BODY "}";

/* A: one file, "bert." prefix, weight/bias; mean pooling + Normalize. */
static void write_tiny_a(char *dir, size_t cap, const char *name, const char *skip, const char *bad)
{
    make_dir(dir, cap, name);
    write_text(dir, "config.json", TINY_CONFIG);
    write_text(
        dir, "modules.json",
        "[{\"path\": \"\", \"type\": \"sentence_transformers.models.Transformer\"}, "
        "{\"path\": \"1_Pooling\", \"type\": \"sentence_transformers.models.Pooling\"}, "
        "{\"path\": \"2_Normalize\", \"type\": \"sentence_transformers.models.Normalize\"}]");
    char p[8400];
    path_join(p, sizeof p, dir, "1_Pooling");
    mkdir(p, 0755);
    write_text(p, "config.json", "{\"pooling_mode_mean_tokens\": true}");
    spelling_t sp = {1, 0, skip, bad, 0, g_nt};
    path_join(p, sizeof p, dir, "model.safetensors");
    write_safetensors(p, &sp);
}

/* B: no prefix, gamma/beta, two shards + index; CLS pooling, no Normalize. */
static void write_tiny_b(char *dir, size_t cap)
{
    make_dir(dir, cap, "tiny_b");
    write_text(dir, "config.json", TINY_CONFIG);
    char p[8400];
    path_join(p, sizeof p, dir, "1_Pooling");
    mkdir(p, 0755);
    write_text(p, "config.json",
               "{\"pooling_mode_cls_token\": true, \"pooling_mode_mean_tokens\": false}");
    int half = g_nt / 2;
    spelling_t s1 = {0, 1, NULL, NULL, 0, half}, s2 = {0, 1, NULL, NULL, half, g_nt};
    path_join(p, sizeof p, dir, "model-00001-of-00002.safetensors");
    write_safetensors(p, &s1);
    path_join(p, sizeof p, dir, "model-00002-of-00002.safetensors");
    write_safetensors(p, &s2);
    char *idx = malloc(1 << 16);
    size_t n = (size_t)sprintf(idx, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < g_nt; i++) {
        char fn[128];
        file_name_of(fn, sizeof fn, g_t[i].name, &s1);
        n += (size_t)sprintf(idx + n, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                             i ? ", " : "", fn, i < half ? 1 : 2);
    }
    sprintf(idx + n, "}}");
    write_text(dir, "model.safetensors.index.json", idx);
    free(idx);
}

/* Naive double-precision BERT on one sequence of `len` tokens: h [len, TD]. */
static void ref_layernorm(double *x, const float *g, const float *b)
{
    double mean = 0, var = 0;
    for (int d = 0; d < TD; d++)
        mean += x[d];
    mean /= TD;
    for (int d = 0; d < TD; d++)
        var += (x[d] - mean) * (x[d] - mean);
    var /= TD;
    for (int d = 0; d < TD; d++)
        x[d] = (x[d] - mean) / sqrt(var + 1e-12) * g[d] + b[d];
}

static void ref_linear(const double *x, int in, const float *w, const float *b, int out, double *y)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0;
        for (int i = 0; i < in; i++)
            s += x[i] * w[o * in + i];
        y[o] = s;
    }
}

static void ref_encode(const int32_t *ids, const int32_t *types, int len, double *h)
{
    const float *word = get_t("embeddings.word_embeddings.weight");
    const float *pos = get_t("embeddings.position_embeddings.weight");
    const float *typ = get_t("embeddings.token_type_embeddings.weight");
    for (int s = 0; s < len; s++) {
        for (int d = 0; d < TD; d++)
            h[s * TD + d] = (double)word[ids[s] * TD + d] + pos[s * TD + d] +
                            typ[(types ? types[s] : 0) * TD + d];
        ref_layernorm(h + s * TD, get_t("embeddings.LayerNorm.weight"),
                      get_t("embeddings.LayerNorm.bias"));
    }
    double q[TP * TD], k[TP * TD], v[TP * TD], ctx[TP * TD], o[TD], f[TI];
    int dh = TD / TH;
    char n1[96], n2[96];
#define W(fmt) (snprintf(n1, sizeof n1, "encoder.layer.%d." fmt ".weight", l), get_t(n1))
#define B(fmt) (snprintf(n2, sizeof n2, "encoder.layer.%d." fmt ".bias", l), get_t(n2))
    for (int l = 0; l < TL; l++) {
        for (int s = 0; s < len; s++) {
            ref_linear(h + s * TD, TD, W("attention.self.query"), B("attention.self.query"), TD,
                       q + s * TD);
            ref_linear(h + s * TD, TD, W("attention.self.key"), B("attention.self.key"), TD,
                       k + s * TD);
            ref_linear(h + s * TD, TD, W("attention.self.value"), B("attention.self.value"), TD,
                       v + s * TD);
        }
        for (int hd = 0; hd < TH; hd++)
            for (int i = 0; i < len; i++) {
                double sc[TP], mx = -1e300, sum = 0;
                for (int j = 0; j < len; j++) {
                    double dot = 0;
                    for (int d = 0; d < dh; d++)
                        dot += q[i * TD + hd * dh + d] * k[j * TD + hd * dh + d];
                    sc[j] = dot / sqrt((double)dh);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j < len; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int d = 0; d < dh; d++) {
                    double a = 0;
                    for (int j = 0; j < len; j++)
                        a += sc[j] / sum * v[j * TD + hd * dh + d];
                    ctx[i * TD + hd * dh + d] = a;
                }
            }
        for (int s = 0; s < len; s++) {
            double *x = h + s * TD;
            ref_linear(ctx + s * TD, TD, W("attention.output.dense"), B("attention.output.dense"),
                       TD, o);
            for (int d = 0; d < TD; d++)
                x[d] += o[d];
            ref_layernorm(x, W("attention.output.LayerNorm"), B("attention.output.LayerNorm"));
            ref_linear(x, TD, W("intermediate.dense"), B("intermediate.dense"), TI, f);
            for (int i = 0; i < TI; i++)
                f[i] = 0.5 * f[i] * (1.0 + erf(f[i] / sqrt(2.0)));
            ref_linear(f, TI, W("output.dense"), B("output.dense"), TD, o);
            for (int d = 0; d < TD; d++)
                x[d] += o[d];
            ref_layernorm(x, W("output.LayerNorm"), B("output.LayerNorm"));
        }
    }
#undef W
#undef B
}

/* pooled = tanh(pooler(h[0])) */
static void ref_pooler(const double *h, double *out)
{
    ref_linear(h, TD, get_t("pooler.dense.weight"), get_t("pooler.dense.bias"), TD, out);
    for (int d = 0; d < TD; d++)
        out[d] = tanh(out[d]);
}

static double max_abs_diff(const float *a, const double *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m))
            m = d;
    }
    return m;
}

static double cosine(const float *a, const double *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += b[i] * b[i];
    }
    return ab / (sqrt(aa) * sqrt(bb) + 1e-300);
}

enum { TB = 3, TS = 7 };
static const int32_t tiny_lengths[TB] = {7, 3, 1};
static int32_t tiny_ids[TB * TS], tiny_types[TB * TS];

/* Embeddings (mean+L2 for A, CLS for B) and logits against the reference. */
static void check_tiny_model(sl_backend_t *be, const char *dir, int cls_pool, sl_dtype_t dt,
                             double tol)
{
    sl_error_t err = {{0}};
    sl_bert_t *m = sl_bert_load(dir, be, 1, 0, dt, &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m)
        return;
    const sl_bert_config_t *c = sl_bert_config(m);
    CHECK(c->n_labels == TN && strcmp(c->labels[2], "c") == 0);
    CHECK(c->normalize == !cls_pool);
    CHECK(c->pooling == (cls_pool ? SL_BERT_POOL_CLS : SL_BERT_POOL_MEAN));
    float emb[TB * TD], logits[TB * TN];
    for (int with_types = 0; with_types < 2; with_types++) {
        const int32_t *types = with_types ? tiny_types : NULL;
        sl_bert_embed(m, NULL, tiny_ids, types, tiny_lengths, TB, TS, emb);
        sl_bert_classify(m, NULL, tiny_ids, types, tiny_lengths, TB, TS, logits);
        for (int b = 0; b < TB; b++) {
            double h[TP * TD], want[TD], pooled[TD], lg[TN];
            int len = tiny_lengths[b];
            ref_encode(tiny_ids + b * TS, types ? types + b * TS : NULL, len, h);
            double norm = 0;
            for (int d = 0; d < TD; d++) {
                double s = 0;
                for (int t = 0; t < (cls_pool ? 1 : len); t++)
                    s += h[t * TD + d];
                want[d] = s / (cls_pool ? 1 : len);
                norm += want[d] * want[d];
            }
            for (int d = 0; !cls_pool && d < TD; d++)
                want[d] /= sqrt(norm);
            ref_pooler(h, pooled);
            ref_linear(pooled, TD, get_t("classifier.weight"), get_t("classifier.bias"), TN, lg);
            double e1 = max_abs_diff(emb + b * TD, want, TD);
            double e2 = max_abs_diff(logits + b * TN, lg, TN);
            CHECKF(e1 <= tol, "%s %s types=%d row %d: embedding error %.3g > %.3g", dir,
                   sl_dtype_name(dt), with_types, b, e1, tol);
            CHECKF(e2 <= tol, "%s %s types=%d row %d: logit error %.3g > %.3g", dir,
                   sl_dtype_name(dt), with_types, b, e2, tol);
        }
    }
    /* A larger batch after a smaller one: the scratch grows. */
    int32_t ids2[5 * 12], len2[5] = {12, 1, 5, 12, 2};
    for (int i = 0; i < 5 * 12; i++)
        ids2[i] = (i * 7 + 3) % TV;
    float emb2[5 * TD];
    sl_bert_embed(m, NULL, ids2, NULL, len2, 5, 12, emb2);
    for (int b = 0; b < 5; b++) {
        double h[TP * TD], want[TD], norm = 0;
        ref_encode(ids2 + b * 12, NULL, len2[b], h);
        for (int d = 0; d < TD; d++) {
            double s = 0;
            for (int t = 0; t < (cls_pool ? 1 : len2[b]); t++)
                s += h[t * TD + d];
            want[d] = s / (cls_pool ? 1 : len2[b]);
            norm += want[d] * want[d];
        }
        for (int d = 0; !cls_pool && d < TD; d++)
            want[d] /= sqrt(norm);
        double e = max_abs_diff(emb2 + b * TD, want, TD);
        CHECKF(e <= tol, "%s grown batch row %d: error %.3g", dir, b, e);
    }
    sl_bert_free(m);
}

static void expect_load_error(sl_backend_t *be, const char *dir, int tp, const char *w1,
                              const char *w2)
{
    sl_error_t err = {{0}};
    sl_bert_t *m = sl_bert_load(dir, be, tp, 0, SL_F32, &err);
    CHECKF(m == NULL, "loaded %s", dir);
    sl_bert_free(m);
    CHECKF(!w1 || strstr(err.msg, w1), "message lacks '%s': %s", w1, err.msg);
    CHECKF(!w2 || strstr(err.msg, w2), "message lacks '%s': %s", w2, err.msg);
}

static void test_tiny(sl_backend_t *be)
{
    make_tiny_weights();
    for (int i = 0; i < TB * TS; i++) {
        tiny_ids[i] = (int32_t)((i * 13 + 5) % TV);
        tiny_types[i] = (int32_t)((i / 2) % TT);
    }
    char a[4200], b[4200], d[4200];
    write_tiny_a(a, sizeof a, "tiny_a", NULL, NULL);
    write_tiny_b(b, sizeof b);
    check_tiny_model(be, a, 0, SL_F32, 1e-5);
    check_tiny_model(be, b, 1, SL_F32, 1e-5);
    check_tiny_model(be, a, 0, SL_F16, 2e-2);
    check_tiny_model(be, a, 0, SL_BF16, 1e-1);

    write_tiny_a(d, sizeof d, "tiny_missing", "encoder.layer.1.attention.self.key.weight", NULL);
    expect_load_error(be, d, 1, "'encoder.layer.1.attention.self.key.weight'", "missing");
    write_tiny_a(d, sizeof d, "tiny_noln", "encoder.layer.0.output.LayerNorm.bias", NULL);
    expect_load_error(be, d, 1, "'encoder.layer.0.output.LayerNorm.bias'", "missing");
    write_tiny_a(d, sizeof d, "tiny_nocls", "classifier.bias", NULL);
    expect_load_error(be, d, 1, "'classifier.bias'", "missing");
    write_tiny_a(d, sizeof d, "tiny_shape", NULL, "encoder.layer.0.intermediate.dense.weight");
    expect_load_error(be, d, 1, "intermediate.dense.weight", "[16, 8]");
    expect_load_error(be, a, 3, "'num_attention_heads'", "--tp 3");
    make_dir(d, sizeof d, "tiny_nofile");
    write_text(d, "config.json", TINY_CONFIG);
    expect_load_error(be, d, 1, "model.safetensors", NULL);

    /* Tensor-parallel slicing at load: each of 2 ranks holds its half (no forward without a
     * communicator here; the MPI tests run TP forwards). */
    for (int r = 0; r < 2; r++) {
        sl_error_t err = {{0}};
        sl_bert_t *m = sl_bert_load(a, be, 2, r, SL_F32, &err);
        CHECKF(m != NULL, "tp 2 rank %d: %s", r, err.msg);
        sl_bert_free(m);
    }
}

/* ---- 3, 4. goldens from transformers ----------------------------------------------------- */

typedef struct {
    int n, L;         /* rows, padded width */
    int32_t *ids;     /* [n, L] */
    int32_t *lengths; /* [n] */
    float *out;       /* [n, width] */
    int width;
} golden_t;

static int load_golden(const char *path, const char *out_name, golden_t *g)
{
    memset(g, 0, sizeof *g);
    if (!exists(path)) {
        fprintf(stderr, "FAIL: %s is missing (tests/reference/make_bert_goldens.py writes it)\n",
                path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "FAIL: cannot open %s\n", path);
        return -1;
    }
    int nd1, nd2, nd3;
    hsize_t d1[2], d2[2], d3[2];
    g->ids = sl_test_h5_read(f, "input_ids", H5T_NATIVE_INT32, 4, NULL, &nd1, d1);
    g->lengths = sl_test_h5_read(f, "lengths", H5T_NATIVE_INT32, 4, NULL, &nd2, d2);
    g->out = sl_test_h5_read(f, out_name, H5T_NATIVE_FLOAT, 4, NULL, &nd3, d3);
    H5Fclose(f);
    if (!g->ids || !g->lengths || !g->out || nd1 != 2 || nd2 != 1 || nd3 != 2 || d2[0] != d1[0] ||
        d3[0] != d1[0]) {
        fprintf(stderr, "FAIL: %s: expected input_ids [N, L], lengths [N], %s [N, W]\n", path,
                out_name);
        return -1;
    }
    g->n = (int)d1[0];
    g->L = (int)d1[1];
    g->width = (int)d3[1];
    return 0;
}

static void free_golden(golden_t *g)
{
    free(g->ids);
    free(g->lengths);
    free(g->out);
}

/* Rows sorted by length (longest first), as the runner batches them, so padding stays small. */
static const golden_t *g_sort;
static int by_length_desc(const void *a, const void *b)
{
    int la = g_sort->lengths[*(const int *)a], lb = g_sort->lengths[*(const int *)b];
    return la != lb ? lb - la : *(const int *)a - *(const int *)b;
}

/* Runs the rows of g in batches of `bs` rows of similar length, each padded to its longest
 * row; out [n, width] in g's row order. Returns seconds; *tokens = real tokens. */
static double run_batches(sl_bert_t *m, const golden_t *g, int bs, int classify, float *out,
                          long *tokens)
{
    int *order = malloc((size_t)g->n * sizeof *order);
    for (int i = 0; i < g->n; i++)
        order[i] = i;
    g_sort = g;
    qsort(order, (size_t)g->n, sizeof *order, by_length_desc);
    int32_t *ids = malloc((size_t)bs * (size_t)g->L * sizeof *ids);
    int32_t *lens = malloc((size_t)bs * sizeof *lens);
    float *o = malloc((size_t)bs * (size_t)g->width * sizeof *o);
    double t0 = sl_test_now_s();
    *tokens = 0;
    for (int r0 = 0; r0 < g->n; r0 += bs) {
        int B = g->n - r0 < bs ? g->n - r0 : bs, S = 1;
        for (int b = 0; b < B; b++) {
            lens[b] = g->lengths[order[r0 + b]];
            S = lens[b] > S ? lens[b] : S;
            *tokens += lens[b];
        }
        for (int b = 0; b < B; b++)
            for (int s = 0; s < S; s++)
                ids[b * S + s] = s < lens[b] ? g->ids[(size_t)order[r0 + b] * g->L + s] : 0;
        if (classify)
            sl_bert_classify(m, NULL, ids, NULL, lens, B, S, o);
        else
            sl_bert_embed(m, NULL, ids, NULL, lens, B, S, o);
        for (int b = 0; b < B; b++)
            memcpy(out + (size_t)order[r0 + b] * g->width, o + (size_t)b * g->width,
                   (size_t)g->width * sizeof *o);
    }
    double dt = sl_test_now_s() - t0;
    free(order);
    free(ids);
    free(lens);
    free(o);
    return dt;
}

/* Row-wise comparison: worst cosine and worst max abs error. */
static void compare_rows(const float *got, const float *want, int n, int w, double *worst_cos,
                         int *worst_cos_row, double *worst_abs, int *worst_abs_row)
{
    *worst_cos = 2;
    *worst_abs = 0;
    *worst_cos_row = *worst_abs_row = -1;
    double *wd = malloc((size_t)w * sizeof *wd);
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < w; j++)
            wd[j] = want[(size_t)r * w + j];
        double c = cosine(got + (size_t)r * w, wd, w);
        double a = max_abs_diff(got + (size_t)r * w, wd, w);
        if (!(c >= *worst_cos)) {
            *worst_cos = c;
            *worst_cos_row = r;
        }
        if (!(a <= *worst_abs)) {
            *worst_abs = a;
            *worst_abs_row = r;
        }
    }
    free(wd);
}

/* The MiniLM directory: $SL_MODELS_DIR (the model, or a folder with minilm.path), else
 * $SL_BINARY_DIR/models/minilm.path. */
static int find_minilm(char *out, size_t cap)
{
    const char *env = getenv("SL_MODELS_DIR");
    const char *bin = getenv("SL_BINARY_DIR");
    char p[4200];
    if (env && *env) {
        path_join(p, sizeof p, env, "config.json");
        if (exists(p)) {
            snprintf(out, cap, "%s", env);
            return 0;
        }
        path_join(p, sizeof p, env, "minilm.path");
    } else if (bin && *bin) {
        snprintf(p, sizeof p, "%s/models/minilm.path", bin);
    } else {
        p[0] = '\0';
    }
    FILE *f = p[0] ? fopen(p, "r") : NULL;
    if (f) {
        if (!fgets(out, (int)cap, f))
            out[0] = '\0';
        fclose(f);
        out[strcspn(out, "\r\n")] = '\0';
        char c[4300];
        path_join(c, sizeof c, out, "config.json");
        if (out[0] && exists(c))
            return 0;
        fprintf(stderr, "FAIL: %s names '%s', which has no config.json\n", p, out);
    }
    fprintf(stderr,
            "FAIL: all-MiniLM-L6-v2 not found (looked for %s): run scripts/install-models.sh "
            "(or set SL_MODELS_DIR to the model directory)\n",
            p[0] ? p : "$SL_MODELS_DIR or $SL_BINARY_DIR/models/minilm.path");
    return -1;
}

static void test_minilm(sl_backend_t *be, const char *goldens)
{
    char model[4096], gpath[4200];
    if (sl_test_model_skipped("minilm", "all-MiniLM-L6-v2 against the transformers goldens"))
        return;
    int found = find_minilm(model, sizeof model) == 0;
    CHECKF(found, "the MiniLM model directory is needed (scripts/install-models.sh)");
    golden_t g;
    path_join(gpath, sizeof gpath, goldens, "minilm_goldens.h5");
    int have = load_golden(gpath, "embeddings", &g) == 0;
    CHECKF(have, "%s is needed", gpath);
    if (!found || !have) {
        free_golden(&g);
        return;
    }
    sl_error_t err = {{0}};
    sl_bert_t *m = sl_bert_load(model, be, 1, 0, SL_F32, &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) {
        free_golden(&g);
        return;
    }
    const sl_bert_config_t *c = sl_bert_config(m);
    CHECK(c->hidden == 384 && c->layers == 6 && c->heads == 12 && c->max_length == 256);
    CHECK(c->pooling == SL_BERT_POOL_MEAN && c->normalize == 1 && c->n_labels == 0);
    CHECKF(g.width == c->hidden, "goldens width %d", g.width);

    float *out = malloc((size_t)g.n * (size_t)g.width * sizeof *out);
    long tokens;
    run_batches(m, &g, 32, 0, out, &tokens); /* warm-up (scratch, thread pools) */
    double dt = run_batches(m, &g, 32, 0, out, &tokens);
    double wc, wa;
    int wcr, war;
    compare_rows(out, g.out, g.n, g.width, &wc, &wcr, &wa, &war);
    printf("minilm f32: %d rows, worst cosine %.9f (1 - cos = %.2g, row %d), max abs error %.3g "
           "(row %d)\n",
           g.n, wc, 1.0 - wc, wcr, wa, war);
    printf("minilm f32 CPU forward (%s, batches of 32 by length): %.1f sentences/s, %.0f tokens/s "
           "(%.3f s)\n",
           sl_backend_describe(be), g.n / dt, tokens / dt, dt);
    CHECKF(wc >= 0.99999, "worst cosine %.8f at row %d", wc, wcr);
    CHECKF(wa <= 1e-4, "max abs error %.3g at row %d", wa, war);
    sl_bert_free(m);

    m = sl_bert_load(model, be, 1, 0, SL_BF16, &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (m) {
        dt = run_batches(m, &g, 32, 0, out, &tokens);
        compare_rows(out, g.out, g.n, g.width, &wc, &wcr, &wa, &war);
        printf("minilm bf16 weights: worst cosine %.6f (row %d), max abs error %.3g; %.1f "
               "sentences/s\n",
               wc, wcr, wa, g.n / dt);
        CHECKF(wc >= 0.999, "bf16 worst cosine %.6f at row %d", wc, wcr);
        sl_bert_free(m);
    }
    free(out);
    free_golden(&g);
}

static void test_tiny_cls(sl_backend_t *be, const char *src, const char *goldens)
{
    char model[4200], gpath[4200];
    snprintf(model, sizeof model, "%s/tests/reference/tiny_bert_cls", src);
    path_join(gpath, sizeof gpath, goldens, "tiny_cls_goldens.h5");
    golden_t g;
    int have = load_golden(gpath, "logits", &g) == 0;
    CHECKF(have, "%s is needed", gpath);
    if (!have) {
        free_golden(&g);
        return;
    }
    sl_error_t err = {{0}};
    sl_bert_t *m = sl_bert_load(model, be, 1, 0, SL_F32, &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (m) {
        const sl_bert_config_t *c = sl_bert_config(m);
        CHECKF(c->n_labels == g.width, "n_labels %d, goldens %d", c->n_labels, g.width);
        if (c->n_labels == g.width) {
            float *out = malloc((size_t)g.n * (size_t)g.width * sizeof *out);
            long tokens;
            run_batches(m, &g, 16, 1, out, &tokens);
            double wc, wa;
            int wcr, war;
            compare_rows(out, g.out, g.n, g.width, &wc, &wcr, &wa, &war);
            printf("tiny classifier: %d rows, labels %s/%s/%s, max abs logit error %.3g (row "
                   "%d)\n",
                   g.n, c->labels[0], c->n_labels > 1 ? c->labels[1] : "",
                   c->n_labels > 2 ? c->labels[2] : "", wa, war);
            CHECKF(wa <= 1e-4, "logit error %.3g at row %d", wa, war);
            free(out);
        }
        sl_bert_free(m);
    }
    free_golden(&g);
}

int main(void)
{
    if (sl_test_tmpdir(g_root, sizeof g_root, "sl_test_bert") != 0)
        return 1;
    const char *src = sl_test_source_dir();
    char goldens[4200];
    const char *genv = getenv("SL_GOLDENS_DIR");
    if (genv && *genv)
        snprintf(goldens, sizeof goldens, "%s", genv);
    else
        snprintf(goldens, sizeof goldens, "%s/tests/reference/goldens", src);

    sl_error_t err = {{0}};
    /* SL_DEVICE=cuda runs the same checks on the CUDA backend (gpu-bundle/run.sh) */
    const char *dev = getenv("SL_DEVICE");
    int cuda = dev && !strcmp(dev, "cuda");
    sl_backend_t *be =
        sl_backend_create(cuda ? SL_BACKEND_CUDA : SL_BACKEND_CPU, 0, cuda ? 0 : 2, &err);
    if (!be) {
        fprintf(stderr, "FAIL: %s backend: %s\n", cuda ? "cuda" : "cpu", err.msg);
        return 1;
    }
    test_config();
    test_tiny(be);
    test_minilm(be, goldens);
    test_tiny_cls(be, src, goldens);
    sl_backend_free(be);

    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_root);
    return sl_test_finish("test_bert");
}
