/* server.c: the gRPC server of libaha (see rpc.h for the threading and ownership model).
 *
 * A call is an aha_rpc_call with a reference count: one reference per batch in flight plus
 * one held by its handler until the call is finished. Every grpc_call_start_batch on a call
 * happens under the call's mutex (gRPC requires batches on one call to be serialised); the
 * CQ threads complete batches, update the call under the same mutex and signal its condition
 * variable, so handler threads block in send/recv without ever blocking a CQ thread. The last
 * reference frees the call, on whichever thread drops it.
 *
 * Tags are small structs embedded in the call; their kind says which batch finished:
 *   NEW     a request_(registered_)call slot delivered a call (or failed at shutdown)
 *   SEND    a SEND_MESSAGE of a stream finished        (send_busy -> 0)
 *   RECV    a RECV_MESSAGE finished                    (recv_busy -> 0)
 *   FINISH  the status batch finished
 *   CLOSE   RECV_CLOSE_ON_SERVER finished; started as soon as the call arrives so that a
 *           cancel or a passed deadline is known while the handler still works
 *   SHUTDOWN  grpc_server_shutdown_and_notify for this CQ
 *
 * Drain: stop() posts a semaphore (async-signal-safe); wait() then reports NOT_SERVING,
 * serves on for notice_ms, stops accepting, gives in-flight calls grace_ms, cancels the rest
 * (which handlers see through aha_rpc_call_cancelled) and joins the CQ threads once every
 * call is freed. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "base/fs.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc_internal.h"

#define SLOTS_PER_METHOD 8 /* outstanding request_registered_call per method and CQ */
#define MAX_PATH 256

enum tag_kind { T_NEW, T_SEND, T_RECV, T_FINISH, T_CLOSE, T_SHUTDOWN };

typedef struct worker worker;

typedef struct {
    enum tag_kind kind;
    aha_rpc_call *c; /* NULL for T_SHUTDOWN */
    worker *w;       /* T_SHUTDOWN only */
} tag;

typedef struct {
    char path[MAX_PATH];
    const ProtobufCServiceDescriptor *svc;
    const ProtobufCMethodDescriptor *md;
    aha_rpc_kind kind;
    aha_rpc_handler fn;
    void *user;
    int health; /* the built-in grpc.health.v1.Health/Check */
    void *reg;  /* grpc_server_register_method handle */
} method_entry;

struct aha_rpc_call {
    aha_rpc_server *s;
    worker *w;
    const method_entry *m; /* NULL: a method nobody registered */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* unregistered methods only */
    grpc_byte_buffer *payload; /* the request of unary / server-streaming calls */
    ProtobufCMessage *request;
    tag t_new, t_send, t_recv, t_finish, t_close;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int md_sent;
    int send_busy, send_failed;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer **sendq; /* send_nowait messages waiting for send_busy == 0 */
    size_t sendq_head, sendq_len, sendq_cap;
    int recv_busy, recv_ok, recv_ended;
    grpc_byte_buffer *recv_bb;
    int finished, detached, counted_active;
    grpc_byte_buffer *unary_reply;
    int close_cancelled;
    atomic_int cancelled;
    void (*cancel_fn)(void *);
    void *cancel_arg;
    int code;
    double t0;
    int64_t bytes_in, bytes_out;
    aha_rpc_call *prev, *next; /* server's live list (s->mu) */
    aha_rpc_call *qnext;       /* pool queue */
};

struct worker {
    aha_rpc_server *s;
    int id;
    pthread_t thr;
    grpc_completion_queue *cq;
    tag t_shutdown;
    int shutdown_seen;
    int open_requests; /* this thread only */
    atomic_int live;   /* accepted calls not yet freed (freed on any thread) */
};

struct aha_rpc_server {
    aha_rpc_server_opts o;
    char name[64];
    char listen[256];
    char *tls_cert, *tls_key;
    /* Bearer tokens (health excepted), as "Bearer <token>": auth_full[] are accepted on every
     * method (service token, legacy auth_token), auth_job only on public methods. */
    char *auth_full[2];
    char *auth_job;
    int auth_on;
    char publics[8][MAX_PATH]; /* "/aha.v1.Learner/" prefixes of the public methods */
    int n_publics;
    char *tls_ca; /* client CA (mutual TLS), or NULL */
    grpc_server *srv;
    method_entry *methods;
    int n_methods;
    worker *workers;
    int nworkers;
    int port;
    int started, joined, wait_failed;
    atomic_int serving;
    atomic_int stopping; /* 1: no more re-arming of request slots */
    atomic_int active;   /* calls handed to handlers and not finished */
    atomic_int workers_left;
    sem_t stop_sem;

    pthread_mutex_t mu; /* live list; taken before a call's mutex, never after */
    aha_rpc_call *live;
    pthread_mutex_t stats_mu; /* a leaf lock: may be taken while a call's mutex is held */
    aha_rpc_server_stats stats;

    /* handler pool */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    aha_rpc_call *qhead, *qtail;
    pthread_t *pthreads;
    int npthreads, nidle, pexit;
};

static void call_unref(aha_rpc_call *c);

/* ---------------------------------------------------------------------------------------- */
/* small helpers                                                                            */

static void start_batch(aha_rpc_call *c, const grpc_op *ops, size_t n, tag *t)
{
    /* Only programming errors fail here (two ops of one kind in flight, wrong op for a
     * server call): an internal invariant. */
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK) {
        AHA_ERROR("rpc: grpc_call_start_batch failed (%d) on %s", (int)e,
                  c->m ? c->m->path : "?");
        AHA_ASSERT(e == GRPC_CALL_OK);
    }
    c->refs++;
}

static aha_rpc_call *call_new(worker *w, const method_entry *m)
{
    aha_rpc_call *c = calloc(1, sizeof *c);
    AHA_ASSERT(c != NULL);
    c->s = w->s;
    c->w = w;
    c->m = m;
    c->t_new = (tag){T_NEW, c, NULL};
    c->t_send = (tag){T_SEND, c, NULL};
    c->t_recv = (tag){T_RECV, c, NULL};
    c->t_finish = (tag){T_FINISH, c, NULL};
    c->t_close = (tag){T_CLOSE, c, NULL};
    grpc_metadata_array_init(&c->md);
    if (!m) grpc_call_details_init(&c->details);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return c;
}

