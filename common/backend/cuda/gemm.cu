/* gemm.cu: the matmuls of a linear layer through cuBLASLt, row-major in the ops table's
 * terms, with transformers' weight layout w (N, K):
 *   forward  y (M, N)  = x (M, K) . w^T (+ bias, as a cuBLASLt epilogue)
 *   dx       dx (M, K) = dy (M, N) . w        (beta = 1 to accumulate)
 *   dw       dw (N, K) += dy^T . x            (fp32 output, beta = 1)
 * cuBLAS is column-major: a row-major (R, C) matrix is a column-major (C, R) one, so each
 * product is issued transposed (y^T = w . x^T etc.). Inputs BF16 (or F32), fp32 accumulation
 * (CUBLAS_COMPUTE_32F: no TF32 for fp32 inputs). The algorithm is chosen once per shape (the
 * fastest of the heuristic's first candidates, timed after an L2 flush: see tune) and cached,
 * because decode issues hundreds of small products per step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

static cudaDataType_t cu_type(aha_dtype dt) { return dt == AHA_DT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* D (m, n) col-major = alpha op(A) op(B) + beta C, C = D. A is (m, k) after op, B (k, n).
 * Descriptors, layouts and the algorithm are made once per configuration and kept in the
 * context's cache (only the bias pointer changes between calls). */
/* a strided batch: count products, operand b at base + b * stride elements (stride 0: shared) */
typedef struct {
    int count;
    int64_t sa, sb, sd, sbias;
} lt_batch;

/* ---- algorithm choice by timing (AHA_CUDA_GEMM_TUNE=1) ---------------------------------------
 * cuBLASLt's heuristic ranks algorithms without running them; at the decode step's small
 * products (M = 256 tokens) its first pick is often a split-K kernel plus a reduction launch.
 * The first sighting of a shape (never inside a graph recording) times the heuristic's first
 * TUNE_MAX candidates on the real operands and keeps the fastest: into the real output when
 * the product overwrites it (beta 0; the call itself writes it again right after), else into
 * scratch when that output is at most TUNE_FLUSH bytes (larger accumulating products keep the
 * heuristic's pick). Each timing follows an L2 flush (a TUNE_FLUSH memset): the weights come
 * from DRAM in the real flow, and timing them warm in L2, back to back, picked algorithms that
 * ran slower there (docs/gpu-notes.md, call 10 of the second session). Best of three runs each.
 * Measured on an H200 at the benchmark's workload: training +2.9 %, reference logprobs +3.1 %,
 * generation unchanged (its products already had the heuristic's pick as the fastest).
 * AHA_CUDA_GEMM_TUNE=0 turns it off. */
#define TUNE_MAX 8
#define TUNE_FLUSH (64u << 20)

static bool tune_on(void)
{
    const char *e = getenv("AHA_CUDA_GEMM_TUNE");
    return !(e && !strcmp(e, "0"));
}

