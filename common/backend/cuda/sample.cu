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
    AHA__DISPATCH_FLOAT(logits.dt, T, (k_sample<T><<<n, SP_THREADS, 0, aha__cu(be)->stream>>>(
        (int32_t *)tokens.data, (float *)logprobs.data, (const T *)logits.data,
        (const int32_t *)rng_ids.data, (const int32_t *)rng_pos.data, V, temperature, top_k, top_p, seed)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
