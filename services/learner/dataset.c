/* dataset.c: JSONL loaders, reference-answer extraction, shuffled data order with a
 * restorable cursor, and dataset mixing (dataset.h). */
#include "dataset.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"

/* Messages are cut at the buffer size; that only shortens them. */
static void msgf(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

/* ---- lines --------------------------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t len;
    int64_t lineno;
} line_span;

/* Next non-blank line of buf[*off..n); returns false at the end. Lines end in \n or \r\n. */
static bool next_line(const char *buf, size_t n, size_t *off, int64_t *lineno, line_span *out)
{
    while (*off < n) {
        const char *s = buf + *off;
        const char *nl = memchr(s, '\n', n - *off);
        size_t len = nl ? (size_t)(nl - s) : n - *off;
        *off += len + (nl ? 1 : 0);
        (*lineno)++;
        if (len && s[len - 1] == '\r') len--;
        size_t i = 0;
        while (i < len && isspace((unsigned char)s[i])) i++;
        if (i == len) continue;
        out->p = s;
        out->len = len;
        out->lineno = *lineno;
        return true;
    }
    return false;
}

/* ---- answers ------------------------------------------------------------------------- */

static aha_status dup_trim(const char *s, size_t n, char **out, aha_err *err)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1])) n--;
    *out = strndup(s, n);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
}

aha_status aha_gsm8k_answer(const char *sol, char **out, aha_err *err)
{
    *out = NULL;
    const char *last = NULL;
    for (const char *p = strstr(sol, "####"); p; p = strstr(p + 4, "####")) last = p;
    if (!last) return aha_errf(err, AHA_EFORMAT, "no \"####\" answer marker in the answer text");
    AHA_TRY(dup_trim(last + 4, strlen(last + 4), out, err));
    if (!**out) {
        free(*out);
        *out = NULL;
        return aha_errf(err, AHA_EFORMAT, "empty answer after \"####\"");
    }
    return AHA_OK;
}

/* The argument of the \boxed at s (just after the command name), or false. */
static bool boxed_arg(const char *s, const char **arg, size_t *len)
{
    if (*s == '{') {
        int depth = 0;
        for (const char *p = s; *p; p++) {
            if (*p == '\\' && (p[1] == '{' || p[1] == '}')) {
                p++; /* \{ and \} are literal braces */
                continue;
            }
            if (*p == '{') depth++;
            else if (*p == '}' && --depth == 0) {
                *arg = s + 1;
                *len = (size_t)(p - s - 1);
                return true;
            }
        }
        return false;
    }
    if (*s == ' ') {
        while (*s == ' ') s++;
        const char *e = s;
        while (*e && !isspace((unsigned char)*e) && *e != '$') e++;
        if (e == s) return false;
        *arg = s;
        *len = (size_t)(e - s);
        return true;
    }
    return false;
}

aha_status aha_math_boxed_answer(const char *sol, char **out, aha_err *err)
{
    *out = NULL;
    const char *best = NULL;
    size_t best_len = 0;
    static const char *const cmds[] = {"\\boxed", "\\fbox"};
    const char *best_at = NULL;
    for (size_t c = 0; c < AHA_ARRAY_LEN(cmds); c++) {
        size_t cl = strlen(cmds[c]);
        for (const char *p = strstr(sol, cmds[c]); p; p = strstr(p + cl, cmds[c])) {
            const char *arg;
            size_t len;
            if (boxed_arg(p + cl, &arg, &len) && (!best_at || p > best_at)) {
                best_at = p;
                best = arg;
                best_len = len;
            }
        }
    }
    if (!best) return aha_errf(err, AHA_EFORMAT, "no complete \\boxed{} answer in the solution");
    AHA_TRY(dup_trim(best, best_len, out, err));
    if (!**out) {
        free(*out);
        *out = NULL;
        return aha_errf(err, AHA_EFORMAT, "empty \\boxed{} answer in the solution");
    }
    return AHA_OK;
}

/* ---- one line ------------------------------------------------------------------------ */

