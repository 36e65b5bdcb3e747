/* up.c: the topology parser, the grpc.health.v1 check, and the local supervisor behind
 * `ahactl up` / `ahactl down` (see up.h for the behaviour).
 *
 * The supervisor is one libuv loop: child exits arrive as exit callbacks, a 100 ms timer drives
 * the state machine (start groups, backoff, stop deadlines), and health checks, which block,
 * run on libuv's thread pool so the loop keeps reaping children while a check waits. Each
 * check dials a fresh channel: a channel that failed once backs off its reconnects for up to
 * two minutes, which would hide a restarted service. */
#include "up.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/fs.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"

/* ------------------------------------------------------------------------------------------ */
/* topology */

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

void aha_topology_free(aha_topology *t)
{
    for (int i = 0; t && i < t->n; i++) {
        aha_topo_service *s = &t->services[i];
        free(s->name);
        free(s->binary);
        for (int k = 0; k < s->n_args; k++) free(s->args[k]);
        free(s->args);
        free(s->health);
    }
    if (t) {
        free(t->services);
        memset(t, 0, sizeof *t);
    }
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) > 63) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-')) return 0;
    return 1;
}

aha_status aha_topology_parse(const char *text, size_t len, aha_topology *t, aha_err *err)
{
    memset(t, 0, sizeof *t);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    aha_status st = AHA_OK;
    if (!o) return aha_errf(err, AHA_EINVAL, "topology: not JSON: %s (line %d)", je.text, je.line);
    if (!json_is_object(o)) {
        st = aha_errf(err, AHA_EINVAL, "topology: must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (strcmp(key, "format") && strcmp(key, "about") && strcmp(key, "services")) {
            st = aha_errf(err, AHA_EINVAL, "topology.%.64s: unknown field", key);
            goto out;
        }
    }
    const char *fmt = json_string_value(json_object_get(o, "format"));
    if (!fmt || strcmp(fmt, "aha.topology/v1")) {
        st = aha_errf(err, AHA_EINVAL, "topology.format: must be \"aha.topology/v1\"%s%.64s%s",
                      fmt ? ", got \"" : " (missing)", fmt ? fmt : "", fmt ? "\"" : "");
        goto out;
    }
    json_t *about = json_object_get(o, "about");
    if (about && !json_is_string(about)) {
        st = aha_errf(err, AHA_EINVAL, "topology.about: must be a string");
        goto out;
    }
    json_t *svcs = json_object_get(o, "services");
    if (!json_is_array(svcs) || json_array_size(svcs) == 0 || json_array_size(svcs) > 64) {
        st = aha_errf(err, AHA_EINVAL, "topology.services: must be an array of 1 to 64 services");
        goto out;
    }
    size_t n = json_array_size(svcs);
    t->services = calloc(n, sizeof *t->services);
    if (!t->services) abort();
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(svcs, i);
        aha_topo_service *ts = &t->services[t->n];
        if (!json_is_object(s)) {
            st = aha_errf(err, AHA_EINVAL, "topology.services[%zu]: must be an object", i);
            goto out;
        }
        json_object_foreach(s, key, v)
        {
            static const char *const known[] = {"name", "binary", "args", "port", "restart",
                                                "health"};
            int ok = 0;
            for (size_t k = 0; k < sizeof known / sizeof *known; k++) ok |= !strcmp(key, known[k]);
            if (!ok) {
                st = aha_errf(err, AHA_EINVAL, "topology.services[%zu].%.64s: unknown field", i,
                              key);
                goto out;
            }
        }
        const char *name = json_string_value(json_object_get(s, "name"));
        if (!name || !valid_name(name)) {
            st = aha_errf(err, AHA_EINVAL,
                          "topology.services[%zu].name: required, 1-63 characters of [a-z0-9-]", i);
            goto out;
        }
        for (int k = 0; k < t->n; k++)
            if (!strcmp(t->services[k].name, name)) {
                st = aha_errf(err, AHA_EINVAL, "topology.services[%zu].name: \"%s\" is used twice",
                              i, name);
                goto out;
            }
        const char *bin = json_string_value(json_object_get(s, "binary"));
        if (!bin || !*bin || strlen(bin) >= PATH_MAX) {
            st = aha_errf(err, AHA_EINVAL, "topology.services[%zu].binary: required path or name",
                          i);
            goto out;
        }
        json_t *args = json_object_get(s, "args");
        if (!json_is_array(args) || json_array_size(args) > 256) {
            st = aha_errf(err, AHA_EINVAL,
                          "topology.services[%zu].args: required array of at most 256 strings", i);
            goto out;
        }
        for (size_t k = 0; k < json_array_size(args); k++)
            if (!json_is_string(json_array_get(args, k))) {
                st = aha_errf(err, AHA_EINVAL, "topology.services[%zu].args[%zu]: must be a string",
                              i, k);
                goto out;
            }
        json_t *port = json_object_get(s, "port");
        if (!json_is_integer(port) || json_integer_value(port) < 1 ||
            json_integer_value(port) > 65535) {
            st = aha_errf(err, AHA_EINVAL,
                          "topology.services[%zu].port: required integer in [1, 65535]", i);
            goto out;
        }
        json_t *restart = json_object_get(s, "restart");
        if (!json_is_boolean(restart)) {
            st = aha_errf(err, AHA_EINVAL, "topology.services[%zu].restart: required true or false",
                          i);
            goto out;
        }
        json_t *health = json_object_get(s, "health");
        if (health && (!json_is_string(health) || !strchr(json_string_value(health), ':'))) {
            st = aha_errf(err, AHA_EINVAL,
                          "topology.services[%zu].health: must be an address host:port", i);
            goto out;
        }
        ts->name = xstrdup(name);
        ts->binary = xstrdup(bin);
        ts->n_args = (int)json_array_size(args);
        ts->args = calloc((size_t)ts->n_args + 1, sizeof *ts->args);
        if (!ts->args) abort();
        for (int k = 0; k < ts->n_args; k++)
            ts->args[k] = xstrdup(json_string_value(json_array_get(args, (size_t)k)));
        ts->port = (int)json_integer_value(port);
        ts->restart = json_is_true(restart);
        if (health) {
            ts->health = xstrdup(json_string_value(health));
        } else {
            char buf[64];
            snprintf(buf, sizeof buf, "127.0.0.1:%d", ts->port);
            ts->health = xstrdup(buf);
        }
        t->n++;
    }
