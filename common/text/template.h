/* template.h: prompt templates, e.g. the R1-Zero template of Table 1 of the DeepSeek-R1 paper.
 *
 * A template is text with one kind of field, {prompt}, replaced by the question; "{{" and "}}"
 * stand for literal braces (Python str.format rules). Any other field, or a lone brace, is an
 * error naming its offset. Built-in templates are looked up by name. */
#ifndef AHA_TEXT_TEMPLATE_H
#define AHA_TEXT_TEMPLATE_H

#include <stddef.h>

#include "base/status.h"

/* The built-in template called name ("r1-zero", "r1-zero-think"), or NULL.
 * "r1-zero" is Table 1 verbatim; "r1-zero-think" appends " <think>" so that completions start
 * inside the reasoning block. */
const char *aha_template_builtin(const char *name);
/* Names of the built-ins, NULL-terminated. */
const char *const *aha_template_builtin_names(void);
/* The built-in called name_or_text, or name_or_text itself when it contains "{prompt}"; else
 * AHA_EINVAL (an unknown name). */
aha_status aha_template_resolve(const char *name_or_text, const char **tmpl, aha_err *err);
/* Render tmpl with prompt into a malloc'd NUL-terminated string (*out, free with free()). */
aha_status aha_template_render(const char *tmpl, const char *prompt, char **out, aha_err *err);

#endif
