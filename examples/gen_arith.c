/* gen_arith.c (aha-gen-arith): the seeded generator of the demo task: arithmetic problems,
 * as bare expressions ("What is 23 + 45 - 7?") or short word problems, with a difficulty
 * knob. It writes three JSONL files into --out:
 *
 *   sft.jsonl    prompt -> completion in the R1 format, the worked steps inside <think>:
 *                "<think> 45 - 7 = 38. 23 + 38 = 61. </think> <answer> 61 </answer>"
 *                or, for a --guess-share of them, a guess without steps (below)
 *   train.jsonl  prompt + answer (+ lang, id) for RL
 *   eval.jsonl   prompt + answer (+ lang, id), held out
 *
 * Every line also carries "expr", the canonical expression. The eval problems are distinct
 * expressions and none of them appears in train or sft (the held-out set is truly held out);
 * train and sft may repeat problems among themselves. The same flags and seed give the same
 * bytes on every machine (aha_rng; no libc randomness, no locale-dependent formatting).
 *
 * Products bind tighter than sums and differences; the worked steps do the products first,
 * then go left to right. Below difficulty 3, every intermediate result is >= 0.
 *
 * Guesses (--guess-share, --guess-spread K) make a "think or guess" corpus: the teacher
 * sometimes skips the steps and writes a number near the answer, "<think> </think> <answer>
 * 58 </answer>", off by a uniform offset in [-K, K] (so right 1 time in 2K+1). A model SFT'd
 * on it answers both ways and is accurate only when it works the steps: the weak base of the
 * demo, from which RL has to learn that thinking pays. The guess decisions and offsets come
 * from their own random stream, so the problems are the same whatever the share. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/rng.h"
#include "base/status.h"

#define MAX_TERMS 4

typedef struct {
    int min_terms, max_terms, max_digits;
    char ops[4]; /* subset of "+-*" */
    bool allow_negative;
    double word_share;  /* share of word problems among 2-term problems */
    double guess_share; /* share of SFT completions that guess instead of working */
    long guess_spread;  /* a guess is the answer plus an offset in [-spread, spread] */
} gen_opts;

typedef struct {
    int n;
    long v[MAX_TERMS];
    char op[MAX_TERMS - 1];
    long result;
    char expr[128];
    char steps[512];
    char prompt[512];
} problem;

static long pow10l_(int d)
{
    long p = 1;
    while (d-- > 0) p *= 10;
    return p;
}

/* Apply products first, then left to right, recording steps. false if a step goes below 0
 * and negatives are not allowed. */
static bool solve(problem *p, bool allow_negative)
{
    long v[MAX_TERMS];
    char op[MAX_TERMS - 1];
    int n = p->n;
    memcpy(v, p->v, sizeof v);
    memcpy(op, p->op, sizeof op);
    size_t off = 0;
    p->steps[0] = 0;
    for (int i = 0; i < n - 1;) {
        if (op[i] != '*') {
            i++;
            continue;
        }
        long r = v[i] * v[i + 1];
        off += (size_t)snprintf(p->steps + off, sizeof p->steps - off, "%s%ld * %ld = %ld.",
                                off ? " " : "", v[i], v[i + 1], r);
        v[i] = r;
        for (int j = i + 1; j < n - 1; j++) v[j] = v[j + 1];
        for (int j = i; j < n - 2; j++) op[j] = op[j + 1];
        n--;
    }
    long acc = v[0];
    for (int i = 0; i < n - 1; i++) {
        long r = op[i] == '+' ? acc + v[i + 1] : acc - v[i + 1];
        if (r < 0 && !allow_negative) return false;
        off += (size_t)snprintf(p->steps + off, sizeof p->steps - off, "%s%ld %c %ld = %ld.",
                                off ? " " : "", acc, op[i], v[i + 1], r);
        acc = r;
    }
    p->result = acc;
    return true;
}

static const char *const names[] = {"Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana",
                                    "Ivan", "Jade", "Kofi", "Lea", "Mateo", "Nora", "Omar", "Pia"};
static const char *const items[] = {"apples", "books", "coins", "marbles", "pencils", "stamps",
                                    "shells", "cards", "eggs", "stickers"};

