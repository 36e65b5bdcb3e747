/* fuzz_rpc_refpolicy.c: libFuzzer target over aha-refpolicy's LogProbs decoding and
 * validation on the tiny Qwen2 fixture: the input is a wire-format aha.v1.LogProbsRequest,
 * unpacked by protobuf-c, mapped to sequences as the handler (services/refpolicy/main.c)
 * does, and scored by aha_refpolicy_logprobs, whose checks (ids in the vocabulary, prompt_len
 * in [1, len], the request's token budget) must turn every bad request into a status. The
 * budget is kept small so valid requests stay fast forward passes. Aborts when a valid
 * request's logprobs are not finite and <= 0. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/refpolicy.pb-c.h"
#include "base/log.h"
#include "../../services/refpolicy/refpolicy.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static aha_refpolicy *g_rp;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *fx = getenv("AHA_FIXTURES");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", fx ? fx : "tests/fixtures");
    aha_log_set_level(AHA_LOG_ERROR);
    aha_refpolicy_opts o = {.model_dir = dir, .device = "cpu", .threads = 1,
                            .max_batch_tokens = 64, .max_request_tokens = 256};
    aha_err err;
    if (aha_refpolicy_create(&o, &g_rp, &err) != AHA_OK) {
        fprintf(stderr, "fuzz_rpc_refpolicy: %s (set AHA_FIXTURES)\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Aha__V1__LogProbsRequest *req = aha__v1__log_probs_request__unpack(NULL, size, data);
    if (!req) return 0;
    size_t n = req->n_sequences;
    aha_ref_seq *seqs = calloc(n ? n : 1, sizeof *seqs);
    float **out = calloc(n ? n : 1, sizeof *out);
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        const Aha__V1__Sequence *q = req->sequences[i];
        if (q->n_token_ids > (size_t)1 << 30) ok = 0;
        seqs[i] = (aha_ref_seq){q->id, q->token_ids, (int)q->n_token_ids, q->prompt_len};
        int64_t m = (int64_t)q->n_token_ids - q->prompt_len;
        /* the handler allocates len - prompt_len floats: bounded by the token budget only
         * after validation, so here (as there) a huge m from a negative prompt_len must be
         * refused before anything is written */
        out[i] = malloc((size_t)(m > 0 && m < (1 << 20) ? m : 1) * sizeof(float));
    }
    int64_t version = 0;
    aha_err err;
    if (ok && aha_refpolicy_logprobs(g_rp, seqs, (int)n, out, &version, &err) == AHA_OK) {
        for (size_t i = 0; i < n; i++) {
            int m = seqs[i].len - seqs[i].prompt_len;
            for (int t = 0; t < m; t++)
                if (!isfinite(out[i][t]) || out[i][t] > 1e-4f) abort();
        }
    }
    for (size_t i = 0; i < n; i++) free(out[i]);
    free(out);
    free(seqs);
    aha__v1__log_probs_request__free_unpacked(req, NULL);
    return 0;
}
