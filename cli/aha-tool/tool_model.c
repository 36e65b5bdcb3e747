/* tool_model.c: the model subcommands of aha-tool.
 *   logprobs      input_ids [B,T] -> token_logprobs [B,T-1] (+ logits [B,T,V] with --logits)
 *   grpo-grad     GRPO loss (DESIGN.md Eq. 1) and grad.<name> for every parameter
 *   sft-grad      masked mean cross-entropy and its gradients
 *   init-model    a random model (config.json + model.safetensors) transformers can load
 *   demo-logprobs per-token logprobs of a tokenised sentence
 * Input tensors are named as in tests/fixtures (tests/fixtures/make_fixtures.py writes them). Bad
 * arguments or files: one line on stderr, exit status 2; other failures exit 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/fs.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "text/tokenizer.h"
#include "tool.h"

typedef struct {
    const char *cmd;
    const char *model, *input, *output, *config, *out, *device, *text, *tokenizer;
    long long seed;
    int threads;
    int logits;
} opts;

static int fail(const char *cmd, aha_status st, const aha_err *err)
{
    fprintf(stderr, "aha-tool %s: %s\n", cmd, aha_err_msg(err));
    /* outside input that is wrong exits 2; the machine failing exits 1 */
    return st == AHA_ENOMEM || st == AHA_EDEVICE || st == AHA_EINTERNAL ? 1 : 2;
}

static int usage_error(const char *cmd, const char *msg, const char *arg)
{
    fprintf(stderr, "aha-tool %s: %s%s%s\n", cmd, msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

/* --flag VALUE pairs; the allowed flags are given as a string of names. */
static int parse(int argc, char **argv, const char *allowed, opts *o)
{
    memset(o, 0, sizeof *o);
    o->cmd = argv[0];
    o->device = "cpu";
    o->seed = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) return usage_error(o->cmd, "unexpected argument", a);
        char key[40];
        snprintf(key, sizeof key, " %s ", a + 2);
        if (!strstr(allowed, key)) return usage_error(o->cmd, "unknown flag", a);
        if (strcmp(a, "--logits") == 0) {
            o->logits = 1;
            continue;
        }
        if (i + 1 >= argc) return usage_error(o->cmd, "missing value for", a);
        const char *v = argv[++i];
        if (strcmp(a, "--model") == 0) o->model = v;
        else if (strcmp(a, "--input") == 0) o->input = v;
        else if (strcmp(a, "--output") == 0) o->output = v;
        else if (strcmp(a, "--config") == 0) o->config = v;
        else if (strcmp(a, "--out") == 0) o->out = v;
        else if (strcmp(a, "--device") == 0) o->device = v;
        else if (strcmp(a, "--text") == 0) o->text = v;
        else if (strcmp(a, "--tokenizer") == 0) o->tokenizer = v;
        else if (strcmp(a, "--seed") == 0 || strcmp(a, "--threads") == 0) {
            char *end = NULL;
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || x < 0) return usage_error(o->cmd, "expected a non-negative integer for", a);
            if (a[2] == 's') o->seed = x;
            else o->threads = x > 256 ? 256 : (int)x;
        }
    }
    return 0;
}

static int need(const opts *o, const char *v, const char *flag)
{
    if (v) return 0;
    return usage_error(o->cmd, "missing", flag);
}

/* ---- shared pieces ------------------------------------------------------------------------ */

typedef struct {
    aha_backend *be;
    aha_model *m;
    aha_st_file *in;
    int32_t *ids, *cu;
    int B, T;
    aha_batch batch;
} session;

static void session_end(session *s)
{
    aha_model_free(s->m);
    aha_backend_free(s->be);
    aha_st_close(s->in);
    free(s->ids);
    free(s->cu);
}

static aha_status open_model(const opts *o, session *s, aha_err *err)
{
    AHA_TRY(aha_backend_open(o->device, o->threads, &s->be, err));
    aha_model_opts mo = {.training = true};
    return aha_model_open(o->model, s->be, &mo, &s->m, err);
}

