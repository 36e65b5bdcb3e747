/* aha-job: runs one job spec in the foreground through the same runner aha-learner uses,
 * without the job API: for scripts, debugging and tests. Metrics and eval records go to
 * stdout (one JSON line each) as well as into the job directory; SIGINT/SIGTERM cancel the
 * job at the next step boundary, keeping its last checkpoint, and running the same command
 * again resumes it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/log.h"
#include "runner.h"

static volatile int g_cancel;

static void on_signal(int sig)
{
    (void)sig;
    g_cancel = 1;
}

static void emit(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message)
{
    (void)user;
    (void)step;
    if (json && (type == AHA_EV_METRICS || type == AHA_EV_EVAL)) {
        printf("%s\n", json);
        fflush(stdout);
    } else if (message && type == AHA_EV_STAGE) {
        printf("{\"type\":\"stage\",\"name\":\"%s\"}\n", message);
        fflush(stdout);
    }
}

static int usage(void)
{
    fprintf(stderr,
            "usage: aha-job SPEC.json --job-dir DIR [--rollout ADDR]... [--reward ADDR] [--refpolicy ADDR]\n"
            "               [--device cpu|cuda:N] [--rpc-timeout-ms N] [--log-level LEVEL]\n"
            "               [--rank N --world-size N --rendezvous HOST:PORT [--dist-timeout-ms N]\n"
            "                [--dist-retries N] [--dist-check-every N] [--dist-transport tcp|nccl]]\n"
            "               [--weights-rendezvous HOST:PORT [--weights-transport nccl|tcp|grpc]]\n"
            "A data-parallel job: rank 0 runs SPEC as above; each rank != 0 runs\n"
            "  aha-job --rank R --world-size W --rendezvous HOST:PORT [--device ...]\n"
            "(no spec: it trains its share of the job rank 0 starts, then exits).\n");
    return 2;
}

int main(int argc, char **argv)
{
    aha_learner_env env = {.device = "cpu", .rpc_timeout_ms = 300000};
    const char *spec_path = NULL, *job_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (f[0] != '-') {
            if (spec_path) return usage();
            spec_path = f;
            continue;
        }
        if (!v) return usage();
        if (strcmp(f, "--job-dir") == 0) job_dir = v;
        else if (strcmp(f, "--rollout") == 0 && env.n_rollout < 16) env.rollout[env.n_rollout++] = v;
        else if (strcmp(f, "--reward") == 0) env.reward = v;
        else if (strcmp(f, "--refpolicy") == 0) env.refpolicy = v;
        else if (strcmp(f, "--device") == 0) env.device = v;
        else if (strcmp(f, "--rpc-timeout-ms") == 0) env.rpc_timeout_ms = atoi(v);
        else if (strcmp(f, "--rank") == 0) env.rank = atoi(v);
        else if (strcmp(f, "--world-size") == 0) env.world_size = atoi(v);
        else if (strcmp(f, "--rendezvous") == 0) env.rendezvous = v;
        else if (strcmp(f, "--dist-timeout-ms") == 0) env.dist_timeout_ms = atoi(v);
        else if (strcmp(f, "--dist-retries") == 0) env.dist_retries = atoi(v);
        else if (strcmp(f, "--dist-check-every") == 0) env.dist_check_every = atoi(v);
        else if (strcmp(f, "--dist-transport") == 0) env.dist_transport = v;
        else if (strcmp(f, "--weights-rendezvous") == 0) env.weights_rendezvous = v;
        else if (strcmp(f, "--weights-transport") == 0) env.weights_transport = v;
        else if (strcmp(f, "--log-level") == 0) {
            aha_log_level l;
            if (aha_log_parse_level(v, &l, NULL) != AHA_OK) return usage();
            aha_log_set_level(l);
        } else return usage();
        i++;
    }
    if (env.world_size > 1 || env.rank != 0) {
        if (env.world_size < 2 || env.world_size > 4096 || env.rank < 0 || env.rank >= env.world_size ||
            !env.rendezvous || env.dist_timeout_ms < 0 || env.dist_retries < 0 || env.dist_check_every < 0) {
            fprintf(stderr, "aha-job: --rank must be in [0, --world-size), --world-size >= 2 needs --rendezvous\n");
            return usage();
        }
    }
    aha_err err = {0};
    if (env.rank > 0) {
        aha_log_set_component("job-rank");
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        aha_status st = aha_job_follow(&env, &g_cancel, true, &err);
        if (st != AHA_OK) {
            fprintf(stderr, "aha-job: rank %d: %s\n", env.rank, aha_err_msg(&err));
            return 1;
        }
        return 0;
    }
    if (!spec_path || !job_dir) return usage();
    aha_log_set_component("job");
    char *json = NULL;
    size_t len = 0;
    aha_job_spec spec;
    memset(&spec, 0, sizeof spec);
    aha_status st = aha_read_file(spec_path, AHA_JOB_SPEC_MAX_BYTES, &json, &len, &err);
    if (st == AHA_OK) st = aha_job_spec_parse(json, len, &spec, &err);
    free(json);
    if (st != AHA_OK) {
        fprintf(stderr, "aha-job: %s: %s\n", spec_path, aha_err_msg(&err));
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int64_t step = 0, total = 0;
    aha_job_ctx ctx = {.job_id = job_dir, .job_dir = job_dir, .spec = &spec, .env = &env, .emit = emit,
                       .cancel = &g_cancel, .progress_step = &step, .progress_total = &total};
    st = aha_job_run(&ctx, &err);
    aha_job_spec_free(&spec);
    if (st == AHA_ECANCELLED) {
        fprintf(stderr, "aha-job: cancelled at step %lld (run again to resume)\n", (long long)step);
        return 3;
    }
    if (st != AHA_OK) {
        fprintf(stderr, "aha-job: %s\n", aha_err_msg(&err));
        return 1;
    }
    return 0;
}
