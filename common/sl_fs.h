/*
 * sl_fs.h — small file-system helpers every module uses: joining a directory and a file name,
 * and reading a whole (small) file with a size limit and a message naming the file.
 */
#ifndef SL_FS_H
#define SL_FS_H

#include <stddef.h>

#include "common/sl_error.h"

/* "dir/file" (no doubled slash); malloc'd. */
char *sl_path_join(const char *dir, const char *file);

/* Reads all of path into a NUL-terminated malloc'd buffer (*out; *len = bytes, may be NULL).
 * Files larger than max_bytes are refused, so a wrong path cannot make us read gigabytes. */
int sl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, sl_error_t *err);

#endif
