/*
 * fingerprint.h — the identity of a model directory, for part files and resume: a hash of the
 * names and bytes of every file that defines the model (*.json, *.safetensors, and the
 * config.json of sentence-transformers module folders such as 1_Pooling/), in name order.
 * The runner, `inspect` and the manifest all use this one value.
 */
#ifndef SL_FINGERPRINT_H
#define SL_FINGERPRINT_H

#include <stdint.h>

#include "common/sl_error.h"

/* Fails naming the file when dir has no readable config.json, or a file cannot be read. */
int sl_model_fingerprint(const char *dir, uint64_t *out, sl_error_t *err);

#endif
