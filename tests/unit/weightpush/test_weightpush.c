/* test_weightpush: the UpdateWeights receiver's checks and the sender, on real models.
 *
 * Model A is tests/fixtures/tiny-qwen2; model B is a random init of the same config. Chunks
 * built by hand from B's parameters must make A's parameters equal B's exactly (F32) or equal
 * B's rounded to bf16 (BF16); every malformed upload must fail naming the tensor and leave A
 * untouched. Then the sender streams over a loopback gRPC server whose handler receives with
 * aha_weight_rx_receive, and a truncated upload is refused. */
#include <pthread.h>

#include "../../harness.h"
#include "aha/v1/refpolicy.pb-c.h"
#include "backend/backend.h"
#include "base/log.h"
#include "model/model.h"
#include "model/weightpush.h"
#include "rpc/rpc.h"

static aha_backend *be;

typedef struct {
    int n;
    Aha__V1__WeightChunk *c;
    Aha__V1__WeightHeader hdr;
    int64_t **shapes;
    void **bufs;
} upload;

/* One chunk per tensor half (two chunks per tensor) of model m's parameters as dt. */
static void make_upload(aha_model *m, aha_dtype dt, upload *u)
{
    int np = aha_model_n_params(m);
    u->n = 2 * np;
    u->c = calloc((size_t)u->n, sizeof *u->c);
    u->shapes = calloc((size_t)np, sizeof *u->shapes);
    u->bufs = calloc((size_t)np, sizeof *u->bufs);
    aha__v1__weight_header__init(&u->hdr);
    int64_t total = 0;
    for (int i = 0; i < np; i++) {
        const aha_param_info *p = aha_model_param(m, i);
        size_t es = aha_dtype_size(dt), tb = (size_t)p->numel * es;
        float *f = malloc((size_t)p->numel * sizeof *f);
        aha_model_param_get_f32(m, i, f, NULL);
        if (dt == AHA_DT_BF16) {
            uint16_t *h = malloc((size_t)p->numel * 2);
            for (int64_t j = 0; j < p->numel; j++) h[j] = aha_f32_to_bf16(f[j]);
            free(f);
            u->bufs[i] = h;
        } else {
            u->bufs[i] = f;
        }
        u->shapes[i] = calloc(2, sizeof(int64_t));
        u->shapes[i][0] = p->shape[0];
        u->shapes[i][1] = p->ndim > 1 ? p->shape[1] : 0;
        size_t half = (size_t)(p->numel / 2) * es;
        for (int k = 0; k < 2; k++) {
            Aha__V1__WeightChunk *c = &u->c[2 * i + k];
            aha__v1__weight_chunk__init(c);
            c->name = (char *)p->name;
            c->dtype = dt == AHA_DT_BF16 ? "BF16" : "F32";
            c->n_shape = (size_t)p->ndim;
            c->shape = u->shapes[i];
            c->offset = k == 0 ? 0 : (int64_t)half;
            c->data.data = (uint8_t *)u->bufs[i] + (k == 0 ? 0 : half);
            c->data.len = k == 0 ? half : tb - half;
            c->tensor_bytes = (int64_t)tb;
        }
        total += (int64_t)tb;
    }
    u->hdr.version = 7;
    u->hdr.tensor_count = np;
    u->hdr.total_bytes = total;
    u->c[0].header = &u->hdr;
}

static void free_upload(upload *u, int np)
{
    for (int i = 0; i < np; i++) {
        free(u->shapes[i]);
        free(u->bufs[i]);
    }
    free(u->shapes);
    free(u->bufs);
    free(u->c);
}

/* Feed chunks [0, n) (with optional edits applied by the caller) and finish. */
static aha_status feed(aha_model *m, Aha__V1__WeightChunk *c, int n, aha_weight_rx **rx_out,
                       aha_err *err)
{
    aha_weight_rx *rx;
    aha_status st = aha_weight_rx_create(m, &rx, err);
    for (int i = 0; i < n && st == AHA_OK; i++) st = aha_weight_rx_chunk(rx, &c[i], err);
    if (st == AHA_OK) st = aha_weight_rx_finish(rx, err);
    if (st == AHA_OK && rx_out)
        *rx_out = rx;
    else
        aha_weight_rx_free(rx);
    return st;
}

