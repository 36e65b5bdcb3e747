/* test_weightgroup.c: the weights group over TCP on the tiny Qwen2 fixture: a learner (rank 0)
 * and two rollout workers (ranks 1, 2, joined through a JoinWeightGroup request). The learner
 * pushes two policies (random inits with seeds 7 and 8); each worker must then serve exactly
 * the weights it rebuilds itself from the same seeds, bit for bit, with the versions pushed.
 * When the learner exits, the workers' receivers end with an error naming it. Also: bad
 * requests and a layout mismatch are refused before anything starts. */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "dist/weightgroup.h"
#include "ranks.h"

static aha_model *open_fixture(aha_backend **be)
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

static aha_model *random_model(aha_model *like, uint64_t seed)
{
    aha_model *r = NULL;
    aha_err err = {0};
    if (aha_model_init_random(aha_model_cfg(like), seed, aha_model_backend(like), NULL, &r, &err) != AHA_OK) {
        fprintf(stderr, "init_random: %s\n", err.msg);
        exit(1);
    }
    return r;
}

/* max |a - b| over every parameter */
static double model_diff(aha_model *a, aha_model *b)
{
    double worst = 0;
    aha_err err = {0};
    for (int i = 0; i < aha_model_n_params(a); i++) {
        int64_t n = aha_model_param(a, i)->numel;
        float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
        aha_model_param_get_f32(a, i, x, &err);
        aha_model_param_get_f32(b, i, y, &err);
        for (int64_t k = 0; k < n; k++) {
            double d = fabs((double)x[k] - y[k]);
            if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
        }
        free(x);
        free(y);
    }
    return worst;
}

typedef struct {
    pthread_mutex_t mu;
    aha_model *m;
    int64_t versions[4];
    int n;
} serving;

