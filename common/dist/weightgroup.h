/* weightgroup.h: the one-node fast path of weight push. Learner rank 0 and the rollout workers
 * of its node form a second communicator (the "weights" group, dist/comm.h; NCCL on GPUs):
 * a push is one broadcast of the whole weight tensor (aha_model_weights: every parameter,
 * contiguous, in the compute dtype: bf16 on CUDA) from rank 0 into a staging buffer on each
 * worker, which then applies it between decode steps. gRPC UpdateWeights (model/weightpush.h)
 * stays the path across hosts and the fallback.
 *
 * Handshake: the learner calls aha.v1.Rollout/JoinWeightGroup on each worker with the
 * rendezvous, the worker's rank, the world size and the learner's layout signature; the
 * worker checks the signature (same parameter table, shapes and compute dtype) and starts a
 * receiver thread that joins the group (aha_weight_group_join) and answers at once; the
 * learner then opens the group as rank 0 (aha_weight_group_open, which returns when every
 * worker joined). The NCCL unique id travels in-band over the communicator's TCP rendezvous.
 *
 * Each push: rank 0 broadcasts a header (version, numel, dtype, signature), then the weights.
 * The receiver thread waits for the header without limit (the next push may be minutes away),
 * then receives under the timeout and calls apply(user, staged, ...): apply must copy the
 * staged tensor into the serving model (aha_weight_group_copy_into) between decode steps and
 * return; the staging buffer is reused by the next push only after apply returned. A learner
 * that dies or hangs ends the receiver with a logged error (the group is then gone; the
 * learner falls back to gRPC or re-forms the group). */
#ifndef AHA_DIST_WEIGHTGROUP_H
#define AHA_DIST_WEIGHTGROUP_H

#include <stdbool.h>
#include <stdint.h>

#include "aha/v1/rollout.pb-c.h"
#include "dist/comm.h"
#include "model/model.h"

typedef struct aha_weight_group aha_weight_group;

typedef struct {
    const char *rendezvous; /* host:port of learner rank 0 */
    int rank;               /* 0 = the learner; workers 1 .. world_size-1 */
    int world_size;
    aha_comm_kind kind;     /* NCCL on GPUs, TCP for CPU models and tests */
    int timeout_ms;         /* rendezvous and each push (0 = 60000) */
    const char *name;       /* group name (NULL = "weights") */
} aha_weight_group_opts;

/* Fingerprint of m's weight layout: parameter names, shapes, offsets and compute dtype. */
uint64_t aha_weight_group_signature(const aha_model *m);

/* ---- learner (rank 0) ------------------------------------------------------------------- */

/* Open the group as rank 0 (blocks until every worker joined or the timeout). */
aha_status aha_weight_group_open(aha_model *m, const aha_weight_group_opts *o, aha_weight_group **out,
                                 aha_err *err);
/* Broadcast m's current weights as `version`; *seconds (may be NULL) = wall time of the push. */
aha_status aha_weight_group_push(aha_weight_group *g, int64_t version, double *seconds, aha_err *err);

/* ---- worker (rank >= 1) ----------------------------------------------------------------- */

/* Called on the receiver thread for every push: put staged (numel elements, the model's
 * compute dtype, on the model's backend) into the serving model and return. */
typedef aha_status (*aha_weight_group_apply_fn)(void *user, aha_tensor staged, int64_t numel, int64_t version,
                                                aha_err *err);

/* Check expect_signature against m (AHA_EPRECOND when they differ) and start the receiver
 * thread, which joins the group and serves pushes until the group ends or free. Returns at
 * once. m is only read (its layout); the weights reach the serving model through apply. */
aha_status aha_weight_group_join(const aha_model *m, const aha_weight_group_opts *o, uint64_t expect_signature,
                                 aha_weight_group_apply_fn apply, void *user, aha_weight_group **out,
                                 aha_err *err);
/* The same from a JoinWeightGroup request (validated: rank, world size, transport). */
aha_status aha_weight_group_join_request(const aha_model *m, const Aha__V1__JoinWeightGroupRequest *req,
                                         aha_weight_group_apply_fn apply, void *user, aha_weight_group **out,
                                         aha_err *err);
/* The body of a simple apply: copy staged into m's compute weights (one device copy). */
aha_status aha_weight_group_copy_into(aha_model *m, aha_tensor staged, int64_t numel, aha_err *err);

typedef struct {
    bool joined;        /* the communicator is up */
    bool ended;         /* the receiver stopped (error holds why, unless freed) */
    int64_t pushes;     /* pushes applied */
    int64_t version;    /* last version applied (-1 = none) */
    double last_s;      /* receive + apply seconds of the last push */
    char error[AHA_ERR_LEN];
} aha_weight_group_state;
void aha_weight_group_get_state(aha_weight_group *g, aha_weight_group_state *s);

/* Learner: close the group. Worker: stop the receiver (interrupting a wait) and join it. */
void aha_weight_group_free(aha_weight_group *g);

#endif
