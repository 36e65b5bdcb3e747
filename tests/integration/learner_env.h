/* learner_env.h: what the learner's tests share: a tiny random Qwen2 model dir with a
 * byte-level tokenizer, the arithmetic prompt / SFT data sets, spec files, the three services
 * a GRPO job talks to (aha-reward, aha-rollout, aha-refpolicy on loopback), a learner process
 * whose stdout is a pipe the test controls (to hold it between two steps exactly), and a model
 * dir's weights as one flat array for comparisons.
 *
 * Include after harness.h: the helpers report through CHECK with the messages the tests used
 * before they shared them. */
#ifndef AHA_TESTS_LEARNER_ENV_H
#define AHA_TESTS_LEARNER_ENV_H

#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aha/v1/learner.pb-c.h"
#include "base/fs.h"
#include "io/config.h"
#include "model/model.h"
#include "rpc/rpc.h"
#include "spawn.h"
#include "text/tokenizer.h"

/* the model most of the tests train: 2 layers, hidden 32, the byte-level vocabulary + 5 */
#define TH_TINY_QWEN2_CFG                                                                         \
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 32," \
    " \"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"          \
    " \"num_key_value_heads\": 2, \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6,"    \
    " \"rope_theta\": 10000.0, \"tie_word_embeddings\": true, \"vocab_size\": 261,"               \
    " \"eos_token_id\": 256, \"initializer_range\": 0.02}"

/* a model of cfg_json with random weights from seed, saved in f32 to dir with a byte-level
 * tokenizer whose specials are the R1 template's tags; 1 when every part was written */
static inline int th_make_tiny_model(const char *dir, const char *cfg_json, uint64_t seed)
{
    static const char *const specials[] = {"<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"};
    aha_err err = {0};
    aha_model_config cfg;
    aha_backend *be = NULL;
    aha_model *m = NULL;
    int failures = th_failures;
    CHECK(aha_config_parse(cfg_json, strlen(cfg_json), "cfg", &cfg, &err) == AHA_OK, "config: %s", err.msg);
    CHECK(aha_backend_open("cpu", 0, &be, &err) == AHA_OK, "backend: %s", err.msg);
    CHECK(aha_model_init_random(&cfg, seed, be, NULL, &m, &err) == AHA_OK, "init: %s", err.msg);
    CHECK(aha_model_save(m, dir, AHA_DT_F32, 0, &err) == AHA_OK, "save: %s", err.msg);
    aha_model_free(m);
    aha_backend_free(be);
    CHECK(aha_tokenizer_write_bytelevel(dir, specials, 5, &err) == AHA_OK, "tokenizer: %s", err.msg);
    return th_failures == failures;
}

/* n questions "What is i + addend?" with their answers (a GRPO / eval set); 1 when opened */
static inline int th_write_sum_prompts(const char *path, int n, int addend)
{
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++)
        fprintf(f, "{\"prompt\": \"What is %d + %d?\", \"answer\": \"%d\"}\n", i, addend, i + addend);
    if (f) fclose(f);
    return f != NULL;
}

/* n SFT pairs "What is i + (2i+1)?" -> a worked answer in the R1 format; 1 when opened */
static inline int th_write_sum_sft(const char *path, int n)
{
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++)
        fprintf(f, "{\"prompt\": \"What is %d + %d?\", \"completion\": \"<think> %d + %d = %d. </think> <answer> %d </answer>\"}\n",
                i, 2 * i + 1, i, 2 * i + 1, 3 * i + 1, 3 * i + 1);
    if (f) fclose(f);
    return f != NULL;
}

/* a spec (or any text) file; 1 when written */
static inline int th_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    int ok = fputs(text, f) >= 0;
    return (fclose(f) == 0) && ok;
}

static inline int th_file_contains(const char *path, const char *needle)
{
    char *d = NULL;
    size_t n = 0;
    if (aha_read_file(path, (size_t)1 << 28, &d, &n, NULL) != AHA_OK) return 0;
    int r = strstr(d, needle) != NULL;
    free(d);
    return r;
}

/* ---- the services of a GRPO job ------------------------------------------------------------ */

typedef struct {
    th_service reward, rollout, refpolicy;
    char reward_addr[64], rollout_addr[64], refpolicy_addr[64]; /* "127.0.0.1:PORT" */
} th_services;

