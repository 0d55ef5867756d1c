/*
 * spec.h — the job specification: every `shardline run` option, from the command line and
 * from an INI job file whose keys are the long option names (top level or a [run] section).
 * The command line overrides the file. One option table drives getopt_long, the job-file
 * keys and --help, so the three cannot disagree.
 */
#ifndef SL_SPEC_H
#define SL_SPEC_H

#include <stdint.h>
#include <stdio.h>

#include "common/sl_error.h"

typedef struct {
    char *job_file;
    char *model;
    char **inputs; /* globs, in the order given */
    int n_inputs;
    char *input_dataset; /* NULL: the model family's default */
    char *output;
    char *task; /* auto | predict | embed | classify | score | generate */
    int tp;
    int64_t unit_rows;
    int64_t batch_size;
    char *device;         /* auto | cpu | cuda */
    char *comm;           /* auto | mpi | nccl: the TP all-reduce's transport (partition/comm.h) */
    char *precision;      /* auto | f32 | f16 | bf16 | int8 | w8a8 */
    int max_length;       /* bert, decoders: 0 = the model's */
    int64_t batch_tokens; /* bert, decoders: tokens per forward pass; 0: sl_job_batch_tokens */
    char *prompt_dataset; /* score: prompts whose continuation (the input dataset) is scored */
    int token_logprobs;   /* score: also write per-token log-probabilities */
    char *bos;            /* decoders: auto | always | never (prepend the BOS token) */
    char *chat_template;  /* decoders: none | auto | chatml | llama3 | llama2 | mistral */
    char *system;         /* decoders with a chat template: the system message; NULL: none */
    int max_new_tokens;   /* generate */
    double temperature;   /* generate: 0 = greedy */
    int top_k;            /* generate: 0 = off */
    double top_p;         /* generate: 1 = off */
    int64_t seed;         /* generate: row r samples with seed + r */
    char **stops;         /* generate: stop strings */
    int n_stops;
    int64_t text_bytes; /* generate: bytes of the fixed-length /text output; 0 = automatic */
    char *output_dtype; /* f32 | f16 */
    int array_task;     /* this task's index in a job array (-1: from SLURM_ARRAY_*, else 0) */
    int array_tasks;    /* tasks in the array (0: from SLURM_ARRAY_*, else 1) */
    char *schedule;     /* auto | dynamic | static */
    int prefetch;
    int restart;
    int quiet;
    int profile;       /* NVTX ranges (common/sl_profile.h) */
    char *log_format;  /* human | json: the stderr lines of `run` */
    char *calibration; /* w8a8: the calibration file; NULL: beside the model */
} sl_job_t;

/* Parses `shardline run` arguments (argv[0] is "run"). Returns 0 on success, 1 when --help
 * was printed (exit 0), -1 with a message on bad usage (exit SL_EXIT_USAGE). */
int sl_job_parse(sl_job_t *job, int argc, char **argv, sl_error_t *err);
void sl_job_free(sl_job_t *job);
void sl_job_print_help(FILE *out);
/* The same options as --help, as the OPTIONS section of a man page (roff). */
void sl_job_print_man(FILE *out);

/* The token budget of a forward pass: --batch-tokens, or where it is 0 (the default) 16384,
 * except for an encoder on the CPU backend (cpu_encoder != 0): 1024. Why: there the int8
 * GEMMs are fast enough that streaming a large batch's activations between layers through
 * memory costs more than they do (all-MiniLM-L6-v2, w8a8 dynamic, 2000 rows: compute 2.43 s
 * at 1024 against 2.80 s at 16384; f32 the same within 1%), while decoders read their weights
 * once per pass and GPUs want large ones. */
int64_t sl_job_batch_tokens(const sl_job_t *job, int cpu_encoder);

#endif
