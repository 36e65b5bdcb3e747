/* backend_cuda.cu: the CUDA backend's ops table, its creation on one device, memory and the
 * error helpers. Activations, KV cache and compute weights are BF16 (be->act_dtype); fp32
 * everywhere the ops table says F32. Nothing touches the GPU before aha_backend_cuda_create,
 * so CPU-only processes linked with this code never initialise CUDA. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.cuh"

aha_status aha__cu_fail(aha_err *err, const char *call, const char *file, int line, const char *what)
{
    const char *base = strrchr(file, '/');
    return aha_errf(err, AHA_EDEVICE, "%s failed: %s (%s:%d)", call, what, base ? base + 1 : file,
                    line);
}

const char *aha__cublas_str(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS (unknown)";
    }
}

aha_status aha__cu_bad_dtype(aha_err *err, const char *op, const char *arg, aha_dtype dt)
{
    return aha_errf(err, AHA_EUNSUPPORTED, "cuda %s: %s has dtype %s, not handled", op, arg,
                    aha_dtype_name(dt));
}

aha_status aha__cu_scratch(aha_backend *be, size_t n, void **out, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    if (n > c->scratch_size) {
        /* the old scratch may still be read by queued work */
        AHA_CU_CHECK(cudaStreamSynchronize(c->stream));
        if (c->scratch) AHA_CU_CHECK(cudaFree(c->scratch));
        c->scratch = NULL;
        c->scratch_size = 0;
        size_t sz = n + n / 4;
        cudaError_t e = cudaMalloc(&c->scratch, sz);
        if (e != cudaSuccess) {
            cudaGetLastError();
            return aha_errf(err, AHA_ENOMEM, "cuda scratch: %zu bytes: %s", sz, cudaGetErrorString(e));
        }
        c->scratch_size = sz;
    }
    *out = c->scratch;
    return AHA_OK;
}

struct aha_buf {
    void *ptr;
    size_t size;
};

static aha_status cu_buf_alloc(aha_backend *be, size_t nbytes, aha_buf **out, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    *out = NULL;
    aha_buf *b = (aha_buf *)calloc(1, sizeof *b);
    if (!b) return aha_errf(err, AHA_ENOMEM, "cuda buffer: out of host memory");
    size_t sz = nbytes ? nbytes : 1;
    cudaError_t e = cudaMalloc(&b->ptr, sz);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky; clear it */
        free(b);
        return aha_errf(err, AHA_ENOMEM, "cuda buffer of %zu bytes on %s: %s", nbytes, be->device,
                        cudaGetErrorString(e));
    }
    b->size = nbytes;
    cudaError_t e2 = cudaMemsetAsync(b->ptr, 0, sz, c->stream);
    if (e2 != cudaSuccess) {
        cudaFree(b->ptr);
        free(b);
        return aha__cu_fail(err, "cudaMemsetAsync(buf)", __FILE__, __LINE__, cudaGetErrorString(e2));
    }
    *out = b;
    return AHA_OK;
}

static void cu_buf_free(aha_backend *be, aha_buf *b)
{
    if (!b) return;
    /* queued work may still use it */
    cudaStreamSynchronize(aha__cu(be)->stream);
    cudaFree(b->ptr);
    free(b);
}

static void *cu_buf_base(aha_buf *b) { return b->ptr; }
static size_t cu_buf_size(aha_buf *b) { return b->size; }

static aha_status cu_to_device(aha_backend *be, aha_tensor dst, const void *src, size_t nbytes,
                               aha_err *err)
{
    if (!nbytes) return AHA_OK;
    /* from pageable memory the call returns once src has been staged, so the caller may reuse
     * src at once, and the GPU keeps running the work queued before */
    AHA_CU_CHECK(cudaMemcpyAsync(dst.data, src, nbytes, cudaMemcpyHostToDevice, aha__cu(be)->stream));
    return AHA_OK;
}

static aha_status cu_to_host(aha_backend *be, void *dst, aha_tensor src, size_t nbytes, aha_err *err)
{
    if (!nbytes) return AHA_OK;
    AHA_CU_CHECK(cudaMemcpyAsync(dst, src.data, nbytes, cudaMemcpyDeviceToHost, aha__cu(be)->stream));
    AHA_CU_CHECK(cudaStreamSynchronize(aha__cu(be)->stream));
    return AHA_OK;
}

