/*
 * spec.c — option table, command-line and job-file parsing for `shardline run`.
 */
#include "jobs/spec.h"

#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "models/tokenizers/chat_template.h"

typedef enum { K_STR, K_INT, K_I64, K_BOOL, K_LIST, K_F64 } kind_t;

typedef struct {
    const char *name;
    kind_t kind;
    const char *metavar;
    const char *def; /* default as text, NULL if required/none */
    const char *help;
    size_t offset;
    /* Numbers: the accepted range, checked at parse time. Every size the program computes from
     * an option (buffers of batch-size x features, unit-rows x output widths, text-bytes per
     * row, ...) stays far below 2^63 within these bounds, so no product can wrap around; they
     * are documented in README.md's options table and printed by --help. */
    int64_t min, max;
} opt_t;

#define OFF(f) offsetof(sl_job_t, f)
/* The bounds of the size options (see opt_t.max). */
#define SL_MAX_UNIT_ROWS (INT64_C(1) << 30)
#define SL_MAX_BATCH_SIZE (INT64_C(1) << 20)
#define SL_MAX_TOKENS (INT64_C(1) << 20)
#define SL_MAX_BATCH_TOKENS (INT64_C(1) << 24)
#define SL_MAX_VOCAB (INT64_C(1) << 24)
#define SL_MAX_TEXT_BYTES (INT64_C(1) << 24)
#define SL_MAX_ARRAY_TASKS (INT64_C(1) << 20)
/* One line per option (clang-format would break them up). */
// clang-format off
static const opt_t options[] = {
    {"model", K_STR, "DIR|FILE.gguf", NULL, "model directory (config.json + model.safetensors) or a GGUF file (LLaMA family)", OFF(model), 0, 0},
    {"input", K_LIST, "GLOB", NULL, "HDF5 input files; repeatable; sorted by path", OFF(inputs), 0, 0},
    {"input-dataset", K_STR, "NAME", NULL, "dataset in each input: features [rows, d0] for mlp; text [rows] or token ids [rows, L] for bert and decoders (the prompts for generate) [default: features, or text]", OFF(input_dataset), 0, 0},
    {"prompt-dataset", K_STR, "NAME", NULL, "score: a text dataset of prompts; only the continuation (the input dataset) is scored [default: none, the whole text is scored]", OFF(prompt_dataset), 0, 0},
    {"output", K_STR, "DIR", NULL, "output directory (created)", OFF(output), 0, 0},
    {"task", K_STR, "auto|predict|embed|classify|score|generate", "auto", "what to compute: predict (mlp), embed or classify (bert), score or generate (decoders); auto picks by model (decoders: score)", OFF(task), 0, 0},
    {"tp", K_INT, "N", "1", "tensor-parallel group size; must divide the number of ranks", OFF(tp), 1, 1024},
    {"unit-rows", K_I64, "N", "65536", "rows per unit of work (the commit granularity)", OFF(unit_rows), 1, SL_MAX_UNIT_ROWS},
    {"batch-size", K_I64, "N", "1024", "rows per forward pass", OFF(batch_size), 1, SL_MAX_BATCH_SIZE},
    {"device", K_STR, "auto|cpu|cuda", "auto", "auto: CUDA when a GPU is visible, else CPU", OFF(device), 0, 0},
    {"comm", K_STR, "auto|mpi|nccl", "auto", "TP all-reduce: nccl (CUDA, every rank of a TP group on its own GPU), mpi (through host memory; works with several ranks on one GPU); auto: nccl when every rank of the group has its own GPU, else mpi (the CPU backend always uses MPI)", OFF(comm), 0, 0},
    {"precision", K_STR, "auto|f32|f16|bf16|int8|w8a8", "auto", "weight and GEMM precision (f32 accumulation); auto: a GGUF's Q8_0/Q4_0/Q4_1 matrices stay quantized, and its Q5_0/Q5_1/Q4_K/Q5_K/Q6_K ones on the CPU (there, scored tokens meet dequantised f32 tiles, generation int8 activations in an integer GEMM; other quantized types become Q8_0), everything else f32; int8: the linear layers' matrices are quantized on load to int8 (one scale per 32 weights of a row, Q8_0 blocks) and used as auto uses a GGUF's (embeddings, norms, biases stay f32); w8a8: the same weights, every row's activations quantized to int8 with the static ranges (per 32 input columns of each layer) of --calibration, or with --calibration dynamic each 32 values' own max (mlp, bert, decoders)", OFF(precision), 0, 0},
    {"calibration", K_STR, "FILE|dynamic", NULL, "--precision w8a8: the activation scales written by `shardline calibrate` for this model [default: MODEL/shardline-calibration.safetensors; a GGUF file: FILE.shardline-calibration.safetensors beside it]; dynamic: no file, each row's activations quantized per 32 values with their own max (the most accurate w8a8, no calibration run; on CUDA such rows stay f32)", OFF(calibration), 0, 0},
    {"max-length", K_INT, "N", "0", "bert: tokens per row incl. [CLS]/[SEP]; score: tokens per row; generate: prompt + new tokens (longer rows are truncated when scoring or embedding, refused as row errors when generating); 0: the model's", OFF(max_length), 0, SL_MAX_TOKENS},
    {"batch-tokens", K_I64, "N", "0", "bert, decoders: real (unpadded) tokens per forward pass; a unit's rows are sorted by length and packed; 0: 1024 for bert on the CPU (a layer's activations stay in cache), else 16384", OFF(batch_tokens), 0, SL_MAX_BATCH_TOKENS},
    {"bos", K_STR, "auto|always|never", "auto", "decoders: special tokens around each row's text: as the tokenizer file says (auto), a BOS token first and nothing else (always; as transformers' GGUF tokenizer does), or none (never)", OFF(bos), 0, 0},
    {"chat-template", K_STR, SL_CHAT_CHOICES, "none", "decoders: each row is the user message of a conversation in the model's chat template (auto: the GGUF's tokenizer.chat_template or tokenizer_config.json's; or a form by name), ending with the assistant's turn; generate, and score with --prompt-dataset (the prompt row is the user message, the input row the scored reply); none: the row is the text. With a template, --bos auto gives the ids of transformers' apply_chat_template, always puts a BOS first unless the template wrote one, never drops it", OFF(chat_template), 0, 0},
    {"system", K_STR, "TEXT", NULL, "decoders with --chat-template: the system message (\"\": none; the template's default system message, if it has one, is used then) [default: none]", OFF(system), 0, 0},
    {"token-logprobs", K_BOOL, NULL, NULL, "score: also write /token_logprobs [rows, max-length] (NaN-padded) and, beside them, the token ids /token_ids [rows, max-length] (int32, -1-padded)", OFF(token_logprobs), 0, 0},
    {"max-new-tokens", K_INT, "N", "64", "generate: tokens to generate per row at most", OFF(max_new_tokens), 1, SL_MAX_TOKENS},
    {"temperature", K_F64, "X", "0", "generate: sampling temperature; 0 is greedy", OFF(temperature), 0, 100},
    {"top-k", K_INT, "N", "0", "generate: sample among the N most likely tokens; 0: all", OFF(top_k), 0, SL_MAX_VOCAB},
    {"top-p", K_F64, "X", "1", "generate: sample from the smallest set of tokens whose probability reaches X", OFF(top_p), 0, 1},
    {"seed", K_I64, "N", "0", "generate: row r samples with its own generator seeded by N and r (results do not depend on batching or ranks)", OFF(seed), 0, INT64_MAX},
    {"stop", K_LIST, "STRING", NULL, "generate: stop when the generated text contains STRING (repeatable, not empty; the text ends before it) [default: none]", OFF(stops), 0, 0},
    {"text-bytes", K_I64, "N", "0", "generate: the most bytes per row of /text (variable-length UTF-8; longer texts are cut at a character boundary, /tokens holds them whole); 0: 8 x max-new-tokens + 64", OFF(text_bytes), 0, SL_MAX_TEXT_BYTES},
    {"output-dtype", K_STR, "f32|f16", "f32", "storage type of float outputs", OFF(output_dtype), 0, 0},
    {"array-task", K_INT, "N", NULL, "index of this task in a job array: it computes units i with i % tasks == N [default: from SLURM_ARRAY_TASK_ID, else 0]", OFF(array_task), 0, SL_MAX_ARRAY_TASKS - 1},
    {"array-tasks", K_INT, "N", NULL, "number of tasks in the job array [default: from SLURM_ARRAY_TASK_MIN/MAX/STEP, else 1]", OFF(array_tasks), 1, SL_MAX_ARRAY_TASKS},
    {"schedule", K_STR, "auto|dynamic|static", "auto", "unit hand-out: dynamic (shared counter; one node) or static (fixed interleaved shares); auto: dynamic on one node", OFF(schedule), 0, 0},
    {"prefetch", K_INT, "N", "2", "batches read ahead by the I/O thread", OFF(prefetch), 1, 64},
    {"restart", K_BOOL, NULL, NULL, "ignore earlier outputs and start again; also lets a job replace another job's output", OFF(restart), 0, 0},
    {"quiet", K_BOOL, NULL, NULL, "no progress lines", OFF(quiet), 0, 0},
    {"profile", K_BOOL, NULL, NULL, "NVTX ranges (read, tokenize, H2D, each layer, all-reduce, D2H, write) for Nsight Systems: nsys profile ... shardline run --profile; CUDA builds only, accepted and without effect elsewhere", OFF(profile), 0, 0},
    {"log-format", K_STR, "human|json", "human", "stderr: lines of text, or one JSON object per line with an \"event\" member (start, placement, progress, unit_committed, row_error, log, error, done: the final summary with stage times)", OFF(log_format), 0, 0},
};
// clang-format on
#define N_OPTIONS ((int)(sizeof options / sizeof options[0]))

