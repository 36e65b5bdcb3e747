/* grpo.c: the GRPO step of DESIGN.md and held-out evaluation, over the services.
 *
 * One step: B questions from the data order → template → tokens → Generate (n = G) spread
 * over the rollout workers (a failed worker's unfinished groups go whole to the others, so no
 * completion is counted twice) → Score (reward) and LogProbs (refpolicy) at the same time →
 * group advantages (Eq. 3) → old logprobs recomputed by the learner's own model on exactly
 * the micro-batches it trains on (ratio = 1 exactly in the first pass; the mean |rollout −
 * learner| logprob gap is reported as a train/inference mismatch) → mu passes of the GRPO
 * loss (Eq. 1) with scale 1/(B·G) so micro-batches add up to the batch mean → clip → AdamW →
 * UpdateWeights (version = step) on every rollout worker at once (and on refpolicy every
 * ref_refresh_steps) → metrics → checkpoint when due.
 *
 * Randomness: each Generate request carries a seed derived from (spec seed, step, purpose),
 * so a resumed job asks for the same samples as one that never stopped. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/refpolicy.pb-c.h"
#include "aha/v1/reward.pb-c.h"
#include "aha/v1/rollout.pb-c.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/rng.h"
#include "encode.h"
#include "evalstats.h"
#include "grpo_math.h"
#include "runner_int.h"
#include "text/template.h"

/* A mean |rollout logprob − learner logprob| above this is worth a warning: the workers are
 * not sampling from the policy being trained (stale weights, bf16 drift, a bug). */
#define MISMATCH_WARN 0.05

/* seeds of the Generate requests of one step */
enum { SEED_TRAIN = 1, SEED_EVAL = 2 };

/* ---- generation across workers ------------------------------------------------------------ */

typedef aha__gsample gsample; /* runner_int.h */

static void gsample_clear(gsample *s)
{
    free(s->ids);
    free(s->lp);
    free(s->text);
    memset(s, 0, sizeof *s);
}

typedef struct {
    aha__job *j;
    int worker;
    int *prompts; /* indices this worker serves in this round */
    int n_prompts;
    int32_t *const *pids;
    const size_t *pn;
    int n_total, G;
    const aha_sampling_spec *sa;
    uint64_t seed;
    gsample *out; /* (n_total, G) */
    aha_rpc_call_opts opts;
    bool stale;   /* the worker served another policy version than the one pushed */
    aha_status st;
    aha_err err;
} gen_task;

/* Prompt q's own sampling seed: its samples are the same whichever worker serves it and in
 * whichever request, so groups redone after a failover equal those a healthy run samples. */
static uint64_t prompt_seed(uint64_t seed, int q)
{
    uint64_t s = aha_mix64(seed, (uint64_t)q);
    return s ? s : 1; /* 0 means "derive from the request" to the worker */
}