static aha_status tune(aha_backend *be, aha__cu_algo_entry *ne, const cublasLtMatmulHeuristicResult_t *heur, int found,
                       const void *A, const void *B, void *D, float beta_real, size_t dbytes, const void *bias,
                       aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    if (beta_real != 0.0f && dbytes > TUNE_FLUSH) return AHA_OK;
    char *scratch = NULL;
    AHA_TRY(aha__cu_scratch(be, beta_real != 0.0f ? TUNE_FLUSH + dbytes : TUNE_FLUSH, (void **)&scratch, err));
    if (beta_real != 0.0f) D = scratch + TUNE_FLUSH;
    float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0 = NULL, e1 = NULL;
    AHA_CU_CHECK(cudaEventCreate(&e0));
    cudaError_t ce = cudaEventCreate(&e1);
    if (ce != cudaSuccess) {
        cudaEventDestroy(e0);
        return aha__cu_fail(err, "cudaEventCreate", __FILE__, __LINE__, cudaGetErrorString(ce));
    }
    if (bias) cublasLtMatmulDescSetAttribute(ne->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    float best = INFINITY;
    int pick = 0;
    for (int a = 0; a < found && ce == cudaSuccess; a++) {
        float t_a = INFINITY;
        for (int rep = 0; rep < 3 && ce == cudaSuccess; rep++) {
            cudaMemsetAsync(scratch, rep, TUNE_FLUSH, c->stream);
            cudaEventRecord(e0, c->stream);
            cublasStatus_t s = cublasLtMatmul(c->lt, ne->op, &alpha, A, ne->la, B, ne->lb, &beta, D, ne->ld, D, ne->ld,
                                              &heur[a].algo, c->lt_ws, c->lt_ws_size, c->stream);
            cudaEventRecord(e1, c->stream);
            ce = cudaEventSynchronize(e1);
            float ms = 0;
            if (s != CUBLAS_STATUS_SUCCESS) break; /* not runnable here: not a candidate */
            if (ce == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms < t_a) t_a = ms;
        }
        if (t_a < best) {
            best = t_a;
            pick = a;
        }
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    if (ce != cudaSuccess) return aha__cu_fail(err, "gemm tuning", __FILE__, __LINE__, cudaGetErrorString(ce));
    ne->algo = heur[pick].algo;
    return AHA_OK;
}

static aha_status lt_matmul(aha_backend *be, bool ta, bool tb, int m, int n, int k, const void *A,
                            aha_dtype adt, int lda, const void *B, aha_dtype bdt, int ldb, float beta,
                            void *D, aha_dtype ddt, int ldd, const void *bias, aha_dtype biasdt,
                            const lt_batch *bt, aha_err *err)
{
    aha__cu_ctx *c = aha__cu(be);
    float alpha = 1.0f;
    lt_batch one = {1, 0, 0, 0, 0};
    if (!bt) bt = &one;
    uint64_t key[8] = {((uint64_t)(unsigned)m << 32) | (unsigned)n,
                       ((uint64_t)(unsigned)k << 32) | ((unsigned)lda << 1) | (ta ? 1u : 0u),
                       ((uint64_t)(unsigned)ldb << 32) | ((unsigned)ldd << 1) | (tb ? 1u : 0u),
                       ((uint64_t)adt << 24) | ((uint64_t)bdt << 16) | ((uint64_t)ddt << 8) |
                           (bias ? 0x80u | (unsigned)biasdt : 0u) | ((uint64_t)(unsigned)bt->count << 32),
                       (uint64_t)bt->sa, (uint64_t)bt->sb, (uint64_t)bt->sd, (uint64_t)bt->sbias};
    aha__cu_algo_entry *e = NULL;
    for (int i = 0; i < c->n_algos; i++)
        if (!memcmp(c->algos[i].key, key, sizeof key)) {
            e = &c->algos[i];
            break;
        }
    if (!e) {
        aha__cu_algo_entry ne;
        memset(&ne, 0, sizeof ne);
        memcpy(ne.key, key, sizeof key);
        cublasLtMatmulPreference_t pref = NULL;
        cublasLtMatmulHeuristicResult_t heur[TUNE_MAX];
        cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bias_t = cu_type(biasdt);
        int found = 0;
        aha_status st = AHA_OK;
        cublasStatus_t s;
#define LT(call)                                                                         \
    do {                                                                                 \
        s = (call);                                                                      \
        if (s != CUBLAS_STATUS_SUCCESS) {                                                \
            st = aha__cu_fail(err, #call, __FILE__, __LINE__, aha__cublas_str(s));       \
            goto fail;                                                                   \
        }                                                                                \
    } while (0)
        LT(cublasLtMatmulDescCreate(&ne.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        LT(cublasLtMatmulDescSetAttribute(ne.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
        LT(cublasLtMatmulDescSetAttribute(ne.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
        if (bias) {
            LT(cublasLtMatmulDescSetAttribute(ne.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
            LT(cublasLtMatmulDescSetAttribute(ne.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
            LT(cublasLtMatmulDescSetAttribute(ne.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_t, sizeof bias_t));
        }
        LT(cublasLtMatrixLayoutCreate(&ne.la, cu_type(adt), ta ? k : m, ta ? m : k, lda));
        LT(cublasLtMatrixLayoutCreate(&ne.lb, cu_type(bdt), tb ? n : k, tb ? k : n, ldb));
        LT(cublasLtMatrixLayoutCreate(&ne.ld, cu_type(ddt), m, n, ldd));
        if (bt->count > 1) {
            int32_t cnt = bt->count;
            cublasLtMatrixLayout_t lays[3] = {ne.la, ne.lb, ne.ld};
            int64_t strides[3] = {bt->sa, bt->sb, bt->sd};
            for (int li = 0; li < 3; li++) {
                LT(cublasLtMatrixLayoutSetAttribute(lays[li], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &cnt, sizeof cnt));
                LT(cublasLtMatrixLayoutSetAttribute(lays[li], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                    &strides[li], sizeof strides[li]));
            }
            if (bias)
                LT(cublasLtMatmulDescSetAttribute(ne.op, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bt->sbias,
                                                  sizeof bt->sbias));
        }
        LT(cublasLtMatmulPreferenceCreate(&pref));
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_size,
                                                sizeof c->lt_ws_size));
        LT(cublasLtMatmulAlgoGetHeuristic(c->lt, ne.op, ne.la, ne.lb, ne.ld, ne.ld, pref, TUNE_MAX, heur, &found));
        if (found < 1) {
            st = aha_errf(err, AHA_EUNSUPPORTED, "cuBLASLt has no algorithm for %dx%dx%d (%s x %s -> %s)", m, n, k,
                          aha_dtype_name(adt), aha_dtype_name(bdt), aha_dtype_name(ddt));
            goto fail;
        }
#undef LT
        ne.algo = heur[0].algo;
        if (found > 1 && tune_on() && !c->capturing) {
            size_t dbytes = (size_t)ldd * n * aha_dtype_size(ddt) + (size_t)(bt->count - 1) * bt->sd * aha_dtype_size(ddt);
            st = tune(be, &ne, heur, found, A, B, D, beta, dbytes, bias, err);
            if (st != AHA_OK) goto fail;
        }
        cublasLtMatmulPreferenceDestroy(pref);
        if (c->n_algos == AHA__CU_ALGO_CACHE) {
            /* full: evict the oldest */
            aha__cu_algo_entry *o = &c->algos[0];
            cublasLtMatrixLayoutDestroy(o->ld);
            cublasLtMatrixLayoutDestroy(o->lb);
            cublasLtMatrixLayoutDestroy(o->la);
            cublasLtMatmulDescDestroy(o->op);
            memmove(&c->algos[0], &c->algos[1], sizeof c->algos[0] * (AHA__CU_ALGO_CACHE - 1));
            c->n_algos--;
        }
        c->algos[c->n_algos] = ne;
        e = &c->algos[c->n_algos++];
        goto run;
    fail:
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (ne.ld) cublasLtMatrixLayoutDestroy(ne.ld);
        if (ne.lb) cublasLtMatrixLayoutDestroy(ne.lb);
        if (ne.la) cublasLtMatrixLayoutDestroy(ne.la);
        if (ne.op) cublasLtMatmulDescDestroy(ne.op);
        return st;
    }
run:
    if (bias)
        AHA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    AHA_CUBLAS_CHECK(cublasLtMatmul(c->lt, e->op, &alpha, A, e->la, B, e->lb, &beta, D, e->ld, D, e->ld, &e->algo,
                                    c->lt_ws, c->lt_ws_size, c->stream));
    return AHA_OK;
}

/* profile segment named by the ops-table shape (M, K, N) */
static void prof_gemm(aha_backend *be, const char *what, int M, int K, int N)
{
    if (!aha__cu(be)->prof) return;
    char l[80];
    snprintf(l, sizeof l, "gemm %s M%d K%d N%d", what, M, K, N);
    aha__cu_prof_seg(be, l, 2.0 * M * K * N);
}

aha_status aha__cu_matmul(aha_backend *be, aha_tensor y, aha_tensor x, aha_tensor w, aha_tensor bias,
                          int M, int K, int N, aha_err *err)
{
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, "matmul", "x", x.dt);
    if (w.dt != x.dt) return aha__cu_bad_dtype(err, "matmul", "w (must match x)", w.dt);
    if (!aha__is_float(y.dt)) return aha__cu_bad_dtype(err, "matmul", "y", y.dt);
    if (!aha_tensor_is_none(bias) && bias.dt != y.dt)
        return aha__cu_bad_dtype(err, "matmul", "bias (must match y)", bias.dt);
    if (M <= 0 || N <= 0) return AHA_OK;
    /* y^T (N, M) = w (N, K) [col-major (K, N), transposed] . x^T [col-major (K, M)] */
    AHA_TRY(lt_matmul(be, true, false, N, M, K, w.data, w.dt, K, x.data, x.dt, K, 0.0f, y.data, y.dt, N,
                      aha_tensor_is_none(bias) ? NULL : bias.data, bias.dt, NULL, err));
    prof_gemm(be, "fwd", M, K, N);
    return AHA_OK;
}

aha_status aha__cu_matmul_bwd_dx(aha_backend *be, aha_tensor dx, aha_tensor dy, aha_tensor w, int M,
                                 int K, int N, bool accumulate, aha_err *err)
{
    if (!aha__is_float(dy.dt)) return aha__cu_bad_dtype(err, "matmul_bwd_dx", "dy", dy.dt);
    if (w.dt != dy.dt) return aha__cu_bad_dtype(err, "matmul_bwd_dx", "w (must match dy)", w.dt);
    if (!aha__is_float(dx.dt)) return aha__cu_bad_dtype(err, "matmul_bwd_dx", "dx", dx.dt);
    if (M <= 0 || K <= 0) return AHA_OK;
    /* dx^T (K, M) = w^T [col-major view of w is (K, N)] . dy^T [col-major (N, M)] */
    AHA_TRY(lt_matmul(be, false, false, K, M, N, w.data, w.dt, K, dy.data, dy.dt, N,
                      accumulate ? 1.0f : 0.0f, dx.data, dx.dt, K, NULL, AHA_DT_F32, NULL, err));
    prof_gemm(be, "dx", M, K, N);
    return AHA_OK;
}

template <typename T> __global__ void k_colsum(float *db, const T *dy, int M, int N)
{
    /* one thread per column, rows split over blockIdx.y; coalesced over columns; the unrolled
     * loads are independent, so a thread has several in flight */
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N) return;
    int per = (M + gridDim.y - 1) / gridDim.y;
    int r0 = blockIdx.y * per, r1 = min(M, r0 + per);
    float s = 0;
#pragma unroll 8
    for (int r = r0; r < r1; r++) s += aha__ld(dy, (int64_t)r * N + col);
    atomicAdd(db + col, s);
}

aha_status aha__cu_matmul_bwd_dw(aha_backend *be, aha_tensor dw, aha_tensor dbias, aha_tensor dy,
                                 aha_tensor x, int M, int K, int N, aha_err *err)
{
    if (!aha__is_float(dy.dt)) return aha__cu_bad_dtype(err, "matmul_bwd_dw", "dy", dy.dt);
    if (x.dt != dy.dt) return aha__cu_bad_dtype(err, "matmul_bwd_dw", "x (must match dy)", x.dt);
    if (dw.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "matmul_bwd_dw", "dw", dw.dt);
    if (!aha_tensor_is_none(dbias) && dbias.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "matmul_bwd_dw", "dbias", dbias.dt);
    if (M <= 0 || N <= 0 || K <= 0) return AHA_OK;
    /* dw^T (K, N) col-major += x^T [col-major (K, M)] . dy [col-major view (N, M), transposed] */
    AHA_TRY(lt_matmul(be, false, true, K, N, M, x.data, x.dt, K, dy.data, dy.dt, N, 1.0f, dw.data,
                      AHA_DT_F32, K, NULL, AHA_DT_F32, NULL, err));
    prof_gemm(be, "dw", M, K, N);
    if (!aha_tensor_is_none(dbias)) {
        AHA_TRY(aha__cu_colsum(be, dbias, dy, M, N, err));
        aha__cu_prof_seg(be, "dw bias column sums", 0);
    }
    return AHA_OK;
}

aha_status aha__cu_colsum(aha_backend *be, aha_tensor db, aha_tensor src, int M, int N, aha_err *err)
{
    /* ~32 rows per thread (64 left 10-12 us per call at 10,240 x 896: too few blocks) */
    int64_t ys = (M + 31) / 32;
    dim3 grid((N + 127) / 128, (unsigned)(ys < 1 ? 1 : ys > 1024 ? 1024 : ys));
    AHA__DISPATCH_FLOAT(src.dt, T, (k_colsum<T><<<grid, 128, 0, aha__cu(be)->stream>>>(
        (float *)db.data, (const T *)src.data, M, N)));
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

/* ---- strided batches of products sharing x (k and v; gate and up) -----------------------
 * One launch instead of nb: at decode sizes (M = 256) each product is a few microseconds of
 * fixed cost. AHA_CUDA_NO_BATCHED=1 issues them one by one instead (a cross-check). */
static bool batched_off(void)
{
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("AHA_CUDA_NO_BATCHED");
        off = e && *e && strcmp(e, "0") != 0;
    }
    return off;
}

aha_status aha__cu_matmul_batched(aha_backend *be, aha_tensor y, int64_t y_stride, aha_tensor x, aha_tensor w,
                                  int64_t w_stride, aha_tensor bias, int64_t bias_stride, int M, int K, int N, int nb,
                                  aha_err *err)
{
    if (nb < 1 || w_stride < (int64_t)N * K || y_stride < (int64_t)M * N ||
        (!aha_tensor_is_none(bias) && bias_stride < N))
        return aha_errf(err, AHA_EINVAL, "cuda matmul_batched: %d products with overlapping strides", nb);
    if (nb == 1 || batched_off()) {
        for (int b = 0; b < nb; b++)
            AHA_TRY(aha__cu_matmul(be, aha_tensor_at(y, b * y_stride), x, aha_tensor_at(w, b * w_stride),
                                   aha_tensor_is_none(bias) ? bias : aha_tensor_at(bias, b * bias_stride), M, K, N,
                                   err));
        return AHA_OK;
    }
    if (!aha__is_float(x.dt)) return aha__cu_bad_dtype(err, "matmul_batched", "x", x.dt);
    if (w.dt != x.dt) return aha__cu_bad_dtype(err, "matmul_batched", "w (must match x)", w.dt);
    if (!aha__is_float(y.dt)) return aha__cu_bad_dtype(err, "matmul_batched", "y", y.dt);
    if (!aha_tensor_is_none(bias) && bias.dt != y.dt)
        return aha__cu_bad_dtype(err, "matmul_batched", "bias (must match y)", bias.dt);
    if (M <= 0 || N <= 0) return AHA_OK;
    lt_batch bt = {nb, w_stride, 0, y_stride, aha_tensor_is_none(bias) ? 0 : bias_stride};
    aha_status st = lt_matmul(be, true, false, N, M, K, w.data, w.dt, K, x.data, x.dt, K, 0.0f, y.data, y.dt, N,
                              aha_tensor_is_none(bias) ? NULL : bias.data, bias.dt, &bt, err);
    if (st == AHA_EUNSUPPORTED) {
        /* no batched algorithm for this shape: one by one */
        for (int b = 0; b < nb; b++)
            AHA_TRY(aha__cu_matmul(be, aha_tensor_at(y, b * y_stride), x, aha_tensor_at(w, b * w_stride),
                                   aha_tensor_is_none(bias) ? bias : aha_tensor_at(bias, b * bias_stride), M, K, N,
                                   err));
        return AHA_OK;
    }
    AHA_TRY(st);
    if (aha__cu(be)->prof) {
        char l[80];
        snprintf(l, sizeof l, "gemm fwd x%d M%d K%d N%d", nb, M, K, N);
        aha__cu_prof_seg(be, l, 2.0 * nb * M * K * N);
    }
    return AHA_OK;
}

aha_status aha__cu_matmul_bwd_dw_batched(aha_backend *be, aha_tensor dw, int64_t dw_stride, aha_tensor dbias,
                                         int64_t dbias_stride, aha_tensor dy, int64_t dy_stride, aha_tensor x, int M,
                                         int K, int N, int nb, aha_err *err)
{
    if (nb < 1 || dw_stride < (int64_t)N * K || dy_stride < (int64_t)M * N ||
        (!aha_tensor_is_none(dbias) && dbias_stride < N))
        return aha_errf(err, AHA_EINVAL, "cuda matmul_bwd_dw_batched: %d products with overlapping strides", nb);
    if (nb == 1 || batched_off()) {
        for (int b = 0; b < nb; b++)
            AHA_TRY(aha__cu_matmul_bwd_dw(be, aha_tensor_at(dw, b * dw_stride),
                                          aha_tensor_is_none(dbias) ? dbias : aha_tensor_at(dbias, b * dbias_stride),
                                          aha_tensor_at(dy, b * dy_stride), x, M, K, N, err));
        return AHA_OK;
    }
    if (!aha__is_float(dy.dt)) return aha__cu_bad_dtype(err, "matmul_bwd_dw_batched", "dy", dy.dt);
    if (x.dt != dy.dt) return aha__cu_bad_dtype(err, "matmul_bwd_dw_batched", "x (must match dy)", x.dt);
    if (dw.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "matmul_bwd_dw_batched", "dw", dw.dt);
    if (!aha_tensor_is_none(dbias) && dbias.dt != AHA_DT_F32)
        return aha__cu_bad_dtype(err, "matmul_bwd_dw_batched", "dbias", dbias.dt);
    if (M <= 0 || N <= 0 || K <= 0) return AHA_OK;
    lt_batch bt = {nb, 0, dy_stride, dw_stride, 0};
    aha_status st = lt_matmul(be, false, true, K, N, M, x.data, x.dt, K, dy.data, dy.dt, N, 1.0f, dw.data, AHA_DT_F32,
                              K, NULL, AHA_DT_F32, &bt, err);
    if (st == AHA_EUNSUPPORTED) {
        for (int b = 0; b < nb; b++)
            AHA_TRY(aha__cu_matmul_bwd_dw(be, aha_tensor_at(dw, b * dw_stride),
                                          aha_tensor_is_none(dbias) ? dbias : aha_tensor_at(dbias, b * dbias_stride),
                                          aha_tensor_at(dy, b * dy_stride), x, M, K, N, err));
        return AHA_OK;
    }
    AHA_TRY(st);
    if (aha__cu(be)->prof) {
        char l[80];
        snprintf(l, sizeof l, "gemm dw x%d M%d K%d N%d", nb, M, K, N);
        aha__cu_prof_seg(be, l, 2.0 * nb * M * K * N);
    }
    if (!aha_tensor_is_none(dbias)) {
        for (int b = 0; b < nb; b++)
            AHA_TRY(aha__cu_colsum(be, aha_tensor_at(dbias, b * dbias_stride), aha_tensor_at(dy, b * dy_stride), M, N,
                                   err));
        aha__cu_prof_seg(be, "dw bias column sums", 0);
    }
    return AHA_OK;
}
