/* cpu.c: the fp32 reference backend. Every GEMM goes through OpenBLAS (cblas_sgemm, threaded
 * by OpenBLAS); the other ops are plain loops over host memory. All float tensors must be F32
 * (act_dtype F32); index tensors I32. Reductions accumulate in double so this backend can
 * serve as the reference the CUDA kernels are checked against.
 *
 * Attention builds one row of scores at a time in a scratch buffer owned by the backend
 * (grown, never shrunk), so no (T, T) matrix is ever allocated. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

struct aha_buf {
    void *base;
    size_t size;
};

typedef struct {
    float *scratch; /* attention score rows */
    size_t scratch_n;
} cpu_ctx;

#define F(t) ((float *)(t).data)
#define IX(t) ((const int32_t *)(t).data)

#define NEED_DT(t, want, what)                                                                \
    do {                                                                                      \
        if ((t).dt != (want))                                                                 \
            return aha_errf(err, AHA_EUNSUPPORTED, "cpu backend: %s must be %s, not %s", what,  \
                            aha_dtype_name(want), aha_dtype_name((t).dt));                    \
    } while (0)
#define NEED_F32(t, what) NEED_DT(t, AHA_DT_F32, what)
#define NEED_I32(t, what) NEED_DT(t, AHA_DT_I32, what)

static float *cpu_scratch(aha_backend *be, size_t n)
{
    cpu_ctx *c = be->ctx;
    if (c->scratch_n < n) {
        float *p = realloc(c->scratch, n * sizeof(float));
        if (!p) return NULL;
        c->scratch = p;
        c->scratch_n = n;
    }
    return c->scratch;
}

/* ---- memory ---------------------------------------------------------------------------- */

static void cpu_free(aha_backend *be)
{
    cpu_ctx *c = be->ctx;
    if (c) free(c->scratch);
    free(c);
    be->ctx = NULL;
}

static aha_status cpu_buf_alloc(aha_backend *be, size_t nbytes, aha_buf **out, aha_err *err)
{
    (void)be;
    *out = NULL;
    size_t rounded = (nbytes + 255) / 256 * 256;
    if (rounded == 0) rounded = 256;
    aha_buf *b = calloc(1, sizeof *b);
    void *p = b ? aligned_alloc(256, rounded) : NULL;
    if (!p) {
        free(b);
        return aha_errf(err, AHA_ENOMEM, "cpu backend: cannot allocate %zu bytes", nbytes);
    }
    memset(p, 0, rounded);
    b->base = p;
    b->size = nbytes;
    *out = b;
    return AHA_OK;
}

static void cpu_buf_free(aha_backend *be, aha_buf *b)
{
    (void)be;
    if (!b) return;
    free(b->base);
    free(b);
}

static void *cpu_buf_base(aha_buf *b) { return b->base; }
static size_t cpu_buf_size(aha_buf *b) { return b->size; }

static aha_status cpu_to_device(aha_backend *be, aha_tensor dst, const void *src, size_t nbytes,
                                aha_err *err)
{
    (void)be;
    (void)err;
    if (nbytes) memmove(dst.data, src, nbytes);
    return AHA_OK;
}

static aha_status cpu_to_host(aha_backend *be, void *dst, aha_tensor src, size_t nbytes, aha_err *err)
{
    (void)be;
    (void)err;
    if (nbytes) memmove(dst, src.data, nbytes);
    return AHA_OK;
}

static aha_status cpu_synchronize(aha_backend *be, aha_err *err)
{
    (void)be;
    (void)err;
    return AHA_OK;
}

/* ---- elementwise --------------------------------------------------------------------- */

static aha_status cpu_fill(aha_backend *be, aha_tensor x, int64_t n, float value, aha_err *err)
{
    (void)be;
    NEED_F32(x, "fill x");
    float *p = F(x);
    for (int64_t i = 0; i < n; i++) p[i] = value;
    return AHA_OK;
}

