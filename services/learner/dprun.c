/* dprun.c: the learner's data-parallel group (docs/DIST.md): rank 0's side of forming it for a
 * job and handing out the work, the other ranks' follower loop, the control messages between
 * them and the status agreement that turns one rank's failure into every rank's error.
 *
 * Protocol over the group's control channel (aha_comm_broadcast_bytes from rank 0): a fixed
 * header {magic, type, payload length, aux}, then the payload.
 *   JOB   job id, job dir, the normalised spec JSON, where rank 0's weights came from (a
 *         checkpoint dir, a model dir, or a fresh init from a config and the spec seed), step,
 *         how often the ranks compare weights (rank 0's --dist-check-every: a collective)
 *   STEP  one optimizer step's sequences (grpo.c / runner.c pack them; aux = step)
 *   END   the job is over on rank 0 (aux = its status, payload = its error message)
 * One group per job: rank 0 forms it after loading the policy and leaves it at the end; a
 * follower joins, follows one job, leaves, and joins again. A broken group (a rank gone, a
 * deadline) ends the job on every rank with the communicator's message; rank 0 then re-forms
 * it (waiting for the ranks to be back) and resumes from the last checkpoint, env->dist_retries
 * times (runner.c). */
#include "runner_int.h" /* includes runner.h, which has no include guard */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/fs.h"
#include "base/log.h"

#define DP_MAGIC 0x44414841u /* "AHAD" */
#define DP_MAX_PAYLOAD ((int64_t)1 << 31)
enum { MSG_JOB = 1, MSG_STEP = 2, MSG_END = 3 };

typedef struct {
    uint32_t magic, type;
    int64_t len, aux;
} msg_hdr;

/* ---- message buffers ---------------------------------------------------------------------- */

void aha__wbuf_put(aha__wbuf *b, const void *x, size_t n)
{
    if (b->oom || n == 0) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}

void aha__wbuf_i64(aha__wbuf *b, int64_t v) { aha__wbuf_put(b, &v, sizeof v); }

void aha__wbuf_str(aha__wbuf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    aha__wbuf_i64(b, (int64_t)n);
    aha__wbuf_put(b, s, n);
}

