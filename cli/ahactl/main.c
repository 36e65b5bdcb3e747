/* ahactl: the command line of aha. Job commands talk to the learner's aha.v1.Learner API;
 * `health` asks any service's grpc.health.v1; `up` / `down` run the services as local
 * processes (up.c). The views (watch table, plot, report) are the pure functions of
 * table.h, plot.h and report.h.
 *
 * Exit status: 0 success; 1 failure (the job failed or was cancelled, the server refused the
 * request, a service is not SERVING); 2 bad usage (flags, unreadable local files, a bad
 * topology); 3 a server could not be reached (the message names which and where). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aha/v1/learner.pb-c.h"
#include "base/fs.h"
#include "base/log.h"
#include "plot.h"
#include "report.h"
#include "rpc/rpc.h"
#include "spec.h"
#include "table.h"
#include "up.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

typedef struct {
    const char *server;
    int timeout_ms;
    aha_ctl_tls tls;
    char *token;
    aha_rpc_channel *ch;
    aha_rpc_metadata md;
    char auth[4200];
} ctl;

static void usage(FILE *f)
{
    fputs(
        "usage: ahactl [global options] COMMAND [args]\n"
        "global options:\n"
        "  --server ADDR        the learner's job API (default $AHA_SERVER or localhost:50050)\n"
        "  --timeout-ms N       deadline of each request (default 10000)\n"
        "  --tls-ca FILE        CA certificate (PEM): talk TLS\n"
        "  --tls-cert FILE --tls-key FILE   client certificate (mutual TLS)\n"
        "  --token-file FILE    bearer token for the job API (default $AHA_JOB_TOKEN)\n"
        "commands:\n"
        "  submit SPEC.json [--watch]   submit a job; prints its id (then watches it)\n"
        "  watch JOB [--live] [--every N]  one line per step (or every N-th step and the last)\n"
        "                               with progress and ETA until the job\n"
        "                               ends (--live: skip the history); exit 0 if it succeeded\n"
        "  status JOB [--json]          a job's state, progress, last metrics, stages\n"
        "  list                         every job of the learner\n"
        "  cancel JOB                   cancel a queued or running job\n"
        "  plot JOB -o FILE.svg [--jobs-dir DIR]   reward/accuracy and length against step\n"
        "  report JOB [-o FILE.md] [--jobs-dir DIR] eval results as a markdown table\n"
        "                               (--jobs-dir: read the job's files instead of the API)\n"
        "  health ADDR                  grpc.health.v1 Check; exit 0 when SERVING\n"
        "  up TOPOLOGY.json [--detach] [--run-dir DIR] [--grace-s N] [--start-timeout-s N]\n"
        "                               start the services (docs/DEPLOY.md), supervise them\n"
        "  down [--run-dir DIR]         stop what `up` started (run dir default .aha/run)\n"
        "exit status: 0 ok, 1 failed, 2 usage, 3 unreachable\n",
        f);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "ahactl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(ahactl --help for usage)\n");
    return EXIT_USAGE;
}

static int parse_int(const char *flag, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "ahactl: %s: '%s' is not an integer in [%ld, %ld]\n", flag, v ? v : "",
                lo, hi);
        return 0;
    }
    *out = (int)x;
    return 1;
}

static char *read_token_file(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    aha_err e;
    if (aha_read_file(path, 4096, &text, &len, &e) != AHA_OK) {
        fprintf(stderr, "ahactl: --token-file: %s\n", e.msg);
        return NULL;
    }
    char *b = text;
    while (*b == ' ' || *b == '\n' || *b == '\r' || *b == '\t') b++;
    size_t n = strlen(b);
    while (n && (b[n - 1] == ' ' || b[n - 1] == '\n' || b[n - 1] == '\r' || b[n - 1] == '\t')) n--;
    b[n] = 0;
    memmove(text, b, n + 1);
    if (!n) {
        fprintf(stderr, "ahactl: --token-file %s: empty\n", path);
        free(text);
        return NULL;
    }
    return text;
}

/* Which exit status and wording an RPC failure gets. */
static int rpc_fail(const ctl *c, const char *what, int code, const aha_err *e)
{
    if (code == 14 || code == 4) {
        fprintf(stderr, "ahactl: %s: the learner at %s is unreachable (%s)\n", what, c->server,
                aha_err_msg(e));
        return EXIT_UNREACHABLE;
    }
    if (code == 16)
        fprintf(stderr, "ahactl: %s: %s (give the job token: --token-file FILE or "
                        "AHA_JOB_TOKEN)\n",
                what, aha_err_msg(e));
    else
        fprintf(stderr, "ahactl: %s: %s\n", what, aha_err_msg(e));
    return EXIT_FAILED;
}