void sl_job_print_help(FILE *out)
{
    fprintf(out, "usage: shardline run [JOB.ini] [options]\n\n"
                 "Runs a model over HDF5 shards; launch under mpirun/srun for several ranks.\n"
                 "Every option may also be a key of the INI job file (top level or [run]);\n"
                 "the command line overrides the file.\n\noptions:\n");
    for (int i = 0; i < N_OPTIONS; i++) {
        const opt_t *o = &options[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(out, "  %-30s %s", left, o->help);
        if (o->def)
            fprintf(out, " [default: %s]", o->def);
        else if (o->kind != K_BOOL && strstr(o->help, "[default") == NULL)
            fprintf(out, " (required)");
        if (o->kind == K_INT || o->kind == K_I64 || o->kind == K_F64)
            fprintf(out, " [range: %lld..%lld]", (long long)o->min, (long long)o->max);
        fputc('\n', out);
    }
    fprintf(out, "  %-30s %s\n", "-h, --help", "show this help");
    fprintf(out, "\nexit status: 0 done; 1 failure; 2 usage; 3 bad input; 4 some rows failed;\n"
                 "5 stopped by a signal (rerun the same command to resume).\n");
}

/* Text for roff: backslashes escaped, hyphens as \- (so that "--name" can be searched and
 * copied), a leading dot or quote made literal. */
static void roff_text(FILE *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", out);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else
            fputc(*s, out);
    }
}

