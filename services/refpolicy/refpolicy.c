/* refpolicy.c: see refpolicy.h. */
#include "refpolicy.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/log.h"

struct aha_refpolicy {
    aha_refpolicy_opts o;
    aha_backend *be;
    aha_model *m;
    pthread_mutex_t mu;        /* the model: passes and weight switches */
    int64_t version;
    int64_t tokens;
    /* pass buffers, grown on demand under mu */
    int32_t *ids;
    int32_t *cu;
    int32_t *from;      /* (seqs) first scored position of each sequence */
    float *lp;
    size_t cap_tokens;
    int cap_seqs;
};

aha_status aha_refpolicy_create(const aha_refpolicy_opts *o, aha_refpolicy **out, aha_err *err)
{
    *out = NULL;
    aha_refpolicy *rp = calloc(1, sizeof *rp);
    if (!rp) return aha_errf(err, AHA_ENOMEM, "refpolicy: out of memory");
    rp->o = *o;
    if (rp->o.max_batch_tokens <= 0) rp->o.max_batch_tokens = 8192;
    if (rp->o.max_request_tokens <= 0) rp->o.max_request_tokens = (int64_t)1 << 22;
    pthread_mutex_init(&rp->mu, NULL);
    aha_status st = aha_backend_open(o->device ? o->device : "cpu", o->threads, &rp->be, err);
    if (st == AHA_OK) {
        aha_model_opts mo = {.max_batch_tokens = rp->o.max_batch_tokens};
        st = aha_model_open(o->model_dir, rp->be, &mo, &rp->m, err);
    }
    if (st != AHA_OK) {
        aha_refpolicy_free(rp);
        return st;
    }
    *out = rp;
    return AHA_OK;
}

void aha_refpolicy_free(aha_refpolicy *rp)
{
    if (!rp) return;
    aha_model_free(rp->m);
    if (rp->be) aha_backend_free(rp->be);
    pthread_mutex_destroy(&rp->mu);
    free(rp->ids);
    free(rp->cu);
    free(rp->from);
    free(rp->lp);
    free(rp);
}

const aha_model *aha_refpolicy_model(const aha_refpolicy *rp) { return rp->m; }

int64_t aha_refpolicy_version(aha_refpolicy *rp)
{
    pthread_mutex_lock(&rp->mu);
    int64_t v = rp->version;
    pthread_mutex_unlock(&rp->mu);
    return v;
}

int64_t aha_refpolicy_tokens(aha_refpolicy *rp)
{
    pthread_mutex_lock(&rp->mu);
    int64_t v = rp->tokens;
    pthread_mutex_unlock(&rp->mu);
    return v;
}

static aha_status ensure(aha_refpolicy *rp, size_t tokens, int seqs, aha_err *err)
{
    if (tokens > rp->cap_tokens) {
        int32_t *ids = realloc(rp->ids, tokens * sizeof *ids);
        if (ids) rp->ids = ids;
        float *lp = realloc(rp->lp, tokens * sizeof *lp);
        if (lp) rp->lp = lp;
        if (!ids || !lp) return aha_errf(err, AHA_ENOMEM, "refpolicy: pass of %zu tokens", tokens);
        rp->cap_tokens = tokens;
    }
    if (seqs + 1 > rp->cap_seqs) {
        int32_t *cu = realloc(rp->cu, (size_t)(seqs + 1) * sizeof *cu);
        if (cu) rp->cu = cu;
        int32_t *from = realloc(rp->from, (size_t)(seqs + 1) * sizeof *from);
        if (from) rp->from = from;
        if (!cu || !from) return aha_errf(err, AHA_ENOMEM, "refpolicy: pass of %d sequences", seqs);
        rp->cap_seqs = seqs + 1;
    }
    return AHA_OK;
}

