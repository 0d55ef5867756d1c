/*
 * convert.c — `shardline convert IN... --to DIR`: turns JSONL (one JSON object a line, parsed by
 * cJSON), CSV or TSV with a header row (parsed by libcsv, RFC 4180 quoting) and plain text (one
 * row a line) into HDF5 shards in the layout `shardline run` reads:
 *
 *   DIR/shard-000000.h5, shard-000001.h5, ...   (names sort in input order)
 *     /text      [rows] variable-length UTF-8 strings   (encoders, decoders), or
 *     /features  [rows, d] float32                      (mlp: --features)
 *     /ids       [rows] variable-length UTF-8 strings   (with --id-field)
 *   DIR/convert.json   what was converted: inputs, rows, shards, bad lines skipped
 *
 * Streaming: input is read a line (JSONL, text) or a record (CSV, TSV) at a time; rows go into
 * a block of at most CV_BLOCK_ROWS rows / CV_BLOCK_BYTES bytes, appended to the open shard's
 * extensible datasets when full; a shard is closed and renamed into place once it holds
 * --rows-per-shard rows. Memory is bounded by the block and the longest line, not the file.
 *
 * A bad line (invalid JSON or UTF-8, a missing field, a wrong field count, a value that is not
 * a number) is reported as FILE:LINE: reason. --on-bad-line fail (the default) stops at the
 * first and removes the shards written so far (exit 3), so no partial conversion looks
 * complete; --on-bad-line skip reports and counts them and goes on.
 */
#include "cli/convert.h"

#include <cjson/cJSON.h>
#include <csv.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/sl_error.h"
#include "common/sl_fs.h"
#include "common/sl_utf8.h"
#include "jobs/h5util.h"

enum { FMT_AUTO, FMT_JSONL, FMT_CSV, FMT_TSV, FMT_TEXT, FMT_PARQUET, FMT_UNKNOWN };

#define CV_BLOCK_ROWS 4096
#define CV_BLOCK_BYTES ((size_t)16 << 20)
#define CV_MAX_SHARDS 999999 /* shard-NNNNNN.h5: six digits keep glob order = input order */
#define CV_MAX_ROWS_PER_SHARD (INT64_C(1) << 30)
#define CV_MAX_FEATURES (1 << 20)
#define CV_SHOW_SKIPPED 20 /* skipped lines shown one by one; the rest are counted */

/* ---- the converter state ------------------------------------------------------------------ */

typedef struct {
    /* options */
    const char *to;
    int64_t rows_per_shard;
    const char *text_field, *id_field;
    char **feat; /* --features items: names or "A..B" ranges */
    int nfeat;
    int format, skip_bad, quiet;
    /* feature count: -1 until the first row (or header) fixes it */
    int64_t d;
    /* the open shard */
    int shard; /* index of the next shard to open / the open one */
    hid_t f, dmain, dids;
    int64_t shard_rows;
    char tmp[4200], final[4200];
    /* the block being filled: texts or feats [block_cap, d], ids */
    char **texts, **ids;
    float *feats;
    int64_t nblock, block_cap;
    size_t block_bytes;
    /* counts */
    int64_t rows, bad;
    /* the file being read, for messages */
    const char *path;
} conv_t;