static aha_status cu_synchronize(aha_backend *be, aha_err *err)
{
    AHA_CU_CHECK(cudaStreamSynchronize(aha__cu(be)->stream));
    return AHA_OK;
}

/* ---- op profile (AHA_CUDA_PROFILE=1) -------------------------------------------------------
 * Every op of the table is wrapped: the stream is drained before and after it and the wall time
 * between is charged to the op (outside graph recording). This serialises the GPU and adds
 * ~20 us per op, so it ranks where the time goes; it is not a throughput figure. The table is
 * printed to stderr when the backend is freed. */
enum {
#define AHA__PROF_ID(name) PROF_##name,
#define AHA__PROF_OPS(X)                                                                        \
    X(fill) X(copy) X(scale) X(add) X(sumsq) X(embedding_fwd) X(embedding_bwd) X(rmsnorm_fwd)   \
    X(rmsnorm_bwd) X(matmul) X(matmul_bwd_dx) X(matmul_bwd_dw) X(rope_fwd) X(rope_bwd)          \
    X(attention_fwd) X(attention_bwd) X(kv_store) X(attention_cached) X(swiglu_fwd)              \
    X(swiglu_bwd) X(logprob_fwd) X(logprob_bwd) X(grpo_loss) X(sft_loss) X(adamw)                \
    X(scatter_rows) X(sample)
    AHA__PROF_OPS(AHA__PROF_ID) PROF_COUNT
#undef AHA__PROF_ID
};
static const char *const prof_names[] = {
#define AHA__PROF_NAME(name) #name,
    AHA__PROF_OPS(AHA__PROF_NAME)
#undef AHA__PROF_NAME
};

typedef struct {
    double t[PROF_COUNT];
    long n[PROF_COUNT];
} cu_prof;

static double prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

template <typename Fn, Fn F, int ID> struct prof_wrap;
template <typename... A, aha_status (*F)(aha_backend *, A...), int ID>
struct prof_wrap<aha_status (*)(aha_backend *, A...), F, ID> {
    static aha_status call(aha_backend *be, A... a)
    {
        aha__cu_ctx *c = aha__cu(be);
        cu_prof *p = (cu_prof *)c->prof;
        if (!p || c->capturing) return F(be, a...);
        cudaStreamSynchronize(c->stream);
        double t0 = prof_now();
        aha_status st = F(be, a...);
        cudaStreamSynchronize(c->stream);
        p->t[ID] += prof_now() - t0;
        p->n[ID]++;
        return st;
    }
};

static void prof_print(const char *device, const cu_prof *p)
{
    int order[PROF_COUNT];
    double total = 0;
    for (int i = 0; i < PROF_COUNT; i++) {
        order[i] = i;
        total += p->t[i];
    }
    for (int i = 1; i < PROF_COUNT; i++)
        for (int j = i; j > 0 && p->t[order[j]] > p->t[order[j - 1]]; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    fprintf(stderr, "cuda op profile (%s, synchronised per op): %.3f s in ops\n", device, total);
    for (int i = 0; i < PROF_COUNT; i++) {
        int k = order[i];
        if (!p->n[k]) continue;
        fprintf(stderr, "  %-18s %9.3f s %6.1f%% %9ld calls %9.1f us/call\n", prof_names[k], p->t[k],
                total > 0 ? 100 * p->t[k] / total : 0.0, p->n[k], 1e6 * p->t[k] / (double)p->n[k]);
    }
}

static aha_status cu_graph_begin(aha_backend *be, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    if (c->capturing) return aha_errf(err, AHA_EINVAL, "cuda graph_begin: already recording");
    AHA_CU_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = true;
    return AHA_OK;
}

static void graph_drop(aha__cu_ctx *c, int i)
{
    cudaGraphExecDestroy(c->graphs[i].exec);
    memmove(&c->graphs[i], &c->graphs[i + 1], sizeof c->graphs[0] * (size_t)(c->n_graphs - i - 1));
    c->n_graphs--;
}

static aha_status cu_graph_end(aha_backend *be, uint64_t key, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    if (!c->capturing) return aha_errf(err, AHA_EINVAL, "cuda graph_end: not recording");
    c->capturing = false;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e != cudaSuccess || key == 0) {
        if (g) cudaGraphDestroy(g);
        cudaGetLastError(); /* a failed capture leaves an error behind; the caller reported its own */
        if (e != cudaSuccess && key != 0)
            return aha__cu_fail(err, "cudaStreamEndCapture", __FILE__, __LINE__, cudaGetErrorString(e));
        return AHA_OK;
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return aha__cu_fail(err, "cudaGraphInstantiate", __FILE__, __LINE__, cudaGetErrorString(e));
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].key == key) {
            graph_drop(c, i);
            break;
        }
    if (c->n_graphs == AHA__CU_GRAPHS) graph_drop(c, 0);
    c->graphs[c->n_graphs].key = key;
    c->graphs[c->n_graphs].exec = x;
    c->n_graphs++;
    return AHA_OK;
}

