/* rewards.h: the rule-based rewards of DeepSeek-R1 (accuracy, format, language consistency)
 * as a pure library: no I/O, no global state, thread-safe (every call works on its own
 * buffers). aha-reward's gRPC layer (main.c) calls aha_reward_score once per ScoreItem.
 *
 * Inputs carry explicit lengths and may contain NUL bytes; nothing here calls strlen on them.
 * Every scan is linear in the input length (a 10 MB completion, 100,000 nested braces), and
 * nothing recurses on input nesting.
 *
 * The rules (issue 3), with the choices made where it is silent:
 *
 * accuracy (0 or 1)
 *   - The answer is the content of the last <answer>…</answer> pair (the last "</answer>" and
 *     the last "<answer>" before it). Without a complete pair, it is the argument of the last
 *     complete \boxed (or \fbox) anywhere: "\boxed{…}" with balanced braces (\{ and \} are
 *     literal braces and do not count), or "\boxed 5" (a space, then a token up to whitespace
 *     or '$'). When the answer text itself contains a \boxed, its last boxed argument is used
 *     (so "<answer>\boxed{5}</answer>" answers 5). No answer → accuracy 0.
 *   - The reference goes through the same normalisation (a boxed reference is unwrapped).
 *   - Normalisation: $, \(, \), \[, \], \left, \right, \big…, \!, \,, \:, \;, "\ ", \\,
 *     \quad, \qquad, \displaystyle, \textstyle, ^\circ, ^{\circ}, \degree, ° and \$ are
 *     dropped (or become a space); control bytes (NUL included) and Unicode spaces are
 *     spaces; \dfrac and \tfrac are \frac; \% is %; {,} is a comma; \times, \cdot, × are
 *     '*'; U+2212 is '-'; \text, \textbf, \textrm, \textit, \textnormal, \textup, \mathrm,
 *     \mathbf, \mathit and \mbox groups are unwrapped (the innermost 32 levels when nested
 *     deeper);
 *     then a trailing period goes, a leading "v =" or "v \in" (one ASCII letter, optional
 *     _subscript) goes, and units go: text after a number that came from a \text-like group
 *     (letters, spaces, '/', '.', exponents ^2 / ^{2}), or plain ASCII words after a number
 *     and a space ("5 \text{ cm}" = "5 cm" = "5\text{ m}^{2}" = "5"; "2x" and
 *     "3 \text{ and } 4" stay).
 *     Finally all whitespace is removed; string comparisons are case-folded (Unicode, NFC).
 *   - Numbers compare by exact rational value (128-bit numerator/denominator; on overflow the
 *     strings are compared instead): signs, thousands separators in groups of three
 *     ("1,000"), decimals (".5", "0.50"), fractions a/b, \frac{a}{b}, \frac12, scientific
 *     notation (1e3, 1.5E-2, 1.5\times10^{3}). "1/3" ≠ "0.333".
 *   - Percent: when the reference ends in % (or \%), the answer's value is compared with the
 *     percentage number and the answer may carry % or not ("50" = "50%" against "50\%"); when
 *     the reference has no %, an answer with % is wrong ("50%" ≠ "50"). 0.5 ≠ 50%.
 *   - Tuples and intervals: "(…)" "[…]" "(…]" "[…)" and "\{…\}" with top-level commas compare
 *     element by element with the same brackets ("(1, 2)" = "(1,2)", "[1,2)" ≠ "(1,2)"); a bare
 *     comma list ("1, 2") compares element-wise with a bare list. Nesting: 4 levels, deeper
 *     elements compare as strings.
 *   - Multiple choice: "B", "(B)", "\text{B}", "\text{(B)}" are the letter B; an answer that
 *     starts with "(B) " followed by text (e.g. "(B) 12") is B when the reference is a letter.
 *   - Otherwise: equal normalised strings. An empty normalised answer or reference never
 *     matches.
 *
 * format (0 or 1)
 *   - 1 iff the completion is: optional whitespace, "<think>", text, "</think>", optional
 *     whitespace, "<answer>", text, "</answer>", optional whitespace, with each of the four
 *     tags occurring exactly once in the whole completion. Empty think/answer text is allowed.
 *     Whitespace is ASCII space, \t, \n, \r, \v, \f.
 *   - A prompt that ends with "<think>" (ignoring trailing whitespace) means the completion is
 *     scored as if it began with "<think>" (a completion that repeats it then has two).
 *
 * language ([0,1], only when the item's language is non-empty)
 *   - The chain of thought is the text after the first "<think>" (real or implied by the
 *     prompt) up to the next "</think>" (or the end); without any "<think>", it is the text
 *     before the first "<answer>" (or the whole completion).
 *   - Math is not words: $…$, $$…$$, \(…\), \[…\] spans and LaTeX control words (\frac) are
 *     skipped. A word is a maximal run of letters (Unicode category L, with combining marks
 *     M continuing a run) of one script; each Han, Hiragana, Katakana or Hangul character is
 *     a word of its own. Digits and punctuation are not words.
 *   - score = words in the target scripts / all words; no words → 1.
 *   - Languages (BCP-47 tag, case-insensitive; only the primary subtag counts, "zh-CN" = zh):
 *     Latin script: en fr de es it pt nl ca gl eu af sq cs sk sl hr bs pl ro hu fi et lv lt
 *     da sv no nb nn is ga cy mt tr az uz vi id ms tl sw; Cyrillic: ru uk be bg sr mk kk ky tg
 *     mn; el (Greek); hy (Armenian); ka (Georgian); he yi (Hebrew); ar fa ur ps (Arabic);
 *     hi mr ne sa (Devanagari); bn as (Bengali); pa (Gurmukhi); gu; ta; te; kn; ml; si; th;
 *     lo; km; my; am (Ethiopic); zh (Han); ja (Hiragana, Katakana, Han); ko (Hangul).
 *     An unknown code is an item error.
 *
 * total = w.accuracy × accuracy + w.format × format + w.language × language (when present).
 * An item error (invalid UTF-8 in any field, unknown language, out of memory) gives total 0,
 * every component 0, has_language false and a message in error[].
 *
 * task is carried for the caller's logs; the rules above do not depend on it. Code items
 * are the exception, handled by the service before these rules: task "code:python" (also
 * "code", "code:py", "code:python3") or "code:c" makes reference_answer a JSON array of test
 * cases [{"input": "...", "output": "..."}, ...] and accuracy 1 only when the program in
 * the completion passes them all (sandbox.h: aha_code_task_lang, aha_code_score); format
 * and language follow the rules above; the verdict ("passed 3/3 cases", "case 2/3: wrong
 * output ...") is reported as the extracted answer. */
