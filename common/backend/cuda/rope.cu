/* rope.cu: rotary position embedding in the rotate-half form of transformers, in place on
 * x (N, nh, D): for i < D/2, angle = pos * theta^(-2i/D),
 *   (x[i], x[i+D/2]) -> (x[i] cos - x[i+D/2] sin, x[i+D/2] cos + x[i] sin).
 * The backward is the inverse rotation (sin negated). rope_qk_store rotates q (N, H, D) and
 * k (N, KV, D) of the same tokens in one launch and, with a KV cache, also writes the rotated
 * k and v (N, KV, D) into kc, vc (slots, max_seq, KV, D) at (slots[t], pos[t]). rope_qkv does
 * the same reading q, k and v from one fused projection's rows (q heads, k heads, v heads) and
 * writing them apart (k and v only where asked: decode needs them in the cache alone).
 *
 * One kernel serves all three ops: a warp per token. The warp computes the token's D/2
 * (cos, sin) once into its slice of shared memory, then applies them to every head of the
 * token (H + KV heads: 16 at Qwen2.5-0.5B, whose angles the former per-pair kernel computed
 * 16 times over, with 64-bit index divisions: 60 us for the 0.5B training forward where this
 * kernel takes 17). Heads move in 16-byte packs of V pairs (x[j..j+V) with
 * x[j+D/2..j+D/2+V)) when D/2 is a multiple of V and every row is 16-byte aligned, else pair
 * by pair. Each lane issues its first packs' loads before it computes the angles, so their
 * latency overlaps the sincosf; how many packs (1 for many tokens, 4 for a decode step) is
 * rope_launch's choice. The inverse frequencies are computed once per block. Wide heads
 * (D/2 > ROPE_CHUNK) go in chunks of ROPE_CHUNK pairs, so shared memory stays bounded for
 * any even D.
 *
 * Angles and sin/cos in fp32 with the accurate sincosf: positions reach 1e5 radians and the
 * fast intrinsics are wrong there (no --use_fast_math in this build for that reason). The
 * inverse frequency is computed as transformers does: 1 / theta^(2i/D) in fp32. The rotation
 * is written with explicit fmaf so rope_fwd and rope_qk_store give the same bits for the same
 * inputs whatever the compiler would contract. */
#include "common.cuh"

#define ROPE_CHUNK 256 /* rotation pairs whose (cos, sin) a warp holds at a time */
#define ROPE_WARPS 8   /* tokens (warps) per block at most */

/* V consecutive elements moved as one load / store (16 bytes when V * sizeof(T) == 16) */
template <typename T, int V> struct alignas(V * sizeof(T)) rope_pack {
    T e[V];
};

/* the token's (cos, sin) of the chunk's cn pairs into the warp's table: cs, sn (cn) */
__device__ __forceinline__ void rope_table(float *cs, float *sn, const float *inv, int cn, int p, float sign,
                                           int lane)
{
    __syncwarp(); /* the previous chunk's or token's readers are done */
    for (int j = lane; j < cn; j += 32) {
        float s, c;
        sincosf((float)p * inv[j], &s, &c);
        cs[j] = c;
        sn[j] = sign * s;
    }
    __syncwarp();
}

/* q (N, H, D), k (N, KV, D) rotated in place by pos (N); when kc is not NULL, the rotated k
 * and v (N, KV, D) are also stored at kc, vc (slots, max_seq, KV, D) row (slots[t], pos[t]).
 * k may be NULL when KV == 0. With src (rope_qkv), q, k and v are read from the fused rows
 * src + t * ss (q heads, k heads, v heads) instead, the rotated q written to q, the rotated k
 * to k and v copied to vo where those are not NULL (and to the cache as above). sign = 1
 * rotates forward, -1 backward. ch = min(D/2, ROPE_CHUNK), a multiple of V. Dynamic shared
 * memory: (1 + 2 * warps) * ch floats, the chunk's inverse frequencies (shared by the block)
 * and each warp's (cos, sin) table. U: packs a lane loads before it stores any; MINB:
 * __launch_bounds__ minimum blocks per SM (see rope_launch). */
