/* bench_reward_rules.c: items scored per second by the reward rules library alone (no gRPC):
 * batches of 256 items with ~2 KB completions shaped like R1-Zero rollouts (a chain of
 * thought in English, Chinese or both with inline math, then an answer in <answer> tags or a
 * \boxed), references in the forms the accuracy rule normalises (integers, decimals,
 * fractions, percentages, tuples, letters). Prints one line per configuration: scores per
 * second of wall time and per second of this thread's CPU time (the second is the steadier
 * figure on a machine shared with other jobs).
 *
 *   bench_reward_rules [seconds per configuration, default 2] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/rng.h"
#include "rewards.h"

#define BATCH 256
#define TARGET_LEN 2048

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static const char *const words_en[] = {"first", "we", "compute", "the", "sum", "of", "both",
                                       "terms", "so", "then", "divide", "check", "again",
                                       "wait", "that", "is", "wrong", "let", "me", "recompute"};
static const char *const words_zh[] = {"\xe9\xa6\x96\xe5\x85\x88", "\xe6\x88\x91\xe4\xbb\xac",
                                       "\xe8\xae\xa1\xe7\xae\x97", "\xe6\x89\x80\xe4\xbb\xa5",
                                       "\xe7\xad\x94\xe6\xa1\x88", "\xe6\xa3\x80\xe6\x9f\xa5"};
static const char *const math[] = {"$x^2 + 3x = 10$", "\\frac{a}{b}", "$\\sqrt{2}$",
                                   "(1, 2)", "12 + 30 = 42", "\\(y = mx + c\\)"};
static const char *const answers[][2] = {
    {"42", "42"},           {"1,000", "1000"},      {"\\frac{1}{2}", "0.5"},
    {"50\\%", "50%"},       {"(1, 2)", "(1,2)"},    {"\\text{(B)}", "B"},
    {"x = -3", "-3"},       {"5 \\text{ cm}", "5"}, {"1/3", "0.333"},
    {"\\dfrac{3}{4}", "3/4"}, {"2.50", "2.5"},      {"Paris", "paris"},
};

typedef struct {
    char *completion;
    size_t len;
    const char *reference;
} gen_item;

static void gen(aha_rng *rng, gen_item *it, int mode /* 0 en, 1 zh, 2 mixed */)
{
    char *c = malloc(TARGET_LEN + 512);
    size_t n = 0;
    n += (size_t)sprintf(c + n, "<think>");
    while (n < TARGET_LEN - 64) {
        uint64_t r = aha_rng_below(rng, 10);
        const char *w;
        if (r == 0) w = math[aha_rng_below(rng, AHA_ARRAY_LEN(math))];
        else if (mode == 0 || (mode == 2 && r < 6)) w = words_en[aha_rng_below(rng, AHA_ARRAY_LEN(words_en))];
        else w = words_zh[aha_rng_below(rng, AHA_ARRAY_LEN(words_zh))];
        n += (size_t)sprintf(c + n, "%s ", w);
    }
    size_t a = aha_rng_below(rng, AHA_ARRAY_LEN(answers));
    if (aha_rng_below(rng, 4) == 0)
        n += (size_t)sprintf(c + n, "so \\boxed{%s}</think>", answers[a][0]);
    else
        n += (size_t)sprintf(c + n, "</think>\n<answer>%s</answer>", answers[a][0]);
    it->completion = c;
    it->len = n;
    it->reference = answers[a][1];
}

static void run(const char *name, gen_item *items, const char *lang, double secs)
{
    aha_reward_weights w = {1, 1, 0.5};
    const char *prompt = "A conversation between User and Assistant. User: q. Assistant: <think>";
    size_t bytes = 0;
    for (int k = 0; k < BATCH; k++) bytes += items[k].len;
    long scored = 0;
    double acc = 0, t0 = now(), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID), t;
    do {
        for (int k = 0; k < BATCH; k++) {
            aha_reward_item it = {.prompt = prompt, .prompt_len = strlen(prompt),
                                  .completion = items[k].completion,
                                  .completion_len = items[k].len,
                                  .reference = items[k].reference,
                                  .reference_len = strlen(items[k].reference),
                                  .language = lang, .language_len = strlen(lang)};
            aha_reward_result res;
            if (aha_reward_score(&it, &w, &res) != AHA_OK) {
                fprintf(stderr, "item error: %s\n", res.error);
                exit(1);
            }
            acc += res.accuracy;
        }
        scored += BATCH;
        t = now() - t0;
    } while (t < secs);
    double cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    printf("%-26s %8.0f scores/s wall %8.0f scores/s cpu %6.1f MB/s cpu  (%ld items, %zu B, "
           "accuracy %.2f)\n",
           name, scored / t, scored / cpu, scored / cpu * (bytes / (double)BATCH) / 1e6, scored,
           bytes / BATCH, acc / scored);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    if (!(secs > 0)) secs = 2.0;
    aha_rng rng;
    aha_rng_seed(&rng, 1234, 0);
    static gen_item en[BATCH], zh[BATCH], mix[BATCH];
    for (int k = 0; k < BATCH; k++) {
        gen(&rng, &en[k], 0);
        gen(&rng, &zh[k], 1);
        gen(&rng, &mix[k], 2);
    }
    printf("reward rules, batches of %d items, ~%d B completions, one thread\n", BATCH, TARGET_LEN);
    run("en, no language", en, "", secs);
    run("en, language en", en, "en", secs);
    run("zh, language zh", zh, "zh", secs);
    run("mixed en/zh, language zh", mix, "zh", secs);
    for (int k = 0; k < BATCH; k++) {
        free(en[k].completion);
        free(zh[k].completion);
        free(mix[k].completion);
    }
    return 0;
}
