/* safetensors.c: the safetensors reader (mmap, single or sharded) and writer.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON header (an object of
 * name -> {dtype, shape, data_offsets} plus an optional "__metadata__" string map), then the
 * data area. Offsets are relative to the data area.
 *
 * Reader invariants, established before any tensor is handed out: the header fits in the
 * file and is at most AHA_ST_MAX_HEADER bytes of UTF-8 JSON; every tensor has a known dtype,
 * at most AHA_ST_MAX_DIMS non-negative dims whose product does not overflow, and
 * data_offsets [begin, end) inside the data area with end - begin == numel x dtype size; the
 * tensors tile the data area exactly (no overlap, no gap, nothing after the last one), as the
 * reference implementation demands; names are unique across all shards.
 *
 * The writer lays tensors out as the reference implementation does (larger dtypes first,
 * then by name, which keeps every tensor aligned to its element size when the header is
 * padded to 8 bytes with spaces), so a file read here and written back is byte-identical to
 * what Python's safetensors writes. Files are streamed to a temp file, fsync'd and renamed. */
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader maps it as host order"
#endif

/* ---------------------------------------------------------------- dtypes */

static const struct {
    const char *name;
    size_t size;
    int rank; /* position in the reference implementation's Dtype enum (layout order) */
} dtype_info[AHA_DT_COUNT] = {
    [AHA_DT_F32] = {"F32", 4, 15}, [AHA_DT_BF16] = {"BF16", 2, 12}, [AHA_DT_F16] = {"F16", 2, 11},
    [AHA_DT_F64] = {"F64", 8, 16}, [AHA_DT_I64] = {"I64", 8, 17},   [AHA_DT_I32] = {"I32", 4, 13},
    [AHA_DT_I16] = {"I16", 2, 9},  [AHA_DT_I8] = {"I8", 1, 5},      [AHA_DT_U8] = {"U8", 1, 4},
    [AHA_DT_BOOL] = {"BOOL", 1, 0},
};

size_t aha_dtype_size(aha_dtype dt)
{
    return (unsigned)dt < AHA_DT_COUNT ? dtype_info[dt].size : 0;
}

const char *aha_dtype_name(aha_dtype dt)
{
    return (unsigned)dt < AHA_DT_COUNT ? dtype_info[dt].name : "?";
}

aha_status aha_dtype_parse(const char *name, aha_dtype *out, aha_err *err)
{
    for (int i = 0; i < AHA_DT_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (aha_dtype)i;
            return AHA_OK;
        }
    }
    return aha_errf(err, AHA_EFORMAT, "unknown dtype '%.40s'", name);
}

/* ---------------------------------------------------------- conversions */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float aha_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t aha_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    /* NaN: keep sign and the top payload bits, force quiet so the payload cannot round to
     * zero (which would turn it into infinity) */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    /* round to nearest, ties to even; a carry into the exponent is the correct result
     * (up to infinity for values past the largest bf16) */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float aha_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: man x 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t aha_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    /* 65520 is halfway between 65504 (largest f16, odd mantissa) and 65536: ties to even
     * round it up to infinity */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* normal f16 range, >= 2^-14 */
        a += 0xfffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
    }
    if (a <= 0x33000000u) return sign; /* <= 2^-25: half of the smallest subnormal, ties to 0 */
    /* subnormal f16: value / 2^-24 rounded to nearest even */
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 */
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

/* ---------------------------------------------------------- small helpers */

bool aha__utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            if (c == 0) return false;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* growable byte buffer for building headers */
typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    AHA_ASSERT(n >= 0 && (size_t)n < sizeof tmp);
    sb_put(b, tmp, (size_t)n);
}

/* a JSON string literal, escaped as serde_json does (control characters, quote, backslash;
 * other UTF-8 passes through) */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        switch (c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        default:
            if (c < 0x20)
                sb_fmt(b, "\\u%04x", c);
            else
                sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* A name for messages: printable ASCII only and bounded, whatever the file held. */
static const char *msg_name(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; s[i] && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            buf[o++] = (char)c;
        } else {
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        }
        if (i >= 120) {
            snprintf(buf + o, cap - o, "...");
            return buf;
        }
    }
    buf[o] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    char *path;
    const uint8_t *base; /* the whole file image */
    size_t len;
    const uint8_t *data; /* data area */
    size_t data_len;
    void *map; /* mmap'd region (NULL for memory images and empty files) */
    size_t map_len;
} st_shard;

struct aha_st_file {
    char *path;
    st_shard *shards;
    int nshards;
    aha_st_tensor *tensors; /* sorted by name */
    int n, cap;
    char **meta_keys, **meta_vals;
    int nmeta;
};

static void file_free(aha_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->nshards; i++) {
        if (f->shards[i].map) munmap(f->shards[i].map, f->shards[i].map_len);
        free(f->shards[i].path);
    }
    free(f->shards);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f);
}

void aha_st_close(aha_st_file *f)
{
    file_free(f);
}

int aha_st_count(const aha_st_file *f)
{
    return f->n;
}

const aha_st_tensor *aha_st_at(const aha_st_file *f, int i)
{
    return (i >= 0 && i < f->n) ? &f->tensors[i] : NULL;
}

static int tensor_name_cmp(const void *a, const void *b)
{
    return strcmp(((const aha_st_tensor *)a)->name, ((const aha_st_tensor *)b)->name);
}

