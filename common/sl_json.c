/*
 * sl_json.c — a JSON file into a cJSON tree (see sl_json.h).
 */
#include "common/sl_json.h"

#include <stdlib.h>

#include "common/sl_fs.h"

cJSON *sl_json_read(const char *path, size_t max_bytes, int want_array, sl_error_t *err)
{
    char *text = NULL;
    if (sl_read_file(path, max_bytes, &text, NULL, err) != 0)
        return NULL;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        sl_errorf(err, "%s: not valid JSON (error near byte %lld)", path,
                  at ? (long long)(at - text) : 0LL);
    } else if (want_array ? !cJSON_IsArray(root) : !cJSON_IsObject(root)) {
        sl_errorf(err, "%s: expected a JSON %s", path, want_array ? "array" : "object");
        cJSON_Delete(root);
        root = NULL;
    }
    free(text);
    return root;
}
