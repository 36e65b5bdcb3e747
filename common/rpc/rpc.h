/* rpc.h: the gRPC layer every aha service and client uses (gRPC C core 1.51 + protobuf-c).
 *
 * SERVER
 *   aha_rpc_server_create(opts) → aha_rpc_server_add_method(...) for each method →
 *   aha_rpc_server_start() → aha_rpc_server_run() (blocks; SIGTERM/SIGINT drain it) or
 *   aha_rpc_server_stop() + aha_rpc_server_wait() → aha_rpc_server_free().
 *   grpc.health.v1.Health/Check is built in: SERVING while running, NOT_SERVING from the
 *   moment a drain starts (or after aha_rpc_server_set_serving(s, 0)). Calls to methods that
 *   were not added are answered UNIMPLEMENTED.
 *
 * Threading model (server)
 *   - `threads` completion-queue (CQ) threads (at least 2) only move events: they accept
 *     calls, parse nothing and never run a handler. Keeping them free of user work is what
 *     keeps sockets read while streams are written (see shared/notes/grpc-core-c.md 8.1).
 *   - Every accepted call gets a handler thread from a pool that grows on demand up to
 *     `max_concurrent_calls` (calls beyond that are answered RESOURCE_EXHAUSTED). The
 *     handler may block as long as it likes: CPU or GPU work, waiting for an engine, etc.
 *     The request message is parsed on that thread; a request that does not parse gets
 *     INVALID_ARGUMENT without the handler being called.
 *   - aha_rpc_call_send / aha_rpc_call_recv block the calling thread and may be called from
 *     any thread (for instance a decode thread that streams completions while the handler
 *     waits), one receiver at a time per call; sends are serialised in call order. send
 *     returns as soon as the message is handed to gRPC, after the previous message of the
 *     call was written: at most one message per call is buffered, so a slow client slows the
 *     sender down (flow control) rather than growing memory. aha_rpc_call_send_nowait queues
 *     instead of waiting (for producers that must never block, e.g. a batched decode loop
 *     serving many calls); the handler's return still waits until the queue is written.
 *   - Cancellation (client cancel, deadline passed, connection lost, or the server's drain
 *     ending) sets a flag that handlers poll with aha_rpc_call_cancelled() between steps of
 *     long work; aha_rpc_call_on_cancel() registers a callback instead. After cancellation,
 *     send/recv fail fast with AHA_ECANCELLED.
 *
 * Ownership (server)
 *   - The request message passed to a handler belongs to the call: valid until the call is
 *     finished (handler return, or aha_rpc_call_finish for a detached call). Do not free it.
 *   - Messages given to aha_rpc_call_send stay the caller's: they are serialised before the
 *     function returns. Messages returned by aha_rpc_call_recv are the caller's: free them
 *     with protobuf_c_message_free_unpacked(m, NULL).
 *   - A handler returns a status; AHA_OK finishes the call with OK, any other status with
 *     the gRPC code aha_status_grpc_code(status) and err's message. A unary handler must
 *     send exactly one reply before returning AHA_OK. A handler that wants to finish later
 *     (from another thread) calls aha_rpc_call_detach() and then, exactly once,
 *     aha_rpc_call_finish(); the call and its request stay valid until then.
 *
 * CLIENT
 *   aha_rpc_channel_create(target, opts) gives a channel that any number of threads may use
 *   at once; every call owns its own pluck completion queue. Unary calls and the opening of
 *   a server stream (before its first message) are retried on UNAVAILABLE with exponential
 *   backoff and jitter, inside the call's deadline. UNAVAILABLE may also come from a server
 *   that already acted (it drained mid-call): give non-idempotent calls (SubmitJob) attempts
 *   = 1 in their call opts, or make them idempotent with a client-chosen id. Every call
 *   fills opts->code (out) with the final gRPC status code and returns the matching
 *   aha_status; err holds "<Method>: <CODE>: <server message>".
 */
#ifndef AHA_RPC_RPC_H
#define AHA_RPC_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base/status.h"

/* ---------------------------------------------------------------------------------------- */
/* Server                                                                                   */

typedef struct aha_rpc_server aha_rpc_server;
typedef struct aha_rpc_call aha_rpc_call;

typedef enum {
    AHA_RPC_UNARY = 0,      /* one request, one reply */
    AHA_RPC_SERVER_STREAM,  /* one request, any number of replies */
    AHA_RPC_CLIENT_STREAM,  /* requests read with aha_rpc_call_recv, one reply */
} aha_rpc_kind;

