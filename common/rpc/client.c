/* client.c: blocking gRPC client calls over the C core (see rpc.h).
 *
 * Every call owns a pluck completion queue and plucks exactly the tags of its own batches,
 * so any number of threads can share one channel. Unary calls and server streams that have
 * not yet delivered a message are retried on UNAVAILABLE with exponential backoff (±25 %
 * jitter) while the call's deadline allows; anything that may already have had an effect
 * on the server (a stream that delivered data, an upload) is not retried. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "base/fs.h"
#include "base/rng.h"
#include "rpc_internal.h"

#define MAX_PATH 256

enum { TAG_START = 1, TAG_MSG, TAG_SEND, TAG_STATUS };

typedef struct {
    char path[MAX_PATH];
    void *handle;
} reg_entry;

struct aha_rpc_channel {
    grpc_channel *ch;
    aha_rpc_channel_opts o;
    char auth[1024]; /* "Bearer <token>" or "" */
    pthread_mutex_t mu;
    reg_entry *regs;
    int nregs;
};

struct aha_rpc_stream {
    aha_rpc_channel *ch;
    char path[MAX_PATH];
    void *reg;
    const ProtobufCMessageDescriptor *out_desc; /* reply type */
    aha_rpc_call_opts *opts;
    int attempts;
    gpr_timespec deadline;
    grpc_completion_queue *cq;
    pthread_mutex_t mu; /* the call pointer vs. cancel from another thread */
    grpc_call *call;
    atomic_int cancelled;
    grpc_metadata *md;
    size_t nmd;
    grpc_metadata_array imd, tmd;
    grpc_byte_buffer *req; /* server stream: kept for retries until a message arrived */
    int got_any, ended, send_busy, send_failed, imd_done;
    grpc_byte_buffer *send_bb;
    /* upload_send_bytes: gRPC still holds the caller's bytes (released by its slice) */
    pthread_mutex_t lent_mu;
    pthread_cond_t lent_cv;
    int lent;
    aha_status end_status;
    aha_err end_err;
};

/* ---------------------------------------------------------------------------------------- */

void aha_rpc_channel_opts_init(aha_rpc_channel_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_recv_bytes = AHA__RPC_DEFAULT_MAX_BYTES;
    o->max_send_bytes = AHA__RPC_DEFAULT_MAX_BYTES;
    o->attempts = 5;
    o->backoff_initial_ms = 50;
    o->backoff_max_ms = 2000;
}

