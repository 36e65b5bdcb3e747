/* spec.c: parse, validate, normalise and print job specs (spec.h).
 *
 * Every JSON object is read through an obj_reader that records which keys were consumed, so
 * that anything left over is reported as unknown (or as belonging to another kind). JSON null
 * means "use the default" everywhere. Error paths are built as "spec.stages[1].loss.kl". */
#include "spec.h"

#include "text/template.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[AHA_JOB_KIND_COUNT] = {
    "grpo", "sft", "distill", "eval", "generate", "mix", "pipeline"};
static const char *const format_names[AHA_DS_FORMAT_COUNT] = {"generic", "gsm8k", "math", "sft"};
static const char *const sched_names[] = {"constant", "cosine", "linear"};

const char *aha_job_kind_name(aha_job_kind k)
{
    return (unsigned)k < AHA_JOB_KIND_COUNT ? kind_names[k] : "?";
}

const char *aha_dataset_format_name(aha_dataset_format f)
{
    return (unsigned)f < AHA_DS_FORMAT_COUNT ? format_names[f] : "?";
}

const char *aha_lr_schedule_name(aha_lr_schedule s)
{
    return (unsigned)s < AHA_ARRAY_LEN(sched_names) ? sched_names[s] : "?";
}

/* Bounds on what a spec may hold. */
#define MAX_STR 4096
#define MAX_TEMPLATE 65536
#define MAX_LIST 64
#define MAX_STAGES 32
#define MAX_PATH_LEN 256

/* Every top-level key of any kind, to tell "unknown" from "not a field of this kind". */
static const char *const all_fields[] = {
    "kind", "name", "seed", "services", "template", "model", "ref_model", "tokenizer",
    "checkpoint", "student_config", "student_init", "teacher", "dataset", "datasets", "steps",
    "epochs", "batch_size", "micro_batch", "max_seq_len", "checkpoint_every", "lr",
    "warmup_steps", "schedule", "min_lr_ratio", "weight_decay", "grad_clip", "adam_beta1",
    "adam_beta2", "adam_eps", "eval", "G", "questions_per_step", "mu", "max_prompt_tokens",
    "max_new_tokens", "temperature", "top_p", "top_k", "epsilon", "beta", "loss",
    "reward_weights", "language", "reflection_words", "ref_refresh_steps", "k", "n",
    "keep_per_prompt", "min_language", "require_correct", "require_format", "output",
    "sources", "total", "shuffle", "skip_bad_lines", "stages"};

static const char *const default_reflection_words[] = {
    "wait", "re-evaluate", "reevaluate", "let me check", "let me verify", "double-check",
    "recheck", "aha"};

/* ---- reading helpers ---------------------------------------------------------------- */

typedef struct {
    json_t *obj;
    char path[MAX_PATH_LEN];
    const char *seen[80];
    int n_seen;
    aha_err *err;
} rd;

/* Error paths are cut at MAX_PATH_LEN, which only shortens a message. */
static void pathf(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

static void rd_init(rd *r, json_t *obj, const char *path, aha_err *err)
{
    memset(r, 0, sizeof *r);
    r->obj = obj;
    pathf(r->path, sizeof r->path, "%s", path);
    r->err = err;
}

/* The value of key (NULL when absent or null), marking it consumed. */
static json_t *rd_get(rd *r, const char *key)
{
    AHA_ASSERT(r->n_seen < (int)AHA_ARRAY_LEN(r->seen));
    r->seen[r->n_seen++] = key;
    json_t *v = json_object_get(r->obj, key);
    return json_is_null(v) ? NULL : v;
}

const char *aha__json_type_word(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static aha_status rd_fail(rd *r, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static aha_status rd_fail(rd *r, const char *key, const char *fmt, ...)
{
    char msg[AHA_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return aha_errf(r->err, AHA_EINVAL, "%s.%s: %s", r->path, key, msg);
}

/* v (the value of key) must be an array of 1 to max entries, named noun in the message. */
static aha_status rd_check_list(rd *r, const char *key, const json_t *v, int max, const char *noun,
                                size_t *n)
{
    if (!json_is_array(v)) return rd_fail(r, key, "must be an array, got %s", aha__json_type_word(v));
    *n = json_array_size(v);
    if (*n < 1 || *n > (size_t)max) return rd_fail(r, key, "must hold 1 to %d %s, got %zu", max, noun, *n);
    return AHA_OK;
}

static aha_status rd_int(rd *r, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = rd_get(r, key);
    if (!v) {
        *out = def;
        return AHA_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || fabs(d) > 9e15)
            return rd_fail(r, key, "must be an integer, got %g", d);
        *out = (int64_t)d;
    } else if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else {
        return rd_fail(r, key, "must be an integer, got %s", aha__json_type_word(v));
    }
    if (*out < lo || *out > hi) {
        if (hi == INT64_MAX || hi == INT_MAX)
            return rd_fail(r, key, "must be >= %" PRId64 ", got %" PRId64, lo, *out);
        return rd_fail(r, key, "must be in [%" PRId64 ", %" PRId64 "], got %" PRId64, lo, hi,
                       *out);
    }
    return AHA_OK;
}

static aha_status rd_i32(rd *r, const char *key, int def, int lo, int hi, int *out)
{
    int64_t v;
    AHA_TRY(rd_int(r, key, def, lo, hi, &v));
    *out = (int)v;
    return AHA_OK;
}

/* A real range: lo/hi may be +-INFINITY; open ends exclude the bound. */
typedef struct {
    double lo, hi;
    bool lo_open, hi_open;
} drange;

#define CLOSED(a, b) ((drange){(a), (b), false, false})
#define OPEN(a, b) ((drange){(a), (b), true, true})
#define OPEN_CLOSED(a, b) ((drange){(a), (b), true, false})
#define CLOSED_OPEN(a, b) ((drange){(a), (b), false, true})
#define AT_LEAST(a) ((drange){(a), INFINITY, false, true})
#define ABOVE(a) ((drange){(a), INFINITY, true, true})

static aha_status rd_num(rd *r, const char *key, double def, drange rg, double *out)
{
    json_t *v = rd_get(r, key);
    if (!v) {
        *out = def;
        return AHA_OK;
    }
    if (!json_is_number(v)) return rd_fail(r, key, "must be a number, got %s", aha__json_type_word(v));
    double d = json_number_value(v);
    bool ok = (rg.lo_open ? d > rg.lo : d >= rg.lo) && (rg.hi_open ? d < rg.hi : d <= rg.hi);
    if (!ok) {
        if (isinf(rg.hi))
            return rd_fail(r, key, "must be %s %g, got %g", rg.lo_open ? ">" : ">=", rg.lo, d);
        return rd_fail(r, key, "must be in %c%g, %g%c, got %g", rg.lo_open ? '(' : '[', rg.lo,
                       rg.hi, rg.hi_open ? ')' : ']', d);
    }
    *out = d;
    return AHA_OK;
}

static aha_status rd_bool(rd *r, const char *key, bool def, bool *out)
{
    json_t *v = rd_get(r, key);
    if (!v) {
        *out = def;
        return AHA_OK;
    }
    if (!json_is_boolean(v)) return rd_fail(r, key, "must be true or false, got %s", aha__json_type_word(v));
    *out = json_is_true(v);
    return AHA_OK;
}

static aha_status dup_str(const char *s, char **out, aha_err *err)
{
    *out = NULL;
    if (!s) return AHA_OK;
    *out = strdup(s);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
}

/* A string field: absent → def (copied; may be NULL) or an error when required. */
static aha_status rd_str(rd *r, const char *key, const char *def, bool required, size_t maxlen,
                         char **out)
{
    json_t *v = rd_get(r, key);
    if (!v) {
        if (required) return rd_fail(r, key, "required");
        return dup_str(def, out, r->err);
    }
    if (!json_is_string(v)) return rd_fail(r, key, "must be a string, got %s", aha__json_type_word(v));
    size_t n = json_string_length(v);
    if (n == 0) return rd_fail(r, key, "must not be empty");
    if (n > maxlen) return rd_fail(r, key, "too long (%zu bytes, at most %zu)", n, maxlen);
    if (strlen(json_string_value(v)) != n) return rd_fail(r, key, "must not contain NUL");
    return dup_str(json_string_value(v), out, r->err);
}

static aha_status rd_enum(rd *r, const char *key, const char *const *names, int n, int def,
                          int *out)
{
    json_t *v = rd_get(r, key);
    if (!v) {
        *out = def;
        return AHA_OK;
    }
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", names[i]);
    }
    if (!json_is_string(v))
        return rd_fail(r, key, "must be one of %s, got %s", list, aha__json_type_word(v));
    for (int i = 0; i < n; i++)
        if (strcmp(json_string_value(v), names[i]) == 0) {
            *out = i;
            return AHA_OK;
        }
    return rd_fail(r, key, "must be one of %s, got \"%.64s\"", list, json_string_value(v));
}

static bool in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, list[i]) == 0) return true;
    return false;
}

