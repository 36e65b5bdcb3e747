/* grpo_math.c: advantages (Eq. 3), lr schedule and per-step metrics (grpo_math.h).
 * Sums run in double so a step's statistics do not depend on the group order beyond
 * rounding of the last bit. */
#include "grpo_math.h"

#include "base/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int64_t aha_grpo_advantages(const double *rewards, int64_t n_groups, int G, bool scale_std,
                            double std_eps, float *adv, bool *all_equal)
{
    AHA_ASSERT(G >= 1 && n_groups >= 0);
    int64_t n_eq = 0;
    for (int64_t g = 0; g < n_groups; g++) {
        const double *r = rewards + g * G;
        float *a = adv + g * G;
        bool eq = true;
        for (int i = 1; i < G; i++)
            if (r[i] != r[0]) eq = false;
        if (all_equal) all_equal[g] = eq;
        if (eq) {
            /* explicit: mean of equal values can differ from them in the last bit */
            for (int i = 0; i < G; i++) a[i] = 0.0f;
            n_eq++;
            continue;
        }
        double mean = 0;
        for (int i = 0; i < G; i++) mean += r[i];
        mean /= G;
        double var = 0;
        for (int i = 0; i < G; i++) var += (r[i] - mean) * (r[i] - mean);
        double sd = sqrt(var / (G - 1)); /* G >= 2 here: a group of one is all-equal */
        double den = scale_std ? sd + std_eps : 1.0;
        for (int i = 0; i < G; i++) a[i] = (float)((r[i] - mean) / den);
    }
    return n_eq;
}

double aha_lr_at(const aha_optim_spec *o, int64_t step, int64_t total_steps)
{
    int64_t w = o->warmup_steps;
    if (step < 0) step = 0;
    if (w > 0 && step < w) return o->lr * (double)(step + 1) / (double)w;
    if (o->schedule == AHA_SCHED_CONSTANT) return o->lr;
    int64_t span = total_steps - w;
    double progress = span > 0 ? (double)(step - w) / (double)span : 1.0;
    if (progress > 1) progress = 1;
    double f = o->schedule == AHA_SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * progress)) : 1.0 - progress;
    return o->lr * (o->min_lr_ratio + (1.0 - o->min_lr_ratio) * f);
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

bool aha_text_has_any_word(const char *text, size_t len, char *const *words, int n_words)
{
    if (!text) return false;
    for (int w = 0; w < n_words; w++) {
        size_t wl = strlen(words[w]);
        if (wl == 0 || wl > len) continue;
        for (size_t i = 0; i + wl <= len; i++) {
            size_t j = 0;
            while (j < wl && lower((unsigned char)text[i + j]) == lower((unsigned char)words[w][j]))
                j++;
            if (j == wl) return true;
        }
    }
    return false;
}

void aha_step_metrics_init(aha_step_metrics *m, int64_t step, int64_t total_steps)
{
    memset(m, 0, sizeof *m);
    m->step = step;
    m->total_steps = total_steps;
    m->lr = m->loss = m->grad_norm = m->kl_mean = m->clip_frac = NAN;
    m->t_generate = m->t_score = m->t_reference = m->t_train = m->t_push = m->t_eval =
        m->t_total = NAN;
}

void aha_step_metrics_add_group(aha_step_metrics *m, const aha_completion_stats *c, int G,
                                char *const *reflection_words, int n_words)
{
    bool eq = true;
    for (int i = 0; i < G; i++) {
        const aha_completion_stats *x = &c[i];
        if (x->reward != c[0].reward) eq = false;
        m->n_completions++;
        m->sum_reward += x->reward;
        m->sumsq_reward += x->reward * x->reward;
        m->sum_len += (double)x->length;
        if (x->length > m->max_len) m->max_len = x->length;
        if (x->truncated) m->n_truncated++;
        double comp[AHA_N_REWARD_COMPONENTS] = {x->accuracy, x->format, x->language};
        for (int k = 0; k < AHA_N_REWARD_COMPONENTS; k++) {
            if (isnan(comp[k])) continue;
            m->sum_c[k] += comp[k];
            m->sumsq_c[k] += comp[k] * comp[k];
            m->n_c[k]++;
        }
        if (!isnan(x->accuracy) && x->accuracy >= 0.5) m->n_correct++;
        if (!isnan(x->format) && x->format >= 0.5) m->n_formatted++;
        if (aha_text_has_any_word(x->text, x->text_len, reflection_words, n_words)) m->n_reflect++;
    }
    m->n_groups++;
    if (eq) m->n_all_equal++;
    if (G > 1) {
        double mean = 0, var = 0;
        for (int i = 0; i < G; i++) mean += c[i].reward;
        mean /= G;
        for (int i = 0; i < G; i++) var += (c[i].reward - mean) * (c[i].reward - mean);
        m->sum_group_std += sqrt(var / (G - 1));
    }
}

/* population std from sums; clamps the tiny negative variance rounding can produce */
static double pop_std(double sum, double sumsq, int64_t n)
{
    if (n <= 0) return NAN;
    double mean = sum / (double)n;
    double var = sumsq / (double)n - mean * mean;
    return var > 0 ? sqrt(var) : 0.0;
}

