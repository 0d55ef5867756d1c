/*
 * calib.h — what --precision int8 and w8a8 need beyond the loaders: a summary of the tensors a
 * load uploaded (their precision and bytes, for report.json and `inspect --precision`), the
 * recording of each linear layer's input range while a model runs in f32 (`shardline
 * calibrate`), and the calibration file that carries those ranges to a W8A8 run.
 *
 * The calibration file is a safetensors file (by default MODEL/shardline-calibration.safetensors,
 * which the model fingerprint ignores; for a GGUF file, FILE.shardline-calibration.safetensors
 * beside it, runner/batching.h): one F32 tensor [K] per linear layer of input width K, named
 * after the layer's weight, holding the range c[j] of each input column (the largest |x| seen,
 * or with --method percentile at most the layer's percentile of |x|; 0 for a matrix
 * calibration never reached, such as an unused pooler or the embedding tables; a decoder whose
 * LM head is tied to its embedding records the head's input under the embedding's name), and
 * __metadata__ entries: format "shardline-calibration", model_fingerprint (16 hex digits,
 * models/formats/fingerprint.h), method, percentile, rows. A W8A8 run quantizes the columns 32j ..
 * 32j + 31 of a layer's input with the static step max(c[32j ..]) / 127 (a row's block whose
 * own max is larger takes its own step instead of saturating; a block whose range is 0 takes
 * its own max from each row, as int8 does): static
 * scales per block of 32 input columns, so that BERT's few outlier channels do not coarsen the
 * step of every other column.
 */
#ifndef SL_CALIB_H
#define SL_CALIB_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "common/sl_error.h"

#define SL_CALIB_FILE "shardline-calibration.safetensors"

/* The loaded tensors (sl_wlog_*, models/formats/weights.h) as JSON: {"weight_bytes", "matrices":
 * {dtype: count}, "vectors": {"count", "bytes"}, "layers": [{"name", "dtype", "shape",
 * "bytes"[, "act_absmax"]}]} (matrices only in "layers"; this rank's slices). */
cJSON *sl_wlog_json(void);
/* The same as a table for `inspect`. */
void sl_wlog_print(FILE *out);

/* ---- recording (calibrate) ------------------------------------------------------------------ */

typedef enum { SL_CALIB_MAX = 0, SL_CALIB_PERCENTILE = 1 } sl_calib_method_t;

/* Starts recording the inputs of every sl_linear whose weight is in the loaded-tensor list
 * (sl_linear_set_observer; CPU backend, one thread calls sl_linear). */
void sl_calib_record_start(void);
/* Stops recording; for each recorded matrix, in load order: names[i] (pointing into the
 * loaded-tensor list), the layer's clip value clip[i] (method max: the largest |x| seen;
 * percentile p: the p-th percentile of |x| over every input value, from a histogram with 64
 * bins per octave, at most the maximum) and its columns' ranges cols[i] [ncols[i]] (each
 * column's largest |x|, at most clip[i]); a matrix no input reached (an unused pooler; the
 * embedding tables) gets zeros. Returns the count (0 when no layer saw an input); the arrays
 * and each cols[i] are malloc'd. */
int sl_calib_record_finish(sl_calib_method_t method, double p, const char ***names, float **clip,
                           float ***cols, int64_t **ncols, int64_t *values_seen);

/* Writes the calibration file (through a temporary file renamed into place). */
int sl_calib_write(const char *path, uint64_t model_fp, const char *method, double p, int64_t rows,
                   int n, const char *const *names, float *const *cols, const int64_t *ncols,
                   sl_error_t *err);

/* --precision w8a8: reads `path`, checks that it was written for the model in model_dir (its
 * fingerprint) and sets act_scales of every quantized matrix in the loaded-tensor list from the
 * tensor of the same name (the columns of this rank's slice). Fails naming the file and the
 * tensor (missing, not F32 [K], or holding a negative or non-finite value) or the two
 * fingerprints. */
int sl_calib_apply(const char *path, const char *model_dir, sl_error_t *err);

/* --precision w8a8 --calibration dynamic: gives every quantized matrix in the loaded-tensor
 * list act_scales of zeros, so that every row's activations are quantized to int8 with each
 * 32-value block's own max (on the CPU; CUDA keeps such rows in f32). */
void sl_calib_apply_dynamic(void);

#endif
