/* refpolicy.h: the reference-policy scorer behind aha-refpolicy: per-token logprobs of a
 * frozen model for the KL term of Eq. 1, and the weight refresh R1-Zero used (the reference
 * replaced by the current policy).
 *
 * Sequences of one request are packed into passes of at most max_batch_tokens tokens, in
 * request order, without padding (the model takes packed ragged batches); a sequence longer
 * than that is a pass of its own. One model serves every call: passes and weight switches
 * are serialised by a mutex, so a switch happens between passes and a request sees one
 * version throughout. */
#ifndef AHA_REFPOLICY_H
#define AHA_REFPOLICY_H

#include <stdint.h>

#include "base/status.h"
#include "model/model.h"
#include "model/weightpush.h"

typedef struct aha_refpolicy aha_refpolicy;

typedef struct {
    const char *model_dir;
    const char *device;        /* "cpu" | "cuda:N" */
    int threads;               /* CPU backend threads (0 = the backend's default) */
    int max_batch_tokens;      /* tokens per forward pass (default 8192) */
    int64_t max_request_tokens;/* tokens of one request; more is ELIMIT (default 1<<22) */
} aha_refpolicy_opts;

aha_status aha_refpolicy_create(const aha_refpolicy_opts *o, aha_refpolicy **out, aha_err *err);
void aha_refpolicy_free(aha_refpolicy *rp);

typedef struct {
    const char *id;            /* for messages */
    const int32_t *ids;
    int len;
    int prompt_len;            /* >= 1 */
} aha_ref_seq;

/* out[s] (len_s - prompt_len_s floats, caller-allocated) = log p(ids[t] | ids[<t]) for
 * t = prompt_len .. len-1. Bad sequences are EINVAL naming the id; too many tokens ELIMIT.
 * *version receives the policy version that scored the request. */
aha_status aha_refpolicy_logprobs(aha_refpolicy *rp, const aha_ref_seq *seqs, int n,
                                  float *const *out, int64_t *version, aha_err *err);
/* Replace the weights with a checked upload (between passes). */
aha_status aha_refpolicy_apply(aha_refpolicy *rp, const aha_weight_rx *rx, aha_err *err);

const aha_model *aha_refpolicy_model(const aha_refpolicy *rp);
int64_t aha_refpolicy_version(aha_refpolicy *rp);
/* tokens scored since start */
int64_t aha_refpolicy_tokens(aha_refpolicy *rp);

#endif
