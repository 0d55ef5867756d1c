/*
 * test_mlp_config.c — the mlp model family without MPI: config.json parsing and its error
 * messages, the tensor-parallel layer split, and a full load + forward on the CPU backend.
 *
 * The forward test writes tiny model directories (config.json + model.safetensors, with
 * weights from a fixed pseudo-random sequence) into a mkdtemp directory, loads them with
 * tp 1, and compares sl_mlp_forward against a naive double-precision evaluation here; F16 and
 * BF16 copies of the same weights must agree with the f32 result to 1e-2 relative. Load errors
 * (wrong shape, missing tensor, bad dtype, tp not dividing a column-parallel layer, missing
 * files) must name the tensor, layer or file at fault. sl_inspect_model's counts are checked
 * on a small F16 model.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/elementwise.h"
#include "cli/inspect_model.h"
#include "models/mlp.h"
#include "models/formats/fingerprint.h"
#include "sl_test.h"

/* ---- config ------------------------------------------------------------------------------ */

/* Parses `json`; expects failure whose message contains "cfg.json" and each given word. */
static void expect_config_error(const char *json, const char *w1, const char *w2)
{
    sl_mlp_config_t cfg;
    sl_error_t err = {{0}};
    int rc = sl_mlp_config_parse(&cfg, json, "cfg.json", &err);
    CHECKF(rc == -1, "accepted: %s", json);
    CHECKF(strstr(err.msg, "cfg.json") != NULL, "message does not name the file: %s", err.msg);
    CHECKF(!w1 || strstr(err.msg, w1), "message lacks '%s': %s", w1, err.msg);
    CHECKF(!w2 || strstr(err.msg, w2), "message lacks '%s': %s", w2, err.msg);
    CHECK(cfg.dims == NULL);
}

