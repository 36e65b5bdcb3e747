/* tokenizer.c: Hugging Face tokenizer.json byte-level BPE (see tokenizer.h for what is supported).
 *
 * Encode pipeline, in HF's order:
 *   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest);
 *   2. each remaining piece is NFC-normalised, then added tokens with normalized=true are cut
 *      out of it;
 *   3. each remaining piece runs through the pre-tokenizer steps (regex splits, ByteLevel);
 *   4. each pre-token is BPE-merged, working directly on raw bytes: the ByteLevel alphabet maps
 *      every byte to one symbol, so byte b starts as token byte_id[b] and merges act on ids.
 * Pre-tokenizer steps are applied recursively, piece by piece, so nothing is materialised
 * between steps. BPE merges the lowest-ranked adjacent pair first (leftmost on ties) using a
 * heap of (rank, position) keys over a linked list of symbols: O(n log n) even for a
 * megabyte-long word. Results for short words go into a shared word cache guarded by a
 * trylock, so concurrent encoders never wait on each other.
 *
 * Invariants after load: every id in 0..n_ids-1 is unused or has a token string and decoded
 * bytes; every merge maps two model ids to a model id; byte_id[b] is valid for all 256 bytes. */
#include "text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/fs.h"
#include "base/log.h"

/* ---------------------------------------------------------------- byte-level alphabet */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * take code points 256..323 in byte order. */
#define BL_NCP 324
static uint16_t bl_cp_of_byte[256];
static int16_t bl_byte_of_cp[BL_NCP];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void)
{
    int extra = 0;
    for (int cp = 0; cp < BL_NCP; cp++) bl_byte_of_cp[cp] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : 256 + extra++;
        bl_cp_of_byte[b] = (uint16_t)cp;
        bl_byte_of_cp[cp] = (int16_t)b;
    }
}

/* UTF-8 of the symbol of byte b into out (1 or 2 bytes); returns the length */
static size_t bl_symbol(uint8_t b, char *out)
{
    unsigned cp = bl_cp_of_byte[b];
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s[0..n), 0 when invalid (overlong, surrogate, beyond
 * U+10FFFF, truncated). */
static size_t utf8_seq_len(const uint8_t *s, size_t n)
{
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    size_t w;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) w = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        w = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        w = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < 2 || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < w; i++)
        if (i >= n || (s[i] & 0xC0) != 0x80) return 0;
    return w;
}

/* Offset of the first invalid byte, or n when all of s is valid UTF-8. */
static size_t utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (!(v & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        size_t w = utf8_seq_len(s + i, n - i);
        if (!w) return i;
        i += w;
    }
    return n;
}

static uint32_t utf8_decode(const uint8_t *s, size_t *w)
{
    uint8_t b = s[0];
    if (b < 0x80) {
        *w = 1;
        return b;
    }
    if (b < 0xE0) {
        *w = 2;
        return ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (b < 0xF0) {
        *w = 3;
        return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *w = 4;
    return ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
           ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* Rust's char::is_whitespace (the Unicode White_Space property), which HF's \s uses for
 * lstrip/rstrip. */
static bool is_white_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex's \w (alphabetic, marks, decimal digits, connector punctuation, joiners), which
 * HF's single_word test uses. */
static bool is_word_char(uint32_t c)
{
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* last code point of s[0..n) (n > 0, valid UTF-8) */
static uint32_t utf8_last(const uint8_t *s, size_t n)
{
    size_t i = n - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    size_t w;
    return utf8_decode(s + i, &w);
}

/* ---------------------------------------------------------------- hashing and maps */

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0x100000001b3ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    return mix64(h ^ v);
}

static uint32_t pow2_at_least(size_t n)
{
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* string -> id, keys stored in the tokenizer's arena; load factor <= 1/2 */
typedef struct {
    uint32_t h, off, len;
    int32_t id; /* -1: empty */
} str_slot;

typedef struct {
    str_slot *slots;
    uint32_t mask;
} str_map;

/* merge (a, b) -> (rank, new id); key = a << 32 | b, empty = UINT64_MAX */
typedef struct {
    uint64_t key;
    uint32_t rank;
    int32_t id;
} merge_slot;

/* ---------------------------------------------------------------- the tokenizer */

enum { TK_NONE = 0, TK_MODEL = 1, TK_ADDED = 2 };

typedef struct {
    uint32_t str_off, str_len;     /* id_to_token string (added content wins) */
    uint32_t bytes_off, bytes_len; /* what the ByteLevel decoder makes of it */
    uint8_t kind;                  /* TK_* bits */
    bool special;
} tok_entry;

typedef struct {
    int32_t id;
    uint32_t off, len; /* content as matched (NFC'd for normalized tokens under NFC) */
    bool single_word, lstrip, rstrip, normalized, special;
} added_token;

/* added tokens of one pass, grouped by first byte, longest first within a group, so the first
 * hit at a position is the leftmost-longest match */
typedef struct {
    int32_t *order; /* indices into added[] */
    uint32_t first[257];
    int n;
} added_set;

enum { PT_SPLIT, PT_BYTELEVEL };
#define MAX_STEPS 8

typedef struct {
    int kind;
    pcre2_code *re;        /* split regex (Split, or ByteLevel with use_regex) */
    pcre2_code *re_compat; /* the same rewritten to oniguruma's classes (see onig_compat) */
    bool add_prefix_space; /* ByteLevel */
} pt_step;

typedef struct {
    uint64_t h;
    uint32_t off;
    uint16_t klen, nids; /* klen 0: empty */
} cache_slot;

typedef struct {
    pthread_mutex_t mu;
    size_t cap_words, words;
    cache_slot *slots;
    uint32_t mask;
    uint8_t *arena;
    size_t used, arena_cap;
} word_cache;

#define CACHE_MAX_WORD 64
#define CACHE_DEFAULT (1u << 16)

struct aha_tokenizer {
    char *arena;
    size_t arena_len, arena_cap;
    tok_entry *ent; /* (n_ids) */
    int32_t n_ids;
    int32_t model_count; /* entries of model.vocab (HF numbers new added tokens from it) */
    str_map vocab;  /* model vocab: merges and ignore_merges resolve against it */
    str_map added_map;
    merge_slot *merges;
    uint32_t merge_mask;
    int32_t byte_id[256];
    bool ignore_merges;
    bool nfc;
    added_token *added;
    int n_added;
    added_set raw_set, norm_set;
    pt_step steps[MAX_STEPS];
    int n_steps;
    pcre2_match_context *mctx;
    word_cache cache;
};

/* ---------------------------------------------------------------- load helpers */

typedef struct {
    aha_tokenizer *t;
    const char *name;
    aha_err *err;
} loader;

static aha_status lerr(loader *L, aha_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static aha_status lerr(loader *L, aha_status st, const char *fmt, ...)
{
    char msg[AHA_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* quoted tokens may hold newlines; messages stay one line */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' ';
    return aha_errf(L->err, st, "%s: %s", L->name, msg);
}

/* store bytes in the arena; returns the offset or UINT32_MAX when out of memory/range */
static uint32_t arena_put(aha_tokenizer *t, const void *p, size_t n)
{
    if (t->arena_len + n + 1 > UINT32_MAX) return UINT32_MAX;
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n + 1) cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a) return UINT32_MAX;
        t->arena = a;
        t->arena_cap = cap;
    }
    uint32_t off = (uint32_t)t->arena_len;
    if (n) memcpy(t->arena + off, p, n);
    t->arena[off + n] = 0;
    t->arena_len += n + 1;
    return off;
}

static bool str_map_init(str_map *m, size_t n)
{
    uint32_t cap = pow2_at_least(2 * n + 1);
    m->slots = malloc(sizeof *m->slots * cap);
    if (!m->slots) return false;
    for (uint32_t i = 0; i < cap; i++) m->slots[i].id = -1;
    m->mask = cap - 1;
    return true;
}

static str_slot *str_map_find(const aha_tokenizer *t, const str_map *m, const char *s, size_t n,
                              uint64_t h64)
{
    uint32_t h = (uint32_t)(h64 >> 32);
    for (uint32_t i = (uint32_t)h64 & m->mask;; i = (i + 1) & m->mask) {
        str_slot *sl = &m->slots[i];
        if (sl->id < 0) return sl;
        if (sl->h == h && sl->len == n && memcmp(t->arena + sl->off, s, n) == 0) return sl;
    }
}

static int32_t str_map_get(const aha_tokenizer *t, const str_map *m, const char *s, size_t n)
{
    if (!m->slots) return -1;
    return str_map_find(t, m, s, n, hash_bytes(s, n))->id;
}

/* insert (off, len) -> id; returns false when the key is already there (*old = its id) */
static bool str_map_put(aha_tokenizer *t, str_map *m, uint32_t off, uint32_t len, int32_t id,
                        int32_t *old)
{
    uint64_t h64 = hash_bytes(t->arena + off, len);
    str_slot *sl = str_map_find(t, m, t->arena + off, len, h64);
    if (sl->id >= 0) {
        *old = sl->id;
        return false;
    }
    sl->h = (uint32_t)(h64 >> 32);
    sl->off = off;
    sl->len = len;
    sl->id = id;
    return true;
}

static inline const merge_slot *merge_get(const aha_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *s = &t->merges[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

static void merge_put(aha_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        merge_slot *s = &t->merges[i];
        if (s->key == key || s->key == UINT64_MAX) {
            /* a repeated pair keeps the later rank, as HF's HashMap collect does */
            s->key = key;
            s->rank = rank;
            s->id = id;
            return;
        }
    }
}

/* optional bool field: absent or null -> def */
static aha_status get_bool(loader *L, json_t *obj, const char *key, bool def, bool *out,
                           const char *where)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return AHA_OK;
    }
    if (!json_is_boolean(v)) return lerr(L, AHA_EFORMAT, "%s.%s: expected true or false", where, key);
    *out = json_is_true(v);
    return AHA_OK;
}

static aha_status get_id(loader *L, json_t *v, int32_t *out, const char *where, const char *what)
{
    if (!json_is_integer(v))
        return lerr(L, AHA_EFORMAT, "%s: id of '%.60s' is not an integer", where, what);
    json_int_t id = json_integer_value(v);
    if (id < 0 || id >= AHA_TOK_MAX_ID)
        return lerr(L, AHA_EFORMAT, "%s: id %lld of '%.60s' is outside 0..%d", where, (long long)id,
                    what, AHA_TOK_MAX_ID - 1);
    *out = (int32_t)id;
    return AHA_OK;
}

static const char *type_of(json_t *obj)
{
    json_t *ty = json_object_get(obj, "type");
    return json_is_string(ty) ? json_string_value(ty) : NULL;
}

/* NFC of s[0..n) into a malloc'd buffer; NULL on failure */
static uint8_t *nfc_dup(const uint8_t *s, size_t n, size_t *out_len)
{
    uint8_t *out = NULL;
    utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)n, &out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) return NULL;
    *out_len = (size_t)r;
    return out;
}

