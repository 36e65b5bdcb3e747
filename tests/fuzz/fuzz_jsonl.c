/* fuzz_jsonl: arbitrary bytes as a JSON-lines file, read with a small line bound, failing
 * on the first bad line and skipping bad lines; line numbers only grow. */
#include <stdint.h>
#include <stdlib.h>

#include "io/jsonl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int skip = 0; skip < 2; skip++) {
        aha_jsonl_opts o = {.max_line = 64, .skip_bad = skip};
        aha_jsonl_reader *r = NULL;
        aha_err err = {0};
        AHA_ASSERT(aha_jsonl_open_memory((const char *)data, size, "fuzz.jsonl", &o, &r, &err) == AHA_OK);
        long prev = 0;
        for (;;) {
            json_t *obj = NULL;
            long line = 0;
            aha_status st = aha_jsonl_next(r, &obj, &line, &err);
            if (st != AHA_OK) {
                AHA_ASSERT(!skip && obj == NULL && err.msg[0] != '\0');
                break;
            }
            if (!obj) break;
            AHA_ASSERT(json_is_object(obj) && line > prev);
            prev = line;
            json_decref(obj);
        }
        aha_jsonl_close(r);
    }
    return 0;
}