/* Score seqs[a, b) as one packed pass. Caller holds mu. */
static aha_status run_pass(aha_refpolicy *rp, const aha_ref_seq *seqs, int a, int b,
                           float *const *out, aha_err *err)
{
    size_t tokens = 0;
    for (int s = a; s < b; s++) tokens += (size_t)seqs[s].len;
    AHA_TRY(ensure(rp, tokens, b - a, err));
    size_t at = 0;
    rp->cu[0] = 0;
    for (int s = a; s < b; s++) {
        memcpy(rp->ids + at, seqs[s].ids, (size_t)seqs[s].len * sizeof(int32_t));
        at += (size_t)seqs[s].len;
        rp->cu[s - a + 1] = (int32_t)at;
    }
    /* only completion positions reach the lm_head: prompt rows are skipped */
    for (int s = a; s < b; s++) rp->from[s - a] = seqs[s].prompt_len;
    aha_batch batch = {.ids = rp->ids, .cu_seqlens = rp->cu, .n_seqs = b - a, .score_from = rp->from};
    AHA_TRY(aha_model_token_logprobs(rp->m, &batch, rp->lp, NULL, err));
    /* logprob layout: sequence s holds t = 1 .. len-1 at cu[s] - s; we return t >= prompt_len */
    for (int s = a; s < b; s++) {
        const aha_ref_seq *q = &seqs[s];
        int n = q->len - q->prompt_len;
        if (n > 0)
            memcpy(out[s], rp->lp + (rp->cu[s - a] - (s - a)) + (q->prompt_len - 1),
                   (size_t)n * sizeof(float));
    }
    rp->tokens += (int64_t)tokens;
    return AHA_OK;
}

aha_status aha_refpolicy_logprobs(aha_refpolicy *rp, const aha_ref_seq *seqs, int n,
                                  float *const *out, int64_t *version, aha_err *err)
{
    int vocab = aha_model_cfg(rp->m)->vocab_size;
    int max_pos = aha_model_cfg(rp->m)->max_position_embeddings;
    int64_t total = 0;
    for (int s = 0; s < n; s++) {
        const aha_ref_seq *q = &seqs[s];
        const char *id = q->id ? q->id : "";
        if (q->len < 1)
            return aha_errf(err, AHA_EINVAL, "sequence %d ('%.64s'): no tokens", s, id);
        if (q->prompt_len < 1 || q->prompt_len > q->len)
            return aha_errf(err, AHA_EINVAL, "sequence %d ('%.64s'): prompt_len %d must be in "
                            "[1, %d]", s, id, q->prompt_len, q->len);
        if (max_pos > 0 && q->len > max_pos)
            return aha_errf(err, AHA_ELIMIT, "sequence %d ('%.64s'): %d tokens exceed the "
                            "model's %d positions", s, id, q->len, max_pos);
        for (int t = 0; t < q->len; t++)
            if (q->ids[t] < 0 || q->ids[t] >= vocab)
                return aha_errf(err, AHA_EINVAL, "sequence %d ('%.64s'): token %d at position "
                                "%d is outside the vocabulary of %d", s, id, q->ids[t], t, vocab);
        total += q->len;
    }
    if (total > rp->o.max_request_tokens)
        return aha_errf(err, AHA_ELIMIT, "%lld tokens exceed the limit of %lld per request",
                        (long long)total, (long long)rp->o.max_request_tokens);
    pthread_mutex_lock(&rp->mu);
    aha_status st = AHA_OK;
    int a = 0;
    while (a < n && st == AHA_OK) {
        int b = a + 1;
        int64_t tok = seqs[a].len;
        while (b < n && tok + seqs[b].len <= rp->o.max_batch_tokens) tok += seqs[b++].len;
        st = run_pass(rp, seqs, a, b, out, err);
        a = b;
    }
    if (version) *version = rp->version;
    pthread_mutex_unlock(&rp->mu);
    return st;
}

aha_status aha_refpolicy_apply(aha_refpolicy *rp, const aha_weight_rx *rx, aha_err *err)
{
    pthread_mutex_lock(&rp->mu);
    aha_status st = aha_weight_rx_apply(rx, rp->m, err);
    if (st == AHA_OK) rp->version = aha_weight_rx_version(rx);
    pthread_mutex_unlock(&rp->mu);
    if (st == AHA_OK)
        AHA_INFO("reference weights replaced: version %lld (%lld bytes)",
                 (long long)aha_weight_rx_version(rx), (long long)aha_weight_rx_bytes(rx));
    return st;
}
