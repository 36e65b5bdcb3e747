/* test_fault_grpo: a short deterministic GRPO job (tiny random model, 2 rollout workers,
 * reward, refpolicy, the learner as the aha-job process) run once undisturbed and once with
 * one fault injected; the job must finish and end with the same weights and optimizer state,
 * byte for byte (CPU), and the same per-step metrics, each step recorded once with all B·G
 * completions: no sample lost or counted twice.
 *
 * Faults (argv[1]):
 *   rollout_kill       worker B frozen (SIGSTOP) with the step's Generate on it, then
 *                      SIGKILLed: its groups are redone on worker A; B restarted later
 *   reward_restart     the reward service SIGKILLed between steps, back 1.5 s into the next
 *   refpolicy_restart  the same for refpolicy
 *   learner_kill       the learner SIGKILLed while its Generate calls hang (both workers
 *                      frozen), then run again on the same job dir: resumes from the last
 *                      checkpoint
 *   ckpt_full          the learner resumed under RLIMIT_FSIZE (a full disk: writes fail with
 *                      EFBIG): the checkpoint write fails, the job fails with a clear error,
 *                      `latest` still names the previous, intact checkpoint; run again
 *                      without the limit, it resumes from it
 *   rollout_stale      worker B restarted from its model dir (policy version 0) between two
 *                      steps, after the learner pushed: the learner sees the version on B's
 *                      completions, re-pushes and samples those groups again
 *   learner_server_kill  the job submitted to the job server (aha-learner --jobs-dir);
 *                      once step 2 is in metrics.jsonl both workers are frozen, the server is
 *                      SIGKILLed inside the next step and started again on the same jobs dir:
 *                      it resumes the running job from its last checkpoint
 *
 * Where the learner is between steps is made exact rather than timed: its stdout (one JSON
 * line per step) is a pipe the test fills, so the learner blocks writing the next step's
 * record, after that step's weight push and checkpoint; /proc/PID/syscall shows it blocked
 * in write(1, ...). Draining the pipe lets it go on.
 *
 * argv: FAULT aha-reward aha-rollout aha-refpolicy aha-job [aha-learner] */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness.h"
#include "aha/v1/learner.pb-c.h"
#include "base/fs.h"
#include "learner_env.h"
#include "rpc/rpc.h"

#define STEPS 4

/* ---- services on fixed loopback ports (a restarted one comes back where it was) ---------- */

typedef struct {
    char *argv[12];
    pid_t pid;
    int port;
    char addr[64];
} svc;

/* Start s->argv with --listen 127.0.0.1:PORT (0 = any free port, learnt from its
 * "listening on port N" line). Returns the port, 0 on failure. */
static int svc_start(svc *s, int port)
{
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    th_service t;
    th_spawn_listen(&t, s->argv, listen);
    s->pid = t.pid;
    s->port = t.port;
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
    return s->port;
}

static void svc_kill(svc *s, int sig)
{
    if (s->pid <= 0) return;
    kill(s->pid, SIGCONT);
    kill(s->pid, sig);
    int status;
    for (int i = 0; i < 500; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = -1;
            return;
        }
        usleep(20000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = -1;
}

/* ---- comparisons ------------------------------------------------------------------------ */

static int files_equal(const char *a, const char *b)
{
    char *da = NULL, *db = NULL;
    size_t la = 0, lb = 0;
    int eq = aha_read_file(a, (size_t)1 << 30, &da, &la, NULL) == AHA_OK &&
             aha_read_file(b, (size_t)1 << 30, &db, &lb, NULL) == AHA_OK && la == lb && la > 0 &&
             memcmp(da, db, la) == 0;
    free(da);
    free(db);
    return eq;
}

/* metrics.jsonl of a job dir: one record per step 1..STEPS, in order, each with all n
 * completions; recs[s] keeps step s's record */
static int load_metrics(const char *job, json_t *recs[STEPS + 1], int n_completions)
{
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", job);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1 << 14];
    int n = 0, ok = 1;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *type = o ? json_string_value(json_object_get(o, "type")) : NULL;
        if (!type || strcmp(type, "step") != 0) {
            json_decref(o);
            continue;
        }
        int s = (int)json_integer_value(json_object_get(o, "step"));
        if (s != n + 1 || json_integer_value(json_object_get(o, "n_completions")) != n_completions) ok = 0;
        if (s >= 1 && s <= STEPS && !recs[s]) recs[s] = o;
        else json_decref(o);
        n++;
    }
    fclose(f);
    return ok && n == STEPS;
}

