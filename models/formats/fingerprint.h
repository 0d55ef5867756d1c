/*
 * fingerprint.h — the identity of a model directory, for part files and resume: a hash of the
 * names and bytes of every file that defines the model (*.json, *.safetensors, and the
 * config.json of sentence-transformers module folders such as 1_Pooling/), in name order,
 * leaving out calibration files (*shardline-calibration.safetensors, models/calib.h); of a
 * single-file model (GGUF), the file's name and bytes. The runner, `inspect`, the manifest and
 * the calibration file all use this one value.
 */
#ifndef SL_FINGERPRINT_H
#define SL_FINGERPRINT_H

#include <stdint.h>

#include "common/sl_error.h"

/* Fails naming the file when dir has no readable config.json, or a file cannot be read. */
int sl_model_fingerprint(const char *dir, uint64_t *out, sl_error_t *err);

#endif
