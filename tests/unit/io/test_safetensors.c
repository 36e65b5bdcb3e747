/* test_safetensors: the reader on the PyTorch fixtures (names, shapes, dtypes from config
 * rules; written back byte-identical to what Python's safetensors wrote), write -> read round
 * trips for every dtype, sharded save -> open, and bf16/f16 conversions against references
 * computed here in double precision. Malformed files are in test_safetensors_bad. */
#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "base/rng.h"
#include "io/config.h"
#include "io/safetensors.h"

static char tmpdir[256];

static int64_t numel_of(int nd, const int64_t *s)
{
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= s[i];
    return n;
}

static void expect_tensor(const aha_st_file *f, const char *name, aha_dtype dt, int nd, int64_t d0, int64_t d1)
{
    const aha_st_tensor *t = aha_st_find(f, name);
    CHECK(t != NULL, "tensor %s present", name);
    if (!t) return;
    CHECK(t->dtype == dt, "%s dtype %s", name, aha_dtype_name(t->dtype));
    CHECK(t->ndim == nd, "%s ndim %d", name, t->ndim);
    if (nd >= 1) CHECK(t->shape[0] == d0, "%s shape[0] %lld want %lld", name, (long long)t->shape[0], (long long)d0);
    if (nd >= 2) CHECK(t->shape[1] == d1, "%s shape[1] %lld want %lld", name, (long long)t->shape[1], (long long)d1);
    CHECK(t->nbytes == (size_t)numel_of(t->ndim, t->shape) * aha_dtype_size(dt), "%s nbytes", name);
}

/* The checkpoint's tensor table follows from its config by the transformers naming rules. */
static void check_model_fixture(const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", th_fixtures(), name);
    aha_err err = {0};
    aha_model_config c;
    CHECK(aha_config_load(dir, &c, &err) == AHA_OK, "%s config: %s", name, err.msg);
    aha_st_file *f = NULL;
    CHECK(aha_st_open(dir, &f, &err) == AHA_OK, "open %s: %s", dir, err.msg);
    if (!f) return;
    int H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, D = c.head_dim;
    int per_layer = 2 + 4 + 3 + (c.attention_bias ? 3 : 0) + (c.o_bias ? 1 : 0) + (c.qk_norm ? 2 : 0);
    int want = 2 + c.num_layers * per_layer + (c.tie_word_embeddings ? 0 : 1);
    CHECK(aha_st_count(f) == want, "%s: %d tensors, %d expected", name, aha_st_count(f), want);
    CHECK(aha_st_shard_count(f) == 1, "single file");
    CHECK(aha_st_metadata(f, "format") && strcmp(aha_st_metadata(f, "format"), "pt") == 0, "format pt");
    expect_tensor(f, "model.embed_tokens.weight", AHA_DT_F32, 2, V, H);
    expect_tensor(f, "model.norm.weight", AHA_DT_F32, 1, H, 0);
    if (!c.tie_word_embeddings)
        expect_tensor(f, "lm_head.weight", AHA_DT_F32, 2, V, H);
    else
        CHECK(aha_st_find(f, "lm_head.weight") == NULL, "tied: no lm_head");
    for (int l = 0; l < c.num_layers; l++) {
        char n[256];
#define T(suffix, nd, a, b)                                              \
    snprintf(n, sizeof n, "model.layers.%d." suffix, l);                 \
    expect_tensor(f, n, AHA_DT_F32, nd, a, b)
        T("input_layernorm.weight", 1, H, 0);
        T("post_attention_layernorm.weight", 1, H, 0);
        T("self_attn.q_proj.weight", 2, c.num_heads * D, H);
        T("self_attn.k_proj.weight", 2, c.num_kv_heads * D, H);
        T("self_attn.v_proj.weight", 2, c.num_kv_heads * D, H);
        T("self_attn.o_proj.weight", 2, H, c.num_heads * D);
        T("mlp.gate_proj.weight", 2, I, H);
        T("mlp.up_proj.weight", 2, I, H);
        T("mlp.down_proj.weight", 2, H, I);
        if (c.qk_norm) {
            T("self_attn.q_norm.weight", 1, D, 0);
            T("self_attn.k_norm.weight", 1, D, 0);
        }
        if (c.o_bias) {
            T("self_attn.o_proj.bias", 1, H, 0);
        }
        if (c.attention_bias) {
            T("self_attn.q_proj.bias", 1, c.num_heads * D, 0);
            T("self_attn.k_proj.bias", 1, c.num_kv_heads * D, 0);
            T("self_attn.v_proj.bias", 1, c.num_kv_heads * D, 0);
        }
#undef T
    }
    /* names come back sorted; the data pointers agree with an independent read of the file */
    for (int i = 1; i < aha_st_count(f); i++)
        CHECK(strcmp(aha_st_at(f, i - 1)->name, aha_st_at(f, i)->name) < 0, "sorted at %d", i);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char *raw = NULL;
    size_t rawlen = 0;
    CHECK(aha_read_file(path, 1 << 26, &raw, &rawlen, &err) == AHA_OK, "read raw");
    if (raw) {
        uint64_t hl;
        memcpy(&hl, raw, 8);
        const aha_st_tensor *t = aha_st_find(f, "model.norm.weight");
        json_t *h = json_loadb(raw + 8, hl, 0, NULL);
        json_t *off = json_object_get(json_object_get(h, "model.norm.weight"), "data_offsets");
        size_t b = (size_t)json_integer_value(json_array_get(off, 0));
        CHECK(t && memcmp(t->data, raw + 8 + hl + b, t->nbytes) == 0, "norm data matches raw read");
        json_decref(h);
        free(raw);
    }
    /* load_f32 with the right shape, and refusals naming the tensor */
    float *emb = malloc(sizeof(float) * (size_t)V * H);
    int64_t sh[2] = {V, H};
    CHECK(aha_st_load_f32(f, "model.embed_tokens.weight", 2, sh, emb, &err) == AHA_OK, "load emb: %s", err.msg);
    double s2 = 0;
    for (long i = 0; i < (long)V * H; i++) s2 += (double)emb[i] * emb[i];
    CHECK(s2 > 0 && isfinite(s2), "embedding is finite and non-zero");
    int64_t bad[2] = {V, H + 1};
    CHECK(aha_st_load_f32(f, "model.embed_tokens.weight", 2, bad, emb, &err) == AHA_EFORMAT &&
              strstr(err.msg, "model.embed_tokens.weight") && strstr(err.msg, "model.safetensors"),
          "wrong shape refused: %s", err.msg);
    CHECK(aha_st_load_f32(f, "no.such.tensor", 2, sh, emb, &err) == AHA_ENOTFOUND && strstr(err.msg, "no.such.tensor"),
          "missing refused: %s", err.msg);
    free(emb);
    aha_st_close(f);
}

