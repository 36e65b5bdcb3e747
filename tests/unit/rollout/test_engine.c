/* test_engine: the rollout engine on tests/fixtures/tiny-qwen2, checked against the model's
 * full forward pass (every expected value is computed here from aha_model_token_logprobs):
 *   - greedy output equals the argmax continuation of repeated full forwards;
 *   - reported logprobs equal full-forward logprobs of the sampled sequences (1e-4);
 *   - n samples of a group share one prefill, and more samples than slots still all arrive,
 *     each correct (continuous batching);
 *   - same seed + same request = same tokens; samples of a group differ;
 *   - the first sampled token follows softmax(logits / T) restricted by top-k / top-p
 *     (chi-square over 20,000 samples at a fixed seed, several settings);
 *   - stop strings cut the text before the stop and end the ids at the token completing it;
 *   - requests that cannot fit are ELIMIT, bad ones EINVAL. */
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../harness.h"
#include "backend/backend.h"
#include "base/fs.h"
#include "base/log.h"
#include "engine.h"

#define MAXC 40000

typedef struct {
    int prompt, index, n;
    int32_t ids[64];
    float lp[64];
    char text[512];
    char reason[8];
    int64_t version, first_version;
} got_t;

typedef struct {
    pthread_mutex_t mu;
    int n;
    got_t *c; /* MAXC */
} sink_t;

static void on_done(void *user, const aha_completion *c)
{
    sink_t *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->n < MAXC) {
        got_t *g = &s->c[s->n++];
        g->prompt = c->prompt;
        g->index = c->index;
        g->n = c->n_ids < 64 ? c->n_ids : 64;
        memcpy(g->ids, c->ids, (size_t)g->n * 4);
        memcpy(g->lp, c->logprobs, (size_t)g->n * 4);
        size_t tl = c->text_len < 511 ? c->text_len : 511;
        memcpy(g->text, c->text, tl);
        g->text[tl] = 0;
        snprintf(g->reason, sizeof g->reason, "%s", c->finish_reason);
        g->version = c->version;
        g->first_version = c->first_version;
    }
    pthread_mutex_unlock(&s->mu);
}

static aha_backend *be;
static aha_model *ref; /* the same model, for full forwards */
static int V;

/* logits (V) after the whole sequence ids[0..n) */
static void last_logits(const int32_t *ids, int n, float *out)
{
    int32_t cu[2] = {0, n};
    aha_batch b = {ids, cu, 1};
    float *lp = malloc((size_t)n * 4), *lg = malloc((size_t)n * V * 4);
    aha_err err;
    AHA_ASSERT(aha_model_token_logprobs(ref, &b, lp, lg, &err) == AHA_OK);
    memcpy(out, lg + (size_t)(n - 1) * V, (size_t)V * 4);
    free(lp);
    free(lg);
}

/* max |reported - full forward| over a completion of prompt p */
static double lp_err(const int32_t *p, int plen, const got_t *g)
{
    int n = plen + g->n;
    int32_t *ids = malloc((size_t)n * 4);
    memcpy(ids, p, (size_t)plen * 4);
    memcpy(ids + plen, g->ids, (size_t)g->n * 4);
    int32_t cu[2] = {0, n};
    aha_batch b = {ids, cu, 1};
    float *lp = malloc((size_t)n * 4);
    aha_err err;
    AHA_ASSERT(aha_model_token_logprobs(ref, &b, lp, NULL, &err) == AHA_OK);
    double worst = 0;
    for (int t = 0; t < g->n; t++) {
        double d = fabs(lp[plen - 1 + t] - g->lp[t]);
        if (d > worst) worst = d;
    }
    free(ids);
    free(lp);
    return worst;
}

static int run(aha_engine *e, aha_gen_request *r, sink_t *s)
{
    s->n = 0;
    r->on_done = on_done;
    r->user = s;
    aha_gen *g;
    aha_err err;
    if (aha_engine_submit(e, r, &g, &err) != AHA_OK) {
        fprintf(stderr, "submit: %s\n", err.msg);
        return -1;
    }
    if (aha_gen_wait(g, NULL, NULL, &err) != AHA_OK) {
        fprintf(stderr, "wait: %s\n", err.msg);
        return -1;
    }
    return s->n;
}

