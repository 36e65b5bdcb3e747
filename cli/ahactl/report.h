/* report.h: the core of `ahactl report JOB`: the eval records of a job or pipeline as a
 * markdown table in the style of R1's Tables 5 and 6 (percentages with one decimal):
 *
 *   | stage | step | dataset | k | pass@1 | cons@k | format | mean len | p90 len |
 *
 * Input: JSON lines (metrics.jsonl or eval.jsonl texts); {"type":"eval"} records make the
 * table, in file order, and {"type":"generate"} records (rejection sampling) a second one with
 * the acceptance rate and the count per rejection reason; other lines are skipped. */
#ifndef AHA_AHACTL_REPORT_H
#define AHA_AHACTL_REPORT_H

#include <stddef.h>

#include "base/status.h"

typedef struct {
    const char *text; /* JSON lines */
    size_t len;
    const char *stage; /* stage shown for records without one; may be NULL */
} aha_report_input;

/* *md: malloc'd markdown with a heading (title, may be NULL) and the table; a job without
 * eval records gets a one-line note instead of a table. */
aha_status aha_report_markdown(const aha_report_input *in, int n_in, const char *title, char **md,
                               aha_err *err);

#endif
