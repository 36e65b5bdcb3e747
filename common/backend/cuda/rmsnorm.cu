/* rmsnorm.cu: RMSNorm forward and backward over rows of C (also the per-head q/k norm of
 * Qwen3, with rows = tokens * heads and C = head_dim). One warp per row, fp32 statistics.
 *   y = x * r * w,  r = 1 / sqrt(mean(x^2) + eps)
 *   dx = r * (w * dy) - x * r^3 / C * sum(x * w * dy);  dw += sum over rows of dy * x * r
 * dw is accumulated per block in shared memory and added to the fp32 gradient with one
 * atomic per column per block. */
#include "common.cuh"

#define RN_WARPS 8

template <typename TX, typename TW>
__global__ void k_rmsnorm_fwd(TX *out, float *rstd, const TX *x, const TW *w, int N, int C, float eps)
{
    int lane = threadIdx.x & 31;
    for (int64_t r = blockIdx.x * (int64_t)RN_WARPS + (threadIdx.x >> 5); r < N;
         r += (int64_t)gridDim.x * RN_WARPS) {
        const TX *xr = x + r * C;
        float ss = 0;
        for (int c = lane; c < C; c += 32) {
            float v = aha__ld(xr, c);
            ss += v * v;
        }
        ss = aha__warp_sum(ss);
        float rs = rsqrtf(ss / C + eps);
        if (rstd && lane == 0) rstd[r] = rs;
        /* out may alias x: each element is read then written by the same lane */
        for (int c = lane; c < C; c += 32) aha__st(out + r * C, c, aha__ld(xr, c) * rs * aha__ld(w, c));
    }
}

template <typename TX, typename TW>
__global__ void k_rmsnorm_bwd(TX *dx, float *dw, const TX *dout, const TX *x, const TW *w,
                              const float *rstd, int N, int C, int accumulate)
{
    extern __shared__ float sdw[]; /* (C) */
    int lane = threadIdx.x & 31;
    for (int c = threadIdx.x; c < C; c += blockDim.x) sdw[c] = 0;
    __syncthreads();
    for (int64_t r = blockIdx.x * (int64_t)RN_WARPS + (threadIdx.x >> 5); r < N;
         r += (int64_t)gridDim.x * RN_WARPS) {
        const TX *xr = x + r * C;
        const TX *dr = dout + r * C;
        float rs = rstd[r];
        float dot = 0;
        for (int c = lane; c < C; c += 32) dot += aha__ld(xr, c) * aha__ld(w, c) * aha__ld(dr, c);
        dot = aha__warp_sum(dot);
        float k = dot * rs * rs * rs / C;
        for (int c = lane; c < C; c += 32) {
            float xv = aha__ld(xr, c), dv = aha__ld(dr, c);
            float g = rs * aha__ld(w, c) * dv - xv * k;
            if (accumulate) g += aha__ld(dx + r * C, c);
            aha__st(dx + r * C, c, g);
            atomicAdd(&sdw[c], dv * xv * rs);
        }
    }
    __syncthreads();
    if (dw)
        for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dw + c, sdw[c]);
}

/* y = a + b rounded to TX, then the norm of the rounded y: the same values as add followed by
 * rmsnorm_fwd, in one pass (each lane rereads only what it wrote) */
template <typename TX, typename TW>
__global__ void k_add_rmsnorm(TX *y, TX *out, float *rstd, const TX *a, const TX *b, const TW *w, int N, int C,
                              float eps)
{
    int lane = threadIdx.x & 31;
    for (int64_t r = blockIdx.x * (int64_t)RN_WARPS + (threadIdx.x >> 5); r < N;
         r += (int64_t)gridDim.x * RN_WARPS) {
        float ss = 0;
        for (int c = lane; c < C; c += 32) {
            aha__st(y + r * C, c, aha__ld(a + r * C, c) + aha__ld(b + r * C, c));
            float v = aha__ld(y + r * C, c);
            ss += v * v;
        }
        ss = aha__warp_sum(ss);
        float rs = rsqrtf(ss / C + eps);
        if (rstd && lane == 0) rstd[r] = rs;
        for (int c = lane; c < C; c += 32) aha__st(out + r * C, c, aha__ld(y + r * C, c) * rs * aha__ld(w, c));
    }
}

