/* bench_dist.c: the multi-GPU figures of issue 7 on one node with >= 2 GPUs, one process per
 * GPU (forked; the parent never touches CUDA). Prints a table per part:
 *   allreduce  NCCL all-reduce of the Qwen2.5-0.5B gradient size (494M fp32) over 2 GPUs:
 *              exact check against the host sum (a + b is exact in fp32 whatever the order),
 *              then seconds and bus bandwidth; bf16 broadcast of the weight size.
 *   train      SFT steps on random tokens, Qwen2.5-0.5B shape (random init), global batch
 *              of B sequences of T tokens in micro-batches of MB: 1 rank (cuda:0) then 2
 *              ranks (B/2 each, aha_dp_step over NCCL). Training tokens/s (steps 2..S) and
 *              the weights after S steps of the two runs compared (bf16 compute, fp32 master).
 *   push       weight push of the 0.5B shape (~1 GB bf16) from a "learner" on cuda:0 to a
 *              "worker" on cuda:1: gRPC UpdateWeights (snapshot + stream, the cross-host path)
 *              and the NCCL weights group (weightgroup.h), three times each; the worker's
 *              weight hash after the last push is printed beside the learner's.
 * Usage: bench_dist [all|allreduce|train|push] [B T MB S layers]
 * NCCL_NVLS_ENABLE is forced to 0 here and in comm.c (NVLink multicast stays off). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aha/v1/rollout.pb-c.h"
#include "backend/backend.h"
#include "base/fs.h"
#include "base/rng.h"
#include "dist/comm.h"
#include "dist/dp.h"
#include "dist/weightgroup.h"
#include "model/model.h"
#include "qwen05.h"
#include "model/weightpush.h"
#include "rpc/rpc.h"

static int B = 32, T = 512, MB = 8, S = 4, LAYERS = 24;
/* BENCH_DIST_CPU=1: a dry run of every code path on the CPU backend over the TCP communicator
 * with a small model, to check the program before it spends GPU time */
static bool CPU;

static void die(const char *what, const aha_err *err)
{
    fprintf(stderr, "bench_dist: %s: %s\n", what, aha_err_msg(err));
    exit(1);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) exit(1);
    close(fd);
    return ntohs(a.sin_port);
}

typedef void (*rank_fn)(int rank, int world, const char *rdv, int port2);

/* fork world ranks; returns how many failed */
static int run_ranks(int world, rank_fn fn)
{
    char rdv[64];
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", free_port());
    int port2 = free_port();
    pid_t pids[8];
    fflush(stdout);
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            alarm(400);
            fn(r, world, rdv, port2);
            fflush(stdout);
            _exit(0);
        }
    }
    int bad = 0;
    for (int r = 0; r < world; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) {
            fprintf(stderr, "bench_dist: rank %d failed (status %d)\n", r, st);
            bad++;
        }
    }
    return bad;
}

static aha_backend *open_gpu(int dev)
{
    char name[16];
    snprintf(name, sizeof name, CPU ? "cpu" : "cuda:%d", dev);
    aha_backend *be = NULL;
    aha_err err = {0};
    if (aha_backend_open(name, 0, &be, &err) != AHA_OK) die(name, &err);
    return be;
}

static aha_comm *open_comm(int rank, int world, const char *rdv, aha_backend *be, const char *name)
{
    aha_comm_opts o = {.rank = rank, .world_size = world, .rendezvous = rdv,
                       .kind = CPU ? AHA_COMM_TCP : AHA_COMM_NCCL, .timeout_ms = 120000, .be = be, .name = name};
    aha_comm *c = NULL;
    aha_err err = {0};
    if (aha_comm_create(&o, &c, &err) != AHA_OK) die("comm", &err);
    return c;
}