static aha_status cpu_copy(aha_backend *be, aha_tensor dst, aha_tensor src, int64_t n, aha_err *err)
{
    (void)be;
    if (dst.dt == src.dt) {
        memmove(dst.data, src.data, (size_t)n * aha_dtype_size(dst.dt));
        return AHA_OK;
    }
    if (dst.dt == AHA_DT_F32 && src.dt == AHA_DT_BF16) {
        const uint16_t *s = src.data;
        for (int64_t i = 0; i < n; i++) F(dst)[i] = aha_bf16_to_f32(s[i]);
        return AHA_OK;
    }
    if (dst.dt == AHA_DT_BF16 && src.dt == AHA_DT_F32) {
        uint16_t *d = dst.data;
        for (int64_t i = 0; i < n; i++) d[i] = aha_f32_to_bf16(F(src)[i]);
        return AHA_OK;
    }
    return aha_errf(err, AHA_EUNSUPPORTED, "cpu backend: copy %s -> %s", aha_dtype_name(src.dt),
                    aha_dtype_name(dst.dt));
}

static aha_status cpu_scale(aha_backend *be, aha_tensor x, int64_t n, float s, aha_err *err)
{
    (void)be;
    NEED_F32(x, "scale x");
    float *p = F(x);
    for (int64_t i = 0; i < n; i++) p[i] *= s;
    return AHA_OK;
}

static aha_status cpu_add(aha_backend *be, aha_tensor y, aha_tensor a, aha_tensor b, int64_t n,
                          aha_err *err)
{
    (void)be;
    NEED_F32(y, "add y");
    NEED_F32(a, "add a");
    NEED_F32(b, "add b");
    float *py = F(y);
    const float *pa = F(a), *pb = F(b);
    for (int64_t i = 0; i < n; i++) py[i] = pa[i] + pb[i];
    return AHA_OK;
}

static aha_status cpu_sumsq(aha_backend *be, aha_tensor acc, aha_tensor x, int64_t n, aha_err *err)
{
    (void)be;
    NEED_F32(acc, "sumsq acc");
    NEED_F32(x, "sumsq x");
    const float *p = F(x);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)p[i] * p[i];
    F(acc)[0] = (float)(F(acc)[0] + s);
    return AHA_OK;
}

/* ---- embedding --------------------------------------------------------------------------- */

static aha_status cpu_embedding_fwd(aha_backend *be, aha_tensor out, aha_tensor ids, aha_tensor table,
                                    int N, int C, aha_err *err)
{
    (void)be;
    NEED_F32(out, "embedding out");
    NEED_F32(table, "embedding table");
    NEED_I32(ids, "embedding ids");
    for (int i = 0; i < N; i++)
        memcpy(F(out) + (size_t)i * C, F(table) + (size_t)IX(ids)[i] * C, (size_t)C * sizeof(float));
    return AHA_OK;
}

static aha_status cpu_embedding_bwd(aha_backend *be, aha_tensor dtable, aha_tensor ids,
                                    aha_tensor dout, int N, int C, aha_err *err)
{
    (void)be;
    NEED_F32(dtable, "embedding dtable");
    NEED_F32(dout, "embedding dout");
    NEED_I32(ids, "embedding ids");
    for (int i = 0; i < N; i++) {
        float *d = F(dtable) + (size_t)IX(ids)[i] * C;
        const float *g = F(dout) + (size_t)i * C;
        for (int c = 0; c < C; c++) d[c] += g[c];
    }
    return AHA_OK;
}

/* ---- RMSNorm ----------------------------------------------------------------------------- */

static aha_status cpu_rmsnorm_fwd(aha_backend *be, aha_tensor out, aha_tensor rstd, aha_tensor x,
                                  aha_tensor w, int N, int C, float eps, aha_err *err)
{
    (void)be;
    NEED_F32(out, "rmsnorm out");
    NEED_F32(x, "rmsnorm x");
    NEED_F32(w, "rmsnorm w");
    for (int i = 0; i < N; i++) {
        const float *xr = F(x) + (size_t)i * C;
        float *o = F(out) + (size_t)i * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        for (int c = 0; c < C; c++) o[c] = F(w)[c] * (xr[c] * r);
        if (!aha_tensor_is_none(rstd)) F(rstd)[i] = r;
    }
    return AHA_OK;
}

