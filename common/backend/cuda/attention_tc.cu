/* attention_tc.cu: the tensor-core versions of the packed causal GQA attention forward and
 * backward, for BF16 tensors with head dim 64 or 128 (the Qwen2.5 / Qwen3 / Llama sizes);
 * attention.cu keeps the CUDA-core kernels for the rest and is the reference these are tested
 * against (tests/gpu/test_cuda_ops.c compares both with the CPU backend).
 *
 * Structure (FlashAttention-2) on mma.sync.m16n8k16 (bf16 in, fp32 accumulate) with ldmatrix:
 * a block of 4 warps owns 64 rows (16 per warp) and walks 64-wide tiles of the other operand,
 * which cp.async double-buffers in shared memory (rows padded by 16 bytes: ldmatrix without
 * bank conflicts). Scores, probabilities and accumulators stay in registers: the m16n8
 * accumulator layout (thread = row lane/4 and lane/4 + 8, columns 2 (lane % 4) + {0, 1}) is
 * the A-operand layout of the next product once packed to bf16, so P (or dS) feeds P.V (or
 * dS.K) without a trip through shared memory, and the row statistics need only the four
 * lanes of a quad. The earlier WMMA version stored every score tile to shared memory (fragment
 * layouts are opaque there) and ran at ~48 TFLOP/s forward, ~16 backward.
 * Probabilities and dS are rounded to bf16 for the second products, as FlashAttention does.
 *   forward: S = Q K^T, online softmax in base 2, O += P V; lse = natural logsumexp.
 *   dq:  per (query tile, head): S, dP = dO V^T, dS = P (dP - Dv), dq += dS K.
 *   dkv: per (key tile, QUERY head): S^T = K Q^T, dP^T = V dO^T, dv += P^T dO,
 *        dk += dS^T Q; the group's heads meet in fp32 atomics (more blocks than one per kv head).
 * Dv (N, H) = rowsum(dout * out) is computed by attention.cu first. */
#include <stdint.h>

#include "common.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void ldsm4(uint32_t *r, const bf16 *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm4t(uint32_t *r, const bf16 *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

__device__ __forceinline__ void cp16(bf16 *dst, const bf16 *src, bool valid)
{
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    int n = valid ? 16 : 0; /* 0: zero-fill, nothing read */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* rows [r0, r0 + 64) of head h of x (N, heads, D) into s (64, P), zero past `valid` (>= 1) */
template <int D, int P>
__device__ __forceinline__ void tile_async(bf16 *s, const bf16 *x, int64_t r0, int valid, int heads, int h)
{
    constexpr int V8 = D / 8;
    for (int i = threadIdx.x; i < 64 * V8; i += blockDim.x) {
        int r = i / V8, c = (i % V8) * 8;
        int rr = r < valid ? r : valid - 1;
        cp16(s + r * P + c, x + ((r0 + rr) * heads + h) * (int64_t)D + c, r < valid);
    }
}

/* ldmatrix addresses (lane's row and column inside a 16 x 16 block):
 *  A operand / non-transposed B pair over rows: see the uses */
__device__ __forceinline__ int a_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
__device__ __forceinline__ int a_col(int lane) { return (lane >> 4) * 8; }
/* B operand from rows = n (two n-tiles of 8), columns = k: */
__device__ __forceinline__ int bn_row(int lane) { return (lane & 7) + (lane >> 4) * 8; }
__device__ __forceinline__ int bn_col(int lane) { return ((lane >> 3) & 1) * 8; }

/* acc (16 x NK, NK/8 n-tiles) = A rows (16 x D) of As . B rows (NK x D)^T of Bs */
template <int D, int P, int NK = 64>
__device__ __forceinline__ void mma_abt(float (*acc)[4], const bf16 *As, const bf16 *Bs, int lane)
{
#pragma unroll
    for (int nt = 0; nt < NK / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
        uint32_t a[4];
        ldsm4(a, As + a_row(lane) * P + ks * 16 + a_col(lane));
#pragma unroll
        for (int np = 0; np < NK / 16; np++) {
            uint32_t b[4];
            ldsm4(b, Bs + (np * 16 + bn_row(lane)) * P + ks * 16 + bn_col(lane));
            mma16816(acc[2 * np], a, b);
            mma16816(acc[2 * np + 1], a, b + 2);
        }
    }
}

/* out (16 x D, D/8 n-tiles) += X (16 x NK, in accumulator layout, NK/8 n-tiles) . Bs (NK x D)
 * where Bs holds the NK rows of the k dimension. SPLIT: X is fed as bf16 hi + lo parts (two
 * products), so its rounding to bf16 costs ~2^-16 instead of ~2^-9 relative: the forward's
 * P, whose rounding error otherwise reaches the output's elementwise tolerance where a row's
 * weighted sum of v cancels. */
template <int D, int P, int NK = 64, bool SPLIT = false>
__device__ __forceinline__ void mma_xb(float (*out)[4], const float (*x)[4], const bf16 *Bs, int lane)
{
#pragma unroll
    for (int kk = 0; kk < NK / 16; kk++) {
        uint32_t a[4] = {pack_bf16(x[2 * kk][0], x[2 * kk][1]), pack_bf16(x[2 * kk][2], x[2 * kk][3]),
                         pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]), pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3])};
        uint32_t lo[4];
        if (SPLIT) {
            const float *xs[4][2] = {{&x[2 * kk][0], &x[2 * kk][1]}, {&x[2 * kk][2], &x[2 * kk][3]},
                                     {&x[2 * kk + 1][0], &x[2 * kk + 1][1]}, {&x[2 * kk + 1][2], &x[2 * kk + 1][3]}};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                __nv_bfloat162 hv = *(__nv_bfloat162 *)&a[j];
                float2 hf = __bfloat1622float2(hv);
                lo[j] = pack_bf16(*xs[j][0] - hf.x, *xs[j][1] - hf.y);
            }
        }
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t b[4];
            ldsm4t(b, Bs + (kk * 16 + a_row(lane)) * P + dp * 16 + a_col(lane));
            mma16816(out[2 * dp], a, b);
            mma16816(out[2 * dp + 1], a, b + 2);
            if (SPLIT) {
                mma16816(out[2 * dp], lo, b);
                mma16816(out[2 * dp + 1], lo, b + 2);
            }
        }
    }
}

