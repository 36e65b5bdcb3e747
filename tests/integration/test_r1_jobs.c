/* test_r1_jobs: the eval, generate and mix job kinds through aha_job_run, with a real
 * aha-reward process and a scripted rollout worker (an aha.v1.Rollout server in this process
 * that answers Generate with hand-made completions, so the samples are known exactly):
 *   - eval: pass@1, cons@k and format rate of the record equal an independent computation
 *     over the scripted samples (per-sample components from the reward library, majority vote
 *     written here); the set holds a tie (broken by first occurrence), answers that are
 *     equivalent but written differently ("0.5" and "1/2" vote together) and questions
 *     without any answer;
 *   - generate: every rejection reason on crafted completions, the SFT lines of the kept
 *     samples and the acceptance report;
 *   - mix of the generated file with another source;
 *   - skip_bad_lines on an eval set: the job reports the skipped line; without it the job
 *     fails naming file and line.
 * argv: aha-reward */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "aha/v1/rollout.pb-c.h"
#include "base/fs.h"
#include "learner_env.h"
#include "rewards.h"
#include "rpc/rpc.h"
#include "runner.h"
#include "text/template.h"
#include "text/tokenizer.h"

static const char *cfg_json =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 16,"
    " \"intermediate_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
    " \"num_key_value_heads\": 1, \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-6,"
    " \"rope_theta\": 10000.0, \"tie_word_embeddings\": true, \"vocab_size\": 261,"
    " \"eos_token_id\": 256, \"initializer_range\": 0.02}";

/* ---- the scripted rollout worker ------------------------------------------------------------ */

#define MAXQ 8
#define MAXK 8

typedef struct {
    const char *key;    /* a marker in the question text that identifies it */
    const char *answer; /* reference answer */
    const char *text[MAXK];
    int truncated[MAXK];
} script;

typedef struct {
    const script *sc;
    int n;
    aha_tokenizer *tok;
    int generates, updates;
} fake_rollout;

static const script *find_script(const fake_rollout *f, const char *prompt)
{
    for (int i = 0; i < f->n; i++)
        if (strstr(prompt, f->sc[i].key)) return &f->sc[i];
    return NULL;
}

static aha_status h_generate(aha_rpc_call *call, const ProtobufCMessage *msg, void *user, aha_err *err)
{
    fake_rollout *f = user;
    const Aha__V1__GenerateRequest *req = (const Aha__V1__GenerateRequest *)msg;
    __atomic_add_fetch(&f->generates, 1, __ATOMIC_SEQ_CST);
    for (size_t p = 0; p < req->n_prompts; p++) {
        char *prompt = NULL;
        AHA_TRY(aha_tokenizer_decode(f->tok, req->prompts[p]->token_ids, req->prompts[p]->n_token_ids, &prompt, err));
        const script *s = find_script(f, prompt);
        free(prompt);
        if (!s) return aha_errf(err, AHA_EINVAL, "no script for prompt %s", req->prompts[p]->id);
        for (int i = 0; i < req->n; i++) {
            const char *t = s->text[i % MAXK] ? s->text[i % MAXK] : "";
            int32_t *ids = NULL;
            size_t n = 0;
            aha_err e2 = {0};
            /* an invalid UTF-8 text gets no ids: the reward, not the tokenizer, must reject it */
            if (aha_tokenizer_encode(f->tok, t, strlen(t), &ids, &n, &e2) != AHA_OK) n = 0;
            float *lp = calloc(n ? n : 1, sizeof *lp);
            Aha__V1__Completion c = AHA__V1__COMPLETION__INIT;
            c.prompt_id = req->prompts[p]->id;
            c.index = i;
            c.n_token_ids = n;
            c.token_ids = ids;
            c.n_logprobs = n;
            c.logprobs = lp;
            c.text = (char *)t;
            c.finish_reason = s->truncated[i % MAXK] ? "length" : "stop";
            aha_status st = aha_rpc_call_send(call, &c.base, err);
            free(ids);
            free(lp);
            AHA_TRY(st);
        }
    }
    return AHA_OK;
}

