/* test_jsonl: the JSON-lines reader (blank lines, CRLF, a last line without newline, lines
 * longer than the read chunk, bad lines with their numbers, the line bound, skip_bad) from
 * files and memory, and the appender (round trip, threads, two appenders on one file). */
#include <pthread.h>
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "io/jsonl.h"

static char tmpdir[256];

static void put(const char *path, const char *text)
{
    aha_write_file_atomic(path, text, strlen(text), NULL);
}

/* read all objects; returns count, fills the line numbers, status in *st */
static int read_all(aha_jsonl_reader *r, long *lines, int cap, aha_status *st, aha_err *err)
{
    int n = 0;
    for (;;) {
        json_t *o = NULL;
        long ln = 0;
        *st = aha_jsonl_next(r, &o, &ln, err);
        if (*st != AHA_OK || !o) break;
        if (n < cap) lines[n] = ln;
        n++;
        json_decref(o);
    }
    return n;
}

static void check_reader(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data.jsonl", tmpdir);
    /* line 1 obj, 2 blank, 3 whitespace, 4 obj CRLF, 5 bad JSON, 6 array, 7 obj without newline */
    const char *text = "{\"q\": \"1+1\", \"a\": 2}\n\n  \t\n{\"q\": \"caf\xc3\xa9\"}\r\nnot json\n[1, 2]\n{\"last\": true}";
    put(path, text);
    aha_err err = {0};
    aha_status st;
    long lines[16];
    for (int mem = 0; mem < 2; mem++) {
        aha_jsonl_reader *r = NULL;
        if (mem)
            CHECK(aha_jsonl_open_memory(text, strlen(text), "mem.jsonl", NULL, &r, &err) == AHA_OK, "open memory");
        else
            CHECK(aha_jsonl_open(path, NULL, &r, &err) == AHA_OK, "open: %s", err.msg);
        if (!r) continue;
        int n = read_all(r, lines, 16, &st, &err);
        CHECK(n == 2 && lines[0] == 1 && lines[1] == 4, "two objects before the bad line (n=%d)", n);
        CHECK(st == AHA_EFORMAT && strstr(err.msg, mem ? "mem.jsonl:5" : "data.jsonl:5") && strstr(err.msg, "JSON"),
              "bad line named with its number: %s", err.msg);
        aha_jsonl_close(r);
        aha_jsonl_opts o = {.skip_bad = true};
        r = NULL;
        if (mem)
            aha_jsonl_open_memory(text, strlen(text), "mem.jsonl", &o, &r, &err);
        else
            aha_jsonl_open(path, &o, &r, &err);
        n = read_all(r, lines, 16, &st, &err);
        CHECK(st == AHA_OK && n == 3 && lines[2] == 7, "skip_bad: 3 objects, last on line 7 (n=%d)", n);
        CHECK(aha_jsonl_skipped(r) == 2, "skip_bad counted %ld", aha_jsonl_skipped(r));
        aha_jsonl_close(r);
    }
    /* not an object */
    put(path, "{\"a\":1}\n[1]\n");
    aha_jsonl_reader *r = NULL;
    aha_jsonl_open(path, NULL, &r, &err);
    int n = read_all(r, lines, 16, &st, &err);
    CHECK(n == 1 && st == AHA_EFORMAT && strstr(err.msg, ":2: not a JSON object"), "array line: %s", err.msg);
    aha_jsonl_close(r);

    /* the line bound: a 100-byte line with max 40; with skip_bad the next line is intact */
    char big[256];
    snprintf(big, sizeof big, "{\"x\":1}\n{\"s\":\"%s\"}\n{\"y\":2}\n",
             "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890");
    put(path, big);
    aha_jsonl_opts lim = {.max_line = 40};
    aha_jsonl_open(path, &lim, &r, &err);
    n = read_all(r, lines, 16, &st, &err);
    CHECK(n == 1 && st == AHA_ELIMIT && strstr(err.msg, ":2: line longer than 40"), "long line: %s", err.msg);
    aha_jsonl_close(r);
    lim.skip_bad = true;
    aha_jsonl_open(path, &lim, &r, &err);
    n = read_all(r, lines, 16, &st, &err);
    CHECK(st == AHA_OK && n == 2 && lines[1] == 3 && aha_jsonl_skipped(r) == 1, "long line skipped (n=%d)", n);
    aha_jsonl_close(r);

    /* lines far longer than the read chunk, split across reads, parse intact */
    size_t L = 300000;
    char *huge = malloc(L + 64);
    size_t o = (size_t)snprintf(huge, 64, "{\"k\":\"");
    for (size_t i = 0; i < L; i++) huge[o++] = (char)('a' + i % 26);
    o += (size_t)snprintf(huge + o, 64, "\"}\n{\"z\":3}\n");
    aha_write_file_atomic(path, huge, o, NULL);
    aha_jsonl_open(path, NULL, &r, &err);
    json_t *obj = NULL;
    long ln = 0;
    CHECK(aha_jsonl_next(r, &obj, &ln, &err) == AHA_OK && obj && ln == 1, "huge line: %s", err.msg);
    const char *k = json_string_value(json_object_get(obj, "k"));
    CHECK(k && strlen(k) == L && k[L - 1] == (char)('a' + (L - 1) % 26), "huge value intact");
    json_decref(obj);
    CHECK(aha_jsonl_next(r, &obj, &ln, &err) == AHA_OK && obj && ln == 2 &&
              json_integer_value(json_object_get(obj, "z")) == 3,
          "line after the huge one");
    json_decref(obj);
    CHECK(aha_jsonl_next(r, &obj, &ln, &err) == AHA_OK && obj == NULL, "end");
    CHECK(aha_jsonl_next(r, &obj, &ln, &err) == AHA_OK && obj == NULL, "end stays end");
    aha_jsonl_close(r);
    free(huge);

    CHECK(aha_jsonl_open("/nonexistent/x.jsonl", NULL, &r, &err) == AHA_ENOTFOUND && strstr(err.msg, "x.jsonl"),
          "missing file: %s", err.msg);
    put(path, "");
    aha_jsonl_open(path, NULL, &r, &err);
    CHECK(aha_jsonl_next(r, &obj, &ln, &err) == AHA_OK && obj == NULL, "empty file has no objects");
    aha_jsonl_close(r);
}

