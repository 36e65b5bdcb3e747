/* pipeline.c: pipeline state, stage directories and reference resolution (pipeline.h). */
#include "pipeline.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"

static const char *const status_names[AHA_STAGE_STATUS_COUNT] = {"pending", "running", "done",
                                                                 "failed"};

const char *aha_stage_status_name(aha_stage_status s)
{
    return (unsigned)s < AHA_STAGE_STATUS_COUNT ? status_names[s] : "?";
}

static void stage_clear(aha_stage_state *s)
{
    free(s->name);
    free(s->checkpoint);
    free(s->dataset);
    free(s->error);
    memset(s, 0, sizeof *s);
}

void aha_pipeline_state_free(aha_pipeline_state *st)
{
    if (!st) return;
    for (int i = 0; i < st->n; i++) stage_clear(&st->stages[i]);
    free(st->stages);
    memset(st, 0, sizeof *st);
}

aha_status aha_pipeline_state_init(const aha_job_spec *p, aha_pipeline_state *st, aha_err *err)
{
    memset(st, 0, sizeof *st);
    if (p->kind != AHA_JOB_PIPELINE || p->n_stages < 1)
        return aha_errf(err, AHA_EINVAL, "pipeline state: the spec is not a pipeline");
    st->stages = calloc((size_t)p->n_stages, sizeof *st->stages);
    if (!st->stages) return aha_errf(err, AHA_ENOMEM, "pipeline state: out of memory");
    st->n = p->n_stages;
    for (int i = 0; i < p->n_stages; i++) {
        st->stages[i].kind = p->stages[i].kind;
        if (!(st->stages[i].name = strdup(p->stages[i].name))) {
            aha_pipeline_state_free(st);
            return aha_errf(err, AHA_ENOMEM, "pipeline state: out of memory");
        }
    }
    return AHA_OK;
}

static aha_status set_str(char **dst, const char *v, aha_err *err)
{
    free(*dst);
    *dst = NULL;
    if (!v) return AHA_OK;
    *dst = strdup(v);
    return *dst ? AHA_OK : aha_errf(err, AHA_ENOMEM, "pipeline state: out of memory");
}

int aha_pipeline_next_stage(const aha_pipeline_state *st)
{
    for (int i = 0; i < st->n; i++)
        if (st->stages[i].status != AHA_STAGE_DONE) return i;
    return -1;
}

void aha_pipeline_stage_start(aha_pipeline_state *st, int i, double now)
{
    AHA_ASSERT(i >= 0 && i < st->n);
    aha_stage_state *s = &st->stages[i];
    s->status = AHA_STAGE_RUNNING;
    s->started = now;
    s->finished = 0;
    free(s->error);
    s->error = NULL;
}

aha_status aha_pipeline_stage_done(aha_pipeline_state *st, int i, const char *checkpoint,
                                   const char *dataset, double now, aha_err *err)
{
    AHA_ASSERT(i >= 0 && i < st->n);
    aha_stage_state *s = &st->stages[i];
    AHA_TRY(set_str(&s->checkpoint, checkpoint, err));
    AHA_TRY(set_str(&s->dataset, dataset, err));
    s->status = AHA_STAGE_DONE;
    s->finished = now;
    return AHA_OK;
}

aha_status aha_pipeline_stage_failed(aha_pipeline_state *st, int i, const char *error, double now,
                                     aha_err *err)
{
    AHA_ASSERT(i >= 0 && i < st->n);
    aha_stage_state *s = &st->stages[i];
    AHA_TRY(set_str(&s->error, error ? error : "failed", err));
    s->status = AHA_STAGE_FAILED;
    s->finished = now;
    return AHA_OK;
}

aha_status aha_pipeline_stage_dir(const char *job_dir, int i, const char *name, char *out,
                                  size_t cap, aha_err *err)
{
    int n = snprintf(out, cap, "%s/stages/%02d-%s", job_dir, i + 1, name);
    if (n < 0 || (size_t)n >= cap)
        return aha_errf(err, AHA_ELIMIT, "stage directory of \"%s\" is longer than %zu bytes", name,
                        cap);
    return AHA_OK;
}