/* Reports a bad line: an error (fail) or a skipped and counted line (skip). */
static int bad_line(conv_t *c, int64_t line0, int64_t line1, sl_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bad_line(conv_t *c, int64_t line0, int64_t line1, sl_error_t *err, const char *fmt, ...)
{
    char reason[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    char where[64];
    if (line1 > line0)
        snprintf(where, sizeof where, "lines %lld-%lld", (long long)line0, (long long)line1);
    else
        snprintf(where, sizeof where, "%lld", (long long)line0);
    if (!c->skip_bad)
        return sl_errorf(err, "%s:%s: %s (--on-bad-line skip skips such lines)", c->path, where,
                         reason);
    c->bad++;
    if (c->bad <= CV_SHOW_SKIPPED) {
        sl_error_t e;
        sl_errorf(&e, "%s:%s: %s", c->path, where, reason);
        fprintf(stderr, "shardline: convert: skipped %s\n", e.msg);
        if (c->bad == CV_SHOW_SKIPPED)
            fprintf(stderr, "shardline: convert: further skipped lines are counted, not shown\n");
    }
    return 0;
}

/* ---- the shard writer ---------------------------------------------------------------------- */

static int is_features(const conv_t *c) { return c->nfeat > 0; }

/* Returns -1 when the name does not fit (a --to path of thousands of bytes). */
static int shard_name(const conv_t *c, int k, char *buf, size_t len)
{
    return snprintf(buf, len, "%s/shard-%06d.h5", c->to, k) < (int)len ? 0 : -1;
}

static hid_t make_dataset(hid_t f, const char *name, hid_t type, int nd, hsize_t cols,
                          hsize_t chunk_rows)
{
    hsize_t dims[2] = {0, cols}, maxd[2] = {H5S_UNLIMITED, cols}, chunk[2] = {chunk_rows, cols};
    hid_t sp = H5Screate_simple(nd, dims, maxd);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, nd, chunk);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    return d;
}

static int shard_open(conv_t *c, sl_error_t *err)
{
    if (c->shard > CV_MAX_SHARDS)
        return sl_errorf(err, "%s: more than %d shards; raise --rows-per-shard (now %lld)", c->to,
                         CV_MAX_SHARDS, (long long)c->rows_per_shard);
    if (shard_name(c, c->shard, c->final, sizeof c->final) != 0 ||
        snprintf(c->tmp, sizeof c->tmp, "%s.tmp", c->final) >= (int)sizeof c->tmp)
        return sl_errorf(err, "--to %s: the path is too long", c->to);
    c->f = H5Fcreate(c->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (c->f < 0)
        return sl_errorf(err, "%s: cannot create (%s)", c->tmp, strerror(errno));
    hid_t st = sl_h5_vlen_str_type();
    if (is_features(c)) {
        /* chunks of about 1 MiB */
        hsize_t cr = (hsize_t)((1 << 18) / c->d);
        c->dmain = make_dataset(c->f, "features", H5T_IEEE_F32LE, 2, (hsize_t)c->d,
                                cr < 1      ? 1
                                : cr > 4096 ? 4096
                                            : cr);
    } else {
        c->dmain = make_dataset(c->f, "text", st, 1, 0, 1024);
    }
    c->dids = c->id_field ? make_dataset(c->f, "ids", st, 1, 0, 1024) : -1;
    H5Tclose(st);
    c->shard_rows = 0;
    if (c->dmain < 0 || (c->id_field && c->dids < 0))
        return sl_errorf(err, "%s: cannot create the datasets", c->tmp);
    return 0;
}

/* Closes the open shard and renames it into place: a shard under its final name is complete. */
static int shard_close(conv_t *c, sl_error_t *err)
{
    int bad = H5Dclose(c->dmain) < 0;
    if (c->dids >= 0)
        bad |= H5Dclose(c->dids) < 0;
    bad |= H5Fclose(c->f) < 0;
    c->f = c->dmain = c->dids = -1;
    c->shard_rows = 0;
    if (bad || rename(c->tmp, c->final) != 0) {
        unlink(c->tmp);
        return sl_errorf(err, "%s: cannot write (disk full?)", c->final);
    }
    c->shard++;
    return 0;
}

/* Appends n rows of a 1-D (cols 0) or 2-D dataset. */
static int append(hid_t d, hid_t memtype, int64_t row0, int64_t n, hsize_t cols, const void *buf)
{
    hsize_t dims[2] = {(hsize_t)(row0 + n), cols};
    if (H5Dset_extent(d, dims) < 0)
        return -1;
    int nd = cols ? 2 : 1;
    hid_t fs = H5Dget_space(d);
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, cols};
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(nd, count, NULL);
    herr_t e = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return e < 0 ? -1 : 0;
}

static void block_clear(conv_t *c)
{
    for (int64_t i = 0; i < c->nblock; i++) {
        if (c->texts) {
            free(c->texts[i]);
            c->texts[i] = NULL;
        }
        if (c->ids) {
            free(c->ids[i]);
            c->ids[i] = NULL;
        }
    }
    c->nblock = 0;
    c->block_bytes = 0;
}

/* Writes the block into the open shard (opening one when none is), closing the shard when it
 * is full. */
static int block_flush(conv_t *c, sl_error_t *err)
{
    if (c->nblock == 0)
        return 0;
    if (c->f < 0 && shard_open(c, err) != 0)
        return -1;
    hid_t st = sl_h5_vlen_str_type();
    int bad = 0;
    if (is_features(c))
        bad |=
            append(c->dmain, H5T_NATIVE_FLOAT, c->shard_rows, c->nblock, (hsize_t)c->d, c->feats);
    else
        bad |= append(c->dmain, st, c->shard_rows, c->nblock, 0, c->texts);
    if (c->dids >= 0)
        bad |= append(c->dids, st, c->shard_rows, c->nblock, 0, c->ids);
    H5Tclose(st);
    if (bad)
        return sl_errorf(err, "%s: cannot write rows (disk full?)", c->tmp);
    c->shard_rows += c->nblock;
    block_clear(c);
    if (c->shard_rows == c->rows_per_shard)
        return shard_close(c, err);
    return 0;
}

/* Sizes the block once the feature count is known. */
static void block_alloc(conv_t *c)
{
    if (c->block_cap)
        return;
    int64_t cap = CV_BLOCK_ROWS;
    if (is_features(c) && c->d > 0 && (int64_t)(CV_BLOCK_BYTES / 4) / c->d < cap)
        cap = (int64_t)(CV_BLOCK_BYTES / 4) / c->d;
    c->block_cap = cap < 1 ? 1 : cap;
    if (is_features(c))
        c->feats = sl_xmalloc((size_t)c->block_cap * (size_t)c->d * sizeof(float));
    else
        c->texts = sl_xcalloc((size_t)c->block_cap, sizeof(char *));
    if (c->id_field)
        c->ids = sl_xcalloc((size_t)c->block_cap, sizeof(char *));
}

/* One good row: text (text mode) or feats [d] (features mode), and its id (with --id-field). */
static int add_row(conv_t *c, const char *text, const float *feats, const char *id, sl_error_t *err)
{
    block_alloc(c);
    int64_t i = c->nblock++;
    if (is_features(c))
        memcpy(c->feats + i * c->d, feats, (size_t)c->d * sizeof(float));
    else {
        c->texts[i] = sl_xstrdup(text);
        c->block_bytes += strlen(text);
    }
    if (c->id_field) {
        c->ids[i] = sl_xstrdup(id);
        c->block_bytes += strlen(id);
    }
    c->rows++;
    if (c->nblock == c->block_cap || c->block_bytes >= CV_BLOCK_BYTES ||
        c->shard_rows + c->nblock == c->rows_per_shard)
        return block_flush(c, err);
    return 0;
}

/* ---- JSONL and plain text ------------------------------------------------------------------ */

static const char *json_type(const cJSON *v)
{
    return cJSON_IsString(v)   ? "a string"
           : cJSON_IsNumber(v) ? "a number"
           : cJSON_IsBool(v)   ? "a boolean"
           : cJSON_IsNull(v)   ? "null"
           : cJSON_IsArray(v)  ? "an array"
                               : "an object";
}

/* A float32 from a double, or -1 when it is out of float32's range. */
static int to_f32(double v, float *out)
{
    float f = (float)v;
    if (!isfinite(f))
        return -1;
    *out = f;
    return 0;
}

/* Converts one JSON object; 0 with the row added or skipped, -1 on a fatal error. */
static int jsonl_row(conv_t *c, cJSON *o, int64_t line, float **fbuf, int64_t *fcap,
                     sl_error_t *err)
{
    const char *text = NULL;
    char idbuf[64];
    const char *id = NULL;
    if (c->id_field) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, c->id_field);
        if (!v)
            return bad_line(c, line, line, err, "no field '%s' (--id-field)", c->id_field);
        if (cJSON_IsString(v))
            id = v->valuestring;
        else if (cJSON_IsNumber(v)) {
            double x = v->valuedouble;
            if (x == floor(x) && fabs(x) < 9007199254740992.0)
                snprintf(idbuf, sizeof idbuf, "%lld", (long long)x);
            else
                snprintf(idbuf, sizeof idbuf, "%.17g", x);
            id = idbuf;
        } else
            return bad_line(c, line, line, err,
                            "field '%s' (--id-field) is %s, not a string or number", c->id_field,
                            json_type(v));
    }
    if (!is_features(c)) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, c->text_field);
        if (!v)
            return bad_line(c, line, line, err, "no field '%s' (--text-field)", c->text_field);
        if (!cJSON_IsString(v))
            return bad_line(c, line, line, err, "field '%s' (--text-field) is %s, not a string",
                            c->text_field, json_type(v));
        text = v->valuestring;
        return add_row(c, text, NULL, id, err);
    }
    /* features: each named field is a number (one feature) or an array of numbers */
    int64_t n = 0;
    for (int k = 0; k < c->nfeat; k++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, c->feat[k]);
        if (!v)
            return bad_line(c, line, line, err, "no field '%s' (--features)", c->feat[k]);
        int m = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
        if (n + m > *fcap) {
            *fcap = 2 * (n + m);
            *fbuf = sl_xrealloc(*fbuf, (size_t)*fcap * sizeof(float));
        }
        if (cJSON_IsNumber(v)) {
            if (to_f32(v->valuedouble, *fbuf + n) != 0)
                return bad_line(c, line, line, err, "field '%s': %g is out of float32's range",
                                c->feat[k], v->valuedouble);
            n++;
        } else if (cJSON_IsArray(v)) {
            int j = 0;
            for (cJSON *e = v->child; e; e = e->next, j++) {
                if (!cJSON_IsNumber(e))
                    return bad_line(c, line, line, err,
                                    "field '%s': element %d is %s, not a number", c->feat[k], j,
                                    json_type(e));
                if (to_f32(e->valuedouble, *fbuf + n) != 0)
                    return bad_line(c, line, line, err,
                                    "field '%s': element %d (%g) is out of float32's range",
                                    c->feat[k], j, e->valuedouble);
                n++;
            }
        } else
            return bad_line(c, line, line, err, "field '%s' (--features) is %s, not a number",
                            c->feat[k], json_type(v));
    }
    if (c->d < 0) {
        if (n == 0)
            return bad_line(c, line, line, err,
                            "no features (the --features fields are empty arrays)");
        if (n > CV_MAX_FEATURES)
            return sl_errorf(err, "%s:%lld: %lld features: more than %d", c->path, (long long)line,
                             (long long)n, CV_MAX_FEATURES);
        c->d = n;
    } else if (n != c->d)
        return bad_line(c, line, line, err, "%lld features, earlier rows have %lld", (long long)n,
                        (long long)c->d);
    return add_row(c, NULL, *fbuf, id, err);
}