/* Every key must have been consumed. kind_word: "sft jobs" for top-level objects, where a
 * key of another kind gets its own message; NULL for nested objects. */
static aha_status rd_done(rd *r, const char *kind_word)
{
    const char *key;
    json_t *v;
    json_object_foreach(r->obj, key, v) {
        if (in_list(key, r->seen, (size_t)r->n_seen)) continue;
        if (kind_word && in_list(key, all_fields, AHA_ARRAY_LEN(all_fields)))
            return aha_errf(r->err, AHA_EINVAL, "%s.%.64s: not a field of %s", r->path, key,
                            kind_word);
        return aha_errf(r->err, AHA_EINVAL, "%s.%.64s: unknown field", r->path, key);
    }
    return AHA_OK;
}

/* Open a nested object field: absent → *present false. */
static aha_status rd_obj(rd *r, const char *key, rd *sub, bool *present)
{
    json_t *v = rd_get(r, key);
    *present = v != NULL;
    if (!v) return AHA_OK;
    if (!json_is_object(v)) return rd_fail(r, key, "must be an object, got %s", aha__json_type_word(v));
    char p[MAX_PATH_LEN];
    pathf(p, sizeof p, "%s.%s", r->path, key);
    rd_init(sub, v, p, r->err);
    return AHA_OK;
}

static void free_strv(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* A list of non-empty strings (a single string is a list of one when allow_single). */
static aha_status rd_strv(rd *r, const char *key, bool allow_single, int min_n, int max_n,
                          size_t maxlen, char ***out, int *n_out, bool *present)
{
    *out = NULL;
    *n_out = 0;
    json_t *v = rd_get(r, key);
    *present = v != NULL;
    if (!v) return AHA_OK;
    json_t *arr = v;
    json_t *tmp = NULL;
    if (json_is_string(v) && allow_single) {
        tmp = json_array();
        if (!tmp) return aha_errf(r->err, AHA_ENOMEM, "out of memory");
        json_array_append(tmp, v);
        arr = tmp;
    } else if (!json_is_array(v)) {
        return rd_fail(r, key, "must be %s, got %s",
                       allow_single ? "a string or an array of strings" : "an array of strings",
                       aha__json_type_word(v));
    }
    size_t n = json_array_size(arr);
    aha_status st = AHA_OK;
    if ((int)n < min_n || n > (size_t)max_n) {
        st = rd_fail(r, key, "must hold %d to %d entries, got %zu", min_n, max_n, n);
        goto out;
    }
    char **list = calloc(n ? n : 1, sizeof *list);
    if (!list) {
        st = aha_errf(r->err, AHA_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_string(s)) {
            st = rd_fail(r, key, "entry %zu must be a string, got %s", i, aha__json_type_word(s));
        } else if (json_string_length(s) == 0 || json_string_length(s) > maxlen ||
                   strlen(json_string_value(s)) != json_string_length(s)) {
            st = rd_fail(r, key, "entry %zu must be a non-empty string of at most %zu bytes", i,
                         maxlen);
        } else if (!(list[i] = strdup(json_string_value(s)))) {
            st = aha_errf(r->err, AHA_ENOMEM, "out of memory");
        }
        if (st != AHA_OK) {
            free_strv(list, (int)n);
            goto out;
        }
    }
    *out = list;
    *n_out = (int)n;
out:
    json_decref(tmp);
    return st;
}

/* ---- sub-objects --------------------------------------------------------------------- */

static aha_status check_address(rd *r, const char *key, const char *a)
{
    for (const char *p = a; *p; p++)
        if (isspace((unsigned char)*p))
            return rd_fail(r, key, "\"%.64s\" is not an address (whitespace)", a);
    if (strncmp(a, "unix:", 5) == 0) {
        if (!a[5]) return rd_fail(r, key, "\"%.64s\" has no socket path", a);
        return AHA_OK;
    }
    if (strstr(a, ":///")) return AHA_OK; /* a gRPC target URI (dns:///host:port) */
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a)
        return rd_fail(r, key, "\"%.64s\" is not HOST:PORT or unix:PATH", a);
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || errno || port < 1 || port > 65535)
        return rd_fail(r, key, "\"%.64s\": port must be 1..65535", a);
    return AHA_OK;
}

static void services_free(aha_services_spec *s)
{
    free_strv(s->rollout, s->n_rollout);
    free(s->reward);
    free(s->refpolicy);
    memset(s, 0, sizeof *s);
}

static aha_status services_copy(const aha_services_spec *src, aha_services_spec *dst, aha_err *err)
{
    memset(dst, 0, sizeof *dst);
    if (src->n_rollout) {
        dst->rollout = calloc((size_t)src->n_rollout, sizeof *dst->rollout);
        if (!dst->rollout) return aha_errf(err, AHA_ENOMEM, "out of memory");
        dst->n_rollout = src->n_rollout;
        for (int i = 0; i < src->n_rollout; i++)
            AHA_TRY(dup_str(src->rollout[i], &dst->rollout[i], err));
    }
    AHA_TRY(dup_str(src->reward, &dst->reward, err));
    return dup_str(src->refpolicy, &dst->refpolicy, err);
}

static aha_status parse_services(rd *r, const aha_services_spec *inherit, aha_services_spec *s)
{
    rd sub;
    bool present;
    AHA_TRY(rd_obj(r, "services", &sub, &present));
    if (!present) return inherit ? services_copy(inherit, s, r->err) : AHA_OK;
    bool have;
    AHA_TRY(rd_strv(&sub, "rollout", true, 1, MAX_LIST, 512, &s->rollout, &s->n_rollout, &have));
    for (int i = 0; i < s->n_rollout; i++) AHA_TRY(check_address(&sub, "rollout", s->rollout[i]));
    AHA_TRY(rd_str(&sub, "reward", NULL, false, 512, &s->reward));
    if (s->reward) AHA_TRY(check_address(&sub, "reward", s->reward));
    AHA_TRY(rd_str(&sub, "refpolicy", NULL, false, 512, &s->refpolicy));
    if (s->refpolicy) AHA_TRY(check_address(&sub, "refpolicy", s->refpolicy));
    return rd_done(&sub, NULL);
}

