/* test_tokenizer: the Qwen3 tokenizer against the Hugging Face reference cases
 * (tok_cases.expected.jsonl and qwen3_random.expected.jsonl), BPE merge order against a naive reference implementation, the
 * byte-level-only tokenizer round trip, added-token flags, lossy decoding, long inputs,
 * concurrent encoders, and malformed tokenizer.json files. */
#include <jansson.h>
#include <pthread.h>
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "base/rng.h"
#include "text/tokenizer.h"

static aha_tokenizer *qwen;

/* ------------------------------------------------------------ reference cases */

/* every line of file (JSON {"text", "ids", "decoded"} from HF tokenizers): ids identical,
 * decode(ids) equal to decoded */
static void test_reference_cases(aha_tokenizer *tok, const char *file, int want_cases)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/%s", th_fixtures(), file);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "open %s", path);
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    int cases = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *c = json_loads(line, JSON_ALLOW_NUL, &je);
        CHECK(c != NULL, "case %d parses: %s", cases, je.text);
        if (!c) continue;
        json_t *text = json_object_get(c, "text"), *want = json_object_get(c, "ids"),
               *dec = json_object_get(c, "decoded");
        size_t nw = json_array_size(want);
        int32_t *ids = NULL;
        size_t n = 0;
        aha_err err = {0};
        aha_status st = aha_tokenizer_encode(tok, json_string_value(text), json_string_length(text), &ids, &n, &err);
        CHECK(st == AHA_OK, "case %d encode: %s", cases, err.msg);
        size_t first_diff = n == nw ? SIZE_MAX : (n < nw ? n : nw);
        for (size_t i = 0; i < n && i < nw; i++)
            if (ids[i] != (int32_t)json_integer_value(json_array_get(want, i))) {
                first_diff = i;
                break;
            }
        CHECK(first_diff == SIZE_MAX, "%s case %d (%.40s): ids differ at index %zu (got %d, want %d; %zu vs %zu ids)",
              file, cases, json_string_value(text), first_diff, first_diff < n ? ids[first_diff] : -1,
              first_diff < nw ? (int)json_integer_value(json_array_get(want, first_diff)) : -1, n, nw);
        /* decode the reference ids, so a decode bug shows even when encode is wrong */
        int32_t *ref = malloc((nw + 1) * sizeof *ref);
        for (size_t i = 0; i < nw; i++) ref[i] = (int32_t)json_integer_value(json_array_get(want, i));
        char *out = NULL;
        size_t olen = 0;
        st = aha_tokenizer_decode_len(tok, ref, nw, &out, &olen, &err);
        CHECK(st == AHA_OK, "case %d decode: %s", cases, err.msg);
        if (st == AHA_OK) {
            size_t dl = json_string_length(dec), k = 0;
            while (k < olen && k < dl && out[k] == json_string_value(dec)[k]) k++;
            CHECK(olen == dl && k == dl, "%s case %d: decoded text differs at byte %zu", file, cases, k);
        }
        free(out);
        free(ref);
        free(ids);
        json_decref(c);
        cases++;
    }
    free(line);
    fclose(f);
    CHECK(cases == want_cases, "%s: %d reference cases (%d expected)", file, cases, want_cases);
}

/* toy tokenizers made with HF (tokenizer/make_hf_flags.py): added tokens with lstrip, rstrip,
 * single_word and NFC-normalized content, a token also in the model vocabulary (HF renumbers
 * the rest), Split by string and by \p{N}{1,3}, ByteLevel with a prefix space and the GPT-2
 * regex, ignore_merges */
static void test_hf_flags(void)
{
    static const char *const names[] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        char path[1024], file[64];
        snprintf(path, sizeof path, "%s/tokenizer/hf_flags/%s", th_fixtures(), names[i]);
        snprintf(file, sizeof file, "hf_flags/%s/cases.expected.jsonl", names[i]);
        aha_tokenizer *t = NULL;
        aha_err err = {0};
        CHECK(aha_tokenizer_load(path, &t, &err) == AHA_OK, "load %s: %s", path, err.msg);
        if (!t) continue;
        test_reference_cases(t, file, 620);
        aha_tokenizer_free(t);
    }
}

