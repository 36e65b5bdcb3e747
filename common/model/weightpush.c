/* weightpush.c: see weightpush.h. */
#include "weightpush.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"

/* WeightChunk.data's field number (weights.proto: bytes data = 6): both ends move it without
 * the packed copy (aha_rpc_upload_send_bytes / aha_rpc_call_recv_bytes) */
#define CHUNK_DATA_FIELD 6

/* ---- receiver --------------------------------------------------------------------------- */

typedef struct {
    const aha_param_info *info;
    int dt_set;             /* a first chunk fixed the dtype */
    aha_dtype dt;
    size_t nbytes;          /* numel * dtype size */
    size_t got;             /* bytes received, in order */
    unsigned char *data;    /* staged bytes (nbytes) */
} rx_tensor;

struct aha_weight_rx {
    int n;
    rx_tensor *t;
    int have_header;
    int finished;
    int64_t version;
    int64_t header_tensors;
    int64_t header_bytes;
    int64_t bytes;          /* received so far */
    int tensors_started;
};

aha_status aha_weight_rx_create(const aha_model *m, aha_weight_rx **out, aha_err *err)
{
    *out = NULL;
    aha_weight_rx *rx = calloc(1, sizeof *rx);
    int n = aha_model_n_params(m);
    if (!rx || !(rx->t = calloc((size_t)n, sizeof *rx->t))) {
        free(rx);
        return aha_errf(err, AHA_ENOMEM, "UpdateWeights: out of memory for %d tensors", n);
    }
    rx->n = n;
    for (int i = 0; i < n; i++) rx->t[i].info = aha_model_param(m, i);
    *out = rx;
    return AHA_OK;
}

void aha_weight_rx_free(aha_weight_rx *rx)
{
    if (!rx) return;
    for (int i = 0; i < rx->n; i++) free(rx->t[i].data);
    free(rx->t);
    free(rx);
}

static int find_tensor(const aha_weight_rx *rx, const char *name)
{
    for (int i = 0; i < rx->n; i++)
        if (strcmp(rx->t[i].info->name, name) == 0) return i;
    return -1;
}

aha_status aha_weight_rx_chunk(aha_weight_rx *rx, const Aha__V1__WeightChunk *c, aha_err *err)
{
    AHA_ASSERT(!rx->finished);
    if (c->header) {
        if (rx->have_header)
            return aha_errf(err, AHA_EINVAL, "UpdateWeights: a second header arrived");
        if (rx->bytes > 0 || rx->tensors_started > 0)
            return aha_errf(err, AHA_EINVAL, "UpdateWeights: the header must come first");
        rx->have_header = 1;
        rx->version = c->header->version;
        rx->header_tensors = c->header->tensor_count;
        rx->header_bytes = c->header->total_bytes;
        if (rx->version < 0)
            return aha_errf(err, AHA_EINVAL, "UpdateWeights: negative version %lld",
                            (long long)rx->version);
    } else if (!rx->have_header) {
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: the first chunk has no header");
    }
    if (!c->name || !c->name[0]) {
        if (c->data.len == 0 && c->header) return AHA_OK; /* a header-only chunk */
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: a chunk without a tensor name");
    }
    int i = find_tensor(rx, c->name);
    if (i < 0)
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: tensor '%.200s' is not a parameter of "
                        "this model", c->name);
    rx_tensor *t = &rx->t[i];
    const char *nm = t->info->name;
    aha_dtype dt;
    if (strcmp(c->dtype, "BF16") == 0 || strcmp(c->dtype, "bf16") == 0)
        dt = AHA_DT_BF16;
    else if (strcmp(c->dtype, "F32") == 0 || strcmp(c->dtype, "f32") == 0)
        dt = AHA_DT_F32;
    else
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: %s: dtype '%.32s' is not BF16 or F32",
                        nm, c->dtype);
    if ((int)c->n_shape != t->info->ndim)
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: %s: %zu dims, the model has %d", nm,
                        c->n_shape, t->info->ndim);
    for (int d = 0; d < t->info->ndim; d++)
        if (c->shape[d] != t->info->shape[d])
            return aha_errf(err, AHA_EINVAL, "UpdateWeights: %s: dim %d is %lld, the model has "
                            "%lld", nm, d, (long long)c->shape[d], (long long)t->info->shape[d]);
    size_t nbytes = (size_t)t->info->numel * aha_dtype_size(dt);
    if (c->tensor_bytes != (int64_t)nbytes)
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: %s: tensor_bytes %lld, expected %zu",
                        nm, (long long)c->tensor_bytes, nbytes);
    if (!t->dt_set) {
        t->data = malloc(nbytes ? nbytes : 1);
        if (!t->data)
            return aha_errf(err, AHA_ENOMEM, "UpdateWeights: %s: cannot stage %zu bytes", nm,
                            nbytes);
        t->dt_set = 1;
        t->dt = dt;
        t->nbytes = nbytes;
        rx->tensors_started++;
    } else if (t->dt != dt) {
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: %s: dtype changed between chunks", nm);
    }
    if (c->offset != (int64_t)t->got)
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: %s: chunk at byte %lld, expected %zu "
                        "(chunks of a tensor arrive in order, each byte once)", nm,
                        (long long)c->offset, t->got);
    if (c->data.len > t->nbytes - t->got)
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: %s: chunk of %zu bytes at %zu runs past "
                        "the tensor's %zu bytes", nm, c->data.len, t->got, t->nbytes);
    if (c->data.len) memcpy(t->data + t->got, c->data.data, c->data.len);
    t->got += c->data.len;
    rx->bytes += (int64_t)c->data.len;
    return AHA_OK;
}

