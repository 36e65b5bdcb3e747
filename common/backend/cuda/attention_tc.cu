/* attention_tc.cu: the tensor-core (WMMA, bf16 in, fp32 accumulate) versions of the packed
 * causal GQA attention forward and backward, for BF16 tensors with head dim 64 or 128 (the
 * Qwen2.5 / Qwen3 / Llama sizes); attention.cu keeps the CUDA-core kernels for the rest and
 * is the reference these are tested against (tests/gpu/test_cuda_ops.c compares both with
 * the CPU backend).
 *
 * Structure (FlashAttention-2): a block of 4 warps owns 64 rows (16 per warp) and walks
 * 64-wide tiles of the other operand in shared memory. Fragment element layouts are opaque
 * in WMMA, so every per-row step (mask, online softmax, rescaling) goes through shared
 * memory: a warp stores its 16 x 64 score tile, two lanes per row process it, and the output
 * accumulator lives in shared memory too (loaded into an accumulator fragment, updated by
 * mma, stored back), which lets the rescale by exp(m_old - m_new) be a plain loop.
 * Probabilities and dS are rounded to bf16 for the second product, as FlashAttention does. */
#include <mma.h>

#include "common.cuh"

using namespace nvcuda;

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_bt; /* B = X^T */
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

/* rows [r0, r0 + 64) of head h of x (N, heads, D) into s (64, P) bf16, zero past `valid`;
 * 16-byte copies */
template <int D, int P>
__device__ __forceinline__ void tile_load(bf16 *s, const bf16 *x, int64_t r0, int valid, int heads, int h)
{
    constexpr int V8 = D / 8;
    for (int i = threadIdx.x; i < 64 * V8; i += blockDim.x) {
        int r = i / V8, c = (i % V8) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < valid) v = *(const uint4 *)(x + ((r0 + r) * heads + h) * (int64_t)D + c);
        *(uint4 *)(s + r * P + c) = v;
    }
}