/* 1 when every parameter of a equals b's (bitwise for F32, or b rounded to bf16). */
static int params_equal(aha_model *a, aha_model *b, int bf16)
{
    int np = aha_model_n_params(a), same = 1;
    for (int i = 0; i < np && same; i++) {
        const aha_param_info *p = aha_model_param(a, i);
        float *x = malloc((size_t)p->numel * 4), *y = malloc((size_t)p->numel * 4);
        aha_model_param_get_f32(a, i, x, NULL);
        aha_model_param_get_f32(b, i, y, NULL);
        for (int64_t j = 0; j < p->numel && same; j++) {
            float want = bf16 ? aha_bf16_to_f32(aha_f32_to_bf16(y[j])) : y[j];
            if (memcmp(&x[j], &want, 4) != 0) same = 0;
        }
        free(x);
        free(y);
    }
    return same;
}

static void expect_fail(aha_model *a, aha_model *orig, Aha__V1__WeightChunk *c, int n,
                        const char *what, const char *needle)
{
    aha_err err = {0};
    aha_status st = feed(a, c, n, NULL, &err);
    CHECK(st == AHA_EINVAL, "%s: status %s (%s)", what, aha_status_name(st), err.msg);
    CHECK(!needle || strstr(err.msg, needle), "%s: message '%s' should name '%s'", what, err.msg,
          needle);
    CHECK(params_equal(a, orig, 0), "%s: the model must be untouched", what);
}

/* ---- loopback server: RefPolicy/UpdateWeights receives into the served model ---- */

static pthread_mutex_t served_mu = PTHREAD_MUTEX_INITIALIZER;

static aha_status h_update(aha_rpc_call *call, const ProtobufCMessage *req, void *user,
                           aha_err *err)
{
    (void)req;
    aha_model *m = user;
    aha_weight_rx *rx;
    AHA_TRY(aha_weight_rx_receive(call, m, &rx, err));
    pthread_mutex_lock(&served_mu);
    aha_status st = aha_weight_rx_apply(rx, m, err);
    pthread_mutex_unlock(&served_mu);
    Aha__V1__UpdateWeightsReply r = AHA__V1__UPDATE_WEIGHTS_REPLY__INIT;
    r.version = aha_weight_rx_version(rx);
    r.tensors = aha_weight_rx_tensors(rx);
    r.bytes = aha_weight_rx_bytes(rx);
    aha_weight_rx_free(rx);
    if (st == AHA_OK) st = aha_rpc_call_send(call, &r.base, err);
    return st;
}

