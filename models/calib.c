/*
 * calib.c — the loaded-tensor summaries, the recording of linear-layer input ranges, and the
 * calibration file (see calib.h for its format).
 *
 * Recording hangs on sl_linear's observer: each call finds its weight in the loaded-tensor list
 * (by data pointer, so views of a weight count as the weight) and adds the input's values to
 * that layer's maximum and to a histogram of |x| with 64 logarithmic bins per octave, so that a
 * percentile of millions of values costs a fixed few kilobytes per layer.
 */
#include "models/calib.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "models/formats/fingerprint.h"
#include "models/formats/safetensors.h"
#include "models/formats/weights.h"

/* ---- summaries ------------------------------------------------------------------------------ */

/* Whether the act_scales in the loaded-tensor list are sl_calib_apply_dynamic's zeros. */
static int calib_dynamic;

cJSON *sl_wlog_json(void)
{
    cJSON *o = cJSON_CreateObject();
    double total = 0, vbytes = 0;
    int vcount = 0;
    cJSON *layers = cJSON_CreateArray(), *mats = cJSON_CreateObject();
    for (int i = 0; i < sl_wlog_count(); i++) {
        const sl_wlog_entry_t *e = sl_wlog_get(i);
        const double b = (double)sl_tensor_bytes(e->t);
        total += b;
        if (e->t->ndim != 2) {
            vcount++;
            vbytes += b;
            continue;
        }
        const char *dn = sl_dtype_name(e->t->dtype);
        cJSON *c = cJSON_GetObjectItem(mats, dn);
        if (c)
            cJSON_SetNumberValue(c, c->valuedouble + 1);
        else
            cJSON_AddNumberToObject(mats, dn, 1);
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", e->name);
        cJSON_AddStringToObject(l, "dtype", dn);
        cJSON *shape = cJSON_AddArrayToObject(l, "shape");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->t->shape[0]));
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->t->shape[1]));
        cJSON_AddNumberToObject(l, "bytes", b);
        if (e->t->act_scales)
            cJSON_AddStringToObject(l, "activations",
                                    calib_dynamic ? "dynamic (int8, each row's 32-value blocks)"
                                                  : "static (calibrated, per 32 columns)");
        cJSON_AddItemToArray(layers, l);
    }
    cJSON_AddNumberToObject(o, "weight_bytes", total);
    cJSON_AddItemToObject(o, "matrices", mats);
    cJSON *v = cJSON_AddObjectToObject(o, "vectors");
    cJSON_AddNumberToObject(v, "count", vcount);
    cJSON_AddNumberToObject(v, "bytes", vbytes);
    cJSON_AddItemToObject(o, "layers", layers);
    return o;
}

void sl_wlog_print(FILE *out)
{
    uint64_t total = 0, vbytes = 0;
    int vcount = 0;
    fprintf(out, "%-60s  %-6s  %-14s  %12s\n", "matrix", "dtype", "shape", "bytes");
    for (int i = 0; i < sl_wlog_count(); i++) {
        const sl_wlog_entry_t *e = sl_wlog_get(i);
        const uint64_t b = sl_tensor_bytes(e->t);
        total += b;
        if (e->t->ndim != 2) {
            vcount++;
            vbytes += b;
            continue;
        }
        char shape[64];
        snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)e->t->shape[0],
                 (long long)e->t->shape[1]);
        fprintf(out, "%-60s  %-6s  %-14s  %12" PRIu64 "\n", e->name, sl_dtype_name(e->t->dtype),
                shape, b);
    }
    fprintf(out, "vectors (biases, norms, statistics): %d, f32, %" PRIu64 " bytes\n", vcount,
            vbytes);
    fprintf(out, "weight bytes (this rank): %" PRIu64 " (%.1f MiB)\n", total,
            (double)total / 1048576.0);
}

/* ---- recording ------------------------------------------------------------------------------- */