template <typename T, int V, int U, int MINB>
__global__ void __launch_bounds__(ROPE_WARPS * 32, MINB)
    k_rope(const T *src, int64_t ss, T *q, T *k, T *vo, const T *v, T *kc, T *vc, const int32_t *slots,
           const int32_t *pos, int N, int H, int KV, int D, int max_seq, float theta, float sign, int ch)
{
    typedef rope_pack<T, V> P;
    extern __shared__ float rope_tab[];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    float *inv = rope_tab, *cs = rope_tab + (size_t)(1 + 2 * w) * ch, *sn = cs + ch;
    int half = D / 2, nh = H + KV, nvp = kc || vo ? KV * D / V : 0; /* v packs per token */
    for (int j0 = 0; j0 < half; j0 += ch) {
        int cn = min(ch, half - j0), ip = cn / V; /* pairs and packs per head in the chunk */
        int nrot = nh * ip, nit = nrot + (j0 == 0 ? nvp : 0);
        __syncthreads(); /* the previous chunk's readers of inv are done */
        for (int j = threadIdx.x; j < cn; j += blockDim.x)
            inv[j] = 1.0f / powf(theta, (float)(2 * (j0 + j)) / (float)D);
        __syncthreads();
        for (int64_t tok = (int64_t)blockIdx.x * wpb + w; tok < N; tok += (int64_t)gridDim.x * wpb) {
            int p = pos[tok];
            T *qr = q + tok * H * D, *kr = k ? k + tok * KV * D : NULL, *vor = vo ? vo + tok * KV * D : NULL;
            const T *sr = src ? src + tok * ss : NULL;
            const T *vr = sr ? sr + (int64_t)nh * D : nvp ? v + tok * KV * D : NULL;
            /* the token's (slot, pos) row in the cache, as an element offset */
            int64_t crow = kc ? ((int64_t)slots[tok] * max_seq + p) * KV * D : 0;
            for (int base = 0; base < nit; base += 32 * U) {
                P a[U], b[U];
                T *xp[U], *cp[U]; /* destination row, cache destination */
                int jr[U];        /* first pair's index in the chunk */
                bool rot[U];
#pragma unroll
                for (int u = 0; u < U; u++) {
                    int it = base + u * 32 + lane;
                    xp[u] = cp[u] = NULL;
                    jr[u] = 0;
                    rot[u] = it < nrot;
                    if (it < nrot) {
                        int head = it / ip;
                        jr[u] = (it - head * ip) * V;
                        int64_t col = j0 + jr[u];
                        const T *rp;
                        if (head < H) {
                            xp[u] = qr + (int64_t)head * D + col;
                            rp = sr ? sr + (int64_t)head * D + col : xp[u];
                        } else {
                            xp[u] = kr ? kr + (int64_t)(head - H) * D + col : NULL;
                            rp = sr ? sr + (int64_t)head * D + col : xp[u];
                            if (kc) cp[u] = kc + crow + (int64_t)(head - H) * D + col;
                        }
                        a[u] = *(const P *)rp;
                        b[u] = *(const P *)(rp + half);
                    } else if (it < nit) {
                        int64_t e = (int64_t)(it - nrot) * V;
                        if (kc) cp[u] = vc + crow + e;
                        if (vor) xp[u] = vor + e;
                        a[u] = *(const P *)(vr + e);
                    }
                }
                if (base == 0) rope_table(cs, sn, inv, cn, p, sign, lane);
#pragma unroll
                for (int u = 0; u < U; u++) {
                    if (rot[u]) {
#pragma unroll
                        for (int e = 0; e < V; e++) {
                            float x0 = aha__ld(a[u].e, e), x1 = aha__ld(b[u].e, e);
                            float c = cs[jr[u] + e], s = sn[jr[u] + e];
                            aha__st(a[u].e, e, fmaf(x0, c, -(x1 * s)));
                            aha__st(b[u].e, e, fmaf(x1, c, x0 * s));
                        }
                        if (xp[u]) {
                            *(P *)xp[u] = a[u];
                            *(P *)(xp[u] + half) = b[u];
                        }
                        if (cp[u]) {
                            *(P *)cp[u] = a[u];
                            *(P *)(cp[u] + half) = b[u];
                        }
                    } else {
                        if (xp[u]) *(P *)xp[u] = a[u];
                        if (cp[u]) *(P *)cp[u] = a[u];
                    }
                }
            }
        }
    }
}

