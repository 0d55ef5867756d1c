/*
 * sl_fs.h — small file-system helpers every module uses: joining a directory and a file name,
 * creating a directory with its parents,
 * reading a whole (small) file with a size limit, and mapping a whole (large) model file
 * read-only; every failure gives a message naming the file.
 */
#ifndef SL_FS_H
#define SL_FS_H

#include <stddef.h>

#include "common/sl_error.h"

/* "dir/file" (no doubled slash); malloc'd. */
char *sl_path_join(const char *dir, const char *file);

/* Creates path and its missing parents (mode 0777 before the umask), as `mkdir -p`. An
 * existing directory is fine; an existing non-directory, or a part that cannot be created, is
 * an error naming that part. */
int sl_mkdir_p(const char *path, sl_error_t *err);

/* Reads all of path into a NUL-terminated malloc'd buffer (*out; *len = bytes, may be NULL).
 * Files larger than max_bytes are refused, so a wrong path cannot make us read gigabytes. */
int sl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, sl_error_t *err);

/* Maps all of the regular file path read-only and private (*map, *size bytes). Files shorter
 * than min_bytes (at least 1) are refused as "shorter than the <min_bytes>-byte <what>". The
 * descriptor is closed at once: the mapping keeps the file referenced. */
int sl_map_file(const char *path, size_t min_bytes, const char *what, void **map, size_t *size,
                sl_error_t *err);

/* Unmaps what sl_map_file mapped; a NULL map is ignored. */
void sl_unmap_file(void *map, size_t size);

#endif
