/* report.c: eval records → markdown table (report.h). Cell text from the records (stage and
 * dataset names) has '|' and newlines replaced so a name cannot break the table. */
#include "report.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} mbuf;

static void mb_printf(mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mb_printf(mbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap + (size_t)n + 1) * 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

static void mb_cell(mbuf *b, const char *t)
{
    if (!t || !*t) {
        mb_printf(b, " - |");
        return;
    }
    mb_printf(b, " ");
    for (; *t; t++) mb_printf(b, "%c", *t == '|' ? '/' : (*t == '\n' || *t == '\r') ? ' ' : *t);
    mb_printf(b, " |");
}

static void mb_pct(mbuf *b, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (json_is_number(v)) mb_printf(b, " %.1f |", 100.0 * json_number_value(v));
    else mb_printf(b, " - |");
}

static void mb_num(mbuf *b, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (json_is_number(v)) mb_printf(b, " %.1f |", json_number_value(v));
    else mb_printf(b, " - |");
}

/* Rejection-sampling records ({"type":"generate"}) as a second table. */
static void generate_table(mbuf *b, const aha_report_input *in, int n_in)
{
    static const char *const reasons[] = {"truncated", "incorrect", "format", "language",
                                          "duplicate", "over_limit", "error"};
    int rows = 0;
    for (int f = 0; f < n_in; f++) {
        size_t off = 0;
        while (off < in[f].len) {
            const char *p = in[f].text + off;
            const char *nl = memchr(p, '\n', in[f].len - off);
            size_t ll = nl ? (size_t)(nl - p) : in[f].len - off;
            off += ll + (nl ? 1 : 0);
            json_t *o = json_loadb(p, ll, 0, NULL);
            const char *type = json_string_value(json_object_get(o, "type"));
            if (!json_is_object(o) || !type || strcmp(type, "generate") != 0) {
                json_decref(o);
                continue;
            }
            if (rows++ == 0) {
                mb_printf(b, "\n### Rejection sampling\n\n| stage | prompts | samples | kept | "
                             "accepted | ");
                for (size_t i = 0; i < AHA_ARRAY_LEN(reasons); i++) mb_printf(b, "%s | ", reasons[i]);
                mb_printf(b, "\n|---|---:|---:|---:|---:|");
                for (size_t i = 0; i < AHA_ARRAY_LEN(reasons); i++) mb_printf(b, "---:|");
                mb_printf(b, "\n");
            }
            mb_printf(b, "|");
            const char *stage = json_string_value(json_object_get(o, "stage"));
            mb_cell(b, stage ? stage : in[f].stage);
            static const char *const counts[] = {"prompts", "samples", "kept"};
            for (size_t i = 0; i < AHA_ARRAY_LEN(counts); i++) {
                json_t *v = json_object_get(o, counts[i]);
                if (json_is_integer(v)) mb_printf(b, " %lld |", (long long)json_integer_value(v));
                else mb_printf(b, " - |");
            }
            mb_pct(b, o, "acceptance_rate");
            json_t *rej = json_object_get(o, "rejected");
            for (size_t i = 0; i < AHA_ARRAY_LEN(reasons); i++) {
                json_t *v = json_object_get(rej, reasons[i]);
                if (json_is_integer(v)) mb_printf(b, " %lld |", (long long)json_integer_value(v));
                else mb_printf(b, " - |");
            }
            mb_printf(b, "\n");
            json_decref(o);
        }
    }
}

aha_status aha_report_markdown(const aha_report_input *in, int n_in, const char *title, char **md,
                               aha_err *err)
{
    *md = NULL;
    mbuf b = {0};
    mb_printf(&b, "## %s\n\n", title && *title ? title : "Evaluation");
    int rows = 0;
    for (int f = 0; f < n_in; f++) {
        size_t off = 0;
        while (off < in[f].len) {
            const char *p = in[f].text + off;
            const char *nl = memchr(p, '\n', in[f].len - off);
            size_t ll = nl ? (size_t)(nl - p) : in[f].len - off;
            off += ll + (nl ? 1 : 0);
            json_t *o = json_loadb(p, ll, 0, NULL);
            const char *type = json_string_value(json_object_get(o, "type"));
            if (!json_is_object(o) || !type || strcmp(type, "eval") != 0) {
                json_decref(o);
                continue;
            }
            if (rows++ == 0)
                mb_printf(&b, "| stage | step | dataset | k | pass@1 | cons@k | format | mean len "
                              "| p90 len |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
            mb_printf(&b, "|");
            const char *stage = json_string_value(json_object_get(o, "stage"));
            mb_cell(&b, stage ? stage : in[f].stage);
            json_t *step = json_object_get(o, "step");
            if (json_is_integer(step)) mb_printf(&b, " %lld |", (long long)json_integer_value(step));
            else mb_printf(&b, " final |");
            mb_cell(&b, json_string_value(json_object_get(o, "dataset")));
            json_t *k = json_object_get(o, "k");
            if (json_is_integer(k)) mb_printf(&b, " %lld |", (long long)json_integer_value(k));
            else mb_printf(&b, " - |");
            mb_pct(&b, o, "pass_at_1");
            mb_pct(&b, o, "cons_at_k");
            mb_pct(&b, o, "format_rate");
            mb_num(&b, o, "length_mean");
            mb_num(&b, o, "length_p90");
            mb_printf(&b, "\n");
            json_decref(o);
        }
    }
    if (rows == 0) mb_printf(&b, "No eval records yet.\n");
    else
        mb_printf(&b, "\npass@1: mean correctness over k samples per question; cons@k: majority "
                      "vote over the k answers; format: share of well-formatted samples; "
                      "lengths in tokens.\n");
    generate_table(&b, in, n_in);
    if (b.oom) {
        free(b.s);
        return aha_errf(err, AHA_ENOMEM, "report: out of memory");
    }
    *md = b.s;
    return AHA_OK;
}
