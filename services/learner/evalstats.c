/* evalstats.c: pass@1, cons@k, length statistics, and the rejection filter (evalstats.h). */
#include "evalstats.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool same_bytes(void *ctx, const char *a, const char *b)
{
    (void)ctx;
    return strcmp(a, b) == 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double aha_quantile_sorted(const double *v, int64_t n, double q)
{
    if (n <= 0) return NAN;
    if (q <= 0) return v[0];
    if (q >= 1) return v[n - 1];
    double pos = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos);
    double frac = pos - (double)lo;
    if (lo + 1 >= n) return v[n - 1];
    return v[lo] + (v[lo + 1] - v[lo]) * frac;
}

aha_status aha_eval_compute(const aha_eval_sample *s, int64_t nq, int k, aha_answer_equiv_fn eq,
                            void *ctx, aha_eval_result *out, aha_err *err)
{
    memset(out, 0, sizeof *out);
    if (nq <= 0 || k <= 0)
        return aha_errf(err, AHA_EINVAL, "eval: %lld questions x %d samples: nothing to score",
                        (long long)nq, k);
    if (!eq) eq = same_bytes;
    int64_t total = nq * k;
    double *len = malloc((size_t)total * sizeof *len);
    int *group = malloc((size_t)k * sizeof *group);   /* group of each sample, -1 none */
    int *count = malloc((size_t)k * sizeof *count);   /* members per group */
    int *first = malloc((size_t)k * sizeof *first);   /* first member of each group */
    if (!len || !group || !count || !first) {
        free(len);
        free(group);
        free(count);
        free(first);
        return aha_errf(err, AHA_ENOMEM, "eval: out of memory");
    }
    double pass = 0, cons = 0, fmt = 0, lsum = 0;
    int64_t lmax = 0;
    for (int64_t q = 0; q < nq; q++) {
        const aha_eval_sample *row = s + q * k;
        int correct = 0, n_groups = 0;
        for (int i = 0; i < k; i++) {
            if (row[i].accuracy >= 0.5) correct++;
            if (row[i].format >= 0.5) fmt += 1;
            len[q * k + i] = (double)row[i].length;
            lsum += (double)row[i].length;
            if (row[i].length > lmax) lmax = row[i].length;
            group[i] = -1;
            if (!row[i].answer) continue;
            for (int g = 0; g < n_groups; g++)
                if (eq(ctx, row[first[g]].answer, row[i].answer)) {
                    group[i] = g;
                    count[g]++;
                    break;
                }
            if (group[i] < 0) {
                group[i] = n_groups;
                first[n_groups] = i;
                count[n_groups++] = 1;
            }
        }
        pass += (double)correct / k;
        int best = -1;
        for (int g = 0; g < n_groups; g++) /* strict >: ties keep the earlier group */
            if (best < 0 || count[g] > count[best]) best = g;
        if (best >= 0 && row[first[best]].accuracy >= 0.5) cons += 1;
    }
    qsort(len, (size_t)total, sizeof *len, cmp_double);
    out->n_questions = nq;
    out->k = k;
    out->pass_at_1 = pass / (double)nq;
    out->cons_at_k = cons / (double)nq;
    out->format_rate = fmt / (double)total;
    out->length_mean = lsum / (double)total;
    out->length_p50 = aha_quantile_sorted(len, total, 0.5);
    out->length_p90 = aha_quantile_sorted(len, total, 0.9);
    out->length_max = lmax;
    free(len);
    free(group);
    free(count);
    free(first);
    return AHA_OK;
}

aha_status aha_eval_record_json(const aha_eval_result *r, const char *dataset, const char *stage,
                                int64_t step, const aha_sampling_spec *sampling, char **out,
                                aha_err *err)
{
    *out = NULL;
    json_t *o = json_pack("{s:s, s:s, s:I, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:I}", "type",
                          "eval", "dataset", dataset ? dataset : "", "n_questions",
                          (json_int_t)r->n_questions, "k", r->k, "pass_at_1", r->pass_at_1,
                          "cons_at_k", r->cons_at_k, "format_rate", r->format_rate,
                          "length_mean", r->length_mean, "length_p50", r->length_p50,
                          "length_p90", r->length_p90, "length_max", (json_int_t)r->length_max);
    bool oom = !o;
    if (o && stage) oom |= json_object_set_new(o, "stage", json_string(stage)) != 0;
    if (o && step >= 0) oom |= json_object_set_new(o, "step", json_integer(step)) != 0;
    if (o && sampling) {
        oom |= json_object_set_new(o, "temperature", json_real(sampling->temperature)) != 0;
        oom |= json_object_set_new(o, "top_p", json_real(sampling->top_p)) != 0;
    }
    if (!oom) *out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "eval record: out of memory");
}

/* ---- rejection filter ---------------------------------------------------------------- */

static const char *const reject_names[] = {
#define AHA__REJ_NAME(name, str) str,
    AHA_REJECT_MAP(AHA__REJ_NAME)
#undef AHA__REJ_NAME
};

