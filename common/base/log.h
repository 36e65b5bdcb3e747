/* log.h: leveled, thread-safe logging to stderr, one line per record:
 *   2026-11-28T13:45:01.123Z INFO  reward: scored 256 items in 3.1 ms
 * Secrets (tokens, keys) are never passed to the logger. */
#ifndef AHA_BASE_LOG_H
#define AHA_BASE_LOG_H

#include "status.h"

typedef enum { AHA_LOG_DEBUG = 0, AHA_LOG_INFO, AHA_LOG_WARN, AHA_LOG_ERROR, AHA_LOG_OFF } aha_log_level;

void aha_log_set_level(aha_log_level level);
aha_log_level aha_log_get_level(void);
/* "debug" | "info" | "warn" | "error" | "off" */
aha_status aha_log_parse_level(const char *s, aha_log_level *out, aha_err *err);
/* the component name printed on every line (the service name) */
void aha_log_set_component(const char *name);

void aha_log(aha_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define AHA_DEBUG(...) aha_log(AHA_LOG_DEBUG, __VA_ARGS__)
#define AHA_INFO(...) aha_log(AHA_LOG_INFO, __VA_ARGS__)
#define AHA_WARN(...) aha_log(AHA_LOG_WARN, __VA_ARGS__)
#define AHA_ERROR(...) aha_log(AHA_LOG_ERROR, __VA_ARGS__)

#endif
