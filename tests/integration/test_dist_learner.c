/* test_dist_learner: the data-parallel learner (docs/DIST.md) as processes over the TCP
 * communicator: rank 0 is `aha-job SPEC --rank 0 --world-size 2 --rendezvous ...`, rank 1 is
 * `aha-job --rank 1 ...`, with real aha-reward / aha-rollout / aha-refpolicy on loopback and a
 * tiny random Qwen2 model.
 *
 * Modes (argv[1]):
 *   grpo_equiv   2 GRPO steps, 1 rank vs 2 ranks with the same global batch (16 completions):
 *                the final checkpoints' weights agree within 1e-5 while training moved them
 *                by far more; the per-step loss agrees too
 *   sft_equiv    the same for 2 SFT steps (batch 6, micro-batch 2)
 *   rank_kill    rank 1 SIGKILLed between two steps (--dist-retries 0): rank 0 fails the job
 *                within seconds with an error naming rank 1; then rank 0 SIGKILLed under a
 *                running rank 1: rank 1 exits with an error naming rank 0
 *   rank_hang    rank 1 frozen (SIGSTOP) between two steps, --dist-timeout-ms 2000: rank 0
 *                fails within the deadline (plus slack) naming rank 1, not a hang
 *   push_group   one learner rank, 2 rollout workers: the job with gRPC weight pushes and with
 *                the weights group (--weights-rendezvous, TCP transport here, NCCL on GPUs) end
 *                with the same weights, bit for bit; metrics name the push path of every step
 *   load_spread  2 rollout workers, the second with 3x the batch slots: the learner splits each
 *                step's prompts by free slots (Rollout/Info), so it generates >= 2x the tokens
 *   learner_ranks  the SFT job submitted to `aha-learner --rank 0 --world-size 2` with an
 *                `aha-learner --rank 1` beside it: it succeeds with the weights of 1 rank (1e-5)
 *   rank_resume  rank 1 SIGKILLed between two steps and started again (--dist-retries 2): the
 *                job re-forms the group, resumes from its last checkpoint and ends with the
 *                same weights, bit for bit, as an undisturbed 2-rank run; every step once
 *
 * Rank 0 is held between two steps exactly (not by timing): its stdout (one JSON line per
 * step) is a pipe the test fills, so it blocks writing the next record, after that step's
 * weight push and checkpoint.
 *
 * argv: MODE aha-reward aha-rollout aha-refpolicy aha-job aha-learner */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness.h"
#include "aha/v1/learner.pb-c.h"
#include "aha/v1/rollout.pb-c.h"
#include "base/fs.h"
#include "learner_env.h"
#include "rpc/rpc.h"

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* ---- a learner rank (th_proc, learner_env.h) -------------------------------------------- */

static void proc_kill(th_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        th_proc_wait(p, 5, -1);
    }
}

static void dump(const char *path)
{
    char *d = NULL;
    size_t n = 0;
    if (aha_read_file(path, (size_t)1 << 20, &d, &n, NULL) == AHA_OK) fprintf(stderr, "--- %s\n%s\n", path, d);
    free(d);
}

/* ---- runs --------------------------------------------------------------------------------- */

typedef struct {
    const char *job_bin, *spec, *root;
    const char *rollout, *reward, *refpolicy;
    const char *rollout2; /* a second worker (push_group) */
} env_t;