static void test_lookups(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/qwen3/tokenizer.json", th_fixtures());
    char *buf;
    size_t len;
    aha_err err = {0};
    CHECK(aha_read_file(path, (size_t)64 << 20, &buf, &len, &err) == AHA_OK, "%s", err.msg);
    json_t *root = json_loadb(buf, len, 0, NULL);
    free(buf);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    int32_t max_id = -1;
    const char *k;
    json_t *v;
    int bad = 0;
    json_object_foreach(vocab, k, v) {
        int32_t id = (int32_t)json_integer_value(v);
        if (id > max_id) max_id = id;
        if (aha_tokenizer_token_to_id(qwen, k) != id) bad++;
        const char *s = aha_tokenizer_id_to_token(qwen, id);
        if (!s || strcmp(s, k) != 0) bad++;
    }
    CHECK(bad == 0, "%d vocab entries do not round-trip token_to_id / id_to_token", bad);
    size_t i;
    json_array_foreach(added, i, v) {
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        const char *c = json_string_value(json_object_get(v, "content"));
        if (id > max_id) max_id = id;
        CHECK(aha_tokenizer_token_to_id(qwen, c) == id, "added '%s'", c);
        CHECK(aha_tokenizer_is_added(qwen, id), "is_added %d", id);
        CHECK(aha_tokenizer_is_special(qwen, id) == json_is_true(json_object_get(v, "special")), "special %s", c);
        size_t bl;
        const char *b = aha_tokenizer_token_bytes(qwen, id, &bl);
        CHECK(b && bl == strlen(c) && memcmp(b, c, bl) == 0, "added token decodes to its content");
    }
    CHECK(json_object_size(vocab) == 151643 && json_array_size(added) == 26, "fixture sizes");
    CHECK(aha_tokenizer_vocab_size(qwen) == max_id + 1, "vocab_size %d vs %d", aha_tokenizer_vocab_size(qwen), max_id + 1);
    CHECK(aha_tokenizer_token_to_id(qwen, "no such token, surely") == -1, "absent token");
    CHECK(aha_tokenizer_id_to_token(qwen, -1) == NULL && aha_tokenizer_id_to_token(qwen, max_id + 1) == NULL,
          "ids out of range");
    json_decref(root);

    int32_t bogus[] = {5, max_id + 1};
    char *out = NULL;
    CHECK(aha_tokenizer_decode(qwen, bogus, 2, &out, &err) == AHA_EINVAL && out == NULL, "unknown id refused");
    CHECK(strstr(err.msg, "position 1") != NULL, "message names the position: %s", err.msg);
}

static void test_invalid_utf8(void)
{
    static const char *const bad[] = {"abc\xff", "\xc3", "\xed\xa0\x80", "\xc0\xaf", "ok\xf4\x90\x80\x80"};
    for (size_t i = 0; i < AHA_ARRAY_LEN(bad); i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        aha_err err = {0};
        CHECK(aha_tokenizer_encode(qwen, bad[i], strlen(bad[i]), &ids, &n, &err) == AHA_EINVAL,
              "invalid UTF-8 %zu refused", i);
        CHECK(strstr(err.msg, "UTF-8") != NULL && ids == NULL, "message: %s", err.msg);
    }
    /* an embedded NUL is valid UTF-8 and round-trips */
    int32_t *ids;
    size_t n;
    aha_err err = {0};
    CHECK(aha_tokenizer_encode(qwen, "a\0b", 3, &ids, &n, &err) == AHA_OK, "%s", err.msg);
    char *out;
    size_t ol;
    CHECK(aha_tokenizer_decode_len(qwen, ids, n, &out, &ol, &err) == AHA_OK && ol == 3 && memcmp(out, "a\0b", 3) == 0,
          "NUL round trip");
    free(out);
    free(ids);
}

/* ------------------------------------------------------------ long inputs and threads */

static void roundtrip_big(const char *what, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    aha_err err = {0};
    double t0 = aha_now_s();
    aha_status st = aha_tokenizer_encode(qwen, text, len, &ids, &n, &err);
    double t1 = aha_now_s();
    CHECK(st == AHA_OK, "%s: %s", what, err.msg);
    char *out = NULL;
    size_t ol = 0;
    st = aha_tokenizer_decode_len(qwen, ids, n, &out, &ol, &err);
    CHECK(st == AHA_OK && ol == len && memcmp(out, text, len) == 0, "%s round trip", what);
    fprintf(stderr, "  %-28s %zu bytes -> %zu ids in %.3f s\n", what, len, n, t1 - t0);
    free(out);
    free(ids);
}