/* One online-softmax step over a tile of NT n-tiles of scores (accumulator layout, already
 * scaled to base 2, masked entries -inf) for this lane's two rows: new row maxima over the
 * quad, scores replaced by exp2(score - max), running sums l and the output accumulator o
 * (DT n-tiles) rescaled to the new maxima. A row with nothing visible yet keeps m = -inf and
 * uses 0 as its reference, so no inf - inf appears. */
template <int NT, int DT>
__device__ __forceinline__ void softmax_step(float (*sc)[4], float (*o)[4], float &m0, float &m1, float &l0, float &l1)
{
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            mx0 = fmaxf(mx0, sc[nt][e]);
            mx1 = fmaxf(mx1, sc[nt][2 + e]);
        }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    float u0 = mn0 == -INFINITY ? 0.0f : mn0, u1 = mn1 == -INFINITY ? 0.0f : mn1;
    float a0 = exp2f(m0 - u0), a1 = exp2f(m1 - u1);
    m0 = mn0;
    m1 = mn1;
    float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float p0 = exp2f(sc[nt][e] - u0), p1 = exp2f(sc[nt][2 + e] - u1);
            sc[nt][e] = p0;
            sc[nt][2 + e] = p1;
            ps0 += p0;
            ps1 += p1;
        }
    l0 = l0 * a0 + ps0;
    l1 = l1 * a1 + ps1;
#pragma unroll
    for (int i = 0; i < DT; i++) {
        o[i][0] *= a0;
        o[i][1] *= a0;
        o[i][2] *= a1;
        o[i][3] *= a1;
    }
}

/* ------------------------------------------------------------------------------------------ */

