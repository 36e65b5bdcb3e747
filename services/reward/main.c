/* aha-reward: the rule-based reward service of DeepSeek-R1 (accuracy, format, language
 * consistency, and code answers run against test cases in a sandbox: sandbox.h) over gRPC:
 * aha.v1.Reward/Score and aha.v1.Reward/GroupAnswers, plus grpc.health.v1.Health/Check. The
 * rules live in rewards.c; this file only maps messages to them, enforces the limits and
 * serves.
 *
 * Limits (bad input never crashes or blocks the service):
 *   - a request with more than --max-items items/answers is INVALID_ARGUMENT;
 *   - a text field longer than --max-text-bytes (default 1 MiB) makes that item's `error`
 *     (total 0) and the rest of the batch is scored;
 *   - the whole message is bounded by --max-message-mb (gRPC answers RESOURCE_EXHAUSTED).
 * Weights: --config FILE.json ({"weights": {"accuracy": a, "format": f, "language": l}}),
 * overlaid per call by ScoreRequest.config_json; defaults accuracy 1, format 1, language 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/reward.pb-c.h"
#include "base/fs.h"
#include "base/log.h"
#include "rewards.h"
#include "rpc/rpc.h"
#include "sandbox.h"
#include "rpc/service.h"
#include "rpc/service_main.h"

typedef struct {
    aha_reward_weights weights; /* from --config, or the defaults */
    long max_items;
    long max_text_bytes;
    aha_sandbox_opts sandbox; /* code items (task "code:python", "code:c") */
} reward_service;

/* Items of one call, carved from one allocation. */
typedef struct {
    Aha__V1__RewardResult res;
    Aha__V1__RewardResult__ComponentsEntry comp[3];
    Aha__V1__RewardResult__ComponentsEntry *comp_ptr[3];
    aha_reward_result out;
} scored_item;

static void item_fail(scored_item *s, const char *fmt, long long a, long long b)
{
    snprintf(s->out.error, sizeof s->out.error, fmt, a, b);
    s->out.total = 0;
}

/* A code item (sandbox.h): accuracy = every test case passes; the verdict's reason goes into
 * extracted_answer (a failing program is scored, not an item error); format and language
 * follow the rules of rewards.h. */
static void score_code(const reward_service *svc, const aha_reward_weights *w,
                       aha_code_lang lang, const aha_reward_item *in, aha_reward_result *out)
{
    memset(out, 0, sizeof *out);
    aha_err e;
    aha_code_verdict v;
    if (aha_code_score(&svc->sandbox, lang, in->completion, in->completion_len, in->reference,
                       in->reference_len, &v, &e) != AHA_OK) {
        snprintf(out->error, sizeof out->error, "%.250s", e.msg);
        return;
    }
    if (in->language_len) {
        if (aha_reward_language(in->prompt, in->prompt_len, in->completion, in->completion_len,
                                in->language, in->language_len, &out->language, &e) != AHA_OK) {
            snprintf(out->error, sizeof out->error, "%.250s", e.msg);
            out->language = 0;
            return;
        }
        out->has_language = true;
    }
    out->accuracy = v.passed ? 1.0 : 0.0;
    out->format = aha_reward_format(in->prompt, in->prompt_len, in->completion,
                                    in->completion_len);
    out->has_answer = strncmp(v.reason, "no ```", 6) != 0;
    snprintf(out->extracted, sizeof out->extracted, "%s", v.reason);
    out->total = w->accuracy * out->accuracy + w->format * out->format +
                 (out->has_language ? w->language * out->language : 0.0);
}

static void score_one(const reward_service *svc, const aha_reward_weights *w,
                      const Aha__V1__ScoreItem *it, scored_item *s)
{
    aha__v1__reward_result__init(&s->res);
    memset(&s->out, 0, sizeof s->out);
    s->res.id = it->id;
    const char *fields[4] = {it->prompt, it->completion, it->reference_answer, it->language};
    static const char *const names[4] = {"prompt", "completion", "reference_answer", "language"};
    size_t lens[4];
    int too_long = -1;
    for (int f = 0; f < 4; f++) {
        lens[f] = strlen(fields[f]);
        if (too_long < 0 && lens[f] > (size_t)svc->max_text_bytes) too_long = f;
    }
    if (too_long >= 0) {
        char fmt[160];
        snprintf(fmt, sizeof fmt, "%s of %%lld bytes exceeds the limit of %%lld bytes",
                 names[too_long]);
        item_fail(s, fmt, (long long)lens[too_long], (long long)svc->max_text_bytes);
    } else {
        aha_reward_item in = {
            .prompt = it->prompt,          .prompt_len = lens[0],
            .completion = it->completion,  .completion_len = lens[1],
            .reference = it->reference_answer, .reference_len = lens[2],
            .language = it->language,      .language_len = lens[3],
            .task = it->task,              .task_len = strlen(it->task),
        };
        aha_code_lang lang = AHA_CODE_NONE;
        aha_err e;
        if (aha_code_task_lang(in.task, in.task_len, &lang, &e) != AHA_OK)
            snprintf(s->out.error, sizeof s->out.error, "%.250s", e.msg);
        else if (lang != AHA_CODE_NONE)
            score_code(svc, w, lang, &in, &s->out);
        else
            aha_reward_score(&in, w, &s->out); /* an item error is in out.error */
    }
    size_t nc = 0;
    const char *keys[3] = {"accuracy", "format", "language"};
    double vals[3] = {s->out.accuracy, s->out.format, s->out.language};
    int ncomp = s->out.error[0] ? 2 : (s->out.has_language ? 3 : 2);
    for (int k = 0; k < ncomp; k++) {
        aha__v1__reward_result__components_entry__init(&s->comp[nc]);
        s->comp[nc].key = (char *)keys[k];
        s->comp[nc].value = s->out.error[0] ? 0.0 : vals[k];
        s->comp_ptr[nc] = &s->comp[nc];
        nc++;
    }
    s->res.n_components = nc;
    s->res.components = s->comp_ptr;
    s->res.total = s->out.error[0] ? 0.0 : s->out.total;
    s->res.error = s->out.error;
    s->res.extracted_answer = s->out.extracted;
}

