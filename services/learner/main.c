/* aha-learner: the job API (aha.v1.Learner) and the job runner of aha. This file parses the
 * flags, opens the job store (jobs.c) with the runner (aha_job_run, runner.h), registers the
 * API (api.c) and serves until SIGTERM/SIGINT.
 *
 * Shutdown: on SIGTERM/SIGINT a thread of ours (woken through a pipe) first stops the store, which
 * asks the running job to stop at its next step boundary and ends every WatchJob, then drains
 * the server. The interrupted job stays "running" on disk, so the next start with the same
 * --jobs-dir re-queues it first and the runner resumes it from its last checkpoint. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "base/fs.h"
#include "base/log.h"
#include "jobs.h"
#include "rpc/rpc.h"
#include "rpc/service.h"
#include "rpc/service_main.h"

static void usage(FILE *f)
{
    fputs("usage: aha-learner --jobs-dir DIR [--rollout ADDR[,ADDR...]] [--reward ADDR]\n"
          "                   [--refpolicy ADDR] [--device cpu|cuda:N] [flags]\n"
          "Serves aha.v1.Learner (SubmitJob, GetJob, ListJobs, CancelJob, WatchJob) and\n"
          "grpc.health.v1.Health; runs the submitted jobs one at a time.\n"
          "learner flags:\n"
          "  --jobs-dir DIR          job state, metrics and checkpoints (created if missing)\n"
          "  --rollout ADDR[,...]    rollout workers a job uses unless its spec names others\n"
          "  --reward ADDR           reward service (default for jobs)\n"
          "  --refpolicy ADDR        reference-policy service (default for jobs)\n"
          "  --device cpu|cuda:N     where the learner trains (default cpu)\n"
          "  --rpc-timeout-ms N      deadline of every call the learner makes (default 600000)\n"
          "  --rank N --world-size N --rendezvous HOST:PORT\n"
          "                          data-parallel learner group: rank 0 serves the job API and\n"
          "                          listens on HOST:PORT for the other ranks while a grpo/sft\n"
          "                          job runs; ranks != 0 train their share of every step\n"
          "                          (they serve only grpc.health.v1)\n"
          "  --dist-timeout-ms N     group rendezvous and every collective (default 300000)\n"
          "  --dist-retries N        rank 0: re-form a broken group and resume the job from its\n"
          "                          last checkpoint this often (default 3)\n"
          "  --dist-check-every N    compare the ranks' weights every N updates (default 20)\n"
          "  --dist-transport tcp|nccl  (default: nccl on cuda devices when built with NCCL)\n"
          "  --weights-rendezvous HOST:PORT\n"
          "                          where rank 0 listens for the rollout workers to join its\n"
          "                          weights group (NCCL broadcast push on one node); workers that\n"
          "                          cannot join leave the job on gRPC streaming\n"
          "  --weights-transport nccl|tcp|grpc  (default: nccl on cuda with NCCL, else grpc)\n"
          "  --watcher-queue N       events buffered per WatchJob client before old metrics\n"
          "                          are dropped (default 256)\n",
          f);
}

typedef struct {
    char *rollout_store;
    aha_learner_env env;
    const char *jobs_dir;
    long rank, world_size;
    const char *rendezvous;
    long watcher_queue;
} learner_flags;

/* A service address: host:port or unix:PATH, no blanks. */
static int valid_addr(const char *flag, const char *a)
{
    if (!*a || strpbrk(a, " \t\n") || (strncmp(a, "unix:", 5) != 0 && !strchr(a, ':'))) {
        fprintf(stderr, "aha-learner: %s: '%s' is not an address (host:port or unix:PATH)\n",
                flag, a);
        return 0;
    }
    return 1;
}

