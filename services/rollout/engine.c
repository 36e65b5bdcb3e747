/* engine.c: see engine.h. The engine thread is the only one that touches the model, the KV
 * cache and the sequences; the mutex guards the request queue, cancellation counters, the
 * pending weight update and the statistics. Model work runs with the mutex released. */
#include "engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/rng.h"

struct aha_gen {
    aha_engine *e;
    aha_gen_request r;
    int total;          /* n_prompts * n */
    int finished;       /* delivered + dropped */
    int next_prompt;    /* admission cursor */
    int next_sample;
    int active;         /* sequences in slots */
    int queued;         /* samples not admitted yet */
    atomic_int cancel;
    aha_status st;      /* an engine failure while serving this request */
    aha_err err;
    aha_gen *next;      /* queue link */
};

typedef struct {
    int used;
    aha_gen *g;
    int prompt, index, prompt_len;
    aha_rng rng;        /* host draws: the stream aha_rng_seed(S, index) */
    int32_t rng_id;     /* model draws: the identity passed to aha_model_decode_sample */
    int32_t *ids;
    float *lp;
    int n;
    int32_t last;       /* sampled token not yet in the cache */
    int64_t first_version;
    char *bytes;        /* decoded bytes so far, for stop strings */
    size_t nbytes, capb;
} seq_t;

struct aha_engine {
    aha_engine_opts o;
    aha_backend *be;
    aha_model *m;
    aha_kv_cache *kv;
    aha_tokenizer *tok;
    aha_engine_draw draw; /* HOST or MODEL (auto resolved at creation) */
    int V;
    int max_new_cap;    /* max_seq_len */

    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* the engine thread waits here */
    pthread_cond_t done;    /* waiters (requests, weight updates) wait here */
    int stop;
    aha_gen *qhead, *qtail;
    int queued;

    const aha_weight_rx *pending;
    /* or a weight source other than an upload (the NCCL weights group, dist/weightgroup.h) */
    aha_status (*pending_fn)(void *arg, aha_model *m, aha_err *err);
    void *pending_arg;
    int64_t pending_version;
    int pending_done;
    aha_status pending_st;
    aha_err pending_err;

    int64_t version;
    aha_engine_stats stats;

    /* engine-thread state */
    seq_t *seqs;        /* (max_batch) by slot */
    int n_active;
    float *logits;      /* (max_batch, V), host draws only */
    float *first;       /* (V) prefill logits */
    int *slots;
    int32_t *toks;
    void *work;
    /* model draws: one decode call per group of equal sampling settings */
    int *gslots;        /* (max_batch) */
    int32_t *gtoks, *grng, *gout; /* (max_batch) */
    float *glp;         /* (max_batch) */
    char *gdone;        /* (max_batch) by position in slots */
};

static void seq_free_buffers(seq_t *s)
{
    free(s->ids);
    free(s->lp);
    free(s->bytes);
    memset(s, 0, sizeof *s);
}

/* mutex held */
static void gen_finished_one(aha_engine *e, aha_gen *g)
{
    g->finished++;
    if (g->finished == g->total) pthread_cond_broadcast(&e->done);
}

static void release_slot(aha_engine *e, int slot)
{
    seq_free_buffers(&e->seqs[slot]);
    aha_kv_cache_reset_slot(e->kv, slot);
    e->n_active--;
}

/* Deliver sequence `slot` and free it. Mutex NOT held. */
static void deliver(aha_engine *e, int slot, const char *reason)
{
    seq_t *s = &e->seqs[slot];
    aha_gen *g = s->g;
    char *text = NULL;
    size_t text_len = 0;
    if (e->tok && atomic_load(&g->cancel) == 0) {
        int n = s->n;
        if (n > 0 && aha_model_cfg(e->m) && aha_config_is_eos(aha_model_cfg(e->m), s->ids[n - 1])) n--;
        aha_err derr;
        if (aha_tokenizer_decode_len(e->tok, s->ids, (size_t)n, &text, &text_len, &derr) == AHA_OK) {
            /* a stop string ends the text where it first occurs */
            for (int k = 0; k < g->r.n_stop; k++) {
                size_t sl = strlen(g->r.stop[k]);
                if (!sl) continue;
                char *hit = memmem(text, text_len, g->r.stop[k], sl);
                if (hit) text_len = (size_t)(hit - text);
            }
        } else {
            text = NULL;
            text_len = 0;
        }
    }
    pthread_mutex_lock(&e->mu);
    int64_t version = e->version;
    pthread_mutex_unlock(&e->mu);
    if (atomic_load(&g->cancel) == 0 && g->r.on_done) {
        aha_completion c = {
            .prompt = s->prompt, .index = s->index, .ids = s->ids, .logprobs = s->lp, .n_ids = s->n,
            .text = text ? text : "", .text_len = text_len, .finish_reason = reason,
            .version = version, .first_version = s->first_version,
        };
        g->r.on_done(g->r.user, &c);
    }
    free(text);
    pthread_mutex_lock(&e->mu);
    g->active--;
    gen_finished_one(e, g);
    pthread_mutex_unlock(&e->mu);
    release_slot(e, slot);
}