/* input_ids (I32 or I64, [B, T]) as a packed batch of B sequences of T tokens */
static aha_status read_ids(session *s, const char *path, aha_err *err)
{
    AHA_TRY(aha_st_open(path, &s->in, err));
    const aha_st_tensor *t = aha_st_find(s->in, "input_ids");
    if (!t) return aha_errf(err, AHA_EFORMAT, "%s: no tensor 'input_ids'", path);
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 2 || t->numel > (1 << 26))
        return aha_errf(err, AHA_EFORMAT, "%s: 'input_ids' must be [B, T] with B >= 1, T >= 2", path);
    if (t->dtype != AHA_DT_I32 && t->dtype != AHA_DT_I64)
        return aha_errf(err, AHA_EFORMAT, "%s: 'input_ids' must be I32 or I64, not %s", path,
                        aha_dtype_name(t->dtype));
    s->B = (int)t->shape[0];
    s->T = (int)t->shape[1];
    s->ids = malloc((size_t)t->numel * sizeof(int32_t));
    s->cu = malloc((size_t)(s->B + 1) * sizeof(int32_t));
    if (!s->ids || !s->cu) return aha_errf(err, AHA_ENOMEM, "out of memory");
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t v;
        if (t->dtype == AHA_DT_I32) {
            int32_t x;
            memcpy(&x, (const char *)t->data + i * 4, 4);
            v = x;
        } else {
            memcpy(&v, (const char *)t->data + i * 8, 8);
        }
        if (v < 0 || v > INT32_MAX) return aha_errf(err, AHA_EFORMAT, "%s: input_ids[%lld] = %lld", path, (long long)i, (long long)v);
        s->ids[i] = (int32_t)v;
    }
    for (int b = 0; b <= s->B; b++) s->cu[b] = b * s->T;
    s->batch = (aha_batch){s->ids, s->cu, s->B};
    return aha_batch_check(s->m, &s->batch, err);
}

/* A float tensor of exactly n elements (any float dtype), malloc'd. */
static aha_status read_f32(const session *s, const char *path, const char *name, int64_t n, float **out,
                           aha_err *err)
{
    *out = NULL;
    const aha_st_tensor *t = aha_st_find(s->in, name);
    if (!t) return aha_errf(err, AHA_EFORMAT, "%s: no tensor '%s'", path, name);
    if (t->numel != n)
        return aha_errf(err, AHA_EFORMAT, "%s: '%s' has %lld elements, expected %lld", path, name,
                        (long long)t->numel, (long long)n);
    float *x = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!x) return aha_errf(err, AHA_ENOMEM, "out of memory");
    aha_status st = aha_st_to_f32(t, x, n, err);
    if (st != AHA_OK) {
        free(x);
        return aha_err_prefix(err, st, "%s: '%s'", path, name);
    }
    *out = x;
    return AHA_OK;
}

/* loss + grad.<name> for every parameter, then save */
static aha_status write_grads(session *s, aha_train *t, float loss, const char *path, aha_err *err)
{
    int64_t total = aha_model_numel(s->m);
    float *host = malloc((size_t)total * sizeof(float));
    aha_st_writer *w = aha_st_writer_new();
    aha_status st = host && w ? AHA_OK : aha_errf(err, AHA_ENOMEM, "out of memory");
    int64_t one = 1;
    if (st == AHA_OK) st = aha_st_writer_add(w, "loss", AHA_DT_F32, 1, &one, &loss, err);
    char name[160];
    for (int i = 0; st == AHA_OK && i < aha_model_n_params(s->m); i++) {
        const aha_param_info *p = aha_model_param(s->m, i);
        float *dst = host + aha_model_param_offset(s->m, i);
        st = aha_train_grad_get_f32(t, i, dst, err);
        snprintf(name, sizeof name, "grad.%s", p->name);
        if (st == AHA_OK) st = aha_st_writer_add(w, name, AHA_DT_F32, p->ndim, p->shape, dst, err);
    }
    if (st == AHA_OK) st = aha_st_writer_save(w, path, err);
    aha_st_writer_free(w);
    free(host);
    return st;
}

/* ---- logprobs -------------------------------------------------------------------------------- */

int tool_logprobs(int argc, char **argv)
{
    opts o;
    int rc = parse(argc, argv, " model input output logits device threads ", &o);
    if (rc || (rc = need(&o, o.model, "--model")) || (rc = need(&o, o.input, "--input")) ||
        (rc = need(&o, o.output, "--output")))
        return rc;
    session s = {0};
    aha_err err = {0};
    aha_status st = open_model(&o, &s, &err);
    if (st == AHA_OK) st = read_ids(&s, o.input, &err);
    float *lp = NULL, *logits = NULL;
    aha_st_writer *w = NULL;
    if (st == AHA_OK) {
        int V = aha_model_cfg(s.m)->vocab_size;
        lp = malloc((size_t)s.B * (s.T - 1) * sizeof(float));
        if (o.logits) logits = malloc((size_t)s.B * s.T * V * sizeof(float));
        w = aha_st_writer_new();
        if (!lp || (o.logits && !logits) || !w) st = aha_errf(&err, AHA_ENOMEM, "out of memory");
        if (st == AHA_OK) st = aha_model_token_logprobs(s.m, &s.batch, lp, logits, &err);
        int64_t sh[3] = {s.B, s.T - 1, 0};
        if (st == AHA_OK) st = aha_st_writer_add(w, "token_logprobs", AHA_DT_F32, 2, sh, lp, &err);
        int64_t shl[3] = {s.B, s.T, V};
        if (st == AHA_OK && o.logits) st = aha_st_writer_add(w, "logits", AHA_DT_F32, 3, shl, logits, &err);
        if (st == AHA_OK) st = aha_st_writer_save(w, o.output, &err);
    }
    aha_st_writer_free(w);
    free(lp);
    free(logits);
    session_end(&s);
    return st == AHA_OK ? 0 : fail(o.cmd, st, &err);
}