static aha_status cu_graph_launch(aha_backend *be, uint64_t key, bool *found, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    *found = false;
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].key == key) {
            AHA_CU_CHECK(cudaGraphLaunch(c->graphs[i].exec, c->stream));
            *found = true;
            return AHA_OK;
        }
    return AHA_OK;
}

static void cu_free(aha_backend *be)
{
    aha__cu_ctx *c = aha__cu(be);
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->prof) {
        prof_print(be->device, (const cu_prof *)c->prof);
        free(c->prof);
    }
    for (int i = 0; i < c->n_graphs; i++) cudaGraphExecDestroy(c->graphs[i].exec);
    if (c->scratch) cudaFree(c->scratch);
    for (int i = 0; i < c->n_algos; i++) {
        aha__cu_algo_entry *a = &c->algos[i];
        if (a->ld) cublasLtMatrixLayoutDestroy(a->ld);
        if (a->lb) cublasLtMatrixLayoutDestroy(a->lb);
        if (a->la) cublasLtMatrixLayoutDestroy(a->la);
        if (a->op) cublasLtMatmulDescDestroy(a->op);
    }
    if (c->lt_ws) cudaFree(c->lt_ws);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
    be->ctx = NULL;
}

#define PROF(name, fn) prof_wrap<decltype(&fn), &fn, PROF_##name>::call

static const aha_backend_ops cu_ops_prof = {
    .name = "cuda",
    .free = cu_free,
    .buf_alloc = cu_buf_alloc,
    .buf_free = cu_buf_free,
    .buf_base = cu_buf_base,
    .buf_size = cu_buf_size,
    .to_device = cu_to_device,
    .to_host = cu_to_host,
    .synchronize = cu_synchronize,
    .fill = PROF(fill, aha__cu_fill),
    .copy = PROF(copy, aha__cu_copy),
    .scale = PROF(scale, aha__cu_scale),
    .add = PROF(add, aha__cu_add),
    .sumsq = PROF(sumsq, aha__cu_sumsq),
    .embedding_fwd = PROF(embedding_fwd, aha__cu_embedding_fwd),
    .embedding_bwd = PROF(embedding_bwd, aha__cu_embedding_bwd),
    .rmsnorm_fwd = PROF(rmsnorm_fwd, aha__cu_rmsnorm_fwd),
    .rmsnorm_bwd = PROF(rmsnorm_bwd, aha__cu_rmsnorm_bwd),
    .matmul = PROF(matmul, aha__cu_matmul),
    .matmul_bwd_dx = PROF(matmul_bwd_dx, aha__cu_matmul_bwd_dx),
    .matmul_bwd_dw = PROF(matmul_bwd_dw, aha__cu_matmul_bwd_dw),
    .rope_fwd = PROF(rope_fwd, aha__cu_rope_fwd),
    .rope_bwd = PROF(rope_bwd, aha__cu_rope_bwd),
    .attention_fwd = PROF(attention_fwd, aha__cu_attention_fwd),
    .attention_bwd = PROF(attention_bwd, aha__cu_attention_bwd),
    .kv_store = PROF(kv_store, aha__cu_kv_store),
    .attention_cached = PROF(attention_cached, aha__cu_attention_cached),
    .swiglu_fwd = PROF(swiglu_fwd, aha__cu_swiglu_fwd),
    .swiglu_bwd = PROF(swiglu_bwd, aha__cu_swiglu_bwd),
    .logprob_fwd = PROF(logprob_fwd, aha__cu_logprob_fwd),
    .logprob_bwd = PROF(logprob_bwd, aha__cu_logprob_bwd),
    .grpo_loss = PROF(grpo_loss, aha__cu_grpo_loss),
    .sft_loss = PROF(sft_loss, aha__cu_sft_loss),
    .adamw = PROF(adamw, aha__cu_adamw),
    .scatter_rows = PROF(scatter_rows, aha__cu_scatter_rows),
    .sample = PROF(sample, aha__cu_sample),
    .graph_begin = cu_graph_begin,
    .graph_end = cu_graph_end,
    .graph_launch = cu_graph_launch,
};

