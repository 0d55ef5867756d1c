/*
 * gguf.c — opens a GGUF file read-only through mmap and validates all of it before anything
 * else touches it (see gguf.h for the format).
 *
 * The file is untrusted. Every count and length is checked against the bytes that remain
 * before it is used (so a corrupt count cannot make us loop or allocate for billions of
 * entries), arithmetic on sizes is overflow-checked, nested arrays are bounded in depth, and
 * each tensor's byte range is proven to lie inside the data section. One pass over the header
 * does all of this; it also records where each element of a string array starts, so that
 * element access is O(1) afterwards (a tokenizer vocabulary is tens of thousands of strings).
 * Every message names the file and the key or tensor at fault.
 *
 * Dequantisation follows ggml's reference C code (dequantize_row_q8_0 and friends), which
 * gguf-py's gguf.quants reproduces in numpy, and is bit-identical to both: a scale is an f16
 * (11 significant bits) and a quant at most 8 bits, so their product is exact in float32 and
 * the only rounding is Q4_1's add of the minimum, the same whether or not the compiler fuses
 * the multiply-add.
 */
#include "models/formats/gguf.h"

#include "common/sl_fs.h"
#include "kernels/backend.h"
#include "kernels/quant.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_HEADER_BYTES 24 /* magic, version, tensor count, metadata count */
#define GGUF_DEFAULT_ALIGNMENT 32
/* Arrays of arrays are legal; real files never nest, and a hostile one must not recurse deep
 * enough to exhaust the stack. */
#define GGUF_MAX_DEPTH 8
/* Keys and tensor names are short identifiers; a longer one is a corrupt length field. */
#define GGUF_MAX_NAME (64u * 1024u)
/* The smallest metadata entry (empty key, u8 value) and tensor info (empty name, 0 dims): a
 * count larger than the remaining bytes divided by these is corrupt. */
#define GGUF_MIN_KV_BYTES 13u
#define GGUF_MIN_TENSOR_BYTES 24u

/* A metadata entry: the public view first, so a pointer to it is a pointer to the view and the
 * getters that receive only the view can find the string index. */
typedef struct {
    sl_gguf_kv_t pub;
    size_t *str_off; /* string arrays: offset of element i (its length field) from pub.raw */
} gguf_kv_t;

struct sl_gguf {
    char *path;
    unsigned char *map;
    size_t size;
    uint32_t version;
    uint64_t alignment;
    size_t data_start; /* file offset of the data section */
    int n_kv;
    gguf_kv_t *kv;
    int *kv_sorted; /* indices sorted by key, for sl_gguf_find */
    int n_tensors;
    sl_gguf_tensor_t *tensors;
    int *t_sorted; /* indices sorted by name, for sl_gguf_tensor_find */
};

/* ---- types ------------------------------------------------------------------------------- */

/* Block size and bytes per block of every ggml type (ggml's type traits), so that a tensor
 * of a type shardline does not dequantise still has its byte range checked. */
static const struct {
    int type;
    const char *name;
    unsigned block, bytes;
} ggml_types[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},      {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
};

static int type_index(int type)
{
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].type == type)
            return (int)i;
    return -1;
}

const char *sl_ggml_type_name(int type)
{
    int i = type_index(type);
    if (i >= 0)
        return ggml_types[i].name;
    /* Per thread, so concurrent callers do not overwrite each other's message. */
    static _Thread_local char buf[24];
    snprintf(buf, sizeof buf, "type %d", type);
    return buf;
}

static int type_supported(int type)
{
    return type == SL_GGML_F32 || type == SL_GGML_F16 || type == SL_GGML_BF16 ||
           type == SL_GGML_Q8_0 || type == SL_GGML_Q4_0 || type == SL_GGML_Q4_1 ||
           type == SL_GGML_Q5_0 || type == SL_GGML_Q5_1 ||
           (type >= SL_GGML_Q2_K && type <= SL_GGML_Q6_K);
}

/* Size of a fixed-size metadata value; 0 for strings and arrays. */
static size_t vsize(uint32_t t)
{
    static const unsigned char sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sizes ? sizes[t] : 0;
}

static const char *vname(uint32_t t)
{
    static const char *names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static int is_int_type(uint32_t t)
{
    return t <= SL_GGUF_I32 || t == SL_GGUF_U64 || t == SL_GGUF_I64;
}

static int is_num_type(uint32_t t)
{
    return is_int_type(t) || t == SL_GGUF_F32 || t == SL_GGUF_F64;
}

/* ---- little-endian reads (whatever the host) --------------------------------------------- */

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (unsigned)p[1] << 8); }

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* ---- header parsing ---------------------------------------------------------------------- */

