/* test_comm.c: the TCP communicator with W = 2 and 3 forked ranks on loopback: all-reduce
 * equals the fixed-order sum each rank recomputes from every rank's inputs (bitwise, and the
 * same bits on every rank), broadcast from a non-zero root (F32 and BF16), all-gather,
 * checksum agreement and its mismatch, ranks calling different collectives, and the failure
 * paths: a rank that exits inside a collective, a rank that hangs, a rank that never joins:
 * each ends with a clear error naming the rank, within the timeout. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "base/rng.h"
#include "dist/comm.h"
#include "ranks.h"

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static aha_comm *join(int rank, int world, const char *rdv, int timeout_ms)
{
    aha_comm_opts o = {.rank = rank, .world_size = world, .rendezvous = rdv, .kind = AHA_COMM_TCP,
                       .timeout_ms = timeout_ms, .name = "test"};
    aha_comm *c = NULL;
    aha_err err = {0};
    aha_status st = aha_comm_create(&o, &c, &err);
    CHECK(st == AHA_OK, "rank %d: create: %s", rank, err.msg);
    return c;
}

static void fill_rank(float *x, int64_t n, int rank)
{
    aha_rng g;
    aha_rng_seed(&g, 1234, (uint64_t)rank);
    for (int64_t i = 0; i < n; i++) x[i] = (float)aha_rng_normal(&g) * (float)(1 + rank);
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* ---- collectives that work ---------------------------------------------------------------- */

static void ranks_collectives(int rank, int world, const char *rdv, void *arg)
{
    aha_comm *c = join(rank, world, rdv, 10000);
    if (!c) return;
    aha_err err = {0};
    CHECK(aha_comm_rank(c) == rank && aha_comm_size(c) == world, "rank/size");

    /* all-reduce over several 4 MiB frames and a ragged tail */
    int64_t n = (int64_t)(1 << 20) + 12345;
    float *x = malloc((size_t)n * 4), *want = malloc((size_t)n * 4), *other = malloc((size_t)n * 4);
    fill_rank(x, n, rank);
    fill_rank(want, n, 0);
    for (int r = 1; r < world; r++) { /* the documented order: ((x0 + x1) + x2) ... */
        fill_rank(other, n, r);
        for (int64_t i = 0; i < n; i++) want[i] += other[i];
    }
    aha_tensor t = {x, AHA_DT_F32};
    CHECK(aha_comm_all_reduce_sum(c, t, n, &err) == AHA_OK, "all_reduce: %s", err.msg);
    CHECK(memcmp(x, want, (size_t)n * 4) == 0, "rank %d: all_reduce differs from the fixed-order sum", rank);
    th_max_abs("all_reduce vs test's sum", x, want, n);
    /* the same bits everywhere: every rank hashes its result and they must agree */
    CHECK(aha_comm_check_agree(c, hash_bytes(x, (size_t)n * 4), "all_reduce results", &err) == AHA_OK, "%s",
          err.msg);

    /* bucketed: same bits as unbucketed */
    fill_rank(x, n, rank);
    CHECK(aha_comm_all_reduce_sum_bucketed(c, t, n, 1000003, &err) == AHA_OK, "bucketed: %s", err.msg);
    CHECK(memcmp(x, want, (size_t)n * 4) == 0, "bucketed all_reduce differs");

    /* broadcast F32 from the last rank */
    int root = world - 1;
    fill_rank(x, n, rank == root ? 77 : rank);
    fill_rank(want, n, 77);
    CHECK(aha_comm_broadcast(c, t, n, root, &err) == AHA_OK, "broadcast: %s", err.msg);
    CHECK(memcmp(x, want, (size_t)n * 4) == 0, "rank %d: broadcast from %d differs", rank, root);

    /* broadcast BF16 (raw 16-bit words) from rank 0, odd length */
    int64_t nb = 100001;
    uint16_t *h = malloc((size_t)nb * 2);
    for (int64_t i = 0; i < nb; i++) h[i] = rank == 0 ? (uint16_t)(i * 2654435761u >> 7) : 0;
    CHECK(aha_comm_broadcast(c, (aha_tensor){h, AHA_DT_BF16}, nb, 0, &err) == AHA_OK, "bf16 bcast: %s", err.msg);
    int bad = 0;
    for (int64_t i = 0; i < nb; i++) bad += h[i] != (uint16_t)(i * 2654435761u >> 7);
    CHECK(bad == 0, "bf16 broadcast: %d words differ", bad);
    free(h);

    /* all-gather: slice r of rank r to everyone */
    int64_t ns = 700001;
    float *g = calloc((size_t)(ns * world), 4);
    fill_rank(g + rank * ns, ns, 100 + rank);
    CHECK(aha_comm_all_gather(c, (aha_tensor){g, AHA_DT_F32}, ns, &err) == AHA_OK, "all_gather: %s", err.msg);
    for (int r = 0; r < world; r++) {
        fill_rank(other, ns, 100 + r);
        CHECK(memcmp(g + r * ns, other, (size_t)ns * 4) == 0, "all_gather slice %d differs", r);
    }
    free(g);

    /* bytes and barrier */
    char msg[32] = "";
    if (rank == 1) snprintf(msg, sizeof msg, "hello from one");
    CHECK(aha_comm_broadcast_bytes(c, msg, sizeof msg, 1, &err) == AHA_OK, "bytes: %s", err.msg);
    CHECK(strcmp(msg, "hello from one") == 0, "broadcast_bytes got '%s'", msg);
    CHECK(aha_comm_barrier(c, &err) == AHA_OK, "barrier: %s", err.msg);

    /* checksum mismatch: the last rank disagrees; every rank gets the verdict naming it */
    uint64_t hash = rank == world - 1 ? 0xbadull : 0x600dull;
    aha_status st = aha_comm_check_agree(c, hash, "weights", &err);
    char name[32];
    snprintf(name, sizeof name, "rank(s) %d (", world - 1);
    CHECK(st == AHA_EINTERNAL && strstr(err.msg, name) && strstr(err.msg, "weights"),
          "rank %d: mismatch verdict: %s", rank, err.msg);
    fprintf(stderr, "  rank %d: %s\n", rank, err.msg);
    /* a disagreement is a verdict, not a broken communicator */
    CHECK(aha_comm_check_agree(c, 42, "weights", &err) == AHA_OK, "agree after mismatch: %s", err.msg);

    /* ranks that call different collectives: a clear internal error, then broken */
    float one = 1;
    if (rank == 1) st = aha_comm_broadcast(c, (aha_tensor){&one, AHA_DT_F32}, 1, 0, &err);
    else st = aha_comm_all_reduce_sum(c, (aha_tensor){&one, AHA_DT_F32}, 1, &err);
    if (rank == 0)
        CHECK(st == AHA_EINTERNAL && strstr(err.msg, "rank 1 calls broadcast"), "desync at rank 0: %s", err.msg);
    else
        CHECK(st != AHA_OK && strstr(err.msg, "rank 1 calls broadcast"), "desync at rank %d: %s", rank, err.msg);
    CHECK(aha_comm_barrier(c, &err) == AHA_EPRECOND && aha_comm_broken(c), "broken after desync: %s", err.msg);

    free(x);
    free(want);
    free(other);
    aha_comm_free(c);
    (void)arg;
}

