/*
 * safetensors.c — opens a .safetensors file read-only through mmap and validates its header
 * before anything else touches it (see safetensors.h for the format).
 *
 * The file is untrusted: every number in the header is checked with overflow-safe arithmetic
 * (header length against the file size, each shape's element count times the dtype size
 * against its byte range, each range against the data buffer), and the ranges are sorted to
 * prove that no two tensors share bytes. Every message names the file and, where one is at
 * fault, the tensor. The mapping stays valid after the descriptor is closed, so the struct
 * holds only the mapping.
 */
#include "models/formats/safetensors.h"

#include "common/sl_fs.h"
#include "kernels/elementwise.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A header larger than this is refused: real headers are kilobytes, and the length field of a
 * corrupt or hostile file must not make us parse gigabytes of JSON. */
#define SL_ST_MAX_HEADER (100u * 1000u * 1000u)

/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define SL_ST_MAX_JSON_INT 9007199254740992.0 /* 2^53 */

/* Every dtype of the safetensors format. The first five map to backend dtypes; the others
 * are valid (real checkpoints carry I64 position ids, BOOL masks...) and open fine, but a
 * loader that needs one of them refuses it by name. */
static const struct {
    const char *code;
    sl_dtype_t dtype;
    int mapped;
    unsigned size;
} st_dtypes[] = {
    {"F32", SL_F32, 1, 4}, {"F16", SL_F16, 1, 2},    {"BF16", SL_BF16, 1, 2},
    {"I32", SL_I32, 1, 4}, {"I8", SL_I8, 1, 1},      {"F64", SL_F32, 0, 8},
    {"I64", SL_I32, 0, 8}, {"U64", SL_I32, 0, 8},    {"U32", SL_I32, 0, 4},
    {"I16", SL_I32, 0, 2}, {"U16", SL_I32, 0, 2},    {"U8", SL_I8, 0, 1},
    {"BOOL", SL_I8, 0, 1}, {"F8_E4M3", SL_I8, 0, 1}, {"F8_E5M2", SL_I8, 0, 1},
};

/* A JSON number that is a non-negative integer exactly representable as uint64_t. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > SL_ST_MAX_JSON_INT || d != floor(d))
        return 0;
    *out = (uint64_t)d;
    return 1;
}

/* Parses one header entry into *t (name already set). Returns -1 with a message naming the
 * file and tensor. */
static int parse_entry(const sl_safetensors_t *st, const cJSON *entry, sl_st_tensor_t *t,
                       sl_error_t *err)
{
    const char *path = st->path, *name = t->name;
    if (!cJSON_IsObject(entry))
        return sl_errorf(err, "%s: tensor '%s': header entry is not a JSON object", path, name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!dtype)
        return sl_errorf(err, "%s: tensor '%s': missing 'dtype'", path, name);
    if (!cJSON_IsString(dtype))
        return sl_errorf(err, "%s: tensor '%s': 'dtype' is not a string", path, name);
    int found = 0;
    unsigned elem_size = 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (strcmp(dtype->valuestring, st_dtypes[i].code) == 0) {
            t->dtype = st_dtypes[i].dtype;
            t->mapped = st_dtypes[i].mapped;
            elem_size = st_dtypes[i].size;
            snprintf(t->code, sizeof t->code, "%s", st_dtypes[i].code);
            found = 1;
        }
    }
    if (!found)
        return sl_errorf(err, "%s: tensor '%s': unknown dtype '%.32s' (not a safetensors dtype)",
                         path, name, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!shape)
        return sl_errorf(err, "%s: tensor '%s': missing 'shape'", path, name);
    if (!cJSON_IsArray(shape))
        return sl_errorf(err, "%s: tensor '%s': 'shape' is not an array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > SL_ST_MAX_DIMS)
        return sl_errorf(err, "%s: tensor '%s': shape has %d dimensions (at most %d supported)",
                         path, name, ndim, SL_ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1; /* a 0-d tensor (scalar) has one element */
    int overflow = 0;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape)
    {
        uint64_t v;
        if (!json_uint(dim, &v)) {
            if (cJSON_IsNumber(dim) && dim->valuedouble < 0)
                return sl_errorf(err, "%s: tensor '%s': shape has a negative dimension (%g)", path,
                                 name, dim->valuedouble);
            return sl_errorf(err, "%s: tensor '%s': shape element %d is not a non-negative integer",
                             path, name, d);
        }
        t->shape[d++] = (int64_t)v;
        overflow |= __builtin_mul_overflow(numel, v, &numel);
    }

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!offs)
        return sl_errorf(err, "%s: tensor '%s': missing 'data_offsets'", path, name);
    uint64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(cJSON_GetArrayItem(offs, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &end))
        return sl_errorf(err,
                         "%s: tensor '%s': 'data_offsets' must be [begin, end], two non-negative "
                         "integers",
                         path, name);
    if (begin > end)
        return sl_errorf(err, "%s: tensor '%s': data_offsets [%llu, %llu] begin after end", path,
                         name, (unsigned long long)begin, (unsigned long long)end);
    if (end > st->buffer_len)
        return sl_errorf(err,
                         "%s: tensor '%s': data_offsets [%llu, %llu] end beyond the data buffer "
                         "(%zu bytes)",
                         path, name, (unsigned long long)begin, (unsigned long long)end,
                         st->buffer_len);

    uint64_t nbytes;
    overflow |= __builtin_mul_overflow(numel, (uint64_t)elem_size, &nbytes);
    if (overflow)
        return sl_errorf(err,
                         "%s: tensor '%s': shape/byte count mismatch: the shape's byte count "
                         "overflows 64 bits, data_offsets [%llu, %llu] hold %llu bytes",
                         path, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)(end - begin));
    if (nbytes != end - begin)
        return sl_errorf(err,
                         "%s: tensor '%s': shape/byte count mismatch: %llu elements of %s need "
                         "%llu bytes, data_offsets [%llu, %llu] hold %llu",
                         path, name, (unsigned long long)numel, dtype->valuestring,
                         (unsigned long long)nbytes, (unsigned long long)begin,
                         (unsigned long long)end, (unsigned long long)(end - begin));
    t->begin = begin;
    t->end = end;
    t->data = st->buffer + begin;
    return 0;
}