/* Reads JSONL (format FMT_JSONL) or plain text (FMT_TEXT) a line at a time. */
static int convert_lines(conv_t *c, FILE *fp, int format, sl_error_t *err)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int64_t lineno = 0;
    float *fbuf = NULL;
    int64_t fcap = 0;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, fp)) != -1) {
        lineno++;
        size_t len = (size_t)n;
        if (len && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len && line[len - 1] == '\r')
            line[--len] = '\0';
        size_t badat = sl_utf8_check((const unsigned char *)line, len);
        if (badat < len) {
            rc = bad_line(c, lineno, lineno, err, "invalid UTF-8 at byte %zu (0x%02x)", badat + 1,
                          (unsigned char)line[badat]);
            continue;
        }
        if (format == FMT_TEXT) {
            if (strlen(line) != len)
                rc = bad_line(c, lineno, lineno, err, "a NUL byte at byte %zu", strlen(line) + 1);
            else
                rc = add_row(c, line, NULL, NULL, err);
            continue;
        }
        size_t sp = strspn(line, " \t");
        if (sp == len)
            continue; /* blank lines between records are not records */
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithLengthOpts(line, len, &end, 0);
        if (!o) {
            const char *at = cJSON_GetErrorPtr();
            size_t off = at && at >= line && at <= line + len ? (size_t)(at - line) : 0;
            rc = bad_line(c, lineno, lineno, err, "not valid JSON (error near byte %zu)", off + 1);
            continue;
        }
        if (end && (size_t)(end - line) + strspn(end, " \t") < len)
            rc = bad_line(c, lineno, lineno, err, "more than one JSON value on the line (byte %zu)",
                          (size_t)(end - line) + 1);
        else if (!cJSON_IsObject(o))
            rc = bad_line(c, lineno, lineno, err, "%s, not a JSON object", json_type(o));
        else
            rc = jsonl_row(c, o, lineno, &fbuf, &fcap, err);
        cJSON_Delete(o);
    }
    if (rc == 0 && ferror(fp))
        rc = sl_errorf(err, "%s: read error after line %lld", c->path, (long long)lineno);
    free(line);
    free(fbuf);
    return rc;
}