out:
    json_decref(o);
    if (st != AHA_OK) aha_topology_free(t);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* health */

aha_status aha_health_check(const char *addr, const aha_ctl_tls *tls, int timeout_ms,
                            int *serving, aha_err *err)
{
    *serving = 0;
    aha_rpc_channel_opts co;
    aha_rpc_channel_opts_init(&co);
    if (tls) {
        co.tls_ca_file = tls->ca;
        co.tls_cert_file = tls->cert;
        co.tls_key_file = tls->key;
    }
    co.attempts = 1;
    aha_rpc_channel *ch = NULL;
    AHA_TRY(aha_rpc_channel_create(addr, &co, &ch, err));
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    aha_rpc_call_opts opts = {.timeout_ms = timeout_ms, .attempts = 1};
    aha_status st = aha_rpc_unary(ch, &grpc__health__v1__health__descriptor, "Check", &req.base,
                                  &resp, &opts, err);
    if (st == AHA_OK) {
        const Grpc__Health__V1__HealthCheckResponse *r =
            (const Grpc__Health__V1__HealthCheckResponse *)resp;
        *serving = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    aha_rpc_channel_free(ch);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* supervisor */

enum { S_IDLE = 0, S_STARTING, S_HEALTHY, S_BACKOFF, S_STOPPED, S_FAILED };
static const char *const state_names[] = {"idle", "starting", "healthy", "backoff", "stopped",
                                          "failed"};
enum { P_STARTING = 0, P_RUNNING, P_STOPPING };

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define BACKOFF_RESET_S 60.0
#define CHECK_TIMEOUT_MS 1000
#define CHECK_PERIOD_S 0.25

typedef struct sup sup;

typedef struct {
    sup *S;
    const aha_topo_service *t;
    uv_process_t proc;
    int alive;     /* a process is running (proc handle open) */
    int closing;   /* proc handle being closed */
    int pid;
    int state;
    int restarts;
    int backoff_ms;
    double started_at, healthy_at, next_start_at, last_check_at;
    int checking;
    uv_work_t work;
    int check_serving;
    aha_status check_st;
    char check_msg[AHA_ERR_LEN];
    char log_path[PATH_MAX + 80];
    int64_t last_exit_status;
    int last_term_signal;
} svc;

struct sup {
    const aha_up_opts *o;
    aha_topology topo;
    svc *svcs;
    int n;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_signal_t sig[3];
    int phase;
    int group_first, group_end; /* the start group being brought up: [first, end) */
    double group_deadline;
    double stop_deadline;
    int killed;
    int exit_code;
    char run_dir[PATH_MAX];
    char state_path[PATH_MAX + 16];
    char topo_abs[PATH_MAX];
    int notify_fd; /* detach: the parent waits on this pipe; -1 otherwise */
    char fail_msg[1024];
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s ahactl up: ", ts);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
}

static void write_state(sup *S)
{
    json_t *o = json_object();
    json_object_set_new(o, "format", json_string("aha.up/v1"));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "topology", json_string(S->topo_abs));
    json_object_set_new(o, "phase", json_string(S->phase == P_STARTING  ? "starting"
                                                : S->phase == P_RUNNING ? "up"
                                                                        : "stopping"));
    json_object_set_new(o, "grace_ms", json_integer(S->o->grace_ms));
    json_t *arr = json_array();
    for (int i = 0; i < S->n; i++) {
        svc *v = &S->svcs[i];
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(v->t->name));
        json_object_set_new(e, "binary", json_string(v->t->binary));
        json_object_set_new(e, "pid", json_integer(v->alive ? v->pid : 0));
        json_object_set_new(e, "port", json_integer(v->t->port));
        json_object_set_new(e, "health", json_string(v->t->health));
        json_object_set_new(e, "state", json_string(state_names[v->state]));
        json_object_set_new(e, "restarts", json_integer(v->restarts));
        json_object_set_new(e, "log", json_string(v->log_path));
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "services", arr);
    char *text = json_dumps(o, JSON_INDENT(1));
    json_decref(o);
    aha_err e;
    if (!text || aha_write_file_atomic(S->state_path, text, strlen(text), &e) != AHA_OK)
        say("cannot write %s: %s", S->state_path, text ? e.msg : "out of memory");
    free(text);
}

