/* test_rpc_auth: the two bearer tokens (service and job), their flags and environment
 * variables, the plaintext warning and mutual TLS, with servers on loopback.
 * usage: test_rpc_auth tokens|flags|warn|mtls */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../harness.h"
#include "aha/v1/learner.pb-c.h"
#include "aha/v1/reward.pb-c.h"
#include "aha/v1/rollout.pb-c.h"
#include "base/fs.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"
#include "rpc/service.h"

static aha_status h_score(aha_rpc_call *c, const ProtobufCMessage *req, void *user, aha_err *err)
{
    Aha__V1__ScoreResponse r = AHA__V1__SCORE_RESPONSE__INIT;
    return aha_rpc_call_send(c, &r.base, err);
}

static aha_status h_list(aha_rpc_call *c, const ProtobufCMessage *req, void *user, aha_err *err)
{
    Aha__V1__ListJobsReply r = AHA__V1__LIST_JOBS_REPLY__INIT;
    return aha_rpc_call_send(c, &r.base, err);
}

static aha_status h_generate(aha_rpc_call *c, const ProtobufCMessage *req, void *user,
                             aha_err *err)
{
    Aha__V1__Completion m = AHA__V1__COMPLETION__INIT;
    return aha_rpc_call_send(c, &m.base, err);
}

static aha_rpc_server *start(aha_rpc_server_opts *so)
{
    aha_rpc_server *s = NULL;
    aha_err err;
    so->listen = "127.0.0.1:0";
    so->name = "authtest";
    aha_status st = aha_rpc_server_create(so, &s, &err);
    if (st == AHA_OK)
        st = aha_rpc_server_add_method(s, &aha__v1__reward__descriptor, "Score", AHA_RPC_UNARY,
                                       h_score, NULL, &err);
    if (st == AHA_OK)
        st = aha_rpc_server_add_method(s, &aha__v1__learner__descriptor, "ListJobs",
                                       AHA_RPC_UNARY, h_list, NULL, &err);
    if (st == AHA_OK)
        st = aha_rpc_server_add_method(s, &aha__v1__rollout__descriptor, "Generate",
                                       AHA_RPC_SERVER_STREAM, h_generate, NULL, &err);
    if (st == AHA_OK) st = aha_rpc_server_start(s, &err);
    if (st != AHA_OK) {
        fprintf(stderr, "server: %s\n", err.msg);
        exit(1);
    }
    return s;
}

static aha_rpc_channel *channel(int port, const char *token, aha_rpc_channel_opts *base)
{
    aha_rpc_channel_opts co;
    if (base) co = *base;
    else aha_rpc_channel_opts_init(&co);
    co.attempts = 1;
    co.bearer_token = token;
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port); /* by IP: no resolver (c-ares) */
    aha_rpc_channel *ch = NULL;
    aha_err err;
    if (aha_rpc_channel_create(target, &co, &ch, &err) != AHA_OK) {
        fprintf(stderr, "channel: %s\n", err.msg);
        exit(1);
    }
    return ch;
}

