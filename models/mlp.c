/*
 * mlp.c — the `mlp` model family: config parsing, checking the weights file against the config,
 * loading this tensor-parallel rank's slice of every layer onto a backend, and the forward pass.
 *
 * Layer i computes out = act(in @ W_i^T + b_i) with W_i [d(i+1), d(i)] (nn.Linear layout).
 * Under --tp T, layers go in (column-parallel, row-parallel) pairs (see mlp.h): a column layer
 * holds W rows [off, off+d(i+1)/T) and the same bias slice, and produces its slice of the
 * activations; the following row layer holds the matching columns of its W, produces a partial
 * sum of the full output, and one all-reduce completes it. Weights are stored in the run's
 * precision (f32, f16 or bf16); activations between layers, biases and the input statistics are
 * always f32, and every GEMM accumulates in f32.
 */
#include "models/mlp.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_fs.h"
#include "common/sl_hash.h"
#include "common/sl_profile.h"
#include "kernels/elementwise.h"
#include "models/formats/weights.h"
#include "partition/units.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this loader reads it in place"
#endif

#define SL_MLP_MAX_CONFIG (16u << 20) /* config.json larger than this is refused */
#define SL_MLP_MAX_DIM 2147483647LL   /* BLAS takes int dimensions */

/* ---- small helpers --------------------------------------------------------------------- */

/* ---- config ------------------------------------------------------------------------------ */

static int parse_act(const cJSON *v, int allow_final, int *out)
{
    if (allow_final && (!v || cJSON_IsNull(v))) {
        *out = SL_ACT_NONE;
        return 0;
    }
    if (!cJSON_IsString(v))
        return -1;
    if (allow_final && strcmp(v->valuestring, "softmax") == 0) {
        *out = SL_ACT_SOFTMAX;
        return 0;
    }
    int a = sl_act_parse(v->valuestring);
    if (a <= SL_ACT_NONE) /* "none" is spelled null, and only for final_activation */
        return -1;
    *out = a;
    return 0;
}

int sl_mlp_config_parse(sl_mlp_config_t *cfg, const char *json, const char *what, sl_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        return sl_errorf(err, "%s: not valid JSON (error near byte %lld)", what,
                         at ? (long long)(at - json) : 0LL);
    }
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        sl_errorf(err, "%s: expected a JSON object", what);
        goto done;
    }

    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!mt) {
        sl_errorf(err, "%s: key 'model_type': missing (expected \"mlp\")", what);
        goto done;
    }
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "mlp") != 0) {
        sl_errorf(err, "%s: key 'model_type': expected \"mlp\", got %s%.64s%s", what,
                  cJSON_IsString(mt) ? "\"" : "",
                  cJSON_IsString(mt) ? mt->valuestring : "a non-string",
                  cJSON_IsString(mt) ? "\"" : "");
        goto done;
    }

    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(root, "dims");
    int nd = cJSON_IsArray(dims) ? cJSON_GetArraySize(dims) : 0;
    if (nd < 2) {
        sl_errorf(err, "%s: key 'dims': expected an array of at least 2 positive integers%s", what,
                  dims ? "" : " (missing)");
        goto done;
    }
    cfg->n_layers = nd - 1;
    cfg->dims = sl_xcalloc((size_t)nd, sizeof *cfg->dims);
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, dims)
    {
        double v = cJSON_IsNumber(d) ? d->valuedouble : 0.0;
        if (!(v >= 1.0) || v > (double)SL_MLP_MAX_DIM || v != floor(v)) {
            sl_errorf(err,
                      "%s: key 'dims': expected an array of at least 2 positive integers "
                      "(element %d is not one)",
                      what, i);
            goto done;
        }
        cfg->dims[i++] = (int64_t)v;
    }

    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation");
    if (!act) {
        sl_errorf(err, "%s: key 'activation': missing (expected relu, gelu, silu, tanh or sigmoid)",
                  what);
        goto done;
    }
    if (parse_act(act, 0, &cfg->activation) != 0) {
        sl_errorf(err,
                  "%s: key 'activation': unknown activation %s%.64s%s (expected relu, gelu, silu, "
                  "tanh or sigmoid)",
                  what, cJSON_IsString(act) ? "'" : "",
                  cJSON_IsString(act) ? act->valuestring : "(not a string)",
                  cJSON_IsString(act) ? "'" : "");
        goto done;
    }

    const cJSON *fin = cJSON_GetObjectItemCaseSensitive(root, "final_activation");
    if (parse_act(fin, 1, &cfg->final_activation) != 0) {
        sl_errorf(err,
                  "%s: key 'final_activation': unknown activation %s%.64s%s (expected null, "
                  "softmax, relu, gelu, silu, tanh or sigmoid)",
                  what, cJSON_IsString(fin) ? "'" : "",
                  cJSON_IsString(fin) ? fin->valuestring : "(not a string)",
                  cJSON_IsString(fin) ? "'" : "");
        goto done;
    }
    rc = 0;

