/* test_config: config.json of the fixtures (every field against an independent jansson read
 * of the same file), a transformers-4 style Qwen2.5 config, Qwen3-0.6B's published config with
 * its generation_config, malformed configs (each error names the file and the field), and
 * to_json / save -> parse / load round trips. */
#include <jansson.h>
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "io/config.h"

static char tmpdir[256];

static json_int_t jint(json_t *o, const char *k, json_int_t dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* fixture config: each parsed field equals the file's own value (read here with jansson) */
static void check_fixture(const char *name, aha_arch arch)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/%s", th_fixtures(), name);
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *j = json_load_file(path, 0, NULL);
    CHECK(j != NULL, "%s readable", path);
    if (!j) return;
    aha_model_config c;
    aha_err err = {0};
    CHECK(aha_config_load(dir, &c, &err) == AHA_OK, "load %s: %s", name, err.msg);
    CHECK(c.arch == arch, "%s arch", name);
    CHECK(strcmp(c.model_type, json_string_value(json_object_get(j, "model_type"))) == 0, "model_type");
    CHECK(strcmp(c.architecture, json_string_value(json_array_get(json_object_get(j, "architectures"), 0))) == 0,
          "architecture %s", c.architecture);
    CHECK(c.vocab_size == jint(j, "vocab_size", -1), "vocab_size %d", c.vocab_size);
    CHECK(c.hidden_size == jint(j, "hidden_size", -1), "hidden_size %d", c.hidden_size);
    CHECK(c.intermediate_size == jint(j, "intermediate_size", -1), "intermediate_size");
    CHECK(c.num_layers == jint(j, "num_hidden_layers", -1), "num_layers");
    CHECK(c.num_heads == jint(j, "num_attention_heads", -1), "num_heads");
    CHECK(c.num_kv_heads == jint(j, "num_key_value_heads", -1), "num_kv_heads");
    CHECK(c.head_dim == jint(j, "head_dim", c.hidden_size / c.num_heads), "head_dim %d", c.head_dim);
    CHECK(c.max_position_embeddings == jint(j, "max_position_embeddings", -1), "max_pos");
    double theta = json_number_value(json_object_get(json_object_get(j, "rope_parameters"), "rope_theta"));
    CHECK(theta > 0 && c.rope_theta == theta, "rope_theta %g vs %g", c.rope_theta, theta);
    CHECK(c.rms_norm_eps == json_number_value(json_object_get(j, "rms_norm_eps")), "rms_norm_eps %g", c.rms_norm_eps);
    CHECK(c.initializer_range == (float)json_number_value(json_object_get(j, "initializer_range")), "init range");
    CHECK(c.tie_word_embeddings == json_is_true(json_object_get(j, "tie_word_embeddings")), "tie");
    bool ab = json_is_true(json_object_get(j, "attention_bias"));
    if (arch == AHA_ARCH_QWEN2) {
        CHECK(c.attention_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm, "qwen2 biases: qkv only");
    } else if (arch == AHA_ARCH_QWEN3) {
        CHECK(c.attention_bias == ab && c.o_bias == ab && !c.mlp_bias && c.qk_norm, "qwen3: q/k norm");
    } else {
        CHECK(c.attention_bias == ab && c.o_bias == ab, "llama attention_bias");
        CHECK(c.mlp_bias == json_is_true(json_object_get(j, "mlp_bias")) && !c.qk_norm, "llama mlp_bias");
    }
    CHECK(strcmp(c.dtype, json_string_value(json_object_get(j, "dtype"))) == 0, "dtype %s", c.dtype);
    /* ids: generation_config.json wins, then config.json, null -> -1 / none */
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    json_t *g = json_load_file(path, 0, NULL);
    json_int_t bos = jint(g, "bos_token_id", jint(j, "bos_token_id", -1));
    json_int_t eos = jint(g, "eos_token_id", jint(j, "eos_token_id", -1));
    CHECK(c.bos_token_id == bos, "bos %d vs %lld", c.bos_token_id, (long long)bos);
    CHECK(eos < 0 ? c.n_eos == 0 : (c.n_eos == 1 && c.eos_token_ids[0] == eos), "eos");
    CHECK(eos < 0 || (aha_config_is_eos(&c, (int)eos) && !aha_config_is_eos(&c, (int)eos + 1)), "is_eos");
    CHECK(c.pad_token_id == -1, "pad null");
    json_decref(g);
    json_decref(j);
}