/* whether NFC could change s: every code point below U+0300 is NFC-stable and never composes
 * with what precedes it, and such text holds no byte >= 0xCC */
static bool nfc_needed(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0xCC) return true;
    return false;
}

/* ---------------------------------------------------------------- load: model */

static aha_status load_vocab(loader *L, json_t *vocab, json_t *added)
{
    aha_tokenizer *t = L->t;
    if (!json_is_object(vocab)) return lerr(L, AHA_EFORMAT, "model.vocab: expected an object");
    int32_t mx = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        int32_t id;
        AHA_TRY(get_id(L, v, &id, "model.vocab", key));
        if (id > mx) mx = id;
    }
    if (added) {
        size_t i;
        json_array_foreach(added, i, v) {
            if (!json_is_object(v)) return lerr(L, AHA_EFORMAT, "added_tokens[%zu]: expected an object", i);
            json_t *c = json_object_get(v, "content");
            if (!json_is_string(c)) return lerr(L, AHA_EFORMAT, "added_tokens[%zu].content: expected a string", i);
            int32_t id;
            char where[64];
            snprintf(where, sizeof where, "added_tokens[%zu]", i);
            AHA_TRY(get_id(L, json_object_get(v, "id"), &id, where, json_string_value(c)));
        }
    }
    if (mx < 0) return lerr(L, AHA_EFORMAT, "model.vocab: empty vocabulary");
    /* added tokens get ids at load (see load_added), at most this many beyond the model's */
    size_t count = json_object_size(vocab), n_added = json_array_size(added);
    size_t bound = ((size_t)mx + 1 > count ? (size_t)mx + 1 : count) + n_added;
    if (bound > AHA_TOK_MAX_ID) return lerr(L, AHA_EFORMAT, "%zu ids is more than %d", bound, AHA_TOK_MAX_ID);
    t->n_ids = mx + 1;
    t->model_count = (int32_t)count;
    t->ent = calloc(bound, sizeof *t->ent);
    if (!t->ent || !str_map_init(&t->vocab, count))
        return lerr(L, AHA_ENOMEM, "cannot allocate a vocabulary of %zu ids", bound);
    json_object_foreach(vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        size_t len = strlen(key);
        if (t->ent[id].kind & TK_MODEL) {
            return lerr(L, AHA_EFORMAT, "model.vocab: id %d is given to both '%.60s' and '%.60s'",
                        id, t->arena + t->ent[id].str_off, key);
        }
        uint32_t off = arena_put(t, key, len);
        if (off == UINT32_MAX) return lerr(L, AHA_ENOMEM, "out of memory for token strings");
        int32_t old;
        if (!str_map_put(t, &t->vocab, off, (uint32_t)len, id, &old))
            return lerr(L, AHA_EFORMAT, "model.vocab: '%.60s' appears twice", key);
        t->ent[id].str_off = off;
        t->ent[id].str_len = (uint32_t)len;
        t->ent[id].kind = TK_MODEL;
    }
    return AHA_OK;
}

/* one merge as its two parts; the string form is "a b" with exactly one space */
static aha_status merge_parts(loader *L, json_t *m, size_t i, const char **a, size_t *na,
                              const char **b, size_t *nb)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return lerr(L, AHA_EFORMAT, "model.merges[%zu]: '%.60s' is not two tokens separated by one space", i, s);
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = n - *na - 1;
        return AHA_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *na = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *nb = json_string_length(json_array_get(m, 1));
        return AHA_OK;
    }
    return lerr(L, AHA_EFORMAT, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", i);
}

