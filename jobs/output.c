/*
 * output.c — part files (atomic commit), and the final predictions.h5 with its virtual
 * dataset (see output.h).
 */
#include "jobs/output.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/sl_fs.h"
#include "common/sl_fault.h"
#include "common/sl_hash.h"
#include "kernels/elementwise.h"
#include "jobs/h5util.h"

int sl_output_prepare(const char *out_dir, sl_error_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/parts", out_dir);
    if (sl_mkdir_p(path, err) != 0)
        return -1;
    if (access(path, W_OK) != 0)
        return sl_errorf(err, "%s: not writable", path);
    return 0;
}

/* Takes one lock file with flock: mode LOCK_EX or LOCK_SH; on success, an exclusive holder
 * writes who it is into the file (the next job's message names it). Returns the descriptor,
 * -2 when another process holds it (*holder: what the file says), -1 on other errors. */
static int lock_one(const char *path, int mode, char *holder, size_t len, sl_error_t *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return sl_errorf(err, "%s: cannot create the lock file: %s", path, strerror(errno));
    if (sl_fault_hit(SL_FAULT_LOCK) || flock(fd, mode | LOCK_NB) != 0) {
        int e = errno;
        if (e == ENOSYS || e == ENOLCK || e == EINVAL || e == EOPNOTSUPP) {
            /* a file system without locks (Lustre mounted -o noflock, some NFS set-ups):
             * run unprotected rather than not at all, and say so */
            sl_log_warn("%s: this file system does not lock files (%s): nothing stops a second "
                        "job from writing into the same output directory",
                        path, strerror(e));
            return fd;
        }
        if (e != EWOULDBLOCK && e != EAGAIN) {
            close(fd);
            return sl_errorf(err, "%s: cannot lock: %s", path, strerror(e));
        }
        ssize_t n = pread(fd, holder, len - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        if (!holder[0])
            snprintf(holder, len, "a job that has not said who it is");
        close(fd);
        return -2;
    }
    if (mode == LOCK_SH) {
        /* the tasks of a job array: each names itself in its own task lock file */
        static const char line[] = "the tasks of a job array (see .shardline.lock.task-*)\n";
        if (ftruncate(fd, 0) != 0 ||
            pwrite(fd, line, sizeof line - 1, 0) != (ssize_t)sizeof line - 1)
            sl_log_warn("%s: cannot record this job in the lock file", path);
    } else {
        char host[256] = "?", line[512];
        gethostname(host, sizeof host - 1);
        time_t now = time(NULL);
        char when[64];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&now));
        int n =
            snprintf(line, sizeof line, "pid %d on host %s, since %s\n", (int)getpid(), host, when);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n)
            sl_log_warn("%s: cannot record this job in the lock file", path);
    }
    return fd;
}

int sl_output_lock(const char *out_dir, int array_task, int array_tasks, int *fds, sl_error_t *err)
{
    char path[4200], holder[512];
    fds[0] = fds[1] = -1;
    /* A job array's tasks share the directory: each takes the directory's lock shared and
     * its own task's lock exclusive. A plain job takes the directory's lock exclusive. */
    int array = array_tasks > 1;
    snprintf(path, sizeof path, "%s/.shardline.lock", out_dir);
    int fd = lock_one(path, array ? LOCK_SH : LOCK_EX, holder, sizeof holder, err);
    if (fd == -2)
        return sl_errorf(err,
                         "--output %s: another shardline job is writing there (%s; lock file "
                         "%s); wait for it to end or stop it, or give another --output%s",
                         out_dir, holder, path, sl_fault_note(SL_FAULT_LOCK));
    if (fd < 0)
        return -1;
    fds[0] = fd;
    if (array) {
        snprintf(path, sizeof path, "%s/.shardline.lock.task-%d", out_dir, array_task);
        fd = lock_one(path, LOCK_EX, holder, sizeof holder, err);
        if (fd < 0) {
            close(fds[0]);
            fds[0] = -1;
            if (fd == -2)
                return sl_errorf(err,
                                 "--output %s: array task %d of this job is already running "
                                 "there (%s; lock file %s)",
                                 out_dir, array_task, holder, path);
            return -1;
        }
        fds[1] = fd;
    }
    return 0;
}

/* Removes the temporary files in dir whose names hold ".tmp."; returns how many. */
static int sweep_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !strstr(e->d_name, ".tmp."))
            continue;
        char *path = sl_path_join(dir, e->d_name);
        n += unlink(path) == 0;
        free(path);
    }
    closedir(d);
    return n;
}

int sl_output_sweep_tmp(const char *out_dir)
{
    char path[4200];
    int n = sweep_dir(out_dir);
    snprintf(path, sizeof path, "%s/parts", out_dir);
    DIR *d = opendir(path);
    if (!d)
        return n;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char sub[8400];
        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        n += sweep_dir(sub);
    }
    closedir(d);
    return n;
}