#define HIST_EMIN (-40) /* smallest octave: [2^-40, 2^-39) */
#define HIST_OCT 56     /* up to 2^16 */
#define HIST_SUB 64     /* bins per octave */
#define HIST_N (1 + HIST_OCT * HIST_SUB)

typedef struct {
    float absmax;
    int64_t seen, k;
    float *colmax; /* [k]: max |x[:, j]| of each input column */
    int64_t *hist; /* [HIST_N]; bin 0: zero and below 2^HIST_EMIN */
} layer_rec_t;

static layer_rec_t *recs;
static int n_recs;

static int hist_bin(float v)
{
    if (!(v >= ldexpf(1.0f, HIST_EMIN)))
        return 0;
    int e;
    float m = frexpf(v, &e); /* v = m 2^e, m in [0.5, 1) */
    int64_t k = e - 1 - HIST_EMIN, f = (int64_t)((2.0f * m - 1.0f) * HIST_SUB);
    int64_t b = 1 + k * HIST_SUB + (f < HIST_SUB ? f : HIST_SUB - 1);
    return b >= HIST_N ? HIST_N - 1 : (int)b;
}

/* the upper edge of bin b > 0 */
static double hist_upper(int b)
{
    int k = (b - 1) / HIST_SUB + HIST_EMIN, f = (b - 1) % HIST_SUB;
    return ldexp(1.0 + (double)(f + 1) / HIST_SUB, k);
}

static void observe(void *ctx, const sl_tensor_t *x, const sl_tensor_t *w)
{
    (void)ctx;
    if (sl_backend_kind(x->be) != SL_BACKEND_CPU)
        return;
    int i = 0;
    while (i < n_recs && sl_wlog_get(i)->t->data != w->data)
        i++;
    if (i == n_recs)
        return; /* a weight not in the list (none is expected) */
    layer_rec_t *r = &recs[i];
    const float *p = x->data;
    const int64_t rows = x->shape[0], k = x->shape[1];
    if (!r->colmax) {
        r->k = k;
        r->colmax = sl_xcalloc((size_t)k, sizeof *r->colmax);
    }
    if (k != r->k)
        return; /* not expected: a layer's input width is fixed */
    float mx = r->absmax;
    for (int64_t row = 0; row < rows; row++)
        for (int64_t j = 0; j < k; j++) {
            float a = fabsf(p[row * k + j]);
            mx = a > mx ? a : mx;
            r->colmax[j] = a > r->colmax[j] ? a : r->colmax[j];
            r->hist[hist_bin(a)]++;
        }
    r->absmax = mx;
    r->seen += rows * k;
}

void sl_calib_record_start(void)
{
    n_recs = sl_wlog_count();
    recs = sl_xcalloc((size_t)(n_recs ? n_recs : 1), sizeof *recs);
    for (int i = 0; i < n_recs; i++)
        recs[i].hist = sl_xcalloc(HIST_N, sizeof *recs[i].hist);
    sl_linear_set_observer(observe, NULL);
}

