/* interop_write FIXTURES OUT: writes checkpoints for transformers to load, with this
 * library's writers only: for each fixture model, OUT/<name>-f32 (config.json via
 * aha_config_save, one model.safetensors) and OUT/<name>-bf16 (dtype bfloat16, weights
 * converted by aha_f32_to_bf16, sharded at 64 KiB with model.safetensors.index.json).
 * interop_transformers.py checks them on a machine with transformers (not a CI test). */
#include <stdio.h>
#include <stdlib.h>

#include "base/fs.h"
#include "io/config.h"
#include "io/safetensors.h"

static int write_one(const char *fixtures, const char *name, const char *out, bool bf16)
{
    char src[2048], dst[2048];
    snprintf(src, sizeof src, "%s/%s", fixtures, name);
    snprintf(dst, sizeof dst, "%s/%s-%s", out, name, bf16 ? "bf16" : "f32");
    aha_err err = {0};
    aha_model_config c;
    aha_st_file *f = NULL;
    if (aha_config_load(src, &c, &err) != AHA_OK || aha_st_open(src, &f, &err) != AHA_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    snprintf(c.dtype, sizeof c.dtype, "%s", bf16 ? "bfloat16" : "float32");
    aha_st_writer *w = aha_st_writer_new();
    float **bufs = calloc((size_t)aha_st_count(f), sizeof *bufs);
    int rc = 0;
    for (int i = 0; i < aha_st_count(f) && !rc; i++) {
        const aha_st_tensor *t = aha_st_at(f, i);
        bufs[i] = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
        rc = aha_st_to_f32(t, bufs[i], t->numel, &err) != AHA_OK ||
             aha_st_writer_add_f32_as(w, t->name, bf16 ? AHA_DT_BF16 : AHA_DT_F32, t->ndim, t->shape, bufs[i], &err) !=
                 AHA_OK;
    }
    if (!rc) rc = aha_config_save(&c, dst, &err) != AHA_OK;
    if (!rc) rc = aha_st_writer_save_sharded(w, dst, bf16 ? 64 << 10 : 0, &err) != AHA_OK;
    if (rc) fprintf(stderr, "%s: %s\n", dst, err.msg);
    for (int i = 0; i < aha_st_count(f); i++) free(bufs[i]);
    free(bufs);
    aha_st_writer_free(w);
    aha_st_close(f);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: interop_write FIXTURES_DIR OUT_DIR\n");
        return 2;
    }
    const char *names[] = {"tiny-qwen2", "tiny-llama", "tiny-qwen3"};
    int rc = 0;
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 2; b++) rc |= write_one(argv[1], names[i], argv[2], b);
    return rc;
}
