/* test_cuda_ops.c: every op of the CUDA backend against the CPU backend (the fp32 reference)
 * on fresh random inputs (never zeros), at the shapes the Qwen2.5 family uses. Inputs are
 * rounded to bf16 on the host first, so both backends see identical values and the
 * comparison measures only the CUDA op's own rounding: BF16 outputs must match within 1e-2
 * relative (norm-wise and elementwise atol + rtol*|ref|), F32 outputs within 1e-5. Every
 * CUDA output is poisoned with NaN before the op, so an unwritten element fails. Suite
 * 'gpu': runs only on a machine with a GPU; exits 77 (skip) when none is present. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "backend/backend.h"
#include "base/rng.h"
#include "model/sample.h"

static aha_backend *cpu, *gpu;
static aha_rng rng;

/* ---- buffers: every tensor of a check is freed at its end ---- */
typedef struct {
    aha_backend *be;
    aha_buf *b;
} held;
static held bufs[512];
static int nbufs;

static void release(void)
{
    for (int i = 0; i < nbufs; i++) bufs[i].be->ops->buf_free(bufs[i].be, bufs[i].b);
    nbufs = 0;
}

static void die(const char *what, aha_err *err)
{
    fprintf(stderr, "%s: %s\n", what, err->msg);
    exit(1);
}

static aha_tensor alloc_t(aha_backend *be, int64_t n, aha_dtype dt)
{
    aha_err err = {0};
    aha_buf *b = NULL;
    if (be->ops->buf_alloc(be, (size_t)(n > 0 ? n : 1) * aha_dtype_size(dt), &b, &err) != AHA_OK)
        die("buf_alloc", &err);
    AHA_ASSERT(nbufs < (int)AHA_ARRAY_LEN(bufs));
    bufs[nbufs++] = (held){be, b};
    aha_tensor t = {be->ops->buf_base(b), dt};
    if (dt == AHA_DT_F32 || dt == AHA_DT_BF16)
        if (be->ops->fill(be, t, n, NAN, &err) != AHA_OK) die("fill", &err);
    return t;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static aha_tensor up(aha_backend *be, const float *h, int64_t n, aha_dtype dt)
{
    aha_err err = {0};
    aha_tensor t = alloc_t(be, n, dt);
    if (dt == AHA_DT_BF16) {
        uint16_t *b = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) b[i] = to_bf16(h[i]);
        if (be->ops->to_device(be, t, b, (size_t)n * 2, &err) != AHA_OK) die("to_device", &err);
        free(b);
    } else {
        if (be->ops->to_device(be, t, h, (size_t)n * aha_dtype_size(dt), &err) != AHA_OK)
            die("to_device", &err);
    }
    return t;
}

static float *down(aha_backend *be, aha_tensor t, int64_t n)
{
    aha_err err = {0};
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (t.dt == AHA_DT_BF16) {
        uint16_t *b = malloc((size_t)n * 2);
        if (be->ops->to_host(be, b, t, (size_t)n * 2, &err) != AHA_OK) die("to_host", &err);
        for (int64_t i = 0; i < n; i++) h[i] = from_bf16(b[i]);
        free(b);
    } else {
        if (be->ops->to_host(be, h, t, (size_t)n * sizeof(float), &err) != AHA_OK) die("to_host", &err);
    }
    return h;
}

/* bit-for-bit equality of n elements of two device tensors */
static void same_dev(const char *what, aha_tensor x, aha_tensor y, int64_t n)
{
    float *a = down(gpu, x, n), *b = down(gpu, y, n);
    CHECK(!memcmp(a, b, (size_t)n * sizeof(float)), "%s", what);
    free(a);
    free(b);
}

/* random values rounded to bf16, never all zero */
static float *rnd(int64_t n, float scale, float offset)
{
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = from_bf16(to_bf16(offset + scale * (float)aha_rng_normal(&rng)));
    return h;
}

static int32_t *rnd_ids(int64_t n, int V)
{
    int32_t *x = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = (int32_t)aha_rng_below(&rng, (uint64_t)V);
    return x;
}

static aha_tensor up_i32(aha_backend *be, const int32_t *h, int64_t n)
{
    aha_err err = {0};
    aha_tensor t = alloc_t(be, n, AHA_DT_I32);
    if (be->ops->to_device(be, t, h, (size_t)n * 4, &err) != AHA_OK) die("to_device", &err);
    return t;
}

/* norm-wise relative error <= tol and every element within aslack*tol*rms(ref) + tol*|ref| */
static void compare_slack(const char *what, aha_tensor got_t, const float *ref, int64_t n, double tol,
                          double aslack);
static void compare(const char *what, aha_tensor got_t, const float *ref, int64_t n, double tol)
{
    compare_slack(what, got_t, ref, n, tol, 1.0);
}
static void compare_slack(const char *what, aha_tensor got_t, const float *ref, int64_t n, double tol,
                          double aslack)
{
    float *got = down(gpu, got_t, n);
    double rel = th_rel_err(what, got, ref, n);
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double atol = aslack * tol * sqrt(ss / (double)(n > 0 ? n : 1));
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= atol + tol * fabs(ref[i]))) {
            if (first < 0) first = i;
            bad++;
        }
    }
    CHECK(rel <= tol, "%s: relative error %.3e > %.1e", what, rel, tol);
    CHECK(bad == 0, "%s: %lld elements outside atol %.3e + rtol %.1e (first [%lld] %g vs %g)", what,
          (long long)bad, atol, tol, (long long)first, first >= 0 ? got[first] : 0.0, first >= 0 ? ref[first] : 0.0);
    free(got);
}

static void compare_dev(const char *what, aha_tensor got_t, aha_tensor ref_t, int64_t n, double tol)
{
    float *ref = down(cpu, ref_t, n);
    compare(what, got_t, ref, n, tol);
    free(ref);
}