static aha_status cpu_rmsnorm_bwd(aha_backend *be, aha_tensor dx, aha_tensor dw, aha_tensor dout,
                                  aha_tensor x, aha_tensor w, aha_tensor rstd, int N, int C,
                                  bool accumulate, aha_err *err)
{
    (void)be;
    NEED_F32(dx, "rmsnorm dx");
    NEED_F32(dw, "rmsnorm dw");
    NEED_F32(dout, "rmsnorm dout");
    NEED_F32(x, "rmsnorm x");
    NEED_F32(w, "rmsnorm w");
    NEED_F32(rstd, "rmsnorm rstd");
    const float *pw = F(w);
    float *pdw = F(dw);
    for (int i = 0; i < N; i++) {
        const float *xr = F(x) + (size_t)i * C;
        const float *g = F(dout) + (size_t)i * C;
        float *d = F(dx) + (size_t)i * C;
        double r = F(rstd)[i];
        /* y = w x r, r = (mean x^2 + eps)^-1/2: dx = r w g - r^3 x <w g, x> / C */
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)g[c] * pw[c] * xr[c];
        double k = r * r * r * dot / C;
        for (int c = 0; c < C; c++) {
            float v = (float)(r * pw[c] * g[c] - k * xr[c]);
            d[c] = accumulate ? d[c] + v : v;
            pdw[c] += (float)(g[c] * xr[c] * r);
        }
    }
    return AHA_OK;
}

/* ---- matmul -------------------------------------------------------------------------------- */

static aha_status cpu_matmul(aha_backend *be, aha_tensor y, aha_tensor x, aha_tensor w,
                             aha_tensor bias, int M, int K, int N, aha_err *err)
{
    (void)be;
    NEED_F32(y, "matmul y");
    NEED_F32(x, "matmul x");
    NEED_F32(w, "matmul w");
    float beta = 0.0f;
    if (!aha_tensor_is_none(bias)) {
        NEED_F32(bias, "matmul bias");
        for (int i = 0; i < M; i++) memcpy(F(y) + (size_t)i * N, F(bias), (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    if (M == 0 || N == 0) return AHA_OK;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, F(x), K, F(w), K, beta, F(y),
                N);
    return AHA_OK;
}

static aha_status cpu_matmul_bwd_dx(aha_backend *be, aha_tensor dx, aha_tensor dy, aha_tensor w,
                                    int M, int K, int N, bool accumulate, aha_err *err)
{
    (void)be;
    NEED_F32(dx, "matmul dx");
    NEED_F32(dy, "matmul dy");
    NEED_F32(w, "matmul w");
    if (M == 0 || K == 0) return AHA_OK;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, F(dy), N, F(w), K,
                accumulate ? 1.0f : 0.0f, F(dx), K);
    return AHA_OK;
}

static aha_status cpu_matmul_bwd_dw(aha_backend *be, aha_tensor dw, aha_tensor dbias, aha_tensor dy,
                                    aha_tensor x, int M, int K, int N, aha_err *err)
{
    (void)be;
    NEED_F32(dw, "matmul dw");
    NEED_F32(dy, "matmul dy");
    NEED_F32(x, "matmul x");
    if (M == 0) return AHA_OK;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, F(dy), N, F(x), K, 1.0f,
                F(dw), K);
    if (!aha_tensor_is_none(dbias)) {
        NEED_F32(dbias, "matmul dbias");
        float *db = F(dbias);
        for (int i = 0; i < M; i++) {
            const float *r = F(dy) + (size_t)i * N;
            for (int j = 0; j < N; j++) db[j] += r[j];
        }
    }
    return AHA_OK;
}

/* ---- RoPE -------------------------------------------------------------------------------- */

/* transformers computes inv_freq and pos * inv_freq in fp32 and takes cos/sin of that fp32
 * angle; doing the same keeps long positions in agreement. */