static void compare_runs(const char *ja, const char *jb, int n_completions)
{
    json_t *ra[STEPS + 1] = {0}, *rb[STEPS + 1] = {0};
    CHECK(load_metrics(ja, ra, n_completions), "%s: %d step records of %d completions", ja, STEPS, n_completions);
    CHECK(load_metrics(jb, rb, n_completions), "%s: %d step records of %d completions, each once", jb, STEPS,
          n_completions);
    const char *keys[] = {"loss", "reward_mean", "length_mean", "tokens", "grad_norm", "kl_mean"};
    for (int s = 1; s <= STEPS; s++)
        for (size_t k = 0; ra[s] && rb[s] && k < sizeof keys / sizeof keys[0]; k++) {
            double x = json_number_value(json_object_get(ra[s], keys[k]));
            double y = json_number_value(json_object_get(rb[s], keys[k]));
            CHECK(x == y, "step %d %s: %.17g undisturbed, %.17g with the fault", s, keys[k], x, y);
        }
    for (int s = 0; s <= STEPS; s++) {
        json_decref(ra[s]);
        json_decref(rb[s]);
    }
    const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int i = 0; i < 2; i++) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/ckpt-%06d/%s", ja, STEPS, files[i]);
        snprintf(b, sizeof b, "%s/ckpt-%06d/%s", jb, STEPS, files[i]);
        CHECK(files_equal(a, b), "final %s identical byte for byte", files[i]);
    }
}

/* step records in a job dir's metrics.jsonl */
static int metrics_lines(const char *job_dir)
{
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.jsonl", job_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    char line[1 << 14];
    while (fgets(line, sizeof line, f)) n += strstr(line, "\"type\":\"step\"") != NULL || strstr(line, "\"type\": \"step\"") != NULL;
    fclose(f);
    return n;
}