#define OK_BOTH(call_cpu, call_gpu)                                                    \
    do {                                                                               \
        aha_err e1 = {0}, e2 = {0};                                                    \
        CHECK((call_cpu) == AHA_OK, "cpu %s: %s", #call_cpu, e1.msg);                   \
        CHECK((call_gpu) == AHA_OK, "cuda %s: %s", #call_gpu, e2.msg);                  \
    } while (0)

static const double BF = 1e-2, F32 = 1e-5;
#define BF16 AHA_DT_BF16
#define FP32 AHA_DT_F32

/* ------------------------------------------------------------------------------------------ */

static void t_elementwise(void)
{
    fprintf(stderr, "== elementwise\n");
    int64_t n = 1000003;
    float *a = rnd(n, 1.5f, 0.2f), *b = rnd(n, 0.7f, -0.1f);
    aha_tensor ca = up(cpu, a, n, FP32), cb = up(cpu, b, n, FP32);
    aha_tensor ga = up(gpu, a, n, BF16), gb = up(gpu, b, n, BF16);
    /* add, bf16 and mixed f32 + bf16 */
    aha_tensor cy = alloc_t(cpu, n, FP32), gy = alloc_t(gpu, n, BF16), gy32 = alloc_t(gpu, n, FP32);
    OK_BOTH(cpu->ops->add(cpu, cy, ca, cb, n, &e1), gpu->ops->add(gpu, gy, ga, gb, n, &e2));
    compare_dev("add bf16", gy, cy, n, BF);
    aha_tensor ga32 = up(gpu, a, n, FP32);
    OK_BOTH(AHA_OK, gpu->ops->add(gpu, gy32, ga32, gb, n, &e2));
    compare_dev("add f32+bf16 -> f32", gy32, cy, n, F32);
    /* copy conversions and scale */
    aha_tensor g32 = alloc_t(gpu, n, FP32);
    OK_BOTH(AHA_OK, gpu->ops->copy(gpu, g32, ga, n, &e2));
    compare("copy bf16 -> f32 (exact)", g32, a, n, 0.0);
    OK_BOTH(cpu->ops->scale(cpu, ca, n, -0.37f, &e1), gpu->ops->scale(gpu, g32, n, -0.37f, &e2));
    compare_dev("scale f32", g32, ca, n, F32);
    aha_tensor gbf = alloc_t(gpu, n, BF16);
    OK_BOTH(AHA_OK, gpu->ops->copy(gpu, gbf, g32, n, &e2));
    compare_dev("copy f32 -> bf16", gbf, ca, n, BF);
    /* fill */
    OK_BOTH(cpu->ops->fill(cpu, cy, n, 0.625f, &e1), gpu->ops->fill(gpu, gy, n, 0.625f, &e2));
    compare_dev("fill", gy, cy, n, 0.0);
    /* sumsq: f32 accumulator, compared with a double host sum */
    double want = 0;
    for (int64_t i = 0; i < n; i++) want += (double)a[i] * a[i];
    float z = 0;
    aha_tensor acc = up(gpu, &z, 1, FP32);
    OK_BOTH(AHA_OK, gpu->ops->sumsq(gpu, acc, ga, n, &e2));
    OK_BOTH(AHA_OK, gpu->ops->sumsq(gpu, acc, ga32, n, &e2));
    float wantf = (float)(2 * want);
    compare("sumsq (bf16 + f32 input)", acc, &wantf, 1, F32);
    /* swiglu: g and u are the bf16 values both backends see (silu' has a zero near g = -1.28,
     * where a rounding difference in g would dominate dg) */
    float *gh = down(gpu, gbf, n);
    ca = up(cpu, gh, n, FP32);
    free(gh);
    aha_tensor cg = alloc_t(cpu, n, FP32), cdg = alloc_t(cpu, n, FP32), cdu = alloc_t(cpu, n, FP32);
    aha_tensor gg = alloc_t(gpu, n, BF16), gdg = alloc_t(gpu, n, BF16), gdu = alloc_t(gpu, n, BF16);
    float *d = rnd(n, 1.0f, 0.0f);
    aha_tensor cd = up(cpu, d, n, FP32), gd = up(gpu, d, n, BF16);
    OK_BOTH(cpu->ops->swiglu_fwd(cpu, cg, ca, cb, n, &e1), gpu->ops->swiglu_fwd(gpu, gg, gbf, gb, n, &e2));
    compare_dev("swiglu_fwd", gg, cg, n, BF);
    OK_BOTH(cpu->ops->swiglu_bwd(cpu, cdg, cdu, cd, ca, cb, n, &e1),
            gpu->ops->swiglu_bwd(gpu, gdg, gdu, gd, gbf, gb, n, &e2));
    compare_dev("swiglu_bwd dg", gdg, cdg, n, BF);
    compare_dev("swiglu_bwd du", gdu, cdu, n, BF);
    /* a multiple of 8 elements: the 16-byte-access kernels */
    int64_t n8 = n - n % 8;
    aha_tensor vg = alloc_t(gpu, n8, BF16), vdg = alloc_t(gpu, n8, BF16), vdu = alloc_t(gpu, n8, BF16);
    OK_BOTH(AHA_OK, gpu->ops->swiglu_fwd(gpu, vg, gbf, gb, n8, &e2));
    compare_dev("swiglu_fwd (n % 8 == 0)", vg, cg, n8, BF);
    OK_BOTH(AHA_OK, gpu->ops->swiglu_bwd(gpu, vdg, vdu, gd, gbf, gb, n8, &e2));
    compare_dev("swiglu_bwd dg (n % 8 == 0)", vdg, cdg, n8, BF);
    compare_dev("swiglu_bwd du (n % 8 == 0)", vdu, cdu, n8, BF);
    free(a);
    free(b);
    free(d);
    release();
}

static void t_embedding(void)
{
    fprintf(stderr, "== embedding\n");
    int V = 5000, C = 896, N = 700;
    float *tab = rnd((int64_t)V * C, 0.02f, 0.0f), *dout = rnd((int64_t)N * C, 1.0f, 0.0f);
    int32_t *ids = rnd_ids(N, V);
    for (int i = 0; i < 50; i++) ids[i] = ids[N - 1 - i]; /* repeated ids must accumulate */
    aha_tensor cid = up_i32(cpu, ids, N), gid = up_i32(gpu, ids, N);
    aha_tensor ct = up(cpu, tab, (int64_t)V * C, FP32), gt = up(gpu, tab, (int64_t)V * C, BF16);
    aha_tensor co = alloc_t(cpu, (int64_t)N * C, FP32), go = alloc_t(gpu, (int64_t)N * C, BF16);
    OK_BOTH(cpu->ops->embedding_fwd(cpu, co, cid, ct, N, C, &e1),
            gpu->ops->embedding_fwd(gpu, go, gid, gt, N, C, &e2));
    compare_dev("embedding_fwd", go, co, (int64_t)N * C, 0.0);
    float *g0 = rnd((int64_t)V * C, 0.01f, 0.0f);
    aha_tensor cdt = up(cpu, g0, (int64_t)V * C, FP32), gdt = up(gpu, g0, (int64_t)V * C, FP32);
    aha_tensor cdo = up(cpu, dout, (int64_t)N * C, FP32), gdo = up(gpu, dout, (int64_t)N * C, BF16);
    OK_BOTH(cpu->ops->embedding_bwd(cpu, cdt, cid, cdo, N, C, &e1),
            gpu->ops->embedding_bwd(gpu, gdt, gid, gdo, N, C, &e2));
    compare_dev("embedding_bwd (+=, repeated ids)", gdt, cdt, (int64_t)V * C, F32);
    /* scatter_rows: N distinct destination rows of a (V, C) table */
    int32_t *perm = malloc((size_t)V * 4);
    for (int i = 0; i < V; i++) perm[i] = i;
    for (int i = V - 1; i > 0; i--) {
        int j = (int)aha_rng_below(&rng, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    aha_tensor cpi = up_i32(cpu, perm, N), gpi = up_i32(gpu, perm, N);
    aha_tensor cst = up(cpu, tab, (int64_t)V * C, FP32), gst = up(gpu, tab, (int64_t)V * C, BF16);
    OK_BOTH(cpu->ops->scatter_rows(cpu, cst, cpi, cdo, N, C, &e1), gpu->ops->scatter_rows(gpu, gst, gpi, gdo, N, C, &e2));
    compare_dev("scatter_rows", gst, cst, (int64_t)V * C, 0.0);
    free(perm);
    free(tab);
    free(dout);
    free(ids);
    free(g0);
    release();
}

static void t_rmsnorm(int N, int C, const char *what)
{
    fprintf(stderr, "== rmsnorm %s (N %d, C %d)\n", what, N, C);
    int64_t n = (int64_t)N * C;
    float *x = rnd(n, 2.0f, 0.3f), *w = rnd(C, 0.1f, 1.0f), *dy = rnd(n, 1.0f, 0.0f), *dx0 = rnd(n, 0.5f, 0.0f);
    float *dw0 = rnd(C, 0.1f, 0.0f);
    aha_tensor cx = up(cpu, x, n, FP32), gx = up(gpu, x, n, BF16);
    aha_tensor cw = up(cpu, w, C, FP32), gw = up(gpu, w, C, BF16);
    aha_tensor co = alloc_t(cpu, n, FP32), go = alloc_t(gpu, n, BF16);
    aha_tensor cr = alloc_t(cpu, N, FP32), gr = alloc_t(gpu, N, FP32);
    OK_BOTH(cpu->ops->rmsnorm_fwd(cpu, co, cr, cx, cw, N, C, 1e-6f, &e1),
            gpu->ops->rmsnorm_fwd(gpu, go, gr, gx, gw, N, C, 1e-6f, &e2));
    compare_dev("rmsnorm_fwd out", go, co, n, BF);
    compare_dev("rmsnorm_fwd rstd", gr, cr, N, F32);
    aha_tensor cdy = up(cpu, dy, n, FP32), gdy = up(gpu, dy, n, BF16);
    for (int accum = 0; accum < 2; accum++) {
        aha_tensor cdx = up(cpu, dx0, n, FP32), gdx = up(gpu, dx0, n, BF16);
        aha_tensor cdw = up(cpu, dw0, C, FP32), gdw = up(gpu, dw0, C, FP32);
        if (!accum) {
            cpu->ops->fill(cpu, cdx, n, NAN, NULL);
            gpu->ops->fill(gpu, gdx, n, NAN, NULL);
        }
        OK_BOTH(cpu->ops->rmsnorm_bwd(cpu, cdx, cdw, cdy, cx, cw, cr, N, C, accum, &e1),
                gpu->ops->rmsnorm_bwd(gpu, gdx, gdw, gdy, gx, gw, gr, N, C, accum, &e2));
        compare_dev(accum ? "rmsnorm_bwd dx (+=)" : "rmsnorm_bwd dx", gdx, cdx, n, BF);
        compare_dev("rmsnorm_bwd dw (+=)", gdw, cdw, C, F32 * 10);
    }
    free(x);
    free(w);
    free(dy);
    free(dx0);
    free(dw0);
    release();
}

/* the fused residual add + norm against the CPU's add then rmsnorm_fwd, and against the GPU's
 * own unfused pair (same rounding of the sum: the two must agree to the last bit) */
static void t_add_rmsnorm(int N, int C)
{
    fprintf(stderr, "== add_rmsnorm (N %d, C %d)\n", N, C);
    CHECK(gpu->ops->add_rmsnorm != NULL, "cuda backend offers add_rmsnorm");
    if (!gpu->ops->add_rmsnorm) return;
    int64_t n = (int64_t)N * C;
    float *a = rnd(n, 2.0f, 0.3f), *b = rnd(n, 1.0f, -0.2f), *w = rnd(C, 0.1f, 1.0f);
    aha_tensor cw = up(cpu, w, C, FP32);
    aha_tensor ga = up(gpu, a, n, BF16), gb = up(gpu, b, n, BF16), gw = up(gpu, w, C, BF16);
    /* the sum is stored as bf16 and the norm reads the stored value: the CPU reference gets
     * the same rounded sum */
    float *yh = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) yh[i] = from_bf16(to_bf16(a[i] + b[i]));
    aha_tensor cy = up(cpu, yh, n, FP32), co = alloc_t(cpu, n, FP32), cr = alloc_t(cpu, N, FP32);
    aha_tensor gy = alloc_t(gpu, n, BF16), go = alloc_t(gpu, n, BF16), gr = alloc_t(gpu, N, FP32);
    OK_BOTH(AHA_OK, gpu->ops->add(gpu, gy, ga, gb, n, &e2));
    compare("add (bf16 sum)", gy, yh, n, BF);
    OK_BOTH(cpu->ops->rmsnorm_fwd(cpu, co, cr, cy, cw, N, C, 1e-6f, &e1),
            gpu->ops->rmsnorm_fwd(gpu, go, gr, gy, gw, N, C, 1e-6f, &e2));
    /* fused, in place on a copy of a (y aliases a, as the model uses it) */
    aha_tensor fy = up(gpu, a, n, BF16), fo = alloc_t(gpu, n, BF16), fr = alloc_t(gpu, N, FP32);
    OK_BOTH(AHA_OK, gpu->ops->add_rmsnorm(gpu, fy, fo, fr, fy, gb, gw, N, C, 1e-6f, &e2));
    compare_dev("add_rmsnorm y", fy, cy, n, BF);
    compare_dev("add_rmsnorm out", fo, co, n, BF);
    compare_dev("add_rmsnorm rstd", fr, cr, N, F32);
    same_dev("add_rmsnorm differs from add + rmsnorm_fwd on the GPU", go, fo, n);
    free(yh);
    free(a);
    free(b);
    free(w);
    release();
}

/* copy2d: rows of a pitched source into a pitched destination; the rest of dst untouched */
static void t_copy2d(void)
{
    fprintf(stderr, "== copy2d\n");
    CHECK(gpu->ops->copy2d != NULL, "cuda backend offers copy2d");
    if (!gpu->ops->copy2d) return;
    int rows = 48, sp = 1000, dp = 700, wdt = 300;
    float *src = rnd((int64_t)rows * sp, 1.0f, 0.0f), *dst = rnd((int64_t)rows * dp, 1.0f, 5.0f);
    aha_tensor gs = up(gpu, src, (int64_t)rows * sp, BF16), gd = up(gpu, dst, (int64_t)rows * dp, BF16);
    OK_BOTH(AHA_OK, gpu->ops->copy2d(gpu, aha_tensor_at(gd, 17), dp, aha_tensor_at(gs, 33), sp, wdt, rows, &e2));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < wdt; c++) dst[(int64_t)r * dp + 17 + c] = src[(int64_t)r * sp + 33 + c];
    compare("copy2d", gd, dst, (int64_t)rows * dp, 0.0);
    free(src);
    free(dst);
    release();
}

/* two products sharing x, operands a fixed stride apart (with a gap, as in the model's
 * buffers): the strided-batch ops against the CPU's separate products */
static void t_matmul_batched(int M, int K, int N, bool bias)
{
    fprintf(stderr, "== matmul_batched x2 M %d K %d N %d%s\n", M, K, N, bias ? " + bias" : "");
    CHECK(gpu->ops->matmul_batched && gpu->ops->matmul_bwd_dw_batched, "cuda backend offers batched matmuls");
    if (!gpu->ops->matmul_batched || !gpu->ops->matmul_bwd_dw_batched) return;
    int64_t ws = (int64_t)N * K + 64, ys = (int64_t)M * N + 128, bs = N + 64, nw = 2 * ws, ny = 2 * ys;
    float *x = rnd((int64_t)M * K, 1.0f, 0.0f), *w = rnd(nw, 0.03f, 0.0f), *b = rnd(2 * bs, 0.1f, 0.0f);
    float *dy = rnd(ny, 1.0f, 0.0f), *dw0 = rnd(nw, 0.1f, 0.0f), *db0 = rnd(2 * bs, 0.1f, 0.0f);
    aha_tensor cx = up(cpu, x, (int64_t)M * K, FP32), gx = up(gpu, x, (int64_t)M * K, BF16);
    aha_tensor cw = up(cpu, w, nw, FP32), gw = up(gpu, w, nw, BF16);
    aha_tensor cb = up(cpu, b, 2 * bs, FP32), gb = up(gpu, b, 2 * bs, BF16);
    aha_tensor cy = alloc_t(cpu, ny, FP32), gy = alloc_t(gpu, ny, BF16);
    for (int i = 0; i < 2; i++)
        OK_BOTH(cpu->ops->matmul(cpu, aha_tensor_at(cy, i * ys), cx, aha_tensor_at(cw, i * ws),
                                 bias ? aha_tensor_at(cb, i * bs) : aha_tensor_none(), M, K, N, &e1),
                AHA_OK);
    OK_BOTH(AHA_OK, gpu->ops->matmul_batched(gpu, gy, ys, gx, gw, ws, bias ? gb : aha_tensor_none(), bias ? bs : 0,
                                             M, K, N, 2, &e2));
    compare_dev("matmul_batched y[0]", gy, cy, (int64_t)M * N, BF);
    compare_dev("matmul_batched y[1]", aha_tensor_at(gy, ys), aha_tensor_at(cy, ys), (int64_t)M * N, BF);
    aha_tensor cdy = up(cpu, dy, ny, FP32), gdy = up(gpu, dy, ny, BF16);
    aha_tensor cdw = up(cpu, dw0, nw, FP32), gdw = up(gpu, dw0, nw, FP32);
    aha_tensor cdb = up(cpu, db0, 2 * bs, FP32), gdb = up(gpu, db0, 2 * bs, FP32);
    for (int i = 0; i < 2; i++)
        OK_BOTH(cpu->ops->matmul_bwd_dw(cpu, aha_tensor_at(cdw, i * ws),
                                        bias ? aha_tensor_at(cdb, i * bs) : aha_tensor_none(),
                                        aha_tensor_at(cdy, i * ys), cx, M, K, N, &e1),
                AHA_OK);
    OK_BOTH(AHA_OK, gpu->ops->matmul_bwd_dw_batched(gpu, gdw, ws, bias ? gdb : aha_tensor_none(), bias ? bs : 0, gdy,
                                                    ys, gx, M, K, N, 2, &e2));
    /* the whole buffers: the gaps between the products must be untouched */
    compare_dev("matmul_bwd_dw_batched dw (+=, fp32, gaps kept)", gdw, cdw, nw, F32);
    if (bias) compare_dev("matmul_bwd_dw_batched dbias (+=, fp32)", gdb, cdb, 2 * bs, F32);
    free(x);
    free(w);
    free(b);
    free(dy);
    free(dw0);
    free(db0);
    release();
}

static void t_matmul(int M, int K, int N, bool bias)
{
    fprintf(stderr, "== matmul M %d K %d N %d%s\n", M, K, N, bias ? " + bias" : "");
    float *x = rnd((int64_t)M * K, 1.0f, 0.0f), *w = rnd((int64_t)N * K, 0.03f, 0.0f), *b = rnd(N, 0.1f, 0.0f);
    float *dy = rnd((int64_t)M * N, 1.0f, 0.0f), *dx0 = rnd((int64_t)M * K, 0.5f, 0.0f);
    float *dw0 = rnd((int64_t)N * K, 0.1f, 0.0f), *db0 = rnd(N, 0.1f, 0.0f);
    aha_tensor cx = up(cpu, x, (int64_t)M * K, FP32), gx = up(gpu, x, (int64_t)M * K, BF16);
    aha_tensor cw = up(cpu, w, (int64_t)N * K, FP32), gw = up(gpu, w, (int64_t)N * K, BF16);
    aha_tensor cb = bias ? up(cpu, b, N, FP32) : aha_tensor_none();
    aha_tensor gb = bias ? up(gpu, b, N, BF16) : aha_tensor_none();
    aha_tensor cy = alloc_t(cpu, (int64_t)M * N, FP32), gy = alloc_t(gpu, (int64_t)M * N, BF16);
    OK_BOTH(cpu->ops->matmul(cpu, cy, cx, cw, cb, M, K, N, &e1),
            gpu->ops->matmul(gpu, gy, gx, gw, gb, M, K, N, &e2));
    compare_dev("matmul y", gy, cy, (int64_t)M * N, BF);
    aha_tensor cdy = up(cpu, dy, (int64_t)M * N, FP32), gdy = up(gpu, dy, (int64_t)M * N, BF16);
    for (int accum = 0; accum < 2; accum++) {
        aha_tensor cdx = up(cpu, dx0, (int64_t)M * K, FP32), gdx = up(gpu, dx0, (int64_t)M * K, BF16);
        if (!accum) {
            cpu->ops->fill(cpu, cdx, (int64_t)M * K, NAN, NULL);
            gpu->ops->fill(gpu, gdx, (int64_t)M * K, NAN, NULL);
        }
        OK_BOTH(cpu->ops->matmul_bwd_dx(cpu, cdx, cdy, cw, M, K, N, accum, &e1),
                gpu->ops->matmul_bwd_dx(gpu, gdx, gdy, gw, M, K, N, accum, &e2));
        compare_dev(accum ? "matmul dx (+=)" : "matmul dx", gdx, cdx, (int64_t)M * K, BF);
    }
    aha_tensor cdw = up(cpu, dw0, (int64_t)N * K, FP32), gdw = up(gpu, dw0, (int64_t)N * K, FP32);
    aha_tensor cdb = bias ? up(cpu, db0, N, FP32) : aha_tensor_none();
    aha_tensor gdb = bias ? up(gpu, db0, N, FP32) : aha_tensor_none();
    OK_BOTH(cpu->ops->matmul_bwd_dw(cpu, cdw, cdb, cdy, cx, M, K, N, &e1),
            gpu->ops->matmul_bwd_dw(gpu, gdw, gdb, gdy, gx, M, K, N, &e2));
    compare_dev("matmul dw (+=, fp32)", gdw, cdw, (int64_t)N * K, F32);
    if (bias) compare_dev("matmul dbias (+=, fp32)", gdb, cdb, N, F32);
    free(x);
    free(w);
    free(b);
    free(dy);
    free(dx0);
    free(dw0);
    free(db0);
    release();
}

/* a device tensor of n elements starting off elements into its allocation (off 1 makes the
 * rows 2- or 4-byte aligned only, which sends the 16-byte kernels to their element paths) */
static aha_tensor up_at(aha_backend *be, const float *h, int64_t n, aha_dtype dt, int off)
{
    aha_err err = {0};
    aha_tensor t = aha_tensor_at(alloc_t(be, n + off, dt), off);
    if (dt == AHA_DT_BF16) {
        uint16_t *b = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) b[i] = to_bf16(h[i]);
        if (be->ops->to_device(be, t, b, (size_t)n * 2, &err) != AHA_OK) die("to_device", &err);
        free(b);
    } else if (be->ops->to_device(be, t, h, (size_t)n * aha_dtype_size(dt), &err) != AHA_OK) {
        die("to_device", &err);
    }
    return t;
}

/* Tolerance of a RoPE output of dtype gdt at positions below pmax. BF16: the bf16 bound. F32:
 * both sides take cos / sin of the same fp32 angle pos * inv_freq, but inv_freq comes from
 * CUDA's powf on the GPU and glibc's on the CPU, which may differ by an ulp or two; an ulp of
 * inv_freq (<= 1) moves the angle by up to pos * 2^-24, so 2 ulp at pmax widen the bound by
 * pmax * 2^-22 (1e-5 + 1.9e-6 at positions below 8, 7.8e-3 at 32k). */
static double rope_tol(aha_dtype gdt, int pmax)
{
    return gdt == BF16 ? BF : F32 + (double)pmax * ldexp(1.0, -22);
}

/* the fused rope of q and k + KV-cache store against the unfused GPU ops (same values to the
 * bit) and the CPU's rope_fwd. Tokens alternate over the cache's slots; positions are distinct
 * within a slot and reach max_seq - 1 (max_seq 32768 tests the accurate sincosf at ~3e4 rad).
 * off: element offset of every GPU tensor (1: unaligned rows). */
/* rope_qkv on the fused rows (q heads, k heads, v heads) of the same q, k, v: the same bits as
 * rope_qk_store's q, k and caches (rq, rk, rkc, rvc, against the CPU above) and v unchanged
 * (uv: v as uploaded); with k and v none only q and the caches are written; without a cache,
 * q, k and v */
static void t_rope_qkv(const float *q, const float *k, const float *v, const float *c0, aha_tensor gs, aha_tensor gp,
                       aha_tensor rq, aha_tensor rk, aha_tensor uv, aha_tensor rkc, aha_tensor rvc, int N, int H,
                       int KV, int D, int max_seq, int slots_n, aha_dtype gdt, int off)
{
    CHECK(gpu->ops->rope_qkv != NULL, "cuda backend offers rope_qkv");
    if (!gpu->ops->rope_qkv) return;
    int64_t nq = (int64_t)N * H * D, nk = (int64_t)N * KV * D, row = (int64_t)(H + 2 * KV) * D;
    int64_t nc = (int64_t)slots_n * max_seq * KV * D;
    float *f = malloc((size_t)(N * row) * sizeof(float));
    for (int i = 0; i < N; i++) {
        memcpy(f + i * row, q + (int64_t)i * H * D, (size_t)H * D * sizeof(float));
        memcpy(f + i * row + (int64_t)H * D, k + (int64_t)i * KV * D, (size_t)KV * D * sizeof(float));
        memcpy(f + i * row + (int64_t)(H + KV) * D, v + (int64_t)i * KV * D, (size_t)KV * D * sizeof(float));
    }
    aha_tensor g = up_at(gpu, f, N * row, gdt, off);
    aha_tensor q3 = alloc_t(gpu, nq, gdt), k3 = alloc_t(gpu, nk, gdt), v3 = alloc_t(gpu, nk, gdt);
    aha_tensor kc3 = up_at(gpu, c0, nc, gdt, off), vc3 = up_at(gpu, c0, nc, gdt, off);
    OK_BOTH(AHA_OK, gpu->ops->rope_qkv(gpu, g, q3, k3, v3, kc3, vc3, gs, gp, N, H, KV, D, max_seq, 1e6f, &e2));
    same_dev("rope_qkv q differs from rope_qk_store", q3, rq, nq);
    same_dev("rope_qkv k differs from rope_qk_store", k3, rk, nk);
    same_dev("rope_qkv v differs from the v part of its input", v3, uv, nk);
    same_dev("rope_qkv k cache differs from rope_qk_store", kc3, rkc, nc);
    same_dev("rope_qkv v cache differs from rope_qk_store", vc3, rvc, nc);
    /* decode's form: k and v to the cache only */
    aha_tensor q4 = alloc_t(gpu, nq, gdt), kc4 = up_at(gpu, c0, nc, gdt, off), vc4 = up_at(gpu, c0, nc, gdt, off);
    OK_BOTH(AHA_OK, gpu->ops->rope_qkv(gpu, g, q4, aha_tensor_none(), aha_tensor_none(), kc4, vc4, gs, gp, N, H, KV,
                                       D, max_seq, 1e6f, &e2));
    same_dev("rope_qkv q (cache only) differs", q4, rq, nq);
    same_dev("rope_qkv k cache (cache only) differs", kc4, rkc, nc);
    same_dev("rope_qkv v cache (cache only) differs", vc4, rvc, nc);
    /* training's form: no cache */
    aha_tensor q5 = alloc_t(gpu, nq, gdt), k5 = alloc_t(gpu, nk, gdt), v5 = alloc_t(gpu, nk, gdt);
    OK_BOTH(AHA_OK, gpu->ops->rope_qkv(gpu, g, q5, k5, v5, aha_tensor_none(), aha_tensor_none(), aha_tensor_none(), gp,
                                       N, H, KV, D, 0, 1e6f, &e2));
    same_dev("rope_qkv q (no cache) differs", q5, rq, nq);
    same_dev("rope_qkv k (no cache) differs", k5, rk, nk);
    same_dev("rope_qkv v (no cache) differs", v5, uv, nk);
    free(f);
}

static void t_rope_qk_store(int N, int H, int KV, int D, int max_seq, int slots_n, aha_dtype gdt, int off)
{
    fprintf(stderr, "== rope_qk_store N %d H %d KV %d D %d max_seq %d %s off %d\n", N, H, KV, D, max_seq,
            gdt == BF16 ? "bf16" : "f32", off);
    CHECK(gpu->ops->rope_qk_store != NULL, "cuda backend offers rope_qk_store");
    if (!gpu->ops->rope_qk_store) return;
    AHA_ASSERT((int64_t)N <= (int64_t)slots_n * max_seq);
    int64_t nq = (int64_t)N * H * D, nk = (int64_t)N * KV * D;
    int64_t nc = (int64_t)slots_n * max_seq * KV * D;
    float *q = rnd(nq, 1.0f, 0.0f), *k = rnd(nk, 1.0f, 0.0f), *v = rnd(nk, 1.0f, 0.0f);
    int32_t *pos = malloc((size_t)N * 4), *slot = malloc((size_t)N * 4);
    /* 7919 is prime: r -> (r * 7919 + c) mod max_seq is one-to-one over the ranks r < max_seq
     * of a slot's tokens unless 7919 divides max_seq, so the (slot, pos) pairs are distinct */
    AHA_ASSERT(max_seq % 7919 != 0);
    for (int i = 0; i < N; i++) {
        slot[i] = i % slots_n;
        pos[i] = (int32_t)(((int64_t)(i / slots_n) * 7919 + 3 * slot[i]) % max_seq);
    }
    int pmax = 0;
    for (int i = 0; i < N; i++) pmax = pos[i] > pmax ? pos[i] : pmax;
    aha_tensor gp = up_i32(gpu, pos, N), gs = up_i32(gpu, slot, N), cp = up_i32(cpu, pos, N);
    aha_tensor cq = up(cpu, q, nq, FP32), ck = up(cpu, k, nk, FP32);
    aha_tensor uq = up_at(gpu, q, nq, gdt, off), uk = up_at(gpu, k, nk, gdt, off), uv = up_at(gpu, v, nk, gdt, off);
    aha_tensor fq = up_at(gpu, q, nq, gdt, off), fk = up_at(gpu, k, nk, gdt, off), fv = up_at(gpu, v, nk, gdt, off);
    /* the caches start as random values too, so a store to a wrong row shows */
    float *c0 = rnd(nc, 1.0f, 0.0f);
    aha_tensor ukc = up_at(gpu, c0, nc, gdt, off), uvc = up_at(gpu, c0, nc, gdt, off);
    aha_tensor fkc = up_at(gpu, c0, nc, gdt, off), fvc = up_at(gpu, c0, nc, gdt, off);
    OK_BOTH(cpu->ops->rope_fwd(cpu, cq, cp, N, H, D, 1e6f, &e1), gpu->ops->rope_fwd(gpu, uq, gp, N, H, D, 1e6f, &e2));
    OK_BOTH(cpu->ops->rope_fwd(cpu, ck, cp, N, KV, D, 1e6f, &e1),
            gpu->ops->rope_fwd(gpu, uk, gp, N, KV, D, 1e6f, &e2));
    OK_BOTH(AHA_OK, gpu->ops->kv_store(gpu, ukc, uvc, uk, uv, gs, gp, N, KV, D, max_seq, &e2));
    OK_BOTH(AHA_OK, gpu->ops->rope_qk_store(gpu, fq, fk, fv, fkc, fvc, gs, gp, N, H, KV, D, max_seq, 1e6f, &e2));
    double tol = rope_tol(gdt, pmax + 1);
    compare_dev("rope_qk_store q", fq, cq, nq, tol);
    compare_dev("rope_qk_store k", fk, ck, nk, tol);
    same_dev("rope_qk_store q differs from rope_fwd", fq, uq, nq);
    float *a = down(gpu, fkc, nc), *b = down(gpu, ukc, nc);
    CHECK(!memcmp(a, b, (size_t)nc * sizeof(float)), "rope_qk_store k cache differs from rope_fwd + kv_store");
    /* the rows the tokens own hold k, every other row still its old value */
    int64_t stored = 0;
    for (int64_t i = 0; i < nc; i++) stored += a[i] != c0[i];
    CHECK(stored > 0 && stored <= nk, "rope_qk_store k cache: %lld elements changed, at most %lld owned",
          (long long)stored, (long long)nk);
    free(a);
    free(b);
    same_dev("rope_qk_store v cache differs from kv_store", fvc, uvc, nc);
    /* without a cache: only the rotations */
    aha_tensor gq2 = up_at(gpu, q, nq, gdt, off), gk2 = up_at(gpu, k, nk, gdt, off);
    OK_BOTH(AHA_OK, gpu->ops->rope_qk_store(gpu, gq2, gk2, fv, aha_tensor_none(), aha_tensor_none(),
                                            aha_tensor_none(), gp, N, H, KV, D, 0, 1e6f, &e2));
    compare_dev("rope_qk_store q (no cache)", gq2, cq, nq, tol);
    compare_dev("rope_qk_store k (no cache)", gk2, ck, nk, tol);
    same_dev("rope_qk_store q without a cache differs from with one", gq2, fq, nq);
    t_rope_qkv(q, k, v, c0, gs, gp, fq, fk, uv, fkc, fvc, N, H, KV, D, max_seq, slots_n, gdt, off);
    free(q);
    free(k);
    free(v);
    free(c0);
    free(pos);
    free(slot);
    release();
}

/* rope_fwd and rope_bwd of x (N, nh, D) against the CPU; half the tokens at positions 0, 1,
 * ... (mod pmax), half at random positions below pmax; gdt / off as in t_rope_qk_store */
static void t_rope(int N, int nh, int D, float theta, int pmax, aha_dtype gdt, int off)
{
    fprintf(stderr, "== rope N %d nh %d D %d theta %g pos < %d %s off %d\n", N, nh, D, theta, pmax,
            gdt == BF16 ? "bf16" : "f32", off);
    int64_t n = (int64_t)N * nh * D;
    float *x = rnd(n, 1.0f, 0.0f);
    int32_t *pos = malloc((size_t)N * 4);
    for (int i = 0; i < N; i++) pos[i] = i < N / 2 ? i % pmax : (int32_t)aha_rng_below(&rng, (uint64_t)pmax);
    pos[N - 1] = pmax - 1;
    aha_tensor cp = up_i32(cpu, pos, N), gp = up_i32(gpu, pos, N);
    aha_tensor cx = up(cpu, x, n, FP32), gx = up_at(gpu, x, n, gdt, off);
    double tol = rope_tol(gdt, pmax);
    OK_BOTH(cpu->ops->rope_fwd(cpu, cx, cp, N, nh, D, theta, &e1),
            gpu->ops->rope_fwd(gpu, gx, gp, N, nh, D, theta, &e2));
    compare_dev("rope_fwd", gx, cx, n, tol);
    OK_BOTH(cpu->ops->rope_bwd(cpu, cx, cp, N, nh, D, theta, &e1),
            gpu->ops->rope_bwd(gpu, gx, gp, N, nh, D, theta, &e2));
    compare_dev("rope_bwd", gx, cx, n, tol);
    /* the backward is the forward's inverse whatever inv_freq's last bit: fp32 to 1e-5 */
    compare("rope_bwd(rope_fwd(x)) = x", gx, x, n, gdt == BF16 ? BF : F32);
    free(x);
    free(pos);
    release();
}

/* gdt: the CUDA tensors' dtype (BF16 with D 64 / 128 runs the tensor-core kernels, F32 the
 * CUDA-core ones, compared at fp32 tolerance) */
static void t_attention(const int *lens, int n_seqs, int H, int KV, int D, aha_dtype gdt)
{
    double tol = gdt == BF16 ? BF : 1e-5;
    int32_t *cu = malloc((size_t)(n_seqs + 1) * 4);
    cu[0] = 0;
    int maxl = 0;
    for (int s = 0; s < n_seqs; s++) {
        cu[s + 1] = cu[s] + lens[s];
        if (lens[s] > maxl) maxl = lens[s];
    }
    int N = cu[n_seqs];
    fprintf(stderr, "== attention %d seqs, N %d (max %d), H %d KV %d D %d, %s\n", n_seqs, N, maxl, H, KV, D,
            gdt == BF16 ? "bf16" : "f32");
    int64_t nq = (int64_t)N * H * D, nk = (int64_t)N * KV * D;
    float *q = rnd(nq, 1.0f, 0.0f), *k = rnd(nk, 1.0f, 0.0f), *v = rnd(nk, 1.0f, 0.0f), *dout = rnd(nq, 1.0f, 0.0f);
    aha_tensor ccu = up_i32(cpu, cu, n_seqs + 1), gcu = up_i32(gpu, cu, n_seqs + 1);
    aha_tensor cq = up(cpu, q, nq, FP32), gq = up(gpu, q, nq, gdt);
    aha_tensor ck = up(cpu, k, nk, FP32), gk = up(gpu, k, nk, gdt);
    aha_tensor cv = up(cpu, v, nk, FP32), gv = up(gpu, v, nk, gdt);
    aha_tensor co = alloc_t(cpu, nq, FP32), go = alloc_t(gpu, nq, gdt);
    aha_tensor cl = alloc_t(cpu, (int64_t)N * H, FP32), gl = alloc_t(gpu, (int64_t)N * H, FP32);
    OK_BOTH(cpu->ops->attention_fwd(cpu, co, cl, cq, ck, cv, ccu, n_seqs, N, H, KV, D, maxl, &e1),
            gpu->ops->attention_fwd(gpu, go, gl, gq, gk, gv, gcu, n_seqs, N, H, KV, D, maxl, &e2));
    compare_dev("attention_fwd out", go, co, nq, tol);
    compare_dev("attention_fwd lse", gl, cl, (int64_t)N * H, F32);
    /* the backward reads the forward's out: give both the same (bf16-rounded) values */
    float *o = down(gpu, go, nq);
    aha_tensor co2 = up(cpu, o, nq, FP32);
    aha_tensor cdo = up(cpu, dout, nq, FP32), gdo = up(gpu, dout, nq, gdt);
    aha_tensor cdq = alloc_t(cpu, nq, FP32), gdq = alloc_t(gpu, nq, gdt);
    aha_tensor cdk = alloc_t(cpu, nk, FP32), gdk = alloc_t(gpu, nk, gdt);
    aha_tensor cdv = alloc_t(cpu, nk, FP32), gdv = alloc_t(gpu, nk, gdt);
    OK_BOTH(cpu->ops->attention_bwd(cpu, cdq, cdk, cdv, cdo, cq, ck, cv, co2, cl, ccu, n_seqs,
                                    N, H, KV, D, maxl, &e1),
            gpu->ops->attention_bwd(gpu, gdq, gdk, gdv, gdo, gq, gk, gv, go, gl, gcu, n_seqs, N, H, KV,
                                    D, maxl, &e2));
    /* The tensor-core backward rounds P and dS = P (dP - D) to bf16 before the second products,
     * as FlashAttention does; an output that is a cancelling sum over a few hundred such terms
     * carries an absolute error of the row's scale, not its own: elementwise slack 3 x atol at
     * D 64, 4 x at D 128, where a row sums twice the terms (on fresh inputs one dq element of
     * 92,160 missed 3 x by 18 %: |d| 9.8e-3 at 0.255, norm-wise 2.4e-3). Norm-wise <= 1e-2. */
    double sl = gdt == BF16 && D == 64 ? 3.0 : gdt == BF16 && D == 128 ? 4.0 : 1.0;
    float *r;
    r = down(cpu, cdq, nq), compare_slack("attention_bwd dq", gdq, r, nq, tol, sl), free(r);
    r = down(cpu, cdk, nk), compare_slack("attention_bwd dk", gdk, r, nk, tol, sl), free(r);
    r = down(cpu, cdv, nk), compare_slack("attention_bwd dv", gdv, r, nk, tol, sl), free(r);

    /* KV cache: sequence 0..n_seqs-1 go to slots n_seqs-1..0 of a cache; every token queries
     * its slot with lens = position + 1, which must equal causal attention over the sequence */
    int slots_n = n_seqs + 1, max_seq = maxl + 3;
    int64_t nc = (int64_t)slots_n * max_seq * KV * D;
    aha_tensor ckc = alloc_t(cpu, nc, FP32), cvc = alloc_t(cpu, nc, FP32);
    aha_tensor gkc = alloc_t(gpu, nc, gdt), gvc = alloc_t(gpu, nc, gdt);
    int32_t *slot = malloc((size_t)N * 4), *pos = malloc((size_t)N * 4), *len = malloc((size_t)N * 4);
    for (int s = 0; s < n_seqs; s++)
        for (int t = cu[s]; t < cu[s + 1]; t++) {
            slot[t] = n_seqs - 1 - s + 1;
            pos[t] = t - cu[s];
            len[t] = pos[t] + 1;
        }
    aha_tensor csl = up_i32(cpu, slot, N), gsl = up_i32(gpu, slot, N);
    aha_tensor cps = up_i32(cpu, pos, N), gps = up_i32(gpu, pos, N);
    aha_tensor cln = up_i32(cpu, len, N), gln = up_i32(gpu, len, N);
    OK_BOTH(cpu->ops->kv_store(cpu, ckc, cvc, ck, cv, csl, cps, N, KV, D, max_seq, &e1),
            gpu->ops->kv_store(gpu, gkc, gvc, gk, gv, gsl, gps, N, KV, D, max_seq, &e2));
    aha_tensor cco = alloc_t(cpu, nq, FP32), gco = alloc_t(gpu, nq, gdt);
    OK_BOTH(cpu->ops->attention_cached(cpu, cco, cq, ckc, cvc, csl, cln, N, H, KV, D, max_seq, &e1),
            gpu->ops->attention_cached(gpu, gco, gq, gkc, gvc, gsl, gln, N, H, KV, D, max_seq, &e2));
    compare_dev("attention_cached (cpu cached)", gco, cco, nq, tol);
    compare_dev("attention_cached (cpu packed)", gco, co, nq, tol);
    free(q);
    free(k);
    free(v);
    free(dout);
    free(o);
    free(cu);
    free(slot);
    free(pos);
    free(len);
    release();
}

/* Decode attention over a KV cache of fresh random values, one query per slot, against the
 * CPU, for several split-KV counts (AHA_CUDA_DECODE_SPLIT, read at every call; unset = the
 * automatic choice): lengths from 1 to max_seq, including ones shorter than the split count,
 * so some splits own no key. Each count runs twice and both outputs are compared: the second
 * launch is right only if the first left the kernel's arrival counters at zero. */
static void t_attention_decode(int n, int H, int KV, int D, int max_seq)
{
    fprintf(stderr, "== attention_cached decode: %d queries, H %d KV %d D %d, max_seq %d\n", n, H, KV, D, max_seq);
    int slots_n = n + 2;
    int64_t nc = (int64_t)slots_n * max_seq * KV * D, nq = (int64_t)n * H * D;
    float *kc = rnd(nc, 1.0f, 0.0f), *vc = rnd(nc, 1.0f, 0.0f), *q = rnd(nq, 1.5f, 0.0f);
    int32_t *slot = malloc((size_t)n * 4), *len = malloc((size_t)n * 4);
    const int fixed[] = {1, 2, 5, 31, 32, 33, 64, 129, max_seq};
    for (int i = 0; i < n; i++) {
        slot[i] = (i * 7 + 1) % slots_n;
        len[i] = i < (int)AHA_ARRAY_LEN(fixed) ? fixed[i] : 1 + (int)aha_rng_below(&rng, (uint64_t)max_seq);
        if (len[i] > max_seq) len[i] = max_seq;
    }
    len[n - 1] = max_seq; /* the whole cache */
    len[n / 2] = max_seq - 1 - (int)aha_rng_below(&rng, 31);
    aha_tensor ckc = up(cpu, kc, nc, FP32), cvc = up(cpu, vc, nc, FP32), cq = up(cpu, q, nq, FP32);
    aha_tensor gkc = up(gpu, kc, nc, BF16), gvc = up(gpu, vc, nc, BF16), gq = up(gpu, q, nq, BF16);
    aha_tensor csl = up_i32(cpu, slot, n), gsl = up_i32(gpu, slot, n);
    aha_tensor cln = up_i32(cpu, len, n), gln = up_i32(gpu, len, n);
    aha_tensor cco = alloc_t(cpu, nq, FP32);
    aha_err ec = {0};
    CHECK(cpu->ops->attention_cached(cpu, cco, cq, ckc, cvc, csl, cln, n, H, KV, D, max_seq, &ec) == AHA_OK,
          "cpu attention_cached: %s", ec.msg);
    float *ref = down(cpu, cco, nq);
    const char *splits[] = {NULL, "1", "2", "3", "7", "16"};
    for (int k = 0; k < (int)AHA_ARRAY_LEN(splits); k++) {
        if (splits[k]) setenv("AHA_CUDA_DECODE_SPLIT", splits[k], 1);
        else unsetenv("AHA_CUDA_DECODE_SPLIT");
        char what[96];
        snprintf(what, sizeof what, "attention_cached decode (split %s)", splits[k] ? splits[k] : "auto");
        aha_tensor go = alloc_t(gpu, nq, BF16), go2 = alloc_t(gpu, nq, BF16);
        aha_err e = {0};
        CHECK(gpu->ops->attention_cached(gpu, go, gq, gkc, gvc, gsl, gln, n, H, KV, D, max_seq, &e) == AHA_OK,
              "%s: %s", what, e.msg);
        CHECK(gpu->ops->attention_cached(gpu, go2, gq, gkc, gvc, gsl, gln, n, H, KV, D, max_seq, &e) == AHA_OK,
              "%s (again): %s", what, e.msg);
        compare(what, go, ref, nq, BF);
        snprintf(what + strlen(what), sizeof what - strlen(what), ", second launch");
        compare(what, go2, ref, nq, BF);
    }
    unsetenv("AHA_CUDA_DECODE_SPLIT");
    free(ref);
    free(kc);
    free(vc);
    free(q);
    free(slot);
    free(len);
    release();
}

static void t_logprob(int n, int V)
{
    fprintf(stderr, "== logprob n %d V %d\n", n, V);
    int64_t nv = (int64_t)n * V;
    float *x = rnd(nv, 3.0f, 0.0f), *dlp = rnd(n, 1.0f, 0.0f);
    int32_t *tg = rnd_ids(n, V);
    tg[n / 2] = -1;
    aha_tensor ctg = up_i32(cpu, tg, n), gtg = up_i32(gpu, tg, n);
    for (int pass = 0; pass < 2; pass++) {
        aha_dtype dt = pass ? FP32 : BF16;
        aha_tensor cx = up(cpu, x, nv, FP32), gx = up(gpu, x, nv, dt);
        aha_tensor clp = alloc_t(cpu, n, FP32), glp = alloc_t(gpu, n, FP32);
        aha_tensor cls = alloc_t(cpu, n, FP32), gls = alloc_t(gpu, n, FP32);
        OK_BOTH(cpu->ops->logprob_fwd(cpu, clp, cls, cx, ctg, n, V, &e1),
                gpu->ops->logprob_fwd(gpu, glp, gls, gx, gtg, n, V, &e2));
        compare_dev(pass ? "logprob_fwd lp (f32 logits)" : "logprob_fwd lp (bf16 logits)", glp, clp, n, F32);
        compare_dev("logprob_fwd lse", gls, cls, n, F32);
        aha_tensor cdl = up(cpu, dlp, n, FP32), gdl = up(gpu, dlp, n, FP32);
        /* in place, as the model uses it */
        OK_BOTH(cpu->ops->logprob_bwd(cpu, cx, cx, cls, ctg, cdl, n, V, &e1),
                gpu->ops->logprob_bwd(gpu, gx, gx, gls, gtg, gdl, n, V, &e2));
        compare_dev("logprob_bwd dlogits (in place)", gx, cx, nv, pass ? F32 : BF);
    }
    free(x);
    free(dlp);
    free(tg);
    release();
}

static void t_losses(int n)
{
    fprintf(stderr, "== grpo / sft loss n %d\n", n);
    float *lp = rnd(n, 1.0f, -2.0f), *old = malloc((size_t)n * 4), *ref = malloc((size_t)n * 4);
    float *adv = malloc((size_t)n * 4), *w = malloc((size_t)n * 4), *mk = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++) {
        old[i] = lp[i] + 0.3f * (float)aha_rng_normal(&rng); /* ratios both inside and outside the clip */
        ref[i] = lp[i] + 0.2f * (float)aha_rng_normal(&rng);
        adv[i] = (float)aha_rng_normal(&rng);
        mk[i] = aha_rng_below(&rng, 5) ? 1.0f : 0.0f;
        w[i] = mk[i] / 37.0f;
    }
    aha_tensor t[2][6];
    aha_backend *bes[2] = {cpu, gpu};
    const float *src[6] = {lp, old, ref, adv, w, mk};
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 6; j++) t[b][j] = up(bes[b], src[j], n, FP32);
    float zero[AHA_GRPO_NSTATS] = {0};
    aha_tensor cst = up(cpu, zero, AHA_GRPO_NSTATS, FP32), gst = up(gpu, zero, AHA_GRPO_NSTATS, FP32);
    aha_tensor cd = alloc_t(cpu, n, FP32), gd = alloc_t(gpu, n, FP32);
    OK_BOTH(cpu->ops->grpo_loss(cpu, cd, cst, t[0][0], t[0][1], t[0][2], t[0][3], t[0][4], t[0][5], n, 0.2f,
                                0.28f, 0.04f, &e1),
            gpu->ops->grpo_loss(gpu, gd, gst, t[1][0], t[1][1], t[1][2], t[1][3], t[1][4], t[1][5], n, 0.2f,
                                0.28f, 0.04f, &e2));
    compare_dev("grpo dlp", gd, cd, n, F32);
    compare_dev("grpo stats", gst, cst, AHA_GRPO_NSTATS, F32);
    float *st = down(gpu, gst, AHA_GRPO_NSTATS);
    CHECK(st[AHA_GRPO_STAT_CLIPPED] > 0 && st[AHA_GRPO_STAT_CLIPPED] < st[AHA_GRPO_STAT_TOKENS],
          "some but not all tokens clipped (%g of %g)", st[AHA_GRPO_STAT_CLIPPED], st[AHA_GRPO_STAT_TOKENS]);
    free(st);
    aha_tensor cs2 = up(cpu, zero, 2, FP32), gs2 = up(gpu, zero, 2, FP32);
    OK_BOTH(cpu->ops->sft_loss(cpu, cd, cs2, t[0][0], t[0][4], n, &e1),
            gpu->ops->sft_loss(gpu, gd, gs2, t[1][0], t[1][4], n, &e2));
    compare_dev("sft dlp", gd, cd, n, F32);
    compare_dev("sft stats", gs2, cs2, 2, F32);
    free(lp);
    free(old);
    free(ref);
    free(adv);
    free(w);
    free(mk);
    release();
}

