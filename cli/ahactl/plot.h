/* plot.h: the core of `ahactl plot JOB -o FILE.svg`: a job's metrics.jsonl drawn as a
 * two-panel SVG, R1-Zero's Figure 2 (reward, training accuracy and held-out pass@1 against
 * step) above Figure 3 (mean response length against step). Pure string building, no I/O
 * besides aha_plot_file.
 *
 * Records (docs/JOBS.md): {"type":"step", "step", "reward_mean", "accuracy", "length_mean",
 * "stage"?} and {"type":"eval", "step", "pass_at_1", "dataset", "stage"?}. Records of a
 * pipeline's stages are laid end to end: each stage's steps are offset by the steps of the
 * stages before it, with a dashed line and the stage name at each boundary. Lines that are
 * not JSON (a half-written last line) are skipped. */
#ifndef AHA_AHACTL_PLOT_H
#define AHA_AHACTL_PLOT_H

#include <stddef.h>

#include "base/status.h"

/* metrics: the text of a metrics.jsonl; title may be NULL. *svg: malloc'd, NUL-terminated.
 * AHA_EFORMAT when the text holds no step record. */
aha_status aha_plot_svg(const char *metrics, size_t len, const char *title, char **svg,
                        aha_err *err);
/* Read metrics_path, write svg_path atomically. */
aha_status aha_plot_file(const char *metrics_path, const char *svg_path, const char *title,
                         aha_err *err);

#endif