void sl_job_print_man(FILE *out)
{
    fputs(".SH OPTIONS OF shardline run\n"
          "Every option may also be a key of the INI job file (top level or [run]); the command "
          "line overrides the file.\n",
          out);
    for (int i = 0; i < N_OPTIONS; i++) {
        const opt_t *o = &options[i];
        fputs(".TP\n.B ", out);
        roff_text(out, "--");
        roff_text(out, o->name);
        if (o->metavar) {
            fputs(" \"", out);
            roff_text(out, o->metavar);
            fputs("\"", out);
        }
        fputc('\n', out);
        roff_text(out, o->help);
        if (o->def) {
            fputs(" [default: ", out);
            roff_text(out, o->def);
            fputc(']', out);
        } else if (o->kind != K_BOOL && strstr(o->help, "[default") == NULL) {
            fputs(" (required)", out);
        }
        if (o->kind == K_INT || o->kind == K_I64 || o->kind == K_F64)
            fprintf(out, " [range: %lld..%lld]", (long long)o->min, (long long)o->max);
        fputc('\n', out);
    }
}

static const opt_t *find_option(const char *name)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (!strcmp(options[i].name, name))
            return &options[i];
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    if (!v || !strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
        !strcasecmp(v, "on")) {
        *out = 1;
        return 0;
    }
    if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
        !strcasecmp(v, "off")) {
        *out = 0;
        return 0;
    }
    return -1;
}