void sl_output_unlock(int *fds)
{
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) {
            close(fds[i]); /* closing the descriptor releases the flock */
            fds[i] = -1;
        }
}

/* What shardline itself leaves in an output directory: parts/, the job's files, sbatch
 * scripts and logs from `shardline submit`, temporary files and hidden files (locks). */
static int own_entry(const char *name)
{
    static const char *const names[] = {"parts", "manifest.json", "report.json", "predictions.h5",
                                        "shardline.sbatch"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i]))
            return 1;
    size_t n = strlen(name);
    return name[0] == '.' || strstr(name, ".tmp.") ||
           (!strncmp(name, "slurm-", 6) && n > 10 && !strcmp(name + n - 4, ".out"));
}

int sl_output_check(const char *out_dir, int *exists, char *foreign, size_t len, sl_error_t *err)
{
    struct stat st;
    *exists = 0;
    if (foreign && len)
        foreign[0] = '\0';
    if (stat(out_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return sl_errorf(err, "--output %s: exists and is not a directory", out_dir);
        if (access(out_dir, W_OK | X_OK) != 0)
            return sl_errorf(err, "--output %s: not writable", out_dir);
        *exists = 1;
        DIR *d = opendir(out_dir);
        if (!d)
            return sl_errorf(err, "--output %s: cannot list: %s", out_dir, strerror(errno));
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!own_entry(e->d_name)) {
                if (foreign && len)
                    snprintf(foreign, len, "%s", e->d_name);
                break;
            }
        }
        closedir(d);
        return 0;
    }
    /* Not there yet: the nearest existing ancestor must let us create it. */
    char *p = sl_xstrdup(out_dir);
    int rc = 0;
    for (;;) {
        char *slash = strrchr(p, '/');
        if (!slash) {
            snprintf(p, strlen(p) + 1, ".");
        } else if (slash == p) {
            p[1] = '\0';
        } else {
            *slash = '\0';
        }
        if (stat(p, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                rc = sl_errorf(err, "--output %s: %s is not a directory", out_dir, p);
            else if (access(p, W_OK | X_OK) != 0)
                rc =
                    sl_errorf(err, "--output %s: cannot create it: %s is not writable", out_dir, p);
            break;
        }
        if (!strcmp(p, ".") || !strcmp(p, "/"))
            break;
    }
    free(p);
    return rc;
}

char *sl_part_relpath(const sl_shard_t *s, int64_t row0, int64_t nrows)
{
    char *copy = sl_xstrdup(s->path);
    const char *base = basename(copy);
    uint64_t h = sl_hash_str(SL_HASH_INIT, s->path);
    char buf[4096];
    snprintf(buf, sizeof buf, "parts/%s.%08x/rows-%012lld-%012lld.h5", base, (unsigned)(h >> 32),
             (long long)row0, (long long)(row0 + nrows));
    free(copy);
    return sl_xstrdup(buf);
}

static void hex64(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

int sl_part_matches(const char *out_dir, const char *relpath, const sl_part_meta_t *m)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, relpath);
    if (access(path, F_OK) != 0)
        return 0;
    hid_t f = sl_h5_open_ro(path, NULL);
    if (f < 0)
        return 0;
    int ok = 1;
    char s[4096], want[17];
    int64_t v;
    ok =
        ok && sl_h5_attr_read_str(f, "source_path", s, sizeof s) == 0 && !strcmp(s, m->shard->path);
    ok = ok && sl_h5_attr_read_i64(f, "source_size", &v) == 0 && v == m->shard->size;
    ok = ok && sl_h5_attr_read_i64(f, "source_mtime_ns", &v) == 0 && v == m->shard->mtime_ns;
    ok = ok && sl_h5_attr_read_i64(f, "first_row", &v) == 0 && v == m->row0;
    ok = ok && sl_h5_attr_read_i64(f, "rows", &v) == 0 && v == m->nrows;
    hex64(want, m->model_fp);
    ok = ok && sl_h5_attr_read_str(f, "model_fingerprint", s, sizeof s) == 0 && !strcmp(s, want);
    hex64(want, m->job_hash);
    ok = ok && sl_h5_attr_read_str(f, "job_hash", s, sizeof s) == 0 && !strcmp(s, want);
    for (int i = 0; ok && i < m->outs->n; i++) {
        const sl_out_spec_t *o = &m->outs->spec[i];
        hid_t d = H5Dopen2(f, o->name, H5P_DEFAULT);
        ok = d >= 0;
        if (ok) {
            hid_t sp = H5Dget_space(d);
            hsize_t dims[2] = {0, 0};
            int nd = H5Sget_simple_extent_ndims(sp);
            H5Sget_simple_extent_dims(sp, dims, NULL);
            ok = nd == sl_out_ndims(o) && (int64_t)dims[0] == m->nrows &&
                 (nd == 1 || (int64_t)dims[1] == o->cols);
            /* text is stored as variable-length strings (earlier versions: fixed-length) */
            hid_t ty = H5Dget_type(d);
            if (ok && o->file_dtype == SL_OUT_TEXT)
                ok = H5Tget_class(ty) == H5T_STRING && H5Tis_variable_str(ty) > 0;
            H5Tclose(ty);
            H5Sclose(sp);
            H5Dclose(d);
        }
    }
    H5Fclose(f);
    return ok;
}