int sl_calib_record_finish(sl_calib_method_t method, double p, const char ***names, float **clip,
                           float ***cols, int64_t **ncols, int64_t *values_seen)
{
    sl_linear_set_observer(NULL, NULL);
    int n = 0, reached = 0;
    const size_t cap = (size_t)(n_recs ? n_recs : 1);
    *names = sl_xcalloc(cap, sizeof **names);
    *clip = sl_xcalloc(cap, sizeof **clip);
    *cols = sl_xcalloc(cap, sizeof **cols);
    *ncols = sl_xcalloc(cap, sizeof **ncols);
    *values_seen = 0;
    for (int i = 0; i < n_recs; i++) {
        layer_rec_t *r = &recs[i];
        if (r->seen == 0) {
            free(r->colmax);
            /* A matrix no calibration row reached (the pooler of an embedding model, and the
             * embedding tables, which sl_linear never sees): 0, quantized per block at run
             * time should a W8A8 run use it as a linear layer. */
            const sl_tensor_t *t = sl_wlog_get(i)->t;
            if (t->ndim == 2) {
                (*names)[n] = sl_wlog_get(i)->name;
                (*ncols)[n] = t->shape[1];
                (*cols)[n] = sl_xcalloc((size_t)t->shape[1], sizeof(float));
                (*clip)[n++] = 0.0f;
            }
            free(r->hist);
            continue;
        }
        float c = r->absmax;
        if (method == SL_CALIB_PERCENTILE) {
            const double target = ceil(p / 100.0 * (double)r->seen);
            double cum = 0;
            for (int b = 0; b < HIST_N; b++) {
                cum += (double)r->hist[b];
                if (cum >= target) {
                    double u = b == 0 ? ldexp(1.0, HIST_EMIN) : hist_upper(b);
                    c = u < (double)r->absmax ? (float)u : r->absmax;
                    break;
                }
            }
        }
        /* an input that was all zeros still needs a usable step */
        /* each column's range, cut at the layer's clip value */
        for (int64_t j = 0; j < r->k; j++)
            r->colmax[j] = r->colmax[j] < c ? r->colmax[j] : c;
        (*names)[n] = sl_wlog_get(i)->name;
        (*ncols)[n] = r->k;
        (*cols)[n] = r->colmax;
        (*clip)[n++] = c;
        reached++;
        *values_seen += r->seen;
        free(r->hist);
    }
    free(recs);
    recs = NULL;
    n_recs = 0;
    return reached ? n : 0;
}

/* ---- the file ---------------------------------------------------------------------------------
 */

int sl_calib_write(const char *path, uint64_t model_fp, const char *method, double p, int64_t rows,
                   int n, const char *const *names, float *const *cols, const int64_t *ncols,
                   sl_error_t *err)
{
    double off = 0;
    cJSON *h = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(h, "__metadata__");
    char buf[64];
    cJSON_AddStringToObject(meta, "format", "shardline-calibration");
    snprintf(buf, sizeof buf, "%016" PRIx64, model_fp);
    cJSON_AddStringToObject(meta, "model_fingerprint", buf);
    cJSON_AddStringToObject(meta, "method", method);
    snprintf(buf, sizeof buf, "%g", p);
    cJSON_AddStringToObject(meta, "percentile", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)rows);
    cJSON_AddStringToObject(meta, "rows", buf);
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(h, names[i]);
        cJSON_AddStringToObject(t, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ncols[i]));
        cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber(off));
        off += 4.0 * (double)ncols[i];
        cJSON_AddItemToArray(o, cJSON_CreateNumber(off));
    }
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t len = strlen(js), padded = (len + 7) / 8 * 8;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    int rc = 0;
    if (!f) {
        rc = sl_errorf(err, "%s: %s", tmp, strerror(errno));
    } else {
        unsigned char hl[8];
        for (int i = 0; i < 8; i++)
            hl[i] = (unsigned char)(((uint64_t)padded >> (8 * i)) & 0xff);
        int ok = fwrite(hl, 1, 8, f) == 8 && fwrite(js, 1, len, f) == len;
        for (size_t i = len; ok && i < padded; i++)
            ok = fputc(' ', f) != EOF;
        for (int i = 0; ok && i < n; i++) /* little-endian f32, as x86 and ARM hold them */
            ok = fwrite(cols[i], 4, (size_t)ncols[i], f) == (size_t)ncols[i];
        if (fclose(f) != 0 || !ok)
            rc = sl_errorf(err, "%s: write failed: %s", tmp, strerror(errno));
        else if (rename(tmp, path) != 0)
            rc = sl_errorf(err, "%s: %s", path, strerror(errno));
        if (rc != 0)
            unlink(tmp);
    }
    free(js);
    return rc;
}