static aha_status apply(void *user, aha_tensor staged, int64_t numel, int64_t version, aha_err *err)
{
    serving *s = user;
    pthread_mutex_lock(&s->mu);
    aha_status st = aha_weight_group_copy_into(s->m, staged, numel, err);
    if (st == AHA_OK && s->n < 4) s->versions[s->n++] = version;
    pthread_mutex_unlock(&s->mu);
    return st;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void rank_main(int rank, int world, const char *rdv, void *arg)
{
    aha_err err = {0};
    aha_backend *be = NULL;
    aha_model *m = open_fixture(&be);
    if (rank == 0) {
        aha_model *a = random_model(m, 7), *b = random_model(m, 8);
        aha_weight_group_opts o = {.rendezvous = rdv, .rank = 0, .world_size = world, .timeout_ms = 10000};
        aha_weight_group *g = NULL;
        CHECK(aha_weight_group_open(a, &o, &g, &err) == AHA_OK, "open: %s", err.msg);
        if (g) {
            double s = 0;
            CHECK(aha_weight_group_push(g, 5, &s, &err) == AHA_OK, "push 5: %s", err.msg);
            fprintf(stderr, "  learner: version 5 pushed in %.4f s\n", s);
            /* the learner's model takes the second policy, then pushes it */
            int64_t n = aha_model_param_count(a);
            float *x = malloc((size_t)n * 4);
            for (int i = 0; i < aha_model_n_params(a); i++) {
                aha_model_param_get_f32(b, i, x, &err);
                CHECK(aha_model_param_set_f32(a, i, x, &err) == AHA_OK, "%s", err.msg);
            }
            free(x);
            CHECK(aha_weight_group_push(g, 6, &s, &err) == AHA_OK, "push 6: %s", err.msg);
            aha_weight_group_free(g);
        }
        aha_model_free(a);
        aha_model_free(b);
    } else {
        serving sv = {PTHREAD_MUTEX_INITIALIZER, m, {0}, 0};
        Aha__V1__JoinWeightGroupRequest req = AHA__V1__JOIN_WEIGHT_GROUP_REQUEST__INIT;
        req.rendezvous = (char *)rdv;
        req.rank = rank;
        req.world_size = world;
        req.transport = "tcp";
        req.timeout_ms = 10000;
        req.layout_signature = aha_weight_group_signature(m);
        aha_weight_group *g = NULL;
        CHECK(aha_weight_group_join_request(m, &req, apply, &sv, &g, &err) == AHA_OK, "join: %s", err.msg);
        if (!g) return;
        aha_weight_group_state s;
        for (int i = 0; i < 2000; i++) {
            aha_weight_group_get_state(g, &s);
            if (s.ended) break;
            sleep_ms(10);
        }
        CHECK(s.joined && s.pushes == 2 && s.version == 6, "rank %d: joined %d, %lld pushes, version %lld", rank,
              s.joined, (long long)s.pushes, (long long)s.version);
        CHECK(sv.n == 2 && sv.versions[0] == 5 && sv.versions[1] == 6, "versions applied in order");
        CHECK(s.ended && strstr(s.error, "rank 0"), "rank %d: the learner's exit ends the receiver: '%s'", rank,
              s.error);
        fprintf(stderr, "  worker %d: %s\n", rank, s.error);
        aha_model *want = random_model(m, 8);
        double d = model_diff(m, want);
        CHECK(d == 0, "rank %d: served weights differ from seed 8 by %.3e", rank, d);
        aha_model_free(want);
        aha_weight_group_free(g);
    }
    aha_model_free(m);
    aha_backend_free(be);
    (void)arg;
}

static aha_status never(void *user, aha_tensor staged, int64_t numel, int64_t version, aha_err *err)
{
    return aha_errf(err, AHA_EINTERNAL, "must not be called");
}

static void bad_requests(void)
{
    aha_backend *be = NULL;
    aha_model *m = open_fixture(&be);
    aha_err err = {0};
    aha_weight_group *g = NULL;
    Aha__V1__JoinWeightGroupRequest req = AHA__V1__JOIN_WEIGHT_GROUP_REQUEST__INIT;
    req.rendezvous = "127.0.0.1:1";
    req.rank = 1;
    req.world_size = 2;
    req.transport = "tcp";
    req.layout_signature = aha_weight_group_signature(m) ^ 1;
    CHECK(aha_weight_group_join_request(m, &req, never, NULL, &g, &err) == AHA_EPRECOND && !g &&
              strstr(err.msg, "layout"), "layout mismatch: %s", err.msg);
    req.layout_signature ^= 1;
    req.world_size = 1;
    CHECK(aha_weight_group_join_request(m, &req, never, NULL, &g, &err) == AHA_EINVAL, "world 1: %s", err.msg);
    req.world_size = 2;
    req.rank = 2;
    CHECK(aha_weight_group_join_request(m, &req, never, NULL, &g, &err) == AHA_EINVAL, "rank 2 of 2: %s", err.msg);
    req.rank = 1;
    req.transport = "carrier-pigeon";
    CHECK(aha_weight_group_join_request(m, &req, never, NULL, &g, &err) == AHA_EINVAL, "transport: %s", err.msg);
    req.transport = "";
    req.rendezvous = "";
    CHECK(aha_weight_group_join_request(m, &req, never, NULL, &g, &err) == AHA_EINVAL, "rendezvous: %s", err.msg);
    /* a different model has a different signature */
    aha_model_config cfg = *aha_model_cfg(m);
    cfg.intermediate_size += 8;
    aha_model *other = NULL;
    CHECK(aha_model_init_random(&cfg, 1, be, NULL, &other, &err) == AHA_OK, "%s", err.msg);
    CHECK(other && aha_weight_group_signature(other) != aha_weight_group_signature(m), "signature sees shapes");
    aha_model_free(other);
    aha_model_free(m);
    aha_backend_free(be);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    bad_requests();
    CHECK(rk_run(3, 3, rank_main, NULL, 50) == 0, "learner + 2 workers");
    return th_done("dist weightgroup");
}
