/*
 * prune.c — `shardline prune` (see prune.h). Steps:
 *   1. run the encoder (CPU, one process) over the first --rows rows of the calibration inputs,
 *      summing per layer the |values| of each head's attention context and of each FFN
 *      intermediate column after GELU (sl_bert_set_stats);
 *   2. importance, per layer l:
 *        head h:   mean |ctx_h| over tokens and the head's head_dim values
 *                  x ||W_O[:, h*Dh:(h+1)*Dh]||_F   (attention.output.dense columns of h)
 *        column j: mean |gelu(inter_j)| over tokens x ||W_2[:, j]||_2   (output.dense column j)
 *      i.e. how large what the unit feeds into the residual stream is on real inputs;
 *   3. remove the same number of least important heads in every layer (transformers needs one
 *      head count; the removed ones are listed per layer in config.json's `pruned_heads`,
 *      which transformers' from_pretrained applies before loading) and the same number of
 *      least important FFN columns (`intermediate_size`); both kept counts are multiples of
 *      --keep-divisible-by, so the model still splits over --tp of that size;
 *   4. write the directory: config.json with the new sizes, model.safetensors with the kept
 *      rows/columns of q/k/v, attention.output.dense, intermediate.dense and output.dense
 *      (bytes copied in the file's dtype, other tensors as they are), every other file of the
 *      model (tokenizer, sentence-transformers modules) copied; written under a temporary
 *      name and renamed, so a directory that exists is complete;
 *   5. load the pruned model and report its size, the speed of both models over the
 *      calibration rows and the agreement of their embeddings (cosine, through the compare
 *      code: sl_compare_rows).
 */
#include "cli/prune.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/sl_error.h"
#include "common/sl_fs.h"
#include "common/sl_json.h"
#include "jobs/h5util.h"
#include "jobs/input.h"
#include "kernels/backend.h"
#include "models/bert.h"
#include "models/formats/safetensors.h"
#include "models/tokenizers/wordpiece.h"
#include "cli/compare.h"

#define MAX_CALIB 64
#define CALIB_BATCH 64

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: shardline prune --model DIR --heads F --ffn F --calib GLOB --output DIR\n"
        "                       [--input-dataset NAME] [--rows N] [--keep-divisible-by N]\n\n"
        "Structured pruning of a BERT-family encoder (safetensors directory): removes the\n"
        "fraction F of attention heads of every layer and the fraction F of FFN columns of\n"
        "every layer that matter least on the calibration rows, and writes a smaller model\n"
        "directory (config.json with pruned_heads and intermediate_size, model.safetensors,\n"
        "the tokenizer and sentence-transformers files copied) that shardline and\n"
        "transformers load. Importance, per layer:\n"
        "  head h:   mean |attention context of h| (over tokens and head_dim values)\n"
        "            x Frobenius norm of the attention.output.dense columns of h\n"
        "  column j: mean |GELU(intermediate_j)| (over tokens) x L2 norm of output.dense column j\n"
        "Every layer keeps as many heads and columns (transformers needs one head count).\n"
        "Then prints the size, the speed of both models and the cosine of their embeddings\n"
        "on the calibration rows.\n\n"
        "options:\n"
        "  --model DIR              the model (config.json + model.safetensors)\n"
        "  --heads F                fraction of heads to remove per layer (0 .. 1)\n"
        "  --ffn F                  fraction of FFN columns to remove per layer (0 .. 1)\n"
        "  --calib GLOB             HDF5 calibration inputs (text or token ids; repeatable)\n"
        "  --input-dataset NAME     their dataset (default: text)\n"
        "  --rows N                 calibration rows, the first N (1 .. 1048576, default 64)\n"
        "  --keep-divisible-by N    kept heads and columns are multiples of N, so --tp N\n"
        "                           still splits the model (1 .. 1024, default 1)\n"
        "  --output DIR             the pruned model (must not exist yet)\n"
        "  --help                   this help\n\n"
        "exit status: 0 done, 2 bad command line, 3 bad model, inputs or output directory\n");
}

