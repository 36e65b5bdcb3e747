/* fuzz_config: arbitrary bytes as config.json and as generation_config.json. A config that
 * parses must survive to_json -> parse unchanged in its sizes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aha_model_config c, d;
    aha_err err = {0};
    if (aha_config_parse((const char *)data, size, "fuzz/config.json", &c, &err) != AHA_OK) {
        AHA_ASSERT(err.msg[0] != '\0');
        return 0;
    }
    AHA_ASSERT(c.hidden_size > 0 && c.num_heads > 0 && c.num_kv_heads > 0 && c.head_dim > 0);
    AHA_ASSERT(c.num_heads % c.num_kv_heads == 0 && c.n_eos >= 0 && c.n_eos <= AHA_MAX_EOS);
    char *s = aha_config_to_json(&c);
    AHA_ASSERT(s != NULL);
    AHA_ASSERT(aha_config_parse(s, strlen(s), "fuzz/roundtrip.json", &d, &err) == AHA_OK);
    AHA_ASSERT(d.arch == c.arch && d.hidden_size == c.hidden_size && d.num_layers == c.num_layers &&
               d.head_dim == c.head_dim && d.rope_theta == c.rope_theta && d.n_eos == c.n_eos &&
               d.tie_word_embeddings == c.tie_word_embeddings && d.qk_norm == c.qk_norm);
    free(s);
    (void)aha_config_parse_generation((const char *)data, size, "fuzz/generation_config.json", &c, &err);
    return 0;
}
