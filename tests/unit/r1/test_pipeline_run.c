/* test_pipeline_run: the pipeline runner (services/learner/jobkinds.c) on stages that need no
 * service (mix), through aha_job_run:
 *   - references resolve to the recorded outputs of earlier stages (a stage's default output
 *     and an explicit "output"), each stage works in its own directory with its resolved
 *     spec, the pipeline's metrics.jsonl gathers every stage's records, stage events come in
 *     order;
 *   - a second run skips every done stage and rewrites nothing;
 *   - a failing stage stops the pipeline (later stages stay pending) with an error naming it;
 *     once the cause is fixed, a rerun skips the done stages and runs the failed one on;
 *   - a cancel between stages leaves the rest pending, and the rerun runs only those;
 *   - skip_bad_lines of a mix source is reported (record and log).
 * Line counts are checked against the sources written here. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../harness.h"
#include "base/fs.h"
#include "runner.h"

typedef struct {
    char stages[8192];
    char logs[8192];
    int n_records;
    const char *cancel_on; /* set *cancel when this text appears in a stage event */
    volatile int *cancel;
} sink;

static void emit(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message)
{
    (void)step;
    sink *s = user;
    if (type == AHA_EV_STAGE && message) {
        size_t l = strlen(s->stages);
        snprintf(s->stages + l, sizeof s->stages - l, "%s\n", message);
        if (s->cancel_on && strstr(message, s->cancel_on)) *s->cancel = 1;
    }
    if (type == AHA_EV_LOG && message) {
        size_t l = strlen(s->logs);
        snprintf(s->logs + l, sizeof s->logs - l, "%s\n", message);
    }
    if (type == AHA_EV_METRICS && json) s->n_records++;
}

static aha_status run(const char *spec_json, const char *dir, sink *s, aha_err *err)
{
    aha_job_spec spec;
    AHA_TRY(aha_job_spec_parse(spec_json, strlen(spec_json), &spec, err));
    volatile int cancel = 0;
    int64_t ps = 0, pt = 0;
    s->cancel = &cancel;
    aha_learner_env env = {.device = "cpu"};
    aha_job_ctx ctx = {.job_id = "p", .job_dir = dir, .spec = &spec, .env = &env, .emit = emit, .user = s,
                       .cancel = &cancel, .progress_step = &ps, .progress_total = &pt};
    aha_status st = aha_job_run(&ctx, err);
    aha_job_spec_free(&spec);
    return st;
}

static int count_lines(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    aha_err e = {0};
    if (aha_read_file(path, 1 << 24, &text, &len, &e) != AHA_OK) return -1;
    int n = 0;
    for (size_t i = 0; i < len; i++) n += text[i] == '\n';
    free(text);
    return n;
}

static int count_in(const char *path, const char *needle)
{
    char *text = NULL;
    size_t len = 0;
    aha_err e = {0};
    if (aha_read_file(path, 1 << 24, &text, &len, &e) != AHA_OK) return -1;
    int n = 0;
    for (char *p = text; (p = strstr(p, needle)); p++) n++;
    free(text);
    return n;
}

static double mtime_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return -1;
    return (double)sb.st_mtim.tv_sec + 1e-9 * (double)sb.st_mtim.tv_nsec;
}

static const char *stage_status(const char *dir, int i, char *buf, size_t cap)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/pipeline.json", dir);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    const char *s = json_string_value(json_object_get(json_array_get(json_object_get(o, "stages"), (size_t)i), "status"));
    snprintf(buf, cap, "%s", s ? s : "?");
    json_decref(o);
    return buf;
}

static void write_lines(const char *path, const char *tag, int n, int bad_at)
{
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++) {
        if (i == bad_at) fprintf(f, "{\"prompt\": \"broken\n");
        fprintf(f, "{\"prompt\": \"%s %d\", \"completion\": \"c%d\"}\n", tag, i, i);
    }
    if (f) fclose(f);
}