static void t_adamw(int64_t n)
{
    fprintf(stderr, "== adamw n %lld\n", (long long)n);
    float *p = rnd(n, 0.05f, 0.0f), *g = rnd(n, 1e-3f, 0.0f), *m = rnd(n, 1e-4f, 0.0f), *v = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) v[i] = 1e-7f * (float)(1.0 + aha_rng_f64(&rng));
    aha_tensor cp = up(cpu, p, n, FP32), gp = up(gpu, p, n, FP32), cg = up(cpu, g, n, FP32), gg = up(gpu, g, n, FP32);
    aha_tensor cm = up(cpu, m, n, FP32), gm = up(gpu, m, n, FP32), cv = up(cpu, v, n, FP32), gv = up(gpu, v, n, FP32);
    aha_tensor go = alloc_t(gpu, n, BF16);
    for (int step = 1; step <= 3; step++)
        OK_BOTH(cpu->ops->adamw(cpu, cp, aha_tensor_none(), cg, cm, cv, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f,
                                step, &e1),
                gpu->ops->adamw(gpu, gp, go, gg, gm, gv, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, step, &e2));
    compare_dev("adamw p", gp, cp, n, F32);
    compare_dev("adamw m", gm, cm, n, F32);
    compare_dev("adamw v", gv, cv, n, F32);
    compare_dev("adamw p_out (bf16 copy)", go, cp, n, BF);
    free(p);
    free(g);
    free(m);
    free(v);
    release();
}

