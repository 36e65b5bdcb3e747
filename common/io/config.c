/* config.c: config.json / generation_config.json of Qwen2, Qwen2.5, Qwen3 (dense) and Llama.
 *
 * Parsing follows what transformers does with the same file: defaults are those of the
 * model's Config class, head_dim comes from the file when given (Qwen3 defaults to 128),
 * rope_theta from rope_parameters (transformers 5) or the top level (transformers 4).
 * Anything that would change the maths and that the decoder does not implement (rope
 * scaling, sliding-window attention, activations other than SiLU, quantisation) is refused
 * with AHA_EUNSUPPORTED naming the field; a value of the wrong JSON type is AHA_EFORMAT and
 * an out-of-range value AHA_EINVAL, each naming the field and the file. */
#include "config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"

#define CONFIG_MAX_BYTES (16u << 20)
/* sizes beyond this are not a real model and would overflow products of two sizes */
#define CONFIG_MAX_SIZE (1 << 24)

typedef struct {
    const char *path;
    json_t *root;
    aha_err *err;
} cfg_ctx;

static bool present(const json_t *v)
{
    return v && !json_is_null(v);
}

/* An integer field. required: absent/null is an error; else *out keeps its default. */
static aha_status get_int(cfg_ctx *c, const json_t *obj, const char *field, bool required, int lo, int hi,
                          int *out)
{
    json_t *v = json_object_get(obj, field);
    if (!present(v)) {
        if (required) return aha_errf(c->err, AHA_EFORMAT, "%s: required field '%s' is missing", c->path, field);
        return AHA_OK;
    }
    if (!json_is_integer(v))
        return aha_errf(c->err, AHA_EFORMAT, "%s: field '%s' must be an integer", c->path, field);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return aha_errf(c->err, AHA_EINVAL, "%s: field '%s' = %lld is out of range [%d, %d]", c->path, field,
                        (long long)x, lo, hi);
    *out = (int)x;
    return AHA_OK;
}

static aha_status get_num(cfg_ctx *c, const json_t *obj, const char *field, const char *shown, double *out,
                          bool *found)
{
    json_t *v = json_object_get(obj, field);
    if (found) *found = false;
    if (!present(v)) return AHA_OK;
    if (!json_is_number(v))
        return aha_errf(c->err, AHA_EFORMAT, "%s: field '%s' must be a number", c->path, shown);
    double x = json_number_value(v);
    if (!isfinite(x) || x <= 0)
        return aha_errf(c->err, AHA_EINVAL, "%s: field '%s' = %g must be positive", c->path, shown, x);
    *out = x;
    if (found) *found = true;
    return AHA_OK;
}

static aha_status get_bool(cfg_ctx *c, const json_t *obj, const char *field, bool *out)
{
    json_t *v = json_object_get(obj, field);
    if (!present(v)) return AHA_OK;
    if (!json_is_boolean(v))
        return aha_errf(c->err, AHA_EFORMAT, "%s: field '%s' must be true or false", c->path, field);
    *out = json_is_true(v);
    return AHA_OK;
}

/* Token id field: integer >= 0 or null (-1). Absent leaves *out alone. */
static aha_status get_token(cfg_ctx *c, const json_t *obj, const char *field, int *out)
{
    json_t *v = json_object_get(obj, field);
    if (!v) return AHA_OK;
    if (json_is_null(v)) {
        *out = -1;
        return AHA_OK;
    }
    return get_int(c, obj, field, false, 0, INT_MAX, out);
}

/* eos_token_id: an integer, a list of integers, or null. Absent leaves cfg alone. */
static aha_status get_eos(cfg_ctx *c, const json_t *obj, aha_model_config *cfg)
{
    json_t *v = json_object_get(obj, "eos_token_id");
    if (!v) return AHA_OK;
    if (json_is_null(v)) {
        cfg->n_eos = 0;
        return AHA_OK;
    }
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > INT_MAX)
            return aha_errf(c->err, AHA_EINVAL, "%s: field 'eos_token_id' = %lld is out of range", c->path,
                            (long long)x);
        cfg->eos_token_ids[0] = (int)x;
        cfg->n_eos = 1;
        return AHA_OK;
    }
    if (!json_is_array(v))
        return aha_errf(c->err, AHA_EFORMAT, "%s: field 'eos_token_id' must be an integer or a list of integers",
                        c->path);
    size_t n = json_array_size(v);
    if (n > AHA_MAX_EOS)
        return aha_errf(c->err, AHA_EINVAL, "%s: field 'eos_token_id' lists %zu ids, at most %d are supported",
                        c->path, n, AHA_MAX_EOS);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT_MAX)
            return aha_errf(c->err, AHA_EFORMAT, "%s: field 'eos_token_id[%zu]' must be a non-negative integer",
                            c->path, i);
        cfg->eos_token_ids[i] = (int)json_integer_value(e);
    }
    cfg->n_eos = (int)n;
    return AHA_OK;
}

