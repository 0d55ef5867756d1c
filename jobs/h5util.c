/*
 * h5util.c — HDF5 attribute helpers and quiet opening (see h5util.h).
 */
#include "jobs/h5util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void sl_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

hid_t sl_h5_vlen_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

int sl_h5_attr_write_str(hid_t obj, const char *name, const char *value)
{
    hid_t t = sl_h5_vlen_str_type();
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 ? -1 : (H5Awrite(a, t, &value) < 0 ? -1 : 0);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

int sl_h5_attr_write_i64(hid_t obj, const char *name, int64_t value)
{
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 ? -1 : (H5Awrite(a, H5T_NATIVE_INT64, &value) < 0 ? -1 : 0);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(s);
    return rc;
}

int sl_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t len)
{
    if (H5Aexists(obj, name) <= 0)
        return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t t = sl_h5_vlen_str_type();
            char *v = NULL;
            if (H5Aread(a, t, &v) >= 0 && v) {
                snprintf(buf, len, "%s", v);
                H5free_memory(v);
                rc = 0;
            }
            H5Tclose(t);
        } else {
            size_t n = H5Tget_size(ft);
            char *v = calloc(n + 1, 1);
            hid_t t = H5Tcopy(H5T_C_S1);
            H5Tset_size(t, n + 1);
            if (v && H5Aread(a, t, v) >= 0) {
                snprintf(buf, len, "%s", v);
                rc = 0;
            }
            H5Tclose(t);
            free(v);
        }
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int sl_h5_attr_read_i64(hid_t obj, const char *name, int64_t *value)
{
    if (H5Aexists(obj, name) <= 0)
        return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    int rc = H5Aread(a, H5T_NATIVE_INT64, value) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

hid_t sl_h5_open_ro(const char *path, sl_error_t *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        sl_errorf(err, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        sl_errorf(err, "%s: not a regular file", path);
        return -1;
    }
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        sl_errorf(err, "%s: not an HDF5 file (or its header is corrupt)", path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        sl_errorf(err, "%s: cannot open as HDF5 (corrupt or truncated file)", path);
    return f;
}