/* aha-reward, aha-rollout --model model --max-seq-len max_seq_len [--max-batch max_batch when
 * > 0] and aha-refpolicy --model model; 1 when all three listen */
static inline int th_services_start(th_services *s, const char *reward_bin, const char *rollout_bin,
                                    const char *refpolicy_bin, const char *model, int max_seq_len, int max_batch)
{
    char seq[16], batch[16];
    snprintf(seq, sizeof seq, "%d", max_seq_len);
    snprintf(batch, sizeof batch, "%d", max_batch);
    char *rwv[] = {(char *)reward_bin, NULL};
    char *rov[] = {(char *)rollout_bin, "--model", (char *)model, "--max-seq-len", seq, "--max-batch", batch, NULL};
    char *rpv[] = {(char *)refpolicy_bin, "--model", (char *)model, NULL};
    if (max_batch <= 0) rov[5] = NULL;
    memset(s, 0, sizeof *s);
    CHECK(th_spawn(&s->reward, rwv) > 0, "reward started");
    CHECK(th_spawn(&s->rollout, rov) > 0, "rollout started");
    CHECK(th_spawn(&s->refpolicy, rpv) > 0, "refpolicy started");
    snprintf(s->reward_addr, sizeof s->reward_addr, "127.0.0.1:%d", s->reward.port);
    snprintf(s->rollout_addr, sizeof s->rollout_addr, "127.0.0.1:%d", s->rollout.port);
    snprintf(s->refpolicy_addr, sizeof s->refpolicy_addr, "127.0.0.1:%d", s->refpolicy.port);
    return s->reward.port && s->rollout.port && s->refpolicy.port;
}

static inline void th_services_stop(th_services *s)
{
    if (s->reward.pid > 0) th_stop(&s->reward);
    if (s->rollout.pid > 0) th_stop(&s->rollout);
    if (s->refpolicy.pid > 0) th_stop(&s->refpolicy);
}

/* SubmitJob of spec_json on a job server's channel; its job id into id (cap bytes). 1 when
 * the server took it. */
static inline int th_submit_job(aha_rpc_channel *ch, char *spec_json, char *id, size_t cap)
{
    aha_err err = {0};
    Aha__V1__SubmitJobRequest req = AHA__V1__SUBMIT_JOB_REQUEST__INIT;
    req.spec_json = spec_json;
    aha_rpc_call_opts o = {.timeout_ms = 10000, .attempts = 1};
    ProtobufCMessage *resp = NULL;
    aha_status st = aha_rpc_unary(ch, &aha__v1__learner__descriptor, "SubmitJob", &req.base, &resp, &o, &err);
    CHECK(st == AHA_OK, "SubmitJob: %s", err.msg);
    if (st == AHA_OK) snprintf(id, cap, "%s", ((Aha__V1__SubmitJobReply *)resp)->job_id);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st == AHA_OK;
}

/* ---- a learner process held between two steps ---------------------------------------------
 * Its stdout (one JSON line per step) is a pipe the test fills, so it blocks writing the next
 * step's record, after that step's weight push and checkpoint; /proc/PID/syscall shows it
 * blocked in write(1, ...). Draining the pipe lets it go on. */

typedef struct {
    pid_t pid;
    int rfd, wfd;   /* the child's stdout pipe; the test keeps both ends */
    int steps_seen; /* step records read so far */
    int last_step;  /* the "step" of the latest of them */
    char line[1 << 16];
    size_t len;
    char errpath[800]; /* the child's stderr, appended */
} th_proc;

/* argv: NULL-terminated, argv[0] = the binary; fsize_limit > 0: under RLIMIT_FSIZE (a full
 * disk: writes past the limit fail with EFBIG instead of killing) */
