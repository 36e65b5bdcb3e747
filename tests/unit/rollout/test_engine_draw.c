/* test_engine_draw: the rollout engine's model-draw path (aha_model_decode_sample; on the CPU
 * backend the model's host fallback of it) on tests/fixtures/tiny-qwen2. Every expectation
 * is recomputed here from full forward passes of a second copy of the model:
 *   - draw auto resolves to host on the CPU; a bad draw mode is refused;
 *   - greedy output equals the argmax continuation; logprobs equal the full forward (1e-4);
 *   - sampled completions equal the documented draw (engine.h): token t of sample j of a
 *     prompt with stream seed S is aha_sample_token of the full-forward logits with
 *     aha_rng_seed(aha_mix64(AHA_ENGINE_DRAW_SEED, rng_id), plen - 1 + t), rng_id = high 32
 *     bits of aha_mix64(S, 0) + j; so they do not depend on the batch;
 *   - a prompt re-sent with its stream seed (prompt_seeds) in another request, at another
 *     index, beside other prompts, gives the same samples;
 *   - a greedy and a sampled request in the same decode steps (two decode calls per step,
 *     seen in the engine's statistics) each get exactly their own expectation;
 *   - the first and second tokens follow their exact laws under temperature / top-k / top-p
 *     (chi-square over 20,000 samples against the law from full forwards). */
#include "engine_util.h"

#include "base/fs.h"
#include "base/log.h"

static aha_model *ref;
static int V;

/* the model-draw stream of sample j of a prompt with stream seed S: its first n tokens */
static void expected_draws(const int32_t *prompt, int plen, uint64_t S, int j, const aha_sampling *sp, int n,
                           int32_t *out)
{
    int32_t rng_id = (int32_t)(uint32_t)((aha_mix64(S, 0) >> 32) + (uint64_t)j);
    float *lg = malloc((size_t)(n + 1) * V * 4), *lp = malloc((size_t)(n + 1) * 4);
    void *work = malloc(aha_sample_work_bytes(V));
    for (int t = 0; t < n; t++) {
        /* logits after prompt + out[0..t): score out[0..t) plus a placeholder token */
        out[t] = 0;
        eu_full_forward(ref, prompt, plen, out, t + 1, lp, lg);
        aha_rng rng;
        aha_rng_seed(&rng, aha_mix64(AHA_ENGINE_DRAW_SEED, (uint64_t)(uint32_t)rng_id), (uint64_t)(plen - 1 + t));
        out[t] = aha_sample_token(lg + (size_t)t * V, V, sp, &rng, work, NULL);
    }
    free(lg);
    free(lp);
    free(work);
}

/* every completion of prompts[p] (stream seed seeds[p]) equals its expected draws */
static int check_draws(const eu_sink *s, const int32_t *const *prompts, const int *lens, const uint64_t *seeds,
                       int np, int n, const aha_sampling *sp, int max_new, const char *what)
{
    int bad = 0;
    double worst = 0;
    for (int p = 0; p < np; p++)
        for (int j = 0; j < n; j++) {
            const eu_got *g = eu_find(s, p, j);
            int32_t ex[EU_MAXT];
            expected_draws(prompts[p], lens[p], seeds[p], j, sp, max_new, ex);
            if (!g || g->n != max_new || memcmp(g->ids, ex, (size_t)max_new * 4) != 0) {
                bad++;
                continue;
            }
            double d = eu_lp_err(ref, prompts[p], lens[p], g);
            if (d > worst) worst = d;
        }
    CHECK(bad == 0, "%s: %d of %d completions differ from the documented draw", what, bad, np * n);
    CHECK(worst < 1e-4, "%s: logprobs = full forward (max |d| %g)", what, worst);
    return bad;
}