aha_status aha_rpc_channel_create(const char *target, const aha_rpc_channel_opts *o,
                                  aha_rpc_channel **out, aha_err *err)
{
    *out = NULL;
    if (!target || !*target) return aha_errf(err, AHA_EINVAL, "rpc: empty target address");
    aha_rpc_channel *c = calloc(1, sizeof *c);
    if (!c) return aha_errf(err, AHA_ENOMEM, "rpc: out of memory");
    aha_rpc_channel_opts def;
    aha_rpc_channel_opts_init(&def);
    c->o = o ? *o : def;
    if (c->o.max_recv_bytes <= 0 || c->o.max_recv_bytes > INT32_MAX)
        c->o.max_recv_bytes = c->o.max_recv_bytes > INT32_MAX ? INT32_MAX : def.max_recv_bytes;
    if (c->o.max_send_bytes <= 0 || c->o.max_send_bytes > INT32_MAX)
        c->o.max_send_bytes = c->o.max_send_bytes > INT32_MAX ? INT32_MAX : def.max_send_bytes;
    if (c->o.attempts <= 0) c->o.attempts = def.attempts;
    if (c->o.backoff_initial_ms <= 0) c->o.backoff_initial_ms = def.backoff_initial_ms;
    if (c->o.backoff_max_ms < c->o.backoff_initial_ms)
        c->o.backoff_max_ms = c->o.backoff_initial_ms;
    if (c->o.bearer_token && *c->o.bearer_token) {
        int n = snprintf(c->auth, sizeof c->auth, "Bearer %s", c->o.bearer_token);
        if (n < 0 || (size_t)n >= sizeof c->auth) {
            free(c);
            return aha_errf(err, AHA_EINVAL, "rpc: bearer token too long");
        }
    }
    c->o.bearer_token = NULL; /* copied into auth; the caller's string may go away */

    grpc_channel_credentials *creds;
    if (c->o.tls_ca_file) {
        char *pem = NULL;
        aha_status st = aha__rpc_read_pem(c->o.tls_ca_file, &pem, err);
        if (st != AHA_OK) {
            free(c);
            return st;
        }
        /* mutual TLS: the client's own certificate, for servers started with a client CA */
        char *cert = NULL, *key = NULL;
        if ((c->o.tls_cert_file == NULL) != (c->o.tls_key_file == NULL))
            st = aha_errf(err, AHA_EINVAL, "rpc: a client certificate needs both cert and key");
        if (st == AHA_OK && c->o.tls_cert_file) {
            st = aha__rpc_read_pem(c->o.tls_cert_file, &cert, err);
            if (st == AHA_OK) st = aha__rpc_read_pem(c->o.tls_key_file, &key, err);
        }
        if (st != AHA_OK) {
            free(pem);
            free(cert);
            free(key);
            free(c);
            return st;
        }
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        aha__rpc_acquire();
        creds = grpc_ssl_credentials_create(pem, cert ? &pair : NULL, NULL, NULL);
        free(pem);
        free(cert);
        free(key);
    } else {
        aha__rpc_acquire();
        creds = grpc_insecure_credentials_create();
    }
    grpc_arg args[7];
    memset(args, 0, sizeof args);
    int na = 0;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[na++].value.integer = (int)c->o.max_recv_bytes;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[na++].value.integer = (int)c->o.max_send_bytes;
    /* aha retries UNAVAILABLE itself (with the caller's attempt budget); gRPC's own retry
     * machinery would hide attempts and buffer whole uploads. */
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_ENABLE_RETRIES;
    args[na++].value.integer = 0;
    /* Reconnect on the same schedule as the retries: gRPC's default (1 s, growing to 120 s)
     * keeps a channel failing fast long after a restarted service is back. */
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[na++].value.integer = c->o.backoff_initial_ms;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[na++].value.integer = c->o.backoff_initial_ms;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[na++].value.integer = c->o.backoff_max_ms;
    if (c->o.tls_server_name) {
        args[na].type = GRPC_ARG_STRING;
        args[na].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[na++].value.string = (char *)c->o.tls_server_name;
    }
    grpc_channel_args chargs = {.num_args = (size_t)na, .args = args};
    c->ch = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    c->o.tls_ca_file = c->o.tls_server_name = c->o.tls_cert_file = c->o.tls_key_file = NULL;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return AHA_OK;
}

void aha_rpc_channel_free(aha_rpc_channel *c)
{
    if (!c) return;
    grpc_channel_destroy(c->ch);
    free(c->regs);
    pthread_mutex_destroy(&c->mu);
    free(c);
    aha__rpc_release();
}

/* The registered-call handle of path (registered once per channel: saves re-interning the
 * path on every call). */
static void *channel_reg(aha_rpc_channel *c, const char *path)
{
    void *h = NULL;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nregs; i++)
        if (strcmp(c->regs[i].path, path) == 0) h = c->regs[i].handle;
    if (!h) {
        reg_entry *r = realloc(c->regs, (size_t)(c->nregs + 1) * sizeof *r);
        AHA_ASSERT(r != NULL);
        c->regs = r;
        snprintf(r[c->nregs].path, MAX_PATH, "%s", path);
        h = r[c->nregs].handle = grpc_channel_register_call(c->ch, r[c->nregs].path, NULL, NULL);
        c->nregs++;
    }
    pthread_mutex_unlock(&c->mu);
    return h;
}

static grpc_metadata *build_md(aha_rpc_channel *c, const aha_rpc_call_opts *o, size_t *n)
{
    size_t extra = o ? o->n_metadata : 0;
    size_t total = extra + (c->auth[0] ? 1 : 0);
    *n = total;
    if (!total) return NULL;
    grpc_metadata *md = calloc(total, sizeof *md);
    AHA_ASSERT(md != NULL);
    size_t k = 0;
    if (c->auth[0]) {
        md[k].key = grpc_slice_from_static_string("authorization");
        md[k++].value = grpc_slice_from_copied_string(c->auth);
    }
    for (size_t i = 0; i < extra; i++) {
        md[k].key = grpc_slice_from_copied_string(o->metadata[i].key);
        md[k++].value = grpc_slice_from_copied_string(o->metadata[i].value);
    }
    return md;
}

static void free_md(grpc_metadata *md, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        grpc_slice_unref(md[i].key);
        grpc_slice_unref(md[i].value);
    }
    free(md);
}

