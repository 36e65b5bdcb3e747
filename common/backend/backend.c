/* backend.c: picking a backend by device name ("cpu", "cuda:N"). */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

#include "backend/backend_config.h"

bool aha_backend_have_cuda(void) { return AHA_HAVE_CUDA != 0; }

aha_status aha_backend_open(const char *device, int threads, aha_backend **out, aha_err *err)
{
    *out = NULL;
    if (!device || strcmp(device, "cpu") == 0) return aha_backend_cpu_create(threads, out, err);
    if (strncmp(device, "cuda", 4) == 0) {
        int dev = 0;
        const char *p = device + 4;
        if (*p == ':') {
            char *end = NULL;
            long v = strtol(p + 1, &end, 10);
            if (end == p + 1 || *end || v < 0 || v > 255)
                return aha_errf(err, AHA_EINVAL, "device '%s': expected cuda:N", device);
            dev = (int)v;
        } else if (*p) {
            return aha_errf(err, AHA_EINVAL, "device '%s': expected cpu or cuda:N", device);
        }
#if AHA_HAVE_CUDA
        return aha_backend_cuda_create(dev, out, err);
#else
        (void)dev;
        return aha_errf(err, AHA_EUNSUPPORTED, "device '%s': this build has no CUDA backend", device);
#endif
    }
    return aha_errf(err, AHA_EINVAL, "device '%s': expected cpu or cuda:N", device);
}

void aha_backend_free(aha_backend *be)
{
    if (!be) return;
    if (be->ops && be->ops->free) be->ops->free(be);
    free(be);
}
