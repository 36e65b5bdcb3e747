/* aha-rollout: the rollout worker. aha.v1.Rollout/Generate samples groups of completions
 * from the (old) policy and streams each one as it finishes; UpdateWeights switches to new
 * weights between decode steps; JoinWeightGroup joins the learner's NCCL weights group (the
 * one-node fast path, dist/weightgroup.h); Info describes the worker. The sampler is
 * engine.c; this file maps messages and serves. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/rollout.pb-c.h"
#include "base/log.h"
#include "model/weightserve.h"
#include "dist/weightgroup.h"
#include "engine.h"
#include "genreq.h"
#include "rpc/rpc.h"
#include "rpc/service.h"
#include "rpc/service_main.h"

typedef struct {
    aha_engine *eng;
    const char *model_dir;
    const char *device;
    pthread_mutex_t wg_mu; /* guards wg: JoinWeightGroup calls may overlap */
    aha_weight_group *wg;
} service;

typedef struct {
    aha_rpc_call *call;
    const Aha__V1__GenerateRequest *req;
    int32_t **ids;   /* per prompt: the ids the model sees */
    int *lens;
    int failed;      /* a send failed: the call is gone */
} gen_ctx;

static void on_done(void *user, const aha_completion *c)
{
    gen_ctx *g = user;
    if (g->failed) return;
    Aha__V1__Completion m = AHA__V1__COMPLETION__INIT;
    m.prompt_id = g->req->prompts[c->prompt]->id;
    m.index = c->index;
    m.n_token_ids = (size_t)c->n_ids;
    m.token_ids = (int32_t *)c->ids;
    m.n_logprobs = (size_t)c->n_ids;
    m.logprobs = (float *)c->logprobs;
    /* the text may hold NUL bytes from the model; proto strings end at the first */
    char *text = malloc(c->text_len + 1);
    if (text) {
        memcpy(text, c->text, c->text_len);
        text[c->text_len] = 0;
    }
    m.text = text ? text : "";
    m.finish_reason = (char *)c->finish_reason;
    m.policy_version = c->version;
    m.first_policy_version = c->first_version;
    m.weights_changed = c->version != c->first_version;
    m.n_prompt_token_ids = (size_t)g->lens[c->prompt];
    m.prompt_token_ids = g->ids[c->prompt];
    aha_err err;
    if (aha_rpc_call_send_nowait(g->call, &m.base, &err) != AHA_OK) g->failed = 1;
    free(text);
}

static int call_cancelled(void *arg) { return aha_rpc_call_cancelled(arg); }

static aha_status h_generate(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                             aha_err *err)
{
    service *svc = user;
    const Aha__V1__GenerateRequest *req = (const Aha__V1__GenerateRequest *)msg;
    const aha_tokenizer *tok = aha_engine_tokenizer(svc->eng);
    size_t np = req->n_prompts;
    gen_ctx g = {.call = call, .req = req};
    g.ids = calloc(np ? np : 1, sizeof *g.ids);
    g.lens = calloc(np ? np : 1, sizeof *g.lens);
    int32_t **owned = calloc(np ? np : 1, sizeof *owned);
    uint64_t *seeds = calloc(np ? np : 1, sizeof *seeds);
    aha_status st = AHA_OK;
    if (!g.ids || !g.lens || !owned || !seeds) st = aha_errf(err, AHA_ENOMEM, "out of memory");
    for (size_t i = 0; i < np && st == AHA_OK; i++) {
        const Aha__V1__Prompt *p = req->prompts[i];
        seeds[i] = p->seed;
        if (p->n_token_ids > 0) {
            if (p->n_token_ids > (size_t)1 << 24) {
                st = aha_errf(err, AHA_ELIMIT, "prompt %zu ('%.64s'): too many tokens", i, p->id);
                break;
            }
            g.ids[i] = p->token_ids;
            g.lens[i] = (int)p->n_token_ids;
        } else if (p->text[0]) {
            if (!tok) {
                st = aha_errf(err, AHA_EPRECOND, "prompt %zu ('%.64s'): text prompts need a "
                              "tokenizer.json beside the model; send token_ids", i, p->id);
                break;
            }
            size_t n = 0;
            st = aha_tokenizer_encode(tok, p->text, strlen(p->text), &owned[i], &n, err);
            if (st != AHA_OK) {
                aha_err_prefix(err, AHA_EINVAL, "prompt %zu ('%.64s')", i, p->id);
                st = AHA_EINVAL;
                break;
            }
            g.ids[i] = owned[i];
            g.lens[i] = (int)n;
        } else {
            st = aha_errf(err, AHA_EINVAL, "prompt %zu ('%.64s') has neither token_ids nor text",
                          i, p->id);
        }
    }
    aha_gen *gen = NULL;
    if (st == AHA_OK) {
        aha_gen_request r = {
            .n_prompts = (int)np, .prompt_ids = (const int32_t *const *)g.ids, .prompt_lens = g.lens,
            .n = req->n, .prompt_seeds = seeds, .on_done = on_done, .user = &g,
        };
        st = aha_rollout_sampling_from_proto(req->sampling, &r, err);
        if (st == AHA_OK) st = aha_engine_submit(svc->eng, &r, &gen, err);
    }
    if (st == AHA_OK) {
        st = aha_gen_wait(gen, call_cancelled, call, err);
        if (st == AHA_OK && g.failed) st = aha_errf(err, AHA_ECANCELLED, "the client went away");
    }
    for (size_t i = 0; owned && i < np; i++) free(owned[i]);
    free(owned);
    free(seeds);
    free(g.ids);
    free(g.lens);
    return st;
}