/* Reading a file and writing it back with the same metadata gives the same bytes: the writer
 * lays files out exactly as Python's safetensors (the fixtures' author) does. */
static void check_rewrite_identical(const char *dir, const char *rel)
{
    char path[2048], out[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    snprintf(out, sizeof out, "%s/rewrite.safetensors", tmpdir);
    aha_err err = {0};
    aha_st_file *f = NULL;
    CHECK(aha_st_open(path, &f, &err) == AHA_OK, "open %s: %s", rel, err.msg);
    if (!f) return;
    aha_st_writer *w = aha_st_writer_new();
    aha_st_writer_set_metadata(w, "format", NULL, &err);
    const char *fmt = aha_st_metadata(f, "format");
    if (fmt) aha_st_writer_set_metadata(w, "format", fmt, &err);
    for (int i = 0; i < aha_st_count(f); i++) {
        const aha_st_tensor *t = aha_st_at(f, i);
        CHECK(aha_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err) == AHA_OK, "add: %s", err.msg);
    }
    CHECK(aha_st_writer_save(w, out, &err) == AHA_OK, "save: %s", err.msg);
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    aha_read_file(path, 1 << 26, &a, &la, NULL);
    aha_read_file(out, 1 << 26, &b, &lb, NULL);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0, "%s rewritten byte-identical (%zu vs %zu bytes)", rel, la, lb);
    free(a);
    free(b);
    aha_st_writer_free(w);
    aha_st_close(f);
}

static double bf16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 7) & 0xff, m = h & 0x7f;
    double v = e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static double f16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* nearest of two candidates lo < hi (magnitudes), ties to the even bit pattern */
