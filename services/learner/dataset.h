/* dataset.h: JSONL datasets of the learner: the four formats of aha_dataset_spec (generic,
 * gsm8k, math, sft) with field mapping, a deterministic shuffled order with a cursor that a
 * checkpoint stores and restores exactly, and dataset mixing (the mix job kind).
 *
 * A malformed line is an error naming the file and its 1-based line number
 * ("data/train.jsonl:17: missing field \"answer\""), or, with skip_bad_lines, is counted and
 * skipped. Blank lines are ignored. Unknown keys in a line are ignored (datasets carry
 * extra columns). */
#ifndef AHA_LEARNER_DATASET_H
#define AHA_LEARNER_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/rng.h"
#include "base/status.h"
#include "spec.h"

/* Largest dataset file and line accepted. */
#define AHA_DATASET_MAX_BYTES ((size_t)2 << 30)
#define AHA_DATASET_MAX_LINE ((size_t)16 << 20)

typedef struct {
    char *id;         /* the line's id field, or "NAME:LINE" */
    char *prompt;     /* the question (raw: the template is applied by the caller) */
    char *answer;     /* reference answer (gsm8k: after ####; math: last \boxed); NULL for sft */
    char *completion; /* sft only */
    char *lang;       /* NULL when the line has none */
    int64_t line;     /* 1-based line in the file */
} aha_example;

typedef struct {
    aha_example *items;
    int64_t n;
    int64_t skipped;                /* malformed lines skipped (skip_bad_lines) */
    char first_skip[AHA_ERR_LEN];   /* the first skipped line's message, "" if none */
} aha_dataset;

/* Load spec->path. Fails when the file cannot be read, a line is malformed (unless
 * skip_bad_lines) or no example is left. */
aha_status aha_dataset_load(const aha_dataset_spec *spec, aha_dataset *out, aha_err *err);
void aha_dataset_free(aha_dataset *ds);

/* One line (without its newline) into ex; the message names no file (the caller adds
 * "PATH:LINE: "). ex is zeroed on failure. */
aha_status aha_dataset_parse_line(const aha_dataset_spec *spec, const char *line, size_t len,
                                  int64_t lineno, aha_example *ex, aha_err *err);
void aha_example_free(aha_example *ex);

/* Reference answers. The text after the last "####", trimmed (GSM8K). */
aha_status aha_gsm8k_answer(const char *solution, char **out, aha_err *err);
/* The argument of the last complete \boxed{...} (or \fbox{...}, or "\boxed 5") with balanced
 * braces, trimmed (MATH). */
aha_status aha_math_boxed_answer(const char *solution, char **out, aha_err *err);

/* The position of a data order: plain data, stored in checkpoints. Epoch e's order is a
 * Fisher-Yates permutation drawn from aha_rng stream e of seed, so (seed, n, epoch, pos)
 * reproduces the exact sequence of examples. */
typedef struct {
    uint64_t seed;
    int64_t n;     /* dataset size */
    int64_t epoch; /* 0-based */
    int64_t pos;   /* next index within the epoch's order, in [0, n] */
    bool shuffle;
} aha_data_cursor;

typedef struct {
    aha_data_cursor c; /* read-only: the state to store */
    int64_t *perm;     /* private: epoch c.epoch's order */
} aha_data_order;

aha_status aha_data_order_init(aha_data_order *o, int64_t n, uint64_t seed, bool shuffle,
                               aha_err *err);
/* Continue from a stored cursor; the dataset must still have c->n examples. */
aha_status aha_data_order_restore(aha_data_order *o, const aha_data_cursor *c, int64_t n,
                                  aha_err *err);
/* The next example index; crossing the end of an epoch starts the next one. */
int64_t aha_data_order_next(aha_data_order *o);
void aha_data_order_free(aha_data_order *o);

/* {"seed":...,"n":...,"epoch":...,"pos":...,"shuffle":...}; seed is written as a string so
 * all 64 bits survive JSON readers that use doubles. */
aha_status aha_data_cursor_to_json(const aha_data_cursor *c, char **out, aha_err *err);
aha_status aha_data_cursor_from_json(const char *json, size_t len, aha_data_cursor *c,
                                     aha_err *err);

/* Mixing (kind mix): what one run did. */
typedef struct {
    int n_sources;
    int64_t available[64]; /* valid lines in each source */
    int64_t taken[64];     /* lines written from each source */
    int64_t skipped[64];   /* malformed lines skipped */
    int64_t total;         /* lines written */
} aha_mix_report;

/* Build the mix of spec (kind AHA_JOB_MIX) into output_path (written atomically). With
 * spec->total > 0, source i gives round(total * p_i / sum p) lines (largest remainder, so
 * they sum to total); otherwise its count (-1 = all). A source asked for more lines than it
 * has repeats whole copies and samples the rest. Sampling and the final shuffle use aha_rng
 * streams of spec->seed, so the same spec gives the same file. Each line must be a JSON
 * object (file:line error, or skipped with skip_bad_lines). */
aha_status aha_mix_run(const aha_job_spec *spec, const char *output_path, aha_mix_report *rep,
                       aha_err *err);

#endif
