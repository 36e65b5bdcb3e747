/* test_reward_c: aha-reward through aha's own C client (common/rpc).
 *
 * Starts the aha-reward binary on a free loopback port and scores batches of hostile and
 * ordinary items (Chinese and mixed chains of thought, invalid UTF-8, 100,000 nested braces,
 * empty strings, a completion over the text limit); every result must equal what the rules
 * library computes in this process for the same item and weights (the service must only
 * transport and order them), item errors included. Then limits, GroupAnswers against
 * aha_reward_equivalent, health, and a clean SIGTERM exit.
 *
 * usage: test_reward_c PATH/aha-reward */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness.h"
#include "aha/v1/reward.pb-c.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/rng.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rewards.h"
#include "rpc/rpc.h"

#define TEXT_LIMIT (1 << 20)

static pid_t g_pid;

/* Start the service; returns its port (0 on failure). */
static int spawn_service(const char *bin)
{
    int fd[2];
    if (pipe(fd) != 0) return 0;
    g_pid = fork();
    if (g_pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl(bin, bin, "--listen", "127.0.0.1:0", "--max-items", "1000", "--max-text-bytes",
              "1048576", "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char line[256];
    size_t n = 0;
    double end = aha_now_s() + 20;
    int port = 0;
    while (aha_now_s() < end && n < sizeof line - 1) {
        struct pollfd p = {fd[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        char ch;
        if (read(fd[0], &ch, 1) != 1) break;
        if (ch == '\n') {
            line[n] = 0;
            const char *k = strstr(line, "listening on port ");
            if (k) {
                port = atoi(k + strlen("listening on port "));
                break;
            }
            n = 0;
            continue;
        }
        line[n++] = ch;
    }
    close(fd[0]);
    return port;
}

static int stop_service(void)
{
    kill(g_pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 300; i++) {
        pid_t r = waitpid(g_pid, &status, WNOHANG);
        if (r == g_pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(20000);
    }
    kill(g_pid, SIGKILL);
    waitpid(g_pid, &status, 0);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */

typedef struct {
    char *id, *prompt, *completion, *reference, *language;
} item_text;

static char *dup_str(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

static char *fmt_str(const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *d = malloc(n);
    snprintf(d, n, fmt, a, b);
    return d;
}

/* Item i of a batch with a variety of shapes (deterministic from rng). */
static void make_item(aha_rng *rng, int i, item_text *t)
{
    static const char *const thinks[] = {
        "first compute 3 + 4 = 7, then check",
        "\xe9\xa6\x96\xe5\x85\x88\xe8\xae\xa1\xe7\xae\x97 3 + 4 \xe7\xad\x89\xe4\xba\x8e 7",
        "we compute \xe8\xae\xa1\xe7\xae\x97 $x^2$ then \xe6\xa3\x80\xe6\x9f\xa5 again",
        "", "\xff\xfe broken utf-8 \xc3", "so \\frac{1}{2} is 0.5 wait"};
    static const char *const answers[] = {"7", "\\frac{1}{2}", "0.5", "(1, 2)", "B", "50\\%",
                                          "1,000", "x = 3", "", "\\text{B}", "\xc3\x28"};
    static const char *const refs[] = {"7", "0.5", "1/2", "(1,2)", "(B)", "50%", "1000", "3",
                                       "4", "B", "x"};
    static const char *const langs[] = {"", "en", "zh", "ja", "xx", "EN"};
    char id[32];
    snprintf(id, sizeof id, "it%d", i);
    t->id = dup_str(id);
    const char *think = thinks[aha_rng_below(rng, AHA_ARRAY_LEN(thinks))];
    const char *ans = answers[aha_rng_below(rng, AHA_ARRAY_LEN(answers))];
    int shape = (int)aha_rng_below(rng, 4);
    if (shape == 0) t->completion = fmt_str("<think>%s</think>\n<answer>%s</answer>", think, ans);
    else if (shape == 1) t->completion = fmt_str("%s then \\boxed{%s}", think, ans);
    else if (shape == 2) t->completion = fmt_str("<think>%s</think><answer>%s", think, ans);
    else t->completion = fmt_str("%s<answer>%s</answer>", think, ans);
    t->prompt = dup_str(aha_rng_below(rng, 2) ? "Solve it. <think>" : "Solve it.");
    t->reference = dup_str(refs[aha_rng_below(rng, AHA_ARRAY_LEN(refs))]);
    t->language = dup_str(langs[aha_rng_below(rng, AHA_ARRAY_LEN(langs))]);
}

static void free_item(item_text *t)
{
    free(t->id);
    free(t->prompt);
    free(t->completion);
    free(t->reference);
    free(t->language);
}

static double comp_of(const Aha__V1__RewardResult *r, const char *key, int *found)
{
    for (size_t k = 0; k < r->n_components; k++)
        if (strcmp(r->components[k]->key, key) == 0) {
            *found = 1;
            return r->components[k]->value;
        }
    *found = 0;
    return NAN;
}

/* Compare one service result with the library's result for the same item. */
static int same_as_library(const item_text *t, const aha_reward_weights *w,
                           const Aha__V1__RewardResult *r, int verbose)
{
    aha_reward_item in = {t->prompt, strlen(t->prompt), t->completion, strlen(t->completion),
                          t->reference, strlen(t->reference), t->language, strlen(t->language),
                          "math", 4};
    aha_reward_result want;
    if (strlen(t->completion) > TEXT_LIMIT) {
        int ok = r->error[0] != 0 && r->total == 0;
        if (!ok && verbose) fprintf(stderr, "  %s: over the limit but no error\n", t->id);
        return ok;
    }
    aha_reward_score(&in, w, &want);
    int fa, ff, fl;
    double a = comp_of(r, "accuracy", &fa), f = comp_of(r, "format", &ff),
           l = comp_of(r, "language", &fl);
    int ok = strcmp(r->id, t->id) == 0 && strcmp(r->error, want.error) == 0;
    if (want.error[0]) {
        ok = ok && r->total == 0;
    } else {
        ok = ok && fa && ff && a == want.accuracy && f == want.format && r->total == want.total &&
             fl == (int)want.has_language && (!fl || l == want.language) &&
             strcmp(r->extracted_answer, want.extracted) == 0;
    }
    if (!ok && verbose)
        fprintf(stderr,
                "  %s: service total %g a %g f %g l %g err '%s' | library total %g a %g f %g "
                "l %g (has %d) err '%s'\n",
                t->id, r->total, a, f, l, r->error, want.total, want.accuracy, want.format,
                want.language, want.has_language, want.error);
    return ok;
}

static aha_status score_batch(aha_rpc_channel *ch, item_text *t, int n, const char *cfg,
                              Aha__V1__ScoreResponse **out, int *code, aha_err *err)
{
    Aha__V1__ScoreItem *items = calloc((size_t)n, sizeof *items);
    Aha__V1__ScoreItem **ptrs = calloc((size_t)n, sizeof *ptrs);
    for (int i = 0; i < n; i++) {
        aha__v1__score_item__init(&items[i]);
        items[i].id = t[i].id;
        items[i].prompt = t[i].prompt;
        items[i].completion = t[i].completion;
        items[i].reference_answer = t[i].reference;
        items[i].language = t[i].language;
        items[i].task = "math";
        ptrs[i] = &items[i];
    }
    Aha__V1__ScoreRequest req = AHA__V1__SCORE_REQUEST__INIT;
    req.n_items = (size_t)n;
    req.items = ptrs;
    req.config_json = (char *)(cfg ? cfg : "");
    aha_rpc_call_opts o = {.timeout_ms = 30000};
    ProtobufCMessage *resp = NULL;
    aha_status st =
        aha_rpc_unary(ch, &aha__v1__reward__descriptor, "Score", &req.base, &resp, &o, err);
    *code = o.code;
    *out = (Aha__V1__ScoreResponse *)resp;
    free(items);
    free(ptrs);
    return st;
}

int main(int argc, char **argv)
{
    aha_log_set_level(AHA_LOG_WARN);
    if (argc < 2) {
        fprintf(stderr, "usage: test_reward_c PATH/aha-reward\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int port = spawn_service(argv[1]);
    CHECK(port > 0, "service announced its port");
    if (port <= 0) return th_done("reward_c");
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    aha_rpc_channel_opts co;
    aha_rpc_channel_opts_init(&co);
    aha_rpc_channel *ch;
    aha_err err;
    CHECK(aha_rpc_channel_create(target, &co, &ch, &err) == AHA_OK, "channel");

    /* health */
    Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    hreq.service = "aha.v1.Reward";
    ProtobufCMessage *hresp = NULL;
    aha_rpc_call_opts ho = {.timeout_ms = 5000};
    aha_status st =
        aha_rpc_unary(ch, &grpc__health__v1__health__descriptor, "Check", &hreq.base, &hresp, &ho,
                      &err);
    CHECK(st == AHA_OK && hresp &&
              ((Grpc__Health__V1__HealthCheckResponse *)hresp)->status ==
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
          "health SERVING (%s)", st ? err.msg : "");
    if (hresp) protobuf_c_message_free_unpacked(hresp, NULL);

    /* batches of varied items, default and per-call weights */
    aha_rng rng;
    aha_rng_seed(&rng, 2026, 0);
    enum { N = 300 };
    item_text *t = calloc(N + 3, sizeof *t);
    for (int i = 0; i < N; i++) make_item(&rng, i, &t[i]);
    /* hostile extras: 100,000 nested braces, empty strings, a completion over the limit */
    size_t nb = 100000;
    char *braces = malloc(2 * nb + 16);
    memcpy(braces, "\\boxed", 6);
    memset(braces + 6, '{', nb);
    memset(braces + 6 + nb, '}', nb);
    braces[6 + 2 * nb] = 0;
    t[N] = (item_text){dup_str("braces"), dup_str(""), braces, dup_str("1"), dup_str("en")};
    t[N + 1] = (item_text){dup_str("empty"), dup_str(""), dup_str(""), dup_str(""), dup_str("")};
    char *huge = malloc((size_t)TEXT_LIMIT + 2);
    memset(huge, 'a', (size_t)TEXT_LIMIT + 1);
    huge[TEXT_LIMIT + 1] = 0;
    t[N + 2] = (item_text){dup_str("huge"), dup_str(""), huge, dup_str("1"), dup_str("")};

    const char *cfgs[3] = {NULL, "{\"weights\": {\"accuracy\": 2.5, \"format\": 0.25, "
                                 "\"language\": 1}}",
                           "{\"weights\": {\"language\": 0.5}}"};
    aha_reward_weights ws[3];
    for (int c = 0; c < 3; c++) {
        ws[c] = aha_reward_weights_default();
        if (cfgs[c]) aha_reward_weights_from_json(cfgs[c], strlen(cfgs[c]), &ws[c], &err);
    }
    for (int c = 0; c < 3; c++) {
        Aha__V1__ScoreResponse *r = NULL;
        int code;
        st = score_batch(ch, t, N + 3, cfgs[c], &r, &code, &err);
        CHECK(st == AHA_OK, "batch %d: %s", c, st ? err.msg : "");
        CHECK(r && r->n_results == N + 3, "batch %d: %zu results", c, r ? r->n_results : 0);
        int bad = 0, errors = 0;
        for (int i = 0; r && i < N + 3 && i < (int)r->n_results; i++) {
            if (!same_as_library(&t[i], &ws[c], r->results[i], bad < 5)) bad++;
            if (r->results[i]->error[0]) errors++;
        }
        CHECK(bad == 0, "batch %d: %d of %d results differ from the library", c, bad, N + 3);
        CHECK(errors >= 2, "batch %d: item errors present (%d: invalid UTF-8, huge)", c, errors);
        if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
    }

    /* limits: too many items, bad config */
    item_text *many = calloc(1001, sizeof *many);
    for (int i = 0; i < 1001; i++) many[i] = t[i % N];
    Aha__V1__ScoreResponse *r = NULL;
    int code;
    st = score_batch(ch, many, 1001, NULL, &r, &code, &err);
    CHECK(st == AHA_EINVAL && code == 3, "1001 items -> INVALID_ARGUMENT (%d %s)", code, err.msg);
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
    free(many);
    st = score_batch(ch, t, 1, "{\"weights\": {\"format\": \"high\"}}", &r, &code, &err);
    CHECK(st == AHA_EINVAL && code == 3 && strstr(err.msg, "format"),
          "bad config_json -> INVALID_ARGUMENT naming the key (%s)", err.msg);
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);

    /* GroupAnswers: groups follow aha_reward_equivalent */
    const char *answers[] = {"1/2", "0.5", "3", "\\frac12", "3.0", "(1,2)", "(1, 2)", "B", "(B)"};
    size_t na = AHA_ARRAY_LEN(answers);
    Aha__V1__GroupAnswersRequest greq = AHA__V1__GROUP_ANSWERS_REQUEST__INIT;
    greq.n_answers = na;
    greq.answers = (char **)answers;
    ProtobufCMessage *gresp = NULL;
    aha_rpc_call_opts go = {.timeout_ms = 5000};
    st = aha_rpc_unary(ch, &aha__v1__reward__descriptor, "GroupAnswers", &greq.base, &gresp, &go,
                       &err);
    CHECK(st == AHA_OK, "GroupAnswers: %s", st ? err.msg : "");
    Aha__V1__GroupAnswersResponse *g = (Aha__V1__GroupAnswersResponse *)gresp;
    if (g && g->n_group == na) {
        for (size_t i = 0; i < na; i++) {
            int32_t want = (int32_t)i;
            for (size_t j = 0; j < i; j++) {
                bool eq = false, leader = true;
                for (size_t k = 0; k < j; k++) { /* j must lead its own group */
                    bool e2 = false;
                    aha_reward_equivalent(answers[j], strlen(answers[j]), answers[k],
                                          strlen(answers[k]), &e2, &err);
                    if (e2) leader = false;
                }
                if (!leader) continue;
                aha_reward_equivalent(answers[i], strlen(answers[i]), answers[j],
                                      strlen(answers[j]), &eq, &err);
                if (eq) {
                    want = (int32_t)j;
                    break;
                }
            }
            CHECK(g->group[i] == want, "group[%zu] = %d, library says %d", i, g->group[i], want);
        }
    } else {
        CHECK(0, "GroupAnswers returned %zu groups", g ? g->n_group : 0);
    }
    if (gresp) protobuf_c_message_free_unpacked(gresp, NULL);

    aha_rpc_channel_free(ch);
    int rc = stop_service();
    CHECK(rc == 0, "aha-reward exit code %d after SIGTERM", rc);
    for (int i = 0; i < N + 3; i++) free_item(&t[i]);
    free(t);
    return th_done("reward_c");
}