/* ---- CSV and TSV (libcsv) -------------------------------------------------------------------- */

typedef struct {
    conv_t *c;
    sl_error_t *err;
    int failed;
    /* the record being parsed */
    char **fields;
    size_t *lens;
    int nfields, capfields;
    int64_t rec_start, lineno; /* first line of the record (0: none yet), line being fed */
    /* from the header */
    int header_done, ncols;
    char **names;
    int text_col, id_col;
    int *feat_cols;
    float *fbuf;
} csv_ctx_t;

static void csv_field(void *s, size_t len, void *data)
{
    csv_ctx_t *x = data;
    if (x->nfields == x->capfields) {
        x->capfields = x->capfields ? 2 * x->capfields : 16;
        x->fields = sl_xrealloc(x->fields, (size_t)x->capfields * sizeof *x->fields);
        x->lens = sl_xrealloc(x->lens, (size_t)x->capfields * sizeof *x->lens);
    }
    char *f = sl_xmalloc(len + 1);
    if (len)
        memcpy(f, s, len);
    f[len] = '\0';
    x->fields[x->nfields] = f;
    x->lens[x->nfields++] = len;
}

static void fields_clear(csv_ctx_t *x)
{
    for (int i = 0; i < x->nfields; i++)
        free(x->fields[i]);
    x->nfields = 0;
}

static int find_col(const csv_ctx_t *x, const char *name)
{
    for (int i = 0; i < x->ncols; i++)
        if (!strcmp(x->names[i], name))
            return i;
    return -1;
}

/* The header row: finds the columns of the text, the id and the features. Errors here are
 * errors of the file, not of one line: they stop the conversion in either mode. */
static int csv_header(csv_ctx_t *x)
{
    conv_t *c = x->c;
    x->ncols = x->nfields;
    x->names = sl_xcalloc((size_t)x->ncols, sizeof *x->names);
    char cols[512] = "";
    size_t cl = 0;
    for (int i = 0; i < x->ncols; i++) {
        if (sl_utf8_check((const unsigned char *)x->fields[i], x->lens[i]) < x->lens[i])
            return sl_errorf(x->err, "%s:%lld: header: column %d's name is not valid UTF-8",
                             c->path, (long long)x->rec_start, i + 1);
        x->names[i] = sl_xstrdup(x->fields[i]);
        if (cl < sizeof cols)
            cl += (size_t)snprintf(cols + cl, sizeof cols - cl, "%s%s", i ? ", " : "", x->names[i]);
    }
    x->text_col = x->id_col = -1;
    if (c->id_field && (x->id_col = find_col(x, c->id_field)) < 0)
        return sl_errorf(x->err, "%s:%lld: header: no column '%s' (--id-field; columns: %s)",
                         c->path, (long long)x->rec_start, c->id_field, cols);
    if (!is_features(c)) {
        if ((x->text_col = find_col(x, c->text_field)) < 0)
            return sl_errorf(x->err, "%s:%lld: header: no column '%s' (--text-field; columns: %s)",
                             c->path, (long long)x->rec_start, c->text_field, cols);
        return 0;
    }
    /* features: names and A..B ranges (A, B and every column between them, in header order) */
    int n = 0, cap = 16;
    x->feat_cols = sl_xmalloc((size_t)cap * sizeof(int));
    for (int k = 0; k < c->nfeat; k++) {
        char *dots = strstr(c->feat[k], "..");
        int a, b;
        if (dots) {
            char first[256];
            snprintf(first, sizeof first, "%.*s", (int)(dots - c->feat[k]), c->feat[k]);
            a = find_col(x, first);
            b = find_col(x, dots + 2);
            if (a < 0 || b < 0)
                return sl_errorf(
                    x->err, "%s:%lld: header: --features %s: no column '%s' (columns: %s)", c->path,
                    (long long)x->rec_start, c->feat[k], a < 0 ? first : dots + 2, cols);
            if (b < a)
                return sl_errorf(x->err, "%s:%lld: header: --features %s: '%s' comes after '%s'",
                                 c->path, (long long)x->rec_start, c->feat[k], first, dots + 2);
        } else {
            a = b = find_col(x, c->feat[k]);
            if (a < 0)
                return sl_errorf(x->err,
                                 "%s:%lld: header: --features: no column '%s' (columns: %s)",
                                 c->path, (long long)x->rec_start, c->feat[k], cols);
        }
        for (int j = a; j <= b; j++) {
            if (n == cap)
                x->feat_cols = sl_xrealloc(x->feat_cols, (size_t)(cap *= 2) * sizeof(int));
            x->feat_cols[n++] = j;
        }
    }
    if (c->d >= 0 && n != c->d)
        return sl_errorf(x->err,
                         "%s: --features gives %d columns here but %lld in the files before",
                         c->path, n, (long long)c->d);
    c->d = n;
    x->fbuf = sl_xmalloc((size_t)n * sizeof(float));
    return 0;
}

