/* attention.cu: causal GQA attention over packed ragged sequences (cu_seqlens), tiled in the
 * manner of FlashAttention-2 so that no (T, T) matrix is ever stored, and attention over the
 * KV cache for decode and chunked prefill.
 *
 * Forward: a block owns 64 query rows of one head of one sequence (16 per warp) and walks the
 * key tiles up to the diagonal with an online softmax (running max m and sum l per row, in
 * base 2: scores are pre-multiplied by scale * log2(e)). lse (N, H) = natural logsumexp of
 * the scaled scores, saved for the backward.
 * Backward: D_i = dout_i . out_i first; then two kernels that each recompute P = exp(S - lse):
 * one per query tile accumulates dq (lanes over keys for the dots, lanes over the head dim for
 * the sums), one per key tile accumulates dk, dv over every query head of its GQA group and
 * every query tile at or below the diagonal. No atomics: each output row has one owner.
 * All arithmetic is fp32 on CUDA cores; q, k, v, out are BF16 (or F32). Head dims 16, 32, 64
 * and 128 are instantiated. BF16 with head dim 64 or 128 goes to the tensor-core kernels of
 * attention_tc.cu instead; these remain for the other shapes and as their cross-check.
 *
 * Cached attention: a block owns one query and one KV head (the H/KV query heads of the group
 * share each key read); its four warps walk disjoint 32-key tiles of the slot's cache with
 * their own online softmax and merge at the end. Cache layout per layer (slots, max_seq, KV, D). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* ---- shared tile loads: rows [r0, r0 + rows) of a (N, heads, D) tensor at head h, zero
 * beyond `valid`, into fp32 shared memory with row pitch P ---- */
template <int D, int P, typename T>
__device__ __forceinline__ void load_tile(float *dst, const T *src, int64_t base_row, int rows,
                                          int valid, int heads, int h, float mul)
{
    for (int i = threadIdx.x; i < rows * D; i += blockDim.x) {
        int r = i / D, d = i % D;
        float v = 0.0f;
        if (r < valid) v = aha__ld(src, ((base_row + r) * heads + h) * (int64_t)D + d) * mul;
        dst[r * P + d] = v;
    }
}

/* ---- per-warp pieces of the tiled kernels: a warp owns RPW rows of its tile, and a lane holds
 * dims lane, lane + 32, ... (DPL = (D + 31) / 32 of them, zero past D) of each row ---- */

__device__ __forceinline__ float dot4(float4 a, float4 b)
{
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

/* The backward's two score products at once, for the warp's RPW rows of Wa and Wb against rows
 * lane and lane + 32 of La and Lb (all four (rows, P) in shared memory):
 * sa[r][c] = Wa[r] . La[lane + 32 c] and sb[r][c] = Wb[r] . Lb[lane + 32 c]. */
template <int D, int P, int RPW>
__device__ __forceinline__ void dots_2x2(float (&sa)[RPW][2], float (&sb)[RPW][2], const float *Wa, const float *Wb,
                                         const float *La, const float *Lb, int lane)
{
#pragma unroll
    for (int r = 0; r < RPW; r++) sa[r][0] = sa[r][1] = sb[r][0] = sb[r][1] = 0.0f;
#pragma unroll 2
    for (int d = 0; d < D; d += 4) {
        float4 la0 = *(const float4 *)&La[lane * P + d];
        float4 la1 = *(const float4 *)&La[(lane + 32) * P + d];
        float4 lb0 = *(const float4 *)&Lb[lane * P + d];
        float4 lb1 = *(const float4 *)&Lb[(lane + 32) * P + d];
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            float4 wa = *(const float4 *)&Wa[r * P + d];
            float4 wb = *(const float4 *)&Wb[r * P + d];
            sa[r][0] += dot4(wa, la0);
            sa[r][1] += dot4(wa, la1);
            sb[r][0] += dot4(wb, lb0);
            sb[r][1] += dot4(wb, lb1);
        }
    }
}

/* the dims of one fp32 row (shared memory) that this lane owns */
template <int D>
__device__ __forceinline__ void row_lanes(float (&x)[(D + 31) / 32], const float *row, int lane)
{
#pragma unroll
    for (int i = 0; i < (D + 31) / 32; i++) x[i] = (lane + 32 * i < D) ? row[lane + 32 * i] : 0.0f;
}

/* acc[r] += sum_j W[r][j] * X[j] for the warp's RPW rows: W (RPW, N) per-warp weights, X (N, P)
 * the tile in shared memory */
