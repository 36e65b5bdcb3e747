/* encode.c: prompts and SFT pairs as token ids (encode.h). */
#include "encode.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "text/template.h"

aha_status aha_encode_prompt(const aha_tokenizer *tok, const char *tmpl, const char *prompt,
                             int max_tokens, int32_t **ids, size_t *n, aha_err *err)
{
    *ids = NULL;
    *n = 0;
    char *text;
    AHA_TRY(aha_template_render(tmpl, prompt, &text, err));
    aha_status st = aha_tokenizer_encode(tok, text, strlen(text), ids, n, err);
    free(text);
    if (st != AHA_OK) return aha_err_prefix(err, st, "prompt");
    if (max_tokens > 0 && *n > (size_t)max_tokens) {
        size_t got = *n;
        free(*ids);
        *ids = NULL;
        *n = 0;
        return aha_errf(err, AHA_ELIMIT, "prompt of %zu tokens (with the template), over %d", got,
                        max_tokens);
    }
    return AHA_OK;
}

aha_status aha_encode_sft(const aha_tokenizer *tok, const char *tmpl, const char *prompt,
                          const char *completion, int32_t eos_id, int max_seq_len, int32_t **ids,
                          size_t *n, size_t *prompt_len, aha_err *err)
{
    *ids = NULL;
    *n = *prompt_len = 0;
    char *text;
    AHA_TRY(aha_template_render(tmpl, prompt, &text, err));
    size_t tl = strlen(text);
    bool space = tl && !isspace((unsigned char)text[tl - 1]) && completion[0] &&
                 !isspace((unsigned char)completion[0]);
    int32_t *p = NULL, *c = NULL;
    size_t np = 0, nc = 0;
    aha_status st = aha_tokenizer_encode(tok, text, tl, &p, &np, err);
    free(text);
    if (st != AHA_OK) return aha_err_prefix(err, st, "prompt");
    size_t cl = strlen(completion);
    char *ctext = malloc(cl + 2);
    if (!ctext) {
        free(p);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    ctext[0] = ' ';
    memcpy(ctext + (space ? 1 : 0), completion, cl + 1);
    st = aha_tokenizer_encode(tok, ctext, cl + (space ? 1 : 0), &c, &nc, err);
    free(ctext);
    if (st != AHA_OK) {
        free(p);
        return aha_err_prefix(err, st, "completion");
    }
    size_t total = np + nc + (eos_id >= 0 ? 1 : 0);
    if (max_seq_len > 0 && np + 1 > (size_t)max_seq_len) {
        free(p);
        free(c);
        return aha_errf(err, AHA_ELIMIT,
                        "prompt of %zu tokens (with the template) leaves no room in max_seq_len %d",
                        np, max_seq_len);
    }
    if (max_seq_len > 0 && total > (size_t)max_seq_len) total = (size_t)max_seq_len;
    int32_t *out = malloc(total * sizeof *out);
    if (!out) {
        free(p);
        free(c);
        return aha_errf(err, AHA_ENOMEM, "out of memory");
    }
    memcpy(out, p, np * sizeof *out);
    size_t k = np;
    for (size_t i = 0; i < nc && k < total; i++) out[k++] = c[i];
    if (eos_id >= 0 && k < total) out[k++] = eos_id;
    AHA_ASSERT(k == total);
    free(p);
    free(c);
    *ids = out;
    *n = total;
    *prompt_len = np;
    return AHA_OK;
}
