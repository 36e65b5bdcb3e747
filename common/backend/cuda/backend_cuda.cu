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
 * Every op of the table is wrapped and timed with CUDA events: outside graph recording the
 * stream is drained before the op (so its time is its own, not the queue's) and read after it;
 * inside a recording the events become event-record nodes of the graph (cudaEventRecordExternal)
 * and are read after every replay, so decode steps are timed as they really run (no per-op
 * synchronisation, no launch gaps). Ops may add sub-segments (aha__cu_prof_seg: cuBLASLt GEMMs
 * by shape with their TFLOP/s, the attention kernels one by one). The table goes to stderr
 * when the backend is freed. */
/* Every op of aha_backend_ops, in its declaration order (C++20 designated initializers keep
 * it): those before the graph entry points, then those after. Both tables below and the
 * profile's op names come from these lists; graph_begin / graph_end / graph_launch are not ops
 * and are not timed as ops. */
#define AHA__CU_OPS_HEAD(X)                                                                       \
    X(fill) X(copy) X(scale) X(add) X(sumsq) X(embedding_fwd) X(embedding_bwd) X(rmsnorm_fwd)    \
    X(rmsnorm_bwd) X(matmul) X(matmul_bwd_dx) X(matmul_bwd_dw) X(rope_fwd) X(rope_bwd)           \
    X(attention_fwd) X(attention_bwd) X(kv_store) X(attention_cached) X(swiglu_fwd)               \
    X(swiglu_bwd) X(logprob_fwd) X(logprob_bwd) X(grpo_loss) X(sft_loss) X(adamw)                 \
    X(scatter_rows) X(sample)
#define AHA__CU_OPS_TAIL(X) \
    X(add_rmsnorm) X(copy2d) X(rope_qk_store) X(rope_qkv) X(matmul_batched) X(matmul_bwd_dw_batched)
#define AHA__CU_OPS(X) AHA__CU_OPS_HEAD(X) AHA__CU_OPS_TAIL(X)

enum {
#define AHA__PROF_ID(op) PROF_##op,
    AHA__CU_OPS(AHA__PROF_ID) PROF_COUNT
#undef AHA__PROF_ID
};
static const char *const prof_names[] = {
#define AHA__PROF_NAME(op) #op,
    AHA__CU_OPS(AHA__PROF_NAME)
#undef AHA__PROF_NAME
};

#define PROF_LABELS 512
#define PROF_POOL 16384
enum { PT_OP_BEGIN, PT_OP_END, PT_SEG };

typedef struct {
    short type, lab;
    int ev; /* index into the event pool */
} prof_pt;

typedef struct {
    prof_pt *pts;
    int n, cap;
} prof_list;

typedef struct {
    int nlab;
    char lab[PROF_LABELS][64];
    double t[PROF_LABELS], flop[PROF_LABELS];
    long n[PROF_LABELS];
    cudaEvent_t pool[PROF_POOL];
    int pool_used;   /* events [0, pool_fixed) belong to recorded graphs; the rest is reused */
    int pool_fixed;
    prof_list cur;   /* the points of the op being timed (outside recording) */
    prof_list cap;   /* the points of the recording under way */
    prof_list graph[AHA__CU_GRAPHS]; /* per recorded graph, same index as ctx->graphs */
    bool broken;     /* an event call failed: stop timing, keep running */
} cu_prof;

static int prof_label(cu_prof *p, const char *name, double flop)
{
    for (int i = 0; i < p->nlab; i++)
        if (!strcmp(p->lab[i], name)) return i;
    if (p->nlab == PROF_LABELS) return -1;
    snprintf(p->lab[p->nlab], sizeof p->lab[0], "%s", name);
    p->flop[p->nlab] = flop;
    return p->nlab++;
}

static void prof_push(cu_prof *p, prof_list *l, int type, int lab, int ev)
{
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 256;
        prof_pt *np = (prof_pt *)realloc(l->pts, (size_t)nc * sizeof *np);
        if (!np) {
            p->broken = true;
            return;
        }
        l->pts = np;
        l->cap = nc;
    }
    l->pts[l->n++] = (prof_pt){(short)type, (short)lab, ev};
}

/* record one event on the stream and remember it as a point of the current list */
static void prof_point(aha__cu_ctx *c, int type, int lab)
{
    cu_prof *p = (cu_prof *)c->prof;
    if (p->broken) return;
    if (p->pool_used == PROF_POOL) {
        p->broken = true;
        return;
    }
    int ev = p->pool_used++;
    cudaError_t e = c->capturing ? cudaEventRecordWithFlags(p->pool[ev], c->stream, cudaEventRecordExternal)
                                 : cudaEventRecord(p->pool[ev], c->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        p->broken = true;
        return;
    }
    prof_push(p, c->capturing ? &p->cap : &p->cur, type, lab, ev);
}

