/*
 * export.c — `shardline export OUT --to FILE.jsonl|FILE.csv`: one record per row of a finished
 * job, in input order, from OUT/predictions.h5 (its output datasets, /shards and /errors) and
 * the input shards it names (their /ids, when every shard has one). Fields:
 *
 *   row          the global row index (input order)
 *   id           the input shard's /ids entry (when the shards have ids)
 *   source, source_row   the input shard's path and the row inside it (when they have none)
 *   <output>     each output dataset: a number, or a JSON array / CSV columns <output>_<j> for
 *                [rows, cols] outputs; strings for text outputs; non-finite values are null
 *                (JSON) or empty (CSV)
 *   label        classification: the name of /labels' class (from the "labels" attribute)
 *   error        the row's failure reason from /errors; null (JSON) or empty (CSV) when it did
 *                not fail
 *
 * Rows are read in blocks of at most EX_BLOCK_ROWS rows / EX_BLOCK_BYTES bytes, so memory does
 * not grow with the job (the failed rows' reasons are held, sorted by row). The file is written
 * under a temporary name and renamed, so a FILE that exists is complete.
 */
#include <errno.h>
#include <getopt.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/sl_error.h"
#include "common/sl_utf8.h"
#include "jobs/h5util.h"
#include "jobs/output.h"
#include "cli/convert.h"

#define EX_BLOCK_ROWS 4096
#define EX_BLOCK_BYTES ((size_t)32 << 20)
#define EX_MAX_OUTPUTS 32

enum { OUT_FLOAT, OUT_INT, OUT_STR };

typedef struct {
    char name[256];
    hid_t d;
    int kind;     /* OUT_* */
    int64_t cols; /* 0: [rows] */
    int vlen;     /* strings: variable length (else fixed, size bytes) */
    size_t size;
    H5T_cset_t cset;
    /* the block */
    double *num; /* [block, max(cols,1)] */
    char **str;  /* [block] */
    char *fixed; /* [block * size] */
} ex_out_t;

typedef struct {
    char *path;
    int64_t first_row, rows;
} ex_shard_t;

typedef struct {
    int64_t row;
    char *reason;
} ex_err_t;

/* The fields of a record, in order. */
enum { F_ROW, F_ID, F_SOURCE, F_SOURCE_ROW, F_LABEL, F_ERROR, F_OUTPUT };
typedef struct {
    int kind;
    int out; /* F_OUTPUT: index into outs */
} ex_field_t;

typedef struct {
    hid_t pf;
    ex_out_t outs[EX_MAX_OUTPUTS];
    int nouts;
    ex_shard_t *shards;
    int nshards;
    ex_err_t *errs;
    int64_t nerrs;
    int64_t total;
    int has_ids;
    char **labels; /* class names, or NULL */
    int nlabels, labels_out;
    ex_field_t fields[EX_MAX_OUTPUTS + 8];
    int nfields;
    int csv;
    FILE *fp;
    /* the input shard whose ids are open */
    int ids_shard;
    hid_t ids_f, ids_d;
} ex_t;

static herr_t collect_output(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    ex_t *x = data;
    if (!strcmp(name, "shards") || !strcmp(name, "errors") || x->nouts == EX_MAX_OUTPUTS)
        return 0;
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0)
        return 0;
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5T_class_t cls = H5Tget_class(t);
    ex_out_t *o = &x->outs[x->nouts];
    memset(o, 0, sizeof *o);
    int ok = (nd == 1 || nd == 2) && (int64_t)dims[0] == x->total &&
             (cls == H5T_FLOAT || cls == H5T_INTEGER || (cls == H5T_STRING && nd == 1));
    if (ok) {
        snprintf(o->name, sizeof o->name, "%s", name);
        o->d = d;
        o->kind = cls == H5T_FLOAT ? OUT_FLOAT : cls == H5T_INTEGER ? OUT_INT : OUT_STR;
        o->cols = nd == 2 ? (int64_t)dims[1] : 0;
        if (o->kind == OUT_STR) {
            o->vlen = H5Tis_variable_str(t) > 0;
            o->size = H5Tget_size(t);
            o->cset = H5Tget_cset(t);
        }
        x->nouts++;
    } else {
        H5Dclose(d);
    }
    H5Tclose(t);
    H5Sclose(sp);
    return 0;
}

