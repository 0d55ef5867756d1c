/*
 * fuzz_h5input.c — libFuzzer target for the validation of HDF5 input files (jobs/input.c): the
 * first byte picks what the job expects (features of an mlp, text or token ids of a tokenized
 * model), the rest is written to input.h5 and goes through the runner's path: sl_inputs_scan
 * (open, dataset present, rank, class, shape, companions of token ids) and, for a file it
 * accepts, the reads of the first and last rows the I/O thread would do. HDF5's own parser is
 * not instrumented, and HDF5 1.10.8 has memory errors of its own on corrupt files (found by
 * this target within a minute; see tests/fuzz/README.md): what this is for is shardline's
 * handling of whatever HDF5 returns.
 */
#include "fuzz_common.h"
#include "jobs/h5util.h"
#include "jobs/input.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sl_h5_quiet(); /* as the runner does: errors are reported through sl_error_t */
    return 0;
}

static void read_rows(const sl_inputs_t *in, int64_t row0, int64_t n)
{
    sl_reader_t r;
    sl_reader_init(&r);
    sl_error_t err;
    if (in->kind == SL_INPUT_FEATURES) {
        float *dst = malloc((size_t)(n * in->cols) * sizeof(float) + 1);
        sl_reader_read(&r, in, 0, row0, n, dst, &err);
        free(dst);
    } else if (in->kind == SL_INPUT_TEXT) {
        char **texts = calloc((size_t)n, sizeof(char *));
        if (sl_reader_read_text(&r, in, 0, row0, n, texts, &err) == 0)
            for (int64_t i = 0; i < n; i++)
                free(texts[i]);
        free(texts);
    } else {
        size_t cells = (size_t)(n * in->cols) + 1;
        int32_t *ids = malloc(cells * sizeof(int32_t));
        int32_t *type_ids = malloc(cells * sizeof(int32_t));
        int32_t *lengths = malloc((size_t)n * sizeof(int32_t));
        /* lengths are the file's (the task refuses a row whose length is outside 1..L) */
        sl_reader_read_tokens(&r, in, 0, row0, n, ids, lengths, type_ids, &err);
        free(ids);
        free(type_ids);
        free(lengths);
    }
    sl_reader_close(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const datasets[] = {"features", "text", "input_ids"};
    int which = data[0] % 3;
    char path[256];
    sl_fuzz_write("input.h5", data + 1, size - 1, path, sizeof path);
    char *globs[] = {path};
    sl_inputs_t in;
    sl_error_t err;
    err.msg[0] = '\0';
    if (sl_inputs_scan(&in, globs, 1, datasets[which], which != 0, &err) != 0) {
        if (!strstr(err.msg, "input.h5"))
            abort(); /* every refusal names the file */
        sl_inputs_free(&in);
        return 0;
    }
    if (in.n != 1 || in.total_rows != in.shards[0].rows || in.cols < 0)
        abort();
    /* a few rows at each end, as units of a job would read them (bounded for memory) */
    int64_t rows = in.total_rows, n = rows < 4 ? rows : 4;
    if (n > 0 && in.cols <= (1 << 16)) {
        read_rows(&in, 0, n);
        read_rows(&in, rows - n, n);
    }
    sl_inputs_free(&in);
    return 0;
}
