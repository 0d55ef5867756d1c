/*
 * input.c — glob expansion, validation and reading of the input shards (see input.h).
 */
#include "jobs/input.h"

#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sl_fault.h"
#include "jobs/h5util.h"

/* The widest fixed-length string row an input may hold (variable-length strings have no bound
 * here; --text-bytes limits what a task keeps of a row). */
#define SL_TEXT_FIXED_MAX (1 << 20)

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_magic(const char *s) { return strpbrk(s, "*?[") != NULL; }

/* The datasets of a file, for the message about a missing one: full paths in name order
 * (groups walked to a small depth), at most SL_LIST_MAX of them, comma-separated. */
#define SL_LIST_MAX 24
typedef struct {
    char *buf;
    size_t cap, len;
    int n, depth;
    char prefix[512];
} list_ctx_t;

static herr_t list_one(hid_t group, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    list_ctx_t *c = data;
    hid_t o = H5Oopen(group, name, H5P_DEFAULT);
    if (o < 0)
        return 0; /* a dangling link: not a dataset */
    char path[1024];
    snprintf(path, sizeof path, "%s%s", c->prefix, name);
    H5I_type_t type = H5Iget_type(o);
    if (type == H5I_DATASET) {
        if (c->n < SL_LIST_MAX && c->len < c->cap)
            c->len +=
                (size_t)snprintf(c->buf + c->len, c->cap - c->len, "%s%s", c->n ? ", " : "", path);
        c->n++;
    } else if (type == H5I_GROUP && c->depth < 4) {
        list_ctx_t sub = *c;
        /* a group whose path does not fit is left out of the listing (a listing, not data) */
        if (snprintf(sub.prefix, sizeof sub.prefix, "%s/", path) < (int)sizeof sub.prefix) {
            sub.depth++;
            H5Literate(o, H5_INDEX_NAME, H5_ITER_INC, NULL, list_one, &sub);
            c->len = sub.len;
            c->n = sub.n;
        }
    }
    H5Oclose(o);
    return 0;
}

static void list_datasets(hid_t f, char *buf, size_t cap)
{
    list_ctx_t c = {buf, cap, 0, 0, 0, ""};
    buf[0] = '\0';
    H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, NULL, list_one, &c);
    if (c.n == 0)
        snprintf(buf, cap, "the file holds none");
    else if (c.n > SL_LIST_MAX && c.len < cap)
        snprintf(buf + c.len, cap - c.len, ", ... %d more", c.n - SL_LIST_MAX);
}

