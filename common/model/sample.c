/* sample.c: temperature / top-k / top-p sampling of one logits row, in the order and with the
 * tie rules of Hugging Face's logits warpers (TopK keeps every token scoring at least the k-th
 * value; TopP keeps a token when the mass of the tokens ranked strictly above it is below
 * top_p, so the first token always stays). */
#include "model/sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float v;
    int i;
} scored;

aha_status aha_sampling_check(const aha_sampling *sp, aha_err *err)
{
    if (!isfinite(sp->temperature) || sp->temperature < 0)
        return aha_errf(err, AHA_EINVAL, "sampling: temperature %g must be finite and >= 0",
                        (double)sp->temperature);
    if (isnan(sp->top_p)) return aha_errf(err, AHA_EINVAL, "sampling: top_p is NaN");
    return AHA_OK;
}

double aha_logsumexp(const float *x, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    if (mx == -INFINITY) return -INFINITY;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

void aha_log_softmax(const float *x, int n, float *out)
{
    double l = aha_logsumexp(x, n);
    for (int i = 0; i < n; i++) out[i] = (float)(x[i] - l);
}

int aha_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

size_t aha_sample_work_bytes(int V) { return (size_t)V * (sizeof(scored) + sizeof(double)); }

static int by_value_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* Moves the k largest (by_value_desc order) to the front, in any order: quickselect. */
static void select_top(scored *x, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        scored pivot = x[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (by_value_desc(&x[i], &pivot) < 0) i++;
            while (by_value_desc(&x[j], &pivot) > 0) j--;
            if (i <= j) {
                scored t = x[i];
                x[i++] = x[j];
                x[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* The kept tokens and their unnormalised probabilities, best first; returns how many, and
 * their mass. kept[j].i is the token; p[j] its weight. Greedy is handled by the callers.
 * Only candidates are sorted: top-k selects first, and top-p first drops every token below a
 * weight threshold tau once the tokens above tau already hold top_p of the mass (a token
 * below tau then has at least that much mass ranked above it, so top-p drops it anyway). */
static int filter(const float *logits, int V, const aha_sampling *sp, void *work, double *mass)
{
    scored *kept = work;
    double *p = (double *)(kept + V);
    double invT = 1.0 / sp->temperature;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    bool use_k = sp->top_k > 0 && sp->top_k < V;
    bool use_p = sp->top_p > 0 && sp->top_p < 1;
    for (int i = 0; i < V; i++) {
        kept[i].v = logits[i];
        kept[i].i = i;
    }
    int n = V;
    if (use_k) {
        select_top(kept, V, sp->top_k);
        float kth = kept[0].v;
        for (int j = 1; j < sp->top_k; j++)
            if (kept[j].v < kth) kth = kept[j].v;
        n = sp->top_k;
        for (int j = n; j < V; j++) /* ties with the k-th value stay (HF: scores < kth removed) */
            if (kept[j].v >= kth) {
                scored t = kept[n];
                kept[n++] = kept[j];
                kept[j] = t;
            }
    }
    double total = 0;
    for (int j = 0; j < n; j++) total += exp(((double)kept[j].v - mx) * invT);
    if (use_p) {
        for (double tau = 1e-4; tau > 1e-30; tau *= 1e-4) {
            double above = 0;
            for (int j = 0; j < n; j++) {
                double w = exp(((double)kept[j].v - mx) * invT);
                if (w >= tau) above += w;
            }
            if (above < sp->top_p * total) continue;
            int m = 0;
            for (int j = 0; j < n; j++)
                if (exp(((double)kept[j].v - mx) * invT) >= tau) {
                    scored t = kept[m];
                    kept[m++] = kept[j];
                    kept[j] = t;
                }
            n = m;
            break;
        }
    }
    if (use_k || use_p) qsort(kept, (size_t)n, sizeof *kept, by_value_desc);
    for (int j = 0; j < n; j++) p[j] = exp(((double)kept[j].v - mx) * invT);
    if (use_p) {
        double before = 0;
        int keep = 0;
        while (keep < n && (keep == 0 || before < sp->top_p * total)) before += p[keep++];
        n = keep;
        total = before;
    }
    *mass = total;
    return n;
}

void aha_sample_probs(const float *logits, int V, const aha_sampling *sp, void *work, float *probs)
{
    memset(probs, 0, (size_t)V * sizeof(float));
    if (sp->temperature == 0) {
        probs[aha_argmax(logits, V)] = 1.0f;
        return;
    }
    double mass;
    int n = filter(logits, V, sp, work, &mass);
    const scored *kept = work;
    const double *p = (const double *)(kept + V);
    for (int j = 0; j < n; j++) probs[kept[j].i] = (float)(p[j] / mass);
}

int aha_sample_token(const float *logits, int V, const aha_sampling *sp, aha_rng *rng, void *work,
                     float *logprob)
{
    int tok;
    if (sp->temperature == 0) {
        tok = aha_argmax(logits, V);
    } else {
        double mass;
        int n = filter(logits, V, sp, work, &mass);
        const scored *kept = work;
        const double *p = (const double *)(kept + V);
        double u = aha_rng_f64(rng) * mass, acc = 0;
        tok = kept[n - 1].i;
        for (int j = 0; j < n; j++) {
            acc += p[j];
            if (u < acc) {
                tok = kept[j].i;
                break;
            }
        }
    }
    if (logprob) *logprob = (float)(logits[tok] - aha_logsumexp(logits, V));
    return tok;
}
