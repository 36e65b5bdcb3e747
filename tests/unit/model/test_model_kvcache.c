/* test_model_kvcache.c: prefill + incremental decode over the KV cache gives the full
 * forward's logits (within 1e-5), for slots at different lengths decoded together, a group
 * forked from one prefill with copy_prefix, a prefill continued onto a non-empty slot, and
 * slots reused after reset; plus the cache's refusals (full slot, repeated slot, bad id). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../harness.h"
#include "backend/backend.h"
#include "base/rng.h"
#include "model/model.h"

#define LA 14
#define LB 9

static void full_logits(aha_model *m, const int32_t *ids, int n, float *logits)
{
    int32_t cu[2] = {0, n};
    aha_batch b = {ids, cu, 1};
    aha_err err = {0};
    CHECK(aha_model_token_logprobs(m, &b, NULL, logits, &err) == AHA_OK, "%s", err.msg);
}

static void expect_row(const char *what, const float *got, const float *full, int row, int V)
{
    double e = th_max_abs(what, got, full + (size_t)row * V, V);
    CHECK(e <= 1e-5, "%s: max |d| %.3e", what, e);
}

static void run(aha_backend *be, const char *fixture)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", th_fixtures(), fixture);
    fprintf(stderr, "== %s\n", dir);
    aha_err err = {0};
    aha_model *m = NULL;
    if (aha_model_open(dir, be, NULL, &m, &err) != AHA_OK) {
        CHECK(0, "open: %s", err.msg);
        return;
    }
    int V = aha_model_cfg(m)->vocab_size;
    aha_rng rng;
    aha_rng_seed(&rng, 7, 0);
    int32_t A[LA], B[LB];
    for (int i = 0; i < LA; i++) A[i] = (int32_t)aha_rng_below(&rng, (uint64_t)V);
    for (int i = 0; i < LB; i++) B[i] = (int32_t)aha_rng_below(&rng, (uint64_t)V);
    float *fa = malloc((size_t)LA * V * sizeof(float)), *fb = malloc((size_t)LB * V * sizeof(float));
    full_logits(m, A, LA, fa);
    full_logits(m, B, LB, fb);

    aha_kv_cache *c = NULL;
    CHECK(aha_kv_cache_create(m, 4, 16, &c, &err) == AHA_OK, "%s", err.msg);
    float *row = malloc((size_t)4 * V * sizeof(float));
    char what[64];

    /* slot 0: prefill A[0..5), slot 1: prefill B[0..3) */
    CHECK(aha_model_prefill(m, c, 0, A, 5, row, &err) == AHA_OK, "%s", err.msg);
    expect_row("prefill A[0..5)", row, fa, 4, V);
    CHECK(aha_model_prefill(m, c, 1, B, 3, row, &err) == AHA_OK, "%s", err.msg);
    expect_row("prefill B[0..3)", row, fb, 2, V);
    /* fork slot 2 from slot 0's first 4 positions (a group sharing one prompt prefill) */
    CHECK(aha_kv_cache_copy_prefix(c, 0, 2, 4, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_kv_cache_len(c, 2) == 4, "forked length");

    /* decode slots 1, 0, 2 together: three different lengths (3, 5, 4) */
    int la = 5, lb = 3, lf = 4;
    for (int step = 0; step < 4; step++) {
        int slots[3] = {1, 0, 2};
        int32_t tok[3] = {B[lb], A[la], A[lf]};
        CHECK(aha_model_decode(m, c, 3, slots, tok, row, &err) == AHA_OK, "%s", err.msg);
        snprintf(what, sizeof what, "decode B pos %d", lb);
        expect_row(what, row, fb, lb, V);
        snprintf(what, sizeof what, "decode A pos %d", la);
        expect_row(what, row + V, fa, la, V);
        snprintf(what, sizeof what, "decode fork pos %d", lf);
        expect_row(what, row + 2 * V, fa, lf, V);
        lb++, la++, lf++;
    }
    CHECK(aha_kv_cache_len(c, 0) == la && aha_kv_cache_len(c, 1) == lb, "lengths advance");

    /* slot 3: a prefill continued onto a non-empty slot */
    CHECK(aha_model_prefill(m, c, 3, A, 6, NULL, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_prefill(m, c, 3, A + 6, 5, row, &err) == AHA_OK, "%s", err.msg);
    expect_row("prefill continued to 11", row, fa, 10, V);
    /* decode only slot 3 (a subset of the active slots) */
    int s3 = 3;
    CHECK(aha_model_decode(m, c, 1, &s3, &A[11], row, &err) == AHA_OK, "%s", err.msg);
    expect_row("decode slot 3 alone", row, fa, 11, V);

    /* reset and reuse slot 1 for another sequence */
    aha_kv_cache_reset_slot(c, 1);
    CHECK(aha_kv_cache_len(c, 1) == 0, "reset");
    CHECK(aha_model_prefill(m, c, 1, A, 8, row, &err) == AHA_OK, "%s", err.msg);
    expect_row("reused slot", row, fa, 7, V);

    /* refusals leave the cache as it was */
    int before = aha_kv_cache_len(c, 3);
    CHECK(aha_model_prefill(m, c, 3, A, 6, row, &err) == AHA_ELIMIT, "overflow must be ELIMIT");
    fprintf(stderr, "  expected error: %s\n", err.msg);
    CHECK(aha_kv_cache_len(c, 3) == before, "cache unchanged after a refused prefill");
    int dup[2] = {0, 0};
    int32_t two[2] = {1, 1};
    CHECK(aha_model_decode(m, c, 2, dup, two, row, &err) == AHA_EINVAL, "repeated slot");
    int32_t bad = V;
    CHECK(aha_model_decode(m, c, 1, &s3, &bad, row, &err) == AHA_EINVAL, "id outside vocab");
    CHECK(aha_kv_cache_copy_prefix(c, 0, 1, 99, &err) == AHA_EINVAL, "prefix longer than source");
    aha_kv_cache *huge = NULL;
    CHECK(aha_kv_cache_create(m, 0, 16, &huge, &err) == AHA_EINVAL, "zero slots");

    aha_kv_cache_free(c);
    free(row);
    free(fa);
    free(fb);
    aha_model_free(m);
}

int main(void)
{
    aha_backend *be = NULL;
    aha_err err = {0};
    if (aha_backend_open("cpu", 1, &be, &err) != AHA_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    run(be, "tiny-qwen2");
    run(be, "tiny-llama");
    run(be, "tiny-qwen3");
    aha_backend_free(be);
    return th_done("model_kvcache");
}