void aha__wbuf_free(aha__wbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

const void *aha__rbuf_view(aha__rbuf *r, size_t n)
{
    if (r->bad || n > r->n - r->off) {
        r->bad = true;
        return NULL;
    }
    const void *p = r->p + r->off;
    r->off += n;
    return p;
}

bool aha__rbuf_get(aha__rbuf *r, void *x, size_t n)
{
    const void *p = aha__rbuf_view(r, n);
    if (p && n) memcpy(x, p, n);
    return p != NULL;
}

int64_t aha__rbuf_i64(aha__rbuf *r)
{
    int64_t v = 0;
    aha__rbuf_get(r, &v, sizeof v);
    return v;
}

char *aha__rbuf_str(aha__rbuf *r)
{
    int64_t n = aha__rbuf_i64(r);
    if (r->bad || n < 0 || (uint64_t)n > r->n - r->off) {
        r->bad = true;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    aha__rbuf_get(r, s, (size_t)n);
    s[n] = 0;
    return s;
}

/* ---- the group ------------------------------------------------------------------------------ */

static int dist_timeout(const aha_learner_env *env)
{
    return env->dist_timeout_ms > 0 ? env->dist_timeout_ms : 300000;
}

static aha_status comm_open(const aha_learner_env *env, aha_backend *be, int connect_ms, aha_comm **out,
                            aha_err *err)
{
    aha_comm_kind kind = AHA_COMM_TCP;
    if (env->dist_transport) AHA_TRY(aha_comm_kind_parse(env->dist_transport, &kind, err));
    else if (env->device && strncmp(env->device, "cuda", 4) == 0 && aha_comm_have_nccl()) kind = AHA_COMM_NCCL;
    aha_comm_opts o = {.rank = env->rank,
                       .world_size = env->world_size,
                       .rendezvous = env->rendezvous,
                       .kind = kind,
                       .timeout_ms = dist_timeout(env),
                       .be = be,
                       .name = "learner",
                       .connect_timeout_ms = connect_ms};
    return aha_comm_create(&o, out, err);
}

static aha_status send_msg(aha_comm *c, uint32_t type, int64_t aux, const void *p, size_t n, aha_err *err)
{
    msg_hdr h = {DP_MAGIC, type, (int64_t)n, aux};
    AHA_TRY(aha_comm_broadcast_bytes(c, &h, sizeof h, 0, err));
    /* the root only reads its buffer */
    if (n) AHA_TRY(aha_comm_broadcast_bytes(c, (void *)p, (int64_t)n, 0, err));
    return AHA_OK;
}

/* Followers: rank 0 may spend minutes between two messages (generation, a checkpoint), so the
 * wait for the next header has no limit; a dead rank 0 still ends it (its connection closes). */
static aha_status recv_msg(aha_comm *c, msg_hdr *h, char **payload, aha_err *err)
{
    *payload = NULL;
    aha_comm_set_next_wait(c, -1);
    AHA_TRY(aha_comm_broadcast_bytes(c, h, sizeof *h, 0, err));
    if (h->magic != DP_MAGIC || h->len < 0 || h->len > DP_MAX_PAYLOAD)
        return aha_errf(err, AHA_EFORMAT, "learner group: malformed message from rank 0 (type %u, %" PRId64 " bytes)",
                        h->type, h->len);
    *payload = malloc((size_t)h->len + 1);
    if (!*payload) return aha_errf(err, AHA_ENOMEM, "learner group: out of memory for a %" PRId64 "-byte message", h->len);
    (*payload)[h->len] = 0;
    aha_status st = h->len ? aha_comm_broadcast_bytes(c, *payload, h->len, 0, err) : AHA_OK;
    if (st != AHA_OK) {
        free(*payload);
        *payload = NULL;
    }
    return st;
}

typedef struct {
    int32_t st;
    char msg[252];
} rank_status;

aha_status aha__dp_sync(aha__job *j, aha_status st, aha_err *err)
{
    if (!j->comm) return st;
    rank_status *all = calloc((size_t)j->world, sizeof *all);
    if (!all) return aha_errf(err, AHA_ENOMEM, "learner group: out of memory");
    all[j->rank].st = (int32_t)st;
    if (st != AHA_OK) snprintf(all[j->rank].msg, sizeof all[j->rank].msg, "%s", aha_err_msg(err));
    aha_err ce = {0};
    aha_status cs = AHA_OK;
    for (int r = 0; r < j->world && cs == AHA_OK; r++)
        cs = aha_comm_broadcast_bytes(j->comm, &all[r], sizeof all[r], r, &ce);
    if (cs != AHA_OK && st == AHA_OK) {
        *err = ce;
        st = cs;
    }
    for (int r = 0; st == AHA_OK && r < j->world; r++)
        if (all[r].st != AHA_OK) {
            aha_status rs = all[r].st > 0 && all[r].st < AHA_STATUS_COUNT ? (aha_status)all[r].st : AHA_EINTERNAL;
            all[r].msg[sizeof all[r].msg - 1] = 0;
            st = aha_errf(err, rs, "learner rank %d: %s", r, all[r].msg);
        }
    free(all);
    return st;
}

aha_dp_opts aha__dp_opts(const aha__job *j, double lr)
{
    const aha_job_spec *sp = j->sp;
    aha_dp_opts o = {
        .max_grad_norm = sp->optim.grad_clip,
        .adamw = {(float)lr, (float)sp->optim.adam_beta1, (float)sp->optim.adam_beta2, (float)sp->optim.adam_eps,
                  (float)sp->optim.weight_decay, true},
        .check_every = j->comm ? j->check_every : 0,
    };
    return o;
}

aha_status aha__dp_open(aha__job *j, aha_err *err)
{
    const aha_learner_env *env = j->ctx->env;
    if (!env || env->world_size <= 1) return AHA_OK;
    AHA_ASSERT(env->rank == 0 && env->rendezvous);
    j->rank = 0;
    j->world = env->world_size;
    /* every rank must check on the same steps (a check is a collective): rank 0's setting */
    j->check_every = env->dist_check_every > 0 ? env->dist_check_every : 20;
    double t0 = aha_now_s();
    aha__job_log(j, "learner group: waiting for %d more rank(s) at %s (up to %d ms)", j->world - 1, env->rendezvous,
                 dist_timeout(env));
    /* in attempts of a few seconds, so that a cancelled job (or a stopping learner) does not
     * wait out the whole timeout for ranks that are not coming */
    for (;;) {
        aha_status st = comm_open(env, j->be, 3000, &j->comm, err);
        if (st == AHA_OK) break;
        if (st != AHA_ETIMEOUT) return st;
        if (aha__job_cancelled(j)) return aha_errf(err, AHA_ECANCELLED, "cancelled while waiting for the learner ranks");
        if (aha_now_s() - t0 > dist_timeout(env) / 1000.0)
            return aha_err_prefix(err, AHA_ETIMEOUT, "learner group: no full group after %.0f s", aha_now_s() - t0);
    }
    char *spec = NULL;
    AHA_TRY(aha_job_spec_to_json(j->sp, &spec, err));
    aha__wbuf b = {0};
    aha__wbuf_str(&b, j->ctx->job_id ? j->ctx->job_id : "");
    aha__wbuf_str(&b, j->ctx->job_dir);
    aha__wbuf_str(&b, spec);
    aha__wbuf_i64(&b, j->policy_kind);
    aha__wbuf_str(&b, j->policy_path);
    aha__wbuf_i64(&b, j->step);
    aha__wbuf_i64(&b, j->check_every);
    free(spec);
    aha_status st = b.oom ? aha_errf(err, AHA_ENOMEM, "out of memory") : send_msg(j->comm, MSG_JOB, 0, b.p, b.n, err);
    aha__wbuf_free(&b);
    /* every rank loaded the same weights: the job cannot start otherwise */
    if (st == AHA_OK) st = aha__dp_sync(j, AHA_OK, err);
    uint64_t h = 0;
    if (st == AHA_OK) st = aha_dp_check_weights(j->comm, j->m, &h, err);
    if (st == AHA_OK)
        aha__job_log(j, "learner group of %d ranks over %s formed in %.1fs; every rank holds the weights of %s "
                     "(hash %016" PRIx64 ")",
                     j->world, aha_comm_kind_name(aha_comm_get_kind(j->comm)), aha_now_s() - t0, j->policy_path, h);
    return st;
}

void aha__dp_close(aha__job *j, aha_status st, const aha_err *e)
{
    if (!j->comm) return;
    if (!aha_comm_broken(j->comm)) {
        const char *m = st == AHA_OK ? "" : aha_err_msg(e);
        aha_err e2 = {0};
        if (send_msg(j->comm, MSG_END, st, m, strlen(m), &e2) != AHA_OK)
            AHA_WARN("learner group: telling the ranks the job ended: %s", e2.msg);
    }
    aha_comm_free(j->comm);
    j->comm = NULL;
}

aha_status aha__dp_send_step(aha__job *j, const aha__wbuf *b, aha_err *err)
{
    AHA_ASSERT(j->comm && j->rank == 0);
    if (b->oom) return aha_errf(err, AHA_ENOMEM, "learner group: out of memory packing step %" PRId64, j->step + 1);
    return send_msg(j->comm, MSG_STEP, j->step, b->p, b->n, err);
}

/* ---- followers -------------------------------------------------------------------------------- */

/* One job rank 0 started, from its JOB message to its END (or the group breaking). */
static aha_status follow_job(const aha_learner_env *env, aha_backend *be, aha_comm *c, aha_err *err)
{
    msg_hdr h;
    char *pl = NULL;
    AHA_TRY(recv_msg(c, &h, &pl, err));
    if (h.type == MSG_END) {
        free(pl);
        return AHA_OK;
    }
    if (h.type != MSG_JOB) {
        free(pl);
        return aha_errf(err, AHA_EFORMAT, "learner group: expected a job from rank 0, got message type %u", h.type);
    }
    aha__rbuf r = {pl, (size_t)h.len, 0, false};
    char *job_id = aha__rbuf_str(&r), *job_dir = aha__rbuf_str(&r), *spec_json = aha__rbuf_str(&r);
    int kind = (int)aha__rbuf_i64(&r);
    char *path = aha__rbuf_str(&r);
    int64_t step0 = aha__rbuf_i64(&r);
    int64_t check_every = aha__rbuf_i64(&r);
    free(pl);
    aha_job_spec sp;
    memset(&sp, 0, sizeof sp);
    bool have_spec = false;
    aha_err le = {0};
    aha_status ls = AHA_OK;
    if (r.bad || !job_id || !job_dir || !spec_json || !path || check_every < 1 || check_every > 1000000000)
        ls = aha_errf(&le, AHA_EFORMAT, "learner group: malformed job message from rank 0");
    if (ls == AHA_OK) {
        ls = aha_job_spec_parse(spec_json, strlen(spec_json), &sp, &le);
        have_spec = ls == AHA_OK;
        if (ls != AHA_OK) aha_err_prefix(&le, ls, "the job spec rank 0 sent");
    }
    aha_job_ctx ctx = {.job_id = job_id, .job_dir = job_dir, .spec = &sp, .env = env};
    aha__job j;
    memset(&j, 0, sizeof j);
    j.ctx = &ctx;
    j.sp = &sp;
    j.be = be;
    j.comm = c;
    j.rank = env->rank;
    j.world = env->world_size;
    j.pushed_version = -1;
    j.step = step0;
    j.check_every = (int)check_every;
    bool grpo = have_spec && sp.kind == AHA_JOB_GRPO;
    if (ls == AHA_OK && !grpo && sp.kind != AHA_JOB_SFT && sp.kind != AHA_JOB_DISTILL)
        ls = aha_errf(&le, AHA_EUNSUPPORTED, "learner group: \"%s\" jobs run on rank 0 alone", aha_job_kind_name(sp.kind));
    if (ls == AHA_OK) ls = aha__open_policy_as(&j, kind, path, &le);
    if (ls == AHA_OK) AHA_INFO("job %s: rank %d of %d loaded %s (step %" PRId64 ")", job_id, j.rank, j.world, path, step0);
    aha_status st = aha__dp_sync(&j, ls, &le);
    bool ready = st == AHA_OK;
    if (ready) st = aha_dp_check_weights(c, j.m, NULL, &le);
    ready = st == AHA_OK;
    if (st != AHA_OK) AHA_WARN("job %s: rank %d: %s", job_id ? job_id : "?", j.rank, le.msg);
    aha_status end = st;
    aha_err end_err = le;
    /* until rank 0 ends the job or the group breaks; a failed step (told to every rank by
     * aha__dp_sync) makes rank 0 end the job */
    while (!aha_comm_broken(c)) {
        aha_err e2 = {0};
        st = recv_msg(c, &h, &pl, &e2);
        if (st != AHA_OK) {
            end = st;
            end_err = e2;
            break;
        }
        if (h.type == MSG_END) {
            end = h.aux > 0 && h.aux < AHA_STATUS_COUNT ? (aha_status)h.aux : AHA_OK;
            if (end != AHA_OK) aha_errf(&end_err, end, "rank 0 ended the job: %s", pl);
            else AHA_INFO("job %s: done on rank %d at step %" PRId64, job_id, j.rank, j.step);
            free(pl);
            break;
        }
        if (h.type != MSG_STEP || !ready) {
            free(pl);
            end = aha_errf(&end_err, AHA_EFORMAT, "learner group: unexpected message type %u from rank 0", h.type);
            break;
        }
        aha__rbuf sr = {pl, (size_t)h.len, 0, false};
        j.step = h.aux;
        st = grpo ? aha__grpo_follow_step(&j, &sr, &e2) : aha__sft_follow_step(&j, &sr, &e2);
        free(pl);
        pl = NULL;
        if (st == AHA_OK) j.step = h.aux + 1;
        else AHA_WARN("job %s: rank %d: step %" PRId64 ": %s", job_id, j.rank, h.aux + 1, e2.msg);
        if (st != AHA_OK && aha_comm_broken(c)) {
            end = st;
            end_err = e2;
        }
    }
    if (end != AHA_OK) *err = end_err;
    aha_train_free(j.t);
    aha_model_free(j.m);
    if (have_spec) aha_job_spec_free(&sp);
    free(job_id);
    free(job_dir);
    free(spec_json);
    free(path);
    return end;
}

aha_status aha_job_follow(const aha_learner_env *env, volatile int *stop, bool once, aha_err *err)
{
    if (!env || env->world_size < 2 || env->rank < 1 || env->rank >= env->world_size || !env->rendezvous)
        return aha_errf(err, AHA_EINVAL, "learner follower: needs a rank in 1..world_size-1 and rank 0's --rendezvous");
    aha_backend *be = NULL;
    AHA_TRY(aha_backend_open(env->device ? env->device : "cpu", 0, &be, err));
    AHA_INFO("learner rank %d of %d on %s: joining rank 0 at %s", env->rank, env->world_size,
             env->device ? env->device : "cpu", env->rendezvous);
    aha_status last = AHA_OK;
    while (!(stop && *stop)) {
        aha_comm *c = NULL;
        aha_err e2 = {0};
        /* short connect attempts: rank 0 listens only while it forms a job's group */
        aha_status st = comm_open(env, be, 1000, &c, &e2);
        /* rank 0 not listening yet, or it gave up this attempt (it retries while other ranks
         * are missing, closing the connections of those that came): try again */
        if (st == AHA_ETIMEOUT || st == AHA_EUNAVAILABLE) {
            AHA_DEBUG("learner rank %d: %s", env->rank, e2.msg);
            if (st == AHA_EUNAVAILABLE) {
                struct timespec ts = {0, 200 * 1000000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        if (st == AHA_EINVAL || st == AHA_EUNSUPPORTED) {
            *err = e2;
            last = st;
            break;
        }
        if (st != AHA_OK) {
            AHA_WARN("learner rank %d: joining the group: %s", env->rank, e2.msg);
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
            continue;
        }
        AHA_INFO("learner rank %d: joined the group of %d (%s)", env->rank, env->world_size,
                 aha_comm_kind_name(aha_comm_get_kind(c)));
        st = follow_job(env, be, c, &e2);
        if (st != AHA_OK) AHA_WARN("learner rank %d: the job ended with an error: %s", env->rank, e2.msg);
        aha_comm_free(c);
        last = st;
        if (st != AHA_OK) *err = e2;
        if (once) break;
    }
    aha_backend_free(be);
    return once ? last : AHA_OK;
}
