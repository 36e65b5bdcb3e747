/* rewards.c: the accuracy, format and language-consistency rules of rewards.h.
 *
 * Invariants kept throughout: inputs are (pointer, length) pairs and may hold NUL bytes;
 * every scan moves forward (or backward) once over its input, so the cost is linear in the
 * input even for adversarial text; brace matching uses a depth counter plus a small ring of
 * the innermost open groups, never recursion or an allocation per nesting level. The only
 * allocations are the normalised copies of the answer and the reference (each no longer
 * than its input). */
#include "rewards.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef unsigned __int128 u128;

/* ------------------------------------------------------------------------------------ */
/* bytes                                                                                  */

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static unsigned char to_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool has_prefix(const char *s, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    return n >= m && memcmp(s, lit, m) == 0;
}

/* first occurrence of pat in s[from, n), or SIZE_MAX. Plain loops rather than memmem and
 * memrchr: the sanitizers' interceptors check the whole haystack on every call, which turns
 * the many short searches of a scan into a quadratic cost under ASan. */
static size_t find_first(const char *s, size_t n, size_t from, const char *pat, size_t m)
{
    if (from >= n || n - from < m) return SIZE_MAX;
    for (size_t i = from; i + m <= n; i++)
        if (s[i] == pat[0] && memcmp(s + i, pat, m) == 0) return i;
    return SIZE_MAX;
}

/* last occurrence of pat lying entirely inside s[0, end), or SIZE_MAX */
static size_t find_last(const char *s, size_t end, const char *pat, size_t m)
{
    if (end < m) return SIZE_MAX;
    for (size_t i = end - m + 1; i-- > 0;)
        if (s[i] == pat[0] && memcmp(s + i, pat, m) == 0) return i;
    return SIZE_MAX;
}

/* Decode one UTF-8 code point at s[0, n). Returns the code point and sets *adv, or -1 for an
 * invalid sequence (overlong, surrogate, > U+10FFFF, truncated). */
static inline int32_t u8_decode(const unsigned char *s, size_t n, size_t *adv)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *adv = 1;
        return c;
    }
    int len;
    int32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (n < (size_t)len) return -1;
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    *adv = (size_t)len;
    return cp;
}

/* offset of the first invalid byte, or SIZE_MAX when s is valid UTF-8 */
static size_t u8_invalid_at(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            /* ASCII runs eight bytes at a time */
            uint64_t w;
            while (i + 8 <= n && (memcpy(&w, u + i, 8), (w & 0x8080808080808080ull) == 0)) i += 8;
            while (i < n && u[i] < 0x80) i++;
            continue;
        }
        size_t adv;
        if (u8_decode(u + i, n - i, &adv) < 0) return i;
        i += adv;
    }
    return SIZE_MAX;
}

/* ------------------------------------------------------------------------------------ */
/* answer extraction                                                                       */

/* The innermost open \boxed groups. When more than BOX_RING are open at once the outermost
 * are forgotten: an outer group can only close after every group nested in it has closed,
 * and those start later, so a forgotten group could never be the last complete one. */
#define BOX_RING 64

typedef struct {
    size_t depth;         /* brace depth outside the group */
    size_t start;         /* offset of the backslash of \boxed */
    size_t content;       /* offset just after '{' */
} box_open;

/* offset of the keyword length when s[i] starts "\boxed" or "\fbox" as a whole control word */
static size_t box_keyword(const char *s, size_t n, size_t i)
{
    size_t k = 0;
    if (has_prefix(s + i, n - i, "\\boxed")) k = 6;
    else if (has_prefix(s + i, n - i, "\\fbox")) k = 5;
    if (k && i + k < n && is_alpha((unsigned char)s[i + k])) k = 0;
    return k;
}

/* The argument of the last complete \boxed / \fbox in s[0, n) (largest start offset). */
static bool boxed_last(const char *s, size_t n, size_t *off, size_t *len)
{
    box_open ring[BOX_RING];
    size_t top = 0, count = 0; /* ring[(top - 1) % BOX_RING] is the innermost */
    size_t depth = 0;
    bool found = false;
    size_t best_start = 0;
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        if (c == '\\') {
            if (i + 1 < n && (s[i + 1] == '{' || s[i + 1] == '}' || s[i + 1] == '\\')) {
                i += 2;
                continue;
            }
            size_t k = box_keyword(s, n, i);
            if (!k) {
                i++;
                continue;
            }
            size_t j = i + k;
            while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
            if (j < n && s[j] == '{') {
                ring[top] = (box_open){depth, i, j + 1};
                top = (top + 1) % BOX_RING;
                if (count < BOX_RING) count++;
                depth++;
                i = j + 1;
                continue;
            }
            if (j > i + k && j < n && s[j] != '$' && !is_ws((unsigned char)s[j]) && s[j] != '}') {
                /* "\boxed 5": one token */
                size_t e = j;
                while (e < n && s[e] != '$' && !is_ws((unsigned char)s[e]) && s[e] != '}') e++;
                if (!found || i >= best_start) {
                    found = true, best_start = i, *off = j, *len = e - j;
                }
                i = e;
                continue;
            }
            i = j;
            continue;
        }
        if (c == '{') {
            depth++;
        } else if (c == '}' && depth > 0) {
            depth--;
            if (count > 0) {
                size_t t = (top + BOX_RING - 1) % BOX_RING;
                if (ring[t].depth == depth) {
                    if (!found || ring[t].start >= best_start) {
                        found = true, best_start = ring[t].start;
                        *off = ring[t].content, *len = i - ring[t].content;
                    }
                    top = t;
                    count--;
                }
            }
        }
        i++;
    }
    return found;
}

bool aha_reward_extract_answer(const char *completion, size_t len, size_t *off, size_t *alen)
{
    if (!completion) len = 0;
    size_t e = find_last(completion, len, "</answer>", 9);
    if (e != SIZE_MAX) {
        size_t s = find_last(completion, e, "<answer>", 8);
        if (s != SIZE_MAX) {
            *off = s + 8;
            *alen = e - (s + 8);
            return true;
        }
    }
    return len > 0 && boxed_last(completion, len, off, alen);
}

/* ------------------------------------------------------------------------------------ */
/* normalisation                                                                           */

/* Markers around the content of a \text-like group; control bytes of the input become
 * spaces, so these cannot come from outside. */
#define MK_OPEN '\x01'
#define MK_CLOSE '\x02'
#define TEXT_RING 32

