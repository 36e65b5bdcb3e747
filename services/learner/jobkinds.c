/* jobkinds.c: the eval, generate, mix and pipeline job kinds (jobkinds.h).
 *
 * eval and generate sample from a checkpoint that the learner loads only to push it to the
 * rollout workers (version 0); generation and scoring go through the same code as GRPO
 * (aha__generate_all / aha__score_all in grpo.c), so what is measured is what RL optimises.
 * Evaluation itself is aha__eval_run, the held-out evaluation of training jobs: one
 * definition of pass@1 and cons@k for both.
 *
 * A pipeline runs each stage through aha_job_run with a context of its own: the stage's
 * directory JOB_DIR/stages/NN-NAME, the stage's spec with its ${stages.X.*} references
 * resolved to the recorded outputs of earlier stages, and a sink that forwards the stage's
 * events to the pipeline's watchers and mirrors its records into the pipeline's
 * metrics.jsonl / eval.jsonl (which the job server, `ahactl report` and `ahactl plot` read).
 * Those two files are rebuilt from the stage files whenever a stage ends, so a stage that
 * resumed (and dropped records after its last checkpoint) leaves no duplicate behind. */
#include "jobkinds.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/log.h"
#include "base/rng.h"
#include "checkpoint.h"
#include "encode.h"
#include "evalstats.h"
#include "grpo_math.h"
#include "pipeline.h"
#include "text/template.h"

/* seed purpose of generate's requests (grpo.c uses 1 and 2) */
enum { SEED_GENERATE = 3 };

/* aha-reward takes at most 4096 items per Score call by default */
#define SCORE_ITEMS_MAX 4096
#define GEN_CHUNK_PROMPTS 64

aha_status aha__job_output_path(const aha_job_spec *sp, const char *job_dir, char *out, size_t cap,
                                aha_err *err)
{
    if (sp->output) {
        if (snprintf(out, cap, "%s", sp->output) >= (int)cap) return aha_errf(err, AHA_EINVAL, "spec.output: path too long");
        return AHA_OK;
    }
    return aha_path_join(out, cap, job_dir, "dataset.jsonl", err);
}

/* ---- shared by eval and generate --------------------------------------------------------- */

/* The checkpoint (weights to push) and its tokenizer. */
static aha_status open_checkpoint(aha__job *j, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    const aha_learner_env *env = j->ctx->env;
    AHA_TRY(aha_backend_open(env && env->device ? env->device : "cpu", 0, &j->be, err));
    aha_status st = aha_model_open(sp->checkpoint, j->be, NULL, &j->m, err);
    if (st != AHA_OK) return aha_err_prefix(err, st, "spec.checkpoint");
    const char *p = sp->tokenizer ? sp->tokenizer : sp->checkpoint;
    if (aha_path_is_dir(p)) AHA_TRY(aha_path_join(j->tok_json, sizeof j->tok_json, p, "tokenizer.json", err));
    else if (snprintf(j->tok_json, sizeof j->tok_json, "%s", p) >= (int)sizeof j->tok_json)
        return aha_errf(err, AHA_EINVAL, "spec.tokenizer: path too long");
    st = aha_tokenizer_load(j->tok_json, &j->tok, err);
    if (st != AHA_OK) return aha_err_prefix(err, st, "spec.tokenizer");
    return AHA_OK;
}

static void report_skipped(aha__job *j, const aha_dataset_spec *spec, const aha_dataset *ds)
{
    if (ds->skipped > 0)
        aha__job_log(j, "%s: %" PRId64 " malformed lines skipped (first: %s)", spec->path, ds->skipped,
                     ds->first_skip);
}

/* eval and generate score with the components only, so any weights do; the reward service
 * wants a valid set (the spec of these kinds has none) */
static void score_weights(aha_job_spec *local)
{
    local->reward_weights.accuracy = 1;
    local->reward_weights.format = 1;
    local->reward_weights.language = 0;
}

/* A rerun of a kind without checkpoints starts over: drop what a dead run recorded. */
static aha_status drop_file(const char *path, aha_err *err)
{
    if (aha_path_exists(path) && unlink(path) != 0) return aha_errf(err, AHA_EIO, "cannot remove %s", path);
    return AHA_OK;
}

