/* test_refpolicy_c: aha-refpolicy through aha's own C client (common/rpc + weightpush).
 *
 * LogProbs of the tiny-llama fixture sequences must equal PyTorch's token_logprobs within
 * 1e-4 relative error; after pushing a random model of the same config with the weight-push
 * sender (BF16 chunks), LogProbs must equal what that model, rounded to bf16 and loaded in
 * this process, computes; Info reports the version.
 *
 * usage: test_refpolicy_c PATH/aha-refpolicy */
#include "../harness.h"
#include "aha/v1/refpolicy.pb-c.h"
#include "backend/backend.h"
#include "base/log.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/weightpush.h"
#include "rpc/rpc.h"
#include "spawn.h"

/* LogProbs of B sequences of T tokens (prompt_len 1) into out (B, T-1). */
static aha_status remote_logprobs(aha_rpc_channel *ch, const int32_t *ids, int B, int T,
                                  float *out, int64_t *version, aha_err *err)
{
    Aha__V1__Sequence *seq = calloc((size_t)B, sizeof *seq);
    Aha__V1__Sequence **ptr = calloc((size_t)B, sizeof *ptr);
    for (int b = 0; b < B; b++) {
        aha__v1__sequence__init(&seq[b]);
        seq[b].id = "x";
        seq[b].token_ids = (int32_t *)ids + (size_t)b * T;
        seq[b].n_token_ids = (size_t)T;
        seq[b].prompt_len = 1;
        ptr[b] = &seq[b];
    }
    Aha__V1__LogProbsRequest req = AHA__V1__LOG_PROBS_REQUEST__INIT;
    req.n_sequences = (size_t)B;
    req.sequences = ptr;
    ProtobufCMessage *resp = NULL;
    aha_rpc_call_opts o = {.timeout_ms = 30000};
    aha_status st = aha_rpc_unary(ch, &aha__v1__ref_policy__descriptor, "LogProbs", &req.base,
                                  &resp, &o, err);
    if (st == AHA_OK) {
        const Aha__V1__LogProbsResponse *r = (const Aha__V1__LogProbsResponse *)resp;
        if (r->n_results != (size_t)B) st = aha_errf(err, AHA_EINTERNAL, "%zu results", r->n_results);
        for (int b = 0; st == AHA_OK && b < B; b++) {
            if (r->results[b]->n_logprobs != (size_t)(T - 1))
                st = aha_errf(err, AHA_EINTERNAL, "result %d has %zu logprobs", b,
                              r->results[b]->n_logprobs);
            else
                memcpy(out + (size_t)b * (T - 1), r->results[b]->logprobs, (size_t)(T - 1) * 4);
        }
        *version = r->policy_version;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(seq);
    free(ptr);
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_refpolicy_c PATH/aha-refpolicy\n");
        return 2;
    }
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    char dir[1024], fwd[1100];
    snprintf(dir, sizeof dir, "%s/tiny-llama", th_fixtures());
    snprintf(fwd, sizeof fwd, "%s/forward.safetensors", dir);
    aha_st_file *f = NULL;
    CHECK(aha_st_open(fwd, &f, &err) == AHA_OK, "%s", err.msg);
    if (!f) return th_done("test_refpolicy_c");
    const aha_st_tensor *ids_t = aha_st_find(f, "input_ids");
    int B = (int)ids_t->shape[0], T = (int)ids_t->shape[1];
    const int32_t *ids = ids_t->data;
    float *want = malloc((size_t)B * (T - 1) * 4), *got = malloc((size_t)B * (T - 1) * 4);
    aha_st_to_f32(aha_st_find(f, "token_logprobs"), want, (int64_t)B * (T - 1), NULL);

    char *av[] = {argv[1], "--model", dir, "--log-level", "warn", NULL};
    th_service svc = {0};
    CHECK(th_spawn(&svc, av) > 0, "aha-refpolicy started");
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", svc.port);
    aha_rpc_channel *ch = NULL;
    CHECK(aha_rpc_channel_create(target, NULL, &ch, &err) == AHA_OK, "%s", err.msg);
    int64_t version = -1;
    CHECK(remote_logprobs(ch, ids, B, T, got, &version, &err) == AHA_OK, "%s", err.msg);
    CHECK(th_rel_err("fixture logprobs over gRPC", got, want, (long)B * (T - 1)) <= 1e-4, "fixture");
    CHECK(version == 0, "version 0");

    /* push a random model (BF16), compare with the same model rounded to bf16 here */
    aha_backend *be;
    aha_backend_open("cpu", 1, &be, &err);
    aha_model *fixture, *rnd;
    CHECK(aha_model_open(dir, be, NULL, &fixture, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_init_random(aha_model_cfg(fixture), 21, be, NULL, &rnd, &err) == AHA_OK, "%s",
          err.msg);
    aha_weight_snapshot *snap;
    CHECK(aha_weight_snapshot_create(rnd, AHA_DT_BF16, &snap, &err) == AHA_OK, "%s", err.msg);
    aha_weight_push_opts po = {.version = 12, .chunk_bytes = 1 << 14, .timeout_ms = 30000};
    aha_weight_push_result res;
    CHECK(aha_weight_snapshot_send(snap, ch, &aha__v1__ref_policy__descriptor, &po, &res, &err) ==
              AHA_OK, "push: %s", err.msg);
    CHECK(res.version == 12, "confirmed version %lld", (long long)res.version);
    for (int i = 0; i < aha_model_n_params(rnd); i++) {
        const aha_param_info *p = aha_model_param(rnd, i);
        float *w = malloc((size_t)p->numel * 4);
        aha_model_param_get_f32(rnd, i, w, NULL);
        for (int64_t j = 0; j < p->numel; j++) w[j] = aha_bf16_to_f32(aha_f32_to_bf16(w[j]));
        aha_model_param_set_f32(rnd, i, w, NULL);
        free(w);
    }
    int32_t *cu = malloc((size_t)(B + 1) * 4);
    for (int b = 0; b <= B; b++) cu[b] = b * T;
    aha_batch batch = {.ids = ids, .cu_seqlens = cu, .n_seqs = B};
    CHECK(aha_model_token_logprobs(rnd, &batch, want, NULL, &err) == AHA_OK, "%s", err.msg);
    CHECK(remote_logprobs(ch, ids, B, T, got, &version, &err) == AHA_OK, "%s", err.msg);
    CHECK(th_rel_err("after a BF16 push", got, want, (long)B * (T - 1)) <= 1e-5, "pushed model");
    CHECK(version == 12, "version %lld", (long long)version);

    aha_rpc_channel_free(ch);
    CHECK(th_stop(&svc) == 0, "clean exit on SIGTERM");
    aha_weight_snapshot_free(snap);
    aha_model_free(fixture);
    aha_model_free(rnd);
    aha_backend_free(be);
    free(cu);
    free(want);
    free(got);
    aha_st_close(f);
    return th_done("test_refpolicy_c");
}