static bool name_is(const char *name, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

static bool name_in(const char *name, size_t len, const char *const *list)
{
    for (; *list; list++)
        if (name_is(name, len, *list)) return true;
    return false;
}

static const char *const drop_words[] = {"left", "right", "displaystyle", "textstyle", "big",
                                         "Big", "bigl", "bigr", "Bigl", "Bigr", "degree",
                                         NULL};
static const char *const space_words[] = {"quad", "qquad", NULL};
static const char *const text_words[] = {"text", "textbf", "textrm", "textit", "textnormal",
                                         "textup", "mathrm", "mathbf", "mathit", "mbox",
                                         NULL};

/* ^\circ or ^{\circ} at s (s[0] == '^'): its length, else 0 */
static size_t degree_at(const char *s, size_t n)
{
    if (has_prefix(s, n, "^\\circ") && (n == 6 || !is_alpha((unsigned char)s[6]))) return 6;
    if (has_prefix(s, n, "^{\\circ}")) return 8;
    return 0;
}

/* Pass 1 of rewards.h's normalisation over in[0, n) into out (capacity n): LaTeX noise out,
 * text groups unwrapped between markers. Returns the output length (never more than n). */
static size_t norm_latex(const char *in, size_t n, char *out)
{
    size_t o = 0, i = 0, depth = 0;
    size_t ring[TEXT_RING];
    size_t top = 0, count = 0;
    while (i < n) {
        unsigned char c = (unsigned char)in[i];
        if (c == '\\') {
            size_t j = i + 1;
            while (j < n && is_alpha((unsigned char)in[j])) j++;
            const char *name = in + i + 1;
            size_t nl = j - i - 1;
            if (nl == 0) {
                if (i + 1 >= n) {
                    out[o++] = '\\';
                    i++;
                    continue;
                }
                char sym = in[i + 1];
                switch (sym) {
                case '!': case ',': case ':': case ';': case ' ': case '\\':
                    out[o++] = ' ';
                    break;
                case '%':
                    out[o++] = '%';
                    break;
                case '$': case '(': case ')': case '[': case ']':
                    break;
                default:
                    /* \{ \} and anything else stay as written */
                    out[o++] = '\\';
                    out[o++] = sym;
                    break;
                }
                i += 2;
                continue;
            }
            if (name_in(name, nl, drop_words)) {
                i = j;
                continue;
            }
            if (name_in(name, nl, space_words)) {
                out[o++] = ' ';
                i = j;
                continue;
            }
            if (name_is(name, nl, "dfrac") || name_is(name, nl, "tfrac")) {
                memcpy(out + o, "\\frac", 5);
                o += 5;
                i = j;
                continue;
            }
            if (name_is(name, nl, "times") || name_is(name, nl, "cdot")) {
                out[o++] = '*';
                i = j;
                continue;
            }
            if (name_in(name, nl, text_words)) {
                size_t k = j;
                while (k < n && in[k] == ' ') k++;
                if (k < n && in[k] == '{') {
                    ring[top] = depth;
                    top = (top + 1) % TEXT_RING;
                    if (count < TEXT_RING) count++;
                    depth++;
                    out[o++] = MK_OPEN;
                    i = k + 1;
                    continue;
                }
            }
            memcpy(out + o, in + i, j - i);
            o += j - i;
            i = j;
            continue;
        }
        if (c == '{') {
            if (has_prefix(in + i, n - i, "{,}")) {
                out[o++] = ',';
                i += 3;
                continue;
            }
            depth++;
            out[o++] = '{';
            i++;
            continue;
        }
        if (c == '}') {
            if (depth > 0) {
                depth--;
                size_t t = (top + TEXT_RING - 1) % TEXT_RING;
                if (count > 0 && ring[t] == depth) {
                    top = t;
                    count--;
                    out[o++] = MK_CLOSE;
                    i++;
                    continue;
                }
            }
            out[o++] = '}';
            i++;
            continue;
        }
        if (c == '$') {
            i++;
            continue;
        }
        if (c == '^') {
            size_t d = degree_at(in + i, n - i);
            if (d) {
                i += d;
                continue;
            }
        }
        if (c < 0x20 || c == 0x7f) {
            out[o++] = ' ';
            i++;
            continue;
        }
        if (c >= 0x80) {
            const unsigned char *u = (const unsigned char *)in + i;
            size_t left = n - i;
            if (left >= 2 && u[0] == 0xC2 && u[1] == 0xB0) { /* ° */
                i += 2;
                continue;
            }
            if (left >= 2 && u[0] == 0xC2 && u[1] == 0xA0) { /* no-break space */
                out[o++] = ' ';
                i += 2;
                continue;
            }
            if (left >= 2 && u[0] == 0xC3 && u[1] == 0x97) { /* × */
                out[o++] = '*';
                i += 2;
                continue;
            }
            if (left >= 3 && u[0] == 0xE2 && u[1] == 0x88 && u[2] == 0x92) { /* U+2212 minus */
                out[o++] = '-';
                i += 3;
                continue;
            }
            if (left >= 3 && ((u[0] == 0xE2 && u[1] == 0x80 && (u[2] <= 0x8A || u[2] == 0xAF)) ||
                              (u[0] == 0xE3 && u[1] == 0x80 && u[2] == 0x80))) { /* spaces */
                out[o++] = ' ';
                i += 3;
                continue;
            }
        }
        out[o++] = (char)c;
        i++;
    }
    AHA_ASSERT(o <= n);
    return o;
}

/* ---- exact rationals ---- */

typedef struct {
    bool neg;
    u128 num, den; /* lowest terms, den > 0 */
} rat;

typedef enum { NUM_NO, NUM_OK, NUM_OVERFLOW } num_kind;

static const u128 U128_MAX = ~(u128)0;

static bool mul_ok(u128 a, u128 b, u128 *r)
{
    if (a != 0 && b > U128_MAX / a) return false;
    *r = a * b;
    return true;
}

static u128 gcd128(u128 a, u128 b)
{
    while (b) {
        u128 t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static void rat_reduce(rat *r)
{
    if (r->num == 0) {
        r->neg = false;
        r->den = 1;
        return;
    }
    u128 g = gcd128(r->num, r->den);
    r->num /= g;
    r->den /= g;
}

static bool pow10_ok(unsigned e, u128 *r)
{
    u128 v = 1;
    for (unsigned k = 0; k < e; k++)
        if (!mul_ok(v, 10, &v)) return false;
    *r = v;
    return true;
}

/* Unsigned decimal at s[*i, n): digits with optional thousands groups, optional fraction.
 * Leaves the value in *r (not reduced); *i moves past it. */
static num_kind parse_decimal(const char *s, size_t n, size_t *i, rat *r)
{
    size_t p = *i, int_start = p;
    while (p < n && is_digit((unsigned char)s[p])) p++;
    size_t int_end = p;
    bool grouped = false;
    /* thousands groups: 1-3 leading digits, then ",ddd" groups */
    if (int_end > int_start && int_end - int_start <= 3 && p + 3 < n && s[p] == ',') {
        size_t q = p;
        while (q + 3 < n && s[q] == ',' && is_digit((unsigned char)s[q + 1]) &&
               is_digit((unsigned char)s[q + 2]) && is_digit((unsigned char)s[q + 3]) &&
               (q + 4 >= n || !is_digit((unsigned char)s[q + 4])))
            q += 4;
        if (q > p) {
            grouped = true;
            p = q;
        }
    }
    size_t after_int = p;
    size_t frac_start = SIZE_MAX, frac_end = SIZE_MAX;
    if (p < n && s[p] == '.' && p + 1 < n && is_digit((unsigned char)s[p + 1])) {
        frac_start = p + 1;
        p++;
        while (p < n && is_digit((unsigned char)s[p])) p++;
        frac_end = p;
    } else if (p < n && s[p] == '.' && after_int > int_start && !grouped &&
               (p + 1 >= n || !is_digit((unsigned char)s[p + 1])) &&
               (p + 1 < n && (s[p + 1] == 'e' || s[p + 1] == 'E'))) {
        p++; /* "5.e3" */
    }
    if (after_int == int_start && frac_start == SIZE_MAX) return NUM_NO;
    u128 v = 0;
    for (size_t k = int_start; k < after_int; k++) {
        if (s[k] == ',') continue;
        if (!mul_ok(v, 10, &v)) return NUM_OVERFLOW;
        u128 d = (u128)(s[k] - '0');
        if (v > U128_MAX - d) return NUM_OVERFLOW;
        v += d;
    }
    unsigned fd = 0;
    if (frac_start != SIZE_MAX) {
        size_t last = frac_end; /* trailing zeros of the fraction carry no value */
        while (last > frac_start && s[last - 1] == '0') last--;
        for (size_t k = frac_start; k < last; k++) {
            if (!mul_ok(v, 10, &v)) return NUM_OVERFLOW;
            u128 d = (u128)(s[k] - '0');
            if (v > U128_MAX - d) return NUM_OVERFLOW;
            v += d;
            if (++fd > 40) return NUM_OVERFLOW;
        }
    }
    u128 den;
    if (!pow10_ok(fd, &den)) return NUM_OVERFLOW;
    r->neg = false;
    r->num = v;
    r->den = den;
    *i = p;
    return NUM_OK;
}

/* exponent forms after a mantissa: e±d, E±d, *10^d, *10^{±d}. *i moves past it. */
static num_kind parse_exponent(const char *s, size_t n, size_t *i, long *exp10, bool *any)
{
    size_t p = *i;
    *any = false;
    bool eneg = false;
    size_t ds;
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < n && (s[p] == '+' || s[p] == '-')) eneg = s[p++] == '-';
        ds = p;
        while (p < n && is_digit((unsigned char)s[p])) p++;
        if (p == ds) return NUM_NO;
    } else if (has_prefix(s + p, n - p, "*10^")) {
        p += 4;
        bool braced = p < n && s[p] == '{';
        if (braced) p++;
        if (p < n && (s[p] == '+' || s[p] == '-')) eneg = s[p++] == '-';
        ds = p;
        while (p < n && is_digit((unsigned char)s[p])) p++;
        if (p == ds) return NUM_NO;
        if (braced) {
            if (p >= n || s[p] != '}') return NUM_NO;
        }
        size_t de = p;
        if (braced) p++;
        long e = 0;
        for (size_t k = ds; k < de; k++) {
            e = e * 10 + (s[k] - '0');
            if (e > 400) return NUM_OVERFLOW;
        }
        *exp10 = eneg ? -e : e;
        *any = true;
        *i = p;
        return NUM_OK;
    } else {
        return NUM_OK;
    }
    long e = 0;
    for (size_t k = ds; k < p; k++) {
        e = e * 10 + (s[k] - '0');
        if (e > 400) return NUM_OVERFLOW;
    }
    *exp10 = eneg ? -e : e;
    *any = true;
    *i = p;
    return NUM_OK;
}

static num_kind rat_scale10(rat *r, long e)
{
    if (e == 0) return NUM_OK;
    u128 f;
    if (!pow10_ok((unsigned)(e > 0 ? e : -e), &f)) return NUM_OVERFLOW;
    if (e > 0) return mul_ok(r->num, f, &r->num) ? NUM_OK : NUM_OVERFLOW;
    return mul_ok(r->den, f, &r->den) ? NUM_OK : NUM_OVERFLOW;
}

static num_kind rat_div(rat *a, rat b)
{
    if (b.num == 0) return NUM_NO;
    rat_reduce(a);
    rat_reduce(&b);
    u128 num, den;
    if (!mul_ok(a->num, b.den, &num) || !mul_ok(a->den, b.num, &den)) return NUM_OVERFLOW;
    a->num = num;
    a->den = den;
    a->neg = a->neg != b.neg;
    rat_reduce(a);
    return NUM_OK;
}

/* a signed decimal with optional exponent */
static num_kind parse_real(const char *s, size_t n, size_t *i, rat *r)
{
    size_t p = *i;
    bool neg = false;
    if (p < n && (s[p] == '+' || s[p] == '-')) neg = s[p++] == '-';
    num_kind k = parse_decimal(s, n, &p, r);
    if (k != NUM_OK) return k;
    long e = 0;
    bool any;
    k = parse_exponent(s, n, &p, &e, &any);
    if (k != NUM_OK) return k;
    if (any && (k = rat_scale10(r, e)) != NUM_OK) return k;
    r->neg = neg;
    *i = p;
    return NUM_OK;
}

/* one \frac argument: {signed real} or a single digit */
static num_kind parse_frac_arg(const char *s, size_t n, size_t *i, rat *r)
{
    size_t p = *i;
    if (p < n && is_digit((unsigned char)s[p])) {
        r->neg = false;
        r->num = (u128)(s[p] - '0');
        r->den = 1;
        *i = p + 1;
        return NUM_OK;
    }
    if (p >= n || s[p] != '{') return NUM_NO;
    p++;
    num_kind k = parse_real(s, n, &p, r);
    if (k != NUM_OK) return k;
    if (p >= n || s[p] != '}') return NUM_NO;
    *i = p + 1;
    return NUM_OK;
}

/* The whole of s[0, n) (whitespace already removed) as a number: [sign] (\frac a b | real
 * [/ real]) [%]. */
static num_kind parse_number(const char *s, size_t n, rat *r, bool *pct)
{
    size_t p = 0;
    *pct = false;
    if (n > 0 && s[n - 1] == '%') {
        *pct = true;
        n--;
    }
    bool neg = false;
    if (p < n && (s[p] == '+' || s[p] == '-')) neg = s[p++] == '-';
    num_kind k;
    if (has_prefix(s + p, n - p, "\\frac")) {
        p += 5;
        rat b;
        if ((k = parse_frac_arg(s, n, &p, r)) != NUM_OK) return k;
        if ((k = parse_frac_arg(s, n, &p, &b)) != NUM_OK) return k;
        if (p != n) return NUM_NO;
        if ((k = rat_div(r, b)) != NUM_OK) return k;
    } else {
        if (p < n && (s[p] == '+' || s[p] == '-')) return NUM_NO;
        if ((k = parse_real(s, n, &p, r)) != NUM_OK) return k;
        if (p < n && s[p] == '/') {
            p++;
            rat b;
            if ((k = parse_real(s, n, &p, &b)) != NUM_OK) return k;
            if (p != n) return NUM_NO;
            if ((k = rat_div(r, b)) != NUM_OK) return k;
        }
        if (p != n) return NUM_NO;
        rat_reduce(r);
    }
    if (neg) r->neg = !r->neg;
    if (r->num == 0) r->neg = false;
    return NUM_OK;
}

/* ---- the normalised form ---- */

typedef struct {
    char *buf;       /* owns the bytes */
    const char *s;   /* the normalised text without whitespace */
    size_t n;
    char lead;       /* letter of a leading "(B) text", else 0 */
} norm_text;

static size_t trim_left(const char *s, size_t n, size_t i)
{
    while (i < n && is_ws((unsigned char)s[i])) i++;
    return i;
}

static size_t trim_right(const char *s, size_t i, size_t e)
{
    while (e > i && is_ws((unsigned char)s[e - 1])) e--;
    return e;
}

/* copy s[i, e) without whitespace and markers into out; returns the length */
static size_t squeeze(const char *s, size_t i, size_t e, char *out)
{
    size_t o = 0;
    for (size_t k = i; k < e; k++) {
        unsigned char c = (unsigned char)s[k];
        if (is_ws(c) || c == MK_OPEN || c == MK_CLOSE) continue;
        out[o++] = (char)c;
    }
    return o;
}

static bool is_number_text(const char *s, size_t i, size_t e, char *scratch)
{
    size_t m = squeeze(s, i, e, scratch);
    rat r;
    bool pct;
    return m > 0 && parse_number(scratch, m, &r, &pct) == NUM_OK && !pct;
}

/* Words that may follow a number as units: letters, spaces, '/', '.', and exponents ^2 or
 * ^{2} ("cm^2", "m/s"); a bare digit means more than units ("3 and 4"). */
static bool is_unit_text(const char *s, size_t i, size_t e, bool need_letter)
{
    bool letter = false;
    for (size_t k = i; k < e; k++) {
        unsigned char c = (unsigned char)s[k];
        if (is_alpha(c)) {
            letter = true;
        } else if (c == '^') {
            size_t q = k + 1;
            bool braced = q < e && s[q] == '{';
            if (braced) q++;
            if (q < e && s[q] == '-') q++;
            size_t d = q;
            while (q < e && is_digit((unsigned char)s[q])) q++;
            if (q == d || (braced && (q >= e || s[q] != '}'))) return false;
            k = braced ? q : q - 1;
        } else if (!(is_ws(c) || c == MK_OPEN || c == MK_CLOSE || c == '/' || c == '.')) {
            return false;
        }
    }
    return letter || !need_letter;
}

static aha_status normalise(const char *in, size_t n, norm_text *nt)
{
    memset(nt, 0, sizeof *nt);
    size_t off = 0, len = n;
    if (find_first(in, n, 0, "\\boxed", 6) != SIZE_MAX || find_first(in, n, 0, "\\fbox", 5) != SIZE_MAX) {
        size_t bo, bl;
        if (boxed_last(in, n, &bo, &bl)) off = bo, len = bl;
    }
    /* one buffer: the LaTeX pass, then a scratch area for number checks */
    char *buf = malloc(2 * len + 2);
    if (!buf) return AHA_ENOMEM;
    nt->buf = buf;
    char *scratch = buf + len + 1;
    size_t m = norm_latex(in + off, len, buf);
    size_t i = trim_left(buf, m, 0), e = trim_right(buf, i, m);
    /* markers count as space for the trims below */
    while (i < e && (buf[i] == MK_OPEN || buf[i] == MK_CLOSE || is_ws((unsigned char)buf[i]))) i++;
    while (e > i && (buf[e - 1] == MK_OPEN || buf[e - 1] == MK_CLOSE ||
                     is_ws((unsigned char)buf[e - 1])))
        e--;
    if (e > i && buf[e - 1] == '.') e = trim_right(buf, i, e - 1);
    /* a leading "x =" or "x \\in" (one ASCII letter, optional subscript) */
    if (e - i >= 2 && is_alpha((unsigned char)buf[i])) {
        size_t k = i + 1;
        if (k < e && buf[k] == '_') {
            k++;
            if (k < e && buf[k] == '{') {
                while (k < e && buf[k] != '}') k++;
                if (k < e) k++;
            } else if (k < e && (is_alpha((unsigned char)buf[k]) || is_digit((unsigned char)buf[k]))) {
                k++;
            }
        }
        k = trim_left(buf, e, k);
        size_t op = 0;
        if (k < e && buf[k] == '=' && (k + 1 >= e || buf[k + 1] != '=')) op = 1;
        else if (has_prefix(buf + k, e - k, "\\in") && (k + 3 >= e || !is_alpha((unsigned char)buf[k + 3])))
            op = 3; /* "x \in [1, 2]" */
        if (op) {
            size_t r = trim_left(buf, e, k + op);
            if (r < e) i = r;
        }
    }
    /* "(B) text": remember the letter for a multiple-choice reference */
    if (e - i >= 4 && buf[i] == '(' && is_alpha((unsigned char)buf[i + 1]) && buf[i + 2] == ')' &&
        is_ws((unsigned char)buf[i + 3]))
        nt->lead = (char)to_lower((unsigned char)buf[i + 1]);
    /* units after a number: a text group, or plain words after a space */
    size_t mk = i;
    while (mk < e && buf[mk] != MK_OPEN) mk++;
    if (mk < e && mk > i && is_number_text(buf, i, mk, scratch) && is_unit_text(buf, mk, e, false)) {
        e = mk;
    } else {
        size_t sp = i;
        while (sp < e && !is_ws((unsigned char)buf[sp])) sp++;
        if (sp < e && sp > i && is_number_text(buf, i, sp, scratch) &&
            is_unit_text(buf, sp, e, true)) {
            /* plain words only: no digits or symbols */
            bool plain = true;
            for (size_t k = sp; k < e; k++)
                if (!is_alpha((unsigned char)buf[k]) && !is_ws((unsigned char)buf[k])) plain = false;
            if (plain) e = sp;
        }
    }
    /* squeeze into the front of buf (writing never overtakes reading) */
    size_t o = 0;
    for (size_t k = i; k < e; k++) {
        unsigned char c = (unsigned char)buf[k];
        if (is_ws(c) || c == MK_OPEN || c == MK_CLOSE) continue;
        buf[o++] = (char)c;
    }
    buf[o] = '\0';
    nt->s = buf;
    nt->n = o;
    return AHA_OK;
}

/* ---- comparison ---- */

static bool ascii_only(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)s[k] >= 0x80) return false;
    return true;
}