static void chi_square_two(aha_engine *e, eu_sink *s, const int32_t *prompt, int plen, aha_sampling sp,
                           const char *what)
{
    const int N = 20000;
    CHECK(eu_run_copies(e, s, prompt, plen, sp, 2, 4321, N) == N, "%s: all %d samples", what, N);
    double *p1 = malloc((size_t)V * sizeof *p1), *p2 = malloc((size_t)V * sizeof *p2);
    long *c1 = calloc((size_t)V, sizeof *c1), *c2 = calloc((size_t)V, sizeof *c2);
    eu_two_token_law(ref, prompt, plen, &sp, p1, p2);
    long n2 = 0;
    for (int i = 0; i < s->n; i++) {
        c1[s->c[i].ids[0]]++;
        if (s->c[i].n == 2) {
            c2[s->c[i].ids[1]]++;
            n2++;
        }
    }
    CHECK(n2 == N, "%s: every sample has two tokens", what);
    char w[96];
    snprintf(w, sizeof w, "%s, token 1", what);
    eu_chi_square(c1, p1, V, N, w);
    snprintf(w, sizeof w, "%s, token 2 (decode_sample)", what);
    eu_chi_square(c2, p2, V, N, w);
    free(p1);
    free(p2);
    free(c1);
    free(c2);
}