static int connect_learner(ctl *c)
{
    aha_rpc_channel_opts co;
    aha_rpc_channel_opts_init(&co);
    co.tls_ca_file = c->tls.ca;
    co.tls_cert_file = c->tls.cert;
    co.tls_key_file = c->tls.key;
    co.attempts = 3;
    aha_err e;
    if (aha_rpc_channel_create(c->server, &co, &c->ch, &e) != AHA_OK) {
        fprintf(stderr, "ahactl: --server %s: %s\n", c->server, e.msg);
        return 0;
    }
    if (c->token) {
        snprintf(c->auth, sizeof c->auth, "Bearer %s", c->token);
        c->md.key = "authorization";
        c->md.value = c->auth;
    }
    return 1;
}

static aha_rpc_call_opts call_opts(const ctl *c, int timeout_ms)
{
    aha_rpc_call_opts o = {.timeout_ms = timeout_ms};
    if (c->token) {
        o.metadata = &c->md;
        o.n_metadata = 1;
    }
    return o;
}

static aha_status unary(ctl *c, const char *method, const ProtobufCMessage *req,
                        ProtobufCMessage **resp, int *code, aha_err *err)
{
    aha_rpc_call_opts o = call_opts(c, c->timeout_ms);
    aha_status st =
        aha_rpc_unary(c->ch, &aha__v1__learner__descriptor, method, req, resp, &o, err);
    *code = o.code;
    return st;
}

static void fmt_time(double t, char *out, size_t cap)
{
    if (t <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static int is_terminal(const char *st)
{
    return !strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
}

/* {"stages":[{"name","kind","status"}]} from a Job's stages, for aha_pipeline_progress. */
static char *stages_json(const Aha__V1__Job *j)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < j->n_stages; i++) {
        json_t *s = json_object();
        json_object_set_new(s, "name", json_string(j->stages[i]->name));
        json_object_set_new(s, "kind", json_string(j->stages[i]->kind));
        json_object_set_new(s, "status", json_string(j->stages[i]->state));
        json_array_append_new(arr, s);
    }
    json_t *o = json_object();
    json_object_set_new(o, "stages", arr);
    char *t = json_dumps(o, 0);
    json_decref(o);
    return t;
}

static void print_stages(const Aha__V1__Job *j)
{
    if (!j->n_stages) return;
    char *sj = stages_json(j);
    char out[8192];
    aha_err e;
    if (sj && aha_pipeline_progress(sj, strlen(sj), aha_wall_s(), out, sizeof out, &e) == AHA_OK) {
        size_t n = strlen(out);
        while (n && out[n - 1] == '\n') out[--n] = 0;
        printf("%s\n", out);
    }
    free(sj);
}

/* ------------------------------------------------------------------------------------------ */