/* A read position in the map, with what the messages need to name the culprit. */
typedef struct {
    const sl_gguf_t *g;
    size_t pos;
    char what[128]; /* "key 'x'" or "tensor 'x'" or "metadata entry 3" */
    int64_t elem;   /* element of a top-level array being read, else -1 */
    char buf[192];
} cursor_t;

static size_t left(const cursor_t *c) { return c->g->size - c->pos; }

/* What is being read, for a message: "key 'x'" or "key 'x', element 7". */
static const char *where(cursor_t *c)
{
    if (c->elem < 0)
        return c->what;
    snprintf(c->buf, sizeof c->buf, "%s, element %lld", c->what, (long long)c->elem);
    return c->buf;
}

static int past_end(cursor_t *c, const char *field, uint64_t need, sl_error_t *err)
{
    return sl_errorf(err,
                     "%s: %s: %s needs %llu bytes at offset %zu, beyond the end of the file "
                     "(%zu bytes; truncated or corrupt)",
                     c->g->path, where(c), field, (unsigned long long)need, c->pos, c->g->size);
}

static int read_u32(cursor_t *c, const char *field, uint32_t *v, sl_error_t *err)
{
    if (left(c) < 4)
        return past_end(c, field, 4, err);
    *v = rd32(c->g->map + c->pos);
    c->pos += 4;
    return 0;
}

static int read_u64(cursor_t *c, const char *field, uint64_t *v, sl_error_t *err)
{
    if (left(c) < 8)
        return past_end(c, field, 8, err);
    *v = rd64(c->g->map + c->pos);
    c->pos += 8;
    return 0;
}

/* A length-prefixed string; *s points into the map. max bounds the length (0: none). */
static int read_str(cursor_t *c, const char *field, uint64_t max, const unsigned char **s,
                    uint64_t *len, sl_error_t *err)
{
    if (read_u64(c, field, len, err) != 0)
        return -1;
    if (max && *len > max)
        return sl_errorf(err, "%s: %s: %s length %llu is absurd (more than %llu bytes)", c->g->path,
                         where(c), field, (unsigned long long)*len, (unsigned long long)max);
    if (*len > left(c))
        return sl_errorf(err,
                         "%s: %s: %s length %llu at offset %zu goes beyond the end of the file "
                         "(%zu bytes)",
                         c->g->path, where(c), field, (unsigned long long)*len, c->pos - 8,
                         c->g->size);
    *s = c->g->map + c->pos;
    c->pos += (size_t)*len;
    return 0;
}

static int check_vtype(cursor_t *c, uint32_t t, const char *field, sl_error_t *err)
{
    if (t > SL_GGUF_F64)
        return sl_errorf(err, "%s: %s: unknown %s %u (GGUF knows 0..12)", c->g->path, where(c),
                         field, t);
    return 0;
}

/* Skips over one value of type t at c->pos, checking every length in it. For a top-level
 * string array, fills *str_off with each element's offset from the array's first element. */
static int parse_value(cursor_t *c, uint32_t t, int depth, size_t **str_off, sl_error_t *err)
{
    if (t == SL_GGUF_STRING) {
        const unsigned char *s;
        uint64_t len = 0;
        return read_str(c, "string value", 0, &s, &len, err);
    }
    if (t != SL_GGUF_ARRAY) {
        size_t n = vsize(t);
        if (left(c) < n)
            return past_end(c, vname(t), n, err);
        c->pos += n;
        return 0;
    }

    if (depth >= GGUF_MAX_DEPTH)
        return sl_errorf(err, "%s: %s: arrays nested more than %d deep", c->g->path, where(c),
                         GGUF_MAX_DEPTH);
    uint32_t et = 0;
    uint64_t n = 0;
    if (read_u32(c, "array element type", &et, err) != 0 ||
        check_vtype(c, et, "array element type", err) != 0 ||
        read_u64(c, "array length", &n, err) != 0)
        return -1;
    /* Each element takes at least this many bytes, so n is bounded by what is left. */
    size_t min = et == SL_GGUF_STRING ? 8 : et == SL_GGUF_ARRAY ? 12 : vsize(et);
    if (n > left(c) / min)
        return sl_errorf(err,
                         "%s: %s: array of %llu %s values at offset %zu goes beyond the end of "
                         "the file (%zu bytes)",
                         c->g->path, where(c), (unsigned long long)n, vname(et), c->pos - 12,
                         c->g->size);
    if (et != SL_GGUF_STRING && et != SL_GGUF_ARRAY) {
        c->pos += (size_t)n * min;
        return 0;
    }
    size_t first = c->pos;
    if (str_off && et == SL_GGUF_STRING && depth == 0)
        *str_off = sl_xmalloc((size_t)(n ? n : 1) * sizeof **str_off);
    for (uint64_t i = 0; i < n; i++) {
        if (str_off && *str_off)
            (*str_off)[i] = c->pos - first;
        if (depth == 0)
            c->elem = (int64_t)i;
        if (parse_value(c, et, depth + 1, NULL, err) != 0)
            return -1;
    }
    if (depth == 0)
        c->elem = -1;
    return 0;
}

