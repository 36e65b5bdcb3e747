/* fuzz_weightpush.c: libFuzzer target over the UpdateWeights receiver
 * (common/model/weightpush.h) on the tiny Qwen2 fixture: the input is a stream of
 * WeightChunk messages, each as a 2-byte little-endian length and its wire bytes, unpacked
 * by protobuf-c and fed to aha_weight_rx_chunk, then aha_weight_rx_finish. Whatever the
 * chunks claim (names, shapes, dtypes, offsets, sizes, header counts), memory stays bounded
 * by the model and every violation is a status; an upload that finishes must account for
 * exactly the bytes that arrived. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/weights.pb-c.h"
#include "backend/backend.h"
#include "base/log.h"
#include "model/model.h"
#include "model/weightpush.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static aha_backend *g_be;
static aha_model *g_m;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *fx = getenv("AHA_FIXTURES");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", fx ? fx : "tests/fixtures");
    aha_log_set_level(AHA_LOG_ERROR);
    aha_err err;
    if (aha_backend_open("cpu", 1, &g_be, &err) != AHA_OK ||
        aha_model_open(dir, g_be, NULL, &g_m, &err) != AHA_OK) {
        fprintf(stderr, "fuzz_weightpush: %s (set AHA_FIXTURES)\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aha_weight_rx *rx = NULL;
    aha_err err;
    if (aha_weight_rx_create(g_m, &rx, &err) != AHA_OK) abort();
    size_t p = 0;
    int64_t sent = 0;
    aha_status st = AHA_OK;
    while (p + 2 <= size && st == AHA_OK) {
        size_t n = (size_t)data[p] | (size_t)data[p + 1] << 8;
        p += 2;
        if (n > size - p) n = size - p;
        Aha__V1__WeightChunk *c = aha__v1__weight_chunk__unpack(NULL, n, data + p);
        p += n;
        if (!c) break; /* the RPC layer answers INVALID_ARGUMENT: the upload ends */
        sent += (int64_t)c->data.len;
        st = aha_weight_rx_chunk(rx, c, &err);
        aha__v1__weight_chunk__free_unpacked(c, NULL);
    }
    if (st == AHA_OK && aha_weight_rx_finish(rx, &err) == AHA_OK) {
        if (aha_weight_rx_bytes(rx) != sent) abort();
    }
    aha_weight_rx_free(rx);
    return 0;
}
