/* test_topology.c: ahactl's topology parser (cli/ahactl/up.c) on the generated
 * examples/topology-local.json (deploy/gen.py's output, the format of docs/DEPLOY.md) and on
 * malformed files, each rejected with the key named. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../harness.h"
#include "base/fs.h"
#include "up.h"

static void expect_error(const char *json, const char *needle)
{
    aha_topology t;
    aha_err e = {0};
    aha_status st = aha_topology_parse(json, strlen(json), &t, &e);
    CHECK(st == AHA_EINVAL && strstr(e.msg, needle), "%s -> '%s' (want '%s')", json, e.msg, needle);
    CHECK(t.n == 0 && t.services == NULL, "nothing left after an error");
}

int main(void)
{
    const char *root = getenv("AHA_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/topology-local.json", root ? root : ".");
    char *text = NULL;
    size_t len = 0;
    aha_err e = {0};
    CHECK(aha_read_file(path, 1 << 20, &text, &len, &e) == AHA_OK, "%s", e.msg);
    aha_topology t;
    if (text) {
        CHECK(aha_topology_parse(text, len, &t, &e) == AHA_OK, "generated topology: %s", e.msg);
        CHECK(t.n == 4, "4 services, got %d", t.n);
        const char *names[4] = {"reward", "rollout", "refpolicy", "learner"};
        for (int i = 0; i < t.n && i < 4; i++) {
            CHECK(!strcmp(t.services[i].name, names[i]), "service %d is %s", i, t.services[i].name);
            char want[64];
            snprintf(want, sizeof want, "127.0.0.1:%d", t.services[i].port);
            CHECK(!strcmp(t.services[i].health, want), "%s health %s", names[i], t.services[i].health);
            CHECK(t.services[i].restart, "%s restarts", names[i]);
            CHECK(t.services[i].n_args >= 2 && !strcmp(t.services[i].args[0], "--listen"),
                  "%s args start with --listen", names[i]);
            CHECK(strstr(t.services[i].binary, names[i]) != NULL, "%s binary %s", names[i],
                  t.services[i].binary);
        }
        aha_topology_free(&t);
        free(text);
    }

    const char *ok = "{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a-1\",\"binary\":\"x\","
                     "\"args\":[],\"port\":7,\"restart\":false}]}";
    CHECK(aha_topology_parse(ok, strlen(ok), &t, &e) == AHA_OK, "minimal: %s", e.msg);
    CHECK(t.n == 1 && !strcmp(t.services[0].health, "127.0.0.1:7") && !t.services[0].restart &&
              t.services[0].n_args == 0,
          "defaults");
    aha_topology_free(&t);

    expect_error("[", "not JSON");
    expect_error("[]", "must be a JSON object");
    expect_error("{\"services\":[]}", "topology.format");
    expect_error("{\"format\":\"aha.topology/v2\",\"services\":[]}", "topology.format");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[],\"x\":1}", "topology.x: unknown");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[]}", "topology.services");
    expect_error("{\"format\":\"aha.topology/v1\",\"about\":3,\"services\":[]}", "topology.about");
    const char *base = "{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a\",\"binary\":\"x\","
                       "\"args\":[],\"port\":7,\"restart\":true%s}]}";
    const struct {
        const char *extra, *needle;
    } cases[] = {
        {",\"colour\":1", "services[0].colour: unknown field"},
        {",\"health\":5", "services[0].health"},
        {",\"health\":\"nocolon\"", "services[0].health"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char j[512];
        snprintf(j, sizeof j, base, cases[i].extra);
        expect_error(j, cases[i].needle);
    }
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"A\",\"binary\":\"x\","
                 "\"args\":[],\"port\":7,\"restart\":true}]}",
                 "services[0].name");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a\",\"binary\":\"\","
                 "\"args\":[],\"port\":7,\"restart\":true}]}",
                 "services[0].binary");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a\",\"binary\":\"x\","
                 "\"args\":[1],\"port\":7,\"restart\":true}]}",
                 "services[0].args[0]");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a\",\"binary\":\"x\","
                 "\"port\":7,\"restart\":true}]}",
                 "services[0].args");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a\",\"binary\":\"x\","
                 "\"args\":[],\"port\":70000,\"restart\":true}]}",
                 "services[0].port");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a\",\"binary\":\"x\","
                 "\"args\":[],\"port\":7,\"restart\":1}]}",
                 "services[0].restart");
    expect_error("{\"format\":\"aha.topology/v1\",\"services\":[{\"name\":\"a\",\"binary\":\"x\","
                 "\"args\":[],\"port\":7,\"restart\":true},{\"name\":\"a\",\"binary\":\"y\","
                 "\"args\":[],\"port\":8,\"restart\":true}]}",
                 "services[1].name: \"a\" is used twice");
    expect_error("{\"format\":\"aha.topology/v1\",\"format\":\"aha.topology/v1\",\"services\":[]}",
                 "not JSON");
    return th_done("learnersrv_topology");
}