static int parse_kv(sl_gguf_t *g, cursor_t *c, int i, sl_error_t *err)
{
    gguf_kv_t *kv = &g->kv[i];
    snprintf(c->what, sizeof c->what, "metadata entry %d", i);
    const unsigned char *key;
    uint64_t klen = 0;
    if (read_str(c, "key", GGUF_MAX_NAME, &key, &klen, err) != 0)
        return -1;
    char *k = sl_xmalloc((size_t)klen + 1);
    memcpy(k, key, (size_t)klen);
    k[klen] = 0;
    kv->pub.key = k;

    snprintf(c->what, sizeof c->what, "key '%.100s'", k);
    uint32_t t = 0;
    if (read_u32(c, "value type", &t, err) != 0 || check_vtype(c, t, "value type", err) != 0)
        return -1;
    kv->pub.type = (sl_gguf_vtype_t)t;
    kv->pub.elem = (sl_gguf_vtype_t)t;
    kv->pub.n = 1;
    size_t start = c->pos;
    if (parse_value(c, t, 0, &kv->str_off, err) != 0)
        return -1;
    if (t == SL_GGUF_ARRAY) { /* parse_value checked these 12 bytes */
        kv->pub.elem = (sl_gguf_vtype_t)rd32(g->map + start);
        kv->pub.n = rd64(g->map + start + 4);
        start += 12;
    }
    kv->pub.raw = g->map + start;
    return 0;
}

static int parse_tensor_info(sl_gguf_t *g, cursor_t *c, int i, sl_error_t *err)
{
    sl_gguf_tensor_t *t = &g->tensors[i];
    snprintf(c->what, sizeof c->what, "tensor info %d", i);
    const unsigned char *name;
    uint64_t nlen = 0;
    if (read_str(c, "name", GGUF_MAX_NAME, &name, &nlen, err) != 0)
        return -1;
    char *s = sl_xmalloc((size_t)nlen + 1);
    memcpy(s, name, (size_t)nlen);
    s[nlen] = 0;
    t->name = s;

    snprintf(c->what, sizeof c->what, "tensor '%.100s'", s);
    uint32_t ndim = 0, type = 0;
    if (read_u32(c, "dimension count", &ndim, err) != 0)
        return -1;
    if (ndim > SL_GGUF_MAX_DIMS)
        return sl_errorf(err, "%s: tensor '%s': %u dimensions (GGUF allows at most %d)", g->path, s,
                         ndim, SL_GGUF_MAX_DIMS);
    t->ndim = (int)ndim;
    for (int d = 0; d < SL_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        uint64_t v = 0;
        if (read_u64(c, "dimension", &v, err) != 0)
            return -1;
        if (v > (uint64_t)INT64_MAX)
            return sl_errorf(err, "%s: tensor '%s': dimension %u is negative (%lld)", g->path, s, d,
                             (long long)v);
        t->ne[d] = (int64_t)v;
    }
    if (read_u32(c, "type", &type, err) != 0 || read_u64(c, "offset", &t->offset, err) != 0)
        return -1;
    t->type = (int)(type > INT_MAX ? INT_MAX : type);
    t->supported = type_supported(t->type);
    return 0;
}

/* Checks a tensor's shape, type and range once the data section is known. */
static int check_tensor(sl_gguf_t *g, sl_gguf_tensor_t *t, sl_error_t *err)
{
    size_t data_size = g->size - g->data_start;
    uint64_t numel = 1;
    for (int d = 0; d < SL_GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(numel, (uint64_t)t->ne[d], &numel) ||
            numel > (uint64_t)INT64_MAX)
            return sl_errorf(err,
                             "%s: tensor '%s': shape [%lld, %lld, %lld, %lld] has more "
                             "than 2^63 elements",
                             g->path, t->name, (long long)t->ne[0], (long long)t->ne[1],
                             (long long)t->ne[2], (long long)t->ne[3]);
    if (t->offset % g->alignment != 0)
        return sl_errorf(err,
                         "%s: tensor '%s': offset %llu is not a multiple of the alignment %llu "
                         "(general.alignment)",
                         g->path, t->name, (unsigned long long)t->offset,
                         (unsigned long long)g->alignment);
    if (t->offset > data_size)
        return sl_errorf(err,
                         "%s: tensor '%s': offset %llu is beyond the end of the data section "
                         "(%zu bytes from file offset %zu; truncated or corrupt)",
                         g->path, t->name, (unsigned long long)t->offset, data_size, g->data_start);
    int ti = type_index(t->type);
    uint64_t nbytes = 0;
    if (ti >= 0) {
        unsigned bs = ggml_types[ti].block;
        if (t->ne[0] % bs != 0)
            return sl_errorf(err,
                             "%s: tensor '%s': row length ne[0] = %lld is not a multiple of the "
                             "block size %u of %s",
                             g->path, t->name, (long long)t->ne[0], bs, ggml_types[ti].name);
        /* numel / bs blocks: whole rows are whole blocks */
        if (__builtin_mul_overflow(numel / bs, (uint64_t)ggml_types[ti].bytes, &nbytes))
            return sl_errorf(err, "%s: tensor '%s': byte count overflows 64 bits", g->path,
                             t->name);
    }
    /* An unknown type has no known size: only its start is checked (it cannot be read). */
    if (nbytes > data_size - t->offset)
        return sl_errorf(err,
                         "%s: tensor '%s': data [%llu, %llu) of the data section goes beyond the "
                         "end of the file (the data section holds %zu bytes; truncated or "
                         "corrupt)",
                         g->path, t->name, (unsigned long long)t->offset,
                         (unsigned long long)(t->offset + nbytes), data_size);
    t->nbytes = (size_t)nbytes;
    t->data = g->map + g->data_start + t->offset;
    return 0;
}

