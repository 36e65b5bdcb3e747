/* test_dist_messages: the step messages learner rank 0 sends to the other ranks
 * (services/learner/dprun.c) are read with bounds checks: a well-formed GRPO / SFT step trains
 * (one rank, no communicator: aha_dp_step is then clip + AdamW, and the weights move), while
 * every truncation of it, trailing bytes and lying counts are refused with AHA_EFORMAT, without
 * reading past the buffer (run under ASan in CI) and without touching the weights. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "base/rng.h"
#include "io/config.h"
#include "runner_int.h"

static const char *cfg_json =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 32,"
    " \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-6,"
    " \"rope_theta\": 10000.0, \"tie_word_embeddings\": true, \"vocab_size\": 64,"
    " \"eos_token_id\": 63, \"initializer_range\": 0.02}";

enum { NQ = 2, G = 3, PL = 5 };

/* A GRPO step as grpo.c's pack_step lays it out: total, nq, G, kl flag; per prompt its length
 * and ids; per sample n, ids, rollout logprobs, reference logprobs (kl), advantage. */
static void grpo_message(aha__wbuf *w, int kl, uint64_t seed)
{
    aha_rng g;
    aha_rng_seed(&g, seed, 0);
    aha__wbuf_i64(w, 4);
    aha__wbuf_i64(w, NQ);
    aha__wbuf_i64(w, G);
    aha__wbuf_i64(w, kl);
    for (int q = 0; q < NQ; q++) {
        aha__wbuf_i64(w, PL);
        for (int t = 0; t < PL; t++) {
            int32_t id = (int32_t)aha_rng_below(&g, 60);
            aha__wbuf_put(w, &id, sizeof id);
        }
    }
    for (int i = 0; i < NQ * G; i++) {
        int n = 2 + i % 3;
        aha__wbuf_i64(w, n);
        for (int t = 0; t < n; t++) {
            int32_t id = (int32_t)aha_rng_below(&g, 60);
            aha__wbuf_put(w, &id, sizeof id);
        }
        for (int t = 0; t < n; t++) {
            float lp = -1.0f - aha_rng_f32(&g);
            aha__wbuf_put(w, &lp, sizeof lp);
        }
        if (kl)
            for (int t = 0; t < n; t++) {
                float lp = -1.5f - aha_rng_f32(&g);
                aha__wbuf_put(w, &lp, sizeof lp);
            }
        float adv = (float)((i % G) - 1);
        aha__wbuf_put(w, &adv, sizeof adv);
    }
}

static void sft_message(aha__wbuf *w)
{
    aha__wbuf_i64(w, 4);
    aha__wbuf_i64(w, 2);
    for (int b = 0; b < 2; b++) {
        aha__wbuf_i64(w, 8);
        aha__wbuf_i64(w, 3);
        for (int t = 0; t < 8; t++) {
            int32_t id = (int32_t)(b * 7 + t * 3) % 60;
            aha__wbuf_put(w, &id, sizeof id);
        }
    }
}

static double weights_sum(aha_model *m)
{
    double s = 0;
    float buf[4096];
    for (int i = 0; i < aha_model_n_params(m); i++) {
        const aha_param_info *p = aha_model_param(m, i);
        if (p->numel > 4096) continue;
        aha_model_param_get_f32(m, i, buf, NULL);
        for (int64_t k = 0; k < p->numel; k++) s += fabs((double)buf[k]) * (double)(k % 7 + 1);
    }
    return s;
}

typedef aha_status (*follow_fn)(aha__job *j, aha__rbuf *r, aha_err *err);

/* every strict prefix of msg is refused, the weights unchanged; then the whole trains */
static void check_truncations(const char *what, aha__job *j, const aha__wbuf *msg, follow_fn fn)
{
    double before = weights_sum(j->m);
    int refused = 0;
    for (size_t len = 0; len < msg->n; len++) {
        /* a copy of exactly len bytes, so that ASan sees any read past it */
        char *cut = malloc(len ? len : 1);
        memcpy(cut, msg->p, len);
        aha__rbuf r = {cut, len, 0, false};
        aha_err err = {0};
        aha_status st = fn(j, &r, &err);
        refused += st == AHA_EFORMAT;
        if (st != AHA_EFORMAT)
            CHECK(0, "%s cut to %zu of %zu bytes: status %s (%s)", what, len, msg->n, aha_status_name(st), err.msg);
        free(cut);
    }
    CHECK(refused == (int)msg->n, "%s: all %zu truncations refused", what, msg->n);
    CHECK(weights_sum(j->m) == before, "%s: refused messages left the weights alone", what);
    char *whole = malloc(msg->n);
    memcpy(whole, msg->p, msg->n);
    aha__rbuf r = {whole, msg->n, 0, false};
    aha_err err = {0};
    aha_status st = fn(j, &r, &err);
    CHECK(st == AHA_OK, "%s: the whole message trains: %s", what, err.msg);
    CHECK(weights_sum(j->m) != before, "%s: and moves the weights", what);
    free(whole);
}

