/*
 * safetensors.h — read-only access to a .safetensors file, memory-mapped.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value"}}
 * then the byte buffer; offsets are relative to the start of the buffer. sl_st_open validates
 * everything a hostile or truncated file can get wrong (header length beyond the file or
 * absurdly large, JSON errors, unknown dtypes, offsets out of range, overlapping or not matching
 * the shape) and names the file and tensor at fault. Because the file is mapped, a TP rank that
 * reads only its slice of a tensor touches only those pages.
 */
#ifndef SL_SAFETENSORS_H
#define SL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/sl_error.h"
#include "kernels/backend.h"

#define SL_ST_MAX_DIMS 8

typedef struct {
    char *name;
    sl_dtype_t dtype; /* for F32, F16, BF16, I32, I8 (mapped = 1) */
    int mapped;       /* 0: a valid safetensors dtype shardline does not compute with (F64, I64,
                         U8, BOOL, ...): the file opens, a loader that needs it refuses it */
    char code[12];    /* the dtype as the file spells it ("F32", "I64", ...) */
    int ndim;
    int64_t shape[SL_ST_MAX_DIMS];
    uint64_t begin, end; /* byte range inside the data buffer */
    const void *data;    /* = buffer + begin */
} sl_st_tensor_t;

typedef struct {
    char *path;
    int fd;
    void *map;
    size_t size;       /* file size */
    size_t header_len; /* N */
    const unsigned char *buffer;
    size_t buffer_len;
    sl_st_tensor_t *tensors;
    int n_tensors;
} sl_safetensors_t;

int sl_st_open(sl_safetensors_t *st, const char *path, sl_error_t *err);
void sl_st_close(sl_safetensors_t *st); /* safe on a zeroed or failed struct */
const sl_st_tensor_t *sl_st_find(const sl_safetensors_t *st, const char *name);
int64_t sl_st_numel(const sl_st_tensor_t *t);

/* Helpers the model loaders share. */
const char *sl_st_code(sl_dtype_t dt); /* "F32", "F16", "BF16", "I32", "I8" */
int sl_st_is_float(sl_dtype_t dt);     /* F32, F16 or BF16 */
/* "[4, 3]" into buf. */
const char *sl_st_fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape);
/* Element i of float data (F32/F16/BF16, little-endian, possibly unaligned), as f32. */
float sl_st_raw_f32(const unsigned char *p, sl_dtype_t dt, int64_t i);
/* Host copy of the block rows [r0, r0+nr) x cols [c0, c0+nc) of a float tensor's data viewed
 * as [*, ld] row-major, converted to dt (f32, f16 or bf16): how a TP rank takes its slice.
 * malloc'd; nr * nc * size(dt) bytes. */
void *sl_st_host_block(const sl_st_tensor_t *t, int64_t ld, int64_t r0, int64_t nr, int64_t c0,
                       int64_t nc, sl_dtype_t dt);

#endif