template <int D>
__global__ void __launch_bounds__(128) k_attn_fwd_tc(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                     const bf16 *v, const int32_t *cu, int H, int KV, float scale)
{
    constexpr int P = D + 8;
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw; /* (64, P) */
    bf16 *Ks = Qs + 64 * P;   /* 2 x (64, P) */
    bf16 *Vs = Ks + 2 * 64 * P;
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int q0 = blockIdx.x * 64;
    if (q0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
    int ntiles = (min(len, q0 + 64) + 63) / 64;
    tile_async<D, P>(Qs, q, start + q0, min(64, len - q0), H, h);
    tile_async<D, P>(Ks, k, start, min(64, len), KV, g);
    tile_async<D, P>(Vs, v, start, min(64, len), KV, g);
    cp_commit();
    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const float sl = scale * LOG2E;
    int r0 = q0 + warp * 16 + gr, r1 = r0 + 8;
    const bf16 *Qw = Qs + warp * 16 * P;
    for (int kt = 0; kt < ntiles; kt++) {
        int buf = kt & 1;
        if (kt + 1 < ntiles) {
            int k1 = (kt + 1) * 64;
            tile_async<D, P>(Ks + (buf ^ 1) * 64 * P, k, start + k1, min(64, len - k1), KV, g);
            tile_async<D, P>(Vs + (buf ^ 1) * 64 * P, v, start + k1, min(64, len - k1), KV, g);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const bf16 *Kb = Ks + buf * 64 * P, *Vb = Vs + buf * 64 * P;
        float sc[8][4];
        mma_abt<D, P>(sc, Qw, Kb, lane);
        int k0 = kt * 64;
        bool mask = k0 + 63 > q0 + warp * 16 || k0 + 64 > len;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int kj = k0 + nt * 8 + 2 * tq + e;
                float x0 = sc[nt][e] * sl, x1 = sc[nt][2 + e] * sl;
                if (mask) {
                    if (kj > r0 || kj >= len) x0 = -INFINITY;
                    if (kj > r1 || kj >= len) x1 = -INFINITY;
                }
                sc[nt][e] = x0;
                sc[nt][2 + e] = x1;
            }
        softmax_step<8, D / 8>(sc, o, m0, m1, l0, l1);
        mma_xb<D, P, 64, true>(o, sc, Vb, lane);
        __syncthreads();
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    float i0 = l0 > 0 ? 1.0f / l0 : 0.0f, i1 = l1 > 0 ? 1.0f / l1 : 0.0f;
    if (r0 < len) {
        bf16 *orow = out + ((int64_t)(start + r0) * H + h) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            *(__nv_bfloat162 *)(orow + i * 8 + 2 * tq) = __floats2bfloat162_rn(o[i][0] * i0, o[i][1] * i0);
        if (tq == 0) lse[(int64_t)(start + r0) * H + h] = (m0 + log2f(l0)) * LN2;
    }
    if (r1 < len) {
        bf16 *orow = out + ((int64_t)(start + r1) * H + h) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            *(__nv_bfloat162 *)(orow + i * 8 + 2 * tq) = __floats2bfloat162_rn(o[i][2] * i1, o[i][3] * i1);
        if (tq == 0) lse[(int64_t)(start + r1) * H + h] = (m1 + log2f(l1)) * LN2;
    }
}

/* ------------------------------------------------------------------------------------------ */

template <int D>
__global__ void __launch_bounds__(128) k_attn_bwd_dq_tc(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                                        const bf16 *v, const float *lse, const float *Dv,
                                                        const int32_t *cu, int H, int KV, float scale)
{
    constexpr int P = D + 8;
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw;  /* (64, P) */
    bf16 *dOs = Qs + 64 * P;   /* (64, P) */
    bf16 *Ks = dOs + 64 * P;   /* 2 x (64, P) */
    bf16 *Vs = Ks + 2 * 64 * P;
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int q0 = blockIdx.x * 64;
    if (q0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
    int ntiles = (min(len, q0 + 64) + 63) / 64;
    int qvalid = min(64, len - q0);
    tile_async<D, P>(Qs, q, start + q0, qvalid, H, h);
    tile_async<D, P>(dOs, dout, start + q0, qvalid, H, h);
    tile_async<D, P>(Ks, k, start, min(64, len), KV, g);
    tile_async<D, P>(Vs, v, start, min(64, len), KV, g);
    cp_commit();
    int r0 = q0 + warp * 16 + gr, r1 = r0 + 8;
    int64_t x0 = (int64_t)start + min(r0, len - 1), x1 = (int64_t)start + min(r1, len - 1);
    float L0 = lse[x0 * H + h] * LOG2E, L1 = lse[x1 * H + h] * LOG2E;
    float D0 = Dv[x0 * H + h], D1 = Dv[x1 * H + h];
    float acc[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
    const float sl = scale * LOG2E;
    const bf16 *Qw = Qs + warp * 16 * P, *dOw = dOs + warp * 16 * P;
    for (int kt = 0; kt < ntiles; kt++) {
        int buf = kt & 1;
        if (kt + 1 < ntiles) {
            int k1 = (kt + 1) * 64;
            tile_async<D, P>(Ks + (buf ^ 1) * 64 * P, k, start + k1, min(64, len - k1), KV, g);
            tile_async<D, P>(Vs + (buf ^ 1) * 64 * P, v, start + k1, min(64, len - k1), KV, g);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const bf16 *Kb = Ks + buf * 64 * P, *Vb = Vs + buf * 64 * P;
        float sc[8][4], dp[8][4];
        mma_abt<D, P>(sc, Qw, Kb, lane);
        mma_abt<D, P>(dp, dOw, Vb, lane);
        int k0 = kt * 64;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int kj = k0 + nt * 8 + 2 * tq + e;
                float p0 = (r0 < len && kj <= r0) ? exp2f(sc[nt][e] * sl - L0) : 0.0f;
                float p1 = (r1 < len && kj <= r1) ? exp2f(sc[nt][2 + e] * sl - L1) : 0.0f;
                sc[nt][e] = p0 * (dp[nt][e] - D0);
                sc[nt][2 + e] = p1 * (dp[nt][2 + e] - D1);
            }
        mma_xb<D, P>(acc, sc, Kb, lane);
        __syncthreads();
    }
    if (r0 < len) {
        bf16 *row = dq + ((int64_t)(start + r0) * H + h) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            *(__nv_bfloat162 *)(row + i * 8 + 2 * tq) = __floats2bfloat162_rn(acc[i][0] * scale, acc[i][1] * scale);
    }
    if (r1 < len) {
        bf16 *row = dq + ((int64_t)(start + r1) * H + h) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            *(__nv_bfloat162 *)(row + i * 8 + 2 * tq) = __floats2bfloat162_rn(acc[i][2] * scale, acc[i][3] * scale);
    }
}

/* One block per (key tile, QUERY head): the heads of a GQA group add their dk, dv shares into
 * fp32 accumulators (dkacc, dvacc (N, KV, D), zeroed first) with atomics; k_dkv_finish
 * converts. Rows of the accumulator layout here are keys, columns queries. */
template <int D>
__global__ void __launch_bounds__(128) k_attn_bwd_dkv_tc(float *dkacc, float *dvacc, const bf16 *dout, const bf16 *q,
                                                         const bf16 *k, const bf16 *v, const float *lse,
                                                         const float *Dv, const int32_t *cu, int H, int KV,
                                                         float scale)
{
    constexpr int P = D + 8;
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Ks = (bf16 *)smraw;   /* (64, P) this block's keys */
    bf16 *Vs = Ks + 64 * P;     /* (64, P) */
    bf16 *Qs = Vs + 64 * P;     /* 2 x (64, P) query tiles */
    bf16 *dOs = Qs + 2 * 64 * P;
    float *Ls = (float *)(dOs + 2 * 64 * P); /* 2 x (64): lse * log2(e) of the query tile */
    float *Ds = Ls + 2 * 64;                 /* 2 x (64): Dv */
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int k0 = blockIdx.x * 64;
    if (k0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
    int kvalid = min(64, len - k0);
    tile_async<D, P>(Ks, k, start + k0, kvalid, KV, g);
    tile_async<D, P>(Vs, v, start + k0, kvalid, KV, g);
    /* query tiles from the key tile's own (causal: earlier queries see none of these keys) */
    int qt0 = blockIdx.x, nq = (len + 63) / 64;
    auto load_q = [&](int qt, int buf) {
        int qq = qt * 64, qv = min(64, len - qq);
        tile_async<D, P>(Qs + buf * 64 * P, q, start + qq, qv, H, h);
        tile_async<D, P>(dOs + buf * 64 * P, dout, start + qq, qv, H, h);
        for (int i = threadIdx.x; i < 64; i += blockDim.x) {
            int64_t row = (int64_t)start + min(qq + i, len - 1);
            Ls[buf * 64 + i] = lse[row * H + h] * LOG2E;
            Ds[buf * 64 + i] = Dv[row * H + h];
        }
    };
    load_q(qt0, 0);
    cp_commit();
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.0f;
    const float sl = scale * LOG2E;
    int kr0 = k0 + warp * 16 + gr, kr1 = kr0 + 8;
    const bf16 *Kw = Ks + warp * 16 * P, *Vw = Vs + warp * 16 * P;
    for (int qt = qt0; qt < nq; qt++) {
        int buf = (qt - qt0) & 1;
        if (qt + 1 < nq) {
            load_q(qt + 1, buf ^ 1);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const bf16 *Qb = Qs + buf * 64 * P, *dOb = dOs + buf * 64 * P;
        const float *Lb = Ls + buf * 64, *Db = Ds + buf * 64;
        float st[8][4], dp[8][4];
        mma_abt<D, P>(st, Kw, Qb, lane);  /* S^T: keys x queries */
        mma_abt<D, P>(dp, Vw, dOb, lane); /* dP^T */
        int q0 = qt * 64;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int c = nt * 8 + 2 * tq + e, qi = q0 + c;
                float L = Lb[c], Dd = Db[c];
                bool qok = qi < len;
                float p0 = (qok && kr0 < len && kr0 <= qi) ? exp2f(st[nt][e] * sl - L) : 0.0f;
                float p1 = (qok && kr1 < len && kr1 <= qi) ? exp2f(st[nt][2 + e] * sl - L) : 0.0f;
                st[nt][e] = p0;
                st[nt][2 + e] = p1;
                dp[nt][e] = p0 * (dp[nt][e] - Dd);
                dp[nt][2 + e] = p1 * (dp[nt][2 + e] - Dd);
            }
        mma_xb<D, P>(dv, st, dOb, lane); /* dv += P^T dO */
        mma_xb<D, P>(dk, dp, Qb, lane);  /* dk += dS^T Q */
        __syncthreads();
    }
    if (kr0 < len) {
        int64_t base = ((int64_t)(start + kr0) * KV + g) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                atomicAdd(dkacc + base + i * 8 + 2 * tq + e, dk[i][e] * scale);
                atomicAdd(dvacc + base + i * 8 + 2 * tq + e, dv[i][e]);
            }
    }
    if (kr1 < len) {
        int64_t base = ((int64_t)(start + kr1) * KV + g) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                atomicAdd(dkacc + base + i * 8 + 2 * tq + e, dk[i][2 + e] * scale);
                atomicAdd(dvacc + base + i * 8 + 2 * tq + e, dv[i][2 + e]);
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
/* decode / chunked prefill over the KV cache: block = (query i, kv head g, split s), 4 warps.
 * The group's query heads are the 16 rows of the A operand (rows >= H/KV zero), so one pass
 * over a key tile serves every head of the group on the tensor cores; each warp owns the
 * 32-key tiles w, w + 4, ... of its split, copies them (k and v) into its own shared memory
 * with cp.async and runs S = Q K^T, the online softmax and O += P V like the forward; the four
 * warps merge at the end. The CUDA-core kernel in attention.cu spent ~900 FMA-issue slots per
 * lane per 32 keys and reached ~1 TB/s of the cache; here that work is 32 mma.sync.
 * Split-KV (flash-decoding): with nsplit > 1 the slot's T = ceil(len / 32) tiles are dealt
 * out as [T s / nsplit, T (s + 1) / nsplit), read from the device-side lens, so a recorded
 * graph stays right as the lengths grow; it is for few queries over long caches, where one
 * block per (i, g) leaves most SMs idle (cached_splits says when). Each split writes its
 * per-head max (base 2), sum and unnormalised output in fp32 to part; the last split to
 * arrive (counter per (i, g), reset by that block) merges them. Splits with no tile (len
 * shorter than the split count) write max -inf and weight 0. */
/* one warp's 32-key tile of k and v (keys c0 .. c0 + valid - 1 of the slot, kv head g) into
 * Kw, Vw with cp.async; rows past valid are zero-filled. Lane l copies 16 bytes of rows
 * l / (D/8) + j * (32 / (D/8)), so the addresses advance by a constant per j. */
template <int D, int P, int NK>
__device__ __forceinline__ void cached_tile_async(bf16 *Kw, bf16 *Vw, const bf16 *kc, const bf16 *vc, int64_t row0,
                                                  int valid, int KV, int lane)
{
    constexpr int V8 = D / 8, RS = 32 / V8; /* 16-byte pieces per row, rows per pass */
    int r = lane / V8, c = (lane % V8) * 8;
    const int64_t rstride = (int64_t)KV * D;
#pragma unroll
    for (int j = 0; j < NK / RS; j++, r += RS) {
        int64_t off = (row0 + min(r, valid - 1)) * rstride + c;
        cp16(Kw + r * P + c, kc + off, r < valid);
        cp16(Vw + r * P + c, vc + off, r < valid);
    }
    cp_commit();
}

template <int D>
__global__ void __launch_bounds__(128) k_attn_cached_tc(bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                                        const int32_t *slots, const int32_t *lens, int H, int KV,
                                                        int hg, int max_seq, float scale, int nsplit, float *part,
                                                        int *cnt, int n)
{
    constexpr int P = D + 8, NK = 32, OP = D + 8; /* OP: row stride of a parked output */
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw;          /* (16, P) */
    bf16 *Ks = Qs + 16 * P;            /* 4 warps x (NK, P) */
    bf16 *Vs = Ks + 4 * NK * P;        /* 4 warps x (NK, P) */
    float *Ms = (float *)(Vs + 4 * NK * P); /* (4, 16) per-warp row maxima */
    float *Ls = Ms + 64;                    /* (4, 16) per-warp row sums, then merge weights */
    __shared__ int last;
    __shared__ float den_s[16];
    int i = blockIdx.x, g = blockIdx.y, s = blockIdx.z;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
    int len = lens[i];
    int64_t base = (int64_t)slots[i] * max_seq;
    int T = (len + NK - 1) / NK, t0 = 0, t1 = T;
    if (nsplit > 1) {
        t0 = T * s / nsplit;
        t1 = T * (s + 1) / nsplit;
    }
    bf16 *Kw = Ks + warp * NK * P, *Vw = Vs + warp * NK * P;
    /* the first tile's copies go out before q is staged, so the two latencies overlap */
    int t = t0 + warp;
    if (t < t1) cached_tile_async<D, P, NK>(Kw, Vw, kc + (int64_t)g * D, vc + (int64_t)g * D, base + t * NK,
                                            min(NK, len - t * NK), KV, lane);
    const bf16 *qrow = q + ((int64_t)i * H + (int64_t)g * hg) * D;
    if (t0 < t1)
        for (int e = threadIdx.x; e < 16 * (D / 8); e += blockDim.x) {
            int r = e / (D / 8), c = (e % (D / 8)) * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r < hg) v = *(const uint4 *)(qrow + r * D + c);
            *(uint4 *)(Qs + r * P + c) = v;
        }
    __syncthreads();
    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const float sl = scale * LOG2E;
    for (; t < t1; t += 4) {
        int valid = min(NK, len - t * NK);
        cp_wait<0>();
        __syncwarp();
        float sc[NK / 8][4];
        mma_abt<D, P, NK>(sc, Qs, Kw, lane);
#pragma unroll
        for (int nt = 0; nt < NK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                bool ok = nt * 8 + 2 * tq + e < valid;
                sc[nt][e] = ok ? sc[nt][e] * sl : -INFINITY;
                sc[nt][2 + e] = ok ? sc[nt][2 + e] * sl : -INFINITY;
            }
        softmax_step<NK / 8, D / 8>(sc, o, m0, m1, l0, l1);
        mma_xb<D, P, NK, true>(o, sc, Vw, lane);
        __syncwarp(); /* the next tile's copies overwrite Kw, Vw */
        if (t + 4 < t1)
            cached_tile_async<D, P, NK>(Kw, Vw, kc + (int64_t)g * D, vc + (int64_t)g * D, base + (t + 4) * NK,
                                        min(NK, len - (t + 4) * NK), KV, lane);
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    int h0 = gr, h1 = gr + 8;
    if (tq == 0) {
        Ms[warp * 16 + h0] = m0;
        Ls[warp * 16 + h0] = l0;
        Ms[warp * 16 + h1] = m1;
        Ls[warp * 16 + h1] = l1;
    }
    /* Each warp parks its unnormalised output, (16, D) fp32 with rows OP apart (8-byte stores
     * free of bank conflicts), in its own K tile, which it is done with (the loop ended on
     * __syncwarp). Adding them into one buffer with shared-memory float atomics instead (four
     * warps on the same addresses) made the kernel 22.5 us instead of 15.9 at the decode
     * step's 256 queries. */
    float *Ow = (float *)Kw;
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
        *(float2 *)&Ow[h0 * OP + j * 8 + 2 * tq] = make_float2(o[j][0], o[j][1]);
        *(float2 *)&Ow[h1 * OP + j * 8 + 2 * tq] = make_float2(o[j][2], o[j][3]);
    }
    __syncthreads();
    /* per (warp, head) merge weights exp2(m_w - M) (0 for a warp without keys), then the
     * sum of the weighted sums; normalised here unless a split leaves that to the merge */
    if (threadIdx.x < 16) {
        int h = threadIdx.x;
        float M = fmaxf(fmaxf(Ms[h], Ms[16 + h]), fmaxf(Ms[32 + h], Ms[48 + h])), den = 0.0f;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            float a = Ms[w * 16 + h] == -INFINITY ? 0.0f : exp2f(Ms[w * 16 + h] - M);
            den += a * Ls[w * 16 + h];
            Ls[w * 16 + h] = a;
        }
        den_s[h] = den;
        Ms[h] = M;
    }
    __syncthreads();
    bf16 *orow = out + ((int64_t)i * H + (int64_t)g * hg) * D;
    int64_t ig = (int64_t)i * KV + g;
    /* part: outputs (n, KV, nsplit, hg, D), then (max, sum) pairs (n, KV, nsplit, hg, 2) */
    float *po = part + (ig * nsplit + s) * hg * D;
    float *pml = part + (int64_t)n * KV * nsplit * hg * D + (ig * nsplit + s) * hg * 2;
    for (int e = threadIdx.x; e < hg * D; e += blockDim.x) {
        int h = e / D, c = e % D;
        float num = 0.0f;
#pragma unroll
        for (int w = 0; w < 4; w++) num += Ls[w * 16 + h] * ((const float *)(Ks + w * NK * P))[h * OP + c];
        if (nsplit == 1) {
            float den = den_s[h];
            orow[e] = __float2bfloat16(den > 0 ? num / den : 0.0f);
        } else {
            po[e] = num;
            if (c == 0) {
                pml[2 * h] = Ms[h];
                pml[2 * h + 1] = den_s[h];
            }
        }
    }
    if (nsplit == 1) return;
    /* publish the partial before counting in; the last block reads the others' through L2 */
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(&cnt[ig], 1) == nsplit - 1;
        if (last) cnt[ig] = 0; /* every split has arrived: ready for the next launch */
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float *qo = part + ig * nsplit * hg * D;
    const float *qml = part + (int64_t)n * KV * nsplit * hg * D + ig * nsplit * hg * 2;
    for (int e = threadIdx.x; e < hg * D; e += blockDim.x) {
        int h = e / D;
        float M = -INFINITY;
        for (int r = 0; r < nsplit; r++) M = fmaxf(M, __ldcg(qml + (r * hg + h) * 2));
        float den = 0.0f, num = 0.0f;
        for (int r = 0; r < nsplit; r++) {
            float Mr = __ldcg(qml + (r * hg + h) * 2);
            if (Mr == -INFINITY) continue;
            float w = exp2f(Mr - M);
            den += w * __ldcg(qml + (r * hg + h) * 2 + 1);
            num += w * __ldcg(qo + (int64_t)r * hg * D + e);
        }
        orow[e] = __float2bfloat16(den > 0 ? num / den : 0.0f);
    }
}

/* ------------------------------------------------------------------------------------------ */

template <int D>
static aha_status fwd_tc(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q, aha_tensor k, aha_tensor v,
                         aha_tensor cu, int n_seqs, int H, int KV, int max_seqlen, aha_err *err)
{
    constexpr int P = D + 8;
    size_t smem = 5 * 64 * P * 2;
    AHA_TRY(aha__cu_smem(k_attn_fwd_tc<D>, smem, be, "attention", err));
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
    constexpr int P = D + 8;
    cudaStream_t st = aha__cu(be)->stream;
    float scale = 1.0f / sqrtf((float)D);
    size_t smq = 6 * 64 * P * 2;
    AHA_TRY(aha__cu_smem(k_attn_bwd_dq_tc<D>, smq, be, "attention", err));
    dim3 gq((max_seqlen + 63) / 64, H, n_seqs);
    k_attn_bwd_dq_tc<D><<<gq, 128, smq, st>>>((bf16 *)dq.data, (const bf16 *)dout.data, (const bf16 *)q.data,
                                              (const bf16 *)k.data, (const bf16 *)v.data, (const float *)lse.data,
                                              Dv, (const int32_t *)cu.data, H, KV, scale);
    AHA_CU_LAUNCHED();
    aha__cu_prof_seg(be, "attention_bwd: dq kernel", 0);
    size_t smk = 6 * 64 * P * 2 + 4 * 64 * 4;
    AHA_TRY(aha__cu_smem(k_attn_bwd_dkv_tc<D>, smk, be, "attention", err));
    AHA_CU_CHECK(cudaMemsetAsync(dkacc, 0, 2 * nkv * sizeof(float), st));
    dim3 gk((max_seqlen + 63) / 64, H, n_seqs);
    k_attn_bwd_dkv_tc<D><<<gk, 128, smk, st>>>(dkacc, dkacc + nkv, (const bf16 *)dout.data, (const bf16 *)q.data,
                                               (const bf16 *)k.data, (const bf16 *)v.data, (const float *)lse.data,
                                               Dv, (const int32_t *)cu.data, H, KV, scale);
    AHA_CU_LAUNCHED();
    aha__cu_prof_seg(be, "attention_bwd: zero + dk/dv kernel", 0);
    k_dkv_finish<<<aha__blocks(nkv, 256, 8192), 256, 0, st>>>((bf16 *)dk.data, (bf16 *)dv.data, dkacc, dkacc + nkv,
                                                               nkv);
    AHA_CU_LAUNCHED();
    aha__cu_prof_seg(be, "attention_bwd: dk/dv to bf16", 0);
    return AHA_OK;
}

bool aha__cu_attention_tc_ok(aha_dtype dt, int D) { return dt == AHA_DT_BF16 && (D == 64 || D == 128); }

/* Split count for the decode kernel. AHA_CUDA_DECODE_SPLIT=N forces N (1 = one block per
 * (query, kv head), the kernel before split-KV); read at every call, so the tests can sweep it.
 * Otherwise split only when the (query, kv head) blocks alone cannot fill the SMs (few slots,
 * long caches): measured on an H200 at the decode step's shape (256 queries x 2 kv heads,
 * length 384, cache 640) one block per pair took 23.8 us and 2, 3, 4, 8 splits 43, 53, 63,
 * 110 us (the time grows with the block count, as if few blocks were resident per SM), so with
 * n * KV >= SMs there is no split. Below that: about 2 blocks per SM, at least 4 tiles (128
 * keys, one per warp) per split at full cache length, at most 16, and the partials must fit
 * the context's buffer. The choice depends on n, KV and max_seq, never on the lengths, so
 * graphs stay valid. */
static int cached_splits(const aha__cu_ctx *c, int n, int KV, int hg, int D, int max_seq)
{
    int pairs = n * KV, ns = 1;
    if (pairs < c->sm_count) {
        ns = (2 * c->sm_count + pairs - 1) / pairs;
        int by_len = (max_seq + 31) / 32 / 4;
        if (ns > by_len) ns = by_len;
        if (ns > 16) ns = 16;
    }
    const char *e = getenv("AHA_CUDA_DECODE_SPLIT");
    if (e && *e) ns = atoi(e) < 64 ? atoi(e) : 64;
    if (ns < 1) ns = 1;
    if (pairs > c->dec_cnt_n) return 1;
    while (ns > 1 && (size_t)pairs * ns * hg * (D + 2) > c->dec_part_floats) ns--;
    return ns;
}

template <int D>
static aha_status cached_tc(aha_backend *be, aha_tensor out, aha_tensor q, aha_tensor kc, aha_tensor vc,
                            aha_tensor slots, aha_tensor lens, int n, int H, int KV, int max_seq, aha_err *err)
{
    constexpr int P = D + 8, NK = 32;
    aha__cu_ctx *c = aha__cu(be);
    size_t smem = (16 * P + 8 * NK * P) * 2 + 128 * 4;
    static_assert(16 * (D + 8) * 4 <= NK * P * 2, "a warp's output fits its K tile");
    AHA_TRY(aha__cu_smem(k_attn_cached_tc<D>, smem, be, "attention", err));
    int ns = cached_splits(c, n, KV, H / KV, D, max_seq);
    dim3 grid(n, KV, ns);
    k_attn_cached_tc<D><<<grid, 128, smem, c->stream>>>(
        (bf16 *)out.data, (const bf16 *)q.data, (const bf16 *)kc.data, (const bf16 *)vc.data,
        (const int32_t *)slots.data, (const int32_t *)lens.data, H, KV, H / KV, max_seq, 1.0f / sqrtf((float)D), ns,
        c->dec_part, c->dec_cnt, n);
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_attention_cached_tc(aha_backend *be, aha_tensor out, aha_tensor q, aha_tensor kc, aha_tensor vc,
                                       aha_tensor slots, aha_tensor lens, int n, int H, int KV, int D, int max_seq,
                                       aha_err *err)
{
    if (D == 64) return cached_tc<64>(be, out, q, kc, vc, slots, lens, n, H, KV, max_seq, err);
    return cached_tc<128>(be, out, q, kc, vc, slots, lens, n, H, KV, max_seq, err);
}

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
