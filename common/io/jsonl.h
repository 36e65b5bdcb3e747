/* jsonl.h: JSON lines, one object per line: a streaming reader for datasets and logs, and an
 * appender for metrics.jsonl and the like.
 *
 * The reader never holds more than one line: lines are bounded (max_line bytes), blank lines
 * are skipped, and each other line must be a JSON object. A line that is too long, not JSON
 * or not an object is an error naming the file and the 1-based line number, or, with
 * skip_bad, is skipped and counted. */
#ifndef AHA_IO_JSONL_H
#define AHA_IO_JSONL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../base/status.h"

#define AHA_JSONL_DEFAULT_MAX_LINE ((size_t)16 << 20)

typedef struct {
    size_t max_line; /* bytes per line, without the newline; 0 = AHA_JSONL_DEFAULT_MAX_LINE */
    bool skip_bad;   /* skip (and count) bad lines instead of failing */
} aha_jsonl_opts;

typedef struct aha_jsonl_reader aha_jsonl_reader;

/* path "-" reads stdin. opts may be NULL (defaults). */
aha_status aha_jsonl_open(const char *path, const aha_jsonl_opts *opts, aha_jsonl_reader **out,
                          aha_err *err);
/* Read lines from memory (buf must outlive the reader); name is used in messages. */
aha_status aha_jsonl_open_memory(const char *buf, size_t len, const char *name,
                                 const aha_jsonl_opts *opts, aha_jsonl_reader **out, aha_err *err);
/* The next object (the caller owns it: json_decref) and its 1-based line number (line may be
 * NULL). At the end of the input: AHA_OK with *obj == NULL. */
aha_status aha_jsonl_next(aha_jsonl_reader *r, json_t **obj, long *line, aha_err *err);
/* lines skipped as bad so far (skip_bad) */
long aha_jsonl_skipped(const aha_jsonl_reader *r);
void aha_jsonl_close(aha_jsonl_reader *r);

/* Appender: each write is one compact JSON object and '\n' in a single write(2) to a file
 * opened O_APPEND, so lines from several writers do not interleave. Thread-safe. */
typedef struct aha_jsonl_writer aha_jsonl_writer;

/* Create or append to path. fsync_each: fdatasync after every line (metrics that must
 * survive a crash). */
aha_status aha_jsonl_writer_open(const char *path, bool fsync_each, aha_jsonl_writer **out,
                                 aha_err *err);
/* obj must be a JSON object */
aha_status aha_jsonl_write(aha_jsonl_writer *w, const json_t *obj, aha_err *err);
/* fsync and close; the status of that last fsync/close. NULL is a no-op. */
aha_status aha_jsonl_writer_close(aha_jsonl_writer *w, aha_err *err);

#endif