aha_status aha_weight_rx_finish(aha_weight_rx *rx, aha_err *err)
{
    if (!rx->have_header) return aha_errf(err, AHA_EINVAL, "UpdateWeights: empty upload");
    for (int i = 0; i < rx->n; i++) {
        const rx_tensor *t = &rx->t[i];
        if (!t->dt_set)
            return aha_errf(err, AHA_EINVAL, "UpdateWeights: tensor %s never arrived",
                            t->info->name);
        if (t->got != t->nbytes)
            return aha_errf(err, AHA_EINVAL, "UpdateWeights: tensor %s is incomplete: %zu of "
                            "%zu bytes", t->info->name, t->got, t->nbytes);
    }
    if (rx->header_tensors != rx->n)
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: header announced %lld tensors, the "
                        "model has %d", (long long)rx->header_tensors, rx->n);
    if (rx->header_bytes != rx->bytes)
        return aha_errf(err, AHA_EINVAL, "UpdateWeights: header announced %lld bytes, %lld "
                        "arrived", (long long)rx->header_bytes, (long long)rx->bytes);
    rx->finished = 1;
    return AHA_OK;
}

int64_t aha_weight_rx_version(const aha_weight_rx *rx) { return rx->version; }
int64_t aha_weight_rx_bytes(const aha_weight_rx *rx) { return rx->bytes; }
int aha_weight_rx_tensors(const aha_weight_rx *rx) { return rx->tensors_started; }

aha_status aha_weight_rx_apply(const aha_weight_rx *rx, aha_model *m, aha_err *err)
{
    AHA_ASSERT(rx->finished);
    AHA_ASSERT(aha_model_n_params(m) == rx->n);
    for (int i = 0; i < rx->n; i++) {
        const rx_tensor *t = &rx->t[i];
        aha_status st = t->dt == AHA_DT_BF16
                            ? aha_model_param_set_bf16(m, i, (const uint16_t *)t->data, err)
                            : aha_model_param_set_f32(m, i, (const float *)t->data, err);
        if (st != AHA_OK) return st;
    }
    return AHA_OK;
}

