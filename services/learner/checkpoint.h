/* checkpoint.h: the checkpoints of a training job inside its job directory.
 *
 * JOB_DIR/ckpt-NNNNNN/ (NNNNNN = optimizer updates done) holds the policy as Hugging Face
 * files (config.json, generation_config.json, model.safetensors, tokenizer.json when the job
 * has one), the optimizer state (optimizer.safetensors: AdamW moments and step count) and
 * state.json (step, data cursor, seed, spec hash, what the job needs to go on exactly).
 * JOB_DIR/latest names the newest complete one.
 *
 * Atomicity: everything is written into ckpt-NNNNNN.tmp, each file fsync'd, the directory
 * renamed to ckpt-NNNNNN, then `latest` is replaced atomically. A crash leaves either the old
 * `latest` or the new one, never a half-written checkpoint under a final name; leftover .tmp
 * directories are removed by the next save. Only the newest `keep` checkpoints are kept. */
#ifndef AHA_LEARNER_CHECKPOINT_H
#define AHA_LEARNER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "model/model.h"

/* Save one checkpoint. tokenizer_json (may be NULL) is copied in; state_json is written as
 * state.json. out_dir (cap bytes, may be NULL) receives the final directory. */
aha_status aha_ckpt_save(const char *job_dir, int64_t step, aha_model *m, aha_train *t,
                         const char *tokenizer_json, const char *state_json, int keep,
                         char *out_dir, size_t cap, aha_err *err);

/* The directory `latest` names, into dir. AHA_ENOTFOUND when the job has no checkpoint. */
aha_status aha_ckpt_latest(const char *job_dir, char *dir, size_t cap, aha_err *err);

/* FNV-1a 64 of a string (the normalised spec), as 16 hex digits into out[17]. */
void aha_ckpt_hash_hex(const char *s, char out[17]);

#endif
