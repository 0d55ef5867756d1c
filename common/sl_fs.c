/*
 * sl_fs.c — path joining, whole-file reads and read-only file mappings (see sl_fs.h).
 */
#include "common/sl_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

int sl_map_file(const char *path, size_t min_bytes, const char *what, void **map, size_t *size,
                sl_error_t *err)
{
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        sl_errorf(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        sl_errorf(err, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if ((unsigned long long)sb.st_size < (unsigned long long)min_bytes) {
        sl_errorf(err, "%s: file is %lld bytes, shorter than the %zu-byte %s", path,
                  (long long)sb.st_size, min_bytes, what);
        close(fd);
        return -1;
    }
    size_t n = (size_t)sb.st_size;
    void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping keeps the file referenced */
    if (m == MAP_FAILED)
        return sl_errorf(err, "%s: cannot mmap %zu bytes: %s", path, n, strerror(errno));
    *map = m;
    *size = n;
    return 0;
}

void sl_unmap_file(void *map, size_t size)
{
    if (map)
        munmap(map, size);
}

int sl_mkdir_p(const char *path, sl_error_t *err)
{
    char *p = sl_xstrdup(path);
    int rc = 0;
    /* Each prefix ending before a '/', then the whole path; EEXIST is checked below. */
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            rc = sl_errorf(err, "%s: cannot create directory: %s", p, strerror(errno));
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (rc == 0 && stat(p, &st) != 0)
        rc = sl_errorf(err, "%s: cannot create directory: %s", p, strerror(errno));
    else if (rc == 0 && !S_ISDIR(st.st_mode))
        rc = sl_errorf(err, "%s: cannot create directory: a file of that name exists", p);
    free(p);
    return rc;
}