static void test_config(void)
{
    sl_mlp_config_t cfg;
    sl_error_t err = {{0}};
    int rc = sl_mlp_config_parse(&cfg,
                                 "{\"model_type\": \"mlp\", \"dims\": [16, 64, 64, 3], "
                                 "\"activation\": \"relu\", \"final_activation\": \"softmax\", "
                                 "\"comment\": \"extra keys are ignored\"}",
                                 "cfg.json", &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(cfg.n_layers == 3);
        CHECK(cfg.dims[0] == 16 && cfg.dims[1] == 64 && cfg.dims[2] == 64 && cfg.dims[3] == 3);
        CHECK(cfg.activation == SL_ACT_RELU);
        CHECK(cfg.final_activation == SL_ACT_SOFTMAX);
        sl_mlp_config_free(&cfg);
        CHECK(cfg.dims == NULL);
    }

    rc = sl_mlp_config_parse(&cfg,
                             "{\"model_type\":\"mlp\",\"dims\":[2,1],\"activation\":\"gelu\","
                             "\"final_activation\":null}",
                             "cfg.json", &err);
    CHECKF(rc == 0 && cfg.n_layers == 1 && cfg.activation == SL_ACT_GELU &&
               cfg.final_activation == SL_ACT_NONE,
           "%s", err.msg);
    sl_mlp_config_free(&cfg);

    rc = sl_mlp_config_parse(
        &cfg, "{\"model_type\":\"mlp\",\"dims\":[2,1],\"activation\":\"silu\"}", "cfg.json", &err);
    CHECKF(rc == 0 && cfg.activation == SL_ACT_SILU && cfg.final_activation == SL_ACT_NONE, "%s",
           err.msg);
    sl_mlp_config_free(&cfg);

    rc = sl_mlp_config_parse(&cfg,
                             "{\"model_type\":\"mlp\",\"dims\":[2,3,1],\"activation\":\"sigmoid\","
                             "\"final_activation\":\"tanh\"}",
                             "cfg.json", &err);
    CHECKF(rc == 0 && cfg.activation == SL_ACT_SIGMOID && cfg.final_activation == SL_ACT_TANH, "%s",
           err.msg);
    sl_mlp_config_free(&cfg);

    expect_config_error("{\"dims\":[2,1],\"activation\":\"relu\"}", "'model_type'", "missing");
    expect_config_error("{\"model_type\":\"cnn\",\"dims\":[2,1],\"activation\":\"relu\"}",
                        "'model_type'", "cnn");
    expect_config_error("{\"model_type\":7,\"dims\":[2,1],\"activation\":\"relu\"}", "'model_type'",
                        NULL);
    expect_config_error("{\"model_type\":\"mlp\",\"activation\":\"relu\"}", "'dims'", NULL);
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":5,\"activation\":\"relu\"}", "'dims'",
                        "at least 2 positive integers");
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5],\"activation\":\"relu\"}", "'dims'",
                        "at least 2 positive integers");
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,0],\"activation\":\"relu\"}", "'dims'",
                        "positive");
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,-3],\"activation\":\"relu\"}",
                        "'dims'", NULL);
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,2.5],\"activation\":\"relu\"}",
                        "'dims'", NULL);
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,\"2\"],\"activation\":\"relu\"}",
                        "'dims'", NULL);
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,2]}", "'activation'", "missing");
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,2],\"activation\":\"swish\"}",
                        "'activation'", "swish");
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,2],\"activation\":null}",
                        "'activation'", NULL);
    /* softmax is for the output only */
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,2],\"activation\":\"softmax\"}",
                        "'activation'", "softmax");
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,2],\"activation\":\"relu\","
                        "\"final_activation\":\"logsoftmax\"}",
                        "'final_activation'", "logsoftmax");
    expect_config_error("{\"model_type\":\"mlp\",\"dims\":[5,2],\"activation\":\"relu\","
                        "\"final_activation\":3}",
                        "'final_activation'", NULL);
    expect_config_error("{\"model_type\":\"mlp\",", "not valid JSON", NULL);
    expect_config_error("[1,2]", "JSON object", NULL);

    rc = sl_mlp_config_load("/nonexistent/dir/config.json", &cfg, &err);
    CHECKF(rc == -1 && strstr(err.msg, "/nonexistent/dir/config.json"), "%s", err.msg);
}

static void test_split(void)
{
    const sl_split_t C = SL_SPLIT_COLUMN, R = SL_SPLIT_ROW, N = SL_SPLIT_NONE;
    /* expected[n_layers - 1][layer] for tp 2 */
    const sl_split_t expected[5][5] = {
        {N}, {C, R}, {C, R, N}, {C, R, C, R}, {C, R, C, R, N},
    };
    for (int n = 1; n <= 5; n++) {
        for (int i = 0; i < n; i++) {
            CHECKF(sl_mlp_layer_split(i, n, 1) == N, "tp 1, %d layers, layer %d", n, i);
            CHECKF(sl_mlp_layer_split(i, n, 2) == expected[n - 1][i], "tp 2, %d layers, layer %d",
                   n, i);
            CHECKF(sl_mlp_layer_split(i, n, 4) == expected[n - 1][i], "tp 4, %d layers, layer %d",
                   n, i);
        }
    }
}

/* ---- model files ------------------------------------------------------------------------- */

static char g_root[4096];
static char g_dirs[32][4200]; /* model directories made, for clean-up */
static int g_ndirs;

/* buf = dir/file; a path too long for buf ends the test. */
static char *join(char *buf, size_t cap, const char *dir, const char *file)
{
    if (snprintf(buf, cap, "%s/%s", dir, file) >= (int)cap) {
        fprintf(stderr, "path too long: %s/%s\n", dir, file);
        exit(1);
    }
    return buf;
}

typedef struct {
    const char *name;
    sl_dtype_t dtype; /* F32, F16, BF16 or I32 in the file */
    int ndim;
    int64_t shape[2];
    const float *vals;
} tensor_spec_t;

