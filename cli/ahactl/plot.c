/* plot.c: metrics.jsonl → SVG (plot.h). Axes use "nice" ticks (1, 2, 5 × 10^k); every text
 * that comes from the file (title, stage names) is XML-escaped. */
#include "plot.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/strbuf.h"

/* ---- XML text ---------------------------------------------------------------------------- */

static void sb_escaped(aha_strbuf *b, const char *t)
{
    for (; *t; t++) {
        switch (*t) {
        case '&': aha_strbuf_printf(b, "&amp;"); break;
        case '<': aha_strbuf_printf(b, "&lt;"); break;
        case '>': aha_strbuf_printf(b, "&gt;"); break;
        case '"': aha_strbuf_printf(b, "&quot;"); break;
        case '\'': aha_strbuf_printf(b, "&apos;"); break;
        default:
            /* XML 1.0 forbids most control characters even escaped */
            if ((unsigned char)*t < 0x20 && *t != '\t' && *t != '\n') aha_strbuf_printf(b, " ");
            else aha_strbuf_printf(b, "%c", *t);
        }
    }
}

/* ---- series -------------------------------------------------------------------------- */

typedef struct {
    double *x, *y;
    int n, cap;
} series;

static bool series_add(series *s, double x, double y)
{
    if (isnan(y) || !isfinite(y)) return true;
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        double *nx = realloc(s->x, (size_t)nc * sizeof *nx);
        if (!nx) return false;
        s->x = nx;
        double *ny = realloc(s->y, (size_t)nc * sizeof *ny);
        if (!ny) return false;
        s->y = ny;
        s->cap = nc;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return true;
}

static void series_free(series *s)
{
    free(s->x);
    free(s->y);
}

#define MAX_STAGES 64

typedef struct {
    series reward, accuracy, pass1, length;
    char *stage_name[MAX_STAGES];
    double stage_offset[MAX_STAGES], stage_max[MAX_STAGES];
    int n_stages;
    double xmin, xmax;
    int n_steps;
} plot_data;

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Stage index for a record (creating it, with its offset after the previous stage). */
static int stage_of(plot_data *d, const char *name)
{
    if (!name) name = "";
    for (int i = 0; i < d->n_stages; i++)
        if (strcmp(d->stage_name[i], name) == 0) return i;
    if (d->n_stages == MAX_STAGES) return d->n_stages - 1;
    int i = d->n_stages;
    d->stage_name[i] = strdup(name);
    if (!d->stage_name[i]) return -1;
    d->stage_offset[i] = i ? d->stage_offset[i - 1] + d->stage_max[i - 1] : 0;
    d->stage_max[i] = 0;
    d->n_stages++;
    return i;
}