/* The gRPC code of one call of each kind. */
static int call_score(aha_rpc_channel *ch)
{
    Aha__V1__ScoreRequest req = AHA__V1__SCORE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    aha_rpc_call_opts o = {.timeout_ms = 5000};
    aha_err err;
    aha_rpc_unary(ch, &aha__v1__reward__descriptor, "Score", &req.base, &resp, &o, &err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return o.code;
}

static int call_list(aha_rpc_channel *ch)
{
    Aha__V1__ListJobsRequest req = AHA__V1__LIST_JOBS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    aha_rpc_call_opts o = {.timeout_ms = 5000};
    aha_err err;
    aha_rpc_unary(ch, &aha__v1__learner__descriptor, "ListJobs", &req.base, &resp, &o, &err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return o.code;
}

static int call_generate(aha_rpc_channel *ch)
{
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    aha_rpc_call_opts o = {.timeout_ms = 5000};
    aha_rpc_stream *st = NULL;
    aha_err err;
    if (aha_rpc_stream_open(ch, &aha__v1__rollout__descriptor, "Generate", &req.base, &o, &st,
                            &err) != AHA_OK)
        return o.code;
    ProtobufCMessage *m;
    while (aha_rpc_stream_next(st, &m, &err) == AHA_OK && m)
        protobuf_c_message_free_unpacked(m, NULL);
    aha_rpc_stream_free(st);
    return o.code;
}

static int call_raw(aha_rpc_channel *ch, const char *path)
{
    void *resp = NULL;
    size_t len = 0;
    aha_rpc_call_opts o = {.timeout_ms = 5000};
    aha_err err;
    aha_rpc_unary_raw(ch, path, "", 0, &resp, &len, &o, &err);
    free(resp);
    return o.code;
}

static int call_health(aha_rpc_channel *ch)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    aha_rpc_call_opts o = {.timeout_ms = 5000};
    aha_err err;
    aha_rpc_unary(ch, &grpc__health__v1__health__descriptor, "Check", &req.base, &resp, &o,
                  &err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return o.code;
}

/* stderr into a file while f runs, then the file's text (the server's log lines). */
static char *capture_stderr_begin(int *saved, char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/aha-authlog-XXXXXX");
    int fd = mkstemp(path);
    fflush(stderr);
    *saved = dup(2);
    dup2(fd, 2);
    close(fd);
    return path;
}

static char *capture_stderr_end(int saved, const char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = NULL;
    size_t n = 0;
    aha_err e;
    if (aha_read_file(path, 1 << 20, &text, &n, &e) != AHA_OK) text = NULL;
    unlink(path);
    return text;
}

enum { OK = 0, PERMISSION_DENIED = 7, UNIMPLEMENTED = 12, UNAVAILABLE = 14, UNAUTHENTICATED = 16 };

static void case_tokens(void)
{
    const char *svc_tok = "svc-7f3a9c1e", *job_tok = "job-52b8d04f";
    int saved;
    char logpath[64];
    capture_stderr_begin(&saved, logpath, sizeof logpath);
    aha_log_set_level(AHA_LOG_DEBUG); /* even debug lines must not carry a token */
    aha_rpc_server_opts so;
    aha_rpc_server_opts_init(&so);
    char svc_copy[32], job_copy[32];
    snprintf(svc_copy, sizeof svc_copy, "%s", svc_tok);
    snprintf(job_copy, sizeof job_copy, "%s", job_tok);
    so.service_token = svc_copy;
    so.job_token = job_copy;
    aha_rpc_server *s = start(&so);
    memset(svc_copy, 'x', strlen(svc_copy)); /* the server keeps its own copies */
    memset(job_copy, 'x', strlen(job_copy));
    int port = aha_rpc_server_port(s);
    aha_rpc_channel *none = channel(port, NULL, NULL), *bad = channel(port, "job-52b8d04e", NULL),
                    *job = channel(port, job_tok, NULL), *svc = channel(port, svc_tok, NULL);
    int c;
    /* no token, wrong token: UNAUTHENTICATED everywhere; health is always open */
    CHECK((c = call_score(none)) == UNAUTHENTICATED, "no token, Score: %d", c);
    CHECK((c = call_list(none)) == UNAUTHENTICATED, "no token, ListJobs: %d", c);
    CHECK((c = call_generate(none)) == UNAUTHENTICATED, "no token, Generate: %d", c);
    CHECK((c = call_health(none)) == OK, "no token, health: %d", c);
    CHECK((c = call_score(bad)) == UNAUTHENTICATED, "wrong token, Score: %d", c);
    CHECK((c = call_list(bad)) == UNAUTHENTICATED, "wrong token, ListJobs: %d", c);
    CHECK((c = call_health(bad)) == OK, "wrong token, health: %d", c);
    /* the job token: the job API only */
    CHECK((c = call_list(job)) == OK, "job token, ListJobs: %d", c);
    CHECK((c = call_score(job)) == PERMISSION_DENIED, "job token, Score: %d", c);
    CHECK((c = call_generate(job)) == PERMISSION_DENIED, "job token, Generate: %d", c);
    CHECK((c = call_raw(job, "/aha.v1.Rollout/UpdateWeights")) == PERMISSION_DENIED,
          "job token, UpdateWeights: %d", c);
    CHECK((c = call_raw(job, "/aha.v1.RefPolicy/LogProbs")) == PERMISSION_DENIED,
          "job token, LogProbs: %d", c);
    CHECK((c = call_raw(job, "/aha.v1.Rollout/Info")) == PERMISSION_DENIED, "job token, Info: %d",
          c);
    CHECK((c = call_raw(job, "/aha.v1.Learner/NoSuchMethod")) == UNIMPLEMENTED,
          "job token, unknown job-API method: %d", c);
    /* the service token: everything */
    CHECK((c = call_score(svc)) == OK, "service token, Score: %d", c);
    CHECK((c = call_generate(svc)) == OK, "service token, Generate: %d", c);
    CHECK((c = call_list(svc)) == OK, "service token, ListJobs: %d", c);
    CHECK((c = call_raw(svc, "/aha.v1.Rollout/Info")) == UNIMPLEMENTED, "service token, Info: %d",
          c);
    aha_rpc_channel_free(none);
    aha_rpc_channel_free(bad);
    aha_rpc_channel_free(job);
    aha_rpc_channel_free(svc);
    aha_rpc_server_free(s);

    /* only the legacy auth_token: accepted everywhere, as before */
    aha_rpc_server_opts_init(&so);
    so.auth_token = "legacy-tok";
    s = start(&so);
    port = aha_rpc_server_port(s);
    aha_rpc_channel *leg = channel(port, "legacy-tok", NULL), *no = channel(port, NULL, NULL);
    CHECK((c = call_score(leg)) == OK, "legacy token, Score: %d", c);
    CHECK((c = call_list(leg)) == OK, "legacy token, ListJobs: %d", c);
    CHECK((c = call_list(no)) == UNAUTHENTICATED, "legacy server, no token: %d", c);
    aha_rpc_channel_free(leg);
    aha_rpc_channel_free(no);
    aha_rpc_server_free(s);

    /* no token at all: open (the loopback demo) */
    aha_rpc_server_opts_init(&so);
    s = start(&so);
    no = channel(aha_rpc_server_port(s), NULL, NULL);
    CHECK((c = call_score(no)) == OK, "open server, Score: %d", c);
    aha_rpc_channel_free(no);
    aha_rpc_server_free(s);

    /* equal tokens would let job clients call everything */
    aha_rpc_server_opts_init(&so);
    so.service_token = so.job_token = "same";
    aha_err err;
    CHECK(aha_rpc_server_create(&so, &s, &err) == AHA_EINVAL && strstr(err.msg, "differ"),
          "equal tokens refused");
    CHECK(!strstr(err.msg, "same"), "the refusal does not print the token: %s", err.msg);

    aha_log_set_level(AHA_LOG_INFO);
    char *log = capture_stderr_end(saved, logpath);
    CHECK(log != NULL, "server log captured");
    if (log) {
        CHECK(strstr(log, "job token accepted") != NULL, "the log says tokens are on");
        CHECK(!strstr(log, svc_tok) && !strstr(log, job_tok) && !strstr(log, "legacy-tok"),
              "no token in the log");
        free(log);
    }
}

static void write_text(const char *path, const char *text)
{
    aha_err e;
    if (aha_write_file_atomic(path, text, strlen(text), &e) != AHA_OK) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

static void case_flags(void)
{
    char dir[] = "/tmp/aha-authflags-XXXXXX";
    if (!mkdtemp(dir)) exit(1);
    char st_path[128], jt_path[128], empty_path[128];
    snprintf(st_path, sizeof st_path, "%s/service-token", dir);
    snprintf(jt_path, sizeof jt_path, "%s/job-token", dir);
    snprintf(empty_path, sizeof empty_path, "%s/empty", dir);
    write_text(st_path, "file-service-token\n");
    write_text(jt_path, "file-job-token\r\n");
    write_text(empty_path, " \n");
    aha_err err;
    aha_rpc_service_args a;

    /* files */
    unsetenv("AHA_SERVICE_TOKEN");
    unsetenv("AHA_JOB_TOKEN");
    char *argv1[] = {"svc", "--service-token-file", st_path, "--job-token-file=" /* below */, NULL,
                     "--threads", "3", "--own-flag", NULL};
    char jflag[200];
    snprintf(jflag, sizeof jflag, "--job-token-file=%s", jt_path);
    argv1[3] = jflag;
    argv1[4] = "--max-concurrent";
    char *argv1b[] = {argv1[0], argv1[1], argv1[2], argv1[3], argv1[4], "9", argv1[5], argv1[6],
                      argv1[7], NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 9, argv1b, &err) == AHA_OK, "parse files: %s", err.msg);
    CHECK(a.server.service_token && strcmp(a.server.service_token, "file-service-token") == 0,
          "service token from file");
    CHECK(a.server.job_token && strcmp(a.server.job_token, "file-job-token") == 0,
          "job token from file, CRLF trimmed");
    CHECK(a.server.threads == 3 && a.server.max_concurrent_calls == 9, "other flags still work");
    CHECK(a.rest_argc == 2 && strcmp(a.rest_argv[1], "--own-flag") == 0, "service flags left");
    aha_rpc_service_args_free(&a);

    /* environment, and a file wins over it */
    setenv("AHA_SERVICE_TOKEN", "env-service", 1);
    setenv("AHA_JOB_TOKEN", "env-job", 1);
    char *argv2[] = {"svc", NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 1, argv2, &err) == AHA_OK, "parse env: %s", err.msg);
    CHECK(a.server.service_token && strcmp(a.server.service_token, "env-service") == 0,
          "service token from $AHA_SERVICE_TOKEN");
    CHECK(a.server.job_token && strcmp(a.server.job_token, "env-job") == 0,
          "job token from $AHA_JOB_TOKEN");
    aha_rpc_service_args_free(&a);
    char *argv3[] = {"svc", "--service-token-file", st_path, NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 3, argv3, &err) == AHA_OK, "parse: %s", err.msg);
    CHECK(strcmp(a.server.service_token, "file-service-token") == 0, "the file wins");
    aha_rpc_service_args_free(&a);
    unsetenv("AHA_SERVICE_TOKEN");
    unsetenv("AHA_JOB_TOKEN");

    /* bad input: named, never echoed */
    char *argv4[] = {"svc", "--job-token-file", empty_path, NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 3, argv4, &err) == AHA_EINVAL && strstr(err.msg, empty_path),
          "empty token file refused: %s", err.msg);
    aha_rpc_service_args_free(&a);
    char *argv5[] = {"svc", "--service-token-file", "/nonexistent/tok", NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 3, argv5, &err) != AHA_OK &&
              strstr(err.msg, "/nonexistent/tok"),
          "missing token file named: %s", err.msg);
    aha_rpc_service_args_free(&a);
    setenv("AHA_JOB_TOKEN", "bad\ntoken", 1);
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 1, argv2, &err) == AHA_EINVAL &&
              strstr(err.msg, "AHA_JOB_TOKEN") && !strstr(err.msg, "bad"),
          "a token with a newline refused: %s", err.msg);
    aha_rpc_service_args_free(&a);
    unsetenv("AHA_JOB_TOKEN");
    char *argv6[] = {"svc", "--tls-ca", st_path, NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 3, argv6, &err) == AHA_OK && a.tls_ca &&
              strcmp(a.tls_ca, st_path) == 0 && a.server.tls_client_ca_file == NULL,
          "--tls-ca without a certificate: only the clients' roots: %s", err.msg);
    aha_rpc_service_args_free(&a);
    char *argv7[] = {"svc", "--tls-client-auth", "maybe", NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 3, argv7, &err) == AHA_EINVAL, "--tls-client-auth maybe");
    aha_rpc_service_args_free(&a);
    char *argv8[] = {"svc", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca",
                     "--tls-client-auth", "optional", NULL};
    aha_rpc_service_args_init(&a, "t", "127.0.0.1:0");
    CHECK(aha_rpc_service_parse(&a, 9, argv8, &err) == AHA_OK &&
              strcmp(a.server.tls_client_ca_file, "ca") == 0 && a.server.tls_client_optional == 1,
          "TLS flags: %s", err.msg);
    aha_rpc_service_args_free(&a);

    aha_remove_tree(dir, &err);
}