/* Checks one shard's dataset; fills rows/cols and, when want_tokens, the kind it holds. */
static int check_shard(sl_shard_t *s, const char *dataset, int want_tokens, int *kind,
                       int64_t *cols, sl_error_t *err)
{
    struct stat st;
    if (stat(s->path, &st) != 0)
        return sl_errorf(err, "%s: %s", s->path, strerror(errno));
    s->size = (int64_t)st.st_size;
    s->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    hid_t f = sl_h5_open_ro(s->path, err);
    if (f < 0)
        return -1;
    int rc = -1;
    hid_t d = -1, sp = -1, t = -1;
    if (H5Lexists(f, dataset, H5P_DEFAULT) <= 0) {
        char names[640];
        list_datasets(f, names, sizeof names);
        sl_errorf(err, "%s: no dataset '%s' (datasets: %s; see --input-dataset)", s->path, dataset,
                  names);
        goto out;
    }
    d = H5Dopen2(f, dataset, H5P_DEFAULT);
    if (d < 0) {
        sl_errorf(err, "%s: '%s' is not a dataset", s->path, dataset);
        goto out;
    }
    sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 0};
    t = H5Dget_type(d);
    H5T_class_t cls = H5Tget_class(t);
    if (want_tokens) {
        if (nd == 1 && cls == H5T_STRING) {
            *kind = SL_INPUT_TEXT;
            /* a reader's buffer holds rows x this width: a corrupt file may state any width */
            if (H5Tis_variable_str(t) <= 0 && H5Tget_size(t) > SL_TEXT_FIXED_MAX) {
                sl_errorf(err,
                          "%s: dataset '%s' holds fixed-length strings of %zu bytes; at most %d "
                          "a row (store longer texts as variable-length strings)",
                          s->path, dataset, H5Tget_size(t), SL_TEXT_FIXED_MAX);
                goto out;
            }
        } else if (nd == 2 && cls == H5T_INTEGER) {
            *kind = SL_INPUT_TOKENS;
        } else {
            sl_errorf(err,
                      "%s: dataset '%s' is neither text (1-D strings) nor token ids (2-D integers)",
                      s->path, dataset);
            goto out;
        }
    } else {
        if (nd != 2) {
            sl_errorf(err, "%s: dataset '%s' has %d dimensions; expected 2 [rows, features]",
                      s->path, dataset, nd);
            goto out;
        }
        if (cls != H5T_FLOAT && cls != H5T_INTEGER) {
            sl_errorf(err, "%s: dataset '%s' is not numeric (float or integer expected)", s->path,
                      dataset);
            goto out;
        }
        *kind = SL_INPUT_FEATURES;
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    s->rows = (int64_t)dims[0];
    *cols = nd == 2 ? (int64_t)dims[1] : 0;
    if (*kind == SL_INPUT_TOKENS && H5Lexists(f, "lengths", H5P_DEFAULT) <= 0 &&
        H5Lexists(f, "attention_mask", H5P_DEFAULT) <= 0) {
        sl_errorf(err,
                  "%s: token ids '%s' need a 'lengths' [rows] or 'attention_mask' [rows, %lld] "
                  "dataset beside them",
                  s->path, dataset, (long long)*cols);
        goto out;
    }
    rc = 0;
out:
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    if (d >= 0)
        H5Dclose(d);
    H5Fclose(f);
    return rc;
}

int sl_inputs_scan(sl_inputs_t *in, char *const *globs, int nglobs, const char *dataset,
                   int want_tokens, sl_error_t *err)
{
    memset(in, 0, sizeof *in);
    in->dataset = sl_xstrdup(dataset);
    char **paths = NULL;
    size_t np = 0;
    for (int g = 0; g < nglobs; g++) {
        glob_t gl;
        int r = glob(globs[g], 0, NULL, &gl);
        if (r == GLOB_NOMATCH || (r == 0 && gl.gl_pathc == 0)) {
            if (has_magic(globs[g]))
                sl_errorf(err, "--input '%s': no file matches", globs[g]);
            else
                sl_errorf(err, "--input '%s': no such file", globs[g]);
            if (r == 0)
                globfree(&gl);
            goto fail;
        }
        if (r != 0) {
            sl_errorf(err, "--input '%s': cannot expand the pattern", globs[g]);
            goto fail;
        }
        paths = sl_xrealloc(paths, (np + gl.gl_pathc) * sizeof *paths);
        /* Absolute paths: a part file records its source, and a rerun from another directory
         * must still recognise it. */
        for (size_t i = 0; i < gl.gl_pathc; i++) {
            char *abs = realpath(gl.gl_pathv[i], NULL);
            paths[np++] = abs ? abs : sl_xstrdup(gl.gl_pathv[i]);
        }
        globfree(&gl);
    }
    qsort(paths, np, sizeof *paths, cmp_str);
    in->shards = sl_xcalloc(np, sizeof *in->shards);
    for (size_t i = 0; i < np; i++) {
        if (in->n > 0 && !strcmp(in->shards[in->n - 1].path, paths[i])) {
            free(paths[i]); /* the same file matched by two globs counts once */
            continue;
        }
        sl_shard_t *s = &in->shards[in->n++];
        s->path = paths[i];
        int64_t cols = 0;
        int kind = SL_INPUT_FEATURES;
        if (check_shard(s, dataset, want_tokens, &kind, &cols, err) != 0) {
            for (size_t j = i + 1; j < np; j++)
                free(paths[j]);
            free(paths);
            return -1;
        }
        if (in->n == 1) {
            in->cols = cols;
            in->kind = kind;
        } else if (kind != in->kind) {
            sl_errorf(err, "%s: dataset '%s' holds %s but %s holds %s", s->path, dataset,
                      kind == SL_INPUT_TEXT ? "text" : "token ids", in->shards[0].path,
                      in->kind == SL_INPUT_TEXT ? "text" : "token ids");
            for (size_t j = i + 1; j < np; j++)
                free(paths[j]);
            free(paths);
            return -1;
        } else if (cols != in->cols && in->kind == SL_INPUT_FEATURES) {
            sl_errorf(err, "%s: dataset '%s' has %lld features but %s has %lld", s->path, dataset,
                      (long long)cols, in->shards[0].path, (long long)in->cols);
            for (size_t j = i + 1; j < np; j++)
                free(paths[j]);
            free(paths);
            return -1;
        }
        s->first_row = in->total_rows;
        in->total_rows += s->rows;
    }
    free(paths);
    return 0;
fail:
    for (size_t i = 0; i < np; i++)
        free(paths[i]);
    free(paths);
    return -1;
}