static uint16_t pick(double x, double lo_v, uint16_t lo, double hi_v, uint16_t hi)
{
    double dl = x - lo_v, dh = hi_v - x;
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1) ? hi : lo;
}

/* reference f32 -> bf16 for finite x >= 0: the two bf16 neighbours by truncation, chosen in
 * double (exact for these magnitudes); 2^128 stands for infinity, as IEEE overflow rounding does */
static uint16_t ref_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t lo = (uint16_t)(u >> 16);
    if ((uint32_t)lo << 16 == u) return lo;
    uint16_t hi = (uint16_t)(lo + 1);
    double hv = hi == 0x7f80 ? ldexp(1, 128) : bf16_value(hi);
    return pick((double)x, bf16_value(lo), lo, hv, hi);
}

static double f16_table[0x7c01];

/* reference f32 -> f16 for finite x >= 0: binary search of the table of all f16 magnitudes
 * (0x7c00 stands for 2^16, the overflow threshold's twin) */
static uint16_t ref_f16(float xf)
{
    double x = xf;
    if (x >= f16_table[0x7c00]) return 0x7c00;
    int lo = 0, hi = 0x7c00;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (f16_table[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    if (f16_table[lo] == x) return (uint16_t)lo;
    return pick(x, f16_table[lo], (uint16_t)lo, f16_table[hi], (uint16_t)hi);
}

static void check_conversions(void)
{
    /* widening: every pattern against the field formula */
    int bad_bf = 0, bad_f16 = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        int be = (h >> 7) & 0xff, fe = (h >> 10) & 0x1f;
        float b = aha_bf16_to_f32((uint16_t)h), f = aha_f16_to_f32((uint16_t)h);
        if (be == 0xff) {
            bad_bf += (h & 0x7f) ? !isnan(b) : !(isinf(b) && (signbit(b) != 0) == (h >> 15));
        } else {
            bad_bf += (double)b != bf16_value((uint16_t)h) || (signbit(b) != 0) != (h >> 15);
        }
        if (fe == 0x1f) {
            bad_f16 += (h & 0x3ff) ? !isnan(f) : !(isinf(f) && (signbit(f) != 0) == (h >> 15));
        } else {
            bad_f16 += (double)f != f16_value((uint16_t)h) || (signbit(f) != 0) != (h >> 15);
        }
    }
    CHECK(bad_bf == 0, "bf16 -> f32: %d patterns wrong", bad_bf);
    CHECK(bad_f16 == 0, "f16 -> f32: %d patterns wrong", bad_f16);

    for (int h = 0; h <= 0x7c00; h++) f16_table[h] = h == 0x7c00 ? 65536.0 : f16_value((uint16_t)h);

    /* narrowing: random patterns over all exponents, exact ties (midpoints), and edges */
    aha_rng rng;
    aha_rng_seed(&rng, 7, 0);
    int n = 0, wrong_bf = 0, wrong_f16 = 0;
    uint32_t first_bad_bf = 0, first_bad_f16 = 0;
    for (int i = 0; i < 400000; i++) {
        uint32_t u;
        if (i < 200000) {
            u = (uint32_t)aha_rng_u64(&rng);
        } else if (i < 300000) { /* concentrate on the f16 range, 2^-26 .. 2^17 */
            u = (uint32_t)aha_rng_u64(&rng) & 0x807fffffu;
            u |= (uint32_t)(101 + aha_rng_below(&rng, 43)) << 23;
        } else { /* bf16 midpoints and neighbours: low 16 bits 0x8000 +-1 */
            u = ((uint32_t)aha_rng_u64(&rng) & 0xffff0000u) | (uint32_t)(0x7fff + aha_rng_below(&rng, 3));
        }
        float x;
        memcpy(&x, &u, 4);
        if (isnan(x)) continue;
        float ax = fabsf(x);
        uint16_t sgn = (u >> 31) ? 0x8000 : 0;
        uint16_t rb = isinf(x) ? 0x7f80 : ref_bf16(ax);
        uint16_t rf = isinf(x) ? 0x7c00 : ref_f16(ax);
        if (aha_f32_to_bf16(x) != (uint16_t)(sgn | rb) && !wrong_bf++) first_bad_bf = u;
        if (aha_f32_to_f16(x) != (uint16_t)(sgn | rf) && !wrong_f16++) first_bad_f16 = u;
        n++;
    }
    /* every f16 midpoint (exactly representable in f32) and the subnormal/overflow edges */
    for (int h = 0; h < 0x7c00; h++) {
        float mid = (float)((f16_table[h] + f16_table[h + 1]) / 2);
        float xs[3] = {mid, nextafterf(mid, 0), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++) {
            uint32_t u;
            memcpy(&u, &xs[k], 4);
            if (aha_f32_to_f16(xs[k]) != ref_f16(xs[k]) && !wrong_f16++) first_bad_f16 = u;
            if (aha_f32_to_f16(-xs[k]) != (0x8000 | ref_f16(xs[k])) && !wrong_f16++) first_bad_f16 = u | 0x80000000u;
            n++;
        }
    }
    CHECK(wrong_bf == 0, "f32 -> bf16: %d of %d wrong, first 0x%08x", wrong_bf, n, first_bad_bf);
    CHECK(wrong_f16 == 0, "f32 -> f16: %d of %d wrong, first 0x%08x", wrong_f16, n, first_bad_f16);
    /* a few by hand, as a reader would check them */
    CHECK(aha_f32_to_bf16(1.0f) == 0x3f80, "bf16(1)");
    CHECK(aha_f32_to_f16(1.0f) == 0x3c00, "f16(1)");
    CHECK(aha_f32_to_f16(65504.0f) == 0x7bff && aha_f32_to_f16(65520.0f) == 0x7c00, "f16 overflow edge");
    CHECK(aha_f32_to_f16(0x1p-24f) == 0x0001 && aha_f32_to_f16(0x1p-25f) == 0x0000, "f16 subnormal edge");
    /* NaN stays NaN with its sign, quiet, in both directions */
    uint32_t nans[4] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u};
    for (int i = 0; i < 4; i++) {
        float x;
        memcpy(&x, &nans[i], 4);
        uint16_t b = aha_f32_to_bf16(x), h = aha_f32_to_f16(x);
        CHECK((b & 0x7f80) == 0x7f80 && (b & 0x7f) && (b >> 15) == (nans[i] >> 31), "bf16 NaN 0x%08x -> 0x%04x", nans[i], b);
        CHECK((h & 0x7c00) == 0x7c00 && (h & 0x3ff) && (h >> 15) == (nans[i] >> 31), "f16 NaN 0x%08x -> 0x%04x", nans[i], h);
        CHECK(isnan(aha_bf16_to_f32(b)) && isnan(aha_f16_to_f32(h)), "NaN widens to NaN");
    }
}