typedef struct {
    const char *listen;           /* "host:port" ("127.0.0.1:0" picks a free port), "unix:/p" */
    int threads;                  /* CQ threads; < 2 is raised to 2 (default 2) */
    int max_concurrent_calls;     /* calls being handled at once (default 256) */
    int64_t max_recv_bytes;       /* largest request message (default 64 MiB) */
    int64_t max_send_bytes;       /* largest reply message (default 64 MiB) */
    int grace_ms;                 /* drain: time in-flight calls get before cancel (5000) */
    int notice_ms;                /* drain: NOT_SERVING while still serving, first (0) */
    int summary_s;                /* run(): info summary line period, 0 = only at exit (60) */
    const char *tls_cert_file;    /* PEM; with tls_key_file enables TLS, else plaintext */
    const char *tls_key_file;
    const char *auth_token;       /* require "authorization: Bearer <token>" on every call
                                     except health checks (UNAUTHENTICATED otherwise); NULL =
                                     none. Use with TLS outside a trusted network. Accepted on
                                     every method, like service_token. */
    const char *name;             /* for logs, e.g. "reward" */
    /* Two tokens (issue 9). When any of auth_token, service_token, job_token is set, every
     * call but health needs a bearer token: none or an unknown one is UNAUTHENTICATED; the
     * service token is accepted on every method; the job token only on public methods (the
     * job API), elsewhere PERMISSION_DENIED. Tokens are copied and never logged. */
    const char *service_token;    /* service-to-service calls */
    const char *job_token;        /* job clients (ahactl, a platform's controller) */
    const char *public_services;  /* comma-separated full service names whose methods the job
                                     token may call (default "aha.v1.Learner") */
    const char *tls_client_ca_file; /* PEM: verify client certificates (mutual TLS); needs
                                     tls_cert_file */
    int tls_client_optional;      /* with tls_client_ca_file: 0 = a client certificate is
                                     required (default), 1 = verified only when presented */
} aha_rpc_server_opts;

/* Fill o with the defaults above. */
void aha_rpc_server_opts_init(aha_rpc_server_opts *o);

/* A handler. `request` is parsed with the method's input descriptor (unary and server
 * streaming) or NULL (client streaming: read with aha_rpc_call_recv). See ownership above. */
typedef aha_status (*aha_rpc_handler)(aha_rpc_call *call, const ProtobufCMessage *request,
                                      void *user, aha_err *err);

aha_status aha_rpc_server_create(const aha_rpc_server_opts *o, aha_rpc_server **out,
                                 aha_err *err);
/* Register `method` of `svc` (e.g. &aha__v1__reward__descriptor, "Score"), before start.
 * The path, input and output types come from the descriptor. */
aha_status aha_rpc_server_add_method(aha_rpc_server *s, const ProtobufCServiceDescriptor *svc,
                                     const char *method, aha_rpc_kind kind, aha_rpc_handler fn,
                                     void *user, aha_err *err);
/* Bind and start serving. Fails (EUNAVAILABLE) when the address is in use. */
aha_status aha_rpc_server_start(aha_rpc_server *s, aha_err *err);
/* The bound TCP port (after start). */
int aha_rpc_server_port(const aha_rpc_server *s);
/* Health status reported for every service of this server (1 = SERVING). Thread-safe. */
void aha_rpc_server_set_serving(aha_rpc_server *s, int serving);
/* Ask for a drain; async-signal-safe and thread-safe. A second request during the grace
 * period cancels the remaining calls at once. */
void aha_rpc_server_stop(aha_rpc_server *s);
/* Block until stop was requested, then drain: NOT_SERVING, notice_ms of normal service,
 * stop accepting, up to grace_ms for in-flight calls, then cancel them all. Returns OK when
 * every call ended, ETIMEOUT when handlers ignored cancellation for another grace_ms (the
 * server must then not be freed: exit the process). Logs a summary every summary_s. */
aha_status aha_rpc_server_wait(aha_rpc_server *s, aha_err *err);
/* aha_rpc_server_wait with SIGTERM and SIGINT handlers that call aha_rpc_server_stop. */
aha_status aha_rpc_server_run(aha_rpc_server *s, aha_err *err);
void aha_rpc_server_free(aha_rpc_server *s);

typedef struct {
    uint64_t requests;      /* calls finished */
    uint64_t errors;        /* finished with a non-OK status */
    uint64_t cancelled;     /* ended by cancellation or deadline */
    double latency_sum_s;   /* sum over finished calls */
} aha_rpc_server_stats;
void aha_rpc_server_get_stats(aha_rpc_server *s, aha_rpc_server_stats *out);

/* --- inside a handler (or any thread holding the call) --- */