const aha_st_tensor *aha_st_find(const aha_st_file *f, const char *name)
{
    if (!f || !name || f->n == 0) return NULL;
    aha_st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n, sizeof key, tensor_name_cmp);
}

const char *aha_st_metadata(const aha_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

const char *aha_st_shard_path(const aha_st_file *f, int shard)
{
    return (shard >= 0 && shard < f->nshards) ? f->shards[shard].path : NULL;
}

int aha_st_shard_count(const aha_st_file *f)
{
    return f->nshards;
}

static aha_status add_shard(aha_st_file *f, const char *path, int *idx, aha_err *err)
{
    st_shard *s = realloc(f->shards, sizeof *s * (size_t)(f->nshards + 1));
    if (!s) return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
    f->shards = s;
    st_shard *sh = &f->shards[f->nshards];
    memset(sh, 0, sizeof *sh);
    sh->path = strdup(path);
    if (!sh->path) return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
    *idx = f->nshards++;
    return AHA_OK;
}

static aha_status push_tensor(aha_st_file *f, const aha_st_tensor *t, aha_err *err)
{
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 64;
        aha_st_tensor *p = realloc(f->tensors, sizeof *p * (size_t)cap);
        if (!p) return aha_errf(err, AHA_ENOMEM, "out of memory for the tensor table");
        f->tensors = p;
        f->cap = cap;
    }
    f->tensors[f->n++] = *t;
    return AHA_OK;
}

/* The key jansson was looking at when it found a duplicate: the string token ending just
 * before byte pos of the header (best effort, for the message only). */
static void dup_key_near(const char *h, size_t hlen, size_t pos, char *out, size_t cap)
{
    out[0] = '\0';
    if (pos > hlen) pos = hlen;
    size_t end = pos;
    while (end > 0 && h[end - 1] != '"') end--;
    if (end == 0) return;
    end--; /* the closing quote */
    size_t beg = end;
    while (beg > 0) {
        beg--;
        if (h[beg] == '"') {
            size_t bs = 0;
            while (beg >= bs + 1 && h[beg - bs - 1] == '\\') bs++;
            if (bs % 2 == 0) break;
        }
    }
    if (h[beg] != '"' || end <= beg) return;
    char raw[200];
    size_t n = end - beg - 1;
    if (n >= sizeof raw) n = sizeof raw - 1;
    memcpy(raw, h + beg + 1, n);
    raw[n] = '\0';
    msg_name(raw, out, cap);
}

typedef struct {
    uint64_t begin, end;
    int idx; /* into f->tensors */
} st_range;

static int range_cmp(const void *a, const void *b)
{
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static aha_status get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return AHA_EFORMAT;
    json_int_t x = json_integer_value(v);
    if (x < 0) return AHA_EFORMAT;
    *out = (uint64_t)x;
    return AHA_OK;
}

/* Parse one tensor entry of shard si into t (name not yet set). */
static aha_status parse_entry(const char *path, const char *name, json_t *val, size_t data_len,
                              aha_st_tensor *t, uint64_t *begin, aha_err *err)
{
    char nb[160];
    const char *nm = msg_name(name, nb, sizeof nb);
    if (!json_is_object(val))
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': entry is not a JSON object", path, nm);
    json_t *jd = json_object_get(val, "dtype");
    json_t *js = json_object_get(val, "shape");
    json_t *jo = json_object_get(val, "data_offsets");
    if (!json_is_string(jd))
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': dtype missing or not a string", path, nm);
    if (aha_dtype_parse(json_string_value(jd), &t->dtype, err) != AHA_OK)
        return aha_err_prefix(err, AHA_EFORMAT, "%s: tensor '%s'", path, nm);
    if (!json_is_array(js))
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': shape missing or not an array", path, nm);
    size_t nd = json_array_size(js);
    if (nd > AHA_ST_MAX_DIMS)
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': %zu dims, more than %d", path, nm, nd,
                        AHA_ST_MAX_DIMS);
    t->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t d = 0; d < nd; d++) {
        uint64_t v;
        if (get_u64(json_array_get(js, d), &v) != AHA_OK)
            return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                            path, nm, d);
        if (v > AHA_ST_MAX_DIM)
            return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': shape[%zu] = %llu is absurd", path, nm, d,
                            (unsigned long long)v);
        t->shape[d] = (int64_t)v;
        /* a zero dim makes the tensor empty, but the other dims must still multiply safely */
        if (v != 0 && numel > INT64_MAX / (int64_t)v)
            return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': element count overflows", path, nm);
        numel *= v != 0 ? (int64_t)v : 1;
    }
    for (size_t d = 0; d < nd; d++)
        if (t->shape[d] == 0) numel = 0;
    t->numel = numel;
    size_t es = aha_dtype_size(t->dtype);
    if ((uint64_t)numel > (uint64_t)SIZE_MAX / es)
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': byte size overflows", path, nm);
    t->nbytes = (size_t)numel * es;
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': data_offsets missing or not [begin, end]",
                        path, nm);
    uint64_t b, e;
    if (get_u64(json_array_get(jo, 0), &b) != AHA_OK || get_u64(json_array_get(jo, 1), &e) != AHA_OK)
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': data_offsets are not non-negative integers",
                        path, nm);
    if (e < b)
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", path,
                        nm, (unsigned long long)b, (unsigned long long)e);
    if (e > data_len)
        return aha_errf(err, AHA_EFORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] run past the data area (%zu bytes)",
                        path, nm, (unsigned long long)b, (unsigned long long)e, data_len);
    if (e - b != t->nbytes)
        return aha_errf(err, AHA_EFORMAT,
                        "%s: tensor '%s': shape x %s needs %zu bytes but data_offsets hold %llu", path,
                        nm, aha_dtype_name(t->dtype), t->nbytes, (unsigned long long)(e - b));
    *begin = b;
    return AHA_OK;
}