static aha_status cpu_rope(aha_backend *be, aha_tensor x, aha_tensor pos, int N, int nh, int D,
                           float theta, float sign, aha_err *err)
{
    NEED_F32(x, "rope x");
    NEED_I32(pos, "rope pos");
    int half = D / 2;
    float *cs = cpu_scratch(be, (size_t)D + half);
    if (!cs) return aha_errf(err, AHA_ENOMEM, "cpu backend: rope scratch");
    float *inv = cs + D;
    for (int i = 0; i < half; i++) inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)D);
    for (int n = 0; n < N; n++) {
        float p = (float)IX(pos)[n];
        for (int i = 0; i < half; i++) {
            float ang = p * inv[i];
            cs[i] = (float)cos((double)ang);
            cs[half + i] = sign * (float)sin((double)ang);
        }
        for (int h = 0; h < nh; h++) {
            float *r = F(x) + ((size_t)n * nh + h) * D;
            for (int i = 0; i < half; i++) {
                float a = r[i], b = r[i + half], c = cs[i], s = cs[half + i];
                r[i] = a * c - b * s;
                r[i + half] = b * c + a * s;
            }
        }
    }
    return AHA_OK;
}

static aha_status cpu_rope_fwd(aha_backend *be, aha_tensor x, aha_tensor pos, int N, int nh, int D,
                               float theta, aha_err *err)
{
    return cpu_rope(be, x, pos, N, nh, D, theta, 1.0f, err);
}

static aha_status cpu_rope_bwd(aha_backend *be, aha_tensor dx, aha_tensor pos, int N, int nh, int D,
                               float theta, aha_err *err)
{
    /* the rotation is orthogonal: its transpose is the rotation by -angle */
    return cpu_rope(be, dx, pos, N, nh, D, theta, -1.0f, err);
}

/* ---- attention ------------------------------------------------------------------------- */

static float dotf(const float *a, const float *b, int n)
{
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static float row_max(const float *x, int n)
{
    float mx = -INFINITY;
    for (int j = 0; j < n; j++)
        if (x[j] > mx) mx = x[j];
    return mx;
}

/* The numerators of a softmax row: x <- exp(x - max x), their sum (in double) returned and the
 * max in *mx, so the caller normalises and can form the log-sum-exp. */
static double softmax_exp(float *x, int n, float *mx)
{
    float m = row_max(x, n);
    double sum = 0;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - m);
        sum += x[j];
    }
    *mx = m;
    return sum;
}

/* S (T, T) = alpha A B^T for one head of one sequence: A holds T rows of D floats at stride
 * H*D (queries or output gradients), B T rows at stride KV*D (keys or values). */
static void head_scores(float *S, const float *A, const float *B, int T, int H, int KV, int D, float alpha)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, alpha, A, H * D, B, KV * D, 0.0f, S, T);
}

/* Per (sequence, query head): S = Q K^T scale as one GEMM into a (T, T) scratch, causal
 * softmax by rows, O = P V as another GEMM. The strided head views are plain leading
 * dimensions (H*D for q, KV*D for k and v), so nothing is copied. The upper triangle is
 * computed and discarded: twice the flops of a causal kernel, still far faster than loops. */
static aha_status cpu_attention_fwd(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q,
                                    aha_tensor k, aha_tensor v, aha_tensor cu_seqlens, int n_seqs,
                                    int N, int H, int KV, int D, int max_seqlen, aha_err *err)
{
    NEED_F32(out, "attention out");
    NEED_F32(lse, "attention lse");
    NEED_F32(q, "attention q");
    NEED_F32(k, "attention k");
    NEED_F32(v, "attention v");
    NEED_I32(cu_seqlens, "attention cu_seqlens");
    float *S = cpu_scratch(be, (size_t)max_seqlen * max_seqlen);
    if (!S) return aha_errf(err, AHA_ENOMEM, "cpu backend: attention scratch (%d^2)", max_seqlen);
    const float scale = 1.0f / sqrtf((float)D);
    const int rep = H / KV;
    for (int s = 0; s < n_seqs; s++) {
        int b = IX(cu_seqlens)[s], T = IX(cu_seqlens)[s + 1] - b;
        if (T <= 0) continue;
        for (int h = 0; h < H; h++) {
            const float *Q = F(q) + ((size_t)b * H + h) * D;
            const float *K = F(k) + ((size_t)b * KV + h / rep) * D;
            const float *Vv = F(v) + ((size_t)b * KV + h / rep) * D;
            head_scores(S, Q, K, T, H, KV, D, scale);
            for (int i = 0; i < T; i++) {
                float *r = S + (size_t)i * T, mx;
                double sum = softmax_exp(r, i + 1, &mx);
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= i; j++) r[j] *= inv;
                for (int j = i + 1; j < T; j++) r[j] = 0.0f;
                F(lse)[((size_t)b + i) * H + h] = mx + (float)log(sum);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, S, T, Vv, KV * D, 0.0f,
                        F(out) + ((size_t)b * H + h) * D, H * D);
        }
    }
    return AHA_OK;
}

