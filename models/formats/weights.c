/*
 * weights.c — tensors of a Hugging Face safetensors directory (single file or sharded index) or
 * of a GGUF file, behind one lookup / shape check / f32 block read (see weights.h).
 */
#include "models/formats/weights.h"

#include "kernels/cpu/cpu_quant.h"
#include "kernels/quant.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sl_fs.h"
#include "common/sl_json.h"
#include "kernels/elementwise.h"
#include "models/formats/safetensors.h"

#define SL_WEIGHTS_MAX_JSON (64u << 20) /* an index larger than this is refused */
#define SL_WEIGHTS_MAX_SHARDS 4096

struct sl_weights {
    sl_safetensors_t *files; /* safetensors: one or the index's shards */
    int n_files;
    sl_gguf_t *gguf; /* or a GGUF file */
    char *where;
};

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The distinct shard file names of index.json's weight_map, in first-seen order. */
static int open_index(sl_weights_t *w, const char *dir, sl_error_t *err)
{
    cJSON *root = sl_json_read(w->where, SL_WEIGHTS_MAX_JSON, 0, err);
    if (!root)
        return -1;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    int rc = 0;
    if (!cJSON_IsObject(map) || cJSON_GetArraySize(map) < 1) {
        rc = sl_errorf(err, "%s: key 'weight_map': expected a non-empty object", w->where);
    } else {
        const char **names = sl_xcalloc((size_t)cJSON_GetArraySize(map), sizeof *names);
        int n = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, map)
        {
            if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/')) {
                rc = sl_errorf(err,
                               "%s: key 'weight_map': tensor '%.96s' does not map to a file name "
                               "in this directory",
                               w->where, e->string);
                break;
            }
            int seen = 0;
            for (int i = 0; i < n && !seen; i++)
                seen = strcmp(names[i], e->valuestring) == 0;
            if (!seen)
                names[n++] = e->valuestring;
        }
        if (rc == 0 && n > SL_WEIGHTS_MAX_SHARDS)
            rc = sl_errorf(err, "%s: %d shards is too many", w->where, n);
        if (rc == 0) {
            w->files = sl_xcalloc((size_t)n, sizeof *w->files);
            for (int i = 0; i < n && rc == 0; i++) {
                char *p = sl_path_join(dir, names[i]);
                w->n_files = i + 1;
                rc = sl_st_open(&w->files[i], p, err);
                free(p);
            }
        }
        free(names);
    }
    cJSON_Delete(root);
    return rc;
}

sl_weights_t *sl_weights_open(const char *path, sl_error_t *err)
{
    sl_weights_t *w = sl_xcalloc(1, sizeof *w);
    int rc = 0;
    if (is_file(path)) {
        w->where = sl_xstrdup(path);
        w->gguf = sl_gguf_open(path, err);
        rc = w->gguf ? 0 : -1;
    } else if (is_dir(path)) {
        char *single = sl_path_join(path, "model.safetensors");
        char *index = sl_path_join(path, "model.safetensors.index.json");
        if (is_file(single)) {
            w->where = single;
            single = NULL;
            w->files = sl_xcalloc(1, sizeof *w->files);
            w->n_files = 1;
            rc = sl_st_open(&w->files[0], w->where, err);
        } else if (is_file(index)) {
            w->where = index;
            index = NULL;
            rc = open_index(w, path, err);
        } else {
            char *bin = sl_path_join(path, "pytorch_model.bin");
            rc = sl_errorf(err, "%s: no model.safetensors or model.safetensors.index.json%s", path,
                           is_file(bin) ? " (pytorch_model.bin is not read: convert it to "
                                          "safetensors)"
                                        : "");
            free(bin);
        }
        free(single);
        free(index);
    } else {
        rc = sl_errorf(err, "%s: no such model file or directory", path);
    }
    if (rc != 0) {
        sl_weights_close(w);
        return NULL;
    }
    return w;
}

void sl_weights_close(sl_weights_t *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n_files; i++)
        sl_st_close(&w->files[i]);
    free(w->files);
    sl_gguf_close(w->gguf);
    free(w->where);
    free(w);
}

const char *sl_weights_where(const sl_weights_t *w) { return w->where; }
const sl_gguf_t *sl_weights_gguf(const sl_weights_t *w) { return w->gguf; }

static const sl_st_tensor_t *st_find(const sl_weights_t *w, const char *name)
{
    for (int i = 0; i < w->n_files; i++) {
        const sl_st_tensor_t *t = sl_st_find(&w->files[i], name);
        if (t)
            return t;
    }
    return NULL;
}

