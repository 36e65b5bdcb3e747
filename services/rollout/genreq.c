/* genreq.c: aha.v1 SamplingParams to the engine's request fields (see genreq.h). */
#include "genreq.h"

#include <math.h>

aha_status aha_rollout_sampling_from_proto(const Aha__V1__SamplingParams *sp, aha_gen_request *r,
                                           aha_err *err)
{
    /* proto3 cannot tell an unset temperature from 0: only a whole missing SamplingParams
     * gets temperature 1, an explicit message means greedy when it says 0 */
    r->sampling = (aha_sampling){.temperature = 1.0f};
    r->max_new_tokens = AHA_ROLLOUT_DEFAULT_MAX_NEW_TOKENS;
    r->stop = NULL;
    r->n_stop = 0;
    r->seed = 0;
    if (sp) {
        r->sampling.temperature = sp->temperature;
        r->sampling.top_p = sp->top_p;
        r->sampling.top_k = sp->top_k;
        if (sp->max_new_tokens != 0) r->max_new_tokens = sp->max_new_tokens;
        r->stop = (const char *const *)sp->stop;
        r->n_stop = (int)sp->n_stop;
        r->seed = sp->seed;
    }
    if (!(r->sampling.temperature >= 0) || !isfinite(r->sampling.temperature))
        return aha_errf(err, AHA_EINVAL, "temperature %g must be >= 0",
                        (double)r->sampling.temperature);
    return AHA_OK;
}
