/* test_rpc: the gRPC layer (common/rpc) on loopback, server and client in one process.
 *
 * Test services use the real protos: aha.v1.Reward/Score (unary), aha.v1.Rollout/Generate
 * (server streaming) and aha.v1.Rollout/UpdateWeights (client streaming) with handlers
 * defined here; every expected value is computed independently by the test from its
 * inputs. Run as `test_rpc CASE` (one process per case, see meson.build). */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../harness.h"
#include "aha/v1/refpolicy.pb-c.h"
#include "aha/v1/reward.pb-c.h"
#include "aha/v1/rollout.pb-c.h"
#include "base/fs.h"
#include "base/rng.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"

/* ---------------------------------------------------------------------------------------- */
/* test handlers                                                                            */

static atomic_int g_saw_cancel;     /* a handler observed aha_rpc_call_cancelled */
static atomic_int g_cancel_cb;      /* the on_cancel callback ran */
static atomic_int g_handler_done;   /* long handlers that returned */
static atomic_int g_in_handler;     /* handlers running now */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Sleep up to ms, returning early (1) when the call is cancelled. */
static int sleep_or_cancel(aha_rpc_call *c, int ms)
{
    for (int t = 0; t < ms; t += 5) {
        if (aha_rpc_call_cancelled(c)) return 1;
        sleep_ms(5);
    }
    return aha_rpc_call_cancelled(c);
}

static void on_cancel_cb(void *arg)
{
    (void)arg;
    atomic_store(&g_cancel_cb, 1);
}

/* Score: total = completion length; components["deadline"] = seconds left;
 * id "md" echoes metadata x-test; "sleep:N" sleeps (cancellable); "fail" -> EINVAL;
 * "big:N" -> a reply of N bytes of id. */
static aha_status h_score(aha_rpc_call *c, const ProtobufCMessage *req, void *user, aha_err *err)
{
    (void)user;
    const Aha__V1__ScoreRequest *r = (const Aha__V1__ScoreRequest *)req;
    atomic_fetch_add(&g_in_handler, 1);
    aha_status st = AHA_OK;
    Aha__V1__ScoreResponse resp = AHA__V1__SCORE_RESPONSE__INIT;
    Aha__V1__RewardResult *res = calloc(r->n_items + 1, sizeof *res);
    Aha__V1__RewardResult **ptrs = calloc(r->n_items + 1, sizeof *ptrs);
    Aha__V1__RewardResult__ComponentsEntry *ent = calloc(r->n_items + 1, sizeof *ent);
    Aha__V1__RewardResult__ComponentsEntry **eptrs = calloc(r->n_items + 1, sizeof *eptrs);
    char mdbuf[128] = "";
    char *big = NULL;
    for (size_t i = 0; i < r->n_items; i++) {
        const Aha__V1__ScoreItem *it = r->items[i];
        aha__v1__reward_result__init(&res[i]);
        aha__v1__reward_result__components_entry__init(&ent[i]);
        ptrs[i] = &res[i];
        eptrs[i] = &ent[i];
        res[i].id = it->id;
        res[i].total = (double)strlen(it->completion);
        ent[i].key = "deadline";
        ent[i].value = aha_rpc_call_time_left(c);
        res[i].n_components = 1;
        res[i].components = &eptrs[i];
        if (strcmp(it->id, "md") == 0) {
            long n = aha_rpc_call_metadata(c, "x-test", mdbuf, sizeof mdbuf);
            res[i].extracted_answer = n >= 0 ? mdbuf : "(absent)";
        }
        if (strncmp(it->id, "sleep:", 6) == 0) {
            aha_rpc_call_on_cancel(c, on_cancel_cb, NULL);
            if (sleep_or_cancel(c, atoi(it->id + 6))) {
                atomic_store(&g_saw_cancel, 1);
                st = aha_errf(err, AHA_ECANCELLED, "stopped: cancelled");
                goto out;
            }
        }
        if (strcmp(it->id, "fail") == 0) {
            st = aha_errf(err, AHA_EINVAL, "item %zu: the test asked for a failure", i);
            goto out;
        }
        if (strncmp(it->id, "big:", 4) == 0) {
            size_t n = (size_t)atol(it->id + 4);
            big = malloc(n + 1);
            memset(big, 'x', n);
            big[n] = 0;
            res[i].error = big;
        }
    }
    resp.n_results = r->n_items;
    resp.results = ptrs;
    st = aha_rpc_call_send(c, &resp.base, err);
out:
    free(big);
    free(res);
    free(ptrs);
    free(ent);
    free(eptrs);
    atomic_fetch_sub(&g_in_handler, 1);
    atomic_fetch_add(&g_handler_done, 1);
    return st;
}

typedef struct {
    aha_rpc_call *c;
    int n;
    aha_status st;
} gen_job;

static aha_status gen_send(aha_rpc_call *c, int i, aha_err *err)
{
    Aha__V1__Completion m = AHA__V1__COMPLETION__INIT;
    char id[32];
    snprintf(id, sizeof id, "p%d", i);
    m.prompt_id = id;
    m.index = i;
    return aha_rpc_call_send(c, &m.base, err);
}

static void *gen_thread(void *arg)
{
    gen_job *j = arg;
    aha_err err;
    for (int i = 0; i < j->n && j->st == AHA_OK; i++) j->st = gen_send(j->c, i, &err);
    return NULL;
}

/* Generate: n completions with index 0..n-1. sampling.seed == 1: sent from another thread;
 * n < 0: stream until cancelled. */