static void notify_parent(sup *S, const char *msg)
{
    if (S->notify_fd < 0) return;
    size_t n = strlen(msg);
    ssize_t w = write(S->notify_fd, msg, n);
    (void)w;
    close(S->notify_fd);
    S->notify_fd = -1;
}

static void print_log_tail(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char buf[4096];
    long off = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        off = sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0;
    }
    fseek(f, off, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* the last 12 lines */
    int lines = 0;
    char *p = buf + n;
    while (p > buf && lines < 13)
        if (*--p == '\n') lines++;
    if (*p == '\n') p++;
    fprintf(stderr, "---- last lines of %s ----\n%s%s---- end ----\n", path, p,
            n && buf[n - 1] != '\n' ? "\n" : "");
}

static void begin_stop(sup *S, int code, const char *why);

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    svc *v = p->data;
    sup *S = v->S;
    v->alive = 0;
    v->last_exit_status = status;
    v->last_term_signal = sig;
    if (!v->closing) {
        v->closing = 1;
        uv_close((uv_handle_t *)p, NULL);
    }
    char how[64];
    if (sig) snprintf(how, sizeof how, "killed by signal %d", sig);
    else snprintf(how, sizeof how, "exited with status %lld", (long long)status);
    if (S->phase == P_STOPPING) {
        v->state = S_STOPPED;
        say("%s (pid %d) %s", v->t->name, v->pid, how);
        write_state(S);
        return;
    }
    if (S->phase == P_STARTING) {
        v->state = S_FAILED;
        say("%s (pid %d) %s while starting; its log: %s", v->t->name, v->pid, how, v->log_path);
        print_log_tail(v->log_path);
        char why[512];
        snprintf(why, sizeof why, "%s %s while starting (log %.300s)", v->t->name, how, v->log_path);
        begin_stop(S, 1, why);
        return;
    }
    if (!v->t->restart) {
        v->state = S_STOPPED;
        say("%s (pid %d) %s; not restarted (restart: false)", v->t->name, v->pid, how);
        write_state(S);
        return;
    }
    double now = aha_now_s();
    if (v->healthy_at > 0 && now - v->healthy_at > BACKOFF_RESET_S) v->backoff_ms = 0;
    v->backoff_ms = v->backoff_ms ? v->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (v->backoff_ms > BACKOFF_MAX_MS) v->backoff_ms = BACKOFF_MAX_MS;
    v->state = S_BACKOFF;
    v->next_start_at = now + v->backoff_ms / 1000.0;
    say("%s (pid %d) %s; restarting in %.1f s (log %s)", v->t->name, v->pid, how,
        v->backoff_ms / 1000.0, v->log_path);
    write_state(S);
}