static aha_status load_merges(loader *L, json_t *merges)
{
    aha_tokenizer *t = L->t;
    if (merges && !json_is_null(merges) && !json_is_array(merges))
        return lerr(L, AHA_EFORMAT, "model.merges: expected an array");
    size_t n = json_is_array(merges) ? json_array_size(merges) : 0;
    uint32_t cap = pow2_at_least(2 * n + 1);
    t->merges = malloc(sizeof *t->merges * cap);
    if (!t->merges) return lerr(L, AHA_ENOMEM, "cannot allocate %zu merges", n);
    for (uint32_t i = 0; i < cap; i++) t->merges[i].key = UINT64_MAX;
    t->merge_mask = cap - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    uint32_t rank = 0;
    aha_status st = AHA_OK;
    for (size_t i = 0; i < n && st == AHA_OK; i++) {
        json_t *m = json_array_get(merges, i);
        /* HF drops "#version" header lines of merges.txt before numbering ranks */
        if (json_is_string(m) && strncmp(json_string_value(m), "#version", 8) == 0) continue;
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if ((st = merge_parts(L, m, i, &a, &na, &b, &nb)) != AHA_OK) break;
        int32_t ia = str_map_get(t, &t->vocab, a, na), ib = str_map_get(t, &t->vocab, b, nb);
        if (ia < 0 || ib < 0) {
            st = lerr(L, AHA_EFORMAT, "model.merges[%zu]: token '%.60s' is not in model.vocab", i,
                      ia < 0 ? a : b);
            break;
        }
        if (na + nb > cat_cap) {
            cat_cap = (na + nb) * 2 + 16;
            char *c = realloc(cat, cat_cap);
            if (!c) {
                st = lerr(L, AHA_ENOMEM, "out of memory");
                break;
            }
            cat = c;
        }
        memcpy(cat, a, na);
        memcpy(cat + na, b, nb);
        int32_t id = str_map_get(t, &t->vocab, cat, na + nb);
        if (id < 0) {
            st = lerr(L, AHA_EFORMAT, "model.merges[%zu]: merged token '%.*s' is not in model.vocab", i,
                      (int)(na + nb > 60 ? 60 : na + nb), cat);
            break;
        }
        merge_put(t, ia, ib, rank++, id);
    }
    free(cat);
    return st;
}

static aha_status load_model(loader *L, json_t *model, json_t *added)
{
    aha_tokenizer *t = L->t;
    if (!json_is_object(model)) return lerr(L, AHA_EFORMAT, "model: expected an object");
    const char *ty = type_of(model);
    if (ty && strcmp(ty, "BPE") != 0)
        return lerr(L, AHA_EUNSUPPORTED, "model.type '%.40s' is not supported (only BPE)", ty);
    json_t *v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0))
        return lerr(L, AHA_EUNSUPPORTED, "model.dropout is not supported");
    bool bf = false;
    AHA_TRY(get_bool(L, model, "byte_fallback", false, &bf, "model"));
    if (bf) return lerr(L, AHA_EUNSUPPORTED, "model.byte_fallback is not supported (byte-level BPE only)");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < AHA_ARRAY_LEN(affixes); i++) {
        v = json_object_get(model, affixes[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return lerr(L, AHA_EUNSUPPORTED, "model.%s is not supported", affixes[i]);
    }
    AHA_TRY(get_bool(L, model, "ignore_merges", false, &t->ignore_merges, "model"));
    AHA_TRY(load_vocab(L, json_object_get(model, "vocab"), added));
    AHA_TRY(load_merges(L, json_object_get(model, "merges")));
    /* every byte must have its symbol: the merge loop starts from them */
    for (int b = 0; b < 256; b++) {
        char sym[2];
        size_t n = bl_symbol((uint8_t)b, sym);
        t->byte_id[b] = str_map_get(t, &t->vocab, sym, n);
        if (t->byte_id[b] < 0)
            return lerr(L, AHA_EUNSUPPORTED,
                        "model.vocab lacks the ByteLevel symbol '%.*s' of byte 0x%02X (not a byte-level BPE vocabulary)",
                        (int)n, sym, b);
    }
    return AHA_OK;
}

/* ---------------------------------------------------------------- load: added tokens */

static int cmp_added_len(const void *pa, const void *pb, void *ctx)
{
    const aha_tokenizer *t = ctx;
    const added_token *a = &t->added[*(const int32_t *)pa], *b = &t->added[*(const int32_t *)pb];
    uint8_t fa = (uint8_t)t->arena[a->off], fb = (uint8_t)t->arena[b->off];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static aha_status build_set(loader *L, added_set *s, bool normalized)
{
    aha_tokenizer *t = L->t;
    s->order = malloc(sizeof *s->order * (size_t)(t->n_added + 1));
    if (!s->order) return lerr(L, AHA_ENOMEM, "out of memory");
    s->n = 0;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized && t->added[i].len > 0) s->order[s->n++] = i;
    qsort_r(s->order, (size_t)s->n, sizeof *s->order, cmp_added_len, t);
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < s->n && (uint8_t)t->arena[t->added[s->order[k]].off] < b) k++;
        s->first[b] = (uint32_t)k;
    }
    s->first[256] = (uint32_t)s->n;
    return AHA_OK;
}

static aha_status load_added(loader *L, json_t *added)
{
    aha_tokenizer *t = L->t;
    size_t n = json_array_size(added);
    if (n > AHA_TOK_MAX_ID) return lerr(L, AHA_EFORMAT, "added_tokens: %zu tokens is too many", n);
    t->added = calloc(n + 1, sizeof *t->added);
    if (!t->added || !str_map_init(&t->added_map, n))
        return lerr(L, AHA_ENOMEM, "out of memory");
    size_t i;
    json_t *v;
    int32_t max_added = -1;
    json_array_foreach(added, i, v) {
        added_token *a = &t->added[t->n_added];
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        json_t *c = json_object_get(v, "content");
        const char *content = json_string_value(c), *orig = content;
        size_t len = json_string_length(c), orig_len = len;
        if (len == 0) return lerr(L, AHA_EFORMAT, "%s.content is empty", where);
        AHA_TRY(get_bool(L, v, "special", false, &a->special, where));
        AHA_TRY(get_bool(L, v, "single_word", false, &a->single_word, where));
        AHA_TRY(get_bool(L, v, "lstrip", false, &a->lstrip, where));
        AHA_TRY(get_bool(L, v, "rstrip", false, &a->rstrip, where));
        AHA_TRY(get_bool(L, v, "normalized", !a->special, &a->normalized, where));
        /* a normalized token is matched and decoded in its normalized form (as HF stores it)
         * but numbered by its original content */
        uint8_t *norm = NULL;
        if (a->normalized && t->nfc) {
            size_t nl;
            norm = nfc_dup((const uint8_t *)content, len, &nl);
            if (!norm) return lerr(L, AHA_ENOMEM, "%s: cannot normalise '%.60s'", where, content);
            content = (const char *)norm;
            len = nl;
        }
        uint32_t off = arena_put(t, content, len);
        free(norm);
        if (off == UINT32_MAX) return lerr(L, AHA_ENOMEM, "out of memory");
        content = t->arena + off;
        if (str_map_get(t, &t->added_map, content, len) >= 0) continue; /* HF skips repeats */
        /* The id is not taken from the file: HF's AddedVocabulary::add_tokens gives a token in
         * the model vocabulary its model id and numbers the others on from the model's size
         * (or from the largest added id), and models are trained with HF's ids. Files written
         * by HF agree with this; others get a warning. */
        int32_t file_id = (int32_t)json_integer_value(json_object_get(v, "id"));
        int32_t mid = str_map_get(t, &t->vocab, orig, orig_len);
        if (mid >= 0) a->id = mid;
        else if (max_added < 0) a->id = t->model_count;
        else a->id = max_added >= t->model_count || t->model_count == 0 ? max_added + 1 : t->model_count;
        if (a->id != file_id)
            AHA_WARN("%s: %s: '%.60s' has id %d in the file but %d as Hugging Face tokenizers numbers it; using %d",
                     L->name, where, content, file_id, a->id, a->id);
        if (a->id > max_added) max_added = a->id;
        if (a->id >= t->n_ids) t->n_ids = a->id + 1;
        tok_entry *e = &t->ent[a->id];
        int32_t old;
        if (!str_map_put(t, &t->added_map, off, (uint32_t)len, a->id, &old))
            return lerr(L, AHA_EFORMAT, "%s: '%.60s' is already added with id %d", where, content, old);
        e->str_off = off;
        e->str_len = (uint32_t)len;
        e->kind |= TK_ADDED;
        e->special = a->special;
        a->off = off;
        a->len = (uint32_t)len;
        t->n_added++;
    }
    return AHA_OK;
}

