/* test_safetensors_bad: malformed safetensors files and indexes, built here byte by byte.
 * Each must be refused with AHA_EFORMAT (or ENOTFOUND for a missing shard) and a message
 * that names the file and, where there is one, the tensor; under ASan nothing may read out
 * of bounds. The same images also go through aha_st_open_memory. */
#include <stdint.h>
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "io/safetensors.h"

static char tmpdir[256];

typedef struct {
    uint8_t *p;
    size_t n;
} bytes;

/* u64 length + header (hl bytes) + data_len bytes of data */
static bytes image_n(const char *header, size_t hl, uint64_t claimed_len, size_t data_len)
{
    bytes b;
    b.n = 8 + hl + data_len;
    b.p = malloc(b.n);
    for (int i = 0; i < 8; i++) b.p[i] = (uint8_t)(claimed_len >> (8 * i));
    memcpy(b.p + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) b.p[8 + hl + i] = (uint8_t)(i * 37 + 1);
    return b;
}

static bytes image(const char *header, uint64_t claimed_len, size_t data_len)
{
    return image_n(header, strlen(header), claimed_len, data_len);
}

static bytes simple(const char *header, size_t data_len)
{
    return image(header, strlen(header), data_len);
}

static void write_bytes(const char *path, bytes b)
{
    aha_err err = {0};
    if (aha_write_file_atomic(path, b.p, b.n, &err) != AHA_OK) fprintf(stderr, "write %s: %s\n", path, err.msg);
}

/* open the image as a file and from memory; both must fail naming the file and tensor */
static void expect_bad(const char *label, bytes b, const char *tensor)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", tmpdir, label);
    write_bytes(path, b);
    aha_err err = {0};
    aha_st_file *f = NULL;
    aha_status st = aha_st_open(path, &f, &err);
    CHECK(st == AHA_EFORMAT, "%s: status %s (%s)", label, aha_status_name(st), err.msg);
    CHECK(f == NULL, "%s: no handle on failure", label);
    CHECK(strstr(err.msg, label) != NULL, "%s: message names the file: %s", label, err.msg);
    if (tensor) CHECK(strstr(err.msg, tensor) != NULL, "%s: message names tensor '%s': %s", label, tensor, err.msg);
    fprintf(stderr, "  %-16s -> %s\n", label, err.msg);
    aha_st_close(f);
    /* from memory: the copy is exactly b.n bytes so ASan sees any read past the end */
    uint8_t *copy = malloc(b.n ? b.n : 1);
    memcpy(copy, b.p, b.n);
    aha_err err2 = {0};
    st = aha_st_open_memory(copy, b.n, label, &f, &err2);
    CHECK(st == AHA_EFORMAT && f == NULL && strstr(err2.msg, label), "%s from memory: %s", label, err2.msg);
    free(copy);
    free(b.p);
}