template <int D, int P, int RPW, int N>
__device__ __forceinline__ void acc_rows(float (&acc)[RPW][(D + 31) / 32], const float *W, const float *X, int lane)
{
    for (int j = 0; j < N; j++) {
        float x[(D + 31) / 32];
        row_lanes<D>(x, X + j * P, lane);
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            float w = W[r * N + j];
#pragma unroll
            for (int i = 0; i < (D + 31) / 32; i++) acc[r][i] += w * x[i];
        }
    }
}

/* elements off + d of dst = a[d] * mul for the dims d this lane owns */
template <int D, typename T>
__device__ __forceinline__ void store_lanes(T *dst, int64_t off, const float (&a)[(D + 31) / 32], float mul, int lane)
{
#pragma unroll
    for (int i = 0; i < (D + 31) / 32; i++)
        if (lane + 32 * i < D) aha__st(dst, off + lane + 32 * i, a[i] * mul);
}

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                     */

template <int D, typename T>
__global__ void __launch_bounds__(128) k_attn_fwd(T *out, float *lse, const T *q, const T *k,
                                                  const T *v, const int32_t *cu, int H, int KV,
                                                  float scale)
{
    constexpr int BQ = 64, BK = 64, RPW = 16, P = D + 4, DPL = (D + 31) / 32;
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm;               /* (BQ, P) */
    float *Ks = Qs + BQ * P;      /* (BK, P) */
    float *Vs = Ks + BK * P;      /* (BK, P) */
    float *Ps = Vs + BK * P;      /* (4 warps, RPW, BK) */
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int q0 = blockIdx.x * BQ;
    if (q0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int qvalid = min(BQ, len - q0);
    load_tile<D, P>(Qs, q, (int64_t)start + q0, BQ, qvalid, H, h, scale * LOG2E);

    float m[RPW], l[RPW], o[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) o[r][i] = 0.0f;
    }
    float *Pw = Ps + warp * RPW * BK;
    int kend = min(len, q0 + BQ); /* keys past the last query row are masked for all rows */
    for (int k0 = 0; k0 < kend; k0 += BK) {
        __syncthreads();
        int kvalid = min(BK, len - k0);
        load_tile<D, P>(Ks, k, (int64_t)start + k0, BK, kvalid, KV, g, 1.0f);
        load_tile<D, P>(Vs, v, (int64_t)start + k0, BK, kvalid, KV, g, 1.0f);
        __syncthreads();
        float sc[RPW][2];
#pragma unroll
        for (int r = 0; r < RPW; r++) sc[r][0] = sc[r][1] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; d += 4) {
            float4 ka = *(const float4 *)&Ks[lane * P + d];
            float4 kb = *(const float4 *)&Ks[(lane + 32) * P + d];
#pragma unroll
            for (int r = 0; r < RPW; r++) {
                float4 qv = *(const float4 *)&Qs[(warp * RPW + r) * P + d];
                sc[r][0] += dot4(qv, ka);
                sc[r][1] += dot4(qv, kb);
            }
        }
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            int qi = q0 + warp * RPW + r;
            int ka = k0 + lane, kb = k0 + lane + 32;
            float s0 = (ka <= qi && ka < len) ? sc[r][0] : -INFINITY;
            float s1 = (kb <= qi && kb < len) ? sc[r][1] : -INFINITY;
            float mx = aha__warp_max(fmaxf(s0, s1));
            float mn = fmaxf(m[r], mx);
            float p0 = 0.0f, p1 = 0.0f, alpha = 1.0f;
            if (mn != -INFINITY) {
                p0 = exp2f(s0 - mn);
                p1 = exp2f(s1 - mn);
                alpha = exp2f(m[r] - mn); /* m = -inf gives 0: nothing accumulated yet */
            }
            l[r] = l[r] * alpha + aha__warp_sum(p0 + p1);
            m[r] = mn;
#pragma unroll
            for (int i = 0; i < DPL; i++) o[r][i] *= alpha;
            Pw[r * BK + lane] = p0;
            Pw[r * BK + lane + 32] = p1;
        }
        __syncwarp();
        acc_rows<D, P, RPW, BK>(o, Pw, Vs, lane);
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        int qi = q0 + warp * RPW + r;
        if (qi >= len) continue;
        int64_t row = (int64_t)start + qi;
        float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        store_lanes<D>(out, (row * H + h) * D, o[r], inv, lane);
        if (lane == 0) lse[row * H + h] = (m[r] + log2f(l[r])) * LN2;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* backward                                                                                    */