static void render_prompt(problem *p, aha_rng *rng, double word_share)
{
    /* a word problem must make sense: nobody gives away more than they have */
    bool word = p->n == 2 && p->result >= 0 && aha_rng_f64(rng) < word_share;
    if (word) {
        const char *who = names[aha_rng_below(rng, AHA_ARRAY_LEN(names))];
        const char *what = items[aha_rng_below(rng, AHA_ARRAY_LEN(items))];
        switch (p->op[0]) {
        case '+':
            snprintf(p->prompt, sizeof p->prompt,
                     "%s has %ld %s and gets %ld more. How many %s does %s have now?", who,
                     p->v[0], what, p->v[1], what, who);
            break;
        case '-':
            snprintf(p->prompt, sizeof p->prompt,
                     "%s has %ld %s and gives away %ld. How many %s does %s have left?", who,
                     p->v[0], what, p->v[1], what, who);
            break;
        default:
            snprintf(p->prompt, sizeof p->prompt,
                     "%s buys %ld bags with %ld %s in each bag. How many %s does %s buy?", who,
                     p->v[0], p->v[1], what, what, who);
            break;
        }
        return;
    }
    static const char *const forms[] = {"What is %s?", "Compute %s.", "Calculate %s.",
                                        "Evaluate %s."};
    snprintf(p->prompt, sizeof p->prompt, forms[aha_rng_below(rng, AHA_ARRAY_LEN(forms))], p->expr);
}

static void draw(problem *p, const gen_opts *o, aha_rng *rng)
{
    size_t n_ops = strlen(o->ops);
    for (;;) {
        memset(p, 0, sizeof *p);
        p->n = o->min_terms + (int)aha_rng_below(rng, (uint64_t)(o->max_terms - o->min_terms + 1));
        for (int i = 0; i < p->n; i++) {
            /* digits of each operand uniform in 1..max_digits, then the value uniform */
            int d = 1 + (int)aha_rng_below(rng, (uint64_t)o->max_digits);
            long lo = d == 1 ? 0 : pow10l_(d - 1);
            p->v[i] = lo + (long)aha_rng_below(rng, (uint64_t)(pow10l_(d) - lo));
        }
        for (int i = 0; i < p->n - 1; i++) p->op[i] = o->ops[aha_rng_below(rng, n_ops)];
        if (!solve(p, o->allow_negative)) continue;
        size_t off = 0;
        off = (size_t)snprintf(p->expr, sizeof p->expr, "%ld", p->v[0]);
        for (int i = 1; i < p->n; i++)
            off += (size_t)snprintf(p->expr + off, sizeof p->expr - off, " %c %ld", p->op[i - 1],
                                    p->v[i]);
        return;
    }
}

/* A set of expression strings (open addressing on a 64-bit hash, full compare). */
typedef struct {
    char **keys;
    size_t cap, n;
} strset;

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static bool set_has(const strset *s, const char *k)
{
    if (!s->cap) return false;
    for (size_t i = fnv(k) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->keys[i]) return false;
        if (strcmp(s->keys[i], k) == 0) return true;
    }
}

static bool set_add(strset *s, const char *k)
{
    if ((s->n + 1) * 2 > s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        char **nk = calloc(nc, sizeof *nk);
        if (!nk) return false;
        for (size_t i = 0; i < s->cap; i++)
            if (s->keys[i]) {
                size_t j = fnv(s->keys[i]) & (nc - 1);
                while (nk[j]) j = (j + 1) & (nc - 1);
                nk[j] = s->keys[i];
            }
        free(s->keys);
        s->keys = nk;
        s->cap = nc;
    }
    size_t i = fnv(k) & (s->cap - 1);
    while (s->keys[i]) i = (i + 1) & (s->cap - 1);
    if (!(s->keys[i] = strdup(k))) return false;
    s->n++;
    return true;
}

