/* status.h: the one status enum of libaha and its error-message buffer.
 *
 * Library functions return an aha_status and, on failure, fill an optional aha_err with a
 * one-line message that names what is wrong (the file, the tensor, the field). Bad input from
 * outside becomes a status; a broken internal invariant is AHA_ASSERT, which aborts. Only
 * main() exits. */
#ifndef AHA_BASE_STATUS_H
#define AHA_BASE_STATUS_H

#include <stdarg.h>
#include <stddef.h>

/* X(name, grpc status code, description) */
#define AHA_STATUS_MAP(X)                                                        \
    X(OK, 0, "ok")                                                               \
    X(EINVAL, 3, "invalid argument")           /* bad request, flag, spec */     \
    X(EFORMAT, 3, "malformed input")           /* a file that lies or is cut */  \
    X(ENOTFOUND, 5, "not found")                                                 \
    X(EEXIST, 6, "already exists")                                               \
    X(EPERM, 7, "permission denied")                                             \
    X(ELIMIT, 8, "resource exhausted")         /* over a configured bound */     \
    X(ENOMEM, 8, "out of memory")                                                \
    X(EPRECOND, 9, "failed precondition")                                        \
    X(ECANCELLED, 1, "cancelled")                                                \
    X(ETIMEOUT, 4, "deadline exceeded")                                          \
    X(EUNSUPPORTED, 12, "unsupported")                                           \
    X(EIO, 13, "i/o error")                                                      \
    X(EDEVICE, 13, "device error")             /* CUDA, cuBLAS, NCCL */          \
    X(EINTERNAL, 13, "internal error")                                           \
    X(EUNAVAILABLE, 14, "unavailable")                                           \
    X(EUNAUTH, 16, "unauthenticated")

typedef enum {
#define AHA__STATUS_ENUM(name, code, desc) AHA_##name,
    AHA_STATUS_MAP(AHA__STATUS_ENUM)
#undef AHA__STATUS_ENUM
    AHA_STATUS_COUNT
} aha_status;

/* "EINVAL" etc. */
const char *aha_status_name(aha_status st);
/* "invalid argument" etc. */
const char *aha_status_str(aha_status st);
/* the matching grpc_status_code value */
int aha_status_grpc_code(aha_status st);

#define AHA_ERR_LEN 512

typedef struct {
    aha_status status;
    char msg[AHA_ERR_LEN];
} aha_err;

/* Fill err (may be NULL) with a formatted message and return st. */
aha_status aha_errf(aha_err *err, aha_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
aha_status aha_verrf(aha_err *err, aha_status st, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Prefix an existing message: "ctx: old message". Returns err->status (or st if err NULL). */
aha_status aha_err_prefix(aha_err *err, aha_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* message of err, or the status string when err holds none */
const char *aha_err_msg(const aha_err *err);
void aha_err_clear(aha_err *err);

/* Internal invariants: abort with file and line. Never for bad outside input. */
void aha__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define AHA_ASSERT(x) ((x) ? (void)0 : aha__assert_fail(#x, __FILE__, __LINE__))

#define AHA_TRY(expr)                                                            \
    do {                                                                         \
        aha_status aha__st = (expr);                                             \
        if (aha__st != AHA_OK) return aha__st;                                   \
    } while (0)

#define AHA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
