/* tool_tokenize.c: `aha-tool tokenize --tokenizer PATH [--template NAME|TEXT]`: JSON lines
 * {"text": ...} on stdin, one {"ids": [...], "decoded": "..."} line out per line in (blank lines
 * are skipped). With --template the text is first rendered into the prompt template (e.g.
 * r1-zero), showing exactly what the learner sends to the policy. Used by tests and scripts to
 * compare with Hugging Face tokenizers. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/template.h"
#include "text/tokenizer.h"
#include "tool.h"

static int usage_error(const char *msg)
{
    fprintf(stderr, "aha-tool tokenize: %s (usage: aha-tool tokenize --tokenizer PATH [--template NAME|TEXT] < lines.jsonl)\n",
            msg);
    return 2;
}

int tool_tokenize(int argc, char **argv)
{
    const char *path = NULL, *tmpl_arg = NULL, *tmpl = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) path = argv[++i];
        else if (strncmp(argv[i], "--tokenizer=", 12) == 0) path = argv[i] + 12;
        else if (strcmp(argv[i], "--template") == 0 && i + 1 < argc) tmpl_arg = argv[++i];
        else if (strncmp(argv[i], "--template=", 11) == 0) tmpl_arg = argv[i] + 11;
        else {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown or incomplete argument '%.100s'", argv[i]);
            return usage_error(msg);
        }
    }
    if (!path) return usage_error("--tokenizer PATH is required");
    aha_tokenizer *tok = NULL;
    aha_err err = {0};
    if (tmpl_arg && aha_template_resolve(tmpl_arg, &tmpl, &err) != AHA_OK) {
        fprintf(stderr, "aha-tool tokenize: %s\n", aha_err_msg(&err));
        return 2;
    }
    if (aha_tokenizer_load(path, &tok, &err) != AHA_OK) {
        fprintf(stderr, "aha-tool tokenize: %s\n", aha_err_msg(&err));
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        json_error_t je;
        json_t *in = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &je);
        json_t *text = json_is_object(in) ? json_object_get(in, "text") : NULL;
        if (!json_is_string(text)) {
            fprintf(stderr, "aha-tool tokenize: stdin line %ld: expected {\"text\": \"...\"}%s%s\n", lineno,
                    in ? "" : ": ", in ? "" : je.text);
            json_decref(in);
            rc = 2;
            break;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        char *dec = NULL, *rendered = NULL;
        size_t dlen = 0;
        const char *src = json_string_value(text);
        size_t slen = json_string_length(text);
        if (tmpl) {
            if (aha_template_render(tmpl, src, &rendered, &err) != AHA_OK) {
                fprintf(stderr, "aha-tool tokenize: stdin line %ld: %s\n", lineno, aha_err_msg(&err));
                json_decref(in);
                rc = 2;
                break;
            }
            src = rendered;
            slen = strlen(rendered);
        }
        if (aha_tokenizer_encode(tok, src, slen, &ids, &n, &err) != AHA_OK ||
            aha_tokenizer_decode_len(tok, ids, n, &dec, &dlen, &err) != AHA_OK) {
            fprintf(stderr, "aha-tool tokenize: stdin line %ld: %s\n", lineno, aha_err_msg(&err));
            rc = 1;
        } else {
            json_t *out = json_object(), *arr = json_array();
            for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
            json_object_set_new(out, "ids", arr);
            json_object_set_new(out, "decoded", json_stringn(dec, dlen));
            if (json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 || fputc('\n', stdout) == EOF)
                rc = 1;
            json_decref(out);
        }
        free(ids);
        free(dec);
        free(rendered);
        json_decref(in);
    }
    free(line);
    aha_tokenizer_free(tok);
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}

/* `aha-tool make-tokenizer --out DIR [--special TOKEN]...`: a byte-level tokenizer.json with
 * no merges (ids 0..255 are the bytes, the special tokens follow), as the tiny demo models
 * use; default specials <|endoftext|> <think> </think> <answer> </answer>. */
int tool_make_tokenizer(int argc, char **argv)
{
    const char *out = NULL;
    const char *specials[64];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strcmp(argv[i], "--special") == 0 && i + 1 < argc && n < 64)
            specials[n++] = argv[++i];
        else {
            fprintf(stderr, "aha-tool make-tokenizer: unknown or incomplete argument '%.100s' "
                            "(usage: aha-tool make-tokenizer --out DIR [--special TOKEN]...)\n", argv[i]);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "aha-tool make-tokenizer: --out DIR is required\n");
        return 2;
    }
    static const char *const defaults[] = {"<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"};
    if (n == 0)
        for (; n < 5; n++) specials[n] = defaults[n];
    aha_err err = {0};
    if (aha_tokenizer_write_bytelevel(out, specials, (size_t)n, &err) != AHA_OK) {
        fprintf(stderr, "aha-tool make-tokenizer: %s\n", aha_err_msg(&err));
        return 2;
    }
    return 0;
}