/* /shards (path, first_row, rows) and /errors (row, reason), sorted by row. */
typedef struct {
    char *path;
    int64_t first_row, rows;
} shard_rec_t;
typedef struct {
    int64_t row;
    char *reason;
} err_rec_t;

static int cmp_err(const void *a, const void *b)
{
    int64_t x = ((const ex_err_t *)a)->row, y = ((const ex_err_t *)b)->row;
    return x < y ? -1 : x > y;
}

static int read_tables(ex_t *x, const char *path, sl_error_t *err)
{
    hid_t st = sl_h5_vlen_str_type();
    int rc = 0;
    hid_t d = H5Dopen2(x->pf, "shards", H5P_DEFAULT);
    if (d < 0) {
        H5Tclose(st);
        return sl_errorf(err, "%s: no /shards dataset (not a shardline predictions file?)", path);
    }
    hid_t ct = H5Tcreate(H5T_COMPOUND, sizeof(shard_rec_t));
    H5Tinsert(ct, "path", HOFFSET(shard_rec_t, path), st);
    H5Tinsert(ct, "first_row", HOFFSET(shard_rec_t, first_row), H5T_NATIVE_INT64);
    H5Tinsert(ct, "rows", HOFFSET(shard_rec_t, rows), H5T_NATIVE_INT64);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    shard_rec_t *recs = sl_xcalloc((size_t)n + 1, sizeof *recs);
    if (H5Dread(d, ct, H5S_ALL, H5S_ALL, H5P_DEFAULT, recs) < 0) {
        rc = sl_errorf(err, "%s: cannot read /shards", path);
    } else {
        x->shards = sl_xcalloc((size_t)n + 1, sizeof *x->shards);
        x->nshards = (int)n;
        for (hssize_t i = 0; i < n; i++)
            x->shards[i] = (ex_shard_t){sl_xstrdup(recs[i].path ? recs[i].path : ""),
                                        recs[i].first_row, recs[i].rows};
        H5Dvlen_reclaim(ct, sp, H5P_DEFAULT, recs);
    }
    free(recs);
    H5Sclose(sp);
    H5Tclose(ct);
    H5Dclose(d);
    if (rc == 0 && (d = H5Dopen2(x->pf, "errors", H5P_DEFAULT)) >= 0) {
        hid_t et = H5Tcreate(H5T_COMPOUND, sizeof(err_rec_t));
        H5Tinsert(et, "row", HOFFSET(err_rec_t, row), H5T_NATIVE_INT64);
        H5Tinsert(et, "reason", HOFFSET(err_rec_t, reason), st);
        sp = H5Dget_space(d);
        n = H5Sget_simple_extent_npoints(sp);
        err_rec_t *er = sl_xcalloc((size_t)n + 1, sizeof *er);
        if (H5Dread(d, et, H5S_ALL, H5S_ALL, H5P_DEFAULT, er) < 0) {
            rc = sl_errorf(err, "%s: cannot read /errors", path);
        } else {
            x->errs = sl_xcalloc((size_t)n + 1, sizeof *x->errs);
            x->nerrs = n;
            for (hssize_t i = 0; i < n; i++)
                x->errs[i] = (ex_err_t){er[i].row, sl_xstrdup(er[i].reason ? er[i].reason : "")};
            H5Dvlen_reclaim(et, sp, H5P_DEFAULT, er);
            qsort(x->errs, (size_t)x->nerrs, sizeof *x->errs, cmp_err);
        }
        free(er);
        H5Sclose(sp);
        H5Tclose(et);
        H5Dclose(d);
    }
    H5Tclose(st);
    return rc;
}

