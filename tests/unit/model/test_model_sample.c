/* test_model_sample.c: the sampling helpers. The filtered distribution (temperature, top-k,
 * top-p) is compared with a brute-force computation written differently here (ranks by
 * counting, no sort); draws follow it (chi-square over 40,000 draws at a fixed seed); greedy
 * is argmax; the reported logprob is the raw log-softmax; same seed, same tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../harness.h"
#include "base/rng.h"
#include "model/sample.h"

#define V 12

/* brute force: rank_i = #{j : x_j > x_i or (x_j == x_i and j < i)} */
static void reference(const float *x, const aha_sampling *sp, double *p)
{
    int rank[V];
    for (int i = 0; i < V; i++) {
        rank[i] = 0;
        for (int j = 0; j < V; j++)
            if (x[j] > x[i] || (x[j] == x[i] && j < i)) rank[i]++;
    }
    double z[V], tot = 0;
    for (int i = 0; i < V; i++) {
        /* top-k keeps every token at least as large as the k-th largest */
        int keep = 1;
        if (sp->top_k > 0 && sp->top_k < V) {
            int larger = 0;
            for (int j = 0; j < V; j++) larger += x[j] > x[i];
            keep = larger < sp->top_k;
        }
        z[i] = keep ? exp((double)x[i] / sp->temperature) : 0;
        tot += z[i];
    }
    for (int i = 0; i < V; i++) z[i] /= tot;
    for (int i = 0; i < V; i++) {
        double above = 0; /* mass ranked strictly before i */
        for (int j = 0; j < V; j++)
            if (rank[j] < rank[i]) above += z[j];
        int keep = z[i] > 0 && (!(sp->top_p > 0 && sp->top_p < 1) || rank[i] == 0 || above < sp->top_p);
        p[i] = keep ? z[i] : 0;
    }
    tot = 0;
    for (int i = 0; i < V; i++) tot += p[i];
    for (int i = 0; i < V; i++) p[i] /= tot;
}

