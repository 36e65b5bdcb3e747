/* weightgroup.c: the "weights" group of weightgroup.h: learner rank 0 broadcasts the whole
 * compute-weight tensor; each worker's receiver thread stages it and hands it to apply. */
#include "dist/weightgroup.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

#define AHA__WG_MAGIC 0x57474831u /* "WGH1" */

typedef struct {
    uint32_t magic;
    int32_t dtype;
    int64_t version;
    int64_t numel;
    uint64_t signature;
} push_hdr;

struct aha_weight_group {
    aha_model *m;         /* the learner's (pushed from) */
    const aha_model *lay; /* layout: the learner's or the worker's model (read only) */
    aha_weight_group_opts o;
    char name[32];
    char rendezvous[280];
    uint64_t signature;
    aha_comm *comm; /* rank 0: set by open; workers: by the receiver thread */
    /* worker */
    aha_weight_group_apply_fn apply;
    void *user;
    pthread_t thread;
    bool have_thread;
    _Atomic int stop;
    pthread_mutex_t mu; /* guards state and comm publication */
    aha_weight_group_state state;
};

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint64_t aha_weight_group_signature(const aha_model *m)
{
    uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
    MIX(aha_model_backend(m)->act_dtype);
    MIX(aha_model_numel(m));
    for (int i = 0; i < aha_model_n_params(m); i++) {
        const aha_param_info *p = aha_model_param(m, i);
        for (const char *s = p->name; *s; s++) MIX((uint8_t)*s);
        MIX(p->ndim);
        MIX(p->shape[0]);
        MIX(p->shape[1]);
        MIX(aha_model_param_offset(m, i));
    }
#undef MIX
    return h;
}

static aha_status group_new(aha_model *m, const aha_model *lay, const aha_weight_group_opts *o, aha_weight_group **out,
                            aha_err *err)
{
    if (!o->rendezvous || strlen(o->rendezvous) >= 280)
        return aha_errf(err, AHA_EINVAL, "weight group: rendezvous missing or too long");
    aha_weight_group *g = calloc(1, sizeof *g);
    if (!g) return aha_errf(err, AHA_ENOMEM, "weight group: out of memory");
    g->m = m;
    g->lay = lay;
    g->o = *o;
    snprintf(g->name, sizeof g->name, "%s", o->name && o->name[0] ? o->name : "weights");
    snprintf(g->rendezvous, sizeof g->rendezvous, "%s", o->rendezvous);
    g->o.name = g->name;
    g->o.rendezvous = g->rendezvous;
    g->signature = aha_weight_group_signature(lay);
    g->state.version = -1;
    pthread_mutex_init(&g->mu, NULL);
    *out = g;
    return AHA_OK;
}

static aha_comm_opts comm_opts(const aha_weight_group *g)
{
    aha_comm_opts co = {.rank = g->o.rank, .world_size = g->o.world_size, .rendezvous = g->o.rendezvous,
                        .kind = g->o.kind, .timeout_ms = g->o.timeout_ms, .be = aha_model_backend(g->lay),
                        .name = g->name};
    return co;
}

/* ---- learner -------------------------------------------------------------------------------- */

aha_status aha_weight_group_open(aha_model *m, const aha_weight_group_opts *o, aha_weight_group **out,
                                 aha_err *err)
{
    *out = NULL;
    if (o->rank != 0) return aha_errf(err, AHA_EINVAL, "weight group: the learner opens as rank 0, not %d", o->rank);
    aha_weight_group *g = NULL;
    AHA_TRY(group_new(m, m, o, &g, err));
    aha_comm_opts co = comm_opts(g);
    aha_status st = aha_comm_create(&co, &g->comm, err);
    if (st != AHA_OK) {
        aha_weight_group_free(g);
        return st;
    }
    g->state.joined = true;
    *out = g;
    return AHA_OK;
}