/* A string field (numbers allowed when allow_num, written as JSON writes them). */
static aha_status get_text(json_t *o, const char *key, bool required, bool allow_num,
                           bool allow_empty, char **out, aha_err *err)
{
    *out = NULL;
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return required ? aha_errf(err, AHA_EFORMAT, "missing field \"%.64s\"", key) : AHA_OK;
    if (json_is_string(v)) {
        if (!allow_empty && json_string_length(v) == 0)
            return aha_errf(err, AHA_EFORMAT, "field \"%.64s\" is empty", key);
        *out = strndup(json_string_value(v), json_string_length(v));
    } else if (allow_num && json_is_integer(v)) {
        if (asprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0) *out = NULL;
    } else if (allow_num && json_is_real(v)) {
        *out = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    } else {
        return aha_errf(err, AHA_EFORMAT, "field \"%.64s\" must be a string%s, got %s", key,
                        allow_num ? " or a number" : "", aha__json_type_word(v));
    }
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
}

void aha_example_free(aha_example *ex)
{
    if (!ex) return;
    free(ex->id);
    free(ex->prompt);
    free(ex->answer);
    free(ex->completion);
    free(ex->lang);
    memset(ex, 0, sizeof *ex);
}

static aha_status parse_obj(const aha_dataset_spec *spec, json_t *o, int64_t lineno,
                            aha_example *ex, aha_err *err)
{
    const char *pf = spec->prompt_field;
    if (spec->prompt_fallback_question && !json_object_get(o, pf) &&
        json_object_get(o, "question"))
        pf = "question";
    AHA_TRY(get_text(o, pf, true, false, false, &ex->prompt, err));
    if (spec->format == AHA_DS_SFT) {
        AHA_TRY(get_text(o, spec->completion_field, true, false, false, &ex->completion, err));
    } else {
        char *raw;
        AHA_TRY(get_text(o, spec->answer_field, true, spec->format == AHA_DS_GENERIC, false,
                         &raw, err));
        aha_status st = AHA_OK;
        if (spec->format == AHA_DS_GSM8K) st = aha_gsm8k_answer(raw, &ex->answer, err);
        else if (spec->format == AHA_DS_MATH) st = aha_math_boxed_answer(raw, &ex->answer, err);
        else {
            ex->answer = raw;
            raw = NULL;
        }
        free(raw);
        if (st != AHA_OK) return aha_err_prefix(err, st, "field \"%.64s\"", spec->answer_field);
    }
    AHA_TRY(get_text(o, spec->lang_field, false, false, true, &ex->lang, err));
    if (ex->lang && !ex->lang[0]) {
        free(ex->lang);
        ex->lang = NULL;
    }
    AHA_TRY(get_text(o, spec->id_field, false, true, false, &ex->id, err));
    if (!ex->id) {
        const char *name = spec->name ? spec->name : "line";
        if (asprintf(&ex->id, "%s:%" PRId64, name, lineno) < 0) {
            ex->id = NULL;
            return aha_errf(err, AHA_ENOMEM, "out of memory");
        }
    }
    ex->line = lineno;
    return AHA_OK;
}