/* random tensors of every dtype, saved and read back bit-identically */
typedef struct {
    char name[64];
    aha_dtype dt;
    int nd;
    int64_t shape[4];
    uint8_t *bytes;
    size_t nbytes;
} rt_tensor;

static void fill_random(aha_rng *rng, rt_tensor *t)
{
    t->nbytes = (size_t)numel_of(t->nd, t->shape) * aha_dtype_size(t->dt);
    t->bytes = malloc(t->nbytes ? t->nbytes : 1);
    for (size_t i = 0; i < t->nbytes; i++) t->bytes[i] = (uint8_t)aha_rng_u64(rng);
}

static void check_file_has(const aha_st_file *f, rt_tensor *ts, int n, const char *what)
{
    CHECK(aha_st_count(f) == n, "%s: %d tensors, want %d", what, aha_st_count(f), n);
    for (int i = 0; i < n; i++) {
        const aha_st_tensor *t = aha_st_find(f, ts[i].name);
        CHECK(t != NULL, "%s: %s present", what, ts[i].name);
        if (!t) continue;
        bool same = t->dtype == ts[i].dt && t->ndim == ts[i].nd && t->nbytes == ts[i].nbytes;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == ts[i].shape[d];
        CHECK(same, "%s: %s dtype/shape", what, ts[i].name);
        CHECK(same && memcmp(t->data, ts[i].bytes, t->nbytes) == 0, "%s: %s bytes identical", what, ts[i].name);
        CHECK(((uintptr_t)t->data % aha_dtype_size(t->dtype)) == 0, "%s: %s aligned", what, ts[i].name);
    }
}

