/* log.c: see log.h. One write(2)-sized fprintf per record under a mutex, so lines from
 * worker threads never interleave. */
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static _Atomic int log_level = AHA_LOG_INFO;
static char log_component[32] = "aha";
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void aha_log_set_level(aha_log_level level) { atomic_store(&log_level, (int)level); }
aha_log_level aha_log_get_level(void) { return (aha_log_level)atomic_load(&log_level); }

void aha_log_set_component(const char *name)
{
    pthread_mutex_lock(&log_mu);
    snprintf(log_component, sizeof log_component, "%s", name);
    pthread_mutex_unlock(&log_mu);
}

aha_status aha_log_parse_level(const char *s, aha_log_level *out, aha_err *err)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < (int)AHA_ARRAY_LEN(names); i++)
        if (s && strcasecmp(s, names[i]) == 0) {
            *out = (aha_log_level)i;
            return AHA_OK;
        }
    if (s && strcasecmp(s, "warning") == 0) {
        *out = AHA_LOG_WARN;
        return AHA_OK;
    }
    return aha_errf(err, AHA_EINVAL, "log level '%s' is not one of debug, info, warn, error, off",
                    s ? s : "");
}

void aha_log(aha_log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_level)) return;
    static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_mu);
    fprintf(stderr, "%s.%03ldZ %s %s: %s\n", when, ts.tv_nsec / 1000000,
            tags[level < AHA_LOG_OFF ? level : AHA_LOG_ERROR], log_component, msg);
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
}
