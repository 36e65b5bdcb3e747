/* rmsnorm.cu: RMSNorm forward and backward over rows of C (also the per-head q/k norm of
 * Qwen3, with rows = tokens * heads and C = head_dim), fp32 statistics.
 *   y = x * r * w,  r = 1 / sqrt(mean(x^2) + eps)
 *   dx = r * (w * dy) - x * r^3 / C * sum(x * w * dy);  dw += sum over rows of dy * x * r
 * Two shapes of kernel. Hidden-size rows (256 < C <= 8 * 1024) take a block per row, each
 * thread holding RB_EPT columns in registers: all of a row's loads are in flight at once and
 * nothing is read twice. (A warp per row walks 28 dependent steps at C = 896; at the decode
 * step's 256 rows that was 32 blocks on 132 SMs and 22 us per norm: its 48 norms took 1.05 of
 * the 3.39 ms that ncu counted in the step's kernels.) Rows
 * of C % 8 == 0 on 16-byte aligned tensors move 16 bytes per access. In the backward a thread
 * also keeps its columns' dw partials in registers across the rows of its block; each block
 * writes one row of partials to scratch and a column sum (gemm.cu's) adds them to dw. Short rows
 * (the per-head norms) and very wide ones keep a warp per row; their dw is summed per block in
 * shared memory.
 * add_rmsnorm and rmsnorm_fwd of the same row shape reduce in the same order, so the fused op
 * gives exactly add followed by rmsnorm_fwd. */
#include <initializer_list>

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

#define RB_EPT 8

/* threads per row for the block-per-row kernels, 0 when the row takes the warp kernels */
static int rows_threads(int C)
{
    if (C <= 256 || C > 1024 * RB_EPT) return 0;
    return (C + RB_EPT * 32 - 1) / (RB_EPT * 32) * 32;
}

/* Whether every row of these tensors can be moved 16 bytes at a time (VEC: thread t holds
 * columns 8t .. 8t + 7; otherwise columns t, t + blockDim, ...). */
static bool rows_vec(int C, std::initializer_list<const void *> ptrs)
{
    if (C % RB_EPT) return false;
    for (const void *p : ptrs)
        if ((uintptr_t)p % 16) return false;
    return true;
}

/* a thread's RB_EPT columns of one row: load (0 past C), store (only below C) */
template <bool VEC, typename T> __device__ __forceinline__ void row_ld(float *v, const T *row, int C)
{
    if constexpr (VEC) {
        int c0 = threadIdx.x * RB_EPT;
        if (c0 < C) aha__ld8(row + c0, v);
        else
#pragma unroll
            for (int k = 0; k < RB_EPT; k++) v[k] = 0.0f;
    } else {
#pragma unroll
        for (int k = 0; k < RB_EPT; k++) {
            int c = threadIdx.x + k * blockDim.x;
            v[k] = c < C ? aha__ld(row, c) : 0.0f;
        }
    }
}
template <bool VEC, typename T> __device__ __forceinline__ void row_st(T *row, const float *v, int C)
{
    if constexpr (VEC) {
        int c0 = threadIdx.x * RB_EPT;
        if (c0 < C) aha__st8(row + c0, v);
    } else {
#pragma unroll
        for (int k = 0; k < RB_EPT; k++) {
            int c = threadIdx.x + k * blockDim.x;
            if (c < C) aha__st(row, c, v[k]);
        }
    }
}

/* the row-per-block forward: with a (not NULL) y = a + x is formed first and stored rounded */
template <bool VEC, typename TX, typename TW>
__global__ void k_rmsnorm_rows(TX *y, TX *out, float *rstd, const TX *x, const TX *a, const TW *w, int N, int C,
                               float eps)
{
    __shared__ float sh[32];
    float wv[RB_EPT];
    row_ld<VEC>(wv, w, C);
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        float v[RB_EPT], ss = 0;
        row_ld<VEC>(v, x + r * C, C);
        if (a) {
            float av[RB_EPT];
            row_ld<VEC>(av, a + r * C, C);
#pragma unroll
            for (int k = 0; k < RB_EPT; k++) v[k] = aha__rnd<TX>(v[k] + av[k]);
            row_st<VEC>(y + r * C, v, C);
        }
#pragma unroll
        for (int k = 0; k < RB_EPT; k++) ss += v[k] * v[k];
        float rs = rsqrtf(aha__block_sum(ss, sh) / C + eps);
        if (rstd && threadIdx.x == 0) rstd[r] = rs;
#pragma unroll
        for (int k = 0; k < RB_EPT; k++) v[k] *= rs * wv[k];
        row_st<VEC>(out + r * C, v, C);
    }
}