#ifndef AHA_SERVICES_REWARD_REWARDS_H
#define AHA_SERVICES_REWARD_REWARDS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

/* public: weight of each component in total. Defaults (R1-Zero): 1, 1, 0. */
typedef struct {
    double accuracy, format, language;
} aha_reward_weights;

/* public, read by the library only: one ScoreItem. Pointers may be NULL when the length is 0. */
typedef struct {
    const char *prompt;
    size_t prompt_len;
    const char *completion;
    size_t completion_len;
    const char *reference;
    size_t reference_len;
    const char *language; /* "" = no language component */
    size_t language_len;
    const char *task;
    size_t task_len;
} aha_reward_item;

#define AHA_REWARD_TEXT_LEN 256

/* written by aha_reward_score */
typedef struct {
    double total;
    double accuracy, format, language; /* each 0 or 1, language in [0,1] */
    bool has_language;                 /* false: omit the language component */
    bool has_answer;                   /* an answer was found in the completion */
    char extracted[AHA_REWARD_TEXT_LEN]; /* the raw answer text, cut at a UTF-8 boundary */
    char error[AHA_REWARD_TEXT_LEN];     /* "" when scored; else why the item failed */
} aha_reward_result;

/* accuracy 1, format 1, language 0 */
aha_reward_weights aha_reward_weights_default(void);

/* Overlay the weights found in a JSON object text onto *w (keys not given keep their value).
 * Accepted: {"weights": {"accuracy": x, "format": y, "language": z}}; an empty text or "{}"
 * changes nothing. Unknown keys at either level, non-numbers, negative or non-finite weights
 * are AHA_EINVAL with a message naming the key; *w is unchanged on error. */
aha_status aha_reward_weights_from_json(const char *json, size_t len, aha_reward_weights *w,
                                        aha_err *err);

/* Score one item (w NULL: the defaults). Returns AHA_OK when scored; on an item error returns AHA_EINVAL (or
 * AHA_ENOMEM) with out->error filled and out->total 0. out is always fully written. */
aha_status aha_reward_score(const aha_reward_item *in, const aha_reward_weights *w,
                            aha_reward_result *out);

/* The answer of a completion by the accuracy rule: on true, [*off, *off + *len) of completion. */
bool aha_reward_extract_answer(const char *completion, size_t len, size_t *off, size_t *alen);

/* Whether answer a equals reference r under the accuracy rule (the order matters for %
 * and multiple choice). AHA_EINVAL for invalid UTF-8, AHA_ENOMEM; *equal false then. */
aha_status aha_reward_equivalent(const char *a, size_t alen, const char *r, size_t rlen,
                                 bool *equal, aha_err *err);

/* The format rule: 1.0 or 0.0. */
double aha_reward_format(const char *prompt, size_t prompt_len, const char *completion,
                         size_t completion_len);

/* Whether a language code is supported (case-insensitive primary subtag). */
bool aha_reward_language_supported(const char *code, size_t len);

/* The language rule over the chain of thought; AHA_EINVAL for an unknown code or invalid
 * UTF-8. */
aha_status aha_reward_language(const char *prompt, size_t prompt_len, const char *completion,
                               size_t completion_len, const char *code, size_t code_len,
                               double *score, aha_err *err);

#endif