int sl_calib_apply(const char *path, const char *model_dir, sl_error_t *err)
{
    calib_dynamic = 0;
    sl_safetensors_t st;
    memset(&st, 0, sizeof st);
    if (sl_st_open(&st, path, err) != 0)
        return sl_error_prefix(err, "--precision w8a8 needs the calibration file (written by "
                                    "`shardline calibrate`, or named by --calibration)");
    int rc = 0;
    uint64_t fp = 0;
    char want[32], got[64] = "";
    cJSON *h = cJSON_ParseWithLength((const char *)st.map + 8, st.header_len);
    const cJSON *meta = h ? cJSON_GetObjectItemCaseSensitive(h, "__metadata__") : NULL;
    const cJSON *mfp = meta ? cJSON_GetObjectItemCaseSensitive(meta, "model_fingerprint") : NULL;
    if (cJSON_IsString(mfp))
        snprintf(got, sizeof got, "%s", mfp->valuestring);
    if (sl_model_fingerprint(model_dir, &fp, err) != 0) {
        rc = -1;
        goto done;
    }
    snprintf(want, sizeof want, "%016" PRIx64, fp);
    if (strcmp(got, want) != 0) {
        rc = sl_errorf(err,
                       "%s: calibration for another model (its __metadata__ model_fingerprint "
                       "is '%s'; %s has %s): run `shardline calibrate --model %s` again",
                       path, got[0] ? got : "(none)", model_dir, want, model_dir);
        goto done;
    }
    for (int i = 0; i < sl_wlog_count() && rc == 0; i++) {
        sl_wlog_entry_t *e = sl_wlog_get(i);
        if (!sl_dtype_quantized(e->t->dtype))
            continue;
        const sl_st_tensor_t *t = sl_st_find(&st, e->name);
        const int64_t k = e->t->shape[1], nb = k / 32;
        if (!t) {
            rc = sl_errorf(err, "%s: tensor '%s' is missing (the input ranges of that layer)", path,
                           e->name);
            break;
        }
        if (t->dtype != SL_F32 || !t->mapped || t->ndim != 1 || t->shape[0] < e->c0 + k) {
            rc = sl_errorf(err,
                           "%s: tensor '%s' must be F32 [%lld] (one range per input column of "
                           "the layer)",
                           path, e->name, (long long)(e->c0 + k));
            break;
        }
        float *blk = sl_xcalloc((size_t)nb, sizeof *blk); /* the max of each 32 columns */
        for (int64_t j = 0; j < k && rc == 0; j++) {
            float v;
            memcpy(&v, (const char *)t->data + 4 * (size_t)(e->c0 + j), 4);
            if (!(v >= 0.0f) || !isfinite(v))
                rc = sl_errorf(err,
                               "%s: tensor '%s' element %lld is %g (ranges are finite and >= 0)",
                               path, e->name, (long long)(e->c0 + j), (double)v);
            blk[j / 32] = v > blk[j / 32] ? v : blk[j / 32];
        }
        if (rc == 0) {
            sl_tensor_t *s = sl_tensor_new1(e->t->be, SL_F32, nb);
            sl_copy_h2d(s, blk, (size_t)nb * sizeof *blk);
            sl_tensor_free(e->t->act_scales);
            e->t->act_scales = s;
        }
        free(blk);
    }
done:
    cJSON_Delete(h);
    sl_st_close(&st);
    return rc;
}

void sl_calib_apply_dynamic(void)
{
    calib_dynamic = 1;
    for (int i = 0; i < sl_wlog_count(); i++) {
        sl_wlog_entry_t *e = sl_wlog_get(i);
        if (!sl_dtype_quantized(e->t->dtype) || e->t->act_scales)
            continue;
        sl_tensor_t *s = sl_tensor_new1(e->t->be, SL_F32, e->t->shape[1] / 32);
        sl_tensor_zero(s);
        e->t->act_scales = s;
    }
}