static int cmd_status(ctl *c, int argc, char **argv)
{
    const char *id = NULL;
    int as_json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) as_json = 1;
        else if (!id && argv[i][0] != '-') id = argv[i];
        else return usage_error("status: unexpected argument '%s'", argv[i]);
    }
    if (!id) return usage_error("status: which job?%s", "");
    if (!connect_learner(c)) return EXIT_USAGE;
    Aha__V1__GetJobRequest req = AHA__V1__GET_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    ProtobufCMessage *resp = NULL;
    aha_err e;
    int code = 0;
    if (unary(c, "GetJob", &req.base, &resp, &code, &e) != AHA_OK)
        return rpc_fail(c, "status", code, &e);
    const Aha__V1__Job *j = (const Aha__V1__Job *)resp;
    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(j->id));
        json_object_set_new(o, "kind", json_string(j->kind));
        json_object_set_new(o, "state", json_string(j->state));
        json_object_set_new(o, "step", json_integer(j->step));
        json_object_set_new(o, "total_steps", json_integer(j->total_steps));
        json_object_set_new(o, "error", json_string(j->error));
        json_object_set_new(o, "created_at", json_real(j->created_at));
        json_object_set_new(o, "updated_at", json_real(j->updated_at));
        json_object_set_new(o, "dir", json_string(j->dir));
        json_t *lm = json_loads(j->last_metrics_json, 0, NULL);
        json_object_set_new(o, "last_metrics", lm ? lm : json_null());
        char *t = json_dumps(o, JSON_INDENT(2));
        printf("%s\n", t ? t : "{}");
        free(t);
        json_decref(o);
    } else {
        char created[64], updated[64], bar[64];
        fmt_time(j->created_at, created, sizeof created);
        fmt_time(j->updated_at, updated, sizeof updated);
        aha_progress_bar((double)j->step, (double)j->total_steps, 20, bar, sizeof bar);
        printf("job      %s\nkind     %s\nstate    %s\n", j->id, j->kind, j->state);
        if (j->total_steps > 0)
            printf("step     %lld/%lld %s\n", (long long)j->step, (long long)j->total_steps, bar);
        else
            printf("step     %lld\n", (long long)j->step);
        printf("created  %s\nupdated  %s\ndir      %s\n", created, updated, j->dir);
        if (j->error[0]) printf("error    %s\n", j->error);
        if (j->last_metrics_json[0]) {
            char line[1024];
            aha_err le;
            if (aha_watch_line(j->last_metrics_json, strlen(j->last_metrics_json), 0, line,
                               sizeof line, &le) == AHA_OK)
                printf("last     %s\n         %s\n", aha_watch_header(), line);
        }
        print_stages(j);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return EXIT_OK;
}

static int cmd_list(ctl *c, int argc, char **argv)
{
    if (argc) return usage_error("list: unexpected argument '%s'", argv[0]);
    if (!connect_learner(c)) return EXIT_USAGE;
    Aha__V1__ListJobsRequest req = AHA__V1__LIST_JOBS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    aha_err e;
    int code = 0;
    if (unary(c, "ListJobs", &req.base, &resp, &code, &e) != AHA_OK)
        return rpc_fail(c, "list", code, &e);
    const Aha__V1__ListJobsReply *r = (const Aha__V1__ListJobsReply *)resp;
    printf("%-24s %-9s %-10s %-13s %s\n", "JOB", "KIND", "STATE", "STEP", "CREATED");
    for (size_t i = 0; i < r->n_jobs; i++) {
        const Aha__V1__Job *j = r->jobs[i];
        char step[48], created[64];
        if (j->total_steps > 0)
            snprintf(step, sizeof step, "%lld/%lld", (long long)j->step, (long long)j->total_steps);
        else
            snprintf(step, sizeof step, "%lld", (long long)j->step);
        fmt_time(j->created_at, created, sizeof created);
        printf("%-24s %-9s %-10s %-13s %s\n", j->id, j->kind, j->state, step, created);
    }
    if (!r->n_jobs) printf("(no jobs)\n");
    protobuf_c_message_free_unpacked(resp, NULL);
    return EXIT_OK;
}

static int cmd_cancel(ctl *c, int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-') return usage_error("cancel: usage: cancel JOB%s", "");
    if (!connect_learner(c)) return EXIT_USAGE;
    Aha__V1__CancelJobRequest req = AHA__V1__CANCEL_JOB_REQUEST__INIT;
    req.job_id = argv[0];
    ProtobufCMessage *resp = NULL;
    aha_err e;
    int code = 0;
    if (unary(c, "CancelJob", &req.base, &resp, &code, &e) != AHA_OK)
        return rpc_fail(c, "cancel", code, &e);
    const Aha__V1__Job *j = (const Aha__V1__Job *)resp;
    if (!strcmp(j->state, "running"))
        printf("%s: cancel requested; it stops at its next step boundary\n", j->id);
    else
        printf("%s: %s\n", j->id, j->state);
    protobuf_c_message_free_unpacked(resp, NULL);
    return EXIT_OK;
}

/* A pipeline's stage table (aha_pipeline_progress) when a stage starts; silent on errors: the
 * watch goes on either way. */