/* ---- gradients ------------------------------------------------------------------------------ */

static int grad_command(int argc, char **argv, int grpo)
{
    opts o;
    int rc = parse(argc, argv, " model input output device threads ", &o);
    if (rc || (rc = need(&o, o.model, "--model")) || (rc = need(&o, o.input, "--input")) ||
        (rc = need(&o, o.output, "--output")))
        return rc;
    session s = {0};
    aha_err err = {0};
    aha_train *t = NULL;
    float *mask = NULL, *old = NULL, *ref = NULL, *adv = NULL, *eps = NULL, *beta = NULL;
    aha_status st = open_model(&o, &s, &err);
    if (st == AHA_OK) st = read_ids(&s, o.input, &err);
    int64_t nlp = (int64_t)s.B * (s.T - 1);
    if (st == AHA_OK) st = read_f32(&s, o.input, grpo ? "completion_mask" : "loss_mask", nlp, &mask, &err);
    if (st == AHA_OK) st = aha_train_create(s.m, &t, &err);
    float loss = 0;
    if (st == AHA_OK && grpo) {
        st = read_f32(&s, o.input, "old_logprobs", nlp, &old, &err);
        if (st == AHA_OK) st = read_f32(&s, o.input, "ref_logprobs", nlp, &ref, &err);
        if (st == AHA_OK) st = read_f32(&s, o.input, "advantages", s.B, &adv, &err);
        if (st == AHA_OK) st = read_f32(&s, o.input, "epsilon", 1, &eps, &err);
        if (st == AHA_OK) st = read_f32(&s, o.input, "beta", 1, &beta, &err);
        if (st == AHA_OK) {
            aha_grpo_args ga = {.mask = mask, .old_logprobs = old, .ref_logprobs = ref, .advantages = adv,
                                .eps_low = eps[0], .eps_high = eps[0], .beta = beta[0],
                                .norm = AHA_GRPO_NORM_SEQ, .scale = 1.0f / (float)s.B};
            aha_grpo_stats gs;
            st = aha_model_grpo_backward(s.m, t, &s.batch, &ga, &gs, NULL, &err);
            loss = (float)gs.loss;
        }
    } else if (st == AHA_OK) {
        double msum = 0, l = 0;
        for (int64_t i = 0; i < nlp; i++) msum += mask[i];
        if (msum <= 0) st = aha_errf(&err, AHA_EFORMAT, "%s: loss_mask selects no token", o.input);
        if (st == AHA_OK) st = aha_model_sft_backward(s.m, t, &s.batch, mask, (float)(1.0 / msum), &l, &err);
        loss = (float)l;
    }
    if (st == AHA_OK) st = write_grads(&s, t, loss, o.output, &err);
    free(mask);
    free(old);
    free(ref);
    free(adv);
    free(eps);
    free(beta);
    aha_train_free(t);
    session_end(&s);
    return st == AHA_OK ? 0 : fail(o.cmd, st, &err);
}

int tool_grpo_grad(int argc, char **argv) { return grad_command(argc, argv, 1); }
int tool_sft_grad(int argc, char **argv) { return grad_command(argc, argv, 0); }

/* ---- init-model ---------------------------------------------------------------------------- */

