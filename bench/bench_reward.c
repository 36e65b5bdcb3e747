/* bench_reward: aha-reward over gRPC, one connection: scores per second for batches of
 * items with ~2 KB completions (K calls in flight on one channel, one thread each), and the
 * latency of small unary calls. Starts the aha-reward binary on a loopback port unless
 * --target is given.
 *
 *   bench_reward [--target HOST:PORT | --server PATH] [--seconds S] [--inflight K]
 *                [--batch N] [--bytes B] [--language ""|en|zh] [--latency-calls N] */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aha/v1/reward.pb-c.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/rng.h"
#include "rpc/rpc.h"

static struct {
    const char *target, *server, *language;
    double seconds;
    int inflight, batch, bytes, latency_calls;
} O = {NULL, NULL, "", 3.0, 4, 256, 2048, 2000};

static const char *const WORDS[] = {"first", "we", "compute", "the", "sum", "of", "both",
                                    "terms", "so", "then", "divide", "check", "again", "wait",
                                    "that", "is", "wrong", "let", "me", "recompute"};

typedef struct {
    Aha__V1__ScoreRequest req;
    Aha__V1__ScoreItem *items;
    Aha__V1__ScoreItem **ptrs;
    char **texts;
    char **refs;
    char **ids;
} batch;

/* A batch of R1-Zero-shaped items: an English chain of thought with some arithmetic, then
 * an answer in tags; about half right. */
static void batch_make(batch *b, int n, int bytes, uint64_t seed)
{
    aha_rng rng;
    aha_rng_seed(&rng, seed, 0);
    b->items = calloc((size_t)n, sizeof *b->items);
    b->ptrs = calloc((size_t)n, sizeof *b->ptrs);
    b->texts = calloc((size_t)n, sizeof *b->texts);
    b->refs = calloc((size_t)n, sizeof *b->refs);
    b->ids = calloc((size_t)n, sizeof *b->ids);
    for (int i = 0; i < n; i++) {
        char *t = malloc((size_t)bytes + 128);
        int len = sprintf(t, "<think>");
        while (len < bytes - 48) {
            if (aha_rng_below(&rng, 8) == 0)
                len += sprintf(t + len, "%u + %u ", (unsigned)aha_rng_below(&rng, 100),
                               (unsigned)aha_rng_below(&rng, 100));
            else
                len += sprintf(t + len, "%s ", WORDS[aha_rng_below(&rng, AHA_ARRAY_LEN(WORDS))]);
        }
        int truth = (int)aha_rng_below(&rng, 2000) - 1000;
        int ans = aha_rng_below(&rng, 2) ? truth : truth + 1;
        sprintf(t + len, "</think>\n<answer>%d</answer>", ans);
        b->texts[i] = t;
        b->refs[i] = malloc(16);
        snprintf(b->refs[i], 16, "%d", truth);
        b->ids[i] = malloc(16);
        snprintf(b->ids[i], 16, "q%d", i);
        aha__v1__score_item__init(&b->items[i]);
        b->items[i].id = b->ids[i];
        b->items[i].prompt = "Solve the problem.";
        b->items[i].completion = t;
        b->items[i].reference_answer = b->refs[i];
        b->items[i].language = (char *)O.language;
        b->items[i].task = "math";
        b->ptrs[i] = &b->items[i];
    }
    aha__v1__score_request__init(&b->req);
    b->req.n_items = (size_t)n;
    b->req.items = b->ptrs;
}

static void batch_free(batch *b, int n)
{
    for (int i = 0; i < n; i++) {
        free(b->texts[i]);
        free(b->refs[i]);
        free(b->ids[i]);
    }
    free(b->items);
    free(b->ptrs);
    free(b->texts);
    free(b->refs);
    free(b->ids);
}

typedef struct {
    aha_rpc_channel *ch;
    batch b;
    double end;
    long items, calls, errors;
    double total_sum; /* sanity: mean total should be ~1.5 (format 1, accuracy 1/2) */
} worker;