static aha_status h_generate(aha_rpc_call *c, const ProtobufCMessage *req, void *user,
                             aha_err *err)
{
    (void)user;
    const Aha__V1__GenerateRequest *r = (const Aha__V1__GenerateRequest *)req;
    if (r->n < 0) {
        for (int i = 0;; i++) {
            if (aha_rpc_call_cancelled(c)) {
                atomic_store(&g_saw_cancel, 1);
                return aha_errf(err, AHA_ECANCELLED, "cancelled after %d", i);
            }
            aha_status st = gen_send(c, i, err);
            if (st != AHA_OK) {
                if (aha_rpc_call_cancelled(c)) atomic_store(&g_saw_cancel, 1);
                return st;
            }
            if (i % 64 == 0) sleep_ms(1);
        }
    }
    if (r->sampling && r->sampling->seed == 2) { /* queue everything, never block */
        for (int i = 0; i < r->n; i++) {
            Aha__V1__Completion m = AHA__V1__COMPLETION__INIT;
            char id[32];
            snprintf(id, sizeof id, "p%d", i);
            m.prompt_id = id;
            m.index = i;
            AHA_TRY(aha_rpc_call_send_nowait(c, &m.base, err));
        }
        return AHA_OK;
    }
    if (r->sampling && r->sampling->seed == 1) {
        gen_job j = {c, r->n, AHA_OK};
        pthread_t t;
        pthread_create(&t, NULL, gen_thread, &j);
        pthread_join(t, NULL);
        if (j.st != AHA_OK) return aha_errf(err, j.st, "sender thread failed");
        return AHA_OK;
    }
    for (int i = 0; i < r->n; i++) AHA_TRY(gen_send(c, i, err));
    return AHA_OK;
}

/* UpdateWeights: bytes = total data bytes, tensors = chunks, version = Σ data[k]·(k+1) mod 2^31
 * over all bytes in order. */
static aha_status h_update(aha_rpc_call *c, const ProtobufCMessage *req, void *user, aha_err *err)
{
    (void)user;
    (void)req;
    int64_t bytes = 0, sum = 0;
    int chunks = 0;
    for (;;) {
        ProtobufCMessage *m;
        AHA_TRY(aha_rpc_call_recv(c, &m, err));
        if (!m) break;
        Aha__V1__WeightChunk *ch = (Aha__V1__WeightChunk *)m;
        for (size_t k = 0; k < ch->data.len; k++)
            sum = (sum + (int64_t)ch->data.data[k] * ((bytes + (int64_t)k) % 1000 + 1)) %
                  2147483647;
        bytes += (int64_t)ch->data.len;
        chunks++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    Aha__V1__UpdateWeightsReply rep = AHA__V1__UPDATE_WEIGHTS_REPLY__INIT;
    rep.bytes = bytes;
    rep.tensors = chunks;
    rep.version = sum;
    return aha_rpc_call_send(c, &rep.base, err);
}

/* RefPolicy/UpdateWeights: the same sums as h_update, through aha_rpc_call_recv_bytes (the
 * data field not copied); also checks that the other fields survive: chunk k has
 * name "w<k>" and offset == bytes before it. */
static aha_status h_update_zc(aha_rpc_call *c, const ProtobufCMessage *req, void *user,
                              aha_err *err)
{
    (void)user;
    (void)req;
    int64_t bytes = 0, sum = 0;
    int chunks = 0, fields_ok = 1;
    for (;;) {
        ProtobufCMessage *m;
        const uint8_t *data;
        size_t len;
        aha_rpc_bytes *hold;
        AHA_TRY(aha_rpc_call_recv_bytes(c, 6, &m, &data, &len, &hold, err));
        if (!m) break;
        Aha__V1__WeightChunk *ch = (Aha__V1__WeightChunk *)m;
        char name[32];
        snprintf(name, sizeof name, "w%d", chunks);
        if (ch->data.len != 0 || strcmp(ch->name, name) != 0 || ch->offset != bytes) fields_ok = 0;
        for (size_t k = 0; k < len; k++)
            sum = (sum + (int64_t)data[k] * ((bytes + (int64_t)k) % 1000 + 1)) % 2147483647;
        bytes += (int64_t)len;
        chunks++;
        protobuf_c_message_free_unpacked(m, NULL);
        aha_rpc_bytes_free(hold);
    }
    Aha__V1__UpdateWeightsReply rep = AHA__V1__UPDATE_WEIGHTS_REPLY__INIT;
    rep.bytes = bytes;
    rep.tensors = fields_ok ? chunks : -1;
    rep.version = sum;
    return aha_rpc_call_send(c, &rep.base, err);
}

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */

static aha_rpc_server *start_server_opts(const aha_rpc_server_opts *opts);

static aha_rpc_server *start_server(const char *listen, int64_t max_recv, int grace_ms,
                                    int notice_ms, int max_conc)
{
    aha_rpc_server_opts o;
    aha_rpc_server_opts_init(&o);
    o.listen = listen;
    o.name = "test";
    if (max_recv) o.max_recv_bytes = max_recv;
    o.grace_ms = grace_ms;
    o.notice_ms = notice_ms;
    if (max_conc) o.max_concurrent_calls = max_conc;
    return start_server_opts(&o);
}

static aha_rpc_server *start_server_opts(const aha_rpc_server_opts *opts)
{
    aha_rpc_server_opts o = *opts;
    aha_rpc_server *s = NULL;
    aha_err err;
    aha_status st = aha_rpc_server_create(&o, &s, &err);
    if (st == AHA_OK)
        st = aha_rpc_server_add_method(s, &aha__v1__reward__descriptor, "Score", AHA_RPC_UNARY,
                                       h_score, NULL, &err);
    if (st == AHA_OK)
        st = aha_rpc_server_add_method(s, &aha__v1__rollout__descriptor, "Generate",
                                       AHA_RPC_SERVER_STREAM, h_generate, NULL, &err);
    if (st == AHA_OK)
        st = aha_rpc_server_add_method(s, &aha__v1__rollout__descriptor, "UpdateWeights",
                                       AHA_RPC_CLIENT_STREAM, h_update, NULL, &err);
    if (st == AHA_OK)
        st = aha_rpc_server_add_method(s, &aha__v1__ref_policy__descriptor, "UpdateWeights",
                                       AHA_RPC_CLIENT_STREAM, h_update_zc, NULL, &err);
    if (st == AHA_OK) st = aha_rpc_server_start(s, &err);
    if (st != AHA_OK) {
        fprintf(stderr, "server: %s\n", err.msg);
        exit(1);
    }
    return s;
}

static aha_rpc_channel *connect_to(int port, int attempts)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    aha_rpc_channel_opts o;
    aha_rpc_channel_opts_init(&o);
    o.attempts = attempts;
    aha_rpc_channel *ch;
    aha_err err;
    if (aha_rpc_channel_create(target, &o, &ch, &err) != AHA_OK) {
        fprintf(stderr, "channel: %s\n", err.msg);
        exit(1);
    }
    return ch;
}