/* case-folded (Unicode) NFC equality */
static aha_status fold_equal(const char *a, size_t an, const char *b, size_t bn, bool *eq)
{
    if (ascii_only(a, an) && ascii_only(b, bn)) {
        *eq = false;
        if (an != bn) return AHA_OK;
        for (size_t k = 0; k < an; k++)
            if (to_lower((unsigned char)a[k]) != to_lower((unsigned char)b[k])) return AHA_OK;
        *eq = true;
        return AHA_OK;
    }
    if (an > (size_t)PTRDIFF_MAX / 4 || bn > (size_t)PTRDIFF_MAX / 4) return AHA_ENOMEM;
    utf8proc_uint8_t *fa = NULL, *fb = NULL;
    int opts = UTF8PROC_CASEFOLD | UTF8PROC_COMPOSE | UTF8PROC_STABLE;
    utf8proc_ssize_t la = an ? utf8proc_map((const utf8proc_uint8_t *)a, (utf8proc_ssize_t)an, &fa, opts) : 0;
    utf8proc_ssize_t lb = bn ? utf8proc_map((const utf8proc_uint8_t *)b, (utf8proc_ssize_t)bn, &fb, opts) : 0;
    aha_status st = AHA_OK;
    if (la < 0 || lb < 0) {
        /* only reachable on allocation failure: the inputs were validated as UTF-8 */
        st = (la == UTF8PROC_ERROR_NOMEM || lb == UTF8PROC_ERROR_NOMEM) ? AHA_ENOMEM : AHA_EINVAL;
        *eq = false;
    } else {
        *eq = la == lb && (la == 0 || memcmp(fa, fb, (size_t)la) == 0);
    }
    free(fa);
    free(fb);
    return st;
}

