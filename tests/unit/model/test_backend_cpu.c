/* test_backend_cpu.c: the CPU backend's ops on fresh random inputs. Every backward op is
 * checked against central finite differences of its forward (as directional derivatives of
 * L = <dout, f(x)> along a random direction), the GEMMs against naive loops, and the GRPO loss
 * against an independent double-precision evaluation of Eq. 1 with ratios far enough from 1
 * that both clip bounds (asymmetric) are active. The PyTorch fixtures check the composition;
 * this checks the branches they do not reach. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../harness.h"
#include "backend/backend.h"
#include "base/rng.h"

static aha_backend *be;
static aha_rng rng;
static aha_err err;

static aha_tensor T(float *p) { return (aha_tensor){p, AHA_DT_F32}; }
static aha_tensor Ti(int32_t *p) { return (aha_tensor){p, AHA_DT_I32}; }

static float *rnd(int64_t n, double scale)
{
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = (float)(aha_rng_normal(&rng) * scale);
    return x;
}
static float *zeros(int64_t n) { return calloc((size_t)n, sizeof(float)); }
static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* L(x) for the op under test, evaluated by the forward op */
typedef double (*loss_fn)(void *ctx);

/* Directional derivative of L along a random u at x (central differences, step h) against
 * <g, u>; x is restored. */