static int parse_frac(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= 0.0 && v < 1.0)) {
        fprintf(stderr, "shardline: error: prune: %s '%s': a fraction in 0 .. 1 (below 1)\n", opt,
                s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "shardline: error: prune: %s '%s': an integer in %ld .. %ld\n", opt, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- calibration rows ---------------------------------------------------------------------- */

typedef struct {
    int64_t n, S;    /* rows, tokens per row (padded) */
    int32_t *ids;    /* [n, S] */
    int32_t *types;  /* [n, S] */
    int32_t *length; /* [n] */
} calib_t;

static void calib_free(calib_t *c)
{
    free(c->ids);
    free(c->types);
    free(c->length);
}

/* The first `want` rows of the inputs, tokenized (text) or as stored (token ids); rows that
 * do not tokenize (empty text) are skipped. */
static int calib_read(char **globs, int nglobs, const char *dataset, int64_t want,
                      const char *model_dir, const sl_bert_config_t *cfg, calib_t *c,
                      sl_error_t *err)
{
    memset(c, 0, sizeof *c);
    sl_inputs_t in;
    memset(&in, 0, sizeof in);
    if (sl_inputs_scan(&in, globs, nglobs, dataset, 1, err) != 0)
        return -1;
    int64_t S = cfg->max_length;
    if (in.kind == SL_INPUT_TOKENS && in.cols < S)
        S = in.cols;
    c->S = S;
    c->ids = sl_xcalloc((size_t)(want * S), sizeof(int32_t));
    c->types = sl_xcalloc((size_t)(want * S), sizeof(int32_t));
    c->length = sl_xcalloc((size_t)want, sizeof(int32_t));
    sl_tokenizer_t *tok = NULL;
    if (in.kind == SL_INPUT_TEXT) {
        char *p = sl_path_join(model_dir, "tokenizer.json");
        tok = sl_tokenizer_load(p, err);
        free(p);
        if (!tok) {
            sl_inputs_free(&in);
            return -1;
        }
    }
    sl_reader_t rd;
    sl_reader_init(&rd);
    int rc = 0;
    for (int s = 0; s < in.n && c->n < want && rc == 0; s++) {
        int64_t n = in.shards[s].rows < want - c->n ? in.shards[s].rows : want - c->n;
        if (n <= 0)
            continue;
        if (in.kind == SL_INPUT_TEXT) {
            char **texts = sl_xcalloc((size_t)n, sizeof(char *));
            rc = sl_reader_read_text(&rd, &in, s, 0, n, texts, err);
            for (int64_t i = 0; i < n; i++) {
                if (rc == 0 && texts[i]) {
                    int nid = 0;
                    sl_error_t e2;
                    if (sl_tokenizer_encode(tok, texts[i], strlen(texts[i]), (int)S,
                                            c->ids + c->n * S, &nid, NULL, &e2) == 0 &&
                        nid > 0)
                        c->length[c->n++] = nid;
                }
                free(texts[i]);
            }
            free(texts);
        } else {
            int64_t L = in.cols;
            int32_t *ids = sl_xmalloc((size_t)(n * L) * sizeof(int32_t));
            int32_t *ty = sl_xmalloc((size_t)(n * L) * sizeof(int32_t));
            int32_t *len = sl_xmalloc((size_t)n * sizeof(int32_t));
            rc = sl_reader_read_tokens(&rd, &in, s, 0, n, ids, len, ty, err);
            for (int64_t i = 0; rc == 0 && i < n; i++) {
                int64_t l = len[i] < S ? len[i] : S;
                if (l < 1)
                    continue;
                memcpy(c->ids + c->n * S, ids + i * L, (size_t)l * sizeof(int32_t));
                memcpy(c->types + c->n * S, ty + i * L, (size_t)l * sizeof(int32_t));
                for (int64_t j = 0; j < l; j++)
                    if (c->ids[c->n * S + j] < 0 || c->ids[c->n * S + j] >= cfg->vocab)
                        rc = sl_errorf(err, "%s: row %lld: token id %d outside the vocabulary",
                                       in.shards[s].path, (long long)i, c->ids[c->n * S + j]);
                c->length[c->n++] = (int32_t)l;
            }
            free(ids);
            free(ty);
            free(len);
        }
    }
    sl_reader_close(&rd);
    sl_tokenizer_free(tok);
    sl_inputs_free(&in);
    if (rc == 0 && c->n == 0)
        rc = sl_errorf(err, "--calib: no usable row in the inputs");
    return rc;
}

/* Embeddings of every calibration row into out [n, hidden] (NULL: discarded); seconds. */
static double embed_all(sl_bert_t *m, const calib_t *c, float *out)
{
    int64_t D = sl_bert_config(m)->hidden;
    float *tmp = sl_xmalloc((size_t)(CALIB_BATCH * D) * sizeof(float));
    double t0 = now_s();
    for (int64_t r = 0; r < c->n; r += CALIB_BATCH) {
        int64_t B = c->n - r < CALIB_BATCH ? c->n - r : CALIB_BATCH;
        sl_bert_embed(m, NULL, c->ids + r * c->S, c->types + r * c->S, c->length + r, B, c->S,
                      out ? out + r * D : tmp);
    }
    double dt = now_s() - t0;
    free(tmp);
    return dt;
}

/* ---- importance and selection -------------------------------------------------------------- */

static const sl_st_tensor_t *find_t(const sl_safetensors_t *st, const char *name)
{
    const sl_st_tensor_t *t = sl_st_find(st, name);
    if (!t) {
        char alt[256];
        snprintf(alt, sizeof alt, "bert.%s", name);
        t = sl_st_find(st, alt);
    }
    return t;
}

/* Squared L2 norms of the columns of a float tensor [rows, cols]: out [cols]. */
static void col_norms2(const sl_st_tensor_t *t, double *out)
{
    int64_t R = t->shape[0], C = t->shape[1];
    const unsigned char *p = t->data;
    for (int64_t j = 0; j < C; j++)
        out[j] = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < C; j++) {
            double v = sl_st_raw_f32(p, t->dtype, r * C + j);
            out[j] += v * v;
        }
}

typedef struct {
    double v;
    int64_t i;
} rank_t;

static int by_value(const void *a, const void *b)
{
    const rank_t *x = a, *y = b;
    if (x->v != y->v)
        return x->v < y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* keep[j] = 1 for the `nkeep` largest of imp[0..n) (ties: the lower index is removed first). */
static void keep_largest(const double *imp, int64_t n, int64_t nkeep, unsigned char *keep)
{
    rank_t *r = sl_xmalloc((size_t)n * sizeof *r);
    for (int64_t i = 0; i < n; i++)
        r[i] = (rank_t){imp[i], i};
    qsort(r, (size_t)n, sizeof *r, by_value);
    memset(keep, 0, (size_t)n);
    for (int64_t k = n - nkeep; k < n; k++)
        keep[r[k].i] = 1;
    free(r);
}

/* ---- writing ------------------------------------------------------------------------------- */

/* What to keep of one tensor: indices along dim (0: rows / elements, 1: columns), or none. */
typedef struct {
    int dim;      /* -1: the whole tensor */
    int64_t n;    /* kept count along dim */
    int64_t *idx; /* [n], increasing */
} keep_t;

static int64_t *kept_index(const unsigned char *keep, int64_t units, int64_t width, int64_t *n)
{
    int64_t k = 0;
    for (int64_t u = 0; u < units; u++)
        k += keep[u] ? width : 0;
    int64_t *idx = sl_xmalloc((size_t)(k > 0 ? k : 1) * sizeof(int64_t));
    k = 0;
    for (int64_t u = 0; u < units; u++)
        if (keep[u])
            for (int64_t j = 0; j < width; j++)
                idx[k++] = u * width + j;
    *n = k;
    return idx;
}

/* Which slice of tensor `name` the pruned model keeps. */
static keep_t keep_for(const char *name, const sl_bert_config_t *cfg, unsigned char *const *hk,
                       unsigned char *const *fk)
{
    keep_t k = {-1, 0, NULL};
    const char *s = strncmp(name, "bert.", 5) == 0 ? name + 5 : name;
    int l = -1, pos = 0;
    if (sscanf(s, "encoder.layer.%d.%n", &l, &pos) != 1 || pos == 0 || l < 0 || l >= cfg->layers)
        return k;
    const char *rest = s + pos;
    int head_rows = !strcmp(rest, "attention.self.query.weight") ||
                    !strcmp(rest, "attention.self.key.weight") ||
                    !strcmp(rest, "attention.self.value.weight") ||
                    !strcmp(rest, "attention.self.query.bias") ||
                    !strcmp(rest, "attention.self.key.bias") ||
                    !strcmp(rest, "attention.self.value.bias");
    if (head_rows || !strcmp(rest, "attention.output.dense.weight")) {
        k.dim = head_rows ? 0 : 1;
        k.idx = kept_index(hk[l], cfg->heads, cfg->head_dim, &k.n);
    } else if (!strcmp(rest, "intermediate.dense.weight") ||
               !strcmp(rest, "intermediate.dense.bias") || !strcmp(rest, "output.dense.weight")) {
        k.dim = strcmp(rest, "output.dense.weight") ? 0 : 1;
        k.idx = kept_index(fk[l], cfg->intermediate, 1, &k.n);
    }
    return k;
}

static int write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

/* model.safetensors of the pruned model at path: the tensors of `st` in file order, sliced. */
static int write_safetensors(const char *path, const sl_safetensors_t *st,
                             const sl_bert_config_t *cfg, unsigned char *const *hk,
                             unsigned char *const *fk, int64_t *bytes_out, int64_t *params_out,
                             sl_error_t *err)
{
    int nt = st->n_tensors;
    keep_t *ks = sl_xcalloc((size_t)nt, sizeof *ks);
    cJSON *hdr = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    int64_t params = 0;
    for (int i = 0; i < nt; i++) {
        const sl_st_tensor_t *t = &st->tensors[i];
        ks[i] = keep_for(t->name, cfg, hk, fk);
        int64_t shape[SL_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (ks[i].dim >= 0) {
            if (ks[i].dim >= t->ndim)
                return sl_errorf(err, "%s: tensor '%s' is %d-D", st->path, t->name, t->ndim);
            shape[ks[i].dim] = ks[i].n;
        }
        int64_t numel = 1;
        cJSON *sh = cJSON_CreateArray();
        for (int d = 0; d < t->ndim; d++) {
            numel *= shape[d];
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shape[d]));
        }
        size_t esz =
            (size_t)((t->end - t->begin) / (uint64_t)(sl_st_numel(t) ? sl_st_numel(t) : 1));
        cJSON *o = cJSON_AddObjectToObject(hdr, t->name);
        cJSON_AddStringToObject(o, "dtype", t->code);
        cJSON_AddItemToObject(o, "shape", sh);
        cJSON *offs = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += (uint64_t)numel * esz;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        params += numel;
    }
    char *text = cJSON_PrintUnformatted(hdr);
    cJSON_Delete(hdr);
    size_t hl = strlen(text), pad = (8 - hl % 8) % 8; /* the buffer starts 8-byte aligned */
    FILE *f = fopen(path, "wb");
    int rc = f ? 0 : sl_errorf(err, "%s: cannot create: %s", path, strerror(errno));
    if (rc == 0) {
        unsigned char len8[8];
        uint64_t n = hl + pad;
        for (int b = 0; b < 8; b++)
            len8[b] = (unsigned char)(n >> (8 * b));
        rc |= write_all(f, len8, 8);
        rc |= write_all(f, text, hl);
        for (size_t b = 0; b < pad; b++)
            rc |= fputc(' ', f) == EOF ? -1 : 0;
        for (int i = 0; i < nt && rc == 0; i++) {
            const sl_st_tensor_t *t = &st->tensors[i];
            const unsigned char *p = t->data;
            int64_t numel = sl_st_numel(t);
            size_t esz = (size_t)((t->end - t->begin) / (uint64_t)(numel ? numel : 1));
            const keep_t *k = &ks[i];
            if (k->dim < 0) {
                rc |= write_all(f, p, (size_t)(t->end - t->begin));
            } else if (k->dim == 0) { /* whole rows (or elements of a 1-D tensor) */
                size_t row = esz;
                for (int d = 1; d < t->ndim; d++)
                    row *= (size_t)t->shape[d];
                for (int64_t j = 0; j < k->n && rc == 0; j++)
                    rc |= write_all(f, p + (size_t)k->idx[j] * row, row);
            } else { /* columns of a 2-D tensor [R, C] */
                int64_t R = t->shape[0], C = t->shape[1];
                unsigned char *buf = sl_xmalloc((size_t)k->n * esz);
                for (int64_t r = 0; r < R && rc == 0; r++) {
                    for (int64_t j = 0; j < k->n; j++)
                        memcpy(buf + (size_t)j * esz, p + ((size_t)(r * C + k->idx[j])) * esz, esz);
                    rc |= write_all(f, buf, (size_t)k->n * esz);
                }
                free(buf);
            }
        }
        if (fflush(f) != 0 || fsync(fileno(f)) != 0)
            rc = -1;
        if (fclose(f) != 0)
            rc = -1;
        if (rc != 0)
            rc = sl_errorf(err, "%s: writing failed", path);
    }
    free(text);
    for (int i = 0; i < nt; i++)
        free(ks[i].idx);
    free(ks);
    struct stat sb;
    *bytes_out = stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
    *params_out = params;
    return rc;
}

static int copy_file(const char *src, const char *dst, sl_error_t *err)
{
    char *data = NULL;
    size_t len = 0;
    if (sl_read_file(src, 256u << 20, &data, &len, err) != 0)
        return -1;
    FILE *f = fopen(dst, "wb");
    int rc = f && write_all(f, data, len) == 0 ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    free(data);
    return rc ? sl_errorf(err, "%s: cannot write", dst) : 0;
}

/* Weights and files the pruned directory must not carry over (they describe the old sizes);
 * config.json only at the top (a module folder's config.json is copied). */
static int is_weight_file(const char *n, int depth)
{
    static const char *const ext[] = {".safetensors", ".bin", ".h5", ".onnx",
                                      ".msgpack",     ".ot",  ".pt", ".index.json"};
    size_t ln = strlen(n);
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
        size_t le = strlen(ext[i]);
        if (ln >= le && !strcmp(n + ln - le, ext[i]))
            return 1;
    }
    return depth == 0 && !strcmp(n, "config.json");
}

