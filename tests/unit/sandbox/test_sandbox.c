/* test_sandbox: the code-execution reward and its sandbox (services/reward/sandbox.h).
 * Correct Python and C programs pass and wrong ones fail; then hostile programs (fork bombs,
 * reading /etc/passwd and this file, sockets, an infinite loop, a sleep, 10 GB allocations,
 * 1 GB of output, a big file) must each be contained within their limits and score 0 with a
 * reason. Test cases whose expected output is what the attack would print (the real
 * /etc/passwd, computed here) make a leak score 1 and fail the test. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "sandbox.h"

static aha_sandbox_opts g_o;

/* JSON string literal of s (for building test-case arrays). */
static char *jstr(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(6 * n + 3), *p = o;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') *p++ = '\\', *p++ = (char)c;
        else if (c == '\n') *p++ = '\\', *p++ = 'n';
        else if (c < 0x20) p += sprintf(p, "\\u%04x", c);
        else *p++ = (char)c;
    }
    *p++ = '"';
    *p = 0;
    return o;
}

/* Score `program` (fenced as ```lang) against one case (input, output). */
static aha_status judge(aha_code_lang lang, const char *program, const char *input,
                        const char *output, aha_code_verdict *v, double *secs)
{
    const char *tag = lang == AHA_CODE_C ? "c" : "python";
    size_t n = strlen(program) + 128;
    char *completion = malloc(n);
    snprintf(completion, n, "<think>t</think><answer>\n```%s\n%s```\n</answer>", tag, program);
    char *ji = jstr(input), *jo = jstr(output);
    size_t tn = strlen(ji) + strlen(jo) + 64;
    char *tests = malloc(tn);
    snprintf(tests, tn, "[{\"input\": %s, \"output\": %s}]", ji, jo);
    aha_err err = {0};
    double t0 = aha_now_s();
    aha_status st = aha_code_score(&g_o, lang, completion, strlen(completion), tests,
                                   strlen(tests), v, &err);
    *secs = aha_now_s() - t0;
    if (st != AHA_OK) fprintf(stderr, "  judge: %s\n", err.msg);
    free(completion);
    free(ji);
    free(jo);
    free(tests);
    return st;
}

/* Processes whose real uid is a sandbox uid (as root): none may outlive a run. */
static int sandbox_processes(void)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%.20s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        const char *u = strstr(buf, "\nUid:");
        if (!u) continue;
        unsigned long uid = strtoul(u + 5, NULL, 10);
        if (uid >= g_o.uid_base && uid < g_o.uid_base + g_o.uid_count) n++;
    }
    if (d) closedir(d);
    return n;
}

/* A hostile program: scored 0, quickly, with a reason containing `why`, and nothing left. */
static void contained(const char *name, aha_code_lang lang, const char *program,
                      const char *output, const char *why, double max_s)
{
    aha_code_verdict v;
    double secs = 0;
    aha_status st = judge(lang, program, "", output, &v, &secs);
    CHECK(st == AHA_OK, "%s: judged", name);
    CHECK(!v.passed, "%s: must score 0 (reason '%s')", name, v.reason);
    CHECK(strstr(v.reason, why) != NULL, "%s: reason '%s' should mention '%s'", name, v.reason,
          why);
    CHECK(secs < max_s, "%s: took %.2f s (limit %.1f)", name, secs, max_s);
    if (geteuid() == 0) {
        int left = 0;
        /* killed processes are reaped by the kernel asynchronously: allow a loaded machine 10 s */
        for (int i = 0; i < 500 && (left = sandbox_processes()) > 0; i++) usleep(20000);
        CHECK(left == 0, "%s: %d sandbox processes still alive", name, left);
    }
    fprintf(stderr, "  %-22s %.2f s: %s\n", name, secs, v.reason);
}