static aha_status parse_template(rd *r, const char *inherit, char **out)
{
    json_t *v = rd_get(r, "template");
    if (!v) return dup_str(inherit ? inherit : aha_template_builtin("r1-zero"), out, r->err);
    if (!json_is_string(v))
        return rd_fail(r, "template", "must be a string, got %s", aha__json_type_word(v));
    const char *s = json_string_value(v);
    if (json_string_length(v) > MAX_TEMPLATE || strlen(s) != json_string_length(v))
        return rd_fail(r, "template", "too long or holds NUL (at most %d bytes)", MAX_TEMPLATE);
    const char *tmpl;
    aha_err terr = {0};
    if (aha_template_resolve(s, &tmpl, &terr) != AHA_OK) {
        char names[256] = "";
        for (const char *const *n = aha_template_builtin_names(); *n; n++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", *n);
        }
        return rd_fail(r, "template", "must contain {prompt} or be a built-in name (%s)", names);
    }
    /* a lone brace or an unknown {field} fails here, at submit time, not mid-job */
    char *probe;
    if (aha_template_render(tmpl, "x", &probe, &terr) != AHA_OK)
        return rd_fail(r, "template", "%s", terr.msg);
    free(probe);
    return dup_str(tmpl, out, r->err);
}

static void dataset_free(aha_dataset_spec *d)
{
    free(d->path);
    free(d->name);
    free(d->prompt_field);
    free(d->answer_field);
    free(d->completion_field);
    free(d->lang_field);
    free(d->id_field);
    memset(d, 0, sizeof *d);
}

/* Name of a dataset for reports: the file name without directory and extension. */
static aha_status default_ds_name(const char *path, char **out, aha_err *err)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 6 && strcmp(base + n - 6, ".jsonl") == 0) n -= 6;
    else if (n > 5 && strcmp(base + n - 5, ".json") == 0) n -= 5;
    if (n == 0) {
        base = "dataset";
        n = strlen(base);
    }
    /* the same bound as an explicit name (the normalised spec writes it out), cut at a
     * UTF-8 character boundary */
    if (n > 128) {
        n = 128;
        while (n > 0 && ((unsigned char)base[n] & 0xC0) == 0x80) n--;
    }
    *out = strndup(base, n);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
}

/* v: a path string or {path, format, name, fields, skip_bad_lines, limit}. allowed: bitmask
 * of formats this use accepts; def: the default format. */
static aha_status parse_dataset_value(json_t *v, const char *path, unsigned allowed,
                                      aha_dataset_format def, aha_dataset_spec *d, aha_err *err)
{
    memset(d, 0, sizeof *d);
    int fmt = (int)def;
    rd r;
    bool have_fields = false;
    rd fr;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0 || json_string_length(v) > MAX_STR)
            return aha_errf(err, AHA_EINVAL, "%s: must be a non-empty path", path);
        AHA_TRY(dup_str(json_string_value(v), &d->path, err));
        AHA_TRY(default_ds_name(d->path, &d->name, err));
    } else if (json_is_object(v)) {
        rd_init(&r, v, path, err);
        AHA_TRY(rd_str(&r, "path", NULL, true, MAX_STR, &d->path));
        AHA_TRY(rd_str(&r, "name", NULL, false, 128, &d->name));
        if (!d->name) AHA_TRY(default_ds_name(d->path, &d->name, err));
        AHA_TRY(rd_enum(&r, "format", format_names, AHA_DS_FORMAT_COUNT, (int)def, &fmt));
        AHA_TRY(rd_bool(&r, "skip_bad_lines", false, &d->skip_bad_lines));
        AHA_TRY(rd_int(&r, "limit", 0, 0, INT64_MAX, &d->limit));
        AHA_TRY(rd_obj(&r, "fields", &fr, &have_fields));
    } else {
        return aha_errf(err, AHA_EINVAL, "%s: must be a path string or an object, got %s", path,
                        aha__json_type_word(v));
    }
    d->format = (aha_dataset_format)fmt;
    if (!(allowed & (1u << fmt))) {
        char list[128] = "";
        for (int i = 0; i < AHA_DS_FORMAT_COUNT; i++)
            if (allowed & (1u << i)) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", format_names[i]);
            }
        return aha_errf(err, AHA_EINVAL, "%s.format: must be one of %s here, got %s", path, list,
                        format_names[fmt]);
    }
    static const char *const def_prompt[] = {"prompt", "question", "problem", "prompt"};
    static const char *const def_answer[] = {"answer", "answer", "solution", NULL};
    const char *p = def_prompt[fmt], *a = def_answer[fmt];
    const char *c = fmt == AHA_DS_SFT ? "completion" : NULL;
    if (have_fields) {
        AHA_TRY(rd_str(&fr, "prompt", p, false, 128, &d->prompt_field));
        if (fmt != AHA_DS_SFT) AHA_TRY(rd_str(&fr, "answer", a, false, 128, &d->answer_field));
        else AHA_TRY(rd_str(&fr, "completion", c, false, 128, &d->completion_field));
        AHA_TRY(rd_str(&fr, "lang", "lang", false, 128, &d->lang_field));
        AHA_TRY(rd_str(&fr, "id", "id", false, 128, &d->id_field));
        AHA_TRY(rd_done(&fr, NULL));
    } else {
        AHA_TRY(dup_str(p, &d->prompt_field, err));
        AHA_TRY(dup_str(a, &d->answer_field, err));
        AHA_TRY(dup_str(c, &d->completion_field, err));
        AHA_TRY(dup_str("lang", &d->lang_field, err));
        AHA_TRY(dup_str("id", &d->id_field, err));
    }
    d->prompt_fallback_question =
        fmt == AHA_DS_GENERIC && strcmp(d->prompt_field, "prompt") == 0 &&
        !(have_fields && json_object_get(fr.obj, "prompt"));
    if (json_is_object(v)) AHA_TRY(rd_done(&r, NULL));
    return AHA_OK;
}

#define FMT_ANSWERED ((1u << AHA_DS_GENERIC) | (1u << AHA_DS_GSM8K) | (1u << AHA_DS_MATH))
#define FMT_SFT (1u << AHA_DS_SFT)

static aha_status rd_dataset(rd *r, const char *key, bool required, unsigned allowed,
                             aha_dataset_format def, aha_dataset_spec *d, bool *present)
{
    json_t *v = rd_get(r, key);
    *present = v != NULL;
    if (!v) return required ? rd_fail(r, key, "required") : AHA_OK;
    char p[MAX_PATH_LEN];
    pathf(p, sizeof p, "%s.%s", r->path, key);
    return parse_dataset_value(v, p, allowed, def, d, r->err);
}

static void eval_free(aha_eval_spec *e)
{
    for (int i = 0; i < e->n_datasets; i++) dataset_free(&e->datasets[i]);
    free(e->datasets);
    memset(e, 0, sizeof *e);
}

/* "dataset" (one) or "datasets" (a list) of answered data into e. */
static aha_status rd_eval_datasets(rd *r, bool required, aha_eval_spec *e)
{
    json_t *one = rd_get(r, "dataset");
    json_t *many = rd_get(r, "datasets");
    if (one && many) return rd_fail(r, "datasets", "give either dataset or datasets, not both");
    if (!one && !many) return required ? rd_fail(r, "datasets", "required") : AHA_OK;
    size_t n = 1;
    if (many) AHA_TRY(rd_check_list(r, "datasets", many, MAX_LIST, "datasets", &n));
    e->datasets = calloc(n, sizeof *e->datasets);
    if (!e->datasets) return aha_errf(r->err, AHA_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char p[MAX_PATH_LEN];
        if (many) pathf(p, sizeof p, "%s.datasets[%zu]", r->path, i);
        else pathf(p, sizeof p, "%s.dataset", r->path);
        aha_status st = parse_dataset_value(many ? json_array_get(many, i) : one, p,
                                            FMT_ANSWERED, AHA_DS_GENERIC, &e->datasets[i], r->err);
        e->n_datasets = (int)i + 1;
        if (st != AHA_OK) return st;
    }
    for (int i = 0; i < e->n_datasets; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(e->datasets[i].name, e->datasets[j].name) == 0)
                return aha_errf(r->err, AHA_EINVAL,
                                "%s.datasets[%d].name: \"%s\" is used twice (set distinct names)",
                                r->path, i, e->datasets[i].name);
    return AHA_OK;
}