static const char *dtype_code(sl_dtype_t dt)
{
    return dt == SL_F32 ? "F32" : dt == SL_F16 ? "F16" : dt == SL_BF16 ? "BF16" : "I32";
}

/* Makes <root>/<name>/ with config.json and model.safetensors (the tensors in order, padded
 * header as the Python writer does). Returns the directory. */
static const char *write_model(const char *name, const char *config, const tensor_spec_t *ts, int n)
{
    if (g_ndirs == (int)(sizeof g_dirs / sizeof g_dirs[0])) {
        fprintf(stderr, "too many model directories\n");
        exit(1);
    }
    char *dir = g_dirs[g_ndirs++];
    join(dir, sizeof g_dirs[0], g_root, name);
    if (mkdir(dir, 0700) != 0) {
        perror(dir);
        exit(1);
    }
    char path[4300];
    join(path, sizeof path, dir, "config.json");
    FILE *f = fopen(path, "w");
    fputs(config, f);
    fclose(f);

    char header[8192];
    size_t h = (size_t)snprintf(header, sizeof header, "{");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        char shape[64] = "";
        for (int d = 0; d < ts[i].ndim; d++) {
            numel *= ts[i].shape[d];
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? "," : "",
                     (long long)ts[i].shape[d]);
        }
        uint64_t bytes = (uint64_t)numel * sl_dtype_size(ts[i].dtype);
        h += (size_t)snprintf(header + h, sizeof header - h,
                              "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%llu,"
                              "%llu]}",
                              i ? "," : "", ts[i].name, dtype_code(ts[i].dtype), shape,
                              (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    h += (size_t)snprintf(header + h, sizeof header - h, "}");
    while (h % 8)
        header[h++] = ' ';

    join(path, sizeof path, dir, "model.safetensors");
    f = fopen(path, "wb");
    for (int i = 0; i < 8; i++)
        fputc((int)((h >> (8 * i)) & 0xff), f);
    fwrite(header, 1, h, f);
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < ts[i].ndim; d++)
            numel *= ts[i].shape[d];
        for (int64_t j = 0; j < numel; j++) {
            float v = ts[i].vals[j];
            if (ts[i].dtype == SL_F32) {
                fwrite(&v, 4, 1, f);
            } else if (ts[i].dtype == SL_I32) {
                int32_t q = (int32_t)v;
                fwrite(&q, 4, 1, f);
            } else {
                uint16_t q = ts[i].dtype == SL_F16 ? sl_f32_to_f16(v) : sl_f32_to_bf16(v);
                fwrite(&q, 2, 1, f);
            }
        }
    }
    fclose(f);
    return dir;
}

static void remove_models(void)
{
    char path[4300];
    for (int i = 0; i < g_ndirs; i++) {
        join(path, sizeof path, g_dirs[i], "config.json");
        unlink(path);
        join(path, sizeof path, g_dirs[i], "model.safetensors");
        unlink(path);
        rmdir(g_dirs[i]);
    }
    rmdir(g_root);
}

/* ---- reference model --------------------------------------------------------------------- */

#define MAX_LAYERS 4
#define MAX_DIM 8

typedef struct {
    int n_layers;
    int64_t dims[MAX_LAYERS + 1];
    int act, final_act;
    float w[MAX_LAYERS][MAX_DIM * MAX_DIM]; /* layer i: [d(i+1), d(i)] */
    float b[MAX_LAYERS][MAX_DIM];           /* [d(i+1)] */
    int has_stats;
    float mean[MAX_DIM], std[MAX_DIM]; /* [d0] */
} ref_model_t;

static uint32_t g_rng = 12345u;
static float uniform(float lo, float hi) /* deterministic, platform-independent */
{
    g_rng = g_rng * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(g_rng >> 8) / 16777216.0f;
}