int main(void)
{
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", th_fixtures());
    CHECK(aha_backend_open("cpu", 1, &be, &err) == AHA_OK, "%s", err.msg);
    aha_model *a, *a0, *b;
    CHECK(aha_model_open(dir, be, NULL, &a, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_open(dir, be, NULL, &a0, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_init_random(aha_model_cfg(a), 99, be, NULL, &b, &err) == AHA_OK, "%s", err.msg);
    int np = aha_model_n_params(a);
    CHECK(!params_equal(a, b, 0), "the random model differs from the fixture");

    upload u;
    make_upload(b, AHA_DT_F32, &u);
    /* malformed uploads: each fails, naming the tensor, and changes nothing */
    expect_fail(a, a0, u.c + 1, u.n - 1, "no header first", "header");
    expect_fail(a, a0, u.c, u.n - 1, "last chunk missing", u.c[u.n - 1].name);
    expect_fail(a, a0, u.c, u.n - 2, "last tensor missing", u.c[u.n - 2].name);
    {
        Aha__V1__WeightChunk sv = u.c[3];
        u.c[3].offset += 4;
        expect_fail(a, a0, u.c, u.n, "gap in a tensor", u.c[3].name);
        u.c[3] = sv;
        u.c[3].offset -= 4;
        expect_fail(a, a0, u.c, u.n, "overlap in a tensor", u.c[3].name);
        u.c[3] = sv;
        u.c[3].name = "model.layers.9.mlp.up_proj.weight";
        expect_fail(a, a0, u.c, u.n, "unknown tensor", "model.layers.9.mlp.up_proj.weight");
        u.c[3] = sv;
        int64_t bad_shape[2] = {u.c[3].shape[0] + 1, u.c[3].shape[1]};
        u.c[3].shape = bad_shape;
        expect_fail(a, a0, u.c, u.n, "wrong shape", sv.name);
        u.c[3] = sv;
        u.c[3].dtype = "F16";
        expect_fail(a, a0, u.c, u.n, "unsupported dtype", sv.name);
        u.c[3] = sv;
        u.c[3].data.len += 8;
        expect_fail(a, a0, u.c, u.n, "chunk past the end", sv.name);
        u.c[3] = sv;
    }
    {
        Aha__V1__WeightChunk dup[4] = {u.c[0], u.c[1], u.c[1], u.c[2]};
        expect_fail(a, a0, dup, 4, "duplicate chunk", u.c[1].name);
        int64_t tb = u.hdr.total_bytes;
        u.hdr.total_bytes = tb + 4;
        expect_fail(a, a0, u.c, u.n, "header lies about bytes", "bytes");
        u.hdr.total_bytes = tb;
        u.hdr.tensor_count = np + 1;
        expect_fail(a, a0, u.c, u.n, "header lies about tensors", "tensors");
        u.hdr.tensor_count = np;
    }
    /* the whole upload applies exactly */
    aha_weight_rx *rx = NULL;
    CHECK(feed(a, u.c, u.n, &rx, &err) == AHA_OK, "good F32 upload: %s", err.msg);
    CHECK(rx && aha_weight_rx_version(rx) == 7, "version");
    CHECK(rx && aha_weight_rx_apply(rx, a, &err) == AHA_OK, "apply: %s", err.msg);
    CHECK(params_equal(a, b, 0), "after an F32 upload the weights equal the sender's bitwise");
    aha_weight_rx_free(rx);
    free_upload(&u, np);

    make_upload(b, AHA_DT_BF16, &u);
    rx = NULL;
    CHECK(feed(a0, u.c, u.n, &rx, &err) == AHA_OK, "good BF16 upload: %s", err.msg);
    CHECK(rx && aha_weight_rx_apply(rx, a0, &err) == AHA_OK, "apply: %s", err.msg);
    CHECK(params_equal(a0, b, 1), "after a BF16 upload the weights equal the sender's in bf16");
    aha_weight_rx_free(rx);
    free_upload(&u, np);

    /* over gRPC: served model s starts as the fixture; push b (F32), then a truncated push */
    aha_model *s;
    CHECK(aha_model_open(dir, be, NULL, &s, &err) == AHA_OK, "%s", err.msg);
    aha_rpc_server_opts so;
    aha_rpc_server_opts_init(&so);
    so.listen = "127.0.0.1:0";
    so.name = "test";
    aha_rpc_server *srv;
    CHECK(aha_rpc_server_create(&so, &srv, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_rpc_server_add_method(srv, &aha__v1__ref_policy__descriptor, "UpdateWeights",
                                    AHA_RPC_CLIENT_STREAM, h_update, s, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_rpc_server_start(srv, &err) == AHA_OK, "%s", err.msg);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", aha_rpc_server_port(srv));
    aha_rpc_channel *ch;
    CHECK(aha_rpc_channel_create(target, NULL, &ch, &err) == AHA_OK, "%s", err.msg);
    aha_weight_snapshot *snap;
    CHECK(aha_weight_snapshot_create(b, AHA_DT_F32, &snap, &err) == AHA_OK, "%s", err.msg);
    aha_weight_push_opts po = {.version = 3, .chunk_bytes = 1000, .timeout_ms = 20000};
    aha_weight_push_result res;
    /* truncated first: refused, nothing changes */
    po.max_tensors = np - 1;
    aha_status st = aha_weight_snapshot_send(snap, ch, &aha__v1__ref_policy__descriptor, &po, &res, &err);
    CHECK(st == AHA_EINVAL && res.code == 3, "truncated push: %s code %d (%s)", aha_status_name(st),
          res.code, err.msg);
    aha_model *fx;
    CHECK(aha_model_open(dir, be, NULL, &fx, &err) == AHA_OK, "%s", err.msg);
    CHECK(params_equal(s, fx, 0), "a truncated push leaves the served weights unchanged");
    /* whole push to two targets at once (the same server twice) */
    po.max_tensors = 0;
    aha_rpc_channel *chs[2] = {ch, ch};
    const ProtobufCServiceDescriptor *svcs[2] = {&aha__v1__ref_policy__descriptor,
                                                 &aha__v1__ref_policy__descriptor};
    aha_weight_push_result rs[2];
    aha_err errs[2];
    st = aha_weight_snapshot_send_all(snap, chs, svcs, 2, &po, rs, errs, &err);
    CHECK(st == AHA_OK, "push to two targets: %s", err.msg);
    CHECK(rs[0].version == 3 && rs[1].version == 3, "versions %lld %lld", (long long)rs[0].version,
          (long long)rs[1].version);
    CHECK(rs[0].bytes == (int64_t)aha_weight_snapshot_bytes(snap), "bytes confirmed");
    CHECK(params_equal(s, b, 0), "after the push the served weights equal the sender's");

    aha_weight_snapshot_free(snap);
    aha_rpc_channel_free(ch);
    aha_rpc_server_stop(srv);
    aha_rpc_server_wait(srv, NULL);
    aha_rpc_server_free(srv);
    aha_model_free(fx);
    aha_model_free(s);
    aha_model_free(a);
    aha_model_free(a0);
    aha_model_free(b);
    aha_backend_free(be);
    return th_done("test_weightpush");
}