static aha_status h_score(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                          aha_err *err)
{
    const reward_service *svc = user;
    const Aha__V1__ScoreRequest *req = (const Aha__V1__ScoreRequest *)msg;
    if ((long)req->n_items > svc->max_items)
        return aha_errf(err, AHA_EINVAL, "%zu items exceed the limit of %ld per request",
                        req->n_items, svc->max_items);
    aha_reward_weights w = svc->weights;
    if (req->config_json[0]) {
        aha_err e2;
        if (aha_reward_weights_from_json(req->config_json, strlen(req->config_json), &w, &e2) !=
            AHA_OK)
            return aha_errf(err, AHA_EINVAL, "config_json: %s", e2.msg);
    }
    size_t n = req->n_items;
    scored_item *items = n ? calloc(n, sizeof *items) : NULL;
    Aha__V1__RewardResult **ptrs = n ? calloc(n, sizeof *ptrs) : NULL;
    if (n && (!items || !ptrs)) {
        free(items);
        free(ptrs);
        return aha_errf(err, AHA_ENOMEM, "out of memory for %zu results", n);
    }
    aha_status st = AHA_OK;
    for (size_t i = 0; i < n; i++) {
        /* Between items, not inside one: an item is bounded (linear in max_text_bytes). */
        if (aha_rpc_call_cancelled(call)) {
            st = aha_errf(err, AHA_ECANCELLED, "cancelled after %zu of %zu items", i, n);
            break;
        }
        score_one(svc, &w, req->items[i], &items[i]);
        ptrs[i] = &items[i].res;
    }
    if (st == AHA_OK) {
        Aha__V1__ScoreResponse resp = AHA__V1__SCORE_RESPONSE__INIT;
        resp.n_results = n;
        resp.results = ptrs;
        st = aha_rpc_call_send(call, &resp.base, err);
    }
    free(items);
    free(ptrs);
    return st;
}