done:
    cJSON_Delete(root);
    if (rc != 0)
        sl_mlp_config_free(cfg);
    return rc;
}

int sl_mlp_config_load(const char *config_path, sl_mlp_config_t *cfg, sl_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    char *json;
    if (sl_read_file(config_path, SL_MLP_MAX_CONFIG, &json, NULL, err) != 0)
        return -1;
    int rc = sl_mlp_config_parse(cfg, json, config_path, err);
    free(json);
    return rc;
}

void sl_mlp_config_free(sl_mlp_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->dims);
    memset(cfg, 0, sizeof *cfg);
}

sl_split_t sl_mlp_layer_split(int layer, int n_layers, int tp_size)
{
    if (tp_size <= 1)
        return SL_SPLIT_NONE;
    if (layer % 2 == 0) /* first of a pair; an odd last layer has no partner */
        return layer + 1 < n_layers ? SL_SPLIT_COLUMN : SL_SPLIT_NONE;
    return SL_SPLIT_ROW;
}

/* ---- checking the weights file against the config ---------------------------------------- */

/* Finds `name` and checks it is float with the expected shape. Missing optional tensors give
 * *out = NULL and 0. */
static int check_tensor(const sl_safetensors_t *st, const sl_mlp_config_t *cfg, const char *name,
                        int ndim, const int64_t *want, int optional, const sl_st_tensor_t **out,
                        sl_error_t *err)
{
    char ws[96], hs[96], ds[160];
    const sl_st_tensor_t *t = sl_st_find(st, name);
    *out = t;
    if (!t) {
        if (optional)
            return 0;
        return sl_errorf(err, "%s: tensor '%s' %s is missing (config dims %s)", st->path, name,
                         sl_st_fmt_shape(ws, sizeof ws, ndim, want),
                         sl_st_fmt_shape(ds, sizeof ds, cfg->n_layers + 1, cfg->dims));
    }
    if (!t->mapped || !sl_st_is_float(t->dtype))
        return sl_errorf(err, "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16", st->path,
                         name, t->code);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == want[i];
    if (!same)
        return sl_errorf(err,
                         "%s: dims disagree with the tensors: tensor '%s' has shape %s, expected "
                         "%s (config dims %s)",
                         st->path, name, sl_st_fmt_shape(hs, sizeof hs, t->ndim, t->shape),
                         sl_st_fmt_shape(ws, sizeof ws, ndim, want),
                         sl_st_fmt_shape(ds, sizeof ds, cfg->n_layers + 1, cfg->dims));
    return 0;
}

int sl_mlp_check(const char *dir, const sl_mlp_config_t *cfg, const sl_safetensors_t *st,
                 int tp_size, sl_error_t *err)
{
    const sl_st_tensor_t *t;
    char name[64];
    for (int i = 0; i < cfg->n_layers; i++) {
        int64_t w[2] = {cfg->dims[i + 1], cfg->dims[i]};
        snprintf(name, sizeof name, "layers.%d.weight", i);
        if (check_tensor(st, cfg, name, 2, w, 0, &t, err) != 0)
            return -1;
        snprintf(name, sizeof name, "layers.%d.bias", i);
        if (check_tensor(st, cfg, name, 1, w, 0, &t, err) != 0)
            return -1;
    }
    const sl_st_tensor_t *mean, *std;
    if (check_tensor(st, cfg, "input_mean", 1, cfg->dims, 1, &mean, err) != 0 ||
        check_tensor(st, cfg, "input_std", 1, cfg->dims, 1, &std, err) != 0)
        return -1;
    if (!mean != !std)
        return sl_errorf(err, "%s: tensor '%s' is present without '%s' (both or neither)", st->path,
                         mean ? "input_mean" : "input_std", mean ? "input_std" : "input_mean");

    for (int i = 0; i < cfg->n_layers; i++)
        if (sl_mlp_layer_split(i, cfg->n_layers, tp_size) == SL_SPLIT_COLUMN &&
            cfg->dims[i + 1] % tp_size != 0)
            return sl_errorf(err,
                             "%s: layer %d (column-parallel): output dim %lld is not divisible "
                             "by --tp %d",
                             dir, i, (long long)cfg->dims[i + 1], tp_size);
    return 0;
}