static void test_long_inputs(void)
{
    size_t n = 1 << 20;
    char *s = malloc(n);
    memset(s, 'x', n);
    roundtrip_big("1 MiB one word", s, n);
    memset(s, ' ', n);
    roundtrip_big("1 MiB of spaces", s, n);
    for (size_t i = 0; i < n; i++) s[i] = "\n \t\r"[i % 4];
    roundtrip_big("1 MiB mixed whitespace", s, n);
    for (size_t i = 0; i < n; i++) s[i] = "0123456789"[i % 10];
    roundtrip_big("1 MiB digits", s, n);
    for (size_t i = 0; i < n; i++) s[i] = "<|im_end|"[i % 9];
    roundtrip_big("1 MiB near-special", s, n);
    free(s);
}

typedef struct {
    const char *text;
    size_t len;
    int32_t *want;
    size_t nwant;
    int bad;
} thread_job;

static void *encode_loop(void *p)
{
    thread_job *j = p;
    for (int r = 0; r < 200; r++) {
        int32_t *ids;
        size_t n;
        if (aha_tokenizer_encode(qwen, j->text, j->len, &ids, &n, NULL) != AHA_OK) {
            j->bad++;
            continue;
        }
        if (n != j->nwant || memcmp(ids, j->want, n * sizeof *ids) != 0) j->bad++;
        free(ids);
    }
    return NULL;
}

static void test_threads(void)
{
    const char *text = "Concurrent encoders share one word cache: every thread must still see "
                       "exactly the ids a lone encoder gets, 12345 times over. 混合 language.";
    thread_job jobs[4];
    pthread_t th[4];
    int32_t *want;
    size_t nwant;
    aha_tokenizer_set_cache_capacity(qwen, 0);
    CHECK(aha_tokenizer_encode(qwen, text, strlen(text), &want, &nwant, NULL) == AHA_OK, "encode");
    /* a tiny cache that keeps overflowing exercises the reset path under contention */
    aha_tokenizer_set_cache_capacity(qwen, 8);
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){text, strlen(text), want, nwant, 0};
        pthread_create(&th[i], NULL, encode_loop, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].bad;
    }
    CHECK(bad == 0, "%d concurrent encodes differ", bad);
    aha_tokenizer_set_cache_capacity(qwen, 1 << 16);
    free(want);
}

/* ------------------------------------------------------------ toy BPE vs a naive reference */

/* builds a byte-level tokenizer.json with the given merges over a toy alphabet */
static char *toy_json(const char *const *merges, size_t nm, const char *extra_model,
                      const char *added, const char *normalizer, const char *pretok)
{
    json_t *vocab = json_object();
    int id = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        /* the ByteLevel symbol of b, computed here independently of the library */
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : 256 + extra++;
        char sym[3] = {0};
        if (cp < 0x80) sym[0] = (char)cp;
        else {
            sym[0] = (char)(0xC0 | (cp >> 6));
            sym[1] = (char)(0x80 | (cp & 0x3F));
        }
        json_object_set_new(vocab, sym, json_integer(id++));
    }
    json_t *ml = json_array();
    for (size_t i = 0; i < nm; i++) {
        char a[64], b[64], ab[128];
        sscanf(merges[i], "%63s %63s", a, b);
        snprintf(ab, sizeof ab, "%s%s", a, b);
        if (!json_object_get(vocab, ab)) json_object_set_new(vocab, ab, json_integer(id++));
        json_array_append_new(ml, json_string(merges[i]));
    }
    char *vs = json_dumps(vocab, JSON_COMPACT), *ms = json_dumps(ml, JSON_COMPACT);
    json_decref(vocab);
    json_decref(ml);
    size_t cap = strlen(vs) + strlen(ms) + 4096;
    char *out = malloc(cap);
    snprintf(out, cap,
             "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":%s,\"pre_tokenizer\":%s,"
             "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",%s\"vocab\":%s,\"merges\":%s}}",
             added ? added : "[]", normalizer ? normalizer : "null",
             pretok ? pretok : "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}",
             extra_model ? extra_model : "", vs, ms);
    free(vs);
    free(ms);
    return out;
}

