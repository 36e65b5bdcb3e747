/* report.c: eval records → markdown table (report.h). Cell text from the records (stage and
 * dataset names) has '|' and newlines replaced so a name cannot break the table. */
#include "report.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"

static void mb_cell(aha_strbuf *b, const char *t)
{
    if (!t || !*t) {
        aha_strbuf_printf(b, " - |");
        return;
    }
    aha_strbuf_printf(b, " ");
    for (; *t; t++) aha_strbuf_printf(b, "%c", *t == '|' ? '/' : (*t == '\n' || *t == '\r') ? ' ' : *t);
    aha_strbuf_printf(b, " |");
}

static void mb_pct(aha_strbuf *b, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (json_is_number(v)) aha_strbuf_printf(b, " %.1f |", 100.0 * json_number_value(v));
    else aha_strbuf_printf(b, " - |");
}

static void mb_num(aha_strbuf *b, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (json_is_number(v)) aha_strbuf_printf(b, " %.1f |", json_number_value(v));
    else aha_strbuf_printf(b, " - |");
}

/* Rejection-sampling records ({"type":"generate"}) as a second table. */
/* The next JSON-lines record of in (from *off) whose "type" is type, or NULL at the end;
 * lines that are not such objects are skipped. The caller decrefs it. */
static json_t *next_record(const aha_report_input *in, size_t *off, const char *type)
{
    while (*off < in->len) {
        const char *p = in->text + *off;
        const char *nl = memchr(p, '\n', in->len - *off);
        size_t ll = nl ? (size_t)(nl - p) : in->len - *off;
        *off += ll + (nl ? 1 : 0);
        json_t *o = json_loadb(p, ll, 0, NULL);
        const char *t = json_string_value(json_object_get(o, "type"));
        if (json_is_object(o) && t && strcmp(t, type) == 0) return o;
        json_decref(o);
    }
    return NULL;
}

/* an integer field as a cell, `none` when absent */
static void mb_int(aha_strbuf *b, json_t *o, const char *k, const char *none)
{
    json_t *v = json_object_get(o, k);
    if (json_is_integer(v))
        aha_strbuf_printf(b, " %lld |", (long long)json_integer_value(v));
    else
        aha_strbuf_printf(b, " %s |", none);
}

static void generate_table(aha_strbuf *b, const aha_report_input *in, int n_in)
{
    static const char *const reasons[] = {"truncated", "incorrect", "format", "language",
                                          "duplicate", "over_limit", "error"};
    int rows = 0;
    for (int f = 0; f < n_in; f++) {
        size_t off = 0;
        json_t *o;
        while ((o = next_record(&in[f], &off, "generate"))) {
            if (rows++ == 0) {
                aha_strbuf_printf(b, "\n### Rejection sampling\n\n| stage | prompts | samples | kept | "
                             "accepted | ");
                for (size_t i = 0; i < AHA_ARRAY_LEN(reasons); i++) aha_strbuf_printf(b, "%s | ", reasons[i]);
                aha_strbuf_printf(b, "\n|---|---:|---:|---:|---:|");
                for (size_t i = 0; i < AHA_ARRAY_LEN(reasons); i++) aha_strbuf_printf(b, "---:|");
                aha_strbuf_printf(b, "\n");
            }
            aha_strbuf_printf(b, "|");
            const char *stage = json_string_value(json_object_get(o, "stage"));
            mb_cell(b, stage ? stage : in[f].stage);
            static const char *const counts[] = {"prompts", "samples", "kept"};
            for (size_t i = 0; i < AHA_ARRAY_LEN(counts); i++) mb_int(b, o, counts[i], "-");
            mb_pct(b, o, "acceptance_rate");
            json_t *rej = json_object_get(o, "rejected");
            for (size_t i = 0; i < AHA_ARRAY_LEN(reasons); i++) mb_int(b, rej, reasons[i], "-");
            aha_strbuf_printf(b, "\n");
            json_decref(o);
        }
    }
}

aha_status aha_report_markdown(const aha_report_input *in, int n_in, const char *title, char **md,
                               aha_err *err)
{
    *md = NULL;
    aha_strbuf b = {0};
    aha_strbuf_printf(&b, "## %s\n\n", title && *title ? title : "Evaluation");
    int rows = 0;
    for (int f = 0; f < n_in; f++) {
        size_t off = 0;
        json_t *o;
        while ((o = next_record(&in[f], &off, "eval"))) {
            if (rows++ == 0)
                aha_strbuf_printf(&b, "| stage | step | dataset | k | pass@1 | cons@k | format | mean len "
                              "| p90 len |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
            aha_strbuf_printf(&b, "|");
            const char *stage = json_string_value(json_object_get(o, "stage"));
            mb_cell(&b, stage ? stage : in[f].stage);
            mb_int(&b, o, "step", "final");
            mb_cell(&b, json_string_value(json_object_get(o, "dataset")));
            mb_int(&b, o, "k", "-");
            mb_pct(&b, o, "pass_at_1");
            mb_pct(&b, o, "cons_at_k");
            mb_pct(&b, o, "format_rate");
            mb_num(&b, o, "length_mean");
            mb_num(&b, o, "length_p90");
            aha_strbuf_printf(&b, "\n");
            json_decref(o);
        }
    }
    if (rows == 0) aha_strbuf_printf(&b, "No eval records yet.\n");
    else
        aha_strbuf_printf(&b, "\npass@1: mean correctness over k samples per question; cons@k: majority "
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