static void print_job_stages(ctl *c, const char *id)
{
    Aha__V1__GetJobRequest req = AHA__V1__GET_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    ProtobufCMessage *resp = NULL;
    aha_err e;
    int code = 0;
    if (unary(c, "GetJob", &req.base, &resp, &code, &e) != AHA_OK) return;
    print_stages((const Aha__V1__Job *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* The "step" of a metrics record, or -1. */
static long record_step(const char *json)
{
    json_t *r = json_loads(json, 0, NULL);
    json_t *v = r ? json_object_get(r, "step") : NULL;
    long step = json_is_integer(v) ? (long)json_integer_value(v) : -1;
    json_decref(r);
    return step;
}

/* Follow a job until its watch ends; returns the exit status. every > 1 prints the metrics
 * line of every every-th step only, and the last one the job reached (held back until the
 * job's next state change or the end of the watch), so a 1,200-step SFT is 25 lines. */
static int watch_job(ctl *c, const char *id, int from_start, long every)
{
    Aha__V1__WatchJobRequest req = AHA__V1__WATCH_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    req.from_start = from_start;
    aha_rpc_call_opts o = call_opts(c, 0); /* a job takes as long as it takes */
    aha_rpc_stream *st = NULL;
    aha_err e;
    if (aha_rpc_stream_open(c->ch, &aha__v1__learner__descriptor, "WatchJob", &req.base, &o, &st,
                            &e) != AHA_OK)
        return rpc_fail(c, "watch", o.code, &e);
    char state[32] = "";
    char held[1024] = ""; /* a step line not printed yet (every > 1) */
    int header = 0;
    aha_status s;
    for (;;) {
        ProtobufCMessage *m = NULL;
        s = aha_rpc_stream_next(st, &m, &e);
        if (s != AHA_OK || !m) break;
        const Aha__V1__JobEvent *ev = (const Aha__V1__JobEvent *)m;
        if (!strcmp(ev->type, "metrics") || !strcmp(ev->type, "eval")) {
            char line[1024];
            aha_err le;
            if (aha_watch_line(ev->json, strlen(ev->json), 0, line, sizeof line, &le) == AHA_OK) {
                if (!header && !strcmp(ev->type, "metrics")) {
                    printf("%s\n", aha_watch_header());
                    header = 1;
                }
                long step = every > 1 && !strcmp(ev->type, "metrics") ? record_step(ev->json) : -1;
                if (step > 0 && step % every != 0) {
                    snprintf(held, sizeof held, "%s", line);
                } else {
                    printf("%s\n", line);
                    if (step > 0) held[0] = 0;
                }
            }
        } else if (!strcmp(ev->type, "state")) {
            if (held[0]) printf("%s\n", held);
            held[0] = 0;
            snprintf(state, sizeof state, "%s", ev->state);
            printf("[state] %s%s%s\n", ev->state, ev->message[0] ? ": " : "", ev->message);
        } else {
            printf("[%s] %s\n", ev->type, ev->message);
            /* a pipeline's stage events carry the pipeline state (the runner's pipeline.json):
             * show where every stage is; without it, ask GetJob */
            if (!strcmp(ev->type, "stage") && ev->json[0]) {
                char prog[8192];
                aha_err pe;
                if (aha_pipeline_progress(ev->json, strlen(ev->json), aha_wall_s(), prog,
                                          sizeof prog, &pe) == AHA_OK) {
                    size_t pn = strlen(prog);
                    while (pn && prog[pn - 1] == '\n') prog[--pn] = 0;
                    printf("%s\n", prog);
                }
            } else if (!strcmp(ev->type, "stage")) {
                print_job_stages(c, id);
            }
        }
        fflush(stdout);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    aha_rpc_stream_free(st);
    if (held[0]) printf("%s\n", held);
    if (s != AHA_OK) return rpc_fail(c, "watch", o.code, &e);
    if (!is_terminal(state)) {
        fprintf(stderr, "ahactl: watch of %s ended while the job is %s (the learner stopped?)\n",
                id, state[0] ? state : "in an unknown state");
        return EXIT_FAILED;
    }
    return !strcmp(state, "succeeded") ? EXIT_OK : EXIT_FAILED;
}

static int cmd_watch(ctl *c, int argc, char **argv)
{
    const char *id = NULL;
    int live = 0;
    long every = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--live")) live = 1;
        else if (!strcmp(argv[i], "--every")) {
            char *end = NULL;
            const char *v = i + 1 < argc ? argv[++i] : "";
            errno = 0;
            every = strtol(v, &end, 10);
            if (!*v || *end || errno || every < 1 || every > 1000000)
                return usage_error("watch: --every wants a step count from 1 to 1000000, not '%s'", v);
        } else if (!id && argv[i][0] != '-') id = argv[i];
        else return usage_error("watch: unexpected argument '%s'", argv[i]);
    }
    if (!id) return usage_error("watch: which job?%s", "");
    if (!connect_learner(c)) return EXIT_USAGE;
    return watch_job(c, id, !live, every);
}

static int cmd_submit(ctl *c, int argc, char **argv)
{
    const char *path = NULL;
    int watch = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--watch")) watch = 1;
        else if (!path && argv[i][0] != '-') path = argv[i];
        else return usage_error("submit: unexpected argument '%s'", argv[i]);
    }
    if (!path) return usage_error("submit: which spec file?%s", "");
    char *text = NULL;
    size_t len = 0;
    aha_err e;
    if (aha_read_file(path, AHA_JOB_SPEC_MAX_BYTES, &text, &len, &e) != AHA_OK) {
        fprintf(stderr, "ahactl: submit: %s\n", e.msg);
        return EXIT_USAGE;
    }
    if (!connect_learner(c)) {
        free(text);
        return EXIT_USAGE;
    }
    Aha__V1__SubmitJobRequest req = AHA__V1__SUBMIT_JOB_REQUEST__INIT;
    req.spec_json = text;
    ProtobufCMessage *resp = NULL;
    int code = 0;
    aha_status st = unary(c, "SubmitJob", &req.base, &resp, &code, &e);
    free(text);
    if (st != AHA_OK) {
        if (code == 3) {
            /* the server's message names the field; drop the "SubmitJob: INVALID_ARGUMENT: " */
            const char *m = strstr(e.msg, "INVALID_ARGUMENT: ");
            fprintf(stderr, "ahactl: %s: spec rejected: %s\n", path, m ? m + 18 : e.msg);
            return EXIT_FAILED;
        }
        return rpc_fail(c, "submit", code, &e);
    }
    const Aha__V1__SubmitJobReply *r = (const Aha__V1__SubmitJobReply *)resp;
    char id[128];
    snprintf(id, sizeof id, "%s", r->job_id);
    protobuf_c_message_free_unpacked(resp, NULL);
    printf("%s\n", id);
    fflush(stdout);
    return watch ? watch_job(c, id, 1, 1) : EXIT_OK;
}

/* The job's records (metrics.jsonl text): from --jobs-dir, or a history-only WatchJob. */
static int fetch_records(ctl *c, const char *id, const char *jobs_dir, char **out, size_t *len)
{
    aha_err e;
    if (jobs_dir) {
        char dir[4096], path[4200];
        if (aha_path_join(dir, sizeof dir, jobs_dir, id, &e) != AHA_OK ||
            aha_path_join(path, sizeof path, dir, "metrics.jsonl", &e) != AHA_OK) {
            fprintf(stderr, "ahactl: %s\n", e.msg);
            return EXIT_USAGE;
        }
        if (aha_read_file(path, 512u << 20, out, len, &e) != AHA_OK) {
            fprintf(stderr, "ahactl: %s\n", e.msg);
            return EXIT_FAILED;
        }
        /* eval records may live in eval.jsonl only */
        char epath[4200];
        char *ev = NULL;
        size_t elen = 0;
        if (aha_path_join(epath, sizeof epath, dir, "eval.jsonl", &e) == AHA_OK &&
            aha_path_exists(epath) && !strstr(*out, "\"eval\"") &&
            aha_read_file(epath, 512u << 20, &ev, &elen, &e) == AHA_OK) {
            char *both = malloc(*len + elen + 2);
            if (!both) abort();
            memcpy(both, *out, *len);
            both[*len] = '\n';
            memcpy(both + *len + 1, ev, elen);
            both[*len + 1 + elen] = 0;
            free(*out);
            free(ev);
            *out = both;
            *len = *len + 1 + elen;
        }
        return EXIT_OK;
    }
    if (!connect_learner(c)) return EXIT_USAGE;
    Aha__V1__WatchJobRequest req = AHA__V1__WATCH_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    req.from_start = 1;
    req.history_only = 1;
    aha_rpc_call_opts o = call_opts(c, c->timeout_ms * 6);
    aha_rpc_stream *st = NULL;
    if (aha_rpc_stream_open(c->ch, &aha__v1__learner__descriptor, "WatchJob", &req.base, &o, &st,
                            &e) != AHA_OK)
        return rpc_fail(c, "fetching metrics", o.code, &e);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) abort();
    aha_status s;
    for (;;) {
        ProtobufCMessage *m = NULL;
        s = aha_rpc_stream_next(st, &m, &e);
        if (s != AHA_OK || !m) break;
        const Aha__V1__JobEvent *ev = (const Aha__V1__JobEvent *)m;
        if ((!strcmp(ev->type, "metrics") || !strcmp(ev->type, "eval")) && ev->json[0]) {
            size_t l = strlen(ev->json);
            while (n + l + 2 > cap) {
                cap *= 2;
                buf = realloc(buf, cap);
                if (!buf) abort();
            }
            memcpy(buf + n, ev->json, l);
            n += l;
            buf[n++] = '\n';
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    aha_rpc_stream_free(st);
    buf[n] = 0;
    if (s != AHA_OK) {
        free(buf);
        return rpc_fail(c, "fetching metrics", o.code, &e);
    }
    *out = buf;
    *len = n;
    return EXIT_OK;
}

static int cmd_plot_report(ctl *c, int argc, char **argv, int is_plot)
{
    const char *id = NULL, *out = NULL, *jobs_dir = NULL;
    const char *name = is_plot ? "plot" : "report";
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--out")) && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--jobs-dir") && i + 1 < argc) jobs_dir = argv[++i];
        else if (!id && argv[i][0] != '-') id = argv[i];
        else return usage_error("%s: unexpected argument or missing value", argv[i]);
    }
    if (!id) return usage_error("%s: which job?", name);
    if (is_plot && !out) return usage_error("plot: -o FILE.svg is required%s", "");
    char *text = NULL;
    size_t len = 0;
    int rc = fetch_records(c, id, jobs_dir, &text, &len);
    if (rc != EXIT_OK) return rc;
    aha_err e;
    char *doc = NULL;
    aha_status st;
    if (is_plot) {
        st = aha_plot_svg(text, len, id, &doc, &e);
    } else {
        aha_report_input in = {.text = text, .len = len, .stage = NULL};
        st = aha_report_markdown(&in, 1, id, &doc, &e);
    }
    free(text);
    if (st != AHA_OK) {
        fprintf(stderr, "ahactl: %s %s: %s\n", name, id, e.msg);
        return EXIT_FAILED;
    }
    if (out) {
        st = aha_write_file_atomic(out, doc, strlen(doc), &e);
        if (st != AHA_OK) {
            fprintf(stderr, "ahactl: %s: %s\n", name, e.msg);
            free(doc);
            return EXIT_FAILED;
        }
        if (is_plot) printf("wrote %s\n", out);
    } else {
        fputs(doc, stdout);
    }
    free(doc);
    return EXIT_OK;
}

