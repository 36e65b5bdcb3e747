/* test_reward_robust.c: the reward rules on hostile inputs (issue 3, "Limits and bad input"):
 * a 10 MB completion, 100,000 nested braces, pathological openers that never close, invalid
 * UTF-8, NUL bytes, huge numbers and tuples. Each case must answer (no crash, no hang) with
 * the value the rule gives, worked out below from how the input was built. Times are printed
 * so a quadratic scan shows up as minutes, but nothing is asserted on time. */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "../../harness.h"
#include "rewards.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void rep(buf *b, const char *s, size_t times)
{
    size_t m = strlen(s);
    for (size_t k = 0; k < times; k++) put(b, s, m);
}

static aha_reward_result score(const char *p, size_t pn, const char *c, size_t cn, const char *r,
                               const char *lang, aha_status *st, const char *what)
{
    aha_reward_item it = {.prompt = p, .prompt_len = pn, .completion = c, .completion_len = cn,
                          .reference = r, .reference_len = strlen(r), .language = lang,
                          .language_len = strlen(lang)};
    aha_reward_weights w = {1, 1, 1};
    aha_reward_result res;
    double t0 = now();
    *st = aha_reward_score(&it, &w, &res);
    fprintf(stderr, "  %-44s %9zu bytes %8.3f s\n", what, cn, now() - t0);
    return res;
}