/* Per (sequence, query head), with P rebuilt from the saved lse:
 *   dP = dO V^T, dS = P (dP - rowsum(dO * O)) scale, dQ = dS K, dK += dS^T Q, dV += P^T dO. */
static aha_status cpu_attention_bwd(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv,
                                    aha_tensor dout, aha_tensor q, aha_tensor k, aha_tensor v,
                                    aha_tensor out, aha_tensor lse, aha_tensor cu_seqlens, int n_seqs,
                                    int N, int H, int KV, int D, int max_seqlen, aha_err *err)
{
    NEED_F32(dq, "attention dq");
    NEED_F32(dk, "attention dk");
    NEED_F32(dv, "attention dv");
    NEED_F32(dout, "attention dout");
    NEED_F32(q, "attention q");
    NEED_F32(k, "attention k");
    NEED_F32(v, "attention v");
    NEED_F32(out, "attention out");
    NEED_F32(lse, "attention lse");
    NEED_I32(cu_seqlens, "attention cu_seqlens");
    size_t TT = (size_t)max_seqlen * max_seqlen;
    float *P = cpu_scratch(be, 2 * TT + (size_t)max_seqlen);
    if (!P) return aha_errf(err, AHA_ENOMEM, "cpu backend: attention scratch (%d^2)", max_seqlen);
    float *dP = P + TT, *Di = dP + TT;
    memset(dk.data, 0, (size_t)N * KV * D * sizeof(float));
    memset(dv.data, 0, (size_t)N * KV * D * sizeof(float));
    const float scale = 1.0f / sqrtf((float)D);
    const int rep = H / KV;
    for (int s = 0; s < n_seqs; s++) {
        int b = IX(cu_seqlens)[s], T = IX(cu_seqlens)[s + 1] - b;
        if (T <= 0) continue;
        for (int h = 0; h < H; h++) {
            size_t qo = ((size_t)b * H + h) * D, ko = ((size_t)b * KV + h / rep) * D;
            const float *Q = F(q) + qo, *K = F(k) + ko, *Vv = F(v) + ko, *O = F(out) + qo, *dO = F(dout) + qo;
            head_scores(P, Q, K, T, H, KV, D, scale);
            head_scores(dP, dO, Vv, T, H, KV, D, 1.0f);
            for (int i = 0; i < T; i++) Di[i] = dotf(dO + (size_t)i * H * D, O + (size_t)i * H * D, D);
            for (int i = 0; i < T; i++) {
                float *p = P + (size_t)i * T, *g = dP + (size_t)i * T;
                float l = F(lse)[((size_t)b + i) * H + h];
                for (int j = 0; j <= i; j++) {
                    p[j] = expf(p[j] - l);
                    g[j] = p[j] * (g[j] - Di[i]) * scale;
                }
                for (int j = i + 1; j < T; j++) p[j] = g[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, dP, T, K, KV * D, 0.0f,
                        F(dq) + qo, H * D);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, dP, T, Q, H * D, 1.0f, F(dk) + ko,
                        KV * D);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, P, T, dO, H * D, 1.0f, F(dv) + ko,
                        KV * D);
        }
    }
    return AHA_OK;
}

static aha_status cpu_kv_store(aha_backend *be, aha_tensor kc, aha_tensor vc, aha_tensor k,
                               aha_tensor v, aha_tensor slots, aha_tensor pos, int n, int KV, int D,
                               int max_seq, aha_err *err)
{
    (void)be;
    NEED_F32(kc, "kv_store kc");
    NEED_F32(vc, "kv_store vc");
    NEED_F32(k, "kv_store k");
    NEED_F32(v, "kv_store v");
    NEED_I32(slots, "kv_store slots");
    NEED_I32(pos, "kv_store pos");
    size_t row = (size_t)KV * D;
    for (int i = 0; i < n; i++) {
        size_t at = ((size_t)IX(slots)[i] * max_seq + IX(pos)[i]) * row;
        memcpy(F(kc) + at, F(k) + (size_t)i * row, row * sizeof(float));
        memcpy(F(vc) + at, F(v) + (size_t)i * row, row * sizeof(float));
    }
    return AHA_OK;
}