/* a bare letter "B" or "(B)": the lower-case letter, else 0 */
static char mc_letter(const char *s, size_t n)
{
    if (n == 1 && is_alpha((unsigned char)s[0])) return (char)to_lower((unsigned char)s[0]);
    if (n == 3 && s[0] == '(' && is_alpha((unsigned char)s[1]) && s[2] == ')')
        return (char)to_lower((unsigned char)s[1]);
    return 0;
}

typedef struct {
    char open, close;  /* '(' '[' 'b' for \{ ; 0 for a bare list */
    size_t i, e;       /* inner range */
} tuple_view;

static bool is_open(char c)
{
    return c == '(' || c == '[' || c == '{';
}

static bool is_close(char c)
{
    return c == ')' || c == ']' || c == '}';
}

/* does s[i, e) hold a comma at bracket depth 0? */
static bool top_comma(const char *s, size_t i, size_t e)
{
    size_t d = 0;
    for (size_t k = i; k < e; k++) {
        if (is_open(s[k])) d++;
        else if (is_close(s[k]) && d > 0) d--;
        else if (s[k] == ',' && d == 0) return true;
    }
    return false;
}

/* the outer brackets of s when the first one closes at the very end */
static bool tuple_of(const char *s, size_t n, tuple_view *t)
{
    size_t ol = 1, cl = 1;
    char open = 0, close = 0;
    if (n >= 4 && s[0] == '\\' && s[1] == '{' && s[n - 2] == '\\' && s[n - 1] == '}') {
        open = 'b', close = 'b', ol = 2, cl = 2;
    } else if (n >= 2 && (s[0] == '(' || s[0] == '[') && (s[n - 1] == ')' || s[n - 1] == ']')) {
        open = s[0], close = s[n - 1];
    }
    if (open) {
        size_t d = 0;
        bool whole = true;
        for (size_t k = ol - 1; k < n; k++) {
            if (is_open(s[k])) d++;
            else if (is_close(s[k])) {
                if (d > 0) d--;
                if (d == 0 && k != n - 1) {
                    whole = false;
                    break;
                }
            }
        }
        if (whole && top_comma(s, ol, n - cl)) {
            *t = (tuple_view){open, close, ol, n - cl};
            return true;
        }
    }
    if (top_comma(s, 0, n)) {
        *t = (tuple_view){0, 0, 0, n};
        return true;
    }
    return false;
}

