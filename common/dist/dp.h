/* dp.h: data-parallel training over a communicator (dist/comm.h): every rank holds a replica
 * of the model, computes the gradients of ITS share of the step's sequences, and then
 * aha_dp_step all-reduces the gradient tensor (aha_train_grads, one contiguous F32 tensor),
 * clips with the global norm and takes the same AdamW step on every rank.
 *
 * Contract with the caller (the learner's runner):
 *  - Every rank scales its loss by the GLOBAL batch: aha_grpo_args.scale = 1 / (number of
 *    sequences of the whole step over all ranks) for AHA_GRPO_NORM_SEQ, 1 / (completion tokens
 *    of the whole step) for AHA_GRPO_NORM_TOKEN; SFT: 1 / (masked tokens of the whole step).
 *    Then each rank's gradient is its part of the global mean and a SUM all-reduce gives the
 *    gradient of the whole batch: nothing is divided by the world size. aha_dp_shard splits
 *    the sequences; aha_dp_sum_host adds up the counts and the statistics across ranks.
 *  - All ranks call aha_dp_step for every optimizer step, with the same options.
 *  - The result equals one rank running the whole batch up to fp32 reassociation of the
 *    per-rank partial sums (the all-reduce itself adds in a fixed rank order, so all ranks
 *    hold bitwise the same gradients and therefore the same weights).
 *  - Every check_every steps the ranks hash their fp32 master weights and compare
 *    (aha_comm_check_agree): a mismatch is AHA_EINTERNAL naming the ranks, which stops the job
 *    (it resumes from the last checkpoint). */
#ifndef AHA_DIST_DP_H
#define AHA_DIST_DP_H

#include <stdbool.h>
#include <stdint.h>

#include "dist/comm.h"
#include "model/model.h"

typedef struct {
    double max_grad_norm;   /* clip the global gradient to this norm (<= 0: no clipping) */
    aha_adamw_args adamw;
    int check_every;        /* weight checksum agreement every K optimizer steps (0 = never) */
    int64_t bucket_elems;   /* all-reduce bucket (0 = the communicator's default) */
} aha_dp_opts;

typedef struct {
    double grad_norm;       /* global gradient norm before clipping */
    double reduce_s;        /* wall seconds of the gradient all-reduce */
    bool checked;           /* the weights were compared this step */
    uint64_t weights_hash;  /* when checked */
} aha_dp_info;

/* The sequences [*begin, *end) of n that rank `rank` of `world` trains on: contiguous,
 * sizes differ by at most one, earlier ranks take the extra ones. */
void aha_dp_shard(int n, int rank, int world, int *begin, int *end);

/* After every rank's backward: all-reduce the gradients, clip, AdamW, maybe check agreement.
 * c may be NULL (one rank: clip + AdamW only). info may be NULL. */
aha_status aha_dp_step(aha_comm *c, aha_model *m, aha_train *t, const aha_dp_opts *o, aha_dp_info *info,
                       aha_err *err);

/* Hash of every parameter's fp32 value (the master weights when training), in table order. */
aha_status aha_dp_weights_hash(aha_model *m, uint64_t *out, aha_err *err);
/* Every rank compares its weights with rank 0's (job start, resume, every K steps). */
aha_status aha_dp_check_weights(aha_comm *c, aha_model *m, uint64_t *hash, aha_err *err);

/* x[0..n) (host doubles) = sum over ranks, added in rank order on every rank (statistics,
 * token counts). n <= 65536. c may be NULL. */
aha_status aha_dp_sum_host(aha_comm *c, double *x, int n, aha_err *err);

#endif