static void pluck(grpc_completion_queue *cq, intptr_t t, int *ok)
{
    grpc_event ev =
        grpc_completion_queue_pluck(cq, (void *)t, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    AHA_ASSERT(ev.type == GRPC_OP_COMPLETE);
    if (ok) *ok = ev.success;
}

static void start(grpc_call *call, const grpc_op *ops, size_t n, intptr_t t)
{
    grpc_call_error e = grpc_call_start_batch(call, ops, n, (void *)t, NULL);
    AHA_ASSERT(e == GRPC_CALL_OK);
}

static void cq_free(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq); /* pluck CQ with every tag plucked: nothing to drain */
}

static aha_status status_of(const char *path, int code, grpc_slice details, aha_err *err)
{
    if (code == 0) return AHA_OK;
    char *d = grpc_slice_to_c_string(details);
    aha_status st = aha_errf(err, aha_rpc_status_from_code(code), "%s: %s: %s", path,
                             aha_rpc_code_name(code), d);
    gpr_free(d);
    return st;
}

static int attempts_of(aha_rpc_channel *c, const aha_rpc_call_opts *o)
{
    return o && o->attempts > 0 ? o->attempts : c->o.attempts;
}

/* Sleep before retry number k (1-based); 0 when the deadline leaves no room. */
static int backoff(aha_rpc_channel *c, int k, gpr_timespec deadline)
{
    double d = c->o.backoff_initial_ms * pow(2.0, k - 1);
    if (d > c->o.backoff_max_ms) d = c->o.backoff_max_ms;
    aha_rng rng;
    aha_rng_seed(&rng, (uint64_t)(aha_wall_s() * 1e9), (uint64_t)(uintptr_t)&rng);
    d *= 0.75 + 0.5 * aha_rng_f64(&rng);
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) != 0) {
        gpr_timespec left = gpr_time_sub(deadline, gpr_now(deadline.clock_type));
        double left_ms = (double)left.tv_sec * 1e3 + (double)left.tv_nsec * 1e-6;
        if (left_ms <= d) return 0;
    }
    struct timespec ts = {(time_t)(d / 1e3), (long)(fmod(d, 1e3) * 1e6)};
    nanosleep(&ts, NULL);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* unary                                                                                    */

/* One attempt; returns the gRPC code, *reply the message (or NULL). */
static int unary_once(aha_rpc_channel *c, void *reg, grpc_byte_buffer *req, gpr_timespec dl,
                      const aha_rpc_call_opts *o, grpc_byte_buffer **reply, grpc_slice *details)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = grpc_channel_create_registered_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS,
                                                          cq, reg, dl, NULL);
    size_t nmd;
    grpc_metadata *md = build_md(c, o, &nmd);
    grpc_metadata_array imd, tmd;
    grpc_metadata_array_init(&imd);
    grpc_metadata_array_init(&tmd);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = o && o->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &imd;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = reply;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tmd;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = details;
    start(call, ops, 6, TAG_START);
    pluck(cq, TAG_START, NULL); /* with RECV_STATUS in the batch it always "succeeds" */
    grpc_metadata_array_destroy(&imd);
    grpc_metadata_array_destroy(&tmd);
    free_md(md, nmd);
    grpc_call_unref(call);
    cq_free(cq);
    return (int)code;
}

static aha_status unary_bb(aha_rpc_channel *c, const char *path, grpc_byte_buffer *req,
                           grpc_byte_buffer **reply, aha_rpc_call_opts *o, aha_err *err)
{
    void *reg = channel_reg(c, path);
    gpr_timespec dl = aha__rpc_deadline(o ? o->timeout_ms : 0);
    int attempts = attempts_of(c, o);
    aha_status st = AHA_OK;
    for (int k = 1;; k++) {
        grpc_slice details = grpc_empty_slice();
        *reply = NULL;
        /* A send takes the slices out of its byte buffer: every attempt gets a copy
         * (the copy only refs the slices). */
        grpc_byte_buffer *copy = grpc_byte_buffer_copy(req);
        int code = unary_once(c, reg, copy, dl, o, reply, &details);
        grpc_byte_buffer_destroy(copy);
        if (o) o->code = code;
        st = status_of(path, code, details, err);
        grpc_slice_unref(details);
        if (code == GRPC_STATUS_OK && !*reply) {
            if (o) o->code = GRPC_STATUS_INTERNAL;
            st = aha_errf(err, AHA_EINTERNAL, "%s: OK without a reply message", path);
        }
        if (code != GRPC_STATUS_OK && *reply) {
            grpc_byte_buffer_destroy(*reply);
            *reply = NULL;
        }
        if (code != GRPC_STATUS_UNAVAILABLE || k >= attempts || !backoff(c, k, dl)) break;
    }
    return st;
}

