/* test_dataset: the four loaders with field mapping, malformed lines (file:line errors and
 * skipping), answer extraction, the data order and its cursor, and mixing. */
#include <jansson.h>
#include <stdint.h>

#include "../../harness.h"
#include "base/fs.h"
#include "dataset.h"

static char dir[] = "/tmp/aha_dataset_XXXXXX";

static const char *write_tmp(const char *name, const char *text)
{
    static char path[8][512];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    aha_err e = {0};
    CHECK(aha_write_file_atomic(p, text, strlen(text), &e) == AHA_OK, "%s", e.msg);
    return p;
}

/* a dataset spec through the spec parser, as a job would give it */
static int ds_spec(const char *ds_json, aha_job_spec *job)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "{\"kind\":\"grpo\",\"model\":\"m\",\"steps\":1,\"dataset\":%s}", ds_json);
    aha_err e = {0};
    int st = aha_job_spec_parse(buf, strlen(buf), job, &e);
    CHECK(st == AHA_OK, "%s", e.msg);
    return st;
}

static void test_generic(void)
{
    const char *p = write_tmp("gen.jsonl",
                              "{\"prompt\":\"1+1?\",\"answer\":\"2\",\"lang\":\"en\",\"id\":\"a\"}\n"
                              "\n"
                              "{\"question\":\"2+3?\",\"answer\":5}\r\n"
                              "   \n"
                              "{\"prompt\":\"x\",\"answer\":2.5,\"extra\":[1,2]}");
    char js[600];
    snprintf(js, sizeof js, "\"%s\"", p);
    aha_job_spec job;
    if (ds_spec(js, &job)) return;
    aha_dataset ds;
    aha_err e = {0};
    CHECK(aha_dataset_load(&job.dataset, &ds, &e) == AHA_OK, "%s", e.msg);
    CHECK(ds.n == 3, "3 examples, got %lld", (long long)ds.n);
    if (ds.n == 3) {
        CHECK(strcmp(ds.items[0].prompt, "1+1?") == 0 && strcmp(ds.items[0].answer, "2") == 0, "ex0");
        CHECK(strcmp(ds.items[0].lang, "en") == 0 && strcmp(ds.items[0].id, "a") == 0, "lang/id");
        CHECK(strcmp(ds.items[1].prompt, "2+3?") == 0, "question fallback");
        CHECK(strcmp(ds.items[1].answer, "5") == 0, "numeric answer as text: %s", ds.items[1].answer);
        CHECK(ds.items[1].line == 3 && strcmp(ds.items[1].id, "gen:3") == 0, "line/id %s", ds.items[1].id);
        CHECK(strcmp(ds.items[2].answer, "2.5") == 0, "real answer %s", ds.items[2].answer);
        CHECK(ds.items[1].lang == NULL, "no lang");
    }
    aha_dataset_free(&ds);
    aha_job_spec_free(&job);

    /* field mapping */
    p = write_tmp("mapped.jsonl", "{\"q\":\"hi\",\"a\":\"7\",\"language\":\"fr\",\"uid\":12}\n");
    snprintf(js, sizeof js, "{\"path\":\"%s\",\"fields\":{\"prompt\":\"q\",\"answer\":\"a\","
             "\"lang\":\"language\",\"id\":\"uid\"}}", p);
    if (ds_spec(js, &job)) return;
    CHECK(aha_dataset_load(&job.dataset, &ds, &e) == AHA_OK, "%s", e.msg);
    CHECK(ds.n == 1 && strcmp(ds.items[0].prompt, "hi") == 0 && strcmp(ds.items[0].lang, "fr") == 0 &&
              strcmp(ds.items[0].id, "12") == 0, "mapped fields");
    aha_dataset_free(&ds);
    aha_job_spec_free(&job);
}