static aha_model *qwen05(aha_backend *be, bool training)
{
    aha_model_config cfg;
    bench_qwen05_config(&cfg, LAYERS);
    if (CPU) {
        cfg.vocab_size = 4096;
        cfg.hidden_size = 128;
        cfg.intermediate_size = 256;
        cfg.num_heads = 4;
        cfg.head_dim = 32;
    }
    aha_model_opts opts = {.max_batch_tokens = MB * T, .logits_chunk_rows = 2048, .training = training};
    aha_model *m = NULL;
    aha_err err = {0};
    if (aha_model_init_random(&cfg, 1, be, &opts, &m, &err) != AHA_OK) die("init_random", &err);
    return m;
}

/* ---- allreduce ---------------------------------------------------------------------------- */

static float val(int64_t i, int rank) { return (float)((uint64_t)(i * 2654435761u + (uint64_t)rank * 97u) % 1000u) / 997.0f - 0.5f; }

static void rank_allreduce(int rank, int world, const char *rdv, int port2)
{
    aha_backend *be = open_gpu(rank);
    aha_comm *c = open_comm(rank, world, rdv, be, "allreduce");
    aha_err err = {0};
    int64_t n = CPU ? 3000001 : 494032768; /* the gradient tensor of the 0.5B shape, roughly */
    aha_buf *buf = NULL;
    if (be->ops->buf_alloc(be, (size_t)n * 4, &buf, &err) != AHA_OK) die("alloc", &err);
    aha_tensor x = {be->ops->buf_base(buf), AHA_DT_F32};
    float *h = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) h[i] = val(i, rank);
    be->ops->to_device(be, x, h, (size_t)n * 4, &err);
    if (aha_comm_all_reduce_sum(c, x, n, &err) != AHA_OK) die("all_reduce", &err);
    be->ops->to_host(be, h, x, (size_t)n * 4, &err);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float want = 0;
        for (int r = 0; r < world; r++) want += val(i, r);
        bad += h[i] != want;
    }
    double best = 1e9;
    for (int it = 0; it < 5; it++) {
        double t0 = aha_now_s();
        if (aha_comm_all_reduce_sum(c, x, n, &err) != AHA_OK) die("all_reduce", &err);
        double dt = aha_now_s() - t0;
        if (dt < best) best = dt;
    }
    /* bf16 broadcast of the weight size */
    aha_tensor w = {x.data, AHA_DT_BF16};
    double bbest = 1e9;
    for (int it = 0; it < 5; it++) {
        double t0 = aha_now_s();
        if (aha_comm_broadcast(c, w, n, 0, &err) != AHA_OK) die("broadcast", &err);
        double dt = aha_now_s() - t0;
        if (dt < bbest) bbest = dt;
    }
    if (rank == 0) {
        double gb = (double)n * 4 / 1e9;
        printf("allreduce: %d GPUs, %lld fp32 (%.2f GB): %lld elements differ from the host sum\n", world,
               (long long)n, gb, (long long)bad);
        printf("allreduce: best of 5 %.4f s, algbw %.1f GB/s, busbw %.1f GB/s\n", best, gb / best,
               gb / best * 2.0 * (world - 1) / world);
        printf("broadcast bf16 %.2f GB: best of 5 %.4f s (%.1f GB/s)\n", (double)n * 2 / 1e9, bbest,
               (double)n * 2 / 1e9 / bbest);
    } else if (bad) {
        printf("allreduce: rank %d: %lld elements differ\n", rank, (long long)bad);
    }
    free(h);
    be->ops->buf_free(be, buf);
    aha_comm_free(c);
    aha_backend_free(be);
}

/* ---- train -------------------------------------------------------------------------------- */

static const char *REF_PATH = "/tmp/bench_dist_ref.f32";

