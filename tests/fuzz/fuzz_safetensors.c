/* fuzz_safetensors: arbitrary bytes as a safetensors file image. Parsing must either refuse
 * with a message or hand out tensors whose every byte lies inside the image; conversion of
 * the floating ones must not read past them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aha_st_file *f = NULL;
    aha_err err = {0};
    if (aha_st_open_memory(data, size, "fuzz", &f, &err) != AHA_OK) {
        AHA_ASSERT(f == NULL && err.msg[0] != '\0');
        return 0;
    }
    const uint8_t *end = data + size;
    for (int i = 0; i < aha_st_count(f); i++) {
        const aha_st_tensor *t = aha_st_at(f, i);
        AHA_ASSERT(t && aha_st_find(f, t->name) == t);
        const uint8_t *p = t->data;
        AHA_ASSERT(p >= data && p <= end && t->nbytes <= (size_t)(end - p));
        AHA_ASSERT(t->nbytes == (size_t)t->numel * aha_dtype_size(t->dtype));
        if (t->numel > 0 && t->numel <= 4096 &&
            (t->dtype == AHA_DT_F32 || t->dtype == AHA_DT_BF16 || t->dtype == AHA_DT_F16 || t->dtype == AHA_DT_F64)) {
            float *dst = malloc(sizeof(float) * (size_t)t->numel);
            AHA_ASSERT(aha_st_to_f32(t, dst, t->numel, &err) == AHA_OK);
            free(dst);
        }
    }
    (void)aha_st_metadata(f, "format");
    aha_st_close(f);
    return 0;
}