static aha_status rd_sampling(rd *r, double t, double p, int max_new, aha_sampling_spec *s)
{
    AHA_TRY(rd_num(r, "temperature", t, CLOSED(0, 100), &s->temperature));
    AHA_TRY(rd_num(r, "top_p", p, OPEN_CLOSED(0, 1), &s->top_p));
    AHA_TRY(rd_i32(r, "top_k", 0, 0, 1 << 20, &s->top_k));
    return rd_i32(r, "max_new_tokens", max_new, 1, 1 << 20, &s->max_new_tokens);
}

/* The "eval" object of a training job. */
static aha_status parse_train_eval(rd *r, int max_new_tokens, aha_job_spec *s)
{
    rd sub;
    AHA_TRY(rd_obj(r, "eval", &sub, &s->has_eval));
    if (!s->has_eval) return AHA_OK;
    AHA_TRY(rd_eval_datasets(&sub, true, &s->eval));
    AHA_TRY(rd_i32(&sub, "every", 0, 0, INT_MAX, &s->eval.every));
    AHA_TRY(rd_i32(&sub, "k", 4, 1, 1024, &s->eval.k));
    AHA_TRY(rd_sampling(&sub, 0.6, 0.95, max_new_tokens, &s->eval.sampling));
    return rd_done(&sub, NULL);
}

static aha_status parse_optim(rd *r, double lr, aha_optim_spec *o)
{
    AHA_TRY(rd_num(r, "lr", lr, OPEN_CLOSED(0, 1), &o->lr));
    AHA_TRY(rd_i32(r, "warmup_steps", 0, 0, INT_MAX, &o->warmup_steps));
    int sch = AHA_SCHED_CONSTANT; /* set by rd_enum; gcc -O3 cannot see it */
    AHA_TRY(rd_enum(r, "schedule", sched_names, 3, AHA_SCHED_CONSTANT, &sch));
    o->schedule = (aha_lr_schedule)sch;
    AHA_TRY(rd_num(r, "min_lr_ratio", 0, CLOSED(0, 1), &o->min_lr_ratio));
    AHA_TRY(rd_num(r, "weight_decay", 0, CLOSED(0, 1), &o->weight_decay));
    AHA_TRY(rd_num(r, "grad_clip", 1.0, AT_LEAST(0), &o->grad_clip));
    AHA_TRY(rd_num(r, "adam_beta1", 0.9, CLOSED_OPEN(0, 1), &o->adam_beta1));
    AHA_TRY(rd_num(r, "adam_beta2", 0.999, CLOSED_OPEN(0, 1), &o->adam_beta2));
    return rd_num(r, "adam_eps", 1e-8, OPEN(0, 1), &o->adam_eps);
}

static aha_status parse_loss(rd *r, aha_job_spec *s)
{
    aha_loss_spec *l = &s->loss;
    AHA_TRY(rd_num(r, "epsilon", 0.2, OPEN(0, 1), &l->epsilon));
    AHA_TRY(rd_num(r, "beta", 0.04, AT_LEAST(0), &l->beta));
    rd sub;
    bool present;
    AHA_TRY(rd_obj(r, "loss", &sub, &present));
    if (!present) {
        l->epsilon_low = l->epsilon_high = l->epsilon;
        l->kl = true;
        l->token_level = false;
        l->scale_std = true;
        l->std_eps = 1e-4;
        return AHA_OK;
    }
    AHA_TRY(rd_num(&sub, "epsilon_low", l->epsilon, OPEN(0, 1), &l->epsilon_low));
    AHA_TRY(rd_num(&sub, "epsilon_high", l->epsilon, OPEN(0, 1), &l->epsilon_high));
    AHA_TRY(rd_bool(&sub, "kl", true, &l->kl));
    AHA_TRY(rd_bool(&sub, "token_level", false, &l->token_level));
    AHA_TRY(rd_bool(&sub, "scale_std", true, &l->scale_std));
    AHA_TRY(rd_num(&sub, "std_eps", 1e-4, OPEN_CLOSED(0, 1), &l->std_eps));
    return rd_done(&sub, NULL);
}

static aha_status parse_reward_weights(rd *r, aha_reward_weights_spec *w)
{
    rd sub;
    bool present;
    AHA_TRY(rd_obj(r, "reward_weights", &sub, &present));
    if (!present) {
        w->accuracy = 1;
        w->format = 1;
        w->language = 0;
        return AHA_OK;
    }
    AHA_TRY(rd_num(&sub, "accuracy", 1, CLOSED(0, 1e6), &w->accuracy));
    AHA_TRY(rd_num(&sub, "format", 1, CLOSED(0, 1e6), &w->format));
    AHA_TRY(rd_num(&sub, "language", 0, CLOSED(0, 1e6), &w->language));
    AHA_TRY(rd_done(&sub, NULL));
    if (w->accuracy == 0 && w->format == 0 && w->language == 0)
        return aha_errf(r->err, AHA_EINVAL, "%s.reward_weights: all weights are 0", r->path);
    return AHA_OK;
}