static void call_destroy(aha_rpc_call *c)
{
    grpc_metadata_array_destroy(&c->md);
    if (!c->m) grpc_call_details_destroy(&c->details);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->unary_reply) grpc_byte_buffer_destroy(c->unary_reply);
    if (c->request) protobuf_c_message_free_unpacked(c->request, NULL);
    for (size_t i = c->sendq_head; i < c->sendq_len; i++) grpc_byte_buffer_destroy(c->sendq[i]);
    free(c->sendq);
    if (c->call) grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* Arm one request slot for method m (NULL = unregistered methods) on worker w. */
static void request_slot(worker *w, const method_entry *m)
{
    aha_rpc_server *s = w->s;
    aha_rpc_call *c = call_new(w, m);
    grpc_call_error e;
    if (!m) {
        e = grpc_server_request_call(s->srv, &c->call, &c->details, &c->md, w->cq, w->cq,
                                     &c->t_new);
    } else {
        /* Payload handling must match the registration: client streams read nothing. */
        e = grpc_server_request_registered_call(
            s->srv, m->reg, &c->call, &c->deadline, &c->md,
            m->kind == AHA_RPC_CLIENT_STREAM ? NULL : &c->payload, w->cq, w->cq, &c->t_new);
    }
    if (e != GRPC_CALL_OK) {
        AHA_WARN("rpc: cannot arm a request slot for %s (%d)", m ? m->path : "*", (int)e);
        call_destroy(c);
        return;
    }
    w->open_requests++;
}

static int debug_on(void) { return aha_log_get_level() <= AHA_LOG_DEBUG; }

/* Start the status batch (with the unary reply and initial metadata when due) and drop
 * the handler's reference. Any thread; waits for a stream send still in flight. */
static void call_finish_code(aha_rpc_call *c, int code, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    AHA_ASSERT(!c->finished);
    while (c->send_busy) pthread_cond_wait(&c->cv, &c->mu); /* drains the queue too */
    if (code == 0 && c->m && c->m->kind != AHA_RPC_SERVER_STREAM && !c->unary_reply &&
        !c->m->health) {
        code = GRPC_STATUS_INTERNAL;
        msg = "handler returned OK without a reply";
    }
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    if (code == 0 && c->unary_reply) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->unary_reply;
        n++;
    }
    grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    ops[n].data.send_status_from_server.status_details = msg && *msg ? &details : NULL;
    n++;
    c->finished = 1;
    c->code = code;
    /* Count the call and free its slot before the client can see the status: a client
     * that sends its next call at once must not be refused as over the limit, and stats
     * read after a reply must include it. */
    aha_rpc_server *s = c->s;
    double dt = aha_now_s() - c->t0;
    pthread_mutex_lock(&s->stats_mu);
    s->stats.requests++;
    if (code != 0) s->stats.errors++;
    s->stats.latency_sum_s += dt;
    pthread_mutex_unlock(&s->stats_mu);
    if (c->counted_active) atomic_fetch_sub(&s->active, 1);
    start_batch(c, ops, n, &c->t_finish);
    grpc_slice_unref(details); /* start_batch copied it */
    pthread_mutex_unlock(&c->mu);

    if (debug_on()) {
        char path[MAX_PATH];
        if (c->m) {
            snprintf(path, sizeof path, "%s", c->m->path);
        } else {
            char *p = grpc_slice_to_c_string(c->details.method);
            snprintf(path, sizeof path, "%s", p);
            gpr_free(p);
        }
        AHA_DEBUG("%s %s %.3f ms in %lld B out %lld B%s%s", path, aha_rpc_code_name(code),
                  dt * 1e3, (long long)c->bytes_in, (long long)c->bytes_out,
                  code ? ": " : "", code && msg ? msg : "");
    }
    call_unref(c);
}

static void call_finish_status(aha_rpc_call *c, aha_status st, const aha_err *err)
{
    if (st == AHA_OK) {
        call_finish_code(c, 0, NULL);
        return;
    }
    const char *msg = err && err->msg[0] ? err->msg : aha_status_str(st);
    call_finish_code(c, aha_status_grpc_code(st), msg);
}

static void call_unref(aha_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left > 0) return;
    aha_rpc_server *s = c->s;
    worker *w = c->w;
    pthread_mutex_lock(&s->mu);
    if (c->prev) c->prev->next = c->next;
    else s->live = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&s->mu);
    call_destroy(c);
    atomic_fetch_sub(&w->live, 1);
}

static void mark_cancelled(aha_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->cancelled, 1);
    void (*fn)(void *) = c->cancel_fn;
    void *arg = c->cancel_arg;
    c->cancel_fn = NULL;
    pthread_mutex_unlock(&c->mu);
    if (fn) fn(arg);
}

/* ---------------------------------------------------------------------------------------- */
/* handler pool                                                                             */

static void run_health(aha_rpc_call *c);