/* Applies one option value. `where` says where it came from, for messages. */
static int set_option(sl_job_t *job, const opt_t *o, const char *value, const char *where,
                      sl_error_t *err)
{
    char *field = (char *)job + o->offset;
    switch (o->kind) {
    case K_STR:
        free(*(char **)field);
        *(char **)field = sl_xstrdup(value);
        return 0;
    case K_LIST: {
        /* An empty stop string is found at offset 0 of every text: each row would stop before
         * its first token. */
        if (o->offset == OFF(stops) && value[0] == '\0')
            return sl_errorf(err, "%s: --stop: an empty string (it would stop every row at once)",
                             where);
        char ***list = (char ***)field;
        int *n = o->offset == OFF(inputs) ? &job->n_inputs : &job->n_stops;
        *list = sl_xrealloc(*list, (size_t)(*n + 1) * sizeof(char *));
        (*list)[(*n)++] = sl_xstrdup(value);
        return 0;
    }
    case K_F64: {
        char *end = NULL;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end != '\0' || !(v >= (double)o->min) || v > (double)o->max)
            return sl_errorf(err, "%s: --%s: '%s' is not a number in [%lld, %lld]", where, o->name,
                             value, (long long)o->min, (long long)o->max);
        *(double *)field = v;
        return 0;
    }
    case K_BOOL: {
        int b;
        if (parse_bool(value, &b) != 0)
            return sl_errorf(err, "%s: --%s: '%s' is not a boolean (true/false)", where, o->name,
                             value);
        *(int *)field = b;
        return 0;
    }
    case K_INT:
    case K_I64: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end != '\0')
            return sl_errorf(err, "%s: --%s: '%s' is not an integer", where, o->name, value);
        if ((errno == ERANGE && v > 0) || v > o->max)
            return sl_errorf(err, "%s: --%s %s: above the maximum %lld", where, o->name, value,
                             (long long)o->max);
        if (errno == ERANGE || v < o->min)
            return sl_errorf(err, "%s: --%s %s: below the minimum %lld", where, o->name, value,
                             (long long)o->min);
        if (o->kind == K_INT)
            *(int *)field = (int)v; /* every K_INT bound is below INT_MAX */
        else
            *(int64_t *)field = v;
        return 0;
    }
    }
    return 0;
}

typedef struct {
    sl_job_t *job;
    sl_error_t *err;
    int failed;
} ini_ctx_t;

static int on_ini_key(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx_t *c = user;
    if (c->failed)
        return 0;
    char where[1100];
    snprintf(where, sizeof where, "%s", c->job->job_file);
    if (section[0] && strcmp(section, "run") != 0) {
        sl_errorf(c->err, "%s: section [%s]: unknown (keys go at the top level or under [run])",
                  where, section);
        c->failed = 1;
        return 0;
    }
    const opt_t *o = find_option(name);
    if (!o) {
        sl_errorf(c->err, "%s: key '%s': not a shardline run option (see shardline run --help)",
                  where, name);
        c->failed = 1;
        return 0;
    }
    if (set_option(c->job, o, value, where, c->err) != 0) {
        c->failed = 1;
        return 0;
    }
    return 1;
}

static void set_defaults(sl_job_t *job)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (options[i].def)
            set_option(job, &options[i], options[i].def, "default", NULL);
}

/* A Slurm array's task index and count, from SLURM_ARRAY_TASK_{ID,MIN,MAX,STEP} (the index
 * is the task's position in the array, so --array=3-9:2 gives tasks 0..3). */