/* n rows of logits (n, V): sample on the GPU and return tokens and logprobs */
static void gpu_sample(aha_tensor lg, int n, int V, const aha_sampling *sp, uint64_t seed,
                       const int32_t *ids, const int32_t *pos, int32_t *tok, float *lp)
{
    aha_err err = {0};
    aha_tensor gt = alloc_t(gpu, n, AHA_DT_I32), gl = alloc_t(gpu, n, FP32);
    aha_tensor gi = up_i32(gpu, ids, n), gp = up_i32(gpu, pos, n);
    CHECK(gpu->ops->sample(gpu, gt, gl, lg, gi, gp, n, V, sp->temperature, sp->top_k, sp->top_p, seed, &err) ==
              AHA_OK, "sample: %s", err.msg);
    CHECK(gpu->ops->to_host(gpu, tok, gt, (size_t)n * 4, &err) == AHA_OK, "%s", err.msg);
    float *l = down(gpu, gl, n);
    memcpy(lp, l, (size_t)n * sizeof(float));
    free(l);
}

/* The draw follows aha_sample_probs (model/sample.h, the CPU sampler's exact distribution):
 * total variation distance of 100000 draws over a small vocabulary; kept sets at the full
 * vocabulary; greedy = argmax; raw logprobs; draws independent of batching. */