/* rope_type of a rope_scaling / rope_parameters object: only the plain rotation is built */
static aha_status check_rope_type(cfg_ctx *c, const json_t *obj, const char *field)
{
    const char *keys[] = {"rope_type", "type"};
    for (size_t i = 0; i < 2; i++) {
        json_t *t = json_object_get(obj, keys[i]);
        if (!present(t)) continue;
        if (!json_is_string(t))
            return aha_errf(c->err, AHA_EFORMAT, "%s: field '%s.%s' must be a string", c->path, field, keys[i]);
        if (strcmp(json_string_value(t), "default") != 0)
            return aha_errf(c->err, AHA_EUNSUPPORTED, "%s: field '%s.%s' = '%.40s' is not supported (only \"default\")",
                            c->path, field, keys[i], json_string_value(t));
    }
    return AHA_OK;
}

static aha_status parse_root(cfg_ctx *c, aha_model_config *cfg)
{
    json_t *r = c->root;
    if (!json_is_object(r)) return aha_errf(c->err, AHA_EFORMAT, "%s: not a JSON object", c->path);
    json_t *mt = json_object_get(r, "model_type");
    if (!present(mt)) return aha_errf(c->err, AHA_EFORMAT, "%s: required field 'model_type' is missing", c->path);
    if (!json_is_string(mt)) return aha_errf(c->err, AHA_EFORMAT, "%s: field 'model_type' must be a string", c->path);
    const char *type = json_string_value(mt);
    const char *arch_default;
    if (strcmp(type, "qwen2") == 0) {
        cfg->arch = AHA_ARCH_QWEN2;
        arch_default = "Qwen2ForCausalLM";
        cfg->max_position_embeddings = 32768;
    } else if (strcmp(type, "qwen3") == 0) {
        cfg->arch = AHA_ARCH_QWEN3;
        arch_default = "Qwen3ForCausalLM";
        cfg->max_position_embeddings = 32768;
    } else if (strcmp(type, "llama") == 0) {
        cfg->arch = AHA_ARCH_LLAMA;
        arch_default = "LlamaForCausalLM";
        cfg->max_position_embeddings = 2048;
    } else {
        return aha_errf(c->err, AHA_EUNSUPPORTED,
                        "%s: field 'model_type' = '%.40s' is not supported (qwen2, qwen3, llama)", c->path, type);
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", type);
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch_default);
    json_t *archs = json_object_get(r, "architectures");
    if (present(archs)) {
        if (!json_is_array(archs) || json_array_size(archs) == 0 || !json_is_string(json_array_get(archs, 0)))
            return aha_errf(c->err, AHA_EFORMAT, "%s: field 'architectures' must be a list of strings", c->path);
        const char *a = json_string_value(json_array_get(archs, 0));
        if (strlen(a) >= sizeof cfg->architecture)
            return aha_errf(c->err, AHA_EINVAL, "%s: field 'architectures[0]' is too long", c->path);
        if (strstr(a, "ForCausalLM") == NULL)
            return aha_errf(c->err, AHA_EUNSUPPORTED, "%s: field 'architectures[0]' = '%s' is not a causal LM",
                            c->path, a);
        snprintf(cfg->architecture, sizeof cfg->architecture, "%s", a);
    }

    AHA_TRY(get_int(c, r, "vocab_size", true, 1, CONFIG_MAX_SIZE, &cfg->vocab_size));
    AHA_TRY(get_int(c, r, "hidden_size", true, 1, CONFIG_MAX_SIZE, &cfg->hidden_size));
    AHA_TRY(get_int(c, r, "intermediate_size", true, 1, CONFIG_MAX_SIZE, &cfg->intermediate_size));
    AHA_TRY(get_int(c, r, "num_hidden_layers", true, 1, 1 << 16, &cfg->num_layers));
    AHA_TRY(get_int(c, r, "num_attention_heads", true, 1, 1 << 16, &cfg->num_heads));
    cfg->num_kv_heads = cfg->num_heads;
    AHA_TRY(get_int(c, r, "num_key_value_heads", false, 1, 1 << 16, &cfg->num_kv_heads));
    AHA_TRY(get_int(c, r, "max_position_embeddings", false, 1, INT_MAX, &cfg->max_position_embeddings));

    cfg->head_dim = 0;
    AHA_TRY(get_int(c, r, "head_dim", false, 1, 1 << 16, &cfg->head_dim));
    if (cfg->head_dim == 0) {
        if (cfg->arch == AHA_ARCH_QWEN3) {
            cfg->head_dim = 128; /* Qwen3Config's default */
        } else {
            if (cfg->hidden_size % cfg->num_heads != 0)
                return aha_errf(c->err, AHA_EINVAL,
                                "%s: field 'num_attention_heads' = %d does not divide hidden_size = %d (and no head_dim is given)",
                                c->path, cfg->num_heads, cfg->hidden_size);
            cfg->head_dim = cfg->hidden_size / cfg->num_heads;
            /* the same bound as an explicit head_dim (to_json writes it out) */
            if (cfg->head_dim > 1 << 16)
                return aha_errf(c->err, AHA_EINVAL,
                                "%s: hidden_size / num_attention_heads = %d is out of range [1, 65536] for head_dim",
                                c->path, cfg->head_dim);
        }
    }
    if (cfg->num_heads % cfg->num_kv_heads != 0)
        return aha_errf(c->err, AHA_EINVAL, "%s: field 'num_key_value_heads' = %d does not divide num_attention_heads = %d",
                        c->path, cfg->num_kv_heads, cfg->num_heads);

    /* rope */
    double theta_top = 0, theta_par = 0;
    bool has_top = false, has_par = false;
    AHA_TRY(get_num(c, r, "rope_theta", "rope_theta", &theta_top, &has_top));
    json_t *rp = json_object_get(r, "rope_parameters");
    if (present(rp)) {
        if (!json_is_object(rp))
            return aha_errf(c->err, AHA_EFORMAT, "%s: field 'rope_parameters' must be an object", c->path);
        AHA_TRY(check_rope_type(c, rp, "rope_parameters"));
        AHA_TRY(get_num(c, rp, "rope_theta", "rope_parameters.rope_theta", &theta_par, &has_par));
    }
    json_t *rs = json_object_get(r, "rope_scaling");
    if (present(rs)) {
        if (!json_is_object(rs))
            return aha_errf(c->err, AHA_EFORMAT, "%s: field 'rope_scaling' must be an object or null", c->path);
        AHA_TRY(check_rope_type(c, rs, "rope_scaling"));
        if (!present(json_object_get(rs, "rope_type")) && !present(json_object_get(rs, "type")))
            return aha_errf(c->err, AHA_EUNSUPPORTED, "%s: field 'rope_scaling' without a rope_type is not supported",
                            c->path);
    }
    if (has_top && has_par && theta_top != theta_par)
        return aha_errf(c->err, AHA_EINVAL, "%s: field 'rope_theta' = %g disagrees with rope_parameters.rope_theta = %g",
                        c->path, theta_top, theta_par);
    cfg->rope_theta = has_par ? theta_par : has_top ? theta_top : 10000.0;

    cfg->rms_norm_eps = 1e-6;
    AHA_TRY(get_num(c, r, "rms_norm_eps", "rms_norm_eps", &cfg->rms_norm_eps, NULL));
    double ir = 0.02;
    AHA_TRY(get_num(c, r, "initializer_range", "initializer_range", &ir, NULL));
    cfg->initializer_range = (float)ir;

    json_t *act = json_object_get(r, "hidden_act");
    if (present(act)) {
        if (!json_is_string(act))
            return aha_errf(c->err, AHA_EFORMAT, "%s: field 'hidden_act' must be a string", c->path);
        if (strcmp(json_string_value(act), "silu") != 0)
            return aha_errf(c->err, AHA_EUNSUPPORTED, "%s: field 'hidden_act' = '%.40s' is not supported (only silu)",
                            c->path, json_string_value(act));
    }
    if (present(json_object_get(r, "quantization_config")))
        return aha_errf(c->err, AHA_EUNSUPPORTED, "%s: field 'quantization_config': quantised checkpoints are not supported",
                        c->path);

    cfg->tie_word_embeddings = false; /* the default of all three Config classes */
    AHA_TRY(get_bool(c, r, "tie_word_embeddings", &cfg->tie_word_embeddings));

    bool ab = false, mb = false;
    AHA_TRY(get_bool(c, r, "attention_bias", &ab));
    AHA_TRY(get_bool(c, r, "mlp_bias", &mb));
    switch (cfg->arch) {
    case AHA_ARCH_QWEN2: /* q/k/v always carry a bias, o_proj never */
        cfg->attention_bias = true;
        cfg->o_bias = false;
        cfg->mlp_bias = false;
        cfg->qk_norm = false;
        break;
    case AHA_ARCH_QWEN3: /* attention_bias covers q, k, v and o */
        cfg->attention_bias = ab;
        cfg->o_bias = ab;
        cfg->mlp_bias = false;
        cfg->qk_norm = true;
        break;
    case AHA_ARCH_LLAMA:
        cfg->attention_bias = ab;
        cfg->o_bias = ab;
        cfg->mlp_bias = mb;
        cfg->qk_norm = false;
        break;
    }

    if (cfg->arch != AHA_ARCH_LLAMA) {
        bool sw = false;
        AHA_TRY(get_bool(c, r, "use_sliding_window", &sw));
        if (sw)
            return aha_errf(c->err, AHA_EUNSUPPORTED, "%s: field 'use_sliding_window' = true is not supported", c->path);
    }
    json_t *lt = json_object_get(r, "layer_types");
    if (present(lt)) {
        if (!json_is_array(lt))
            return aha_errf(c->err, AHA_EFORMAT, "%s: field 'layer_types' must be a list", c->path);
        for (size_t i = 0; i < json_array_size(lt); i++) {
            json_t *e = json_array_get(lt, i);
            if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention") != 0)
                return aha_errf(c->err, AHA_EUNSUPPORTED,
                                "%s: field 'layer_types[%zu]' is not \"full_attention\" (only full attention is supported)",
                                c->path, i);
        }
    }

    const char *dtf = present(json_object_get(r, "dtype")) ? "dtype" : "torch_dtype";
    json_t *dt = json_object_get(r, dtf);
    snprintf(cfg->dtype, sizeof cfg->dtype, "float32");
    if (present(dt)) {
        if (!json_is_string(dt) || strlen(json_string_value(dt)) >= sizeof cfg->dtype)
            return aha_errf(c->err, AHA_EFORMAT, "%s: field '%s' must be a dtype name", c->path, dtf);
        snprintf(cfg->dtype, sizeof cfg->dtype, "%s", json_string_value(dt));
    }

    cfg->bos_token_id = -1;
    cfg->pad_token_id = -1;
    cfg->n_eos = 0;
    AHA_TRY(get_token(c, r, "bos_token_id", &cfg->bos_token_id));
    AHA_TRY(get_token(c, r, "pad_token_id", &cfg->pad_token_id));
    AHA_TRY(get_eos(c, r, cfg));
    return AHA_OK;
}

