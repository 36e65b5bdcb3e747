/* weightpush.h: moving a policy's weights over aha.v1 UpdateWeights (weights.proto), both
 * ends: the learner's sender and the receiver that rollout workers and the reference-policy
 * service stage an upload into before switching to it.
 *
 * Protocol (weights.proto): the first chunk carries the header (version, tensor_count,
 * total_bytes); every chunk names a tensor, its dtype ("BF16" or "F32"), shape and the byte
 * range [offset, offset + len(data)) of that tensor's row-major data. Chunks of one tensor
 * arrive in order and back to back (offset = bytes of that tensor received so far); chunks
 * of different tensors may interleave. An upload replaces EVERY parameter of the model.
 *
 * Receiver invariants: memory is sized from the receiving model, never from the client's
 * claims (at most numel x 4 bytes per tensor); every name must be a parameter of the model
 * with exactly its shape; each byte arrives exactly once; the header's tensor count and total
 * bytes must match what arrived. Any violation is AHA_EINVAL naming the tensor, and the
 * model is never touched: only aha_weight_rx_apply writes it, after aha_weight_rx_finish
 * checked the whole upload. The caller applies between decode steps (all or nothing).
 *
 * Sender: a snapshot copies the model's parameters to host memory once (in the push dtype),
 * so several threads can stream it to several receivers at the same time while the learner
 * goes on. */
#ifndef AHA_MODEL_WEIGHTPUSH_H
#define AHA_MODEL_WEIGHTPUSH_H

#include <stddef.h>
#include <stdint.h>

#include "aha/v1/weights.pb-c.h"
#include "base/status.h"
#include "model/model.h"
#include "rpc/rpc.h"

/* ---- receiver --------------------------------------------------------------------------- */

typedef struct aha_weight_rx aha_weight_rx;

/* Staging for one upload into m's parameter table (m is only read for names and shapes). */
aha_status aha_weight_rx_create(const aha_model *m, aha_weight_rx **out, aha_err *err);
void aha_weight_rx_free(aha_weight_rx *rx);
/* Take one chunk (the message stays the caller's). */
aha_status aha_weight_rx_chunk(aha_weight_rx *rx, const Aha__V1__WeightChunk *c, aha_err *err);
/* The stream ended: check the upload is whole. */
aha_status aha_weight_rx_finish(aha_weight_rx *rx, aha_err *err);
int64_t aha_weight_rx_version(const aha_weight_rx *rx);
int64_t aha_weight_rx_bytes(const aha_weight_rx *rx);
int aha_weight_rx_tensors(const aha_weight_rx *rx);
/* Write the staged weights into m (same parameter table as at create). Only after finish. */
aha_status aha_weight_rx_apply(const aha_weight_rx *rx, aha_model *m, aha_err *err);
/* Receive a whole UpdateWeights client stream of `call` into a new rx (finished and
 * checked), for a handler; *out is the caller's. */
aha_status aha_weight_rx_receive(aha_rpc_call *call, const aha_model *m, aha_weight_rx **out,
                                 aha_err *err);

/* ---- sender ----------------------------------------------------------------------------- */

typedef struct aha_weight_snapshot aha_weight_snapshot;

/* Copy every parameter of m to host memory as dt (AHA_DT_BF16 or AHA_DT_F32). */
aha_status aha_weight_snapshot_create(aha_model *m, aha_dtype dt, aha_weight_snapshot **out,
                                      aha_err *err);
void aha_weight_snapshot_free(aha_weight_snapshot *s);
size_t aha_weight_snapshot_bytes(const aha_weight_snapshot *s);

typedef struct {
    int64_t version;
    size_t chunk_bytes;     /* data bytes per chunk (0 = 4 MiB) */
    int timeout_ms;         /* deadline of the whole upload (0 = none) */
    int max_tensors;        /* testing: stop after this many tensors (0 = all): a truncated upload */
} aha_weight_push_opts;

typedef struct {
    int64_t version;        /* as the receiver confirmed */
    int64_t bytes;
    double seconds;         /* sender's wall time for this target */
    int code;               /* gRPC status code */
} aha_weight_push_result;

/* Stream the snapshot to svc/UpdateWeights (aha.v1.Rollout or aha.v1.RefPolicy) on ch. */
aha_status aha_weight_snapshot_send(const aha_weight_snapshot *s, aha_rpc_channel *ch,
                                    const ProtobufCServiceDescriptor *svc,
                                    const aha_weight_push_opts *o, aha_weight_push_result *res,
                                    aha_err *err);
/* The same to n targets at once, one thread each. res (n) and errs (n) receive each target's
 * outcome; the return value is AHA_OK only when every target succeeded (else the first
 * failure's status, and err names the target index). */
aha_status aha_weight_snapshot_send_all(const aha_weight_snapshot *s, aha_rpc_channel **chs,
                                        const ProtobufCServiceDescriptor *const *svcs, int n,
                                        const aha_weight_push_opts *o,
                                        aha_weight_push_result *res, aha_err *errs,
                                        aha_err *err);

#endif