aha_status aha_rpc_unary(aha_rpc_channel *c, const ProtobufCServiceDescriptor *svc,
                         const char *method, const ProtobufCMessage *req,
                         ProtobufCMessage **resp, aha_rpc_call_opts *o, aha_err *err)
{
    *resp = NULL;
    char path[MAX_PATH];
    AHA_TRY(aha_rpc_method_path(svc, method, path, sizeof path, err));
    const ProtobufCMethodDescriptor *md = &svc->methods[aha__rpc_find_method(svc, method)];
    AHA_ASSERT(req->descriptor == md->input);
    size_t len;
    grpc_byte_buffer *bb = aha__rpc_pack(req, c->o.max_send_bytes, &len);
    if (!bb) {
        if (o) o->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        return aha_errf(err, AHA_ELIMIT, "%s: request of %zu bytes exceeds the limit of %lld",
                        path, len, (long long)c->o.max_send_bytes);
    }
    grpc_byte_buffer *reply = NULL;
    aha_status st = unary_bb(c, path, bb, &reply, o, err);
    grpc_byte_buffer_destroy(bb);
    if (st != AHA_OK) return st;
    *resp = aha__rpc_unpack(md->output, reply);
    grpc_byte_buffer_destroy(reply);
    if (!*resp) {
        if (o) o->code = GRPC_STATUS_INTERNAL;
        return aha_errf(err, AHA_EFORMAT, "%s: cannot parse the reply as %s", path,
                        md->output->name);
    }
    return AHA_OK;
}

aha_status aha_rpc_unary_raw(aha_rpc_channel *c, const char *path, const void *req,
                             size_t req_len, void **resp, size_t *resp_len,
                             aha_rpc_call_opts *o, aha_err *err)
{
    *resp = NULL;
    *resp_len = 0;
    grpc_slice s = grpc_slice_from_copied_buffer(req, req_len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_byte_buffer *reply = NULL;
    aha_status st = unary_bb(c, path, bb, &reply, o, err);
    grpc_byte_buffer_destroy(bb);
    if (st != AHA_OK) return st;
    grpc_slice all = aha__rpc_flatten(reply);
    grpc_byte_buffer_destroy(reply);
    size_t n = GRPC_SLICE_LENGTH(all);
    *resp = malloc(n ? n : 1);
    AHA_ASSERT(*resp != NULL);
    memcpy(*resp, GRPC_SLICE_START_PTR(all), n);
    *resp_len = n;
    grpc_slice_unref(all);
    return AHA_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* streams                                                                                  */

static aha_status stream_new(aha_rpc_channel *c, const ProtobufCServiceDescriptor *svc,
                             const char *method, int want_out, aha_rpc_call_opts *o,
                             aha_rpc_stream **out, aha_err *err)
{
    *out = NULL;
    aha_rpc_stream *s = calloc(1, sizeof *s);
    if (!s) return aha_errf(err, AHA_ENOMEM, "rpc: out of memory");
    aha_status st = aha_rpc_method_path(svc, method, s->path, sizeof s->path, err);
    if (st != AHA_OK) {
        free(s);
        return st;
    }
    s->ch = c;
    s->reg = channel_reg(c, s->path);
    s->out_desc = want_out ? svc->methods[aha__rpc_find_method(svc, method)].output : NULL;
    s->opts = o;
    s->attempts = attempts_of(c, o);
    s->deadline = aha__rpc_deadline(o ? o->timeout_ms : 0);
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->md = build_md(c, o, &s->nmd);
    grpc_metadata_array_init(&s->imd);
    grpc_metadata_array_init(&s->tmd);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->lent_mu, NULL);
    pthread_cond_init(&s->lent_cv, NULL);
    *out = s;
    return AHA_OK;
}

/* Called by gRPC (any thread) when it drops its last reference to lent bytes. */
static void lent_released(void *arg)
{
    aha_rpc_stream *s = arg;
    pthread_mutex_lock(&s->lent_mu);
    s->lent--;
    pthread_cond_broadcast(&s->lent_cv);
    pthread_mutex_unlock(&s->lent_mu);
}

/* The caller's bytes may be reused only once gRPC let go of them, which is after the send
 * completed (the transport still holds the slice until it is written out). Writing needs
 * a thread polling this call's CQ, so poll it rather than sleep. cq NULL: after the call
 * is gone, only gRPC's own threads are left to release it. */
static void wait_lent(aha_rpc_stream *s, grpc_completion_queue *cq)
{
    for (;;) {
        pthread_mutex_lock(&s->lent_mu);
        int lent = s->lent;
        if (lent > 0 && !cq) pthread_cond_wait(&s->lent_cv, &s->lent_mu);
        pthread_mutex_unlock(&s->lent_mu);
        if (lent == 0) return;
        if (cq) { /* a tag nobody posts: a 5 ms poll of the call's sockets */
            grpc_event ev = grpc_completion_queue_pluck(cq, (void *)(intptr_t)-1,
                                                        aha__rpc_deadline(5), NULL);
            AHA_ASSERT(ev.type == GRPC_QUEUE_TIMEOUT);
        }
    }
}

/* Create the call and start its opening batch; req NULL for uploads. */
static void stream_begin(aha_rpc_stream *s, grpc_byte_buffer *req)
{
    grpc_call *call = grpc_channel_create_registered_call(
        s->ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, s->reg, s->deadline, NULL);
    pthread_mutex_lock(&s->mu);
    s->call = call;
    if (atomic_load(&s->cancelled)) grpc_call_cancel(call, NULL);
    pthread_mutex_unlock(&s->mu);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].flags = s->opts && s->opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[n].data.send_initial_metadata.count = s->nmd;
    ops[n++].data.send_initial_metadata.metadata = s->md;
    grpc_byte_buffer *copy = NULL;
    if (req) {
        copy = grpc_byte_buffer_copy(req); /* kept intact for a retry (see unary_bb) */
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = copy;
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    }
    start(call, ops, n, TAG_START);
    pluck(s->cq, TAG_START, NULL);
    if (copy) grpc_byte_buffer_destroy(copy);
}

