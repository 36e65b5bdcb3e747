/* encode.h: a dataset example as token ids, the way the learner feeds the model.
 *
 * A prompt is rendered with the job's template (text/template.h) and encoded alone, exactly
 * as the rollout workers see it; a completion is encoded separately and appended, so the
 * boundary between them tokenises the same way in SFT as in RL (where the model generates
 * the completion after the encoded prompt). When the rendered prompt ends in a non-space and
 * the completion starts with one, a single space goes in front of the completion
 * ("... Assistant: <think>"), so SFT teaches completions that the format reward accepts and
 * that read naturally. */
#ifndef AHA_LEARNER_ENCODE_H
#define AHA_LEARNER_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "text/tokenizer.h"

/* The rendered, encoded prompt in *ids (malloc'd, *n of them). More than max_tokens ids
 * (> 0) is AHA_ELIMIT with a message giving both numbers (the caller skips or fails). */
aha_status aha_encode_prompt(const aha_tokenizer *tok, const char *tmpl, const char *prompt,
                             int max_tokens, int32_t **ids, size_t *n, aha_err *err);

/* An SFT pair: ids = prompt ids, completion ids, then eos_id (when >= 0); *prompt_len =
 * number of prompt ids: the loss covers ids[prompt_len..n). A sequence longer than
 * max_seq_len loses the end of its completion (eos included); a prompt that leaves no room for
 * one completion token is AHA_ELIMIT. */
aha_status aha_encode_sft(const aha_tokenizer *tok, const char *tmpl, const char *prompt,
                          const char *completion, int32_t eos_id, int max_seq_len, int32_t **ids,
                          size_t *n, size_t *prompt_len, aha_err *err);

#endif