/* Parse the image of shard si (base/len already set) and append its tensors to f. */
static aha_status parse_shard(aha_st_file *f, int si, aha_err *err)
{
    st_shard *sh = &f->shards[si];
    const char *path = sh->path;
    if (sh->len < 8)
        return aha_errf(err, AHA_EFORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                        path, sh->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | sh->base[i];
    if (hlen > AHA_ST_MAX_HEADER)
        return aha_errf(err, AHA_EFORMAT, "%s: header length %llu is over the limit of %d bytes", path,
                        (unsigned long long)hlen, AHA_ST_MAX_HEADER);
    if (hlen > sh->len - 8)
        return aha_errf(err, AHA_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                        path, (unsigned long long)hlen, sh->len);
    const char *h = (const char *)sh->base + 8;
    sh->data = sh->base + 8 + hlen;
    sh->data_len = sh->len - 8 - (size_t)hlen;
    if (hlen == 0 || h[0] != '{')
        return aha_errf(err, AHA_EFORMAT, "%s: header does not start with '{'", path);

    json_error_t jerr;
    json_t *root = json_loadb(h, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_duplicate_key) {
            char key[200];
            dup_key_near(h, (size_t)hlen, (size_t)jerr.position, key, sizeof key);
            return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': duplicate name in the header", path, key);
        }
        return aha_errf(err, AHA_EFORMAT, "%s: header is not valid JSON: %s (byte %d)", path, jerr.text,
                        jerr.position);
    }
    aha_status st = AHA_OK;
    st_range *ranges = NULL;
    int first = f->n;
    if (!json_is_object(root)) {
        st = aha_errf(err, AHA_EFORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    size_t nkeys = json_object_size(root);
    if (nkeys > AHA_ST_MAX_TENSORS + 1) {
        st = aha_errf(err, AHA_EFORMAT, "%s: %zu header entries is over the limit of %d tensors", path,
                      nkeys, AHA_ST_MAX_TENSORS);
        goto done;
    }
    if (f->n + (long)nkeys > AHA_ST_MAX_TENSORS + 1L) {
        st = aha_errf(err, AHA_EFORMAT, "%s: the shards hold more than %d tensors", path, AHA_ST_MAX_TENSORS);
        goto done;
    }
    ranges = malloc(sizeof *ranges * (nkeys ? nkeys : 1));
    if (!ranges) {
        st = aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    int nr = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                st = aha_errf(err, AHA_EFORMAT, "%s: __metadata__ is not a JSON object", path);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv)
            {
                char nb[160];
                if (!json_is_string(mv)) {
                    st = aha_errf(err, AHA_EFORMAT, "%s: __metadata__ value of '%s' is not a string", path,
                                  msg_name(mk, nb, sizeof nb));
                    goto done;
                }
                if (si != 0) continue; /* the first shard's metadata speaks for the set */
                char **k2 = realloc(f->meta_keys, sizeof *k2 * (size_t)(f->nmeta + 1));
                if (k2) f->meta_keys = k2;
                char **v2 = realloc(f->meta_vals, sizeof *v2 * (size_t)(f->nmeta + 1));
                if (v2) f->meta_vals = v2;
                if (!k2 || !v2) {
                    st = aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
                    goto done;
                }
                f->meta_keys[f->nmeta] = strdup(mk);
                f->meta_vals[f->nmeta] = strdup(json_string_value(mv));
                f->nmeta++;
                if (!f->meta_keys[f->nmeta - 1] || !f->meta_vals[f->nmeta - 1]) {
                    st = aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
                    goto done;
                }
            }
            continue;
        }
        size_t klen = strlen(key);
        if (klen == 0) {
            st = aha_errf(err, AHA_EFORMAT, "%s: a tensor has an empty name", path);
            goto done;
        }
        if (klen > AHA_ST_MAX_NAME) {
            char nb[160];
            st = aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': name of %zu bytes is too long", path,
                          msg_name(key, nb, sizeof nb), klen);
            goto done;
        }
        if (!aha__utf8_valid(key, klen)) { /* jansson checks this too; names reach logs */
            char nb[160];
            st = aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': name is not valid UTF-8", path,
                          msg_name(key, nb, sizeof nb));
            goto done;
        }
        aha_st_tensor t = {0};
        uint64_t begin = 0;
        st = parse_entry(path, key, val, sh->data_len, &t, &begin, err);
        if (st != AHA_OK) goto done;
        t.data = sh->data + begin;
        t.shard = si;
        t.name = strdup(key);
        if (!t.name) {
            st = aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        st = push_tensor(f, &t, err);
        if (st != AHA_OK) {
            free(t.name);
            goto done;
        }
        ranges[nr].begin = begin;
        ranges[nr].end = begin + t.nbytes;
        ranges[nr].idx = f->n - 1;
        nr++;
    }
    /* the tensors must tile the data area: sort by offsets and walk */
    qsort(ranges, (size_t)nr, sizeof *ranges, range_cmp);
    uint64_t pos = 0;
    for (int i = 0; i < nr; i++) {
        char nb[160], nb2[160];
        const char *nm = msg_name(f->tensors[ranges[i].idx].name, nb, sizeof nb);
        if (ranges[i].begin < pos) {
            st = aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': data [%llu, %llu] overlaps tensor '%s'", path,
                          nm, (unsigned long long)ranges[i].begin, (unsigned long long)ranges[i].end,
                          msg_name(f->tensors[ranges[i - 1].idx].name, nb2, sizeof nb2));
            goto done;
        }
        if (ranges[i].begin > pos) {
            st = aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': %llu unused bytes before its data at %llu",
                          path, nm, (unsigned long long)(ranges[i].begin - pos),
                          (unsigned long long)ranges[i].begin);
            goto done;
        }
        pos = ranges[i].end;
    }
    if (pos != sh->data_len) {
        st = aha_errf(err, AHA_EFORMAT, "%s: %llu bytes after the last tensor are not described by the header",
                      path, (unsigned long long)(sh->data_len - pos));
        goto done;
    }
