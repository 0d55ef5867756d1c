/*
 * weights.h — one read-only view of a model's tensors, whichever files hold them:
 *   - a Hugging Face directory: model.safetensors, or the shards that
 *     model.safetensors.index.json lists ("weight_map");
 *   - a GGUF file.
 * Tensors are seen as row-major arrays ([rows, cols] for a matrix; GGUF's innermost-first
 * dimensions are reversed here) and read as f32 blocks: a TP rank asks for the rows or columns
 * of its slice, and only those pages of the mapped files are touched (for quantised GGUF
 * tensors, only those rows are dequantised).
 */
#ifndef SL_WEIGHTS_H
#define SL_WEIGHTS_H

#include <stdint.h>

#include "common/sl_error.h"
#include "kernels/backend.h"
#include "models/formats/gguf.h"

typedef struct sl_weights sl_weights_t;

/* A directory (safetensors) or a .gguf file. NULL and a message naming the file on failure. */
sl_weights_t *sl_weights_open(const char *path, sl_error_t *err);
void sl_weights_close(sl_weights_t *w); /* NULL is fine */
/* The file messages should name: model.safetensors, the index, or the .gguf file. */
const char *sl_weights_where(const sl_weights_t *w);
/* The open GGUF file, or NULL for a safetensors directory. */
const sl_gguf_t *sl_weights_gguf(const sl_weights_t *w);

/* Whether tensor `name` exists. */
int sl_weights_has(const sl_weights_t *w, const char *name);
/* Its row-major shape (up to 8 dimensions) and whether shardline reads its type; -1 if absent. */
int sl_weights_shape(const sl_weights_t *w, const char *name, int *ndim, int64_t *shape,
                     int *readable);
/* Checks that `name` exists, is a float type shardline reads (F32/F16/BF16, or for GGUF also
 * Q8_0/Q4_0/Q4_1) and has the row-major shape [d0] (d1 = 0) or [d0, d1]; the error names the
 * file, the tensor and both shapes. */
int sl_weights_check(const sl_weights_t *w, const char *name, int64_t d0, int64_t d1,
                     sl_error_t *err);
/* Rows [r0, r0+nr) x columns [c0, c0+nc) of a checked tensor as f32, row-major, malloc'd (a 1-D
 * tensor is one row). NULL with err naming the tensor when it cannot be read. */
float *sl_weights_block(const sl_weights_t *w, const char *name, int64_t r0, int64_t nr, int64_t c0,
                        int64_t nc, sl_error_t *err);

/* Fails, naming where (the file), the tensor and the element [r0 + i / nc, c0 + i % nc], when the
 * block data[0 .. nr * nc) of dtype dt (f32, f16 or bf16) holds a NaN or an Inf. Every block
 * a loader reads from a file is checked (sl_weights_block does it). */
int sl_weights_check_finite(const char *where, const char *name, const void *data, sl_dtype_t dt,
                            int64_t r0, int64_t nr, int64_t c0, int64_t nc, sl_error_t *err);

/* The same for a block of quantized rows (Q8_0, Q4_0, Q4_1 as GGUF stores them, [nr rows,
 * nc / 32 blocks]): fails, naming the tensor, the row and the block's columns, when a block's
 * f16 scale (or Q4_1's minimum) is NaN or Inf. sl_weights_read checks every block it keeps. */
int sl_weights_check_qscales(const char *where, const char *name, const void *blocks, sl_dtype_t dt,
                             int64_t r0, int64_t nr, int64_t c0, int64_t nc, sl_error_t *err);

/* A load dtype: matrices a GGUF file stores as Q8_0, Q4_0 or Q4_1 stay in their blocks (a
 * quantized backend tensor, computed from as it is); every other tensor is read as f32. For a
 * safetensors directory it is f32. */
#define SL_WEIGHTS_AS_STORED ((sl_dtype_t)64)

/* A load dtype (--precision int8 and w8a8): the matrices of the linear layers are quantized on
 * load to Q8_0 blocks (sl_q8_0_quantize_rows: one f16 scale per 32 weights of a row) and
 * computed with int8 dot products; a matrix whose slice is not a whole number of 32-value
 * blocks stays f32, and so do vectors. Loaders pass it only for linear-layer matrices
 * (embedding tables stay f32). */
#define SL_WEIGHTS_INT8 ((sl_dtype_t)65)

/* A host f32 matrix [nr, nc] uploaded as Q8_0 blocks when nc is a multiple of 32 (and packed,
 * sl_tensor_pack), else as f32. */
sl_tensor_t *sl_upload_int8(sl_backend_t *be, const float *h, int64_t nr, int64_t nc);

/* ---- what was loaded: a list of the tensors the loaders uploaded, with their names --------
 * For the per-layer precision in report.json and `inspect --precision`, and for W8A8's
 * calibrated scales (looked up by weight name). Process-wide; sl_wlog_reset() before a load
 * (the list only points at the tensors: it is valid while the model is loaded). */