static int env_int(const char *name, long *out)
{
    const char *v = getenv(name);
    char *end;
    if (!v || !*v)
        return 0;
    *out = strtol(v, &end, 10);
    return *end == '\0';
}

static int resolve_array(sl_job_t *job, sl_error_t *err)
{
    long id, mn, mx, step = 1;
    int slurm = env_int("SLURM_ARRAY_TASK_ID", &id) && env_int("SLURM_ARRAY_TASK_MIN", &mn) &&
                env_int("SLURM_ARRAY_TASK_MAX", &mx);
    env_int("SLURM_ARRAY_TASK_STEP", &step);
    if (step < 1)
        step = 1;
    if (job->array_tasks == 0)
        job->array_tasks = slurm ? (int)((mx - mn) / step + 1) : 1;
    if (job->array_task < 0)
        job->array_task = slurm ? (int)((id - mn) / step) : 0;
    if (job->array_task >= job->array_tasks)
        return sl_errorf(err, "--array-task %d: must be below --array-tasks %d", job->array_task,
                         job->array_tasks);
    return 0;
}

int sl_job_parse(sl_job_t *job, int argc, char **argv, sl_error_t *err)
{
    memset(job, 0, sizeof *job);
    set_defaults(job);    /* then the job file, then the command line, each overriding */
    job->array_task = -1; /* "not given": resolved from Slurm's environment below */
    struct option longopts[N_OPTIONS + 2];
    for (int i = 0; i < N_OPTIONS; i++) {
        longopts[i].name = options[i].name;
        longopts[i].has_arg = options[i].kind == K_BOOL ? no_argument : required_argument;
        longopts[i].flag = NULL;
        longopts[i].val = 1000 + i;
    }
    longopts[N_OPTIONS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[N_OPTIONS + 1] = (struct option){0, 0, 0, 0};

    /* First pass: collect the command line, so the job file can be applied underneath it. */
    int *which = sl_xcalloc((size_t)argc + 1, sizeof(int));
    char **vals = sl_xcalloc((size_t)argc + 1, sizeof(char *));
    int n = 0, rc = 0;
    optind = 1;
    opterr = 0;
    for (;;) {
        int idx = 0;
        int c = getopt_long(argc, argv, ":h", longopts, &idx);
        if (c == -1)
            break;
        if (c == 'h') {
            sl_job_print_help(stdout);
            rc = 1;
            goto done;
        }
        if (c == '?') {
            rc = sl_errorf(err, "unknown option '%s' (see shardline run --help)", argv[optind - 1]);
            goto done;
        }
        if (c == ':') {
            rc = sl_errorf(err, "option '%s' needs a value", argv[optind - 1]);
            goto done;
        }
        which[n] = c - 1000;
        vals[n] = optarg;
        n++;
    }
    if (optind < argc)
        job->job_file = sl_xstrdup(argv[optind++]);
    if (optind < argc) {
        rc = sl_errorf(err, "unexpected argument '%s' (one job file at most)", argv[optind]);
        goto done;
    }
    if (job->job_file) {
        ini_ctx_t ctx = {job, err, 0};
        int r = ini_parse(job->job_file, on_ini_key, &ctx);
        if (r == -1) {
            rc = sl_errorf(err, "%s: cannot open the job file", job->job_file);
            goto done;
        }
        if (ctx.failed) {
            rc = -1;
            goto done;
        }
        if (r > 0) {
            rc = sl_errorf(err, "%s: line %d: not a 'key = value' line", job->job_file, r);
            goto done;
        }
    }
    int cli_inputs = 0, cli_stops = 0;
    for (int i = 0; i < n; i++) {
        const opt_t *o = &options[which[i]];
        /* a list given on the command line replaces the job file's */
        int is_inputs = o->offset == OFF(inputs);
        if (o->kind == K_LIST && !(is_inputs ? cli_inputs++ : cli_stops++)) {
            char **list = is_inputs ? job->inputs : job->stops;
            int *cnt = is_inputs ? &job->n_inputs : &job->n_stops;
            for (int j = 0; j < *cnt; j++)
                free(list[j]);
            *cnt = 0;
        }
        if (set_option(job, o, vals[i], "command line", err) != 0) {
            rc = -1;
            goto done;
        }
    }
    if (!job->model)
        rc = sl_errorf(err, "--model is required (see shardline run --help)");
    else if (job->n_inputs == 0)
        rc = sl_errorf(err, "--input is required (see shardline run --help)");
    else if (!job->output)
        rc = sl_errorf(err, "--output is required (see shardline run --help)");
    else if (strcmp(job->device, "auto") && strcmp(job->device, "cpu") &&
             strcmp(job->device, "cuda"))
        rc = sl_errorf(err, "--device '%s': expected auto, cpu or cuda", job->device);
    else if (strcmp(job->comm, "auto") && strcmp(job->comm, "mpi") && strcmp(job->comm, "nccl"))
        rc = sl_errorf(err, "--comm '%s': expected auto, mpi or nccl", job->comm);
    else if (strcmp(job->precision, "auto") && strcmp(job->precision, "f32") &&
             strcmp(job->precision, "f16") && strcmp(job->precision, "bf16") &&
             strcmp(job->precision, "int8") && strcmp(job->precision, "w8a8"))
        rc = sl_errorf(err, "--precision '%s': expected auto, f32, f16, bf16, int8 or w8a8",
                       job->precision);
    else if (job->calibration && strcmp(job->precision, "w8a8"))
        rc = sl_errorf(err, "--calibration is only used with --precision w8a8 (not %s)",
                       job->precision);
    else if (strcmp(job->task, "auto") && strcmp(job->task, "predict") &&
             strcmp(job->task, "embed") && strcmp(job->task, "classify") &&
             strcmp(job->task, "score") && strcmp(job->task, "generate"))
        rc = sl_errorf(err,
                       "--task '%s': expected auto, predict, embed, classify, score or generate",
                       job->task);
    else if (strcmp(job->bos, "auto") && strcmp(job->bos, "always") && strcmp(job->bos, "never"))
        rc = sl_errorf(err, "--bos '%s': expected auto, always or never", job->bos);
    else if (!sl_chat_name_valid(job->chat_template))
        rc = sl_errorf(err, "--chat-template '%s': expected %s", job->chat_template,
                       SL_CHAT_CHOICES);
    else if (!(job->top_p > 0 && job->top_p <= 1))
        rc = sl_errorf(err, "--top-p %g: expected a number in (0, 1]", job->top_p);
    else if (strcmp(job->output_dtype, "f32") && strcmp(job->output_dtype, "f16"))
        rc = sl_errorf(err, "--output-dtype '%s': expected f32 or f16", job->output_dtype);
    else if (strcmp(job->schedule, "auto") && strcmp(job->schedule, "dynamic") &&
             strcmp(job->schedule, "static"))
        rc = sl_errorf(err, "--schedule '%s': expected auto, dynamic or static", job->schedule);
    else if (strcmp(job->log_format, "human") && strcmp(job->log_format, "json"))
        rc = sl_errorf(err, "--log-format '%s': expected human or json", job->log_format);
    else
        rc = resolve_array(job, err);
done:
    free(which);
    free(vals);
    return rc;
}

void sl_job_free(sl_job_t *job)
{
    free(job->job_file);
    free(job->model);
    for (int i = 0; i < job->n_inputs; i++)
        free(job->inputs[i]);
    free(job->inputs);
    free(job->input_dataset);
    free(job->prompt_dataset);
    free(job->bos);
    free(job->chat_template);
    free(job->system);
    for (int i = 0; i < job->n_stops; i++)
        free(job->stops[i]);
    free(job->stops);
    free(job->output);
    free(job->device);
    free(job->comm);
    free(job->precision);
    free(job->calibration);
    free(job->task);
    free(job->output_dtype);
    free(job->schedule);
    free(job->log_format);
    memset(job, 0, sizeof *job);
}

int64_t sl_job_batch_tokens(const sl_job_t *job, int cpu_encoder)
{
    return job->batch_tokens > 0 ? job->batch_tokens : cpu_encoder ? 1024 : 16384;
}
