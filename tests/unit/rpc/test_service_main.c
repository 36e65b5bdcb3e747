/* test_service_main.c: aha_rpc_service_begin (rpc/service_main.h), the opening every service
 * main() shares: for each argument vector, the exit code, stdout and stderr are what the
 * services have always printed (--help, a bad common flag, an unknown flag, a missing value,
 * a refused value, the required flag, the service's own whole-set check), and on success the
 * service's values and the common flags arrive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../harness.h"
#include "rpc/service_main.h"

typedef struct {
    long size;
    const char *name;
} demo_opts;

static void demo_usage(FILE *f) { fputs("usage: aha-demo --name NAME [--size N]\n", f); }

static int demo_flag(void *user, const aha_rpc_service_args *a, const char *f, const char *v)
{
    demo_opts *o = user;
    if (strcmp(f, "--size") == 0) return aha_rpc_service_int_flag(a, f, v, 1, 10, &o->size);
    if (strcmp(f, "--name") != 0) return AHA_RPC_FLAG_UNKNOWN;
    if (!*v) return fprintf(stderr, "aha-demo: --name: empty\n"), 0;
    o->name = v;
    return 1;
}

static int demo_check(void *user)
{
    const demo_opts *o = user;
    if (o->size % 2) fprintf(stderr, "aha-demo: --size %ld must be even\n", o->size);
    return o->size % 2 == 0;
}

static const aha_rpc_service_main demo_main = {
    .name = "demo", .default_listen = "127.0.0.1:7", .usage = demo_usage, .flag = demo_flag,
    .required = "--name NAME", .check = demo_check,
};

typedef struct {
    int go_on, rc;
    char out[8192], err[8192];
    aha_rpc_service_args a;
    demo_opts o;
} result;

/* The text one stream got while fn ran: the process's fd redirected into a temporary file. */
static void read_back(FILE *tmp, char *buf, size_t cap)
{
    rewind(tmp);
    size_t n = fread(buf, 1, cap - 1, tmp);
    buf[n] = 0;
    fclose(tmp);
}

static void run(result *r, int argc, char **argv)
{
    memset(r, 0, sizeof *r);
    r->o.size = 2;
    r->rc = -1;
    FILE *to = tmpfile(), *te = tmpfile();
    if (!to || !te) {
        fprintf(stderr, "tmpfile failed\n");
        exit(1);
    }
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(fileno(to), 1);
    dup2(fileno(te), 2);
    r->go_on = aha_rpc_service_begin(&r->a, &demo_main, argc, argv, &r->o, &r->rc);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    read_back(to, r->out, sizeof r->out);
    read_back(te, r->err, sizeof r->err);
}

#define ARGV(...) (char *[]){"aha-demo", __VA_ARGS__, NULL}
#define RUN(r, ...) run(r, (int)(sizeof ARGV(__VA_ARGS__) / sizeof(char *)) - 1, ARGV(__VA_ARGS__))

/* A refusal: not going on, exit 2, the first stderr line as expected, then the usage. */
static void check_refused(const result *r, const char *first_line, const char *what)
{
    CHECK(!r->go_on && r->rc == 2, "%s: go_on %d rc %d", what, r->go_on, r->rc);
    size_t n = strlen(first_line);
    CHECK(strncmp(r->err, first_line, n) == 0 && r->err[n] == '\n', "%s: stderr %.200s", what,
          r->err);
    CHECK(strstr(r->err, "usage: aha-demo") && strstr(r->err, "common flags:"),
          "%s: usage on stderr", what);
    CHECK(r->out[0] == 0, "%s: nothing on stdout", what);
}

int main(void)
{
    static result r;
    RUN(&r, "--help");
    CHECK(!r.go_on && r.rc == 0, "--help: go_on %d rc %d", r.go_on, r.rc);
    CHECK(strncmp(r.out, "usage: aha-demo", 15) == 0 && strstr(r.out, "common flags:\n"),
          "--help: usage then the common flags on stdout: %.100s", r.out);
    CHECK(r.err[0] == 0, "--help: stderr empty: %s", r.err);

    RUN(&r, "--threads", "x", "--name", "n");
    check_refused(&r, "aha-demo: --threads: 'x' is not an integer in [2, 256]", "bad common flag");
    RUN(&r, "--name", "n", "--bogus", "1");
    check_refused(&r, "aha-demo: unknown flag or missing value: --bogus", "unknown flag");
    RUN(&r, "--size", "4", "--name");
    check_refused(&r, "aha-demo: unknown flag or missing value: --name", "missing value");
    RUN(&r, "--size", "11", "--name", "n");
    check_refused(&r, "aha-demo: --size: '11' is not an integer in [1, 10]", "refused value");
    RUN(&r, "--name", "");
    check_refused(&r, "aha-demo: --name: empty", "refused by the service");
    RUN(&r, "--size", "4");
    check_refused(&r, "aha-demo: --name NAME is required", "required flag missing");
    RUN(&r, "--size", "3", "--name", "n");
    check_refused(&r, "aha-demo: --size 3 must be even", "whole-set check");

    RUN(&r, "--listen", "127.0.0.1:0", "--name", "alpha", "--size", "6", "--grace-ms=250");
    CHECK(r.go_on && r.rc == -1, "good flags go on: %d %d (%s)", r.go_on, r.rc, r.err);
    CHECK(r.o.size == 6 && r.o.name && strcmp(r.o.name, "alpha") == 0, "service values: %ld %s",
          r.o.size, r.o.name ? r.o.name : "(null)");
    CHECK(strcmp(r.a.server.listen, "127.0.0.1:0") == 0 && strcmp(r.a.server.name, "demo") == 0 &&
              r.a.server.grace_ms == 250,
          "common values: %s %s %d", r.a.server.listen, r.a.server.name, r.a.server.grace_ms);
    CHECK(r.out[0] == 0, "nothing on stdout before serving: %s", r.out);
    aha_rpc_service_args_free(&r.a);

    RUN(&r, "--name", "beta");
    CHECK(r.go_on && strcmp(r.a.server.listen, "127.0.0.1:7") == 0 && r.o.size == 2,
          "defaults kept: %s %ld", r.go_on ? r.a.server.listen : "-", r.o.size);
    if (r.go_on) aha_rpc_service_args_free(&r.a);
    return th_done("service_main");
}