static int csv_data(csv_ctx_t *x)
{
    conv_t *c = x->c;
    int64_t l0 = x->rec_start, l1 = x->lineno;
    if (x->nfields != x->ncols)
        return bad_line(c, l0, l1, x->err, "%d fields, the header has %d", x->nfields, x->ncols);
    int check[2] = {x->text_col, x->id_col};
    for (int k = 0; k < 2; k++) {
        int j = check[k];
        if (j < 0)
            continue;
        size_t badat = sl_utf8_check((const unsigned char *)x->fields[j], x->lens[j]);
        if (badat < x->lens[j])
            return bad_line(c, l0, l1, x->err, "column '%s': invalid UTF-8 at byte %zu (0x%02x)",
                            x->names[j], badat + 1, (unsigned char)x->fields[j][badat]);
        if (strlen(x->fields[j]) != x->lens[j])
            return bad_line(c, l0, l1, x->err, "column '%s': a NUL byte", x->names[j]);
    }
    const char *id = x->id_col >= 0 ? x->fields[x->id_col] : NULL;
    if (!is_features(c))
        return add_row(c, x->fields[x->text_col], NULL, id, x->err);
    for (int64_t k = 0; k < c->d; k++) {
        int j = x->feat_cols[k];
        const char *s = x->fields[j];
        char *end = NULL;
        errno = 0;
        double v = strtod(s, &end);
        while (end && (*end == ' ' || *end == '\t'))
            end++;
        if (x->lens[j] == strspn(s, " \t"))
            return bad_line(c, l0, l1, x->err, "column '%s' is empty, not a number", x->names[j]);
        sl_error_t q;
        sl_errorf(&q, "%.60s", s);
        if (end == s || *end != '\0')
            return bad_line(c, l0, l1, x->err, "column '%s': '%s' is not a number", x->names[j],
                            q.msg);
        if (to_f32(v, &x->fbuf[k]) != 0)
            return bad_line(c, l0, l1, x->err, "column '%s': '%s' is not a finite float32",
                            x->names[j], q.msg);
    }
    return add_row(c, NULL, x->fbuf, id, x->err);
}

static void csv_record(int term, void *data)
{
    (void)term;
    csv_ctx_t *x = data;
    if (!x->failed) {
        int rc = x->header_done ? csv_data(x) : csv_header(x);
        x->header_done = 1;
        if (rc != 0)
            x->failed = 1;
    }
    fields_clear(x);
    x->rec_start = 0;
}

static void csv_ctx_free(csv_ctx_t *x)
{
    fields_clear(x);
    free(x->fields);
    free(x->lens);
    for (int i = 0; i < x->ncols; i++)
        free(x->names[i]);
    free(x->names);
    free(x->feat_cols);
    free(x->fbuf);
}

/* RFC 4180: spaces and tabs are part of a field (libcsv trims them by default). */
static int no_space(unsigned char c)
{
    (void)c;
    return 0;
}

static void csv_setup(struct csv_parser *p, int format)
{
    csv_set_space_func(p, no_space);
    if (format == FMT_TSV)
        csv_set_delim(p, CSV_TAB);
}

static int csv_options(int format)
{
    /* CSV: strict RFC 4180 (a quote inside an unquoted field, or text after a closing quote,
     * is an error; so is a quoted field left open at the end of the file). TSV: a field that
     * starts with a quote is quoted as in CSV (Python's excel-tab, pandas); other quotes are
     * taken as they are. */
    return format == FMT_CSV ? CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL : CSV_APPEND_NULL;
}

/* Reads CSV/TSV. The parser is fed a physical line at a time so that every record knows the
 * line it started on (a quoted field may span lines). */