void sl_out_fill_failed(const sl_outputs_t *outs, void *const *bufs, int64_t row)
{
    for (int o = 0; o < outs->n; o++) {
        const sl_out_spec_t *s = &outs->spec[o];
        void *dst = sl_out_row(s, bufs[o], row);
        if (s->file_dtype == SL_OUT_TEXT) {
            memset(dst, 0, sl_out_row_bytes(s));
        } else if (s->file_dtype == SL_I32) {
            for (int64_t j = 0; j < sl_out_width(s); j++)
                ((int32_t *)dst)[j] = -1;
        } else {
            for (int64_t j = 0; j < sl_out_width(s); j++)
                ((float *)dst)[j] = NAN;
        }
    }
}

const char *sl_out_dtype_name(int file_dtype)
{
    return file_dtype == SL_OUT_TEXT ? "text" : sl_dtype_name((sl_dtype_t)file_dtype);
}

int sl_out_dtype_parse(const char *s)
{
    if (!strcmp(s, "text"))
        return SL_OUT_TEXT;
    int d = sl_dtype_parse(s);
    return !strcmp(s, "i32") ? SL_I32 : d == SL_F16 ? SL_F16 : SL_F32;
}

/* The file type of an output: IEEE f32, IEEE f16 (h5py reads it as float16), i32, or text. */
static hid_t file_type(const sl_out_spec_t *o)
{
    int dtype = o->file_dtype;
    if (dtype == SL_OUT_TEXT)
        return sl_h5_vlen_str_type();
    if (dtype == SL_F16) {
        hid_t t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 10, 5, 0, 10);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 15);
        return t;
    }
    return H5Tcopy(dtype == SL_I32 ? H5T_STD_I32LE : H5T_IEEE_F32LE);
}