/* One query against its slot's cached keys: two matrix-vector products per head. */
static aha_status cpu_attention_cached(aha_backend *be, aha_tensor out, aha_tensor q, aha_tensor kc,
                                       aha_tensor vc, aha_tensor slots, aha_tensor lens, int n, int H,
                                       int KV, int D, int max_seq, aha_err *err)
{
    NEED_F32(out, "attention_cached out");
    NEED_F32(q, "attention_cached q");
    NEED_F32(kc, "attention_cached kc");
    NEED_F32(vc, "attention_cached vc");
    NEED_I32(slots, "attention_cached slots");
    NEED_I32(lens, "attention_cached lens");
    float *sc = cpu_scratch(be, (size_t)max_seq);
    if (!sc) return aha_errf(err, AHA_ENOMEM, "cpu backend: attention scratch");
    const float scale = 1.0f / sqrtf((float)D);
    const int rep = H / KV;
    for (int i = 0; i < n; i++) {
        int L = IX(lens)[i];
        for (int h = 0; h < H; h++) {
            size_t base = (size_t)IX(slots)[i] * max_seq * KV * D + (size_t)(h / rep) * D;
            const float *K = F(kc) + base, *Vv = F(vc) + base;
            cblas_sgemv(CblasRowMajor, CblasNoTrans, L, D, scale, K, KV * D, F(q) + ((size_t)i * H + h) * D, 1, 0.0f,
                        sc, 1);
            float mx;
            double sum = softmax_exp(sc, L, &mx);
            cblas_sgemv(CblasRowMajor, CblasTrans, L, D, (float)(1.0 / sum), Vv, KV * D, sc, 1, 0.0f,
                        F(out) + ((size_t)i * H + h) * D, 1);
        }
    }
    return AHA_OK;
}

/* ---- SwiGLU ------------------------------------------------------------------------------ */

static aha_status cpu_swiglu_fwd(aha_backend *be, aha_tensor out, aha_tensor g, aha_tensor u,
                                 int64_t n, aha_err *err)
{
    (void)be;
    NEED_F32(out, "swiglu out");
    NEED_F32(g, "swiglu g");
    NEED_F32(u, "swiglu u");
    for (int64_t i = 0; i < n; i++) {
        float x = F(g)[i];
        F(out)[i] = x / (1.0f + expf(-x)) * F(u)[i];
    }
    return AHA_OK;
}

static aha_status cpu_swiglu_bwd(aha_backend *be, aha_tensor dg, aha_tensor du, aha_tensor dout,
                                 aha_tensor g, aha_tensor u, int64_t n, aha_err *err)
{
    (void)be;
    NEED_F32(dg, "swiglu dg");
    NEED_F32(du, "swiglu du");
    NEED_F32(dout, "swiglu dout");
    NEED_F32(g, "swiglu g");
    NEED_F32(u, "swiglu u");
    for (int64_t i = 0; i < n; i++) {
        float x = F(g)[i], sg = 1.0f / (1.0f + expf(-x)), go = F(dout)[i];
        F(du)[i] = go * x * sg;
        F(dg)[i] = go * F(u)[i] * sg * (1.0f + x * (1.0f - sg));
    }
    return AHA_OK;
}

/* ---- logprobs -------------------------------------------------------------------------------- */

static aha_status cpu_logprob_fwd(aha_backend *be, aha_tensor lp, aha_tensor lse, aha_tensor logits,
                                  aha_tensor targets, int n, int V, aha_err *err)
{
    (void)be;
    NEED_F32(lp, "logprob lp");
    NEED_F32(lse, "logprob lse");
    NEED_F32(logits, "logprob logits");
    NEED_I32(targets, "logprob targets");
    for (int i = 0; i < n; i++) {
        const float *x = F(logits) + (size_t)i * V;
        float mx = row_max(x, V);
        double s = 0;
        for (int j = 0; j < V; j++) s += exp((double)(x[j] - mx));
        double l = mx + log(s);
        F(lse)[i] = (float)l;
        int tg = IX(targets)[i];
        F(lp)[i] = tg >= 0 ? (float)(x[tg] - l) : 0.0f;
    }
    return AHA_OK;
}

