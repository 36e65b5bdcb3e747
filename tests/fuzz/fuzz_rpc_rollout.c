/* fuzz_rpc_rollout.c: libFuzzer target over aha-rollout's Generate decoding and validation on
 * the tiny Qwen2 fixture: the input is a wire-format aha.v1.GenerateRequest, unpacked by
 * protobuf-c and mapped to an engine request as the handler (services/rollout/main.c) does
 * for token-id prompts (the sampling settings through the handler's own genreq.c), then
 * aha_engine_submit validates it (n, temperature, top_p, top_k, max_new_tokens, ids in the
 * vocabulary, the sequence budget, the queue). An accepted request is cancelled at once and
 * waited for, so each input costs at most a prefill. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/rollout.pb-c.h"
#include "base/log.h"
#include "../../services/rollout/engine.h"
#include "../../services/rollout/genreq.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static aha_engine *g_eng;

static void on_done(void *user, const aha_completion *c)
{
    if (c->n_ids < 0) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *fx = getenv("AHA_FIXTURES");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", fx ? fx : "tests/fixtures");
    aha_log_set_level(AHA_LOG_ERROR);
    aha_engine_opts o = {.model_dir = dir, .device = "cpu", .threads = 1, .max_batch = 4,
                         .max_seq_len = 64, .max_queue = 256};
    aha_err err;
    if (aha_engine_create(&o, &g_eng, &err) != AHA_OK) {
        fprintf(stderr, "fuzz_rpc_rollout: %s (set AHA_FIXTURES)\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Aha__V1__GenerateRequest *req = aha__v1__generate_request__unpack(NULL, size, data);
    if (!req) return 0;
    size_t np = req->n_prompts;
    const int32_t **ids = calloc(np ? np : 1, sizeof *ids);
    int *lens = calloc(np ? np : 1, sizeof *lens);
    int ok = 1;
    for (size_t i = 0; i < np && ok; i++) {
        const Aha__V1__Prompt *p = req->prompts[i];
        if (p->n_token_ids == 0 || p->n_token_ids > (size_t)1 << 24) ok = 0; /* handler: error */
        ids[i] = p->token_ids;
        lens[i] = (int)p->n_token_ids;
    }
    if (ok && np <= (size_t)1 << 20) {
        aha_gen_request r = {.n_prompts = (int)np, .prompt_ids = (const int32_t *const *)ids,
                             .prompt_lens = lens, .n = req->n, .on_done = on_done};
        aha_gen *g = NULL;
        aha_err err;
        if (aha_rollout_sampling_from_proto(req->sampling, &r, &err) == AHA_OK &&
            aha_engine_submit(g_eng, &r, &g, &err) == AHA_OK) {
            aha_gen_cancel(g);
            aha_gen_wait(g, NULL, NULL, &err);
        }
    }
    free(ids);
    free(lens);
    aha__v1__generate_request__free_unpacked(req, NULL);
    return 0;
}
