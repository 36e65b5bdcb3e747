/* weightserve.c: UpdateWeights and Info on the server (see weightserve.h). */
#include "model/weightserve.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/fs.h"
#include "io/config.h"

aha_status aha_weightserve_update(aha_rpc_call *call, const aha_model *m,
                                  aha_weightserve_apply_fn apply, void *user, aha_err *err)
{
    double t0 = aha_now_s();
    aha_weight_rx *rx;
    AHA_TRY(aha_weight_rx_receive(call, m, &rx, err));
    aha_status st = apply(user, rx, err);
    if (st == AHA_OK) {
        Aha__V1__UpdateWeightsReply r = AHA__V1__UPDATE_WEIGHTS_REPLY__INIT;
        r.version = aha_weight_rx_version(rx);
        r.tensors = aha_weight_rx_tensors(rx);
        r.bytes = aha_weight_rx_bytes(rx);
        r.seconds = aha_now_s() - t0;
        st = aha_rpc_call_send(call, &r.base, err);
    }
    aha_weight_rx_free(rx);
    return st;
}

aha_status aha_weightserve_info(aha_rpc_call *call, Aha__V1__InfoReply *r, const char *model_dir,
                                const aha_model *m, const char *device, aha_err *err)
{
    char *cfg_json = aha_config_to_json(aha_model_cfg(m));
    /* basename may write into its argument: give it a copy */
    char dirbuf[1024];
    snprintf(dirbuf, sizeof dirbuf, "%s", model_dir);
    r->model_name = basename(dirbuf);
    r->config_json = cfg_json ? cfg_json : "";
    r->device = (char *)device;
    aha_status st = aha_rpc_call_send(call, &r->base, err);
    free(cfg_json);
    return st;
}
