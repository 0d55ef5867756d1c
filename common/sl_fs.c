/*
 * sl_fs.c — path joining and whole-file reads (see sl_fs.h).
 */
#include "common/sl_fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sl_path_join(const char *dir, const char *file)
{
    size_t dl = strlen(dir), n = dl + strlen(file) + 2;
    char *p = sl_xmalloc(n);
    snprintf(p, n, "%s%s%s", dir, (dl && dir[dl - 1] == '/') ? "" : "/", file);
    return p;
}

int sl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, sl_error_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sl_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = sl_xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            if (cap >= max_bytes) {
                fclose(f);
                free(buf);
                return sl_errorf(err, "%s: file larger than %zu bytes", path, max_bytes);
            }
            cap *= 2;
            buf = sl_xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sl_errorf(err, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}