static int convert_csv(conv_t *c, FILE *fp, int format, sl_error_t *err)
{
    struct csv_parser p;
    if (csv_init(&p, (unsigned char)csv_options(format)) != 0)
        SL_FATAL("csv_init failed");
    csv_setup(&p, format);
    csv_ctx_t x = {0};
    x.c = c;
    x.err = err;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, fp)) != -1) {
        x.lineno++;
        if (x.rec_start == 0) {
            if ((n == 1 && line[0] == '\n') || (n == 2 && line[0] == '\r' && line[1] == '\n'))
                continue; /* a blank line between records */
            x.rec_start = x.lineno;
        }
        size_t used = csv_parse(&p, line, (size_t)n, csv_field, csv_record, &x);
        if (x.failed) {
            rc = -1;
            break;
        }
        if (used < (size_t)n) {
            /* a malformed record: report it from its first line, then start afresh on the
             * next line */
            int64_t l0 = x.rec_start ? x.rec_start : x.lineno;
            if (!x.header_done)
                rc = sl_errorf(err, "%s:%lld: header: malformed %s (%s)", c->path, (long long)l0,
                               format == FMT_CSV ? "CSV" : "TSV", csv_strerror(csv_error(&p)));
            else
                rc = bad_line(c, l0, x.lineno, err,
                              "malformed %s (%s: a quote inside an unquoted field, or text after a "
                              "closing quote)",
                              format == FMT_CSV ? "CSV" : "TSV", csv_strerror(csv_error(&p)));
            csv_free(&p);
            csv_init(&p, (unsigned char)csv_options(format));
            csv_setup(&p, format);
            fields_clear(&x);
            x.rec_start = 0;
        }
    }
    if (rc == 0 && ferror(fp))
        rc = sl_errorf(err, "%s: read error after line %lld", c->path, (long long)x.lineno);
    if (rc == 0) {
        int64_t l0 = x.rec_start;
        if (csv_fini(&p, csv_field, csv_record, &x) != 0) {
            rc = bad_line(c, l0, x.lineno, err,
                          "a quoted field is not closed before the end of the file");
        } else if (x.failed)
            rc = -1;
        else if (!x.header_done)
            rc = sl_errorf(err, "%s: empty (a header row is expected)", c->path);
    }
    csv_free(&p);
    csv_ctx_free(&x);
    free(line);
    return rc;
}

/* ---- the command -------------------------------------------------------------------------------
 */

static int format_from_name(const char *s)
{
    if (!strcmp(s, "jsonl") || !strcmp(s, "ndjson"))
        return FMT_JSONL;
    if (!strcmp(s, "csv"))
        return FMT_CSV;
    if (!strcmp(s, "tsv") || !strcmp(s, "tab"))
        return FMT_TSV;
    if (!strcmp(s, "text") || !strcmp(s, "txt"))
        return FMT_TEXT;
    if (!strcmp(s, "parquet") || !strcmp(s, "pq"))
        return FMT_PARQUET;
    return FMT_UNKNOWN;
}

static int format_from_path(const char *path)
{
    const char *base = strrchr(path, '/');
    const char *dot = strrchr(base ? base : path, '.');
    return dot ? format_from_name(dot + 1) : FMT_UNKNOWN;
}

static void convert_usage(FILE *out)
{
    fprintf(
        out,
        "usage: shardline convert IN... --to DIR [options]\n\n"
        "Turns JSONL, CSV, TSV or plain-text files into the HDF5 input shards of shardline run:\n"
        "DIR/shard-NNNNNN.h5 (in input order) with /text [rows] UTF-8 strings, or /features\n"
        "[rows, d] float32 with --features, and /ids [rows] with --id-field. IN '-' is standard\n"
        "input (give --format). Streaming: memory does not grow with the files.\n\n"
        "options:\n"
        "  --to DIR                       output directory (created; must hold no shard-*.h5) "
        "(required)\n"
        "  --format jsonl|csv|tsv|text    input format [default: from each file's extension:\n"
        "                                 .jsonl/.ndjson, .csv, .tsv/.tab, .txt/.text]\n"
        "  --rows-per-shard N             rows per shard [default: 100000] [range: 1..%lld]\n"
        "  --text-field F                 JSONL field / CSV column of the text [default: text]\n"
        "  --features COLS                float features instead of text: comma-separated fields\n"
        "                                 (JSONL: numbers or arrays of numbers, concatenated) or\n"
        "                                 columns, A..B being every column from A to B (CSV/TSV)\n"
        "  --id-field F                   JSONL field / CSV column copied to /ids (strings; "
        "numbers\n"
        "                                 as their decimal text)\n"
        "  --on-bad-line fail|skip        a bad line (invalid JSON or UTF-8, missing field, wrong\n"
        "                                 column count, not a number) stops the conversion and\n"
        "                                 removes its shards (fail), or is reported and counted\n"
        "                                 (skip) [default: fail]\n"
        "  --quiet                        no summary line\n"
        "  -h, --help                     this help\n\n"
        "Parquet is not read: Debian 12 ships no Apache Arrow/Parquet C library.\n"
        "exit status: 0 done; 2 usage; 3 bad input (FILE:LINE: reason) or output directory.\n",
        (long long)CV_MAX_ROWS_PER_SHARD);
}

/* mkdir -p, then a writable directory */
static int make_dirs(const char *dir, sl_error_t *err)
{
    if (sl_mkdir_p(dir, err) != 0)
        return sl_error_prefix(err, "--to %s", dir);
    if (access(dir, W_OK) != 0)
        return sl_errorf(err, "--to %s: not writable", dir);
    return 0;
}