/* dw partials: this block's sum over its rows, one row of part (gridDim.x, C) per block,
 * added up afterwards by a column sum (no atomics on the C addresses from every block) */
template <bool VEC, typename TX, typename TW>
__global__ void k_rmsnorm_bwd_rows(TX *dx, float *part, const TX *dout, const TX *x, const TW *w, const float *rstd,
                                   int N, int C, int accumulate)
{
    __shared__ float sh[32];
    float wv[RB_EPT], dwp[RB_EPT];
    row_ld<VEC>(wv, w, C);
#pragma unroll
    for (int k = 0; k < RB_EPT; k++) dwp[k] = 0;
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        float xv[RB_EPT], dv[RB_EPT], g[RB_EPT], dot = 0, rs = rstd[r];
        row_ld<VEC>(xv, x + r * C, C);
        row_ld<VEC>(dv, dout + r * C, C);
        if (accumulate) row_ld<VEC>(g, dx + r * C, C);
#pragma unroll
        for (int k = 0; k < RB_EPT; k++) dot += xv[k] * wv[k] * dv[k];
        float kk = aha__block_sum(dot, sh) * rs * rs * rs / C;
#pragma unroll
        for (int k = 0; k < RB_EPT; k++) {
            float d = rs * wv[k] * dv[k] - xv[k] * kk;
            g[k] = accumulate ? g[k] + d : d;
            dwp[k] += dv[k] * xv[k] * rs;
        }
        row_st<VEC>(dx + r * C, g, C);
    }
    if (part) row_st<VEC>(part + (int64_t)blockIdx.x * C, dwp, C);
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
    if (int th = rows_threads(C)) {
        bool vec = rows_vec(C, {y.data, out.data, a.data, b.data, w.data});
        AHA__DISPATCH_FLOAT(y.dt, TX, AHA__DISPATCH_FLOAT(w.dt, TW, {
            auto kern = vec ? k_rmsnorm_rows<true, TX, TW> : k_rmsnorm_rows<false, TX, TW>;
            kern<<<aha__blocks(N, 1, 65535), th, 0, st>>>((TX *)y.data, (TX *)out.data, (float *)rstd.data,
                                                          (const TX *)b.data, (const TX *)a.data,
                                                          (const TW *)w.data, N, C, eps);
        }));
        AHA_CU_LAUNCHED();
        return AHA_OK;
    }
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
    if (int th = rows_threads(C)) {
        bool vec = rows_vec(C, {out.data, x.data, w.data});
        AHA__DISPATCH_FLOAT(x.dt, TX, AHA__DISPATCH_FLOAT(w.dt, TW, {
            auto kern = vec ? k_rmsnorm_rows<true, TX, TW> : k_rmsnorm_rows<false, TX, TW>;
            kern<<<aha__blocks(N, 1, 65535), th, 0, st>>>(NULL, (TX *)out.data, (float *)rstd.data,
                                                          (const TX *)x.data, NULL, (const TW *)w.data, N, C, eps);
        }));
        AHA_CU_LAUNCHED();
        return AHA_OK;
    }
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
    if (int th = rows_threads(C)) {
        /* enough blocks in flight to hide a row's load-reduce-store latency (4 per SM left it
         * at 94 us for 10,240 x 896), few enough that the partials stay small */
        unsigned nb = aha__blocks(N, 1, 8 * c->sm_count);
        float *part = NULL;
        if (!aha_tensor_is_none(dw)) AHA_TRY(aha__cu_scratch(be, (size_t)nb * C * sizeof(float), (void **)&part, err));
        bool vec = rows_vec(C, {dx.data, dout.data, x.data, w.data, part});
        AHA__DISPATCH_FLOAT(x.dt, TX, AHA__DISPATCH_FLOAT(w.dt, TW, {
            auto kern = vec ? k_rmsnorm_bwd_rows<true, TX, TW> : k_rmsnorm_bwd_rows<false, TX, TW>;
            kern<<<nb, th, 0, c->stream>>>((TX *)dx.data, part, (const TX *)dout.data, (const TX *)x.data,
                                           (const TW *)w.data, (const float *)rstd.data, N, C, accumulate ? 1 : 0);
        }));
        AHA_CU_LAUNCHED();
        if (part) AHA_TRY(aha__cu_colsum(be, dw, aha_tensor{part, AHA_DT_F32}, (int)nb, C, err));
        return AHA_OK;
    }
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