typedef struct {
    char name[160]; /* the tensor's name in the file ("+" joins fused tensors) */
    sl_tensor_t *t; /* as uploaded: dtype, shape (this rank's slice), bytes */
    int64_t c0;     /* a matrix: the first column of the file's tensor in this slice */
} sl_wlog_entry_t;
void sl_wlog_reset(void);
void sl_wlog_add(const char *name, sl_tensor_t *t);
void sl_wlog_add_slice(const char *name, sl_tensor_t *t, int64_t c0);
int sl_wlog_count(void);
sl_wlog_entry_t *sl_wlog_get(int i);

/* The arguments every loader checks first: a float weight dtype (f32, f16, bf16,
 * SL_WEIGHTS_AS_STORED or SL_WEIGHTS_INT8) and a TP position 0 <= tp_rank < tp_size; the message
 * names the model path. */
int sl_weights_load_args(const char *path, sl_dtype_t dtype, int tp_size, int tp_rank,
                         sl_error_t *err);

/* A host f32 block uploaded as a backend tensor [nr, nc] (or [nc] when nr == 0) in dtype dt
 * (converted on the backend, rounding to nearest even). */
sl_tensor_t *sl_upload_f32(sl_backend_t *be, const float *h, int64_t nr, int64_t nc, sl_dtype_t dt);

/* The dtype a matrix keeps when loaded with SL_WEIGHTS_AS_STORED: SL_Q8_0/Q4_0/Q4_1 or one of
 * the types held only packed (sl_dtype_packed_only: Q5_0/Q5_1/Q4_K/Q5_K/Q6_K) for a GGUF tensor
 * of that type, else SL_F32. The packed-only ones are kept only where sl_weights_keep says so. */
sl_dtype_t sl_weights_stored_dtype(const sl_weights_t *w, const char *name);

/* Whether a matrix is a GGUF tensor in a block-quantized type that may not be kept as stored
 * (Q2_K and Q3_K always; the packed-only types where sl_weights_keep refuses them): with
 * SL_WEIGHTS_AS_STORED it is then dequantised and quantized again to Q8_0 on load
 * (sl_upload_int8), 8.5 bits per weight instead of f32's 32. */
int sl_weights_requantized(const sl_weights_t *w, const char *name);

/* sl_weights_read's keep flags: Q8_0/Q4_0/Q4_1 as stored; the packed-only types as stored
 * too. */
#define SL_KEEP_BLOCKS 1
#define SL_KEEP_PACKED 2
/* The keep flags for rows [*, nr) x columns [c0, c0 + nc) of a matrix uploaded to be on backend be:
 * SL_KEEP_BLOCKS, with SL_KEEP_PACKED when the matrix is of a packed-only type, the slice is
 * whole blocks and be packs an [nr, nc] matrix of that type (sl_backend_packs; the CPU, for nr a
 * multiple of 16). The caller packs such a matrix once uploaded (sl_tensor_pack). */
int sl_weights_keep(const sl_weights_t *w, sl_backend_t *be, const char *name, int64_t nr,
                    int64_t c0, int64_t nc);

/* Rows [r0, r0+nr) x columns [c0, c0+nc) of a checked matrix in host memory, malloc'd, row-major:
 * as f32 (*dt = SL_F32), or, when keep holds SL_KEEP_BLOCKS and the tensor is stored quantized
 * (see sl_weights_stored_dtype), as its raw blocks (*dt = SL_Q8_0/Q4_0/Q4_1, nc / 32 blocks a
 * row; the packed-only types only with SL_KEEP_PACKED too, nc / 256 super-blocks or nc / 32
 * blocks a row). A quantized slice
 * must start and end on whole blocks: otherwise NULL with err naming the tensor and the column.
 * NULL with err when the tensor cannot be read. */
void *sl_weights_read(const sl_weights_t *w, const char *name, int64_t r0, int64_t nr, int64_t c0,
                      int64_t nc, int keep, sl_dtype_t *dt, sl_error_t *err);

/* Rewrites n rows of row_bytes bytes each in place (e.g. un-permuting rows), whatever their
 * element type. */
typedef void (*sl_weights_rows_fn)(void *rows, int64_t n, size_t row_bytes, void *ctx);

/* A checked tensor's block (as sl_weights_block) uploaded to the backend in dtype dt: a
 * [nr, nc] matrix, or, when vector is set, the [nc] slice of a 1-D tensor (nr ignored). With
 * dt = SL_WEIGHTS_AS_STORED a Q8_0/Q4_0/Q4_1 GGUF matrix stays quantized (sl_weights_read), so
 * does a packed-only one where sl_weights_keep allows (packed at once), one in another quantized
 * type becomes Q8_0 (sl_weights_requantized), anything else f32. rows_fn,
 * when not NULL, rewrites the block's rows in place first. NULL with err when the tensor cannot be
 * read. */
sl_tensor_t *sl_weights_upload(const sl_weights_t *w, sl_backend_t *be, const char *name,
                               int64_t r0, int64_t nr, int64_t c0, int64_t nc, int vector,
                               sl_dtype_t dt, sl_weights_rows_fn rows_fn, void *ctx,
                               sl_error_t *err);

#endif