done:
    if (st != AHA_OK) {
        /* drop this shard's partial tensors so the caller frees a consistent table */
        for (int i = first; i < f->n; i++) free(f->tensors[i].name);
        f->n = first;
    }
    free(ranges);
    json_decref(root);
    return st;
}

/* Sort by name and refuse duplicates (within a shard jansson already refused them). */
static aha_status finish_table(aha_st_file *f, aha_err *err)
{
    if (f->n > 1) qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, tensor_name_cmp);
    for (int i = 1; i < f->n; i++) {
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            char nb[160];
            return aha_errf(err, AHA_EFORMAT, "tensor '%s' is in both %s and %s",
                            msg_name(f->tensors[i].name, nb, sizeof nb), f->shards[f->tensors[i - 1].shard].path,
                            f->shards[f->tensors[i].shard].path);
        }
    }
    return AHA_OK;
}

static aha_status map_shard(aha_st_file *f, int si, aha_err *err)
{
    st_shard *sh = &f->shards[si];
    int fd = open(sh->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return aha_errf(err, errno == ENOENT ? AHA_ENOTFOUND : AHA_EIO, "%s: %s", sh->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return aha_errf(err, AHA_EIO, "%s: not a regular file", sh->path);
    }
    sh->len = (size_t)sb.st_size;
    if (sh->len == 0) {
        close(fd);
        sh->base = (const uint8_t *)"";
        return AHA_OK; /* parse_shard reports the empty file */
    }
    void *m = mmap(NULL, sh->len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return aha_errf(err, AHA_EIO, "%s: mmap: %s", sh->path, strerror(e));
    sh->map = m;
    sh->map_len = sh->len;
    sh->base = m;
    return AHA_OK;
}

static aha_status new_file(const char *path, aha_st_file **out, aha_err *err)
{
    aha_st_file *f = calloc(1, sizeof *f);
    if (!f) return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
    f->path = strdup(path);
    if (!f->path) {
        free(f);
        return aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
    }
    *out = f;
    return AHA_OK;
}

aha_status aha_st_open_memory(const void *buf, size_t len, const char *name, aha_st_file **out,
                              aha_err *err)
{
    *out = NULL;
    if (!name) name = "<memory>";
    aha_st_file *f;
    AHA_TRY(new_file(name, &f, err));
    int si;
    aha_status st = add_shard(f, name, &si, err);
    if (st == AHA_OK) {
        f->shards[si].base = len ? buf : (const uint8_t *)"";
        f->shards[si].len = len;
        st = parse_shard(f, si, err);
    }
    if (st == AHA_OK) st = finish_table(f, err);
    if (st != AHA_OK) {
        file_free(f);
        return st;
    }
    *out = f;
    return AHA_OK;
}

static aha_status open_single(const char *path, aha_st_file **out, aha_err *err)
{
    aha_st_file *f;
    AHA_TRY(new_file(path, &f, err));
    int si;
    aha_status st = add_shard(f, path, &si, err);
    if (st == AHA_OK) st = map_shard(f, si, err);
    if (st == AHA_OK) st = parse_shard(f, si, err);
    if (st == AHA_OK) st = finish_table(f, err);
    if (st != AHA_OK) {
        file_free(f);
        return st;
    }
    *out = f;
    return AHA_OK;
}

static int cstr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard name from an index must be a plain file name in the index's directory. */
static bool shard_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255 || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    return aha__utf8_valid(s, n);
}

static aha_status open_index(const char *path, aha_st_file **out, aha_err *err)
{
    char *text = NULL;
    size_t tlen = 0;
    AHA_TRY(aha_read_file(path, AHA_ST_MAX_HEADER, &text, &tlen, err));
    json_error_t jerr;
    json_t *root = json_loadb(text, tlen, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return aha_errf(err, AHA_EFORMAT, "%s: not valid JSON: %s (line %d)", path, jerr.text, jerr.line);
    aha_st_file *f = NULL;
    const char **names = NULL;
    aha_status st = AHA_OK;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wm)) {
        st = aha_errf(err, AHA_EFORMAT, "%s: weight_map missing or not an object", path);
        goto done;
    }
    size_t nw = json_object_size(wm);
    if (nw == 0 || nw > AHA_ST_MAX_TENSORS) {
        st = aha_errf(err, AHA_EFORMAT, "%s: weight_map lists %zu tensors (1..%d expected)", path, nw,
                      AHA_ST_MAX_TENSORS);
        goto done;
    }
    /* distinct shard files, sorted so the shard numbering does not depend on key order */
    names = malloc(sizeof *names * nw);
    if (!names) {
        st = aha_errf(err, AHA_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t nn = 0;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val)
    {
        char nb[160];
        if (!json_is_string(val) || !shard_name_ok(json_string_value(val))) {
            st = aha_errf(err, AHA_EFORMAT, "%s: tensor '%s': shard is not a plain file name", path,
                          msg_name(key, nb, sizeof nb));
            goto done;
        }
        names[nn++] = json_string_value(val);
    }
    qsort(names, nn, sizeof *names, cstr_cmp);
    size_t nu = 0;
    for (size_t i = 0; i < nn; i++)
        if (nu == 0 || strcmp(names[nu - 1], names[i]) != 0) names[nu++] = names[i];
    if (nu > AHA_ST_MAX_SHARDS) {
        st = aha_errf(err, AHA_EFORMAT, "%s: %zu shard files is over the limit of %d", path, nu,
                      AHA_ST_MAX_SHARDS);
        goto done;
    }
    st = new_file(path, &f, err);
    if (st != AHA_OK) goto done;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    for (size_t i = 0; i < nu; i++) {
        char sp[4096];
        int si;
        if ((st = aha_path_join(sp, sizeof sp, dir, names[i], err)) != AHA_OK) goto done;
        if ((st = add_shard(f, sp, &si, err)) != AHA_OK) goto done;
        if ((st = map_shard(f, si, err)) != AHA_OK) {
            aha_err_prefix(err, st, "%s names shard %s", path, names[i]);
            goto done;
        }
        if ((st = parse_shard(f, si, err)) != AHA_OK) goto done;
    }
    if ((st = finish_table(f, err)) != AHA_OK) goto done;
    json_object_foreach(wm, key, val)
    {
        char nb[160];
        const aha_st_tensor *t = aha_st_find(f, key);
        const char *want = json_string_value(val);
        const char *have = t ? strrchr(f->shards[t->shard].path, '/') : NULL;
        have = have ? have + 1 : (t ? f->shards[t->shard].path : NULL);
        if (!t || strcmp(have, want) != 0) {
            st = aha_errf(err, AHA_EFORMAT, "%s: tensor '%s' is listed in shard %s, which does not hold it",
                          path, msg_name(key, nb, sizeof nb), want);
            goto done;
        }
    }
done:
    free(names);
    json_decref(root);
    if (st != AHA_OK) {
        file_free(f);
        return st;
    }
    *out = f;
    return AHA_OK;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

aha_status aha_st_open(const char *path, aha_st_file **out, aha_err *err)
{
    *out = NULL;
    if (!path || !*path) return aha_errf(err, AHA_EINVAL, "empty safetensors path");
    if (aha_path_is_dir(path)) {
        char p[4096];
        AHA_TRY(aha_path_join(p, sizeof p, path, "model.safetensors.index.json", err));
        if (aha_path_exists(p)) return open_index(p, out, err);
        AHA_TRY(aha_path_join(p, sizeof p, path, "model.safetensors", err));
        if (!aha_path_exists(p))
            return aha_errf(err, AHA_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json",
                            path);
        return open_single(p, out, err);
    }
    if (ends_with(path, ".json")) return open_index(path, out, err);
    return open_single(path, out, err);
}

aha_status aha_st_to_f32(const aha_st_tensor *t, float *dst, int64_t n, aha_err *err)
{
    char nb[160];
    if (n != t->numel)
        return aha_errf(err, AHA_EINVAL, "tensor '%s': %lld elements, destination holds %lld",
                        msg_name(t->name, nb, sizeof nb), (long long)t->numel, (long long)n);
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case AHA_DT_F32:
        if (n) memcpy(dst, src, (size_t)n * 4);
        return AHA_OK;
    case AHA_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = aha_bf16_to_f32(h);
        }
        return AHA_OK;
    case AHA_DT_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = aha_f16_to_f32(h);
        }
        return AHA_OK;
    case AHA_DT_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return AHA_OK;
    default:
        return aha_errf(err, AHA_EFORMAT, "tensor '%s': dtype %s is not a floating type",
                        msg_name(t->name, nb, sizeof nb), aha_dtype_name(t->dtype));
    }
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

