/* test_gen_arith: the demo data generator (argv[1] = the aha-gen-arith executable): same
 * seed → same bytes, another seed → other problems, every answer right (checked by an
 * independent recursive-descent evaluator), eval disjoint from train and sft, the SFT
 * completions in the R1 format, guesses (--guess-share) where asked and nowhere else, and
 * the files readable by the learner's loaders. */
#include <jansson.h>
#include <stdint.h>
#include <sys/wait.h>

#include "../../harness.h"
#include "base/fs.h"
#include "dataset.h"

static char root[] = "/tmp/aha_gen_XXXXXX";

static int run(const char *exe, const char *dir, const char *seed, const char *difficulty, const char *extra)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' --out '%s/%s' --seed %s --difficulty %s --sft 300 --train 400 "
             "--eval 100 %s >/dev/null", exe, root, dir, seed, difficulty, extra);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *dir, const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, file);
    char *buf = NULL;
    size_t len;
    aha_err e = {0};
    CHECK(aha_read_file(path, 64 << 20, &buf, &len, &e) == AHA_OK, "%s", e.msg);
    return buf;
}

/* expr := term (('+'|'-') term)*; term := num ('*' num)* */
static long parse_num(const char **p)
{
    while (**p == ' ') (*p)++;
    long v = strtol(*p, (char **)p, 10);
    while (**p == ' ') (*p)++;
    return v;
}

static long parse_term(const char **p)
{
    long v = parse_num(p);
    while (**p == '*') {
        (*p)++;
        v *= parse_num(p);
    }
    return v;
}

static long eval_expr(const char *s)
{
    const char *p = s;
    long v = parse_term(&p);
    while (*p == '+' || *p == '-') {
        char op = *p++;
        long t = parse_term(&p);
        v = op == '+' ? v + t : v - t;
    }
    return v;
}

typedef struct {
    char **v;
    int n;
} list;

static int load_exprs(const char *buf, list *l, int check_completion)
{
    int bad = 0;
    const char *p = buf;
    l->v = NULL;
    l->n = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        json_t *o = json_loadb(p, len, 0, NULL);
        const char *expr = json_string_value(json_object_get(o, "expr"));
        const char *ans = json_string_value(json_object_get(o, "answer"));
        const char *prompt = json_string_value(json_object_get(o, "prompt"));
        if (!expr || !ans || !prompt) bad++;
        else {
            char want[32];
            snprintf(want, sizeof want, "%ld", eval_expr(expr));
            if (strcmp(want, ans) != 0) {
                fprintf(stderr, "  wrong answer: %s = %s, want %s\n", expr, ans, want);
                bad++;
            }
            if (check_completion) {
                const char *c = json_string_value(json_object_get(o, "completion"));
                char tail[64];
                snprintf(tail, sizeof tail, "</think> <answer> %s </answer>", want);
                if (!c || strncmp(c, "<think> ", 8) != 0 || !strstr(c, tail) ||
                    strcmp(c + strlen(c) - strlen(tail), tail) != 0) {
                    fprintf(stderr, "  bad completion: %s\n", c ? c : "(none)");
                    bad++;
                }
            }
            l->v = realloc(l->v, (size_t)(l->n + 1) * sizeof *l->v);
            l->v[l->n++] = strdup(expr);
        }
        json_decref(o);
        p += len + (nl ? 1 : 0);
    }
    return bad;
}

static int overlap(const list *a, const list *b)
{
    int n = 0;
    for (int i = 0; i < a->n; i++)
        for (int j = 0; j < b->n; j++) n += strcmp(a->v[i], b->v[j]) == 0;
    return n;
}