static void set_free(strset *s)
{
    for (size_t i = 0; i < s->cap; i++) free(s->keys[i]);
    free(s->keys);
}

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static bool sb_line(sbuf *b, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s) return false;
    size_t n = strlen(s);
    if (b->len + n + 2 > b->cap) {
        size_t nc = (b->len + n + 2) * 2;
        char *nb = realloc(b->buf, nc);
        if (!nb) {
            free(s);
            return false;
        }
        b->buf = nb;
        b->cap = nc;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len++] = '\n';
    free(s);
    return true;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: aha-gen-arith --out DIR [--seed N] [--difficulty 1|2|3] [--sft N] [--train N]\n"
            "                     [--eval N] [--max-terms T] [--max-digits D] [--ops \"+-*\"]\n"
            "                     [--word-share F] [--guess-share F] [--guess-spread K]\n"
            "  difficulty 1: a + b, a - b with 1-2 digit numbers (default)\n"
            "  difficulty 2: 2-3 numbers of 1-2 digits, + and -\n"
            "  difficulty 3: 2-3 numbers of 1-3 digits, + - and *, negatives allowed\n"
            "  --guess-share F: that share of the SFT completions skip the steps and guess a\n"
            "  number within K of the answer (--guess-spread, default 5)\n");
    return 2;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_share(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= 0 && v <= 1)) return false;
    *out = v;
    return true;
}

/* The guess of one SFT completion: the answer moved by a uniform offset, drawn again while
 * it would be negative in a task without negatives (the answer itself always qualifies). */