static void check_roundtrip(void)
{
    aha_rng rng;
    aha_rng_seed(&rng, 11, 0);
    aha_dtype dts[] = {AHA_DT_F32, AHA_DT_BF16, AHA_DT_F16, AHA_DT_I32, AHA_DT_I64, AHA_DT_F64,
                       AHA_DT_I16, AHA_DT_I8,   AHA_DT_U8,  AHA_DT_BOOL};
    enum { N = 23 };
    rt_tensor ts[N];
    memset(ts, 0, sizeof ts);
    for (int i = 0; i < N; i++) {
        rt_tensor *t = &ts[i];
        /* odd sizes so that a careless layout would misalign the wider dtypes */
        snprintf(t->name, sizeof t->name, "t%02d.%s", (i * 7) % N, i == 5 ? "na\"me\\é" : "w");
        t->dt = dts[i % 10];
        if (t->dt == AHA_DT_BOOL) t->dt = AHA_DT_U8; /* random bytes are not valid bools for torch */
        t->nd = i % 4;
        for (int d = 0; d < t->nd; d++) t->shape[d] = 1 + (int64_t)aha_rng_below(&rng, 7);
        if (i == 7) t->shape[0] = 0; /* an empty tensor */
        fill_random(&rng, t);
    }
    aha_err err = {0};
    aha_st_writer *w = aha_st_writer_new();
    for (int i = 0; i < N; i++)
        CHECK(aha_st_writer_add(w, ts[i].name, ts[i].dt, ts[i].nd, ts[i].shape, ts[i].bytes, &err) == AHA_OK,
              "add %s: %s", ts[i].name, err.msg);
    CHECK(aha_st_writer_add(w, ts[0].name, AHA_DT_F32, 0, NULL, ts[0].bytes, &err) == AHA_EEXIST, "duplicate add refused");
    CHECK(aha_st_writer_set_metadata(w, "step", "12", &err) == AHA_OK, "metadata");
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    CHECK(aha_st_writer_save(w, path, &err) == AHA_OK, "save: %s", err.msg);
    aha_st_file *f = NULL;
    CHECK(aha_st_open(path, &f, &err) == AHA_OK, "reopen: %s", err.msg);
    if (f) {
        check_file_has(f, ts, N, "single");
        CHECK(aha_st_metadata(f, "format") && strcmp(aha_st_metadata(f, "format"), "pt") == 0, "format pt by default");
        CHECK(aha_st_metadata(f, "step") && strcmp(aha_st_metadata(f, "step"), "12") == 0, "metadata step");
        aha_st_close(f);
    }
    /* the header is padded with spaces to 8 bytes, as the reference writer does */
    char *raw = NULL;
    size_t rl = 0;
    aha_read_file(path, 1 << 20, &raw, &rl, NULL);
    if (raw) {
        uint64_t hl;
        memcpy(&hl, raw, 8);
        CHECK(hl % 8 == 0 && raw[8 + hl - 1] != '\0', "header length %llu padded", (unsigned long long)hl);
        free(raw);
    }

    /* sharded: small shards, every tensor back from the index; then a single save in the same
     * directory replaces the sharded set */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    CHECK(aha_st_writer_save_sharded(w, dir, 64, &err) == AHA_OK, "save sharded: %s", err.msg);
    f = NULL;
    CHECK(aha_st_open(dir, &f, &err) == AHA_OK, "open sharded: %s", err.msg);
    if (f) {
        CHECK(aha_st_shard_count(f) > 2, "%d shards", aha_st_shard_count(f));
        check_file_has(f, ts, N, "sharded");
        aha_st_close(f);
    }
    char ip[600];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", dir);
    json_t *idx = json_load_file(ip, 0, NULL);
    CHECK(idx != NULL, "index is JSON");
    size_t total = 0;
    for (int i = 0; i < N; i++) total += ts[i].nbytes;
    json_t *tsz = json_object_get(json_object_get(idx, "metadata"), "total_size");
    CHECK(json_is_integer(tsz) && (size_t)json_integer_value(tsz) == total, "total_size %lld want %zu",
          (long long)json_integer_value(tsz), total);
    CHECK(json_object_size(json_object_get(idx, "weight_map")) == N, "weight_map lists every tensor");
    f = NULL;
    CHECK(aha_st_open(ip, &f, &err) == AHA_OK, "open index path: %s", err.msg);
    aha_st_close(f);
    /* every shard within the limit, unless it holds a single larger tensor */
    int nsh = 0, over = 0;
    for (int k = 1; k <= 99; k++) {
        char fn[64];
        size_t nt = 0, bytes = 0;
        const char *key;
        json_t *val;
        json_object_foreach(json_object_get(idx, "weight_map"), key, val)
        {
            snprintf(fn, sizeof fn, "model-%05d-of-", k);
            if (strncmp(json_string_value(val), fn, strlen(fn)) != 0) continue;
            nt++;
            for (int i = 0; i < N; i++)
                if (strcmp(ts[i].name, key) == 0) bytes += ts[i].nbytes;
        }
        if (nt == 0) break;
        nsh++;
        over += bytes > 64 && nt > 1;
    }
    CHECK(nsh > 2 && over == 0, "%d shards, %d over the limit with more than one tensor", nsh, over);
    json_decref(idx);
    CHECK(aha_st_writer_save_sharded(w, dir, 0, &err) == AHA_OK, "save unsharded: %s", err.msg);
    CHECK(!aha_path_exists(ip), "stale index removed");
    char sp[600];
    snprintf(sp, sizeof sp, "%s/model-00001-of-00002.safetensors", dir);
    CHECK(!aha_path_exists(sp), "stale shards removed");
    f = NULL;
    CHECK(aha_st_open(dir, &f, &err) == AHA_OK, "open single in dir: %s", err.msg);
    if (f) {
        check_file_has(f, ts, N, "resaved");
        aha_st_close(f);
    }
    aha_st_writer_free(w);

    /* f32 stored as BF16 / F16: the file holds exactly the converted bits */
    enum { M = 1000 };
    float *src = malloc(sizeof(float) * M);
    for (int i = 0; i < M; i++) src[i] = (float)aha_rng_normal(&rng) * 3.0f;
    src[0] = NAN;
    src[1] = -INFINITY;
    w = aha_st_writer_new();
    int64_t shp[2] = {10, 100};
    CHECK(aha_st_writer_add_f32_as(w, "b", AHA_DT_BF16, 2, shp, src, &err) == AHA_OK, "add bf16");
    CHECK(aha_st_writer_add_f32_as(w, "h", AHA_DT_F16, 2, shp, src, &err) == AHA_OK, "add f16");
    CHECK(aha_st_writer_add_f32_as(w, "f", AHA_DT_F32, 2, shp, src, &err) == AHA_OK, "add f32");
    CHECK(aha_st_writer_add_f32_as(w, "i", AHA_DT_I32, 2, shp, src, &err) == AHA_EINVAL, "f32 as I32 refused");
    CHECK(aha_st_writer_save(w, path, &err) == AHA_OK, "save conv: %s", err.msg);
    aha_st_writer_free(w);
    f = NULL;
    CHECK(aha_st_open(path, &f, &err) == AHA_OK, "open conv: %s", err.msg);
    if (f) {
        const aha_st_tensor *b = aha_st_find(f, "b"), *h = aha_st_find(f, "h"), *ff = aha_st_find(f, "f");
        int bad = 0;
        for (int i = 0; b && h && i < M; i++) {
            uint16_t x, y;
            memcpy(&x, (const uint8_t *)b->data + 2 * i, 2);
            memcpy(&y, (const uint8_t *)h->data + 2 * i, 2);
            bad += x != aha_f32_to_bf16(src[i]) || y != aha_f32_to_f16(src[i]);
        }
        CHECK(b && h && bad == 0, "converted bits (%d wrong)", bad);
        CHECK(ff && memcmp(ff->data, src, sizeof(float) * M) == 0, "f32 bits");
        float *back = malloc(sizeof(float) * M);
        CHECK(aha_st_load_f32(f, "b", 2, shp, back, &err) == AHA_OK, "load bf16 as f32");
        int badb = 0;
        for (int i = 2; i < M; i++) badb += back[i] != aha_bf16_to_f32(aha_f32_to_bf16(src[i]));
        CHECK(badb == 0 && isnan(back[0]) && back[1] == -INFINITY, "bf16 -> f32 load (%d wrong)", badb);
        free(back);
        aha_st_close(f);
    }
    free(src);
    for (int i = 0; i < N; i++) free(ts[i].bytes);
}

