/* elementwise.cu: fill, copy (with F32 <-> BF16 conversion), scale, residual add, sum of
 * squares (gradient norms) and SwiGLU forward / backward. Grid-stride loops, fp32 arithmetic;
 * y may alias an input where the ops table allows it because each element is read before it
 * is written by the same thread. */
#include "common.cuh"

#define EW_THREADS 256
#define EW_MAX_BLOCKS 8192

template <typename T> __global__ void k_fill(T *x, int64_t n, float v)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        aha__st(x, i, v);
}

template <typename TD, typename TS> __global__ void k_copy(TD *d, const TS *s, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        aha__st(d, i, aha__ld(s, i));
}

template <typename T> __global__ void k_scale(T *x, int64_t n, float s)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        aha__st(x, i, aha__ld(x, i) * s);
}

template <typename TY, typename TA, typename TB>
__global__ void k_add(TY *y, const TA *a, const TB *b, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        aha__st(y, i, aha__ld(a, i) + aha__ld(b, i));
}

/* one atomic per block; the partial sums are taken in double so that norms of ~1e9
 * elements keep fp32 accuracy */
template <typename T> __global__ void k_sumsq(float *acc, const T *x, int64_t n)
{
    __shared__ double sh[32];
    double s = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = aha__ld(x, i);
        s += (double)v * v;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sh[w] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += sh[i];
        atomicAdd(acc, (float)t);
    }
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

template <typename T> __global__ void k_swiglu_fwd(T *out, const T *g, const T *u, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        aha__st(out, i, silu(aha__ld(g, i)) * aha__ld(u, i));
}

template <typename T>
__global__ void k_swiglu_bwd(T *dg, T *du, const T *dout, const T *g, const T *u, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gv = aha__ld(g, i), uv = aha__ld(u, i), d = aha__ld(dout, i);
        float s = 1.0f / (1.0f + expf(-gv));
        /* d silu(g)/dg = s * (1 + g * (1 - s)) */
        aha__st(dg, i, d * uv * s * (1.0f + gv * (1.0f - s)));
        aha__st(du, i, d * gv * s);
    }
}

/* bf16 versions over 8 elements (16 bytes) per access (aha__ld8), for aligned tensors of n % 8 == 0 */
__global__ void k_swiglu_fwd8(bf16 *out, const bf16 *g, const bf16 *u, int64_t n8)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        float gv[8], uv[8], o[8];
        aha__ld8(g + i * 8, gv);
        aha__ld8(u + i * 8, uv);
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = silu(gv[e]) * uv[e];
        aha__st8(out + i * 8, o);
    }
}

__global__ void k_swiglu_bwd8(bf16 *dg, bf16 *du, const bf16 *dout, const bf16 *g, const bf16 *u, int64_t n8)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        float gv[8], uv[8], d[8], a[8], b[8];
        aha__ld8(g + i * 8, gv);
        aha__ld8(u + i * 8, uv);
        aha__ld8(dout + i * 8, d);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float s = 1.0f / (1.0f + expf(-gv[e]));
            a[e] = d[e] * uv[e] * s * (1.0f + gv[e] * (1.0f - s));
            b[e] = d[e] * gv[e] * s;
        }
        aha__st8(dg + i * 8, a);
        aha__st8(du + i * 8, b);
    }
}

static bool al16(const void *a, const void *b, const void *c, const void *d, const void *e)
{
    return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d | (uintptr_t)e) & 15) == 0;
}