static void ref_init(ref_model_t *r, int n_layers, const int64_t *dims, int act, int final_act,
                     int has_stats)
{
    memset(r, 0, sizeof *r);
    r->n_layers = n_layers;
    memcpy(r->dims, dims, (size_t)(n_layers + 1) * sizeof *dims);
    r->act = act;
    r->final_act = final_act;
    for (int i = 0; i < n_layers; i++) {
        for (int64_t j = 0; j < dims[i + 1] * dims[i]; j++)
            r->w[i][j] = uniform(-1.0f, 1.0f);
        for (int64_t j = 0; j < dims[i + 1]; j++)
            r->b[i][j] = uniform(-0.5f, 0.5f);
    }
    r->has_stats = has_stats;
    for (int64_t j = 0; j < dims[0]; j++) {
        r->mean[j] = uniform(-1.0f, 1.0f);
        r->std[j] = uniform(0.5f, 2.0f);
    }
}

static double ref_act(int act, double v)
{
    switch (act) {
    case SL_ACT_RELU: return v > 0 ? v : 0;
    case SL_ACT_GELU: return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case SL_ACT_SILU: return v / (1.0 + exp(-v));
    case SL_ACT_TANH: return tanh(v);
    case SL_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    default: return v;
    }
}

/* y [rows, dn] = the model applied to x [rows, d0], in double. */
static void ref_forward(const ref_model_t *r, const float *x, int64_t rows, double *y)
{
    double a[MAX_DIM], o[MAX_DIM];
    int n = r->n_layers;
    for (int64_t row = 0; row < rows; row++) {
        for (int64_t j = 0; j < r->dims[0]; j++) {
            a[j] = x[row * r->dims[0] + j];
            if (r->has_stats)
                a[j] = (a[j] - r->mean[j]) / r->std[j];
        }
        for (int i = 0; i < n; i++) {
            int64_t din = r->dims[i], dout = r->dims[i + 1];
            int act = i == n - 1 ? r->final_act : r->act;
            for (int64_t k = 0; k < dout; k++) {
                double s = r->b[i][k];
                for (int64_t j = 0; j < din; j++)
                    s += (double)r->w[i][k * din + j] * a[j];
                o[k] = act == SL_ACT_SOFTMAX ? s : ref_act(act, s);
            }
            if (act == SL_ACT_SOFTMAX) {
                double mx = o[0], sum = 0;
                for (int64_t k = 1; k < dout; k++)
                    mx = o[k] > mx ? o[k] : mx;
                for (int64_t k = 0; k < dout; k++)
                    sum += (o[k] = exp(o[k] - mx));
                for (int64_t k = 0; k < dout; k++)
                    o[k] /= sum;
            }
            memcpy(a, o, (size_t)dout * sizeof *a);
        }
        memcpy(y + row * r->dims[n], a, (size_t)r->dims[n] * sizeof *a);
    }
}

static const char *act_str(int act)
{
    static const char *names[] = {"null",     "\"relu\"", "\"gelu\"",
                                  "\"silu\"", "\"tanh\"", "\"sigmoid\""};
    return act == SL_ACT_SOFTMAX ? "\"softmax\"" : names[act];
}

/* Writes the reference model with every tensor in `dt`. */
static const char *write_ref_model(const char *name, const ref_model_t *r, sl_dtype_t dt)
{
    char config[512], dims[128] = "";
    for (int i = 0; i <= r->n_layers; i++)
        snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? ", " : "",
                 (long long)r->dims[i]);
    snprintf(config, sizeof config,
             "{\"model_type\": \"mlp\", \"dims\": [%s], \"activation\": %s, "
             "\"final_activation\": %s}\n",
             dims, act_str(r->act), act_str(r->final_act));
    tensor_spec_t ts[2 * MAX_LAYERS + 2];
    static char names[2 * MAX_LAYERS][32];
    int n = 0;
    for (int i = 0; i < r->n_layers; i++) {
        snprintf(names[2 * i], sizeof names[0], "layers.%d.weight", i);
        snprintf(names[2 * i + 1], sizeof names[0], "layers.%d.bias", i);
        ts[n++] = (tensor_spec_t){names[2 * i], dt, 2, {r->dims[i + 1], r->dims[i]}, r->w[i]};
        ts[n++] = (tensor_spec_t){names[2 * i + 1], dt, 1, {r->dims[i + 1], 0}, r->b[i]};
    }
    if (r->has_stats) {
        ts[n++] = (tensor_spec_t){"input_mean", dt, 1, {r->dims[0], 0}, r->mean};
        ts[n++] = (tensor_spec_t){"input_std", dt, 1, {r->dims[0], 0}, r->std};
    }
    return write_model(name, config, ts, n);
}

