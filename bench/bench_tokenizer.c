/* bench_tokenizer: encode throughput (MB/s, one core) of a tokenizer.json on English prose.
 *
 * The prose is generated deterministically: sentences of common English words (drawn with a
 * Zipf-like skew, as real text is) mixed with invented words built from syllables, so the word
 * cache sees the long tail of new words that real corpora have instead of a handful of words
 * repeated. Prints MB/s with the word cache on (the default) and off, and decode throughput,
 * all per CPU second of the one encoding thread (best of a few runs).
 *
 * usage: bench_tokenizer [TOKENIZER_JSON_OR_DIR] [MEGABYTES]
 *        (default: $AHA_FIXTURES/tokenizer/qwen3, 4 MB) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/fs.h"
#include "base/rng.h"
#include "text/tokenizer.h"

static const char *const common[] = {
    "the", "of", "and", "to", "a", "in", "is", "that", "it", "was", "for", "on", "are", "as",
    "with", "his", "they", "at", "be", "this", "from", "have", "or", "by", "one", "had", "not",
    "but", "what", "all", "were", "when", "we", "there", "can", "an", "your", "which", "their",
    "said", "if", "do", "will", "each", "about", "how", "up", "out", "them", "then", "she",
    "many", "some", "so", "these", "would", "other", "into", "has", "more", "her", "two", "like",
    "him", "see", "time", "could", "no", "make", "than", "first", "been", "its", "who", "now",
    "people", "my", "made", "over", "did", "down", "only", "way", "find", "use", "may", "water",
    "long", "little", "very", "after", "words", "called", "just", "where", "most", "know",
    "get", "through", "back", "much", "before", "go", "good", "new", "write", "our", "used",
    "me", "man", "too", "any", "day", "same", "right", "look", "think", "also", "around",
    "another", "came", "come", "work", "three", "word", "must", "because", "does", "part",
    "even", "place", "well", "such", "here", "take", "why", "things", "help", "put", "years",
    "different", "away", "again", "off", "went", "old", "number", "great", "tell", "men",
    "say", "small", "every", "found", "still", "between", "name", "should", "home", "big",
    "give", "air", "line", "set", "own", "under", "read", "last", "never", "us", "left", "end",
    "along", "while", "might", "next", "sound", "below", "saw", "something", "thought", "both",
    "few", "those", "always", "looked", "show", "large", "often", "together", "asked", "house",
    "world", "going", "want", "school", "important", "until", "form", "food", "keep",
    "children", "feet", "land", "side", "without", "boy", "once", "animals", "life", "enough",
    "took", "sometimes", "four", "head", "above", "kind", "began", "almost", "live", "page",
    "got", "earth", "need", "far", "hand", "high", "year", "mother", "light", "parts",
    "country", "father", "let", "night", "following", "picture", "being", "study", "second",
    "eyes", "soon", "times", "story", "boys", "since", "white", "days", "ever", "paper", "hard",
    "near", "sentence", "better", "best", "across", "during", "today", "others", "however",
    "sure", "means", "knew", "try", "told", "young", "miles", "sun", "ways", "thing", "whole",
    "hear", "example", "heard", "several", "change", "answer", "room", "sea", "against", "top",
    "turned", "learn", "point", "city", "play", "toward", "five", "using", "himself", "usually",
    "reasoning", "model", "problem", "solution", "equation", "therefore", "verify", "compute",
};
static const char *const syll[] = {
    "ka", "lo", "mi", "ran", "te", "vor", "qu", "el", "is", "tion", "pre", "con", "ex", "ble",
    "ment", "ish", "ous", "ard", "ly", "ing", "ed", "un", "re", "st", "ph", "gr", "zy", "ax",
    "or", "an", "ic", "al", "ive", "ster", "wen", "dol", "mar", "bri", "sca", "thr", "oo", "ea",
};

static size_t gen_prose(char *buf, size_t cap, uint64_t seed)
{
    aha_rng r;
    aha_rng_seed(&r, seed, 0);
    size_t n = 0, nc = sizeof common / sizeof common[0], ns = sizeof syll / sizeof syll[0];
    int sentence_pos = 0;
    while (n + 64 < cap) {
        char word[48];
        size_t wl = 0;
        if (aha_rng_below(&r, 100) < 22) {
            int k = 2 + (int)aha_rng_below(&r, 3);
            for (int i = 0; i < k; i++) {
                const char *s = syll[aha_rng_below(&r, ns)];
                size_t l = strlen(s);
                memcpy(word + wl, s, l);
                wl += l;
            }
        } else {
            double u = aha_rng_f64(&r);
            const char *s = common[(size_t)(u * u * (double)nc)];
            wl = strlen(s);
            memcpy(word, s, wl);
        }
        if (aha_rng_below(&r, 200) == 0) wl = (size_t)snprintf(word, sizeof word, "%u", (unsigned)aha_rng_below(&r, 100000));
        if (sentence_pos == 0 && word[0] >= 'a' && word[0] <= 'z') word[0] = (char)(word[0] - 32);
        if (n && buf[n - 1] != '\n') buf[n++] = ' ';
        memcpy(buf + n, word, wl);
        n += wl;
        sentence_pos++;
        uint64_t p = aha_rng_below(&r, 100);
        if (sentence_pos > 5 && p < 12) {
            buf[n++] = p < 9 ? '.' : p < 11 ? '?' : '!';
            sentence_pos = 0;
            if (aha_rng_below(&r, 8) == 0) {
                buf[n++] = '\n';
                buf[n++] = '\n';
            }
        } else if (p < 18) {
            buf[n++] = p < 16 ? ',' : ';';
        } else if (p == 18) {
            memcpy(buf + n, "'s", 2);
            n += 2;
        }
    }
    return n;
}

/* CPU seconds of this thread: on a shared machine wall time measures the neighbours too */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* encode text in prompt-sized chunks split at paragraph ends; returns CPU seconds */
static double run_encode(aha_tokenizer *tok, const char *text, size_t len, size_t *ntok)
{
    double t0 = cpu_s();
    size_t at = 0, total = 0;
    while (at < len) {
        size_t end = at + 4096 < len ? at + 4096 : len;
        while (end < len && text[end] != '\n') end++;
        int32_t *ids;
        size_t n;
        aha_err err = {0};
        if (aha_tokenizer_encode(tok, text + at, end - at, &ids, &n, &err) != AHA_OK) {
            fprintf(stderr, "encode: %s\n", err.msg);
            exit(1);
        }
        total += n;
        free(ids);
        at = end;
    }
    *ntok = total;
    return cpu_s() - t0;
}

