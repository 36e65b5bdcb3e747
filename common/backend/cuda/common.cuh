/* common.cuh: what every CUDA op file of the backend shares: the backend context, the check
 * macros that turn a failed CUDA / cuBLAS / NCCL call into AHA_EDEVICE naming the call, file
 * and line (never an exit), bf16 <-> fp32 loads and stores, and warp / block reductions.
 *
 * Invariants: every op runs on ctx->stream, in order; every kernel launch is followed by
 * AHA_CU_LAUNCHED() (cudaGetLastError); arithmetic accumulates in fp32 whatever the storage
 * dtype (F32 or BF16). */
#ifndef AHA_BACKEND_CUDA_COMMON_CUH
#define AHA_BACKEND_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
}

/* ---- the backend context ------------------------------------------------------------------ */

/* one cached matmul configuration: descriptors and the heuristic's algorithm for a shape */
typedef struct {
    uint64_t key[8];
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
} aha__cu_algo_entry;

#define AHA__CU_ALGO_CACHE 256
#define AHA__CU_GRAPHS 16

typedef struct {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws; /* cuBLASLt workspace */
    size_t lt_ws_size;
    /* scratch for ops that need temporaries (attention backward statistics); grows, never
     * shrinks; only used between two ops on the one stream */
    void *scratch;
    size_t scratch_size;
    int sm_count;
    size_t smem_optin;
    /* split-KV decode attention (attention_tc.cu): per-split partial results (fp32) and one
     * arrival counter per (query, kv head). Allocated once with the context, never moved, so
     * recorded graphs may keep pointers to them; the kernel's last block of each (query, kv
     * head) resets its counter, so the counters are zero between launches. */
    float *dec_part;
    size_t dec_part_floats;
    int *dec_cnt;
    int dec_cnt_n;
    aha__cu_algo_entry algos[AHA__CU_ALGO_CACHE];
    int n_algos;
    /* recorded op graphs (graph_begin / graph_end / graph_launch), oldest evicted first */
    struct {
        uint64_t key;
        cudaGraphExec_t exec;
        void *prof; /* the recording's profile points (AHA_CUDA_PROFILE) */
    } graphs[AHA__CU_GRAPHS];
    int n_graphs;
    bool capturing;
    void *prof; /* per-op times when AHA_CUDA_PROFILE is set (backend_cuda.cu) */
} aha__cu_ctx;

/* Every entry into the backend goes through here, so it also makes the backend's device the
 * calling thread's current one: CUDA's current device is per thread (device 0 until chosen),
 * and the services call the model from engine and handler threads that never chose one. A
 * service on cuda:1 otherwise queues its work against device 0 ("invalid argument"). */
static inline aha__cu_ctx *aha__cu(aha_backend *be)
{
    aha__cu_ctx *c = (aha__cu_ctx *)be->ctx;
    int cur = -1;
    if (c && (cudaGetDevice(&cur) != cudaSuccess || cur != c->device)) cudaSetDevice(c->device);
    return c;
}

/* ---- errors ---------------------------------------------------------------------------------- */

aha_status aha__cu_fail(aha_err *err, const char *call, const char *file, int line, const char *what);

