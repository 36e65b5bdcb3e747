/* jsonl.c: the JSON-lines reader and appender (see jsonl.h).
 *
 * Reader invariant: at most max_line bytes of a line are ever buffered; the rest of an
 * over-long line is read and dropped up to its newline, so one bad line costs constant memory
 * and the next line starts clean. Line numbers count every '\n', blank and bad lines
 * included, so they match what an editor shows. */
#include "jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { READ_CHUNK = 1 << 16 };

struct aha_jsonl_reader {
    char *name;
    FILE *fp; /* NULL for memory input */
    bool own_fp;
    const char *src; /* buffered bytes not yet consumed: the read chunk or the memory image */
    size_t src_len, src_pos;
    char *chunk;
    char *line; /* the current line, NUL-terminated */
    size_t line_len, line_cap;
    size_t max_line;
    bool skip_bad, eof;
    long line_no, skipped;
};

static aha_status reader_new(const char *name, const aha_jsonl_opts *opts, aha_jsonl_reader **out, aha_err *err)
{
    aha_jsonl_reader *r = calloc(1, sizeof *r);
    if (!r) return aha_errf(err, AHA_ENOMEM, "%s: out of memory", name);
    r->name = strdup(name);
    r->max_line = opts && opts->max_line ? opts->max_line : AHA_JSONL_DEFAULT_MAX_LINE;
    r->skip_bad = opts && opts->skip_bad;
    if (!r->name) {
        free(r);
        return aha_errf(err, AHA_ENOMEM, "%s: out of memory", name);
    }
    *out = r;
    return AHA_OK;
}

aha_status aha_jsonl_open(const char *path, const aha_jsonl_opts *opts, aha_jsonl_reader **out, aha_err *err)
{
    *out = NULL;
    bool is_stdin = strcmp(path, "-") == 0;
    aha_jsonl_reader *r;
    AHA_TRY(reader_new(is_stdin ? "<stdin>" : path, opts, &r, err));
    r->chunk = malloc(READ_CHUNK);
    if (!r->chunk) {
        aha_jsonl_close(r);
        return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
    }
    if (is_stdin) {
        r->fp = stdin;
    } else {
        r->fp = fopen(path, "rbe");
        if (!r->fp) {
            int e = errno;
            aha_jsonl_close(r);
            return aha_errf(err, e == ENOENT ? AHA_ENOTFOUND : AHA_EIO, "%s: %s", path, strerror(e));
        }
        r->own_fp = true;
    }
    r->src = r->chunk;
    *out = r;
    return AHA_OK;
}

aha_status aha_jsonl_open_memory(const char *buf, size_t len, const char *name, const aha_jsonl_opts *opts,
                                 aha_jsonl_reader **out, aha_err *err)
{
    *out = NULL;
    aha_jsonl_reader *r;
    AHA_TRY(reader_new(name ? name : "<memory>", opts, &r, err));
    r->src = buf;
    r->src_len = len;
    *out = r;
    return AHA_OK;
}

void aha_jsonl_close(aha_jsonl_reader *r)
{
    if (!r) return;
    if (r->own_fp) fclose(r->fp);
    free(r->chunk);
    free(r->line);
    free(r->name);
    free(r);
}

long aha_jsonl_skipped(const aha_jsonl_reader *r)
{
    return r->skipped;
}

static aha_status refill(aha_jsonl_reader *r, aha_err *err)
{
    if (!r->fp) {
        r->eof = true;
        return AHA_OK;
    }
    size_t n = fread(r->chunk, 1, READ_CHUNK, r->fp);
    if (n == 0) {
        if (ferror(r->fp)) return aha_errf(err, AHA_EIO, "%s: read error after line %ld", r->name, r->line_no);
        r->eof = true;
    }
    r->src = r->chunk;
    r->src_len = n;
    r->src_pos = 0;
    return AHA_OK;
}

/* Read one line into r->line (at most max_line bytes kept). *got false at end of input;
 * *too_long when the line had more bytes than that. */