static void test_lang_and_extract(void)
{
    aha_code_lang l;
    aha_err e;
    CHECK(aha_code_task_lang("math", 4, &l, &e) == AHA_OK && l == AHA_CODE_NONE, "math");
    CHECK(aha_code_task_lang("", 0, &l, &e) == AHA_OK && l == AHA_CODE_NONE, "empty");
    CHECK(aha_code_task_lang("code", 4, &l, &e) == AHA_OK && l == AHA_CODE_PYTHON, "code");
    CHECK(aha_code_task_lang("code:python", 11, &l, &e) == AHA_OK && l == AHA_CODE_PYTHON, "py");
    CHECK(aha_code_task_lang("code:c", 6, &l, &e) == AHA_OK && l == AHA_CODE_C, "c");
    CHECK(aha_code_task_lang("code:rust", 9, &l, &e) == AHA_EINVAL, "rust is refused");
    CHECK(aha_code_task_lang("codex", 5, &l, &e) == AHA_OK && l == AHA_CODE_NONE, "codex");

    /* inside <answer>: the last python block there, not the one in the reasoning */
    const char *c1 = "<think>```python\nprint(1)\n```</think><answer>```c\nint x;\n```\n"
                     "```python\nprint(2)\n```\n```python\nprint(3)\n```</answer>";
    size_t off, n;
    CHECK(aha_code_extract(c1, strlen(c1), AHA_CODE_PYTHON, &off, &n), "extract py");
    CHECK(n == 9 && memcmp(c1 + off, "print(3)\n", 9) == 0, "last python block: '%.*s'", (int)n,
          c1 + off);
    CHECK(aha_code_extract(c1, strlen(c1), AHA_CODE_C, &off, &n) && n == 7 &&
              memcmp(c1 + off, "int x;\n", 7) == 0,
          "c block");
    /* no answer pair: anywhere; an untagged block when no tagged one */
    const char *c2 = "text\n```\nprint(5)\n```\nmore";
    CHECK(aha_code_extract(c2, strlen(c2), AHA_CODE_PYTHON, &off, &n) && n == 9 &&
              memcmp(c2 + off, "print(5)\n", 9) == 0,
          "untagged block");
    const char *c3 = "no code at all, ``` inline";
    CHECK(!aha_code_extract(c3, 4, AHA_CODE_PYTHON, &off, &n), "no block");
    /* an unclosed block runs to the end */
    const char *c4 = "```python\nprint(7)";
    CHECK(aha_code_extract(c4, strlen(c4), AHA_CODE_PYTHON, &off, &n) && n == 8, "unclosed");

    CHECK(aha_code_output_equal("1 2\n3\n", 6, "1 2   \n3", 8), "trailing spaces");
    CHECK(aha_code_output_equal("a\r\n\n\n", 5, "a", 1), "trailing blank lines and CR");
    CHECK(!aha_code_output_equal("a\nb", 3, "a b", 3), "line break matters");
    CHECK(!aha_code_output_equal(" a", 2, "a", 1), "leading space matters");
    CHECK(!aha_code_output_equal("a\n\nb", 4, "a\nb", 3), "inner blank line matters");
    CHECK(aha_code_output_equal("", 0, "\n", 1), "empty");
}

static void test_correct_and_wrong(void)
{
    aha_code_verdict v;
    double s;
    const char *py_sum = "a, b = map(int, input().split())\nprint(a + b)\n";
    CHECK(judge(AHA_CODE_PYTHON, py_sum, "2 40\n", "42\n", &v, &s) == AHA_OK && v.passed,
          "python sum: %s", v.reason);
    CHECK(judge(AHA_CODE_PYTHON, py_sum, "2 40\n", "43", &v, &s) == AHA_OK && !v.passed &&
              strstr(v.reason, "wrong output"),
          "python wrong: %s", v.reason);
    CHECK(judge(AHA_CODE_PYTHON, "raise SystemExit(3)\n", "", "", &v, &s) == AHA_OK &&
              !v.passed && strstr(v.reason, "exit status 3"),
          "python exit 3: %s", v.reason);
    const char *c_sum = "#include <stdio.h>\n#include <math.h>\n"
                        "int main(void){long a,b; if(scanf(\"%ld %ld\",&a,&b)!=2) return 1;"
                        " printf(\"%ld %.0f\\n\", a+b, sqrt((double)(a*b))); return 0;}\n";
    CHECK(judge(AHA_CODE_C, c_sum, "4 9", "13 6\n", &v, &s) == AHA_OK && v.passed, "c sum: %s",
          v.reason);
    CHECK(judge(AHA_CODE_C, c_sum, "4 9", "13 7\n", &v, &s) == AHA_OK && !v.passed &&
              strstr(v.reason, "wrong output"),
          "c wrong: %s", v.reason);
    CHECK(judge(AHA_CODE_C, "int main(void) { return undefined_name; }\n", "", "", &v, &s) ==
                  AHA_OK &&
              !v.passed && strstr(v.reason, "compile error"),
          "c compile error: %s", v.reason);

    /* several cases: all must pass; the first failure is reported */
    const char *comp = "<answer>```python\nn = int(input())\nprint(n * n if n != 3 else 0)\n"
                       "```</answer>";
    const char *tests = "[{\"input\": \"2\", \"output\": \"4\"}, {\"input\": \"5\", \"output\": "
                        "\"25\"}, {\"input\": \"3\", \"output\": \"9\"}]";
    aha_err e;
    CHECK(aha_code_score(&g_o, AHA_CODE_PYTHON, comp, strlen(comp), tests, strlen(tests), &v,
                         &e) == AHA_OK &&
              !v.passed && v.cases_passed == 2 && v.cases_total == 3 && strstr(v.reason, "case 3/3"),
          "third case fails: %s", v.reason);
    const char *tests2 = "[{\"input\": \"2\", \"output\": \"4\"}, {\"input\": \"5\", \"output\": "
                         "\"25\"}]";
    CHECK(aha_code_score(&g_o, AHA_CODE_PYTHON, comp, strlen(comp), tests2, strlen(tests2), &v,
                         &e) == AHA_OK &&
              v.passed && v.cases_passed == 2,
          "two cases pass: %s", v.reason);

    /* no program; malformed test cases are an item error */
    const char *none = "<answer>42</answer>";
    CHECK(aha_code_score(&g_o, AHA_CODE_PYTHON, none, strlen(none), tests, strlen(tests), &v,
                         &e) == AHA_OK &&
              !v.passed && strstr(v.reason, "no ```python block"),
          "no program: %s", v.reason);
    const char *bad[] = {"", "{}", "[]", "[1]", "[{\"input\": \"1\"}]",
                         "[{\"output\": 5}]", "[{\"output\": \"1\", \"x\": \"2\"}]", "[{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(aha_code_score(&g_o, AHA_CODE_PYTHON, comp, strlen(comp), bad[i], strlen(bad[i]),
                             &v, &e) == AHA_EINVAL,
              "malformed tests '%s' refused", bad[i]);
}