int sl_weights_has(const sl_weights_t *w, const char *name)
{
    return w->gguf ? sl_gguf_tensor_find(w->gguf, name) != NULL : st_find(w, name) != NULL;
}

/* Row-major shape of a tensor: safetensors as stored, GGUF reversed. */
static int tensor_shape(const sl_weights_t *w, const char *name, int *ndim, int64_t *shape,
                        const char **type)
{
    if (w->gguf) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_find(w->gguf, name);
        if (!t)
            return -1;
        *ndim = t->ndim;
        for (int i = 0; i < t->ndim; i++)
            shape[i] = t->ne[t->ndim - 1 - i];
        *type = t->supported ? NULL : sl_ggml_type_name(t->type);
        return 0;
    }
    const sl_st_tensor_t *t = st_find(w, name);
    if (!t)
        return -1;
    *ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++)
        shape[i] = t->shape[i];
    *type = t->mapped && sl_st_is_float(t->dtype) ? NULL : t->code;
    return 0;
}

int sl_weights_shape(const sl_weights_t *w, const char *name, int *ndim, int64_t *shape,
                     int *readable)
{
    const char *bad = NULL;
    int rc = tensor_shape(w, name, ndim, shape, &bad);
    if (readable)
        *readable = bad == NULL;
    return rc;
}

int sl_weights_check(const sl_weights_t *w, const char *name, int64_t d0, int64_t d1,
                     sl_error_t *err)
{
    int ndim = 0;
    int64_t shape[SL_ST_MAX_DIMS > SL_GGUF_MAX_DIMS ? SL_ST_MAX_DIMS : SL_GGUF_MAX_DIMS];
    int64_t want[2] = {d0, d1};
    int want_ndim = d1 ? 2 : 1;
    const char *bad_type = NULL;
    char ws[64], hs[160];
    if (tensor_shape(w, name, &ndim, shape, &bad_type) != 0)
        return sl_errorf(err, "%s: tensor '%s' %s is missing", w->where, name,
                         sl_st_fmt_shape(ws, sizeof ws, want_ndim, want));
    if (bad_type)
        return sl_errorf(err, "%s: tensor '%s' has type %s; expected %s", w->where, name, bad_type,
                         w->gguf ? SL_GGUF_TYPES : "F32, F16 or BF16");
    int same = ndim == want_ndim;
    for (int i = 0; same && i < ndim; i++)
        same = shape[i] == want[i];
    if (!same)
        return sl_errorf(err, "%s: tensor '%s' has shape %s; the config says %s", w->where, name,
                         sl_st_fmt_shape(hs, sizeof hs, ndim, shape),
                         sl_st_fmt_shape(ws, sizeof ws, want_ndim, want));
    return 0;
}

/* GGUF: whole rows dequantised to f32, then the columns [c0, c0 + nc) cut out. */
static float *gguf_block(const sl_weights_t *w, const char *name, int64_t r0, int64_t nr,
                         int64_t c0, int64_t nc, sl_error_t *err)
{
    const sl_gguf_tensor_t *t = sl_gguf_tensor_find(w->gguf, name);
    if (!t) {
        sl_errorf(err, "%s: tensor '%s' is missing", w->where, name);
        return NULL;
    }
    int64_t ld = t->ne[0];
    float *rows = sl_xmalloc((size_t)(nr * ld) * sizeof *rows);
    if (sl_gguf_dequant_rows(t, r0, nr, rows, err) != 0) {
        free(rows);
        return NULL;
    }
    if (c0 == 0 && nc == ld)
        return rows;
    float *out = sl_xmalloc((size_t)(nr * nc) * sizeof *out);
    for (int64_t r = 0; r < nr; r++)
        memcpy(out + r * nc, rows + r * ld + c0, (size_t)nc * sizeof *out);
    free(rows);
    return out;
}

/* Index of the first element of p[0..n) (dtype dt) whose exponent bits are all ones (NaN or
 * Inf), or -1. Blocks of 4096 are OR-reduced first, a loop without branches that the compiler
 * vectorises; only a block that holds one is searched element by element. */
