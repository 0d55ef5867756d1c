/*
 * inspect_model.h — a human-readable summary of a model directory for `shardline inspect`:
 * architecture, parameter count and memory per tensor-parallel rank. Reads config.json and the
 * safetensors header only (no MPI, no backend, no weights copied).
 */
#ifndef SL_INSPECT_MODEL_H
#define SL_INSPECT_MODEL_H

#include <stdio.h>

#include "common/sl_error.h"

/* Prints the summary of the model in `dir` as split over tp_size ranks to `out`. Returns 0, or
 * -1 with a message naming the file, tensor or key at fault (nothing useful is printed then). */
int sl_inspect_model(const char *dir, int tp_size, FILE *out, sl_error_t *err);

/* 1 if path starts with the GGUF magic. */
int sl_inspect_is_gguf(const char *path);

/* `inspect` of a BERT-family directory: architecture, task (embed or classify with its
 * labels), pooling, tokenizer, maximum length, fingerprint, parameters per TP rank, and why a
 * --tp does not split it. Everything from the config files and the fingerprint. */
int sl_inspect_bert(const char *dir, int tp_size, FILE *out, sl_error_t *err);
/* Prints a summary of a GGUF file (architecture, hyperparameters, tokenizer, tensors by type;
 * ne are GGUF's dimensions, innermost first). 0, or -1 with a message naming the file. */
int sl_inspect_gguf(const char *path, FILE *out, sl_error_t *err);

#endif