/* Send one reply message (its type must be the method's output type). Blocks until the
 * previous message of the call was written. ECANCELLED when the call is gone, ELIMIT when
 * the message is larger than max_send_bytes. */
aha_status aha_rpc_call_send(aha_rpc_call *c, const ProtobufCMessage *msg, aha_err *err);
/* Queue one reply message without waiting (server streaming): it is serialised now and
 * written after the ones before it, so a producer such as a decode thread never blocks on
 * a slow client. The queue is unbounded: watch aha_rpc_call_send_queued() if the producer
 * can outrun the network. ECANCELLED once the call is gone (queued messages are dropped). */
aha_status aha_rpc_call_send_nowait(aha_rpc_call *c, const ProtobufCMessage *msg,
                                    aha_err *err);
/* Messages queued by send_nowait and not yet handed to gRPC. */
size_t aha_rpc_call_send_queued(aha_rpc_call *c);
/* Receive the next request message of a client stream: *out is NULL at the end of the
 * stream (client half-closed). Parse failures are EINVAL. A message that arrives as one
 * buffer is parsed in place; otherwise it is flattened once first. */
aha_status aha_rpc_call_recv(aha_rpc_call *c, ProtobufCMessage **out, aha_err *err);
/* Like aha_rpc_call_recv, but the bytes field `field` (a top-level `bytes` field number of
 * the input type, e.g. 6 for WeightChunk.data) is not copied: *out has it empty and
 * (*data, *len) point at its bytes inside the received buffer, valid until
 * aha_rpc_bytes_free(*hold). At the end of the stream *out is NULL and *hold NULL. The only
 * copy left is the flattening of a message that arrived in several slices; the other
 * fields (small) are copied to be parsed. For large client streams (weights). */
typedef struct aha_rpc_bytes aha_rpc_bytes;
aha_status aha_rpc_call_recv_bytes(aha_rpc_call *c, unsigned field, ProtobufCMessage **out,
                                   const uint8_t **data, size_t *len, aha_rpc_bytes **hold,
                                   aha_err *err);
void aha_rpc_bytes_free(aha_rpc_bytes *b);
/* 1 once the call was cancelled (client, deadline, connection, drain). Cheap; poll it. */
int aha_rpc_call_cancelled(const aha_rpc_call *c);
/* Call fn(arg) once when the call is cancelled (at once if it already was). fn runs on a
 * gRPC thread and must be quick and must not call back into this call. */
void aha_rpc_call_on_cancel(aha_rpc_call *c, void (*fn)(void *arg), void *arg);
/* Seconds left until the client's deadline (INFINITY when it set none). */
double aha_rpc_call_time_left(const aha_rpc_call *c);
/* Value of request metadata `key` (lower case) copied into buf; returns its length, or -1
 * when absent. Truncated (NUL-terminated) when longer than cap-1. */