/* naive BPE on strings: repeatedly merge the lowest-ranked adjacent pair, leftmost first */
static int naive_bpe(const char *word, const char *const *merges, size_t nm, char parts[][64])
{
    int n = 0;
    for (const char *p = word; *p; p++) {
        parts[n][0] = *p;
        parts[n][1] = 0;
        n++;
    }
    for (;;) {
        int best = -1;
        size_t best_rank = nm;
        for (int i = 0; i + 1 < n; i++) {
            char pair[140];
            snprintf(pair, sizeof pair, "%.63s %.63s", parts[i], parts[i + 1]);
            for (size_t r = 0; r < best_rank; r++)
                if (strcmp(merges[r], pair) == 0) {
                    best_rank = r;
                    best = i;
                    break;
                }
        }
        if (best < 0) return n;
        size_t la = strlen(parts[best]), lb = strlen(parts[best + 1]);
        if (la + lb >= sizeof parts[0]) return n;
        memcpy(parts[best] + la, parts[best + 1], lb + 1);
        memmove(parts[best + 1], parts[best + 2], (size_t)(n - best - 2) * sizeof parts[0]);
        n--;
    }
}

static void test_toy_bpe(void)
{
    static const char *const merges[] = {"a b", "b c", "ab c", "a bc", "c c", "cc a", "a a", "aa aa",
                                         "b b", "bb a", "ab ab", "c ab", "abc abc", "aaaa b"};
    size_t nm = AHA_ARRAY_LEN(merges);
    char *js = toy_json(merges, nm, NULL, NULL, NULL, NULL);
    aha_tokenizer *t = NULL;
    aha_err err = {0};
    CHECK(aha_tokenizer_load_json(js, strlen(js), "toy", &t, &err) == AHA_OK, "toy load: %s", err.msg);
    free(js);
    if (!t) return;
    aha_rng rng;
    aha_rng_seed(&rng, 7, 0);
    int bad = 0;
    for (int trial = 0; trial < 3000 && bad < 5; trial++) {
        if (trial == 1500) aha_tokenizer_set_cache_capacity(t, 0);
        char word[48];
        int len = 1 + (int)aha_rng_below(&rng, 40);
        for (int i = 0; i < len; i++) word[i] = "abc"[aha_rng_below(&rng, 3)];
        word[len] = 0;
        char parts[48][64];
        int np = naive_bpe(word, merges, nm, parts);
        int32_t *ids;
        size_t n;
        if (aha_tokenizer_encode(t, word, (size_t)len, &ids, &n, &err) != AHA_OK) {
            bad++;
            continue;
        }
        int ok = (int)n == np;
        for (int i = 0; ok && i < np; i++) ok = strcmp(aha_tokenizer_id_to_token(t, ids[i]), parts[i]) == 0;
        if (!ok) {
            bad++;
            fprintf(stderr, "  toy mismatch on '%s'\n", word);
        }
        free(ids);
    }
    CHECK(bad == 0, "%d toy words differ from the naive BPE", bad);
    aha_tokenizer_free(t);

    /* ignore_merges: a word that is in the vocabulary is taken whole, skipping merges */
    static const char *const m2[] = {"b c", "a b", "ab c"};
    js = toy_json(m2, 3, "\"ignore_merges\":true,", NULL, NULL, NULL);
    CHECK(aha_tokenizer_load_json(js, strlen(js), "toy2", &t, &err) == AHA_OK, "%s", err.msg);
    free(js);
    int32_t *ids;
    size_t n;
    CHECK(aha_tokenizer_encode(t, "abc", 3, &ids, &n, &err) == AHA_OK && n == 1 &&
              strcmp(aha_tokenizer_id_to_token(t, ids[0]), "abc") == 0, "ignore_merges takes 'abc' whole");
    free(ids);
    aha_tokenizer_free(t);
    js = toy_json(m2, 3, "\"ignore_merges\":false,", NULL, NULL, NULL);
    CHECK(aha_tokenizer_load_json(js, strlen(js), "toy3", &t, &err) == AHA_OK, "%s", err.msg);
    free(js);
    CHECK(aha_tokenizer_encode(t, "abc", 3, &ids, &n, &err) == AHA_OK && n == 2 &&
              strcmp(aha_tokenizer_id_to_token(t, ids[0]), "a") == 0, "merges give a + bc");
    free(ids);
    aha_tokenizer_free(t);
}

