/*
 * test_llama.c — models/llama.c against transformers 4.47.1 (goldens written by
 * tests/reference/make_llama_goldens.py), on the CPU backend:
 *   1. tiny random checkpoints (tests/reference/tiny_llama/<name>: LLaMA with llama3 RoPE
 *      scaling and an untied head, LLaMA with linear scaling and tied embeddings, Qwen2 with
 *      q/k/v biases, Mistral with head_dim != hidden/heads, and the llama3 one configured through
 *      `rope_parameters`): full logits at every position of 3 sequences packed into one step,
 *      within 1e-4 relative; then the same sequences as a prefill of their first half followed
 *      by one-token decode steps through the KV cache; log-probabilities equal log_softmax of
 *      the golden logits; the bf16 precision within a looser bound;
 *   2. SmolLM2-135M (GGUF Q4_1, installed by scripts/install-models.sh): the last-position
 *      logits of every golden prompt within 1e-3 relative (of the row's largest logit), packed
 *      together into one step;
 *   3. load errors that name the file and the key or tensor: a missing tensor, a wrong shape, an
 *      unsupported rope type, heads that do not split over the TP size.
 * Run: ctest -R test_llama (SL_SOURCE_DIR, SL_MODELS_DIR; SL_DEVICE=cuda: on the GPU;
 * SL_SKIP_MODELS=smollm2 leaves part 2 out and says so, for gpu-bundle/run.sh).
 */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "models/llama.h"
#include "sl_test.h"

static char g_src[4096];

/* ---- HDF5 helpers ------------------------------------------------------------------------ */

/* Reads a whole dataset as `type` into a malloc'd buffer; dims into shape (up to 3). */
static void *read_ds(hid_t f, const char *name, hid_t type, size_t elem, hsize_t *shape, int *nd)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "missing dataset %s\n", name);
        exit(1);
    }
    hid_t s = H5Dget_space(d);
    *nd = H5Sget_simple_extent_ndims(s);
    H5Sget_simple_extent_dims(s, shape, NULL);
    hsize_t n = 1;
    for (int i = 0; i < *nd; i++)
        n *= shape[i];
    void *buf = malloc((size_t)n * elem + 1);
    H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Sclose(s);
    H5Dclose(d);
    return buf;
}

/* max |a - b| / max |b| over a row of n. */
static double rel_err(const float *a, const float *b, int64_t n)
{
    double e = 0, m = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return e / m;
}

static double log_softmax_at(const float *row, int64_t V, int32_t target)
{
    double mx = row[0], z = 0;
    for (int64_t v = 1; v < V; v++)
        mx = fmax(mx, row[v]);
    for (int64_t v = 0; v < V; v++)
        z += exp(row[v] - mx);
    return row[target] - mx - log(z);
}

/* ---- 1. tiny checkpoints ----------------------------------------------------------------- */

