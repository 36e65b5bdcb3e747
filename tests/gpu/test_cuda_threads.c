/* test_cuda_threads.c: a model on the LAST CUDA device, scored from threads that never chose a
 * device (as aha-refpolicy's handler threads and aha-rollout's engine thread do). CUDA's
 * current device is per thread and starts at 0, so on a machine with two or more GPUs this
 * is the case where a service started with --device cuda:1 queued work against device 0.
 * The logprobs from a fresh thread must equal the ones from the opening thread bitwise (same
 * device, same kernels), and both must agree with the CPU backend within bf16 tolerance. On a
 * one-GPU machine the test still runs (device 0 from a fresh thread) and says so. */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "backend/backend.h"
#include "base/log.h"
#include "base/rng.h"
#include "io/config.h"
#include "model/model.h"

enum { NSEQ = 3, LEN = 24 };

typedef struct {
    aha_model *m;
    const aha_batch *b;
    float *lp;
    aha_status st;
    aha_err err;
} job;

static void *score(void *arg)
{
    job *j = arg;
    j->st = aha_model_token_logprobs(j->m, j->b, j->lp, NULL, &j->err);
    return NULL;
}

int main(void)
{
    aha_log_set_level(AHA_LOG_WARN);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        fprintf(stderr, "no CUDA device\n");
        return 77;
    }
    char dev[32];
    snprintf(dev, sizeof dev, "cuda:%d", n - 1);
    if (n < 2) fprintf(stderr, "one GPU only: the wrong-device case cannot arise, checking threads on %s\n", dev);

    aha_err err = {0};
    aha_backend *gpu = NULL, *cpu = NULL;
    CHECK(aha_backend_open(dev, 0, &gpu, &err) == AHA_OK, "%s: %s", dev, err.msg);
    CHECK(aha_backend_open("cpu", 0, &cpu, &err) == AHA_OK, "%s", err.msg);
    if (!gpu || !cpu) return th_done("cuda_threads");

    char src[1024];
    snprintf(src, sizeof src, "%s/tiny-qwen2", th_fixtures());
    aha_model_config cfg;
    CHECK(aha_config_load(src, &cfg, &err) == AHA_OK, "%s", err.msg);
    aha_model *mg = NULL, *mc = NULL;
    CHECK(aha_model_init_random(&cfg, 11, gpu, NULL, &mg, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_init_random(&cfg, 11, cpu, NULL, &mc, &err) == AHA_OK, "%s", err.msg);
    if (!mg || !mc) return th_done("cuda_threads");

    int32_t ids[NSEQ * LEN], cu[NSEQ + 1];
    aha_rng rng;
    aha_rng_seed(&rng, 5, 0);
    for (int i = 0; i < NSEQ * LEN; i++) ids[i] = (int32_t)aha_rng_below(&rng, (uint64_t)cfg.vocab_size);
    for (int s = 0; s <= NSEQ; s++) cu[s] = s * LEN;
    aha_batch b = {ids, cu, NSEQ, NULL};
    int L = aha_batch_lp_len(&b);
    float *here = calloc((size_t)L, sizeof *here), *there = calloc((size_t)L, sizeof *there);
    float *ref = calloc((size_t)L, sizeof *ref);

    /* the opening thread first, then two fresh threads one after the other */
    CHECK(aha_model_token_logprobs(mg, &b, here, NULL, &err) == AHA_OK, "opening thread: %s", err.msg);
    CHECK(aha_model_token_logprobs(mc, &b, ref, NULL, &err) == AHA_OK, "cpu: %s", err.msg);
    for (int t = 0; t < 2; t++) {
        job j = {mg, &b, there, AHA_OK, {0}};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, score, &j) == 0, "pthread_create");
        pthread_join(th, NULL);
        CHECK(j.st == AHA_OK, "fresh thread %d on %s: %s", t, dev, j.err.msg);
        CHECK(memcmp(here, there, (size_t)L * sizeof *here) == 0,
              "fresh thread %d: logprobs differ from the opening thread's", t);
        memset(there, 0, (size_t)L * sizeof *there);
    }
    double rel = th_rel_err("gpu vs cpu logprobs", here, ref, L);
    CHECK(rel <= 1e-2, "%s vs cpu logprobs: relative error %.3e", dev, rel);

    free(here);
    free(there);
    free(ref);
    aha_model_free(mg);
    aha_model_free(mc);
    aha_backend_free(gpu);
    aha_backend_free(cpu);
    return th_done("cuda_threads");
}