aha_status aha__cu_add_rmsnorm(aha_backend *be, aha_tensor y, aha_tensor out, aha_tensor rstd, aha_tensor a,
                               aha_tensor b, aha_tensor w, int N, int C, float eps, aha_err *err)
{
    if (!aha__is_float(y.dt)) return aha__cu_bad_dtype(err, "add_rmsnorm", "y", y.dt);
    if (out.dt != y.dt || a.dt != y.dt || b.dt != y.dt)
        return aha__cu_bad_dtype(err, "add_rmsnorm", "out/a/b (must match y)", out.dt);
    if (!aha__is_float(w.dt)) return aha__cu_bad_dtype(err, "add_rmsnorm", "w", w.dt);
    if (!aha_tensor_is_none(rstd) && rstd.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "add_rmsnorm", "rstd", rstd.dt);
    if (N <= 0 || C <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks(N, RN_WARPS, 65535);
    AHA__DISPATCH_FLOAT(y.dt, TX, AHA__DISPATCH_FLOAT(w.dt, TW,
        (k_add_rmsnorm<TX, TW><<<nb, 32 * RN_WARPS, 0, st>>>((TX *)y.data, (TX *)out.data, (float *)rstd.data,
            (const TX *)a.data, (const TX *)b.data, (const TW *)w.data, N, C, eps))));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_rmsnorm_fwd(aha_backend *be, aha_tensor out, aha_tensor rstd, aha_tensor x,
                               aha_tensor w, int N, int C, float eps, aha_err *err)
{
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, "rmsnorm_fwd", "x", x.dt);
    if (out.dt != x.dt) return aha__cu_bad_dtype(err, "rmsnorm_fwd", "out (must match x)", out.dt);
    if (!aha__is_float(w.dt)) return aha__cu_bad_dtype(err, "rmsnorm_fwd", "w", w.dt);
    if (!aha_tensor_is_none(rstd) && rstd.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "rmsnorm_fwd", "rstd", rstd.dt);
    if (N <= 0 || C <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks(N, RN_WARPS, 65535);
    AHA__DISPATCH_FLOAT(x.dt, TX, AHA__DISPATCH_FLOAT(w.dt, TW,
        (k_rmsnorm_fwd<TX, TW><<<nb, 32 * RN_WARPS, 0, st>>>(
            (TX *)out.data, (float *)rstd.data, (const TX *)x.data, (const TW *)w.data, N, C, eps))));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_rmsnorm_bwd(aha_backend *be, aha_tensor dx, aha_tensor dw, aha_tensor dout,
                               aha_tensor x, aha_tensor w, aha_tensor rstd, int N, int C,
                               bool accumulate, aha_err *err)
{
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, "rmsnorm_bwd", "x", x.dt);
    if (dx.dt != x.dt) return aha__cu_bad_dtype(err, "rmsnorm_bwd", "dx (must match x)", dx.dt);
    if (dout.dt != x.dt) return aha__cu_bad_dtype(err, "rmsnorm_bwd", "dout (must match x)", dout.dt);
    if (!aha__is_float(w.dt)) return aha__cu_bad_dtype(err, "rmsnorm_bwd", "w", w.dt);
    if (rstd.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "rmsnorm_bwd", "rstd", rstd.dt);
    if (!aha_tensor_is_none(dw) && dw.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "rmsnorm_bwd", "dw", dw.dt);
    if (N <= 0 || C <= 0) return AHA_OK;
    aha__cu_ctx *c = aha__cu(be);
    size_t smem = (size_t)C * sizeof(float);
    if (smem > c->smem_optin)
        return aha_errf(err, AHA_EUNSUPPORTED, "cuda rmsnorm_bwd: C = %d is too wide", C);
    /* few blocks so that the per-block dw partials stay cheap to add */
    unsigned nb = aha__blocks(N, RN_WARPS, 2 * c->sm_count);
    AHA__DISPATCH_FLOAT(x.dt, TX, AHA__DISPATCH_FLOAT(w.dt, TW, {
            auto kern = k_rmsnorm_bwd<TX, TW>;
            if (smem > 48 * 1024)
                AHA_CU_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            kern<<<nb, 32 * RN_WARPS, smem, c->stream>>>((TX *)dx.data, (float *)dw.data,
                (const TX *)dout.data, (const TX *)x.data, (const TW *)w.data,
                (const float *)rstd.data, N, C, accumulate ? 1 : 0);
        }));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
