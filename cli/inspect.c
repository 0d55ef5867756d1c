/*
 * inspect.c — `shardline inspect`: a model directory (architecture, parameters, memory per TP
 * rank), a GGUF file (recognised by its magic; see sl_inspect_gguf) or an HDF5 file (every
 * dataset with its shape and type; virtual datasets say so).
 */
#include "cli/inspect.h"

#include <getopt.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sl_error.h"
#include "common/sl_json.h"
#include "jobs/h5util.h"
#include "jobs/output.h"
#include "kernels/backend.h"
#include "models/bert.h"
#include "models/calib.h"
#include "models/formats/weights.h"
#include "models/llama.h"
#include "models/mlp.h"
#include "cli/inspect_model.h"
#include "runner/task.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: shardline inspect [--tp N] [--precision P] MODEL_DIR | FILE.gguf | FILE.h5\n\n"
            "  MODEL_DIR   prints the architecture, parameter count and weight memory per\n"
            "              tensor-parallel rank for --tp N (default 1)\n"
            "  --precision auto|f32|f16|bf16|int8|w8a8  also loads the model (rank 0 of --tp N,\n"
            "              on the CPU) as `run --precision P` would and lists every matrix\n"
            "              with its dtype and bytes, and the weight bytes (w8a8: as int8)\n"
            "  FILE.gguf   prints the architecture, hyperparameters, tokenizer and tensors\n"
            "  FILE.h5     prints every dataset with its shape and type\n");
}

static const char *type_name(hid_t t, char *buf, size_t len)
{
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    switch (c) {
    case H5T_FLOAT: snprintf(buf, len, "float%zu", 8 * sz); break;
    case H5T_INTEGER:
        snprintf(buf, len, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", 8 * sz);
        break;
    case H5T_STRING: snprintf(buf, len, "string"); break;
    case H5T_COMPOUND: {
        int n = H5Tget_nmembers(t);
        size_t o = (size_t)snprintf(buf, len, "compound{");
        for (int i = 0; i < n && o < len; i++) {
            char *name = H5Tget_member_name(t, (unsigned)i);
            o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", name);
            H5free_memory(name);
        }
        if (o < len)
            snprintf(buf + o, len - o, "}");
        break;
    }
    default: snprintf(buf, len, "other"); break;
    }
    return buf;
}

static herr_t visit(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d < 0)
        return 0;
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d), dcpl = H5Dget_create_plist(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[32] = {0};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    char shape[256] = "", tn[256];
    size_t o = 0;
    for (int i = 0; i < nd && o < sizeof shape; i++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%llu", i ? ", " : "",
                              (unsigned long long)dims[i]);
    const char *layout = H5Pget_layout(dcpl) == H5D_VIRTUAL ? " (virtual)" : "";
    printf("  /%-28s [%s] %s%s\n", name, shape, type_name(t, tn, sizeof tn), layout);
    H5Pclose(dcpl);
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(d);
    return 0;
}

/* One root attribute: "  name = value" for strings, integers, floats and string arrays. */
static herr_t print_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    (void)info;
    (void)data;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5T_class_t c = H5Tget_class(t);
    printf("  @%-27s ", name);
    if (c == H5T_STRING) {
        hid_t st = sl_h5_vlen_str_type();
        if (H5Tis_variable_str(t) > 0 && n > 0) {
            char **v = calloc((size_t)n, sizeof *v);
            if (v && H5Aread(a, st, v) >= 0) {
                for (hssize_t i = 0; i < n; i++)
                    printf("%s%s", i ? ", " : "", v[i] ? v[i] : "");
                H5Dvlen_reclaim(st, sp, H5P_DEFAULT, v);
            }
            free(v);
        } else if (n > 0) {
            char buf[4096];
            if (sl_h5_attr_read_str(loc, name, buf, sizeof buf) == 0)
                printf("%s", buf);
        }
        H5Tclose(st);
    } else if (c == H5T_INTEGER && n == 1) {
        long long v = 0;
        if (H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0)
            printf("%lld", v);
    } else if (c == H5T_FLOAT && n == 1) {
        double v = 0;
        if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0)
            printf("%.17g", v);
    } else {
        printf("(%lld values)", (long long)n);
    }
    putchar('\n');
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return 0;
}

static int inspect_h5(const char *path)
{
    sl_error_t err;
    hid_t f = sl_h5_open_ro(path, &err);
    if (f < 0) {
        fprintf(stderr, "shardline: error: %s\n", err.msg);
        return SL_EXIT_INPUT;
    }
    printf("%s: HDF5 file\n", path);
    H5Aiterate2(f, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, print_attr, NULL);
    H5Ovisit(f, H5_INDEX_NAME, H5_ITER_NATIVE, visit, NULL);
    H5Fclose(f);
    /* A predictions.h5 copied away from its parts/ reads missing rows as fill values: say so. */
    sl_vds_warn_missing(path);
    return SL_EXIT_OK;
}

/* `--precision P`: loads rank 0's slice of the model as `run --precision P` does (family 0 mlp,
 * 1 bert, 2 decoder) on a one-thread CPU backend and lists what was uploaded. */