static const got_t *find(const sink_t *s, int prompt, int index)
{
    for (int i = 0; i < s->n; i++)
        if (s->c[i].prompt == prompt && s->c[i].index == index) return &s->c[i];
    return NULL;
}

/* Wilson-Hilferty approximation of the chi-square quantile for p = 0.999 */
static double chi2_crit(int df)
{
    double z = 3.090, a = 2.0 / (9.0 * df), b = 1 - a + z * sqrt(a);
    return df * b * b * b;
}

static void chi_square(aha_engine *e, sink_t *s, const int32_t *prompt, int plen,
                       aha_sampling sp, const char *what)
{
    /* 5 copies of the prompt x 4000 samples: every (prompt, sample) stream is distinct */
    const int N = 20000;
    const int32_t *pp[5] = {prompt, prompt, prompt, prompt, prompt};
    int pl[5] = {plen, plen, plen, plen, plen};
    aha_gen_request r = {.n_prompts = 5, .prompt_ids = pp, .prompt_lens = pl, .n = N / 5,
                         .sampling = sp, .max_new_tokens = 1, .seed = 1234};
    CHECK(run(e, &r, s) == N, "%s: all %d samples", what, N);
    float *lg = malloc((size_t)V * 4), *probs = malloc((size_t)V * 4);
    void *work = malloc(aha_sample_work_bytes(V));
    last_logits(prompt, plen, lg);
    aha_sample_probs(lg, V, &sp, work, probs);
    long *cnt = calloc((size_t)V, sizeof *cnt);
    for (int i = 0; i < s->n; i++) cnt[s->c[i].ids[0]]++;
    double chi = 0, pool_e = 0, pool_o = 0;
    int df = -1, outside = 0;
    for (int v = 0; v < V; v++) {
        double ex = probs[v] * N;
        if (probs[v] == 0 && cnt[v] > 0) outside++;
        if (ex >= 5) {
            chi += (cnt[v] - ex) * (cnt[v] - ex) / ex;
            df++;
        } else {
            pool_e += ex;
            pool_o += (double)cnt[v];
        }
    }
    if (pool_e >= 5) {
        chi += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        df++;
    }
    CHECK(outside == 0, "%s: %d samples outside the top-k/top-p support", what, outside);
    CHECK(df >= 3, "%s: %d degrees of freedom", what, df);
    CHECK(chi < chi2_crit(df), "%s: chi-square %.1f with %d dof over the 0.999 critical %.1f", what,
          chi, df, chi2_crit(df));
    fprintf(stderr, "  %-34s chi-square %.1f, %d dof (critical %.1f)\n", what, chi, df, chi2_crit(df));
    free(lg);
    free(probs);
    free(work);
    free(cnt);
}