static aha_status cpu_logprob_bwd(aha_backend *be, aha_tensor dlogits, aha_tensor logits,
                                  aha_tensor lse, aha_tensor targets, aha_tensor dlp, int n, int V,
                                  aha_err *err)
{
    (void)be;
    NEED_F32(dlogits, "logprob dlogits");
    NEED_F32(logits, "logprob logits");
    NEED_F32(lse, "logprob lse");
    NEED_F32(dlp, "logprob dlp");
    NEED_I32(targets, "logprob targets");
    for (int i = 0; i < n; i++) {
        const float *x = F(logits) + (size_t)i * V;
        float *d = F(dlogits) + (size_t)i * V;
        int tg = IX(targets)[i];
        float g = F(dlp)[i], l = F(lse)[i];
        if (tg < 0 || g == 0.0f) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int j = 0; j < V; j++) d[j] = -g * expf(x[j] - l);
        d[tg] += g;
    }
    return AHA_OK;
}

/* ---- losses ---------------------------------------------------------------------------------- */

static aha_status cpu_grpo_loss(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                                aha_tensor old_lp, aha_tensor ref_lp, aha_tensor adv,
                                aha_tensor weight, aha_tensor mask, int n, float eps_low,
                                float eps_high, float beta, aha_err *err)
{
    (void)be;
    NEED_F32(dlp, "grpo dlp");
    NEED_F32(stats, "grpo stats");
    NEED_F32(lp, "grpo lp");
    NEED_F32(old_lp, "grpo old_lp");
    NEED_F32(adv, "grpo adv");
    NEED_F32(weight, "grpo weight");
    NEED_F32(mask, "grpo mask");
    bool have_ref = !aha_tensor_is_none(ref_lp);
    if (have_ref) NEED_F32(ref_lp, "grpo ref_lp");
    double s[AHA_GRPO_NSTATS] = {0};
    for (int i = 0; i < n; i++) {
        float w = F(weight)[i], mk = F(mask)[i];
        if (w == 0.0f && mk == 0.0f) {
            F(dlp)[i] = 0.0f;
            continue;
        }
        float x = F(lp)[i], a = F(adv)[i];
        float ratio = expf(x - F(old_lp)[i]);
        float cl = fminf(fmaxf(ratio, 1.0f - eps_low), 1.0f + eps_high);
        float s1 = ratio * a, s2 = cl * a;
        bool clipped = s2 < s1;
        float surr = clipped ? s2 : s1;
        /* d surr / d lp: the unclipped branch carries ratio * a; the clipped one is constant
         * outside the clip range (and equal to the unclipped one inside it) */
        float dsurr = clipped ? 0.0f : s1;
        float kl = 0.0f, dkl = 0.0f;
        if (have_ref && beta != 0.0f) {
            float dr = F(ref_lp)[i] - x, e = expf(dr);
            kl = e - dr - 1.0f;
            dkl = 1.0f - e;
        }
        float loss = -(surr - beta * kl);
        F(dlp)[i] = w * (-dsurr + beta * dkl);
        s[AHA_GRPO_STAT_LOSS] += (double)w * loss;
        s[AHA_GRPO_STAT_KL] += (double)mk * kl;
        s[AHA_GRPO_STAT_CLIPPED] += clipped ? mk : 0.0;
        s[AHA_GRPO_STAT_RATIO] += (double)mk * ratio;
        s[AHA_GRPO_STAT_TOKENS] += mk;
    }
    for (int j = 0; j < AHA_GRPO_NSTATS; j++) F(stats)[j] = (float)(F(stats)[j] + s[j]);
    return AHA_OK;
}

static aha_status cpu_sft_loss(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                               aha_tensor weight, int n, aha_err *err)
{
    (void)be;
    NEED_F32(dlp, "sft dlp");
    NEED_F32(stats, "sft stats");
    NEED_F32(lp, "sft lp");
    NEED_F32(weight, "sft weight");
    double loss = 0, tok = 0;
    for (int i = 0; i < n; i++) {
        float w = F(weight)[i];
        F(dlp)[i] = -w;
        if (w != 0.0f) {
            loss -= (double)w * F(lp)[i];
            tok += 1;
        }
    }
    F(stats)[0] = (float)(F(stats)[0] + loss);
    F(stats)[1] = (float)(F(stats)[1] + tok);
    return AHA_OK;
}