static char *slurp(const char *path)
{
    char *t = NULL;
    size_t n = 0;
    aha_err e;
    if (aha_read_file(path, 1 << 22, &t, &n, &e) != AHA_OK) return NULL;
    return t;
}

static void test_hostile(void)
{
    unsigned caps = aha_sandbox_capabilities();
    fprintf(stderr, "  capabilities: pidns %d netns %d userns %d landlock %d seccomp %d uid %d\n",
            !!(caps & AHA_SANDBOX_HAS_PIDNS), !!(caps & AHA_SANDBOX_HAS_NETNS),
            !!(caps & AHA_SANDBOX_HAS_USERNS), !!(caps & AHA_SANDBOX_HAS_LANDLOCK),
            !!(caps & AHA_SANDBOX_HAS_SECCOMP), !!(caps & AHA_SANDBOX_HAS_UID));
    const double slack = g_o.wall_s + 3; /* every attack ends by the wall clock at worst;
                                            * C cases add a compile (+ 20 s of its own) */

    /* the attacks that end by the wall clock get a short one; the others a long one, so a
     * loaded CI machine cannot turn their reason into a timeout */
    const double long_wall = g_o.wall_s;
    g_o.wall_s = 3;
    contained("py fork bomb", AHA_CODE_PYTHON,
              "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
              "        pass\n",
              "done", "limit", g_o.wall_s + 3);
    contained("c fork bomb", AHA_CODE_C,
              "#include <unistd.h>\nint main(void){ for(;;) fork(); }\n", "done", "limit",
              g_o.wall_s + 20);
    contained("py sleep", AHA_CODE_PYTHON, "import time\ntime.sleep(60)\nprint('x')\n", "x",
              "wall-clock limit", g_o.wall_s + 1.5);
    g_o.wall_s = long_wall;

    if (caps & AHA_SANDBOX_HAS_LANDLOCK) {
        char *passwd = slurp("/etc/passwd");
        CHECK(passwd != NULL, "read /etc/passwd here");
        if (passwd) {
            contained("py read /etc/passwd", AHA_CODE_PYTHON,
                      "print(open('/etc/passwd').read(), end='')\n", passwd, "PermissionError",
                      slack);
            contained("c read /etc/passwd", AHA_CODE_C,
                      "#include <stdio.h>\nint main(void){ FILE *f = fopen(\"/etc/passwd\", "
                      "\"r\"); if(!f){perror(\"fopen\"); return 1;} int c; while((c=fgetc(f))"
                      "!=EOF) putchar(c); return 0; }\n",
                      passwd, "exit status 1", slack + 2);
        }
        free(passwd);
        char *self = slurp(TEST_SOURCE);
        CHECK(self != NULL, "read %s here", TEST_SOURCE);
        if (self) {
            char prog[1024];
            snprintf(prog, sizeof prog, "print(open('%s').read(), end='')\n", TEST_SOURCE);
            contained("py read test source", AHA_CODE_PYTHON, prog, self, "PermissionError",
                      slack);
            snprintf(prog, sizeof prog,
                     "import os\nprint(sorted(os.listdir('%.900s')))\n", "/");
            contained("py list /", AHA_CODE_PYTHON, prog, "['bin']", "PermissionError", slack);
        }
        free(self);
    } else {
        fprintf(stderr, "  no Landlock: file-read containment not tested\n");
    }

    contained("py tcp socket", AHA_CODE_PYTHON,
              "import socket\ns = socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
              "print('connected')\n",
              "connected", "Error", slack);
    contained("py unix socket", AHA_CODE_PYTHON,
              "import socket\ns = socket.socket(socket.AF_UNIX)\nprint('made')\n", "made",
              "PermissionError", slack);
    contained("py infinite loop", AHA_CODE_PYTHON, "while True:\n    pass\n", "x",
              "CPU time limit", g_o.wall_s + 1);
    contained("py 10 GB", AHA_CODE_PYTHON,
              "b = bytearray(10 * 1024 ** 3)\nprint(len(b))\n", "10737418240", "MemoryError",
              slack);
    contained("c 10 GB", AHA_CODE_C,
              "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint main(void){"
              " size_t n = (size_t)10 << 30; char *p = malloc(n); if (!p) return 2;"
              " memset(p, 1, n); printf(\"%zu\\n\", n); return 0; }\n",
              "10737418240", "exit status 2", slack + 2);
    contained("py print 1 GB", AHA_CODE_PYTHON,
              "import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n"
              "    sys.stdout.write(chunk)\n",
              "x", "output limit", slack);
    contained("py write 100 MB file", AHA_CODE_PYTHON,
              "with open('big', 'wb') as f:\n    f.write(b'x' * (100 << 20))\nprint('wrote')\n",
              "wrote", "File too large", slack);
    contained("py kill -1", AHA_CODE_PYTHON,
              "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('x')\n", "x", "case 1/1",
              slack);
}