static void *gen_worker(void *arg)
{
    gen_task *g = arg;
    aha__job *j = g->j;
    Aha__V1__Prompt *pr = calloc((size_t)g->n_prompts, sizeof *pr);
    Aha__V1__Prompt **pp = calloc((size_t)g->n_prompts, sizeof *pp);
    char (*idbuf)[16] = calloc((size_t)g->n_prompts, sizeof *idbuf);
    bool *mine = calloc((size_t)g->n_total, sizeof *mine);
    aha_rpc_stream *stream = NULL;
    if (!pr || !pp || !idbuf || !mine) {
        g->st = aha_errf(&g->err, AHA_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < g->n_prompts; i++) {
        int q = g->prompts[i];
        Aha__V1__Prompt init = AHA__V1__PROMPT__INIT;
        pr[i] = init;
        snprintf(idbuf[i], sizeof idbuf[i], "%d", q);
        pr[i].id = idbuf[i];
        pr[i].n_token_ids = g->pn[q];
        pr[i].token_ids = g->pids[q];
        pr[i].seed = prompt_seed(g->seed, q);
        pp[i] = &pr[i];
        mine[q] = true;
    }
    Aha__V1__SamplingParams sp = AHA__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = (float)g->sa->temperature;
    sp.top_p = (float)g->sa->top_p;
    sp.top_k = g->sa->top_k;
    sp.max_new_tokens = g->sa->max_new_tokens;
    sp.seed = g->seed;
    Aha__V1__GenerateRequest req = AHA__V1__GENERATE_REQUEST__INIT;
    req.n_prompts = (size_t)g->n_prompts;
    req.prompts = pp;
    req.n = g->G;
    req.sampling = &sp;
    memset(&g->opts, 0, sizeof g->opts);
    g->opts.timeout_ms = j->timeout_ms;
    g->st = aha_rpc_stream_open(j->rollout[g->worker], &aha__v1__rollout__descriptor, "Generate",
                                &req.base, &g->opts, &stream, &g->err);
    while (g->st == AHA_OK) {
        ProtobufCMessage *msg = NULL;
        g->st = aha_rpc_stream_next(stream, &msg, &g->err);
        if (g->st != AHA_OK || !msg) break;
        Aha__V1__Completion *c = (Aha__V1__Completion *)msg;
        char *end = NULL;
        long q = strtol(c->prompt_id, &end, 10);
        if (!end || *end || q < 0 || q >= g->n_total || !mine[q] || c->index < 0 || c->index >= g->G) {
            g->st = aha_errf(&g->err, AHA_EFORMAT, "completion for unknown prompt \"%s\" index %d", c->prompt_id,
                             c->index);
        } else if (c->n_logprobs != c->n_token_ids) {
            g->st = aha_errf(&g->err, AHA_EFORMAT, "completion %s/%d: %zu tokens but %zu logprobs", c->prompt_id,
                             c->index, c->n_token_ids, c->n_logprobs);
        } else if (j->pushed_version >= 0 &&
                   (c->policy_version != j->pushed_version || c->first_policy_version != j->pushed_version)) {
            /* a worker restarted from its model directory serves old weights */
            g->stale = true;
            g->st = aha_errf(&g->err, AHA_EPRECOND, "completion %s/%d from policy version %" PRId64 " (first %" PRId64
                             "), but version %" PRId64 " was pushed",
                             c->prompt_id, c->index, c->policy_version, c->first_policy_version, j->pushed_version);
        } else {
            gsample *s = &g->out[q * g->G + c->index];
            if (!s->done) { /* a repeated completion is not counted twice */
                size_t n = c->n_token_ids;
                s->ids = malloc((n ? n : 1) * sizeof *s->ids);
                s->lp = malloc((n ? n : 1) * sizeof *s->lp);
                s->text = strdup(c->text ? c->text : "");
                if (!s->ids || !s->lp || !s->text) {
                    g->st = aha_errf(&g->err, AHA_ENOMEM, "out of memory");
                } else {
                    if (n) memcpy(s->ids, c->token_ids, n * sizeof *s->ids);
                    if (n) memcpy(s->lp, c->logprobs, n * sizeof *s->lp);
                    s->n = (int)n;
                    s->truncated = c->finish_reason && strcmp(c->finish_reason, "length") == 0;
                    s->done = true;
                }
            }
        }
        protobuf_c_message_free_unpacked(msg, NULL);
    }
done:
    if (g->st != AHA_OK) aha_err_prefix(&g->err, g->st, "rollout %s", j->rollout_addr[g->worker]);
    if (stream) aha_rpc_stream_free(stream);
    free(pr);
    free(pp);
    free(idbuf);
    free(mine);
    return NULL;
}

/* A worker's share of a round: its free batch slots (max_batch − active − queued, from
 * Rollout/Info, at least 1), so a busy or smaller worker gets fewer prompts; NAN when Info does
 * not answer in time (the caller gives it an average share; its Generate call then shows
 * what is wrong). */
static double worker_weight(aha__job *j, int w)
{
    Aha__V1__InfoRequest req = AHA__V1__INFO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    aha_rpc_call_opts o = {.timeout_ms = j->timeout_ms < 2000 ? j->timeout_ms : 2000};
    aha_err e2 = {0};
    if (aha_rpc_unary(j->rollout[w], &aha__v1__rollout__descriptor, "Info", &req.base, &resp, &o, &e2) != AHA_OK)
        return NAN;
    const Aha__V1__InfoReply *r = (const Aha__V1__InfoReply *)resp;
    double free_slots = (double)r->max_batch - (double)r->active_sequences - (double)r->queued;
    protobuf_c_message_free_unpacked(resp, NULL);
    return free_slots >= 1 ? free_slots : 1.0;
}

/* Split n prompts over k workers in proportion to wt (largest remainders; the counts add up
 * to n). */
static void split_by_weight(int n, int k, const double *wt, int *cnt)
{
    double total = 0;
    for (int a = 0; a < k; a++) total += wt[a];
    int given = 0;
    double frac[AHA__MAX_ROLLOUT];
    for (int a = 0; a < k; a++) {
        double exact = n * wt[a] / total;
        cnt[a] = (int)floor(exact);
        frac[a] = exact - cnt[a];
        given += cnt[a];
    }
    while (given < n) {
        int best = 0;
        for (int a = 1; a < k; a++)
            if (frac[a] > frac[best]) best = a;
        cnt[best]++;
        frac[best] = -1;
        given++;
    }
}

/* n_total prompts × G samples into out (zeroed by the caller), spread over the workers by
 * load (worker_weight); the groups a failed worker did not finish go whole to the others in
 * the next round, so nothing is lost and nothing is counted twice. */
static aha_status generate_all(aha__job *j, int n_total, int32_t *const *pids, const size_t *pn, int G,
                               const aha_sampling_spec *sa, uint64_t seed, gsample *out, aha_err *err)
{
    int W = j->n_rollout;
    bool failed[AHA__MAX_ROLLOUT] = {0};
    for (int w = 0; w < W; w++) failed[w] = !j->rollout_ok[w];
    gen_task tasks[AHA__MAX_ROLLOUT];
    int *pending = malloc((size_t)n_total * sizeof *pending);
    int *buf = malloc((size_t)n_total * sizeof *buf);
    if (!pending || !buf) {
        free(pending);
        free(buf);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    int n_pending = n_total;
    for (int i = 0; i < n_total; i++) pending[i] = i;
    bool repushed[AHA__MAX_ROLLOUT] = {0};
    aha_status st = AHA_OK;
    aha_err first = {0};
    for (int round = 0; n_pending > 0 && st == AHA_OK; round++) {
        int alive[AHA__MAX_ROLLOUT], n_alive = 0;
        for (int w = 0; w < W; w++)
            if (!failed[w]) alive[n_alive++] = w;
        if (n_alive == 0) {
            st = aha_errf(err, first.status ? first.status : AHA_EUNAVAILABLE, "every rollout worker failed: %s",
                          aha_err_msg(&first));
            break;
        }
        /* contiguous shares by load, so each worker's request is one block of prompts */
        double wt[AHA__MAX_ROLLOUT];
        int share[AHA__MAX_ROLLOUT];
        double known = 0;
        int n_known = 0;
        for (int a = 0; a < n_alive; a++) {
            wt[a] = n_alive > 1 ? worker_weight(j, alive[a]) : 1.0;
            if (!isnan(wt[a])) known += wt[a], n_known++;
        }
        for (int a = 0; a < n_alive; a++)
            if (isnan(wt[a])) wt[a] = n_known ? known / n_known : 1.0;
        split_by_weight(n_pending, n_alive, wt, share);
        int off = 0;
        memset(tasks, 0, sizeof tasks);
        for (int a = 0; a < n_alive; a++) {
            int w = alive[a];
            int cnt = share[a];
            gen_task *g = &tasks[w];
            g->j = j;
            g->worker = w;
            g->prompts = buf + off;
            for (int i = 0; i < cnt; i++) buf[off + i] = pending[off + i];
            g->n_prompts = cnt;
            g->pids = pids;
            g->pn = pn;
            g->n_total = n_total;
            g->G = G;
            g->sa = sa;
            g->seed = seed;
            g->out = out;
            off += cnt;
        }
        pthread_t th[AHA__MAX_ROLLOUT];
        bool started[AHA__MAX_ROLLOUT] = {0};
        for (int a = 0; a < n_alive; a++) {
            int w = alive[a];
            if (tasks[w].n_prompts == 0) continue;
            if (pthread_create(&th[w], NULL, gen_worker, &tasks[w]) != 0) {
                tasks[w].st = aha_errf(&tasks[w].err, AHA_EINTERNAL, "cannot start a thread");
                continue;
            }
            started[w] = true;
        }
        for (int a = 0; a < n_alive; a++)
            if (started[alive[a]]) pthread_join(th[alive[a]], NULL);
        int n_next = 0;
        for (int a = 0; a < n_alive; a++) {
            gen_task *g = &tasks[alive[a]];
            if (g->n_prompts == 0) continue;
            int missing = 0;
            for (int i = 0; i < g->n_prompts; i++) {
                int q = g->prompts[i];
                bool whole = true;
                for (int k = 0; k < G; k++) whole = whole && out[q * G + k].done;
                if (whole) continue;
                /* the group is redone whole elsewhere: drop what this worker sent of it */
                for (int k = 0; k < G; k++) gsample_clear(&out[q * G + k]);
                pending[n_next++] = q;
                missing++;
            }
            if (g->st == AHA_OK && missing)
                g->st = aha_errf(&g->err, AHA_EFORMAT, "rollout %s: stream ended with %d incomplete groups",
                                 j->rollout_addr[g->worker], missing);
            if (g->st != AHA_OK && g->stale && !repushed[g->worker]) {
                /* once per call: a worker that stays stale after a re-push is failed */
                repushed[g->worker] = true;
                aha__job_log(j, "warning: rollout %s: %s; re-pushing the weights, %d prompts sampled again",
                             j->rollout_addr[g->worker], aha_err_msg(&g->err), missing);
                aha_err e2 = {0};
                if (aha__job_repush_worker(j, g->worker, &e2) == AHA_OK) continue;
                g->err = e2;
            }
            if (g->st != AHA_OK) {
                failed[g->worker] = true;
                if (!first.status) first = g->err;
                aha__job_log(j, "warning: %s; %d prompts go to the other workers", aha_err_msg(&g->err), missing);
            }
        }
        n_pending = n_next;
        if (aha__job_cancelled(j)) st = aha_errf(err, AHA_ECANCELLED, "cancelled during generation");
    }
    free(pending);
    free(buf);
    return st;
}

/* ---- reward ------------------------------------------------------------------------------- */

typedef aha__score score_out; /* runner_int.h */

static double component(const Aha__V1__RewardResult *r, const char *name)
{
    for (size_t i = 0; i < r->n_components; i++)
        if (r->components[i]->key && strcmp(r->components[i]->key, name) == 0) return r->components[i]->value;
    return NAN;
}

/* prompts[q] rendered text, answers[q], langs[q]; samples (nq, G) */
static aha_status score_all(aha__job *j, int nq, int G, char *const *prompts, char *const *answers,
                            char *const *langs, const gsample *s, score_out *out, aha_err *err)
{
    size_t n = (size_t)nq * (size_t)G;
    Aha__V1__ScoreItem *it = calloc(n, sizeof *it);
    Aha__V1__ScoreItem **ip = calloc(n, sizeof *ip);
    char (*ids)[24] = calloc(n, sizeof *ids);
    if (!it || !ip || !ids) {
        free(it);
        free(ip);
        free(ids);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    const aha_job_spec *sp = j->sp;
    for (size_t i = 0; i < n; i++) {
        int q = (int)(i / (size_t)G);
        Aha__V1__ScoreItem init = AHA__V1__SCORE_ITEM__INIT;
        it[i] = init;
        snprintf(ids[i], sizeof ids[i], "%d-%d", q, (int)(i % (size_t)G));
        it[i].id = ids[i];
        it[i].prompt = prompts[q];
        it[i].completion = s[i].text ? s[i].text : (char *)"";
        it[i].reference_answer = answers[q] ? answers[q] : (char *)"";
        it[i].language = sp->language ? sp->language : (langs[q] ? langs[q] : (char *)"");
        ip[i] = &it[i];
    }
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"weights\": {\"accuracy\": %.17g, \"format\": %.17g, \"language\": %.17g}}",
             sp->reward_weights.accuracy, sp->reward_weights.format, sp->reward_weights.language);
    Aha__V1__ScoreRequest req = AHA__V1__SCORE_REQUEST__INIT;
    req.n_items = n;
    req.items = ip;
    req.config_json = cfg;
    /* Score is idempotent: a reward service restarting mid-step is waited for, inside the
     * deadline, rather than failing the step */
    aha_rpc_call_opts o = {.timeout_ms = j->timeout_ms, .wait_for_ready = 1};
    ProtobufCMessage *resp = NULL;
    aha_status st = aha_rpc_unary(j->reward, &aha__v1__reward__descriptor, "Score", &req.base, &resp, &o, err);
    if (st != AHA_OK) aha_err_prefix(err, st, "reward %s", j->reward_addr);
    Aha__V1__ScoreResponse *r = (Aha__V1__ScoreResponse *)resp;
    if (st == AHA_OK && r->n_results != n)
        st = aha_errf(err, AHA_EFORMAT, "reward %s: %zu results for %zu items", j->reward_addr, r->n_results, n);
    for (size_t i = 0; st == AHA_OK && i < n; i++) {
        const Aha__V1__RewardResult *x = r->results[i];
        out[i].total = x->total;
        out[i].acc = component(x, "accuracy");
        out[i].fmt = component(x, "format");
        out[i].lang = component(x, "language");
        out[i].answer = x->extracted_answer && *x->extracted_answer ? strdup(x->extracted_answer) : NULL;
        snprintf(out[i].error, sizeof out[i].error, "%s", x->error ? x->error : "");
        if (x->error && *x->error) AHA_DEBUG("reward item %s: %s", x->id, x->error);
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    free(it);
    free(ip);
    free(ids);
    return st;
}

/* ---- reference logprobs ------------------------------------------------------------------- */

typedef struct {
    aha__job *j;
    int nq, G;
    int32_t *const *pids;
    const size_t *pn;
    const gsample *s;
    float **ref; /* (nq*G) arrays of s[i].n values, out */
    double seconds;
    aha_status st;
    aha_err err;
} ref_task;

static void *ref_worker(void *arg)
{
    ref_task *r = arg;
    double t0 = aha_now_s();
    size_t n = (size_t)r->nq * (size_t)r->G;
    Aha__V1__Sequence *sq = calloc(n, sizeof *sq);
    Aha__V1__Sequence **sp = calloc(n, sizeof *sp);
    char (*ids)[24] = calloc(n, sizeof *ids);
    int32_t **tok = calloc(n, sizeof *tok);
    size_t m = 0;
    ProtobufCMessage *resp = NULL;
    r->st = AHA_OK;
    if (!sq || !sp || !ids || !tok) r->st = aha_errf(&r->err, AHA_ENOMEM, "out of memory");
    for (size_t i = 0; r->st == AHA_OK && i < n; i++) {
        if (r->s[i].n == 0) continue;
        int q = (int)(i / (size_t)r->G);
        size_t pl = r->pn[q], len = pl + (size_t)r->s[i].n;
        tok[i] = malloc(len * sizeof *tok[i]);
        if (!tok[i]) {
            r->st = aha_errf(&r->err, AHA_ENOMEM, "out of memory");
            break;
        }
        memcpy(tok[i], r->pids[q], pl * sizeof *tok[i]);
        memcpy(tok[i] + pl, r->s[i].ids, (size_t)r->s[i].n * sizeof *tok[i]);
        Aha__V1__Sequence init = AHA__V1__SEQUENCE__INIT;
        sq[m] = init;
        snprintf(ids[m], sizeof ids[m], "%zu", i);
        sq[m].id = ids[m];
        sq[m].n_token_ids = len;
        sq[m].token_ids = tok[i];
        sq[m].prompt_len = (int32_t)pl;
        sp[m] = &sq[m];
        m++;
    }
    if (r->st == AHA_OK && m > 0) {
        Aha__V1__LogProbsRequest req = AHA__V1__LOG_PROBS_REQUEST__INIT;
        req.n_sequences = m;
        req.sequences = sp;
        /* idempotent: wait (inside the deadline) for a refpolicy that restarts mid-step */
        aha_rpc_call_opts o = {.timeout_ms = r->j->timeout_ms, .wait_for_ready = 1};
        r->st = aha_rpc_unary(r->j->refpolicy, &aha__v1__ref_policy__descriptor, "LogProbs", &req.base, &resp, &o,
                              &r->err);
        if (r->st != AHA_OK) aha_err_prefix(&r->err, r->st, "refpolicy %s", r->j->refpolicy_addr);
        Aha__V1__LogProbsResponse *lr = (Aha__V1__LogProbsResponse *)resp;
        if (r->st == AHA_OK && lr->n_results != m)
            r->st = aha_errf(&r->err, AHA_EFORMAT, "refpolicy: %zu results for %zu sequences", lr->n_results, m);
        for (size_t k = 0; r->st == AHA_OK && k < m; k++) {
            size_t i = (size_t)strtoull(sq[k].id, NULL, 10);
            const Aha__V1__SequenceLogProbs *x = lr->results[k];
            if (x->n_logprobs != (size_t)r->s[i].n) {
                r->st = aha_errf(&r->err, AHA_EFORMAT, "refpolicy: sequence %zu has %zu logprobs, expected %d", i,
                                 x->n_logprobs, r->s[i].n);
                break;
            }
            r->ref[i] = malloc(x->n_logprobs * sizeof(float));
            if (!r->ref[i]) {
                r->st = aha_errf(&r->err, AHA_ENOMEM, "out of memory");
                break;
            }
            memcpy(r->ref[i], x->logprobs, x->n_logprobs * sizeof(float));
        }
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    for (size_t i = 0; tok && i < n; i++) free(tok[i]);
    free(tok);
    free(sq);
    free(sp);
    free(ids);
    r->seconds = aha_now_s() - t0;
    return NULL;
}

/* ---- the learner's update --------------------------------------------------------------- */

typedef struct {
    int32_t *ids, *cu, *from;
    float *mask, *old, *ref, *adv;
    int n_seqs;
    aha_batch b;
} mbatch;

static void mbatch_free(mbatch *b)
{
    free(b->ids);
    free(b->cu);
    free(b->from);
    free(b->mask);
    free(b->old);
    free(b->ref);
    free(b->adv);
}

typedef struct {
    double loss, grad_norm, kl_mean, clip_frac, ratio_mean, mismatch;
} train_out;

static aha_status train_step(aha__job *j, int nq, int G, int32_t *const *pids, const size_t *pn,
                             const gsample *s, float *const *ref, const float *adv, train_out *to, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    bool use_kl = ref != NULL;
    int n = nq * G;
    int mbs = sp->micro_batch > 0 ? sp->micro_batch : n;
    int *order = malloc((size_t)n * sizeof *order);
    if (!order) return aha_errf(err, AHA_ENOMEM, "out of memory");
    int n_train = 0;
    double comp_tokens = 0;
    for (int i = 0; i < n; i++)
        if (s[i].n > 0) {
            order[n_train++] = i;
            comp_tokens += s[i].n;
        }
    /* this rank's share of the sequences (all of them with one rank); the loss scale below
     * counts the whole step on every rank, so the all-reduced SUM is the batch gradient */
    int sb = 0, se = n_train;
    if (j->comm) aha_dp_shard(n_train, j->rank, j->world, &sb, &se);
    int n_mb = (se - sb + mbs - 1) / mbs;
    mbatch *mb = calloc((size_t)(n_mb ? n_mb : 1), sizeof *mb);
    aha_status st = mb ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
    double mism_sum = 0, mism_n = 0;
    /* pack micro-batches and compute old logprobs with the learner's numerics */
    for (int b = 0; st == AHA_OK && b < n_mb; b++) {
        mbatch *m = &mb[b];
        int i0 = sb + b * mbs, ns = se - i0 < mbs ? se - i0 : mbs;
        m->n_seqs = ns;
        m->cu = malloc((size_t)(ns + 1) * sizeof *m->cu);
        m->from = malloc((size_t)ns * sizeof *m->from);
        m->adv = malloc((size_t)ns * sizeof *m->adv);
        if (!m->cu || !m->from || !m->adv) {
            st = aha_errf(err, AHA_ENOMEM, "out of memory");
            break;
        }
        m->cu[0] = 0;
        for (int k = 0; k < ns; k++) {
            int i = order[i0 + k], q = i / G;
            m->cu[k + 1] = m->cu[k] + (int32_t)(pn[q] + (size_t)s[i].n);
            m->from[k] = (int32_t)pn[q];
            m->adv[k] = adv[i];
        }
        int T = m->cu[ns], L = T - ns;
        m->ids = malloc((size_t)T * sizeof *m->ids);
        m->mask = calloc((size_t)L, sizeof *m->mask);
        m->old = calloc((size_t)L, sizeof *m->old);
        m->ref = use_kl ? calloc((size_t)L, sizeof *m->ref) : NULL;
        if (!m->ids || !m->mask || !m->old || (use_kl && !m->ref)) {
            st = aha_errf(err, AHA_ENOMEM, "out of memory");
            break;
        }
        for (int k = 0; k < ns; k++) {
            int i = order[i0 + k], q = i / G;
            memcpy(m->ids + m->cu[k], pids[q], pn[q] * sizeof *m->ids);
            memcpy(m->ids + m->cu[k] + pn[q], s[i].ids, (size_t)s[i].n * sizeof *m->ids);
            /* completion token c sits at position pn+c, predicted by logprob entry pn+c-1 */
            int base = m->cu[k] - k + (int)pn[q] - 1;
            for (int c = 0; c < s[i].n; c++) {
                m->mask[base + c] = 1.0f;
                if (use_kl) m->ref[base + c] = ref[i][c];
            }
        }
        m->b = (aha_batch){m->ids, m->cu, ns, m->from};
        st = aha_batch_check(j->m, &m->b, err);
        if (st == AHA_OK) st = aha_model_token_logprobs(j->m, &m->b, m->old, NULL, err);
        for (int k = 0; st == AHA_OK && k < ns; k++) {
            int i = order[i0 + k], q = i / G;
            int base = m->cu[k] - k + (int)pn[q] - 1;
            for (int c = 0; c < s[i].n; c++) {
                mism_sum += fabs((double)s[i].lp[c] - (double)m->old[base + c]);
                mism_n += 1;
            }
        }
    }
    double kl = 0, clipped = 0, ratio1 = 0, tok1 = 0, tok_all = 0, gn = 0, loss1 = 0;
    int mu = sp->mu > 0 ? sp->mu : 1;
    double lr = aha_lr_at(&sp->optim, j->step, j->total);
    aha_dp_opts dpo = aha__dp_opts(j, lr);
    /* every rank hears of any rank's failure before a collective waits for it */
    st = aha__dp_sync(j, st, err);
    for (int pass = 0; st == AHA_OK && pass < mu; pass++) {
        st = aha_train_zero_grad(j->t, err);
        double loss = 0;
        for (int b = 0; st == AHA_OK && b < n_mb; b++) {
            mbatch *m = &mb[b];
            aha_grpo_args a = {
                .mask = m->mask,
                .old_logprobs = m->old,
                .ref_logprobs = use_kl ? m->ref : NULL,
                .advantages = m->adv,
                .eps_low = (float)sp->loss.epsilon_low,
                .eps_high = (float)sp->loss.epsilon_high,
                .beta = use_kl ? (float)sp->loss.beta : 0.0f,
                .norm = sp->loss.token_level ? AHA_GRPO_NORM_TOKEN : AHA_GRPO_NORM_SEQ,
                /* Eq. 1 averages over the G outputs of each question and over the B questions:
                 * every sequence weighs 1/(B·G); token-level weighs every token 1/(all tokens) */
                .scale = sp->loss.token_level ? (float)(1.0 / comp_tokens) : (float)(1.0 / (double)n),
            };
            aha_grpo_stats gs = {0};
            st = aha_model_grpo_backward(j->m, j->t, &m->b, &a, &gs, NULL, err);
            loss += gs.loss;
            kl += gs.kl_sum;
            clipped += gs.clipped;
            tok_all += gs.tokens;
            if (pass == 0) {
                ratio1 += gs.ratio_sum;
                tok1 += gs.tokens;
            }
        }
        if (j->comm) st = aha__dp_sync(j, st, err);
        if (st != AHA_OK) break;
        if (pass == 0) loss1 = loss;
        /* all-reduce (several ranks), clip, AdamW */
        aha_dp_info info = {0};
        st = aha_dp_step(j->comm, j->m, j->t, &dpo, &info, err);
        gn = info.grad_norm;
    }
    if (st == AHA_OK && j->comm) {
        double v[8] = {loss1, kl, clipped, tok_all, ratio1, tok1, mism_sum, mism_n};
        st = aha_dp_sum_host(j->comm, v, 8, err);
        loss1 = v[0], kl = v[1], clipped = v[2], tok_all = v[3], ratio1 = v[4], tok1 = v[5], mism_sum = v[6],
        mism_n = v[7];
    }
    to->loss = loss1;
    to->grad_norm = gn;
    to->kl_mean = use_kl && tok_all > 0 ? kl / tok_all : NAN;
    to->clip_frac = tok_all > 0 ? clipped / tok_all : 0;
    to->ratio_mean = tok1 > 0 ? ratio1 / tok1 : NAN;
    to->mismatch = mism_n > 0 ? mism_sum / mism_n : 0;
    for (int b = 0; mb && b < n_mb; b++) mbatch_free(&mb[b]);
    free(mb);
    free(order);
    return st;
}

/* ---- the other learner ranks ------------------------------------------------------------- */

/* The step's sequences as train_step reads them, for the other ranks (dprun.c). */
static void pack_step(aha__job *j, int nq, int G, int32_t *const *pids, const size_t *pn, const gsample *s,
                      float *const *ref, const float *adv, aha__wbuf *w)
{
    aha__wbuf_i64(w, j->total);
    aha__wbuf_i64(w, nq);
    aha__wbuf_i64(w, G);
    aha__wbuf_i64(w, ref != NULL);
    for (int q = 0; q < nq; q++) {
        aha__wbuf_i64(w, (int64_t)pn[q]);
        aha__wbuf_put(w, pids[q], pn[q] * sizeof *pids[q]);
    }
    for (int i = 0; i < nq * G; i++) {
        aha__wbuf_i64(w, s[i].n);
        aha__wbuf_put(w, s[i].ids, (size_t)s[i].n * sizeof *s[i].ids);
        aha__wbuf_put(w, s[i].lp, (size_t)s[i].n * sizeof *s[i].lp);
        if (ref && s[i].n > 0) aha__wbuf_put(w, ref[i], (size_t)s[i].n * sizeof *ref[i]);
        aha__wbuf_put(w, &adv[i], sizeof adv[i]);
    }
}

static void *copy_out(aha__rbuf *r, size_t bytes)
{
    const void *p = aha__rbuf_view(r, bytes);
    void *d = p ? malloc(bytes ? bytes : 1) : NULL;
    if (d && bytes) memcpy(d, p, bytes);
    return d;
}

aha_status aha__grpo_follow_step(aha__job *j, aha__rbuf *r, aha_err *err)
{
    j->total = aha__rbuf_i64(r);
    int64_t nq = aha__rbuf_i64(r), G = aha__rbuf_i64(r), kl = aha__rbuf_i64(r);
    aha_status st = AHA_OK;
    if (r->bad || nq < 1 || G < 1 || nq > 65536 || G > 65536 || nq * G > (1 << 22))
        st = aha_errf(err, AHA_EFORMAT, "grpo step from rank 0: bad shape %" PRId64 " x %" PRId64, nq, G);
    int64_t n = st == AHA_OK ? nq * G : 0;
    int32_t **pids = st == AHA_OK ? calloc((size_t)nq, sizeof *pids) : NULL;
    size_t *pn = st == AHA_OK ? calloc((size_t)nq, sizeof *pn) : NULL;
    gsample *s = st == AHA_OK ? calloc((size_t)n, sizeof *s) : NULL;
    float **ref = st == AHA_OK ? calloc((size_t)n, sizeof *ref) : NULL;
    float *adv = st == AHA_OK ? calloc((size_t)n, sizeof *adv) : NULL;
    if (st == AHA_OK && (!pids || !pn || !s || !ref || !adv)) st = aha_errf(err, AHA_ENOMEM, "out of memory");
    for (int64_t q = 0; st == AHA_OK && q < nq; q++) {
        int64_t len = aha__rbuf_i64(r);
        pids[q] = !r->bad && len >= 1 && len <= (1 << 24) ? copy_out(r, (size_t)len * sizeof(int32_t)) : NULL;
        pn[q] = (size_t)len;
        if (!pids[q]) st = aha_errf(err, AHA_EFORMAT, "grpo step from rank 0: prompt %" PRId64 " malformed", q);
    }
    for (int64_t i = 0; st == AHA_OK && i < n; i++) {
        int64_t len = aha__rbuf_i64(r);
        bool ok = !r->bad && len >= 0 && len <= (1 << 24);
        if (ok) {
            s[i].n = (int)len;
            s[i].ids = copy_out(r, (size_t)len * sizeof(int32_t));
            s[i].lp = copy_out(r, (size_t)len * sizeof(float));
            if (kl && len > 0) ref[i] = copy_out(r, (size_t)len * sizeof(float));
            ok = s[i].ids && s[i].lp && (!kl || len == 0 || ref[i]) && aha__rbuf_get(r, &adv[i], sizeof adv[i]);
        }
        if (!ok) st = aha_errf(err, AHA_EFORMAT, "grpo step from rank 0: sample %" PRId64 " malformed", i);
    }
    if (st == AHA_OK && r->off != r->n)
        st = aha_errf(err, AHA_EFORMAT, "grpo step from rank 0: %zu bytes after the last sample", r->n - r->off);
    train_out to = {0};
    /* a malformed step still takes part in the status agreement, so rank 0 hears of it */
    if (st == AHA_OK) st = train_step(j, (int)nq, (int)G, pids, pn, s, kl ? ref : NULL, adv, &to, err);
    else st = aha__dp_sync(j, st, err);
    for (int64_t q = 0; pids && q < nq; q++) free(pids[q]);
    for (int64_t i = 0; s && ref && i < n; i++) {
        gsample_clear(&s[i]);
        free(ref[i]);
    }
    free(pids);
    free(pn);
    free(s);
    free(ref);
    free(adv);
    return st;
}

/* ---- evaluation --------------------------------------------------------------------------- */

/* cons@k equivalence: the reward service's GroupAnswers over one question's k answers,
 * looked up by pointer (the samples hold the very strings that were grouped) */
typedef struct {
    const char **ans;
    int32_t *group;
    int n;
} equiv_ctx;

static bool equiv_by_group(void *ctx, const char *a, const char *b)
{
    equiv_ctx *e = ctx;
    int ia = -1, ib = -1;
    for (int i = 0; i < e->n; i++) {
        if (e->ans[i] == a && ia < 0) ia = i;
        if (e->ans[i] == b && ib < 0) ib = i;
    }
    if (ia < 0 || ib < 0) return strcmp(a, b) == 0;
    return e->group[ia] == e->group[ib];
}

static aha_status group_answers(aha__job *j, const char **ans, int k, int32_t *group, aha_err *err)
{
    char **a = calloc((size_t)k, sizeof *a);
    int m = 0;
    int map[1024];
    if (!a || k > 1024) {
        free(a);
        return aha_errf(err, AHA_ELIMIT, "eval.k: at most 1024");
    }
    for (int i = 0; i < k; i++) {
        group[i] = i;
        if (ans[i]) {
            map[m] = i;
            a[m++] = (char *)ans[i];
        }
    }
    aha_status st = AHA_OK;
    if (m > 1) {
        Aha__V1__GroupAnswersRequest req = AHA__V1__GROUP_ANSWERS_REQUEST__INIT;
        req.n_answers = (size_t)m;
        req.answers = a;
        req.extract = 0;
        aha_rpc_call_opts o = {.timeout_ms = j->timeout_ms, .wait_for_ready = 1};
        ProtobufCMessage *resp = NULL;
        st = aha_rpc_unary(j->reward, &aha__v1__reward__descriptor, "GroupAnswers", &req.base, &resp, &o, err);
        Aha__V1__GroupAnswersResponse *r = (Aha__V1__GroupAnswersResponse *)resp;
        if (st == AHA_OK && r->n_group != (size_t)m)
            st = aha_errf(err, AHA_EFORMAT, "reward GroupAnswers: %zu groups for %d answers", r->n_group, m);
        for (int i = 0; st == AHA_OK && i < m; i++) {
            if (r->group[i] < 0 || r->group[i] >= m) {
                st = aha_errf(err, AHA_EFORMAT, "reward GroupAnswers: group %d out of range", r->group[i]);
                break;
            }
            group[map[i]] = map[r->group[i]];
        }
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(a);
    return st;
}

/* The arrays of one batch of questions as generate_all and score_all take them (an eval
 * dataset or a training step), freed together; their entries are the caller's to clear. */
static void batch_arrays_free(int32_t **pids, size_t *pn, char **prompts, char **answers, char **langs,
                              gsample *s, score_out *sc)
{
    free(pids);
    free(pn);
    free(prompts);
    free(answers);
    free(langs);
    free(s);
    free(sc);
}

aha_status aha__eval_run(aha__job *j, const aha_eval_spec *es, int64_t step, double *pass1, aha_err *err)
{
    double t0 = aha_now_s();
    if (!j->eval_sets) {
        j->eval_sets = calloc((size_t)es->n_datasets, sizeof *j->eval_sets);
        if (!j->eval_sets) return aha_errf(err, AHA_ENOMEM, "out of memory");
        for (int d = 0; d < es->n_datasets; d++)
            AHA_TRY(aha_dataset_load(&es->datasets[d], &j->eval_sets[d], err));
    }
    aha_status st = AHA_OK;
    for (int d = 0; st == AHA_OK && d < es->n_datasets; d++) {
        const aha_dataset *ds = &j->eval_sets[d];
        int nq = (int)ds->n, k = es->k;
        int32_t **pids = calloc((size_t)nq, sizeof *pids);
        size_t *pn = calloc((size_t)nq, sizeof *pn);
        char **prompts = calloc((size_t)nq, sizeof *prompts);
        char **answers = calloc((size_t)nq, sizeof *answers);
        char **langs = calloc((size_t)nq, sizeof *langs);
        gsample *s = calloc((size_t)nq * (size_t)k, sizeof *s);
        score_out *sc = calloc((size_t)nq * (size_t)k, sizeof *sc);
        aha_eval_sample *es_ = calloc((size_t)nq * (size_t)k, sizeof *es_);
        if (!pids || !pn || !prompts || !answers || !langs || !s || !sc || !es_)
            st = aha_errf(err, AHA_ENOMEM, "out of memory");
        for (int q = 0; st == AHA_OK && q < nq; q++) {
            st = aha_template_render(j->sp->template_text, ds->items[q].prompt, &prompts[q], err);
            if (st == AHA_OK)
                st = aha_encode_prompt(j->tok, j->sp->template_text, ds->items[q].prompt, 0, &pids[q], &pn[q], err);
            answers[q] = ds->items[q].answer;
            langs[q] = ds->items[q].lang;
        }
        if (st == AHA_OK)
            st = generate_all(j, nq, pids, pn, k, &es->sampling, aha_mix64(aha_mix64(j->sp->seed, (uint64_t)step), SEED_EVAL),
                              s, err);
        if (st == AHA_OK) st = score_all(j, nq, k, prompts, answers, langs, s, sc, err);
        aha_eval_result r;
        memset(&r, 0, sizeof r);
        const char **ans = calloc((size_t)k, sizeof *ans);
        int32_t *grp = calloc((size_t)k, sizeof *grp);
        if (st == AHA_OK && (!ans || !grp)) st = aha_errf(err, AHA_ENOMEM, "out of memory");
        /* cons@k question by question, each with its own equivalence classes */
        double cons_sum = 0;
        for (int q = 0; st == AHA_OK && q < nq; q++) {
            for (int i = 0; i < k; i++) {
                size_t x = (size_t)q * (size_t)k + (size_t)i;
                es_[x] = (aha_eval_sample){sc[x].answer, sc[x].acc, sc[x].fmt, s[x].n};
                ans[i] = sc[x].answer;
            }
            st = group_answers(j, ans, k, grp, err);
            equiv_ctx ec = {ans, grp, k};
            aha_eval_result one;
            if (st == AHA_OK) st = aha_eval_compute(&es_[(size_t)q * (size_t)k], 1, k, equiv_by_group, &ec, &one, err);
            if (st == AHA_OK) cons_sum += one.cons_at_k;
        }
        if (st == AHA_OK) st = aha_eval_compute(es_, nq, k, NULL, NULL, &r, err);
        if (st == AHA_OK) r.cons_at_k = nq > 0 ? cons_sum / nq : 0;
        char *line = NULL;
        if (st == AHA_OK) st = aha_eval_record_json(&r, es->datasets[d].name, j->sp->name, step, &es->sampling, &line, err);
        if (st == AHA_OK) st = aha__job_record(j, AHA_EV_EVAL, step, j->eval_path, line, err);
        free(line);
        if (st == AHA_OK) {
            aha__job_log(j, "eval %s at step %" PRId64 ": pass@1 %.3f cons@%d %.3f format %.3f length %.1f (%.1fs)",
                         es->datasets[d].name, step, r.pass_at_1, k, r.cons_at_k, r.format_rate, r.length_mean,
                         aha_now_s() - t0);
            if (pass1 && d == 0) *pass1 = r.pass_at_1;
            if (nq > 0 && s[0].text)
                aha__job_log(j, "eval %s sample: %s => \"%.200s\" (reward %.2f)", es->datasets[d].name,
                             ds->items[0].prompt, s[0].text, sc[0].total);
        }
        free(ans);
        free(grp);
        for (int q = 0; q < nq; q++) {
            if (pids) free(pids[q]);
            if (prompts) free(prompts[q]);
        }
        for (size_t x = 0; s && sc && x < (size_t)nq * (size_t)k; x++) {
            gsample_clear(&s[x]);
            free(sc[x].answer);
        }
        batch_arrays_free(pids, pn, prompts, answers, langs, s, sc);
        free(es_);
    }
    return st;
}

/* ---- the loop ----------------------------------------------------------------------------- */

/* reference weights at job start: ref_model (default the initial policy) */
static aha_status push_reference(aha__job *j, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    const char *dir = sp->ref_model ? sp->ref_model : sp->model;
    bool refreshed = sp->ref_refresh_steps > 0 && j->step >= sp->ref_refresh_steps;
    aha_model *keep = j->m, *ref = NULL;
    aha_status st = AHA_OK;
    if (refreshed) {
        aha__job_log(j, "warning: resuming after a reference refresh: the reference becomes the resumed policy");
    } else if (j->resumed || sp->ref_model) {
        st = aha_model_open(dir, j->be, NULL, &ref, err);
        if (st != AHA_OK) return aha_err_prefix(err, st, "spec.ref_model");
        j->m = ref;
    }
    aha_err e2 = {0};
    st = aha__job_push(j, 0, false, true, NULL, &e2);
    j->m = keep;
    aha_model_free(ref);
    if (st == AHA_EUNSUPPORTED || (st != AHA_OK && strstr(e2.msg, "UNIMPLEMENTED"))) {
        aha__job_log(j, "warning: refpolicy takes no weights (%s); it keeps the model it loaded", aha_err_msg(&e2));
        return AHA_OK;
    }
    if (st != AHA_OK) *err = e2;
    return st;
}

static aha_status record_step(aha__job *j, aha_step_metrics *mt, const train_out *to, aha_err *err)
{
    char *line = NULL;
    AHA_TRY(aha_step_metrics_json(mt, &line, err));
    json_t *o = json_loads(line, 0, NULL);
    free(line);
    if (!o) return aha_errf(err, AHA_EINTERNAL, "metrics record did not parse");
    json_object_set_new(o, "logprob_mismatch", json_real(to->mismatch));
    if (isfinite(to->ratio_mean)) json_object_set_new(o, "ratio_mean", json_real(to->ratio_mean));
    json_object_set_new(o, "policy_version", json_integer(j->pushed_version));
    json_object_set_new(o, "push_path", json_string(j->push_path ? j->push_path : "grpc"));
    line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line) return aha_errf(err, AHA_ENOMEM, "out of memory");
    aha_status st = aha__job_record(j, AHA_EV_METRICS, mt->step, j->metrics_path, line, err);
    free(line);
    return st;
}

aha_status aha__grpo_run(aha__job *j, const aha_dataset *ds, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    int B = sp->questions_per_step, G = sp->group_size;
    bool use_kl = sp->loss.kl && sp->loss.beta > 0;
    bool do_eval = sp->has_eval && sp->eval.n_datasets > 0;
    double t_push0 = 0;
    /* the workers sample from this policy from the first step on, whatever they loaded */
    AHA_TRY(aha__job_push(j, j->step, true, false, &t_push0, err));
    if (use_kl) AHA_TRY(push_reference(j, err));
    aha__job_log(j, "grpo: %" PRId64 " steps of %d questions x %d samples, %d rollout workers%s", j->total, B, G,
                 j->n_rollout, j->resumed ? " (resumed)" : "");
    if (do_eval && !j->resumed) AHA_TRY(aha__eval_run(j, &sp->eval, 0, NULL, err));

    size_t n = (size_t)B * (size_t)G;
    int32_t **pids = calloc((size_t)B, sizeof *pids);
    size_t *pn = calloc((size_t)B, sizeof *pn);
    char **prompts = calloc((size_t)B, sizeof *prompts);
    char **answers = calloc((size_t)B, sizeof *answers);
    char **langs = calloc((size_t)B, sizeof *langs);
    gsample *s = calloc(n, sizeof *s);
    score_out *sc = calloc(n, sizeof *sc);
    float **ref = calloc(n, sizeof *ref);
    float *adv = calloc(n, sizeof *adv);
    double *rew = calloc(n, sizeof *rew);
    aha_completion_stats *cs = calloc((size_t)G, sizeof *cs);
    aha_status st = AHA_OK;
    if (!pids || !pn || !prompts || !answers || !langs || !s || !sc || !ref || !adv || !rew || !cs)
        st = aha_errf(err, AHA_ENOMEM, "out of memory");
    while (st == AHA_OK && j->step < j->total) {
        double t0;
        aha_step_metrics mt;
        st = aha__job_step_begin(j, sp->name, &mt, &t0, err);
        if (st != AHA_OK) break;
        /* 1. questions → prompts (a question whose prompt is too long is passed over) */
        int64_t tries = 0;
        for (int q = 0; st == AHA_OK && q < B;) {
            int64_t x = aha_data_order_next(&j->order);
            const aha_example *ex = &ds->items[x];
            aha_err e2 = {0};
            aha_status s2 = aha_encode_prompt(j->tok, sp->template_text, ex->prompt, sp->max_prompt_tokens, &pids[q],
                                              &pn[q], &e2);
            if (s2 == AHA_ELIMIT) {
                if (++tries > ds->n) st = aha_errf(err, AHA_EINVAL, "spec.max_prompt_tokens: no prompt fits (%s)", e2.msg);
                continue;
            }
            if (s2 != AHA_OK) {
                *err = e2;
                st = s2;
                break;
            }
            st = aha_template_render(sp->template_text, ex->prompt, &prompts[q], err);
            answers[q] = ex->answer;
            langs[q] = ex->lang;
            q++;
        }
        /* 2. G completions per prompt */
        double t1 = aha_now_s();
        if (st == AHA_OK)
            st = generate_all(j, B, pids, pn, G, &sp->sampling,
                              aha_mix64(aha_mix64(sp->seed, (uint64_t)j->step), SEED_TRAIN), s, err);
        mt.t_generate = aha_now_s() - t1;
        if (st == AHA_OK && aha__job_cancelled(j)) st = aha_errf(err, AHA_ECANCELLED, "cancelled at step %" PRId64, j->step);
        /* 3. rewards and reference logprobs at the same time */
        ref_task rt = {j, B, G, pids, pn, s, ref, 0, AHA_OK, {0}};
        pthread_t th;
        bool ref_started = false;
        if (st == AHA_OK && use_kl) {
            if (pthread_create(&th, NULL, ref_worker, &rt) != 0) st = aha_errf(err, AHA_EINTERNAL, "cannot start a thread");
            else ref_started = true;
        }
        double t2 = aha_now_s();
        if (st == AHA_OK) st = score_all(j, B, G, prompts, answers, langs, s, sc, err);
        mt.t_score = aha_now_s() - t2;
        if (ref_started) {
            pthread_join(th, NULL);
            mt.t_reference = rt.seconds;
            if (st == AHA_OK && rt.st != AHA_OK) {
                st = rt.st;
                *err = rt.err;
            }
        }
        /* 4. advantages (Eq. 3) and the step's reward statistics */
        if (st == AHA_OK) {
            for (size_t i = 0; i < n; i++) rew[i] = sc[i].total;
            aha_grpo_advantages(rew, B, G, sp->loss.scale_std, sp->loss.std_eps, adv, NULL);
            for (int q = 0; q < B; q++) {
                for (int g = 0; g < G; g++) {
                    size_t i = (size_t)q * (size_t)G + (size_t)g;
                    cs[g] = (aha_completion_stats){sc[i].total, sc[i].acc, sc[i].fmt, sc[i].lang, s[i].n,
                                                   s[i].truncated, s[i].text, s[i].text ? strlen(s[i].text) : 0};
                    mt.tokens += s[i].n;
                }
                aha_step_metrics_add_group(&mt, cs, G, sp->reflection_words, sp->n_reflection_words);
            }
        }
        if (st == AHA_OK && aha__job_cancelled(j)) st = aha_errf(err, AHA_ECANCELLED, "cancelled at step %" PRId64, j->step);
        /* 5. old logprobs, mu passes of Eq. 1, clip, AdamW */
        train_out to = {0};
        double t3 = aha_now_s();
        if (st == AHA_OK && j->comm) {
            aha__wbuf w = {0};
            pack_step(j, B, G, pids, pn, s, use_kl ? ref : NULL, adv, &w);
            st = aha__dp_send_step(j, &w, err);
            aha__wbuf_free(&w);
        }
        if (st == AHA_OK) st = train_step(j, B, G, pids, pn, s, use_kl ? ref : NULL, adv, &to, err);
        mt.t_train = aha_now_s() - t3;
        if (st == AHA_OK) {
            j->step++;
            mt.loss = to.loss;
            mt.grad_norm = to.grad_norm;
            mt.kl_mean = to.kl_mean;
            mt.clip_frac = to.clip_frac;
            mt.lr = aha_lr_at(&sp->optim, j->step - 1, j->total);
            if (to.mismatch > MISMATCH_WARN)
                aha__job_log(j, "warning: step %" PRId64 ": rollout logprobs differ from the learner's by %.4f on average",
                             j->step, to.mismatch);
        }
        /* 6. the new policy to the workers (and the reference when due) */
        if (st == AHA_OK) {
            bool refresh = use_kl && sp->ref_refresh_steps > 0 && j->step % sp->ref_refresh_steps == 0;
            st = aha__job_push(j, j->step, true, refresh, &mt.t_push, err);
            if (st == AHA_OK && refresh) aha__job_log(j, "reference refreshed to the policy of step %" PRId64, j->step);
        }
        /* 7. checkpoint, metrics, eval */
        bool last = j->step == j->total;
        if (st == AHA_OK && ((sp->checkpoint_every > 0 && j->step % sp->checkpoint_every == 0) || last))
            st = aha__job_checkpoint(j, err);
        mt.t_total = aha_now_s() - t0;
        if (st == AHA_OK) st = record_step(j, &mt, &to, err);
        aha__job_progress(j);
        if (st == AHA_OK && do_eval && ((sp->eval.every > 0 && j->step % sp->eval.every == 0) || last))
            st = aha__eval_run(j, &sp->eval, j->step, NULL, err);
        for (int q = 0; q < B; q++) {
            free(pids[q]);
            free(prompts[q]);
            pids[q] = NULL;
            prompts[q] = NULL;
        }
        for (size_t i = 0; i < n; i++) {
            gsample_clear(&s[i]);
            free(sc[i].answer);
            sc[i].answer = NULL;
            free(ref[i]);
            ref[i] = NULL;
        }
    }
    batch_arrays_free(pids, pn, prompts, answers, langs, s, sc);
    free(ref);
    free(adv);
    free(rew);
    free(cs);
    return st;
}

/* ---- for the other job kinds (jobkinds.c) -------------------------------------------------- */

aha_status aha__generate_all(aha__job *j, int n_prompts, int32_t *const *pids, const size_t *pn, int n,
                         const aha_sampling_spec *sa, uint64_t seed, aha__gsample *out, aha_err *err)
{
    return generate_all(j, n_prompts, pids, pn, n, sa, seed, out, err);
}

aha_status aha__score_all(aha__job *j, int n_prompts, int n, char *const *prompts, char *const *answers,
                      char *const *langs, const aha__gsample *s, aha__score *out, aha_err *err)
{
    return score_all(j, n_prompts, n, prompts, answers, langs, s, out, err);
}

void aha__gsample_clear(aha__gsample *s) { gsample_clear(s); }
