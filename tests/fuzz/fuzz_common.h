/*
 * fuzz_common.h — what the libFuzzer targets of tests/fuzz share: most of shardline's parsers
 * take a path, not bytes, so each input is written to a file in a private directory under
 * /dev/shm (memory, no disk I/O), made once per process and removed at exit. The targets read
 * their fixed companions (real tokenizers, configs) from SL_SOURCE_DIR, else from the source
 * tree the target was built from.
 */
#ifndef SL_FUZZ_COMMON_H
#define SL_FUZZ_COMMON_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/sl_error.h"

#ifndef SL_FUZZ_SOURCE_DIR
#define SL_FUZZ_SOURCE_DIR "."
#endif

static char sl_fuzz_dir[64];

static inline void sl_fuzz_cleanup(void)
{
    if (!sl_fuzz_dir[0])
        return;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", sl_fuzz_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", sl_fuzz_dir);
}

/* The private directory (made on first use). */
static inline const char *sl_fuzz_tmpdir(void)
{
    if (!sl_fuzz_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(sl_fuzz_dir, sizeof sl_fuzz_dir, "%s/sl-fuzz-XXXXXX", base);
        if (!mkdtemp(sl_fuzz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(sl_fuzz_cleanup);
    }
    return sl_fuzz_dir;
}

/* Writes data[0..size) to <tmpdir>/<rel> (parent directories made) and returns its path in
 * path[cap]. */
static inline const char *sl_fuzz_write(const char *rel, const uint8_t *data, size_t size,
                                        char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", sl_fuzz_tmpdir(), rel);
    for (char *s = path + strlen(sl_fuzz_dir) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        mkdir(path, 0700);
        *s = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            perror(path);
            abort();
        }
        off += (size_t)w;
    }
    close(fd);
    return path;
}

static inline void sl_fuzz_remove(const char *rel)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", sl_fuzz_tmpdir(), rel);
    unlink(path);
}

/* <source dir>/<rel> in path[cap]. */
static inline const char *sl_fuzz_source(const char *rel, char *path, size_t cap)
{
    const char *src = getenv("SL_SOURCE_DIR");
    snprintf(path, cap, "%s/%s", src && *src ? src : SL_FUZZ_SOURCE_DIR, rel);
    return path;
}

#endif