/* Class names: the "labels" attribute of a classification's first output. */
static void read_labels(ex_t *x)
{
    for (int i = 0; i < x->nouts && !x->labels; i++) {
        if (H5Aexists(x->outs[i].d, "labels") <= 0)
            continue;
        hid_t a = H5Aopen(x->outs[i].d, "labels", H5P_DEFAULT);
        hid_t sp = H5Aget_space(a);
        hssize_t n = H5Sget_simple_extent_npoints(sp);
        hid_t st = sl_h5_vlen_str_type();
        char **tmp = sl_xcalloc((size_t)n + 1, sizeof *tmp);
        if (H5Aread(a, st, tmp) >= 0) {
            x->labels = sl_xcalloc((size_t)n + 1, sizeof *x->labels);
            x->nlabels = (int)n;
            for (hssize_t k = 0; k < n; k++)
                x->labels[k] = sl_xstrdup(tmp[k] ? tmp[k] : "");
            H5Dvlen_reclaim(st, sp, H5P_DEFAULT, tmp);
        }
        free(tmp);
        H5Tclose(st);
        H5Sclose(sp);
        H5Aclose(a);
    }
    x->labels_out = -1;
    for (int i = 0; i < x->nouts && x->labels; i++)
        if (!strcmp(x->outs[i].name, "labels") && x->outs[i].kind == OUT_INT &&
            x->outs[i].cols == 0)
            x->labels_out = i;
}

/* Whether every input shard has /ids with its rows; *missing names a shard that cannot be
 * opened (its ids cannot be joined). */
static int inputs_have_ids(const ex_t *x, sl_error_t *err)
{
    int with = 0;
    for (int i = 0; i < x->nshards; i++) {
        sl_error_t e;
        hid_t f = sl_h5_open_ro(x->shards[i].path, &e);
        if (f < 0) {
            fprintf(stderr,
                    "shardline: warning: input %s: cannot open (%s); rows are named by "
                    "source and source_row, without ids\n",
                    x->shards[i].path, e.msg);
            return 0;
        }
        int has = H5Lexists(f, "ids", H5P_DEFAULT) > 0;
        if (has) {
            hid_t d = H5Dopen2(f, "ids", H5P_DEFAULT);
            hid_t sp = H5Dget_space(d);
            hsize_t dims[2] = {0, 0};
            int nd = H5Sget_simple_extent_ndims(sp);
            H5Sget_simple_extent_dims(sp, dims, NULL);
            H5Sclose(sp);
            H5Dclose(d);
            if (nd != 1 || (int64_t)dims[0] != x->shards[i].rows) {
                H5Fclose(f);
                return sl_errorf(err, "%s: /ids has %lld rows, the shard had %lld when the job ran",
                                 x->shards[i].path, (long long)dims[0],
                                 (long long)x->shards[i].rows);
            }
        }
        H5Fclose(f);
        with += has;
    }
    if (with > 0 && with < x->nshards)
        fprintf(stderr,
                "shardline: warning: only %d of %d input shards have /ids; rows are named by "
                "source and source_row\n",
                with, x->nshards);
    return with == x->nshards && with > 0;
}

/* ---- writing -------------------------------------------------------------------------------- */

/* A JSON string: quotes, backslashes and control characters escaped; bytes that are not
 * valid UTF-8 become U+FFFD, so every line is valid JSON. */
static void json_str(FILE *fp, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    fputc('"', fp);
    size_t i = 0;
    while (i < n) {
        unsigned char ch = p[i];
        if (ch >= 0x80) {
            size_t len = ch < 0xe0 ? 2 : ch < 0xf0 ? 3 : 4;
            size_t lim = n - i < 4 ? n - i : 4;
            if (sl_utf8_check(p + i, lim) >= len) {
                fwrite(p + i, 1, len, fp);
                i += len;
            } else {
                fputs("\\ufffd", fp);
                i++;
            }
            continue;
        }
        if (ch == '"' || ch == '\\') {
            fputc('\\', fp);
            fputc(ch, fp);
        } else if (ch == '\n')
            fputs("\\n", fp);
        else if (ch == '\r')
            fputs("\\r", fp);
        else if (ch == '\t')
            fputs("\\t", fp);
        else if (ch < 0x20)
            fprintf(fp, "\\u%04x", ch);
        else
            fputc(ch, fp);
        i++;
    }
    fputc('"', fp);
}

/* A CSV field: quoted (RFC 4180) when it holds a comma, quote, CR or LF. */
static void csv_str(FILE *fp, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, fp);
        return;
    }
    fputc('"', fp);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', fp);
        fputc(*s, fp);
    }
    fputc('"', fp);
}

static void put_num(const ex_t *x, const ex_out_t *o, double v)
{
    if (o->kind == OUT_INT)
        fprintf(x->fp, "%lld", (long long)v);
    else if (!isfinite(v))
        fputs(x->csv ? "" : "null", x->fp);
    else
        fprintf(x->fp, "%.9g", v); /* float32 round-trips through 9 significant digits */
}