static hid_t write_dataset(hid_t f, const char *name, hid_t type, hid_t memtype, int nd,
                           const hsize_t *dims, const void *data)
{
    hid_t sp = H5Screate_simple(nd, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = 0;
    if (d >= 0) {
        hsize_t n = 1;
        for (int i = 0; i < nd; i++)
            n *= dims[i];
        if (n > 0)
            e = H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
        H5Dclose(d);
    }
    H5Sclose(sp);
    return (d < 0 || e < 0) ? -1 : 0;
}

/* A hint for a failed commit when OUT/parts has vanished under the job. */
static const char *gone_hint(const char *out_dir)
{
    char dir[4200];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/parts", out_dir);
    return stat(dir, &st) == 0 ? ""
                               : " (parts/ is gone: was the output directory removed while the "
                                 "job ran?)";
}

int sl_part_write(const char *out_dir, const char *relpath, const sl_part_meta_t *m,
                  void *const *bufs, const sl_row_error_t *errs, int nerr, sl_error_t *err)
{
    char path[4096], tmp[4200], dir[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, relpath);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    snprintf(dir, sizeof dir, "%s/parts", out_dir);
    /* parts/ was made when the job started; if it is gone, so is (most likely) the output
     * directory: fail rather than recreate it, which would commit units beside a manifest and
     * parts that no longer exist. */
    struct stat pst;
    int gone = stat(dir, &pst) != 0 ? errno : S_ISDIR(pst.st_mode) ? 0 : ENOTDIR;
    if (gone)
        return sl_errorf(err,
                         "%s: cannot commit %s: %s (was the output directory removed while "
                         "the job ran?)",
                         dir, relpath, strerror(gone));
    snprintf(dir, sizeof dir, "%s", path);
    dirname(dir); /* parts/<shard>.<hash>: one level, made by the first unit of its shard */
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return sl_errorf(err, "%s: cannot create directory: %s%s", dir, strerror(errno),
                         gone_hint(out_dir));
    errno = 0;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return sl_errorf(err, "%s: cannot create: %s%s", tmp, strerror(errno ? errno : EIO),
                         gone_hint(out_dir));
    int bad = 0;
    for (int i = 0; i < m->outs->n; i++) {
        const sl_out_spec_t *o = &m->outs->spec[i];
        hsize_t dims[2] = {(hsize_t)m->nrows, (hsize_t)o->cols};
        hid_t ft = file_type(o);
        int nd = sl_out_ndims(o);
        if (o->file_dtype == SL_OUT_TEXT) {
            /* each row: `cols` NUL-padded bytes, not always NUL-terminated */
            size_t w = sl_out_row_bytes(o);
            char *copy = sl_xmalloc((size_t)m->nrows * (w + 1) + 1);
            const char **rows = sl_xcalloc((size_t)m->nrows + 1, sizeof *rows);
            for (int64_t r = 0; r < m->nrows; r++) {
                char *dst = copy + (size_t)r * (w + 1);
                memcpy(dst, sl_out_row(o, bufs[i], r), w);
                dst[w] = '\0';
                rows[r] = dst;
            }
            bad |= write_dataset(f, o->name, ft, ft, nd, dims, rows) != 0;
            free(rows);
            free(copy);
        } else if (o->file_dtype == SL_F16) {
            /* Our own round-to-nearest-even: HDF5 1.10's soft f32 -> f16 conversion halves
             * values that round up to a power of two (0.12499 -> 0.0625). */
            size_t n = (size_t)m->nrows * (size_t)sl_out_width(o);
            uint16_t *h = sl_xmalloc(n * sizeof *h + 1);
            const float *v = bufs[i];
            for (size_t k = 0; k < n; k++)
                h[k] = sl_f32_to_f16(v[k]);
            bad |= write_dataset(f, o->name, ft, ft, nd, dims, h) != 0;
            free(h);
        } else {
            /* f32 from float, i32 from int32_t memory */
            hid_t mt = o->file_dtype == SL_I32 ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT;
            bad |= write_dataset(f, o->name, ft, mt, nd, dims, bufs[i]) != 0;
        }
        H5Tclose(ft);
    }
    hsize_t ne = (hsize_t)nerr;
    int64_t *rows = sl_xcalloc((size_t)nerr + 1, sizeof *rows);
    const char **reasons = sl_xcalloc((size_t)nerr + 1, sizeof *reasons);
    for (int i = 0; i < nerr; i++) {
        rows[i] = errs[i].row;
        reasons[i] = errs[i].reason;
    }
    hid_t st = sl_h5_vlen_str_type();
    bad |= write_dataset(f, "failed_rows", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &ne, rows) != 0;
    bad |= write_dataset(f, "failed_reasons", st, st, 1, &ne, reasons) != 0;
    H5Tclose(st);
    free(rows);
    free(reasons);
    char hex[17];
    bad |= sl_h5_attr_write_str(f, "source_path", m->shard->path) != 0;
    bad |= sl_h5_attr_write_i64(f, "source_size", m->shard->size) != 0;
    bad |= sl_h5_attr_write_i64(f, "source_mtime_ns", m->shard->mtime_ns) != 0;
    bad |= sl_h5_attr_write_i64(f, "first_row", m->row0) != 0;
    bad |= sl_h5_attr_write_i64(f, "rows", m->nrows) != 0;
    hex64(hex, m->model_fp);
    bad |= sl_h5_attr_write_str(f, "model_fingerprint", hex) != 0;
    hex64(hex, m->job_hash);
    bad |= sl_h5_attr_write_str(f, "job_hash", hex) != 0;
    bad |= sl_h5_attr_write_str(f, "shardline_version", SL_VERSION) != 0;
    int e = bad ? (errno ? errno : EIO) : 0;
    if (!bad && sl_fault_hit(SL_FAULT_WRITE)) {
        bad = 1;
        e = errno;
    }
    bad |= H5Fflush(f, H5F_SCOPE_GLOBAL) < 0;
    bad |= H5Fclose(f) < 0;
    if (bad) {
        e = e ? e : errno ? errno : EIO;
        unlink(tmp);
        return sl_errorf(err, "%s: writing the part file failed: %s%s%s", tmp, strerror(e),
                         e == ENOSPC ? "" : " (disk full?)", sl_fault_note(SL_FAULT_WRITE));
    }
    /* Durable before visible: the data reaches the disk before the rename publishes it, and
     * a unit whose data cannot be flushed is not committed (it is computed again). */
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || sl_fault_hit(SL_FAULT_FSYNC) || fsync(fd) != 0) {
        e = errno;
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return sl_errorf(err, "%s: cannot flush to disk: %s%s%s", tmp, strerror(e),
                         sl_fault_note(SL_FAULT_FSYNC), gone_hint(out_dir));
    }
    close(fd);
    if (sl_fault_hit(SL_FAULT_RENAME) || rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return sl_errorf(err, "%s: cannot commit (rename from %s): %s%s%s", path, tmp, strerror(e),
                         sl_fault_note(SL_FAULT_RENAME), gone_hint(out_dir));
    }
    return 0;
}

/* ---- predictions.h5 ---------------------------------------------------------------------- */

typedef struct {
    char *path;
    int64_t first_row, rows;
} shard_rec_t;

typedef struct {
    int64_t row;
    char *reason;
} error_rec_t;