/* Append a sampled token; returns the finish reason or NULL to go on. */
static const char *take_token(aha_engine *e, seq_t *s, int32_t tok, float lp)
{
    s->ids[s->n] = tok;
    s->lp[s->n] = lp;
    s->n++;
    s->last = tok;
    if (aha_config_is_eos(aha_model_cfg(e->m), tok)) return "stop";
    if (e->tok && s->g->r.n_stop > 0) {
        size_t bl = 0;
        const char *b = aha_tokenizer_token_bytes(e->tok, tok, &bl);
        if (b && bl) {
            if (s->nbytes + bl > s->capb) {
                size_t cap = s->capb ? s->capb * 2 : 256;
                while (cap < s->nbytes + bl) cap *= 2;
                char *nb = realloc(s->bytes, cap);
                if (nb) {
                    s->bytes = nb;
                    s->capb = cap;
                }
            }
            if (s->nbytes + bl <= s->capb) {
                memcpy(s->bytes + s->nbytes, b, bl);
                s->nbytes += bl;
                for (int k = 0; k < s->g->r.n_stop; k++) {
                    size_t sl = strlen(s->g->r.stop[k]);
                    if (!sl) continue;
                    /* only matches that end inside the new token's bytes are new */
                    size_t from = s->nbytes > bl + sl - 1 ? s->nbytes - bl - sl + 1 : 0;
                    if (memmem(s->bytes + from, s->nbytes - from, s->g->r.stop[k], sl)) return "stop";
                }
            }
        }
    }
    if (s->n >= s->g->r.max_new_tokens) return "length";
    if (s->prompt_len + s->n >= e->o.max_seq_len) return "length";
    return NULL;
}

typedef struct {
    aha_gen *g;
    int prompt, first_sample, k;
} admission;

/* Engine thread, mutex held: drop cancelled work, plan admissions into free slots. */
static int plan(aha_engine *e, admission *adm, int cap)
{
    /* queued requests that were cancelled leave the queue */
    aha_gen **pp = &e->qhead;
    e->qtail = NULL;
    while (*pp) {
        aha_gen *g = *pp;
        if (atomic_load(&g->cancel)) {
            *pp = g->next;
            e->queued -= g->queued;
            for (int i = 0; i < g->queued; i++) gen_finished_one(e, g);
            g->queued = 0;
            continue;
        }
        e->qtail = g;
        pp = &g->next;
    }
    int free_slots = e->o.max_batch - e->n_active, na = 0;
    while (e->qhead && free_slots > 0 && na < cap) {
        aha_gen *g = e->qhead;
        int left = g->r.n - g->next_sample;
        int k = left < free_slots ? left : free_slots;
        adm[na++] = (admission){g, g->next_prompt, g->next_sample, k};
        free_slots -= k;
        g->queued -= k;
        g->active += k;
        e->queued -= k;
        g->next_sample += k;
        if (g->next_sample == g->r.n) {
            g->next_sample = 0;
            g->next_prompt++;
        }
        if (g->next_prompt == g->r.n_prompts) {
            e->qhead = g->next;
            if (!e->qhead) e->qtail = NULL;
            g->next = NULL;
        }
    }
    return na;
}

static int free_slot(aha_engine *e)
{
    for (int i = 0; i < e->o.max_batch; i++)
        if (!e->seqs[i].used) return i;
    return -1;
}