/* ---- failures -------------------------------------------------------------------------------- */

enum { DIE_INSIDE, HANG, NEVER_JOIN };

static void *die_later(void *arg)
{
    struct timespec ts = {0, 150 * 1000000};
    nanosleep(&ts, NULL);
    _exit(0); /* mid-collective: its CALL is out, it waits for the GO */
    return arg;
}

static void ranks_failure(int rank, int world, const char *rdv, void *arg)
{
    int mode = *(int *)arg, timeout = 1500;
    int victim = world - 1;
    if (mode == NEVER_JOIN && rank == victim) return;
    aha_comm *c = join(rank, world, rdv, timeout);
    if (!c) return;
    aha_err err = {0};
    float x[64] = {0};
    if (rank == victim) {
        if (mode == DIE_INSIDE) {
            pthread_t th;
            pthread_create(&th, NULL, die_later, NULL);
            aha_comm_all_reduce_sum(c, (aha_tensor){x, AHA_DT_F32}, 64, &err);
        } else {
            sleep(3); /* hangs: never enters the collective */
        }
        aha_comm_free(c);
        return;
    }
    if (rank == 0) {
        struct timespec ts = {0, 400 * 1000000}; /* so the victim is inside before rank 0 is */
        nanosleep(&ts, NULL);
    }
    double t0 = wall();
    aha_status st = aha_comm_all_reduce_sum(c, (aha_tensor){x, AHA_DT_F32}, 64, &err);
    double dt = wall() - t0;
    fprintf(stderr, "  rank %d after %.2f s: %s: %s\n", rank, dt, aha_status_name(st), err.msg);
    char name[32];
    snprintf(name, sizeof name, "rank %d", victim);
    aha_status want = mode == DIE_INSIDE ? AHA_EUNAVAILABLE : AHA_ETIMEOUT;
    CHECK(st == want && strstr(err.msg, name), "rank %d: want %s naming %s, got %s: %s", rank,
          aha_status_name(want), name, aha_status_name(st), err.msg);
    CHECK(dt < timeout / 1000.0 + 2.0, "rank %d: took %.2f s", rank, dt);
    if (mode == DIE_INSIDE) CHECK(dt < 1.0, "a dead rank is noticed at once (%.2f s)", dt);
    CHECK(aha_comm_all_reduce_sum(c, (aha_tensor){x, AHA_DT_F32}, 64, &err) == AHA_EPRECOND, "broken: %s", err.msg);
    aha_comm_free(c);
}