/* the message with the int64 at byte offset off replaced by v is refused */
static void check_lie(const char *what, aha__job *j, const aha__wbuf *msg, size_t off, int64_t v, follow_fn fn)
{
    char *bad = malloc(msg->n);
    memcpy(bad, msg->p, msg->n);
    memcpy(bad + off, &v, sizeof v);
    aha__rbuf r = {bad, msg->n, 0, false};
    aha_err err = {0};
    aha_status st = fn(j, &r, &err);
    CHECK(st == AHA_EFORMAT, "%s: field at byte %zu = %lld refused (%s: %s)", what, off, (long long)v,
          aha_status_name(st), err.msg);
    free(bad);
}

/* msg with 4 more bytes after its end is refused */
static void check_trailing(const char *what, aha__job *j, const aha__wbuf *msg, follow_fn fn)
{
    char *more = calloc(msg->n + 4, 1);
    memcpy(more, msg->p, msg->n);
    aha__rbuf r = {more, msg->n + 4, 0, false};
    aha_err err = {0};
    aha_status st = fn(j, &r, &err);
    CHECK(st == AHA_EFORMAT, "%s with 4 trailing bytes refused (%s: %s)", what, aha_status_name(st), err.msg);
    free(more);
}

int main(void)
{
    aha_err err = {0};
    aha_model_config cfg;
    aha_backend *be = NULL;
    CHECK(aha_config_parse(cfg_json, strlen(cfg_json), "cfg", &cfg, &err) == AHA_OK, "config: %s", err.msg);
    CHECK(aha_backend_open("cpu", 0, &be, &err) == AHA_OK, "backend: %s", err.msg);
    const char *spec_json = "{\"kind\": \"grpo\", \"model\": \"/nonexistent\", \"dataset\": \"/nonexistent.jsonl\","
                            " \"G\": 3, \"questions_per_step\": 2, \"steps\": 4, \"micro_batch\": 4, \"mu\": 2,"
                            " \"lr\": 1e-2, \"beta\": 0.04}";
    aha_job_spec sp;
    memset(&sp, 0, sizeof sp);
    CHECK(aha_job_spec_parse(spec_json, strlen(spec_json), &sp, &err) == AHA_OK, "spec: %s", err.msg);
    aha_learner_env env = {.device = "cpu"};
    aha_job_ctx ctx = {.job_id = "t", .job_dir = "/nonexistent", .spec = &sp, .env = &env};
    aha__job j;
    memset(&j, 0, sizeof j);
    j.ctx = &ctx;
    j.sp = &sp;
    j.be = be;
    j.pushed_version = -1;
    aha_model_opts mo = {.training = true};
    CHECK(aha_model_init_random(&cfg, 5, be, &mo, &j.m, &err) == AHA_OK, "init: %s", err.msg);
    CHECK(aha_train_create(j.m, &j.t, &err) == AHA_OK, "train: %s", err.msg);

    for (int kl = 0; kl <= 1; kl++) {
        aha__wbuf w = {0};
        grpo_message(&w, kl, 11 + (uint64_t)kl);
        CHECK(!w.oom, "message built");
        check_truncations(kl ? "grpo step (kl)" : "grpo step", &j, &w, aha__grpo_follow_step);
        /* lying counts: prompts, samples, a prompt's length, a sample's length */
        check_lie("grpo", &j, &w, 8, 1 << 30, aha__grpo_follow_step);
        check_lie("grpo", &j, &w, 8, -1, aha__grpo_follow_step);
        check_lie("grpo", &j, &w, 16, 0, aha__grpo_follow_step);
        check_lie("grpo", &j, &w, 32, (int64_t)1 << 40, aha__grpo_follow_step);
        check_lie("grpo", &j, &w, 32, 0, aha__grpo_follow_step);
        size_t first_sample = 32 + NQ * (8 + PL * 4);
        check_lie("grpo", &j, &w, first_sample, 1000000, aha__grpo_follow_step);
        check_lie("grpo", &j, &w, first_sample, -3, aha__grpo_follow_step);
        check_trailing("grpo", &j, &w, aha__grpo_follow_step);
        aha__wbuf_free(&w);
    }

    /* SFT: the same job state with an SFT spec */
    const char *sft_json = "{\"kind\": \"sft\", \"model\": \"/nonexistent\", \"dataset\": {\"path\": \"/nonexistent.jsonl\","
                           " \"format\": \"sft\"}, \"steps\": 4, \"batch_size\": 2, \"micro_batch\": 1, \"lr\": 1e-2}";
    aha_job_spec sft;
    memset(&sft, 0, sizeof sft);
    CHECK(aha_job_spec_parse(sft_json, strlen(sft_json), &sft, &err) == AHA_OK, "sft spec: %s", err.msg);
    j.sp = &sft;
    ctx.spec = &sft;
    aha__wbuf w = {0};
    sft_message(&w);
    check_truncations("sft step", &j, &w, aha__sft_follow_step);
    check_lie("sft", &j, &w, 8, 100000, aha__sft_follow_step);
    check_lie("sft", &j, &w, 8, 0, aha__sft_follow_step);
    check_lie("sft", &j, &w, 16, 1 << 30, aha__sft_follow_step);
    check_lie("sft", &j, &w, 24, 9, aha__sft_follow_step); /* prompt longer than the sequence */
    check_trailing("sft", &j, &w, aha__sft_follow_step);
    aha__wbuf_free(&w);

    aha_job_spec_free(&sft);
    aha_job_spec_free(&sp);
    aha_train_free(j.t);
    aha_model_free(j.m);
    aha_backend_free(be);
    return th_done("dist_messages");
}