static void t_sample(void)
{
    fprintf(stderr, "== sample\n");
    CHECK(gpu->ops->sample != NULL, "cuda backend offers sample");
    if (!gpu->ops->sample) return;
    const aha_sampling cases[] = {{0.8f, 0.9f, 10}, {1.0f, 1.0f, 0}, {0.5f, 0.0f, 5}, {1.3f, 0.6f, 0}};
    int V = 40, n = 100000;
    float *row = rnd(V, 2.0f, 0.0f);
    float *x = malloc((size_t)n * V * sizeof(float));
    for (int i = 0; i < n; i++) memcpy(x + (size_t)i * V, row, (size_t)V * sizeof(float));
    aha_tensor lg = up(gpu, x, (int64_t)n * V, BF16);
    int32_t *ids = malloc((size_t)n * 4), *pos = malloc((size_t)n * 4), *tok = malloc((size_t)n * 4);
    float *lp = malloc((size_t)n * 4), *probs = malloc((size_t)V * sizeof(float));
    void *work = malloc(aha_sample_work_bytes(151936));
    for (int i = 0; i < n; i++) {
        ids[i] = i;
        pos[i] = 7 + i % 3;
    }
    double lse = aha_logsumexp(row, V);
    for (size_t c = 0; c < AHA_ARRAY_LEN(cases); c++) {
        gpu_sample(lg, n, V, &cases[c], 1234 + c, ids, pos, tok, lp);
        aha_sample_probs(row, V, &cases[c], work, probs);
        double *cnt = calloc((size_t)V, sizeof(double));
        int outside = 0;
        double lperr = 0;
        for (int i = 0; i < n; i++) {
            if (tok[i] < 0 || tok[i] >= V || probs[tok[i]] <= 0) {
                outside++;
                continue;
            }
            cnt[tok[i]] += 1.0 / n;
            lperr = fmax(lperr, fabs(lp[i] - (row[tok[i]] - lse)));
        }
        double tv = 0;
        for (int v = 0; v < V; v++) tv += 0.5 * fabs(cnt[v] - probs[v]);
        fprintf(stderr, "  T %.1f top_p %.2f top_k %d: TV %.4f, outside kept set %d, logprob err %.2e\n",
                cases[c].temperature, cases[c].top_p, cases[c].top_k, tv, outside, lperr);
        CHECK(outside == 0, "%d draws outside the kept set", outside);
        CHECK(tv <= 0.015, "total variation %.4f", tv);
        CHECK(lperr <= 1e-5, "raw logprob error %.3e", lperr);
        free(cnt);
    }
    /* batching independence: the second half of the rows drawn alone gives the same tokens */
    int32_t *tok2 = malloc((size_t)n * 4);
    float *lp2 = malloc((size_t)n * 4);
    gpu_sample(lg, n, V, &cases[0], 99, ids, pos, tok, lp);
    aha_tensor half = aha_tensor_at(lg, (int64_t)(n / 2) * V);
    gpu_sample(half, n / 2, V, &cases[0], 99, ids + n / 2, pos + n / 2, tok2, lp2);
    CHECK(!memcmp(tok + n / 2, tok2, (size_t)(n / 2) * 4), "draws depend on batching");
    free(x);
    free(tok2);
    free(lp2);

    /* full vocabulary: greedy is the argmax; top-k / top-p draws stay in the kept set. F32
     * logits without ties: with ties at the k-th value the GPU keeps them all, as transformers'
     * TopK warper does, where the CPU sampler keeps exactly k. */
    int VV = 151936, nn = 48;
    float *big = malloc((size_t)nn * VV * sizeof(float));
    for (int64_t i = 0; i < (int64_t)nn * VV; i++) big[i] = 2.5f * (float)aha_rng_normal(&rng);
    aha_tensor lb = up(gpu, big, (int64_t)nn * VV, FP32);
    aha_sampling greedy = {0.0f, 1.0f, 0}, nucleus = {0.9f, 0.5f, 0}, both = {1.0f, 0.95f, 50};
    gpu_sample(lb, nn, VV, &greedy, 5, ids, pos, tok, lp);
    float *pb = malloc((size_t)VV * sizeof(float));
    for (int i = 0; i < nn; i++) {
        const float *r = big + (size_t)i * VV;
        CHECK(tok[i] == aha_argmax(r, VV), "greedy row %d: %d vs argmax %d", i, tok[i], aha_argmax(r, VV));
        CHECK(fabs(lp[i] - (r[tok[i]] - aha_logsumexp(r, VV))) <= 1e-5 * 20, "greedy logprob row %d", i);
    }
    for (int k = 0; k < 2; k++) {
        const aha_sampling *sp = k ? &both : &nucleus;
        gpu_sample(lb, nn, VV, sp, 77 + k, ids, pos, tok, lp);
        int outside = 0;
        for (int i = 0; i < nn; i++) {
            aha_sample_probs(big + (size_t)i * VV, VV, sp, work, pb);
            if (tok[i] < 0 || tok[i] >= VV || pb[tok[i]] <= 0) outside++;
        }
        CHECK(outside == 0, "V %d top_p %.2f top_k %d: %d of %d draws outside the kept set", VV, sp->top_p,
              sp->top_k, outside, nn);
    }
    free(big);
    free(pb);
    free(row);
    free(ids);
    free(pos);
    free(tok);
    free(lp);
    free(probs);
    free(work);
    release();
}

