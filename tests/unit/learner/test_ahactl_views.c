/* test_ahactl_views: ahactl's pure views of a job's records: the SVG plot (well-formed XML
 * checked by python3's xml.etree, every point inside its panel, stage offsets, escaping), the
 * markdown eval report, and the watch-table line with its progress bar and ETA. */
#include <jansson.h>
#include <stdint.h>
#include <sys/wait.h>

#include "../../harness.h"
#include "base/fs.h"
#include "plot.h"
#include "report.h"
#include "table.h"

static char dir[] = "/tmp/aha_views_XXXXXX";

static char *make_metrics(void)
{
    size_t cap = 1 << 16, len = 0;
    char *m = malloc(cap);
    const char *stages[2] = {"rl<1>", "rl&2"};
    for (int s = 0; s < 2; s++)
        for (int i = 1; i <= 30; i++) {
            len += (size_t)snprintf(m + len, cap - len,
                                    "{\"type\":\"step\",\"stage\":\"%s\",\"step\":%d,\"total_steps\":30,"
                                    "\"reward_mean\":%.3f,\"accuracy\":%.3f,\"length_mean\":%.1f}\n",
                                    stages[s], i, 0.2 + 0.05 * i, 0.1 + 0.02 * i, 20.0 + 3 * i);
            if (i % 10 == 0)
                len += (size_t)snprintf(m + len, cap - len,
                                        "{\"type\":\"eval\",\"stage\":\"%s\",\"step\":%d,\"dataset\":\"eval\","
                                        "\"k\":4,\"pass_at_1\":%.3f}\n", stages[s], i, 0.03 * i);
            if (i == 15) len += (size_t)snprintf(m + len, cap - len, "not json\n");
        }
    len += (size_t)snprintf(m + len, cap - len, "{\"type\":\"step\",\"step\":3");
    return m;
}

static void test_plot(void)
{
    char *m = make_metrics();
    char *svg;
    aha_err e = {0};
    CHECK(aha_plot_svg(m, strlen(m), "demo \"run\" <1>", &svg, &e) == AHA_OK, "%s", e.msg);
    if (!svg) {
        free(m);
        return;
    }
    CHECK(strncmp(svg, "<?xml", 5) == 0 && strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""),
          "SVG prologue");
    CHECK(strstr(svg, "demo &quot;run&quot; &lt;1&gt;") != NULL, "title escaped");
    CHECK(strstr(svg, "rl&amp;2") != NULL && strstr(svg, "rl&lt;1&gt;") != NULL, "stage names escaped");
    char path[256], mpath[256];
    snprintf(path, sizeof path, "%s/plot.svg", dir);
    CHECK(aha_write_file_atomic(path, svg, strlen(svg), &e) == AHA_OK, "%s", e.msg);
    /* independent check: an XML parser, the series and that every point lies in its panel */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 - '%s' <<'PY'\n"
             "import sys, xml.etree.ElementTree as ET\n"
             "ns = '{http://www.w3.org/2000/svg}'\n"
             "root = ET.parse(sys.argv[1]).getroot()\n"
             "assert root.tag == ns + 'svg', root.tag\n"
             "rects = [r for r in root.iter(ns + 'rect') if r.get('stroke')]\n"
             "assert len(rects) == 2, len(rects)\n"
             "boxes = [(float(r.get('x')), float(r.get('y')), float(r.get('width')), float(r.get('height'))) for r in rects]\n"
             "lines = root.findall(ns + 'polyline')\n"
             "assert len(lines) == 4, len(lines)\n"
             "counts = sorted(len(l.get('points').split()) for l in lines)\n"
             "assert counts == [6, 60, 60, 60], counts\n"
             "for l in lines:\n"
             "    pts = [tuple(map(float, p.split(','))) for p in l.get('points').split()]\n"
             "    assert any(all(x0 - 0.01 <= x <= x0 + w + 0.01 and y0 - 0.01 <= y <= y0 + h + 0.01 for x, y in pts) for x0, y0, w, h in boxes), pts[:3]\n"
             "    xs = [x for x, y in pts]\n"
             "    assert xs == sorted(xs), 'x increases along a series (stages laid end to end)'\n"
             "PY", path);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "python3 xml.etree check of the SVG");
    free(svg);

    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", dir);
    CHECK(aha_write_file_atomic(mpath, m, strlen(m), &e) == AHA_OK, "%s", e.msg);
    snprintf(path, sizeof path, "%s/out.svg", dir);
    CHECK(aha_plot_file(mpath, path, NULL, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_path_exists(path), "file written");
    free(m);

    const char *one = "{\"type\":\"step\",\"step\":1,\"reward_mean\":0.5}\n";
    CHECK(aha_plot_svg(one, strlen(one), NULL, &svg, &e) == AHA_OK, "single step: %s", e.msg);
    free(svg);
    const char *none = "{\"type\":\"eval\",\"pass_at_1\":0.5}\nxx\n";
    CHECK(aha_plot_svg(none, strlen(none), NULL, &svg, &e) == AHA_EFORMAT && strstr(e.msg, "no step records"),
          "no steps: %s", e.msg);
    CHECK(aha_plot_file("/nonexistent/metrics.jsonl", path, NULL, &e) != AHA_OK &&
              strstr(e.msg, "/nonexistent/metrics.jsonl"), "missing file named");
}

