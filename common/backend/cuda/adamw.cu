/* adamw.cu: torch.optim.AdamW (decoupled weight decay, bias-corrected moments) fused in one
 * pass over fp32 master weights, gradients and moments, optionally writing the BF16 compute
 * copy the forward reads. Gradient clipping is folded in as grad_scale. */
#include <math.h>

#include "common.cuh"

template <typename TO>
__global__ void k_adamw(float *p, TO *p_out, const float *g, float *m, float *v, int64_t n, float lr,
                        float b1, float b2, float eps, float decay, float gscale, float step_size,
                        float bc2_sqrt)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gi = g[i] * gscale;
        float pi = p[i] * decay;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        pi -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        if (p_out) aha__st(p_out, i, pi);
    }
}

aha_status aha__cu_adamw(aha_backend *be, aha_tensor p, aha_tensor p_out, aha_tensor g, aha_tensor m,
                         aha_tensor v, int64_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float grad_scale, int step, aha_err *err)
{
    if (p.dt != AHA_DT_F32 || g.dt != AHA_DT_F32 || m.dt != AHA_DT_F32 || v.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "adamw", "p/g/m/v (all F32)", p.dt);
    bool has_out = !aha_tensor_is_none(p_out);
    if (has_out && !aha__is_float(p_out.dt)) return aha__cu_bad_dtype(err, "adamw", "p_out", p_out.dt);
    if (step < 1) return aha_errf(err, AHA_EINVAL, "cuda adamw: step %d (must be >= 1)", step);
    if (n <= 0) return AHA_OK;
    /* bias corrections in double on the host, as torch computes them in Python floats */
    double bc1 = 1.0 - pow((double)beta1, step), bc2 = 1.0 - pow((double)beta2, step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - (double)lr * weight_decay);
    unsigned nb = aha__blocks(n, 256, 16384);
    cudaStream_t st = aha__cu(be)->stream;
    if (!has_out) {
        k_adamw<float><<<nb, 256, 0, st>>>((float *)p.data, (float *)NULL, (const float *)g.data,
                                           (float *)m.data, (float *)v.data, n, lr, beta1, beta2, eps,
                                           decay, grad_scale, step_size, bc2_sqrt);
    } else {
        AHA__DISPATCH_FLOAT(p_out.dt, TO, (k_adamw<TO><<<nb, 256, 0, st>>>(
            (float *)p.data, (TO *)p_out.data, (const float *)g.data, (float *)m.data, (float *)v.data,
            n, lr, beta1, beta2, eps, decay, grad_scale, step_size, bc2_sqrt)));
    }
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
