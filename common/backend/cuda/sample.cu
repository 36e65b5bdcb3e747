/* sample.cu: drawing the next token on the GPU, one block per row of logits (n, V):
 * temperature, then top-k, then top-p over the temperature-scaled distribution (the order and
 * semantics of Hugging Face generate and of model/sample.h), then an exact categorical draw
 * by the Gumbel-max trick: token = argmax over kept i of z_i - log(-log(u_i)). The uniforms
 * come from a counter-based hash of (seed, rng_id, rng_pos, i), so a sequence's draws depend
 * only on its seed, id and position, never on how rows were batched. Greedy (temperature 0)
 * is the argmax, lowest index among ties. The reported logprob is the log-softmax of the RAW
 * logits at the drawn token.
 *
 * Without top-k / top-p (the rollout's usual setting) and for greedy, k_sample_plain below
 * reads the row once and draws by an inverse-CDF walk instead of a per-element race; its
 * comment states the order it walks and why the law stays exact.
 *
 * Top-k and top-p thresholds are found without sorting, by a 4-pass radix select over the
 * order-preserving 32-bit keys of the scaled logits: top-k counts elements per 8-bit digit,
 * top-p sums their (unnormalised) probability mass. Elements equal to a threshold are kept,
 * as transformers' TopK warper does. */
#include "common.cuh"

#define SP_THREADS 1024

__device__ __forceinline__ uint32_t f2key(float f)
{
    uint32_t b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* uniform in (0, 1) with 24 bits */
__device__ __forceinline__ float uniform01(uint64_t base, uint32_t i)
{
    uint64_t h = mix64(base ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull));
    return ((float)(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

/* Radix select from the top over keys of kept elements (key >= lo_key). mode 0: the k-th
 * largest key (count); mode 1: the key tau with mass(> tau) < target <= mass(>= tau), mass
 * of element i = exp(z_i - zmax). Returns the threshold key. */
template <typename T>
__device__ uint32_t radix_select(const T *x, int V, float inv_t, uint32_t lo_key, int mode, float target,
                                 float zmax, unsigned *hc, float *hm)
{
    uint32_t prefix = 0, mask = 0;
    float above = 0.0f; /* count or mass of elements known to be above the prefix */
    __shared__ uint32_t s_digit;
    __shared__ float s_above;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) {
            hc[b] = 0;
            hm[b] = 0.0f;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            float z = aha__ld(x, i) * inv_t;
            uint32_t key = f2key(z);
            if (key < lo_key || (key & mask) != prefix) continue;
            int d = (key >> shift) & 255;
            if (mode == 0)
                atomicAdd(&hc[d], 1u);
            else
                atomicAdd(&hm[d], expf(z - zmax));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float acc = above;
            int d = 255;
            for (; d > 0; d--) {
                float c = mode == 0 ? (float)hc[d] : hm[d];
                if (acc + c >= target) break;
                acc += c;
            }
            s_digit = (uint32_t)d;
            s_above = acc;
        }
        __syncthreads();
        prefix |= s_digit << shift;
        mask |= 255u << shift;
        above = s_above;
        __syncthreads();
    }
    return prefix;
}

/* (max, index) over the warp, every lane gets it; ties go to the lowest index */
__device__ __forceinline__ void warp_argmax(float &m, int &idx)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        if (m2 > m || (m2 == m && i2 < idx)) {
            m = m2;
            idx = i2;
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(SP_THREADS) k_sample(int32_t *tokens, float *logprobs, const T *logits,
                                                       const int32_t *rng_ids, const int32_t *rng_pos,
                                                       int V, float temperature, int top_k, float top_p,
                                                       uint64_t seed)
{
    __shared__ float shf[32];
    __shared__ float shv[32];
    __shared__ int shi[32];
    __shared__ unsigned hc[256];
    __shared__ float hm[256];
    int64_t row = blockIdx.x;
    const T *x = logits + row * V;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;

    /* raw max (also the greedy argmax) and logsumexp */
    float mx = -INFINITY;
    int mi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = aha__ld(x, i);
        if (v > mx) {
            mx = v;
            mi = i;
        }
    }
    warp_argmax(mx, mi);
    if (lane == 0) {
        shv[w] = mx;
        shi[w] = mi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < nw; k++)
            if (shv[k] > shv[0] || (shv[k] == shv[0] && shi[k] < shi[0])) {
                shv[0] = shv[k];
                shi[0] = shi[k];
            }
    }
    __syncthreads();
    float rmax = shv[0];
    int argmax = shi[0];
    float s = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(aha__ld(x, i) - rmax);
    float lse = rmax + logf(aha__block_sum(s, shf));

    int token = argmax;
    if (temperature > 0.0f) {
        float inv_t = 1.0f / temperature;
        float zmax = rmax * inv_t;
        uint32_t lo = 0;
        if (top_k > 0 && top_k < V)
            lo = radix_select(x, V, inv_t, 0u, 0, (float)top_k, zmax, hc, hm);
        if (top_p > 0.0f && top_p < 1.0f) {
            float mass = 0;
            for (int i = threadIdx.x; i < V; i += blockDim.x) {
                float z = aha__ld(x, i) * inv_t;
                if (f2key(z) >= lo) mass += expf(z - zmax);
            }
            mass = aha__block_sum(mass, shf);
            lo = radix_select(x, V, inv_t, lo, 1, top_p * mass, zmax, hc, hm);
        }
        uint64_t base = mix64(seed ^ mix64(((uint64_t)(uint32_t)rng_ids[row] << 32) | (uint32_t)rng_pos[row]));
        float best = -INFINITY;
        int bi = 0x7fffffff;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            float z = aha__ld(x, i) * inv_t;
            if (f2key(z) < lo) continue;
            float key = z - logf(-logf(uniform01(base, (uint32_t)i)));
            if (key > best || (key == best && i < bi)) {
                best = key;
                bi = i;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float b2 = __shfl_xor_sync(0xffffffffu, best, o);
            int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            if (b2 > best || (b2 == best && i2 < bi)) {
                best = b2;
                bi = i2;
            }
        }
        __syncthreads();
        if (lane == 0) {
            shv[w] = best;
            shi[w] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int k = 1; k < nw; k++)
                if (shv[k] > shv[0] || (shv[k] == shv[0] && shi[k] < shi[0])) {
                    shv[0] = shv[k];
                    shi[0] = shi[k];
                }
        }
        __syncthreads();
        token = shi[0];
    }
    if (threadIdx.x == 0) {
        tokens[row] = token;
        logprobs[row] = aha__ld(x, token) - lse;
    }
}