int main(void)
{
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    char dir[] = "/tmp/aha_test_engine_draw_XXXXXX";
    aha_backend *be = NULL;
    eu_open_ref(dir, "tiny-qwen2", &be, &ref);
    if (!ref) return th_done("test_engine_draw");
    V = aha_model_cfg(ref)->vocab_size;
    eu_sink s = {.mu = PTHREAD_MUTEX_INITIALIZER, .c = calloc(EU_MAXC, sizeof(eu_got))};

    /* modes */
    aha_engine_opts o = {.model_dir = dir, .device = "cpu", .max_batch = 3, .max_seq_len = 64};
    aha_engine *e = NULL;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_OK, "%s", err.msg);
    CHECK(e && aha_engine_draw_mode(e) == AHA_DRAW_HOST, "auto draws on the host on the CPU backend");
    aha_engine_free(e);
    o.draw = (aha_engine_draw)7;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_EINVAL, "draw mode 7 refused");
    CHECK(aha_engine_draw_parse("model") == AHA_DRAW_MODEL && aha_engine_draw_parse("gpu") == -1, "parse");
    o.draw = AHA_DRAW_MODEL;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_OK, "%s", err.msg);
    if (!e) return th_done("test_engine_draw");
    CHECK(aha_engine_draw_mode(e) == AHA_DRAW_MODEL, "model draws");

    int32_t pa[] = {11, 200, 37, 5, 98, 401, 7}, pb[] = {300, 2, 2, 190};
    const int32_t *prompts[2] = {pa, pb};
    int lens[2] = {7, 4};

    /* greedy == argmax continuation; 2 prompts x n=4 on 3 slots (continuous batching) */
    aha_gen_request r = {.n_prompts = 2, .prompt_ids = prompts, .prompt_lens = lens, .n = 4,
                         .sampling = {.temperature = 0}, .max_new_tokens = 12, .seed = 5};
    CHECK(eu_run(e, &r, &s) == 8, "8 greedy completions (got %d)", s.n);
    float *lg = malloc((size_t)V * 13 * 4), lp[13];
    for (int p = 0; p < 2; p++) {
        int32_t seq[16];
        for (int t = 0; t < 12; t++) {
            seq[t] = 0;
            eu_full_forward(ref, prompts[p], lens[p], seq, t + 1, lp, lg);
            seq[t] = aha_argmax(lg + (size_t)t * V, V);
        }
        eu_check_greedy(ref, &s, p, 4, prompts[p], lens[p], seq, 12);
    }

    /* sampled: the documented draw, whatever shares the batch */
    r.n = 5;
    r.sampling = (aha_sampling){.temperature = 1.0f, .top_p = 0.9f, .top_k = 50};
    r.max_new_tokens = 20;
    CHECK(eu_run(e, &r, &s) == 10, "10 sampled completions (got %d)", s.n);
    uint64_t seeds[2] = {aha_mix64(5, 0), aha_mix64(5, 1)};
    check_draws(&s, prompts, lens, seeds, 2, 5, &r.sampling, 20, "T=1 top_p=0.9 top_k=50");
    int distinct = 0;
    for (int j = 1; j < 5; j++) {
        const eu_got *a = eu_find(&s, 0, 0), *b = eu_find(&s, 0, j);
        distinct += a && b && memcmp(a->ids, b->ids, 20 * 4) != 0;
    }
    CHECK(distinct == 4, "samples of a group differ (%d of 4)", distinct);

    /* the group re-sent with its stream seed, second in another request */
    const int32_t *swapped[2] = {pb, pa};
    int slens[2] = {4, 7};
    uint64_t pseeds[2] = {0, aha_mix64(5, 0)};
    aha_gen_request r2 = r;
    r2.prompt_ids = swapped;
    r2.prompt_lens = slens;
    r2.prompt_seeds = pseeds;
    r2.seed = 77;
    r2.n = 3;
    CHECK(eu_run(e, &r2, &s) == 6, "re-sent group");
    uint64_t seeds2[2] = {aha_mix64(77, 0), aha_mix64(5, 0)};
    check_draws(&s, swapped, slens, seeds2, 2, 3, &r.sampling, 20, "re-sent with prompt_seeds");

    /* a greedy and a sampled request in the same steps */
    aha_engine_free(e);
    o.max_batch = 8;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_OK, "%s", err.msg);
    eu_gate gate = EU_GATE_INIT;
    aha_gen *gc = NULL;
    eu_gate_hold(e, &gate, &prompts[0], &lens[0], &gc);
    eu_sink sa = {.mu = PTHREAD_MUTEX_INITIALIZER, .c = calloc(16, sizeof(eu_got))};
    eu_sink sb = {.mu = PTHREAD_MUTEX_INITIALIZER, .c = calloc(16, sizeof(eu_got))};
    aha_gen_request ra = {.n_prompts = 1, .prompt_ids = &prompts[0], .prompt_lens = &lens[0], .n = 3,
                          .sampling = {.temperature = 0}, .max_new_tokens = 12, .seed = 1,
                          .on_done = eu_on_done, .user = &sa};
    aha_gen_request rb = {.n_prompts = 1, .prompt_ids = &prompts[1], .prompt_lens = &lens[1], .n = 3,
                          .sampling = {.temperature = 1.3f, .top_k = 40}, .max_new_tokens = 12, .seed = 9,
                          .on_done = eu_on_done, .user = &sb};
    aha_gen *ga = NULL, *gb = NULL;
    CHECK(aha_engine_submit(e, &ra, &ga, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_engine_submit(e, &rb, &gb, &err) == AHA_OK, "%s", err.msg);
    eu_gate_open(&gate);
    CHECK(gc && aha_gen_wait(gc, NULL, NULL, &err) == AHA_OK, "gate request");
    CHECK(ga && aha_gen_wait(ga, NULL, NULL, &err) == AHA_OK, "greedy request");
    CHECK(gb && aha_gen_wait(gb, NULL, NULL, &err) == AHA_OK, "sampled request");
    aha_engine_stats st;
    aha_engine_get_stats(e, &st);
    CHECK(st.decode_calls >= st.steps + 10, "the two settings shared steps (%lld decode calls in %lld steps)",
          (long long)st.decode_calls, (long long)st.steps);
    int32_t greedy[12];
    for (int t = 0; t < 12; t++) {
        greedy[t] = 0;
        eu_full_forward(ref, pa, 7, greedy, t + 1, lp, lg);
        greedy[t] = aha_argmax(lg + (size_t)t * V, V);
    }
    for (int j = 0; j < 3; j++) {
        const eu_got *g = eu_find(&sa, 0, j);
        CHECK(g && g->n == 12 && memcmp(g->ids, greedy, 12 * 4) == 0, "mixed step: greedy sample %d", j);
    }
    uint64_t sb_seed = aha_mix64(9, 0);
    check_draws(&sb, &prompts[1], &lens[1], &sb_seed, 1, 3, &rb.sampling, 12, "mixed step: sampled");
    free(sa.c);
    free(sb.c);

    /* laws of the first two tokens */
    aha_engine_free(e);
    o.max_batch = 256;
    CHECK(aha_engine_create(&o, &e, &err) == AHA_OK, "%s", err.msg);
    chi_square_two(e, &s, pa, 7, (aha_sampling){.temperature = 1.0f}, "T=1");
    chi_square_two(e, &s, pb, 4, (aha_sampling){.temperature = 0.7f, .top_k = 20}, "T=0.7 top_k=20");
    chi_square_two(e, &s, pa, 7, (aha_sampling){.temperature = 1.3f, .top_p = 0.8f}, "T=1.3 top_p=0.8");

    aha_engine_free(e);
    aha_model_free(ref);
    aha_backend_free(be);
    free(lg);
    free(s.c);
    aha_remove_tree(dir, NULL);
    return th_done("test_engine_draw");
}