static void put_str(const ex_t *x, const char *s)
{
    if (x->csv)
        csv_str(x->fp, s);
    else
        json_str(x->fp, s);
}

static const char *field_name(const ex_t *x, const ex_field_t *f)
{
    static const char *const names[] = {"row", "id", "source", "source_row", "label", "error"};
    return f->kind == F_OUTPUT ? x->outs[f->out].name : names[f->kind];
}

static void write_header(ex_t *x)
{
    if (!x->csv)
        return;
    for (int k = 0; k < x->nfields; k++) {
        const ex_field_t *f = &x->fields[k];
        if (k)
            fputc(',', x->fp);
        if (f->kind == F_OUTPUT && x->outs[f->out].cols > 0) {
            for (int64_t j = 0; j < x->outs[f->out].cols; j++) {
                char name[300];
                snprintf(name, sizeof name, "%s_%lld", x->outs[f->out].name, (long long)j);
                if (j)
                    fputc(',', x->fp);
                csv_str(x->fp, name);
            }
        } else {
            csv_str(x->fp, field_name(x, f));
        }
    }
    fputc('\n', x->fp);
}

/* Reads rows [r0, r0+n) of every output into its block buffers. */
static int read_block(ex_t *x, int64_t r0, int64_t n, sl_error_t *err)
{
    for (int i = 0; i < x->nouts; i++) {
        ex_out_t *o = &x->outs[i];
        hid_t fs = H5Dget_space(o->d);
        int nd = o->cols ? 2 : 1;
        hsize_t start[2] = {(hsize_t)r0, 0}, count[2] = {(hsize_t)n, (hsize_t)o->cols};
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
        hid_t ms = H5Screate_simple(nd, count, NULL);
        herr_t e;
        if (o->kind != OUT_STR) {
            e = H5Dread(o->d, H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, o->num);
        } else if (o->vlen) {
            hid_t mt = sl_h5_vlen_str_type();
            H5Tset_cset(mt, o->cset);
            e = H5Dread(o->d, mt, ms, fs, H5P_DEFAULT, o->str);
            H5Tclose(mt);
        } else {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, o->size);
            H5Tset_strpad(mt, H5T_STR_NULLPAD);
            H5Tset_cset(mt, o->cset);
            e = H5Dread(o->d, mt, ms, fs, H5P_DEFAULT, o->fixed);
            H5Tclose(mt);
        }
        H5Sclose(ms);
        H5Sclose(fs);
        if (e < 0)
            return sl_errorf(err,
                             "/%s: cannot read rows %lld..%lld (a part file missing or corrupt? "
                             "see shardline status)",
                             o->name, (long long)r0, (long long)(r0 + n));
    }
    return 0;
}

static void free_block_strings(ex_t *x, int64_t n)
{
    for (int i = 0; i < x->nouts; i++) {
        ex_out_t *o = &x->outs[i];
        if (o->kind != OUT_STR || !o->vlen)
            continue;
        hsize_t cnt = (hsize_t)n;
        hid_t ms = H5Screate_simple(1, &cnt, NULL);
        hid_t mt = sl_h5_vlen_str_type();
        H5Dvlen_reclaim(mt, ms, H5P_DEFAULT, o->str);
        H5Tclose(mt);
        H5Sclose(ms);
        memset(o->str, 0, (size_t)n * sizeof *o->str);
    }
}

/* The ids of global rows [r0, r0+n) (the input shards' /ids, read a shard's stretch at a
 * time) into ids[0..n) as malloc'd strings. */