/* Score request with items (id, completion) */
typedef struct {
    Aha__V1__ScoreRequest req;
    Aha__V1__ScoreItem items[8];
    Aha__V1__ScoreItem *ptrs[8];
} score_req;

static void score_init(score_req *r, int n, const char *const *ids, const char *const *comps)
{
    aha__v1__score_request__init(&r->req);
    for (int i = 0; i < n; i++) {
        aha__v1__score_item__init(&r->items[i]);
        r->items[i].id = (char *)ids[i];
        r->items[i].completion = (char *)comps[i];
        r->ptrs[i] = &r->items[i];
    }
    r->req.n_items = (size_t)n;
    r->req.items = r->ptrs;
}

static aha_status score(aha_rpc_channel *ch, const char *id, const char *completion,
                        int timeout_ms, int *code, Aha__V1__ScoreResponse **out, aha_err *err)
{
    score_req r;
    const char *ids[1] = {id}, *comps[1] = {completion};
    score_init(&r, 1, ids, comps);
    aha_rpc_call_opts o = {.timeout_ms = timeout_ms};
    ProtobufCMessage *resp = NULL;
    aha_status st = aha_rpc_unary(ch, &aha__v1__reward__descriptor, "Score", &r.req.base, &resp,
                                  &o, err);
    *code = o.code;
    if (out) *out = (Aha__V1__ScoreResponse *)resp;
    else if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st;
}