static aha_status collect(const char *text, size_t len, plot_data *d, aha_err *err)
{
    size_t off = 0;
    while (off < len) {
        const char *p = text + off;
        const char *nl = memchr(p, '\n', len - off);
        size_t ll = nl ? (size_t)(nl - p) : len - off;
        off += ll + (nl ? 1 : 0);
        json_t *o = json_loadb(p, ll, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        const char *type = json_string_value(json_object_get(o, "type"));
        double step = num(o, "step");
        bool ok = true;
        if (!isnan(step) && (!type || strcmp(type, "step") == 0 || strcmp(type, "eval") == 0)) {
            int si = stage_of(d, json_string_value(json_object_get(o, "stage")));
            if (si < 0) {
                json_decref(o);
                return aha_errf(err, AHA_ENOMEM, "plot: out of memory");
            }
            if (step > d->stage_max[si]) d->stage_max[si] = step;
            double x = d->stage_offset[si] + step;
            if (!type || strcmp(type, "step") == 0) {
                ok = series_add(&d->reward, x, num(o, "reward_mean")) &&
                     series_add(&d->accuracy, x, num(o, "accuracy")) &&
                     series_add(&d->length, x, num(o, "length_mean"));
                d->n_steps++;
            } else {
                ok = series_add(&d->pass1, x, num(o, "pass_at_1"));
            }
            if (x < d->xmin) d->xmin = x;
            if (x > d->xmax) d->xmax = x;
        }
        json_decref(o);
        if (!ok) return aha_errf(err, AHA_ENOMEM, "plot: out of memory");
    }
    return AHA_OK;
}

/* ---- drawing ------------------------------------------------------------------------- */

static double nice_step(double range, int target)
{
    if (!(range > 0)) return 1;
    double raw = range / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    double n = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return n * mag;
}

static void fmt_tick(char *buf, size_t cap, double v, double step)
{
    if (step >= 1 || v == 0) snprintf(buf, cap, "%.0f", v);
    else if (step >= 0.1) snprintf(buf, cap, "%.1f", v);
    else snprintf(buf, cap, "%.2f", v);
}

typedef struct {
    double x0, y0, w, h;       /* plot area in pixels */
    double xmin, xmax, ymin, ymax;
} panel;

static double px(const panel *p, double x)
{
    return p->x0 + (x - p->xmin) / (p->xmax - p->xmin) * p->w;
}

static double py(const panel *p, double y)
{
    return p->y0 + p->h - (y - p->ymin) / (p->ymax - p->ymin) * p->h;
}

static void draw_axes(aha_strbuf *b, const panel *p, const char *xlabel, const char *ylabel,
                      const char *heading)
{
    aha_strbuf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#ffffff\" "
                 "stroke=\"#444444\"/>\n", p->x0, p->y0, p->w, p->h);
    char t[32];
    double ys = nice_step(p->ymax - p->ymin, 5);
    for (double v = ceil(p->ymin / ys) * ys; v <= p->ymax + ys * 1e-9; v += ys) {
        double y = py(p, v);
        fmt_tick(t, sizeof t, v, ys);
        aha_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n",
                  p->x0, y, p->x0 + p->w, y);
        aha_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%s</text>\n",
                  p->x0 - 6, y + 4, t);
    }
    double xs = nice_step(p->xmax - p->xmin, 8);
    if (xs < 1) xs = 1; /* steps are integers */
    for (double v = ceil(p->xmin / xs) * xs; v <= p->xmax + xs * 1e-9; v += xs) {
        double x = px(p, v);
        fmt_tick(t, sizeof t, v, xs);
        aha_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444444\"/>\n",
                  x, p->y0 + p->h, x, p->y0 + p->h + 5);
        aha_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n",
                  x, p->y0 + p->h + 18, t);
    }
    aha_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%s</text>\n",
              p->x0 + p->w / 2, p->y0 + p->h + 36, xlabel);
    aha_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
                 "transform=\"rotate(-90 %.1f %.1f)\">%s</text>\n", p->x0 - 48, p->y0 + p->h / 2,
              p->x0 - 48, p->y0 + p->h / 2, ylabel);
    aha_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" font-weight=\"bold\">%s</text>\n",
              p->x0, p->y0 - 8, heading);
}

static void draw_series(aha_strbuf *b, const panel *p, const series *s, const char *color, bool markers)
{
    if (s->n == 0) return;
    aha_strbuf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", color);
    for (int i = 0; i < s->n; i++)
        aha_strbuf_printf(b, "%s%.1f,%.1f", i ? " " : "", px(p, s->x[i]), py(p, s->y[i]));
    aha_strbuf_printf(b, "\"/>\n");
    if (markers || s->n == 1)
        for (int i = 0; i < s->n; i++)
            aha_strbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(p, s->x[i]),
                      py(p, s->y[i]), color);
}

static void draw_legend(aha_strbuf *b, const panel *p, const char *const *labels,
                        const char *const *colors, const int *present, int n)
{
    double x = p->x0 + p->w + 16, y = p->y0 + 14;
    for (int i = 0; i < n; i++) {
        if (!present[i]) continue;
        aha_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                     "stroke-width=\"3\"/>\n", x, y - 4, x + 22, y - 4, colors[i]);
        aha_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">%s</text>\n", x + 28, y, labels[i]);
        y += 20;
    }
}

static void draw_stage_marks(aha_strbuf *b, const panel *p, const plot_data *d)
{
    if (d->n_stages < 2) return;
    for (int i = 0; i < d->n_stages; i++) {
        double x = px(p, d->stage_offset[i]);
        if (x < p->x0) x = p->x0; /* the first stage starts at step 0, left of step 1 */
        if (i > 0)
            aha_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888888\" "
                         "stroke-dasharray=\"4 3\"/>\n", x, p->y0, x, p->y0 + p->h);
        aha_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#555555\">", x + 3,
                  p->y0 + 12);
        sb_escaped(b, d->stage_name[i]);
        aha_strbuf_printf(b, "</text>\n");
    }
}

static void series_range(const series *s, double *lo, double *hi)
{
    for (int i = 0; i < s->n; i++) {
        if (s->y[i] < *lo) *lo = s->y[i];
        if (s->y[i] > *hi) *hi = s->y[i];
    }
}