static int spawn_svc(sup *S, svc *v, char *why, size_t cap)
{
    int fd = open(v->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(why, cap, "%s: log %.300s: %s", v->t->name, v->log_path, strerror(errno));
        return 0;
    }
    char **argv = calloc((size_t)v->t->n_args + 2, sizeof *argv);
    if (!argv) abort();
    argv[0] = v->t->binary;
    for (int k = 0; k < v->t->n_args; k++) argv[k + 1] = v->t->args[k];
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = fd;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = fd;
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.exit_cb = on_exit_cb;
    po.file = v->t->binary;
    po.args = argv;
    po.stdio = stdio;
    po.stdio_count = 3;
    /* its own session: a terminal's Ctrl-C reaches the supervisor only, which stops the
     * services itself instead of racing their exits against restarts */
    po.flags = UV_PROCESS_DETACHED;
    dprintf(fd, "\n==== ahactl up: starting %s (start %d) ====\n", v->t->name, v->restarts + 1);
    v->proc.data = v;
    v->closing = 0;
    int rc = uv_spawn(&S->loop, &v->proc, &po);
    close(fd);
    free(argv);
    if (rc != 0) {
        snprintf(why, cap, "%s: cannot start %s: %s", v->t->name, v->t->binary, uv_strerror(rc));
        v->closing = 1;
        uv_close((uv_handle_t *)&v->proc, NULL);
        return 0;
    }
    v->alive = 1;
    v->pid = v->proc.pid;
    v->state = S_STARTING;
    v->started_at = aha_now_s();
    v->last_check_at = 0;
    say("%s: started pid %d (%s), log %s", v->t->name, v->pid, v->t->binary, v->log_path);
    write_state(S);
    return 1;
}

static void check_work(uv_work_t *w)
{
    svc *v = w->data;
    aha_err e;
    memset(&e, 0, sizeof e);
    v->check_st = aha_health_check(v->t->health, &v->S->o->tls, CHECK_TIMEOUT_MS,
                                   &v->check_serving, &e);
    snprintf(v->check_msg, sizeof v->check_msg, "%s", e.msg);
}