/* Fail a request from the engine thread (device error): its sequences are dropped. */
static void fail_gen(aha_engine *e, aha_gen *g, const aha_err *err)
{
    pthread_mutex_lock(&e->mu);
    if (g->st == AHA_OK) {
        g->st = err->status ? err->status : AHA_EINTERNAL;
        g->err = *err;
    }
    pthread_mutex_unlock(&e->mu);
    atomic_store(&g->cancel, 1);
}

static void admit(aha_engine *e, const admission *a)
{
    aha_gen *g = a->g;
    const int32_t *ids = g->r.prompt_ids[a->prompt];
    int plen = g->r.prompt_lens[a->prompt];
    aha_err err = {0};
    int s0 = -1;
    int *done_slot = calloc((size_t)a->k, sizeof *done_slot);
    const char **done_why = calloc((size_t)a->k, sizeof *done_why);
    AHA_ASSERT(done_slot && done_why);
    pthread_mutex_lock(&e->mu);
    int64_t version = e->version;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < a->k; i++) {
        int slot = free_slot(e);
        AHA_ASSERT(slot >= 0);
        seq_t *s = &e->seqs[slot];
        s->used = 1;
        s->g = g;
        s->prompt = a->prompt;
        s->index = a->first_sample + i;
        s->prompt_len = plen;
        s->first_version = version;
        s->ids = malloc((size_t)g->r.max_new_tokens * sizeof *s->ids);
        s->lp = malloc((size_t)g->r.max_new_tokens * sizeof *s->lp);
        uint64_t ps = g->r.prompt_seeds ? g->r.prompt_seeds[a->prompt] : 0;
        uint64_t stream = ps ? ps : aha_mix64(g->r.seed, (uint64_t)a->prompt);
        aha_rng_seed(&s->rng, stream, (uint64_t)s->index);
        /* consecutive ids within a group: its samples never share a draw */
        s->rng_id = (int32_t)(uint32_t)((aha_mix64(stream, 0) >> 32) + (uint64_t)s->index);
        e->n_active++;
        aha_status st = AHA_OK;
        if (!s->ids || !s->lp)
            st = aha_errf(&err, AHA_ENOMEM, "rollout: out of memory for a sequence");
        else if (i == 0) {
            st = aha_model_prefill(e->m, e->kv, slot, ids, plen, e->first, &err);
            s0 = slot;
            pthread_mutex_lock(&e->mu);
            e->stats.prefills++;
            e->stats.prefill_tokens += plen;
            pthread_mutex_unlock(&e->mu);
        } else {
            st = aha_kv_cache_copy_prefix(e->kv, s0, slot, plen, &err);
        }
        if (st != AHA_OK) {
            fail_gen(e, g, &err);
            continue; /* dropped at the next step as cancelled */
        }
        float lp = 0;
        int tok;
        if (e->draw == AHA_DRAW_HOST) {
            tok = aha_sample_token(e->first, e->V, &g->r.sampling, &s->rng, e->work, &lp);
        } else {
            /* as the model's host fallback draws at the last prompt position */
            aha_rng r0;
            aha_rng_seed(&r0, aha_mix64(AHA_ENGINE_DRAW_SEED, (uint64_t)(uint32_t)s->rng_id), (uint64_t)(plen - 1));
            tok = aha_sample_token(e->first, e->V, &g->r.sampling, &r0, e->work, &lp);
        }
        pthread_mutex_lock(&e->mu);
        e->stats.tokens_generated++;
        pthread_mutex_unlock(&e->mu);
        done_slot[i] = slot;
        done_why[i] = take_token(e, s, tok, lp);
    }
    /* deliver only now: the group's first slot holds the prefix the others copy */
    for (int i = 0; i < a->k; i++)
        if (done_why[i]) deliver(e, done_slot[i], done_why[i]);
    free(done_slot);
    free(done_why);
}

/* Drop the active sequences of cancelled requests. */
static void drop_cancelled(aha_engine *e)
{
    for (int i = 0; i < e->o.max_batch; i++) {
        seq_t *s = &e->seqs[i];
        if (!s->used || !atomic_load(&s->g->cancel)) continue;
        aha_gen *g = s->g;
        pthread_mutex_lock(&e->mu);
        g->active--;
        gen_finished_one(e, g);
        pthread_mutex_unlock(&e->mu);
        release_slot(e, i);
    }
}

static bool same_sampling(const aha_sampling *a, const aha_sampling *b)
{
    return a->temperature == b->temperature && a->top_p == b->top_p && a->top_k == b->top_k;
}