/* ---- forward ----------------------------------------------------------------------------- */

/* Runs rows of x through the model; out: f32 [rows, dn] on the host. */
static void run_forward(sl_backend_t *be, sl_mlp_t *m, const float *x, int64_t rows, int64_t d0,
                        int64_t dn, float *out)
{
    sl_tensor_t *tx = sl_tensor_new2(be, SL_F32, rows, d0); /* f32 [rows, d0] */
    sl_tensor_t *ty = sl_tensor_new2(be, SL_F32, rows, dn); /* f32 [rows, dn] */
    sl_copy_h2d(tx, x, (size_t)(rows * d0) * sizeof(float));
    sl_mlp_forward(m, NULL, tx, ty);
    sl_copy_d2h(out, ty, (size_t)(rows * dn) * sizeof(float));
    sl_tensor_free(tx);
    sl_tensor_free(ty);
}

/* Loads `dir` as `dt` and checks batches of 5, 2 (a smaller batch after a larger one) and 9
 * rows (scratch regrowth) against the reference, to `tol`; out0 receives the first batch. */
static void check_model(sl_backend_t *be, const char *dir, const ref_model_t *r, sl_dtype_t dt,
                        double tol, float *out0)
{
    sl_error_t err = {{0}};
    sl_mlp_t *m = sl_mlp_load(dir, be, 1, 0, dt, &err);
    CHECKF(m != NULL, "%s: %s", dir, err.msg);
    if (!m)
        return;
    const sl_mlp_config_t *cfg = sl_mlp_config(m);
    CHECK(cfg->n_layers == r->n_layers && cfg->dims[r->n_layers] == r->dims[r->n_layers]);

    uint64_t fp = 0;
    CHECK(sl_model_fingerprint(dir, &fp, &err) == 0 && fp != 0);

    int64_t d0 = r->dims[0], dn = r->dims[r->n_layers];
    const int64_t batches[3] = {5, 2, 9};
    for (int bi = 0; bi < 3; bi++) {
        int64_t rows = batches[bi];
        float x[9 * MAX_DIM], y[9 * MAX_DIM];
        double ref[9 * MAX_DIM];
        for (int64_t j = 0; j < rows * d0; j++)
            x[j] = uniform(-2.0f, 2.0f);
        ref_forward(r, x, rows, ref);
        run_forward(be, m, x, rows, d0, dn, y);
        double e = sl_test_rel_err(y, ref, (long)(rows * dn));
        CHECKF(e <= tol, "%s as %s, %lld rows: relative error %.3g > %.3g", dir, sl_dtype_name(dt),
               (long long)rows, e, tol);
        if (bi == 0 && out0)
            memcpy(out0, y, (size_t)(rows * dn) * sizeof *y);
        if (r->final_act == SL_ACT_SOFTMAX) {
            for (int64_t row = 0; row < rows; row++) {
                double s = 0;
                for (int64_t k = 0; k < dn; k++)
                    s += y[row * dn + k];
                CHECKF(fabs(s - 1.0) < 1e-5, "softmax row %lld sums to %g", (long long)row, s);
            }
        }
    }
    sl_mlp_free(m);
}

