/* fs.h: files and time. Reads are bounded by a caller-given maximum; writes that must not be
 * seen half-done go through aha_write_file_atomic (temp file, fsync, rename, fsync dir). */
#ifndef AHA_BASE_FS_H
#define AHA_BASE_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Read a whole file into a NUL-terminated malloc'd buffer (free with free()). Files larger
 * than max_bytes are refused with AHA_ELIMIT naming the path. */
aha_status aha_read_file(const char *path, size_t max_bytes, char **out, size_t *len, aha_err *err);
/* Write data to path atomically: path.tmp.PID, fsync, rename over path, fsync the directory. */
aha_status aha_write_file_atomic(const char *path, const void *data, size_t len, aha_err *err);
/* fsync the directory holding path (after a rename). */
aha_status aha_fsync_dir_of(const char *path, aha_err *err);
/* mkdir -p */
aha_status aha_mkdirs(const char *path, aha_err *err);
bool aha_path_is_dir(const char *path);
bool aha_path_exists(const char *path);
/* join a and b with one '/' into out (truncation is an error) */
aha_status aha_path_join(char *out, size_t cap, const char *a, const char *b, aha_err *err);
/* Remove a directory tree (used for temp dirs in tests and for replacing checkpoints). */
aha_status aha_remove_tree(const char *path, aha_err *err);

/* monotonic seconds, for durations */
double aha_now_s(void);
/* wall-clock unix seconds, for records */
double aha_wall_s(void);

#endif