static aha_status rd_language(rd *r, char **out)
{
    AHA_TRY(rd_str(r, "language", NULL, false, 35, out));
    if (!*out) return AHA_OK;
    for (const char *p = *out; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return rd_fail(r, "language", "\"%s\" is not a language tag (like en, zh-CN)", *out);
    return AHA_OK;
}

/* ---- kinds --------------------------------------------------------------------------- */

static aha_status parse_grpo(rd *r, aha_job_spec *s)
{
    bool present;
    AHA_TRY(rd_str(r, "model", NULL, true, MAX_STR, &s->model));
    AHA_TRY(rd_str(r, "ref_model", s->model, false, MAX_STR, &s->ref_model));
    AHA_TRY(rd_str(r, "tokenizer", s->model, false, MAX_STR, &s->tokenizer));
    AHA_TRY(rd_dataset(r, "dataset", true, FMT_ANSWERED, AHA_DS_GENERIC, &s->dataset, &present));
    s->has_dataset = true;
    AHA_TRY(rd_i32(r, "G", 16, 2, 1024, &s->group_size));
    AHA_TRY(rd_i32(r, "questions_per_step", 8, 1, 65536, &s->questions_per_step));
    AHA_TRY(rd_int(r, "steps", 0, 1, 1000000000, &s->steps));
    if (!json_object_get(r->obj, "steps") || json_is_null(json_object_get(r->obj, "steps")))
        return rd_fail(r, "steps", "required");
    AHA_TRY(rd_i32(r, "mu", 1, 1, 64, &s->mu));
    AHA_TRY(parse_loss(r, s));
    AHA_TRY(parse_optim(r, 1e-6, &s->optim));
    AHA_TRY(rd_i32(r, "micro_batch", 4, 1, 4096, &s->micro_batch));
    AHA_TRY(rd_i32(r, "max_prompt_tokens", 512, 1, 1 << 20, &s->max_prompt_tokens));
    AHA_TRY(rd_sampling(r, 1.0, 1.0, 512, &s->sampling));
    if (s->sampling.temperature == 0)
        return rd_fail(r, "temperature",
                       "must be > 0 for grpo (greedy groups have no variance), got 0");
    AHA_TRY(parse_reward_weights(r, &s->reward_weights));
    AHA_TRY(rd_language(r, &s->language));
    AHA_TRY(rd_strv(r, "reflection_words", false, 0, MAX_LIST, 64, &s->reflection_words,
                    &s->n_reflection_words, &present));
    if (!present) {
        int n = (int)AHA_ARRAY_LEN(default_reflection_words);
        s->reflection_words = calloc((size_t)n, sizeof *s->reflection_words);
        if (!s->reflection_words) return aha_errf(r->err, AHA_ENOMEM, "out of memory");
        s->n_reflection_words = n;
        for (int i = 0; i < n; i++)
            AHA_TRY(dup_str(default_reflection_words[i], &s->reflection_words[i], r->err));
    }
    AHA_TRY(rd_i32(r, "checkpoint_every", 50, 0, INT_MAX, &s->checkpoint_every));
    AHA_TRY(rd_int(r, "ref_refresh_steps", 0, 0, INT64_MAX, &s->ref_refresh_steps));
    return parse_train_eval(r, s->sampling.max_new_tokens, s);
}

static aha_status parse_sft(rd *r, aha_job_spec *s)
{
    bool present;
    if (s->kind == AHA_JOB_SFT) {
        AHA_TRY(rd_str(r, "model", NULL, true, MAX_STR, &s->model));
        AHA_TRY(rd_str(r, "tokenizer", s->model, false, MAX_STR, &s->tokenizer));
    } else {
        AHA_TRY(rd_str(r, "student_config", NULL, false, MAX_STR, &s->student_config));
        AHA_TRY(rd_str(r, "student_init", NULL, false, MAX_STR, &s->student_init));
        if (!s->student_config == !s->student_init)
            return rd_fail(r, "student_config",
                           "give exactly one of student_config (fresh init) and student_init "
                           "(a checkpoint)");
        AHA_TRY(rd_str(r, "tokenizer", s->student_init, !s->student_init, MAX_STR, &s->tokenizer));
        AHA_TRY(rd_str(r, "teacher", NULL, false, MAX_STR, &s->teacher));
    }
    AHA_TRY(rd_dataset(r, "dataset", true, FMT_SFT, AHA_DS_SFT, &s->dataset, &present));
    s->has_dataset = true;
    AHA_TRY(rd_i32(r, "epochs", 1, 1, 100000, &s->epochs));
    AHA_TRY(rd_int(r, "steps", 0, 0, 1000000000, &s->steps));
    AHA_TRY(rd_i32(r, "batch_size", 8, 1, 65536, &s->batch_size));
    AHA_TRY(rd_i32(r, "micro_batch", 4, 1, 4096, &s->micro_batch));
    AHA_TRY(rd_i32(r, "max_seq_len", 1024, 2, 1 << 20, &s->max_seq_len));
    AHA_TRY(parse_optim(r, 1e-5, &s->optim));
    AHA_TRY(rd_i32(r, "checkpoint_every", 50, 0, INT_MAX, &s->checkpoint_every));
    return parse_train_eval(r, 512, s);
}

static aha_status parse_eval_kind(rd *r, aha_job_spec *s)
{
    AHA_TRY(rd_str(r, "checkpoint", NULL, true, MAX_STR, &s->checkpoint));
    AHA_TRY(rd_str(r, "tokenizer", s->checkpoint, false, MAX_STR, &s->tokenizer));
    AHA_TRY(rd_eval_datasets(r, true, &s->eval));
    s->has_eval = true;
    AHA_TRY(rd_i32(r, "k", 16, 1, 1024, &s->eval.k));
    AHA_TRY(rd_sampling(r, 0.6, 0.95, 512, &s->eval.sampling));
    return rd_language(r, &s->language);
}

static aha_status parse_generate(rd *r, aha_job_spec *s)
{
    bool present;
    AHA_TRY(rd_str(r, "checkpoint", NULL, true, MAX_STR, &s->checkpoint));
    AHA_TRY(rd_str(r, "tokenizer", s->checkpoint, false, MAX_STR, &s->tokenizer));
    AHA_TRY(rd_dataset(r, "dataset", true, FMT_ANSWERED, AHA_DS_GENERIC, &s->dataset, &present));
    s->has_dataset = true;
    AHA_TRY(rd_i32(r, "n", 4, 1, 1024, &s->n_samples));
    AHA_TRY(rd_i32(r, "keep_per_prompt", 1, 1, 1024, &s->keep_per_prompt));
    if (s->keep_per_prompt > s->n_samples)
        return rd_fail(r, "keep_per_prompt", "must be <= n (%d), got %d", s->n_samples,
                       s->keep_per_prompt);
    AHA_TRY(rd_num(r, "min_language", 0.0, CLOSED(0, 1), &s->min_language));
    AHA_TRY(rd_bool(r, "require_correct", true, &s->require_correct));
    AHA_TRY(rd_bool(r, "require_format", true, &s->require_format));
    AHA_TRY(rd_sampling(r, 0.6, 0.95, 512, &s->sampling));
    AHA_TRY(rd_language(r, &s->language));
    return rd_str(r, "output", NULL, false, MAX_STR, &s->output);
}

static aha_status parse_mix(rd *r, aha_job_spec *s)
{
    json_t *v = rd_get(r, "sources");
    if (!v) return rd_fail(r, "sources", "required");
    size_t n;
    AHA_TRY(rd_check_list(r, "sources", v, MAX_LIST, "sources", &n));
    AHA_TRY(rd_int(r, "total", 0, 0, 1000000000, &s->total));
    AHA_TRY(rd_bool(r, "shuffle", true, &s->shuffle));
    AHA_TRY(rd_bool(r, "skip_bad_lines", false, &s->mix_skip_bad_lines));
    AHA_TRY(rd_str(r, "output", NULL, false, MAX_STR, &s->output));
    s->sources = calloc(n, sizeof *s->sources);
    if (!s->sources) return aha_errf(r->err, AHA_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        aha_mix_source *src = &s->sources[i];
        s->n_sources = (int)i + 1;
        char p[MAX_PATH_LEN];
        pathf(p, sizeof p, "%s.sources[%zu]", r->path, i);
        json_t *e = json_array_get(v, i);
        src->proportion = 1;
        src->count = -1;
        if (json_is_string(e)) {
            if (json_string_length(e) == 0 || json_string_length(e) > MAX_STR)
                return aha_errf(r->err, AHA_EINVAL, "%s: must be a non-empty path", p);
            AHA_TRY(dup_str(json_string_value(e), &src->path, r->err));
            continue;
        }
        if (!json_is_object(e))
            return aha_errf(r->err, AHA_EINVAL, "%s: must be a path or an object, got %s", p,
                            aha__json_type_word(e));
        rd sr;
        rd_init(&sr, e, p, r->err);
        AHA_TRY(rd_str(&sr, "path", NULL, true, MAX_STR, &src->path));
        if (s->total > 0) {
            AHA_TRY(rd_num(&sr, "proportion", 1, ABOVE(0), &src->proportion));
            if (json_object_get(e, "count"))
                return aha_errf(r->err, AHA_EINVAL,
                                "%s.count: not allowed when total is set (use proportion)", p);
        } else {
            AHA_TRY(rd_int(&sr, "count", -1, 0, 1000000000, &src->count));
            if (json_object_get(e, "proportion"))
                return aha_errf(r->err, AHA_EINVAL,
                                "%s.proportion: needs total (without it, sources are "
                                "concatenated; use count)", p);
        }
        AHA_TRY(rd_done(&sr, NULL));
    }
    return AHA_OK;
}

/* ---- references ---------------------------------------------------------------------- */

static bool stage_name_ok(const char *n)
{
    if (!*n || strlen(n) > 64) return false;
    for (const char *p = n; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') return false;
    return true;
}

/* Parse the reference at s ("${stages.NAME.WHAT}"): name into name[cap], kind, length. */
static bool parse_ref(const char *s, char *name, size_t cap, aha_job_ref_kind *what, size_t *len)
{
    static const char pre[] = "${stages.";
    if (strncmp(s, pre, sizeof pre - 1) != 0) return false;
    const char *n = s + sizeof pre - 1;
    const char *dot = n;
    while (*dot && *dot != '.' && *dot != '}') dot++;
    if (*dot != '.' || dot == n || (size_t)(dot - n) >= cap) return false;
    memcpy(name, n, (size_t)(dot - n));
    name[dot - n] = 0;
    const char *w = dot + 1;
    if (strncmp(w, "checkpoint}", 11) == 0) {
        *what = AHA_REF_CHECKPOINT;
        *len = (size_t)(w + 11 - s);
    } else if (strncmp(w, "dataset}", 8) == 0) {
        *what = AHA_REF_DATASET;
        *len = (size_t)(w + 8 - s);
    } else {
        return false;
    }
    return stage_name_ok(name);
}

/* Check every "${" in every string under v against the stages before index `self`
 * (stages == NULL: references are not allowed here). */
static aha_status check_refs(json_t *v, const char *path, const aha_job_spec *stages, int self,
                             int depth, aha_err *err)
{
    if (depth > 16) return AHA_OK;
    char p[MAX_PATH_LEN];
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            pathf(p, sizeof p, "%s.%.64s", path, k);
            AHA_TRY(check_refs(x, p, stages, self, depth + 1, err));
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            pathf(p, sizeof p, "%s[%zu]", path, i);
            AHA_TRY(check_refs(json_array_get(v, i), p, stages, self, depth + 1, err));
        }
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        for (const char *q = strstr(s, "${"); q; q = strstr(q + 2, "${")) {
            char name[80];
            aha_job_ref_kind what;
            size_t len;
            if (!stages)
                return aha_errf(err, AHA_EINVAL,
                                "%s: references (${...}) are only allowed in pipeline stages",
                                path);
            if (!parse_ref(q, name, sizeof name, &what, &len))
                return aha_errf(err, AHA_EINVAL,
                                "%s: bad reference \"%.60s\" (expected ${stages.NAME.checkpoint} "
                                "or ${stages.NAME.dataset})", path, q);
            int found = -1;
            for (int i = 0; i < self; i++)
                if (stages[i].name && strcmp(stages[i].name, name) == 0) found = i;
            if (found < 0)
                return aha_errf(err, AHA_EINVAL, "%s: no earlier stage named \"%s\"", path, name);
            aha_job_kind k = stages[found].kind;
            bool ok = what == AHA_REF_CHECKPOINT
                          ? (k == AHA_JOB_SFT || k == AHA_JOB_GRPO || k == AHA_JOB_DISTILL)
                          : (k == AHA_JOB_GENERATE || k == AHA_JOB_MIX);
            if (!ok)
                return aha_errf(err, AHA_EINVAL, "%s: stage \"%s\" (%s) produces no %s", path,
                                name, kind_names[k],
                                what == AHA_REF_CHECKPOINT ? "checkpoint" : "dataset");
        }
    }
    return AHA_OK;
}

