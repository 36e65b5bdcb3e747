/* strbuf.h: a growing, NUL-terminated text buffer for building documents (SVG plots,
 * markdown reports). An allocation failure latches `oom`: later appends do nothing, and the
 * caller checks oom once at the end instead of after every append. */
#ifndef AHA_BASE_STRBUF_H
#define AHA_BASE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *s;      /* the text (NULL until the first append); the caller frees it */
    size_t len;
    size_t cap;
    bool oom;
} aha_strbuf;

/* Append formatted text. */
void aha_strbuf_printf(aha_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