/* ---- the loaded model -------------------------------------------------------------------- */

typedef struct {
    sl_split_t split;
    int64_t in, out;             /* full dims d(i), d(i+1) */
    int64_t in_local, out_local; /* this rank's share */
    sl_tensor_t *w;              /* dtype [out_local, in_local] */
    sl_tensor_t *b;              /* f32 [out_local] for COLUMN; [out] for ROW and NONE */
    sl_tensor_t *out_buf;        /* f32 [scratch_rows, width of this layer's output] */
    sl_tensor_t *cast_buf;       /* dtype [scratch_rows, in_local]; only when dtype != f32 */
} sl_mlp_layer_t;

struct sl_mlp {
    sl_mlp_config_t cfg;
    sl_backend_t *be;
    int tp_size, tp_rank;
    sl_dtype_t dtype;       /* weights and GEMM inputs; SL_WEIGHTS_INT8: Q8_0 weights, f32 inputs */
    sl_mlp_layer_t *layers; /* [n_layers] */
    sl_tensor_t *mean, *std; /* f32 [d0], or NULL */
    int64_t scratch_rows;
};

static sl_tensor_t *upload(sl_backend_t *be, sl_dtype_t dt, int64_t d0, int64_t d1,
                           const void *host)
{
    sl_tensor_t *t = d1 > 0 ? sl_tensor_new2(be, dt, d0, d1) : sl_tensor_new1(be, dt, d0);
    sl_copy_h2d(t, host, sl_tensor_bytes(t));
    return t;
}

/* Loads layer i's slice; the shapes were checked by sl_mlp_check. */
static int load_layer(sl_mlp_t *m, const sl_safetensors_t *st, int i, sl_error_t *err)
{
    sl_mlp_layer_t *L = &m->layers[i];
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "layers.%d.weight", i);
    snprintf(bn, sizeof bn, "layers.%d.bias", i);
    const sl_st_tensor_t *w = sl_st_find(st, wn), *b = sl_st_find(st, bn);

    L->split = sl_mlp_layer_split(i, m->cfg.n_layers, m->tp_size);
    L->in = L->in_local = m->cfg.dims[i];
    L->out = L->out_local = m->cfg.dims[i + 1];
    int64_t row0 = 0, col0 = 0;
    if (L->split == SL_SPLIT_COLUMN) {
        if (sl_split_even(L->out, m->tp_size, m->tp_rank, &row0, &L->out_local, err) != 0)
            return sl_error_prefix(err, "layer %d (column-parallel)", i);
    } else if (L->split == SL_SPLIT_ROW) {
        /* The same cut as the previous (column) layer's output rows, so this rank's input
         * columns are exactly the activations it computed. */
        if (sl_split_even(L->in, m->tp_size, m->tp_rank, &col0, &L->in_local, err) != 0)
            return sl_error_prefix(err, "layer %d (row-parallel)", i);
    }

    /* Blocks are checked for NaN/Inf as sl_weights_block checks them (this loader reads the
     * weights in the GEMM dtype directly). */
    const int int8 = m->dtype == SL_WEIGHTS_INT8; /* read as f32, quantized to Q8_0 here */
    const sl_dtype_t rd = int8 ? SL_F32 : m->dtype;
    void *hw = sl_st_host_block(w, L->in, row0, L->out_local, col0, L->in_local, rd);
    int rc =
        sl_weights_check_finite(st->path, wn, hw, rd, row0, L->out_local, col0, L->in_local, err);
    if (rc == 0)
        L->w = int8 ? sl_upload_int8(m->be, hw, L->out_local, L->in_local)
                    : upload(m->be, m->dtype, L->out_local, L->in_local, hw);
    free(hw);
    sl_wlog_add_slice(wn, L->w, col0);
    if (rc != 0)
        return -1;
    /* The bias is added once to the full output: sliced with the rows for a column layer,
     * whole for a row layer (added after the all-reduce). */
    int64_t b0 = L->split == SL_SPLIT_COLUMN ? row0 : 0;
    int64_t bn_len = L->split == SL_SPLIT_COLUMN ? L->out_local : L->out;
    void *hb = sl_st_host_block(b, bn_len, 0, 1, b0, bn_len, SL_F32);
    rc = sl_weights_check_finite(st->path, bn, hb, SL_F32, 0, 1, b0, bn_len, err);
    if (rc == 0)
        L->b = upload(m->be, SL_F32, bn_len, 0, hb);
    free(hb);
    sl_wlog_add(bn, L->b);
    return rc;
}