aha_status aha_st_load_f32(const aha_st_file *f, const char *name, int ndim, const int64_t *shape,
                           float *dst, aha_err *err)
{
    const aha_st_tensor *t = aha_st_find(f, name);
    if (!t) return aha_errf(err, AHA_ENOTFOUND, "%s: tensor '%s' not found", f->path, name);
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char a[160], b[160];
        fmt_shape(a, sizeof a, t->ndim, t->shape);
        fmt_shape(b, sizeof b, ndim, shape);
        return aha_errf(err, AHA_EFORMAT, "%s: tensor '%s' has shape %s, expected %s",
                        f->shards[t->shard].path, name, a, b);
    }
    aha_status st = aha_st_to_f32(t, dst, t->numel, err);
    if (st != AHA_OK) return aha_err_prefix(err, st, "%s", f->shards[t->shard].path);
    return AHA_OK;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    char *name;
    aha_dtype dt;
    int ndim;
    int64_t shape[AHA_ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data; /* raw bytes in dt */
    const float *f32; /* or f32 to convert to dt at save */
} st_went;

struct aha_st_writer {
    st_went *e;
    int n, cap;
    char **mk, **mv;
    int nmeta;
};

aha_st_writer *aha_st_writer_new(void)
{
    aha_st_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    if (aha_st_writer_set_metadata(w, "format", "pt", NULL) != AHA_OK) {
        aha_st_writer_free(w);
        return NULL;
    }
    return w;
}