/* Dv (N, H) = sum_d dout * out */
template <typename T>
__global__ void k_attn_dvec(float *Dv, const T *dout, const T *out, int64_t NH, int D)
{
    int lane = threadIdx.x & 31;
    for (int64_t r = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); r < NH;
         r += (int64_t)gridDim.x * (blockDim.x >> 5)) {
        float s = 0;
        for (int d = lane; d < D; d += 32) s += aha__ld(dout, r * D + d) * aha__ld(out, r * D + d);
        s = aha__warp_sum(s);
        if (lane == 0) Dv[r] = s;
    }
}

/* dq: block = 64 query rows of head h */
template <int D, typename T>
__global__ void __launch_bounds__(128) k_attn_bwd_dq(T *dq, const T *dout, const T *q, const T *k,
                                                     const T *v, const float *lse, const float *Dv,
                                                     const int32_t *cu, int H, int KV, float scale)
{
    constexpr int BQ = 64, BK = 64, RPW = 16, P = D + 4, DPL = (D + 31) / 32;
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm;            /* (BQ, P) */
    float *dOs = Qs + BQ * P;  /* (BQ, P) */
    float *Ks = dOs + BQ * P;  /* (BK, P) */
    float *Vs = Ks + BK * P;   /* (BK, P) */
    float *dSs = Vs + BK * P;  /* (4, RPW, BK) */
    int s = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int start = cu[s], len = cu[s + 1] - start;
    int q0 = blockIdx.x * BQ;
    if (q0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int qvalid = min(BQ, len - q0);
    load_tile<D, P>(Qs, q, (int64_t)start + q0, BQ, qvalid, H, h, scale);
    load_tile<D, P>(dOs, dout, (int64_t)start + q0, BQ, qvalid, H, h, 1.0f);
    float lr[RPW], dr[RPW], acc[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        int qi = q0 + warp * RPW + r;
        int64_t row = (int64_t)start + min(qi, len - 1);
        lr[r] = lse[row * H + h];
        dr[r] = Dv[row * H + h];
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[r][i] = 0.0f;
    }
    float *dSw = dSs + warp * RPW * BK;
    int kend = min(len, q0 + BQ);
    for (int k0 = 0; k0 < kend; k0 += BK) {
        __syncthreads();
        int kvalid = min(BK, len - k0);
        load_tile<D, P>(Ks, k, (int64_t)start + k0, BK, kvalid, KV, g, 1.0f);
        load_tile<D, P>(Vs, v, (int64_t)start + k0, BK, kvalid, KV, g, 1.0f);
        __syncthreads();
        /* lanes over keys: sc = q . k, dp = dout . v */
        float sc[RPW][2], dp[RPW][2];
        dots_2x2<D, P, RPW>(sc, dp, Qs + warp * RPW * P, dOs + warp * RPW * P, Ks, Vs, lane);
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            int qi = q0 + warp * RPW + r;
            int ka = k0 + lane, kb = k0 + lane + 32;
            bool ok = qi < len;
            float p0 = (ok && ka <= qi) ? expf(sc[r][0] - lr[r]) : 0.0f;
            float p1 = (ok && kb <= qi) ? expf(sc[r][1] - lr[r]) : 0.0f;
            dSw[r * BK + lane] = p0 * (dp[r][0] - dr[r]);
            dSw[r * BK + lane + 32] = p1 * (dp[r][1] - dr[r]);
        }
        __syncwarp();
        acc_rows<D, P, RPW, BK>(acc, dSw, Ks, lane);
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        int qi = q0 + warp * RPW + r;
        if (qi >= len) continue;
        int64_t row = (int64_t)start + qi;
        store_lanes<D>(dq, (row * H + h) * D, acc[r], scale, lane);
    }
}

/* dk, dv: block = 4 * RPW keys of kv head g; loops over the group's query heads and the query
 * tiles at or after the key tile */
