/* test_refpolicy: the reference scorer's packing against the PyTorch fixtures.
 *
 * For tiny-qwen2 and tiny-llama, forward.safetensors holds input_ids [B,T] and token_logprobs
 * [B,T-1] computed by transformers. Scoring the B sequences with prompt_len 1 must give those
 * values within 1e-4 relative error however the sequences are packed (passes of 1 token up to
 * everything at once); prefixes of different lengths with prompt_len > 1 must give the
 * matching slices (causality); bad sequences are refused naming the sequence. */
#include "../../harness.h"
#include "base/log.h"
#include "io/safetensors.h"
#include "refpolicy.h"

static void check_model(const char *name)
{
    char dir[1024], fwd[1100];
    snprintf(dir, sizeof dir, "%s/%s", th_fixtures(), name);
    snprintf(fwd, sizeof fwd, "%s/forward.safetensors", dir);
    aha_err err = {0};
    aha_st_file *f = NULL;
    CHECK(aha_st_open(fwd, &f, &err) == AHA_OK, "%s", err.msg);
    if (!f) return;
    const aha_st_tensor *ids = aha_st_find(f, "input_ids"), *lp = aha_st_find(f, "token_logprobs");
    CHECK(ids && lp && ids->dtype == AHA_DT_I32, "fixture tensors");
    int B = (int)ids->shape[0], T = (int)ids->shape[1];
    const int32_t *x = ids->data;
    float *want = malloc((size_t)B * (T - 1) * sizeof *want);
    aha_st_to_f32(lp, want, (int64_t)B * (T - 1), NULL);

    int passes[] = {1, T, T + 1, 2 * T - 1, B * T};
    for (size_t pi = 0; pi < sizeof passes / sizeof passes[0]; pi++) {
        aha_refpolicy_opts o = {.model_dir = dir, .device = "cpu", .max_batch_tokens = passes[pi]};
        aha_refpolicy *rp = NULL;
        CHECK(aha_refpolicy_create(&o, &rp, &err) == AHA_OK, "%s", err.msg);
        if (!rp) break;
        aha_ref_seq *seqs = calloc((size_t)B, sizeof *seqs);
        float *got = calloc((size_t)B * (T - 1), sizeof *got);
        float **out = calloc((size_t)B, sizeof *out);
        for (int b = 0; b < B; b++) {
            seqs[b] = (aha_ref_seq){"s", x + (size_t)b * T, T, 1};
            out[b] = got + (size_t)b * (T - 1);
        }
        int64_t v = -1;
        CHECK(aha_refpolicy_logprobs(rp, seqs, B, out, &v, &err) == AHA_OK, "%s", err.msg);
        char what[128];
        snprintf(what, sizeof what, "%s pass=%d tokens", name, passes[pi]);
        CHECK(th_rel_err(what, got, want, (long)B * (T - 1)) <= 1e-4, "%s", what);
        CHECK(v == 0, "version 0 before any update");

        /* ragged prefixes, prompt_len > 1: slices of the full-sequence values */
        memset(got, 0, (size_t)B * (T - 1) * sizeof *got);
        for (int b = 0; b < B; b++) {
            int len = T - 3 * (b % 3) - 1, pl = 2 + b % 4;
            seqs[b] = (aha_ref_seq){"r", x + (size_t)b * T, len, pl};
        }
        CHECK(aha_refpolicy_logprobs(rp, seqs, B, out, NULL, &err) == AHA_OK, "%s", err.msg);
        double worst = 0;
        for (int b = 0; b < B; b++)
            for (int t = seqs[b].prompt_len; t < seqs[b].len; t++) {
                double d = fabs(out[b][t - seqs[b].prompt_len] - want[(size_t)b * (T - 1) + t - 1]);
                if (d > worst) worst = d;
            }
        CHECK(worst < 1e-4, "%s ragged prefixes: max |d| %g", name, worst);

        if (pi == 0) {
            /* bad input names the sequence */
            int32_t bad[3] = {1, 2, 1 << 20};
            aha_ref_seq s1 = {"oov", bad, 3, 1};
            float buf[4], *pb = buf;
            CHECK(aha_refpolicy_logprobs(rp, &s1, 1, &pb, NULL, &err) == AHA_EINVAL &&
                      strstr(err.msg, "oov"), "out-of-vocabulary id: %s", err.msg);
            aha_ref_seq s2 = {"pl", x, 3, 0};
            CHECK(aha_refpolicy_logprobs(rp, &s2, 1, &pb, NULL, &err) == AHA_EINVAL &&
                      strstr(err.msg, "pl"), "prompt_len 0: %s", err.msg);
            aha_ref_seq s3 = {"empty", x, 0, 1};
            CHECK(aha_refpolicy_logprobs(rp, &s3, 1, &pb, NULL, &err) == AHA_EINVAL &&
                      strstr(err.msg, "empty"), "empty: %s", err.msg);
            aha_ref_seq s4 = {"long", x, 4, 5};
            CHECK(aha_refpolicy_logprobs(rp, &s4, 1, &pb, NULL, &err) == AHA_EINVAL,
                  "prompt_len > len: %s", err.msg);
        }
        free(seqs);
        free(got);
        free(out);
        aha_refpolicy_free(rp);
    }
    free(want);
    aha_st_close(f);
}

int main(void)
{
    aha_log_set_level(AHA_LOG_WARN);
    check_model("tiny-qwen2");
    check_model("tiny-llama");
    aha_err err;
    aha_refpolicy_opts o = {.model_dir = "/nonexistent/model", .device = "cpu"};
    aha_refpolicy *rp = NULL;
    CHECK(aha_refpolicy_create(&o, &rp, &err) != AHA_OK && strstr(err.msg, "/nonexistent/model"),
          "missing model dir named: %s", err.msg);
    return th_done("test_refpolicy");
}