static void tiny_model(sl_backend_t *be, hid_t gold, const char *name, sl_dtype_t dt, double tol)
{
    char dir[8192], grp[256];
    snprintf(dir, sizeof dir, "%s/tests/reference/tiny_llama/%s", g_src, name);
    sl_error_t err;
    sl_llama_t *m = sl_llama_load(dir, be, 1, 0, dt, &err);
    CHECKF(m != NULL, "load %s: %s", name, m ? "" : err.msg);
    if (!m)
        return;
    hsize_t sh[3];
    int nd;
    snprintf(grp, sizeof grp, "%s/input_ids", name);
    int32_t *ids = read_ds(gold, grp, H5T_NATIVE_INT32, 4, sh, &nd);
    int64_t B = (int64_t)sh[0], Lmax = (int64_t)sh[1];
    snprintf(grp, sizeof grp, "%s/lengths", name);
    int32_t *len = read_ds(gold, grp, H5T_NATIVE_INT32, 4, sh, &nd);
    snprintf(grp, sizeof grp, "%s/logits", name);
    float *ref = read_ds(gold, grp, H5T_NATIVE_FLOAT, 4, sh, &nd);
    int64_t V = (int64_t)sh[2];
    CHECKF(V == sl_llama_config(m)->vocab, "%s: vocab %lld", name, (long long)V);

    /* (a) every sequence whole, packed into one step; logits of every token */
    int64_t T = 0;
    for (int64_t b = 0; b < B; b++)
        T += len[b];
    int32_t *tid = malloc((size_t)T * 4), *slot = malloc((size_t)T * 4),
            *pos = malloc((size_t)T * 4);
    int32_t *sel = malloc((size_t)T * 4), *kv = calloc((size_t)B, 4), *tgt = malloc((size_t)T * 4);
    int64_t t = 0;
    /* interleave the rows' tokens (round robin) so the packing order is not row-major */
    for (int64_t p = 0; p < Lmax; p++)
        for (int64_t b = 0; b < B; b++)
            if (p < len[b]) {
                tid[t] = ids[b * Lmax + p];
                slot[t] = (int32_t)b;
                pos[t] = (int32_t)p;
                sel[t] = (int32_t)t;
                tgt[t] = p + 1 < len[b] ? ids[b * Lmax + p + 1] : 0;
                t++;
            }
    for (int64_t b = 0; b < B; b++)
        kv[b] = len[b];
    sl_llama_cache_t *c = sl_llama_cache_new(m, B, Lmax, 1, &err);
    CHECK(c != NULL);
    sl_llama_step_t st = {T, tid, slot, pos, kv, T, sel, T};
    sl_llama_forward(m, NULL, c, &st);
    float *got = malloc((size_t)(T * V) * sizeof *got), *lp = malloc((size_t)T * sizeof *lp);
    sl_llama_logits(m, NULL, got);
    sl_llama_logprobs(m, NULL, tgt, lp);
    double worst = 0, worst_lp = 0;
    for (int64_t i = 0; i < T; i++) {
        const float *r = ref + (slot[i] * Lmax + pos[i]) * V;
        worst = fmax(worst, rel_err(got + i * V, r, V));
        double want = log_softmax_at(r, V, tgt[i]);
        worst_lp = fmax(worst_lp, fabs(lp[i] - want) / fmax(fabs(want), 1.0));
    }
    CHECKF(worst <= tol, "%s (%s): packed prefill logits rel err %.2e (tol %.0e)", name,
           sl_dtype_name(dt), worst, tol);
    CHECKF(worst_lp <= tol, "%s (%s): log-probabilities rel err %.2e", name, sl_dtype_name(dt),
           worst_lp);
    sl_llama_cache_free(c);

    /* (b) prefill half of each row, then decode the rest one token per row per step */
    c = sl_llama_cache_new(m, B, Lmax, 0, &err);
    double worst_dec = 0;
    int64_t done[8] = {0};
    for (int64_t step = 0;; step++) {
        int64_t n = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t upto = step == 0 ? (len[b] + 1) / 2 : done[b] + 1;
            if (upto > len[b])
                upto = len[b];
            for (int64_t p = done[b]; p < upto; p++, n++) {
                tid[n] = ids[b * Lmax + p];
                slot[n] = (int32_t)b;
                pos[n] = (int32_t)p;
                sel[n] = (int32_t)n;
            }
            done[b] = upto;
            kv[b] = (int32_t)upto;
        }
        if (n == 0)
            break;
        sl_llama_step_t s2 = {n, tid, slot, pos, kv, n, sel, n};
        sl_llama_forward(m, NULL, c, &s2);
        sl_llama_logits(m, NULL, got);
        for (int64_t i = 0; i < n; i++)
            worst_dec =
                fmax(worst_dec, rel_err(got + i * V, ref + (slot[i] * Lmax + pos[i]) * V, V));
    }
    CHECKF(worst_dec <= tol, "%s (%s): prefill + cached decode logits rel err %.2e", name,
           sl_dtype_name(dt), worst_dec);
    sl_llama_cache_free(c);
    free(tid), free(slot), free(pos), free(sel), free(kv), free(tgt), free(got), free(lp);
    free(ids), free(len), free(ref);
    sl_llama_free(m);
}