static aha_status h_update(aha_rpc_call *call, const ProtobufCMessage *msg, void *user, aha_err *err)
{
    (void)msg;
    fake_rollout *f = user;
    int64_t version = -1;
    for (;;) {
        ProtobufCMessage *m = NULL;
        AHA_TRY(aha_rpc_call_recv(call, &m, err));
        if (!m) break;
        const Aha__V1__WeightChunk *c = (const Aha__V1__WeightChunk *)m;
        if (c->header) version = c->header->version;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    __atomic_add_fetch(&f->updates, 1, __ATOMIC_SEQ_CST);
    Aha__V1__UpdateWeightsReply r = AHA__V1__UPDATE_WEIGHTS_REPLY__INIT;
    r.version = version;
    return aha_rpc_call_send(call, &r.base, err);
}

/* ---- independent statistics ----------------------------------------------------------------- */

typedef struct {
    aha_reward_result r;
} scored;

static void score_text(const char *prompt, const char *completion, const char *ref, const char *lang, scored *out)
{
    aha_reward_item it = {.prompt = prompt, .prompt_len = strlen(prompt), .completion = completion,
                          .completion_len = strlen(completion), .reference = ref, .reference_len = strlen(ref),
                          .language = lang, .language_len = lang ? strlen(lang) : 0};
    aha_reward_score(&it, NULL, &out->r);
}

static bool same_answer(const char *a, const char *b)
{
    bool eq = false;
    aha_err e = {0};
    if (aha_reward_equivalent(a, strlen(a), b, strlen(b), &eq, &e) != AHA_OK) return strcmp(a, b) == 0;
    return eq;
}

/* majority vote over one question's k samples; ties go to the answer seen first */
static int cons_correct(const scored *s, int k)
{
    int best = -1, best_n = 0;
    for (int i = 0; i < k; i++) {
        if (!s[i].r.has_answer) continue;
        bool seen = false;
        for (int j = 0; j < i; j++)
            if (s[j].r.has_answer && same_answer(s[j].r.extracted, s[i].r.extracted)) seen = true;
        if (seen) continue;
        int n = 0;
        for (int j = i; j < k; j++)
            if (s[j].r.has_answer && same_answer(s[i].r.extracted, s[j].r.extracted)) n++;
        if (n > best_n) {
            best = i;
            best_n = n;
        }
    }
    return best >= 0 && s[best].r.accuracy >= 0.5;
}

/* ---- running jobs --------------------------------------------------------------------------- */

typedef struct {
    char logs[16384];
    json_t *records; /* metrics and eval records */
} sink;

static void emit(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message)
{
    (void)step;
    sink *s = user;
    if (message && type == AHA_EV_LOG) {
        size_t l = strlen(s->logs);
        snprintf(s->logs + l, sizeof s->logs - l, "%s\n", message);
    }
    if (json && (type == AHA_EV_EVAL || type == AHA_EV_METRICS)) {
        json_t *o = json_loads(json, 0, NULL);
        if (o) json_array_append_new(s->records, o);
    }
}

static aha_status run(const char *spec_json, const char *dir, const aha_learner_env *env, sink *s, aha_err *err)
{
    aha_job_spec spec;
    AHA_TRY(aha_job_spec_parse(spec_json, strlen(spec_json), &spec, err));
    volatile int cancel = 0;
    int64_t ps = 0, pt = 0;
    s->logs[0] = 0;
    json_array_clear(s->records);
    aha_job_ctx ctx = {.job_id = "t", .job_dir = dir, .spec = &spec, .env = env, .emit = emit, .user = s,
                       .cancel = &cancel, .progress_step = &ps, .progress_total = &pt};
    aha_status st = aha_job_run(&ctx, err);
    aha_job_spec_free(&spec);
    return st;
}

static json_t *find_record(json_t *recs, const char *type, const char *dataset)
{
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *t = json_string_value(json_object_get(r, "type"));
        const char *d = json_string_value(json_object_get(r, "dataset"));
        if (t && !strcmp(t, type) && (!dataset || (d && !strcmp(d, dataset)))) return r;
    }
    return NULL;
}

/* ---- the scripts ---------------------------------------------------------------------------- */

#define T(a, x) "<think>" a "</think> <answer>" x "</answer>"

/* eval: k = 4 */
static const script eval_script[] = {
    /* equivalent answers: {0.5, 1/2} ties {3} and came first: majority is right only when
     * "0.5" and "1/2" are one answer */
    {"Q-alpha", "1/2", {T("half", "0.5"), T("guess", "3"), T("one over two", "1/2"), T("guess", "3")}, {0}},
    /* a tie between wrong 8 (first) and right 7: first occurrence wins, wrong */
    {"Q-beta", "7", {T("a", "8"), T("b", "7"), T("c", "8"), T("d", "7")}, {0}},
    /* majority right, with a sample without answer and format */
    {"Q-gamma", "42", {T("x", "42"), "forty-two", T("y", "41"), T("z", "42.0")}, {0}},
    /* no answer anywhere: cons@k counts it wrong */
    {"Q-delta", "5", {"five", "I do not know", "<think>hmm</think>", "maybe 5"}, {0}},
};