/* charge the times between the (completed) events of l to their labels */
static void prof_account(cu_prof *p, const prof_list *l)
{
    int op_start = -1, prev = -1;
    for (int i = 0; i < l->n && !p->broken; i++) {
        const prof_pt *x = &l->pts[i];
        float ms = 0;
        if (x->type == PT_OP_BEGIN) {
            op_start = prev = x->ev;
            continue;
        }
        int from = x->type == PT_OP_END ? op_start : prev;
        if (from < 0 || x->lab < 0) continue;
        if (cudaEventElapsedTime(&ms, p->pool[from], p->pool[x->ev]) != cudaSuccess) {
            cudaGetLastError();
            continue;
        }
        p->t[x->lab] += 1e-3 * ms;
        p->n[x->lab]++;
        if (x->type == PT_SEG) prev = x->ev;
    }
}

void aha__cu_prof_seg(aha_backend *be, const char *label, double flop)
{
    aha__cu_ctx *c = aha__cu(be);
    cu_prof *p = (cu_prof *)c->prof;
    if (!p || p->broken) return;
    prof_point(c, PT_SEG, prof_label(p, label, flop));
}

template <typename Fn, Fn F, int ID> struct prof_wrap;
template <typename... A, aha_status (*F)(aha_backend *, A...), int ID>
struct prof_wrap<aha_status (*)(aha_backend *, A...), F, ID> {
    static aha_status call(aha_backend *be, A... a)
    {
        aha__cu_ctx *c = aha__cu(be);
        cu_prof *p = (cu_prof *)c->prof;
        if (!p || p->broken) return F(be, a...);
        int lab = prof_label(p, prof_names[ID], 0);
        if (c->capturing) {
            prof_point(c, PT_OP_BEGIN, lab);
            aha_status st = F(be, a...);
            prof_point(c, PT_OP_END, lab);
            return st;
        }
        cudaStreamSynchronize(c->stream);
        p->cur.n = 0;
        p->pool_used = p->pool_fixed;
        prof_point(c, PT_OP_BEGIN, lab);
        aha_status st = F(be, a...);
        prof_point(c, PT_OP_END, lab);
        cudaStreamSynchronize(c->stream);
        prof_account(p, &p->cur);
        return st;
    }
};

