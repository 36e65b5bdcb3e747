/* checkpoint.c: atomic job checkpoints (see checkpoint.h for the layout and the invariants). */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"

void aha_ckpt_hash_hex(const char *s, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

static aha_status fsync_path(const char *path, aha_err *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return aha_errf(err, AHA_EIO, "%s: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* some file systems refuse fsync on a directory fd: the data files are what matters */
    if (rc != 0 && e != EINVAL) return aha_errf(err, AHA_EIO, "fsync %s: %s", path, strerror(e));
    return AHA_OK;
}

/* checkpoint step of a directory entry "ckpt-NNNNNN", or -1 */
static int64_t ckpt_step_of(const char *name)
{
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *p = name + 5;
    if (!*p) return -1;
    int64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > INT64_MAX / 10 - 10) return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* remove leftover .tmp directories and all but the newest keep checkpoints */
static aha_status prune(const char *job_dir, int keep, aha_err *err)
{
    DIR *d = opendir(job_dir);
    if (!d) return aha_errf(err, AHA_EIO, "%s: %s", job_dir, strerror(errno));
    int64_t steps[4096];
    int n = 0;
    struct dirent *e;
    char path[4096];
    aha_status st = AHA_OK;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "ckpt-", 5) == 0 && len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0) {
            if (aha_path_join(path, sizeof path, job_dir, e->d_name, err) == AHA_OK) aha_remove_tree(path, NULL);
            continue;
        }
        int64_t s = ckpt_step_of(e->d_name);
        if (s >= 0 && n < (int)(sizeof steps / sizeof steps[0])) steps[n++] = s;
    }
    closedir(d);
    /* newest first */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            int64_t t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    for (int i = keep; i < n && st == AHA_OK; i++) {
        char name[64];
        snprintf(name, sizeof name, "ckpt-%06" PRId64, steps[i]);
        st = aha_path_join(path, sizeof path, job_dir, name, err);
        if (st == AHA_OK) st = aha_remove_tree(path, err);
    }
    return st;
}

aha_status aha_ckpt_save(const char *job_dir, int64_t step, aha_model *m, aha_train *t,
                         const char *tokenizer_json, const char *state_json, int keep,
                         char *out_dir, size_t cap, aha_err *err)
{
    AHA_ASSERT(job_dir && m && state_json && step >= 0);
    char name[64], tmp[4096], fin[4096], f[4096];
    snprintf(name, sizeof name, "ckpt-%06" PRId64, step);
    AHA_TRY(aha_path_join(fin, sizeof fin, job_dir, name, err));
    if (snprintf(tmp, sizeof tmp, "%s.tmp", fin) >= (int)sizeof tmp)
        return aha_errf(err, AHA_EINVAL, "job dir path too long");
    if (aha_path_exists(tmp)) AHA_TRY(aha_remove_tree(tmp, err));
    AHA_TRY(aha_mkdirs(tmp, err));
    AHA_TRY(aha_model_save(m, tmp, AHA_DT_F32, 0, err));
    if (t) {
        AHA_TRY(aha_path_join(f, sizeof f, tmp, "optimizer.safetensors", err));
        AHA_TRY(aha_train_save(t, f, err));
    }
    if (tokenizer_json) {
        char *data = NULL;
        size_t len = 0;
        AHA_TRY(aha_read_file(tokenizer_json, (size_t)1 << 30, &data, &len, err));
        aha_status st = aha_path_join(f, sizeof f, tmp, "tokenizer.json", err);
        if (st == AHA_OK) st = aha_write_file_atomic(f, data, len, err);
        free(data);
        AHA_TRY(st);
    }
    AHA_TRY(aha_path_join(f, sizeof f, tmp, "state.json", err));
    AHA_TRY(aha_write_file_atomic(f, state_json, strlen(state_json), err));
    /* every file durable before the rename publishes the directory */
    DIR *d = opendir(tmp);
    if (!d) return aha_errf(err, AHA_EIO, "%s: %s", tmp, strerror(errno));
    struct dirent *e;
    aha_status st = AHA_OK;
    while (st == AHA_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        st = aha_path_join(f, sizeof f, tmp, e->d_name, err);
        if (st == AHA_OK) st = fsync_path(f, err);
    }
    closedir(d);
    AHA_TRY(st);
    AHA_TRY(fsync_path(tmp, err));
    if (aha_path_exists(fin)) AHA_TRY(aha_remove_tree(fin, err));
    if (rename(tmp, fin) != 0) return aha_errf(err, AHA_EIO, "rename %s: %s", tmp, strerror(errno));
    AHA_TRY(aha_fsync_dir_of(fin, err));
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", name);
    AHA_TRY(aha_path_join(f, sizeof f, job_dir, "latest", err));
    AHA_TRY(aha_write_file_atomic(f, line, (size_t)n, err));
    if (out_dir && snprintf(out_dir, cap, "%s", fin) >= (int)cap)
        return aha_errf(err, AHA_EINVAL, "checkpoint path too long");
    return prune(job_dir, keep < 1 ? 1 : keep, err);
}

aha_status aha_ckpt_latest(const char *job_dir, char *dir, size_t cap, aha_err *err)
{
    char f[4096];
    AHA_TRY(aha_path_join(f, sizeof f, job_dir, "latest", err));
    if (!aha_path_exists(f)) return aha_errf(err, AHA_ENOTFOUND, "%s: no checkpoint", job_dir);
    char *data = NULL;
    size_t len = 0;
    AHA_TRY(aha_read_file(f, 256, &data, &len, err));
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == ' ')) data[--len] = 0;
    aha_status st = AHA_OK;
    if (ckpt_step_of(data) < 0) st = aha_errf(err, AHA_EFORMAT, "%s: not a checkpoint name: \"%s\"", f, data);
    if (st == AHA_OK) st = aha_path_join(dir, cap, job_dir, data, err);
    if (st == AHA_OK && !aha_path_is_dir(dir))
        st = aha_errf(err, AHA_EFORMAT, "%s names %s, which is missing", f, dir);
    free(data);
    return st;
}