/* The sandbox alone: the program runs as another uid, in its own directory, without the
 * service's environment. */
static void test_run(void)
{
    aha_sandbox *sb = NULL;
    aha_err e;
    CHECK(aha_sandbox_create(&g_o, &sb, &e) == AHA_OK, "create: %s", e.msg);
    if (!sb) return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", aha_sandbox_dir(sb));
    CHECK(aha_sandbox_write(sb, "../x", "a", 1, &e) == AHA_EINVAL, "no path in names");
    const char *prog = "import os\nprint(os.getuid(), os.getcwd(), sorted(os.environ))\n";
    CHECK(aha_sandbox_write(sb, "p.py", prog, strlen(prog), &e) == AHA_OK, "write");
    const char *argv[] = {g_o.python, "-I", "p.py", NULL};
    aha_sandbox_result r;
    setenv("AHA_SECRET_TEST", "x", 1);
    CHECK(aha_sandbox_run(sb, argv, NULL, 0, 0, 0, &r, &e) == AHA_OK, "run: %s", e.msg);
    CHECK(r.outcome == AHA_SANDBOX_EXITED && r.code == 0, "exit %d/%d: %s", r.outcome, r.code,
          r.err);
    unsigned long uid = strtoul(r.out ? r.out : "", NULL, 10);
    if (geteuid() == 0)
        CHECK(uid >= g_o.uid_base && uid < g_o.uid_base + g_o.uid_count, "uid %lu", uid);
    CHECK(r.out && strstr(r.out, dir) != NULL, "cwd is the sandbox: %s", r.out);
    CHECK(r.out && !strstr(r.out, "AHA_SECRET_TEST"), "environment not inherited: %s", r.out);
    aha_sandbox_result_free(&r);
    /* a missing executable is a setup error, not a crash */
    const char *nope[] = {"/nonexistent/prog", NULL};
    CHECK(aha_sandbox_run(sb, nope, NULL, 0, 0, 0, &r, &e) == AHA_EINTERNAL &&
              strstr(e.msg, "execve"),
          "missing program: %s", e.msg);
    aha_sandbox_free(sb);
    CHECK(!aha_path_exists(dir), "directory removed");
}

int main(void)
{
    aha_sandbox_opts_init(&g_o);
    g_o.cpu_s = 1;
    g_o.wall_s = 20;
    /* uids of this test process only: other test runs on the machine (other worktrees, CI
     * jobs) run sandboxes too, and the leftover check must count only ours */
    g_o.uid_base = 61000 + (unsigned)(getpid() % 900) * 2;
    g_o.uid_count = 2;
    g_o.max_output = 1 << 20;
    test_lang_and_extract();
    test_run();
    test_correct_and_wrong();
    test_hostile();
    return th_done("sandbox");
}