static int load_stats(sl_mlp_t *m, const sl_safetensors_t *st, sl_error_t *err)
{
    const sl_st_tensor_t *mean = sl_st_find(st, "input_mean"), *std = sl_st_find(st, "input_std");
    if (!mean)
        return 0;
    int64_t d0 = m->cfg.dims[0];
    float *hm = sl_st_host_block(mean, d0, 0, 1, 0, d0, SL_F32);
    float *hs = sl_st_host_block(std, d0, 0, 1, 0, d0, SL_F32);
    int rc = 0;
    /* A zero or non-finite std would turn every row into NaN/Inf: refuse the model instead. */
    for (int64_t j = 0; j < d0 && rc == 0; j++) {
        if (!isfinite(hm[j]))
            rc = sl_errorf(err, "%s: tensor 'input_mean' element %lld is %g (must be finite)",
                           st->path, (long long)j, (double)hm[j]);
        else if (!(hs[j] > 0.0f) || !isfinite(hs[j]))
            rc = sl_errorf(err,
                           "%s: tensor 'input_std' element %lld is %g (must be finite and "
                           "positive)",
                           st->path, (long long)j, (double)hs[j]);
    }
    if (rc == 0) {
        m->mean = upload(m->be, SL_F32, d0, 0, hm);
        m->std = upload(m->be, SL_F32, d0, 0, hs);
    }
    free(hm);
    free(hs);
    return rc;
}

sl_mlp_t *sl_mlp_load(const char *dir, sl_backend_t *be, int tp_size, int tp_rank, sl_dtype_t dtype,
                      sl_error_t *err)
{
    return sl_mlp_load_with(dir, NULL, be, tp_size, tp_rank, dtype, err);
}

sl_mlp_t *sl_mlp_load_with(const char *dir, const sl_mlp_config_t *cfg, sl_backend_t *be,
                           int tp_size, int tp_rank, sl_dtype_t dtype, sl_error_t *err)
{
    if (sl_weights_load_args(dir, dtype, tp_size, tp_rank, err) != 0)
        return NULL;
    char *cfg_path = sl_path_join(dir, "config.json");
    char *st_path = sl_path_join(dir, "model.safetensors");
    char *json = NULL;
    size_t json_len = 0;
    sl_safetensors_t st;
    memset(&st, 0, sizeof st);
    sl_mlp_t *m = sl_xcalloc(1, sizeof *m);
    m->be = be;
    m->tp_size = tp_size;
    m->tp_rank = tp_rank;
    m->dtype = dtype;

    if (cfg) { /* parsed already: a copy, so the model owns its config */
        m->cfg = *cfg;
        m->cfg.dims = sl_xmalloc((size_t)(cfg->n_layers + 1) * sizeof *m->cfg.dims);
        memcpy(m->cfg.dims, cfg->dims, (size_t)(cfg->n_layers + 1) * sizeof *m->cfg.dims);
    } else if (sl_read_file(cfg_path, SL_MLP_MAX_CONFIG, &json, &json_len, err) != 0 ||
               sl_mlp_config_parse(&m->cfg, json, cfg_path, err) != 0) {
        goto fail;
    }
    if (sl_st_open(&st, st_path, err) != 0 || sl_mlp_check(dir, &m->cfg, &st, tp_size, err) != 0)
        goto fail;

    m->layers = sl_xcalloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    for (int i = 0; i < m->cfg.n_layers; i++)
        if (load_layer(m, &st, i, err) != 0)
            goto fail;
    if (load_stats(m, &st, err) != 0)
        goto fail;

    sl_st_close(&st);
    free(json);
    free(cfg_path);
    free(st_path);
    return m;

fail:
    sl_st_close(&st);
    free(json);
    free(cfg_path);
    free(st_path);
    sl_mlp_free(m);
    return NULL;
}

static void free_scratch(sl_mlp_t *m)
{
    for (int i = 0; m->layers && i < m->cfg.n_layers; i++) {
        sl_tensor_free(m->layers[i].out_buf);
        sl_tensor_free(m->layers[i].cast_buf);
        m->layers[i].out_buf = m->layers[i].cast_buf = NULL;
    }
    m->scratch_rows = 0;
}