int main(void)
{
    aha_status st;
    aha_reward_result res;

    /* 10 MB chain of thought: each unit "我们 add $x$ {y} " has the words 我, 们 (Han),
     * add, y (Latin); $x$ is math. So zh scores 2/4 and the answer 42 is right. */
    {
        buf b = {0};
        puts_(&b, "<think>");
        const char *unit = "\xe6\x88\x91\xe4\xbb\xac add $x$ {y} ";
        rep(&b, unit, 10u * 1000 * 1000 / strlen(unit));
        puts_(&b, "</think>\n<answer>42</answer>");
        res = score(NULL, 0, b.p, b.n, "42", "zh", &st, "10 MB mixed zh/en chain of thought");
        CHECK(st == AHA_OK && res.accuracy == 1 && res.format == 1 && res.language == 0.5 &&
                  res.total == 2.5,
              "10MB: st %d acc %g fmt %g lang %g total %g %s", st, res.accuracy, res.format,
              res.language, res.total, res.error);
        /* the same with one invalid byte at the very end: an item error naming the offset */
        b.p[b.n - 1] = (char)0xff;
        res = score(NULL, 0, b.p, b.n, "42", "zh", &st, "10 MB, invalid last byte");
        char want[64];
        snprintf(want, sizeof want, "byte %zu", b.n - 1);
        CHECK(st == AHA_EINVAL && res.total == 0 && strstr(res.error, want),
              "invalid tail: %s (want '%s')", res.error, want);
        free(b.p);
    }
    /* 100,000 nested braces inside \boxed: the answer is the whole braced text, which is not
     * the number 5; and 100,000 nested \boxed: the innermost one (last start) answers 7. */
    {
        buf b = {0};
        puts_(&b, "\\boxed{");
        rep(&b, "{", 100000);
        puts_(&b, "5");
        rep(&b, "}", 100000);
        puts_(&b, "}");
        res = score(NULL, 0, b.p, b.n, "5", "", &st, "100k nested braces in \\boxed");
        CHECK(st == AHA_OK && res.has_answer && res.accuracy == 0 &&
                  strncmp(res.extracted, "{{{{", 4) == 0,
              "nested braces: st %d answer %d acc %g", st, res.has_answer, res.accuracy);
        b.n = 0;
        rep(&b, "\\boxed{", 100000);
        puts_(&b, "7");
        rep(&b, "}", 100000);
        res = score(NULL, 0, b.p, b.n, "7", "", &st, "100k nested \\boxed");
        CHECK(st == AHA_OK && res.accuracy == 1 && strcmp(res.extracted, "7") == 0,
              "nested boxed: st %d acc %g '%s'", st, res.accuracy, res.extracted);
        /* 100k open braces never closed, then a complete \boxed{3}: it is still found */
        b.n = 0;
        rep(&b, "{", 100000);
        puts_(&b, "\\boxed{3}");
        res = score(NULL, 0, b.p, b.n, "3", "", &st, "100k unclosed braces then \\boxed{3}");
        CHECK(st == AHA_OK && res.accuracy == 1, "unclosed then boxed: acc %g", res.accuracy);
        /* 100k nested \text groups around B: answered (deep \text nesting is not unwrapped
         * past 32 levels, so no claim on the value) */
        b.n = 0;
        puts_(&b, "<answer>");
        rep(&b, "\\text{", 100000);
        puts_(&b, "B");
        rep(&b, "}", 100000);
        puts_(&b, "</answer>");
        res = score(NULL, 0, b.p, b.n, "B", "en", &st, "100k nested \\text");
        CHECK(st == AHA_OK && res.has_answer, "nested text: st %d", st);
        free(b.p);
    }
    /* openers that never close: each must not restart a scan to the end */
    {
        const char *openers[] = {"\\boxed{", "<answer>", "$$ ", "\\( ", "\\[ ", "<think>"};
        for (size_t k = 0; k < AHA_ARRAY_LEN(openers); k++) {
            buf b = {0};
            rep(&b, openers[k], 8u * 1000 * 1000 / strlen(openers[k]));
            char what[64];
            snprintf(what, sizeof what, "8 MB of '%s'", openers[k]);
            res = score(NULL, 0, b.p, b.n, "1", "en", &st, what);
            /* no complete answer, two or more <think> or no tags: format 0; no words: lang 1 */
            CHECK(st == AHA_OK && !res.has_answer && res.accuracy == 0 && res.format == 0 &&
                      res.language == 1,
                  "%s: st %d answer %d fmt %g lang %g", what, st, res.has_answer, res.format,
                  res.language);
            free(b.p);
        }
    }
    /* NUL bytes: 1 MB of them is no answer and no words; NULs around a well-formed
     * completion are not whitespace, so its format is 0 but its answer counts */
    {
        buf b = {0};
        char zeros[1024] = {0};
        for (int k = 0; k < 1024; k++) put(&b, zeros, sizeof zeros);
        res = score(NULL, 0, b.p, b.n, "0", "en", &st, "1 MB of NUL");
        CHECK(st == AHA_OK && !res.has_answer && res.format == 0 && res.language == 1 &&
                  res.total == 1,
              "NULs: st %d total %g", st, res.total);
        b.n = 0;
        put(&b, "\0<think>\0hi\0</think><answer>\0" "9\0</answer>\0", 41);
        res = score(NULL, 0, b.p, b.n, "9", "en", &st, "NULs around tags");
        CHECK(st == AHA_OK && res.accuracy == 1 && res.format == 0 && res.language == 1,
              "NULs around: acc %g fmt %g lang %g", res.accuracy, res.format, res.language);
        free(b.p);
    }
    /* a 100,000-digit number equals itself (as a string past 128 bits) and not a neighbour */
    {
        buf a = {0};
        puts_(&a, "<answer>");
        rep(&a, "9", 100000);
        puts_(&a, "</answer>");
        buf r = {0};
        rep(&r, "9", 100000);
        put(&r, "", 1);
        res = score(NULL, 0, a.p, a.n, r.p, "", &st, "100k-digit number");
        CHECK(st == AHA_OK && res.accuracy == 1, "big number: acc %g", res.accuracy);
        r.p[99999] = '8';
        res = score(NULL, 0, a.p, a.n, r.p, "", &st, "100k-digit number, last digit off");
        CHECK(st == AHA_OK && res.accuracy == 0, "big number off: acc %g", res.accuracy);
        free(a.p);
        free(r.p);
    }
    /* tuples: 100,000 elements written with and without spaces are equal; changing the last
     * element breaks it; 100,000-deep nesting (1,(1,(1,…))) equals itself */
    {
        buf a = {0}, r = {0};
        puts_(&a, "<answer>(");
        put(&r, "(", 1);
        for (int k = 0; k < 100000; k++) {
            char e[16];
            snprintf(e, sizeof e, k ? ", %d" : "%d", k);
            puts_(&a, e);
            snprintf(e, sizeof e, k ? ",%d.0" : "%d.0", k);
            puts_(&r, e);
        }
        puts_(&a, ")</answer>");
        put(&r, ")", 2);
        res = score(NULL, 0, a.p, a.n, r.p, "", &st, "100k-element tuple");
        CHECK(st == AHA_OK && res.accuracy == 1, "tuple: acc %g", res.accuracy);
        r.p[r.n - 4] = '8'; /* "99999.0)" → "99998.0)" */
        res = score(NULL, 0, a.p, a.n, r.p, "", &st, "100k-element tuple, last off");
        CHECK(st == AHA_OK && res.accuracy == 0, "tuple off: acc %g", res.accuracy);
        a.n = 0;
        puts_(&a, "<answer>");
        rep(&a, "(1,", 100000);
        puts_(&a, "1");
        rep(&a, ")", 100000);
        puts_(&a, "</answer>");
        r.n = 0;
        put(&r, a.p + 8, a.n - 17);
        put(&r, "", 1);
        res = score(NULL, 0, a.p, a.n, r.p, "", &st, "100k-deep nested tuple");
        CHECK(st == AHA_OK && res.accuracy == 1, "deep tuple: acc %g", res.accuracy);
        free(a.p);
        free(r.p);
    }
    /* a 10 MB prompt of whitespace ending in <think>: the completion's think is implied */
    {
        buf p = {0};
        rep(&p, " \n", 5u * 1000 * 1000);
        puts_(&p, "<think>");
        rep(&p, " ", 1000);
        const char *c = "ok</think><answer>1</answer>";
        res = score(p.p, p.n, c, strlen(c), "1", "en", &st, "10 MB prompt ending in <think>");
        CHECK(st == AHA_OK && res.total == 3, "big prompt: total %g", res.total);
        free(p.p);
    }
    /* empty everything and NULL pointers with zero lengths */
    {
        res = score(NULL, 0, NULL, 0, "", "", &st, "empty item");
        CHECK(st == AHA_OK && res.total == 0 && !res.has_answer, "empty: total %g", res.total);
    }
    return th_done("reward_robust");
}