aha_status aha_dataset_parse_line(const aha_dataset_spec *spec, const char *line, size_t len,
                                  int64_t lineno, aha_example *ex, aha_err *err)
{
    memset(ex, 0, sizeof *ex);
    if (len > AHA_DATASET_MAX_LINE)
        return aha_errf(err, AHA_EFORMAT, "line of %zu bytes (at most %zu)", len,
                        (size_t)AHA_DATASET_MAX_LINE);
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    if (!o) return aha_errf(err, AHA_EFORMAT, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    aha_status st;
    if (!json_is_object(o)) st = aha_errf(err, AHA_EFORMAT, "not a JSON object (%s)", aha__json_type_word(o));
    else st = parse_obj(spec, o, lineno, ex, err);
    json_decref(o);
    if (st != AHA_OK) aha_example_free(ex);
    return st;
}

void aha_dataset_free(aha_dataset *ds)
{
    if (!ds) return;
    for (int64_t i = 0; i < ds->n; i++) aha_example_free(&ds->items[i]);
    free(ds->items);
    memset(ds, 0, sizeof *ds);
}

aha_status aha_dataset_load(const aha_dataset_spec *spec, aha_dataset *out, aha_err *err)
{
    memset(out, 0, sizeof *out);
    char *buf;
    size_t n;
    AHA_TRY(aha_read_file(spec->path, AHA_DATASET_MAX_BYTES, &buf, &n, err));
    size_t off = 0, cap = 0;
    int64_t lineno = 0;
    line_span ln;
    aha_status st = AHA_OK;
    while (next_line(buf, n, &off, &lineno, &ln)) {
        if (spec->limit > 0 && out->n >= spec->limit) break;
        aha_example ex;
        aha_err lerr = {0};
        st = aha_dataset_parse_line(spec, ln.p, ln.len, ln.lineno, &ex, &lerr);
        if (st == AHA_ENOMEM) {
            aha_errf(err, st, "%s:%" PRId64 ": out of memory", spec->path, ln.lineno);
            break;
        }
        if (st != AHA_OK) {
            if (!spec->skip_bad_lines) {
                aha_errf(err, st, "%s:%" PRId64 ": %s", spec->path, ln.lineno, lerr.msg);
                break;
            }
            if (out->skipped++ == 0)
                msgf(out->first_skip, sizeof out->first_skip, "%s:%" PRId64 ": %s",
                         spec->path, ln.lineno, lerr.msg);
            st = AHA_OK;
            continue;
        }
        if ((size_t)out->n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            aha_example *ni = realloc(out->items, nc * sizeof *ni);
            if (!ni) {
                aha_example_free(&ex);
                st = aha_errf(err, AHA_ENOMEM, "%s: out of memory", spec->path);
                break;
            }
            out->items = ni;
            cap = nc;
        }
        out->items[out->n++] = ex;
    }
    free(buf);
    if (st == AHA_OK && out->n == 0)
        st = aha_errf(err, AHA_EFORMAT, "%s: no examples (%" PRId64 " malformed lines skipped%s%s)",
                      spec->path, out->skipped, out->skipped ? "; first: " : "", out->first_skip);
    if (st != AHA_OK) aha_dataset_free(out);
    return st;
}

/* ---- order --------------------------------------------------------------------------- */

static void make_perm(aha_data_order *o)
{
    for (int64_t i = 0; i < o->c.n; i++) o->perm[i] = i;
    if (!o->c.shuffle) return;
    aha_rng rng;
    aha_rng_seed(&rng, o->c.seed, (uint64_t)o->c.epoch);
    for (int64_t i = o->c.n - 1; i > 0; i--) {
        int64_t j = (int64_t)aha_rng_below(&rng, (uint64_t)i + 1);
        int64_t t = o->perm[i];
        o->perm[i] = o->perm[j];
        o->perm[j] = t;
    }
}

aha_status aha_data_order_init(aha_data_order *o, int64_t n, uint64_t seed, bool shuffle,
                               aha_err *err)
{
    aha_data_cursor c = {seed, n, 0, 0, shuffle};
    return aha_data_order_restore(o, &c, n, err);
}

aha_status aha_data_order_restore(aha_data_order *o, const aha_data_cursor *c, int64_t n,
                                  aha_err *err)
{
    memset(o, 0, sizeof *o);
    if (n <= 0) return aha_errf(err, AHA_EINVAL, "data order: empty dataset");
    if (c->n != n)
        return aha_errf(err, AHA_EPRECOND,
                        "data cursor: stored for %" PRId64 " examples, the dataset has %" PRId64,
                        c->n, n);
    if (c->epoch < 0 || c->pos < 0 || c->pos > n)
        return aha_errf(err, AHA_EFORMAT, "data cursor: epoch %" PRId64 " pos %" PRId64 " out of range",
                        c->epoch, c->pos);
    o->perm = malloc((size_t)n * sizeof *o->perm);
    if (!o->perm) return aha_errf(err, AHA_ENOMEM, "data order: out of memory");
    o->c = *c;
    make_perm(o);
    return AHA_OK;
}

int64_t aha_data_order_next(aha_data_order *o)
{
    AHA_ASSERT(o->perm);
    if (o->c.pos >= o->c.n) {
        o->c.epoch++;
        o->c.pos = 0;
        make_perm(o);
    }
    return o->perm[o->c.pos++];
}

void aha_data_order_free(aha_data_order *o)
{
    free(o->perm);
    memset(o, 0, sizeof *o);
}

aha_status aha_data_cursor_to_json(const aha_data_cursor *c, char **out, aha_err *err)
{
    char seed[24];
    snprintf(seed, sizeof seed, "%" PRIu64, c->seed);
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:b}", "seed", seed, "n", (json_int_t)c->n,
                          "epoch", (json_int_t)c->epoch, "pos", (json_int_t)c->pos, "shuffle",
                          c->shuffle);
    *out = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "data cursor: out of memory");
}

