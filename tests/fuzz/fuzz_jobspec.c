/* fuzz_jobspec: arbitrary bytes as a job spec (SubmitJob's spec_json comes from any client)
 * and as one dataset line of each format. A spec that parses must print, and its normalised
 * JSON must parse again to the same normalised JSON; a rejected spec leaves a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/learner/dataset.h"
#include "../../services/learner/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aha_job_spec s;
    aha_err err = {0};
    if (aha_job_spec_parse((const char *)data, size, &s, &err) == AHA_OK) {
        char *a = NULL, *b = NULL;
        AHA_ASSERT(aha_job_spec_to_json(&s, &a, &err) == AHA_OK);
        aha_job_spec t;
        AHA_ASSERT(aha_job_spec_parse(a, strlen(a), &t, &err) == AHA_OK);
        AHA_ASSERT(aha_job_spec_to_json(&t, &b, &err) == AHA_OK);
        AHA_ASSERT(strcmp(a, b) == 0);
        free(a);
        free(b);
        aha_job_spec_free(&t);
        aha_job_spec_free(&s);
    } else {
        AHA_ASSERT(err.msg[0] != '\0');
    }

    static const char *const prompt[] = {"prompt", "question", "problem", "prompt"};
    static const char *const answer[] = {"answer", "answer", "solution", NULL};
    for (int f = 0; f < AHA_DS_FORMAT_COUNT; f++) {
        aha_dataset_spec d = {0};
        d.path = "fuzz.jsonl";
        d.name = "fuzz";
        d.format = (aha_dataset_format)f;
        d.prompt_field = (char *)prompt[f];
        d.answer_field = (char *)answer[f];
        d.completion_field = f == AHA_DS_SFT ? "completion" : NULL;
        d.lang_field = "lang";
        d.id_field = "id";
        d.prompt_fallback_question = f == AHA_DS_GENERIC;
        aha_example ex;
        if (aha_dataset_parse_line(&d, (const char *)data, size, 1, &ex, &err) == AHA_OK) {
            AHA_ASSERT(ex.prompt && ex.id && (f == AHA_DS_SFT ? ex.completion != NULL : ex.answer != NULL));
            aha_example_free(&ex);
        }
    }
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char *ans = NULL;
    if (aha_math_boxed_answer(text, &ans, &err) == AHA_OK) AHA_ASSERT(ans && ans[0]);
    free(ans);
    if (aha_gsm8k_answer(text, &ans, &err) == AHA_OK) AHA_ASSERT(ans && ans[0]);
    free(ans);
    free(text);
    return 0;
}