/* the next top-level element of t starting at *p: [*p, end); *p moves past the comma */
static size_t next_elem(const char *s, const tuple_view *t, size_t *p)
{
    size_t d = 0, k = *p;
    for (; k < t->e; k++) {
        if (is_open(s[k])) d++;
        else if (is_close(s[k]) && d > 0) d--;
        else if (s[k] == ',' && d == 0) break;
    }
    size_t end = k;
    *p = k < t->e ? k + 1 : t->e + 1;
    return end;
}

#define TUPLE_DEPTH 4

static aha_status equal_norm(const char *a, size_t an, char alead, const char *r, size_t rn,
                             int depth, bool *eq);

static aha_status tuple_equal(const char *a, const tuple_view *ta, const char *r,
                              const tuple_view *tr, int depth, bool *eq)
{
    *eq = false;
    if (ta->open != tr->open || ta->close != tr->close) return AHA_OK;
    /* walk both lists in lockstep */
    size_t pa = ta->i, pr = tr->i;
    for (;;) {
        bool done_a = pa > ta->e, done_r = pr > tr->e;
        if (done_a || done_r) {
            *eq = done_a && done_r;
            return AHA_OK;
        }
        size_t sa = pa, sr = pr;
        size_t ea = next_elem(a, ta, &pa), er = next_elem(r, tr, &pr);
        bool same = ea == sa && er == sr; /* "(1,,2)": empty matches empty */
        if (!same) AHA_TRY(equal_norm(a + sa, ea - sa, 0, r + sr, er - sr, depth + 1, &same));
        if (!same) return AHA_OK;
    }
}

/* a (answer) against r (reference), both normalised */
static aha_status equal_norm(const char *a, size_t an, char alead, const char *r, size_t rn,
                             int depth, bool *eq)
{
    *eq = false;
    if (an == 0 || rn == 0) return AHA_OK;
    rat va, vr;
    bool pa, pr;
    num_kind kr = parse_number(r, rn, &vr, &pr);
    num_kind ka = parse_number(a, an, &va, &pa);
    if (kr == NUM_OK && ka == NUM_OK) {
        if (pa && !pr) return AHA_OK;
        *eq = va.neg == vr.neg && va.num == vr.num && va.den == vr.den;
        return AHA_OK;
    }
    char rl = mc_letter(r, rn);
    if (rl) {
        char al = mc_letter(a, an);
        if (!al) al = alead;
        *eq = al == rl;
        return AHA_OK;
    }
    if (depth < TUPLE_DEPTH) {
        tuple_view ta, tr;
        if (tuple_of(r, rn, &tr) && tuple_of(a, an, &ta)) return tuple_equal(a, &ta, r, &tr, depth, eq);
    }
    return fold_equal(a, an, r, rn, eq);
}

aha_status aha_reward_equivalent(const char *a, size_t alen, const char *r, size_t rlen,
                                 bool *equal, aha_err *err)
{
    *equal = false;
    if (!a) alen = 0;
    if (!r) rlen = 0;
    size_t bad = u8_invalid_at(a, alen);
    if (bad != SIZE_MAX) return aha_errf(err, AHA_EINVAL, "answer is not valid UTF-8 (byte %zu)", bad);
    bad = u8_invalid_at(r, rlen);
    if (bad != SIZE_MAX)
        return aha_errf(err, AHA_EINVAL, "reference is not valid UTF-8 (byte %zu)", bad);
    norm_text na, nr;
    aha_status st = normalise(a ? a : "", alen, &na);
    if (st != AHA_OK) return aha_errf(err, st, "out of memory normalising the answer");
    st = normalise(r ? r : "", rlen, &nr);
    if (st != AHA_OK) {
        free(na.buf);
        return aha_errf(err, st, "out of memory normalising the reference");
    }
    st = equal_norm(na.s, na.n, na.lead, nr.s, nr.n, 0, equal);
    free(na.buf);
    free(nr.buf);
    if (st != AHA_OK) return aha_errf(err, st, "comparing the answer: %s", aha_status_str(st));
    return AHA_OK;
}

/* ------------------------------------------------------------------------------------ */
/* format                                                                                  */

static bool prompt_opens_think(const char *prompt, size_t n)
{
    if (!prompt) return false;
    size_t e = trim_right(prompt, 0, n);
    return e >= 7 && memcmp(prompt + e - 7, "<think>", 7) == 0;
}

/* The four tags of the format rule, counted (up to 2) in one pass over the '<' bytes. */
enum { TAG_THINK, TAG_THINK_END, TAG_ANSWER, TAG_ANSWER_END, TAG_COUNT };
static const char *const tag_text[TAG_COUNT] = {"<think>", "</think>", "<answer>", "</answer>"};
static const size_t tag_len[TAG_COUNT] = {7, 8, 8, 9};

