/*
 * sl_test.c — tally and helpers for the unit tests (see sl_test.h).
 */
#include "sl_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sl_test_passed = 0, sl_test_failed = 0;

int sl_test_finish(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, sl_test_passed, sl_test_failed);
    return (sl_test_failed == 0 && sl_test_passed > 0) ? 0 : 1;
}

double sl_test_rel_err(const float *a, const double *b, long n)
{
    double maxdiff = 0.0, maxref = 1e-30;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff))
            maxdiff = d; /* also catches NaN */
        if (fabs(b[i]) > maxref)
            maxref = fabs(b[i]);
    }
    return maxdiff / maxref;
}

const char *sl_test_source_dir(void)
{
    const char *s = getenv("SL_SOURCE_DIR");
    return s && *s ? s : ".";
}

int sl_test_model_path(const char *name, const char *what, char *out, size_t cap)
{
    const char *models = getenv("SL_MODELS_DIR");
    char pathfile[4200];
    if (models && *models)
        snprintf(pathfile, sizeof pathfile, "%s/%s.path", models, name);
    else
        snprintf(pathfile, sizeof pathfile, "%s/build/models/%s.path", sl_test_source_dir(), name);
    FILE *f = fopen(pathfile, "r");
    if (!f || !fgets(out, (int)cap, f)) {
        if (f)
            fclose(f);
        fprintf(stderr,
                "FAIL: %s is not installed (%s missing): run scripts/install-models.sh "
                "(SL_MODELS_DIR picks the folder)\n",
                what, pathfile);
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    return 0;
}

int sl_test_model_skipped(const char *name, const char *what)
{
    const char *list = getenv("SL_SKIP_MODELS");
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) {
            printf("%s: NOT CHECKED (SL_SKIP_MODELS=%s)\n", what, list);
            return 1;
        }
        p = end ? end + 1 : p + len;
    }
    return 0;
}

double sl_test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int sl_test_tmpdir(char *out, size_t cap, const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, cap, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

void sl_test_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

void *sl_test_h5_read(hid_t f, const char *name, hid_t type, size_t es, size_t *n, int *ndim,
                      hsize_t dims[2])
{
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0)
        return NULL;
    hid_t sp = H5Dget_space(ds);
    size_t np = (size_t)H5Sget_simple_extent_npoints(sp);
    if (n)
        *n = np;
    if (ndim)
        *ndim = H5Sget_simple_extent_ndims(sp);
    if (dims) {
        hsize_t d[H5S_MAX_RANK] = {1, 1};
        H5Sget_simple_extent_dims(sp, d, NULL);
        dims[0] = d[0];
        dims[1] = d[1];
    }
    void *buf = malloc(np * es + 1);
    herr_t rc = H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Sclose(sp);
    H5Dclose(ds);
    if (rc < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

char **sl_test_h5_strings(hid_t f, const char *name, int *n)
{
    *n = 0;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        return NULL;
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, H5T_VARIABLE);
    H5Tset_cset(ty, H5T_CSET_UTF8);
    hid_t s = H5Dget_space(d);
    int k = (int)H5Sget_simple_extent_npoints(s);
    char **raw = calloc((size_t)k + 1, sizeof(char *));
    char **out = calloc((size_t)k + 1, sizeof(char *));
    if (H5Dread(d, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0) {
        for (int i = 0; i < k; i++)
            out[i] = strdup(raw[i] ? raw[i] : "");
#if H5_VERSION_GE(1, 12, 0)
        H5Treclaim(ty, s, H5P_DEFAULT, raw);
#else
        H5Dvlen_reclaim(ty, s, H5P_DEFAULT, raw);
#endif
        *n = k;
    } else {
        free(out);
        out = NULL;
    }
    free(raw);
    H5Sclose(s);
    H5Tclose(ty);
    H5Dclose(d);
    return out;
}

void sl_test_free_strings(char **v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}