static void test_gsm8k_math_sft(void)
{
    const char *p = write_tmp("gsm.jsonl",
                              "{\"question\":\"Q1\",\"answer\":\"3 + 4 = <<3+4=7>>7\\n#### 7\"}\n"
                              "{\"question\":\"Q2\",\"answer\":\"a #### b\\n####  1,000 \"}\n");
    char js[600];
    snprintf(js, sizeof js, "{\"path\":\"%s\",\"format\":\"gsm8k\"}", p);
    aha_job_spec job;
    if (ds_spec(js, &job)) return;
    aha_dataset ds;
    aha_err e = {0};
    CHECK(aha_dataset_load(&job.dataset, &ds, &e) == AHA_OK, "%s", e.msg);
    CHECK(ds.n == 2 && strcmp(ds.items[0].answer, "7") == 0 && strcmp(ds.items[1].answer, "1,000") == 0,
          "gsm8k answers");
    aha_dataset_free(&ds);
    aha_job_spec_free(&job);

    p = write_tmp("math.jsonl",
                  "{\"problem\":\"P\",\"solution\":\"so \\\\boxed{1} then $\\\\boxed{\\\\frac{1}{2}}$.\"}\n"
                  "{\"problem\":\"P2\",\"solution\":\"x = \\\\boxed 5$ ok\"}\n");
    snprintf(js, sizeof js, "{\"path\":\"%s\",\"format\":\"math\"}", p);
    if (ds_spec(js, &job)) return;
    CHECK(aha_dataset_load(&job.dataset, &ds, &e) == AHA_OK, "%s", e.msg);
    CHECK(ds.n == 2, "math n");
    if (ds.n == 2) {
        CHECK(strcmp(ds.items[0].answer, "\\frac{1}{2}") == 0, "last boxed: %s", ds.items[0].answer);
        CHECK(strcmp(ds.items[1].answer, "5") == 0, "boxed without braces: %s", ds.items[1].answer);
    }
    aha_dataset_free(&ds);
    aha_job_spec_free(&job);

    char *a;
    CHECK(aha_math_boxed_answer("\\boxed{a\\{b} \\boxed{c", &a, &e) == AHA_OK && strcmp(a, "a\\{b") == 0,
          "escaped brace, unclosed last ignored");
    free(a);
    CHECK(aha_math_boxed_answer("no box", &a, &e) == AHA_EFORMAT, "no boxed");
    CHECK(aha_gsm8k_answer("nothing", &a, &e) == AHA_EFORMAT, "no ####");
    CHECK(aha_gsm8k_answer("x ####   ", &a, &e) == AHA_EFORMAT, "empty after ####");

    const char *sft = write_tmp("sft.jsonl", "{\"prompt\":\"p\",\"completion\":\"<think> a </think> <answer> 1 </answer>\"}\n");
    aha_dataset_spec d = {0};
    d.path = (char *)sft;
    d.format = AHA_DS_SFT;
    d.prompt_field = "prompt";
    d.completion_field = "completion";
    d.lang_field = "lang";
    d.id_field = "id";
    d.name = "sft";
    CHECK(aha_dataset_load(&d, &ds, &e) == AHA_OK, "%s", e.msg);
    CHECK(ds.n == 1 && ds.items[0].answer == NULL && strstr(ds.items[0].completion, "<answer>"), "sft");
    aha_dataset_free(&ds);
}

static void test_malformed(void)
{
    static const struct {
        const char *text;
        int format; /* 0 generic, 1 gsm8k, 2 math */
        const char *want;
    } cases[] = {
        {"{\"prompt\":\"a\",\"answer\":\"1\"}\n{\"prompt\":\"b\"}\n", 0, ":2: missing field \"answer\""},
        {"{\"prompt\":\"a\",\"answer\":\"1\"}\n\n{bad json\n", 0, ":3: invalid JSON"},
        {"[1,2]\n", 0, ":1: not a JSON object"},
        {"{\"prompt\":3,\"answer\":\"1\"}\n", 0, ":1: field \"prompt\" must be a string, got an integer"},
        {"{\"prompt\":\"\",\"answer\":\"1\"}\n", 0, ":1: field \"prompt\" is empty"},
        {"{\"prompt\":\"a\",\"answer\":[1]}\n", 0, ":1: field \"answer\" must be a string or a number, got an array"},
        {"{\"question\":\"a\",\"answer\":\"no marker\"}\n", 1, ":1: field \"answer\": no \"####\""},
        {"{\"problem\":\"a\",\"solution\":\"\\\\boxed{1\"}\n", 2, ":1: field \"solution\": no complete \\boxed{}"},
        {"{\"prompt\":\"a\",\"answer\":\"1\",\"lang\":5}\n", 0, ":1: field \"lang\" must be a string"},
        {"\n\n", 0, "no examples"},
    };
    static const char *const fmts[] = {"generic", "gsm8k", "math"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.jsonl", i);
        const char *p = write_tmp(name, cases[i].text);
        char js[600];
        snprintf(js, sizeof js, "{\"path\":\"%s\",\"format\":\"%s\"}", p, fmts[cases[i].format]);
        aha_job_spec job;
        if (ds_spec(js, &job)) continue;
        aha_dataset ds;
        aha_err e = {0};
        aha_status st = aha_dataset_load(&job.dataset, &ds, &e);
        CHECK(st != AHA_OK, "case %zu accepted", i);
        CHECK(strstr(e.msg, cases[i].want) && strstr(e.msg, p), "case %zu: \"%s\" lacks \"%s\" or path", i,
              e.msg, cases[i].want);
        if (st == AHA_OK) aha_dataset_free(&ds);
        aha_job_spec_free(&job);
    }
    /* skip_bad_lines counts and keeps going */
    const char *p = write_tmp("mixed.jsonl", "{\"prompt\":\"a\",\"answer\":\"1\"}\n{oops\n"
                                             "{\"prompt\":\"b\"}\n{\"prompt\":\"c\",\"answer\":\"3\"}\n");
    char js[600];
    snprintf(js, sizeof js, "{\"path\":\"%s\",\"skip_bad_lines\":true}", p);
    aha_job_spec job;
    if (ds_spec(js, &job)) return;
    aha_dataset ds;
    aha_err e = {0};
    CHECK(aha_dataset_load(&job.dataset, &ds, &e) == AHA_OK, "%s", e.msg);
    CHECK(ds.n == 2 && ds.skipped == 2, "kept %lld skipped %lld", (long long)ds.n, (long long)ds.skipped);
    CHECK(strstr(ds.first_skip, "mixed.jsonl:2: invalid JSON") != NULL, "first skip: %s", ds.first_skip);
    CHECK(ds.n == 2 && ds.items[1].line == 4, "line numbers survive skips");
    aha_dataset_free(&ds);
    job.dataset.limit = 1;
    CHECK(aha_dataset_load(&job.dataset, &ds, &e) == AHA_OK && ds.n == 1, "limit");
    aha_dataset_free(&ds);
    aha_job_spec_free(&job);
    aha_dataset_spec missing = {.path = "/nonexistent/x.jsonl"};
    CHECK(aha_dataset_load(&missing, &ds, &e) != AHA_OK && strstr(e.msg, "/nonexistent/x.jsonl"),
          "missing file named: %s", e.msg);
}