static void tag_census(const char *c, size_t n, int count[TAG_COUNT], size_t first[TAG_COUNT])
{
    for (int t = 0; t < TAG_COUNT; t++) count[t] = 0, first[t] = SIZE_MAX;
    size_t i = 0;
    while (i < n) {
        const char *lt = memchr(c + i, '<', n - i);
        if (!lt) break;
        i = (size_t)(lt - c);
        for (int t = 0; t < TAG_COUNT; t++) {
            if (has_prefix(c + i, n - i, tag_text[t])) {
                if (count[t] == 0) first[t] = i;
                if (count[t] < 2) count[t]++;
                break;
            }
        }
        i++;
    }
}

double aha_reward_format(const char *prompt, size_t prompt_len, const char *c, size_t n)
{
    if (!c) n = 0;
    bool implied = prompt_opens_think(prompt, prompt_len);
    int cnt[TAG_COUNT];
    size_t at[TAG_COUNT];
    tag_census(c, n, cnt, at);
    if (cnt[TAG_THINK] != (implied ? 0 : 1) || cnt[TAG_THINK_END] != 1 || cnt[TAG_ANSWER] != 1 ||
        cnt[TAG_ANSWER_END] != 1)
        return 0.0;
    size_t p = 0;
    if (!implied) {
        p = trim_left(c, n, 0);
        if (p != at[TAG_THINK]) return 0.0;
        p += tag_len[TAG_THINK];
    }
    if (at[TAG_THINK_END] < p) return 0.0;
    p = trim_left(c, n, at[TAG_THINK_END] + tag_len[TAG_THINK_END]);
    if (p != at[TAG_ANSWER]) return 0.0;
    if (at[TAG_ANSWER_END] < p + tag_len[TAG_ANSWER]) return 0.0;
    return trim_left(c, n, at[TAG_ANSWER_END] + tag_len[TAG_ANSWER_END]) == n ? 1.0 : 0.0;
}

/* ------------------------------------------------------------------------------------ */
/* language                                                                                */

typedef enum {
    SC_OTHER, SC_LATIN, SC_GREEK, SC_CYRILLIC, SC_ARMENIAN, SC_HEBREW, SC_ARABIC,
    SC_DEVANAGARI, SC_BENGALI, SC_GURMUKHI, SC_GUJARATI, SC_TAMIL, SC_TELUGU, SC_KANNADA,
    SC_MALAYALAM, SC_SINHALA, SC_THAI, SC_LAO, SC_MYANMAR, SC_GEORGIAN, SC_ETHIOPIC,
    SC_KHMER, SC_HANGUL, SC_HIRAGANA, SC_KATAKANA, SC_HAN, SC_COUNT
} script;

#define SCB(x) (1u << (x))

typedef struct {
    int32_t lo, hi;
    script sc;
} script_range;

/* sorted by lo; letters outside every range are SC_OTHER */
static const script_range script_ranges[] = {
    {0x0041, 0x005A, SC_LATIN},     {0x0061, 0x007A, SC_LATIN},
    {0x00AA, 0x00AA, SC_LATIN},     {0x00BA, 0x00BA, SC_LATIN},
    {0x00C0, 0x02AF, SC_LATIN},     {0x0370, 0x03FF, SC_GREEK},
    {0x0400, 0x052F, SC_CYRILLIC},  {0x0530, 0x058F, SC_ARMENIAN},
    {0x0590, 0x05FF, SC_HEBREW},    {0x0600, 0x06FF, SC_ARABIC},
    {0x0750, 0x077F, SC_ARABIC},    {0x08A0, 0x08FF, SC_ARABIC},
    {0x0900, 0x097F, SC_DEVANAGARI}, {0x0980, 0x09FF, SC_BENGALI},
    {0x0A00, 0x0A7F, SC_GURMUKHI},  {0x0A80, 0x0AFF, SC_GUJARATI},
    {0x0B80, 0x0BFF, SC_TAMIL},     {0x0C00, 0x0C7F, SC_TELUGU},
    {0x0C80, 0x0CFF, SC_KANNADA},   {0x0D00, 0x0D7F, SC_MALAYALAM},
    {0x0D80, 0x0DFF, SC_SINHALA},   {0x0E00, 0x0E7F, SC_THAI},
    {0x0E80, 0x0EFF, SC_LAO},       {0x1000, 0x109F, SC_MYANMAR},
    {0x10A0, 0x10FF, SC_GEORGIAN},  {0x1100, 0x11FF, SC_HANGUL},
    {0x1200, 0x139F, SC_ETHIOPIC},  {0x1780, 0x17FF, SC_KHMER},
    {0x19E0, 0x19FF, SC_KHMER},     {0x1C80, 0x1C8F, SC_CYRILLIC},
    {0x1C90, 0x1CBF, SC_GEORGIAN},  {0x1D00, 0x1DBF, SC_LATIN},
    {0x1E00, 0x1EFF, SC_LATIN},     {0x1F00, 0x1FFF, SC_GREEK},
    {0x2C60, 0x2C7F, SC_LATIN},     {0x2D00, 0x2D2F, SC_GEORGIAN},
    {0x2D80, 0x2DDF, SC_ETHIOPIC},  {0x2DE0, 0x2DFF, SC_CYRILLIC},
    {0x2E80, 0x2FDF, SC_HAN},       {0x3005, 0x3007, SC_HAN},
    {0x3021, 0x3029, SC_HAN},       {0x3038, 0x303B, SC_HAN},
    {0x3040, 0x309F, SC_HIRAGANA},  {0x30A0, 0x30FF, SC_KATAKANA},
    {0x3130, 0x318F, SC_HANGUL},    {0x31F0, 0x31FF, SC_KATAKANA},
    {0x3400, 0x4DBF, SC_HAN},       {0x4E00, 0x9FFF, SC_HAN},
    {0xA640, 0xA69F, SC_CYRILLIC},  {0xA720, 0xA7FF, SC_LATIN},
    {0xA8E0, 0xA8FF, SC_DEVANAGARI}, {0xA960, 0xA97F, SC_HANGUL},
    {0xAB30, 0xAB6F, SC_LATIN},     {0xAC00, 0xD7FF, SC_HANGUL},
    {0xF900, 0xFAFF, SC_HAN},       {0xFB00, 0xFB06, SC_LATIN},
    {0xFB13, 0xFB17, SC_ARMENIAN},  {0xFB1D, 0xFB4F, SC_HEBREW},
    {0xFB50, 0xFDFF, SC_ARABIC},    {0xFE70, 0xFEFF, SC_ARABIC},
    {0xFF21, 0xFF3A, SC_LATIN},     {0xFF41, 0xFF5A, SC_LATIN},
    {0xFF66, 0xFF9F, SC_KATAKANA},  {0xFFA0, 0xFFDC, SC_HANGUL},
    {0x1B000, 0x1B16F, SC_HIRAGANA}, {0x20000, 0x3134F, SC_HAN},
};

static script script_of(int32_t cp)
{
    size_t lo = 0, hi = AHA_ARRAY_LEN(script_ranges);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < script_ranges[mid].lo) hi = mid;
        else if (cp > script_ranges[mid].hi) lo = mid + 1;
        else return script_ranges[mid].sc;
    }
    return SC_OTHER;
}