/* ---- the plain draw: temperature only (no top-k / top-p), or greedy --------------------------
 * The rollout's usual setting (temperature 1, nothing filtered) needs no threshold, so the row
 * is streamed ONCE at 8 elements (one 16-byte bf16 load) per step, with one exponential per
 * element (two when T != 1) and no per-element randomness: the draw is an inverse-CDF walk over
 * a fixed order of the vocabulary, and any fixed order gives the exact categorical law.
 *
 * The order: the row is cut into chunks of 8 elements; chunk c belongs to thread c % PL_THREADS
 * (the thread that streams it). Threads come in index order; a thread's chunks j = 0, 1, ...
 * (c = t + PL_THREADS * j) are ordered lane-major, j = 0, 32, 64, ..., then 1, 33, ..., then
 * elements in index order inside a chunk. The walk:
 *   1. each thread keeps a running raw max m, s = sum exp(x - m) (the raw logsumexp, for the
 *      reported logprob), w = sum exp((x - m) / T) (the sampling weights; w = s when T = 1) and
 *      its argmax (the greedy token, lowest index among ties);
 *   2. the block rescales to the row max M and scans the thread weights in double;
 *      u * total, with u a 53-bit uniform from a hash of (seed, rng_id, rng_pos), picks the owning
 *      thread t and the fraction f of the way through its weight;
 *   3. warp 0 recomputes exp((x - M) / T) over t's ~300 elements (from L2), scans them by lane
 *      and the owning lane walks its own ~16 elements to the token at f of t's recomputed weight.
 * Step 3 recomputes weights rather than reusing step 1's, so thread and element choices are
 * each normalised by the sums they were drawn from; the law is exact up to float rounding of
 * the weights (~1e-6 relative per token, none at the 2^-24 granularity a float cumulative sum
 * would impose on small tokens). The chunk order does not depend on the row's alignment: a
 * misaligned row or V % 8 != 0 reads the same chunks with scalar loads (elements past V are
 * -inf) and the explicitly rounded arithmetic (__fadd_rn ..., never contracted) gives the same
 * bits, so draws depend on (seed, rng_id, rng_pos) and the logits only. At the decode step of
 * 256 bf16 rows of V = 151,936 (H200, ncu) this takes 36.5 us, DRAM at 46% of peak; the
 * exponential race that was here before (an __expf, two hashes, logf and a division per
 * element) took 172 us. */
