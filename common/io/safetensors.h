/* safetensors.h: read (mmap) and write Hugging Face safetensors files, single or sharded
 * (model.safetensors.index.json).
 *
 * Reading never trusts the file: the header length, every tensor's dtype, shape and
 * data_offsets are checked against the file (offsets inside the data area, no overlaps,
 * shape x dtype size == byte range, no duplicate names, bounded counts) before anything is
 * handed out; a violation is AHA_EFORMAT with a message naming the file and the tensor.
 * Tensor data pointers point into a read-only mapping that lives until aha_st_close. A handle
 * is immutable after open: threads may share it. */
#ifndef AHA_IO_SAFETENSORS_H
#define AHA_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef enum {
    AHA_DT_F32 = 0,
    AHA_DT_BF16,
    AHA_DT_F16,
    AHA_DT_F64,
    AHA_DT_I64,
    AHA_DT_I32,
    AHA_DT_I16,
    AHA_DT_I8,
    AHA_DT_U8,
    AHA_DT_BOOL,
    AHA_DT_COUNT
} aha_dtype;

size_t aha_dtype_size(aha_dtype dt);
/* "F32", "BF16", ... as safetensors spells them */
const char *aha_dtype_name(aha_dtype dt);
/* parse a safetensors dtype name; AHA_EFORMAT if unknown */
aha_status aha_dtype_parse(const char *name, aha_dtype *out, aha_err *err);

/* bf16/f16 <-> f32 conversions (round to nearest even) */
float aha_bf16_to_f32(uint16_t h);
uint16_t aha_f32_to_bf16(float f);
float aha_f16_to_f32(uint16_t h);
uint16_t aha_f32_to_f16(float f);

#define AHA_ST_MAX_DIMS 8
/* Bounds on what a file may claim (the header limit is the reference implementation's). */
#define AHA_ST_MAX_HEADER 100000000
#define AHA_ST_MAX_TENSORS (1 << 18) /* well above the largest published checkpoints */
#define AHA_ST_MAX_NAME 4096
#define AHA_ST_MAX_DIM (1ull << 40)
#define AHA_ST_MAX_SHARDS 99999

typedef struct {
    char *name;
    aha_dtype dtype;
    int ndim;
    int64_t shape[AHA_ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data; /* into the read-only mapping; aligned to the element size in files
                       * laid out as the reference writer does (this one included), but a
                       * foreign file may not be: aha_st_to_f32 copies safely either way */
    int shard;        /* which file of a sharded set */
} aha_st_tensor;

typedef struct aha_st_file aha_st_file; /* opaque */

/* path: a .safetensors file, a model.safetensors.index.json, or a directory holding
 * model.safetensors or model.safetensors.index.json. */
aha_status aha_st_open(const char *path, aha_st_file **out, aha_err *err);
/* Parse a safetensors image held in memory (buf must outlive the handle); name is used in
 * messages. The same checks as aha_st_open; the fuzz target drives the parser through it. */
aha_status aha_st_open_memory(const void *buf, size_t len, const char *name, aha_st_file **out,
                              aha_err *err);
void aha_st_close(aha_st_file *f);
int aha_st_count(const aha_st_file *f);
/* tensors in name order */
const aha_st_tensor *aha_st_at(const aha_st_file *f, int i);
/* the files behind the handle (one unless sharded); aha_st_tensor.shard indexes them */
int aha_st_shard_count(const aha_st_file *f);
const char *aha_st_shard_path(const aha_st_file *f, int shard);
/* NULL when absent */
const aha_st_tensor *aha_st_find(const aha_st_file *f, const char *name);
/* a "__metadata__" string value (of the first shard), or NULL */
const char *aha_st_metadata(const aha_st_file *f, const char *key);
/* Convert a F32/BF16/F16 tensor to f32 into dst (n must equal numel). */
aha_status aha_st_to_f32(const aha_st_tensor *t, float *dst, int64_t n, aha_err *err);
/* Find name, check dtype-convertible and shape equal to (ndim, shape), convert into dst. */
aha_status aha_st_load_f32(const aha_st_file *f, const char *name, int ndim, const int64_t *shape,
                           float *dst, aha_err *err);

/* Writer: tensors are referenced (not copied) until save. Names must be unique. A new writer
 * carries __metadata__ {"format": "pt"}, as torch's save_file does. */
typedef struct aha_st_writer aha_st_writer;
aha_st_writer *aha_st_writer_new(void);
void aha_st_writer_free(aha_st_writer *w);
aha_status aha_st_writer_add(aha_st_writer *w, const char *name, aha_dtype dt, int ndim,
                             const int64_t *shape, const void *data, aha_err *err);
/* Convenience: add an f32 buffer, stored as dt (F32, BF16 or F16, converted at save). */
aha_status aha_st_writer_add_f32_as(aha_st_writer *w, const char *name, aha_dtype dt, int ndim,
                                    const int64_t *shape, const float *data, aha_err *err);
/* Set a __metadata__ entry; value NULL removes the key. */
aha_status aha_st_writer_set_metadata(aha_st_writer *w, const char *key, const char *value, aha_err *err);
/* One file, written atomically (temp, fsync, rename), streamed (no copy of the data). Laid out
 * as the reference writer does: larger dtypes first, then by name (so every tensor is
 * aligned), header padded with spaces to a multiple of 8. */
aha_status aha_st_writer_save(aha_st_writer *w, const char *path, aha_err *err);
/* Shards of at most max_shard_bytes (0 = no limit) in dir, split in name order:
 * model-0000i-of-0000N.safetensors plus model.safetensors.index.json (metadata.total_size,
 * weight_map), the index written last; a single shard is written as dir/model.safetensors.
 * Files of an earlier save in dir that the new one does not use are removed. */
aha_status aha_st_writer_save_sharded(aha_st_writer *w, const char *dir, size_t max_shard_bytes,
                                      aha_err *err);

/* internal: true when s[0..n) is valid UTF-8 with no NUL (shared by io's parsers) */
bool aha__utf8_valid(const char *s, size_t n);

#endif