static void case_warn(void)
{
    CHECK(aha_rpc_addr_is_local("127.0.0.1:50051"), "127.0.0.1");
    CHECK(aha_rpc_addr_is_local("127.8.0.2:1"), "127.8.0.2");
    CHECK(aha_rpc_addr_is_local("[::1]:5"), "[::1]");
    CHECK(aha_rpc_addr_is_local("localhost:5"), "localhost");
    CHECK(aha_rpc_addr_is_local("unix:/tmp/x.sock"), "unix");
    CHECK(!aha_rpc_addr_is_local("0.0.0.0:50051"), "0.0.0.0");
    CHECK(!aha_rpc_addr_is_local("[::]:50051"), "[::]");
    CHECK(!aha_rpc_addr_is_local("10.0.0.3:1"), "10.0.0.3");
    CHECK(!aha_rpc_addr_is_local("127x:1"), "127x");

    int saved;
    char path[64];
    capture_stderr_begin(&saved, path, sizeof path);
    aha_rpc_server_opts so;
    aha_rpc_server_opts_init(&so);
    so.listen = "0.0.0.0:0";
    so.name = "exposed";
    aha_rpc_server *s;
    aha_err err;
    int ok = aha_rpc_server_create(&so, &s, &err) == AHA_OK && aha_rpc_server_start(s, &err) == AHA_OK;
    if (ok) aha_rpc_server_free(s);
    aha_rpc_server_opts_init(&so);
    so.listen = "127.0.0.1:0";
    so.name = "local";
    int ok2 = aha_rpc_server_create(&so, &s, &err) == AHA_OK && aha_rpc_server_start(s, &err) == AHA_OK;
    if (ok2) aha_rpc_server_free(s);
    char *log = capture_stderr_end(saved, path);
    CHECK(ok && ok2, "servers started");
    CHECK(log && strstr(log, "exposed: serving 0.0.0.0:0 without TLS"), "warning for 0.0.0.0: %s",
          log ? log : "");
    CHECK(log && !strstr(log, "local: serving"), "no warning on loopback");
    free(log);
}