static void fd_check(const char *what, loss_fn L, void *ctx, float *x, const float *g, int64_t n, double h,
                     double tol)
{
    float *u = rnd(n, 1.0), *x0 = malloc((size_t)n * sizeof(float));
    memcpy(x0, x, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = x0[i] + (float)(h * u[i]);
    double lp = L(ctx);
    for (int64_t i = 0; i < n; i++) x[i] = x0[i] - (float)(h * u[i]);
    double lm = L(ctx);
    memcpy(x, x0, (size_t)n * sizeof(float));
    double fd = (lp - lm) / (2 * h), an = dot(g, u, n);
    double rel = fabs(fd - an) / fmax(fabs(an), 1e-6);
    fprintf(stderr, "  %-34s fd %+.6e analytic %+.6e rel %.2e\n", what, fd, an, rel);
    CHECK(rel < tol, "%s: finite difference %.6e vs analytic %.6e", what, fd, an);
    free(u);
    free(x0);
}

/* ---- rmsnorm ------------------------------------------------------------------------------- */
typedef struct {
    float *x, *w, *dout, *out;
    int N, C;
} rms_ctx;
static double rms_L(void *p)
{
    rms_ctx *c = p;
    be->ops->rmsnorm_fwd(be, T(c->out), aha_tensor_none(), T(c->x), T(c->w), c->N, c->C, 1e-5f, &err);
    return dot(c->out, c->dout, (int64_t)c->N * c->C);
}
static void test_rmsnorm(void)
{
    int N = 6, C = 16;
    rms_ctx c = {rnd(N * C, 1), rnd(C, 1), rnd(N * C, 1), zeros(N * C), N, C};
    float *rstd = zeros(N), *dx = rnd(N * C, 1), *dx0 = malloc(N * C * 4), *dw = zeros(C);
    memcpy(dx0, dx, N * C * 4);
    be->ops->rmsnorm_fwd(be, T(c.out), T(rstd), T(c.x), T(c.w), N, C, 1e-5f, &err);
    CHECK(be->ops->rmsnorm_bwd(be, T(dx), T(dw), T(c.dout), T(c.x), T(c.w), T(rstd), N, C, true, &err) == AHA_OK,
          "rmsnorm_bwd");
    for (int i = 0; i < N * C; i++) dx[i] -= dx0[i]; /* accumulate added the gradient */
    fd_check("rmsnorm dx (accumulated)", rms_L, &c, c.x, dx, N * C, 1e-3, 2e-3);
    fd_check("rmsnorm dw", rms_L, &c, c.w, dw, C, 1e-3, 2e-3);
    free(c.x), free(c.w), free(c.dout), free(c.out), free(rstd), free(dx), free(dx0), free(dw);
}

/* ---- swiglu -------------------------------------------------------------------------------- */
typedef struct {
    float *g, *u, *dout, *out;
    int n;
} sw_ctx;
static double sw_L(void *p)
{
    sw_ctx *c = p;
    be->ops->swiglu_fwd(be, T(c->out), T(c->g), T(c->u), c->n, &err);
    return dot(c->out, c->dout, c->n);
}
static void test_swiglu(void)
{
    int n = 64;
    sw_ctx c = {rnd(n, 2), rnd(n, 1), rnd(n, 1), zeros(n), n};
    float *dg = zeros(n), *du = zeros(n);
    CHECK(be->ops->swiglu_bwd(be, T(dg), T(du), T(c.dout), T(c.g), T(c.u), n, &err) == AHA_OK, "swiglu_bwd");
    fd_check("swiglu dg", sw_L, &c, c.g, dg, n, 1e-3, 2e-3);
    fd_check("swiglu du", sw_L, &c, c.u, du, n, 1e-3, 2e-3);
    free(c.g), free(c.u), free(c.dout), free(c.out), free(dg), free(du);
}

/* ---- rope: orthogonal, so bwd(fwd(x)) = x and <dout, R x> = <R^T dout, x> ------------------ */
static void test_rope(void)
{
    int N = 5, nh = 3, D = 8;
    int32_t pos[5] = {0, 1, 7, 300, 4095};
    float *x = rnd(N * nh * D, 1), *y = malloc(N * nh * D * 4), *d = rnd(N * nh * D, 1), *dx = malloc(N * nh * D * 4);
    memcpy(y, x, N * nh * D * 4);
    memcpy(dx, d, N * nh * D * 4);
    be->ops->rope_fwd(be, T(y), Ti(pos), N, nh, D, 10000.0f, &err);
    CHECK(th_max_abs("rope at position 0", y, x, nh * D) == 0, "position 0 is the identity");
    be->ops->rope_bwd(be, T(dx), Ti(pos), N, nh, D, 10000.0f, &err);
    CHECK(fabs(dot(d, y, N * nh * D) - dot(dx, x, N * nh * D)) < 1e-4, "rope_bwd is the transpose");
    be->ops->rope_bwd(be, T(y), Ti(pos), N, nh, D, 10000.0f, &err);
    CHECK(th_max_abs("rope inverse", y, x, N * nh * D) < 1e-5, "bwd(fwd(x)) = x");
    /* the rotation itself: pair (i, i + D/2) of token 2 (position 7), frequency i */
    int i = 1;
    double ang = 7.0 * pow(10000.0, -2.0 * i / D);
    memcpy(y, x, N * nh * D * 4);
    be->ops->rope_fwd(be, T(y), Ti(pos), N, nh, D, 10000.0f, &err);
    const float *xr = x + 2 * nh * D, *yr = y + 2 * nh * D;
    CHECK(fabs(yr[i] - (xr[i] * cos(ang) - xr[i + D / 2] * sin(ang))) < 1e-5 &&
              fabs(yr[i + D / 2] - (xr[i + D / 2] * cos(ang) + xr[i] * sin(ang))) < 1e-5,
          "rotate-half convention");
    free(x), free(y), free(d), free(dx);
}

/* ---- attention ------------------------------------------------------------------------------ */
typedef struct {
    float *q, *k, *v, *dout, *out, *lse;
    int32_t *cu;
    int n_seqs, N, H, KV, D, maxlen;
} att_ctx;
static double att_L(void *p)
{
    att_ctx *c = p;
    be->ops->attention_fwd(be, T(c->out), T(c->lse), T(c->q), T(c->k), T(c->v), Ti(c->cu), c->n_seqs, c->N, c->H,
                           c->KV, c->D, c->maxlen, &err);
    return dot(c->out, c->dout, (int64_t)c->N * c->H * c->D);
}
static void test_attention(void)
{
    int32_t cu[4] = {0, 5, 6, 9}; /* lengths 5, 1, 3 */
    int N = 9, H = 4, KV = 2, D = 8;
    att_ctx c = {rnd(N * H * D, 1), rnd(N * KV * D, 1), rnd(N * KV * D, 1), rnd(N * H * D, 1), zeros(N * H * D),
                 zeros(N * H), cu, 3, N, H, KV, D, 5};
    att_L(&c);
    /* naive reference for one query: sequence 0, token 3, head 3 (kv head 1) */
    {
        int t = 3, h = 3, kh = 1;
        double s[4], mx = -1e30, sum = 0, o0 = 0;
        for (int u = 0; u <= t; u++) {
            s[u] = dot(c.q + (t * H + h) * D, c.k + (u * KV + kh) * D, D) / sqrt(D);
            mx = fmax(mx, s[u]);
        }
        for (int u = 0; u <= t; u++) sum += exp(s[u] - mx);
        for (int u = 0; u <= t; u++) o0 += exp(s[u] - mx) / sum * c.v[(u * KV + kh) * D];
        CHECK(fabs(c.out[(t * H + h) * D] - o0) < 1e-5, "attention output %g vs %g", (double)c.out[(t * H + h) * D], o0);
        CHECK(fabs(c.lse[t * H + h] - (mx + log(sum))) < 1e-5, "attention lse");
        /* the single-token sequence attends to itself only */
        CHECK(fabs(c.out[(5 * H + 0) * D + 2] - c.v[(5 * KV + 0) * D + 2]) < 1e-6, "length-1 sequence");
    }
    float *dq = rnd(N * H * D, 1), *dk = rnd(N * KV * D, 1), *dv = rnd(N * KV * D, 1); /* overwritten */
    CHECK(be->ops->attention_bwd(be, T(dq), T(dk), T(dv), T(c.dout), T(c.q), T(c.k), T(c.v), T(c.out), T(c.lse),
                                 Ti(cu), 3, N, H, KV, D, 5, &err) == AHA_OK, "attention_bwd");
    fd_check("attention dq", att_L, &c, c.q, dq, N * H * D, 1e-3, 2e-3);
    fd_check("attention dk", att_L, &c, c.k, dk, N * KV * D, 1e-3, 2e-3);
    fd_check("attention dv", att_L, &c, c.v, dv, N * KV * D, 1e-3, 2e-3);
    free(c.q), free(c.k), free(c.v), free(c.dout), free(c.out), free(c.lse), free(dq), free(dk), free(dv);
}

/* ---- logprobs ------------------------------------------------------------------------------ */
typedef struct {
    float *logits, *dlp, *lp, *lse;
    int32_t *tg;
    int n, V;
} lp_ctx;
static double lp_L(void *p)
{
    lp_ctx *c = p;
    be->ops->logprob_fwd(be, T(c->lp), T(c->lse), T(c->logits), Ti(c->tg), c->n, c->V, &err);
    return dot(c->lp, c->dlp, c->n);
}
static void test_logprob(void)
{
    int n = 4, V = 33;
    int32_t tg[4] = {3, -1, 32, 0};
    lp_ctx c = {rnd(n * V, 3), rnd(n, 1), zeros(n), zeros(n), tg, n, V};
    lp_L(&c);
    double l0 = 0;
    for (int j = 0; j < V; j++) l0 += exp(c.logits[j]);
    CHECK(fabs(c.lp[0] - (c.logits[3] - log(l0))) < 1e-5, "logprob row 0");
    CHECK(c.lp[1] == 0, "no target gives 0");
    float *dl = zeros(n * V);
    CHECK(be->ops->logprob_bwd(be, T(dl), T(c.logits), T(c.lse), Ti(tg), T(c.dlp), n, V, &err) == AHA_OK, "bwd");
    fd_check("logprob dlogits", lp_L, &c, c.logits, dl, n * V, 1e-3, 2e-3);
    free(c.logits), free(c.dlp), free(c.lp), free(c.lse), free(dl);
}

/* ---- matmul family vs naive loops --------------------------------------------------------- */
static void test_matmul(void)
{
    int M = 7, K = 5, N = 3;
    float *x = rnd(M * K, 1), *w = rnd(N * K, 1), *b = rnd(N, 1), *y = zeros(M * N), *ref = zeros(M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) ref[i * N + j] = (float)(dot(x + i * K, w + j * K, K) + b[j]);
    be->ops->matmul(be, T(y), T(x), T(w), T(b), M, K, N, &err);
    CHECK(th_max_abs("matmul", y, ref, M * N) < 1e-5, "matmul");
    float *dy = rnd(M * N, 1), *dx = rnd(M * K, 1), *dxr = zeros(M * K), *dw = rnd(N * K, 1), *dwr = zeros(N * K),
          *db = rnd(N, 1), *dbr = zeros(N);
    memcpy(dwr, dw, N * K * 4);
    memcpy(dbr, db, N * 4);
    for (int i = 0; i < M; i++)
        for (int kk = 0; kk < K; kk++)
            for (int j = 0; j < N; j++) dxr[i * K + kk] += dy[i * N + j] * w[j * K + kk];
    for (int j = 0; j < N; j++)
        for (int i = 0; i < M; i++) {
            dbr[j] += dy[i * N + j];
            for (int kk = 0; kk < K; kk++) dwr[j * K + kk] += dy[i * N + j] * x[i * K + kk];
        }
    be->ops->matmul_bwd_dx(be, T(dx), T(dy), T(w), M, K, N, false, &err);
    CHECK(th_max_abs("matmul dx", dx, dxr, M * K) < 1e-5, "dx");
    be->ops->matmul_bwd_dw(be, T(dw), T(db), T(dy), T(x), M, K, N, &err);
    CHECK(th_max_abs("matmul dw (+=)", dw, dwr, N * K) < 1e-5, "dw accumulates");
    CHECK(th_max_abs("matmul dbias (+=)", db, dbr, N) < 1e-5, "dbias accumulates");
    free(x), free(w), free(b), free(y), free(ref), free(dy), free(dx), free(dxr), free(dw), free(dwr), free(db),
        free(dbr);
}

/* ---- GRPO loss with both clip bounds active ------------------------------------------------- */
typedef struct {
    float *lp, *old, *ref, *adv, *w, *mask, *dlp, *stats;
    int n;
    float el, eh, beta;
} grpo_ctx;
static double grpo_L(void *p)
{
    grpo_ctx *c = p;
    memset(c->stats, 0, AHA_GRPO_NSTATS * 4);
    be->ops->grpo_loss(be, T(c->dlp), T(c->stats), T(c->lp), T(c->old), T(c->ref), T(c->adv), T(c->w), T(c->mask),
                       c->n, c->el, c->eh, c->beta, &err);
    return c->stats[AHA_GRPO_STAT_LOSS];
}
static void test_grpo(void)
{
    int n = 64;
    grpo_ctx c = {rnd(n, 1), NULL, NULL, zeros(n), zeros(n), zeros(n), zeros(n), zeros(AHA_GRPO_NSTATS), n,
                  0.2f, 0.28f, 0.04f};
    c.old = malloc(n * 4);
    c.ref = malloc(n * 4);
    for (int i = 0; i < n; i++) {
        c.old[i] = c.lp[i] + (float)(aha_rng_normal(&rng) * 0.4); /* ratios well outside [0.8, 1.28] */
        c.ref[i] = c.lp[i] + (float)(aha_rng_normal(&rng) * 0.3);
        c.adv[i] = i % 3 == 0 ? -1.1f : 0.7f;
        c.mask[i] = i % 5 == 4 ? 0.0f : 1.0f;
        c.w[i] = c.mask[i] * 0.03f;
    }
    double L = grpo_L(&c), ref = 0, kl = 0, clipped = 0, tok = 0;
    for (int i = 0; i < n; i++) {
        if (c.mask[i] == 0) continue;
        double r = exp((double)c.lp[i] - c.old[i]), a = c.adv[i];
        double cl = fmin(fmax(r, 1 - 0.2), 1 + 0.28);
        double surr = fmin(r * a, cl * a);
        double k = exp((double)c.ref[i] - c.lp[i]) - ((double)c.ref[i] - c.lp[i]) - 1;
        ref += c.w[i] * -(surr - 0.04 * k);
        kl += k;
        clipped += cl * a < r * a;
        tok += 1;
    }
    fprintf(stderr, "  grpo loss %.8f ref %.8f, %g of %g tokens clipped\n", L, ref, clipped, tok);
    CHECK(fabs(L - ref) < 1e-6, "grpo loss vs double reference");
    CHECK(fabs(c.stats[AHA_GRPO_STAT_KL] - kl) < 1e-4 && c.stats[AHA_GRPO_STAT_CLIPPED] == clipped &&
              c.stats[AHA_GRPO_STAT_TOKENS] == tok, "grpo stats");
    CHECK(clipped > 5 && clipped < tok - 5, "both branches exercised");
    float *g = malloc(n * 4);
    memcpy(g, c.dlp, n * 4);
    /* small step: the loss has kinks at the clip bounds */
    fd_check("grpo dlp", grpo_L, &c, c.lp, g, n, 1e-4, 5e-3);
    for (int i = 0; i < n; i++)
        if (c.mask[i] == 0) CHECK(g[i] == 0, "masked token has no gradient");
    /* beta = 0 with no reference */
    c.beta = 0;
    memset(c.stats, 0, AHA_GRPO_NSTATS * 4);
    CHECK(be->ops->grpo_loss(be, T(c.dlp), T(c.stats), T(c.lp), T(c.old), aha_tensor_none(), T(c.adv), T(c.w),
                             T(c.mask), n, 0.2f, 0.28f, 0.0f, &err) == AHA_OK, "grpo without reference");
    free(c.lp), free(c.old), free(c.ref), free(c.adv), free(c.w), free(c.mask), free(c.dlp), free(c.stats), free(g);
}

/* ---- AdamW vs double reference ------------------------------------------------------------- */
static void test_adamw(void)
{
    int n = 50;
    float *p = rnd(n, 1), *g = rnd(n, 1), *m = zeros(n), *v = zeros(n);
    double pr[50], mr[50] = {0}, vr[50] = {0};
    for (int i = 0; i < n; i++) pr[i] = p[i];
    for (int step = 1; step <= 3; step++) {
        CHECK(be->ops->adamw(be, T(p), aha_tensor_none(), T(g), T(m), T(v), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f,
                             step, &err) == AHA_OK, "adamw");
        for (int i = 0; i < n; i++) {
            double gi = 0.5 * g[i];
            pr[i] *= 1 - 1e-2 * 0.1;
            mr[i] = 0.9 * mr[i] + 0.1 * gi;
            vr[i] = 0.95 * vr[i] + 0.05 * gi * gi;
            double mh = mr[i] / (1 - pow(0.9, step)), vh = vr[i] / (1 - pow(0.95, step));
            pr[i] -= 1e-2 * mh / (sqrt(vh) + 1e-8);
        }
    }
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(p[i] - pr[i]));
    fprintf(stderr, "  adamw worst |d| %.3e\n", worst);
    CHECK(worst < 1e-6, "adamw vs double reference");
    CHECK(be->ops->adamw(be, T(p), aha_tensor_none(), T(g), T(m), T(v), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0,
                         &err) == AHA_EINVAL, "step 0 refused");
    free(p), free(g), free(m), free(v);
}

