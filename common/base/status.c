/* status.c: status names and the error-message buffer. */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
#define X(name, code, desc) #name,
    AHA_STATUS_MAP(X)
#undef X
};
static const char *const status_descs[] = {
#define X(name, code, desc) desc,
    AHA_STATUS_MAP(X)
#undef X
};
static const int status_codes[] = {
#define X(name, code, desc) code,
    AHA_STATUS_MAP(X)
#undef X
};

const char *aha_status_name(aha_status st)
{
    return (unsigned)st < AHA_STATUS_COUNT ? status_names[st] : "EUNKNOWN";
}

const char *aha_status_str(aha_status st)
{
    return (unsigned)st < AHA_STATUS_COUNT ? status_descs[st] : "unknown status";
}

int aha_status_grpc_code(aha_status st)
{
    return (unsigned)st < AHA_STATUS_COUNT ? status_codes[st] : 2;
}

aha_status aha_verrf(aha_err *err, aha_status st, const char *fmt, va_list ap)
{
    if (err) {
        err->status = st;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return st;
}

aha_status aha_errf(aha_err *err, aha_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aha_verrf(err, st, fmt, ap);
    va_end(ap);
    return st;
}

aha_status aha_err_prefix(aha_err *err, aha_status st, const char *fmt, ...)
{
    if (!err) return st;
    char prefix[AHA_ERR_LEN], old[AHA_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    if (err->status == AHA_OK) err->status = st;
    /* prefix + ": " + old message, cut to the buffer */
    const char *tail = old[0] ? old : aha_status_str(st);
    size_t n = strlen(prefix), cap = sizeof err->msg - 1;
    if (n > cap) n = cap;
    memcpy(err->msg, prefix, n);
    for (const char *p = ": "; *p && n < cap; p++) err->msg[n++] = *p;
    for (const char *p = tail; *p && n < cap; p++) err->msg[n++] = *p;
    err->msg[n] = '\0';
    return err->status;
}

const char *aha_err_msg(const aha_err *err)
{
    if (!err) return "";
    return err->msg[0] ? err->msg : aha_status_str(err->status);
}

void aha_err_clear(aha_err *err)
{
    if (!err) return;
    err->status = AHA_OK;
    err->msg[0] = '\0';
}

void aha__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "aha: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}