static void run_call(aha_rpc_call *c)
{
    const method_entry *m = c->m;
    aha_err err;
    aha_err_clear(&err);
    if (m->kind != AHA_RPC_CLIENT_STREAM) {
        int had = c->payload != NULL;
        if (had) c->bytes_in = (int64_t)grpc_byte_buffer_length(c->payload);
        c->request = aha__rpc_unpack(m->md->input, c->payload);
        if (c->payload) grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
        if (!c->request) {
            char msg[300];
            snprintf(msg, sizeof msg, had ? "cannot parse %s" : "missing request message (%s)",
                     m->md->input->name);
            call_finish_code(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
            return;
        }
    }
    if (atomic_load(&c->cancelled)) {
        /* The deadline passed or the client left while the call waited for a thread. */
        call_finish_code(c, GRPC_STATUS_CANCELLED, "call cancelled before its handler ran");
        return;
    }
    /* A detached call may be finished (and its handler reference dropped) by another
     * thread before fn returns: hold a reference of our own across the call. */
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    aha_status st = m->fn(c, c->request, m->user, &err);
    pthread_mutex_lock(&c->mu);
    int detached = c->detached;
    pthread_mutex_unlock(&c->mu);
    if (!detached) call_finish_status(c, st, &err);
    call_unref(c);
}

static void *pool_main(void *arg)
{
    aha_rpc_server *s = arg;
    pthread_mutex_lock(&s->pmu);
    for (;;) {
        while (!s->qhead && !s->pexit) {
            s->nidle++;
            pthread_cond_wait(&s->pcv, &s->pmu);
            s->nidle--;
        }
        if (!s->qhead) break;
        aha_rpc_call *c = s->qhead;
        s->qhead = c->qnext;
        if (!s->qhead) s->qtail = NULL;
        pthread_mutex_unlock(&s->pmu);
        run_call(c);
        pthread_mutex_lock(&s->pmu);
    }
    pthread_mutex_unlock(&s->pmu);
    return NULL;
}

/* Queue c for a handler thread; grows the pool while no thread is idle. */
static int pool_dispatch(aha_rpc_server *s, aha_rpc_call *c)
{
    pthread_mutex_lock(&s->pmu);
    c->qnext = NULL;
    if (s->qtail) s->qtail->qnext = c;
    else s->qhead = c;
    s->qtail = c;
    int queued = 0;
    for (aha_rpc_call *q = s->qhead; q; q = q->qnext) queued++;
    if (s->nidle < queued && s->npthreads < s->o.max_concurrent_calls) {
        if (pthread_create(&s->pthreads[s->npthreads], NULL, pool_main, s) == 0)
            s->npthreads++;
        else
            AHA_WARN("rpc: cannot start a handler thread (%d running)", s->npthreads);
    }
    pthread_cond_signal(&s->pcv);
    pthread_mutex_unlock(&s->pmu);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* CQ threads                                                                               */

/* Whether the slice equals `want`, in time that depends only on the lengths. */
static int token_eq(grpc_slice v, const char *want)
{
    if (!want) return 0;
    size_t n = strlen(want);
    if (GRPC_SLICE_LENGTH(v) != n) return 0;
    const unsigned char *p = GRPC_SLICE_START_PTR(v);
    unsigned diff = 0;
    for (size_t k = 0; k < n; k++) diff |= (unsigned)(p[k] ^ (unsigned char)want[k]);
    return diff == 0;
}

enum { TOKEN_NONE, TOKEN_BAD, TOKEN_FULL, TOKEN_JOB };

/* Which configured token the call's "authorization" metadata carries. Every candidate is
 * compared, so the time taken does not tell which one (nearly) matched. */
static int call_token(const aha_rpc_call *c)
{
    const aha_rpc_server *s = c->s;
    for (size_t i = 0; i < c->md.count; i++) {
        if (!aha__rpc_slice_eq(c->md.metadata[i].key, "authorization")) continue;
        grpc_slice v = c->md.metadata[i].value;
        int full = token_eq(v, s->auth_full[0]) | token_eq(v, s->auth_full[1]);
        int job = token_eq(v, s->auth_job);
        return full ? TOKEN_FULL : job ? TOKEN_JOB : TOKEN_BAD;
    }
    return TOKEN_NONE;
}

/* Whether the call's method belongs to a public service (the job API). */
static int call_public(const aha_rpc_call *c)
{
    const aha_rpc_server *s = c->s;
    const char *path = c->m ? c->m->path : NULL;
    grpc_slice m = c->details.method;
    for (int i = 0; i < s->n_publics; i++) {
        size_t n = strlen(s->publics[i]);
        if (path ? strncmp(path, s->publics[i], n) == 0
                 : GRPC_SLICE_LENGTH(m) >= n &&
                       memcmp(GRPC_SLICE_START_PTR(m), s->publics[i], n) == 0)
            return 1;
    }
    return 0;
}

/* UNAUTHENTICATED / PERMISSION_DENIED with a message, or 0 when the call may go on. */
static int call_auth(const aha_rpc_call *c, const char **msg)
{
    const aha_rpc_server *s = c->s;
    if (!s->auth_on || (c->m && c->m->health)) return 0;
    switch (call_token(c)) {
    case TOKEN_NONE: *msg = "missing bearer token"; return GRPC_STATUS_UNAUTHENTICATED;
    case TOKEN_BAD: *msg = "invalid bearer token"; return GRPC_STATUS_UNAUTHENTICATED;
    case TOKEN_JOB:
        if (call_public(c)) return 0;
        *msg = "the job token may not call internal methods (a service token is needed)";
        return GRPC_STATUS_PERMISSION_DENIED;
    default: return 0;
    }
}

static void on_new(worker *w, aha_rpc_call *c, int ok)
{
    aha_rpc_server *s = w->s;
    w->open_requests--;
    if (!ok) { /* the server is shutting down: the slot was cancelled */
        call_destroy(c);
        return;
    }
    atomic_fetch_add(&w->live, 1);
    if (!atomic_load(&s->stopping)) request_slot(w, c->m);
    c->t0 = aha_now_s();
    pthread_mutex_lock(&s->mu);
    c->next = s->live;
    if (s->live) s->live->prev = c;
    s->live = c;
    pthread_mutex_unlock(&s->mu);

    pthread_mutex_lock(&c->mu);
    c->refs = 1; /* the handler's */
    grpc_op close_op;
    memset(&close_op, 0, sizeof close_op);
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    start_batch(c, &close_op, 1, &c->t_close);
    pthread_mutex_unlock(&c->mu);

    const char *deny = NULL;
    int deny_code = call_auth(c, &deny);
    if (deny_code) {
        call_finish_code(c, (grpc_status_code)deny_code, deny);
        return;
    }
    if (!c->m) {
        char *p = grpc_slice_to_c_string(c->details.method);
        char msg[MAX_PATH + 64];
        snprintf(msg, sizeof msg, "method %s is not implemented", p);
        gpr_free(p);
        call_finish_code(c, GRPC_STATUS_UNIMPLEMENTED, msg);
        return;
    }
    if (c->m->health) { /* cheap: answered on this thread, never queued behind work */
        run_health(c);
        return;
    }
    if (atomic_fetch_add(&s->active, 1) >= s->o.max_concurrent_calls) {
        atomic_fetch_sub(&s->active, 1);
        char msg[128];
        snprintf(msg, sizeof msg, "server busy: %d calls in progress; retry with backoff", s->o.max_concurrent_calls);
        call_finish_code(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    c->counted_active = 1;
    pool_dispatch(s, c);
}

static void start_send(aha_rpc_call *c, grpc_byte_buffer *bb);

static void on_send(aha_rpc_call *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    c->send_busy = 0;
    if (!ok) c->send_failed = 1;
    if (c->sendq_head < c->sendq_len) {
        if (c->send_failed) { /* the call is gone: drop what was queued */
            for (size_t i = c->sendq_head; i < c->sendq_len; i++)
                grpc_byte_buffer_destroy(c->sendq[i]);
            c->sendq_head = c->sendq_len = 0;
        } else {
            /* The next queued message goes out from this CQ thread; with >= 2 CQ threads
             * another one keeps polling the sockets meanwhile (notes 8.1). */
            grpc_byte_buffer *bb = c->sendq[c->sendq_head++];
            if (c->sendq_head == c->sendq_len) c->sendq_head = c->sendq_len = 0;
            start_send(c, bb);
        }
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

static void on_recv(aha_rpc_call *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    c->recv_busy = 0;
    c->recv_ok = ok;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

static void on_close(aha_rpc_call *c)
{
    if (c->close_cancelled) {
        aha_rpc_server *s = c->s;
        pthread_mutex_lock(&s->stats_mu);
        s->stats.cancelled++;
        pthread_mutex_unlock(&s->stats_mu);
        mark_cancelled(c);
    }
    call_unref(c);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    aha_rpc_server *s = w->s;
    for (int i = 0; i < s->n_methods; i++)
        for (int k = 0; k < SLOTS_PER_METHOD; k++) request_slot(w, &s->methods[i]);
    request_slot(w, NULL);
    for (;;) {
        /* With the shutdown tag seen, calls may still be freed on handler threads, which
         * posts nothing here: re-check the exit condition periodically. */
        gpr_timespec dl = w->shutdown_seen ? aha__rpc_deadline(50)
                                           : gpr_inf_future(GPR_CLOCK_MONOTONIC);
        grpc_event ev = grpc_completion_queue_next(w->cq, dl, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            tag *t = ev.tag;
            switch (t->kind) {
            case T_NEW: on_new(w, t->c, ev.success); break;
            case T_SEND: on_send(t->c, ev.success); break;
            case T_RECV: on_recv(t->c, ev.success); break;
            case T_FINISH: call_unref(t->c); break;
            case T_CLOSE: on_close(t->c); break;
            case T_SHUTDOWN: w->shutdown_seen = 1; break;
            }
        } else if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (w->shutdown_seen && w->open_requests == 0 && atomic_load(&w->live) == 0) break;
    }
    atomic_fetch_sub(&s->workers_left, 1);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* health                                                                                   */

static void run_health(aha_rpc_call *c)
{
    aha_rpc_server *s = c->s;
    Grpc__Health__V1__HealthCheckRequest *req = NULL;
    if (c->payload) {
        c->bytes_in = (int64_t)grpc_byte_buffer_length(c->payload);
        req = (Grpc__Health__V1__HealthCheckRequest *)aha__rpc_unpack(
            &grpc__health__v1__health_check_request__descriptor, c->payload);
    }
    if (!req) {
        call_finish_code(c, GRPC_STATUS_INVALID_ARGUMENT,
                         "cannot parse grpc.health.v1.HealthCheckRequest");
        return;
    }
    c->request = &req->base;
    int known = req->service[0] == 0;
    for (int i = 0; i < s->n_methods && !known; i++)
        known = strcmp(s->methods[i].svc->name, req->service) == 0;
    if (!known) {
        call_finish_code(c, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse rep = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rep.status = atomic_load(&s->serving)
                     ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    size_t len;
    c->unary_reply = aha__rpc_pack(&rep.base, 0, &len);
    c->bytes_out = (int64_t)len;
    call_finish_code(c, 0, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* public: handler side                                                                     */

/* Start a SEND_MESSAGE of bb (c->mu held, no send in flight). */
static void start_send(aha_rpc_call *c, grpc_byte_buffer *bb)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    c->send_busy = 1;
    c->send_bb = bb;
    start_batch(c, ops, n, &c->t_send);
}

/* Pack msg for c; NULL with err filled when it cannot be sent. */
static grpc_byte_buffer *pack_reply(aha_rpc_call *c, const ProtobufCMessage *msg, size_t *len,
                                    aha_err *err)
{
    AHA_ASSERT(c->m && msg->descriptor == c->m->md->output);
    if (atomic_load(&c->cancelled)) {
        aha_errf(err, AHA_ECANCELLED, "%s: call cancelled", c->m->path);
        return NULL;
    }
    grpc_byte_buffer *bb = aha__rpc_pack(msg, c->s->o.max_send_bytes, len);
    if (!bb)
        aha_errf(err, AHA_ELIMIT, "%s: reply of %zu bytes exceeds the limit of %lld", c->m->path,
                 *len, (long long)c->s->o.max_send_bytes);
    return bb;
}

static aha_status send_common(aha_rpc_call *c, const ProtobufCMessage *msg, int wait,
                              aha_err *err)
{
    size_t len;
    grpc_byte_buffer *bb = pack_reply(c, msg, &len, err);
    if (!bb) return err ? err->status : AHA_EINVAL;
    pthread_mutex_lock(&c->mu);
    AHA_ASSERT(!c->finished);
    if (c->m->kind != AHA_RPC_SERVER_STREAM) {
        /* Unary replies go out with the status in one batch (one write, not two). */
        AHA_ASSERT(c->unary_reply == NULL);
        c->unary_reply = bb;
        c->bytes_out += (int64_t)len;
        pthread_mutex_unlock(&c->mu);
        return AHA_OK;
    }
    if (wait)
        while (c->send_busy) pthread_cond_wait(&c->cv, &c->mu);
    if (c->send_failed || atomic_load(&c->cancelled)) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        return aha_errf(err, AHA_ECANCELLED, "%s: call ended while sending", c->m->path);
    }
    c->bytes_out += (int64_t)len;
    if (!c->send_busy) {
        start_send(c, bb);
    } else {
        if (c->sendq_len == c->sendq_cap) {
            size_t cap = c->sendq_cap ? 2 * c->sendq_cap : 16;
            grpc_byte_buffer **q = realloc(c->sendq, cap * sizeof *q);
            if (!q) {
                pthread_mutex_unlock(&c->mu);
                grpc_byte_buffer_destroy(bb);
                return aha_errf(err, AHA_ENOMEM, "%s: out of memory for the send queue",
                                c->m->path);
            }
            c->sendq = q;
            c->sendq_cap = cap;
        }
        c->sendq[c->sendq_len++] = bb;
    }
    pthread_mutex_unlock(&c->mu);
    return AHA_OK;
}

aha_status aha_rpc_call_send(aha_rpc_call *c, const ProtobufCMessage *msg, aha_err *err)
{
    return send_common(c, msg, 1, err);
}

aha_status aha_rpc_call_send_nowait(aha_rpc_call *c, const ProtobufCMessage *msg, aha_err *err)
{
    return send_common(c, msg, 0, err);
}

size_t aha_rpc_call_send_queued(aha_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->sendq_len - c->sendq_head;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* The next raw message of a client stream: *bb NULL at its end. */
static aha_status recv_buffer(aha_rpc_call *c, grpc_byte_buffer **out, aha_err *err)
{
    AHA_ASSERT(c->m && c->m->kind == AHA_RPC_CLIENT_STREAM);
    *out = NULL;
    pthread_mutex_lock(&c->mu);
    AHA_ASSERT(!c->recv_busy && !c->finished);
    if (c->recv_ended) {
        pthread_mutex_unlock(&c->mu);
        return AHA_OK;
    }
    if (atomic_load(&c->cancelled)) {
        pthread_mutex_unlock(&c->mu);
        return aha_errf(err, AHA_ECANCELLED, "%s: call cancelled", c->m->path);
    }
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    c->recv_busy = 1;
    start_batch(c, &op, 1, &c->t_recv);
    while (c->recv_busy) pthread_cond_wait(&c->cv, &c->mu);
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    int ok = c->recv_ok;
    if (ok && !bb) c->recv_ended = 1;
    pthread_mutex_unlock(&c->mu);
    if (!ok || (!bb && atomic_load(&c->cancelled))) {
        if (bb) grpc_byte_buffer_destroy(bb);
        return aha_errf(err, AHA_ECANCELLED, "%s: call ended while receiving", c->m->path);
    }
    if (bb) c->bytes_in += (int64_t)grpc_byte_buffer_length(bb);
    *out = bb;
    return AHA_OK;
}

aha_status aha_rpc_call_recv(aha_rpc_call *c, ProtobufCMessage **out, aha_err *err)
{
    *out = NULL;
    grpc_byte_buffer *bb;
    AHA_TRY(recv_buffer(c, &bb, err));
    if (!bb) return AHA_OK;
    ProtobufCMessage *m = aha__rpc_unpack(c->m->md->input, bb);
    grpc_byte_buffer_destroy(bb);
    if (!m) return aha_errf(err, AHA_EINVAL, "cannot parse %s", c->m->md->input->name);
    *out = m;
    return AHA_OK;
}

struct aha_rpc_bytes {
    grpc_slice slice;
};

void aha_rpc_bytes_free(aha_rpc_bytes *b)
{
    if (!b) return;
    grpc_slice_unref(b->slice);
    free(b);
}

aha_status aha_rpc_call_recv_bytes(aha_rpc_call *c, unsigned field, ProtobufCMessage **out,
                                   const uint8_t **data, size_t *len, aha_rpc_bytes **hold,
                                   aha_err *err)
{
    *out = NULL;
    *data = NULL;
    *len = 0;
    *hold = NULL;
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(c->m->md->input, field);
    AHA_ASSERT(fd && fd->type == PROTOBUF_C_TYPE_BYTES && fd->label != PROTOBUF_C_LABEL_REPEATED);
    grpc_byte_buffer *bb;
    AHA_TRY(recv_buffer(c, &bb, err));
    if (!bb) return AHA_OK;
    aha_rpc_bytes *h = malloc(sizeof *h);
    if (!h) {
        grpc_byte_buffer_destroy(bb);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    h->slice = aha__rpc_flatten(bb); /* a ref when it came as one slice, else one copy */
    grpc_byte_buffer_destroy(bb);
    ProtobufCMessage *m = aha__rpc_unpack_split(c->m->md->input, GRPC_SLICE_START_PTR(h->slice),
                                                GRPC_SLICE_LENGTH(h->slice), field, data, len);
    if (!m) {
        aha_rpc_bytes_free(h);
        return aha_errf(err, AHA_EINVAL, "cannot parse %s", c->m->md->input->name);
    }
    *out = m;
    *hold = h;
    return AHA_OK;
}

int aha_rpc_call_cancelled(const aha_rpc_call *c)
{
    return atomic_load(&((aha_rpc_call *)c)->cancelled);
}

void aha_rpc_call_on_cancel(aha_rpc_call *c, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&c->mu);
    int now = atomic_load(&c->cancelled);
    if (!now) {
        c->cancel_fn = fn;
        c->cancel_arg = arg;
    }
    pthread_mutex_unlock(&c->mu);
    if (now && fn) fn(arg);
}

double aha_rpc_call_time_left(const aha_rpc_call *c)
{
    gpr_timespec d = c->deadline;
    if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0) return INFINITY;
    gpr_timespec left = gpr_time_sub(d, gpr_now(d.clock_type));
    return (double)left.tv_sec + (double)left.tv_nsec * 1e-9;
}

long aha_rpc_call_metadata(const aha_rpc_call *c, const char *key, char *buf, size_t cap)
{
    for (size_t i = 0; i < c->md.count; i++) {
        if (!aha__rpc_slice_eq(c->md.metadata[i].key, key)) continue;
        grpc_slice v = c->md.metadata[i].value;
        size_t n = GRPC_SLICE_LENGTH(v);
        if (cap > 0) {
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(buf, GRPC_SLICE_START_PTR(v), k);
            buf[k] = 0;
        }
        return (long)n;
    }
    return -1;
}

const char *aha_rpc_call_method(const aha_rpc_call *c) { return c->m ? c->m->path : ""; }

void aha_rpc_call_detach(aha_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->detached = 1;
    pthread_mutex_unlock(&c->mu);
}

void aha_rpc_call_finish(aha_rpc_call *c, aha_status st, const aha_err *err)
{
    call_finish_status(c, st, err);
}

/* ---------------------------------------------------------------------------------------- */
/* public: server lifecycle                                                                 */

void aha_rpc_server_opts_init(aha_rpc_server_opts *o)
{
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1:0";
    o->threads = 2;
    o->max_concurrent_calls = 256;
    o->max_recv_bytes = AHA__RPC_DEFAULT_MAX_BYTES;
    o->max_send_bytes = AHA__RPC_DEFAULT_MAX_BYTES;
    o->grace_ms = 5000;
    o->notice_ms = 0;
    o->summary_s = 60;
    o->name = "aha";
}

static aha_status add_entry(aha_rpc_server *s, const ProtobufCServiceDescriptor *svc,
                            const char *method, aha_rpc_kind kind, aha_rpc_handler fn,
                            void *user, int health, aha_err *err)
{
    if (s->started) return aha_errf(err, AHA_EPRECOND, "rpc: add_method after start");
    int idx = aha__rpc_find_method(svc, method);
    if (idx < 0) return aha_errf(err, AHA_EINVAL, "service %s has no method %s", svc->name, method);
    for (int i = 0; i < s->n_methods; i++)
        if (s->methods[i].md == &svc->methods[idx])
            return aha_errf(err, AHA_EEXIST, "method %s.%s added twice", svc->name, method);
    method_entry *m = realloc(s->methods, (size_t)(s->n_methods + 1) * sizeof *m);
    if (!m) return aha_errf(err, AHA_ENOMEM, "rpc: out of memory");
    s->methods = m;
    method_entry *e = &m[s->n_methods];
    memset(e, 0, sizeof *e);
    AHA_TRY(aha_rpc_method_path(svc, method, e->path, sizeof e->path, err));
    e->svc = svc;
    e->md = &svc->methods[idx];
    e->kind = kind;
    e->fn = fn;
    e->user = user;
    e->health = health;
    s->n_methods++;
    return AHA_OK;
}

aha_status aha_rpc_server_add_method(aha_rpc_server *s, const ProtobufCServiceDescriptor *svc,
                                     const char *method, aha_rpc_kind kind, aha_rpc_handler fn,
                                     void *user, aha_err *err)
{
    if (!fn) return aha_errf(err, AHA_EINVAL, "rpc: %s/%s: no handler", svc->name, method);
    if (kind != AHA_RPC_UNARY && kind != AHA_RPC_SERVER_STREAM && kind != AHA_RPC_CLIENT_STREAM)
        return aha_errf(err, AHA_EINVAL, "rpc: %s/%s: bad kind %d", svc->name, method, (int)kind);
    return add_entry(s, svc, method, kind, fn, user, 0, err);
}

static void server_auth_free(aha_rpc_server *s)
{
    for (int i = 0; i < 2; i++) free(s->auth_full[i]);
    free(s->auth_job);
    free(s->tls_ca);
    s->auth_full[0] = s->auth_full[1] = s->auth_job = s->tls_ca = NULL;
}

static aha_status bearer(const char *token, char **out, aha_err *err)
{
    *out = NULL;
    if (!token || !*token) return AHA_OK;
    size_t n = strlen(token) + 8;
    if (n > 4096) return aha_errf(err, AHA_EINVAL, "rpc: bearer token longer than 4 KiB");
    *out = malloc(n);
    if (!*out) return aha_errf(err, AHA_ENOMEM, "rpc: out of memory");
    snprintf(*out, n, "Bearer %s", token);
    return AHA_OK;
}

/* Tokens, public services and the client CA, copied from s->o. */
static aha_status server_auth_init(aha_rpc_server *s, aha_err *err)
{
    AHA_TRY(bearer(s->o.service_token, &s->auth_full[0], err));
    AHA_TRY(bearer(s->o.auth_token, &s->auth_full[1], err));
    AHA_TRY(bearer(s->o.job_token, &s->auth_job, err));
    s->auth_on = s->auth_full[0] || s->auth_full[1] || s->auth_job;
    if (s->auth_job && ((s->auth_full[0] && strcmp(s->auth_job, s->auth_full[0]) == 0) ||
                        (s->auth_full[1] && strcmp(s->auth_job, s->auth_full[1]) == 0)))
        return aha_errf(err, AHA_EINVAL, "rpc: the job token equals the service token: they "
                                         "must differ, or job clients could call everything");
    const char *p = s->o.public_services ? s->o.public_services : "aha.v1.Learner";
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 0) {
            if (s->n_publics == (int)AHA_ARRAY_LEN(s->publics) || n + 3 > MAX_PATH)
                return aha_errf(err, AHA_EINVAL, "rpc: public services: too many or too long");
            snprintf(s->publics[s->n_publics++], MAX_PATH, "/%.*s/", (int)n, p);
        }
        p += n + (e ? 1 : 0);
    }
    if (s->o.tls_client_ca_file) {
        if (!s->tls_cert)
            return aha_errf(err, AHA_EINVAL,
                            "a client CA (mutual TLS) needs a server certificate and key");
        AHA_TRY(aha__rpc_read_pem(s->o.tls_client_ca_file, &s->tls_ca, err));
    }
    return AHA_OK;
}

aha_status aha_rpc_server_create(const aha_rpc_server_opts *o, aha_rpc_server **out,
                                 aha_err *err)
{
    *out = NULL;
    aha_rpc_server *s = calloc(1, sizeof *s);
    if (!s) return aha_errf(err, AHA_ENOMEM, "rpc: out of memory");
    if (o) s->o = *o;
    else aha_rpc_server_opts_init(&s->o);
    aha_rpc_server_opts def;
    aha_rpc_server_opts_init(&def);
    if (!s->o.listen) s->o.listen = def.listen;
    if (s->o.threads < 2) s->o.threads = 2;
    if (s->o.max_concurrent_calls <= 0) s->o.max_concurrent_calls = def.max_concurrent_calls;
    if (s->o.max_recv_bytes <= 0) s->o.max_recv_bytes = def.max_recv_bytes;
    if (s->o.max_send_bytes <= 0) s->o.max_send_bytes = def.max_send_bytes;
    if (s->o.max_recv_bytes > INT32_MAX) s->o.max_recv_bytes = INT32_MAX;
    if (s->o.max_send_bytes > INT32_MAX) s->o.max_send_bytes = INT32_MAX;
    if (s->o.grace_ms < 0) s->o.grace_ms = 0;
    if (s->o.notice_ms < 0) s->o.notice_ms = 0;
    snprintf(s->name, sizeof s->name, "%s", s->o.name ? s->o.name : "aha");
    snprintf(s->listen, sizeof s->listen, "%s", s->o.listen);
    s->o.name = s->name;
    s->o.listen = s->listen;
    if ((s->o.tls_cert_file == NULL) != (s->o.tls_key_file == NULL)) {
        free(s);
        return aha_errf(err, AHA_EINVAL, "TLS needs both a certificate and a key file");
    }
    if (s->o.tls_cert_file) {
        aha_status st = aha__rpc_read_pem(s->o.tls_cert_file, &s->tls_cert, err);
        if (st == AHA_OK) st = aha__rpc_read_pem(s->o.tls_key_file, &s->tls_key, err);
        if (st != AHA_OK) {
            free(s->tls_cert);
            free(s);
            return st;
        }
    }
    s->o.tls_cert_file = s->o.tls_key_file = NULL; /* contents kept instead */
    aha_status st = server_auth_init(s, err);
    if (st != AHA_OK) {
        server_auth_free(s);
        free(s->tls_cert);
        free(s->tls_key);
        free(s);
        return st;
    }
    /* the caller's strings may go away; the copies are never logged */
    s->o.auth_token = s->o.service_token = s->o.job_token = NULL;
    s->o.public_services = s->o.tls_client_ca_file = NULL;
    sem_init(&s->stop_sem, 0, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->stats_mu, NULL);
    pthread_mutex_init(&s->pmu, NULL);
    pthread_cond_init(&s->pcv, NULL);
    atomic_store(&s->serving, 1);
    aha__rpc_acquire();
    st = add_entry(s, &grpc__health__v1__health__descriptor, "Check", AHA_RPC_UNARY, NULL, NULL,
                   1, err);
    AHA_ASSERT(st == AHA_OK);
    *out = s;
    return AHA_OK;
}

aha_status aha_rpc_server_start(aha_rpc_server *s, aha_err *err)
{
    AHA_ASSERT(!s->started);
    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)s->o.max_recv_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)s->o.max_send_bytes;
    /* gRPC turns SO_REUSEPORT on by default: a second server on a busy port would start
     * silently and steal connections. Off, binding a busy port fails. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    grpc_channel_args chargs = {.num_args = 3, .args = args};
    s->srv = grpc_server_create(&chargs, NULL);

    s->nworkers = s->o.threads;
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    s->pthreads = calloc((size_t)s->o.max_concurrent_calls, sizeof *s->pthreads);
    if (!s->workers || !s->pthreads) return aha_errf(err, AHA_ENOMEM, "rpc: out of memory");
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        w->s = s;
        w->id = i;
        w->cq = grpc_completion_queue_create_for_next(NULL);
        w->t_shutdown = (tag){T_SHUTDOWN, NULL, w};
        grpc_server_register_completion_queue(s->srv, w->cq, NULL);
    }
    for (int i = 0; i < s->n_methods; i++) {
        method_entry *m = &s->methods[i];
        m->reg = grpc_server_register_method(
            s->srv, m->path, NULL,
            m->kind == AHA_RPC_CLIENT_STREAM ? GRPC_SRM_PAYLOAD_NONE
                                             : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
        if (!m->reg) return aha_errf(err, AHA_EINTERNAL, "rpc: cannot register %s", m->path);
    }
    grpc_server_credentials *creds;
    if (s->tls_cert) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = s->tls_key, .cert_chain = s->tls_cert};
        grpc_ssl_client_certificate_request_type req =
            !s->tls_ca ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : s->o.tls_client_optional ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                       : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
        creds = grpc_ssl_server_credentials_create_ex(s->tls_ca, &pair, 1, req, NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    s->port = grpc_server_add_http2_port(s->srv, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0)
        return aha_errf(err, AHA_EUNAVAILABLE, "cannot listen on %s (address in use or invalid)",
                        s->listen);
    if (!s->tls_cert && !aha_rpc_addr_is_local(s->listen))
        AHA_WARN("%s: serving %s without TLS: anyone on the network can read the calls%s; "
                 "give --tls-cert and --tls-key outside a trusted network",
                 s->name, s->listen, s->auth_on ? " and their bearer tokens" : "");
    grpc_server_start(s->srv);
    s->started = 1;
    atomic_store(&s->workers_left, s->nworkers);
    for (int i = 0; i < s->nworkers; i++)
        if (pthread_create(&s->workers[i].thr, NULL, worker_main, &s->workers[i]) != 0)
            AHA_ASSERT(!"cannot create a completion-queue thread");
    AHA_INFO("%s: listening on %s (port %d, %s%s%s, %d CQ threads, max message %lld/%lld bytes)",
             s->name, s->listen, s->port,
             !s->tls_cert ? "plaintext"
             : !s->tls_ca ? "TLS"
             : s->o.tls_client_optional ? "TLS, client certificates verified when presented"
                                        : "mutual TLS",
             s->auth_full[0] || s->auth_full[1] ? ", service token required" : "",
             s->auth_job ? ", job token accepted on the job API" : "", s->nworkers,
             (long long)s->o.max_recv_bytes, (long long)s->o.max_send_bytes);
    return AHA_OK;
}

int aha_rpc_server_port(const aha_rpc_server *s) { return s->port; }

void aha_rpc_server_set_serving(aha_rpc_server *s, int serving)
{
    atomic_store(&s->serving, serving ? 1 : 0);
}

void aha_rpc_server_stop(aha_rpc_server *s) { sem_post(&s->stop_sem); }

void aha_rpc_server_get_stats(aha_rpc_server *s, aha_rpc_server_stats *out)
{
    pthread_mutex_lock(&s->stats_mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->stats_mu);
}

static void log_summary(aha_rpc_server *s, const char *when)
{
    aha_rpc_server_stats st;
    aha_rpc_server_get_stats(s, &st);
    AHA_INFO("%s: %s: %llu requests, %llu errors, %llu cancelled, mean latency %.3f ms", s->name,
             when, (unsigned long long)st.requests, (unsigned long long)st.errors,
             (unsigned long long)st.cancelled,
             st.requests ? st.latency_sum_s / (double)st.requests * 1e3 : 0.0);
}

/* sem_timedwait until now + sec (CLOCK_REALTIME, as sem_timedwait wants). 1 if posted. */
static int sem_wait_for(sem_t *sem, double sec)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + (sec > 0 ? sec : 0);
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
    for (;;) {
        if (sem_timedwait(sem, &ts) == 0) return 1;
        if (errno != EINTR) return 0;
    }
}

static void cancel_everything(aha_rpc_server *s)
{
    grpc_server_cancel_all_calls(s->srv);
    /* Handlers poll the flag; calls still waiting for a thread see it too. */
    pthread_mutex_lock(&s->mu);
    int n = 0;
    for (aha_rpc_call *c = s->live; c; c = c->next) n++;
    aha_rpc_call **v = n ? calloc((size_t)n, sizeof *v) : NULL;
    int k = 0;
    if (v)
        for (aha_rpc_call *c = s->live; c; c = c->next) {
            pthread_mutex_lock(&c->mu);
            /* refs == 0: being freed right now (waiting for s->mu to unlink itself) */
            int alive = c->refs > 0;
            if (alive) c->refs++; /* keep it alive outside s->mu */
            pthread_mutex_unlock(&c->mu);
            if (alive) v[k++] = c;
        }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < k; i++) {
        mark_cancelled(v[i]);
        call_unref(v[i]);
    }
    free(v);
}

static int live_calls(aha_rpc_server *s)
{
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (aha_rpc_call *c = s->live; c; c = c->next) n++;
    pthread_mutex_unlock(&s->mu);
    return n;
}

aha_status aha_rpc_server_wait(aha_rpc_server *s, aha_err *err)
{
    AHA_ASSERT(s->started);
    if (s->joined) return AHA_OK;
    double next_summary = s->o.summary_s > 0 ? aha_now_s() + s->o.summary_s : INFINITY;
    uint64_t last_requests = 0;
    for (;;) {
        double wait = isfinite(next_summary) ? next_summary - aha_now_s() : 3600.0;
        if (sem_wait_for(&s->stop_sem, wait)) break;
        if (aha_now_s() >= next_summary) {
            aha_rpc_server_stats st;
            aha_rpc_server_get_stats(s, &st);
            if (st.requests != last_requests) log_summary(s, "summary");
            last_requests = st.requests;
            next_summary = aha_now_s() + s->o.summary_s;
        }
    }
    AHA_INFO("%s: draining (notice %d ms, grace %d ms)", s->name, s->o.notice_ms, s->o.grace_ms);
    atomic_store(&s->serving, 0);
    int hard = 0;
    if (s->o.notice_ms > 0) hard = sem_wait_for(&s->stop_sem, s->o.notice_ms * 1e-3);
    atomic_store(&s->stopping, 1);
    for (int i = 0; i < s->nworkers; i++)
        grpc_server_shutdown_and_notify(s->srv, s->workers[i].cq, &s->workers[i].t_shutdown);
    double end = aha_now_s() + s->o.grace_ms * 1e-3;
    while (!hard && atomic_load(&s->workers_left) > 0 && aha_now_s() < end)
        hard = sem_wait_for(&s->stop_sem, 0.02);
    if (atomic_load(&s->workers_left) > 0) {
        AHA_INFO("%s: %s: cancelling %d calls", s->name, hard ? "second stop" : "grace over",
                 live_calls(s));
        cancel_everything(s);
        double end2 = aha_now_s() + (s->o.grace_ms > 1000 ? s->o.grace_ms : 1000) * 1e-3;
        while (atomic_load(&s->workers_left) > 0 && aha_now_s() < end2) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (atomic_load(&s->workers_left) > 0) {
            s->wait_failed = 1;
            return aha_errf(err, AHA_ETIMEOUT,
                            "%s: %d calls still running after cancellation (handlers ignore it)",
                            s->name, live_calls(s));
        }
    }
    for (int i = 0; i < s->nworkers; i++) pthread_join(s->workers[i].thr, NULL);
    s->joined = 1;
    log_summary(s, "stopped");
    return AHA_OK;
}

static aha_rpc_server *g_signal_server;

static void on_signal(int sig)
{
    (void)sig;
    if (g_signal_server) aha_rpc_server_stop(g_signal_server);
}

aha_status aha_rpc_server_run(aha_rpc_server *s, aha_err *err)
{
    struct sigaction sa, old_term, old_int;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    g_signal_server = s;
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);
    aha_status st = aha_rpc_server_wait(s, err);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    g_signal_server = NULL;
    return st;
}

void aha_rpc_server_free(aha_rpc_server *s)
{
    if (!s) return;
    if (s->started && !s->joined) {
        /* A server freed while running drains first (tests, error paths in main). */
        aha_rpc_server_stop(s);
        aha_err err;
        if (aha_rpc_server_wait(s, &err) != AHA_OK) {
            AHA_ERROR("%s", err.msg);
            return; /* threads still use it: leak rather than crash */
        }
    }
    if (s->wait_failed) return;
    if (s->srv) grpc_server_destroy(s->srv);
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        if (!w->cq) continue;
        grpc_completion_queue_shutdown(w->cq);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        }
        grpc_completion_queue_destroy(w->cq);
    }
    pthread_mutex_lock(&s->pmu);
    s->pexit = 1;
    pthread_cond_broadcast(&s->pcv);
    pthread_mutex_unlock(&s->pmu);
    for (int i = 0; i < s->npthreads; i++) pthread_join(s->pthreads[i], NULL);
    free(s->pthreads);
    free(s->workers);
    free(s->methods);
    free(s->tls_cert);
    free(s->tls_key);
    server_auth_free(s);
    sem_destroy(&s->stop_sem);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->stats_mu);
    pthread_mutex_destroy(&s->pmu);
    pthread_cond_destroy(&s->pcv);
    free(s);
    aha__rpc_release();
}