/* ---- AdamW (torch single-tensor semantics) ------------------------------------------------ */

static aha_status cpu_adamw(aha_backend *be, aha_tensor p, aha_tensor p_out, aha_tensor g,
                            aha_tensor m, aha_tensor v, int64_t n, float lr, float beta1, float beta2,
                            float eps, float weight_decay, float grad_scale, int step, aha_err *err)
{
    NEED_F32(p, "adamw p");
    NEED_F32(g, "adamw g");
    NEED_F32(m, "adamw m");
    NEED_F32(v, "adamw v");
    if (step < 1) return aha_errf(err, AHA_EINVAL, "adamw: step %d < 1", step);
    /* torch computes the bias corrections in double (python floats) */
    double bc1 = 1.0 - pow((double)beta1, step);
    double bc2 = 1.0 - pow((double)beta2, step);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - (double)lr * weight_decay);
    float *pp = F(p), *pm = F(m), *pv = F(v);
    const float *pg = F(g);
    for (int64_t i = 0; i < n; i++) {
        float gi = pg[i] * grad_scale;
        pp[i] *= decay;
        pm[i] += (gi - pm[i]) * (1.0f - beta1);
        pv[i] = pv[i] * beta2 + (1.0f - beta2) * gi * gi;
        float denom = sqrtf(pv[i]) / bc2_sqrt + eps;
        pp[i] -= step_size * (pm[i] / denom);
    }
    if (!aha_tensor_is_none(p_out) && p_out.data != p.data) return cpu_copy(be, p_out, p, n, err);
    return AHA_OK;
}

static aha_status cpu_scatter_rows(aha_backend *be, aha_tensor dst, aha_tensor idx, aha_tensor src, int n, int C,
                                   aha_err *err)
{
    (void)be;
    NEED_F32(dst, "scatter_rows dst");
    NEED_F32(src, "scatter_rows src");
    NEED_I32(idx, "scatter_rows idx");
    for (int i = 0; i < n; i++)
        memcpy(F(dst) + (size_t)IX(idx)[i] * C, F(src) + (size_t)i * C, (size_t)C * sizeof(float));
    return AHA_OK;
}

static const aha_backend_ops cpu_ops = {
    .name = "cpu",
    .free = cpu_free,
    .buf_alloc = cpu_buf_alloc,
    .buf_free = cpu_buf_free,
    .buf_base = cpu_buf_base,
    .buf_size = cpu_buf_size,
    .to_device = cpu_to_device,
    .to_host = cpu_to_host,
    .synchronize = cpu_synchronize,
    .fill = cpu_fill,
    .copy = cpu_copy,
    .scale = cpu_scale,
    .add = cpu_add,
    .sumsq = cpu_sumsq,
    .embedding_fwd = cpu_embedding_fwd,
    .embedding_bwd = cpu_embedding_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .matmul = cpu_matmul,
    .matmul_bwd_dx = cpu_matmul_bwd_dx,
    .matmul_bwd_dw = cpu_matmul_bwd_dw,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .kv_store = cpu_kv_store,
    .attention_cached = cpu_attention_cached,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .logprob_fwd = cpu_logprob_fwd,
    .logprob_bwd = cpu_logprob_bwd,
    .grpo_loss = cpu_grpo_loss,
    .sft_loss = cpu_sft_loss,
    .adamw = cpu_adamw,
    .scatter_rows = cpu_scatter_rows,
};

aha_status aha_backend_cpu_create(int threads, aha_backend **out, aha_err *err)
{
    *out = NULL;
    aha_backend *be = calloc(1, sizeof *be);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return aha_errf(err, AHA_ENOMEM, "cpu backend: out of memory");
    }
    if (threads > 0) openblas_set_num_threads(threads);
    be->ops = &cpu_ops;
    snprintf(be->device, sizeof be->device, "cpu");
    be->act_dtype = AHA_DT_F32;
    be->ctx = c;
    *out = be;
    return AHA_OK;
}