static void train_run(int rank, int world, const char *rdv)
{
    aha_backend *be = open_gpu(rank);
    aha_comm *c = world > 1 ? open_comm(rank, world, rdv, be, "learner") : NULL;
    aha_model *m = qwen05(be, true);
    aha_train *t = NULL;
    aha_err err = {0};
    if (aha_train_create(m, &t, &err) != AHA_OK) die("train", &err);
    int V = aha_model_cfg(m)->vocab_size;
    /* the global batch: the same ids on every rank, each rank takes its share */
    int32_t *ids = malloc((size_t)B * T * 4);
    aha_rng g;
    aha_rng_seed(&g, 99, 0);
    for (int64_t i = 0; i < (int64_t)B * T; i++) ids[i] = (int32_t)aha_rng_below(&g, (uint64_t)V);
    float *mask = malloc((size_t)MB * (T - 1) * 4);
    for (int i = 0; i < MB * (T - 1); i++) mask[i] = 1.0f;
    int32_t cu[65];
    for (int i = 0; i <= MB; i++) cu[i] = i * T;
    int s0, s1;
    aha_dp_shard(B, rank, world, &s0, &s1);
    float scale = 1.0f / ((float)B * (float)(T - 1)); /* global masked tokens */
    /* the weight agreement check (a host copy and hash of every weight) runs after the timed
     * steps: it would otherwise count seconds that a learner spends once every K steps */
    aha_dp_opts o = {.max_grad_norm = 1.0, .check_every = 0};
    o.adamw = (aha_adamw_args){.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f};
    double t_steps = 0, t_reduce = 0;
    for (int step = 1; step <= S; step++) {
        if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);
        double t0 = aha_now_s();
        aha_train_zero_grad(t, &err);
        double loss = 0;
        for (int s = s0; s < s1; s += MB) {
            int n = s1 - s < MB ? s1 - s : MB;
            aha_batch b = {ids + (size_t)s * T, cu, n, NULL};
            double l = 0;
            if (aha_model_sft_backward(m, t, &b, mask, scale, &l, &err) != AHA_OK) die("backward", &err);
            loss += l;
        }
        aha_dp_info info;
        if (aha_dp_step(c, m, t, &o, &info, &err) != AHA_OK) die("dp_step", &err);
        if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);
        double dt = aha_now_s() - t0;
        if (step > 1) {
            t_steps += dt;
            t_reduce += info.reduce_s;
        }
        if (rank == 0)
            printf("train: %d rank(s) step %d: %.3f s (all-reduce %.3f s), local loss %.5f, grad norm %.4f\n", world,
                   step, dt, info.reduce_s, loss, info.grad_norm);
    }
    uint64_t wh = 0;
    aha_status agree = aha_dp_check_weights(c, m, &wh, &err);
    if (rank == 0)
        printf("train: %d rank(s): weights after %d steps %s (hash %016llx)\n", world, S,
               agree == AHA_OK ? "agree across ranks" : err.msg, (unsigned long long)wh);
    double toks = (double)B * T * (S - 1);
    if (rank == 0)
        printf("train: %d rank(s): %.0f tokens/s (global batch %d x %d, steps 2..%d), all-reduce %.1f%% of step time\n",
               world, toks / t_steps, B, T, S, 100 * t_reduce / t_steps);
    /* weights after S steps: the one-rank run writes them, the two-rank run compares */
    if (rank == 0) {
        int64_t np = aha_model_param_count(m), off = 0;
        float *w = malloc((size_t)np * 4);
        for (int i = 0; i < aha_model_n_params(m); i++) {
            aha_model_param_get_f32(m, i, w + off, &err);
            off += aha_model_param(m, i)->numel;
        }
        if (world == 1) {
            FILE *f = fopen(REF_PATH, "wb");
            if (!f || fwrite(w, 4, (size_t)np, f) != (size_t)np) printf("train: cannot write %s\n", REF_PATH);
            if (f) fclose(f);
        } else {
            FILE *f = fopen(REF_PATH, "rb");
            float *r = malloc((size_t)np * 4);
            if (f && fread(r, 4, (size_t)np, f) == (size_t)np) {
                double worst = 0, num = 0, den = 0;
                int64_t wi = 0;
                for (int64_t i = 0; i < np; i++) {
                    double d = fabs((double)w[i] - r[i]);
                    if (d > worst) worst = d, wi = i;
                    num += d * d;
                    den += (double)r[i] * r[i];
                }
                printf("train: 2 ranks vs 1 rank after %d steps: max |dw| %.3e at [%lld] (%g vs %g), rel %.3e "
                       "(lr %.0e: one step moves a weight by about lr)\n",
                       S, worst, (long long)wi, (double)w[wi], (double)r[wi], sqrt(num / den), (double)o.adamw.lr);
            } else {
                printf("train: no reference weights at %s\n", REF_PATH);
            }
            if (f) fclose(f);
            free(r);
        }
        free(w);
    }
    free(ids);
    free(mask);
    aha_train_free(t);
    aha_model_free(m);
    aha_comm_free(c);
    aha_backend_free(be);
}