int main(void)
{
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    /* a model dir = the fixture + a byte-level tokenizer (for text and stop strings) */
    char tmp[] = "/tmp/aha_test_engine_XXXXXX", src[1024], p1[1200], p2[1200];
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    snprintf(src, sizeof src, "%s/tiny-qwen2", th_fixtures());
    const char *files[] = {"config.json", "model.safetensors", "generation_config.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p1, sizeof p1, "%s/%s", src, files[i]);
        snprintf(p2, sizeof p2, "%s/%s", tmp, files[i]);
        if (symlink(p1[0] == '/' ? p1 : realpath(p1, NULL), p2) != 0) CHECK(0, "symlink %s", p2);
    }
    const char *specials[] = {"<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"};
    CHECK(aha_tokenizer_write_bytelevel(tmp, specials, 5, &err) == AHA_OK, "%s", err.msg);

    aha_backend_open("cpu", 1, &be, &err);
    CHECK(aha_model_open(src, be, NULL, &ref, &err) == AHA_OK, "%s", err.msg);
    V = aha_model_cfg(ref)->vocab_size;
    aha_engine_opts o = {.model_dir = tmp, .device = "cpu", .max_batch = 3, .max_seq_len = 64};
    aha_engine *e = NULL;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_OK, "%s", err.msg);
    if (!e) return th_done("test_engine");
    sink_t s = {.mu = PTHREAD_MUTEX_INITIALIZER, .c = calloc(MAXC, sizeof(got_t))};

    int32_t pa[] = {11, 200, 37, 5, 98, 401, 7}, pb[] = {300, 2, 2, 190};
    const int32_t *prompts[2] = {pa, pb};
    int lens[2] = {7, 4};

    /* greedy == argmax continuation of full forwards; 2 prompts x n=4 on 3 slots */
    aha_gen_request r = {.n_prompts = 2, .prompt_ids = prompts, .prompt_lens = lens, .n = 4,
                         .sampling = {.temperature = 0}, .max_new_tokens = 12, .seed = 5};
    CHECK(run(e, &r, &s) == 8, "8 greedy completions (got %d)", s.n);
    float *lg = malloc((size_t)V * 4);
    for (int p = 0; p < 2; p++) {
        int32_t seq[64];
        memcpy(seq, prompts[p], (size_t)lens[p] * 4);
        int n = lens[p];
        for (int t = 0; t < 12; t++) {
            last_logits(seq, n, lg);
            seq[n++] = aha_argmax(lg, V);
        }
        for (int j = 0; j < 4; j++) {
            const got_t *g = find(&s, p, j);
            CHECK(g && g->n == 12 && memcmp(g->ids, seq + lens[p], 12 * 4) == 0,
                  "prompt %d sample %d equals the argmax continuation", p, j);
            CHECK(g && strcmp(g->reason, "length") == 0, "finish_reason length");
            CHECK(g && lp_err(prompts[p], lens[p], g) < 1e-4, "greedy logprobs = full forward");
        }
    }

    /* sampling: logprobs = full forward; continuous batching over 3 slots; determinism */
    r.n = 5;
    r.sampling = (aha_sampling){.temperature = 1.0f, .top_p = 0.9f, .top_k = 50};
    r.max_new_tokens = 20;
    CHECK(run(e, &r, &s) == 10, "10 sampled completions (got %d)", s.n);
    got_t first[10];
    double worst = 0;
    int distinct = 0;
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 5; j++) {
            const got_t *g = find(&s, p, j);
            CHECK(g != NULL, "prompt %d sample %d delivered", p, j);
            if (!g) continue;
            first[p * 5 + j] = *g;
            double d = lp_err(prompts[p], lens[p], g);
            if (d > worst) worst = d;
            if (j > 0 && memcmp(g->ids, first[p * 5].ids, (size_t)g->n * 4) != 0) distinct++;
        }
    CHECK(worst < 1e-4, "sampled logprobs = full forward (max |d| %g)", worst);
    CHECK(distinct >= 6, "samples of a group differ (%d of 8)", distinct);
    CHECK(run(e, &r, &s) == 10, "rerun");
    int same = 1;
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 5; j++) {
            const got_t *g = find(&s, p, j);
            same &= g && g->n == first[p * 5 + j].n &&
                    memcmp(g->ids, first[p * 5 + j].ids, (size_t)g->n * 4) == 0;
        }
    CHECK(same, "same seed + same request = same tokens");
    /* the stream of sample j does not depend on the group size or the other prompts */
    aha_gen_request r1 = r;
    r1.n_prompts = 1;
    r1.n = 3;
    CHECK(run(e, &r1, &s) == 3, "single prompt, fewer samples");
    const got_t *g2 = find(&s, 0, 2);
    CHECK(g2 && memcmp(g2->ids, first[0 * 5 + 2].ids, (size_t)g2->n * 4) == 0,
          "sample 2 of prompt 0 here equals sample 2 of prompt 0 before");

    /* text and stop strings */
    r1 = r;
    r1.n_prompts = 1;
    r1.n = 1;
    r1.sampling = (aha_sampling){.temperature = 0};
    r1.max_new_tokens = 30;
    CHECK(run(e, &r1, &s) == 1, "one greedy");
    got_t full = s.c[0];
    char *dec = NULL;
    size_t dl = 0;
    aha_tokenizer_decode_len(aha_engine_tokenizer(e), full.ids, (size_t)full.n, &dec, &dl, &err);
    CHECK(dec && strlen(full.text) == strlen(dec) && strcmp(full.text, dec) == 0,
          "text = decode(ids)");
    /* a stop string from the middle of the text */
    size_t tl = strlen(full.text);
    char stop[8] = {0};
    if (tl >= 12) memcpy(stop, full.text + tl / 2, 3);
    if (tl >= 12 && !memchr(stop, 0, 3)) {
        const char *stops[1] = {stop};
        r1.stop = stops;
        r1.n_stop = 1;
        CHECK(run(e, &r1, &s) == 1, "stopped run");
        const got_t *g = &s.c[0];
        const char *hit = strstr(full.text, stop);
        CHECK(strcmp(g->reason, "stop") == 0, "finish_reason stop");
        CHECK(hit && strlen(g->text) == (size_t)(hit - full.text) &&
                  strncmp(g->text, full.text, strlen(g->text)) == 0,
              "text cut before the stop string ('%s' in '%s' -> '%s')", stop, full.text, g->text);
        CHECK(g->n <= full.n && memcmp(g->ids, full.ids, (size_t)g->n * 4) == 0,
              "stopped ids are a prefix of the full ids");
        r1.stop = NULL;
        r1.n_stop = 0;
    }
    free(dec);

    /* chi-square of the first token (a fresh engine with more slots) */
    aha_engine_free(e);
    o.max_batch = 256;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_OK, "%s", err.msg);
    chi_square(e, &s, pa, 7, (aha_sampling){.temperature = 1.0f}, "T=1");
    chi_square(e, &s, pa, 7, (aha_sampling){.temperature = 0.7f, .top_k = 20}, "T=0.7 top_k=20");
    chi_square(e, &s, pb, 4, (aha_sampling){.temperature = 1.3f, .top_p = 0.8f}, "T=1.3 top_p=0.8");
    chi_square(e, &s, pb, 4, (aha_sampling){.temperature = 2.0f, .top_k = 100, .top_p = 0.5f},
               "T=2 top_k=100 top_p=0.5");

    /* limits and bad requests */
    aha_gen *g = NULL;
    aha_gen_request bad = r;
    bad.max_new_tokens = 60;
    CHECK(aha_engine_submit(e, &bad, &g, &err) == AHA_ELIMIT, "prompt + max_new over max_seq_len: %s",
          err.msg);
    bad = r;
    bad.n = 0;
    CHECK(aha_engine_submit(e, &bad, &g, &err) == AHA_EINVAL, "n = 0");
    int32_t oov[2] = {1, 100000};
    const int32_t *po = oov;
    int lo = 2;
    bad = r;
    bad.n_prompts = 1;
    bad.prompt_ids = &po;
    bad.prompt_lens = &lo;
    CHECK(aha_engine_submit(e, &bad, &g, &err) == AHA_EINVAL && strstr(err.msg, "vocabulary"),
          "out-of-vocabulary prompt: %s", err.msg);
    bad = r;
    bad.n = 4000;
    bad.n_prompts = 2;
    aha_engine_opts o2 = o;
    (void)o2;
    bad.sampling.temperature = -1;
    CHECK(aha_engine_submit(e, &bad, &g, &err) == AHA_EINVAL, "negative temperature");

    /* cancellation: a long request is dropped and wait returns ECANCELLED */
    aha_gen_request lr = r;
    lr.n = 2000;
    lr.max_new_tokens = 50;
    lr.on_done = on_done;
    lr.user = &s;
    CHECK(aha_engine_submit(e, &lr, &g, &err) == AHA_OK, "%s", err.msg);
    aha_gen_cancel(g);
    CHECK(aha_gen_wait(g, NULL, NULL, &err) == AHA_ECANCELLED, "cancelled request");

    aha_engine_stats st;
    aha_engine_get_stats(e, &st);
    CHECK(st.active == 0 && st.queued == 0, "idle after cancel (active %d, queued %d)", st.active,
          st.queued);
    /* 80,000 samples of 20 (prompt copy) groups through 256 slots: one prefill per admitted part
     * of a group, at most 20 x ceil(4000 / 256) = 320, plus the cancelled request's parts */
    CHECK(st.prefills <= 320 + 2 * 9, "a group's samples share prefills (%lld prefills for "
          "80,000 samples)", (long long)st.prefills);

    aha_engine_free(e);
    aha_model_free(ref);
    aha_backend_free(be);
    free(lg);
    free(s.c);
    aha_remove_tree(tmp, NULL);
    return th_done("test_engine");
}