static void test_report(void)
{
    const char *a = "{\"type\":\"step\",\"step\":1}\n"
                    "{\"type\":\"eval\",\"stage\":\"rl\",\"step\":20,\"dataset\":\"eval\",\"k\":4,"
                    "\"pass_at_1\":0.45,\"cons_at_k\":0.6,\"format_rate\":0.98,\"length_mean\":40.24,"
                    "\"length_p90\":55}\n"
                    "{\"type\":\"generate\",\"stage\":\"gen\",\"prompts\":10,\"prompts_with_kept\":7,"
                    "\"samples\":80,\"kept\":14,\"acceptance_rate\":0.175,\"rejected\":{\"truncated\":5,"
                    "\"incorrect\":40,\"format\":3,\"language\":1,\"duplicate\":9,\"over_limit\":8,\"error\":0}}\n";
    const char *b = "{\"type\":\"eval\",\"dataset\":\"gsm|8k\",\"k\":16,\"pass_at_1\":0.289,"
                    "\"cons_at_k\":0.527,\"format_rate\":1,\"length_mean\":100,\"length_p90\":150.5}\n";
    aha_report_input in[2] = {{a, strlen(a), NULL}, {b, strlen(b), "final_eval"}};
    char *md;
    aha_err e = {0};
    CHECK(aha_report_markdown(in, 2, "r1-pipeline", &md, &e) == AHA_OK, "%s", e.msg);
    CHECK(strstr(md, "## r1-pipeline\n") != NULL, "heading");
    CHECK(strstr(md, "| stage | step | dataset | k | pass@1 | cons@k | format | mean len | p90 len |") != NULL,
          "header");
    CHECK(strstr(md, "| rl | 20 | eval | 4 | 45.0 | 60.0 | 98.0 | 40.2 | 55.0 |\n") != NULL, "row 1:\n%s", md);
    CHECK(strstr(md, "| final_eval | final | gsm/8k | 16 | 28.9 | 52.7 | 100.0 | 100.0 | 150.5 |\n") != NULL,
          "row 2 (default stage, pipe replaced):\n%s", md);
    CHECK(strstr(md, "### Rejection sampling") != NULL &&
              strstr(md, "| gen | 10 | 80 | 14 | 17.5 | 5 | 40 | 3 | 1 | 9 | 8 | 0 |\n") != NULL,
          "generate row:\n%s", md);
    free(md);
    aha_report_input empty = {"{\"type\":\"step\"}\n", 16, NULL};
    CHECK(aha_report_markdown(&empty, 1, NULL, &md, &e) == AHA_OK && strstr(md, "No eval records"), "empty");
    free(md);
}

