/*
 * fingerprint.c — the identity of a model directory (see fingerprint.h).
 */
#include "models/formats/fingerprint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/sl_fs.h"
#include "common/sl_hash.h"

static int hash_file(uint64_t *h, const char *path, const char *name, sl_error_t *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return sl_errorf(err, "%s: cannot read", path);
    struct stat st;
    fstat(fd, &st);
    *h = sl_hash_str(*h, name);
    *h = sl_hash_u64(*h, (uint64_t)st.st_size);
    if (st.st_size > 0) {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return sl_errorf(err, "%s: cannot map", path);
        }
        *h = sl_hash_bytes(*h, map, (size_t)st.st_size);
        munmap(map, (size_t)st.st_size);
    }
    close(fd);
    return 0;
}

static int defines_model(const char *name)
{
    size_t n = strlen(name);
    /* A calibration file describes a model (it records this very fingerprint): the
     * directory's own, or a GGUF file's (FILE.shardline-calibration.safetensors) kept here. */
    static const char calib[] = "shardline-calibration.safetensors";
    if (n >= sizeof calib - 1 && !strcmp(name + n - (sizeof calib - 1), calib))
        return 0;
    return (n > 5 && !strcmp(name + n - 5, ".json")) ||
           (n > 12 && !strcmp(name + n - 12, ".safetensors"));
}

int sl_model_fingerprint(const char *dir, uint64_t *out, sl_error_t *err)
{
    struct stat fst;
    if (stat(dir, &fst) == 0 && S_ISREG(fst.st_mode)) { /* a single-file model (GGUF) */
        const char *base = strrchr(dir, '/');
        *out = SL_HASH_INIT;
        return hash_file(out, dir, base ? base + 1 : dir, err);
    }
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (access(cfg, R_OK) != 0)
        return sl_errorf(err, "%s: %s (a model directory holds config.json)", cfg, strerror(errno));
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, alphasort); /* sorted: the same files give the same hash */
    if (n < 0)
        return sl_errorf(err, "%s: cannot list the model directory", dir);
    uint64_t h = SL_HASH_INIT;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        struct stat st;
        char *path = sl_path_join(dir, name);
        if (rc == 0 && name[0] != '.' && stat(path, &st) == 0) {
            if (S_ISREG(st.st_mode) && defines_model(name)) {
                rc = hash_file(&h, path, name, err);
            } else if (S_ISDIR(st.st_mode)) {
                /* sentence-transformers module folders (1_Pooling/config.json, ...) */
                char *sub = sl_path_join(path, "config.json");
                if (access(sub, R_OK) == 0)
                    rc = hash_file(&h, sub, name, err);
                free(sub);
            }
        }
        free(path);
        free(ents[i]);
    }
    free(ents);
    *out = h;
    return rc;
}