typedef struct {
    const char *codes; /* space-separated primary subtags */
    unsigned scripts;
} lang_scripts;

static const lang_scripts languages[] = {
    {"en fr de es it pt nl ca gl eu af sq cs sk sl hr bs pl ro hu fi et lv lt da sv no nb nn "
     "is ga cy mt tr az uz vi id ms tl sw", SCB(SC_LATIN)},
    {"ru uk be bg sr mk kk ky tg mn", SCB(SC_CYRILLIC)},
    {"el", SCB(SC_GREEK)},
    {"hy", SCB(SC_ARMENIAN)},
    {"ka", SCB(SC_GEORGIAN)},
    {"he yi", SCB(SC_HEBREW)},
    {"ar fa ur ps", SCB(SC_ARABIC)},
    {"hi mr ne sa", SCB(SC_DEVANAGARI)},
    {"bn as", SCB(SC_BENGALI)},
    {"pa", SCB(SC_GURMUKHI)},
    {"gu", SCB(SC_GUJARATI)},
    {"ta", SCB(SC_TAMIL)},
    {"te", SCB(SC_TELUGU)},
    {"kn", SCB(SC_KANNADA)},
    {"ml", SCB(SC_MALAYALAM)},
    {"si", SCB(SC_SINHALA)},
    {"th", SCB(SC_THAI)},
    {"lo", SCB(SC_LAO)},
    {"km", SCB(SC_KHMER)},
    {"my", SCB(SC_MYANMAR)},
    {"am", SCB(SC_ETHIOPIC)},
    {"zh", SCB(SC_HAN)},
    {"ja", SCB(SC_HIRAGANA) | SCB(SC_KATAKANA) | SCB(SC_HAN)},
    {"ko", SCB(SC_HANGUL)},
};

/* target scripts of a language tag, 0 when unknown */
static unsigned language_scripts(const char *code, size_t len)
{
    if (!code) return 0;
    size_t p = 0;
    while (p < len && code[p] != '-' && code[p] != '_') p++;
    if (p < 2 || p > 3) return 0;
    for (size_t k = p; k < len; k++) { /* the rest must look like a tag: letters, digits, - _ */
        unsigned char c = (unsigned char)code[k];
        if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '_')) return 0;
    }
    char prim[4];
    for (size_t k = 0; k < p; k++) {
        if (!is_alpha((unsigned char)code[k])) return 0;
        prim[k] = (char)to_lower((unsigned char)code[k]);
    }
    for (size_t l = 0; l < AHA_ARRAY_LEN(languages); l++) {
        const char *s = languages[l].codes;
        while (*s) {
            size_t w = 0;
            while (s[w] && s[w] != ' ') w++;
            if (w == p && memcmp(s, prim, p) == 0) return languages[l].scripts;
            s += w;
            while (*s == ' ') s++;
        }
    }
    return 0;
}

bool aha_reward_language_supported(const char *code, size_t len)
{
    return language_scripts(code, len) != 0;
}

/* the chain of thought of rewards.h: [*b, *e) */
static void cot_range(const char *prompt, size_t plen, const char *c, size_t n, size_t *b,
                      size_t *e)
{
    size_t start;
    if (prompt_opens_think(prompt, plen)) {
        start = trim_left(c, n, 0);
        start = has_prefix(c + start, n - start, "<think>") ? start + 7 : 0;
    } else {
        size_t t = find_first(c, n, 0, "<think>", 7);
        if (t == SIZE_MAX) {
            size_t a = find_first(c, n, 0, "<answer>", 8);
            *b = 0;
            *e = a == SIZE_MAX ? n : a;
            return;
        }
        start = t + 7;
    }
    size_t end = find_first(c, n, start, "</think>", 8);
    *b = start;
    *e = end == SIZE_MAX ? n : end;
}

/* Counts words in s[b, e) (rewards.h's definition) in the target scripts and in total. A
 * search for a math closer that failed once is not repeated: every later opener would fail
 * the same way, which keeps the scan linear. */
static void count_words(const char *s, size_t b, size_t e, unsigned target, size_t *hit,
                        size_t *all)
{
    const unsigned char *u = (const unsigned char *)s;
    bool no_dd = false, no_d = false, no_paren = false, no_bracket = false;
    script run = SC_COUNT; /* SC_COUNT: not inside a word */
    size_t h = 0, a = 0;
    size_t i = b;
    while (i < e) {
        unsigned char c = u[i];
        if (c == '$') {
            run = SC_COUNT;
            if (i + 1 < e && u[i + 1] == '$' && !no_dd) {
                size_t q = find_first(s, e, i + 2, "$$", 2);
                if (q != SIZE_MAX) {
                    i = q + 2;
                    continue;
                }
                no_dd = true;
            }
            if (!no_d) {
                size_t q = find_first(s, e, i + 1, "$", 1);
                if (q != SIZE_MAX) {
                    i = q + 1;
                    continue;
                }
                no_d = true;
            }
            i++;
            continue;
        }
        if (c == '\\') {
            run = SC_COUNT;
            if (i + 1 < e && (u[i + 1] == '(' || u[i + 1] == '[')) {
                bool paren = u[i + 1] == '(';
                bool *no = paren ? &no_paren : &no_bracket;
                if (!*no) {
                    size_t q = find_first(s, e, i + 2, paren ? "\\)" : "\\]", 2);
                    if (q != SIZE_MAX) {
                        i = q + 2;
                        continue;
                    }
                    *no = true;
                }
                i += 2;
                continue;
            }
            i++;
            if (i < e && is_alpha(u[i])) {
                while (i < e && is_alpha(u[i])) i++;
            } else if (i < e && u[i] < 0x80) {
                i++;
            }
            continue;
        }
        if (c < 0x80) {
            /* a run of plain ASCII: count word starts without a branch per byte (the
             * letter/non-letter pattern of real text defeats branch prediction) */
            unsigned prev = run == SC_LATIN, words = 0;
            while (i < e) {
                unsigned char d = u[i];
                if (d >= 0x80 || d == '$' || d == '\\') break;
                unsigned letter = (unsigned)((d | 32) - 'a') < 26u;
                words += letter & ~prev;
                prev = letter;
                i++;
            }
            a += words;
            if (target & SCB(SC_LATIN)) h += words;
            run = prev ? SC_LATIN : SC_COUNT;
            continue;
        }
        /* validated by the caller, so the lead byte tells the length */
        int32_t cp;
        if (c < 0xE0) {
            AHA_ASSERT(i + 1 < e);
            cp = ((int32_t)(c & 0x1F) << 6) | (u[i + 1] & 0x3F);
            i += 2;
        } else if (c < 0xF0) {
            AHA_ASSERT(i + 2 < e);
            cp = ((int32_t)(c & 0x0F) << 12) | ((int32_t)(u[i + 1] & 0x3F) << 6) | (u[i + 2] & 0x3F);
            i += 3;
        } else {
            AHA_ASSERT(i + 3 < e);
            cp = ((int32_t)(c & 0x07) << 18) | ((int32_t)(u[i + 1] & 0x3F) << 12) |
                 ((int32_t)(u[i + 2] & 0x3F) << 6) | (u[i + 3] & 0x3F);
            i += 4;
        }
        if (cp >= 0x4E00 && cp <= 0x9FFF) { /* the bulk of Chinese text: one Han word each */
            a++;
            if (target & SCB(SC_HAN)) h++;
            run = SC_COUNT;
            continue;
        }
        utf8proc_category_t cat = utf8proc_category(cp);
        if (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) {
            script sc = script_of(cp);
            bool single = sc == SC_HAN || sc == SC_HIRAGANA || sc == SC_KATAKANA || sc == SC_HANGUL;
            if (single || sc != run) {
                a++;
                if (target & SCB(sc)) h++;
            }
            run = single ? SC_COUNT : sc;
        } else if (cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME) {
            /* a combining mark continues the word it follows */
        } else {
            run = SC_COUNT;
        }
    }
    *hit = h;
    *all = a;
}