/* Appends the failed rows recorded in one part file (global indices) to *recs. */
static int collect_errors(const char *path, int64_t base, error_rec_t **recs, int64_t *n,
                          sl_error_t *err)
{
    hid_t f = sl_h5_open_ro(path, err);
    if (f < 0)
        return -1;
    int rc = 0;
    hid_t d = H5Dopen2(f, "failed_rows", H5P_DEFAULT);
    hid_t dr = H5Dopen2(f, "failed_reasons", H5P_DEFAULT);
    if (d < 0 || dr < 0) {
        rc = sl_errorf(err, "%s: missing failed_rows/failed_reasons", path);
    } else {
        hid_t sp = H5Dget_space(d);
        hssize_t cnt = H5Sget_simple_extent_npoints(sp);
        H5Sclose(sp);
        if (cnt > 0) {
            int64_t *rows = sl_xcalloc((size_t)cnt, sizeof *rows);
            char **reasons = sl_xcalloc((size_t)cnt, sizeof *reasons);
            hid_t st = sl_h5_vlen_str_type();
            if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0 ||
                H5Dread(dr, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, reasons) < 0) {
                rc = sl_errorf(err, "%s: cannot read the failed rows", path);
            } else {
                *recs = sl_xrealloc(*recs, (size_t)(*n + cnt) * sizeof **recs);
                for (hssize_t i = 0; i < cnt; i++) {
                    (*recs)[*n].row = base + rows[i];
                    (*recs)[*n].reason = sl_xstrdup(reasons[i] ? reasons[i] : "");
                    (*n)++;
                    H5free_memory(reasons[i]);
                }
            }
            H5Tclose(st);
            free(rows);
            free(reasons);
        }
    }
    if (dr >= 0)
        H5Dclose(dr);
    if (d >= 0)
        H5Dclose(d);
    H5Fclose(f);
    return rc;
}

/* One root attribute per member of `describe`. */
static int write_describe(hid_t f, const cJSON *describe)
{
    int bad = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, describe)
    {
        if (cJSON_IsString(it)) {
            bad |= sl_h5_attr_write_str(f, it->string, it->valuestring) != 0;
        } else if (cJSON_IsBool(it)) {
            bad |= sl_h5_attr_write_i64(f, it->string, cJSON_IsTrue(it)) != 0;
        } else if (cJSON_IsNumber(it)) {
            double v = it->valuedouble;
            if (v == floor(v) && fabs(v) < 9e15) {
                bad |= sl_h5_attr_write_i64(f, it->string, (int64_t)v) != 0;
            } else {
                hid_t sp = H5Screate(H5S_SCALAR);
                hid_t a = H5Acreate2(f, it->string, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
                bad |= a < 0 || H5Awrite(a, H5T_NATIVE_DOUBLE, &v) < 0;
                if (a >= 0)
                    H5Aclose(a);
                H5Sclose(sp);
            }
        } else if (cJSON_IsArray(it)) {
            /* an array of strings (input files, stop strings); may be empty */
            hsize_t n = (hsize_t)cJSON_GetArraySize(it);
            const char **v = sl_xcalloc((size_t)n + 1, sizeof *v);
            int k = 0;
            const cJSON *e;
            cJSON_ArrayForEach(e, it) v[k++] = cJSON_IsString(e) ? e->valuestring : "";
            hid_t st = sl_h5_vlen_str_type();
            hid_t sp = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_NULL);
            hid_t a = H5Acreate2(f, it->string, st, sp, H5P_DEFAULT, H5P_DEFAULT);
            bad |= a < 0 || (n && H5Awrite(a, st, v) < 0);
            if (a >= 0)
                H5Aclose(a);
            H5Sclose(sp);
            H5Tclose(st);
            free(v);
        }
    }
    return bad;
}