static void check_done(uv_work_t *w, int status)
{
    svc *v = w->data;
    sup *S = v->S;
    v->checking = 0;
    if (status != 0 || S->phase == P_STOPPING) return;
    if (v->alive && v->state == S_STARTING && v->check_st == AHA_OK && v->check_serving) {
        v->state = S_HEALTHY;
        v->healthy_at = aha_now_s();
        say("%s: SERVING at %s after %.1f s%s", v->t->name, v->t->health,
            v->healthy_at - v->started_at, v->restarts ? " (restarted)" : "");
        write_state(S);
    }
}

static void start_check(sup *S, svc *v)
{
    if (v->checking) return;
    double now = aha_now_s();
    if (now - v->last_check_at < CHECK_PERIOD_S) return;
    v->last_check_at = now;
    v->checking = 1;
    v->work.data = v;
    if (uv_queue_work(&S->loop, &v->work, check_work, check_done) != 0) v->checking = 0;
}

static void begin_stop(sup *S, int code, const char *why)
{
    if (S->phase == P_STOPPING) return;
    if (code && !S->exit_code) S->exit_code = code;
    if (why) {
        snprintf(S->fail_msg, sizeof S->fail_msg, "%s", why);
        say("stopping: %s", why);
    }
    S->phase = P_STOPPING;
    S->stop_deadline = aha_now_s() + S->o->grace_ms / 1000.0;
    /* The learner last: it was started last and its job may want the other services while
     * it checkpoints; reverse order also matches the start order. */
    for (int i = S->n - 1; i >= 0; i--) {
        svc *v = &S->svcs[i];
        if (v->alive) uv_process_kill(&v->proc, SIGTERM);
        if (!v->alive && v->state != S_FAILED) v->state = S_STOPPED;
    }
    write_state(S);
    char msg[1200];
    snprintf(msg, sizeof msg, "fail: %s\n", why ? why : "stopped before all were healthy");
    notify_parent(S, msg);
}

static int group_end_of(sup *S, int first)
{
    int end = first + 1;
    while (end < S->n && !strcmp(S->svcs[end].t->binary, S->svcs[first].t->binary)) end++;
    return end;
}

