/* dp.c: data-parallel optimizer steps (dp.h): gradient all-reduce, global-norm clipping,
 * AdamW, and the weight checksum agreement that catches replicas drifting apart. */
#include "dist/dp.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void aha_dp_shard(int n, int rank, int world, int *begin, int *end)
{
    AHA_ASSERT(world >= 1 && rank >= 0 && rank < world && n >= 0);
    int base = n / world, extra = n % world;
    *begin = rank * base + (rank < extra ? rank : extra);
    *end = *begin + base + (rank < extra ? 1 : 0);
}

/* 64-bit words mixed one by one (a multiply-xorshift): every bit of every weight matters */
static uint64_t mix_words(uint64_t h, const void *p, size_t bytes)
{
    const uint8_t *b = p;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    for (; i < bytes; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

aha_status aha_dp_weights_hash(aha_model *m, uint64_t *out, aha_err *err)
{
    int64_t most = 0;
    for (int i = 0; i < aha_model_n_params(m); i++)
        if (aha_model_param(m, i)->numel > most) most = aha_model_param(m, i)->numel;
    float *buf = malloc((size_t)(most > 0 ? most : 1) * sizeof(float));
    if (!buf) return aha_errf(err, AHA_ENOMEM, "weights hash: out of memory");
    uint64_t h = 0x6168615f64697374ull;
    aha_status st = AHA_OK;
    for (int i = 0; i < aha_model_n_params(m) && st == AHA_OK; i++) {
        const aha_param_info *p = aha_model_param(m, i);
        st = aha_model_param_get_f32(m, i, buf, err);
        if (st == AHA_OK) h = mix_words(h ^ (uint64_t)p->numel, buf, (size_t)p->numel * sizeof(float));
    }
    free(buf);
    if (st == AHA_OK) *out = h;
    return st;
}

aha_status aha_dp_check_weights(aha_comm *c, aha_model *m, uint64_t *hash, aha_err *err)
{
    uint64_t h;
    AHA_TRY(aha_dp_weights_hash(m, &h, err));
    if (hash) *hash = h;
    if (!c) return AHA_OK;
    return aha_comm_check_agree(c, h, "weights (fp32 master)", err);
}

aha_status aha_dp_sum_host(aha_comm *c, double *x, int n, aha_err *err)
{
    if (n < 0 || n > 65536) return aha_errf(err, AHA_EINVAL, "dp sum: %d values (at most 65536)", n);
    if (!c || aha_comm_size(c) == 1 || n == 0) return AHA_OK;
    int w = aha_comm_size(c);
    double *all = malloc((size_t)w * (size_t)n * sizeof(double));
    if (!all) return aha_errf(err, AHA_ENOMEM, "dp sum: out of memory");
    memcpy(all + (size_t)aha_comm_rank(c) * (size_t)n, x, (size_t)n * sizeof(double));
    aha_status st = AHA_OK;
    /* every rank gets every rank's values and adds them in rank order itself: the same bits
     * everywhere, whatever the transport */
    for (int r = 0; r < w && st == AHA_OK; r++)
        st = aha_comm_broadcast_bytes(c, all + (size_t)r * (size_t)n, (int64_t)n * (int64_t)sizeof(double), r, err);
    if (st == AHA_OK)
        for (int i = 0; i < n; i++) {
            double s = all[i];
            for (int r = 1; r < w; r++) s += all[(size_t)r * (size_t)n + (size_t)i];
            x[i] = s;
        }
    free(all);
    return st;
}

aha_status aha_dp_step(aha_comm *c, aha_model *m, aha_train *t, const aha_dp_opts *o, aha_dp_info *info,
                       aha_err *err)
{
    aha_dp_info local = {0};
    double t0 = wall_s();
    if (c && aha_comm_size(c) > 1) {
        int64_t n = 0;
        aha_tensor g = aha_train_grads(t, &n);
        AHA_TRY(aha_comm_all_reduce_sum_bucketed(c, g, n, o->bucket_elems, err));
    }
    local.reduce_s = wall_s() - t0;
    if (c && aha_comm_size(c) > 1) {
        /* The gradients are now bitwise the same on every rank, but their norm need not be: a
         * GPU adds its per-block partial sums with atomics, in no fixed order, so the last bits
         * (and the clip factor, and then every weight) would differ from rank to rank. Rank 0's
         * norm is everyone's; the clip is aha_train_clip's (torch clip_grad_norm_). */
        double norm = 0;
        AHA_TRY(aha_train_grad_norm(t, &norm, err));
        AHA_TRY(aha_comm_broadcast_bytes(c, &norm, sizeof norm, 0, err));
        local.grad_norm = norm;
        double coef = o->max_grad_norm > 0 ? o->max_grad_norm / (norm + 1e-6) : 1.0;
        if (coef < 1.0) {
            int64_t n = 0;
            aha_tensor g = aha_train_grads(t, &n);
            aha_backend *be = aha_model_backend(m);
            AHA_TRY(be->ops->scale(be, g, n, (float)coef, err));
        }
    } else if (o->max_grad_norm > 0) {
        AHA_TRY(aha_train_clip(t, o->max_grad_norm, &local.grad_norm, err));
    } else {
        AHA_TRY(aha_train_grad_norm(t, &local.grad_norm, err));
    }
    AHA_TRY(aha_train_adamw_step(t, &o->adamw, err));
    if (o->check_every > 0 && aha_train_step_count(t) % o->check_every == 0) {
        AHA_TRY(aha_dp_check_weights(c, m, &local.weights_hash, err));
        local.checked = true;
    }
    if (info) *info = local;
    return AHA_OK;
}