static void ranks_never(int rank, int world, const char *rdv, void *arg)
{
    aha_comm_opts o = {.rank = rank, .world_size = world, .rendezvous = rdv, .timeout_ms = 800, .name = "test"};
    aha_comm *c = NULL;
    aha_err err = {0};
    double t0 = wall();
    aha_status st = aha_comm_create(&o, &c, &err);
    double dt = wall() - t0;
    fprintf(stderr, "  rank %d: %s: %s\n", rank, aha_status_name(st), err.msg);
    CHECK(st != AHA_OK && c == NULL, "rendezvous without rank 2 must fail");
    if (rank == 0) CHECK(st == AHA_ETIMEOUT && strstr(err.msg, "rank(s) 2 did not join"), "%s", err.msg);
    CHECK(dt < 0.8 + 2.0, "took %.2f s", dt);
    (void)arg;
}

static void bad_args(void)
{
    aha_err err = {0};
    aha_comm *c = NULL;
    aha_comm_opts o = {.rank = 0, .world_size = 2, .rendezvous = "nohostport", .name = "x"};
    CHECK(aha_comm_create(&o, &c, &err) == AHA_EINVAL && strstr(err.msg, "host:port"), "%s", err.msg);
    o.rendezvous = "127.0.0.1:99999";
    CHECK(aha_comm_create(&o, &c, &err) == AHA_EINVAL, "%s", err.msg);
    o.rank = 2;
    CHECK(aha_comm_create(&o, &c, &err) == AHA_EINVAL, "%s", err.msg);
    if (!aha_comm_have_nccl()) {
        o = (aha_comm_opts){.rank = 0, .world_size = 1, .kind = AHA_COMM_NCCL};
        CHECK(aha_comm_create(&o, &c, &err) == AHA_EUNSUPPORTED, "%s", err.msg);
    }
    /* world 1: collectives are no-ops */
    o = (aha_comm_opts){.rank = 0, .world_size = 1};
    CHECK(aha_comm_create(&o, &c, &err) == AHA_OK, "%s", err.msg);
    float v = 3;
    CHECK(aha_comm_all_reduce_sum(c, (aha_tensor){&v, AHA_DT_F32}, 1, &err) == AHA_OK && v == 3, "world 1");
    CHECK(aha_comm_all_reduce_sum(c, (aha_tensor){&v, AHA_DT_BF16}, 1, &err) == AHA_EUNSUPPORTED, "bf16 sum");
    aha_comm_free(c);
    aha_comm_kind k;
    CHECK(aha_comm_kind_parse("nccl", &k, &err) == AHA_OK && k == AHA_COMM_NCCL, "parse");
    CHECK(aha_comm_kind_parse("mpi", &k, &err) == AHA_EINVAL, "parse mpi");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    bad_args();
    for (int w = 2; w <= 3; w++) {
        fprintf(stderr, "== collectives, %d ranks\n", w);
        CHECK(rk_run(w, w, ranks_collectives, NULL, 40) == 0, "collectives with %d ranks", w);
    }
    int mode = DIE_INSIDE;
    fprintf(stderr, "== a rank exits inside the collective\n");
    CHECK(rk_run(3, 3, ranks_failure, &mode, 20) == 0, "dead rank");
    mode = HANG;
    fprintf(stderr, "== a rank hangs\n");
    CHECK(rk_run(3, 3, ranks_failure, &mode, 20) == 0, "hung rank");
    fprintf(stderr, "== a rank never joins\n");
    CHECK(rk_run(3, 2, ranks_never, NULL, 20) == 0, "missing rank");
    return th_done("dist comm");
}