void aha_st_writer_free(aha_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->mk);
    free(w->mv);
    free(w);
}

aha_status aha_st_writer_set_metadata(aha_st_writer *w, const char *key, const char *value, aha_err *err)
{
    if (!key || !*key || !aha__utf8_valid(key, strlen(key)))
        return aha_errf(err, AHA_EINVAL, "safetensors metadata key must be non-empty UTF-8");
    if (value && !aha__utf8_valid(value, strlen(value)))
        return aha_errf(err, AHA_EINVAL, "safetensors metadata '%s': value is not UTF-8", key);
    for (int i = 0; i < w->nmeta; i++) {
        if (strcmp(w->mk[i], key) != 0) continue;
        if (!value) { /* remove */
            free(w->mk[i]);
            free(w->mv[i]);
            w->mk[i] = w->mk[w->nmeta - 1];
            w->mv[i] = w->mv[w->nmeta - 1];
            w->nmeta--;
            return AHA_OK;
        }
        char *v = strdup(value);
        if (!v) return aha_errf(err, AHA_ENOMEM, "out of memory");
        free(w->mv[i]);
        w->mv[i] = v;
        return AHA_OK;
    }
    if (!value) return AHA_OK;
    char **k2 = realloc(w->mk, sizeof *k2 * (size_t)(w->nmeta + 1));
    if (k2) w->mk = k2;
    char **v2 = realloc(w->mv, sizeof *v2 * (size_t)(w->nmeta + 1));
    if (v2) w->mv = v2;
    char *k = strdup(key), *v = strdup(value);
    if (!k2 || !v2 || !k || !v) {
        free(k);
        free(v);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    w->mk[w->nmeta] = k;
    w->mv[w->nmeta] = v;
    w->nmeta++;
    return AHA_OK;
}

static aha_status writer_push(aha_st_writer *w, const char *name, aha_dtype dt, int ndim,
                              const int64_t *shape, const void *data, const float *f32, aha_err *err)
{
    if (!name || !*name) return aha_errf(err, AHA_EINVAL, "safetensors writer: empty tensor name");
    size_t nl = strlen(name);
    if (nl > AHA_ST_MAX_NAME || !aha__utf8_valid(name, nl))
        return aha_errf(err, AHA_EINVAL, "safetensors writer: tensor name '%.80s' is too long or not UTF-8",
                        name);
    if ((unsigned)dt >= AHA_DT_COUNT)
        return aha_errf(err, AHA_EINVAL, "safetensors writer: tensor '%s': bad dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > AHA_ST_MAX_DIMS || (ndim > 0 && !shape))
        return aha_errf(err, AHA_EINVAL, "safetensors writer: tensor '%s': %d dims", name, ndim);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] > (int64_t)AHA_ST_MAX_DIM)
            return aha_errf(err, AHA_EINVAL, "safetensors writer: tensor '%s': bad dim %lld", name,
                            (long long)shape[i]);
        if (shape[i] != 0 && numel > INT64_MAX / shape[i] / 8)
            return aha_errf(err, AHA_EINVAL, "safetensors writer: tensor '%s': too many elements", name);
        numel *= shape[i];
    }
    if (numel > 0 && !data && !f32)
        return aha_errf(err, AHA_EINVAL, "safetensors writer: tensor '%s': no data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return aha_errf(err, AHA_EEXIST, "safetensors writer: tensor '%s' added twice", name);
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        st_went *p = realloc(w->e, sizeof *p * (size_t)cap);
        if (!p) return aha_errf(err, AHA_ENOMEM, "out of memory");
        w->e = p;
        w->cap = cap;
    }
    st_went *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return aha_errf(err, AHA_ENOMEM, "out of memory");
    e->dt = dt;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->numel = numel;
    e->nbytes = (size_t)numel * aha_dtype_size(dt);
    e->data = data;
    e->f32 = f32;
    w->n++;
    return AHA_OK;
}

aha_status aha_st_writer_add(aha_st_writer *w, const char *name, aha_dtype dt, int ndim,
                             const int64_t *shape, const void *data, aha_err *err)
{
    return writer_push(w, name, dt, ndim, shape, data, NULL, err);
}

aha_status aha_st_writer_add_f32_as(aha_st_writer *w, const char *name, aha_dtype dt, int ndim,
                                    const int64_t *shape, const float *data, aha_err *err)
{
    if (dt != AHA_DT_F32 && dt != AHA_DT_BF16 && dt != AHA_DT_F16)
        return aha_errf(err, AHA_EINVAL, "safetensors writer: tensor '%s': f32 can be stored as F32, BF16 or F16, not %s",
                        name ? name : "", aha_dtype_name(dt));
    if (dt == AHA_DT_F32) return writer_push(w, name, dt, ndim, shape, data, NULL, err);
    return writer_push(w, name, dt, ndim, shape, NULL, data, err);
}