static void check_files(void)
{
    /* sanity: a good image opens, so the failures below are about what each case changes */
    bytes good = simple("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    aha_st_file *f = NULL;
    aha_err err = {0};
    CHECK(aha_st_open_memory(good.p, good.n, "good", &f, &err) == AHA_OK, "good image: %s", err.msg);
    CHECK(f && aha_st_count(f) == 1, "good image has one tensor");
    aha_st_close(f);
    free(good.p);

    bytes empty = {malloc(1), 0};
    expect_bad("empty", empty, NULL);
    bytes trunc = simple("{}", 0);
    trunc.n = 5;
    expect_bad("truncated", trunc, NULL);
    expect_bad("hlen_past_end", image("{}", 4096, 0), NULL);
    expect_bad("hlen_absurd", image("{}", 1ull << 60, 0), NULL);
    expect_bad("hlen_huge", image("{}", (uint64_t)AHA_ST_MAX_HEADER + 1, 0), NULL);
    expect_bad("hlen_cuts_json", image("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 10, 40),
               NULL);
    expect_bad("not_json", simple("{not json}", 0), NULL);
    expect_bad("array_header", simple("[1,2,3]", 0), NULL);
    expect_bad("nul_in_header", image_n("{}\0\0\0\0\0\0", 8, 8, 0), NULL);
    expect_bad("bad_utf8_name", simple("{\"ab\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), NULL);
    expect_bad("overlong_utf8", simple("{\"\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
               NULL);
    expect_bad("empty_name", simple("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), NULL);
    expect_bad("nul_name", simple("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), NULL);
    expect_bad("entry_not_obj", simple("{\"w.x\":[1,2]}", 0), "w.x");
    expect_bad("no_dtype", simple("{\"w.x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "w.x");
    expect_bad("unknown_dtype", simple("{\"w.x\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
               "w.x");
    expect_bad("dtype_number", simple("{\"w.x\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "w.x");
    expect_bad("shape_not_array", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4), "w.x");
    expect_bad("negative_dim", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "w.x");
    expect_bad("float_dim", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4), "w.x");
    expect_bad("absurd_dim",
               simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[0,1125899906842624],\"data_offsets\":[0,0]}}", 0), "w.x");
    expect_bad("numel_overflow",
               simple("{\"w.x\":{\"dtype\":\"U8\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]}}", 0),
               "w.x");
    expect_bad("bytes_overflow",
               simple("{\"w.x\":{\"dtype\":\"F64\",\"shape\":[1099511627776,2097152,2],\"data_offsets\":[0,0]}}", 0),
               "w.x");
    expect_bad("too_many_dims",
               simple("{\"w.x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1), "w.x");
    expect_bad("huge_int",
               simple("{\"w.x\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999999],\"data_offsets\":[0,1]}}", 1),
               NULL);
    expect_bad("offsets_past_end", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), "w.x");
    expect_bad("offsets_far", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[18446744073709551600,"
                                     "18446744073709551608]}}",
                                     8),
               NULL);
    expect_bad("offsets_reversed", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8), "w.x");
    expect_bad("offsets_negative", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8),
               "w.x");
    expect_bad("offsets_three", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8), "w.x");
    expect_bad("offsets_string", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}", 8),
               "w.x");
    expect_bad("wrong_shape", simple("{\"w.x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "w.x");
    expect_bad("wrong_dtype_size", simple("{\"w.x\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
               "w.x");
    expect_bad("overlap",
               simple("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12),
               "w.b");
    expect_bad("same_range",
               simple("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      8),
               "w.");
    expect_bad("gap",
               simple("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                      20),
               "w.b");
    expect_bad("trailing_data", simple("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12), NULL);
    expect_bad("duplicate_name",
               simple("{\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      8),
               "model.layers.0.self_attn.q_proj.weight");
    expect_bad("metadata_not_str", simple("{\"__metadata__\":{\"format\":1}}", 0), "format");
    expect_bad("metadata_array", simple("{\"__metadata__\":[]}", 0), NULL);
    /* nesting far deeper than any header needs */
    enum { DEPTH = 5000 };
    char *deep = malloc(2 * DEPTH + 16);
    size_t d = (size_t)snprintf(deep, 16, "{\"w\":");
    for (int i = 0; i < DEPTH; i++) deep[d++] = '[';
    for (int i = 0; i < DEPTH; i++) deep[d++] = ']';
    deep[d++] = '}';
    deep[d] = '\0';
    expect_bad("deep_nesting", simple(deep, 0), NULL);
    free(deep);

    /* absurd tensor count: more entries than AHA_ST_MAX_TENSORS, refused before any is parsed */
    size_t cnt = (size_t)AHA_ST_MAX_TENSORS + 2;
    size_t cap = cnt * 12 + 16;
    char *h = malloc(cap);
    size_t o = 0;
    h[o++] = '{';
    for (size_t i = 0; i < cnt; i++) o += (size_t)snprintf(h + o, cap - o, "%s\"%zx\":0", i ? "," : "", i);
    h[o++] = '}';
    h[o] = '\0';
    expect_bad("too_many", simple(h, 0), NULL);
    free(h);
}

static void write_named(const char *dir, const char *name, bytes b)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_bytes(p, b);
    free(b.p);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    aha_write_file_atomic(p, text, strlen(text), NULL);
}

static void expect_bad_index(const char *label, const char *index, aha_status want, const char *names1,
                             const char *names2)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, label);
    aha_mkdirs(dir, NULL);
    write_named(dir, "s1.safetensors", simple("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
    write_named(dir, "s2.safetensors", simple("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
    write_named(dir, "s3.safetensors", simple("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
    write_named(dir, "broken.safetensors", image("{}", 999, 0));
    write_text(dir, "model.safetensors.index.json", index);
    aha_err err = {0};
    aha_st_file *f = NULL;
    aha_status st = aha_st_open(dir, &f, &err);
    CHECK(st == want && (want == AHA_OK) == (f != NULL), "%s: status %s want %s (%s)", label, aha_status_name(st), aha_status_name(want),
          err.msg);
    CHECK(strstr(err.msg, names1) != NULL, "%s: message names '%s': %s", label, names1, err.msg);
    if (names2) CHECK(strstr(err.msg, names2) != NULL, "%s: message names '%s': %s", label, names2, err.msg);
    fprintf(stderr, "  %-16s -> %s\n", label, err.msg);
    aha_st_close(f);
}

static void check_indexes(void)
{
    /* the good set first */
    expect_bad_index("idx_good", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}", AHA_OK, "", NULL);
    expect_bad_index("idx_missing_shard", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"nope.safetensors\"}}",
                     AHA_ENOTFOUND, "nope.safetensors", NULL);
    expect_bad_index("idx_missing_tensor", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"zz\":\"s2.safetensors\"}}",
                     AHA_EFORMAT, "zz", "s2.safetensors");
    expect_bad_index("idx_wrong_shard", "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s2.safetensors\"}}",
                     AHA_EFORMAT, "'a'", "s2.safetensors");
    expect_bad_index("idx_dup_across", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s3.safetensors\"}}",
                     AHA_EFORMAT, "s1.safetensors", "s3.safetensors");
    expect_bad_index("idx_path_escape", "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", AHA_EFORMAT, "'a'",
                     "index.json");
    expect_bad_index("idx_broken_shard", "{\"weight_map\":{\"a\":\"broken.safetensors\"}}", AHA_EFORMAT,
                     "broken.safetensors", NULL);
    expect_bad_index("idx_not_json", "{\"weight_map\":", AHA_EFORMAT, "index.json", NULL);
    expect_bad_index("idx_no_map", "{\"metadata\":{}}", AHA_EFORMAT, "weight_map", NULL);
    expect_bad_index("idx_empty_map", "{\"weight_map\":{}}", AHA_EFORMAT, "weight_map", NULL);
    expect_bad_index("idx_map_int", "{\"weight_map\":{\"a\":3}}", AHA_EFORMAT, "'a'", NULL);
    /* a directory with neither file */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/emptydir", tmpdir);
    aha_mkdirs(dir, NULL);
    aha_err err = {0};
    aha_st_file *f = NULL;
    CHECK(aha_st_open(dir, &f, &err) == AHA_ENOTFOUND && strstr(err.msg, "emptydir"), "empty dir: %s", err.msg);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aha_stbad_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    check_files();
    check_indexes();
    aha_remove_tree(tmpdir, NULL);
    return th_done("safetensors_bad");
}
