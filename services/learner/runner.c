/* runner.c: aha_job_run (runner.h): one job in the calling thread. This file holds the
 * dispatch on the job kind, the plumbing every kind shares (model and tokenizer loading,
 * metrics records and events, service channels, weight pushes, checkpoints and resume) and
 * the SFT / distill loop; GRPO and evaluation are in grpo.c.
 *
 * Resume: a job directory whose `latest` names a checkpoint continues from it. The checkpoint
 * holds everything the next step reads (weights, AdamW moments and step count, data cursor),
 * and every random choice is derived from (spec seed, step), so the resumed job computes the
 * same next losses as one that never stopped (bitwise on the CPU backend). Records that the
 * dead run wrote after its last checkpoint are dropped from metrics.jsonl / eval.jsonl, so
 * they hold one line per step. */
#include "runner_int.h" /* includes runner.h, which has no include guard */

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/refpolicy.pb-c.h"
#include "aha/v1/rollout.pb-c.h"
#include "base/fs.h"
#include "base/log.h"
#include "checkpoint.h"
#include "encode.h"
#include "grpo_math.h"
#include "jobkinds.h"
#include "io/config.h"
#include "dist/weightgroup.h"
#include "model/weightpush.h"

#define CKPT_KEEP 2

/* ---- plumbing ---------------------------------------------------------------------------- */

void aha__job_log(aha__job *j, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    AHA_INFO("job %s: %s", j->ctx->job_id ? j->ctx->job_id : "?", buf);
    if (j->ctx->emit) j->ctx->emit(j->ctx->user, AHA_EV_LOG, j->step, NULL, buf);
}

aha_status aha__job_record(aha__job *j, aha_job_event_type type, int64_t step, const char *path,
                           const char *json, aha_err *err)
{
    AHA_TRY(aha_metrics_append(path, json, err));
    if (j->ctx->emit) j->ctx->emit(j->ctx->user, type, step, json, NULL);
    return AHA_OK;
}

bool aha__job_cancelled(const aha__job *j) { return j->ctx->cancel && *j->ctx->cancel; }

aha_status aha__job_step_begin(aha__job *j, const char *stage, aha_step_metrics *mt, double *t0,
                               aha_err *err)
{
    if (aha__job_cancelled(j)) return aha_errf(err, AHA_ECANCELLED, "cancelled at step %" PRId64, j->step);
    *t0 = aha_now_s();
    aha_step_metrics_init(mt, j->step + 1, j->total);
    mt->stage = stage;
    return AHA_OK;
}

void aha__job_progress(aha__job *j)
{
    if (j->ctx->progress_step) *j->ctx->progress_step = j->step;
    if (j->ctx->progress_total) *j->ctx->progress_total = j->total;
}

aha_status aha__job_connect(aha__job *j, bool need_rollout, bool need_reward, bool need_ref,
                            aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    const aha_learner_env *env = j->ctx->env;
    j->timeout_ms = env && env->rpc_timeout_ms > 0 ? env->rpc_timeout_ms : 120000;
    aha_rpc_channel_opts co;
    aha_rpc_channel_opts_init(&co);
    /* aha-learner's --tls-ca and --service-token-file reach the runner through these */
    const char *ca = getenv("AHA_TLS_CA"), *tok = getenv("AHA_SERVICE_TOKEN");
    if (ca && *ca) co.tls_ca_file = ca;
    if (tok && *tok) co.bearer_token = tok;
    if (need_rollout && j->n_rollout == 0) {
        int n = sp->services.n_rollout > 0 ? sp->services.n_rollout : (env ? env->n_rollout : 0);
        if (n <= 0) return aha_errf(err, AHA_EINVAL, "spec.services.rollout: no rollout worker address (none in the spec, none given to the learner)");
        if (n > AHA__MAX_ROLLOUT) return aha_errf(err, AHA_EINVAL, "spec.services.rollout: at most %d workers", AHA__MAX_ROLLOUT);
        for (int i = 0; i < n; i++) {
            const char *a = sp->services.n_rollout > 0 ? sp->services.rollout[i] : env->rollout[i];
            if (!a || !*a) return aha_errf(err, AHA_EINVAL, "rollout address %d is empty", i);
            j->rollout_addr[i] = a;
            if (aha_rpc_channel_create(a, &co, &j->rollout[i], err) != AHA_OK)
                return aha_err_prefix(err, err->status, "rollout %s", a);
            j->n_rollout = i + 1;
        }
    }
    if (need_reward && !j->reward) {
        const char *a = sp->services.reward ? sp->services.reward : (env ? env->reward : NULL);
        if (!a || !*a) return aha_errf(err, AHA_EINVAL, "spec.services.reward: no reward service address");
        j->reward_addr = a;
        if (aha_rpc_channel_create(a, &co, &j->reward, err) != AHA_OK)
            return aha_err_prefix(err, err->status, "reward %s", a);
    }
    if (need_ref && !j->refpolicy) {
        const char *a = sp->services.refpolicy ? sp->services.refpolicy : (env ? env->refpolicy : NULL);
        if (!a || !*a) return aha_errf(err, AHA_EINVAL, "spec.services.refpolicy: no refpolicy address");
        j->refpolicy_addr = a;
        if (aha_rpc_channel_create(a, &co, &j->refpolicy, err) != AHA_OK)
            return aha_err_prefix(err, err->status, "refpolicy %s", a);
    }
    return AHA_OK;
}

