/* embed.cu: embedding lookup (row gather), its backward (row scatter-add into an fp32
 * gradient table with atomics, so repeated ids accumulate) and the plain row scatter the loss
 * head uses. ids are checked against the
 * vocabulary by the caller (aha_batch_check); an id outside [0, V) would read out of bounds,
 * so the kernels also skip negative ids defensively. */
#include "common.cuh"

template <typename TO, typename TW>
__global__ void k_embed_fwd(TO *out, const int32_t *ids, const TW *table, int N, int C)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (int64_t)N * C;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, c = i % C;
        int id = ids[r];
        aha__st(out, i, id >= 0 ? aha__ld(table, (int64_t)id * C + c) : 0.0f);
    }
}

template <typename TD>
__global__ void k_embed_bwd(float *dtable, const int32_t *ids, const TD *dout, int N, int C)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (int64_t)N * C;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, c = i % C;
        int id = ids[r];
        if (id >= 0) atomicAdd(dtable + (int64_t)id * C + c, aha__ld(dout, i));
    }
}

aha_status aha__cu_embedding_fwd(aha_backend *be, aha_tensor out, aha_tensor ids, aha_tensor table,
                                 int N, int C, aha_err *err)
{
    if (ids.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "embedding_fwd", "ids", ids.dt);
    if (!aha__is_float(out.dt)) return aha__cu_bad_dtype(err, "embedding_fwd", "out", out.dt);
    if (!aha__is_float(table.dt)) return aha__cu_bad_dtype(err, "embedding_fwd", "table", table.dt);
    if (N <= 0 || C <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks((int64_t)N * C, 256, 8192);
    AHA__DISPATCH_FLOAT(out.dt, TO, AHA__DISPATCH_FLOAT(table.dt, TW,
        (k_embed_fwd<TO, TW><<<nb, 256, 0, st>>>((TO *)out.data, (const int32_t *)ids.data,
                                                (const TW *)table.data, N, C))));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_embedding_bwd(aha_backend *be, aha_tensor dtable, aha_tensor ids,
                                 aha_tensor dout, int N, int C, aha_err *err)
{
    if (ids.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "embedding_bwd", "ids", ids.dt);
    if (dtable.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "embedding_bwd", "dtable", dtable.dt);
    if (!aha__is_float(dout.dt)) return aha__cu_bad_dtype(err, "embedding_bwd", "dout", dout.dt);
    if (N <= 0 || C <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks((int64_t)N * C, 256, 8192);
    AHA__DISPATCH_FLOAT(dout.dt, TD,
        (k_embed_bwd<TD><<<nb, 256, 0, st>>>((float *)dtable.data, (const int32_t *)ids.data,
                                            (const TD *)dout.data, N, C)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

/* dst rows idx[i] = src rows i (distinct idx, so no two threads write one element) */
template <typename T>
__global__ void k_scatter_rows(T *dst, const int32_t *idx, const T *src, int n, int C)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (int64_t)n * C;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, c = i % C;
        dst[(int64_t)idx[r] * C + c] = src[i];
    }
}

aha_status aha__cu_scatter_rows(aha_backend *be, aha_tensor dst, aha_tensor idx, aha_tensor src, int n, int C,
                                aha_err *err)
{
    if (idx.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "scatter_rows", "idx", idx.dt);
    if (!aha__is_float(src.dt)) return aha__cu_bad_dtype(err, "scatter_rows", "src", src.dt);
    if (dst.dt != src.dt) return aha__cu_bad_dtype(err, "scatter_rows", "dst (must match src)", dst.dt);
    if (n <= 0 || C <= 0) return AHA_OK;
    unsigned nb = aha__blocks((int64_t)n * C, 256, 8192);
    AHA__DISPATCH_FLOAT(src.dt, T, (k_scatter_rows<T><<<nb, 256, 0, aha__cu(be)->stream>>>(
        (T *)dst.data, (const int32_t *)idx.data, (const T *)src.data, n, C)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