int sl_predictions_write(const char *out_dir, const sl_inputs_t *in, const sl_unit_t *units,
                         int64_t nunits, const sl_outputs_t *outs, const cJSON *describe,
                         int64_t *failed, sl_error_t *err)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/predictions.h5", out_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    errno = 0;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return sl_errorf(err, "%s: cannot create: %s", tmp, strerror(errno ? errno : EIO));
    int bad = 0;
    error_rec_t *errs = NULL;
    int64_t nerr = 0;

    /* One virtual dataset per output: one mapping per unit, [global rows of the unit, all
     * cols] <- the part's dataset of the same name. */
    for (int o = 0; o < outs->n && !bad; o++) {
        const sl_out_spec_t *os = &outs->spec[o];
        int text = os->file_dtype == SL_OUT_TEXT;
        int nd = sl_out_ndims(os);
        hsize_t vdims[2] = {(hsize_t)in->total_rows, (hsize_t)os->cols};
        hid_t vspace = H5Screate_simple(nd, vdims, NULL);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        hid_t ft = file_type(os);
        /* Rows whose part file cannot be found (never in a complete job; but a copy of
         * predictions.h5 without parts/ beside it) read as NaN, -1 for integers, or an empty
         * string: see sl_vds_sources and the file's `layout` attribute. */
        float ffill = NAN;
        int ifill = -1;
        if (os->file_dtype == SL_I32)
            H5Pset_fill_value(dcpl, H5T_NATIVE_INT, &ifill);
        else if (!text) /* text keeps the default fill value: an empty string */
            H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &ffill);
        for (int64_t i = 0; i < nunits && !bad; i++) {
            const sl_unit_t *u = &units[i];
            const sl_shard_t *s = &in->shards[u->shard];
            char *rel = sl_part_relpath(s, u->row0, u->nrows);
            hsize_t start[2] = {(hsize_t)(s->first_row + u->row0), 0};
            hsize_t count[2] = {(hsize_t)u->nrows, (hsize_t)os->cols};
            H5Sselect_hyperslab(vspace, H5S_SELECT_SET, start, NULL, count, NULL);
            hid_t src = H5Screate_simple(nd, count, NULL);
            /* Relative source names resolve against the directory of predictions.h5, so the
             * output directory can be moved or read from anywhere as a whole. */
            bad |= H5Pset_virtual(dcpl, vspace, rel, os->name, src) < 0;
            H5Sclose(src);
            if (o == 0) {
                snprintf(path, sizeof path, "%s/%s", out_dir, rel);
                if (!bad && collect_errors(path, s->first_row + u->row0, &errs, &nerr, err) != 0)
                    bad = 2;
            }
            free(rel);
        }
        H5Sselect_all(vspace);
        if (!bad) {
            hid_t d = H5Dcreate2(f, os->name, ft, vspace, H5P_DEFAULT, dcpl, H5P_DEFAULT);
            bad |= d < 0;
            if (d >= 0 && o == 0 && outs->labels) {
                /* classification label names, in class order */
                hid_t st = sl_h5_vlen_str_type();
                hsize_t nl = (hsize_t)outs->n_labels;
                hid_t as = H5Screate_simple(1, &nl, NULL);
                hid_t a = H5Acreate2(d, "labels", st, as, H5P_DEFAULT, H5P_DEFAULT);
                bad |= a < 0 || H5Awrite(a, st, outs->labels) < 0;
                if (a >= 0)
                    H5Aclose(a);
                H5Sclose(as);
                H5Tclose(st);
            }
            if (d >= 0)
                H5Dclose(d);
        }
        H5Tclose(ft);
        H5Pclose(dcpl);
        H5Sclose(vspace);
    }

    /* /shards: (path, first_row, rows). */
    if (!bad) {
        hid_t st = sl_h5_vlen_str_type();
        hid_t ct = H5Tcreate(H5T_COMPOUND, sizeof(shard_rec_t));
        H5Tinsert(ct, "path", HOFFSET(shard_rec_t, path), st);
        H5Tinsert(ct, "first_row", HOFFSET(shard_rec_t, first_row), H5T_NATIVE_INT64);
        H5Tinsert(ct, "rows", HOFFSET(shard_rec_t, rows), H5T_NATIVE_INT64);
        shard_rec_t *recs = sl_xcalloc((size_t)in->n + 1, sizeof *recs);
        for (int i = 0; i < in->n; i++)
            recs[i] =
                (shard_rec_t){in->shards[i].path, in->shards[i].first_row, in->shards[i].rows};
        hsize_t n = (hsize_t)in->n;
        bad |= write_dataset(f, "shards", ct, ct, 1, &n, recs) != 0;
        free(recs);

        hid_t et = H5Tcreate(H5T_COMPOUND, sizeof(error_rec_t));
        H5Tinsert(et, "row", HOFFSET(error_rec_t, row), H5T_NATIVE_INT64);
        H5Tinsert(et, "reason", HOFFSET(error_rec_t, reason), st);
        hsize_t ne = (hsize_t)nerr;
        bad |= write_dataset(f, "errors", et, et, 1, &ne, errs) != 0;
        H5Tclose(et);
        H5Tclose(ct);
        H5Tclose(st);
        bad |= sl_h5_attr_write_i64(f, "total_rows", in->total_rows) != 0;
        bad |= sl_h5_attr_write_str(f, "shardline_version", SL_VERSION) != 0;
        /* Says how to read the file: its outputs live in parts/ beside it. */
        bad |= sl_h5_attr_write_str(f, "layout",
                                    "virtual: rows read from parts/ beside this "
                                    "file; copy it with `shardline merge OUT "
                                    "--consolidate`") != 0;
        bad |= write_describe(f, describe) != 0;
    }
    for (int64_t i = 0; i < nerr; i++)
        free(errs[i].reason);
    free(errs);
    int e = bad ? (errno ? errno : EIO) : 0;
    if (!bad && sl_fault_hit(SL_FAULT_MERGE)) {
        bad = 1;
        e = errno;
    }
    bad |= H5Fclose(f) < 0;
    snprintf(path, sizeof path, "%s/predictions.h5", out_dir);
    if (bad) {
        e = e ? e : errno ? errno : EIO;
        unlink(tmp);
        return bad == 2 ? -1
                        : sl_errorf(err, "%s: writing failed: %s%s", tmp, strerror(e),
                                    sl_fault_note(SL_FAULT_MERGE));
    }
    /* predictions.h5 appears only by rename, complete: a merge killed before this point
     * leaves only its temporary file (ignored; the next run or merge writes it again). */
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return sl_errorf(err, "%s: cannot commit: %s", path, strerror(e));
    }
    *failed = nerr;
    return 0;
}