static aha_status apply_weights(void *user, const aha_weight_rx *rx, aha_err *err)
{
    return aha_engine_update_weights(user, rx, err);
}

static aha_status h_update(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                           aha_err *err)
{
    (void)msg;
    service *svc = user;
    return aha_weightserve_update(call, aha_engine_model(svc->eng), apply_weights, svc->eng, err);
}

/* ---- JoinWeightGroup: pushes arrive on the group's receiver thread; the engine copies each
 * staged tensor into the model between decode steps ---- */
typedef struct {
    aha_tensor staged;
    int64_t numel;
} wg_copy;

static aha_status wg_copy_fn(void *arg, aha_model *m, aha_err *err)
{
    wg_copy *c = arg;
    return aha_weight_group_copy_into(m, c->staged, c->numel, err);
}

static aha_status wg_apply(void *user, aha_tensor staged, int64_t numel, int64_t version, aha_err *err)
{
    wg_copy c = {staged, numel};
    return aha_engine_update_weights_fn(((service *)user)->eng, wg_copy_fn, &c, version, err);
}

static aha_status h_join(aha_rpc_call *call, const ProtobufCMessage *msg, void *user, aha_err *err)
{
    service *svc = user;
    const Aha__V1__JoinWeightGroupRequest *req = (const Aha__V1__JoinWeightGroupRequest *)msg;
    const aha_model *m = aha_engine_model(svc->eng);
    pthread_mutex_lock(&svc->wg_mu);
    aha_weight_group_free(svc->wg); /* a new group replaces the old one */
    svc->wg = NULL;
    aha_status st = aha_weight_group_join_request(m, req, wg_apply, svc, &svc->wg, err);
    pthread_mutex_unlock(&svc->wg_mu);
    if (st != AHA_OK) return st;
    aha_engine_stats s;
    aha_engine_get_stats(svc->eng, &s);
    Aha__V1__JoinWeightGroupReply r = AHA__V1__JOIN_WEIGHT_GROUP_REPLY__INIT;
    r.joining = 1;
    r.device = (char *)svc->device;
    r.layout_signature = aha_weight_group_signature(m);
    r.policy_version = s.policy_version;
    return aha_rpc_call_send(call, &r.base, err);
}