int tool_init_model(int argc, char **argv)
{
    opts o;
    int rc = parse(argc, argv, " config out seed ", &o);
    if (rc || (rc = need(&o, o.config, "--config")) || (rc = need(&o, o.out, "--out"))) return rc;
    if (o.seed < 0) return usage_error(o.cmd, "missing", "--seed");
    aha_err err = {0};
    char *json = NULL;
    size_t len = 0;
    aha_model_config cfg;
    aha_backend *be = NULL;
    aha_model *m = NULL;
    aha_status st = aha_read_file(o.config, 1 << 20, &json, &len, &err);
    if (st == AHA_OK) st = aha_config_parse(json, len, o.config, &cfg, &err);
    if (st == AHA_OK) st = aha_backend_open("cpu", 0, &be, &err);
    if (st == AHA_OK) st = aha_model_init_random(&cfg, (uint64_t)o.seed, be, NULL, &m, &err);
    if (st == AHA_OK) st = aha_model_save(m, o.out, AHA_DT_F32, 0, &err);
    long long numel = m ? (long long)aha_model_param_count(m) : 0;
    aha_model_free(m);
    aha_backend_free(be);
    free(json);
    if (st != AHA_OK) return fail(o.cmd, st, &err);
    printf("%s: %lld parameters, seed %lld\n", o.out, numel, o.seed);
    return 0;
}

/* ---- demo-logprobs ---------------------------------------------------------------------- */

/* token text for a table cell: printable ASCII as is, other bytes as \xNN */
static void print_token(const char *b, size_t n)
{
    char cell[64];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < sizeof cell; i++) {
        unsigned char ch = (unsigned char)b[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') cell[o++] = (char)ch;
        else o += (size_t)snprintf(cell + o, sizeof cell - o, "\\x%02x", ch);
    }
    cell[o] = 0;
    printf(" %-16s", cell);
}

int tool_demo_logprobs(int argc, char **argv)
{
    opts o;
    int rc = parse(argc, argv, " model text tokenizer device threads ", &o);
    if (rc || (rc = need(&o, o.model, "--model"))) return rc;
    const char *text = o.text ? o.text : "The quick brown fox jumps over the lazy dog.";
    session s = {0};
    aha_err err = {0};
    aha_tokenizer *tok = NULL;
    int32_t *ids = NULL, cu[2] = {0, 0};
    size_t n = 0;
    float *lp = NULL;
    aha_status st = open_model(&o, &s, &err);
    /* the model's own tokenizer when it has one; else bytes as ids, which is what the
     * byte-level vocabulary of the tiny demo models assigns (id = byte value) */
    char tpath[4096];
    const char *tp = o.tokenizer;
    if (!tp && st == AHA_OK && aha_path_join(tpath, sizeof tpath, o.model, "tokenizer.json", NULL) == AHA_OK &&
        aha_path_exists(tpath))
        tp = tpath;
    if (st == AHA_OK && tp) {
        st = aha_tokenizer_load(tp, &tok, &err);
        if (st == AHA_OK) st = aha_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err);
    } else if (st == AHA_OK) {
        n = strlen(text);
        ids = malloc(n ? n * sizeof *ids : 1);
        if (!ids) st = aha_errf(&err, AHA_ENOMEM, "out of memory");
        for (size_t i = 0; st == AHA_OK && i < n; i++) ids[i] = (unsigned char)text[i];
    }
    if (st == AHA_OK && (n < 2 || n > 4096))
        st = aha_errf(&err, AHA_EINVAL, "--text must give 2 to 4096 tokens, not %zu", n);
    if (st == AHA_OK) {
        cu[1] = (int32_t)n;
        lp = malloc(n * sizeof *lp);
        aha_batch b = {ids, cu, 1};
        st = lp ? aha_model_token_logprobs(s.m, &b, lp, NULL, &err) : aha_errf(&err, AHA_ENOMEM, "out of memory");
    }
    if (st == AHA_OK) {
        const aha_model_config *c = aha_model_cfg(s.m);
        printf("model %s (%s, %d layers, hidden %d, vocab %d) on %s\n", o.model, c->model_type, c->num_layers,
               c->hidden_size, c->vocab_size, s.be->device);
        printf("text \"%s\" -> %zu tokens (%s)\n", text, n, tok ? tp : "byte-level ids");
        printf("%4s %8s %-16s %12s\n", "pos", "id", " token", "logprob");
        double sum = 0;
        for (size_t i = 1; i < n; i++) {
            printf("%4zu %8d", i, ids[i]);
            size_t bl = 1;
            const char *bytes = tok ? aha_tokenizer_token_bytes(tok, ids[i], &bl) : (const char *)&text[i];
            print_token(bytes ? bytes : "?", bytes ? bl : 1);
            printf(" %12.6f\n", (double)lp[i - 1]);
            sum += lp[i - 1];
        }
        printf("mean logprob %.6f (a uniform model would give %.6f)\n", sum / (double)(n - 1),
               -log((double)c->vocab_size));
    }
    free(ids);
    free(lp);
    aha_tokenizer_free(tok);
    session_end(&s);
    return st == AHA_OK ? 0 : fail(o.cmd, st, &err);
}
