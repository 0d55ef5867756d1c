/*
 * h5util.h — small HDF5 helpers shared by the input reader, the part writer and `inspect`:
 * typed attribute read/write, and turning the library's error stack into one-line messages.
 * Every HDF5 call of a process happens on one thread at a time (the library is not
 * thread-safe in this build): the I/O thread during a run, the main thread before and after.
 */
#ifndef SL_H5UTIL_H
#define SL_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "common/sl_error.h"

/* Turns off HDF5's automatic error-stack printing (we print one line naming the culprit). */
void sl_h5_quiet(void);

int sl_h5_attr_write_str(hid_t obj, const char *name, const char *value);
int sl_h5_attr_write_i64(hid_t obj, const char *name, int64_t value);
/* Reads a string attribute into buf (truncated to len-1); -1 when missing or not a string. */
int sl_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t len);
int sl_h5_attr_read_i64(hid_t obj, const char *name, int64_t *value);

/* Opens `path` read-only; on failure fills err naming the file ("not an HDF5 file", ...). */
hid_t sl_h5_open_ro(const char *path, sl_error_t *err);

/* A variable-length UTF-8 string type (close with H5Tclose). */
hid_t sl_h5_vlen_str_type(void);

#endif