static void start_group(sup *S, int first)
{
    S->group_first = first;
    S->group_end = group_end_of(S, first);
    S->group_deadline = aha_now_s() + S->o->start_timeout_ms / 1000.0;
    for (int i = first; i < S->group_end; i++) {
        char why[600];
        if (!spawn_svc(S, &S->svcs[i], why, sizeof why)) {
            S->svcs[i].state = S_FAILED;
            begin_stop(S, 1, why);
            return;
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    sup *S = t->data;
    double now = aha_now_s();
    if (S->phase == P_STOPPING) {
        int alive = 0, busy = 0;
        for (int i = 0; i < S->n; i++) {
            alive += S->svcs[i].alive;
            busy += S->svcs[i].checking;
        }
        if (alive && now > S->stop_deadline && !S->killed) {
            S->killed = 1;
            for (int i = 0; i < S->n; i++)
                if (S->svcs[i].alive) {
                    say("%s (pid %d) still running after %.1f s: SIGKILL", S->svcs[i].t->name,
                        S->svcs[i].pid, S->o->grace_ms / 1000.0);
                    uv_process_kill(&S->svcs[i].proc, SIGKILL);
                }
        }
        if (!alive && !busy) {
            for (int i = 0; i < 3; i++) uv_close((uv_handle_t *)&S->sig[i], NULL);
            uv_close((uv_handle_t *)&S->tick, NULL);
        }
        return;
    }
    if (S->phase == P_STARTING) {
        int ready = 1;
        for (int i = S->group_first; i < S->group_end; i++) {
            svc *v = &S->svcs[i];
            if (v->state != S_HEALTHY) {
                ready = 0;
                start_check(S, v);
            }
        }
        if (!ready && now > S->group_deadline) {
            char why[600];
            const svc *v = NULL;
            for (int i = S->group_first; i < S->group_end && !v; i++)
                if (S->svcs[i].state != S_HEALTHY) v = &S->svcs[i];
            snprintf(why, sizeof why, "%s did not answer SERVING at %.100s within %.0f s (%.200s); log %.200s",
                     v->t->name, v->t->health, S->o->start_timeout_ms / 1000.0,
                     v->check_msg[0] ? v->check_msg : "no answer", v->log_path);
            print_log_tail(v->log_path);
            begin_stop(S, 1, why);
            return;
        }
        if (ready) {
            if (S->group_end < S->n) {
                start_group(S, S->group_end);
            } else {
                S->phase = P_RUNNING;
                write_state(S);
                say("all %d services are up (supervisor pid %d; state %s); `ahactl down` or "
                    "Ctrl-C stops them",
                    S->n, getpid(), S->state_path);
                notify_parent(S, "ok\n");
            }
        }
        return;
    }
    /* running: restarts */
    for (int i = 0; i < S->n; i++) {
        svc *v = &S->svcs[i];
        if (v->state == S_BACKOFF && now >= v->next_start_at) {
            v->restarts++;
            char why[600];
            if (!spawn_svc(S, v, why, sizeof why)) {
                say("%s", why);
                v->state = S_BACKOFF;
                v->backoff_ms = v->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : v->backoff_ms * 2;
                v->next_start_at = now + v->backoff_ms / 1000.0;
            }
        } else if (v->state == S_STARTING) {
            start_check(S, v);
        }
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    sup *S = h->data;
    if (S->phase == P_STOPPING) {
        /* a second signal: do not wait out the grace period */
        S->stop_deadline = 0;
        return;
    }
    char why[64];
    snprintf(why, sizeof why, "signal %d", signum);
    begin_stop(S, 0, why);
}

static int pid_alive(int pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* The command line of pid (argv joined by spaces) into buf; 0 when it cannot be read. */
static int pid_cmdline(int pid, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!buf[i]) buf[i] = ' ';
    buf[n] = 0;
    return n > 0;
}

/* Read RUN_DIR/up.json; NULL when absent. */
static json_t *read_state(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    aha_err e;
    if (!aha_path_exists(path)) return NULL;
    if (aha_read_file(path, 1 << 20, &text, &len, &e) != AHA_OK) return NULL;
    json_t *o = json_loadb(text, len, 0, NULL);
    free(text);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void aha_up_opts_init(aha_up_opts *o)
{
    memset(o, 0, sizeof *o);
    o->run_dir = ".aha/run";
    o->grace_ms = 15000;
    o->start_timeout_ms = 180000;
}

static int supervise(sup *S)
{
    uv_loop_init(&S->loop);
    S->svcs = calloc((size_t)S->n, sizeof *S->svcs);
    if (!S->svcs) abort();
    for (int i = 0; i < S->n; i++) {
        svc *v = &S->svcs[i];
        v->S = S;
        v->t = &S->topo.services[i];
        snprintf(v->log_path, sizeof v->log_path, "%s/logs/%s.log", S->run_dir, v->t->name);
    }
    uv_timer_init(&S->loop, &S->tick);
    S->tick.data = S;
    static const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&S->loop, &S->sig[i]);
        S->sig[i].data = S;
        uv_signal_start(&S->sig[i], on_signal, sigs[i]);
    }
    write_state(S);
    start_group(S, 0);
    uv_timer_start(&S->tick, on_tick, 100, 100);
    uv_run(&S->loop, UV_RUN_DEFAULT);
    uv_loop_close(&S->loop);
    if (S->exit_code == 0) say("all services stopped");
    unlink(S->state_path);
    free(S->svcs);
    return S->exit_code;
}

int aha_up_main(const aha_up_opts *o)
{
    sup S;
    memset(&S, 0, sizeof S);
    S.o = o;
    S.notify_fd = -1;
    aha_err e;
    char *text = NULL;
    size_t len = 0;
    if (aha_read_file(o->topology_path, 1 << 20, &text, &len, &e) != AHA_OK) {
        fprintf(stderr, "ahactl up: %s\n", e.msg);
        return 2;
    }
    aha_status st = aha_topology_parse(text, len, &S.topo, &e);
    free(text);
    if (st != AHA_OK) {
        fprintf(stderr, "ahactl up: %s: %s\n", o->topology_path, e.msg);
        return 2;
    }
    S.n = S.topo.n;
    /* Binaries given as paths must exist now: a typo is a usage error, not a restart loop. */
    for (int i = 0; i < S.n; i++) {
        const char *b = S.topo.services[i].binary;
        if (strchr(b, '/') && access(b, X_OK) != 0) {
            fprintf(stderr,
                    "ahactl up: %s: services[%d] (%s): binary %s: %s (relative paths are taken "
                    "from the directory ahactl runs in; build first)\n",
                    o->topology_path, i, S.topo.services[i].name, b, strerror(errno));
            aha_topology_free(&S.topo);
            return 2;
        }
    }
    if (!realpath(o->topology_path, S.topo_abs))
        snprintf(S.topo_abs, sizeof S.topo_abs, "%s", o->topology_path);
    char logs[PATH_MAX + 8];
    if (aha_mkdirs(o->run_dir, &e) != AHA_OK || !realpath(o->run_dir, S.run_dir)) {
        fprintf(stderr, "ahactl up: run dir %s: %s\n", o->run_dir, e.msg);
        aha_topology_free(&S.topo);
        return 1;
    }
    snprintf(logs, sizeof logs, "%s/logs", S.run_dir);
    if (aha_mkdirs(logs, &e) != AHA_OK) {
        fprintf(stderr, "ahactl up: %s\n", e.msg);
        aha_topology_free(&S.topo);
        return 1;
    }
    snprintf(S.state_path, sizeof S.state_path, "%s/up.json", S.run_dir);
    json_t *old = read_state(S.state_path);
    if (old) {
        int pid = (int)json_integer_value(json_object_get(old, "pid"));
        char cmd[512];
        if (pid_alive(pid) && pid_cmdline(pid, cmd, sizeof cmd) && strstr(cmd, "ahactl")) {
            fprintf(stderr,
                    "ahactl up: already up in %s (supervisor pid %d); run `ahactl down` first\n",
                    S.run_dir, pid);
            json_decref(old);
            aha_topology_free(&S.topo);
            return 1;
        }
        json_decref(old);
    }
    signal(SIGPIPE, SIG_IGN);
    if (o->detach) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
            fprintf(stderr, "ahactl up: pipe: %s\n", strerror(errno));
            aha_topology_free(&S.topo);
            return 1;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "ahactl up: fork: %s\n", strerror(errno));
            aha_topology_free(&S.topo);
            return 1;
        }
        if (pid > 0) {
            close(fds[1]);
            char buf[1300];
            size_t n = 0;
            for (;;) {
                ssize_t r = read(fds[0], buf + n, sizeof buf - 1 - n);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) break;
                n += (size_t)r;
                if (n == sizeof buf - 1) break;
            }
            close(fds[0]);
            buf[n] = 0;
            aha_topology_free(&S.topo);
            if (!strncmp(buf, "ok", 2)) {
                printf("all %d services are up; supervisor pid %d; logs in %s/logs; "
                       "`ahactl down` stops them\n",
                       S.n, (int)pid, S.run_dir);
                return 0;
            }
            fprintf(stderr, "ahactl up: %s (supervisor log %s/up.log)\n",
                    n > 6 ? buf + 6 : "the supervisor ended before all services were up",
                    S.run_dir);
            return 1;
        }
        /* the supervisor: its own session, no terminal, output to RUN_DIR/up.log */
        close(fds[0]);
        S.notify_fd = fds[1];
        setsid();
        char lp[PATH_MAX + 16];
        snprintf(lp, sizeof lp, "%s/up.log", S.run_dir);
        int lfd = open(lp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nfd = open("/dev/null", O_RDONLY);
        if (nfd >= 0) dup2(nfd, 0);
        if (lfd >= 0) {
            dup2(lfd, 1);
            dup2(lfd, 2);
        }
        if (lfd > 2) close(lfd);
        if (nfd > 2) close(nfd);
    }
    int rc = supervise(&S);
    notify_parent(&S, "fail: the supervisor stopped\n");
    aha_topology_free(&S.topo);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* down */