typedef struct {
    aha_jsonl_writer *w;
    int id;
    int fails;
} wjob;

static void *writer_thread(void *arg)
{
    wjob *j = arg;
    for (int i = 0; i < 200; i++) {
        json_t *o = json_pack("{s:i, s:i, s:s}", "thread", j->id, "i", i, "pad", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        j->fails += aha_jsonl_write(j->w, o, NULL) != AHA_OK;
        json_decref(o);
    }
    return NULL;
}

static void check_writer(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/metrics.jsonl", tmpdir);
    aha_err err = {0};
    aha_jsonl_writer *w = NULL;
    CHECK(aha_jsonl_writer_open(path, true, &w, &err) == AHA_OK, "open writer: %s", err.msg);
    json_t *recs[3];
    recs[0] = json_pack("{s:i, s:f, s:s}", "step", 1, "reward", 0.25, "text", "line\nbreak \xe2\x9c\x93");
    recs[1] = json_pack("{s:{s:[i,i]}, s:n}", "nested", "ids", 1, 2, "none");
    recs[2] = json_pack("{s:f}", "wall", 1764339000.123456);
    for (int i = 0; i < 3; i++) CHECK(aha_jsonl_write(w, recs[i], &err) == AHA_OK, "write %d: %s", i, err.msg);
    json_t *arr = json_array();
    CHECK(aha_jsonl_write(w, arr, &err) == AHA_EINVAL, "non-object refused");
    json_decref(arr);
    CHECK(aha_jsonl_writer_close(w, &err) == AHA_OK, "close: %s", err.msg);
    /* reopen appends */
    CHECK(aha_jsonl_writer_open(path, false, &w, &err) == AHA_OK, "reopen");
    CHECK(aha_jsonl_write(w, recs[0], &err) == AHA_OK, "append");
    aha_jsonl_writer_close(w, NULL);
    aha_jsonl_reader *r = NULL;
    aha_jsonl_open(path, NULL, &r, &err);
    for (int i = 0; i < 4; i++) {
        json_t *o = NULL;
        long ln = 0;
        CHECK(aha_jsonl_next(r, &o, &ln, &err) == AHA_OK && o && ln == i + 1, "read back %d: %s", i, err.msg);
        CHECK(o && json_equal(o, recs[i % 3]), "record %d equal after round trip", i);
        json_decref(o);
    }
    aha_jsonl_close(r);
    for (int i = 0; i < 3; i++) json_decref(recs[i]);

    /* four threads on one writer plus a second writer on the same file: every line whole */
    snprintf(path, sizeof path, "%s/threads.jsonl", tmpdir);
    aha_jsonl_writer *w1 = NULL, *w2 = NULL;
    aha_jsonl_writer_open(path, false, &w1, &err);
    aha_jsonl_writer_open(path, false, &w2, &err);
    wjob jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (wjob){i < 3 ? w1 : w2, i, 0};
        pthread_create(&th[i], NULL, writer_thread, &jobs[i]);
    }
    int fails = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        fails += jobs[i].fails;
    }
    CHECK(fails == 0, "%d writes failed", fails);
    aha_jsonl_writer_close(w1, NULL);
    aha_jsonl_writer_close(w2, NULL);
    aha_jsonl_open(path, NULL, &r, &err);
    int count[4] = {0}, n = 0;
    aha_status st;
    for (;;) {
        json_t *o = NULL;
        st = aha_jsonl_next(r, &o, NULL, &err);
        if (st != AHA_OK || !o) break;
        int t = (int)json_integer_value(json_object_get(o, "thread"));
        if (t >= 0 && t < 4 && json_integer_value(json_object_get(o, "i")) == count[t]) count[t]++;
        n++;
        json_decref(o);
    }
    CHECK(st == AHA_OK && n == 800, "800 whole lines (%d, %s)", n, err.msg);
    CHECK(count[0] == 200 && count[1] == 200 && count[2] == 200 && count[3] == 200, "each thread's lines in order");
    aha_jsonl_close(r);
    CHECK(aha_jsonl_writer_open("/nonexistent/dir/m.jsonl", false, &w, &err) != AHA_OK && strstr(err.msg, "m.jsonl"),
          "writer on a missing dir: %s", err.msg);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aha_jsonl_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    check_reader();
    check_writer();
    aha_remove_tree(tmpdir, NULL);
    return th_done("jsonl");
}