/* ---- virtual sources, consolidation ------------------------------------------------------ */

/* The first dataset at the root of f with a virtual layout, or -1. */
static hid_t first_virtual(hid_t f)
{
    hsize_t n = 0;
    H5Gget_num_objs(f, &n);
    for (hsize_t i = 0; i < n; i++) {
        char name[256];
        if (H5Gget_objname_by_idx(f, i, name, sizeof name) < 0 ||
            H5Gget_objtype_by_idx(f, i) != H5G_DATASET)
            continue;
        hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
        if (d < 0)
            continue;
        hid_t dcpl = H5Dget_create_plist(d);
        int virt = H5Pget_layout(dcpl) == H5D_VIRTUAL;
        H5Pclose(dcpl);
        if (virt)
            return d;
        H5Dclose(d);
    }
    return -1;
}

int sl_vds_sources(const char *path, int64_t *total, int64_t *missing, char *first_missing,
                   size_t len, sl_error_t *err)
{
    *total = *missing = 0;
    if (first_missing && len)
        first_missing[0] = '\0';
    hid_t f = sl_h5_open_ro(path, err);
    if (f < 0)
        return -1;
    hid_t d = first_virtual(f);
    if (d >= 0) {
        /* Source names are relative to the directory of the file (how HDF5 resolves them
         * when no prefix is set). */
        char *copy = sl_xstrdup(path);
        const char *dir = dirname(copy);
        hid_t dcpl = H5Dget_create_plist(d);
        size_t n = 0;
        H5Pget_virtual_count(dcpl, &n);
        for (size_t i = 0; i < n; i++) {
            char name[4096], full[8200];
            if (H5Pget_virtual_filename(dcpl, i, name, sizeof name) < 0)
                continue;
            (*total)++;
            if (!strcmp(name, "."))
                continue;
            if (name[0] == '/')
                snprintf(full, sizeof full, "%s", name);
            else
                snprintf(full, sizeof full, "%s/%s", dir, name);
            if (access(full, R_OK) != 0) {
                if (*missing == 0 && first_missing)
                    snprintf(first_missing, len, "%s", full);
                (*missing)++;
            }
        }
        H5Pclose(dcpl);
        H5Dclose(d);
        free(copy);
    }
    H5Fclose(f);
    return 0;
}

int64_t sl_vds_warn_missing(const char *path)
{
    int64_t total = 0, missing = 0;
    char first[4096];
    sl_error_t err;
    if (sl_vds_sources(path, &total, &missing, first, sizeof first, &err) == 0 && missing > 0)
        fprintf(stderr,
                "shardline: warning: %s: %lld of the %lld part files its virtual datasets read "
                "are missing (first: %s); their rows read as NaN / -1 / empty strings. Read the "
                "file inside its output directory, or make a self-contained copy there with "
                "`shardline merge OUT --consolidate`\n",
                path, (long long)missing, (long long)total, first);
    return missing;
}