#define PL_THREADS 512
#define PL_WARPS (PL_THREADS / 32)
#define PL_L2E 1.4426950408889634f
enum { PL_GREEDY = 0, PL_T1 = 1, PL_TEMP = 2 };

/* 2^x, ~2 ulp, 0 for -inf, flushes subnormal results (weights below 1e-38 of the max) */
__device__ __forceinline__ float pl_ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* chunk c of a row (elements [8c, 8c + 8)); elements past V read as -inf */
template <typename T>
__device__ __forceinline__ void pl_load(const T *x, int c, int V, bool vec, float *f)
{
    if (vec) {
        aha__ld8(x + (int64_t)c * 8, f);
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) f[e] = c * 8 + e < V ? aha__ld(x, c * 8 + e) : -INFINITY;
}

/* sum of the 8 exponentials 2^((f - m) * k), as a fixed tree */
__device__ __forceinline__ float pl_sum8(const float *f, float m, float k)
{
    float e[8];
#pragma unroll
    for (int i = 0; i < 8; i++) e[i] = pl_ex2(__fmul_rn(__fsub_rn(f[i], m), k));
    return __fadd_rn(__fadd_rn(__fadd_rn(e[0], e[1]), __fadd_rn(e[2], e[3])),
                     __fadd_rn(__fadd_rn(e[4], e[5]), __fadd_rn(e[6], e[7])));
}

struct pl_state {
    float m, s, w; /* running raw max, sum exp(x - m), sum exp((x - m) / T) */
    int am;        /* argmax, lowest index among ties */
};

/* step 1 for one chunk; k2 = log2(e) / T */
template <int MODE> __device__ __forceinline__ void pl_chunk(pl_state &st, const float *f, int c, float k2)
{
    float cm = f[0];
    int ci = 0;
#pragma unroll
    for (int e = 1; e < 8; e++)
        if (f[e] > cm) {
            cm = f[e];
            ci = e;
        }
    if (cm > st.m) {
        float d = __fsub_rn(st.m, cm); /* -inf while nothing finite was seen: rescales 0 to 0 */
        st.s = __fmul_rn(st.s, pl_ex2(__fmul_rn(d, PL_L2E)));
        if (MODE == PL_TEMP) st.w = __fmul_rn(st.w, pl_ex2(__fmul_rn(d, k2)));
        st.m = cm;
        st.am = c * 8 + ci;
    }
    if (st.m == -INFINITY) return; /* exp(-inf - -inf) would be NaN */
    st.s = __fadd_rn(st.s, pl_sum8(f, st.m, PL_L2E));
    if (MODE == PL_TEMP) st.w = __fadd_rn(st.w, pl_sum8(f, st.m, k2));
}

/* inclusive prefix sum over the warp in double, made non-decreasing (a max-scan after the
 * tree sums, which may round a later prefix an ulp below an earlier one), so intervals
 * [previous lane's prefix, own prefix) tile [0, total) in lane order */
__device__ __forceinline__ double pl_warp_scan(double v, int lane)
{
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double y = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += y;
    }
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double y = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v = fmax(v, y);
    }
    return v;
}