template <int D, int RPW, typename T>
__global__ void __launch_bounds__(128) k_attn_bwd_dkv(T *dk, T *dv, const T *dout, const T *q,
                                                      const T *k, const T *v, const float *lse,
                                                      const float *Dv, const int32_t *cu, int H,
                                                      int KV, float scale)
{
    constexpr int BK = 4 * RPW, BQ = 64, P = D + 4, DPL = (D + 31) / 32;
    extern __shared__ __align__(16) float sm[];
    float *Ks = sm;             /* (BK, P) */
    float *Vs = Ks + BK * P;    /* (BK, P) */
    float *Qs = Vs + BK * P;    /* (BQ, P) */
    float *dOs = Qs + BQ * P;   /* (BQ, P) */
    float *Ls = dOs + BQ * P;   /* (BQ) */
    float *Ds = Ls + BQ;        /* (BQ) */
    float *Ps = Ds + BQ;        /* (4, RPW, BQ) */
    float *dSs = Ps + 4 * RPW * BQ;
    int s = blockIdx.z, g = blockIdx.y, hg = H / KV;
    int start = cu[s], len = cu[s + 1] - start;
    int k0 = blockIdx.x * BK;
    if (k0 >= len) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int kvalid = min(BK, len - k0);
    load_tile<D, P>(Ks, k, (int64_t)start + k0, BK, kvalid, KV, g, scale);
    load_tile<D, P>(Vs, v, (int64_t)start + k0, BK, kvalid, KV, g, 1.0f);
    float adk[RPW][DPL], adv[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int i = 0; i < DPL; i++) adk[r][i] = adv[r][i] = 0.0f;
    float *Pw = Ps + warp * RPW * BQ, *dSw = dSs + warp * RPW * BQ;
    int qstart = (k0 / BQ) * BQ;
    for (int hh = 0; hh < hg; hh++) {
        int h = g * hg + hh;
        for (int q0 = qstart; q0 < len; q0 += BQ) {
            __syncthreads();
            int qvalid = min(BQ, len - q0);
            load_tile<D, P>(Qs, q, (int64_t)start + q0, BQ, qvalid, H, h, 1.0f);
            load_tile<D, P>(dOs, dout, (int64_t)start + q0, BQ, qvalid, H, h, 1.0f);
            for (int i = threadIdx.x; i < BQ; i += blockDim.x) {
                int64_t row = (int64_t)start + min(q0 + i, len - 1);
                Ls[i] = lse[row * H + h];
                Ds[i] = Dv[row * H + h];
            }
            __syncthreads();
            /* lanes over queries: sc = k . q, dp = v . dout */
            float sc[RPW][2], dp[RPW][2];
            dots_2x2<D, P, RPW>(sc, dp, Ks + warp * RPW * P, Vs + warp * RPW * P, Qs, dOs, lane);
            int qa_i = q0 + lane, qb_i = q0 + lane + 32;
#pragma unroll
            for (int r = 0; r < RPW; r++) {
                int kj = k0 + warp * RPW + r;
                bool kok = kj < len;
                float p0 = (kok && qa_i < len && kj <= qa_i) ? expf(sc[r][0] - Ls[lane]) : 0.0f;
                float p1 = (kok && qb_i < len && kj <= qb_i) ? expf(sc[r][1] - Ls[lane + 32]) : 0.0f;
                Pw[r * BQ + lane] = p0;
                Pw[r * BQ + lane + 32] = p1;
                dSw[r * BQ + lane] = p0 * (dp[r][0] - Ds[lane]);
                dSw[r * BQ + lane + 32] = p1 * (dp[r][1] - Ds[lane + 32]);
            }
            __syncwarp();
            for (int j = 0; j < BQ; j++) {
                float qq[DPL], oo[DPL];
                row_lanes<D>(qq, Qs + j * P, lane);
                row_lanes<D>(oo, dOs + j * P, lane);
#pragma unroll
                for (int r = 0; r < RPW; r++) {
                    float p = Pw[r * BQ + j], ds = dSw[r * BQ + j];
#pragma unroll
                    for (int i = 0; i < DPL; i++) {
                        adv[r][i] += p * oo[i];
                        adk[r][i] += ds * qq[i];
                    }
                }
            }
            __syncwarp();
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        int kj = k0 + warp * RPW + r;
        if (kj >= len) continue;
        int64_t row = (int64_t)start + kj;
#pragma unroll
        for (int i = 0; i < DPL; i++)
            if (lane + 32 * i < D) {
                aha__st(dk, (row * KV + g) * D + lane + 32 * i, adk[r][i] * scale);
                aha__st(dv, (row * KV + g) * D + lane + 32 * i, adv[r][i]);
            }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* KV cache                                                                                    */

template <typename T>
__global__ void k_kv_store(T *kc, T *vc, const T *k, const T *v, const int32_t *slots,
                           const int32_t *pos, int n, int KV, int D, int max_seq)
{
    int64_t per = (int64_t)KV * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * per;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / per, e = i % per;
        int64_t dst = ((int64_t)slots[r] * max_seq + pos[r]) * per + e;
        kc[dst] = k[i];
        vc[dst] = v[i];
    }
}

#define CA_CHUNK 128
#define CA_MAXG 16

/* block = (query i, kv head g), 4 warps that work independently until the end: warp w takes
 * the 32-key tiles w, w + 4, ... of the slot. Per tile, lane j scores key j against every
 * query head of the group (16-byte loads of its k row; the queries are in shared memory),
 * the warp keeps a running max per head (the sums stay per lane until the end), and the
 * v rows are read as DV = D / 8 lanes x 8 dims per row, 32 / DV rows at a time, every load of
 * the tile issued before its use. Only at the end are the lanes' partial sums reduced and
 * the four warps' (max, sum, output) merged in shared memory. No barrier inside the key
 * loop: the previous kernel's per-chunk barriers and one-row-at-a-time v reads held it to
 * ~87 us per layer at 256 slots x ~400 keys, ~5x the cache's streaming time. */
template <int D, int G, typename T>
__global__ void __launch_bounds__(128, G <= 8 ? 4 : 1) k_attn_cached(T *out, const T *q, const T *kc, const T *vc,
                                                     const int32_t *slots, const int32_t *lens,
                                                     int H, int KV, int max_seq, float scale)
{
    constexpr int DV = D / 8, KP = 32 / DV;
    int i = blockIdx.x, g = blockIdx.y, hg = H / KV;
    __shared__ __align__(16) float qs[G * D];
    __shared__ float ps[4][G][32];
    __shared__ float wm[4][G], wl[4][G];
    __shared__ float wo[G * D];
    int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    for (int e = t; e < hg * D; e += 128) {
        qs[e] = aha__ld(q, ((int64_t)i * H + g * hg) * D + e) * scale * LOG2E;
        wo[e] = 0.0f;
    }
    __syncthreads();
    int len = lens[i];
    int64_t slot_base = (int64_t)slots[i] * max_seq;
    float m[G], l[G], o[G][8];
#pragma unroll
    for (int h = 0; h < G; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) o[h][e] = 0.0f;
    }
    int dl = lane % DV, kl = lane / DV;
    for (int c0 = warp * 32; c0 < len; c0 += 128) {
        int j = c0 + lane;
        float sc[G];
#pragma unroll
        for (int h = 0; h < G; h++) sc[h] = 0.0f;
        if (j < len) {
            const T *kr = kc + ((slot_base + j) * KV + g) * D;
#pragma unroll
            for (int d = 0; d < D; d += 8) {
                float kv[8];
                aha__ld8(kr + d, kv);
#pragma unroll
                for (int h = 0; h < G; h++)
                    if (h < hg) {
                        float4 qa = *(const float4 *)(qs + h * D + d), qb = *(const float4 *)(qs + h * D + d + 4);
                        sc[h] += qa.x * kv[0] + qa.y * kv[1] + qa.z * kv[2] + qa.w * kv[3] + qb.x * kv[4] +
                                 qb.y * kv[5] + qb.z * kv[6] + qb.w * kv[7];
                    }
            }
        }
#pragma unroll
        for (int h = 0; h < G; h++)
            if (h < hg) {
                float x = j < len ? sc[h] : -INFINITY;
                float mn = fmaxf(m[h], aha__warp_max(x)); /* finite: key c0 < len */
                float a = exp2f(m[h] - mn), p = exp2f(x - mn);
                l[h] = l[h] * a + p;
                m[h] = mn;
#pragma unroll
                for (int e = 0; e < 8; e++) o[h][e] *= a;
                ps[warp][h][lane] = p;
            }
        __syncwarp();
        int nk = min(32, len - c0);
        /* the v rows in two halves of loads issued together (registers: 4 blocks per SM) */
        constexpr int HALF = DV > 1 ? DV / 2 : 1;
#pragma unroll
        for (int k2 = 0; k2 < DV; k2 += HALF) {
            float vv[HALF][8];
#pragma unroll
            for (int kk = 0; kk < HALF; kk++) {
                int jj = (k2 + kk) * KP + kl;
                if (jj < nk) aha__ld8(vc + ((slot_base + c0 + jj) * KV + g) * D + dl * 8, vv[kk]);
                else
#pragma unroll
                    for (int e = 0; e < 8; e++) vv[kk][e] = 0.0f;
            }
#pragma unroll
            for (int kk = 0; kk < HALF; kk++) {
                int jj = (k2 + kk) * KP + kl;
#pragma unroll
                for (int h = 0; h < G; h++)
                    if (h < hg) {
                        float p = ps[warp][h][jj];
#pragma unroll
                        for (int e = 0; e < 8; e++) o[h][e] += p * vv[kk][e];
                    }
            }
        }
        __syncwarp();
    }
    /* reduce within the warp: sums over all lanes, outputs over the lanes sharing dims */
#pragma unroll
    for (int h = 0; h < G; h++)
        if (h < hg) {
            l[h] = aha__warp_sum(l[h]);
#pragma unroll
            for (int e = 0; e < 8; e++)
#pragma unroll
                for (int off = DV; off < 32; off <<= 1) o[h][e] += __shfl_xor_sync(0xffffffffu, o[h][e], off);
            if (lane == 0) {
                wm[warp][h] = m[h];
                wl[warp][h] = l[h];
            }
        }
    __syncthreads();
    /* merge the four warps into wo (zeroed at the start): a warp without keys has max -inf
     * and weight 0 */
#pragma unroll
    for (int h = 0; h < G; h++)
        if (h < hg && kl == 0) {
            float M = fmaxf(fmaxf(wm[0][h], wm[1][h]), fmaxf(wm[2][h], wm[3][h]));
            float a = m[h] == -INFINITY ? 0.0f : exp2f(m[h] - M);
#pragma unroll
            for (int e = 0; e < 8; e++) atomicAdd(&wo[h * D + dl * 8 + e], a * o[h][e]);
        }
    __syncthreads();
    for (int e = t; e < hg * D; e += 128) {
        int h = e / D;
        float M = fmaxf(fmaxf(wm[0][h], wm[1][h]), fmaxf(wm[2][h], wm[3][h]));
        float den = 0.0f;
#pragma unroll
        for (int w = 0; w < 4; w++) den += wm[w][h] == -INFINITY ? 0.0f : exp2f(wm[w][h] - M) * wl[w][h];
        aha__st(out, ((int64_t)i * H + g * hg) * D + e, den > 0 ? wo[e] / den : 0.0f);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* launchers                                                                                   */

/* the tensor-core kernels copy rows with 16-byte vectors */
static bool aligned16(aha_tensor a, aha_tensor b, aha_tensor c, aha_tensor d)
{
    return (((uintptr_t)a.data | (uintptr_t)b.data | (uintptr_t)c.data | (uintptr_t)d.data) & 15) == 0;
}

static aha_status check_heads(const char *op, int H, int KV, int D, aha_err *err)
{
    if (H <= 0 || KV <= 0 || H % KV)
        return aha_errf(err, AHA_EINVAL, "cuda %s: %d query heads are not a multiple of %d kv heads", op, H, KV);
    if (D != 16 && D != 32 && D != 64 && D != 128)
        return aha_errf(err, AHA_EUNSUPPORTED, "cuda %s: head dim %d (16, 32, 64, 128 are built)", op, D);
    return AHA_OK;
}

template <int D, typename T>
static aha_status attn_fwd(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q, aha_tensor k,
                           aha_tensor v, aha_tensor cu, int n_seqs, int H, int KV, int max_seqlen,
                           aha_err *err)
{
    constexpr int P = D + 4;
    size_t smem = (size_t)(64 * P * 3 + 4 * 16 * 64) * sizeof(float);
    AHA_TRY(aha__cu_smem(k_attn_fwd<D, T>, smem, be, "attention", err));
    dim3 grid((max_seqlen + 63) / 64, H, n_seqs);
    k_attn_fwd<D, T><<<grid, 128, smem, aha__cu(be)->stream>>>(
        (T *)out.data, (float *)lse.data, (const T *)q.data, (const T *)k.data, (const T *)v.data,
        (const int32_t *)cu.data, H, KV, 1.0f / sqrtf((float)D));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_attention_fwd(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q,
                                 aha_tensor k, aha_tensor v, aha_tensor cu_seqlens, int n_seqs,
                                 int N, int H, int KV, int D, int max_seqlen, aha_err *err)
{
    AHA_TRY(check_heads("attention_fwd", H, KV, D, err));
    if (!aha__is_float(q.dt)) return aha__cu_bad_dtype(err, "attention_fwd", "q", q.dt);
    if (k.dt != q.dt || v.dt != q.dt || out.dt != q.dt)
        return aha__cu_bad_dtype(err, "attention_fwd", "k/v/out (must match q)", k.dt);
    if (lse.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "attention_fwd", "lse", lse.dt);
    if (cu_seqlens.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "attention_fwd", "cu_seqlens", cu_seqlens.dt);
    if (n_seqs <= 0 || N <= 0 || max_seqlen <= 0) return AHA_OK;
    if (aha__cu_attention_tc_ok(q.dt, D) && aligned16(q, k, v, out))
        return aha__cu_attention_fwd_tc(be, out, lse, q, k, v, cu_seqlens, n_seqs, H, KV, D, max_seqlen, err);
#define FWD(DD)                                                                                     \
    case DD:                                                                                        \
        AHA__DISPATCH_FLOAT(q.dt, T, return (attn_fwd<DD, T>(be, out, lse, q, k, v, cu_seqlens,   \
                                                              n_seqs, H, KV, max_seqlen, err))); \
        break;
    switch (D) { FWD(16) FWD(32) FWD(64) FWD(128) }
#undef FWD
    return aha__cu_bad_dtype(err, "attention_fwd", "q", q.dt);
}

template <int D, typename T>
static aha_status attn_bwd(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv, aha_tensor dout,
                           aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor out, aha_tensor lse,
                           aha_tensor cu, int n_seqs, int N, int H, int KV, int max_seqlen, aha_err *err)
{
    constexpr int P = D + 4, RPW = D <= 64 ? 16 : 8;
    cudaStream_t st = aha__cu(be)->stream;
    float scale = 1.0f / sqrtf((float)D);
    void *scr;
    /* Dv (N, H), then the tensor-core path's fp32 dk, dv accumulators (2, N, KV, D) */
    AHA_TRY(aha__cu_scratch(be, ((size_t)N * H + 2 * (size_t)N * KV * D) * sizeof(float), &scr, err));
    float *Dv = (float *)scr;
    int64_t NH = (int64_t)N * H;
    k_attn_dvec<T><<<aha__blocks(NH, 8, 65535), 256, 0, st>>>(Dv, (const T *)dout.data,
                                                              (const T *)out.data, NH, D);
    AHA_CU_LAUNCHED();
    aha__cu_prof_seg(be, "attention_bwd: D = rowsum(dO*O)", 0);
    if (aha__cu_attention_tc_ok(q.dt, D) && aligned16(q, k, v, dout) && aligned16(dq, dk, dv, out))
        return aha__cu_attention_bwd_tc(be, dq, dk, dv, dout, q, k, v, lse, Dv, Dv + (size_t)N * H, cu, n_seqs, N, H,
                                        KV, D, max_seqlen, err);

    size_t smem_q = (size_t)(64 * P * 4 + 4 * 16 * 64) * sizeof(float);
    AHA_TRY(aha__cu_smem(k_attn_bwd_dq<D, T>, smem_q, be, "attention", err));
    dim3 gq((max_seqlen + 63) / 64, H, n_seqs);
    k_attn_bwd_dq<D, T><<<gq, 128, smem_q, st>>>((T *)dq.data, (const T *)dout.data, (const T *)q.data,
                                                 (const T *)k.data, (const T *)v.data,
                                                 (const float *)lse.data, Dv,
                                                 (const int32_t *)cu.data, H, KV, scale);
    AHA_CU_LAUNCHED();

    constexpr int BK = 4 * RPW;
    size_t smem_k = (size_t)(BK * P * 2 + 64 * P * 2 + 2 * 64 + 2 * 4 * RPW * 64) * sizeof(float);
    AHA_TRY(aha__cu_smem(k_attn_bwd_dkv<D, RPW, T>, smem_k, be, "attention", err));
    dim3 gk((max_seqlen + BK - 1) / BK, KV, n_seqs);
    k_attn_bwd_dkv<D, RPW, T><<<gk, 128, smem_k, st>>>((T *)dk.data, (T *)dv.data, (const T *)dout.data,
                                                       (const T *)q.data, (const T *)k.data,
                                                       (const T *)v.data, (const float *)lse.data, Dv,
                                                       (const int32_t *)cu.data, H, KV, scale);
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_attention_bwd(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv,
                                 aha_tensor dout, aha_tensor q, aha_tensor k, aha_tensor v,
                                 aha_tensor out, aha_tensor lse, aha_tensor cu_seqlens, int n_seqs,
                                 int N, int H, int KV, int D, int max_seqlen, aha_err *err)
{
    AHA_TRY(check_heads("attention_bwd", H, KV, D, err));
    if (!aha__is_float(q.dt)) return aha__cu_bad_dtype(err, "attention_bwd", "q", q.dt);
    if (k.dt != q.dt || v.dt != q.dt || out.dt != q.dt || dout.dt != q.dt || dq.dt != q.dt ||
        dk.dt != q.dt || dv.dt != q.dt)
        return aha__cu_bad_dtype(err, "attention_bwd", "all of q k v out dout dq dk dv (must match q)", k.dt);
    if (lse.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "attention_bwd", "lse", lse.dt);
    if (cu_seqlens.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "attention_bwd", "cu_seqlens", cu_seqlens.dt);
    if (n_seqs <= 0 || N <= 0 || max_seqlen <= 0) return AHA_OK;
#define BWD(DD)                                                                                     \
    case DD:                                                                                        \
        AHA__DISPATCH_FLOAT(q.dt, T, return (attn_bwd<DD, T>(be, dq, dk, dv, dout, q, k, v, out,  \
                                                              lse, cu_seqlens, n_seqs, N, H, KV, \
                                                              max_seqlen, err)));                \
        break;
    switch (D) { BWD(16) BWD(32) BWD(64) BWD(128) }
#undef BWD
    return aha__cu_bad_dtype(err, "attention_bwd", "q", q.dt);
}

aha_status aha__cu_kv_store(aha_backend *be, aha_tensor kc, aha_tensor vc, aha_tensor k, aha_tensor v,
                            aha_tensor slots, aha_tensor pos, int n, int KV, int D, int max_seq,
                            aha_err *err)
{
    if (!aha__is_float(k.dt)) return aha__cu_bad_dtype(err, "kv_store", "k", k.dt);
    if (v.dt != k.dt || kc.dt != k.dt || vc.dt != k.dt)
        return aha__cu_bad_dtype(err, "kv_store", "v/kc/vc (must match k)", v.dt);
    if (slots.dt != AHA_DT_I32 || pos.dt != AHA_DT_I32)
        return aha__cu_bad_dtype(err, "kv_store", "slots/pos", slots.dt);
    if (n <= 0) return AHA_OK;
    unsigned nb = aha__blocks((int64_t)n * KV * D, 256, 8192);
    AHA__DISPATCH_FLOAT(k.dt, T, (k_kv_store<T><<<nb, 256, 0, aha__cu(be)->stream>>>(
        (T *)kc.data, (T *)vc.data, (const T *)k.data, (const T *)v.data, (const int32_t *)slots.data,
        (const int32_t *)pos.data, n, KV, D, max_seq)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_attention_cached(aha_backend *be, aha_tensor out, aha_tensor q, aha_tensor kc,
                                    aha_tensor vc, aha_tensor slots, aha_tensor lens, int n, int H,
                                    int KV, int D, int max_seq, aha_err *err)
{
    AHA_TRY(check_heads("attention_cached", H, KV, D, err));
    if (H / KV > CA_MAXG)
        return aha_errf(err, AHA_EUNSUPPORTED, "cuda attention_cached: %d query heads per kv head (at most %d)",
                        H / KV, CA_MAXG);
    if (!aha__is_float(q.dt)) return aha__cu_bad_dtype(err, "attention_cached", "q", q.dt);
    if (kc.dt != q.dt || vc.dt != q.dt || out.dt != q.dt)
        return aha__cu_bad_dtype(err, "attention_cached", "kc/vc/out (must match q)", kc.dt);
    if (slots.dt != AHA_DT_I32 || lens.dt != AHA_DT_I32)
        return aha__cu_bad_dtype(err, "attention_cached", "slots/lens", slots.dt);
    if (n <= 0) return AHA_OK;
    /* AHA_CUDA_DECODE_SIMT=1 keeps the CUDA-core kernel (a cross-check of the tensor-core one) */
    static int simt = -1;
    if (simt < 0) {
        const char *e = getenv("AHA_CUDA_DECODE_SIMT");
        simt = e && *e && strcmp(e, "0") != 0;
    }
    if (!simt && aha__cu_attention_tc_ok(q.dt, D) && H / KV <= 16 && aligned16(q, kc, vc, out))
        return aha__cu_attention_cached_tc(be, out, q, kc, vc, slots, lens, n, H, KV, D, max_seq, err);
    dim3 grid(n, KV);
    float scale = 1.0f / sqrtf((float)D);
    cudaStream_t st = aha__cu(be)->stream;
    int hg = H / KV;
#define CACHED_G(DD, GG)                                                                          \
    AHA__DISPATCH_FLOAT(q.dt, T, (k_attn_cached<DD, GG, T><<<grid, 128, 0, st>>>(                 \
        (T *)out.data, (const T *)q.data, (const T *)kc.data, (const T *)vc.data,                 \
        (const int32_t *)slots.data, (const int32_t *)lens.data, H, KV, max_seq, scale)))
#define CACHED(DD)                                                                                \
    case DD:                                                                                      \
        if (hg <= 2) CACHED_G(DD, 2);                                                             \
        else if (hg <= 4) CACHED_G(DD, 4);                                                        \
        else if (hg == 7) CACHED_G(DD, 7);                                                        \
        else if (hg <= 8) CACHED_G(DD, 8);                                                        \
        else CACHED_G(DD, 16);                                                                    \
        break;
    switch (D) { CACHED(16) CACHED(32) CACHED(64) CACHED(128) }
#undef CACHED
#undef CACHED_G
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