aha_status aha_job_spec_subst(const char *s, aha_job_ref_fn fn, void *ctx, char **out, aha_err *err)
{
    *out = NULL;
    size_t cap = strlen(s) + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) return aha_errf(err, AHA_ENOMEM, "out of memory");
    const char *p = s;
    while (*p) {
        char name[80];
        aha_job_ref_kind what;
        size_t len;
        const char *piece = p;
        size_t plen = 1;
        char *repl = NULL;
        if (p[0] == '$' && p[1] == '{') {
            if (!parse_ref(p, name, sizeof name, &what, &len)) {
                free(buf);
                return aha_errf(err, AHA_EINVAL, "bad reference \"%.60s\"", p);
            }
            aha_status st = fn(ctx, name, what, &repl, err);
            if (st != AHA_OK) {
                free(buf);
                return st;
            }
            piece = repl;
            plen = strlen(repl);
            p += len;
        } else {
            p++;
        }
        if (n + plen + 1 > cap) {
            size_t nc = (n + plen + 1) * 2;
            char *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                free(repl);
                return aha_errf(err, AHA_ENOMEM, "out of memory");
            }
            buf = nb;
            cap = nc;
        }
        memcpy(buf + n, piece, plen);
        n += plen;
        free(repl);
    }
    buf[n] = 0;
    *out = buf;
    return AHA_OK;
}

static aha_status subst_in_place(char **s, aha_job_ref_fn fn, void *ctx, const char *what,
                                 aha_err *err)
{
    if (!*s) return AHA_OK;
    char *n;
    aha_status st = aha_job_spec_subst(*s, fn, ctx, &n, err);
    if (st != AHA_OK) return aha_err_prefix(err, st, "%s", what);
    free(*s);
    *s = n;
    return AHA_OK;
}

aha_status aha_job_spec_resolve(aha_job_spec *s, aha_job_ref_fn fn, void *ctx, aha_err *err)
{
    AHA_TRY(subst_in_place(&s->model, fn, ctx, "model", err));
    AHA_TRY(subst_in_place(&s->ref_model, fn, ctx, "ref_model", err));
    AHA_TRY(subst_in_place(&s->tokenizer, fn, ctx, "tokenizer", err));
    AHA_TRY(subst_in_place(&s->checkpoint, fn, ctx, "checkpoint", err));
    AHA_TRY(subst_in_place(&s->student_config, fn, ctx, "student_config", err));
    AHA_TRY(subst_in_place(&s->student_init, fn, ctx, "student_init", err));
    AHA_TRY(subst_in_place(&s->teacher, fn, ctx, "teacher", err));
    AHA_TRY(subst_in_place(&s->output, fn, ctx, "output", err));
    if (s->has_dataset) AHA_TRY(subst_in_place(&s->dataset.path, fn, ctx, "dataset.path", err));
    for (int i = 0; i < s->eval.n_datasets; i++)
        AHA_TRY(subst_in_place(&s->eval.datasets[i].path, fn, ctx, "eval dataset path", err));
    for (int i = 0; i < s->n_sources; i++)
        AHA_TRY(subst_in_place(&s->sources[i].path, fn, ctx, "sources path", err));
    return AHA_OK;
}

/* ---- the job object ------------------------------------------------------------------ */

static aha_status parse_job(json_t *obj, const char *path, const aha_job_spec *parent,
                            aha_job_spec *s, aha_err *err);

static aha_status parse_pipeline(rd *r, aha_job_spec *s)
{
    json_t *v = rd_get(r, "stages");
    if (!v) return rd_fail(r, "stages", "required");
    size_t n;
    AHA_TRY(rd_check_list(r, "stages", v, MAX_STAGES, "stages", &n));
    s->stages = calloc(n, sizeof *s->stages);
    if (!s->stages) return aha_errf(r->err, AHA_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char p[MAX_PATH_LEN];
        pathf(p, sizeof p, "%s.stages[%zu]", r->path, i);
        json_t *e = json_array_get(v, i);
        s->n_stages = (int)i + 1;
        AHA_TRY(parse_job(e, p, s, &s->stages[i], r->err));
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->stages[j].name, s->stages[i].name) == 0)
                return aha_errf(r->err, AHA_EINVAL, "%s.name: \"%s\" is already the name of "
                                "stages[%zu]", p, s->stages[i].name, j);
        AHA_TRY(check_refs(e, p, s->stages, (int)i, 0, r->err));
    }
    return AHA_OK;
}