static void test_forward(sl_backend_t *be)
{
    /* [3, 4, 2]: relu, softmax output, input standardisation */
    static ref_model_t a, b;
    const int64_t dims_a[] = {3, 4, 2};
    ref_init(&a, 2, dims_a, SL_ACT_RELU, SL_ACT_SOFTMAX, 1);
    const char *dir32 = write_ref_model("a_f32", &a, SL_F32);
    const char *dir16 = write_ref_model("a_f16", &a, SL_F16);
    const char *dirbf = write_ref_model("a_bf16", &a, SL_BF16);

    /* The reference draws x from the shared generator, so reset it to feed every load the
     * same inputs. */
    float y32[5 * MAX_DIM], y16[5 * MAX_DIM], ybf[5 * MAX_DIM], yconv[5 * MAX_DIM];
    double y32d[5 * MAX_DIM];
    uint32_t seed = g_rng;
    check_model(be, dir32, &a, SL_F32, 1e-5, y32);
    g_rng = seed;
    check_model(be, dir16, &a, SL_F32, 1e-2, y16); /* F16 file, loaded as f32 */
    g_rng = seed;
    check_model(be, dirbf, &a, SL_F32, 2e-2, ybf); /* BF16 file, loaded as f32 */
    g_rng = seed;
    check_model(be, dir32, &a, SL_F16, 1e-2, yconv); /* F32 file run in f16 */
    g_rng = seed;
    check_model(be, dir32, &a, SL_BF16, 2e-2, NULL); /* F32 file run in bf16 */
    g_rng = seed;
    check_model(be, dirbf, &a, SL_BF16, 2e-2, NULL); /* BF16 file run in bf16: bits copied */

    for (int j = 0; j < 5 * 2; j++)
        y32d[j] = y32[j];
    double e16 = sl_test_rel_err(y16, y32d, 10), ebf = sl_test_rel_err(ybf, y32d, 10);
    double econv = sl_test_rel_err(yconv, y32d, 10);
    CHECKF(e16 <= 1e-2, "F16 model vs F32 model: relative error %.3g", e16);
    CHECKF(ebf <= 1e-2, "BF16 model vs F32 model: relative error %.3g", ebf);
    CHECKF(econv <= 1e-2, "F32 model run in f16 vs f32: relative error %.3g", econv);

    /* [3, 5, 4, 2]: three layers, gelu, sigmoid output, no standardisation; then every other
     * activation once. */
    const int64_t dims_b[] = {3, 5, 4, 2};
    const int acts[][2] = {{SL_ACT_GELU, SL_ACT_SIGMOID},
                           {SL_ACT_SILU, SL_ACT_NONE},
                           {SL_ACT_TANH, SL_ACT_RELU},
                           {SL_ACT_SIGMOID, SL_ACT_TANH}};
    for (int k = 0; k < 4; k++) {
        char name[32];
        snprintf(name, sizeof name, "b%d", k);
        ref_init(&b, 3, dims_b, acts[k][0], acts[k][1], 0);
        check_model(be, write_ref_model(name, &b, SL_F32), &b, SL_F32, 1e-5, NULL);
    }

    /* Different weights, different fingerprint. */
    uint64_t f1 = 0, f2 = 0;
    sl_error_t err = {{0}};
    CHECK(sl_model_fingerprint(dir32, &f1, &err) == 0);
    CHECK(sl_model_fingerprint(dir16, &f2, &err) == 0);
    CHECK(f1 != f2);
}

/* ---- load errors ------------------------------------------------------------------------- */

static void expect_load_error(sl_backend_t *be, const char *dir, int tp, const char *w1,
                              const char *w2, const char *w3)
{
    sl_error_t err = {{0}};
    sl_mlp_t *m = sl_mlp_load(dir, be, tp, 0, SL_F32, &err);
    CHECKF(m == NULL, "%s: loaded a bad model", dir);
    sl_mlp_free(m);
    const char *words[3] = {w1, w2, w3};
    for (int i = 0; i < 3; i++)
        CHECKF(!words[i] || strstr(err.msg, words[i]), "%s: message lacks '%s': %s", dir, words[i],
               err.msg);
}