/* qsort has no context argument: the arrays being sorted are set here for the comparators. */
static _Thread_local const sl_gguf_t *sort_g;

static int cmp_key(const void *a, const void *b)
{
    return strcmp(sort_g->kv[*(const int *)a].pub.key, sort_g->kv[*(const int *)b].pub.key);
}

static int cmp_tname(const void *a, const void *b)
{
    return strcmp(sort_g->tensors[*(const int *)a].name, sort_g->tensors[*(const int *)b].name);
}

static int *sorted_index(const sl_gguf_t *g, int n, int (*cmp)(const void *, const void *))
{
    int *idx = sl_xmalloc((size_t)(n ? n : 1) * sizeof *idx);
    for (int i = 0; i < n; i++)
        idx[i] = i;
    sort_g = g;
    qsort(idx, (size_t)n, sizeof *idx, cmp);
    sort_g = NULL;
    return idx;
}

static int parse(sl_gguf_t *g, sl_error_t *err)
{
    const unsigned char *p = g->map;
    if (memcmp(p, "GGUF", 4) != 0)
        return sl_errorf(err, "%s: not a GGUF file (magic %02x %02x %02x %02x, expected 'GGUF')",
                         g->path, p[0], p[1], p[2], p[3]);
    g->version = rd32(p + 4);
    if (g->version != 2 && g->version != 3) {
        uint32_t swapped = __builtin_bswap32(g->version);
        if (swapped == 2 || swapped == 3)
            return sl_errorf(err, "%s: big-endian GGUF file (version %u): not supported", g->path,
                             swapped);
        return sl_errorf(err, "%s: GGUF version %u is not supported (only 2 and 3)", g->path,
                         g->version);
    }
    uint64_t n_tensors = rd64(p + 8), n_kv = rd64(p + 16);
    size_t rest = g->size - GGUF_HEADER_BYTES;
    if (n_kv > rest / GGUF_MIN_KV_BYTES || n_kv > INT_MAX)
        return sl_errorf(err,
                         "%s: metadata count %llu is absurd (the %zu bytes after the header hold "
                         "at most %zu entries)",
                         g->path, (unsigned long long)n_kv, rest, rest / GGUF_MIN_KV_BYTES);
    if (n_tensors > rest / GGUF_MIN_TENSOR_BYTES || n_tensors > INT_MAX)
        return sl_errorf(err,
                         "%s: tensor count %llu is absurd (the %zu bytes after the header hold "
                         "at most %zu tensor infos)",
                         g->path, (unsigned long long)n_tensors, rest,
                         rest / GGUF_MIN_TENSOR_BYTES);

    cursor_t c = {.g = g, .pos = GGUF_HEADER_BYTES, .elem = -1};
    g->kv = sl_xcalloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kv);
    for (int i = 0; i < (int)n_kv; i++) {
        g->n_kv = i + 1; /* so that close frees what this entry allocated */
        if (parse_kv(g, &c, i, err) != 0)
            return -1;
    }
    g->kv_sorted = sorted_index(g, g->n_kv, cmp_key);
    for (int i = 1; i < g->n_kv; i++)
        if (strcmp(g->kv[g->kv_sorted[i - 1]].pub.key, g->kv[g->kv_sorted[i]].pub.key) == 0)
            return sl_errorf(err, "%s: key '%s' appears twice in the metadata", g->path,
                             g->kv[g->kv_sorted[i]].pub.key);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const sl_gguf_kv_t *al = sl_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != SL_GGUF_U32)
            return sl_errorf(err, "%s: key 'general.alignment' has type %s, not u32", g->path,
                             vname(al->type));
        g->alignment = rd32(al->raw);
        if (g->alignment == 0 || (g->alignment & (g->alignment - 1)) != 0)
            return sl_errorf(err, "%s: key 'general.alignment' is %llu, not a power of two",
                             g->path, (unsigned long long)g->alignment);
    }

    g->tensors = sl_xcalloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors);
    for (int i = 0; i < (int)n_tensors; i++) {
        g->n_tensors = i + 1;
        if (parse_tensor_info(g, &c, i, err) != 0)
            return -1;
    }
    /* The data section starts at the next multiple of the alignment. A file without tensors may
     * end without that padding. */
    uint64_t start = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (start > g->size) {
        if (g->n_tensors > 0)
            return sl_errorf(err,
                             "%s: the data section would start at offset %llu, beyond the end "
                             "of the file (%zu bytes; truncated)",
                             g->path, (unsigned long long)start, g->size);
        start = g->size;
    }
    g->data_start = (size_t)start;
    for (int i = 0; i < g->n_tensors; i++)
        if (check_tensor(g, &g->tensors[i], err) != 0)
            return -1;
    g->t_sorted = sorted_index(g, g->n_tensors, cmp_tname);
    for (int i = 1; i < g->n_tensors; i++)
        if (strcmp(g->tensors[g->t_sorted[i - 1]].name, g->tensors[g->t_sorted[i]].name) == 0)
            return sl_errorf(err, "%s: tensor '%s' appears twice", g->path,
                             g->tensors[g->t_sorted[i]].name);
    return 0;
}