void sl_inputs_bcast(sl_inputs_t *in, MPI_Comm comm, int root)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    int64_t head[4] = {in->n, in->total_rows, in->cols, in->kind};
    MPI_Bcast(head, 4, MPI_INT64_T, root, comm);
    /* Serialise: per shard rows, first_row, size, mtime, then all paths NUL-separated. */
    int64_t plen = 0;
    if (rank == root) {
        plen = (int64_t)strlen(in->dataset) + 1;
        for (int i = 0; i < in->n; i++)
            plen += (int64_t)strlen(in->shards[i].path) + 1;
    }
    MPI_Bcast(&plen, 1, MPI_INT64_T, root, comm);
    int64_t *nums = sl_xcalloc((size_t)head[0] * 4 + 1, sizeof(int64_t));
    char *text = sl_xcalloc((size_t)plen + 1, 1);
    if (rank == root) {
        char *p = text;
        p = stpcpy(p, in->dataset) + 1;
        for (int i = 0; i < in->n; i++) {
            const sl_shard_t *s = &in->shards[i];
            nums[4 * i] = s->rows;
            nums[4 * i + 1] = s->first_row;
            nums[4 * i + 2] = s->size;
            nums[4 * i + 3] = s->mtime_ns;
            p = stpcpy(p, s->path) + 1;
        }
    }
    MPI_Bcast(nums, (int)head[0] * 4, MPI_INT64_T, root, comm);
    MPI_Bcast(text, (int)plen, MPI_CHAR, root, comm);
    if (rank != root) {
        memset(in, 0, sizeof *in);
        in->n = (int)head[0];
        in->total_rows = head[1];
        in->cols = head[2];
        in->kind = (int)head[3];
        in->shards = sl_xcalloc((size_t)in->n, sizeof *in->shards);
        const char *p = text;
        in->dataset = sl_xstrdup(p);
        p += strlen(p) + 1;
        for (int i = 0; i < in->n; i++) {
            sl_shard_t *s = &in->shards[i];
            s->rows = nums[4 * i];
            s->first_row = nums[4 * i + 1];
            s->size = nums[4 * i + 2];
            s->mtime_ns = nums[4 * i + 3];
            s->path = sl_xstrdup(p);
            p += strlen(p) + 1;
        }
    }
    free(nums);
    free(text);
}

void sl_inputs_free(sl_inputs_t *in)
{
    for (int i = 0; i < in->n; i++)
        free(in->shards[i].path);
    free(in->shards);
    free(in->dataset);
    memset(in, 0, sizeof *in);
}

void sl_reader_init(sl_reader_t *r)
{
    r->shard = -1;
    r->file = r->dset = -1;
}

void sl_reader_close(sl_reader_t *r)
{
    if (r->dset >= 0)
        H5Dclose(r->dset);
    if (r->file >= 0)
        H5Fclose(r->file);
    sl_reader_init(r);
}

