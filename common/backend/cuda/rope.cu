/* rope.cu: rotary position embedding in the rotate-half form of transformers, in place on
 * x (N, nh, D): for i < D/2, angle = pos * theta^(-2i/D),
 *   (x[i], x[i+D/2]) -> (x[i] cos - x[i+D/2] sin, x[i+D/2] cos + x[i] sin).
 * The backward is the inverse rotation (sin negated). Angles and sin/cos in fp32 with the
 * accurate sincosf (positions reach 1e5 radians; the fast intrinsics are wrong there). The
 * inverse frequency is computed as transformers does: 1 / theta^(2i/D) in fp32. */
#include "common.cuh"

template <typename T>
__global__ void k_rope(T *x, const int32_t *pos, int N, int nh, int D, float theta, float sign)
{
    int half = D / 2;
    int64_t total = (int64_t)N * nh * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int j = (int)(i % half);
        int64_t row = i / half; /* token * nh + head */
        int64_t tok = row / nh;
        float inv = 1.0f / powf(theta, (float)(2 * j) / (float)D);
        float ang = (float)pos[tok] * inv;
        float s, c;
        sincosf(ang, &s, &c);
        s *= sign;
        T *xr = x + row * D;
        float a = aha__ld(xr, j), b = aha__ld(xr, j + half);
        aha__st(xr, j, a * c - b * s);
        aha__st(xr, j + half, b * c + a * s);
    }
}

/* index space: the N * (H + KV) * D/2 rotation pairs, then (with a cache) the N * KV * D
 * elements of v; k's rotated pair goes to the cache by the thread that rotated it */
template <typename T>
__global__ void k_rope_qk_store(T *q, T *k, const T *v, T *kc, T *vc, const int32_t *slots, const int32_t *pos,
                                int N, int H, int KV, int D, int max_seq, float theta)
{
    int half = D / 2, nh = H + KV;
    int64_t nrot = (int64_t)N * nh * half, nv = kc ? (int64_t)N * KV * D : 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nrot + nv;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (i >= nrot) {
            int64_t e = i - nrot, tok = e / ((int64_t)KV * D), r = e % ((int64_t)KV * D);
            vc[((int64_t)slots[tok] * max_seq + pos[tok]) * KV * D + r] = v[e];
            continue;
        }
        int j = (int)(i % half);
        int64_t row = i / half; /* token * (H + KV) + head */
        int64_t tok = row / nh;
        int head = (int)(row % nh);
        float inv = 1.0f / powf(theta, (float)(2 * j) / (float)D);
        float ang = (float)pos[tok] * inv;
        float s, c;
        sincosf(ang, &s, &c);
        T *xr = head < H ? q + (tok * H + head) * D : k + (tok * KV + head - H) * D;
        float a = aha__ld(xr, j), b = aha__ld(xr, j + half);
        aha__st(xr, j, a * c - b * s);
        aha__st(xr, j + half, b * c + a * s);
        if (head >= H && kc) {
            T *dst = kc + (((int64_t)slots[tok] * max_seq + pos[tok]) * KV + head - H) * D;
            dst[j] = xr[j];
            dst[j + half] = xr[j + half];
        }
    }
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
    if (N <= 0 || D <= 0) return AHA_OK;
    int64_t total = (int64_t)N * (H + KV) * (D / 2) + (cache ? (int64_t)N * KV * D : 0);
    unsigned nb = aha__blocks(total, 256, 16384);
    AHA__DISPATCH_FLOAT(q.dt, T, (k_rope_qk_store<T><<<nb, 256, 0, aha__cu(be)->stream>>>(
        (T *)q.data, (T *)k.data, (const T *)v.data, cache ? (T *)kc.data : (T *)NULL,
        cache ? (T *)vc.data : (T *)NULL, cache ? (const int32_t *)slots.data : (const int32_t *)NULL,
        (const int32_t *)pos.data, N, H, KV, D, max_seq, theta)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

static aha_status rope(aha_backend *be, aha_tensor x, aha_tensor pos, int N, int nh, int D,
                       float theta, float sign, const char *op, aha_err *err)
{
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, op, "x", x.dt);
    if (pos.dt != AHA_DT_I32) return aha__cu_bad_dtype(err, op, "pos", pos.dt);
    if (D % 2) return aha_errf(err, AHA_EINVAL, "cuda %s: head dim %d is odd", op, D);
    if (N <= 0 || nh <= 0 || D <= 0) return AHA_OK;
    cudaStream_t st = aha__cu(be)->stream;
    unsigned nb = aha__blocks((int64_t)N * nh * (D / 2), 256, 16384);
    AHA__DISPATCH_FLOAT(x.dt, T, (k_rope<T><<<nb, 256, 0, st>>>((T *)x.data,
        (const int32_t *)pos.data, N, nh, D, theta, sign)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
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