/* The directory must not hold shards already: a new conversion mixed with an old one would be
 * read as one dataset. */
static int check_empty_of_shards(const char *dir, sl_error_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return sl_errorf(err, "--to %s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strncmp(e->d_name, "shard-", 6) && strstr(e->d_name, ".h5")) {
            rc = sl_errorf(
                err, "--to %s: already holds shards (%s); remove them or choose another directory",
                dir, e->d_name);
            break;
        }
    }
    closedir(d);
    return rc;
}

static int write_summary(const conv_t *c, char **inputs, int nin, sl_error_t *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *ins = cJSON_AddArrayToObject(o, "inputs");
    for (int i = 0; i < nin; i++)
        cJSON_AddItemToArray(ins, cJSON_CreateString(inputs[i]));
    cJSON_AddNumberToObject(o, "rows", (double)c->rows);
    cJSON_AddNumberToObject(o, "shards", c->shard);
    cJSON_AddNumberToObject(o, "rows_per_shard", (double)c->rows_per_shard);
    cJSON_AddNumberToObject(o, "bad_lines_skipped", (double)c->bad);
    cJSON_AddStringToObject(o, "dataset", is_features(c) ? "features" : "text");
    if (is_features(c))
        cJSON_AddNumberToObject(o, "features", (double)c->d);
    else
        cJSON_AddStringToObject(o, "text_field", c->text_field);
    if (c->id_field)
        cJSON_AddStringToObject(o, "id_field", c->id_field);
    cJSON_AddStringToObject(o, "shardline_version", SL_VERSION);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/convert.json", c->to);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f)
        ok = fclose(f) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return sl_errorf(err, "%s: cannot write", path);
    }
    return 0;
}

/* Removes what a failed conversion wrote, so nothing partial looks like a result. */
static void remove_outputs(conv_t *c)
{
    if (c->f >= 0) {
        H5Dclose(c->dmain);
        if (c->dids >= 0)
            H5Dclose(c->dids);
        H5Fclose(c->f);
        unlink(c->tmp);
        c->f = -1;
    }
    for (int k = 0; k < c->shard; k++) {
        char p[4200];
        if (shard_name(c, k, p, sizeof p) == 0)
            unlink(p);
    }
}