template <typename T, int MODE>
__global__ void __launch_bounds__(PL_THREADS, 2)
    k_sample_plain(int32_t *tokens, float *logprobs, const T *logits, const int32_t *rng_ids,
                   const int32_t *rng_pos, int V, float inv_t, int vec, uint64_t seed)
{
    __shared__ float sh_m[PL_WARPS], sh_f32[32];
    __shared__ int sh_am[PL_WARPS], sh_tok;
    __shared__ double sh_w[PL_WARPS], sh_frac;
    int64_t row = blockIdx.x;
    const T *x = logits + row * V;
    int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
    int nc = (V + 7) / 8; /* chunks */
    float k2 = MODE == PL_TEMP ? inv_t * PL_L2E : PL_L2E;

    /* 1. stream the row: four chunks in flight per thread */
    pl_state st = {-INFINITY, 0.0f, 0.0f, 0x7fffffff};
    int c = tid;
    if (vec)
        for (; c + 3 * PL_THREADS < nc; c += 4 * PL_THREADS) {
            float f[4][8];
#pragma unroll
            for (int k = 0; k < 4; k++) aha__ld8(x + (int64_t)(c + k * PL_THREADS) * 8, f[k]);
#pragma unroll
            for (int k = 0; k < 4; k++) pl_chunk<MODE>(st, f[k], c + k * PL_THREADS, k2);
        }
    for (; c < nc; c += PL_THREADS) {
        float f[8];
        pl_load(x, c, V, vec, f);
        pl_chunk<MODE>(st, f, c, k2);
    }

    /* 2. row max and argmax, raw logsumexp */
    float m = st.m;
    int am = st.am;
    warp_argmax(m, am);
    if (lane == 0) {
        sh_m[wid] = m;
        sh_am[wid] = am;
    }
    __syncthreads();
    float M = sh_m[0];
    int amax = sh_am[0];
    for (int k = 1; k < PL_WARPS; k++)
        if (sh_m[k] > M || (sh_m[k] == M && sh_am[k] < amax)) {
            M = sh_m[k];
            amax = sh_am[k];
        }
    bool live = st.m > -INFINITY; /* then M is finite or +inf too */
    float S = aha__block_sum(live ? st.s * expf(st.m - M) : 0.0f, sh_f32);
    int token = amax;

    if (MODE != PL_GREEDY) {
        /* the owning thread: intervals [excl, incl) of the scanned weights tile [0, total) */
        double wt = 0;
        if (live) wt = MODE == PL_T1 ? (double)(st.s * expf(st.m - M)) : (double)(st.w * expf((st.m - M) * inv_t));
        double inc = pl_warp_scan(wt, lane);
        if (lane == 31) sh_w[wid] = inc;
        __syncthreads();
        double pre = 0, total;
        for (int k = 0; k < wid; k++) pre += sh_w[k];
        total = pre;
        for (int k = wid; k < PL_WARPS; k++) total += sh_w[k];
        double prev = __shfl_up_sync(0xffffffffu, inc, 1);
        double excl = lane ? pre + prev : pre;
        inc = pre + inc;
        uint64_t base = mix64(seed ^ mix64(((uint64_t)(uint32_t)rng_ids[row] << 32) | (uint32_t)rng_pos[row]));
        double target = (double)(base >> 11) * 0x1p-53 * total;
        if (!(target < total)) target = nextafter(total, 0.0);
        int owner = __syncthreads_count(inc <= target);
        if (tid == owner) sh_frac = (target - excl) / (inc - excl);
        if (tid == 0) sh_tok = -1;
        __syncthreads();

        /* 3. warp 0 walks the owner's chunks: lane l takes j = l, l + 32, ... */
        if (total > 0 && wid == 0) {
            int nj = owner < nc ? (nc - owner + PL_THREADS - 1) / PL_THREADS : 0;
            double ls = 0;
            for (int j = lane; j < nj; j += 32) {
                float f[8];
                pl_load(x, owner + j * PL_THREADS, V, vec, f);
#pragma unroll
                for (int e = 0; e < 8; e++) ls += (double)pl_ex2(__fmul_rn(__fsub_rn(f[e], M), k2));
            }
            double li = pl_warp_scan(ls, lane);
            double lx = __shfl_up_sync(0xffffffffu, li, 1), W = __shfl_sync(0xffffffffu, li, 31);
            if (lane == 0) lx = 0;
            double tg = sh_frac * W;
            if (!(tg < W)) tg = nextafter(W, 0.0);
            int ol = __popc(__ballot_sync(0xffffffffu, li <= tg));
            if (W > 0 && lane == ol) {
                /* the same sums in the same order as ls, so the walk ends at ls > r */
                double r = fmin(fmax(tg - lx, 0.0), nextafter(ls, 0.0)), cum = 0;
                for (int j = lane; j < nj && sh_tok < 0; j += 32) {
                    float f[8];
                    pl_load(x, owner + j * PL_THREADS, V, vec, f);
                    for (int e = 0; e < 8; e++) {
                        cum += (double)pl_ex2(__fmul_rn(__fsub_rn(f[e], M), k2));
                        if (cum > r) {
                            sh_tok = (owner + j * PL_THREADS) * 8 + e;
                            break;
                        }
                    }
                }
            }
            __syncwarp();
            if (sh_tok >= 0) token = sh_tok;
        }
    }
    if (tid == 0) {
        if (token < 0 || token >= V) token = 0; /* a row with no finite logit */
        tokens[row] = token;
        logprobs[row] = aha__ld(x, token) - (M + logf(S));
    }
}