/* ---- 2. SmolLM2 -------------------------------------------------------------------------- */

static void smollm2(sl_backend_t *be)
{
    if (sl_test_model_skipped("smollm2", "SmolLM2 against the transformers goldens"))
        return;
    const char *mdir = getenv("SL_MODELS_DIR");
    char pf[8192], gguf[8192] = "", gp[8192];
    snprintf(pf, sizeof pf, "%s/smollm2.path", mdir ? mdir : "build/models");
    FILE *f = fopen(pf, "r");
    CHECKF(f != NULL, "SmolLM2 installed (%s; run scripts/install-models.sh)", pf);
    if (!f)
        return;
    if (fgets(gguf, sizeof gguf, f))
        gguf[strcspn(gguf, "\n")] = 0;
    fclose(f);
    sl_error_t err;
    sl_llama_t *m = sl_llama_load(gguf, be, 1, 0, SL_F32, &err);
    CHECKF(m != NULL, "load %s: %s", gguf, m ? "" : err.msg);
    if (!m)
        return;
    const sl_llama_config_t *c = sl_llama_config(m);
    CHECK(c->hidden == 576 && c->layers == 30 && c->heads == 9 && c->kv_heads == 3 &&
          c->vocab == 49152 && c->tied && fabs(c->rope_theta - 1e5) < 1e-6);

    snprintf(gp, sizeof gp, "%s/tests/reference/goldens/smollm2_goldens.h5", g_src);
    hid_t g = H5Fopen(gp, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(g >= 0, "open %s", gp);
    if (g < 0) {
        sl_llama_free(m);
        return;
    }
    hsize_t sh[3];
    int nd;
    int32_t *ids = read_ds(g, "prompt_ids", H5T_NATIVE_INT32, 4, sh, &nd);
    int64_t P = (int64_t)sh[0], L = (int64_t)sh[1];
    int32_t *len = read_ds(g, "prompt_lengths", H5T_NATIVE_INT32, 4, sh, &nd);
    float *ref = read_ds(g, "last_logits", H5T_NATIVE_FLOAT, 4, sh, &nd);
    int64_t V = (int64_t)sh[1];
    int64_t T = 0;
    for (int64_t p = 0; p < P; p++)
        T += len[p];
    int32_t *tid = malloc((size_t)T * 4), *slot = malloc((size_t)T * 4),
            *pos = malloc((size_t)T * 4);
    int32_t *sel = malloc((size_t)P * 4), *kv = malloc((size_t)P * 4);
    int64_t t = 0;
    for (int64_t p = 0; p < P; p++) {
        for (int64_t i = 0; i < len[p]; i++, t++) {
            tid[t] = ids[p * L + i];
            slot[t] = (int32_t)p;
            pos[t] = (int32_t)i;
        }
        sel[p] = (int32_t)(t - 1);
        kv[p] = len[p];
    }
    sl_llama_cache_t *cache = sl_llama_cache_new(m, P, L, 1, &err);
    sl_llama_step_t st = {T, tid, slot, pos, kv, P, sel, T};
    sl_llama_forward(m, NULL, cache, &st);
    float *got = malloc((size_t)(P * V) * sizeof *got);
    sl_llama_logits(m, NULL, got);
    double worst = 0;
    int agree = 0;
    for (int64_t p = 0; p < P; p++) {
        worst = fmax(worst, rel_err(got + p * V, ref + p * V, V));
        int64_t a = 0, b = 0;
        for (int64_t v = 1; v < V; v++) {
            a = got[p * V + v] > got[p * V + a] ? v : a;
            b = ref[p * V + v] > ref[p * V + b] ? v : b;
        }
        agree += a == b;
    }
    CHECKF(worst <= 1e-3, "SmolLM2: last-position logits of %lld prompts, rel err %.2e",
           (long long)P, worst);
    CHECKF(agree == P, "SmolLM2: argmax agrees on %d of %lld prompts", agree, (long long)P);
    printf("SmolLM2: %lld prompts, %lld tokens in one packed step, worst rel err %.2e\n",
           (long long)P, (long long)T, worst);
    sl_llama_cache_free(cache);

    /* Cached decode of a long row, teacher-forced with transformers' greedy tokens: at every
     * step the logits equal a full prefill of the same prefix (the KV-cache path, across key
     * blocks, against the packed-prefill path), and the argmax is transformers' token. */
    int32_t *gids = read_ds(g, "greedy_ids", H5T_NATIVE_INT32, 4, sh, &nd);
    int64_t G = (int64_t)sh[1], row = 4 < P ? 4 : 0, n0 = len[row];
    int64_t N = n0 + G;
    int32_t *seq = malloc((size_t)N * 4), *all_pos = malloc((size_t)N * 4);
    int32_t *zero = calloc((size_t)N, 4);
    for (int64_t i = 0; i < n0; i++)
        seq[i] = ids[row * L + i];
    for (int64_t i = 0; i < G; i++)
        seq[n0 + i] = gids[row * G + i];
    for (int64_t i = 0; i < N; i++)
        all_pos[i] = (int32_t)i;
    /* full prefill of the whole sequence: logits at every position */
    float *full = malloc((size_t)(N * V) * sizeof *full), *one = malloc((size_t)V * sizeof *one);
    int32_t *allsel = malloc((size_t)N * 4), nn = (int32_t)N;
    for (int64_t i = 0; i < N; i++)
        allsel[i] = (int32_t)i;
    cache = sl_llama_cache_new(m, 1, N, 0, &err);
    sl_llama_step_t pre = {N, seq, zero, all_pos, &nn, N, allsel, N};
    sl_llama_forward(m, NULL, cache, &pre);
    sl_llama_logits(m, NULL, full);
    sl_llama_cache_free(cache);
    /* prefill of the prompt, then one token per step */
    cache = sl_llama_cache_new(m, 1, N, 0, &err);
    int32_t last = (int32_t)(n0 - 1), kvn = (int32_t)n0;
    sl_llama_step_t p0 = {n0, seq, zero, all_pos, &kvn, 1, &last, n0};
    sl_llama_forward(m, NULL, cache, &p0);
    sl_llama_logits(m, NULL, one);
    double worst_dec = rel_err(one, full + (n0 - 1) * V, V);
    int argmax_ok = 1;
    for (int64_t i = n0; i < N - 1; i++) {
        int32_t z = 0, ps = (int32_t)i, k = (int32_t)(i + 1);
        sl_llama_step_t d1 = {1, seq + i, &z, &ps, &k, 1, &z, 0};
        sl_llama_forward(m, NULL, cache, &d1);
        sl_llama_logits(m, NULL, one);
        worst_dec = fmax(worst_dec, rel_err(one, full + i * V, V));
        int64_t a = 0;
        for (int64_t v = 1; v < V; v++)
            a = one[v] > one[a] ? v : a;
        argmax_ok &= a == seq[i + 1];
    }
    CHECKF(worst_dec <= 1e-4,
           "SmolLM2: cached decode of %lld tokens after a %lld-token prompt "
           "equals full prefill, rel err %.2e",
           (long long)G, (long long)n0, worst_dec);
    CHECKF(argmax_ok, "SmolLM2: teacher-forced decode picks transformers' greedy tokens");
    sl_llama_cache_free(cache);
    free(seq), free(all_pos), free(zero), free(full), free(one), free(allsel), free(gids);

    free(tid), free(slot), free(pos), free(sel), free(kv), free(got);
    free(ids), free(len), free(ref);
    H5Fclose(g);
    sl_llama_free(m);
}

/* ---- 3. load errors ---------------------------------------------------------------------- */

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0)
        fwrite(buf, 1, n, b);
    if (a)
        fclose(a);
    if (b)
        fclose(b);
}

