/*
 * gguf.h — read-only access to a GGUF (version 2 or 3) model file, memory-mapped.
 *
 * Format (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count, then
 * the metadata key/value pairs (typed: u8..i64, f32, f64, bool, string, arrays of those), then
 * the tensor infos (name, ndim, dims innermost-first, ggml type, offset), then padding to
 * `general.alignment` (default 32) and the data section. sl_gguf_open validates everything a
 * hostile or truncated file can get wrong (bad magic or version, counts or lengths past the end
 * of the file, unknown value or tensor types, tensor data out of range or misaligned, duplicate
 * names) and names the file, key or tensor at fault.
 *
 * Shapes: GGUF lists dimensions innermost-first (ne[0] is contiguous). A 2-D tensor with
 * ne = {K, N} is the row-major [N, K] matrix of a PyTorch nn.Linear weight: N rows of K values.
 * Quantised types store each row as blocks of 32 values (256 for the K-quants, whose
 * super-blocks hold sub-block scales); sl_gguf_dequant_rows turns rows into f32 (F32, F16, BF16,
 * Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), exactly as ggml's reference
 * dequantisation does.
 */
#ifndef SL_GGUF_H
#define SL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/sl_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_GGUF_MAX_DIMS 4

/* Metadata value types (GGUF's numbering). */
typedef enum {
    SL_GGUF_U8 = 0,
    SL_GGUF_I8 = 1,
    SL_GGUF_U16 = 2,
    SL_GGUF_I16 = 3,
    SL_GGUF_U32 = 4,
    SL_GGUF_I32 = 5,
    SL_GGUF_F32 = 6,
    SL_GGUF_BOOL = 7,
    SL_GGUF_STRING = 8,
    SL_GGUF_ARRAY = 9,
    SL_GGUF_U64 = 10,
    SL_GGUF_I64 = 11,
    SL_GGUF_F64 = 12,
} sl_gguf_vtype_t;

/* Tensor types (ggml's numbering); the ones shardline dequantises. */
typedef enum {
    SL_GGML_F32 = 0,
    SL_GGML_F16 = 1,
    SL_GGML_Q4_0 = 2,
    SL_GGML_Q4_1 = 3,
    SL_GGML_Q5_0 = 6,
    SL_GGML_Q5_1 = 7,
    SL_GGML_Q8_0 = 8,
    SL_GGML_Q2_K = 10,
    SL_GGML_Q3_K = 11,
    SL_GGML_Q4_K = 12,
    SL_GGML_Q5_K = 13,
    SL_GGML_Q6_K = 14,
    SL_GGML_BF16 = 30,
} sl_ggml_type_t;

/* The tensor types shardline dequantises, for messages. */
#define SL_GGUF_TYPES "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K or Q6_K"

typedef struct sl_gguf sl_gguf_t;

typedef struct {
    const char *key;
    sl_gguf_vtype_t type;     /* SL_GGUF_ARRAY for arrays */
    sl_gguf_vtype_t elem;     /* element type of an array (else = type) */
    uint64_t n;               /* array length (1 for a scalar) */
    const unsigned char *raw; /* first byte of the value (of the first element for arrays) */
} sl_gguf_kv_t;

typedef struct {
    const char *name;
    int type;      /* ggml type number (may be one shardline cannot dequantise: see supported) */
    int supported; /* 1 for the types of SL_GGUF_TYPES */
    int ndim;
    int64_t ne[SL_GGUF_MAX_DIMS]; /* innermost-first, as in the file; unused dims are 1 */
    uint64_t offset;              /* into the data section */
    size_t nbytes;
    const unsigned char *data;
} sl_gguf_tensor_t;

/* Opens and validates path. NULL and a message naming the file (and key/tensor) on failure. */
sl_gguf_t *sl_gguf_open(const char *path, sl_error_t *err);
void sl_gguf_close(sl_gguf_t *g); /* NULL is fine */
const char *sl_gguf_path(const sl_gguf_t *g);
uint32_t sl_gguf_version(const sl_gguf_t *g);

/* ---- metadata ---- */
int sl_gguf_kv_count(const sl_gguf_t *g);
const sl_gguf_kv_t *sl_gguf_kv_at(const sl_gguf_t *g, int i);
const sl_gguf_kv_t *sl_gguf_find(const sl_gguf_t *g, const char *key); /* NULL if absent */
/* Typed getters: 0 on success; -1 with err filled (naming file and key) when the key is absent
 * or has a type that cannot be converted (any integer type converts to int64 when it fits; any
 * numeric type converts to double). */
int sl_gguf_get_int(const sl_gguf_t *g, const char *key, int64_t *out, sl_error_t *err);
int sl_gguf_get_float(const sl_gguf_t *g, const char *key, double *out, sl_error_t *err);
int sl_gguf_get_bool(const sl_gguf_t *g, const char *key, int *out, sl_error_t *err);
/* A string value: pointer into the map (not NUL-terminated) and its length. */
int sl_gguf_get_str(const sl_gguf_t *g, const char *key, const char **s, size_t *len,
                    sl_error_t *err);
/* Element i of an array value (bounds are the caller's: i < kv->n). Strings: pointer + length;
 * numbers converted as above. Array elements are located in O(1) after the first call
 * (string arrays are indexed on open). */
int sl_gguf_arr_str(const sl_gguf_kv_t *kv, uint64_t i, const char **s, size_t *len);
int64_t sl_gguf_arr_int(const sl_gguf_kv_t *kv, uint64_t i);
double sl_gguf_arr_float(const sl_gguf_kv_t *kv, uint64_t i);

/* ---- tensors ---- */
int sl_gguf_tensor_count(const sl_gguf_t *g);
const sl_gguf_tensor_t *sl_gguf_tensor_at(const sl_gguf_t *g, int i);
const sl_gguf_tensor_t *sl_gguf_tensor_find(const sl_gguf_t *g, const char *name);
const char *sl_ggml_type_name(int type); /* "F32", "Q4_1", ... ("type 13" for unknown ones) */
/* Number of rows (product of ne[1..]) and row length ne[0]. */
int64_t sl_gguf_rows(const sl_gguf_tensor_t *t);
/* Dequantises rows [row0, row0 + nrows) into out (nrows * ne[0] floats, row-major).
 * 0, or -1 with err naming the tensor (unsupported type, rows out of range). */
int sl_gguf_dequant_rows(const sl_gguf_tensor_t *t, int64_t row0, int64_t nrows, float *out,
                         sl_error_t *err);

#ifdef __cplusplus
}
#endif

#endif
