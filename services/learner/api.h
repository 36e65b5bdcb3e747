/* api.h: aha.v1.Learner (SubmitJob, GetJob, ListJobs, CancelJob, WatchJob) over the job store
 * of jobs.h. Errors map to gRPC codes through aha_status: a bad spec is INVALID_ARGUMENT
 * naming the field, an unknown job NOT_FOUND, cancelling a finished job FAILED_PRECONDITION. */
#ifndef AHA_LEARNER_API_H
#define AHA_LEARNER_API_H

#include "base/status.h"
#include "jobs.h"
#include "rpc/rpc.h"

/* Register the five methods on srv (before aha_rpc_server_start). jobs must outlive the
 * server's calls: close it only after the server has drained. */
aha_status aha_learner_api_register(aha_rpc_server *srv, aha_jobs *jobs, aha_err *err);

#endif