aha_status aha_weight_group_push(aha_weight_group *g, int64_t version, double *seconds, aha_err *err)
{
    if (!g->comm || g->o.rank != 0) return aha_errf(err, AHA_EPRECOND, "%s: push needs the learner's open group", g->name);
    double t0 = wall_s();
    int64_t numel = 0;
    aha_tensor w = aha_model_weights(g->m, &numel);
    push_hdr h = {AHA__WG_MAGIC, (int32_t)w.dt, version, numel, g->signature};
    AHA_TRY(aha_comm_broadcast_bytes(g->comm, &h, sizeof h, 0, err));
    AHA_TRY(aha_comm_broadcast(g->comm, w, numel, 0, err));
    double dt = wall_s() - t0;
    pthread_mutex_lock(&g->mu);
    g->state.pushes++;
    g->state.version = version;
    g->state.last_s = dt;
    pthread_mutex_unlock(&g->mu);
    if (seconds) *seconds = dt;
    return AHA_OK;
}

/* ---- worker --------------------------------------------------------------------------------- */

aha_status aha_weight_group_copy_into(aha_model *m, aha_tensor staged, int64_t numel, aha_err *err)
{
    int64_t n = 0;
    aha_tensor w = aha_model_weights(m, &n);
    if (n != numel || w.dt != staged.dt)
        return aha_errf(err, AHA_EINVAL, "weight group: staged %lld x %s, model holds %lld x %s", (long long)numel,
                        aha_dtype_name(staged.dt), (long long)n, aha_dtype_name(w.dt));
    aha_backend *be = aha_model_backend(m);
    AHA_TRY(be->ops->copy(be, w, staged, n, err));
    return be->ops->synchronize(be, err);
}

static void set_ended(aha_weight_group *g, aha_status st, const aha_err *e)
{
    pthread_mutex_lock(&g->mu);
    g->state.ended = true;
    if (st != AHA_OK && !atomic_load(&g->stop)) snprintf(g->state.error, sizeof g->state.error, "%s", aha_err_msg(e));
    pthread_mutex_unlock(&g->mu);
    if (st != AHA_OK && !atomic_load(&g->stop)) AHA_ERROR("%s: receiver stopped: %s", g->name, aha_err_msg(e));
}

static void *receiver(void *arg)
{
    aha_weight_group *g = arg;
    aha_err err = {0};
    aha_comm_opts co = comm_opts(g);
    aha_comm *c = NULL;
    aha_status st = aha_comm_create(&co, &c, &err);
    if (st != AHA_OK) {
        set_ended(g, st, &err);
        return NULL;
    }
    pthread_mutex_lock(&g->mu);
    g->comm = c;
    g->state.joined = true;
    pthread_mutex_unlock(&g->mu);
    /* staging on the receiver thread, after the communicator chose this thread's device */
    aha_backend *be = aha_model_backend(g->lay);
    int64_t numel = aha_model_numel(g->lay);
    aha_tensor w = {NULL, be->act_dtype}; /* the dtype of aha_model_weights */
    aha_buf *buf = NULL;
    st = be->ops->buf_alloc(be, (size_t)numel * aha_dtype_size(w.dt), &buf, &err);
    aha_tensor staged = {st == AHA_OK ? be->ops->buf_base(buf) : NULL, w.dt};
    if (st == AHA_OK) AHA_INFO("%s: joined as rank %d of %d (%s), %lld weights", g->name, g->o.rank, g->o.world_size,
                               aha_comm_kind_name(g->o.kind), (long long)numel);
    while (st == AHA_OK && !atomic_load(&g->stop)) {
        push_hdr h;
        aha_comm_set_next_wait(c, -1); /* the next push may be far away */
        st = aha_comm_broadcast_bytes(c, &h, sizeof h, 0, &err);
        if (st != AHA_OK) break;
        double t0 = wall_s();
        if (h.magic != AHA__WG_MAGIC || h.numel != numel || h.dtype != (int32_t)w.dt || h.signature != g->signature) {
            st = aha_errf(&err, AHA_EPRECOND,
                          "%s: push of version %lld does not fit this model (%lld x dtype %d, signature %016llx; "
                          "here %lld x %s, %016llx)",
                          g->name, (long long)h.version, (long long)h.numel, h.dtype, (unsigned long long)h.signature,
                          (long long)numel, aha_dtype_name(w.dt), (unsigned long long)g->signature);
            break;
        }
        st = aha_comm_broadcast(c, staged, numel, 0, &err);
        if (st == AHA_OK) st = g->apply(g->user, staged, numel, h.version, &err);
        if (st != AHA_OK) break;
        pthread_mutex_lock(&g->mu);
        g->state.pushes++;
        g->state.version = h.version;
        g->state.last_s = wall_s() - t0;
        pthread_mutex_unlock(&g->mu);
        AHA_INFO("%s: policy version %lld received (%.3f s)", g->name, (long long)h.version, wall_s() - t0);
    }
    set_ended(g, st, &err);
    if (buf) be->ops->buf_free(be, buf);
    return NULL;
}

