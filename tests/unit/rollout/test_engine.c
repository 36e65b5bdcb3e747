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
#include "engine_util.h"

#include "base/fs.h"
#include "base/log.h"

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

static void chi_square(aha_engine *e, eu_sink *s, const int32_t *prompt, int plen, aha_sampling sp,
                       const char *what)
{
    const int N = 20000;
    CHECK(eu_run_copies(e, s, prompt, plen, sp, 1, 1234, N) == N, "%s: all %d samples", what, N);
    float *lg = malloc((size_t)V * 4), *probs = malloc((size_t)V * 4);
    double *law = malloc((size_t)V * sizeof *law);
    void *work = malloc(aha_sample_work_bytes(V));
    last_logits(prompt, plen, lg);
    aha_sample_probs(lg, V, &sp, work, probs);
    for (int v = 0; v < V; v++) law[v] = probs[v];
    long *cnt = calloc((size_t)V, sizeof *cnt);
    for (int i = 0; i < s->n; i++) cnt[s->c[i].ids[0]]++;
    eu_chi_square(cnt, law, V, N, what);
    free(lg);
    free(probs);
    free(law);
    free(work);
    free(cnt);
}

int main(void)
{
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    /* a model dir = the fixture + a byte-level tokenizer (for text and stop strings) */
    char tmp[] = "/tmp/aha_test_engine_XXXXXX";
    eu_open_ref(tmp, "tiny-qwen2", &be, &ref);
    V = aha_model_cfg(ref)->vocab_size;
    aha_engine_opts o = {.model_dir = tmp, .device = "cpu", .max_batch = 3, .max_seq_len = 64};
    aha_engine *e = NULL;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_OK, "%s", err.msg);
    if (!e) return th_done("test_engine");
    eu_sink s = {.mu = PTHREAD_MUTEX_INITIALIZER, .c = calloc(EU_MAXC, sizeof(eu_got))};

    int32_t pa[] = {11, 200, 37, 5, 98, 401, 7}, pb[] = {300, 2, 2, 190};
    const int32_t *prompts[2] = {pa, pb};
    int lens[2] = {7, 4};

    /* greedy == argmax continuation of full forwards; 2 prompts x n=4 on 3 slots */
    aha_gen_request r = {.n_prompts = 2, .prompt_ids = prompts, .prompt_lens = lens, .n = 4,
                         .sampling = {.temperature = 0}, .max_new_tokens = 12, .seed = 5};
    CHECK(eu_run(e, &r, &s) == 8, "8 greedy completions (got %d)", s.n);
    float *lg = malloc((size_t)V * 4);
    for (int p = 0; p < 2; p++) {
        int32_t seq[64];
        memcpy(seq, prompts[p], (size_t)lens[p] * 4);
        int n = lens[p];
        for (int t = 0; t < 12; t++) {
            last_logits(seq, n, lg);
            seq[n++] = aha_argmax(lg, V);
        }
        eu_check_greedy(ref, &s, p, 4, prompts[p], lens[p], seq + lens[p], 12);
    }

    /* sampling: logprobs = full forward; continuous batching over 3 slots; determinism */
    r.n = 5;
    r.sampling = (aha_sampling){.temperature = 1.0f, .top_p = 0.9f, .top_k = 50};
    r.max_new_tokens = 20;
    CHECK(eu_run(e, &r, &s) == 10, "10 sampled completions (got %d)", s.n);
    eu_got first[10];
    double worst = 0;
    int distinct = 0;
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 5; j++) {
            const eu_got *g = eu_find(&s, p, j);
            CHECK(g != NULL, "prompt %d sample %d delivered", p, j);
            if (!g) continue;
            first[p * 5 + j] = *g;
            double d = eu_lp_err(ref, prompts[p], lens[p], g);
            if (d > worst) worst = d;
            if (j > 0 && memcmp(g->ids, first[p * 5].ids, (size_t)g->n * 4) != 0) distinct++;
        }
    CHECK(worst < 1e-4, "sampled logprobs = full forward (max |d| %g)", worst);
    CHECK(distinct >= 6, "samples of a group differ (%d of 8)", distinct);
    CHECK(eu_run(e, &r, &s) == 10, "rerun");
    int same = 1;
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 5; j++) {
            const eu_got *g = eu_find(&s, p, j);
            same &= g && g->n == first[p * 5 + j].n &&
                    memcmp(g->ids, first[p * 5 + j].ids, (size_t)g->n * 4) == 0;
        }
    CHECK(same, "same seed + same request = same tokens");
    /* the stream of sample j does not depend on the group size or the other prompts */
    aha_gen_request r1 = r;
    r1.n_prompts = 1;
    r1.n = 3;
    CHECK(eu_run(e, &r1, &s) == 3, "single prompt, fewer samples");
    const eu_got *g2 = eu_find(&s, 0, 2);
    CHECK(g2 && memcmp(g2->ids, first[0 * 5 + 2].ids, (size_t)g2->n * 4) == 0,
          "sample 2 of prompt 0 here equals sample 2 of prompt 0 before");

    /* text and stop strings */
    r1 = r;
    r1.n_prompts = 1;
    r1.n = 1;
    r1.sampling = (aha_sampling){.temperature = 0};
    r1.max_new_tokens = 30;
    CHECK(eu_run(e, &r1, &s) == 1, "one greedy");
    eu_got full = s.c[0];
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
        CHECK(eu_run(e, &r1, &s) == 1, "stopped run");
        const eu_got *g = &s.c[0];
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
    lr.on_done = eu_on_done;
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