static aha_dtype push_dtype(const aha__job *j)
{
    /* fp32 on the CPU keeps rollout logprobs equal to the learner's; bf16 halves GPU pushes */
    const char *dev = j->ctx->env && j->ctx->env->device ? j->ctx->env->device : "cpu";
    return strncmp(dev, "cuda", 4) == 0 ? AHA_DT_BF16 : AHA_DT_F32;
}

/* The weights group's rendezvous and each of its pushes; a worker that cannot join within it
 * (another host out of reach, no GPU) leaves the job on gRPC. */
#define WG_TIMEOUT_MS 30000

/* Once per job: form the weights group with every rollout worker (JoinWeightGroup, then open
 * as rank 0) when the learner was given a rendezvous for it and the transport fits: NCCL on
 * a CUDA learner built with NCCL (the one-node fast path), or TCP when asked (CPU tests).
 * Anything short of every worker joining leaves j->wg NULL: gRPC streaming. */
static void weights_group_try(aha__job *j)
{
    j->wg_tried = true;
    const aha_learner_env *env = j->ctx->env;
    const char *tr = env ? env->weights_transport : NULL;
    if (!env || !env->weights_rendezvous || (tr && strcmp(tr, "grpc") == 0) || j->n_rollout == 0) return;
    const char *dev = env->device ? env->device : "cpu";
    aha_comm_kind kind = AHA_COMM_NCCL;
    if (tr && strcmp(tr, "tcp") == 0) kind = AHA_COMM_TCP;
    else if (!tr && !(strncmp(dev, "cuda", 4) == 0 && aha_comm_have_nccl())) return;
    if (kind == AHA_COMM_NCCL && !aha_comm_have_nccl()) {
        aha__job_log(j, "warning: weights push: this learner has no NCCL; gRPC streaming");
        return;
    }
    int world = j->n_rollout + 1;
    uint64_t sig = aha_weight_group_signature(j->m);
    aha_rpc_call_opts o = {.timeout_ms = 10000};
    for (int w = 0; w < j->n_rollout; w++) {
        Aha__V1__JoinWeightGroupRequest req = AHA__V1__JOIN_WEIGHT_GROUP_REQUEST__INIT;
        req.rendezvous = (char *)env->weights_rendezvous;
        req.rank = w + 1;
        req.world_size = world;
        req.transport = (char *)aha_comm_kind_name(kind);
        req.timeout_ms = WG_TIMEOUT_MS;
        req.layout_signature = sig;
        ProtobufCMessage *resp = NULL;
        aha_err e2 = {0};
        aha_status st = aha_rpc_unary(j->rollout[w], &aha__v1__rollout__descriptor, "JoinWeightGroup", &req.base, &resp,
                                      &o, &e2);
        bool joining = st == AHA_OK && ((Aha__V1__JoinWeightGroupReply *)resp)->joining;
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        if (!joining) {
            /* the workers asked before this one give up joining after WG_TIMEOUT_MS */
            aha__job_log(j, "weights push: rollout %s does not join the %s weights group (%s); gRPC streaming",
                         j->rollout_addr[w], aha_comm_kind_name(kind), st == AHA_OK ? "it declined" : aha_err_msg(&e2));
            return;
        }
    }
    aha_weight_group_opts go = {.rendezvous = env->weights_rendezvous, .rank = 0, .world_size = world, .kind = kind,
                                .timeout_ms = WG_TIMEOUT_MS};
    aha_err e2 = {0};
    double t0 = aha_now_s();
    if (aha_weight_group_open(j->m, &go, &j->wg, &e2) != AHA_OK) {
        j->wg = NULL;
        aha__job_log(j, "weights push: the %s weights group at %s did not form (%s); gRPC streaming",
                     aha_comm_kind_name(kind), env->weights_rendezvous, aha_err_msg(&e2));
        return;
    }
    j->wg_kind = aha_comm_kind_name(kind);
    aha__job_log(j, "weights push: %s weights group of %d rollout worker(s) at %s formed in %.1fs (gRPC stays the "
                 "fallback)", aha_comm_kind_name(kind), j->n_rollout, env->weights_rendezvous, aha_now_s() - t0);
}

/* One push through the weights group, then wait until every worker serves it (they apply
 * between decode steps), so that the next Generate samples from this version. */
