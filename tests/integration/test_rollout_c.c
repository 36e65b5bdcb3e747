/* test_rollout_c: aha-rollout through aha's own C client (common/rpc, weightpush).
 *
 * Greedy completions streamed over gRPC must equal the argmax continuation computed here with
 * repeated full forwards of the same model; then, while a long request streams, the weights
 * are pushed (BF16) with the learner's sender: completions that span the switch report
 * weights_changed with first_policy_version 0 and policy_version 1, later ones version 1, and
 * a greedy request after the push equals the argmax continuation of the pushed model (rounded
 * to bf16, computed here).
 *
 * usage: test_rollout_c PATH/aha-rollout */
#include <pthread.h>

#include "../harness.h"
#include "aha/v1/rollout.pb-c.h"
#include "backend/backend.h"
#include "base/log.h"
#include "model/model.h"
#include "model/sample.h"
#include "model/weightpush.h"
#include "rpc/rpc.h"
#include "spawn.h"

static aha_rpc_channel *ch;

typedef struct {
    int n;
    int changed, v0, v1, other;
    int32_t ids[8][64];
    int len[8];
} result;

/* Generate n samples of each of np copies of prompt; greedy when temp == 0. */
static aha_status gen(const int32_t *prompt, int plen, int np, int n, float temp, int max_new,
                      result *r, aha_err *err)
{
    Aha__V1__Prompt *p = calloc((size_t)np, sizeof *p);
    Aha__V1__Prompt **pp = calloc((size_t)np, sizeof *pp);
    char ids[64][16];
    for (int i = 0; i < np; i++) {
        aha__v1__prompt__init(&p[i]);
        snprintf(ids[i % 64], sizeof ids[0], "p%d", i);
        p[i].id = ids[i % 64];
        p[i].token_ids = (int32_t *)prompt;
        p[i].n_token_ids = (size_t)plen;
        pp[i] = &p[i];
    }
    Aha__V1__SamplingParams sp = AHA__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = temp;
    sp.max_new_tokens = max_new;
    sp.seed = 1;
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    req.n_prompts = (size_t)np;
    req.prompts = pp;
    req.n = n;
    req.sampling = &sp;
    aha_rpc_call_opts o = {.timeout_ms = 60000};
    aha_rpc_stream *st = NULL;
    memset(r, 0, sizeof *r);
    aha_status s = aha_rpc_stream_open(ch, &aha__v1__rollout__descriptor, "Generate", &req.base, &o,
                                       &st, err);
    while (s == AHA_OK) {
        ProtobufCMessage *m = NULL;
        s = aha_rpc_stream_next(st, &m, err);
        if (s != AHA_OK || !m) break;
        const Aha__V1__Completion *c = (const Aha__V1__Completion *)m;
        if (r->n < 8) {
            r->len[r->n] = (int)c->n_token_ids < 64 ? (int)c->n_token_ids : 64;
            memcpy(r->ids[r->n], c->token_ids, (size_t)r->len[r->n] * 4);
        }
        r->n++;
        if (c->weights_changed && c->first_policy_version == 0 && c->policy_version == 1)
            r->changed++;
        else if (!c->weights_changed && c->policy_version == 0)
            r->v0++;
        else if (!c->weights_changed && c->policy_version == 1 && c->first_policy_version == 1)
            r->v1++;
        else
            r->other++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (st) aha_rpc_stream_free(st);
    free(p);
    free(pp);
    return s;
}

static void argmax_continuation(aha_model *m, const int32_t *prompt, int plen, int steps, int32_t *out)
{
    int V = aha_model_cfg(m)->vocab_size;
    int32_t seq[128];
    memcpy(seq, prompt, (size_t)plen * 4);
    float *lg = malloc((size_t)(plen + steps) * V * 4), *lp = malloc((size_t)(plen + steps) * 4);
    for (int t = 0; t < steps; t++) {
        int n = plen + t;
        int32_t cu[2] = {0, n};
        aha_batch b = {seq, cu, 1};
        AHA_ASSERT(aha_model_token_logprobs(m, &b, lp, lg, NULL) == AHA_OK);
        seq[n] = aha_argmax(lg + (size_t)(n - 1) * V, V);
        out[t] = seq[n];
    }
    free(lg);
    free(lp);
}

typedef struct {
    const int32_t *prompt;
    int plen;
    result r;
    aha_status st;
    aha_err err;
} bg_t;

static void *bg_gen(void *arg)
{
    bg_t *b = arg;
    b->st = gen(b->prompt, b->plen, 40, 6, 1.0f, 80, &b->r, &b->err);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-llama", th_fixtures());
    char *av[] = {argv[1], "--model", dir, "--max-batch", "6", "--max-seq-len", "96",
                  "--log-level", "warn", NULL};
    th_service svc = {0};
    CHECK(th_spawn(&svc, av) > 0, "aha-rollout started");
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", svc.port);
    CHECK(aha_rpc_channel_create(target, NULL, &ch, &err) == AHA_OK, "%s", err.msg);

    aha_backend *be;
    aha_backend_open("cpu", 1, &be, &err);
    aha_model *m, *rnd;
    CHECK(aha_model_open(dir, be, NULL, &m, &err) == AHA_OK, "%s", err.msg);
    int32_t prompt[6] = {1, 33, 250, 7, 19, 100};
    int32_t want[12];
    argmax_continuation(m, prompt, 6, 12, want);
    result r;
    CHECK(gen(prompt, 6, 1, 3, 0.0f, 12, &r, &err) == AHA_OK, "greedy: %s", err.msg);
    CHECK(r.n == 3, "3 completions, got %d", r.n);
    for (int i = 0; i < r.n && i < 3; i++)
        CHECK(r.len[i] == 12 && memcmp(r.ids[i], want, 12 * 4) == 0,
              "greedy sample %d equals the argmax continuation", i);

    /* push during a long request */
    CHECK(aha_model_init_random(aha_model_cfg(m), 77, be, NULL, &rnd, &err) == AHA_OK, "%s", err.msg);
    aha_weight_snapshot *snap;
    CHECK(aha_weight_snapshot_create(rnd, AHA_DT_BF16, &snap, &err) == AHA_OK, "%s", err.msg);
    bg_t bg = {.prompt = prompt, .plen = 6};
    pthread_t th;
    pthread_create(&th, NULL, bg_gen, &bg);
    usleep(200 * 1000);
    aha_weight_push_opts po = {.version = 1, .timeout_ms = 30000};
    aha_weight_push_result pr;
    CHECK(aha_weight_snapshot_send(snap, ch, &aha__v1__rollout__descriptor, &po, &pr, &err) == AHA_OK,
          "push: %s", err.msg);
    pthread_join(th, NULL);
    CHECK(bg.st == AHA_OK, "long request: %s", bg.err.msg);
    CHECK(bg.r.n == 240, "240 completions, got %d", bg.r.n);
    CHECK(bg.r.other == 0, "%d completions with inconsistent versions", bg.r.other);
    CHECK(bg.r.changed > 0, "completions spanning the switch report weights_changed (%d)", bg.r.changed);
    CHECK(bg.r.v1 > 0, "completions after the switch report version 1 (%d)", bg.r.v1);
    fprintf(stderr, "  long request: %d before, %d across, %d after the switch\n", bg.r.v0,
            bg.r.changed, bg.r.v1);

    /* greedy after the push = argmax continuation of the pushed model in bf16 */
    for (int i = 0; i < aha_model_n_params(rnd); i++) {
        const aha_param_info *p = aha_model_param(rnd, i);
        float *w = malloc((size_t)p->numel * 4);
        aha_model_param_get_f32(rnd, i, w, NULL);
        for (int64_t j = 0; j < p->numel; j++) w[j] = aha_bf16_to_f32(aha_f32_to_bf16(w[j]));
        aha_model_param_set_f32(rnd, i, w, NULL);
        free(w);
    }
    argmax_continuation(rnd, prompt, 6, 12, want);
    CHECK(gen(prompt, 6, 1, 2, 0.0f, 12, &r, &err) == AHA_OK, "greedy after push: %s", err.msg);
    for (int i = 0; i < r.n && i < 2; i++)
        CHECK(r.len[i] == 12 && memcmp(r.ids[i], want, 12 * 4) == 0,
              "greedy sample %d after the push equals the pushed model's argmax continuation", i);

    aha_weight_snapshot_free(snap);
    aha_rpc_channel_free(ch);
    CHECK(th_stop(&svc) == 0, "clean exit");
    aha_model_free(m);
    aha_model_free(rnd);
    aha_backend_free(be);
    return th_done("test_rollout_c");
}