/* ---------------------------------------------------------------- load: pipeline */

static aha_status load_normalizer(loader *L, json_t *n, int depth)
{
    if (!n || json_is_null(n)) return AHA_OK;
    const char *ty = json_is_object(n) ? type_of(n) : NULL;
    if (!ty) return lerr(L, AHA_EFORMAT, "normalizer: expected null or an object with a type");
    if (strcmp(ty, "NFC") == 0) {
        L->t->nfc = true;
        return AHA_OK;
    }
    if (strcmp(ty, "Sequence") == 0 && depth < 4) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return lerr(L, AHA_EFORMAT, "normalizer.normalizers: expected an array");
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v) AHA_TRY(load_normalizer(L, v, depth + 1));
        return AHA_OK;
    }
    return lerr(L, AHA_EUNSUPPORTED, "normalizer type '%.40s' is not supported (null, NFC or a Sequence of NFC)", ty);
}

/* the ByteLevel pre-tokenizer's own split (GPT-2) */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* HF runs Split regexes with oniguruma, whose classes differ from PCRE2's in two ways that
 * real text can hit: oniguruma's \s is the Unicode White_Space property, while PCRE2's also
 * takes U+180E (and nothing else extra); and PCRE2 10.42 knows Unicode 14, oniguruma 6.9.8
 * (tokenizers' copy) Unicode 15.0, whose new letters and numbers (CJK Extension H, Kawi, Nag
 * Mundari, ...) PCRE2 takes for unassigned. The pattern is rewritten so \s, \S, \p{L} and
 * \p{N} mean what oniguruma means (adding ranges that a newer PCRE2 already has is harmless).
 * \S inside a class cannot be rewritten and stays PCRE2's. */
#define ONIG_WS "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define U15_L                                                                                     \
    "\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{13441}-\\x{13446}" \
    "\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{31350}-\\x{323AF}"
#define U15_N "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"

static bool onig_compat(const char *pat, size_t len, char **out, size_t *olen)
{
    size_t cap = len * 8 + 1024, n = 0;
    char *o = malloc(cap);
    if (!o) return false;
#define EMIT(str)                                                                              \
    do {                                                                                       \
        size_t l_ = strlen(str);                                                               \
        if (n + l_ + 8 > cap) {                                                                \
            cap = (n + l_ + 8) * 2;                                                            \
            char *g_ = realloc(o, cap);                                                        \
            if (!g_) {                                                                         \
                free(o);                                                                       \
                return false;                                                                  \
            }                                                                                  \
            o = g_;                                                                            \
        }                                                                                      \
        memcpy(o + n, str, l_);                                                                \
        n += l_;                                                                               \
    } while (0)
    bool in_class = false;
    size_t i = 0;
    while (i < len) {
        char c = pat[i], d = i + 1 < len ? pat[i + 1] : 0;
        char one[3] = {c, 0, 0};
        if (c == '\\' && d) {
            if (d == 'Q') { /* quoted spans: leave the whole pattern alone */
                free(o);
                *out = NULL;
                return true;
            }
            if (d == 's') EMIT(in_class ? ONIG_WS : "[" ONIG_WS "]");
            else if (d == 'S' && !in_class) EMIT("[^" ONIG_WS "]");
            else if (d == 'p' && i + 4 < len && pat[i + 2] == '{' && pat[i + 4] == '}' &&
                     (pat[i + 3] == 'L' || pat[i + 3] == 'N')) {
                const char *extra = pat[i + 3] == 'L' ? U15_L : U15_N;
                EMIT(in_class ? "" : "[");
                EMIT(pat[i + 3] == 'L' ? "\\p{L}" : "\\p{N}");
                EMIT(extra);
                EMIT(in_class ? "" : "]");
                i += 5;
                continue;
            } else {
                one[1] = d;
                EMIT(one);
            }
            i += 2;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = true;
            EMIT("[");
            i++;
            if (i < len && pat[i] == '^') {
                EMIT("^");
                i++;
            }
            if (i < len && pat[i] == ']') { /* a leading ] is literal */
                EMIT("]");
                i++;
            }
            continue;
        }
        if (c == '[' && in_class && d == ':') { /* POSIX class [:name:] inside a class */
            const char *end = strstr(pat + i, ":]");
            size_t stop = end && (size_t)(end - pat) < len ? (size_t)(end - pat) + 2 : i + 1;
            for (; i < stop; i++) {
                one[0] = pat[i];
                one[1] = 0;
                EMIT(one);
            }
            continue;
        }
        if (c == ']' && in_class) in_class = false;
        EMIT(one);
        i++;
    }
#undef EMIT
    o[n] = 0;
    *out = o;
    *olen = n;
    return true;
}

static aha_status compile_one(loader *L, const char *pat, size_t len, bool literal,
                               pcre2_code **out, const char *where)
{
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return lerr(L, AHA_EFORMAT, "%s: bad regex at offset %zu: %s", where, (size_t)eo, (char *)msg);
    }
    /* JIT is a speed-up only; the interpreter gives the same matches */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return AHA_OK;
}

/* The pattern as written (fast: PCRE2's own \s and \p{L} are quick under JIT) and, when the
 * rewrite changes it, the oniguruma-compatible form, which is several times slower and used
 * only on text holding a code point where the two differ (compat_needed). On any other text
 * the two forms match identically. */
static aha_status compile_regex(loader *L, const char *pat, size_t len, bool literal,
                                pt_step *st, const char *where)
{
    AHA_TRY(compile_one(L, pat, len, literal, &st->re, where));
    char *compat = NULL;
    size_t clen = 0;
    if (literal) return AHA_OK;
    if (!onig_compat(pat, len, &compat, &clen)) return lerr(L, AHA_ENOMEM, "out of memory");
    aha_status r = AHA_OK;
    if (compat && (clen != len || memcmp(compat, pat, len) != 0))
        r = compile_one(L, compat, clen, false, &st->re_compat, where);
    free(compat);
    return r;
}

/* whether s holds U+180E or a letter/number new in Unicode 15.0 (see onig_compat); all of
 * those but U+180E are 4-byte sequences starting 0xF0 */
static bool compat_needed(const uint8_t *s, size_t n)
{
    static const uint32_t r15[][2] = {
        {0x1123F, 0x11240}, {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33},
        {0x11F50, 0x11F59}, {0x13441, 0x13446}, {0x1D2C0, 0x1D2D3}, {0x1DF25, 0x1DF2A},
        {0x1E030, 0x1E06D}, {0x1E4D0, 0x1E4EB}, {0x1E4F0, 0x1E4F9}, {0x31350, 0x323AF},
    };
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0xE1) continue;
        if (s[i] == 0xE1 && i + 2 < n && s[i + 1] == 0xA0 && s[i + 2] == 0x8E) return true;
        if (s[i] == 0xF0 && i + 3 < n) {
            size_t w;
            uint32_t cp = utf8_decode(s + i, &w);
            for (size_t k = 0; k < AHA_ARRAY_LEN(r15); k++)
                if (cp >= r15[k][0] && cp <= r15[k][1]) return true;
        }
    }
    return false;
}

