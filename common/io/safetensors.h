/* safetensors.h: read (mmap) and write Hugging Face safetensors files, single or sharded
 * (model.safetensors.index.json).
 *
 * Reading never trusts the file: the header length, every tensor's dtype, shape and
 * data_offsets are checked against the file (offsets inside the data area, no overlaps,
 * shape x dtype size == byte range, no duplicate names, bounded counts) before anything is
 * handed out; a violation is AHA_EFORMAT with a message naming the file and the tensor.
 * Tensor data pointers point into a read-only mapping that lives until aha_st_close. */
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

typedef struct {
    char *name;
    aha_dtype dtype;
    int ndim;
    int64_t shape[AHA_ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data; /* into the read-only mapping */
    int shard;        /* which file of a sharded set */
} aha_st_tensor;

typedef struct aha_st_file aha_st_file; /* opaque */

/* path: a .safetensors file, a model.safetensors.index.json, or a directory holding
 * model.safetensors or model.safetensors.index.json. */
aha_status aha_st_open(const char *path, aha_st_file **out, aha_err *err);
void aha_st_close(aha_st_file *f);
int aha_st_count(const aha_st_file *f);
const aha_st_tensor *aha_st_at(const aha_st_file *f, int i);
/* NULL when absent */
const aha_st_tensor *aha_st_find(const aha_st_file *f, const char *name);
/* a "__metadata__" string value, or NULL */
const char *aha_st_metadata(const aha_st_file *f, const char *key);
/* Convert a F32/BF16/F16 tensor to f32 into dst (n must equal numel). */
aha_status aha_st_to_f32(const aha_st_tensor *t, float *dst, int64_t n, aha_err *err);
/* Find name, check dtype-convertible and shape equal to (ndim, shape), convert into dst. */
aha_status aha_st_load_f32(const aha_st_file *f, const char *name, int ndim, const int64_t *shape,
                           float *dst, aha_err *err);

/* Writer: tensors are referenced (not copied) until save. Names must be unique. */
typedef struct aha_st_writer aha_st_writer;
aha_st_writer *aha_st_writer_new(void);
void aha_st_writer_free(aha_st_writer *w);
aha_status aha_st_writer_add(aha_st_writer *w, const char *name, aha_dtype dt, int ndim,
                             const int64_t *shape, const void *data, aha_err *err);
/* Convenience: add an f32 buffer, stored as dt (F32, BF16 or F16, converted at save). */
aha_status aha_st_writer_add_f32_as(aha_st_writer *w, const char *name, aha_dtype dt, int ndim,
                                    const int64_t *shape, const float *data, aha_err *err);
aha_status aha_st_writer_set_metadata(aha_st_writer *w, const char *key, const char *value, aha_err *err);
/* One file, written atomically (temp, fsync, rename). Tensors sorted by name as HF does. */
aha_status aha_st_writer_save(aha_st_writer *w, const char *path, aha_err *err);
/* Shards of at most max_shard_bytes in dir: model-0000i-of-0000N.safetensors plus
 * model.safetensors.index.json; a single shard is written as dir/model.safetensors. */
aha_status aha_st_writer_save_sharded(aha_st_writer *w, const char *dir, size_t max_shard_bytes,
                                      aha_err *err);

#endif