aha_status aha_weight_rx_receive(aha_rpc_call *call, const aha_model *m, aha_weight_rx **out,
                                 aha_err *err)
{
    *out = NULL;
    aha_weight_rx *rx;
    AHA_TRY(aha_weight_rx_create(m, &rx, err));
    aha_status st;
    for (;;) {
        ProtobufCMessage *msg = NULL;
        const uint8_t *data = NULL;
        size_t len = 0;
        aha_rpc_bytes *hold = NULL;
        /* the chunk's bytes are read where they arrived: one copy, into the staging */
        st = aha_rpc_call_recv_bytes(call, CHUNK_DATA_FIELD, &msg, &data, &len, &hold, err);
        if (st != AHA_OK) break;
        if (!msg) {
            st = aha_weight_rx_finish(rx, err);
            break;
        }
        Aha__V1__WeightChunk *c = (Aha__V1__WeightChunk *)msg;
        c->data.data = (uint8_t *)data;
        c->data.len = len;
        st = aha_weight_rx_chunk(rx, c, err);
        c->data.data = NULL; /* the bytes are hold's, not the message's */
        c->data.len = 0;
        protobuf_c_message_free_unpacked(msg, NULL);
        aha_rpc_bytes_free(hold);
        if (st != AHA_OK) break;
    }
    if (st != AHA_OK) {
        aha_weight_rx_free(rx);
        return st;
    }
    *out = rx;
    return AHA_OK;
}

/* ---- sender ----------------------------------------------------------------------------- */

struct aha_weight_snapshot {
    int n;
    aha_dtype dt;
    const aha_param_info **info;
    size_t *off;            /* byte offset of tensor i in data */
    size_t bytes;
    unsigned char *data;
};

aha_status aha_weight_snapshot_create(aha_model *m, aha_dtype dt, aha_weight_snapshot **out,
                                      aha_err *err)
{
    *out = NULL;
    if (dt != AHA_DT_BF16 && dt != AHA_DT_F32)
        return aha_errf(err, AHA_EINVAL, "weight push: dtype must be BF16 or F32");
    int n = aha_model_n_params(m);
    aha_weight_snapshot *s = calloc(1, sizeof *s);
    if (!s) return aha_errf(err, AHA_ENOMEM, "weight push: out of memory");
    s->n = n;
    s->dt = dt;
    s->info = calloc((size_t)n, sizeof *s->info);
    s->off = calloc((size_t)n, sizeof *s->off);
    for (int i = 0; i < n && s->info; i++) {
        s->info[i] = aha_model_param(m, i);
        s->off[i] = s->bytes;
        s->bytes += (size_t)s->info[i]->numel * aha_dtype_size(dt);
    }
    s->data = malloc(s->bytes ? s->bytes : 1);
    if (!s->info || !s->off || !s->data) {
        aha_weight_snapshot_free(s);
        return aha_errf(err, AHA_ENOMEM, "weight push: cannot allocate a %zu-byte snapshot",
                        s->bytes);
    }
    aha_status st = AHA_OK;
    for (int i = 0; i < n && st == AHA_OK; i++)
        st = dt == AHA_DT_F32 ? aha_model_param_get_f32(m, i, (float *)(s->data + s->off[i]), err)
                              : aha_model_param_get_bf16(m, i, (uint16_t *)(s->data + s->off[i]), err);
    if (st != AHA_OK) {
        aha_weight_snapshot_free(s);
        return st;
    }
    *out = s;
    return AHA_OK;
}

void aha_weight_snapshot_free(aha_weight_snapshot *s)
{
    if (!s) return;
    free(s->info);
    free(s->off);
    free(s->data);
    free(s);
}

size_t aha_weight_snapshot_bytes(const aha_weight_snapshot *s) { return s->bytes; }

