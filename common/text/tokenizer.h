/* tokenizer.h: Hugging Face tokenizer.json, byte-level BPE (GPT-2, Qwen2/Qwen3, Llama-3 style).
 *
 * Supported tokenizer.json features (anything else is refused at load with AHA_EUNSUPPORTED
 * naming the field):
 *   model        BPE with vocab + merges ("a b" strings or ["a", "b"] pairs, possibly empty),
 *                ignore_merges, unk_token; no dropout, no byte_fallback, no subword affixes
 *   added_tokens matched whole before pre-tokenisation, leftmost-longest, with the
 *                single_word / lstrip / rstrip / normalized flags as HF applies them; numbered
 *                as HF numbers them (the model id when the content is in model.vocab, else on
 *                from the vocabulary's size), which files written by HF always agree with (a
 *                file id that differs is logged as a warning)
 *   normalizer   null, NFC, or a Sequence of those
 *   pre_tokenizer Split(regex or string, behavior Isolated, invert false), then ByteLevel
 *                (use_regex true = the GPT-2 regex, add_prefix_space), alone or in a Sequence
 *   decoder      ByteLevel
 * Encoding follows `tokenizer.encode(text, add_special_tokens=False)`; decoding follows
 * `tokenizer.decode(ids, skip_special_tokens=False)` (bytes that are not valid UTF-8 become
 * U+FFFD, as Rust's from_utf8_lossy does).
 *
 * HF runs Split regexes with oniguruma; here they run on PCRE2 (UTF, UCP, JIT) with \s, \S,
 * \p{L} and \p{N} given oniguruma's meaning (White_Space; Unicode 15.0 letters and numbers),
 * which 1300 random HF-encoded strings in tests/fixtures/tokenizer confirm (and 1240 more on
 * the toy tokenizers of tests/fixtures/tokenizer/hf_flags for the flags and pre-tokenizers). A pattern using
 * other Unicode classes may still differ on characters new in Unicode 15.
 *
 * Input text must be valid UTF-8: encode refuses anything else with AHA_EINVAL naming the byte
 * offset (HF can never see invalid UTF-8: Python and Rust strings are always valid).
 *
 * A loaded tokenizer is immutable apart from its word cache, which has its own lock: encode and
 * decode may run concurrently from many threads on one tokenizer. */
#ifndef AHA_TEXT_TOKENIZER_H
#define AHA_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct aha_tokenizer aha_tokenizer;

/* Ids above this are refused at load (a lying file must not make us allocate gigabytes). */
#define AHA_TOK_MAX_ID (1 << 24)
/* tokenizer.json files larger than this are refused. */
#define AHA_TOK_MAX_FILE ((size_t)512 << 20)

/* Load path (a tokenizer.json, or a directory holding one). */
aha_status aha_tokenizer_load(const char *path_or_dir, aha_tokenizer **out, aha_err *err);
/* Load from the bytes of a tokenizer.json; name appears in error messages. */
aha_status aha_tokenizer_load_json(const char *json, size_t len, const char *name,
                                   aha_tokenizer **out, aha_err *err);
void aha_tokenizer_free(aha_tokenizer *tok);

/* Encode len bytes of UTF-8 text into a malloc'd array of *n ids (free with free(); *ids may be
 * NULL when *n is 0). No special tokens are added around the text. */
aha_status aha_tokenizer_encode(const aha_tokenizer *tok, const char *text, size_t len,
                                int32_t **ids, size_t *n, aha_err *err);
/* Decode n ids into malloc'd, NUL-terminated UTF-8 text. An id outside the vocabulary is
 * AHA_EINVAL. */
aha_status aha_tokenizer_decode(const aha_tokenizer *tok, const int32_t *ids, size_t n,
                                char **text, aha_err *err);
/* The same, also giving the length (the text may contain NUL characters). */
aha_status aha_tokenizer_decode_len(const aha_tokenizer *tok, const int32_t *ids, size_t n,
                                    char **text, size_t *len, aha_err *err);

/* Number of id slots: the largest id of the vocabulary or the added tokens, plus one (the
 * smallest embedding table that covers every id). */
int32_t aha_tokenizer_vocab_size(const aha_tokenizer *tok);
/* Id of a token string as it appears in tokenizer.json (added tokens first, as HF does); -1
 * when absent. */
int32_t aha_tokenizer_token_to_id(const aha_tokenizer *tok, const char *token);
/* The token string of id (byte-level form for BPE tokens, content for added tokens); NULL for
 * an id outside the vocabulary or an unused id. Owned by the tokenizer. */
const char *aha_tokenizer_id_to_token(const aha_tokenizer *tok, int32_t id);
/* The raw bytes id decodes to (not NUL-terminated; possibly a partial UTF-8 character), for
 * incremental detokenisation and stop strings; NULL for an unknown id. */
const char *aha_tokenizer_token_bytes(const aha_tokenizer *tok, int32_t id, size_t *len);
/* true when id is an added token marked "special" */
bool aha_tokenizer_is_special(const aha_tokenizer *tok, int32_t id);
/* true when id is an added token (special or not) */
bool aha_tokenizer_is_added(const aha_tokenizer *tok, int32_t id);

/* Words cached between calls (default 1 << 16); 0 turns the cache off (benchmarks use it).
 * Call it while no other thread encodes with tok. */
void aha_tokenizer_set_cache_capacity(aha_tokenizer *tok, size_t words);

/* Write a byte-level-only tokenizer (no merges): ids 0..255 are the 256 bytes (id = byte value,
 * in their ByteLevel symbol form), then the n added tokens at ids 256.. in the given order.
 * Tokens written "<|...|>" are marked special; the rest (e.g. "<think>") are added tokens that
 * are not special, as Qwen3 marks its think tags. dir_or_path: a directory (created if missing;
 * tokenizer.json and tokenizer_config.json are written into it) or a path ending in ".json"
 * (only that file is written). The files load in transformers / tokenizers unchanged. */
aha_status aha_tokenizer_write_bytelevel(const char *dir_or_path, const char *const *specials,
                                         size_t n, aha_err *err);

#endif