static int64_t first_nonfinite(const void *p, int64_t n, sl_dtype_t dt)
{
    const int64_t B = 4096;
    for (int64_t b0 = 0; b0 < n; b0 += B) {
        int64_t b1 = n - b0 < B ? n : b0 + B;
        unsigned bad = 0;
        if (dt == SL_F32) {
            const uint32_t *u = (const uint32_t *)p;
            for (int64_t i = b0; i < b1; i++)
                bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
        } else {
            const uint16_t *h = (const uint16_t *)p, m = dt == SL_F16 ? 0x7c00u : 0x7f80u;
            for (int64_t i = b0; i < b1; i++)
                bad |= (h[i] & m) == m;
        }
        if (!bad)
            continue;
        for (int64_t i = b0; i < b1; i++) {
            uint32_t v = dt == SL_F32 ? ((const uint32_t *)p)[i] : ((const uint16_t *)p)[i];
            uint32_t m = dt == SL_F32 ? 0x7f800000u : dt == SL_F16 ? 0x7c00u : 0x7f80u;
            if ((v & m) == m)
                return i;
        }
    }
    return -1;
}

int sl_weights_check_finite(const char *where, const char *name, const void *data, sl_dtype_t dt,
                            int64_t r0, int64_t nr, int64_t c0, int64_t nc, sl_error_t *err)
{
    int64_t i = first_nonfinite(data, nr * nc, dt);
    if (i < 0)
        return 0;
    float v = dt == SL_F32   ? ((const float *)data)[i]
              : dt == SL_F16 ? sl_f16_to_f32(((const uint16_t *)data)[i])
                             : sl_bf16_to_f32(((const uint16_t *)data)[i]);
    return sl_errorf(err,
                     "%s: tensor '%s' holds %s at element [%lld, %lld]%s (weights must be finite)",
                     where, name,
                     v != v  ? "NaN"
                     : v > 0 ? "+Inf"
                             : "-Inf",
                     (long long)(r0 + i / nc), (long long)(c0 + i % nc),
                     dt == SL_F32 ? "" : " after conversion to 16 bits (too large for it?)");
}

float *sl_weights_block(const sl_weights_t *w, const char *name, int64_t r0, int64_t nr, int64_t c0,
                        int64_t nc, sl_error_t *err)
{
    float *h = NULL;
    if (!w->gguf) {
        const sl_st_tensor_t *t = st_find(w, name);
        if (!t) {
            sl_errorf(err, "%s: tensor '%s' is missing", w->where, name);
            return NULL;
        }
        int64_t ld = t->shape[t->ndim - 1];
        h = sl_st_host_block(t, ld, r0, nr, c0, nc, SL_F32);
    } else {
        h = gguf_block(w, name, r0, nr, c0, nc, err);
    }
    /* Every value a model takes from a file passes here (or through mlp.c's blocks, checked
     * the same way): a NaN weight would otherwise give every row the same confident answer. */
    if (h && sl_weights_check_finite(w->where, name, h, SL_F32, r0, nr, c0, nc, err) != 0) {
        free(h);
        return NULL;
    }
    return h;
}

int sl_weights_load_args(const char *path, sl_dtype_t dtype, int tp_size, int tp_rank,
                         sl_error_t *err)
{
    if (!sl_st_is_float(dtype) && dtype != SL_WEIGHTS_AS_STORED && dtype != SL_WEIGHTS_INT8)
        return sl_errorf(err, "%s: weights can be loaded as f32, f16 or bf16, not %s", path,
                         sl_st_code(dtype));
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size)
        return sl_errorf(err, "%s: bad tensor-parallel position (rank %d of %d)", path, tp_rank,
                         tp_size);
    return 0;
}

sl_tensor_t *sl_upload_f32(sl_backend_t *be, const float *h, int64_t nr, int64_t nc, sl_dtype_t dt)
{
    sl_tensor_t *d = nr ? sl_tensor_new2(be, dt, nr, nc) : sl_tensor_new1(be, dt, nc);
    if (dt == SL_F32) {
        sl_copy_h2d(d, h, sl_tensor_bytes(d));
        return d;
    }
    sl_tensor_t *f = nr ? sl_tensor_new2(be, SL_F32, nr, nc) : sl_tensor_new1(be, SL_F32, nc);
    sl_copy_h2d(f, h, sl_tensor_bytes(f));
    sl_cast(f, d);
    sl_backend_sync(be);
    sl_tensor_free(f);
    return d;
}

sl_tensor_t *sl_upload_int8(sl_backend_t *be, const float *h, int64_t nr, int64_t nc)
{
    if (nr == 0 || nc % SL_QBLOCK != 0)
        return sl_upload_f32(be, h, nr, nc, SL_F32);
    sl_tensor_t *d = sl_tensor_new2(be, SL_Q8_0, nr, nc);
    uint8_t *q = sl_xmalloc(sl_tensor_bytes(d));
    sl_q8_0_quantize_rows(h, nr, nc, q);
    sl_copy_h2d(d, q, sl_tensor_bytes(d));
    free(q);
    sl_tensor_pack(d);
    return d;
}