static bool same_config(const aha_model_config *a, const aha_model_config *b)
{
    bool eq = a->arch == b->arch && strcmp(a->model_type, b->model_type) == 0 &&
              strcmp(a->architecture, b->architecture) == 0 && a->vocab_size == b->vocab_size &&
              a->hidden_size == b->hidden_size && a->intermediate_size == b->intermediate_size &&
              a->num_layers == b->num_layers && a->num_heads == b->num_heads && a->num_kv_heads == b->num_kv_heads &&
              a->head_dim == b->head_dim && a->max_position_embeddings == b->max_position_embeddings &&
              a->rope_theta == b->rope_theta && a->rms_norm_eps == b->rms_norm_eps &&
              a->tie_word_embeddings == b->tie_word_embeddings && a->attention_bias == b->attention_bias &&
              a->o_bias == b->o_bias && a->mlp_bias == b->mlp_bias && a->qk_norm == b->qk_norm &&
              a->bos_token_id == b->bos_token_id && a->pad_token_id == b->pad_token_id && a->n_eos == b->n_eos &&
              a->initializer_range == b->initializer_range && strcmp(a->dtype, b->dtype) == 0;
    for (int i = 0; eq && i < a->n_eos; i++) eq = a->eos_token_ids[i] == b->eos_token_ids[i];
    return eq;
}

/* to_json -> parse gives the same config; save -> load too; the JSON carries both rope places */
static void check_roundtrip(const aha_model_config *c, const char *what)
{
    aha_err err = {0};
    char *s = aha_config_to_json(c);
    CHECK(s != NULL, "%s to_json", what);
    if (!s) return;
    aha_model_config d;
    CHECK(aha_config_parse(s, strlen(s), what, &d, &err) == AHA_OK, "%s reparse: %s", what, err.msg);
    CHECK(same_config(c, &d), "%s: to_json -> parse equal", what);
    CHECK(!strstr(s, "99999") && !strstr(s, "00001"), "%s: reals printed short", what);
    json_t *j = json_loads(s, 0, NULL);
    CHECK(json_number_value(json_object_get(j, "rope_theta")) == c->rope_theta, "%s top-level rope_theta", what);
    CHECK(json_number_value(json_object_get(json_object_get(j, "rope_parameters"), "rope_theta")) == c->rope_theta,
          "%s rope_parameters.rope_theta", what);
    CHECK(json_is_string(json_array_get(json_object_get(j, "architectures"), 0)), "%s architectures", what);
    CHECK(json_is_string(json_object_get(j, "torch_dtype")) && json_is_string(json_object_get(j, "dtype")), "%s dtype", what);
    json_decref(j);
    free(s);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, what);
    CHECK(aha_config_save(c, dir, &err) == AHA_OK, "%s save: %s", what, err.msg);
    aha_model_config e;
    CHECK(aha_config_load(dir, &e, &err) == AHA_OK, "%s load saved: %s", what, err.msg);
    CHECK(same_config(c, &e), "%s: save -> load equal", what);
}

static const char *qwen3_06b =
    "{\n"
    "  \"architectures\": [\"Qwen3ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 151643,\n"
    "  \"eos_token_id\": 151645,\n"
    "  \"head_dim\": 128,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 1024,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 3072,\n"
    "  \"max_position_embeddings\": 40960,\n"
    "  \"max_window_layers\": 28,\n"
    "  \"model_type\": \"qwen3\",\n"
    "  \"num_attention_heads\": 16,\n"
    "  \"num_hidden_layers\": 28,\n"
    "  \"num_key_value_heads\": 8,\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": null,\n"
    "  \"rope_theta\": 1000000,\n"
    "  \"sliding_window\": null,\n"
    "  \"tie_word_embeddings\": true,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.51.0\",\n"
    "  \"use_cache\": true,\n"
    "  \"use_sliding_window\": false,\n"
    "  \"vocab_size\": 151936\n"
    "}\n";