/* Copies the regular files of src (not weights, not config.json) to dst, and those of its
 * sentence-transformers module folders ("1_Pooling", "2_Normalize": a digit, then '_'). */
static int copy_model_files(const char *src, const char *dst, int depth, sl_error_t *err)
{
    DIR *d = opendir(src);
    if (!d)
        return sl_errorf(err, "%s: cannot list: %s", src, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *s = sl_path_join(src, e->d_name), *t = sl_path_join(dst, e->d_name);
        struct stat sb;
        if (stat(s, &sb) == 0) {
            if (S_ISREG(sb.st_mode) && !is_weight_file(e->d_name, depth)) {
                rc = copy_file(s, t, err);
            } else if (S_ISDIR(sb.st_mode) && depth == 0 && e->d_name[0] >= '0' &&
                       e->d_name[0] <= '9' && strchr(e->d_name, '_')) {
                if (mkdir(t, 0777) != 0)
                    rc = sl_errorf(err, "%s: cannot create: %s", t, strerror(errno));
                else
                    rc = copy_model_files(s, t, 1, err);
            }
        }
        free(s);
        free(t);
    }
    closedir(d);
    return rc;
}

static int write_config(const char *src_dir, const char *path, const sl_bert_config_t *cfg,
                        unsigned char *const *hk, int64_t keep_ffn, sl_error_t *err)
{
    char *src = sl_path_join(src_dir, "config.json");
    cJSON *root = sl_json_read(src, 16u << 20, 0, err);
    free(src);
    if (!root)
        return -1;
    cJSON_DeleteItemFromObjectCaseSensitive(root, "intermediate_size");
    cJSON_AddNumberToObject(root, "intermediate_size", (double)keep_ffn);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "pruned_heads");
    cJSON *ph = cJSON_AddObjectToObject(root, "pruned_heads");
    for (int64_t l = 0; l < cfg->layers; l++) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)l);
        cJSON *a = cJSON_AddArrayToObject(ph, key);
        for (int64_t h = 0; h < cfg->heads; h++)
            if (!hk[l][h])
                cJSON_AddItemToArray(a, cJSON_CreateNumber((double)h));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    FILE *f = fopen(path, "w");
    int rc = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    free(text);
    return rc ? sl_errorf(err, "%s: cannot write", path) : 0;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = sl_path_join(dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

/* ---- main ---------------------------------------------------------------------------------- */

int sl_prune_main(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"heads", required_argument, NULL, 'H'},
                                         {"ffn", required_argument, NULL, 'F'},
                                         {"calib", required_argument, NULL, 'c'},
                                         {"input-dataset", required_argument, NULL, 'd'},
                                         {"rows", required_argument, NULL, 'r'},
                                         {"keep-divisible-by", required_argument, NULL, 'k'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *model = NULL, *output = NULL, *dataset = "text";
    char *globs[MAX_CALIB];
    int nglobs = 0, c;
    double fh = -1, ff = -1;
    long rows = 64, div = 1;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': output = optarg; break;
        case 'd': dataset = optarg; break;
        case 'H':
            if (parse_frac("--heads", optarg, &fh) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'F':
            if (parse_frac("--ffn", optarg, &ff) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'r':
            if (parse_int("--rows", optarg, 1, 1048576, &rows) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'k':
            if (parse_int("--keep-divisible-by", optarg, 1, 1024, &div) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'c':
            if (nglobs >= MAX_CALIB) {
                fprintf(stderr, "shardline: error: prune: --calib: at most %d\n", MAX_CALIB);
                return SL_EXIT_USAGE;
            }
            globs[nglobs++] = optarg;
            break;
        case 'h': usage(stdout); return SL_EXIT_OK;
        default:
            fprintf(stderr, "shardline: error: prune: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return SL_EXIT_USAGE;
        }
    }
    if (!model || !output || nglobs == 0 || fh < 0 || ff < 0 || optind != argc) {
        fprintf(stderr, "shardline: error: prune: --model, --heads, --ffn, --calib and --output "
                        "are required (and nothing else)\n\n");
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    /* "out/" and "out" name the same directory; the temporary name goes beside it */
    char outbuf[4096];
    snprintf(outbuf, sizeof outbuf, "%s", output);
    for (size_t n = strlen(outbuf); n > 1 && outbuf[n - 1] == '/'; n--)
        outbuf[n - 1] = '\0';
    output = outbuf;
    sl_h5_quiet();
    sl_error_t err = {{0}};
    int status = SL_EXIT_INPUT;
    sl_bert_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    sl_safetensors_t st;
    memset(&st, 0, sizeof st);
    st.fd = -1;
    calib_t cal;
    memset(&cal, 0, sizeof cal);
    sl_backend_t *be = NULL;
    sl_bert_t *m = NULL, *pm = NULL;
    unsigned char **hk = NULL, **fk = NULL;
    double *imp = NULL, *norms = NULL;
    float *emb_a = NULL, *emb_b = NULL;
    sl_bert_stats_t stats = {NULL, NULL, 0};
    char tmpdir[4200] = "";

    if (sl_bert_config_load(model, &cfg, &err) != 0)
        goto fail;
    if (cfg.heads != cfg.heads_config) {
        sl_errorf(&err,
                  "%s/config.json: the model is already pruned (pruned_heads); prune the "
                  "original",
                  model);
        goto fail;
    }
    int64_t H = cfg.heads, I = cfg.intermediate, Dh = cfg.head_dim;
    int64_t keep_h = H - (int64_t)llround(fh * (double)H);
    int64_t keep_f = I - (int64_t)llround(ff * (double)I);
    keep_h -= keep_h % div;
    keep_f -= keep_f % div;
    if (keep_h < 1 || keep_f < 1) {
        fprintf(stderr,
                "shardline: error: prune: nothing would be left: %lld of %lld heads and %lld of "
                "%lld FFN columns kept (multiples of --keep-divisible-by %ld)\n",
                (long long)keep_h, (long long)H, (long long)keep_f, (long long)I, div);
        status = SL_EXIT_USAGE;
        goto done;
    }
    struct stat sb;
    if (stat(output, &sb) == 0) {
        sl_errorf(&err, "--output %s: exists already (prune writes a new directory)", output);
        goto fail;
    }
    char *wpath = sl_path_join(model, "model.safetensors");
    int wrc = sl_st_open(&st, wpath, &err);
    free(wpath);
    if (wrc != 0) {
        sl_error_prefix(&err, "%s: prune reads one model.safetensors (not shards)", model);
        goto fail;
    }
    if (calib_read(globs, nglobs, dataset, rows, model, &cfg, &cal, &err) != 0)
        goto fail;

    /* 1. Calibration statistics and the original's embeddings (timed: its speed). */
    if (!(be = sl_backend_create(SL_BACKEND_CPU, 0, 0, &err)) ||
        !(m = sl_bert_load(model, be, 1, 0, SL_F32, &err)))
        goto fail;
    int64_t D = cfg.hidden, L = cfg.layers;
    stats.head_abs = sl_xcalloc((size_t)(L * H), sizeof(double));
    stats.ffn_abs = sl_xcalloc((size_t)(L * I), sizeof(double));
    sl_bert_set_stats(m, &stats);
    embed_all(m, &cal, NULL);
    sl_bert_set_stats(m, NULL);
    emb_a = sl_xmalloc((size_t)(cal.n * D) * sizeof(float));
    double secs_a = embed_all(m, &cal, emb_a);
    sl_bert_free(m);
    m = NULL;

    /* 2. Importance and 3. selection, layer by layer. */
    hk = sl_xcalloc((size_t)L, sizeof *hk);
    fk = sl_xcalloc((size_t)L, sizeof *fk);
    imp = sl_xmalloc((size_t)(H > I ? H : I) * sizeof(double));
    norms = sl_xmalloc((size_t)(H * Dh > I ? H * Dh : I) * sizeof(double));
    for (int64_t l = 0; l < L; l++) {
        char name[128];
        snprintf(name, sizeof name, "encoder.layer.%lld.attention.output.dense.weight",
                 (long long)l);
        const sl_st_tensor_t *wo = find_t(&st, name);
        snprintf(name, sizeof name, "encoder.layer.%lld.output.dense.weight", (long long)l);
        const sl_st_tensor_t *w2 = find_t(&st, name);
        if (!wo || !w2 || wo->ndim != 2 || w2->ndim != 2 || wo->shape[1] != H * Dh ||
            w2->shape[1] != I || !sl_st_is_float(wo->dtype) || !sl_st_is_float(w2->dtype)) {
            sl_errorf(&err,
                      "%s: layer %lld: attention.output.dense or output.dense is missing or "
                      "not a float [%lld, %lld] / [%lld, %lld] tensor",
                      st.path, (long long)l, (long long)D, (long long)(H * Dh), (long long)D,
                      (long long)I);
            goto fail;
        }
        col_norms2(wo, norms);
        for (int64_t h = 0; h < H; h++) {
            double n2 = 0;
            for (int64_t j = 0; j < Dh; j++)
                n2 += norms[h * Dh + j];
            imp[h] = stats.head_abs[l * H + h] / ((double)stats.tokens * (double)Dh) * sqrt(n2);
        }
        hk[l] = sl_xmalloc((size_t)H);
        keep_largest(imp, H, keep_h, hk[l]);
        col_norms2(w2, norms);
        for (int64_t j = 0; j < I; j++)
            imp[j] = stats.ffn_abs[l * I + j] / (double)stats.tokens * sqrt(norms[j]);
        fk[l] = sl_xmalloc((size_t)I);
        keep_largest(imp, I, keep_f, fk[l]);
    }

    /* 4. The directory, under a temporary name renamed at the end. */
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp.%ld", output, (long)getpid());
    if (mkdir(tmpdir, 0777) != 0) {
        sl_errorf(&err, "%s: cannot create: %s", tmpdir, strerror(errno));
        tmpdir[0] = '\0';
        goto fail;
    }
    int64_t bytes_b = 0, params_b = 0;
    char *cpath = sl_path_join(tmpdir, "config.json");
    char *spath = sl_path_join(tmpdir, "model.safetensors");
    int rc = copy_model_files(model, tmpdir, 0, &err);
    if (rc == 0)
        rc = write_config(model, cpath, &cfg, hk, keep_f, &err);
    if (rc == 0)
        rc = write_safetensors(spath, &st, &cfg, hk, fk, &bytes_b, &params_b, &err);
    free(cpath);
    free(spath);
    if (rc != 0)
        goto fail;
    if (rename(tmpdir, output) != 0) {
        sl_errorf(&err, "%s: cannot rename to %s: %s", tmpdir, output, strerror(errno));
        goto fail;
    }
    tmpdir[0] = '\0';

    /* 5. The pruned model: it loads, its speed and its agreement with the original. */
    if (!(pm = sl_bert_load(output, be, 1, 0, SL_F32, &err))) {
        sl_error_prefix(&err, "the pruned model does not load");
        goto fail;
    }
    emb_b = sl_xmalloc((size_t)(cal.n * D) * sizeof(float));
    double secs_b = embed_all(pm, &cal, emb_b);
    sl_rows_diff_t d;
    sl_rows_diff_init(&d);
    sl_compare_rows(emb_a, emb_b, cal.n, D, 0, &d);
    int64_t params_a = 0;
    for (int i = 0; i < st.n_tensors; i++)
        params_a += sl_st_numel(&st.tensors[i]);
    printf("pruned %s -> %s\n", model, output);
    printf("heads        %lld of %lld per layer kept (pruned_heads in config.json)\n",
           (long long)keep_h, (long long)H);
    printf("FFN          %lld of %lld columns per layer kept\n", (long long)keep_f, (long long)I);
    printf("size         %lld -> %lld parameters (%.3f), model.safetensors %.1f -> %.1f MiB\n",
           (long long)params_a, (long long)params_b, (double)params_b / (double)params_a,
           (double)st.size / 1048576.0, (double)bytes_b / 1048576.0);
    printf("speed        %.1f -> %.1f rows/s on the %lld calibration rows (%.2fx; %s)\n",
           (double)cal.n / secs_a, (double)cal.n / secs_b, (long long)cal.n, secs_a / secs_b,
           sl_backend_describe(be));
    printf("accuracy     embedding cosine to the original: min %.4f (row %lld), mean %.4f\n",
           d.cos_min, (long long)d.cos_min_row, d.rows ? d.cos_sum / (double)d.rows : NAN);
    status = SL_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "shardline: error: prune: %s\n", err.msg);
    status = SL_EXIT_INPUT;
done:
    if (tmpdir[0])
        remove_tree(tmpdir);
    for (int64_t l = 0; hk && l < cfg.layers; l++)
        free(hk[l]);
    for (int64_t l = 0; fk && l < cfg.layers; l++)
        free(fk[l]);
    free(hk);
    free(fk);
    free(imp);
    free(norms);
    free(emb_a);
    free(emb_b);
    free(stats.head_abs);
    free(stats.ffn_abs);
    sl_bert_free(m);
    sl_bert_free(pm);
    sl_backend_free(be);
    calib_free(&cal);
    sl_st_close(&st);
    sl_bert_config_free(&cfg);
    return status;
}