static int cmp_begin(const void *a, const void *b)
{
    const sl_st_tensor_t *x = *(const sl_st_tensor_t *const *)a;
    const sl_st_tensor_t *y = *(const sl_st_tensor_t *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const sl_st_tensor_t *const *)a)->name,
                  (*(const sl_st_tensor_t *const *)b)->name);
}

/* No two tensors may share a byte, and no name may appear twice. */
static int check_layout(const sl_safetensors_t *st, sl_error_t *err)
{
    int n = st->n_tensors, rc = 0;
    if (n < 2)
        return 0;
    const sl_st_tensor_t **order = sl_xmalloc((size_t)n * sizeof *order);
    for (int i = 0; i < n; i++)
        order[i] = &st->tensors[i];

    qsort(order, (size_t)n, sizeof *order, cmp_name);
    for (int i = 1; i < n && rc == 0; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            rc = sl_errorf(err, "%s: tensor '%s' appears twice in the header", st->path,
                           order[i]->name);

    /* Sorted by begin, a range overlaps some earlier one iff it starts before the furthest end
     * seen so far (ranges nested inside a long one are caught too). */
    qsort(order, (size_t)n, sizeof *order, cmp_begin);
    const sl_st_tensor_t *reach = order[0];
    for (int i = 1; i < n && rc == 0; i++) {
        const sl_st_tensor_t *t = order[i];
        if (t->begin < reach->end && t->end > t->begin)
            rc = sl_errorf(err,
                           "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' "
                           "[%llu, %llu]",
                           st->path, t->name, (unsigned long long)t->begin,
                           (unsigned long long)t->end, reach->name,
                           (unsigned long long)reach->begin, (unsigned long long)reach->end);
        if (t->end > reach->end)
            reach = t;
    }
    free(order);
    return rc;
}

static int parse_header(sl_safetensors_t *st, sl_error_t *err)
{
    const char *json = (const char *)st->map + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, st->header_len, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - json) : 0;
        return sl_errorf(err, "%s: the header is not valid JSON (error near byte %zu of %zu)",
                         st->path, at, st->header_len);
    }
    /* The writer may pad the header with spaces (to align the data); anything else after the
     * JSON value means a corrupt header. */
    for (const char *p = end; p < json + st->header_len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return sl_errorf(err,
                             "%s: the header is not valid JSON: unexpected bytes after the "
                             "top-level object (byte %zu of %zu)",
                             st->path, (size_t)(p - json), st->header_len);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sl_errorf(err, "%s: the header is not a JSON object", st->path);
    }

    int n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) { n += strcmp(item->string, "__metadata__") != 0; }
    st->tensors = sl_xcalloc((size_t)(n ? n : 1), sizeof *st->tensors);
    int rc = 0;
    cJSON_ArrayForEach(item, root)
    {
        if (strcmp(item->string, "__metadata__") == 0)
            continue;
        sl_st_tensor_t *t = &st->tensors[st->n_tensors++];
        t->name = sl_xstrdup(item->string);
        if ((rc = parse_entry(st, item, t, err)) != 0)
            break;
    }
    cJSON_Delete(root);
    if (rc == 0)
        rc = check_layout(st, err);
    return rc;
}