aha_status aha_data_cursor_from_json(const char *json, size_t len, aha_data_cursor *c, aha_err *err)
{
    json_error_t jerr;
    json_t *o = json_loadb(json, len, 0, &jerr);
    if (!o) return aha_errf(err, AHA_EFORMAT, "data cursor: invalid JSON: %s", jerr.text);
    const char *seed;
    json_int_t n, epoch, pos;
    int shuffle;
    aha_status st = AHA_OK;
    if (json_unpack_ex(o, &jerr, JSON_STRICT, "{s:s, s:I, s:I, s:I, s:b}", "seed", &seed, "n", &n,
                       "epoch", &epoch, "pos", &pos, "shuffle", &shuffle) != 0) {
        st = aha_errf(err, AHA_EFORMAT, "data cursor: %s", jerr.text);
    } else {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(seed, &end, 10);
        if (!*seed || *end || errno || seed[0] == '-')
            st = aha_errf(err, AHA_EFORMAT, "data cursor: bad seed \"%.32s\"", seed);
        else *c = (aha_data_cursor){(uint64_t)s, n, epoch, pos, shuffle != 0};
    }
    json_decref(o);
    return st;
}

/* ---- mixing -------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    line_span *lines;
    int64_t n;
} src_lines;

static aha_status read_source(const char *path, bool skip_bad, src_lines *s, int64_t *skipped,
                              aha_err *err)
{
    memset(s, 0, sizeof *s);
    size_t n;
    AHA_TRY(aha_read_file(path, AHA_DATASET_MAX_BYTES, &s->buf, &n, err));
    size_t off = 0, cap = 0;
    int64_t lineno = 0;
    line_span ln;
    while (next_line(s->buf, n, &off, &lineno, &ln)) {
        json_error_t jerr;
        json_t *o = ln.len <= AHA_DATASET_MAX_LINE ? json_loadb(ln.p, ln.len, 0, &jerr) : NULL;
        bool ok = o && json_is_object(o);
        json_decref(o);
        if (!ok) {
            if (skip_bad) {
                (*skipped)++;
                continue;
            }
            return aha_errf(err, AHA_EFORMAT, "%s:%" PRId64 ": not a JSON object%s%s", path,
                            ln.lineno, o ? "" : ": ", o ? "" : jerr.text);
        }
        if ((size_t)s->n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            line_span *nl = realloc(s->lines, nc * sizeof *nl);
            if (!nl) return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
            s->lines = nl;
            cap = nc;
        }
        s->lines[s->n++] = ln;
    }
    return AHA_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* want lines of src (n of them): whole copies, then a seeded sample of the rest kept in
 * file order. Appends line indices to sel. */
static void sample_lines(int64_t n, int64_t want, aha_rng *rng, int64_t *sel, int64_t *n_sel,
                         int64_t *scratch)
{
    for (int64_t rep = 0; rep < want / n; rep++)
        for (int64_t i = 0; i < n; i++) sel[(*n_sel)++] = i;
    int64_t rem = want % n;
    if (!rem) return;
    for (int64_t i = 0; i < n; i++) scratch[i] = i;
    for (int64_t i = 0; i < rem; i++) { /* partial Fisher-Yates */
        int64_t j = i + (int64_t)aha_rng_below(rng, (uint64_t)(n - i));
        int64_t t = scratch[i];
        scratch[i] = scratch[j];
        scratch[j] = t;
    }
    qsort(scratch, (size_t)rem, sizeof *scratch, cmp_i64);
    for (int64_t i = 0; i < rem; i++) sel[(*n_sel)++] = scratch[i];
}

