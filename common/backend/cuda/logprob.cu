/* logprob.cu: per-token logprobs from a chunk of logits rows and the backward of that
 * log-softmax + gather, in fp32 whatever the logits dtype. One block per row; the forward
 * is one pass with an online (max, sum) per thread merged across the block, so a row of
 * 151,936 bf16 logits is read once. The model feeds row chunks, so (tokens, V) fp32 is never
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

template <typename T>
__global__ void __launch_bounds__(LP_THREADS) k_logprob_fwd(float *lp, float *lse, const T *logits,
                                                            const int32_t *targets, int V)
{
    __shared__ float shm[32], shs[32];
    int64_t row = blockIdx.x;
    const T *x = logits + row * V;
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = aha__ld(x, i);
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
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
__global__ void k_logprob_bwd(T *dlogits, const T *logits, const float *lse, const int32_t *targets,
                              const float *dlp, int V)
{
    int64_t row = blockIdx.x;
    int t = targets[row];
    float g = (t >= 0 && t < V) ? dlp[row] : 0.0f;
    float l = lse[row];
    const T *x = logits + row * V;
    T *dx = dlogits + row * V;
    /* in place (dlogits == logits) is safe: each element is read then written by one thread */
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float p = g != 0.0f ? expf(aha__ld(x, i) - l) : 0.0f;
        aha__st(dx, i, g * ((i == t ? 1.0f : 0.0f) - p));
    }
}

aha_status aha__cu_logprob_fwd(aha_backend *be, aha_tensor lp, aha_tensor lse, aha_tensor logits,
                               aha_tensor targets, int n, int V, aha_err *err)
{
    if (!aha__is_float(logits.dt)) return aha__cu_bad_dtype(err, "logprob_fwd", "logits", logits.dt);
    if (lp.dt != AHA_DT_F32 || lse.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "logprob_fwd", "lp/lse", lp.dt != AHA_DT_F32 ? lp.dt : lse.dt);
    if (targets.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "logprob_fwd", "targets", targets.dt);
    if (n <= 0 || V <= 0) return AHA_OK;
    AHA__DISPATCH_FLOAT(logits.dt, T, (k_logprob_fwd<T><<<n, LP_THREADS, 0, aha__cu(be)->stream>>>(
        (float *)lp.data, (float *)lse.data, (const T *)logits.data, (const int32_t *)targets.data, V)));
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
        (const int32_t *)targets.data, (const float *)dlp.data, V)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
