/* sample.cu: drawing the next token on the GPU, one block per row of logits (n, V):
 * temperature, then top-k, then top-p over the temperature-scaled distribution (the order and
 * semantics of Hugging Face generate and of model/sample.h), then an exact categorical draw
 * by the Gumbel-max trick: token = argmax over kept i of z_i - log(-log(u_i)). The uniforms
 * come from a counter-based hash of (seed, rng_id, rng_pos, i), so a sequence's draws depend
 * only on its seed, id and position, never on how rows were batched. Greedy (temperature 0)
 * is the argmax, lowest index among ties. The reported logprob is the log-softmax of the RAW
 * logits at the drawn token.
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
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, mx, o);
        int i2 = __shfl_xor_sync(0xffffffffu, mi, o);
        if (m2 > mx || (m2 == mx && i2 < mi)) {
            mx = m2;
            mi = i2;
        }
    }
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
 * The rollout's usual setting (temperature 1, nothing filtered) needs no threshold, so the
 * row is read ONCE: each thread keeps a running raw max m, the sum of exp(x - m) (for the
 * reported logprob), its argmax, and the best of the exponential race
 *   token = argmax_i exp(z_i - zmax) / E_i,  E_i = -log(u_i) ~ Exp(1),  z = x / T,
 * which is the Gumbel-max draw (argmax z_i - log E_i) without its second logarithm; the race
 * ratios are kept relative to the thread's running max and rescaled when it moves, so they
 * stay comparable. Rows are read 8 elements (16 bytes of bf16) at a time. The uniforms are a
 * 32-bit hash of (row key, i): draws depend on (seed, rng_id, rng_pos) only. The general
 * kernel above read the row three times and hashed with 64-bit products (~300 us per step of
 * 256 rows at V = 151,936). */
__device__ __forceinline__ uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

__device__ __forceinline__ void ld8(const bf16 *p, float *o)
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
__device__ __forceinline__ void ld8(const float *p, float *o)
{
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
}

struct plain_state {
    float m, s, r; /* running max, sum exp(x - m), best race ratio (relative to m) */
    int am, bi;    /* argmax, race winner */
};

__device__ __forceinline__ void plain_elem(plain_state &st, float x, int i, float inv_t, bool draw, uint32_t k0,
                                           uint32_t k1)
{
    if (x > st.m) {
        float a = __expf(st.m - x); /* 0 when m = -inf */
        st.s *= a;
        st.r *= inv_t == 1.0f ? a : __expf((st.m - x) * inv_t);
        st.m = x;
        st.am = i;
    }
    float e = __expf(x - st.m);
    st.s += e;
    if (draw) {
        float p = inv_t == 1.0f ? e : __expf((x - st.m) * inv_t);
        uint32_t h = fmix32(fmix32((uint32_t)i * 0x9e3779b9u + k0) ^ k1);
        float u = ((float)(h >> 8) + 0.5f) * (1.0f / 16777216.0f);
        float r = p / -logf(u);
        if (r > st.r) {
            st.r = r;
            st.bi = i;
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(SP_THREADS) k_sample_plain(int32_t *tokens, float *logprobs, const T *logits,
                                                             const int32_t *rng_ids, const int32_t *rng_pos, int V,
                                                             float inv_t, int draw, int vec, uint64_t seed)
{
    __shared__ float sm_m[32], sm_s[32], sm_r[32];
    __shared__ int sm_am[32], sm_bi[32];
    int64_t row = blockIdx.x;
    const T *x = logits + row * V;
    uint64_t base = mix64(seed ^ mix64(((uint64_t)(uint32_t)rng_ids[row] << 32) | (uint32_t)rng_pos[row]));
    uint32_t k0 = (uint32_t)base, k1 = (uint32_t)(base >> 32);
    plain_state st = {-INFINITY, 0.0f, 0.0f, 0x7fffffff, 0x7fffffff};
    int v8 = vec ? V / 8 : 0;
    for (int gi = threadIdx.x; gi < v8; gi += blockDim.x) {
        float f[8];
        ld8(x + (int64_t)gi * 8, f);
#pragma unroll
        for (int e = 0; e < 8; e++) plain_elem(st, f[e], gi * 8 + e, inv_t, draw, k0, k1);
    }
    for (int i = v8 * 8 + threadIdx.x; i < V; i += blockDim.x) plain_elem(st, aha__ld(x, i), i, inv_t, draw, k0, k1);
    /* merge (m, s, r, am, bi) over the warp, then over the warps */
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int pass = 0; pass < 2; pass++) {
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, st.m, o), s2 = __shfl_xor_sync(0xffffffffu, st.s, o),
                  r2 = __shfl_xor_sync(0xffffffffu, st.r, o);
            int am2 = __shfl_xor_sync(0xffffffffu, st.am, o), bi2 = __shfl_xor_sync(0xffffffffu, st.bi, o);
            float M = fmaxf(st.m, m2);
            float a1 = st.m == -INFINITY ? 0.0f : __expf(st.m - M), a2 = m2 == -INFINITY ? 0.0f : __expf(m2 - M);
            float b1 = a1, b2 = a2;
            if (inv_t != 1.0f) {
                b1 = st.m == -INFINITY ? 0.0f : __expf((st.m - M) * inv_t);
                b2 = m2 == -INFINITY ? 0.0f : __expf((m2 - M) * inv_t);
            }
            float r1 = st.r * b1, rr2 = r2 * b2;
            int am = (m2 > st.m || (m2 == st.m && am2 < st.am)) ? am2 : st.am;
            if (rr2 > r1 || (rr2 == r1 && bi2 < st.bi)) {
                st.r = rr2;
                st.bi = bi2;
            } else {
                st.r = r1;
            }
            st.s = st.s * a1 + s2 * a2;
            st.m = M;
            st.am = am;
        }
        if (pass == 1) break;
        if (lane == 0) {
            sm_m[w] = st.m;
            sm_s[w] = st.s;
            sm_r[w] = st.r;
            sm_am[w] = st.am;
            sm_bi[w] = st.bi;
        }
        __syncthreads();
        if (lane < nw) {
            st.m = sm_m[lane];
            st.s = sm_s[lane];
            st.r = sm_r[lane];
            st.am = sm_am[lane];
            st.bi = sm_bi[lane];
        } else {
            st = {-INFINITY, 0.0f, 0.0f, 0x7fffffff, 0x7fffffff};
        }
    }
    if (threadIdx.x == 0) {
        int token = draw && st.bi < V ? st.bi : st.am;
        float lse = st.m + logf(st.s);
        tokens[row] = token;
        logprobs[row] = aha__ld(x, token) - lse;
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
        AHA__DISPATCH_FLOAT(logits.dt, T, (k_sample_plain<T><<<n, 512, 0, aha__cu(be)->stream>>>(
            (int32_t *)tokens.data, (float *)logprobs.data, (const T *)logits.data, (const int32_t *)rng_ids.data,
            (const int32_t *)rng_pos.data, V, inv_t, temperature > 0.0f, vec, seed)));
        AHA_CU_LAUNCHED();
        return AHA_OK;
    }
    AHA__DISPATCH_FLOAT(logits.dt, T, (k_sample<T><<<n, SP_THREADS, 0, aha__cu(be)->stream>>>(
        (int32_t *)tokens.data, (float *)logprobs.data, (const T *)logits.data,
        (const int32_t *)rng_ids.data, (const int32_t *)rng_pos.data, V, temperature, top_k, top_p, seed)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