/* The options case of HF's own added_vocabulary tests: "my" with lstrip+rstrip, "name", and
 * "ony" with single_word; "[CLS]" and "[SEP]" special. HF splits "[CLS] my name is anthony
 * [SEP]" into "[CLS]" | " my " (token) | "name" | " is anthony " | "[SEP]". */
static void test_added_flags(void)
{
    const char *added =
        "[{\"id\":256,\"content\":\"my\",\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":false},"
        "{\"id\":257,\"content\":\"name\",\"normalized\":false},"
        "{\"id\":258,\"content\":\"ony\",\"single_word\":true,\"normalized\":false},"
        "{\"id\":259,\"content\":\"[CLS]\",\"special\":true},"
        "{\"id\":260,\"content\":\"[SEP]\",\"special\":true}]";
    char *js = toy_json(NULL, 0, NULL, added, NULL, NULL);
    aha_tokenizer *t = NULL;
    aha_err err = {0};
    CHECK(aha_tokenizer_load_json(js, strlen(js), "flags", &t, &err) == AHA_OK, "%s", err.msg);
    free(js);
    if (!t) return;
    const char *text = "[CLS] my name is anthony [SEP]";
    int32_t *ids;
    size_t n;
    CHECK(aha_tokenizer_encode(t, text, strlen(text), &ids, &n, &err) == AHA_OK, "%s", err.msg);
    /* expected: 259, 256, 257, bytes of " is anthony ", 260 (byte ids are the byte values) */
    const char *mid = " is anthony ";
    size_t nm = strlen(mid);
    int ok = n == 4 + nm && ids[0] == 259 && ids[1] == 256 && ids[2] == 257 && ids[n - 1] == 260;
    for (size_t i = 0; ok && i < nm; i++) ok = ids[3 + i] == (uint8_t)mid[i];
    CHECK(ok, "flags split (%zu ids)", n);
    free(ids);
    /* single_word: "ony" alone is a token */
    CHECK(aha_tokenizer_encode(t, "x ony y", 7, &ids, &n, &err) == AHA_OK && n == 5 && ids[2] == 258,
          "single_word matches a lone word");
    free(ids);
    /* decode: added tokens give their content, lstrip/rstrip whitespace is gone */
    char *out;
    int32_t seq[] = {259, 256, 257, 260};
    CHECK(aha_tokenizer_decode(t, seq, 4, &out, &err) == AHA_OK && strcmp(out, "[CLS]myname[SEP]") == 0, "decode");
    free(out);
    aha_tokenizer_free(t);
}

/* ------------------------------------------------------------ byte-level writer */