/* C (16 x 16k... ) helpers: acc(16 x 16) += A (16 x K, row-major, lda) . B */
template <int K>
__device__ __forceinline__ void mma_rowT(frag_c &acc, const bf16 *a, int lda, const bf16 *bt, int ldb)
{
    /* B^T given as rows: B(k, n) = bt[n * ldb + k] */
#pragma unroll
    for (int k = 0; k < K; k += 16) {
        frag_a fa;
        frag_bt fb;
        wmma::load_matrix_sync(fa, a + k, lda);
        wmma::load_matrix_sync(fb, bt + k, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}
template <int K>
__device__ __forceinline__ void mma_row(frag_c &acc, const bf16 *a, int lda, const bf16 *b, int ldb)
{
    /* B given as rows: B(k, n) = b[k * ldb + n] */
#pragma unroll
    for (int k = 0; k < K; k += 16) {
        frag_a fa;
        frag_b fb;
        wmma::load_matrix_sync(fa, a + k, lda);
        wmma::load_matrix_sync(fb, b + (int64_t)k * ldb, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}

/* ------------------------------------------------------------------------------------------ */

template <int D>
__global__ void __launch_bounds__(128) k_attn_fwd_tc(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                     const bf16 *v, const int32_t *cu, int H, int KV, float scale)
{
    constexpr int P = D + 8, SP = 64 + 4, PP = 64 + 8, OP = D + 4;
    extern __shared__ __align__(32) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw;                 /* (64, P) */
    bf16 *Ks = Qs + 64 * P;                   /* (64, P) */
    bf16 *Vs = Ks + 64 * P;                   /* (64, P) */
    float *Ss = (float *)(Vs + 64 * P);       /* (4, 16, SP) */
    float *Os = Ss + 4 * 16 * SP;             /* (4, 16, OP) */
    bf16 *Ps = (bf16 *)(Os + 4 * 16 * OP);    /* (4, 16, PP) */
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int q0 = blockIdx.x * 64;
    if (q0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *Sw = Ss + warp * 16 * SP, *Ow = Os + warp * 16 * OP;
    bf16 *Pw = Ps + warp * 16 * PP;
    tile_load<D, P>(Qs, q, start + q0, min(64, len - q0), H, h);
    for (int i = lane; i < 16 * OP; i += 32) Ow[i] = 0.0f;
    /* two lanes per row: row r = lane / 2, columns half * 32 .. + 32 */
    int r = lane >> 1, half = lane & 1;
    int qi = q0 + warp * 16 + r;
    float m = -INFINITY, l = 0.0f;
    const float sl = scale * LOG2E;
    int kend = min(len, q0 + 64);
    for (int k0 = 0; k0 < kend; k0 += 64) {
        __syncthreads();
        tile_load<D, P>(Ks, k, start + k0, min(64, len - k0), KV, g);
        tile_load<D, P>(Vs, v, start + k0, min(64, len - k0), KV, g);
        __syncthreads();
#pragma unroll
        for (int j = 0; j < 4; j++) {
            frag_c acc;
            wmma::fill_fragment(acc, 0.0f);
            mma_rowT<D>(acc, Qs + warp * 16 * P, P, Ks + j * 16 * P, P);
            wmma::store_matrix_sync(Sw + j * 16, acc, SP, wmma::mem_row_major);
        }
        __syncwarp();
        float sv[32], mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < 32; c++) {
            int kj = k0 + half * 32 + c;
            float x = (kj <= qi && kj < len) ? Sw[r * SP + half * 32 + c] * sl : -INFINITY;
            sv[c] = x;
            mx = fmaxf(mx, x);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float mn = fmaxf(m, mx);
        float alpha = 1.0f, sum = 0.0f;
        if (mn != -INFINITY) {
            alpha = exp2f(m - mn);
#pragma unroll
            for (int c = 0; c < 32; c++) {
                float p = exp2f(sv[c] - mn);
                sum += p;
                Pw[r * PP + half * 32 + c] = __float2bfloat16(p);
            }
        } else {
#pragma unroll
            for (int c = 0; c < 32; c++) Pw[r * PP + half * 32 + c] = __float2bfloat16(0.0f);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * alpha + sum;
        m = mn;
        for (int c = half; c < D; c += 2) Ow[r * OP + c] *= alpha;
        __syncwarp();
#pragma unroll
        for (int jd = 0; jd < D / 16; jd++) {
            frag_c acc;
            wmma::load_matrix_sync(acc, Ow + jd * 16, OP, wmma::mem_row_major);
            mma_row<64>(acc, Pw, PP, Vs + jd * 16, P);
            wmma::store_matrix_sync(Ow + jd * 16, acc, OP, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (qi < len) {
        int64_t row = (int64_t)start + qi;
        float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int c = half; c < D; c += 2) out[(row * H + h) * D + c] = __float2bfloat16(Ow[r * OP + c] * inv);
        if (!half) lse[row * H + h] = (m + log2f(l)) * LN2;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* backward: dq per (query tile, head); dk, dv per (key tile, query head) over the query tiles
 * at or after it, the group's heads meeting in fp32 atomics. Dv (N, H) = rowsum(dout * out)
 * is computed by attention.cu first. */

template <int D>
__global__ void __launch_bounds__(128) k_attn_bwd_dq_tc(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                                        const bf16 *v, const float *lse, const float *Dv,
                                                        const int32_t *cu, int H, int KV, float scale)
{
    constexpr int P = D + 8, SP = 64 + 4, PP = 64 + 8, OP = D + 4;
    extern __shared__ __align__(32) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw;               /* (64, P) */
    bf16 *dOs = Qs + 64 * P;                /* (64, P) */
    bf16 *Ks = dOs + 64 * P;                /* (64, P) */
    bf16 *Vs = Ks + 64 * P;                 /* (64, P) */
    float *Ss = (float *)(Vs + 64 * P);     /* (4, 16, SP): S, then dP */
    float *Ts = Ss + 4 * 16 * SP;           /* (4, 16, SP) */
    float *As = Ts + 4 * 16 * SP;           /* (4, 16, OP): dq accumulator */
    bf16 *Ps = (bf16 *)(As + 4 * 16 * OP);  /* (4, 16, PP): dS */
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int q0 = blockIdx.x * 64;
    if (q0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *Sw = Ss + warp * 16 * SP, *Tw = Ts + warp * 16 * SP, *Aw = As + warp * 16 * OP;
    bf16 *Pw = Ps + warp * 16 * PP;
    int qvalid = min(64, len - q0);
    tile_load<D, P>(Qs, q, start + q0, qvalid, H, h);
    tile_load<D, P>(dOs, dout, start + q0, qvalid, H, h);
    for (int i = lane; i < 16 * OP; i += 32) Aw[i] = 0.0f;
    int r = lane >> 1, half = lane & 1;
    int qi = q0 + warp * 16 + r;
    int64_t qrow = (int64_t)start + min(qi, len - 1);
    float lr = lse[qrow * H + h], dr = Dv[qrow * H + h];
    int kend = min(len, q0 + 64);
    for (int k0 = 0; k0 < kend; k0 += 64) {
        __syncthreads();
        tile_load<D, P>(Ks, k, start + k0, min(64, len - k0), KV, g);
        tile_load<D, P>(Vs, v, start + k0, min(64, len - k0), KV, g);
        __syncthreads();
#pragma unroll
        for (int j = 0; j < 4; j++) {
            frag_c acc, acc2;
            wmma::fill_fragment(acc, 0.0f);
            wmma::fill_fragment(acc2, 0.0f);
            mma_rowT<D>(acc, Qs + warp * 16 * P, P, Ks + j * 16 * P, P);
            mma_rowT<D>(acc2, dOs + warp * 16 * P, P, Vs + j * 16 * P, P);
            wmma::store_matrix_sync(Sw + j * 16, acc, SP, wmma::mem_row_major);
            wmma::store_matrix_sync(Tw + j * 16, acc2, SP, wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll 8
        for (int c = 0; c < 32; c++) {
            int col = half * 32 + c, kj = k0 + col;
            float p = (qi < len && kj <= qi) ? expf(Sw[r * SP + col] * scale - lr) : 0.0f;
            Pw[r * PP + col] = __float2bfloat16(p * (Tw[r * SP + col] - dr));
        }
        __syncwarp();
        /* dq += dS (16 x 64) . K (64 x D) */
#pragma unroll
        for (int jd = 0; jd < D / 16; jd++) {
            frag_c acc;
            wmma::load_matrix_sync(acc, Aw + jd * 16, OP, wmma::mem_row_major);
            mma_row<64>(acc, Pw, PP, Ks + jd * 16, P);
            wmma::store_matrix_sync(Aw + jd * 16, acc, OP, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (qi < len) {
        int64_t row = (int64_t)start + qi;
        for (int c = half; c < D; c += 2) dq[(row * H + h) * D + c] = __float2bfloat16(Aw[r * OP + c] * scale);
    }
}

/* One block per (key tile, QUERY head): the heads of a GQA group add their dk, dv shares into
 * fp32 accumulators (dkacc, dvacc (N, KV, D), zeroed first) with atomics, which gives the
 * launch H / KV times more blocks than one per kv head would; k_dkv_finish converts. */
template <int D>
__global__ void __launch_bounds__(128) k_attn_bwd_dkv_tc(float *dkacc, float *dvacc, const bf16 *dout, const bf16 *q,
                                                         const bf16 *k, const bf16 *v, const float *lse,
                                                         const float *Dv, const int32_t *cu, int H, int KV,
                                                         float scale)
{
    constexpr int P = D + 8, SP = 64 + 4, PP = 64 + 8, OP = D + 4;
    extern __shared__ __align__(32) unsigned char smraw[];
    bf16 *Ks = (bf16 *)smraw;               /* (64, P) this block's keys */
    bf16 *Vs = Ks + 64 * P;                 /* (64, P) */
    bf16 *Qs = Vs + 64 * P;                 /* (64, P) query tile */
    bf16 *dOs = Qs + 64 * P;                /* (64, P) */
    float *Ls = (float *)(dOs + 64 * P);    /* (64) lse of the query tile */
    float *Ds = Ls + 64;                    /* (64) Dv of the query tile */
    float *Ss = Ds + 64;                    /* (4, 16, SP): S^T */
    float *Ts = Ss + 4 * 16 * SP;           /* (4, 16, SP): dP^T */
    float *AK = Ts + 4 * 16 * SP;           /* (4, 16, OP) dk accumulator */
    float *AV = AK + 4 * 16 * OP;           /* (4, 16, OP) dv accumulator */
    bf16 *Pp = (bf16 *)(AV + 4 * 16 * OP);  /* (4, 16, PP): P^T */
    bf16 *Pd = Pp + 4 * 16 * PP;            /* (4, 16, PP): dS^T */
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int k0 = blockIdx.x * 64;
    if (k0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *Sw = Ss + warp * 16 * SP, *Tw = Ts + warp * 16 * SP, *AKw = AK + warp * 16 * OP, *AVw = AV + warp * 16 * OP;
    bf16 *Ppw = Pp + warp * 16 * PP, *Pdw = Pd + warp * 16 * PP;
    tile_load<D, P>(Ks, k, start + k0, min(64, len - k0), KV, g);
    tile_load<D, P>(Vs, v, start + k0, min(64, len - k0), KV, g);
    for (int i = lane; i < 16 * OP; i += 32) AKw[i] = AVw[i] = 0.0f;
    int r = lane >> 1, half = lane & 1;
    int kj = k0 + warp * 16 + r; /* this lane pair's key */
    {
        for (int q0 = k0; q0 < len; q0 += 64) {
            __syncthreads();
            int qvalid = min(64, len - q0);
            tile_load<D, P>(Qs, q, start + q0, qvalid, H, h);
            tile_load<D, P>(dOs, dout, start + q0, qvalid, H, h);
            for (int i = threadIdx.x; i < 64; i += blockDim.x) {
                int64_t row = (int64_t)start + min(q0 + i, len - 1);
                Ls[i] = lse[row * H + h];
                Ds[i] = Dv[row * H + h];
            }
            __syncthreads();
            /* S^T (16 keys x 64 queries) = K_w Q^T;  dP^T = V_w dO^T */
#pragma unroll
            for (int j = 0; j < 4; j++) {
                frag_c acc, acc2;
                wmma::fill_fragment(acc, 0.0f);
                wmma::fill_fragment(acc2, 0.0f);
                mma_rowT<D>(acc, Ks + warp * 16 * P, P, Qs + j * 16 * P, P);
                mma_rowT<D>(acc2, Vs + warp * 16 * P, P, dOs + j * 16 * P, P);
                wmma::store_matrix_sync(Sw + j * 16, acc, SP, wmma::mem_row_major);
                wmma::store_matrix_sync(Tw + j * 16, acc2, SP, wmma::mem_row_major);
            }
            __syncwarp();
#pragma unroll 8
            for (int c = 0; c < 32; c++) {
                int col = half * 32 + c, qi = q0 + col;
                float p = (kj < len && qi < len && kj <= qi) ? expf(Sw[r * SP + col] * scale - Ls[col]) : 0.0f;
                Ppw[r * PP + col] = __float2bfloat16(p);
                Pdw[r * PP + col] = __float2bfloat16(p * (Tw[r * SP + col] - Ds[col]));
            }
            __syncwarp();
            /* dv += P^T (16 x 64) . dO (64 x D);  dk += dS^T . Q */
#pragma unroll
            for (int jd = 0; jd < D / 16; jd++) {
                frag_c acc;
                wmma::load_matrix_sync(acc, AVw + jd * 16, OP, wmma::mem_row_major);
                mma_row<64>(acc, Ppw, PP, dOs + jd * 16, P);
                wmma::store_matrix_sync(AVw + jd * 16, acc, OP, wmma::mem_row_major);
                wmma::load_matrix_sync(acc, AKw + jd * 16, OP, wmma::mem_row_major);
                mma_row<64>(acc, Pdw, PP, Qs + jd * 16, P);
                wmma::store_matrix_sync(AKw + jd * 16, acc, OP, wmma::mem_row_major);
            }
            __syncwarp();
        }
    }
    if (kj < len) {
        int64_t row = (int64_t)start + kj;
        for (int c = half; c < D; c += 2) {
            atomicAdd(dkacc + (row * KV + g) * D + c, AKw[r * OP + c] * scale);
            atomicAdd(dvacc + (row * KV + g) * D + c, AVw[r * OP + c]);
        }
    }
}

__global__ void k_dkv_finish(bf16 *dk, bf16 *dv, const float *dkacc, const float *dvacc, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        dk[i] = __float2bfloat16(dkacc[i]);
        dv[i] = __float2bfloat16(dvacc[i]);
    }
}

/* ------------------------------------------------------------------------------------------ */

template <typename K>
static aha_status tc_smem(K kern, size_t smem, aha_backend *be, aha_err *err)
{
    if (smem > aha__cu(be)->smem_optin)
        return aha_errf(err, AHA_EUNSUPPORTED, "cuda attention: %zu bytes of shared memory needed", smem);
    AHA_CU_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return AHA_OK;
}

template <int D>
static aha_status fwd_tc(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q, aha_tensor k, aha_tensor v,
                         aha_tensor cu, int n_seqs, int H, int KV, int max_seqlen, aha_err *err)
{
    constexpr int P = D + 8, SP = 64 + 4, PP = 64 + 8, OP = D + 4;
    size_t smem = 3 * 64 * P * 2 + 4 * 16 * SP * 4 + 4 * 16 * OP * 4 + 4 * 16 * PP * 2;
    AHA_TRY(tc_smem(k_attn_fwd_tc<D>, smem, be, err));
    dim3 grid((max_seqlen + 63) / 64, H, n_seqs);
    k_attn_fwd_tc<D><<<grid, 128, smem, aha__cu(be)->stream>>>((bf16 *)out.data, (float *)lse.data,
                                                               (const bf16 *)q.data, (const bf16 *)k.data,
                                                               (const bf16 *)v.data, (const int32_t *)cu.data, H,
                                                               KV, 1.0f / sqrtf((float)D));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

template <int D>
static aha_status bwd_tc(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv, aha_tensor dout, aha_tensor q,
                         aha_tensor k, aha_tensor v, aha_tensor lse, const float *Dv, float *dkacc, int64_t nkv,
                         aha_tensor cu, int n_seqs, int H, int KV, int max_seqlen, aha_err *err)
{
    constexpr int P = D + 8, SP = 64 + 4, PP = 64 + 8, OP = D + 4;
    cudaStream_t st = aha__cu(be)->stream;
    float scale = 1.0f / sqrtf((float)D);
    size_t smq = 4 * 64 * P * 2 + 2 * 4 * 16 * SP * 4 + 4 * 16 * OP * 4 + 4 * 16 * PP * 2;
    AHA_TRY(tc_smem(k_attn_bwd_dq_tc<D>, smq, be, err));
    dim3 gq((max_seqlen + 63) / 64, H, n_seqs);
    k_attn_bwd_dq_tc<D><<<gq, 128, smq, st>>>((bf16 *)dq.data, (const bf16 *)dout.data, (const bf16 *)q.data,
                                              (const bf16 *)k.data, (const bf16 *)v.data, (const float *)lse.data,
                                              Dv, (const int32_t *)cu.data, H, KV, scale);
    AHA_CU_LAUNCHED();
    size_t smk = 4 * 64 * P * 2 + 2 * 64 * 4 + 2 * 4 * 16 * SP * 4 + 2 * 4 * 16 * OP * 4 + 2 * 4 * 16 * PP * 2;
    AHA_TRY(tc_smem(k_attn_bwd_dkv_tc<D>, smk, be, err));
    AHA_CU_CHECK(cudaMemsetAsync(dkacc, 0, 2 * nkv * sizeof(float), st));
    dim3 gk((max_seqlen + 63) / 64, H, n_seqs);
    k_attn_bwd_dkv_tc<D><<<gk, 128, smk, st>>>(dkacc, dkacc + nkv, (const bf16 *)dout.data, (const bf16 *)q.data,
                                               (const bf16 *)k.data, (const bf16 *)v.data, (const float *)lse.data,
                                               Dv, (const int32_t *)cu.data, H, KV, scale);
    AHA_CU_LAUNCHED();
    k_dkv_finish<<<aha__blocks(nkv, 256, 8192), 256, 0, st>>>((bf16 *)dk.data, (bf16 *)dv.data, dkacc, dkacc + nkv,
                                                               nkv);
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

bool aha__cu_attention_tc_ok(aha_dtype dt, int D) { return dt == AHA_DT_BF16 && (D == 64 || D == 128); }

aha_status aha__cu_attention_fwd_tc(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q, aha_tensor k,
                                    aha_tensor v, aha_tensor cu, int n_seqs, int H, int KV, int D, int max_seqlen,
                                    aha_err *err)
{
    if (D == 64) return fwd_tc<64>(be, out, lse, q, k, v, cu, n_seqs, H, KV, max_seqlen, err);
    return fwd_tc<128>(be, out, lse, q, k, v, cu, n_seqs, H, KV, max_seqlen, err);
}

aha_status aha__cu_attention_bwd_tc(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv, aha_tensor dout,
                                    aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor lse, const float *Dv,
                                    float *dkacc, aha_tensor cu, int n_seqs, int N, int H, int KV, int D,
                                    int max_seqlen, aha_err *err)
{
    int64_t nkv = (int64_t)N * KV * D;
    if (D == 64)
        return bwd_tc<64>(be, dq, dk, dv, dout, q, k, v, lse, Dv, dkacc, nkv, cu, n_seqs, H, KV, max_seqlen, err);
    return bwd_tc<128>(be, dq, dk, dv, dout, q, k, v, lse, Dv, dkacc, nkv, cu, n_seqs, H, KV, max_seqlen, err);
}