static aha_status read_line(aha_jsonl_reader *r, bool *got, bool *too_long, aha_err *err)
{
    *got = false;
    *too_long = false;
    r->line_len = 0;
    size_t total = 0;
    for (;;) {
        if (r->src_pos == r->src_len) {
            if (r->eof) break;
            AHA_TRY(refill(r, err));
            if (r->eof && r->src_pos == r->src_len) break;
            continue;
        }
        const char *p = r->src + r->src_pos;
        size_t avail = r->src_len - r->src_pos;
        const char *nl = memchr(p, '\n', avail);
        size_t take = nl ? (size_t)(nl - p) : avail;
        *got = true;
        size_t keep = 0;
        if (total < r->max_line) keep = take < r->max_line - total ? take : r->max_line - total;
        if (take > keep) *too_long = true;
        if (keep > 0) {
            if (r->line_len + keep + 1 > r->line_cap) {
                size_t cap = r->line_cap ? r->line_cap : 256;
                while (cap < r->line_len + keep + 1) cap *= 2;
                char *q = realloc(r->line, cap);
                if (!q) return aha_errf(err, AHA_ENOMEM, "%s:%ld: out of memory", r->name, r->line_no + 1);
                r->line = q;
                r->line_cap = cap;
            }
            memcpy(r->line + r->line_len, p, keep);
            r->line_len += keep;
        }
        total += take;
        r->src_pos += take + (nl ? 1 : 0);
        if (nl) break;
    }
    if (*got) {
        r->line_no++;
        if (r->line) r->line[r->line_len] = '\0';
    }
    return AHA_OK;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return false;
    return true;
}

aha_status aha_jsonl_next(aha_jsonl_reader *r, json_t **obj, long *line, aha_err *err)
{
    *obj = NULL;
    for (;;) {
        bool got, too_long;
        AHA_TRY(read_line(r, &got, &too_long, err));
        if (!got) return AHA_OK;
        if (line) *line = r->line_no;
        if (too_long) {
            if (r->skip_bad) {
                r->skipped++;
                continue;
            }
            return aha_errf(err, AHA_ELIMIT, "%s:%ld: line longer than %zu bytes", r->name, r->line_no, r->max_line);
        }
        size_t n = r->line_len;
        if (n > 0 && r->line[n - 1] == '\r') n--; /* CRLF files */
        if (n == 0 || blank(r->line, n)) continue;
        json_error_t jerr;
        json_t *v = json_loadb(r->line, n, 0, &jerr);
        if (!v || !json_is_object(v)) {
            json_decref(v);
            if (r->skip_bad) {
                r->skipped++;
                continue;
            }
            if (!v)
                return aha_errf(err, AHA_EFORMAT, "%s:%ld: not valid JSON: %s (column %d)", r->name, r->line_no,
                                jerr.text, jerr.column);
            return aha_errf(err, AHA_EFORMAT, "%s:%ld: not a JSON object", r->name, r->line_no);
        }
        *obj = v;
        return AHA_OK;
    }
}

/* ---------------------------------------------------------------- writer */

struct aha_jsonl_writer {
    int fd;
    bool fsync_each;
    char *path;
    pthread_mutex_t mu;
};

aha_status aha_jsonl_writer_open(const char *path, bool fsync_each, aha_jsonl_writer **out, aha_err *err)
{
    *out = NULL;
    aha_jsonl_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
    }
    w->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int e = errno;
        free(w->path);
        free(w);
        return aha_errf(err, e == ENOENT ? AHA_ENOTFOUND : AHA_EIO, "%s: %s", path, strerror(e));
    }
    w->fsync_each = fsync_each;
    pthread_mutex_init(&w->mu, NULL);
    *out = w;
    return AHA_OK;
}

aha_status aha_jsonl_write(aha_jsonl_writer *w, const json_t *obj, aha_err *err)
{
    if (!json_is_object(obj)) return aha_errf(err, AHA_EINVAL, "%s: a JSON lines record must be an object", w->path);
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s) return aha_errf(err, AHA_ENOMEM, "%s: cannot serialise the record", w->path);
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return aha_errf(err, AHA_ENOMEM, "%s: out of memory", w->path);
    }
    line[n++] = '\n';
    line[n] = '\0';
    aha_status st = AHA_OK;
    pthread_mutex_lock(&w->mu);
    size_t off = 0;
    while (off < n) {
        ssize_t k = write(w->fd, line + off, n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            st = aha_errf(err, e == ENOSPC ? AHA_ELIMIT : AHA_EIO, "write %s: %s", w->path, strerror(e));
            break;
        }
        off += (size_t)k;
    }
    if (st == AHA_OK && w->fsync_each && fdatasync(w->fd) != 0)
        st = aha_errf(err, AHA_EIO, "fdatasync %s: %s", w->path, strerror(errno));
    pthread_mutex_unlock(&w->mu);
    free(line);
    return st;
}

aha_status aha_jsonl_writer_close(aha_jsonl_writer *w, aha_err *err)
{
    if (!w) return AHA_OK;
    aha_status st = AHA_OK;
    if (fsync(w->fd) != 0 && errno != EINVAL) st = aha_errf(err, AHA_EIO, "fsync %s: %s", w->path, strerror(errno));
    if (close(w->fd) != 0 && st == AHA_OK) st = aha_errf(err, AHA_EIO, "close %s: %s", w->path, strerror(errno));
    pthread_mutex_destroy(&w->mu);
    free(w->path);
    free(w);
    return st;
}