static const char *qwen3_06b_generation =
    "{\"bos_token_id\": 151643, \"do_sample\": true, \"eos_token_id\": [151645, 151643],\n"
    " \"pad_token_id\": 151643, \"temperature\": 0.6, \"top_k\": 20, \"top_p\": 0.95,\n"
    " \"transformers_version\": \"4.51.0\"}\n";

/* Qwen2.5-0.5B-Instruct's shape as transformers 4 wrote it: top-level rope_theta, a sliding
 * window size that is not in use */
static const char *qwen25_t4 =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 151643,"
    " \"eos_token_id\": 151645, \"hidden_act\": \"silu\", \"hidden_size\": 896, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 4864, \"max_position_embeddings\": 32768, \"max_window_layers\": 21,"
    " \"model_type\": \"qwen2\", \"num_attention_heads\": 14, \"num_hidden_layers\": 24,"
    " \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0,"
    " \"sliding_window\": 32768, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.43.1\", \"use_cache\": true, \"use_sliding_window\": false,"
    " \"vocab_size\": 151936}";

static void check_published(void)
{
    aha_err err = {0};
    aha_model_config c;
    CHECK(aha_config_parse(qwen3_06b, strlen(qwen3_06b), "Qwen3-0.6B/config.json", &c, &err) == AHA_OK,
          "qwen3: %s", err.msg);
    CHECK(c.arch == AHA_ARCH_QWEN3 && strcmp(c.model_type, "qwen3") == 0, "qwen3 arch");
    CHECK(c.hidden_size == 1024 && c.num_layers == 28 && c.num_heads == 16 && c.num_kv_heads == 8, "qwen3 sizes");
    CHECK(c.head_dim == 128 && c.intermediate_size == 3072 && c.vocab_size == 151936, "qwen3 dims");
    CHECK(c.rope_theta == 1000000.0 && c.rms_norm_eps == 1e-6 && c.max_position_embeddings == 40960, "qwen3 rope/eps");
    CHECK(c.tie_word_embeddings && c.qk_norm && !c.attention_bias && !c.o_bias && !c.mlp_bias, "qwen3 flags");
    CHECK(c.bos_token_id == 151643 && c.n_eos == 1 && c.eos_token_ids[0] == 151645, "qwen3 ids");
    CHECK(strcmp(c.dtype, "bfloat16") == 0, "qwen3 dtype %s", c.dtype);
    CHECK(aha_config_parse_generation(qwen3_06b_generation, strlen(qwen3_06b_generation), "gen", &c, &err) == AHA_OK,
          "qwen3 generation: %s", err.msg);
    CHECK(c.n_eos == 2 && c.eos_token_ids[0] == 151645 && c.eos_token_ids[1] == 151643, "generation eos list wins");
    CHECK(c.pad_token_id == 151643 && aha_config_is_eos(&c, 151643), "generation pad");
    check_roundtrip(&c, "qwen3");

    /* the same through files: load() applies generation_config.json */
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/qwen3-files", tmpdir);
    aha_mkdirs(dir, NULL);
    snprintf(p, sizeof p, "%s/config.json", dir);
    aha_write_file_atomic(p, qwen3_06b, strlen(qwen3_06b), NULL);
    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    aha_write_file_atomic(p, qwen3_06b_generation, strlen(qwen3_06b_generation), NULL);
    aha_model_config d;
    CHECK(aha_config_load(dir, &d, &err) == AHA_OK && same_config(&c, &d), "qwen3 load from files: %s", err.msg);
    /* a broken generation_config.json is an error naming it */
    aha_write_file_atomic(p, "{\"eos_token_id\": \"x\"}", 21, NULL);
    CHECK(aha_config_load(dir, &d, &err) == AHA_EFORMAT && strstr(err.msg, "generation_config.json") &&
              strstr(err.msg, "eos_token_id"),
          "bad generation config: %s", err.msg);

    CHECK(aha_config_parse(qwen25_t4, strlen(qwen25_t4), "qwen2.5/config.json", &c, &err) == AHA_OK, "qwen2.5: %s",
          err.msg);
    CHECK(c.arch == AHA_ARCH_QWEN2 && c.hidden_size == 896 && c.num_heads == 14 && c.head_dim == 64, "qwen2.5 dims");
    CHECK(c.num_kv_heads == 2 && c.num_layers == 24 && c.intermediate_size == 4864, "qwen2.5 sizes");
    CHECK(c.rope_theta == 1000000.0 && c.tie_word_embeddings && c.attention_bias && !c.o_bias, "qwen2.5 rope/tie/bias");
    check_roundtrip(&c, "qwen2.5");

    /* Llama defaults: untied unless said, biases from attention_bias / mlp_bias */
    const char *llama = "{\"model_type\": \"llama\", \"vocab_size\": 100, \"hidden_size\": 32, \"intermediate_size\": 64,"
                        " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"attention_bias\": true,"
                        " \"mlp_bias\": true, \"eos_token_id\": [5, 6, 7]}";
    CHECK(aha_config_parse(llama, strlen(llama), "llama.json", &c, &err) == AHA_OK, "llama: %s", err.msg);
    CHECK(!c.tie_word_embeddings && c.attention_bias && c.o_bias && c.mlp_bias && c.num_kv_heads == 4, "llama defaults");
    CHECK(c.rope_theta == 10000.0 && c.head_dim == 8 && c.n_eos == 3 && c.bos_token_id == -1, "llama derived");
    CHECK(strcmp(c.architecture, "LlamaForCausalLM") == 0, "llama architecture default");
    check_roundtrip(&c, "llama");
}