static void test_order(void)
{
    aha_data_order a, b;
    aha_err e = {0};
    CHECK(aha_data_order_init(&a, 10, 5, true, &e) == AHA_OK, "%s", e.msg);
    int64_t seq[35];
    int seen[10] = {0};
    for (int i = 0; i < 35; i++) seq[i] = aha_data_order_next(&a);
    for (int i = 0; i < 10; i++) seen[seq[i]]++;
    int perm_ok = 1;
    for (int i = 0; i < 10; i++) perm_ok &= seen[i] == 1;
    CHECK(perm_ok, "an epoch visits every example once");
    int same = 1, identity = 1;
    for (int i = 0; i < 10; i++) {
        same &= seq[i] == seq[10 + i];
        identity &= seq[i] == i;
    }
    CHECK(!same && !identity, "epochs differ and are shuffled");
    /* restore from a cursor taken mid-epoch gives the same continuation */
    aha_data_order_free(&a);
    CHECK(aha_data_order_init(&a, 10, 5, true, &e) == AHA_OK, "%s", e.msg);
    for (int i = 0; i < 17; i++) aha_data_order_next(&a);
    char *cj;
    CHECK(aha_data_cursor_to_json(&a.c, &cj, &e) == AHA_OK, "%s", e.msg);
    aha_data_cursor c;
    CHECK(aha_data_cursor_from_json(cj, strlen(cj), &c, &e) == AHA_OK, "%s", e.msg);
    free(cj);
    CHECK(aha_data_order_restore(&b, &c, 10, &e) == AHA_OK, "%s", e.msg);
    int cont = 1;
    for (int i = 17; i < 35; i++) cont &= aha_data_order_next(&b) == seq[i];
    CHECK(cont, "restored order continues exactly");
    aha_data_order_free(&a);
    aha_data_order_free(&b);
    CHECK(aha_data_order_restore(&b, &c, 11, &e) == AHA_EPRECOND && strstr(e.msg, "10"), "size change");
    CHECK(aha_data_cursor_from_json("{\"seed\":\"x\",\"n\":1,\"epoch\":0,\"pos\":0,\"shuffle\":true}", 58, &c,
                                    &e) != AHA_OK, "bad seed");
    aha_data_cursor big = {UINT64_MAX - 1, 3, 2, 1, false};
    CHECK(aha_data_cursor_to_json(&big, &cj, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_data_cursor_from_json(cj, strlen(cj), &c, &e) == AHA_OK && c.seed == UINT64_MAX - 1 &&
              c.epoch == 2 && c.pos == 1 && !c.shuffle, "64-bit seed round trip");
    free(cj);
    CHECK(aha_data_order_init(&a, 4, 1, false, &e) == AHA_OK, "%s", e.msg);
    int inorder = 1;
    for (int i = 0; i < 8; i++) inorder &= aha_data_order_next(&a) == i % 4;
    CHECK(inorder, "shuffle off keeps file order");
    aha_data_order_free(&a);
}

static int count_lines_with(const char *buf, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(buf, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_mix(void)
{
    char a[4096] = "", b[512] = "";
    for (int i = 0; i < 30; i++) {
        size_t l = strlen(a);
        snprintf(a + l, sizeof a - l, "{\"src\":\"A\",\"i\":%d}\n", i);
    }
    for (int i = 0; i < 4; i++) {
        size_t l = strlen(b);
        snprintf(b + l, sizeof b - l, "{\"src\":\"B\",\"i\":%d}\n", i);
    }
    const char *pa = write_tmp("a.jsonl", a);
    const char *pb = write_tmp("b.jsonl", b);
    char js[1024];
    snprintf(js, sizeof js, "{\"kind\":\"mix\",\"seed\":3,\"total\":20,\"sources\":["
             "{\"path\":\"%s\",\"proportion\":3},{\"path\":\"%s\",\"proportion\":2}]}", pa, pb);
    aha_job_spec job;
    aha_err e = {0};
    CHECK(aha_job_spec_parse(js, strlen(js), &job, &e) == AHA_OK, "%s", e.msg);
    char out1[600], out2[600];
    snprintf(out1, sizeof out1, "%s/mix1.jsonl", dir);
    snprintf(out2, sizeof out2, "%s/mix2.jsonl", dir);
    aha_mix_report rep;
    CHECK(aha_mix_run(&job, out1, &rep, &e) == AHA_OK, "%s", e.msg);
    CHECK(rep.total == 20 && rep.taken[0] == 12 && rep.taken[1] == 8, "proportions 3:2 of 20: %lld %lld",
          (long long)rep.taken[0], (long long)rep.taken[1]);
    CHECK(aha_mix_run(&job, out2, &rep, &e) == AHA_OK, "%s", e.msg);
    char *t1, *t2;
    size_t l1, l2;
    CHECK(aha_read_file(out1, 1 << 20, &t1, &l1, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_read_file(out2, 1 << 20, &t2, &l2, &e) == AHA_OK, "%s", e.msg);
    CHECK(l1 == l2 && memcmp(t1, t2, l1) == 0, "same seed, same file");
    CHECK(count_lines_with(t1, "\"A\"") == 12 && count_lines_with(t1, "\"B\"") == 8, "line sources");
    /* B (4 lines) asked for 8: every line twice */
    int twice = 1;
    for (int i = 0; i < 4; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "{\"src\":\"B\",\"i\":%d}", i);
        twice &= count_lines_with(t1, needle) == 2;
    }
    CHECK(twice, "upsampling repeats whole copies");
    free(t1);
    free(t2);
    aha_job_spec_free(&job);

    /* concatenation without shuffle keeps order; count subsamples */
    snprintf(js, sizeof js, "{\"kind\":\"mix\",\"shuffle\":false,\"sources\":[\"%s\",{\"path\":\"%s\",\"count\":5}]}", pb, pa);
    CHECK(aha_job_spec_parse(js, strlen(js), &job, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_mix_run(&job, out1, &rep, &e) == AHA_OK, "%s", e.msg);
    CHECK(rep.total == 9 && rep.taken[0] == 4 && rep.taken[1] == 5, "concat counts");
    CHECK(aha_read_file(out1, 1 << 20, &t1, &l1, &e) == AHA_OK, "%s", e.msg);
    CHECK(strncmp(t1, b, strlen(b)) == 0, "first source first, in order");
    free(t1);
    aha_job_spec_free(&job);

    const char *bad = write_tmp("badmix.jsonl", "{\"x\":1}\n\"str\"\n");
    snprintf(js, sizeof js, "{\"kind\":\"mix\",\"sources\":[\"%s\"]}", bad);
    CHECK(aha_job_spec_parse(js, strlen(js), &job, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_mix_run(&job, out1, &rep, &e) == AHA_EFORMAT && strstr(e.msg, "badmix.jsonl:2"), "%s", e.msg);
    job.mix_skip_bad_lines = true;
    CHECK(aha_mix_run(&job, out1, &rep, &e) == AHA_OK && rep.skipped[0] == 1 && rep.total == 1, "skip in mix");
    aha_job_spec_free(&job);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_generic();
    test_gsm8k_math_sft();
    test_malformed();
    test_order();
    test_mix();
    aha_remove_tree(dir, NULL);
    return th_done("dataset");
}