/* Copies every attribute of `src` onto `dst` (same names, types and values). */
static int copy_attrs(hid_t src, hid_t dst)
{
    H5O_info_t info;
    if (H5Oget_info2(src, &info, H5O_INFO_NUM_ATTRS) < 0)
        return -1;
    int bad = 0;
    for (hsize_t i = 0; i < info.num_attrs && !bad; i++) {
        hid_t a =
            H5Aopen_by_idx(src, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, i, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0)
            a = H5Aopen_by_idx(src, ".", H5_INDEX_NAME, H5_ITER_INC, i, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0)
            return -1;
        char name[256];
        hid_t ty = H5Aget_type(a), sp = H5Aget_space(a);
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        size_t sz = H5Tget_size(ty);
        void *buf = sl_xcalloc((size_t)(np > 0 ? np : 1), sz);
        H5Aget_name(a, sizeof name, name);
        bad |= np > 0 && H5Aread(a, ty, buf) < 0;
        hid_t b = H5Acreate2(dst, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
        bad |= b < 0 || (np > 0 && H5Awrite(b, ty, buf) < 0);
        if (np > 0 && H5Tdetect_class(ty, H5T_VLEN) + H5Tis_variable_str(ty) > 0)
            H5Dvlen_reclaim(ty, sp, H5P_DEFAULT, buf);
        if (b >= 0)
            H5Aclose(b);
        free(buf);
        H5Sclose(sp);
        H5Tclose(ty);
        H5Aclose(a);
    }
    return bad ? -1 : 0;
}

/* A real, chunked copy of the virtual dataset `d` as `name` in `dst`, `block` rows at a time. */
static int copy_virtual(hid_t d, hid_t dst, const char *name)
{
    hid_t ty = H5Dget_type(d), sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 1}, chunk[2];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    size_t row_bytes = H5Tget_size(ty) * (nd == 2 ? (size_t)dims[1] : 1);
    hsize_t block = (hsize_t)((8u << 20) / (row_bytes ? row_bytes : 1));
    block = block < 1 ? 1 : block;
    chunk[0] = dims[0] < 1024 ? (dims[0] ? dims[0] : 1) : 1024;
    chunk[1] = nd == 2 ? (dims[1] ? dims[1] : 1) : 1;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, nd, chunk);
    hid_t out = H5Dcreate2(dst, name, ty, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int bad = out < 0;
    void *buf = sl_xmalloc((size_t)(block < dims[0] ? block
                                    : dims[0]       ? dims[0]
                                                    : 1) *
                               row_bytes +
                           1);
    for (hsize_t r0 = 0; !bad && r0 < dims[0]; r0 += block) {
        hsize_t cnt[2] = {dims[0] - r0 < block ? dims[0] - r0 : block, nd == 2 ? dims[1] : 1};
        hsize_t start[2] = {r0, 0};
        hid_t fs = H5Dget_space(d), ms = H5Screate_simple(nd, cnt, NULL);
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
        bad |= H5Dread(d, ty, ms, fs, H5P_DEFAULT, buf) < 0;
        hid_t os = H5Dget_space(out);
        H5Sselect_hyperslab(os, H5S_SELECT_SET, start, NULL, cnt, NULL);
        bad |= !bad && H5Dwrite(out, ty, ms, os, H5P_DEFAULT, buf) < 0;
        if (H5Tis_variable_str(ty) > 0)
            H5Dvlen_reclaim(ty, ms, H5P_DEFAULT, buf);
        H5Sclose(os);
        H5Sclose(ms);
        H5Sclose(fs);
    }
    if (!bad)
        bad |= copy_attrs(d, out) != 0;
    free(buf);
    if (out >= 0)
        H5Dclose(out);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(ty);
    return bad ? -1 : 0;
}

int sl_predictions_consolidate(const char *src, const char *dst, sl_error_t *err)
{
    int64_t total = 0, missing = 0;
    char first[4096];
    if (sl_vds_sources(src, &total, &missing, first, sizeof first, err) != 0)
        return -1;
    if (missing > 0)
        return sl_errorf(err,
                         "%s: %lld of %lld part files are missing (first: %s); "
                         "consolidate in the job's output directory",
                         src, (long long)missing, (long long)total, first);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", dst, (int)getpid());
    hid_t f = sl_h5_open_ro(src, err);
    if (f < 0)
        return -1;
    hid_t g = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        H5Fclose(f);
        return sl_errorf(err, "%s: cannot create", tmp);
    }
    int bad = copy_attrs(f, g) != 0;
    hsize_t n = 0;
    H5Gget_num_objs(f, &n);
    for (hsize_t i = 0; i < n && !bad; i++) {
        char name[256];
        if (H5Gget_objname_by_idx(f, i, name, sizeof name) < 0) {
            bad = 1;
            break;
        }
        hid_t d = H5Gget_objtype_by_idx(f, i) == H5G_DATASET ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
        int virt = 0;
        if (d >= 0) {
            hid_t dcpl = H5Dget_create_plist(d);
            virt = H5Pget_layout(dcpl) == H5D_VIRTUAL;
            H5Pclose(dcpl);
        }
        if (virt)
            bad |= copy_virtual(d, g, name) != 0;
        else
            bad |= H5Ocopy(f, name, g, name, H5P_DEFAULT, H5P_DEFAULT) < 0;
        if (d >= 0)
            H5Dclose(d);
    }
    if (!bad) /* the copy no longer needs parts/ */
        bad |= (H5Aexists(g, "layout") > 0 && H5Adelete(g, "layout") < 0) ||
               sl_h5_attr_write_str(g, "layout",
                                    "self-contained (consolidated from the part files)") != 0;
    bad |= H5Fclose(g) < 0;
    H5Fclose(f);
    if (bad) {
        unlink(tmp);
        return sl_errorf(err, "%s: writing failed (disk full?)", tmp);
    }
    if (rename(tmp, dst) != 0) {
        int e = errno;
        unlink(tmp);
        return sl_errorf(err, "%s: cannot commit: %s", dst, strerror(e));
    }
    return 0;
}