static aha_status load_json(const char *json, size_t len, const char *path, json_t **out, aha_err *err)
{
    if (len > CONFIG_MAX_BYTES)
        return aha_errf(err, AHA_ELIMIT, "%s: %zu bytes is over the limit for a config", path, len);
    json_error_t jerr;
    *out = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*out)
        return aha_errf(err, AHA_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text, jerr.line,
                        jerr.column);
    return AHA_OK;
}

aha_status aha_config_parse(const char *json, size_t len, const char *path, aha_model_config *cfg, aha_err *err)
{
    if (!path) path = "config.json";
    memset(cfg, 0, sizeof *cfg);
    cfg_ctx c = {.path = path, .err = err};
    AHA_TRY(load_json(json, len, path, &c.root, err));
    aha_status st = parse_root(&c, cfg);
    json_decref(c.root);
    return st;
}

aha_status aha_config_parse_generation(const char *json, size_t len, const char *path, aha_model_config *cfg,
                                       aha_err *err)
{
    if (!path) path = "generation_config.json";
    cfg_ctx c = {.path = path, .err = err};
    AHA_TRY(load_json(json, len, path, &c.root, err));
    aha_status st = AHA_OK;
    if (!json_is_object(c.root)) {
        st = aha_errf(err, AHA_EFORMAT, "%s: not a JSON object", path);
    } else {
        /* the generation config wins where it says something; a null there says nothing */
        aha_model_config t = *cfg;
        if (present(json_object_get(c.root, "bos_token_id"))) st = get_token(&c, c.root, "bos_token_id", &t.bos_token_id);
        if (st == AHA_OK && present(json_object_get(c.root, "pad_token_id")))
            st = get_token(&c, c.root, "pad_token_id", &t.pad_token_id);
        if (st == AHA_OK && present(json_object_get(c.root, "eos_token_id"))) st = get_eos(&c, c.root, &t);
        if (st == AHA_OK) *cfg = t;
    }
    json_decref(c.root);
    return st;
}

