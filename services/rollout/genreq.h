/* genreq.h: the sampling settings of an aha.v1.Rollout/Generate request as the engine takes
 * them. One mapping for the service's handler (main.c) and the fuzz target that feeds the
 * engine what the handler would (tests/fuzz/fuzz_rpc_rollout.c), so the two cannot drift. */
#ifndef AHA_ROLLOUT_GENREQ_H
#define AHA_ROLLOUT_GENREQ_H

#include "aha/v1/rollout.pb-c.h"
#include "engine.h"

/* max_new_tokens of a request that does not say (SamplingParams.max_new_tokens 0) */
#define AHA_ROLLOUT_DEFAULT_MAX_NEW_TOKENS 256

/* Set r's sampling, max_new_tokens, stop strings and seed from sp; sp NULL or a field left 0
 * keeps the defaults (temperature 1, AHA_ROLLOUT_DEFAULT_MAX_NEW_TOKENS). r->stop points into
 * sp. EINVAL names a temperature below 0 or not finite; the engine checks the rest when the
 * request is submitted. */
aha_status aha_rollout_sampling_from_proto(const Aha__V1__SamplingParams *sp, aha_gen_request *r,
                                           aha_err *err);

#endif