int main(void)
{
    char root[] = "/tmp/aha-test-pipeline-run-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char s1[600], s2[600], s3[600], explicit_out[600], j1[600], j2[600], j3[600], path[1200], st_buf[32];
    snprintf(s1, sizeof s1, "%s/one.jsonl", root);
    snprintf(s2, sizeof s2, "%s/two.jsonl", root);
    snprintf(s3, sizeof s3, "%s/three.jsonl", root);
    snprintf(explicit_out, sizeof explicit_out, "%s/b-out.jsonl", root);
    snprintf(j1, sizeof j1, "%s/job1", root);
    snprintf(j2, sizeof j2, "%s/job2", root);
    snprintf(j3, sizeof j3, "%s/job3", root);
    write_lines(s1, "one", 3, -1);
    write_lines(s2, "two", 4, 2); /* a malformed line before its third line */
    aha_err err = {0};

    /* a: one.jsonl; b: a's output + two.jsonl (skipping the bad line) into an explicit file;
     * c: 5 lines drawn from b's output */
    char spec[4096];
    snprintf(spec, sizeof spec,
             "{\"kind\": \"pipeline\", \"seed\": 7, \"stages\": ["
             " {\"name\": \"a\", \"kind\": \"mix\", \"sources\": [\"%s\"]},"
             " {\"name\": \"b\", \"kind\": \"mix\", \"sources\": [\"${stages.a.dataset}\", \"%s\"],"
             "  \"skip_bad_lines\": true, \"output\": \"%s\"},"
             " {\"name\": \"c\", \"kind\": \"mix\", \"sources\": [{\"path\": \"${stages.b.dataset}\", \"proportion\": 1}],"
             "  \"total\": 5}]}",
             s1, s2, explicit_out);
    sink s;
    memset(&s, 0, sizeof s);
    aha_status st = run(spec, j1, &s, &err);
    CHECK(st == AHA_OK, "pipeline: %s", err.msg);
    snprintf(path, sizeof path, "%s/stages/01-a/dataset.jsonl", j1);
    CHECK(count_lines(path) == 3, "stage a: 3 lines in its directory (%d)", count_lines(path));
    CHECK(count_lines(explicit_out) == 7, "stage b: 3 + 4 lines in its explicit output (%d)", count_lines(explicit_out));
    snprintf(path, sizeof path, "%s/stages/03-c/dataset.jsonl", j1);
    CHECK(count_lines(path) == 5, "stage c: 5 lines (%d)", count_lines(path));
    snprintf(path, sizeof path, "%s/stages/03-c/spec.json", j1);
    CHECK(count_in(path, explicit_out) == 1, "stage c's resolved spec names b's output");
    snprintf(path, sizeof path, "%s/stages/02-b/spec.json", j1);
    CHECK(count_in(path, "/stages/01-a/dataset.jsonl") == 1, "stage b's resolved spec names a's output");
    snprintf(path, sizeof path, "%s/metrics.jsonl", j1);
    CHECK(count_lines(path) == 3 && count_in(path, "\"stage\":\"a\"") == 1 && count_in(path, "\"stage\":\"c\"") == 1,
          "the pipeline's metrics.jsonl holds the three mix records");
    CHECK(count_in(path, "\"skipped_lines\":1") == 1, "the skipped line is in b's record");
    CHECK(strstr(s.logs, "1 malformed lines skipped") != NULL, "and in the log:\n%s", s.logs);
    const char *ev[] = {"a (mix, 1/3): started", "a (mix, 1/3): done", "b (mix, 2/3): started", "b (mix, 2/3): done",
                        "c (mix, 3/3): started", "c (mix, 3/3): done"};
    const char *prev = s.stages;
    for (int i = 0; i < 6; i++) {
        const char *p = strstr(prev, ev[i]);
        CHECK(p != NULL, "stage event \"%s\" in order:\n%s", ev[i], s.stages);
        if (p) prev = p;
    }

    /* a second run: nothing to do */
    double m_b = mtime_of(explicit_out);
    memset(&s, 0, sizeof s);
    st = run(spec, j1, &s, &err);
    CHECK(st == AHA_OK && s.n_records == 0, "rerun: no stage ran (%d records): %s", s.n_records, err.msg);
    CHECK(strstr(s.stages, "a (mix, 1/3): done earlier, skipped") && strstr(s.stages, "c (mix, 3/3): done earlier, skipped"),
          "rerun: every stage skipped:\n%s", s.stages);
    CHECK(mtime_of(explicit_out) == m_b, "rerun: b's output untouched");

    /* a failing stage, then its fix */
    char spec2[4096];
    snprintf(spec2, sizeof spec2,
             "{\"kind\": \"pipeline\", \"stages\": ["
             " {\"name\": \"a\", \"kind\": \"mix\", \"sources\": [\"%s\"]},"
             " {\"name\": \"b\", \"kind\": \"mix\", \"sources\": [\"${stages.a.dataset}\", \"%s\"]},"
             " {\"name\": \"c\", \"kind\": \"mix\", \"sources\": [\"${stages.b.dataset}\"]}]}",
             s1, s3);
    memset(&s, 0, sizeof s);
    st = run(spec2, j2, &s, &err);
    CHECK(st != AHA_OK && strstr(err.msg, "stage b (mix)") && strstr(err.msg, "three.jsonl"), "failure names the stage: %s",
          err.msg);
    CHECK(!strcmp(stage_status(j2, 0, st_buf, sizeof st_buf), "done") &&
              !strcmp(stage_status(j2, 1, st_buf, sizeof st_buf), "failed") &&
              !strcmp(stage_status(j2, 2, st_buf, sizeof st_buf), "pending"),
          "done, failed, pending");
    CHECK(strstr(s.stages, "b (mix, 2/3): failed") && !strstr(s.stages, "c (mix, 3/3)"), "c never started:\n%s", s.stages);
    write_lines(s3, "three", 2, -1);
    snprintf(path, sizeof path, "%s/stages/01-a/dataset.jsonl", j2);
    double m_a = mtime_of(path);
    memset(&s, 0, sizeof s);
    st = run(spec2, j2, &s, &err);
    CHECK(st == AHA_OK, "after the fix: %s", err.msg);
    CHECK(s.n_records == 2 && mtime_of(path) == m_a, "a skipped, b and c ran (%d records)", s.n_records);
    snprintf(path, sizeof path, "%s/stages/03-c/dataset.jsonl", j2);
    CHECK(count_lines(path) == 5, "c: 3 + 2 lines (%d)", count_lines(path));
    snprintf(path, sizeof path, "%s/metrics.jsonl", j2);
    CHECK(count_lines(path) == 3, "the pipeline's records: one per stage (%d)", count_lines(path));

    /* cancelled between stages */
    memset(&s, 0, sizeof s);
    s.cancel_on = "a (mix, 1/3): done";
    st = run(spec2, j3, &s, &err);
    CHECK(st == AHA_ECANCELLED, "cancelled: %s %s", aha_status_name(st), err.msg);
    CHECK(!strcmp(stage_status(j3, 0, st_buf, sizeof st_buf), "done") &&
              !strcmp(stage_status(j3, 1, st_buf, sizeof st_buf), "pending"),
          "a done, b pending");
    memset(&s, 0, sizeof s);
    st = run(spec2, j3, &s, &err);
    CHECK(st == AHA_OK && s.n_records == 2, "the rerun runs b and c only (%d records): %s", s.n_records, err.msg);

    aha_remove_tree(root, NULL);
    return th_done("r1_pipeline_run");
}
