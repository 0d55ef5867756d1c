/*
 * mlp.h — the `mlp` model family: a stack of linear layers with one activation between them.
 *
 * Files (a directory): config.json
 *   {"model_type": "mlp", "dims": [d0, ..., dn], "activation": "relu|gelu|silu|tanh|sigmoid",
 *    "final_activation": null | "relu|gelu|silu|tanh|sigmoid" | "softmax"}
 * and model.safetensors with layers.{i}.weight [d(i+1), d(i)] and layers.{i}.bias [d(i+1)]
 * (F32, F16 or BF16; PyTorch nn.Linear layout), optional input_mean / input_std [d0].
 *
 * Tensor parallelism (Megatron): layers are taken in pairs. The first of a pair is
 * column-parallel (each TP rank holds d(i+1)/T output rows of the weight and computes its slice
 * of the activations, no communication; the activation is elementwise so it applies to the
 * slice), the second is row-parallel (each rank holds the matching d(i+1)/T input columns,
 * computes a partial product, one all-reduce sums them, then the bias is added once). With an
 * odd layer count the last layer is replicated (every rank holds it whole). So the split needs
 * d(i+1) divisible by T for the first layer of each pair only.
 */
#ifndef SL_MLP_H
#define SL_MLP_H

#include <stdint.h>

#include "common/sl_error.h"
#include "kernels/backend.h"
#include "models/formats/safetensors.h"
#include "partition/comm.h"

#define SL_ACT_SOFTMAX 100 /* final_activation only */

typedef struct {
    int n_layers;         /* = number of dims - 1 */
    int64_t *dims;        /* [n_layers + 1] */
    int activation;       /* sl_act_t */
    int final_activation; /* sl_act_t, or SL_ACT_SOFTMAX */
} sl_mlp_config_t;

/* Reads and validates the config.json at config_path; errors name the file and key. */
int sl_mlp_config_load(const char *config_path, sl_mlp_config_t *cfg, sl_error_t *err);
/* Same, from a JSON string (`what` names the source in messages). */
int sl_mlp_config_parse(sl_mlp_config_t *cfg, const char *json, const char *what, sl_error_t *err);
void sl_mlp_config_free(sl_mlp_config_t *cfg);

typedef enum { SL_SPLIT_COLUMN, SL_SPLIT_ROW, SL_SPLIT_NONE } sl_split_t;
/* How layer i is split with tp_size ranks (see above). */
sl_split_t sl_mlp_layer_split(int layer, int n_layers, int tp_size);

/* Checks the opened st against cfg: every layers.{i}.weight [d(i+1), d(i)] and
 * layers.{i}.bias [d(i+1)] present with a float dtype (F32, F16, BF16), input_mean/input_std
 * [d0] if present, and that each column-parallel output dim divides by tp_size. Messages name
 * st->path and the tensor, or `dir` and the layer. Shared by sl_mlp_load and inspection. */
int sl_mlp_check(const char *dir, const sl_mlp_config_t *cfg, const sl_safetensors_t *st,
                 int tp_size, sl_error_t *err);

typedef struct sl_mlp sl_mlp_t;

/* Loads this TP rank's slice of the weights onto the backend, in `dtype` (f32, f16 or bf16;
 * weights are converted). Checks every tensor's presence, dtype and shape against the config,
 * and that split dimensions divide by tp_size (naming the layer). */
sl_mlp_t *sl_mlp_load(const char *dir, sl_backend_t *be, int tp_size, int tp_rank, sl_dtype_t dtype,
                      sl_error_t *err);
/* The same, from a config parsed already (sl_mlp_config_load of DIR/config.json), which is
 * copied: the config file is not read again. */
sl_mlp_t *sl_mlp_load_with(const char *dir, const sl_mlp_config_t *cfg, sl_backend_t *be,
                           int tp_size, int tp_rank, sl_dtype_t dtype, sl_error_t *err);
void sl_mlp_free(sl_mlp_t *m);
const sl_mlp_config_t *sl_mlp_config(const sl_mlp_t *m);

/* x: f32 [rows, d0] on the backend (standardised in place if the model has input_mean/std);
 * y: f32 [rows, dn]. All ranks of the TP group call this together with the same x. */
void sl_mlp_forward(sl_mlp_t *m, sl_comm_t *comm, sl_tensor_t *x, sl_tensor_t *y);

#endif