/* One model-drawn step over the n active slots in e->slots / e->toks: a decode call per
 * distinct sampling setting (one call in the usual case of a single request kind). */
static void step_model(aha_engine *e, int n)
{
    memset(e->gdone, 0, (size_t)n);
    int calls = 0;
    for (int j0 = 0; j0 < n; j0++) {
        if (e->gdone[j0]) continue;
        const aha_sampling *sp = &e->seqs[e->slots[j0]].g->r.sampling;
        int gn = 0;
        for (int j = j0; j < n; j++) {
            seq_t *s = &e->seqs[e->slots[j]];
            if (e->gdone[j] || !same_sampling(&s->g->r.sampling, sp)) continue;
            e->gdone[j] = 1;
            e->gslots[gn] = e->slots[j];
            e->gtoks[gn] = e->toks[j];
            e->grng[gn] = s->rng_id;
            gn++;
        }
        aha_sampling spc = *sp; /* the leader may be delivered (and freed) below */
        aha_err err = {0};
        calls++;
        /* one seed for all: each row's identity is its rng_id, so slots of different
         * requests and prompts share this call, and the decode graphs the backend records
         * (keyed on the seed among the rest) are replayed across requests */
        aha_status st = aha_model_decode_sample(e->m, e->kv, gn, e->gslots, e->gtoks, &spc, AHA_ENGINE_DRAW_SEED,
                                                e->grng, e->gout, e->glp, &err);
        if (st != AHA_OK) {
            AHA_ERROR("decode step failed: %s", aha_err_msg(&err));
            for (int j = 0; j < gn; j++) fail_gen(e, e->seqs[e->gslots[j]].g, &err);
            continue;
        }
        for (int j = 0; j < gn; j++) {
            seq_t *s = &e->seqs[e->gslots[j]];
            const char *why = take_token(e, s, e->gout[j], e->glp[j]);
            if (why) deliver(e, e->gslots[j], why);
        }
    }
    pthread_mutex_lock(&e->mu);
    e->stats.tokens_generated += n;
    e->stats.steps++;
    e->stats.decode_calls += calls;
    pthread_mutex_unlock(&e->mu);
}