static int parse_rollout(learner_flags *lf, const char *v)
{
    free(lf->rollout_store);
    lf->rollout_store = strdup(v);
    if (!lf->rollout_store) return 0;
    lf->env.n_rollout = 0;
    char *save = NULL;
    for (char *t = strtok_r(lf->rollout_store, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (lf->env.n_rollout == (int)AHA_ARRAY_LEN(lf->env.rollout)) {
            fprintf(stderr, "aha-learner: --rollout: more than %zu addresses\n",
                    AHA_ARRAY_LEN(lf->env.rollout));
            return 0;
        }
        if (!valid_addr("--rollout", t)) return 0;
        lf->env.rollout[lf->env.n_rollout++] = t;
    }
    if (!lf->env.n_rollout) {
        fprintf(stderr, "aha-learner: --rollout: no address in '%s'\n", v);
        return 0;
    }
    return 1;
}

static int valid_device(const char *d)
{
    if (!strcmp(d, "cpu")) return 1;
    if (strncmp(d, "cuda:", 5) != 0 || !d[5]) return 0;
    for (const char *p = d + 5; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return strlen(d + 5) <= 3;
}

static int take_flag(void *user, const aha_rpc_service_args *a, const char *f, const char *v)
{
    learner_flags *lf = user;
    long x;
    if (!strcmp(f, "--jobs-dir")) {
        if (!*v) return fprintf(stderr, "aha-learner: --jobs-dir: empty\n"), 0;
        lf->jobs_dir = v;
    } else if (!strcmp(f, "--rollout")) {
        if (!parse_rollout(lf, v)) return 0;
    } else if (!strcmp(f, "--reward")) {
        if (!valid_addr(f, v)) return 0;
        lf->env.reward = v;
    } else if (!strcmp(f, "--refpolicy")) {
        if (!valid_addr(f, v)) return 0;
        lf->env.refpolicy = v;
    } else if (!strcmp(f, "--device")) {
        if (!valid_device(v))
            return fprintf(stderr, "aha-learner: --device: '%s' is not cpu or cuda:N\n", v), 0;
        lf->env.device = v;
    } else if (!strcmp(f, "--rpc-timeout-ms")) {
        if (!aha_rpc_service_int_flag(a, f, v, 100, 86400000L, &x)) return 0;
        lf->env.rpc_timeout_ms = (int)x;
    } else if (!strcmp(f, "--rank")) {
        if (!aha_rpc_service_int_flag(a, f, v, 0, 4095, &lf->rank)) return 0;
    } else if (!strcmp(f, "--world-size")) {
        if (!aha_rpc_service_int_flag(a, f, v, 1, 4096, &lf->world_size)) return 0;
    } else if (!strcmp(f, "--rendezvous")) {
        if (!valid_addr(f, v)) return 0;
        lf->rendezvous = v;
    } else if (!strcmp(f, "--dist-timeout-ms")) {
        if (!aha_rpc_service_int_flag(a, f, v, 100, 86400000L, &x)) return 0;
        lf->env.dist_timeout_ms = (int)x;
    } else if (!strcmp(f, "--dist-retries")) {
        if (!aha_rpc_service_int_flag(a, f, v, 0, 1000, &x)) return 0;
        lf->env.dist_retries = (int)x;
    } else if (!strcmp(f, "--dist-check-every")) {
        if (!aha_rpc_service_int_flag(a, f, v, 1, 1000000, &x)) return 0;
        lf->env.dist_check_every = (int)x;
    } else if (!strcmp(f, "--dist-transport")) {
        if (strcmp(v, "tcp") != 0 && strcmp(v, "nccl") != 0)
            return fprintf(stderr, "aha-learner: --dist-transport: '%s' is not tcp or nccl\n", v), 0;
        lf->env.dist_transport = v;
    } else if (!strcmp(f, "--weights-rendezvous")) {
        if (!valid_addr(f, v)) return 0;
        lf->env.weights_rendezvous = v;
    } else if (!strcmp(f, "--weights-transport")) {
        if (strcmp(v, "tcp") != 0 && strcmp(v, "nccl") != 0 && strcmp(v, "grpc") != 0)
            return fprintf(stderr, "aha-learner: --weights-transport: '%s' is not nccl, tcp or grpc\n", v), 0;
        lf->env.weights_transport = v;
    } else if (!strcmp(f, "--watcher-queue")) {
        if (!aha_rpc_service_int_flag(a, f, v, 4, 1000000, &lf->watcher_queue)) return 0;
    } else {
        /* the learner has always named an unknown flag that has a value this way */
        fprintf(stderr, "aha-learner: unknown flag: %s\n", f);
        return 0;
    }
    return 1;
}

static int check_flags(void *user)
{
    learner_flags *lf = user;
    if (lf->rank >= lf->world_size) {
        fprintf(stderr, "aha-learner: --rank %ld must be below --world-size %ld\n", lf->rank,
                lf->world_size);
        return 0;
    }
    if (lf->world_size > 1 && !lf->rendezvous) {
        fprintf(stderr, "aha-learner: --world-size %ld needs --rendezvous ADDR (rank 0's)\n",
                lf->world_size);
        return 0;
    }
    lf->env.rank = (int)lf->rank;
    lf->env.world_size = (int)lf->world_size;
    lf->env.rendezvous = lf->rendezvous;
    return 1;
}

static const aha_rpc_service_main learner_main = {
    .name = "learner", .default_listen = "0.0.0.0:50050", .usage = usage, .flag = take_flag,
    .required = "--jobs-dir DIR", .check = check_flags,
};

/* Signals reach whichever thread the kernel picks (libraries such as OpenBLAS start threads
 * before main, so blocking them here cannot cover every thread): the handler only writes the
 * signal number to a pipe, and a thread of ours does the stopping. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(sig_pipe[1], &b, 1);
    (void)w;
    errno = saved;
}

typedef struct {
    aha_jobs *jobs;
    aha_rpc_server *srv;
} sig_ctx;

static void *signal_thread(void *arg)
{
    sig_ctx *c = arg;
    for (;;) {
        unsigned char b;
        ssize_t r = read(sig_pipe[0], &b, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || b == 0) break; /* 0: main's wake-up at exit */
        AHA_INFO("signal %d: stopping (a running job resumes at the next start)", b);
        aha_jobs_stop(c->jobs);
        aha_rpc_server_stop(c->srv); /* a second signal cancels the remaining calls */
    }
    return NULL;
}