/* Receive the final status (after the message stream ended or a send failed). */
static aha_status stream_status(aha_rpc_stream *s, aha_err *err)
{
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->tmd;
    op.data.recv_status_on_client.status = &code;
    op.data.recv_status_on_client.status_details = &details;
    start(s->call, &op, 1, TAG_STATUS);
    pluck(s->cq, TAG_STATUS, NULL);
    if (s->opts) s->opts->code = (int)code;
    aha_status st = status_of(s->path, (int)code, details, err);
    grpc_slice_unref(details);
    return st;
}

static void stream_drop_call(aha_rpc_stream *s)
{
    pthread_mutex_lock(&s->mu);
    grpc_call *call = s->call;
    s->call = NULL;
    pthread_mutex_unlock(&s->mu);
    if (call) grpc_call_unref(call);
    grpc_metadata_array_destroy(&s->imd);
    grpc_metadata_array_destroy(&s->tmd);
    grpc_metadata_array_init(&s->imd);
    grpc_metadata_array_init(&s->tmd);
    s->imd_done = 0;
}

aha_status aha_rpc_stream_open(aha_rpc_channel *c, const ProtobufCServiceDescriptor *svc,
                               const char *method, const ProtobufCMessage *req,
                               aha_rpc_call_opts *o, aha_rpc_stream **out, aha_err *err)
{
    aha_rpc_stream *s;
    AHA_TRY(stream_new(c, svc, method, 1, o, &s, err));
    AHA_ASSERT(req->descriptor == svc->methods[aha__rpc_find_method(svc, method)].input);
    size_t len;
    s->req = aha__rpc_pack(req, c->o.max_send_bytes, &len);
    if (!s->req) {
        aha_rpc_stream_free(s);
        if (o) o->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        return aha_errf(err, AHA_ELIMIT, "%s: request of %zu bytes exceeds the limit of %lld",
                        s->path, len, (long long)c->o.max_send_bytes);
    }
    stream_begin(s, s->req);
    *out = s;
    return AHA_OK;
}

