/* test_weightgroup_rollout: aha-rollout joins a learner's weights group (JoinWeightGroup,
 * dist/weightgroup.h) over the TCP transport (the CPU stand-in for NCCL): this process plays
 * learner rank 0, pushes a random policy as version 3, and greedy completions must then equal
 * the argmax continuation of that policy computed here, reporting policy_version 3. A request
 * whose layout signature does not match is refused with FAILED_PRECONDITION.
 *
 * usage: test_weightgroup_rollout PATH/aha-rollout */
#include <netinet/in.h>
#include <sys/socket.h>

#include "../harness.h"
#include "aha/v1/rollout.pb-c.h"
#include "backend/backend.h"
#include "base/log.h"
#include "dist/weightgroup.h"
#include "model/model.h"
#include "model/sample.h"
#include "rpc/rpc.h"
#include "spawn.h"

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) exit(1);
    close(fd);
    return ntohs(a.sin_port);
}

static void argmax_continuation(aha_model *m, const int32_t *prompt, int plen, int steps, int32_t *out)
{
    int V = aha_model_cfg(m)->vocab_size;
    int32_t seq[64];
    memcpy(seq, prompt, (size_t)plen * 4);
    float *lg = malloc((size_t)(plen + steps) * V * 4), *lp = malloc((size_t)(plen + steps) * 4);
    for (int t = 0; t < steps; t++) {
        int n = plen + t;
        int32_t cu[2] = {0, n};
        aha_batch b = {seq, cu, 1, NULL};
        AHA_ASSERT(aha_model_token_logprobs(m, &b, lp, lg, NULL) == AHA_OK);
        seq[n] = aha_argmax(lg + (size_t)(n - 1) * V, V);
        out[t] = seq[n];
    }
    free(lg);
    free(lp);
}

/* greedy completion of prompt: ids and the policy version reported */
static aha_status greedy(aha_rpc_channel *ch, int32_t *prompt, int plen, int steps, int32_t *ids, int *n,
                         int64_t *version, aha_err *err)
{
    Aha__V1__Prompt p = AHA__V1__PROMPT__INIT, *pp = &p;
    p.id = "q";
    p.n_token_ids = (size_t)plen;
    p.token_ids = prompt;
    Aha__V1__SamplingParams sp = AHA__V1__SAMPLING_PARAMS__INIT;
    sp.max_new_tokens = steps;
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    req.n_prompts = 1;
    req.prompts = &pp;
    req.n = 1;
    req.sampling = &sp;
    aha_rpc_call_opts o = {.timeout_ms = 30000};
    aha_rpc_stream *st = NULL;
    aha_status s = aha_rpc_stream_open(ch, &aha__v1__rollout__descriptor, "Generate", &req.base, &o, &st, err);
    *n = 0;
    while (s == AHA_OK) {
        ProtobufCMessage *m = NULL;
        s = aha_rpc_stream_next(st, &m, err);
        if (s != AHA_OK || !m) break;
        const Aha__V1__Completion *c = (const Aha__V1__Completion *)m;
        *n = (int)c->n_token_ids < steps ? (int)c->n_token_ids : steps;
        memcpy(ids, c->token_ids, (size_t)*n * 4);
        *version = c->policy_version;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (st) aha_rpc_stream_free(st);
    return s;
}

static aha_status join(aha_rpc_channel *ch, const char *rdv, uint64_t sig, Aha__V1__JoinWeightGroupReply **rep,
                       aha_err *err)
{
    Aha__V1__JoinWeightGroupRequest req = AHA__V1__JOIN_WEIGHT_GROUP_REQUEST__INIT;
    req.rendezvous = (char *)rdv;
    req.rank = 1;
    req.world_size = 2;
    req.transport = "tcp";
    req.timeout_ms = 20000;
    req.layout_signature = sig;
    aha_rpc_call_opts o = {.timeout_ms = 20000};
    return aha_rpc_unary(ch, &aha__v1__rollout__descriptor, "JoinWeightGroup", &req.base, (ProtobufCMessage **)rep,
                         &o, err);
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-llama", th_fixtures());
    char *av[] = {argv[1], "--model", dir, "--max-batch", "4", "--max-seq-len", "64", "--log-level", "warn", NULL};
    th_service svc = {0};
    CHECK(th_spawn(&svc, av) > 0, "aha-rollout started");
    char target[64], rdv[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", svc.port);
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", free_port());
    aha_rpc_channel *ch = NULL;
    CHECK(aha_rpc_channel_create(target, NULL, &ch, &err) == AHA_OK, "%s", err.msg);

    aha_backend *be = NULL;
    aha_backend_open("cpu", 1, &be, &err);
    aha_model *m = NULL, *pol = NULL;
    CHECK(aha_model_open(dir, be, NULL, &m, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_init_random(aha_model_cfg(m), 77, be, NULL, &pol, &err) == AHA_OK, "%s", err.msg);
    uint64_t sig = aha_weight_group_signature(pol);

    Aha__V1__JoinWeightGroupReply *rep = NULL;
    aha_status st = join(ch, rdv, sig ^ 1, &rep, &err);
    CHECK(st == AHA_EPRECOND && strstr(err.msg, "layout"), "mismatched layout refused: %s", err.msg);
    if (rep) protobuf_c_message_free_unpacked(&rep->base, NULL);
    rep = NULL;

    CHECK(join(ch, rdv, sig, &rep, &err) == AHA_OK, "join: %s", err.msg);
    CHECK(rep && rep->joining && rep->layout_signature == sig, "join reply");
    if (rep) protobuf_c_message_free_unpacked(&rep->base, NULL);
    aha_weight_group_opts o = {.rendezvous = rdv, .rank = 0, .world_size = 2, .kind = AHA_COMM_TCP,
                               .timeout_ms = 20000};
    aha_weight_group *g = NULL;
    CHECK(aha_weight_group_open(pol, &o, &g, &err) == AHA_OK, "open: %s", err.msg);
    double secs = 0;
    if (g) CHECK(aha_weight_group_push(g, 3, &secs, &err) == AHA_OK, "push: %s", err.msg);

    int32_t prompt[5] = {1, 33, 250, 7, 19}, want[10], got[10];
    argmax_continuation(pol, prompt, 5, 10, want);
    /* the worker applies between decode steps: the first request after the push may still
     * be answered by the old weights while the copy is queued, so ask until version 3 */
    int n = 0;
    int64_t version = -1;
    for (int i = 0; i < 50 && version != 3; i++) {
        CHECK(greedy(ch, prompt, 5, 10, got, &n, &version, &err) == AHA_OK, "generate: %s", err.msg);
        if (version != 3) usleep(20000);
    }
    CHECK(version == 3, "completions report the pushed version 3 (got %lld)", (long long)version);
    CHECK(n == 10 && memcmp(got, want, sizeof want) == 0, "greedy equals the pushed policy's argmax continuation");
    fprintf(stderr, "  pushed %lld weights in %.4f s; greedy continuation matches: %s\n",
            (long long)aha_model_numel(pol), secs, n == 10 && !memcmp(got, want, sizeof want) ? "yes" : "no");

    aha_weight_group_free(g);
    aha_rpc_channel_free(ch);
    CHECK(th_stop(&svc) == 0, "clean exit");
    aha_model_free(m);
    aha_model_free(pol);
    aha_backend_free(be);
    return th_done("test_weightgroup_rollout");
}