static void step(aha_engine *e)
{
    int n = 0;
    for (int i = 0; i < e->o.max_batch; i++)
        if (e->seqs[i].used) {
            e->slots[n] = i;
            e->toks[n] = e->seqs[i].last;
            n++;
        }
    if (n == 0) return;
    if (e->draw == AHA_DRAW_MODEL) {
        step_model(e, n);
        return;
    }
    aha_err err = {0};
    aha_status st = aha_model_decode(e->m, e->kv, n, e->slots, e->toks, e->logits, &err);
    if (st != AHA_OK) {
        AHA_ERROR("decode step failed: %s", aha_err_msg(&err));
        for (int j = 0; j < n; j++) fail_gen(e, e->seqs[e->slots[j]].g, &err);
        return;
    }
    for (int j = 0; j < n; j++) {
        int slot = e->slots[j];
        seq_t *s = &e->seqs[slot];
        float lp = 0;
        int tok = aha_sample_token(e->logits + (size_t)j * e->V, e->V, &s->g->r.sampling, &s->rng,
                                   e->work, &lp);
        const char *why = take_token(e, s, tok, lp);
        if (why) deliver(e, slot, why);
    }
    pthread_mutex_lock(&e->mu);
    e->stats.tokens_generated += n;
    e->stats.steps++;
    e->stats.decode_calls++;
    pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg)
{
    aha_engine *e = arg;
    admission *adm = calloc((size_t)e->o.max_batch, sizeof *adm);
    pthread_mutex_lock(&e->mu);
    for (;;) {
        if ((e->pending || e->pending_fn) && !e->pending_done) {
            /* between two decode steps: no sequence is inside the model now */
            if (e->pending_fn) {
                e->pending_st = e->pending_fn(e->pending_arg, e->m, &e->pending_err);
                if (e->pending_st == AHA_OK) e->version = e->pending_version;
            } else {
                e->pending_st = aha_weight_rx_apply(e->pending, e->m, &e->pending_err);
                if (e->pending_st == AHA_OK) e->version = aha_weight_rx_version(e->pending);
            }
            e->pending_done = 1;
            pthread_cond_broadcast(&e->done);
        }
        if (e->stop) break;
        int na = plan(e, adm, e->o.max_batch);
        e->stats.active = e->n_active;
        e->stats.queued = e->queued;
        if (na == 0 && e->n_active == 0) {
            pthread_cond_wait(&e->wake, &e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        drop_cancelled(e);
        for (int i = 0; i < na; i++) admit(e, &adm[i]);
        drop_cancelled(e);
        step(e);
        drop_cancelled(e);
        pthread_mutex_lock(&e->mu);
    }
    /* shutting down: drop everything */
    for (aha_gen *g = e->qhead; g; g = g->next) {
        atomic_store(&g->cancel, 1);
        for (int i = 0; i < g->queued; i++) gen_finished_one(e, g);
        g->queued = 0;
    }
    e->qhead = e->qtail = NULL;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->o.max_batch; i++)
        if (e->seqs[i].used) {
            atomic_store(&e->seqs[i].g->cancel, 1);
        }
    drop_cancelled(e);
    free(adm);
    return NULL;
}

aha_status aha_engine_create(const aha_engine_opts *o, aha_engine **out, aha_err *err)
{
    *out = NULL;
    aha_engine *e = calloc(1, sizeof *e);
    if (!e) return aha_errf(err, AHA_ENOMEM, "rollout: out of memory");
    if (o->draw < AHA_DRAW_AUTO || o->draw > AHA_DRAW_MODEL) {
        free(e);
        return aha_errf(err, AHA_EINVAL, "rollout: draw mode %d is none of auto, host, model", (int)o->draw);
    }
    e->o = *o;
    if (e->o.max_batch <= 0) e->o.max_batch = 64;
    if (e->o.max_seq_len <= 0) e->o.max_seq_len = 1024;
    if (e->o.max_queue <= 0) e->o.max_queue = 65536;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->done, NULL);
    aha_status st = aha_backend_open(o->device ? o->device : "cpu", o->threads, &e->be, err);
    if (st == AHA_OK) {
        aha_model_opts mo = {.max_batch_tokens = e->o.max_seq_len > e->o.max_batch
                                                     ? e->o.max_seq_len : e->o.max_batch};
        st = aha_model_open(o->model_dir, e->be, &mo, &e->m, err);
    }
    if (st == AHA_OK) {
        const aha_model_config *cfg = aha_model_cfg(e->m);
        if (cfg->max_position_embeddings > 0 && e->o.max_seq_len > cfg->max_position_embeddings)
            e->o.max_seq_len = cfg->max_position_embeddings;
        e->V = cfg->vocab_size;
        st = aha_kv_cache_create(e->m, e->o.max_batch, e->o.max_seq_len, &e->kv, err);
    }
    if (st == AHA_OK) {
        char path[4096];
        if (aha_path_join(path, sizeof path, o->model_dir, "tokenizer.json", NULL) == AHA_OK &&
            aha_path_exists(path)) {
            st = aha_tokenizer_load(path, &e->tok, err);
            if (st == AHA_OK && aha_tokenizer_vocab_size(e->tok) > e->V)
                AHA_WARN("tokenizer has %d ids, the model's vocabulary %d", (int)aha_tokenizer_vocab_size(e->tok), e->V);
        }
    }
    if (st == AHA_OK) {
        if (e->o.draw == AHA_DRAW_AUTO)
            e->draw = e->be->ops->sample ? AHA_DRAW_MODEL : AHA_DRAW_HOST;
        else
            e->draw = e->o.draw;
        size_t mb = (size_t)e->o.max_batch;
        e->seqs = calloc(mb, sizeof *e->seqs);
        if (e->draw == AHA_DRAW_HOST) e->logits = malloc(mb * (size_t)e->V * sizeof *e->logits);
        e->first = malloc((size_t)e->V * sizeof *e->first);
        e->slots = malloc(mb * sizeof *e->slots);
        e->toks = malloc(mb * sizeof *e->toks);
        e->work = malloc(aha_sample_work_bytes(e->V));
        e->gslots = malloc(mb * sizeof *e->gslots);
        e->gtoks = malloc(mb * sizeof *e->gtoks);
        e->grng = malloc(mb * sizeof *e->grng);
        e->gout = malloc(mb * sizeof *e->gout);
        e->glp = malloc(mb * sizeof *e->glp);
        e->gdone = malloc(mb);
        if (!e->seqs || (e->draw == AHA_DRAW_HOST && !e->logits) || !e->first || !e->slots || !e->toks ||
            !e->work || !e->gslots || !e->gtoks || !e->grng || !e->gout || !e->glp || !e->gdone)
            st = aha_errf(err, AHA_ENOMEM, "rollout: out of memory for %d slots", e->o.max_batch);
    }
    if (st == AHA_OK) {
        e->stats.max_batch = e->o.max_batch;
        if (pthread_create(&e->th, NULL, engine_main, e) != 0)
            st = aha_errf(err, AHA_EINTERNAL, "rollout: cannot start the engine thread");
        else
            e->th_started = 1;
    }
    if (st != AHA_OK) {
        aha_engine_free(e);
        return st;
    }
    *out = e;
    return AHA_OK;
}

