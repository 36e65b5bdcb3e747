/* aha-refpolicy: the reference-policy service. aha.v1.RefPolicy/LogProbs gives the per-token
 * logprobs of a frozen reference model (the KL term of Eq. 1); UpdateWeights replaces the
 * reference (R1-Zero refreshed it with the current policy); Info describes it. The scoring
 * lives in refpolicy.c; this file maps messages and serves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/refpolicy.pb-c.h"
#include "base/log.h"
#include "model/weightserve.h"
#include "refpolicy.h"
#include "rpc/rpc.h"
#include "rpc/service.h"
#include "rpc/service_main.h"

typedef struct {
    aha_refpolicy *rp;
    const char *model_dir;
    const char *device;
} service;

static aha_status h_logprobs(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                             aha_err *err)
{
    service *svc = user;
    const Aha__V1__LogProbsRequest *req = (const Aha__V1__LogProbsRequest *)msg;
    size_t n = req->n_sequences;
    aha_ref_seq *seqs = calloc(n ? n : 1, sizeof *seqs);
    float **out = calloc(n ? n : 1, sizeof *out);
    Aha__V1__SequenceLogProbs *res = calloc(n ? n : 1, sizeof *res);
    Aha__V1__SequenceLogProbs **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    aha_status st = AHA_OK;
    if (!seqs || !out || !res || !ptrs) st = aha_errf(err, AHA_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && st == AHA_OK; i++) {
        const Aha__V1__Sequence *q = req->sequences[i];
        if (q->n_token_ids > (size_t)1 << 30) {
            st = aha_errf(err, AHA_ELIMIT, "sequence %zu: too many tokens", i);
            break;
        }
        seqs[i] = (aha_ref_seq){q->id, q->token_ids, (int)q->n_token_ids, q->prompt_len};
        /* a prompt_len outside [1, len] is refused by aha_refpolicy_logprobs: allocate nothing */
        int m = q->prompt_len >= 1 && (size_t)q->prompt_len <= q->n_token_ids
                    ? (int)q->n_token_ids - q->prompt_len : 0;
        out[i] = malloc((size_t)(m > 0 ? m : 1) * sizeof(float));
        if (!out[i]) st = aha_errf(err, AHA_ENOMEM, "out of memory");
        aha__v1__sequence_log_probs__init(&res[i]);
        res[i].id = q->id;
        res[i].n_logprobs = m > 0 ? (size_t)m : 0;
        res[i].logprobs = out[i];
        ptrs[i] = &res[i];
    }
    int64_t version = 0;
    if (st == AHA_OK) st = aha_refpolicy_logprobs(svc->rp, seqs, (int)n, out, &version, err);
    if (st == AHA_OK && aha_rpc_call_cancelled(call))
        st = aha_errf(err, AHA_ECANCELLED, "cancelled");
    if (st == AHA_OK) {
        Aha__V1__LogProbsResponse resp = AHA__V1__LOG_PROBS_RESPONSE__INIT;
        resp.n_results = n;
        resp.results = ptrs;
        resp.policy_version = version;
        st = aha_rpc_call_send(call, &resp.base, err);
    }
    for (size_t i = 0; out && i < n; i++) free(out[i]);
    free(seqs);
    free(out);
    free(res);
    free(ptrs);
    return st;
}

static aha_status apply_weights(void *user, const aha_weight_rx *rx, aha_err *err)
{
    return aha_refpolicy_apply(user, rx, err);
}

static aha_status h_update(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                           aha_err *err)
{
    (void)msg;
    service *svc = user;
    return aha_weightserve_update(call, aha_refpolicy_model(svc->rp), apply_weights, svc->rp, err);
}

static aha_status h_info(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                         aha_err *err)
{
    (void)msg;
    service *svc = user;
    Aha__V1__InfoReply r = AHA__V1__INFO_REPLY__INIT;
    r.policy_version = aha_refpolicy_version(svc->rp);
    r.tokens_generated = aha_refpolicy_tokens(svc->rp);
    return aha_weightserve_info(call, &r, svc->model_dir, aha_refpolicy_model(svc->rp),
                                svc->device, err);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: aha-refpolicy --model DIR [--device cpu|cuda:N] [--max-batch-tokens N]\n"
               "                     [--max-request-tokens N] [--cpu-threads N] [common flags]\n");
}

static int take_flag(void *user, const aha_rpc_service_args *a, const char *f, const char *v)
{
    aha_refpolicy_opts *o = user;
    long x = 0;
    int ok = 1;
    if (strcmp(f, "--model") == 0)
        o->model_dir = v;
    else if (strcmp(f, "--device") == 0)
        o->device = v;
    else if (strcmp(f, "--max-batch-tokens") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 1, 1L << 24, &x), o->max_batch_tokens = (int)x;
    else if (strcmp(f, "--max-request-tokens") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 1, 1L << 30, &x), o->max_request_tokens = x;
    else if (strcmp(f, "--cpu-threads") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 0, 1024, &x), o->threads = (int)x;
    else
        ok = AHA_RPC_FLAG_UNKNOWN;
    return ok;
}

static const aha_rpc_service_main refpolicy_main = {
    .name = "refpolicy", .default_listen = "0.0.0.0:50053", .usage = usage,
    .flag = take_flag, .required = "--model DIR",
};

int main(int argc, char **argv)
{
    aha_rpc_service_args a;
    aha_refpolicy_opts o = {.device = "cpu"};
    int rc;
    if (!aha_rpc_service_begin(&a, &refpolicy_main, argc, argv, &o, &rc)) return rc;
    aha_err err;
    service svc = {.model_dir = o.model_dir, .device = o.device};
    if (aha_refpolicy_create(&o, &svc.rp, &err) != AHA_OK) {
        fprintf(stderr, "aha-refpolicy: %s\n", err.msg);
        aha_rpc_service_args_free(&a);
        return 2;
    }
    const aha_model_config *cfg = aha_model_cfg(aha_refpolicy_model(svc.rp));
    AHA_INFO("reference model %s: %s, %d layers, hidden %d, vocab %d on %s", o.model_dir,
             cfg->architecture, cfg->num_layers, cfg->hidden_size, cfg->vocab_size, o.device);

    const ProtobufCServiceDescriptor *d = &aha__v1__ref_policy__descriptor;
    const aha_rpc_service_method methods[] = {
        {d, "LogProbs", AHA_RPC_UNARY, h_logprobs},
        {d, "UpdateWeights", AHA_RPC_CLIENT_STREAM, h_update},
        {d, "Info", AHA_RPC_UNARY, h_info},
    };
    aha_status st = aha_rpc_service_serve(&a, methods, (int)AHA_ARRAY_LEN(methods), &svc);
    if (st == AHA_ETIMEOUT) return 1;
    aha_refpolicy_free(svc.rp);
    aha_rpc_service_args_free(&a);
    return st == AHA_OK ? 0 : 1;
}