static void test_table(void)
{
    char d[32];
    aha_format_duration(42, d, sizeof d);
    CHECK(strcmp(d, "42s") == 0, "%s", d);
    aha_format_duration(185, d, sizeof d);
    CHECK(strcmp(d, "3m05s") == 0, "%s", d);
    aha_format_duration(7620, d, sizeof d);
    CHECK(strcmp(d, "2h07m") == 0, "%s", d);
    aha_format_duration(-1, d, sizeof d);
    CHECK(strcmp(d, "-") == 0, "%s", d);
    char bar[64];
    aha_progress_bar(12, 40, 20, bar, sizeof bar);
    CHECK(strcmp(bar, "[######..............]") == 0, "%s", bar);
    aha_progress_bar(50, 40, 10, bar, sizeof bar);
    CHECK(strcmp(bar, "[##########]") == 0, "clamped %s", bar);

    const char *r = "{\"type\":\"step\",\"stage\":\"rl_final\",\"step\":12,\"total_steps\":40,"
                    "\"reward_mean\":1.2345,\"accuracy\":0.5625,\"format_rate\":0.984,\"length_mean\":43.12,"
                    "\"kl_mean\":0.00123,\"seconds\":{\"total\":2.0}}";
    char line[512];
    aha_err e = {0};
    CHECK(aha_watch_line(r, strlen(r), 36, line, sizeof line, &e) == AHA_OK, "%s", e.msg);
    fprintf(stderr, "  %s\n  %s\n", aha_watch_header(), line);
    CHECK(strncmp(line, "rl_final", 8) == 0 && strstr(line, "12/40") && strstr(line, "[######..............]") &&
              strstr(line, " 30%") && strstr(line, "1.234") && strstr(line, "56.2%") && strstr(line, "98.4%") &&
              strstr(line, "43.1") && strstr(line, "0.0012"), "step line: %s", line);
    /* 36 s for 12 steps = 3 s/step; 28 left → 84 s */
    CHECK(strstr(line, "3.0") && strcmp(line + strlen(line) - 5, "1m24s") == 0, "ETA: %s", line);
    CHECK(aha_watch_line(r, strlen(r), 0, line, sizeof line, &e) == AHA_OK &&
              strcmp(line + strlen(line) - 3, "56s") == 0, "ETA from seconds.total: %s", line);
    const char *sft = "{\"type\":\"step\",\"step\":3,\"loss\":2.5}";
    CHECK(aha_watch_line(sft, strlen(sft), 0, line, sizeof line, &e) == AHA_OK && strstr(line, "L2.5000"),
          "sft loss: %s", line);
    const char *ev = "{\"type\":\"eval\",\"step\":20,\"dataset\":\"eval\",\"k\":4,\"pass_at_1\":0.45,"
                     "\"cons_at_k\":0.6,\"format_rate\":1,\"length_mean\":40}";
    CHECK(aha_watch_line(ev, strlen(ev), 0, line, sizeof line, &e) == AHA_OK && strstr(line, "eval @ 20") &&
              strstr(line, "45.0%") && strstr(line, "cons@4 60.0%"), "eval: %s", line);
    const char *stl = "{\"type\":\"state\",\"stage\":\"gen\",\"state\":\"running\"}";
    CHECK(aha_watch_line(stl, strlen(stl), 0, line, sizeof line, &e) == AHA_OK &&
              strcmp(line, "[state] gen: running") == 0, "state: %s", line);
    CHECK(aha_watch_line("[1]", 3, 0, line, sizeof line, &e) == AHA_EFORMAT, "not an object");
    char small[16];
    CHECK(aha_watch_line(r, strlen(r), 36, small, sizeof small, &e) == AHA_OK && strlen(small) < 16, "cut");
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    test_plot();
    test_report();
    test_table();
    aha_remove_tree(dir, NULL);
    return th_done("ahactl_views");
}