long aha_rpc_call_metadata(const aha_rpc_call *c, const char *key, char *buf, size_t cap);
/* "/aha.v1.Reward/Score" */
const char *aha_rpc_call_method(const aha_rpc_call *c);
/* Detach from the handler's return: the call is finished by aha_rpc_call_finish later. */
void aha_rpc_call_detach(aha_rpc_call *c);
/* Finish a detached call from any thread: st/err as a handler's return value. */
void aha_rpc_call_finish(aha_rpc_call *c, aha_status st, const aha_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Client                                                                                   */

typedef struct aha_rpc_channel aha_rpc_channel;
typedef struct aha_rpc_stream aha_rpc_stream;

typedef struct {
    int64_t max_recv_bytes;       /* largest reply (default 64 MiB) */
    int64_t max_send_bytes;       /* largest request (default 64 MiB) */
    const char *tls_ca_file;      /* PEM roots: enables TLS; NULL = plaintext */
    const char *tls_server_name;  /* override the name checked in the certificate */
    const char *bearer_token;     /* sent as "authorization: Bearer ..." on every call */
    const char *tls_cert_file;    /* PEM client certificate and key for mutual TLS (servers */
    const char *tls_key_file;     /* started with a client CA); both or neither */
    int attempts;                 /* tries for UNAVAILABLE (default 5; 1 = no retry) */
    int backoff_initial_ms;       /* first retry delay (default 50) */
    int backoff_max_ms;           /* cap (default 2000); each delay has ±25 % jitter */
} aha_rpc_channel_opts;

void aha_rpc_channel_opts_init(aha_rpc_channel_opts *o);
aha_status aha_rpc_channel_create(const char *target, const aha_rpc_channel_opts *o,
                                  aha_rpc_channel **out, aha_err *err);
void aha_rpc_channel_free(aha_rpc_channel *ch);

typedef struct {
    const char *key;
    const char *value;
} aha_rpc_metadata;

typedef struct {
    int timeout_ms;               /* deadline for the whole call incl. retries; 0 = none */
    int attempts;                 /* 0 = the channel's */
    int wait_for_ready;           /* wait for a connection instead of failing UNAVAILABLE */
    const aha_rpc_metadata *metadata; /* extra request metadata */
    size_t n_metadata;
    int code;                     /* out: the gRPC status code the call ended with */
} aha_rpc_call_opts;

/* Unary call of svc/method. *resp (the method's output type) is the caller's:
 * protobuf_c_message_free_unpacked(*resp, NULL). opts may be NULL. */
aha_status aha_rpc_unary(aha_rpc_channel *ch, const ProtobufCServiceDescriptor *svc,
                         const char *method, const ProtobufCMessage *req,
                         ProtobufCMessage **resp, aha_rpc_call_opts *opts, aha_err *err);
/* Unary call with raw bytes to any path ("/pkg.Svc/Method"); *resp is malloc'ed (free()). */
aha_status aha_rpc_unary_raw(aha_rpc_channel *ch, const char *path, const void *req,
                             size_t req_len, void **resp, size_t *resp_len,
                             aha_rpc_call_opts *opts, aha_err *err);

/* Server streaming: open sends the request; next yields messages until *msg is NULL
 * (status OK) or returns the call's error status. opts (may be NULL) must outlive the
 * stream: its `code` is written when the stream ends. */
aha_status aha_rpc_stream_open(aha_rpc_channel *ch, const ProtobufCServiceDescriptor *svc,
                               const char *method, const ProtobufCMessage *req,
                               aha_rpc_call_opts *opts, aha_rpc_stream **out, aha_err *err);
aha_status aha_rpc_stream_next(aha_rpc_stream *st, ProtobufCMessage **msg, aha_err *err);

/* Client streaming: open, send chunks, then finish (half-close and take the reply). A send
 * that fails means the server ended the call: finish then returns its status. */
aha_status aha_rpc_upload_open(aha_rpc_channel *ch, const ProtobufCServiceDescriptor *svc,
                               const char *method, aha_rpc_call_opts *opts,
                               aha_rpc_stream **out, aha_err *err);
aha_status aha_rpc_upload_send(aha_rpc_stream *st, const ProtobufCMessage *msg, aha_err *err);
aha_status aha_rpc_upload_finish(aha_rpc_stream *st, ProtobufCMessage **resp, aha_err *err);
/* Send msg with its top-level bytes field `field` (left empty in msg) taken from
 * data[0..len) without copying it: data must stay valid and unchanged until the next
 * upload_send / upload_send_bytes / upload_finish / stream_free on this stream returns, so
 * fill two buffers in turn (the next chunk goes into the other one). The receiver sees an
 * ordinary message (aha_rpc_call_recv_bytes avoids the copy there). */
aha_status aha_rpc_upload_send_bytes(aha_rpc_stream *st, const ProtobufCMessage *msg,
                                     unsigned field, const void *data, size_t len,
                                     aha_err *err);

/* Cancel a stream from any thread (a blocked next/send returns ECANCELLED). */
void aha_rpc_stream_cancel(aha_rpc_stream *st);
/* Free a stream (cancels it first when it has not ended). */
void aha_rpc_stream_free(aha_rpc_stream *st);

/* ---------------------------------------------------------------------------------------- */
/* Shared helpers                                                                           */

/* A secret from a file (preferred: argv is visible to every user of the machine) or, when
 * file is NULL, from the environment variable env (e.g. AHA_SERVICE_TOKEN, AHA_JOB_TOKEN).
 * Trailing whitespace is dropped; an empty or binary secret is EINVAL. *out is malloc'ed
 * (free()), NULL with AHA_OK when neither is given. The value is never logged. */
aha_status aha_rpc_read_secret(const char *file, const char *env, char **out, aha_err *err);
/* Whether a listen address is on this machine only (127.0.0.0/8, ::1, localhost, unix:). */
int aha_rpc_addr_is_local(const char *listen);

/* "INVALID_ARGUMENT" etc. */
const char *aha_rpc_code_name(int grpc_code);
/* gRPC status code → aha_status (inverse of aha_status_grpc_code where it is one-to-one). */
aha_status aha_rpc_status_from_code(int grpc_code);
/* "/aha.v1.Reward/Score" into buf; EINVAL when svc has no such method. */
aha_status aha_rpc_method_path(const ProtobufCServiceDescriptor *svc, const char *method,
                               char *buf, size_t cap, aha_err *err);

#endif