/* ---- the plain path (temperature only, or greedy; no top-k / top-p) at real vocabulary sizes:
 * k_sample_plain walks the row in a fixed chunk order, so its law is checked where that order
 * matters: V = 151,936 (~300 elements per thread), V not a multiple of 8, fp32 and bf16. */

/* rows (n, V) of dt on the GPU, each a copy of row (V) */
static aha_tensor up_copies(const float *row, int n, int V, aha_dtype dt)
{
    aha_err err = {0};
    aha_tensor one = up(gpu, row, V, dt), lg = alloc_t(gpu, (int64_t)n * V, dt);
    for (int i = 0; i < n; i++)
        CHECK(gpu->ops->copy(gpu, aha_tensor_at(lg, (int64_t)i * V), one, V, &err) == AHA_OK, "copy: %s", err.msg);
    return lg;
}

/* Pearson chi-square of cnt (V, over n draws) against probs; consecutive tokens are merged
 * into bins expecting >= 10 draws (the last bin takes the remainder). A correct sampler
 * exceeds df + 6 sqrt(2 df) with probability below ~1e-6. */
static void chi_square(const char *what, const long *cnt, const float *probs, int V, long n)
{
    double stat = 0, e = 0, o = 0;
    int bins = 0, outside = 0;
    for (int v = 0; v < V; v++) {
        if (probs[v] <= 0 && cnt[v] > 0) outside++;
        e += (double)probs[v] * n;
        o += (double)cnt[v];
        if (e >= 10 || v == V - 1) {
            if (e > 0) stat += (o - e) * (o - e) / e;
            bins++;
            e = o = 0;
        }
    }
    double df = bins - 1, lim = df + 6 * sqrt(2 * df);
    fprintf(stderr, "  %s: chi-square %.1f over %d bins (limit %.1f), %d draws outside\n", what, stat, bins, lim, outside);
    CHECK(outside == 0, "%s: %d draws of zero-probability tokens", what, outside);
    CHECK(bins >= 20 && stat <= lim, "%s: chi-square %.1f > %.1f (%d bins)", what, stat, lim, bins);
}