static aha_status h_info(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                         aha_err *err)
{
    (void)msg;
    service *svc = user;
    aha_engine_stats s;
    aha_engine_get_stats(svc->eng, &s);
    Aha__V1__InfoReply r = AHA__V1__INFO_REPLY__INIT;
    r.policy_version = s.policy_version;
    r.active_sequences = s.active;
    r.max_batch = s.max_batch;
    r.tokens_generated = s.tokens_generated;
    r.queued = s.queued;
    r.requests_served = s.requests;
    return aha_weightserve_info(call, &r, svc->model_dir, aha_engine_model(svc->eng), svc->device,
                                err);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: aha-rollout --model DIR [--device cpu|cuda:N] [--max-batch N]\n"
               "                   [--max-seq-len N] [--max-queue N] [--cpu-threads N]\n"
               "                   [--draw auto|host|model] [common flags]\n"
               "  --draw  where tokens are drawn: host (full logits to the host), model (the model's\n"
               "          decode_sample: on the GPU under CUDA), auto (model on CUDA, host on the CPU)\n");
}

static int take_flag(void *user, const aha_rpc_service_args *a, const char *f, const char *v)
{
    aha_engine_opts *o = user;
    long x = 0;
    int ok = 1;
    if (strcmp(f, "--model") == 0)
        o->model_dir = v;
    else if (strcmp(f, "--device") == 0)
        o->device = v;
    else if (strcmp(f, "--max-batch") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 1, 65536, &x), o->max_batch = (int)x;
    else if (strcmp(f, "--max-seq-len") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 2, 1 << 20, &x), o->max_seq_len = (int)x;
    else if (strcmp(f, "--max-queue") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 1, 1 << 24, &x), o->max_queue = (int)x;
    else if (strcmp(f, "--draw") == 0) {
        int d = aha_engine_draw_parse(v);
        if (d < 0) fprintf(stderr, "aha-rollout: --draw %s: expected auto, host or model\n", v);
        ok = d >= 0;
        o->draw = (aha_engine_draw)(ok ? d : 0);
    } else if (strcmp(f, "--cpu-threads") == 0)
        ok = aha_rpc_service_int_flag(a, f, v, 0, 1024, &x), o->threads = (int)x;
    else
        ok = AHA_RPC_FLAG_UNKNOWN;
    return ok;
}

static const aha_rpc_service_main rollout_main = {
    .name = "rollout", .default_listen = "0.0.0.0:50052", .usage = usage,
    .flag = take_flag, .required = "--model DIR",
};

int main(int argc, char **argv)
{
    aha_rpc_service_args a;
    aha_engine_opts o = {.device = "cpu"};
    int rc;
    if (!aha_rpc_service_begin(&a, &rollout_main, argc, argv, &o, &rc)) return rc;
    aha_err err;
    service svc = {.model_dir = o.model_dir, .device = o.device, .wg_mu = PTHREAD_MUTEX_INITIALIZER};
    if (aha_engine_create(&o, &svc.eng, &err) != AHA_OK) {
        fprintf(stderr, "aha-rollout: %s\n", err.msg);
        aha_rpc_service_args_free(&a);
        return 2;
    }
    const aha_model_config *cfg = aha_model_cfg(aha_engine_model(svc.eng));
    AHA_INFO("policy %s: %s, %d layers, hidden %d, vocab %d on %s; %d slots x %d tokens; draws on the %s%s",
             o.model_dir, cfg->architecture, cfg->num_layers, cfg->hidden_size, cfg->vocab_size,
             o.device, o.max_batch ? o.max_batch : 64, o.max_seq_len ? o.max_seq_len : 1024,
             aha_engine_draw_mode(svc.eng) == AHA_DRAW_HOST ? "host" : "model",
             aha_engine_tokenizer(svc.eng) ? "" : " (no tokenizer.json: token ids only)");

    const ProtobufCServiceDescriptor *d = &aha__v1__rollout__descriptor;
    const aha_rpc_service_method methods[] = {
        {d, "Generate", AHA_RPC_SERVER_STREAM, h_generate},
        {d, "UpdateWeights", AHA_RPC_CLIENT_STREAM, h_update},
        {d, "Info", AHA_RPC_UNARY, h_info},
        {d, "JoinWeightGroup", AHA_RPC_UNARY, h_join},
    };
    aha_status st = aha_rpc_service_serve(&a, methods, (int)AHA_ARRAY_LEN(methods), &svc);
    if (st == AHA_ETIMEOUT) return 1;
    aha_weight_group_free(svc.wg); /* before the engine its apply calls into */
    aha_engine_free(svc.eng);
    aha_rpc_service_args_free(&a);
    return st == AHA_OK ? 0 : 1;
}
