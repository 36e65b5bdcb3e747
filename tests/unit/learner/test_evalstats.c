/* test_evalstats: pass@1, cons@k (ties, equivalent answers written differently, questions
 * without answers), length statistics, eval records, and the rejection-sampling filter on
 * crafted completions. */
#include <jansson.h>
#include <stdint.h>

#include "../../harness.h"
#include "evalstats.h"

/* numeric equality, as a stand-in for the reward service's equivalence */
static bool num_equal(void *ctx, const char *a, const char *b)
{
    int *calls = ctx;
    (*calls)++;
    char *ea, *eb;
    double x = strtod(a, &ea), y = strtod(b, &eb);
    if (*ea || *eb || ea == a || eb == b) return strcmp(a, b) == 0;
    return x == y;
}

static void test_pass_cons(void)
{
    enum { K = 4 };
    aha_eval_sample s[4][K] = {
        /* majority {4, 4.0, 4} is right */
        {{"4", 1, 1, 10}, {"4.0", 1, 1, 20}, {"5", 0, 1, 30}, {"4", 1, 0, 40}},
        /* tie {0.5, .5} vs {2, 2}: the first group (0.5) wins and is right */
        {{"0.5", 1, 1, 10}, {"2", 0, 1, 20}, {"2", 0, 1, 30}, {".5", 1, 1, 40}},
        /* no answer at all */
        {{NULL, 0, 0, 10}, {NULL, 0, 0, 20}, {NULL, 0, 0, 30}, {NULL, 0, 0, 40}},
        /* tie {7, 7} vs {8, 8}: 7 came first and is wrong */
        {{"7", 0, 1, 10}, {"8", 1, 1, 20}, {"8", 1, 1, 30}, {"7", 0, 1, 40}},
    };
    int calls = 0;
    aha_eval_result r;
    aha_err e = {0};
    CHECK(aha_eval_compute(&s[0][0], 4, K, num_equal, &calls, &r, &e) == AHA_OK, "%s", e.msg);
    /* pass@1 per question: 3/4, 2/4, 0, 2/4 */
    CHECK(fabs(r.pass_at_1 - (0.75 + 0.5 + 0 + 0.5) / 4) < 1e-12, "pass@1 %g", r.pass_at_1);
    CHECK(fabs(r.cons_at_k - 2.0 / 4) < 1e-12, "cons@4 %g", r.cons_at_k);
    CHECK(calls > 0, "equivalence used");
    CHECK(fabs(r.format_rate - 11.0 / 16) < 1e-12, "format rate %g", r.format_rate);
    /* lengths 10,20,30,40 four times each: mean 25; numpy percentile 50 = 25; 90: rank
     * 0.9 * 15 = 13.5 lies between two 40s */
    CHECK(fabs(r.length_mean - 25) < 1e-12 && fabs(r.length_p50 - 25) < 1e-12 &&
              fabs(r.length_p90 - 40) < 1e-12 && r.length_max == 40, "lengths %g %g %g", r.length_mean,
          r.length_p50, r.length_p90);
    CHECK(r.n_questions == 4 && r.k == K, "shape");

    /* byte equality: question 2 votes "2" (2 of 4) over "0.5" and ".5" (1 each) → wrong */
    CHECK(aha_eval_compute(&s[0][0], 4, K, NULL, NULL, &r, &e) == AHA_OK, "%s", e.msg);
    /* q1: "4" x2 beats "4.0", right; q2 wrong now; q4 still wrong */
    CHECK(fabs(r.cons_at_k - 1.0 / 4) < 1e-12, "cons@4 with byte equality %g", r.cons_at_k);

    /* k = 1: cons@1 == pass@1 */
    aha_eval_sample one[3] = {{"1", 1, 1, 5}, {"2", 0, 1, 5}, {NULL, 1, 0, 5}};
    CHECK(aha_eval_compute(one, 3, 1, NULL, NULL, &r, &e) == AHA_OK, "%s", e.msg);
    CHECK(fabs(r.pass_at_1 - 2.0 / 3) < 1e-12, "pass@1 k=1");
    CHECK(fabs(r.cons_at_k - 1.0 / 3) < 1e-12, "no answer → no vote even if accuracy says 1");
    CHECK(aha_eval_compute(one, 0, 1, NULL, NULL, &r, &e) == AHA_EINVAL, "empty set refused");

    double v4[4] = {10, 20, 30, 40}; /* numpy: 90th percentile 37 */
    CHECK(fabs(aha_quantile_sorted(v4, 4, 0.9) - 37) < 1e-12, "p90 of 4 values");
    double v[5] = {1, 2, 3, 4, 100};
    CHECK(aha_quantile_sorted(v, 5, 0.5) == 3 && aha_quantile_sorted(v, 5, 1) == 100 &&
              fabs(aha_quantile_sorted(v, 5, 0.9) - 61.6) < 1e-9, "quantiles");

    char *line;
    aha_sampling_spec sp = {0.6, 0.95, 0, 64};
    CHECK(aha_eval_compute(&s[0][0], 4, K, num_equal, &calls, &r, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_eval_record_json(&r, "eval", "rl", 20, &sp, &line, &e) == AHA_OK, "%s", e.msg);
    json_t *o = json_loads(line, 0, NULL);
    CHECK(o && strcmp(json_string_value(json_object_get(o, "type")), "eval") == 0 &&
              json_integer_value(json_object_get(o, "step")) == 20 &&
              fabs(json_real_value(json_object_get(o, "cons_at_k")) - 0.5) < 1e-9 &&
              json_integer_value(json_object_get(o, "k")) == 4, "record %s", line);
    json_decref(o);
    free(line);
}

static void test_filter(void)
{
    aha_filter_opts o = {2, 0.9, true, true};
    const char *good = "<think> 1 + 2  = 3 </think> <answer> 3 </answer>";
    aha_gen_sample s[] = {
        {"q1", "1+2?", "3", good, "stop", 1, 1, 1.0, NULL, 0},
        {"q1", "1+2?", "3", "<think> 1 + 2 = 3 and then", "length", 1, 1, 1.0, NULL, 1},
        {"q1", "1+2?", "3", "<think> 1+2=4 </think> <answer> 4 </answer>", "stop", 0, 1, 1.0, NULL, 2},
        {"q1", "1+2?", "3", "it is 3", "stop", 1, 0, 1.0, NULL, 3},
        {"q1", "1+2?", "3", "<think> un deux trois </think> <answer> 3 </answer>", "stop", 1, 1, 0.5, NULL, 4},
        {"q1", "1+2?", "3", "  <think> 1 + 2 = 3 </think>\n<answer>   3 </answer>\n", "stop", 1, 1, 1.0, NULL, 5},
        {"q1", "1+2?", "3", "<think> 2 + 1 = 3 </think> <answer> 3 </answer>", "stop", 1, 1, NAN, NULL, 6},
        {"q1", "1+2?", "3", "<think> three </think> <answer> 3 </answer>", "stop", 1, 1, 1.0, NULL, 7},
        {"q1", "1+2?", "3", "<think>\xff</think>", "stop", 0, 0, 0, "invalid UTF-8", 8},
    };
    enum { N = sizeof s / sizeof s[0] };
    aha_reject_reason v[N];
    aha_filter_report rep = {0};
    CHECK(aha_filter_group(&o, s, N, v, &rep) == 2, "two kept");
    aha_reject_reason want[N] = {AHA_REJ_KEPT,     AHA_REJ_TRUNCATED, AHA_REJ_INCORRECT,
                                 AHA_REJ_FORMAT,   AHA_REJ_LANGUAGE,  AHA_REJ_DUPLICATE,
                                 AHA_REJ_KEPT,     AHA_REJ_OVER_LIMIT, AHA_REJ_ERROR};
    for (int i = 0; i < N; i++)
        CHECK(v[i] == want[i], "sample %d: %s, want %s", i, aha_reject_reason_name(v[i]),
              aha_reject_reason_name(want[i]));
    CHECK(rep.prompts == 1 && rep.samples == N && rep.kept == 2 && rep.prompts_with_kept == 1, "report");
    for (int r = 0; r < AHA_REJ_COUNT; r++) {
        int64_t n = 0;
        for (int i = 0; i < N; i++) n += want[i] == (aha_reject_reason)r;
        CHECK(rep.by_reason[r] == n, "reason %s: %lld vs %lld", aha_reject_reason_name(r),
              (long long)rep.by_reason[r], (long long)n);
    }
    /* a second prompt with nothing acceptable */
    aha_gen_sample bad[1] = {{"q2", "2+2?", "4", "5", "stop", 0, 0, 1, NULL, 0}};
    aha_reject_reason vb[1];
    CHECK(aha_filter_group(&o, bad, 1, vb, &rep) == 0, "none kept");
    CHECK(rep.prompts == 2 && rep.prompts_with_kept == 1, "prompt counts");

    /* looser options keep the incorrect one */
    aha_filter_opts loose = {8, 0, false, false};
    aha_filter_report rep2 = {0};
    aha_filter_group(&loose, s, N, v, &rep2);
    CHECK(v[2] == AHA_REJ_KEPT && v[3] == AHA_REJ_KEPT && v[4] == AHA_REJ_KEPT, "loose filter");
    CHECK(v[1] == AHA_REJ_TRUNCATED && v[5] == AHA_REJ_DUPLICATE, "truncation and duplicates always count");

    char *line;
    aha_err e = {0};
    CHECK(aha_filter_sft_line(&s[6], &line, &e) == AHA_OK, "%s", e.msg);
    json_t *j = json_loads(line, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "prompt")), "1+2?") == 0 &&
              strcmp(json_string_value(json_object_get(j, "completion")), s[6].completion) == 0 &&
              strcmp(json_string_value(json_object_get(j, "id")), "q1#6") == 0 &&
              strcmp(json_string_value(json_object_get(j, "source_id")), "q1") == 0 &&
              json_integer_value(json_object_get(j, "sample_index")) == 6, "sft line %s", line);
    json_decref(j);
    free(line);
    CHECK(aha_filter_sft_line(&s[8], &line, &e) == AHA_EINVAL, "invalid UTF-8 refused");

    CHECK(aha_filter_report_json(&rep, &line, &e) == AHA_OK, "%s", e.msg);
    j = json_loads(line, 0, NULL);
    json_t *rj = json_object_get(j, "rejected");
    CHECK(j && json_integer_value(json_object_get(j, "kept")) == 2 &&
              json_integer_value(json_object_get(rj, "duplicate")) == 1 &&
              json_integer_value(json_object_get(rj, "incorrect")) == 2 &&
              json_object_get(rj, "kept") == NULL, "report json %s", line);
    json_decref(j);
    free(line);
    CHECK(aha_filter_record_json(&rep, "gen", &line, &e) == AHA_OK, "%s", e.msg);
    j = json_loads(line, 0, NULL);
    CHECK(j && strchr(line, '\n') == NULL && strcmp(json_string_value(json_object_get(j, "type")), "generate") == 0 &&
              strcmp(json_string_value(json_object_get(j, "stage")), "gen") == 0 &&
              fabs(json_real_value(json_object_get(j, "acceptance_rate")) - 2.0 / 10) < 1e-9,
          "record %s", line);
    json_decref(j);
    free(line);
}

int main(void)
{
    test_pass_cons();
    test_filter();
    return th_done("evalstats");
}