aha_status aha_pipeline_ref(void *ctx, const char *stage, aha_job_ref_kind what, char **out,
                            aha_err *err)
{
    const aha_pipeline_state *st = ctx;
    *out = NULL;
    for (int i = 0; i < st->n; i++) {
        const aha_stage_state *s = &st->stages[i];
        if (strcmp(s->name, stage) != 0) continue;
        const char *v = what == AHA_REF_CHECKPOINT ? s->checkpoint : s->dataset;
        const char *w = what == AHA_REF_CHECKPOINT ? "checkpoint" : "dataset";
        if (s->status != AHA_STAGE_DONE)
            return aha_errf(err, AHA_EPRECOND, "${stages.%s.%s}: stage \"%s\" is %s, not done", stage,
                            w, stage, status_names[s->status]);
        if (!v)
            return aha_errf(err, AHA_EPRECOND, "${stages.%s.%s}: stage \"%s\" recorded no %s",
                            stage, w, stage, w);
        *out = strdup(v);
        return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    return aha_errf(err, AHA_ENOTFOUND, "${stages.%s...}: no stage named \"%s\"", stage, stage);
}

aha_status aha_pipeline_state_json(const aha_pipeline_state *st, char **out, aha_err *err)
{
    *out = NULL;
    json_t *arr = json_array();
    bool oom = !arr;
    for (int i = 0; !oom && i < st->n; i++) {
        const aha_stage_state *s = &st->stages[i];
        json_t *o = json_pack("{s:s, s:s, s:s}", "name", s->name, "kind", aha_job_kind_name(s->kind),
                              "status", status_names[s->status]);
        if (!o) {
            oom = true;
            break;
        }
        if (s->checkpoint) oom |= json_object_set_new(o, "checkpoint", json_string(s->checkpoint)) != 0;
        if (s->dataset) oom |= json_object_set_new(o, "dataset", json_string(s->dataset)) != 0;
        if (s->error) oom |= json_object_set_new(o, "error", json_string(s->error)) != 0;
        if (s->started > 0) oom |= json_object_set_new(o, "started", json_real(s->started)) != 0;
        if (s->finished > 0) oom |= json_object_set_new(o, "finished", json_real(s->finished)) != 0;
        oom |= json_array_append_new(arr, o) != 0;
    }
    json_t *root = oom ? NULL : json_pack("{s:O}", "stages", arr);
    json_decref(arr);
    if (root) *out = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    return *out ? AHA_OK : aha_errf(err, AHA_ENOMEM, "pipeline state: out of memory");
}

aha_status aha_pipeline_state_save(const aha_pipeline_state *st, const char *path, aha_err *err)
{
    char *text;
    AHA_TRY(aha_pipeline_state_json(st, &text, err));
    aha_status s = aha_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return s;
}

static const char *opt_str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

aha_status aha_pipeline_state_load(const char *path, const aha_job_spec *p, aha_pipeline_state *st,
                                   aha_err *err)
{
    AHA_TRY(aha_pipeline_state_init(p, st, err));
    char *text;
    size_t len;
    aha_status s = aha_read_file(path, 1 << 24, &text, &len, err);
    if (s != AHA_OK) {
        aha_pipeline_state_free(st);
        return s;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    json_t *arr = json_object_get(root, "stages");
    if (!json_is_array(arr)) {
        s = aha_errf(err, AHA_EFORMAT, "%s: not a pipeline state (%s)", path,
                     root ? "no stages array" : jerr.text);
        goto out;
    }
    if ((int)json_array_size(arr) != st->n) {
        s = aha_errf(err, AHA_EPRECOND, "%s: %zu stages, the spec has %d", path,
                     json_array_size(arr), st->n);
        goto out;
    }
    for (int i = 0; i < st->n && s == AHA_OK; i++) {
        json_t *o = json_array_get(arr, i);
        aha_stage_state *ss = &st->stages[i];
        const char *name = opt_str(o, "name"), *kind = opt_str(o, "kind"), *status = opt_str(o, "status");
        if (!name || strcmp(name, ss->name) != 0 || !kind ||
            strcmp(kind, aha_job_kind_name(ss->kind)) != 0) {
            s = aha_errf(err, AHA_EPRECOND, "%s: stage %d is \"%s\" (%s), the spec says \"%s\" (%s)",
                         path, i, name ? name : "?", kind ? kind : "?", ss->name,
                         aha_job_kind_name(ss->kind));
            break;
        }
        int k = -1;
        for (int j = 0; status && j < AHA_STAGE_STATUS_COUNT; j++)
            if (strcmp(status, status_names[j]) == 0) k = j;
        if (k < 0) {
            s = aha_errf(err, AHA_EFORMAT, "%s: stage \"%s\": bad status", path, ss->name);
            break;
        }
        /* a stage caught running was interrupted: it runs again */
        ss->status = k == AHA_STAGE_RUNNING ? AHA_STAGE_PENDING : (aha_stage_status)k;
        s = set_str(&ss->checkpoint, opt_str(o, "checkpoint"), err);
        if (s == AHA_OK) s = set_str(&ss->dataset, opt_str(o, "dataset"), err);
        if (s == AHA_OK) s = set_str(&ss->error, opt_str(o, "error"), err);
        json_t *t = json_object_get(o, "started");
        ss->started = json_is_number(t) ? json_number_value(t) : 0;
        t = json_object_get(o, "finished");
        ss->finished = json_is_number(t) ? json_number_value(t) : 0;
    }
out:
    json_decref(root);
    if (s != AHA_OK) aha_pipeline_state_free(st);
    return s;
}