aha_status aha_mix_run(const aha_job_spec *spec, const char *output_path, aha_mix_report *rep,
                       aha_err *err)
{
    AHA_ASSERT(spec->kind == AHA_JOB_MIX && spec->n_sources >= 1 && spec->n_sources <= 64);
    memset(rep, 0, sizeof *rep);
    int ns = spec->n_sources;
    rep->n_sources = ns;
    src_lines src[64];
    memset(src, 0, sizeof src);
    int64_t want[64];
    aha_status st = AHA_OK;
    int64_t *sel = NULL, *scratch = NULL, *src_of = NULL;
    char *outbuf = NULL;
    for (int i = 0; i < ns && st == AHA_OK; i++) {
        st = read_source(spec->sources[i].path, spec->mix_skip_bad_lines, &src[i],
                         &rep->skipped[i], err);
        rep->available[i] = src[i].n;
    }
    if (st != AHA_OK) goto done;

    int64_t total = 0;
    if (spec->total > 0) {
        double psum = 0;
        for (int i = 0; i < ns; i++) psum += spec->sources[i].proportion;
        double frac[64];
        for (int i = 0; i < ns; i++) {
            double exact = (double)spec->total * spec->sources[i].proportion / psum;
            want[i] = (int64_t)exact;
            frac[i] = exact - (double)want[i];
            total += want[i];
        }
        /* largest remainder; ties go to the earlier source */
        while (total < spec->total) {
            int best = 0;
            for (int i = 1; i < ns; i++)
                if (frac[i] > frac[best]) best = i;
            want[best]++;
            frac[best] = -1;
            total++;
        }
    } else {
        for (int i = 0; i < ns; i++) {
            want[i] = spec->sources[i].count < 0 ? src[i].n : spec->sources[i].count;
            total += want[i];
        }
    }
    int64_t max_n = 1;
    for (int i = 0; i < ns; i++) {
        if (want[i] > 0 && src[i].n == 0) {
            st = aha_errf(err, AHA_EFORMAT, "%s: no valid lines to take %" PRId64 " from",
                          spec->sources[i].path, want[i]);
            goto done;
        }
        if (src[i].n > max_n) max_n = src[i].n;
    }
    sel = malloc((size_t)(total ? total : 1) * sizeof *sel);
    src_of = malloc((size_t)(total ? total : 1) * sizeof *src_of);
    scratch = malloc((size_t)max_n * sizeof *scratch);
    if (!sel || !src_of || !scratch) {
        st = aha_errf(err, AHA_ENOMEM, "mix: out of memory");
        goto done;
    }
    int64_t n_sel = 0;
    for (int i = 0; i < ns; i++) {
        aha_rng rng;
        aha_rng_seed(&rng, spec->seed, 1000 + (uint64_t)i);
        int64_t start = n_sel;
        if (want[i] > 0) sample_lines(src[i].n, want[i], &rng, sel, &n_sel, scratch);
        for (int64_t j = start; j < n_sel; j++) src_of[j] = i;
        rep->taken[i] = n_sel - start;
    }
    if (spec->shuffle) {
        aha_rng rng;
        aha_rng_seed(&rng, spec->seed, 999);
        for (int64_t i = n_sel - 1; i > 0; i--) {
            int64_t j = (int64_t)aha_rng_below(&rng, (uint64_t)i + 1);
            int64_t t = sel[i], u = src_of[i];
            sel[i] = sel[j];
            src_of[i] = src_of[j];
            sel[j] = t;
            src_of[j] = u;
        }
    }
    size_t bytes = 0;
    for (int64_t i = 0; i < n_sel; i++) bytes += src[src_of[i]].lines[sel[i]].len + 1;
    outbuf = malloc(bytes ? bytes : 1);
    if (!outbuf) {
        st = aha_errf(err, AHA_ENOMEM, "mix: out of memory");
        goto done;
    }
    size_t o = 0;
    for (int64_t i = 0; i < n_sel; i++) {
        const line_span *l = &src[src_of[i]].lines[sel[i]];
        memcpy(outbuf + o, l->p, l->len);
        o += l->len;
        outbuf[o++] = '\n';
    }
    st = aha_write_file_atomic(output_path, outbuf, o, err);
    rep->total = n_sel;
done:
    for (int i = 0; i < ns; i++) {
        free(src[i].buf);
        free(src[i].lines);
    }
    free(sel);
    free(src_of);
    free(scratch);
    free(outbuf);
    return st;
}
