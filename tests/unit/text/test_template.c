/* test_template: the R1-Zero template of Table 1 (DeepSeek-R1 paper) rendered with a prompt,
 * its <think> variant, brace escapes and malformed templates. */
#include "../../harness.h"
#include "text/template.h"

/* Table 1 of the paper, with **prompt** at the place of the question */
static const char table1_before[] =
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> "
    "answer here </answer>. User: ";
static const char table1_after[] = ". Assistant:";

int main(void)
{
    aha_err err = {0};
    const char *q = "What is 12 * 34? Use {braces} and }} freely";
    char want[2048], *out = NULL;
    snprintf(want, sizeof want, "%s%s%s", table1_before, q, table1_after);
    const char *r1 = aha_template_builtin("r1-zero");
    CHECK(r1 != NULL, "r1-zero exists");
    CHECK(aha_template_render(r1, q, &out, &err) == AHA_OK, "%s", err.msg);
    CHECK(out && strcmp(out, want) == 0, "r1-zero renders Table 1:\n%s", out);
    free(out);

    strcat(want, " <think>");
    CHECK(aha_template_render(aha_template_builtin("r1-zero-think"), q, &out, &err) == AHA_OK, "%s", err.msg);
    CHECK(out && strcmp(out, want) == 0, "r1-zero-think ends with ' <think>': %s", out);
    free(out);

    const char *t;
    CHECK(aha_template_resolve("r1-zero", &t, &err) == AHA_OK && t == r1, "resolve a name");
    CHECK(aha_template_resolve("Q: {prompt}\nA:", &t, &err) == AHA_OK && strcmp(t, "Q: {prompt}\nA:") == 0,
          "resolve a literal template");
    CHECK(aha_template_resolve("r2-zero", &t, &err) == AHA_EINVAL && strstr(err.msg, "r2-zero"), "unknown name: %s", err.msg);
    const char *const *names = aha_template_builtin_names();
    int count = 0;
    for (; names[count]; count++) CHECK(aha_template_builtin(names[count]) != NULL, "%s", names[count]);
    CHECK(count == 2, "two built-ins");

    CHECK(aha_template_render("{{x}} {prompt} {prompt}}}", "p", &out, &err) == AHA_OK && strcmp(out, "{x} p p}") == 0,
          "escapes and repeats: %s", out);
    free(out);
    CHECK(aha_template_render("", "p", &out, &err) == AHA_OK && strcmp(out, "") == 0, "empty template");
    free(out);
    static const char *const bad[] = {"{prompt", "{question}", "a } b", "{}", "x {promptx}"};
    for (size_t i = 0; i < AHA_ARRAY_LEN(bad); i++) {
        out = (char *)1;
        CHECK(aha_template_render(bad[i], "p", &out, &err) == AHA_EINVAL && out == NULL, "'%s' refused", bad[i]);
        CHECK(strstr(err.msg, "offset") != NULL, "message names the offset: %s", err.msg);
    }
    return th_done("test_template");
}