#define AHA_CU_CHECK(call)                                                                   \
    do {                                                                                     \
        cudaError_t aha__e = (call);                                                         \
        if (aha__e != cudaSuccess)                                                           \
            return aha__cu_fail(err, #call, __FILE__, __LINE__, cudaGetErrorString(aha__e)); \
    } while (0)

#define AHA_CU_LAUNCHED() AHA_CU_CHECK(cudaGetLastError())

/* cuBLASLt status name (cublasGetStatusString lives in libcublas, which is not linked) */
const char *aha__cublas_str(cublasStatus_t s);

#define AHA_CUBLAS_CHECK(call)                                                                 \
    do {                                                                                       \
        cublasStatus_t aha__s = (call);                                                        \
        if (aha__s != CUBLAS_STATUS_SUCCESS)                                                   \
            return aha__cu_fail(err, #call, __FILE__, __LINE__, aha__cublas_str(aha__s)); \
    } while (0)

/* A dtype the op does not handle. */
aha_status aha__cu_bad_dtype(aha_err *err, const char *op, const char *arg, aha_dtype dt);

/* AHA_CUDA_PROFILE: charge the device time since the op began (or since the previous
 * segment of the op) to label; flop > 0 adds a TFLOP/s column. No-op when not profiling. */
void aha__cu_prof_seg(aha_backend *be, const char *label, double flop);

/* Let kern use smem bytes of dynamic shared memory (beyond the default 48 KB needs the
 * opt-in attribute); more than the device offers is AHA_EUNSUPPORTED naming op. */
template <typename K>
static aha_status aha__cu_smem(K kern, size_t smem, aha_backend *be, const char *op, aha_err *err)
{
    if (smem > aha__cu(be)->smem_optin)
        return aha_errf(err, AHA_EUNSUPPORTED, "cuda %s: %zu bytes of shared memory needed", op, smem);
    AHA_CU_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return AHA_OK;
}

/* Scratch of at least n bytes (device), valid until the next call that asks for scratch. */
aha_status aha__cu_scratch(aha_backend *be, size_t n, void **out, aha_err *err);

/* ---- bf16 / fp32 access -------------------------------------------------------------------- */

__device__ __forceinline__ float aha__ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float aha__ld(const __nv_bfloat16 *p, int64_t i)
{
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ void aha__st(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void aha__st(__nv_bfloat16 *p, int64_t i, float v)
{
    p[i] = __float2bfloat16(v);
}

typedef __nv_bfloat16 bf16;

/* 8 consecutive elements as floats, and back: one 16-byte access for bf16, two for fp32
 * (p 16-byte aligned). The element-at-a-time loops move 2-byte words and reach ~60% of the
 * bandwidth on large tensors. */
__device__ __forceinline__ void aha__ld8(const bf16 *p, float *o)
{
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        o[2 * i] = f.x;
        o[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void aha__ld8(const float *p, float *o)
{
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
}
__device__ __forceinline__ void aha__st8(bf16 *p, const float *v)
{
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *(uint4 *)p = u;
}
__device__ __forceinline__ void aha__st8(float *p, const float *v)
{
    *(float4 *)p = make_float4(v[0], v[1], v[2], v[3]);
    *(float4 *)(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}

/* v as a T would store it (bf16: rounded to nearest even; float: unchanged) */
template <typename T> __device__ __forceinline__ float aha__rnd(float v) { return v; }
template <> __device__ __forceinline__ float aha__rnd<bf16>(float v) { return __bfloat162float(__float2bfloat16(v)); }

/* Calls F::template run<T>() with T = float or bf16 according to dt; other dtypes are refused. */
#define AHA__DISPATCH_FLOAT(dt, T, ...)                  \
    do {                                                 \
        if ((dt) == AHA_DT_F32) {                        \
            typedef float T;                             \
            __VA_ARGS__;                                 \
        } else if ((dt) == AHA_DT_BF16) {                \
            typedef bf16 T;                              \
            __VA_ARGS__;                                 \
        }                                                \
    } while (0)

static inline bool aha__is_float(aha_dtype dt) { return dt == AHA_DT_F32 || dt == AHA_DT_BF16; }

/* ---- reductions ------------------------------------------------------------------------------ */

__device__ __forceinline__ float aha__warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float aha__warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
 * sh: 32 floats of shared memory, reused after a barrier. */
__device__ __forceinline__ float aha__block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = aha__warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return aha__warp_sum(v);
}
__device__ __forceinline__ float aha__block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = aha__warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return aha__warp_max(v);
}

static inline unsigned aha__blocks(int64_t n, int threads, int64_t cap)
{
    int64_t b = (n + threads - 1) / threads;
    if (b > cap) b = cap;
    if (b < 1) b = 1;
    return (unsigned)b;
}

/* ---- the op functions, one family per file --------------------------------------------------- */

/* elementwise.cu */
aha_status aha__cu_fill(aha_backend *be, aha_tensor x, int64_t n, float value, aha_err *err);
aha_status aha__cu_copy(aha_backend *be, aha_tensor dst, aha_tensor src, int64_t n, aha_err *err);
aha_status aha__cu_scale(aha_backend *be, aha_tensor x, int64_t n, float s, aha_err *err);
aha_status aha__cu_copy2d(aha_backend *be, aha_tensor dst, int64_t dst_pitch, aha_tensor src, int64_t src_pitch,
                          int64_t width, int64_t rows, aha_err *err);
aha_status aha__cu_add(aha_backend *be, aha_tensor y, aha_tensor a, aha_tensor b, int64_t n,
                       aha_err *err);
aha_status aha__cu_sumsq(aha_backend *be, aha_tensor acc, aha_tensor x, int64_t n, aha_err *err);
aha_status aha__cu_swiglu_fwd(aha_backend *be, aha_tensor out, aha_tensor g, aha_tensor u, int64_t n,
                              aha_err *err);
aha_status aha__cu_swiglu_bwd(aha_backend *be, aha_tensor dg, aha_tensor du, aha_tensor dout,
                              aha_tensor g, aha_tensor u, int64_t n, aha_err *err);
/* embed.cu */
aha_status aha__cu_embedding_fwd(aha_backend *be, aha_tensor out, aha_tensor ids, aha_tensor table,
                                 int N, int C, aha_err *err);
aha_status aha__cu_embedding_bwd(aha_backend *be, aha_tensor dtable, aha_tensor ids,
                                 aha_tensor dout, int N, int C, aha_err *err);
aha_status aha__cu_scatter_rows(aha_backend *be, aha_tensor dst, aha_tensor idx, aha_tensor src, int n, int C,
                                aha_err *err);
/* rmsnorm.cu */
aha_status aha__cu_rmsnorm_fwd(aha_backend *be, aha_tensor out, aha_tensor rstd, aha_tensor x,
                               aha_tensor w, int N, int C, float eps, aha_err *err);
aha_status aha__cu_add_rmsnorm(aha_backend *be, aha_tensor y, aha_tensor out, aha_tensor rstd, aha_tensor a,
                               aha_tensor b, aha_tensor w, int N, int C, float eps, aha_err *err);
aha_status aha__cu_rmsnorm_bwd(aha_backend *be, aha_tensor dx, aha_tensor dw, aha_tensor dout,
                               aha_tensor x, aha_tensor w, aha_tensor rstd, int N, int C,
                               bool accumulate, aha_err *err);
/* rope.cu */
aha_status aha__cu_rope_fwd(aha_backend *be, aha_tensor x, aha_tensor pos, int N, int nh, int D,
                            float theta, aha_err *err);
aha_status aha__cu_rope_qk_store(aha_backend *be, aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor kc,
                                 aha_tensor vc, aha_tensor slots, aha_tensor pos, int N, int H, int KV, int D,
                                 int max_seq, float theta, aha_err *err);
aha_status aha__cu_rope_qkv(aha_backend *be, aha_tensor qkv, aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor kc,
                            aha_tensor vc, aha_tensor slots, aha_tensor pos, int N, int H, int KV, int D, int max_seq,
                            float theta, aha_err *err);
aha_status aha__cu_rope_bwd(aha_backend *be, aha_tensor dx, aha_tensor pos, int N, int nh, int D,
                            float theta, aha_err *err);
/* gemm.cu */
aha_status aha__cu_matmul(aha_backend *be, aha_tensor y, aha_tensor x, aha_tensor w, aha_tensor bias,
                          int M, int K, int N, aha_err *err);
aha_status aha__cu_matmul_bwd_dx(aha_backend *be, aha_tensor dx, aha_tensor dy, aha_tensor w, int M,
                                 int K, int N, bool accumulate, aha_err *err);
aha_status aha__cu_matmul_bwd_dw(aha_backend *be, aha_tensor dw, aha_tensor dbias, aha_tensor dy,
                                 aha_tensor x, int M, int K, int N, aha_err *err);
/* db (N, fp32) += the column sums of src (M, N) */
aha_status aha__cu_colsum(aha_backend *be, aha_tensor db, aha_tensor src, int M, int N, aha_err *err);
aha_status aha__cu_matmul_batched(aha_backend *be, aha_tensor y, int64_t y_stride, aha_tensor x, aha_tensor w,
                                  int64_t w_stride, aha_tensor bias, int64_t bias_stride, int M, int K, int N, int nb,
                                  aha_err *err);
aha_status aha__cu_matmul_bwd_dw_batched(aha_backend *be, aha_tensor dw, int64_t dw_stride, aha_tensor dbias,
                                         int64_t dbias_stride, aha_tensor dy, int64_t dy_stride, aha_tensor x, int M,
                                         int K, int N, int nb, aha_err *err);
/* attention.cu */
aha_status aha__cu_attention_fwd(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q,
                                 aha_tensor k, aha_tensor v, aha_tensor cu_seqlens, int n_seqs,
                                 int N, int H, int KV, int D, int max_seqlen, aha_err *err);
aha_status aha__cu_attention_bwd(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv,
                                 aha_tensor dout, aha_tensor q, aha_tensor k, aha_tensor v,
                                 aha_tensor out, aha_tensor lse, aha_tensor cu_seqlens, int n_seqs,
                                 int N, int H, int KV, int D, int max_seqlen, aha_err *err);
aha_status aha__cu_kv_store(aha_backend *be, aha_tensor kc, aha_tensor vc, aha_tensor k, aha_tensor v,
                            aha_tensor slots, aha_tensor pos, int n, int KV, int D, int max_seq,
                            aha_err *err);
aha_status aha__cu_attention_cached(aha_backend *be, aha_tensor out, aha_tensor q, aha_tensor kc,
                                    aha_tensor vc, aha_tensor slots, aha_tensor lens, int n, int H,
                                    int KV, int D, int max_seq, aha_err *err);
/* attention_tc.cu: tensor-core versions for BF16 and head dim 64 / 128 (16-byte aligned rows) */
bool aha__cu_attention_tc_ok(aha_dtype dt, int D);
aha_status aha__cu_attention_fwd_tc(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q, aha_tensor k,
                                    aha_tensor v, aha_tensor cu, int n_seqs, int H, int KV, int D, int max_seqlen,
                                    aha_err *err);
/* attention over the KV cache on tensor cores: BF16, D 64 / 128, H / KV <= 16, 16-byte rows */
aha_status aha__cu_attention_cached_tc(aha_backend *be, aha_tensor out, aha_tensor q, aha_tensor kc, aha_tensor vc,
                                       aha_tensor slots, aha_tensor lens, int n, int H, int KV, int D, int max_seq,
                                       aha_err *err);
/* Dv (N, H) as attention.cu computes it; dkacc: 2 * N * KV * D floats of scratch */
aha_status aha__cu_attention_bwd_tc(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv, aha_tensor dout,
                                    aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor lse, const float *Dv,
                                    float *dkacc, aha_tensor cu, int n_seqs, int N, int H, int KV, int D,
                                    int max_seqlen, aha_err *err);
/* logprob.cu */
aha_status aha__cu_logprob_fwd(aha_backend *be, aha_tensor lp, aha_tensor lse, aha_tensor logits,
                               aha_tensor targets, int n, int V, aha_err *err);
aha_status aha__cu_logprob_bwd(aha_backend *be, aha_tensor dlogits, aha_tensor logits, aha_tensor lse,
                               aha_tensor targets, aha_tensor dlp, int n, int V, aha_err *err);
/* loss.cu */
aha_status aha__cu_grpo_loss(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                             aha_tensor old_lp, aha_tensor ref_lp, aha_tensor adv, aha_tensor weight,
                             aha_tensor mask, int n, float eps_low, float eps_high, float beta,
                             aha_err *err);
aha_status aha__cu_sft_loss(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                            aha_tensor weight, int n, aha_err *err);
/* adamw.cu */
aha_status aha__cu_adamw(aha_backend *be, aha_tensor p, aha_tensor p_out, aha_tensor g, aha_tensor m,
                         aha_tensor v, int64_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float grad_scale, int step, aha_err *err);
/* sample.cu */
aha_status aha__cu_sample(aha_backend *be, aha_tensor tokens, aha_tensor logprobs, aha_tensor logits,
                          aha_tensor rng_ids, aha_tensor rng_pos, int n, int V, float temperature,
                          int top_k, float top_p, uint64_t seed, aha_err *err);

#endif