int main(void)
{
    float x[V];
    aha_rng rng;
    aha_rng_seed(&rng, 11, 0);
    for (int i = 0; i < V; i++) x[i] = (float)(aha_rng_normal(&rng) * 1.5);
    x[7] = x[3]; /* a tie */
    void *work = malloc(aha_sample_work_bytes(V));
    float probs[V], ls[V];

    aha_log_softmax(x, V, ls);
    double s = 0;
    for (int i = 0; i < V; i++) s += exp(ls[i]);
    CHECK(fabs(s - 1) < 1e-6, "log_softmax normalised: %g", s);

    const aha_sampling cases[] = {
        {1.0f, 1.0f, 0}, {0.7f, 1.0f, 0}, {1.3f, 0.8f, 0}, {1.0f, 0.5f, 0},
        {0.9f, 1.0f, 4}, {1.0f, 0.9f, 5}, {1.0f, 0.05f, 0}, {2.0f, 0.95f, 3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const aha_sampling *sp = &cases[c];
        double ref[V];
        reference(x, sp, ref);
        aha_sample_probs(x, V, sp, work, probs);
        float reff[V];
        for (int i = 0; i < V; i++) reff[i] = (float)ref[i];
        char what[80];
        snprintf(what, sizeof what, "probs T=%.1f top_p=%.2f top_k=%d", (double)sp->temperature,
                 (double)sp->top_p, sp->top_k);
        CHECK(th_max_abs(what, probs, reff, V) < 1e-6, "%s", what);

        /* draws: chi-square over the kept tokens */
        enum { DRAWS = 40000 };
        long count[V] = {0};
        aha_rng r;
        aha_rng_seed(&r, 1000 + c, 0);
        for (int d = 0; d < DRAWS; d++) {
            float lp;
            int t = aha_sample_token(x, V, sp, &r, work, &lp);
            CHECK(t >= 0 && t < V, "token in range");
            if (d == 0) CHECK(fabs(lp - ls[t]) < 1e-6, "logprob is the raw log-softmax");
            count[t]++;
        }
        double chi = 0;
        int df = -1;
        for (int i = 0; i < V; i++) {
            if (ref[i] == 0) {
                CHECK(count[i] == 0, "%s: filtered token %d drawn %ld times", what, i, count[i]);
                continue;
            }
            double e = ref[i] * DRAWS;
            chi += (count[i] - e) * (count[i] - e) / e;
            df++;
        }
        /* 0.1% critical values of chi-square for df 0..11 */
        static const double crit[] = {1e9, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26};
        fprintf(stderr, "  %-40s chi2 %.2f (df %d)\n", what, chi, df);
        CHECK(df == 0 || chi < crit[df], "%s: chi2 %.2f df %d", what, chi, df);
    }

    /* a large vocabulary (with many equal logits) exercises the selection and pruning paths */
    {
        enum { BV = 3000 };
        float *bx = malloc(BV * sizeof(float)), *bp = malloc(BV * sizeof(float));
        void *bw = malloc(aha_sample_work_bytes(BV));
        for (int i = 0; i < BV; i++) bx[i] = (float)(int)(aha_rng_normal(&rng) * 8) / 2; /* ties */
        const aha_sampling big[] = {{1.0f, 0.9f, 0}, {0.8f, 1.0f, 50}, {1.0f, 0.7f, 200}, {1.5f, 0.99f, 0}};
        for (size_t c = 0; c < sizeof big / sizeof big[0]; c++) {
            aha_sample_probs(bx, BV, &big[c], bw, bp);
            /* brute force with O(V^2) ranks */
            double *z = malloc(BV * sizeof(double)), tot = 0, worst = 0;
            int kept = 0;
            for (int i = 0; i < BV; i++) {
                int larger = 0;
                for (int j = 0; j < BV; j++) larger += bx[j] > bx[i];
                z[i] = big[c].top_k > 0 && larger >= big[c].top_k ? 0 : exp(bx[i] / big[c].temperature);
                tot += z[i];
            }
            double *q = malloc(BV * sizeof(double)), qt = 0;
            for (int i = 0; i < BV; i++) {
                double above = 0;
                for (int j = 0; j < BV; j++)
                    if (bx[j] > bx[i] || (bx[j] == bx[i] && j < i)) above += z[j] / tot;
                q[i] = z[i] > 0 && (above < big[c].top_p || above == 0) ? z[i] : 0;
                qt += q[i];
            }
            for (int i = 0; i < BV; i++) {
                worst = fmax(worst, fabs(q[i] / qt - bp[i]));
                kept += bp[i] > 0;
            }
            fprintf(stderr, "  V=%d T=%.1f top_p=%.2f top_k=%d: %d kept, max |d| %.2e\n", BV,
                    (double)big[c].temperature, (double)big[c].top_p, big[c].top_k, kept, worst);
            CHECK(worst < 1e-6, "large-vocabulary distribution");
            free(z);
            free(q);
        }
        free(bx);
        free(bp);
        free(bw);
    }

    /* greedy: argmax, the first of equal maxima */
    aha_sampling g = {0, 1, 0};
    int best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    CHECK(aha_sample_token(x, V, &g, &rng, work, NULL) == best, "greedy is argmax");
    aha_sample_probs(x, V, &g, work, probs);
    CHECK(probs[best] == 1.0f, "greedy distribution is one-hot");
    float tie[4] = {1, 3, 3, 0};
    CHECK(aha_argmax(tie, 4) == 1, "argmax takes the first maximum");

    /* reproducible */
    aha_rng r1, r2;
    aha_rng_seed(&r1, 5, 3);
    aha_rng_seed(&r2, 5, 3);
    aha_sampling sp = {1.0f, 0.9f, 0};
    int same = 1;
    for (int d = 0; d < 200; d++)
        same &= aha_sample_token(x, V, &sp, &r1, work, NULL) == aha_sample_token(x, V, &sp, &r2, work, NULL);
    CHECK(same, "same seed and stream, same tokens");

    aha_err err = {0};
    aha_sampling bad = {-1, 1, 0};
    CHECK(aha_sampling_check(&bad, &err) == AHA_EINVAL, "negative temperature refused");
    bad.temperature = NAN;
    CHECK(aha_sampling_check(&bad, &err) == AHA_EINVAL, "NaN temperature refused");
    CHECK(aha_sampling_check(&sp, &err) == AHA_OK, "valid");
    free(work);
    return th_done("model_sample");
}
