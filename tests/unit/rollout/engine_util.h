/* engine_util.h: what the rollout engine tests share (the CPU tests of the engine and of its
 * model draws, and the gpu-suite test): a model directory made from a fixture plus a byte-level
 * tokenizer, a completion sink, a gate that holds the engine thread so that requests submitted
 * meanwhile share a step, and references computed independently from full forward passes
 * (aha_model_token_logprobs) of a second copy of the model. Header-only; static inline, as each
 * test uses a part. */
#ifndef AHA_TESTS_ENGINE_UTIL_H
#define AHA_TESTS_ENGINE_UTIL_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../harness.h"
#include "backend/backend.h"
#include "base/rng.h"
#include "engine.h"

#define EU_MAXC 40000
#define EU_MAXT 64

typedef struct {
    int prompt, index, n;
    int32_t ids[EU_MAXT];
    float lp[EU_MAXT];
    char text[512];
    char reason[8];
} eu_got;

typedef struct {
    pthread_mutex_t mu;
    int n;
    eu_got *c; /* (EU_MAXC) */
} eu_sink;

static inline void eu_on_done(void *user, const aha_completion *c)
{
    eu_sink *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->n < EU_MAXC) {
        eu_got *g = &s->c[s->n++];
        g->prompt = c->prompt;
        g->index = c->index;
        g->n = c->n_ids < EU_MAXT ? c->n_ids : EU_MAXT;
        memcpy(g->ids, c->ids, (size_t)g->n * 4);
        memcpy(g->lp, c->logprobs, (size_t)g->n * 4);
        size_t tl = c->text_len < 511 ? c->text_len : 511;
        memcpy(g->text, c->text, tl);
        g->text[tl] = 0;
        snprintf(g->reason, sizeof g->reason, "%s", c->finish_reason);
    }
    pthread_mutex_unlock(&s->mu);
}

/* dir (a mkdtemp template, filled in) = links to fixture's files + a byte-level tokenizer.json */
static inline void eu_model_dir(char *dir, const char *fixture)
{
    char src[1024], p1[1200], p2[1200];
    aha_err err = {0};
    AHA_ASSERT(mkdtemp(dir) != NULL);
    snprintf(src, sizeof src, "%s/%s", th_fixtures(), fixture);
    const char *files[] = {"config.json", "model.safetensors", "generation_config.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p1, sizeof p1, "%s/%s", src, files[i]);
        snprintf(p2, sizeof p2, "%s/%s", dir, files[i]);
        char *abs = p1[0] == '/' ? NULL : realpath(p1, NULL);
        if (symlink(abs ? abs : p1, p2) != 0) CHECK(0, "symlink %s", p2);
        free(abs);
    }
    const char *specials[] = {"<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"};
    CHECK(aha_tokenizer_write_bytelevel(dir, specials, 5, &err) == AHA_OK, "%s", err.msg);
}

/* dir (as in eu_model_dir) for the engine, and the fixture itself opened on a one-thread CPU
 * backend as the reference of full forwards */