/* Packs of 16 bytes when D/2 is a multiple of the pack and every base pointer is 16-byte
 * aligned (rows are then too: their offsets are multiples of D); pairs one by one otherwise.
 *
 * Two shapes of launch, chosen by measurement on an H200 (docs/gpu-notes.md, helper rope):
 * - many tokens (training, reference, prefill of long prompts): occupancy wins. One pack per
 *   lane per step under a 64-register cap (4 blocks of 8 warps per SM) ran 16.7 us for the
 *   0.5B forward of 10,240 tokens, against 21.1 us with two packs per lane at ~100 registers
 *   (2 blocks per SM) and 34.7 us with four.
 * - few tokens (a decode step: one warp per token cannot fill the SMs anyway): latency wins.
 *   Four packs per lane issue all of a 0.5B token's q, k and v loads (80 packs) before the
 *   first wait; with fewer, the v packs wait for the rotation's stores (a second round trip
 *   to memory). Small blocks spread the few tokens over all SMs. */
#define ROPE_FEW_TOKENS_PER_SM 4

template <typename T, int V>
static void rope_go(cudaStream_t st, bool few, unsigned nb, int wpb, size_t sh, const T *src, int64_t ss, T *q, T *k,
                    T *vo, const T *v, T *kc, T *vc, const int32_t *slots, const int32_t *pos, int N, int H, int KV,
                    int D, int max_seq, float theta, float sign, int ch)
{
    if (few)
        k_rope<T, V, 4, 1><<<nb, wpb * 32, sh, st>>>(src, ss, q, k, vo, v, kc, vc, slots, pos, N, H, KV, D, max_seq,
                                                     theta, sign, ch);
    else
        k_rope<T, V, 1, 4><<<nb, wpb * 32, sh, st>>>(src, ss, q, k, vo, v, kc, vc, slots, pos, N, H, KV, D, max_seq,
                                                     theta, sign, ch);
}