static sl_wlog_entry_t *wlog;
static int wlog_n, wlog_cap;

void sl_wlog_reset(void)
{
    free(wlog);
    wlog = NULL;
    wlog_n = wlog_cap = 0;
}

void sl_wlog_add(const char *name, sl_tensor_t *t) { sl_wlog_add_slice(name, t, 0); }

void sl_wlog_add_slice(const char *name, sl_tensor_t *t, int64_t c0)
{
    if (!t)
        return;
    if (wlog_n == wlog_cap) {
        wlog_cap = wlog_cap ? 2 * wlog_cap : 64;
        wlog = sl_xrealloc(wlog, (size_t)wlog_cap * sizeof *wlog);
    }
    snprintf(wlog[wlog_n].name, sizeof wlog[wlog_n].name, "%s", name);
    wlog[wlog_n].c0 = c0;
    wlog[wlog_n++].t = t;
}

int sl_wlog_count(void) { return wlog_n; }

sl_wlog_entry_t *sl_wlog_get(int i) { return i >= 0 && i < wlog_n ? &wlog[i] : NULL; }

sl_dtype_t sl_weights_stored_dtype(const sl_weights_t *w, const char *name)
{
    const sl_gguf_tensor_t *t = w->gguf ? sl_gguf_tensor_find(w->gguf, name) : NULL;
    if (!t || t->ndim != 2)
        return SL_F32;
    return t->type == SL_GGML_Q8_0   ? SL_Q8_0
           : t->type == SL_GGML_Q4_0 ? SL_Q4_0
           : t->type == SL_GGML_Q4_1 ? SL_Q4_1
           : t->type == SL_GGML_Q4_K ? SL_Q4_K
           : t->type == SL_GGML_Q6_K ? SL_Q6_K
           : t->type == SL_GGML_Q5_0 ? SL_Q5_0
           : t->type == SL_GGML_Q5_1 ? SL_Q5_1
           : t->type == SL_GGML_Q5_K ? SL_Q5_K
                                     : SL_F32;
}

int sl_weights_requantized(const sl_weights_t *w, const char *name)
{
    const sl_gguf_tensor_t *t = w->gguf ? sl_gguf_tensor_find(w->gguf, name) : NULL;
    const sl_dtype_t st = sl_weights_stored_dtype(w, name);
    return t && t->ndim == 2 && t->type != SL_GGML_F32 && t->type != SL_GGML_F16 &&
           t->type != SL_GGML_BF16 && (st == SL_F32 || sl_dtype_packed_only(st));
}

int sl_weights_keep(const sl_weights_t *w, sl_backend_t *be, const char *name, int64_t nr,
                    int64_t c0, int64_t nc)
{
    const sl_dtype_t st = sl_weights_stored_dtype(w, name);
    if (!sl_dtype_packed_only(st))
        return SL_KEEP_BLOCKS;
    const int64_t blk = sl_dtype_block(st);
    const int fits = c0 % blk == 0 && nc % blk == 0 && sl_backend_packs(be, st, nr, nc);
    return SL_KEEP_BLOCKS | (fits ? SL_KEEP_PACKED : 0);
}