static int wait_gone(int pid, double seconds)
{
    double end = aha_now_s() + seconds;
    while (aha_now_s() < end) {
        /* reap if it is our child (it never is, but waitpid keeps zombies from looking alive) */
        waitpid(pid, NULL, WNOHANG);
        if (!pid_alive(pid)) return 1;
        usleep(50 * 1000);
    }
    return !pid_alive(pid);
}

int aha_down_main(const char *run_dir, int grace_ms)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/up.json", run_dir);
    json_t *o = read_state(path);
    if (!o) {
        printf("ahactl down: nothing is up (no %s)\n", path);
        return 0;
    }
    int sup_pid = (int)json_integer_value(json_object_get(o, "pid"));
    json_t *g = json_object_get(o, "grace_ms");
    double grace_s = (json_is_integer(g) ? (double)json_integer_value(g) : grace_ms) / 1000.0;
    char cmd[1024];
    int rc = 0;
    if (pid_alive(sup_pid) && pid_cmdline(sup_pid, cmd, sizeof cmd) && strstr(cmd, "ahactl")) {
        printf("ahactl down: stopping supervisor pid %d\n", sup_pid);
        fflush(stdout);
        kill(sup_pid, SIGTERM);
        if (wait_gone(sup_pid, grace_s + 10)) {
            json_decref(o);
            printf("ahactl down: all services stopped\n");
            return 0;
        }
        fprintf(stderr, "ahactl down: supervisor pid %d did not stop in %.0f s: SIGKILL\n",
                sup_pid, grace_s + 10);
        kill(sup_pid, SIGKILL);
        wait_gone(sup_pid, 2);
    } else {
        printf("ahactl down: supervisor pid %d is gone; stopping its services directly\n",
               sup_pid);
    }
    /* The supervisor is gone: stop what it left, checking each pid still runs the binary the
     * state file names (a pid may have been reused since). */
    json_t *arr = json_object_get(o, "services");
    int pids[64];
    int n = 0;
    for (size_t i = 0; i < json_array_size(arr) && n < 64; i++) {
        json_t *e = json_array_get(arr, i);
        int pid = (int)json_integer_value(json_object_get(e, "pid"));
        const char *bin = json_string_value(json_object_get(e, "binary"));
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!pid_alive(pid) || !bin || !pid_cmdline(pid, cmd, sizeof cmd)) continue;
        const char *base = strrchr(bin, '/') ? strrchr(bin, '/') + 1 : bin;
        if (!strstr(cmd, base)) continue;
        printf("ahactl down: %s (pid %d): SIGTERM\n", name ? name : "?", pid);
        kill(pid, SIGTERM);
        pids[n++] = pid;
    }
    for (int i = 0; i < n; i++) {
        if (wait_gone(pids[i], grace_s)) continue;
        fprintf(stderr, "ahactl down: pid %d still running after %.1f s: SIGKILL\n", pids[i],
                grace_s);
        kill(pids[i], SIGKILL);
        if (!wait_gone(pids[i], 5)) rc = 1;
    }
    json_decref(o);
    if (rc == 0) {
        unlink(path);
        printf("ahactl down: all services stopped\n");
    }
    return rc;
}