/* Ranks != 0: grpc.health.v1 for the orchestrator's probes, and the follower loop
 * (runner.h) until a signal ends the process: a follower holds nothing rank 0 does not
 * (rank 0 writes the checkpoints), so SIGTERM's default action is the right shutdown. */
static int run_follower(aha_rpc_service_args *a, const learner_flags *lf)
{
    aha_err err = {0};
    aha_rpc_server *srv = NULL;
    aha_status st = aha_rpc_server_create(&a->server, &srv, &err);
    if (st == AHA_OK) st = aha_rpc_server_start(srv, &err);
    if (st == AHA_OK) {
        aha_rpc_service_announce(a, srv);
        st = aha_job_follow(&lf->env, NULL, false, &err);
    }
    if (st != AHA_OK) fprintf(stderr, "aha-learner: rank %ld: %s\n", lf->rank, err.msg);
    if (srv) {
        aha_rpc_server_stop(srv);
        aha_err e2 = {0};
        aha_rpc_server_wait(srv, &e2);
        aha_rpc_server_free(srv);
    }
    return st == AHA_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    aha_rpc_service_args a;
    learner_flags lf = {.env = {.device = "cpu", .rpc_timeout_ms = 600000, .dist_retries = 3},
                        .world_size = 1,
                        .watcher_queue = 256};
    int rc;
    if (!aha_rpc_service_begin(&a, &learner_main, argc, argv, &lf, &rc)) {
        free(lf.rollout_store);
        return rc;
    }
    aha_err err;
    /* --job-token-file, --service-token-file and --tls-ca are common service flags
     * (rpc/service.h): the job token is accepted on the job API only, and the service token
     * and CA go to the job runner's clients through the environment. */
    if (a.server.service_token) setenv("AHA_SERVICE_TOKEN", a.server.service_token, 1);
    if (a.tls_ca) setenv("AHA_TLS_CA", a.tls_ca, 1);
    AHA_INFO("jobs dir %s; rollout %d address(es)%s%s; reward %s; refpolicy %s; device %s; "
             "rpc timeout %d ms; rank %ld of %ld%s",
             lf.jobs_dir, lf.env.n_rollout, lf.env.n_rollout ? " from " : "",
             lf.env.n_rollout ? lf.env.rollout[0] : "", lf.env.reward ? lf.env.reward : "-",
             lf.env.refpolicy ? lf.env.refpolicy : "-", lf.env.device, lf.env.rpc_timeout_ms,
             lf.rank, lf.world_size,
             a.server.job_token || a.server.auth_token ? "; job token required" : "");

    if (lf.rank > 0) {
        rc = run_follower(&a, &lf);
        free(lf.rollout_store);
        aha_rpc_service_args_free(&a);
        return rc;
    }
    if (pipe2(sig_pipe, O_CLOEXEC) != 0) {
        fprintf(stderr, "aha-learner: pipe: %s\n", strerror(errno));
        return 1;
    }
    sig_ctx sc = {0};
    aha_jobs_opts jo;
    aha_jobs_opts_init(&jo);
    jo.jobs_dir = lf.jobs_dir;
    jo.env = &lf.env;
    jo.run = aha_job_run;
    jo.watcher_queue = (int)lf.watcher_queue;
    aha_jobs *jobs = NULL;
    aha_rpc_server *srv = NULL;
    pthread_t sig_thread;
    int sig_started = 0;
    /* Open the store without running: a job re-queued from a previous run starts only once
     * the API is up, so a bad --listen does not start a job only to stop it at once. */
    jo.autostart = 0;
    aha_status st = aha_jobs_open(&jo, &jobs, &err);
    if (st == AHA_OK) st = aha_rpc_server_create(&a.server, &srv, &err);
    if (st == AHA_OK) st = aha_learner_api_register(srv, jobs, &err);
    if (st == AHA_OK) st = aha_rpc_server_start(srv, &err);
    if (st == AHA_OK) st = aha_jobs_start(jobs, &err);
    if (st == AHA_OK) {
        sc.jobs = jobs;
        sc.srv = srv;
        if (pthread_create(&sig_thread, NULL, signal_thread, &sc) == 0) {
            sig_started = 1;
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_signal;
            sigemptyset(&sa.sa_mask);
            sa.sa_flags = SA_RESTART;
            sigaction(SIGTERM, &sa, NULL);
            sigaction(SIGINT, &sa, NULL);
        } else {
            st = aha_errf(&err, AHA_EINTERNAL, "cannot start the signal thread");
        }
    }
    if (st == AHA_OK) {
        aha_rpc_service_announce(&a, srv);
        st = aha_rpc_server_wait(srv, &err);
    }
    if (st != AHA_OK) {
        fprintf(stderr, "aha-learner: %s\n", err.msg);
        if (st == AHA_ETIMEOUT) return 1; /* handlers still running: do not free under them */
    }
    if (sig_started) {
        unsigned char zero = 0;
        ssize_t w = write(sig_pipe[1], &zero, 1);
        (void)w;
        pthread_join(sig_thread, NULL);
    }
    aha_jobs_close(jobs); /* waits for the running job to reach a step boundary */
    aha_rpc_server_free(srv);
    free(lf.rollout_store);
    aha_rpc_service_args_free(&a);
    return st == AHA_OK ? 0 : 1;
}