const char *aha_reject_reason_name(aha_reject_reason r)
{
    return (unsigned)r < AHA_REJ_COUNT ? reject_names[r] : "?";
}

aha_filter_opts aha_filter_opts_from_spec(const aha_job_spec *g)
{
    aha_filter_opts o = {g->keep_per_prompt, g->min_language, g->require_correct,
                         g->require_format};
    return o;
}

/* Equal after collapsing whitespace runs to one space and trimming both ends. */
static bool same_text_ws(const char *a, const char *b)
{
    while (isspace((unsigned char)*a)) a++;
    while (isspace((unsigned char)*b)) b++;
    for (;;) {
        bool wa = false, wb = false;
        while (isspace((unsigned char)*a)) {
            a++;
            wa = true;
        }
        while (isspace((unsigned char)*b)) {
            b++;
            wb = true;
        }
        if (!*a || !*b) return !*a && !*b; /* trailing whitespace does not count */
        if (wa != wb || *a != *b) return false;
        a++;
        b++;
    }
}

int aha_filter_group(const aha_filter_opts *o, const aha_gen_sample *s, int n,
                     aha_reject_reason *verdict, aha_filter_report *rep)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        const aha_gen_sample *x = &s[i];
        aha_reject_reason r = AHA_REJ_KEPT;
        if (x->error && x->error[0]) r = AHA_REJ_ERROR;
        else if (x->finish_reason && strcmp(x->finish_reason, "length") == 0) r = AHA_REJ_TRUNCATED;
        else if (o->require_correct && !(x->accuracy >= 0.5)) r = AHA_REJ_INCORRECT;
        else if (o->require_format && !(x->format >= 0.5)) r = AHA_REJ_FORMAT;
        else if (o->min_language > 0 && !isnan(x->language) && x->language < o->min_language)
            r = AHA_REJ_LANGUAGE;
        if (r == AHA_REJ_KEPT)
            for (int j = 0; j < i; j++)
                if (verdict[j] == AHA_REJ_KEPT && same_text_ws(s[j].completion, x->completion)) {
                    r = AHA_REJ_DUPLICATE;
                    break;
                }
        if (r == AHA_REJ_KEPT && kept >= o->keep_per_prompt) r = AHA_REJ_OVER_LIMIT;
        if (r == AHA_REJ_KEPT) kept++;
        verdict[i] = r;
        rep->by_reason[r]++;
    }
    rep->prompts++;
    rep->samples += n;
    rep->kept += kept;
    if (kept) rep->prompts_with_kept++;
    return kept;
}

aha_status aha_filter_sft_line(const aha_gen_sample *s, char **out, aha_err *err)
{
    *out = NULL;
    char id[512];
    snprintf(id, sizeof id, "%.480s#%d", s->prompt_id ? s->prompt_id : "", s->index);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i}", "prompt", s->prompt ? s->prompt : "",
                          "completion", s->completion ? s->completion : "", "id", id, "source_id",
                          s->prompt_id ? s->prompt_id : "", "sample_index", s->index);
    bool oom = !o;
    if (o && s->answer) oom |= json_object_set_new(o, "answer", json_string(s->answer)) != 0;
    if (!oom) *out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    /* json_pack fails on invalid UTF-8 as well as on memory */
    return *out ? AHA_OK
                : aha_errf(err, AHA_EINVAL, "generate: sample %s#%d is not valid UTF-8 text",
                           s->prompt_id ? s->prompt_id : "", s->index);
}

static json_t *filter_report_obj(const aha_filter_report *r)
{
    json_t *rej = json_object();
    bool oom = !rej;
    for (int i = 1; rej && i < AHA_REJ_COUNT; i++)
        oom |= json_object_set_new(rej, reject_names[i], json_integer(r->by_reason[i])) != 0;
    json_t *o = oom ? NULL
                    : json_pack("{s:I, s:I, s:I, s:I, s:f, s:O}", "prompts", (json_int_t)r->prompts,
                                "prompts_with_kept", (json_int_t)r->prompts_with_kept, "samples",
                                (json_int_t)r->samples, "kept", (json_int_t)r->kept,
                                "acceptance_rate",
                                r->samples ? (double)r->kept / (double)r->samples : 0.0,
                                "rejected", rej);
    json_decref(rej); /* "O" took its own reference */
    return o;
}

aha_status aha_filter_report_json(const aha_filter_report *r, char **out, aha_err *err)
{
    json_t *o = filter_report_obj(r);
    *out = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "acceptance report: out of memory");
}

aha_status aha_filter_record_json(const aha_filter_report *r, const char *stage, char **out,
                                  aha_err *err)
{
    *out = NULL;
    json_t *o = filter_report_obj(r);
    bool oom = !o || json_object_set_new(o, "type", json_string("generate")) != 0;
    if (!oom && stage) oom = json_object_set_new(o, "stage", json_string(stage)) != 0;
    if (!oom) *out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "acceptance record: out of memory");
}