static aha_status load_pretok_step(loader *L, json_t *p, const char *where, int depth)
{
    aha_tokenizer *t = L->t;
    const char *ty = json_is_object(p) ? type_of(p) : NULL;
    if (!ty) return lerr(L, AHA_EFORMAT, "%s: expected an object with a type", where);
    if (strcmp(ty, "Sequence") == 0 && depth < 4) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) return lerr(L, AHA_EFORMAT, "%s.pretokenizers: expected an array", where);
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v) {
            char w[96];
            snprintf(w, sizeof w, "%s.pretokenizers[%zu]", where, i);
            AHA_TRY(load_pretok_step(L, v, w, depth + 1));
        }
        return AHA_OK;
    }
    if (t->n_steps == MAX_STEPS) return lerr(L, AHA_EUNSUPPORTED, "%s: more than %d pre-tokenizer steps", where, MAX_STEPS);
    if (t->n_steps > 0 && t->steps[t->n_steps - 1].kind == PT_BYTELEVEL)
        return lerr(L, AHA_EUNSUPPORTED, "%s: a pre-tokenizer after ByteLevel is not supported", where);
    pt_step *st = &t->steps[t->n_steps];
    if (strcmp(ty, "Split") == 0) {
        json_t *beh = json_object_get(p, "behavior");
        if (!json_is_string(beh) || strcmp(json_string_value(beh), "Isolated") != 0)
            return lerr(L, AHA_EUNSUPPORTED, "%s.behavior: only \"Isolated\" is supported", where);
        bool invert = false;
        AHA_TRY(get_bool(L, p, "invert", false, &invert, where));
        if (invert) return lerr(L, AHA_EUNSUPPORTED, "%s.invert: true is not supported", where);
        json_t *pat = json_object_get(p, "pattern");
        json_t *rx = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
        json_t *lit = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
        json_t *s = rx ? rx : lit;
        if (!json_is_string(s) || json_string_length(s) == 0)
            return lerr(L, AHA_EFORMAT, "%s.pattern: expected {\"Regex\": \"...\"} or {\"String\": \"...\"}", where);
        char w[128];
        snprintf(w, sizeof w, "%s.pattern", where);
        st->kind = PT_SPLIT;
        AHA_TRY(compile_regex(L, json_string_value(s), json_string_length(s), s == lit, st, w));
        t->n_steps++;
        return AHA_OK;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        bool use_regex = true;
        /* HF's defaults when the fields are missing */
        AHA_TRY(get_bool(L, p, "add_prefix_space", true, &st->add_prefix_space, where));
        AHA_TRY(get_bool(L, p, "use_regex", true, &use_regex, where));
        st->kind = PT_BYTELEVEL;
        if (use_regex) AHA_TRY(compile_regex(L, gpt2_regex, sizeof gpt2_regex - 1, false, st, where));
        t->n_steps++;
        return AHA_OK;
    }
    return lerr(L, AHA_EUNSUPPORTED, "%s: pre-tokenizer type '%.40s' is not supported (Split, ByteLevel, Sequence)", where, ty);
}

static aha_status load_pipeline(loader *L, json_t *root)
{
    aha_tokenizer *t = L->t;
    AHA_TRY(load_normalizer(L, json_object_get(root, "normalizer"), 0));
    json_t *pt = json_object_get(root, "pre_tokenizer");
    if (!pt || json_is_null(pt))
        return lerr(L, AHA_EUNSUPPORTED, "pre_tokenizer is null: only byte-level BPE (a ByteLevel pre-tokenizer) is supported");
    AHA_TRY(load_pretok_step(L, pt, "pre_tokenizer", 0));
    if (t->n_steps == 0 || t->steps[t->n_steps - 1].kind != PT_BYTELEVEL)
        return lerr(L, AHA_EUNSUPPORTED, "pre_tokenizer: no ByteLevel step, so this is not a byte-level BPE tokenizer");
    json_t *dec = json_object_get(root, "decoder");
    const char *dty = json_is_object(dec) ? type_of(dec) : NULL;
    if (!dty || strcmp(dty, "ByteLevel") != 0)
        return lerr(L, AHA_EUNSUPPORTED, "decoder: only ByteLevel is supported");
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->mctx) return lerr(L, AHA_ENOMEM, "out of memory");
    /* a hostile regex must not spin or eat memory: bound backtracking */
    pcre2_set_match_limit(t->mctx, 10000000);
    pcre2_set_heap_limit(t->mctx, 256 * 1024);
    return AHA_OK;
}

/* the decoded bytes of every id: HF's ByteLevel decoder maps a token's characters back to
 * bytes when all of them are in the alphabet, and keeps the token's UTF-8 otherwise */
static aha_status build_decode_table(loader *L)
{
    aha_tokenizer *t = L->t;
    char *buf = NULL;
    size_t cap = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        tok_entry *e = &t->ent[id];
        if (!e->kind) continue;
        if (e->str_len > cap) {
            cap = e->str_len * 2 + 16;
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                return lerr(L, AHA_ENOMEM, "out of memory");
            }
            buf = b;
        }
        const uint8_t *s = (const uint8_t *)t->arena + e->str_off;
        size_t n = 0, i = 0;
        bool all = true;
        while (i < e->str_len) {
            size_t w;
            uint32_t cp = utf8_decode(s + i, &w);
            if (cp >= BL_NCP || bl_byte_of_cp[cp] < 0) {
                all = false;
                break;
            }
            buf[n++] = (char)bl_byte_of_cp[cp];
            i += w;
        }
        uint32_t off = all ? arena_put(t, buf, n) : e->str_off;
        if (off == UINT32_MAX) {
            free(buf);
            return lerr(L, AHA_ENOMEM, "out of memory");
        }
        e->bytes_off = off;
        e->bytes_len = all ? (uint32_t)n : e->str_len;
    }
    free(buf);
    return AHA_OK;
}

aha_status aha_tokenizer_load_json(const char *json, size_t len, const char *name,
                                   aha_tokenizer **out, aha_err *err)
{
    pthread_once(&bl_once, bl_init);
    *out = NULL;
    loader L = {.name = name ? name : "tokenizer.json", .err = err};
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return lerr(&L, AHA_EFORMAT, "not valid JSON (line %d, column %d): %s", je.line, je.column, je.text);
    aha_tokenizer *t = calloc(1, sizeof *t);
    aha_status st = AHA_OK;
    if (!t) {
        json_decref(root);
        return lerr(&L, AHA_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&t->cache.mu, NULL);
    t->cache.cap_words = CACHE_DEFAULT;
    L.t = t;
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(root)) st = lerr(&L, AHA_EFORMAT, "expected a JSON object at the top");
    else if (added && !json_is_null(added) && !json_is_array(added))
        st = lerr(&L, AHA_EFORMAT, "added_tokens: expected an array");
    else if (!json_object_get(root, "model"))
        st = lerr(&L, AHA_EFORMAT, "no \"model\" field");
    if (!json_is_array(added)) added = NULL;
    if (st == AHA_OK) st = load_model(&L, json_object_get(root, "model"), added);
    if (st == AHA_OK) st = load_pipeline(&L, root);
    if (st == AHA_OK) st = load_added(&L, added);
    if (st == AHA_OK) st = build_set(&L, &t->raw_set, false);
    if (st == AHA_OK) st = build_set(&L, &t->norm_set, true);
    if (st == AHA_OK) st = build_decode_table(&L);
    json_decref(root);
    if (st != AHA_OK) {
        aha_tokenizer_free(t);
        return st;
    }
    *out = t;
    return AHA_OK;
}

aha_status aha_tokenizer_load(const char *path_or_dir, aha_tokenizer **out, aha_err *err)
{
    *out = NULL;
    char path[4096];
    if (aha_path_is_dir(path_or_dir)) AHA_TRY(aha_path_join(path, sizeof path, path_or_dir, "tokenizer.json", err));
    else if (snprintf(path, sizeof path, "%s", path_or_dir) >= (int)sizeof path)
        return aha_errf(err, AHA_EINVAL, "tokenizer path is too long");
    char *buf;
    size_t len;
    AHA_TRY(aha_read_file(path, AHA_TOK_MAX_FILE, &buf, &len, err));
    aha_status st = aha_tokenizer_load_json(buf, len, path, out, err);
    free(buf);
    return st;
}