static int read_ids(ex_t *x, int64_t r0, int64_t n, char **ids, sl_error_t *err)
{
    int shard = 0;
    for (int64_t got = 0; got < n;) {
        int64_t row = r0 + got;
        while (shard + 1 < x->nshards && row >= x->shards[shard].first_row + x->shards[shard].rows)
            shard++;
        const ex_shard_t *s = &x->shards[shard];
        int64_t local = row - s->first_row;
        int64_t m = s->rows - local < n - got ? s->rows - local : n - got;
        if (x->ids_shard != shard) {
            if (x->ids_f >= 0) {
                H5Dclose(x->ids_d);
                H5Fclose(x->ids_f);
                x->ids_f = x->ids_d = -1;
            }
            x->ids_f = sl_h5_open_ro(s->path, err);
            if (x->ids_f < 0)
                return -1;
            x->ids_d = H5Dopen2(x->ids_f, "ids", H5P_DEFAULT);
            x->ids_shard = shard;
        }
        hid_t fs = H5Dget_space(x->ids_d);
        hsize_t start = (hsize_t)local, cnt = (hsize_t)m;
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &cnt, NULL);
        hid_t ms = H5Screate_simple(1, &cnt, NULL);
        hid_t ft = H5Dget_type(x->ids_d);
        int rc = 0;
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = sl_h5_vlen_str_type();
            H5Tset_cset(mt, H5Tget_cset(ft));
            char **v = sl_xcalloc((size_t)m, sizeof *v);
            if (H5Dread(x->ids_d, mt, ms, fs, H5P_DEFAULT, v) < 0)
                rc = -1;
            else {
                for (int64_t i = 0; i < m; i++)
                    ids[got + i] = sl_xstrdup(v[i] ? v[i] : "");
                H5Dvlen_reclaim(mt, ms, H5P_DEFAULT, v);
            }
            free(v);
            H5Tclose(mt);
        } else if (H5Tget_class(ft) == H5T_INTEGER) {
            long long *v = sl_xcalloc((size_t)m, sizeof *v);
            rc = H5Dread(x->ids_d, H5T_NATIVE_LLONG, ms, fs, H5P_DEFAULT, v) < 0 ? -1 : 0;
            for (int64_t i = 0; rc == 0 && i < m; i++) {
                char b[32];
                snprintf(b, sizeof b, "%lld", v[i]);
                ids[got + i] = sl_xstrdup(b);
            }
            free(v);
        } else if (H5Tget_class(ft) == H5T_STRING) {
            size_t w = H5Tget_size(ft);
            char *v = sl_xcalloc((size_t)m * w + 1, 1);
            hid_t mt = H5Tcopy(ft);
            H5Tset_strpad(mt, H5T_STR_NULLPAD);
            rc = H5Dread(x->ids_d, mt, ms, fs, H5P_DEFAULT, v) < 0 ? -1 : 0;
            for (int64_t i = 0; rc == 0 && i < m; i++)
                ids[got + i] = strndup(v + (size_t)i * w, w);
            H5Tclose(mt);
            free(v);
        } else {
            rc = -1;
        }
        H5Tclose(ft);
        H5Sclose(ms);
        H5Sclose(fs);
        if (rc != 0)
            return sl_errorf(err,
                             "%s: /ids: cannot read rows %lld..%lld (strings or integers expected)",
                             s->path, (long long)local, (long long)(local + m));
        got += m;
    }
    return 0;
}