static void case_mtls(void)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        fprintf(stderr, "openssl not found: mutual TLS case skipped\n");
        exit(77);
    }
    char dir[] = "/tmp/aha-mtls-XXXXXX";
    if (!mkdtemp(dir)) exit(1);
    char cmd[4096];
    /* a CA; a server and a client certificate it signed; a rogue self-signed client */
    snprintf(cmd, sizeof cmd,
             "cd %s && "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=aha-test-ca "
             "-keyout ca.key -out ca.crt 2>/dev/null && "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key "
             "-out server.csr 2>/dev/null && "
             "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext && "
             "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
             "-extfile san.ext -out server.crt 2>/dev/null && "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=learner -keyout client.key "
             "-out client.csr 2>/dev/null && "
             "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
             "-out client.crt 2>/dev/null && "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=rogue "
             "-keyout rogue.key -out rogue.crt 2>/dev/null",
             dir);
    int rc = system(cmd);
    CHECK(rc == 0, "openssl made the certificates (rc %d)", rc);
    if (rc != 0) return;
    char ca[128], scrt[128], skey[128], ccrt[128], ckey[128], rcrt[128], rkey[128];
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    snprintf(scrt, sizeof scrt, "%s/server.crt", dir);
    snprintf(skey, sizeof skey, "%s/server.key", dir);
    snprintf(ccrt, sizeof ccrt, "%s/client.crt", dir);
    snprintf(ckey, sizeof ckey, "%s/client.key", dir);
    snprintf(rcrt, sizeof rcrt, "%s/rogue.crt", dir);
    snprintf(rkey, sizeof rkey, "%s/rogue.key", dir);

    for (int optional = 0; optional <= 1; optional++) {
        aha_rpc_server_opts so;
        aha_rpc_server_opts_init(&so);
        so.tls_cert_file = scrt;
        so.tls_key_file = skey;
        so.tls_client_ca_file = ca;
        so.tls_client_optional = optional;
        so.service_token = "svc-tok";
        so.job_token = "job-tok";
        aha_rpc_server *s = start(&so);
        int port = aha_rpc_server_port(s);
        aha_rpc_channel_opts co;
        aha_rpc_channel_opts_init(&co);
        co.tls_ca_file = ca;
        co.tls_cert_file = ccrt;
        co.tls_key_file = ckey;
        aha_rpc_channel *good = channel(port, "svc-tok", &co);
        int c;
        CHECK((c = call_score(good)) == OK, "client certificate + service token: %d", c);
        aha_rpc_channel_free(good);
        good = channel(port, "job-tok", &co);
        CHECK((c = call_score(good)) == PERMISSION_DENIED, "mTLS + job token, Score: %d", c);
        aha_rpc_channel_free(good);
        co.tls_cert_file = co.tls_key_file = NULL;
        aha_rpc_channel *nocert = channel(port, "svc-tok", &co);
        c = call_score(nocert);
        if (optional) CHECK(c == OK, "optional: no client certificate is fine: %d", c);
        else CHECK(c == UNAVAILABLE, "required: no client certificate refused: %d", c);
        aha_rpc_channel_free(nocert);
        co.tls_cert_file = rcrt;
        co.tls_key_file = rkey;
        aha_rpc_channel *rogue = channel(port, "svc-tok", &co);
        CHECK((c = call_score(rogue)) == UNAVAILABLE, "a certificate the CA did not sign: %d", c);
        aha_rpc_channel_free(rogue);
        aha_rpc_server_free(s);
    }
    aha_rpc_server_opts so;
    aha_rpc_server_opts_init(&so);
    so.tls_client_ca_file = ca;
    aha_rpc_server *s;
    aha_err err;
    CHECK(aha_rpc_server_create(&so, &s, &err) == AHA_EINVAL, "client CA without a certificate");
    aha_remove_tree(dir, &err);
}

int main(int argc, char **argv)
{
    const char *c = argc > 1 ? argv[1] : "";
    if (strcmp(c, "tokens") == 0) case_tokens();
    else if (strcmp(c, "flags") == 0) case_flags();
    else if (strcmp(c, "warn") == 0) case_warn();
    else if (strcmp(c, "mtls") == 0) case_mtls();
    else {
        fprintf(stderr, "usage: test_rpc_auth tokens|flags|warn|mtls\n");
        return 2;
    }
    return th_done(c);
}
