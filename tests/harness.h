/* harness.h: the tiny test harness every C test uses. A test program runs its checks, prints
 * "ok"/"not ok" lines and exits non-zero when any check failed (never "not ok" with exit 0).
 * Tensor comparisons print the worst element and its index. */
#ifndef AHA_TESTS_HARNESS_H
#define AHA_TESTS_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int th_failures = 0;
static int th_checks = 0;

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        th_checks++;                                                                 \
        if (!(cond)) {                                                               \
            th_failures++;                                                           \
            fprintf(stderr, "not ok %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, "\n");                                                   \
        }                                                                            \
    } while (0)

/* ||a-b|| / ||b|| over n floats; prints the worst element. Returns the relative error. */
static inline double th_rel_err(const char *what, const float *a, const float *b, long n)
{
    double num = 0, den = 0, worst = -1;
    long wi = 0;
    for (long i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        if (isnan(a[i]) || isnan(b[i])) d = INFINITY;
        num += d * d;
        den += (double)b[i] * b[i];
        if (fabs(d) > worst) {
            worst = fabs(d);
            wi = i;
        }
    }
    double rel = den > 0 ? sqrt(num) / sqrt(den) : sqrt(num);
    if (n > 0)
        fprintf(stderr, "  %-40s rel %.3e  worst |d| %.3e at [%ld] (%g vs %g)\n", what, rel, worst,
                wi, (double)a[wi], (double)b[wi]);
    return rel;
}

/* max |a-b| over n floats; prints the worst element. */
static inline double th_max_abs(const char *what, const float *a, const float *b, long n)
{
    double worst = 0;
    long wi = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(a[i]) != isnan(b[i]) || isnan(d)) d = INFINITY;
        if (d > worst) {
            worst = d;
            wi = i;
        }
    }
    if (n > 0)
        fprintf(stderr, "  %-40s max |d| %.3e at [%ld] (%g vs %g)\n", what, worst, wi, (double)a[wi],
                (double)b[wi]);
    return worst;
}

static inline const char *th_fixtures(void)
{
    const char *d = getenv("AHA_FIXTURES");
    return d ? d : "tests/fixtures";
}

static inline int th_done(const char *name)
{
    if (th_failures) {
        fprintf(stderr, "%s: %d of %d checks failed\n", name, th_failures, th_checks);
        return 1;
    }
    fprintf(stderr, "%s: all %d checks passed\n", name, th_checks);
    return 0;
}

#endif