/* calls x n draws from rows (n, V) that all equal row, with seeds seed, seed + 1, ...: counts per
 * token, and the worst error of the reported logprob against the raw log-softmax */
static double gpu_draws(aha_tensor lg, int n, int V, const aha_sampling *sp, uint64_t seed, int calls,
                        const float *row, long *cnt)
{
    aha_err err = {0};
    aha_tensor gt = alloc_t(gpu, n, AHA_DT_I32), gl = alloc_t(gpu, n, FP32);
    int32_t *ids = malloc((size_t)n * 4), *tok = malloc((size_t)n * 4);
    float *lp = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++) ids[i] = i;
    aha_tensor gi = up_i32(gpu, ids, n), gp = up_i32(gpu, ids, n);
    double lse = aha_logsumexp(row, V), worst = 0;
    for (int c = 0; c < calls; c++) {
        CHECK(gpu->ops->sample(gpu, gt, gl, lg, gi, gp, n, V, sp->temperature, sp->top_k, sp->top_p, seed + c,
                               &err) == AHA_OK, "sample: %s", err.msg);
        CHECK(gpu->ops->to_host(gpu, tok, gt, (size_t)n * 4, &err) == AHA_OK, "%s", err.msg);
        CHECK(gpu->ops->to_host(gpu, lp, gl, (size_t)n * 4, &err) == AHA_OK, "%s", err.msg);
        for (int i = 0; i < n; i++) {
            if (tok[i] < 0 || tok[i] >= V) {
                CHECK(0, "token %d outside [0, %d)", tok[i], V);
                break;
            }
            cnt[tok[i]]++;
            worst = fmax(worst, fabs(lp[i] - (row[tok[i]] - lse)));
        }
    }
    free(ids);
    free(tok);
    free(lp);
    return worst;
}