static int cmd_health(ctl *c, int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-') return usage_error("health: usage: health ADDR%s", "");
    int serving = 0;
    aha_err e;
    aha_status st = aha_health_check(argv[0], &c->tls, c->timeout_ms, &serving, &e);
    if (st != AHA_OK) {
        if (st == AHA_EUNAVAILABLE || st == AHA_ETIMEOUT) {
            fprintf(stderr, "ahactl: health: %s is unreachable (%s)\n", argv[0], e.msg);
            return EXIT_UNREACHABLE;
        }
        fprintf(stderr, "ahactl: health: %s: %s\n", argv[0], e.msg);
        return EXIT_FAILED;
    }
    printf("%s: %s\n", argv[0], serving ? "SERVING" : "NOT_SERVING");
    return serving ? EXIT_OK : EXIT_FAILED;
}

static int cmd_up(ctl *c, int argc, char **argv)
{
    aha_up_opts o;
    aha_up_opts_init(&o);
    const char *rd = getenv("AHA_RUN_DIR");
    if (rd && *rd) o.run_dir = rd;
    o.tls = c->tls;
    for (int i = 0; i < argc; i++) {
        int s;
        if (!strcmp(argv[i], "--detach")) {
            o.detach = 1;
        } else if (!strcmp(argv[i], "--run-dir") && i + 1 < argc) {
            o.run_dir = argv[++i];
        } else if (!strcmp(argv[i], "--grace-s")) {
            if (!parse_int("--grace-s", i + 1 < argc ? argv[++i] : NULL, 0, 3600, &s))
                return EXIT_USAGE;
            o.grace_ms = s * 1000;
        } else if (!strcmp(argv[i], "--start-timeout-s")) {
            if (!parse_int("--start-timeout-s", i + 1 < argc ? argv[++i] : NULL, 1, 86400, &s))
                return EXIT_USAGE;
            o.start_timeout_ms = s * 1000;
        } else if (!o.topology_path && argv[i][0] != '-') {
            o.topology_path = argv[i];
        } else {
            return usage_error("up: unexpected argument or missing value '%s'", argv[i]);
        }
    }
    if (!o.topology_path) return usage_error("up: which topology file?%s", "");
    return aha_up_main(&o);
}

