/* test_dp.c: data-parallel GRPO on the tiny Qwen2 fixture (tests/fixtures/tiny-qwen2,
 * grpo.safetensors, 4 sequences). Reference: one process trains on all 4 sequences for two
 * steps (clip + AdamW). Then 2 forked ranks each take 2 sequences with the global loss scale
 * 1/4 and step with aha_dp_step over the TCP communicator: every parameter must match the
 * reference within 1e-5 and the ranks must agree bitwise (checksum every step). A control
 * shows the tolerance is meaningful (half the batch alone misses the reference by far more),
 * the summed statistics match the reference's, and a perturbed replica is caught. */
#include <stdint.h>
#include <string.h>

#include "dist/dp.h"
#include "io/safetensors.h"
#include "ranks.h"

typedef struct {
    int B, T;
    int32_t *ids;
    float *mask, *old, *ref, *adv;
    float eps, beta;
} fixture;

static fixture fx;
static float *ref_w;   /* reference parameters after two steps, table order, concatenated */
static double ref_tokens, ref_loss;
static const int STEPS = 2;

static float *load(aha_st_file *f, const char *name)
{
    const aha_st_tensor *t = aha_st_find(f, name);
    aha_err err = {0};
    float *x = t ? malloc((size_t)t->numel * sizeof(float)) : NULL;
    if (!t || aha_st_to_f32(t, x, t->numel, &err) != AHA_OK) {
        fprintf(stderr, "fixture %s: %s\n", name, t ? err.msg : "missing");
        exit(1);
    }
    return x;
}

static void load_fixture(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny-qwen2/grpo.safetensors", th_fixtures());
    aha_st_file *f = NULL;
    aha_err err = {0};
    if (aha_st_open(path, &f, &err) != AHA_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    const aha_st_tensor *ids = aha_st_find(f, "input_ids");
    if (!ids || ids->dtype != AHA_DT_I32 || ids->ndim != 2) {
        fprintf(stderr, "input_ids missing\n");
        exit(1);
    }
    fx.B = (int)ids->shape[0];
    fx.T = (int)ids->shape[1];
    fx.ids = malloc((size_t)ids->numel * 4);
    memcpy(fx.ids, ids->data, (size_t)ids->numel * 4);
    fx.mask = load(f, "completion_mask");
    fx.old = load(f, "old_logprobs");
    fx.ref = load(f, "ref_logprobs");
    fx.adv = load(f, "advantages");
    float *e = load(f, "epsilon"), *b = load(f, "beta");
    fx.eps = e[0];
    fx.beta = b[0];
    free(e);
    free(b);
    aha_st_close(f);
}

static aha_model *open_model(aha_backend **be)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", th_fixtures());
    aha_err err = {0};
    aha_model *m = NULL;
    if (aha_backend_open("cpu", 1, be, &err) != AHA_OK || aha_model_open(dir, *be, NULL, &m, &err) != AHA_OK) {
        fprintf(stderr, "open %s: %s\n", dir, err.msg);
        exit(1);
    }
    return m;
}

/* backward over sequences [s0, s1) with the global scale 1/B */
static aha_status backward(aha_model *m, aha_train *t, int s0, int s1, aha_grpo_stats *gs, aha_err *err)
{
    int n = s1 - s0, T = fx.T;
    int32_t cu[16];
    for (int i = 0; i <= n; i++) cu[i] = i * T;
    aha_batch b = {fx.ids + (size_t)s0 * T, cu, n, NULL};
    size_t lo = (size_t)s0 * (T - 1);
    aha_grpo_args a = {.mask = fx.mask + lo, .old_logprobs = fx.old + lo, .ref_logprobs = fx.ref + lo,
                       .advantages = fx.adv + s0, .eps_low = fx.eps, .eps_high = fx.eps, .beta = fx.beta,
                       .norm = AHA_GRPO_NORM_SEQ, .scale = 1.0f / (float)fx.B};
    AHA_TRY(aha_train_zero_grad(t, err));
    return aha_model_grpo_backward(m, t, &b, &a, gs, NULL, err);
}

static aha_dp_opts dp_opts(void)
{
    aha_dp_opts o = {.max_grad_norm = 1.0, .check_every = 1, .bucket_elems = 10007};
    o.adamw = (aha_adamw_args){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f};
    return o;
}

static float *params(aha_model *m, int64_t *total)
{
    int64_t n = aha_model_param_count(m), o = 0;
    float *w = malloc((size_t)n * sizeof(float));
    aha_err err = {0};
    for (int i = 0; i < aha_model_n_params(m); i++) {
        CHECK(aha_model_param_get_f32(m, i, w + o, &err) == AHA_OK, "%s", err.msg);
        o += aha_model_param(m, i)->numel;
    }
    *total = n;
    return w;
}

