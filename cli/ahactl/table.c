/* table.c: watch-table lines (table.h). */
#include "table.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *aha_watch_header(void)
{
    return "stage        step          progress                   reward  acc     fmt     len"
           "     kl       s/step  ETA";
}

void aha_format_duration(double s, char *out, size_t cap)
{
    if (!(s >= 0) || !isfinite(s)) {
        snprintf(out, cap, "-");
        return;
    }
    long t = (long)(s + 0.5);
    if (t < 60) snprintf(out, cap, "%lds", t);
    else if (t < 3600) snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, cap, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

void aha_progress_bar(double done, double total, int width, char *out, size_t cap)
{
    if (cap == 0) return;
    if (width > 200) width = 200;
    double f = total > 0 ? done / total : 0;
    if (!(f >= 0)) f = 0;
    if (f > 1) f = 1;
    int fill = (int)(f * width + 0.5);
    char bar[204];
    int n = 0;
    bar[n++] = '[';
    for (int i = 0; i < width; i++) bar[n++] = i < fill ? '#' : '.';
    bar[n++] = ']';
    bar[n] = 0;
    snprintf(out, cap, "%s", bar);
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* append to out; output is cut at cap, which only shortens the line */
static void cat(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cat(char *out, size_t cap, const char *fmt, ...)
{
    size_t l = strlen(out);
    if (l + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + l, cap - l, fmt, ap);
    va_end(ap);
}

static void cell_num(char *out, size_t cap, double v, const char *fmt, int width)
{
    if (isnan(v)) cat(out, cap, "%-*s", width, "-");
    else {
        char t[32];
        snprintf(t, sizeof t, fmt, v);
        cat(out, cap, "%-*s", width, t);
    }
}

aha_status aha_watch_line(const char *record, size_t len, double elapsed_s, char *out, size_t cap,
                          aha_err *err)
{
    if (cap) out[0] = 0;
    json_t *o = json_loadb(record, len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return aha_errf(err, AHA_EFORMAT, "watch: record is not a JSON object");
    }
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *stage = json_string_value(json_object_get(o, "stage"));
    double step = num(o, "step"), total = num(o, "total_steps");
    if (!type || strcmp(type, "step") == 0) {
        cat(out, cap, "%-12.12s ", stage ? stage : "");
        char t[48];
        if (!isnan(total)) snprintf(t, sizeof t, "%.0f/%.0f", step, total);
        else snprintf(t, sizeof t, "%.0f", step);
        cat(out, cap, "%-13s ", t);
        char bar[64];
        aha_progress_bar(step, total, 20, bar, sizeof bar);
        cat(out, cap, "%s ", bar);
        if (!isnan(total) && total > 0) cat(out, cap, "%3.0f%%  ", 100 * fmin(1, step / total));
        else cat(out, cap, "  -   ");
        double reward = num(o, "reward_mean");
        if (isnan(reward)) cell_num(out, cap, num(o, "loss"), "L%.4f", 8);
        else cell_num(out, cap, reward, "%.3f", 8);
        cell_num(out, cap, 100 * num(o, "accuracy"), "%.1f%%", 8);
        cell_num(out, cap, 100 * num(o, "format_rate"), "%.1f%%", 8);
        cell_num(out, cap, num(o, "length_mean"), "%.1f", 8);
        cell_num(out, cap, num(o, "kl_mean"), "%.4f", 9);
        double per = NAN;
        if (elapsed_s > 0 && step > 0) per = elapsed_s / step;
        else per = num(json_object_get(o, "seconds"), "total");
        cell_num(out, cap, per, "%.1f", 8);
        char eta[32];
        aha_format_duration(!isnan(total) && !isnan(per) ? (total - step) * per : NAN, eta, sizeof eta);
        cat(out, cap, "%s", eta);
    } else if (strcmp(type, "eval") == 0) {
        cat(out, cap, "%-12.12s ", stage ? stage : "");
        if (!isnan(step)) cat(out, cap, "eval @ %-6.0f ", step);
        else cat(out, cap, "eval         ");
        const char *ds = json_string_value(json_object_get(o, "dataset"));
        cat(out, cap, "%-16.16s pass@1 ", ds ? ds : "-");
        cell_num(out, cap, 100 * num(o, "pass_at_1"), "%.1f%%", 8);
        json_t *k = json_object_get(o, "k");
        cat(out, cap, "cons@%lld ", json_is_integer(k) ? (long long)json_integer_value(k) : 0LL);
        cell_num(out, cap, 100 * num(o, "cons_at_k"), "%.1f%%", 8);
        cat(out, cap, "fmt ");
        cell_num(out, cap, 100 * num(o, "format_rate"), "%.1f%%", 8);
        cat(out, cap, "len ");
        cell_num(out, cap, num(o, "length_mean"), "%.1f", 0);
    } else {
        const char *text = json_string_value(json_object_get(o, "message"));
        if (!text) text = json_string_value(json_object_get(o, "state"));
        cat(out, cap, "[%.32s]%s%.32s%s %s", type, stage ? " " : "", stage ? stage : "",
            stage ? ":" : "", text ? text : "");
    }
    /* trailing blanks from padded cells */
    size_t l = strlen(out);
    while (l && out[l - 1] == ' ') out[--l] = 0;
    json_decref(o);
    return AHA_OK;
}

aha_status aha_pipeline_progress(const char *state_json, size_t len, double now, char *out,
                                 size_t cap, aha_err *err)
{
    if (cap) out[0] = 0;
    json_t *o = json_loadb(state_json, len, 0, NULL);
    json_t *arr = json_object_get(o, "stages");
    if (!json_is_array(arr)) {
        json_decref(o);
        return aha_errf(err, AHA_EFORMAT, "pipeline progress: no stages array");
    }
    size_t n = json_array_size(arr), done = 0;
    for (size_t i = 0; i < n; i++) {
        const char *st = json_string_value(json_object_get(json_array_get(arr, i), "status"));
        if (st && strcmp(st, "done") == 0) done++;
    }
    cat(out, cap, "pipeline: %zu/%zu stages done\n", done, n);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        const char *name = json_string_value(json_object_get(s, "name"));
        const char *kind = json_string_value(json_object_get(s, "kind"));
        const char *st = json_string_value(json_object_get(s, "status"));
        const char *error = json_string_value(json_object_get(s, "error"));
        double t0 = num(s, "started"), t1 = num(s, "finished");
        char dur[32] = "";
        if (!isnan(t0) && t0 > 0) {
            double end = !isnan(t1) && t1 > 0 ? t1 : now;
            aha_format_duration(end - t0, dur, sizeof dur);
        }
        cat(out, cap, "  %-2zu %-20.40s %-9.9s %-8.8s %s", i + 1, name ? name : "?", kind ? kind : "?",
            st ? st : "?", dur);
        if (error && st && strcmp(st, "failed") == 0) cat(out, cap, "  (%.200s)", error);
        size_t l = strlen(out);
        while (l && out[l - 1] == ' ') out[--l] = 0;
        cat(out, cap, "\n");
    }
    json_decref(o);
    return AHA_OK;
}
