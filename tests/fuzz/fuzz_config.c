/*
 * fuzz_config.c — libFuzzer target for the model configuration loaders: the first byte picks
 * the file, the rest is its content.
 *   0: an mlp config.json (sl_mlp_config_parse, models/mlp.c)
 *   1: a BERT config.json (sl_bert_config_load, models/bert.c)
 *   2: a BERT modules.json beside a valid config.json
 *   3: a BERT 1_Pooling/config.json beside valid config.json and modules.json
 *   4: a BERT sentence_bert_config.json and, the same bytes, tokenizer_config.json
 *   5: a LLaMA-family config.json (sl_llama_config_load, models/llama.c)
 * Every refusal must name the file.
 */
#include "fuzz_common.h"
#include "models/bert.h"
#include "models/llama.h"
#include "models/mlp.h"

static const char bert_config[] =
    "{\"architectures\": [\"BertModel\"], \"model_type\": \"bert\", \"hidden_size\": 32,"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": 64,"
    " \"hidden_act\": \"gelu\", \"max_position_embeddings\": 64, \"vocab_size\": 100,"
    " \"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12}";
static const char modules[] =
    "[{\"idx\": 0, \"name\": \"0\", \"path\": \"\", \"type\": "
    "\"sentence_transformers.models.Transformer\"}, {\"idx\": 1, \"name\": \"1\", \"path\": "
    "\"1_Pooling\", \"type\": \"sentence_transformers.models.Pooling\"}]";

static void put(const char *rel, const char *s)
{
    char path[256];
    sl_fuzz_write(rel, (const uint8_t *)s, strlen(s), path, sizeof path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int which = data[0] % 6;
    data++;
    size--;
    const char *dir = sl_fuzz_tmpdir();
    char path[256];
    sl_error_t err;
    err.msg[0] = '\0';
    sl_fuzz_remove("config.json");
    sl_fuzz_remove("modules.json");
    sl_fuzz_remove("1_Pooling/config.json");
    sl_fuzz_remove("sentence_bert_config.json");
    sl_fuzz_remove("tokenizer_config.json");
    int rc;
    const char *expect = "config.json";
    if (which == 0) {
        char *text = malloc(size + 1);
        memcpy(text, data, size);
        text[size] = '\0';
        sl_mlp_config_t cfg;
        memset(&cfg, 0, sizeof cfg);
        rc = sl_mlp_config_parse(&cfg, text, "config.json", &err);
        if (rc == 0)
            sl_mlp_config_free(&cfg);
        free(text);
    } else if (which == 5) {
        sl_fuzz_write("config.json", data, size, path, sizeof path);
        sl_llama_config_t cfg;
        rc = sl_llama_config_load(dir, &cfg, &err);
    } else {
        if (which == 1) {
            sl_fuzz_write("config.json", data, size, path, sizeof path);
        } else {
            put("config.json", bert_config);
            if (which == 2) {
                sl_fuzz_write("modules.json", data, size, path, sizeof path);
                expect = "modules.json";
            } else if (which == 3) {
                put("modules.json", modules);
                sl_fuzz_write("1_Pooling/config.json", data, size, path, sizeof path);
            } else {
                sl_fuzz_write("sentence_bert_config.json", data, size, path, sizeof path);
                sl_fuzz_write("tokenizer_config.json", data, size, path, sizeof path);
                expect = "_config.json";
            }
        }
        sl_bert_config_t cfg;
        memset(&cfg, 0, sizeof cfg);
        rc = sl_bert_config_load(dir, &cfg, &err);
        if (rc == 0)
            sl_bert_config_free(&cfg);
    }
    if (rc != 0 && !strstr(err.msg, expect))
        abort(); /* every refusal names the file */
    return 0;
}