/* the reference layout: larger dtypes first, then by name */
static int went_layout_cmp(const void *a, const void *b)
{
    const st_went *x = *(const st_went *const *)a, *y = *(const st_went *const *)b;
    int rx = dtype_info[x->dt].rank, ry = dtype_info[y->dt].rank;
    if (rx != ry) return ry - rx;
    return strcmp(x->name, y->name);
}

static int went_name_cmp(const void *a, const void *b)
{
    const st_went *x = *(const st_went *const *)a, *y = *(const st_went *const *)b;
    return strcmp(x->name, y->name);
}

static int meta_idx_cmp(const void *a, const void *b, void *ctx)
{
    char **keys = ctx;
    return strcmp(keys[*(const int *)a], keys[*(const int *)b]);
}

static aha_status write_all(int fd, const void *buf, size_t n, const char *path, aha_err *err)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            return aha_errf(err, e == ENOSPC ? AHA_ELIMIT : AHA_EIO, "write %s: %s", path, strerror(e));
        }
        p += k;
        n -= (size_t)k;
    }
    return AHA_OK;
}

static aha_status write_tensor_data(int fd, const st_went *e, const char *path, aha_err *err)
{
    if (e->nbytes == 0) return AHA_OK;
    if (!e->f32) return write_all(fd, e->data, e->nbytes, path, err);
    enum { CHUNK = 1 << 15 };
    uint16_t *buf = malloc(sizeof *buf * CHUNK);
    if (!buf) return aha_errf(err, AHA_ENOMEM, "out of memory");
    aha_status st = AHA_OK;
    for (int64_t i = 0; i < e->numel && st == AHA_OK; i += CHUNK) {
        int64_t k = e->numel - i < CHUNK ? e->numel - i : CHUNK;
        for (int64_t j = 0; j < k; j++)
            buf[j] = e->dt == AHA_DT_BF16 ? aha_f32_to_bf16(e->f32[i + j]) : aha_f32_to_f16(e->f32[i + j]);
        st = write_all(fd, buf, (size_t)k * 2, path, err);
    }
    free(buf);
    return st;
}

/* Write the entries ents[0..n) (any order) as one file at path, atomically. */
static aha_status save_entries(const aha_st_writer *w, st_went **ents, int n, const char *path, aha_err *err)
{
    qsort(ents, (size_t)n, sizeof *ents, went_layout_cmp);
    sbuf h = {0};
    sb_put(&h, "{", 1);
    bool first = true;
    if (w->nmeta > 0) {
        int *ord = malloc(sizeof *ord * (size_t)w->nmeta);
        if (!ord) return aha_errf(err, AHA_ENOMEM, "out of memory");
        for (int i = 0; i < w->nmeta; i++) ord[i] = i;
        qsort_r(ord, (size_t)w->nmeta, sizeof *ord, meta_idx_cmp, w->mk);
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_put(&h, ",", 1);
            sb_json_str(&h, w->mk[ord[i]]);
            sb_put(&h, ":", 1);
            sb_json_str(&h, w->mv[ord[i]]);
        }
        sb_put(&h, "}", 1);
        free(ord);
        first = false;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const st_went *e = ents[i];
        if (!first) sb_put(&h, ",", 1);
        first = false;
        sb_json_str(&h, e->name);
        sb_str(&h, ":{\"dtype\":");
        sb_json_str(&h, aha_dtype_name(e->dt));
        sb_str(&h, ",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) sb_fmt(&h, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        sb_fmt(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
               (unsigned long long)(off + e->nbytes));
        off += e->nbytes;
    }
    sb_put(&h, "}", 1);
    while (!h.oom && h.n % 8 != 0) sb_put(&h, " ", 1);
    if (h.oom) {
        free(h.p);
        return aha_errf(err, AHA_ENOMEM, "%s: out of memory for the header", path);
    }
    if (h.n > AHA_ST_MAX_HEADER) {
        free(h.p);
        return aha_errf(err, AHA_ELIMIT, "%s: header of %zu bytes is over the limit", path, h.n);
    }

    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(h.p);
        return aha_errf(err, AHA_EINVAL, "path too long: %s", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(h.p);
        return aha_errf(err, AHA_EIO, "%s: %s", tmp, strerror(errno));
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    aha_status st = write_all(fd, len8, 8, tmp, err);
    if (st == AHA_OK) st = write_all(fd, h.p, h.n, tmp, err);
    free(h.p);
    for (int i = 0; i < n && st == AHA_OK; i++) st = write_tensor_data(fd, ents[i], tmp, err);
    if (st == AHA_OK && fsync(fd) != 0) st = aha_errf(err, AHA_EIO, "fsync %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == AHA_OK) st = aha_errf(err, AHA_EIO, "close %s: %s", tmp, strerror(errno));
    if (st == AHA_OK && rename(tmp, path) != 0)
        st = aha_errf(err, AHA_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno));
    if (st != AHA_OK) {
        unlink(tmp);
        return st;
    }
    return aha_fsync_dir_of(path, err);
}