static void test_load_errors(sl_backend_t *be)
{
    static const float v[64] = {0.5f, -0.25f, 1.0f, 2.0f};
    const char *cfg = "{\"model_type\":\"mlp\",\"dims\":[3,4,2],\"activation\":\"relu\"}";
    char path[4300];

    tensor_spec_t shape[] = {{"layers.0.weight", SL_F32, 2, {4, 2}, v},
                             {"layers.0.bias", SL_F32, 1, {4, 0}, v},
                             {"layers.1.weight", SL_F32, 2, {2, 4}, v},
                             {"layers.1.bias", SL_F32, 1, {2, 0}, v}};
    const char *d = write_model("wrong_shape", cfg, shape, 4);
    join(path, sizeof path, d, "model.safetensors");
    expect_load_error(be, d, 1, "'layers.0.weight'", "[4, 2]", "expected [4, 3]");
    expect_load_error(be, d, 1, "dims disagree with the tensors", path, NULL);

    tensor_spec_t missing[] = {{"layers.0.weight", SL_F32, 2, {4, 3}, v},
                               {"layers.0.bias", SL_F32, 1, {4, 0}, v},
                               {"layers.1.weight", SL_F32, 2, {2, 4}, v},
                               {"unrelated.tensor", SL_F32, 1, {2, 0}, v}};
    d = write_model("missing_tensor", cfg, missing, 4);
    expect_load_error(be, d, 1, "'layers.1.bias'", "missing", NULL);

    tensor_spec_t ints[] = {{"layers.0.weight", SL_F32, 2, {4, 3}, v},
                            {"layers.0.bias", SL_I32, 1, {4, 0}, v},
                            {"layers.1.weight", SL_F32, 2, {2, 4}, v},
                            {"layers.1.bias", SL_F32, 1, {2, 0}, v}};
    d = write_model("int_tensor", cfg, ints, 4);
    expect_load_error(be, d, 1, "'layers.0.bias'", "I32", NULL);

    /* input_mean without input_std; then a zero std */
    tensor_spec_t half_stats[] = {{"layers.0.weight", SL_F32, 2, {4, 3}, v},
                                  {"layers.0.bias", SL_F32, 1, {4, 0}, v},
                                  {"layers.1.weight", SL_F32, 2, {2, 4}, v},
                                  {"layers.1.bias", SL_F32, 1, {2, 0}, v},
                                  {"input_mean", SL_F32, 1, {3, 0}, v}};
    d = write_model("half_stats", cfg, half_stats, 5);
    expect_load_error(be, d, 1, "'input_mean'", "'input_std'", NULL);
    static const float zero_std[3] = {1.0f, 0.0f, 1.0f};
    tensor_spec_t bad_std[] = {
        {"layers.0.weight", SL_F32, 2, {4, 3}, v}, {"layers.0.bias", SL_F32, 1, {4, 0}, v},
        {"layers.1.weight", SL_F32, 2, {2, 4}, v}, {"layers.1.bias", SL_F32, 1, {2, 0}, v},
        {"input_mean", SL_F32, 1, {3, 0}, v},      {"input_std", SL_F32, 1, {3, 0}, zero_std}};
    d = write_model("zero_std", cfg, bad_std, 6);
    expect_load_error(be, d, 1, "'input_std'", "element 1", NULL);

    /* [3, 10, 2] under tp 4: layer 0 is column-parallel and 10 % 4 != 0; tp 2 is fine. */
    const char *cfg10 = "{\"model_type\":\"mlp\",\"dims\":[3,10,2],\"activation\":\"relu\"}";
    tensor_spec_t ten[] = {{"layers.0.weight", SL_F32, 2, {10, 3}, v},
                           {"layers.0.bias", SL_F32, 1, {10, 0}, v},
                           {"layers.1.weight", SL_F32, 2, {2, 10}, v},
                           {"layers.1.bias", SL_F32, 1, {2, 0}, v}};
    d = write_model("tp_indivisible", cfg10, ten, 4);
    expect_load_error(be, d, 4,
                      "layer 0 (column-parallel): output dim 10 is not divisible by --tp 4", NULL,
                      NULL);
    sl_error_t err = {{0}};
    for (int rank = 0; rank < 2; rank++) {
        sl_mlp_t *m = sl_mlp_load(d, be, 2, rank, SL_F32, &err);
        CHECKF(m != NULL, "tp 2 rank %d: %s", rank, err.msg);
        sl_mlp_free(m);
    }

    /* missing files: the message names the full path */
    d = write_model("no_weights", cfg, NULL, 0);
    join(path, sizeof path, d, "model.safetensors");
    unlink(path);
    expect_load_error(be, d, 1, path, NULL, NULL);
    join(path, sizeof path, d, "config.json");
    unlink(path);
    expect_load_error(be, d, 1, path, NULL, NULL);
    uint64_t fp;
    CHECK(sl_model_fingerprint(d, &fp, &err) == -1 && strstr(err.msg, path));

    /* a config error surfaces with the config path and key */
    d = write_model("bad_config", "{\"model_type\":\"mlp\",\"dims\":[3],\"activation\":\"relu\"}",
                    NULL, 0);
    join(path, sizeof path, d, "config.json");
    expect_load_error(be, d, 1, path, "'dims'", NULL);
}

