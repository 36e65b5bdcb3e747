/* rollout_bench.h: what the rollout engine benchmarks share: a completion callback that counts
 * the new tokens delivered, and a batch of random prompts laid out as aha_gen_request takes
 * them. Header-only, static functions. */
#ifndef AHA_BENCH_ROLLOUT_BENCH_H
#define AHA_BENCH_ROLLOUT_BENCH_H

#include <pthread.h>
#include <stdlib.h>

#include "base/rng.h"
#include "engine.h"

/* written by the engine thread, read once a request is waited for */
static long rb_done_tokens;
static pthread_mutex_t rb_mu = PTHREAD_MUTEX_INITIALIZER;

static inline void rb_count_tokens(void *user, const aha_completion *c)
{
    (void)user;
    pthread_mutex_lock(&rb_mu);
    rb_done_tokens += c->n_ids;
    pthread_mutex_unlock(&rb_mu);
}

typedef struct {
    int32_t *ids;        /* (P, PL) */
    const int32_t **ptr; /* (P) rows of ids */
    int *lens;           /* (P) all PL */
} rb_prompts;

/* P prompts of PL tokens uniform in [0, vocab), the same for a given (P, PL, vocab) */
static inline void rb_prompts_random(rb_prompts *p, int P, int PL, int vocab)
{
    aha_rng rng;
    aha_rng_seed(&rng, 7, 0);
    p->ids = malloc((size_t)P * PL * 4);
    p->ptr = malloc((size_t)P * sizeof *p->ptr);
    p->lens = malloc((size_t)P * sizeof *p->lens);
    for (int i = 0; i < P * PL; i++) p->ids[i] = (int32_t)aha_rng_below(&rng, (uint64_t)vocab);
    for (int i = 0; i < P; i++) {
        p->ptr[i] = p->ids + (size_t)i * PL;
        p->lens[i] = PL;
    }
}

static inline void rb_prompts_free(rb_prompts *p)
{
    free(p->ids);
    free(p->ptr);
    free(p->lens);
}

#endif