aha_status aha_plot_svg(const char *metrics, size_t len, const char *title, char **svg, aha_err *err)
{
    *svg = NULL;
    plot_data d;
    memset(&d, 0, sizeof d);
    d.xmin = INFINITY;
    d.xmax = -INFINITY;
    aha_status st = collect(metrics, len, &d, err);
    if (st == AHA_OK && d.n_steps == 0)
        st = aha_errf(err, AHA_EFORMAT, "plot: no step records in the metrics");
    if (st != AHA_OK) goto done;
    if (d.xmax <= d.xmin) { /* a single step still gets an axis */
        d.xmin -= 1;
        d.xmax += 1;
    }
    const double W = 900, H = 700, left = 80, right = 190, top = 60, ph = 250, gap = 95;
    panel p1 = {left, top, W - left - right, ph, d.xmin, d.xmax, 0, 1};
    double lo = 0, hi = 1;
    series_range(&d.reward, &lo, &hi);
    series_range(&d.accuracy, &lo, &hi);
    series_range(&d.pass1, &lo, &hi);
    double s1 = nice_step(hi - lo, 5);
    p1.ymin = floor(lo / s1) * s1;
    p1.ymax = ceil(hi / s1) * s1;
    panel p2 = {left, top + ph + gap, W - left - right, ph, d.xmin, d.xmax, 0, 1};
    double llo = 0, lhi = 0;
    series_range(&d.length, &llo, &lhi);
    double s2 = nice_step(lhi > 0 ? lhi : 1, 5);
    p2.ymax = lhi > 0 ? ceil(lhi / s2) * s2 : 1;
    if (p2.ymax <= lhi) p2.ymax += s2;

    aha_strbuf b = {0};
    aha_strbuf_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                  "viewBox=\"0 0 %.0f %.0f\" font-family=\"Helvetica, Arial, sans-serif\">\n",
              W, H, W, H);
    aha_strbuf_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"#fafafa\"/>\n");
    aha_strbuf_printf(&b, "<text x=\"%.1f\" y=\"28\" font-size=\"16\" font-weight=\"bold\">", left);
    sb_escaped(&b, title && *title ? title : "aha training run");
    aha_strbuf_printf(&b, "</text>\n");

    draw_axes(&b, &p1, "step", "reward / accuracy", "Reward and accuracy (R1-Zero Figure 2)");
    draw_stage_marks(&b, &p1, &d);
    draw_series(&b, &p1, &d.reward, "#1f77b4", false);
    draw_series(&b, &p1, &d.accuracy, "#2ca02c", false);
    draw_series(&b, &p1, &d.pass1, "#d62728", true);
    static const char *const l1[] = {"reward (mean)", "accuracy (train)", "pass@1 (eval)"};
    static const char *const c1[] = {"#1f77b4", "#2ca02c", "#d62728"};
    int pr1[] = {d.reward.n > 0, d.accuracy.n > 0, d.pass1.n > 0};
    draw_legend(&b, &p1, l1, c1, pr1, 3);

    draw_axes(&b, &p2, "step", "tokens", "Mean response length (R1-Zero Figure 3)");
    draw_stage_marks(&b, &p2, &d);
    draw_series(&b, &p2, &d.length, "#9467bd", false);
    static const char *const l2[] = {"response length"};
    static const char *const c2[] = {"#9467bd"};
    int pr2[] = {d.length.n > 0};
    draw_legend(&b, &p2, l2, c2, pr2, 1);
    aha_strbuf_printf(&b, "</svg>\n");
    if (b.oom) {
        free(b.s);
        st = aha_errf(err, AHA_ENOMEM, "plot: out of memory");
    } else {
        *svg = b.s;
    }
done:
    series_free(&d.reward);
    series_free(&d.accuracy);
    series_free(&d.pass1);
    series_free(&d.length);
    for (int i = 0; i < d.n_stages; i++) free(d.stage_name[i]);
    return st;
}

aha_status aha_plot_file(const char *metrics_path, const char *svg_path, const char *title,
                         aha_err *err)
{
    char *text;
    size_t len;
    AHA_TRY(aha_read_file(metrics_path, (size_t)1 << 30, &text, &len, err));
    char *svg;
    aha_status st = aha_plot_svg(text, len, title, &svg, err);
    free(text);
    if (st != AHA_OK) return aha_err_prefix(err, st, "%s", metrics_path);
    st = aha_write_file_atomic(svg_path, svg, strlen(svg), err);
    free(svg);
    return st;
}
