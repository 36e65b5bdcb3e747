/* fuzz_tokenizer: arbitrary bytes as text for two fixed byte-level BPE tokenizers, and as a
 * tokenizer.json followed by text.
 *
 * The fixed tokenizers hold merges, a Qwen-style split regex or the GPT-2 ByteLevel regex, and
 * added tokens; on them encode must accept exactly the valid UTF-8 inputs, and decode(encode(x))
 * must give x back (NFC(x) for the one with an NFC normalizer). After the first NUL byte the
 * input is split: the bytes before it load as a tokenizer.json (clear error or success) and the
 * bytes after it are encoded with it, every id in range and decodable. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/log.h"
#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static aha_tokenizer *plain, *nfc;

/* byte symbols, a few merges over them, and the rest of a tokenizer.json around them */
static aha_tokenizer *make(const char *normalizer, const char *pretok, const char *added)
{
    static const char *const merges[][2] = {
        {"\xC4\xA0", "t"}, {"h", "e"}, {"\xC4\xA0t", "he"}, {"i", "n"}, {"\xC4\xA0", "a"},
        {"e", "r"}, {"a", "n"}, {"\xC4\xA0", "\xC4\xA0"}, {"\xC4\xA0\xC4\xA0", "\xC4\xA0\xC4\xA0"},
        {"o", "n"}, {"\xC4\xA0" "a", "n"}, {"\xC3\xA4", "\xC2\xB8"}, {"\xC3\xA4\xC2\xB8", "\xC5\x83"},
    };
    json_t *vocab = json_object(), *ml = json_array();
    int extra = 0, id = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : 256 + extra++;
        char sym[3] = {0};
        if (cp < 0x80) sym[0] = (char)cp;
        else {
            sym[0] = (char)(0xC0 | (cp >> 6));
            sym[1] = (char)(0x80 | (cp & 0x3F));
        }
        json_object_set_new(vocab, sym, json_integer(id++));
    }
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        char ab[32];
        snprintf(ab, sizeof ab, "%s%s", merges[i][0], merges[i][1]);
        if (!json_object_get(vocab, ab)) json_object_set_new(vocab, ab, json_integer(id++));
        json_array_append_new(ml, json_pack("[ss]", merges[i][0], merges[i][1]));
    }
    char *vs = json_dumps(vocab, JSON_COMPACT), *ms = json_dumps(ml, JSON_COMPACT);
    size_t cap = strlen(vs) + strlen(ms) + 4096;
    char *js = malloc(cap);
    snprintf(js, cap,
             "{\"added_tokens\":%s,\"normalizer\":%s,\"pre_tokenizer\":%s,\"decoder\":{\"type\":\"ByteLevel\"},"
             "\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":%s}}",
             added, normalizer, pretok, vs, ms);
    aha_tokenizer *t = NULL;
    aha_err err = {0};
    if (aha_tokenizer_load_json(js, strlen(js), "fuzz-fixed", &t, &err) != AHA_OK) {
        fprintf(stderr, "fuzz_tokenizer: fixed tokenizer: %s\n", err.msg);
        abort();
    }
    free(js);
    free(vs);
    free(ms);
    json_decref(vocab);
    json_decref(ml);
    return t;
}

static void setup(void)
{
    if (plain) return;
    /* renumbered added tokens warn; at thousands of inputs a second that is only noise */
    aha_log_set_level(AHA_LOG_ERROR);
    plain = make("null",
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                 "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                 "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}",
                 "[{\"id\":269,\"content\":\"<think>\",\"special\":false,\"normalized\":false},"
                 "{\"id\":270,\"content\":\"</think>\",\"special\":false,\"normalized\":false},"
                 "{\"id\":271,\"content\":\"<|endoftext|>\",\"special\":true},"
                 "{\"id\":272,\"content\":\"ox\",\"single_word\":true,\"normalized\":true}]");
    nfc = make("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"}]}",
               "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", "[]");
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    utf8proc_int32_t c;
    for (size_t i = 0; i < n;) {
        utf8proc_ssize_t w = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
        if (w <= 0) return 0;
        i += (size_t)w;
    }
    return 1;
}

static void roundtrip(aha_tokenizer *t, const uint8_t *s, size_t n, const uint8_t *want, size_t wn)
{
    int32_t *ids = NULL;
    size_t m = 0;
    aha_err err = {0};
    aha_status st = aha_tokenizer_encode(t, (const char *)s, n, &ids, &m, &err);
    if (!valid_utf8(s, n)) {
        AHA_ASSERT(st == AHA_EINVAL && ids == NULL);
        return;
    }
    AHA_ASSERT(st == AHA_OK);
    char *out = NULL;
    size_t ol = 0;
    AHA_ASSERT(aha_tokenizer_decode_len(t, ids, m, &out, &ol, &err) == AHA_OK);
    AHA_ASSERT(ol == wn && memcmp(out, want, wn) == 0);
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    roundtrip(plain, data, size, data, size);
    if (valid_utf8(data, size)) {
        uint8_t *norm = NULL;
        utf8proc_ssize_t nl = utf8proc_map(data, (utf8proc_ssize_t)size, &norm, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        AHA_ASSERT(nl >= 0);
        roundtrip(nfc, data, size, norm, (size_t)nl);
        free(norm);
    } else {
        roundtrip(nfc, data, size, NULL, 0);
    }

    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    aha_tokenizer *t = NULL;
    aha_err err = {0};
    if (aha_tokenizer_load_json((const char *)data, (size_t)(nul - data), "fuzz/tokenizer.json", &t, &err) != AHA_OK) {
        AHA_ASSERT(err.msg[0] != '\0' && t == NULL);
        return 0;
    }
    const char *text = (const char *)nul + 1;
    size_t tl = size - (size_t)(nul - data) - 1;
    int32_t *ids = NULL;
    size_t m = 0;
    if (aha_tokenizer_encode(t, text, tl, &ids, &m, &err) == AHA_OK) {
        for (size_t i = 0; i < m; i++) AHA_ASSERT(ids[i] >= 0 && ids[i] < aha_tokenizer_vocab_size(t));
        char *out = NULL;
        AHA_ASSERT(aha_tokenizer_decode(t, ids, m, &out, &err) == AHA_OK);
        free(out);
        free(ids);
    } else {
        AHA_ASSERT(err.msg[0] != '\0');
    }
    aha_tokenizer_free(t);
    return 0;
}