/* ---- open / close ------------------------------------------------------------------------ */

sl_gguf_t *sl_gguf_open(const char *path, sl_error_t *err)
{
    sl_gguf_t *g = sl_xcalloc(1, sizeof *g);
    g->path = sl_xstrdup(path);

    void *map;
    if (sl_map_file(path, GGUF_HEADER_BYTES, "GGUF header", &map, &g->size, err) != 0)
        goto fail;
    g->map = map;
    if (parse(g, err) != 0)
        goto fail;
    return g;

fail:
    sl_gguf_close(g);
    return NULL;
}

void sl_gguf_close(sl_gguf_t *g)
{
    if (!g)
        return;
    sl_unmap_file(g->map, g->size);
    for (int i = 0; i < g->n_kv; i++) {
        free((char *)g->kv[i].pub.key);
        free(g->kv[i].str_off);
    }
    for (int i = 0; i < g->n_tensors; i++)
        free((char *)g->tensors[i].name);
    free(g->kv);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->t_sorted);
    free(g->path);
    free(g);
}

const char *sl_gguf_path(const sl_gguf_t *g) { return g->path; }
uint32_t sl_gguf_version(const sl_gguf_t *g) { return g->version; }

/* ---- metadata ---------------------------------------------------------------------------- */

int sl_gguf_kv_count(const sl_gguf_t *g) { return g->n_kv; }

const sl_gguf_kv_t *sl_gguf_kv_at(const sl_gguf_t *g, int i)
{
    return i >= 0 && i < g->n_kv ? &g->kv[i].pub : NULL;
}