static inline void eu_open_ref(char *dir, const char *fixture, aha_backend **be, aha_model **ref)
{
    char src[1024];
    aha_err err = {0};
    eu_model_dir(dir, fixture);
    snprintf(src, sizeof src, "%s/%s", th_fixtures(), fixture);
    CHECK(aha_backend_open("cpu", 1, be, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_open(src, *be, NULL, ref, &err) == AHA_OK, "%s", err.msg);
}

/* submit, wait; the number of completions delivered, -1 on an error */
static inline int eu_run(aha_engine *e, aha_gen_request *r, eu_sink *s)
{
    s->n = 0;
    r->on_done = eu_on_done;
    r->user = s;
    aha_gen *g;
    aha_err err;
    if (aha_engine_submit(e, r, &g, &err) != AHA_OK) {
        fprintf(stderr, "submit: %s\n", err.msg);
        return -1;
    }
    if (aha_gen_wait(g, NULL, NULL, &err) != AHA_OK) {
        fprintf(stderr, "wait: %s\n", err.msg);
        return -1;
    }
    return s->n;
}

/* n samples (a multiple of 5) of prompt as 5 copies x n / 5: every (prompt, sample) stream is
 * distinct; the number delivered, -1 on an error */
static inline int eu_run_copies(aha_engine *e, eu_sink *s, const int32_t *prompt, int plen, aha_sampling sp,
                                int max_new, uint64_t seed, int n)
{
    const int32_t *pp[5] = {prompt, prompt, prompt, prompt, prompt};
    int pl[5] = {plen, plen, plen, plen, plen};
    aha_gen_request r = {.n_prompts = 5, .prompt_ids = pp, .prompt_lens = pl, .n = n / 5, .sampling = sp,
                         .max_new_tokens = max_new, .seed = seed};
    return eu_run(e, &r, s);
}

static inline const eu_got *eu_find(const eu_sink *s, int prompt, int index)
{
    for (int i = 0; i < s->n; i++)
        if (s->c[i].prompt == prompt && s->c[i].index == index) return &s->c[i];
    return NULL;
}

/* ---- holding the engine thread inside a completion callback (run without the engine's
 * lock), so that requests submitted meanwhile are admitted in the same step ---- */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
} eu_gate;

#define EU_GATE_INIT {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER}