int sl_st_open(sl_safetensors_t *st, const char *path, sl_error_t *err)
{
    memset(st, 0, sizeof *st);
    st->fd = -1;
    st->path = sl_xstrdup(path);

    void *map;
    if (sl_map_file(path, 8, "header length", &map, &st->size, err) != 0)
        goto fail;
    st->map = map;

    const unsigned char *p = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) /* little-endian, whatever the host */
        n = (n << 8) | p[i];
    if (n > SL_ST_MAX_HEADER) {
        sl_errorf(err, "%s: header length %llu is absurdly large (more than %u bytes)", path,
                  (unsigned long long)n, SL_ST_MAX_HEADER);
        goto fail;
    }
    if (n > st->size - 8) {
        sl_errorf(err, "%s: header length %llu goes beyond the file (%zu bytes)", path,
                  (unsigned long long)n, st->size);
        goto fail;
    }
    st->header_len = (size_t)n;
    st->buffer = p + 8 + st->header_len;
    st->buffer_len = st->size - 8 - st->header_len;
    if (parse_header(st, err) != 0)
        goto fail;
    return 0;

fail:
    sl_st_close(st);
    return -1;
}

void sl_st_close(sl_safetensors_t *st)
{
    if (!st)
        return;
    sl_unmap_file(st->map, st->size);
    for (int i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    free(st->path);
    memset(st, 0, sizeof *st);
    st->fd = -1;
}

const sl_st_tensor_t *sl_st_find(const sl_safetensors_t *st, const char *name)
{
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return &st->tensors[i];
    return NULL;
}

int64_t sl_st_numel(const sl_st_tensor_t *t)
{
    /* Cannot overflow: sl_st_open checked numel * dtype size against the buffer. */
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

const char *sl_st_code(sl_dtype_t dt)
{
    switch (dt) {
    case SL_F32: return "F32";
    case SL_F16: return "F16";
    case SL_BF16: return "BF16";
    case SL_I32: return "I32";
    case SL_I8: return "I8";
    }
    return "?";
}

int sl_st_is_float(sl_dtype_t dt) { return dt == SL_F32 || dt == SL_F16 || dt == SL_BF16; }

const char *sl_st_fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}

float sl_st_raw_f32(const unsigned char *p, sl_dtype_t dt, int64_t i)
{
    if (dt == SL_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return dt == SL_F16 ? sl_f16_to_f32(h) : sl_bf16_to_f32(h);
}

void *sl_st_host_block(const sl_st_tensor_t *t, int64_t ld, int64_t r0, int64_t nr, int64_t c0,
                       int64_t nc, sl_dtype_t dt)
{
    size_t es = dt == SL_F32 ? 4 : 2;
    unsigned char *buf = sl_xmalloc((size_t)(nr * nc) * es);
    const unsigned char *src = t->data;
    if (dt == t->dtype) { /* same format: copy row pieces, bits unchanged */
        for (int64_t r = 0; r < nr; r++)
            memcpy(buf + (size_t)(r * nc) * es, src + (size_t)((r0 + r) * ld + c0) * es,
                   (size_t)nc * es);
        return buf;
    }
    for (int64_t r = 0; r < nr; r++) {
        for (int64_t c = 0; c < nc; c++) {
            float v = sl_st_raw_f32(src, t->dtype, (r0 + r) * ld + c0 + c);
            size_t o = (size_t)(r * nc + c);
            if (dt == SL_F32) {
                memcpy(buf + 4 * o, &v, 4);
            } else {
                uint16_t h = dt == SL_F16 ? sl_f32_to_f16(v) : sl_f32_to_bf16(v);
                memcpy(buf + 2 * o, &h, 2);
            }
        }
    }
    return buf;
}