aha_status aha__cu_sample(aha_backend *be, aha_tensor tokens, aha_tensor logprobs, aha_tensor logits,
                          aha_tensor rng_ids, aha_tensor rng_pos, int n, int V, float temperature,
                          int top_k, float top_p, uint64_t seed, aha_err *err)
{
    if (!aha__is_float(logits.dt)) return aha__cu_bad_dtype(err, "sample", "logits", logits.dt);
    if (tokens.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "sample", "tokens", tokens.dt);
    if (logprobs.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "sample", "logprobs", logprobs.dt);
    if (rng_ids.dt != AHA_DT_I32 || rng_pos.dt != AHA_DT_I32)
        return aha__cu_bad_dtype(err, "sample", "rng_ids/rng_pos", rng_ids.dt);
    if (!(temperature >= 0.0f) || isinf(temperature))
        return aha_errf(err, AHA_EINVAL, "cuda sample: temperature %g", temperature);
    if (n <= 0 || V <= 0) return AHA_OK;
    bool no_k = top_k <= 0 || top_k >= V, no_p = !(top_p > 0.0f && top_p < 1.0f);
    if (temperature == 0.0f || (no_k && no_p)) {
        /* 16-byte loads need every row 16-byte aligned */
        size_t es = aha_dtype_size(logits.dt);
        int vec = V % 8 == 0 && ((uintptr_t)logits.data % 16) == 0 && (V * es) % 16 == 0;
        float inv_t = temperature > 0.0f ? 1.0f / temperature : 1.0f;
        int mode = temperature == 0.0f ? PL_GREEDY : inv_t == 1.0f ? PL_T1 : PL_TEMP;
        cudaStream_t stream = aha__cu(be)->stream;
        AHA__DISPATCH_FLOAT(logits.dt, T, {
            void (*k)(int32_t *, float *, const T *, const int32_t *, const int32_t *, int, float, int, uint64_t) =
                mode == PL_GREEDY ? k_sample_plain<T, PL_GREEDY>
                : mode == PL_T1   ? k_sample_plain<T, PL_T1>
                                  : k_sample_plain<T, PL_TEMP>;
            k<<<n, PL_THREADS, 0, stream>>>((int32_t *)tokens.data, (float *)logprobs.data, (const T *)logits.data,
                                            (const int32_t *)rng_ids.data, (const int32_t *)rng_pos.data, V, inv_t,
                                            vec, seed);
        });
        AHA_CU_LAUNCHED();
        return AHA_OK;
    }
    AHA__DISPATCH_FLOAT(logits.dt, T, (k_sample<T><<<n, SP_THREADS, 0, aha__cu(be)->stream>>>(
        (int32_t *)tokens.data, (float *)logprobs.data, (const T *)logits.data,
        (const int32_t *)rng_ids.data, (const int32_t *)rng_pos.data, V, temperature, top_k, top_p, seed)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