aha_status aha_rpc_stream_next(aha_rpc_stream *s, ProtobufCMessage **msg, aha_err *err)
{
    *msg = NULL;
    AHA_ASSERT(s->out_desc && s->req);
    if (s->ended) {
        if (s->end_status != AHA_OK && err) *err = s->end_err;
        return s->end_status;
    }
    for (int k = 1;; k++) {
        grpc_byte_buffer *bb = NULL;
        grpc_op ops[2];
        memset(ops, 0, sizeof ops);
        size_t n = 0;
        if (!s->imd_done) { /* messages are only delivered after the initial metadata */
            ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
            ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
            s->imd_done = 1;
        }
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &bb;
        start(s->call, ops, n, TAG_MSG);
        int ok;
        pluck(s->cq, TAG_MSG, &ok);
        if (ok && bb) {
            s->got_any = 1;
            ProtobufCMessage *m = aha__rpc_unpack(s->out_desc, bb);
            grpc_byte_buffer_destroy(bb);
            if (!m) {
                aha_rpc_stream_cancel(s);
                aha_err e2;
                stream_status(s, &e2);
                if (s->opts) s->opts->code = GRPC_STATUS_INTERNAL;
                s->ended = 1;
                s->end_status = aha_errf(&s->end_err, AHA_EFORMAT, "%s: cannot parse a %s",
                                         s->path, s->out_desc->name);
                if (err) *err = s->end_err;
                return s->end_status;
            }
            *msg = m;
            return AHA_OK;
        }
        if (bb) grpc_byte_buffer_destroy(bb);
        aha_status st = stream_status(s, &s->end_err);
        if (st == AHA_EUNAVAILABLE && !s->got_any && !atomic_load(&s->cancelled) &&
            k < s->attempts &&
            backoff(s->ch, k, s->deadline)) {
            stream_drop_call(s);
            stream_begin(s, s->req);
            continue;
        }
        s->ended = 1;
        s->end_status = st;
        if (st != AHA_OK && err) *err = s->end_err;
        return st;
    }
}

aha_status aha_rpc_upload_open(aha_rpc_channel *c, const ProtobufCServiceDescriptor *svc,
                               const char *method, aha_rpc_call_opts *o, aha_rpc_stream **out,
                               aha_err *err)
{
    aha_rpc_stream *s;
    AHA_TRY(stream_new(c, svc, method, 1, o, &s, err));
    stream_begin(s, NULL);
    *out = s;
    return AHA_OK;
}

/* Wait for the send in flight; 0 when it failed (the server ended the call). */
static int upload_wait_send(aha_rpc_stream *s)
{
    if (!s->send_busy) return !s->send_failed;
    int ok;
    pluck(s->cq, TAG_SEND, &ok);
    s->send_busy = 0;
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    /* After a failed send gRPC writes nothing more, so the caller may reuse its bytes at
     * once; the release callback (which touches only s) is awaited in stream_free. */
    if (ok) wait_lent(s, s->cq);
    if (!ok) s->send_failed = 1;
    return ok;
}

static aha_status upload_send_bb(aha_rpc_stream *s, grpc_byte_buffer *bb, aha_err *err);