const sl_gguf_kv_t *sl_gguf_find(const sl_gguf_t *g, const char *key)
{
    int lo = 0, hi = g->n_kv - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const gguf_kv_t *kv = &g->kv[g->kv_sorted[mid]];
        int c = strcmp(key, kv->pub.key);
        if (c == 0)
            return &kv->pub;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Integer value of a fixed-size integer or bool at p. 0 when u64 does not fit in int64. */
static int load_int(uint32_t t, const unsigned char *p, int64_t *out)
{
    switch (t) {
    case SL_GGUF_U8: *out = p[0]; return 1;
    case SL_GGUF_I8: *out = (int8_t)p[0]; return 1;
    case SL_GGUF_U16: *out = rd16(p); return 1;
    case SL_GGUF_I16: *out = (int16_t)rd16(p); return 1;
    case SL_GGUF_U32: *out = rd32(p); return 1;
    case SL_GGUF_I32: *out = (int32_t)rd32(p); return 1;
    case SL_GGUF_I64: *out = (int64_t)rd64(p); return 1;
    case SL_GGUF_U64: {
        uint64_t v = rd64(p);
        *out = v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
        return v <= (uint64_t)INT64_MAX;
    }
    case SL_GGUF_BOOL: *out = p[0] != 0; return 1;
    }
    return 0;
}

/* Numeric value at p as a double (integers exactly up to 2^53). NAN for other types. */
static double load_float(uint32_t t, const unsigned char *p)
{
    if (t == SL_GGUF_F32) {
        uint32_t b = rd32(p);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    if (t == SL_GGUF_F64) {
        uint64_t b = rd64(p);
        double d;
        memcpy(&d, &b, 8);
        return d;
    }
    if (t == SL_GGUF_U64)
        return (double)rd64(p);
    int64_t v;
    return load_int(t, p, &v) ? (double)v : NAN;
}

static const sl_gguf_kv_t *find_or_fail(const sl_gguf_t *g, const char *key, sl_error_t *err)
{
    const sl_gguf_kv_t *kv = sl_gguf_find(g, key);
    if (!kv)
        sl_errorf(err, "%s: metadata key '%s' is missing", g->path, key);
    return kv;
}

static int wrong_type(const sl_gguf_t *g, const sl_gguf_kv_t *kv, const char *want, sl_error_t *err)
{
    if (kv->type == SL_GGUF_ARRAY)
        return sl_errorf(err, "%s: key '%s' is an array of %llu %s values, not %s", g->path,
                         kv->key, (unsigned long long)kv->n, vname(kv->elem), want);
    return sl_errorf(err, "%s: key '%s' has type %s, not %s", g->path, kv->key, vname(kv->type),
                     want);
}

int sl_gguf_get_int(const sl_gguf_t *g, const char *key, int64_t *out, sl_error_t *err)
{
    const sl_gguf_kv_t *kv = find_or_fail(g, key, err);
    if (!kv)
        return -1;
    if (!is_int_type(kv->type))
        return wrong_type(g, kv, "an integer", err);
    if (!load_int(kv->type, kv->raw, out))
        return sl_errorf(err, "%s: key '%s': u64 value %llu does not fit in int64", g->path, key,
                         (unsigned long long)rd64(kv->raw));
    return 0;
}

int sl_gguf_get_float(const sl_gguf_t *g, const char *key, double *out, sl_error_t *err)
{
    const sl_gguf_kv_t *kv = find_or_fail(g, key, err);
    if (!kv)
        return -1;
    if (!is_num_type(kv->type))
        return wrong_type(g, kv, "a number", err);
    *out = load_float(kv->type, kv->raw);
    return 0;
}

int sl_gguf_get_bool(const sl_gguf_t *g, const char *key, int *out, sl_error_t *err)
{
    const sl_gguf_kv_t *kv = find_or_fail(g, key, err);
    if (!kv)
        return -1;
    if (kv->type != SL_GGUF_BOOL)
        return wrong_type(g, kv, "a bool", err);
    *out = kv->raw[0] != 0;
    return 0;
}

int sl_gguf_get_str(const sl_gguf_t *g, const char *key, const char **s, size_t *len,
                    sl_error_t *err)
{
    const sl_gguf_kv_t *kv = find_or_fail(g, key, err);
    if (!kv)
        return -1;
    if (kv->type != SL_GGUF_STRING)
        return wrong_type(g, kv, "a string", err);
    *len = (size_t)rd64(kv->raw);
    *s = (const char *)kv->raw + 8;
    return 0;
}

/* kv must be a pointer that sl_gguf_kv_at or sl_gguf_find returned (not a copy): the string
 * index lives beside it. A scalar value is an array of one. */
int sl_gguf_arr_str(const sl_gguf_kv_t *kv, uint64_t i, const char **s, size_t *len)
{
    if (kv->elem != SL_GGUF_STRING || i >= kv->n)
        return -1;
    const unsigned char *p = kv->raw;
    if (kv->type == SL_GGUF_ARRAY)
        p += ((const gguf_kv_t *)kv)->str_off[i];
    *len = (size_t)rd64(p);
    *s = (const char *)p + 8;
    return 0;
}

/* Integers as they are (u64 above INT64_MAX saturates), bools 0/1, floats truncated toward
 * zero (saturating); 0 for strings and nested arrays. */
int64_t sl_gguf_arr_int(const sl_gguf_kv_t *kv, uint64_t i)
{
    size_t es = vsize(kv->elem);
    if (es == 0 || i >= kv->n)
        return 0;
    const unsigned char *p = kv->raw + i * es;
    int64_t v = 0;
    if (load_int(kv->elem, p, &v) || kv->elem == SL_GGUF_U64)
        return v;
    double d = load_float(kv->elem, p);
    if (d != d)
        return 0;
    if (d >= 9223372036854775807.0)
        return INT64_MAX;
    if (d <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

/* Any number (and bools as 0/1) as a double; NAN for strings and nested arrays. */
double sl_gguf_arr_float(const sl_gguf_kv_t *kv, uint64_t i)
{
    size_t es = vsize(kv->elem);
    if (es == 0 || i >= kv->n)
        return NAN;
    return load_float(kv->elem, kv->raw + i * es);
}

/* ---- tensors ----------------------------------------------------------------------------- */

int sl_gguf_tensor_count(const sl_gguf_t *g) { return g->n_tensors; }

const sl_gguf_tensor_t *sl_gguf_tensor_at(const sl_gguf_t *g, int i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const sl_gguf_tensor_t *sl_gguf_tensor_find(const sl_gguf_t *g, const char *name)
{
    int lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const sl_gguf_tensor_t *t = &g->tensors[g->t_sorted[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

int64_t sl_gguf_rows(const sl_gguf_tensor_t *t)
{
    /* Cannot overflow: sl_gguf_open checked the element count. */
    return t->ne[1] * t->ne[2] * t->ne[3];
}

static float half(const unsigned char *p) { return sl_f16_to_f32(rd16(p)); }

/* One row of n values each; n is a multiple of 32 for the block types (checked on open). */
static void dequant_f32(const unsigned char *p, int64_t n, float *y)
{
    for (int64_t j = 0; j < n; j++) {
        uint32_t b = rd32(p + 4 * j);
        memcpy(&y[j], &b, 4);
    }
}

static void dequant_f16(const unsigned char *p, int64_t n, float *y)
{
    for (int64_t j = 0; j < n; j++)
        y[j] = half(p + 2 * j);
}

static void dequant_bf16(const unsigned char *p, int64_t n, float *y)
{
    for (int64_t j = 0; j < n; j++)
        y[j] = sl_bf16_to_f32(rd16(p + 2 * j));
}

/* Q8_0, Q4_0, Q4_1: blocks of 32 values (layouts in kernels/quant.h, shared with the kernels
 * that compute from them). */
static void dequant_blocks(int dt, size_t bytes, const unsigned char *p, int64_t n, float *y)
{
    for (int64_t b = 0; b < n / SL_QBLOCK; b++, p += bytes, y += SL_QBLOCK)
        sl_q_dequant_block(dt, p, y);
}

static void dequant_q8_0(const unsigned char *p, int64_t n, float *y)
{
    dequant_blocks(SL_Q8_0, SL_Q8_0_BYTES, p, n, y);
}

static void dequant_q4_0(const unsigned char *p, int64_t n, float *y)
{
    dequant_blocks(SL_Q4_0, SL_Q4_0_BYTES, p, n, y);
}

static void dequant_q4_1(const unsigned char *p, int64_t n, float *y)
{
    dequant_blocks(SL_Q4_1, SL_Q4_1_BYTES, p, n, y);
}

/* Q5_0 and Q5_1 (kernels/quant.h): x = (u - 16) d, or u d + m (ggml's
 * dequantize_row_q5_0/q5_1). */
static void dequant_q5(int with_min, const unsigned char *p, int64_t n, float *y)
{
    const size_t bytes = with_min ? SL_Q5_1_BYTES : SL_Q5_0_BYTES;
    for (int64_t b = 0; b < n / 32; b++, p += bytes, y += 32) {
        const float d = half(p), m = with_min ? half(p + 2) : 0.0f;
        uint8_t u[32];
        sl_q5_values(p + (with_min ? 4 : 2), u);
        for (int j = 0; j < 32; j++)
            y[j] = with_min ? d * (float)u[j] + m : d * (float)((int)u[j] - 16);
    }
}

static void dequant_q5_0(const unsigned char *p, int64_t n, float *y) { dequant_q5(0, p, n, y); }
static void dequant_q5_1(const unsigned char *p, int64_t n, float *y) { dequant_q5(1, p, n, y); }

/* ---- K-quants: super-blocks of 256 values in 16 or 8 sub-blocks, each with its own scale (and
 * minimum) quantised against the block's f16 d (and dmin). The element order within a
 * super-block follows ggml's reference dequantize_row_q*_K. Every product below is exact in
 * float32 (an f16 has 11 significant bits, a sub-block scale at most 8, a quant at most 6) except
 * Q6_K's (d * scale) * q, which rounds once, in the same order as ggml and gguf-py. */

/* Q2_K block (84 bytes): 16 scale bytes (low nibble scale, high nibble minimum, per 16 values),
 * 64 bytes of 2-bit quants, f16 d, f16 dmin; x = d * sc * q - dmin * m. */
static void dequant_q2_k(const unsigned char *p, int64_t n, float *y)
{
    for (int64_t b = 0; b < n / 256; b++, p += 84, y += 256) {
        const unsigned char *sc = p, *qs = p + 16;
        float d = half(p + 80), dmin = half(p + 82);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32, s = sc[e / 16];
            float dl = d * (float)(s & 0x0f), ml = dmin * (float)(s >> 4);
            y[e] = dl * (float)((qs[h * 32 + l] >> (2 * j)) & 3) - ml;
        }
    }
}

/* Q3_K block (110 bytes): 32 bytes of high bits (hmask), 64 bytes of 2-bit quants, 12 bytes of
 * 6-bit signed scales (low nibbles in bytes 0-7, top two bits in bytes 8-11), f16 d;
 * x = d * (scale - 32) * (q - (high bit clear ? 4 : 0)). */
static void dequant_q3_k(const unsigned char *p, int64_t n, float *y)
{
    for (int64_t b = 0; b < n / 256; b++, p += 110, y += 256) {
        const unsigned char *hm = p, *qs = p + 32, *sc = p + 96;
        float d = half(p + 108);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32, s = e / 16;
            int lo = s < 8 ? sc[s] & 0x0f : sc[s - 8] >> 4;
            int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
            float dl = d * (float)((lo | (hi << 4)) - 32);
            int q = ((qs[h * 32 + l] >> (2 * j)) & 3) - ((hm[l] >> (h * 4 + j)) & 1 ? 0 : 4);
            y[e] = dl * (float)q;
        }
    }
}

/* Q4_K (144 bytes) and Q5_K (176 bytes, a fifth bit per value) blocks, kernels/quant.h:
 * x = d * sc * q - dmin * m. */
static void dequant_q45_k(int five, const unsigned char *p, int64_t n, float *y)
{
    const size_t bytes = five ? SL_Q5_K_BYTES : SL_Q4_K_BYTES;
    for (int64_t b = 0; b < n / 256; b++, p += bytes, y += 256) {
        float d = half(p), dmin = half(p + 2);
        for (int s = 0; s < 8; s++) { /* sub-block of 32 */
            uint8_t u[32];
            int sc, m;
            sl_q45_k_sub(p, five, s, u, &sc, &m);
            float dl = d * (float)sc, ml = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                y[s * 32 + l] = dl * (float)u[l] - ml;
        }
    }
}

static void dequant_q4_k(const unsigned char *p, int64_t n, float *y) { dequant_q45_k(0, p, n, y); }
static void dequant_q5_k(const unsigned char *p, int64_t n, float *y) { dequant_q45_k(1, p, n, y); }

/* Q6_K block (210 bytes, kernels/quant.h): x = (d * scale) * (q - 32). */
static void dequant_q6_k(const unsigned char *p, int64_t n, float *y)
{
    for (int64_t b = 0; b < n / 256; b++, p += 210, y += 256) {
        float d = half(p + 208);
        for (int j = 0; j < 8; j++) {
            uint8_t u[32];
            int sc[2];
            sl_q6_k_sub(p, j, u, sc);
            for (int l = 0; l < 32; l++)
                y[j * 32 + l] = (d * (float)sc[l / 16]) * (float)((int)u[l] - 32);
        }
    }
}

int sl_gguf_dequant_rows(const sl_gguf_tensor_t *t, int64_t row0, int64_t nrows, float *out,
                         sl_error_t *err)
{
    int64_t rows = sl_gguf_rows(t);
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return sl_errorf(err, "tensor '%s': rows [%lld, %lld) out of range (it has %lld rows)",
                         t->name, (long long)row0, (long long)row0 + (long long)nrows,
                         (long long)rows);
    if (!t->supported)
        return sl_errorf(
            err, "tensor '%s': %s%s cannot be dequantised (shardline reads " SL_GGUF_TYPES ")",
            t->name, type_index(t->type) >= 0 ? "type " : "", sl_ggml_type_name(t->type));
    int ti = type_index(t->type);
    int64_t n = t->ne[0];
    size_t row_bytes = (size_t)(n / ggml_types[ti].block) * ggml_types[ti].bytes;
    void (*fn)(const unsigned char *, int64_t, float *) = NULL;
    switch (t->type) {
    case SL_GGML_F32: fn = dequant_f32; break;
    case SL_GGML_F16: fn = dequant_f16; break;
    case SL_GGML_BF16: fn = dequant_bf16; break;
    case SL_GGML_Q8_0: fn = dequant_q8_0; break;
    case SL_GGML_Q4_0: fn = dequant_q4_0; break;
    case SL_GGML_Q4_1: fn = dequant_q4_1; break;
    case SL_GGML_Q5_0: fn = dequant_q5_0; break;
    case SL_GGML_Q5_1: fn = dequant_q5_1; break;
    case SL_GGML_Q2_K: fn = dequant_q2_k; break;
    case SL_GGML_Q3_K: fn = dequant_q3_k; break;
    case SL_GGML_Q4_K: fn = dequant_q4_k; break;
    case SL_GGML_Q5_K: fn = dequant_q5_k; break;
    case SL_GGML_Q6_K: fn = dequant_q6_k; break;
    }
    for (int64_t r = 0; r < nrows; r++)
        fn(t->data + (size_t)(row0 + r) * row_bytes, n, out + (size_t)r * (size_t)n);
    return 0;
}