int sl_convert_main(int argc, char **argv)
{
    sl_h5_quiet();
    conv_t c;
    memset(&c, 0, sizeof c);
    c.rows_per_shard = 100000;
    c.text_field = "text";
    c.d = -1;
    c.f = c.dmain = c.dids = -1;
    const char *features = NULL, *format = NULL, *onbad = "fail";
    static const struct option longopts[] = {{"to", required_argument, NULL, 't'},
                                             {"rows-per-shard", required_argument, NULL, 'r'},
                                             {"text-field", required_argument, NULL, 'x'},
                                             {"id-field", required_argument, NULL, 'i'},
                                             {"features", required_argument, NULL, 'f'},
                                             {"format", required_argument, NULL, 'F'},
                                             {"on-bad-line", required_argument, NULL, 'b'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 't': c.to = optarg; break;
        case 'x': c.text_field = optarg; break;
        case 'i': c.id_field = optarg; break;
        case 'f': features = optarg; break;
        case 'F': format = optarg; break;
        case 'b': onbad = optarg; break;
        case 'q': c.quiet = 1; break;
        case 'h': convert_usage(stdout); return SL_EXIT_OK;
        case 'r': {
            char *end = NULL;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > CV_MAX_ROWS_PER_SHARD) {
                fprintf(stderr,
                        "shardline: error: --rows-per-shard '%s': not an integer in [1, %lld]\n",
                        optarg, (long long)CV_MAX_ROWS_PER_SHARD);
                return SL_EXIT_USAGE;
            }
            c.rows_per_shard = v;
            break;
        }
        case ':':
            fprintf(stderr, "shardline: error: option '%s' needs a value\n", argv[optind - 1]);
            return SL_EXIT_USAGE;
        default:
            fprintf(stderr,
                    "shardline: error: unknown option '%s' (see shardline convert --help)\n",
                    argv[optind - 1]);
            return SL_EXIT_USAGE;
        }
    }
    char **inputs = argv + optind;
    int nin = argc - optind;
    int fmt = FMT_AUTO;
    const char *usage_err = NULL;
    char ubuf[512];
    if (nin == 0)
        usage_err = "no input file (see shardline convert --help)";
    else if (!c.to)
        usage_err = "--to DIR is required";
    else if (strcmp(onbad, "fail") && strcmp(onbad, "skip"))
        snprintf(ubuf, sizeof ubuf, "--on-bad-line '%s': expected fail or skip", onbad),
            usage_err = ubuf;
    else if (format && (fmt = format_from_name(format)) == FMT_UNKNOWN)
        snprintf(ubuf, sizeof ubuf, "--format '%s': expected jsonl, csv, tsv or text", format),
            usage_err = ubuf;
    else if (!c.text_field[0] || (c.id_field && !c.id_field[0]))
        usage_err = "--text-field and --id-field must not be empty";
    if (usage_err) {
        fprintf(stderr, "shardline: error: %s\n", usage_err);
        return SL_EXIT_USAGE;
    }
    c.skip_bad = !strcmp(onbad, "skip");
    /* every input's format, before anything is written */
    int *fmts = sl_xcalloc((size_t)nin, sizeof(int));
    int status = SL_EXIT_OK;
    sl_error_t err = {{0}};
    for (int i = 0; i < nin && status == SL_EXIT_OK; i++) {
        int f = fmt != FMT_AUTO ? fmt : format_from_path(inputs[i]);
        fmts[i] = f;
        if (f == FMT_PARQUET) {
            sl_errorf(
                &err,
                "%s: Parquet is not supported: Debian 12 has no Apache Arrow/Parquet C "
                "library to read it; convert it to JSONL or CSV first (e.g. with pandas or DuckDB)",
                inputs[i]);
            status = SL_EXIT_INPUT;
        } else if (f == FMT_UNKNOWN || f == FMT_AUTO) {
            sl_errorf(&err,
                      "%s: cannot tell the format from the name (.jsonl, .ndjson, .csv, .tsv, "
                      ".txt); give --format",
                      inputs[i]);
            status = SL_EXIT_USAGE;
        } else if (f == FMT_TEXT && (features || c.id_field)) {
            sl_errorf(&err,
                      "%s: plain text has only the text: --features and --id-field need JSONL, CSV "
                      "or TSV",
                      inputs[i]);
            status = SL_EXIT_USAGE;
        } else if (f == FMT_JSONL && features && strstr(features, "..")) {
            sl_errorf(&err,
                      "%s: --features %s: column ranges (A..B) need a CSV/TSV header; name the "
                      "JSONL fields",
                      inputs[i], features);
            status = SL_EXIT_USAGE;
        } else if (strcmp(inputs[i], "-") && access(inputs[i], R_OK) != 0) {
            sl_errorf(&err, "%s: %s", inputs[i], strerror(errno));
            status = SL_EXIT_INPUT;
        }
    }
    /* --features: comma-separated items, none empty */
    char *featcopy = features ? sl_xstrdup(features) : NULL;
    if (status == SL_EXIT_OK && featcopy) {
        c.feat = sl_xcalloc(strlen(featcopy) + 1, sizeof(char *));
        for (char *save = NULL, *tok = strtok_r(featcopy, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save))
            c.feat[c.nfeat++] = tok;
        if (c.nfeat == 0 || strstr(features, ",,") || features[0] == ',' ||
            features[strlen(features) - 1] == ',') {
            sl_errorf(&err, "--features '%s': expected comma-separated names or A..B ranges",
                      features);
            status = SL_EXIT_USAGE;
        }
    }
    if (status == SL_EXIT_OK &&
        (make_dirs(c.to, &err) != 0 || check_empty_of_shards(c.to, &err) != 0))
        status = SL_EXIT_INPUT;
    for (int i = 0; i < nin && status == SL_EXIT_OK; i++) {
        int stdin_input = !strcmp(inputs[i], "-");
        c.path = stdin_input ? "<stdin>" : inputs[i];
        FILE *fp = stdin_input ? stdin : fopen(inputs[i], "rb");
        if (!fp) {
            sl_errorf(&err, "%s: %s", inputs[i], strerror(errno));
            status = SL_EXIT_INPUT;
            break;
        }
        int rc = fmts[i] == FMT_CSV || fmts[i] == FMT_TSV ? convert_csv(&c, fp, fmts[i], &err)
                                                          : convert_lines(&c, fp, fmts[i], &err);
        if (!stdin_input)
            fclose(fp);
        if (rc != 0)
            status = SL_EXIT_INPUT;
    }
    if (status == SL_EXIT_OK && block_flush(&c, &err) != 0)
        status = SL_EXIT_INPUT;
    if (status == SL_EXIT_OK && c.f >= 0 && shard_close(&c, &err) != 0)
        status = SL_EXIT_INPUT;
    if (status == SL_EXIT_OK && c.rows == 0) {
        sl_errorf(&err, "no rows in the input%s", c.bad ? " (every line was bad and skipped)" : "");
        status = SL_EXIT_INPUT;
    }
    if (status == SL_EXIT_OK && write_summary(&c, inputs, nin, &err) != 0)
        status = SL_EXIT_INPUT;
    if (status != SL_EXIT_OK) {
        remove_outputs(&c);
        fprintf(stderr, "shardline: error: %s\n", err.msg);
        if (c.rows > 0)
            fprintf(stderr,
                    "shardline: convert: nothing kept: the shards written so far were removed\n");
    } else if (!c.quiet) {
        fprintf(
            stderr,
            "shardline: convert: %lld rows from %d file(s) -> %d shard(s) in %s (dataset '%s'%s)",
            (long long)c.rows, nin, c.shard, c.to, is_features(&c) ? "features" : "text",
            c.id_field ? ", ids" : "");
        if (c.skip_bad)
            fprintf(stderr, "; %lld bad line(s) skipped", (long long)c.bad);
        fprintf(stderr, "\nshardline: convert: run it with --input '%s/shard-*.h5'\n", c.to);
    }
    block_clear(&c);
    free(c.texts);
    free(c.ids);
    free(c.feats);
    free(c.feat);
    free(featcopy);
    free(fmts);
    return status;
}