aha_status aha_config_load(const char *dir, aha_model_config *cfg, aha_err *err)
{
    char path[4096];
    AHA_TRY(aha_path_join(path, sizeof path, dir, "config.json", err));
    char *text = NULL;
    size_t len = 0;
    AHA_TRY(aha_read_file(path, CONFIG_MAX_BYTES, &text, &len, err));
    aha_status st = aha_config_parse(text, len, path, cfg, err);
    free(text);
    if (st != AHA_OK) return st;
    AHA_TRY(aha_path_join(path, sizeof path, dir, "generation_config.json", err));
    if (!aha_path_exists(path)) return AHA_OK;
    AHA_TRY(aha_read_file(path, CONFIG_MAX_BYTES, &text, &len, err));
    st = aha_config_parse_generation(text, len, path, cfg, err);
    free(text);
    return st;
}

/* the shortest decimal that reads back as the same float (0.02, not 0.019999999552965164) */
static json_t *float_json(float f)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *token_json(int id)
{
    return id >= 0 ? json_integer(id) : json_null();
}

static json_t *eos_json(const aha_model_config *cfg)
{
    if (cfg->n_eos == 0) return json_null();
    if (cfg->n_eos == 1) return json_integer(cfg->eos_token_ids[0]);
    json_t *a = json_array();
    for (int i = 0; i < cfg->n_eos && a; i++) json_array_append_new(a, json_integer(cfg->eos_token_ids[i]));
    return a;
}

