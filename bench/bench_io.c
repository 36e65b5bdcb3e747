/* bench_io [MELEMS] [DIR]: throughput of common/io. Writes a checkpoint of MELEMS million
 * parameters (default 32) stored as BF16 and as F32 into DIR (default /tmp), single file and
 * sharded at 64 MB, reopens it and converts back to f32; then writes and reads a JSON-lines
 * dataset of ~64 MB. Prints one line per figure. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "io/jsonl.h"
#include "io/safetensors.h"

static int fail(const aha_err *e)
{
    fprintf(stderr, "bench_io: %s\n", aha_err_msg(e));
    return 1;
}

int main(int argc, char **argv)
{
    int64_t n = (int64_t)(argc > 1 ? atof(argv[1]) : 32) * 1000000;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    if (n <= 0) {
        fprintf(stderr, "usage: bench_io [MELEMS] [DIR]\n");
        return 2;
    }
    char path[1024], sdir[1024];
    snprintf(path, sizeof path, "%s/bench_io.%d.safetensors", dir, (int)getpid());
    snprintf(sdir, sizeof sdir, "%s/bench_io.%d.sharded", dir, (int)getpid());
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    if (!x || !y) return 1;
    for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 1000003) * 1e-3f - 500.0f;
    aha_err e = {0};
    /* eight tensors of n/8 each, like the layers of a model */
    aha_st_writer *w = aha_st_writer_new();
    int64_t per = n / 8, shape[1] = {per};
    for (int k = 0; k < 8; k++) {
        char name[64];
        snprintf(name, sizeof name, "bf16.%d", k);
        if (aha_st_writer_add_f32_as(w, name, AHA_DT_BF16, 1, shape, x + k * per, &e)) return fail(&e);
        snprintf(name, sizeof name, "f32.%d", k);
        if (aha_st_writer_add(w, name, AHA_DT_F32, 1, shape, x + k * per, &e)) return fail(&e);
    }
    double mb = (double)per * 8 * 6 / 1e6;
    double t0 = aha_now_s();
    if (aha_st_writer_save(w, path, &e)) return fail(&e);
    double t1 = aha_now_s();
    printf("save single file   %8.1f MB  %7.2f s  %7.0f MB/s (incl. f32->bf16, fsync)\n", mb, t1 - t0, mb / (t1 - t0));
    t0 = aha_now_s();
    if (aha_st_writer_save_sharded(w, sdir, 64u << 20, &e)) return fail(&e);
    t1 = aha_now_s();
    printf("save sharded 64 MB %8.1f MB  %7.2f s  %7.0f MB/s\n", mb, t1 - t0, mb / (t1 - t0));
    aha_st_writer_free(w);

    aha_st_file *f = NULL, *g = NULL;
    t0 = aha_now_s();
    if (aha_st_open(path, &f, &e)) return fail(&e);
    t1 = aha_now_s();
    if (aha_st_open(sdir, &g, &e)) return fail(&e);
    double t2 = aha_now_s();
    printf("open single        %8.3f ms (%d tensors)\n", (t1 - t0) * 1e3, aha_st_count(f));
    printf("open sharded       %8.3f ms (%d shards)\n", (t2 - t1) * 1e3, aha_st_shard_count(g));
    const char *kinds[2] = {"bf16", "f32"};
    for (int pass = 0; pass < 2; pass++) {
        for (int kd = 0; kd < 2; kd++) {
            t0 = aha_now_s();
            for (int k = 0; k < 8; k++) {
                char name[64];
                snprintf(name, sizeof name, "%s.%d", kinds[kd], k);
                if (aha_st_load_f32(f, name, 1, shape, y + k * per, &e)) return fail(&e);
            }
            t1 = aha_now_s();
            printf("load %-4s -> f32 %s %7.3f s  %7.0f Melem/s\n", kinds[kd], pass ? "(mapped)" : "(first) ", t1 - t0,
                   (double)per * 8 / 1e6 / (t1 - t0));
        }
    }
    aha_st_close(f);
    aha_st_close(g);
    unlink(path);
    aha_remove_tree(sdir, NULL);

    /* JSON lines: a GSM8K-like dataset */
    snprintf(path, sizeof path, "%s/bench_io.%d.jsonl", dir, (int)getpid());
    aha_jsonl_writer *jw = NULL;
    if (aha_jsonl_writer_open(path, false, &jw, &e)) return fail(&e);
    int lines = 200000;
    t0 = aha_now_s();
    for (int i = 0; i < lines; i++) {
        json_t *o = json_pack("{s:s, s:s, s:i}", "question",
                              "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                              "in May. How many clips did Natalia sell altogether in April and May? Show your work.",
                              "answer", "Natalia sold 48/2 = 24 clips in May. Altogether she sold 48+24 = 72. #### 72", "id", i);
        if (aha_jsonl_write(jw, o, &e)) return fail(&e);
        json_decref(o);
    }
    if (aha_jsonl_writer_close(jw, &e)) return fail(&e);
    t1 = aha_now_s();
    char *tmp;
    size_t bytes = 0;
    if (aha_read_file(path, (size_t)1 << 30, &tmp, &bytes, &e)) return fail(&e);
    free(tmp);
    printf("jsonl append       %8.1f MB  %7.2f s  %7.0f lines/s\n", bytes / 1e6, t1 - t0, lines / (t1 - t0));
    aha_jsonl_reader *r = NULL;
    if (aha_jsonl_open(path, NULL, &r, &e)) return fail(&e);
    t0 = aha_now_s();
    int got = 0;
    for (;;) {
        json_t *o = NULL;
        if (aha_jsonl_next(r, &o, NULL, &e)) return fail(&e);
        if (!o) break;
        got++;
        json_decref(o);
    }
    t1 = aha_now_s();
    aha_jsonl_close(r);
    printf("jsonl read         %8.1f MB  %7.2f s  %7.1f MB/s (%d lines)\n", bytes / 1e6, t1 - t0, bytes / 1e6 / (t1 - t0), got);
    unlink(path);
    free(x);
    free(y);
    return 0;
}