/* GetJob: state and dir */
static aha_status get_job(const char *addr, const char *id, char *state, size_t scap, char *dir, size_t dcap,
                          aha_err *err)
{
    aha_rpc_channel *ch = NULL;
    AHA_TRY(aha_rpc_channel_create(addr, NULL, &ch, err));
    Aha__V1__GetJobRequest req = AHA__V1__GET_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    aha_rpc_call_opts o = {.timeout_ms = 10000, .wait_for_ready = 1};
    ProtobufCMessage *resp = NULL;
    aha_status st = aha_rpc_unary(ch, &aha__v1__learner__descriptor, "GetJob", &req.base, &resp, &o, err);
    if (st == AHA_OK) {
        Aha__V1__Job *jb = (Aha__V1__Job *)resp;
        snprintf(state, scap, "%s", jb->state);
        if (dir) snprintf(dir, dcap, "%s", jb->dir);
        if (jb->error && *jb->error) fprintf(stderr, "job %s: %s\n", id, jb->error);
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    aha_rpc_channel_free(ch);
    return st;
}

/* the job through aha-learner, killed mid-step and restarted; returns 0 when it succeeded */
static int run_server_kill(const char *learner_bin, const char *root, const char *spec_path, svc *ra, svc *rb,
                           svc *rw, svc *rp, char *job_dir, size_t cap)
{
    char jobs[600], rollouts[160];
    snprintf(jobs, sizeof jobs, "%s/jobs", root);
    snprintf(rollouts, sizeof rollouts, "%s,%s", ra->addr, rb->addr);
    svc ls = {.argv = {(char *)learner_bin, "--jobs-dir", jobs, "--rollout", rollouts, "--reward", rw->addr,
                       "--refpolicy", rp->addr, "--rpc-timeout-ms", "60000", NULL}};
    CHECK(svc_start(&ls, 0) > 0, "aha-learner started");
    if (!ls.port) return 1;
    aha_err err = {0};
    char *spec = NULL;
    size_t n = 0;
    CHECK(aha_read_file(spec_path, 1 << 20, &spec, &n, &err) == AHA_OK, "spec: %s", err.msg);
    aha_rpc_channel *ch = NULL;
    char id[128] = "";
    if (spec && aha_rpc_channel_create(ls.addr, NULL, &ch, &err) == AHA_OK) {
        th_submit_job(ch, spec, id, sizeof id);
        aha_rpc_channel_free(ch);
    }
    free(spec);
    char state[64] = "";
    int rc = 1;
    if (id[0] && get_job(ls.addr, id, state, sizeof state, job_dir, cap, &err) == AHA_OK) {
        double end = aha_now_s() + 60;
        while (metrics_lines(job_dir) < 2 && aha_now_s() < end) usleep(1000);
        kill(ra->pid, SIGSTOP);
        kill(rb->pid, SIGSTOP);
        int at = metrics_lines(job_dir);
        CHECK(at >= 2 && at < STEPS, "workers frozen after step %d of %d", at, STEPS);
        usleep(300000); /* the server is inside the next step (Generate or the push after it) */
        svc_kill(&ls, SIGKILL);
        kill(ra->pid, SIGCONT);
        kill(rb->pid, SIGCONT);
        CHECK(svc_start(&ls, 0) > 0, "aha-learner restarted on the same jobs dir");
        end = aha_now_s() + 80;
        while (aha_now_s() < end && get_job(ls.addr, id, state, sizeof state, NULL, 0, &err) == AHA_OK &&
               (strcmp(state, "running") == 0 || strcmp(state, "queued") == 0))
            usleep(100000);
        CHECK(strcmp(state, "succeeded") == 0, "job %s after the restart: %s %s", id, state, err.msg);
        rc = strcmp(state, "succeeded") != 0;
    }
    svc_kill(&ls, SIGTERM);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: test_fault_grpo FAULT AHA-REWARD AHA-ROLLOUT AHA-REFPOLICY AHA-JOB\n");
        return 2;
    }
    const char *fault = argv[1];
    char name[64];
    snprintf(name, sizeof name, "fault_%s", fault);
    static const char *const faults[] = {"rollout_kill",  "reward_restart", "refpolicy_restart",
                                         "learner_kill", "ckpt_full",      "rollout_stale",
                                         "learner_server_kill"};
    int known = 0;
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) known |= strcmp(fault, faults[i]) == 0;
    if (!known || (strcmp(fault, "learner_server_kill") == 0 && argc < 7)) {
        fprintf(stderr, "test_fault_grpo: unknown fault '%s'\n", fault);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char root[] = "/tmp/aha-test-fault-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char base[512], train[512], spec_path[512], ja[512], jb[512];
    snprintf(base, sizeof base, "%s/base", root);
    snprintf(train, sizeof train, "%s/train.jsonl", root);
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", root);
    snprintf(ja, sizeof ja, "%s/job-undisturbed", root);
    snprintf(jb, sizeof jb, "%s/job-%s", root, fault);
    aha_err err = {0};
    th_make_tiny_model(base, TH_TINY_QWEN2_CFG, 17);
    th_write_sum_prompts(train, 24, 5);
    /* B = 4 questions x G = 4: 16 completions a step, split 8/8 over the two workers */
    enum { B = 4, G = 4 };
    char spec_text[2048];
    snprintf(spec_text, sizeof spec_text,
             "{\"kind\": \"grpo\", \"model\": \"%s\", \"dataset\": \"%s\", \"template\": \"r1-zero\","
             " \"G\": %d, \"questions_per_step\": %d, \"steps\": %d, \"mu\": 2, \"micro_batch\": 8,"
             " \"max_new_tokens\": 16, \"temperature\": 1.0, \"lr\": 1e-2, \"beta\": 0.04,"
             " \"checkpoint_every\": 2, \"seed\": 9}\n",
             base, train, G, B, STEPS);
    th_write_text(spec_path, spec_text);

    svc rw = {.argv = {argv[2], NULL}};
    svc ra = {.argv = {argv[3], "--model", base, "--max-seq-len", "1024", NULL}};
    svc rb = ra;
    svc rp = {.argv = {argv[4], "--model", base, NULL}};
    CHECK(svc_start(&rw, 0) > 0, "reward started");
    CHECK(svc_start(&ra, 0) > 0, "rollout A started");
    CHECK(svc_start(&rb, 0) > 0, "rollout B started");
    CHECK(svc_start(&rp, 0) > 0, "refpolicy started");
    if (!rw.port || !ra.port || !rb.port || !rp.port) goto out;

    char *job_argv[2][20];
    const char *dirs[2] = {ja, jb};
    for (int k = 0; k < 2; k++) {
        char **a = job_argv[k];
        int n = 0;
        a[n++] = argv[5];
        a[n++] = spec_path;
        a[n++] = "--job-dir";
        a[n++] = (char *)dirs[k];
        a[n++] = "--rollout";
        a[n++] = ra.addr;
        a[n++] = "--rollout";
        a[n++] = rb.addr;
        a[n++] = "--reward";
        a[n++] = rw.addr;
        a[n++] = "--refpolicy";
        a[n++] = rp.addr;
        a[n++] = "--rpc-timeout-ms";
        a[n++] = "60000";
        a[n] = NULL;
    }

    /* (a) undisturbed */
    th_proc l = {0};
    snprintf(l.errpath, sizeof l.errpath, "%s/undisturbed.log", root);
    CHECK(th_proc_start(&l, job_argv[0], 0), "learner started");
    int rc = th_proc_wait(&l, 80, 128 + SIGKILL);
    CHECK(rc == 0, "undisturbed job exit code %d", rc);
    if (rc != 0) {
        char *d = NULL;
        size_t n = 0;
        if (aha_read_file(l.errpath, (size_t)1 << 20, &d, &n, NULL) == AHA_OK) fprintf(stderr, "--- %s\n%s\n", l.errpath, d);
        free(d);
        goto out;
    }

    /* (b) the same job with the fault */
    char logp[600];
    snprintf(logp, sizeof logp, "%s/%s.log", root, fault);
    snprintf(l.errpath, sizeof l.errpath, "%s", logp);
    if (strcmp(fault, "learner_server_kill") == 0) {
        char jd[700] = "";
        rc = run_server_kill(argv[6], root, spec_path, &ra, &rb, &rw, &rp, jd, sizeof jd);
        if (rc == 0) compare_runs(ja, jd, B * G);
        goto out;
    }
    CHECK(th_proc_start(&l, job_argv[1], 0), "learner started");
    int paused = th_proc_pause(&l, 1, 60);
    CHECK(paused, "learner held between steps");
    int held_at = 0;
    if (paused && strcmp(fault, "rollout_kill") == 0) {
        kill(rb.pid, SIGSTOP);
        th_proc_drain(&l);
        held_at = l.last_step;
        /* A serves its half, the learner waits on B's stream; then B dies */
        usleep(1500000);
        svc_kill(&rb, SIGKILL);
        rc = th_proc_wait(&l, 80, 128 + SIGKILL);
        CHECK(th_file_contains(logp, "prompts go to the other workers"), "B's unfinished groups went to A (%s)", logp);
    } else if (paused && (strcmp(fault, "reward_restart") == 0 || strcmp(fault, "refpolicy_restart") == 0)) {
        svc *s = strncmp(fault, "reward", 6) == 0 ? &rw : &rp;
        int port = s->port;
        svc_kill(s, SIGKILL);
        th_proc_drain(&l);
        held_at = l.last_step;
        /* the next step generates, then needs the dead service, which comes back later */
        usleep(1500000);
        CHECK(svc_start(s, port) == port, "%s restarted on port %d", fault, port);
        rc = th_proc_wait(&l, 80, 128 + SIGKILL);
    } else if (paused && strcmp(fault, "learner_kill") == 0) {
        kill(ra.pid, SIGSTOP);
        kill(rb.pid, SIGSTOP);
        th_proc_drain(&l);
        held_at = l.last_step;
        usleep(300000); /* the learner is now inside the next step's Generate */
        kill(l.pid, SIGKILL);
        rc = th_proc_wait(&l, 10, 128 + SIGKILL);
        CHECK(rc == 128 + SIGKILL, "learner killed (%d)", rc);
        kill(ra.pid, SIGCONT);
        kill(rb.pid, SIGCONT);
        CHECK(th_proc_start(&l, job_argv[1], 0), "learner restarted");
        rc = th_proc_wait(&l, 80, 128 + SIGKILL);
        CHECK(th_file_contains(logp, "resuming from"), "the restarted learner resumed from a checkpoint");
    } else if (paused && strcmp(fault, "ckpt_full") == 0) {
        th_proc_drain(&l);
        held_at = l.last_step;
        kill(l.pid, SIGKILL);
        th_proc_wait(&l, 10, 128 + SIGKILL);
        char latest0[600], latest1[300], ck[900];
        snprintf(latest0, sizeof latest0, "%s/latest", jb);
        char *d = NULL;
        size_t n = 0;
        CHECK(aha_read_file(latest0, 256, &d, &n, NULL) == AHA_OK, "latest after the kill");
        snprintf(latest1, sizeof latest1, "%.*s", (int)(n && d[n - 1] == '\n' ? n - 1 : n), d ? d : "");
        free(d);
        /* the checkpoint `latest` names, as it was before the failed write */
        char *before[2] = {NULL, NULL};
        size_t before_n[2] = {0, 0};
        const char *ckf[2] = {"model.safetensors", "optimizer.safetensors"};
        for (int i = 0; i < 2; i++) {
            snprintf(ck, sizeof ck, "%s/%s/%s", jb, latest1, ckf[i]);
            CHECK(aha_read_file(ck, (size_t)1 << 30, &before[i], &before_n[i], NULL) == AHA_OK, "%s readable", ck);
        }
        /* resumed with a 48 KiB file size limit: the next checkpoint cannot be written */
        CHECK(th_proc_start(&l, job_argv[1], 48 * 1024), "learner restarted under RLIMIT_FSIZE");
        rc = th_proc_wait(&l, 80, 128 + SIGKILL);
        CHECK(rc == 1, "the job fails cleanly when the checkpoint cannot be written (exit %d)", rc);
        CHECK(th_file_contains(logp, "File too large"), "the error names the cause (%s)", logp);
        d = NULL;
        CHECK(aha_read_file(latest0, 256, &d, &n, NULL) == AHA_OK && strncmp(d, latest1, strlen(latest1)) == 0,
              "latest still names %s", latest1);
        free(d);
        /* the previous checkpoint is intact (same bytes) and loads */
        for (int i = 0; i < 2; i++) {
            snprintf(ck, sizeof ck, "%s/%s/%s", jb, latest1, ckf[i]);
            d = NULL;
            CHECK(aha_read_file(ck, (size_t)1 << 30, &d, &n, NULL) == AHA_OK && before[i] && n == before_n[i] &&
                      memcmp(d, before[i], n) == 0,
                  "%s unchanged by the failed write", ck);
            free(d);
            free(before[i]);
        }
        snprintf(ck, sizeof ck, "%s/%s", jb, latest1);
        aha_backend *cb = NULL;
        aha_model *cm = NULL;
        CHECK(aha_backend_open("cpu", 0, &cb, &err) == AHA_OK && aha_model_open(ck, cb, NULL, &cm, &err) == AHA_OK,
              "%s loads: %s", ck, err.msg);
        aha_model_free(cm);
        aha_backend_free(cb);
        CHECK(th_proc_start(&l, job_argv[1], 0), "learner restarted with room on disk");
        rc = th_proc_wait(&l, 80, 128 + SIGKILL);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s/ckpt-%06d.tmp", jb, STEPS);
        CHECK(!aha_path_exists(tmp), "no half-written checkpoint left");
    } else if (paused && strcmp(fault, "rollout_stale") == 0) {
        int port = rb.port;
        svc_kill(&rb, SIGKILL);
        CHECK(svc_start(&rb, port) == port, "rollout B restarted on port %d", port);
        th_proc_drain(&l);
        held_at = l.last_step;
        rc = th_proc_wait(&l, 80, 128 + SIGKILL);
        CHECK(th_file_contains(logp, "re-pushing the weights"), "B's old weights were noticed and replaced (%s)", logp);
    }
    CHECK(held_at >= 1 && held_at < STEPS, "the fault hit before the last step (held after step %d)", held_at);
    CHECK(rc == 0, "job with the fault exit code %d (log %s)", rc, logp);
    if (rc == 0) compare_runs(ja, jb, B * G);
    if (th_failures) {
        char *d = NULL;
        size_t n = 0;
        if (aha_read_file(logp, (size_t)1 << 20, &d, &n, NULL) == AHA_OK) fprintf(stderr, "--- %s\n%s\n", logp, d);
        free(d);
    }

out:
    svc_kill(&rw, SIGTERM);
    svc_kill(&ra, SIGTERM);
    svc_kill(&rb, SIGTERM);
    svc_kill(&rp, SIGTERM);
    if (!th_failures) aha_remove_tree(root, NULL);
    return th_done(name);
}