static long guess_of(long answer, const gen_opts *o, aha_rng *rng)
{
    for (;;) {
        long g = answer - o->guess_spread + (long)aha_rng_below(rng, (uint64_t)(2 * o->guess_spread + 1));
        if (g >= 0 || o->allow_negative) return g;
    }
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    long seed = 1, difficulty = 1, n_sft = 1000, n_train = 2000, n_eval = 200;
    long max_terms = -1, max_digits = -1;
    const char *ops = NULL;
    double word_share = 0.5, guess_share = 0;
    long guess_spread = 5;
    for (int i = 1; i < argc; i += 2) { /* every flag takes one value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return usage(), 0;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--seed") == 0) ok = ok && parse_long(v, 0, LONG_MAX, &seed);
        else if (strcmp(a, "--difficulty") == 0) ok = ok && parse_long(v, 1, 3, &difficulty);
        else if (strcmp(a, "--sft") == 0) ok = ok && parse_long(v, 0, 10000000, &n_sft);
        else if (strcmp(a, "--train") == 0) ok = ok && parse_long(v, 0, 10000000, &n_train);
        else if (strcmp(a, "--eval") == 0) ok = ok && parse_long(v, 0, 1000000, &n_eval);
        else if (strcmp(a, "--max-terms") == 0) ok = ok && parse_long(v, 2, MAX_TERMS, &max_terms);
        else if (strcmp(a, "--max-digits") == 0) ok = ok && parse_long(v, 1, 4, &max_digits);
        else if (strcmp(a, "--ops") == 0) ops = v;
        else if (strcmp(a, "--guess-spread") == 0) ok = ok && parse_long(v, 0, 1000, &guess_spread);
        else if (strcmp(a, "--word-share") == 0) ok = ok && parse_share(v, &word_share);
        else if (strcmp(a, "--guess-share") == 0) ok = ok && parse_share(v, &guess_share);
        else {
            fprintf(stderr, "aha-gen-arith: unknown flag %s\n", a);
            return usage();
        }
        if (!ok) {
            fprintf(stderr, "aha-gen-arith: bad or missing value for %s\n", a);
            return usage();
        }
    }
    if (!out) {
        fprintf(stderr, "aha-gen-arith: --out DIR is required\n");
        return usage();
    }
    gen_opts o = {2, 2, 2, "+-", false, word_share, guess_share, guess_spread};
    if (difficulty == 2) o.max_terms = 3;
    if (difficulty == 3) {
        o.max_terms = 3;
        o.max_digits = 3;
        strcpy(o.ops, "+-*");
        o.allow_negative = true;
    }
    if (max_terms > 0) o.max_terms = (int)max_terms;
    if (max_digits > 0) o.max_digits = (int)max_digits;
    if (ops) {
        if (!*ops || strlen(ops) > 3 || strspn(ops, "+-*") != strlen(ops)) {
            fprintf(stderr, "aha-gen-arith: --ops takes up to three of + - *, got \"%s\"\n", ops);
            return 2;
        }
        strcpy(o.ops, ops);
    }

    aha_err err = {0};
    if (aha_mkdirs(out, &err) != AHA_OK) {
        fprintf(stderr, "aha-gen-arith: %s\n", aha_err_msg(&err));
        return 1;
    }
    /* separate streams, so changing one set's size leaves the others' problems alone */
    aha_rng r_eval, r_train, r_sft, r_guess;
    aha_rng_seed(&r_eval, (uint64_t)seed, 1);
    aha_rng_seed(&r_train, (uint64_t)seed, 2);
    aha_rng_seed(&r_sft, (uint64_t)seed, 3);
    aha_rng_seed(&r_guess, (uint64_t)seed, 4);
    strset held = {0};
    sbuf b_eval = {0}, b_train = {0}, b_sft = {0};
    int rc = 0;
    problem p;
    for (long i = 0, tries = 0; i < n_eval; tries++) {
        if (tries > 1000 + 200 * n_eval) {
            fprintf(stderr,
                    "aha-gen-arith: found only %ld distinct problems for --eval %ld at this "
                    "difficulty; ask for fewer or raise --max-digits/--max-terms\n", i, n_eval);
            rc = 1;
            goto done;
        }
        draw(&p, &o, &r_eval);
        if (set_has(&held, p.expr)) continue;
        if (!set_add(&held, p.expr)) goto oom;
        render_prompt(&p, &r_eval, o.word_share);
        char id[32];
        snprintf(id, sizeof id, "eval-%06ld", i);
        char answer[32];
        snprintf(answer, sizeof answer, "%ld", p.result);
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "prompt", p.prompt, "answer",
                              answer, "lang", "en", "expr", p.expr);
        if (!j || !sb_line(&b_eval, j)) goto oom;
        i++;
    }
    /* train and sft draw around the held-out expressions; a space almost all held out would
     * never finish, so give up after many misses in a row */
    for (int set = 0; set < 2; set++) {
        long want = set == 0 ? n_train : n_sft;
        aha_rng *rng = set == 0 ? &r_train : &r_sft;
        for (long i = 0, misses = 0; i < want;) {
            draw(&p, &o, rng);
            if (set_has(&held, p.expr)) {
                if (++misses > 100000) {
                    fprintf(stderr, "aha-gen-arith: the eval set holds nearly every problem of "
                                    "this difficulty; lower --eval\n");
                    rc = 1;
                    goto done;
                }
                continue;
            }
            misses = 0;
            render_prompt(&p, rng, o.word_share);
            char id[32], completion[768], answer[32];
            snprintf(id, sizeof id, "%s-%06ld", set == 0 ? "train" : "sft", i);
            snprintf(answer, sizeof answer, "%ld", p.result);
            json_t *j;
            if (set == 0) {
                j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "prompt", p.prompt, "answer",
                              answer, "lang", "en", "expr", p.expr);
            } else {
                if (o.guess_share > 0 && aha_rng_f64(&r_guess) < o.guess_share)
                    snprintf(completion, sizeof completion, "<think> </think> <answer> %ld </answer>",
                             guess_of(p.result, &o, &r_guess));
                else
                    snprintf(completion, sizeof completion, "<think> %s </think> <answer> %ld </answer>",
                             p.steps, p.result);
                j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "prompt", p.prompt,
                              "completion", completion, "answer", answer, "expr", p.expr);
            }
            if (!j || !sb_line(set == 0 ? &b_train : &b_sft, j)) goto oom;
            i++;
        }
    }
    const struct {
        const char *name;
        sbuf *b;
        long n;
    } files[] = {{"eval.jsonl", &b_eval, n_eval}, {"train.jsonl", &b_train, n_train},
                 {"sft.jsonl", &b_sft, n_sft}};
    for (size_t f = 0; f < AHA_ARRAY_LEN(files); f++) {
        char path[4096];
        if (aha_path_join(path, sizeof path, out, files[f].name, &err) != AHA_OK ||
            aha_write_file_atomic(path, files[f].b->buf ? files[f].b->buf : "", files[f].b->len,
                                  &err) != AHA_OK) {
            fprintf(stderr, "aha-gen-arith: %s\n", aha_err_msg(&err));
            rc = 1;
            goto done;
        }
        printf("%s: %ld lines\n", path, files[f].n);
    }
    goto done;
oom:
    fprintf(stderr, "aha-gen-arith: out of memory\n");
    rc = 1;
done:
    set_free(&held);
    free(b_eval.buf);
    free(b_train.buf);
    free(b_sft.buf);
    return rc;
}