static void rank_train(int rank, int world, const char *rdv, int port2) { train_run(rank, world, rdv); }

/* ---- push ----------------------------------------------------------------------------------- */

typedef struct {
    aha_model *m;
} worker;

static aha_status h_update(aha_rpc_call *call, const ProtobufCMessage *msg, void *user, aha_err *err)
{
    worker *w = user;
    aha_weight_rx *rx = NULL;
    AHA_TRY(aha_weight_rx_receive(call, w->m, &rx, err));
    aha_status st = aha_weight_rx_apply(rx, w->m, err);
    if (st == AHA_OK) {
        Aha__V1__UpdateWeightsReply r = AHA__V1__UPDATE_WEIGHTS_REPLY__INIT;
        r.version = aha_weight_rx_version(rx);
        r.tensors = aha_weight_rx_tensors(rx);
        r.bytes = aha_weight_rx_bytes(rx);
        st = aha_rpc_call_send(call, &r.base, err);
    }
    aha_weight_rx_free(rx);
    return st;
}

static aha_status wg_apply(void *user, aha_tensor staged, int64_t numel, int64_t version, aha_err *err)
{
    return aha_weight_group_copy_into(((worker *)user)->m, staged, numel, err);
}

static void rank_push(int rank, int world, const char *rdv, int port2)
{
    aha_backend *be = open_gpu(rank);
    aha_err err = {0};
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port2);
    if (rank == 1) {
        /* the worker: a different init, so the pushes change something */
        worker w = {qwen05(be, false)};
        aha_rpc_server_opts so;
        aha_rpc_server_opts_init(&so);
        so.listen = target;
        so.name = "bench-worker";
        aha_rpc_server *s = NULL;
        if (aha_rpc_server_create(&so, &s, &err) != AHA_OK ||
            aha_rpc_server_add_method(s, &aha__v1__rollout__descriptor, "UpdateWeights", AHA_RPC_CLIENT_STREAM, h_update,
                                      &w, &err) != AHA_OK ||
            aha_rpc_server_start(s, &err) != AHA_OK)
            die("worker server", &err);
        aha_weight_group_opts o = {.rendezvous = rdv, .rank = 1, .world_size = 2, .kind = CPU ? AHA_COMM_TCP : AHA_COMM_NCCL,
                                   .timeout_ms = 120000};
        aha_weight_group *g = NULL;
        if (aha_weight_group_join(w.m, &o, aha_weight_group_signature(w.m), wg_apply, &w, &g, &err) != AHA_OK)
            die("join", &err);
        aha_weight_group_state st;
        do {
            usleep(20000);
            aha_weight_group_get_state(g, &st);
        } while (!st.ended);
        uint64_t h = 0;
        aha_dp_weights_hash(w.m, &h, &err);
        printf("push: worker: %lld NCCL pushes received, last %.3f s (receive + apply), weights hash %016llx\n",
               (long long)st.pushes, st.last_s, (unsigned long long)h);
        aha_weight_group_free(g);
        aha_rpc_server_stop(s);
        aha_rpc_server_wait(s, &err);
        aha_rpc_server_free(s);
        aha_model_free(w.m);
    } else {
        aha_model *m = qwen05(be, false);
        /* make the learner's weights differ from the worker's seed-1 init */
        int64_t n = 0;
        aha_tensor wt = aha_model_weights(m, &n);
        be->ops->scale(be, wt, n, 0.5f, &err);
        aha_weight_group_opts o = {.rendezvous = rdv, .rank = 0, .world_size = 2, .kind = CPU ? AHA_COMM_TCP : AHA_COMM_NCCL,
                                   .timeout_ms = 120000};
        aha_weight_group *g = NULL;
        if (aha_weight_group_open(m, &o, &g, &err) != AHA_OK) die("group open", &err);
        aha_rpc_channel *ch = NULL;
        aha_rpc_channel_opts co;
        aha_rpc_channel_opts_init(&co);
        if (aha_rpc_channel_create(target, &co, &ch, &err) != AHA_OK) die("channel", &err);
        for (int it = 0; it < 3; it++) {
            double t0 = aha_now_s();
            aha_weight_snapshot *snap = NULL;
            if (aha_weight_snapshot_create(m, AHA_DT_BF16, &snap, &err) != AHA_OK) die("snapshot", &err);
            double t1 = aha_now_s();
            aha_weight_push_opts po = {.version = 10 + it, .timeout_ms = 120000};
            aha_weight_push_result res;
            if (aha_weight_snapshot_send(snap, ch, &aha__v1__rollout__descriptor, &po, &res, &err) != AHA_OK)
                die("grpc push", &err);
            double t2 = aha_now_s();
            printf("push: gRPC UpdateWeights %.2f GB: %.3f s (snapshot %.3f s + stream and apply %.3f s)\n",
                   (double)aha_weight_snapshot_bytes(snap) / 1e9, t2 - t0, t1 - t0, t2 - t1);
            aha_weight_snapshot_free(snap);
        }
        /* new weights again, so that the hashes below prove the NCCL path */
        be->ops->scale(be, wt, n, 0.5f, &err);
        for (int it = 0; it < 3; it++) {
            double s = 0;
            if (aha_weight_group_push(g, 20 + it, &s, &err) != AHA_OK) die("nccl push", &err);
            printf("push: NCCL weights group %.2f GB bf16: %.3f s\n", (double)n * 2 / 1e9, s);
        }
        uint64_t h = 0;
        aha_dp_weights_hash(m, &h, &err);
        printf("push: learner weights hash %016llx\n", (unsigned long long)h);
        aha_weight_group_free(g);
        aha_rpc_channel_free(ch);
        aha_model_free(m);
    }
    aha_backend_free(be);
}

int main(int argc, char **argv)
{
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    CPU = getenv("BENCH_DIST_CPU") != NULL;
    signal(SIGPIPE, SIG_IGN);
    const char *what = argc > 1 ? argv[1] : "all";
    if (argc > 2) B = atoi(argv[2]);
    if (argc > 3) T = atoi(argv[3]);
    if (argc > 4) MB = atoi(argv[4]);
    if (argc > 5) S = atoi(argv[5]);
    if (argc > 6) LAYERS = atoi(argv[6]);
    if (B < 2 || B % 2 || T < 2 || MB < 1 || MB > 64 || S < 2 || LAYERS < 1) {
        fprintf(stderr, "usage: bench_dist [all|allreduce|train|push] [B T MB S layers] (B even, MB <= 64, S >= 2)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int bad = 0;
    bool all = strcmp(what, "all") == 0;
    if (all || strcmp(what, "allreduce") == 0) bad += run_ranks(2, rank_allreduce);
    if (all || strcmp(what, "train") == 0) {
        bad += run_ranks(1, rank_train);
        bad += run_ranks(2, rank_train);
    }
    if (all || strcmp(what, "push") == 0) bad += run_ranks(2, rank_push);
    return bad ? 1 : 0;
}
