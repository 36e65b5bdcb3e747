/* service.c: parsing of the flags every aha service shares (see service.h). */
#include "rpc/service.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/log.h"

void aha_rpc_service_args_init(aha_rpc_service_args *a, const char *name,
                               const char *default_listen)
{
    memset(a, 0, sizeof *a);
    aha_rpc_server_opts_init(&a->server);
    a->server.name = name;
    a->server.listen = default_listen;
}

void aha_rpc_service_usage(FILE *f)
{
    fputs("common flags:\n"
          "  --listen ADDR        host:port or unix:/path to serve on\n"
          "  --config FILE.json   service configuration\n"
          "  --log-level LEVEL    debug|info|warn|error|off (default info)\n"
          "  --threads N          completion-queue threads, >= 2 (default 2)\n"
          "  --max-message-mb N   largest message in MiB (default 64)\n"
          "  --grace-ms N         drain grace period after SIGTERM (default 5000)\n"
          "  --notice-ms N        NOT_SERVING period before refusing calls (default 0)\n"
          "  --max-concurrent N   calls handled at once (default 256)\n"
          "  --summary-s N        period of the summary log line, 0 = exit only (default 60)\n"
          "  --tls-cert FILE --tls-key FILE   serve TLS\n"
          "  --auth-token-file FILE  require 'authorization: Bearer <token in FILE>'\n"
          "  --service-token-file FILE  token for service-to-service calls, accepted on every\n"
          "                       method (else $AHA_SERVICE_TOKEN)\n"
          "  --job-token-file FILE  token of job clients, accepted on the job API only;\n"
          "                       internal methods answer PERMISSION_DENIED (else $AHA_JOB_TOKEN)\n"
          "  --tls-ca FILE        roots this service's own clients trust; with --tls-cert also\n"
          "                       the CA of client certificates (mutual TLS)\n"
          "  --tls-client-auth require|optional  with --tls-ca: must clients present a\n"
          "                       certificate (default require)\n",
          f);
}

static aha_status parse_int(const char *flag, const char *v, long lo, long hi, long *out,
                            aha_err *err)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return aha_errf(err, AHA_EINVAL, "%s: '%s' is not an integer in [%ld, %ld]", flag, v, lo,
                        hi);
    *out = x;
    return AHA_OK;
}