static aha_status parse_job(json_t *obj, const char *path, const aha_job_spec *parent,
                            aha_job_spec *s, aha_err *err)
{
    if (!json_is_object(obj))
        return aha_errf(err, AHA_EINVAL, "%s: must be an object, got %s", path, aha__json_type_word(obj));
    rd r;
    rd_init(&r, obj, path, err);
    json_t *k = rd_get(&r, "kind");
    if (!k) return rd_fail(&r, "kind", "required (grpo, sft, distill, eval, generate, mix, pipeline)");
    int kind = 0; /* set by rd_enum; gcc -O3 cannot see it */
    AHA_TRY(rd_enum(&r, "kind", kind_names, AHA_JOB_KIND_COUNT, 0, &kind));
    s->kind = (aha_job_kind)kind;
    if (parent && s->kind == AHA_JOB_PIPELINE)
        return rd_fail(&r, "kind", "a pipeline stage cannot be a pipeline");
    AHA_TRY(rd_str(&r, "name", NULL, parent != NULL, 64, &s->name));
    if (s->name && parent && !stage_name_ok(s->name))
        return rd_fail(&r, "name", "\"%s\": use letters, digits, _ and - only", s->name);
    int64_t seed;
    AHA_TRY(rd_int(&r, "seed", parent ? (int64_t)parent->seed : 42, 0, INT64_MAX, &seed));
    s->seed = (uint64_t)seed;
    if (s->kind != AHA_JOB_MIX) {
        AHA_TRY(parse_services(&r, parent ? &parent->services : NULL, &s->services));
        AHA_TRY(parse_template(&r, parent ? parent->template_text : NULL, &s->template_text));
    }
    switch (s->kind) {
    case AHA_JOB_GRPO: AHA_TRY(parse_grpo(&r, s)); break;
    case AHA_JOB_SFT:
    case AHA_JOB_DISTILL: AHA_TRY(parse_sft(&r, s)); break;
    case AHA_JOB_EVAL: AHA_TRY(parse_eval_kind(&r, s)); break;
    case AHA_JOB_GENERATE: AHA_TRY(parse_generate(&r, s)); break;
    case AHA_JOB_MIX: AHA_TRY(parse_mix(&r, s)); break;
    case AHA_JOB_PIPELINE: AHA_TRY(parse_pipeline(&r, s)); break;
    default: AHA_ASSERT(0);
    }
    char word[32];
    snprintf(word, sizeof word, "%s jobs", kind_names[s->kind]);
    AHA_TRY(rd_done(&r, word));
    if (!parent) {
        /* outside stages nothing may reference a stage */
        const char *key;
        json_t *x;
        json_object_foreach(obj, key, x) {
            if (s->kind == AHA_JOB_PIPELINE && strcmp(key, "stages") == 0) continue;
            char p[MAX_PATH_LEN];
            pathf(p, sizeof p, "%s.%.64s", path, key);
            AHA_TRY(check_refs(x, p, NULL, 0, 1, err));
        }
    }
    return AHA_OK;
}

void aha_job_spec_free(aha_job_spec *s)
{
    if (!s) return;
    free(s->name);
    services_free(&s->services);
    free(s->template_text);
    free(s->model);
    free(s->ref_model);
    free(s->tokenizer);
    free(s->checkpoint);
    free(s->student_config);
    free(s->student_init);
    free(s->teacher);
    dataset_free(&s->dataset);
    eval_free(&s->eval);
    free(s->language);
    free_strv(s->reflection_words, s->n_reflection_words);
    free(s->output);
    for (int i = 0; i < s->n_sources; i++) free(s->sources[i].path);
    free(s->sources);
    for (int i = 0; i < s->n_stages; i++) aha_job_spec_free(&s->stages[i]);
    free(s->stages);
    memset(s, 0, sizeof *s);
}

aha_status aha_job_spec_parse(const char *json, size_t len, aha_job_spec *spec, aha_err *err)
{
    memset(spec, 0, sizeof *spec);
    if (!json || len == 0) return aha_errf(err, AHA_EINVAL, "spec: empty");
    if (len > AHA_JOB_SPEC_MAX_BYTES)
        return aha_errf(err, AHA_ELIMIT, "spec: %zu bytes, at most %u", len, AHA_JOB_SPEC_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return aha_errf(err, AHA_EINVAL, "spec: invalid JSON at line %d column %d: %s", jerr.line,
                        jerr.column, jerr.text);
    aha_status st = parse_job(root, "spec", NULL, spec, err);
    json_decref(root);
    if (st != AHA_OK) aha_job_spec_free(spec);
    return st;
}

int64_t aha_job_total_steps(const aha_job_spec *s, int64_t n_examples)
{
    switch (s->kind) {
    case AHA_JOB_GRPO: return s->steps;
    case AHA_JOB_SFT:
    case AHA_JOB_DISTILL:
        if (s->steps > 0) return s->steps;
        if (n_examples <= 0 || s->batch_size <= 0) return 0;
        return (int64_t)s->epochs * ((n_examples + s->batch_size - 1) / s->batch_size);
    default: return 0;
    }
}

/* ---- normalised output --------------------------------------------------------------- */

/* json_object_set_new that turns allocation failure into a flag. */
typedef struct {
    bool oom;
    bool need17; /* some real needs 17 digits to read back exactly */
} jb;

/* A real that prints with 15 digits when that reads back exactly ("0.2", not
 * "0.20000000000000001"); otherwise the whole document uses 17. */
static json_t *jreal(jb *b, double v)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) b->need17 = true;
    return json_real(v);
}

static void put(jb *b, json_t *o, const char *k, json_t *v)
{
    if (!v || json_object_set_new(o, k, v) != 0) b->oom = true;
}

static void put_str(jb *b, json_t *o, const char *k, const char *v)
{
    if (v) put(b, o, k, json_string(v));
}