void aha_engine_free(aha_engine *e)
{
    if (!e) return;
    if (e->th_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_broadcast(&e->wake);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->th, NULL);
    }
    free(e->seqs);
    free(e->logits);
    free(e->first);
    free(e->slots);
    free(e->toks);
    free(e->work);
    free(e->gslots);
    free(e->gtoks);
    free(e->grng);
    free(e->gout);
    free(e->glp);
    free(e->gdone);
    aha_tokenizer_free(e->tok);
    aha_kv_cache_free(e->kv);
    aha_model_free(e->m);
    if (e->be) aha_backend_free(e->be);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->done);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

aha_status aha_engine_submit(aha_engine *e, const aha_gen_request *r, aha_gen **out, aha_err *err)
{
    *out = NULL;
    if (r->n_prompts < 0) return aha_errf(err, AHA_EINVAL, "negative prompt count");
    if (r->n < 1 || r->n > 4096) return aha_errf(err, AHA_EINVAL, "n = %d: must be in [1, 4096]", r->n);
    AHA_TRY(aha_sampling_check(&r->sampling, err));
    if (r->sampling.top_p < 0 || r->sampling.top_p > 1)
        return aha_errf(err, AHA_EINVAL, "top_p = %g: must be in [0, 1]", (double)r->sampling.top_p);
    if (r->sampling.top_k < 0) return aha_errf(err, AHA_EINVAL, "top_k = %d: must be >= 0", r->sampling.top_k);
    if (r->max_new_tokens < 1) return aha_errf(err, AHA_EINVAL, "max_new_tokens must be >= 1");
    for (int k = 0; k < r->n_stop; k++)
        if (!r->stop[k]) return aha_errf(err, AHA_EINVAL, "stop string %d is missing", k);
    if (r->n_stop > 0 && !e->tok)
        return aha_errf(err, AHA_EPRECOND, "stop strings need a tokenizer.json beside the model");
    for (int i = 0; i < r->n_prompts; i++) {
        int len = r->prompt_lens[i];
        if (len < 1) return aha_errf(err, AHA_EINVAL, "prompt %d is empty", i);
        for (int t = 0; t < len; t++)
            if (r->prompt_ids[i][t] < 0 || r->prompt_ids[i][t] >= e->V)
                return aha_errf(err, AHA_EINVAL, "prompt %d: token %d at position %d is outside "
                                "the vocabulary of %d", i, r->prompt_ids[i][t], t, e->V);
        if ((int64_t)len + r->max_new_tokens > e->o.max_seq_len)
            return aha_errf(err, AHA_ELIMIT, "prompt %d: %d prompt tokens + max_new_tokens %d "
                            "exceed --max-seq-len %d", i, len, r->max_new_tokens, e->o.max_seq_len);
    }
    /* in 64 bits: prompts x n can pass INT_MAX (and wrap past the queue check) */
    int64_t total = (int64_t)r->n_prompts * r->n;
    if (total > e->o.max_queue)
        return aha_errf(err, AHA_ELIMIT, "%lld sequences exceed the queue limit of %d; split the request",
                        (long long)total, e->o.max_queue);
    aha_gen *g = calloc(1, sizeof *g);
    if (!g) return aha_errf(err, AHA_ENOMEM, "rollout: out of memory");
    g->e = e;
    g->r = *r;
    g->total = (int)total;
    g->queued = g->total;
    pthread_mutex_lock(&e->mu);
    if ((int64_t)e->queued + g->total > e->o.max_queue) {
        int q = e->queued;
        pthread_mutex_unlock(&e->mu);
        free(g);
        return aha_errf(err, AHA_ELIMIT, "%lld sequences would exceed the queue limit of %d (%d "
                        "waiting); retry later", (long long)r->n_prompts * r->n, e->o.max_queue, q);
    }
    e->stats.requests++;
    if (g->total > 0) {
        e->queued += g->total;
        if (e->qtail)
            e->qtail->next = g;
        else
            e->qhead = g;
        e->qtail = g;
        pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->mu);
    *out = g;
    return AHA_OK;
}