static const aha_backend_ops cu_ops = {
    .name = "cuda",
    .free = cu_free,
    .buf_alloc = cu_buf_alloc,
    .buf_free = cu_buf_free,
    .buf_base = cu_buf_base,
    .buf_size = cu_buf_size,
    .to_device = cu_to_device,
    .to_host = cu_to_host,
    .synchronize = cu_synchronize,
    .fill = aha__cu_fill,
    .copy = aha__cu_copy,
    .scale = aha__cu_scale,
    .add = aha__cu_add,
    .sumsq = aha__cu_sumsq,
    .embedding_fwd = aha__cu_embedding_fwd,
    .embedding_bwd = aha__cu_embedding_bwd,
    .rmsnorm_fwd = aha__cu_rmsnorm_fwd,
    .rmsnorm_bwd = aha__cu_rmsnorm_bwd,
    .matmul = aha__cu_matmul,
    .matmul_bwd_dx = aha__cu_matmul_bwd_dx,
    .matmul_bwd_dw = aha__cu_matmul_bwd_dw,
    .rope_fwd = aha__cu_rope_fwd,
    .rope_bwd = aha__cu_rope_bwd,
    .attention_fwd = aha__cu_attention_fwd,
    .attention_bwd = aha__cu_attention_bwd,
    .kv_store = aha__cu_kv_store,
    .attention_cached = aha__cu_attention_cached,
    .swiglu_fwd = aha__cu_swiglu_fwd,
    .swiglu_bwd = aha__cu_swiglu_bwd,
    .logprob_fwd = aha__cu_logprob_fwd,
    .logprob_bwd = aha__cu_logprob_bwd,
    .grpo_loss = aha__cu_grpo_loss,
    .sft_loss = aha__cu_sft_loss,
    .adamw = aha__cu_adamw,
    .scatter_rows = aha__cu_scatter_rows,
    .sample = aha__cu_sample,
    .graph_begin = cu_graph_begin,
    .graph_end = cu_graph_end,
    .graph_launch = cu_graph_launch,
};

static aha_status cu_init(aha__cu_ctx *c, int device, aha_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return aha_errf(err, AHA_EDEVICE, "cuda:%d: no usable CUDA device (%s)", device,
                        cudaGetErrorString(e));
    }
    if (device >= n)
        return aha_errf(err, AHA_EINVAL, "cuda:%d: this machine has %d CUDA device(s)", device, n);
    AHA_CU_CHECK(cudaSetDevice(device));
    cudaDeviceProp p;
    AHA_CU_CHECK(cudaGetDeviceProperties(&p, device));
    if (p.major < 8)
        return aha_errf(err, AHA_EUNSUPPORTED, "cuda:%d: %s has compute capability %d.%d; bf16 needs 8.0+",
                        device, p.name, p.major, p.minor);
    c->sm_count = p.multiProcessorCount;
    c->smem_optin = p.sharedMemPerBlockOptin;
    AHA_CU_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    AHA_CUBLAS_CHECK(cublasLtCreate(&c->lt));
    c->lt_ws_size = (size_t)64 << 20;
    AHA_CU_CHECK(cudaMalloc(&c->lt_ws, c->lt_ws_size));
    return AHA_OK;
}

extern "C" aha_status aha_backend_cuda_create(int device, aha_backend **out, aha_err *err)
{
    *out = NULL;
    aha_backend *be = (aha_backend *)calloc(1, sizeof *be);
    aha__cu_ctx *c = (aha__cu_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return aha_errf(err, AHA_ENOMEM, "cuda backend: out of host memory");
    }
    c->device = device;
    be->ops = &cu_ops;
    be->ctx = c;
    be->act_dtype = AHA_DT_BF16;
    snprintf(be->device, sizeof be->device, "cuda:%d", device);
    const char *pe = getenv("AHA_CUDA_PROFILE");
    if (pe && *pe && strcmp(pe, "0") != 0) {
        c->prof = calloc(1, sizeof(cu_prof));
        if (c->prof) be->ops = &cu_ops_prof;
    }
    aha_status st = cu_init(c, device, err);
    if (st != AHA_OK) {
        cu_free(be);
        free(be);
        return st;
    }
    *out = be;
    return AHA_OK;
}
