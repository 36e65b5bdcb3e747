/* service.h: the common start-up of every aha service binary. The services' mains go through
 * aha_rpc_service_begin (service_main.h), which runs the parse and usage steps below for
 * them; this is the layer underneath:
 *
 *   aha_rpc_service_args a;
 *   aha_rpc_service_args_init(&a, "reward", "0.0.0.0:50052");
 *   if (aha_rpc_service_parse(&a, argc, argv, &err) != AHA_OK) { usage; exit 2 }
 *   ... the service reads a.config_path and its own flags from a.rest_argc/a.rest_argv ...
 *   aha_rpc_server_create(&a.server, ...); add methods; start;
 *   aha_rpc_service_announce(&a, server); aha_rpc_server_run(...)
 *
 * Common flags (also as --flag=value):
 *   --listen ADDR        host:port or unix:/path            (default: the service's)
 *   --config FILE.json   service configuration file         (read by the service)
 *   --log-level LEVEL    debug|info|warn|error|off          (info; debug logs every request)
 *   --threads N          completion-queue threads, >= 2     (2)
 *   --max-message-mb N   largest message in either direction, MiB (64)
 *   --grace-ms N         drain: time in-flight calls get after SIGTERM (5000)
 *   --notice-ms N        drain: NOT_SERVING period before refusing calls (0)
 *   --max-concurrent N   calls handled at once; more get RESOURCE_EXHAUSTED (256)
 *   --summary-s N        period of the info summary line, 0 = at exit only (60)
 *   --tls-cert FILE --tls-key FILE   serve TLS instead of plaintext
 *   --auth-token-file FILE           require "authorization: Bearer <token>" (health exempt)
 *   --service-token-file FILE        service-to-service token, accepted on every method
 *                                    (else $AHA_SERVICE_TOKEN)
 *   --job-token-file FILE            job-client token, accepted on the public services only
 *                                    (aha.v1.Learner); elsewhere PERMISSION_DENIED (else
 *                                    $AHA_JOB_TOKEN)
 *   --tls-ca FILE                    roots the service's own clients trust (a.tls_ca); with
 *                                    --tls-cert also the client CA: mutual TLS
 *   --tls-client-auth require|optional   with --tls-ca (default require)
 * Without any token every call is open (the loopback demo); with one, health stays open and
 * every other call needs a valid token (rpc.h, aha_rpc_server_opts). A service that also calls
 * others (the learner) sends a.server.service_token as its channels' bearer_token, trusts
 * a.tls_ca as tls_ca_file and presents a.server.tls_cert_file/key_file as
 * its client certificate.
 * Anything else is left, in order, in rest_argv for the service (rest_argv[0] = argv[0]). */
#ifndef AHA_RPC_SERVICE_H
#define AHA_RPC_SERVICE_H

#include <stdio.h>

#include "rpc/rpc.h"

typedef struct {
    /* public: filled by parse */
    aha_rpc_server_opts server;
    const char *config_path; /* NULL when --config was not given */
    const char *tls_ca;      /* --tls-ca FILE, NULL when not given */
    int help;                /* --help / -h was given */
    int rest_argc;
    char **rest_argv;        /* NULL-terminated, points into argv */
    /* private */
    char **rest_store;
    char *token_store;
    char *service_token_store, *job_token_store;
} aha_rpc_service_args;

void aha_rpc_service_args_init(aha_rpc_service_args *a, const char *name,
                               const char *default_listen);
/* Parse the common flags; sets the log level and component. EINVAL names a bad flag. */
aha_status aha_rpc_service_parse(aha_rpc_service_args *a, int argc, char **argv, aha_err *err);
/* The common flags' help text. */
void aha_rpc_service_usage(FILE *f);
void aha_rpc_service_args_free(aha_rpc_service_args *a);
/* Print "<name> listening on port N" on stdout and flush: launchers and tests started with
 * --listen 127.0.0.1:0 read the port from it (tests/integration/svc.py). */
void aha_rpc_service_announce(const aha_rpc_service_args *a, const aha_rpc_server *s);

/* A service flag's integer value in [lo, hi]: 1 on success, else 0 after one line on stderr
 * ("aha-NAME: --flag: 'v' is not an integer in [lo, hi]"). */
int aha_rpc_service_int_flag(const aha_rpc_service_args *a, const char *flag, const char *v,
                             long lo, long hi, long *out);

typedef struct {
    const ProtobufCServiceDescriptor *svc;
    const char *method;
    aha_rpc_kind kind;
    aha_rpc_handler fn;
} aha_rpc_service_method;

/* Create the server from a's options, add the n methods (each called with user), start,
 * announce, and serve until SIGTERM/SIGINT drained it. A failure is printed as
 * "aha-NAME: ..." and returned; AHA_ETIMEOUT means handlers ignored the drain and still run:
 * the server was not freed under them, and the caller must not free what they use either
 * (return from main). */
aha_status aha_rpc_service_serve(aha_rpc_service_args *a, const aha_rpc_service_method *m, int n,
                                 void *user);

#endif