aha_status aha__cu_fill(aha_backend *be, aha_tensor x, int64_t n, float value, aha_err *err)
{
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, "fill", "x", x.dt);
    if (n <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks(n, EW_THREADS, EW_MAX_BLOCKS);
    AHA__DISPATCH_FLOAT(x.dt, T, (k_fill<T><<<nb, EW_THREADS, 0, st>>>((T *)x.data, n, value)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_copy(aha_backend *be, aha_tensor dst, aha_tensor src, int64_t n, aha_err *err)
{
    cudaStream_t st = aha__cu(be)->stream;
    if (n <= 0) return AHA_OK;
    if (dst.dt == src.dt) {
        AHA_CU_CHECK(cudaMemcpyAsync(dst.data, src.data, (size_t)n * aha_dtype_size(dst.dt),
                                     cudaMemcpyDeviceToDevice, st));
        return AHA_OK;
    }
    if (!aha__is_float(dst.dt)) return aha__cu_bad_dtype(err, "copy", "dst", dst.dt);
    if (!aha__is_float(src.dt)) return aha__cu_bad_dtype(err, "copy", "src", src.dt);
    unsigned nb = aha__blocks(n, EW_THREADS, EW_MAX_BLOCKS);
    AHA__DISPATCH_FLOAT(dst.dt, TD, AHA__DISPATCH_FLOAT(src.dt, TS,
        (k_copy<TD, TS><<<nb, EW_THREADS, 0, st>>>((TD *)dst.data, (const TS *)src.data, n))));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_copy2d(aha_backend *be, aha_tensor dst, int64_t dst_pitch, aha_tensor src, int64_t src_pitch,
                          int64_t width, int64_t rows, aha_err *err)
{
    if (dst.dt != src.dt) return aha__cu_bad_dtype(err, "copy2d", "dst (must match src)", dst.dt);
    if (width <= 0 || rows <= 0) return AHA_OK;
    if (width > dst_pitch || width > src_pitch)
        return aha_errf(err, AHA_EINVAL, "cuda copy2d: width %lld exceeds a pitch", (long long)width);
    size_t es = aha_dtype_size(dst.dt);
    AHA_CU_CHECK(cudaMemcpy2DAsync(dst.data, (size_t)dst_pitch * es, src.data, (size_t)src_pitch * es,
                                   (size_t)width * es, (size_t)rows, cudaMemcpyDeviceToDevice, aha__cu(be)->stream));
    return AHA_OK;
}

aha_status aha__cu_scale(aha_backend *be, aha_tensor x, int64_t n, float s, aha_err *err)
{
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, "scale", "x", x.dt);
    if (n <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks(n, EW_THREADS, EW_MAX_BLOCKS);
    AHA__DISPATCH_FLOAT(x.dt, T, (k_scale<T><<<nb, EW_THREADS, 0, st>>>((T *)x.data, n, s)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_add(aha_backend *be, aha_tensor y, aha_tensor a, aha_tensor b, int64_t n,
                       aha_err *err)
{
    if (!aha__is_float(y.dt)) return aha__cu_bad_dtype(err, "add", "y", y.dt);
    if (!aha__is_float(a.dt)) return aha__cu_bad_dtype(err, "add", "a", a.dt);
    if (!aha__is_float(b.dt)) return aha__cu_bad_dtype(err, "add", "b", b.dt);
    if (n <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks(n, EW_THREADS, EW_MAX_BLOCKS);
    AHA__DISPATCH_FLOAT(y.dt, TY, AHA__DISPATCH_FLOAT(a.dt, TA, AHA__DISPATCH_FLOAT(b.dt, TB,
        (k_add<TY, TA, TB><<<nb, EW_THREADS, 0, st>>>((TY *)y.data, (const TA *)a.data,
                                                      (const TB *)b.data, n)))));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_sumsq(aha_backend *be, aha_tensor acc, aha_tensor x, int64_t n, aha_err *err)
{
    if (acc.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "sumsq", "acc", acc.dt);
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, "sumsq", "x", x.dt);
    if (n <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks(n, EW_THREADS, 4 * aha__cu(be)->sm_count);
    AHA__DISPATCH_FLOAT(x.dt, T,
        (k_sumsq<T><<<nb, EW_THREADS, 0, st>>>((float *)acc.data, (const T *)x.data, n)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_swiglu_fwd(aha_backend *be, aha_tensor out, aha_tensor g, aha_tensor u, int64_t n,
                              aha_err *err)
{
    if (!aha__is_float(out.dt)) return aha__cu_bad_dtype(err, "swiglu_fwd", "out", out.dt);
    if (g.dt != out.dt || u.dt != out.dt)
        return aha__cu_bad_dtype(err, "swiglu_fwd", "g/u (must match out)", g.dt != out.dt ? g.dt : u.dt);
    if (n <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    if (out.dt == AHA_DT_BF16 && n % 8 == 0 && al16(out.data, g.data, u.data, u.data, u.data)) {
        k_swiglu_fwd8<<<aha__blocks(n / 8, EW_THREADS, EW_MAX_BLOCKS), EW_THREADS, 0, st>>>(
            (bf16 *)out.data, (const bf16 *)g.data, (const bf16 *)u.data, n / 8);
        AHA_CU_LAUNCHED();
        return AHA_OK;
    }
    unsigned nb = aha__blocks(n, EW_THREADS, EW_MAX_BLOCKS);
    AHA__DISPATCH_FLOAT(out.dt, T, (k_swiglu_fwd<T><<<nb, EW_THREADS, 0, st>>>(
        (T *)out.data, (const T *)g.data, (const T *)u.data, n)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_swiglu_bwd(aha_backend *be, aha_tensor dg, aha_tensor du, aha_tensor dout,
                              aha_tensor g, aha_tensor u, int64_t n, aha_err *err)
{
    aha_dtype dt = dout.dt;
    if (!aha__is_float(dt)) return aha__cu_bad_dtype(err, "swiglu_bwd", "dout", dt);
    if (dg.dt != dt || du.dt != dt || g.dt != dt || u.dt != dt)
        return aha__cu_bad_dtype(err, "swiglu_bwd", "dg/du/g/u (must match dout)", dg.dt);
    if (n <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    if (dt == AHA_DT_BF16 && n % 8 == 0 && al16(dg.data, du.data, dout.data, g.data, u.data)) {
        k_swiglu_bwd8<<<aha__blocks(n / 8, EW_THREADS, EW_MAX_BLOCKS), EW_THREADS, 0, st>>>(
            (bf16 *)dg.data, (bf16 *)du.data, (const bf16 *)dout.data, (const bf16 *)g.data, (const bf16 *)u.data,
            n / 8);
        AHA_CU_LAUNCHED();
        return AHA_OK;
    }
    unsigned nb = aha__blocks(n, EW_THREADS, EW_MAX_BLOCKS);
    AHA__DISPATCH_FLOAT(dt, T, (k_swiglu_bwd<T><<<nb, EW_THREADS, 0, st>>>(
        (T *)dg.data, (T *)du.data, (const T *)dout.data, (const T *)g.data, (const T *)u.data, n)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