static const char *io_data(void)
{
    static char buf[1024];
    const char *root = getenv("AHA_SOURCE_ROOT");
    snprintf(buf, sizeof buf, "%s/tests/unit/io/data", root ? root : ".");
    return buf;
}

/* transformers' own saves of the tiny-qwen3 fixture (bf16 sharded with an index, f16 single,
 * made by interop_transformers.py): every tensor holds exactly torch's rounding of the f32
 * fixture, which our conversions must reproduce bit for bit */
static void check_hf_saves(void)
{
    char ref_dir[1024];
    snprintf(ref_dir, sizeof ref_dir, "%s/tiny-qwen3", th_fixtures());
    aha_err err = {0};
    aha_st_file *ref = NULL;
    CHECK(aha_st_open(ref_dir, &ref, &err) == AHA_OK, "open qwen3 fixture: %s", err.msg);
    const char *sub[2] = {"hf-qwen3-bf16-sharded", "hf-qwen3-f16"};
    for (int k = 0; k < 2 && ref; k++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/%s", io_data(), sub[k]);
        aha_st_file *f = NULL;
        CHECK(aha_st_open(dir, &f, &err) == AHA_OK, "open %s: %s", sub[k], err.msg);
        if (!f) continue;
        aha_dtype want = k == 0 ? AHA_DT_BF16 : AHA_DT_F16;
        CHECK(aha_st_shard_count(f) == (k == 0 ? 4 : 1), "%s: %d shards", sub[k], aha_st_shard_count(f));
        CHECK(aha_st_count(f) == aha_st_count(ref), "%s: %d tensors", sub[k], aha_st_count(f));
        int wrong = 0, tensors_bad = 0;
        for (int i = 0; i < aha_st_count(ref); i++) {
            const aha_st_tensor *r = aha_st_at(ref, i), *t = aha_st_find(f, r->name);
            if (!t || t->dtype != want || t->numel != r->numel) {
                tensors_bad++;
                continue;
            }
            for (int64_t j = 0; j < r->numel; j++) {
                float x;
                uint16_t h;
                memcpy(&x, (const uint8_t *)r->data + 4 * j, 4);
                memcpy(&h, (const uint8_t *)t->data + 2 * j, 2);
                wrong += h != (k == 0 ? aha_f32_to_bf16(x) : aha_f32_to_f16(x));
            }
        }
        CHECK(tensors_bad == 0 && wrong == 0, "%s: %d tensors missing/mismatched, %d elements differ from torch's rounding",
              sub[k], tensors_bad, wrong);
        aha_st_close(f);
        aha_model_config c;
        CHECK(aha_config_load(dir, &c, &err) == AHA_OK && c.qk_norm && c.head_dim == 16, "%s config: %s", sub[k], err.msg);
        CHECK(strcmp(c.dtype, k == 0 ? "bfloat16" : "float16") == 0, "%s dtype %s", sub[k], c.dtype);
    }
    aha_st_close(ref);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aha_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    check_model_fixture("tiny-qwen2");
    check_model_fixture("tiny-llama");
    check_model_fixture("tiny-qwen3");
    const char *fx[] = {"tiny-qwen2/model.safetensors", "tiny-llama/model.safetensors",
                        "tiny-qwen2/forward.safetensors", "tiny-llama/grpo.safetensors",
                        "tiny-llama/sft.safetensors", "tiny-qwen2/adamw.safetensors",
                        "tiny-qwen3/model.safetensors"};
    for (size_t i = 0; i < AHA_ARRAY_LEN(fx); i++) check_rewrite_identical(th_fixtures(), fx[i]);
    /* transformers' shards, written back: the same bytes (BF16 layout, metadata) */
    for (int i = 1; i <= 4; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "hf-qwen3-bf16-sharded/model-%05d-of-00004.safetensors", i);
        check_rewrite_identical(io_data(), rel);
    }
    check_rewrite_identical(io_data(), "hf-qwen3-f16/model.safetensors");
    check_hf_saves();
    check_conversions();
    check_roundtrip();
    aha_remove_tree(tmpdir, NULL);
    return th_done("safetensors");
}