static void prof_print(const char *device, const cu_prof *p)
{
    int order[PROF_LABELS];
    for (int i = 0; i < p->nlab; i++) order[i] = i;
    for (int i = 1; i < p->nlab; i++)
        for (int j = i; j > 0 && p->t[order[j]] > p->t[order[j - 1]]; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    double total = 0;
    for (int i = 0; i < PROF_COUNT; i++) {
        for (int k = 0; k < p->nlab; k++)
            if (!strcmp(p->lab[k], prof_names[i])) total += p->t[k];
    }
    fprintf(stderr, "cuda op profile (%s, CUDA events; graphs timed inside replays)%s: %.3f s in ops\n", device,
            p->broken ? " [profiling stopped early]" : "", total);
    fprintf(stderr, "  %-40s %9s %6s %9s %10s %8s\n", "op / segment", "s", "% ops", "calls", "us/call", "TFLOP/s");
    for (int i = 0; i < p->nlab; i++) {
        int k = order[i];
        if (!p->n[k]) continue;
        double us = 1e6 * p->t[k] / (double)p->n[k];
        fprintf(stderr, "  %-40s %9.4f %6.1f %9ld %10.1f", p->lab[k], p->t[k], total > 0 ? 100 * p->t[k] / total : 0.0,
                p->n[k], us);
        if (p->flop[k] > 0) fprintf(stderr, " %8.1f", p->flop[k] / (us * 1e-6) / 1e12);
        fprintf(stderr, "\n");
    }
}

static void prof_free(cu_prof *p)
{
    for (int i = 0; i < PROF_POOL; i++)
        if (p->pool[i]) cudaEventDestroy(p->pool[i]);
    free(p->cur.pts);
    free(p->cap.pts);
    for (int i = 0; i < AHA__CU_GRAPHS; i++) free(p->graph[i].pts);
    free(p);
}

static cu_prof *prof_new(void)
{
    cu_prof *p = (cu_prof *)calloc(1, sizeof(cu_prof));
    if (!p) return NULL;
    for (int i = 0; i < PROF_POOL; i++)
        if (cudaEventCreate(&p->pool[i]) != cudaSuccess) {
            cudaGetLastError();
            prof_free(p);
            return NULL;
        }
    return p;
}

static aha_status cu_graph_begin(aha_backend *be, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    if (c->capturing) return aha_errf(err, AHA_EINVAL, "cuda graph_begin: already recording");
    AHA_CU_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = true;
    if (c->prof) ((cu_prof *)c->prof)->cap.n = 0;
    return AHA_OK;
}

static void graph_drop(aha__cu_ctx *c, int i)
{
    cudaGraphExecDestroy(c->graphs[i].exec);
    if (c->graphs[i].prof) {
        free(((prof_list *)c->graphs[i].prof)->pts);
        free(c->graphs[i].prof);
    }
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
    c->graphs[c->n_graphs].prof = NULL;
    if (c->prof) {
        /* the recording's events now belong to the graph: never reused for single ops */
        cu_prof *p = (cu_prof *)c->prof;
        prof_list *l = (prof_list *)calloc(1, sizeof *l);
        if (l) {
            *l = p->cap;
            memset(&p->cap, 0, sizeof p->cap);
        }
        p->pool_fixed = p->pool_used;
        c->graphs[c->n_graphs].prof = l;
    }
    c->n_graphs++;
    return AHA_OK;
}

static aha_status cu_graph_launch(aha_backend *be, uint64_t key, bool *found, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    *found = false;
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].key == key) {
            cu_prof *p = (cu_prof *)c->prof;
            if (p && !p->broken && c->graphs[i].prof) {
                /* whole replay under its own label, then every op inside it */
                cudaStreamSynchronize(c->stream);
                p->cur.n = 0;
                p->pool_used = p->pool_fixed;
                int lab = prof_label(p, "(graph replay, total)", 0);
                prof_point(c, PT_OP_BEGIN, lab);
                AHA_CU_CHECK(cudaGraphLaunch(c->graphs[i].exec, c->stream));
                prof_point(c, PT_OP_END, lab);
                cudaStreamSynchronize(c->stream);
                prof_account(p, &p->cur);
                prof_account(p, (const prof_list *)c->graphs[i].prof);
            } else {
                AHA_CU_CHECK(cudaGraphLaunch(c->graphs[i].exec, c->stream));
            }
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
    while (c->n_graphs > 0) graph_drop(c, c->n_graphs - 1);
    if (c->prof) {
        prof_print(be->device, (const cu_prof *)c->prof);
        prof_free((cu_prof *)c->prof);
        c->prof = NULL;
    }
    if (c->scratch) cudaFree(c->scratch);
    if (c->dec_part) cudaFree(c->dec_part);
    if (c->dec_cnt) cudaFree(c->dec_cnt);
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

/* the one table, with each op either called directly or through its profile wrapper */
#define CU_OPS_TABLE(OP)                                                                            \
    {                                                                                               \
        .name = "cuda", .free = cu_free, .buf_alloc = cu_buf_alloc, .buf_free = cu_buf_free,        \
        .buf_base = cu_buf_base, .buf_size = cu_buf_size, .to_device = cu_to_device,                \
        .to_host = cu_to_host, .synchronize = cu_synchronize, AHA__CU_OPS_HEAD(OP)                  \
        .graph_begin = cu_graph_begin, .graph_end = cu_graph_end, .graph_launch = cu_graph_launch, \
        AHA__CU_OPS_TAIL(OP)                                                                        \
    }
#define CU_OP_PLAIN(op) .op = aha__cu_##op,
#define CU_OP_PROF(op) .op = prof_wrap<decltype(&aha__cu_##op), &aha__cu_##op, PROF_##op>::call,

static const aha_backend_ops cu_ops_prof = CU_OPS_TABLE(CU_OP_PROF);
static const aha_backend_ops cu_ops = CU_OPS_TABLE(CU_OP_PLAIN);

#undef CU_OP_PROF
#undef CU_OP_PLAIN
#undef CU_OPS_TABLE

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
    /* 32 MiB of decode partials: 256 queries x 2 kv heads x 7 heads x 64 wide fit 36 splits */
    c->dec_part_floats = (size_t)8 << 20;
    c->dec_cnt_n = 1 << 16;
    AHA_CU_CHECK(cudaMalloc(&c->dec_part, c->dec_part_floats * sizeof(float)));
    AHA_CU_CHECK(cudaMalloc(&c->dec_cnt, (size_t)c->dec_cnt_n * sizeof(int)));
    AHA_CU_CHECK(cudaMemsetAsync(c->dec_cnt, 0, (size_t)c->dec_cnt_n * sizeof(int), c->stream));
    AHA_CU_CHECK(cudaStreamSynchronize(c->stream));
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
    aha_status st = cu_init(c, device, err);
    if (st == AHA_OK && pe && *pe && strcmp(pe, "0") != 0) {
        /* after cu_init: the events belong to the device */
        c->prof = prof_new();
        if (c->prof) be->ops = &cu_ops_prof;
    }
    if (st != AHA_OK) {
        cu_free(be);
        free(be);
        return st;
    }
    *out = be;
    return AHA_OK;
}