/* argv of rank `rank` of `world` (rank 0 runs spec into job_dir) */
static void job_argv(const env_t *e, int rank, int world, const char *job_dir, const char *rdv, const char *extra,
                     char **a, char *store)
{
    int n = 0;
    a[n++] = (char *)e->job_bin;
    if (rank == 0) {
        a[n++] = (char *)e->spec;
        a[n++] = "--job-dir";
        a[n++] = (char *)job_dir;
        if (e->rollout) {
            a[n++] = "--rollout";
            a[n++] = (char *)e->rollout;
            if (e->rollout2) {
                a[n++] = "--rollout";
                a[n++] = (char *)e->rollout2;
            }
            a[n++] = "--reward";
            a[n++] = (char *)e->reward;
            a[n++] = "--refpolicy";
            a[n++] = (char *)e->refpolicy;
        }
    }
    if (world > 1) {
        snprintf(store, 16, "%d", rank);
        snprintf(store + 16, 16, "%d", world);
        a[n++] = "--rank";
        a[n++] = store;
        a[n++] = "--world-size";
        a[n++] = store + 16;
        a[n++] = "--rendezvous";
        a[n++] = (char *)rdv;
        a[n++] = "--dist-check-every";
        a[n++] = "1";
    }
    /* extra: "--flag value" pairs separated by spaces, in store + 32 */
    if (extra && *extra) {
        snprintf(store + 32, 200, "%s", extra);
        for (char *t = strtok(store + 32, " "); t; t = strtok(NULL, " ")) a[n++] = t;
    }
    a[n] = NULL;
}

/* runs the job with `world` ranks to the end; 1 when every rank exited 0 */
static int run_job(const env_t *e, int world, const char *job_dir, const char *extra)
{
    char rdv[64];
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", free_port());
    th_proc p[2];
    memset(p, 0, sizeof p);
    char *argv[2][40];
    char store[2][256];
    int ok = 1;
    for (int r = 0; r < world; r++) {
        snprintf(p[r].errpath, sizeof p[r].errpath, "%s.rank%d.log", job_dir, r);
        job_argv(e, r, world, job_dir, rdv, extra, argv[r], store[r]);
        ok &= th_proc_start(&p[r], argv[r], 0);
    }
    for (int r = 0; r < world; r++) {
        int rc = th_proc_wait(&p[r], 100, -1);
        CHECK(rc == 0, "%s: rank %d of %d exit code %d", job_dir, r, world, rc);
        if (rc != 0) dump(p[r].errpath);
        ok &= rc == 0;
    }
    return ok;
}

/* loss of each step record in job_dir/metrics.jsonl (steps 1..max); returns the count */
static int load_losses(const char *job_dir, double *loss, int max)
{
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.jsonl", job_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1 << 14];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *type = o ? json_string_value(json_object_get(o, "type")) : NULL;
        if (type && strcmp(type, "step") == 0) {
            int s = (int)json_integer_value(json_object_get(o, "step"));
            if (s == n + 1 && n < max) loss[n++] = json_number_value(json_object_get(o, "loss"));
            else n = -1000; /* out of order or repeated */
        }
        json_decref(o);
    }
    fclose(f);
    return n;
}

static void compare_equiv(const char *base, const char *j1, const char *j2, int steps)
{
    long n0 = 0, n1 = 0, n2 = 0;
    float *w0 = th_load_weights(base, &n0);
    float *w1 = th_load_latest_weights(j1, &n1), *w2 = th_load_latest_weights(j2, &n2);
    CHECK(w0 && w1 && w2 && n0 == n1 && n1 == n2, "weights of init, 1 rank and 2 ranks load (%ld %ld %ld)", n0, n1, n2);
    if (w0 && w1 && w2 && n0 == n1 && n1 == n2) {
        double moved = th_max_abs("1 rank vs init", w1, w0, n1);
        double diff = th_max_abs("2 ranks vs 1 rank", w2, w1, n1);
        CHECK(moved > 1e-3, "training moved the weights (max |w - w0| = %.3g)", moved);
        CHECK(diff <= 1e-5, "2 ranks match 1 rank after %d steps: max |diff| = %.3g (bound 1e-5)", steps, diff);
        printf("# %d steps: weights moved %.3g from init; 2 ranks vs 1 rank max |diff| %.3g\n", steps, moved, diff);
    }
    double l1[16], l2[16];
    int c1 = load_losses(j1, l1, 16), c2 = load_losses(j2, l2, 16);
    CHECK(c1 == steps && c2 == steps, "each run recorded steps 1..%d once (%d, %d)", steps, c1, c2);
    for (int s = 0; s < steps && c1 == steps && c2 == steps; s++)
        CHECK(fabs(l1[s] - l2[s]) <= 1e-5 * (1 + fabs(l1[s])), "step %d loss: 1 rank %.9g, 2 ranks %.9g", s + 1, l1[s],
              l2[s]);
    free(w0);
    free(w1);
    free(w2);
}

