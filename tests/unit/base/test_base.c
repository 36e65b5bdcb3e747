/* test_base: status strings, rng determinism and streams, atomic file writes. */
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "base/rng.h"
#include "base/status.h"

int main(void)
{
    CHECK(strcmp(aha_status_name(AHA_EINVAL), "EINVAL") == 0, "name");
    CHECK(aha_status_grpc_code(AHA_EINVAL) == 3, "grpc code of EINVAL");
    CHECK(aha_status_grpc_code(AHA_ELIMIT) == 8, "grpc code of ELIMIT");
    aha_err err = {0};
    CHECK(aha_errf(&err, AHA_EFORMAT, "bad %s", "thing") == AHA_EFORMAT, "errf returns status");
    CHECK(strcmp(err.msg, "bad thing") == 0, "msg '%s'", err.msg);
    aha_err_prefix(&err, AHA_EFORMAT, "file.json");
    CHECK(strcmp(err.msg, "file.json: bad thing") == 0, "prefixed '%s'", err.msg);

    aha_rng a, b, c;
    aha_rng_seed(&a, 42, 0);
    aha_rng_seed(&b, 42, 0);
    aha_rng_seed(&c, 42, 1);
    int same = 1, diff = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = aha_rng_u64(&a), y = aha_rng_u64(&b), z = aha_rng_u64(&c);
        same &= x == y;
        diff += x != z;
    }
    CHECK(same, "same seed and stream give the same numbers");
    CHECK(diff > 990, "another stream differs (%d of 1000)", diff);
    /* uniform mean and normal moments on 200k draws */
    double s = 0, s2 = 0, m = 0;
    int below_ok = 1;
    for (int i = 0; i < 200000; i++) {
        double n = aha_rng_normal(&a);
        s += n;
        s2 += n * n;
        m += aha_rng_f32(&a);
        below_ok &= aha_rng_below(&a, 7) < 7;
    }
    CHECK(fabs(s / 200000) < 0.01, "normal mean %g", s / 200000);
    CHECK(fabs(s2 / 200000 - 1) < 0.02, "normal var %g", s2 / 200000);
    CHECK(fabs(m / 200000 - 0.5) < 0.005, "uniform mean %g", m / 200000);
    CHECK(below_ok, "below() in range");

    char dir[] = "/tmp/aha_test_base_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[512], sub[512];
    aha_path_join(path, sizeof path, dir, "f.txt", NULL);
    CHECK(aha_write_file_atomic(path, "hello", 5, &err) == AHA_OK, "%s", err.msg);
    char *buf = NULL;
    size_t len = 0;
    CHECK(aha_read_file(path, 100, &buf, &len, &err) == AHA_OK, "%s", err.msg);
    CHECK(len == 5 && buf && strcmp(buf, "hello") == 0, "content");
    free(buf);
    CHECK(aha_read_file(path, 3, &buf, &len, &err) == AHA_ELIMIT, "limit enforced");
    CHECK(strstr(err.msg, "f.txt") != NULL, "message names the file: %s", err.msg);
    aha_path_join(sub, sizeof sub, dir, "a/b/c", NULL);
    CHECK(aha_mkdirs(sub, &err) == AHA_OK && aha_path_is_dir(sub), "mkdirs");
    CHECK(aha_remove_tree(dir, &err) == AHA_OK && !aha_path_exists(dir), "remove tree");
    return th_done("test_base");
}