void aha_gen_cancel(aha_gen *g)
{
    atomic_store(&g->cancel, 1);
    pthread_mutex_lock(&g->e->mu);
    pthread_cond_signal(&g->e->wake);
    pthread_mutex_unlock(&g->e->mu);
}

aha_status aha_gen_wait(aha_gen *g, int (*cancelled)(void *arg), void *arg, aha_err *err)
{
    aha_engine *e = g->e;
    pthread_mutex_lock(&e->mu);
    while (g->finished < g->total) {
        if (cancelled && !atomic_load(&g->cancel) && cancelled(arg)) {
            atomic_store(&g->cancel, 1);
            pthread_cond_signal(&e->wake);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&e->done, &e->mu, &ts);
    }
    pthread_mutex_unlock(&e->mu);
    aha_status st = AHA_OK;
    if (g->st != AHA_OK) {
        st = g->st;
        if (err) *err = g->err;
    } else if (atomic_load(&g->cancel)) {
        st = aha_errf(err, AHA_ECANCELLED, "generation cancelled");
    }
    free(g);
    return st;
}

aha_status aha_engine_update_weights(aha_engine *e, const aha_weight_rx *rx, aha_err *err)
{
    pthread_mutex_lock(&e->mu);
    while (e->pending || e->pending_fn) pthread_cond_wait(&e->done, &e->mu);
    e->pending = rx;
    e->pending_done = 0;
    pthread_cond_signal(&e->wake);
    while (!e->pending_done) pthread_cond_wait(&e->done, &e->mu);
    aha_status st = e->pending_st;
    if (st != AHA_OK && err) *err = e->pending_err;
    e->pending = NULL;
    pthread_cond_broadcast(&e->done);
    pthread_mutex_unlock(&e->mu);
    if (st == AHA_OK)
        AHA_INFO("weights updated: policy version %lld (%lld bytes)",
                 (long long)aha_weight_rx_version(rx), (long long)aha_weight_rx_bytes(rx));
    return st;
}

aha_status aha_engine_update_weights_fn(aha_engine *e, aha_status (*fn)(void *arg, aha_model *m, aha_err *err),
                                        void *arg, int64_t version, aha_err *err)
{
    pthread_mutex_lock(&e->mu);
    while (e->pending || e->pending_fn) pthread_cond_wait(&e->done, &e->mu);
    e->pending_fn = fn;
    e->pending_arg = arg;
    e->pending_version = version;
    e->pending_done = 0;
    pthread_cond_signal(&e->wake);
    while (!e->pending_done) pthread_cond_wait(&e->done, &e->mu);
    aha_status st = e->pending_st;
    if (st != AHA_OK && err) *err = e->pending_err;
    e->pending_fn = NULL;
    pthread_cond_broadcast(&e->done);
    pthread_mutex_unlock(&e->mu);
    if (st == AHA_OK) AHA_INFO("weights updated: policy version %lld (weights group)", (long long)version);
    return st;
}

void aha_engine_get_stats(aha_engine *e, aha_engine_stats *s)
{
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    s->policy_version = e->version;
    s->queued = e->queued;
    pthread_mutex_unlock(&e->mu);
}

const aha_model *aha_engine_model(const aha_engine *e) { return e->m; }
const aha_tokenizer *aha_engine_tokenizer(const aha_engine *e) { return e->tok; }
aha_engine_draw aha_engine_draw_mode(const aha_engine *e) { return e->draw; }

int aha_engine_draw_parse(const char *s)
{
    if (strcmp(s, "auto") == 0) return AHA_DRAW_AUTO;
    if (strcmp(s, "host") == 0) return AHA_DRAW_HOST;
    if (strcmp(s, "model") == 0) return AHA_DRAW_MODEL;
    return -1;
}

const char *aha_engine_draw_name(aha_engine_draw d)
{
    return d == AHA_DRAW_HOST ? "host" : d == AHA_DRAW_MODEL ? "model" : "auto";
}