void aha_tokenizer_free(aha_tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_steps; i++) {
        pcre2_code_free(t->steps[i].re);
        pcre2_code_free(t->steps[i].re_compat);
    }
    pcre2_match_context_free(t->mctx);
    free(t->raw_set.order);
    free(t->norm_set.order);
    free(t->added);
    free(t->merges);
    free(t->vocab.slots);
    free(t->added_map.slots);
    free(t->ent);
    free(t->arena);
    free(t->cache.slots);
    free(t->cache.arena);
    pthread_mutex_destroy(&t->cache.mu);
    free(t);
}

/* ---------------------------------------------------------------- encode */

typedef struct {
    const aha_tokenizer *t;
    aha_err *err;
    int32_t *ids;
    size_t n, cap;
    pcre2_match_data *md; /* group 0 only */
    bool compat;          /* the current piece needs the oniguruma-compatible regexes */
    /* BPE scratch, (scap) each */
    int32_t *sym, *prev, *next;
    uint64_t *heap;
    size_t scap;
    char *tmp; /* byte-level spelling of a word, for ignore_merges */
    size_t tmp_cap;
} enc;

static aha_status reserve(enc *e, size_t more)
{
    if (e->n + more <= e->cap) return AHA_OK;
    size_t cap = e->cap ? e->cap : 64;
    while (cap < e->n + more) cap *= 2;
    int32_t *p = realloc(e->ids, cap * sizeof *p);
    if (!p) return aha_errf(e->err, AHA_ENOMEM, "tokenizer: out of memory for %zu ids", cap);
    e->ids = p;
    e->cap = cap;
    return AHA_OK;
}