aha_status aha_weight_snapshot_send(const aha_weight_snapshot *s, aha_rpc_channel *ch,
                                    const ProtobufCServiceDescriptor *svc,
                                    const aha_weight_push_opts *o, aha_weight_push_result *res,
                                    aha_err *err)
{
    double t0 = aha_now_s();
    size_t chunk = o->chunk_bytes ? o->chunk_bytes : (size_t)4 << 20;
    aha_rpc_call_opts copts = {.timeout_ms = o->timeout_ms, .attempts = 1};
    aha_rpc_stream *up = NULL;
    if (res) memset(res, 0, sizeof *res);
    aha_status st = aha_rpc_upload_open(ch, svc, "UpdateWeights", &copts, &up, err);
    if (st != AHA_OK) {
        if (res) res->code = copts.code;
        return st;
    }
    Aha__V1__WeightHeader hdr = AHA__V1__WEIGHT_HEADER__INIT;
    hdr.version = o->version;
    hdr.tensor_count = s->n;
    hdr.total_bytes = (int64_t)s->bytes;
    const char *dtname = s->dt == AHA_DT_BF16 ? "BF16" : "F32";
    int first = 1;
    int n = o->max_tensors > 0 && o->max_tensors < s->n ? o->max_tensors : s->n;
    for (int i = 0; i < n && st == AHA_OK; i++) {
        const aha_param_info *p = s->info[i];
        size_t tb = (size_t)p->numel * aha_dtype_size(s->dt);
        int64_t shape[2] = {p->shape[0], p->ndim > 1 ? p->shape[1] : 0};
        size_t off = 0;
        do {
            size_t len = tb - off < chunk ? tb - off : chunk;
            Aha__V1__WeightChunk c = AHA__V1__WEIGHT_CHUNK__INIT;
            if (first) c.header = &hdr;
            first = 0;
            c.name = (char *)p->name;
            c.dtype = (char *)dtname;
            c.n_shape = (size_t)p->ndim;
            c.shape = shape;
            c.offset = (int64_t)off;
            c.tensor_bytes = (int64_t)tb;
            /* the chunk's bytes go out of the snapshot itself (unchanged until the stream
             * ends), not through a packed copy */
            st = aha_rpc_upload_send_bytes(up, &c.base, CHUNK_DATA_FIELD, s->data + s->off[i] + off, len, err);
            off += len;
        } while (st == AHA_OK && off < tb);
    }
    /* A failed send means the server ended the call: finish carries its status. */
    ProtobufCMessage *reply = NULL;
    aha_err ferr = {0};
    aha_status fst = aha_rpc_upload_finish(up, &reply, &ferr);
    if (fst != AHA_OK) {
        st = fst;
        if (err) *err = ferr;
    }
    if (res) {
        res->code = copts.code;
        res->seconds = aha_now_s() - t0;
        if (reply) {
            const Aha__V1__UpdateWeightsReply *r = (const Aha__V1__UpdateWeightsReply *)reply;
            res->version = r->version;
            res->bytes = r->bytes;
        }
    }
    if (reply) protobuf_c_message_free_unpacked(reply, NULL);
    aha_rpc_stream_free(up);
    return st;
}

typedef struct {
    const aha_weight_snapshot *s;
    aha_rpc_channel *ch;
    const ProtobufCServiceDescriptor *svc;
    const aha_weight_push_opts *o;
    aha_weight_push_result *res;
    aha_err *err;
    aha_status st;
} push_job;

static void *push_thread(void *arg)
{
    push_job *j = arg;
    j->st = aha_weight_snapshot_send(j->s, j->ch, j->svc, j->o, j->res, j->err);
    return NULL;
}

aha_status aha_weight_snapshot_send_all(const aha_weight_snapshot *s, aha_rpc_channel **chs,
                                        const ProtobufCServiceDescriptor *const *svcs, int n,
                                        const aha_weight_push_opts *o,
                                        aha_weight_push_result *res, aha_err *errs,
                                        aha_err *err)
{
    push_job *jobs = calloc((size_t)(n > 0 ? n : 1), sizeof *jobs);
    pthread_t *th = calloc((size_t)(n > 0 ? n : 1), sizeof *th);
    int *started = calloc((size_t)(n > 0 ? n : 1), sizeof *started);
    if (!jobs || !th || !started) {
        free(jobs);
        free(th);
        free(started);
        return aha_errf(err, AHA_ENOMEM, "weight push: out of memory");
    }
    for (int i = 0; i < n; i++) {
        jobs[i] = (push_job){s, chs[i], svcs[i], o, &res[i], &errs[i], AHA_OK};
        aha_err_clear(&errs[i]);
        started[i] = pthread_create(&th[i], NULL, push_thread, &jobs[i]) == 0;
        if (!started[i]) push_thread(&jobs[i]);
    }
    aha_status st = AHA_OK;
    for (int i = 0; i < n; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        if (jobs[i].st != AHA_OK && st == AHA_OK) {
            st = jobs[i].st;
            aha_errf(err, st, "weight push to target %d: %s", i, aha_err_msg(&errs[i]));
        }
    }
    free(jobs);
    free(th);
    free(started);
    return st;
}