/* A copy of tiny_llama/llama3_scaled with config.json's `from` replaced by `to`. */
static void bad_config(const char *dir, const char *from, const char *to)
{
    char src[8192], dst[8192];
    snprintf(src, sizeof src, "%s/tests/reference/tiny_llama/llama3_scaled/model.safetensors",
             g_src);
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    mkdir(dir, 0755);
    copy_file(src, dst);
    snprintf(src, sizeof src, "%s/tests/reference/tiny_llama/llama3_scaled/config.json", g_src);
    FILE *f = fopen(src, "rb");
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *at = strstr(text, from);
    CHECKF(at != NULL, "config has %s", from);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    f = fopen(dst, "wb");
    if (at) {
        fwrite(text, 1, (size_t)(at - text), f);
        fputs(to, f);
        fputs(at + strlen(from), f);
    }
    fclose(f);
}

static void expect_error(sl_backend_t *be, const char *dir, int tp, const char *what,
                         const char *needle1, const char *needle2)
{
    sl_error_t err;
    err.msg[0] = 0;
    sl_llama_t *m = sl_llama_load(dir, be, tp, 0, SL_F32, &err);
    CHECKF(m == NULL, "%s: refused", what);
    CHECKF(strstr(err.msg, needle1) && strstr(err.msg, needle2),
           "%s: message '%s' names '%s' and '%s'", what, err.msg, needle1, needle2);
    sl_llama_free(m);
}