static bool cache_get(word_cache *c, const uint8_t *w, size_t n, uint64_t h, enc *e)
{
    if (pthread_mutex_trylock(&c->mu) != 0) return false;
    bool hit = false;
    if (c->slots) {
        for (uint32_t i = (uint32_t)h & c->mask; c->slots[i].klen; i = (i + 1) & c->mask) {
            cache_slot *s = &c->slots[i];
            if (s->h == h && s->klen == n && memcmp(c->arena + s->off, w, n) == 0) {
                memcpy(e->ids + e->n, c->arena + s->off + ((n + 3) & ~(size_t)3), s->nids * sizeof(int32_t));
                e->n += s->nids;
                hit = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

static void cache_put(word_cache *c, const uint8_t *w, size_t n, uint64_t h, const int32_t *ids,
                      size_t nids)
{
    if (pthread_mutex_trylock(&c->mu) != 0) return;
    if (c->cap_words && !c->slots) {
        c->mask = pow2_at_least(2 * c->cap_words) - 1;
        c->arena_cap = c->cap_words * 32;
        c->slots = calloc((size_t)c->mask + 1, sizeof *c->slots);
        c->arena = malloc(c->arena_cap);
        if (!c->slots || !c->arena) {
            free(c->slots);
            free(c->arena);
            c->slots = NULL;
            c->arena = NULL;
        }
        c->used = c->words = 0;
    }
    size_t need = ((n + 3) & ~(size_t)3) + nids * sizeof(int32_t);
    if (c->slots) {
        /* full: start over (cheaper than eviction, and a word stream's vocabulary is Zipfian) */
        if (c->words + 1 > c->cap_words || c->used + need > c->arena_cap) {
            memset(c->slots, 0, ((size_t)c->mask + 1) * sizeof *c->slots);
            c->used = c->words = 0;
        }
        uint32_t i = (uint32_t)h & c->mask;
        while (c->slots[i].klen) i = (i + 1) & c->mask;
        cache_slot *s = &c->slots[i];
        s->h = h;
        s->off = (uint32_t)c->used;
        s->klen = (uint16_t)n;
        s->nids = (uint16_t)nids;
        memcpy(c->arena + c->used, w, n);
        memcpy(c->arena + c->used + ((n + 3) & ~(size_t)3), ids, nids * sizeof(int32_t));
        c->used += need;
        c->words++;
    }
    pthread_mutex_unlock(&c->mu);
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = v;
    return top;
}

static aha_status grow_scratch(enc *e, size_t n)
{
    if (n <= e->scap) return AHA_OK;
    size_t cap = e->scap ? e->scap : 256;
    while (cap < n) cap *= 2;
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->heap);
    e->sym = malloc(cap * sizeof *e->sym);
    e->prev = malloc(cap * sizeof *e->prev);
    e->next = malloc(cap * sizeof *e->next);
    e->heap = malloc(3 * cap * sizeof *e->heap);
    e->scap = cap;
    if (!e->sym || !e->prev || !e->next || !e->heap) {
        e->scap = 0;
        return aha_errf(e->err, AHA_ENOMEM, "tokenizer: out of memory for a %zu-byte word", n);
    }
    return AHA_OK;
}

/* BPE of one pre-token (raw bytes) appended to e->ids */
static aha_status bpe_word(enc *e, const uint8_t *w, size_t n)
{
    const aha_tokenizer *t = e->t;
    AHA_TRY(reserve(e, n));
    if (n == 1) {
        e->ids[e->n++] = t->byte_id[w[0]];
        return AHA_OK;
    }
    word_cache *c = (word_cache *)&t->cache;
    uint64_t h = 0;
    bool cacheable = n <= CACHE_MAX_WORD && c->cap_words;
    if (cacheable) {
        h = hash_bytes(w, n);
        if (cache_get(c, w, n, h, e)) return AHA_OK;
    }
    size_t start = e->n;
    if (t->ignore_merges) {
        if (e->tmp_cap < 2 * n) {
            char *p = realloc(e->tmp, 2 * n);
            if (!p) return aha_errf(e->err, AHA_ENOMEM, "tokenizer: out of memory");
            e->tmp = p;
            e->tmp_cap = 2 * n;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += bl_symbol(w[i], e->tmp + m);
        int32_t id = str_map_get(t, &t->vocab, e->tmp, m);
        if (id >= 0) {
            e->ids[e->n++] = id;
            goto done;
        }
    }
    AHA_TRY(grow_scratch(e, n));
    int32_t *sym = e->sym, *prev = e->prev, *next = e->next;
    uint64_t *heap = e->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[w[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_slot *m = merge_get(t, sym[i], sym[i + 1]);
        if (m) heap_push(heap, &hn, (uint64_t)m->rank << 32 | i);
    }
    while (hn) {
        uint64_t top = heap_pop(heap, &hn);
        uint32_t rank = (uint32_t)(top >> 32), pos = (uint32_t)top;
        int32_t nx = next[pos];
        /* stale entries: the left symbol was merged away, or its pair changed */
        if (sym[pos] < 0 || nx < 0) continue;
        const merge_slot *m = merge_get(t, sym[pos], sym[nx]);
        if (!m || m->rank != rank) continue;
        sym[pos] = m->id;
        sym[nx] = -1;
        next[pos] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = (int32_t)pos;
        if (prev[pos] >= 0) {
            const merge_slot *ml = merge_get(t, sym[prev[pos]], sym[pos]);
            if (ml) heap_push(heap, &hn, (uint64_t)ml->rank << 32 | (uint32_t)prev[pos]);
        }
        if (next[pos] >= 0) {
            const merge_slot *mr = merge_get(t, sym[pos], sym[next[pos]]);
            if (mr) heap_push(heap, &hn, (uint64_t)mr->rank << 32 | pos);
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i]) e->ids[e->n++] = sym[i];
done:
    if (cacheable && e->n - start <= UINT16_MAX) cache_put(c, w, n, h, e->ids + start, e->n - start);
    return AHA_OK;
}

static aha_status pretok(enc *e, int step, const char *s, size_t n);

/* Split with behavior Isolated: matches and the gaps between them become pieces; an empty
 * match yields nothing and the search moves on one character, as oniguruma's find_iter does */
static aha_status split_isolated(enc *e, int step, const pcre2_code *re, const char *s, size_t n)
{
    const aha_tokenizer *t = e->t;
    pcre2_match_data *md = e->md;
    size_t prev = 0, at = 0;
    while (at <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, t->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, t->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        /* rc 0: matched, with more groups than the one-pair ovector holds */
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return aha_errf(e->err, AHA_ELIMIT, "tokenizer: pre-tokenizer regex failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > me || me > n) /* \K in a lookbehind can do this; refuse rather than misread */
            return aha_errf(e->err, AHA_EUNSUPPORTED, "tokenizer: pre-tokenizer regex gave a backwards match");
        if (ms == me) {
            if (ms > prev) AHA_TRY(pretok(e, step + 1, s + prev, ms - prev));
            if (ms > prev) prev = ms;
            if (ms >= n) break;
            size_t w;
            (void)utf8_decode((const uint8_t *)s + ms, &w);
            at = ms + w;
            continue;
        }
        if (ms > prev) AHA_TRY(pretok(e, step + 1, s + prev, ms - prev));
        AHA_TRY(pretok(e, step + 1, s + ms, me - ms));
        prev = at = me;
    }
    if (prev < n) AHA_TRY(pretok(e, step + 1, s + prev, n - prev));
    return AHA_OK;
}

static aha_status pretok(enc *e, int step, const char *s, size_t n)
{
    const aha_tokenizer *t = e->t;
    if (n == 0) return AHA_OK;
    if (step == t->n_steps) return bpe_word(e, (const uint8_t *)s, n);
    const pt_step *st = &t->steps[step];
    if (st->kind == PT_BYTELEVEL && st->add_prefix_space && s[0] != ' ') {
        char *p = malloc(n + 1);
        if (!p) return aha_errf(e->err, AHA_ENOMEM, "tokenizer: out of memory");
        p[0] = ' ';
        memcpy(p + 1, s, n);
        const pcre2_code *re = e->compat && st->re_compat ? st->re_compat : st->re;
        aha_status r = re ? split_isolated(e, step, re, p, n + 1) : pretok(e, step + 1, p, n + 1);
        free(p);
        return r;
    }
    const pcre2_code *re = e->compat && st->re_compat ? st->re_compat : st->re;
    if (re) return split_isolated(e, step, re, s, n);
    return pretok(e, step + 1, s, n);
}

typedef aha_status (*piece_fn)(enc *e, const char *s, size_t n);

static aha_status piece_pretok(enc *e, const char *s, size_t n)
{
    e->compat = compat_needed((const uint8_t *)s, n);
    return pretok(e, 0, s, n);
}

/* Cut the tokens of set out of s (HF's AddedVocabulary::find_matches): leftmost-longest
 * matches; single_word drops a match touching a word character; lstrip/rstrip take the
 * whitespace beside the token into it. The text between tokens goes to fn. */
static aha_status split_added(enc *e, const added_set *set, const char *s, size_t n, piece_fn fn)
{
    const aha_tokenizer *t = e->t;
    if (set->n == 0) return fn(e, s, n);
    const uint8_t *u = (const uint8_t *)s;
    size_t done = 0, i = 0;
    while (i < n) {
        uint32_t lo = set->first[u[i]], hi = set->first[u[i] + 1];
        const added_token *hit = NULL;
        for (uint32_t k = lo; k < hi; k++) {
            const added_token *a = &t->added[set->order[k]];
            if (a->len <= n - i && memcmp(t->arena + a->off, s + i, a->len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t start = i, stop = i + hit->len;
        if (hit->single_word) {
            bool word_before = start > 0 && is_word_char(utf8_last(u, start));
            size_t w;
            bool word_after = stop < n && is_word_char(utf8_decode(u + stop, &w));
            if (word_before || word_after) {
                /* rejected: the search resumes after the match, like aho-corasick's iterator */
                i = stop;
                continue;
            }
        }
        if (hit->lstrip) {
            while (start > done) {
                size_t j = start - 1;
                while (j > done && (u[j] & 0xC0) == 0x80) j--;
                size_t w;
                if (!is_white_space(utf8_decode(u + j, &w))) break;
                start = j;
            }
        }
        if (hit->rstrip) {
            while (stop < n) {
                size_t w;
                if (!is_white_space(utf8_decode(u + stop, &w))) break;
                stop += w;
            }
        }
        if (start > done) AHA_TRY(fn(e, s + done, start - done));
        AHA_TRY(reserve(e, 1));
        e->ids[e->n++] = hit->id;
        done = i = stop;
    }
    if (done < n) AHA_TRY(fn(e, s + done, n - done));
    return AHA_OK;
}

static aha_status piece_normalize(enc *e, const char *s, size_t n)
{
    const aha_tokenizer *t = e->t;
    if (!t->nfc || !nfc_needed((const uint8_t *)s, n)) return split_added(e, &t->norm_set, s, n, piece_pretok);
    size_t m;
    uint8_t *norm = nfc_dup((const uint8_t *)s, n, &m);
    if (!norm) return aha_errf(e->err, AHA_ENOMEM, "tokenizer: NFC normalisation failed");
    aha_status st = split_added(e, &t->norm_set, (const char *)norm, m, piece_pretok);
    free(norm);
    return st;
}

aha_status aha_tokenizer_encode(const aha_tokenizer *t, const char *text, size_t len,
                                int32_t **ids, size_t *n, aha_err *err)
{
    *ids = NULL;
    *n = 0;
    if (len && !text) return aha_errf(err, AHA_EINVAL, "tokenizer: NULL text");
    size_t bad = utf8_check((const uint8_t *)text, len);
    if (bad < len)
        return aha_errf(err, AHA_EINVAL, "tokenizer: text is not valid UTF-8 (byte 0x%02X at offset %zu)",
                        (uint8_t)text[bad], bad);
    enc e = {.t = t, .err = err};
    aha_status st = AHA_OK;
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) st = aha_errf(err, AHA_ENOMEM, "tokenizer: out of memory");
    if (st == AHA_OK) st = split_added(&e, &t->raw_set, text, len, piece_normalize);
    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    free(e.tmp);
    if (st != AHA_OK) {
        free(e.ids);
        return st;
    }
    *ids = e.ids;
    *n = e.n;
    return AHA_OK;
}

/* ---------------------------------------------------------------- decode and lookups */

aha_status aha_tokenizer_decode_len(const aha_tokenizer *t, const int32_t *ids, size_t n,
                                    char **text, size_t *len, aha_err *err)
{
    *text = NULL;
    if (len) *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->ent[ids[i]].kind)
            return aha_errf(err, AHA_EINVAL, "tokenizer: id %d at position %zu is not in the vocabulary (size %d)",
                            ids[i], i, t->n_ids);
        total += t->ent[ids[i]].bytes_len;
    }
    uint8_t *raw = malloc(total + 1);
    /* each invalid byte becomes U+FFFD (3 bytes) at worst */
    char *out = malloc(3 * total + 1);
    if (!raw || !out) {
        free(raw);
        free(out);
        return aha_errf(err, AHA_ENOMEM, "tokenizer: out of memory decoding %zu ids", n);
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_entry *en = &t->ent[ids[i]];
        memcpy(raw + m, t->arena + en->bytes_off, en->bytes_len);
        m += en->bytes_len;
    }
    /* String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD */
    size_t o = 0, i = 0;
    while (i < m) {
        size_t w = utf8_seq_len(raw + i, m - i);
        if (w) {
            memcpy(out + o, raw + i, w);
            o += w;
            i += w;
            continue;
        }
        size_t skip = 1;
        uint8_t b = raw[i];
        size_t want = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xC2 && b <= 0xDF ? 2 : 1;
        if (want > 1 && i + 1 < m) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
            if (raw[i + 1] >= lo && raw[i + 1] <= hi) {
                skip = 2;
                while (skip < want && i + skip < m && (raw[i + skip] & 0xC0) == 0x80) skip++;
            }
        }
        memcpy(out + o, "\xEF\xBF\xBD", 3);
        o += 3;
        i += skip;
    }
    out[o] = 0;
    free(raw);
    *text = out;
    if (len) *len = o;
    return AHA_OK;
}

aha_status aha_tokenizer_decode(const aha_tokenizer *t, const int32_t *ids, size_t n, char **text,
                                aha_err *err)
{
    return aha_tokenizer_decode_len(t, ids, n, text, NULL, err);
}

int32_t aha_tokenizer_vocab_size(const aha_tokenizer *t)
{
    return t->n_ids;
}

int32_t aha_tokenizer_token_to_id(const aha_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = str_map_get(t, &t->added_map, token, n);
    return id >= 0 ? id : str_map_get(t, &t->vocab, token, n);
}

const char *aha_tokenizer_id_to_token(const aha_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_ids || !t->ent[id].kind) return NULL;
    return t->arena + t->ent[id].str_off;
}

const char *aha_tokenizer_token_bytes(const aha_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || !t->ent[id].kind) return NULL;
    *len = t->ent[id].bytes_len;
    return t->arena + t->ent[id].bytes_off;
}

bool aha_tokenizer_is_special(const aha_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->ent[id].kind & TK_ADDED) && t->ent[id].special;
}

bool aha_tokenizer_is_added(const aha_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->ent[id].kind & TK_ADDED);
}

void aha_tokenizer_set_cache_capacity(aha_tokenizer *t, size_t words)
{
    word_cache *c = &t->cache;
    pthread_mutex_lock(&c->mu);
    free(c->slots);
    free(c->arena);
    c->slots = NULL;
    c->arena = NULL;
    c->used = c->words = 0;
    c->cap_words = words > (1u << 24) ? (1u << 24) : words;
    pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- byte-level writer */

static bool is_special_form(const char *s)
{
    size_t n = strlen(s);
    return n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0;
}

static json_t *added_json(int32_t id, const char *content)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(id));
    json_object_set_new(o, "content", json_string(content));
    json_object_set_new(o, "single_word", json_false());
    json_object_set_new(o, "lstrip", json_false());
    json_object_set_new(o, "rstrip", json_false());
    json_object_set_new(o, "normalized", json_false());
    json_object_set_new(o, "special", json_boolean(is_special_form(content)));
    return o;
}

