/* bench_push.c: where the gRPC weight push's time goes, on loopback, CPU backend: a model of
 * the GPU demo's shape (examples/gpu-model/config.json: 75.7M parameters, 151 MB as bf16) is
 * snapshotted and streamed to an in-process UpdateWeights server several times per chunk size.
 * The server (aha_weightserve_update, the services' handler) times its apply into its own model,
 * so the table splits a push into
 *   snapshot   aha_weight_snapshot_create (the learner's copy to host memory, bf16)
 *   stream     the client's send until the server has staged the last chunk
 *   apply      the server's write into its model (on the CPU backend: bf16 -> fp32)
 * Usage: bench_push [CONFIG_DIR [REPS]]   (CONFIG_DIR holds config.json; default
 *        examples/gpu-model from the source root, REPS 3) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/refpolicy.pb-c.h"
#include "backend/backend.h"
#include "base/fs.h"
#include "base/log.h"
#include "io/config.h"
#include "model/model.h"
#include "model/weightpush.h"
#include "model/weightserve.h"
#include "rpc/rpc.h"

static void die(const char *what, aha_err *err)
{
    fprintf(stderr, "bench_push: %s: %s\n", what, aha_err_msg(err));
    exit(1);
}

/* the server's apply time of the last push (the stream is the rest of the client's wait) */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static double t_apply;

static aha_status timed_apply(void *user, const aha_weight_rx *rx, aha_err *err)
{
    double t0 = aha_now_s();
    aha_status st = aha_weight_rx_apply(rx, user, err);
    pthread_mutex_lock(&mu);
    t_apply = aha_now_s() - t0;
    pthread_mutex_unlock(&mu);
    return st;
}

/* UpdateWeights as aha-rollout and aha-refpolicy serve it, with the apply timed */
static aha_status h_update(aha_rpc_call *call, const ProtobufCMessage *req, void *user, aha_err *err)
{
    (void)req;
    return aha_weightserve_update(call, user, timed_apply, user, err);
}

int main(int argc, char **argv)
{
    aha_log_set_level(AHA_LOG_WARN);
    const char *root = getenv("AHA_SOURCE_ROOT");
    char dir[1024];
    if (argc > 1) snprintf(dir, sizeof dir, "%s", argv[1]);
    else snprintf(dir, sizeof dir, "%s/examples/gpu-model", root ? root : ".");
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    if (reps < 1) reps = 1;
    aha_err err = {0};
    aha_model_config cfg;
    if (aha_config_load(dir, &cfg, &err) != AHA_OK) die(dir, &err);
    aha_backend *be;
    if (aha_backend_open("cpu", 0, &be, &err) != AHA_OK) die("backend", &err);
    aha_model *src, *dst;
    double t = aha_now_s();
    if (aha_model_init_random(&cfg, 1, be, NULL, &src, &err) != AHA_OK) die("init", &err);
    if (aha_model_init_random(&cfg, 2, be, NULL, &dst, &err) != AHA_OK) die("init", &err);
    fprintf(stderr, "bench_push: two models of %lld parameters, %.1f s\n", (long long)aha_model_numel(src),
            aha_now_s() - t);

    aha_rpc_server_opts so;
    aha_rpc_server_opts_init(&so);
    so.listen = "127.0.0.1:0";
    so.name = "bench_push";
    aha_rpc_server *srv;
    if (aha_rpc_server_create(&so, &srv, &err) != AHA_OK ||
        aha_rpc_server_add_method(srv, &aha__v1__ref_policy__descriptor, "UpdateWeights", AHA_RPC_CLIENT_STREAM,
                                  h_update, dst, &err) != AHA_OK ||
        aha_rpc_server_start(srv, &err) != AHA_OK)
        die("server", &err);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", aha_rpc_server_port(srv));
    aha_rpc_channel *ch;
    if (aha_rpc_channel_create(target, NULL, &ch, &err) != AHA_OK) die("channel", &err);

    printf("bench_push: %s, %lld parameters, bf16, loopback gRPC, best of %d\n", dir,
           (long long)aha_model_numel(src), reps);
    printf("  %10s %10s %10s %10s %10s %12s\n", "chunk MB", "snapshot s", "stream s", "apply s", "push s",
           "stream MB/s");
    size_t chunks[] = {1u << 20, 4u << 20, 16u << 20, 64u << 20};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        double best[4] = {1e9, 1e9, 1e9, 1e9};
        size_t bytes = 0;
        for (int r = 0; r < reps; r++) {
            double t0 = aha_now_s();
            aha_weight_snapshot *snap;
            if (aha_weight_snapshot_create(src, AHA_DT_BF16, &snap, &err) != AHA_OK) die("snapshot", &err);
            double t1 = aha_now_s();
            bytes = aha_weight_snapshot_bytes(snap);
            aha_weight_push_opts po = {.version = r + 1, .chunk_bytes = chunks[k], .timeout_ms = 120000};
            aha_weight_push_result res;
            if (aha_weight_snapshot_send(snap, ch, &aha__v1__ref_policy__descriptor, &po, &res, &err) != AHA_OK)
                die("send", &err);
            double t2 = aha_now_s();
            aha_weight_snapshot_free(snap);
            pthread_mutex_lock(&mu);
            double a = t_apply;
            pthread_mutex_unlock(&mu);
            /* the send returns after the server's reply, i.e. after its apply */
            double parts[4] = {t1 - t0, t2 - t1 - a, a, t2 - t0};
            for (int i = 0; i < 4; i++)
                if (parts[i] < best[i]) best[i] = parts[i];
        }
        printf("  %10.0f %10.3f %10.3f %10.3f %10.3f %12.0f\n", (double)chunks[k] / (1 << 20), best[0], best[1], best[2],
               best[3], (double)bytes / 1e6 / best[1]);
    }
    aha_rpc_channel_free(ch);
    aha_rpc_server_stop(srv);
    aha_rpc_server_wait(srv, NULL);
    aha_rpc_server_free(srv);
    aha_model_free(src);
    aha_model_free(dst);
    aha_backend_free(be);
    return 0;
}
