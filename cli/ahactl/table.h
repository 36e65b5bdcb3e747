/* table.h: the live table of `ahactl watch JOB`: one line per metrics record, as a pure
 * function of the record, so the RPC layer only prints what this returns.
 *
 *   stage        step        progress                    reward  acc     fmt     len    kl      s/step  ETA
 *   rl_final     12/40   [######..............]  30%   1.234   56.2%   98.4%   43.1   0.0012  3.2     1m30s
 *
 * Step records of sft jobs (no reward) show the loss in the reward column. Eval records get
 * a line of their own; other record types (state, log) are shown as "[type] text". */
#ifndef AHA_AHACTL_TABLE_H
#define AHA_AHACTL_TABLE_H

#include <stddef.h>

#include "base/status.h"

/* The column heading line for step rows (no newline). */
const char *aha_watch_header(void);
/* One line (no newline) for the JSON record. elapsed_s: seconds since the job (or stage)
 * started, for the ETA; <= 0 → the ETA uses the record's seconds.total per step. A record
 * that is not a JSON object is AHA_EFORMAT. */
aha_status aha_watch_line(const char *record, size_t len, double elapsed_s, char *out, size_t cap,
                          aha_err *err);
/* "42s", "3m05s", "2h07m", "-" for unknown or negative. */
void aha_format_duration(double seconds, char *out, size_t cap);
/* "[######..............]" of width bar_width + 2 for done/total (clamped). */
void aha_progress_bar(double done, double total, int bar_width, char *out, size_t cap);

/* The stages of a pipeline state ({"stages":[{"name","kind","status","started"?,
 * "finished"?,"error"?}]}, as pipeline.json and GetJob give it) as lines:
 *   pipeline: 2/4 stages done
 *     1  cold_start          sft       done      12m05s
 *     3  rejection_sampling  generate  running   1m10s
 *     4  final               grpo      failed    3s  (error text)
 * now: unix seconds, for the running time of a running stage. */
aha_status aha_pipeline_progress(const char *state_json, size_t len, double now, char *out,
                                 size_t cap, aha_err *err);

#endif