int main(void)
{
    if (aha_backend_open("cpu", 1, &be, &err) != AHA_OK) return 1;
    aha_rng_seed(&rng, 2024, 0);
    test_rmsnorm();
    test_swiglu();
    test_rope();
    test_attention();
    test_logprob();
    test_matmul();
    test_grpo();
    test_adamw();
    /* scatter_rows is embedding_fwd's inverse on distinct rows */
    {
        float *dst = rnd(6 * 3, 1), *src = rnd(2 * 3, 1), *back = zeros(2 * 3), *orig = malloc(18 * 4);
        int32_t idx[2] = {4, 1};
        memcpy(orig, dst, 18 * 4);
        CHECK(be->ops->scatter_rows(be, T(dst), Ti(idx), T(src), 2, 3, &err) == AHA_OK, "scatter_rows");
        be->ops->embedding_fwd(be, T(back), Ti(idx), T(dst), 2, 3, &err);
        CHECK(memcmp(back, src, 6 * 4) == 0, "gather(scatter(x)) = x");
        CHECK(memcmp(dst, orig, 3 * 4) == 0 && memcmp(dst + 6, orig + 6, 6 * 4) == 0 &&
                  memcmp(dst + 15, orig + 15, 3 * 4) == 0, "other rows untouched");
        free(dst), free(src), free(back), free(orig);
    }
    aha_tensor bf = {NULL, AHA_DT_BF16};
    float one = 1;
    CHECK(be->ops->scale(be, bf, 0, 1.0f, &err) == AHA_EUNSUPPORTED, "cpu refuses bf16 tensors");
    CHECK(be->ops->copy(be, T(&one), (aha_tensor){&one, AHA_DT_I32}, 1, &err) == AHA_EUNSUPPORTED, "bad convert");
    aha_backend_free(be);
    return th_done("backend_cpu");
}
