/* api.c: the aha.v1.Learner handlers: protobuf messages in, jobs.h calls, messages out.
 * WatchJob sends with aha_rpc_call_send (flow-controlled by the client); it never holds up the
 * runner, whose events wait in the watcher's bounded queue (jobs.c). */
#include "api.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/learner.pb-c.h"
#include "base/log.h"

#define WATCH_POLL_MS 200 /* how often a waiting WatchJob looks at its call's cancellation */

/* protobuf-c fields are char *; the messages are only read before they are freed. */
static char *nz(char *s)
{
    static char empty[1];
    return s ? s : empty;
}

/* A Job message over an info snapshot; the strings stay the snapshot's. stages is filled
 * from pipeline.json and owns its array and the Stage messages (free_job_msg). */
static void fill_job(Aha__V1__Job *m, const aha_job_info *j, json_t **stages_doc)
{
    aha__v1__job__init(m);
    m->id = j->id;
    m->kind = j->kind;
    m->state = j->state;
    m->spec_json = j->spec_json;
    m->step = j->step;
    m->total_steps = j->total_steps;
    m->error = nz(j->error);
    m->created_at = j->created_at;
    m->updated_at = j->updated_at;
    m->dir = j->dir;
    m->last_metrics_json = nz(j->last_metrics_json);
    *stages_doc = NULL;
    if (!j->stages_json) return;
    json_t *doc = json_loads(j->stages_json, 0, NULL);
    json_t *arr = json_object_get(doc, "stages");
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (!n) {
        json_decref(doc);
        return;
    }
    Aha__V1__Stage **v = calloc(n, sizeof *v);
    Aha__V1__Stage *st = calloc(n, sizeof *st);
    AHA_ASSERT(v && st);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        aha__v1__stage__init(&st[i]);
        st[i].name = nz((char *)json_string_value(json_object_get(o, "name")));
        st[i].kind = nz((char *)json_string_value(json_object_get(o, "kind")));
        st[i].state = nz((char *)json_string_value(json_object_get(o, "status")));
        const char *out = json_string_value(json_object_get(o, "checkpoint"));
        if (!out) out = json_string_value(json_object_get(o, "dataset"));
        st[i].output = nz((char *)out);
        v[i] = &st[i];
    }
    m->stages = v;
    m->n_stages = n;
    *stages_doc = doc; /* the Stage strings point into it */
}

static void free_job_msg(Aha__V1__Job *m, json_t *stages_doc)
{
    if (m->n_stages) free(m->stages[0]);
    free(m->stages);
    json_decref(stages_doc);
}

static aha_status send_job(aha_rpc_call *call, const aha_job_info *j, aha_err *err)
{
    Aha__V1__Job m;
    json_t *doc;
    fill_job(&m, j, &doc);
    aha_status st = aha_rpc_call_send(call, &m.base, err);
    free_job_msg(&m, doc);
    return st;
}

static aha_status h_submit(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                           aha_err *err)
{
    const Aha__V1__SubmitJobRequest *req = (const Aha__V1__SubmitJobRequest *)msg;
    char id[64];
    AHA_TRY(aha_jobs_submit(user, req->spec_json, strlen(req->spec_json), id, sizeof id, err));
    Aha__V1__SubmitJobReply r = AHA__V1__SUBMIT_JOB_REPLY__INIT;
    r.job_id = id;
    return aha_rpc_call_send(call, &r.base, err);
}

static aha_status h_get(aha_rpc_call *call, const ProtobufCMessage *msg, void *user, aha_err *err)
{
    const Aha__V1__GetJobRequest *req = (const Aha__V1__GetJobRequest *)msg;
    aha_job_info j;
    AHA_TRY(aha_jobs_get(user, req->job_id, &j, err));
    aha_status st = send_job(call, &j, err);
    aha_job_info_free(&j);
    return st;
}

static aha_status h_list(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                         aha_err *err)
{
    (void)msg;
    aha_job_info *list = NULL;
    size_t n = 0;
    AHA_TRY(aha_jobs_list(user, &list, &n, err));
    Aha__V1__Job *jobs = n ? calloc(n, sizeof *jobs) : NULL;
    Aha__V1__Job **ptrs = n ? calloc(n, sizeof *ptrs) : NULL;
    json_t **docs = n ? calloc(n, sizeof *docs) : NULL;
    AHA_ASSERT(!n || (jobs && ptrs && docs));
    for (size_t i = 0; i < n; i++) {
        fill_job(&jobs[i], &list[i], &docs[i]);
        ptrs[i] = &jobs[i];
    }
    Aha__V1__ListJobsReply r = AHA__V1__LIST_JOBS_REPLY__INIT;
    r.jobs = ptrs;
    r.n_jobs = n;
    aha_status st = aha_rpc_call_send(call, &r.base, err);
    for (size_t i = 0; i < n; i++) free_job_msg(&jobs[i], docs[i]);
    free(jobs);
    free(ptrs);
    free(docs);
    aha_job_info_list_free(list, n);
    return st;
}

static aha_status h_cancel(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                           aha_err *err)
{
    const Aha__V1__CancelJobRequest *req = (const Aha__V1__CancelJobRequest *)msg;
    aha_job_info j;
    AHA_TRY(aha_jobs_cancel(user, req->job_id, &j, err));
    aha_status st = send_job(call, &j, err);
    aha_job_info_free(&j);
    return st;
}

static aha_status h_watch(aha_rpc_call *call, const ProtobufCMessage *msg, void *user,
                          aha_err *err)
{
    const Aha__V1__WatchJobRequest *req = (const Aha__V1__WatchJobRequest *)msg;
    aha_job_watcher *w = NULL;
    AHA_TRY(aha_jobs_watch_open(user, req->job_id, req->from_start, req->history_only, &w, err));
    aha_status st = AHA_OK;
    for (;;) {
        if (aha_rpc_call_cancelled(call)) {
            st = aha_errf(err, AHA_ECANCELLED, "watch of %s cancelled", req->job_id);
            break;
        }
        aha_job_event ev;
        int got = 0;
        aha_jobs_watch_next(w, WATCH_POLL_MS, &ev, &got);
        if (got < 0) break;
        if (got == 0) continue;
        Aha__V1__JobEvent m = AHA__V1__JOB_EVENT__INIT;
        m.job_id = req->job_id;
        m.type = ev.type;
        m.state = ev.state;
        m.step = ev.step;
        m.json = ev.json;
        m.message = ev.message;
        m.time = ev.time;
        st = aha_rpc_call_send(call, &m.base, err);
        aha_job_event_free(&ev);
        if (st != AHA_OK) break;
    }
    aha_jobs_watch_close(w);
    return st;
}

aha_status aha_learner_api_register(aha_rpc_server *srv, aha_jobs *jobs, aha_err *err)
{
    const ProtobufCServiceDescriptor *d = &aha__v1__learner__descriptor;
    AHA_TRY(aha_rpc_server_add_method(srv, d, "SubmitJob", AHA_RPC_UNARY, h_submit, jobs, err));
    AHA_TRY(aha_rpc_server_add_method(srv, d, "GetJob", AHA_RPC_UNARY, h_get, jobs, err));
    AHA_TRY(aha_rpc_server_add_method(srv, d, "ListJobs", AHA_RPC_UNARY, h_list, jobs, err));
    AHA_TRY(aha_rpc_server_add_method(srv, d, "CancelJob", AHA_RPC_UNARY, h_cancel, jobs, err));
    return aha_rpc_server_add_method(srv, d, "WatchJob", AHA_RPC_SERVER_STREAM, h_watch, jobs,
                                     err);
}