void sl_mlp_free(sl_mlp_t *m)
{
    if (!m)
        return;
    free_scratch(m);
    for (int i = 0; m->layers && i < m->cfg.n_layers; i++) {
        sl_tensor_free(m->layers[i].w);
        sl_tensor_free(m->layers[i].b);
    }
    free(m->layers);
    sl_tensor_free(m->mean);
    sl_tensor_free(m->std);
    sl_mlp_config_free(&m->cfg);
    free(m);
}

const sl_mlp_config_t *sl_mlp_config(const sl_mlp_t *m) { return &m->cfg; }

/* ---- forward ----------------------------------------------------------------------------- */

/* Scratch for `rows` rows: one f32 output per layer but the last (which writes into y) and,
 * for f16/bf16 weights, one input cast per layer. Grows, never shrinks; smaller batches use
 * row views of it. */
static void ensure_scratch(sl_mlp_t *m, int64_t rows)
{
    if (rows <= m->scratch_rows)
        return;
    free_scratch(m);
    int n = m->cfg.n_layers;
    for (int i = 0; i < n; i++) {
        sl_mlp_layer_t *L = &m->layers[i];
        if (i < n - 1)
            L->out_buf = sl_tensor_new2(m->be, SL_F32, rows,
                                        L->split == SL_SPLIT_COLUMN ? L->out_local : L->out);
        if (m->dtype != SL_F32 && m->dtype != SL_WEIGHTS_INT8)
            L->cast_buf = sl_tensor_new2(m->be, m->dtype, rows, L->in_local);
    }
    m->scratch_rows = rows;
}

void sl_mlp_forward(sl_mlp_t *m, sl_comm_t *comm, sl_tensor_t *x, sl_tensor_t *y)
{
    const sl_mlp_config_t *c = &m->cfg;
    int n = c->n_layers;
    if (x->ndim != 2 || x->dtype != SL_F32 || x->shape[1] != c->dims[0] || y->ndim != 2 ||
        y->dtype != SL_F32 || y->shape[0] != x->shape[0] || y->shape[1] != c->dims[n])
        SL_FATAL("sl_mlp_forward: x must be f32 [rows, %lld] and y f32 [rows, %lld]",
                 (long long)c->dims[0], (long long)c->dims[n]);
    if (m->tp_size > 1 && (!comm || sl_comm_size(comm) != m->tp_size))
        SL_FATAL("sl_mlp_forward: the model is split over %d ranks but the communicator has %d",
                 m->tp_size, comm ? sl_comm_size(comm) : 0);
    int64_t rows = x->shape[0];
    if (rows == 0)
        return;
    ensure_scratch(m, rows);

    if (m->mean)
        sl_standardize(x, m->mean, m->std);
    /* Row views of the scratch outputs. Two, alternating: layer i reads the view layer i-1
     * wrote while writing the other one. */
    sl_tensor_t views[2];
    const sl_tensor_t *in = x; /* f32 [rows, in_local] */
    for (int i = 0; i < n; i++) {
        sl_mlp_layer_t *L = &m->layers[i];
        SL_RANGE_PUSHF("mlp layer %d", i);
        sl_tensor_t *out = y; /* f32 [rows, out_local (COLUMN) or out] */
        if (i < n - 1) {
            views[i % 2] = sl_tensor_rows(L->out_buf, rows);
            out = &views[i % 2];
        }
        /* GEMM inputs in the weights' dtype: cast through L->cast_buf unless f32 */
        if (L->split == SL_SPLIT_ROW) {
            /* out = in [rows, in_local] @ W^T [in_local, out]: a partial sum. The bias must be
             * added once and the activation is nonlinear, so both wait for the all-reduce. */
            sl_linear_row_parallel(comm, in, L->w, L->b, out, L->cast_buf);
        } else {
            /* out = in [rows, in] @ W^T [in, out_local] + b [out_local] */
            sl_linear_cast(in, L->w, L->b, out, L->cast_buf);
        }

        int act = i == n - 1 ? c->final_activation : c->activation;
        if (act == SL_ACT_SOFTMAX)
            sl_softmax(out);
        else if (act != SL_ACT_NONE)
            sl_activation(out, (sl_act_t)act);
        in = out;
        SL_RANGE_POP();
    }
}