static void t_sample_plain(void)
{
    fprintf(stderr, "== sample, plain path\n");
    if (!gpu->ops->sample) return;
    void *work = malloc(aha_sample_work_bytes(151936));
    float *probs = malloc(151936 * sizeof(float));
    long *cnt = malloc(151936 * sizeof(long));
    /* the law: (V, dtype, T, rows per call, calls) */
    const struct {
        int V;
        aha_dtype dt;
        float T;
        int n, calls;
    } laws[] = {{151936, BF16, 1.0f, 256, 80}, {151936, FP32, 0.7f, 256, 40}, {4099, FP32, 1.0f, 2000, 60},
                {4096, BF16, 1.3f, 2000, 60},  {1001, BF16, 0.7f, 2000, 30}};
    for (size_t k = 0; k < AHA_ARRAY_LEN(laws); k++) {
        int V = laws[k].V, n = laws[k].n;
        float *row = rnd(V, 2.5f, 1.0f);
        aha_sampling sp = {laws[k].T, 1.0f, 0};
        aha_tensor lg = up_copies(row, n, V, laws[k].dt);
        memset(cnt, 0, (size_t)V * sizeof(long));
        double lperr = gpu_draws(lg, n, V, &sp, 1000 + 17 * k, laws[k].calls, row, cnt);
        aha_sample_probs(row, V, &sp, work, probs);
        char what[96];
        snprintf(what, sizeof what, "V %d %s T %.1f, %d draws", V, laws[k].dt == BF16 ? "bf16" : "fp32", laws[k].T,
                 n * laws[k].calls);
        chi_square(what, cnt, probs, V, (long)n * laws[k].calls);
        CHECK(lperr <= 5e-5, "%s: raw logprob error %.3e", what, lperr);
        free(row);
        release();
    }

    /* same draws whatever the layout: rows at an odd element offset (the scalar fallback) give
     * the tokens and logprobs of the same rows 16-byte aligned (16-byte loads); a second call
     * repeats the first bit for bit; the second half of the rows alone draws what it drew in
     * the full batch */
    const struct {
        int V;
        aha_dtype dt;
        float T;
    } lays[] = {{151936, BF16, 1.0f}, {4096, FP32, 0.7f}, {151936, BF16, 0.0f}};
    for (size_t k = 0; k < AHA_ARRAY_LEN(lays); k++) {
        int V = lays[k].V, n = 64;
        float *x = rnd((int64_t)n * V + 1, 2.5f, 0.0f);
        aha_tensor al = up(gpu, x + 1, (int64_t)n * V, lays[k].dt), mis = aha_tensor_at(up(gpu, x, (int64_t)n * V + 1, lays[k].dt), 1);
        int32_t *ids = malloc((size_t)n * 4), *pos = malloc((size_t)n * 4), *t[4];
        float *l[4];
        for (int i = 0; i < n; i++) {
            ids[i] = 3 * i + 1;
            pos[i] = 200 + i;
        }
        for (int j = 0; j < 4; j++) {
            t[j] = malloc((size_t)n * 4);
            l[j] = malloc((size_t)n * 4);
        }
        aha_sampling sp = {lays[k].T, 1.0f, 0};
        gpu_sample(al, n, V, &sp, 4242, ids, pos, t[0], l[0]);
        gpu_sample(mis, n, V, &sp, 4242, ids, pos, t[1], l[1]);
        gpu_sample(al, n, V, &sp, 4242, ids, pos, t[2], l[2]);
        gpu_sample(aha_tensor_at(mis, (int64_t)(n / 2) * V), n / 2, V, &sp, 4242, ids + n / 2, pos + n / 2, t[3], l[3]);
        CHECK(!memcmp(t[0], t[1], (size_t)n * 4) && !memcmp(l[0], l[1], (size_t)n * 4),
              "V %d T %.1f: misaligned rows draw differently", V, lays[k].T);
        CHECK(!memcmp(t[0], t[2], (size_t)n * 4) && !memcmp(l[0], l[2], (size_t)n * 4),
              "V %d T %.1f: a repeated call differs", V, lays[k].T);
        CHECK(!memcmp(t[0] + n / 2, t[3], (size_t)(n / 2) * 4), "V %d T %.1f: draws depend on batching", V,
              lays[k].T);
        int distinct = 0;
        for (int i = 0; i < n; i++) distinct += t[0][i] != aha_argmax(x + 1 + (size_t)i * V, V);
        if (lays[k].T > 0) CHECK(distinct > 0, "V %d T %.1f: every draw is the argmax", V, lays[k].T);
        for (int j = 0; j < 4; j++) {
            free(t[j]);
            free(l[j]);
        }
        free(ids);
        free(pos);
        free(x);
        release();
    }

    /* greedy with ties: the maximum repeated at 2-4 random places, in different threads' chunks
     * or the same chunk; the token is the lowest of them (aha_argmax), its logprob the raw one */
    int V = 151936, n = 32;
    float *x = rnd((int64_t)n * V, 2.5f, 0.0f);
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * V;
        int ties = 2 + (int)aha_rng_below(&rng, 3), p0 = (int)aha_rng_below(&rng, (uint64_t)V);
        for (int j = 0; j < ties; j++) {
            int p = i % 2 ? (p0 / 8) * 8 + (int)aha_rng_below(&rng, 8) : (int)aha_rng_below(&rng, (uint64_t)V);
            r[p] = 16.0f;
        }
    }
    for (int dt = 0; dt < 2; dt++) {
        aha_tensor lg = up(gpu, x, (int64_t)n * V, dt ? FP32 : BF16);
        int32_t *ids = malloc((size_t)n * 4), *tok = malloc((size_t)n * 4);
        float *lp = malloc((size_t)n * 4);
        for (int i = 0; i < n; i++) ids[i] = i;
        aha_sampling greedy = {0.0f, 1.0f, 0};
        gpu_sample(lg, n, V, &greedy, 1, ids, ids, tok, lp);
        for (int i = 0; i < n; i++) {
            const float *r = x + (size_t)i * V;
            int want = aha_argmax(r, V);
            CHECK(tok[i] == want, "greedy with ties, row %d: %d, want %d", i, tok[i], want);
            CHECK(fabs(lp[i] - (r[want] - aha_logsumexp(r, V))) <= 5e-5, "greedy with ties, row %d: logprob", i);
        }
        free(ids);
        free(tok);
        free(lp);
        release();
    }
    free(x);
    free(work);
    free(probs);
    free(cnt);
}

int main(void)
{
    aha_err err = {0};
    if (aha_backend_open("cuda:0", 0, &gpu, &err) != AHA_OK) {
        fprintf(stderr, "no CUDA backend: %s\n", err.msg);
        return 77;
    }
    if (aha_backend_open("cpu", 0, &cpu, &err) != AHA_OK) die("cpu backend", &err);
    aha_rng_seed(&rng, 20261128, 11);
    t_elementwise();
    t_embedding();
    t_rmsnorm(1000, 896, "hidden");
    t_rmsnorm(300, 900, "hidden, not a multiple of 32");
    t_rmsnorm(40, 3584, "hidden, 7B width");
    t_rmsnorm(20, 9000, "wider than the block-per-row kernels");
    t_rmsnorm(64, 256, "widest warp-per-row row");
    t_rmsnorm(1000 * 14, 64, "per-head q norm");
    t_rmsnorm(333 * 2, 128, "per-head k norm");
    t_add_rmsnorm(1000, 896);
    t_add_rmsnorm(256, 900);
    t_add_rmsnorm(20, 9000);
    t_add_rmsnorm(37, 64);
    t_copy2d();
    t_matmul(300, 896, 1152, true);
    t_matmul(77, 896, 4864, false);
    t_matmul(1, 64, 448, false);
    t_matmul_batched(256, 896, 128, true);
    t_matmul_batched(300, 896, 4864, false);
    t_matmul_batched(77, 96, 40, true);
    t_rope(500, 14, 64, 1e6f, 32768, BF16, 0);
    t_rope(100, 4, 128, 1e4f, 32768, BF16, 0);
    t_rope(333, 7, 128, 1e6f, 32768, BF16, 0);  /* odd token count, 7 heads, D 128 */
    t_rope(257, 1, 64, 1e6f, 32768, BF16, 0);   /* one head */
    t_rope(37, 3, 24, 1e4f, 4096, BF16, 0);     /* D/2 = 12: no 16-byte packs of bf16 */
    t_rope(9, 2, 1040, 1e4f, 32768, BF16, 0);   /* D/2 = 520: three chunks of angles */
    t_rope(301, 14, 64, 1e6f, 32768, BF16, 1);  /* unaligned rows */
    t_rope(200, 14, 64, 1e6f, 8, FP32, 0);      /* f32 in 16-byte packs, 1e-5 */
    t_rope(99, 5, 24, 1e6f, 8, FP32, 1);        /* f32 element by element, 1e-5 */
    t_rope(300, 2, 128, 1e6f, 32768, FP32, 0);  /* f32 at long positions */
    t_rope_qk_store(300, 14, 2, 64, 307, 5, BF16, 0);
    t_rope_qk_store(333, 7, 1, 128, 4096, 3, BF16, 0);
    t_rope_qk_store(301, 14, 2, 64, 32768, 2, BF16, 0);
    t_rope_qk_store(77, 7, 7, 24, 100, 2, BF16, 0);
    t_rope_qk_store(101, 14, 2, 64, 61, 3, BF16, 1);
    t_rope_qk_store(64, 14, 2, 64, 40, 2, FP32, 0);
    t_rope_qk_store(1, 14, 2, 64, 640, 1, BF16, 0);
    /* the many-token launch (above 4 tokens per SM: 528 on an H200; the ones above take the
     * few-token launch on any GPU with 125 SMs or more) */
    t_rope(3001, 14, 64, 1e6f, 32768, BF16, 0);
    t_rope(2500, 2, 128, 1e6f, 32768, BF16, 1);
    t_rope(2222, 3, 24, 1e6f, 8, FP32, 0);
    t_rope_qk_store(2001, 14, 2, 64, 1009, 2, BF16, 0);
    t_rope_qk_store(1999, 7, 1, 24, 1000, 2, FP32, 1);
    const int l1[] = {1, 37, 64, 65, 200, 130};
    t_attention(l1, 6, 14, 2, 64, BF16);
    t_attention(l1, 6, 14, 2, 64, FP32);
    const int l2[] = {100, 260};
    t_attention(l2, 2, 8, 2, 128, BF16);
    t_attention(l2, 2, 8, 2, 128, FP32);
    const int l3[] = {3, 70, 24};
    t_attention(l3, 3, 4, 2, 16, BF16);
    const int l4[] = {150};
    t_attention(l4, 1, 4, 4, 32, BF16);
    t_attention_decode(40, 14, 2, 64, 640);
    t_attention_decode(9, 28, 4, 128, 300);
    t_attention_decode(4, 16, 2, 64, 2048);
    t_logprob(6, 151936);
    t_logprob(33, 448);
    t_logprob(5, 1001);
    t_losses(100000);
    t_adamw(3000017);
    t_sample();
    t_sample_plain();
    aha_backend_free(cpu);
    aha_backend_free(gpu);
    return th_done("cuda_ops");
}
