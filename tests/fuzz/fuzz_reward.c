/* fuzz_reward.c: libFuzzer target over the reward rules (services/reward/rewards.h): answer
 * extraction, answer/reference comparison, format, language and the whole item score.
 *
 * Input layout: byte 0 picks the language code; the rest is split at the first two "\xff\xfe"
 * markers into completion, reference and prompt. Every part is scored raw (mostly invalid
 * UTF-8, which must become an item error) and once more with the invalid bytes replaced, so
 * the rules themselves see the full input. The target aborts when a result leaves its range
 * or a status disagrees with the input's validity. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/reward/rewards.h"

static const char *const langs[] = {"", "en", "zh", "ja", "ko", "ru", "el", "ar", "hi", "th",
                                    "zh-CN", "xx"};

/* split data at the next "\xff\xfe": [*p, end) is the part; *p moves past the marker */
static size_t part(const uint8_t *d, size_t n, size_t *p)
{
    size_t s = *p;
    for (size_t k = s; k + 1 < n; k++) {
        if (d[k] == 0xff && d[k + 1] == 0xfe) {
            *p = k + 2;
            return k - s;
        }
    }
    *p = n;
    return n - s;
}

/* invalid UTF-8 bytes become 'a' (same length, so offsets stay comparable) */
static void repair(uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                                   : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = (s[i + k] & 0xC0) == 0x80;
        if (ok && len == 3) {
            uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6);
            ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
        }
        if (ok && len == 4) {
            uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (!ok) {
            s[i++] = 'a';
            continue;
        }
        i += len;
    }
}

static void check_item(const uint8_t *c, size_t cn, const uint8_t *r, size_t rn,
                       const uint8_t *p, size_t pn, const char *lang, bool valid)
{
    aha_reward_item it = {.prompt = (const char *)p, .prompt_len = pn,
                          .completion = (const char *)c, .completion_len = cn,
                          .reference = (const char *)r, .reference_len = rn,
                          .language = lang, .language_len = strlen(lang)};
    aha_reward_weights w = {1, 1, 1};
    aha_reward_result res;
    aha_status st = aha_reward_score(&it, &w, &res);
    bool lang_ok = !lang[0] || aha_reward_language_supported(lang, strlen(lang));
    if (valid && lang_ok && st != AHA_OK && st != AHA_ENOMEM) abort();
    if ((!valid || !lang_ok) && st == AHA_OK) abort();
    if (st != AHA_OK && (res.total != 0 || res.error[0] == '\0')) abort();
    if (res.accuracy != 0 && res.accuracy != 1) abort();
    if (res.format != 0 && res.format != 1) abort();
    if (!(res.language >= 0 && res.language <= 1)) abort();
    if (!(res.total >= 0 && res.total <= 3)) abort();
    if (strlen(res.extracted) >= sizeof res.extracted || strlen(res.error) >= sizeof res.error)
        abort();

    size_t off, len;
    if (aha_reward_extract_answer((const char *)c, cn, &off, &len) && (off > cn || len > cn - off))
        abort();
    double f = aha_reward_format((const char *)p, pn, (const char *)c, cn);
    if (f != 0 && f != 1) abort();
    if (valid && st == AHA_OK && f != res.format) abort();
    /* the raw comparison of the two parts, both ways */
    bool eq;
    aha_reward_equivalent((const char *)c, cn, (const char *)r, rn, &eq, NULL);
    aha_reward_equivalent((const char *)r, rn, (const char *)c, cn, &eq, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const char *lang = langs[data[0] % (sizeof langs / sizeof langs[0])];
    const uint8_t *d = data + 1;
    size_t n = size - 1, p = 0;
    size_t c0 = p, cn = part(d, n, &p);
    size_t r0 = p, rn = part(d, n, &p);
    size_t p0 = p, pn = n - p;
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) return 0;
    memcpy(copy, d, n);
    /* raw: valid only when every part is valid UTF-8 (the markers are not in any part) */
    uint8_t *fixed = malloc(n ? n : 1);
    if (!fixed) {
        free(copy);
        return 0;
    }
    memcpy(fixed, d, n);
    repair(fixed + c0, cn);
    repair(fixed + r0, rn);
    repair(fixed + p0, pn);
    bool valid = memcmp(fixed + c0, copy + c0, cn) == 0 && memcmp(fixed + r0, copy + r0, rn) == 0 &&
                 memcmp(fixed + p0, copy + p0, pn) == 0;
    check_item(copy + c0, cn, copy + r0, rn, copy + p0, pn, lang, valid);
    if (!valid) check_item(fixed + c0, cn, fixed + r0, rn, fixed + p0, pn, lang, true);
    free(copy);
    free(fixed);
    return 0;
}