aha_status aha_rpc_upload_send(aha_rpc_stream *s, const ProtobufCMessage *msg, aha_err *err)
{
    AHA_ASSERT(!s->req && !s->ended);
    /* Serialise the next chunk while the previous one is still being written. */
    size_t len;
    grpc_byte_buffer *bb = aha__rpc_pack(msg, s->ch->o.max_send_bytes, &len);
    if (!bb)
        return aha_errf(err, AHA_ELIMIT, "%s: message of %zu bytes exceeds the limit of %lld",
                        s->path, len, (long long)s->ch->o.max_send_bytes);
    return upload_send_bb(s, bb, err);
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

aha_status aha_rpc_upload_send_bytes(aha_rpc_stream *s, const ProtobufCMessage *msg,
                                     unsigned field, const void *data, size_t len, aha_err *err)
{
    AHA_ASSERT(!s->req && !s->ended);
    const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(msg->descriptor,
                                                                                 field);
    AHA_ASSERT(fd && fd->type == PROTOBUF_C_TYPE_BYTES && fd->label != PROTOBUF_C_LABEL_REPEATED);
    AHA_ASSERT(((const ProtobufCBinaryData *)((const char *)msg + fd->offset))->len == 0);
    /* The rest of the message, then the field's key and length, then the caller's bytes as
     * a slice that refers to them: fields may come in any order on the wire. */
    size_t rest = protobuf_c_message_get_packed_size(msg);
    size_t total = rest + 20 + len;
    if ((int64_t)total > s->ch->o.max_send_bytes)
        return aha_errf(err, AHA_ELIMIT, "%s: message of %zu bytes exceeds the limit of %lld",
                        s->path, total, (long long)s->ch->o.max_send_bytes);
    /* The previous message (and the bytes it lent) must be gone before new bytes are lent:
     * wait_lent counts every lent slice of the stream. */
    if (!upload_wait_send(s))
        return aha_errf(err, AHA_EUNAVAILABLE, "%s: the server ended the call", s->path);
    grpc_slice head = grpc_slice_malloc(rest + 20);
    uint8_t *p = GRPC_SLICE_START_PTR(head);
    size_t n = protobuf_c_message_pack(msg, p);
    AHA_ASSERT(n == rest);
    n += put_varint(p + n, ((uint64_t)field << 3) | 2);
    n += put_varint(p + n, len);
    head = grpc_slice_sub_no_ref(head, 0, n);
    grpc_slice slices[2];
    size_t ns = 0;
    slices[ns++] = head;
    if (len) {
        pthread_mutex_lock(&s->lent_mu);
        s->lent++;
        pthread_mutex_unlock(&s->lent_mu);
        slices[ns++] = grpc_slice_new_with_user_data((void *)data, len, lent_released, s);
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, ns);
    for (size_t i = 0; i < ns; i++) grpc_slice_unref(slices[i]);
    aha_status st = upload_send_bb(s, bb, err);
    return st;
}

static aha_status upload_send_bb(aha_rpc_stream *s, grpc_byte_buffer *bb, aha_err *err)
{
    if (!upload_wait_send(s)) {
        grpc_byte_buffer_destroy(bb);
        return aha_errf(err, AHA_EUNAVAILABLE, "%s: the server ended the call", s->path);
    }
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    s->send_bb = bb;
    s->send_busy = 1;
    start(s->call, &op, 1, TAG_SEND);
    return AHA_OK;
}

aha_status aha_rpc_upload_finish(aha_rpc_stream *s, ProtobufCMessage **resp, aha_err *err)
{
    *resp = NULL;
    AHA_ASSERT(!s->req && !s->ended);
    s->ended = 1;
    grpc_byte_buffer *reply = NULL;
    if (upload_wait_send(s)) {
        grpc_op ops[3];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[1].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
        ops[2].op = GRPC_OP_RECV_MESSAGE;
        ops[2].data.recv_message.recv_message = &reply;
        start(s->call, ops, 3, TAG_MSG);
        pluck(s->cq, TAG_MSG, NULL);
    }
    aha_status st = stream_status(s, err);
    if (st == AHA_OK && !reply) {
        if (s->opts) s->opts->code = GRPC_STATUS_INTERNAL;
        st = aha_errf(err, AHA_EINTERNAL, "%s: OK without a reply message", s->path);
    }
    if (st == AHA_OK) {
        *resp = aha__rpc_unpack(s->out_desc, reply);
        if (!*resp) {
            if (s->opts) s->opts->code = GRPC_STATUS_INTERNAL;
            st = aha_errf(err, AHA_EFORMAT, "%s: cannot parse the reply as %s", s->path,
                          s->out_desc->name);
        }
    }
    if (reply) grpc_byte_buffer_destroy(reply);
    s->end_status = st;
    return st;
}

void aha_rpc_stream_cancel(aha_rpc_stream *s)
{
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->cancelled, 1);
    if (s->call) grpc_call_cancel(s->call, NULL);
    pthread_mutex_unlock(&s->mu);
}

void aha_rpc_stream_free(aha_rpc_stream *s)
{
    if (!s) return;
    if (s->call) {
        int need_status = !s->ended;
        if (need_status) aha_rpc_stream_cancel(s);
        upload_wait_send(s);
        if (need_status) {
            aha_err e;
            stream_status(s, &e);
        }
    }
    stream_drop_call(s);
    grpc_metadata_array_destroy(&s->imd);
    grpc_metadata_array_destroy(&s->tmd);
    if (s->req) grpc_byte_buffer_destroy(s->req);
    free_md(s->md, s->nmd);
    cq_free(s->cq);
    wait_lent(s, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->lent_mu);
    pthread_cond_destroy(&s->lent_cv);
    free(s);
}