/* SubmitJob of spec_path to the job API at addr, then GetJob until it is no longer queued or
 * running (up to timeout_s); its final state and directory. cancel_after_s >= 0: CancelJob
 * that long after the submission. */
static void submit_and_wait(const char *addr, const char *spec_path, double timeout_s, double cancel_after_s,
                            char *state, size_t scap, char *dir, size_t dcap)
{
    aha_err err = {0};
    char *spec = NULL;
    size_t n = 0;
    aha_rpc_channel *ch = NULL;
    char id[128] = "";
    snprintf(state, scap, "not submitted");
    if (aha_read_file(spec_path, 1 << 20, &spec, &n, &err) != AHA_OK || aha_rpc_channel_create(addr, NULL, &ch, &err) != AHA_OK) {
        free(spec);
        return;
    }
    th_submit_job(ch, spec, id, sizeof id);
    free(spec);
    aha_rpc_call_opts o = {.timeout_ms = 10000, .attempts = 1};
    ProtobufCMessage *resp = NULL;
    double t0 = aha_now_s(), end = t0 + timeout_s;
    bool cancelled = false;
    while (id[0] && aha_now_s() < end) {
        if (cancel_after_s >= 0 && !cancelled && aha_now_s() - t0 >= cancel_after_s) {
            Aha__V1__CancelJobRequest c = AHA__V1__CANCEL_JOB_REQUEST__INIT;
            c.job_id = id;
            resp = NULL;
            CHECK(aha_rpc_unary(ch, &aha__v1__learner__descriptor, "CancelJob", &c.base, &resp, &o, &err) == AHA_OK,
                  "CancelJob: %s", err.msg);
            if (resp) protobuf_c_message_free_unpacked(resp, NULL);
            cancelled = true;
        }
        Aha__V1__GetJobRequest g = AHA__V1__GET_JOB_REQUEST__INIT;
        g.job_id = id;
        resp = NULL;
        if (aha_rpc_unary(ch, &aha__v1__learner__descriptor, "GetJob", &g.base, &resp, &o, &err) != AHA_OK) break;
        Aha__V1__Job *jb = (Aha__V1__Job *)resp;
        snprintf(state, scap, "%s", jb->state);
        snprintf(dir, dcap, "%s", jb->dir);
        if (jb->error && *jb->error) fprintf(stderr, "job %s: %s\n", id, jb->error);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0) break;
        usleep(50000);
    }
    aha_rpc_channel_free(ch);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: test_dist_learner MODE AHA-REWARD AHA-ROLLOUT AHA-REFPOLICY AHA-JOB\n");
        return 2;
    }
    const char *mode = argv[1];
    char name[64];
    snprintf(name, sizeof name, "dist_learner_%s", mode);
    bool sft = strcmp(mode, "sft_equiv") == 0, push_group = strcmp(mode, "push_group") == 0;
    bool load_spread = strcmp(mode, "load_spread") == 0, learner_ranks = strcmp(mode, "learner_ranks") == 0;
    if (learner_ranks && argc < 7) {
        fprintf(stderr, "test_dist_learner: learner_ranks needs the aha-learner binary\n");
        return 2;
    }
    sft = sft || learner_ranks;
    if (!sft && !push_group && !load_spread && strcmp(mode, "grpo_equiv") != 0 && strcmp(mode, "rank_kill") != 0 &&
        strcmp(mode, "rank_hang") != 0 && strcmp(mode, "rank_resume") != 0) {
        fprintf(stderr, "test_dist_learner: unknown mode '%s'\n", mode);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char root[] = "/tmp/aha-test-dist-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char base[512], data[512], spec[512];
    snprintf(base, sizeof base, "%s/base", root);
    snprintf(data, sizeof data, "%s/data.jsonl", root);
    snprintf(spec, sizeof spec, "%s/spec.json", root);
    aha_err err = {0};
    th_make_tiny_model(base, TH_TINY_QWEN2_CFG, 23);
    if (sft) th_write_sum_sft(data, 24);
    else th_write_sum_prompts(data, 24, 5);
    int steps = strcmp(mode, "grpo_equiv") == 0 || sft ? 2 : push_group || load_spread ? 3 : 4;
    char spec_text[2048];
    if (sft)
        snprintf(spec_text, sizeof spec_text,
                 "{\"kind\": \"sft\", \"model\": \"%s\", \"dataset\": {\"path\": \"%s\", \"format\": \"sft\"},"
                 " \"steps\": %d, \"batch_size\": 6, \"micro_batch\": 2, \"lr\": 1e-3, \"seed\": 5}\n",
                 base, data, steps);
    else
        /* the language reward varies from sample to sample on a random model, so the
         * advantages, and the policy-gradient part of the update, are not zero */
        snprintf(spec_text, sizeof spec_text,
                 "{\"kind\": \"grpo\", \"model\": \"%s\", \"dataset\": \"%s\", \"template\": \"r1-zero\","
                 " \"G\": 4, \"questions_per_step\": 4, \"steps\": %d, \"mu\": 2, \"micro_batch\": 3,"
                 " \"max_new_tokens\": 16, \"temperature\": 1.0, \"lr\": 1e-2, \"beta\": 0.04,"
                 " \"reward_weights\": {\"accuracy\": 1, \"format\": 1, \"language\": 1}, \"language\": \"en\","
                 " \"checkpoint_every\": 1, \"seed\": 9}\n",
                 base, data, steps);
    th_write_text(spec, spec_text);

    th_services sv;
    memset(&sv, 0, sizeof sv);
    th_service ro2 = {0};
    env_t e = {.job_bin = argv[5], .spec = spec, .root = root};
    if (!sft) {
        if (!th_services_start(&sv, argv[2], argv[3], argv[4], base, 1024, load_spread ? 16 : 0)) goto out;
        e.reward = sv.reward_addr;
        e.rollout = sv.rollout_addr;
        e.refpolicy = sv.refpolicy_addr;
    }
    char a_ro2[64];
    if (push_group || load_spread) {
        /* load_spread: a worker with 3 times the batch slots of the first */
        char *rov[] = {(char *)argv[3], "--model", base, "--max-seq-len", "1024", "--max-batch", "48", NULL};
        if (!load_spread) rov[5] = NULL;
        CHECK(th_spawn(&ro2, rov) > 0, "second rollout worker started");
        snprintf(a_ro2, sizeof a_ro2, "127.0.0.1:%d", ro2.port);
        e.rollout2 = a_ro2;
    }

    char j1[560], j2[560], j3[560];
    snprintf(j1, sizeof j1, "%s/job-1rank", root);
    snprintf(j2, sizeof j2, "%s/job-2ranks", root);
    snprintf(j3, sizeof j3, "%s/job-fault", root);
    if (learner_ranks) {
        /* the job server (rank 0) and a follower rank of aha-learner; one rank for reference */
        if (!run_job(&e, 1, j1, NULL)) goto out;
        char jobs[600], rdv[64];
        snprintf(jobs, sizeof jobs, "%s/jobs", root);
        snprintf(rdv, sizeof rdv, "127.0.0.1:%d", free_port());
        char *l0[] = {(char *)argv[6], "--jobs-dir", jobs, "--rank", "0", "--world-size", "2", "--rendezvous", rdv,
                      "--dist-check-every", "1", NULL};
        char *l1[] = {(char *)argv[6], "--jobs-dir", jobs, "--rank", "1", "--world-size", "2", "--rendezvous", rdv, NULL};
        th_service s0 = {0}, s1 = {0};
        CHECK(th_spawn(&s0, l0) > 0, "aha-learner rank 0 started");
        char state[64] = "", dir[600] = "", addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", s0.port);
        /* no rank 1 yet: the job waits for it, and a CancelJob ends the wait within seconds
         * (the rendezvous goes in attempts), not after the 300 s group timeout */
        double tc = aha_now_s();
        if (s0.port) submit_and_wait(addr, spec, 30, 1.0, state, sizeof state, dir, sizeof dir);
        CHECK(strcmp(state, "cancelled") == 0 && aha_now_s() - tc < 15,
              "a job waiting for a missing rank is cancelled (%s after %.1fs)", state, aha_now_s() - tc);
        CHECK(th_spawn(&s1, l1) > 0, "aha-learner rank 1 started (health only)");
        if (s0.port && s1.port) submit_and_wait(addr, spec, 60, -1, state, sizeof state, dir, sizeof dir);
        CHECK(strcmp(state, "succeeded") == 0, "the 2-rank job %s", state);
        if (strcmp(state, "succeeded") == 0) compare_equiv(base, j1, dir, steps);
        /* the follower is still there for the next job; it ends with its process */
        CHECK(s1.pid > 0 && waitpid(s1.pid, NULL, WNOHANG) == 0, "rank 1 still runs after the job");
        th_stop(&s0);
        th_stop(&s1);
        goto out;
    }
    if (sft || strcmp(mode, "grpo_equiv") == 0) {
        double t0 = aha_now_s();
        int ok1 = run_job(&e, 1, j1, NULL);
        double t1 = aha_now_s();
        int ok2 = ok1 && run_job(&e, 2, j2, NULL);
        printf("# 1 rank %.1fs, 2 ranks %.1fs\n", t1 - t0, aha_now_s() - t1);
        char log0[700];
        snprintf(log0, sizeof log0, "%s.rank0.log", j2);
        CHECK(!ok2 || th_file_contains(log0, "weights agree") || th_file_contains(log0, "every rank holds the weights"),
              "rank 0 formed the group and checked the weights (%s)", log0);
        if (ok1 && ok2) compare_equiv(base, j1, j2, steps);
        goto out;
    }

    if (load_spread) {
        /* the learner splits each step's prompts by the workers' free batch slots (Info) */
        if (run_job(&e, 1, j1, NULL)) {
            int64_t tok[2] = {0, 0}, slots[2] = {0, 0};
            const char *addr[2] = {sv.rollout_addr, a_ro2};
            for (int w = 0; w < 2; w++) {
                aha_rpc_channel *ch = NULL;
                aha_rpc_channel_opts co;
                aha_rpc_channel_opts_init(&co);
                Aha__V1__InfoRequest req = AHA__V1__INFO_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                aha_rpc_call_opts o = {.timeout_ms = 5000};
                if (aha_rpc_channel_create(addr[w], &co, &ch, &err) == AHA_OK &&
                    aha_rpc_unary(ch, &aha__v1__rollout__descriptor, "Info", &req.base, &resp, &o, &err) == AHA_OK) {
                    tok[w] = ((Aha__V1__InfoReply *)resp)->tokens_generated;
                    slots[w] = ((Aha__V1__InfoReply *)resp)->max_batch;
                }
                if (resp) protobuf_c_message_free_unpacked(resp, NULL);
                aha_rpc_channel_free(ch);
            }
            printf("# worker A: %d slots, %lld tokens generated; worker B: %d slots, %lld tokens\n", (int)slots[0],
                   (long long)tok[0], (int)slots[1], (long long)tok[1]);
            CHECK(slots[1] == 3 * slots[0], "worker B has 3x A's batch slots (%lld vs %lld)", (long long)slots[1],
                  (long long)slots[0]);
            CHECK(tok[0] > 0 && tok[1] >= 2 * tok[0], "B, with 3x the free slots, generated >= 2x A's tokens (%lld vs %lld)",
                  (long long)tok[1], (long long)tok[0]);
            double l1[16];
            CHECK(load_losses(j1, l1, 16) == steps, "every step recorded once");
        }
        goto out;
    }
    if (push_group) {
        /* the same job with gRPC pushes and with the weights group (its TCP transport; NCCL
         * on GPUs): the workers must sample from the same weights, so the runs agree bit for bit */
        char wg[128];
        snprintf(wg, sizeof wg, "--weights-rendezvous 127.0.0.1:%d --weights-transport tcp", free_port());
        int ok1 = run_job(&e, 1, j1, NULL);
        int ok2 = ok1 && run_job(&e, 1, j2, wg);
        if (ok1 && ok2) {
            long n1 = 0, n2 = 0;
            float *w1 = th_load_latest_weights(j1, &n1), *w2 = th_load_latest_weights(j2, &n2);
            CHECK(w1 && w2 && n1 == n2 && memcmp(w1, w2, (size_t)n1 * sizeof *w1) == 0,
                  "weights-group pushes end with the gRPC run's weights, bit for bit");
            free(w1);
            free(w2);
            char m1[700], m2[700], log2[700];
            snprintf(m1, sizeof m1, "%s/metrics.jsonl", j1);
            snprintf(m2, sizeof m2, "%s/metrics.jsonl", j2);
            snprintf(log2, sizeof log2, "%s.rank0.log", j2);
            CHECK(th_file_contains(m1, "\"push_path\":\"grpc\"") && !th_file_contains(m1, "\"push_path\":\"tcp\""),
                  "the first run pushed by gRPC (%s)", m1);
            CHECK(th_file_contains(m2, "\"push_path\":\"tcp\"") && !th_file_contains(m2, "\"push_path\":\"grpc\""),
                  "the second pushed every step through the weights group (%s)", m2);
            CHECK(th_file_contains(log2, "weights group of 2 rollout worker(s)"), "both workers joined (%s)", log2);
            double l1[16], l2[16];
            CHECK(load_losses(j1, l1, 16) == steps && load_losses(j2, l2, 16) == steps, "every step recorded once");
        }
        goto out;
    }

    /* faults: rank 0 held after step 1, then rank 1 killed / frozen */
    char rdv[64];
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", free_port());
    const char *extra = strcmp(mode, "rank_hang") == 0     ? "--dist-timeout-ms 2000 --dist-retries 0"
                        : strcmp(mode, "rank_resume") == 0 ? "--dist-timeout-ms 20000 --dist-retries 2"
                                                           : "--dist-timeout-ms 20000 --dist-retries 0";
    if (strcmp(mode, "rank_resume") == 0 && !run_job(&e, 2, j2, "--dist-timeout-ms 20000")) goto out;
    th_proc p0 = {0}, p1 = {0};
    char *a0[40], *a1[40], s0[256], s1[256];
    snprintf(p0.errpath, sizeof p0.errpath, "%s.rank0.log", j3);
    snprintf(p1.errpath, sizeof p1.errpath, "%s.rank1.log", j3);
    job_argv(&e, 0, 2, j3, rdv, extra, a0, s0);
    job_argv(&e, 1, 2, j3, rdv, extra, a1, s1);
    CHECK(th_proc_start(&p0, a0, 0) && th_proc_start(&p1, a1, 0), "ranks started");
    int held = th_proc_pause(&p0, 1, 60);
    CHECK(held, "rank 0 held after step 1");
    if (!held) {
        proc_kill(&p0);
        proc_kill(&p1);
        dump(p0.errpath);
        goto out;
    }
    if (strcmp(mode, "rank_hang") == 0) {
        kill(p1.pid, SIGSTOP);
        double t0 = aha_now_s();
        th_proc_drain(&p0);
        int rc = th_proc_wait(&p0, 30, -1);
        double dt = aha_now_s() - t0;
        CHECK(rc == 1, "rank 0 failed the job (exit %d) instead of hanging", rc);
        CHECK(dt < 25, "within %.1fs of the freeze (deadline 2 s; the rest is the next step's generation)", dt);
        CHECK(th_file_contains(p0.errpath, "rank 1") && th_file_contains(p0.errpath, "2000 ms"),
              "the error names rank 1 and the deadline (%s)", p0.errpath);
        kill(p1.pid, SIGCONT);
        /* rank 1, thawed, finds rank 0 gone and ends with an error of its own */
        int rc1 = th_proc_wait(&p1, 20, -1);
        CHECK(rc1 == 1, "rank 1 exit code %d", rc1);
        CHECK(th_file_contains(p1.errpath, "rank 0"), "rank 1's error names rank 0 (%s)", p1.errpath);
    } else if (strcmp(mode, "rank_kill") == 0) {
        kill(p1.pid, SIGKILL);
        th_proc_wait(&p1, 5, -1);
        double t0 = aha_now_s();
        th_proc_drain(&p0);
        int rc = th_proc_wait(&p0, 30, -1);
        double dt = aha_now_s() - t0;
        CHECK(rc == 1, "rank 0 failed the job (exit %d)", rc);
        CHECK(dt < 25, "within %.1fs of the kill", dt);
        CHECK(th_file_contains(p0.errpath, "rank 1"), "the error names rank 1 (%s)", p0.errpath);
        /* the other way round: rank 0 dies under a working rank 1 */
        char j4[580];
        snprintf(j4, sizeof j4, "%s-2", j3);
        snprintf(p0.errpath, sizeof p0.errpath, "%s.rank0.log", j4);
        snprintf(p1.errpath, sizeof p1.errpath, "%s.rank1.log", j4);
        snprintf(rdv, sizeof rdv, "127.0.0.1:%d", free_port());
        job_argv(&e, 0, 2, j4, rdv, extra, a0, s0);
        job_argv(&e, 1, 2, j4, rdv, extra, a1, s1);
        CHECK(th_proc_start(&p0, a0, 0) && th_proc_start(&p1, a1, 0), "ranks started again");
        CHECK(th_proc_pause(&p0, 1, 60), "rank 0 held after step 1");
        kill(p0.pid, SIGKILL);
        th_proc_wait(&p0, 5, -1);
        t0 = aha_now_s();
        int rc1 = th_proc_wait(&p1, 30, -1);
        CHECK(rc1 == 1, "rank 1 ends with an error when rank 0 dies (exit %d)", rc1);
        CHECK(aha_now_s() - t0 < 25, "within %.1fs", aha_now_s() - t0);
        CHECK(th_file_contains(p1.errpath, "rank 0"), "rank 1's error names rank 0 (%s)", p1.errpath);
    } else {
        kill(p1.pid, SIGKILL);
        th_proc_wait(&p1, 5, -1);
        th_proc_drain(&p0);
        usleep(500000);
        /* rank 1 comes back (an orchestrator restarting it); rank 0 re-forms the group */
        p1.pid = 0;
        CHECK(th_proc_start(&p1, a1, 0), "rank 1 restarted");
        int rc = th_proc_wait(&p0, 90, -1);
        int rc1 = th_proc_wait(&p1, 20, -1);
        CHECK(rc == 0 && rc1 == 0, "the job finished after the restart (rank 0 exit %d, rank 1 exit %d)", rc, rc1);
        CHECK(th_file_contains(p0.errpath, "re-forming it and resuming"), "rank 0 re-formed the group (%s)", p0.errpath);
        CHECK(th_file_contains(p0.errpath, "resuming from"), "and resumed from a checkpoint (%s)", p0.errpath);
        long n2 = 0, n3 = 0;
        float *w2 = th_load_latest_weights(j2, &n2), *w3 = th_load_latest_weights(j3, &n3);
        CHECK(w2 && w3 && n2 == n3 && memcmp(w2, w3, (size_t)n2 * sizeof *w2) == 0,
              "the resumed job ends with the undisturbed 2-rank run's weights, bit for bit");
        free(w2);
        free(w3);
        double l2[16], l3[16];
        CHECK(load_losses(j3, l3, 16) == steps && load_losses(j2, l2, 16) == steps, "each step recorded once");
    }
    if (th_failures) {
        dump(p0.errpath);
        dump(p1.errpath);
    }

out:
    th_services_stop(&sv);
    if (ro2.pid > 0) th_stop(&ro2);
    if (!th_failures && !getenv("AHA_TEST_KEEP")) aha_remove_tree(root, NULL);
    else printf("# files kept in %s\n", root);
    return th_done(name);
}