static int loaded_precision(const char *path, int family, int tp, const char *precision,
                            sl_error_t *err)
{
    sl_dtype_t dt = !strcmp(precision, "int8") || !strcmp(precision, "w8a8") ? SL_WEIGHTS_INT8
                    : strcmp(precision, "auto") ? (sl_dtype_t)sl_dtype_parse(precision)
                    : family == 2               ? SL_WEIGHTS_AS_STORED
                                                : SL_F32;
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, 1, err);
    if (!be)
        return -1;
    sl_wlog_reset();
    int rc = -1;
    if (family == 0) {
        sl_mlp_t *m = sl_mlp_load(path, be, tp, 0, dt, err);
        if (m) {
            printf("\n--precision %s (rank 0 of --tp %d):\n", precision, tp);
            sl_wlog_print(stdout);
            sl_mlp_free(m);
            rc = 0;
        }
    } else if (family == 1) {
        sl_bert_t *m = sl_bert_load(path, be, tp, 0, dt, err);
        if (m) {
            printf("\n--precision %s (rank 0 of --tp %d):\n", precision, tp);
            sl_wlog_print(stdout);
            sl_bert_free(m);
            rc = 0;
        }
    } else {
        sl_llama_t *m = sl_llama_load(path, be, tp, 0, dt, err);
        if (m) {
            printf("\n--precision %s (rank 0 of --tp %d):\n", precision, tp);
            sl_wlog_print(stdout);
            sl_llama_free(m);
            rc = 0;
        }
    }
    if (rc == 0 && !strcmp(precision, "w8a8"))
        printf("w8a8: these weights; activations quantized with the static scales of the "
               "calibration file\n");
    sl_wlog_reset();
    sl_backend_free(be);
    return rc;
}

int sl_inspect_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"tp", required_argument, NULL, 't'},
                                             {"precision", required_argument, NULL, 'p'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    int tp = 1;
    const char *precision = NULL;
    optind = 1;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "ht:p:", longopts, NULL)) != -1;) {
        if (c == 'h') {
            usage(stdout);
            return SL_EXIT_OK;
        }
        if (c == 'p') {
            precision = optarg;
            if (strcmp(precision, "auto") && strcmp(precision, "f32") && strcmp(precision, "f16") &&
                strcmp(precision, "bf16") && strcmp(precision, "int8") &&
                strcmp(precision, "w8a8")) {
                fprintf(stderr,
                        "shardline: error: --precision '%s': expected auto, f32, f16, bf16, int8 "
                        "or w8a8\n",
                        optarg);
                return SL_EXIT_USAGE;
            }
            continue;
        }
        if (c == 't') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 1 << 20) {
                fprintf(stderr, "shardline: error: --tp '%s': expected a positive integer\n",
                        optarg);
                return SL_EXIT_USAGE;
            }
            tp = (int)v;
            continue;
        }
        fprintf(stderr, "shardline: error: unknown option '%s'\n", argv[optind - 1]);
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    if (optind != argc - 1) {
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    const char *path = argv[optind];
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "shardline: error: %s: no such file or directory\n", path);
        return SL_EXIT_INPUT;
    }
    sl_h5_quiet();
    if (sl_llama_detect(path)) { /* a decoder directory or GGUF file */
        sl_error_t err;
        int rc = S_ISDIR(st.st_mode) ? 0 : sl_inspect_gguf(path, stdout, &err);
        if (rc == 0)
            rc = sl_llama_describe(path, tp, stdout, &err);
        if (rc == 0 && precision)
            rc = loaded_precision(path, 2, tp, precision, &err);
        if (rc != 0) {
            fprintf(stderr, "shardline: error: %s\n", err.msg);
            return SL_EXIT_INPUT;
        }
        return SL_EXIT_OK;
    }
    if (S_ISDIR(st.st_mode)) {
        sl_error_t err;
        char mt[64];
        int rc = sl_task_model_type(path, mt, sizeof mt, &err);
        if (rc == 0 && !strcmp(mt, "bert"))
            rc = sl_inspect_bert(path, tp, stdout, &err);
        else if (rc == 0 && !strcmp(mt, "mlp"))
            rc = sl_inspect_model(path, tp, stdout, &err);
        else if (rc == 0)
            rc = sl_errorf(&err,
                           "%s/config.json: model_type '%s' is not supported (mlp, bert, "
                           "llama, mistral, qwen2)",
                           path, mt);
        if (rc == 0 && precision)
            rc = loaded_precision(path, !strcmp(mt, "bert"), tp, precision, &err);
        if (rc != 0) {
            fprintf(stderr, "shardline: error: %s\n", err.msg);
            return SL_EXIT_INPUT;
        }
        return SL_EXIT_OK;
    }
    if (sl_inspect_is_gguf(path)) {
        sl_error_t err;
        if (sl_inspect_gguf(path, stdout, &err) != 0) {
            fprintf(stderr, "shardline: error: %s\n", err.msg);
            return SL_EXIT_INPUT;
        }
        return SL_EXIT_OK;
    }
    return inspect_h5(path);
}
