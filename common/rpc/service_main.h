/* service_main.h: the opening of every aha service's main(), written once. It parses the
 * common flags (service.h), answers --help, hands each of the service's own "--flag value"
 * pairs to the service, and checks the set is whole; the service keeps only the meaning of
 * its flags. Flags, messages and exit codes are the ones deploy scripts and the integration
 * tests rely on:
 *   --help                      usage on stdout, exit 0
 *   a bad common flag           "aha-NAME: <why>", usage on stderr, exit 2
 *   an unknown flag, or a flag without a value
 *                               "aha-NAME: unknown flag or missing value: --flag", usage, exit 2
 *   the required flag missing   "aha-NAME: --flag WHAT is required", usage, exit 2
 *   a refused value or set      the service's own line, usage on stderr, exit 2
 *
 *   aha_rpc_service_args a;
 *   int rc;
 *   if (!aha_rpc_service_begin(&a, &my_main, argc, argv, &my_opts, &rc)) return rc;
 *   ... create the service, aha_rpc_service_serve(&a, methods, n, &svc) ... */
#ifndef AHA_RPC_SERVICE_MAIN_H
#define AHA_RPC_SERVICE_MAIN_H

#include <stdio.h>

#include "rpc/service.h"

/* What a service's flag function returns for a flag that is not one of its own. */
#define AHA_RPC_FLAG_UNKNOWN (-1)

typedef struct {
    const char *name;           /* "reward": messages say "aha-reward: ..." */
    const char *default_listen; /* "0.0.0.0:50051" */
    /* The service's own help; the common flags' help (aha_rpc_service_usage) follows it. */
    void (*usage)(FILE *f);
    /* One of the service's flags with its value (never NULL): 1 when taken, 0 after one line
     * on stderr saying why the value is refused, AHA_RPC_FLAG_UNKNOWN when not the service's. */
    int (*flag)(void *user, const aha_rpc_service_args *a, const char *flag, const char *value);
    /* "--model DIR": the flag (its first word) every start must give, or NULL. Without it
     * the start fails with "aha-NAME: --model DIR is required". */
    const char *required;
    /* NULL, or after the last flag and the required one: 1 when the flags make a whole (two
     * agree), else 0 after one line on stderr. */
    int (*check)(void *user);
} aha_rpc_service_main;

/* Initialise and fill *a from argv, calling m's flag and check functions with user. Returns 1
 * when main goes on (it frees a with aha_rpc_service_args_free later); else 0 with a already
 * freed and *exit_code the code main returns (0 after --help, 2 after a bad flag). */
int aha_rpc_service_begin(aha_rpc_service_args *a, const aha_rpc_service_main *m, int argc,
                          char **argv, void *user, int *exit_code);

#endif