static int cmd_down(int argc, char **argv)
{
    const char *run_dir = getenv("AHA_RUN_DIR");
    if (!run_dir || !*run_dir) run_dir = ".aha/run";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--run-dir") && i + 1 < argc) run_dir = argv[++i];
        else return usage_error("down: unexpected argument '%s'", argv[i]);
    }
    return aha_down_main(run_dir, 15000);
}

int main(int argc, char **argv)
{
    ctl c;
    memset(&c, 0, sizeof c);
    c.server = getenv("AHA_SERVER");
    if (!c.server || !*c.server) c.server = "localhost:50050";
    c.timeout_ms = 10000;
    aha_log_set_level(AHA_LOG_WARN);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(f, "--server") && v) {
            c.server = v;
            i++;
        } else if (!strcmp(f, "--timeout-ms")) {
            if (!parse_int(f, v, 1, 86400000L, &c.timeout_ms)) return EXIT_USAGE;
            i++;
        } else if ((!strcmp(f, "--tls-ca") || !strcmp(f, "--tls-cert") || !strcmp(f, "--tls-key")) &&
                   v) {
            if (!aha_path_exists(v)) return usage_error("%s: no such file", v);
            if (!strcmp(f, "--tls-ca")) c.tls.ca = v;
            else if (!strcmp(f, "--tls-cert")) c.tls.cert = v;
            else c.tls.key = v;
            i++;
        } else if (!strcmp(f, "--token-file") && v) {
            free(c.token);
            if (!(c.token = read_token_file(v))) return EXIT_USAGE;
            i++;
        } else {
            return usage_error("unknown option or missing value: %s", f);
        }
    }
    if (!c.tls.cert != !c.tls.key) return usage_error("--tls-cert and --tls-key go together%s", "");
    if (c.tls.cert && !c.tls.ca) return usage_error("--tls-cert needs --tls-ca%s", "");
    if (!c.token) {
        const char *t = getenv("AHA_JOB_TOKEN");
        if (t && *t) c.token = strdup(t);
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[i];
    int n = argc - i - 1;
    char **rest = argv + i + 1;
    int rc;
    if (!strcmp(cmd, "submit")) rc = cmd_submit(&c, n, rest);
    else if (!strcmp(cmd, "watch")) rc = cmd_watch(&c, n, rest);
    else if (!strcmp(cmd, "status")) rc = cmd_status(&c, n, rest);
    else if (!strcmp(cmd, "list")) rc = cmd_list(&c, n, rest);
    else if (!strcmp(cmd, "cancel")) rc = cmd_cancel(&c, n, rest);
    else if (!strcmp(cmd, "plot")) rc = cmd_plot_report(&c, n, rest, 1);
    else if (!strcmp(cmd, "report")) rc = cmd_plot_report(&c, n, rest, 0);
    else if (!strcmp(cmd, "health")) rc = cmd_health(&c, n, rest);
    else if (!strcmp(cmd, "up")) rc = cmd_up(&c, n, rest);
    else if (!strcmp(cmd, "down")) rc = cmd_down(n, rest);
    else if (!strcmp(cmd, "help")) {
        usage(stdout);
        rc = EXIT_OK;
    } else rc = usage_error("unknown command '%s'", cmd);
    if (c.ch) aha_rpc_channel_free(c.ch);
    free(c.token);
    return rc;
}
