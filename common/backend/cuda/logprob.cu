/* logprob.cu: per-token logprobs from a chunk of logits rows and the backward of that
 * log-softmax + gather, in fp32 whatever the logits dtype. One block per row; the forward
 * is one pass with an online (max, sum) per thread merged across the block, so a row of
 * 151,936 bf16 logits is read once, 16 bytes per access. The model feeds row chunks, so (tokens, V) fp32 is never
 * materialised. */
#include "common.cuh"

#define LP_THREADS 512

__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2)
{
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

#define LP_LOG2E 1.4426950408889634f

/* Rows are read 8 elements at a time when vec (V % 8 == 0 and 16-byte aligned rows); the
 * running sum is rescaled once per 8 elements, and exponentials are exp2f of pre-scaled
 * values (2 ulp, the hardware unit) instead of expf's longer accurate sequence: the scalar
 * version ran at ~1.1 TB/s, a quarter of the bandwidth. */
template <typename T>
__global__ void __launch_bounds__(LP_THREADS) k_logprob_fwd(float *lp, float *lse, const T *logits,
                                                            const int32_t *targets, int V, int vec)
{
    __shared__ float shm[32], shs[32];
    int64_t row = blockIdx.x;
    const T *x = logits + row * V;
    float m = -INFINITY, s = 0.0f; /* m in natural units; s = sum exp(x - m) */
    int v8 = vec ? V / 8 : 0;
    for (int gi = threadIdx.x; gi < v8; gi += blockDim.x) {
        float f[8];
        aha__ld8(x + (int64_t)gi * 8, f);
        float mx = f[0];
#pragma unroll
        for (int e = 1; e < 8; e++) mx = fmaxf(mx, f[e]);
        if (mx > m) {
            s *= exp2f((m - mx) * LP_LOG2E);
            m = mx;
        }
        float ml = m * LP_LOG2E;
#pragma unroll
        for (int e = 0; e < 8; e++) s += exp2f(fmaf(f[e], LP_LOG2E, -ml));
    }
    for (int i = v8 * 8 + threadIdx.x; i < V; i += blockDim.x) {
        float v = aha__ld(x, i);
        if (v > m) {
            s = s * exp2f((m - v) * LP_LOG2E) + 1.0f;
            m = v;
        } else {
            s += exp2f((v - m) * LP_LOG2E);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) {
        shm[w] = m;
        shs[w] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float M = shm[0], S = shs[0];
        for (int i = 1; i < (int)(blockDim.x >> 5); i++) lse_merge(M, S, shm[i], shs[i]);
        float l = M + logf(S);
        lse[row] = l;
        int t = targets[row];
        lp[row] = (t >= 0 && t < V) ? aha__ld(x, t) - l : 0.0f;
    }
}

template <typename T>
__global__ void __launch_bounds__(LP_THREADS) k_logprob_bwd(T *dlogits, const T *logits, const float *lse,
                                                            const int32_t *targets, const float *dlp, int V, int vec)
{
    int64_t row = blockIdx.x;
    int t = targets[row];
    float g = (t >= 0 && t < V) ? dlp[row] : 0.0f;
    float ll = lse[row] * LP_LOG2E;
    const T *x = logits + row * V;
    T *dx = dlogits + row * V;
    /* in place (dlogits == logits) is safe: each element is read then written by one thread */
    int v8 = vec ? V / 8 : 0;
    for (int gi = threadIdx.x; gi < v8; gi += blockDim.x) {
        float f[8];
        aha__ld8(x + (int64_t)gi * 8, f);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float p = g != 0.0f ? exp2f(fmaf(f[e], LP_LOG2E, -ll)) : 0.0f;
            f[e] = g * ((gi * 8 + e == t ? 1.0f : 0.0f) - p);
        }
        aha__st8(dx + (int64_t)gi * 8, f);
    }
    for (int i = v8 * 8 + threadIdx.x; i < V; i += blockDim.x) {
        float p = g != 0.0f ? exp2f(fmaf(aha__ld(x, i), LP_LOG2E, -ll)) : 0.0f;
        aha__st(dx, i, g * ((i == t ? 1.0f : 0.0f) - p));
    }
}

static int lp_vec(aha_tensor a, aha_tensor b, int V)
{
    size_t es = aha_dtype_size(a.dt);
    return V % 8 == 0 && ((V * es) % 16) == 0 && (((uintptr_t)a.data | (uintptr_t)b.data) % 16) == 0;
}

aha_status aha__cu_logprob_fwd(aha_backend *be, aha_tensor lp, aha_tensor lse, aha_tensor logits,
                               aha_tensor targets, int n, int V, aha_err *err)
{
    if (!aha__is_float(logits.dt)) return aha__cu_bad_dtype(err, "logprob_fwd", "logits", logits.dt);
    if (lp.dt != AHA_DT_F32 || lse.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "logprob_fwd", "lp/lse", lp.dt != AHA_DT_F32 ? lp.dt : lse.dt);
    if (targets.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "logprob_fwd", "targets", targets.dt);
    if (n <= 0 || V <= 0) return AHA_OK;
    int vec = lp_vec(logits, logits, V);
    AHA__DISPATCH_FLOAT(logits.dt, T, (k_logprob_fwd<T><<<n, LP_THREADS, 0, aha__cu(be)->stream>>>(
        (float *)lp.data, (float *)lse.data, (const T *)logits.data, (const int32_t *)targets.data, V, vec)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_logprob_bwd(aha_backend *be, aha_tensor dlogits, aha_tensor logits, aha_tensor lse,
                               aha_tensor targets, aha_tensor dlp, int n, int V, aha_err *err)
{
    if (!aha__is_float(logits.dt)) return aha__cu_bad_dtype(err, "logprob_bwd", "logits", logits.dt);
    if (dlogits.dt != logits.dt)
        return aha__cu_bad_dtype(err, "logprob_bwd", "dlogits (must match logits)", dlogits.dt);
    if (lse.dt != AHA_DT_F32 || dlp.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "logprob_bwd", "lse/dlp", lse.dt != AHA_DT_F32 ? lse.dt : dlp.dt);
    if (targets.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "logprob_bwd", "targets", targets.dt);
    if (n <= 0 || V <= 0) return AHA_OK;
    AHA__DISPATCH_FLOAT(logits.dt, T, (k_logprob_bwd<T><<<n, LP_THREADS, 0, aha__cu(be)->stream>>>(
        (T *)dlogits.data, (const T *)logits.data, (const float *)lse.data,
        (const int32_t *)targets.data, (const float *)dlp.data, V, lp_vec(logits, dlogits, V))));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