static void test_bytelevel(void)
{
    char dir[] = "/tmp/aha_test_tok_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    const char *specials[] = {"<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"};
    aha_err err = {0};
    CHECK(aha_tokenizer_write_bytelevel(dir, specials, 5, &err) == AHA_OK, "write: %s", err.msg);
    aha_tokenizer *t = NULL;
    CHECK(aha_tokenizer_load(dir, &t, &err) == AHA_OK, "load written: %s", err.msg);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    json_t *c = json_load_file(cfg, 0, NULL);
    CHECK(c && strcmp(json_string_value(json_object_get(c, "eos_token")), "<|endoftext|>") == 0, "config eos");
    json_decref(c);
    if (!t) return;
    CHECK(aha_tokenizer_vocab_size(t) == 261, "vocab %d", aha_tokenizer_vocab_size(t));
    for (int i = 0; i < 5; i++) CHECK(aha_tokenizer_token_to_id(t, specials[i]) == 256 + i, "%s", specials[i]);
    CHECK(aha_tokenizer_is_special(t, 256) && !aha_tokenizer_is_special(t, 257) && aha_tokenizer_is_added(t, 257),
          "special flags");

    /* random UTF-8 (no '<', so no accidental specials) with specials at known places; the
     * expected ids are computed here: bytes for text, 256+k for special k */
    aha_rng rng;
    aha_rng_seed(&rng, 11, 0);
    int bad = 0;
    for (int trial = 0; trial < 300; trial++) {
        char text[4096];
        int32_t want[4096];
        size_t len = 0, nw = 0;
        int pieces = 1 + (int)aha_rng_below(&rng, 12);
        for (int p = 0; p < pieces; p++) {
            if (aha_rng_below(&rng, 3) == 0) {
                int k = (int)aha_rng_below(&rng, 5);
                size_t sl = strlen(specials[k]);
                memcpy(text + len, specials[k], sl);
                len += sl;
                want[nw++] = 256 + k;
                continue;
            }
            int chars = (int)aha_rng_below(&rng, 20);
            for (int i = 0; i < chars; i++) {
                uint32_t cp;
                do {
                    uint64_t r = aha_rng_below(&rng, 4);
                    cp = r == 0 ? (uint32_t)aha_rng_below(&rng, 0x80)
                       : r == 1 ? 0x80 + (uint32_t)aha_rng_below(&rng, 0x780)
                       : r == 2 ? 0x800 + (uint32_t)aha_rng_below(&rng, 0xF800)
                                : 0x10000 + (uint32_t)aha_rng_below(&rng, 0x100000);
                } while (cp == '<' || (cp >= 0xD800 && cp <= 0xDFFF));
                uint8_t u[4];
                int w;
                if (cp < 0x80) u[0] = (uint8_t)cp, w = 1;
                else if (cp < 0x800) u[0] = (uint8_t)(0xC0 | cp >> 6), u[1] = (uint8_t)(0x80 | (cp & 63)), w = 2;
                else if (cp < 0x10000)
                    u[0] = (uint8_t)(0xE0 | cp >> 12), u[1] = (uint8_t)(0x80 | ((cp >> 6) & 63)),
                    u[2] = (uint8_t)(0x80 | (cp & 63)), w = 3;
                else
                    u[0] = (uint8_t)(0xF0 | cp >> 18), u[1] = (uint8_t)(0x80 | ((cp >> 12) & 63)),
                    u[2] = (uint8_t)(0x80 | ((cp >> 6) & 63)), u[3] = (uint8_t)(0x80 | (cp & 63)), w = 4;
                for (int q = 0; q < w; q++) {
                    text[len++] = (char)u[q];
                    want[nw++] = u[q];
                }
            }
        }
        int32_t *ids;
        size_t n;
        if (aha_tokenizer_encode(t, text, len, &ids, &n, &err) != AHA_OK) {
            bad++;
            fprintf(stderr, "  encode: %s\n", err.msg);
            continue;
        }
        bool same = n == nw && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
        char *out = NULL;
        size_t ol = 0;
        same = same && aha_tokenizer_decode_len(t, ids, n, &out, &ol, &err) == AHA_OK && ol == len &&
               memcmp(out, text, len) == 0;
        bad += !same;
        free(out);
        free(ids);
    }
    CHECK(bad == 0, "%d of 300 random byte-level round trips failed", bad);

    /* lossy decoding, the example of the Unicode Standard (ch. 3, U+FFFD substitution of
     * maximal subparts): 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c
     * FFFD FFFD d */
    const uint8_t raw[] = {0x61, 0xF1, 0x80, 0x80, 0xE1, 0x80, 0xC2, 0x62, 0x80, 0x63, 0x80, 0xBF, 0x64};
    int32_t rid[sizeof raw];
    for (size_t i = 0; i < sizeof raw; i++) rid[i] = raw[i];
    char *out;
    CHECK(aha_tokenizer_decode(t, rid, sizeof raw, &out, &err) == AHA_OK, "lossy decode");
    const char *F = "\xEF\xBF\xBD";
    char want[64];
    snprintf(want, sizeof want, "a%s%s%sb%sc%s%sd", F, F, F, F, F, F);
    CHECK(strcmp(out, want) == 0, "maximal-subpart replacement");
    free(out);
    aha_tokenizer_free(t);

    /* single-file form and refused inputs */
    char path[600];
    snprintf(path, sizeof path, "%s/only.json", dir);
    CHECK(aha_tokenizer_write_bytelevel(path, specials, 2, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_tokenizer_load(path, &t, &err) == AHA_OK && aha_tokenizer_vocab_size(t) == 258, "single file");
    aha_tokenizer_free(t);
    const char *dup[] = {"<x>", "<x>"};
    CHECK(aha_tokenizer_write_bytelevel(dir, dup, 2, &err) == AHA_EINVAL, "duplicate special refused");
    const char *byte_sym[] = {"a"};
    CHECK(aha_tokenizer_write_bytelevel(dir, byte_sym, 1, &err) == AHA_EINVAL, "byte symbol as special refused");
    aha_remove_tree(dir, NULL);
}

/* ------------------------------------------------------------ malformed files */

static void expect_fail(const char *what, const char *js, size_t len, aha_status want, const char *needle)
{
    aha_tokenizer *t = NULL;
    aha_err err = {0};
    aha_status st = aha_tokenizer_load_json(js, len, "bad.json", &t, &err);
    CHECK(st == want && t == NULL, "%s: status %s, want %s (%s)", what, aha_status_name(st), aha_status_name(want), err.msg);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle);
    aha_tokenizer_free(t);
}