/* the language score of a completion already checked to be valid UTF-8 */
static double language_score(const char *prompt, size_t prompt_len, const char *c, size_t n,
                             unsigned target)
{
    size_t b, e, hit, all;
    cot_range(prompt, prompt_len, c, n, &b, &e);
    count_words(c, b, e, target, &hit, &all);
    return all == 0 ? 1.0 : (double)hit / (double)all;
}

aha_status aha_reward_language(const char *prompt, size_t prompt_len, const char *c, size_t n,
                               const char *code, size_t code_len, double *score, aha_err *err)
{
    *score = 0;
    if (!c) n = 0;
    if (!prompt) prompt_len = 0;
    unsigned target = language_scripts(code, code_len);
    if (!target)
        return aha_errf(err, AHA_EINVAL, "unknown language '%.*s'",
                        (int)(code_len > 32 ? 32 : code_len), code ? code : "");
    size_t bad = u8_invalid_at(c, n);
    if (bad != SIZE_MAX)
        return aha_errf(err, AHA_EINVAL, "completion is not valid UTF-8 (byte %zu)", bad);
    *score = language_score(prompt, prompt_len, c, n, target);
    return AHA_OK;
}

/* ------------------------------------------------------------------------------------ */
/* scoring                                                                                 */

aha_reward_weights aha_reward_weights_default(void)
{
    return (aha_reward_weights){.accuracy = 1.0, .format = 1.0, .language = 0.0};
}

aha_status aha_reward_weights_from_json(const char *json, size_t len, aha_reward_weights *w,
                                        aha_err *err)
{
    if (!json || trim_left(json, len, 0) == len) return AHA_OK;
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return aha_errf(err, AHA_EINVAL, "reward config: line %d column %d: %s", je.line,
                        je.column, je.text);
    aha_reward_weights nw = *w;
    aha_status st = AHA_OK;
    const char *key;
    json_t *val;
    if (!json_is_object(root)) {
        st = aha_errf(err, AHA_EINVAL, "reward config: expected a JSON object");
        goto out;
    }
    json_object_foreach(root, key, val) {
        if (strcmp(key, "weights") != 0) {
            st = aha_errf(err, AHA_EINVAL, "reward config: unknown key '%.64s' (known: weights)", key);
            goto out;
        }
        if (!json_is_object(val)) {
            st = aha_errf(err, AHA_EINVAL, "reward config: 'weights' must be an object");
            goto out;
        }
        const char *wk;
        json_t *wv;
        json_object_foreach(val, wk, wv) {
            double *dst = !strcmp(wk, "accuracy") ? &nw.accuracy
                          : !strcmp(wk, "format") ? &nw.format
                          : !strcmp(wk, "language") ? &nw.language
                                                    : NULL;
            if (!dst) {
                st = aha_errf(err, AHA_EINVAL,
                              "reward config: unknown weight '%.64s' (known: accuracy, format, "
                              "language)", wk);
                goto out;
            }
            if (!json_is_number(wv) || !isfinite(json_number_value(wv)) ||
                json_number_value(wv) < 0) {
                st = aha_errf(err, AHA_EINVAL,
                              "reward config: weight '%s' must be a finite number >= 0", wk);
                goto out;
            }
            *dst = json_number_value(wv);
        }
    }
    *w = nw;
out:
    json_decref(root);
    return st;
}

/* copy s[0, n) into a C string of cap bytes, cut at a UTF-8 boundary, NULs as spaces */
static void copy_text(char *dst, size_t cap, const char *s, size_t n)
{
    size_t m = n < cap - 1 ? n : cap - 1;
    if (m < n)
        while (m > 0 && ((unsigned char)s[m] & 0xC0) == 0x80) m--;
    for (size_t k = 0; k < m; k++) dst[k] = s[k] ? s[k] : ' ';
    dst[m] = '\0';
}

static aha_status item_error(aha_reward_result *out, aha_status st, const char *msg)
{
    out->total = out->accuracy = out->format = out->language = 0;
    out->has_language = false;
    copy_text(out->error, sizeof out->error, msg, strlen(msg));
    return st;
}

aha_status aha_reward_score(const aha_reward_item *in, const aha_reward_weights *w,
                            aha_reward_result *out)
{
    AHA_ASSERT(in && out);
    memset(out, 0, sizeof *out);
    aha_reward_weights defaults = aha_reward_weights_default();
    if (!w) w = &defaults;
    aha_err err = {0};
    static const char *const names[] = {"prompt", "completion", "reference_answer", "language",
                                        "task"};
    const char *ptr[] = {in->prompt, in->completion, in->reference, in->language, in->task};
    size_t len[] = {in->prompt_len, in->completion_len, in->reference_len, in->language_len,
                    in->task_len};
    for (int f = 0; f < 5; f++) {
        if (!ptr[f]) {
            len[f] = 0;
            ptr[f] = "";
        }
        size_t bad = u8_invalid_at(ptr[f], len[f]);
        if (bad != SIZE_MAX) {
            aha_errf(&err, AHA_EINVAL, "%s is not valid UTF-8 (byte %zu)", names[f], bad);
            return item_error(out, AHA_EINVAL, err.msg);
        }
    }
    const char *p = ptr[0], *c = ptr[1], *r = ptr[2], *lang = ptr[3];
    size_t pn = len[0], cn = len[1], rn = len[2], ln = len[3];
    unsigned target = ln > 0 ? language_scripts(lang, ln) : 0;
    if (ln > 0 && !target) {
        aha_errf(&err, AHA_EINVAL, "unknown language '%.*s'", (int)(ln > 32 ? 32 : ln), lang);
        return item_error(out, AHA_EINVAL, err.msg);
    }
    size_t off, alen;
    out->has_answer = aha_reward_extract_answer(c, cn, &off, &alen);
    if (out->has_answer) {
        copy_text(out->extracted, sizeof out->extracted, c + off, alen);
        bool eq;
        aha_status st = aha_reward_equivalent(c + off, alen, r, rn, &eq, &err);
        if (st != AHA_OK) return item_error(out, st, err.msg);
        out->accuracy = eq ? 1.0 : 0.0;
    }
    out->format = aha_reward_format(p, pn, c, cn);
    if (ln > 0) {
        out->language = language_score(p, pn, c, cn, target);
        out->has_language = true;
    }
    out->total = w->accuracy * out->accuracy + w->format * out->format +
                 (out->has_language ? w->language * out->language : 0.0);
    return AHA_OK;
}