int main(int argc, char **argv)
{
    char def[1024];
    const char *fx = getenv("AHA_FIXTURES");
    snprintf(def, sizeof def, "%s/tokenizer/qwen3", fx ? fx : "tests/fixtures");
    const char *path = argc > 1 ? argv[1] : def;
    double mb = argc > 2 ? atof(argv[2]) : 4.0;
    if (mb <= 0 || mb > 1024) {
        fprintf(stderr, "bench_tokenizer: MEGABYTES must be in (0, 1024]\n");
        return 2;
    }
    aha_tokenizer *tok;
    aha_err err = {0};
    double t0 = aha_now_s();
    if (aha_tokenizer_load(path, &tok, &err) != AHA_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 2;
    }
    double load_s = aha_now_s() - t0;
    size_t cap = (size_t)(mb * 1e6);
    char *text = malloc(cap);
    size_t len = gen_prose(text, cap, 2025);
    printf("tokenizer %s (vocab %d), loaded in %.3f s\n", path, aha_tokenizer_vocab_size(tok), load_s);
    printf("text: %.2f MB of generated English prose\n", (double)len / 1e6);

    size_t ntok = 0;
    run_encode(tok, text, len / 8, &ntok); /* warm-up */
    double best_on = 1e30, best_off = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        aha_tokenizer_set_cache_capacity(tok, 1 << 16);
        double s = run_encode(tok, text, len, &ntok);
        if (s < best_on) best_on = s;
    }
    size_t ntok_off = 0;
    for (int rep = 0; rep < 2; rep++) {
        aha_tokenizer_set_cache_capacity(tok, 0);
        double s = run_encode(tok, text, len, &ntok_off);
        if (s < best_off) best_off = s;
    }
    if (ntok_off != ntok) {
        fprintf(stderr, "bench_tokenizer: cache on/off give %zu vs %zu tokens\n", ntok, ntok_off);
        return 1;
    }
    printf("encode, word cache on : %7.2f MB/s  (%.2f M tokens/s, %.2f bytes/token)\n",
           (double)len / 1e6 / best_on, (double)ntok / 1e6 / best_on, (double)len / (double)ntok);
    printf("encode, word cache off: %7.2f MB/s\n", (double)len / 1e6 / best_off);

    int32_t *ids;
    size_t n;
    aha_tokenizer_set_cache_capacity(tok, 1 << 16);
    if (aha_tokenizer_encode(tok, text, len, &ids, &n, &err) != AHA_OK) {
        fprintf(stderr, "encode: %s\n", err.msg);
        return 1;
    }
    t0 = cpu_s();
    char *out;
    size_t ol;
    if (aha_tokenizer_decode_len(tok, ids, n, &out, &ol, &err) != AHA_OK || ol != len || memcmp(out, text, len) != 0) {
        fprintf(stderr, "bench_tokenizer: decode does not give the text back\n");
        return 1;
    }
    printf("decode                : %7.2f MB/s\n", (double)len / 1e6 / (cpu_s() - t0));
    free(out);
    free(ids);
    free(text);
    aha_tokenizer_free(tok);
    return 0;
}
