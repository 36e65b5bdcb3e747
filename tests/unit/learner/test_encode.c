/* test_encode: prompts and SFT pairs as ids, with a byte-level tokenizer (id = byte value,
 * then added tokens), so the expected ids are the bytes of the expected text, computed here
 * independently of the code under test. */
#include <stdint.h>

#include "../../harness.h"
#include "base/fs.h"
#include "encode.h"

static int same_as_bytes(const int32_t *ids, size_t n, const char *text)
{
    if (n != strlen(text)) return 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] != (unsigned char)text[i]) return 0;
    return 1;
}

int main(void)
{
    char dir[] = "/tmp/aha_encode_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const char *specials[] = {"<|endoftext|>"};
    aha_err e = {0};
    CHECK(aha_tokenizer_write_bytelevel(dir, specials, 1, &e) == AHA_OK, "%s", e.msg);
    aha_tokenizer *tok = NULL;
    CHECK(aha_tokenizer_load(dir, &tok, &e) == AHA_OK, "%s", e.msg);
    if (!tok) return th_done("encode");
    int32_t eos = aha_tokenizer_token_to_id(tok, "<|endoftext|>");
    CHECK(eos == 256, "eos id %d", eos);

    int32_t *ids;
    size_t n, pl;
    CHECK(aha_encode_prompt(tok, "User: {prompt}. Assistant:", "1+1?", 0, &ids, &n, &e) == AHA_OK, "%s", e.msg);
    CHECK(same_as_bytes(ids, n, "User: 1+1?. Assistant:"), "prompt ids");
    free(ids);
    CHECK(aha_encode_prompt(tok, "User: {prompt}. Assistant:", "1+1?", 10, &ids, &n, &e) == AHA_ELIMIT &&
              strstr(e.msg, "22 tokens") && strstr(e.msg, "10"), "%s", e.msg);
    CHECK(aha_encode_prompt(tok, "{prompt} {oops}", "x", 0, &ids, &n, &e) != AHA_OK, "bad template");

    const char *c = "<think> 1 + 1 = 2. </think> <answer> 2 </answer>";
    CHECK(aha_encode_sft(tok, "Q: {prompt} A:", "1+1?", c, eos, 0, &ids, &n, &pl, &e) == AHA_OK, "%s", e.msg);
    char want[256];
    snprintf(want, sizeof want, "Q: 1+1? A: %s", c);
    CHECK(pl == strlen("Q: 1+1? A:"), "prompt_len %zu", pl);
    CHECK(n == strlen(want) + 1 && same_as_bytes(ids, n - 1, want) && ids[n - 1] == eos,
          "sft ids = prompt, space, completion, eos");
    free(ids);
    /* a template ending in a space gets no extra one */
    CHECK(aha_encode_sft(tok, "Q: {prompt} A: ", "1+1?", c, -1, 0, &ids, &n, &pl, &e) == AHA_OK, "%s", e.msg);
    snprintf(want, sizeof want, "Q: 1+1? A: %s", c);
    CHECK(same_as_bytes(ids, n, want) && pl == strlen("Q: 1+1? A: "), "no double space, no eos");
    free(ids);
    /* truncation keeps the prompt and cuts the completion (and eos) */
    CHECK(aha_encode_sft(tok, "Q: {prompt} A:", "1+1?", c, eos, 20, &ids, &n, &pl, &e) == AHA_OK, "%s", e.msg);
    CHECK(n == 20 && pl == 10 && same_as_bytes(ids, 20, "Q: 1+1? A: <think> 1"), "truncated");
    free(ids);
    CHECK(aha_encode_sft(tok, "Q: {prompt} A:", "1+1?", c, eos, 10, &ids, &n, &pl, &e) == AHA_ELIMIT &&
              strstr(e.msg, "max_seq_len 10"), "%s", e.msg);
    CHECK(aha_encode_sft(tok, "{prompt}", "ok", "bad \xff utf8", eos, 0, &ids, &n, &pl, &e) == AHA_EINVAL &&
              strstr(e.msg, "completion"), "%s", e.msg);
    aha_tokenizer_free(tok);
    aha_remove_tree(dir, NULL);
    return th_done("encode");
}