/* ---- eval --------------------------------------------------------------------------------- */

aha_status aha__eval_job(aha__job *j, aha_err *err)
{
    const aha_job_spec *orig = j->sp;
    aha_job_spec local = *orig;
    score_weights(&local);
    j->sp = &local;
    const aha_eval_spec *es = &local.eval;
    aha_status st = es->n_datasets > 0 ? AHA_OK : aha_errf(err, AHA_EINVAL, "spec.datasets: required");
    if (st == AHA_OK) st = drop_file(j->eval_path, err);
    if (st == AHA_OK) st = open_checkpoint(j, err);
    if (st == AHA_OK) {
        /* loaded here rather than lazily by aha__eval_run, to report skipped lines first */
        j->eval_sets = calloc((size_t)es->n_datasets, sizeof *j->eval_sets);
        if (!j->eval_sets) st = aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    for (int d = 0; st == AHA_OK && d < es->n_datasets; d++) {
        st = aha_dataset_load(&es->datasets[d], &j->eval_sets[d], err);
        if (st == AHA_OK) report_skipped(j, &es->datasets[d], &j->eval_sets[d]);
    }
    j->total = 1;
    aha__job_progress(j);
    if (st == AHA_OK) st = aha__job_connect(j, true, true, false, err);
    if (st == AHA_OK) st = aha__job_push(j, 0, true, false, NULL, err);
    if (st == AHA_OK) {
        aha__job_log(j, "eval of %s: %d datasets, k = %d, temperature %g, top-p %g", local.checkpoint, es->n_datasets,
                     es->k, es->sampling.temperature, es->sampling.top_p);
        st = aha__eval_run(j, es, -1, NULL, err);
    }
    if (st == AHA_OK) {
        j->step = 1;
        aha__job_progress(j);
    }
    j->sp = orig;
    return st;
}

/* ---- generate (rejection sampling) -------------------------------------------------------- */

typedef struct {
    int cap; /* prompts per chunk */
    int n;   /* samples per prompt */
    int32_t **pids;
    size_t *pn;
    char **prompts, **answers, **langs;
    aha__gsample *s;
    aha__score *sc;
    aha_gen_sample *gs;
    aha_reject_reason *verdict;
} gen_bufs;

static void gen_bufs_clear(gen_bufs *b, int m)
{
    for (int q = 0; q < m; q++) {
        free(b->pids[q]);
        free(b->prompts[q]);
        b->pids[q] = NULL;
        b->prompts[q] = NULL;
    }
    for (size_t i = 0; i < (size_t)m * (size_t)b->n; i++) {
        aha__gsample_clear(&b->s[i]);
        free(b->sc[i].answer);
        memset(&b->sc[i], 0, sizeof b->sc[i]);
    }
}

static void gen_bufs_free(gen_bufs *b)
{
    if (b->pids && b->prompts && b->s && b->sc) gen_bufs_clear(b, b->cap);
    free(b->pids);
    free(b->pn);
    free(b->prompts);
    free(b->answers);
    free(b->langs);
    free(b->s);
    free(b->sc);
    free(b->gs);
    free(b->verdict);
}

static aha_status gen_bufs_init(gen_bufs *b, int cap, int n, aha_err *err)
{
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->n = n;
    size_t c = (size_t)cap, cn = (size_t)cap * (size_t)n;
    b->pids = calloc(c, sizeof *b->pids);
    b->pn = calloc(c, sizeof *b->pn);
    b->prompts = calloc(c, sizeof *b->prompts);
    b->answers = calloc(c, sizeof *b->answers);
    b->langs = calloc(c, sizeof *b->langs);
    b->s = calloc(cn, sizeof *b->s);
    b->sc = calloc(cn, sizeof *b->sc);
    b->gs = calloc((size_t)n, sizeof *b->gs);
    b->verdict = calloc((size_t)n, sizeof *b->verdict);
    if (!b->pids || !b->pn || !b->prompts || !b->answers || !b->langs || !b->s || !b->sc || !b->gs || !b->verdict)
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    return AHA_OK;
}

/* The kept samples of one chunk's prompts [q0, q0+m) as SFT lines into f. */
static aha_status gen_filter_chunk(aha__job *j, const aha_dataset *ds, int64_t q0, int m, gen_bufs *b,
                                   const aha_filter_opts *fo, aha_filter_report *rep, FILE *f, aha_err *err)
{
    int n = b->n;
    for (int q = 0; q < m; q++) {
        const aha_example *ex = &ds->items[q0 + q];
        for (int i = 0; i < n; i++) {
            const aha__gsample *s = &b->s[(size_t)q * (size_t)n + (size_t)i];
            const aha__score *sc = &b->sc[(size_t)q * (size_t)n + (size_t)i];
            b->gs[i] = (aha_gen_sample){
                .prompt_id = ex->id,
                .prompt = ex->prompt,
                .answer = ex->answer,
                .completion = s->text ? s->text : "",
                .finish_reason = s->truncated ? "length" : "stop",
                .accuracy = sc->acc,
                .format = sc->fmt,
                .language = sc->lang,
                .error = sc->error,
                .index = i,
            };
        }
        aha_filter_group(fo, b->gs, n, b->verdict, rep);
        for (int i = 0; i < n; i++) {
            if (b->verdict[i] != AHA_REJ_KEPT) continue;
            char *line = NULL;
            aha_status st = aha_filter_sft_line(&b->gs[i], &line, err);
            if (st == AHA_EINVAL) {
                /* a completion cut inside a UTF-8 sequence cannot be an SFT target */
                aha__job_log(j, "warning: %s", err->msg);
                continue;
            }
            AHA_TRY(st);
            bool ok = fputs(line, f) >= 0 && fputc('\n', f) != EOF;
            free(line);
            if (!ok) return aha_errf(err, AHA_EIO, "writing the generated dataset failed");
        }
    }
    (void)j;
    return AHA_OK;
}

static aha_status gen_write_report(aha__job *j, const aha_filter_report *rep, const char *out_path,
                                   const aha_dataset *ds, aha_err *err)
{
    char path[4096];
    char *text = NULL, *line = NULL;
    AHA_TRY(aha_path_join(path, sizeof path, j->ctx->job_dir, "acceptance.json", err));
    aha_status st = aha_filter_report_json(rep, &text, err);
    if (st == AHA_OK) st = aha_write_file_atomic(path, text, strlen(text), err);
    if (st == AHA_OK) st = aha_filter_record_json(rep, j->sp->name, &line, err);
    json_t *o = st == AHA_OK ? json_loads(line, 0, NULL) : NULL;
    free(line);
    line = NULL;
    if (st == AHA_OK && !o) st = aha_errf(err, AHA_EINTERNAL, "generate record did not parse");
    if (st == AHA_OK) {
        json_object_set_new(o, "output", json_string(out_path));
        json_object_set_new(o, "skipped_lines", json_integer(ds->skipped));
        line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        if (!line) st = aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    if (st == AHA_OK) st = aha__job_record(j, AHA_EV_METRICS, j->step, j->metrics_path, line, err);
    json_decref(o);
    free(line);
    free(text);
    return st;
}

aha_status aha__generate_job(aha__job *j, aha_err *err)
{
    const aha_job_spec *orig = j->sp;
    aha_job_spec local = *orig;
    score_weights(&local);
    j->sp = &local;
    const aha_job_spec *sp = &local;
    char out_path[4096], tmp_path[4200];
    aha_dataset ds = {0};
    gen_bufs b;
    memset(&b, 0, sizeof b);
    FILE *f = NULL;
    int n = sp->n_samples;
    int cap = SCORE_ITEMS_MAX / n < GEN_CHUNK_PROMPTS ? SCORE_ITEMS_MAX / n : GEN_CHUNK_PROMPTS;
    if (cap < 1) cap = 1;
    aha_status st = aha__job_output_path(sp, j->ctx->job_dir, out_path, sizeof out_path, err);
    if (st == AHA_OK && snprintf(tmp_path, sizeof tmp_path, "%s.tmp", out_path) >= (int)sizeof tmp_path)
        st = aha_errf(err, AHA_EINVAL, "spec.output: path too long");
    if (st == AHA_OK) st = drop_file(j->metrics_path, err);
    if (st == AHA_OK) st = aha_dataset_load(&sp->dataset, &ds, err);
    if (st == AHA_OK) report_skipped(j, &sp->dataset, &ds);
    if (st == AHA_OK) st = open_checkpoint(j, err);
    if (st == AHA_OK) st = aha__job_connect(j, true, true, false, err);
    if (st == AHA_OK) st = aha__job_push(j, 0, true, false, NULL, err);
    if (st == AHA_OK) st = gen_bufs_init(&b, cap, n, err);
    if (st == AHA_OK) {
        f = fopen(tmp_path, "w");
        if (!f) st = aha_errf(err, AHA_EIO, "cannot create %s", tmp_path);
    }
    j->total = ds.n;
    j->step = 0;
    aha__job_progress(j);
    aha_filter_opts fo = aha_filter_opts_from_spec(sp);
    aha_filter_report rep;
    memset(&rep, 0, sizeof rep);
    if (st == AHA_OK)
        aha__job_log(j, "generate from %s: %" PRId64 " prompts x %d samples, keep <= %d each -> %s", sp->checkpoint, ds.n,
                     n, sp->keep_per_prompt, out_path);
    double t0 = aha_now_s();
    for (int64_t q0 = 0; st == AHA_OK && q0 < ds.n; q0 += cap) {
        if (aha__job_cancelled(j)) {
            st = aha_errf(err, AHA_ECANCELLED, "cancelled after %" PRId64 " of %" PRId64 " prompts", q0, ds.n);
            break;
        }
        int m = ds.n - q0 < cap ? (int)(ds.n - q0) : cap;
        for (int q = 0; st == AHA_OK && q < m; q++) {
            const aha_example *ex = &ds.items[q0 + q];
            st = aha_encode_prompt(j->tok, sp->template_text, ex->prompt, 0, &b.pids[q], &b.pn[q], err);
            if (st == AHA_OK) st = aha_template_render(sp->template_text, ex->prompt, &b.prompts[q], err);
            b.answers[q] = ex->answer;
            b.langs[q] = ex->lang;
        }
        uint64_t seed = aha_mix64(aha_mix64(sp->seed, (uint64_t)(q0 / cap)), SEED_GENERATE);
        if (st == AHA_OK) st = aha__generate_all(j, m, b.pids, b.pn, n, &sp->sampling, seed, b.s, err);
        if (st == AHA_OK) st = aha__score_all(j, m, n, b.prompts, b.answers, b.langs, b.s, b.sc, err);
        if (st == AHA_OK) st = gen_filter_chunk(j, &ds, q0, m, &b, &fo, &rep, f, err);
        gen_bufs_clear(&b, m);
        if (st != AHA_OK) break;
        j->step = q0 + m;
        aha__job_progress(j);
        aha__job_log(j, "generate: %" PRId64 "/%" PRId64 " prompts, %" PRId64 " of %" PRId64 " samples kept (%.1fs)",
                     j->step, ds.n, rep.kept, rep.samples, aha_now_s() - t0);
    }
    if (f) {
        bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
        ok = fclose(f) == 0 && ok;
        if (st == AHA_OK && !ok) st = aha_errf(err, AHA_EIO, "writing %s failed", tmp_path);
        if (st == AHA_OK && rename(tmp_path, out_path) != 0)
            st = aha_errf(err, AHA_EIO, "cannot rename %s to %s", tmp_path, out_path);
        if (st != AHA_OK) unlink(tmp_path);
    }
    if (st == AHA_OK) {
        if (rep.kept == 0) aha__job_log(j, "warning: no sample passed the filter; %s is empty", out_path);
        st = gen_write_report(j, &rep, out_path, &ds, err);
    }
    if (st == AHA_OK)
        aha__job_log(j, "generate: kept %" PRId64 " of %" PRId64 " samples (%.1f%%), %" PRId64 " of %" PRId64
                        " prompts have one; rejected: truncated %" PRId64 ", incorrect %" PRId64 ", format %" PRId64
                        ", language %" PRId64 ", duplicate %" PRId64 ", over limit %" PRId64 ", error %" PRId64,
                     rep.kept, rep.samples, rep.samples ? 100.0 * (double)rep.kept / (double)rep.samples : 0.0,
                     rep.prompts_with_kept, rep.prompts, rep.by_reason[AHA_REJ_TRUNCATED],
                     rep.by_reason[AHA_REJ_INCORRECT], rep.by_reason[AHA_REJ_FORMAT], rep.by_reason[AHA_REJ_LANGUAGE],
                     rep.by_reason[AHA_REJ_DUPLICATE], rep.by_reason[AHA_REJ_OVER_LIMIT], rep.by_reason[AHA_REJ_ERROR]);
    gen_bufs_free(&b);
    aha_dataset_free(&ds);
    j->sp = orig;
    return st;
}

/* ---- mix ---------------------------------------------------------------------------------- */

aha_status aha__mix_job(aha__job *j, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    char out_path[4096];
    aha_mix_report rep;
    memset(&rep, 0, sizeof rep);
    AHA_TRY(aha__job_output_path(sp, j->ctx->job_dir, out_path, sizeof out_path, err));
    AHA_TRY(drop_file(j->metrics_path, err));
    j->total = 1;
    aha__job_progress(j);
    AHA_TRY(aha_mix_run(sp, out_path, &rep, err));
    json_t *o = json_object();
    json_t *srcs = json_array();
    if (!o || !srcs) {
        json_decref(o);
        json_decref(srcs);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    json_object_set_new(o, "type", json_string("mix"));
    if (sp->name) json_object_set_new(o, "stage", json_string(sp->name));
    json_object_set_new(o, "total", json_integer(rep.total));
    json_object_set_new(o, "output", json_string(out_path));
    for (int i = 0; i < rep.n_sources && i < sp->n_sources; i++) {
        json_array_append_new(srcs, json_pack("{s:s, s:I, s:I, s:I}", "path", sp->sources[i].path, "available",
                                              (json_int_t)rep.available[i], "taken", (json_int_t)rep.taken[i],
                                              "skipped_lines", (json_int_t)rep.skipped[i]));
        aha__job_log(j, "mix: %s: %" PRId64 " lines taken (%" PRId64 " available)", sp->sources[i].path, rep.taken[i],
                     rep.available[i]);
        if (rep.skipped[i])
            aha__job_log(j, "mix: %s: %" PRId64 " malformed lines skipped", sp->sources[i].path, rep.skipped[i]);
    }
    json_object_set_new(o, "sources", srcs);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line) return aha_errf(err, AHA_ENOMEM, "out of memory");
    aha_status st = aha__job_record(j, AHA_EV_METRICS, 1, j->metrics_path, line, err);
    free(line);
    if (st == AHA_OK) {
        j->step = 1;
        aha__job_progress(j);
        aha__job_log(j, "mix: %" PRId64 " lines -> %s", rep.total, out_path);
    }
    return st;
}

/* ---- pipeline ----------------------------------------------------------------------------- */

typedef struct {
    aha_job_ctx *parent;
    const char *metrics_path, *eval_path; /* the pipeline's */
} stage_sink;

static void stage_emit(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message)
{
    stage_sink *s = user;
    if (json && (type == AHA_EV_METRICS || type == AHA_EV_EVAL)) {
        aha_err e = {0};
        if (aha_metrics_append(type == AHA_EV_EVAL ? s->eval_path : s->metrics_path, json, &e) != AHA_OK)
            AHA_WARN("pipeline records: %s", e.msg);
    }
    if (s->parent->emit) s->parent->emit(s->parent->user, type, step, json, message);
}

/* The pipeline's metrics.jsonl / eval.jsonl = the stage files of stages [0, upto), in order. */
static aha_status rebuild_records(aha__job *j, int upto, aha_err *err)
{
    static const char *const names[2] = {"metrics.jsonl", "eval.jsonl"};
    const char *dst[2] = {j->metrics_path, j->eval_path};
    for (int f = 0; f < 2; f++) {
        size_t len = 0, cap = 0;
        char *all = NULL;
        aha_status st = AHA_OK;
        for (int i = 0; st == AHA_OK && i < upto; i++) {
            char dir[4096], path[4200];
            st = aha_pipeline_stage_dir(j->ctx->job_dir, i, j->sp->stages[i].name, dir, sizeof dir, err);
            if (st == AHA_OK) st = aha_path_join(path, sizeof path, dir, names[f], err);
            if (st != AHA_OK || !aha_path_exists(path)) continue;
            char *text = NULL;
            size_t n = 0;
            st = aha_read_file(path, (size_t)1 << 30, &text, &n, err);
            if (st != AHA_OK) break;
            if (len + n + 2 > cap) {
                size_t nc = (len + n + 2) * 2;
                char *p = realloc(all, nc);
                if (!p) {
                    free(text);
                    st = aha_errf(err, AHA_ENOMEM, "out of memory");
                    break;
                }
                all = p;
                cap = nc;
            }
            memcpy(all + len, text, n);
            len += n;
            if (n > 0 && all[len - 1] != '\n') all[len++] = '\n';
            free(text);
        }
        if (st == AHA_OK && (len > 0 || aha_path_exists(dst[f]))) st = aha_write_file_atomic(dst[f], all ? all : "", len, err);
        free(all);
        AHA_TRY(st);
    }
    return AHA_OK;
}

static void emit_stage(aha__job *j, int i, const aha_pipeline_state *ps, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* An AHA_EV_STAGE event: message = "NAME (KIND, i/n): what", json = the whole pipeline state
 * (what `ahactl watch` draws with aha_pipeline_progress). */
static void emit_stage(aha__job *j, int i, const aha_pipeline_state *ps, const char *fmt, ...)
{
    char what[600], msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof msg, "%s (%s, %d/%d): %s", ps->stages[i].name, aha_job_kind_name(ps->stages[i].kind), i + 1,
             ps->n, what);
    AHA_INFO("job %s: stage %s", j->ctx->job_id ? j->ctx->job_id : "?", msg);
    char *state = NULL;
    aha_err e = {0};
    if (aha_pipeline_state_json(ps, &state, &e) != AHA_OK) state = NULL;
    if (j->ctx->emit) j->ctx->emit(j->ctx->user, AHA_EV_STAGE, i, state, msg);
    free(state);
}

/* The output the finished stage i recorded: its last checkpoint (training kinds) or its
 * dataset (generate, mix). */
static aha_status stage_outputs(const aha_job_spec *stage, const char *dir, char *ckpt, size_t ccap, char *data,
                                size_t dcap, aha_err *err)
{
    ckpt[0] = data[0] = 0;
    switch (stage->kind) {
    case AHA_JOB_SFT:
    case AHA_JOB_DISTILL:
    case AHA_JOB_GRPO: {
        aha_status st = aha_ckpt_latest(dir, ckpt, ccap, err);
        if (st == AHA_ENOTFOUND) return aha_errf(err, AHA_EINTERNAL, "stage %s finished without a checkpoint", stage->name);
        return st;
    }
    case AHA_JOB_GENERATE:
    case AHA_JOB_MIX: return aha__job_output_path(stage, dir, data, dcap, err);
    default: return AHA_OK;
    }
}

static aha_status save_state(aha__job *j, const aha_pipeline_state *ps, const char *path, aha_err *err)
{
    aha_status st = aha_pipeline_state_save(ps, path, err);
    if (st != AHA_OK) aha__job_log(j, "error: cannot save %s: %s", path, err->msg);
    return st;
}

aha_status aha__pipeline_job(aha__job *j, aha_err *err)
{
    const aha_job_spec *sp = j->sp;
    char state_path[4096];
    aha_pipeline_state ps;
    memset(&ps, 0, sizeof ps);
    AHA_TRY(aha_path_join(state_path, sizeof state_path, j->ctx->job_dir, "pipeline.json", err));
    bool resumed = aha_path_exists(state_path);
    aha_status st = resumed ? aha_pipeline_state_load(state_path, sp, &ps, err) : aha_pipeline_state_init(sp, &ps, err);
    if (st != AHA_OK) return st;
    int first = aha_pipeline_next_stage(&ps);
    if (resumed) aha__job_log(j, "pipeline resumed: %d of %d stages done", first < 0 ? ps.n : first, ps.n);
    st = save_state(j, &ps, state_path, err);
    /* the pipeline's records: those of the done stages, then the live ones */
    if (st == AHA_OK) st = rebuild_records(j, first < 0 ? ps.n : first, err);
    stage_sink sink = {j->ctx, j->metrics_path, j->eval_path};
    for (int i = 0; st == AHA_OK && i < ps.n; i++) {
        aha_job_spec *stage = &sp->stages[i];
        if (ps.stages[i].status == AHA_STAGE_DONE) {
            emit_stage(j, i, &ps, "done earlier, skipped");
            continue;
        }
        if (aha__job_cancelled(j)) {
            st = aha_errf(err, AHA_ECANCELLED, "cancelled before stage %s", stage->name);
            break;
        }
        char dir[4096], spec_path[4200];
        st = aha_pipeline_stage_dir(j->ctx->job_dir, i, stage->name, dir, sizeof dir, err);
        if (st == AHA_OK) st = aha_mkdirs(dir, err);
        /* in place: the references are replaced by the outputs of done stages, which a
         * rerun resolves to the same strings (so the stage's spec hash, and its resume, hold) */
        if (st == AHA_OK) {
            st = aha_job_spec_resolve(stage, aha_pipeline_ref, &ps, err);
            if (st != AHA_OK) aha_err_prefix(err, st, "stage %s", stage->name);
        }
        char *norm = NULL;
        if (st == AHA_OK) st = aha_job_spec_to_json(stage, &norm, err);
        if (st == AHA_OK) st = aha_path_join(spec_path, sizeof spec_path, dir, "spec.json", err);
        if (st == AHA_OK) st = aha_write_file_atomic(spec_path, norm, strlen(norm), err);
        free(norm);
        if (st != AHA_OK) break;
        aha_pipeline_stage_start(&ps, i, aha_wall_s());
        AHA_TRY(save_state(j, &ps, state_path, err));
        emit_stage(j, i, &ps, "started in %s", dir);
        char sub_id[512];
        snprintf(sub_id, sizeof sub_id, "%s/%s", j->ctx->job_id ? j->ctx->job_id : "pipeline", stage->name);
        aha_job_ctx sub = {
            .job_id = sub_id,
            .job_dir = dir,
            .spec = stage,
            .env = j->ctx->env,
            .emit = stage_emit,
            .user = &sink,
            .cancel = j->ctx->cancel,
            .progress_step = j->ctx->progress_step,
            .progress_total = j->ctx->progress_total,
        };
        aha_err e2 = {0};
        double t0 = aha_now_s();
        aha_status s2 = aha_job_run(&sub, &e2);
        char ckpt[4096], data[4096];
        if (s2 == AHA_OK) s2 = stage_outputs(stage, dir, ckpt, sizeof ckpt, data, sizeof data, &e2);
        if (s2 == AHA_OK) {
            st = aha_pipeline_stage_done(&ps, i, ckpt[0] ? ckpt : NULL, data[0] ? data : NULL, aha_wall_s(), err);
            if (st == AHA_OK) st = save_state(j, &ps, state_path, err);
            if (st == AHA_OK) emit_stage(j, i, &ps, "done in %.1fs%s%s", aha_now_s() - t0, ckpt[0] || data[0] ? " -> " : "",
                                         ckpt[0] ? ckpt : data);
        } else if (s2 == AHA_ECANCELLED) {
            /* an interrupted stage is pending again: the next run resumes it */
            ps.stages[i].status = AHA_STAGE_PENDING;
            (void)save_state(j, &ps, state_path, err);
            emit_stage(j, i, &ps, "cancelled");
            *err = e2;
            st = s2;
        } else {
            (void)aha_pipeline_stage_failed(&ps, i, aha_err_msg(&e2), aha_wall_s(), err);
            (void)save_state(j, &ps, state_path, err);
            emit_stage(j, i, &ps, "failed: %s", aha_err_msg(&e2));
            *err = e2;
            st = aha_err_prefix(err, s2, "stage %s (%s)", stage->name, aha_job_kind_name(stage->kind));
        }
        aha_err e3 = {0};
        if (rebuild_records(j, i + 1, &e3) != AHA_OK) aha__job_log(j, "warning: pipeline records: %s", e3.msg);
    }
    if (st == AHA_OK) aha__job_log(j, "pipeline: all %d stages done", ps.n);
    aha_pipeline_state_free(&ps);
    return st;
}
