/* template.c: prompt templates (see template.h). The R1-Zero text is Table 1 of the
 * DeepSeek-R1 paper word for word, with **prompt** written as the {prompt} field. */
#include "text/template.h"

#include <stdlib.h>
#include <string.h>

#define R1_ZERO                                                                              \
    "A conversation between User and Assistant. The user asks a question, and the Assistant " \
    "solves it. The assistant first thinks about the reasoning process in the mind and then "  \
    "provides the user with the answer. The reasoning process and answer are enclosed within " \
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "     \
    "process here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"

static const char *const names[] = {"r1-zero", "r1-zero-think", NULL};
static const char *const texts[] = {R1_ZERO, R1_ZERO " <think>"};

const char *aha_template_builtin(const char *name)
{
    for (size_t i = 0; names[i]; i++)
        if (strcmp(name, names[i]) == 0) return texts[i];
    return NULL;
}

const char *const *aha_template_builtin_names(void)
{
    return names;
}

aha_status aha_template_resolve(const char *name_or_text, const char **tmpl, aha_err *err)
{
    const char *b = aha_template_builtin(name_or_text);
    if (b) {
        *tmpl = b;
        return AHA_OK;
    }
    if (strstr(name_or_text, "{prompt}")) {
        *tmpl = name_or_text;
        return AHA_OK;
    }
    return aha_errf(err, AHA_EINVAL,
                    "template '%.60s' is neither a built-in (r1-zero, r1-zero-think) nor a text with {prompt}",
                    name_or_text);
}

/* Two passes over the same parser: the first measures, the second writes (out != NULL). */
static aha_status render(const char *tmpl, const char *prompt, size_t plen, char *out, size_t *len,
                         aha_err *err)
{
    size_t n = 0;
    for (const char *p = tmpl; *p;) {
        if (p[0] == '{' && p[1] == '{') {
            if (out) out[n] = '{';
            n++;
            p += 2;
        } else if (p[0] == '}' && p[1] == '}') {
            if (out) out[n] = '}';
            n++;
            p += 2;
        } else if (p[0] == '{') {
            const char *end = strchr(p, '}');
            if (!end)
                return aha_errf(err, AHA_EINVAL, "template: '{' at offset %zu is never closed", (size_t)(p - tmpl));
            if ((size_t)(end - p - 1) != 6 || strncmp(p + 1, "prompt", 6) != 0)
                return aha_errf(err, AHA_EINVAL, "template: unknown field '%.*s' at offset %zu (only {prompt})",
                                (int)(end - p + 1 > 40 ? 40 : end - p + 1), p, (size_t)(p - tmpl));
            if (out) memcpy(out + n, prompt, plen);
            n += plen;
            p = end + 1;
        } else if (p[0] == '}') {
            return aha_errf(err, AHA_EINVAL, "template: single '}' at offset %zu (write '}}')", (size_t)(p - tmpl));
        } else {
            if (out) out[n] = *p;
            n++;
            p++;
        }
    }
    *len = n;
    return AHA_OK;
}

aha_status aha_template_render(const char *tmpl, const char *prompt, char **out, aha_err *err)
{
    *out = NULL;
    if (!tmpl || !prompt) return aha_errf(err, AHA_EINVAL, "template: NULL template or prompt");
    size_t plen = strlen(prompt), len;
    AHA_TRY(render(tmpl, prompt, plen, NULL, &len, err));
    char *s = malloc(len + 1);
    if (!s) return aha_errf(err, AHA_ENOMEM, "template: out of memory");
    AHA_TRY(render(tmpl, prompt, plen, s, &len, err));
    s[len] = 0;
    *out = s;
    return AHA_OK;
}