static json_t *bytelevel_json(bool trim_offsets)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("ByteLevel"));
    json_object_set_new(o, "add_prefix_space", json_false());
    json_object_set_new(o, "trim_offsets", json_boolean(trim_offsets));
    json_object_set_new(o, "use_regex", json_false());
    return o;
}

static aha_status write_json(const char *path, json_t *root, aha_err *err)
{
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!s) return aha_errf(err, AHA_ENOMEM, "%s: cannot serialise JSON", path);
    size_t n = strlen(s);
    char *t = malloc(n + 2);
    if (!t) {
        free(s);
        return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
    }
    memcpy(t, s, n);
    t[n] = '\n';
    free(s);
    aha_status st = aha_write_file_atomic(path, t, n + 1, err);
    free(t);
    return st;
}

aha_status aha_tokenizer_write_bytelevel(const char *dir_or_path, const char *const *specials,
                                         size_t n, aha_err *err)
{
    pthread_once(&bl_once, bl_init);
    if (n > 4096) return aha_errf(err, AHA_EINVAL, "tokenizer: %zu added tokens is too many", n);
    for (size_t i = 0; i < n; i++) {
        const char *s = specials[i];
        size_t len = s ? strlen(s) : 0;
        if (!len || utf8_check((const uint8_t *)s, len) != len)
            return aha_errf(err, AHA_EINVAL, "tokenizer: added token %zu is empty or not UTF-8", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(specials[j], s) == 0)
                return aha_errf(err, AHA_EINVAL, "tokenizer: added token '%.60s' is listed twice", s);
        for (int b = 0; b < 256; b++) {
            char sym[3] = {0};
            bl_symbol((uint8_t)b, sym);
            if (strcmp(sym, s) == 0)
                return aha_errf(err, AHA_EINVAL, "tokenizer: added token '%s' is a byte symbol already", s);
        }
    }
    size_t plen = strlen(dir_or_path);
    bool single = plen >= 5 && strcmp(dir_or_path + plen - 5, ".json") == 0;
    char tok_path[4096], cfg_path[4096];
    if (single) {
        if (plen >= sizeof tok_path) return aha_errf(err, AHA_EINVAL, "tokenizer: path too long");
        memcpy(tok_path, dir_or_path, plen + 1);
    } else {
        AHA_TRY(aha_mkdirs(dir_or_path, err));
        AHA_TRY(aha_path_join(tok_path, sizeof tok_path, dir_or_path, "tokenizer.json", err));
        AHA_TRY(aha_path_join(cfg_path, sizeof cfg_path, dir_or_path, "tokenizer_config.json", err));
    }

    json_t *root = json_object();
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_t *added = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(added, added_json(256 + (int32_t)i, specials[i]));
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", bytelevel_json(true));
    json_object_set_new(root, "post_processor", bytelevel_json(false));
    json_object_set_new(root, "decoder", bytelevel_json(true));
    json_t *model = json_object();
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "dropout", json_null());
    json_object_set_new(model, "unk_token", json_null());
    json_object_set_new(model, "continuing_subword_prefix", json_null());
    json_object_set_new(model, "end_of_word_suffix", json_null());
    json_object_set_new(model, "fuse_unk", json_false());
    json_object_set_new(model, "byte_fallback", json_false());
    json_object_set_new(model, "ignore_merges", json_false());
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        char sym[3] = {0};
        bl_symbol((uint8_t)b, sym);
        json_object_set_new(vocab, sym, json_integer(b));
    }
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", json_array());
    json_object_set_new(root, "model", model);
    aha_status st = write_json(tok_path, root, err);
    json_decref(root);
    if (st != AHA_OK || single) return st;

    /* tokenizer_config.json: what transformers' AutoTokenizer reads beside it */
    json_t *cfg = json_object();
    const char *eos = NULL;
    for (size_t i = 0; i < n && !eos; i++)
        if (strcmp(specials[i], "<|endoftext|>") == 0) eos = specials[i];
    for (size_t i = 0; i < n && !eos; i++)
        if (is_special_form(specials[i])) eos = specials[i];
    json_object_set_new(cfg, "add_bos_token", json_false());
    json_object_set_new(cfg, "add_prefix_space", json_false());
    json_t *dec = json_object();
    for (size_t i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", 256 + (int)i);
        json_t *a = added_json(256 + (int32_t)i, specials[i]);
        json_object_del(a, "id");
        json_object_set_new(dec, key, a);
    }
    json_object_set_new(cfg, "added_tokens_decoder", dec);
    json_object_set_new(cfg, "bos_token", json_null());
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(cfg, "eos_token", eos ? json_string(eos) : json_null());
    json_object_set_new(cfg, "errors", json_string("replace"));
    json_object_set_new(cfg, "model_max_length", json_integer(131072));
    json_object_set_new(cfg, "pad_token", eos ? json_string(eos) : json_null());
    json_object_set_new(cfg, "split_special_tokens", json_false());
    json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    json_object_set_new(cfg, "unk_token", json_null());
    st = write_json(cfg_path, cfg, err);
    json_decref(cfg);
    return st;
}