/* ---- inspection --------------------------------------------------------------------------- */

/* Output of sl_inspect_model(dir, tp) into buf (empty on failure; err filled). */
static int inspect(const char *dir, int tp, char *buf, size_t cap, sl_error_t *err)
{
    FILE *f = tmpfile();
    int rc = sl_inspect_model(dir, tp, f, err);
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return rc;
}

static void test_inspect(void)
{
    static ref_model_t r;
    const int64_t dims[] = {3, 4, 2};
    ref_init(&r, 2, dims, SL_ACT_TANH, SL_ACT_SOFTMAX, 1);
    const char *dir = write_ref_model("inspect", &r, SL_F16);
    char out[8192];
    sl_error_t err = {{0}};

    int rc = inspect(dir, 2, out, sizeof out, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECKF(strstr(out, "column-parallel") && strstr(out, "row-parallel"), "%s", out);
    CHECKF(strstr(out, "dims [3, 4, 2]") && strstr(out, "tanh") && strstr(out, "softmax"), "%s",
           out);
    /* 3*4+4 + 4*2+2 = 26 parameters, + 2*3 statistics = 32 */
    CHECKF(strstr(out, "parameters   32 "), "%s", out);
    /* per rank of 2: 6+2 (column half) + 4+2 (row half, whole bias) + 6 statistics = 20;
     * as stored (F16) 40 bytes, as f32 80 bytes */
    CHECKF(strstr(out, "20 parameters") && strstr(out, " 40 B") && strstr(out, " 80 B"), "%s", out);
    rc = inspect(dir, 1, out, sizeof out, &err);
    CHECKF(rc == 0 && strstr(out, "whole") && strstr(out, "32 parameters"), "%s", out);

    rc = inspect(dir, 3, out, sizeof out, &err);
    CHECKF(rc == -1 && strstr(err.msg, "layer 0 (column-parallel)") && strstr(err.msg, "--tp 3"),
           "%s", err.msg);
    char missing[4300];
    join(missing, sizeof missing, g_root, "no-such-model");
    rc = inspect(missing, 1, out, sizeof out, &err);
    CHECKF(rc == -1 && strstr(err.msg, "no-such-model/config.json"), "%s", err.msg);
}

int main(void)
{
    test_config();
    test_split();

    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/test_mlp.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    sl_error_t err = {{0}};
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, 1, &err);
    CHECKF(be != NULL, "CPU backend: %s", err.msg);
    if (be) {
        test_forward(be);
        test_load_errors(be);
        sl_backend_free(be);
    }
    test_inspect();
    remove_models();
    return sl_test_finish("test_mlp_config");
}