aha_status aha_st_writer_save(aha_st_writer *w, const char *path, aha_err *err)
{
    st_went **ents = malloc(sizeof *ents * (size_t)(w->n ? w->n : 1));
    if (!ents) return aha_errf(err, AHA_ENOMEM, "out of memory");
    for (int i = 0; i < w->n; i++) ents[i] = &w->e[i];
    aha_status st = save_entries(w, ents, w->n, path, err);
    free(ents);
    return st;
}

/* model-00001-of-00003.safetensors and the like, as transformers names shards */
static bool is_shard_name(const char *s)
{
    unsigned a, b;
    int end = 0;
    return sscanf(s, "model-%5u-of-%5u.safetensors%n", &a, &b, &end) == 2 && s[end] == '\0' &&
           strlen(s) == strlen("model-00001-of-00001.safetensors");
}

/* Remove shard files of an earlier save that the new one does not use (keep[0..nkeep)). */
static void remove_stale_shards(const char *dir, char **keep, int nkeep)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_shard_name(de->d_name)) continue;
        bool kept = false;
        for (int i = 0; i < nkeep && !kept; i++) kept = strcmp(keep[i], de->d_name) == 0;
        if (kept) continue;
        char p[4096];
        if (aha_path_join(p, sizeof p, dir, de->d_name, NULL) == AHA_OK) unlink(p);
    }
    closedir(d);
}

aha_status aha_st_writer_save_sharded(aha_st_writer *w, const char *dir, size_t max_shard_bytes,
                                      aha_err *err)
{
    AHA_TRY(aha_mkdirs(dir, err));
    if (max_shard_bytes == 0) max_shard_bytes = SIZE_MAX;
    int n = w->n;
    st_went **ents = malloc(sizeof *ents * (size_t)(n ? n : 1));
    int *shard_of = malloc(sizeof *shard_of * (size_t)(n ? n : 1));
    if (!ents || !shard_of) {
        free(ents);
        free(shard_of);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) ents[i] = &w->e[i];
    qsort(ents, (size_t)n, sizeof *ents, went_name_cmp);
    /* greedy split in name order; a tensor larger than the limit gets a shard of its own */
    int nshards = 1;
    size_t cur = 0;
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (cur > 0 && (cur >= max_shard_bytes || ents[i]->nbytes > max_shard_bytes - cur)) {
            nshards++;
            cur = 0;
        }
        cur += ents[i]->nbytes;
        shard_of[i] = nshards - 1;
        total += ents[i]->nbytes;
    }
    aha_status st = AHA_OK;
    char path[4096];
    char index_path[4096];
    if ((st = aha_path_join(index_path, sizeof index_path, dir, "model.safetensors.index.json", err)) != AHA_OK)
        goto done;
    if (nshards == 1) {
        if ((st = aha_path_join(path, sizeof path, dir, "model.safetensors", err)) != AHA_OK) goto done;
        if ((st = save_entries(w, ents, n, path, err)) != AHA_OK) goto done;
        /* an index left from an earlier sharded save would win over the new file */
        unlink(index_path);
        remove_stale_shards(dir, NULL, 0);
        goto done;
    }
    if (nshards > 99999) {
        st = aha_errf(err, AHA_ELIMIT, "%s: %d shards is too many; raise the shard size", dir, nshards);
        goto done;
    }
    char **fnames = calloc((size_t)nshards, sizeof *fnames);
    st_went **sub = malloc(sizeof *sub * (size_t)n);
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    if (!fnames || !sub || !root || !meta || !wm) {
        st = aha_errf(err, AHA_ENOMEM, "out of memory");
    } else {
        json_object_set_new(root, "metadata", meta);
        json_object_set_new(root, "weight_map", wm);
        meta = wm = NULL;
        json_object_set_new(json_object_get(root, "metadata"), "total_size", json_integer((json_int_t)total));
    }
    for (int s = 0; s < nshards && st == AHA_OK; s++) {
        fnames[s] = malloc(64);
        if (!fnames[s]) {
            st = aha_errf(err, AHA_ENOMEM, "out of memory");
            break;
        }
        snprintf(fnames[s], 64, "model-%05d-of-%05d.safetensors", s + 1, nshards);
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (shard_of[i] != s) continue;
            sub[k++] = ents[i];
            json_object_set_new(json_object_get(root, "weight_map"), ents[i]->name, json_string(fnames[s]));
        }
        if ((st = aha_path_join(path, sizeof path, dir, fnames[s], err)) != AHA_OK) break;
        st = save_entries(w, sub, k, path, err);
    }
    if (st == AHA_OK) {
        /* the index is written last: it is what makes the new shards the checkpoint */
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (!text) {
            st = aha_errf(err, AHA_ENOMEM, "out of memory");
        } else {
            size_t tl = strlen(text);
            char *t2 = realloc(text, tl + 2);
            if (t2) {
                text = t2;
                text[tl++] = '\n';
                text[tl] = '\0';
            }
            st = aha_write_file_atomic(index_path, text, tl, err);
            free(text);
        }
    }
    if (st == AHA_OK) {
        if ((st = aha_path_join(path, sizeof path, dir, "model.safetensors", err)) == AHA_OK) unlink(path);
        remove_stale_shards(dir, fnames, nshards);
    }
    if (fnames)
        for (int s = 0; s < nshards; s++) free(fnames[s]);
    free(fnames);
    free(sub);
    json_decref(root);
    json_decref(meta);
    json_decref(wm);
done:
    free(ents);
    free(shard_of);
    return st;
}