static aha_status group_push(aha__job *j, int64_t version, aha_err *err)
{
    AHA_TRY(aha_weight_group_push(j->wg, version, NULL, err));
    double end = aha_now_s() + WG_TIMEOUT_MS / 1000.0;
    aha_rpc_call_opts o = {.timeout_ms = 10000};
    for (int w = 0; w < j->n_rollout; w++) {
        for (;;) {
            Aha__V1__InfoRequest req = AHA__V1__INFO_REQUEST__INIT;
            ProtobufCMessage *resp = NULL;
            AHA_TRY(aha_rpc_unary(j->rollout[w], &aha__v1__rollout__descriptor, "Info", &req.base, &resp, &o, err));
            int64_t pv = ((Aha__V1__InfoReply *)resp)->policy_version;
            protobuf_c_message_free_unpacked(resp, NULL);
            if (pv == version) break;
            if (aha_now_s() > end)
                return aha_errf(err, AHA_ETIMEOUT, "rollout %s still serves version %" PRId64 ", %" PRId64 " was pushed",
                                j->rollout_addr[w], pv, version);
            struct timespec ts = {0, 2 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return AHA_OK;
}

aha_status aha__job_push(aha__job *j, int64_t version, bool to_rollout, bool to_ref,
                         double *seconds, aha_err *err)
{
    double t0 = aha_now_s();
    if (to_rollout && j->n_rollout > 0 && !j->wg_tried) weights_group_try(j);
    if (to_rollout && j->wg) {
        aha_err e2 = {0};
        if (group_push(j, version, &e2) == AHA_OK) {
            for (int i = 0; i < j->n_rollout; i++) j->rollout_ok[i] = true;
            j->pushed_version = version;
            j->push_path = j->wg_kind;
            to_rollout = false; /* done; the reference (if due) still goes by gRPC */
            if (!to_ref) {
                if (seconds) *seconds = aha_now_s() - t0;
                return AHA_OK;
            }
        } else {
            aha__job_log(j, "warning: weights group push of version %" PRId64 " failed (%s); gRPC streaming from now on",
                         version, aha_err_msg(&e2));
            aha_weight_group_free(j->wg);
            j->wg = NULL;
        }
    }
    if (to_rollout) j->push_path = "grpc";
    aha_weight_snapshot *snap = NULL;
    AHA_TRY(aha_weight_snapshot_create(j->m, push_dtype(j), &snap, err));
    aha_rpc_channel *chs[AHA__MAX_ROLLOUT + 1];
    const ProtobufCServiceDescriptor *svcs[AHA__MAX_ROLLOUT + 1];
    const char *names[AHA__MAX_ROLLOUT + 1];
    int n = 0;
    if (to_rollout)
        for (int i = 0; i < j->n_rollout; i++) {
            chs[n] = j->rollout[i];
            svcs[n] = &aha__v1__rollout__descriptor;
            names[n++] = j->rollout_addr[i];
        }
    if (to_ref && j->refpolicy) {
        chs[n] = j->refpolicy;
        svcs[n] = &aha__v1__ref_policy__descriptor;
        names[n++] = j->refpolicy_addr;
    }
    aha_weight_push_opts o = {.version = version, .timeout_ms = j->timeout_ms};
    aha_weight_push_result res[AHA__MAX_ROLLOUT + 1];
    aha_err errs[AHA__MAX_ROLLOUT + 1];
    memset(errs, 0, sizeof errs);
    aha_status st = n > 0 ? aha_weight_snapshot_send_all(snap, chs, svcs, n, &o, res, errs, err) : AHA_OK;
    /* A rollout worker that cannot take the weights sits out until a later push reaches it
     * (ahactl up restarts dead services); the job fails only when no worker is left, or
     * when the reference cannot be updated. */
    int n_ok = 0, nr = to_rollout ? j->n_rollout : 0;
    for (int i = 0; i < nr; i++) {
        j->rollout_ok[i] = errs[i].status == AHA_OK;
        n_ok += j->rollout_ok[i];
        if (!j->rollout_ok[i])
            aha__job_log(j, "warning: rollout %s did not take version %" PRId64 " (%s); it sits out", names[i], version,
                         aha_err_msg(&errs[i]));
    }
    bool ref_failed = n > nr && errs[nr].status != AHA_OK;
    if (st != AHA_OK && ref_failed) {
        aha_errf(err, errs[nr].status, "UpdateWeights to refpolicy %s (version %" PRId64 "): %s", names[nr], version,
                 aha_err_msg(&errs[nr]));
    } else if (st != AHA_OK && nr > 0 && n_ok == 0) {
        aha_errf(err, errs[0].status, "no rollout worker took the weights (version %" PRId64 "): %s: %s", version,
                 names[0], aha_err_msg(&errs[0]));
    } else {
        st = AHA_OK;
    }
    aha_weight_snapshot_free(snap);
    if (st == AHA_OK && to_rollout) j->pushed_version = version;
    if (seconds) *seconds = aha_now_s() - t0;
    return st;
}

aha_status aha__job_repush_worker(aha__job *j, int w, aha_err *err)
{
    AHA_ASSERT(w >= 0 && w < j->n_rollout && j->pushed_version >= 0);
    aha_weight_snapshot *snap = NULL;
    AHA_TRY(aha_weight_snapshot_create(j->m, push_dtype(j), &snap, err));
    aha_weight_push_opts o = {.version = j->pushed_version, .timeout_ms = j->timeout_ms};
    aha_weight_push_result res;
    aha_status st = aha_weight_snapshot_send(snap, j->rollout[w], &aha__v1__rollout__descriptor, &o, &res, err);
    aha_weight_snapshot_free(snap);
    if (st != AHA_OK) return aha_err_prefix(err, st, "UpdateWeights to rollout %s (version %" PRId64 ")",
                                            j->rollout_addr[w], j->pushed_version);
    j->rollout_ok[w] = true;
    aha__job_log(j, "rollout %s: re-pushed version %" PRId64, j->rollout_addr[w], j->pushed_version);
    return AHA_OK;
}

/* ---- checkpoints and resume ------------------------------------------------------------ */

static aha_status state_json(aha__job *j, char **out, aha_err *err)
{
    json_t *o = json_object();
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, j->sp->seed);
    json_object_set_new(o, "kind", json_string(aha_job_kind_name(j->sp->kind)));
    json_object_set_new(o, "step", json_integer(j->step));
    json_object_set_new(o, "total_steps", json_integer(j->total));
    json_object_set_new(o, "seed", json_string(seed));
    json_object_set_new(o, "spec_hash", json_string(j->spec_hash));
    if (j->have_order) {
        char *c = NULL;
        AHA_TRY(aha_data_cursor_to_json(&j->order.c, &c, err));
        json_t *cj = json_loads(c, 0, NULL);
        free(c);
        if (!cj) {
            json_decref(o);
            return aha_errf(err, AHA_EINTERNAL, "cursor JSON did not parse");
        }
        json_object_set_new(o, "cursor", cj);
    }
    *out = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(o);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
}

aha_status aha__job_checkpoint(aha__job *j, aha_err *err)
{
    char *state = NULL;
    AHA_TRY(state_json(j, &state, err));
    aha_status st = aha_ckpt_save(j->ctx->job_dir, j->step, j->m, j->t, j->tok_json[0] ? j->tok_json : NULL,
                                  state, CKPT_KEEP, j->last_ckpt, sizeof j->last_ckpt, err);
    free(state);
    if (st == AHA_OK) aha__job_log(j, "checkpoint %s", j->last_ckpt);
    return st;
}

/* keep only records of steps <= step (the dead run's later lines are redone) */
static aha_status trim_records(const char *path, int64_t step, aha_err *err)
{
    if (!aha_path_exists(path)) return AHA_OK;
    char *data = NULL;
    size_t len = 0;
    AHA_TRY(aha_read_file(path, (size_t)1 << 30, &data, &len, err));
    char *outb = malloc(len + 1);
    if (!outb) {
        free(data);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    size_t o = 0;
    for (char *p = data; p < data + len;) {
        char *nl = memchr(p, '\n', (size_t)(data + len - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(data + len - p);
        json_t *r = json_loadb(p, l, 0, NULL);
        json_t *s = r ? json_object_get(r, "step") : NULL;
        bool keep = r && (!json_is_integer(s) || json_integer_value(s) <= step);
        json_decref(r);
        if (keep) {
            memcpy(outb + o, p, l);
            o += l;
            outb[o++] = '\n';
        }
        p += l + 1;
    }
    aha_status st = aha_write_file_atomic(path, outb, o, err);
    free(outb);
    free(data);
    return st;
}

/* Open the policy: from the latest checkpoint when there is one, else from init_dir (or a
 * fresh model of student_config). Sets j->m, j->t, j->step, j->resumed; restores the data
 * cursor into *cursor / *have_cursor. */
static aha_status open_policy(aha__job *j, const char *init_dir, const char *fresh_config,
                              aha_data_cursor *cursor, bool *have_cursor, aha_err *err)
{
    const aha_learner_env *env = j->ctx->env;
    const char *dev = env && env->device ? env->device : "cpu";
    AHA_TRY(aha_backend_open(dev, 0, &j->be, err));
    char ck[4096];
    *have_cursor = false;
    aha_err e2 = {0};
    aha_status st = aha_ckpt_latest(j->ctx->job_dir, ck, sizeof ck, &e2);
    if (st == AHA_OK) {
        char f[4096];
        char *data = NULL;
        size_t len = 0;
        AHA_TRY(aha_path_join(f, sizeof f, ck, "state.json", err));
        AHA_TRY(aha_read_file(f, 1 << 20, &data, &len, err));
        json_error_t je;
        json_t *s = json_loadb(data, len, 0, &je);
        free(data);
        if (!s) return aha_errf(err, AHA_EFORMAT, "%s: %s", f, je.text);
        const char *h = json_string_value(json_object_get(s, "spec_hash"));
        json_t *stp = json_object_get(s, "step");
        json_t *cur = json_object_get(s, "cursor");
        st = AHA_OK;
        if (!h || !json_is_integer(stp) || json_integer_value(stp) < 0)
            st = aha_errf(err, AHA_EFORMAT, "%s: missing step or spec_hash", f);
        else if (strcmp(h, j->spec_hash) != 0)
            st = aha_errf(err, AHA_EPRECOND, "%s was written by a different job spec (hash %s, this spec %s)", ck, h,
                          j->spec_hash);
        if (st == AHA_OK) j->step = json_integer_value(stp);
        if (st == AHA_OK && cur) {
            char *c = json_dumps(cur, JSON_COMPACT);
            st = c ? aha_data_cursor_from_json(c, strlen(c), cursor, err) : aha_errf(err, AHA_ENOMEM, "out of memory");
            free(c);
            if (st == AHA_OK) *have_cursor = true;
        }
        json_decref(s);
        AHA_TRY(st);
        AHA_TRY(aha__open_policy_as(j, AHA__POLICY_CKPT, ck, err));
        snprintf(j->last_ckpt, sizeof j->last_ckpt, "%s", ck);
        j->resumed = true;
        AHA_TRY(trim_records(j->metrics_path, j->step, err));
        AHA_TRY(trim_records(j->eval_path, j->step, err));
        aha__job_log(j, "resuming from %s (step %" PRId64 ")", ck, j->step);
        return AHA_OK;
    }
    if (st != AHA_ENOTFOUND) {
        *err = e2;
        return st;
    }
    AHA_ASSERT(init_dir || fresh_config);
    return aha__open_policy_as(j, init_dir ? AHA__POLICY_DIR : AHA__POLICY_FRESH, init_dir ? init_dir : fresh_config,
                               err);
}

aha_status aha__open_policy_as(aha__job *j, int kind, const char *path, aha_err *err)
{
    aha_model_opts mo = {.training = true};
    if (snprintf(j->policy_path, sizeof j->policy_path, "%s", path) >= (int)sizeof j->policy_path)
        return aha_errf(err, AHA_EINVAL, "policy path too long: %.200s...", path);
    j->policy_kind = kind;
    if (kind == AHA__POLICY_FRESH) {
        char *json = NULL;
        size_t len = 0;
        aha_model_config cfg;
        AHA_TRY(aha_read_file(path, 1 << 20, &json, &len, err));
        aha_status st = aha_config_parse(json, len, path, &cfg, err);
        free(json);
        AHA_TRY(st);
        AHA_TRY(aha_model_init_random(&cfg, j->sp->seed, j->be, &mo, &j->m, err));
        return aha_train_create(j->m, &j->t, err);
    }
    if (kind != AHA__POLICY_CKPT && kind != AHA__POLICY_DIR)
        return aha_errf(err, AHA_EINVAL, "unknown policy source %d for %s", kind, path);
    AHA_TRY(aha_model_open(path, j->be, &mo, &j->m, err));
    AHA_TRY(aha_train_create(j->m, &j->t, err));
    if (kind == AHA__POLICY_CKPT) {
        char f[4096];
        AHA_TRY(aha_path_join(f, sizeof f, path, "optimizer.safetensors", err));
        AHA_TRY(aha_train_load(j->t, f, err));
    }
    return AHA_OK;
}

static aha_status open_tokenizer(aha__job *j, const char *model_dir, aha_err *err)
{
    const char *p = j->sp->tokenizer;
    char buf[4096];
    if (!p && model_dir) {
        AHA_TRY(aha_path_join(buf, sizeof buf, model_dir, "tokenizer.json", err));
        p = buf;
    }
    if (!p) return aha_errf(err, AHA_EINVAL, "spec.tokenizer: required (the model has no tokenizer.json)");
    if (aha_path_is_dir(p)) {
        AHA_TRY(aha_path_join(j->tok_json, sizeof j->tok_json, p, "tokenizer.json", err));
    } else if (snprintf(j->tok_json, sizeof j->tok_json, "%s", p) >= (int)sizeof j->tok_json) {
        return aha_errf(err, AHA_EINVAL, "spec.tokenizer: path too long");
    }
    aha_status st = aha_tokenizer_load(j->tok_json, &j->tok, err);
    if (st != AHA_OK) return aha_err_prefix(err, st, "spec.tokenizer");
    return AHA_OK;
}

static aha_status set_order(aha__job *j, int64_t n, const aha_data_cursor *c, bool have_c, aha_err *err)
{
    if (have_c) AHA_TRY(aha_data_order_restore(&j->order, c, n, err));
    else AHA_TRY(aha_data_order_init(&j->order, n, j->sp->seed, true, err));
    j->have_order = true;
    return AHA_OK;
}

/* ---- SFT / distill ----------------------------------------------------------------------- */

typedef struct {
    int32_t *ids;
    int n, prompt_len;
} sft_seq;

/* One update on the B sequences seq[0..B) (every rank holds all of them and trains its
 * aha_dp_shard; the loss is scaled by the whole step's masked tokens, dp.h's contract). */
static aha_status sft_train(aha__job *j, const sft_seq *const *seq, int B, aha_step_metrics *mt, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    int mb = sp->micro_batch > 0 ? sp->micro_batch : B;
    double masked = 0;
    for (int b = 0; b < B; b++) masked += seq[b]->n - seq[b]->prompt_len;
    int sb = 0, se = B;
    if (j->comm) aha_dp_shard(B, j->rank, j->world, &sb, &se);
    aha_status st = masked > 0 ? AHA_OK : aha_errf(err, AHA_EFORMAT, "sft step %" PRId64 ": no completion token", j->step + 1);
    if (st == AHA_OK) st = aha_train_zero_grad(j->t, err);
    double loss = 0;
    for (int s0 = sb; s0 < se && st == AHA_OK; s0 += mb) {
        int ns = se - s0 < mb ? se - s0 : mb;
        int32_t cu[4097];
        cu[0] = 0;
        for (int s = 0; s < ns; s++) cu[s + 1] = cu[s] + seq[s0 + s]->n;
        int32_t *ids = malloc((size_t)cu[ns] * sizeof *ids);
        float *mask = calloc((size_t)(cu[ns] - ns) + 1, sizeof *mask);
        if (!ids || !mask) st = aha_errf(err, AHA_ENOMEM, "out of memory");
        for (int s = 0; st == AHA_OK && s < ns; s++) {
            const sft_seq *q = seq[s0 + s];
            memcpy(ids + cu[s], q->ids, (size_t)q->n * sizeof *ids);
            /* logprob entry t-1 predicts token t: completion tokens t >= prompt_len */
            for (int t = q->prompt_len; t < q->n; t++) mask[cu[s] - s + t - 1] = 1.0f;
        }
        if (st == AHA_OK) {
            aha_batch b = {ids, cu, ns, NULL};
            double l = 0;
            st = aha_model_sft_backward(j->m, j->t, &b, mask, (float)(1.0 / masked), &l, err);
            loss += l;
        }
        free(ids);
        free(mask);
    }
    /* every rank learns of any rank's failure here, before the all-reduce waits for it */
    st = aha__dp_sync(j, st, err);
    AHA_TRY(st);
    double lr = aha_lr_at(&sp->optim, j->step, j->total);
    aha_dp_opts o = aha__dp_opts(j, lr);
    aha_dp_info info = {0};
    AHA_TRY(aha_dp_step(j->comm, j->m, j->t, &o, &info, err));
    AHA_TRY(aha_dp_sum_host(j->comm, &loss, 1, err));
    mt->loss = loss;
    mt->lr = lr;
    mt->grad_norm = info.grad_norm;
    mt->tokens = (int64_t)masked;
    return AHA_OK;
}

static aha_status sft_step(aha__job *j, const sft_seq *seqs, int64_t n_seqs, aha_step_metrics *mt,
                           aha_err *err)
{
    int B = j->sp->batch_size;
    const sft_seq *pick[4096];
    if (B > (int)AHA_ARRAY_LEN(pick)) return aha_errf(err, AHA_EINVAL, "spec.batch_size: at most %zu", AHA_ARRAY_LEN(pick));
    for (int b = 0; b < B; b++) {
        int64_t x = aha_data_order_next(&j->order);
        AHA_ASSERT(x >= 0 && x < n_seqs);
        pick[b] = &seqs[x];
    }
    if (j->comm) {
        /* the other ranks get the step's sequences themselves: no dataset or tokenizer there */
        aha__wbuf w = {0};
        aha__wbuf_i64(&w, j->total);
        aha__wbuf_i64(&w, B);
        for (int b = 0; b < B; b++) {
            aha__wbuf_i64(&w, pick[b]->n);
            aha__wbuf_i64(&w, pick[b]->prompt_len);
            aha__wbuf_put(&w, pick[b]->ids, (size_t)pick[b]->n * sizeof *pick[b]->ids);
        }
        aha_status st = aha__dp_send_step(j, &w, err);
        aha__wbuf_free(&w);
        AHA_TRY(st);
    }
    return sft_train(j, pick, B, mt, err);
}

aha_status aha__sft_follow_step(aha__job *j, aha__rbuf *r, aha_err *err)
{
    j->total = aha__rbuf_i64(r);
    int64_t B = aha__rbuf_i64(r);
    aha_status st = AHA_OK;
    if (r->bad || B < 1 || B > 4096) st = aha_errf(err, AHA_EFORMAT, "sft step from rank 0: bad batch size %" PRId64, B);
    sft_seq *seqs = st == AHA_OK ? calloc((size_t)B, sizeof *seqs) : NULL;
    const sft_seq **pick = st == AHA_OK ? calloc((size_t)B, sizeof *pick) : NULL;
    if (st == AHA_OK && (!seqs || !pick)) st = aha_errf(err, AHA_ENOMEM, "out of memory");
    for (int64_t b = 0; st == AHA_OK && b < B; b++) {
        int64_t n = aha__rbuf_i64(r), pl = aha__rbuf_i64(r);
        const void *ids = r->bad || n < 1 || n > (1 << 24) || pl < 0 || pl > n ? NULL : aha__rbuf_view(r, (size_t)n * sizeof(int32_t));
        seqs[b].ids = ids ? malloc((size_t)n * sizeof(int32_t)) : NULL;
        if (!seqs[b].ids) {
            st = aha_errf(err, AHA_EFORMAT, "sft step from rank 0: sequence %" PRId64 " malformed", b);
            break;
        }
        memcpy(seqs[b].ids, ids, (size_t)n * sizeof(int32_t));
        seqs[b].n = (int)n;
        seqs[b].prompt_len = (int)pl;
        pick[b] = &seqs[b];
    }
    if (st == AHA_OK && r->off != r->n)
        st = aha_errf(err, AHA_EFORMAT, "sft step from rank 0: %zu bytes after the last sequence", r->n - r->off);
    aha_step_metrics mt;
    aha_step_metrics_init(&mt, j->step + 1, j->total);
    /* a malformed step still takes part in the status agreement, so rank 0 hears of it */
    if (st == AHA_OK) st = sft_train(j, pick, (int)B, &mt, err);
    else st = aha__dp_sync(j, st, err);
    for (int64_t b = 0; seqs && b < B; b++) free(seqs[b].ids);
    free(seqs);
    free(pick);
    return st;
}

static aha_status run_sft(aha__job *j, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    if (!sp->has_dataset) return aha_errf(err, AHA_EINVAL, "spec.dataset: required");
    bool distill = sp->kind == AHA_JOB_DISTILL;
    const char *init = distill ? sp->student_init : sp->model;
    const char *fresh = distill && !sp->student_init ? sp->student_config : NULL;
    if (!init && !fresh) return aha_errf(err, AHA_EINVAL, distill ? "spec.student_config: required (or student_init)" : "spec.model: required");
    aha_dataset ds = {0};
    sft_seq *seqs = NULL;
    int64_t n = 0;
    aha_data_cursor cur;
    bool have_cur = false;
    aha_status st = aha_dataset_load(&sp->dataset, &ds, err);
    if (st == AHA_OK) st = open_tokenizer(j, sp->tokenizer ? sp->tokenizer : (init ? init : NULL), err);
    if (st == AHA_OK) st = open_policy(j, init, fresh, &cur, &have_cur, err);
    if (st == AHA_OK) st = aha__dp_open(j, err);
    if (st == AHA_OK) {
        seqs = calloc((size_t)ds.n, sizeof *seqs);
        if (!seqs) st = aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    const aha_model_config *cfg = j->m ? aha_model_cfg(j->m) : NULL;
    int32_t eos = cfg && cfg->n_eos > 0 ? cfg->eos_token_ids[0] : -1;
    int max_len = sp->max_seq_len;
    if (cfg && (max_len <= 0 || max_len > cfg->max_position_embeddings)) max_len = cfg->max_position_embeddings;
    int64_t skipped = 0;
    for (int64_t i = 0; st == AHA_OK && i < ds.n; i++) {
        size_t len = 0, pl = 0;
        int32_t *ids = NULL;
        aha_err e2 = {0};
        aha_status s2 = aha_encode_sft(j->tok, sp->template_text, ds.items[i].prompt, ds.items[i].completion, eos,
                                       max_len, &ids, &len, &pl, &e2);
        if (s2 == AHA_ELIMIT) {
            skipped++;
            continue;
        }
        if (s2 != AHA_OK) {
            st = aha_err_prefix(&e2, s2, "%s:%" PRId64, sp->dataset.path, ds.items[i].line);
            *err = e2;
            break;
        }
        if (len <= pl) {
            free(ids);
            skipped++;
            continue;
        }
        seqs[n].ids = ids;
        seqs[n].n = (int)len;
        seqs[n].prompt_len = (int)pl;
        n++;
    }
    if (st == AHA_OK && n == 0) st = aha_errf(err, AHA_EINVAL, "spec.dataset: no example fits max_seq_len %d", max_len);
    if (st == AHA_OK && skipped) aha__job_log(j, "%" PRId64 " examples longer than max_seq_len %d skipped", skipped, max_len);
    if (st == AHA_OK) {
        j->total = aha_job_total_steps(sp, n);
        st = set_order(j, n, &cur, have_cur, err);
    }
    if (st == AHA_OK && sp->has_eval && sp->eval.n_datasets > 0)
        st = aha__job_connect(j, true, true, false, err);
    aha__job_progress(j);
    if (st == AHA_OK && !j->resumed) aha__job_log(j, "%s: %" PRId64 " examples, %" PRId64 " steps of %d", aha_job_kind_name(sp->kind), n, j->total, sp->batch_size);
    double t_tok = 0, t_time = 0;
    while (st == AHA_OK && j->step < j->total) {
        double t0;
        aha_step_metrics mt;
        st = aha__job_step_begin(j, sp->name, &mt, &t0, err);
        if (st != AHA_OK) break;
        st = sft_step(j, seqs, n, &mt, err);
        if (st != AHA_OK) break;
        j->step++;
        mt.t_train = aha_now_s() - t0;
        t_tok += (double)mt.tokens;
        t_time += mt.t_train;
        bool last = j->step == j->total;
        if (sp->checkpoint_every > 0 && (j->step % sp->checkpoint_every == 0) && !last) st = aha__job_checkpoint(j, err);
        if (st == AHA_OK && last) st = aha__job_checkpoint(j, err);
        mt.t_total = aha_now_s() - t0;
        char *line = NULL;
        if (st == AHA_OK) st = aha_step_metrics_json(&mt, &line, err);
        if (st == AHA_OK) st = aha__job_record(j, AHA_EV_METRICS, j->step, j->metrics_path, line, err);
        free(line);
        aha__job_progress(j);
        if (st == AHA_OK && sp->has_eval && sp->eval.n_datasets > 0 &&
            ((sp->eval.every > 0 && j->step % sp->eval.every == 0) || last)) {
            double ts = 0;
            st = aha__job_push(j, j->step, true, false, &ts, err);
            if (st == AHA_OK) st = aha__eval_run(j, &sp->eval, j->step, NULL, err);
        }
    }
    if (st == AHA_OK && t_time > 0) aha__job_log(j, "done: %.0f tokens/s trained", t_tok / t_time);
    for (int64_t i = 0; i < n; i++) free(seqs[i].ids);
    free(seqs);
    aha_dataset_free(&ds);
    return st;
}

/* ---- GRPO setup (the loop is in grpo.c) --------------------------------------------------- */

static aha_status run_grpo(aha__job *j, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    if (!sp->model) return aha_errf(err, AHA_EINVAL, "spec.model: required");
    if (!sp->has_dataset) return aha_errf(err, AHA_EINVAL, "spec.dataset: required");
    aha_dataset ds = {0};
    aha_data_cursor cur;
    bool have_cur = false;
    aha_status st = aha_dataset_load(&sp->dataset, &ds, err);
    if (st == AHA_OK) st = open_tokenizer(j, sp->model, err);
    if (st == AHA_OK) st = open_policy(j, sp->model, NULL, &cur, &have_cur, err);
    if (st == AHA_OK) st = aha__dp_open(j, err);
    if (st == AHA_OK) {
        j->total = sp->steps;
        st = set_order(j, ds.n, &cur, have_cur, err);
    }
    bool kl = sp->loss.kl && sp->loss.beta > 0;
    if (st == AHA_OK) st = aha__job_connect(j, true, true, kl, err);
    aha__job_progress(j);
    if (st == AHA_OK) st = aha__grpo_run(j, &ds, err);
    aha_dataset_free(&ds);
    return st;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

/* One attempt at the job; *group_broke when it ended because the learner group broke. */
static aha_status run_once(aha_job_ctx *ctx, bool *group_broke, aha_err *err)
{
    aha__job j;
    memset(&j, 0, sizeof j);
    j.ctx = ctx;
    j.sp = ctx->spec;
    j.pushed_version = -1;
    j.push_path = "grpc";
    aha_status st = aha_mkdirs(ctx->job_dir, err);
    char *norm = NULL;
    if (st == AHA_OK) st = aha_job_spec_to_json(j.sp, &norm, err);
    if (st == AHA_OK) aha_ckpt_hash_hex(norm, j.spec_hash);
    free(norm);
    if (st == AHA_OK) st = aha_path_join(j.metrics_path, sizeof j.metrics_path, ctx->job_dir, "metrics.jsonl", err);
    if (st == AHA_OK) st = aha_path_join(j.eval_path, sizeof j.eval_path, ctx->job_dir, "eval.jsonl", err);
    if (st == AHA_OK) {
        switch (j.sp->kind) {
        case AHA_JOB_GRPO: st = run_grpo(&j, err); break;
        case AHA_JOB_SFT:
        case AHA_JOB_DISTILL: st = run_sft(&j, err); break;
        case AHA_JOB_EVAL: st = aha__eval_job(&j, err); break;           /* jobkinds.c */
        case AHA_JOB_GENERATE: st = aha__generate_job(&j, err); break;
        case AHA_JOB_MIX: st = aha__mix_job(&j, err); break;
        case AHA_JOB_PIPELINE: st = aha__pipeline_job(&j, err); break;
        default:
            st = aha_errf(err, AHA_EUNSUPPORTED, "spec.kind: \"%s\" jobs are not runnable by this learner yet",
                          aha_job_kind_name(j.sp->kind));
        }
    }
    aha_weight_group_free(j.wg);
    *group_broke = j.comm && aha_comm_broken(j.comm) && st != AHA_OK;
    aha__dp_close(&j, st, err);
    if (j.have_order) aha_data_order_free(&j.order);
    if (j.eval_sets) {
        for (int i = 0; i < j.sp->eval.n_datasets; i++) aha_dataset_free(&j.eval_sets[i]);
        free(j.eval_sets);
    }
    for (int i = 0; i < j.n_rollout; i++) aha_rpc_channel_free(j.rollout[i]);
    if (j.reward) aha_rpc_channel_free(j.reward);
    if (j.refpolicy) aha_rpc_channel_free(j.refpolicy);
    aha_tokenizer_free(j.tok);
    aha_train_free(j.t);
    aha_model_free(j.m);
    aha_backend_free(j.be);
    return st;
}

aha_status aha_job_run(aha_job_ctx *ctx, aha_err *err)
{
    AHA_ASSERT(ctx && ctx->spec && ctx->job_dir);
    int retries = ctx->env && ctx->env->world_size > 1 ? ctx->env->dist_retries : 0;
    for (int attempt = 0;; attempt++) {
        bool broke = false;
        aha_status st = run_once(ctx, &broke, err);
        if (!broke || attempt >= retries || (ctx->cancel && *ctx->cancel)) return st;
        /* a rank died or hung: once the ranks are back the job goes on from its last
         * checkpoint (run_once resumes from it), with nothing after it counted twice */
        char msg[AHA_ERR_LEN + 128];
        snprintf(msg, sizeof msg, "learner group failed (%s); re-forming it and resuming from the last checkpoint "
                 "(retry %d of %d)", aha_err_msg(err), attempt + 1, retries);
        AHA_WARN("job %s: %s", ctx->job_id ? ctx->job_id : "?", msg);
        if (ctx->emit) ctx->emit(ctx->user, AHA_EV_LOG, ctx->progress_step ? *ctx->progress_step : 0, NULL, msg);
    }
}
