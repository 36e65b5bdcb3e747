/* weightserve.h: the server side of the weights.proto calls that every service holding a
 * policy model answers (aha-rollout, aha-refpolicy), written once:
 *   UpdateWeights: receive the whole upload (weightpush.h checks it before anything is
 *     written), let the service switch to it, answer with the UpdateWeightsReply;
 *   Info: the fields that say which model is served, beside the service's own counters. */
#ifndef AHA_MODEL_WEIGHTSERVE_H
#define AHA_MODEL_WEIGHTSERVE_H

#include "model/weightpush.h"

/* The service's switch to a received, checked upload (between its own steps). */
typedef aha_status (*aha_weightserve_apply_fn)(void *user, const aha_weight_rx *rx,
                                               aha_err *err);

/* One UpdateWeights call: receive call's upload for m's parameter table, apply(user, rx,
 * err), and send the reply: version, tensors and bytes of the upload, seconds from the
 * call's start to the switch. A failed receive or apply is returned for the call's status
 * and nothing is sent. */
aha_status aha_weightserve_update(aha_rpc_call *call, const aha_model *m,
                                  aha_weightserve_apply_fn apply, void *user, aha_err *err);

/* One Info call: send r, the service's counters already set, with model_name (the last part
 * of model_dir), config_json (m's configuration) and device filled in. */
aha_status aha_weightserve_info(aha_rpc_call *call, Aha__V1__InfoReply *r, const char *model_dir,
                                const aha_model *m, const char *device, aha_err *err);

#endif
