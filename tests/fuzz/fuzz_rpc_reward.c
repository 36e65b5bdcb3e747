/* fuzz_rpc_reward.c: libFuzzer target over aha-reward's request decoding and validation: the
 * input is a wire-format aha.v1.ScoreRequest (byte 0 even) or GroupAnswersRequest (odd)
 * unpacked by protobuf-c as the RPC layer does, then every item goes through what the Score
 * handler does before and instead of running code: the task's code language
 * (aha_code_task_lang), the rule-based score (aha_reward_score) for other tasks, and for
 * code items the program extraction and the output comparison (the sandboxed run itself is
 * covered by tests/unit/sandbox, too slow to fuzz). config_json goes through the weight
 * parser. Aborts when a result leaves [0, 1] or an extraction leaves its input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aha/v1/reward.pb-c.h"
#include "../../services/reward/rewards.h"
#include "../../services/reward/sandbox.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_item(const Aha__V1__ScoreItem *it, const aha_reward_weights *w)
{
    aha_reward_item in = {
        .prompt = it->prompt, .prompt_len = strlen(it->prompt),
        .completion = it->completion, .completion_len = strlen(it->completion),
        .reference = it->reference_answer, .reference_len = strlen(it->reference_answer),
        .language = it->language, .language_len = strlen(it->language),
        .task = it->task, .task_len = strlen(it->task),
    };
    aha_code_lang lang;
    aha_err e;
    if (aha_code_task_lang(in.task, in.task_len, &lang, &e) != AHA_OK) return;
    if (lang != AHA_CODE_NONE) {
        size_t off, n;
        if (aha_code_extract(in.completion, in.completion_len, lang, &off, &n) &&
            (off > in.completion_len || n > in.completion_len - off))
            abort();
        bool a = aha_code_output_equal(in.completion, in.completion_len, in.reference,
                                       in.reference_len);
        bool b = aha_code_output_equal(in.reference, in.reference_len, in.completion,
                                       in.completion_len);
        if (a != b) abort(); /* the comparison is symmetric */
        return;
    }
    aha_reward_result r;
    aha_reward_score(&in, w, &r);
    if (!(r.accuracy >= 0 && r.accuracy <= 1 && r.format >= 0 && r.format <= 1 &&
          r.language >= 0 && r.language <= 1))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (data[0] & 1) {
        Aha__V1__GroupAnswersRequest *g =
            aha__v1__group_answers_request__unpack(NULL, size - 1, data + 1);
        if (!g) return 0;
        for (size_t i = 0; i < g->n_answers && i < 64; i++) {
            size_t off, n, len = strlen(g->answers[i]);
            if (aha_reward_extract_answer(g->answers[i], len, &off, &n) &&
                (off > len || n > len - off))
                abort();
            if (i > 0) {
                bool eq;
                aha_err e;
                aha_reward_equivalent(g->answers[i], len, g->answers[0], strlen(g->answers[0]),
                                      &eq, &e);
            }
        }
        aha__v1__group_answers_request__free_unpacked(g, NULL);
        return 0;
    }
    Aha__V1__ScoreRequest *req = aha__v1__score_request__unpack(NULL, size - 1, data + 1);
    if (!req) return 0;
    aha_reward_weights w = aha_reward_weights_default();
    aha_err e;
    if (req->config_json[0] &&
        aha_reward_weights_from_json(req->config_json, strlen(req->config_json), &w, &e) != AHA_OK)
        w = aha_reward_weights_default();
    for (size_t i = 0; i < req->n_items && i < 64; i++) check_item(req->items[i], &w);
    aha__v1__score_request__free_unpacked(req, NULL);
    return 0;
}