static int export_rows(ex_t *x, sl_error_t *err)
{
    size_t row_bytes = 64;
    for (int i = 0; i < x->nouts; i++)
        row_bytes += x->outs[i].kind == OUT_STR
                         ? (x->outs[i].vlen ? 8 : x->outs[i].size)
                         : 8 * (size_t)(x->outs[i].cols ? x->outs[i].cols : 1);
    int64_t B = (int64_t)(EX_BLOCK_BYTES / row_bytes);
    B = B < 1 ? 1 : B > EX_BLOCK_ROWS ? EX_BLOCK_ROWS : B;
    for (int i = 0; i < x->nouts; i++) {
        ex_out_t *o = &x->outs[i];
        if (o->kind != OUT_STR)
            o->num = sl_xmalloc((size_t)B * (size_t)(o->cols ? o->cols : 1) * sizeof(double));
        else if (o->vlen)
            o->str = sl_xcalloc((size_t)B, sizeof(char *));
        else
            o->fixed = sl_xcalloc((size_t)B * o->size + 1, 1);
    }
    write_header(x);
    int64_t next_err = 0;
    int shard = 0;
    char **ids = x->has_ids ? sl_xcalloc((size_t)B, sizeof *ids) : NULL;
    int rc = 0;
    for (int64_t r0 = 0; r0 < x->total; r0 += B) {
        int64_t n = x->total - r0 < B ? x->total - r0 : B;
        if (read_block(x, r0, n, err) != 0 || (ids && read_ids(x, r0, n, ids, err) != 0)) {
            rc = -1;
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t row = r0 + i;
            while (shard + 1 < x->nshards &&
                   row >= x->shards[shard].first_row + x->shards[shard].rows)
                shard++;
            int64_t local = row - x->shards[shard].first_row;
            while (next_err < x->nerrs && x->errs[next_err].row < row)
                next_err++;
            const char *reason = next_err < x->nerrs && x->errs[next_err].row == row
                                     ? x->errs[next_err].reason
                                     : NULL;
            if (!x->csv)
                fputc('{', x->fp);
            for (int k = 0; k < x->nfields; k++) {
                const ex_field_t *f = &x->fields[k];
                if (k)
                    fputc(',', x->fp);
                if (!x->csv)
                    fprintf(x->fp, "\"%s\":", field_name(x, f));
                switch (f->kind) {
                case F_ROW: fprintf(x->fp, "%lld", (long long)row); break;
                case F_SOURCE_ROW: fprintf(x->fp, "%lld", (long long)local); break;
                case F_SOURCE: put_str(x, x->shards[shard].path); break;
                case F_ID: put_str(x, ids ? ids[i] : ""); break;
                case F_ERROR:
                    if (reason)
                        put_str(x, reason);
                    else if (!x->csv)
                        fputs("null", x->fp);
                    break;
                case F_LABEL: {
                    int64_t c = (int64_t)x->outs[x->labels_out].num[i];
                    if (c >= 0 && c < x->nlabels)
                        put_str(x, x->labels[c]);
                    else if (!x->csv)
                        fputs("null", x->fp);
                    break;
                }
                case F_OUTPUT: {
                    const ex_out_t *o = &x->outs[f->out];
                    if (o->kind == OUT_STR) {
                        if (o->vlen)
                            put_str(x, o->str[i] ? o->str[i] : "");
                        else {
                            char *t = sl_xcalloc(o->size + 1, 1);
                            memcpy(t, o->fixed + (size_t)i * o->size, o->size);
                            put_str(x, t);
                            free(t);
                        }
                    } else if (o->cols == 0) {
                        put_num(x, o, o->num[i]);
                    } else {
                        if (!x->csv)
                            fputc('[', x->fp);
                        for (int64_t j = 0; j < o->cols; j++) {
                            if (j)
                                fputc(',', x->fp);
                            put_num(x, o, o->num[i * o->cols + j]);
                        }
                        if (!x->csv)
                            fputc(']', x->fp);
                    }
                    break;
                }
                }
            }
            fputs(x->csv ? "\n" : "}\n", x->fp);
        }
        free_block_strings(x, n);
        for (int64_t i = 0; ids && i < n; i++) {
            free(ids[i]);
            ids[i] = NULL;
        }
        if (ferror(x->fp)) {
            rc = sl_errorf(err, "write error (disk full?)");
            break;
        }
    }
    free(ids);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------------
 */

static void export_usage(FILE *out)
{
    fprintf(
        out,
        "usage: shardline export OUTPUT_DIR --to FILE.jsonl|FILE.csv [options]\n\n"
        "Writes a finished job's predictions (OUTPUT_DIR/predictions.h5) as one record per row, "
        "in\n"
        "input order, joined with the input shards' /ids (or their path and row), the row's\n"
        "failure reason included. Streaming: memory does not grow with the job.\n\n"
        "options:\n"
        "  --to FILE                    the file to write (replaced when it exists) (required)\n"
        "  --format jsonl|csv           [default: from the extension: .jsonl/.ndjson or .csv]\n"
        "  --fields A,B,...             the fields, in this order [default: row, id (when the\n"
        "                               inputs have /ids) or source and source_row, every output,\n"
        "                               label (classification), error]\n"
        "  -h, --help                   this help\n\n"
        "fields: row, id, source, source_row, label, error and the output datasets' names;\n"
        "[rows, cols] outputs are JSON arrays, or CSV columns NAME_0..NAME_{cols-1}; values that\n"
        "are not finite are null (JSON) or empty (CSV); error is null/empty for rows that did not "
        "fail.\n"
        "exit status: 0 done; 2 usage; 3 no finished job in OUTPUT_DIR, or inputs gone.\n");
}

static int add_field(ex_t *x, const char *name, sl_error_t *err)
{
    static const char *const names[] = {"row", "id", "source", "source_row", "label", "error"};
    ex_field_t f = {-1, -1};
    for (int k = 0; k < 6; k++)
        if (!strcmp(name, names[k]))
            f.kind = k;
    for (int i = 0; f.kind < 0 && i < x->nouts; i++)
        if (!strcmp(name, x->outs[i].name))
            f = (ex_field_t){F_OUTPUT, i};
    if (f.kind == F_ID && !x->has_ids)
        return sl_errorf(err,
                         "--fields: 'id': the input shards have no /ids (convert with --id-field)");
    if (f.kind == F_LABEL && x->labels_out < 0)
        return sl_errorf(err, "--fields: 'label': the job has no class labels");
    if (f.kind < 0) {
        char outs[1024] = "";
        size_t l = 0;
        for (int i = 0; i < x->nouts && l < sizeof outs; i++)
            l += (size_t)snprintf(outs + l, sizeof outs - l, ", %s", x->outs[i].name);
        return sl_errorf(
            err, "--fields: no field '%s' (fields: row, id, source, source_row, label, error%s)",
            name, outs);
    }
    if (x->nfields == (int)(sizeof x->fields / sizeof x->fields[0]))
        return sl_errorf(err, "--fields: too many fields");
    x->fields[x->nfields++] = f;
    return 0;
}

int sl_export_main(int argc, char **argv)
{
    sl_h5_quiet();
    const char *to = NULL, *format = NULL, *fields = NULL;
    static const struct option longopts[] = {{"to", required_argument, NULL, 't'},
                                             {"format", required_argument, NULL, 'F'},
                                             {"fields", required_argument, NULL, 'f'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 't': to = optarg; break;
        case 'F': format = optarg; break;
        case 'f': fields = optarg; break;
        case 'h': export_usage(stdout); return SL_EXIT_OK;
        case ':':
            fprintf(stderr, "shardline: error: option '%s' needs a value\n", argv[optind - 1]);
            return SL_EXIT_USAGE;
        default:
            fprintf(stderr, "shardline: error: unknown option '%s' (see shardline export --help)\n",
                    argv[optind - 1]);
            return SL_EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !to) {
        fprintf(stderr, "shardline: error: %s (see shardline export --help)\n",
                !to ? "--to FILE is required" : "one OUTPUT_DIR expected");
        return SL_EXIT_USAGE;
    }
    const char *out_dir = argv[optind];
    if (!format) {
        const char *dot = strrchr(to, '.');
        format = dot && (!strcmp(dot, ".jsonl") || !strcmp(dot, ".ndjson")) ? "jsonl"
                 : dot && !strcmp(dot, ".csv")                              ? "csv"
                                                                            : NULL;
        if (!format) {
            fprintf(stderr,
                    "shardline: error: --to %s: cannot tell the format from the name "
                    "(.jsonl, .ndjson, .csv); give --format\n",
                    to);
            return SL_EXIT_USAGE;
        }
    } else if (strcmp(format, "jsonl") && strcmp(format, "csv")) {
        fprintf(stderr, "shardline: error: --format '%s': expected jsonl or csv\n", format);
        return SL_EXIT_USAGE;
    }

    ex_t x;
    memset(&x, 0, sizeof x);
    x.csv = !strcmp(format, "csv");
    x.ids_shard = -1;
    x.ids_f = x.ids_d = -1;
    sl_error_t err = {{0}};
    int status = SL_EXIT_OK;
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/predictions.h5", out_dir);
    if (access(path, F_OK) != 0) {
        snprintf(tmp, sizeof tmp, "%s/manifest.json", out_dir);
        fprintf(stderr, "shardline: error: %s: %s\n", path,
                access(tmp, F_OK) == 0
                    ? "not there: the job has not finished (see shardline status)"
                    : "not there: not a shardline output directory");
        return SL_EXIT_INPUT;
    }
    int64_t nsrc = 0, missing = 0;
    char first_missing[1024] = "";
    if (sl_vds_sources(path, &nsrc, &missing, first_missing, sizeof first_missing, &err) != 0) {
        fprintf(stderr, "shardline: error: %s\n", err.msg);
        return SL_EXIT_INPUT;
    }
    if (missing > 0) {
        fprintf(stderr,
                "shardline: error: %s: %lld part file(s) missing (first: %s); their rows cannot be "
                "exported\n",
                path, (long long)missing, first_missing);
        return SL_EXIT_INPUT;
    }
    x.pf = sl_h5_open_ro(path, &err);
    if (x.pf < 0) {
        fprintf(stderr, "shardline: error: %s\n", err.msg);
        return SL_EXIT_INPUT;
    }
    if (sl_h5_attr_read_i64(x.pf, "total_rows", &x.total) != 0) {
        sl_errorf(&err, "%s: no total_rows attribute (not a shardline predictions file?)", path);
        status = SL_EXIT_INPUT;
    }
    if (status == SL_EXIT_OK && read_tables(&x, path, &err) != 0)
        status = SL_EXIT_INPUT;
    if (status == SL_EXIT_OK) {
        H5Literate(x.pf, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_output, &x);
        read_labels(&x);
        int ids = inputs_have_ids(&x, &err);
        if (ids < 0)
            status = SL_EXIT_INPUT;
        x.has_ids = ids > 0;
    }
    if (status == SL_EXIT_OK) {
        if (fields) {
            char *copy = sl_xstrdup(fields);
            for (char *save = NULL, *t = strtok_r(copy, ",", &save); t && status == SL_EXIT_OK;
                 t = strtok_r(NULL, ",", &save))
                if (add_field(&x, t, &err) != 0)
                    status = SL_EXIT_USAGE;
            free(copy);
            if (status == SL_EXIT_OK && x.nfields == 0) {
                sl_errorf(&err, "--fields '%s': no field named", fields);
                status = SL_EXIT_USAGE;
            }
        } else {
            x.fields[x.nfields++] = (ex_field_t){F_ROW, -1};
            if (x.has_ids)
                x.fields[x.nfields++] = (ex_field_t){F_ID, -1};
            else {
                x.fields[x.nfields++] = (ex_field_t){F_SOURCE, -1};
                x.fields[x.nfields++] = (ex_field_t){F_SOURCE_ROW, -1};
            }
            for (int i = 0; i < x.nouts; i++)
                x.fields[x.nfields++] = (ex_field_t){F_OUTPUT, i};
            if (x.labels_out >= 0)
                x.fields[x.nfields++] = (ex_field_t){F_LABEL, -1};
            x.fields[x.nfields++] = (ex_field_t){F_ERROR, -1};
        }
    }
    if (status == SL_EXIT_OK) {
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", to, (int)getpid());
        x.fp = fopen(tmp, "w");
        if (!x.fp) {
            sl_errorf(&err, "--to %s: cannot create %s: %s", to, tmp, strerror(errno));
            status = SL_EXIT_INPUT;
        } else {
            setvbuf(x.fp, NULL, _IOFBF, 1 << 20);
            int rc = export_rows(&x, &err);
            if (fclose(x.fp) != 0 && rc == 0)
                rc = sl_errorf(&err, "%s: write error (disk full?)", tmp);
            if (rc == 0 && rename(tmp, to) != 0)
                rc = sl_errorf(&err, "--to %s: cannot rename %s into place: %s", to, tmp,
                               strerror(errno));
            if (rc != 0) {
                unlink(tmp);
                status = SL_EXIT_INPUT;
            }
        }
    }
    if (status != SL_EXIT_OK)
        fprintf(stderr, "shardline: error: %s\n", err.msg);
    else
        fprintf(stderr, "shardline: export: %lld rows (%lld failed) -> %s\n", (long long)x.total,
                (long long)x.nerrs, to);
    if (x.ids_f >= 0) {
        H5Dclose(x.ids_d);
        H5Fclose(x.ids_f);
    }
    for (int i = 0; i < x.nouts; i++) {
        H5Dclose(x.outs[i].d);
        free(x.outs[i].num);
        free(x.outs[i].str);
        free(x.outs[i].fixed);
    }
    for (int i = 0; i < x.nshards; i++)
        free(x.shards[i].path);
    free(x.shards);
    for (int64_t i = 0; i < x.nerrs; i++)
        free(x.errs[i].reason);
    free(x.errs);
    for (int i = 0; i < x.nlabels; i++)
        free(x.labels[i]);
    free(x.labels);
    H5Fclose(x.pf);
    return status;
}