/* the fewest significant digits that read back as x, and enough to print a number >= 1
 * without an exponent (500000.0, not 5e5) */
static int shortest_digits(double x)
{
    char buf[40];
    double ax = fabs(x);
    if (ax >= 1 && ax < 1e16) {
        int p = (int)floor(log10(ax)) + 1;
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return p;
    }
    for (int p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return p;
    }
    return 17;
}

/* json_dumps with sorted keys, two-space indent and a final newline, as transformers writes;
 * reals with the given significant digits */
static char *dump(json_t *o, int digits)
{
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(digits));
    json_decref(o);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return NULL;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    return t;
}

char *aha_config_to_json(const aha_model_config *cfg)
{
    json_t *o = json_object();
    if (!o) return NULL;
    const char *dtype = cfg->dtype[0] ? cfg->dtype : "float32";
    json_t *archs = json_array();
    json_array_append_new(archs, json_string(cfg->architecture[0] ? cfg->architecture
                                             : cfg->arch == AHA_ARCH_QWEN2 ? "Qwen2ForCausalLM"
                                             : cfg->arch == AHA_ARCH_QWEN3 ? "Qwen3ForCausalLM"
                                                                           : "LlamaForCausalLM"));
    const char *mt = cfg->arch == AHA_ARCH_QWEN2 ? "qwen2" : cfg->arch == AHA_ARCH_QWEN3 ? "qwen3" : "llama";
    json_object_set_new(o, "architectures", archs);
    json_object_set_new(o, "model_type", json_string(mt));
    json_object_set_new(o, "vocab_size", json_integer(cfg->vocab_size));
    json_object_set_new(o, "hidden_size", json_integer(cfg->hidden_size));
    json_object_set_new(o, "intermediate_size", json_integer(cfg->intermediate_size));
    json_object_set_new(o, "num_hidden_layers", json_integer(cfg->num_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(cfg->num_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(cfg->num_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(cfg->head_dim));
    json_object_set_new(o, "max_position_embeddings", json_integer(cfg->max_position_embeddings));
    json_object_set_new(o, "rms_norm_eps", json_real(cfg->rms_norm_eps));
    json_object_set_new(o, "initializer_range", float_json(cfg->initializer_range));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "attention_dropout", json_real(0.0));
    /* both places, so transformers 4 and 5 read the same theta */
    json_object_set_new(o, "rope_theta", json_real(cfg->rope_theta));
    json_t *rp = json_object();
    json_object_set_new(rp, "rope_theta", json_real(cfg->rope_theta));
    json_object_set_new(rp, "rope_type", json_string("default"));
    json_object_set_new(o, "rope_parameters", rp);
    json_object_set_new(o, "tie_word_embeddings", json_boolean(cfg->tie_word_embeddings));
    json_object_set_new(o, "torch_dtype", json_string(dtype));
    json_object_set_new(o, "dtype", json_string(dtype));
    json_object_set_new(o, "use_cache", json_true());
    json_object_set_new(o, "bos_token_id", token_json(cfg->bos_token_id));
    json_object_set_new(o, "pad_token_id", token_json(cfg->pad_token_id));
    json_object_set_new(o, "eos_token_id", eos_json(cfg));
    switch (cfg->arch) {
    case AHA_ARCH_QWEN2:
        json_object_set_new(o, "use_sliding_window", json_false());
        json_object_set_new(o, "sliding_window", json_null());
        json_object_set_new(o, "max_window_layers", json_integer(cfg->num_layers));
        break;
    case AHA_ARCH_QWEN3:
        json_object_set_new(o, "attention_bias", json_boolean(cfg->attention_bias));
        json_object_set_new(o, "use_sliding_window", json_false());
        json_object_set_new(o, "sliding_window", json_null());
        json_object_set_new(o, "max_window_layers", json_integer(cfg->num_layers));
        break;
    case AHA_ARCH_LLAMA:
        json_object_set_new(o, "attention_bias", json_boolean(cfg->attention_bias));
        json_object_set_new(o, "mlp_bias", json_boolean(cfg->mlp_bias));
        json_object_set_new(o, "pretraining_tp", json_integer(1));
        break;
    }
    /* the fewest digits that round-trip every real here: 1e-06, not 9.9999999999999995e-07 */
    double reals[] = {cfg->rms_norm_eps, cfg->rope_theta, json_real_value(json_object_get(o, "initializer_range"))};
    int digits = 1;
    for (size_t i = 0; i < AHA_ARRAY_LEN(reals); i++) {
        int d = shortest_digits(reals[i]);
        if (d > digits) digits = d;
    }
    return dump(o, digits);
}

char *aha_config_generation_to_json(const aha_model_config *cfg)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "_from_model_config", json_true());
    json_object_set_new(o, "bos_token_id", token_json(cfg->bos_token_id));
    json_object_set_new(o, "eos_token_id", eos_json(cfg));
    if (cfg->pad_token_id >= 0) json_object_set_new(o, "pad_token_id", json_integer(cfg->pad_token_id));
    json_object_set_new(o, "use_cache", json_true());
    return dump(o, 17);
}

aha_status aha_config_save(const aha_model_config *cfg, const char *dir, aha_err *err)
{
    AHA_TRY(aha_mkdirs(dir, err));
    char path[4096];
    char *text = aha_config_to_json(cfg);
    if (!text) return aha_errf(err, AHA_ENOMEM, "out of memory writing config.json");
    aha_status st = aha_path_join(path, sizeof path, dir, "config.json", err);
    if (st == AHA_OK) st = aha_write_file_atomic(path, text, strlen(text), err);
    free(text);
    if (st != AHA_OK) return st;
    text = aha_config_generation_to_json(cfg);
    if (!text) return aha_errf(err, AHA_ENOMEM, "out of memory writing generation_config.json");
    st = aha_path_join(path, sizeof path, dir, "generation_config.json", err);
    if (st == AHA_OK) st = aha_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return st;
}

bool aha_config_is_eos(const aha_model_config *cfg, int id)
{
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] == id) return true;
    return false;
}