static inline int th_proc_start(th_proc *p, char *const *argv, long fsize_limit)
{
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) != 0) return 0;
    fcntl(fd[0], F_SETPIPE_SZ, 4096);
    p->pid = fork();
    if (p->pid == 0) {
        dup2(fd[1], 1);
        int e = open(p->errpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (e >= 0) dup2(e, 2);
        if (fsize_limit > 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit r = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
            setrlimit(RLIMIT_FSIZE, &r);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    /* the test's own non-blocking writer: a second open file description of the pipe, so
     * the child's stdout stays blocking (O_NONBLOCK belongs to the description) */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd[1]);
    p->wfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    close(fd[1]);
    p->rfd = fd[0];
    fcntl(p->rfd, F_SETFL, O_NONBLOCK);
    p->steps_seen = 0;
    p->len = 0;
    return p->pid > 0;
}

/* read what the child wrote; filler lines ("\n") are skipped */
static inline void th_proc_drain(th_proc *p)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(p->rfd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (p->len < sizeof p->line - 1) p->line[p->len++] = buf[i];
                continue;
            }
            p->line[p->len] = 0;
            json_t *o = p->len ? json_loads(p->line, 0, NULL) : NULL;
            const char *type = o ? json_string_value(json_object_get(o, "type")) : NULL;
            if (type && strcmp(type, "step") == 0) {
                p->steps_seen++;
                p->last_step = (int)json_integer_value(json_object_get(o, "step"));
            }
            json_decref(o);
            p->len = 0;
        }
}

static inline int th_proc_blocked_on_stdout(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    long nr = -1;
    unsigned long a0 = 0;
    return ok && sscanf(buf, "%ld %lx", &nr, &a0) == 2 && nr == 1 /* write */ && a0 == 1;
}

/* Wait until the child has written `after` step records, then fill the pipe so that it
 * blocks writing the next one. Returns 1 when it is blocked there. */
static inline int th_proc_pause(th_proc *p, int after, double timeout_s)
{
    double end = aha_now_s() + timeout_s;
    while (aha_now_s() < end) {
        th_proc_drain(p);
        if (p->steps_seen >= after) break;
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) return 0;
        usleep(1000);
    }
    char filler[512];
    memset(filler, '\n', sizeof filler);
    while (write(p->wfd, filler, sizeof filler) > 0) {}
    while (write(p->wfd, filler, 1) > 0) {}
    while (aha_now_s() < end) {
        if (th_proc_blocked_on_stdout(p->pid)) return 1;
        usleep(2000);
    }
    return 0;
}

/* drain until the child exits; its exit code (128+sig when killed), or timeout_code when it
 * outlived timeout_s (it is SIGKILLed then) */
static inline int th_proc_wait(th_proc *p, double timeout_s, int timeout_code)
{
    double end = aha_now_s() + timeout_s;
    int status = 0, timed_out = 0;
    for (;;) {
        th_proc_drain(p);
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) break;
        if (aha_now_s() > end) {
            timed_out = 1;
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            break;
        }
        usleep(2000);
    }
    th_proc_drain(p);
    close(p->rfd);
    close(p->wfd);
    p->pid = -1;
    if (timed_out) return timeout_code;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- weights for comparisons ------------------------------------------------------------- */

/* every parameter of the model in dir (a base model or a checkpoint), concatenated in f32;
 * NULL (with a message) when it cannot be read */
static inline float *th_load_weights(const char *dir, long *n_out)
{
    aha_backend *be = NULL;
    aha_model *m = NULL;
    aha_err err = {0};
    float *w = NULL;
    if (aha_backend_open("cpu", 0, &be, &err) == AHA_OK && aha_model_open(dir, be, NULL, &m, &err) == AHA_OK) {
        long total = 0;
        for (int i = 0; i < aha_model_n_params(m); i++) total += (long)aha_model_param(m, i)->numel;
        w = malloc((size_t)total * sizeof *w);
        long off = 0;
        for (int i = 0; w && i < aha_model_n_params(m); i++) {
            if (aha_model_param_get_f32(m, i, w + off, &err) != AHA_OK) {
                free(w);
                w = NULL;
                break;
            }
            off += (long)aha_model_param(m, i)->numel;
        }
        *n_out = total;
    } else {
        fprintf(stderr, "cannot load %s: %s\n", dir, err.msg);
    }
    aha_model_free(m);
    aha_backend_free(be);
    return w;
}

/* the weights of job_dir's latest checkpoint (the dir its `latest` file names) */
static inline float *th_load_latest_weights(const char *job_dir, long *n_out)
{
    char latest[700], ck[1400];
    snprintf(latest, sizeof latest, "%s/latest", job_dir);
    char *d = NULL;
    size_t n = 0;
    if (aha_read_file(latest, 512, &d, &n, NULL) != AHA_OK) return NULL;
    while (n && (d[n - 1] == '\n' || d[n - 1] == ' ')) n--;
    snprintf(ck, sizeof ck, "%s/%.*s", job_dir, (int)n, d);
    free(d);
    return th_load_weights(ck, n_out);
}

#endif
