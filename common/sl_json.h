/*
 * sl_json.h — reading a JSON file (a model's config.json, an index of shards) into a cJSON tree,
 * with the size limit and the messages every loader uses.
 */
#ifndef SL_JSON_H
#define SL_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "common/sl_error.h"

/* Reads and parses path (at most max_bytes), whose top level must be an object (or an array
 * when want_array). NULL with "PATH: not valid JSON (error near byte N)" or "PATH: expected a
 * JSON object" on failure (err may be NULL). Free with cJSON_Delete. */
cJSON *sl_json_read(const char *path, size_t max_bytes, int want_array, sl_error_t *err);

#endif