aha_status aha_rpc_service_parse(aha_rpc_service_args *a, int argc, char **argv, aha_err *err)
{
    static const char *const known[] = {"--listen",   "--config",         "--log-level",
                                        "--threads",  "--max-message-mb", "--grace-ms",
                                        "--notice-ms", "--max-concurrent", "--summary-s",
                                        "--tls-cert", "--tls-key", "--auth-token-file",
                                        "--service-token-file", "--job-token-file", "--tls-ca",
                                        "--tls-client-auth"};
    a->rest_store = calloc((size_t)argc + 1, sizeof *a->rest_store);
    if (!a->rest_store) return aha_errf(err, AHA_ENOMEM, "out of memory");
    a->rest_argv = a->rest_store;
    a->rest_argc = 0;
    if (argc > 0) a->rest_argv[a->rest_argc++] = argv[0];
    aha_log_set_component(a->server.name);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->help = 1;
            continue;
        }
        int which = -1;
        const char *val = NULL;
        for (size_t k = 0; k < AHA_ARRAY_LEN(known); k++) {
            size_t n = strlen(known[k]);
            if (strncmp(arg, known[k], n) != 0) continue;
            if (arg[n] == '=') val = arg + n + 1;
            else if (arg[n] != 0) continue;
            which = (int)k;
            break;
        }
        if (which < 0) {
            a->rest_argv[a->rest_argc++] = argv[i];
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) return aha_errf(err, AHA_EINVAL, "%s needs a value", known[which]);
            val = argv[++i];
        }
        long x = 0;
        switch (which) {
        case 0:
            if (!*val) return aha_errf(err, AHA_EINVAL, "--listen: empty address");
            a->server.listen = val;
            break;
        case 1: a->config_path = val; break;
        case 2: {
            aha_log_level lv;
            AHA_TRY(aha_log_parse_level(val, &lv, err));
            aha_log_set_level(lv);
            break;
        }
        case 3:
            AHA_TRY(parse_int(known[which], val, 2, 256, &x, err));
            a->server.threads = (int)x;
            break;
        case 4:
            AHA_TRY(parse_int(known[which], val, 1, 2047, &x, err));
            a->server.max_recv_bytes = a->server.max_send_bytes = (int64_t)x << 20;
            break;
        case 5:
            AHA_TRY(parse_int(known[which], val, 0, 3600000, &x, err));
            a->server.grace_ms = (int)x;
            break;
        case 6:
            AHA_TRY(parse_int(known[which], val, 0, 3600000, &x, err));
            a->server.notice_ms = (int)x;
            break;
        case 7:
            AHA_TRY(parse_int(known[which], val, 1, 100000, &x, err));
            a->server.max_concurrent_calls = (int)x;
            break;
        case 8:
            AHA_TRY(parse_int(known[which], val, 0, 86400, &x, err));
            a->server.summary_s = (int)x;
            break;
        case 9: a->server.tls_cert_file = val; break;
        case 10: a->server.tls_key_file = val; break;
        case 11: {
            /* A file, not a flag value: argv is visible to every user of the machine. */
            char *text = NULL;
            size_t len = 0;
            AHA_TRY(aha_read_file(val, 4096, &text, &len, err));
            while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
                               text[len - 1] == ' ' || text[len - 1] == '\t'))
                text[--len] = 0;
            if (len == 0 || strlen(text) != len) {
                free(text);
                return aha_errf(err, AHA_EINVAL, "--auth-token-file %s: empty or binary token",
                                val);
            }
            free(a->token_store);
            a->token_store = text;
            a->server.auth_token = text;
            break;
        }
        case 12:
        case 13: {
            char *text = NULL;
            AHA_TRY(aha_rpc_read_secret(val, NULL, &text, err));
            char **store = which == 12 ? &a->service_token_store : &a->job_token_store;
            free(*store);
            *store = text;
            if (which == 12) a->server.service_token = text;
            else a->server.job_token = text;
            break;
        }
        case 14: a->tls_ca = val; break;
        case 15:
            if (strcmp(val, "require") == 0) a->server.tls_client_optional = 0;
            else if (strcmp(val, "optional") == 0) a->server.tls_client_optional = 1;
            else
                return aha_errf(err, AHA_EINVAL,
                                "--tls-client-auth: '%s' is not require or optional", val);
            break;
        }
    }
    a->rest_argv[a->rest_argc] = NULL;
    /* Files win over the environment (a variable is inherited by every child process). */
    if (!a->server.service_token) {
        AHA_TRY(aha_rpc_read_secret(NULL, "AHA_SERVICE_TOKEN", &a->service_token_store, err));
        a->server.service_token = a->service_token_store;
    }
    if (!a->server.job_token) {
        AHA_TRY(aha_rpc_read_secret(NULL, "AHA_JOB_TOKEN", &a->job_token_store, err));
        a->server.job_token = a->job_token_store;
    }
    /* Without a server certificate the CA is only what this service's own clients trust
     * (the learner calling the other services); with one it also checks client certificates. */
    if (a->tls_ca && a->server.tls_cert_file) a->server.tls_client_ca_file = a->tls_ca;
    if ((a->server.tls_cert_file == NULL) != (a->server.tls_key_file == NULL))
        return aha_errf(err, AHA_EINVAL, "--tls-cert and --tls-key go together");
    return AHA_OK;
}

void aha_rpc_service_args_free(aha_rpc_service_args *a)
{
    free(a->rest_store);
    a->rest_store = NULL;
    free(a->token_store);
    a->token_store = NULL;
    free(a->service_token_store);
    free(a->job_token_store);
    a->service_token_store = a->job_token_store = NULL;
    a->rest_argv = NULL;
}

void aha_rpc_service_announce(const aha_rpc_service_args *a, const aha_rpc_server *s)
{
    printf("aha-%s listening on port %d\n", a->server.name, aha_rpc_server_port(s));
    fflush(stdout);
}

int aha_rpc_service_int_flag(const aha_rpc_service_args *a, const char *flag, const char *v,
                             long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "aha-%s: %s: '%s' is not an integer in [%ld, %ld]\n", a->server.name, flag,
                v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

aha_status aha_rpc_service_serve(aha_rpc_service_args *a, const aha_rpc_service_method *m, int n,
                                 void *user)
{
    aha_err err = {0};
    aha_rpc_server *s = NULL;
    aha_status st = aha_rpc_server_create(&a->server, &s, &err);
    for (int i = 0; i < n && st == AHA_OK; i++)
        st = aha_rpc_server_add_method(s, m[i].svc, m[i].method, m[i].kind, m[i].fn, user, &err);
    if (st == AHA_OK) st = aha_rpc_server_start(s, &err);
    if (st == AHA_OK) {
        aha_rpc_service_announce(a, s);
        st = aha_rpc_server_run(s, &err);
    }
    if (st != AHA_OK) {
        fprintf(stderr, "aha-%s: %s\n", a->server.name, err.msg);
        if (st == AHA_ETIMEOUT) return st; /* handlers still running: do not free under them */
    }
    aha_rpc_server_free(s);
    return st;
}