/* toy tokenizer with one substring replaced */
static void expect_fail_sub(const char *what, const char *from, const char *to, aha_status want,
                            const char *needle)
{
    static const char *const merges[] = {"a b", "ab c"};
    char *js = toy_json(merges, 2, NULL,
                        "[{\"id\":258,\"content\":\"<s>\",\"special\":true,\"normalized\":false}]",
                        "{\"type\":\"NFC\"}",
                        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}+|\\\\s+\"},"
                        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                        "\"use_regex\":false}]}");
    char *p = strstr(js, from);
    CHECK(p != NULL, "%s: '%s' not in the toy file", what, from);
    if (!p) {
        free(js);
        return;
    }
    size_t fl = strlen(from), tl = strlen(to), n = strlen(js);
    char *m = malloc(n - fl + tl + 1);
    memcpy(m, js, (size_t)(p - js));
    memcpy(m + (p - js), to, tl);
    memcpy(m + (p - js) + tl, p + fl, n - (size_t)(p - js) - fl + 1);
    expect_fail(what, m, strlen(m), want, needle);
    free(m);
    free(js);
}

static void test_malformed(void)
{
    /* the unmodified toy loads (so each failure below is due to its one change) */
    static const char *const merges[] = {"a b", "ab c"};
    char *js = toy_json(merges, 2, NULL, NULL, NULL, NULL);
    aha_tokenizer *t = NULL;
    aha_err err = {0};
    CHECK(aha_tokenizer_load_json(js, strlen(js), "toy", &t, &err) == AHA_OK, "%s", err.msg);
    aha_tokenizer_free(t);
    /* truncations of a valid file at many points */
    size_t n = strlen(js);
    int bad = 0;
    for (size_t cut = 0; cut < n; cut += 1 + cut / 8) {
        t = NULL;
        if (aha_tokenizer_load_json(js, cut, "cut", &t, &err) != AHA_EFORMAT || t) bad++;
        aha_tokenizer_free(t);
    }
    CHECK(bad == 0, "%d truncated files were not refused as malformed", bad);
    free(js);

    expect_fail("empty", "", 0, AHA_EFORMAT, "not valid JSON");
    expect_fail("array", "[1,2]", 5, AHA_EFORMAT, "object at the top");
    expect_fail("no model", "{\"version\":\"1.0\"}", 17, AHA_EFORMAT, "model");
    expect_fail("bad utf8", "{\"model\":{\"vocab\":{\"\xff\":0}}}", strlen("{\"model\":{\"vocab\":{\"\xff\":0}}}"), AHA_EFORMAT, "not valid JSON");
    expect_fail_sub("vocab array", "\"vocab\":{", "\"vocab\":[],\"x\":{", AHA_EFORMAT, "model.vocab: expected an object");
    expect_fail_sub("id string", "\"!\":33", "\"!\":\"0\"", AHA_EFORMAT, "not an integer");
    expect_fail_sub("huge id", "\"!\":33", "\"!\":4000000000", AHA_EFORMAT, "outside");
    expect_fail_sub("negative id", "\"!\":33", "\"!\":-1", AHA_EFORMAT, "outside");
    expect_fail_sub("duplicate id", "\"#\":35", "\"#\":0", AHA_EFORMAT, "given to both");
    expect_fail_sub("unknown merge token", "\"a b\"", "\"a zz\"", AHA_EFORMAT, "'zz' is not in model.vocab");
    expect_fail_sub("merge result unknown", "\"a b\"", "\"c a\"", AHA_EFORMAT, "merged token 'ca'");
    expect_fail_sub("merge one part", "\"a b\"", "\"ab\"", AHA_EFORMAT, "separated by one space");
    expect_fail_sub("merge wrong type", "\"a b\"", "17", AHA_EFORMAT, "model.merges[0]");
    expect_fail_sub("merge 3 array", "\"a b\"", "[\"a\",\"b\",\"c\"]", AHA_EFORMAT, "model.merges[0]");
    expect_fail_sub("missing byte", "\"!\":33", "\"zzz\":33", AHA_EUNSUPPORTED, "ByteLevel symbol");
    expect_fail_sub("bad regex", "\\\\p{L}+|", "(\\\\p{L}+|", AHA_EFORMAT, "bad regex");
    expect_fail_sub("behavior", "\"Isolated\"", "\"Removed\"", AHA_EUNSUPPORTED, "behavior");
    expect_fail_sub("invert", "\"invert\":false", "\"invert\":true", AHA_EUNSUPPORTED, "invert");
    expect_fail_sub("invert type", "\"invert\":false", "\"invert\":1", AHA_EFORMAT, "invert");
    expect_fail_sub("normalizer", "\"NFC\"", "\"NFKC\"", AHA_EUNSUPPORTED, "NFKC");
    expect_fail_sub("model type", "\"BPE\"", "\"WordPiece\"", AHA_EUNSUPPORTED, "WordPiece");
    expect_fail_sub("decoder", "\"decoder\":{\"type\":\"ByteLevel\"}", "\"decoder\":null", AHA_EUNSUPPORTED, "decoder");
    expect_fail_sub("no bytelevel", ",{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}", "",
                    AHA_EUNSUPPORTED, "ByteLevel");
    expect_fail_sub("byte_fallback", "\"type\":\"BPE\",", "\"type\":\"BPE\",\"byte_fallback\":true,", AHA_EUNSUPPORTED,
                    "byte_fallback");
    expect_fail_sub("added id", "\"id\":258", "\"id\":99999999999", AHA_EFORMAT, "outside");
    expect_fail_sub("added empty", "\"content\":\"<s>\"", "\"content\":\"\"", AHA_EFORMAT, "empty");
    expect_fail_sub("added not object", "[{\"id\":258", "[7,{\"id\":258", AHA_EFORMAT, "added_tokens[0]");
    expect_fail_sub("added flag type", "\"special\":true", "\"special\":\"yes\"", AHA_EFORMAT, "special");
    expect_fail_sub("duplicate key", "\"!\":33", "\"!\":33,\"!\":33", AHA_EFORMAT, "not valid JSON");
}

int main(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/qwen3", th_fixtures());
    aha_err err = {0};
    double t0 = aha_now_s();
    aha_status st = aha_tokenizer_load(path, &qwen, &err);
    CHECK(st == AHA_OK, "load %s: %s", path, err.msg);
    if (st != AHA_OK) return th_done("test_tokenizer");
    fprintf(stderr, "  qwen3 tokenizer loaded in %.3f s\n", aha_now_s() - t0);
    test_reference_cases(qwen, "tok_cases.expected.jsonl", 28);
    /* random strings that hit the corners: whitespace kinds, U+180E, Unicode 15 letters,
     * NFC pairs, added-token prefixes (made by tokenizer/make_hf_random.py) */
    test_reference_cases(qwen, "qwen3_random.expected.jsonl", 1300);
    test_hf_flags();
    test_lookups();
    test_invalid_utf8();
    test_long_inputs();
    test_threads();
    test_reference_cases(qwen, "tok_cases.expected.jsonl", 28); /* again, after the cache turned over */
    test_toy_bpe();
    test_added_flags();
    test_bytelevel();
    test_malformed();
    aha_tokenizer_free(qwen);
    return th_done("test_tokenizer");
}