static int health(aha_rpc_channel *ch, const char *service, int *code)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp = NULL;
    aha_rpc_call_opts o = {.timeout_ms = 2000};
    aha_err err;
    aha_rpc_unary(ch, &grpc__health__v1__health__descriptor, "Check", &req.base, &resp, &o, &err);
    *code = o.code;
    int status = -1;
    if (resp) {
        status = (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return status;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return 0;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* ---------------------------------------------------------------------------------------- */
/* cases                                                                                    */

static void case_unary(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    score_req r;
    const char *ids[3] = {"a", "b", "md"};
    const char *comps[3] = {"hello", "", "twelve chars"};
    score_init(&r, 3, ids, comps);
    aha_rpc_metadata md[1] = {{"x-test", "value-42"}};
    aha_rpc_call_opts o = {.timeout_ms = 5000, .metadata = md, .n_metadata = 1};
    ProtobufCMessage *resp = NULL;
    aha_err err;
    aha_status st = aha_rpc_unary(ch, &aha__v1__reward__descriptor, "Score", &r.req.base, &resp,
                                  &o, &err);
    CHECK(st == AHA_OK && o.code == 0, "unary: %s", st ? err.msg : "");
    Aha__V1__ScoreResponse *sr = (Aha__V1__ScoreResponse *)resp;
    CHECK(sr && sr->n_results == 3, "3 results");
    for (int i = 0; sr && i < 3 && i < (int)sr->n_results; i++) {
        CHECK(strcmp(sr->results[i]->id, ids[i]) == 0, "order: %s", sr->results[i]->id);
        CHECK(sr->results[i]->total == (double)strlen(comps[i]), "total %g", sr->results[i]->total);
        double left = sr->results[i]->components[0]->value;
        CHECK(left > 0 && left <= 5.0, "deadline visible to the handler: %g s left", left);
    }
    if (sr) CHECK(strcmp(sr->results[2]->extracted_answer, "value-42") == 0, "metadata '%s'",
                  sr->results[2]->extracted_answer);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);

    /* no deadline → infinite time left */
    int code;
    Aha__V1__ScoreResponse *r2 = NULL;
    st = score(ch, "x", "abc", 0, &code, &r2, &err);
    CHECK(st == AHA_OK && r2 && isinf(r2->results[0]->components[0]->value), "no deadline: inf");
    if (r2) protobuf_c_message_free_unpacked(&r2->base, NULL);

    /* handler error → its status and message */
    st = score(ch, "fail", "x", 5000, &code, NULL, &err);
    CHECK(st == AHA_EINVAL && code == 3, "handler EINVAL -> INVALID_ARGUMENT (%d)", code);
    CHECK(strstr(err.msg, "the test asked for a failure") != NULL, "message: %s", err.msg);

    /* concurrent unary calls from 8 threads on one channel are checked in case_threads */
    /* the server counts a call once its status is sent, which can come after the client
     * already holds the reply: wait (bounded) for the count to settle */
    aha_rpc_server_stats stats;
    for (int i = 0; i < 200; i++) {
        aha_rpc_server_get_stats(s, &stats);
        if (stats.requests >= 3) break;
        sleep_ms(10);
    }
    CHECK(stats.requests == 3 && stats.errors == 1, "stats %llu/%llu",
          (unsigned long long)stats.requests, (unsigned long long)stats.errors);
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void case_errors(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 1 << 20, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    aha_err err;
    void *out = NULL;
    size_t outlen = 0;
    aha_rpc_call_opts o = {.timeout_ms = 5000};

    /* unknown method */
    aha_status st = aha_rpc_unary_raw(ch, "/aha.v1.Nope/Missing", "", 0, &out, &outlen, &o, &err);
    CHECK(st == AHA_EUNSUPPORTED && o.code == 12, "unknown method -> UNIMPLEMENTED (%d %s)",
          o.code, err.msg);
    free(out);

    /* garbage bytes */
    o.code = 0;
    static const char junk[] = "\x0a\x64\xff\xff";
    st = aha_rpc_unary_raw(ch, "/aha.v1.Reward/Score", junk, 4, &out, &outlen, &o, &err);
    CHECK(st == AHA_EINVAL && o.code == 3, "garbage -> INVALID_ARGUMENT (%d %s)", o.code, err.msg);
    CHECK(strstr(err.msg, "aha.v1.ScoreRequest") != NULL, "names the type: %s", err.msg);
    free(out);

    /* oversize request: 2 MiB against a 1 MiB server limit */
    char *big = malloc((2 << 20) + 1);
    memset(big, 'a', 2 << 20);
    big[2 << 20] = 0;
    int code;
    st = score(ch, "x", big, 5000, &code, NULL, &err);
    CHECK(st == AHA_ELIMIT && code == 8, "oversize -> RESOURCE_EXHAUSTED (%d %s)", code, err.msg);
    free(big);

    /* oversize reply: client limit 1 MiB, reply 2 MiB */
    aha_rpc_channel_opts co;
    aha_rpc_channel_opts_init(&co);
    co.max_recv_bytes = 1 << 20;
    co.attempts = 1;
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", aha_rpc_server_port(s));
    aha_rpc_channel *small;
    aha_rpc_channel_create(target, &co, &small, &err);
    st = score(small, "big:2097152", "x", 5000, &code, NULL, &err);
    CHECK(st == AHA_ELIMIT && code == 8, "oversize reply -> RESOURCE_EXHAUSTED (%d %s)", code,
          err.msg);
    aha_rpc_channel_free(small);

    /* the server still works */
    st = score(ch, "ok", "abc", 5000, &code, NULL, &err);
    CHECK(st == AHA_OK, "after errors: %s", st ? err.msg : "");

    /* SO_REUSEPORT is off: a second server on the same port fails instead of sharing it */
    {
        aha_rpc_server_opts so;
        aha_rpc_server_opts_init(&so);
        char listen[64];
        snprintf(listen, sizeof listen, "127.0.0.1:%d", aha_rpc_server_port(s));
        so.listen = listen;
        aha_rpc_server *dup = NULL;
        aha_status rc = aha_rpc_server_create(&so, &dup, &err);
        if (rc == AHA_OK) rc = aha_rpc_server_start(dup, &err);
        CHECK(rc == AHA_EUNAVAILABLE && strstr(err.msg, listen), "busy port refused: %s",
              err.msg);
        aha_rpc_server_free(dup);
    }

    /* no server at all, one attempt */
    int port = free_port();
    aha_rpc_channel *none = connect_to(port, 1);
    st = score(none, "x", "y", 2000, &code, NULL, &err);
    CHECK(st == AHA_EUNAVAILABLE && code == 14, "no server -> UNAVAILABLE (%d %s)", code, err.msg);
    aha_rpc_channel_free(none);

    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void case_stream(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    for (int from_thread = 0; from_thread < 3; from_thread++) { /* 2: send_nowait */
        Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
        Aha__V1__SamplingParams sp = AHA__V1__SAMPLING_PARAMS__INIT;
        sp.seed = (uint64_t)from_thread;
        req.sampling = &sp;
        req.n = 5000;
        aha_rpc_call_opts o = {.timeout_ms = 20000};
        aha_rpc_stream *st;
        aha_err err;
        aha_status rc = aha_rpc_stream_open(ch, &aha__v1__rollout__descriptor, "Generate",
                                            &req.base, &o, &st, &err);
        CHECK(rc == AHA_OK, "open: %s", rc ? err.msg : "");
        int got = 0, inorder = 1;
        for (;;) {
            ProtobufCMessage *m;
            rc = aha_rpc_stream_next(st, &m, &err);
            if (rc != AHA_OK || !m) break;
            Aha__V1__Completion *c = (Aha__V1__Completion *)m;
            char id[32];
            snprintf(id, sizeof id, "p%d", got);
            if (c->index != got || strcmp(c->prompt_id, id) != 0) inorder = 0;
            got++;
            protobuf_c_message_free_unpacked(m, NULL);
        }
        CHECK(rc == AHA_OK && o.code == 0, "stream end: %s", rc ? err.msg : "");
        CHECK(got == 5000 && inorder, "from_thread %d: got %d in order %d", from_thread, got,
              inorder);
        aha_rpc_stream_free(st);
    }
    /* empty stream */
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    aha_rpc_stream *st;
    aha_err err;
    aha_rpc_stream_open(ch, &aha__v1__rollout__descriptor, "Generate", &req.base, NULL, &st, &err);
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    aha_status rc = aha_rpc_stream_next(st, &m, &err);
    CHECK(rc == AHA_OK && m == NULL, "empty stream ends OK");
    aha_rpc_stream_free(st);
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void case_upload(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 8 << 20, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    enum { CHUNKS = 48, CHUNK = 1 << 20 };
    uint8_t *bufs[2] = {malloc(CHUNK), malloc(CHUNK)};
    aha_rpc_call_opts o = {.timeout_ms = 30000};
    aha_rpc_stream *st;
    aha_err err;
    aha_status rc;
    /* Rollout: upload_send + aha_rpc_call_recv; RefPolicy: upload_send_bytes +
     * aha_rpc_call_recv_bytes (the data field copied on neither side) */
    const ProtobufCServiceDescriptor *svcs[2] = {&aha__v1__rollout__descriptor,
                                                 &aha__v1__ref_policy__descriptor};
    for (int v = 0; v < 2; v++) {
        int64_t bytes = 0, sum = 0;
        rc = aha_rpc_upload_open(ch, svcs[v], "UpdateWeights", &o, &st, &err);
        CHECK(rc == AHA_OK, "upload open");
        aha_rng rng;
        aha_rng_seed(&rng, 7, 0);
        double t0 = aha_now_s();
        for (int c = 0; c < CHUNKS && rc == AHA_OK; c++) {
            /* Two buffers in turn: a lent buffer may be refilled only once the next send
             * returned (upload_send_bytes' contract); the copying send does not care. */
            uint8_t *data = bufs[c % 2];
            size_t n = CHUNK - (size_t)c * 1000; /* unequal sizes */
            for (size_t k = 0; k < n; k++) data[k] = (uint8_t)aha_rng_below(&rng, 256);
            for (size_t k = 0; k < n; k++)
                sum = (sum + (int64_t)data[k] * ((bytes + (int64_t)k) % 1000 + 1)) % 2147483647;
            bytes += (int64_t)n;
            Aha__V1__WeightChunk wc = AHA__V1__WEIGHT_CHUNK__INIT;
            char name[32];
            snprintf(name, sizeof name, "w%d", c);
            wc.name = name;
            wc.offset = bytes - (int64_t)n;
            wc.tensor_bytes = 12345;
            if (v == 0) {
                wc.data.data = data;
                wc.data.len = n;
                rc = aha_rpc_upload_send(st, &wc.base, &err);
            } else { /* lent, not copied: the chunk after next overwrites this buffer, so
                      * a use of it after its release would break the server's checksum */
                rc = aha_rpc_upload_send_bytes(st, &wc.base, 6, data, n, &err);
            }
        }
        CHECK(rc == AHA_OK, "sends: %s", rc ? err.msg : "");
        ProtobufCMessage *resp = NULL;
        rc = aha_rpc_upload_finish(st, &resp, &err);
        double dt = aha_now_s() - t0;
        CHECK(rc == AHA_OK && o.code == 0, "upload finish: %s", rc ? err.msg : "");
        Aha__V1__UpdateWeightsReply *r = (Aha__V1__UpdateWeightsReply *)resp;
        CHECK(r && r->bytes == bytes && r->tensors == CHUNKS && r->version == sum,
              "v%d: server counted %lld bytes / %d chunks / sum %lld (want %lld / %d / %lld)", v,
              r ? (long long)r->bytes : -1LL, r ? r->tensors : -1, r ? (long long)r->version : -1LL,
              (long long)bytes, CHUNKS, (long long)sum);
        fprintf(stderr, "  %s upload of %.1f MB in %.2f s (incl. data generation)\n", svcs[v]->name,
                bytes / 1e6, dt);
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        aha_rpc_stream_free(st);
    }
    ProtobufCMessage *resp;

    /* a chunk over the server's 8 MiB limit ends the call with RESOURCE_EXHAUSTED */
    uint8_t *huge = calloc(9 << 20, 1);
    for (int v = 0; v < 2; v++) {
        rc = aha_rpc_upload_open(ch, svcs[v], "UpdateWeights", &o, &st, &err);
        Aha__V1__WeightChunk wc = AHA__V1__WEIGHT_CHUNK__INIT;
        if (v == 0) {
            wc.data.data = huge;
            wc.data.len = 9 << 20;
            aha_rpc_upload_send(st, &wc.base, &err);
        } else {
            aha_rpc_upload_send_bytes(st, &wc.base, 6, huge, 9 << 20, &err);
        }
        rc = aha_rpc_upload_finish(st, &resp, &err);
        CHECK(rc == AHA_ELIMIT && o.code == 8, "oversize chunk -> RESOURCE_EXHAUSTED (%d %s)",
              o.code, err.msg);
        aha_rpc_stream_free(st);
    }
    free(huge);
    free(bufs[0]);
    free(bufs[1]);
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void case_deadline(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    int code;
    aha_err err;
    double t0 = aha_now_s();
    aha_status st = score(ch, "sleep:5000", "x", 200, &code, NULL, &err);
    double dt = aha_now_s() - t0;
    CHECK(st == AHA_ETIMEOUT && code == 4, "DEADLINE_EXCEEDED (%d %s)", code, err.msg);
    CHECK(dt >= 0.19 && dt < 1.5, "returned after %.3f s", dt);
    for (int i = 0; i < 200 && !atomic_load(&g_saw_cancel); i++) sleep_ms(10);
    CHECK(atomic_load(&g_saw_cancel), "the handler saw the cancellation");
    CHECK(atomic_load(&g_cancel_cb), "the on_cancel callback ran");
    for (int i = 0; i < 200 && atomic_load(&g_in_handler); i++) sleep_ms(10);
    aha_rpc_server_stats stats;
    aha_rpc_server_get_stats(s, &stats);
    CHECK(stats.cancelled == 1, "server counted %llu cancelled",
          (unsigned long long)stats.cancelled);
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void case_cancel(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    req.n = -1; /* endless */
    aha_rpc_call_opts o = {.timeout_ms = 20000};
    aha_rpc_stream *st;
    aha_err err;
    aha_rpc_stream_open(ch, &aha__v1__rollout__descriptor, "Generate", &req.base, &o, &st, &err);
    int got = 0;
    aha_status rc = AHA_OK;
    double t0 = aha_now_s();
    for (;;) {
        ProtobufCMessage *m;
        rc = aha_rpc_stream_next(st, &m, &err);
        if (rc != AHA_OK || !m) break;
        protobuf_c_message_free_unpacked(m, NULL);
        if (++got == 100) aha_rpc_stream_cancel(st);
    }
    CHECK(rc == AHA_ECANCELLED && o.code == 1, "client cancel -> CANCELLED (%d %s)", o.code,
          err.msg);
    CHECK(aha_now_s() - t0 < 5, "cancel took %.2f s", aha_now_s() - t0);
    aha_rpc_stream_free(st);
    for (int i = 0; i < 300 && !atomic_load(&g_saw_cancel); i++) sleep_ms(10);
    CHECK(atomic_load(&g_saw_cancel), "the streaming handler saw the cancellation");
    /* the connection still serves other calls */
    int code;
    rc = score(ch, "x", "abcd", 5000, &code, NULL, &err);
    CHECK(rc == AHA_OK, "after cancel: %s", rc ? err.msg : "");
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void case_health(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    int code;
    CHECK(health(ch, "", &code) == 1 && code == 0, "overall SERVING");
    CHECK(health(ch, "aha.v1.Reward", &code) == 1, "aha.v1.Reward SERVING");
    CHECK(health(ch, "aha.v1.Rollout", &code) == 1, "aha.v1.Rollout SERVING");
    CHECK(health(ch, "aha.v1.Nope", &code) == -1 && code == 5, "unknown service NOT_FOUND (%d)",
          code);
    aha_rpc_server_set_serving(s, 0);
    CHECK(health(ch, "", &code) == 2, "NOT_SERVING after set_serving(0)");
    aha_rpc_server_set_serving(s, 1);
    CHECK(health(ch, "", &code) == 1, "SERVING again");
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

typedef struct {
    aha_rpc_channel *ch;
    int ok;
    int port;
    int delay_ms;
    aha_rpc_server *s;
} thr_arg;

static void *unary_thread(void *p)
{
    thr_arg *a = p;
    for (int i = 0; i < 50; i++) {
        char comp[64];
        snprintf(comp, sizeof comp, "%*s", i + 1, "z");
        int code;
        Aha__V1__ScoreResponse *r = NULL;
        aha_err err;
        aha_status st = score(a->ch, "t", comp, 10000, &code, &r, &err);
        if (st == AHA_OK && r && r->results[0]->total == (double)(i + 1)) a->ok++;
        if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    return NULL;
}

static void case_threads(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 1000, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    thr_arg a[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (thr_arg){.ch = ch};
        pthread_create(&t[i], NULL, unary_thread, &a[i]);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
    }
    CHECK(ok == 400, "%d of 400 concurrent calls right", ok);

    /* max_concurrent_calls: 2 slow calls fill a server limited to 2; a third is refused */
    aha_rpc_server *s2 = start_server("127.0.0.1:0", 0, 1000, 0, 2);
    aha_rpc_channel *ch2 = connect_to(aha_rpc_server_port(s2), 1);
    atomic_store(&g_in_handler, 0);
    thr_arg b[2];
    for (int i = 0; i < 2; i++) {
        b[i] = (thr_arg){.ch = ch2};
        pthread_create(&t[i], NULL, unary_thread, &b[i]); /* quick calls, just load */
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(b[0].ok + b[1].ok == 100, "limited server serves sequential load (%d)",
          b[0].ok + b[1].ok);
    aha_rpc_channel_free(ch2);
    aha_rpc_server_free(s2);
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void *slow_call(void *p)
{
    thr_arg *a = p;
    int code;
    aha_err err;
    char id[32];
    snprintf(id, sizeof id, "sleep:%d", a->delay_ms);
    aha_status st = score(a->ch, id, "x", 30000, &code, NULL, &err);
    a->ok = st == AHA_OK ? 1 : -code;
    return NULL;
}

static void case_limit(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 1000, 0, 2);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    thr_arg a[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        a[i] = (thr_arg){.ch = ch, .delay_ms = 800};
        pthread_create(&t[i], NULL, slow_call, &a[i]);
    }
    for (int i = 0; i < 300 && atomic_load(&g_in_handler) < 2; i++) sleep_ms(5);
    int code;
    aha_err err;
    aha_status st = score(ch, "x", "y", 5000, &code, NULL, &err);
    CHECK(st == AHA_ELIMIT && code == 8, "third call over the limit -> RESOURCE_EXHAUSTED (%d %s)",
          code, err.msg);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(a[0].ok == 1 && a[1].ok == 1, "the two slow calls finished (%d %d)", a[0].ok, a[1].ok);
    aha_rpc_channel_free(ch);
    aha_rpc_server_free(s);
}

static void *late_server(void *p)
{
    thr_arg *a = p;
    sleep_ms(a->delay_ms);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", a->port);
    a->s = start_server(listen, 0, 1000, 0, 0);
    return NULL;
}

static void case_retry(void)
{
    int port = free_port();
    thr_arg a = {.port = port, .delay_ms = 400};
    pthread_t t;
    pthread_create(&t, NULL, late_server, &a);
    aha_rpc_channel *ch = connect_to(port, 12); /* 50 ms doubling, capped at 2 s */
    int code;
    aha_err err;
    double t0 = aha_now_s();
    Aha__V1__ScoreResponse *r = NULL;
    aha_status st = score(ch, "r", "abc", 20000, &code, &r, &err);
    double dt = aha_now_s() - t0;
    CHECK(st == AHA_OK && code == 0, "retried until the server came up: %s", st ? err.msg : "");
    CHECK(r && r->n_results == 1 && r->results[0]->total == 3.0,
          "the retried request arrived whole");
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
    CHECK(dt >= 0.35, "succeeded after %.2f s (server started at 0.4 s)", dt);

    /* a server stream that is not yet open is retried too */
    pthread_join(t, NULL);
    aha_rpc_server_free(a.s);
    a.s = NULL;
    pthread_create(&t, NULL, late_server, &a);
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    req.n = 3;
    aha_rpc_call_opts o = {.timeout_ms = 20000};
    aha_rpc_stream *stm;
    aha_rpc_stream_open(ch, &aha__v1__rollout__descriptor, "Generate", &req.base, &o, &stm, &err);
    int got = 0;
    for (;;) {
        ProtobufCMessage *m;
        st = aha_rpc_stream_next(stm, &m, &err);
        if (st != AHA_OK || !m) break;
        got++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    CHECK(st == AHA_OK && got == 3, "stream retried: %d messages, %s", got, st ? err.msg : "ok");
    aha_rpc_stream_free(stm);
    pthread_join(t, NULL);

    /* a server that restarts is found again quickly: gRPC's reconnect backoff (1 s and
     * growing by default) is capped by the channel */
    aha_rpc_server_free(a.s);
    a.s = NULL;
    pthread_create(&t, NULL, late_server, &a);
    t0 = aha_now_s();
    st = score(ch, "r", "abc", 20000, &code, NULL, &err);
    dt = aha_now_s() - t0;
    pthread_join(t, NULL);
    CHECK(st == AHA_OK && dt < 1.5, "restarted server reached after %.2f s (up at 0.4 s): %s", dt,
          st ? err.msg : "ok");

    /* the deadline bounds the retries */
    aha_rpc_server_free(a.s);
    t0 = aha_now_s();
    st = score(ch, "r", "abc", 500, &code, NULL, &err);
    dt = aha_now_s() - t0;
    CHECK(st != AHA_OK && dt < 1.5, "no server: gave up after %.2f s (%s)", dt, err.msg);
    aha_rpc_channel_free(ch);
}

typedef struct {
    aha_rpc_server *s;
    aha_rpc_channel *ch;
    int health_during_notice, score_during_notice;
} probe_arg;

/* stop() the server, then probe it during its notice period */
static void *stop_and_probe(void *p)
{
    probe_arg *a = p;
    sleep_ms(50);
    aha_rpc_server_stop(a->s);
    sleep_ms(150);
    int code;
    a->health_during_notice = health(a->ch, "", &code);
    aha_err err;
    a->score_during_notice = score(a->ch, "x", "y", 2000, &code, NULL, &err) == AHA_OK;
    return NULL;
}

static void case_drain(void)
{
    /* notice 400 ms, grace 600 ms */
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 600, 400, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    thr_arg quick = {.ch = ch, .delay_ms = 600};   /* ends inside notice + grace */
    thr_arg stuck = {.ch = ch, .delay_ms = 20000}; /* needs the cancel */
    pthread_t tq, ts, tp;
    pthread_create(&tq, NULL, slow_call, &quick);
    pthread_create(&ts, NULL, slow_call, &stuck);
    for (int i = 0; i < 300 && atomic_load(&g_in_handler) < 2; i++) sleep_ms(5);
    int code;
    CHECK(health(ch, "", &code) == 1, "SERVING before the drain");
    probe_arg pa = {s, ch, -1, -1};
    double t0 = aha_now_s();
    pthread_create(&tp, NULL, stop_and_probe, &pa);
    aha_err err;
    aha_status st = aha_rpc_server_wait(s, &err); /* returns once drained */
    double dt = aha_now_s() - t0;
    pthread_join(tp, NULL);
    CHECK(st == AHA_OK, "drain: %s", st ? err.msg : "");
    CHECK(dt >= 0.9 && dt < 3.0, "drain took %.2f s (stop at 0.05 + notice 0.4 + grace 0.6)", dt);
    CHECK(pa.health_during_notice == 2, "NOT_SERVING during the notice (%d)",
          pa.health_during_notice);
    CHECK(pa.score_during_notice == 1, "calls still served during the notice");
    pthread_join(tq, NULL);
    pthread_join(ts, NULL);
    CHECK(quick.ok == 1, "the call that ended within the grace period succeeded (%d)", quick.ok);
    CHECK(stuck.ok < 0, "the stuck call was ended by the drain (code %d)", -stuck.ok);
    CHECK(atomic_load(&g_saw_cancel), "the stuck handler saw the cancellation");
    st = score(ch, "x", "y", 1000, &code, NULL, &err);
    CHECK(st == AHA_EUNAVAILABLE, "after the drain: UNAVAILABLE (%d)", code);
    aha_rpc_server_free(s);
    aha_rpc_channel_free(ch);
}

static void case_auth(void)
{
    aha_rpc_server_opts so;
    aha_rpc_server_opts_init(&so);
    char token[] = "s3cret-token";
    so.auth_token = token;
    aha_rpc_server *s = start_server_opts(&so);
    memset(token, 'x', sizeof token - 1); /* the server keeps its own copy */
    aha_rpc_channel *none = connect_to(aha_rpc_server_port(s), 1);
    int code;
    aha_err err;
    aha_status st = score(none, "a", "b", 5000, &code, NULL, &err);
    CHECK(st == AHA_EUNAUTH && code == 16, "no token -> UNAUTHENTICATED (%d %s)", code, err.msg);
    CHECK(health(none, "", &code) == 1, "health needs no token (probes cannot send one)");
    aha_rpc_channel_opts co;
    aha_rpc_channel_opts_init(&co);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", aha_rpc_server_port(s));
    co.bearer_token = "wrong";
    aha_rpc_channel *bad;
    aha_rpc_channel_create(target, &co, &bad, &err);
    st = score(bad, "a", "b", 5000, &code, NULL, &err);
    CHECK(st == AHA_EUNAUTH, "wrong token -> UNAUTHENTICATED (%d)", code);
    co.bearer_token = "s3cret-token";
    aha_rpc_channel *good;
    aha_rpc_channel_create(target, &co, &good, &err);
    st = score(good, "a", "b", 5000, &code, NULL, &err);
    CHECK(st == AHA_OK, "right token: %s", st ? err.msg : "ok");
    /* a stream is checked too */
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    req.n = 2;
    aha_rpc_stream *stm;
    aha_rpc_call_opts o = {.timeout_ms = 5000};
    aha_rpc_stream_open(none, &aha__v1__rollout__descriptor, "Generate", &req.base, &o, &stm, &err);
    ProtobufCMessage *m;
    st = aha_rpc_stream_next(stm, &m, &err);
    CHECK(st == AHA_EUNAUTH && m == NULL, "stream without token -> UNAUTHENTICATED (%d)", o.code);
    aha_rpc_stream_free(stm);
    aha_rpc_channel_free(none);
    aha_rpc_channel_free(bad);
    aha_rpc_channel_free(good);
    aha_rpc_server_free(s);
}

static void case_tls(void)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        fprintf(stderr, "openssl not found: TLS case skipped\n");
        exit(77); /* meson: skipped */
    }
    char dir[] = "/tmp/aha-rpc-tls-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char cmd[1024], crt[256], key[256], other[256];
    snprintf(crt, sizeof crt, "%s/server.crt", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(other, sizeof other, "%s/other.crt", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s -out %s 2>/dev/null && "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
             "-keyout %s/other.key -out %s 2>/dev/null",
             key, crt, dir, other);
    int rc = system(cmd);
    CHECK(rc == 0, "openssl made test certificates (rc %d)", rc);
    if (rc == 0) {
        aha_rpc_server_opts so;
        aha_rpc_server_opts_init(&so);
        so.tls_cert_file = crt;
        so.tls_key_file = key;
        aha_rpc_server *s = start_server_opts(&so);
        char target[64];
        snprintf(target, sizeof target, "127.0.0.1:%d", aha_rpc_server_port(s));
        aha_rpc_channel_opts co;
        aha_rpc_channel_opts_init(&co);
        co.attempts = 1;
        co.tls_ca_file = crt;
        aha_rpc_channel *ch;
        aha_err err;
        CHECK(aha_rpc_channel_create(target, &co, &ch, &err) == AHA_OK, "TLS channel");
        int code;
        Aha__V1__ScoreResponse *r = NULL;
        aha_status st = score(ch, "t", "tls!", 5000, &code, &r, &err);
        CHECK(st == AHA_OK && r && r->results[0]->total == 4.0, "call over TLS: %s",
              st ? err.msg : "ok");
        if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
        aha_rpc_channel_free(ch);
        co.tls_ca_file = other; /* a root that did not sign the server's certificate */
        aha_rpc_channel_create(target, &co, &ch, &err);
        st = score(ch, "t", "x", 5000, &code, NULL, &err);
        CHECK(st == AHA_EUNAVAILABLE, "untrusted certificate -> UNAVAILABLE (%d)", code);
        aha_rpc_channel_free(ch);
        aha_rpc_channel *plain = connect_to(aha_rpc_server_port(s), 1);
        st = score(plain, "t", "x", 5000, &code, NULL, &err);
        CHECK(st == AHA_EUNAVAILABLE, "plaintext client to a TLS port -> UNAVAILABLE (%d)", code);
        aha_rpc_channel_free(plain);
        aha_rpc_server_free(s);
        co.tls_ca_file = "/nonexistent/ca.pem";
        st = aha_rpc_channel_create(target, &co, &ch, &err);
        CHECK(st != AHA_OK && strstr(err.msg, "/nonexistent/ca.pem"), "missing CA file named: %s",
              err.msg);
    }
    aha_err e2;
    aha_remove_tree(dir, &e2);
}

typedef struct {
    aha_rpc_channel *ch;
    int seed, ok, failed, bad;
    atomic_int *stop;
} stress_arg;

/* Mixed load until the server goes away: short unary calls (some sleeping, some failing),
 * streams read to the end or cancelled half way. */
static void *stress_client(void *p)
{
    stress_arg *a = p;
    aha_rng rng;
    aha_rng_seed(&rng, (uint64_t)a->seed, 1);
    while (!atomic_load(a->stop)) {
        int kind = (int)aha_rng_below(&rng, 3);
        aha_err err;
        aha_status st;
        if (kind == 0) {
            char id[32];
            snprintf(id, sizeof id, "sleep:%d", (int)aha_rng_below(&rng, 30));
            int code;
            st = score(a->ch, id, "abc", 5000, &code, NULL, &err);
        } else {
            Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
            Aha__V1__SamplingParams sp = AHA__V1__SAMPLING_PARAMS__INIT;
            sp.seed = aha_rng_below(&rng, 3);
            req.sampling = &sp;
            req.n = 300;
            aha_rpc_call_opts o = {.timeout_ms = 5000};
            aha_rpc_stream *stm;
            st = aha_rpc_stream_open(a->ch, &aha__v1__rollout__descriptor, "Generate", &req.base,
                                     &o, &stm, &err);
            int got = 0, cancel_at = kind == 2 ? (int)aha_rng_below(&rng, 300) : -1;
            for (;;) {
                ProtobufCMessage *m;
                st = aha_rpc_stream_next(stm, &m, &err);
                if (st != AHA_OK || !m) break;
                if (((Aha__V1__Completion *)m)->index != got) a->bad++;
                protobuf_c_message_free_unpacked(m, NULL);
                if (++got == cancel_at) aha_rpc_stream_cancel(stm);
            }
            if (st == AHA_OK && got != 300) a->bad++;
            aha_rpc_stream_free(stm);
            if (cancel_at >= 0 && st == AHA_ECANCELLED) st = AHA_OK;
        }
        if (st == AHA_OK) a->ok++;
        else if (st == AHA_EUNAVAILABLE || st == AHA_ECANCELLED) a->failed++;
        else if (st != AHA_EINVAL) a->bad++;
    }
    return NULL;
}

static void case_stress(void)
{
    aha_rpc_server *s = start_server("127.0.0.1:0", 0, 150, 0, 0);
    aha_rpc_channel *ch = connect_to(aha_rpc_server_port(s), 1);
    enum { T = 8 };
    stress_arg a[T];
    pthread_t t[T];
    atomic_int stop = 0;
    for (int i = 0; i < T; i++) {
        a[i] = (stress_arg){.ch = ch, .seed = i, .stop = &stop};
        pthread_create(&t[i], NULL, stress_client, &a[i]);
    }
    sleep_ms(800);
    double t0 = aha_now_s();
    aha_rpc_server_stop(s);
    aha_err err;
    aha_status st = aha_rpc_server_wait(s, &err);
    double dt = aha_now_s() - t0;
    CHECK(st == AHA_OK, "drain under load: %s", st ? err.msg : "ok");
    CHECK(dt < 3.0, "drain under load took %.2f s", dt);
    atomic_store(&stop, 1);
    int ok = 0, failed = 0, bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
        failed += a[i].failed;
        bad += a[i].bad;
    }
    fprintf(stderr, "  stress: %d calls ok, %d ended by the drain\n", ok, failed);
    CHECK(ok > 20, "calls succeeded under load (%d)", ok);
    CHECK(bad == 0, "%d calls ended wrongly (out of order, short stream, odd status)", bad);
    aha_rpc_server_free(s);
    aha_rpc_channel_free(ch);
}

int main(int argc, char **argv)
{
    aha_log_set_level(getenv("AHA_TEST_DEBUG") ? AHA_LOG_DEBUG : AHA_LOG_WARN);
    const char *which = argc > 1 ? argv[1] : "all";
    struct {
        const char *name;
        void (*fn)(void);
    } cases[] = {{"unary", case_unary},   {"errors", case_errors},     {"stream", case_stream},
                 {"upload", case_upload}, {"deadline", case_deadline}, {"cancel", case_cancel},
                 {"health", case_health}, {"threads", case_threads},   {"limit", case_limit},
                 {"retry", case_retry},   {"drain", case_drain},       {"auth", case_auth},
                 {"tls", case_tls},       {"stress", case_stress}};
    int ran = 0;
    for (size_t i = 0; i < AHA_ARRAY_LEN(cases); i++) {
        if (strcmp(which, "all") != 0 && strcmp(which, cases[i].name) != 0) continue;
        fprintf(stderr, "case %s\n", cases[i].name);
        cases[i].fn();
        ran++;
    }
    CHECK(ran > 0, "unknown case %s", which);
    return th_done(which);
}