static void load_errors(sl_backend_t *be)
{
    char tmp[] = "/tmp/sl_test_llama.XXXXXX", d[8192];
    if (!mkdtemp(tmp))
        return;
    snprintf(d, sizeof d, "%s/rope", tmp);
    bad_config(d, "\"llama3\"", "\"yarn\"");
    expect_error(be, d, 1, "unsupported rope type", "config.json", "yarn");
    snprintf(d, sizeof d, "%s/shape", tmp);
    bad_config(d, "\"intermediate_size\": 96", "\"intermediate_size\": 128");
    expect_error(be, d, 1, "config/tensor shape mismatch", "model.safetensors", "mlp.");
    snprintf(d, sizeof d, "%s/tp", tmp);
    bad_config(d, "\"num_attention_heads\": 4", "\"num_attention_heads\": 4");
    expect_error(be, d, 3, "heads over --tp 3", "4 attention heads", "--tp 3");
    snprintf(d, sizeof d, "%s/missing", tmp);
    bad_config(d, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": false");
    /* a checkpoint without a tensor: the llama3 weights under a config with 3 layers */
    bad_config(d, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    expect_error(be, d, 1, "missing tensor", "model.layers.2.", "missing");
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
}

int main(void)
{
    const char *src = getenv("SL_SOURCE_DIR");
    snprintf(g_src, sizeof g_src, "%s", src ? src : ".");
    sl_error_t err;
    /* SL_DEVICE=cuda runs the same checks on the CUDA backend (gpu-bundle/run.sh) */
    const char *dev = getenv("SL_DEVICE");
    int cuda = dev && !strcmp(dev, "cuda");
    sl_backend_t *be = sl_backend_create(cuda ? SL_BACKEND_CUDA : SL_BACKEND_CPU, 0, 0, &err);
    if (!be) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char gp[8192];
    snprintf(gp, sizeof gp, "%s/tests/reference/goldens/tiny_llama_goldens.h5", g_src);
    hid_t gold = H5Fopen(gp, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(gold >= 0, "open %s", gp);
    if (gold >= 0) {
        static const char *names[] = {"llama3_scaled", "linear_scaled_tied", "qwen2_bias",
                                      "mistral", "rope_parameters"};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            tiny_model(be, gold, names[i], SL_F32, 1e-4);
        tiny_model(be, gold, "qwen2_bias", SL_BF16, 6e-2);
        H5Fclose(gold);
    }
    smollm2(be);
    load_errors(be);
    sl_backend_free(be);
    return sl_test_finish("test_llama");
}
