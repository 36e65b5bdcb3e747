/* service_main.c: the opening of every service's main() (see service_main.h). Library code:
 * it prints what is wrong with the flags and returns the exit code, main() exits. */
#include "rpc/service_main.h"

#include <string.h>

static void usage(const aha_rpc_service_main *m, FILE *f)
{
    m->usage(f);
    aha_rpc_service_usage(f);
}

/* Whether f is the flag of spec "--model DIR" (its first word). */
static int is_flag(const char *spec, const char *f)
{
    size_t n = strcspn(spec, " ");
    return strlen(f) == n && strncmp(f, spec, n) == 0;
}

int aha_rpc_service_begin(aha_rpc_service_args *a, const aha_rpc_service_main *m, int argc,
                          char **argv, void *user, int *exit_code)
{
    aha_rpc_service_args_init(a, m->name, m->default_listen);
    aha_err err;
    int code = -1; /* -1: go on */
    if (aha_rpc_service_parse(a, argc, argv, &err) != AHA_OK) {
        fprintf(stderr, "aha-%s: %s\n", m->name, err.msg);
        code = 2;
    } else if (a->help) {
        usage(m, stdout);
        code = 0;
    }
    /* The service's flags all take a value, so they come in pairs; the first refusal ends the
     * walk, as one bad flag is enough to stop the start. */
    int have_required = 0;
    for (int i = 1; code < 0 && i < a->rest_argc; i += 2) {
        const char *f = a->rest_argv[i];
        const char *v = i + 1 < a->rest_argc ? a->rest_argv[i + 1] : NULL;
        int r = v ? m->flag(user, a, f, v) : AHA_RPC_FLAG_UNKNOWN;
        if (r == AHA_RPC_FLAG_UNKNOWN)
            fprintf(stderr, "aha-%s: unknown flag or missing value: %s\n", m->name, f);
        if (r != 1) code = 2;
        else if (m->required && is_flag(m->required, f)) have_required = 1;
    }
    if (code < 0 && m->required && !have_required) {
        fprintf(stderr, "aha-%s: %s is required\n", m->name, m->required);
        code = 2;
    }
    if (code < 0 && m->check && !m->check(user)) code = 2;
    if (code < 0) return 1;
    if (code == 2) usage(m, stderr);
    aha_rpc_service_args_free(a);
    *exit_code = code;
    return 0;
}