aha_status aha_weight_group_join(const aha_model *m, const aha_weight_group_opts *o, uint64_t expect_signature,
                                 aha_weight_group_apply_fn apply, void *user, aha_weight_group **out,
                                 aha_err *err)
{
    *out = NULL;
    if (o->rank < 1 || o->rank >= o->world_size)
        return aha_errf(err, AHA_EINVAL, "weight group: worker rank %d out of range 1..%d", o->rank, o->world_size - 1);
    if (!apply) return aha_errf(err, AHA_EINVAL, "weight group: no apply function");
    if (o->kind == AHA_COMM_NCCL && !aha_comm_have_nccl())
        return aha_errf(err, AHA_EUNSUPPORTED, "weight group: this build has no NCCL");
    uint64_t mine = aha_weight_group_signature(m);
    if (mine != expect_signature)
        return aha_errf(err, AHA_EPRECOND,
                        "weight group: the learner's weight layout (%016llx) differs from this worker's (%016llx): "
                        "different model, or compute dtype (%s here)",
                        (unsigned long long)expect_signature, (unsigned long long)mine,
                        aha_dtype_name(aha_model_backend(m)->act_dtype));
    aha_weight_group *g = NULL;
    AHA_TRY(group_new(NULL, m, o, &g, err));
    g->apply = apply;
    g->user = user;
    if (pthread_create(&g->thread, NULL, receiver, g) != 0) {
        aha_weight_group_free(g);
        return aha_errf(err, AHA_EINTERNAL, "weight group: cannot start the receiver thread");
    }
    g->have_thread = true;
    *out = g;
    return AHA_OK;
}

aha_status aha_weight_group_join_request(const aha_model *m, const Aha__V1__JoinWeightGroupRequest *req,
                                         aha_weight_group_apply_fn apply, void *user, aha_weight_group **out,
                                         aha_err *err)
{
    aha_weight_group_opts o = {.rendezvous = req->rendezvous, .rank = req->rank, .world_size = req->world_size,
                               .timeout_ms = req->timeout_ms, .name = req->group};
    if (!req->rendezvous || !req->rendezvous[0])
        return aha_errf(err, AHA_EINVAL, "JoinWeightGroup: rendezvous is empty");
    if (req->world_size < 2 || req->world_size > 1024)
        return aha_errf(err, AHA_EINVAL, "JoinWeightGroup: world_size %d must be 2..1024", req->world_size);
    if (req->timeout_ms < 0) return aha_errf(err, AHA_EINVAL, "JoinWeightGroup: negative timeout_ms");
    if (req->group && strlen(req->group) > 31) return aha_errf(err, AHA_EINVAL, "JoinWeightGroup: group name too long");
    AHA_TRY(aha_comm_kind_parse(req->transport && req->transport[0] ? req->transport : "nccl", &o.kind, err));
    return aha_weight_group_join(m, &o, req->layout_signature, apply, user, out, err);
}

void aha_weight_group_get_state(aha_weight_group *g, aha_weight_group_state *s)
{
    pthread_mutex_lock(&g->mu);
    *s = g->state;
    pthread_mutex_unlock(&g->mu);
}

void aha_weight_group_free(aha_weight_group *g)
{
    if (!g) return;
    if (g->have_thread) {
        atomic_store(&g->stop, 1);
        pthread_mutex_lock(&g->mu);
        if (g->comm) aha_comm_interrupt(g->comm);
        pthread_mutex_unlock(&g->mu);
        /* a receiver still in its rendezvous gives up at its timeout */
        pthread_join(g->thread, NULL);
    }
    aha_comm_free(g->comm);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