void *sl_weights_read(const sl_weights_t *w, const char *name, int64_t r0, int64_t nr, int64_t c0,
                      int64_t nc, int keep, sl_dtype_t *dt, sl_error_t *err)
{
    *dt = keep & SL_KEEP_BLOCKS ? sl_weights_stored_dtype(w, name) : SL_F32;
    if (sl_dtype_packed_only(*dt) && !(keep & SL_KEEP_PACKED))
        *dt = SL_F32;
    if (*dt == SL_F32)
        return sl_weights_block(w, name, r0, nr, c0, nc, err);
    const sl_gguf_tensor_t *t = sl_gguf_tensor_find(w->gguf, name);
    const int64_t blk = sl_dtype_block(*dt), cols = t->ne[0];
    if (c0 % blk != 0 || (c0 + nc) % blk != 0) {
        sl_errorf(err,
                  "%s: tensor '%s' (%s) would be split at column %lld, inside a block of %lld "
                  "values: choose a --tp whose slices are whole blocks, or --precision f32",
                  w->where, name, sl_dtype_name(*dt), (long long)(c0 % blk ? c0 : c0 + nc),
                  (long long)blk);
        return NULL;
    }
    if (r0 < 0 || nr < 0 || r0 + nr > sl_gguf_rows(t) || c0 < 0 || c0 + nc > cols) {
        sl_errorf(err, "%s: tensor '%s': rows %lld..%lld, columns %lld..%lld out of range",
                  w->where, name, (long long)r0, (long long)(r0 + nr), (long long)c0,
                  (long long)(c0 + nc));
        return NULL;
    }
    const size_t row = sl_dtype_bytes(*dt, cols), part = sl_dtype_bytes(*dt, nc);
    const size_t skip = sl_dtype_bytes(*dt, c0);
    unsigned char *out = sl_xmalloc(part * (size_t)(nr ? nr : 1));
    for (int64_t r = 0; r < nr; r++)
        memcpy(out + (size_t)r * part, t->data + (size_t)(r0 + r) * row + skip, part);
    /* Kept quantized, the values are never dequantised here: their scales (and Q4_1's
     * minimums) are what can be NaN or Inf. */
    if (sl_weights_check_qscales(w->where, name, out, *dt, r0, nr, c0, nc, err) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

int sl_weights_check_qscales(const char *where, const char *name, const void *blocks, sl_dtype_t dt,
                             int64_t r0, int64_t nr, int64_t c0, int64_t nc, sl_error_t *err)
{
    const int64_t blk = sl_dtype_block(dt), per_row = nc / blk;
    const size_t bytes = sl_dtype_size(dt);
    /* the f16 scales of a block: d (and Q4_1's or Q5_1's m, Q4_K's or Q5_K's dmin) lead it; Q6_K's
     * d ends it */
    const int halves = dt == SL_Q4_1 || dt == SL_Q4_K || dt == SL_Q5_1 || dt == SL_Q5_K ? 2 : 1;
    const size_t at = dt == SL_Q6_K ? 208 : 0;
    const unsigned char *p = blocks;
    for (int64_t b = 0; b < nr * per_row; b++) {
        for (int h = 0; h < halves; h++) {
            uint16_t v;
            memcpy(&v, p + (size_t)b * bytes + at + 2 * (size_t)h, sizeof v);
            if ((v & 0x7c00u) == 0x7c00u)
                return sl_errorf(err,
                                 "%s: tensor '%s' (%s) holds a %s %s in the block of row %lld, "
                                 "columns %lld..%lld (weights must be finite)",
                                 where, name, sl_dtype_name(dt), (v & 0x3ffu) ? "NaN" : "Inf",
                                 h ? "minimum" : "scale", (long long)(r0 + b / per_row),
                                 (long long)(c0 + (b % per_row) * blk),
                                 (long long)(c0 + (b % per_row + 1) * blk));
        }
    }
    return 0;
}

sl_tensor_t *sl_weights_upload(const sl_weights_t *w, sl_backend_t *be, const char *name,
                               int64_t r0, int64_t nr, int64_t c0, int64_t nc, int vector,
                               sl_dtype_t dt, sl_weights_rows_fn rows_fn, void *ctx,
                               sl_error_t *err)
{
    const int keep =
        dt == SL_WEIGHTS_AS_STORED && !vector ? sl_weights_keep(w, be, name, nr, c0, nc) : 0;
    const int int8 =
        (dt == SL_WEIGHTS_INT8 && !vector) || (keep && sl_weights_requantized(w, name));
    sl_dtype_t got = SL_F32;
    void *h = vector ? sl_weights_block(w, name, 0, 1, c0, nc, err)
                     : sl_weights_read(w, name, r0, nr, c0, nc, keep, &got, err);
    if (!h)
        return NULL;
    int64_t rows = vector ? nc : nr, cols = vector ? 1 : nc;
    if (rows_fn)
        rows_fn(h, rows, sl_dtype_bytes(got, cols), ctx);
    sl_tensor_t *d;
    if (got != SL_F32) {
        d = sl_tensor_new2(be, got, nr, nc);
        sl_copy_h2d(d, h, sl_tensor_bytes(d));
        if (sl_dtype_packed_only(got)) /* held only packed (sl_weights_keep checked it packs) */
            sl_tensor_pack(d);
    } else if (int8) {
        d = sl_upload_int8(be, h, nr, nc);
    } else {
        d = sl_upload_f32(be, h, vector ? 0 : nr, nc,
                          dt == SL_WEIGHTS_AS_STORED || dt == SL_WEIGHTS_INT8 ? SL_F32 : dt);
    }
    free(h);
    sl_wlog_add_slice(name, d, vector ? 0 : c0);
    return d;
}