static json_t *strv_json(jb *b, char **v, int n)
{
    json_t *a = json_array();
    if (!a) {
        b->oom = true;
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (json_array_append_new(a, json_string(v[i])) != 0) b->oom = true;
    return a;
}

static json_t *dataset_json(jb *b, const aha_dataset_spec *d)
{
    json_t *o = json_object(), *f = json_object();
    if (!o || !f) {
        b->oom = true;
        json_decref(o);
        json_decref(f);
        return NULL;
    }
    put_str(b, o, "path", d->path);
    put_str(b, o, "name", d->name);
    put_str(b, o, "format", format_names[d->format]);
    put_str(b, f, "prompt", d->prompt_field);
    put_str(b, f, "answer", d->answer_field);
    put_str(b, f, "completion", d->completion_field);
    put_str(b, f, "lang", d->lang_field);
    put_str(b, f, "id", d->id_field);
    put(b, o, "fields", f);
    put(b, o, "skip_bad_lines", json_boolean(d->skip_bad_lines));
    put(b, o, "limit", json_integer(d->limit));
    return o;
}

static json_t *datasets_json(jb *b, const aha_eval_spec *e)
{
    json_t *a = json_array();
    if (!a) {
        b->oom = true;
        return NULL;
    }
    for (int i = 0; i < e->n_datasets; i++)
        if (json_array_append_new(a, dataset_json(b, &e->datasets[i])) != 0) b->oom = true;
    return a;
}

static void sampling_json(jb *b, json_t *o, const aha_sampling_spec *s)
{
    put(b, o, "temperature", jreal(b, s->temperature));
    put(b, o, "top_p", jreal(b, s->top_p));
    put(b, o, "top_k", json_integer(s->top_k));
    put(b, o, "max_new_tokens", json_integer(s->max_new_tokens));
}

static void optim_json(jb *b, json_t *o, const aha_optim_spec *p)
{
    put(b, o, "lr", jreal(b, p->lr));
    put(b, o, "warmup_steps", json_integer(p->warmup_steps));
    put_str(b, o, "schedule", sched_names[p->schedule]);
    put(b, o, "min_lr_ratio", jreal(b, p->min_lr_ratio));
    put(b, o, "weight_decay", jreal(b, p->weight_decay));
    put(b, o, "grad_clip", jreal(b, p->grad_clip));
    put(b, o, "adam_beta1", jreal(b, p->adam_beta1));
    put(b, o, "adam_beta2", jreal(b, p->adam_beta2));
    put(b, o, "adam_eps", jreal(b, p->adam_eps));
}

static void train_eval_json(jb *b, json_t *o, const aha_job_spec *s)
{
    if (!s->has_eval) return;
    json_t *e = json_object();
    if (!e) {
        b->oom = true;
        return;
    }
    put(b, e, "datasets", datasets_json(b, &s->eval));
    put(b, e, "every", json_integer(s->eval.every));
    put(b, e, "k", json_integer(s->eval.k));
    sampling_json(b, e, &s->eval.sampling);
    put(b, o, "eval", e);
}

static json_t *job_json(jb *b, const aha_job_spec *s)
{
    json_t *o = json_object();
    if (!o) {
        b->oom = true;
        return NULL;
    }
    put_str(b, o, "kind", kind_names[s->kind]);
    put_str(b, o, "name", s->name);
    put(b, o, "seed", json_integer((json_int_t)s->seed));
    if (s->kind != AHA_JOB_MIX) {
        const aha_services_spec *sv = &s->services;
        if (sv->n_rollout || sv->reward || sv->refpolicy) {
            json_t *so = json_object();
            if (!so) b->oom = true;
            else {
                if (sv->n_rollout) put(b, so, "rollout", strv_json(b, sv->rollout, sv->n_rollout));
                put_str(b, so, "reward", sv->reward);
                put_str(b, so, "refpolicy", sv->refpolicy);
                put(b, o, "services", so);
            }
        }
        put_str(b, o, "template", s->template_text);
    }
    switch (s->kind) {
    case AHA_JOB_GRPO: {
        put_str(b, o, "model", s->model);
        put_str(b, o, "ref_model", s->ref_model);
        put_str(b, o, "tokenizer", s->tokenizer);
        put(b, o, "dataset", dataset_json(b, &s->dataset));
        put(b, o, "G", json_integer(s->group_size));
        put(b, o, "questions_per_step", json_integer(s->questions_per_step));
        put(b, o, "steps", json_integer(s->steps));
        put(b, o, "mu", json_integer(s->mu));
        put(b, o, "epsilon", jreal(b, s->loss.epsilon));
        put(b, o, "beta", jreal(b, s->loss.beta));
        json_t *l = json_object();
        if (!l) b->oom = true;
        else {
            put(b, l, "epsilon_low", jreal(b, s->loss.epsilon_low));
            put(b, l, "epsilon_high", jreal(b, s->loss.epsilon_high));
            put(b, l, "kl", json_boolean(s->loss.kl));
            put(b, l, "token_level", json_boolean(s->loss.token_level));
            put(b, l, "scale_std", json_boolean(s->loss.scale_std));
            put(b, l, "std_eps", jreal(b, s->loss.std_eps));
            put(b, o, "loss", l);
        }
        optim_json(b, o, &s->optim);
        put(b, o, "micro_batch", json_integer(s->micro_batch));
        put(b, o, "max_prompt_tokens", json_integer(s->max_prompt_tokens));
        sampling_json(b, o, &s->sampling);
        json_t *w = json_object();
        if (!w) b->oom = true;
        else {
            put(b, w, "accuracy", jreal(b, s->reward_weights.accuracy));
            put(b, w, "format", jreal(b, s->reward_weights.format));
            put(b, w, "language", jreal(b, s->reward_weights.language));
            put(b, o, "reward_weights", w);
        }
        put_str(b, o, "language", s->language);
        put(b, o, "reflection_words", strv_json(b, s->reflection_words, s->n_reflection_words));
        put(b, o, "checkpoint_every", json_integer(s->checkpoint_every));
        put(b, o, "ref_refresh_steps", json_integer(s->ref_refresh_steps));
        train_eval_json(b, o, s);
        break;
    }
    case AHA_JOB_SFT:
    case AHA_JOB_DISTILL:
        put_str(b, o, "model", s->model);
        put_str(b, o, "student_config", s->student_config);
        put_str(b, o, "student_init", s->student_init);
        put_str(b, o, "tokenizer", s->tokenizer);
        put_str(b, o, "teacher", s->teacher);
        put(b, o, "dataset", dataset_json(b, &s->dataset));
        put(b, o, "epochs", json_integer(s->epochs));
        put(b, o, "steps", json_integer(s->steps));
        put(b, o, "batch_size", json_integer(s->batch_size));
        put(b, o, "micro_batch", json_integer(s->micro_batch));
        put(b, o, "max_seq_len", json_integer(s->max_seq_len));
        optim_json(b, o, &s->optim);
        put(b, o, "checkpoint_every", json_integer(s->checkpoint_every));
        train_eval_json(b, o, s);
        break;
    case AHA_JOB_EVAL:
        put_str(b, o, "checkpoint", s->checkpoint);
        put_str(b, o, "tokenizer", s->tokenizer);
        put(b, o, "datasets", datasets_json(b, &s->eval));
        put(b, o, "k", json_integer(s->eval.k));
        sampling_json(b, o, &s->eval.sampling);
        put_str(b, o, "language", s->language);
        break;
    case AHA_JOB_GENERATE:
        put_str(b, o, "checkpoint", s->checkpoint);
        put_str(b, o, "tokenizer", s->tokenizer);
        put(b, o, "dataset", dataset_json(b, &s->dataset));
        put(b, o, "n", json_integer(s->n_samples));
        put(b, o, "keep_per_prompt", json_integer(s->keep_per_prompt));
        put(b, o, "min_language", jreal(b, s->min_language));
        put(b, o, "require_correct", json_boolean(s->require_correct));
        put(b, o, "require_format", json_boolean(s->require_format));
        sampling_json(b, o, &s->sampling);
        put_str(b, o, "language", s->language);
        put_str(b, o, "output", s->output);
        break;
    case AHA_JOB_MIX: {
        json_t *a = json_array();
        if (!a) b->oom = true;
        for (int i = 0; a && i < s->n_sources; i++) {
            json_t *so = json_object();
            if (!so) {
                b->oom = true;
                break;
            }
            put_str(b, so, "path", s->sources[i].path);
            if (s->total > 0) put(b, so, "proportion", jreal(b, s->sources[i].proportion));
            else if (s->sources[i].count >= 0) put(b, so, "count", json_integer(s->sources[i].count));
            if (json_array_append_new(a, so) != 0) b->oom = true;
        }
        put(b, o, "sources", a);
        put(b, o, "total", json_integer(s->total));
        put(b, o, "shuffle", json_boolean(s->shuffle));
        put(b, o, "skip_bad_lines", json_boolean(s->mix_skip_bad_lines));
        put_str(b, o, "output", s->output);
        break;
    }
    case AHA_JOB_PIPELINE: {
        json_t *a = json_array();
        if (!a) b->oom = true;
        for (int i = 0; a && i < s->n_stages; i++)
            if (json_array_append_new(a, job_json(b, &s->stages[i])) != 0) b->oom = true;
        put(b, o, "stages", a);
        break;
    }
    default: AHA_ASSERT(0);
    }
    return o;
}

aha_status aha_job_spec_to_json(const aha_job_spec *spec, char **out, aha_err *err)
{
    *out = NULL;
    jb b = {false, false};
    json_t *o = job_json(&b, spec);
    if (!b.oom && o)
        *out = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(b.need17 ? 17 : 15));
    json_decref(o);
    if (!*out) return aha_errf(err, AHA_ENOMEM, "spec: out of memory writing JSON");
    return AHA_OK;
}