static aha_status h_group(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                          aha_err *err)
{
    const reward_service *svc = user;
    const Aha__V1__GroupAnswersRequest *req = (const Aha__V1__GroupAnswersRequest *)msg;
    size_t n = req->n_answers;
    if ((long)n > svc->max_items)
        return aha_errf(err, AHA_EINVAL, "%zu answers exceed the limit of %ld per request", n,
                        svc->max_items);
    int32_t *group = n ? calloc(n, sizeof *group) : NULL;
    char **extracted = n ? calloc(n, sizeof *extracted) : NULL;
    size_t *elen = n ? calloc(n, sizeof *elen) : NULL;
    int *valid = n ? calloc(n, sizeof *valid) : NULL;
    aha_status st = AHA_OK;
    if (n && (!group || !extracted || !elen || !valid)) {
        st = aha_errf(err, AHA_ENOMEM, "out of memory for %zu answers", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *a = req->answers[i];
        size_t len = strlen(a);
        if (len > (size_t)svc->max_text_bytes) {
            st = aha_errf(err, AHA_EINVAL, "answer %zu: %zu bytes exceed the limit of %ld", i,
                          len, svc->max_text_bytes);
            goto out;
        }
        size_t off = 0, alen = len;
        valid[i] = 1;
        if (req->extract && !aha_reward_extract_answer(a, len, &off, &alen)) {
            off = alen = 0;
            valid[i] = 0; /* no answer: a group of its own */
        }
        extracted[i] = malloc(alen + 1);
        if (!extracted[i]) {
            st = aha_errf(err, AHA_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(extracted[i], a + off, alen);
        extracted[i][alen] = 0;
        elen[i] = alen;
    }
    /* group[i] = the first j <= i whose answer i equals (j's answer taken as the reference).
     * Compared only against group leaders: O(n · groups). */
    for (size_t i = 0; i < n; i++) {
        if (aha_rpc_call_cancelled(call)) {
            st = aha_errf(err, AHA_ECANCELLED, "cancelled");
            goto out;
        }
        group[i] = (int32_t)i;
        if (!valid[i]) continue;
        for (size_t j = 0; j < i; j++) {
            if (group[j] != (int32_t)j || !valid[j]) continue;
            bool eq = false;
            aha_err e2;
            if (aha_reward_equivalent(extracted[i], elen[i], extracted[j], elen[j], &eq, &e2) ==
                    AHA_OK &&
                eq) {
                group[i] = (int32_t)j;
                break;
            }
        }
    }
    Aha__V1__GroupAnswersResponse resp = AHA__V1__GROUP_ANSWERS_RESPONSE__INIT;
    resp.n_group = n;
    resp.group = group;
    resp.n_extracted = n;
    resp.extracted = extracted;
    st = aha_rpc_call_send(call, &resp.base, err);
out:
    for (size_t i = 0; extracted && i < n; i++) free(extracted[i]);
    free(extracted);
    free(group);
    free(elen);
    free(valid);
    return st;
}

static void usage(FILE *f)
{
    fputs("usage: aha-reward [flags]\n"
          "Serves aha.v1.Reward (Score, GroupAnswers) and grpc.health.v1.Health.\n"
          "reward flags:\n"
          "  --max-items N        items (or answers) per request (default 4096)\n"
          "  --max-text-bytes N   longest prompt/completion/reference; longer items get an\n"
          "                       error (default 1048576)\n"
          "  --code-cpu-s N       code items: CPU seconds per test run (default 2)\n"
          "  --code-wall-s N      code items: wall-clock seconds per test run (default 5)\n"
          "--config FILE.json: {\"weights\": {\"accuracy\": 1, \"format\": 1, \"language\": 0}}\n",
          f);
}

static int take_flag(void *user, const aha_rpc_service_args *a, const char *f, const char *v)
{
    reward_service *svc = user;
    int ok;
    if (strcmp(f, "--max-items") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 1, 1000000, &svc->max_items);
    else if (strcmp(f, "--max-text-bytes") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 1, 1L << 30, &svc->max_text_bytes);
    else if (strcmp(f, "--code-cpu-s") == 0 || strcmp(f, "--code-wall-s") == 0) {
        long x = 0;
        ok = aha_rpc_service_int_flag(a, f, v, 1, 3600, &x);
        if (strcmp(f, "--code-cpu-s") == 0) svc->sandbox.cpu_s = (double)x;
        else svc->sandbox.wall_s = (double)x;
    } else
        ok = AHA_RPC_FLAG_UNKNOWN;
    return ok;
}

static const aha_rpc_service_main reward_main = {
    .name = "reward", .default_listen = "0.0.0.0:50051", .usage = usage, .flag = take_flag,
};

int main(int argc, char **argv)
{
    aha_rpc_service_args a;
    reward_service svc = {.weights = aha_reward_weights_default(),
                          .max_items = 4096,
                          .max_text_bytes = 1 << 20};
    aha_sandbox_opts_init(&svc.sandbox);
    int rc;
    if (!aha_rpc_service_begin(&a, &reward_main, argc, argv, &svc, &rc)) return rc;
    aha_err err;
    if (a.config_path) {
        char *text = NULL;
        size_t len = 0;
        if (aha_read_file(a.config_path, 1 << 20, &text, &len, &err) != AHA_OK ||
            aha_reward_weights_from_json(text, len, &svc.weights, &err) != AHA_OK) {
            fprintf(stderr, "aha-reward: --config %s: %s\n", a.config_path, err.msg);
            free(text);
            aha_rpc_service_args_free(&a);
            return 2;
        }
        free(text);
    }
    unsigned caps = aha_sandbox_capabilities(); /* logs what the kernel refuses, once */
    AHA_INFO("code sandbox: pid/net namespaces %s, landlock %s, seccomp %s, own uid %s",
             (caps & AHA_SANDBOX_HAS_PIDNS) && (caps & AHA_SANDBOX_HAS_NETNS) ? "yes" : "no",
             caps & AHA_SANDBOX_HAS_LANDLOCK ? "yes" : "no",
             caps & AHA_SANDBOX_HAS_SECCOMP ? "yes" : "no",
             caps & AHA_SANDBOX_HAS_UID ? "yes" : "no");
    AHA_INFO("weights: accuracy %g, format %g, language %g; max %ld items, %ld bytes per text",
             svc.weights.accuracy, svc.weights.format, svc.weights.language, svc.max_items,
             svc.max_text_bytes);

    const aha_rpc_service_method methods[] = {
        {&aha__v1__reward__descriptor, "Score", AHA_RPC_UNARY, h_score},
        {&aha__v1__reward__descriptor, "GroupAnswers", AHA_RPC_UNARY, h_group},
    };
    aha_status st = aha_rpc_service_serve(&a, methods, (int)AHA_ARRAY_LEN(methods), &svc);
    if (st == AHA_ETIMEOUT) return 1; /* handlers still running: do not free under them */
    aha_rpc_service_args_free(&a);
    return st == AHA_OK ? 0 : 1;
}