typedef struct {
    bool oom;
} jput;

static void setv(jput *b, json_t *o, const char *k, json_t *v)
{
    if (!v || json_object_set_new(o, k, v) != 0) b->oom = true;
}

static void setd(jput *b, json_t *o, const char *k, double v)
{
    if (!isnan(v) && isfinite(v)) setv(b, o, k, json_real(v));
}

aha_status aha_step_metrics_json(const aha_step_metrics *m, char **out, aha_err *err)
{
    *out = NULL;
    jput b = {false};
    json_t *o = json_object();
    if (!o) return aha_errf(err, AHA_ENOMEM, "metrics: out of memory");
    setv(&b, o, "type", json_string("step"));
    if (m->stage) setv(&b, o, "stage", json_string(m->stage));
    setv(&b, o, "step", json_integer(m->step));
    if (m->total_steps > 0) setv(&b, o, "total_steps", json_integer(m->total_steps));
    setd(&b, o, "time", m->wall_time > 0 ? m->wall_time : aha_wall_s());
    setd(&b, o, "lr", m->lr);
    setd(&b, o, "loss", m->loss);
    setd(&b, o, "grad_norm", m->grad_norm);
    setd(&b, o, "kl_mean", m->kl_mean);
    setd(&b, o, "clip_frac", m->clip_frac);
    if (m->n_completions > 0) {
        double n = (double)m->n_completions;
        setv(&b, o, "n_completions", json_integer(m->n_completions));
        setv(&b, o, "n_groups", json_integer(m->n_groups));
        setd(&b, o, "reward_mean", m->sum_reward / n);
        setd(&b, o, "reward_std", pop_std(m->sum_reward, m->sumsq_reward, m->n_completions));
        if (m->n_groups)
            setd(&b, o, "group_reward_std", m->sum_group_std / (double)m->n_groups);
        static const char *const names[AHA_N_REWARD_COMPONENTS] = {"accuracy", "format",
                                                                   "language"};
        json_t *rc = json_object();
        if (!rc) b.oom = true;
        for (int k = 0; rc && k < AHA_N_REWARD_COMPONENTS; k++) {
            if (m->n_c[k] == 0) continue;
            json_t *c = json_object();
            if (!c) {
                b.oom = true;
                break;
            }
            setd(&b, c, "mean", m->sum_c[k] / (double)m->n_c[k]);
            setd(&b, c, "std", pop_std(m->sum_c[k], m->sumsq_c[k], m->n_c[k]));
            setv(&b, rc, names[k], c);
        }
        setv(&b, o, "rewards", rc);
        if (m->n_c[0]) setd(&b, o, "accuracy", (double)m->n_correct / (double)m->n_c[0]);
        if (m->n_c[1]) setd(&b, o, "format_rate", (double)m->n_formatted / (double)m->n_c[1]);
        setd(&b, o, "length_mean", m->sum_len / n);
        setv(&b, o, "length_max", json_integer(m->max_len));
        setd(&b, o, "truncated_rate", (double)m->n_truncated / n);
        setd(&b, o, "reflection_rate", (double)m->n_reflect / n);
        if (m->n_groups)
            setd(&b, o, "all_equal_groups", (double)m->n_all_equal / (double)m->n_groups);
    }
    if (m->tokens > 0) {
        setv(&b, o, "tokens", json_integer(m->tokens));
        if (!isnan(m->t_total) && m->t_total > 0)
            setd(&b, o, "tokens_per_s", (double)m->tokens / m->t_total);
    }
    json_t *t = json_object();
    if (!t) b.oom = true;
    else {
        setd(&b, t, "generate", m->t_generate);
        setd(&b, t, "score", m->t_score);
        setd(&b, t, "reference", m->t_reference);
        setd(&b, t, "train", m->t_train);
        setd(&b, t, "push", m->t_push);
        setd(&b, t, "eval", m->t_eval);
        setd(&b, t, "total", m->t_total);
        if (json_object_size(t)) setv(&b, o, "seconds", t);
        else json_decref(t);
    }
    if (!b.oom) *out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!*out) return aha_errf(err, AHA_ENOMEM, "metrics: out of memory");
    return AHA_OK;
}

aha_status aha_metrics_append(const char *path, const char *line, aha_err *err)
{
    size_t n = strlen(line);
    char *buf = malloc(n + 1);
    if (!buf) return aha_errf(err, AHA_ENOMEM, "out of memory");
    memcpy(buf, line, n);
    buf[n] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(buf);
        return aha_errf(err, AHA_EIO, "%s: %s", path, strerror(errno));
    }
    /* one write per record: with O_APPEND a reader never sees two records interleaved */
    size_t off = 0;
    while (off < n + 1) {
        ssize_t w = write(fd, buf + off, n + 1 - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            free(buf);
            return aha_errf(err, AHA_EIO, "%s: write: %s", path, strerror(e));
        }
        off += (size_t)w;
    }
    free(buf);
    if (close(fd) != 0) return aha_errf(err, AHA_EIO, "%s: close: %s", path, strerror(errno));
    return AHA_OK;
}