static void *run_worker(void *p)
{
    worker *w = p;
    while (aha_now_s() < w->end) {
        aha_rpc_call_opts o = {.timeout_ms = 30000};
        ProtobufCMessage *resp = NULL;
        aha_err err;
        aha_status st = aha_rpc_unary(w->ch, &aha__v1__reward__descriptor, "Score", &w->b.req.base,
                                      &resp, &o, &err);
        if (st != AHA_OK || ((Aha__V1__ScoreResponse *)resp)->n_results != w->b.req.n_items) {
            if (w->errors++ == 0) fprintf(stderr, "call failed: %s\n", st ? err.msg : "count");
        } else {
            Aha__V1__ScoreResponse *r = (Aha__V1__ScoreResponse *)resp;
            for (size_t k = 0; k < r->n_results; k++) w->total_sum += r->results[k]->total;
            w->items += (long)w->b.req.n_items;
            w->calls++;
        }
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static pid_t spawn(const char *bin, int *port)
{
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl(bin, bin, "--listen", "127.0.0.1:0", "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char line[256];
    size_t n = 0;
    *port = 0;
    double end = aha_now_s() + 20;
    while (aha_now_s() < end && n < sizeof line - 1) {
        struct pollfd p = {fd[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        char c;
        if (read(fd[0], &c, 1) != 1) break;
        if (c != '\n') {
            line[n++] = c;
            continue;
        }
        line[n] = 0;
        const char *k = strstr(line, "listening on port ");
        if (k) {
            *port = atoi(k + strlen("listening on port "));
            break;
        }
        n = 0;
    }
    close(fd[0]);
    return pid;
}

int main(int argc, char **argv)
{
    aha_log_set_level(AHA_LOG_WARN);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: see the header of bench/bench_reward.c\n");
            return 2;
        }
        i++;
        if (strcmp(f, "--target") == 0) O.target = v;
        else if (strcmp(f, "--server") == 0) O.server = v;
        else if (strcmp(f, "--language") == 0) O.language = v;
        else if (strcmp(f, "--seconds") == 0) O.seconds = atof(v);
        else if (strcmp(f, "--inflight") == 0) O.inflight = atoi(v);
        else if (strcmp(f, "--batch") == 0) O.batch = atoi(v);
        else if (strcmp(f, "--bytes") == 0) O.bytes = atoi(v);
        else if (strcmp(f, "--latency-calls") == 0) O.latency_calls = atoi(v);
        else {
            fprintf(stderr, "unknown flag %s\n", f);
            return 2;
        }
    }
    if (O.inflight < 1 || O.batch < 1 || O.bytes < 256 || O.seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = 0;
    char target[300];
    if (O.target) {
        snprintf(target, sizeof target, "%s", O.target);
    } else {
        char server[PATH_MAX];
        if (O.server) {
            snprintf(server, sizeof server, "%s", O.server);
        } else {
            char self[PATH_MAX];
            snprintf(self, sizeof self, "%s", argv[0]);
            snprintf(server, sizeof server, "%s/../services/reward/aha-reward", dirname(self));
        }
        int port;
        pid = spawn(server, &port);
        if (pid <= 0 || port <= 0) {
            fprintf(stderr, "cannot start %s\n", server);
            return 1;
        }
        snprintf(target, sizeof target, "127.0.0.1:%d", port);
    }
    aha_rpc_channel_opts co;
    aha_rpc_channel_opts_init(&co);
    aha_rpc_channel *ch;
    aha_err err;
    if (aha_rpc_channel_create(target, &co, &ch, &err) != AHA_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }

    /* unary latency: one item of a few bytes, sequential calls */
    batch small;
    batch_make(&small, 1, 256, 99);
    int nl = O.latency_calls;
    double *lat = calloc((size_t)(nl > 0 ? nl : 1), sizeof *lat);
    int lerr = 0;
    for (int i = -100; i < nl; i++) { /* 100 warm-up calls */
        aha_rpc_call_opts o = {.timeout_ms = 10000};
        ProtobufCMessage *resp = NULL;
        double t0 = aha_now_s();
        aha_status st = aha_rpc_unary(ch, &aha__v1__reward__descriptor, "Score", &small.req.base,
                                      &resp, &o, &err);
        double dt = aha_now_s() - t0;
        if (st != AHA_OK) lerr++;
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        if (i >= 0) lat[i] = dt;
    }
    batch_free(&small, 1);
    if (nl > 0) {
        qsort(lat, (size_t)nl, sizeof *lat, cmp_double);
        printf("unary latency (1 item of 256 B, %d calls): median %.1f us, p99 %.1f us, "
               "%d errors\n",
               nl, lat[nl / 2] * 1e6, lat[(int)(nl * 0.99)] * 1e6, lerr);
    }
    free(lat);

    /* throughput: K workers, one channel (one HTTP/2 connection) */
    worker *w = calloc((size_t)O.inflight, sizeof *w);
    pthread_t *t = calloc((size_t)O.inflight, sizeof *t);
    double t0 = aha_now_s();
    for (int i = 0; i < O.inflight; i++) {
        w[i].ch = ch;
        batch_make(&w[i].b, O.batch, O.bytes, (uint64_t)i + 1);
        w[i].end = t0 + O.seconds;
    }
    t0 = aha_now_s();
    for (int i = 0; i < O.inflight; i++) {
        w[i].end = t0 + O.seconds;
        pthread_create(&t[i], NULL, run_worker, &w[i]);
    }
    long items = 0, calls = 0, errors = 0;
    double total_sum = 0;
    for (int i = 0; i < O.inflight; i++) {
        pthread_join(t[i], NULL);
        items += w[i].items;
        calls += w[i].calls;
        errors += w[i].errors;
        total_sum += w[i].total_sum;
        batch_free(&w[i].b, O.batch);
    }
    double dt = aha_now_s() - t0;
    printf("Score: %d items x %d B per call, %d in flight, language '%s': %.0f scores/s "
           "(%ld calls in %.2f s, %.1f ms per call, %.1f MB/s of completions, mean total %.3f, "
           "%ld errors)\n",
           O.batch, O.bytes, O.inflight, O.language, (double)items / dt, calls, dt,
           calls ? dt * O.inflight / (double)calls * 1e3 : 0.0,
           (double)items * O.bytes / dt / 1e6, items ? total_sum / (double)items : 0.0, errors);
    free(w);
    free(t);
    aha_rpc_channel_free(ch);
    if (pid > 0) {
        kill(pid, SIGTERM);
        int status;
        waitpid(pid, &status, 0);
    }
    return errors || lerr ? 1 : 0;
}
