/* sample.h: turning one row of logits into a token on the CPU, as Hugging Face generate does:
 * temperature, then top-k, then top-p (nucleus over the temperature-scaled distribution: sort
 * descending, keep the smallest prefix whose probability reaches top_p, at least one token),
 * then a categorical draw from aha_rng. The logprob reported with a token is always the
 * log-softmax of the RAW logits (before temperature and filtering). */
#ifndef AHA_MODEL_SAMPLE_H
#define AHA_MODEL_SAMPLE_H

#include <stddef.h>

#include "base/rng.h"
#include "base/status.h"

typedef struct {
    float temperature; /* 0 = greedy argmax */
    float top_p;       /* (0, 1]; values <= 0 or >= 1 disable */
    int top_k;         /* <= 0 disables */
} aha_sampling;

/* AHA_EINVAL for a negative or non-finite temperature, or top_p that is NaN. */
aha_status aha_sampling_check(const aha_sampling *sp, aha_err *err);

/* logsumexp of x (n) computed stably */
double aha_logsumexp(const float *x, int n);
/* out (n) = log_softmax(x); out may alias x */
void aha_log_softmax(const float *x, int n, float *out);
/* index of the largest value (the lowest index among ties) */
int aha_argmax(const float *x, int n);

/* Scratch for one sampler of vocabulary V: aha_sample_work_bytes(V) bytes, reused per call. */
size_t aha_sample_work_bytes(int V);

/* The exact distribution a draw follows: probs (V) = softmax(logits / T) restricted by top-k
 * and top-p and renormalised (one-hot at the argmax when T == 0). */
void aha_sample_probs(const float *logits, int V, const aha_sampling *sp, void *work, float *probs);

/* Draw a token; *logprob (may be NULL) = log_softmax(logits)[token]. */
int aha_sample_token(const float *logits, int V, const aha_sampling *sp, aha_rng *rng, void *work,
                     float *logprob);

#endif