template <typename T>
static aha_status rope_launch(aha_backend *be, const T *src, T *q, T *k, T *vo, const T *v, T *kc, T *vc,
                              const int32_t *slots, const int32_t *pos, int N, int H, int KV, int D, int max_seq,
                              float theta, float sign, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    const int VW = 16 / (int)sizeof(T);
    int half = D / 2, ch = half < ROPE_CHUNK ? half : ROPE_CHUNK;
    uintptr_t al = (uintptr_t)q | (uintptr_t)k | (uintptr_t)src | (uintptr_t)vo |
                   (kc ? (uintptr_t)v | (uintptr_t)kc | (uintptr_t)vc : 0);
    int64_t ss = (int64_t)(H + 2 * KV) * D; /* fused row (rope_qkv) */
    bool packed = half % VW == 0 && al % 16 == 0;
    int sms = c->sm_count > 0 ? c->sm_count : 1;
    bool few = (int64_t)N <= (int64_t)ROPE_FEW_TOKENS_PER_SM * sms;
    int wpb = N / (2 * sms);
    wpb = wpb < 1 ? 1 : wpb > ROPE_WARPS ? ROPE_WARPS : wpb;
    unsigned nb = aha__blocks(N, wpb, 1 << 20);
    size_t sh = (size_t)(1 + 2 * wpb) * ch * sizeof(float);
    if (packed)
        rope_go<T, 16 / sizeof(T)>(c->stream, few, nb, wpb, sh, src, ss, q, k, vo, v, kc, vc, slots, pos, N, H, KV, D,
                                   max_seq, theta, sign, ch);
    else
        rope_go<T, 1>(c->stream, few, nb, wpb, sh, src, ss, q, k, vo, v, kc, vc, slots, pos, N, H, KV, D, max_seq,
                      theta, sign, ch);
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_rope_qk_store(aha_backend *be, aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor kc,
                                 aha_tensor vc, aha_tensor slots, aha_tensor pos, int N, int H, int KV, int D,
                                 int max_seq, float theta, aha_err *err)
{
    if (!aha__is_float(q.dt)) return aha__cu_bad_dtype(err, "rope_qk_store", "q", q.dt);
    if (k.dt != q.dt || v.dt != q.dt) return aha__cu_bad_dtype(err, "rope_qk_store", "k/v (must match q)", k.dt);
    bool cache = !aha_tensor_is_none(kc);
    if (cache && (kc.dt != q.dt || vc.dt != q.dt || slots.dt != AHA_DT_I32))
        return aha__cu_bad_dtype(err, "rope_qk_store", "kc/vc/slots", kc.dt);
    if (pos.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "rope_qk_store", "pos", pos.dt);
    if (D % 2) return aha_errf(err, AHA_EINVAL, "cuda rope_qk_store: head dim %d is odd", D);
    if (N <= 0 || D <= 0 || H < 0 || KV < 0) return AHA_OK;
    aha_status st = AHA_OK;
    AHA__DISPATCH_FLOAT(q.dt, T, st = rope_launch<T>(be, (const T *)NULL, (T *)q.data, (T *)k.data, (T *)NULL,
        (const T *)v.data,
        cache ? (T *)kc.data : (T *)NULL, cache ? (T *)vc.data : (T *)NULL,
        cache ? (const int32_t *)slots.data : (const int32_t *)NULL, (const int32_t *)pos.data, N, H, KV, D,
        max_seq, theta, 1.0f, err));
    return st;
}

aha_status aha__cu_rope_qkv(aha_backend *be, aha_tensor qkv, aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor kc,
                            aha_tensor vc, aha_tensor slots, aha_tensor pos, int N, int H, int KV, int D, int max_seq,
                            float theta, aha_err *err)
{
    if (!aha__is_float(qkv.dt)) return aha__cu_bad_dtype(err, "rope_qkv", "qkv", qkv.dt);
    bool has_k = !aha_tensor_is_none(k), has_v = !aha_tensor_is_none(v), cache = !aha_tensor_is_none(kc);
    if (q.dt != qkv.dt || (has_k && k.dt != qkv.dt) || (has_v && v.dt != qkv.dt))
        return aha__cu_bad_dtype(err, "rope_qkv", "q/k/v (must match qkv)", q.dt);
    if (cache && (kc.dt != qkv.dt || vc.dt != qkv.dt || slots.dt != AHA_DT_I32))
        return aha__cu_bad_dtype(err, "rope_qkv", "kc/vc/slots", kc.dt);
    if (pos.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, "rope_qkv", "pos", pos.dt);
    if (D % 2) return aha_errf(err, AHA_EINVAL, "cuda rope_qkv: head dim %d is odd", D);
    if (N <= 0 || D <= 0 || H < 0 || KV < 0) return AHA_OK;
    aha_status st = AHA_OK;
    AHA__DISPATCH_FLOAT(qkv.dt, T, st = rope_launch<T>(be, (const T *)qkv.data, (T *)q.data,
        has_k ? (T *)k.data : (T *)NULL, has_v ? (T *)v.data : (T *)NULL, (const T *)NULL,
        cache ? (T *)kc.data : (T *)NULL, cache ? (T *)vc.data : (T *)NULL,
        cache ? (const int32_t *)slots.data : (const int32_t *)NULL, (const int32_t *)pos.data, N, H, KV, D,
        max_seq, theta, 1.0f, err));
    return st;
}

static aha_status rope(aha_backend *be, aha_tensor x, aha_tensor pos, int N, int nh, int D,
                       float theta, float sign, const char *op, aha_err *err)
{
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, op, "x", x.dt);
    if (pos.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, op, "pos", pos.dt);
    if (D % 2) return aha_errf(err, AHA_EINVAL, "cuda %s: head dim %d is odd", op, D);
    if (N <= 0 || nh <= 0 || D <= 0) return AHA_OK;
    aha_status st = AHA_OK;
    AHA__DISPATCH_FLOAT(x.dt, T, st = rope_launch<T>(be, (const T *)NULL, (T *)x.data, (T *)NULL, (T *)NULL,
        (const T *)NULL, (T *)NULL,
        (T *)NULL, (const int32_t *)NULL, (const int32_t *)pos.data, N, nh, 0, D, 0, theta, sign, err));
    return st;
}

aha_status aha__cu_rope_fwd(aha_backend *be, aha_tensor x, aha_tensor pos, int N, int nh, int D,
                            float theta, aha_err *err)
{
    return rope(be, x, pos, N, nh, D, theta, 1.0f, "rope_fwd", err);
}

aha_status aha__cu_rope_bwd(aha_backend *be, aha_tensor dx, aha_tensor pos, int N, int nh, int D,
                            float theta, aha_err *err)
{
    return rope(be, dx, pos, N, nh, D, theta, -1.0f, "rope_bwd", err);
}