/* generate: n = 8, keep_per_prompt = 2, min_language 0.9, language en */
static const script gen_script[] = {
    {"G-one",
     "9",
     {T("four plus five is nine", "9"),            /* kept */
      T("four  plus five is nine", "9"),           /* duplicate of 0 (whitespace aside) */
      T("four plus five", "9"),                    /* truncated (finish_reason length) */
      T("four plus five is eight", "8"),           /* incorrect */
      "<answer>9</answer>",                        /* correct, badly formatted */
      T("四加五等于九", "9"),                       /* language */
      T("nine is five more than four", "9"),       /* kept (second) */
      T("five plus four gives nine", "9")},        /* over the limit of 2 */
     {0, 0, 1, 0, 0, 0, 0, 0}},
    {"G-two",
     "10",
     {T("bad \xff byte", "10"), T("no", "11"), T("no", "12"), "ten", T("no", "13"), T("no", "14"), T("no", "15"),
      T("no", "16")},
     {0}},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_r1_jobs AHA-REWARD\n");
        return 2;
    }
    char root[] = "/tmp/aha-test-r1jobs-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char model[512], evalp[512], genp[512], badp[512], otherp[512], path[700];
    snprintf(model, sizeof model, "%s/model", root);
    snprintf(evalp, sizeof evalp, "%s/eval.jsonl", root);
    snprintf(genp, sizeof genp, "%s/gen.jsonl", root);
    snprintf(badp, sizeof badp, "%s/bad.jsonl", root);
    snprintf(otherp, sizeof otherp, "%s/other.jsonl", root);
    aha_err err = {0};
    th_make_tiny_model(model, cfg_json, 5);

    int nq = (int)(sizeof eval_script / sizeof eval_script[0]);
    FILE *f = fopen(evalp, "w");
    for (int q = 0; f && q < nq; q++)
        fprintf(f, "{\"prompt\": \"Question %s: solve it.\", \"answer\": \"%s\", \"id\": \"e%d\"}\n", eval_script[q].key,
                eval_script[q].answer, q);
    if (f) fclose(f);
    f = fopen(genp, "w");
    for (int q = 0; f && q < 2; q++)
        fprintf(f, "{\"prompt\": \"Problem %s?\", \"answer\": \"%s\", \"id\": \"g%d\"}\n", gen_script[q].key,
                gen_script[q].answer, q);
    if (f) fclose(f);
    th_write_text(badp, "{\"prompt\": \"Question Q-beta: solve it.\", \"answer\": \"7\"}\n"
                        "{\"prompt\": \"Question Q-gamma: solve it.\"\n"
                        "{\"prompt\": \"Question Q-gamma: solve it.\", \"answer\": \"42\"}\n");
    th_write_text(otherp, "{\"prompt\": \"p1\", \"completion\": \"c1\"}\n{\"prompt\": \"p2\", \"completion\": \"c2\"}\n");

    /* the scripted rollout worker and the real reward service */
    script all[MAXQ];
    memcpy(all, eval_script, sizeof eval_script);
    memcpy(all + nq, gen_script, sizeof gen_script);
    fake_rollout fr = {all, nq + 2, NULL, 0, 0};
    CHECK(aha_tokenizer_load(model, &fr.tok, &err) == AHA_OK, "tokenizer load: %s", err.msg);
    aha_rpc_server_opts so;
    aha_rpc_server_opts_init(&so);
    so.listen = "127.0.0.1:0";
    so.name = "fake-rollout";
    aha_rpc_server *srv = NULL;
    CHECK(aha_rpc_server_create(&so, &srv, &err) == AHA_OK, "server: %s", err.msg);
    CHECK(aha_rpc_server_add_method(srv, &aha__v1__rollout__descriptor, "Generate", AHA_RPC_SERVER_STREAM, h_generate,
                                    &fr, &err) == AHA_OK, "method: %s", err.msg);
    CHECK(aha_rpc_server_add_method(srv, &aha__v1__rollout__descriptor, "UpdateWeights", AHA_RPC_CLIENT_STREAM,
                                    h_update, &fr, &err) == AHA_OK, "method: %s", err.msg);
    CHECK(aha_rpc_server_start(srv, &err) == AHA_OK, "start: %s", err.msg);
    th_service rw = {0};
    char *av_rw[] = {argv[1], NULL};
    CHECK(th_spawn(&rw, av_rw) > 0, "reward started");
    char a_rw[64], a_ro[64];
    snprintf(a_rw, sizeof a_rw, "127.0.0.1:%d", rw.port);
    snprintf(a_ro, sizeof a_ro, "127.0.0.1:%d", aha_rpc_server_port(srv));
    aha_learner_env env = {.rollout = {a_ro}, .n_rollout = 1, .reward = a_rw, .device = "cpu", .rpc_timeout_ms = 30000};
    sink s = {.records = json_array()};
    char spec[4096], dir[600];

    /* ---- eval ---- */
    if (rw.port) {
        int k = 4;
        snprintf(spec, sizeof spec,
                 "{\"kind\": \"eval\", \"name\": \"ev\", \"checkpoint\": \"%s\", \"datasets\": [\"%s\"], \"k\": %d,"
                 " \"max_new_tokens\": 16}",
                 model, evalp, k);
        snprintf(dir, sizeof dir, "%s/job-eval", root);
        aha_status st = run(spec, dir, &env, &s, &err);
        CHECK(st == AHA_OK, "eval job: %s", err.msg);
        CHECK(fr.updates >= 1, "the checkpoint was pushed to the rollout worker (%d pushes)", fr.updates);
        json_t *r = find_record(s.records, "eval", "eval");
        CHECK(r != NULL, "an eval record was emitted");
        /* independent computation over the scripted samples */
        double pass = 0, cons = 0, fmt = 0;
        int cons_q[MAXQ] = {0};
        for (int q = 0; q < nq; q++) {
            char q_text[128], *prompt = NULL;
            snprintf(q_text, sizeof q_text, "Question %s: solve it.", eval_script[q].key);
            CHECK(aha_template_render(aha_template_builtin("r1-zero"), q_text, &prompt, &err) == AHA_OK, "render");
            scored sc[MAXK];
            for (int i = 0; i < k; i++) {
                score_text(prompt ? prompt : "", eval_script[q].text[i], eval_script[q].answer, NULL, &sc[i]);
                pass += sc[i].r.accuracy >= 0.5;
                fmt += sc[i].r.format >= 0.5;
            }
            cons_q[q] = cons_correct(sc, k);
            cons += cons_q[q];
            free(prompt);
        }
        pass /= nq * k;
        cons /= nq;
        fmt /= nq * k;
        /* the set was built so that these hold; if the reward's rules change, say which */
        CHECK(cons_q[0] == 1 && cons_q[1] == 0 && cons_q[2] == 1 && cons_q[3] == 0,
              "scripted majorities: %d %d %d %d (want 1 0 1 0)", cons_q[0], cons_q[1], cons_q[2], cons_q[3]);
        double rp = json_number_value(json_object_get(r, "pass_at_1"));
        double rc = json_number_value(json_object_get(r, "cons_at_k"));
        double rf = json_number_value(json_object_get(r, "format_rate"));
        CHECK(fabs(rp - pass) < 1e-12, "pass@1 %.6f, independent %.6f", rp, pass);
        CHECK(fabs(rc - cons) < 1e-12, "cons@k %.6f, independent %.6f", rc, cons);
        CHECK(fabs(rf - fmt) < 1e-12, "format rate %.6f, independent %.6f", rf, fmt);
        CHECK(json_integer_value(json_object_get(r, "k")) == k && json_integer_value(json_object_get(r, "n_questions")) == nq,
              "k and n_questions");
        CHECK(fabs(json_number_value(json_object_get(r, "temperature")) - 0.6) < 1e-6 &&
                  fabs(json_number_value(json_object_get(r, "top_p")) - 0.95) < 1e-6,
              "R1's defaults T 0.6, top-p 0.95");
        snprintf(path, sizeof path, "%s/eval.jsonl", dir);
        CHECK(aha_path_exists(path), "eval.jsonl written");

        /* rerun in the same directory: one record, not two */
        st = run(spec, dir, &env, &s, &err);
        char *text = NULL;
        size_t len = 0;
        CHECK(st == AHA_OK && aha_read_file(path, 1 << 20, &text, &len, &err) == AHA_OK, "rerun: %s", err.msg);
        int lines = 0;
        for (size_t i = 0; text && i < len; i++) lines += text[i] == '\n';
        CHECK(lines == 1, "eval.jsonl after a rerun has %d lines, want 1", lines);
        free(text);
    }

    /* ---- skip_bad_lines in the job path ---- */
    if (rw.port) {
        snprintf(spec, sizeof spec,
                 "{\"kind\": \"eval\", \"checkpoint\": \"%s\", \"datasets\": [{\"path\": \"%s\", \"skip_bad_lines\": true}],"
                 " \"k\": 2, \"max_new_tokens\": 16}",
                 model, badp);
        snprintf(dir, sizeof dir, "%s/job-skip", root);
        aha_status st = run(spec, dir, &env, &s, &err);
        CHECK(st == AHA_OK, "eval with skip_bad_lines: %s", err.msg);
        CHECK(strstr(s.logs, "1 malformed lines skipped") && strstr(s.logs, ":2"),
              "the skipped line is reported with its line number: %s", s.logs);
        json_t *r = find_record(s.records, "eval", NULL);
        CHECK(r && json_integer_value(json_object_get(r, "n_questions")) == 2, "two questions left");
        snprintf(spec, sizeof spec,
                 "{\"kind\": \"eval\", \"checkpoint\": \"%s\", \"datasets\": [\"%s\"], \"k\": 2, \"max_new_tokens\": 16}",
                 model, badp);
        snprintf(dir, sizeof dir, "%s/job-noskip", root);
        st = run(spec, dir, &env, &s, &err);
        CHECK(st != AHA_OK && strstr(err.msg, "bad.jsonl:2"), "without skip_bad_lines the job fails at line 2: %s",
              err.msg);
    }

    /* ---- generate ---- */
    char gen_out[700];
    if (rw.port) {
        snprintf(dir, sizeof dir, "%s/job-gen", root);
        snprintf(gen_out, sizeof gen_out, "%s/dataset.jsonl", dir);
        snprintf(spec, sizeof spec,
                 "{\"kind\": \"generate\", \"name\": \"rs\", \"checkpoint\": \"%s\", \"dataset\": \"%s\", \"n\": 8,"
                 " \"keep_per_prompt\": 2, \"min_language\": 0.9, \"language\": \"en\", \"max_new_tokens\": 16}",
                 model, genp);
        aha_status st = run(spec, dir, &env, &s, &err);
        CHECK(st == AHA_OK, "generate job: %s", err.msg);
        /* gen_script G-one's intended verdicts: the reward must see them that way */
        {
            char *prompt = NULL;
            CHECK(aha_template_render(aha_template_builtin("r1-zero"), "Problem G-one?", &prompt, &err) == AHA_OK, "render");
            scored sc;
            score_text(prompt, gen_script[0].text[4], "9", "en", &sc);
            CHECK(sc.r.accuracy == 1 && sc.r.format == 0, "sample 4 is correct but badly formatted (%g, %g)",
                  sc.r.accuracy, sc.r.format);
            score_text(prompt, gen_script[0].text[5], "9", "en", &sc);
            CHECK(sc.r.accuracy == 1 && sc.r.format == 1 && sc.r.language < 0.9, "sample 5 mixes languages (%g)",
                  sc.r.language);
            free(prompt);
        }
        json_t *r = find_record(s.records, "generate", NULL);
        CHECK(r != NULL, "a generate record");
        json_t *rej = json_object_get(r, "rejected");
        struct {
            const char *name;
            int want;
        } reasons[] = {{"truncated", 1}, {"incorrect", 1 + 7}, {"format", 1}, {"language", 1},
                       {"duplicate", 1}, {"over_limit", 1},    {"error", 1}};
        for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
            json_int_t got = json_integer_value(json_object_get(rej, reasons[i].name));
            CHECK(got == reasons[i].want, "rejected %s: %lld, want %d", reasons[i].name, (long long)got, reasons[i].want);
        }
        CHECK(json_integer_value(json_object_get(r, "kept")) == 2 && json_integer_value(json_object_get(r, "samples")) == 16 &&
                  json_integer_value(json_object_get(r, "prompts")) == 2 &&
                  json_integer_value(json_object_get(r, "prompts_with_kept")) == 1,
              "kept 2 of 16 samples, 1 of 2 prompts");
        CHECK(fabs(json_number_value(json_object_get(r, "acceptance_rate")) - 2.0 / 16) < 1e-9, "acceptance rate");
        CHECK(json_is_string(json_object_get(r, "stage")) && !strcmp(json_string_value(json_object_get(r, "stage")), "rs"),
              "the record names the job");
        /* the SFT lines: the raw question, the kept completions, their source ids */
        char *text = NULL;
        size_t len = 0;
        CHECK(aha_read_file(gen_out, 1 << 20, &text, &len, &err) == AHA_OK, "output: %s", err.msg);
        json_error_t je;
        json_t *l0 = NULL, *l1 = NULL;
        char *nl = text ? strchr(text, '\n') : NULL;
        if (nl) {
            l0 = json_loadb(text, (size_t)(nl - text), 0, &je);
            char *nl2 = strchr(nl + 1, '\n');
            if (nl2) l1 = json_loadb(nl + 1, (size_t)(nl2 - nl - 1), 0, &je);
            CHECK(nl2 && nl2[1] == 0, "exactly two lines");
        }
        CHECK(l0 && l1, "two SFT lines");
        if (l0 && l1) {
            CHECK(!strcmp(json_string_value(json_object_get(l0, "prompt")), "Problem G-one?") &&
                      !strcmp(json_string_value(json_object_get(l0, "completion")), gen_script[0].text[0]) &&
                      !strcmp(json_string_value(json_object_get(l0, "source_id")), "g0") &&
                      !strcmp(json_string_value(json_object_get(l0, "id")), "g0#0"),
                  "first kept line");
            CHECK(!strcmp(json_string_value(json_object_get(l1, "completion")), gen_script[0].text[6]) &&
                      !strcmp(json_string_value(json_object_get(l1, "id")), "g0#6") &&
                      !strcmp(json_string_value(json_object_get(l1, "answer")), "9"),
                  "second kept line");
        }
        json_decref(l0);
        json_decref(l1);
        free(text);
        snprintf(path, sizeof path, "%s/acceptance.json", dir);
        text = NULL;
        CHECK(aha_read_file(path, 1 << 20, &text, &len, &err) == AHA_OK, "acceptance report: %s", err.msg);
        json_t *acc = text ? json_loads(text, 0, NULL) : NULL;
        CHECK(acc && json_integer_value(json_object_get(acc, "kept")) == 2, "acceptance.json holds the report");
        json_decref(acc);
        free(text);
    }

    /* ---- mix: the generated lines three times as often as the other source ---- */
    if (rw.port) {
        snprintf(dir, sizeof dir, "%s/job-mix", root);
        snprintf(spec, sizeof spec,
                 "{\"kind\": \"mix\", \"sources\": [{\"path\": \"%s\", \"proportion\": 3}, {\"path\": \"%s\","
                 " \"proportion\": 1}], \"total\": 8}",
                 gen_out, otherp);
        aha_status st = run(spec, dir, &env, &s, &err);
        CHECK(st == AHA_OK, "mix job: %s", err.msg);
        json_t *r = find_record(s.records, "mix", NULL);
        json_t *src = r ? json_object_get(r, "sources") : NULL;
        CHECK(r && json_integer_value(json_object_get(r, "total")) == 8 &&
                  json_integer_value(json_object_get(json_array_get(src, 0), "taken")) == 6 &&
                  json_integer_value(json_object_get(json_array_get(src, 1), "taken")) == 2,
              "8 lines: 6 + 2");
        snprintf(path, sizeof path, "%s/dataset.jsonl", dir);
        char *text = NULL;
        size_t len = 0;
        CHECK(aha_read_file(path, 1 << 20, &text, &len, &err) == AHA_OK, "mix output: %s", err.msg);
        int lines = 0, gen_lines = 0;
        for (char *p = text; p && *p; p++) lines += *p == '\n';
        for (char *p = text; p && (p = strstr(p, "\"source_id\"")); p++) gen_lines++;
        CHECK(lines == 8 && gen_lines == 6, "mix file: %d lines, %d generated", lines, gen_lines);
        free(text);
    }

    aha_rpc_server_stop(srv);
    aha_rpc_server_wait(srv, NULL);
    aha_rpc_server_free(srv);
    th_stop(&rw);
    aha_tokenizer_free(fr.tok);
    json_decref(s.records);
    aha_remove_tree(root, NULL);
    return th_done("r1_jobs");
}
