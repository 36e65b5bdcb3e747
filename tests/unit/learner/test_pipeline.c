/* test_pipeline: pipeline bookkeeping: stage order and resume (done stages skipped, a stage
 * caught running runs again), references resolved from recorded outputs (and refused before
 * the stage is done), a saved state that no longer matches the spec, stage directories, and
 * the progress lines ahactl prints. */
#include <stdint.h>

#include "../../harness.h"
#include "base/fs.h"
#include "pipeline.h"
#include "spec.h"
#include "table.h"

static const char *spec_text =
    "{\"kind\":\"pipeline\",\"stages\":["
    "{\"name\":\"sft1\",\"kind\":\"sft\",\"model\":\"base\",\"dataset\":\"cold.jsonl\"},"
    "{\"name\":\"rl\",\"kind\":\"grpo\",\"model\":\"${stages.sft1.checkpoint}\",\"dataset\":\"t.jsonl\",\"steps\":2},"
    "{\"name\":\"gen\",\"kind\":\"generate\",\"checkpoint\":\"${stages.rl.checkpoint}\",\"dataset\":\"t.jsonl\"},"
    "{\"name\":\"sft2\",\"kind\":\"sft\",\"model\":\"base\",\"dataset\":\"${stages.gen.dataset}\"}]}";

int main(void)
{
    char dir[] = "/tmp/aha_pipe_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    aha_job_spec p;
    aha_err e = {0};
    CHECK(aha_job_spec_parse(spec_text, strlen(spec_text), &p, &e) == AHA_OK, "%s", e.msg);
    aha_pipeline_state st;
    CHECK(aha_pipeline_state_init(&p, &st, &e) == AHA_OK, "%s", e.msg);
    CHECK(st.n == 4 && aha_pipeline_next_stage(&st) == 0, "starts at stage 0");

    /* stage 2 cannot resolve before stage 1 is done */
    aha_job_spec rl = p.stages[1];
    char *model = NULL;
    CHECK(aha_job_spec_subst(rl.model, aha_pipeline_ref, &st, &model, &e) == AHA_EPRECOND &&
              strstr(e.msg, "stage \"sft1\" is pending"), "%s", e.msg);

    char sdir[512];
    CHECK(aha_pipeline_stage_dir(dir, 0, "sft1", sdir, sizeof sdir, &e) == AHA_OK, "%s", e.msg);
    char want[512];
    snprintf(want, sizeof want, "%s/stages/01-sft1", dir);
    CHECK(strcmp(sdir, want) == 0, "stage dir %s", sdir);
    char tiny[8];
    CHECK(aha_pipeline_stage_dir(dir, 0, "sft1", tiny, sizeof tiny, &e) == AHA_ELIMIT, "too long");

    aha_pipeline_stage_start(&st, 0, 1000);
    CHECK(aha_pipeline_stage_done(&st, 0, "/j/stages/01-sft1/final", NULL, 1060, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_pipeline_next_stage(&st) == 1, "next is rl");
    CHECK(aha_job_spec_resolve(&p.stages[1], aha_pipeline_ref, &st, &e) == AHA_OK, "%s", e.msg);
    CHECK(strcmp(p.stages[1].model, "/j/stages/01-sft1/final") == 0, "rl starts from sft1: %s", p.stages[1].model);
    aha_pipeline_stage_start(&st, 1, 1100);

    char path[512];
    snprintf(path, sizeof path, "%s/pipeline.json", dir);
    CHECK(aha_pipeline_state_save(&st, path, &e) == AHA_OK, "%s", e.msg);
    aha_pipeline_state back;
    CHECK(aha_pipeline_state_load(path, &p, &back, &e) == AHA_OK, "%s", e.msg);
    CHECK(back.stages[0].status == AHA_STAGE_DONE && strcmp(back.stages[0].checkpoint, "/j/stages/01-sft1/final") == 0 &&
              back.stages[0].started == 1000 && back.stages[0].finished == 1060, "done stage restored");
    CHECK(back.stages[1].status == AHA_STAGE_PENDING, "interrupted stage runs again");
    CHECK(aha_pipeline_next_stage(&back) == 1, "resume skips the completed stage");

    /* a failed stage stops the pipeline and is retried on resume */
    CHECK(aha_pipeline_stage_failed(&back, 1, "rollout 127.0.0.1:9 unreachable", 1200, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_pipeline_next_stage(&back) == 1, "failed stage is next");
    CHECK(aha_pipeline_state_save(&back, path, &e) == AHA_OK, "%s", e.msg);
    char *json;
    CHECK(aha_pipeline_state_json(&back, &json, &e) == AHA_OK, "%s", e.msg);
    char lines[2048];
    CHECK(aha_pipeline_progress(json, strlen(json), 1300, lines, sizeof lines, &e) == AHA_OK, "%s", e.msg);
    fprintf(stderr, "%s", lines);
    CHECK(strstr(lines, "pipeline: 1/4 stages done\n") != NULL, "summary");
    CHECK(strstr(lines, "  1  sft1") && strstr(lines, "done     1m00s\n"), "done row:\n%s", lines);
    CHECK(strstr(lines, "failed   1m40s  (rollout 127.0.0.1:9 unreachable)"), "failed row:\n%s", lines);
    CHECK(strstr(lines, "  4  sft2                 sft       pending\n"), "pending row:\n%s", lines);
    free(json);
    aha_pipeline_state_free(&back);

    /* generate outputs a dataset; the last stage resolves it */
    CHECK(aha_pipeline_stage_done(&st, 1, "/j/stages/02-rl/final", NULL, 1, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_pipeline_stage_done(&st, 2, NULL, "/j/stages/03-gen/dataset.jsonl", 2, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_job_spec_resolve(&p.stages[3], aha_pipeline_ref, &st, &e) == AHA_OK &&
              strcmp(p.stages[3].dataset.path, "/j/stages/03-gen/dataset.jsonl") == 0, "dataset ref: %s", e.msg);
    char *x = NULL;
    CHECK(aha_pipeline_ref(&st, "sft1", AHA_REF_DATASET, &x, &e) == AHA_EPRECOND && strstr(e.msg, "recorded no dataset"),
          "%s", e.msg);
    CHECK(aha_pipeline_ref(&st, "zzz", AHA_REF_DATASET, &x, &e) == AHA_ENOTFOUND, "%s", e.msg);
    aha_pipeline_state_free(&st);

    /* a state from another spec is refused */
    const char *other = "{\"kind\":\"pipeline\",\"stages\":["
                        "{\"name\":\"sft1\",\"kind\":\"sft\",\"model\":\"base\",\"dataset\":\"cold.jsonl\"},"
                        "{\"name\":\"rl2\",\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"t.jsonl\",\"steps\":2},"
                        "{\"name\":\"gen\",\"kind\":\"generate\",\"checkpoint\":\"c\",\"dataset\":\"t.jsonl\"},"
                        "{\"name\":\"sft2\",\"kind\":\"sft\",\"model\":\"base\",\"dataset\":\"d\"}]}";
    aha_job_spec q;
    CHECK(aha_job_spec_parse(other, strlen(other), &q, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_pipeline_state_load(path, &q, &back, &e) == AHA_EPRECOND && strstr(e.msg, "stage 1 is \"rl\""),
          "%s", e.msg);
    aha_job_spec_free(&q);
    CHECK(aha_write_file_atomic(path, "{\"stages\":3}", 12, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_pipeline_state_load(path, &p, &back, &e) == AHA_EFORMAT, "%s", e.msg);
    aha_job_spec_free(&p);
    aha_remove_tree(dir, NULL);
    return th_done("pipeline");
}