/* Makes shard the open one (a reader keeps one file open: units of a shard come in a row). */
static int reader_open(sl_reader_t *r, const sl_inputs_t *in, int shard, sl_error_t *err)
{
    const sl_shard_t *s = &in->shards[shard];
    if (r->shard != shard) {
        sl_reader_close(r);
        r->file = sl_h5_open_ro(s->path, err);
        if (r->file < 0)
            return -1;
        r->dset = H5Dopen2(r->file, in->dataset, H5P_DEFAULT);
        if (r->dset < 0) {
            sl_reader_close(r);
            return sl_errorf(err, "%s: cannot open dataset '%s'", s->path, in->dataset);
        }
        r->shard = shard;
    }
    return 0;
}

/* Reads rows [row0, row0+n) of a dataset (1-D or 2-D) into dst as memtype. */
static herr_t read_rows(hid_t d, hid_t memtype, int64_t row0, int64_t n, void *dst)
{
    if (sl_fault_hit(SL_FAULT_READ))
        return -1; /* as H5Dread does when the device returns EIO */
    hid_t fs = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(fs, dims, NULL);
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, dims[1]};
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(nd, count, NULL);
    herr_t e = H5Dread(d, memtype, ms, fs, H5P_DEFAULT, dst);
    H5Sclose(ms);
    H5Sclose(fs);
    return e;
}

int sl_reader_read(sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0, int64_t n,
                   float *dst, sl_error_t *err)
{
    const sl_shard_t *s = &in->shards[shard];
    if (reader_open(r, in, shard, err) != 0)
        return -1;
    /* HDF5 converts float64/float16/integers to native float32 while reading. */
    if (read_rows(r->dset, H5T_NATIVE_FLOAT, row0, n, dst) < 0)
        return sl_errorf(
            err, "%s: dataset '%s': cannot read rows %lld..%lld (corrupt or truncated file?)%s",
            s->path, in->dataset, (long long)row0, (long long)(row0 + n),
            sl_fault_note(SL_FAULT_READ));
    return 0;
}

int sl_reader_read_text(sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0, int64_t n,
                        char **texts, sl_error_t *err)
{
    const sl_shard_t *s = &in->shards[shard];
    if (reader_open(r, in, shard, err) != 0)
        return -1;
    hid_t ft = H5Dget_type(r->dset);
    int rc = 0;
    if (H5Tis_variable_str(ft) > 0) {
        /* the memory type keeps the file's character set (ASCII or UTF-8): HDF5 does not
         * convert between the two */
        hid_t mt = sl_h5_vlen_str_type();
        H5Tset_cset(mt, H5Tget_cset(ft));
        char **tmp = sl_xcalloc((size_t)n + 1, sizeof *tmp);
        if (read_rows(r->dset, mt, row0, n, tmp) < 0) {
            rc = -1;
        } else {
            for (int64_t i = 0; i < n; i++)
                texts[i] = tmp[i] ? sl_xstrdup(tmp[i]) : NULL;
            /* the library allocated the strings: give them back to it */
            hid_t fs = H5Dget_space(r->dset);
            hsize_t start = (hsize_t)row0, count = (hsize_t)n;
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
            hid_t ms = H5Screate_simple(1, &count, NULL);
            H5Dvlen_reclaim(mt, ms, H5P_DEFAULT, tmp);
            H5Sclose(ms);
            H5Sclose(fs);
        }
        free(tmp);
        H5Tclose(mt);
    } else {
        size_t w = H5Tget_size(ft);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, w);
        H5Tset_strpad(mt, H5T_STR_NULLPAD);
        H5Tset_cset(mt, H5Tget_cset(ft));
        char *buf = sl_xcalloc((size_t)n * w + 1, 1);
        if (read_rows(r->dset, mt, row0, n, buf) < 0) {
            rc = -1;
        } else {
            for (int64_t i = 0; i < n; i++) {
                const char *p = buf + (size_t)i * w;
                size_t len = strnlen(p, w);
                texts[i] = sl_xmalloc(len + 1);
                memcpy(texts[i], p, len);
                texts[i][len] = '\0';
            }
        }
        free(buf);
        H5Tclose(mt);
    }
    H5Tclose(ft);
    if (rc != 0)
        return sl_errorf(
            err, "%s: dataset '%s': cannot read rows %lld..%lld (corrupt or truncated file?)%s",
            s->path, in->dataset, (long long)row0, (long long)(row0 + n),
            sl_fault_note(SL_FAULT_READ));
    return 0;
}