typedef struct {
    const char *json;
    aha_status want;
    const char *field;
} bad_case;

static void check_malformed(void)
{
    /* a valid base with one field replaced per case; "@" marks where the case's text goes */
    const char *base = "{\"model_type\": \"qwen2\", \"vocab_size\": 64, \"hidden_size\": 32,"
                       " \"intermediate_size\": 48, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                       " \"num_key_value_heads\": 2 @}";
    bad_case cases[] = {
        {", \"hidden_size\": \"32\"", AHA_EFORMAT, "hidden_size"},
        {", \"vocab_size\": 0", AHA_EINVAL, "vocab_size"},
        {", \"intermediate_size\": -4", AHA_EINVAL, "intermediate_size"},
        {", \"num_hidden_layers\": 2.5", AHA_EFORMAT, "num_hidden_layers"},
        {", \"num_attention_heads\": 5, \"num_key_value_heads\": 5", AHA_EINVAL, "num_attention_heads"},
        {", \"num_key_value_heads\": 3", AHA_EINVAL, "num_key_value_heads"},
        {", \"head_dim\": 0", AHA_EINVAL, "head_dim"},
        {", \"rope_theta\": -1", AHA_EINVAL, "rope_theta"},
        {", \"rope_theta\": \"big\"", AHA_EFORMAT, "rope_theta"},
        {", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}", AHA_EUNSUPPORTED, "rope_scaling"},
        {", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", AHA_EUNSUPPORTED, "rope_scaling"},
        {", \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 1.0}", AHA_EUNSUPPORTED, "rope_parameters"},
        {", \"rope_parameters\": [1]", AHA_EFORMAT, "rope_parameters"},
        {", \"rope_theta\": 10.0, \"rope_parameters\": {\"rope_theta\": 20.0}", AHA_EINVAL, "rope_theta"},
        {", \"use_sliding_window\": true", AHA_EUNSUPPORTED, "use_sliding_window"},
        {", \"layer_types\": [\"full_attention\", \"sliding_attention\"]", AHA_EUNSUPPORTED, "layer_types"},
        {", \"hidden_act\": \"gelu\"", AHA_EUNSUPPORTED, "hidden_act"},
        {", \"tie_word_embeddings\": \"yes\"", AHA_EFORMAT, "tie_word_embeddings"},
        {", \"eos_token_id\": \"</s>\"", AHA_EFORMAT, "eos_token_id"},
        {", \"eos_token_id\": [1, \"x\"]", AHA_EFORMAT, "eos_token_id"},
        {", \"eos_token_id\": [1,2,3,4,5,6,7,8,9]", AHA_EINVAL, "eos_token_id"},
        {", \"bos_token_id\": -3", AHA_EINVAL, "bos_token_id"},
        {", \"rms_norm_eps\": \"1e-6\"", AHA_EFORMAT, "rms_norm_eps"},
        {", \"rms_norm_eps\": 0", AHA_EINVAL, "rms_norm_eps"},
        {", \"architectures\": \"Qwen2ForCausalLM\"", AHA_EFORMAT, "architectures"},
        {", \"quantization_config\": {\"quant_method\": \"gptq\"}", AHA_EUNSUPPORTED, "quantization_config"},
        {", \"max_position_embeddings\": 0", AHA_EINVAL, "max_position_embeddings"},
        {", \"hidden_size\": 99999999999", AHA_EINVAL, "hidden_size"},
        {", \"vocab_size\": 64", AHA_EFORMAT, "duplicate"},
    };
    char buf[2048];
    for (size_t i = 0; i < AHA_ARRAY_LEN(cases); i++) {
        const char *at = strchr(base, '@');
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - base), base, cases[i].json, at + 1);
        /* later keys win in jansson only without duplicate rejection; place replacements by
         * removing the base's key when the case sets it again */
        const char *keys[] = {"hidden_size", "vocab_size", "intermediate_size", "num_hidden_layers",
                              "num_attention_heads", "num_key_value_heads"};
        if (strcmp(cases[i].field, "duplicate") != 0) {
            for (size_t k = 0; k < AHA_ARRAY_LEN(keys); k++) {
                char pat[64];
                snprintf(pat, sizeof pat, "\"%s\":", keys[k]);
                char *first = strstr(buf, pat), *second = first ? strstr(first + 1, pat) : NULL;
                if (!second) continue;
                char *end = strchr(first, ','); /* drop the base's '"key": N,' */
                memmove(first, end + 2, strlen(end + 2) + 1);
            }
        }
        aha_model_config c;
        aha_err err = {0};
        aha_status st = aha_config_parse(buf, strlen(buf), "bad/config.json", &c, &err);
        CHECK(st == cases[i].want, "case %zu (%s): got %s want %s: %s", i, cases[i].json, aha_status_name(st),
              aha_status_name(cases[i].want), err.msg);
        CHECK(strstr(err.msg, "bad/config.json") && strstr(err.msg, cases[i].field), "case %zu message '%s' names %s",
              i, err.msg, cases[i].field);
    }
    const char *whole[][2] = {
        {"", "JSON"},
        {"{\"model_type\": ", "JSON"},
        {"[1, 2]", "object"},
        {"{\"hidden_size\": 4}", "model_type"},
        {"{\"model_type\": \"mistral\"}", "model_type"},
        {"{\"model_type\": 3}", "model_type"},
        {"{\"model_type\": \"qwen3\", \"vocab_size\": 10}", "hidden_size"},
        {"{\"model_type\": \"qwen2\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8,"
         " \"num_hidden_layers\": 1}",
         "num_attention_heads"},
    };
    for (size_t i = 0; i < AHA_ARRAY_LEN(whole); i++) {
        aha_model_config c;
        aha_err err = {0};
        aha_status st = aha_config_parse(whole[i][0], strlen(whole[i][0]), "bad/config.json", &c, &err);
        CHECK(st != AHA_OK && strstr(err.msg, "bad/config.json") && strstr(err.msg, whole[i][1]),
              "whole case %zu: %s '%s' should name %s", i, aha_status_name(st), err.msg, whole[i][1]);
    }
    /* a missing directory names the file */
    aha_model_config c;
    aha_err err = {0};
    CHECK(aha_config_load("/nonexistent/aha", &c, &err) == AHA_ENOTFOUND && strstr(err.msg, "config.json"),
          "missing config: %s", err.msg);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aha_cfg_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    check_fixture("tiny-qwen2", AHA_ARCH_QWEN2);
    check_fixture("tiny-llama", AHA_ARCH_LLAMA);
    check_fixture("tiny-qwen3", AHA_ARCH_QWEN3);
    aha_model_config c;
    aha_err err = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", th_fixtures());
    if (aha_config_load(dir, &c, &err) == AHA_OK) check_roundtrip(&c, "tiny-qwen2");
    snprintf(dir, sizeof dir, "%s/tiny-llama", th_fixtures());
    if (aha_config_load(dir, &c, &err) == AHA_OK) check_roundtrip(&c, "tiny-llama");
    check_published();
    check_malformed();
    aha_remove_tree(tmpdir, NULL);
    return th_done("config");
}
