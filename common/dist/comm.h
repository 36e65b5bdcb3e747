/* comm.h: collectives among the W processes of a data-parallel learner (and the "weights"
 * group of a learner and its rollout workers), behind one interface with two transports:
 *
 *  - TCP (any machine, CI): rank 0 listens on the rendezvous "host:port", the other ranks
 *    connect to it (a star). A collective moves data in frames of at most 4 MiB: every rank
 *    sends its chunk to rank 0, rank 0 adds them in the FIXED order
 *        sum = ((x_0 + x_1) + x_2) + ... + x_{W-1}     (fp32, element by element)
 *    and sends the result back, so every rank holds bitwise the same sum, and W ranks that
 *    each computed part of a batch get the one-rank sum up to fp32 reassociation. Tensors on
 *    a device backend are staged through host memory (to_host / to_device).
 *  - NCCL (GPU): rank 0 draws the ncclUniqueId and hands it to the others over the TCP star
 *    above (which stays open for control messages and checksum agreement); data collectives
 *    run on the GPU with ncclAllReduce / ncclBroadcast / ncclAllGather on a stream of the
 *    communicator, after the backend's queued work is complete. The communicator is
 *    non-blocking (ncclConfig_t.blocking = 0): init and every collective are polled with
 *    ncclCommGetAsyncError under the timeout, and ncclCommAbort ends a collective that a
 *    dead or hung rank stalls. NCCL_NVLS_ENABLE is forced to 0 (NVLink multicast stays off).
 *
 * Failure model: every wait has a deadline (opts.timeout_ms from the start of the call). A
 * rank that closes its connection is AHA_EUNAVAILABLE, one that sends nothing in time is
 * AHA_ETIMEOUT; either message names the rank and the collective. Rank 0 passes a failure
 * on to the ranks still waiting (an abort frame carrying its message) and closes the star,
 * so no rank hangs. Ranks calling different collectives (or sizes) is AHA_EINTERNAL naming
 * both. After any failure the communicator is broken: later calls return AHA_EPRECOND with
 * the first failure's message; free it and create a new one (the job resumes from its last
 * checkpoint).
 *
 * Threads: one thread at a time per communicator. Every rank calls the same collectives in
 * the same order (as with NCCL). */
#ifndef AHA_DIST_COMM_H
#define AHA_DIST_COMM_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/status.h"

typedef struct aha_comm aha_comm;

typedef enum {
    AHA_COMM_TCP = 0, /* star over TCP, fp32 sums on the host (CPU backend, tests) */
    AHA_COMM_NCCL,    /* NCCL on the backend's GPU (needs a CUDA backend and AHA_HAVE_NCCL) */
} aha_comm_kind;

typedef struct {
    int rank;               /* 0 .. world_size-1 */
    int world_size;         /* >= 1; 1 makes every collective a no-op */
    const char *rendezvous; /* "host:port": rank 0 listens there, the others connect */
    aha_comm_kind kind;
    int timeout_ms;         /* rendezvous and every collective (0 = 60000) */
    aha_backend *be;        /* where the tensors live (NULL = host memory) */
    const char *name;       /* for messages: "learner", "weights" (NULL = "comm") */
    int connect_timeout_ms; /* the rendezvous in attempts: ranks != 0 give up connecting to
                               rank 0, rank 0 gives up waiting for every rank to join, after
                               this (0 = timeout_ms; AHA_ETIMEOUT). Once connected, a rank waits
                               for the others up to timeout_ms. A process that retries in a
                               loop (to notice a shutdown or a cancelled job) keeps it short. */
} aha_comm_opts;

/* Connects all ranks (blocks until every rank joined, or the timeout). */
aha_status aha_comm_create(const aha_comm_opts *o, aha_comm **out, aha_err *err);
void aha_comm_free(aha_comm *c);

int aha_comm_rank(const aha_comm *c);
int aha_comm_size(const aha_comm *c);
aha_comm_kind aha_comm_get_kind(const aha_comm *c);
/* "tcp" or "nccl" */
const char *aha_comm_kind_name(aha_comm_kind k);
/* Parse "tcp" / "nccl" (EINVAL naming the value otherwise). */
aha_status aha_comm_kind_parse(const char *s, aha_comm_kind *out, aha_err *err);
/* true when this build has NCCL */
bool aha_comm_have_nccl(void);

/* x[0..n) = sum over ranks of x[0..n) (F32, in place), the order above. */
aha_status aha_comm_all_reduce_sum(aha_comm *c, aha_tensor x, int64_t n, aha_err *err);
/* The same in buckets of bucket_elems (0 = 8M elements): the model exposes no per-layer
 * gradient readiness, so this runs after the backward; it bounds host staging memory on the
 * TCP path and the size of one NCCL launch. Results are identical to the unbucketed call. */
aha_status aha_comm_all_reduce_sum_bucketed(aha_comm *c, aha_tensor x, int64_t n,
                                            int64_t bucket_elems, aha_err *err);
/* x[0..n) of root to every rank (F32 or BF16). */
aha_status aha_comm_broadcast(aha_comm *c, aha_tensor x, int64_t n, int root, aha_err *err);
/* x holds world_size slices of n elements (F32 or BF16); rank r's slice r goes to every rank
 * (in place, for ZeRO-1: each rank updates its shard, then the weights are gathered). */
aha_status aha_comm_all_gather(aha_comm *c, aha_tensor x, int64_t n, aha_err *err);
aha_status aha_comm_barrier(aha_comm *c, aha_err *err);

/* Every rank passes its hash of `what` (e.g. the weights); AHA_EINTERNAL naming the ranks
 * that disagree with rank 0 (and their hashes) when they are not all equal. Every rank gets
 * the same verdict. */
aha_status aha_comm_check_agree(aha_comm *c, uint64_t hash, const char *what, aha_err *err);

/* Small control payloads over the TCP star (both kinds): root's bytes[0..n) to every rank. n
 * must agree across ranks (checked). */
aha_status aha_comm_broadcast_bytes(aha_comm *c, void *bytes, int64_t n, int root, aha_err *err);

/* The next collective waits up to wait_ms (-1 = without limit) for the other ranks to arrive,
 * instead of the timeout; once all arrived, its data moves under the usual timeout. For a
 * rank that waits for a peer's next move (a rollout worker waiting for the next weight push). */
void aha_comm_set_next_wait(aha_comm *c, int wait_ms);
/* From any thread: close the connections, so that a collective blocked in this process ends
 * (AHA_EUNAVAILABLE) and the communicator is broken. For shutdown. */
void aha_comm_interrupt(aha_comm *c);

/* The first failure's message when broken, else NULL. */
const char *aha_comm_broken(const aha_comm *c);

#endif