/* Whether a companion of the token ids has the shape its buffer was sized for: [rows] (nd 1)
 * or [rows, L] (nd 2). Checked before reading: a wider dataset would overrun the buffer. */
static int companion_shape_ok(hid_t d, int nd_want, int64_t L)
{
    hid_t sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 0};
    if (nd == nd_want)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    return nd == nd_want && (nd == 1 || (int64_t)dims[1] == L);
}

int sl_reader_read_tokens(sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0, int64_t n,
                          int32_t *ids, int32_t *lengths, int32_t *type_ids, sl_error_t *err)
{
    const sl_shard_t *s = &in->shards[shard];
    if (reader_open(r, in, shard, err) != 0)
        return -1;
    int64_t L = in->cols;
    if (read_rows(r->dset, H5T_NATIVE_INT32, row0, n, ids) < 0)
        return sl_errorf(err, "%s: dataset '%s': cannot read rows %lld..%lld%s", s->path,
                         in->dataset, (long long)row0, (long long)(row0 + n),
                         sl_fault_note(SL_FAULT_READ));
    /* The companions live beside the ids in the same file. */
    const char *what = NULL;
    int rc = 0;
    if (H5Lexists(r->file, "lengths", H5P_DEFAULT) > 0) {
        hid_t d = H5Dopen2(r->file, "lengths", H5P_DEFAULT);
        what = "lengths";
        rc = d < 0 || !companion_shape_ok(d, 1, L) ||
             read_rows(d, H5T_NATIVE_INT32, row0, n, lengths) < 0;
        if (d >= 0)
            H5Dclose(d);
    } else {
        hid_t d = H5Dopen2(r->file, "attention_mask", H5P_DEFAULT);
        what = "attention_mask";
        int32_t *mask = sl_xmalloc((size_t)(n * L + 1) * sizeof *mask);
        rc = d < 0 || !companion_shape_ok(d, 2, L) ||
             read_rows(d, H5T_NATIVE_INT32, row0, n, mask) < 0;
        for (int64_t i = 0; !rc && i < n; i++) {
            int32_t c = 0;
            for (int64_t j = 0; j < L; j++)
                c += mask[i * L + j] != 0;
            lengths[i] = c;
        }
        free(mask);
        if (d >= 0)
            H5Dclose(d);
    }
    if (rc)
        return sl_errorf(err, "%s: dataset '%s': cannot read rows %lld..%lld (must be [rows%s])",
                         s->path, what, (long long)row0, (long long)(row0 + n),
                         strcmp(what, "lengths") ? ", L" : "");
    if (H5Lexists(r->file, "token_type_ids", H5P_DEFAULT) > 0) {
        hid_t d = H5Dopen2(r->file, "token_type_ids", H5P_DEFAULT);
        rc = d < 0 || !companion_shape_ok(d, 2, L) ||
             read_rows(d, H5T_NATIVE_INT32, row0, n, type_ids) < 0;
        if (d >= 0)
            H5Dclose(d);
        if (rc)
            return sl_errorf(
                err,
                "%s: dataset 'token_type_ids': cannot read rows %lld..%lld (must be [rows, %lld])",
                s->path, (long long)row0, (long long)(row0 + n), (long long)L);
    } else {
        memset(type_ids, 0, (size_t)(n * L) * sizeof *type_ids);
    }
    return 0;
}