static inline void eu_gate_on_done(void *user, const aha_completion *c)
{
    (void)c;
    eu_gate *g = user;
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* submits one greedy token of the prompt, whose completion holds the engine thread; returns
 * (its request in *out) once the thread is held */
static inline void eu_gate_hold(aha_engine *e, eu_gate *g, const int32_t *const *prompt, const int *len,
                                aha_gen **out)
{
    aha_gen_request r = {.n_prompts = 1, .prompt_ids = prompt, .prompt_lens = len, .n = 1,
                         .sampling = {.temperature = 0}, .max_new_tokens = 1, .on_done = eu_gate_on_done,
                         .user = g};
    aha_err err;
    *out = NULL;
    CHECK(aha_engine_submit(e, &r, out, &err) == AHA_OK, "%s", err.msg);
    if (!*out) return;
    pthread_mutex_lock(&g->mu);
    while (!g->entered) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static inline void eu_gate_open(eu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Full forward of prompt + completion on ref: lp (n) = log p(ids[t] | ...) of the completion
 * tokens; logits (n, V) the logits each of them was drawn from, when not NULL. */
static inline void eu_full_forward(aha_model *ref, const int32_t *prompt, int plen, const int32_t *ids, int n,
                                   float *lp, float *logits)
{
    int T = plen + n, V = aha_model_cfg(ref)->vocab_size;
    int32_t *seq = malloc((size_t)T * 4);
    memcpy(seq, prompt, (size_t)plen * 4);
    memcpy(seq + plen, ids, (size_t)n * 4);
    int32_t cu[2] = {0, T};
    aha_batch b = {seq, cu, 1, NULL};
    float *all = malloc((size_t)T * 4), *lg = logits ? malloc((size_t)T * V * 4) : NULL;
    aha_err err;
    AHA_ASSERT(aha_model_token_logprobs(ref, &b, all, lg, &err) == AHA_OK);
    memcpy(lp, all + plen - 1, (size_t)n * 4);
    if (logits) memcpy(logits, lg + (size_t)(plen - 1) * V, (size_t)n * V * 4);
    free(seq);
    free(all);
    free(lg);
}

/* max |reported - full forward| over the logprobs of completion g of prompt */
static inline double eu_lp_err(aha_model *ref, const int32_t *prompt, int plen, const eu_got *g)
{
    float lp[EU_MAXT];
    eu_full_forward(ref, prompt, plen, g->ids, g->n, lp, NULL);
    double worst = 0;
    for (int t = 0; t < g->n; t++)
        if (fabs(lp[t] - g->lp[t]) > worst) worst = fabs(lp[t] - g->lp[t]);
    return worst;
}

/* samples 0..n-1 of prompt p in s (prompt, plen) are the greedy continuation want (max_new
 * tokens), end on the length limit, and report the full forward's logprobs (1e-4) */
static inline void eu_check_greedy(aha_model *ref, const eu_sink *s, int p, int n, const int32_t *prompt, int plen,
                                   const int32_t *want, int max_new)
{
    for (int j = 0; j < n; j++) {
        const eu_got *g = eu_find(s, p, j);
        CHECK(g && g->n == max_new && memcmp(g->ids, want, (size_t)max_new * 4) == 0,
              "prompt %d sample %d equals the argmax continuation", p, j);
        CHECK(g && strcmp(g->reason, "length") == 0, "finish_reason length");
        CHECK(g && eu_lp_err(ref, prompt, plen, g) < 1e-4, "greedy logprobs = full forward");
    }
}

/* Wilson-Hilferty approximation of the chi-square quantile for p = 0.999 */
static inline double eu_chi2_crit(int df)
{
    double z = 3.090, a = 2.0 / (9.0 * df), b = 1 - a + z * sqrt(a);
    return df * b * b * b;
}

/* Pearson chi-square of counts (V, N in all) against probs (V): cells with expectation < 5
 * pooled; nothing may fall where probs is 0. */
static inline void eu_chi_square(const long *cnt, const double *probs, int V, long N, const char *what)
{
    double chi = 0, pool_e = 0, pool_o = 0;
    int df = -1, outside = 0;
    for (int v = 0; v < V; v++) {
        double ex = probs[v] * (double)N;
        if (probs[v] == 0 && cnt[v] > 0) outside++;
        if (ex >= 5) {
            chi += (cnt[v] - ex) * (cnt[v] - ex) / ex;
            df++;
        } else {
            pool_e += ex;
            pool_o += (double)cnt[v];
        }
    }
    if (pool_e >= 5) {
        chi += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        df++;
    }
    CHECK(outside == 0, "%s: %d samples outside the top-k/top-p support", what, outside);
    CHECK(df >= 3, "%s: %d degrees of freedom", what, df);
    CHECK(chi < eu_chi2_crit(df), "%s: chi-square %.1f with %d dof over the 0.999 critical %.1f", what, chi, df,
          eu_chi2_crit(df));
    fprintf(stderr, "  %-44s chi-square %.1f, %d dof (critical %.1f)\n", what, chi, df, eu_chi2_crit(df));
}

/* The exact law of the first two completion tokens under sp, from full forwards on ref:
 * p1 (V) of the first token, p2 (V) the marginal of the second, sum_t p1[t] p2(. | t). */
static inline void eu_two_token_law(aha_model *ref, const int32_t *prompt, int plen, const aha_sampling *sp, double *p1,
                                    double *p2)
{
    int V = aha_model_cfg(ref)->vocab_size;
    float *lg = malloc((size_t)V * 4), *pr = malloc((size_t)V * 4), lp;
    void *work = malloc(aha_sample_work_bytes(V));
    /* logits after the prompt: score the prompt plus any token, keep row plen-1 */
    float *lg2 = malloc((size_t)2 * V * 4);
    int32_t t0 = 0;
    eu_full_forward(ref, prompt, plen, &t0, 1, &lp, lg);
    aha_sample_probs(lg, V, sp, work, pr);
    for (int v = 0; v < V; v++) {
        p1[v] = pr[v];
        p2[v] = 0;
    }
    float *pr2 = malloc((size_t)V * 4);
    for (int t = 0; t < V; t++) {
        if (p1[t] == 0) continue;
        int32_t two[2] = {t, 0};
        float lp2[2];
        eu_full_forward(ref, prompt, plen, two, 2, lp2, lg2);
        aha_sample_probs(lg2 + V, V, sp, work, pr2);
        for (int v = 0; v < V; v++) p2[v] += p1[t] * pr2[v];
    }
    free(lg);
    free(lg2);
    free(pr);
    free(pr2);
    free(work);
}

#endif