static void list_free(list *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

/* Line i of a JSONL buffer as an object (NULL past the end). */
static json_t *line_at(const char *buf, int i)
{
    const char *p = buf;
    for (; i > 0 && p; i--) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    if (!p || !*p) return NULL;
    const char *nl = strchr(p, '\n');
    return json_loadb(p, nl ? (size_t)(nl - p) : strlen(p), 0, NULL);
}

/* Run g (--guess-share 0.5 --guess-spread 3) against run a (same seed, no guesses): the same
 * problems in every file, train and eval unchanged, each SFT line either a's worked completion
 * or a guess within 3 of the answer and not negative, about half of them guesses, and the same
 * bytes again in run h. */
static void check_guesses(const char *exe)
{
    const char *files[] = {"train.jsonl", "eval.jsonl", "sft.jsonl"};
    for (int f = 0; f < 3; f++) {
        char *g = slurp("g", files[f]), *h = slurp("h", files[f]), *a = slurp("a", files[f]);
        CHECK(g && h && strcmp(g, h) == 0, "guesses %s: same seed, same bytes", files[f]);
        if (f < 2) CHECK(g && a && strcmp(g, a) == 0, "guesses leave %s alone", files[f]);
        free(h);
        if (f < 2 || !g || !a) {
            free(g);
            free(a);
            continue;
        }
        int n = 0, guesses = 0, exact = 0, bad = 0;
        for (json_t *og, *oa; (og = line_at(g, n)) && (oa = line_at(a, n)); n++) {
            const char *cg = json_string_value(json_object_get(og, "completion"));
            const char *ca = json_string_value(json_object_get(oa, "completion"));
            const char *ans = json_string_value(json_object_get(og, "answer"));
            bad += !cg || !ca || !ans ||
                   !json_equal(json_object_get(og, "expr"), json_object_get(oa, "expr"));
            long guess;
            char tail[8];
            if (cg && ca && ans && strcmp(cg, ca) != 0) {
                guesses++;
                long want = strtol(ans, NULL, 10);
                if (sscanf(cg, "<think> </think> <answer> %ld </answer>%7s", &guess, tail) != 1 || guess < 0 ||
                    labs(guess - want) > 3) {
                    fprintf(stderr, "  bad guess for %s: %s\n", ans, cg);
                    bad++;
                }
                exact += guess == want;
            }
            json_decref(og);
            json_decref(oa);
        }
        CHECK(n == 300 && bad == 0, "guesses: %d lines, %d bad", n, bad);
        /* 300 draws at 0.5: the standard deviation is 8.7 lines */
        CHECK(guesses >= 110 && guesses <= 190, "guesses: %d of 300 at share 0.5", guesses);
        CHECK(exact > 0 && exact < guesses / 2, "guesses: %d of %d exact", exact, guesses);
        free(g);
        free(a);
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --out '%s/x' --guess-share 1.5 2>/dev/null", exe, root);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "bad guess share refused");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !mkdtemp(root)) {
        fprintf(stderr, "usage: test_gen_arith AHA_GEN_ARITH\n");
        return 1;
    }
    const char *exe = argv[1];
    CHECK(run(exe, "a", "7", "1", "") == 0, "run a");
    CHECK(run(exe, "b", "7", "1", "") == 0, "run b");
    CHECK(run(exe, "c", "8", "1", "") == 0, "run c");
    CHECK(run(exe, "d", "7", "3", "") == 0, "run d");
    CHECK(run(exe, "g", "7", "1", "--guess-share 0.5 --guess-spread 3") == 0, "run g");
    CHECK(run(exe, "h", "7", "1", "--guess-share 0.5 --guess-spread 3") == 0, "run h");
    const char *files[] = {"sft.jsonl", "train.jsonl", "eval.jsonl"};
    for (int f = 0; f < 3; f++) {
        char *a = slurp("a", files[f]), *b = slurp("b", files[f]), *c = slurp("c", files[f]);
        CHECK(a && b && strcmp(a, b) == 0, "%s: same seed, same bytes", files[f]);
        CHECK(a && c && strcmp(a, c) != 0, "%s: another seed, other problems", files[f]);
        free(a);
        free(b);
        free(c);
    }
    const char *dirs[] = {"a", "d"};
    for (int d = 0; d < 2; d++) {
        char *sft = slurp(dirs[d], "sft.jsonl"), *train = slurp(dirs[d], "train.jsonl"),
             *ev = slurp(dirs[d], "eval.jsonl");
        if (!sft || !train || !ev) continue;
        list ls, lt, le;
        CHECK(load_exprs(sft, &ls, 1) == 0, "%s: sft answers and completions", dirs[d]);
        CHECK(load_exprs(train, &lt, 0) == 0, "%s: train answers", dirs[d]);
        CHECK(load_exprs(ev, &le, 0) == 0, "%s: eval answers", dirs[d]);
        CHECK(ls.n == 300 && lt.n == 400 && le.n == 100, "%s: counts %d %d %d", dirs[d], ls.n, lt.n, le.n);
        CHECK(overlap(&le, &lt) == 0 && overlap(&le, &ls) == 0, "%s: eval disjoint from train and sft",
              dirs[d]);
        int dup = 0;
        for (int i = 0; i < le.n; i++)
            for (int j = 0; j < i; j++) dup += strcmp(le.v[i], le.v[j]) == 0;
        CHECK(dup == 0, "%s: eval problems distinct", dirs[d]);
        list_free(&ls);
        list_free(&lt);
        list_free(&le);
        free(sft);
        free(train);
        free(ev);
    }
    check_guesses(exe);
    /* the learner's loaders read them */
    char path[1024];
    snprintf(path, sizeof path, "%s/a/train.jsonl", root);
    aha_dataset_spec g = {.path = path, .name = "train", .format = AHA_DS_GENERIC, .prompt_field = "prompt",
                          .answer_field = "answer", .lang_field = "lang", .id_field = "id"};
    aha_dataset ds;
    aha_err e = {0};
    CHECK(aha_dataset_load(&g, &ds, &e) == AHA_OK && ds.n == 400 && strcmp(ds.items[0].lang, "en") == 0,
          "generic loader: %s", e.msg);
    if (ds.n) aha_dataset_free(&ds);
    snprintf(path, sizeof path, "%s/a/sft.jsonl", root);
    aha_dataset_spec s = {.path = path, .name = "sft", .format = AHA_DS_SFT, .prompt_field = "prompt",
                          .completion_field = "completion", .lang_field = "lang", .id_field = "id"};
    CHECK(aha_dataset_load(&s, &ds, &e) == AHA_OK && ds.n == 300, "sft loader: %s", e.msg);
    if (ds.n) aha_dataset_free(&ds);
    /* bad flags fail with a message, not a crash */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --out '%s/x' --difficulty 9 2>/dev/null", exe, root);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "bad difficulty refused");
    snprintf(cmd, sizeof cmd, "'%s' --out '%s/x' --max-digits 1 --max-terms 2 --ops + --eval 1000 2>/dev/null",
             exe, root);
    st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "impossible eval size refused");
    aha_remove_tree(root, NULL);
    return th_done("gen_arith");
}