/* one process, sequences [s0, s1), two steps; returns the parameters */
static float *train_alone(int s0, int s1, double *tokens, double *loss, int64_t *n)
{
    aha_backend *be = NULL;
    aha_model *m = open_model(&be);
    aha_train *t = NULL;
    aha_err err = {0};
    CHECK(aha_train_create(m, &t, &err) == AHA_OK, "%s", err.msg);
    aha_dp_opts o = dp_opts();
    for (int s = 0; s < STEPS; s++) {
        aha_grpo_stats gs;
        CHECK(backward(m, t, s0, s1, &gs, &err) == AHA_OK, "%s", err.msg);
        aha_dp_info info;
        CHECK(aha_dp_step(NULL, m, t, &o, &info, &err) == AHA_OK, "%s", err.msg);
        fprintf(stderr, "  alone [%d,%d) step %d: loss %.6f grad norm %.4f\n", s0, s1, s, gs.loss, info.grad_norm);
        if (s == 0 && tokens) {
            *tokens = gs.tokens;
            *loss = gs.loss;
        }
    }
    float *w = params(m, n);
    aha_train_free(t);
    aha_model_free(m);
    aha_backend_free(be);
    return w;
}

static void rank_main(int rank, int world, const char *rdv, void *arg)
{
    aha_comm_opts co = {.rank = rank, .world_size = world, .rendezvous = rdv, .timeout_ms = 20000, .name = "dp"};
    aha_comm *c = NULL;
    aha_err err = {0};
    if (aha_comm_create(&co, &c, &err) != AHA_OK) {
        CHECK(0, "create: %s", err.msg);
        return;
    }
    aha_backend *be = NULL;
    aha_model *m = open_model(&be);
    aha_train *t = NULL;
    CHECK(aha_train_create(m, &t, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_dp_check_weights(c, m, NULL, &err) == AHA_OK, "replicas start equal: %s", err.msg);
    int s0, s1;
    aha_dp_shard(fx.B, rank, world, &s0, &s1);
    aha_dp_opts o = dp_opts();
    for (int s = 0; s < STEPS; s++) {
        aha_grpo_stats gs;
        CHECK(backward(m, t, s0, s1, &gs, &err) == AHA_OK, "%s", err.msg);
        aha_dp_info info = {0};
        CHECK(aha_dp_step(c, m, t, &o, &info, &err) == AHA_OK, "rank %d step %d: %s", rank, s, err.msg);
        CHECK(info.checked, "checksum ran");
        fprintf(stderr, "  rank %d [%d,%d) step %d: grad norm %.4f, all-reduce %.3f s, weights %016llx\n", rank, s0,
                s1, s, info.grad_norm, info.reduce_s, (unsigned long long)info.weights_hash);
        if (s == 0) {
            double st[2] = {gs.tokens, gs.loss};
            CHECK(aha_dp_sum_host(c, st, 2, &err) == AHA_OK, "%s", err.msg);
            CHECK(st[0] == ref_tokens, "summed tokens %g vs %g", st[0], ref_tokens);
            CHECK(fabs(st[1] - ref_loss) <= 1e-6 + 1e-5 * fabs(ref_loss), "summed loss %.8f vs %.8f", st[1], ref_loss);
        }
    }
    int64_t n;
    float *w = params(m, &n);
    char label[64];
    snprintf(label, sizeof label, "rank %d of %d vs one rank", rank, world);
    double d = th_max_abs(label, w, ref_w, n);
    CHECK(d <= 1e-5, "rank %d: weights differ from the one-rank run by %.3e", rank, d);
    free(w);

    /* a replica that drifts is caught, naming it */
    if (rank == 1) {
        const aha_param_info *p = aha_model_param(m, 0);
        float *x = malloc((size_t)p->numel * sizeof(float));
        aha_model_param_get_f32(m, 0, x, &err);
        x[p->numel / 2] += 1e-6f;
        CHECK(aha_model_param_set_f32(m, 0, x, &err) == AHA_OK, "%s", err.msg);
        free(x);
    }
    aha_status st = aha_dp_check_weights(c, m, NULL, &err);
    CHECK(st == AHA_EINTERNAL && strstr(err.msg, "rank(s) 1 ("), "rank %d: drift verdict: %s", rank, err.msg);
    aha_train_free(t);
    aha_model_free(m);
    aha_backend_free(be);
    aha_comm_free(c);
    (void)arg;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    load_fixture();
    int b, e;
    aha_dp_shard(4, 0, 2, &b, &e);
    CHECK(b == 0 && e == 2, "shard 0");
    aha_dp_shard(5, 2, 3, &b, &e);
    CHECK(b == 4 && e == 5, "shard of 5 over 3: rank 2 [%d,%d)", b, e);
    aha_dp_shard(5, 0, 3, &b, &e);
    CHECK(b == 0 && e == 2, "shard of 5 over 3: rank 0 [%d,%d)", b, e);

    int64_t n, n2;
    ref_w = train_alone(0, fx.B, &ref_tokens, &ref_loss, &n);
    /* control: half the batch alone lands far from the reference */
    float *half = train_alone(0, fx.B / 2, NULL, NULL, &n2);
    double dh = th_max_abs("half batch alone vs whole batch", half, ref_w, n);
    CHECK(dh > 1e-4, "the control must differ (%.3e): the tolerance would mean nothing", dh);
    free(half);

    CHECK(rk_run(2, 2, rank_main, NULL, 50) == 0, "2 ranks");
    free(ref_w);
    free(fx.ids);
    free(fx.mask);
    free(fx.old);
    free(fx.ref);
    free(fx.adv);
    return th_done("dist dp");
}
